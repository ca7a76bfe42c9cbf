/* ptx.cuh — the only inline PTX of the kernels, in small named wrappers. Each has its host
 * implementation beside it (QE_EMU: the kernel emulator of tests/emu, which follows the PTX ISA's
 * text for the instruction), so the kernels that call them also run on the CPU. The second half
 * holds the Hopper (sm_90a) ones: wgmma, mbarrier, TMA and its host-side tensor map. */
#pragma once
#include <cuda.h> /* CUtensorMap and its enums (host-usable toolkit header) */

#include "common.cuh"
#ifndef QE_EMU
#include <cudaTypedefs.h> /* PFN_cuTensorMapEncodeTiled */
#endif

/* The 32-bit shared-memory address of a generic pointer into shared memory. */
static __device__ __forceinline__ uint32_t smem_addr(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* Programmatic dependent launch (sm_90): in a kernel launched by QE_LAUNCH_PDL, griddep_wait
 * blocks until the stream's previous kernel has completed and its memory is visible, so no global
 * memory may be touched before it; griddep_launch_dependents lets the next such kernel be
 * scheduled once every block of this one has issued it (or exited): its blocks then sit in their
 * own griddep_wait while this one finishes. Outside a PDL launch both do nothing. Code for a target
 * before sm_90 (an A100 or RTX 30xx build: CMAKE_CUDA_ARCHITECTURES) has no such instruction, and
 * its launches never ask for the overlap: qe_pdl_enabled stays off unless the build has sm_90 code
 * and the device is sm_90+ (qe_pdl_supported, device_check.cu). */
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
#define QE_HAVE_GRIDDEPCONTROL 0
#else
#define QE_HAVE_GRIDDEPCONTROL 1
#endif
static __device__ __forceinline__ void griddep_wait() {
#ifdef QE_EMU
    emu::griddep_wait();
    asm volatile("" ::: "memory"); /* as the instruction's clobber: no access moves above it */
#elif QE_HAVE_GRIDDEPCONTROL
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
static __device__ __forceinline__ void griddep_launch_dependents() {
#ifdef QE_EMU
    emu::griddep_launch_dependents();
#elif QE_HAVE_GRIDDEPCONTROL
    asm volatile("griddepcontrol.launch_dependents;\n" :::);
#endif
}

/* 16-byte asynchronous global -> shared copy; src_bytes < 16 zero-fills the rest (0: no read). */
static __device__ __forceinline__ void cp_async16(void *dst, const void *src, int src_bytes) {
#ifdef QE_EMU
    emu::cp_async(dst, src, 16, src_bytes);
#else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(src_bytes)
                 : "memory");
#endif
}

static __device__ __forceinline__ void cp_async_commit() {
#ifdef QE_EMU
    emu::cp_async_commit();
#else
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

/* Waits for every committed group of this thread's copies (wait_group 0). */
static __device__ __forceinline__ void cp_async_wait_all() {
#ifdef QE_EMU
    emu::cp_async_wait(0);
#else
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
#endif
}

/* Waits until at most N of this thread's committed groups are still in flight (wait_group N):
 * the older ones have landed. For rings of several stages. */
template <int N> static __device__ __forceinline__ void cp_async_wait_pending() {
#ifdef QE_EMU
    emu::cp_async_wait(N);
#else
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

/* Four 8x8 b16 matrices from shared memory; lanes 8i..8i+7 give matrix i's row addresses. */
static __device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void *p) {
#ifdef QE_EMU
    emu::ldmatrix(r, 4, false, p);
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
#endif
}

/* The same, each matrix transposed. */
static __device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void *p) {
#ifdef QE_EMU
    emu::ldmatrix(r, 4, true, p);
#else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
#endif
}

/* d += a (16x16 row) * b (16x8 col), bf16 in, fp32 accumulate; fragments per the PTX ISA
 * m16n8k16 layouts. */
static __device__ __forceinline__ void mma_bf16(float d[4], const uint32_t a[4], uint32_t b0,
                                                uint32_t b1) {
#ifdef QE_EMU
    emu::mma_m16n8k16_bf16(d, a, b0, b1);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

/* Named barriers (bar.sync / bar.arrive a, b): barrier id (1..15; 0 is __syncthreads's)
 * completes when `threads` threads (whole warps) have arrived. sync waits for the completion,
 * arrive only counts: a producer signals, a consumer waits (warp-specialised kernels order their
 * warpgroups with these). */
static __device__ __forceinline__ void named_bar_sync(int id, int threads) {
#ifdef QE_EMU
    emu::named_barrier_sync(id, threads);
#else
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
#endif
}

static __device__ __forceinline__ void named_bar_arrive(int id, int threads) {
#ifdef QE_EMU
    emu::named_barrier_arrive(id, threads);
#else
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
#endif
}

/* ================================================================ Hopper (sm_90a)
 *
 * wgmma and setmaxnreg exist only on sm_90a (mbarrier's tx counts and TMA on sm_90 too, but the
 * kernels that use them are sm_90a's). A device build for any other target compiles these
 * wrappers to a call of qe_needs_sm_90a(), which is declared and never defined: building a
 * kernel that calls one fails at link time (ptxas: unresolved extern function), and a kernel
 * that does not is unaffected. Cluster size 1 only: shared::cluster addresses are the CTA's
 * own. */
/* For the static helpers of an sm_90a kernel whose body is only a trap on other targets: unused
 * there, and nvcc would say so (warning #177) in every such build. In the sm_90a pass (and the
 * host's) it is nothing, so a helper unused there still warns. */
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define QE_SM90A_HELPER __attribute__((unused))
#else
#define QE_SM90A_HELPER
#endif

#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
extern __device__ void qe_needs_sm_90a(void);
#define QE_SM90A_ASM(...) qe_needs_sm_90a()
#else
#define QE_SM90A_ASM(...) asm volatile(__VA_ARGS__)
#endif

/* ---- wgmma.mma_async: a warpgroup (4 warps, 128 threads) computes D (64 x N, fp32) = A (64 x 16,
 * bf16) * B (16 x N, bf16) [+ D]. Each thread holds N/2 accumulators: register i is row
 * 16 (warp % 4) + lane/4 + 8 ((i/2) % 2), column 8 (i/4) + 2 (lane % 4) + i % 2. */

/* The swizzle mode of a shared-memory matrix descriptor (bits 62-63). */
enum wgmma_swizzle {
    WGMMA_SWIZZLE_NONE = 0,
    WGMMA_SWIZZLE_128B = 1,
    WGMMA_SWIZZLE_64B = 2,
    WGMMA_SWIZZLE_32B = 3,
};

/* The 64-bit shared-memory matrix descriptor of an operand starting at smem: bits 0-13 the
 * address, 16-29 the leading dimension byte offset, 32-45 the stride dimension byte offset (each
 * as (x & 0x3FFFF) >> 4), 49-51 base offset 0 (the operand starts on its swizzle pattern's
 * boundary: 1024 / 512 / 256 bytes), 62-63 the swizzle mode. What LBO and SBO step over depends
 * on the layout (tests/emu/emu_hopper.cc quotes the ISA's canonical layouts). */
static __device__ __forceinline__ uint64_t wgmma_desc(const void *smem, uint32_t lbo_bytes,
                                                      uint32_t sbo_bytes, wgmma_swizzle swizzle) {
#ifdef QE_EMU
    /* The emulator's window holds every kernel's static arrays and the dynamic region, more than
     * the 256 KB that 14 bits reach: it keeps two more address bits in the reserved bits 14-15,
     * where a carry from adding to the address field goes as into a wider field. */
    const uint64_t addr = (smem_addr(smem) & 0xFFFFF) >> 4;
#else
    const uint64_t addr = (smem_addr(smem) & 0x3FFFF) >> 4;
#endif
    return addr | (uint64_t)((lbo_bytes & 0x3FFFF) >> 4) << 16 |
           (uint64_t)((sbo_bytes & 0x3FFFF) >> 4) << 32 | (uint64_t)swizzle << 62;
}

/* Orders this thread's register accesses before the wgmmas that follow (needed before the first
 * wgmma of a batch, and after touching the accumulators or the A registers). */
static __device__ __forceinline__ void wgmma_fence() {
#ifdef QE_EMU
    emu::wgmma_fence();
#else
    QE_SM90A_ASM("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}

/* The wgmmas issued since the last commit become one group. */
static __device__ __forceinline__ void wgmma_commit_group() {
#ifdef QE_EMU
    emu::wgmma_commit_group();
#else
    QE_SM90A_ASM("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}

/* Waits until at most PENDING of this thread's committed groups are in flight; the accumulators
 * of the others are then readable. */
template <int PENDING> static __device__ __forceinline__ void wgmma_wait_group() {
    static_assert(PENDING >= 0 && PENDING <= 7, "wgmma.wait_group takes 0..7");
#ifdef QE_EMU
    emu::wgmma_wait_group(PENDING);
#else
    QE_SM90A_ASM("wgmma.wait_group.sync.aligned %0;\n" ::"n"(PENDING) : "memory");
#endif
}

/* Pins the accumulators at this point of the instruction stream: an empty asm that reads and
 * writes each register, so the compiler keeps its own reads and writes of d on their side of the
 * wgmma and wait_group asm (they do not name d, and ptxas would otherwise serialise the wgmmas).
 * Call it before the first wgmma of a batch and after the wait_group. The emulator's d is memory
 * the wrappers see: nothing to pin. */
template <int R> static __device__ __forceinline__ void wgmma_fence_operands(float (&d)[R]) {
#ifndef QE_EMU
#pragma unroll
    for (int i = 0; i < R; i++)
        asm volatile("" : "+f"(d[i])::"memory");
#else
    (void)d;
#endif
}

/* The N this file has wgmma forms for: a 64-row warpgroup tile against a K/V block or a head of
 * 128, and small ones for skinny products. */
template <int N> struct wgmma_n_supported {
    static constexpr bool value = N == 8 || N == 16 || N == 64 || N == 128;
};

/* SS form: A and B from shared memory through their descriptors; TRANS_A / TRANS_B = 1 reads that
 * operand MN-major (imm-trans), else K-major. accumulate = 0 overwrites d (scale-d false). */
template <int N, int TRANS_A = 0, int TRANS_B = 0>
static __device__ __forceinline__ void wgmma_bf16_ss(float (&d)[N / 2], uint64_t desc_a,
                                                     uint64_t desc_b, int accumulate) {
    static_assert(wgmma_n_supported<N>::value, "wgmma_bf16_ss: N not in 8, 16, 64, 128");
#ifdef QE_EMU
    emu::wgmma_bf16(d, N, desc_a, nullptr, desc_b, TRANS_A, TRANS_B, accumulate != 0);
#elif defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
    qe_needs_sm_90a();
#else
    if constexpr (N == 8) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %6, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {%0, %1, %2, %3}, %4, "
                     "%5, p, 1, 1, %7, %8;\n}\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "l"(desc_a), "l"(desc_b), "r"(accumulate), "n"(TRANS_A), "n"(TRANS_B)
                     : "memory");
    } else if constexpr (N == 16) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, "
                     "%5, %6, %7}, %8, %9, p, 1, 1, %11, %12;\n}\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),
                       "+f"(d[6]), "+f"(d[7])
                     : "l"(desc_a), "l"(desc_b), "r"(accumulate), "n"(TRANS_A), "n"(TRANS_B)
                     : "memory");
    } else if constexpr (N == 64) {
        asm volatile(
            "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, "
            "%8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, "
            "%25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, %35, %36;\n}\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
              "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]),
              "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),
              "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
              "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]),
              "+f"(d[31])
            : "l"(desc_a), "l"(desc_b), "r"(accumulate), "n"(TRANS_A), "n"(TRANS_B)
            : "memory");
    } else if constexpr (N == 128) {
        asm volatile(
            "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, "
            "%7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, "
            "%24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, "
            "%41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, "
            "%58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, %67, %68;\n}\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
              "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]),
              "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),
              "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
              "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]),
              "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]),
              "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]),
              "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
              "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]),
              "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]),
              "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
            : "l"(desc_a), "l"(desc_b), "r"(accumulate), "n"(TRANS_A), "n"(TRANS_B)
            : "memory");
    }
#endif
}

/* RS form: A from registers (four per thread, the mma.m16n8k16 A fragment of rows
 * 16 (warp % 4) .. +15), B from shared memory. */
template <int N, int TRANS_B = 0>
static __device__ __forceinline__ void wgmma_bf16_rs(float (&d)[N / 2], const uint32_t a[4],
                                                     uint64_t desc_b, int accumulate) {
    static_assert(wgmma_n_supported<N>::value, "wgmma_bf16_rs: N not in 8, 16, 64, 128");
#ifdef QE_EMU
    emu::wgmma_bf16(d, N, 0, a, desc_b, false, TRANS_B, accumulate != 0);
#elif defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
    qe_needs_sm_90a();
#else
    if constexpr (N == 8) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %9, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {%0, %1, %2, %3}, {%4, "
                     "%5, %6, %7}, %8, p, 1, 1, %10;\n}\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(accumulate),
                       "n"(TRANS_B)
                     : "memory");
    } else if constexpr (N == 16) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %13, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, "
                     "%5, %6, %7}, {%8, %9, %10, %11}, %12, p, 1, 1, %14;\n}\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),
                       "+f"(d[6]), "+f"(d[7])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(accumulate),
                       "n"(TRANS_B)
                     : "memory");
    } else if constexpr (N == 64) {
        asm volatile(
            "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, "
            "%8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, "
            "%25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
              "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]),
              "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),
              "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
              "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]),
              "+f"(d[31])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(accumulate), "n"(TRANS_B)
            : "memory");
    } else if constexpr (N == 128) {
        asm volatile(
            "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, "
            "%7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, "
            "%24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, "
            "%41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, "
            "%58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, %70;\n}\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
              "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]),
              "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),
              "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
              "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]),
              "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]),
              "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]),
              "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
              "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]),
              "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]),
              "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(accumulate), "n"(TRANS_B)
            : "memory");
    }
#endif
}

/* ---- mbarrier (shared::cta, 8 bytes): a phase completes when its arrivals are in and the bytes
 * expected of it (expect_tx) have been copied (complete_tx); then the next phase begins. */

static __device__ __forceinline__ void mbar_init(uint64_t *bar, uint32_t arrivals) {
#ifdef QE_EMU
    emu::mbar_init(bar, arrivals);
#else
    QE_SM90A_ASM("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(arrivals)
                 : "memory");
#endif
}

/* Makes the initialised barriers visible to the async proxy (TMA) before their first use. */
static __device__ __forceinline__ void mbar_fence_init() {
#ifndef QE_EMU
    QE_SM90A_ASM("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}

static __device__ __forceinline__ void mbar_arrive(uint64_t *bar) {
#ifdef QE_EMU
    emu::mbar_arrive(bar);
#else
    QE_SM90A_ASM("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
#endif
}

/* Expects `bytes` more of this phase, then arrives (the producer's call before its copies). */
static __device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t *bar, uint32_t bytes) {
#ifdef QE_EMU
    emu::mbar_expect_tx(bar, bytes);
    emu::mbar_arrive(bar);
#else
    QE_SM90A_ASM("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)),
                 "r"(bytes)
                 : "memory");
#endif
}

/* Expects `bytes` more of this phase without arriving (a producer with several copies). */
static __device__ __forceinline__ void mbar_expect_tx(uint64_t *bar, uint32_t bytes) {
#ifdef QE_EMU
    emu::mbar_expect_tx(bar, bytes);
#else
    QE_SM90A_ASM("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)),
                 "r"(bytes)
                 : "memory");
#endif
}

/* Whether the phase of this parity has completed (parity: the phase count's low bit, 0 first). */
static __device__ __forceinline__ bool mbar_try_wait(uint64_t *bar, uint32_t parity) {
#ifdef QE_EMU
    return emu::mbar_try_wait_parity(bar, parity);
#else
    uint32_t done = 0;
    QE_SM90A_ASM("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                 "selp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(done)
                 : "r"(smem_addr(bar)), "r"(parity)
                 : "memory");
    return done != 0;
#endif
}

/* The same test without the potentially blocking wait (mbarrier.test_wait). */
static __device__ __forceinline__ bool mbar_test_wait(uint64_t *bar, uint32_t parity) {
#ifdef QE_EMU
    return emu::mbar_test_wait_parity(bar, parity);
#else
    uint32_t done = 0;
    QE_SM90A_ASM("{\n.reg .pred p;\nmbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                 "selp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(done)
                 : "r"(smem_addr(bar)), "r"(parity)
                 : "memory");
    return done != 0;
#endif
}

static __device__ __forceinline__ void mbar_wait(uint64_t *bar, uint32_t parity) {
    while (!mbar_try_wait(bar, parity)) {
    }
}

/* ---- TMA: a box of a tensor (tensor_map_tiled below) copied global -> shared, its bytes
 * completing on bar's current phase. coords: the box's first element, innermost first (may be
 * negative or past the end: those elements are filled). dst: 128-byte aligned (1024 for the
 * 128-byte swizzle, so the pattern starts with the box). */

static __device__ __forceinline__ void tma_load_2d(void *dst, const CUtensorMap *map, int c0,
                                                   int c1, uint64_t *bar) {
#ifdef QE_EMU
    const int32_t c[2] = {c0, c1};
    emu::tma_load(dst, map, 2, c, bar);
#else
    QE_SM90A_ASM("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3}], [%4];\n" ::"r"(smem_addr(dst)),
                 "l"(map), "r"(c0), "r"(c1), "r"(smem_addr(bar))
                 : "memory");
#endif
}

static __device__ __forceinline__ void tma_load_3d(void *dst, const CUtensorMap *map, int c0,
                                                   int c1, int c2, uint64_t *bar) {
#ifdef QE_EMU
    const int32_t c[3] = {c0, c1, c2};
    emu::tma_load(dst, map, 3, c, bar);
#else
    QE_SM90A_ASM("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(smem_addr(dst)),
                 "l"(map), "r"(c0), "r"(c1), "r"(c2), "r"(smem_addr(bar))
                 : "memory");
#endif
}

/* Orders this thread's generic-proxy shared-memory writes before later async-proxy accesses
 * (a wgmma or TMA reading what threads stored). Accepted by the emulator, which has one proxy. */
static __device__ __forceinline__ void fence_proxy_async() {
#ifndef QE_EMU
    QE_SM90A_ASM("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

/* ---- setmaxnreg: moves registers between the warpgroups of a warp-specialised block (a
 * producer gives some up, consumers take them). Accepted by the emulator, without effect. */
template <int REGS> static __device__ __forceinline__ void setmaxnreg_inc() {
    static_assert(REGS >= 24 && REGS <= 256 && REGS % 8 == 0, "setmaxnreg: 24..256, step 8");
#ifndef QE_EMU
    QE_SM90A_ASM("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(REGS));
#endif
}
template <int REGS> static __device__ __forceinline__ void setmaxnreg_dec() {
    static_assert(REGS >= 24 && REGS <= 256 && REGS % 8 == 0, "setmaxnreg: 24..256, step 8");
#ifndef QE_EMU
    QE_SM90A_ASM("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(REGS));
#endif
}

/* ---- the tensor map (host code): a row-major tensor of `rank` dimensions, innermost first
 * (dims[0] contiguous), byte strides of dimensions 1.. in strides (multiples of 16), copied in
 * boxes of box[] elements into shared memory with the given swizzle (the box's inner dimension in
 * bytes at most the swizzle span); elements outside the tensor read as zero, or NaN with
 * CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA. Pass it to the kernel by value as a
 * `const __grid_constant__ CUtensorMap` parameter. On a GPU this is the driver's
 * cuTensorMapEncodeTiled (through the runtime's entry-point query, so nothing links libcuda);
 * in the emulator, the same fields in the emulator's encoding. */
static inline cudaError_t tensor_map_tiled(CUtensorMap *map, CUtensorMapDataType type, int rank,
                                           const void *base, const cuuint64_t *dims,
                                           const cuuint64_t *strides, const cuuint32_t *box,
                                           CUtensorMapSwizzle swizzle,
                                           CUtensorMapFloatOOBfill fill) {
#ifdef QE_EMU
    return emu::tensor_map_encode(map, (int)type, rank, base, dims, strides, box, (int)swizzle,
                                  fill == CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA)
               ? cudaErrorInvalidValue
               : cudaSuccess;
#else
    static PFN_cuTensorMapEncodeTiled_v12000 encode;
    if (!encode) {
        void *fn = nullptr;
        cudaDriverEntryPointQueryResult found;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000,
                                             cudaEnableDefault, &found) != cudaSuccess ||
            found != cudaDriverEntryPointSuccess || !fn)
            return cudaErrorNotSupported;
        encode = (PFN_cuTensorMapEncodeTiled_v12000)fn;
    }
    const cuuint32_t unit_steps[5] = {1, 1, 1, 1, 1};
    const CUresult r =
        encode(map, type, (cuuint32_t)rank, (void *)base, dims, strides, box, unit_steps,
               CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_128B, fill);
    return r == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
#endif
}
