/* bench_attention.c — the flash-attention kernels, every variant of qe_attention side by side
 * (kernels.h: 0 "fa2" = kernels/attention.cu, the production kernel; 1 "m128"; 2 "fa3"): each
 * checked against the C reference first (a whole small case, then sampled rows of every
 * timed shape against a double-precision row computation), then timed with CUDA events after a
 * warm-up, median of many, causal, head_dim 128, 32 query heads (8 kv heads, the 4B geometry),
 * L = 512 .. 32768 with L * n_seqs = max(L, 16384) tokens.
 *
 * FLOPs (causal) = 4 * L^2 / 2 * head_dim * heads per sequence (QK^T and PV, half the square).
 * Usage: bench_attention [--reps N] [--max-len L] [--kv-heads N] [--variant NAME] */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/ref/ref.h"
#include "bench_util.h"

#define HD 128

/* Random qkv rows [T, (H + 2 KV) * HD] in bf16 (q scaled so the softmax is not flat). */
static uint16_t *make_qkv(int T, int H, int KV) {
    const size_t row = (size_t)(H + 2 * KV) * HD;
    uint16_t *q = malloc((size_t)T * row * 2);
    for (size_t t = 0; t < (size_t)T; t++)
        for (size_t i = 0; i < row; i++)
            q[t * row + i] = st_f32_to_bf16(frand(i < (size_t)H * HD ? 3.0f : 1.0f));
    return q;
}

static void launch(const uint16_t *d_qkv, int H, int KV, const int32_t *d_cu, int S, int L,
                   uint16_t *d_out) {
    const int row = (H + 2 * KV) * HD;
    qe_attn_params p;
    memset(&p, 0, sizeof p);
    p.q = d_qkv, p.k = d_qkv + H * HD, p.v = d_qkv + (H + KV) * HD, p.out = d_out;
    p.q_stride = row, p.kv_stride = row, p.out_stride = H * HD;
    p.cu_seqlens_q = d_cu, p.cu_seqlens_k = d_cu, p.n_seqs = S, p.max_seqlen_q = L;
    p.heads = H, p.kv_heads = KV, p.head_dim = HD, p.scale = 1.0f / sqrtf((float)HD);
    KCHECK(qe_attention(&p, NULL));
}

/* Whole small case against ref_attention: returns the worst |diff|. */
static double check_small(void) {
    const int H = 8, KV = 2, S = 3, lens[3] = {1000, 129, 7};
    int32_t cu[4] = {0, 1000, 1129, 1136};
    const int T = cu[S], row = (H + 2 * KV) * HD;
    uint16_t *qb = make_qkv(T, H, KV);
    float *qf = malloc((size_t)T * row * 4), *want = malloc((size_t)T * H * HD * 4);
    for (size_t i = 0; i < (size_t)T * row; i++)
        qf[i] = st_bf16_to_f32(qb[i]);
    ref_attention(qf, cu, S, H, KV, HD, NULL, 0, H, want);
    uint16_t *d_qkv, *d_out, *ob = malloc((size_t)T * H * HD * 2);
    int32_t *d_cu;
    CHECK(cudaMalloc((void **)&d_qkv, (size_t)T * row * 2));
    CHECK(cudaMalloc((void **)&d_out, (size_t)T * H * HD * 2));
    CHECK(cudaMalloc((void **)&d_cu, sizeof cu));
    CHECK(cudaMemcpy(d_qkv, qb, (size_t)T * row * 2, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(d_cu, cu, sizeof cu, cudaMemcpyHostToDevice));
    CHECK(cudaMemset(d_out, 0xFF, (size_t)T * H * HD * 2));
    launch(d_qkv, H, KV, d_cu, S, lens[0], d_out);
    CHECK(cudaDeviceSynchronize());
    CHECK(cudaMemcpy(ob, d_out, (size_t)T * H * HD * 2, cudaMemcpyDeviceToHost));
    double worst = 0;
    for (size_t i = 0; i < (size_t)T * H * HD; i++) {
        double d = fabs((double)st_bf16_to_f32(ob[i]) - want[i]);
        if (isnan(d)) d = INFINITY;
        if (d > worst) worst = d;
    }
    cudaFree(d_qkv), cudaFree(d_out), cudaFree(d_cu);
    free(qb), free(qf), free(want), free(ob);
    return worst;
}

/* One output row (sequence start t0, query i, head h) in double, from the bf16 inputs. */
static double check_row(const uint16_t *qb, const uint16_t *ob, int H, int KV, int t0, int i,
                        int h) {
    const int row = (H + 2 * KV) * HD, g = h / (H / KV);
    const uint16_t *q = qb + (size_t)(t0 + i) * row + h * HD;
    double *p = malloc(sizeof(double) * (size_t)(i + 1)), mx = -INFINITY, sum = 0, acc[HD] = {0};
    for (int j = 0; j <= i; j++) {
        const uint16_t *k = qb + (size_t)(t0 + j) * row + (H + g) * HD;
        double dot = 0;
        for (int d = 0; d < HD; d++)
            dot += (double)st_bf16_to_f32(q[d]) * st_bf16_to_f32(k[d]);
        p[j] = dot / sqrt((double)HD);
        if (p[j] > mx) mx = p[j];
    }
    for (int j = 0; j <= i; j++)
        sum += (p[j] = exp(p[j] - mx));
    for (int j = 0; j <= i; j++) {
        const uint16_t *v = qb + (size_t)(t0 + j) * row + (H + KV + g) * HD;
        for (int d = 0; d < HD; d++)
            acc[d] += p[j] * st_bf16_to_f32(v[d]);
    }
    double worst = 0;
    const uint16_t *o = ob + (size_t)(t0 + i) * H * HD + h * HD;
    for (int d = 0; d < HD; d++) {
        double diff = fabs(st_bf16_to_f32(o[d]) - acc[d] / sum);
        if (isnan(diff)) diff = INFINITY;
        if (diff > worst) worst = diff;
    }
    free(p);
    return worst;
}

static int bench_variant(int v, int reps, int max_len, int H, int KV);

int main(int argc, char **argv) {
    int reps = 20, max_len = 32768, KV = 8, only = -1;
    const int H = 32;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--reps"))
            reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--max-len"))
            max_len = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--kv-heads"))
            KV = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--variant")) {
            for (int v = 0; v < QE_ATTN_VARIANTS; v++)
                if (!strcmp(argv[i + 1], qe_attention_variant_name(v))) only = v;
            if (only < 0) {
                fprintf(stderr, "bench_attention: --variant %s: no such variant\n", argv[i + 1]);
                return 2;
            }
        }
    }
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
        fprintf(stderr, "bench_attention: no CUDA device\n");
        return 1;
    }
    struct cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    printf("bench_attention on %s: causal, head_dim %d, %d q heads / %d kv heads, %d reps\n",
           prop.name, HD, H, KV, reps);
    int failed = 0;
    /* every variant of qe_attention (kernels.h), or the one --variant names, side by side */
    for (int v = 0; v < QE_ATTN_VARIANTS; v++) {
        if (only >= 0 && v != only) continue;
        qe_attention_select(v);
        failed |= bench_variant(v, reps, max_len, H, KV);
    }
    return failed;
}

/* One variant: the reference check, then the table. Returns 1 when a check failed. */
static int bench_variant(int v, int reps, int max_len, int H, int KV) {
    const char *name = qe_attention_variant_name(v);
    const double small = check_small();
    printf("variant %d (%s): reference check (lengths 1000+129+7, 8/2 heads): worst |diff| %.3g  "
           "%s\n",
           v, name, small, small < 2e-2 ? "ok" : "FAIL");
    if (!(small < 2e-2)) return 1;
    int failed = 0;
    const int lens[] = {512, 1024, 2048, 4096, 8192, 16384, 32768};
    const double sdpa[] = {355, 0, 544, 0, 632, 0, 592}; /* docs/DEVICE.md, H100 */
    printf("%8s %8s %6s %10s %10s %10s %12s %10s\n", "variant", "L", "seqs", "median ms", "min ms",
           "TFLOP/s", "SDPA TFLOP/s", "row check");
    for (int li = 0; li < 7 && lens[li] <= max_len; li++) {
        const int L = lens[li], S = L >= 16384 ? 1 : 16384 / L, T = L * S;
        const int row = (H + 2 * KV) * HD;
        uint16_t *qb = make_qkv(T, H, KV), *ob = malloc((size_t)T * H * HD * 2);
        int32_t *cu = malloc(sizeof(int32_t) * (size_t)(S + 1));
        for (int s = 0; s <= S; s++)
            cu[s] = s * L;
        uint16_t *d_qkv, *d_out;
        int32_t *d_cu;
        CHECK(cudaMalloc((void **)&d_qkv, (size_t)T * row * 2));
        CHECK(cudaMalloc((void **)&d_out, (size_t)T * H * HD * 2));
        CHECK(cudaMalloc((void **)&d_cu, sizeof(int32_t) * (size_t)(S + 1)));
        CHECK(cudaMemcpy(d_qkv, qb, (size_t)T * row * 2, cudaMemcpyHostToDevice));
        CHECK(cudaMemcpy(d_cu, cu, sizeof(int32_t) * (size_t)(S + 1), cudaMemcpyHostToDevice));
        CHECK(cudaMemset(d_out, 0xFF, (size_t)T * H * HD * 2));
        launch(d_qkv, H, KV, d_cu, S, L, d_out);
        CHECK(cudaDeviceSynchronize());
        CHECK(cudaMemcpy(ob, d_out, (size_t)T * H * HD * 2, cudaMemcpyDeviceToHost));
        /* sampled rows: first, last, and spread positions of the first and last sequence */
        double worst = 0;
        const int rows_i[] = {0, 1, 63, 64, L / 2 + 3, L - 1};
        const int heads_h[] = {0, H - 1, H / 2 + 1};
        for (int a = 0; a < 6; a++)
            for (int b = 0; b < 3; b++) {
                double w1 = check_row(qb, ob, H, KV, 0, rows_i[a], heads_h[b]);
                double w2 = check_row(qb, ob, H, KV, (S - 1) * L, rows_i[a], heads_h[b]);
                if (w1 > worst) worst = w1;
                if (w2 > worst) worst = w2;
            }

        cudaEvent_t e0, e1;
        CHECK(cudaEventCreate(&e0));
        CHECK(cudaEventCreate(&e1));
        for (int w = 0; w < 3; w++)
            launch(d_qkv, H, KV, d_cu, S, L, d_out);
        float *ms = malloc(sizeof(float) * (size_t)reps);
        for (int r = 0; r < reps; r++) {
            CHECK(cudaEventRecord(e0, NULL));
            launch(d_qkv, H, KV, d_cu, S, L, d_out);
            CHECK(cudaEventRecord(e1, NULL));
            CHECK(cudaEventSynchronize(e1));
            CHECK(cudaEventElapsedTime(&ms[r], e0, e1));
        }
        qsort(ms, (size_t)reps, sizeof *ms, cmp_float);
        const double med = ms[reps / 2];
        const double flops = 4.0 * (double)L * L / 2.0 * HD * H * S;
        char sd[16] = "-";
        if (sdpa[li] > 0) snprintf(sd, sizeof sd, "%.0f", sdpa[li]);
        printf("%8s %8d %6d %10.3f %10.3f %10.1f %12s %10s\n", name, L, S, med, ms[0],
               flops / (med * 1e-3) / 1e12, sd, worst < 2e-2 ? "ok" : "FAIL");
        if (!(worst < 2e-2)) {
            fprintf(stderr, "%s, L %d: sampled-row worst |diff| %.3g\n", name, L, worst);
            failed = 1;
        }
        cudaEventDestroy(e0), cudaEventDestroy(e1);
        cudaFree(d_qkv), cudaFree(d_out), cudaFree(d_cu);
        free(qb), free(ob), free(cu), free(ms);
    }
    return failed;
}
