/* ref_norm.c — references for embedding gather, RMSNorm and fused residual-add + RMSNorm. */
#include <math.h>
#include <string.h>

#include "ref.h"

void ref_embed_gather(const float *table, int hidden, const int32_t *tokens, int n_tokens,
                      float *out) {
    for (int t = 0; t < n_tokens; t++)
        memcpy(out + (size_t)t * hidden, table + (size_t)tokens[t] * hidden,
               sizeof(float) * (size_t)hidden);
}

/* Sum of squares in double so the reference stays the more accurate side of any comparison. */
static void rmsnorm_row(const float *x, const float *w, int dim, float eps, float *out) {
    double ss = 0;
    for (int i = 0; i < dim; i++)
        ss += (double)x[i] * x[i];
    float inv = (float)(1.0 / sqrt(ss / dim + eps));
    for (int i = 0; i < dim; i++)
        out[i] = x[i] * inv * w[i];
}

void ref_rmsnorm(const float *x, const float *w, int rows, int dim, float eps, float *out) {
    for (int r = 0; r < rows; r++)
        rmsnorm_row(x + (size_t)r * dim, w, dim, eps, out + (size_t)r * dim);
}

void ref_add_rmsnorm(float *residual, const float *delta, const float *w, int rows, int dim,
                     float eps, float *out) {
    for (int r = 0; r < rows; r++) {
        float *x = residual + (size_t)r * dim;
        if (delta)
            for (int i = 0; i < dim; i++)
                x[i] += delta[(size_t)r * dim + i];
        rmsnorm_row(x, w, dim, eps, out + (size_t)r * dim);
    }
}

void ref_pool_last(const float *x, int hidden, const int32_t *cu_seqlens, int n_seqs,
                   const float *final_norm_w, float eps, int dims, int normalize, float *out) {
    float row[hidden];
    for (int s = 0; s < n_seqs; s++) {
        const float *last = x + (size_t)(cu_seqlens[s + 1] - 1) * hidden;
        rmsnorm_row(last, final_norm_w, hidden, eps, row);
        /* Matryoshka: L2 over the kept prefix equals "normalise, cut, normalise again". */
        double ss = 0;
        for (int i = 0; i < dims; i++)
            ss += (double)row[i] * row[i];
        double inv = !normalize ? 1.0 : ss > 0 ? 1.0 / sqrt(ss) : 0.0;
        for (int i = 0; i < dims; i++)
            out[(size_t)s * dims + i] = (float)(row[i] * inv);
    }
}
