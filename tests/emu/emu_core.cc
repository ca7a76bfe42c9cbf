/* emu_core.cc — the kernel emulator's execution model: fibers (one per CUDA thread of a block,
 * on the stacks of emu_context.cc), the block scheduler, __syncthreads, warp collectives and
 * shuffles, launch checks and statistics. See emu.h; reports in emu_report.cc, the shared-memory
 * race check in emu_race.cc, the PTX instructions in emu_ptx.cc.
 *
 * Errors a GPU would turn into a hang (a barrier some threads never reach, a collective with
 * exited or diverged lanes) or into silent garbage (a shared-memory race) stop the launch with a
 * report naming the kernel, the block, the thread and the source line; the launch then counts as
 * a device fault on the stand-in stream, so the test waiting on it fails. */
#include <cuda_runtime_api.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "emu_context.h"
#include "emu_internal.h"

extern "C" {
/* tests/hostsim_runtime.c: the stand-in stream and its launch-error slot */
int sim_enqueue(int (*run)(const void *args), const void *args, size_t n);
void sim_set_launch_error(int cuda_error);
}

namespace emu {

thread_ctx *cur;
uint3 block_idx;
dim3 block_dim, grid_dim;

/* ================================================================ fibers */

enum fiber_state { RUNNABLE, AT_BARRIER, AT_WARP, ASLEEP, EXITED };

struct fiber {
    context ctx;
    thread_ctx t;
    thread_state st;
    fiber_state state;
    const void *sleep_key; /* ASLEEP: what wake() it waits for, what and where (for reports) */
    const char *sleep_what;
    const void *sleep_pc;
};

static std::vector<fiber *> fibers; /* reused by every block; grown to the largest block */
static fiber *running;              /* nullptr: the scheduler runs */
static context sched;               /* the OS thread's stack */
static void (*block_body)(const void *);
static const void *block_rec;

static fiber *new_fiber() {
    fiber *f = new fiber();
    context_new_stack(&f->ctx);
    return f;
}

/* The next runnable fiber after the one with linear index i (round robin), or nullptr. */
static fiber *next_runnable(int i, int n) {
    for (int k = 1; k <= n; k++) {
        fiber *f = fibers[(i + k) % n];
        if (f->state == RUNNABLE) return f;
    }
    return nullptr;
}

/* ================================================================ the block */

struct warp_state {
    int first, size; /* lanes: fibers[first .. first + size) */
    int arrived, exited;
    const char *what; /* the collective the arrived lanes wait at */
    collective_fn fn;
    const void *pc;
};

static struct {
    int n_threads, live, exited;
    int at_barrier;
    const void *barrier_pc; /* where the threads now waiting wait */
    warp_state warps[32];
    warp_state warpgroups[8]; /* four warps each (wgmma); size 0 when the block lacks them */
    bool failed;
} blk;

/* The current fiber waits (or has exited): run the next runnable fiber directly, or go back to
 * the scheduler when there is none (the block is done, failed, or deadlocked). */
static void yield(bool dying) {
    fiber *f = running;
    fiber *next = blk.failed ? nullptr : next_runnable(f->t.linear, blk.n_threads);
    if (next == f) return; /* released meanwhile (cannot happen for a waiting fiber) */
    running = next;
    cur = next ? &next->t : nullptr;
    context_transfer(&f->ctx, next ? &next->ctx : &sched, dying);
}

static const launch_cfg *launch; /* the running launch */
static std::mutex emu_lock;      /* one launch at a time, whichever host thread drains the stream */

const launch_cfg *running_launch() {
    return launch;
}
static qe_emu_kernel_stats *kstats;

static void thread_exit();

static void fiber_main(void *arg) {
    context_started();
    (void)arg;
    block_body(block_rec);
    thread_exit();
}

thread_state &self_state() {
    return running->st;
}

void kernel_starts(bool pdl) {
    cur->dep_pending = pdl;
}
void griddep_wait() {
    cur->dep_pending = false;
}
void griddep_launch_dependents() {} /* the next launch starts when this one ends, here */

/* p lies in the object at base (of n bytes). */
static bool within(const void *p, const void *base, size_t n) {
    return (uintptr_t)p - (uintptr_t)base < n;
}

void check_global_access(const void *p, bool write, const char *what, const void *pc) {
    if (!cur || !cur->dep_pending) return;
    if (within(p, running->ctx.stack_lo, running->ctx.stack_size) || in_window(p, 1))
        return; /* its own stack, shared memory */
    /* the built-in variables: threadIdx is cur->tid, the others the emulator's globals */
    if (within(p, &cur, sizeof cur) || within(p, cur, sizeof *cur) ||
        within(p, &block_idx, sizeof block_idx) || within(p, &block_dim, sizeof block_dim) ||
        within(p, &grid_dim, sizeof grid_dim))
        return;
    fail(pc,
         "%s %s global memory %p before griddepcontrol.wait in a kernel launched with programmatic "
         "dependent launch (QE_LAUNCH_PDL): the previous kernel may still be running",
         what, write ? "writes" : "reads", p);
}

void fail(const void *pc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vreport(pc, fmt, ap);
    va_end(ap);
    blk.failed = true;
    if (!running) abort(); /* not in a kernel: an emulator bug */
    for (;;)
        yield(false); /* the scheduler stops the block and never runs this fiber again */
}

/* ================================================================ barriers and collectives */

/* Whether two code addresses are one source site: the compiler may duplicate a barrier or a
 * collective into several paths (jump threading), and the threads taking each path are still at
 * the same __syncthreads. Looked up (addr2line, cached) only when the addresses differ. */
static bool same_site(const void *a, const void *b) {
    return a == b || (a && b && strcmp(where(a), where(b)) == 0);
}

static void release_barrier(const void *pc) {
    for (int i = 0; i < blk.n_threads; i++)
        if (fibers[i]->state == AT_BARRIER) fibers[i]->state = RUNNABLE;
    blk.at_barrier = 0;
    race_barrier_passed(pc);
    kstats->barriers++;
}

static void syncthreads_at(const void *pc) {
    if (blk.exited > 0)
        fail(pc,
             "__syncthreads after %d thread(s) of the block exited: on a GPU it never "
             "completes (a hang)",
             blk.exited);
    if (blk.at_barrier == 0) {
        blk.barrier_pc = pc;
    } else if (!same_site(pc, blk.barrier_pc)) {
        fail(pc, "threads wait at different __syncthreads (%d wait at %s)", blk.at_barrier,
             where(blk.barrier_pc));
    }
    running->state = AT_BARRIER;
    if (++blk.at_barrier == blk.n_threads) {
        release_barrier(pc);
        running->state = RUNNABLE;
        return;
    }
    yield(false);
}

void syncthreads() {
    syncthreads_at(__builtin_return_address(0));
}

void collective(const char *what, collective_fn compute, const void *pc) {
    warp_state &w = blk.warps[running->t.warp];
    if (w.exited > 0)
        fail(pc, "%s in a warp with %d exited lane(s): on a GPU it never completes", what,
             w.exited);
    if (w.arrived == 0) {
        w.what = what, w.fn = compute, w.pc = pc;
    } else if (w.fn != compute || !same_site(w.pc, pc)) {
        fail(pc, "lanes of warp %d diverged: %s here, while %d lane(s) wait at %s at %s",
             running->t.warp, what, w.arrived, w.what, where(w.pc));
    }
    running->st.slot.pc = pc;
    if (++w.arrived < w.size) {
        running->state = AT_WARP;
        yield(false);
        return;
    }
    lane_slot *lanes[32];
    for (int i = 0; i < w.size; i++)
        lanes[i] = &fibers[w.first + i]->st.slot;
    compute(lanes, w.size);
    w.arrived = 0;
    for (int i = 0; i < w.size; i++)
        if (fibers[w.first + i]->state == AT_WARP) fibers[w.first + i]->state = RUNNABLE;
    kstats->collectives++;
}

void warpgroup_collective(const char *what, collective_fn compute, const void *pc) {
    const int g = running->t.warp / 4;
    warp_state &w = blk.warpgroups[g];
    if (w.size != 128)
        fail(pc,
             "%s: warpgroup %d (threads %d..%d) is not four full warps in a block of %d "
             "threads",
             what, g, 128 * g, 128 * g + 127, blk.n_threads);
    if (w.exited > 0)
        fail(pc, "%s in a warpgroup with %d exited thread(s): on a GPU it never completes", what,
             w.exited);
    if (w.arrived == 0) {
        w.what = what, w.fn = compute, w.pc = pc;
    } else if (w.fn != compute || !same_site(w.pc, pc)) {
        fail(pc, "threads of warpgroup %d diverged: %s here, while %d thread(s) wait at %s at %s",
             g, what, w.arrived, w.what, where(w.pc));
    }
    running->st.slot.pc = pc;
    if (++w.arrived < w.size) {
        running->state = AT_WARP;
        yield(false);
        return;
    }
    lane_slot *lanes[128];
    for (int i = 0; i < 128; i++)
        lanes[i] = &fibers[w.first + i]->st.slot;
    compute(lanes, 128);
    w.arrived = 0;
    for (int i = 0; i < 128; i++)
        if (fibers[w.first + i]->state == AT_WARP) fibers[w.first + i]->state = RUNNABLE;
    kstats->collectives++;
}

void sleep_on(const void *key, const char *what, const void *pc) {
    running->state = ASLEEP;
    running->sleep_key = key, running->sleep_what = what, running->sleep_pc = pc;
    yield(false);
}

void yield_now() {
    yield(false); /* still RUNNABLE: back after a round of the others */
}

void wake_all(const void *key) {
    for (int i = 0; i < blk.n_threads; i++)
        if (fibers[i]->state == ASLEEP && fibers[i]->sleep_key == key) fibers[i]->state = RUNNABLE;
}

static void shfl_compute(lane_slot *const *lanes, int n) {
    const uint32_t full = n == 32 ? 0xFFFFFFFFu : (1u << n) - 1;
    for (int l = 0; l < n; l++) {
        const lane_slot &s = *lanes[l];
        if ((s.in[4] & full) != full || s.in[4] != lanes[0]->in[4])
            fail(s.pc,
                 "__shfl*_sync mask 0x%08x (lane %d) does not name every lane of the warp "
                 "(the emulator runs full-warp shuffles only)",
                 s.in[4], l);
    }
    for (int l = 0; l < n; l++) {
        const lane_slot &s = *lanes[l];
        const int width = (int)s.in[2], arg = (int)s.in[1];
        const int seg = l / width * width; /* the lane's group of width lanes */
        int src = l;
        switch ((shfl_kind)s.in[3]) {
        case SHFL_IDX:
            src = seg + ((arg % width) + width) % width;
            break;
        case SHFL_UP:
            src = l - arg >= seg ? l - arg : l;
            break;
        case SHFL_DOWN:
            src = l + arg < seg + width ? l + arg : l;
            break;
        case SHFL_XOR:
            src = (l ^ arg) < seg + width ? l ^ arg : l;
            break;
        }
        if (src >= n) src = l;
        lanes[l]->out[0] = lanes[src]->in[0];
    }
}

uint32_t shfl(uint32_t mask, uint32_t value, int arg, int width, shfl_kind kind) {
    const void *pc = __builtin_return_address(0);
    if (width <= 0 || width > 32 || (width & (width - 1)))
        fail(pc, "__shfl*_sync width %d is not a power of two in [1, 32]", width);
    lane_slot &s = running->st.slot;
    s.in[0] = value, s.in[1] = (uint32_t)arg, s.in[2] = (uint32_t)width, s.in[3] = kind;
    s.in[4] = mask;
    collective("__shfl*_sync", shfl_compute, pc);
    return s.out[0];
}

static void thread_exit() {
    /* copies still in flight land in the end (nothing can order a read of them after this) */
    cp_async_commit();
    cp_async_wait(0);
    hopper_thread_exits();
    running->state = EXITED;
    blk.exited++, blk.live--;
    warp_state &w = blk.warps[running->t.warp];
    w.exited++;
    warp_state &g = blk.warpgroups[running->t.warp / 4];
    g.exited++;
    if (g.arrived > 0) {
        fail(nullptr,
             "exited while %d thread(s) of its warpgroup wait at %s at %s: on a GPU it never "
             "completes",
             g.arrived, g.what, where(g.pc));
    }
    if (w.arrived > 0) {
        fail(nullptr,
             "exited while %d lane(s) of its warp wait at %s at %s: on a GPU it never "
             "completes",
             w.arrived, w.what, where(w.pc));
    }
    if (blk.at_barrier > 0) {
        fail(nullptr,
             "exited while %d thread(s) wait at __syncthreads at %s: on a GPU it never "
             "completes (a hang)",
             blk.at_barrier, where(blk.barrier_pc));
    }
    yield(true);
    abort(); /* an exited fiber is never resumed */
}

/* ================================================================ launches */

static std::map<std::string, qe_emu_kernel_stats> stats_by_kernel;

qe_emu_kernel_stats &kernel_stats() {
    return *kstats;
}

static void run_block(dim3 b) {
    const int n = (int)(b.x * b.y * b.z);
    while ((int)fibers.size() < n)
        fibers.push_back(new_fiber());
    blk.n_threads = n, blk.live = n, blk.exited = 0, blk.at_barrier = 0;
    blk.barrier_pc = nullptr;
    blk.failed = false;
    for (int w = 0; w * 32 < n; w++)
        blk.warps[w] =
            warp_state{w * 32, n - w * 32 < 32 ? n - w * 32 : 32, 0, 0, nullptr, nullptr, nullptr};
    for (int g = 0; g < 8; g++) /* only complete warpgroups take part in wgmma */
        blk.warpgroups[g] =
            warp_state{g * 128, n >= (g + 1) * 128 ? 128 : 0, 0, 0, nullptr, nullptr, nullptr};
    race_block_starts();
    hopper_block_starts();
    poison_window(); /* uninitialised: NaN */
    for (int i = 0; i < n; i++) {
        fiber *f = fibers[i];
        f->t.tid = uint3{(unsigned)i % b.x, (unsigned)i / b.x % b.y, (unsigned)i / (b.x * b.y)};
        f->t.linear = i, f->t.warp = i / 32;
        f->t.dep_pending = false; /* until thread_body has the arguments (cuda_emu.h) */
        f->st.copies.clear();
        f->st.groups_committed = 0;
        f->st.slot.tid = i;
        f->st.slot.owner = &f->st;
        f->st.wgmmas.clear();
        f->st.wgmma_groups = 0;
        f->st.wgmma_fenced = false;
        f->state = RUNNABLE;
        context_prepare(&f->ctx, fiber_main, f);
    }
    running = fibers[0]; /* fibers hand over to each other; back here when none can run */
    cur = &running->t;
    context_transfer(&sched, &running->ctx, false);
    running = nullptr, cur = nullptr;
    if (blk.live > 0 && !blk.failed) { /* everyone waits for someone: a hang on the GPU */
        std::string waits;
        if (blk.at_barrier)
            waits += std::to_string(blk.at_barrier) + " thread(s) at __syncthreads at " +
                     where(blk.barrier_pc);
        for (int w = 0; w * 32 < n; w++)
            if (blk.warps[w].arrived)
                waits += "; " + std::to_string(blk.warps[w].arrived) + " lane(s) of warp " +
                         std::to_string(w) + " at " + blk.warps[w].what + " at " +
                         where(blk.warps[w].pc);
        for (int g = 0; g < 8; g++)
            if (blk.warpgroups[g].arrived)
                waits += "; " + std::to_string(blk.warpgroups[g].arrived) +
                         " thread(s) of warpgroup " + std::to_string(g) + " at " +
                         blk.warpgroups[g].what + " at " + where(blk.warpgroups[g].pc);
        for (int i = 0; i < n; i++)
            if (fibers[i]->state == ASLEEP)
                waits += "; thread " + std::to_string(i) + " at " + fibers[i]->sleep_what + " at " +
                         where(fibers[i]->sleep_pc);
        report(nullptr, "block (%u,%u,%u) deadlocked: %s", block_idx.x, block_idx.y, block_idx.z,
               waits.c_str());
        blk.failed = true;
    }
    if (!blk.failed && hopper_block_ends() != 0) blk.failed = true;
    kstats->blocks++;
    kstats->threads += n;
}

int run_grid(const launch_cfg &cfg, void (*body)(const void *), const void *rec) {
    std::lock_guard<std::mutex> hold(emu_lock);
    context_of_thread(&sched);
    launch = &cfg;
    kstats = &stats_by_kernel[cfg.kernel];
    kstats->launches++;
    kstats->pdl_launches += cfg.pdl;
    block_body = body, block_rec = rec;
    grid_dim = cfg.grid, block_dim = cfg.block;
    dynamic_bytes = cfg.dynamic_smem;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bool failed = false;
    for (unsigned z = 0; z < cfg.grid.z && !failed; z++)
        for (unsigned y = 0; y < cfg.grid.y && !failed; y++)
            for (unsigned x = 0; x < cfg.grid.x && !failed; x++) {
                block_idx = uint3{x, y, z};
                run_block(cfg.block);
                failed = blk.failed;
            }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    kstats->seconds += s;
    static const bool trace = getenv("QE_EMU_TRACE") && *getenv("QE_EMU_TRACE") != '0';
    if (trace)
        fprintf(stderr, "qe_emu: %s grid (%u,%u,%u) block (%u,%u,%u): %.3f s%s\n", cfg.kernel,
                cfg.grid.x, cfg.grid.y, cfg.grid.z, cfg.block.x, cfg.block.y, cfg.block.z, s,
                failed ? " (failed)" : "");
    launch = nullptr;
    dynamic_bytes = 0;
    return failed ? -1 : 0;
}

void submit(const launch_cfg &cfg, int (*run)(const void *), const void *rec, size_t n) {
    const dim3 g = cfg.grid, b = cfg.block;
    const unsigned long long threads = (unsigned long long)b.x * b.y * b.z;
    const char *bad = nullptr;
    int error = (int)cudaErrorInvalidConfiguration;
    if (threads == 0 || threads > 1024 || b.z > 64)
        bad = "block shape out of range (1..1024 threads, z <= 64)";
    else if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > 0x7FFFFFFFu || g.y > 65535 || g.z > 65535)
        bad = "grid shape out of range (x < 2^31, y and z <= 65535, none 0)";
    else if ((bad = dynamic_smem_refusal(cfg)) != nullptr)
        error = (int)cudaErrorInvalidValue; /* what the runtime returns for it */
    if (bad) {
        std::lock_guard<std::mutex> hold(emu_lock);
        launch = &cfg;
        report(nullptr, "invalid launch grid (%u,%u,%u) block (%u,%u,%u): %s", g.x, g.y, g.z, b.x,
               b.y, b.z, bad);
        launch = nullptr;
        sim_set_launch_error(error);
        return;
    }
    sim_enqueue(run, rec, n);
}

} // namespace emu

/* ================================================================ the C API (qe_emu.h) */

extern "C" qe_emu_kernel_stats qe_emu_stats(const char *name) {
    qe_emu_kernel_stats t;
    memset(&t, 0, sizeof t);
    for (const auto &kv : emu::stats_by_kernel) {
        if (name && !strstr(kv.first.c_str(), name)) continue;
        const qe_emu_kernel_stats &s = kv.second;
        t.launches += s.launches, t.blocks += s.blocks, t.threads += s.threads;
        t.barriers += s.barriers, t.collectives += s.collectives;
        t.ldmatrix_phases += s.ldmatrix_phases, t.ldmatrix_wavefronts += s.ldmatrix_wavefronts;
        t.cp_async_bytes += s.cp_async_bytes;
        t.wgmmas += s.wgmmas, t.tma_bytes += s.tma_bytes, t.pdl_launches += s.pdl_launches;
        t.seconds += s.seconds;
    }
    return t;
}
