/* qdequant.cu — a packed quantized matrix (kernels/ref/ref_qpack.h) dequantized to bf16 rows
 * [n][k] in natural column order: the values qgemm.cu multiplies, written out. The alternative
 * prefill path that benchmarks/bench_qgemm.c times against the fused kernel (dequantize once,
 * then the bf16 cuBLASLt GEMM: 2 bytes per weight written and read back, in exchange for
 * cuBLASLt's Hopper kernels). */
#include "common.cuh"
#include "qpack.cuh"

/* One thread per (row, span, lane of 4): the 32 values a qgemm lane would hold, as 16 bf16
 * pairs at their columns 16j + 2tig (+8). */
template <int TYPE>
static __global__ void qdequant_kernel(const uint8_t *__restrict__ w, size_t row_bytes, int n,
                                       int k, bf16 *__restrict__ out) {
    const int spans = k / QP_SPAN;
    const size_t units = (size_t)n * spans * 4, stride = (size_t)gridDim.x * blockDim.x;
    for (size_t u = (size_t)blockIdx.x * blockDim.x + threadIdx.x; u < units; u += stride) {
        const int tig = (int)(u & 3), s = (int)(u / 4 % spans);
        const size_t row = u / 4 / spans;
        qraw<TYPE> q;
        q.load(w + row * row_bytes, k, s, tig);
        q.decode(s);
        bf16 *o = out + row * k + (size_t)s * QP_SPAN + 2 * tig;
#pragma unroll
        for (int j = 0; j < QP_SPAN / 16; j++) {
            uint32_t lo, hi;
            q.pairs(j, lo, hi);
            memcpy(o + 16 * j, &lo, 4);     /* columns 16j + 2tig, +1 */
            memcpy(o + 16 * j + 8, &hi, 4); /* columns 16j + 2tig + 8, +9 */
        }
    }
}

template <int TYPE>
static void launch(const uint8_t *w, size_t rb, int n, int k, bf16 *out, qe_stream s) {
    const size_t units = (size_t)n * (k / QP_SPAN) * 4;
    const unsigned blocks = units / 256 + 1 < 4096 ? (unsigned)(units / 256 + 1) : 4096;
    QE_LAUNCH(qdequant_kernel<TYPE>, blocks, 256, 0, s)(w, rb, n, k, out);
}

extern "C" int qe_qdequant_bf16(const void *w, int type, int n, int k, qe_bf16 *out, qe_stream s) {
    QE_K_REQUIRE(w != NULL && out != NULL && n > 0);
    const size_t rb = qp_row_bytes((uint32_t)type, k);
    QE_K_REQUIRE(rb > 0); /* a packed type, k a multiple of 256 */
    QE_K_REQUIRE((uintptr_t)w % 16 == 0 && (uintptr_t)out % 4 == 0);
    const uint8_t *p = (const uint8_t *)w;
    bf16 *o = (bf16 *)out;
    if (type == QT_Q8_0)
        launch<QT_Q8_0>(p, rb, n, k, o, s);
    else if (type == QT_Q4_K)
        launch<QT_Q4_K>(p, rb, n, k, o, s);
    else
        launch<QT_Q6_K>(p, rb, n, k, o, s);
    CUDA_CHECK_LAUNCH();
    return QE_K_OK;
}
