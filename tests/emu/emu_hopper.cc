/* emu_hopper.cc — the Hopper (sm_90a) instructions behind kernels/ptx.cuh, for the kernel
 * emulator, written from the PTX ISA's text: "Asynchronous Warpgroup Level Matrix Multiply-
 * Accumulate" (wgmma.mma_async .m64nNk16 .f32.bf16.bf16, its shared-memory matrix descriptor,
 * the canonical layouts and swizzle modes, the register fragments of A and D, wgmma.fence,
 * commit_group, wait_group), "mbarrier" (init, arrive, expect-tx, complete-tx, try_wait.parity,
 * phases) and cp.async.bulk.tensor (tile mode, global -> shared::cluster with
 * mbarrier::complete_tx::bytes; cluster size 1), with the tensor map fields of the driver's
 * cuTensorMapEncodeTiled.
 *
 * Asynchrony is made visible, as for cp.async: a wgmma reads its operands when issued, sets its
 * accumulator registers to NaN and writes the results only at the wait_group that covers it, and
 * checks at that point that its shared-memory operands did not change meanwhile. A bulk tensor
 * copy poisons its destination when issued and lands only once its mbarrier's phase has completed
 * (every arrival in, as many bytes expected as were copied) and a wait has seen that: so a read
 * before the wait, or after a wait on the wrong parity, reads NaN; a missing or short expect_tx
 * leaves the data NaN and is reported when the block ends; a wait on a phase that never
 * completes is a deadlock report.
 *
 * Named barriers (bar.sync / bar.arrive a, b; "Parallel Synchronization and Communication
 * Instructions: bar, barrier"), which warp-specialised kernels use to order warpgroups: barrier a
 * completes when b threads have arrived, b a multiple of the warp size; bar.sync waits for the
 * completion, bar.arrive only counts. The ISA counts a warp's arrival as the warp size whatever
 * its active threads, so a warp taking part with some of its lanes is reported here. */
#include <stdio.h>
#include <string.h>

#include <cuda.h> /* CUtensorMap, CUtensorMapDataType, the swizzle and OOB-fill enums */

#include <map>

#include "emu_internal.h"

namespace emu {

static float bf16_to_f32(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* The swizzle modes permute the 16-byte chunks of a span of `bytes` (32, 64, 128) by the
 * address: bits [4, 4+log2(bytes/16)) are XORed with the same number of bits from bit 7 up. So
 * with 128 B, chunk c of a 128-byte row at a 1024-aligned base + 128 r lands at chunk c ^ (r % 8);
 * with 64 B (rows of 64 B), at c ^ (r / 2 % 4); with 32 B, at c ^ (r / 4 % 2). The pattern
 * repeats every 8 x bytes, which is why an operand starts on such a boundary. */
static uint32_t swizzle(uint32_t addr, int bytes) {
    const uint32_t mask = bytes == 128 ? 7u : bytes == 64 ? 3u : bytes == 32 ? 1u : 0u;
    return addr ^ (((addr >> 7) & mask) << 4);
}

/* ================================================================ matrix descriptors */

/* The 64-bit shared-memory matrix descriptor: bits 0-13 start address >> 4 (with the emulator's
 * two more address bits in the reserved 14-15: kernels/ptx.cuh wgmma_desc), 16-29 leading
 * dimension byte offset >> 4, 32-45 stride dimension byte offset >> 4, 49-51 matrix base offset,
 * 62-63 swizzle mode (0 none, 1 128 B, 2 64 B, 3 32 B). */
struct smem_desc {
    uint32_t start, lbo, sbo;
    int base_offset, swizzle_bytes;
};
static smem_desc decode(uint64_t d) {
    static const int span[4] = {0, 128, 64, 32};
    return smem_desc{(uint32_t)(d & 0xFFFF) << 4, (uint32_t)((d >> 16) & 0x3FFF) << 4,
                     (uint32_t)((d >> 32) & 0x3FFF) << 4, (int)((d >> 49) & 7),
                     span[(d >> 62) & 3]};
}

/* The byte address of bf16 element (mn, k) of an operand (mn: a row of A or a column of B), by
 * the ISA's canonical layouts, T being the 8 elements of 16 bytes:
 *   K-major, no swizzle: 8x8 core matrices of 8 rows of 16 bytes (128 contiguous bytes); the
 *     next 8 k at LBO, the next 8 mn at SBO;
 *   K-major, swizzled (span S): rows of S bytes (k contiguous: S/2 of them), 8 rows an atom,
 *     the next 8 mn at SBO; LBO unused (k16 = 32 bytes fits in every span);
 *   MN-major, no swizzle: core matrices of 8 k-rows of 16 bytes of 8 contiguous mn; the next 8
 *     mn at SBO, the next 8 k at LBO;
 *   MN-major, swizzled: rows of S bytes of S/2 contiguous mn, one per k; the next S/2 mn at LBO,
 *     the next 8 k at SBO.
 * The swizzle then applies to the whole address. */
static uint32_t element_addr(const smem_desc &d, bool mn_major, int mn, int k) {
    uint32_t a;
    const int s = d.swizzle_bytes;
    if (!mn_major && s == 0)
        a = d.start + (uint32_t)(mn / 8) * d.sbo + (uint32_t)(mn % 8) * 16 +
            (uint32_t)(k / 8) * d.lbo + (uint32_t)(k % 8) * 2;
    else if (!mn_major)
        a = d.start + (uint32_t)(mn / 8) * d.sbo + (uint32_t)(mn % 8 * s) + (uint32_t)k * 2;
    else if (s == 0)
        a = d.start + (uint32_t)(mn / 8) * d.sbo + (uint32_t)(mn % 8) * 2 +
            (uint32_t)(k / 8) * d.lbo + (uint32_t)(k % 8) * 16;
    else
        a = d.start + (uint32_t)(mn / (s / 2)) * d.lbo + (uint32_t)(mn % (s / 2)) * 2 +
            (uint32_t)(k / 8) * d.sbo + (uint32_t)(k % 8 * s);
    return swizzle(a, s);
}

uint32_t wgmma_element_offset(uint64_t desc, bool mn_major, int mn, int k) {
    return element_addr(decode(desc), mn_major, mn, k);
}

/* ================================================================ wgmma */

/* One wgmma of a warpgroup: the 16-byte chunks of shared memory it read, checked again when the
 * first thread's wait_group covers it. */
struct smem_chunk {
    uint32_t off;
    uint8_t bytes[16];
};
struct wgmma_op {
    std::vector<smem_chunk> read;
    const void *pc;
    bool checked;
};

enum { WG_RS = 1, WG_TRANS_A = 2, WG_TRANS_B = 4, WG_ACCUMULATE = 8, WG_FENCED = 16 };

/* What accumulators hold in flight: a signalling NaN. Reading it gives NaN; any arithmetic on it
 * (a rescale, an add) quiets it, and a store replaces it, so the wait can tell that a thread
 * touched its registers in flight. */
static const uint32_t ACC_POISON = 0xFFBFFFFFu;

/* Reads a descriptor operand of `extent` (mn) x 16 (k) bf16 elements into out(mn, k) =
 * out[mn * s_mn + k * s_k], 16 bytes at a time: 8 elements contiguous along k (K-major) or mn
 * (MN-major), since every layout keeps a 16-byte chunk whole and the swizzle moves whole chunks.
 * Each chunk must lie in the window; the reads are race-checked as the thread by's. */
static void read_operand(wgmma_op &op, const smem_desc &d, bool mn_major, int extent,
                         const lane_slot &by, const char *which, float *out, int s_mn, int s_k) {
    for (int mn = 0; mn < extent; mn += mn_major ? 8 : 1)
        for (int k = 0; k < 16; k += mn_major ? 1 : 8) {
            const uint32_t off = element_addr(d, mn_major, mn, k);
            if (!in_window(window_base() + off, 16))
                fail(by.pc,
                     "wgmma %s operand: elements (%d, %d).. at shared offset 0x%x are outside "
                     "shared memory (descriptor start 0x%x, LBO %u, SBO %u, swizzle %d B)",
                     which, mn, k, off, d.start, d.lbo, d.sbo, d.swizzle_bytes);
            race_check(window_base() + off, 16, false, by.tid, by.pc);
            smem_chunk c;
            c.off = off;
            memcpy(c.bytes, window_base() + off, 16);
            op.read.push_back(c);
            for (int e = 0; e < 8; e++) {
                uint16_t v;
                memcpy(&v, c.bytes + 2 * e, 2);
                const int m_e = mn + (mn_major ? e : 0), k_e = k + (mn_major ? 0 : e);
                out[m_e * s_mn + k_e * s_k] = bf16_to_f32(v);
            }
        }
}

/* The A fragment of the RS form and the D fragment, by the ISA's figures for .m64nNk16: warp w
 * of the warpgroup holds rows 16w..16w+15; with g = lane / 4 and t = lane % 4,
 *   A (bf16, four .b32 registers): element i (register i/2, half i%2) is row 16w + g +
 *     8 ((i/2) % 2), column 2t + i%2 + 8 (i/4) — the mma.m16n8k16 A layout;
 *   D (f32, N/2 registers): register i is row 16w + g + 8 ((i/2) % 2), column 8 (i/4) + 2t +
 *     i%2. */
static int frag_row(int thread, int i) {
    const int w = thread / 32, g = thread % 32 / 4;
    return 16 * w + g + 8 * (i / 2 % 2);
}
static int a_col(int thread, int i) {
    return 2 * (thread % 4) + i % 2 + 8 * (i / 4);
}
static int d_col(int thread, int i) {
    return 8 * (i / 4) + 2 * (thread % 4) + i % 2;
}

static void wgmma_compute(lane_slot *const *lanes, int n_threads) {
    const lane_slot &s0 = *lanes[0];
    const int n = (int)s0.in[8];
    const uint32_t flags = s0.in[9] & ~(uint32_t)WG_FENCED;
    for (int l = 0; l < n_threads; l++) {
        const lane_slot &s = *lanes[l];
        if ((s.in[9] & WG_FENCED) == 0)
            fail(s.pc,
                 "wgmma.mma_async by thread %d without a wgmma.fence since its last "
                 "wgmma.wait_group (the ISA requires the fence before a wgmma that touches "
                 "registers the thread accessed)",
                 s.tid);
        if (memcmp(s.in, s0.in, 4 * sizeof(uint32_t)) || s.in[8] != s0.in[8] ||
            (s.in[9] & ~(uint32_t)WG_FENCED) != flags)
            fail(s.pc,
                 "wgmma.mma_async: thread %d and thread %d disagree on the descriptors, N "
                 "or the form",
                 s.tid, s0.tid);
    }
    uint64_t desc_a, desc_b;
    memcpy(&desc_a, &s0.in[0], 8), memcpy(&desc_b, &s0.in[2], 8);
    const smem_desc da = decode(desc_a), db = decode(desc_b);
    const lane_slot &last = *lanes[n_threads - 1];
    for (const smem_desc *d : {&da, &db})
        if (d->base_offset != 0)
            fail(last.pc, "wgmma descriptor with matrix base offset %d: not emulated",
                 d->base_offset);
    auto op = std::make_shared<wgmma_op>();
    op->pc = last.pc, op->checked = false;
    static float A[64][16], B[16][256], AB[64][256];
    if (flags & WG_RS) {
        for (int l = 0; l < 128; l++)
            for (int i = 0; i < 8; i++)
                A[frag_row(l, i)][a_col(l, i)] =
                    bf16_to_f32((uint16_t)(lanes[l]->in[4 + i / 2] >> (16 * (i % 2))));
    } else {
        read_operand(*op, da, flags & WG_TRANS_A, 64, last, "A", &A[0][0], 16, 1);
    }
    read_operand(*op, db, flags & WG_TRANS_B, n, last, "B", &B[0][0], 1, 256);
    /* products of bf16 values are exact in fp32; summed in k order (row by row, so the n loop
     * vectorises), then added to C */
    for (int m = 0; m < 64; m++) {
        for (int j = 0; j < n; j++)
            AB[m][j] = 0;
        for (int k = 0; k < 16; k++)
            for (int j = 0; j < n; j++)
                AB[m][j] += A[m][k] * B[k][j];
    }
    for (int l = 0; l < 128; l++) {
        thread_state &st = *lanes[l]->owner;
        float *d = (float *)lanes[l]->addr;
        /* accumulator accesses of wgmmas of one shape are ordered: C is the in-flight result */
        const float *c = d;
        for (const pending_wgmma &p : st.wgmmas) {
            if (p.d == d && p.n == n / 2)
                c = p.result;
            else if (p.d < d + n / 2 && d < p.d + p.n)
                fail(lanes[l]->pc,
                     "wgmma.mma_async: thread %d's accumulators overlap those of a wgmma in "
                     "flight with another shape or start",
                     lanes[l]->tid);
        }
        pending_wgmma p;
        p.d = d, p.n = n / 2, p.group = -1, p.op = op;
        for (int i = 0; i < n / 2; i++) {
            const float ab = AB[frag_row(l, i)][d_col(l, i)];
            p.result[i] = (flags & WG_ACCUMULATE) ? c[i] + ab : ab;
        }
        st.wgmmas.push_back(p);
        for (int i = 0; i < n / 2; i++) /* NaN until the wait_group */
            memcpy(&d[i], &ACC_POISON, 4);
    }
    kernel_stats().wgmmas++;
}

void wgmma_bf16(float *d, int n, uint64_t desc_a, const uint32_t *a_regs, uint64_t desc_b,
                bool trans_a, bool trans_b, bool accumulate) {
    const void *pc = __builtin_return_address(0);
    if (n < 8 || n > 256 || n % 8)
        fail(pc, "wgmma.mma_async .m64n%dk16: N must be a multiple of 8 in [8, 256]", n);
    thread_state &st = self_state();
    lane_slot &s = st.slot;
    memcpy(&s.in[0], &desc_a, 8), memcpy(&s.in[2], &desc_b, 8);
    for (int i = 0; i < 4; i++)
        s.in[4 + i] = a_regs ? a_regs[i] : 0;
    s.in[8] = (uint32_t)n;
    s.in[9] = (a_regs ? WG_RS : 0) | (trans_a ? WG_TRANS_A : 0) | (trans_b ? WG_TRANS_B : 0) |
              (accumulate ? WG_ACCUMULATE : 0) | (st.wgmma_fenced ? WG_FENCED : 0);
    s.addr = d;
    warpgroup_collective(a_regs ? "wgmma.mma_async (RS)" : "wgmma.mma_async (SS)", wgmma_compute,
                         pc);
}

void wgmma_fence() {
    self_state().wgmma_fenced = true;
}

/* Every wgmma issued since the last commit forms the next wgmma-group of this thread. */
void wgmma_commit_group() {
    thread_state &st = self_state();
    for (pending_wgmma &p : st.wgmmas)
        if (p.group < 0) p.group = st.wgmma_groups;
    st.wgmma_groups++;
}

/* Completes every committed group but the newest `newest_pending` ones: their results reach the
 * registers, after a check that the shared memory they read is still what they read. */
void wgmma_wait_group(int newest_pending) {
    thread_state &st = self_state();
    const long last_done = st.wgmma_groups - 1 - newest_pending;
    size_t kept = 0;
    for (size_t i = 0; i < st.wgmmas.size(); i++) {
        pending_wgmma &p = st.wgmmas[i];
        if (p.group < 0 || p.group > last_done) {
            st.wgmmas[kept++] = p;
            continue;
        }
        wgmma_op &op = *p.op;
        for (size_t e = 0; e < op.read.size() && !op.checked; e++) {
            const smem_chunk &c = op.read[e];
            const uint8_t *now = (const uint8_t *)window_base() + c.off;
            for (int b = 0; b < 16; b++)
                if (now[b] != c.bytes[b])
                    fail(__builtin_return_address(0),
                         "shared byte +0x%x, an operand of the wgmma.mma_async at %s, changed "
                         "before the wgmma.wait_group that completes it (0x%02x -> 0x%02x)",
                         c.off + b, where(op.pc), c.bytes[b], now[b]);
        }
        op.checked = true;
        /* a later wgmma on the same accumulators (chained) carries this result on: it lands */
        bool superseded = false;
        for (size_t j = i + 1; j < st.wgmmas.size(); j++)
            superseded |= st.wgmmas[j].d == p.d;
        if (superseded) continue;
        for (int r = 0; r < p.n; r++) { /* still the poison the issue left: nobody wrote them */
            uint32_t bits;
            memcpy(&bits, &p.d[r], 4);
            if (bits != ACC_POISON)
                fail(__builtin_return_address(0),
                     "accumulator register %d was written while the wgmma.mma_async at %s was in "
                     "flight (before the wgmma.wait_group that completes it)",
                     r, where(op.pc));
        }
        memcpy(p.d, p.result, (size_t)p.n * sizeof(float));
    }
    st.wgmmas.resize(kept);
    st.wgmma_fenced = false; /* the registers are the thread's again */
}

/* ================================================================ mbarrier */

/* Bytes a bulk copy wrote, held back until the phase they were counted in completes. */
struct landing {
    uint32_t off;
    std::vector<uint8_t> bytes;
    const void *pc;
};
struct mbarrier {
    uint32_t expected, pending;    /* arrivals per phase, arrivals still due in this one */
    long tx;                       /* tx-count: bytes expected minus bytes completed */
    uint32_t phase;                /* phases completed; its low bit is the current phase's parity */
    std::vector<landing> landings; /* counted in the current phase */
    std::vector<landing> completed; /* of a completed phase, until a wait observes it */
};
static std::map<uint32_t, mbarrier> barriers; /* by shared offset; one block's */

/* ================================================================ named barriers */

struct named_barrier {
    int expected;             /* b of the phase's first arrival (0: no arrival yet) */
    int arrived;              /* threads arrived in this phase */
    long generation;          /* completed phases: a bar.sync waits for it to change */
    std::vector<bool> in;     /* by thread: arrived in this phase */
    std::vector<int> by_warp; /* lanes of each warp arrived in this phase */
    const void *first_pc;     /* the phase's first arrival (reports) */
};
static named_barrier named[16];

static void named_reset() {
    for (named_barrier &b : named) {
        b.expected = 0, b.arrived = 0, b.generation = 0, b.first_pc = nullptr;
        b.in.assign(1024, false), b.by_warp.assign(32, 0);
    }
}

void hopper_block_starts() {
    barriers.clear();
    named_reset();
}

/* The arrival of the current thread at barrier id, counting b threads; completes the phase when
 * it is the b-th. Returns the barrier (its generation before this arrival in *gen). */
static named_barrier &named_arrive(int id, int n_threads, const char *what, const void *pc,
                                   long *gen) {
    const int block_threads = (int)(block_dim.x * block_dim.y * block_dim.z);
    if (id < 0 || id > 15) fail(pc, "%s %d: the barrier is 0..15", what, id);
    if (id == 0)
        fail(pc,
             "%s 0: barrier 0 is __syncthreads's (the emulator keeps the two apart; use "
             "1..15)",
             what);
    if (n_threads <= 0 || n_threads % 32 || n_threads > block_threads)
        fail(pc,
             "%s %d, %d: the thread count must be a multiple of the warp size (32), at most "
             "the block's %d threads",
             what, id, n_threads, block_threads);
    named_barrier &b = named[id];
    const int t = cur->linear;
    if (b.arrived == 0) {
        b.expected = n_threads, b.first_pc = pc;
    } else if (b.expected != n_threads) {
        fail(pc,
             "%s %d, %d: threads disagree on the thread count (%d thread(s) arrived at %s for %d)",
             what, id, n_threads, b.arrived, where(b.first_pc), b.expected);
    }
    if (b.in[t])
        fail(pc,
             "%s %d: thread %d arrives twice in one phase (the barrier has %d of %d); the ISA "
             "counts whole warps, so the phase would complete early",
             what, id, t, b.arrived, b.expected);
    b.in[t] = true;
    b.by_warp[cur->warp]++;
    *gen = b.generation;
    if (++b.arrived < b.expected) return b;
    for (int w = 0; w < 32; w++) /* complete: every warp that took part took part whole */
        if (b.by_warp[w] != 0 && b.by_warp[w] != 32 && w * 32 + 32 <= block_threads)
            fail(pc,
                 "%s %d, %d completed with %d of the 32 lanes of warp %d: the ISA counts a "
                 "warp's arrival as 32 whatever its active lanes",
                 what, id, n_threads, b.by_warp[w], w);
    b.arrived = 0, b.expected = 0;
    b.in.assign(1024, false), b.by_warp.assign(32, 0);
    b.generation++;
    wake_all(&b);
    return b;
}

void named_barrier_sync(int id, int n_threads) {
    const void *pc = __builtin_return_address(0);
    long gen;
    named_barrier &b = named_arrive(id, n_threads, "bar.sync", pc, &gen);
    while (b.generation == gen)
        sleep_on(&b, "bar.sync (named barrier)", pc);
}

void named_barrier_arrive(int id, int n_threads) {
    long gen;
    named_arrive(id, n_threads, "bar.arrive", __builtin_return_address(0), &gen);
}

void hopper_thread_exits() {
    thread_state &st = self_state();
    if (!st.wgmmas.empty())
        fail(st.wgmmas[0].op->pc,
             "thread exited with %zu wgmma.mma_async op(s) in flight: no wgmma.wait_group "
             "covered them",
             st.wgmmas.size());
}

int hopper_block_ends() {
    for (int id = 1; id < 16; id++) /* stricter than the ISA: a protocol that left one open */
        if (named[id].arrived) {
            report(named[id].first_pc,
                   "the block ended with named barrier %d incomplete: %d of %d thread(s) "
                   "arrived (an unmatched bar.arrive or bar.sync?)",
                   id, named[id].arrived, named[id].expected);
            return -1;
        }
    for (auto &kv : barriers)
        if (!kv.second.landings.empty()) {
            const landing &l = kv.second.landings[0];
            report(l.pc,
                   "the block ended with a cp.async.bulk.tensor of %zu bytes that never "
                   "landed: the phase of its mbarrier (shared +0x%x) never completed (tx-count "
                   "%ld, %u arrival(s) pending): a missing or short expect_tx?",
                   l.bytes.size(), kv.first, kv.second.tx, kv.second.pending);
            return -1;
        }
    return 0;
}

static uint32_t bar_offset(const void *bar, const char *what, const void *pc) {
    if (!in_window(bar, 8)) fail(pc, "%s: %p is not a shared-memory address", what, bar);
    if ((uintptr_t)bar % 8) fail(pc, "%s: mbarrier %p is not 8-byte aligned", what, bar);
    return (uint32_t)((const char *)bar - window_base());
}

static mbarrier &find(const void *bar, const char *what, const void *pc) {
    const uint32_t off = bar_offset(bar, what, pc);
    auto it = barriers.find(off);
    if (it == barriers.end())
        fail(pc, "%s on shared +0x%x, which no mbarrier.init of this block initialised", what, off);
    return it->second;
}

/* A phase completes when its arrivals are all in and its tx-count is zero: its copies become
 * complete, the next phase begins with the full arrival count, and the waiters wake. */
static void maybe_complete(mbarrier &b) {
    if (b.pending != 0 || b.tx != 0) return;
    for (landing &l : b.landings)
        b.completed.push_back(std::move(l));
    b.landings.clear();
    b.phase++;
    b.pending = b.expected;
    wake_all(&b);
}

void mbar_init(void *bar, uint32_t count) {
    const void *pc = __builtin_return_address(0);
    const uint32_t off = bar_offset(bar, "mbarrier.init", pc);
    if (count < 1 || count > (1u << 20) - 1)
        fail(pc, "mbarrier.init count %u outside [1, 2^20 - 1]", count);
    mbarrier &b = barriers[off];
    b.completed.clear(); /* never observed: no wait can see them now */
    if (!b.landings.empty())
        fail(pc, "mbarrier.init on shared +0x%x while a bulk copy counted on it is in flight", off);
    b.expected = b.pending = count, b.tx = 0, b.phase = 0;
}

void mbar_expect_tx(void *bar, uint32_t bytes) {
    const void *pc = __builtin_return_address(0);
    mbarrier &b = find(bar, "mbarrier expect_tx", pc);
    b.tx += bytes;
    if (b.tx > (1l << 20) - 1)
        fail(pc, "mbarrier expect_tx: tx-count %ld over the ISA's 2^20 - 1", b.tx);
}

void mbar_arrive(void *bar) {
    const void *pc = __builtin_return_address(0);
    mbarrier &b = find(bar, "mbarrier.arrive", pc);
    if (b.pending == 0)
        fail(pc,
             "mbarrier.arrive on a phase whose %u arrivals are all in (it waits for %ld tx "
             "bytes): more arrivals than mbarrier.init's count",
             b.expected, b.tx);
    b.pending--;
    maybe_complete(b);
}

/* A wait that saw a completed phase makes that phase's copies visible (a fresh barrier's "phase
 * before" has none): the bytes land as late as the ISA allows, so whatever read them before any
 * wait reads NaN. */
static void observed(mbarrier &b) {
    for (const landing &l : b.completed) {
        memcpy(window_base() + l.off, l.bytes.data(), l.bytes.size());
        race_forget(window_base() + l.off, l.bytes.size());
    }
    b.completed.clear();
}

/* test_wait.parity / try_wait.parity: true once the phase of that parity has completed, i.e. the
 * current phase's parity differs (so parity 1 passes on a fresh barrier: "the phase before").
 * test_wait never blocks. try_wait may return false after a time limit and kernels loop on it;
 * here the thread sleeps until a phase completes (or the block deadlocks), and then lets every
 * other runnable thread go first, so their reads that the wait should have ordered come before
 * the copies land. */
bool mbar_test_wait_parity(void *bar, uint32_t parity) {
    const void *pc = __builtin_return_address(0);
    mbarrier &b = find(bar, "mbarrier.test_wait.parity", pc);
    if (parity > 1) fail(pc, "mbarrier.test_wait.parity %u: the parity is 0 or 1", parity);
    if ((b.phase & 1) == parity) return false;
    observed(b);
    return true;
}

bool mbar_try_wait_parity(void *bar, uint32_t parity) {
    const void *pc = __builtin_return_address(0);
    mbarrier &b = find(bar, "mbarrier.try_wait.parity", pc);
    if (parity > 1) fail(pc, "mbarrier.try_wait.parity %u: the parity is 0 or 1", parity);
    do {
        while ((b.phase & 1) == parity)
            sleep_on(&b, "mbarrier.try_wait.parity", pc);
        yield_now();
    } while ((b.phase & 1) == parity);
    observed(b);
    return true;
}

/* ================================================================ tensor maps and TMA */

/* What cuTensorMapEncodeTiled would encode, in the opaque bytes of a CUtensorMap. */
struct tensor_map {
    uint32_t magic;
    uint8_t rank, elem_size, swizzle_bytes, oob_nan;
    const char *base;
    uint64_t dims[5];
    uint64_t strides[4]; /* bytes, of dimensions 1.. */
    uint32_t box[5];
};
static_assert(sizeof(tensor_map) <= sizeof(CUtensorMap), "fits the opaque map");
static const uint32_t MAP_MAGIC = 0x514D4150; /* "QMAP" */

static int elem_size_of(int type) {
    switch ((CUtensorMapDataType)type) {
    case CU_TENSOR_MAP_DATA_TYPE_UINT8:
        return 1;
    case CU_TENSOR_MAP_DATA_TYPE_UINT16:
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT16:
    case CU_TENSOR_MAP_DATA_TYPE_BFLOAT16:
        return 2;
    case CU_TENSOR_MAP_DATA_TYPE_UINT32:
    case CU_TENSOR_MAP_DATA_TYPE_INT32:
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT32:
        return 4;
    default:
        return 0; /* not emulated */
    }
}

/* The driver's requirements (cuda.h, cuTensorMapEncodeTiled), all element strides 1, no
 * interleave; an emulator limit besides: a swizzled box row fills its span exactly. */
int tensor_map_encode(void *map, int type, int rank, const void *base, const uint64_t *dims,
                      const uint64_t *strides, const uint32_t *box, int swizzle, int oob_nan) {
    tensor_map m;
    memset(&m, 0, sizeof m);
    const int es = elem_size_of(type);
    static const int span[4] = {0, 32, 64, 128}; /* CU_TENSOR_MAP_SWIZZLE_NONE, 32B, 64B, 128B */
    const char *bad = nullptr;
    if (es == 0)
        bad = "data type not emulated";
    else if (rank < 1 || rank > 5)
        bad = "rank outside [1, 5]";
    else if ((uintptr_t)base % 16)
        bad = "global address not 16-byte aligned";
    else if (swizzle < 0 || swizzle > 3)
        bad = "swizzle mode not emulated (none, 32B, 64B, 128B)";
    else if ((uintptr_t)map % 64)
        bad = "tensor map not 64-byte aligned";
    for (int i = 0; i < rank && !bad; i++) {
        if (dims[i] == 0 || dims[i] > (1ull << 32)) bad = "a dimension outside [1, 2^32]";
        if (box[i] == 0 || box[i] > 256) bad = "a box dimension outside [1, 256]";
        if (i > 0 && (strides[i - 1] % 16 || strides[i - 1] >= (1ull << 40)))
            bad = "a stride not a multiple of 16 bytes below 2^40";
    }
    if (!bad && box[0] * (uint32_t)es % 16) bad = "the box's inner dimension is not 16-byte sized";
    if (!bad && swizzle && box[0] * (uint32_t)es > (uint32_t)span[swizzle])
        bad = "the box's inner dimension is wider than the swizzle span";
    if (!bad && swizzle && box[0] * (uint32_t)es != (uint32_t)span[swizzle])
        bad = "a swizzled box row narrower than its span is not emulated";
    if (bad) {
        fprintf(stderr, "qe_emu: cuTensorMapEncodeTiled: %s\n", bad);
        return -1;
    }
    m.magic = MAP_MAGIC;
    m.rank = (uint8_t)rank, m.elem_size = (uint8_t)es;
    m.swizzle_bytes = (uint8_t)span[swizzle], m.oob_nan = (uint8_t)(oob_nan != 0);
    m.base = (const char *)base;
    for (int i = 0; i < rank; i++) {
        m.dims[i] = dims[i], m.box[i] = box[i];
        if (i > 0) m.strides[i - 1] = strides[i - 1];
    }
    memset(map, 0, sizeof(CUtensorMap));
    memcpy(map, &m, sizeof m);
    return 0;
}

/* cp.async.bulk.tensor.Nd.shared::cluster.global.tile.mbarrier::complete_tx::bytes: the box at
 * coords (innermost first; signed, so a box may start before the tensor) is written to dst in
 * order, innermost dimension contiguous, through the map's swizzle; elements outside the tensor
 * are zero (or NaN with OOB_FILL_NAN_REQUEST_ZERO_FMA). The whole box's bytes complete on bar. */
void tma_load(void *dst, const void *map_p, int rank, const int32_t *coords, void *bar) {
    const void *pc = __builtin_return_address(0);
    tensor_map m;
    memcpy(&m, map_p, sizeof m); /* a kernel parameter: no alignment promised here */
    if (m.magic != MAP_MAGIC)
        fail(pc, "cp.async.bulk.tensor: the tensor map was not built by tensor_map_tiled");
    if (m.rank != rank)
        fail(pc, "cp.async.bulk.tensor.%dd with a tensor map of rank %d", rank, m.rank);
    size_t elems = 1;
    for (int i = 0; i < rank; i++)
        elems *= m.box[i];
    const size_t bytes = elems * m.elem_size;
    if (!in_window(dst, bytes))
        fail(pc, "cp.async.bulk.tensor destination %p (+%zu bytes) is not in shared memory", dst,
             bytes);
    if ((uintptr_t)dst % 128)
        fail(pc, "cp.async.bulk.tensor destination %p is not 128-byte aligned", dst);
    mbarrier &b = find(bar, "cp.async.bulk.tensor's mbarrier", pc);
    const uint32_t off = (uint32_t)((char *)dst - window_base());
    landing l;
    l.off = off, l.pc = pc;
    l.bytes.assign(bytes, 0);
    std::vector<uint8_t> fill(m.elem_size, 0);
    if (m.oob_nan) { /* the canonical NaN of a 16- or 32-bit float */
        const uint32_t nan32 = 0x7FFFFFFFu;
        const uint16_t nan16 = 0x7FFF;
        memcpy(fill.data(), m.elem_size == 2 ? (const void *)&nan16 : &nan32, m.elem_size);
    }
    for (size_t e = 0; e < elems; e++) {
        size_t rest = e;
        long long src = 0; /* byte offset from the base */
        bool inside = true;
        for (int i = 0; i < rank; i++) {
            const long long c = (long long)coords[i] + (long long)(rest % m.box[i]);
            rest /= m.box[i];
            inside &= c >= 0 && c < (long long)m.dims[i];
            src += (i == 0 ? (long long)m.elem_size : (long long)m.strides[i - 1]) * c;
        }
        const uint32_t at = swizzle(off + (uint32_t)(e * m.elem_size), m.swizzle_bytes) - off;
        memcpy(&l.bytes[at], inside ? m.base + src : (const char *)fill.data(), m.elem_size);
    }
    memset(dst, 0xFF, bytes); /* NaN until the phase completes */
    b.landings.push_back(std::move(l));
    kernel_stats().tma_bytes += (long)bytes;
    b.tx -= (long)bytes; /* complete-tx: the copy is done as far as the barrier counts */
    maybe_complete(b);
}

} // namespace emu
