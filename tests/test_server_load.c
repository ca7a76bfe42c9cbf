/* test_server_load.c — the server under concurrent clients (answers identical to the engine's),
 * client disconnects dropping queued work, in-process drain with work in flight, a bounded fuzz of
 * malformed requests, and the load generator against the in-process server. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loadgen/loadgen.h"
#include "serve/serve_internal.h"
#include "srv_harness.h"
#include "test_util.h"
#include "tokenizer.h"

/* ---- 32 parallel clients ---- */

#define N_CLIENTS 32
#define N_ROUNDS 4
#define N_PER_REQ 3

typedef struct client_arg {
    const srvt_server *t;
    int id;
    float *got; /* N_ROUNDS * N_PER_REQ * width */
    int width;
    int failures;
    char first_failure[256];
} client_arg;

static void client_text(char *buf, size_t cap, int client, int round, int k) {
    snprintf(buf, cap, "client %d round %d item %d: %s", client, round, k,
             (client + round + k) % 3 ? "the river runs to the sea" : "数据 streams, Zürich");
}

static void *client_main(void *p) {
    client_arg *a = p;
    CURL *h = curl_easy_init();
    for (int round = 0; round < N_ROUNDS; round++) {
        char texts[N_PER_REQ][128];
        char body[1024];
        int o = snprintf(body, sizeof body, "{\"input\":[");
        for (int k = 0; k < N_PER_REQ; k++) {
            client_text(texts[k], sizeof texts[k], a->id, round, k);
            o += snprintf(body + o, sizeof body - (size_t)o, "%s\"%s\"", k ? "," : "", texts[k]);
        }
        snprintf(body + o, sizeof body - (size_t)o, "],\"encoding_format\":\"%s\"}",
                 (a->id + round) % 2 ? "base64" : "float");
        srvt_resp r;
        long st =
            srvt_request(h, a->t->base, "POST", "/v1/embeddings", body, strlen(body), NULL, &r);
        if (st != 200) {
            if (!a->failures++)
                snprintf(a->first_failure, sizeof a->first_failure, "status %ld: %.200s", st,
                         r.body);
            srvt_resp_free(&r);
            continue;
        }
        cJSON *j = cJSON_ParseWithLength(r.body, r.len);
        for (int k = 0; k < N_PER_REQ && j; k++) {
            int d = 0;
            float *v = srvt_openai_embedding(j, k, &d);
            if (d == a->width)
                memcpy(a->got + ((size_t)round * N_PER_REQ + k) * a->width, v, (size_t)d * 4);
            else
                a->failures++;
            free(v);
        }
        if (!j) a->failures++;
        cJSON_Delete(j);
        srvt_resp_free(&r);
    }
    curl_easy_cleanup(h);
    return NULL;
}

Test(server_load, parallel_clients_match_sequential) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    c.max_batch_tokens = 256; /* several batches, mixed requests in each */
    srvt_server t;
    srvt_start(&t, &c);
    int W = qe_dim(t.e);
    client_arg args[N_CLIENTS];
    pthread_t th[N_CLIENTS];
    for (int i = 0; i < N_CLIENTS; i++) {
        args[i] = (client_arg){.t = &t, .id = i, .width = W};
        args[i].got = calloc((size_t)N_ROUNDS * N_PER_REQ * W, sizeof(float));
        cr_assert_eq(pthread_create(&th[i], NULL, client_main, &args[i]), 0);
    }
    for (int i = 0; i < N_CLIENTS; i++)
        pthread_join(th[i], NULL);
    int bitwise = 0, total = 0;
    for (int i = 0; i < N_CLIENTS; i++) {
        cr_assert_eq(args[i].failures, 0, "client %d: %s", i, args[i].first_failure);
        for (int round = 0; round < N_ROUNDS; round++) {
            char texts[N_PER_REQ][128];
            const char *tp[N_PER_REQ];
            for (int k = 0; k < N_PER_REQ; k++) {
                client_text(texts[k], sizeof texts[k], i, round, k);
                tp[k] = texts[k];
            }
            /* sequential reference: one engine call per request */
            float *want = srvt_engine_texts(t.e, tp, N_PER_REQ, 0);
            for (int k = 0; k < N_PER_REQ; k++) {
                const float *g = args[i].got + ((size_t)round * N_PER_REQ + k) * W;
                srvt_assert_close(g, want + (size_t)k * W, W, texts[k]);
                bitwise += memcmp(g, want + (size_t)k * W, (size_t)W * 4) == 0;
                total++;
            }
            free(want);
        }
        free(args[i].got);
    }
    cr_log_info("%d of %d vectors bitwise equal to the sequential engine call", bitwise, total);
    /* the batches did mix requests */
    srvt_resp r;
    cr_assert_eq(srvt_get(t.base, "/metrics", &r), 200);
    cr_assert_not_null(strstr(r.body, "qembed_sequences_processed_total 384\n"),
                       "all 384 sequences ran");
    const char *b = strstr(r.body, "\nqembed_batches_total ");
    cr_assert_not_null(b);
    long batches = atol(b + strlen("\nqembed_batches_total "));
    cr_log_info("batches: %ld for 128 requests", batches);
    srvt_resp_free(&r);
    srvt_stop(&t);
}

/* ---- a client that leaves: its queued sequences are dropped ---- */

static char *big_request(int n, int words) {
    size_t cap = (size_t)n * ((size_t)words * 12 + 8) + 64;
    char *body = malloc(cap);
    size_t o = (size_t)snprintf(body, cap, "{\"input\":[");
    for (int i = 0; i < n; i++) {
        char *t = srvt_long_text(words, i);
        o += (size_t)snprintf(body + o, cap - o, "%s\"%s\"", i ? "," : "", t);
        free(t);
    }
    snprintf(body + o, cap - o, "]}");
    return body;
}

Test(server_load, disconnected_client_is_dropped) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    c.max_batch_tokens = 64; /* one sequence per engine call: the request takes a while */
    srvt_server t;
    srvt_start(&t, &c);
    char *body = big_request(2048, 50);
    srvt_resp r;
    long st = srvt_post_timeout(t.base, "/v1/embeddings", body, 400, &r); /* gives up, closes */
    srvt_resp_free(&r);
    free(body);
    if (st == 200) cr_skip_test("the engine answered 2048 inputs within 400 ms: nothing to cancel");
    /* the server notices, drops the rest, and is idle again soon */
    long inflight = -1;
    for (int i = 0; i < 400 && inflight != 0; i++) {
        inflight = srvt_metric(t.base, "qembed_inflight_tokens");
        if (inflight != 0) usleep(10000);
    }
    cr_assert_eq(inflight, 0, "queued tokens released after the client left");
    long dropped = srvt_metric(t.base, "qembed_cancelled_sequences_total");
    long done = srvt_metric(t.base, "qembed_sequences_processed_total");
    cr_assert_gt(dropped, 0, "sequences dropped (processed %ld)", done);
    cr_assert_lt(done, 2048);
    cr_assert_eq(done + dropped <= 2048, 1);
    /* still healthy and correct */
    srvt_expect_serves(&t, "hello", "after a cancel");
    srvt_stop(&t);
}

/* A client that leaves during a long document: the document leaves the scheduler before the next
 * step, its pages with it (the document counts as cancelled, not processed), instead of running
 * its remaining chunks. */
Test(server_load, departed_clients_long_document_stops_at_a_chunk) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    c.max_batch_tokens = 64; /* 8192 tokens: 128 chunks */
    srvt_server t;
    srvt_start(&t, &c);
    char *body = srvt_ids_body(8192);
    srvt_resp r;
    long st = srvt_post_timeout(t.base, "/v1/embeddings", body, 300, &r); /* gives up, closes */
    srvt_resp_free(&r);
    free(body);
    if (st == 200) cr_skip_test("the engine embedded 8192 tokens within 300 ms: nothing to stop");
    const double left = srv_now();
    long inflight = -1, used = -1;
    double freed = 0;
    for (int i = 0; i < 3000 && (inflight != 0 || used != 0); i++) {
        inflight = srvt_metric(t.base, "qembed_inflight_tokens");
        used = srvt_metric(t.base, "qembed_kv_pool_used_tokens");
        if (used == 0 && freed == 0) freed = srv_now();
        if (inflight != 0 || used != 0) usleep(2000);
    }
    cr_assert_eq(inflight, 0, "the document's tokens were never released");
    cr_assert_eq(used, 0, "the document's pages were never released");
    /* within the step in progress, once the watcher (50 ms polls) has seen the hang-up */
    const double steps = srvt_metric_value(t.base, "qembed_inference_duration_seconds_count");
    const double step_s =
        srvt_metric_value(t.base, "qembed_inference_duration_seconds_sum") / steps;
    cr_log_info("pages freed %.0f ms after the client left; mean step %.1f ms",
                (freed - left) * 1e3, step_s * 1e3);
    cr_expect_lt(freed - left, 2 * step_s + 0.15, "pages freed %.0f ms after the client left",
                 (freed - left) * 1e3);
    cr_expect_eq(srvt_metric(t.base, "qembed_sequences_processed_total"), 0,
                 "the document ran to its end after its client left");
    cr_expect_eq(srvt_metric(t.base, "qembed_cancelled_sequences_total"), 1,
                 "the stopped document is counted as cancelled");
    srvt_expect_serves(&t, "hello", "after a stopped document");
    srvt_stop(&t);
}

/* Four long documents in flight (chunks through the K/V pool): a short query joins the next step
 * instead of waiting behind them, so its latency stays within a few steps' time; the documents'
 * vectors are those of the engine alone. */
Test(server_load, a_query_is_not_stuck_behind_long_documents, .timeout = 300) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    c.max_batch_tokens = 256;
    c.kv_pool_tokens = 4 * 1024;
    srvt_server t;
    srvt_start(&t, &c);
    enum { DOCS = 4, DOC_LEN = 1024 };
    char *body = srvt_ids_body(DOC_LEN);
    srvt_bg docs[DOCS];
    for (int i = 0; i < DOCS; i++) {
        docs[i] = (srvt_bg){.body = body, .timeout_ms = 280000};
        snprintf(docs[i].base, sizeof docs[i].base, "%s", t.base);
        srvt_bg_start(&docs[i]);
    }
    while (srvt_metric(t.base, "qembed_kv_pool_used_tokens") <= 0 &&
           srvt_metric(t.base, "qembed_sequences_processed_total") <= 0)
        usleep(2000);
    const double t0 = srv_now();
    srvt_resp r;
    cr_assert_eq(srvt_post(t.base, "/v1/embeddings", "{\"input\": \"a short query\"}", &r), 200);
    const double latency = srv_now() - t0;
    srvt_resp_free(&r);
    const long docs_done = srvt_metric(t.base, "qembed_sequences_processed_total") - 1;
    for (int i = 0; i < DOCS; i++)
        srvt_bg_join(&docs[i]);
    const double steps = srvt_metric_value(t.base, "qembed_inference_duration_seconds_count");
    const double step_s =
        srvt_metric_value(t.base, "qembed_inference_duration_seconds_sum") / steps;
    cr_log_info("query latency %.1f ms with %ld of %d documents done; mean step %.1f ms (%.0f "
                "steps)",
                latency * 1e3, docs_done, DOCS, step_s * 1e3, steps);
    cr_expect_lt(docs_done, DOCS, "the documents were done before the query: nothing measured");
    cr_expect_lt(latency, 4 * step_s + 0.05, "query latency %.1f ms vs a mean step of %.1f ms",
                 latency * 1e3, step_s * 1e3);
    int32_t ids[DOC_LEN];
    for (int i = 0; i < DOC_LEN; i++)
        ids[i] = 100 + i % 5000; /* srvt_ids_body's ids */
    const int32_t *one[] = {ids};
    const int len[] = {DOC_LEN};
    float *want = srvt_engine_ids(t.e, one, len, 1, 0);
    for (int i = 0; i < DOCS; i++) {
        cr_assert_eq(docs[i].status, 200, "document %d: %ld", i, docs[i].status);
        cJSON *j = srvt_json(&docs[i].r);
        int dim = 0;
        float *got = srvt_openai_embedding(j, 0, &dim);
        srvt_assert_close(got, want, dim, "a document mixed with a query");
        free(got);
        cJSON_Delete(j);
        srvt_resp_free(&docs[i].r);
    }
    free(want), free(body);
    cr_expect_eq(srvt_metric(t.base, "qembed_kv_pool_used_tokens"), 0);
    srvt_stop(&t);
}

/* ---- drain with work in flight ---- */

Test(server_load, drain_finishes_work_in_flight) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    c.max_batch_tokens = 64;
    srvt_server t;
    srvt_start(&t, &c);
    char *body = big_request(128, 30);
    /* 26 s under ASan on 2 busy cores: past the harness's 30 s client timeout when loaded */
    srvt_bg b = {.body = body, .timeout_ms = 110000};
    snprintf(b.base, sizeof b.base, "%s", t.base);
    srvt_bg_start(&b);
    /* wait until the request is accepted (counted as active) */
    for (int i = 0; i < 1000; i++) {
        pthread_mutex_lock(&t.s->state_mu);
        long a = t.s->active_requests;
        pthread_mutex_unlock(&t.s->state_mu);
        if (a > 0) break;
        usleep(1000);
    }
    cr_assert_eq(serve_drain(t.s), 0, "drain completes");
    /* drain returned only after the answer went out */
    srvt_bg_join(&b);
    cr_assert_eq(b.status, 200, "in-flight request answered: %ld %.200s", b.status, b.r.body);
    cJSON *j = srvt_json(&b.r);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "data")), 128);
    cJSON_Delete(j);
    srvt_resp_free(&b.r);
    srvt_resp r;
    cr_assert_eq(srvt_get(t.base, "/health", &r), 503);
    srvt_resp_free(&r);
    cr_assert_eq(srvt_post(t.base, "/v1/embeddings", "{\"input\":\"after\"}", &r), 503);
    srvt_resp_free(&r);
    free(body);
    srvt_stop(&t);
}

/* ---- fuzz: mutated and random bodies, random routes and methods ---- */

static unsigned rnd(unsigned *s) {
    *s = *s * 1103515245u + 12345u;
    return *s >> 8;
}

Test(server_load, fuzz_malformed_requests) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    c.max_body = 8192;
    c.max_client_batch = 64;
    srvt_server t;
    srvt_start(&t, &c);
    static const char *seeds[] = {
        ("{\"input\":[\"hello\",\"world\"],\"model\":\"tiny-qwen3-embed\",\"encoding_format\":"
         "\"base64\"}"), /* one element, split for width */
        "{\"input\":\"abc\",\"dimensions\":32,\"truncate\":true,\"truncation_direction\":\"left\"}",
        "{\"input\":[[1,2,3],[4,5]],\"encoding_format\":\"float\"}",
        "{\"input\":[9707,11,1879],\"normalize\":true,\"user\":\"u\"}",
        "{\"inputs\":\"héllo\",\"normalize\":true,\"prompt_name\":\"query\"}",
        "{\"inputs\":[\"a\",\"b\"],\"truncate\":false}",
        "{\"input\":\"x\",\"instruction\":\"find it\"}",
        "{\"ids\":[[1,2],[3]],\"skip_special_tokens\":false}",
        "{\"inputs\":[\"tok\",\"en\"],\"add_special_tokens\":true}",
    };
    static const char *paths[] = {"/v1/embeddings", "/embed",          "/tokenize", "/decode",
                                  "/health",        "/v1/embeddings/", "/%00",      "/info"};
    static const char *tokens[] = {
        "{",  "}",       "[",       "]",    ",",     ":",          "\"",
        "\\", "null",    "true",    "-1",   "1e309", "\"input\"",  "\"inputs\"",
        "[[", "\\u0000", "\\ud800", "\xff", "\xc3",  "9999999999", "\"dimensions\":",
        "0.5"};
    const int N = 3000;
    unsigned seed = 0xC0FFEEu;
    CURL *h = curl_easy_init();
    int counts[600] = {0};
    char *body = malloc(16384);
    for (int i = 0; i < N; i++) {
        const char *src = seeds[rnd(&seed) % (sizeof seeds / sizeof *seeds)];
        size_t n = strlen(src);
        memcpy(body, src, n + 1);
        int kind = (int)(rnd(&seed) % 5);
        int edits = 1 + (int)(rnd(&seed) % 4);
        for (int e = 0; e < edits; e++) {
            if (kind == 0 && n > 0) { /* flip a byte */
                body[rnd(&seed) % n] = (char)(rnd(&seed) & 0xff);
                if (!body[0]) body[0] = ' ';
            } else if (kind == 1 && n > 0) { /* truncate */
                n = rnd(&seed) % n;
            } else if (kind == 2) { /* insert a JSON-ish token */
                const char *tk = tokens[rnd(&seed) % (sizeof tokens / sizeof *tokens)];
                size_t tl = strlen(tk), at = n ? rnd(&seed) % n : 0;
                if (n + tl < 16000) {
                    memmove(body + at + tl, body + at, n - at);
                    memcpy(body + at, tk, tl);
                    n += tl;
                }
            } else if (kind == 3) { /* random bytes */
                n = rnd(&seed) % 256;
                for (size_t k = 0; k < n; k++)
                    body[k] = (char)(rnd(&seed) & 0xff);
            } else if (n > 0) { /* duplicate a slice */
                size_t at = rnd(&seed) % n, len = rnd(&seed) % (n - at + 1);
                if (n + len < 16000) {
                    memmove(body + at + len, body + at, n - at);
                    n += len;
                }
            }
        }
        body[n] = 0;
        const char *path = rnd(&seed) % 8 ? (strstr(src, "\"ids\"")       ? "/decode"
                                             : strstr(src, "add_special") ? "/tokenize"
                                             : strstr(src, "\"inputs\"")  ? "/embed"
                                                                          : "/v1/embeddings")
                                          : paths[rnd(&seed) % (sizeof paths / sizeof *paths)];
        const char *method = rnd(&seed) % 16 ? "POST" : (rnd(&seed) % 2 ? "PUT" : "DELETE");
        srvt_resp r;
        long st = srvt_request(h, t.base, method, path, body, n, NULL, &r);
        const int tei = strcmp(path, "/v1/embeddings") && strcmp(path, "/v1/embeddings/") &&
                        strcmp(path, "/health") && strcmp(path, "/info") && strcmp(path, "/%00");
        cr_assert(st == 200 || st == 400 || st == 404 || st == 405 || st == 413 ||
                      (tei && st == 422),
                  "request %d: %s %s [%.*s] -> %ld (curl %d) %.200s", i, method, path, (int)n, body,
                  st, r.curl_rc, r.body);
        if (st != 200) { /* every error is the OpenAI shape, or TEI's on TEI's routes */
            cJSON *j = cJSON_ParseWithLength(r.body, r.len);
            cr_assert_not_null(j, "error body not JSON: %.200s", r.body);
            if (tei)
                cr_assert(cJSON_IsString(cJSON_GetObjectItem(j, "error")) &&
                              cJSON_IsString(cJSON_GetObjectItem(j, "error_type")),
                          "TEI error shape on %s: %.200s", path, r.body);
            else
                cr_assert(cJSON_IsObject(cJSON_GetObjectItem(j, "error")), "error object");
            cJSON_Delete(j);
        }
        counts[st == 422 ? 400 : st]++; /* TEI's validation status counts with the 400s */
        srvt_resp_free(&r);
    }
    free(body);
    curl_easy_cleanup(h);
    cr_log_info("fuzz: 200 x%d, 400 x%d, 404 x%d, 405 x%d, 413 x%d", counts[200], counts[400],
                counts[404], counts[405], counts[413]);
    cr_assert_gt(counts[400], N / 4, "mostly rejected");
    cr_assert_gt(counts[200], 0, "some mutations stay valid");
    /* healthy and correct afterwards */
    srvt_resp r;
    cr_assert_eq(srvt_get(t.base, "/health", &r), 200);
    srvt_resp_free(&r);
    srvt_expect_serves(&t, "after the storm", "after fuzz");
    cr_assert_eq(srvt_metric(t.base, "qembed_inflight_tokens"), 0);
    srvt_stop(&t);
}

/* ---- the load generator against the in-process server ---- */

static void write_corpus(char *path, size_t cap, const char **texts, int n) {
    char dir[900];
    tu_scratch_dir(dir, sizeof dir, "srv-loadgen");
    snprintf(path, cap, "%s/corpus.jsonl", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "text", texts[i]);
        char *s = cJSON_PrintUnformatted(o);
        fprintf(f, "%s\n", s);
        free(s);
        cJSON_Delete(o);
    }
    fprintf(f, "{\"other\":1}\n\n");
    fclose(f);
}

Test(server_load, loadgen_counts_requests_and_tokens) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    srvt_server t;
    srvt_start(&t, &c);
    const char *texts[] = {"alpha beta", "gamma\ndelta \"quoted\"", "数据 Zürich", "one",
                           "two three four"};
    const int NT = 5;
    char corpus[1024];
    write_corpus(corpus, sizeof corpus, texts, NT);
    char url[128];
    snprintf(url, sizeof url, "%s/v1/embeddings", t.base);
    loadgen_config lc;
    loadgen_config_defaults(&lc);
    lc.url = url;
    lc.corpus = corpus;
    lc.concurrency = 4;
    lc.inputs_per_request = 3;
    lc.requests = 40;
    lc.encoding_format = "base64";
    lc.model = "tiny-qwen3-embed";
    lc.dimensions = 32;
    loadgen_result res;
    char err[256];
    cr_assert_eq(loadgen_run(&lc, &res, err, sizeof err), 0, "%s", err);
    cr_assert_eq(res.sent, 40);
    cr_assert_eq(res.ok, 40, "errors %ld: %s", res.errors, res.first_error);
    cr_assert_eq(res.errors, 0);
    /* texts are taken round-robin, so the token count is known */
    long want = 0;
    for (int k = 0; k < 40 * 3; k++) {
        const char *s = texts[k % NT];
        int32_t *ids = NULL;
        int n = 0;
        cr_assert_eq(tok_encode(qe_tokenizer(t.e), s, strlen(s), NULL, &ids, &n, err, sizeof err),
                     TOK_OK);
        want += n;
        free(ids);
    }
    cr_assert_eq(res.prompt_tokens, want, "prompt tokens %ld, want %ld", res.prompt_tokens, want);
    cr_assert(res.lat_p50_ms > 0 && res.lat_p50_ms <= res.lat_p90_ms &&
              res.lat_p90_ms <= res.lat_p99_ms && res.lat_p99_ms <= res.lat_max_ms);
    cr_assert(res.req_per_s > 0 && res.tokens_per_s > 0);
    /* JSON report parses */
    char *buf = NULL;
    size_t bl = 0;
    FILE *mf = open_memstream(&buf, &bl);
    loadgen_print(&lc, &res, 1, mf);
    fclose(mf);
    cJSON *j = cJSON_Parse(buf);
    cr_assert_not_null(j, "%s", buf);
    cr_assert_eq(cJSON_GetObjectItem(j, "ok")->valueint, 40);
    cJSON_Delete(j);
    free(buf);

    /* time-bounded run, and errors counted by status */
    lc.requests = 0;
    lc.duration_s = 0.3;
    lc.model = "not-this-model";
    cr_assert_eq(loadgen_run(&lc, &res, err, sizeof err), 0, "%s", err);
    cr_assert(res.elapsed_s < 5, "bounded in time (%.2f s)", res.elapsed_s);
    cr_assert_eq(res.ok, 0);
    cr_assert_gt(res.errors, 0);
    cr_assert_eq(res.n_status, 1);
    cr_assert_eq(res.status[0].status, 400);
    cr_assert_eq(res.status[0].count, res.errors);
    /* a count and a deadline: whichever comes first; what is in flight at the deadline finishes
     * and is no failure (it was dropped and counted as one) */
    lc.requests = 100000000;
    lc.duration_s = 0.5;
    lc.model = NULL;
    cr_assert_eq(loadgen_run(&lc, &res, err, sizeof err), 0, "%s", err);
    cr_assert(res.elapsed_s < 30, "bounded by the deadline (%.2f s)", res.elapsed_s);
    cr_assert_gt(res.ok, 0);
    cr_assert_eq(res.errors, 0, "%ld errors: %s", res.errors, res.first_error);
    cr_assert_eq(res.ok, res.sent);
    /* a missing corpus is an error, not a crash */
    lc.corpus = "/nonexistent/corpus.jsonl";
    cr_assert_eq(loadgen_run(&lc, &res, err, sizeof err), -1);
    srvt_stop(&t);
}

/* loadgen against an overloaded server: a queue that holds one request's tokens at a time, four
 * connections. Each 429 carries Retry-After: 1, so a connection answered 429 waits a second
 * before it sends again: over 1.5 s at most 2 refusals per connection, where re-sending at once
 * would count hundreds. */
Test(server_load, loadgen_backs_off_on_429) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    c.max_batch_tokens = 64;
    c.max_queue_tokens = 3000;
    srvt_server t;
    srvt_start(&t, &c);
    const char *texts[8];
    char *owned[8];
    for (int i = 0; i < 8; i++)
        texts[i] = owned[i] = srvt_long_text(30, i);
    char corpus[1024];
    write_corpus(corpus, sizeof corpus, texts, 8);
    char url[128];
    snprintf(url, sizeof url, "%s/v1/embeddings", t.base);
    loadgen_config lc;
    loadgen_config_defaults(&lc);
    lc.url = url;
    lc.corpus = corpus;
    lc.concurrency = 4;
    lc.inputs_per_request = 64; /* > 1500 tokens: two requests never fit the queue together */
    lc.duration_s = 1.5;
    loadgen_result res;
    char err[256];
    cr_assert_eq(loadgen_run(&lc, &res, err, sizeof err), 0, "%s", err);
    long refused = 0;
    for (int i = 0; i < res.n_status; i++) {
        cr_expect_eq(res.status[i].status, 429, "unexpected status %d: %s", res.status[i].status,
                     res.first_error);
        if (res.status[i].status == 429) refused = res.status[i].count;
    }
    cr_log_info("loadgen vs a one-request queue: %ld ok, %ld x 429, %ld back-offs", res.ok, refused,
                res.backoffs);
    cr_expect_gt(res.ok, 0, "nothing answered");
    cr_expect_gt(refused, 0, "no 429: the queue limit did not bite (%ld ok)", res.ok);
    cr_expect_eq(res.backoffs, refused, "every 429 pauses its connection");
    cr_expect_leq(refused, 4 * 2, "%ld refusals in 1.5 s: Retry-After not honoured", refused);
    for (int i = 0; i < 8; i++)
        free(owned[i]);
    srvt_stop(&t);
}
