/* ref_gemm_fused.c — references for the fused GEMM epilogues (kernels/gemm_fused.cu), composed
 * from the existing ones: the product of bf16-valued inputs accumulated in double (exact to
 * k * 2^-53, then one rounding to fp32), then ref_swiglu or ref_qk_norm_rope on it. So the only
 * fp32 accumulation error a test has to allow is the kernel's. */
#include <stdlib.h>

#include "ref.h"

/* y[m, n] = fp32(sum_k x[i, k] w[j, k] in double). */
static void matmul_double(const float *x, int m, int k, const float *w, int n, float *y) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            const float *a = x + (size_t)i * k, *b = w + (size_t)j * k;
            double s = 0;
            for (int c = 0; c < k; c++)
                s += (double)a[c] * b[c];
            y[(size_t)i * n + j] = (float)s;
        }
}

int ref_gemm_swiglu(const float *x, int m, int k, const float *wgu, int inter, float *act,
                    float *gu) {
    float *tmp = gu ? gu : malloc(sizeof(float) * (size_t)m * 2 * inter);
    if (!tmp) return -1;
    matmul_double(x, m, k, wgu, 2 * inter, tmp);
    ref_swiglu(tmp, m, inter, act);
    if (!gu) free(tmp);
    return 0;
}

void ref_gemm_qkv_norm_rope(const float *x, int m, int k, const float *wqkv, int heads,
                            int kv_heads, int head_dim, const int32_t *positions,
                            const float *q_norm_w, const float *k_norm_w, float eps, double theta,
                            float *qkv, float *raw) {
    const int n = (heads + 2 * kv_heads) * head_dim;
    matmul_double(x, m, k, wqkv, n, qkv);
    if (raw)
        for (size_t i = 0; i < (size_t)m * n; i++)
            raw[i] = qkv[i];
    ref_qk_norm_rope(qkv, m, heads, kv_heads, head_dim, positions, q_norm_w, k_norm_w, eps, theta);
}
