/* qgemm.cu — y = x w^T with w kept quantized (Q8_0, Q4_K, Q6_K in the packed rows of
 * kernels/ref/ref_qpack.h), dequantized in registers, bf16 mma.sync with fp32 accumulation.
 *
 * The weight is the A operand (16 weight rows x k16) and the activations the B operand (k16 x 8
 * tokens), so the skinny query case (M <= 32 tokens) still fills the MMA's 16-row side with
 * weights. A lane loads, per span of 128 columns, 16 bytes of nibbles (Q4_K; Q6_K adds 8 bytes
 * of high bits, Q8_0 takes 32 bytes) of each of its two rows (gid, gid + 8): by the packed order
 * these are its A-fragment values of 8 MMAs, so the weight never goes through shared memory. The
 * block's x tile of one span ([tokens][128] bf16, swizzled 16-byte chunks as in attention.cu)
 * goes through shared memory with cp.async, double-buffered, and B fragments come by ldmatrix.
 * While span s multiplies, span s+1's x tile is in flight (cp.async) and its weight bytes too
 * (plain loads into registers issued before the MMAs), so the dequantization of one span overlaps
 * the loads of the next and, across warps, the MMAs.
 *
 * One kernel template, two shapes, chosen by M in qe_qgemm:
 *   skinny (M <= 32): a warp owns 16 weight rows, a block 64 rows x 32 tokens; split-K over spans
 *     (blockIdx.z) writes fp32 partials [split][M][N] to the workspace, and a second kernel sums
 *     them in split order (deterministic, no atomics) and writes y.
 *   prefill (M > 32): a warp owns 32 weight rows (2 m-tiles sharing each B fragment), a block
 *     128 rows x 64 tokens, the whole K per block, y written directly.
 * Dequantized values equal ref_dequantize's bit for bit (fp32, same operation order) before
 * their bf16 rounding. */
#include "common.cuh"
#include "ptx.cuh"
#include "qpack.cuh"

#define QG_WARPS 4
#define QG_THREADS (QG_WARPS * 32)
#define QG_SKINNY_M 32
/* skinny split-K: one full wave of resident blocks (127 registers: 4 blocks of 4 warps per SM on
 * the 132 SMs of an H100/H200), so each SM has 16 warps streaming; fewer splits leave SMs idle
 * (qkv at M = 24 has only 96 row blocks) */
#define QG_TARGET_BLOCKS 528
#define QG_MIN_SPANS 2 /* per split */
/* the split-K partials (written, then read back, mostly from L2) may cost at most the weight
 * bytes: an idle SM costs more than they do */
#define QG_PART_SHARE_NUM 1
#define QG_PART_SHARE_DEN 1

typedef struct qg_params {
    const bf16 *x;
    int ldx, m, k;
    const uint8_t *w;
    int n;
    size_t row_bytes;
    void *y;
    int ldy, y_f32, accumulate;
    float *part; /* [gridDim.z][m][n] partial sums, or NULL: y directly */
    int spans_per_split;
} qg_params;

/* Element offset of (row, col) in a swizzled [rows][128] bf16 tile; col a multiple of 8. */
static __device__ __forceinline__ int swz(int row, int col) {
    return row * QP_SPAN + ((((col >> 3) ^ (row & 7))) << 3);
}

/* cp.async of the x tile of span s: tokens [tok0, tok0 + 8*NT), zero-filled past m. */
template <int NT>
static __device__ __forceinline__ void load_x_tile(bf16 *tile, const qg_params &p, int tok0,
                                                   int s) {
#pragma unroll
    for (int it = 0; it < NT * 8 * 16 / QG_THREADS; it++) {
        const int idx = threadIdx.x + it * QG_THREADS;
        const int r = idx >> 4, c = idx & 15;
        const int t = tok0 + r;
        const bf16 *src = p.x;
        int bytes = 0;
        if (t < p.m) {
            src = p.x + (size_t)t * p.ldx + (size_t)s * QP_SPAN + c * 8;
            bytes = 16;
        }
        cp_async16(tile + swz(r, c * 8), src, bytes);
    }
}

/* Stores one accumulator element: to the partials, or y (fp32 = / +=, or bf16). */
static __device__ __forceinline__ void store_out(const qg_params &p, int tok, int row, float v) {
    if (p.part) {
        p.part[((size_t)blockIdx.z * p.m + tok) * p.n + row] = v;
    } else if (p.y_f32) {
        float *y = (float *)p.y + (size_t)tok * p.ldy + row;
        *y = p.accumulate ? *y + v : v;
    } else {
        ((bf16 *)p.y)[(size_t)tok * p.ldy + row] = f32_to_bf16(v);
    }
}

/* The body of both kernels: MT m-tiles (16 weight rows each) per warp, NT n-tiles (8 tokens
 * each) per block; sx the two x-tile buffers, [2][NT * 8 * QP_SPAN] bf16 of shared memory. */
template <int TYPE, int MT, int NT>
static __device__ __forceinline__ void qgemm_body(const qg_params &p,
                                                  bf16 (*sx)[NT * 8 * QP_SPAN]) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int gid = lane >> 2, tig = lane & 3;
    const int row0 = (blockIdx.x * QG_WARPS + warp) * MT * 16;
    const int tok0 = blockIdx.y * NT * 8;
    const int s_begin = blockIdx.z * p.spans_per_split;
    const int s_end = min(p.k / QP_SPAN, s_begin + p.spans_per_split);
    const int nt_used = min(NT, (p.m - tok0 + 7) / 8); /* warp-uniform: n-tiles with a token */

    const uint8_t *wrow[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++) /* rows past n read the last row; their sums are dropped */
            wrow[mt][h] = p.w + (size_t)min(row0 + mt * 16 + h * 8 + gid, p.n - 1) * p.row_bytes;

    float acc[MT][NT][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
            acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.0f;

    qraw<TYPE> cur[MT][2], nxt[MT][2];
    load_x_tile<NT>(sx[0], p, tok0, s_begin);
    cp_async_commit();
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++)
            cur[mt][h].load(wrow[mt][h], p.k, s_begin, tig);

    for (int s = s_begin; s < s_end; s++) {
        const int buf = (s - s_begin) & 1;
        cp_async_wait_all();
        __syncthreads(); /* x(s) landed; every warp is done with the other buffer (span s-1) */
        if (s + 1 < s_end) {
            load_x_tile<NT>(sx[buf ^ 1], p, tok0, s + 1);
            cp_async_commit();
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int h = 0; h < 2; h++)
                    nxt[mt][h].load(wrow[mt][h], p.k, s + 1, tig);
        }
        const bf16 *tile = sx[buf];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
            cur[mt][0].decode(s), cur[mt][1].decode(s);
#pragma unroll
        for (int j = 0; j < QP_SPAN / 16; j++) {
            uint32_t a[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                cur[mt][0].pairs(j, a[mt][0], a[mt][2]);
                cur[mt][1].pairs(j, a[mt][1], a[mt][3]);
            }
#pragma unroll
            for (int np = 0; np < NT / 2; np++) {
                if (2 * np >= nt_used) break;
                const int mi = lane >> 3;
                const int r = np * 16 + (mi >> 1) * 8 + (lane & 7);
                uint32_t b[4];
                ldmatrix_x4(b, tile + swz(r, j * 16 + (mi & 1) * 8));
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma_bf16(acc[mt][2 * np], a[mt], b[0], b[1]);
                    if (2 * np + 1 < nt_used) mma_bf16(acc[mt][2 * np + 1], a[mt], b[2], b[3]);
                }
            }
        }
        if (s + 1 < s_end) {
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
                cur[mt][0] = nxt[mt][0], cur[mt][1] = nxt[mt][1];
        }
    }

    /* C fragment: element e of n-tile nt is (weight row gid + 8*(e>>1), token 2tig + (e&1)) */
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int row = row0 + mt * 16 + gid + (e >> 1) * 8;
                const int tok = tok0 + nt * 8 + 2 * tig + (e & 1);
                if (row < p.n && tok < p.m) store_out(p, tok, row, acc[mt][nt][e]);
            }
}

/* The two kernels, each with its shared tile (static, sized by the shape: a template's own
 * __shared__ would not be; the type is one warp-uniform switch at entry). */
static __global__ void __launch_bounds__(QG_THREADS)
    qgemm_skinny_kernel(const qg_params p, int type) {
    __shared__ __align__(128) bf16 sx[2][4 * 8 * QP_SPAN];
    if (type == QT_Q8_0)
        qgemm_body<QT_Q8_0, 1, 4>(p, sx);
    else if (type == QT_Q4_K)
        qgemm_body<QT_Q4_K, 1, 4>(p, sx);
    else
        qgemm_body<QT_Q6_K, 1, 4>(p, sx);
}
static __global__ void __launch_bounds__(QG_THREADS)
    qgemm_prefill_kernel(const qg_params p, int type) {
    __shared__ __align__(128) bf16 sx[2][8 * 8 * QP_SPAN];
    if (type == QT_Q8_0)
        qgemm_body<QT_Q8_0, 2, 8>(p, sx);
    else if (type == QT_Q4_K)
        qgemm_body<QT_Q4_K, 2, 8>(p, sx);
    else
        qgemm_body<QT_Q6_K, 2, 8>(p, sx);
}

/* y = the splits' partials summed in split order (+ y when accumulate). */
static __global__ void qgemm_reduce_kernel(const float *__restrict__ part, int splits, int m, int n,
                                           void *y, int ldy, int y_f32, int accumulate) {
    const size_t total = (size_t)m * n, stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        float v = 0.0f;
        for (int z = 0; z < splits; z++)
            v += part[(size_t)z * total + i];
        const size_t tok = i / n, row = i % n;
        if (y_f32) {
            float *o = (float *)y + tok * ldy + row;
            *o = accumulate ? *o + v : v;
        } else {
            ((bf16 *)y)[tok * ldy + row] = f32_to_bf16(v);
        }
    }
}

/* Splits for the skinny path: enough blocks to keep every SM streaming (QG_TARGET_BLOCKS), at
 * least QG_MIN_SPANS spans each, the partials (written and read back, 8 bytes per output per
 * split) at most QG_PART_SHARE_NUM/DEN of the weight bytes, and what the workspace holds. */
extern "C" int qe_qgemm_splits(int type, int m, int k, int n, size_t ws_bytes) {
    const size_t rb = qp_row_bytes((uint32_t)type, k);
    if (m <= 0 || m > QG_SKINNY_M || rb == 0 || n <= 0) return 1;
    const int spans = k / QP_SPAN;
    const int row_blocks = (int)qe_ceil_div(n, QG_WARPS * 16);
    long long splits = qe_ceil_div(QG_TARGET_BLOCKS, row_blocks);
    const long long most = spans / QG_MIN_SPANS > 0 ? spans / QG_MIN_SPANS : 1;
    const long long by_bytes = (long long)(rb * QG_PART_SHARE_NUM) / (QG_PART_SHARE_DEN * 8ll * m);
    const long long fit = (long long)(ws_bytes / ((size_t)m * (size_t)n * sizeof(float)));
    if (splits > most) splits = most;
    if (splits > by_bytes) splits = by_bytes;
    if (splits > fit) splits = fit;
    if (splits < 1) splits = 1;
    const int per = (int)qe_ceil_div(spans, splits);
    return (int)qe_ceil_div(spans, per); /* no empty split */
}

extern "C" int qe_qgemm(const qe_bf16 *x, int ldx, int m, int k, const void *w, int wtype, int n,
                        void *y, int ldy, int y_f32, int accumulate, void *ws, size_t ws_bytes,
                        qe_stream s) {
    QE_K_REQUIRE(x != NULL && w != NULL && y != NULL);
    QE_K_REQUIRE(qp_supported((uint32_t)wtype));
    QE_K_REQUIRE(m >= 0 && n > 0 && k > 0 && k % QP_K_ALIGN == 0 && ldx >= k && ldy >= n);
    QE_K_REQUIRE(ldx % 8 == 0 && (uintptr_t)x % 16 == 0 && (uintptr_t)w % 16 == 0);
    QE_K_REQUIRE(!accumulate || y_f32);
    if (m == 0) return QE_K_OK;
    qg_params p;
    memset(&p, 0, sizeof p);
    p.x = (const bf16 *)x, p.ldx = ldx, p.m = m, p.k = k;
    p.w = (const uint8_t *)w, p.n = n, p.row_bytes = qp_row_bytes((uint32_t)wtype, k);
    p.y = y, p.ldy = ldy, p.y_f32 = y_f32, p.accumulate = accumulate;
    const int spans = k / QP_SPAN;
    if (m > QG_SKINNY_M) {
        p.spans_per_split = spans;
        const dim3 grid(qe_ceil_div(n, QG_WARPS * 2 * 16), qe_ceil_div(m, 64), 1);
        QE_K_REQUIRE(grid.y <= 65535);
        QE_LAUNCH(qgemm_prefill_kernel, grid, QG_THREADS, 0, s)(p, wtype);
        CUDA_CHECK_LAUNCH();
        return QE_K_OK;
    }
    const int splits = ws ? qe_qgemm_splits(wtype, m, k, n, ws_bytes) : 1;
    p.spans_per_split = (int)qe_ceil_div(spans, splits);
    p.part = splits > 1 ? (float *)ws : NULL;
    const dim3 grid(qe_ceil_div(n, QG_WARPS * 16), 1, (unsigned)splits);
    QE_LAUNCH(qgemm_skinny_kernel, grid, QG_THREADS, 0, s)(p, wtype);
    CUDA_CHECK_LAUNCH();
    if (splits == 1) return QE_K_OK;
    const size_t total = (size_t)m * n;
    const unsigned blocks = total / 256 + 1 < 1024 ? (unsigned)(total / 256 + 1) : 1024;
    QE_LAUNCH(qgemm_reduce_kernel, blocks, 256, 0, s)
    ((const float *)ws, splits, m, n, y, ldy, y_f32, accumulate);
    CUDA_CHECK_LAUNCH();
    return QE_K_OK;
}
