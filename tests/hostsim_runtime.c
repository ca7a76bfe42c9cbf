/* hostsim_runtime.c — host stand-ins for the CUDA runtime calls runtime/backend_cuda.c makes, with
 * a lazy stream and graph capture (hostsim.h says why). Defined in the test executable, they take
 * precedence over libcudart_static at link time; a runtime call added to the backend needs one
 * here too (else the link pulls the real archive member and fails with duplicate symbols). */
#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hostsim.h"

int fake_devices = 1;
size_t fake_free = (size_t)64 << 30;
size_t fake_malloc_max = SIZE_MAX;
int fake_capture_fails;
sim_stats sim;

typedef struct sim_op {
    int (*run)(const void *);
    void *args;
    size_t n;
    int owned;    /* args freed once run (graph ops belong to their graph) */
    int must_run; /* runs after a fault too (a collective: its peers wait for it) */
} sim_op;

typedef struct op_list {
    sim_op *ops;
    size_t len, cap;
} op_list;

/* One device's work: its streams' ops in the order enqueued (one queue per device is a legal
 * schedule of its streams), queue.ops[done - base ..] pending. busy: a thread is running its ops
 * (one at a time per device, as the emulator is not reentrant); faulted: an op failed, sticky,
 * like a device fault. Every field is guarded by mu. */
typedef struct sim_device {
    op_list queue;
    unsigned long long enqueued, done, base;
    int faulted, busy;
} sim_device;
static sim_device dev[SIM_MAX_DEVICES];

/* One lock for the whole stand-in (ops run under it: the emulator runs one kernel at a time);
 * cv is broadcast when work is enqueued or a device's thread is done with it. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

/* Per host thread, as in CUDA: the current device, a capture in progress, the last error. */
static _Thread_local int cur_device;
static _Thread_local int capturing, capture_broken;
static _Thread_local op_list captured;

/* A stream: its device (the current one when it was made). NULL is the current device's. */
typedef struct sim_stream {
    int device;
} sim_stream;
static int stream_device(cudaStream_t s) {
    return s ? ((sim_stream *)(void *)s)->device : cur_device;
}
int sim_stream_device(void *s) {
    return stream_device((cudaStream_t)s);
}

/* A completion event (created with cudaEventDisableTiming, as the backend's per-step events are;
 * the profiler's timing events are not counted) recorded and not yet waited for is a step in
 * flight. */
typedef struct sim_event {
    int device;
    unsigned long long at; /* the device's ops enqueued when recorded */
    int completion;
    int pending;
} sim_event;
static long in_flight;

void sim_lock(void) {
    pthread_mutex_lock(&mu);
}
void sim_unlock(void) {
    pthread_mutex_unlock(&mu);
}
void sim_wait(void) {
    pthread_cond_wait(&cv, &mu);
}
void sim_wake(void) {
    pthread_cond_broadcast(&cv);
}

static void push(op_list *l, sim_op op) {
    if (l->len == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->ops = realloc(l->ops, l->cap * sizeof *l->ops);
        if (!l->ops) abort();
    }
    l->ops[l->len++] = op;
}

static void free_list(op_list *l) {
    for (size_t i = 0; i < l->len; i++)
        if (l->ops[i].owned) free(l->ops[i].args);
    free(l->ops);
    memset(l, 0, sizeof *l);
}

/* mu held: op goes to the thread's capture, else to the device's queue. */
static void enqueue_locked(int device, sim_op op) {
    if (capturing) {
        push(&captured, op);
        return;
    }
    push(&dev[device].queue, op);
    dev[device].enqueued++;
    pthread_cond_broadcast(&cv); /* a collective may be waiting for this device's next op */
}

int sim_enqueue_on(int device, int must_run, int (*run)(const void *), const void *args, size_t n) {
    sim_op op = {run, malloc(n ? n : 1), n, 1, must_run};
    if (!op.args) abort();
    memcpy(op.args, args, n);
    pthread_mutex_lock(&mu);
    enqueue_locked(device, op);
    pthread_mutex_unlock(&mu);
    return 0;
}

/* A kernel launch (tests/emu) or a cuBLASLt call: on the thread's current device. */
int sim_enqueue(int (*run)(const void *), const void *args, size_t n) {
    return sim_enqueue_on(cur_device, 0, run, args, n);
}

/* mu held, d->busy set by the caller: runs d's next op. The op may wait (a collective), letting
 * mu go meanwhile, so it is copied out of the queue, which other threads may grow. */
static void run_next(sim_device *d) {
    const sim_op op = d->queue.ops[d->done - d->base];
    if ((!d->faulted || op.must_run) && op.run(op.args) != 0) d->faulted = 1;
    if (op.owned) free(op.args);
    d->done++;
    if (d->done == d->enqueued) { /* all ran: reuse the array */
        d->queue.len = 0;
        d->base = d->done;
    }
}

/* mu held: runs device's ops until upto have run, waiting while another thread runs them. */
static cudaError_t drain_to(int device, unsigned long long upto) {
    sim_device *d = &dev[device];
    while (d->done < upto) {
        if (d->busy) {
            pthread_cond_wait(&cv, &mu);
            continue;
        }
        d->busy = 1;
        while (d->done < upto)
            run_next(d);
        d->busy = 0;
        pthread_cond_broadcast(&cv);
    }
    return d->faulted ? cudaErrorLaunchFailure : cudaSuccess;
}
static cudaError_t drain_device(int device) {
    return drain_to(device, dev[device].enqueued);
}

int sim_help(int device) {
    sim_device *d = &dev[device];
    if (d->busy || d->done == d->enqueued) return 0;
    d->busy = 1;
    run_next(d);
    d->busy = 0;
    pthread_cond_broadcast(&cv);
    return 1;
}

void sim_drain(void) {
    pthread_mutex_lock(&mu);
    for (int i = 0; i < SIM_MAX_DEVICES; i++)
        drain_device(i);
    pthread_mutex_unlock(&mu);
}

/* A call that may not happen while capturing: it breaks the capture, as CUDA's would. */
static int refused_in_capture(void) {
    if (capturing) capture_broken = 1;
    return capturing;
}

/* -------------------------------------------------------------------- devices, streams, memory */

cudaError_t cudaGetDeviceCount(int *count) {
    *count = fake_devices;
    return fake_devices ? cudaSuccess : cudaErrorNoDevice;
}
/* `qembed bench` names the device it runs on (test_bench_emu drives it here). */
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int device) {
    if (device >= fake_devices) return cudaErrorInvalidDevice;
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "host stand-in");
    prop->multiProcessorCount = 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
    if (device < 0 || device >= fake_devices || device >= SIM_MAX_DEVICES)
        return cudaErrorInvalidDevice;
    cur_device = device;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *device) {
    *device = cur_device;
    return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t *s) {
    sim_stream *st = malloc(sizeof *st);
    if (!st) return cudaErrorMemoryAllocation;
    st->device = cur_device;
    *s = (cudaStream_t)(void *)st;
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    free(s);
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    if (refused_in_capture()) return cudaErrorStreamCaptureUnsupported;
    pthread_mutex_lock(&mu);
    const cudaError_t e = drain_device(stream_device(s));
    pthread_mutex_unlock(&mu);
    return e;
}
cudaError_t cudaMemGetInfo(size_t *fr, size_t *total) {
    *fr = fake_free;
    *total = (size_t)80 << 30;
    return cudaSuccess;
}
cudaError_t cudaMalloc(void **p, size_t n) {
    size_t rounded = (n + 255) / 256 * 256;
    *p = NULL;
    if (refused_in_capture()) return cudaErrorStreamCaptureUnsupported;
    if (n > fake_malloc_max) return cudaErrorMemoryAllocation;
    *p = aligned_alloc(256, rounded ? rounded : 256);
    if (!*p) return cudaErrorMemoryAllocation;
    memset(*p, 0xFF, rounded); /* poison: unwritten fp32/bf16 reads become NaN */
    pthread_mutex_lock(&mu);
    sim.live_allocs++;
    pthread_mutex_unlock(&mu);
    return cudaSuccess;
}
/* cudaDeviceSynchronize, a blocking copy or memset, cudaFree: the current device's work first */
static cudaError_t sync_current(void) {
    pthread_mutex_lock(&mu);
    const cudaError_t e = drain_device(cur_device);
    pthread_mutex_unlock(&mu);
    return e;
}
cudaError_t cudaDeviceSynchronize(void) {
    if (refused_in_capture()) return cudaErrorStreamCaptureUnsupported;
    return sync_current();
}
cudaError_t cudaMemset(void *p, int value, size_t n) {
    if (refused_in_capture()) return cudaErrorStreamCaptureUnsupported;
    cudaError_t e = sync_current(); /* ordered after the work queued before it */
    memset(p, value, n);
    return e;
}
cudaError_t cudaFree(void *p) {
    sync_current(); /* cudaFree waits for the device */
    pthread_mutex_lock(&mu);
    if (p) sim.live_allocs--;
    pthread_mutex_unlock(&mu);
    free(p);
    return cudaSuccess;
}

/* pinned allocations: async copies to or from them stay queued */
#define MAX_PINNED 512
static struct {
    char *p;
    size_t n;
} pinned[MAX_PINNED];

static int is_pinned(const void *p) {
    pthread_mutex_lock(&mu);
    int yes = 0;
    for (int i = 0; i < MAX_PINNED && !yes; i++)
        if (pinned[i].p && (const char *)p >= pinned[i].p &&
            (const char *)p < pinned[i].p + pinned[i].n)
            yes = 1;
    pthread_mutex_unlock(&mu);
    return yes;
}
cudaError_t cudaMallocHost(void **p, size_t n) {
    *p = malloc(n ? n : 1);
    if (!*p) return cudaErrorMemoryAllocation;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < MAX_PINNED; i++)
        if (!pinned[i].p) {
            pinned[i].p = *p, pinned[i].n = n;
            sim.live_allocs++;
            pthread_mutex_unlock(&mu);
            return cudaSuccess;
        }
    pthread_mutex_unlock(&mu);
    free(*p);
    *p = NULL;
    return cudaErrorMemoryAllocation;
}
cudaError_t cudaFreeHost(void *p) {
    pthread_mutex_lock(&mu);
    for (int i = 0; i < MAX_PINNED; i++)
        if (p && pinned[i].p == p) pinned[i].p = NULL, sim.live_allocs--;
    pthread_mutex_unlock(&mu);
    free(p);
    return cudaSuccess;
}

/* -------------------------------------------------------------------- copies */

typedef struct copy_args {
    void *dst;
    const void *src;
    size_t dpitch, spitch, width, height;
} copy_args;
static int run_copy(const void *a_) {
    const copy_args *a = a_;
    for (size_t r = 0; r < a->height; r++)
        memcpy((char *)a->dst + r * a->dpitch, (const char *)a->src + r * a->spitch, a->width);
    return 0;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind k) {
    (void)k;
    if (refused_in_capture()) return cudaErrorStreamCaptureUnsupported;
    cudaError_t e = sync_current();
    memcpy(dst, src, n);
    return e;
}
/* The backend's graphs hold launches only: a copy while capturing breaks the capture. */
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind k,
                            cudaStream_t s) {
    if (refused_in_capture()) return cudaErrorStreamCaptureUnsupported;
    const int pageable = (k == cudaMemcpyHostToDevice && !is_pinned(src)) ||
                         (k == cudaMemcpyDeviceToHost && !is_pinned(dst));
    if (pageable) { /* CUDA blocks on pageable memory: everything before it has run */
        pthread_mutex_lock(&mu);
        cudaError_t e = drain_device(stream_device(s));
        pthread_mutex_unlock(&mu);
        memcpy(dst, src, n);
        return e;
    }
    copy_args a = {dst, src, n, n, n, 1};
    sim_enqueue_on(stream_device(s), 0, run_copy, &a, sizeof a);
    return cudaSuccess;
}
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch,
                              size_t width, size_t height, enum cudaMemcpyKind k, cudaStream_t s) {
    (void)k;
    if (refused_in_capture()) return cudaErrorStreamCaptureUnsupported;
    if (width > dpitch || width > spitch) return cudaErrorInvalidPitchValue;
    copy_args a = {dst, src, dpitch, spitch, width, height};
    sim_enqueue_on(stream_device(s), 0, run_copy, &a, sizeof a);
    return cudaSuccess;
}

/* -------------------------------------------------------------------- errors, events */

/* A launch the emulator refused (tests/emu: a bad grid or block shape), as cudaLaunchKernel's
 * error: reported, then cleared, by the next cudaGetLastError of the same thread. */
static _Thread_local cudaError_t launch_error = cudaSuccess;
void sim_set_launch_error(int cuda_error) {
    launch_error = (cudaError_t)cuda_error;
}
cudaError_t cudaGetLastError(void) {
    const cudaError_t e = launch_error;
    launch_error = cudaSuccess;
    return e;
}
const char *cudaGetErrorString(cudaError_t e) {
    return e == cudaSuccess ? "no error" : "host stand-in error";
}
const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
    case cudaSuccess:
        return "cudaSuccess";
    case cudaErrorLaunchFailure:
        return "cudaErrorLaunchFailure";
    case cudaErrorStreamCaptureUnsupported:
        return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated:
        return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorInvalidConfiguration:
        return "cudaErrorInvalidConfiguration";
    default:
        return "cudaErrorHostStandIn";
    }
}
cudaError_t cudaEventCreate(cudaEvent_t *e) {
    *e = (cudaEvent_t)(void *)calloc(1, sizeof(sim_event));
    return *e ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags) {
    cudaError_t r = cudaEventCreate(e);
    if (r == cudaSuccess)
        ((sim_event *)(void *)*e)->completion = !!(flags & cudaEventDisableTiming);
    return r;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    sim_event *ev = (sim_event *)(void *)e;
    pthread_mutex_lock(&mu);
    if (ev && ev->pending) in_flight--;
    pthread_mutex_unlock(&mu);
    free(ev);
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    if (refused_in_capture()) return cudaErrorStreamCaptureUnsupported;
    sim_event *ev = (sim_event *)(void *)e;
    pthread_mutex_lock(&mu);
    ev->device = stream_device(s);
    ev->at = dev[ev->device].enqueued;
    if (ev->completion && !ev->pending) {
        ev->pending = 1;
        if (++in_flight > sim.max_in_flight) sim.max_in_flight = in_flight;
    }
    pthread_mutex_unlock(&mu);
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    if (refused_in_capture()) return cudaErrorStreamCaptureUnsupported;
    sim_event *ev = (sim_event *)(void *)e;
    pthread_mutex_lock(&mu);
    if (ev->pending) ev->pending = 0, in_flight--;
    const cudaError_t r = drain_to(ev->device, ev->at);
    pthread_mutex_unlock(&mu);
    return r;
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    (void)a, (void)b;
    *ms = 0.001f;
    return cudaSuccess;
}

/* -------------------------------------------------------------------- graphs */

typedef struct sim_graph {
    op_list ops; /* owned args */
} sim_graph;

/* Capture is per host thread (the backend captures in cudaStreamCaptureModeThreadLocal): what
 * the thread enqueues goes into its graph instead of a device's queue. */
cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode mode) {
    (void)s, (void)mode;
    if (capturing) return cudaErrorIllegalState;
    if (fake_capture_fails) return cudaErrorStreamCaptureUnsupported;
    capturing = 1, capture_broken = 0;
    return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *graph) {
    (void)s;
    *graph = NULL;
    if (!capturing) return cudaErrorIllegalState;
    capturing = 0;
    if (capture_broken) {
        free_list(&captured);
        return cudaErrorStreamCaptureInvalidated;
    }
    sim_graph *g = calloc(1, sizeof *g);
    if (!g) abort();
    g->ops = captured;
    memset(&captured, 0, sizeof captured);
    *graph = (cudaGraph_t)(void *)g;
    return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph,
                                 unsigned long long flags) {
    (void)flags;
    const sim_graph *g = (const sim_graph *)(void *)graph;
    sim_graph *x = calloc(1, sizeof *x);
    if (!x) abort();
    for (size_t i = 0; i < g->ops.len; i++) { /* the exec owns its own copy of the arguments */
        sim_op op = g->ops.ops[i];
        op.args = malloc(op.n ? op.n : 1);
        if (!op.args) abort();
        memcpy(op.args, g->ops.ops[i].args, op.n);
        push(&x->ops, op);
    }
    *exec = (cudaGraphExec_t)(void *)x;
    pthread_mutex_lock(&mu);
    sim.captures++;
    sim.live_graph_execs++;
    pthread_mutex_unlock(&mu);
    return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
    if (refused_in_capture()) return cudaErrorStreamCaptureUnsupported;
    const sim_graph *x = (const sim_graph *)(void *)exec;
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < x->ops.len; i++) {
        sim_op op = x->ops.ops[i];
        op.owned = 0;
        enqueue_locked(stream_device(s), op);
    }
    sim.graph_launches++;
    pthread_mutex_unlock(&mu);
    return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    sync_current(); /* queued ops point into it */
    sim_graph *x = (sim_graph *)(void *)exec;
    free_list(&x->ops);
    free(x);
    pthread_mutex_lock(&mu);
    sim.live_graph_execs--;
    pthread_mutex_unlock(&mu);
    return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    sim_graph *g = (sim_graph *)(void *)graph;
    free_list(&g->ops);
    free(g);
    return cudaSuccess;
}
