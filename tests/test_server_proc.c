/* test_server_proc.c — the real `qembed serve` binary: flags and --help, and SIGTERM with a request
 * in flight (the request is answered, the process exits 0; past the drain timeout the running
 * work is cancelled at its next step and the process exits 1; a second signal exits at once). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "srv_harness.h"
#include "test_util.h"

#define QEMBED QE_BINARY_DIR "/qembed"

extern char **environ;

/* Spawns argv with stdout+stderr to log_path; returns the pid. */
static pid_t spawn_logged(char *const argv[], const char *log_path) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid = 0;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    cr_assert_eq(rc, 0, "posix_spawn %s: %s", argv[0], strerror(rc));
    return pid;
}

/* Starts `qembed serve --port 0`, reads its port from the "listening on" line and waits for
 * /health 200; base receives http://127.0.0.1:PORT. */
static pid_t spawn_ready(char *const argv[], const char *log, char *base, size_t cap) {
    pid_t pid = spawn_logged(argv, log);
    int port = 0;
    for (int i = 0; i < 1000 && !port; i++) {
        char *text = tu_read_file(log, NULL);
        const char *p = text ? strstr(text, "listening on http://127.0.0.1:") : NULL;
        if (p) port = atoi(p + strlen("listening on http://127.0.0.1:"));
        free(text);
        if (!port) usleep(10000);
    }
    cr_assert_gt(port, 0, "no listening line in %s", log);
    snprintf(base, cap, "http://127.0.0.1:%d", port);
    srvt_resp r;
    int ready = 0;
    for (int i = 0; i < 1000 && !ready; i++) {
        ready = srvt_get(base, "/health", &r) == 200;
        srvt_resp_free(&r);
        if (!ready) usleep(10000);
    }
    cr_assert(ready, "server never became healthy");
    return pid;
}

static int wait_exit(pid_t pid, double timeout_s) {
    for (double t = 0; t < timeout_s; t += 0.01) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    cr_assert_fail("process %d did not exit within %.0f s", (int)pid, timeout_s);
    return -1;
}

Test(server_proc, help_and_bad_flags) {
    if (!tu_exists(QEMBED)) cr_skip_test("%s not built", QEMBED);
    char dir[1024], log[1100];
    tu_scratch_dir(dir, sizeof dir, "srv-flags");
    snprintf(log, sizeof log, "%s/out.txt", dir);
    char *help[] = {QEMBED, "serve", "--help", NULL};
    cr_assert_eq(wait_exit(spawn_logged(help, log), 10), 0);
    char *out = tu_read_file(log, NULL);
    cr_assert_not_null(strstr(out, "--max-batch-tokens"));
    cr_assert_not_null(strstr(out, "--api-key"));
    /* the defaults as they are: a reranker's input limit, and what a pool of 0 means */
    cr_assert_not_null(strstr(out, "8192\n                           for a reranker"), "%s", out);
    cr_assert_not_null(strstr(out, "0 or -1: no pool"), "%s", out);
    free(out);
    char *nomodel[] = {QEMBED, "serve", "--port", "0", NULL};
    cr_assert_eq(wait_exit(spawn_logged(nomodel, log), 10), 2);
    char *badport[] = {QEMBED, "serve", "--model", "x", "--port", "http", NULL};
    cr_assert_eq(wait_exit(spawn_logged(badport, log), 10), 2);
    char *lghelp[] = {QEMBED, "loadgen", "--help", NULL};
    cr_assert_eq(wait_exit(spawn_logged(lghelp, log), 10), 0);
    out = tu_read_file(log, NULL);
    cr_assert_not_null(strstr(out, "--concurrency"));
    cr_assert_not_null(strstr(out, "Exit status"));
    free(out);
    /* nothing listens on port 1: every request fails (transport), exit 1, the report says so */
    char corpus[1200];
    snprintf(corpus, sizeof corpus, "%s/corpus.jsonl", dir);
    FILE *cf = fopen(corpus, "w");
    cr_assert_not_null(cf);
    fputs("{\"text\": \"hello\"}\n", cf);
    fclose(cf);
    char *refused[] = {QEMBED,     "loadgen", "--url",      "http://127.0.0.1:1/v1/embeddings",
                       "--corpus", corpus,    "--requests", "3",
                       "--json",   NULL};
    cr_assert_eq(wait_exit(spawn_logged(refused, log), 30), 1);
    out = tu_read_file(log, NULL);
    cr_assert_not_null(strstr(out, "\"errors\":3"), "%s", out);
    free(out);
    /* a model folder that does not load: exit 1 with a message */
    char *noload[] = {QEMBED, "serve", "--model", dir, "--port", "0", NULL};
    cr_assert_eq(wait_exit(spawn_logged(noload, log), 20), 1);
    out = tu_read_file(log, NULL);
    cr_assert_not_null(strstr(out, "cannot load"), "%s", out);
    free(out);
}

/* Audit 11 and 12: --max-input-tokens past the model's positions sized the K/V pool from the raw
 * value (60000000: a 343 GiB pool, the load failed); it is held to the positions, said once. And
 * `loadgen --requests N --duration S` dropped the requests in flight at the deadline as failures
 * (exit 3); they finish now, and only real failures count. */
Test(server_proc, input_limit_past_the_positions_and_loadgen_deadline, .timeout = 120) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    if (!tu_exists(QEMBED)) cr_skip_test("%s not built", QEMBED);
    char dir[1024], log[1100], lg_log[1100], corpus[1100], base[64], url[128];
    tu_scratch_dir(dir, sizeof dir, "srv-limits");
    snprintf(log, sizeof log, "%s/serve.txt", dir);
    snprintf(lg_log, sizeof lg_log, "%s/loadgen.txt", dir);
    char *serve[] = {QEMBED,     "serve", "--model", TINY_MODEL,
                     "--port",   "0",     "--quiet", "--max-input-tokens",
                     "60000000", NULL};
    pid_t pid = spawn_ready(serve, log, base, sizeof base);
    srvt_resp r;
    cr_assert_eq(srvt_get(base, "/info", &r), 200);
    cJSON *j = srvt_json(&r);
    const int positions = cJSON_GetObjectItem(j, "max_positions")->valueint;
    cr_assert_eq(cJSON_GetObjectItem(j, "max_input_length")->valueint, positions);
    cJSON_Delete(j);
    srvt_resp_free(&r);
    char *text = NULL;
    for (int i = 0; i < 500 && !(text && strstr(text, "ready:")); i++) {
        free(text);
        usleep(10000);
        text = tu_read_file(log, NULL);
    }
    const char *pool = text ? strstr(text, "K/V pool ") : NULL;
    cr_assert(pool, "no ready line: %s", text);
    cr_assert_leq(atoi(pool + 9), positions, "the pool was sized past the positions: %s", text);
    const char *said = strstr(text, "is more than the model's");
    cr_assert(said && !strstr(said + 1, "is more than the model's"), "said once: %s", text);
    free(text);
    snprintf(corpus, sizeof corpus, "%s/corpus.jsonl", dir);
    FILE *cf = fopen(corpus, "w");
    cr_assert_not_null(cf);
    fputs("{\"text\": \"hello there\"}\n{\"text\": \"a second line of text\"}\n", cf);
    fclose(cf);
    snprintf(url, sizeof url, "%s/v1/embeddings", base);
    char *lg[] = {QEMBED,          "loadgen",    "--url",     url,          "--corpus",
                  corpus,          "--requests", "100000000", "--duration", "1",
                  "--concurrency", "8",          "--json",    NULL};
    const int rc = wait_exit(spawn_logged(lg, lg_log), 60);
    char *out = tu_read_file(lg_log, NULL);
    cr_assert_eq(rc, 0, "loadgen exit %d: %s", rc, out);
    cr_assert(out && strstr(out, "\"errors\":0,"), "%s", out);
    free(out);
    kill(pid, SIGTERM);
    cr_assert_eq(wait_exit(pid, 30), 0);
}

Test(server_proc, sigterm_drains_in_flight_work_and_exits_0) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    if (!tu_exists(QEMBED)) cr_skip_test("%s not built", QEMBED);
    char dir[1024], log[1100];
    tu_scratch_dir(dir, sizeof dir, "srv-sigterm");
    snprintf(log, sizeof log, "%s/serve.log", dir);
    char *argv[] = {QEMBED,
                    "serve",
                    "--model",
                    TINY_MODEL,
                    "--port",
                    "0",
                    "--max-batch-tokens",
                    "64",
                    "--engine-threads",
                    "1",
                    NULL};
    srvt_bg b = {.timeout_ms = 110000}; /* 9000 tokens take ~40 s under ASan on 2 busy cores */
    char *body;
    pid_t pid = spawn_ready(argv, log, b.base, sizeof b.base);
    /* a request that takes a while (a step of 64 tokens at a time) */
    const int N = 200;
    size_t cap = (size_t)N * 512 + 64;
    b.body = body = malloc(cap);
    size_t o = (size_t)snprintf(body, cap, "{\"input\":[");
    for (int i = 0; i < N; i++) {
        char *t = srvt_long_text(40, i);
        o += (size_t)snprintf(body + o, cap - o, "%s\"%s\"", i ? "," : "", t);
        free(t);
    }
    snprintf(body + o, cap - o, "]}");
    srvt_bg_start(&b);
    /* in flight = tokens admitted to the queue */
    int inflight = 0;
    for (int i = 0; i < 2000 && !inflight; i++) {
        inflight = srvt_metric(b.base, "qembed_inflight_tokens") > 0;
        if (!inflight) usleep(500);
    }
    cr_assert_eq(kill(pid, SIGTERM), 0);
    srvt_bg_join(&b);
    int code = wait_exit(pid, 30);
    char *text = tu_read_file(log, NULL);
    cr_assert_eq(code, 0, "exit %d; log:\n%s", code, text);
    cr_assert_eq(b.status, 200, "the in-flight request was answered (%ld: %.200s)", b.status,
                 b.r.body);
    cJSON *j = srvt_json(&b.r);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "data")), N);
    cJSON_Delete(j);
    cr_assert_not_null(strstr(text, "draining"), "%s", text);
    /* one log line per request: id, inputs, tokens, queue ms, compute ms, status */
    const char *line = strstr(text, "POST /v1/embeddings status=200 inputs=200 tokens=");
    cr_assert_not_null(line, "request log line missing:\n%s", text);
    cr_assert_not_null(strstr(line, "queue_ms="));
    cr_assert_not_null(strstr(line, "compute_ms="));
    cr_log_info("caught the request in flight before SIGTERM: %s", inflight ? "yes" : "no");
    cr_assert(inflight, "the request was in flight when SIGTERM was sent");
    free(text);
    srvt_resp_free(&b.r);
    free(body);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* SIGTERM waits for accepted work only: a client stuck halfway through its body must not hold
 * the drain (it used to, for the whole --drain-timeout, and then the exit code was 1). */
Test(server_proc, sigterm_does_not_wait_for_an_unfinished_upload, .timeout = 60) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    if (!tu_exists(QEMBED)) cr_skip_test("%s not built", QEMBED);
    char dir[1024], log[1100];
    tu_scratch_dir(dir, sizeof dir, "srv-slowbody");
    snprintf(log, sizeof log, "%s/serve.log", dir);
    char *argv[] = {QEMBED, "serve",           "--model", TINY_MODEL, "--port",
                    "0",    "--drain-timeout", "30",      NULL};
    char base[64];
    pid_t pid = spawn_ready(argv, log, base, sizeof base);
    int port = atoi(strrchr(base, ':') + 1);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    const char *head = "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                       "\r\nContent-Length: 100\r\n\r\n{\"inp";
    cr_assert_eq(write(fd, head, strlen(head)), (ssize_t)strlen(head));
    usleep(200000); /* let the server read the partial body */
    double t0 = now_s();
    cr_assert_eq(kill(pid, SIGTERM), 0);
    int code = wait_exit(pid, 20);
    double took = now_s() - t0;
    close(fd);
    char *text = tu_read_file(log, NULL);
    cr_assert_eq(code, 0, "exit %d after %.1f s; log:\n%s", code, took, text);
    cr_assert_lt(took, 10.0, "the drain waited %.1f s for an unfinished upload", took);
    free(text);
}

/* Starts `qembed serve` (64-token steps, one engine thread, the given drain timeout) with one
 * 20000-token document in flight, computing (~300 chunks: far longer than the checks below wait).
 */
static pid_t serve_with_a_long_document(const char *tag, const char *drain, char *log, size_t cap,
                                        srvt_bg *b) {
    char dir[1024];
    tu_scratch_dir(dir, sizeof dir, tag);
    snprintf(log, cap, "%s/serve.log", dir);
    char *argv[] = {QEMBED, "serve", "--model", TINY_MODEL, "--port", "0", "--max-batch-tokens",
                    "64", "--engine-threads", "1", "--drain-timeout", (char *)drain,
                    /* the tiny model's attention outweighs its GEMMs past 264 tokens: the
                     * document weighs 1.5 M token-equivalents in the queue */
                    "--max-queue-tokens", "4000000", NULL};
    pid_t pid = spawn_ready(argv, log, b->base, sizeof b->base);
    b->body = srvt_ids_body(20000);
    b->timeout_ms = 120000;
    srvt_bg_start(b);
    int computing = 0;
    for (int i = 0; i < 2000 && !computing; i++) {
        computing = srvt_metric(b->base, "qembed_inflight_tokens") == 20000;
        if (!computing) usleep(1000);
    }
    if (!computing) kill(pid, SIGKILL); /* no server outlives a failed test */
    cr_assert(computing, "the document never reached the engine");
    return pid;
}

/* Past --drain-timeout the running engine call stops at its next chunk: the process exits 1
 * within about the timeout (not after the document's remaining chunks), the document's client
 * gets 503. */
Test(server_proc, sigterm_past_the_drain_timeout_cancels_the_running_work, .timeout = 120) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    if (!tu_exists(QEMBED)) cr_skip_test("%s not built", QEMBED);
    char log[1100];
    srvt_bg b = {0};
    pid_t pid = serve_with_a_long_document("srv-cancel", "1", log, sizeof log, &b);
    const double t0 = now_s();
    cr_assert_eq(kill(pid, SIGTERM), 0);
    const int code = wait_exit(pid, 60);
    const double took = now_s() - t0;
    srvt_bg_join(&b);
    char *text = tu_read_file(log, NULL);
    cr_expect_eq(code, 1, "exit %d; log:\n%s", code, text);
    cr_expect_lt(took, 10.0, "exit %.1f s after SIGTERM with a 1 s drain timeout", took);
    cr_expect_eq(b.status, 503, "the stopped document's answer: %ld %.200s", b.status, b.r.body);
    cr_expect(strstr(text, "cancelling the running work"), "log:\n%s", text);
    cr_log_info("exit %d %.2f s after SIGTERM (drain timeout 1 s)", code, took);
    free(text);
    srvt_resp_free(&b.r);
    free((char *)b.body);
}

/* A second SIGTERM during the drain exits at once: 128 + 15. */
Test(server_proc, second_sigterm_exits_at_once, .timeout = 120) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    if (!tu_exists(QEMBED)) cr_skip_test("%s not built", QEMBED);
    char log[1100];
    srvt_bg b = {0};
    pid_t pid = serve_with_a_long_document("srv-twice", "60", log, sizeof log, &b);
    cr_assert_eq(kill(pid, SIGTERM), 0);
    usleep(300000); /* draining: the document keeps the process busy */
    const double t0 = now_s();
    cr_assert_eq(kill(pid, SIGTERM), 0);
    const int code = wait_exit(pid, 30);
    const double took = now_s() - t0;
    char *text = tu_read_file(log, NULL);
    cr_expect_eq(code, 128 + SIGTERM, "exit %d; log:\n%s", code, text);
    cr_expect_lt(took, 3.0, "exit %.1f s after the second SIGTERM", took);
    cr_expect(strstr(text, "second SIGTERM"), "log:\n%s", text);
    srvt_bg_join(&b); /* the connection closed with the process */
    free(text);
    srvt_resp_free(&b.r);
    free((char *)b.body);
}
