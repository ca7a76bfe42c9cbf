/* emu_ptx.cc — the PTX instructions behind kernels/ptx.cuh, for the kernel emulator, written from
 * the PTX ISA's descriptions (section "Data Movement": cp.async, cp.async.commit_group,
 * cp.async.wait_group, ldmatrix; section "Warp-level Matrix Multiply-Accumulate": the fragment
 * layouts of mma.m16n8k16 for .bf16 inputs and .f32 accumulators).
 *
 * cp.async is deferred: the destination is poisoned (0xFF: NaN as bf16 and fp32) when the copy is
 * issued and written only by the wait_group that covers its group, so a read that a missing wait
 * or barrier leaves unordered sees NaN. ldmatrix and mma are warp collectives: the last lane to
 * arrive reads every lane's operands and writes every lane's result. */
#include <stdio.h>
#include <string.h>

#include "emu_internal.h"

namespace emu {

/* ================================================================ cp.async */

void cp_async(void *dst, const void *src, int cp_size, int src_bytes) {
    const void *pc = __builtin_return_address(0);
    if (!in_window(dst, (size_t)cp_size))
        fail(pc, "cp.async destination %p is not in shared memory%s", dst,
             past_dynamic_bytes(dst) ? " (past the launch's dynamic shared memory)" : "");
    if ((uintptr_t)dst % (uintptr_t)cp_size)
        fail(pc, "cp.async destination %p is not aligned to its %d bytes", dst, cp_size);
    if (src_bytes < 0 || src_bytes > cp_size)
        fail(pc, "cp.async src-size %d outside [0, %d]", src_bytes, cp_size);
    if (src_bytes > 0 && (uintptr_t)src % (uintptr_t)cp_size)
        fail(pc, "cp.async source %p is not aligned to %d bytes", src, cp_size);
    if (src_bytes > 0) check_global_access(src, false, "cp.async", pc);
    race_check(dst, (size_t)cp_size, true, cur->linear, pc);
    memset(dst, 0xFF, (size_t)cp_size);
    self_state().copies.push_back(pending_copy{dst, src, cp_size, src_bytes, -1, pc});
    kernel_stats().cp_async_bytes += cp_size;
}

/* Every copy issued since the last commit forms the next group (an empty group when none). */
void cp_async_commit() {
    thread_state &st = self_state();
    for (pending_copy &c : st.copies)
        if (c.group < 0) c.group = st.groups_committed;
    st.groups_committed++;
}

/* Completes every committed group but the newest `newest_pending` ones. */
void cp_async_wait(int newest_pending) {
    thread_state &st = self_state();
    const long last_done = st.groups_committed - 1 - newest_pending;
    size_t kept = 0;
    for (size_t i = 0; i < st.copies.size(); i++) {
        pending_copy &c = st.copies[i];
        if (c.group >= 0 && c.group <= last_done) {
            race_check(c.dst, (size_t)c.cp_size, true, cur->linear, c.pc);
            memcpy(c.dst, c.src, (size_t)c.src_bytes);
            memset((char *)c.dst + c.src_bytes, 0, (size_t)(c.cp_size - c.src_bytes));
        } else {
            st.copies[kept++] = c;
        }
    }
    st.copies.resize(kept);
}

/* ================================================================ ldmatrix */

/* ldmatrix.sync.aligned.m8n8.xN[.trans].shared.b16: lanes 8i..8i+7 give the addresses of the 8
 * rows (16 bytes each) of matrix i. Without .trans, lane l receives in register i the elements
 * (row l/4, columns 2(l%4) and 2(l%4)+1) of matrix i; with .trans, the elements (rows 2(l%4) and
 * 2(l%4)+1, column l/4), i.e. those of the transposed matrix. The lower-numbered element is in
 * the low half of the register. */
static void ldmatrix_compute(lane_slot *const *lanes, int n, bool trans) {
    if (n != 32) fail(lanes[0]->pc, "ldmatrix in a warp of %d lanes (needs 32)", n);
    const int num = (int)lanes[0]->in[0];
    for (int l = 0; l < 32; l++)
        if ((int)lanes[l]->in[0] != num || (bool)lanes[l]->in[1] != trans)
            fail(lanes[l]->pc, "ldmatrix: lanes disagree on .num/.trans (lane %d)", l);
    for (int m = 0; m < num; m++) {
        uint16_t e[8][8];
        uint32_t words[8]; /* first 4-byte word of each row, in the window */
        for (int r = 0; r < 8; r++) {
            const lane_slot &src = *lanes[8 * m + r];
            const char *row = (const char *)src.addr;
            if (!in_window(row, 16))
                fail(src.pc, "ldmatrix row address %p (lane %d) is not in shared memory", row,
                     8 * m + r);
            if ((uintptr_t)row % 16)
                fail(src.pc, "ldmatrix row address %p (lane %d) is not 16-byte aligned", row,
                     8 * m + r);
            race_check(row, 16, false, src.tid, src.pc);
            memcpy(e[r], row, 16);
            words[r] = (uint32_t)((row - window_base()) / 4);
        }
        /* bank conflicts: the 8 rows are one shared-memory access; a 16-byte aligned row covers
         * one group of 4 banks (4-byte words), and a group serves one distinct row per wavefront
         * (the same row twice is a broadcast) */
        int per_group[8] = {0}, wavefronts = 1;
        for (int r = 0; r < 8; r++) {
            bool repeat = false;
            for (int q = 0; q < r; q++)
                repeat |= words[q] == words[r];
            if (!repeat && ++per_group[words[r] % 32 / 4] > wavefronts)
                wavefronts = per_group[words[r] % 32 / 4];
        }
        kernel_stats().ldmatrix_phases++;
        kernel_stats().ldmatrix_wavefronts += wavefronts;
        for (int l = 0; l < 32; l++) {
            const int a = l / 4, b = 2 * (l % 4);
            const uint16_t lo = trans ? e[b][a] : e[a][b];
            const uint16_t hi = trans ? e[b + 1][a] : e[a][b + 1];
            lanes[l]->out[m] = (uint32_t)lo | (uint32_t)hi << 16;
        }
    }
}
static void ldmatrix_plain(lane_slot *const *lanes, int n) {
    ldmatrix_compute(lanes, n, false);
}
static void ldmatrix_trans(lane_slot *const *lanes, int n) {
    ldmatrix_compute(lanes, n, true);
}

void ldmatrix(uint32_t *out, int num, bool trans, const void *p) {
    lane_slot &s = self_state().slot;
    s.addr = p, s.in[0] = (uint32_t)num, s.in[1] = trans;
    collective(trans ? "ldmatrix.trans" : "ldmatrix", trans ? ldmatrix_trans : ldmatrix_plain,
               __builtin_return_address(0));
    for (int i = 0; i < num; i++)
        out[i] = s.out[i];
}

/* ================================================================ mma */

static float bf16_bits_to_f32(uint32_t h) {
    const uint32_t u = (h & 0xFFFFu) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32: with groupID g = lane/4 and
 * threadID_in_group t = lane%4,
 *   A (16x16, four .b32 registers of two bf16): a0 (row g, cols 2t, 2t+1), a1 (row g+8, same
 *   cols), a2 (row g, cols 2t+8, 2t+9), a3 (row g+8, cols 2t+8, 2t+9);
 *   B (16x8, two registers): b0 (rows 2t, 2t+1, col g), b1 (rows 2t+8, 2t+9, col g);
 *   C and D (16x8 f32): c0 (row g, col 2t), c1 (row g, col 2t+1), c2 (row g+8, col 2t),
 *   c3 (row g+8, col 2t+1).
 * The order of the fp32 additions is the emulator's choice (the ISA leaves it open). */
static void mma_compute(lane_slot *const *lanes, int n) {
    if (n != 32) fail(lanes[0]->pc, "mma in a warp of %d lanes (needs 32)", n);
    float A[16][16], B[16][8], C[16][8];
    for (int l = 0; l < 32; l++) {
        const uint32_t *in = lanes[l]->in;
        const int g = l / 4, t = l % 4;
        for (int h = 0; h < 2; h++) {
            A[g][2 * t + h] = bf16_bits_to_f32(in[0] >> (16 * h));
            A[g + 8][2 * t + h] = bf16_bits_to_f32(in[1] >> (16 * h));
            A[g][2 * t + 8 + h] = bf16_bits_to_f32(in[2] >> (16 * h));
            A[g + 8][2 * t + 8 + h] = bf16_bits_to_f32(in[3] >> (16 * h));
            B[2 * t + h][g] = bf16_bits_to_f32(in[4] >> (16 * h));
            B[2 * t + 8 + h][g] = bf16_bits_to_f32(in[5] >> (16 * h));
        }
        float c[4];
        memcpy(c, &in[6], sizeof c);
        C[g][2 * t] = c[0], C[g][2 * t + 1] = c[1], C[g + 8][2 * t] = c[2];
        C[g + 8][2 * t + 1] = c[3];
    }
    /* products of bf16 values are exact in fp32; they are summed in k order, then added to C
     * (GCC vector types: four columns per operation) */
    typedef float v4 __attribute__((vector_size(16)));
    float D[16][8];
    for (int i = 0; i < 16; i++) {
        v4 lo = {0, 0, 0, 0}, hi = {0, 0, 0, 0};
        for (int k = 0; k < 16; k++) {
            v4 b_lo, b_hi;
            memcpy(&b_lo, &B[k][0], 16), memcpy(&b_hi, &B[k][4], 16);
            lo += A[i][k] * b_lo, hi += A[i][k] * b_hi;
        }
        v4 c_lo, c_hi;
        memcpy(&c_lo, &C[i][0], 16), memcpy(&c_hi, &C[i][4], 16);
        lo += c_lo, hi += c_hi;
        memcpy(&D[i][0], &lo, 16), memcpy(&D[i][4], &hi, 16);
    }
    for (int l = 0; l < 32; l++) {
        const int g = l / 4, t = l % 4;
        const float d[4] = {D[g][2 * t], D[g][2 * t + 1], D[g + 8][2 * t], D[g + 8][2 * t + 1]};
        memcpy(lanes[l]->out, d, sizeof d);
    }
}

void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    lane_slot &s = self_state().slot;
    memcpy(&s.in[0], a, 16);
    s.in[4] = b0, s.in[5] = b1;
    memcpy(&s.in[6], d, 16);
    collective("mma.m16n8k16", mma_compute, __builtin_return_address(0));
    memcpy(d, s.out, 16);
}

} // namespace emu
