/* hostsim.h — host stand-ins for the CUDA runtime calls of the CUDA backend and the kernel tests
 * (hostsim_runtime.c). With the kernel emulator (tests/emu: the kernels/ .cu files compiled
 * for the host, launches queued here) they let test_kernels_emu, test_cuda_emu and
 * test_bench_emu run without a GPU.
 *
 * The stream is lazy, as a GPU's is asynchronous: a launch or an async copy only records the work;
 * it runs when the host waits (cudaStreamSynchronize, cudaEventSynchronize, a blocking copy, or
 * cudaFree). So a host that rewrites a pinned buffer before the copy reading it has run, or reads
 * a result before waiting for it, gets wrong numbers. Copies to or from pageable host memory block
 * (they run everything queued, then copy), as CUDA's do. Graph capture records launches into a
 * graph instead of the stream; a graph launch queues them again with the arguments captured.
 *
 * Several devices (fake_devices) and several host threads: the current device is per thread
 * (cudaSetDevice), each device has one queue that all of its streams feed (a legal schedule of
 * them), a launch goes to the thread's current device, and graph capture is per thread. One lock
 * guards the stand-in and ops run under it, one at a time (the emulator is not reentrant), so
 * engines on several threads, and tensor-parallel ranks on a thread each, run here as on a GPU
 * machine. hostsim_nccl.c adds NCCL over these devices: an all-reduce is an op on each rank's
 * device that waits for every rank's, running the queues of ranks not yet there meanwhile (a GPU
 * runs by itself; here work runs only when some thread waits). */
#ifndef QE_TESTS_HOSTSIM_H
#define QE_TESTS_HOSTSIM_H
#include <stddef.h>

/* knobs the tests turn */
enum { SIM_MAX_DEVICES = 16 };
extern int fake_devices;
extern size_t fake_free;
extern size_t fake_malloc_max; /* cudaMalloc of more bytes fails (NOMEM paths) */
extern int fake_capture_fails; /* cudaStreamBeginCapture refuses (graph fallback path) */

/* what the tests read */
typedef struct sim_stats {
    long live_allocs; /* device + pinned allocations not yet freed */
    long captures;    /* graphs captured and instantiated */
    long graph_launches;
    long live_graph_execs;
    long max_in_flight; /* most recorded events not yet waited for: steps enqueued ahead */
} sim_stats;
extern sim_stats sim;

/* Queues run(args) on the stream (or into the graph being captured); args (n bytes) are copied.
 * A run that returns nonzero is a device fault: later waits return an error. */
int sim_enqueue(int (*run)(const void *args), const void *args, size_t n);
/* sim_enqueue on a given device; must_run: the op runs even after the device faulted (a
 * collective, which its peers wait for). */
int sim_enqueue_on(int device, int must_run, int (*run)(const void *args), const void *args,
                   size_t n);
/* The device of a stream (a cudaStream_t; NULL: the thread's current device). */
int sim_stream_device(void *stream);
/* For ops that wait for other devices (hostsim_nccl.c), called with the lock held, as every op
 * runs: sim_help runs the device's next op unless none is queued or another thread is running
 * its ops (1 when it ran one); sim_wait sleeps until work is enqueued, a device is let go or
 * sim_wake is called. */
int sim_help(int device);
void sim_wait(void);
void sim_wake(void);
void sim_lock(void);
void sim_unlock(void);
/* Runs everything queued (what a kernel test does before reading its output). */
void sim_drain(void);
/* The error the next cudaGetLastError returns (a launch refused at launch time). */
void sim_set_launch_error(int cuda_error);

#endif
