/* hostsim_kernels.c — host stand-ins for every launcher of kernels/kernels.h: each checks its
 * arguments at launch, as the real launcher does, and queues its work on the lazy stream
 * (hostsim.h); the work is the op's C reference (kernels/ref) with the GPU's bf16 roundings. A
 * check on device data (token ids, sequence offsets) fails when the work runs: a device fault. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hostsim.h"
#include "kernels/kernels.h"
#include "kernels/ref/ref.h"
#include "weights/safetensors.h"

static char fake_msg[512];
int qe_k_fail(const char *kind, const char *call, const char *func, const char *file, int line,
              const char *what) {
    snprintf(fake_msg, sizeof fake_msg, "%s error %s in `%s` (%s, %s:%d)", kind, what, call, func,
             file, line);
    return QE_K_ERR;
}
const char *qe_k_last_error(void) {
    return fake_msg;
}

static float bf(qe_bf16 h) {
    return st_bf16_to_f32(h);
}
static qe_bf16 tobf(float f) {
    return st_f32_to_bf16(f);
}

/* ---------------------------------------------------------------- embed */

typedef struct embed_args {
    const qe_bf16 *table;
    int vocab, hidden, n_tokens;
    const int32_t *tokens;
    float *out;
} embed_args;
static int embed_run(const void *p) {
    const embed_args *a = p;
    for (int t = 0; t < a->n_tokens; t++) {
        QE_K_REQUIRE(a->tokens[t] >= 0 && a->tokens[t] < a->vocab);
        for (int i = 0; i < a->hidden; i++)
            a->out[(size_t)t * a->hidden + i] = bf(a->table[(size_t)a->tokens[t] * a->hidden + i]);
    }
    return QE_K_OK;
}
int qe_embed_gather(const qe_bf16 *table, int vocab, int hidden, const int32_t *tokens,
                    int n_tokens, float *out, qe_stream s) {
    (void)s;
    QE_K_REQUIRE(vocab > 0 && hidden > 0 && n_tokens >= 0);
    embed_args a = {table, vocab, hidden, n_tokens, tokens, out};
    return sim_enqueue(embed_run, &a, sizeof a);
}

/* ---------------------------------------------------------------- add + rmsnorm */

typedef struct rmsnorm_args {
    float *residual;
    const float *delta, *w;
    int rows, dim;
    float eps;
    qe_bf16 *out;
} rmsnorm_args;
static int rmsnorm_run(const void *p) {
    const rmsnorm_args *a = p;
    float *tmp = malloc(sizeof(float) * (size_t)a->rows * a->dim);
    ref_add_rmsnorm(a->residual, a->delta, a->w, a->rows, a->dim, a->eps, tmp);
    for (size_t i = 0; i < (size_t)a->rows * a->dim; i++)
        a->out[i] = tobf(tmp[i]);
    free(tmp);
    return QE_K_OK;
}
int qe_add_rmsnorm(float *residual, const float *delta, const float *w, int rows, int dim,
                   float eps, qe_bf16 *out, qe_stream s) {
    (void)s;
    QE_K_REQUIRE(rows >= 0 && dim > 0);
    rmsnorm_args a = {residual, delta, w, rows, dim, eps, out};
    return sim_enqueue(rmsnorm_run, &a, sizeof a);
}

/* ---------------------------------------------------------------- q/k norm + rope */

typedef struct rope_args {
    qe_bf16 *qkv;
    int n_tokens, heads, kv_heads, head_dim;
    const int32_t *positions;
    const float *q_norm_w, *k_norm_w;
    float eps;
    double theta;
} rope_args;
static int rope_run(const void *p) {
    const rope_args *a = p;
    const size_t row = (size_t)(a->heads + 2 * a->kv_heads) * a->head_dim;
    float *f = malloc(sizeof(float) * row);
    for (int t = 0; t < a->n_tokens; t++) {
        for (size_t i = 0; i < row; i++)
            f[i] = bf(a->qkv[t * row + i]);
        ref_qk_norm_rope(f, 1, a->heads, a->kv_heads, a->head_dim, &a->positions[t], a->q_norm_w,
                         a->k_norm_w, a->eps, a->theta);
        for (size_t i = 0; i < (size_t)(a->heads + a->kv_heads) * a->head_dim; i++)
            a->qkv[t * row + i] = tobf(f[i]);
    }
    free(f);
    return QE_K_OK;
}
int qe_qk_norm_rope(qe_bf16 *qkv, int n_tokens, int heads, int kv_heads, int head_dim,
                    const int32_t *positions, const float *q_norm_w, const float *k_norm_w,
                    float eps, double theta, qe_stream s) {
    (void)s;
    QE_K_REQUIRE(n_tokens >= 0 && head_dim % 2 == 0 && head_dim <= 256);
    rope_args a = {qkv,       n_tokens, heads,    kv_heads, head_dim,
                   positions, q_norm_w, k_norm_w, eps,      theta};
    return sim_enqueue(rope_run, &a, sizeof a);
}

/* ---------------------------------------------------------------- swiglu */

typedef struct swiglu_args {
    const qe_bf16 *gate_up;
    int rows, inter;
    qe_bf16 *out;
} swiglu_args;
static int swiglu_run(const void *p) {
    const swiglu_args *a = p;
    const size_t n = (size_t)a->rows * a->inter;
    float *g = malloc(sizeof(float) * 2 * n), *o = malloc(sizeof(float) * n);
    for (size_t i = 0; i < 2 * n; i++)
        g[i] = bf(a->gate_up[i]);
    ref_swiglu(g, a->rows, a->inter, o);
    for (size_t i = 0; i < n; i++)
        a->out[i] = tobf(o[i]);
    free(g), free(o);
    return QE_K_OK;
}
int qe_swiglu(const qe_bf16 *gate_up, int rows, int inter, qe_bf16 *out, qe_stream s) {
    (void)s;
    QE_K_REQUIRE(rows >= 0 && inter > 0);
    swiglu_args a = {gate_up, rows, inter, out};
    return sim_enqueue(swiglu_run, &a, sizeof a);
}

/* ---------------------------------------------------------------- pooling, last rows */

typedef struct pool_args {
    const float *x;
    int hidden;
    const int32_t *cu_seqlens;
    int n_seqs;
    const float *final_norm_w;
    float eps;
    int dims, normalize;
    float *out;
} pool_args;
static int pool_run(const void *p) {
    const pool_args *a = p;
    int32_t *cu = malloc(sizeof(int32_t) * (size_t)(a->n_seqs + 1));
    for (int i = 0; i <= a->n_seqs; i++)
        cu[i] = a->cu_seqlens ? a->cu_seqlens[i] : i;
    ref_pool_last(a->x, a->hidden, cu, a->n_seqs, a->final_norm_w, a->eps, a->dims, a->normalize,
                  a->out);
    free(cu);
    return QE_K_OK;
}
int qe_pool_last(const float *x, int hidden, const int32_t *cu_seqlens, int n_seqs,
                 const float *final_norm_w, float eps, int dims, int normalize, float *out,
                 qe_stream s) {
    (void)s;
    QE_K_REQUIRE(dims > 0 && dims <= hidden);
    pool_args a = {x, hidden, cu_seqlens, n_seqs, final_norm_w, eps, dims, normalize, out};
    return sim_enqueue(pool_run, &a, sizeof a);
}

typedef struct gather_args {
    const void *src;
    size_t row_bytes;
    const int32_t *cu_seqlens;
    int n_seqs;
    void *dst;
} gather_args;
static int gather_run(const void *p) {
    const gather_args *a = p;
    for (int i = 0; i < a->n_seqs; i++) {
        QE_K_REQUIRE(a->cu_seqlens[i + 1] >= 1);
        memcpy((char *)a->dst + (size_t)i * a->row_bytes,
               (const char *)a->src + (size_t)(a->cu_seqlens[i + 1] - 1) * a->row_bytes,
               a->row_bytes);
    }
    return QE_K_OK;
}
int qe_gather_last_rows(const void *src, size_t row_bytes, const int32_t *cu_seqlens, int n_seqs,
                        void *dst, qe_stream s) {
    (void)s;
    QE_K_REQUIRE(row_bytes % 4 == 0 && n_seqs >= 0);
    gather_args a = {src, row_bytes, cu_seqlens, n_seqs, dst};
    return sim_enqueue(gather_run, &a, sizeof a);
}

/* ---------------------------------------------------------------- attention */

/* Key j of sequence sq: its row in k/v (contiguous or through the block table). */
static long long key_row(const qe_attn_params *p, int sq, int k0, int j) {
    if (!p->block_table) return (long long)k0 + j;
    return (long long)p->block_table[(size_t)sq * p->block_table_stride + j / p->page_size] *
               p->page_size +
           j % p->page_size;
}

/* The documented semantics of qe_attn_params, computed directly in double. */
static int attention_run(const void *pp) {
    const qe_attn_params *p = pp;
    const int hd = p->head_dim, group = p->heads / p->kv_heads;
    for (int sq = 0; sq < p->n_seqs; sq++) {
        const int q0 = p->cu_seqlens_q[sq], Lq = p->cu_seqlens_q[sq + 1] - q0;
        const int k0 = p->cu_seqlens_k[sq], Lk = p->cu_seqlens_k[sq + 1] - k0;
        QE_K_REQUIRE(Lq >= 0 && Lk >= Lq && Lq <= p->max_seqlen_q);
        double *sc = malloc(sizeof(double) * (size_t)(Lk ? Lk : 1)), acc[128];
        for (int h = 0; h < p->heads; h++) {
            const int g = h / group;
            for (int i = 0; i < Lq; i++) {
                const int ia = i + Lk - Lq;
                const qe_bf16 *q = p->q + (size_t)(q0 + i) * p->q_stride + (size_t)h * hd;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= ia; j++) {
                    const qe_bf16 *k =
                        p->k + (size_t)key_row(p, sq, k0, j) * p->kv_stride + (size_t)g * hd;
                    double d = 0;
                    for (int e = 0; e < hd; e++)
                        d += (double)bf(q[e]) * bf(k[e]);
                    sc[j] = d * p->scale +
                            (p->alibi_slopes ? p->alibi_slopes[h] * (double)(j - ia) : 0);
                    if (sc[j] > mx) mx = sc[j];
                }
                for (int e = 0; e < hd; e++)
                    acc[e] = 0;
                for (int j = 0; j <= ia; j++) {
                    const qe_bf16 *v =
                        p->v + (size_t)key_row(p, sq, k0, j) * p->kv_stride + (size_t)g * hd;
                    const double pj = exp(sc[j] - mx);
                    sum += pj;
                    for (int e = 0; e < hd; e++)
                        acc[e] += pj * bf(v[e]);
                }
                qe_bf16 *o = p->out + (size_t)(q0 + i) * p->out_stride + (size_t)h * hd;
                for (int e = 0; e < hd; e++)
                    o[e] = tobf((float)(acc[e] / sum));
            }
        }
        free(sc);
    }
    return QE_K_OK;
}
int qe_attention(const qe_attn_params *p, qe_stream s) {
    (void)s;
    QE_K_REQUIRE(p->head_dim == 128 && p->heads > 0 && p->kv_heads > 0 &&
                 p->heads % p->kv_heads == 0 && p->n_seqs >= 0);
    QE_K_REQUIRE(p->block_table == NULL || (p->page_size > 0 && p->block_table_stride > 0));
    return sim_enqueue(attention_run, p, sizeof *p);
}

/* ---------------------------------------------------------------- gemm */

struct qe_gemm {
    int calls;
};
int qe_gemm_create(qe_gemm **out, void *workspace, size_t workspace_bytes) {
    (void)workspace, (void)workspace_bytes;
    *out = calloc(1, sizeof **out);
    return *out ? QE_K_OK : QE_K_ERR;
}
void qe_gemm_destroy(qe_gemm *g) {
    free(g);
}

typedef struct gemm_args {
    const qe_bf16 *x;
    int ldx, m, k;
    const qe_bf16 *w;
    int n;
    void *y;
    int ldy, y_f32, accumulate;
} gemm_args;
static int gemm_run(const void *p) {
    const gemm_args *a = p;
    const int k = a->k, n = a->n;
    float *wf = malloc(sizeof(float) * (size_t)n * k), *xf = malloc(sizeof(float) * (size_t)k);
    for (size_t i = 0; i < (size_t)n * k; i++)
        wf[i] = bf(a->w[i]);
    for (int r = 0; r < a->m; r++) {
        for (int c = 0; c < k; c++)
            xf[c] = bf(a->x[(size_t)r * a->ldx + c]);
        for (int c = 0; c < n; c++) {
            float acc = 0;
            const float *wr = wf + (size_t)c * k;
            for (int e = 0; e < k; e++)
                acc += xf[e] * wr[e];
            if (a->y_f32) {
                float *yy = (float *)a->y + (size_t)r * a->ldy + c;
                *yy = a->accumulate ? *yy + acc : acc;
            } else {
                ((qe_bf16 *)a->y)[(size_t)r * a->ldy + c] = tobf(acc);
            }
        }
    }
    free(wf), free(xf);
    return QE_K_OK;
}
int qe_gemm_bf16(qe_gemm *g, const qe_bf16 *x, int ldx, int m, int k, const qe_bf16 *w, int n,
                 void *y, int ldy, int y_f32, int accumulate, qe_stream s) {
    (void)s;
    QE_K_REQUIRE(m >= 0 && ldx >= k && ldy >= n && (!accumulate || y_f32));
    g->calls++;
    gemm_args a = {x, ldx, m, k, w, n, y, ldy, y_f32, accumulate};
    return sim_enqueue(gemm_run, &a, sizeof a);
}
