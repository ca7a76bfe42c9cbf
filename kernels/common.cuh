/* common.cuh — device helpers shared by the kernels: the check macros (made by the generator in
 * kernels.h), bf16 conversions, warp and block reductions, the launch macro. For the .cu files. */
#pragma once
#include <stdint.h>
#include <string.h>

#ifdef QE_EMU
#include "cuda_emu.h" /* the kernel emulator (tests/emu): these kernels compiled for the CPU */
#else
#include <cuda_bf16.h>
#include <cuda_runtime.h>
/* The one launch form both builds share: QE_LAUNCH(kernel, grid, block, smem, stream)(args...). */
#define QE_LAUNCH(kernel, grid, block, smem, stream) kernel<<<grid, block, smem, stream>>>
/* Dynamic shared memory: in a kernel, QE_DYNAMIC_SMEM(smem); declares the launch's smem bytes as
 * unsigned char smem[], 1024-byte aligned (the 128-byte swizzle's pattern repeats every 1024
 * bytes). A launch above 48 KB needs QE_ALLOW_DYNAMIC_SMEM(kernel, bytes) first (a cudaError_t);
 * a block gets at most 227 KB. The emulator has the same two (tests/emu/cuda_emu.h). */
#define QE_DYNAMIC_SMEM(name) extern __shared__ __align__(1024) unsigned char name[]
#define QE_ALLOW_DYNAMIC_SMEM(kernel, bytes)                                                       \
    cudaFuncSetAttribute((const void *)(kernel), cudaFuncAttributeMaxDynamicSharedMemorySize,      \
                         (int)(bytes))
#endif

#include "kernels.h"

#ifndef QE_EMU
#include <utility>
/* QE_LAUNCH_PDL(kernel, grid, block, smem, stream)(args...): with qe_pdl_enabled(), a launch the
 * stream's next kernel may overlap (programmatic stream serialization: cudaLaunchKernelEx), else a
 * plain one. Only for kernels that call griddep_wait (ptx.cuh) before touching global memory; the
 * emulator holds every QE_LAUNCH_PDL kernel to that. */
template <typename... P> struct qe_pdl_launch {
    void (*kernel)(P...);
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
    template <typename... A> void operator()(A &&...a) const {
        if (!qe_pdl_enabled()) {
            kernel<<<grid, block, smem, stream>>>(std::forward<A>(a)...);
            return;
        }
        cudaLaunchAttribute attr;
        memset(&attr, 0, sizeof attr);
        attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attr.val.programmaticStreamSerializationAllowed = 1;
        cudaLaunchConfig_t cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = stream;
        cfg.attrs = &attr, cfg.numAttrs = 1;
        cudaLaunchKernelEx(&cfg, kernel, std::forward<A>(a)...); /* errors: cudaGetLastError */
    }
};
template <typename... P>
static qe_pdl_launch<P...> qe_make_pdl_launch(void (*k)(P...), dim3 grid, dim3 block, size_t smem,
                                              cudaStream_t s) {
    return qe_pdl_launch<P...>{k, grid, block, smem, s};
}
#define QE_LAUNCH_PDL(kernel, grid, block, smem, stream)                                           \
    qe_make_pdl_launch(kernel, grid, block, smem, stream)
#endif

#define CUDA_CHECK(call) QE_K_CHECK_GEN("CUDA", cudaError_t, call, cudaSuccess, cudaGetErrorName)
/* After every launch: configuration errors surface here, asynchronous faults at the next sync. */
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

typedef __nv_bfloat16 bf16;
typedef __nv_bfloat162 bf16x2;

static __device__ __forceinline__ float bf16_to_f32(bf16 v) {
    return __bfloat162float(v);
}
static __device__ __forceinline__ bf16 f32_to_bf16(float v) {
    return __float2bfloat16_rn(v);
}

/* Sum over the 32 lanes; every lane gets the result. */
static __device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

static __device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
 * Uses 33 floats of shared memory passed in by the caller; safe to call repeatedly. */
static __device__ __forceinline__ float block_sum(float v, float *shared33) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int n_warps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads(); /* shared33 may still be read by a previous call */
    if (lane == 0) shared33[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float t = lane < n_warps ? shared33[lane] : 0.0f;
        t = warp_sum(t);
        if (lane == 0) shared33[32] = t;
    }
    __syncthreads();
    return shared33[32];
}

static inline unsigned qe_ceil_div(long long a, long long b) {
    return (unsigned)((a + b - 1) / b);
}
