/* device_check.cu — what this build's kernels can do on the current device. A build holds code for
 * the GPUs named by CMAKE_CUDA_ARCHITECTURES only (sm_90a by default; CMake passes what it holds
 * as QE_CUDA_ARCHS, QE_BUILD_SM90 and QE_BUILD_SM90A). Three questions:
 * - whether the kernels run at all (qe_kernels_check_device, asked by the backend at open, so the
 *   message can say which GPU it found and how to rebuild; otherwise the first launch would fail
 *   with "no kernel image");
 * - whether the sm_90a kernels (fa3, the wgmma fused GEMM) run: a Hopper device *and* a build
 *   with sm_90a code; on a build without it their bodies are traps, which must never launch, even
 *   on Hopper (where the driver may JIT an older target's PTX);
 * - whether programmatic dependent launch may be asked for: the kernels' griddepcontrol.wait
 *   exists only in sm_90+ code, and only sm_90+ devices overlap launches. */
#include <stdio.h>

#include "common.cuh"

#ifndef QE_CUDA_ARCHS
#define QE_CUDA_ARCHS "?"
#endif
#if defined(QE_EMU) /* the emulator runs every instruction */
#undef QE_BUILD_SM90
#undef QE_BUILD_SM90A
#define QE_BUILD_SM90 1
#define QE_BUILD_SM90A 1
#endif
#ifndef QE_BUILD_SM90
#define QE_BUILD_SM90 0
#endif
#ifndef QE_BUILD_SM90A
#define QE_BUILD_SM90A 0
#endif

#ifndef QE_EMU
/* Compiled like every other kernel: if the driver has an image of it, it has one of them all. */
static __global__ void device_check_probe_kernel() {}
#endif

extern "C" int qe_kernels_check_device(int device, char *err, size_t errlen) {
#ifdef QE_EMU
    (void)device, (void)err, (void)errlen;
    return QE_K_OK;
#else
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
        snprintf(err, errlen, "cannot query device %d: %s", device,
                 cudaGetErrorString(cudaGetLastError()));
        return QE_K_ERR;
    }
    if (prop.major < 8) {
        snprintf(err, errlen,
                 "device %d (%s) is sm_%d%d; the kernels need bf16 tensor cores, sm_80 or newer",
                 device, prop.name, prop.major, prop.minor);
        return QE_K_ERR;
    }
    cudaFuncAttributes attr;
    const cudaError_t e = cudaFuncGetAttributes(&attr, device_check_probe_kernel);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* not sticky: clear it */
        /* Hopper's own target is 90a (wgmma, setmaxnreg); 90 would run the portable kernels only */
        const char *suffix = prop.major == 9 && prop.minor == 0 ? "a" : "";
        snprintf(err, errlen,
                 "device %d (%s, sm_%d%d) has no code in this build (%s; built for %s): rebuild "
                 "with -DCMAKE_CUDA_ARCHITECTURES=%d%d%s",
                 device, prop.name, prop.major, prop.minor, cudaGetErrorName(e), QE_CUDA_ARCHS,
                 prop.major, prop.minor, suffix);
        return QE_K_ERR;
    }
    return QE_K_OK;
#endif
}

/* The current device's compute capability as major * 10 + minor, cached per device (a driver call
 * per launch would cost); 0 when it cannot be asked. */
static int current_capability() {
#ifdef QE_EMU
    return 90;
#else
    static int known[64]; /* 0: not asked yet; a plain array, written before any concurrency */
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0) return 0;
    if (dev < 64 && known[dev]) return known[dev];
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess)
        return 0;
    if (dev < 64) known[dev] = major * 10 + minor;
    return major * 10 + minor;
#endif
}

extern "C" int qe_sm90a_kernels_run(void) {
    return QE_BUILD_SM90A && current_capability() == 90;
}

extern "C" int qe_pdl_supported(void) {
    return QE_BUILD_SM90 && current_capability() >= 90;
}
