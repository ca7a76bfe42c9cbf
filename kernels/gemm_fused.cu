/* gemm_fused.cu — our own sm_90a GEMM for the two layer products whose output goes straight into
 * an element-wise op (issue 15, item 3), with that op fused into the epilogue so the product
 * never makes the round trip through global memory in bf16:
 *
 *   qe_gemm_swiglu:        act[m, inter] = bf16(silu(x Wgate^T) * (x Wup^T)) from the stacked
 *                          Wgu [gate rows; up rows], the product of the two fp32 accumulators
 *                          (today's path rounds gu to bf16 first, then qe_swiglu);
 *   qe_gemm_qkv_norm_rope: qkv[m, (heads + 2 kv) * 128] = x Wqkv^T with the per-head RMSNorm and
 *                          NeoX RoPE of qe_qk_norm_rope applied to the q and k heads (v as is),
 *                          from the fp32 accumulators.
 *
 * The kernel: a block owns a 128 x 128 tile of y (BM = BN = 128) and walks k in BK = 64 steps.
 * Warpgroup 0 is the producer (one thread issues TMA loads of the x tile, 128 rows x 64, and of
 * two 64-row boxes of w into a FG_STAGES-deep ring, each stage signalled on a "full" mbarrier
 * with its byte count); warpgroups 1 and 2 are the consumers, 64 rows each: per stage four
 * m64n128k16 wgmmas (SS, both operands K-major with the 128-byte swizzle the TMA wrote), one
 * batch left in flight while the previous stage is released on its "empty" mbarrier. The two
 * 64-row boxes of w are what make the fusions local to a thread: for SwiGLU they are 64 gate rows
 * and the matching 64 up rows, so D columns c and c + 64 of a thread's fragment (registers i and
 * i + 32, see ptx.cuh) are gate and up of one output column; for the qkv product the tile is one
 * head (head_dim 128), whose RoPE pairs are again columns c and c + 64 of the same thread, and
 * whose RMSNorm is a sum over the four threads of a quad (lanes 4r..4r+3 hold a row's 128
 * columns). Tiles are rastered in groups of FG_GROUP_M row tiles so the x rows of a group and the
 * w columns of a sweep stay in L2 together. Rows past m read as zero (TMA out-of-bounds fill) and
 * are not stored; k must be a multiple of 64 and the widths multiples of the 64-row boxes (every
 * Qwen3 size; the launchers refuse others).
 *
 * Not yet done (a GPU has not timed it): no persistent scheduler (the epilogue does not overlap
 * the next tile's loads), the stores are plain 4-byte bf16x2 stores from the fragment (a quad
 * writes 16 contiguous bytes of a row), no cluster multicast; docs/kernels.md predicts its time.
 *
 * ptxas -v, sm_90a, nvcc 13.0: both kernels 168 registers (the 384-thread launch bound; setmaxnreg
 * moves them to 40 producer / 232 consumer), 0 bytes spilled, 1 barrier; the qkv one a 32-byte
 * stack frame (sincosf's large-argument path, never taken: the angle is reduced first). 131 648
 * bytes of dynamic shared memory: one block an SM. */
#include "common.cuh"
#include "ptx.cuh"
#include "qk_norm_rope.cuh"

#define FG_BM 128
#define FG_BN 128
#define FG_BK 64
#define FG_STAGES 4 /* 32 KB a stage; a guess until a GPU times 4 against 5-6 */
#define FG_THREADS 384
#define FG_GROUP_M 8
#define FG_A_BYTES (FG_BM * FG_BK * 2)
#define FG_B_BYTES (FG_BN * FG_BK * 2)
#define FG_STAGE_BYTES (FG_A_BYTES + FG_B_BYTES)
#define FG_BAR_OFFSET (FG_STAGES * FG_STAGE_BYTES)
/* barriers (2 x FG_STAGES x 8 bytes), then the RoPE inverse frequencies (64 doubles) */
#define FG_FREQ_OFFSET (FG_BAR_OFFSET + 2 * FG_STAGES * 8)
#define FG_SMEM_BYTES (FG_FREQ_OFFSET + 64 * 8)

enum { FG_SWIGLU = 0, FG_QKV = 1 };

typedef struct fused_params {
    int m, k;
    int n_tiles, m_tiles;
    int b_second; /* row of w of a tile's second 64-row box, minus its first's (inter, or 64) */
    bf16 *y;
    int ldy;
    /* FG_QKV */
    int heads, kv_heads;
    qk_rope_args a;
} fused_params;

/* The tile of block b: groups of FG_GROUP_M row tiles, row tiles fastest inside a group. */
static __device__ __forceinline__ QE_SM90A_HELPER void tile_of(const fused_params &p, int b,
                                                               int *mt, int *nt) {
    const int per_group = FG_GROUP_M * p.n_tiles;
    const int first_m = b / per_group * FG_GROUP_M;
    const int group_m = min(p.m_tiles - first_m, FG_GROUP_M);
    const int in = b % per_group;
    *mt = first_m + in % group_m;
    *nt = in / group_m;
}

static __device__ __forceinline__ void store_bf16x2(bf16 *dst, float a, float b) {
    const bf16x2 v = __floats2bfloat162_rn(a, b);
    memcpy(dst, &v, sizeof v);
}

/* SwiGLU from the fragment: registers i (gate column c) and i + 32 (up column c) of rows r and
 * r + 8; out column j * 64 + c. */
static __device__ __forceinline__ QE_SM90A_HELPER void
epilogue_swiglu(const fused_params &p, const float (&d)[64], int row0, int nt, int lane) {
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int row = row0 + 8 * h;
        if (row >= p.m) continue;
        bf16 *y = p.y + (long long)row * p.ldy + nt * 64 + 2 * (lane & 3);
#pragma unroll
        for (int g = 0; g < 8; g++) {
            const int i = 4 * g + 2 * h;
            const float g0 = d[i], g1 = d[i + 1], u0 = d[i + 32], u1 = d[i + 33];
            store_bf16x2(y + 8 * g, g0 / (1.0f + __expf(-g0)) * u0, g1 / (1.0f + __expf(-g1)) * u1);
        }
    }
}

/* q/k head RMSNorm + RoPE (or v as is) of head nt from the fragment: a row's 128 columns are the
 * 32 registers of each of the quad's four threads with this row half; the RoPE pair of column c
 * (register i, c < 64) is column c + 64 (register i + 32), the same thread's. As qe_qk_norm_rope:
 * mean of squares in fp32, rsqrtf, angle in double reduced mod 2 pi, sincosf. */
static __device__ __forceinline__ QE_SM90A_HELPER void epilogue_qkv(const fused_params &p,
                                                                    const float (&d)[64], int row0,
                                                                    int nt, int lane,
                                                                    const double *inv_freq) {
    const int normed = nt < p.heads + p.kv_heads; /* the same for the whole block */
    const float *w = nt < p.heads ? p.a.q_norm_w : p.a.k_norm_w;
    const double two_pi = 6.283185307179586476925286766559;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int row = row0 + 8 * h;
        bf16 *y = p.y + (long long)(row < p.m ? row : 0) * p.ldy + nt * 128 + 2 * (lane & 3);
        if (!normed) {
            if (row >= p.m) continue;
#pragma unroll
            for (int g = 0; g < 16; g++)
                store_bf16x2(y + 8 * g, d[4 * g + 2 * h], d[4 * g + 2 * h + 1]);
            continue;
        }
        float ss = 0.0f;
#pragma unroll
        for (int g = 0; g < 16; g++)
            ss += d[4 * g + 2 * h] * d[4 * g + 2 * h] + d[4 * g + 2 * h + 1] * d[4 * g + 2 * h + 1];
        ss += __shfl_xor_sync(0xffffffffu, ss, 1); /* every lane: rows past m too */
        ss += __shfl_xor_sync(0xffffffffu, ss, 2);
        if (row >= p.m) continue;
        const float inv = rsqrtf(ss / 128.0f + p.a.eps);
        const double pos = p.a.rotate ? (double)p.a.positions[row] : 0.0;
#pragma unroll
        for (int g = 0; g < 8; g++) {
            float o[4];
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int i = 4 * g + 2 * h + e, c = 8 * g + 2 * (lane & 3) + e;
                const float a = d[i] * inv * w[c];
                const float b = d[i + 32] * inv * w[c + 64];
                if (!p.a.rotate) { /* uniform over the launch */
                    o[e] = a, o[e + 2] = b;
                    continue;
                }
                double ang = pos * inv_freq[c];
                ang -= two_pi * rint(ang / two_pi);
                float sn, cs;
                sincosf((float)ang, &sn, &cs);
                o[e] = a * cs - b * sn;
                o[e + 2] = b * cs + a * sn;
            }
            store_bf16x2(y + 8 * g, o[0], o[1]);
            store_bf16x2(y + 8 * g + 64, o[2], o[3]);
        }
    }
}

/* The block: see the header. smem is the dynamic shared memory (FG_SMEM_BYTES, 1024-aligned). */
template <int EPI>
static __device__ __forceinline__ void gemm_fused_body(const CUtensorMap *ma, const CUtensorMap *mb,
                                                       const fused_params &p, unsigned char *smem) {
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
    /* a device pass for another architecture (a multi-arch build): the Hopper wrappers would not
     * link there, and the launchers never run this kernel on such a device */
    (void)ma, (void)mb, (void)p, (void)smem;
    __trap();
#else
    uint64_t *full = (uint64_t *)(smem + FG_BAR_OFFSET), *empty = full + FG_STAGES;
    double *inv_freq = (double *)(smem + FG_FREQ_OFFSET);
    const int t = threadIdx.x, wg = t / 128, ct = t % 128;
    int mt, nt;
    tile_of(p, blockIdx.x, &mt, &nt);
    const int k_tiles = p.k / FG_BK;
    if (t < FG_STAGES) {
        mbar_init(&full[t], 1);
        mbar_init(&empty[t], 256); /* every consumer thread releases the stage */
        mbar_fence_init();
    }
    if (EPI == FG_QKV && t >= 128 && t < 192) /* inv_freq_i = theta^(-2i/128), as qk_norm_rope */
        inv_freq[t - 128] = p.a.rotate ? exp2(-(2.0 * (t - 128) / 128.0) * p.a.log2_theta) : 0.0;
    __syncthreads();

    if (wg == 0) { /* producer */
        setmaxnreg_dec<40>();
        if (ct != 0) return;
        const int b0 = EPI == FG_SWIGLU ? nt * 64 : nt * 128;
        for (int kt = 0; kt < k_tiles; kt++) {
            const int s = kt % FG_STAGES, use = kt / FG_STAGES;
            mbar_wait(&empty[s], (use & 1) ^ 1); /* the first use passes: "the phase before" */
            unsigned char *sa = smem + s * FG_STAGE_BYTES, *sb = sa + FG_A_BYTES;
            mbar_arrive_expect_tx(&full[s], FG_STAGE_BYTES);
            tma_load_2d(sa, ma, kt * FG_BK, mt * FG_BM, &full[s]);
            tma_load_2d(sb, mb, kt * FG_BK, b0, &full[s]);
            tma_load_2d(sb + FG_B_BYTES / 2, mb, kt * FG_BK, b0 + p.b_second, &full[s]);
        }
        return;
    }

    setmaxnreg_inc<232>();
    const int cw = wg - 1; /* consumer warpgroup: rows 64 cw .. 64 cw + 63 of the tile */
    float d[64];
#pragma unroll
    for (int i = 0; i < 64; i++)
        d[i] = 0.0f;
    for (int kt = 0; kt < k_tiles; kt++) {
        const int s = kt % FG_STAGES;
        mbar_wait(&full[s], (kt / FG_STAGES) & 1);
        const unsigned char *sa = smem + s * FG_STAGE_BYTES + cw * (FG_A_BYTES / 2);
        const unsigned char *sb = smem + s * FG_STAGE_BYTES + FG_A_BYTES;
        wgmma_fence_operands(d);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < FG_BK / 16; kk++) /* a k16 step is 32 bytes along the swizzled row */
            wgmma_bf16_ss<128>(d, wgmma_desc(sa + 32 * kk, 16, 1024, WGMMA_SWIZZLE_128B),
                               wgmma_desc(sb + 32 * kk, 16, 1024, WGMMA_SWIZZLE_128B),
                               kt > 0 || kk > 0);
        wgmma_commit_group();
        wgmma_wait_group<1>(); /* the previous stage's batch is done: release that stage */
        wgmma_fence_operands(d);
        if (kt > 0) mbar_arrive(&empty[(kt - 1) % FG_STAGES]);
    }
    wgmma_wait_group<0>();
    wgmma_fence_operands(d);
    mbar_arrive(&empty[(k_tiles - 1) % FG_STAGES]);

    const int warp = ct / 32, lane = ct % 32;
    const int row0 = mt * FG_BM + cw * 64 + warp * 16 + lane / 4;
    if (EPI == FG_SWIGLU)
        epilogue_swiglu(p, d, row0, nt, lane);
    else
        epilogue_qkv(p, d, row0, nt, lane, inv_freq);
#endif
}

/* Two plain kernels around the template body (the emulator keeps only a non-template function's
 * __shared__ arrays in its window). */
static __global__ void __launch_bounds__(FG_THREADS, 1)
    gemm_swiglu_kernel(const __grid_constant__ CUtensorMap ma,
                       const __grid_constant__ CUtensorMap mb, const fused_params p) {
    QE_DYNAMIC_SMEM(smem);
    gemm_fused_body<FG_SWIGLU>(&ma, &mb, p, smem);
}

static __global__ void __launch_bounds__(FG_THREADS, 1)
    gemm_qkv_norm_rope_kernel(const __grid_constant__ CUtensorMap ma,
                              const __grid_constant__ CUtensorMap mb, const fused_params p) {
    QE_DYNAMIC_SMEM(smem);
    gemm_fused_body<FG_QKV>(&ma, &mb, p, smem);
}

/* The tensor maps: x [m, k] (row stride ldx) in boxes of 128 rows x 64, w [n, k] in boxes of 64
 * rows x 64, both with the 128-byte swizzle (a box row is 128 bytes); rows past m read as 0. */
static int fused_maps(const qe_bf16 *x, int ldx, int m, int k, const qe_bf16 *w, int n,
                      CUtensorMap *ma, CUtensorMap *mb) {
    const cuuint64_t dims_a[2] = {(cuuint64_t)k, (cuuint64_t)m},
                     stride_a[1] = {(cuuint64_t)ldx * 2};
    const cuuint64_t dims_b[2] = {(cuuint64_t)k, (cuuint64_t)n}, stride_b[1] = {(cuuint64_t)k * 2};
    const cuuint32_t box_a[2] = {FG_BK, FG_BM}, box_b[2] = {FG_BK, FG_BN / 2};
    CUDA_CHECK(tensor_map_tiled(ma, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, x, dims_a, stride_a, box_a,
                                CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE));
    CUDA_CHECK(tensor_map_tiled(mb, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, w, dims_b, stride_b, box_b,
                                CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE));
    return QE_K_OK;
}

/* Whether the call's operands and the device take the kernel (qe_sm90a_kernels_run: an sm_90a
 * build on a compute capability 9.0 device; the emulator does). */
static int fused_operands_ok(const qe_bf16 *x, int ldx, int k, const qe_bf16 *w, const void *y) {
    return qe_sm90a_kernels_run() && k > 0 && k % FG_BK == 0 && ldx >= k && ldx % 8 == 0 &&
           (uintptr_t)x % 16 == 0 && (uintptr_t)w % 16 == 0 && (uintptr_t)y % 16 == 0;
}

extern "C" int qe_gemm_swiglu_supports(const qe_bf16 *x, int ldx, int k, const qe_bf16 *wgu,
                                       int inter, const qe_bf16 *act) {
    return fused_operands_ok(x, ldx, k, wgu, act) && inter > 0 && inter % 64 == 0;
}

extern "C" int qe_gemm_qkv_norm_rope_supports(const qe_bf16 *x, int ldx, int k, const qe_bf16 *wqkv,
                                              int heads, int kv_heads, int head_dim,
                                              const qe_bf16 *qkv) {
    return fused_operands_ok(x, ldx, k, wqkv, qkv) && heads > 0 && kv_heads > 0 && head_dim == 128;
}

/* The kernels' dynamic shared memory attribute, set once per kernel and device (it is per
 * function and device; a call per launch would cost a driver call each). */
static cudaError_t fused_allow_smem(int epi) {
    static bool done[2][64];
    int dev = 0;
    const bool known = cudaGetDevice(&dev) == cudaSuccess && dev >= 0 && dev < 64;
    if (known && done[epi][dev]) return cudaSuccess;
    const cudaError_t e = epi == FG_SWIGLU
                              ? QE_ALLOW_DYNAMIC_SMEM(gemm_swiglu_kernel, FG_SMEM_BYTES)
                              : QE_ALLOW_DYNAMIC_SMEM(gemm_qkv_norm_rope_kernel, FG_SMEM_BYTES);
    if (known) done[epi][dev] = e == cudaSuccess;
    return e;
}

static int fused_launch(int epi, const CUtensorMap &ma, const CUtensorMap &mb,
                        const fused_params &p, qe_stream s) {
    const unsigned blocks = (unsigned)p.m_tiles * (unsigned)p.n_tiles;
    CUDA_CHECK(fused_allow_smem(epi));
    if (epi == FG_SWIGLU)
        QE_LAUNCH(gemm_swiglu_kernel, blocks, FG_THREADS, FG_SMEM_BYTES, s)(ma, mb, p);
    else
        QE_LAUNCH(gemm_qkv_norm_rope_kernel, blocks, FG_THREADS, FG_SMEM_BYTES, s)(ma, mb, p);
    CUDA_CHECK_LAUNCH();
    return QE_K_OK;
}

extern "C" int qe_gemm_swiglu(const qe_bf16 *x, int ldx, int m, int k, const qe_bf16 *wgu,
                              int inter, qe_bf16 *act, qe_stream s) {
    QE_K_REQUIRE(x != NULL && wgu != NULL && act != NULL && m >= 0);
    QE_K_REQUIRE(k > 0 && k % 64 == 0 && "the fused GEMM takes k a multiple of 64 (its BK)");
    QE_K_REQUIRE(inter > 0 && inter % 64 == 0 && "qe_gemm_swiglu takes inter a multiple of 64");
    QE_K_REQUIRE(ldx >= k && ldx % 8 == 0 && "x rows: ldx >= k, a multiple of 8 (TMA strides)");
    QE_K_REQUIRE(qe_gemm_swiglu_supports(x, ldx, k, wgu, inter, act) &&
                 "an sm_90 device, 16-byte aligned x, w, y");
    if (m == 0) return QE_K_OK;
    CUtensorMap ma, mb;
    if (fused_maps(x, ldx, m, k, wgu, 2 * inter, &ma, &mb) != QE_K_OK) return QE_K_ERR;
    fused_params p;
    memset(&p, 0, sizeof p);
    p.m = m, p.k = k;
    p.m_tiles = (int)qe_ceil_div(m, FG_BM), p.n_tiles = inter / 64;
    p.b_second = inter;
    p.y = (bf16 *)act, p.ldy = inter;
    return fused_launch(FG_SWIGLU, ma, mb, p, s);
}

extern "C" int qe_gemm_qkv_norm_rope(const qe_bf16 *x, int ldx, int m, int k, const qe_bf16 *wqkv,
                                     int heads, int kv_heads, int head_dim,
                                     const int32_t *positions, const float *q_norm_w,
                                     const float *k_norm_w, float eps, double theta, qe_bf16 *qkv,
                                     qe_stream s) {
    QE_K_REQUIRE(x != NULL && wqkv != NULL && qkv != NULL && m >= 0);
    QE_K_REQUIRE(q_norm_w != NULL && k_norm_w != NULL);
    QE_K_REQUIRE(k > 0 && k % 64 == 0 && "the fused GEMM takes k a multiple of 64 (its BK)");
    QE_K_REQUIRE(head_dim == 128 && "qe_gemm_qkv_norm_rope: a tile is one head of 128");
    QE_K_REQUIRE(heads > 0 && kv_heads > 0);
    QE_K_REQUIRE(ldx >= k && ldx % 8 == 0 && "x rows: ldx >= k, a multiple of 8 (TMA strides)");
    QE_K_REQUIRE(theta >= 0.0);
    QE_K_REQUIRE(theta == 0.0 || positions != NULL);
    QE_K_REQUIRE(qe_gemm_qkv_norm_rope_supports(x, ldx, k, wqkv, heads, kv_heads, head_dim, qkv) &&
                 "an sm_90 device, 16-byte aligned x, w, y");
    if (m == 0) return QE_K_OK;
    const int n = (heads + 2 * kv_heads) * head_dim;
    CUtensorMap ma, mb;
    if (fused_maps(x, ldx, m, k, wqkv, n, &ma, &mb) != QE_K_OK) return QE_K_ERR;
    fused_params p;
    memset(&p, 0, sizeof p);
    p.m = m, p.k = k;
    p.m_tiles = (int)qe_ceil_div(m, FG_BM), p.n_tiles = n / FG_BN;
    p.b_second = FG_BN / 2;
    p.y = (bf16 *)qkv, p.ldy = n;
    p.heads = heads, p.kv_heads = kv_heads;
    p.a = qk_rope_args_make(positions, q_norm_w, k_norm_w, eps, theta);
    return fused_launch(FG_QKV, ma, mb, p, s);
}
