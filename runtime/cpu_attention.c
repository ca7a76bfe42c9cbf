/* cpu_attention.c — see cpu_attention.h.
 *
 * A task is one block of CA_BQ query rows of one sequence and every query head of one kv head's
 * group: each tile of CA_BK keys (K and V rows read in place, 512 bytes each at head_dim 128) is
 * then used by CA_BQ x group query rows while it sits in cache, instead of being streamed again
 * for every query as the double-precision reference does. Per row an online softmax (running max
 * m, running sum l, accumulator rescaled by exp(m_old - m_new)) in fp32. The dot products and the
 * accumulator updates use GCC vector types. */
#include "cpu_attention.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { CA_BQ = 16, CA_BK = 64 };

/* Four floats per operation (16-byte vectors: no wider ABI assumption on any target). */
typedef float v4 __attribute__((vector_size(16)));

static inline v4 load4(const float *p) {
    v4 v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void store4(float *p, v4 v) {
    memcpy(p, &v, sizeof v);
}

/* Eight partial sums, added at the end (no reassociation needed to vectorise). */
static inline __attribute__((always_inline)) float dot(const float *a, const float *b, int n) {
    v4 lo = {0, 0, 0, 0}, hi = {0, 0, 0, 0};
    int d = 0;
    for (; d + 8 <= n; d += 8) {
        lo += load4(a + d) * load4(b + d);
        hi += load4(a + d + 4) * load4(b + d + 4);
    }
    float s = ((lo[0] + hi[0]) + (lo[1] + hi[1])) + ((lo[2] + hi[2]) + (lo[3] + hi[3]));
    for (; d < n; d++)
        s += a[d] * b[d];
    return s;
}

/* Four dot products of one query row with four key rows: the query chunk is loaded once, and
 * eight independent accumulators keep the multiply-add units busy (no chain waits on another). */
static inline __attribute__((always_inline)) void dot4(const float *q, const float *const *k, int n,
                                                       float out[4]) {
    v4 a[8] = {{0, 0, 0, 0}};
#pragma GCC unroll 8
    for (int i = 1; i < 8; i++)
        a[i] = a[0];
    int d = 0;
    for (; d + 8 <= n; d += 8) {
        const v4 q0 = load4(q + d), q1 = load4(q + d + 4);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            a[2 * i] += q0 * load4(k[i] + d);
            a[2 * i + 1] += q1 * load4(k[i] + d + 4);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        const v4 t = a[2 * i] + a[2 * i + 1];
        out[i] = (t[0] + t[1]) + (t[2] + t[3]);
    }
    for (; d < n; d++)
        for (int i = 0; i < 4; i++)
            out[i] += q[d] * k[i][d];
}

/* acc[0..n) += sum over j < nk of p[j] * v[j][0..n), 32 columns at a time held in eight
 * registers across the keys (the accumulator row is read and written once per tile, not once
 * per key). */
static inline __attribute__((always_inline)) void add_pv(float *acc, const float *p,
                                                         const float *const *v, int nk, int n) {
    int d = 0;
    for (; d + 32 <= n; d += 32) {
        v4 a[8]; /* registers: every loop over i is unrolled */
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++)
            a[i] = load4(acc + d + 4 * i);
        for (int j = 0; j < nk; j++) {
            const v4 pj = {p[j], p[j], p[j], p[j]};
            const float *vj = v[j] + d;
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++)
                a[i] += pj * load4(vj + 4 * i);
        }
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++)
            store4(acc + d + 4 * i, a[i]);
    }
    for (; d < n; d++)
        for (int j = 0; j < nk; j++)
            acc[d] += p[j] * v[j][d];
}

/* Scores of one query row against keys [0, kend) of the tile: scale * q.k (+ ALiBi). */
static inline __attribute__((always_inline)) void
row_scores(const cpu_attn_params *p, const float *q, const float *const *krow, int kend,
           float slope, int key0, int i_abs, float *sc) {
    const int D = p->head_dim;
    int j = 0;
    for (; j + 4 <= kend; j += 4)
        dot4(q, krow + j, D, sc + j);
    for (; j < kend; j++)
        sc[j] = dot(q, krow[j], D);
    for (j = 0; j < kend; j++) {
        sc[j] *= p->scale;
        if (p->alibi_slopes) sc[j] += slope * (float)(key0 + j - i_abs);
    }
}

/* The row (in units of kv_stride) of key j of sequence s. */
static long long kv_row(const cpu_attn_params *p, int s, int j) {
    if (!p->block_table) return (long long)p->cu_seqlens_k[s] + j;
    const int page = p->block_table[(long long)s * p->block_table_stride + j / p->page_size];
    return (long long)page * p->page_size + j % p->page_size;
}

typedef struct attn_task {
    int s, g, i0, rows;
} attn_task;

typedef struct attn_job {
    const cpu_attn_params *p;
    const attn_task *tasks;
    int failed;
} attn_job;

/* One row's online-softmax state over the keys seen so far. */
typedef struct row_state {
    float m, l;
} row_state;

static void run_task(void *ctx, int ti) {
    attn_job *job = ctx;
    const cpu_attn_params *p = job->p;
    const attn_task *t = &job->tasks[ti];
    const int D = p->head_dim, group = p->heads / p->kv_heads;
    const int q0 = p->cu_seqlens_q[t->s], Lq = p->cu_seqlens_q[t->s + 1] - q0;
    const int Lk = p->cu_seqlens_k[t->s + 1] - p->cu_seqlens_k[t->s], off = Lk - Lq;
    const int n_keys = t->i0 + t->rows + off; /* keys 0 .. the last row's diagonal */
    const int n_state = group * t->rows;
    float *acc = calloc((size_t)n_state * D, sizeof(float));
    row_state *st = malloc(sizeof(row_state) * (size_t)n_state);
    if (!acc || !st) {
        __atomic_store_n(&job->failed, 1, __ATOMIC_RELAXED);
        free(acc), free(st);
        return;
    }
    for (int i = 0; i < n_state; i++)
        st[i].m = -INFINITY, st[i].l = 0.0f;
    const float *krow[CA_BK], *vrow[CA_BK];
    float sc[CA_BK];
    for (int n0 = 0; n0 < n_keys; n0 += CA_BK) {
        const int nk = n_keys - n0 < CA_BK ? n_keys - n0 : CA_BK;
        for (int j = 0; j < nk; j++) {
            const long long r = kv_row(p, t->s, n0 + j) * p->kv_stride + (long long)t->g * D;
            krow[j] = p->k + r, vrow[j] = p->v + r;
        }
        for (int hh = 0; hh < group; hh++) {
            const int h = t->g * group + hh;
            const float slope = p->alibi_slopes ? p->alibi_slopes[h] : 0.0f;
            for (int r = 0; r < t->rows; r++) {
                const int i_abs = t->i0 + r + off;
                const int kend = i_abs - n0 + 1 < nk ? i_abs - n0 + 1 : nk; /* causal */
                if (kend <= 0) continue;
                const float *q = p->q + (long long)(q0 + t->i0 + r) * p->q_stride + h * D;
                row_scores(p, q, krow, kend, slope, n0, i_abs, sc);
                float mx = -INFINITY;
                for (int j = 0; j < kend; j++)
                    mx = sc[j] > mx ? sc[j] : mx;
                /* online softmax: rescale what the earlier tiles summed, add this tile */
                row_state *rs = &st[hh * t->rows + r];
                float *a = acc + (size_t)(hh * t->rows + r) * D;
                const float m_new = mx > rs->m ? mx : rs->m;
                if (rs->m != m_new && rs->m != -INFINITY) {
                    const float keep = expf(rs->m - m_new);
                    rs->l *= keep;
                    for (int d = 0; d < D; d++)
                        a[d] *= keep;
                }
                rs->m = m_new;
                for (int j = 0; j < kend; j++) {
                    sc[j] = expf(sc[j] - m_new);
                    rs->l += sc[j];
                }
                add_pv(a, sc, vrow, kend, D);
            }
        }
    }
    for (int hh = 0; hh < group; hh++)
        for (int r = 0; r < t->rows; r++) {
            const int h = t->g * group + hh;
            const row_state *rs = &st[hh * t->rows + r];
            const float inv = rs->l > 0.0f ? 1.0f / rs->l : 0.0f;
            const float *a = acc + (size_t)(hh * t->rows + r) * D;
            float *o = p->out + (long long)(q0 + t->i0 + r) * p->out_stride + h * D;
            for (int d = 0; d < D; d++)
                o[d] = a[d] * inv;
        }
    free(acc), free(st);
}

int cpu_attention(const cpu_attn_params *p, qe_pool *pool) {
    long long n = 0;
    for (int s = 0; s < p->n_seqs; s++)
        n += (long long)(p->cu_seqlens_q[s + 1] - p->cu_seqlens_q[s] + CA_BQ - 1) / CA_BQ *
             p->kv_heads;
    if (n == 0) return 0;
    attn_task *tasks = malloc(sizeof *tasks * (size_t)n);
    if (!tasks || n > 0x7FFFFFFF) {
        free(tasks);
        return -1;
    }
    /* a sequence's late blocks see the most keys: they go first, so the pool's threads, which
     * take tasks in order, finish together */
    int k = 0;
    for (int s = 0; s < p->n_seqs; s++) {
        const int Lq = p->cu_seqlens_q[s + 1] - p->cu_seqlens_q[s];
        for (int i0 = (Lq - 1) / CA_BQ * CA_BQ; i0 >= 0; i0 -= CA_BQ)
            for (int g = 0; g < p->kv_heads; g++)
                tasks[k++] = (attn_task){s, g, i0, Lq - i0 < CA_BQ ? Lq - i0 : CA_BQ};
    }
    attn_job job = {p, tasks, 0};
    pool_run(pool, (int)n, run_task, &job);
    free(tasks);
    return job.failed ? -1 : 0;
}
