/* test_cpu_gemm.c — the CPU backend's GEMM (runtime/cpu_gemm.c: BLIS panels, or the
 * reference tiles in a build without BLAS) against the oracle ref_matmul, on seeded random
 * inputs: m = 1, 7, 65, 300 with odd k and n that are no multiple of a panel or a micro-tile,
 * accumulate off and on, y rows wider than n (ldy > n), pools of 1, 2 and 3 threads; then that a
 * row's result depends on nothing but its own x row, bitwise.
 *
 * Tolerance: both sides sum k fp32 products, in different orders, so neither is exact. Each
 * lies within gamma_k * sum|x_i w_i| of the exact dot product (gamma_k = k u / (1 - k u),
 * u = 2^-24: Higham's bound for any summation order, with or without FMA), and adding the old
 * y costs each one more rounding, u * (|y_old| + |dot|). So the two may differ by twice that,
 * per element, and no more: a wrong or missing product of these random inputs is far larger. */
#include <math.h>
#include <stdint.h>

#include "kernels/ref/ref.h"
#include "kernels/ref/ref_quant.h"
#include "runtime/cpu_gemm.h"
#include "runtime/parallel.h"
#include "test_util.h"

static uint64_t rng;
static float frand(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) % 2000001) / 1000000.0f - 1.0f;
}

static float *random_floats(size_t n) {
    float *p = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++)
        p[i] = frand();
    return p;
}

/* A value outside y's columns that cpu_gemm must leave as it is. */
static const float GAP = 12345.0f;

static void vs_ref(qe_pool *pool, int m, int k, int n, int ldy, int accumulate) {
    rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)(m * 1000003 + k * 1009 + n);
    float *x = random_floats((size_t)m * k), *w = random_floats((size_t)n * k);
    float *y0 = random_floats((size_t)m * ldy); /* the old y, for accumulate */
    float *want = malloc(sizeof(float) * (size_t)m * ldy);
    float *got = malloc(sizeof(float) * (size_t)m * ldy);
    for (size_t i = 0; i < (size_t)m * ldy; i++) {
        const int in_y = (int)(i % ldy) < n;
        want[i] = accumulate ? y0[i] : NAN;
        got[i] = in_y ? (accumulate ? y0[i] : NAN) : GAP;
    }
    ref_matmul(x, m, k, w, n, want, ldy, accumulate);
    cpu_gemm(pool, x, m, k, w, n, got, ldy, accumulate);

    const double u = ldexp(1.0, -24), gamma = k * u / (1 - k * u);
    double worst = 0;
    int wr = 0, wc = 0, gaps_touched = 0;
    for (int r = 0; r < m; r++) {
        for (int c = 0; c < ldy; c++) {
            const size_t i = (size_t)r * ldy + c;
            if (c >= n) {
                gaps_touched += got[i] != GAP;
                continue;
            }
            double abs_dot = 0;
            for (int j = 0; j < k; j++)
                abs_dot += fabs((double)x[(size_t)r * k + j] * w[(size_t)c * k + j]);
            const double old = accumulate ? fabs((double)y0[i]) : 0;
            const double bound = 2 * (gamma * abs_dot + (accumulate ? u * (old + abs_dot) : 0));
            const double d = fabs((double)got[i] - want[i]);
            const double ratio = isnan(got[i]) ? INFINITY : d / (bound + 1e-30);
            if (ratio > worst) worst = ratio, wr = r, wc = c;
        }
    }
    cr_expect(worst <= 1.0,
              "m %d k %d n %d ldy %d accumulate %d threads %d: worst y[%d][%d] got %.9g want %.9g "
              "(%.3g of the summation-order bound)",
              m, k, n, ldy, accumulate, pool_threads(pool), wr, wc, got[(size_t)wr * ldy + wc],
              want[(size_t)wr * ldy + wc], worst);
    cr_expect_eq(gaps_touched, 0, "m %d k %d n %d ldy %d: %d values past column n changed", m, k, n,
                 ldy, gaps_touched);
    free(x), free(w), free(y0), free(want), free(got);
}

static const int ms[] = {1, 7, 65, 300};
/* (k, n): odd, no multiple of 8, 16 or 64; the last n spans several panels and a tail. */
static const int kn[][2] = {{1, 1}, {3, 5}, {129, 113}, {1025, 333}, {67, 1091}};

static void all_shapes(int threads, int accumulate) {
    qe_pool *pool = pool_create(threads);
    cr_assert(pool);
    for (size_t a = 0; a < sizeof ms / sizeof ms[0]; a++)
        for (size_t b = 0; b < sizeof kn / sizeof kn[0]; b++) {
            vs_ref(pool, ms[a], kn[b][0], kn[b][1], kn[b][1], accumulate);
            vs_ref(pool, ms[a], kn[b][0], kn[b][1], kn[b][1] + 7, accumulate);
        }
    pool_destroy(pool);
}

Test(cpu_gemm, matches_ref_one_thread) {
    all_shapes(1, 0);
}
Test(cpu_gemm, matches_ref_two_threads) {
    all_shapes(2, 0);
}
Test(cpu_gemm, matches_ref_three_threads) {
    all_shapes(3, 0);
}
Test(cpu_gemm, accumulates_like_ref_one_thread) {
    all_shapes(1, 1);
}
Test(cpu_gemm, accumulates_like_ref_two_threads) {
    all_shapes(2, 1);
}

/* The engine's bitwise promises (a chunked sequence equals the whole one; a sequence's vector
 * does not depend on what shares its step, nor on the thread count) need each y row to depend
 * on its own x row only: not on m, nor on where the row sits in x, nor on the panel split. */
Test(cpu_gemm, rows_do_not_depend_on_their_batch) {
    enum { M = 300, K = 1025, N = 333, PAD = 11 };
    rng = 7;
    float *x = random_floats((size_t)(M + PAD) * K), *w = random_floats((size_t)N * K);
    float *whole = malloc(sizeof(float) * (M + PAD) * N), *part = malloc(sizeof(float) * M * N);
    qe_pool *two = pool_create(2), *three = pool_create(3);
    cpu_gemm(two, x, M, K, w, N, whole, N, 0);
    const int blocks[] = {1, 7, 64, 65, 299};
    for (size_t b = 0; b < sizeof blocks / sizeof blocks[0]; b++) {
        for (int r0 = 0; r0 < M; r0 += blocks[b]) {
            const int rows = M - r0 < blocks[b] ? M - r0 : blocks[b];
            cpu_gemm(two, x + (size_t)r0 * K, rows, K, w, N, part + (size_t)r0 * N, N, 0);
        }
        cr_expect(memcmp(whole, part, sizeof(float) * M * N) == 0,
                  "rows computed %d at a time differ from one call of %d rows", blocks[b], M);
    }
    /* the same rows after PAD others, on three threads (other panel widths) */
    memmove(x + (size_t)PAD * K, x, sizeof(float) * M * K);
    for (size_t i = 0; i < (size_t)PAD * K; i++)
        x[i] = frand();
    float *shifted = malloc(sizeof(float) * (M + PAD) * N);
    cpu_gemm(three, x, M + PAD, K, w, N, shifted, N, 0);
    cr_expect(memcmp(whole, shifted + (size_t)PAD * N, sizeof(float) * M * N) == 0,
              "rows moved down by %d and split over 3 threads differ", PAD);
    pool_destroy(two), pool_destroy(three);
    free(x), free(w), free(whole), free(part), free(shifted);
}

/* An empty product leaves y alone; k = 0 gives zeros (or the old y when accumulating). */
Test(cpu_gemm, degenerate_sizes) {
    qe_pool *pool = pool_create(2);
    float x[4] = {1, 2, 3, 4}, w[4] = {1, 1, 1, 1}, y[4] = {GAP, GAP, GAP, GAP};
    cpu_gemm(pool, x, 0, 2, w, 2, y, 2, 0);
    cpu_gemm(pool, x, 2, 2, w, 0, y, 2, 0);
    for (int i = 0; i < 4; i++)
        cr_expect_eq(y[i], GAP, "y[%d] %g after an empty product", i, y[i]);
    cpu_gemm(pool, x, 2, 0, w, 2, y, 2, 0);
    for (int i = 0; i < 4; i++)
        cr_expect_eq(y[i], 0.0f, "k = 0: y[%d] %g", i, y[i]);
    pool_destroy(pool);
}

Test(cpu_gemm, names_its_library) {
    const char *name = cpu_gemm_library();
    cr_assert(name && *name);
    cr_log_info("cpu_gemm runs on: %s", name);
}

/* One part of a stacked weight: `rows` rows of k elements quantized to `type` (the bytes in
 * *store, freed by the caller), seen as the engine sees a GGUF file's tensor. */
static st_tensor quant_part(uint32_t type, int rows, int k, void **store) {
    const size_t n = (size_t)rows * k;
    float *f = random_floats(n);
    *store = malloc(ref_qtype_bytes(type, n));
    cr_assert_eq(ref_quantize(type, f, *store, (int64_t)n), 0);
    free(f);
    st_tensor t = {.name = "part", .dtype = ST_QUANT, .qtype = type, .ndim = 2};
    if (type == QT_F16) t.dtype = ST_F16;
    snprintf(t.dtype_name, sizeof t.dtype_name, "%s", ref_qtype_get(type)->name);
    t.shape[0] = rows, t.shape[1] = k;
    t.data = *store;
    t.nbytes = ref_qtype_bytes(type, n);
    return t;
}

/* Weights left in their blocks (cpu_gemm_w) give bitwise what cpu_gemm gives on the same
 * matrix dequantized: a q | k | v stack of three types with part boundaries inside a 64-row
 * chunk, for m = 1, 7, 65 and 300, accumulate off and on, on 1, 2 and 3 threads. */
Test(cpu_gemm, weights_in_blocks_equal_their_dequantized_matrix) {
    const int K = 512, rows[3] = {200, 37, 91}, N = 200 + 37 + 91;
    const uint32_t types[3] = {QT_Q4_K, QT_Q6_K, QT_F16};
    rng = 0x51ed2701u;
    void *store[3];
    st_tensor parts[3];
    cpu_weight w = {.n_parts = 3};
    float *dense = malloc(sizeof(float) * N * K);
    for (int p = 0, r0 = 0; p < 3; r0 += rows[p], p++) {
        parts[p] = quant_part(types[p], rows[p], K, &store[p]);
        w.part[p] = &parts[p];
        st_to_f32(&parts[p], dense + (size_t)r0 * K);
    }
    const int ms[4] = {1, 7, 65, 300};
    for (int threads = 1; threads <= 3; threads++) {
        qe_pool *pool = pool_create(threads);
        float *scratch = malloc(sizeof(float) * cpu_gemm_w_scratch(threads, K));
        for (int mi = 0; mi < 4; mi++) {
            for (int acc = 0; acc <= 1; acc++) {
                const int m = ms[mi];
                float *x = random_floats((size_t)m * K), *want = random_floats((size_t)m * N);
                float *got = malloc(sizeof(float) * m * N);
                memcpy(got, want, sizeof(float) * m * N);
                cpu_gemm(pool, x, m, K, dense, N, want, N, acc);
                cpu_gemm_w(pool, x, m, K, &w, N, got, N, acc, scratch);
                cr_expect(memcmp(want, got, sizeof(float) * m * N) == 0,
                          "m %d, accumulate %d, %d threads: blocks differ from their matrix", m,
                          acc, threads);
                free(x), free(want), free(got);
            }
        }
        free(scratch);
        pool_destroy(pool);
    }
    for (int p = 0; p < 3; p++)
        free(store[p]);
    free(dense);
}
