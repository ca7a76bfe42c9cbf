/* quant_bound.h — the largest error a quantize -> dequantize round trip may make on element i of
 * one block, worked out from the block's inputs alone (not from the quantizer): what
 * test_quant_ref checks the reference quantizers against and test_quantize checks GGUF files
 * against. blk is the block's first element (the element itself for F16/BF16/F32). */
#ifndef QE_TESTS_QUANT_BOUND_H
#define QE_TESTS_QUANT_BOUND_H
#include <math.h>

#include "kernels/ref/ref_quant.h"

/* The error bound of element i from its block's inputs. */
static inline double quant_bound(uint32_t type, const float *blk, int i) {
    double amax = 0, mx = 0;
    switch (type) {
    case QT_Q8_0:
        for (int k = 0; k < 32; k++)
            amax = fmax(amax, fabs(blk[k]));
        return 0.501 * amax / 127;
    case QT_Q4_0:
        for (int k = 0; k < 32; k++)
            amax = fmax(amax, fabs(blk[k]));
        return 1.001 * amax / 8; /* one step: the side opposite the extreme tops out at +7 */
    case QT_Q5_0:
        for (int k = 0; k < 32; k++)
            amax = fmax(amax, fabs(blk[k]));
        return 1.001 * amax / 16; /* the same with 5 bits: +15 opposite the extreme */
    case QT_Q4_K:
    case QT_Q5_K: {
        const int levels = type == QT_Q4_K ? 15 : 31;
        double range[8], max_step = 0, max_off = 0;
        for (int j = 0; j < 8; j++) {
            double lo = 0, hi = -INFINITY;
            for (int l = 0; l < 32; l++) {
                lo = fmin(lo, blk[32 * j + l]);
                hi = fmax(hi, blk[32 * j + l]);
            }
            range[j] = hi - lo;
            max_step = fmax(max_step, range[j] / levels);
            max_off = fmax(max_off, -lo);
        }
        /* half a step, plus the rounding of the 6-bit scale and min (one unit of d, dmin) */
        return 0.5 * range[i / 32] / levels + (max_step + max_off) / 63;
    }
    case QT_Q6_K: {
        double max_abs = 0;
        for (int j = 0; j < 16; j++) {
            double m = 0;
            for (int l = 0; l < 16; l++)
                m = fmax(m, fabs(blk[16 * j + l]));
            max_abs = fmax(max_abs, m / 32);
            if (j == i / 16) mx = m / 32;
        }
        /* one step (the side opposite the extreme tops out at +31), plus the 8-bit scale's
         * rounding times the 32 steps to the extreme */
        return mx + 0.15 * max_abs;
    }
    case QT_F16:
        return fmax(fabs(blk[i]) * 0x1p-11, 0x1p-25); /* subnormals: half of 2^-24 */
    case QT_BF16:
        return fabs(blk[i]) * 0x1p-8 + 1e-38;
    default:
        return 0;
    }
}

#endif
