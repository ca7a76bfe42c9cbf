/* bench_qgemm.c — the quantized GEMM (variant 0 = kernels/qgemm.cu) against the bf16 cuBLASLt GEMM
 * (kernels/gemm.cu) on Qwen3-4B's four linear layers (qkv, o, gate_up, down) at M = 1, 24, 512
 * and 4096 tokens, for Q8_0, Q4_K and Q6_K. Each case is first checked against ref_dequantize on
 * a sample of outputs (sampled tokens x rows, double-precision dot products), then timed with
 * CUDA events (warm-up, median). The weights rotate over enough copies to exceed the 50 MB L2, so
 * the skinny cases read HBM as a real forward does. Printed: median time, the speed-up over bf16,
 * TFLOP/s (2 M N K / t) and GB/s (weight bytes + x + y + the split-K partials, written and read
 * back) with its share of the 4.8 TB/s HBM3e roofline of an H200. For M > 32 each type also runs
 * variant 1, "+deq": qe_qdequant_bf16 into a bf16 scratch, then the cuBLASLt GEMM (its bytes
 * count the scratch written and read).
 * Usage: bench_qgemm [--reps N] [--m M] (one M instead of all four) */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/ref/ref_qpack.h"
#include "kernels/ref/ref_quant.h"
#include "bench_util.h"

#define ROOFLINE_GBS 4800.0
#define ROTATE_BYTES ((size_t)256 << 20) /* > 5x the H200's L2 */
#define MAX_COPIES 16
#define WS_BYTES ((size_t)32 << 20)

typedef struct shape {
    const char *name;
    int n, k, y_f32; /* y_f32: o and down accumulate into the fp32 residual */
} shape;
static const shape SHAPES[] = {{"qkv", 6144, 2560, 0},
                               {"o", 2560, 4096, 1},
                               {"gate_up", 19456, 2560, 0},
                               {"down", 2560, 9728, 1}};
static const int MS[] = {1, 24, 512, 4096};
static const int TYPES[] = {QT_Q8_0, QT_Q4_K, QT_Q6_K};

typedef struct weights {
    int type; /* QT_BF16 for the cuBLASLt baseline */
    int copies;
    size_t bytes; /* of one copy */
    void *d[MAX_COPIES];
    float *deq; /* host: the dequantized first copy, for the check */
} weights;

static void *dev_alloc(size_t n) {
    void *d;
    CHECK(cudaMalloc(&d, n));
    return d;
}

/* n x k random weights of `type`, uploaded `copies` times (packed for the quantized types). */
static weights make_weights(int type, int n, int k) {
    weights w = {.type = type};
    const size_t ne = (size_t)n * k;
    float *src = malloc(ne * 4);
    w.deq = malloc(ne * 4);
    for (size_t i = 0; i < ne; i++)
        src[i] = frand(1.0f);
    void *host;
    if (type == QT_BF16) {
        uint16_t *b = malloc(ne * 2);
        for (size_t i = 0; i < ne; i++) {
            b[i] = st_f32_to_bf16(src[i]);
            w.deq[i] = st_bf16_to_f32(b[i]);
        }
        host = b, w.bytes = ne * 2;
    } else {
        const ref_qtype_info *t = ref_qtype_get((uint32_t)type);
        uint8_t *blocks = malloc(ne / t->block * t->block_bytes);
        if (ref_quantize((uint32_t)type, src, blocks, (int64_t)ne) ||
            ref_dequantize((uint32_t)type, blocks, w.deq, (int64_t)ne)) {
            fprintf(stderr, "bench_qgemm: cannot quantize %s\n", t->name);
            exit(1);
        }
        w.bytes = (size_t)n * qp_row_bytes((uint32_t)type, k);
        host = malloc(w.bytes);
        ref_qpack_rows((uint32_t)type, blocks, n, k, host);
        free(blocks);
    }
    w.copies = (int)(ROTATE_BYTES / w.bytes) + 1;
    if (w.copies > MAX_COPIES) w.copies = MAX_COPIES;
    for (int c = 0; c < w.copies; c++) {
        w.d[c] = dev_alloc(w.bytes);
        CHECK(cudaMemcpy(w.d[c], host, w.bytes, cudaMemcpyHostToDevice));
    }
    free(host);
    free(src);
    return w;
}
static void free_weights(weights *w) {
    for (int c = 0; c < w->copies; c++)
        CHECK(cudaFree(w->d[c]));
    free(w->deq);
}

/* Variant 1 for the quantized types (prefill): dequantize to this bf16 scratch, then cuBLASLt. */
static void *g_scratch;
static int g_variant;

static void run(const weights *w, int copy, qe_gemm *g, const void *x, int m, const shape *s,
                void *y, int accumulate, void *ws) {
    if (w->type != QT_BF16 && g_variant == 1) {
        KCHECK(qe_qdequant_bf16(w->d[copy], w->type, s->n, s->k, g_scratch, NULL));
        KCHECK(qe_gemm_bf16(g, x, s->k, m, s->k, g_scratch, s->n, y, s->n, s->y_f32, accumulate,
                            NULL));
    } else if (w->type == QT_BF16)
        KCHECK(qe_gemm_bf16(g, x, s->k, m, s->k, w->d[copy], s->n, y, s->n, s->y_f32, accumulate,
                            NULL));
    else
        KCHECK(qe_qgemm(x, s->k, m, s->k, w->d[copy], w->type, s->n, y, s->n, s->y_f32, accumulate,
                        ws, WS_BYTES, NULL));
}

/* Worst |got - want| / tol over 64 sampled tokens x rows (fp32 y, no accumulate): the weights
 * rounded to bf16 as the kernels multiply them, the bound of test_kernels.c. */
static double check(const weights *w, qe_gemm *g, const float *xf, const void *x, int m,
                    const shape *s, void *ws) {
    shape s32 = *s;
    s32.y_f32 = 1;
    float *d_y = dev_alloc((size_t)m * s->n * 4);
    CHECK(cudaMemset(d_y, 0xFF, (size_t)m * s->n * 4));
    run(w, 0, g, x, m, &s32, d_y, 0, ws);
    CHECK(cudaDeviceSynchronize());
    double worst = 0;
    for (int i = 0; i < 64; i++) {
        const int t = (int)((unsigned)(i * 2654435761u) % (unsigned)m);
        const int r = (int)((unsigned)(i * 40503u + 17) % (unsigned)s->n);
        float got;
        CHECK(cudaMemcpy(&got, d_y + (size_t)t * s->n + r, 4, cudaMemcpyDeviceToHost));
        double a = 0, b = 0;
        for (int k = 0; k < s->k; k++) {
            const double wv = st_bf16_to_f32(st_f32_to_bf16(w->deq[(size_t)r * s->k + k]));
            const double p = (double)xf[(size_t)t * s->k + k] * wv;
            a += p, b += fabs(p);
        }
        const double tol = s->k * ldexp(1.0, -23) * b + 1e-30;
        const double q = isnan(got) ? INFINITY : fabs(got - a) / tol;
        if (q > worst) worst = q;
    }
    CHECK(cudaFree(d_y));
    return worst;
}

static float time_case(const weights *w, qe_gemm *g, const void *x, int m, const shape *s, void *y,
                       void *ws, int reps) {
    cudaEvent_t e0, e1;
    CHECK(cudaEventCreate(&e0));
    CHECK(cudaEventCreate(&e1));
    for (int i = 0; i < 3; i++)
        run(w, i % w->copies, g, x, m, s, y, s->y_f32, ws);
    float *ms = malloc((size_t)reps * sizeof(float));
    for (int r = 0; r < reps; r++) {
        CHECK(cudaEventRecord(e0, NULL));
        run(w, r % w->copies, g, x, m, s, y, s->y_f32, ws);
        CHECK(cudaEventRecord(e1, NULL));
        CHECK(cudaEventSynchronize(e1));
        CHECK(cudaEventElapsedTime(&ms[r], e0, e1));
    }
    qsort(ms, (size_t)reps, sizeof(float), cmp_float);
    const float med = ms[reps / 2];
    free(ms);
    CHECK(cudaEventDestroy(e0));
    CHECK(cudaEventDestroy(e1));
    return med;
}

int main(int argc, char **argv) {
    int reps = 50, only_m = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--m") && i + 1 < argc)
            only_m = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_qgemm [--reps N] [--m M]\n");
            return 2;
        }
    }
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
        fprintf(stderr, "bench_qgemm: no CUDA device\n");
        return 0;
    }
    struct cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    printf("bench_qgemm on %s: Qwen3-4B linear layers, %d reps, roofline %.0f GB/s\n", prop.name,
           reps, ROOFLINE_GBS);
    void *gws = dev_alloc(WS_BYTES), *ws = dev_alloc(WS_BYTES);
    g_scratch = dev_alloc((size_t)19456 * 2560 * 2); /* the largest matrix, gate_up, as bf16 */
    qe_gemm *g = NULL;
    KCHECK(qe_gemm_create(&g, gws, WS_BYTES));
    const int max_m = 4096, max_k = 9728, max_n = 19456;
    uint16_t *xh = malloc((size_t)max_m * max_k * 2);
    float *xf = malloc((size_t)max_m * max_k * 4);
    for (size_t i = 0; i < (size_t)max_m * max_k; i++) {
        xh[i] = st_f32_to_bf16(frand(1.0f));
        xf[i] = st_bf16_to_f32(xh[i]);
    }
    void *d_x = dev_alloc((size_t)max_m * max_k * 2);
    void *d_y = dev_alloc((size_t)max_m * max_n * 4);
    CHECK(cudaMemset(d_y, 0, (size_t)max_m * max_n * 4));
    printf("%-8s %5s %-9s %6s %10s %8s %8s %9s %7s %6s\n", "layer", "M", "type", "splits",
           "median us", "vs bf16", "TFLOP/s", "GB/s", "% roof", "check");
    int failed = 0;
    for (size_t si = 0; si < sizeof SHAPES / sizeof SHAPES[0]; si++) {
        const shape *s = &SHAPES[si];
        weights bw = make_weights(QT_BF16, s->n, s->k);
        weights qw[3];
        for (int ti = 0; ti < 3; ti++)
            qw[ti] = make_weights(TYPES[ti], s->n, s->k);
        for (size_t mi = 0; mi < sizeof MS / sizeof MS[0]; mi++) {
            const int m = MS[mi];
            if (only_m && m != only_m) continue;
            /* x rows of this K, contiguous */
            for (int t = 0; t < m; t++)
                CHECK(cudaMemcpy((uint16_t *)d_x + (size_t)t * s->k, xh + (size_t)t * max_k,
                                 (size_t)s->k * 2, cudaMemcpyHostToDevice));
            float *xk = malloc((size_t)m * s->k * 4);
            for (int t = 0; t < m; t++)
                memcpy(xk + (size_t)t * s->k, xf + (size_t)t * max_k, (size_t)s->k * 4);
            const double flop = 2.0 * m * s->n * s->k;
            const double io = (double)m * s->k * 2 + (double)m * s->n * (s->y_f32 ? 8 : 2);
            const float t_bf = time_case(&bw, g, d_x, m, s, d_y, ws, reps);
            const double cb = check(&bw, g, xk, d_x, m, s, ws);
            printf("%-8s %5d %-9s %6d %10.1f %8s %8.1f %9.0f %6.1f%% %6s\n", s->name, m, "bf16", 1,
                   t_bf * 1e3, "1.00", flop / t_bf / 1e9, (bw.bytes + io) / t_bf / 1e6,
                   100.0 * (bw.bytes + io) / t_bf / 1e6 / ROOFLINE_GBS, cb <= 1 ? "ok" : "FAIL");
            failed |= cb > 1;
            for (int ti = 0; ti < 3; ti++)
                for (g_variant = 0; g_variant < (m > 32 ? 2 : 1); g_variant++) {
                    const int splits =
                        g_variant ? 1 : qe_qgemm_splits(TYPES[ti], m, s->k, s->n, WS_BYTES);
                    const double part = splits > 1 ? 2.0 * splits * m * s->n * 4 : 0;
                    const double deq = g_variant ? 4.0 * s->n * s->k : 0; /* bf16 written, read */
                    const double bytes = qw[ti].bytes + io + part + deq;
                    const float t = time_case(&qw[ti], g, d_x, m, s, d_y, ws, reps);
                    const double c = check(&qw[ti], g, xk, d_x, m, s, ws);
                    char name[16];
                    snprintf(name, sizeof name, "%s%s", ref_qtype_get((uint32_t)TYPES[ti])->name,
                             g_variant ? "+deq" : "");
                    printf("%-8s %5d %-9s %6d %10.1f %8.2f %8.1f %9.0f %6.1f%% %6s\n", s->name, m,
                           name, splits, t * 1e3, t_bf / t, flop / t / 1e9, bytes / t / 1e6,
                           100.0 * bytes / t / 1e6 / ROOFLINE_GBS, c <= 1 ? "ok" : "FAIL");
                    failed |= c > 1;
                }
            free(xk);
        }
        free_weights(&bw);
        for (int ti = 0; ti < 3; ti++)
            free_weights(&qw[ti]);
    }
    qe_gemm_destroy(g);
    CHECK(cudaFree(d_x));
    CHECK(cudaFree(d_y));
    CHECK(cudaFree(ws));
    CHECK(cudaFree(gws));
    CHECK(cudaFree(g_scratch));
    free(xh);
    free(xf);
    if (failed) fprintf(stderr, "bench_qgemm: a check FAILED\n");
    return failed ? 1 : 0;
}
