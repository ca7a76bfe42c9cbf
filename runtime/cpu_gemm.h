/* cpu_gemm.h — the CPU backend's matrix multiply, ref_matmul's contract run on the engine's pool:
 * y[m, n] (row stride ldy) = x[m, k] · w[n, k]ᵀ, plus the old y when accumulate (w holds Hugging
 * Face Linear rows). Built with BLIS (QE_BLAS, on where libblis-serial-dev is found) each pool
 * thread runs a single-threaded sgemm on its own column panel; without it, the reference tiles.
 * Either way a row of y depends on its own row of x only, bitwise: not on m, on the row's place
 * in x, or on the pool's size. */
#ifndef QE_RUNTIME_CPU_GEMM_H
#define QE_RUNTIME_CPU_GEMM_H

#include "parallel.h"
#include "weights/safetensors.h"

void cpu_gemm(qe_pool *pool, const float *x, int m, int k, const float *w, int n, float *y, int ldy,
              int accumulate);

/* A weight matrix [n, k] for cpu_gemm_w: fp32 rows the backend made, or its rows left in the
 * file as up to three stacked tensors (q | k | v, gate | up), each converted a chunk of rows at a
 * time inside the product: a GGUF file's quantized matrices (whose parts may be of different
 * types: a q4_k_m file's v rows are often Q6_K, its q and k rows Q4_K) cost no fp32 copy. */
typedef struct cpu_weight {
    const float *f32; /* [n, k], or NULL: the parts below */
    int n_parts;
    const st_tensor *part[3]; /* [rows_i, k] each, stacked in this order */
} cpu_weight;

/* cpu_gemm with w as above. A part's rows are converted by st_to_f32 (for a quantized tensor
 * the C reference dequantizer) into `scratch`, CPU_GEMM_CHUNK rows at a time per pool thread,
 * and multiplied by the same code as cpu_gemm's: y is bitwise what cpu_gemm gives on the
 * converted matrix. scratch holds cpu_gemm_w_scratch(threads, k) floats. */
enum { CPU_GEMM_CHUNK = 64 };
size_t cpu_gemm_w_scratch(int threads, int k);
void cpu_gemm_w(qe_pool *pool, const float *x, int m, int k, const cpu_weight *w, int n, float *y,
                int ldy, int accumulate, float *scratch);

/* What runs the products, for logs and benchmarks: "BLIS 0.9.0 (zen3 kernels), one thread per
 * panel" or "reference tiles". */
const char *cpu_gemm_library(void);

#endif
