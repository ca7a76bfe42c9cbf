/* test_emu_hopper.cc — the emulator's Hopper instructions (tests/emu/emu_hopper.cc) on
 * hand-computed cases, in the test_emu suite: matrix-descriptor decoding per swizzle mode,
 * wgmma SS and RS products against a plain loop (small integers in bf16, so exact), scale-d,
 * mbarrier phases and tx counting, TMA boxes with strides, swizzles and out-of-bounds fill, TMA
 * feeding wgmma; and planted bugs (a missing expect_tx, a wrong parity, reads before the wait, a
 * missing fence, an operand overwritten in flight), each detected. The shared-memory images
 * below are built from the layouts as the ISA's figures draw them (16-byte chunk c of row r moved
 * to c ^ f(r)), independently of the emulator's address arithmetic. Compiled like the emulated
 * kernels. */
#include <criterion/criterion.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <string.h>

#include <vector>

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
static void expect_report(const char *what) {
    cr_expect_neq(cudaDeviceSynchronize(), cudaSuccess, "the fault did not reach the stream");
    cr_assert_geq(qe_emu_error_count(), 1, "no emulator report");
    cr_expect(strstr(qe_emu_last_error(), what) != nullptr, "report lacks \"%s\": %s", what,
              qe_emu_last_error());
}

/* D fragment of wgmma .m64nNk16 (the ISA's figure): register i of thread t (in the warpgroup). */
static int d_row(int t, int i) {
    return 16 * (t / 32) + t % 32 / 4 + 8 * (i / 2 % 2);
}
static int d_col(int t, int i) {
    return 8 * (i / 4) + 2 * (t % 4) + i % 2;
}

/* ---------------------------------------------------------------- descriptors */

static __global__ void desc_kernel(uint64_t *out) {
    __shared__ __align__(1024) uint16_t s[1024];
    out[0] = wgmma_desc(&s[0], 256, 1024, WGMMA_SWIZZLE_128B);
    out[1] = wgmma_desc(&s[40], 16, 512, WGMMA_SWIZZLE_64B);
    out[2] = __cvta_generic_to_shared(&s[0]);
}

/* The bit fields of the ISA's "Matrix Descriptor Format". */
Test(hopper, descriptor_fields) {
    uint64_t *out = dev<uint64_t>(3);
    QE_LAUNCH(desc_kernel, 1, 32, 0, nullptr)(out);
    expect_clean_run();
    const uint64_t base = out[2];
    cr_expect_eq(out[0] & 0x3FFF, (base & 0x3FFFF) >> 4, "start address >> 4 in bits 0-13");
    cr_expect_eq(out[0] >> 16 & 0x3FFF, 256u >> 4, "LBO >> 4 in bits 16-29");
    cr_expect_eq(out[0] >> 32 & 0x3FFF, 1024u >> 4, "SBO >> 4 in bits 32-45");
    cr_expect_eq(out[0] >> 49 & 7, 0u, "base offset 0");
    cr_expect_eq(out[0] >> 62, 1u, "128-byte swizzle is mode 1");
    cr_expect_eq(out[1] & 0x3FFF, ((base + 80) & 0x3FFFF) >> 4);
    cr_expect_eq(out[1] >> 62, 2u, "64-byte swizzle is mode 2");
    cr_expect_eq(out[1] >> 16 & 0x3FFF, 1u);
    cr_expect_eq(out[1] >> 32 & 0x3FFF, 32u);
}

static uint64_t desc_of(uint32_t start, uint32_t lbo, uint32_t sbo, uint64_t mode) {
    return (start >> 4) | (uint64_t)(lbo >> 4) << 16 | (uint64_t)(sbo >> 4) << 32 | mode << 62;
}

/* Element addresses worked by hand from the canonical layouts (see each comment). */
Test(hopper, descriptor_decode_per_swizzle_mode) {
    /* K-major, no swizzle: 0x400 + (9/8) SBO + (9%8) 16 + (10/8) LBO + (10%8) 2 */
    cr_expect_eq(emu::wgmma_element_offset(desc_of(0x400, 128, 256, 0), false, 9, 10), 0x594u);
    /* K-major 128 B: row 3 at +384, k 9 in chunk 1 -> chunk 1 ^ 3 = 2: 0x400 + 384 + 32 + 2 */
    cr_expect_eq(emu::wgmma_element_offset(desc_of(0x400, 16, 1024, 1), false, 3, 9), 0x5A2u);
    /* the same row advanced by one k16 step (start + 32): k 1 is chunk 2 -> 2 ^ 3 = 1 */
    cr_expect_eq(emu::wgmma_element_offset(desc_of(0x420, 16, 1024, 1), false, 3, 1), 0x592u);
    /* K-major 64 B: row 2 at +128, k 12 in chunk 1 -> 1 ^ (2/2) = 0: 128 + 8 */
    cr_expect_eq(emu::wgmma_element_offset(desc_of(0, 16, 512, 2), false, 2, 12), 0x88u);
    /* K-major 32 B: row 4 at +128, k 3 in chunk 0 -> 0 ^ (4/4) = 1: 128 + 16 + 6 */
    cr_expect_eq(emu::wgmma_element_offset(desc_of(0, 16, 256, 3), false, 4, 3), 0x96u);
    /* K-major 128 B, second 8-row group: + SBO; row 9 % 8 = 1, k 0 -> chunk 0 ^ 1 = 1 */
    cr_expect_eq(emu::wgmma_element_offset(desc_of(0, 16, 1024, 1), false, 9, 0), 1024u + 128 + 16);
    /* MN-major 128 B: mn 70 = atom 1 (+LBO 8192), 6 in; k 9 = +SBO 1024, row 1 (+128); chunk
     * 0 ^ 1 = 1: 8192 + 1024 + 128 + 16 + 12 */
    cr_expect_eq(emu::wgmma_element_offset(desc_of(0, 8192, 1024, 1), true, 70, 9), 9372u);
    /* the same with k 19: +2 SBO, row 3 (+384); chunk 0 ^ 3 = 3: 8192 + 2048 + 384 + 48 + 12 */
    cr_expect_eq(emu::wgmma_element_offset(desc_of(0, 8192, 1024, 1), true, 70, 19), 10684u);
    /* MN-major, no swizzle: mn 11 = +SBO 128, 3 in (+6); k 10 = +LBO 256, row 2 (+32) */
    cr_expect_eq(emu::wgmma_element_offset(desc_of(0, 256, 128, 0), true, 11, 10), 422u);
}

/* ---------------------------------------------------------------- wgmma on images */

/* Where a test puts element (mn, k) of an operand (bytes from the image's base): the layouts as
 * the ISA draws them, the swizzle stated per row. */
enum layout { K_NONE, K_SW32, K_SW64, K_SW128, MN_NONE, MN_SW64, MN_SW128 };
struct operand_layout {
    layout kind;
    int mn, k; /* extent */
};
static int chunk_xor(int span, int row) { /* the row's chunk permutation of a swizzle span */
    return span == 128 ? row % 8 : span == 64 ? row % 8 / 2 : span == 32 ? row % 8 / 4 : 0;
}
static uint32_t image_off(const operand_layout &l, int mn, int k) {
    switch (l.kind) {
    case K_NONE: /* core matrices: 8 rows x 16 B; next k chunk +128, next 8 rows +128 K/8 */
        return (uint32_t)((mn / 8) * 128 * (l.k / 8) + (mn % 8) * 16 + (k / 8) * 128 + k % 8 * 2);
    case K_SW32:
    case K_SW64:
    case K_SW128: { /* rows of `span` bytes, 8 rows an atom; atoms down mn, then along k */
        const int span = l.kind == K_SW32 ? 32 : l.kind == K_SW64 ? 64 : 128, per = span / 2;
        const int atom_col = k / per, kk = k % per;
        return (uint32_t)(atom_col * (l.mn * span) + mn * span +
                          ((kk / 8) ^ chunk_xor(span, mn)) * 16 + kk % 8 * 2);
    }
    case MN_NONE: /* core matrices: 8 k-rows x 8 contiguous mn; next 8 mn +128, next 8 k +LBO */
        return (uint32_t)((mn / 8) * 128 + mn % 8 * 2 + (k / 8) * (128 * (l.mn / 8)) + k % 8 * 16);
    case MN_SW64:
    case MN_SW128: { /* rows (one per k) of `span` bytes of mn; 8 k an atom; atoms down k */
        const int span = l.kind == MN_SW64 ? 64 : 128, per = span / 2;
        const int blk = mn / per, m = mn % per;
        return (uint32_t)(blk * (l.k * span) + k * span + ((m / 8) ^ chunk_xor(span, k)) * 16 +
                          m % 8 * 2);
    }
    }
    return 0;
}
/* The descriptor's LBO, SBO and mode for an image, and how far its start moves per k16 step. */
struct desc_args {
    uint32_t lbo, sbo, step;
    int mode;
};
static desc_args desc_for(const operand_layout &l) {
    switch (l.kind) {
    case K_NONE:
        return {128, (uint32_t)(128 * (l.k / 8)), 256, WGMMA_SWIZZLE_NONE};
    case K_SW32: /* k16 = a whole 32-byte row: the next step is the next atom column */
        return {16, 256, (uint32_t)(32 * l.mn), WGMMA_SWIZZLE_32B};
    case K_SW64:
        return {16, 512, 32, WGMMA_SWIZZLE_64B};
    case K_SW128:
        return {16, 1024, 32, WGMMA_SWIZZLE_128B};
    case MN_NONE:
        return {(uint32_t)(128 * (l.mn / 8)), 128, (uint32_t)(256 * (l.mn / 8)),
                WGMMA_SWIZZLE_NONE};
    case MN_SW64:
        return {(uint32_t)(64 * l.k), 512, 1024, WGMMA_SWIZZLE_64B};
    case MN_SW128:
        return {(uint32_t)(128 * l.k), 1024, 2048, WGMMA_SWIZZLE_128B};
    }
    return {};
}

struct wg_case {
    uint32_t a_off, b_off; /* bytes into the image */
    desc_args a, b;
    int ksteps, accumulate;
};

/* A warpgroup copies the image into shared memory, loads C into its accumulators by the D
 * fragment, runs ksteps wgmmas (A from the image or from a_regs: 4 per thread per step), waits
 * and writes D back by the same fragment. */
/* The image's shared memory, outside the kernel template (the emulator's shared window is one
 * linker section, which a template's static would leave for its own COMDAT group). */
static __device__ uint16_t *image_smem() {
    __shared__ __align__(1024) uint16_t s[16384];
    return s;
}

template <int N, int TA, int TB, int RS>
static __global__ void wgmma_kernel(const uint16_t *image, int image_n, wg_case c, const float *C,
                                    const uint32_t *a_regs, float *D) {
    uint16_t *s = image_smem();
    const int t = threadIdx.x;
    for (int i = t; i < image_n; i += 128)
        s[i] = image[i];
    __syncthreads();
    fence_proxy_async();
    float d[N / 2];
    for (int i = 0; i < N / 2; i++)
        d[i] = C[d_row(t, i) * N + d_col(t, i)];
    wgmma_fence_operands(d);
    wgmma_fence();
    for (int kk = 0; kk < c.ksteps; kk++) {
        const char *base = (const char *)s;
        const uint64_t db =
            wgmma_desc(base + c.b_off + kk * c.b.step, c.b.lbo, c.b.sbo, (wgmma_swizzle)c.b.mode);
        const int acc = kk > 0 || c.accumulate;
        if (RS) {
            wgmma_bf16_rs<N, TB>(d, &a_regs[(kk * 128 + t) * 4], db, acc);
        } else {
            const uint64_t da = wgmma_desc(base + c.a_off + kk * c.a.step, c.a.lbo, c.a.sbo,
                                           (wgmma_swizzle)c.a.mode);
            wgmma_bf16_ss<N, TA, TB>(d, da, db, acc);
        }
    }
    wgmma_commit_group();
    wgmma_wait_group<0>();
    wgmma_fence_operands(d);
    for (int i = 0; i < N / 2; i++)
        D[d_row(t, i) * N + d_col(t, i)] = d[i];
}

/* Runs one product: A (64 x K) in layout la or in registers, B (K x N) in layout lb; checks
 * D = A B (+ C when accumulating) exactly. */
template <int N, int TA, int TB, int RS>
static void check_product(layout la, layout lb, int K, int accumulate) {
    const operand_layout A_l{la, 64, K}, B_l{lb, N, K};
    std::vector<float> A(64 * K), B(K * N);
    /* small integers with a product term, so no two rows, columns or blocks coincide */
    for (int m = 0; m < 64; m++)
        for (int k = 0; k < K; k++)
            A[m * K + k] = (float)((m * 3 + k * 5 + m * k) % 7 - 3);
    for (int k = 0; k < K; k++)
        for (int n = 0; n < N; n++)
            B[k * N + n] = (float)((k * 7 + n * 13 + k * n) % 5 - 2);
    const uint32_t a_bytes = RS ? 0 : 64u * K * 2, b_off = (a_bytes + 1023) / 1024 * 1024;
    const int image_n = (int)(b_off + (uint32_t)N * K * 2) / 2;
    cr_assert_leq(image_n, 16384);
    uint16_t *image = dev<uint16_t>((size_t)image_n);
    memset(image, 0xFF, (size_t)image_n * 2); /* anything not placed reads as NaN */
    for (int m = 0; m < 64 && !RS; m++)
        for (int k = 0; k < K; k++)
            image[image_off(A_l, m, k) / 2] = bf(A[m * K + k]);
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            image[(b_off + image_off(B_l, n, k)) / 2] = bf(B[k * N + n]);
    /* A registers of the RS form: element i of thread t is (d_row(t, i), 2 (t%4) + i%2 + 8 (i/4))
     * — the mma.m16n8k16 A fragment per warp — two to a register, the lower column low */
    uint32_t *regs = dev<uint32_t>((size_t)(K / 16) * 128 * 4);
    for (int kk = 0; kk < K / 16; kk++)
        for (int t = 0; t < 128; t++)
            for (int r = 0; r < 4; r++) {
                const int row = d_row(t, 2 * r), col = 16 * kk + 2 * (t % 4) + 8 * (r / 2);
                regs[(kk * 128 + t) * 4 + r] =
                    (uint32_t)bf(A[row * K + col]) | (uint32_t)bf(A[row * K + col + 1]) << 16;
            }
    float *C = dev<float>(64 * N), *D = dev<float>(64 * N);
    for (int i = 0; i < 64 * N; i++)
        C[i] = (float)(i % 9) * 0.5f;
    const wg_case c{0, b_off, desc_for(A_l), desc_for(B_l), K / 16, accumulate};
    QE_LAUNCH((wgmma_kernel<N, TA, TB, RS>), 1, 128, 0, nullptr)(image, image_n, c, C, regs, D);
    expect_clean_run();
    int bad = 0;
    for (int m = 0; m < 64; m++)
        for (int n = 0; n < N; n++) {
            float want = accumulate ? C[m * N + n] : 0.0f;
            for (int k = 0; k < K; k++)
                want += A[m * K + k] * B[k * N + n];
            if (D[m * N + n] != want && bad++ < 4)
                cr_expect_eq(D[m * N + n], want, "D[%d][%d] = %g, want %g", m, n, D[m * N + n],
                             want);
        }
    cr_expect_eq(bad, 0, "%d of %d elements wrong", bad, 64 * N);
}

Test(hopper, wgmma_ss_k_major_128b_n64) {
    check_product<64, 0, 0, 0>(K_SW128, K_SW128, 64, 1); /* four k16 steps along the rows */
}
Test(hopper, wgmma_ss_k_major_128b_n128_overwrite) {
    check_product<128, 0, 0, 0>(K_SW128, K_SW128, 64, 0);
}
Test(hopper, wgmma_ss_k_major_interleaved_n8) {
    check_product<8, 0, 0, 0>(K_NONE, K_NONE, 32, 1);
}
Test(hopper, wgmma_ss_k_major_64b_and_32b_n16) {
    check_product<16, 0, 0, 0>(K_SW64, K_SW32, 32, 1);
}
Test(hopper, wgmma_ss_mn_major_a_interleaved_b_64b_n64) {
    check_product<64, 1, 1, 0>(MN_NONE, MN_SW64, 32, 1);
}
Test(hopper, wgmma_rs_mn_major_128b_n128) { /* P V of attention: A in registers, V N-major */
    check_product<128, 0, 1, 1>(K_NONE, MN_SW128, 32, 1);
}
Test(hopper, wgmma_rs_overwrite_ignores_c_n16) {
    check_product<16, 0, 0, 1>(K_NONE, K_SW32, 16, 0);
}

/* ---------------------------------------------------------------- wgmma planted bugs */

/* mode 0: reads an accumulator between issue and wait; 1: no wgmma.fence; 2: overwrites the B
 * operand in shared memory before the wait (between barriers, so not a race by epochs); 3: exits
 * without waiting; 4: writes an accumulator in flight. */
static __global__ void wgmma_bug_kernel(float *out, int mode) {
    __shared__ __align__(1024) uint16_t s[2 * 64 * 16];
    const int t = threadIdx.x;
    for (int i = t; i < 2 * 64 * 16; i += 128)
        s[i] = 0x3F80; /* 1.0 */
    __syncthreads();
    float d[4] = {0, 0, 0, 0};
    const uint64_t da = wgmma_desc(&s[0], 128, 256, WGMMA_SWIZZLE_NONE);
    const uint64_t db = wgmma_desc(&s[64 * 16], 128, 256, WGMMA_SWIZZLE_NONE);
    if (mode != 1) wgmma_fence();
    wgmma_bf16_ss<8>(d, da, db, 0);
    wgmma_commit_group();
    out[t] = d[0];   /* mode 0: before the wait */
    if (mode == 2) { /* the barriers order the write after the issue and before every wait */
        __syncthreads();
        if (t == 0) s[64 * 16] = 0x4000;
        __syncthreads();
    }
    if (mode == 3) return;
    if (mode == 4) d[2] *= 0.5f; /* e.g. an online-softmax rescale before the P V wait */
    wgmma_wait_group<0>();
    out[128 + t] = d[0];
}

Test(hopper, wgmma_read_before_wait_is_nan) {
    float *out = dev<float>(256);
    QE_LAUNCH(wgmma_bug_kernel, 1, 128, 0, nullptr)(out, 0);
    expect_clean_run();
    for (int t = 0; t < 128; t++) {
        cr_expect(isnan(out[t]), "thread %d read %g before the wait, want NaN", t, out[t]);
        cr_expect_eq(out[128 + t], 16.0f, "thread %d after the wait", t);
    }
}
Test(hopper, wgmma_without_fence_is_reported) {
    float *out = dev<float>(256);
    QE_LAUNCH(wgmma_bug_kernel, 1, 128, 0, nullptr)(out, 1);
    expect_report("without a wgmma.fence");
}
Test(hopper, wgmma_operand_overwritten_in_flight_is_reported) {
    float *out = dev<float>(256);
    QE_LAUNCH(wgmma_bug_kernel, 1, 128, 0, nullptr)(out, 2);
    expect_report("changed before the wgmma.wait_group");
}
Test(hopper, wgmma_never_waited_is_reported) {
    float *out = dev<float>(256);
    QE_LAUNCH(wgmma_bug_kernel, 1, 128, 0, nullptr)(out, 3);
    expect_report("in flight");
}
Test(hopper, wgmma_accumulator_written_in_flight_is_reported) {
    float *out = dev<float>(256);
    QE_LAUNCH(wgmma_bug_kernel, 1, 128, 0, nullptr)(out, 4);
    expect_report("accumulator register 2 was written while");
}
Test(hopper, wgmma_needs_a_whole_warpgroup) {
    float *out = dev<float>(256);
    QE_LAUNCH(wgmma_bug_kernel, 1, 96, 0, nullptr)(out, 0);
    expect_report("not four full warps");
}

/* ---------------------------------------------------------------- mbarrier */

/* One thread walks a barrier of two arrivals through two phases, probing with test_wait (which
 * never blocks) after each step; a 64-byte bulk copy supplies the expected bytes. */
static __global__ void mbar_phase_kernel(const __grid_constant__ CUtensorMap map, int *out) {
    __shared__ __align__(128) uint16_t tile[32];
    __shared__ uint64_t bar;
    if (threadIdx.x != 0) return;
    int n = 0;
    mbar_init(&bar, 2);
    out[n++] = mbar_test_wait(&bar, 0); /* 0: phase 0 not complete */
    out[n++] = mbar_test_wait(&bar, 1); /* 1: "the phase before" counts as complete */
    mbar_arrive(&bar);
    out[n++] = mbar_test_wait(&bar, 0); /* 0: one arrival due */
    mbar_arrive_expect_tx(&bar, 64);
    out[n++] = mbar_test_wait(&bar, 0); /* 0: arrivals in, 64 bytes due */
    tma_load_2d(tile, &map, 0, 0, &bar);
    out[n++] = mbar_test_wait(&bar, 0); /* 1: phase 0 complete */
    out[n++] = mbar_test_wait(&bar, 1); /* 0: phase 1 under way */
    out[n++] = tile[5];                 /* landed */
    mbar_arrive(&bar);
    mbar_arrive(&bar);
    out[n++] = mbar_test_wait(&bar, 1); /* 1: phase 1 complete (no bytes expected) */
    out[n++] = mbar_test_wait(&bar, 0); /* 0: phase 2 under way */
    mbar_expect_tx(&bar, 64);
    mbar_arrive(&bar);
    mbar_arrive(&bar);
    out[n++] = mbar_test_wait(&bar, 0); /* 0: arrivals in, 64 bytes due */
    tma_load_2d(tile, &map, 0, 0, &bar);
    out[n++] = mbar_test_wait(&bar, 0); /* 1: phase 2 complete */
}

static CUtensorMap map_2d(const void *base, CUtensorMapDataType type, uint64_t d0, uint64_t d1,
                          uint64_t row_bytes, uint32_t b0, uint32_t b1, CUtensorMapSwizzle sw,
                          CUtensorMapFloatOOBfill fill = CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) {
    CUtensorMap m;
    const cuuint64_t dims[2] = {d0, d1}, strides[1] = {row_bytes};
    const cuuint32_t box[2] = {b0, b1};
    cr_assert_eq(tensor_map_tiled(&m, type, 2, base, dims, strides, box, sw, fill), cudaSuccess);
    return m;
}

Test(hopper, mbarrier_phases_and_tx_count) {
    uint16_t *src = dev<uint16_t>(32);
    for (int i = 0; i < 32; i++)
        src[i] = (uint16_t)(500 + i);
    const CUtensorMap m =
        map_2d(src, CU_TENSOR_MAP_DATA_TYPE_UINT16, 32, 1, 64, 32, 1, CU_TENSOR_MAP_SWIZZLE_NONE);
    int *out = dev<int>(11);
    QE_LAUNCH(mbar_phase_kernel, 1, 32, 0, nullptr)(m, out);
    expect_clean_run();
    const int want[11] = {0, 1, 0, 0, 1, 0, 505, 1, 0, 0, 1};
    for (int i = 0; i < 11; i++)
        cr_expect_eq(out[i], want[i], "step %d: %d, want %d", i, out[i], want[i]);
}

/* ---------------------------------------------------------------- TMA */

/* Thread 0 copies one box (2-D or 3-D) at the given coordinates; everyone waits on phase 0 and
 * the box comes back to global memory bytewise. */
struct box_args {
    int rank, c0, c1, c2, bytes;
};
static __global__ void tma_box_kernel(const __grid_constant__ CUtensorMap map, box_args a,
                                      uint8_t *out) {
    __shared__ __align__(1024) uint8_t tile[8192];
    __shared__ uint64_t bar;
    if (threadIdx.x == 0) {
        mbar_init(&bar, 1);
        mbar_fence_init();
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        mbar_arrive_expect_tx(&bar, (uint32_t)a.bytes);
        if (a.rank == 2)
            tma_load_2d(tile, &map, a.c0, a.c1, &bar);
        else
            tma_load_3d(tile, &map, a.c0, a.c1, a.c2, &bar);
    }
    mbar_wait(&bar, 0);
    for (int i = threadIdx.x; i < a.bytes; i += blockDim.x)
        out[i] = tile[i];
}

static uint16_t *run_box(const CUtensorMap &m, box_args a) {
    uint8_t *out = dev<uint8_t>((size_t)a.bytes);
    QE_LAUNCH(tma_box_kernel, 1, 64, 0, nullptr)(m, a, out);
    expect_clean_run();
    return (uint16_t *)out;
}

/* A 40 x 30 tensor in rows of 48 elements (96 bytes): a 16 x 8 box at (32, 26) runs past both
 * ends (zero-filled), one at (-8, -2) starts before them. */
Test(hopper, tma_2d_box_strides_and_zero_fill) {
    uint16_t *g = dev<uint16_t>(48 * 30);
    for (int y = 0; y < 30; y++)
        for (int x = 0; x < 48; x++)
            g[y * 48 + x] = (uint16_t)(x < 40 ? 1000 + 100 * y + x : 0xEEEE);
    const CUtensorMap m =
        map_2d(g, CU_TENSOR_MAP_DATA_TYPE_UINT16, 40, 30, 96, 16, 8, CU_TENSOR_MAP_SWIZZLE_NONE);
    for (int pass = 0; pass < 2; pass++) {
        const int c0 = pass ? -8 : 32, c1 = pass ? -2 : 26;
        const uint16_t *s = run_box(m, box_args{2, c0, c1, 0, 16 * 8 * 2});
        for (int j = 0; j < 8; j++)
            for (int i = 0; i < 16; i++) {
                const int x = c0 + i, y = c1 + j;
                const bool in = x >= 0 && x < 40 && y >= 0 && y < 30;
                const uint16_t want = in ? (uint16_t)(1000 + 100 * y + x) : 0;
                cr_expect_eq(s[j * 16 + i], want, "box (%d,%d) element (%d,%d): %u, want %u", c0,
                             c1, i, j, s[j * 16 + i], want);
            }
    }
    cr_expect_eq(qe_emu_stats("tma_box_kernel").tma_bytes, 2 * 256);
}

/* A 16 x 4 x 3 tensor (row 32 bytes, plane 160: padded); a 8 x 2 x 2 box at (8, 3, 1). */
Test(hopper, tma_3d_box) {
    uint16_t *g = dev<uint16_t>(80 * 3);
    for (int z = 0; z < 3; z++)
        for (int y = 0; y < 5; y++)
            for (int x = 0; x < 16; x++)
                g[z * 80 + y * 16 + x] = (uint16_t)(y < 4 ? 10000 + 1000 * z + 100 * y + x : 7);
    CUtensorMap m;
    const cuuint64_t dims[3] = {16, 4, 3}, strides[2] = {32, 160};
    const cuuint32_t box[3] = {8, 2, 2};
    cr_assert_eq(tensor_map_tiled(&m, CU_TENSOR_MAP_DATA_TYPE_UINT16, 3, g, dims, strides, box,
                                  CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE),
                 cudaSuccess);
    const uint16_t *s = run_box(m, box_args{3, 8, 3, 1, 8 * 2 * 2 * 2});
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 2; j++)
            for (int i = 0; i < 8; i++) {
                const int x = 8 + i, y = 3 + j, z = 1 + k;
                const uint16_t want = y < 4 ? (uint16_t)(10000 + 1000 * z + 100 * y + x) : 0;
                cr_expect_eq(s[(k * 2 + j) * 8 + i], want, "(%d,%d,%d)", i, j, k);
            }
}

Test(hopper, tma_nan_fill) {
    uint16_t *g = dev<uint16_t>(16 * 4);
    for (int i = 0; i < 64; i++)
        g[i] = bf(2.0f);
    const CUtensorMap m =
        map_2d(g, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 16, 4, 32, 8, 4, CU_TENSOR_MAP_SWIZZLE_NONE,
               CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA);
    const uint16_t *s = run_box(m, box_args{2, 12, 0, 0, 8 * 4 * 2});
    cr_expect_eq(unbf(s[0]), 2.0f);
    cr_expect_eq(s[4], 0x7FFF, "x = 16 is outside: the canonical NaN, got %#x", s[4]);
}

/* Each swizzle: element (x, y) of a box whose rows fill the span lands in row y, 16-byte chunk
 * (x / 8) ^ f(y), f(y) = y % 8 (128 B), y % 8 / 2 (64 B), y % 8 / 4 (32 B). */
Test(hopper, tma_swizzle_layouts) {
    uint16_t *g = dev<uint16_t>(64 * 16);
    for (int i = 0; i < 64 * 16; i++)
        g[i] = (uint16_t)i;
    const CUtensorMapSwizzle modes[3] = {CU_TENSOR_MAP_SWIZZLE_32B, CU_TENSOR_MAP_SWIZZLE_64B,
                                         CU_TENSOR_MAP_SWIZZLE_128B};
    for (int mi = 0; mi < 3; mi++) {
        const int span = 32 << mi, per = span / 2;
        const CUtensorMap m =
            map_2d(g, CU_TENSOR_MAP_DATA_TYPE_UINT16, 64, 16, 128, (uint32_t)per, 16, modes[mi]);
        const uint16_t *s = run_box(m, box_args{2, 0, 0, 0, span * 16});
        for (int y = 0; y < 16; y++)
            for (int x = 0; x < per; x++) {
                const int at = y * per + ((x / 8) ^ chunk_xor(span, y)) * 8 + x % 8;
                cr_expect_eq(s[at], (uint16_t)(y * 64 + x), "%d-byte swizzle: (%d,%d)", span, x, y);
            }
    }
}

/* The driver's requirements the builder enforces. */
Test(hopper, tensor_map_rejects_bad_shapes) {
    uint16_t *g = dev<uint16_t>(64 * 16);
    CUtensorMap m;
    const cuuint64_t dims[2] = {64, 16}, bad_stride[1] = {120}, stride[1] = {128};
    const cuuint32_t wide_box[2] = {128, 8}, box[2] = {64, 8};
    cr_expect_eq(tensor_map_tiled(&m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, g, dims, bad_stride, box,
                                  CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE),
                 cudaErrorInvalidValue, "a stride that is not a multiple of 16");
    cr_expect_eq(tensor_map_tiled(&m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, g, dims, stride,
                                  wide_box, CU_TENSOR_MAP_SWIZZLE_128B,
                                  CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE),
                 cudaErrorInvalidValue, "a 256-byte box row under the 128-byte swizzle");
    cr_expect_eq(tensor_map_tiled(&m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, g + 1, dims, stride, box,
                                  CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE),
                 cudaErrorInvalidValue, "a base that is not 16-byte aligned");
}

/* One thread: the copy's phase completes when it is issued (the bytes were expected), but the
 * data is not there until a wait sees that: before it the destination reads NaN. */
static __global__ void tma_early_read_kernel(const __grid_constant__ CUtensorMap map, float *out) {
    __shared__ __align__(128) uint16_t tile[8 * 4];
    __shared__ uint64_t bar;
    if (threadIdx.x != 0) return;
    mbar_init(&bar, 1);
    mbar_arrive_expect_tx(&bar, sizeof tile);
    tma_load_2d(tile, &map, 0, 0, &bar);
    out[0] = unbf(tile[9]); /* before the wait */
    mbar_wait(&bar, 0);
    out[1] = unbf(tile[9]);
}

Test(hopper, tma_destination_is_nan_until_the_wait) {
    uint16_t *g = dev<uint16_t>(8 * 4);
    for (int i = 0; i < 32; i++)
        g[i] = bf((float)i);
    const CUtensorMap m =
        map_2d(g, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 8, 4, 16, 8, 4, CU_TENSOR_MAP_SWIZZLE_NONE);
    float *out = dev<float>(2);
    QE_LAUNCH(tma_early_read_kernel, 1, 32, 0, nullptr)(m, out);
    expect_clean_run();
    cr_expect(isnan(out[0]), "read before the wait: %g, want NaN", out[0]);
    cr_expect_eq(out[1], 9.0f);
}

/* ---------------------------------------------------------------- TMA feeding wgmma */

/* The FA3 shape in small: warp 0 of a producer warpgroup (fewer registers) loads A (64 x 64) and
 * B (64 x 64, K-major) with the 128-byte swizzle into a two-stage ring, signalling a "full"
 * barrier per stage; a consumer warpgroup waits for it, runs four k16 wgmmas per stage and
 * releases the stage on an "empty" barrier. Planted bugs by `bug`: 1 no expect_tx, 2 the
 * consumer waits the wrong parity, 3 the consumer reads the tile before its wait. */
static __global__ void tma_wgmma_kernel(const __grid_constant__ CUtensorMap ma,
                                        const __grid_constant__ CUtensorMap mb, int k_tiles,
                                        int bug, float *D, float *early) {
    __shared__ __align__(1024) uint16_t sa[2][64 * 64], sb[2][64 * 64];
    __shared__ uint64_t full[2], empty[2];
    const int t = threadIdx.x, group = t / 128, ct = t % 128;
    if (t < 2) {
        mbar_init(&full[t], 1);
        mbar_init(&empty[t], 128);
        mbar_fence_init();
    }
    __syncthreads();
    if (group == 0) { /* producer */
        setmaxnreg_dec<40>();
        if (t != 0) return;
        for (int kt = 0; kt < k_tiles; kt++) {
            const int s = kt % 2, use = kt / 2;
            mbar_wait(&empty[s], (use & 1) ^ 1); /* the first use passes: "the phase before" */
            if (bug == 1)
                mbar_arrive(&full[s]);
            else
                mbar_arrive_expect_tx(&full[s], 2 * 64 * 64 * 2);
            tma_load_2d(sa[s], &ma, 64 * kt, 0, &full[s]);
            tma_load_2d(sb[s], &mb, 64 * kt, 0, &full[s]);
        }
        return;
    }
    setmaxnreg_inc<232>();
    float d[32];
    for (int i = 0; i < 32; i++)
        d[i] = 0;
    for (int kt = 0; kt < k_tiles; kt++) {
        const int s = kt % 2, use = kt / 2;
        if (bug == 3 && kt == 0) early[ct] = unbf(sa[s][ct]);
        mbar_wait(&full[s], bug == 2 ? (use & 1) ^ 1 : use & 1);
        if (bug == 2 && kt == 0) early[ct] = unbf(sa[s][ct]);
        wgmma_fence();
        for (int kk = 0; kk < 4; kk++)
            wgmma_bf16_ss<64>(d, wgmma_desc(&sa[s][kk * 16], 16, 1024, WGMMA_SWIZZLE_128B),
                              wgmma_desc(&sb[s][kk * 16], 16, 1024, WGMMA_SWIZZLE_128B), 1);
        wgmma_commit_group();
        wgmma_wait_group<0>();
        mbar_arrive(&empty[s]);
    }
    for (int i = 0; i < 32; i++)
        D[d_row(ct, i) * 64 + d_col(ct, i)] = d[i];
}

struct tma_wgmma_setup {
    std::vector<float> A, B; /* A 64 x K row-major, B stored as Bt: 64 (n) x K */
    CUtensorMap ma, mb;
    int K;
};
static tma_wgmma_setup make_tma_wgmma(int K) {
    tma_wgmma_setup w;
    w.K = K;
    uint16_t *ga = dev<uint16_t>((size_t)64 * K), *gb = dev<uint16_t>((size_t)64 * K);
    w.A.resize((size_t)64 * K), w.B.resize((size_t)64 * K);
    for (int r = 0; r < 64; r++)
        for (int k = 0; k < K; k++) {
            w.A[r * K + k] = (float)((r + 3 * k) % 5 - 2);
            w.B[r * K + k] = (float)((2 * r + k) % 7 - 3);
            ga[r * K + k] = bf(w.A[r * K + k]), gb[r * K + k] = bf(w.B[r * K + k]);
        }
    w.ma = map_2d(ga, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, (uint64_t)K, 64, (uint64_t)K * 2, 64, 64,
                  CU_TENSOR_MAP_SWIZZLE_128B);
    w.mb = map_2d(gb, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, (uint64_t)K, 64, (uint64_t)K * 2, 64, 64,
                  CU_TENSOR_MAP_SWIZZLE_128B);
    return w;
}

Test(hopper, tma_ring_feeds_wgmma) {
    tma_wgmma_setup w = make_tma_wgmma(320); /* five k tiles through two stages */
    float *D = dev<float>(64 * 64), *early = dev<float>(128);
    QE_LAUNCH(tma_wgmma_kernel, 1, 256, 0, nullptr)(w.ma, w.mb, 5, 0, D, early);
    expect_clean_run();
    int bad = 0;
    for (int m = 0; m < 64; m++)
        for (int n = 0; n < 64; n++) {
            float want = 0;
            for (int k = 0; k < w.K; k++)
                want += w.A[m * w.K + k] * w.B[n * w.K + k];
            if (D[m * 64 + n] != want && bad++ < 4)
                cr_expect_eq(D[m * 64 + n], want, "D[%d][%d]", m, n);
        }
    cr_expect_eq(bad, 0);
    const qe_emu_kernel_stats st = qe_emu_stats("tma_wgmma_kernel");
    cr_expect_eq(st.wgmmas, 5 * 4);
    cr_expect_eq(st.tma_bytes, 5 * 2 * 8192);
}

Test(hopper, missing_expect_tx_is_reported) {
    tma_wgmma_setup w = make_tma_wgmma(64);
    float *D = dev<float>(64 * 64), *early = dev<float>(128);
    QE_LAUNCH(tma_wgmma_kernel, 1, 256, 0, nullptr)(w.ma, w.mb, 1, 1, D, early);
    expect_report("never landed");
    cr_expect(isnan(D[0]), "the product of tiles that never landed: %g, want NaN", D[0]);
}

/* A wrong parity on the consumer's first wait: parity 1 on a fresh barrier passes at once (the
 * ISA's "phase before"), so a consumer that gets there before the copies reads NaN; the others
 * find phase 0 complete and then wait for phase 1, which never comes: a deadlock report. */
Test(hopper, wrong_parity_reads_nan_then_deadlocks) {
    tma_wgmma_setup w = make_tma_wgmma(64);
    float *D = dev<float>(64 * 64), *early = dev<float>(128);
    for (int i = 0; i < 128; i++)
        early[i] = 0;
    QE_LAUNCH(tma_wgmma_kernel, 1, 256, 0, nullptr)(w.ma, w.mb, 1, 2, D, early);
    expect_report("deadlocked");
    int nan_reads = 0;
    for (int i = 0; i < 128; i++)
        nan_reads += isnan(early[i]);
    cr_expect_geq(nan_reads, 1, "no consumer passed the wrong-parity wait early");
}

Test(hopper, read_before_the_barrier_is_nan) {
    tma_wgmma_setup w = make_tma_wgmma(64);
    float *D = dev<float>(64 * 64), *early = dev<float>(128);
    QE_LAUNCH(tma_wgmma_kernel, 1, 256, 0, nullptr)(w.ma, w.mb, 1, 3, D, early);
    expect_clean_run();
    for (int i = 0; i < 128; i++)
        cr_expect(isnan(early[i]), "consumer %d read %g before its wait, want NaN", i, early[i]);
}

/* A wait for a phase nobody completes: mode 0, the second of two arrivals never comes; mode 1,
 * phase 0 completes and the wait asks for parity 1, i.e. for phase 1 (one phase too far). The
 * block deadlocks and the report names the wait. */
static __global__ void mbar_deadlock_kernel(int mode, int *out) {
    __shared__ uint64_t bar;
    if (threadIdx.x == 0) mbar_init(&bar, mode ? 1 : 2);
    __syncthreads();
    if (threadIdx.x == 0) mbar_arrive(&bar);
    mbar_wait(&bar, mode ? 1 : 0);
    out[threadIdx.x] = 1;
}

Test(hopper, mbarrier_wait_that_never_completes_is_a_deadlock) {
    int *out = dev<int>(32);
    QE_LAUNCH(mbar_deadlock_kernel, 1, 32, 0, nullptr)(0, out);
    expect_report("deadlocked");
    cr_expect(strstr(qe_emu_last_error(), "mbarrier.try_wait.parity"), "%s", qe_emu_last_error());
}

Test(hopper, wait_one_phase_too_far_is_a_deadlock) {
    int *out = dev<int>(32);
    QE_LAUNCH(mbar_deadlock_kernel, 1, 32, 0, nullptr)(1, out);
    expect_report("deadlocked");
}

static __global__ void mbar_uninit_kernel(int *out) {
    __shared__ uint64_t bar;
    mbar_arrive(&bar);
    out[0] = 1;
}

Test(hopper, mbarrier_before_init_is_reported) {
    int *out = dev<int>(1);
    QE_LAUNCH(mbar_uninit_kernel, 1, 32, 0, nullptr)(out);
    expect_report("no mbarrier.init");
}

/* ---------------------------------------------------------------- named barriers */

/* Warps 0 and 1 take turns through barriers 1 and 2 (the ping-pong of two consumer warpgroups):
 * warp 1 first lets warp 0 go; each round a warp waits for its turn (bar.sync, 64 threads: its
 * own 32 and the other warp's arrival), logs its number and gives the turn away (bar.arrive).
 * Warp 0 finally takes warp 1's last arrival. Warp 2 takes no part and is never held. Without
 * the barriers the fibers would log 0 0 0 ... (each runs until it waits). */
static __global__ void named_pingpong_kernel(int rounds, int *log, int *pos, int *bystander) {
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (w == 2) {
        if (lane == 0) *bystander = 7;
        return;
    }
    if (w == 1) named_bar_arrive(1, 64);
    for (int r = 0; r < rounds; r++) {
        named_bar_sync(1 + w, 64);
        if (lane == 0) log[(*pos)++] = w;
        named_bar_arrive(2 - w, 64);
    }
    if (w == 0) named_bar_sync(1, 64);
}

Test(hopper, named_barriers_take_turns) {
    int *log = dev<int>(16), *pos = dev<int>(1), *bystander = dev<int>(1);
    *pos = 0, *bystander = 0;
    QE_LAUNCH(named_pingpong_kernel, 1, 96, 0, nullptr)(5, log, pos, bystander);
    expect_clean_run();
    cr_assert_eq(*pos, 10);
    for (int i = 0; i < 10; i++)
        cr_expect_eq(log[i], i % 2, "turn %d went to warp %d", i, log[i]);
    cr_expect_eq(*bystander, 7);
}

/* Planted misuses in a block of four warps, one per mode: 0 a thread count that is not whole warps,
 * 1 two warps naming different counts, 2 a barrier only one warp reaches (a hang), 3 half of two
 * warps completing a 32-thread barrier (the ISA counts each warp as 32), 4 barrier 16, 5 barrier 0,
 * 6 an arrival nobody completes before the block ends, 7 a thread arriving twice in one phase. */
static __global__ void named_bug_kernel(int mode, int *out) {
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    switch (mode) {
    case 0:
        named_bar_sync(1, 48);
        break;
    case 1:
        named_bar_sync(1, w == 0 ? 64 : 96);
        break;
    case 2:
        if (w == 0) named_bar_sync(1, 64);
        break;
    case 3:
        if (lane < 16) named_bar_sync(1, 32);
        break;
    case 4:
        named_bar_sync(16, 64);
        break;
    case 5:
        named_bar_sync(0, 64);
        break;
    case 6:
        if (w == 0) named_bar_arrive(1, 64);
        break;
    case 7:
        if (w == 0) named_bar_arrive(1, 96);
        named_bar_sync(1, 96);
        break;
    }
    out[threadIdx.x] = 1;
}

static void expect_named_report(int mode, const char *what) {
    int *out = dev<int>(128);
    QE_LAUNCH(named_bug_kernel, 1, 128, 0, nullptr)(mode, out);
    expect_report(what);
}

Test(hopper, named_barrier_thread_count_not_whole_warps) {
    expect_named_report(0, "multiple of the warp size");
}
Test(hopper, named_barrier_counts_disagree) {
    expect_named_report(1, "disagree on the thread count");
}
Test(hopper, named_barrier_never_completed_is_a_deadlock) {
    expect_named_report(2, "deadlocked");
    cr_expect(strstr(qe_emu_last_error(), "bar.sync (named barrier)"), "%s", qe_emu_last_error());
}
Test(hopper, named_barrier_with_part_of_a_warp) {
    expect_named_report(3, "16 of the 32 lanes of warp");
}
Test(hopper, named_barrier_id_out_of_range) {
    expect_named_report(4, "the barrier is 0..15");
}
Test(hopper, named_barrier_zero_is_syncthreads) {
    expect_named_report(5, "__syncthreads's");
}
Test(hopper, named_barrier_left_incomplete) {
    expect_named_report(6, "named barrier 1 incomplete: 32 of 64");
}
Test(hopper, named_barrier_double_arrival) {
    expect_named_report(7, "arrives twice in one phase");
}
