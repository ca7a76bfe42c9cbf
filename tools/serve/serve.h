/* serve.h — the embedding HTTP service behind `qembed serve`, as a library: start it on a port
 * (0 = ephemeral), wait until the model is loaded, drain and stop. The tests drive it in-process.
 *
 * Routes (the contract as built is docs/serving.md; the plan was /work/shared/docs/SERVING.md):
 *   POST /v1/embeddings   OpenAI embeddings (+ instruction, prompt_name, truncate,
 *                         truncation_direction, normalize extensions)
 *   POST /, /embed        TEI: {"inputs": str | [str] | ids, normalize, truncate,
 *                         truncation_direction, prompt_name, dimensions} -> [[float, ...], ...]
 *   POST /embed_all       TEI: per-token vectors [[[float, ...] per token] per input]
 *   POST /similarity      TEI: {"inputs": {"source_sentence", "sentences"}, "parameters"} -> [cos]
 *   POST /tokenize        TEI: -> [[{"id", "text", "special", "start", "stop"}, ...], ...]
 *   POST /decode          {"ids": [id, ...] | [[id, ...], ...], "skip_special_tokens"} -> [str]
 *   POST /rerank          TEI: {"query", "texts", "raw_scores", "return_text"} -> [{"index",
 *                         "score"}] (with "documents" instead of "texts": as /v1/rerank)
 *   POST /v1/rerank, /v2/rerank  Cohere / Jina / vLLM: {"model", "query", "documents", "top_n",
 *                         "return_documents"} -> {"id", "model", "results": [{"index",
 *                         "relevance_score", "document"?}], "usage"} (a reranker model only;
 *                         the embedding routes need an embedding model)
 *   GET  /v1/models (every model served), /v1/models/{id}, /info (the first model), /health,
 *        /health/live, /health/ready, /metrics,
 *        /openapi.json
 * OpenAI routes answer errors as {"error": {"message", "type", "param", "code"}}; TEI's routes as
 * {"error", "error_type"} with TEI's statuses. Errors about the HTTP request itself (400/413/414/
 * 431/505 for a malformed head, 408 for a late one) are answered as JSON by the gate
 * (serve_gate.c) before libmicrohttpd sees the connection. With an API key, every route but the
 * health probes, /metrics, /openapi.json and CORS preflights needs "Authorization: Bearer KEY",
 * checked on the headers before any body is read. */
#ifndef QE_SERVE_H
#define QE_SERVE_H
#include <stddef.h>

#include "qembed.h"

#define SERVE_MAX_MODELS 8
#define SERVE_MAX_DEVICES 16

/* A model behind the port beside the first (serve_config.more_models). */
typedef struct serve_model_config {
    const char *dir;
    const char *served_name; /* NULL: the folder's name */
    qe_task task;            /* QE_TASK_AUTO: the folder says */
} serve_model_config;

typedef struct serve_config {
    const char *model_dir; /* required: the first model */
    qe_task task;          /* QE_TASK_AUTO: the folder says (qe_options.task) */
    /* More models behind the same port (embedding models and rerankers): each gets its own
     * engine (on the one GPU or CPU), queue and engine thread; requests choose by `model`, and
     * routes without one use the first model of their kind. Served names must differ. */
    serve_model_config more_models[SERVE_MAX_MODELS - 1];
    int n_more_models;
    /* Data parallel: every model gets one engine per entry (0: one engine on device 0), fed by
     * the model's one queue; an engine takes a step's worth of work whenever it is free. On CUDA
     * the entries are device ordinals (one repeated: several engines on one GPU); the CPU
     * backend runs one engine per entry. An engine whose device faults leaves the rotation, its
     * work is retried on the others; the server faults when a model has none left. With
     * tensor_parallel N > 1 the entries go N at a time to each engine, one per rank (0-7 with
     * N = 2: four engines on 0,1 / 2,3 / 4,5 / 6,7): their count must be a multiple of N, and on
     * CUDA no device may serve two engines' ranks (NCCL communicators sharing a GPU can wait on
     * each other). Without entries, one engine on devices 0..N-1. */
    int devices[SERVE_MAX_DEVICES];
    int n_devices;
    int tensor_parallel;           /* qe_options.tensor_parallel of every engine (0/1: none) */
    qe_backend backend;            /* default QE_BACKEND_CPU */
    const char *host;              /* default "127.0.0.1" */
    int port;                      /* default 8080; 0 = ephemeral (see serve_port) */
    const char *api_key;           /* NULL: no auth. Else "Authorization: Bearer KEY" required */
    int max_batch_tokens;          /* tokens per engine call; default 16384 */
    int max_client_batch;          /* inputs per request; default 2048 (413 past it) */
    int max_input_tokens;          /* 0: the model's max positions */
    int kv_pool_tokens;            /* qe_options.kv_pool_tokens; 0: max_input_tokens if set */
    long max_queue_tokens;         /* tokens queued or computing; past it 429. default 1<<20 */
    size_t max_body;               /* bytes; default 32 MiB (413 past it) */
    const char *served_model_name; /* default: basename of model_dir */
    int tokenizer_threads;         /* default 2 */
    int http_threads;              /* MHD worker threads (epoll, never block); default 4 */
    int engine_threads;            /* CPU backend threads; 0 = every core */
    double drain_timeout_s;        /* how long a drain waits for queued work; default 60 */
    int quiet;                     /* 1: no per-request log lines */
    const char *cors_allow_origin; /* NULL: no CORS. Else Access-Control-Allow-Origin value ("*"
                                    * or an origin) on every answer, and OPTIONS preflights */
    double request_timeout_s;      /* a request's head and body must arrive within this; and a
                                      kept-alive connection idles at most this. default 60 */
    int max_connections;           /* open connections in total; 0: 1024, kept under the fd limit */
    int max_connections_per_ip;    /* open connections from one client address; default 128 */
} serve_config;

typedef enum {
    SERVE_LOADING = 0,
    SERVE_READY,
    SERVE_DRAINING,
    SERVE_FAULT,  /* engine device fault: /health 503, embeds 503 */
    SERVE_FAILED, /* the model failed to load */
    SERVE_STOPPED,
} serve_state;

typedef struct serve_server serve_server;

/* Fills the defaults above. */
void serve_config_defaults(serve_config *c);
/* Binds the listener and starts loading the model in the background (/health answers 503 until it
 * is loaded). Returns 0, or -1 with a message in err. */
int serve_start(const serve_config *c, serve_server **out, char *err, size_t errlen);
/* Blocks until the model is loaded (0) or failed to load (-1, message in err). */
int serve_wait_ready(serve_server *s, char *err, size_t errlen);
int serve_port(const serve_server *s);
serve_state serve_get_state(const serve_server *s);
/* The engine of the first model (NULL until loaded); calls on it are serialised by the engine. */
qe_engine *serve_engine(serve_server *s);
/* The engine of model i (0 = the first, then more_models in order); NULL until loaded. */
qe_engine *serve_model_engine(serve_server *s, int i);
/* Replica r of model i (data parallel, in --devices order); NULL until loaded or past the end. */
qe_engine *serve_replica_engine(serve_server *s, int i, int r);
/* Graceful drain: new work gets 503, work already accepted is finished and answered. Returns 0 when
 * everything accepted was answered, -1 if the drain timeout passed first. Idempotent. */
int serve_drain(serve_server *s);
/* The same in two halves, for a caller that keeps watching signals: serve_drain_begin turns new
 * work away; serve_drained says whether everything accepted has been answered. */
void serve_drain_begin(serve_server *s);
int serve_drained(serve_server *s);
/* Cancels the engine call in progress at its next step or chunk boundary (its requests get 503)
 * and every later one: what a drain that timed out does before serve_stop. */
void serve_cancel_running(serve_server *s);
/* Stops the listener and every thread, closes the engine, frees everything. */
void serve_stop(serve_server *s);

#endif
