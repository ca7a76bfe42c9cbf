/* qe_emu.h — what tests read from the kernel emulator (C API): errors and per-kernel statistics.
 * Linked into the emulated suites only (tests/emu.cmake). */
#ifndef QE_TESTS_EMU_QE_EMU_H
#define QE_TESTS_EMU_QE_EMU_H
#ifdef __cplusplus
extern "C" {
#endif

typedef struct qe_emu_kernel_stats {
    long launches, blocks, threads;
    long barriers;            /* __syncthreads completed (per block) */
    long collectives;         /* warp collectives completed (per warp) */
    long ldmatrix_phases;     /* 8x8 matrices read by ldmatrix */
    long ldmatrix_wavefronts; /* shared-memory wavefronts they took: phases when conflict-free */
    long cp_async_bytes;
    long wgmmas;       /* wgmma.mma_async ops (per warpgroup) */
    long tma_bytes;    /* bytes cp.async.bulk.tensor copied into shared memory */
    long pdl_launches; /* launches by QE_LAUNCH_PDL */
    double seconds;    /* host time spent emulating */
} qe_emu_kernel_stats;

/* Errors reported since start (each also printed on stderr); the last one's text. */
long qe_emu_error_count(void);
const char *qe_emu_last_error(void);

/* Totals since start for kernels whose name contains name (all kernels when name is NULL). */
qe_emu_kernel_stats qe_emu_stats(const char *name);

#ifdef __cplusplus
}
#endif
#endif
