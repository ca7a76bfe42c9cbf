/* qk_norm_rope.cu — fused per-head q/k RMSNorm + NeoX RoPE, in place on the bf16 qkv rows; with
 * theta 0 the RMSNorm alone (ALiBi models keep Qwen3's q/k norms but rotate nothing). The math is
 * qk_norm_rope.cuh's (angle accuracy there), which the skinny GEMM's epilogue shares. */
#include "qk_norm_rope.cuh"
#include "ptx.cuh"

/* One warp per (token, head) over the heads + kv_heads normed heads of a row; v is untouched.
 * Lane l owns the pairs (i, i + half) for i = l, l + 32, ... */
static __global__ void
qk_norm_rope_kernel(bf16 *__restrict__ qkv, int n_tokens, int heads, int kv_heads, int head_dim,
                    const int32_t *__restrict__ positions, const float *__restrict__ q_norm_w,
                    const float *__restrict__ k_norm_w, float eps, int rotate, double log2_theta) {
    griddep_wait(); /* QE_LAUNCH_PDL: before any global memory (ptx.cuh) */
    griddep_launch_dependents();
    const int lane = threadIdx.x & 31;
    const long long warp_id = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int nh = heads + kv_heads;
    if (warp_id >= (long long)n_tokens * nh) return;
    const int t = (int)(warp_id / nh), h = (int)(warp_id % nh);
    const int row_width = (heads + 2 * kv_heads) * head_dim;
    bf16 *x = qkv + (size_t)t * row_width + (size_t)h * head_dim;
    const int half = head_dim / 2;
    float lo[QKR_MAX_PAIRS_PER_LANE], hi[QKR_MAX_PAIRS_PER_LANE];
#pragma unroll
    for (int p = 0; p < QKR_MAX_PAIRS_PER_LANE; p++) {
        const int i = lane + 32 * p;
        lo[p] = i < half ? bf16_to_f32(x[i]) : 0.0f;
        hi[p] = i < half ? bf16_to_f32(x[i + half]) : 0.0f;
    }
    const double pos = rotate ? (double)positions[t] : 0.0; /* norm only: positions unused */
    qk_norm_rope_head(lo, hi, lane, head_dim, h < heads ? q_norm_w : k_norm_w, eps, rotate, pos,
                      log2_theta, x);
}

extern "C" int qe_qk_norm_rope(qe_bf16 *qkv, int n_tokens, int heads, int kv_heads, int head_dim,
                               const int32_t *positions, const float *q_norm_w,
                               const float *k_norm_w, float eps, double theta, qe_stream s) {
    QE_K_REQUIRE(n_tokens >= 0 && heads > 0 && kv_heads > 0);
    QE_K_REQUIRE(head_dim > 0 && head_dim % 2 == 0 && head_dim <= 64 * QKR_MAX_PAIRS_PER_LANE);
    QE_K_REQUIRE(theta >= 0.0);
    QE_K_REQUIRE(theta == 0.0 || positions != NULL);
    if (n_tokens == 0) return QE_K_OK;
    const int rotate = theta > 0.0;
    const long long warps = (long long)n_tokens * (heads + kv_heads);
    const int threads = 256;
    QE_LAUNCH_PDL(qk_norm_rope_kernel, qe_ceil_div(warps, threads / 32), threads, 0, s)
    ((bf16 *)qkv, n_tokens, heads, kv_heads, head_dim, positions, q_norm_w, k_norm_w, eps, rotate,
     rotate ? log2(theta) : 0.0);
    CUDA_CHECK_LAUNCH();
    return QE_K_OK;
}
