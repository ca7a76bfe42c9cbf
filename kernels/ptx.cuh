/* ptx.cuh — the only inline PTX of the kernels, in small named wrappers. Each has its host
 * implementation beside it (QE_EMU: the kernel emulator of tests/emu, which follows the PTX ISA's
 * text for the instruction), so the kernels that call them also run on the CPU. */
#pragma once
#include "common.cuh"

/* The 32-bit shared-memory address of a generic pointer into shared memory. */
static __device__ __forceinline__ uint32_t smem_addr(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
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
