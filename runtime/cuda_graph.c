/* cuda_graph.c — CUDA graphs for small steps. A 4B step of one 24-token query is ~400 launches
 * of kernels that run a few microseconds each, so launch latency, not the GPU, sets its time; a
 * graph replays the whole sequence with one launch.
 *
 * A graph bakes in every launch's grid and arguments, so steps are padded to a few shapes and one
 * graph is kept per shape:
 *   - tokens: T rounds up to Tp = a multiple of max(16, nextpow2(T) / 8) (<= 12.5% more rows once
 *     past 128; below that the step is weight-bound and the extra rows are free);
 *   - sequences: Sp = nextpow2(S + 1) slots. Slot S is a filler sequence holding the Tp - T padding
 *     tokens (id 0, positions 0..), so every launched row belongs to some sequence and is computed
 *     from real values; the slots after it are empty (length 0: the attention blocks exit, the
 *     last-row gathers copy a valid row that nothing reads).
 * Rows never mix (GEMMs, norms, RoPE and SwiGLU are per row; attention per sequence), so a real
 * sequence's vector does not depend on the padding. The graph holds embed + the layers only: the
 * int arrays are copied into d_ints before it (their device addresses depend only on Tp and Sp)
 * and pooling (which takes dims and normalize) runs after it, with the real S.
 *
 * QE_CUDA_GRAPHS=0 turns graphs off; QE_CUDA_GRAPH_MAX_TOKENS=N (default 512) is the largest
 * padded step that runs as one. A profile (QE_PROFILE=1, qe_debug_profile) turns them off while
 * it runs (it times each op with events); qe_debug_set_graphs turns them off and on again. At
 * most GRAPH_CACHE graphs are kept; the least recently used is replaced. Captures, replays and
 * refused captures are counted for qe_debug_counters.
 *
 * A graph also bakes in which kernels ran: the process-wide switches QE_ATTN, QE_GEMM and QE_PDL
 * (docs/kernels.md) are part of its key, so a tool that changes one between calls (qembed
 * bench's attn= / gemm= / pdl= workload keys) gets a fresh capture, never a stale replay. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

#define GRAPH_DEFAULT_MAX_TOKENS 512

static int next_pow2(int n) {
    int p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

static int pad_tokens(int T) {
    int gran = next_pow2(T) / 8;
    if (gran < 16) gran = 16;
    return (T + gran - 1) / gran * gran;
}

static int pad_seqs(int S) {
    return next_pow2(S + 1);
}

void graph_init(cuda_state *st) {
    cuda_graphs *c = &st->graphs;
    memset(c, 0, sizeof *c);
    const char *on = getenv("QE_CUDA_GRAPHS");
    const char *max = getenv("QE_CUDA_GRAPH_MAX_TOKENS");
    c->max_tokens = GRAPH_DEFAULT_MAX_TOKENS;
    if (max && *max) {
        char *end = NULL;
        long v = strtol(max, &end, 10);
        if (*end == '\0' && v >= 0 && v <= (1 << 20)) {
            c->max_tokens = (int)v;
        } else {
            fprintf(stderr, "qembed: ignoring QE_CUDA_GRAPH_MAX_TOKENS=%s (want 0..1048576)\n",
                    max);
        }
    }
    c->available = !(on && strcmp(on, "0") == 0) && c->max_tokens > 0;
    c->wanted = 1;
}

int graph_on(const cuda_state *st) {
    /* the profiler times each op with events between launches, which a graph would hide */
    return st->graphs.available && st->graphs.wanted && !st->prof.enabled;
}

int graph_shape(const cuda_state *st, int *T, int *S) {
    const cuda_graphs *c = &st->graphs;
    if (!graph_on(st)) return 0;
    const int tp = pad_tokens(*T), sp = pad_seqs(*S);
    /* the arena and d_ints hold max_tokens rows and max_tokens + 1 offsets */
    if (tp > c->max_tokens || tp > st->max_tokens || sp > st->max_tokens) return 0;
    *T = tp, *S = sp;
    return 1;
}

/* The kernel switches as one number (each a small index). */
static int graph_switches(void) {
    return qe_attention_variant() | qe_gemm_path() << 8 | qe_pdl_enabled() << 16;
}

static cuda_graph_entry *find(cuda_graphs *c, int tp, int sp) {
    const int sw = graph_switches();
    for (int i = 0; i < c->n; i++)
        if (c->e[i].tp == tp && c->e[i].sp == sp && c->e[i].switches == sw) return &c->e[i];
    return NULL;
}

/* A free entry, or the least recently used one emptied. */
static cuda_graph_entry *take_entry(cuda_state *st) {
    cuda_graphs *c = &st->graphs;
    if (c->n < GRAPH_CACHE) return &c->e[c->n++];
    cuda_graph_entry *lru = &c->e[0];
    for (int i = 1; i < c->n; i++)
        if (c->e[i].used < lru->used) lru = &c->e[i];
    /* a launch of it may still be queued (the previous step): let it finish first; rare */
    cudaStreamSynchronize(st->stream);
    cudaGraphExecDestroy(lru->exec);
    lru->exec = NULL;
    return lru;
}

/* Captures g's layers into a graph; NULL (graphs now off) when CUDA refuses. */
static cuda_graph_entry *capture(cuda_state *st, const step_geom *g) {
    cuda_graphs *c = &st->graphs;
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    const char *why = NULL;
    cudaError_t e = cudaStreamBeginCapture(st->stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
        why = cudaGetErrorName(e);
    } else {
        const int rc = cuda_enqueue_layers(st, g);
        /* always end the capture: the stream must leave capture mode whatever happened */
        e = cudaStreamEndCapture(st->stream, &graph);
        if (rc != QE_K_OK) {
            why = qe_k_last_error();
        } else if (e != cudaSuccess) {
            why = cudaGetErrorName(e);
        } else if ((e = cudaGraphInstantiate(&exec, graph, 0)) != cudaSuccess) {
            why = cudaGetErrorName(e);
        }
    }
    if (graph) cudaGraphDestroy(graph);
    if (why) {
        cudaGetLastError(); /* the failure is reported here; the eager step starts clean */
        c->available = 0;
        c->refused++;
        fprintf(stderr,
                "qembed: CUDA graphs turned off: capturing a %d-token step failed (%s); steps "
                "launch kernel by kernel from now on\n",
                g->Tp, why);
        return NULL;
    }
    cuda_graph_entry *en = take_entry(st);
    en->tp = g->Tp, en->sp = g->Sp, en->switches = graph_switches(), en->exec = exec;
    c->captures++;
    return en;
}

int graph_enqueue_layers(cuda_state *st, const step_geom *g) {
    cuda_graphs *c = &st->graphs;
    cuda_graph_entry *en = find(c, g->Tp, g->Sp);
    if (!en) en = capture(st, g);
    if (!en) return cuda_enqueue_layers(st, g);
    en->used = ++c->clock;
    CUDA_CHECK(cudaGraphLaunch(en->exec, st->stream));
    c->replays++;
    return QE_K_OK;
}

void graph_free(cuda_state *st) {
    cuda_graphs *c = &st->graphs;
    for (int i = 0; i < c->n; i++)
        if (c->e[i].exec) cudaGraphExecDestroy(c->e[i].exec);
    c->n = 0;
}
