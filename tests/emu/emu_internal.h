/* emu_internal.h — shared by emu_core.cc, emu_ptx.cc and emu_hopper.cc: warp and warpgroup
 * collectives, sleeping on a key, the current thread's per-thread state, the shared-memory window
 * and its race check, error reports, statistics. */
#ifndef QE_TESTS_EMU_EMU_INTERNAL_H
#define QE_TESTS_EMU_EMU_INTERNAL_H
#include <stdarg.h>

#include <memory>
#include <vector>

#include "emu.h"
#include "qe_emu.h"

namespace emu {

struct thread_state;

/* Operands a lane brings to a warp collective and the result it takes away. */
struct lane_slot {
    int tid;             /* the lane's thread (linear index in the block) */
    thread_state *owner; /* that thread's state (a warpgroup op leaves work with every thread) */
    const void *pc;      /* where it called the collective */
    const void *addr;
    uint32_t in[12];
    uint32_t out[4];
};

/* A cp.async issued by one thread, completed by its wait_group. */
struct pending_copy {
    void *dst;
    const void *src;
    int cp_size, src_bytes;
    long group; /* -1 until committed */
    const void *pc;
};

/* A wgmma.mma_async in flight, as one thread sees it: its accumulator registers (the kernel's
 * array), the values they take when a wgmma.wait_group covers the op, and the op's record. */
struct wgmma_op; /* emu_hopper.cc */
struct pending_wgmma {
    float *d;
    int n; /* registers: N/2 */
    float result[128];
    long group; /* -1 until committed */
    std::shared_ptr<wgmma_op> op;
};

struct thread_state {
    lane_slot slot;
    std::vector<pending_copy> copies;
    long groups_committed;
    std::vector<pending_wgmma> wgmmas;
    long wgmma_groups;
    bool wgmma_fenced; /* a wgmma.fence since the thread's last wgmma.wait_group */
};

thread_state &self_state();

/* The last lane of the warp to arrive runs compute over all lanes' slots (lanes[i] is lane i);
 * every lane returns once it has. what names the operation in error messages; pc is the caller's
 * code address (for the report's source line). */
typedef void (*collective_fn)(lane_slot *const *lanes, int n_lanes);
void collective(const char *what, collective_fn compute, const void *pc);
/* The same over the 128 threads of the caller's warpgroup (warps 4g..4g+3), lanes[i] being
 * thread 128g + i; a warpgroup that is not four full warps of the block is an error. */
void warpgroup_collective(const char *what, collective_fn compute, const void *pc);

/* The current thread sleeps until wake_all(key); a block whose live threads all sleep or wait is
 * reported as deadlocked, naming what (at pc) each sleeper waits for. */
void sleep_on(const void *key, const char *what, const void *pc);
void wake_all(const void *key);
/* The current thread stays runnable but lets every other runnable thread run first. */
void yield_now();

/* emu_hopper.cc's part of a block: forget the mbarriers of the previous block; at a thread's
 * exit, report wgmma ops it never waited for; at the block's end, report bulk copies that never
 * landed (returns -1 after a report). */
void hopper_block_starts();
void hopper_thread_exits();
int hopper_block_ends();

/* ---- reports (emu_report.cc) */

/* "file:line (function)" of a code address, innermost inlined frame first; the text lives as long
 * as the process (a fiber stopped by fail() never unwinds, so callers hold no strings). */
const char *where(const void *pc);
/* Prints and records an error of the running launch (and thread, when in one); pc: its line. */
void vreport(const void *pc, const char *fmt, va_list ap);
void report(const void *pc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const launch_cfg *running_launch(); /* nullptr outside a launch */

/* Reports an error at the current thread (kernel, block, thread, source line of pc) and stops
 * the block: the calling fiber never resumes. */
[[noreturn]] void fail(const void *pc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The shared window: static __shared__ arrays of every emulated kernel, in the section of that
 * name (cuda_emu.h); the linker's __start_/__stop_ symbols bound it (absent: no kernel has one). */
extern "C" char __start_qe_emu_shared[] __attribute__((weak));
extern "C" char __stop_qe_emu_shared[] __attribute__((weak));
inline char *window_base() {
    return __start_qe_emu_shared;
}
inline size_t window_size() {
    return __start_qe_emu_shared ? (size_t)(__stop_qe_emu_shared - __start_qe_emu_shared) : 0;
}
/* Dynamic shared memory (emu_dynamic_smem.cc): a region of the window, of which the running
 * launch may use its first dynamic_bytes; the rest is not shared memory of this launch. */
const size_t DYNAMIC_SMEM_MAX = 227 * 1024, DYNAMIC_SMEM_DEFAULT = 48 * 1024;
const size_t WINDOW_MAX = 1 << 20; /* what a descriptor's address reaches (emu_hopper.cc) */
extern unsigned char dynamic_region[DYNAMIC_SMEM_MAX];
extern size_t dynamic_bytes;
/* Why cfg may not launch with its dynamic shared memory (too much, or above 48 KB without the
 * kernel's attribute), or nullptr. */
const char *dynamic_smem_refusal(const launch_cfg &cfg);
void poison_window(); /* when each block starts: NaN everywhere a block may read */

inline bool in_window(const void *p, size_t n) {
    const uintptr_t off = (uintptr_t)p - (uintptr_t)window_base(); /* wraps when below */
    if (!(off < window_size() && n <= window_size() - off)) return false;
    const uintptr_t tail = (uintptr_t)dynamic_region + dynamic_bytes;
    const uintptr_t tail_end = (uintptr_t)dynamic_region + DYNAMIC_SMEM_MAX;
    return (uintptr_t)p + n <= tail || (uintptr_t)p >= tail_end;
}
/* p lies in the dynamic region but past the running launch's bytes. */
inline bool past_dynamic_bytes(const void *p) {
    const uintptr_t d = (uintptr_t)p - (uintptr_t)dynamic_region;
    return d >= dynamic_bytes && d < DYNAMIC_SMEM_MAX;
}
/* ---- the race check (emu_race.cc) */

/* Race check by thread tid (not necessarily the current one: a collective reads for its lanes). */
void race_check(const void *p, size_t n, bool write, int tid, const void *pc);
void race_block_starts();                 /* nothing orders against the previous block */
void race_barrier_passed(const void *pc); /* a __syncthreads completed at pc */
/* Bytes the async proxy wrote (a bulk copy landing at its mbarrier's phase): no thread's access
 * of them races with what came before. */
void race_forget(const void *p, size_t n);

qe_emu_kernel_stats &kernel_stats(); /* of the running kernel */

} // namespace emu
#endif
