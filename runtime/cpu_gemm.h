/* cpu_gemm.h — the CPU backend's matrix multiply, ref_matmul's contract run on the engine's pool:
 * y[m, n] (row stride ldy) = x[m, k] · w[n, k]ᵀ, plus the old y when accumulate (w holds Hugging
 * Face Linear rows). Built with BLIS (QE_BLAS, on where libblis-serial-dev is found) each pool
 * thread runs a single-threaded sgemm on its own column panel; without it, the reference tiles.
 * Either way a row of y depends on its own row of x only, bitwise: not on m, on the row's place
 * in x, or on the pool's size. */
#ifndef QE_RUNTIME_CPU_GEMM_H
#define QE_RUNTIME_CPU_GEMM_H

#include "parallel.h"

void cpu_gemm(qe_pool *pool, const float *x, int m, int k, const float *w, int n, float *y, int ldy,
              int accumulate);

/* What runs the products, for logs and benchmarks: "BLIS 0.9.0 (zen3 kernels), one thread per
 * panel" or "reference tiles". */
const char *cpu_gemm_library(void);

#endif
