/* ref.h — plain fp32 C references for every kernel. They define the math; the CPU backend runs
 * them and the CUDA tests compare against them. Row-major everywhere.
 * qkv rows are [q: heads*head_dim | k: kv_heads*head_dim | v: kv_heads*head_dim]. */
#ifndef QE_KERNELS_REF_H
#define QE_KERNELS_REF_H
#include <stddef.h>
#include <stdint.h>

/* out[t] = table[tokens[t]], rows of width hidden. */
void ref_embed_gather(const float *table, int hidden, const int32_t *tokens, int n_tokens,
                      float *out);

/* out = x / sqrt(mean(x^2) + eps) * w, per row of width dim. */
void ref_rmsnorm(const float *x, const float *w, int rows, int dim, float eps, float *out);

/* residual += delta (delta may be NULL); out = rmsnorm(residual) * w. */
void ref_add_rmsnorm(float *residual, const float *delta, const float *w, int rows, int dim,
                     float eps, float *out);

/* In place on q and k of each qkv row: per-head RMSNorm over head_dim with the shared
 * q_norm_w / k_norm_w, then NeoX RoPE (dim i paired with i + head_dim/2,
 * inv_freq_i = theta^(-2i/head_dim)) at positions[t]. theta 0: the RMSNorm only (ALiBi models;
 * positions is not read and may be NULL). v is untouched. */
void ref_qk_norm_rope(float *qkv, int n_tokens, int heads, int kv_heads, int head_dim,
                      const int32_t *positions, const float *q_norm_w, const float *k_norm_w,
                      float eps, double theta);

/* Causal attention inside each packed sequence (cu_seqlens[n_seqs+1]), GQA (query head h reads
 * kv head h / (heads/kv_heads)), scale 1/sqrt(head_dim), optional ALiBi (slope[h] * (j - i)
 * added to the logits; NULL for none). Computes only query heads [h_begin, h_end) so callers
 * can split the work. out rows are [heads*head_dim]. */
void ref_attention(const float *qkv, const int32_t *cu_seqlens, int n_seqs, int heads, int kv_heads,
                   int head_dim, const float *alibi_slopes, int h_begin, int h_end, float *out);

/* out[r, i] = silu(gate_up[r, i]) * gate_up[r, inter + i]. */
void ref_swiglu(const float *gate_up, int rows, int inter, float *out);

/* y[m, n] (row stride ldy) = x[m, k] * w[n, k]^T, plus the old y when accumulate. */
void ref_matmul(const float *x, int m, int k, const float *w, int n, float *y, int ldy,
                int accumulate);

/* The fused GEMM epilogues (kernels/gemm_fused.cu): act[m, inter] = ref_swiglu(x wgu^T), wgu
 * [2*inter, k] gate rows then up rows; qkv[m, (heads + 2 kv_heads) * head_dim] =
 * ref_qk_norm_rope(x wqkv^T). The products are summed in double and rounded once to fp32. gu /
 * raw, when not NULL, get that product ([m, 2*inter] / [m, n]: what a test's error bound needs).
 * ref_gemm_swiglu returns 0, or -1 when it cannot allocate (gu NULL). */
int ref_gemm_swiglu(const float *x, int m, int k, const float *wgu, int inter, float *act,
                    float *gu);
void ref_gemm_qkv_norm_rope(const float *x, int m, int k, const float *wqkv, int heads,
                            int kv_heads, int head_dim, const int32_t *positions,
                            const float *q_norm_w, const float *k_norm_w, float eps, double theta,
                            float *qkv, float *raw);

/* For each sequence: final RMSNorm of its last row of x[.., hidden], keep the first dims values,
 * L2-normalise them when normalize; out is [n_seqs, dims]. */
void ref_pool_last(const float *x, int hidden, const int32_t *cu_seqlens, int n_seqs,
                   const float *final_norm_w, float eps, int dims, int normalize, float *out);

#endif
