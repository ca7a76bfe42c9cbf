/* embed.cu — embedding gather: bf16 table rows -> fp32 residual stream rows. */
#include "common.cuh"
#include "ptx.cuh"

/* One block per token; threads stride over the row. Memory-bound: 2 bytes read, 4 written. */
static __global__ void embed_gather_kernel(const bf16 *__restrict__ table, int vocab, int hidden,
                                           const int32_t *__restrict__ tokens,
                                           float *__restrict__ out) {
    griddep_wait(); /* QE_LAUNCH_PDL: before any global memory (ptx.cuh) */
    griddep_launch_dependents();
    const int t = blockIdx.x;
    int id = tokens[t];
    id = id < 0 ? 0 : (id >= vocab ? vocab - 1 : id); /* the engine validates ids first */
    const bf16 *row = table + (size_t)id * hidden;
    float *o = out + (size_t)t * hidden;
    if ((hidden & 1) == 0) {
        const bf16x2 *row2 = (const bf16x2 *)row;
        float2 *o2 = (float2 *)o;
        for (int i = threadIdx.x; i < hidden / 2; i += blockDim.x)
            o2[i] = __bfloat1622float2(row2[i]);
    } else {
        for (int i = threadIdx.x; i < hidden; i += blockDim.x)
            o[i] = bf16_to_f32(row[i]);
    }
}

extern "C" int qe_embed_gather(const qe_bf16 *table, int vocab, int hidden, const int32_t *tokens,
                               int n_tokens, float *out, qe_stream s) {
    QE_K_REQUIRE(vocab > 0 && hidden > 0 && n_tokens >= 0);
    if (n_tokens == 0) return QE_K_OK;
    int threads = hidden / 2 >= 256 ? 256 : 128;
    QE_LAUNCH_PDL(embed_gather_kernel, n_tokens, threads, 0, s)
    ((const bf16 *)table, vocab, hidden, tokens, out);
    CUDA_CHECK_LAUNCH();
    return QE_K_OK;
}
