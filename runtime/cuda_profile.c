/* cuda_profile.c — QE_PROFILE=1: a CUDA event after every op of a step, per-op GPU time summed
 * over steps and printed when the backend is destroyed (qe_close). qe_debug_profile turns the
 * same profile on for the steps that follow and prints it when turned off, so one engine can
 * profile one workload among several (qembed bench --workload ...,profile=1). Steps run
 * synchronously and without graphs while it is on, so each step's events are read before the
 * next one records. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

static const char *const op_names[OP_COUNT] = {
    "embed",        "add_rmsnorm", "qkv_gemm",  "qk_norm_rope", "attention", "o_gemm",
    "gate_up_gemm", "swiglu",      "down_gemm", "gather_last",  "kv_append", "pool"};

/* The events of one step (an event after every op), made once; 1 when there are enough. */
static int prof_alloc(cuda_state *st) {
    cuda_profile *p = &st->prof;
    if (p->events) return p->cap > 1;
    p->cap = 16 + 12 * st->layers;
    p->events = calloc((size_t)p->cap, sizeof *p->events);
    p->ops = calloc((size_t)p->cap, sizeof *p->ops);
    if (!p->events || !p->ops) {
        p->cap = 0;
        return 0;
    }
    for (int i = 0; i < p->cap; i++)
        if (cudaEventCreate(&p->events[i]) != cudaSuccess) {
            p->cap = i;
            break;
        }
    return p->cap > 1;
}

void prof_init(cuda_state *st) {
    const char *env = getenv("QE_PROFILE");
    if (!env || strcmp(env, "1") != 0) return;
    st->prof.enabled = prof_alloc(st);
}

int prof_set(cuda_state *st, int on) {
    cuda_profile *p = &st->prof;
    if (!on) {
        prof_report(st);
        p->enabled = 0;
        return 0;
    }
    if (!prof_alloc(st)) return -1;
    memset(p->ms, 0, sizeof p->ms);
    memset(p->calls, 0, sizeof p->calls);
    p->steps = 0;
    p->enabled = 1;
    return 0;
}

void prof_start(cuda_state *st) {
    cuda_profile *p = &st->prof;
    if (!p->enabled) return;
    p->n = 0;
    cudaEventRecord(p->events[p->n++], st->stream);
}

void prof_mark(cuda_state *st, cuda_op op) {
    cuda_profile *p = &st->prof;
    if (!p->enabled || p->n >= p->cap) return;
    p->ops[p->n] = op;
    cudaEventRecord(p->events[p->n++], st->stream);
}

void prof_finish(cuda_state *st) {
    cuda_profile *p = &st->prof;
    if (!p->enabled || p->n < 2) return;
    cudaEventSynchronize(p->events[p->n - 1]);
    for (int i = 1; i < p->n; i++) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, p->events[i - 1], p->events[i]) == cudaSuccess) {
            p->ms[p->ops[i]] += ms;
            p->calls[p->ops[i]]++;
        }
    }
    p->steps++;
}

void prof_report(cuda_state *st) {
    cuda_profile *p = &st->prof;
    if (!p->enabled) return;
    double total = 0;
    for (int i = 0; i < OP_COUNT; i++)
        total += p->ms[i];
    fprintf(stderr, "qembed cuda profile: %lld steps, %.3f ms of GPU time in ops\n", p->steps,
            total);
    fprintf(stderr, "  %-14s %12s %8s %10s %12s\n", "op", "total ms", "%", "calls", "us/call");
    for (int i = 0; i < OP_COUNT; i++) {
        if (!p->calls[i]) continue;
        fprintf(stderr, "  %-14s %12.3f %7.1f%% %10lld %12.2f\n", op_names[i], p->ms[i],
                total > 0 ? 100.0 * p->ms[i] / total : 0.0, p->calls[i],
                1000.0 * p->ms[i] / (double)p->calls[i]);
    }
}

void prof_free(cuda_state *st) {
    cuda_profile *p = &st->prof;
    if (p->events)
        for (int i = 0; i < p->cap; i++)
            cudaEventDestroy(p->events[i]);
    free(p->events);
    free(p->ops);
    memset(p, 0, sizeof *p);
}
