/* ref_quantize.c — simple reference quantizers into the ggml block formats ref_quant.c reads, for
 * building test data (quantized weights for kernel tests, GGUF files for loader tests). Each
 * block's scales are chosen from its range, rounded to f16 first, and the quants are rounded
 * against those rounded scales, so the error is bounded by what the stored scales allow. */
#include <math.h>
#include <string.h>

#include "ref_quant.h"

static void wr16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v & 0xff);
    p[1] = (uint8_t)(v >> 8);
}

static int clampi(int v, int lo, int hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

uint16_t ref_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    const uint32_t sign = (u >> 16) & 0x8000, man = u & 0x7fffff;
    const int exp = (int)((u >> 23) & 0xff) - 127 + 15;
    if (((u >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) { /* a half subnormal: the 24-bit significand shifted down, rounded */
        if (exp < -10) return (uint16_t)sign;
        const uint32_t m = man | 0x800000, shift = (uint32_t)(14 - exp);
        uint32_t half = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    /* a carry out of the mantissa bumps the exponent, up to inf: what rounding should do */
    uint32_t half = sign | ((uint32_t)exp << 10) | (man >> 13);
    const uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
    return (uint16_t)half;
}

uint16_t ref_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* Stores v as the block's f16 scale at p and returns the value the dequantizer will read. */
static float put_scale(uint8_t *p, float v) {
    const uint16_t h = ref_f32_to_f16(v);
    wr16(p, h);
    return ref_f16_to_f32(h);
}

/* Q8_0: d = max|x| / 127. */
static void q_q8_0(const float *x, uint8_t *b) {
    float amax = 0;
    for (int i = 0; i < 32; i++)
        amax = fmaxf(amax, fabsf(x[i]));
    const float d = put_scale(b, amax / 127.0f);
    for (int i = 0; i < 32; i++)
        b[2 + i] = (uint8_t)(int8_t)(d ? clampi((int)lrintf(x[i] / d), -128, 127) : 0);
}

/* Q4_0: the element of largest magnitude maps to q = 0, i.e. d = that element / -8. */
static void q_q4_0(const float *x, uint8_t *b) {
    float mx = 0;
    for (int i = 0; i < 32; i++)
        if (fabsf(x[i]) > fabsf(mx)) mx = x[i];
    const float d = put_scale(b, mx / -8.0f);
    for (int j = 0; j < 16; j++) {
        const int lo = d ? clampi((int)lrintf(x[j] / d) + 8, 0, 15) : 8;
        const int hi = d ? clampi((int)lrintf(x[j + 16] / d) + 8, 0, 15) : 8;
        b[2 + j] = (uint8_t)(lo | (hi << 4));
    }
}

/* Q5_0: as Q4_0 with 5 bits, d = the element of largest magnitude / -16; the fifth bits go to qh.
 */
static void q_q5_0(const float *x, uint8_t *b) {
    float mx = 0;
    for (int i = 0; i < 32; i++)
        if (fabsf(x[i]) > fabsf(mx)) mx = x[i];
    const float d = put_scale(b, mx / -16.0f);
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        const int lo = d ? clampi((int)lrintf(x[j] / d) + 16, 0, 31) : 16;
        const int hi = d ? clampi((int)lrintf(x[j + 16] / d) + 16, 0, 31) : 16;
        b[6 + j] = (uint8_t)((lo & 0xf) | ((hi & 0xf) << 4));
        qh |= (uint32_t)(lo >> 4) << j | (uint32_t)(hi >> 4) << (j + 16);
    }
    for (int k = 0; k < 4; k++)
        b[2 + k] = (uint8_t)(qh >> (8 * k));
}

/* The inverse of ref_quant.c's k_scale_min: 6-bit scale and min of sub-block j into 12 bytes. */
static void k_pack(uint8_t *s, int j, int scale, int min) {
    if (j < 4) {
        s[j] = (uint8_t)((s[j] & 0xc0) | scale);
        s[j + 4] = (uint8_t)((s[j + 4] & 0xc0) | min);
    } else {
        s[j + 4] = (uint8_t)((scale & 0xf) | ((min & 0xf) << 4));
        s[j - 4] = (uint8_t)(s[j - 4] | ((scale >> 4) << 6));
        s[j] = (uint8_t)(s[j] | ((min >> 4) << 6));
    }
}

/* Q4_K and Q5_K share this: per sub-block of 32, x = d*scale*q - dmin*min with q in [0, levels].
 * Each sub-block's offset is min(0, its minimum) (mins are subtracted, so never negative) and its
 * step its range / levels; the 6-bit scales round up so the steps still span the range. Fills the
 * header (d, dmin, 12 scale bytes) and q[256]. */
static void k_quants(const float *x, uint8_t *b, int levels, int q[256]) {
    float step[8], off[8], max_step = 0, max_off = 0;
    for (int j = 0; j < 8; j++) {
        float lo = 0, hi = -INFINITY;
        for (int l = 0; l < 32; l++) {
            lo = fminf(lo, x[32 * j + l]);
            hi = fmaxf(hi, x[32 * j + l]);
        }
        step[j] = (hi - lo) / (float)levels;
        off[j] = -lo;
        max_step = fmaxf(max_step, step[j]);
        max_off = fmaxf(max_off, off[j]);
    }
    const float d = put_scale(b, max_step / 63.0f), dmin = put_scale(b + 2, max_off / 63.0f);
    memset(b + 4, 0, 12);
    for (int j = 0; j < 8; j++) {
        const int sc = d ? clampi((int)ceilf(step[j] / d), 0, 63) : 0;
        const int m = dmin ? clampi((int)lrintf(off[j] / dmin), 0, 63) : 0;
        k_pack(b + 4, j, sc, m);
        const float s = d * (float)sc, o = dmin * (float)m;
        for (int l = 0; l < 32; l++)
            q[32 * j + l] = s ? clampi((int)lrintf((x[32 * j + l] + o) / s), 0, levels) : 0;
    }
}

static void q_q4_k(const float *x, uint8_t *b) {
    int q[256];
    k_quants(x, b, 15, q);
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            b[16 + 32 * c + l] = (uint8_t)(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
}

static void q_q5_k(const float *x, uint8_t *b) {
    int q[256];
    k_quants(x, b, 31, q);
    uint8_t *qh = b + 16, *qs = b + 48;
    memset(qh, 0, 32);
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            const int q0 = q[64 * c + l], q1 = q[64 * c + 32 + l];
            qs[32 * c + l] = (uint8_t)((q0 & 15) | ((q1 & 15) << 4));
            qh[l] = (uint8_t)(qh[l] | ((q0 >> 4) << (2 * c)) | ((q1 >> 4) << (2 * c + 1)));
        }
}

/* Q6_K: per 16 elements a signed 8-bit scale; the element of largest magnitude maps to q = 0
 * (value -32), as in Q4_0. */
static void q_q6_k(const float *x, uint8_t *b) {
    float scale[16], max_abs = 0;
    for (int j = 0; j < 16; j++) {
        float mx = 0;
        for (int l = 0; l < 16; l++)
            if (fabsf(x[16 * j + l]) > fabsf(mx)) mx = x[16 * j + l];
        scale[j] = mx / -32.0f;
        max_abs = fmaxf(max_abs, fabsf(scale[j]));
    }
    const float d = put_scale(b + 208, max_abs / 127.0f);
    int q[256];
    for (int j = 0; j < 16; j++) {
        const int sc = d ? clampi((int)lrintf(scale[j] / d), -128, 127) : 0;
        b[192 + j] = (uint8_t)(int8_t)sc;
        const float s = d * (float)sc;
        for (int l = 0; l < 16; l++)
            q[16 * j + l] = s ? clampi((int)lrintf(x[16 * j + l] / s) + 32, 0, 63) : 32;
    }
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            const int *v = q + 128 * h + l; /* elements l, l + 32, l + 64, l + 96 of this half */
            b[64 * h + l] = (uint8_t)((v[0] & 15) | ((v[64] & 15) << 4));
            b[64 * h + 32 + l] = (uint8_t)((v[32] & 15) | ((v[96] & 15) << 4));
            b[128 + 32 * h + l] = (uint8_t)((v[0] >> 4) | ((v[32] >> 4) << 2) |
                                            ((v[64] >> 4) << 4) | ((v[96] >> 4) << 6));
        }
}

int ref_quantize(uint32_t type, const float *src, void *dst, int64_t n) {
    const ref_qtype_info *t = ref_qtype_get(type);
    if (!t || !t->can_dequantize || n < 0 || n % t->block) return -1;
    uint8_t *p = dst;
    void (*block_fn)(const float *, uint8_t *) = NULL;
    switch (type) {
    case QT_F32:
        memcpy(dst, src, sizeof(float) * (size_t)n);
        return 0;
    case QT_F16:
        for (int64_t i = 0; i < n; i++)
            wr16(p + 2 * i, ref_f32_to_f16(src[i]));
        return 0;
    case QT_BF16:
        for (int64_t i = 0; i < n; i++)
            wr16(p + 2 * i, ref_f32_to_bf16(src[i]));
        return 0;
    case QT_Q8_0:
        block_fn = q_q8_0;
        break;
    case QT_Q4_0:
        block_fn = q_q4_0;
        break;
    case QT_Q5_0:
        block_fn = q_q5_0;
        break;
    case QT_Q4_K:
        block_fn = q_q4_k;
        break;
    case QT_Q5_K:
        block_fn = q_q5_k;
        break;
    case QT_Q6_K:
        block_fn = q_q6_k;
        break;
    default:
        return -1;
    }
    for (int64_t i = 0; i < n / t->block; i++)
        block_fn(src + (size_t)i * (size_t)t->block, p + (size_t)i * (size_t)t->block_bytes);
    return 0;
}
