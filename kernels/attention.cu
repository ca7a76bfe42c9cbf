/* attention.cu — flash attention (FlashAttention-2 scheme) for packed varlen sequences: causal,
 * GQA, head_dim 128, bf16 in/out, fp32 online softmax in the log2 domain, optional ALiBi, paged
 * or contiguous K/V. Tensor cores through mma.sync.m16n8k16 (bf16 -> fp32) fed by ldmatrix.
 *
 * One block = 4 warps = 64 queries of one (sequence, head); each warp owns 16 query rows and the
 * whole 128-wide output row in registers. K and V tiles of 64 keys go through shared memory with
 * cp.async: V(j) loads while S = Q K(j)^T runs, K(j+1) loads while O += P V(j) runs. Shared rows
 * are 256 bytes, swizzled (attention_common.cuh). This is variant 0 ("fa2") of qe_attention; the
 * others (attention_m128.cu, ...) are chosen by QE_ATTN or qe_attention_select, at the end. */
#include <math.h>

#include "common.cuh"
#include "ptx.cuh"

#include "attention_common.cuh"
#include "kernel_switch.h"

#define ATT_BM 64
#define ATT_BN 64
#define ATT_THREADS 128

/* Issues the cp.async copies of keys [n0, n0+64) of one kv head into a swizzled tile. Keys past
 * Lk are zero-filled (src_bytes 0): P is 0 there, and 0 * NaN would poison the output. */
static __device__ __forceinline__ void load_kv_tile(bf16 *tile, const bf16 *base,
                                                    const qe_attn_params &p, int s, int k_start,
                                                    int Lk, int n0, int g) {
#pragma unroll
    for (int it = 0; it < ATT_BN * 16 / ATT_THREADS; it++) {
        const int idx = threadIdx.x + it * ATT_THREADS;
        const int r = idx >> 4, c = idx & 15;
        const int j = n0 + r;
        const bf16 *src = base;
        int bytes = 0;
        if (j < Lk) {
            src = base + kv_row(p, s, k_start, j) * p.kv_stride + (long long)g * ATT_D + c * 8;
            bytes = 16;
        }
        cp_async16(tile + swz(r, c * 8), src, bytes);
    }
}

static __global__ void __launch_bounds__(ATT_THREADS)
    flash_attn_fwd_kernel(const qe_attn_params p, float scale_log2) {
    griddep_wait(); /* QE_LAUNCH_PDL: before any global memory (ptx.cuh) */
    griddep_launch_dependents();
    __shared__ __align__(128) bf16 sK[ATT_BN * ATT_D];
    __shared__ __align__(128) bf16 sV[ATT_BN * ATT_D]; /* also stages the Q tile */

    const int s = blockIdx.x;
    const int m_block = gridDim.y - 1 - blockIdx.y; /* heavy (late) causal blocks first */
    const int h = blockIdx.z;
    const int q_start = p.cu_seqlens_q[s];
    const int Lq = p.cu_seqlens_q[s + 1] - q_start;
    const int m0 = m_block * ATT_BM;
    if (m0 >= Lq) return;
    const int k_start = p.cu_seqlens_k[s];
    const int Lk = p.cu_seqlens_k[s + 1] - k_start;
    const int off = Lk - Lq; /* query i sits at absolute position i + off */
    const int g = h / (p.heads / p.kv_heads);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int gid = lane >> 2, tig = lane & 3; /* mma group id (row), thread in group (column) */
    const float slope_log2 = p.alibi_slopes ? p.alibi_slopes[h] * 1.4426950408889634f : 0.0f;

    /* ---- Q tile -> registers (staged through sV) ---- */
#pragma unroll
    for (int it = 0; it < ATT_BM * 16 / ATT_THREADS; it++) {
        const int idx = tid + it * ATT_THREADS;
        const int r = idx >> 4, c = idx & 15;
        const int i = m0 + r;
        const bf16 *qb = (const bf16 *)p.q;
        const bf16 *src = qb;
        int bytes = 0;
        if (i < Lq) {
            src = qb + (long long)(q_start + i) * p.q_stride + (long long)h * ATT_D + c * 8;
            bytes = 16;
        }
        cp_async16(sV + swz(r, c * 8), src, bytes);
    }
    cp_async_commit();
    cp_async_wait_all();
    __syncthreads();
    uint32_t qf[ATT_D / 16][4];
#pragma unroll
    for (int kk = 0; kk < ATT_D / 16; kk++) {
        const int r = warp * 16 + (lane & 15);
        const int c = kk * 16 + (lane >> 4) * 8;
        ldmatrix_x4(qf[kk], sV + swz(r, c));
    }
    __syncthreads(); /* every warp has its Q before sV is overwritten by V */

    float o[ATT_D / 8][4];
#pragma unroll
    for (int dt = 0; dt < ATT_D / 8; dt++)
        o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.0f;
    float m_run[2] = {-INFINITY, -INFINITY};
    float l_run[2] = {0.0f, 0.0f};

    const int n_end = min(Lk, m0 + ATT_BM + off);
    const int n_tiles = (n_end + ATT_BN - 1) / ATT_BN;
    const int row_lo = m0 + warp * 16 + gid; /* query index of accumulator rows 0 and +8 */

    load_kv_tile(sK, (const bf16 *)p.k, p, s, k_start, Lk, 0, g);
    cp_async_commit();

    for (int jt = 0; jt < n_tiles; jt++) {
        const int n0 = jt * ATT_BN;
        cp_async_wait_all();
        __syncthreads(); /* K(jt) landed; every warp is done with V(jt-1) */
        load_kv_tile(sV, (const bf16 *)p.v, p, s, k_start, Lk, n0, g);
        cp_async_commit();

        /* ---- S = Q K^T: 16 x 64 per warp ---- */
        float sc[ATT_BN / 8][4];
#pragma unroll
        for (int nt = 0; nt < ATT_BN / 8; nt++)
            sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < ATT_D / 16; kk++) {
#pragma unroll
            for (int np = 0; np < ATT_BN / 16; np++) {
                const int mi = lane >> 3;
                const int r = np * 16 + (mi >> 1) * 8 + (lane & 7);
                const int c = kk * 16 + (mi & 1) * 8;
                uint32_t b[4];
                ldmatrix_x4(b, sK + swz(r, c));
                mma_bf16(sc[2 * np], qf[kk], b[0], b[1]);
                mma_bf16(sc[2 * np + 1], qf[kk], b[2], b[3]);
            }
        }

        /* ---- scale, ALiBi, mask, online softmax (log2 domain) ---- */
        const bool need_mask = (n0 + ATT_BN > m0 + off) || (n0 + ATT_BN > Lk);
        float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int nt = 0; nt < ATT_BN / 8; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int i_abs = row_lo + (e >> 1) * 8 + off;
                const int j = n0 + nt * 8 + 2 * tig + (e & 1);
                float v = sc[nt][e] * scale_log2;
                if (p.alibi_slopes) v += slope_log2 * (float)(j - i_abs);
                if (need_mask && (j >= Lk || j > i_abs)) v = -INFINITY;
                sc[nt][e] = v;
                tile_max[e >> 1] = fmaxf(tile_max[e >> 1], v);
            }
        }
        float alpha[2], m_use[2];
        softmax_rescale(tile_max, m_run, l_run, alpha, m_use);
#pragma unroll
        for (int nt = 0; nt < ATT_BN / 8; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float pe = exp2f(sc[nt][e] - m_use[e >> 1]);
                sc[nt][e] = pe;
                l_run[e >> 1] += pe;
            }
        }
#pragma unroll
        for (int dt = 0; dt < ATT_D / 8; dt++) {
            o[dt][0] *= alpha[0];
            o[dt][1] *= alpha[0];
            o[dt][2] *= alpha[1];
            o[dt][3] *= alpha[1];
        }

        cp_async_wait_all();
        __syncthreads(); /* V(jt) landed; every warp is done reading K(jt) */
        if (jt + 1 < n_tiles) {
            load_kv_tile(sK, (const bf16 *)p.k, p, s, k_start, Lk, n0 + ATT_BN, g);
            cp_async_commit();
        }

        /* ---- O += P V: P from the S accumulators (C layout of two n8 tiles = A layout) ---- */
#pragma unroll
        for (int kk = 0; kk < ATT_BN / 16; kk++) {
            uint32_t pa[4];
            pa[0] = pack_bf16x2(sc[2 * kk][0], sc[2 * kk][1]);
            pa[1] = pack_bf16x2(sc[2 * kk][2], sc[2 * kk][3]);
            pa[2] = pack_bf16x2(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
            pa[3] = pack_bf16x2(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
#pragma unroll
            for (int dp = 0; dp < ATT_D / 16; dp++) {
                const int mi = lane >> 3;
                const int r = kk * 16 + (mi & 1) * 8 + (lane & 7);
                const int c = dp * 16 + (mi >> 1) * 8;
                uint32_t b[4];
                ldmatrix_x4_trans(b, sV + swz(r, c));
                mma_bf16(o[2 * dp], pa, b[0], b[1]);
                mma_bf16(o[2 * dp + 1], pa, b[2], b[3]);
            }
        }
    }

    /* ---- normalise and store (rows < Lq only) ---- */
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const float inv = softmax_inv_sum(l_run[r]);
        const int i = row_lo + r * 8;
        if (i < Lq) {
            bf16 *dst =
                (bf16 *)p.out + (long long)(q_start + i) * p.out_stride + (long long)h * ATT_D;
#pragma unroll
            for (int dt = 0; dt < ATT_D / 8; dt++) {
                *(bf16x2 *)(dst + dt * 8 + 2 * tig) =
                    __floats2bfloat162_rn(o[dt][2 * r] * inv, o[dt][2 * r + 1] * inv);
            }
        }
    }
}

/* The production kernel (variant 0); also the fa3 variant's fallback. */
extern "C" int qe_attention_fa2(const qe_attn_params *p, qe_stream s) {
    const int bad = attn_check_params(p);
    if (bad) return bad;
    if (p->n_seqs == 0 || p->max_seqlen_q == 0) return QE_K_OK;
    const unsigned m_blocks = qe_ceil_div(p->max_seqlen_q, ATT_BM);
    QE_K_REQUIRE(m_blocks <= 65535);
    dim3 grid((unsigned)p->n_seqs, m_blocks, (unsigned)p->heads);
    const float scale_log2 = p->scale * 1.4426950408889634f;
    QE_LAUNCH_PDL(flash_attn_fwd_kernel, grid, ATT_THREADS, 0, s)(*p, scale_log2);
    CUDA_CHECK_LAUNCH();
    return QE_K_OK;
}

/* ---- the variants (issue 15): one table, QE_ATTN picks, tests and benchmarks select ---- */

extern "C" int qe_attention_m128(const qe_attn_params *p, qe_stream s);
extern "C" int qe_attention_fa3(const qe_attn_params *p, qe_stream s);

static int (*const VARIANTS[QE_ATTN_VARIANTS])(const qe_attn_params *, qe_stream) = {
    qe_attention_fa2, qe_attention_m128, qe_attention_fa3};
static const char *const VARIANT_NAMES[QE_ATTN_VARIANTS] = {"fa2", "m128", "fa3"};
static kernel_switch variant_switch = KERNEL_SWITCH("QE_ATTN", VARIANT_NAMES);

extern "C" int qe_attention_variant(void) {
    return kernel_switch_value(&variant_switch);
}

extern "C" int qe_attention_select(int variant) {
    return kernel_switch_select(&variant_switch, variant);
}

extern "C" const char *qe_attention_variant_name(int variant) {
    return kernel_switch_name(&variant_switch, variant);
}

extern "C" int qe_attention(const qe_attn_params *p, qe_stream s) {
    return VARIANTS[qe_attention_variant()](p, s);
}
