/* gemm_skinny.cu — y[m, n] = x[m, k] w[n, k]^T for short steps (1 <= m <= 32): the query-step
 * linear layers, which are bound by reading the bf16 weights once. qe_gemm_bf16 (gemm.cu) runs it
 * instead of cuBLASLt when QE_GEMM=skinny or qe_gemm_select chose it (docs/kernels.md).
 *
 * A block of 4 warps owns 64 rows of w (16 a warp) and one slice of k (split-K). Each lane
 * streams its rows with 16-byte plain loads straight into mma.sync A fragments: w is used once,
 * from registers, so staging it through shared memory (cp.async) would only add shared traffic.
 * The x slice goes to shared memory by cp.async in tiles of 512 columns (32 x 512 bf16 is 32 KB:
 * all of x fits the 48 KB of static shared memory only for k <= 640) and serves as the B
 * operand; an m16n8k16 tile is 16 rows of w by 8 tokens, so m = 32 takes 4 of them.
 *
 * With one slice the block writes y itself; with several, each writes fp32 partial sums to a
 * workspace [splits, m, n] and a second kernel adds them in slice order and applies the output
 * dtype and accumulate. No atomics, so the result is deterministic. The split plan depends on
 * (n, k) and the workspace size only, not on m, and each token is its own mma column: a row of
 * y depends on its own x row and w only, bitwise, whatever m is (within this path).
 *
 * Fused epilogues (the end of the file): the gate|up projection with SwiGLU and the qkv projection
 * with the q/k-head RMSNorm + RoPE done in the reduction pass, for a query step's fewer launches.
 */
#include <math.h>

#include "common.cuh"
#include "ptx.cuh"
#include "qk_norm_rope.cuh"
#include "swiglu.cuh"

#define SK_WARPS 4
#define SK_THREADS (SK_WARPS * 32)
#define SK_ROWS (SK_WARPS * 16) /* rows of w a block owns */
#define SK_MAX_M 32
#define SK_KSTEP 128 /* columns a warp reads per step: 4 threads x 4 chunks of 8 per row */
#define SK_KT 512    /* columns of x a block stages at a time */
/* x row stride in shared memory: 512 + 32 bf16 = 1088 bytes = 64 mod 128, so tokens g and g+1
 * (the two 8-thread phases of a 16-byte load) fall on opposite halves of the 32 banks. */
#define SK_XSTRIDE (SK_KT + 32)
/* Blocks the split plan aims for: two per SM of an H100/H200 (132 SMs), 8 warps each SM with 4 KB
 * of weights in flight per warp; slices no shorter than 256 columns. A guess until it is timed. */
#define SK_TARGET_BLOCKS 264
#define SK_MIN_SLICE 256

typedef struct skinny_params {
    const bf16 *x, *w;
    void *y;
    float *partial; /* [splits, m, n] fp32 when splits > 1 */
    int ldx, ldy, m, n, k;
    int y_f32, accumulate;
    int slice;  /* columns of k per block, a multiple of SK_KSTEP */
    int splits; /* gridDim.y */
    int tiles;  /* m-tiles of 8 tokens: ceil(m / 8) */
} skinny_params;

/* Writes one output element as qe_gemm_bf16 does: bf16, fp32, or fp32 added to y. */
static __device__ __forceinline__ void store_y(const skinny_params &p, int t, int row, float v) {
    if (p.y_f32) {
        float *y = (float *)p.y + (long long)t * p.ldy + row;
        *y = p.accumulate ? *y + v : v;
    } else {
        ((bf16 *)p.y)[(long long)t * p.ldy + row] = f32_to_bf16(v);
    }
}

/* Copies x[0 .. 8*tiles, k0 .. k0+SK_KT) into the shared tile; tokens past m and columns past
 * k_end are zero-filled, so the mma adds exact zeros there. */
static __device__ __forceinline__ void stage_x(bf16 *sx, const skinny_params &p, int k0,
                                               int k_end) {
    const int chunks = p.tiles * 8 * (SK_KT / 8);
    for (int i = threadIdx.x; i < chunks; i += SK_THREADS) {
        const int t = i / (SK_KT / 8), c = i % (SK_KT / 8);
        const int col = k0 + c * 8;
        const bool in = t < p.m && col < k_end;
        cp_async16(sx + t * SK_XSTRIDE + c * 8, in ? p.x + (long long)t * p.ldx + col : p.x,
                   in ? 16 : 0);
    }
    cp_async_commit();
}

/* 8 consecutive bf16 of a w row, or zeros past the slice or past the last row (w holds no NaN
 * there to meet the zero-filled x, but reading past the matrix is out of bounds). */
static __device__ __forceinline__ uint4 load_w8(const bf16 *row, bool row_ok, int col, int k_end) {
    uint4 v = {0u, 0u, 0u, 0u};
    if (row_ok && col < k_end) v = *(const uint4 *)(row + col);
    return v;
}

/* The mma's k order is free (a dot product), so a 16-byte chunk of w is used as it lies: thread
 * (g, t) holds 8 consecutive columns of rows g and g+8, the first 4 for one m16n8k16 step and the
 * last 4 for the next, and reads the same 8 columns of token g's x as its B fragment. */
static __global__ void __launch_bounds__(SK_THREADS) gemm_skinny_kernel(const skinny_params p) {
    griddep_wait(); /* QE_LAUNCH_PDL: before any global memory (ptx.cuh) */
    griddep_launch_dependents();
    __shared__ __align__(128) bf16 sx[SK_MAX_M * SK_XSTRIDE];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, t = lane & 3;
    const int row_lo = blockIdx.x * SK_ROWS + warp * 16 + g, row_hi = row_lo + 8;
    const bf16 *w_lo = p.w + (long long)row_lo * p.k, *w_hi = p.w + (long long)row_hi * p.k;
    const bool ok_lo = row_lo < p.n, ok_hi = row_hi < p.n;
    const int k_begin = blockIdx.y * p.slice, k_end = min(p.k, k_begin + p.slice);

    float acc[SK_MAX_M / 8][4];
#pragma unroll
    for (int j = 0; j < SK_MAX_M / 8; j++)
        acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;

    for (int k0 = k_begin; k0 < k_end; k0 += SK_KT) {
        if (k0 != k_begin) __syncthreads(); /* every warp is done with the previous tile */
        stage_x(sx, p, k0, k_end);
        const int steps = (min(SK_KT, k_end - k0) + SK_KSTEP - 1) / SK_KSTEP;
        /* the first step's weights do not wait for x: issue them before the barrier */
        uint4 a_lo[4], a_hi[4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            a_lo[u] = load_w8(w_lo, ok_lo, k0 + (t + 4 * u) * 8, k_end);
            a_hi[u] = load_w8(w_hi, ok_hi, k0 + (t + 4 * u) * 8, k_end);
        }
        cp_async_wait_all();
        __syncthreads(); /* the x tile has landed for every thread */
        for (int s = 0; s < steps; s++) {
            const int kc = s * SK_KSTEP;
            uint4 n_lo[4], n_hi[4]; /* the next step's weights, in flight during these mmas */
            const bool more = s + 1 < steps;
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const int col = k0 + kc + SK_KSTEP + (t + 4 * u) * 8;
                n_lo[u] = load_w8(w_lo, ok_lo && more, col, k_end);
                n_hi[u] = load_w8(w_hi, ok_hi && more, col, k_end);
            }
#pragma unroll
            for (int u = 0; u < 4; u++) {
                uint32_t lo[4], hi[4];
                memcpy(lo, &a_lo[u], sizeof lo);
                memcpy(hi, &a_hi[u], sizeof hi);
                const uint32_t a0[4] = {lo[0], hi[0], lo[1], hi[1]};
                const uint32_t a1[4] = {lo[2], hi[2], lo[3], hi[3]};
#pragma unroll
                for (int j = 0; j < SK_MAX_M / 8; j++) {
                    if (j >= p.tiles) break;
                    const uint4 xv =
                        *(const uint4 *)(sx + (j * 8 + g) * SK_XSTRIDE + kc + (t + 4 * u) * 8);
                    uint32_t b[4];
                    memcpy(b, &xv, sizeof b);
                    mma_bf16(acc[j], a0, b[0], b[1]);
                    mma_bf16(acc[j], a1, b[2], b[3]);
                }
            }
#pragma unroll
            for (int u = 0; u < 4; u++)
                a_lo[u] = n_lo[u], a_hi[u] = n_hi[u];
        }
    }

    /* D fragment: registers 0, 1 are row g, tokens 2t and 2t+1; 2, 3 are row g+8 */
#pragma unroll
    for (int j = 0; j < SK_MAX_M / 8; j++) {
        if (j >= p.tiles) break;
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int tok = j * 8 + 2 * t + (e & 1), row = e < 2 ? row_lo : row_hi;
            if (tok >= p.m || row >= p.n) continue;
            if (p.partial == nullptr) /* one slice: y directly */
                store_y(p, tok, row, acc[j][e]);
            else
                p.partial[((long long)blockIdx.y * p.m + tok) * p.n + row] = acc[j][e];
        }
    }
}

/* y = the slices' partial sums added in slice order (0, 1, ...), then the output dtype. */
static __global__ void __launch_bounds__(256) gemm_skinny_reduce_kernel(const skinny_params p) {
    griddep_wait(); /* QE_LAUNCH_PDL: before any global memory (ptx.cuh) */
    griddep_launch_dependents();
    const long long i = (long long)blockIdx.x * 256 + threadIdx.x;
    if (i >= (long long)p.m * p.n) return;
    const long long plane = (long long)p.m * p.n;
    float v = p.partial[i];
    for (int s = 1; s < p.splits; s++)
        v += p.partial[s * plane + i];
    store_y(p, (int)(i / p.n), (int)(i % p.n), v);
}

/* Slices of k for n rows: enough blocks for the target, slices of at least SK_MIN_SLICE columns,
 * a multiple of SK_KSTEP, and partials of the largest m within the workspace. */
static void skinny_plan(int n, int k, size_t workspace_bytes, int *slice, int *splits) {
    const int row_blocks = (int)qe_ceil_div(n, SK_ROWS);
    int want = (int)qe_ceil_div(SK_TARGET_BLOCKS, row_blocks);
    want = min(want, max(1, k / SK_MIN_SLICE));
    const size_t per_split = (size_t)SK_MAX_M * n * sizeof(float);
    if ((size_t)want * per_split > workspace_bytes) want = (int)(workspace_bytes / per_split);
    if (want < 1) want = 1;
    *slice = (int)qe_ceil_div(qe_ceil_div(k, want), SK_KSTEP) * SK_KSTEP;
    *splits = (int)qe_ceil_div(k, *slice);
}

extern "C" int qe_gemm_skinny_supports(const qe_bf16 *x, int ldx, int m, int k, const qe_bf16 *w,
                                       const void *y, int ldy, int y_f32) {
    (void)y_f32;
    return m >= 1 && m <= SK_MAX_M && k % 8 == 0 && ldx % 8 == 0 && ldy >= 1 &&
           (uintptr_t)x % 16 == 0 && (uintptr_t)w % 16 == 0 && y != NULL;
}

extern "C" int qe_gemm_skinny(const qe_bf16 *x, int ldx, int m, int k, const qe_bf16 *w, int n,
                              void *y, int ldy, int y_f32, int accumulate, float *workspace,
                              size_t workspace_bytes, qe_stream s) {
    QE_K_REQUIRE(x != NULL && w != NULL && y != NULL);
    QE_K_REQUIRE(n > 0 && k > 0 && ldx >= k && ldy >= n);
    QE_K_REQUIRE(!accumulate || y_f32);
    QE_K_REQUIRE(qe_gemm_skinny_supports(x, ldx, m, k, w, y, ldy, y_f32));
    skinny_params p;
    memset(&p, 0, sizeof p);
    p.x = (const bf16 *)x, p.w = (const bf16 *)w, p.y = y;
    p.ldx = ldx, p.ldy = ldy, p.m = m, p.n = n, p.k = k;
    p.y_f32 = y_f32 ? 1 : 0, p.accumulate = accumulate ? 1 : 0;
    p.tiles = (m + 7) / 8;
    skinny_plan(n, k, workspace ? workspace_bytes : 0, &p.slice, &p.splits);
    p.partial = p.splits > 1 ? workspace : NULL;
    const dim3 grid(qe_ceil_div(n, SK_ROWS), p.splits);
    QE_LAUNCH_PDL(gemm_skinny_kernel, grid, SK_THREADS, 0, s)(p);
    CUDA_CHECK_LAUNCH();
    if (p.splits > 1) {
        QE_LAUNCH_PDL(gemm_skinny_reduce_kernel, qe_ceil_div((long long)m * n, 256), 256, 0, s)(p);
        CUDA_CHECK_LAUNCH();
    }
    return QE_K_OK;
}

extern "C" int qe_gemm_skinny_splits(int n, int k, size_t workspace_bytes) {
    int slice, splits;
    skinny_plan(n, k, workspace_bytes, &slice, &splits);
    return splits;
}

/* ---------------------------------------------------------------- fused epilogues
 * The reduction pass does the next op of the layer too: SwiGLU after the gate|up projection, the
 * q/k-head RMSNorm + RoPE after the qkv projection. Each value is added up in slice order and
 * rounded to bf16 exactly as the reduction pass stores it, then goes through that op's own code
 * (swiglu.cuh, qk_norm_rope.cuh): bitwise what qe_gemm_skinny followed by qe_swiglu or
 * qe_qk_norm_rope gives, in two launches instead of three and without y's round trip through
 * memory. The main kernel writes partials here even for one slice; the plan is qe_gemm_skinny's. */

/* y[t, col] as the unfused path leaves it in bf16, widened. */
static __device__ __forceinline__ float reduced_bf16(const skinny_params &p, int t, int col) {
    const long long plane = (long long)p.m * p.n, i = (long long)t * p.n + col;
    float v = p.partial[i];
    for (int s = 1; s < p.splits; s++)
        v += p.partial[s * plane + i];
    return bf16_to_f32(f32_to_bf16(v));
}

/* act[t, j] = silu(y[t, j]) * y[t, inter + j]: n = 2 inter (w = [gate; up]). */
static __global__ void __launch_bounds__(256)
    skinny_swiglu_kernel(const skinny_params p, bf16 *act, int ld_act) {
    griddep_wait(); /* QE_LAUNCH_PDL: before any global memory (ptx.cuh) */
    griddep_launch_dependents();
    const int inter = p.n / 2;
    const long long i = (long long)blockIdx.x * 256 + threadIdx.x;
    if (i >= (long long)p.m * inter) return;
    const int t = (int)(i / inter), j = (int)(i % inter);
    act[(long long)t * ld_act + j] =
        f32_to_bf16(silu_mul(reduced_bf16(p, t, j), reduced_bf16(p, t, inter + j)));
}

typedef struct rope_params {
    bf16 *qkv; /* [m, ld] out: q heads | k heads | v heads */
    int ld, heads, kv_heads, head_dim;
    qk_rope_args a;
} rope_params;

/* One warp per (token, head) of all heads + 2 kv_heads: q and k heads normed (and rotated) as
 * qk_norm_rope_kernel does them, v heads stored as reduced. */
static __global__ void __launch_bounds__(256)
    skinny_qkv_norm_rope_kernel(const skinny_params p, const rope_params r) {
    griddep_wait(); /* QE_LAUNCH_PDL: before any global memory (ptx.cuh) */
    griddep_launch_dependents();
    const int lane = threadIdx.x & 31;
    const long long warp_id = (long long)blockIdx.x * 8 + (threadIdx.x >> 5);
    const int nh = r.heads + 2 * r.kv_heads;
    if (warp_id >= (long long)p.m * nh) return;
    const int t = (int)(warp_id / nh), h = (int)(warp_id % nh), col0 = h * r.head_dim;
    bf16 *x = r.qkv + (long long)t * r.ld + col0;
    if (h >= r.heads + r.kv_heads) {
        for (int i = lane; i < r.head_dim; i += 32)
            x[i] = f32_to_bf16(reduced_bf16(p, t, col0 + i));
        return;
    }
    const int half = r.head_dim / 2;
    float lo[QKR_MAX_PAIRS_PER_LANE], hi[QKR_MAX_PAIRS_PER_LANE];
#pragma unroll
    for (int q = 0; q < QKR_MAX_PAIRS_PER_LANE; q++) {
        const int i = lane + 32 * q;
        lo[q] = i < half ? reduced_bf16(p, t, col0 + i) : 0.0f;
        hi[q] = i < half ? reduced_bf16(p, t, col0 + i + half) : 0.0f;
    }
    const double pos = r.a.rotate ? (double)r.a.positions[t] : 0.0;
    qk_norm_rope_head(lo, hi, lane, r.head_dim, h < r.heads ? r.a.q_norm_w : r.a.k_norm_w, r.a.eps,
                      r.a.rotate, pos, r.a.log2_theta, x);
}

extern "C" int qe_gemm_skinny_fused_supports(const qe_bf16 *x, int ldx, int m, int k,
                                             const qe_bf16 *w, int n, const void *out,
                                             size_t workspace_bytes) {
    return qe_gemm_skinny_supports(x, ldx, m, k, w, out, n, 0) && n > 0 &&
           workspace_bytes >= (size_t)SK_MAX_M * n * sizeof(float);
}

/* The main kernel of a fused call: qe_gemm_skinny's plan, partials always. */
static int fused_gemm(skinny_params *p, const qe_bf16 *x, int ldx, int m, int k, const qe_bf16 *w,
                      int n, const void *out, float *workspace, size_t workspace_bytes,
                      qe_stream s) {
    QE_K_REQUIRE(x != NULL && w != NULL && out != NULL && workspace != NULL);
    QE_K_REQUIRE(ldx >= k && k > 0);
    QE_K_REQUIRE(qe_gemm_skinny_fused_supports(x, ldx, m, k, w, n, out, workspace_bytes));
    memset(p, 0, sizeof *p);
    p->x = (const bf16 *)x, p->w = (const bf16 *)w, p->y = NULL;
    p->ldx = ldx, p->ldy = n, p->m = m, p->n = n, p->k = k;
    p->tiles = (m + 7) / 8;
    skinny_plan(n, k, workspace_bytes, &p->slice, &p->splits);
    p->partial = workspace;
    QE_LAUNCH_PDL(gemm_skinny_kernel, dim3(qe_ceil_div(n, SK_ROWS), p->splits), SK_THREADS, 0, s)
    (*p);
    CUDA_CHECK_LAUNCH();
    return QE_K_OK;
}

extern "C" int qe_gemm_skinny_swiglu(const qe_bf16 *x, int ldx, int m, int k,
                                     const qe_bf16 *w_gate_up, int inter, qe_bf16 *act, int ld_act,
                                     float *workspace, size_t workspace_bytes, qe_stream s) {
    QE_K_REQUIRE(inter > 0 && inter <= (1 << 29) && ld_act >= inter);
    skinny_params p;
    if (fused_gemm(&p, x, ldx, m, k, w_gate_up, 2 * inter, act, workspace, workspace_bytes, s))
        return QE_K_ERR;
    QE_LAUNCH_PDL(skinny_swiglu_kernel, qe_ceil_div((long long)m * inter, 256), 256, 0, s)
    (p, (bf16 *)act, ld_act);
    CUDA_CHECK_LAUNCH();
    return QE_K_OK;
}

extern "C" int qe_gemm_skinny_qkv_norm_rope(const qe_bf16 *x, int ldx, int m, int k,
                                            const qe_bf16 *w_qkv, int heads, int kv_heads,
                                            int head_dim, qe_bf16 *qkv, const int32_t *positions,
                                            const float *q_norm_w, const float *k_norm_w, float eps,
                                            double theta, float *workspace, size_t workspace_bytes,
                                            qe_stream s) {
    QE_K_REQUIRE(heads > 0 && kv_heads > 0);
    QE_K_REQUIRE(head_dim > 0 && head_dim % 2 == 0 && head_dim <= 64 * QKR_MAX_PAIRS_PER_LANE);
    QE_K_REQUIRE(theta >= 0.0 && (theta == 0.0 || positions != NULL));
    QE_K_REQUIRE(q_norm_w != NULL && k_norm_w != NULL);
    const int n = (heads + 2 * kv_heads) * head_dim;
    skinny_params p;
    if (fused_gemm(&p, x, ldx, m, k, w_qkv, n, qkv, workspace, workspace_bytes, s)) return QE_K_ERR;
    rope_params r;
    memset(&r, 0, sizeof r);
    r.qkv = (bf16 *)qkv, r.ld = n, r.heads = heads, r.kv_heads = kv_heads, r.head_dim = head_dim;
    r.a = qk_rope_args_make(positions, q_norm_w, k_norm_w, eps, theta);
    const long long warps = (long long)m * (heads + 2 * kv_heads);
    QE_LAUNCH_PDL(skinny_qkv_norm_rope_kernel, qe_ceil_div(warps, 8), 256, 0, s)(p, r);
    CUDA_CHECK_LAUNCH();
    return QE_K_OK;
}
