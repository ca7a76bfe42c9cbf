/* cuda_internal.h — what the CUDA backend's files share: the backend state, the geometry of one
 * step as launched, the per-op profiler (cuda_profile.c) and the CUDA-graph cache for small steps
 * (cuda_graph.c). Not seen outside runtime/. */
#ifndef QE_CUDA_INTERNAL_H
#define QE_CUDA_INTERNAL_H
#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels.h"
#include "weights/config.h"

#define CUDA_CHECK(call) QE_K_CHECK_GEN("CUDA", cudaError_t, call, cudaSuccess, cudaGetErrorName)
#ifdef QE_HAVE_NCCL
#include <nccl.h>
#define NCCL_CHECK(call) QE_K_CHECK_GEN("NCCL", ncclResult_t, call, ncclSuccess, ncclGetErrorString)
#endif
#define K_CALL(call)                                                                               \
    do {                                                                                           \
        if ((call) != QE_K_OK) return QE_K_ERR;                                                    \
    } while (0)

typedef enum {
    OP_EMBED,
    OP_NORM,
    OP_QKV,
    OP_ROPE,
    OP_ATTN,
    OP_OPROJ,
    OP_GATEUP,
    OP_SWIGLU,
    OP_DOWN,
    OP_GATHER,
    OP_KV,
    OP_POOL,
    OP_COUNT
} cuda_op;

/* A linear layer's weight kept quantized (cuda_qweights.c): runs of rows, each one packed type
 * (kernels/ref/ref_qpack.h) in consecutive output columns; n_runs 0: the bf16 matrix instead. */
typedef struct cuda_qrun {
    int type; /* QT_Q8_0, QT_Q4_K or QT_Q6_K */
    int rows;
    void *w; /* rows packed rows of k */
} cuda_qrun;
typedef struct cuda_qlin {
    int n_runs, k;
    cuda_qrun run[3];
} cuda_qlin;

typedef struct cuda_layer {
    qe_bf16 *wqkv;    /* [q_dim + 2*kv_dim, hidden] */
    qe_bf16 *wo;      /* [hidden, q_dim] */
    qe_bf16 *wgu;     /* [2*inter, hidden]: gate rows then up rows */
    qe_bf16 *wdown;   /* [hidden, inter] */
    float *attn_norm; /* [hidden] */
    float *mlp_norm;  /* [hidden] */
    float *q_norm;    /* [head_dim] */
    float *k_norm;    /* [head_dim] */
    /* a GGUF file's matrices kept quantized (their bf16 pointer above is then NULL) */
    cuda_qlin qqkv, qo, qgu, qdown;
} cuda_layer;

typedef struct cuda_profile {
    int enabled;
    int cap, n;
    cudaEvent_t *events;
    int *ops;
    double ms[OP_COUNT];
    long long calls[OP_COUNT];
    long long steps;
} cuda_profile;

/* Host staging for one step in flight. Two slots alternate, so the host packs step i+1 (and
 * copies out step i-1's vectors) while the GPU runs step i: the H2D copy reads ints when the
 * stream reaches it, so a slot is rewritten only after its event says that step has finished. */
typedef struct stage_slot {
    int32_t *ints;    /* pinned, N_INTS(max_tokens): the step's packed int arrays */
    int32_t *paged;   /* pinned, paged_cap: its paged chunks' arrays (step_geom) */
    float *out;       /* pinned, out_cap floats: the step's pooled vectors */
    cudaEvent_t done; /* recorded after the step's last copy */
    int busy;         /* a step was enqueued and not yet waited for */
    float *dst;       /* where out's first n floats go once done (NULL: copied straight) */
    size_t n;
} stage_slot;

/* The graph cache: one instantiated graph per padded shape (see cuda_graph.c). */
#define GRAPH_CACHE 32
typedef struct cuda_graph_entry {
    int tp, sp;   /* padded tokens and sequence slots */
    int switches; /* the kernel switches it was captured under (graph_switches) */
    cudaGraphExec_t exec;
    unsigned long long used; /* LRU clock */
} cuda_graph_entry;
typedef struct cuda_graphs {
    int available;  /* QE_CUDA_GRAPHS is not 0, max_tokens > 0, and CUDA never refused a capture */
    int wanted;     /* qe_debug_set_graphs: 1 unless a tool turned them off */
    int max_tokens; /* steps whose padded size is at most this run as graphs */
    int n;
    unsigned long long clock;
    long long captures, replays, refused; /* since open, for qe_debug_counters */
    cuda_graph_entry e[GRAPH_CACHE];
} cuda_graphs;

typedef struct cuda_state {
    qe_config cfg;
    int device; /* the CUDA runtime's current device is per host thread: set on every entry */
    int hidden, q_dim, kv_dim, qkv_dim, inter, heads, kv_heads, head_dim, layers, vocab;
    float eps;
    int max_tokens;
    int full_last_layer;
    cudaStream_t stream;
    void *wmem; /* every weight */
    size_t wbytes;
    void *amem; /* the activation arena */
    size_t abytes;
    qe_bf16 *embed;    /* [vocab, hidden]; NULL when embed_q holds it */
    int embed_qtype;   /* the packed type of embed_q, or 0 */
    void *embed_q;     /* [vocab] packed rows of hidden */
    float *final_norm; /* [hidden] */
    /* [heads] for an ALiBi model (cfg_alibi_slopes), else NULL */
    float *alibi_slopes;
    cuda_layer *layer;
    /* activations, T = max_tokens rows */
    float *x;          /* [T, hidden] residual stream */
    qe_bf16 *h;        /* [T, hidden] normed GEMM input */
    qe_bf16 *qkv;      /* [T, qkv_dim] */
    qe_bf16 *attn;     /* [T, q_dim] */
    qe_bf16 *gu;       /* [T, 2*inter] */
    qe_bf16 *act;      /* [T, inter] */
    float *x_last;     /* [T, hidden] residual rows of the pooled tokens */
    qe_bf16 *qkv_last; /* [T, qkv_dim] */
    float *pooled;     /* [T, hidden] */
    int32_t *d_ints;   /* the step's int arrays, laid out by step_geom (N_INTS(T) capacity) */
    stage_slot slot[2];
    size_t out_cap; /* floats per slot's pinned output */
    int next_slot;
    void *gemm_ws;
    qe_gemm *gemm;
    /* the paged K/V pool: layer l's rows at kv + l * kv_rows * 2 * kv_dim, each k | v of one
     * token (backend.h's qe_batch says which rows a step writes and reads) */
    qe_bf16 *kv;
    int kv_n_pages, page_size;
    size_t kv_rows, kvbytes;
    int32_t *d_paged; /* the step's paged arrays on the device, paged_cap ints */
    size_t paged_cap; /* grown (between steps) for a step that needs more */
    cuda_profile prof;
    cuda_graphs graphs;
    /* Tensor parallelism (cuda_tp.c): this state is rank tp_rank of a group of ranks whose
     * communicator is tp_comm, its widths (heads, kv_heads, inter, ...) the rank's share; NULL:
     * the plain path. */
    int tp_rank;
    struct ncclComm *tp_comm;
} cuda_state;

/* int32 capacity of the step arrays: tokens[Tp] | positions[Tp] | cu[Sp+1] | cu_last[Sp+1],
 * with Sp <= Tp <= T. The paged chunks' arrays go to d_paged: cu_k[n_paged+1] (their key counts,
 * cumulated) | kv_rows[their tokens] | block_table[n_paged * bt_stride]. */
#define N_INTS(T) (4 * (size_t)(T) + 2)

/* One step as launched. T tokens of S sequences are real, the last n_paged of them chunks of
 * paged sequences (backend.h's qe_batch); a graph step (never one with chunks) launches Tp >= T
 * tokens and Sp > S sequence slots (cuda_graph.c says how the padding is filled); else Tp = T,
 * Sp = S. The d_ pointers are the step's arrays inside d_ints and d_paged. */
typedef struct step_geom {
    int T, S, Tp, Sp;
    int max_len;       /* attention grid bound: >= every whole sequence's length */
    int n_paged;       /* chunks, the last sequences of the step */
    int max_len_paged; /* >= every chunk's length */
    int bt_stride, page_size;
    int n_paged_tokens; /* the chunks' tokens, the last of the step */
    size_t n_paged_ints;
    int n_layers; /* layers to run (fewer only for the residual hook) */
    int full_last;
    int graph; /* runs as the cached CUDA graph of its (Tp, Sp) */
    const int32_t *d_tok, *d_pos, *d_cu, *d_cu_last;
    const int32_t *d_cu_k, *d_kv_rows, *d_table;
} step_geom;

/* backend_cuda.c: enqueues embed + the layers of one step on st->stream (no host sync). */
int cuda_enqueue_layers(cuda_state *st, const step_geom *g);

/* The residual update of o_proj and down_proj under tensor parallelism: rank 0's GEMM adds its
 * partial update to x as on the plain path, the other ranks' GEMMs write theirs over their copy of
 * x, and one all-reduce (sum, fp32) of x on the rank's stream leaves x + every partial update on
 * every rank: no extra buffer and no extra kernel. */
static inline int tp_accumulate(const cuda_state *st) {
    return st->tp_rank == 0;
}
#ifdef QE_HAVE_NCCL
/* cuda_tp.c: the all-reduce of x [n floats] over the group, in place (QE_K_OK without one). */
int cuda_tp_allreduce(cuda_state *st, float *x, size_t n);
#else
static inline int cuda_tp_allreduce(cuda_state *st, float *x, size_t n) {
    (void)st, (void)x, (void)n;
    return QE_K_OK;
}
#endif

/* cuda_qweights.c: plans which matrices stay quantized (before layout_weights), their bytes,
 * their upload (stage: stage_bytes of host memory) and their GEMM (y at the run's columns). */
struct qe_model;
void cuda_qplan(cuda_state *st, const struct qe_model *m);
size_t cuda_qrun_bytes(const cuda_qlin *q, int i);
int cuda_qupload_layer(cuda_state *st, const struct qe_model *m, int l, void *stage,
                       size_t stage_bytes);
int cuda_qupload_embed(cuda_state *st, const struct qe_model *m, void *stage, size_t stage_bytes);
int cuda_qlinear(const cuda_qlin *q, const qe_bf16 *x, int ldx, int rows, void *y, int ldy,
                 int y_f32, int accumulate, void *ws, size_t ws_bytes, qe_stream s);

/* cuda_profile.c (QE_PROFILE=1 or qe_debug_profile): an event after every op, per-op totals
 * printed at destroy or when a tool turns the profile off. */
void prof_init(cuda_state *st);
/* on: a fresh profile of the steps that follow; off: the report, then no more events. 0, or -1
 * when the events cannot be made. */
int prof_set(cuda_state *st, int on);
void prof_start(cuda_state *st);
void prof_mark(cuda_state *st, cuda_op op);
void prof_finish(cuda_state *st);
void prof_report(cuda_state *st);
void prof_free(cuda_state *st);

/* cuda_graph.c */
void graph_init(cuda_state *st);
/* 1 when small steps run as graphs now: available, wanted, and no profile running. */
int graph_on(const cuda_state *st);
/* 1 when an ordinary step of *T tokens and *S sequences runs as a graph; then *T and *S become
 * its padded token count and sequence slots. */
int graph_shape(const cuda_state *st, int *T, int *S);
/* Runs cuda_enqueue_layers(st, g) as the cached graph of g's shape, capturing it on first use.
 * A failed capture turns graphs off (one line on stderr) and runs the step eagerly instead. */
int graph_enqueue_layers(cuda_state *st, const step_geom *g);
void graph_free(cuda_state *st);

#endif
