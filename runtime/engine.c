/* engine.c — the public API: opens a model folder (config, weights, tokenizer), validates
 * requests, packs sequences into steps under the token budget and hands them to a backend. */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "backend.h"
#include "kernels/ref/ref.h"
#include "gguf_tokenizer.h"
#include "kv_pool.h"
#include "qembed.h"
#include "qembed_debug.h"
#include "rerank.h"
#include "scheduler.h"
#include "tokenizer/tokenizer.h"
#include "tp_split.h"

struct qe_engine {
    qe_model model;
    const qe_backend_ops *ops;
    void *backend;
    tok_tokenizer *tok;
    rerank_head rerank; /* the task, and for a reranker its output row pair (rerank.c) */
    int max_batch_tokens;
    kv_pool kv;              /* which pages of the backend's K/V pool are free */
    long long steps, chunks; /* run since qe_open (qe_debug_counters) */
    int inject_fault;        /* qe_debug_inject_fault: the next step fails as a device would */
    pthread_mutex_t lock;    /* one forward at a time; guards last_error and kv */
    char last_error[512];
};

static qe_status fail(qe_engine *e, qe_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->last_error, sizeof e->last_error, fmt, ap);
    va_end(ap);
    return st;
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

qe_status engine_fail(qe_engine *e, qe_status st, const char *fmt, ...) {
    char msg[sizeof e->last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return fail_locked(e, st, "%s", msg);
}

const rerank_head *engine_rerank_head(const qe_engine *e) {
    return &e->rerank;
}

const char *qe_status_name(qe_status s) {
    static const char *names[] = {"ok",           "invalid argument", "i/o error",
                                  "bad format",   "unsupported",      "out of memory",
                                  "device error", "too long",         "cancelled"};
    return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "unknown";
}

#ifdef QE_HAVE_CUDA
/* The CUDA backend's ranks over NCCL (cuda_tp.c): for more than one, or for one when
 * QE_CUDA_TP_NCCL=1 asks for the NCCL path (to compare it with the plain one). */
static int cuda_tp_wanted(const qe_options *opt) {
    const char *force = getenv("QE_CUDA_TP_NCCL");
    return opt->tensor_parallel > 1 || (force && strcmp(force, "1") == 0);
}
#endif

qe_status qe_open(const qe_options *opt, qe_engine **out, char *err, size_t errlen) {
    *out = NULL;
    if (!opt || !opt->model_dir) {
        snprintf(err, errlen, "qe_open: no model folder given");
        return QE_ERR_ARG;
    }
    struct stat st;
    const int gguf = model_is_gguf(opt->model_dir);
    if (gguf && (stat(opt->model_dir, &st) != 0 || !S_ISREG(st.st_mode))) {
        snprintf(err, errlen, "model file %s does not exist", opt->model_dir);
        return QE_ERR_IO;
    }
    if (!gguf && stat(opt->model_dir, &st) != 0) {
        snprintf(err, errlen, "model folder %s does not exist", opt->model_dir);
        return QE_ERR_IO;
    }
    if (!gguf && !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen,
                 "%s is a file, not a model folder (a Hugging Face folder, or a file whose name "
                 "ends in .gguf)",
                 opt->model_dir);
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
    if (gguf && gguf_has(e->model.gguf, "tokenizer.ggml.tokens")) {
        char sub[400];
        if (gguf_load_tokenizer(e->model.gguf, opt->model_dir, &e->tok, sub, sizeof sub) !=
            TOK_OK) {
            snprintf(err, errlen, "%s", sub);
            qe_close(e);
            return QE_ERR_FORMAT;
        }
    } else if (!gguf && stat(path, &st) == 0) {
        char sub[400];
        if (tok_load(opt->model_dir, &e->tok, sub, sizeof sub) != TOK_OK) {
            snprintf(err, errlen, "%s", sub);
            qe_close(e);
            return QE_ERR_FORMAT;
        }
    }
    if (rerank_head_open(&e->rerank, opt->model_dir, &e->model, e->tok, opt->task, err, errlen)) {
        qe_close(e);
        return QE_ERR_FORMAT;
    }
    if (opt->tensor_parallel > 1 &&
        tp_check(&e->model.cfg, opt->tensor_parallel, err, errlen)) { /* names the valid values */
        qe_close(e);
        return QE_ERR_ARG;
    }
    if (opt->backend == QE_BACKEND_CPU) e->ops = &qe_cpu_backend;
#ifdef QE_HAVE_CUDA
    else if (opt->backend == QE_BACKEND_CUDA && !cuda_tp_wanted(opt))
        e->ops = &qe_cuda_backend;
    else if (opt->backend == QE_BACKEND_CUDA) {
#ifdef QE_HAVE_NCCL
        e->ops = &qe_cuda_tp_backend;
#else
        snprintf(err, errlen,
                 "tensor parallelism on the CUDA backend needs NCCL, which this build did not "
                 "find (install it, or point QE_NCCL_ROOT at it, and rebuild); or run one engine "
                 "per GPU with qembed serve --devices");
        qe_close(e);
        return QE_ERR_UNSUPPORTED;
#endif
    }
#endif
    else {
        snprintf(err, errlen, "this build has no CUDA backend (rebuild with -DQE_CUDA=ON)");
        qe_close(e);
        return QE_ERR_UNSUPPORTED;
    }
    qe_options o = *opt;
    o.max_batch_tokens = e->max_batch_tokens;
    o.task = e->rerank.task; /* resolved: the default K/V pool depends on it (backend.h) */
    if (o.kv_page_tokens <= 0) o.kv_page_tokens = QE_DEFAULT_PAGE_TOKENS;
    qe_status s = e->ops->create(&e->model, &o, &e->backend, err, errlen);
    if (s != QE_OK) {
        e->backend = NULL;
        qe_close(e);
        return s;
    }
    if (kv_pool_init(&e->kv, e->ops->kv_pages(e->backend), o.kv_page_tokens)) {
        snprintf(err, errlen, "out of host memory for the K/V page list");
        qe_close(e);
        return QE_ERR_NOMEM;
    }
    *out = e;
    return QE_OK;
}

void qe_close(qe_engine *e) {
    if (!e) return;
    if (e->backend) e->ops->destroy(e->backend);
    tok_free(e->tok);
    rerank_head_free(&e->rerank);
    kv_pool_free(&e->kv);
    model_close(&e->model);
    pthread_mutex_destroy(&e->lock);
    free(e);
}

int qe_dim(const qe_engine *e) {
    return e->model.cfg.hidden_size;
}
const char *qe_checkpoint_dtype(const qe_engine *e) {
    return e->model.cfg.torch_dtype[0] ? e->model.cfg.torch_dtype : "unknown";
}
int qe_max_positions(const qe_engine *e) {
    return e->model.cfg.max_position_embeddings;
}
qe_status qe_tokenizer_fits(const qe_engine *e, char *err, size_t errlen) {
    if (!e->tok) return QE_OK;
    /* The end token goes after every input: past the embedding table, every text would fail.
     * Other added tokens past it are refused per input (the 4B/8B tokenizers carry four such
     * tokens, which text seldom holds). */
    const int end = tok_end_id(e->tok), vocab = e->model.cfg.vocab_size;
    if (e->rerank.template_outside >= 0) { /* a reranker's every prompt holds its template */
        snprintf(err, errlen,
                 "the reranker's prompt template holds token id %d, but config.json's vocab_size "
                 "is %d (ids 0..%d): the tokenizer does not fit the model",
                 e->rerank.template_outside, vocab, vocab - 1);
        return QE_ERR_FORMAT;
    }
    if (end < vocab) return QE_OK;
    snprintf(err, errlen,
             "tokenizer.json appends token id %d to every input, but config.json's vocab_size is "
             "%d (ids 0..%d): the tokenizer does not fit the model",
             end, vocab, vocab - 1);
    return QE_ERR_FORMAT;
}

int qe_vocab_size(const qe_engine *e) {
    return e->model.cfg.vocab_size;
}
const char *qe_backend_name(const qe_engine *e) {
    return e->ops->name;
}
/* Per token, the GEMMs do 2 * linear parameters FLOPs; causal attention over L keys does
 * 2 * layers * q_dim * L on average (QK^T and PV, 2 FLOPs each, half the keys): equal at A. */
double qe_attention_equal_length(const qe_engine *e) {
    const qe_config *c = &e->model.cfg;
    const double q = (double)c->num_heads * c->head_dim, kv = (double)c->num_kv_heads * c->head_dim;
    const double per_layer = (double)c->hidden_size * (q + 2 * kv) + q * c->hidden_size +
                             3.0 * c->hidden_size * c->intermediate_size;
    return per_layer / q;
}

double qe_cost_tokens(const qe_engine *e, int len) {
    return (double)len * (1.0 + (double)len / qe_attention_equal_length(e));
}

int qe_kv_pool_tokens(const qe_engine *e) {
    return e->kv.n_pages * e->kv.page_size;
}
int qe_kv_pool_used_tokens(qe_engine *e) {
    pthread_mutex_lock(&e->lock);
    const int n = kv_pool_used(&e->kv) * e->kv.page_size;
    pthread_mutex_unlock(&e->lock);
    return n;
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

/* ---- running steps: the scheduler's steps through the backend ---- */

/* Steps formed ahead and run by one backend call (the CUDA backend overlaps them), at most
 * WINDOW_STEPS and, past the first, at most WINDOW_FLOATS of outputs. */
enum { WINDOW_STEPS = 8 };
#define WINDOW_FLOATS ((size_t)16 << 20)

/* The scheduler's gone callbacks carry no reason: this one adds it. */
typedef struct gone_why {
    const qe_sched_hooks *h;
    qe_status why;
} gone_why;
static void gone_with(void *ctx, void *tag) {
    const gone_why *g = ctx;
    if (g->h && g->h->gone) g->h->gone(g->h->ctx, tag, g->why);
}
static void abandon(sched *sc, sched_step *st, const qe_sched_hooks *h, qe_status why) {
    gone_why g = {h, why};
    sched_step_abandon(sc, st, gone_with, &g);
}

static int drop_hook(void *ctx, void *tag) {
    const qe_sched_hooks *h = ctx;
    return h->drop(h->ctx, tag);
}
static void gone_cancelled(void *ctx, void *tag) {
    const qe_sched_hooks *h = ctx;
    if (h && h->gone) h->gone(h->ctx, tag, QE_ERR_CANCELLED);
}

static void pool_stats(const qe_engine *e, const sched *sc, qe_sched_stats *stats) {
    if (!stats) return;
    stats->waiting = sched_pending(sc);
    stats->kv_used_tokens = kv_pool_used(&e->kv) * e->kv.page_size;
    stats->kv_total_tokens = e->kv.n_pages * e->kv.page_size;
}

/* Forms up to a window of steps and runs them; max_steps 1 for one step at a time. Delivers the
 * finished vectors through h->done. *stats (may be NULL) describes the first step. Returns QE_OK
 * with nothing run when nothing waits; a stall (long sequences waiting for pages another
 * scheduler holds) is QE_ERR_NOMEM. */
static qe_status run_window(qe_engine *e, sched *sc, int dims, int normalize, int max_steps,
                            const qe_sched_hooks *h, qe_stop_fn stop, void *stop_ctx,
                            qe_sched_stats *stats) {
    sched_step steps[WINDOW_STEPS];
    qe_batch batches[WINDOW_STEPS];
    int n = 0;
    size_t floats = 0;
    if (h && h->drop) sched_sweep(sc, drop_hook, gone_cancelled, (void *)h);
    while (n < max_steps && n < WINDOW_STEPS && (n == 0 || floats < WINDOW_FLOATS)) {
        const int got = sched_form(sc, &steps[n], dims);
        if (got < 0) {
            for (int i = 0; i < n; i++)
                abandon(sc, &steps[i], h, QE_ERR_NOMEM);
            return fail(e, QE_ERR_NOMEM, "out of host memory forming a step");
        }
        if (got == 0) break;
        batches[n] = steps[n].b;
        batches[n].stop = stop, batches[n].stop_ctx = stop_ctx;
        floats += (size_t)got * (size_t)dims;
        n++;
    }
    if (stats) {
        memset(stats, 0, sizeof *stats);
        if (n > 0) {
            stats->seqs = batches[0].n_seqs, stats->tokens = batches[0].n_tokens;
            stats->chunks = batches[0].n_paged;
        }
    }
    if (n == 0) {
        pool_stats(e, sc, stats); /* a sweep may have freed pages */
        if (sched_pending(sc) == 0) return QE_OK;
        return fail(e, QE_ERR_NOMEM,
                    "%ld long sequences wait for K/V pages that another caller holds",
                    sched_pending(sc));
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    qe_status st = QE_OK;
    if (e->inject_fault) {
        e->inject_fault = 0;
        st = fail(e, QE_ERR_DEVICE, "injected device fault (qe_debug_inject_fault)");
    } else
        st = e->ops->forward(e->backend, batches, n, dims, normalize, e->last_error,
                             sizeof e->last_error);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    /* a window's steps run overlapped: each is charged its share of the window's time */
    const double step_s = ((double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec)) / n;
    for (int i = 0; st == QE_OK && i < n; i++)
        e->steps++, e->chunks += batches[i].n_paged;
    for (int i = 0; i < n; i++) {
        if (st != QE_OK) {
            abandon(sc, &steps[i], h, st);
            continue;
        }
        for (int k = 0; h && h->ran && k < steps[i].b.n_seqs; k++)
            h->ran(h->ctx, steps[i].seqs[k]->tag, step_s);
        for (int k = 0; k < steps[i].b.n_seqs; k++)
            if (steps[i].final[k]) {
                if (h && h->done)
                    h->done(h->ctx, steps[i].seqs[k]->tag, steps[i].out + (size_t)k * dims);
                if (stats && i == 0) stats->finished++;
            }
        sched_step_release(&steps[i]);
    }
    if (stats) stats->seconds = step_s;
    pool_stats(e, sc, stats);
    return st;
}

/* qe_embed_ids' rows: the tag is the input's index. */
typedef struct rows_out {
    float *out;
    int dims;
} rows_out;
static void rows_done(void *ctx, void *tag, const float *vec) {
    const rows_out *r = ctx;
    memcpy(r->out + (size_t)(intptr_t)tag * r->dims, vec, sizeof(float) * (size_t)r->dims);
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
    sched sc;
    sched_init(&sc, &e->kv, e->max_batch_tokens);
    char why[400];
    for (int i = 0; s == QE_OK && i < n; i++)
        if (sched_add(&sc, ids[i], lens[i], (void *)(intptr_t)i, why, sizeof why))
            s = fail(e, QE_ERR_TOO_LONG, "sequence %d: %s", i, why);
    rows_out r = {out, dims};
    const qe_sched_hooks h = {.done = rows_done, .ctx = &r};
    while (s == QE_OK && sched_pending(&sc) > 0)
        s = run_window(e, &sc, dims, normalize, WINDOW_STEPS, &h, stop, ctx, NULL);
    sched_clear(&sc, NULL, NULL);
    pthread_mutex_unlock(&e->lock);
    return s;
}

/* ---- the scheduler across calls (qe_sched_*) ---- */

struct qe_sched {
    qe_engine *e;
    sched sc;
    int dims, normalize;
};

qe_status qe_sched_open(qe_engine *e, int dims, int normalize, qe_sched **out) {
    *out = NULL;
    if (dims == 0) dims = e->model.cfg.hidden_size;
    if (dims < 1 || dims > e->model.cfg.hidden_size)
        return fail_locked(e, QE_ERR_ARG, "dims %d out of range: 1..%d", dims,
                           e->model.cfg.hidden_size);
    qe_sched *s = calloc(1, sizeof *s);
    if (!s) return fail_locked(e, QE_ERR_NOMEM, "out of host memory");
    s->e = e, s->dims = dims, s->normalize = normalize;
    sched_init(&s->sc, &e->kv, e->max_batch_tokens);
    *out = s;
    return QE_OK;
}

qe_status qe_sched_add(qe_sched *s, const int32_t *ids, int len, void *tag) {
    qe_engine *e = s->e;
    pthread_mutex_lock(&e->lock);
    e->last_error[0] = 0;
    qe_status st = validate(e, &ids, &len, 1, s->dims);
    char why[400];
    if (st == QE_OK && sched_add(&s->sc, ids, len, tag, why, sizeof why))
        st = fail(e, QE_ERR_TOO_LONG, "%s", why);
    pthread_mutex_unlock(&e->lock);
    return st;
}

qe_status qe_sched_step(qe_sched *s, const qe_sched_hooks *h, qe_sched_stats *stats) {
    qe_engine *e = s->e;
    pthread_mutex_lock(&e->lock);
    e->last_error[0] = 0;
    qe_status st = run_window(e, &s->sc, s->dims, s->normalize, 1, h, NULL, NULL, stats);
    pthread_mutex_unlock(&e->lock);
    return st;
}

long qe_sched_waiting(const qe_sched *s) {
    return sched_pending(&s->sc);
}

void qe_sched_close(qe_sched *s, const qe_sched_hooks *h) {
    if (!s) return;
    pthread_mutex_lock(&s->e->lock);
    sched_clear(&s->sc, gone_cancelled, (void *)h);
    pthread_mutex_unlock(&s->e->lock);
    free(s);
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

/* The residual stream of one sequence: its steps (chunks when it is long) one at a time through
 * the backend's residual hook, each writing the rows of its tokens. */
qe_status qe_debug_residual(qe_engine *e, const int32_t *ids, int len, int n_layers, float *out) {
    pthread_mutex_lock(&e->lock);
    qe_status s = validate(e, &ids, &len, 1, e->model.cfg.hidden_size);
    if (s == QE_OK && !e->ops->residual)
        s = fail(e, QE_ERR_UNSUPPORTED, "backend %s has no residual hook", e->ops->name);
    sched sc;
    sched_init(&sc, &e->kv, e->max_batch_tokens);
    char why[400];
    if (s == QE_OK && sched_add(&sc, ids, len, NULL, why, sizeof why))
        s = fail(e, QE_ERR_TOO_LONG, "%s", why);
    while (s == QE_OK && sched_pending(&sc) > 0) {
        sched_step st;
        const int got = sched_form(&sc, &st, 1);
        if (got <= 0) {
            s = fail(e, QE_ERR_NOMEM, "cannot form a step for the residual hook");
            break;
        }
        const int start = st.b.positions[0];
        s = e->ops->residual(e->backend, &st.b, n_layers,
                             out + (size_t)start * e->model.cfg.hidden_size, e->last_error,
                             sizeof e->last_error);
        if (s != QE_OK)
            abandon(&sc, &st, NULL, s);
        else
            sched_step_release(&st);
    }
    sched_clear(&sc, NULL, NULL);
    pthread_mutex_unlock(&e->lock);
    return s;
}

/* Every token's vector: the residual stream after the last layer (the backend's residual hook)
 * through the final RMSNorm, the same arithmetic as the pooling, so the last row is what
 * qe_embed_ids_ex(normalize 0) returns for the sequence. */
qe_status qe_embed_tokens(qe_engine *e, const int32_t *ids, int len, float *out) {
    const qe_config *c = &e->model.cfg;
    qe_status s = qe_debug_residual(e, ids, len, c->num_layers, out);
    if (s != QE_OK) return s;
    const int H = c->hidden_size;
    float *w = malloc(sizeof(float) * (size_t)H * 2);
    if (!w) return fail_locked(e, QE_ERR_NOMEM, "out of host memory");
    st_to_f32(e->model.final_norm, w);
    float *row = w + H;
    for (int t = 0; t < len; t++) {
        ref_rmsnorm(out + (size_t)t * H, w, 1, H, (float)c->rms_norm_eps, row);
        memcpy(out + (size_t)t * H, row, sizeof(float) * (size_t)H);
    }
    free(w);
    return QE_OK;
}

qe_status qe_debug_counters_get(qe_engine *e, qe_debug_counters *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&e->lock);
    if (e->ops->counters) e->ops->counters(e->backend, out);
    out->max_batch_tokens = e->max_batch_tokens;
    out->steps = e->steps, out->chunks = e->chunks;
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

void qe_debug_inject_fault(qe_engine *e) {
    pthread_mutex_lock(&e->lock);
    e->inject_fault = 1;
    pthread_mutex_unlock(&e->lock);
}
