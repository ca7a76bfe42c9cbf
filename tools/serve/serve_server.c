/* serve_server.c — the server's lifecycle: listen first, load the model in the background (/health
 * answers 503 meanwhile), start the pipeline, drain on request, stop and free. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "serve_internal.h"
#include "tokenizer.h"

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
static void read_dtype(serve_server *s) {
    snprintf(s->dtype, sizeof s->dtype, "unknown");
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", s->model_dir);
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
static void read_sha(serve_server *s) {
    size_t n = strlen(s->model_dir);
    while (n > 1 && s->model_dir[n - 1] == '/')
        n--;
    size_t b = n;
    while (b > 0 && s->model_dir[b - 1] != '/')
        b--;
    if (n - b != 40) return;
    for (size_t i = b; i < n; i++)
        if (!strchr("0123456789abcdef", s->model_dir[i])) return;
    memcpy(s->model_sha, s->model_dir + b, 40);
    s->model_sha[40] = 0;
}

static void *loader_main(void *arg) {
    serve_server *s = arg;
    qe_options o = {.model_dir = s->model_dir,
                    .task = s->cfg.task,
                    .backend = s->cfg.backend,
                    .threads = s->cfg.engine_threads,
                    .max_batch_tokens = s->cfg.max_batch_tokens,
                    /* the pool is made now: an out-of-memory shows at startup, not as a failed
                     * request; by default it holds one input of the longest length accepted */
                    .kv_pool_tokens =
                        s->cfg.kv_pool_tokens ? s->cfg.kv_pool_tokens : s->cfg.max_input_tokens};
    char err[512] = "";
    qe_engine *e = NULL;
    qe_status st = qe_open(&o, &e, err, sizeof err);
    if (st == QE_OK && (st = qe_tokenizer_fits(e, err, sizeof err)) != QE_OK) {
        qe_close(e);
        e = NULL;
    }
    if (st != QE_OK) {
        snprintf(s->load_error, sizeof s->load_error, "%s: %s", qe_status_name(st), err);
        set_state(s, SERVE_FAILED);
        return NULL;
    }
    s->engine = e;
    s->tok = qe_tokenizer(e);
    s->width = qe_dim(e);
    s->max_positions = qe_max_positions(e);
    s->vocab = qe_vocab_size(e);
    if (s->tok && tok_vocab_size(s->tok) > 0 && tok_vocab_size(s->tok) < s->vocab)
        s->vocab = tok_vocab_size(s->tok);
    s->max_input_tokens = s->max_positions;
    if (s->cfg.max_input_tokens > 0 && s->cfg.max_input_tokens < s->max_positions)
        s->max_input_tokens = s->cfg.max_input_tokens;
    read_dtype(s);
    read_sha(s);
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
    free(s->served_name);
    free(s->model_dir);
    free(s->host);
    free(s->api_key);
    free((char *)s->cfg.cors_allow_origin);
    pthread_mutex_destroy(&s->state_mu);
    pthread_cond_destroy(&s->state_cv);
    pthread_mutex_destroy(&s->tok_mu);
    pthread_cond_destroy(&s->tok_cv);
    pthread_mutex_destroy(&s->q_mu);
    pthread_cond_destroy(&s->q_cv);
    pthread_mutex_destroy(&s->watch_mu);
    pthread_mutex_destroy(&s->conn_mu);
    srv_metrics_free(&s->metrics);
    free(s);
}

int serve_start(const serve_config *c, serve_server **out, char *err, size_t errlen) {
    *out = NULL;
    if (!c->model_dir || !c->model_dir[0]) {
        snprintf(err, errlen, "--model DIR is required");
        return -1;
    }
    serve_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->cfg = *c;
    if (s->cfg.max_batch_tokens <= 0) s->cfg.max_batch_tokens = 16384;
    if (s->cfg.max_client_batch <= 0) s->cfg.max_client_batch = 2048;
    if (s->cfg.max_queue_tokens <= 0) s->cfg.max_queue_tokens = 1L << 20;
    if (s->cfg.max_body == 0) s->cfg.max_body = (size_t)32 << 20;
    if (s->cfg.drain_timeout_s <= 0) s->cfg.drain_timeout_s = 60;
    s->model_dir = strdup(c->model_dir);
    s->host = strdup(c->host ? c->host : "127.0.0.1");
    s->api_key = c->api_key && c->api_key[0] ? strdup(c->api_key) : NULL;
    s->served_name = c->served_model_name && c->served_model_name[0] ? strdup(c->served_model_name)
                                                                     : basename_of(c->model_dir);
    s->cfg.model_dir = s->model_dir;
    s->cfg.host = s->host;
    s->cfg.api_key = s->api_key;
    s->cfg.served_model_name = s->served_name;
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
    pthread_mutex_init(&s->q_mu, NULL);
    pthread_cond_init(&s->q_cv, NULL);
    pthread_mutex_init(&s->watch_mu, NULL);
    pthread_mutex_init(&s->conn_mu, NULL);
    srv_metrics_init(&s->metrics);
    snprintf(s->dtype, sizeof s->dtype, "unknown");
    if (!s->model_dir || !s->host || !s->served_name ||
        (c->api_key && c->api_key[0] && !s->api_key)) {
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
qe_engine *serve_engine(serve_server *s) {
    int st = atomic_load(&s->state);
    return st == SERVE_LOADING || st == SERVE_FAILED ? NULL : s->engine;
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
    if (s->engine) qe_close(s->engine);
    s->engine = NULL;
    free_server(s);
}
