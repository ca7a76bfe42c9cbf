/* rmsnorm.cu — fused residual add + RMSNorm: fp32 residual stream in/out, bf16 normalised rows
 * out (the next GEMM's input). Mean of squares in fp32. */
#include "common.cuh"
#include "ptx.cuh"

/* One block per row. The row (<= 16 KB for hidden 4096) is read twice; the second read hits L1/L2.
 */
static __global__ void add_rmsnorm_kernel(float *__restrict__ residual,
                                          const float *__restrict__ delta,
                                          const float *__restrict__ w, int dim, float eps,
                                          bf16 *__restrict__ out) {
    griddep_wait(); /* QE_LAUNCH_PDL: before any global memory (ptx.cuh) */
    griddep_launch_dependents();
    __shared__ float red[33];
    const size_t base = (size_t)blockIdx.x * dim;
    float *x = residual + base;
    float ss = 0.0f;
    if ((dim & 3) == 0) {
        float4 *x4 = (float4 *)x;
        const float4 *d4 = delta ? (const float4 *)(delta + base) : nullptr;
        for (int i = threadIdx.x; i < dim / 4; i += blockDim.x) {
            float4 v = x4[i];
            if (d4) {
                float4 d = d4[i];
                v.x += d.x, v.y += d.y, v.z += d.z, v.w += d.w;
                x4[i] = v;
            }
            ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
    } else {
        for (int i = threadIdx.x; i < dim; i += blockDim.x) {
            float v = x[i];
            if (delta) {
                v += delta[base + i];
                x[i] = v;
            }
            ss += v * v;
        }
    }
    ss = block_sum(ss, red); /* also orders this block's residual writes before the re-read */
    const float inv = rsqrtf(ss / (float)dim + eps);
    bf16 *o = out + base;
    if ((dim & 3) == 0) {
        const float4 *x4 = (const float4 *)x;
        const float4 *w4 = (const float4 *)w;
        bf16x2 *o2 = (bf16x2 *)o;
        for (int i = threadIdx.x; i < dim / 4; i += blockDim.x) {
            float4 v = x4[i], g = w4[i];
            o2[2 * i] = __floats2bfloat162_rn(v.x * inv * g.x, v.y * inv * g.y);
            o2[2 * i + 1] = __floats2bfloat162_rn(v.z * inv * g.z, v.w * inv * g.w);
        }
    } else {
        for (int i = threadIdx.x; i < dim; i += blockDim.x)
            o[i] = f32_to_bf16(x[i] * inv * w[i]);
    }
}

extern "C" int qe_add_rmsnorm(float *residual, const float *delta, const float *w, int rows,
                              int dim, float eps, qe_bf16 *out, qe_stream s) {
    QE_K_REQUIRE(rows >= 0 && dim > 0);
    if (rows == 0) return QE_K_OK;
    int threads = dim >= 2048 ? 256 : 128;
    QE_LAUNCH_PDL(add_rmsnorm_kernel, rows, threads, 0, s)
    (residual, delta, w, dim, eps, (bf16 *)out);
    CUDA_CHECK_LAUNCH();
    return QE_K_OK;
}
