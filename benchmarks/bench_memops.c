/* bench_memops.c — the memory-bound kernels (variant 0 = the production kernels of kernels/):
 * add_rmsnorm, qk_norm_rope, swiglu, embed_gather on the 4B geometry at 16384 tokens. Each is
 * checked against its C reference on a slice of rows first (rows are independent), then timed
 * with CUDA events after a warm-up (median of many) and reported in GB/s against the 2.94 TB/s
 * device-to-device copy measured on the H100 (docs/DEVICE.md). Bytes = each input read once plus
 * each output written once.
 * Usage: bench_memops [--tokens T] [--reps N] */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/ref/ref.h"
#include "bench_util.h"

#define CEILING_GBS 2940.0
static void *dev_copy(const void *h, size_t n) {
    void *d;
    CHECK(cudaMalloc(&d, n));
    CHECK(cudaMemcpy(d, h, n, cudaMemcpyHostToDevice));
    return d;
}
static void *dev_poisoned(size_t n) {
    void *d;
    CHECK(cudaMalloc(&d, n));
    CHECK(cudaMemset(d, 0xFF, n));
    return d;
}
static void fetch(void *h, const void *d, size_t n) {
    CHECK(cudaDeviceSynchronize());
    CHECK(cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost));
}
/* worst |got - want| / (atol + rtol |want|) over n values; NaN -> infinity */
static double worst_ratio(const float *got, const float *want, size_t n, double atol, double rtol) {
    double w = 0;
    for (size_t i = 0; i < n; i++) {
        double r = fabs((double)got[i] - want[i]) / (atol + rtol * fabs(want[i]));
        if (isnan(r)) r = INFINITY;
        if (r > w) w = r;
    }
    return w;
}

typedef enum { OP_RMSNORM, OP_ADD_RMSNORM, OP_ROPE, OP_SWIGLU, OP_EMBED } op_kind;

typedef struct ctx {
    int T, H, I, NH, NKV, V;
    float *x, *delta, *w;          /* fp32 [T,H], [T,H], [H] */
    uint16_t *hb, *qkv, *gu, *act; /* bf16 outputs / inputs */
    int32_t *pos, *tok;
    float *qw, *kw, *xe;
    uint16_t *table;
} ctx;

static void run_op(const ctx *c, op_kind op) {
    switch (op) {
    case OP_RMSNORM:
        KCHECK(qe_add_rmsnorm(c->x, NULL, c->w, c->T, c->H, 1e-6f, c->hb, NULL));
        break;
    case OP_ADD_RMSNORM:
        KCHECK(qe_add_rmsnorm(c->x, c->delta, c->w, c->T, c->H, 1e-6f, c->hb, NULL));
        break;
    case OP_ROPE:
        KCHECK(qe_qk_norm_rope(c->qkv, c->T, c->NH, c->NKV, 128, c->pos, c->qw, c->kw, 1e-6f, 1e6,
                               NULL));
        break;
    case OP_SWIGLU:
        KCHECK(qe_swiglu(c->gu, c->T, c->I, c->act, NULL));
        break;
    case OP_EMBED:
        KCHECK(qe_embed_gather(c->table, c->V, c->H, c->tok, c->T, c->xe, NULL));
        break;
    }
}

static double bytes_of(const ctx *c, op_kind op) {
    const double T = c->T, H = c->H;
    switch (op) {
    case OP_RMSNORM:
        return T * H * (4 + 2);
    case OP_ADD_RMSNORM:
        return T * H * (4 + 4 + 4 + 2);
    case OP_ROPE:
        return T * (c->NH + c->NKV) * 128.0 * 2 * 2;
    case OP_SWIGLU:
        return T * c->I * (4.0 + 2.0);
    case OP_EMBED:
        return T * H * (2 + 4);
    }
    return 0;
}

int main(int argc, char **argv) {
    int T = 16384, reps = 50;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--tokens"))
            T = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps"))
            reps = atoi(argv[i + 1]);
    }
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
        fprintf(stderr, "bench_memops: no CUDA device\n");
        return 1;
    }
    struct cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    ctx c = {.T = T, .H = 2560, .I = 9728, .NH = 32, .NKV = 8, .V = 151665};
    const int row = (c.NH + 2 * c.NKV) * 128;
    const size_t TH = (size_t)T * c.H;
    printf("bench_memops on %s: 4B geometry, %d tokens, %d reps; ceiling %.0f GB/s\n", prop.name, T,
           reps, CEILING_GBS);

    /* host inputs (random, never zeros) */
    float *x = malloc(TH * 4), *delta = malloc(TH * 4), *w = malloc((size_t)c.H * 4);
    for (size_t i = 0; i < TH; i++)
        x[i] = frand(3.0f), delta[i] = frand(1.0f);
    for (int i = 0; i < c.H; i++)
        w[i] = 0.5f + frand(0.4f);
    uint16_t *qkv = malloc((size_t)T * row * 2), *gu = malloc((size_t)T * 2 * c.I * 2);
    for (size_t i = 0; i < (size_t)T * row; i++)
        qkv[i] = st_f32_to_bf16(frand(2.0f));
    for (size_t i = 0; i < (size_t)T * 2 * c.I; i++)
        gu[i] = st_f32_to_bf16(frand(4.0f));
    int32_t *pos = malloc((size_t)T * 4), *tok = malloc((size_t)T * 4);
    for (int t = 0; t < T; t++)
        pos[t] = t % 4096,
        tok[t] = (int32_t)((unsigned)(frand(1.0f) * 1e9f + 2e9f) % (unsigned)c.V);
    float qw[128], kw[128];
    for (int i = 0; i < 128; i++)
        qw[i] = 0.5f + frand(0.5f), kw[i] = 0.5f + frand(0.5f);
    uint16_t *table = malloc((size_t)c.V * c.H * 2);
    for (size_t i = 0; i < (size_t)c.V * c.H; i++)
        table[i] = st_f32_to_bf16(frand(1.0f));

    c.x = dev_copy(x, TH * 4), c.delta = dev_copy(delta, TH * 4),
    c.w = dev_copy(w, (size_t)c.H * 4);
    c.hb = dev_poisoned(TH * 2);
    c.qkv = dev_copy(qkv, (size_t)T * row * 2);
    c.gu = dev_copy(gu, (size_t)T * 2 * c.I * 2), c.act = dev_poisoned((size_t)T * c.I * 2);
    c.pos = dev_copy(pos, (size_t)T * 4), c.tok = dev_copy(tok, (size_t)T * 4);
    c.qw = dev_copy(qw, sizeof qw), c.kw = dev_copy(kw, sizeof kw);
    c.table = dev_copy(table, (size_t)c.V * c.H * 2), c.xe = dev_poisoned(TH * 4);

    /* ---- checks on the first R rows against the references (before any timing) ---- */
    const int R = T < 64 ? T : 64;
    int ok = 1;
    {
        float *want = malloc((size_t)R * c.H * 4), *got = malloc((size_t)R * c.H * 4);
        uint16_t *hb = malloc((size_t)R * c.H * 2);
        float *xr = malloc((size_t)R * c.H * 4);
        memcpy(xr, x, (size_t)R * c.H * 4);
        run_op(&c, OP_RMSNORM);
        fetch(hb, c.hb, (size_t)R * c.H * 2);
        ref_rmsnorm(xr, w, R, c.H, 1e-6f, want);
        for (size_t i = 0; i < (size_t)R * c.H; i++)
            got[i] = st_bf16_to_f32(hb[i]);
        double r1 = worst_ratio(got, want, (size_t)R * c.H, 1e-3, 8e-3);
        printf("check rmsnorm       worst/tol %.3f %s\n", r1, r1 <= 1 ? "ok" : "FAIL");
        ok &= r1 <= 1;

        uint16_t *qb = malloc((size_t)R * row * 2);
        float *qf = malloc((size_t)R * row * 4), *qg = malloc((size_t)R * row * 4);
        for (size_t i = 0; i < (size_t)R * row; i++)
            qf[i] = st_bf16_to_f32(qkv[i]);
        run_op(&c, OP_ROPE);
        fetch(qb, c.qkv, (size_t)R * row * 2);
        ref_qk_norm_rope(qf, R, c.NH, c.NKV, 128, pos, qw, kw, 1e-6f, 1e6);
        for (size_t i = 0; i < (size_t)R * row; i++)
            qg[i] = st_bf16_to_f32(qb[i]);
        double r2 = worst_ratio(qg, qf, (size_t)R * row, 1.6e-2, 8e-3);
        printf("check qk_norm_rope  worst/tol %.3f %s\n", r2, r2 <= 1 ? "ok" : "FAIL");
        ok &= r2 <= 1;
        CHECK(cudaMemcpy(c.qkv, qkv, (size_t)T * row * 2, cudaMemcpyHostToDevice));

        float *gf = malloc((size_t)R * 2 * c.I * 4), *sw = malloc((size_t)R * c.I * 4);
        float *sg = malloc((size_t)R * c.I * 4);
        uint16_t *ab = malloc((size_t)R * c.I * 2);
        for (size_t i = 0; i < (size_t)R * 2 * c.I; i++)
            gf[i] = st_bf16_to_f32(gu[i]);
        run_op(&c, OP_SWIGLU);
        fetch(ab, c.act, (size_t)R * c.I * 2);
        ref_swiglu(gf, R, c.I, sw);
        for (size_t i = 0; i < (size_t)R * c.I; i++)
            sg[i] = st_bf16_to_f32(ab[i]);
        double r3 = worst_ratio(sg, sw, (size_t)R * c.I, 1e-3, 8e-3);
        printf("check swiglu        worst/tol %.3f %s\n", r3, r3 <= 1 ? "ok" : "FAIL");
        ok &= r3 <= 1;

        run_op(&c, OP_EMBED);
        fetch(got, c.xe, (size_t)R * c.H * 4);
        double r4 = 0;
        for (int t = 0; t < R; t++)
            for (int i = 0; i < c.H; i++)
                if (got[(size_t)t * c.H + i] != st_bf16_to_f32(table[(size_t)tok[t] * c.H + i]))
                    r4 = INFINITY;
        printf("check embed_gather  %s\n", r4 == 0 ? "exact ok" : "FAIL");
        ok &= r4 == 0;
        free(want), free(got), free(hb), free(xr), free(qb), free(qf), free(qg);
        free(gf), free(sw), free(sg), free(ab);
    }
    if (!ok) return 1;

    const op_kind ops[] = {OP_RMSNORM, OP_ADD_RMSNORM, OP_ROPE, OP_SWIGLU, OP_EMBED};
    const char *names[] = {"rmsnorm", "add_rmsnorm", "qk_norm_rope", "swiglu", "embed_gather"};
    printf("%-14s %10s %10s %10s %8s\n", "op", "MB moved", "median us", "GB/s", "% ceil");
    cudaEvent_t e0, e1;
    CHECK(cudaEventCreate(&e0));
    CHECK(cudaEventCreate(&e1));
    float *ms = malloc(sizeof(float) * (size_t)reps);
    for (int k = 0; k < 5; k++) {
        for (int wu = 0; wu < 5; wu++)
            run_op(&c, ops[k]);
        for (int r = 0; r < reps; r++) {
            CHECK(cudaEventRecord(e0, NULL));
            run_op(&c, ops[k]);
            CHECK(cudaEventRecord(e1, NULL));
            CHECK(cudaEventSynchronize(e1));
            CHECK(cudaEventElapsedTime(&ms[r], e0, e1));
        }
        qsort(ms, (size_t)reps, sizeof *ms, cmp_float);
        const double med = ms[reps / 2] * 1e-3, b = bytes_of(&c, ops[k]);
        printf("%-14s %10.1f %10.1f %10.0f %7.1f%%\n", names[k], b / 1e6, med * 1e6, b / med / 1e9,
               100.0 * b / med / 1e9 / CEILING_GBS);
    }
    return 0;
}
