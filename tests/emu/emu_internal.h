/* emu_internal.h — shared by emu_core.cc and emu_ptx.cc: warp collectives, the current thread's
 * per-thread state, the shared-memory window and its race check, error reports, statistics. */
#ifndef QE_TESTS_EMU_EMU_INTERNAL_H
#define QE_TESTS_EMU_EMU_INTERNAL_H
#include <stdarg.h>

#include <vector>

#include "emu.h"
#include "qe_emu.h"

namespace emu {

/* Operands a lane brings to a warp collective and the result it takes away. */
struct lane_slot {
    int tid;        /* the lane's thread (linear index in the block) */
    const void *pc; /* where it called the collective */
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

struct thread_state {
    lane_slot slot;
    std::vector<pending_copy> copies;
    long groups_committed;
};

thread_state &self_state();

/* The last lane of the warp to arrive runs compute over all lanes' slots (lanes[i] is lane i);
 * every lane returns once it has. what names the operation in error messages; pc is the caller's
 * code address (for the report's source line). */
typedef void (*collective_fn)(lane_slot *const *lanes, int n_lanes);
void collective(const char *what, collective_fn compute, const void *pc);

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
inline bool in_window(const void *p, size_t n) {
    const uintptr_t off = (uintptr_t)p - (uintptr_t)window_base(); /* wraps when below */
    return off < window_size() && n <= window_size() - off;
}
/* ---- the race check (emu_race.cc) */

/* Race check by thread tid (not necessarily the current one: a collective reads for its lanes). */
void race_check(const void *p, size_t n, bool write, int tid, const void *pc);
void race_block_starts();                 /* nothing orders against the previous block */
void race_barrier_passed(const void *pc); /* a __syncthreads completed at pc */

qe_emu_kernel_stats &kernel_stats(); /* of the running kernel */

} // namespace emu
#endif
