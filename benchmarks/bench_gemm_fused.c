/* bench_gemm_fused.c — the fused GEMM epilogues (issue 15, item 3; kernels/gemm_fused.cu) against
 * what the engine runs today, at Qwen3-4B's two shapes (hidden 2560; qkv 32 + 2 x 8 heads of 128
 * = 6144 columns, gate/up 2 x 9728) for m = 512, 4096, 16384 tokens:
 *   gate_up: qe_gemm_swiglu             vs  qe_gemm_bf16 (cuBLASLt, gu in bf16) + qe_swiglu;
 *   qkv:     qe_gemm_qkv_norm_rope      vs  qe_gemm_bf16 (cuBLASLt)             + qe_qk_norm_rope.
 * Each (shape, m) first checks the fused result against the composed C reference
 * (kernels/ref/ref_gemm_fused.c) on 8 rows and three column tiles (gate/up: columns 0..63 and the
 * last 64; qkv: q head 0, k head 0, v head 0), as a relative rms error within 2^-7 (bf16 output
 * rounding is ~2^-9 rms; the element-wise bounds are tests/test_kernels.c's), then times every
 * path with CUDA events after a warm-up (median of --reps): the cuBLASLt GEMM alone, the GEMM plus
 * the separate epilogue kernel, the fused kernel; TFLOP/s count 2 m n k and are also given against
 * the H200's dense bf16 peak (989 TFLOP/s). Usage: bench_gemm_fused [--reps N]. Without a CUDA
 * device it says so and exits 0 (1 when QE_REQUIRE_GPU is set, as gpu-checks.sh does). */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/ref/ref.h"
#include "bench_util.h"

#define ROOFLINE_TFLOPS 989.0
#define WS_BYTES (32u << 20) /* what runtime/backend_cuda.c gives qe_gemm_create */
#define K_HIDDEN 2560
#define HEADS 32
#define KV_HEADS 8
#define HD 128
#define INTER 9728
#define N_QKV ((HEADS + 2 * KV_HEADS) * HD)
#define CHECK_ROWS 8

static const int MS[] = {512, 4096, 16384};

/* rms(got - want) / rms(want) over n values. */
static double rel_rms(const float *got, const float *want, size_t n) {
    double e = 0, w = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)got[i] - want[i];
        e += d * d, w += (double)want[i] * want[i];
    }
    return isnan(e) ? INFINITY : sqrt(e / (w > 0 ? w : 1));
}

static void to_float(const uint16_t *d, size_t ld, int rows, int col0, int cols, float *out) {
    uint16_t *h = malloc((size_t)rows * ld * 2);
    CHECK(cudaMemcpy(h, d, (size_t)rows * ld * 2, cudaMemcpyDeviceToHost));
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            out[(size_t)r * cols + c] = st_bf16_to_f32(h[(size_t)r * ld + col0 + c]);
    free(h);
}

/* The fused SwiGLU on CHECK_ROWS rows: output columns [c0, c0 + 64) from gate rows c0.. and up
 * rows inter + c0.. of w (host copy wf, all rows). Returns the relative rms error. */
static double check_swiglu(const float *xf, const float *wf, const uint16_t *d_act, int c0) {
    float *wsub = malloc((size_t)128 * K_HIDDEN * 4), want[CHECK_ROWS * 64], got[CHECK_ROWS * 64];
    memcpy(wsub, wf + (size_t)c0 * K_HIDDEN, (size_t)64 * K_HIDDEN * 4);
    memcpy(wsub + (size_t)64 * K_HIDDEN, wf + (size_t)(INTER + c0) * K_HIDDEN,
           (size_t)64 * K_HIDDEN * 4);
    if (ref_gemm_swiglu(xf, CHECK_ROWS, K_HIDDEN, wsub, 64, want, NULL)) exit(1);
    to_float(d_act, INTER, CHECK_ROWS, c0, 64, got);
    free(wsub);
    return rel_rms(got, want, (size_t)CHECK_ROWS * 64);
}

/* The fused qkv on CHECK_ROWS rows: q head 0, k head 0 (head HEADS) and v head 0 (head HEADS +
 * KV_HEADS) through the reference of a model with one head each. */
static double check_qkv(const float *xf, const float *wf, const uint16_t *d_qkv, const int32_t *pos,
                        const float *qw, const float *kw) {
    const int heads[3] = {0, HEADS, HEADS + KV_HEADS};
    float *wsub = malloc((size_t)3 * HD * K_HIDDEN * 4), want[CHECK_ROWS * 3 * HD],
          got[CHECK_ROWS * 3 * HD], part[CHECK_ROWS * HD];
    for (int h = 0; h < 3; h++)
        memcpy(wsub + (size_t)h * HD * K_HIDDEN, wf + (size_t)heads[h] * HD * K_HIDDEN,
               (size_t)HD * K_HIDDEN * 4);
    ref_gemm_qkv_norm_rope(xf, CHECK_ROWS, K_HIDDEN, wsub, 1, 1, HD, pos, qw, kw, 1e-6f, 1e6, want,
                           NULL);
    for (int h = 0; h < 3; h++) {
        to_float(d_qkv, N_QKV, CHECK_ROWS, heads[h] * HD, HD, part);
        for (int r = 0; r < CHECK_ROWS; r++)
            memcpy(got + (size_t)r * 3 * HD + h * HD, part + (size_t)r * HD, HD * 4);
    }
    free(wsub);
    return rel_rms(got, want, (size_t)CHECK_ROWS * 3 * HD);
}

typedef enum { P_GEMM, P_SEPARATE, P_FUSED } path;
static const char *const PATH_NAMES[] = {"cublaslt gemm", "gemm + epilogue", "fused"};

typedef struct bufs {
    qe_gemm *g;
    const uint16_t *x, *w_gu, *w_qkv;
    uint16_t *gu, *act, *qkv;
    const int32_t *pos;
    const float *qw, *kw;
} bufs;

static void run_path(const bufs *b, int qkv, path p, int m) {
    if (qkv) {
        if (p == P_FUSED) {
            KCHECK(qe_gemm_qkv_norm_rope(b->x, K_HIDDEN, m, K_HIDDEN, b->w_qkv, HEADS, KV_HEADS, HD,
                                         b->pos, b->qw, b->kw, 1e-6f, 1e6, b->qkv, NULL));
            return;
        }
        KCHECK(qe_gemm_bf16(b->g, b->x, K_HIDDEN, m, K_HIDDEN, b->w_qkv, N_QKV, b->qkv, N_QKV, 0, 0,
                            NULL));
        if (p == P_SEPARATE)
            KCHECK(qe_qk_norm_rope(b->qkv, m, HEADS, KV_HEADS, HD, b->pos, b->qw, b->kw, 1e-6f, 1e6,
                                   NULL));
        return;
    }
    if (p == P_FUSED) {
        KCHECK(qe_gemm_swiglu(b->x, K_HIDDEN, m, K_HIDDEN, b->w_gu, INTER, b->act, NULL));
        return;
    }
    KCHECK(qe_gemm_bf16(b->g, b->x, K_HIDDEN, m, K_HIDDEN, b->w_gu, 2 * INTER, b->gu, 2 * INTER, 0,
                        0, NULL));
    if (p == P_SEPARATE) KCHECK(qe_swiglu(b->gu, m, INTER, b->act, NULL));
}

static uint16_t *upload_rand(size_t n, float a, float *keep) {
    uint16_t *h = malloc(n * 2), *d;
    for (size_t i = 0; i < n; i++) {
        h[i] = st_f32_to_bf16(frand(a));
        if (keep) keep[i] = st_bf16_to_f32(h[i]);
    }
    CHECK(cudaMalloc((void **)&d, n * 2));
    CHECK(cudaMemcpy(d, h, n * 2, cudaMemcpyHostToDevice));
    free(h);
    return d;
}

int main(int argc, char **argv) {
    int reps = 20;
    for (int i = 1; i + 1 < argc; i += 2)
        if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
    if (reps < 1) reps = 1;
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
        fprintf(stderr, "bench_gemm_fused: no CUDA device\n");
        return getenv("QE_REQUIRE_GPU") ? 1 : 0;
    }
    struct cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    printf("bench_gemm_fused on %s: Qwen3-4B qkv and gate/up, %d reps; roofline %.0f TFLOP/s\n",
           prop.name, reps, ROOFLINE_TFLOPS);
    const int m_max = MS[sizeof MS / sizeof MS[0] - 1];
    float *xf = malloc((size_t)CHECK_ROWS * K_HIDDEN * 4);
    float *wf_gu = malloc((size_t)2 * INTER * K_HIDDEN * 4);
    float *wf_qkv = malloc((size_t)N_QKV * K_HIDDEN * 4);
    /* x's first rows are kept for the check; the rest of x is random as well */
    uint16_t *d_x = upload_rand((size_t)m_max * K_HIDDEN, 1.0f, NULL);
    {
        uint16_t *h = malloc((size_t)CHECK_ROWS * K_HIDDEN * 2);
        CHECK(cudaMemcpy(h, d_x, (size_t)CHECK_ROWS * K_HIDDEN * 2, cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < (size_t)CHECK_ROWS * K_HIDDEN; i++)
            xf[i] = st_bf16_to_f32(h[i]);
        free(h);
    }
    bufs b;
    memset(&b, 0, sizeof b);
    b.x = d_x;
    b.w_gu = upload_rand((size_t)2 * INTER * K_HIDDEN, 0.05f, wf_gu);
    b.w_qkv = upload_rand((size_t)N_QKV * K_HIDDEN, 0.05f, wf_qkv);
    CHECK(cudaMalloc((void **)&b.gu, (size_t)m_max * 2 * INTER * 2));
    CHECK(cudaMalloc((void **)&b.act, (size_t)m_max * INTER * 2));
    CHECK(cudaMalloc((void **)&b.qkv, (size_t)m_max * N_QKV * 2));
    int32_t *pos = malloc((size_t)m_max * 4);
    for (int t = 0; t < m_max; t++)
        pos[t] = t % 4096;
    float qw[HD], kw[HD];
    for (int i = 0; i < HD; i++)
        qw[i] = 0.5f + frand(0.5f), kw[i] = 0.5f + frand(0.5f);
    int32_t *d_pos;
    float *d_qw, *d_kw;
    CHECK(cudaMalloc((void **)&d_pos, (size_t)m_max * 4));
    CHECK(cudaMemcpy(d_pos, pos, (size_t)m_max * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMalloc((void **)&d_qw, sizeof qw));
    CHECK(cudaMalloc((void **)&d_kw, sizeof kw));
    CHECK(cudaMemcpy(d_qw, qw, sizeof qw, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(d_kw, kw, sizeof kw, cudaMemcpyHostToDevice));
    b.pos = d_pos, b.qw = d_qw, b.kw = d_kw;
    void *d_ws;
    CHECK(cudaMalloc(&d_ws, WS_BYTES));
    KCHECK(qe_gemm_create(&b.g, d_ws, WS_BYTES));
    cudaEvent_t e0, e1;
    CHECK(cudaEventCreate(&e0));
    CHECK(cudaEventCreate(&e1));
    float *ms = malloc(sizeof(float) * (size_t)reps);

    int ok = 1;
    printf("%-8s %6s %6s %-16s %9s %9s %7s %s\n", "shape", "m", "n", "path", "median us", "TFLOP/s",
           "% roof", "check (rel rms)");
    for (int qkv = 0; qkv < 2; qkv++) {
        const int n = qkv ? N_QKV : 2 * INTER;
        for (size_t mi = 0; mi < sizeof MS / sizeof MS[0]; mi++) {
            const int m = MS[mi];
            CHECK(cudaMemset(qkv ? (void *)b.qkv : (void *)b.act, 0xFF,
                             (size_t)m * (qkv ? N_QKV : INTER) * 2));
            run_path(&b, qkv, P_FUSED, m);
            CHECK(cudaDeviceSynchronize());
            const double q = qkv ? check_qkv(xf, wf_qkv, b.qkv, pos, qw, kw)
                                 : fmax(check_swiglu(xf, wf_gu, b.act, 0),
                                        check_swiglu(xf, wf_gu, b.act, INTER - 64));
            ok &= q <= ldexp(1.0, -7);
            for (int p = 0; p < 3; p++) {
                for (int r = -3; r < reps; r++) { /* 3 warm-up calls */
                    CHECK(cudaEventRecord(e0, NULL));
                    run_path(&b, qkv, (path)p, m);
                    CHECK(cudaEventRecord(e1, NULL));
                    CHECK(cudaEventSynchronize(e1));
                    if (r >= 0) CHECK(cudaEventElapsedTime(&ms[r], e0, e1));
                }
                qsort(ms, (size_t)reps, sizeof *ms, cmp_float);
                const double sec = ms[reps / 2] * 1e-3;
                const double tflops = 2.0 * m * n * K_HIDDEN / sec / 1e12;
                printf("%-8s %6d %6d %-16s %9.1f %9.1f %6.1f%%", qkv ? "qkv" : "gate_up", m, n,
                       PATH_NAMES[p], sec * 1e6, tflops, 100.0 * tflops / ROOFLINE_TFLOPS);
                if (p == P_FUSED) printf(" %.2e %s", q, q <= ldexp(1.0, -7) ? "ok" : "FAIL");
                printf("\n");
            }
        }
    }
    qe_gemm_destroy(b.g);
    printf("bench_gemm_fused: checks %s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
