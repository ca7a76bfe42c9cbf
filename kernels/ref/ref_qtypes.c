/* ref_qtypes.c — the one table of ggml tensor types: name, elements per block, bytes per block.
 * Block sizes are those of ggml's block structs (ggml-common.h); a type this engine cannot
 * dequantize is still listed so the GGUF reader can check its size and name it when refusing. */
#include "ref_quant.h"

#define N_TYPES 42

/* Indexed by type id; a NULL name marks an id the format removed (4, 5, 31..33, 36..38). */
static const ref_qtype_info TYPES[N_TYPES] = {
    [0] = {"F32", 1, 4, 1},
    [1] = {"F16", 1, 2, 1},
    [2] = {"Q4_0", 32, 18, 1},    /* f16 d, 16 bytes of nibbles */
    [3] = {"Q4_1", 32, 20, 0},    /* f16 d, f16 m, 16 bytes of nibbles */
    [6] = {"Q5_0", 32, 22, 1},    /* f16 d, 4 bytes of high bits, 16 of nibbles */
    [7] = {"Q5_1", 32, 24, 0},    /* f16 d, f16 m, 4 + 16 */
    [8] = {"Q8_0", 32, 34, 1},    /* f16 d, 32 int8 */
    [9] = {"Q8_1", 32, 36, 0},    /* f16 d, f16 s, 32 int8 */
    [10] = {"Q2_K", 256, 84, 0},  /* 16 scales, 64 quants, f16 d, f16 dmin */
    [11] = {"Q3_K", 256, 110, 0}, /* 32 hmask, 64 quants, 12 scales, f16 d */
    [12] = {"Q4_K", 256, 144, 1}, /* f16 d, f16 dmin, 12 scales, 128 quants */
    [13] = {"Q5_K", 256, 176, 1}, /* f16 d, f16 dmin, 12 scales, 32 qh, 128 qs */
    [14] = {"Q6_K", 256, 210, 1}, /* 128 ql, 64 qh, 16 int8 scales, f16 d */
    [15] = {"Q8_K", 256, 292, 0}, /* f32 d, 256 int8, 16 int16 sums */
    [16] = {"IQ2_XXS", 256, 66, 0},
    [17] = {"IQ2_XS", 256, 74, 0},
    [18] = {"IQ3_XXS", 256, 98, 0},
    [19] = {"IQ1_S", 256, 50, 0},
    [20] = {"IQ4_NL", 32, 18, 0},
    [21] = {"IQ3_S", 256, 110, 0},
    [22] = {"IQ2_S", 256, 82, 0},
    [23] = {"IQ4_XS", 256, 136, 0},
    [24] = {"I8", 1, 1, 0},
    [25] = {"I16", 1, 2, 0},
    [26] = {"I32", 1, 4, 0},
    [27] = {"I64", 1, 8, 0},
    [28] = {"F64", 1, 8, 0},
    [29] = {"IQ1_M", 256, 56, 0},
    [30] = {"BF16", 1, 2, 1},
    [34] = {"TQ1_0", 256, 54, 0},
    [35] = {"TQ2_0", 256, 66, 0},
    [39] = {"MXFP4", 32, 17, 0}, /* e8m0 scale, 16 bytes of e2m1 pairs */
    [40] = {"NVFP4", 64, 36, 0}, /* 4 ue4m3 scales, 32 bytes of e2m1 pairs */
    [41] = {"Q1_0", 128, 18, 0}, /* f16 d, 16 bytes of bits */
};

const ref_qtype_info *ref_qtype_get(uint32_t type) {
    if (type >= N_TYPES || !TYPES[type].name) return NULL;
    return &TYPES[type];
}

uint64_t ref_qtype_bytes(uint32_t type, uint64_t n) {
    const ref_qtype_info *t = ref_qtype_get(type);
    if (!t || n % (uint64_t)t->block) return 0;
    const uint64_t blocks = n / (uint64_t)t->block;
    if (blocks > UINT64_MAX / (uint64_t)t->block_bytes) return 0;
    return blocks * (uint64_t)t->block_bytes;
}
