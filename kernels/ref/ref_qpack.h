/* ref_qpack.h — the GPU layout of a quantized weight matrix (kernels/qgemm.cu, qgemm_embed.cu)
 * and its C reference: the repacking from ggml's blocks at upload and a dequantizer of the packed
 * rows. Q8_0, Q4_K and Q6_K only; the scales and the quants keep every bit of the file (the
 * dequantized values are bit-identical to ref_dequantize's).
 *
 * Why repack: ggml's Q8_0 (34-byte) and Q6_K (210-byte) blocks are not 16-byte aligned, and no
 * block orders its quants the way an mma.sync A fragment wants them. A packed matrix is `rows`
 * rows of qp_row_bytes(type, k) bytes each (a multiple of 16), so matrices concatenate by rows
 * (q|k|v, gate|up) and the embedding table gathers rows. One row of k elements:
 *
 *   Q8_0: qs[k] int8           | d[k/32] f16                          (+ padding to 16 bytes)
 *   Q4_K: qs[k/2] nibbles       | meta[k/256][16]: the file's first 16 bytes of each block:
 *                                 f16 d, f16 dmin, the 12 bytes of packed 6-bit scales and mins
 *   Q6_K: ql[k/2] low nibbles   | qh[k/4] high 2-bit pairs | sc[k/16] int8 | d[k/256] f16 (+ pad)
 *
 * The quants are ordered by span of 128 elements and, inside a span, by the four column lanes
 * (tig = lane % 4) of an m16n8k16 fragment: lane tig's 32 elements of span s are contiguous
 * (16 bytes of nibbles, 32 bytes of int8, 8 bytes of 2-bit pairs), element e (0..31) of them at
 * column qp_col(tig, e) of the span, e = 4j + 2h + b going to mma j (k 16j..16j+15), half h
 * (columns 2tig.. or 2tig+8..) and pair element b. So one 16-byte load of a row gives a lane its
 * A-fragment values for 8 MMAs in order. Nibble e sits in byte e/2 (low nibble for even e); 2-bit
 * pair e in byte e/4 at bit 2*(e%4). k must be a multiple of 256 (all three types: the K-quants'
 * super-block, and spans of 128 stay whole for Q8_0 too). */
#ifndef QE_KERNELS_REF_QPACK_H
#define QE_KERNELS_REF_QPACK_H
#include <stddef.h>
#include <stdint.h>

#include "ref_quant.h"

#if defined(__CUDACC__) || defined(QE_EMU)
#define QP_FN static __host__ __device__ __forceinline__
#else
#define QP_FN static inline
#endif

#define QP_SPAN 128 /* elements per span: 8 MMAs of k16 */
#define QP_K_ALIGN 256

/* Column (0..127) in its span of lane tig's element e (0..31). */
QP_FN int qp_col(int tig, int e) {
    return 16 * (e >> 2) + 2 * tig + (e & 1) + ((e & 2) << 2);
}
/* The inverse: lane and element of column c of a span. */
QP_FN void qp_lane_of(int c, int *tig, int *e) {
    const int r = c & 15;
    *tig = (r & 7) >> 1;
    *e = 4 * (c >> 4) + ((r >> 3) << 1) + (r & 1);
}

/* 1 for the types with a packed layout. */
QP_FN int qp_supported(uint32_t type) {
    return type == QT_Q8_0 || type == QT_Q4_K || type == QT_Q6_K;
}

/* Byte offsets inside a packed row of k elements. */
QP_FN size_t qp_off_meta(uint32_t type, int k) { /* Q8_0 d, Q4_K meta, Q6_K qh */
    return type == QT_Q8_0 ? (size_t)k : (size_t)k / 2;
}
QP_FN size_t qp_off_q6_sc(int k) {
    return (size_t)k / 2 + (size_t)k / 4;
}
QP_FN size_t qp_off_q6_d(int k) {
    return qp_off_q6_sc(k) + (size_t)k / 16;
}

/* Bytes of one packed row, or 0 for an unsupported type or a k that is not a positive multiple
 * of 256. */
QP_FN size_t qp_row_bytes(uint32_t type, int k) {
    if (!qp_supported(type) || k <= 0 || k % QP_K_ALIGN) return 0;
    size_t raw;
    if (type == QT_Q8_0)
        raw = (size_t)k + (size_t)k / 16; /* 34 bytes per 32 */
    else if (type == QT_Q4_K)
        raw = (size_t)k / 2 + (size_t)k / 16; /* 144 per 256 */
    else
        raw = qp_off_q6_d(k) + (size_t)k / 128; /* 210 per 256 */
    return (raw + 15) / 16 * 16;
}

/* Repacks `rows` rows of k elements from ggml blocks (rows * k / block blocks, file order, any
 * alignment) into rows * qp_row_bytes(type, k) bytes at dst (padding zeroed). Returns 0, or -1 for
 * an unsupported type or k. */
int ref_qpack_rows(uint32_t type, const void *src, int rows, int k, void *dst);

/* Dequantizes one packed row of k elements to fp32 in natural column order: the same values as
 * ref_dequantize of the source blocks, bit for bit. Returns 0 or -1 like ref_qpack_rows. */
int ref_qpack_dequant_row(uint32_t type, const void *row, int k, float *dst);

#endif
