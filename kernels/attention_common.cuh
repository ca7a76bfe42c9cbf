/* attention_common.cuh — what the flash-attention variants share (attention.cu, attention_m128.cu):
 * the swizzled 256-byte rows of a Q/K/V tile, bf16 packing of P, and the key -> K/V row mapping of
 * contiguous or paged sequences. */
#pragma once
#include "common.cuh"

#define ATT_D 128

/* Element offset of (row, col) in a swizzled [rows][128] bf16 tile; col a multiple of 8. The
 * 16-byte chunk c of row r sits at chunk c ^ (r & 7), so the 8 row addresses of every ldmatrix
 * phase hit distinct banks. */
static __device__ __forceinline__ int swz(int row, int col) {
    return row * ATT_D + ((((col >> 3) ^ (row & 7))) << 3);
}

static __device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    const bf16x2 v = __floats2bfloat162_rn(lo, hi); /* .x (low half) = lo = the lower column */
    uint32_t u;
    memcpy(&u, &v, 4); /* not a pointer cast: that breaks strict aliasing */
    return u;
}

/* The online softmax's update of a thread's two rows (r = 0: row g, 1: row g + 8 of its
 * fragment) after a tile: the tile's row max over the quad that holds the row, the new running
 * max m_run, alpha (the factor that rescales the row's O and sum, applied to l_run here), and
 * m_use, the max to subtract from the tile's logits (0 while a row has seen no key: -inf - -inf
 * would be NaN; then alpha = exp2(-inf) = 0). */
static __device__ __forceinline__ void softmax_rescale(const float *tile_max, float *m_run,
                                                       float *l_run, float *alpha, float *m_use) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float mx = tile_max[r];
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m_run[r], mx);
        m_use[r] = m_new == -INFINITY ? 0.0f : m_new;
        alpha[r] = exp2f(m_run[r] - m_use[r]);
        m_run[r] = m_new;
        l_run[r] *= alpha[r];
    }
}

/* 1 / a row's softmax sum, its partial sums l added over the quad that holds the row (0 for a
 * row that saw no key). */
static __device__ __forceinline__ float softmax_inv_sum(float l) {
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    return l > 0.0f ? 1.0f / l : 0.0f;
}

/* Row (in units of kv_stride) of key j of sequence s. */
static __device__ __forceinline__ long long kv_row(const qe_attn_params &p, int s, int k_start,
                                                   int j) {
    if (p.block_table == nullptr) return (long long)k_start + j;
    const int page = p.block_table[(long long)s * p.block_table_stride + j / p.page_size];
    return (long long)page * p.page_size + j % p.page_size;
}

/* The checks every variant's launcher makes (the contract in kernels.h). */
static inline int attn_check_params(const qe_attn_params *p) {
    QE_K_REQUIRE(p != NULL);
    QE_K_REQUIRE(p->head_dim == ATT_D);
    QE_K_REQUIRE(p->heads > 0 && p->kv_heads > 0 && p->heads % p->kv_heads == 0);
    QE_K_REQUIRE(p->n_seqs >= 0 && p->n_seqs < (1 << 30));
    QE_K_REQUIRE(p->heads <= 65535 && p->max_seqlen_q >= 0);
    QE_K_REQUIRE(p->q_stride % 8 == 0 && p->kv_stride % 8 == 0 && p->out_stride % 2 == 0);
    QE_K_REQUIRE((uintptr_t)p->q % 16 == 0 && (uintptr_t)p->k % 16 == 0 &&
                 (uintptr_t)p->v % 16 == 0 && (uintptr_t)p->out % 4 == 0);
    QE_K_REQUIRE(p->block_table == NULL || (p->page_size > 0 && p->block_table_stride > 0));
    QE_K_REQUIRE(p->cu_seqlens_q != NULL && p->cu_seqlens_k != NULL);
    return QE_K_OK;
}
