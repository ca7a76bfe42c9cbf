/* ref_attention.c — reference causal GQA attention over packed (varlen) sequences. Two passes
 * per query (max, then exp-sum) in double: plain and exact, not fast. */
#include <math.h>
#include <stdlib.h>

#include "ref.h"

void ref_attention(const float *qkv, const int32_t *cu_seqlens, int n_seqs, int heads, int kv_heads,
                   int head_dim, const float *alibi_slopes, int h_begin, int h_end, float *out) {
    const int row = (heads + 2 * kv_heads) * head_dim, group = heads / kv_heads;
    const double scale = 1.0 / sqrt((double)head_dim);
    int max_len = 0;
    for (int s = 0; s < n_seqs; s++)
        if (cu_seqlens[s + 1] - cu_seqlens[s] > max_len)
            max_len = cu_seqlens[s + 1] - cu_seqlens[s];
    double *p = malloc(sizeof(double) * (size_t)(max_len ? max_len : 1));
    double *acc = malloc(sizeof(double) * (size_t)head_dim);
    for (int s = 0; s < n_seqs; s++) {
        const int start = cu_seqlens[s], len = cu_seqlens[s + 1] - start;
        for (int h = h_begin; h < h_end; h++) {
            const int kvh = h / group;
            for (int i = 0; i < len; i++) {
                const float *q = qkv + (size_t)(start + i) * row + h * head_dim;
                double mx = -INFINITY;
                for (int j = 0; j <= i; j++) {
                    const float *k = qkv + (size_t)(start + j) * row + (heads + kvh) * head_dim;
                    double dot = 0;
                    for (int d = 0; d < head_dim; d++)
                        dot += (double)q[d] * k[d];
                    p[j] = dot * scale + (alibi_slopes ? alibi_slopes[h] * (double)(j - i) : 0.0);
                    if (p[j] > mx) mx = p[j];
                }
                double sum = 0;
                for (int j = 0; j <= i; j++)
                    sum += (p[j] = exp(p[j] - mx));
                for (int d = 0; d < head_dim; d++)
                    acc[d] = 0;
                for (int j = 0; j <= i; j++) {
                    const float *v =
                        qkv + (size_t)(start + j) * row + (heads + kv_heads + kvh) * head_dim;
                    for (int d = 0; d < head_dim; d++)
                        acc[d] += p[j] * v[d];
                }
                float *o = out + (size_t)(start + i) * heads * head_dim + h * head_dim;
                for (int d = 0; d < head_dim; d++)
                    o[d] = (float)(acc[d] / sum);
            }
        }
    }
    free(p);
    free(acc);
}
