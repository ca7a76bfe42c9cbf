/* backend.h — what the engine asks of a backend (cpu, cuda): one forward over a packed batch,
 * returning pooled, normalised embeddings. Internal to runtime/. */
#ifndef QE_RUNTIME_BACKEND_H
#define QE_RUNTIME_BACKEND_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "qembed.h"
#include "qembed_debug.h"
#include "../weights/model.h"

/* The step budget when qe_options.max_batch_tokens is 0, and the pool's page size when
 * qe_options.kv_page_tokens is 0. */
enum { QE_DEFAULT_BATCH_TOKENS = 16384, QE_DEFAULT_PAGE_TOKENS = 256 };

/* One forward step: every sequence's tokens back to back, no padding. The first
 * n_seqs - n_paged sequences are whole (positions 0..len-1, attending to their own rows); the last
 * n_paged are chunks of long sequences whose K/V rows live in the paged pool (kv_pool.h): chunk i
 * holds the tokens at positions past[i] .. past[i] + its length - 1, every earlier token's K|V
 * already in its pages. Each layer first writes the chunk's K|V rows to the pool rows kv_rows
 * gives, then the chunk's queries attend to all past[i] + length keys through block_table row i
 * (the attention kernels' paged addressing). */
typedef struct qe_batch {
    int n_seqs;
    int n_tokens;
    const int32_t *tokens;     /* [n_tokens] */
    const int32_t *positions;  /* [n_tokens] */
    const int32_t *cu_seqlens; /* [n_seqs + 1], cu_seqlens[0] = 0 */
    int n_paged;
    const int32_t *past;    /* [n_paged] */
    const int32_t *kv_rows; /* [tokens of the paged chunks]: the pool row of each (every layer) */
    const int32_t *block_table; /* [n_paged, bt_stride] page ids */
    int bt_stride;
    /* [n_seqs, dims]: row s receives sequence s's pooled vector; the row of a chunk that is not
     * its sequence's last holds nothing useful. */
    float *out;
    /* Cancellation (qe_embed_ids_stoppable): polled before every step; when it returns nonzero
     * the backend waits for what it started and returns QE_ERR_CANCELLED. NULL: never. */
    qe_stop_fn stop;
    void *stop_ctx;
} qe_batch;

/* The pool pages qe_options asks for (kv_pool_tokens resolved by qe_kv_pool_tokens' rules, page
 * size and task already resolved by the engine); *is_default says a backend may make fewer. The
 * default holds one input of the longest the engine takes by default: the model's positions, a
 * reranker's QE_RERANK_DEFAULT_TOKENS (five times less for Qwen3's 40960). */
static inline int qe_kv_pool_pages_wanted(const qe_options *o, const qe_config *c,
                                          int *is_default) {
    *is_default = o->kv_pool_tokens == 0;
    long long longest = c->max_position_embeddings;
    if (o->task == QE_TASK_RERANK && longest > QE_RERANK_DEFAULT_TOKENS)
        longest = QE_RERANK_DEFAULT_TOKENS;
    const long long tokens = o->kv_pool_tokens < 0    ? 0
                             : o->kv_pool_tokens == 0 ? longest
                                                      : o->kv_pool_tokens;
    return (int)((tokens + o->kv_page_tokens - 1) / o->kv_page_tokens);
}

/* Whether the batch's caller asked to stop; fills err with the backend's message when it did. */
static inline int qe_batch_stopped(const qe_batch *b, const char *who, char *err, size_t errlen) {
    if (!b->stop || !b->stop(b->stop_ctx)) return 0;
    snprintf(err, errlen, "%s: cancelled by the caller at a step boundary", who);
    return 1;
}

typedef struct qe_backend_ops {
    const char *name;
    /* Builds backend state from the bound model (weights converted/copied as needed). */
    qe_status (*create)(const qe_model *model, const qe_options *opt, void **state, char *err,
                        size_t errlen);
    /* Runs n_steps steps in order (a step may read K/V an earlier one wrote to the pool) and
     * returns once every step's out rows are written: each sequence's last row after the final
     * RMSNorm, cut to dims, L2-normalised when normalize. A backend may overlap a step's host
     * work with the previous step's device work. */
    qe_status (*forward)(void *state, const qe_batch *steps, int n_steps, int dims, int normalize,
                         char *err, size_t errlen);
    void (*destroy)(void *state);
    /* Optional (NULL if absent), for tests: the residual stream [n_tokens, hidden] of one step
     * after its first n_layers layers. */
    qe_status (*residual)(void *state, const qe_batch *step, int n_layers, float *out, char *err,
                          size_t errlen);
    /* Pages of the K/V pool the backend made at create, opt->kv_pool_tokens rounded up to
     * opt->kv_page_tokens (the engine resolves both first; a backend may make fewer when its
     * memory cannot hold the default size, never when the caller asked for a size). */
    int (*kv_pages)(const void *state);
    /* Optional: bytes the backend holds on its device (weights + activations). */
    size_t (*device_bytes)(const void *state);
    /* Optional tool hooks behind qembed_debug.h (NULL: the backend has no such thing). counters
     * fills *out; set_graphs and profile return 0 on success; gemm_plans returns the number of
     * cached plans, copying up to cap of them. */
    void (*counters)(const void *state, qe_debug_counters *out);
    int (*set_graphs)(void *state, int on);
    int (*profile)(void *state, int on);
    int (*gemm_plans)(const void *state, qe_debug_gemm_plan *out, int cap);
} qe_backend_ops;

extern const qe_backend_ops qe_cpu_backend;
#ifdef QE_HAVE_CUDA
extern const qe_backend_ops qe_cuda_backend;
#endif
#ifdef QE_HAVE_NCCL
/* cuda_tp.c: tensor_parallel ranks of qe_cuda_backend, one per device, over NCCL. */
extern const qe_backend_ops qe_cuda_tp_backend;
#endif

#endif
