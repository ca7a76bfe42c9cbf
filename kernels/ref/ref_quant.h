/* ref_quant.h — the ggml tensor types GGUF files store (ids, block geometry) and plain C
 * dequantizers for the ones this engine reads. The ids and block layouts are the file format's
 * (ggml's), so a GGUF written by llama.cpp's tools reads back bit for bit. One table serves the
 * GGUF reader's size check (type x shape = bytes) and the dequantizers. */
#ifndef QE_KERNELS_REF_QUANT_H
#define QE_KERNELS_REF_QUANT_H
#include <stddef.h>
#include <stdint.h>

/* The type ids as GGUF files write them (ggml_type). Ids 4, 5 and 31..33, 36..38 were removed
 * from the format and are unknown here, as are ids past the table. */
typedef enum {
    QT_F32 = 0,
    QT_F16 = 1,
    QT_Q4_0 = 2,
    QT_Q4_1 = 3,
    QT_Q5_0 = 6,
    QT_Q5_1 = 7,
    QT_Q8_0 = 8,
    QT_Q8_1 = 9,
    QT_Q2_K = 10,
    QT_Q3_K = 11,
    QT_Q4_K = 12,
    QT_Q5_K = 13,
    QT_Q6_K = 14,
    QT_Q8_K = 15,
    QT_BF16 = 30,
} ref_qtype;

typedef struct ref_qtype_info {
    const char *name;   /* ggml's spelling: "Q4_K", "BF16", ... */
    int block;          /* elements per block (1 for plain types, 32, 64, 128 or 256) */
    int block_bytes;    /* bytes one block takes in the file */
    int can_dequantize; /* ref_dequantize handles it */
} ref_qtype_info;

/* The geometry of type id `type`, or NULL when the id is unknown or was removed from the format. */
const ref_qtype_info *ref_qtype_get(uint32_t type);

/* Bytes n elements of `type` take, n a multiple of its block; 0 for an unknown type or an n that
 * is not a whole number of blocks or overflows (never a valid tensor size: dims are > 0). */
uint64_t ref_qtype_bytes(uint32_t type, uint64_t n);

/* Dequantizes n elements of `type` from src (n a multiple of the type's block; src holds
 * n / block blocks, any alignment) into dst. Types: F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q4_K, Q5_K,
 * Q6_K.
 * Returns 0, or -1 for a type it does not handle or an n that is not whole blocks (dst untouched).
 */
int ref_dequantize(uint32_t type, const void *src, float *dst, int64_t n);

/* Quantizes n floats (n a multiple of the type's block) into n / block blocks at dst, same types.
 * Plain rounding against the scales the dequantizer will see (the f16-rounded ones), not ggml's
 * error-minimising search: the same format, a somewhat larger error, and not bit-identical to
 * llama.cpp's output. For building test data. Returns 0, or -1 like ref_dequantize. */
int ref_quantize(uint32_t type, const float *src, void *dst, int64_t n);

/* IEEE half and bfloat16 to float, exact (the scales d/dmin of every block are halves). */
float ref_f16_to_f32(uint16_t h);
float ref_bf16_to_f32(uint16_t h);
/* float to half / bfloat16, round to nearest even (NaN stays NaN, overflow gives inf). */
uint16_t ref_f32_to_f16(float f);
uint16_t ref_f32_to_bf16(float f);

#endif
