/* test_quant_ref.c — the reference dequantizers on blocks built byte by byte, each with values
 * worked out by hand from the block layout (ggml-common.h), and the type table. */
#include <stdint.h>

#include "kernels/ref/ref_qpack.h"
#include "kernels/ref/ref_quant.h"
#include "quant_bound.h"
#include "test_util.h"

/* Halves used as scales below: exact in f16. */
#define H_ONE 0x3c00  /* 1.0 */
#define H_HALF 0x3800 /* 0.5 */
#define H_MTWO 0xc000 /* -2.0 */

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v & 0xff);
    p[1] = (uint8_t)(v >> 8);
}

/* Every element equal, with the first difference printed. */
static void expect_floats(const float *got, const float *want, int n, const char *what) {
    for (int i = 0; i < n; i++)
        if (!(got[i] == want[i]) && !(isnan(got[i]) && isnan(want[i]))) {
            cr_expect_fail("%s: element %d is %.9g, expected %.9g", what, i, got[i], want[i]);
            return;
        }
}

Test(quant_table, geometry_of_each_type) {
    const struct {
        uint32_t id;
        const char *name;
        int block, bytes, deq;
    } want[] = {
        {QT_F32, "F32", 1, 4, 1},       {QT_F16, "F16", 1, 2, 1},
        {QT_BF16, "BF16", 1, 2, 1},     {QT_Q4_0, "Q4_0", 32, 18, 1},
        {QT_Q8_0, "Q8_0", 32, 34, 1},   {QT_Q4_K, "Q4_K", 256, 144, 1},
        {QT_Q5_K, "Q5_K", 256, 176, 1}, {QT_Q6_K, "Q6_K", 256, 210, 1},
        {QT_Q4_1, "Q4_1", 32, 20, 0},   {QT_Q2_K, "Q2_K", 256, 84, 0},
        {QT_Q3_K, "Q3_K", 256, 110, 0}, {QT_Q5_0, "Q5_0", 32, 22, 1},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const ref_qtype_info *t = ref_qtype_get(want[i].id);
        cr_assert(t, "type %u", want[i].id);
        cr_expect_str_eq(t->name, want[i].name);
        cr_expect_eq(t->block, want[i].block, "%s", want[i].name);
        cr_expect_eq(t->block_bytes, want[i].bytes, "%s", want[i].name);
        cr_expect_eq(t->can_dequantize, want[i].deq, "%s", want[i].name);
    }
    /* ids the format removed, and past the end */
    const uint32_t gone[] = {4, 5, 31, 32, 33, 36, 37, 38, 42, 0xffffffffu};
    for (size_t i = 0; i < sizeof gone / sizeof gone[0]; i++)
        cr_expect_null(ref_qtype_get(gone[i]), "id %u", gone[i]);
    cr_expect_eq(ref_qtype_bytes(QT_Q4_K, 512), 288);
    cr_expect_eq(ref_qtype_bytes(QT_Q4_K, 100), 0, "not whole blocks");
    cr_expect_eq(ref_qtype_bytes(QT_F32, 1ULL << 62), 0, "bytes overflow");
    cr_expect_eq(ref_qtype_bytes(4, 32), 0);
}

Test(quant_ref, refuses_what_it_cannot_do) {
    uint8_t blk[256] = {0};
    float out[256] = {0};
    out[0] = 42;
    cr_expect_eq(ref_dequantize(QT_Q4_0, blk, out, 31), -1, "not whole blocks");
    cr_expect_eq(ref_dequantize(QT_Q4_1, blk, out, 32), -1, "listed but not dequantized");
    cr_expect_eq(ref_dequantize(77, blk, out, 32), -1, "unknown");
    cr_expect_eq(ref_dequantize(QT_F32, blk, out, -1), -1);
    cr_expect_eq(out[0], 42, "dst untouched on refusal");
}

Test(quant_ref, plain_types) {
    const uint16_t h[] = {H_ONE,  H_MTWO, H_HALF, 0x7bff, 0x0001,
                          0x0400, 0x7c00, 0xfc00, 0x8000, 0x3555};
    const float hw[] = {1.0f,     -2.0f,    0.5f,      65504.0f, 0x1p-24f,
                        0x1p-14f, INFINITY, -INFINITY, -0.0f,    0.333251953125f};
    uint8_t b[20];
    for (int i = 0; i < 10; i++)
        put16(b + 2 * i, h[i]);
    float out[10];
    cr_assert_eq(ref_dequantize(QT_F16, b, out, 10), 0);
    expect_floats(out, hw, 10, "F16");
    cr_expect(signbit(out[8]), "-0.0 keeps its sign");
    put16(b, 0x7e00);
    ref_dequantize(QT_F16, b, out, 1);
    cr_expect(isnan(out[0]));

    const uint16_t bf[] = {0x3f80, 0xc040, 0x4049, 0x0000};
    const float bw[] = {1.0f, -3.0f, 3.140625f, 0.0f};
    for (int i = 0; i < 4; i++)
        put16(b + 2 * i, bf[i]);
    cr_assert_eq(ref_dequantize(QT_BF16, b, out, 4), 0);
    expect_floats(out, bw, 4, "BF16");

    const float f[] = {1.5f, -7.25f, 1e-30f};
    cr_assert_eq(ref_dequantize(QT_F32, f, out, 3), 0);
    expect_floats(out, f, 3, "F32");
}

/* Q8_0: [f16 d][32 x int8]; x = d * q. Two blocks with different scales. */
Test(quant_ref, q8_0) {
    uint8_t b[2 * 34];
    put16(b, H_HALF);
    for (int i = 0; i < 32; i++)
        b[2 + i] = (uint8_t)(int8_t)(i - 16);
    put16(b + 34, H_MTWO);
    for (int i = 0; i < 32; i++)
        b[36 + i] = (uint8_t)(int8_t)(i % 2 ? -128 : 127);
    float out[64], want[64];
    for (int i = 0; i < 32; i++) {
        want[i] = (float)(i - 16) * 0.5f; /* -8, -7.5, ..., 7.5 */
        want[32 + i] = i % 2 ? 256.0f : -254.0f;
    }
    cr_assert_eq(ref_dequantize(QT_Q8_0, b, out, 64), 0);
    expect_floats(out, want, 64, "Q8_0");
}

/* Q4_0: [f16 d][16 bytes]; byte j: element j in the low nibble, element j + 16 in the high one;
 * x = d * (q - 8). With d = 0.5 and low nibbles 0..15: (q - 8) * 0.5. */
Test(quant_ref, q4_0) {
    uint8_t b[18 + 1];
    uint8_t *blk = b + 1; /* odd address: blocks are read at any alignment */
    put16(blk, H_HALF);
    for (int j = 0; j < 16; j++)
        blk[2 + j] = (uint8_t)(j | ((15 - j) << 4));
    float out[32], want[32];
    for (int j = 0; j < 16; j++) {
        want[j] = (float)(j - 8) * 0.5f;      /* -4 .. 3.5 */
        want[16 + j] = (float)(7 - j) * 0.5f; /* high nibble 15 - j: 3.5 .. -4 */
    }
    cr_assert_eq(ref_dequantize(QT_Q4_0, blk, out, 32), 0);
    expect_floats(out, want, 32, "Q4_0");
    cr_expect_eq(out[0], -4.0f);
    cr_expect_eq(out[31], -4.0f);
}

/* Q5_0: [f16 d][u32 qh][16 bytes]; the nibbles as Q4_0's, bit i of qh the fifth bit of element i;
 * x = d * (q - 16). With d = 0.5, low nibbles j / 15 - j and qh bits set for odd elements. */
Test(quant_ref, q5_0) {
    uint8_t b[22 + 1];
    uint8_t *blk = b + 1; /* odd address */
    put16(blk, H_HALF);
    const uint32_t qh = 0xaaaaaaaau; /* odd elements have the fifth bit */
    for (int k = 0; k < 4; k++)
        blk[2 + k] = (uint8_t)(qh >> (8 * k));
    for (int j = 0; j < 16; j++)
        blk[6 + j] = (uint8_t)(j | ((15 - j) << 4));
    float out[32], want[32];
    for (int j = 0; j < 16; j++) {
        want[j] = (float)((j | (j & 1) << 4) - 16) * 0.5f;
        want[16 + j] = (float)(((15 - j) | (j & 1) << 4) - 16) * 0.5f;
    }
    cr_assert_eq(ref_dequantize(QT_Q5_0, blk, out, 32), 0);
    expect_floats(out, want, 32, "Q5_0");
    cr_expect_eq(out[0], -8.0f);
    cr_expect_eq(out[1], 0.5f, "q = 1 | 16");
    cr_expect_eq(out[30], -7.5f, "q = 1, fifth bit clear");
}

/* The K-quant scales used by the Q4_K and Q5_K tests: 6-bit scale and min of each sub-block,
 * and their 12-byte packing worked out by hand:
 *   sub-block   0  1  2  3   4   5   6   7
 *   scale       1  2  3 63   5  33  47  60   (5 = 00|0101, 33 = 10|0001, 47 = 10|1111, 60 =
 * 11|1100) min         0  4 10 63   7  20  32  61   (7 = 00|0111, 20 = 01|0100, 32 = 10|0000, 61 =
 * 11|1101) bytes 0..3 = scale 0..3 | top 2 bits of scale 4..7 << 6: 0x01, 0x82, 0x83, 0xff
 * bytes 4..7 = min 0..3 | top 2 bits of min 4..7 << 6:     0x00, 0x44, 0x8a, 0xff
 * bytes 8..11 = low 4 bits of scale 4..7 | low 4 bits of min 4..7 << 4: 0x75, 0x41, 0x0f, 0xdc */
static const int K_SCALE[8] = {1, 2, 3, 63, 5, 33, 47, 60};
static const int K_MIN[8] = {0, 4, 10, 63, 7, 20, 32, 61};
static const uint8_t K_PACKED[12] = {0x01, 0x82, 0x83, 0xff, 0x00, 0x44,
                                     0x8a, 0xff, 0x75, 0x41, 0x0f, 0xdc};

/* Q4_K: [f16 d][f16 dmin][12 scales][128 qs]; sub-block k (32 elements) reads the low nibbles of
 * qs[32*(k/2) ..] when k is even, the high nibbles when odd; x = d*scale*q - dmin*min. */
Test(quant_ref, q4_k) {
    uint8_t b[144];
    put16(b, H_ONE);
    put16(b + 2, H_HALF);
    memcpy(b + 4, K_PACKED, 12);
    /* element l of sub-block k holds q = (l + k) mod 16 */
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            b[16 + 32 * c + l] = (uint8_t)(((l + 2 * c) & 15) | (((l + 2 * c + 1) & 15) << 4));
    float out[256], want[256];
    for (int k = 0; k < 8; k++)
        for (int l = 0; l < 32; l++)
            want[32 * k + l] =
                1.0f * (float)K_SCALE[k] * (float)((l + k) & 15) - 0.5f * (float)K_MIN[k];
    cr_assert_eq(ref_dequantize(QT_Q4_K, b, out, 256), 0);
    expect_floats(out, want, 256, "Q4_K");
    /* spot values by hand */
    cr_expect_eq(out[0], 0.0f);             /* scale 1 * q 0 - 0.5 * min 0 */
    cr_expect_eq(out[32 * 3], 157.5f);      /* 63 * 3 - 0.5 * 63 */
    cr_expect_eq(out[32 * 5 + 3], 254.0f);  /* 33 * 8 - 0.5 * 20: scale 33 from the high bits */
    cr_expect_eq(out[32 * 7 + 31], 329.5f); /* 60 * 6 - 0.5 * 61 */
    cr_expect_eq(out[32 * 6 + 10], -16.0f); /* q = 16 mod 16 = 0: 47 * 0 - 0.5 * 32 */
}

/* Q5_K: [f16 d][f16 dmin][12 scales][32 qh][128 qs]; Q4_K's nibbles plus bit k of qh[l] as the
 * value 16 of element l of sub-block k. */
Test(quant_ref, q5_k) {
    uint8_t b[176] = {0};
    put16(b, H_HALF);
    put16(b + 2, H_ONE);
    memcpy(b + 4, K_PACKED, 12);
    /* low 4 bits (3l + k) mod 16, high bit set when (l + k) is a multiple of 3 */
    for (int l = 0; l < 32; l++) {
        uint8_t qh = 0;
        for (int k = 0; k < 8; k++)
            qh |= (uint8_t)(((l + k) % 3 == 0) << k);
        b[16 + l] = qh;
    }
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            b[48 + 32 * c + l] =
                (uint8_t)(((3 * l + 2 * c) & 15) | (((3 * l + 2 * c + 1) & 15) << 4));
    float out[256], want[256];
    for (int k = 0; k < 8; k++)
        for (int l = 0; l < 32; l++) {
            const int q = ((3 * l + k) & 15) + ((l + k) % 3 == 0 ? 16 : 0);
            want[32 * k + l] = 0.5f * (float)K_SCALE[k] * (float)q - 1.0f * (float)K_MIN[k];
        }
    cr_assert_eq(ref_dequantize(QT_Q5_K, b, out, 256), 0);
    expect_floats(out, want, 256, "Q5_K");
    cr_expect_eq(out[0], 8.0f);       /* q = 0 + 16: 0.5 * 1 * 16 - 0 */
    cr_expect_eq(out[32 + 2], 19.0f); /* q = 7 + 16: 0.5 * 2 * 23 - 4 */
    cr_expect_eq(out[32 * 7 + 1],
                 239.0f); /* q = 10, no high bit (8 % 3 != 0): 0.5 * 60 * 10 - 61 */
}

/* Q6_K: [128 ql][64 qh][16 int8 scales][f16 d]; x = d * scale * (q - 32), q 6 bits. In each half
 * of 128 elements (ql += 64, qh += 32, scales += 8), for l in 0..31: element l = low nibble of
 * ql[l] + bits 0-1 of qh[l]; l + 32 = low nibble of ql[l + 32] + bits 2-3; l + 64 = high nibble
 * of ql[l] + bits 4-5; l + 96 = high nibble of ql[l + 32] + bits 6-7; scale index l / 16 +
 * 2*quarter. */
Test(quant_ref, q6_k_by_hand) {
    uint8_t b[210] = {0};
    b[0] = 0x21;   /* ql[0]: element 0 low = 1, element 64 low = 2 */
    b[32] = 0x00;  /* ql[32]: elements 32 and 96 low = 0 */
    b[128] = 0xe4; /* qh[0] = 11 10 01 00: high bits 0 (el 0), 1 (el 32), 2 (el 64), 3 (el 96) */
    b[192 + 0] = (uint8_t)(int8_t)-3; /* scale of elements 0..15 */
    b[192 + 2] = 2;                   /* 32..47 */
    b[192 + 4] = 5;                   /* 64..79 */
    b[192 + 6] = (uint8_t)(int8_t)-1; /* 96..111 */
    put16(b + 208, H_HALF);
    float out[256];
    cr_assert_eq(ref_dequantize(QT_Q6_K, b, out, 256), 0);
    cr_expect_eq(out[0], 46.5f);   /* q = 1 - 32 = -31: 0.5 * -3 * -31 */
    cr_expect_eq(out[32], -16.0f); /* q = 0 | 1 << 4 = 16 - 32 = -16: 0.5 * 2 * -16 */
    cr_expect_eq(out[64], 5.0f);   /* q = 2 | 2 << 4 = 34 - 32 = 2: 0.5 * 5 * 2 */
    cr_expect_eq(out[96], -8.0f);  /* q = 0 | 3 << 4 = 48 - 32 = 16: 0.5 * -1 * 16 */
    cr_expect_eq(out[1], 48.0f);   /* all zero bits: q = -32, 0.5 * -3 * -32 */
    cr_expect_eq(out[16], 0.0f);   /* scale 1 is 0 */
    cr_expect_eq(out[128], 0.0f);  /* the second half's scales are all 0 */
}

/* Q6_K on a full pattern: every element a different 6-bit value, every scale different (half of
 * them negative), packed per the layout above. */
Test(quant_ref, q6_k_pattern) {
    uint8_t b[210] = {0};
    int q[256];
    for (int e = 0; e < 256; e++)
        q[e] = (e * 5 + 3) & 63;
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            const int *v = q + 128 * h + l; /* v[0], v[32], v[64], v[96] */
            b[64 * h + l] = (uint8_t)((v[0] & 15) | ((v[64] & 15) << 4));
            b[64 * h + 32 + l] = (uint8_t)((v[32] & 15) | ((v[96] & 15) << 4));
            b[128 + 32 * h + l] = (uint8_t)((v[0] >> 4) | ((v[32] >> 4) << 2) |
                                            ((v[64] >> 4) << 4) | ((v[96] >> 4) << 6));
        }
    int8_t sc[16];
    for (int i = 0; i < 16; i++) {
        sc[i] = (int8_t)(i % 2 ? -(i * 7) : i * 5 + 1);
        b[192 + i] = (uint8_t)sc[i];
    }
    put16(b + 208, H_MTWO);
    float out[256], want[256];
    for (int e = 0; e < 256; e++)
        want[e] = -2.0f * (float)sc[e / 16] * (float)(q[e] - 32);
    cr_assert_eq(ref_dequantize(QT_Q6_K, b, out, 256), 0);
    expect_floats(out, want, 256, "Q6_K");
}

/* Several blocks in a row: each block's output lands at its own offset. */
Test(quant_ref, consecutive_k_blocks) {
    uint8_t b[3 * 144] = {0};
    for (int i = 0; i < 3; i++) {
        put16(b + 144 * i, (uint16_t)(H_ONE + (i << 10))); /* d = 1, 2, 4 */
        memcpy(b + 144 * i + 4, K_PACKED, 12);
        memset(b + 144 * i + 16, 0x11, 128); /* q = 1 everywhere */
    }
    float out[768];
    cr_assert_eq(ref_dequantize(QT_Q4_K, b, out, 768), 0);
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 8; k++)
            cr_expect_eq(out[256 * i + 32 * k + 5], (float)(1 << i) * (float)K_SCALE[k],
                         "block %d sub-block %d", i, k);
}

/* --- quantize -> dequantize round trips: seeded inputs, every element within the error the
 * block's own scales allow (worked out from the inputs, independently of the quantizer) --- */

static uint64_t rng_state;
static float frand(float lo, float hi) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return lo + (hi - lo) * (float)((rng_state >> 11) * 0x1p-53);
}

/* Input shapes: centred, all positive (K-quants' offset is then 0), all negative, with outliers,
 * zeros (whole blocks) then a constant. */
static void fill(float *x, int n, int kind) {
    for (int i = 0; i < n; i++) {
        switch (kind) {
        case 0:
            x[i] = frand(-1, 1);
            break;
        case 1:
            x[i] = frand(0.5f, 2);
            break;
        case 2:
            x[i] = frand(-3, -0.25f);
            break;
        case 3:
            x[i] = frand(-0.1f, 0.1f) * (i % 37 == 5 ? 300.0f : 1.0f);
            break;
        default:
            x[i] = i < n / 2 ? 0.0f : 0.75f;
        }
    }
}

Test(quant_ref, round_trip_within_the_block_error) {
    const uint32_t types[] = {QT_F32,  QT_F16,  QT_BF16, QT_Q8_0, QT_Q4_0,
                              QT_Q5_0, QT_Q4_K, QT_Q5_K, QT_Q6_K};
    const int counts[] = {1, 3, 7};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const ref_qtype_info *t = ref_qtype_get(types[ti]);
        const int block = t->block > 1 ? t->block : 256;
        for (int kind = 0; kind < 5; kind++)
            for (size_t ci = 0; ci < 3; ci++) {
                const int n = block * counts[ci] * (kind == 4 ? 2 : 1);
                rng_state = 0x9e3779b97f4a7c15ULL ^ (uint64_t)(ti * 131 + kind * 17 + ci);
                float *x = malloc(sizeof *x * (size_t)n), *y = malloc(sizeof *y * (size_t)n);
                uint8_t *q = malloc(ref_qtype_bytes(types[ti], (uint64_t)n));
                fill(x, n, kind);
                for (int i = 0; i < n; i++)
                    y[i] = NAN; /* poisoned: every element must be written */
                cr_assert_eq(ref_quantize(types[ti], x, q, n), 0, "%s", t->name);
                cr_assert_eq(ref_dequantize(types[ti], q, y, n), 0, "%s", t->name);
                double worst = -1;
                int at = 0;
                for (int i = 0; i < n; i++) {
                    const int b0 = t->block > 1 ? i / t->block * t->block : i;
                    const double e = fabs((double)y[i] - x[i]);
                    const double bnd = quant_bound(types[ti], x + b0, t->block > 1 ? i - b0 : 0);
                    if (!(e <= bnd + 1e-30) && (worst < 0 || !(e - bnd <= worst))) {
                        worst = isnan(e) ? INFINITY : e - bnd;
                        at = i;
                    }
                }
                cr_expect_lt(worst, 0,
                             "%s, input kind %d, %d elements: element %d is %.7g for %.7g", t->name,
                             kind, n, at, y[at], x[at]);
                if (kind == 4 && t->block > 1) /* the zero block comes back exactly zero */
                    for (int i = 0; i < n / 2; i++)
                        cr_assert_eq(y[i], 0.0f, "%s: element %d of a zero block", t->name, i);
                free(x);
                free(y);
                free(q);
            }
    }
}

Test(quant_ref, f16_and_bf16_rounding) {
    cr_expect_eq(ref_f32_to_f16(1.0f), H_ONE);
    cr_expect_eq(ref_f32_to_f16(-2.0f), H_MTWO);
    cr_expect_eq(ref_f32_to_f16(65520.0f), 0x7c00, "rounds up past 65504 to inf");
    cr_expect_eq(ref_f32_to_f16(0x1p-25f), 0x0000, "half of the least subnormal: ties to even 0");
    cr_expect_eq(ref_f32_to_f16(0x1.8p-25f), 0x0001);
    cr_expect_eq(ref_f32_to_f16(1.0f + 0x1p-11f), H_ONE, "tie to even");
    cr_expect_eq(ref_f32_to_f16(1.0f + 0x1.8p-11f), H_ONE + 1);
    cr_expect_eq(ref_f32_to_f16(NAN) & 0x7e00, 0x7e00);
    cr_expect_eq(ref_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80, "tie to even");
    cr_expect_eq(ref_f32_to_bf16(-3.0f), 0xc040);
    /* every finite half round-trips exactly */
    for (uint32_t u = 0; u < 0x10000; u++) {
        const float f = ref_f16_to_f32((uint16_t)u);
        if (!isnan(f)) cr_assert_eq(ref_f32_to_f16(f), u, "half 0x%04x", u);
    }
}

/* ---- the GPU layout of quantized matrices (ref_qpack.h) ---- */

Test(qpack, lane_order_is_a_permutation_of_each_span) {
    int seen[QP_SPAN] = {0};
    for (int tig = 0; tig < 4; tig++)
        for (int e = 0; e < 32; e++) {
            const int c = qp_col(tig, e);
            cr_assert(c >= 0 && c < QP_SPAN, "tig %d e %d -> %d", tig, e, c);
            seen[c]++;
            int t2, e2;
            qp_lane_of(c, &t2, &e2);
            cr_expect(t2 == tig && e2 == e, "column %d: (%d, %d) back as (%d, %d)", c, tig, e, t2,
                      e2);
        }
    for (int c = 0; c < QP_SPAN; c++)
        cr_expect_eq(seen[c], 1, "column %d", c);
    /* mma j's pairs: e = 4j + 2h + b at column 16j + 2 tig + 8h + b */
    cr_expect_eq(qp_col(3, 4 * 5 + 2 + 1), 16 * 5 + 6 + 8 + 1);
}

Test(qpack, row_bytes_keep_the_file_size) {
    cr_expect_eq(qp_row_bytes(QT_Q4_K, 2560), 2560 / 256 * 144); /* already a multiple of 16 */
    cr_expect_eq(qp_row_bytes(QT_Q8_0, 2560), 2560 / 32 * 34);
    cr_expect_eq(qp_row_bytes(QT_Q6_K, 2560), (2560 / 256 * 210 + 15) / 16 * 16);
    cr_expect_eq(qp_row_bytes(QT_Q6_K, 4096), 4096 / 256 * 210); /* 3360: no padding */
    cr_expect_eq(qp_row_bytes(QT_Q4_0, 2560), 0);
    cr_expect_eq(qp_row_bytes(QT_Q4_K, 100), 0);
    cr_expect_eq(qp_row_bytes(QT_Q8_0, 128), 0); /* spans stay whole: multiples of 256 */
    uint8_t b[64];
    cr_expect_eq(ref_qpack_rows(QT_Q5_K, b, 1, 256, b), -1);
    cr_expect_eq(ref_qpack_dequant_row(QT_Q4_0, b, 256, NULL), -1);
}

/* Packing then dequantizing the packed rows gives ref_dequantize's values bit for bit, for
 * quantized random rows of each type at two widths. */
Test(qpack, packed_rows_dequantize_as_the_blocks) {
    const uint32_t types[] = {QT_Q8_0, QT_Q4_K, QT_Q6_K};
    const int ks[] = {256, 2560}, rows = 3;
    for (int ti = 0; ti < 3; ti++)
        for (int ki = 0; ki < 2; ki++) {
            const int k = ks[ki];
            const size_t n = (size_t)rows * k;
            const ref_qtype_info *t = ref_qtype_get(types[ti]);
            float *src = malloc(n * 4), *want = malloc(n * 4), *got = malloc((size_t)k * 4);
            uint8_t *blocks = malloc(n / t->block * t->block_bytes);
            const size_t rb = qp_row_bytes(types[ti], k);
            uint8_t *packed = malloc(rows * rb);
            uint32_t s = 12345u + ti * 7 + ki;
            for (size_t i = 0; i < n; i++) {
                s = s * 1664525u + 1013904223u;
                src[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * (1.0f + (float)(i % 97));
            }
            cr_assert_eq(ref_quantize(types[ti], src, blocks, (int64_t)n), 0);
            cr_assert_eq(ref_dequantize(types[ti], blocks, want, (int64_t)n), 0);
            cr_assert_eq(ref_qpack_rows(types[ti], blocks, rows, k, packed), 0);
            for (int r = 0; r < rows; r++) {
                cr_assert_eq(ref_qpack_dequant_row(types[ti], packed + r * rb, k, got), 0);
                char what[64];
                snprintf(what, sizeof what, "%s k %d row %d", t->name, k, r);
                expect_floats(got, want + (size_t)r * k, k, what);
            }
            free(src), free(want), free(got), free(blocks), free(packed);
        }
}
