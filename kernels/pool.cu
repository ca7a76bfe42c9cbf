/* pool.cu — the embedding head: final RMSNorm of each sequence's last row, Matryoshka cut to the
 * first dims values, L2 normalisation; fp32 out. Also the last-row gather used by the last-layer
 * shortcut (only pooled rows need Q, attention output, o_proj and the MLP). */
#include "common.cuh"
#include "ptx.cuh"

/* One block per sequence. Norm over all hidden values, then the cut, then L2 over dims values
 * (L2 of the full row before the cut would cancel out, so it is skipped). */
static __global__ void pool_last_kernel(const float *__restrict__ x, int hidden,
                                        const int32_t *__restrict__ cu_seqlens,
                                        const float *__restrict__ w, float eps, int dims,
                                        int normalize, float *__restrict__ out) {
    griddep_wait(); /* QE_LAUNCH_PDL: before any global memory (ptx.cuh) */
    griddep_launch_dependents();
    __shared__ float red[33];
    const int s = blockIdx.x;
    const long long row = cu_seqlens ? (long long)cu_seqlens[s + 1] - 1 : s;
    const float *xr = x + row * hidden;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x)
        ss += xr[i] * xr[i];
    ss = block_sum(ss, red);
    const float inv = rsqrtf(ss / (float)hidden + eps);
    float nn = 0.0f;
    for (int i = threadIdx.x; i < dims; i += blockDim.x) {
        const float v = xr[i] * inv * w[i];
        nn += v * v;
    }
    nn = block_sum(nn, red);
    const float l2 = !normalize ? 1.0f : nn > 0.0f ? rsqrtf(nn) : 0.0f;
    for (int i = threadIdx.x; i < dims; i += blockDim.x)
        out[(size_t)s * dims + i] = xr[i] * inv * w[i] * l2;
}

extern "C" int qe_pool_last(const float *x, int hidden, const int32_t *cu_seqlens, int n_seqs,
                            const float *final_norm_w, float eps, int dims, int normalize,
                            float *out, qe_stream s) {
    QE_K_REQUIRE(hidden > 0 && n_seqs >= 0 && dims > 0 && dims <= hidden);
    if (n_seqs == 0) return QE_K_OK;
    QE_LAUNCH_PDL(pool_last_kernel, n_seqs, 256, 0, s)
    (x, hidden, cu_seqlens, final_norm_w, eps, dims, normalize, out);
    CUDA_CHECK_LAUNCH();
    return QE_K_OK;
}

/* One block per sequence, 4-byte words. */
static __global__ void gather_last_rows_kernel(const uint32_t *__restrict__ src, int row_words,
                                               const int32_t *__restrict__ cu_seqlens,
                                               uint32_t *__restrict__ dst) {
    griddep_wait(); /* QE_LAUNCH_PDL: before any global memory (ptx.cuh) */
    griddep_launch_dependents();
    const int s = blockIdx.x;
    const long long row = (long long)cu_seqlens[s + 1] - 1;
    const uint32_t *sr = src + row * row_words;
    uint32_t *dr = dst + (long long)s * row_words;
    for (int i = threadIdx.x; i < row_words; i += blockDim.x)
        dr[i] = sr[i];
}

extern "C" int qe_gather_last_rows(const void *src, size_t row_bytes, const int32_t *cu_seqlens,
                                   int n_seqs, void *dst, qe_stream s) {
    QE_K_REQUIRE(row_bytes > 0 && row_bytes % 4 == 0 && row_bytes / 4 < (1u << 30));
    QE_K_REQUIRE(n_seqs >= 0);
    if (n_seqs == 0) return QE_K_OK;
    QE_LAUNCH_PDL(gather_last_rows_kernel, n_seqs, 256, 0, s)
    ((const uint32_t *)src, (int)(row_bytes / 4), cu_seqlens, (uint32_t *)dst);
    CUDA_CHECK_LAUNCH();
    return QE_K_OK;
}
