/* bench_cpu_gemm.c — the CPU backend's GEMM (runtime/cpu_gemm.c) on the four products of one
 * Qwen3-0.6B layer (qkv, o, gate|up, down) at several step sizes: first checked against
 * ref_matmul on one step, then timed (best of several passes) in GFLOP/s. The library it ran on
 * is named; build with -DQE_BLAS=OFF for the reference tiles' figures.
 *   bench_cpu_gemm [threads] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kernels/ref/ref.h"
#include "runtime/cpu_gemm.h"
#include "runtime/parallel.h"

/* (k, n) of the 0.6B layer: hidden 1024, q 2048, kv 2 x 1024, intermediate 3072. */
static const int shapes[4][2] = {{1024, 4096}, {2048, 1024}, {1024, 6144}, {3072, 1024}};
static const int steps[] = {1, 16, 64, 256, 1024, 3465};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float *random_floats(size_t n, unsigned seed) {
    float *p = malloc(sizeof(float) * n);
    for (size_t i = 0; p && i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (float)(seed >> 8) / 16777216.0f - 0.5f;
    }
    return p;
}

/* One layer's products at m tokens; returns seconds. */
static double layer(qe_pool *pool, const float *x, int m, const float *w, float *y) {
    const double t0 = now_s();
    for (int s = 0; s < 4; s++)
        cpu_gemm(pool, x, m, shapes[s][0], w, shapes[s][1], y, shapes[s][1], 0);
    return now_s() - t0;
}

int main(int argc, char **argv) {
    const int threads = argc > 1 ? atoi(argv[1]) : 2;
    const int max_m = steps[sizeof steps / sizeof steps[0] - 1];
    float *x = random_floats((size_t)max_m * 3072, 1), *w = random_floats((size_t)6144 * 3072, 2);
    float *y = malloc(sizeof(float) * (size_t)max_m * 6144);
    float *want = malloc(sizeof(float) * 64 * 6144);
    qe_pool *pool = pool_create(threads);
    if (!x || !w || !y || !want || !pool) {
        fprintf(stderr, "bench_cpu_gemm: out of memory\n");
        return 1;
    }
    /* The check: 64 rows of the widest product, relative to the largest |y|. */
    cpu_gemm(pool, x, 64, 1024, w, 6144, y, 6144, 0);
    ref_matmul(x, 64, 1024, w, 6144, want, 6144, 0);
    double worst = 0, scale = 0;
    for (size_t i = 0; i < (size_t)64 * 6144; i++) {
        worst = fmax(worst, fabs((double)y[i] - want[i]));
        scale = fmax(scale, fabs((double)want[i]));
    }
    printf("cpu_gemm on %s, %d threads; vs ref_matmul: max |diff| %.2g of max |y| %.3g\n",
           cpu_gemm_library(), threads, worst, scale);
    if (!(worst <= 1e-5 * scale)) return 1;

    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        const int m = steps[i], passes = m >= 1024 ? 3 : 10;
        double flop = 0, best = INFINITY;
        for (int s = 0; s < 4; s++)
            flop += 2.0 * m * shapes[s][0] * shapes[s][1];
        layer(pool, x, m, w, y); /* warm-up */
        for (int p = 0; p < passes; p++)
            best = fmin(best, layer(pool, x, m, w, y));
        printf("m %5d  %9.2f ms per layer  %6.1f GFLOP/s  (best of %d)\n", m, best * 1e3,
               flop / best * 1e-9, passes);
    }
    pool_destroy(pool);
    free(x), free(w), free(y), free(want);
    return 0;
}
