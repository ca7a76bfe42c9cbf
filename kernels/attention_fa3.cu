/* attention_fa3.cu — attention variant 2 ("fa3", issue 15 item 2b): a FlashAttention-3-style
 * kernel for sm_90a with the contract of qe_attention (kernels.h: varlen packed sequences,
 * causal bottom-right aligned, GQA, head_dim 128, bf16 in/out, fp32 online softmax in the log2
 * domain, optional ALiBi, contiguous or paged K/V).
 *
 * One block = three warpgroups (384 threads) and 128 query rows of one (sequence, head):
 *   - warpgroup 0 is the producer: it gives registers away (setmaxnreg.dec 24) and one thread
 *     issues the TMA copies: the Q tile once per work item, then K and V tiles of 128 keys into
 *     two 2-stage rings, each stage on a "full" mbarrier (expect_tx) and an "empty" one (every
 *     consumer thread arrives when the wgmmas that read it have completed);
 *   - warpgroups 1 and 2 are consumers of 64 query rows each (setmaxnreg.inc 240): S = Q K^T with
 *     wgmma SS (m64n128k16, Q and K from shared memory), O += P V with wgmma RS (P from
 *     registers as bf16, V MN-major), the fp32 accumulators of S and O in registers;
 *   - ping-pong: the two consumers take turns on the tensor cores through named barriers 1 and 2
 *     (bar.sync on their own, bar.arrive on the other's), so one's softmax runs while the other's
 *     GEMMs do. A turn issues S(j) = Q K(j)^T and O += P(j-1) V(j-1) together, so each consumer
 *     also overlaps its own softmax of tile j with its P V of tile j-1;
 *   - persistent: the grid is the number of SMs; block b takes work items b, b + grid, ... of a
 *     list ordered longest-first: query blocks from the last one down (with causal masking a late
 *     query block has the most keys), then sequence, then head (heads sharing a kv head are
 *     neighbours, so their K/V tiles are reused from L2).
 *
 * Shared memory (dynamic, 192 KB + barriers): Q [2 buffers][2 panels][128 rows][64 cols] (the
 * next item's Q loads while this one runs), K and V [2 stages][2 panels][128 keys][64 cols], bf16,
 * each 128-byte row swizzled by TMA's 128-byte mode (16-byte chunk c of row r at c ^ r % 8), which
 * is the wgmma descriptors' 128-byte swizzle.
 *
 * Rows past the end of a sequence are never read: a tile's boxes cover only its valid rows, in
 * power-of-two boxes of at most 128 rows (one tensor map per box height: 128, 64, ..., 1), and
 * the rest of the tile is filled with zeros by boxes placed entirely out of bounds (TMA fills
 * them; so the bytes still count on the barrier). Zero V rows matter: P is 0 there, and 0 * NaN
 * (an unwritten page tail) would poison the output. Paged K/V uses a 3-D map (column, row in
 * page, page) and boxes of at most the largest power of two dividing page_size, so a box never
 * straddles a page: any page size works, the odd ones with many small boxes (page_size 7: one
 * row a box, slow but correct; an engine wanting speed uses a power of two >= 64). Should the
 * driver refuse a tensor map (no entry point, an unusual stride), the launcher falls back to the
 * fa2 variant (correct for every geometry) and says so once on stderr; so does a device that
 * is not sm_90. Untested on a GPU so far: the tails of odd lengths use boxes of 1-7 rows whose
 * shared destination is 128- but not 1024-byte aligned (the 128-byte swizzle is assumed to follow
 * the address, as the emulator does), and the zero boxes are wholly out of bounds.
 *
 * Launched with QE_LAUNCH_PDL like the other variants (griddep_wait before any global access).
 *
 * ptxas -v (nvcc 13.0, sm_90a, -O3): 168 registers (the launch bound of 384 threads; setmaxnreg
 * then gives 24 / 240), 0 bytes stack, 0 spill stores, 0 spill loads, 16 barriers reserved (the
 * named-barrier ids are run-time values); no C7514 ("wgmma serialized") warning. docs/kernels.md
 * ("attention_fa3.cu") has the prediction. */
#include <math.h>
#include <stdio.h>

#include "attention_common.cuh"
#include "ptx.cuh"

#define FA3_BM 128 /* query rows per work item: two consumer warpgroups of 64 */
#define FA3_BN 128 /* keys per K/V tile */
#define FA3_STAGES 2
#define FA3_THREADS 384
#define FA3_HEIGHTS 8 /* box heights 128 >> i, i < 8 */

#define FA3_TILE_BYTES (FA3_BN * ATT_D * 2) /* one K or V tile: 32 KB */
#define FA3_PANEL_BYTES (FA3_BN * 128)      /* 64 columns of 128 rows */
#define FA3_Q_BYTES (FA3_BM * ATT_D * 2)    /* one Q tile: 32 KB */
#define FA3_Q_OFF 0
#define FA3_K_OFF (FA3_Q_OFF + 2 * FA3_Q_BYTES)
#define FA3_V_OFF (FA3_K_OFF + FA3_STAGES * FA3_TILE_BYTES)
#define FA3_BAR_OFF (FA3_V_OFF + FA3_STAGES * FA3_TILE_BYTES)
#define FA3_SMEM_BYTES (FA3_BAR_OFF + 128)

enum { FA3_TURN0 = 1, FA3_TURN1 = 2 }; /* the named barriers of the ping-pong */

/* The tensor maps of one launch: per tensor one map per box height (128 >> i rows, 64 columns),
 * K and V 3-D over pages when paged. Passed as a __grid_constant__ parameter (3 KB). */
struct fa3_maps {
    CUtensorMap q[FA3_HEIGHTS], k[FA3_HEIGHTS], v[FA3_HEIGHTS];
};

/* The mbarriers, at FA3_BAR_OFF. */
struct fa3_bars {
    uint64_t q_full[2], q_empty[2]; /* Q is double-buffered: the next item's loads early */
    uint64_t k_full[FA3_STAGES], k_empty[FA3_STAGES];
    uint64_t v_full[FA3_STAGES], v_empty[FA3_STAGES];
};

/* Work item t of the longest-first order. */
struct fa3_item {
    int s, h, m_block;
};
static __device__ __forceinline__ fa3_item fa3_item_of(int t, int n_seqs, int heads, int m_blocks) {
    const int per_block = n_seqs * heads;
    const int r = t % per_block;
    return fa3_item{r / heads, r % heads, m_blocks - 1 - t / per_block};
}

/* The geometry of one work item, the same for producer and consumers. */
struct fa3_work {
    int q_start, Lq, k_start, Lk, off, m0, g, n_tiles;
};
static __device__ __forceinline__ fa3_work fa3_work_of(const qe_attn_params &p, fa3_item it) {
    fa3_work w;
    w.q_start = p.cu_seqlens_q[it.s];
    w.Lq = p.cu_seqlens_q[it.s + 1] - w.q_start;
    w.k_start = p.cu_seqlens_k[it.s];
    w.Lk = p.cu_seqlens_k[it.s + 1] - w.k_start;
    w.off = w.Lk - w.Lq; /* query i sits at absolute position i + off */
    w.m0 = it.m_block * FA3_BM;
    w.g = it.h / (p.heads / p.kv_heads);
    const int n_end = min(w.Lk, w.m0 + FA3_BM + w.off);
    w.n_tiles = w.m0 < w.Lq && n_end > 0 ? (n_end + FA3_BN - 1) / FA3_BN : 0;
    return w;
}

/* ---------------------------------------------------------------- the producer */

/* The largest box height index i (height 128 >> i) that fits `rows` at row r with r a multiple
 * of the height, at least min_i (min_i caps the height: the page's power of two). */
static __device__ __forceinline__ int fa3_height(int r, int rows, int min_i) {
    int i = min_i;
    while ((FA3_BN >> i) > rows || r % (FA3_BN >> i))
        i++;
    return i;
}

/* Copies rows [0, valid) of a 128-row tile (both 64-column panels) into dst, zeros into
 * [valid, 128), every box completing on bar. row0: the tile's first row in the tensor
 * (contiguous) or in the sequence (paged, with bt its block-table row); col: the first column. */
static __device__ void fa3_load_tile(unsigned char *dst, const CUtensorMap *maps, bool paged,
                                     const int32_t *bt, int page_size, int page_min_i, int row0,
                                     int valid, int col, uint64_t *bar) {
    int r = 0;
    while (r < FA3_BN) {
        const bool data = r < valid;
        const int i = data ? fa3_height(r, valid - r, page_min_i) : fa3_height(r, FA3_BN - r, 0);
        const CUtensorMap *m = &maps[i];
        for (int panel = 0; panel < 2; panel++) {
            unsigned char *d = dst + panel * FA3_PANEL_BYTES + r * 128;
            const int c = col + panel * 64;
            if (!paged) {
                tma_load_2d(d, m, c, data ? row0 + r : -FA3_BN, bar); /* rows < 0: zeros */
            } else if (data) {
                const int j = row0 + r;
                tma_load_3d(d, m, c, j % page_size, bt[j / page_size], bar);
            } else {
                tma_load_3d(d, m, c, 0, -1, bar); /* page -1: zeros */
            }
        }
        r += FA3_BN >> i;
    }
}

static __device__ QE_SM90A_HELPER void fa3_producer(const qe_attn_params &p, const fa3_maps &maps,
                                                    unsigned char *smem, fa3_bars *b, int n_items,
                                                    int m_blocks, int page_min_i) {
    const bool paged = p.block_table != nullptr;
    uint32_t q_uses = 0, tiles = 0;
    for (int t = blockIdx.x; t < n_items; t += gridDim.x) {
        const fa3_item it = fa3_item_of(t, p.n_seqs, p.heads, m_blocks);
        const fa3_work w = fa3_work_of(p, it);
        if (w.n_tiles == 0) continue;
        const int qst = q_uses % 2; /* both consumers done with the Q two items back */
        mbar_wait(&b->q_empty[qst], ((q_uses / 2) & 1) ^ 1);
        mbar_arrive_expect_tx(&b->q_full[qst], FA3_Q_BYTES);
        fa3_load_tile(smem + FA3_Q_OFF + qst * FA3_Q_BYTES, maps.q, false, nullptr, 1, 0,
                      w.q_start + w.m0, min(w.Lq - w.m0, FA3_BM), it.h * ATT_D, &b->q_full[qst]);
        q_uses++;
        const int32_t *bt =
            paged ? p.block_table + (long long)it.s * p.block_table_stride : nullptr;
        for (int j = 0; j < w.n_tiles; j++, tiles++) {
            const int st = tiles % FA3_STAGES, use = tiles / FA3_STAGES;
            const int n0 = j * FA3_BN, valid = min(w.Lk - n0, FA3_BN);
            const int row0 = paged ? n0 : w.k_start + n0;
            mbar_wait(&b->k_empty[st], (use & 1) ^ 1);
            mbar_arrive_expect_tx(&b->k_full[st], FA3_TILE_BYTES);
            fa3_load_tile(smem + FA3_K_OFF + st * FA3_TILE_BYTES, maps.k, paged, bt, p.page_size,
                          page_min_i, row0, valid, w.g * ATT_D, &b->k_full[st]);
            mbar_wait(&b->v_empty[st], (use & 1) ^ 1);
            mbar_arrive_expect_tx(&b->v_full[st], FA3_TILE_BYTES);
            fa3_load_tile(smem + FA3_V_OFF + st * FA3_TILE_BYTES, maps.v, paged, bt, p.page_size,
                          page_min_i, row0, valid, w.g * ATT_D, &b->v_full[st]);
        }
    }
}

/* ---------------------------------------------------------------- the consumers */

/* S (64 x 128 keys, fp32) = Q rows of this warpgroup x K tile^T: 8 k16 steps over the head,
 * 4 in each 64-column panel (the descriptor start moves 32 bytes a step inside the swizzled
 * 128-byte row, as the hardware's address-based swizzle expects). */
static __device__ __forceinline__ void fa3_issue_qk(float (&s)[64], const unsigned char *q,
                                                    const unsigned char *k) {
#pragma unroll
    for (int kk = 0; kk < ATT_D / 16; kk++) {
        const int o = (kk % 4) * 32;
        wgmma_bf16_ss<128>(
            s, wgmma_desc(q + (kk / 4) * (FA3_BM * 128) + o, 16, 1024, WGMMA_SWIZZLE_128B),
            wgmma_desc(k + (kk / 4) * FA3_PANEL_BYTES + o, 16, 1024, WGMMA_SWIZZLE_128B), kk > 0);
    }
}

/* O (64 x 128, fp32) += P (64 x 128 keys, bf16 in registers) x V tile: 8 k16 steps over the
 * keys; V is MN-major (the head dimension contiguous): 64 columns a 128-byte row, the next 64 at
 * LBO (the next panel), the next 8 keys at SBO. */
static __device__ __forceinline__ void fa3_issue_pv(float (&o)[64], const uint32_t (&pa)[8][4],
                                                    const unsigned char *v) {
#pragma unroll
    for (int kk = 0; kk < FA3_BN / 16; kk++)
        wgmma_bf16_rs<128, 1>(
            o, pa[kk], wgmma_desc(v + kk * 16 * 128, FA3_PANEL_BYTES, 1024, WGMMA_SWIZZLE_128B), 1);
}

/* The online softmax of one S tile in place (log2 domain): scale, ALiBi, mask, the running max
 * and sum of the thread's two rows (row_lo and row_lo + 8), alpha (the rescale of O) out. The
 * accumulator layout is mma.m16n8k16's per 8 columns: s[4 nt + e] is row row_lo + 8 (e / 2),
 * key n0 + 8 nt + 2 tig + e % 2. */
static __device__ __forceinline__ void fa3_softmax(float (&s)[64], float (&m_run)[2],
                                                   float (&l_run)[2], float (&alpha)[2], int n0,
                                                   int row_lo, int rows_first, const fa3_work &w,
                                                   float scale_log2, float slope_log2, bool alibi,
                                                   int tig) {
    const bool need_mask = (n0 + FA3_BN > rows_first + w.off) || (n0 + FA3_BN > w.Lk);
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < FA3_BN / 8; nt++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int i_abs = row_lo + (e >> 1) * 8 + w.off;
            const int j = n0 + nt * 8 + 2 * tig + (e & 1);
            float v = s[4 * nt + e] * scale_log2;
            if (alibi) v += slope_log2 * (float)(j - i_abs);
            if (need_mask && (j >= w.Lk || j > i_abs)) v = -INFINITY;
            s[4 * nt + e] = v;
            tile_max[e >> 1] = fmaxf(tile_max[e >> 1], v);
        }
    }
    float m_use[2];
    softmax_rescale(tile_max, m_run, l_run, alpha, m_use);
#pragma unroll
    for (int nt = 0; nt < FA3_BN / 8; nt++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const float pe = exp2f(s[4 * nt + e] - m_use[e >> 1]);
            s[4 * nt + e] = pe;
            l_run[e >> 1] += pe;
        }
    }
}

/* P as the A fragments of the eight k16 steps (two n8 accumulator tiles make one). */
static __device__ __forceinline__ void fa3_pack_p(uint32_t (&pa)[8][4], const float (&s)[64]) {
#pragma unroll
    for (int kk = 0; kk < FA3_BN / 16; kk++) {
        pa[kk][0] = pack_bf16x2(s[8 * kk + 0], s[8 * kk + 1]);
        pa[kk][1] = pack_bf16x2(s[8 * kk + 2], s[8 * kk + 3]);
        pa[kk][2] = pack_bf16x2(s[8 * kk + 4], s[8 * kk + 5]);
        pa[kk][3] = pack_bf16x2(s[8 * kk + 6], s[8 * kk + 7]);
    }
}

static __device__ __forceinline__ void fa3_rescale(float (&o)[64], const float (&alpha)[2]) {
#pragma unroll
    for (int dt = 0; dt < ATT_D / 8; dt++) {
        o[4 * dt + 0] *= alpha[0];
        o[4 * dt + 1] *= alpha[0];
        o[4 * dt + 2] *= alpha[1];
        o[4 * dt + 3] *= alpha[1];
    }
}

static __device__ QE_SM90A_HELPER void fa3_consumer(const qe_attn_params &p, unsigned char *smem,
                                                    fa3_bars *b, int n_items, int m_blocks,
                                                    float scale_log2, int wg) {
    const int ct = threadIdx.x % 128, lane = ct & 31, warp = ct >> 5;
    const int gid = lane >> 2, tig = lane & 3;
    const int my_turn = wg == 0 ? FA3_TURN0 : FA3_TURN1;
    const int their_turn = wg == 0 ? FA3_TURN1 : FA3_TURN0;
    if (wg == 1) named_bar_arrive(FA3_TURN0, 256); /* consumer 0 goes first */
    uint32_t q_uses = 0, tiles = 0;
    for (int t = blockIdx.x; t < n_items; t += gridDim.x) {
        const fa3_item it = fa3_item_of(t, p.n_seqs, p.heads, m_blocks);
        const fa3_work w = fa3_work_of(p, it);
        if (w.m0 >= w.Lq) continue;
        const int rows_first = w.m0 + 64 * wg;
        const int row_lo = rows_first + 16 * warp + gid; /* accumulator rows row_lo, +8 */
        const bool alibi = p.alibi_slopes != nullptr;
        const float slope_log2 = alibi ? p.alibi_slopes[it.h] * 1.4426950408889634f : 0.0f;
        float o[64], s[64];
        uint32_t pa[8][4];
        float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f}, alpha[2];
#pragma unroll
        for (int i = 0; i < 64; i++)
            o[i] = 0.0f;
        const int qst = q_uses % 2;
        const unsigned char *q = smem + FA3_Q_OFF + qst * FA3_Q_BYTES + wg * 64 * 128; /* my rows */
        if (w.n_tiles > 0) {
            mbar_wait(&b->q_full[qst], (q_uses / 2) & 1);
            q_uses++;
        }
        /* Turn j on the tensor cores issues S(j) = Q K(j)^T and O += P(j-1) V(j-1); the first
         * turn has no P V, the last (j = n_tiles) no S. Straight-line code in each part (no
         * branch between a wgmma and its wait), so ptxas keeps the wgmmas asynchronous. */
        const int nt = w.n_tiles;
        if (nt > 0) { /* turn 0: S(0) */
            const uint32_t kt = tiles;
            const int kst = kt % FA3_STAGES;
            mbar_wait(&b->k_full[kst], (kt / FA3_STAGES) & 1);
            named_bar_sync(my_turn, 256);
            wgmma_fence_operands(s);
            wgmma_fence();
            fa3_issue_qk(s, q, smem + FA3_K_OFF + kst * FA3_TILE_BYTES);
            wgmma_commit_group();
            wgmma_fence_operands(s);
            named_bar_arrive(their_turn, 256);
            wgmma_wait_group<0>();
            wgmma_fence_operands(s);
            mbar_arrive(&b->k_empty[kst]);
            if (nt == 1) mbar_arrive(&b->q_empty[qst]); /* the item's last read of Q */
            fa3_softmax(s, m_run, l_run, alpha, 0, row_lo, rows_first, w, scale_log2, slope_log2,
                        alibi, tig);
            fa3_pack_p(pa, s);
        }
        for (int j = 1; j < nt; j++) { /* turns 1 .. nt-1: S(j) and P(j-1) V(j-1) */
            const uint32_t kt = tiles + j, vt = tiles + j - 1;
            const int kst = kt % FA3_STAGES, vst = vt % FA3_STAGES;
            mbar_wait(&b->k_full[kst], (kt / FA3_STAGES) & 1);
            mbar_wait(&b->v_full[vst], (vt / FA3_STAGES) & 1);
            named_bar_sync(my_turn, 256);
            wgmma_fence_operands(s);
            wgmma_fence_operands(o);
            wgmma_fence();
            fa3_issue_qk(s, q, smem + FA3_K_OFF + kst * FA3_TILE_BYTES);
            wgmma_commit_group();
            fa3_issue_pv(o, pa, smem + FA3_V_OFF + vst * FA3_TILE_BYTES);
            wgmma_commit_group();
            wgmma_fence_operands(s);
            wgmma_fence_operands(o);
            named_bar_arrive(their_turn, 256);
            wgmma_wait_group<1>(); /* S(j) done; P V still running */
            wgmma_fence_operands(s);
            mbar_arrive(&b->k_empty[kst]);
            if (j == nt - 1) mbar_arrive(&b->q_empty[qst]);
            fa3_softmax(s, m_run, l_run, alpha, j * FA3_BN, row_lo, rows_first, w, scale_log2,
                        slope_log2, alibi, tig);
            wgmma_wait_group<0>();
            wgmma_fence_operands(o);
            mbar_arrive(&b->v_empty[vst]);
            fa3_rescale(o, alpha);
            fa3_pack_p(pa, s);
        }
        if (nt > 0) { /* the last turn: P(nt-1) V(nt-1) */
            const uint32_t vt = tiles + nt - 1;
            const int vst = vt % FA3_STAGES;
            mbar_wait(&b->v_full[vst], (vt / FA3_STAGES) & 1);
            named_bar_sync(my_turn, 256);
            wgmma_fence_operands(o);
            wgmma_fence();
            fa3_issue_pv(o, pa, smem + FA3_V_OFF + vst * FA3_TILE_BYTES);
            wgmma_commit_group();
            wgmma_fence_operands(o);
            named_bar_arrive(their_turn, 256);
            wgmma_wait_group<0>();
            wgmma_fence_operands(o);
            mbar_arrive(&b->v_empty[vst]);
        }
        tiles += w.n_tiles;

        /* normalise and store (rows < Lq only) */
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const float inv = softmax_inv_sum(l_run[r]);
            const int i = row_lo + r * 8;
            if (i < w.Lq) {
                bf16 *dst = (bf16 *)p.out + (long long)(w.q_start + i) * p.out_stride +
                            (long long)it.h * ATT_D;
#pragma unroll
                for (int dt = 0; dt < ATT_D / 8; dt++)
                    *(bf16x2 *)(dst + dt * 8 + 2 * tig) =
                        __floats2bfloat162_rn(o[4 * dt + 2 * r] * inv, o[4 * dt + 2 * r + 1] * inv);
            }
        }
    }
    if (wg == 0) named_bar_sync(FA3_TURN0, 256); /* consumer 1's last hand-over */
}

static __global__ void __launch_bounds__(FA3_THREADS, 1)
    flash_attn_fa3_kernel(const qe_attn_params p, const __grid_constant__ fa3_maps maps,
                          float scale_log2, int n_items, int m_blocks, int page_min_i) {
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
    __trap(); /* a build for another GPU: the launcher never runs it there (fa2 instead) */
#else
    griddep_wait(); /* QE_LAUNCH_PDL: before any global memory (ptx.cuh) */
    griddep_launch_dependents();
    QE_DYNAMIC_SMEM(smem);
    fa3_bars *b = (fa3_bars *)(smem + FA3_BAR_OFF);
    if (threadIdx.x == 0) {
        for (int st = 0; st < 2; st++) {
            mbar_init(&b->q_full[st], 1);
            mbar_init(&b->q_empty[st], 256);
        }
        for (int st = 0; st < FA3_STAGES; st++) {
            mbar_init(&b->k_full[st], 1);
            mbar_init(&b->k_empty[st], 256);
            mbar_init(&b->v_full[st], 1);
            mbar_init(&b->v_empty[st], 256);
        }
        mbar_fence_init();
    }
    __syncthreads();
    const int wg = threadIdx.x / 128;
    if (wg == 0) {
        setmaxnreg_dec<24>();
        if (threadIdx.x == 0) fa3_producer(p, maps, smem, b, n_items, m_blocks, page_min_i);
        return;
    }
    setmaxnreg_inc<240>();
    fa3_consumer(p, smem, b, n_items, m_blocks, scale_log2, wg - 1);
#endif
}

/* ---------------------------------------------------------------- the launcher */

extern "C" int qe_attention_fa2(const qe_attn_params *p, qe_stream s);

/* One map per box height: rows of `row_bytes` stride, `cols` columns; 2-D (rows unbounded: the
 * kernel reads only valid rows) or, paged, 3-D (row in page, page). */
static int fa3_encode(CUtensorMap (&maps)[FA3_HEIGHTS], const void *base, int cols,
                      long long row_bytes, int page_size) {
    for (int i = 0; i < FA3_HEIGHTS; i++) {
        const cuuint32_t h = FA3_BN >> i;
        cudaError_t e;
        if (page_size == 0) {
            const cuuint64_t dims[2] = {(cuuint64_t)cols, 1ull << 31};
            const cuuint64_t strides[1] = {(cuuint64_t)row_bytes};
            const cuuint32_t box[2] = {64, h};
            e = tensor_map_tiled(&maps[i], CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, base, dims, strides,
                                 box, CU_TENSOR_MAP_SWIZZLE_128B,
                                 CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
        } else {
            const cuuint64_t dims[3] = {(cuuint64_t)cols, (cuuint64_t)page_size, 1ull << 31};
            const cuuint64_t strides[2] = {(cuuint64_t)row_bytes,
                                           (cuuint64_t)row_bytes * (cuuint64_t)page_size};
            const cuuint32_t box[3] = {64, h, 1};
            e = tensor_map_tiled(&maps[i], CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, base, dims, strides,
                                 box, CU_TENSOR_MAP_SWIZZLE_128B,
                                 CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
        }
        if (e != cudaSuccess) return -1;
    }
    return 0;
}

/* The fa2 kernel instead, said once on stderr (so a benchmark line labelled fa3 is not misread). */
static int fa3_fallback(const qe_attn_params *p, qe_stream s, const char *why) {
    static bool said;
    if (!said) fprintf(stderr, "qembed: attention variant fa3: %s; running fa2 instead\n", why);
    said = true;
    return qe_attention_fa2(p, s);
}

/* The kernel's dynamic shared memory attribute, set once per device (it is per function and
 * device; a call per launch would cost a driver call each). */
static cudaError_t fa3_allow_smem() {
    static bool done[64];
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64)
        return QE_ALLOW_DYNAMIC_SMEM(flash_attn_fa3_kernel, FA3_SMEM_BYTES);
    if (done[dev]) return cudaSuccess;
    const cudaError_t e = QE_ALLOW_DYNAMIC_SMEM(flash_attn_fa3_kernel, FA3_SMEM_BYTES);
    done[dev] = e == cudaSuccess;
    return e;
}

/* The blocks of the persistent grid: one per SM (a fixed few on the emulator, whose stand-in
 * device has no SM count worth the name; several items per block still run). */
static int fa3_grid_size() {
#ifdef QE_EMU
    return 3;
#else
    static int sms[64];
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return 132;
    if (!sms[dev] &&
        cudaDeviceGetAttribute(&sms[dev], cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
        sms[dev] = 132;
    return sms[dev];
#endif
}

extern "C" int qe_attention_fa3(const qe_attn_params *p, qe_stream s) {
    const int bad = attn_check_params(p);
    if (bad) return bad;
    if (p->n_seqs == 0 || p->max_seqlen_q == 0) return QE_K_OK;
    const long long m_blocks = qe_ceil_div(p->max_seqlen_q, FA3_BM);
    const long long n_items = m_blocks * p->n_seqs * p->heads;
    QE_K_REQUIRE(n_items < (1ll << 31));
    if (!qe_sm90a_kernels_run())
        return fa3_fallback(p, s,
                            "the device is not sm_90 (Hopper) or the build has no sm_90a code");
    const bool paged = p->block_table != nullptr;
    /* the largest power of two dividing page_size, as a box height index (at most 128 rows) */
    int page_min_i = 0;
    if (paged)
        while (page_min_i < FA3_HEIGHTS - 1 && p->page_size % (FA3_BN >> page_min_i))
            page_min_i++;
    fa3_maps maps; /* the launch copies it into the kernel's parameters */
    if (fa3_encode(maps.q, p->q, p->heads * ATT_D, (long long)p->q_stride * 2, 0) ||
        fa3_encode(maps.k, p->k, p->kv_heads * ATT_D, (long long)p->kv_stride * 2,
                   paged ? p->page_size : 0) ||
        fa3_encode(maps.v, p->v, p->kv_heads * ATT_D, (long long)p->kv_stride * 2,
                   paged ? p->page_size : 0))
        return fa3_fallback(p, s, "the driver refused a TMA tensor map");
    CUDA_CHECK(fa3_allow_smem());
    const int grid = (int)(n_items < fa3_grid_size() ? n_items : fa3_grid_size());
    const float scale_log2 = p->scale * 1.4426950408889634f;
    QE_LAUNCH_PDL(flash_attn_fa3_kernel, grid, FA3_THREADS, FA3_SMEM_BYTES, s)
    (*p, maps, scale_log2, (int)n_items, (int)m_blocks, page_min_i);
    CUDA_CHECK_LAUNCH();
    return QE_K_OK;
}
