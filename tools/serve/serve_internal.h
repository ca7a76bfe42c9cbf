/* serve_internal.h — the structures shared by the files of the server: the job a request becomes,
 * the sequence queue, the metrics, and the server itself. Not for use outside tools/serve/. */
#ifndef QE_SERVE_INTERNAL_H
#define QE_SERVE_INTERNAL_H
#include <pthread.h>
#include <time.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "sbuf.h"
#include "serve.h"

struct MHD_Daemon;
struct tok_tokenizer;

/* ---- response text (serve_buf.c), on the growable buffer of sbuf.h ---- */
void sb_json_string(sbuf *b, const char *s, size_t n); /* quoted, escaped */

double srv_now(void); /* monotonic seconds */

/* ---- an error as the client sees it ---- */
typedef struct srv_error {
    int status;       /* HTTP status; 0 = no error */
    const char *type; /* "invalid_request_error", ... */
    const char *code; /* short machine code, e.g. "input_too_long"; NULL -> null */
    char param[48];   /* offending field, "" -> null */
    char message[400];
    int retry_after; /* seconds for the Retry-After header of a 429 (0: 1) */
} srv_error;
void srv_err_set(srv_error *e, int status, const char *type, const char *code, const char *param,
                 const char *fmt, ...) __attribute__((format(printf, 6, 7)));
void srv_err_oom(srv_error *e); /* 500 out_of_memory */
/* The metrics label of a failure: the code, else derived from the status. */
const char *srv_err_reason(const srv_error *e);

/* ---- a request turned into work ---- */
typedef enum {
    ROUTE_OPENAI = 0,
    ROUTE_TEI,        /* POST / and /embed */
    ROUTE_SIMILARITY, /* TEI /similarity: input 0 is the source sentence */
    ROUTE_EMBED_ALL,  /* TEI /embed_all: per-token vectors (tok_out) */
    ROUTE_TOKENIZE,
    ROUTE_DECODE,
    ROUTE_RERANK,     /* TEI /rerank: {"query", "texts"} -> [{"index", "score"}] */
    ROUTE_RERANK_API, /* /v1/rerank, /v2/rerank (and /rerank with "documents"): Cohere's shape */
    ROUTE_OTHER
} srv_route;
/* Routes answered in TEI's shapes, errors included ({"error", "error_type"}). */
static inline int srv_route_is_tei(srv_route r) {
    return r == ROUTE_TEI || r == ROUTE_SIMILARITY || r == ROUTE_EMBED_ALL || r == ROUTE_TOKENIZE ||
           r == ROUTE_DECODE || r == ROUTE_RERANK;
}

typedef struct srv_job srv_job;
typedef struct srv_model srv_model;

typedef struct srv_seq {
    srv_job *job;
    int index;
    double cost;          /* qe_cost_tokens of its length: its weight in the queue budget */
    struct srv_seq *next; /* queue link */
} srv_seq;

struct srv_job {
    atomic_int refs;
    atomic_int cancelled; /* the client went away: drop what is still queued */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;      /* under mu: answered (error or vectors) */
    srv_error err; /* under mu: first error wins */

    srv_route route;
    int n;        /* inputs */
    char **texts; /* n texts to tokenize (prompt applied), or NULL for id input */
    size_t *text_lens;
    int32_t **ids; /* n sequences after tokenization (or as given) */
    int *lens;
    size_t *prefix_lens; /* bytes of texts[i] that are the instruction or prompt (never cut) */
    float **tok_out;     /* ROUTE_EMBED_ALL: per input, lens[i] rows of width floats */
    int end_id;          /* the tokenizer's end token (-1: none), kept by truncation */
    int max_len;         /* tokens kept per input */
    int truncate, truncate_left;
    int dims;      /* output width (<= model width) */
    int normalize; /* L2-normalise the cut vector (the default) */
    int base64;    /* encoding_format */
    int width;     /* model width */
    float *out;    /* n * dims */
    unsigned long request_id;
    srv_model *m; /* the model it runs on */

    /* reranking (serve_rerank.c): texts are the documents, out one logit per document */
    int rerank;
    char *query;
    size_t query_len;
    char *instruction; /* NULL: the reranker's default */
    int raw_scores;    /* TEI: logits, not probabilities */
    int return_text;   /* echo each document (return_text / return_documents) */
    int top_n;         /* 0: every document */
    atomic_int tok_chunks_left;
    atomic_int seqs_left;
    long prompt_tokens;
    srv_seq *seqs; /* n entries, queue nodes */

    /* Called once, under mu, when the job becomes done while armed: resumes the suspended HTTP
     * connection that waits for it. */
    void (*notify)(void *arg);
    void *notify_arg;
    int notify_armed;

    double t_start, t_queued, t_first_compute, t_done;
    double compute_s;         /* engine seconds of the batches this job was part of */
    unsigned long last_batch; /* the last batch counted into compute_s */
    pthread_mutex_t time_mu;
};

srv_job *srv_job_new(int n);
void srv_job_ref(srv_job *j);
void srv_job_unref(srv_job *j);
/* Records the error (first wins) and wakes the waiter. */
void srv_job_fail(srv_job *j, const srv_error *e);
/* Marks the job answered and wakes the waiter. */
void srv_job_finish(srv_job *j);

/* ---- metrics (serve_metrics.c) ---- */
#define SRV_HIST_MAX 20
typedef struct srv_hist {
    int n;
    double bounds[SRV_HIST_MAX];
    unsigned long counts[SRV_HIST_MAX + 1]; /* last = +Inf */
    double sum;
    unsigned long total;
} srv_hist;

#define SRV_MAX_ROUTES 20
#define SRV_MAX_STATUS 16
#define SRV_MAX_REASONS 24
typedef struct srv_metrics {
    pthread_mutex_t mu;
    struct {
        char route[24];
        int status;
        unsigned long count;
    } req[SRV_MAX_ROUTES * SRV_MAX_STATUS];
    int n_req;
    struct {
        char reason[32];
        unsigned long count;
    } fail[SRV_MAX_REASONS];
    int n_fail;
    srv_hist batch_size, batch_tokens, t_tokenize, t_queue, t_inference, t_total;
    unsigned long tokens_processed, sequences_processed, batches, cancelled_seqs;
    unsigned long inputs_total, prompt_tokens_total;
    /* TEI's te_* names: requests by method ("single" = one input, "batch"), failures by TEI's err
     */
    unsigned long te_count[2], te_success[2];
    struct {
        char err[24];
        unsigned long count;
    } te_fail[SRV_MAX_REASONS];
    int n_te_fail;
    srv_hist t_req_inference, input_length;
} srv_metrics;

void srv_metrics_init(srv_metrics *m);
void srv_metrics_free(srv_metrics *m);
void srv_metrics_request(srv_metrics *m, const char *route, int status, const char *fail_reason);
void srv_hist_observe(srv_metrics *m, srv_hist *h, double v);
/* An embedding-family request answered with status (TEI's te_request_* counters). */
void srv_metrics_te_request(srv_metrics *m, int n_inputs, int status, const srv_error *err);
/* Prometheus text exposition of everything, plus the server's gauges. */
char *srv_metrics_render(serve_server *s, size_t *len);

/* ---- one engine of a model (data parallel: one per --devices entry) and its thread ---- */
typedef struct srv_replica {
    srv_model *m;
    int index;  /* in m->replicas */
    int device; /* the CUDA device (the CPU backend runs one engine per entry too); with tensor
                 * parallelism its first rank's */
    const int *tp_devices; /* tensor parallel: its ranks' devices (in the config); else NULL */
    qe_engine *engine;
    pthread_t thread;
    int started;
    /* under m->q_mu: */
    int busy;              /* in a step */
    int dead;              /* a device fault took it out of rotation */
    long pending_tokens;   /* taken from the queue, not yet finished */
    unsigned long steps;   /* steps run */
    unsigned long step_id; /* the model-wide number of its current step (on_ran's charge) */
    int kv_used_tokens;    /* K/V pool tokens held after the last step */
} srv_replica;

/* ---- one model behind the port: its engines, its sequence queue ---- */
struct srv_model {
    serve_server *s;
    int index; /* in s->models */
    char *served_name;
    char *dir;
    qe_task task_asked; /* QE_TASK_AUTO: the folder says */
    char dtype[32];     /* the checkpoint's (config.json torch_dtype) */
    char model_sha[48]; /* the Hugging Face snapshot folder's commit, when the folder is one */
    qe_engine *engine;  /* replicas[0]'s: the geometry, tokenizer and rerank row every replica
                         * shares */
    const struct tok_tokenizer *tok;
    qe_task task; /* what the loaded engine is (embed or rerank) */
    int width, max_positions, vocab, max_input_tokens;
    srv_replica replicas[SERVE_MAX_DEVICES];
    int n_replicas;

    /* sequence queue (FCFS), emptied into the engines' schedulers between steps */
    pthread_mutex_t q_mu;
    pthread_cond_t q_cv; /* queue got work / stop */
    srv_seq *q_head, *q_tail;
    long q_seqs;
    long q_tokens;         /* waiting in the queue */
    long inflight_tokens;  /* queued + in a scheduler + computing */
    double inflight_cost;  /* the same weighed by qe_cost_tokens: the 429 budget */
    double cost_done;      /* cost of the sequences embedded, and the engine seconds they took: */
    double engine_seconds; /* their ratio is the rate that predicts a queue's wait */
    int q_stop;
    unsigned long steps; /* steps of all its replicas, numbering them */

    /* requests admitted and not answered: before their first step, and after it
     * (qembed:num_requests_waiting / _running) */
    atomic_long jobs_waiting, jobs_running;
};

/* The replicas of m in rotation: not taken out by a device fault (caller holds m->q_mu). */
static inline int srv_replicas_up(const srv_model *m) {
    int up = 0;
    for (int r = 0; r < m->n_replicas; r++)
        up += !m->replicas[r].dead;
    return up;
}

/* The model a request names (its "model" field, NULL when absent) for a task: by served name, else
 * the first model of that task. NULL with a 400 (unknown name, or the model is of the other
 * task, or none of the task is served). */
srv_model *srv_pick_model(serve_server *s, const cJSON *model_field, qe_task task, srv_error *e);
/* The model served as name, of either task; NULL with a 400 listing the served names. */
srv_model *srv_model_called(serve_server *s, const char *name, srv_error *e);
/* The model a request names, of either task; the first model when it names none. */
srv_model *srv_model_named(serve_server *s, const cJSON *model_field, srv_error *e);
/* Engines of every model that a device fault took out of rotation. */
int srv_replicas_down(serve_server *s);
/* srv_model_named of the body's "model", which must have a tokenizer (/tokenize, /decode). */
srv_model *srv_model_with_tokenizer(serve_server *s, const cJSON *body, srv_error *e);

/* ---- the server ---- */
struct serve_server {
    serve_config cfg;
    char *host;
    char *api_key;
    int port;
    atomic_int state;          /* serve_state */
    atomic_int cancel_running; /* serve_cancel_running: the engine call stops at its next step */
    char load_error[512];

    struct MHD_Daemon *mhd;
    srv_model models[SERVE_MAX_MODELS]; /* in --model order; every request picks one */
    int n_models;

    pthread_t loader;
    int loader_started;
    pthread_mutex_t state_mu;
    pthread_cond_t state_cv; /* state changes, active request count */
    long active_requests;    /* accepted requests not yet answered */
    atomic_ulong next_request_id;
    time_t started; /* wall clock at serve_start: every model's "created" on /v1/models */

    /* tokenizer pool (every model's): a FIFO of (job, chunk) tasks */
    pthread_mutex_t tok_mu;
    pthread_cond_t tok_cv;
    struct srv_tok_task *tok_head, *tok_tail;
    pthread_t *tok_threads;
    int n_tok_threads;
    int tok_stop;
    int pipeline_started;

    /* suspended requests whose sockets the watcher polls for hang-ups */
    pthread_mutex_t watch_mu;
    struct srv_req *watch_head;
    pthread_t watcher;
    int watcher_started, watch_stop;

    struct srv_gate *gate; /* accepts every connection and relays it, vetting each head */

    /* every open connection, for the request deadline (serve_conn.c) */
    pthread_mutex_t conn_mu;
    struct srv_conn *conn_head;
    unsigned long conns_timed_out; /* closed at the request deadline */
    unsigned long conns_evicted;   /* slowest arriving requests evicted at the cap */

    srv_metrics metrics;
};

/* serve_queue.c: the tokenizer pool and the sequence queue */
int srv_pipeline_start(serve_server *s);
void srv_pipeline_stop(serve_server *s);
/* Queues a job: tokenization first if it has texts, then admission to the sequence queue. The job
 * is answered through srv_job_fail / srv_job_finish. Takes its own references. */
void srv_submit(serve_server *s, srv_job *j);
/* Admission of a tokenized job to the sequence queue (429 when over max_queue_tokens). */
void srv_admit(serve_server *s, srv_job *j);
/* A queued sequence is finished with (computed or dropped): the last one answers the job and
 * releases the queue's reference. */
void srv_seq_done(serve_server *s, srv_seq *q);
/* Unlinks queued sequences of m from the head (caller holds m->q_mu): returns the live ones as a
 * list in arrival order (linked by next), stopping once they hold max_tokens (the first is always
 * taken; LONG_MAX takes all), and puts those of cancelled jobs met on the way in *dropped (their
 * tokens leave inflight_tokens; the caller passes them to srv_seq_done). */
srv_seq *srv_take_queue(srv_model *m, long max_tokens, srv_seq **dropped);
/* serve_engine.c: one engine thread per replica (arg: the srv_replica) */
void *srv_engine_main(void *arg);

/* serve_request.c: parse and validate bodies into a job (NULL + err on failure) */
srv_job *srv_parse_embed(serve_server *s, srv_route route, const char *body, size_t len,
                         srv_error *err);
/* The same from a parsed body (the caller keeps root): what /similarity builds on. */
srv_job *srv_embed_from_json(serve_server *s, srv_route route, const cJSON *root, srv_error *e);
/* Helpers shared with serve_tei.c: a field with JSON null read as absent; a boolean field; strict
 * UTF-8; the 413 past --max-client-batch; an id array; a strict JSON object body. */
const cJSON *srv_json_field(const cJSON *obj, const char *name);
int srv_read_bool(const cJSON *obj, const char *name, int dflt, int *out, srv_error *e);
int srv_utf8_valid(const unsigned char *s, size_t n);
int srv_over_client_batch(const serve_server *s, int n, const char *param, const char *what,
                          srv_error *e);
int srv_read_id_array(const cJSON *arr, int vocab, int32_t **ids, int *n, srv_error *e,
                      const char *param);
cJSON *srv_parse_body_object(const char *body, size_t len, srv_error *e);

/* serve_tei.c: TEI's shapes */
/* /similarity: {"inputs": {"source_sentence", "sentences"}, "parameters": {truncate,
 * truncation_direction, prompt_name}} into a job of 1 + n texts. */
srv_job *srv_parse_similarity(serve_server *s, const char *body, size_t len, srv_error *e);
char *srv_render_tei(serve_server *s, const srv_job *j, size_t *len); /* similarity, embed_all */
/* TEI's error: {"error": message, "error_type": ...}; *status becomes TEI's status. */
char *srv_render_tei_error(const srv_error *e, int *status, size_t *len);

/* serve_rerank.c: /rerank (TEI) and /v1/rerank, /v2/rerank (Cohere, Jina, vLLM) */
srv_job *srv_parse_rerank(serve_server *s, srv_route route, const char *body, size_t len,
                          srv_error *e);
void srv_rerank_tokenize(srv_job *j, int i); /* document i's prompt */
char *srv_render_rerank(const srv_job *j, size_t *len);
/* The OpenAI error shape plus "detail": the message where Jina's clients look for it. */
char *srv_render_rerank_error(const srv_error *e, size_t *len);
/* Tokens per reranker prompt: --max-input-tokens, else 8192, at most the model's positions. */
int srv_rerank_limit(const srv_model *m);

/* serve_openapi.c */
const char *srv_openapi_json(void);

/* /tokenize and /decode run synchronously on the HTTP thread: the response body or NULL + err */
char *srv_handle_tokenize(serve_server *s, const char *body, size_t len, size_t *out_len,
                          srv_error *err);
char *srv_handle_decode(serve_server *s, const char *body, size_t len, size_t *out_len,
                        srv_error *err);

/* serve_response.c */
char *srv_render_embeddings(serve_server *s, const srv_job *j, size_t *len);
char *srv_render_error(const srv_error *e, size_t *len);
char *srv_render_info(serve_server *s, size_t *len);
char *srv_render_models(serve_server *s, size_t *len);
char *srv_render_model(const srv_model *m, size_t *len); /* GET /v1/models/{id}: the one object */
/* Shortest-enough decimal of a float that reads back to the same float; returns chars written
 * (at most 16, buf needs 24). */
int srv_format_float(float x, char *buf);
void srv_base64(sbuf *b, const unsigned char *p, size_t n);

/* serve_conn.c: connection-level defences against hostile clients */
struct MHD_Connection;
enum MHD_ConnectionNotificationCode;
/* MHD_OPTION_NOTIFY_CONNECTION: tracks each connection and when its current request began. */
void srv_conn_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                     enum MHD_ConnectionNotificationCode code);
/* The request's head has arrived (the handler's first call): from now on the handler may answer,
 * so a deadline closes the connection without a 408. -1 when the deadline already closed it. */
int srv_conn_head(serve_server *s, struct MHD_Connection *c);
/* The request's head and body have arrived (the deadline stops), or it was answered (the next
 * head's deadline starts). Returns -1 when the deadline already closed the connection. */
int srv_conn_received(serve_server *s, struct MHD_Connection *c);
void srv_conn_answered(serve_server *s, struct MHD_Connection *c);
/* Closes the connections whose head or body is late; called every 50 ms by the watcher. */
void srv_conn_reap(serve_server *s);
/* The connection limit in effect (config, kept under the process's fd limit). */
unsigned srv_conn_limit(const serve_server *s);
/* 1 when a Content-Length value is one that libmicrohttpd parses (digits, fits 64 bits). */
int srv_content_length_ok(const char *v);
/* Writes a complete JSON error response with "Connection: close" straight to the socket, then
 * shuts it for writing: for connections libmicrohttpd does not hold or has written nothing on
 * (the gate's refusals, a 408 for a head that never came). */
void srv_conn_write_error(int fd, const srv_error *e);
/* The same response into out[0..cap): its length, 0 when it does not fit. */
#define SRV_RAW_ERROR_MAX 2048
size_t srv_conn_render_error(const srv_error *e, char *out, size_t cap);
/* Requests libmicrohttpd has completed on the connection whose fd (its end of the gate's
 * socketpair) is fd; -1 when it tracks no such connection (not started yet, or closed). */
long srv_conn_answered_on(serve_server *s, int fd);

/* serve_frame.c: the request stream of a connection, scanned as the gate relays it */
#define SRV_HEAD_MAX (16 << 10) /* a request head past this is 431 (414: its request line) */
typedef enum {
    FRAME_HEAD = 0,   /* awaiting (the rest of) a head */
    FRAME_BODY,       /* left bytes of a Content-Length body */
    FRAME_CHUNK_SIZE, /* chunked: a chunk-size line */
    FRAME_CHUNK_DATA, /* left bytes of a chunk */
    FRAME_CHUNK_END,  /* the CRLF after a chunk */
    FRAME_TRAILER     /* trailer lines after the last chunk, until an empty one */
} srv_frame_state;
typedef struct srv_frame {
    srv_frame_state state;
    unsigned long long left;
    long heads; /* heads that passed */
} srv_frame;
/* Scans b[0..n), the stream's next bytes: returns how many of them may go to libmicrohttpd
 * (whole heads that passed the checks, body bytes); a partial head or chunk line is left for the
 * next call, with more bytes after it. A refused head or broken chunked framing sets e (status
 * nonzero: the JSON answer to give); the bytes returned before it may still go. */
size_t srv_frame_scan(srv_frame *f, const char *b, size_t n, srv_error *e);

/* serve_gate.c: the listener. Takes listen_fd (bound, listening, non-blocking). */
typedef struct srv_gate srv_gate;
int srv_gate_start(serve_server *s, int listen_fd, char *err, size_t errlen);
/* Relays the answers already written for a moment, then closes the listener and every
 * connection. */
void srv_gate_stop(serve_server *s);

/* serve_http.c */
int srv_http_start(serve_server *s, char *err, size_t errlen);
/* Waits (up to timeout_s) for every accepted request to be answered, then stops the listener. */
void srv_http_stop(serve_server *s, double timeout_s);

#endif
