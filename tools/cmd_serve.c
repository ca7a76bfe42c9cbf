/* cmd_serve.c — `qembed serve`: flags, signals, and the server's life from listen to drain. The
 * server itself lives in serve/. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "flags.h"
#include "serve/serve.h"

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: qembed serve --model DIR [options]\n"
        "OpenAI- and TEI-compatible embedding server (POST /v1/embeddings, /, /embed,\n"
        "/embed_all, /similarity, /tokenize, /decode; GET /v1/models, /v1/models/{id}, /info,\n"
        "/health, /health/live, /health/ready, /metrics, /openapi.json; docs/serving.md), and\n"
        "with a Qwen3-Reranker a reranking server (POST /rerank, /v1/rerank, /v2/rerank).\n\n"
        "  --model DIR              model folder (required). Give it again to serve several\n"
        "                           models behind the port (embedding models and rerankers,\n"
        "                           each with its own engine and queue on the one GPU or CPU);\n"
        "                           requests choose by \"model\", and routes without one use the\n"
        "                           first model of their kind\n"
        "  --task embed|rerank      what the last --model is for (default: decided from the\n"
        "                           folder; qembed inspect says which)\n"
        "  --backend cpu|cuda       engine backend (default cpu; pass cuda on a GPU build)\n"
        "  --devices LIST           data parallel: one engine per entry for every model, all\n"
        "                           fed by the model's one queue, each taking a step's worth of\n"
        "                           work when free (CUDA device ordinals: 0,1 or 0-3; a repeat\n"
        "                           such as 0,0 puts two engines on one GPU; on the CPU backend\n"
        "                           each entry is one more engine). An engine whose device\n"
        "                           faults leaves the rotation and its work is retried on the\n"
        "                           others (default: one engine, device 0)\n"
        "  --tensor-parallel N      split every layer of each engine over N ranks (it must\n"
        "                           divide the query and kv heads). On CUDA one rank per GPU,\n"
        "                           summed over NCCL: --devices entries go N at a time to each\n"
        "                           engine (0-7 with N = 2: four engines of two GPUs), without\n"
        "                           --devices one engine on GPUs 0..N-1. On the CPU backend it\n"
        "                           proves the split (no faster)\n"
        "  --host ADDR              address to bind (default 127.0.0.1)\n"
        "  --port N                 port (default 8080; 0 picks a free one)\n"
        "  --api-key KEY            require \"Authorization: Bearer KEY\" (401 otherwise;\n"
        "                           /health*, /metrics and /openapi.json stay open)\n"
        "  --max-batch-tokens N     tokens per engine step (default 16384). An input longer\n"
        "                           than half of it runs in chunks through the K/V pool, mixed\n"
        "                           into the steps with short inputs; the engine can stop\n"
        "                           between steps (a client that left, a shutdown)\n"
        "  --kv-pool-tokens N       tokens of K/V the paged pool holds for the long inputs in\n"
        "                           flight, made at startup (default --max-input-tokens when\n"
        "                           given, at most the model's positions, else the model's max\n"
        "                           positions; 0 or -1: no pool, so no input longer than a\n"
        "                           step). An input that needs more waits for pages; one longer\n"
        "                           than the pool and than a step is refused\n"
        "  --max-client-batch N     inputs per request (default 2048; 413 past it)\n"
        "  --max-input-tokens N     tokens per input (default the model's max positions, 8192\n"
        "                           for a reranker); past the model's positions it is held to\n"
        "                           them (said once at startup)\n"
        "  --max-queue-tokens N     work queued or computing before 429 (default 1048576), in\n"
        "                           token-equivalents: an input of L tokens weighs\n"
        "                           L * (1 + L / A), A the length whose attention costs as much\n"
        "                           as the rest of a layer (7680 for Qwen3-Embedding-0.6B; the\n"
        "                           startup line prints it), so a long document counts for what\n"
        "                           it costs. A 429's Retry-After is the measured time for the\n"
        "                           queue to drain enough; a request over the limit alone is 413\n"
        "  --max-body BYTES         request body limit (default 33554432; 413 past it)\n"
        "  --served-model-name S    the name clients pass as `model` for the last --model\n"
        "                           (default the folder's name)\n"
        "  --threads N              tokenizer threads (default 2)\n"
        "  --http-threads N         HTTP worker threads (default 4; they never block)\n"
        "  --engine-threads N       CPU backend threads (default 0 = every core)\n"
        "  --drain-timeout S        seconds SIGTERM waits for queued work (default 60)\n"
        "  --cors-allow-origin O    answer browsers from origin O (or *): Access-Control-*\n"
        "                           headers on every answer, OPTIONS preflights answered 204\n"
        "  --request-timeout S      a request's head and body must arrive within S seconds, and\n"
        "                           a kept-alive connection idles at most S (default 60); a late\n"
        "                           connection is closed (408 when its head never came)\n"
        "  --max-connections N      open connections in total (default 1024, kept under the\n"
        "                           fd limit); past it new connections wait to be accepted\n"
        "  --max-connections-per-ip N  open connections from one client address (default 128;\n"
        "                           0: no limit); past it a new one is closed at once\n"
        "  --quiet                  no per-request log lines\n"
        "  --help                   this text\n\n"
        "SIGTERM/SIGINT: /health turns 503, new work gets 503, queued work is finished and\n"
        "answered, then the process exits 0. When --drain-timeout passes first, the running\n"
        "engine call stops at its next step, what is left is answered 503, and the process\n"
        "exits 1. A second SIGTERM/SIGINT exits at once, with 128 + the signal's number.\n");
}

/* After the first SIGTERM/SIGINT: drain while watching for a second signal (which exits at once,
 * 128 + its number, as a shell reports a signal). Past the drain timeout the running engine call
 * is cancelled at its next step and the rest answered 503: the process then exits 1. */
static int drain_and_stop(serve_server *s, const sigset_t *sigs, int first, double timeout_s) {
    fprintf(stderr, "qembed serve: %s: draining (up to %.0f s; a second signal exits at once)\n",
            first == SIGTERM ? "SIGTERM" : "SIGINT", timeout_s);
    serve_drain_begin(s);
    int rc = 0;
    /* each turn waits 50 ms for a signal; one that arrives ends the process below */
    for (double waited = 0; !serve_drained(s); waited += 0.05) {
        if (waited >= timeout_s) {
            fprintf(stderr, "qembed serve: drain timed out; cancelling the running work\n");
            serve_cancel_running(s);
            rc = 1;
            break;
        }
        struct timespec ts = {0, 50 * 1000000L};
        const int sig = sigtimedwait(sigs, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT) {
            fprintf(stderr, "qembed serve: second %s: exiting now\n",
                    sig == SIGTERM ? "SIGTERM" : "SIGINT");
            _exit(128 + sig);
        }
    }
    serve_stop(s);
    fprintf(stderr, "qembed serve: stopped\n");
    return rc;
}

/* --served-model-name and --task belong to the --model given last before them (the first
 * model when none was given yet). */
static const char **latest_name(serve_config *c) {
    return c->n_more_models ? &c->more_models[c->n_more_models - 1].served_name
                            : &c->served_model_name;
}
static qe_task *latest_task(serve_config *c) {
    return c->n_more_models ? &c->more_models[c->n_more_models - 1].task : &c->task;
}

int cmd_serve(int argc, char **argv) {
    serve_config c;
    serve_config_defaults(&c);
    const char *devices_arg = "0";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long x = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--quiet")) {
            c.quiet = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "qembed serve: %s needs a value (or unknown option)\n", a);
            usage(stderr);
            return 2;
        }
        i++;
        if (!strcmp(a, "--model")) {
            if (!c.model_dir)
                c.model_dir = v;
            else if (c.n_more_models + 1 < SERVE_MAX_MODELS)
                c.more_models[c.n_more_models++].dir = v;
            else {
                fprintf(stderr, "qembed serve: at most %d --model\n", SERVE_MAX_MODELS);
                return 2;
            }
        } else if (!strcmp(a, "--backend")) {
            if (flag_backend("serve", v, &c.backend)) return 2;
        } else if (!strcmp(a, "--task")) {
            if (strcmp(v, "embed") && strcmp(v, "rerank")) {
                fprintf(stderr, "qembed serve: --task is embed or rerank, got '%s'\n", v);
                return 2;
            }
            *latest_task(&c) = !strcmp(v, "rerank") ? QE_TASK_RERANK : QE_TASK_EMBED;
        } else if (!strcmp(a, "--tensor-parallel")) {
            if (flag_long("serve", a, v, 1, 64, &x)) return 2;
            c.tensor_parallel = (int)x;
        } else if (!strcmp(a, "--devices")) {
            if (flag_devices("serve", v, c.devices, SERVE_MAX_DEVICES, &c.n_devices)) return 2;
            devices_arg = v;
        } else if (!strcmp(a, "--host"))
            c.host = v;
        else if (!strcmp(a, "--port")) {
            if (flag_long("serve", a, v, 0, 65535, &x)) return 2;
            c.port = (int)x;
        } else if (!strcmp(a, "--api-key"))
            c.api_key = v;
        else if (!strcmp(a, "--max-batch-tokens")) {
            if (flag_long("serve", a, v, 1, 1 << 26, &x)) return 2;
            c.max_batch_tokens = (int)x;
        } else if (!strcmp(a, "--max-client-batch")) {
            if (flag_long("serve", a, v, 1, 1 << 20, &x)) return 2;
            c.max_client_batch = (int)x;
        } else if (!strcmp(a, "--max-input-tokens")) {
            if (flag_long("serve", a, v, 1, 1 << 26, &x)) return 2;
            c.max_input_tokens = (int)x;
        } else if (!strcmp(a, "--kv-pool-tokens")) {
            if (flag_long("serve", a, v, -1, 1 << 30, &x)) return 2;
            c.kv_pool_tokens = x == 0 ? -1 : (int)x;
        } else if (!strcmp(a, "--max-queue-tokens")) {
            if (flag_long("serve", a, v, 1, 1L << 40, &x)) return 2;
            c.max_queue_tokens = x;
        } else if (!strcmp(a, "--max-body")) {
            if (flag_long("serve", a, v, 1, 1L << 40, &x)) return 2;
            c.max_body = (size_t)x;
        } else if (!strcmp(a, "--cors-allow-origin"))
            c.cors_allow_origin = v;
        else if (!strcmp(a, "--served-model-name"))
            *latest_name(&c) = v;
        else if (!strcmp(a, "--threads")) {
            if (flag_long("serve", a, v, 1, 256, &x)) return 2;
            c.tokenizer_threads = (int)x;
        } else if (!strcmp(a, "--http-threads")) {
            if (flag_long("serve", a, v, 1, 4096, &x)) return 2;
            c.http_threads = (int)x;
        } else if (!strcmp(a, "--engine-threads")) {
            if (flag_long("serve", a, v, 0, 1024, &x)) return 2;
            c.engine_threads = (int)x;
        } else if (!strcmp(a, "--request-timeout")) {
            if (flag_long("serve", a, v, 1, 86400, &x)) return 2;
            c.request_timeout_s = (double)x;
        } else if (!strcmp(a, "--max-connections")) {
            if (flag_long("serve", a, v, 1, 1 << 20, &x)) return 2;
            c.max_connections = (int)x;
        } else if (!strcmp(a, "--max-connections-per-ip")) {
            if (flag_long("serve", a, v, 0, 1 << 20, &x)) return 2;
            c.max_connections_per_ip = (int)x;
        } else if (!strcmp(a, "--drain-timeout")) {
            if (flag_long("serve", a, v, 1, 86400, &x)) return 2;
            c.drain_timeout_s = (double)x;
        } else {
            fprintf(stderr, "qembed serve: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!c.model_dir) {
        fprintf(stderr, "qembed serve: --model DIR is required\n");
        usage(stderr);
        return 2;
    }

    /* Signals are taken synchronously by this thread only: block them before any thread starts. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    char err[1024];
    serve_server *s = NULL;
    if (serve_start(&c, &s, err, sizeof err) != 0) {
        fprintf(stderr, "qembed serve: %s\n", err);
        return 1;
    }
    int v6 = strchr(c.host, ':') != NULL;
    fprintf(stderr, "qembed serve: listening on http://%s%s%s:%d (loading %s)\n", v6 ? "[" : "",
            c.host, v6 ? "]" : "", serve_port(s), c.model_dir);
    int announced = 0;
    for (;;) {
        struct timespec ts = {0, 100 * 1000000L};
        int sig = sigtimedwait(&sigs, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT)
            return drain_and_stop(s, &sigs, sig, c.drain_timeout_s);
        serve_state st = serve_get_state(s);
        if (st == SERVE_FAILED) {
            serve_wait_ready(s, err, sizeof err);
            fprintf(stderr, "qembed serve: cannot load %s: %s\n", c.model_dir, err);
            serve_stop(s);
            return 1;
        }
        if (!announced && st == SERVE_READY) {
            for (int i = 0; i <= c.n_more_models; i++) {
                qe_engine *e = serve_model_engine(s, i);
                const int tp = c.tensor_parallel > 1 ? c.tensor_parallel : 1;
                const int replicas = c.n_devices > 0 ? c.n_devices / tp : 1;
                if (replicas > 1 || tp > 1)
                    fprintf(stderr, "qembed serve: %s: %d engine%s of %d rank%s (--devices %s)\n",
                            i ? c.more_models[i - 1].dir : c.model_dir, replicas,
                            replicas > 1 ? "s" : "", tp, tp > 1 ? "s" : "", devices_arg);
                fprintf(stderr,
                        "qembed serve: ready: %s (%s), width %d, max positions %d, backend %s, "
                        "K/V pool %d tokens, queue weight of an input of L tokens L * (1 + L / "
                        "%.0f)\n",
                        i ? c.more_models[i - 1].dir : c.model_dir, qe_task_name(qe_model_task(e)),
                        qe_dim(e), qe_max_positions(e), qe_backend_name(e), qe_kv_pool_tokens(e),
                        qe_attention_equal_length(e));
            }
            announced = 1;
        }
    }
}
