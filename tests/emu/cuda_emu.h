/* cuda_emu.h — what the kernels (kernels/ .cu files) use from CUDA, for the host C++ compiler: the
 * qualifiers, threadIdx/blockIdx/blockDim/gridDim, bf16, the math and warp intrinsics, and
 * QE_LAUNCH. kernels/common.cuh includes it instead of the CUDA headers when QE_EMU is defined,
 * so the .cu files compile for the host with their kernel bodies unchanged (tests/emu/README.md).
 *
 * A launch builds a trivially copyable record (the kernel pointer and its arguments by value, as
 * <<<>>> copies them) and queues it on the stand-in stream of tests/hostsim_runtime.c, so graph
 * capture and the lazy stream work for emulated kernels as for the real ones. */
#ifndef QE_TESTS_EMU_CUDA_EMU_H
#define QE_TESTS_EMU_CUDA_EMU_H
#include <cuda_runtime_api.h> /* cudaError_t, cudaGetLastError, dim3, uint4, float2, float4 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>
#include <utility>

#include "emu.h"

/* ---- qualifiers (host_defines.h gives empty ones for a host compiler; say so explicitly) */
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __grid_constant__
#define __grid_constant__ /* a kernel parameter (a CUtensorMap) is the record's copy */
#define __global__
#define __device__
#define __host__
/* Static storage in one named section: one copy per kernel, reused block after block (blocks run
 * one at a time); the section is the shared "window" whose offsets are the 32-bit shared
 * addresses, and which the emulator poisons (NaN) when each block starts. */
#define __shared__ static __attribute__((section("qe_emu_shared")))
#define __launch_bounds__(...)

/* ---- built-in variables */
#define threadIdx (::emu::cur->tid)
#define blockIdx (::emu::block_idx)
#define blockDim (::emu::block_dim)
#define gridDim (::emu::grid_dim)
#define warpSize 32

/* ---- bf16: storage and conversions as the hardware does them (cvt.rn.bf16.f32: round to
 * nearest even; a NaN becomes the canonical 0x7FFF). A file that included the toolkit's
 * cuda_bf16.h first (gemm.cu, through cublasLt.h) keeps its host versions. */
#ifndef __CUDA_BF16_H__
struct __nv_bfloat16 {
    uint16_t bits;
};
struct alignas(4) __nv_bfloat162 {
    __nv_bfloat16 x, y;
};
static inline float __bfloat162float(__nv_bfloat16 h) {
    const uint32_t u = (uint32_t)h.bits << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return __nv_bfloat16{0x7FFF};
    u += 0x7FFFu + ((u >> 16) & 1u);
    return __nv_bfloat16{(uint16_t)(u >> 16)};
}
static inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) {
    return __nv_bfloat162{__float2bfloat16_rn(lo), __float2bfloat16_rn(hi)};
}
static inline float2 __bfloat1622float2(__nv_bfloat162 v) {
    float2 r;
    r.x = __bfloat162float(v.x), r.y = __bfloat162float(v.y);
    return r;
}
#endif

/* ---- math intrinsics. rsqrtf is not in libm; __expf is the fast ex2.approx(x * log2 e) form
 * (and a macro, because glibc declares an unrelated __expf). */
static inline float rsqrtf(float x) {
    return 1.0f / sqrtf(x);
}
static inline float qe_emu_fast_expf(float x) {
    return exp2f(x * 1.4426950408889634f);
}
#define __expf(x) qe_emu_fast_expf(x)
static inline int min(int a, int b) {
    return a < b ? a : b;
}
static inline int max(int a, int b) {
    return a > b ? a : b;
}
static inline unsigned min(unsigned a, unsigned b) {
    return a < b ? a : b;
}
static inline unsigned max(unsigned a, unsigned b) {
    return a > b ? a : b;
}
static inline long long min(long long a, long long b) {
    return a < b ? a : b;
}
static inline long long max(long long a, long long b) {
    return a > b ? a : b;
}
static inline size_t __cvta_generic_to_shared(const void *p) {
    return ::emu::cvta_shared(p);
}

/* ---- synchronisation and warp shuffles (32-bit values, as the kernels use them) */
#define __syncthreads() ::emu::syncthreads()
template <typename T>
static inline T qe_emu_shfl(unsigned mask, T v, int arg, int width, ::emu::shfl_kind kind) {
    static_assert(sizeof(T) == 4, "the emulator shuffles 32-bit values");
    uint32_t u;
    memcpy(&u, &v, 4);
    u = ::emu::shfl(mask, u, arg, width, kind);
    memcpy(&v, &u, 4);
    return v;
}
template <typename T> static inline T __shfl_sync(unsigned m, T v, int src, int w = 32) {
    return qe_emu_shfl(m, v, src, w, ::emu::SHFL_IDX);
}
template <typename T> static inline T __shfl_up_sync(unsigned m, T v, unsigned d, int w = 32) {
    return qe_emu_shfl(m, v, (int)d, w, ::emu::SHFL_UP);
}
template <typename T> static inline T __shfl_down_sync(unsigned m, T v, unsigned d, int w = 32) {
    return qe_emu_shfl(m, v, (int)d, w, ::emu::SHFL_DOWN);
}
template <typename T> static inline T __shfl_xor_sync(unsigned m, T v, int lane_mask, int w = 32) {
    return qe_emu_shfl(m, v, lane_mask, w, ::emu::SHFL_XOR);
}

/* ---- launches: QE_LAUNCH(kernel, grid, block, smem, stream)(args...) */
namespace emu {

/* A trivially copyable tuple (std::tuple is not), so a launch record can be copied bytewise by
 * the stream and by graph instantiation. */
template <typename... T> struct pack {};
template <typename H, typename... T> struct pack<H, T...> {
    H head;
    pack<T...> tail;
};
template <typename... T> struct make_pack_t;
template <> struct make_pack_t<> {
    static pack<> make() { return {}; }
};
template <typename H, typename... T> struct make_pack_t<H, T...> {
    /* each argument converts to its parameter's type as in a call (copy-initialisation) */
    template <typename A, typename... R> static pack<H, T...> make(A &&a, R &&...rest) {
        H head = std::forward<A>(a);
        return pack<H, T...>{head, make_pack_t<T...>::make(std::forward<R>(rest)...)};
    }
};
template <size_t I, typename H, typename... T> const auto &get(const pack<H, T...> &p) {
    if constexpr (I == 0)
        return p.head;
    else
        return get<I - 1>(p.tail);
}

template <typename... P> struct launch_rec {
    void (*kernel)(P...);
    launch_cfg cfg;
    pack<P...> args;
};
template <typename... P, size_t... I>
static void call_kernel(void (*kernel)(P...), const pack<P...> &args, std::index_sequence<I...>) {
    kernel(get<I>(args)...);
}
/* One thread: its copy of the arguments (the record is the emulator's, read before the kernel's
 * first instruction), then the kernel. */
template <typename... P> static void thread_body(const void *rec) {
    const launch_rec<P...> *r = static_cast<const launch_rec<P...> *>(rec);
    void (*const kernel)(P...) = r->kernel;
    const pack<P...> args = r->args;
    ::emu::kernel_starts(r->cfg.pdl); /* out of line: the copies above cannot move past it */
    call_kernel(kernel, args, std::index_sequence_for<P...>{});
}
template <typename... P> static int run_launch(const void *rec) {
    typedef launch_rec<P...> R;
    if ((uintptr_t)rec % alignof(R) == 0)
        return run_grid(static_cast<const R *>(rec)->cfg, thread_body<P...>, rec);
    /* the stream copies records to malloc'd memory; a CUtensorMap argument wants 64 bytes */
    alignas(R) unsigned char aligned[sizeof(R)];
    memcpy(aligned, rec, sizeof(R));
    return run_grid(reinterpret_cast<const R *>(aligned)->cfg, thread_body<P...>, aligned);
}

template <typename... P> struct launcher {
    void (*kernel)(P...);
    launch_cfg cfg;
    template <typename... A> void operator()(A &&...a) const {
        static_assert(sizeof...(A) == sizeof...(P), "wrong number of kernel arguments");
        static_assert((std::is_trivially_copyable<P>::value && ...),
                      "kernel arguments are copied bytewise");
        launch_rec<P...> r{kernel, cfg, make_pack_t<P...>::make(std::forward<A>(a)...)};
        submit(cfg, run_launch<P...>, &r, sizeof r);
    }
};
template <typename... P>
static launcher<P...> make_launcher(void (*k)(P...), const char *name, const char *file, int line,
                                    dim3 grid, dim3 block, size_t smem, cudaStream_t,
                                    bool pdl = false) {
    return launcher<P...>{k, launch_cfg{name, file, line, grid, block, smem, (const void *)k, pdl}};
}

} // namespace emu

#define QE_LAUNCH(kernel, grid, block, smem, stream)                                               \
    ::emu::make_launcher(kernel, #kernel, __FILE__, __LINE__, grid, block, smem, stream)
/* A launch the next kernel may overlap (kernels/common.cuh). Here every one is held to the rule,
 * whether or not qe_pdl_enabled() would launch it so on a GPU. */
#define QE_LAUNCH_PDL(kernel, grid, block, smem, stream)                                           \
    ::emu::make_launcher(kernel, #kernel, __FILE__, __LINE__, grid, block, smem, stream, true)

/* Dynamic shared memory (kernels/common.cuh gives the nvcc forms): the region of the window a
 * launch's smem bytes cover, and the attribute a launch above 48 KB needs first. */
#define QE_DYNAMIC_SMEM(name) unsigned char *const name = ::emu::dynamic_smem()
#define QE_ALLOW_DYNAMIC_SMEM(kernel, bytes)                                                       \
    ((cudaError_t)::emu::allow_dynamic_smem((const void *)(kernel), (size_t)(bytes)))

#endif
