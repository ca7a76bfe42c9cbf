/* cpu_attention.h — the CPU backend's attention: causal GQA over packed varlen sequences, fp32
 * with an online softmax over tiles of keys, threads over (sequence, kv head, block of query
 * rows). The addressing is that of the CUDA kernel's qe_attn_params (kernels/kernels.h), in fp32:
 * the queries of a sequence are its LAST Lq positions (Lq <= Lk, bottom-right causal alignment:
 * query i sees keys j <= i + Lk - Lq), and K/V rows are contiguous or paged through a block
 * table, so one routine serves whole sequences, chunked prefill and a paged K/V pool.
 * kernels/ref/ref_attention.c (double, two passes) stays the oracle it is tested against. */
#ifndef QE_RUNTIME_CPU_ATTENTION_H
#define QE_RUNTIME_CPU_ATTENTION_H
#include <stdint.h>

#include "parallel.h"

typedef struct cpu_attn_params {
    const float *q; /* query token t (packed), head h: q + t*q_stride + h*head_dim */
    const float *k; /* key j of sequence s, kv head g: k + row(s, j)*kv_stride + g*head_dim */
    const float *v; /* likewise */
    float *out;     /* like q, with out_stride */
    int q_stride, kv_stride, out_stride; /* row strides in floats */
    const int32_t *cu_seqlens_q;         /* [n_seqs+1], host memory */
    const int32_t *cu_seqlens_k;         /* [n_seqs+1]; contiguous: row(s, j) = cu_k[s] + j */
    int n_seqs;
    int heads, kv_heads, head_dim; /* heads % kv_heads == 0; query head h reads kv head h/group */
    float scale;                   /* logits are scale * q.k ... */
    const float *alibi_slopes;     /* ... plus slopes[h] * (j - i_abs) when not NULL */
    /* paged: row(s, j) = block_table[s*block_table_stride + j/page_size]*page_size + j%page_size */
    const int32_t *block_table;
    int block_table_stride, page_size;
} cpu_attn_params;

/* Runs on the pool (the calling thread takes tasks too). Returns 0, or -1 when the host has no
 * memory for the task list. */
int cpu_attention(const cpu_attn_params *p, qe_pool *pool);

#endif
