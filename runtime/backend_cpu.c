/* backend_cpu.c — the CPU backend: fp32 weights (a GGUF file's quantized matrices stay in the
 * file, converted a chunk of rows at a time inside each product), the C reference kernels for the
 * small ops, the GEMMs of cpu_gemm.c (BLIS, one single-threaded call per column panel on the
 * engine's pool), and the tiled fp32 attention of cpu_attention.c (threads over sequences, kv heads
 * and query blocks), a paged K/V pool for long sequences. Plain and readable: the oracle for the
 * CUDA backend and the CI path. */
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
#include "tp_split.h"

typedef struct cpu_layer {
    float *attn_norm, *q_norm, *k_norm, *mlp_norm; /* [hidden] / [head_dim] */
    cpu_weight wqkv;     /* [(heads + 2*kv_heads)*head_dim, hidden]: q, k, v rows fused */
    cpu_weight wo;       /* [hidden, heads*head_dim] */
    cpu_weight wgate_up; /* [2*inter, hidden]: gate rows then up rows */
    cpu_weight wdown;    /* [hidden, inter] */
} cpu_layer;

/* Tensor parallelism (qe_options.tensor_parallel > 1): rank r's slices of every layer
 * (tp_split.h) and its activations. The ranks run one after another on the engine's pool, each a
 * whole rank's work, and their partial residual updates are summed in rank order: an all-reduce
 * in shared memory, so CI proves the split the GPU backend's ranks will use. */
typedef struct cpu_rank {
    tp_shard sh;
    int q_dim, kv_dim, qkv_dim; /* this rank's widths */
    cpu_layer *layers;          /* its wqkv, wo, wgate_up, wdown slices (norms are the shared) */
    float *weights;
    float *qkv, *attn, *gate_up, *act; /* [cap_tokens, its widths] */
} cpu_rank;

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
    float *scratch; /* cpu_gemm_w's rows converted from the file (quantized matrices), or NULL */
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
    int tp;          /* ranks (1: the plain path, ranks NULL) */
    cpu_rank *ranks; /* [tp] */
    float *y, *acc;  /* [cap_tokens, hidden]: a rank's partial update, and their sum */
} cpu_state;

static float *take(float **cursor, const st_tensor *t) {
    float *p = *cursor;
    st_to_f32(t, p);
    *cursor += st_elems(t);
    return p;
}

/* A matrix kept in the file (converted inside each product) when any of its parts is quantized:
 * a GGUF file's block types cost 4.5-8.5 bits a weight there, 32 as fp32. Others become fp32. */
static int keep_in_file(const st_tensor *const *parts, int n) {
    for (int i = 0; i < n; i++)
        if (parts[i]->dtype == ST_QUANT) return 1;
    return 0;
}

/* The stacked parts as one matrix: fp32 rows from the cursor, or the tensors themselves. */
static cpu_weight take_matrix(float **cursor, const st_tensor *a, const st_tensor *b,
                              const st_tensor *c) {
    const st_tensor *parts[3] = {a, b, c};
    const int n = c ? 3 : b ? 2 : 1;
    cpu_weight w = {0};
    if (keep_in_file(parts, n)) {
        w.n_parts = n;
        for (int i = 0; i < n; i++)
            w.part[i] = parts[i];
        return w;
    }
    w.f32 = take(cursor, a); /* the parts land back to back: the fused matrix */
    for (int i = 1; i < n; i++)
        take(cursor, parts[i]);
    return w;
}

static void cpu_destroy(void *state) {
    cpu_state *s = state;
    if (!s) return;
    pool_destroy(s->pool);
    free(s->weights);
    free(s->scratch);
    free(s->layers);
    free(s->x);
    free(s->h);
    free(s->qkv);
    free(s->attn);
    free(s->gate_up);
    free(s->act);
    free(s->kv);
    free(s->cu_k);
    for (int r = 0; s->ranks && r < s->tp; r++) {
        cpu_rank *k = &s->ranks[r];
        free(k->layers), free(k->weights);
        free(k->qkv), free(k->attn), free(k->gate_up), free(k->act);
    }
    free(s->ranks);
    free(s->y);
    free(s->acc);
    free(s);
}

/* out[r, c] = t[row0 + r, col0 + c] for a 2-D tensor, converted to fp32 (a rank's slice). Each
 * row is converted whole into row_f32 (shape[1] floats) first: a quantized row's column slice
 * would split its blocks. */
static float *take_block(float **cursor, const st_tensor *t, int row0, int nrows, int col0,
                         int ncols, float *row_f32) {
    float *out = *cursor;
    for (int r = 0; r < nrows; r++) {
        const st_tensor row = st_rows(t, row0 + r, 1);
        st_to_f32(&row, row_f32);
        memcpy(out + (size_t)r * ncols, row_f32 + col0, (size_t)ncols * sizeof(float));
    }
    *cursor += (size_t)nrows * ncols;
    return out;
}

/* The ranks' weight slices (tp_split.h): q/k/v rows of their heads, o_proj's columns of them,
 * gate/up rows and down_proj columns of their intermediate run. */
static int make_ranks(cpu_state *s, const qe_model *m, int n, float *row_f32) {
    const qe_config *c = &m->cfg;
    const int H = c->hidden_size, hd = c->head_dim;
    s->ranks = calloc((size_t)n, sizeof *s->ranks);
    if (!s->ranks) return -1;
    s->tp = n;
    for (int r = 0; r < n; r++) {
        cpu_rank *k = &s->ranks[r];
        k->sh = tp_shard_of(c, n, r);
        k->q_dim = k->sh.q_heads * hd, k->kv_dim = k->sh.kv_heads * hd;
        k->qkv_dim = k->q_dim + 2 * k->kv_dim;
        const size_t per_layer = (size_t)k->qkv_dim * H + (size_t)H * k->q_dim +
                                 (size_t)2 * k->sh.f_len * H + (size_t)H * k->sh.f_len;
        k->weights = malloc(per_layer * (size_t)c->num_layers * sizeof(float));
        k->layers = calloc((size_t)c->num_layers, sizeof *k->layers);
        if (!k->weights || !k->layers) return -1;
        float *cur = k->weights, *b = row_f32;
        for (int l = 0; l < c->num_layers; l++) {
            const qe_layer_tensors *L = &m->layers[l];
            cpu_layer *W = &k->layers[l];
            W->wqkv.f32 = take_block(&cur, L->wq, k->sh.q_head0 * hd, k->q_dim, 0, H, b);
            take_block(&cur, L->wk, k->sh.kv_head0 * hd, k->kv_dim, 0, H, b);
            take_block(&cur, L->wv, k->sh.kv_head0 * hd, k->kv_dim, 0, H, b);
            W->wo.f32 = take_block(&cur, L->wo, 0, H, k->sh.q_head0 * hd, k->q_dim, b);
            W->wgate_up.f32 = take_block(&cur, L->w_gate, k->sh.f0, k->sh.f_len, 0, H, b);
            take_block(&cur, L->w_up, k->sh.f0, k->sh.f_len, 0, H, b);
            W->wdown.f32 = take_block(&cur, L->w_down, 0, H, k->sh.f0, k->sh.f_len, b);
        }
    }
    return 0;
}

/* make_ranks with a row buffer as wide as the widest matrix row (hidden, q width, intermediate). */
static int create_ranks(cpu_state *s, const qe_model *m, int n) {
    const qe_config *c = &m->cfg;
    size_t widest = (size_t)c->hidden_size;
    if ((size_t)s->q_dim > widest) widest = (size_t)s->q_dim;
    if ((size_t)c->intermediate_size > widest) widest = (size_t)c->intermediate_size;
    float *row_f32 = malloc(widest * sizeof(float));
    const int rc = row_f32 ? make_ranks(s, m, n, row_f32) : -1;
    free(row_f32);
    return rc;
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
    /* Everything but the embedding table, which is gathered row by row from the mapping, and
     * the matrices kept in the file; with tensor parallelism the matrices go to the ranks
     * instead, as fp32 slices (create_ranks). */
    const int tp = opt->tensor_parallel > 1 ? opt->tensor_parallel : 1;
    size_t total = (size_t)c->hidden_size + (c->alibi ? (size_t)c->num_heads : 0);
    int kept = 0; /* matrices kept in the file: cpu_gemm_w needs its scratch */
    for (int l = 0; l < c->num_layers; l++) {
        const qe_layer_tensors *L = &m->layers[l];
        const st_tensor *norms[] = {L->attn_norm, L->q_norm, L->k_norm, L->mlp_norm};
        const st_tensor *qkv[] = {L->wq, L->wk, L->wv}, *gu[] = {L->w_gate, L->w_up};
        const struct {
            const st_tensor *const *p;
            int n;
        } mats[] = {{qkv, 3}, {&L->wo, 1}, {gu, 2}, {&L->w_down, 1}};
        for (int i = 0; i < 4; i++)
            total += st_elems(norms[i]);
        for (int i = 0; i < 4 && tp == 1; i++) {
            if (keep_in_file(mats[i].p, mats[i].n)) {
                kept = 1;
                continue;
            }
            for (int j = 0; j < mats[i].n; j++)
                total += st_elems(mats[i].p[j]);
        }
    }
    s->weights = malloc(total * sizeof(float));
    s->layers = calloc(c->num_layers > 0 ? (size_t)c->num_layers : 1, sizeof *s->layers);
    int threads = opt->threads > 0 ? opt->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    s->pool = pool_create(threads);
    if (kept && s->pool) {
        const int widest = c->intermediate_size > s->q_dim ? c->intermediate_size : s->q_dim;
        const int k_max = widest > c->hidden_size ? widest : c->hidden_size;
        s->scratch = malloc(cpu_gemm_w_scratch(pool_threads(s->pool), k_max) * sizeof(float));
    }
    if (!s->weights || !s->layers || !s->pool || (kept && !s->scratch)) {
        snprintf(err, errlen, "out of host memory converting %zu weights to fp32", total);
        free(s->weights);
        free(s->scratch);
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
        W->q_norm = take(&cur, L->q_norm);
        W->k_norm = take(&cur, L->k_norm);
        W->mlp_norm = take(&cur, L->mlp_norm);
        if (tp > 1) continue; /* the ranks hold the matrices */
        W->wqkv = take_matrix(&cur, L->wq, L->wk, L->wv);
        W->wo = take_matrix(&cur, L->wo, NULL, NULL);
        W->wgate_up = take_matrix(&cur, L->w_gate, L->w_up, NULL);
        W->wdown = take_matrix(&cur, L->w_down, NULL, NULL);
    }
    if (tp > 1 && create_ranks(s, m, tp)) {
        snprintf(err, errlen, "out of host memory for the weights of %d tensor-parallel ranks", tp);
        cpu_destroy(s);
        return QE_ERR_NOMEM;
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
    for (int r = 0; s->ranks && r < s->tp; r++) {
        cpu_rank *k = &s->ranks[r];
        float **rb[] = {&k->qkv, &k->attn, &k->gate_up, &k->act};
        size_t rw[] = {(size_t)k->qkv_dim, (size_t)k->q_dim, 2 * (size_t)k->sh.f_len,
                       (size_t)k->sh.f_len};
        for (int i = 0; i < 4; i++) {
            free(*rb[i]);
            if (!(*rb[i] = malloc(t * rw[i] * sizeof(float)))) {
                s->cap_tokens = 0;
                return -1;
            }
        }
    }
    if (s->ranks) {
        free(s->y), free(s->acc);
        s->y = malloc(t * (size_t)c->hidden_size * sizeof(float));
        s->acc = malloc(t * (size_t)c->hidden_size * sizeof(float));
        if (!s->y || !s->acc) {
            s->cap_tokens = 0;
            return -1;
        }
    }
    s->cap_tokens = tokens;
    return 0;
}

/* y[m, n] (+)= x[m, k] w[n, k]^T: cpu_gemm.c (BLIS, or the reference tiles) on the engine's pool */
static void matmul(cpu_state *s, const float *x, int m, int k, const cpu_weight *w, int n, float *y,
                   int accumulate) {
    cpu_gemm_w(s->pool, x, m, k, w, n, y, n, accumulate, s->scratch);
}

/* Pool rows of layer l. */
static float *kv_layer(const cpu_state *s, int l) {
    return s->kv + (size_t)l * s->kv_rows * 2 * s->kv_dim;
}

/* The heads one attention call covers: all of them, or a tensor-parallel rank's. Its qkv rows
 * are [q | k | v] of those heads; its K|V live in the pool at kv head kv_head0 of each row. */
typedef struct attn_heads {
    float *qkv, *out;
    int qkv_dim, q_dim, kv_dim; /* of these heads */
    int heads, kv_heads, kv_head0;
    const float *alibi_slopes; /* of these heads, or NULL */
} attn_heads;

static attn_heads all_heads(cpu_state *s) {
    return (attn_heads){s->qkv,         s->attn,          s->qkv_dim,          s->q_dim,
                        s->kv_dim,      s->cfg.num_heads, s->cfg.num_kv_heads, 0,
                        s->alibi_slopes};
}

/* Causal attention of the step's queries at layer l, in two parts (backend.h's qe_batch): the
 * whole sequences attend to their own rows of qkv; the paged chunks first write their K|V rows
 * to the pool, then attend to every key of their sequence through its block table. */
static int attention(cpu_state *s, const qe_batch *b, int l, const attn_heads *a) {
    const qe_config *c = &s->cfg;
    const int n_whole = b->n_seqs - b->n_paged, hd = c->head_dim;
    cpu_attn_params p;
    memset(&p, 0, sizeof p);
    p.q = a->qkv, p.out = a->out;
    p.q_stride = a->qkv_dim, p.out_stride = a->q_dim;
    p.heads = a->heads, p.kv_heads = a->kv_heads, p.head_dim = hd;
    p.scale = (float)(1.0 / sqrt((double)hd));
    p.alibi_slopes = a->alibi_slopes;
    if (n_whole > 0) {
        cpu_attn_params w = p;
        w.k = a->qkv + a->q_dim, w.v = a->qkv + a->q_dim + a->kv_dim;
        w.kv_stride = a->qkv_dim;
        w.cu_seqlens_q = w.cu_seqlens_k = b->cu_seqlens, w.n_seqs = n_whole;
        if (cpu_attention(&w, s->pool)) return -1;
    }
    if (b->n_paged == 0) return 0;
    /* this call's kv heads of each pool row: k at kv_head0, v at kv_dim + kv_head0 */
    float *pool = kv_layer(s, l) + (size_t)a->kv_head0 * hd;
    const int t0 = b->cu_seqlens[n_whole];
    for (int t = t0; t < b->n_tokens; t++) {
        float *row = pool + (size_t)b->kv_rows[t - t0] * 2 * s->kv_dim;
        const float *kv = a->qkv + (size_t)t * a->qkv_dim + a->q_dim;
        memcpy(row, kv, sizeof(float) * a->kv_dim);
        memcpy(row + s->kv_dim, kv + a->kv_dim, sizeof(float) * a->kv_dim);
    }
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
    for (int t = 0; t < b->n_tokens; t++) {
        const st_tensor row = st_rows(e, b->tokens[t], 1); /* quantized tables stay so, too */
        st_to_f32(&row, s->x + (size_t)t * hidden);
    }
}

/* The all-reduce: x += the ranks' partial updates (in s->acc), summed in rank order. */
static void add_partial(cpu_state *s, int T, int r) {
    const size_t n = (size_t)T * s->cfg.hidden_size;
    if (r > 0)
        for (size_t i = 0; i < n; i++)
            s->acc[i] += s->y[i];
    if (r == s->tp - 1)
        for (size_t i = 0; i < n; i++)
            s->x[i] += s->acc[i];
}

/* Layer l's attention on every rank: its q/k/v heads from the shared normed rows s->h, its
 * attention, its columns of o_proj (a partial update of the residual). */
static int tp_attention(cpu_state *s, const qe_batch *b, int l) {
    const qe_config *c = &s->cfg;
    const int T = b->n_tokens, H = c->hidden_size;
    for (int r = 0; r < s->tp; r++) {
        cpu_rank *k = &s->ranks[r];
        const cpu_layer *W = &k->layers[l], *N = &s->layers[l];
        matmul(s, s->h, T, H, &W->wqkv, k->qkv_dim, k->qkv, 0);
        ref_qk_norm_rope(k->qkv, T, k->sh.q_heads, k->sh.kv_heads, c->head_dim, b->positions,
                         N->q_norm, N->k_norm, (float)c->rms_norm_eps, c->rope_theta);
        const attn_heads a = {k->qkv,
                              k->attn,
                              k->qkv_dim,
                              k->q_dim,
                              k->kv_dim,
                              k->sh.q_heads,
                              k->sh.kv_heads,
                              k->sh.kv_head0,
                              s->alibi_slopes ? s->alibi_slopes + k->sh.q_head0 : NULL};
        if (attention(s, b, l, &a)) return -1;
        matmul(s, k->attn, T, k->q_dim, &W->wo, H, r ? s->y : s->acc, 0);
        add_partial(s, T, r);
    }
    return 0;
}

/* Layer l's MLP on every rank: its run of the intermediate (gate and up rows, SwiGLU, its
 * columns of down_proj), a partial update of the residual. */
static void tp_mlp(cpu_state *s, int T, int l) {
    const int H = s->cfg.hidden_size;
    for (int r = 0; r < s->tp; r++) {
        cpu_rank *k = &s->ranks[r];
        const cpu_layer *W = &k->layers[l];
        const int f = k->sh.f_len;
        matmul(s, s->h, T, H, &W->wgate_up, 2 * f, k->gate_up, 0);
        ref_swiglu(k->gate_up, T, f, k->act);
        matmul(s, k->act, T, f, &W->wdown, H, r ? s->y : s->acc, 0);
        add_partial(s, T, r);
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
    const attn_heads whole = all_heads(s);
    for (int l = 0; l < n_layers; l++) {
        const cpu_layer *W = &s->layers[l];
        ref_rmsnorm(s->x, W->attn_norm, T, H, eps, s->h);
        if (s->ranks) { /* tensor parallel: every rank's share, then the sum of their updates */
            if (tp_attention(s, b, l)) goto oom;
            ref_rmsnorm(s->x, W->mlp_norm, T, H, eps, s->h);
            tp_mlp(s, T, l);
            continue;
        }
        matmul(s, s->h, T, H, &W->wqkv, s->qkv_dim, s->qkv, 0);
        ref_qk_norm_rope(s->qkv, T, c->num_heads, c->num_kv_heads, c->head_dim, b->positions,
                         W->q_norm, W->k_norm, eps, c->rope_theta);
        if (attention(s, b, l, &whole)) goto oom;
        matmul(s, s->attn, T, s->q_dim, &W->wo, H, s->x, 1);
        ref_rmsnorm(s->x, W->mlp_norm, T, H, eps, s->h);
        matmul(s, s->h, T, H, &W->wgate_up, 2 * F, s->gate_up, 0);
        ref_swiglu(s->gate_up, T, F, s->act);
        matmul(s, s->act, T, F, &W->wdown, H, s->x, 1);
    }
    return QE_OK;
oom:
    snprintf(err, errlen, "out of host memory for the attention of %d tokens", T);
    return QE_ERR_NOMEM;
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
