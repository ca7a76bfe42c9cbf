/* bench_util.h — what the kernel benchmarks share: exit-on-error checks (a benchmark is a tool,
 * so it may exit), seeded random inputs, bf16 conversion, float sorting for medians. */
#ifndef QE_BENCH_UTIL_H
#define QE_BENCH_UTIL_H
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "weights/safetensors.h"

#define CHECK(call)                                                                                \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s failed: %s (%s:%d)\n", #call, cudaGetErrorName(e_), __FILE__,      \
                    __LINE__);                                                                     \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)
#define KCHECK(call)                                                                               \
    do {                                                                                           \
        if ((call) != QE_K_OK) {                                                                   \
            fprintf(stderr, "%s failed: %s\n", #call, qe_k_last_error());                          \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static uint64_t rng = 0x1234567; /* xorshift state: fixed, so runs compare */
static float frand(float a) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0) * a;
}
static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

#endif
