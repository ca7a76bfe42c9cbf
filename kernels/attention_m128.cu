/* attention_m128.cu — attention variant 1 ("m128", issue 15 item 2a): the production kernel's
 * scheme (attention.cu: FlashAttention-2, mma.sync m16n8k16 fed by ldmatrix, fp32 online softmax
 * in the log2 domain, the same masking, ALiBi and paged K/V) with two changes aimed at its limit,
 * shared-memory bandwidth:
 *
 *   - 32 query rows per warp (two m16 tiles), 128 per block of 4 warps. Every K and V fragment a
 *     warp loads with ldmatrix now feeds two MMAs instead of one, halving the shared-memory bytes
 *     per FLOP; Q stays in registers (64 of them), O takes 128.
 *   - A 3-stage ring of 32-key K/V tiles (16 KB a stage, 48 KB in all: the static limit) with one
 *     barrier per tile: tile j + 2 loads while tile j computes, instead of alternating K and V
 *     loads around two barriers a tile.
 *
 * Whether it wins is for the GPU to say (docs/kernels.md has the prediction); the tests run every
 * variant against the C reference on the emulator and on a GPU. */
#include <math.h>

#include "attention_common.cuh"
#include "ptx.cuh"

#define M128_BM 128
#define M128_BN 32
#define M128_STAGES 3
#define M128_THREADS 128
#define M128_STAGE_ELEMS (2 * M128_BN * ATT_D) /* K then V of one tile */

/* Issues the copies of keys [n0, n0 + 32) of kv head g: K into k_tile, V into v_tile (swizzled).
 * Keys past Lk are zero-filled: their P is 0, and 0 * NaN would poison the output. */
static __device__ __forceinline__ void m128_load_tile(bf16 *k_tile, bf16 *v_tile,
                                                      const qe_attn_params &p, int s, int k_start,
                                                      int Lk, int n0, int g) {
#pragma unroll
    for (int it = 0; it < M128_BN * 16 / M128_THREADS; it++) {
        const int idx = threadIdx.x + it * M128_THREADS;
        const int r = idx >> 4, c = idx & 15;
        const int j = n0 + r;
        const bf16 *ks = (const bf16 *)p.k, *vs = (const bf16 *)p.v;
        int bytes = 0;
        if (j < Lk) {
            const long long off =
                kv_row(p, s, k_start, j) * p.kv_stride + (long long)g * ATT_D + c * 8;
            ks += off, vs += off;
            bytes = 16;
        }
        cp_async16(k_tile + swz(r, c * 8), ks, bytes);
        cp_async16(v_tile + swz(r, c * 8), vs, bytes);
    }
}

static __global__ void __launch_bounds__(M128_THREADS)
    flash_attn_m128_kernel(const qe_attn_params p, float scale_log2) {
    griddep_wait(); /* QE_LAUNCH_PDL: before any global memory (ptx.cuh) */
    griddep_launch_dependents();
    /* the ring; before the loop its first 32 KB stage the Q tile */
    __shared__ __align__(128) bf16 ring[M128_STAGES * M128_STAGE_ELEMS];

    const int s = blockIdx.x;
    const int m_block = gridDim.y - 1 - blockIdx.y; /* heavy (late) causal blocks first */
    const int h = blockIdx.z;
    const int q_start = p.cu_seqlens_q[s];
    const int Lq = p.cu_seqlens_q[s + 1] - q_start;
    const int m0 = m_block * M128_BM;
    if (m0 >= Lq) return;
    const int k_start = p.cu_seqlens_k[s];
    const int Lk = p.cu_seqlens_k[s + 1] - k_start;
    const int off = Lk - Lq; /* query i sits at absolute position i + off */
    const int g = h / (p.heads / p.kv_heads);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int gid = lane >> 2, tig = lane & 3; /* mma group id (row), thread in group (column) */
    const float slope_log2 = p.alibi_slopes ? p.alibi_slopes[h] * 1.4426950408889634f : 0.0f;

    /* ---- Q tile -> registers: rows warp*32 + mt*16 + [0, 16) ---- */
#pragma unroll
    for (int it = 0; it < M128_BM * 16 / M128_THREADS; it++) {
        const int idx = tid + it * M128_THREADS;
        const int r = idx >> 4, c = idx & 15;
        const int i = m0 + r;
        const bf16 *src = (const bf16 *)p.q;
        int bytes = 0;
        if (i < Lq) {
            src += (long long)(q_start + i) * p.q_stride + (long long)h * ATT_D + c * 8;
            bytes = 16;
        }
        cp_async16(ring + swz(r, c * 8), src, bytes);
    }
    cp_async_commit();
    cp_async_wait_all();
    __syncthreads();
    uint32_t qf[2][ATT_D / 16][4];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int kk = 0; kk < ATT_D / 16; kk++) {
            const int r = warp * 32 + mt * 16 + (lane & 15);
            const int c = kk * 16 + (lane >> 4) * 8;
            ldmatrix_x4(qf[mt][kk], ring + swz(r, c));
        }
    __syncthreads(); /* every warp has its Q before the ring is overwritten */

    float o[2][ATT_D / 8][4];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int dt = 0; dt < ATT_D / 8; dt++)
            o[mt][dt][0] = o[mt][dt][1] = o[mt][dt][2] = o[mt][dt][3] = 0.0f;
    float m_run[2][2], l_run[2][2];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
        m_run[mt][0] = m_run[mt][1] = -INFINITY, l_run[mt][0] = l_run[mt][1] = 0.0f;

    const int n_end = min(Lk, m0 + M128_BM + off);
    const int n_tiles = (n_end + M128_BN - 1) / M128_BN;
    const int row_lo = m0 + warp * 32 + gid; /* query of accumulator row 0 of m-tile 0 */

    /* prologue: tiles 0 and 1, one commit group each (empty groups keep the count uniform) */
#pragma unroll
    for (int t = 0; t < M128_STAGES - 1; t++) {
        bf16 *st = ring + t * M128_STAGE_ELEMS;
        if (t < n_tiles)
            m128_load_tile(st, st + M128_BN * ATT_D, p, s, k_start, Lk, t * M128_BN, g);
        cp_async_commit();
    }

    for (int jt = 0; jt < n_tiles; jt++) {
        const int n0 = jt * M128_BN;
        /* groups so far: tiles 0 .. jt + 1; all but the newest done means tile jt landed */
        cp_async_wait_pending<M128_STAGES - 2>();
        __syncthreads(); /* tile jt visible to all; every warp is done with tile jt - 1 */
        {
            /* tile jt + 2 goes where tile jt - 1 was */
            const int t = jt + M128_STAGES - 1;
            bf16 *st = ring + (t % M128_STAGES) * M128_STAGE_ELEMS;
            if (t < n_tiles)
                m128_load_tile(st, st + M128_BN * ATT_D, p, s, k_start, Lk, t * M128_BN, g);
            cp_async_commit();
        }
        const bf16 *sK = ring + (jt % M128_STAGES) * M128_STAGE_ELEMS, *sV = sK + M128_BN * ATT_D;

        /* ---- S = Q K^T: 32 x 32 per warp, each K fragment used by both m-tiles ---- */
        float sc[2][M128_BN / 8][4];
#pragma unroll
        for (int mt = 0; mt < 2; mt++)
#pragma unroll
            for (int nt = 0; nt < M128_BN / 8; nt++)
                sc[mt][nt][0] = sc[mt][nt][1] = sc[mt][nt][2] = sc[mt][nt][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < ATT_D / 16; kk++) {
#pragma unroll
            for (int np = 0; np < M128_BN / 16; np++) {
                const int mi = lane >> 3;
                const int r = np * 16 + (mi >> 1) * 8 + (lane & 7);
                const int c = kk * 16 + (mi & 1) * 8;
                uint32_t b[4];
                ldmatrix_x4(b, sK + swz(r, c));
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    mma_bf16(sc[mt][2 * np], qf[mt][kk], b[0], b[1]);
                    mma_bf16(sc[mt][2 * np + 1], qf[mt][kk], b[2], b[3]);
                }
            }
        }

        /* ---- scale, ALiBi, mask, online softmax (log2 domain), per m-tile ---- */
        const bool need_mask = (n0 + M128_BN > m0 + off) || (n0 + M128_BN > Lk);
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
            float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
            for (int nt = 0; nt < M128_BN / 8; nt++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int i_abs = row_lo + mt * 16 + (e >> 1) * 8 + off;
                    const int j = n0 + nt * 8 + 2 * tig + (e & 1);
                    float v = sc[mt][nt][e] * scale_log2;
                    if (p.alibi_slopes) v += slope_log2 * (float)(j - i_abs);
                    if (need_mask && (j >= Lk || j > i_abs)) v = -INFINITY;
                    sc[mt][nt][e] = v;
                    tile_max[e >> 1] = fmaxf(tile_max[e >> 1], v);
                }
            }
            float alpha[2], m_use[2];
            softmax_rescale(tile_max, m_run[mt], l_run[mt], alpha, m_use);
#pragma unroll
            for (int nt = 0; nt < M128_BN / 8; nt++) {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const float pe = exp2f(sc[mt][nt][e] - m_use[e >> 1]);
                    sc[mt][nt][e] = pe;
                    l_run[mt][e >> 1] += pe;
                }
            }
#pragma unroll
            for (int dt = 0; dt < ATT_D / 8; dt++) {
                o[mt][dt][0] *= alpha[0];
                o[mt][dt][1] *= alpha[0];
                o[mt][dt][2] *= alpha[1];
                o[mt][dt][3] *= alpha[1];
            }
        }

        /* ---- O += P V: each V fragment used by both m-tiles ---- */
#pragma unroll
        for (int kk = 0; kk < M128_BN / 16; kk++) {
            uint32_t pa[2][4];
#pragma unroll
            for (int mt = 0; mt < 2; mt++) {
                pa[mt][0] = pack_bf16x2(sc[mt][2 * kk][0], sc[mt][2 * kk][1]);
                pa[mt][1] = pack_bf16x2(sc[mt][2 * kk][2], sc[mt][2 * kk][3]);
                pa[mt][2] = pack_bf16x2(sc[mt][2 * kk + 1][0], sc[mt][2 * kk + 1][1]);
                pa[mt][3] = pack_bf16x2(sc[mt][2 * kk + 1][2], sc[mt][2 * kk + 1][3]);
            }
#pragma unroll
            for (int dp = 0; dp < ATT_D / 16; dp++) {
                const int mi = lane >> 3;
                const int r = kk * 16 + (mi & 1) * 8 + (lane & 7);
                const int c = dp * 16 + (mi >> 1) * 8;
                uint32_t b[4];
                ldmatrix_x4_trans(b, sV + swz(r, c));
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    mma_bf16(o[mt][2 * dp], pa[mt], b[0], b[1]);
                    mma_bf16(o[mt][2 * dp + 1], pa[mt], b[2], b[3]);
                }
            }
        }
    }
    cp_async_wait_all(); /* nothing is left in flight (the tail's groups are empty) */

    /* ---- normalise and store (rows < Lq only) ---- */
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const float inv = softmax_inv_sum(l_run[mt][r]);
            const int i = row_lo + mt * 16 + r * 8;
            if (i < Lq) {
                bf16 *dst =
                    (bf16 *)p.out + (long long)(q_start + i) * p.out_stride + (long long)h * ATT_D;
#pragma unroll
                for (int dt = 0; dt < ATT_D / 8; dt++) {
                    *(bf16x2 *)(dst + dt * 8 + 2 * tig) =
                        __floats2bfloat162_rn(o[mt][dt][2 * r] * inv, o[mt][dt][2 * r + 1] * inv);
                }
            }
        }
}

extern "C" int qe_attention_m128(const qe_attn_params *p, qe_stream s) {
    const int bad = attn_check_params(p);
    if (bad) return bad;
    if (p->n_seqs == 0 || p->max_seqlen_q == 0) return QE_K_OK;
    const unsigned m_blocks = qe_ceil_div(p->max_seqlen_q, M128_BM);
    QE_K_REQUIRE(m_blocks <= 65535);
    dim3 grid((unsigned)p->n_seqs, m_blocks, (unsigned)p->heads);
    const float scale_log2 = p->scale * 1.4426950408889634f;
    QE_LAUNCH_PDL(flash_attn_m128_kernel, grid, M128_THREADS, 0, s)(*p, scale_log2);
    CUDA_CHECK_LAUNCH();
    return QE_K_OK;
}
