/* qk_norm_rope.cu — fused per-head q/k RMSNorm + NeoX RoPE, in place on the bf16 qkv rows; with
 * theta 0 the RMSNorm alone (ALiBi models keep Qwen3's q/k norms but rotate nothing).
 *
 * Angle accuracy: positions reach 40960 with theta 1e6, where pos * inv_freq is up to ~4e4 rad and
 * an fp32 product would carry ~4e-3 rad of error. The angle is therefore formed in double, reduced
 * to [-pi, pi] in double, and only then rounded to fp32 for sincosf (error ~1e-7 rad). */
#include "common.cuh"

#define QKR_MAX_PAIRS_PER_LANE 4 /* head_dim <= 256 */

/* One warp per (token, head) over the heads + kv_heads normed heads of a row; v is untouched.
 * Lane l owns the pairs (i, i + half) for i = l, l + 32, ... */
static __global__ void
qk_norm_rope_kernel(bf16 *__restrict__ qkv, int n_tokens, int heads, int kv_heads, int head_dim,
                    const int32_t *__restrict__ positions, const float *__restrict__ q_norm_w,
                    const float *__restrict__ k_norm_w, float eps, int rotate, double log2_theta) {
    const int lane = threadIdx.x & 31;
    const long long warp_id = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int nh = heads + kv_heads;
    if (warp_id >= (long long)n_tokens * nh) return;
    const int t = (int)(warp_id / nh), h = (int)(warp_id % nh);
    const int row_width = (heads + 2 * kv_heads) * head_dim;
    bf16 *x = qkv + (size_t)t * row_width + (size_t)h * head_dim;
    const float *w = h < heads ? q_norm_w : k_norm_w;
    const int half = head_dim / 2;

    float lo[QKR_MAX_PAIRS_PER_LANE], hi[QKR_MAX_PAIRS_PER_LANE];
    float ss = 0.0f;
#pragma unroll
    for (int p = 0; p < QKR_MAX_PAIRS_PER_LANE; p++) {
        const int i = lane + 32 * p;
        lo[p] = hi[p] = 0.0f;
        if (i < half) {
            lo[p] = bf16_to_f32(x[i]);
            hi[p] = bf16_to_f32(x[i + half]);
            ss += lo[p] * lo[p] + hi[p] * hi[p];
        }
    }
    ss = warp_sum(ss);
    const float inv = rsqrtf(ss / (float)head_dim + eps);
    const double pos = rotate ? (double)positions[t] : 0.0; /* norm only: positions unused */
    const double two_pi = 6.283185307179586476925286766559;
#pragma unroll
    for (int p = 0; p < QKR_MAX_PAIRS_PER_LANE; p++) {
        const int i = lane + 32 * p;
        if (i < half) {
            const float a = lo[p] * inv * w[i];
            const float b = hi[p] * inv * w[i + half];
            if (!rotate) { /* the same for every warp of a launch: no divergence */
                x[i] = f32_to_bf16(a);
                x[i + half] = f32_to_bf16(b);
                continue;
            }
            const double inv_freq = exp2(-(2.0 * i / head_dim) * log2_theta);
            double ang = pos * inv_freq;
            ang -= two_pi * rint(ang / two_pi);
            float sn, cs;
            sincosf((float)ang, &sn, &cs);
            x[i] = f32_to_bf16(a * cs - b * sn);
            x[i + half] = f32_to_bf16(b * cs + a * sn);
        }
    }
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
    QE_LAUNCH(qk_norm_rope_kernel, qe_ceil_div(warps, threads / 32), threads, 0, s)
    ((bf16 *)qkv, n_tokens, heads, kv_heads, head_dim, positions, q_norm_w, k_norm_w, eps, rotate,
     rotate ? log2(theta) : 0.0);
    CUDA_CHECK_LAUNCH();
    return QE_K_OK;
}
