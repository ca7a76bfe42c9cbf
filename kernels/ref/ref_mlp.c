/* ref_mlp.c — references for the matmul (x W^T, the layout of Hugging Face Linear weights) and
 * SwiGLU. */
#include <math.h>

#include "ref.h"

void ref_swiglu(const float *gate_up, int rows, int inter, float *out) {
    for (int r = 0; r < rows; r++) {
        const float *g = gate_up + (size_t)r * 2 * inter, *u = g + inter;
        for (int i = 0; i < inter; i++)
            out[(size_t)r * inter + i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    }
}

/* Eight partial sums let the compiler keep the loop in vector registers without -ffast-math. */
static float dot(const float *a, const float *b, int k) {
    float s[8] = {0};
    int i = 0;
    for (; i + 8 <= k; i += 8)
        for (int j = 0; j < 8; j++)
            s[j] += a[i + j] * b[i + j];
    float tail = 0;
    for (; i < k; i++)
        tail += a[i] * b[i];
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7])) + tail;
}

void ref_matmul(const float *x, int m, int k, const float *w, int n, float *y, int ldy,
                int accumulate) {
    /* Blocks of 4 rows of x share each weight row while it is in cache. */
    for (int r0 = 0; r0 < m; r0 += 4) {
        int r1 = r0 + 4 < m ? r0 + 4 : m;
        for (int c = 0; c < n; c++) {
            const float *wc = w + (size_t)c * k;
            for (int r = r0; r < r1; r++) {
                float v = dot(x + (size_t)r * k, wc, k);
                float *dst = y + (size_t)r * ldy + c;
                *dst = accumulate ? *dst + v : v;
            }
        }
    }
}
