/* qembed_gather.cu — embedding gather from a quantized table (the packed rows of
 * kernels/ref/ref_qpack.h): the gathered rows dequantized to the fp32 residual stream, as
 * embed.cu does for a bf16 table. The values are ref_dequantize's, bit for bit. */
#include "common.cuh"
#include "ref/ref_qpack.h"

static __device__ __forceinline__ float half_to_f32(const uint8_t *p) {
    const uint32_t h = (uint32_t)p[0] | (uint32_t)p[1] << 8;
    const uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0) {
        const float v = (float)man * 5.9604644775390625e-8f; /* man * 2^-24 */
        return sign ? -v : v;
    }
    const uint32_t bits =
        sign | (exp == 31 ? 0x7f800000u | (man << 13) : ((exp + 112) << 23) | (man << 13));
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Column c of a packed row of k elements, by ref_qpack_dequant_row's formulas. */
template <int TYPE>
static __device__ __forceinline__ float dequant_at(const uint8_t *row, int k, int c) {
    int tig, e;
    qp_lane_of(c % QP_SPAN, &tig, &e);
    const int s = c / QP_SPAN;
    if (TYPE == QT_Q8_0) {
        const float d = half_to_f32(row + k + 2 * (c / 32));
        return d * (float)(int8_t)row[s * 128 + tig * 32 + e];
    }
    const uint8_t nb = row[s * 64 + tig * 16 + (e >> 1)];
    const int nib = e & 1 ? nb >> 4 : nb & 0xf;
    if (TYPE == QT_Q4_K) {
        const uint8_t *m = row + k / 2 + 16 * (c / 256), *sc = m + 4;
        const int j = c % 256 / 32;
        int scale, mn;
        if (j < 4) {
            scale = sc[j] & 63, mn = sc[j + 4] & 63;
        } else {
            scale = (sc[j + 4] & 0xf) | ((sc[j - 4] >> 6) << 4);
            mn = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
        }
        return half_to_f32(m) * (float)scale * (float)nib - half_to_f32(m + 2) * (float)mn;
    }
    const int hi = (row[k / 2 + s * 32 + tig * 8 + (e >> 2)] >> (2 * (e & 3))) & 3;
    const int8_t scale = (int8_t)row[k / 2 + k / 4 + c / 16];
    const float d = half_to_f32(row + k / 2 + k / 4 + k / 16 + 2 * (c / 256));
    return d * (float)scale * (float)((nib | hi << 4) - 32);
}

/* One block per token; threads stride over the row (a gather: a few rows of the table). */
template <int TYPE>
static __global__ void
qembed_gather_kernel(const uint8_t *__restrict__ table, size_t row_bytes, int vocab, int hidden,
                     const int32_t *__restrict__ tokens, float *__restrict__ out) {
    const int t = blockIdx.x;
    int id = tokens[t];
    id = id < 0 ? 0 : (id >= vocab ? vocab - 1 : id); /* the engine validates ids first */
    const uint8_t *row = table + (size_t)id * row_bytes;
    for (int c = threadIdx.x; c < hidden; c += blockDim.x)
        out[(size_t)t * hidden + c] = dequant_at<TYPE>(row, hidden, c);
}

template <int TYPE>
static void launch(const uint8_t *t, size_t rb, int vocab, int hidden, const int32_t *tokens,
                   int n_tokens, float *out, qe_stream s) {
    QE_LAUNCH(qembed_gather_kernel<TYPE>, n_tokens, 256, 0, s)(t, rb, vocab, hidden, tokens, out);
}

extern "C" int qe_embed_gather_q(const void *table, int type, int vocab, int hidden,
                                 const int32_t *tokens, int n_tokens, float *out, qe_stream s) {
    QE_K_REQUIRE(table != NULL && vocab > 0 && n_tokens >= 0);
    const size_t rb = qp_row_bytes((uint32_t)type, hidden);
    QE_K_REQUIRE(rb > 0); /* a packed type and hidden a multiple of 256 */
    if (n_tokens == 0) return QE_K_OK;
    const uint8_t *t = (const uint8_t *)table;
    if (type == QT_Q8_0)
        launch<QT_Q8_0>(t, rb, vocab, hidden, tokens, n_tokens, out, s);
    else if (type == QT_Q4_K)
        launch<QT_Q4_K>(t, rb, vocab, hidden, tokens, n_tokens, out, s);
    else
        launch<QT_Q6_K>(t, rb, vocab, hidden, tokens, n_tokens, out, s);
    CUDA_CHECK_LAUNCH();
    return QE_K_OK;
}
