/* ref_qpack.c — the reference of the GPU layout of ref_qpack.h: ggml blocks -> packed rows at
 * upload, and packed rows -> fp32 (what test_kernels and test_quant_ref check the kernels and the
 * repacking against). Reads blocks byte by byte at ggml's offsets, like ref_quant.c. */
#include <string.h>

#include "ref_qpack.h"

static uint16_t rd16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}

/* Where column c (0..k-1) of a row lands: its span's lane and element. */
static void locate(int c, int *span, int *tig, int *e) {
    *span = c / QP_SPAN;
    qp_lane_of(c % QP_SPAN, tig, e);
}

static void put_nibble(uint8_t *qs, int c, int v) {
    int s, tig, e;
    locate(c, &s, &tig, &e);
    uint8_t *b = qs + (size_t)s * 64 + (size_t)tig * 16 + (size_t)(e >> 1);
    *b = (uint8_t)(e & 1 ? (*b & 0x0f) | (v << 4) : (*b & 0xf0) | v);
}
static int get_nibble(const uint8_t *qs, int c) {
    int s, tig, e;
    locate(c, &s, &tig, &e);
    const uint8_t b = qs[(size_t)s * 64 + (size_t)tig * 16 + (size_t)(e >> 1)];
    return e & 1 ? b >> 4 : b & 0xf;
}
static void put_pair(uint8_t *qh, int c, int v) {
    int s, tig, e;
    locate(c, &s, &tig, &e);
    qh[(size_t)s * 32 + (size_t)tig * 8 + (size_t)(e >> 2)] |= (uint8_t)(v << (2 * (e & 3)));
}
static int get_pair(const uint8_t *qh, int c) {
    int s, tig, e;
    locate(c, &s, &tig, &e);
    return (qh[(size_t)s * 32 + (size_t)tig * 8 + (size_t)(e >> 2)] >> (2 * (e & 3))) & 3;
}
static size_t byte_of(int c) { /* Q8_0: one byte per element */
    int s, tig, e;
    locate(c, &s, &tig, &e);
    return (size_t)s * 128 + (size_t)tig * 32 + (size_t)e;
}

/* The 6-bit scale and min of sub-block j of a Q4_K block's 12 packed bytes (ref_quant.c). */
static void k_scale_min(const uint8_t *s, int j, int *scale, int *min) {
    if (j < 4) {
        *scale = s[j] & 63;
        *min = s[j + 4] & 63;
    } else {
        *scale = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
        *min = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* Q6_K's 6-bit quant (0..63, before the -32) of element i of a block, by ref_quant.c's layout. */
static int q6_quant(const uint8_t *b, int i) {
    const int half = i / 128, r = i % 128, quarter = r / 32, l = r % 32;
    const uint8_t *ql = b + 64 * half, *qh = b + 128 + 32 * half;
    const int lo = quarter & 1 ? ql[l + 32] : ql[l];
    const int nib = quarter < 2 ? lo & 0xf : lo >> 4;
    return nib | (((qh[l] >> (2 * quarter)) & 3) << 4);
}

static void pack_row(uint32_t type, const uint8_t *src, int k, uint8_t *dst) {
    const size_t meta = qp_off_meta(type, k);
    if (type == QT_Q8_0) {
        for (int b = 0; b < k / 32; b++, src += 34) {
            memcpy(dst + meta + 2 * (size_t)b, src, 2);
            for (int i = 0; i < 32; i++)
                dst[byte_of(32 * b + i)] = src[2 + i];
        }
    } else if (type == QT_Q4_K) {
        for (int b = 0; b < k / 256; b++, src += 144) {
            memcpy(dst + meta + 16 * (size_t)b, src, 16);
            const uint8_t *qs = src + 16;
            for (int i = 0; i < 256; i++) {
                const int c = i / 64, l = i % 64;
                const int v = l < 32 ? qs[32 * c + l] & 0xf : qs[32 * c + l - 32] >> 4;
                put_nibble(dst, 256 * b + i, v);
            }
        }
    } else {
        uint8_t *qh = dst + meta, *sc = dst + qp_off_q6_sc(k), *d = dst + qp_off_q6_d(k);
        for (int b = 0; b < k / 256; b++, src += 210) {
            memcpy(sc + 16 * (size_t)b, src + 192, 16);
            memcpy(d + 2 * (size_t)b, src + 208, 2);
            for (int i = 0; i < 256; i++) {
                const int q = q6_quant(src, i);
                put_nibble(dst, 256 * b + i, q & 0xf);
                put_pair(qh, 256 * b + i, q >> 4);
            }
        }
    }
}

int ref_qpack_rows(uint32_t type, const void *src, int rows, int k, void *dst) {
    const size_t rb = qp_row_bytes(type, k);
    if (!rb || rows < 0) return -1;
    const ref_qtype_info *t = ref_qtype_get(type);
    const size_t src_row = (size_t)k / (size_t)t->block * (size_t)t->block_bytes;
    memset(dst, 0, (size_t)rows * rb);
    for (int r = 0; r < rows; r++)
        pack_row(type, (const uint8_t *)src + (size_t)r * src_row, k,
                 (uint8_t *)dst + (size_t)r * rb);
    return 0;
}

/* The dequantization formulas of ref_quant.c, in the same order of operations: the products of
 * a half and a small integer are exact in fp32, so each value is rounded once, as there. */
int ref_qpack_dequant_row(uint32_t type, const void *row, int k, float *dst) {
    if (!qp_row_bytes(type, k)) return -1;
    const uint8_t *p = row;
    const size_t meta = qp_off_meta(type, k);
    for (int c = 0; c < k; c++) {
        if (type == QT_Q8_0) {
            const float d = ref_f16_to_f32(rd16(p + meta + 2 * (size_t)(c / 32)));
            dst[c] = d * (float)(int8_t)p[byte_of(c)];
        } else if (type == QT_Q4_K) {
            const uint8_t *m = p + meta + 16 * (size_t)(c / 256);
            int sc, mn;
            k_scale_min(m + 4, c % 256 / 32, &sc, &mn);
            const float d = ref_f16_to_f32(rd16(m)), dmin = ref_f16_to_f32(rd16(m + 2));
            dst[c] = d * (float)sc * (float)get_nibble(p, c) - dmin * (float)mn;
        } else {
            const int q = (get_nibble(p, c) | get_pair(p + meta, c) << 4) - 32;
            const int8_t sc = (int8_t)p[qp_off_q6_sc(k) + (size_t)(c / 16)];
            const float d = ref_f16_to_f32(rd16(p + qp_off_q6_d(k) + 2 * (size_t)(c / 256)));
            dst[c] = d * (float)sc * (float)q;
        }
    }
    return 0;
}
