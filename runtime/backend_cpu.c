/* backend_cpu.c — the CPU backend: fp32 weights, the C reference kernels for the small ops, the
 * GEMMs of cpu_gemm.c (BLIS, one single-threaded call per column panel on the engine's pool), and
 * the tiled fp32 attention of cpu_attention.c (threads over sequences, kv heads and query
 * blocks), a paged K/V pool for long sequences. Plain and readable: the oracle for the CUDA backend
 * and the CI path. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "cpu_attention.h"
#include "cpu_gemm.h"
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
    /* [heads] for an ALiBi model (cfg_alibi_slopes; at the end of weights), else NULL */
    float *alibi_slopes;
    float *weights; /* one allocation for every converted weight */
    qe_pool *pool;
    /* activations, grown to the largest step seen */
    int cap_tokens;
    float *x, *h, *qkv, *attn, *gate_up, *act;
    /* the paged K/V pool: layer l's rows at kv + l * kv_rows * 2 * kv_dim, each k | v of one
     * token; row = page * page_size + position % page_size (scheduler.c fills the step's rows) */
    float *kv;
    int kv_n_pages, page_size;
    size_t kv_rows;
    int32_t *cu_k; /* [n_paged + 1] scratch: the paged chunks' key counts, cumulated */
    int cu_k_cap;
} cpu_state;

static float *take(float **cursor, const st_tensor *t) {
    float *p = *cursor;
    st_to_f32(t, p);
    *cursor += t->nbytes / st_dtype_size(t->dtype);
    return p;
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
    free(s->cu_k);
    free(s);
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
    size_t total = (size_t)c->hidden_size + (c->alibi ? (size_t)c->num_heads : 0);
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
    if (c->alibi) { /* no rotation either: the config's rope_theta is 0 (ref_qk_norm_rope) */
        s->alibi_slopes = cur;
        cfg_alibi_slopes(c->num_heads, cur);
    }
    /* The pool is host memory: pages the OS has not been asked to touch cost nothing, so the
     * default size is made in full unless the allocation itself is refused (then halved). */
    int is_default;
    s->kv_n_pages = qe_kv_pool_pages_wanted(opt, c, &is_default);
    s->page_size = opt->kv_page_tokens;
    const size_t page_bytes =
        (size_t)c->num_layers * (size_t)s->page_size * 2 * s->kv_dim * sizeof(float);
    while (s->kv_n_pages > 0 && !(s->kv = malloc((size_t)s->kv_n_pages * page_bytes))) {
        if (!is_default) {
            snprintf(err, errlen,
                     "out of host memory for the K/V pool (%.2f GiB for %d tokens; lower "
                     "kv_pool_tokens, qembed --kv-pool-tokens)",
                     (double)s->kv_n_pages * page_bytes / (1u << 30), s->kv_n_pages * s->page_size);
            cpu_destroy(s);
            return QE_ERR_NOMEM;
        }
        s->kv_n_pages /= 2;
    }
    s->kv_rows = (size_t)s->kv_n_pages * (size_t)s->page_size;
    *out = s;
    return QE_OK;
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

/* y[m, n] (+)= x[m, k] w[n, k]^T: cpu_gemm.c (BLIS, or the reference tiles) on the engine's pool */
static void matmul(cpu_state *s, const float *x, int m, int k, const float *w, int n, float *y,
                   int accumulate) {
    cpu_gemm(s->pool, x, m, k, w, n, y, n, accumulate);
}

/* Pool rows of layer l. */
static float *kv_layer(const cpu_state *s, int l) {
    return s->kv + (size_t)l * s->kv_rows * 2 * s->kv_dim;
}

/* Causal attention of the step's queries at layer l, in two parts (backend.h's qe_batch): the
 * whole sequences attend to their own rows of qkv; the paged chunks first write their K|V rows
 * to the pool, then attend to every key of their sequence through its block table. */
static int attention(cpu_state *s, const qe_batch *b, int l) {
    const qe_config *c = &s->cfg;
    const int n_whole = b->n_seqs - b->n_paged;
    cpu_attn_params p;
    memset(&p, 0, sizeof p);
    p.q = s->qkv, p.out = s->attn;
    p.q_stride = s->qkv_dim, p.out_stride = s->q_dim;
    p.heads = c->num_heads, p.kv_heads = c->num_kv_heads, p.head_dim = c->head_dim;
    p.scale = (float)(1.0 / sqrt((double)c->head_dim));
    p.alibi_slopes = s->alibi_slopes;
    if (n_whole > 0) {
        cpu_attn_params w = p;
        w.k = s->qkv + s->q_dim, w.v = s->qkv + s->q_dim + s->kv_dim;
        w.kv_stride = s->qkv_dim;
        w.cu_seqlens_q = w.cu_seqlens_k = b->cu_seqlens, w.n_seqs = n_whole;
        if (cpu_attention(&w, s->pool)) return -1;
    }
    if (b->n_paged == 0) return 0;
    float *pool = kv_layer(s, l);
    const int t0 = b->cu_seqlens[n_whole];
    for (int t = t0; t < b->n_tokens; t++)
        memcpy(pool + (size_t)b->kv_rows[t - t0] * 2 * s->kv_dim,
               s->qkv + (size_t)t * s->qkv_dim + s->q_dim, sizeof(float) * 2 * s->kv_dim);
    s->cu_k[0] = 0;
    for (int i = 0; i < b->n_paged; i++) {
        const int len = b->cu_seqlens[n_whole + i + 1] - b->cu_seqlens[n_whole + i];
        s->cu_k[i + 1] = s->cu_k[i] + b->past[i] + len;
    }
    p.k = pool, p.v = pool + s->kv_dim, p.kv_stride = 2 * s->kv_dim;
    p.cu_seqlens_q = b->cu_seqlens + n_whole, p.cu_seqlens_k = s->cu_k, p.n_seqs = b->n_paged;
    p.block_table = b->block_table, p.block_table_stride = b->bt_stride;
    p.page_size = s->page_size;
    return cpu_attention(&p, s->pool);
}

/* Whether the step's pool rows and pages lie inside the pool (the engine's scheduler made them;
 * checked because a wrong row would write outside the allocation). */
static int paged_step_valid(const cpu_state *s, const qe_batch *b) {
    const int t0 = b->cu_seqlens[b->n_seqs - b->n_paged];
    for (int t = t0; t < b->n_tokens; t++)
        if (b->kv_rows[t - t0] < 0 || (size_t)b->kv_rows[t - t0] >= s->kv_rows) return 0;
    for (long long i = 0; i < (long long)b->n_paged * b->bt_stride; i++)
        if (b->block_table[i] < 0 || b->block_table[i] >= s->kv_n_pages) return 0;
    return 1;
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

/* Embeds the step and runs its first n_layers layers; the residual stream ends in s->x. */
static qe_status run_layers(cpu_state *s, const qe_batch *b, int n_layers, char *err,
                            size_t errlen) {
    const qe_config *c = &s->cfg;
    const int T = b->n_tokens, H = c->hidden_size, F = c->intermediate_size;
    const float eps = (float)c->rms_norm_eps;
    if (b->n_paged > 0 && !paged_step_valid(s, b)) {
        snprintf(err, errlen, "cpu backend: a step's K/V rows lie outside the pool");
        return QE_ERR_ARG;
    }
    if (reserve(s, T)) {
        snprintf(err, errlen, "out of host memory for activations of %d tokens", T);
        return QE_ERR_NOMEM;
    }
    if (b->n_paged + 1 > s->cu_k_cap) {
        int32_t *c2 = realloc(s->cu_k, sizeof(int32_t) * (size_t)(b->n_paged + 1));
        if (!c2) {
            snprintf(err, errlen, "out of host memory");
            return QE_ERR_NOMEM;
        }
        s->cu_k = c2, s->cu_k_cap = b->n_paged + 1;
    }
    gather_embeddings(s, b);
    for (int l = 0; l < n_layers; l++) {
        const cpu_layer *W = &s->layers[l];
        ref_rmsnorm(s->x, W->attn_norm, T, H, eps, s->h);
        matmul(s, s->h, T, H, W->wqkv, s->qkv_dim, s->qkv, 0);
        ref_qk_norm_rope(s->qkv, T, c->num_heads, c->num_kv_heads, c->head_dim, b->positions,
                         W->q_norm, W->k_norm, eps, c->rope_theta);
        if (attention(s, b, l)) {
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

static qe_status cpu_forward(void *state, const qe_batch *steps, int n_steps, int dims,
                             int normalize, char *err, size_t errlen) {
    cpu_state *s = state;
    for (int i = 0; i < n_steps; i++) {
        const qe_batch *b = &steps[i];
        if (qe_batch_stopped(b, "cpu backend", err, errlen)) return QE_ERR_CANCELLED;
        qe_status st = run_layers(s, b, s->cfg.num_layers, err, errlen);
        if (st != QE_OK) return st;
        ref_pool_last(s->x, s->cfg.hidden_size, b->cu_seqlens, b->n_seqs, s->final_norm,
                      (float)s->cfg.rms_norm_eps, dims, normalize, b->out);
    }
    return QE_OK;
}

static qe_status cpu_residual(void *state, const qe_batch *b, int n_layers, float *out, char *err,
                              size_t errlen) {
    cpu_state *s = state;
    qe_status st = run_layers(s, b, n_layers, err, errlen);
    if (st == QE_OK) memcpy(out, s->x, sizeof(float) * (size_t)b->n_tokens * s->cfg.hidden_size);
    return st;
}

static int cpu_kv_pages(const void *state) {
    return ((const cpu_state *)state)->kv_n_pages;
}

/* No device, no graphs, GEMM plans or profiler: the qembed_debug.h hooks stay NULL. */
const qe_backend_ops qe_cpu_backend = {
    .name = "cpu",
    .create = cpu_create,
    .forward = cpu_forward,
    .destroy = cpu_destroy,
    .residual = cpu_residual,
    .kv_pages = cpu_kv_pages,
};
