/* ref_rope.c — reference for the fused per-head q/k RMSNorm + NeoX RoPE (in place on qkv); theta
 * 0 stops after the RMSNorm. */
#include <math.h>

#include "ref.h"

static void norm_rope_head(float *x, const float *w, int hd, float eps, double pos, double theta) {
    double ss = 0;
    for (int i = 0; i < hd; i++)
        ss += (double)x[i] * x[i];
    float inv = (float)(1.0 / sqrt(ss / hd + eps));
    for (int i = 0; i < hd; i++)
        x[i] = x[i] * inv * w[i];
    if (theta <= 0) return; /* norm only */
    int half = hd / 2;
    for (int i = 0; i < half; i++) {
        double angle = pos * pow(theta, -2.0 * i / hd);
        double c = cos(angle), s = sin(angle);
        double a = x[i], b = x[i + half];
        x[i] = (float)(a * c - b * s);
        x[i + half] = (float)(b * c + a * s);
    }
}

void ref_qk_norm_rope(float *qkv, int n_tokens, int heads, int kv_heads, int head_dim,
                      const int32_t *positions, const float *q_norm_w, const float *k_norm_w,
                      float eps, double theta) {
    const int row = (heads + 2 * kv_heads) * head_dim;
    for (int t = 0; t < n_tokens; t++) {
        float *q = qkv + (size_t)t * row, *k = q + heads * head_dim;
        const double pos = theta > 0 ? positions[t] : 0;
        for (int h = 0; h < heads; h++)
            norm_rope_head(q + h * head_dim, q_norm_w, head_dim, eps, pos, theta);
        for (int h = 0; h < kv_heads; h++)
            norm_rope_head(k + h * head_dim, k_norm_w, head_dim, eps, pos, theta);
    }
}
