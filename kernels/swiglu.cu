/* swiglu.cu — SwiGLU on the fused gate|up GEMM output: out = silu(gate) * up, bf16 in/out, fp32
 * math. Memory-bound: 4 bytes read and 2 written per output element. */
#include "swiglu.cuh"
#include "ptx.cuh"

/* Grid-stride over rows * inter outputs, 8 per thread (16-byte loads) when inter % 8 == 0. */
static __global__ void swiglu_vec8_kernel(const bf16 *__restrict__ gu, int rows, int inter,
                                          bf16 *__restrict__ out) {
    griddep_wait(); /* QE_LAUNCH_PDL: before any global memory (ptx.cuh) */
    griddep_launch_dependents();
    const int per_row = inter / 8;
    const long long n = (long long)rows * per_row;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < n;
         idx += (long long)gridDim.x * blockDim.x) {
        const long long r = idx / per_row;
        const int c = (int)(idx % per_row) * 8;
        /* 16-byte loads and store; the lanes are unpacked by memcpy, not by pointer casts (those
         * break strict aliasing; nvcc emits the same register moves) */
        const uint4 g = *(const uint4 *)(gu + r * 2 * inter + c);
        const uint4 u = *(const uint4 *)(gu + r * 2 * inter + inter + c);
        bf16x2 g2[4], u2[4], o2[4];
        memcpy(g2, &g, sizeof g2);
        memcpy(u2, &u, sizeof u2);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const float2 gf = __bfloat1622float2(g2[j]);
            const float2 uf = __bfloat1622float2(u2[j]);
            o2[j] = __floats2bfloat162_rn(silu_mul(gf.x, uf.x), silu_mul(gf.y, uf.y));
        }
        uint4 o;
        memcpy(&o, o2, sizeof o);
        *(uint4 *)(out + r * inter + c) = o;
    }
}

static __global__ void swiglu_scalar_kernel(const bf16 *__restrict__ gu, int rows, int inter,
                                            bf16 *__restrict__ out) {
    griddep_wait(); /* QE_LAUNCH_PDL: before any global memory (ptx.cuh) */
    griddep_launch_dependents();
    const long long n = (long long)rows * inter;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < n;
         idx += (long long)gridDim.x * blockDim.x) {
        const long long r = idx / inter;
        const int c = (int)(idx % inter);
        const float g = bf16_to_f32(gu[r * 2 * inter + c]);
        const float u = bf16_to_f32(gu[r * 2 * inter + inter + c]);
        out[r * inter + c] = f32_to_bf16(silu_mul(g, u));
    }
}

extern "C" int qe_swiglu(const qe_bf16 *gate_up, int rows, int inter, qe_bf16 *out, qe_stream s) {
    QE_K_REQUIRE(rows >= 0 && inter > 0);
    if (rows == 0) return QE_K_OK;
    const int threads = 256;
    const int vec =
        (inter % 8 == 0) && ((uintptr_t)gate_up % 16 == 0) && ((uintptr_t)out % 16 == 0);
    const long long work = (long long)rows * (vec ? inter / 8 : inter);
    long long blocks = (work + threads - 1) / threads;
    if (blocks > 132LL * 16) blocks = 132LL * 16; /* grid-stride beyond ~16 blocks per SM */
    if (vec) QE_LAUNCH_PDL(swiglu_vec8_kernel, (unsigned)blocks, threads, 0, s)
    ((const bf16 *)gate_up, rows, inter, (bf16 *)out);
    else QE_LAUNCH_PDL(swiglu_scalar_kernel, (unsigned)blocks, threads, 0,
                       s)((const bf16 *)gate_up, rows, inter, (bf16 *)out);
    CUDA_CHECK_LAUNCH();
    return QE_K_OK;
}
