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

/* The step budget when qe_options.max_batch_tokens is 0. */
enum { QE_DEFAULT_BATCH_TOKENS = 16384 };

/* A packed batch: every sequence's tokens back to back, no padding. */
typedef struct qe_batch {
    int n_seqs;
    int n_tokens;
    const int32_t *tokens;     /* [n_tokens] */
    const int32_t *positions;  /* [n_tokens], restart at 0 per sequence */
    const int32_t *cu_seqlens; /* [n_seqs + 1], cu_seqlens[0] = 0 */
    /* Cancellation (qe_embed_ids_stoppable): polled before every step and chunk; when it returns
     * nonzero the backend waits for what it started and returns QE_ERR_CANCELLED. NULL: never. */
    qe_stop_fn stop;
    void *stop_ctx;
} qe_batch;

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
    /* out: [n_seqs, dims]: each sequence's last row after the final RMSNorm, cut to dims,
     * L2-normalised when normalize. */
    qe_status (*forward)(void *state, const qe_batch *batch, int dims, int normalize, float *out,
                         char *err, size_t errlen);
    void (*destroy)(void *state);
    /* Optional (NULL if absent), for tests: the residual stream [n_tokens, hidden] after the
     * first n_layers layers. */
    qe_status (*residual)(void *state, const qe_batch *batch, int n_layers, float *out, char *err,
                          size_t errlen);
    /* Optional: bytes the backend holds on its device (weights + activations). */
    size_t (*device_bytes)(const void *state);
    /* 1: forward takes a batch of any size and splits it into steps under max_batch_tokens
     * itself (the CUDA backend, which overlaps packing a step with running the previous one), so
     * the engine hands it a whole call at once; 0: the engine splits. */
    int splits_steps;
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

#endif
