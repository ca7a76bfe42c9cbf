/* qembed_debug.h — hooks for tests and tools, not part of the stable API. */
#ifndef QEMBED_DEBUG_H
#define QEMBED_DEBUG_H
#include "qembed.h"

/* The residual stream [len, hidden] of one sequence after the first n_layers layers
 * (backends that support it: cpu). */
qe_status qe_debug_residual(qe_engine *e, const int32_t *ids, int len, int n_layers, float *out);

/* What the engine did since qe_open, for tools (qembed bench prints the difference around each
 * workload) and tests. The engine counts steps and chunks on every backend; the graph fields
 * come from the CUDA backend (counted 1), and are zero on the cpu backend (counted 0). */
typedef struct qe_debug_counters {
    int counted;              /* 1: the graph fields below were filled by the backend */
    int max_batch_tokens;     /* the step budget: a sequence over half of it runs in chunks */
    int graphs_on;            /* small steps run as CUDA graphs now */
    long long steps;          /* forward steps run */
    long long chunks;         /* chunks of paged sequences in them (a step may hold several) */
    long long graph_captures; /* graphs captured and instantiated */
    long long graph_replays;  /* graph launches (a graph's first run after its capture counts) */
    long long graph_refused;  /* captures CUDA refused; the first one turns graphs off for good */
} qe_debug_counters;
qe_status qe_debug_counters_get(qe_engine *e, qe_debug_counters *out);

/* Small steps as CUDA graphs (on, the default) or kernel by kernel (off), for the steps that
 * follow; lets one engine time both. Turning them on has no effect where they are unavailable
 * (QE_CUDA_GRAPHS=0, QE_CUDA_GRAPH_MAX_TOKENS=0, a refused capture). QE_ERR_UNSUPPORTED on a
 * backend without graphs (cpu). */
qe_status qe_debug_set_graphs(qe_engine *e, int on);

/* Per-op GPU time of the steps that follow: on starts a fresh profile (steps then run one at a
 * time and without graphs, as with QE_PROFILE=1), off prints the report to stderr and stops.
 * QE_ERR_UNSUPPORTED on a backend without a profiler (cpu). */
qe_status qe_debug_profile(qe_engine *e, int on);

/* One GEMM shape the CUDA backend planned, and what cuBLASLt's heuristic chose for it. */
typedef struct qe_debug_gemm_plan {
    int m, n, k;     /* y[m, n] = x[m, k] w[n, k]^T */
    int out_f32;     /* fp32 output (else bf16) */
    int accumulate;  /* y += (beta = 1): o_proj and down_proj into the residual */
    int algo_id;     /* CUBLASLT_ALGO_CONFIG_ID; -1 where cuBLASLt did not say */
    int tile_id;     /* CUBLASLT_ALGO_CONFIG_TILE_ID (a cublasLtMatmulTile_t) */
    int stages_id;   /* CUBLASLT_ALGO_CONFIG_STAGES_ID (a cublasLtMatmulStages_t) */
    int splitk;      /* CUBLASLT_ALGO_CONFIG_SPLITK_NUM */
    long long calls; /* host calls since the plan was made (a CUDA graph's capture calls each
                      * GEMM once, its replays make none) */
} qe_debug_gemm_plan;
/* Copies up to cap of the backend's cached GEMM plans into out; returns how many it holds (0 on
 * the cpu backend, which plans none). */
int qe_debug_gemm_plans(qe_engine *e, qe_debug_gemm_plan *out, int cap);

/* The engine's next forward step fails as a device fault would (QE_ERR_DEVICE, its sequences
 * lost with it), without running: lets a test take one engine of several out, as a GPU that
 * faulted would be. Once; the engine runs normally after it. */
void qe_debug_inject_fault(qe_engine *e);

#endif
