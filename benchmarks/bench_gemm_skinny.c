/* bench_gemm_skinny.c — the linear layers of a short query step (issue 15, item 4): Qwen3-4B's
 * four GEMM shapes (qkv 2560 -> 6144, o 4096 -> 2560, gate/up 2560 -> 19456, down 9728 -> 2560,
 * with the output dtype and accumulate of runtime/backend_cuda.c) at m = 1, 8, 24, 32 tokens,
 * through qe_gemm_bf16's two paths: 0 cublaslt and 1 skinny (gemm_skinny.cu). Each (shape, m) is
 * checked on both paths against the C reference on 64 output columns first, then timed with CUDA
 * events after a warm-up (median of --reps). The weights rotate through copies filling 256 MB so
 * no call finds them in the 60 MB L2; bytes = the weights read once (x and y are < 2% at m = 32),
 * reported in GB/s and as a share of the H200's 4.8 TB/s (4.3 TB/s is its measured copy).
 * Usage: bench_gemm_skinny [--reps N]. Without a CUDA device it says so and exits 0 (1 when
 * QE_REQUIRE_GPU is set, as gpu-checks.sh does). */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/ref/ref.h"
#include "bench_util.h"

#define ROOFLINE_GBS 4800.0
#define POOL_BYTES (256u << 20)
#define WS_BYTES (32u << 20) /* what runtime/backend_cuda.c gives qe_gemm_create */
#define CHECK_COLS 64

typedef struct shape {
    const char *name;
    int k, n, y_f32, accumulate;
} shape;

static const shape SHAPES[] = {{"qkv", 2560, 6144, 0, 0},
                               {"o", 4096, 2560, 1, 1},
                               {"gate_up", 2560, 19456, 0, 0},
                               {"down", 9728, 2560, 1, 1}};
static const int MS[] = {1, 8, 24, 32};

/* Worst |got - want| over the bound of tests/test_kernels.c's gemm tests (fp32 summation plus the
 * bf16 rounding of y) on columns [0, CHECK_COLS) of every row; NaN is infinity. */
static double check_path(qe_gemm *g, const shape *s, int m, const uint16_t *d_x, const float *xf,
                         const uint16_t *d_w, const float *wf, void *d_y, const float *y0) {
    const size_t cells = (size_t)m * s->n;
    if (s->accumulate)
        CHECK(cudaMemcpy(d_y, y0, cells * 4, cudaMemcpyHostToDevice));
    else
        CHECK(cudaMemset(d_y, 0xFF, cells * 4));
    KCHECK(
        qe_gemm_bf16(g, d_x, s->k, m, s->k, d_w, s->n, d_y, s->n, s->y_f32, s->accumulate, NULL));
    CHECK(cudaDeviceSynchronize());
    float *got = malloc(cells * 4);
    if (s->y_f32) {
        CHECK(cudaMemcpy(got, d_y, cells * 4, cudaMemcpyDeviceToHost));
    } else {
        uint16_t *yb = malloc(cells * 2);
        CHECK(cudaMemcpy(yb, d_y, cells * 2, cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < cells; i++)
            got[i] = st_bf16_to_f32(yb[i]);
        free(yb);
    }
    float want[CHECK_COLS];
    double worst = 0;
    for (int r = 0; r < m; r++) {
        for (int c = 0; c < CHECK_COLS; c++)
            want[c] = y0[(size_t)r * s->n + c];
        ref_matmul(xf + (size_t)r * s->k, 1, s->k, wf, CHECK_COLS, want, CHECK_COLS, s->accumulate);
        for (int c = 0; c < CHECK_COLS; c++) {
            double sum_abs = 0;
            for (int k = 0; k < s->k; k++)
                sum_abs += fabs((double)xf[(size_t)r * s->k + k] * wf[(size_t)c * s->k + k]);
            const double tol =
                s->k * ldexp(1.0, -23) * sum_abs + 1e-6 + (s->y_f32 ? 0 : 8e-3 * fabs(want[c]));
            double q = fabs((double)got[(size_t)r * s->n + c] - want[c]) / tol;
            if (isnan(q)) q = INFINITY;
            if (q > worst) worst = q;
        }
    }
    free(got);
    return worst;
}

int main(int argc, char **argv) {
    int reps = 30;
    for (int i = 1; i + 1 < argc; i += 2)
        if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
    if (reps < 1) reps = 1;
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
        fprintf(stderr, "bench_gemm_skinny: no CUDA device\n");
        return getenv("QE_REQUIRE_GPU") ? 1 : 0;
    }
    struct cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    printf("bench_gemm_skinny on %s: Qwen3-4B linear layers, %d reps; roofline %.0f GB/s\n",
           prop.name, reps, ROOFLINE_GBS);

    /* one pool of random bf16 weights; shape s's copies are consecutive slices of it */
    const size_t pool_elems = POOL_BYTES / 2;
    uint16_t *hw = malloc((size_t)32 << 20); /* 32 MB of random values, repeated over the pool */
    for (size_t i = 0; i < ((size_t)16 << 20); i++)
        hw[i] = st_f32_to_bf16(frand(1.0f));
    uint16_t *d_pool;
    CHECK(cudaMalloc((void **)&d_pool, POOL_BYTES));
    for (size_t off = 0; off < pool_elems; off += (size_t)16 << 20)
        CHECK(cudaMemcpy(d_pool + off, hw, (size_t)32 << 20, cudaMemcpyHostToDevice));
    const int k_max = 9728, n_max = 19456;
    uint16_t *hx = malloc((size_t)32 * k_max * 2);
    float *xf = malloc((size_t)32 * k_max * 4), *y0 = malloc((size_t)32 * n_max * 4);
    for (size_t i = 0; i < (size_t)32 * k_max; i++)
        hx[i] = st_f32_to_bf16(frand(1.0f)), xf[i] = st_bf16_to_f32(hx[i]);
    for (size_t i = 0; i < (size_t)32 * n_max; i++)
        y0[i] = frand(2.0f);
    uint16_t *d_x;
    void *d_y, *d_ws;
    CHECK(cudaMalloc((void **)&d_x, (size_t)32 * k_max * 2));
    CHECK(cudaMemcpy(d_x, hx, (size_t)32 * k_max * 2, cudaMemcpyHostToDevice));
    CHECK(cudaMalloc(&d_y, (size_t)32 * n_max * 4));
    CHECK(cudaMalloc(&d_ws, WS_BYTES));
    qe_gemm *g = NULL;
    KCHECK(qe_gemm_create(&g, d_ws, WS_BYTES));
    cudaEvent_t e0, e1;
    CHECK(cudaEventCreate(&e0));
    CHECK(cudaEventCreate(&e1));
    float *ms = malloc(sizeof(float) * (size_t)reps);

    int ok = 1;
    printf("%-8s %5s %6s %3s %-9s %9s %10s %8s %9s\n", "shape", "k", "n", "m", "path", "median us",
           "GB/s", "% roof", "check");
    for (size_t si = 0; si < sizeof SHAPES / sizeof SHAPES[0]; si++) {
        const shape *s = &SHAPES[si];
        const size_t w_elems = (size_t)s->n * s->k;
        const int copies = (int)(pool_elems / w_elems);
        /* the reference's w: the first CHECK_COLS rows of copy 0 */
        float *wf = malloc((size_t)CHECK_COLS * s->k * 4);
        for (size_t i = 0; i < (size_t)CHECK_COLS * s->k; i++)
            wf[i] = st_bf16_to_f32(hw[i % ((size_t)16 << 20)]);
        for (size_t mi = 0; mi < sizeof MS / sizeof MS[0]; mi++) {
            const int m = MS[mi];
            /* fused changes no plain product (it is cuBLASLt here): the first two paths */
            for (int path = 0; path <= QE_GEMM_PATH_SKINNY; path++) {
                KCHECK(qe_gemm_select(path));
                const double q = check_path(g, s, m, d_x, xf, d_pool, wf, d_y, y0);
                ok &= q <= 1.0;
                for (int r = -3; r < reps; r++) { /* 3 warm-up calls */
                    const uint16_t *w = d_pool + (size_t)((r + 3) % copies) * w_elems;
                    CHECK(cudaEventRecord(e0, NULL));
                    KCHECK(qe_gemm_bf16(g, d_x, s->k, m, s->k, w, s->n, d_y, s->n, s->y_f32,
                                        s->accumulate, NULL));
                    CHECK(cudaEventRecord(e1, NULL));
                    CHECK(cudaEventSynchronize(e1));
                    if (r >= 0) CHECK(cudaEventElapsedTime(&ms[r], e0, e1));
                }
                qsort(ms, (size_t)reps, sizeof *ms, cmp_float);
                const double sec = ms[reps / 2] * 1e-3, gbs = w_elems * 2.0 / sec / 1e9;
                printf("%-8s %5d %6d %3d %-9s %9.1f %10.0f %7.1f%% %5.2f %s\n", s->name, s->k, s->n,
                       m, qe_gemm_path_name(path), sec * 1e6, gbs, 100.0 * gbs / ROOFLINE_GBS, q,
                       q <= 1.0 ? "ok" : "FAIL");
            }
        }
        printf("%-8s skinny: %d k slices (%s)\n", s->name,
               qe_gemm_skinny_splits(s->n, s->k, WS_BYTES),
               qe_gemm_skinny_splits(s->n, s->k, WS_BYTES) > 1 ? "fp32 partials + a second pass"
                                                               : "one pass");
        free(wf);
    }
    KCHECK(qe_gemm_select(-1));
    qe_gemm_destroy(g);
    printf("bench_gemm_skinny: checks %s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
