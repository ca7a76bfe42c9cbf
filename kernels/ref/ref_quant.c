/* ref_quant.c — reference dequantizers for the ggml block formats this engine reads. Blocks are
 * read byte by byte at the offsets of ggml's block structs (little-endian, no alignment needed),
 * so the code is the layout's definition and never type-puns a mapped file. */
#include <math.h>
#include <string.h>

#include "ref_quant.h"

static uint16_t rd16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}

float ref_f16_to_f32(uint16_t h) {
    const int sign = h >> 15, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    float v;
    if (exp == 0)
        v = ldexpf((float)man, -24); /* zero and subnormals: man * 2^-24 */
    else if (exp == 31)
        v = man ? NAN : INFINITY;
    else
        v = ldexpf((float)(man | 0x400), exp - 25);
    return sign ? -v : v;
}

float ref_bf16_to_f32(uint16_t h) {
    const uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Q8_0: f16 d, then 32 int8 q; x = d * q. */
static void deq_q8_0(const uint8_t *b, float *y) {
    const float d = ref_f16_to_f32(rd16(b));
    for (int i = 0; i < 32; i++)
        y[i] = d * (float)(int8_t)b[2 + i];
}

/* Q4_0: f16 d, then 16 bytes; byte j holds element j in its low nibble and element j + 16 in
 * its high nibble; x = d * (q - 8). */
static void deq_q4_0(const uint8_t *b, float *y) {
    const float d = ref_f16_to_f32(rd16(b));
    const uint8_t *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)((qs[j] & 0xf) - 8);
        y[j + 16] = d * (float)((qs[j] >> 4) - 8);
    }
}

/* Q5_0: f16 d, a little-endian u32 qh (bit i: the fifth bit of element i), then 16 bytes of low
 * nibbles laid out as Q4_0's; x = d * (q - 16), q in [0, 31]. */
static void deq_q5_0(const uint8_t *b, float *y) {
    const float d = ref_f16_to_f32(rd16(b));
    const uint32_t qh =
        (uint32_t)b[2] | (uint32_t)b[3] << 8 | (uint32_t)b[4] << 16 | (uint32_t)b[5] << 24;
    const uint8_t *qs = b + 6;
    for (int j = 0; j < 16; j++) {
        const int lo = (qs[j] & 0xf) | (int)((qh >> j) & 1) << 4;
        const int hi = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
        y[j] = d * (float)(lo - 16);
        y[j + 16] = d * (float)(hi - 16);
    }
}

/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K super-block, packed in 12 bytes:
 * bytes 0..3 hold scales 0..3 in their low 6 bits, bytes 4..7 mins 0..3 likewise; sub-blocks
 * 4..7 keep their low 4 bits in bytes 8..11 (scale in the low nibble, min in the high one) and
 * their top 2 bits in the spare top bits of bytes 0..3 (scales) and 4..7 (mins). */
static void k_scale_min(const uint8_t *s, int j, int *scale, int *min) {
    if (j < 4) {
        *scale = s[j] & 63;
        *min = s[j + 4] & 63;
    } else {
        *scale = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
        *min = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* Q4_K: f16 d, f16 dmin, 12 bytes of scales/mins, 128 bytes of nibbles. Eight sub-blocks of 32;
 * each 32 bytes of qs serve two of them: sub-block 2c from the low nibbles, 2c + 1 from the high.
 * x = d * scale * q - dmin * min. */
static void deq_q4_k(const uint8_t *b, float *y) {
    const float d = ref_f16_to_f32(rd16(b)), dmin = ref_f16_to_f32(rd16(b + 2));
    const uint8_t *sc = b + 4, *qs = b + 16;
    for (int c = 0; c < 4; c++, qs += 32, y += 64) {
        int s0, m0, s1, m1;
        k_scale_min(sc, 2 * c, &s0, &m0);
        k_scale_min(sc, 2 * c + 1, &s1, &m1);
        for (int l = 0; l < 32; l++) {
            y[l] = d * (float)s0 * (float)(qs[l] & 0xf) - dmin * (float)m0;
            y[l + 32] = d * (float)s1 * (float)(qs[l] >> 4) - dmin * (float)m1;
        }
    }
}

/* Q5_K: Q4_K plus a fifth bit per element: f16 d, f16 dmin, 12 bytes of scales/mins, 32 bytes qh,
 * 128 bytes qs. Element l of sub-block k takes bit k of qh[l] as its value 16. */
static void deq_q5_k(const uint8_t *b, float *y) {
    const float d = ref_f16_to_f32(rd16(b)), dmin = ref_f16_to_f32(rd16(b + 2));
    const uint8_t *sc = b + 4, *qh = b + 16, *qs = b + 48;
    for (int c = 0; c < 4; c++, qs += 32, y += 64) {
        int s0, m0, s1, m1;
        k_scale_min(sc, 2 * c, &s0, &m0);
        k_scale_min(sc, 2 * c + 1, &s1, &m1);
        for (int l = 0; l < 32; l++) {
            const int q0 = (qs[l] & 0xf) | (((qh[l] >> (2 * c)) & 1) << 4);
            const int q1 = (qs[l] >> 4) | (((qh[l] >> (2 * c + 1)) & 1) << 4);
            y[l] = d * (float)s0 * (float)q0 - dmin * (float)m0;
            y[l + 32] = d * (float)s1 * (float)q1 - dmin * (float)m1;
        }
    }
}

/* Q6_K: 128 bytes ql (low 4 bits), 64 bytes qh (high 2 bits), 16 int8 scales (one per 16
 * elements), f16 d; x = d * scale * (q - 32). Each half of 128 elements uses 64 bytes of ql and
 * 32 of qh: for l in 0..31, ql[l] gives elements l (low nibble) and l + 64 (high), ql[l + 32]
 * elements l + 32 and l + 96, and qh[l] the high bits of l, l + 32, l + 64, l + 96 in bit pairs
 * 0-1, 2-3, 4-5, 6-7. */
static void deq_q6_k(const uint8_t *b, float *y) {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    const float d = ref_f16_to_f32(rd16(b + 208));
    for (int half = 0; half < 2; half++, ql += 64, qh += 32, sc += 8, y += 128) {
        for (int l = 0; l < 32; l++) {
            const int g = l / 16; /* which 16 of each group of 32 */
            const int q[4] = {
                ((ql[l] & 0xf) | (((qh[l] >> 0) & 3) << 4)) - 32,
                ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32,
                ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32,
                ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32,
            };
            for (int k = 0; k < 4; k++)
                y[l + 32 * k] = d * (float)sc[g + 2 * k] * (float)q[k];
        }
    }
}

int ref_dequantize(uint32_t type, const void *src, float *dst, int64_t n) {
    const ref_qtype_info *t = ref_qtype_get(type);
    if (!t || !t->can_dequantize || n < 0 || n % t->block) return -1;
    const uint8_t *p = src;
    const int64_t blocks = n / t->block;
    void (*block_fn)(const uint8_t *, float *) = NULL;
    switch (type) {
    case QT_F32:
        memcpy(dst, src, sizeof(float) * (size_t)n);
        return 0;
    case QT_F16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = ref_f16_to_f32(rd16(p + 2 * i));
        return 0;
    case QT_BF16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = ref_bf16_to_f32(rd16(p + 2 * i));
        return 0;
    case QT_Q8_0:
        block_fn = deq_q8_0;
        break;
    case QT_Q4_0:
        block_fn = deq_q4_0;
        break;
    case QT_Q5_0:
        block_fn = deq_q5_0;
        break;
    case QT_Q4_K:
        block_fn = deq_q4_k;
        break;
    case QT_Q5_K:
        block_fn = deq_q5_k;
        break;
    case QT_Q6_K:
        block_fn = deq_q6_k;
        break;
    default:
        return -1;
    }
    for (int64_t i = 0; i < blocks; i++)
        block_fn(p + (size_t)i * (size_t)t->block_bytes, dst + (size_t)i * (size_t)t->block);
    return 0;
}
