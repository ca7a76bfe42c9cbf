/* serve_server.c — the server's lifecycle: listen first, load the model in the background (/health
 * answers 503 meanwhile), start the pipeline, drain on request, stop and free. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "serve_internal.h"
#include "tokenizer.h"
#include "weights/config.h"
#include "weights/gguf_config.h"
#include "weights/model.h"

void serve_config_defaults(serve_config *c) {
    memset(c, 0, sizeof *c);
    c->backend = QE_BACKEND_CPU;
    c->host = "127.0.0.1";
    c->port = 8080;
    c->max_batch_tokens = 16384;
    c->max_client_batch = 2048;
    c->max_queue_tokens = 1L << 20;
    c->max_body = (size_t)32 << 20;
    c->tokenizer_threads = 2;
    c->http_threads = 4;
    c->drain_timeout_s = 60;
    c->request_timeout_s = 60;
    c->max_connections_per_ip = 128;
}

static void set_state(serve_server *s, serve_state st) {
    pthread_mutex_lock(&s->state_mu);
    atomic_store(&s->state, st);
    pthread_cond_broadcast(&s->state_cv);
    pthread_mutex_unlock(&s->state_mu);
}

/* torch_dtype from config.json: what the weights are stored in. */
static void read_dtype(srv_model *s) {
    /* what the engine read (a GGUF file's type, or config.json's torch_dtype), then config.json's
     * newer "dtype" key where torch_dtype is absent */
    snprintf(s->dtype, sizeof s->dtype, "%s", qe_checkpoint_dtype(s->engine));
    if (strcmp(s->dtype, "unknown") != 0) return;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", s->dir);
    FILE *f = fopen(path, "rb");
    if (!f) return;
    char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *j = cJSON_ParseWithLength(buf, n);
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "torch_dtype");
    if (!cJSON_IsString(d)) d = cJSON_GetObjectItemCaseSensitive(j, "dtype");
    if (cJSON_IsString(d)) snprintf(s->dtype, sizeof s->dtype, "%s", d->valuestring);
    cJSON_Delete(j);
}

/* A folder of the Hugging Face cache (.../snapshots/<40 hex>/) names its commit: TEI's model_sha.
 */
static void read_sha(srv_model *s) {
    size_t n = strlen(s->dir);
    while (n > 1 && s->dir[n - 1] == '/')
        n--;
    size_t b = n;
    while (b > 0 && s->dir[b - 1] != '/')
        b--;
    if (n - b != 40) return;
    for (size_t i = b; i < n; i++)
        if (!strchr("0123456789abcdef", s->dir[i])) return;
    memcpy(s->model_sha, s->dir + b, 40);
    s->model_sha[40] = 0;
}

/* The model's max_position_embeddings from its config.json or GGUF metadata, read before an
 * engine is opened (the K/V pool is made by qe_open); 0 when unreadable (qe_open then says why). */
static int model_positions(const char *dir) {
    qe_config c;
    char err[256];
    if (!model_is_gguf(dir))
        return cfg_load(dir, &c, err, sizeof err) == 0 ? c.max_position_embeddings : 0;
    gguf_file *g = NULL;
    if (gguf_open(dir, &g, err, sizeof err) != 0) return 0;
    const int ok = gguf_read_config(g, &c, err, sizeof err) == 0;
    gguf_close(g);
    return ok ? c.max_position_embeddings : 0;
}

/* The K/V pool an engine of m is made with: --kv-pool-tokens when given, else one input of the
 * longest length accepted, --max-input-tokens held to the model's positions (unset: qe_open's
 * default, which holds one input of the model's positions, or of a reranker's 8192 default
 * limit). Unclamped, a --max-input-tokens past the positions sized a pool no input could use (or
 * one too large to allocate). */
static int kv_pool_tokens(const serve_server *s, const srv_model *m) {
    if (s->cfg.kv_pool_tokens) return s->cfg.kv_pool_tokens;
    const int want = s->cfg.max_input_tokens;
    if (want <= 0) return 0;
    const int positions = model_positions(m->dir);
    return positions > 0 && want > positions ? positions : want;
}

/* Opens one engine of model m on device (every replica: the same folder). 0, or -1 with err. */
static int open_replica(serve_server *s, srv_model *m, const srv_replica *rp, qe_engine **out,
                        char *err, size_t errlen) {
    const int device = rp->device;
    qe_options o = {.model_dir = m->dir,
                    .task = m->task_asked,
                    .backend = s->cfg.backend,
                    .device = device,
                    .tensor_parallel = s->cfg.tensor_parallel,
                    .tp_devices = rp->tp_devices,
                    .threads = s->cfg.engine_threads,
                    .max_batch_tokens = s->cfg.max_batch_tokens,
                    /* the pool is made now: an out-of-memory shows at startup, not as a failed
                     * request; by default it holds one input of the longest length accepted */
                    .kv_pool_tokens = kv_pool_tokens(s, m)};
    qe_engine *e = NULL;
    qe_status st = qe_open(&o, &e, err, errlen);
    if (st == QE_OK && (st = qe_tokenizer_fits(e, err, errlen)) != QE_OK) {
        qe_close(e);
        e = NULL;
    }
    if (st != QE_OK) {
        char why[400];
        snprintf(why, sizeof why, "%s", err);
        if (s->cfg.n_devices > 1)
            snprintf(err, errlen, "%s (%s) on device %d: %s: %s", m->served_name, m->dir, device,
                     qe_status_name(st), why);
        else
            snprintf(err, errlen, "%s (%s): %s: %s", m->served_name, m->dir, qe_status_name(st),
                     why);
        return -1;
    }
    *out = e;
    return 0;
}

/* Opens every engine of model m and reads what the routes need of it. 0, or -1 with the reason.
 */
static int load_model(serve_server *s, srv_model *m, char *err, size_t errlen) {
    for (int r = 0; r < m->n_replicas; r++) {
        srv_replica *rp = &m->replicas[r];
        if (open_replica(s, m, rp, &rp->engine, err, errlen)) return -1;
    }
    qe_engine *e = m->engine = m->replicas[0].engine;
    m->task = qe_model_task(e);
    m->tok = qe_tokenizer(e);
    m->width = qe_dim(e);
    m->max_positions = qe_max_positions(e);
    m->vocab = qe_vocab_size(e);
    if (m->tok && tok_vocab_size(m->tok) > 0 && tok_vocab_size(m->tok) < m->vocab)
        m->vocab = tok_vocab_size(m->tok);
    m->max_input_tokens = m->max_positions;
    if (s->cfg.max_input_tokens > 0 && s->cfg.max_input_tokens < m->max_positions)
        m->max_input_tokens = s->cfg.max_input_tokens;
    if (s->cfg.max_input_tokens > m->max_positions)
        fprintf(stderr,
                "qembed serve: %s: --max-input-tokens %d is more than the model's %d positions: "
                "inputs are held to %d tokens\n",
                m->served_name, s->cfg.max_input_tokens, m->max_positions, m->max_positions);
    read_dtype(m);
    read_sha(m);
    return 0;
}

static void *loader_main(void *arg) {
    serve_server *s = arg;
    char err[512] = "";
    for (int i = 0; i < s->n_models; i++)
        if (load_model(s, &s->models[i], err, sizeof err)) {
            snprintf(s->load_error, sizeof s->load_error, "%s", err);
            set_state(s, SERVE_FAILED);
            return NULL;
        }
    if (srv_pipeline_start(s) != 0) {
        snprintf(s->load_error, sizeof s->load_error, "cannot start the pipeline threads");
        set_state(s, SERVE_FAILED);
        return NULL;
    }
    pthread_mutex_lock(&s->state_mu);
    if (atomic_load(&s->state) == SERVE_LOADING) atomic_store(&s->state, SERVE_READY);
    pthread_cond_broadcast(&s->state_cv);
    pthread_mutex_unlock(&s->state_mu);
    return NULL;
}

static char *basename_of(const char *dir) {
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    size_t b = n;
    while (b > 0 && dir[b - 1] != '/')
        b--;
    char *r = malloc(n - b + 1);
    if (!r) return NULL;
    memcpy(r, dir + b, n - b);
    r[n - b] = 0;
    return r;
}

static void free_server(serve_server *s) {
    for (int i = 0; i < s->n_models; i++) {
        srv_model *m = &s->models[i];
        free(m->served_name);
        free(m->dir);
        pthread_mutex_destroy(&m->q_mu);
        pthread_cond_destroy(&m->q_cv);
    }
    free(s->host);
    free(s->api_key);
    free((char *)s->cfg.cors_allow_origin);
    pthread_mutex_destroy(&s->state_mu);
    pthread_cond_destroy(&s->state_cv);
    pthread_mutex_destroy(&s->tok_mu);
    pthread_cond_destroy(&s->tok_cv);
    pthread_mutex_destroy(&s->watch_mu);
    pthread_mutex_destroy(&s->conn_mu);
    srv_metrics_free(&s->metrics);
    free(s);
}

/* Model i of the config: the first is model_dir / served_model_name / task. */
static serve_model_config model_config(const serve_config *c, int i) {
    if (i > 0) return c->more_models[i - 1];
    return (serve_model_config){c->model_dir, c->served_model_name, c->task};
}

/* Tensor parallel with --devices: the entries split into groups of N, one per engine, and on CUDA
 * no device in two groups (serve.h says why). 0, or -1 with err. */
static int tp_groups_valid(const serve_config *c, char *err, size_t errlen) {
    const int tp = c->tensor_parallel > 1 ? c->tensor_parallel : 1;
    if (tp == 1 || c->n_devices == 0) return 0;
    if (c->n_devices % tp) {
        snprintf(err, errlen,
                 "--devices lists %d entries, not a multiple of --tensor-parallel %d (each engine "
                 "takes %d of them, one per rank)",
                 c->n_devices, tp, tp);
        return -1;
    }
    if (c->backend == QE_BACKEND_CPU) return 0;
    for (int i = 0; i < c->n_devices; i++)
        for (int j = 0; j < i; j++)
            if (c->devices[i] == c->devices[j]) {
                snprintf(err, errlen,
                         "--devices: device %d is listed twice; with --tensor-parallel %d each "
                         "device serves one rank of one engine",
                         c->devices[i], tp);
                return -1;
            }
    return 0;
}

/* Fills s->models from the config; -1 with err for a missing folder or a repeated name. */
static int add_models(serve_server *s, const serve_config *c, char *err, size_t errlen) {
    const int n = 1 + (c->n_more_models > 0 ? c->n_more_models : 0);
    if (n > SERVE_MAX_MODELS) {
        snprintf(err, errlen, "at most %d models per server", SERVE_MAX_MODELS);
        return -1;
    }
    if (c->n_devices > SERVE_MAX_DEVICES) {
        snprintf(err, errlen, "at most %d --devices entries", SERVE_MAX_DEVICES);
        return -1;
    }
    for (int d = 0; d < c->n_devices; d++)
        if (c->devices[d] < 0) {
            snprintf(err, errlen, "--devices: device %d is not a device ordinal", c->devices[d]);
            return -1;
        }
    if (tp_groups_valid(c, err, errlen)) return -1;
    const int tp = c->tensor_parallel > 1 ? c->tensor_parallel : 1;
    for (int i = 0; i < n; i++) {
        const serve_model_config mc = model_config(c, i);
        srv_model *m = &s->models[i];
        m->s = s, m->index = i, m->task_asked = mc.task;
        m->n_replicas = c->n_devices > 0 ? c->n_devices / tp : 1;
        for (int r = 0; r < m->n_replicas; r++) {
            const int *group = c->n_devices > 0 ? &c->devices[r * tp] : NULL;
            m->replicas[r] = (srv_replica){.m = m,
                                           .index = r,
                                           .device = group ? group[0] : 0,
                                           .tp_devices = tp > 1 ? group : NULL};
        }
        pthread_mutex_init(&m->q_mu, NULL);
        pthread_cond_init(&m->q_cv, NULL);
        atomic_init(&m->jobs_waiting, 0);
        atomic_init(&m->jobs_running, 0);
        snprintf(m->dtype, sizeof m->dtype, "unknown");
        s->n_models = i + 1;
        if (!mc.dir || !mc.dir[0]) {
            snprintf(err, errlen, "--model DIR is required");
            return -1;
        }
        m->dir = strdup(mc.dir);
        m->served_name =
            mc.served_name && mc.served_name[0] ? strdup(mc.served_name) : basename_of(mc.dir);
        if (!m->dir || !m->served_name) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        for (int k = 0; k < i; k++)
            if (!strcmp(s->models[k].served_name, m->served_name)) {
                snprintf(err, errlen,
                         "two models are served as '%s' (%s and %s): give each its own "
                         "--served-model-name",
                         m->served_name, s->models[k].dir, m->dir);
                return -1;
            }
    }
    return 0;
}

int serve_start(const serve_config *c, serve_server **out, char *err, size_t errlen) {
    *out = NULL;
    serve_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->cfg = *c;
    s->started = time(NULL);
    if (s->cfg.max_batch_tokens <= 0) s->cfg.max_batch_tokens = 16384;
    if (s->cfg.max_client_batch <= 0) s->cfg.max_client_batch = 2048;
    if (s->cfg.max_queue_tokens <= 0) s->cfg.max_queue_tokens = 1L << 20;
    if (s->cfg.max_body == 0) s->cfg.max_body = (size_t)32 << 20;
    if (s->cfg.drain_timeout_s <= 0) s->cfg.drain_timeout_s = 60;
    s->host = strdup(c->host ? c->host : "127.0.0.1");
    s->api_key = c->api_key && c->api_key[0] ? strdup(c->api_key) : NULL;
    s->cfg.host = s->host;
    s->cfg.api_key = s->api_key;
    s->cfg.cors_allow_origin = c->cors_allow_origin && c->cors_allow_origin[0]
                                   ? strdup(c->cors_allow_origin) /* freed with the server */
                                   : NULL;
    atomic_init(&s->state, SERVE_LOADING);
    atomic_init(&s->cancel_running, 0);
    atomic_init(&s->next_request_id, 0);
    pthread_mutex_init(&s->state_mu, NULL);
    pthread_cond_init(&s->state_cv, NULL);
    pthread_mutex_init(&s->tok_mu, NULL);
    pthread_cond_init(&s->tok_cv, NULL);
    pthread_mutex_init(&s->watch_mu, NULL);
    pthread_mutex_init(&s->conn_mu, NULL);
    srv_metrics_init(&s->metrics);
    if (add_models(s, c, err, errlen)) {
        free_server(s);
        return -1;
    }
    /* the config's strings now point at the server's own copies */
    s->cfg.model_dir = s->models[0].dir;
    s->cfg.served_model_name = s->models[0].served_name;
    for (int i = 1; i < s->n_models; i++) {
        s->cfg.more_models[i - 1].dir = s->models[i].dir;
        s->cfg.more_models[i - 1].served_name = s->models[i].served_name;
    }
    if (!s->host || (c->api_key && c->api_key[0] && !s->api_key)) {
        snprintf(err, errlen, "out of memory");
        free_server(s);
        return -1;
    }
    if (srv_http_start(s, err, errlen) != 0) {
        free_server(s);
        return -1;
    }
    if (pthread_create(&s->loader, NULL, loader_main, s) != 0) {
        snprintf(err, errlen, "cannot start the loader thread");
        srv_http_stop(s, 0);
        free_server(s);
        return -1;
    }
    s->loader_started = 1;
    *out = s;
    return 0;
}

int serve_wait_ready(serve_server *s, char *err, size_t errlen) {
    pthread_mutex_lock(&s->state_mu);
    while (atomic_load(&s->state) == SERVE_LOADING)
        pthread_cond_wait(&s->state_cv, &s->state_mu);
    int st = atomic_load(&s->state);
    pthread_mutex_unlock(&s->state_mu);
    if (st == SERVE_FAILED) {
        if (err) snprintf(err, errlen, "%s", s->load_error);
        return -1;
    }
    return 0;
}

int serve_port(const serve_server *s) {
    return s->port;
}
serve_state serve_get_state(const serve_server *s) {
    return (serve_state)atomic_load(&s->state);
}
qe_engine *serve_model_engine(serve_server *s, int i) {
    int st = atomic_load(&s->state);
    if (st == SERVE_LOADING || st == SERVE_FAILED || i < 0 || i >= s->n_models) return NULL;
    return s->models[i].engine;
}
qe_engine *serve_replica_engine(serve_server *s, int i, int r) {
    if (!serve_model_engine(s, i) || r < 0 || r >= s->models[i].n_replicas) return NULL;
    return s->models[i].replicas[r].engine;
}
qe_engine *serve_engine(serve_server *s) {
    return serve_model_engine(s, 0);
}

/* "'a', 'b'": the served names, for a message. */
static void served_names(const serve_server *s, char *out, size_t cap) {
    size_t at = 0;
    out[0] = 0;
    for (int i = 0; i < s->n_models && at + 110 < cap; i++)
        at += (size_t)snprintf(out + at, cap - at, "%s'%.100s'", i ? ", " : "",
                               s->models[i].served_name);
}

static srv_model *not_served(serve_server *s, const char *name, srv_error *e) {
    char names[300];
    served_names(s, names, sizeof names);
    srv_err_set(e, 400, "invalid_request_error", "model_not_found", "model",
                "model '%.100s' is not served here; this server serves %s", name, names);
    return NULL;
}

srv_model *srv_model_called(serve_server *s, const char *name, srv_error *e) {
    for (int i = 0; i < s->n_models; i++)
        if (!strcmp(s->models[i].served_name, name)) return &s->models[i];
    return not_served(s, name, e);
}

srv_model *srv_model_named(serve_server *s, const cJSON *model_field, srv_error *e) {
    if (!model_field) return &s->models[0];
    if (!cJSON_IsString(model_field)) {
        srv_err_set(e, 400, "invalid_request_error", NULL, "model", "'model' must be a string");
        return NULL;
    }
    return srv_model_called(s, model_field->valuestring, e);
}

int srv_replicas_down(serve_server *s) {
    int down = 0;
    for (int i = 0; i < s->n_models; i++) {
        srv_model *m = &s->models[i];
        pthread_mutex_lock(&m->q_mu);
        down += m->n_replicas - srv_replicas_up(m);
        pthread_mutex_unlock(&m->q_mu);
    }
    return down;
}

srv_model *srv_model_with_tokenizer(serve_server *s, const cJSON *body, srv_error *e) {
    srv_model *m = srv_model_named(s, srv_json_field(body, "model"), e);
    if (m && !m->tok) {
        srv_err_set(e, 400, "invalid_request_error", "no_tokenizer", "",
                    "the model folder has no tokenizer.json");
        return NULL;
    }
    return m;
}

srv_model *srv_pick_model(serve_server *s, const cJSON *model_field, qe_task task, srv_error *e) {
    const char *kind = task == QE_TASK_RERANK ? "reranker" : "embedding model";
    if (model_field && !cJSON_IsString(model_field)) {
        srv_err_set(e, 400, "invalid_request_error", NULL, "model", "'model' must be a string");
        return NULL;
    }
    if (!model_field) {
        for (int i = 0; i < s->n_models; i++)
            if (s->models[i].task == task) return &s->models[i];
        srv_err_set(e, 400, "invalid_request_error",
                    task == QE_TASK_RERANK ? "model_not_reranker" : "model_not_embedding", "model",
                    "this server serves no %s: '%.100s' is %s", kind, s->models[0].served_name,
                    task == QE_TASK_RERANK ? "an embedding model, not a reranker"
                                           : "a reranker, not an embedding model");
        return NULL;
    }
    const char *name = model_field->valuestring;
    for (int i = 0; i < s->n_models; i++) {
        srv_model *m = &s->models[i];
        if (strcmp(m->served_name, name) != 0) continue;
        if (m->task == task) return m;
        srv_err_set(e, 400, "invalid_request_error",
                    task == QE_TASK_RERANK ? "model_not_reranker" : "model_not_embedding", "model",
                    task == QE_TASK_RERANK
                        ? "model '%.100s' is an embedding model, not a reranker: it answers "
                          "/v1/embeddings and TEI's embedding routes"
                        : "model '%.100s' is a reranker: it answers /rerank, /v1/rerank and "
                          "/v2/rerank, not embeddings",
                    name);
        return NULL;
    }
    return not_served(s, name, e);
}

void serve_drain_begin(serve_server *s) {
    pthread_mutex_lock(&s->state_mu);
    int st = atomic_load(&s->state);
    if (st == SERVE_READY || st == SERVE_LOADING) atomic_store(&s->state, SERVE_DRAINING);
    pthread_cond_broadcast(&s->state_cv);
    pthread_mutex_unlock(&s->state_mu);
}

int serve_drained(serve_server *s) {
    pthread_mutex_lock(&s->state_mu);
    const int idle = s->active_requests == 0;
    pthread_mutex_unlock(&s->state_mu);
    return idle;
}

void serve_cancel_running(serve_server *s) {
    atomic_store(&s->cancel_running, 1);
}

int serve_drain(serve_server *s) {
    serve_drain_begin(s);
    pthread_mutex_lock(&s->state_mu);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    double t = (double)dl.tv_sec + dl.tv_nsec * 1e-9 + s->cfg.drain_timeout_s;
    dl.tv_sec = (time_t)t;
    dl.tv_nsec = (long)((t - (double)dl.tv_sec) * 1e9);
    int rc = 0;
    while (s->active_requests > 0) {
        if (pthread_cond_timedwait(&s->state_cv, &s->state_mu, &dl) != 0 &&
            s->active_requests > 0) {
            rc = -1;
            break;
        }
    }
    pthread_mutex_unlock(&s->state_mu);
    return rc;
}

void serve_stop(serve_server *s) {
    if (!s) return;
    if (s->loader_started) pthread_join(s->loader, NULL);
    pthread_mutex_lock(&s->state_mu);
    int st = atomic_load(&s->state);
    if (st != SERVE_FAILED && st != SERVE_FAULT) atomic_store(&s->state, SERVE_STOPPED);
    pthread_cond_broadcast(&s->state_cv);
    pthread_mutex_unlock(&s->state_mu);
    srv_pipeline_stop(s); /* answers whatever is still queued with 503, resuming every connection */
    srv_http_stop(s, 5);
    for (int i = 0; i < s->n_models; i++) {
        srv_model *m = &s->models[i];
        for (int r = 0; r < m->n_replicas; r++) {
            if (m->replicas[r].engine) qe_close(m->replicas[r].engine);
            m->replicas[r].engine = NULL;
        }
        m->engine = NULL;
    }
    free_server(s);
}
