/* test_cpu_attention.c — the CPU backend's tiled fp32 attention (runtime/cpu_attention.c)
 * against the double-precision reference (kernels/ref/ref_attention.c) on seeded random inputs:
 * odd and tail lengths (1, 7, 113, 129, 2049) and mixed packs, GQA 1/2/4, ALiBi, head sizes that
 * leave the vector loops a tail (70, 72); then its own addressing: the last Lq queries against
 * Lk keys, contiguous at an offset or paged through a shuffled block table, give exactly the
 * rows of full self-attention, and the thread count changes nothing. */
#include <math.h>
#include <stdint.h>

#include "kernels/ref/ref.h"
#include "runtime/cpu_attention.h"
#include "runtime/parallel.h"
#include "test_util.h"

static uint64_t rng;
static float frand(float a) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return ((float)((rng >> 40) % 2000001) / 1000000.0f - 1.0f) * a;
}

typedef struct packed {
    int n_seqs, T, heads, kv_heads, hd, row;
    int32_t cu[16];
    float *qkv;
} packed;

/* Random qkv rows for the packed sequences (q larger, so the softmax is peaked). */
static packed make_packed(const int *lens, int n, int heads, int kv_heads, int hd) {
    packed p = {n, 0, heads, kv_heads, hd, (heads + 2 * kv_heads) * hd, {0}, NULL};
    for (int s = 0; s < n; s++)
        p.cu[s + 1] = p.cu[s] + lens[s];
    p.T = p.cu[n];
    p.qkv = malloc(sizeof(float) * (size_t)p.T * p.row);
    for (int t = 0; t < p.T; t++)
        for (int i = 0; i < p.row; i++)
            p.qkv[(size_t)t * p.row + i] = frand(i < heads * hd ? 3.0f : 1.0f);
    return p;
}

static cpu_attn_params full_params(const packed *p, float *out, const float *slopes) {
    cpu_attn_params a;
    memset(&a, 0, sizeof a);
    a.q = p->qkv, a.k = p->qkv + p->heads * p->hd, a.v = p->qkv + (p->heads + p->kv_heads) * p->hd;
    a.out = out;
    a.q_stride = a.kv_stride = p->row, a.out_stride = p->heads * p->hd;
    a.cu_seqlens_q = a.cu_seqlens_k = p->cu, a.n_seqs = p->n_seqs;
    a.heads = p->heads, a.kv_heads = p->kv_heads, a.head_dim = p->hd;
    a.scale = (float)(1.0 / sqrt((double)p->hd));
    a.alibi_slopes = slopes;
    return a;
}

static void vs_reference(const int *lens, int n, int heads, int kv_heads, int hd, int alibi,
                         qe_pool *pool) {
    packed p = make_packed(lens, n, heads, kv_heads, hd);
    const size_t n_out = (size_t)p.T * heads * hd;
    float *want = malloc(sizeof(float) * n_out), *got = malloc(sizeof(float) * n_out);
    float slopes[64];
    for (int h = 0; h < heads; h++)
        slopes[h] = exp2f(-8.0f * (h + 1) / heads);
    ref_attention(p.qkv, p.cu, n, heads, kv_heads, hd, alibi ? slopes : NULL, 0, heads, want);
    for (size_t i = 0; i < n_out; i++)
        got[i] = NAN;
    cpu_attn_params a = full_params(&p, got, alibi ? slopes : NULL);
    cr_assert_eq(cpu_attention(&a, pool), 0);
    double worst = 0, num = 0, den = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n_out; i++) {
        const double d = fabs((double)got[i] - want[i]);
        const double r = isnan(got[i]) ? INFINITY : d / (1e-5 + 1e-4 * fabs(want[i]));
        if (r > worst) worst = r, wi = i;
        num += d * d, den += (double)want[i] * want[i];
    }
    cr_expect(worst <= 1.0,
              "T %d heads %d/%d hd %d alibi %d: worst element %zu (token %zu, head %zu, dim %zu) "
              "got %.8g want %.8g",
              p.T, heads, kv_heads, hd, alibi, wi, wi / (heads * hd), wi / hd % heads, wi % hd,
              got[wi], want[wi]);
    cr_expect(sqrt(num / den) < 2e-6, "T %d heads %d/%d hd %d: relative L2 error %.3g", p.T, heads,
              kv_heads, hd, sqrt(num / den));
    free(want), free(got), free(p.qkv);
}

static const int L1[] = {1}, L7[] = {7}, L113_129[] = {113, 129}, L2049[] = {2049};
static const int LMIX[] = {1, 7, 113, 129, 64, 65, 200};

Test(cpu_attention, matches_the_double_reference, .timeout = 300) {
    qe_pool *pool = pool_create(2);
    const int gqa[][2] = {{4, 4}, {4, 2}, {8, 2}};
    const struct {
        const int *l;
        int n;
    } seqs[] = {{L1, 1}, {L7, 1}, {L113_129, 2}, {LMIX, 7}};
    rng = 1;
    for (int gi = 0; gi < 3; gi++)
        for (int si = 0; si < 4; si++)
            vs_reference(seqs[si].l, seqs[si].n, gqa[gi][0], gqa[gi][1], 128, 0, pool);
    vs_reference(L2049, 1, 4, 2, 128, 0, pool); /* past 32 key tiles */
    vs_reference(LMIX, 7, 4, 2, 128, 1, pool);  /* ALiBi */
    vs_reference(LMIX, 7, 8, 2, 64, 1, pool);
    vs_reference(LMIX, 7, 2, 1, 70, 0, pool); /* the vector loops' tails */
    vs_reference(LMIX, 7, 3, 3, 72, 0, pool);
    pool_destroy(pool);
}

/* The last Lq queries of each sequence against all its keys: contiguous at an offset of the key
 * buffer, or paged through a shuffled block table (page sizes 7, 16, 64), bitwise equal to the
 * same rows of full self-attention; and 1 or 3 threads give the same bits as 2. */
Test(cpu_attention, bottom_right_paged_and_threads_are_exact, .timeout = 300) {
    const int lens[] = {129, 1, 300, 64, 77}, S = 5, H = 8, KV = 2, HD = 128;
    rng = 7;
    packed p = make_packed(lens, S, H, KV, HD);
    const int kv_dim = KV * HD, qd = H * HD;
    float *full = malloc(sizeof(float) * (size_t)p.T * qd);
    qe_pool *pool = pool_create(2);
    cpu_attn_params a = full_params(&p, full, NULL);
    cr_assert_eq(cpu_attention(&a, pool), 0);
    for (int threads = 1; threads <= 3; threads += 2) {
        qe_pool *other = pool_create(threads);
        float *again = malloc(sizeof(float) * (size_t)p.T * qd);
        a.out = again;
        cr_assert_eq(cpu_attention(&a, other), 0);
        cr_expect(memcmp(again, full, sizeof(float) * (size_t)p.T * qd) == 0,
                  "%d threads differ from 2", threads);
        free(again);
        pool_destroy(other);
    }
    const int page_sizes[] = {7, 16, 64}, lqs[] = {1, 5, 16, 100};
    for (int pi = 0; pi < 3; pi++) {
        const int ps = page_sizes[pi], max_pages = (300 + ps - 1) / ps;
        int total = 3; /* pages nobody uses stay NaN */
        for (int s = 0; s < S; s++)
            total += (lens[s] + ps - 1) / ps;
        int32_t *bt = malloc(sizeof(int32_t) * (size_t)S * max_pages);
        int *perm = malloc(sizeof(int) * (size_t)total);
        for (int i = 0; i < total; i++)
            perm[i] = i;
        for (int i = total - 1; i > 0; i--) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            const int j = (int)((rng >> 33) % (uint64_t)(i + 1)), t = perm[i];
            perm[i] = perm[j], perm[j] = t;
        }
        float *kc = malloc(sizeof(float) * (size_t)total * ps * kv_dim);
        float *vc = malloc(sizeof(float) * (size_t)total * ps * kv_dim);
        for (size_t i = 0; i < (size_t)total * ps * kv_dim; i++)
            kc[i] = vc[i] = NAN;
        int next = 0;
        for (int s = 0; s < S; s++)
            for (int j = 0; j < lens[s]; j++) {
                if (j % ps == 0) bt[s * max_pages + j / ps] = perm[next++];
                const size_t dst = ((size_t)bt[s * max_pages + j / ps] * ps + j % ps) * kv_dim;
                const float *src = p.qkv + (size_t)(p.cu[s] + j) * p.row;
                memcpy(kc + dst, src + qd, sizeof(float) * kv_dim);
                memcpy(vc + dst, src + qd + kv_dim, sizeof(float) * kv_dim);
            }
        for (int li = 0; li < 4; li++) {
            int32_t cuq[6] = {0};
            for (int s = 0; s < S; s++)
                cuq[s + 1] = cuq[s] + (lens[s] < lqs[li] ? lens[s] : lqs[li]);
            const int TQ = cuq[S];
            float *qrows = malloc(sizeof(float) * (size_t)TQ * p.row);
            float *got = malloc(sizeof(float) * (size_t)TQ * qd);
            for (int s = 0; s < S; s++)
                for (int i = 0; i < cuq[s + 1] - cuq[s]; i++)
                    memcpy(qrows + (size_t)(cuq[s] + i) * p.row,
                           p.qkv + (size_t)(p.cu[s] + lens[s] - (cuq[s + 1] - cuq[s]) + i) * p.row,
                           sizeof(float) * p.row);
            for (int paged = 0; paged < 2; paged++) {
                cpu_attn_params c = a;
                c.q = qrows, c.q_stride = p.row, c.out = got, c.cu_seqlens_q = cuq;
                if (paged) {
                    int32_t cuk[6];
                    for (int s = 0; s <= S; s++)
                        cuk[s] = p.cu[s] + 1000; /* only the differences count when paged */
                    c.k = kc, c.v = vc, c.kv_stride = kv_dim, c.cu_seqlens_k = cuk;
                    c.block_table = bt, c.block_table_stride = max_pages, c.page_size = ps;
                    cr_assert_eq(cpu_attention(&c, pool), 0);
                } else {
                    cr_assert_eq(cpu_attention(&c, pool), 0);
                }
                int same = 1;
                for (int s = 0; s < S && same; s++)
                    for (int i = 0; i < cuq[s + 1] - cuq[s] && same; i++) {
                        const int src = p.cu[s] + lens[s] - (cuq[s + 1] - cuq[s]) + i;
                        same = memcmp(got + (size_t)(cuq[s] + i) * qd, full + (size_t)src * qd,
                                      sizeof(float) * qd) == 0;
                    }
                cr_expect(same, "Lq %d %s (page size %d) differs from full attention", lqs[li],
                          paged ? "paged" : "contiguous", ps);
            }
            free(qrows), free(got);
        }
        free(bt), free(perm), free(kc), free(vc);
    }
    pool_destroy(pool);
    free(full), free(p.qkv);
}
