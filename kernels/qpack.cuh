/* qpack.cuh — device side of the packed quantized rows (kernels/ref/ref_qpack.h): a lane's
 * loads of one row's span and their dequantization to the bf16 pairs of its MMA A fragments, in
 * the C reference's order of operations (bit-identical values before the bf16 rounding). Shared
 * by qgemm.cu and qdequant.cu. */
#pragma once
#include "common.cuh"
#include "ref/ref_qpack.h"

/* 16- and 8-byte loads of packed weight bytes (aligned by the layout): read-only cache on the
 * GPU, memcpy on the emulator (no pointer-cast punning in kernel bodies). */
static __device__ __forceinline__ uint4 ld_u4(const uint8_t *p) {
#ifdef QE_EMU
    uint4 v;
    memcpy(&v, p, 16);
    return v;
#else
    return __ldg(reinterpret_cast<const uint4 *>(p));
#endif
}
static __device__ __forceinline__ uint2 ld_u2(const uint8_t *p) {
#ifdef QE_EMU
    uint2 v;
    memcpy(&v, p, 8);
    return v;
#else
    return __ldg(reinterpret_cast<const uint2 *>(p));
#endif
}
static __device__ __forceinline__ uint32_t ld_u16(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}
static __device__ __forceinline__ uint32_t word_of(const uint4 &v, int i) {
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

/* IEEE half bits to float, exact (the block scales are halves). */
static __device__ __forceinline__ float half_bits_to_f32(uint32_t h) {
    const uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        const float v = (float)man * 5.9604644775390625e-8f; /* man * 2^-24 */
        return sign ? -v : v;
    }
    bits = sign | (exp == 31 ? 0x7f800000u | (man << 13) : ((exp + 112) << 23) | (man << 13));
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static __device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    const bf16x2 v = __floats2bfloat162_rn(lo, hi); /* .x (low half) = lo = the lower column */
    uint32_t u;
    memcpy(&u, &v, 4);
    return u;
}

/* One weight row's bytes of one span, as a lane holds them: load() only issues the loads (the
 * next span's are in flight during this span's MMAs), decode() turns the scales into fp32 once
 * the span is worked on, pairs() gives mma j's two bf16x2 A registers. */
template <int TYPE> struct qraw;

template <> struct qraw<QT_Q8_0> {
    uint4 q[2];
    uint2 d; /* the span's four f16 block scales */
    __device__ __forceinline__ void load(const uint8_t *row, int k, int s, int tig) {
        q[0] = ld_u4(row + (size_t)s * 128 + tig * 32);
        q[1] = ld_u4(row + (size_t)s * 128 + tig * 32 + 16);
        d = ld_u2(row + k + (size_t)s * 8);
    }
    __device__ __forceinline__ void decode(int) {}
    /* the bf16 pairs of mma j: columns (2tig, +1) and (2tig+8, +9) of k16 block j */
    __device__ __forceinline__ void pairs(int j, uint32_t &lo, uint32_t &hi) const {
        const uint32_t w = word_of(q[j >> 2], j & 3);
        const uint32_t dd = (j >> 1) < 2 ? d.x : d.y;
        const float sc = half_bits_to_f32((j >> 1) & 1 ? dd >> 16 : dd & 0xffff);
        lo = pack_bf16x2(sc * (float)(int8_t)(w & 0xff), sc * (float)(int8_t)((w >> 8) & 0xff));
        hi = pack_bf16x2(sc * (float)(int8_t)((w >> 16) & 0xff), sc * (float)(int8_t)(w >> 24));
    }
};

template <> struct qraw<QT_Q4_K> {
    uint4 q;
    uint4 m;            /* the super-block's d, dmin and 12 scale bytes */
    float ds[4], dm[4]; /* decode(): d * scale and dmin * min of the span's four sub-blocks */
    __device__ __forceinline__ void load(const uint8_t *row, int k, int s, int tig) {
        q = ld_u4(row + (size_t)s * 64 + tig * 16);
        m = ld_u4(row + (size_t)k / 2 + (size_t)(s >> 1) * 16);
    }
    __device__ __forceinline__ void decode(int s) {
        const float d = half_bits_to_f32(m.x & 0xffff), dmin = half_bits_to_f32(m.x >> 16);
        /* the 12 scale bytes: sc[0..3] = m.y, sc[4..7] = m.z, sc[8..11] = m.w */
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int j = (s & 1) * 4 + i; /* sub-block of the super-block */
            int sc, mn;
            if (j < 4) {
                sc = (m.y >> (8 * j)) & 63;
                mn = (m.z >> (8 * j)) & 63;
            } else {
                const uint32_t b = (m.w >> (8 * (j - 4))) & 0xff;
                sc = (b & 0xf) | (((m.y >> (8 * (j - 4))) >> 6 & 3) << 4);
                mn = (b >> 4) | (((m.z >> (8 * (j - 4))) >> 6 & 3) << 4);
            }
            ds[i] = d * (float)sc;
            dm[i] = dmin * (float)mn;
        }
    }
    __device__ __forceinline__ void pairs(int j, uint32_t &lo, uint32_t &hi) const {
        const uint32_t v = word_of(q, j >> 1) >> ((j & 1) * 16);
        const float a = ds[j >> 1], b = dm[j >> 1];
        lo = pack_bf16x2(fmaf(a, (float)(v & 15), -b), fmaf(a, (float)((v >> 4) & 15), -b));
        hi = pack_bf16x2(fmaf(a, (float)((v >> 8) & 15), -b), fmaf(a, (float)((v >> 12) & 15), -b));
    }
};

template <> struct qraw<QT_Q6_K> {
    uint4 ql;
    uint2 qh;
    uint2 sc;     /* the span's eight int8 scales */
    uint32_t d16; /* the super-block's f16 d */
    float d;      /* decode() */
    __device__ __forceinline__ void load(const uint8_t *row, int k, int s, int tig) {
        ql = ld_u4(row + (size_t)s * 64 + tig * 16);
        qh = ld_u2(row + (size_t)k / 2 + (size_t)s * 32 + tig * 8);
        sc = ld_u2(row + (size_t)k / 2 + (size_t)k / 4 + (size_t)s * 8);
        d16 = ld_u16(row + (size_t)k / 2 + (size_t)k / 4 + (size_t)k / 16 + (size_t)(s >> 1) * 2);
    }
    __device__ __forceinline__ void decode(int) { d = half_bits_to_f32(d16); }
    __device__ __forceinline__ void pairs(int j, uint32_t &lo, uint32_t &hi) const {
        const uint32_t v = word_of(ql, j >> 1) >> ((j & 1) * 16);
        const uint32_t h = ((j < 4 ? qh.x : qh.y) >> (8 * (j & 3))) & 0xff;
        const int8_t s8 = (int8_t)(((j < 4 ? sc.x : sc.y) >> (8 * (j & 3))) & 0xff);
        const float a = d * (float)s8;
        float w[4];
#pragma unroll
        for (int i = 0; i < 4; i++)
            w[i] = a * (float)((int)(((v >> (4 * i)) & 15) | (((h >> (2 * i)) & 3) << 4)) - 32);
        lo = pack_bf16x2(w[0], w[1]);
        hi = pack_bf16x2(w[2], w[3]);
    }
};
