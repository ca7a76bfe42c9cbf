/* qembed.h — the public C API of libqembed: open a model folder, embed token ids or texts. */
#ifndef QEMBED_H
#define QEMBED_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    QE_OK = 0,
    QE_ERR_ARG,         /* bad argument: id out of vocabulary, dims out of range, empty input */
    QE_ERR_IO,          /* file missing or unreadable */
    QE_ERR_FORMAT,      /* a model file is malformed */
    QE_ERR_UNSUPPORTED, /* a model or option this build does not run */
    QE_ERR_NOMEM,       /* host or device memory exhausted */
    QE_ERR_DEVICE,      /* CUDA fault */
    QE_ERR_TOO_LONG,    /* sequence longer than the model's positions */
    QE_ERR_CANCELLED,   /* the caller's stop function ended the call (qe_embed_ids_stoppable) */
} qe_status;

typedef enum { QE_BACKEND_CPU = 0, QE_BACKEND_CUDA = 1 } qe_backend;

typedef struct qe_options {
    const char *model_dir;
    qe_backend backend;
    int threads;          /* CPU backend worker threads; 0 = every core */
    int max_batch_tokens; /* tokens per forward step; 0 = 16384 */
    int device;           /* CUDA device ordinal */
    /* Sequences longer than max_batch_tokens run in chunks against a K/V cache (both backends).
     * CUDA: with reserve_tokens > max_batch_tokens the cache for sequences up to that many
     * tokens is allocated by qe_open (which fails with QE_ERR_NOMEM if it does not fit), so no
     * request meets an out-of-memory later; -1 reserves for the model's
     * max_position_embeddings; 0 allocates it on the first long sequence. The CPU backend
     * ignores it (its cache is host memory, made by the first long sequence). */
    int reserve_tokens;
} qe_options;

typedef struct qe_engine qe_engine;
struct tok_tokenizer;

qe_status qe_open(const qe_options *opt, qe_engine **out, char *err, size_t errlen);

/* Embeds n id sequences; out receives n rows of dims floats (dims = 0 means qe_dim()).
 * Ids are used exactly as given (no end token appended). Thread-safe (calls are serialised). */
qe_status qe_embed_ids(qe_engine *e, const int32_t *const *ids, const int *lens, int n, int dims,
                       float *out);
/* qe_embed_ids with a choice: normalize = 0 returns the pooled hidden state (after the final
 * RMSNorm) cut to dims, without L2 normalisation. */
qe_status qe_embed_ids_ex(qe_engine *e, const int32_t *const *ids, const int *lens, int n, int dims,
                          int normalize, float *out);
/* Cooperative cancellation: stop(ctx) is called on the calling thread before every step and
 * every chunk of a long sequence (so at least once per max_batch_tokens tokens of work); when it
 * returns nonzero the call ends there with QE_ERR_CANCELLED, nothing left running on the device,
 * out undefined, and the engine ready for the next call. stop must be quick; NULL never stops. */
typedef int (*qe_stop_fn)(void *ctx);
qe_status qe_embed_ids_stoppable(qe_engine *e, const int32_t *const *ids, const int *lens, int n,
                                 int dims, int normalize, float *out, qe_stop_fn stop, void *ctx);
/* Tokenizes (end token appended, truncated to the model's positions) and embeds. */
qe_status qe_embed_texts(qe_engine *e, const char *const *texts, int n, int dims, float *out);

int qe_dim(const qe_engine *e);
/* The message of the last failed call on this engine (thread-local to the engine lock). */
const char *qe_last_error(const qe_engine *e);
/* The tokenizer of the model folder, or NULL if it has no tokenizer.json. */
const struct tok_tokenizer *qe_tokenizer(const qe_engine *e);
/* Geometry for tools: NULL-safe accessors. */
int qe_max_positions(const qe_engine *e);
int qe_vocab_size(const qe_engine *e);
const char *qe_backend_name(const qe_engine *e);
/* Bytes the engine holds on the GPU (weights + activation arena); 0 on the CPU backend. */
size_t qe_device_bytes(const qe_engine *e);
const char *qe_status_name(qe_status s);

void qe_close(qe_engine *e);

#ifdef __cplusplus
}
#endif
#endif
