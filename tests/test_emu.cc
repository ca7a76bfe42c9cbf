/* test_emu.cc — the kernel emulator itself (tests/emu), on small kernels written here: the PTX
 * instructions on hand-computed cases from the PTX ISA's fragment tables, cp.async's poison until
 * its wait, shuffles, and every error a GPU would turn into a hang or into silent garbage (a
 * shared-memory race, a barrier some threads skip, a collective with exited or diverged lanes, a
 * deadlock, a bad launch shape). Each Criterion test runs in its own process, so an error's
 * sticky device fault does not reach the next test. Compiled like the emulated kernels. */
#include <criterion/criterion.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <string.h>

#include "common.cuh"
#include "ptx.cuh"
#include "qe_emu.h"

/* ---------------------------------------------------------------- helpers */

template <typename T> static T *dev(size_t n) {
    void *p = nullptr;
    cr_assert_eq(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
    return (T *)p;
}
static uint16_t bf(float f) { /* exact for the small integers used here */
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}
static float unbf(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static void expect_clean_run() {
    const cudaError_t e = cudaDeviceSynchronize();
    cr_assert_eq(e, cudaSuccess, "device fault: %s", qe_emu_last_error());
    cr_assert_eq(qe_emu_error_count(), 0, "emulator report: %s", qe_emu_last_error());
}
/* The launch must have stopped with a report containing `what`. */
static void expect_report(const char *what) {
    cr_expect_neq(cudaDeviceSynchronize(), cudaSuccess, "the fault did not reach the stream");
    cr_assert_geq(qe_emu_error_count(), 1, "no emulator report");
    cr_expect(strstr(qe_emu_last_error(), what) != nullptr, "report lacks \"%s\": %s", what,
              qe_emu_last_error());
}

/* ---------------------------------------------------------------- ldmatrix */

/* tile[32][8] b16: row r of matrix m is tile[8m + r]; element value 64m + 8r + c. Each lane
 * writes its 4 registers (x4) or, with .trans, those of the transposed matrices. */
static __global__ void ldmatrix_kernel(const uint16_t *tile, uint32_t *out, int trans) {
    __shared__ __align__(16) uint16_t s[32 * 8];
    for (int i = threadIdx.x; i < 32 * 8; i += 32)
        s[i] = tile[i];
    __syncthreads();
    uint32_t r[4];
    if (trans)
        ldmatrix_x4_trans(r, &s[threadIdx.x * 8]);
    else
        ldmatrix_x4(r, &s[threadIdx.x * 8]);
    for (int i = 0; i < 4; i++)
        out[threadIdx.x * 4 + i] = r[i];
}

static void run_ldmatrix(int trans, uint32_t *got) {
    uint16_t *tile = dev<uint16_t>(256);
    uint32_t *out = dev<uint32_t>(128);
    for (int i = 0; i < 256; i++)
        tile[i] = (uint16_t)i; /* 64m + 8r + c */
    QE_LAUNCH(ldmatrix_kernel, 1, 32, 0, nullptr)(tile, out, trans);
    expect_clean_run();
    memcpy(got, out, 128 * 4);
}

/* The ISA's figure for ldmatrix .m8n8 .b16: lane l holds row l/4, elements 2(l%4) and 2(l%4)+1,
 * the lower-numbered one in the low half. */
Test(emu, ldmatrix_x4_fragments) {
    uint32_t got[128];
    run_ldmatrix(0, got);
    cr_expect_eq(got[0 * 4 + 0], 0u | 1u << 16, "lane 0, matrix 0: elements (0,0), (0,1)");
    cr_expect_eq(got[5 * 4 + 0], 10u | 11u << 16, "lane 5, matrix 0: elements (1,2), (1,3)");
    cr_expect_eq(got[31 * 4 + 3], (64u * 3 + 62) | (64u * 3 + 63) << 16,
                 "lane 31, matrix 3: elements (7,6), (7,7)");
    for (int l = 0; l < 32; l++)
        for (int m = 0; m < 4; m++) {
            const uint32_t lo = 64 * m + 8 * (l / 4) + 2 * (l % 4);
            cr_expect_eq(got[l * 4 + m], lo | (lo + 1) << 16, "lane %d matrix %d", l, m);
        }
}

/* With .trans lane l holds column l/4, rows 2(l%4) and 2(l%4)+1. */
Test(emu, ldmatrix_x4_trans_fragments) {
    uint32_t got[128];
    run_ldmatrix(1, got);
    cr_expect_eq(got[0 * 4 + 0], 0u | 8u << 16, "lane 0, matrix 0: elements (0,0), (1,0)");
    cr_expect_eq(got[5 * 4 + 0], 17u | 25u << 16, "lane 5, matrix 0: elements (2,1), (3,1)");
    for (int l = 0; l < 32; l++)
        for (int m = 0; m < 4; m++) {
            const uint32_t lo = 64 * m + 8 * (2 * (l % 4)) + l / 4;
            cr_expect_eq(got[l * 4 + m], lo | (lo + 8) << 16, "lane %d matrix %d", l, m);
        }
}

/* ---------------------------------------------------------------- mma */

static __device__ uint16_t bf16_bits(float f) {
    const bf16 h = __float2bfloat16_rn(f);
    uint16_t u;
    memcpy(&u, &h, 2);
    return u;
}

/* Each lane packs its fragments of A (16x16), B (16x8) and C (16x8) by the ISA's tables for
 * mma.m16n8k16 .bf16 / .f32 and writes back D by the C table. */
static __global__ void mma_kernel(const float *A, const float *B, const float *C, float *D) {
    const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
    auto pk = [](float lo, float hi) {
        return (uint32_t)bf16_bits(lo) | (uint32_t)bf16_bits(hi) << 16;
    };
    uint32_t a[4];
    a[0] = pk(A[g * 16 + 2 * t], A[g * 16 + 2 * t + 1]);
    a[1] = pk(A[(g + 8) * 16 + 2 * t], A[(g + 8) * 16 + 2 * t + 1]);
    a[2] = pk(A[g * 16 + 2 * t + 8], A[g * 16 + 2 * t + 9]);
    a[3] = pk(A[(g + 8) * 16 + 2 * t + 8], A[(g + 8) * 16 + 2 * t + 9]);
    const uint32_t b0 = pk(B[(2 * t) * 8 + g], B[(2 * t + 1) * 8 + g]);
    const uint32_t b1 = pk(B[(2 * t + 8) * 8 + g], B[(2 * t + 9) * 8 + g]);
    float d[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t],
                  C[(g + 8) * 8 + 2 * t + 1]};
    mma_bf16(d, a, b0, b1);
    D[g * 8 + 2 * t] = d[0], D[g * 8 + 2 * t + 1] = d[1];
    D[(g + 8) * 8 + 2 * t] = d[2], D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

Test(emu, mma_m16n8k16_matches_the_product) {
    float *A = dev<float>(256), *B = dev<float>(128), *C = dev<float>(128), *D = dev<float>(128);
    for (int i = 0; i < 16; i++)
        for (int k = 0; k < 16; k++)
            A[i * 16 + k] = (float)((i * 3 + k * 5) % 7 - 3); /* small integers: exact in bf16 */
    for (int k = 0; k < 16; k++)
        for (int j = 0; j < 8; j++)
            B[k * 8 + j] = (float)((k + 2 * j) % 5 - 2);
    for (int i = 0; i < 128; i++)
        C[i] = (float)(i % 9) * 0.5f;
    QE_LAUNCH(mma_kernel, 1, 32, 0, nullptr)(A, B, C, D);
    expect_clean_run();
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 8; j++) {
            float want = C[i * 8 + j];
            for (int k = 0; k < 16; k++)
                want += A[i * 16 + k] * B[k * 8 + j];
            cr_expect_eq(D[i * 8 + j], want, "D[%d][%d] = %g, want %g", i, j, D[i * 8 + j], want);
        }
    /* one hand-computed element: row 0 of A is (k*5)%7-3, column 0 of B is k%5-2 */
    float d00 = 0;
    for (int k = 0; k < 16; k++)
        d00 += (float)((k * 5) % 7 - 3) * (float)(k % 5 - 2);
    cr_expect_eq(D[0], d00, "D[0][0] %g, want %g", D[0], d00);
}

/* ---------------------------------------------------------------- shuffles */

static __global__ void shfl_kernel(int *out) {
    const int l = threadIdx.x;
    out[0 * 32 + l] = __shfl_xor_sync(0xffffffffu, l * 10, 5);
    out[1 * 32 + l] = __shfl_sync(0xffffffffu, l * 10, 3, 16);      /* lane 3 of each half */
    out[2 * 32 + l] = __shfl_down_sync(0xffffffffu, l * 10, 4, 16); /* own value past the half */
    out[3 * 32 + l] = __shfl_up_sync(0xffffffffu, l * 10, 2);
    const float v = warp_sum((float)l); /* common.cuh's reduction */
    out[4 * 32 + l] = (int)v;
}

Test(emu, shuffles_follow_cuda_semantics) {
    int *out = dev<int>(160);
    QE_LAUNCH(shfl_kernel, 1, 32, 0, nullptr)(out);
    expect_clean_run();
    for (int l = 0; l < 32; l++) {
        cr_expect_eq(out[l], (l ^ 5) * 10, "xor lane %d", l);
        cr_expect_eq(out[32 + l], (l / 16 * 16 + 3) * 10, "idx width 16 lane %d", l);
        cr_expect_eq(out[64 + l], (l % 16 + 4 < 16 ? l + 4 : l) * 10, "down width 16 lane %d", l);
        cr_expect_eq(out[96 + l], (l >= 2 ? l - 2 : l) * 10, "up lane %d", l);
        cr_expect_eq(out[128 + l], 496, "warp_sum lane %d", l);
    }
}

/* ---------------------------------------------------------------- cp.async */

/* Thread 0 copies 16 bytes (and 6 of another 16, the rest zero-filled), reads the destination
 * before and after the wait; a second group stays in flight across wait_group 1. */
static __global__ void cp_async_kernel(const uint16_t *src, uint16_t *out) {
    __shared__ __align__(16) uint16_t s[24];
    if (threadIdx.x != 0) return;
    cp_async16(&s[0], src, 16);
    cp_async_commit();
    cp_async16(&s[8], src + 8, 6);
    cp_async_commit();
    out[0] = s[0];         /* issued, not waited for: poisoned */
    emu::cp_async_wait(1); /* the first group only */
    out[1] = s[0], out[2] = s[7];
    out[3] = s[8]; /* the second group: still poisoned */
    cp_async_wait_all();
    out[4] = s[8], out[5] = s[10], out[6] = s[11], out[7] = s[15];
    out[8] = s[16]; /* never written: the block-start poison */
}

Test(emu, cp_async_lands_at_its_wait_and_zero_fills) {
    uint16_t *src = dev<uint16_t>(16), *out = dev<uint16_t>(9);
    for (int i = 0; i < 16; i++)
        src[i] = (uint16_t)(100 + i);
    QE_LAUNCH(cp_async_kernel, 1, 32, 0, nullptr)(src, out);
    expect_clean_run();
    cr_expect_eq(out[0], 0xFFFF, "read before the wait: %#x, want the NaN poison", out[0]);
    cr_expect_eq(out[1], 100);
    cr_expect_eq(out[2], 107);
    cr_expect_eq(out[3], 0xFFFF, "a group newer than wait_group 1 landed early: %#x", out[3]);
    cr_expect_eq(out[4], 108);
    cr_expect_eq(out[5], 110);
    cr_expect_eq(out[6], 0, "src-size 6 of 16: bytes past it are zero-filled, got %#x", out[6]);
    cr_expect_eq(out[7], 0);
    cr_expect_eq(out[8], 0xFFFF, "uninitialised shared memory is the NaN poison: %#x", out[8]);
    cr_expect(isnan(unbf(out[8])));
}

/* ---------------------------------------------------------------- races */

/* Plain loads and stores reach the race check through GCC's ThreadSanitizer instrumentation,
 * which the ASan build cannot have (tests/emu/README.md). */
static void require_plain_access_check() {
#if !defined(__SANITIZE_THREAD__)
    cr_skip_test("plain shared-memory accesses are race-checked only outside the ASan build");
#endif
}

/* Thread 0 writes a shared word; thread 33 (another warp) reads it, with or without a barrier
 * between; block_sum-like code otherwise. */
static __global__ void race_kernel(float *out, int with_barrier) {
    __shared__ float x[4];
    if (threadIdx.x == 0) x[0] = 1.5f;
    if (with_barrier) __syncthreads();
    if (threadIdx.x == 33) out[0] = x[0];
}

Test(emu, ordered_shared_access_is_not_a_race) {
    float *out = dev<float>(1);
    QE_LAUNCH(race_kernel, 1, 64, 0, nullptr)(out, 1);
    expect_clean_run();
    cr_expect_eq(out[0], 1.5f);
}

Test(emu, shared_race_without_barrier_is_reported) {
    require_plain_access_check();
    float *out = dev<float>(1);
    QE_LAUNCH(race_kernel, 1, 64, 0, nullptr)(out, 0);
    expect_report("shared-memory race (read after write)");
    cr_expect(strstr(qe_emu_last_error(), "thread 33") && strstr(qe_emu_last_error(), "thread 0"),
              "both threads named: %s", qe_emu_last_error());
    cr_expect(strstr(qe_emu_last_error(), "race_kernel block"), "kernel named: %s",
              qe_emu_last_error());
    cr_expect(strstr(qe_emu_last_error(), "test_emu.cc:") &&
                  strstr(qe_emu_last_error(), "(race_kernel)"),
              "source lines of both accesses: %s", qe_emu_last_error());
}

/* The write-after-read half: a reader in one warp, then a writer in another, no barrier. */
static __global__ void war_kernel(float *out) {
    __shared__ float x[4];
    if (threadIdx.x == 0) x[1] = 2.0f;
    __syncthreads();
    if (threadIdx.x == 1) out[0] = x[1];
    if (threadIdx.x == 40) x[1] = 3.0f;
}

Test(emu, write_after_read_is_reported) {
    require_plain_access_check();
    float *out = dev<float>(1);
    QE_LAUNCH(war_kernel, 1, 64, 0, nullptr)(out);
    expect_report("write after read");
}

/* ldmatrix reads what another warp's cp.async wrote after the wait, without a barrier. */
static __global__ void cp_async_race_kernel(const uint16_t *src, uint32_t *out) {
    __shared__ __align__(128) uint16_t s[64 * 8];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (warp == 1) {
        cp_async16(&s[lane * 8], src + lane * 8, 16);
        cp_async_commit();
        cp_async_wait_all();
    }
    if (warp == 0) {
        uint32_t r[4];
        ldmatrix_x4(r, &s[lane * 8]);
        out[lane] = r[0];
    }
}

Test(emu, missing_barrier_after_cp_async_is_reported) {
    uint16_t *src = dev<uint16_t>(512);
    uint32_t *out = dev<uint32_t>(32);
    for (int i = 0; i < 512; i++)
        src[i] = bf(1.0f);
    QE_LAUNCH(cp_async_race_kernel, 1, 64, 0, nullptr)(src, out);
    expect_report("shared-memory race");
}

/* ---------------------------------------------------------------- hangs */

static __global__ void skipped_barrier_kernel(float *out) {
    __shared__ float x[128];
    if (threadIdx.x >= 100) return; /* these threads never reach the barrier */
    x[threadIdx.x] = 1.0f;
    __syncthreads();
    out[threadIdx.x] = x[(threadIdx.x + 1) % 100];
}

Test(emu, barrier_some_threads_skip_is_reported) {
    float *out = dev<float>(128);
    QE_LAUNCH(skipped_barrier_kernel, 1, 128, 0, nullptr)(out);
    expect_report("never completes");
    cr_expect(strstr(qe_emu_last_error(), "skipped_barrier_kernel block"), "%s",
              qe_emu_last_error());
    cr_expect(strstr(qe_emu_last_error(), "(skipped_barrier_kernel)"), "the barrier's line: %s",
              qe_emu_last_error());
}

static __global__ void exited_lane_kernel(float *out) {
    if (threadIdx.x == 7) return;
    out[threadIdx.x] = warp_sum(1.0f);
}

Test(emu, collective_with_an_exited_lane_is_reported) {
    float *out = dev<float>(32);
    QE_LAUNCH(exited_lane_kernel, 1, 32, 0, nullptr)(out);
    expect_report("exited");
}

static __global__ void diverged_kernel(int *out) {
    if (threadIdx.x < 16)
        out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
    else
        out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 2);
}

Test(emu, diverged_collectives_are_reported) {
    int *out = dev<int>(32);
    QE_LAUNCH(diverged_kernel, 1, 32, 0, nullptr)(out);
    expect_report("diverged");
}

/* Half a warp waits at a barrier, the other half at a shuffle: nobody can move. */
static __global__ void deadlock_kernel(int *out) {
    if (threadIdx.x < 16)
        __syncthreads();
    else
        out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1, 1);
}

Test(emu, deadlock_is_reported) {
    int *out = dev<int>(32);
    QE_LAUNCH(deadlock_kernel, 1, 32, 0, nullptr)(out);
    expect_report("deadlocked");
}

/* ---------------------------------------------------------------- launches, banks */

static __global__ void noop_kernel(int *out) {
    out[0] = 1;
}

Test(emu, bad_launch_shape_is_a_launch_error) {
    int *out = dev<int>(1);
    QE_LAUNCH(noop_kernel, 1, 2048, 0, nullptr)(out);
    cr_expect_eq(cudaGetLastError(), cudaErrorInvalidConfiguration);
    cr_expect_eq(cudaGetLastError(), cudaSuccess, "the launch error is cleared once read");
    cr_expect(strstr(qe_emu_last_error(), "block shape"), "%s", qe_emu_last_error());
    QE_LAUNCH(noop_kernel, dim3(1, 70000), 32, 0, nullptr)(out);
    cr_expect_eq(cudaGetLastError(), cudaErrorInvalidConfiguration);
}

/* 8 rows 256 bytes apart: the same 4 banks for every row (8 wavefronts), unless the 16-byte
 * chunk is XOR-swizzled by the row as attention.cu does (1 wavefront). */
static __global__ void banks_kernel(uint32_t *out, int swizzle) {
    __shared__ __align__(128) uint16_t s[32 * 128];
    for (int i = threadIdx.x; i < 32 * 128; i += 32)
        s[i] = (uint16_t)i;
    __syncthreads();
    const int row = threadIdx.x, chunk = swizzle ? (row & 7) : 0;
    uint32_t r[4];
    ldmatrix_x4(r, &s[row * 128 + chunk * 8]);
    out[threadIdx.x] = r[0];
}

Test(emu, ldmatrix_bank_conflicts_are_counted) {
    uint32_t *out = dev<uint32_t>(32);
    QE_LAUNCH(banks_kernel, 1, 32, 0, nullptr)(out, 0);
    expect_clean_run();
    qe_emu_kernel_stats a = qe_emu_stats("banks_kernel");
    cr_expect_eq(a.ldmatrix_phases, 4);
    cr_expect_eq(a.ldmatrix_wavefronts, 32, "unswizzled: %ld wavefronts, want 4 x 8",
                 a.ldmatrix_wavefronts);
    QE_LAUNCH(banks_kernel, 1, 32, 0, nullptr)(out, 1);
    expect_clean_run();
    qe_emu_kernel_stats b = qe_emu_stats("banks_kernel");
    cr_expect_eq(b.ldmatrix_wavefronts - a.ldmatrix_wavefronts, 4,
                 "swizzled: %ld wavefronts, want 4 x 1",
                 b.ldmatrix_wavefronts - a.ldmatrix_wavefronts);
}

/* Blocks run one after another, each with fresh (poisoned) shared memory; blockIdx, blockDim,
 * gridDim and a 3-D threadIdx are what CUDA gives. */
static __global__ void grid_kernel(int *out) {
    __shared__ int seen;
    const int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    if (t == 0) {
        int v;
        memcpy(&v, &seen, 4);
        out[blockIdx.y * gridDim.x + blockIdx.x] = v; /* the poison, not the last block's value */
        seen = (int)blockIdx.x;
    }
    __syncthreads();
    if (t == (int)(blockDim.x * blockDim.y * blockDim.z) - 1)
        out[100 + blockIdx.y * gridDim.x + blockIdx.x] = seen * 1000 + (int)threadIdx.z;
}

Test(emu, grid_and_block_indices) {
    int *out = dev<int>(200);
    QE_LAUNCH(grid_kernel, dim3(3, 2), dim3(4, 2, 3), 0, nullptr)(out);
    expect_clean_run();
    for (int b = 0; b < 6; b++) {
        cr_expect_eq(out[b], -1, "block %d saw %#x in fresh shared memory", b, out[b]);
        cr_expect_eq(out[100 + b], (b % 3) * 1000 + 2, "block %d", b);
    }
    qe_emu_kernel_stats st = qe_emu_stats("grid_kernel");
    cr_expect_eq(st.blocks, 6);
    cr_expect_eq(st.threads, 6 * 24);
    cr_expect_eq(st.barriers, 6);
}

/* ---------------------------------------------------------------- dynamic shared memory */

/* Each block: word 0 of the region is the poison; the region starts on a 1024-byte shared
 * address; cp.async lands in the launch's last 16 bytes, and thread t writes the last word of its
 * 1/n of the bytes before those and, after the barrier, reads its neighbour's. */
static __global__ void dynamic_smem_kernel(const uint32_t *src, uint32_t *out, int bytes) {
    QE_DYNAMIC_SMEM(smem);
    const int t = threadIdx.x, n = blockDim.x, words = bytes / 4, slice = (words - 4) / n;
    uint32_t *w = (uint32_t *)smem;
    const uint32_t first = w[0]; /* before anyone writes */
    __syncthreads();
    const int mine = (t + 1) * slice - 1;
    w[mine] = 1000u * blockIdx.x + (uint32_t)t;
    if (t == 0) {
        cp_async16(smem + bytes - 16, src, 16);
        cp_async_commit();
        cp_async_wait_all();
    }
    __syncthreads();
    const int next = ((t + 1) % n + 1) * slice - 1;
    out[blockIdx.x * 64 + t] = w[next];
    if (t == 0) {
        out[blockIdx.x * 64 + 32] = first;
        out[blockIdx.x * 64 + 33] = (uint32_t)(__cvta_generic_to_shared(smem) % 1024);
        for (int i = 0; i < 4; i++)
            out[blockIdx.x * 64 + 34 + i] = w[words - 4 + i];
    }
}

Test(emu, dynamic_shared_memory_is_fresh_aligned_and_usable) {
    const int bytes = 200 * 1024;
    uint32_t *src = dev<uint32_t>(4), *out = dev<uint32_t>(2 * 64);
    for (int i = 0; i < 4; i++)
        src[i] = 0xC0DE0000u + (uint32_t)i;
    cr_assert_eq(QE_ALLOW_DYNAMIC_SMEM(dynamic_smem_kernel, bytes), cudaSuccess);
    QE_LAUNCH(dynamic_smem_kernel, 2, 32, bytes, nullptr)(src, out, bytes);
    expect_clean_run();
    for (unsigned b = 0; b < 2; b++) {
        const uint32_t *o = out + b * 64;
        for (unsigned t = 0; t < 32; t++)
            cr_expect_eq(o[t], 1000u * b + (t + 1) % 32, "block %u thread %u read %#x", b, t, o[t]);
        cr_expect_eq(o[32], 0xFFFFFFFFu, "block %u: fresh dynamic shared memory read %#x", b,
                     o[32]);
        cr_expect_eq(o[33], 0u, "the region's shared address is 1024-byte aligned");
        for (int i = 0; i < 4; i++)
            cr_expect_eq(o[34 + i], 0xC0DE0000u + (uint32_t)i, "cp.async into the region");
    }
}

Test(emu, dynamic_shared_memory_above_48k_needs_the_attribute) {
    uint32_t *src = dev<uint32_t>(4), *out = dev<uint32_t>(64);
    QE_LAUNCH(dynamic_smem_kernel, 1, 32, 48 * 1024, nullptr)(src, out, 48 * 1024);
    cr_expect_eq(cudaGetLastError(), cudaSuccess, "48 KB needs no attribute");
    QE_LAUNCH(dynamic_smem_kernel, 1, 32, 64 * 1024, nullptr)(src, out, 64 * 1024);
    cr_expect_eq(cudaGetLastError(), cudaErrorInvalidValue);
    cr_expect(strstr(qe_emu_last_error(), "cudaFuncAttributeMaxDynamicSharedMemorySize"), "%s",
              qe_emu_last_error());
    cr_expect_eq(QE_ALLOW_DYNAMIC_SMEM(dynamic_smem_kernel, 228 * 1024), cudaErrorInvalidValue,
                 "no block gets more than 227 KB");
    cr_assert_eq(QE_ALLOW_DYNAMIC_SMEM(dynamic_smem_kernel, 64 * 1024), cudaSuccess);
    QE_LAUNCH(dynamic_smem_kernel, 1, 32, 96 * 1024, nullptr)(src, out, 96 * 1024);
    cr_expect_eq(cudaGetLastError(), cudaErrorInvalidValue, "above the allowed 64 KB");
    QE_LAUNCH(dynamic_smem_kernel, 1, 32, 64 * 1024, nullptr)(src, out, 64 * 1024);
    cr_expect_eq(cudaGetLastError(), cudaSuccess);
    cr_expect_eq(cudaDeviceSynchronize(), cudaSuccess, "the refused launches left no fault");
    cr_expect_eq(out[1], 2u, "the allowed launches ran");
}

/* Thread 0 touches the word just past the launch's bytes: by cp.async (checked in every build)
 * or by a plain store (checked where plain accesses are). */
static __global__ void past_dynamic_kernel(const uint32_t *src, int bytes, int plain) {
    QE_DYNAMIC_SMEM(smem);
    if (threadIdx.x != 0) return;
    if (plain) {
        uint32_t *w = (uint32_t *)(smem + bytes);
        w[0] = 1;
    } else {
        cp_async16(smem + bytes, src, 16);
        cp_async_commit();
        cp_async_wait_all();
    }
}

Test(emu, cp_async_past_the_dynamic_bytes_is_reported) {
    uint32_t *src = dev<uint32_t>(4);
    QE_LAUNCH(past_dynamic_kernel, 1, 32, 4096, nullptr)(src, 4096, 0);
    expect_report("past the launch's dynamic shared memory");
}

Test(emu, store_past_the_dynamic_bytes_is_reported) {
    require_plain_access_check();
    uint32_t *src = dev<uint32_t>(4);
    QE_LAUNCH(past_dynamic_kernel, 1, 32, 4096, nullptr)(src, 4096, 1);
    expect_report("past the launch's 4096");
}

/* Two warps write one word of the region without a barrier between. */
static __global__ void dynamic_race_kernel(uint32_t *out) {
    QE_DYNAMIC_SMEM(smem);
    uint32_t *w = (uint32_t *)smem;
    if (threadIdx.x == 0) w[5] = 1;
    if (threadIdx.x == 40) w[5] = 2;
    __syncthreads();
    if (threadIdx.x == 0) out[0] = w[5];
}

Test(emu, race_in_dynamic_shared_memory_is_reported) {
    require_plain_access_check();
    uint32_t *out = dev<uint32_t>(1);
    QE_LAUNCH(dynamic_race_kernel, 1, 64, 1024, nullptr)(out);
    expect_report("shared-memory race");
}

/* ---------------------------------------------------------------- programmatic dependent launch */

/* A kernel for QE_LAUNCH_PDL: reads in[] after (wait_first) or before its griddep_wait; with
 * async, the early access is a cp.async from in[]. */
static __global__ void pdl_kernel(const uint32_t *in, uint32_t *out, int wait_first, int async) {
    __shared__ __align__(16) uint32_t s[4];
    if (wait_first) griddep_wait();
    if (async) {
        if (threadIdx.x == 0) {
            cp_async16(s, in, 16);
            cp_async_commit();
            cp_async_wait_all();
        }
        __syncthreads();
    }
    const uint32_t v = async ? s[threadIdx.x % 4] : in[threadIdx.x];
    if (!wait_first) griddep_wait();
    griddep_launch_dependents();
    out[threadIdx.x] = v + 1;
}

Test(emu, pdl_kernel_that_waits_first_runs_clean) {
    uint32_t *in = dev<uint32_t>(32), *out = dev<uint32_t>(32);
    for (int i = 0; i < 32; i++)
        in[i] = (uint32_t)i;
    const long before = qe_emu_stats("pdl_kernel").pdl_launches;
    QE_LAUNCH_PDL(pdl_kernel, 1, 32, 0, nullptr)(in, out, 1, 0);
    QE_LAUNCH_PDL(pdl_kernel, 1, 32, 0, nullptr)(in, out, 1, 1);
    expect_clean_run();
    cr_expect_eq(qe_emu_stats("pdl_kernel").pdl_launches - before, 2);
    for (int i = 0; i < 32; i++)
        cr_expect_eq(out[i], (uint32_t)(i % 4) + 1);
    /* a plain launch holds the kernel to nothing: the late wait is then harmless */
    QE_LAUNCH(pdl_kernel, 1, 32, 0, nullptr)(in, out, 0, 0);
    expect_clean_run();
    cr_expect_eq(out[31], 32u);
}

Test(emu, pdl_global_read_before_the_wait_is_reported) {
    require_plain_access_check();
    uint32_t *in = dev<uint32_t>(32), *out = dev<uint32_t>(32);
    QE_LAUNCH_PDL(pdl_kernel, 1, 32, 0, nullptr)(in, out, 0, 0);
    expect_report("reads global memory");
    cr_expect(strstr(qe_emu_last_error(), "before griddepcontrol.wait"), "%s", qe_emu_last_error());
}

Test(emu, pdl_cp_async_before_the_wait_is_reported) {
    uint32_t *in = dev<uint32_t>(32), *out = dev<uint32_t>(32);
    QE_LAUNCH_PDL(pdl_kernel, 1, 32, 0, nullptr)(in, out, 0, 1);
    expect_report("cp.async reads global memory");
}
