/* swiglu.cuh — SwiGLU's one expression, shared by swiglu.cu and the skinny GEMM's fused epilogue
 * (gemm_skinny.cu), so the two give the same bits: silu(g) * u in fp32. */
#pragma once
#include "common.cuh"

static __device__ __forceinline__ float silu_mul(float g, float u) {
    return g / (1.0f + __expf(-g)) * u;
}
