/* emu_dynamic_smem.cc — dynamic shared memory: one 1024-byte aligned region of the window (the
 * section of static __shared__ arrays), of which a launch may use its smem bytes. Above 48 KB a
 * kernel needs its cudaFuncAttributeMaxDynamicSharedMemorySize first (QE_ALLOW_DYNAMIC_SMEM), and
 * no launch gets more than the 227 KB an sm_90 block can have, as on the GPU. */
#include <cuda_runtime_api.h>
#include <string.h>

#include <map>
#include <mutex>

#include "emu_internal.h"

namespace emu {

alignas(1024) unsigned char dynamic_region[DYNAMIC_SMEM_MAX]
    __attribute__((section("qe_emu_shared")));
size_t dynamic_bytes; /* of the running launch */

unsigned char *dynamic_smem() {
    return dynamic_region;
}

static std::mutex allowed_lock; /* launches are checked on the host threads that submit them */
static std::map<const void *, size_t> allowed;

int allow_dynamic_smem(const void *kernel, size_t bytes) {
    if (kernel == nullptr || bytes > DYNAMIC_SMEM_MAX) return (int)cudaErrorInvalidValue;
    std::lock_guard<std::mutex> hold(allowed_lock);
    allowed[kernel] = bytes;
    return (int)cudaSuccess;
}

const char *dynamic_smem_refusal(const launch_cfg &cfg) {
    if (window_size() > WINDOW_MAX)
        return "the emulator's shared window is over 1 MB, more than its wgmma descriptors reach";
    if (cfg.dynamic_smem <= DYNAMIC_SMEM_DEFAULT) return nullptr;
    if (cfg.dynamic_smem > DYNAMIC_SMEM_MAX)
        return "more dynamic shared memory than a block can have (227 KB)";
    std::lock_guard<std::mutex> hold(allowed_lock);
    auto it = allowed.find(cfg.fn);
    if (it == allowed.end() || it->second < cfg.dynamic_smem)
        return "more than 48 KB of dynamic shared memory without "
               "cudaFuncAttributeMaxDynamicSharedMemorySize at least that large "
               "(QE_ALLOW_DYNAMIC_SMEM)";
    return nullptr;
}

void poison_window() {
    char *base = window_base(), *end = base + window_size();
    char *dyn = (char *)dynamic_region, *usable_end = dyn + dynamic_bytes;
    /* the region's unusable tail is left alone: nothing may touch it (in_window says so) */
    memset(base, 0xFF, (size_t)(usable_end - base));
    memset(dyn + DYNAMIC_SMEM_MAX, 0xFF, (size_t)(end - (dyn + DYNAMIC_SMEM_MAX)));
}

} // namespace emu
