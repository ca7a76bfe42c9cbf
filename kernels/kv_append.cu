/* kv_append.cu — writes a step's K|V rows into the paged K/V pool: row i of src goes to pool row
 * dst_rows[i] (the scheduler computed page * page_size + position % page_size on the host). */
#include "common.cuh"
#include "ptx.cuh"

/* One block per row; threads stride over it in 4-byte words (rows are an even number of bf16,
 * 4-byte aligned: checked by the launcher), else in single elements. Memory-bound and small:
 * 2 * kv_dim * 2 bytes read and written per token and layer. */
static __global__ void kv_append_kernel(const uint16_t *__restrict__ src, int src_stride,
                                        int row_elems, const int32_t *__restrict__ dst_rows,
                                        uint16_t *__restrict__ dst, int dst_stride, int words) {
    griddep_wait(); /* QE_LAUNCH_PDL: before any global memory (ptx.cuh) */
    griddep_launch_dependents();
    const int i = blockIdx.x;
    const uint16_t *s = src + (size_t)i * src_stride;
    uint16_t *d = dst + (size_t)dst_rows[i] * dst_stride;
    if (words) {
        const uint32_t *s2 = (const uint32_t *)s;
        uint32_t *d2 = (uint32_t *)d;
        for (int k = threadIdx.x; k < row_elems / 2; k += blockDim.x)
            d2[k] = s2[k];
    } else {
        for (int k = threadIdx.x; k < row_elems; k += blockDim.x)
            d[k] = s[k];
    }
}

extern "C" int qe_kv_append(const qe_bf16 *src, int src_stride, int row_elems,
                            const int32_t *dst_rows, int n_rows, qe_bf16 *dst, int dst_stride,
                            qe_stream s) {
    QE_K_REQUIRE(n_rows >= 0 && row_elems > 0 && src_stride >= row_elems &&
                 dst_stride >= row_elems);
    if (n_rows == 0) return QE_K_OK;
    const int words = row_elems % 2 == 0 && src_stride % 2 == 0 && dst_stride % 2 == 0 &&
                      ((uintptr_t)src | (uintptr_t)dst) % 4 == 0;
    const int threads = row_elems >= 512 ? 256 : 64;
    QE_LAUNCH_PDL(kv_append_kernel, n_rows, threads, 0, s)
    ((const uint16_t *)src, src_stride, row_elems, dst_rows, (uint16_t *)dst, dst_stride, words);
    CUDA_CHECK_LAUNCH();
    return QE_K_OK;
}
