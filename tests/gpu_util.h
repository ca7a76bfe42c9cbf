/* gpu_util.h — for the GPU suites: skip cleanly where no GPU is present (CI), but fail when
 * QE_REQUIRE_GPU is set (the GPU machine), so a driver/toolkit mismatch cannot pass as
 * "all skipped". */
#ifndef QE_TEST_GPU_UTIL_H
#define QE_TEST_GPU_UTIL_H
#include <criterion/criterion.h>
#include <cuda_runtime_api.h>
#include <stdlib.h>

static inline void require_gpu(const char *what) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    const char *why = e != cudaSuccess ? cudaGetErrorString(e) : "0 devices";
    if ((e != cudaSuccess || n == 0) && getenv("QE_REQUIRE_GPU"))
        cr_assert_fail("QE_REQUIRE_GPU is set but no CUDA device answers (%s)", why);
    if (e != cudaSuccess || n == 0) cr_skip_test("no CUDA device (%s): %s skipped", why, what);
}

#endif
