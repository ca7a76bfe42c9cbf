/* backend_cpu.c — the CPU reference backend: fp32 weights, the C reference kernels, pthreads
 * over tiles of each matmul, and the tiled fp32 attention of cpu_attention.c (threads over
 * sequences, kv heads and query blocks). Plain and readable: the oracle for the CUDA backend and
 * the CI path. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "cpu_attention.h"
#include "kernels/ref/ref.h"
#include "parallel.h"

typedef struct cpu_layer {
    float *attn_norm, *q_norm, *k_norm, *mlp_norm; /* [hidden] / [head_dim] */
    float *wqkv;     /* [(heads + 2*kv_heads)*head_dim, hidden]: q, k, v rows fused */
    float *wo;       /* [hidden, heads*head_dim] */
    float *wgate_up; /* [2*inter, hidden]: gate rows then up rows */
    float *wdown;    /* [hidden, inter] */
} cpu_layer;

typedef struct cpu_state {
    const qe_model *model;
    qe_config cfg;
    int q_dim, kv_dim, qkv_dim;
    cpu_layer *layers;
    float *final_norm;
    float *weights; /* one allocation for every converted weight */
    qe_pool *pool;
    int max_tokens; /* the step budget: a longer sequence runs in chunks of at most this many */
    /* activations, grown to the largest step seen */
    int cap_tokens;
    float *x, *h, *qkv, *attn, *gate_up, *act;
    /* chunked prefill: [layers][kv_cap][k kv_dim | v kv_dim] of the sequence being chunked,
     * made by the first long sequence, grown only for a longer one */
    float *kv;
    int kv_cap;
} cpu_state;

static float *take(float **cursor, const st_tensor *t) {
    float *p = *cursor;
    st_to_f32(t, p);
    *cursor += t->nbytes / st_dtype_size(t->dtype);
    return p;
}

static qe_status cpu_create(const qe_model *m, const qe_options *opt, void **out, char *err,
                            size_t errlen) {
    cpu_state *s = calloc(1, sizeof *s);
    if (!s) return QE_ERR_NOMEM;
    const qe_config *c = &m->cfg;
    s->model = m;
    s->cfg = *c;
    s->q_dim = c->num_heads * c->head_dim;
    s->kv_dim = c->num_kv_heads * c->head_dim;
    s->qkv_dim = s->q_dim + 2 * s->kv_dim;
    /* Everything but the embedding table, which is gathered row by row from the mapping. */
    size_t total = (size_t)c->hidden_size;
    for (int l = 0; l < c->num_layers; l++) {
        const qe_layer_tensors *L = &m->layers[l];
        const st_tensor *all[] = {L->attn_norm, L->wq,     L->wk,    L->wv,
                                  L->q_norm,    L->k_norm, L->wo,    L->mlp_norm,
                                  L->w_gate,    L->w_up,   L->w_down};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            total += all[i]->nbytes / st_dtype_size(all[i]->dtype);
    }
    s->weights = malloc(total * sizeof(float));
    s->layers = calloc((size_t)c->num_layers, sizeof *s->layers);
    int threads = opt->threads > 0 ? opt->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    s->pool = pool_create(threads);
    if (!s->weights || !s->layers || !s->pool) {
        snprintf(err, errlen, "out of host memory converting %zu weights to fp32", total);
        free(s->weights);
        free(s->layers);
        pool_destroy(s->pool);
        free(s);
        return QE_ERR_NOMEM;
    }
    float *cur = s->weights;
    for (int l = 0; l < c->num_layers; l++) {
        const qe_layer_tensors *L = &m->layers[l];
        cpu_layer *W = &s->layers[l];
        W->attn_norm = take(&cur, L->attn_norm);
        W->wqkv = take(&cur, L->wq); /* wq, wk, wv land back to back: the fused matrix */
        take(&cur, L->wk);
        take(&cur, L->wv);
        W->q_norm = take(&cur, L->q_norm);
        W->k_norm = take(&cur, L->k_norm);
        W->wo = take(&cur, L->wo);
        W->mlp_norm = take(&cur, L->mlp_norm);
        W->wgate_up = take(&cur, L->w_gate);
        take(&cur, L->w_up);
        W->wdown = take(&cur, L->w_down);
    }
    s->final_norm = take(&cur, m->final_norm);
    s->max_tokens = opt->max_batch_tokens > 0 ? opt->max_batch_tokens : QE_DEFAULT_BATCH_TOKENS;
    *out = s;
    return QE_OK;
}

static void cpu_destroy(void *state) {
    cpu_state *s = state;
    if (!s) return;
    pool_destroy(s->pool);
    free(s->weights);
    free(s->layers);
    free(s->x);
    free(s->h);
    free(s->qkv);
    free(s->attn);
    free(s->gate_up);
    free(s->act);
    free(s->kv);
    free(s);
}

static int reserve(cpu_state *s, int tokens) {
    if (tokens <= s->cap_tokens) return 0;
    const qe_config *c = &s->cfg;
    size_t t = (size_t)tokens;
    float **bufs[] = {&s->x, &s->h, &s->qkv, &s->attn, &s->gate_up, &s->act};
    size_t widths[] = {
        (size_t)c->hidden_size, (size_t)c->hidden_size,           (size_t)s->qkv_dim,
        (size_t)s->q_dim,       2 * (size_t)c->intermediate_size, (size_t)c->intermediate_size};
    for (int i = 0; i < 6; i++) {
        free(*bufs[i]);
        *bufs[i] = malloc(t * widths[i] * sizeof(float));
        if (!*bufs[i]) {
            s->cap_tokens = 0;
            return -1;
        }
    }
    s->cap_tokens = tokens;
    return 0;
}

/* --- matmul: cpu_gemm.c (BLIS, or the reference tiles) on the engine's pool; its header is
 * included here, beside its one caller --- */
#include "cpu_gemm.h"

static void matmul(cpu_state *s, const float *x, int m, int k, const float *w, int n, float *y,
                   int accumulate) {
    cpu_gemm(s->pool, x, m, k, w, n, y, n, accumulate);
}

/* The cache rows of layer l: [kv_cap][k | v]. */
static float *kv_layer(const cpu_state *s, int l) {
    return s->kv + (size_t)l * s->kv_cap * 2 * s->kv_dim;
}

/* Causal attention of the step's queries. past < 0: the step holds whole sequences, which attend
 * to their own qkv rows. past >= 0: the step is the chunk of one long sequence whose tokens start
 * at position past (every earlier token's K and V rows are in the cache); the chunk first appends
 * its K|V rows to layer l's cache, then attends to every cached key of the sequence (its queries
 * are the last of them: the kernel's bottom-right alignment). */
static int attention(cpu_state *s, const qe_batch *b, int past, int l) {
    const qe_config *c = &s->cfg;
    cpu_attn_params p;
    memset(&p, 0, sizeof p);
    p.q = s->qkv, p.out = s->attn;
    p.q_stride = s->qkv_dim, p.out_stride = s->q_dim;
    p.cu_seqlens_q = b->cu_seqlens, p.n_seqs = b->n_seqs;
    p.heads = c->num_heads, p.kv_heads = c->num_kv_heads, p.head_dim = c->head_dim;
    p.scale = (float)(1.0 / sqrt((double)c->head_dim));
    int32_t cu_k[2] = {0, 0};
    if (past < 0) {
        p.k = s->qkv + s->q_dim, p.v = s->qkv + s->q_dim + s->kv_dim;
        p.kv_stride = s->qkv_dim, p.cu_seqlens_k = b->cu_seqlens;
    } else {
        float *cache = kv_layer(s, l);
        for (int t = 0; t < b->n_tokens; t++)
            memcpy(cache + (size_t)(past + t) * 2 * s->kv_dim,
                   s->qkv + (size_t)t * s->qkv_dim + s->q_dim, sizeof(float) * 2 * s->kv_dim);
        cu_k[1] = past + b->n_tokens;
        p.k = cache, p.v = cache + s->kv_dim;
        p.kv_stride = 2 * s->kv_dim, p.cu_seqlens_k = cu_k;
    }
    return cpu_attention(&p, s->pool);
}

/* Makes the cache hold a sequence of `tokens` (rounded up to 1024, at most the model's
 * positions); the cache keeps its size when it is already large enough. */
static qe_status kv_reserve(cpu_state *s, int tokens, char *err, size_t errlen) {
    if (tokens <= s->kv_cap) return QE_OK;
    int cap = (tokens + 1023) / 1024 * 1024;
    if (cap > s->cfg.max_position_embeddings) cap = tokens;
    const size_t bytes = (size_t)s->cfg.num_layers * cap * 2 * s->kv_dim * sizeof(float);
    free(s->kv);
    s->kv = malloc(bytes);
    s->kv_cap = s->kv ? cap : 0;
    if (s->kv) return QE_OK;
    snprintf(err, errlen,
             "out of host memory for the K/V cache of a %d-token sequence (%.2f GiB; the cpu "
             "backend runs sequences longer than max_batch_tokens %d in chunks against it)",
             tokens, (double)bytes / (1u << 30), s->max_tokens);
    return QE_ERR_NOMEM;
}

static void gather_embeddings(const cpu_state *s, const qe_batch *b) {
    const st_tensor *e = s->model->embed;
    const int hidden = s->cfg.hidden_size;
    size_t esize = st_dtype_size(e->dtype);
    for (int t = 0; t < b->n_tokens; t++) {
        st_tensor row = *e;
        row.data = (const char *)e->data + (size_t)b->tokens[t] * hidden * esize;
        row.nbytes = (size_t)hidden * esize;
        st_to_f32(&row, s->x + (size_t)t * hidden);
    }
}

/* Embeds the batch and runs the first n_layers layers; the residual stream ends in s->x. past as
 * in attention(). */
static qe_status run_layers(cpu_state *s, const qe_batch *b, int past, int n_layers, char *err,
                            size_t errlen) {
    const qe_config *c = &s->cfg;
    const int T = b->n_tokens, H = c->hidden_size, F = c->intermediate_size;
    const float eps = (float)c->rms_norm_eps;
    if (reserve(s, T)) {
        snprintf(err, errlen, "out of host memory for activations of %d tokens", T);
        return QE_ERR_NOMEM;
    }
    gather_embeddings(s, b);
    for (int l = 0; l < n_layers; l++) {
        const cpu_layer *W = &s->layers[l];
        ref_rmsnorm(s->x, W->attn_norm, T, H, eps, s->h);
        matmul(s, s->h, T, H, W->wqkv, s->qkv_dim, s->qkv, 0);
        ref_qk_norm_rope(s->qkv, T, c->num_heads, c->num_kv_heads, c->head_dim, b->positions,
                         W->q_norm, W->k_norm, eps, c->rope_theta);
        if (attention(s, b, past, l)) {
            snprintf(err, errlen, "out of host memory for the attention of %d tokens", T);
            return QE_ERR_NOMEM;
        }
        matmul(s, s->attn, T, s->q_dim, W->wo, H, s->x, 1);
        ref_rmsnorm(s->x, W->mlp_norm, T, H, eps, s->h);
        matmul(s, s->h, T, H, W->wgate_up, 2 * F, s->gate_up, 0);
        ref_swiglu(s->gate_up, T, F, s->act);
        matmul(s, s->act, T, F, W->wdown, H, s->x, 1);
    }
    return QE_OK;
}

/* Runs the batch's first n_layers layers: whole, or, for one sequence longer than the step
 * budget, in chunks of at most max_tokens tokens against the K/V cache (every step bounded, as on
 * the CUDA backend). rows, when not NULL, receives the residual stream of every token. The
 * residual stream of the last piece run stays in s->x: the whole batch (*chunk_len 0), or the
 * last chunk, of *chunk_len tokens. */
static qe_status run_bounded(cpu_state *s, const qe_batch *b, int n_layers, float *rows,
                             int *chunk_len, char *err, size_t errlen) {
    const int H = s->cfg.hidden_size;
    *chunk_len = 0;
    if (qe_batch_stopped(b, "cpu backend", err, errlen)) return QE_ERR_CANCELLED;
    if (b->n_tokens <= s->max_tokens || b->n_seqs != 1) {
        qe_status st = run_layers(s, b, -1, n_layers, err, errlen);
        if (st == QE_OK && rows) memcpy(rows, s->x, sizeof(float) * (size_t)b->n_tokens * H);
        return st;
    }
    qe_status st = kv_reserve(s, b->n_tokens, err, errlen);
    for (int start = 0; st == QE_OK && start < b->n_tokens; start += s->max_tokens) {
        if (start > 0 && qe_batch_stopped(b, "cpu backend", err, errlen)) return QE_ERR_CANCELLED;
        const int len = b->n_tokens - start < s->max_tokens ? b->n_tokens - start : s->max_tokens;
        const int32_t cu[2] = {0, len};
        const qe_batch piece = {.n_seqs = 1,
                                .n_tokens = len,
                                .tokens = b->tokens + start,
                                .positions = b->positions + start,
                                .cu_seqlens = cu};
        st = run_layers(s, &piece, start, n_layers, err, errlen);
        if (st == QE_OK && rows)
            memcpy(rows + (size_t)start * H, s->x, sizeof(float) * (size_t)len * H);
        *chunk_len = len;
    }
    return st;
}

static qe_status cpu_forward(void *state, const qe_batch *b, int dims, int normalize, float *out,
                             char *err, size_t errlen) {
    cpu_state *s = state;
    int chunk_len;
    qe_status st = run_bounded(s, b, s->cfg.num_layers, NULL, &chunk_len, err, errlen);
    if (st != QE_OK) return st;
    const int32_t cu_chunk[2] = {0, chunk_len}; /* a chunked sequence: its last chunk's last row */
    ref_pool_last(s->x, s->cfg.hidden_size, chunk_len ? cu_chunk : b->cu_seqlens,
                  chunk_len ? 1 : b->n_seqs, s->final_norm, (float)s->cfg.rms_norm_eps, dims,
                  normalize, out);
    return QE_OK;
}

static qe_status cpu_residual(void *state, const qe_batch *b, int n_layers, float *out, char *err,
                              size_t errlen) {
    int chunk_len;
    return run_bounded(state, b, n_layers, out, &chunk_len, err, errlen);
}

/* No device, no steps of its own (the engine splits), no graphs, GEMM plans or profiler: the
 * qembed_debug.h hooks stay NULL. */
const qe_backend_ops qe_cpu_backend = {
    .name = "cpu",
    .create = cpu_create,
    .forward = cpu_forward,
    .destroy = cpu_destroy,
    .residual = cpu_residual,
};
