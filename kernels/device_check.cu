/* device_check.cu — whether this build's kernels run on a device: a build holds code for the GPUs
 * named by CMAKE_CUDA_ARCHITECTURES only (sm_90a by default), and a device it has none for would
 * otherwise fail at the first launch with "no kernel image". The backend asks at open time so the
 * message can say which GPU it found, what the build holds and how to rebuild. */
#include <stdio.h>

#include "common.cuh"

#ifndef QE_CUDA_ARCHS
#define QE_CUDA_ARCHS "?"
#endif

#ifndef QE_EMU
/* Compiled like every other kernel: if the driver has an image of it, it has one of them all. */
static __global__ void device_check_probe_kernel() {}
#endif

extern "C" int qe_kernels_check_device(int device, char *err, size_t errlen) {
#ifdef QE_EMU
    (void)device, (void)err, (void)errlen;
    return QE_K_OK; /* the emulator runs every kernel */
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
        snprintf(err, errlen,
                 "device %d (%s, sm_%d%d) has no code in this build (%s; built for %s): rebuild "
                 "with -DCMAKE_CUDA_ARCHITECTURES=%d%d",
                 device, prop.name, prop.major, prop.minor, cudaGetErrorName(e), QE_CUDA_ARCHS,
                 prop.major, prop.minor);
        return QE_K_ERR;
    }
    return QE_K_OK;
#endif
}
