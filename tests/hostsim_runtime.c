/* hostsim_runtime.c — host stand-ins for the CUDA runtime calls runtime/backend_cuda.c makes, with
 * a lazy stream and graph capture (hostsim.h says why). Defined in the test executable, they take
 * precedence over libcudart_static at link time; a runtime call added to the backend needs one
 * here too (else the link pulls the real archive member and fails with duplicate symbols). */
#include <cuda_runtime_api.h>
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
    int owned; /* args freed once run (graph ops belong to their graph) */
} sim_op;

typedef struct op_list {
    sim_op *ops;
    size_t len, cap;
} op_list;

static op_list queue; /* the stream: queue.ops[done - base ..] are pending */
static unsigned long long enqueued, done, base;
static int faulted; /* an op failed: sticky, like a device fault */
static int capturing, capture_broken;
static op_list captured;

/* A completion event (created with cudaEventDisableTiming, as the backend's per-step events are;
 * the profiler's timing events are not counted) recorded and not yet waited for is a step in
 * flight. */
typedef struct sim_event {
    unsigned long long at; /* ops enqueued when recorded */
    int completion;
    int pending;
} sim_event;
static long in_flight;

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

int sim_enqueue(int (*run)(const void *), const void *args, size_t n) {
    sim_op op = {run, malloc(n ? n : 1), n, 1};
    if (!op.args) abort();
    memcpy(op.args, args, n);
    if (capturing) {
        push(&captured, op);
    } else {
        push(&queue, op);
        enqueued++;
    }
    return 0;
}

static cudaError_t drain_to(unsigned long long upto) {
    while (done < upto) {
        sim_op *op = &queue.ops[done - base];
        if (!faulted && op->run(op->args) != 0) faulted = 1;
        if (op->owned) free(op->args);
        done++;
    }
    if (done == enqueued) { /* all ran: reuse the array */
        queue.len = 0;
        base = done;
    }
    return faulted ? cudaErrorLaunchFailure : cudaSuccess;
}

void sim_drain(void) {
    drain_to(enqueued);
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
    return device < fake_devices ? cudaSuccess : cudaErrorInvalidDevice;
}
cudaError_t cudaStreamCreate(cudaStream_t *s) {
    static int token;
    *s = (cudaStream_t)(void *)&token;
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    (void)s;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    (void)s;
    if (refused_in_capture()) return cudaErrorStreamCaptureUnsupported;
    return drain_to(enqueued);
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
    sim.live_allocs++;
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) {
    if (refused_in_capture()) return cudaErrorStreamCaptureUnsupported;
    return drain_to(enqueued);
}
cudaError_t cudaMemset(void *p, int value, size_t n) {
    if (refused_in_capture()) return cudaErrorStreamCaptureUnsupported;
    cudaError_t e = drain_to(enqueued); /* ordered after the work queued before it */
    memset(p, value, n);
    return e;
}
cudaError_t cudaFree(void *p) {
    drain_to(enqueued); /* cudaFree waits for the device */
    if (p) sim.live_allocs--;
    free(p);
    return cudaSuccess;
}

/* pinned allocations: async copies to or from them stay queued */
#define MAX_PINNED 64
static struct {
    char *p;
    size_t n;
} pinned[MAX_PINNED];

static int is_pinned(const void *p) {
    for (int i = 0; i < MAX_PINNED; i++)
        if (pinned[i].p && (const char *)p >= pinned[i].p &&
            (const char *)p < pinned[i].p + pinned[i].n)
            return 1;
    return 0;
}
cudaError_t cudaMallocHost(void **p, size_t n) {
    *p = malloc(n ? n : 1);
    if (!*p) return cudaErrorMemoryAllocation;
    for (int i = 0; i < MAX_PINNED; i++)
        if (!pinned[i].p) {
            pinned[i].p = *p, pinned[i].n = n;
            sim.live_allocs++;
            return cudaSuccess;
        }
    free(*p);
    *p = NULL;
    return cudaErrorMemoryAllocation;
}
cudaError_t cudaFreeHost(void *p) {
    for (int i = 0; i < MAX_PINNED; i++)
        if (p && pinned[i].p == p) pinned[i].p = NULL, sim.live_allocs--;
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
    cudaError_t e = drain_to(enqueued);
    memcpy(dst, src, n);
    return e;
}
/* The backend's graphs hold launches only: a copy while capturing breaks the capture. */
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind k,
                            cudaStream_t s) {
    (void)s;
    if (refused_in_capture()) return cudaErrorStreamCaptureUnsupported;
    const int pageable = (k == cudaMemcpyHostToDevice && !is_pinned(src)) ||
                         (k == cudaMemcpyDeviceToHost && !is_pinned(dst));
    if (pageable) { /* CUDA blocks on pageable memory: everything before it has run */
        cudaError_t e = drain_to(enqueued);
        memcpy(dst, src, n);
        return e;
    }
    copy_args a = {dst, src, n, n, n, 1};
    sim_enqueue(run_copy, &a, sizeof a);
    return cudaSuccess;
}
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch,
                              size_t width, size_t height, enum cudaMemcpyKind k, cudaStream_t s) {
    (void)k, (void)s;
    if (refused_in_capture()) return cudaErrorStreamCaptureUnsupported;
    if (width > dpitch || width > spitch) return cudaErrorInvalidPitchValue;
    copy_args a = {dst, src, dpitch, spitch, width, height};
    sim_enqueue(run_copy, &a, sizeof a);
    return cudaSuccess;
}

/* -------------------------------------------------------------------- errors, events */

/* A launch the emulator refused (tests/emu: a bad grid or block shape), as cudaLaunchKernel's
 * error: reported, then cleared, by the next cudaGetLastError. */
static cudaError_t launch_error = cudaSuccess;
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
    if (ev && ev->pending) in_flight--;
    free(ev);
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    (void)s;
    if (refused_in_capture()) return cudaErrorStreamCaptureUnsupported;
    sim_event *ev = (sim_event *)(void *)e;
    ev->at = enqueued;
    if (ev->completion && !ev->pending) {
        ev->pending = 1;
        if (++in_flight > sim.max_in_flight) sim.max_in_flight = in_flight;
    }
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    if (refused_in_capture()) return cudaErrorStreamCaptureUnsupported;
    sim_event *ev = (sim_event *)(void *)e;
    if (ev->pending) ev->pending = 0, in_flight--;
    return drain_to(ev->at > done ? ev->at : done);
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
    sim.captures++;
    sim.live_graph_execs++;
    return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
    (void)s;
    if (refused_in_capture()) return cudaErrorStreamCaptureUnsupported;
    const sim_graph *x = (const sim_graph *)(void *)exec;
    for (size_t i = 0; i < x->ops.len; i++) {
        sim_op op = x->ops.ops[i];
        op.owned = 0;
        push(&queue, op);
        enqueued++;
    }
    sim.graph_launches++;
    return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    drain_to(enqueued); /* queued ops point into it */
    sim_graph *x = (sim_graph *)(void *)exec;
    free_list(&x->ops);
    free(x);
    sim.live_graph_execs--;
    return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    sim_graph *g = (sim_graph *)(void *)graph;
    free_list(&g->ops);
    free(g);
    return cudaSuccess;
}
