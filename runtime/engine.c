/* engine.c — the public API: opens a model folder (config, weights, tokenizer), validates
 * requests, packs sequences into steps under the token budget and hands them to a backend. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend.h"
#include "qembed.h"
#include "qembed_debug.h"
#include "tokenizer/tokenizer.h"

struct qe_engine {
    qe_model model;
    const qe_backend_ops *ops;
    void *backend;
    tok_tokenizer *tok;
    int max_batch_tokens;
    pthread_mutex_t lock; /* one forward at a time; guards last_error */
    char last_error[512];
};

static qe_status fail(qe_engine *e, qe_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->last_error, sizeof e->last_error, fmt, ap);
    va_end(ap);
    return st;
}

const char *qe_status_name(qe_status s) {
    static const char *names[] = {"ok",           "invalid argument", "i/o error",
                                  "bad format",   "unsupported",      "out of memory",
                                  "device error", "too long",         "cancelled"};
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "unknown";
}

qe_status qe_open(const qe_options *opt, qe_engine **out, char *err, size_t errlen) {
    *out = NULL;
    if (!opt || !opt->model_dir) {
        snprintf(err, errlen, "qe_open: no model folder given");
        return QE_ERR_ARG;
    }
    struct stat st;
    if (stat(opt->model_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "model folder %s does not exist", opt->model_dir);
        return QE_ERR_IO;
    }
    qe_engine *e = calloc(1, sizeof *e);
    if (!e) return QE_ERR_NOMEM;
    pthread_mutex_init(&e->lock, NULL);
    e->max_batch_tokens =
        opt->max_batch_tokens > 0 ? opt->max_batch_tokens : QE_DEFAULT_BATCH_TOKENS;
    if (model_open(opt->model_dir, &e->model, err, errlen)) {
        free(e);
        return QE_ERR_FORMAT;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", opt->model_dir);
    if (stat(path, &st) == 0) {
        char sub[400];
        if (tok_load(opt->model_dir, &e->tok, sub, sizeof sub) != TOK_OK) {
            snprintf(err, errlen, "%s", sub);
            qe_close(e);
            return QE_ERR_FORMAT;
        }
    }
    if (opt->backend == QE_BACKEND_CPU) e->ops = &qe_cpu_backend;
#ifdef QE_HAVE_CUDA
    else if (opt->backend == QE_BACKEND_CUDA)
        e->ops = &qe_cuda_backend;
#endif
    else {
        snprintf(err, errlen, "this build has no CUDA backend (rebuild with -DQE_CUDA=ON)");
        qe_close(e);
        return QE_ERR_UNSUPPORTED;
    }
    qe_status s = e->ops->create(&e->model, opt, &e->backend, err, errlen);
    if (s != QE_OK) {
        e->backend = NULL;
        qe_close(e);
        return s;
    }
    *out = e;
    return QE_OK;
}

void qe_close(qe_engine *e) {
    if (!e) return;
    if (e->backend) e->ops->destroy(e->backend);
    tok_free(e->tok);
    model_close(&e->model);
    pthread_mutex_destroy(&e->lock);
    free(e);
}

int qe_dim(const qe_engine *e) {
    return e->model.cfg.hidden_size;
}
int qe_max_positions(const qe_engine *e) {
    return e->model.cfg.max_position_embeddings;
}
int qe_vocab_size(const qe_engine *e) {
    return e->model.cfg.vocab_size;
}
const char *qe_backend_name(const qe_engine *e) {
    return e->ops->name;
}
size_t qe_device_bytes(const qe_engine *e) {
    return e->ops->device_bytes ? e->ops->device_bytes(e->backend) : 0;
}
const char *qe_last_error(const qe_engine *e) {
    return e->last_error;
}
const struct tok_tokenizer *qe_tokenizer(const qe_engine *e) {
    return e->tok;
}

static qe_status validate(qe_engine *e, const int32_t *const *ids, const int *lens, int n,
                          int dims) {
    const qe_config *c = &e->model.cfg;
    if (n < 0 || (n > 0 && (!ids || !lens))) return fail(e, QE_ERR_ARG, "no sequences given");
    if (dims < 1 || dims > c->hidden_size)
        return fail(e, QE_ERR_ARG, "dims %d out of range: 1..%d", dims, c->hidden_size);
    for (int i = 0; i < n; i++) {
        if (lens[i] < 1) return fail(e, QE_ERR_ARG, "sequence %d is empty", i);
        if (lens[i] > c->max_position_embeddings)
            return fail(e, QE_ERR_TOO_LONG, "sequence %d has %d tokens; the model takes at most %d",
                        i, lens[i], c->max_position_embeddings);
        for (int t = 0; t < lens[i]; t++)
            if (ids[i][t] < 0 || ids[i][t] >= c->vocab_size)
                return fail(e, QE_ERR_ARG,
                            "sequence %d: token id %d at position %d is outside the "
                            "vocabulary (0..%d)",
                            i, ids[i][t], t, c->vocab_size - 1);
    }
    return QE_OK;
}

/* Packs sequences [first, last) into one batch and runs it; the backend polls stop at its own
 * step and chunk boundaries. */
static qe_status run_step(qe_engine *e, const int32_t *const *ids, const int *lens, int first,
                          int last, int dims, int normalize, float *out, qe_stop_fn stop,
                          void *ctx) {
    int n = last - first, total = 0;
    for (int i = first; i < last; i++)
        total += lens[i];
    int32_t *tokens = malloc(sizeof(int32_t) * (size_t)total * 2);
    int32_t *cu = malloc(sizeof(int32_t) * (size_t)(n + 1));
    if (!tokens || !cu) {
        free(tokens);
        free(cu);
        return fail(e, QE_ERR_NOMEM, "out of host memory packing %d tokens", total);
    }
    int32_t *positions = tokens + total;
    cu[0] = 0;
    for (int i = 0; i < n; i++) {
        int len = lens[first + i];
        memcpy(tokens + cu[i], ids[first + i], sizeof(int32_t) * (size_t)len);
        for (int p = 0; p < len; p++)
            positions[cu[i] + p] = p;
        cu[i + 1] = cu[i] + len;
    }
    qe_batch b = {n, total, tokens, positions, cu, stop, ctx};
    qe_status s = e->ops->forward(e->backend, &b, dims, normalize, out + (size_t)first * dims,
                                  e->last_error, sizeof e->last_error);
    free(tokens);
    free(cu);
    return s;
}

qe_status qe_embed_ids(qe_engine *e, const int32_t *const *ids, const int *lens, int n, int dims,
                       float *out) {
    return qe_embed_ids_ex(e, ids, lens, n, dims, 1, out);
}

qe_status qe_embed_ids_ex(qe_engine *e, const int32_t *const *ids, const int *lens, int n, int dims,
                          int normalize, float *out) {
    return qe_embed_ids_stoppable(e, ids, lens, n, dims, normalize, out, NULL, NULL);
}

qe_status qe_embed_ids_stoppable(qe_engine *e, const int32_t *const *ids, const int *lens, int n,
                                 int dims, int normalize, float *out, qe_stop_fn stop, void *ctx) {
    pthread_mutex_lock(&e->lock);
    e->last_error[0] = 0;
    if (dims == 0) dims = e->model.cfg.hidden_size;
    qe_status s = validate(e, ids, lens, n, dims);
    if (s == QE_OK && e->ops->splits_steps) {
        /* the backend splits the call into steps itself, overlapping them */
        if (n > 0) s = run_step(e, ids, lens, 0, n, dims, normalize, out, stop, ctx);
    } else {
        /* greedy packing in input order; a sequence over the budget runs as a step of its own */
        for (int first = 0; s == QE_OK && first < n;) {
            int last = first, tokens = 0;
            while (last < n && (last == first || tokens + lens[last] <= e->max_batch_tokens))
                tokens += lens[last++];
            s = run_step(e, ids, lens, first, last, dims, normalize, out, stop, ctx);
            first = last;
        }
    }
    pthread_mutex_unlock(&e->lock);
    return s;
}

/* fail() under the engine lock, for errors found outside qe_embed_ids. */
static qe_status fail_locked(qe_engine *e, qe_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&e->lock);
    vsnprintf(e->last_error, sizeof e->last_error, fmt, ap);
    pthread_mutex_unlock(&e->lock);
    va_end(ap);
    return st;
}

qe_status qe_embed_texts(qe_engine *e, const char *const *texts, int n, int dims, float *out) {
    if (!e->tok) return fail_locked(e, QE_ERR_UNSUPPORTED, "model folder has no tokenizer.json");
    int32_t **ids = calloc((size_t)(n > 0 ? n : 1), sizeof *ids);
    int *lens = calloc((size_t)(n > 0 ? n : 1), sizeof *lens);
    qe_status s = ids && lens ? QE_OK : fail_locked(e, QE_ERR_NOMEM, "out of host memory");
    tok_encode_opts o = {1, e->model.cfg.max_position_embeddings, 0, 0};
    char err[400];
    for (int i = 0; i < n && s == QE_OK; i++)
        if (tok_encode(e->tok, texts[i], strlen(texts[i]), &o, &ids[i], &lens[i], err,
                       sizeof err) != TOK_OK)
            s = fail_locked(e, QE_ERR_ARG, "text %d: %s", i, err);
    if (s == QE_OK) s = qe_embed_ids(e, (const int32_t *const *)ids, lens, n, dims, out);
    for (int i = 0; ids && i < n; i++)
        free(ids[i]);
    free(ids);
    free(lens);
    return s;
}

qe_status qe_debug_residual(qe_engine *e, const int32_t *ids, int len, int n_layers, float *out) {
    pthread_mutex_lock(&e->lock);
    qe_status s = validate(e, &ids, &len, 1, e->model.cfg.hidden_size);
    if (s == QE_OK && !e->ops->residual)
        s = fail(e, QE_ERR_UNSUPPORTED, "backend %s has no residual hook", e->ops->name);
    if (s == QE_OK) {
        int32_t *pos = malloc(sizeof(int32_t) * (size_t)len);
        int32_t cu[2] = {0, len};
        for (int p = 0; p < len; p++)
            pos[p] = p;
        qe_batch b = {
            .n_seqs = 1, .n_tokens = len, .tokens = ids, .positions = pos, .cu_seqlens = cu};
        s = e->ops->residual(e->backend, &b, n_layers, out, e->last_error, sizeof e->last_error);
        free(pos);
    }
    pthread_mutex_unlock(&e->lock);
    return s;
}

qe_status qe_debug_counters_get(qe_engine *e, qe_debug_counters *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&e->lock);
    if (e->ops->counters) e->ops->counters(e->backend, out);
    pthread_mutex_unlock(&e->lock);
    return QE_OK;
}

/* Runs an optional on/off hook under the engine lock; QE_ERR_UNSUPPORTED where the backend has
 * none. */
static qe_status switch_hook(qe_engine *e, int (*hook)(void *, int), int on, const char *what) {
    pthread_mutex_lock(&e->lock);
    qe_status s = QE_OK;
    if (!hook)
        s = fail(e, QE_ERR_UNSUPPORTED, "backend %s has no %s", e->ops->name, what);
    else if (hook(e->backend, on) != 0)
        s = fail(e, QE_ERR_DEVICE, "backend %s: turning %s %s failed", e->ops->name, what,
                 on ? "on" : "off");
    pthread_mutex_unlock(&e->lock);
    return s;
}

qe_status qe_debug_set_graphs(qe_engine *e, int on) {
    return switch_hook(e, e->ops->set_graphs, on, "CUDA graphs");
}

qe_status qe_debug_profile(qe_engine *e, int on) {
    return switch_hook(e, e->ops->profile, on, "profiler");
}

int qe_debug_gemm_plans(qe_engine *e, qe_debug_gemm_plan *out, int cap) {
    pthread_mutex_lock(&e->lock);
    const int n = e->ops->gemm_plans ? e->ops->gemm_plans(e->backend, out, cap) : 0;
    pthread_mutex_unlock(&e->lock);
    return n;
}
