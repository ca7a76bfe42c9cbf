/* emu.h — the kernel emulator's interface to the code compiled against it: what cuda_emu.h's
 * macros and kernels/ptx.cuh's host branches call. Implemented in emu_core.cc (scheduler,
 * barriers, warp collectives, shared-memory checks), emu_ptx.cc (the PTX instructions) and
 * emu_hopper.cc (the sm_90a ones: wgmma, mbarrier, TMA).
 *
 * Execution model: a launch runs its blocks one after another; the threads of a block are fibers
 * on one OS thread; a fiber runs until it waits (a barrier, a warp collective) or exits. A
 * collective completes when the last lane of the warp arrives: that lane computes every lane's
 * result from all the lanes' operands, by the PTX ISA's fragment layouts. */
#ifndef QE_TESTS_EMU_EMU_H
#define QE_TESTS_EMU_EMU_H
#include <stddef.h>
#include <stdint.h>
#include <vector_types.h> /* uint3, dim3 (host-usable CUDA toolkit header) */

namespace emu {

/* One emulated CUDA thread. */
struct thread_ctx {
    uint3 tid;  /* threadIdx */
    int linear; /* x + y*bx + z*bx*by */
    int warp;   /* linear / 32; the lane is linear % 32 */
    /* launched by QE_LAUNCH_PDL and not yet past griddepcontrol.wait: global memory is off limits
     * (the previous kernel of the stream may still be running) */
    bool dep_pending;
};

extern thread_ctx *cur; /* the thread running now (nullptr outside a kernel) */
extern uint3 block_idx;
extern dim3 block_dim, grid_dim;

/* ---- launches (cuda_emu.h builds the records; the stand-in stream runs them) */

struct launch_cfg {
    const char *kernel, *file; /* the kernel's name and the launch's source line */
    int line;
    dim3 grid, block;
    size_t dynamic_smem;
    const void *fn; /* the kernel (its dynamic shared memory attribute) */
    bool pdl;       /* QE_LAUNCH_PDL: held to programmatic dependent launch's rule */
};
/* Runs every block of a launch; body(rec) is one thread's execution of the kernel. Returns 0, or
 * -1 after an emulator error (reported on stderr and kept for qe_emu_last_error). */
int run_grid(const launch_cfg &cfg, void (*body)(const void *rec), const void *rec);
/* Checks the launch configuration (as cudaLaunchKernel does) and queues the record on the
 * stand-in stream (tests/hostsim_runtime.c), which copies its n bytes. */
void submit(const launch_cfg &cfg, int (*run)(const void *rec), const void *rec, size_t n);

/* ---- block and warp synchronisation */

void syncthreads();
enum shfl_kind { SHFL_IDX, SHFL_UP, SHFL_DOWN, SHFL_XOR };
uint32_t shfl(uint32_t mask, uint32_t value, int lane_arg, int width, shfl_kind kind);

/* ---- shared memory: static __shared__ arrays live in one section, the "window" */

size_t cvta_shared(const void *p); /* the 32-bit shared address: offset into the window */
/* Dynamic shared memory: the region's start (1024-byte aligned), of which a launch may use its
 * smem bytes; allow_dynamic_smem is cudaFuncSetAttribute(kernel,
 * cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) and returns a cudaError_t. */
unsigned char *dynamic_smem();
int allow_dynamic_smem(const void *kernel, size_t bytes);
/* Race check of a shared-memory access by the current thread (no-op outside the window). */
void shared_access(const void *p, size_t n, bool write, const void *pc);

/* ---- programmatic dependent launch (emu_core.cc). Launches run one after another here, so the
 * wait has nothing to wait for; what is checked is the kernel's side of the contract: before its
 * griddepcontrol.wait a thread of a QE_LAUNCH_PDL launch touches no global memory (plain accesses
 * where those are checked, cp.async and TMA sources in every build). */
void griddep_wait();
void griddep_launch_dependents();
void kernel_starts(bool pdl); /* the thread's kernel code begins (cuda_emu.h thread_body) */
/* Reports (and stops the block) when the current thread may not touch global memory yet. */
void check_global_access(const void *p, bool write, const char *what, const void *pc);

/* ---- PTX instructions (emu_ptx.cc) */

void cp_async(void *dst, const void *src, int cp_size, int src_bytes);
void cp_async_commit();
void cp_async_wait(int newest_pending);
void ldmatrix(uint32_t *out, int num, bool trans, const void *p);
void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1);

/* ---- Hopper instructions (emu_hopper.cc) */

/* bar.sync / bar.arrive a, b: named barrier a (1..15; 0 is __syncthreads's) completing when b
 * threads (a multiple of 32, whole warps) have arrived; sync waits for that, arrive does not. */
void named_barrier_sync(int id, int n_threads);
void named_barrier_arrive(int id, int n_threads);

/* wgmma.mma_async.sync.aligned.m64n{n}k16.f32.bf16.bf16, a warpgroup collective: d holds the
 * thread's n/2 accumulators; a_regs its four A registers (RS form) or nullptr (SS: A through
 * desc_a); trans_* the imm-trans operands (1: MN-major); accumulate the scale-d predicate. The
 * registers read NaN until the wgmma.wait_group that covers the op. */
void wgmma_bf16(float *d, int n, uint64_t desc_a, const uint32_t *a_regs, uint64_t desc_b,
                bool trans_a, bool trans_b, bool accumulate);
void wgmma_fence();
void wgmma_commit_group();
void wgmma_wait_group(int newest_pending);
/* The shared offset the descriptor gives to bf16 element (mn, k) (for the emulator's tests). */
uint32_t wgmma_element_offset(uint64_t desc, bool mn_major, int mn, int k);

void mbar_init(void *bar, uint32_t count);
void mbar_expect_tx(void *bar, uint32_t bytes);
void mbar_arrive(void *bar);
bool mbar_try_wait_parity(void *bar, uint32_t parity);
bool mbar_test_wait_parity(void *bar, uint32_t parity); /* never blocks */

/* The emulator's cuTensorMapEncodeTiled (map: a CUtensorMap; type: a CUtensorMapDataType;
 * swizzle: a CUtensorMapSwizzle; strides: rank - 1 byte strides). 0, or -1 with a message. */
int tensor_map_encode(void *map, int type, int rank, const void *base, const uint64_t *dims,
                      const uint64_t *strides, const uint32_t *box, int swizzle, int oob_nan);
/* cp.async.bulk.tensor.{rank}d global -> shared, completing its bytes on the mbarrier bar. */
void tma_load(void *dst, const void *map, int rank, const int32_t *coords, void *bar);

} // namespace emu
#endif
