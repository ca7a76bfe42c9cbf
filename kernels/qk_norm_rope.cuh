/* qk_norm_rope.cuh — the per-(token, head) work of qe_qk_norm_rope on one warp, shared by
 * qk_norm_rope.cu and the skinny GEMM's fused epilogue (gemm_skinny.cu), so the two give the same
 * bits. Per-head q/k RMSNorm + NeoX RoPE; with rotate 0 the RMSNorm alone.
 *
 * Angle accuracy: positions reach 40960 with theta 1e6, where pos * inv_freq is up to ~4e4 rad and
 * an fp32 product would carry ~4e-3 rad of error. The angle is therefore formed in double, reduced
 * to [-pi, pi] in double, and only then rounded to fp32 for sincosf (error ~1e-7 rad). */
#pragma once
#include <math.h>
#include "common.cuh"

#define QKR_MAX_PAIRS_PER_LANE 4 /* head_dim <= 256 */

/* What the q/k norm + RoPE needs besides the values, as the fused GEMM epilogues take it
 * (gemm_skinny.cu, gemm_fused.cu): theta 0 rotates nothing, and positions are then not read. */
typedef struct qk_rope_args {
    const int32_t *positions;
    const float *q_norm_w, *k_norm_w;
    float eps;
    int rotate;
    double log2_theta;
} qk_rope_args;

static inline qk_rope_args qk_rope_args_make(const int32_t *positions, const float *q_norm_w,
                                             const float *k_norm_w, float eps, double theta) {
    qk_rope_args a;
    memset(&a, 0, sizeof a);
    a.positions = positions, a.q_norm_w = q_norm_w, a.k_norm_w = k_norm_w, a.eps = eps;
    a.rotate = theta > 0.0;
    a.log2_theta = a.rotate ? log2(theta) : 0.0;
    return a;
}

/* lo[p], hi[p]: the head's values i and i + half (fp32 from bf16) for i = lane + 32 p, 0 past
 * half; w the head's norm weights; writes the normed (and rotated) head to x. */
static __device__ __forceinline__ void qk_norm_rope_head(const float *lo, const float *hi, int lane,
                                                         int head_dim, const float *w, float eps,
                                                         int rotate, double pos, double log2_theta,
                                                         bf16 *x) {
    const int half = head_dim / 2;
    float ss = 0.0f;
#pragma unroll
    for (int p = 0; p < QKR_MAX_PAIRS_PER_LANE; p++)
        if (lane + 32 * p < half) ss += lo[p] * lo[p] + hi[p] * hi[p];
    ss = warp_sum(ss);
    const float inv = rsqrtf(ss / (float)head_dim + eps);
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
