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

/* What a model folder is for. AUTO decides from the folder (qe_model_task says what it chose):
 * sentence-transformers files (modules.json, config_sentence_transformers.json) mean an embedding
 * model; without them, an lm_head.weight or a tokenizer that appends no end token mean a
 * Qwen3-Reranker checkpoint; anything else is an embedding model. */
typedef enum { QE_TASK_AUTO = 0, QE_TASK_EMBED, QE_TASK_RERANK } qe_task;

typedef struct qe_options {
    const char *model_dir;
    qe_backend backend;
    int threads;          /* CPU backend worker threads; 0 = every core */
    int max_batch_tokens; /* tokens per forward step; 0 = 16384 */
    int device;           /* CUDA device ordinal */
    /* The paged K/V pool (both backends): sequences longer than half a step run in chunks whose
     * K/V rows live in pages of kv_page_tokens tokens (0 = 256), one pool for every such
     * sequence in flight, made by qe_open. kv_pool_tokens: its size in tokens (rounded up to
     * pages); qe_open fails (QE_ERR_NOMEM) when a size asked for does not fit. 0: the model's
     * max_position_embeddings (a reranker's: at most QE_RERANK_DEFAULT_TOKENS, its longest prompt
     * by default), made smaller on a GPU whose memory cannot hold that after the weights and
     * activations (qe_kv_pool_tokens says what was made). -1: no pool (then a
     * sequence longer than max_batch_tokens is refused). A sequence that needs more pages than
     * the pool has is refused with QE_ERR_TOO_LONG; one that needs more than are free waits. */
    int kv_pool_tokens;
    int kv_page_tokens;
    qe_task task; /* AUTO (0) by default; RERANK needs a tokenizer with "yes" and "no" */
    /* Tensor parallelism: each layer split over this many ranks (Megatron-style: q/k/v by heads,
     * gate/up by columns, o_proj and down_proj by rows, their partial updates summed); 0 or 1:
     * none. It must divide the query and the kv heads (qe_open names the valid values). The CPU
     * backend runs the ranks in process, summing in shared memory (it proves the split; it is no
     * faster); the CUDA backend runs one rank per GPU, one host thread each, the sums an NCCL
     * all-reduce (a build without NCCL refuses more than one rank). QE_CUDA_TP_NCCL=1 in the
     * environment sends tensor_parallel 1 on CUDA through the NCCL path too (one rank), for
     * comparing the two paths. */
    int tensor_parallel;
    /* The CUDA device of each tensor-parallel rank: tensor_parallel ordinals, all different
     * (NCCL runs one rank per GPU), read by qe_open only. NULL: device, device + 1, ... */
    const int *tp_devices;
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

/* ---- Steps across calls: the engine's scheduler for a server that mixes requests ----
 * Sequences are queued one by one (qe_sched_add) and run by qe_sched_step, one forward step per
 * call, so a server can add short queries between the chunks of long documents; the policy is
 * the one qe_embed_ids uses (docs/architecture.md, "Scheduler"). One scheduler per engine at a
 * time; calls are serialised with every other engine call. */
typedef struct qe_sched qe_sched;
typedef struct qe_sched_hooks {
    /* A sequence's vector (dims floats; valid during the call). */
    void (*done)(void *ctx, void *tag, const float *vec);
    /* Polled for every queued and in-flight sequence before each step: nonzero drops it at once
     * (an in-flight sequence's pages go back to the pool). NULL: never. */
    int (*drop)(void *ctx, void *tag);
    /* A sequence that will get no vector: dropped (QE_ERR_CANCELLED) or lost with a failed step
     * (the step's error). */
    void (*gone)(void *ctx, void *tag, qe_status why);
    /* Optional: called for every sequence of a step that ran (whole, or a chunk), after it ran
     * and before its done(), with the step's seconds: lets a server charge compute time. */
    void (*ran)(void *ctx, void *tag, double step_s);
    void *ctx;
} qe_sched_hooks;
typedef struct qe_sched_stats {
    int seqs, tokens; /* in the step just run */
    int chunks;       /* of them, chunks of paged sequences */
    int finished;     /* vectors delivered */
    long waiting;     /* sequences queued or in flight after the step */
    int kv_used_tokens, kv_total_tokens;
    double seconds; /* the step's time */
} qe_sched_stats;
/* Vectors dims wide (0 = qe_dim), L2-normalised when normalize. */
qe_status qe_sched_open(qe_engine *e, int dims, int normalize, qe_sched **out);
/* Queues a sequence; ids are used as given and must stay valid until done or gone is called for
 * tag. QE_ERR_ARG / QE_ERR_TOO_LONG as qe_embed_ids would answer (message in qe_last_error). */
qe_status qe_sched_add(qe_sched *s, const int32_t *ids, int len, void *tag);
/* Runs one step (QE_OK with stats->seqs 0 when nothing waits). On a backend error the step's
 * sequences get gone() with it and the rest stay queued. stats may be NULL. */
qe_status qe_sched_step(qe_sched *s, const qe_sched_hooks *h, qe_sched_stats *stats);
long qe_sched_waiting(const qe_sched *s);
/* gone(QE_ERR_CANCELLED) for every sequence left, then frees the scheduler. h may be NULL. */
void qe_sched_close(qe_sched *s, const qe_sched_hooks *h);

/* Per-token vectors of one sequence, out [len, qe_dim]: the last layer's hidden state of every
 * token after the final RMSNorm, not normalised (the last row equals qe_embed_ids_ex with
 * normalize 0 at full width). For late chunking and TEI's /embed_all. Backends with a residual
 * hook (cpu, cuda); QE_ERR_UNSUPPORTED elsewhere. */
qe_status qe_embed_tokens(qe_engine *e, const int32_t *ids, int len, float *out);

/* Tokenizes (end token appended, truncated to the model's positions) and embeds. */
qe_status qe_embed_texts(qe_engine *e, const char *const *texts, int n, int dims, float *out);

/* ---- Reranking (Qwen3-Reranker): the relevance of documents to a query ----
 * score = sigmoid((W[yes] - W[no]) . h): h the last token's hidden state after the final RMSNorm,
 * W lm_head.weight (embed_tokens.weight when the embeddings are tied), "yes" and "no" resolved
 * through the tokenizer; the difference row is made once, in fp32, at qe_open. Every call below
 * answers QE_ERR_UNSUPPORTED on an engine whose task is not QE_TASK_RERANK. */
typedef struct qe_rerank_opts {
    const char *instruction; /* NULL: QE_RERANK_DEFAULT_INSTRUCTION; "" is an empty one */
    int max_tokens;          /* the whole prompt's limit; 0 = 8192, at most the model's positions */
    int raw;                 /* 1: no template: the query's ids, then the document's */
    int truncate_left;       /* 1: a document too long loses its start instead of its end */
    int no_truncate;         /* 1: a prompt over max_tokens is QE_ERR_TOO_LONG */
} qe_rerank_opts;
#define QE_RERANK_DEFAULT_INSTRUCTION                                                              \
    "Given a web search query, retrieve relevant passages that answer the query"
#define QE_RERANK_DEFAULT_TOKENS 8192

/* The prompt of one (query, document) pair, as the official construction makes it: the template's
 * prefix, "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}" and the suffix,
 * each tokenized on its own without special tokens, ids concatenated; only the body is cut (from
 * its end, the document first, as the official code does; with truncate_left the document's
 * start) so the whole fits max_tokens. *ids is malloc'd; *truncated (may be NULL) says whether
 * anything was cut. o may be NULL. A failure's message goes to err (the engine's last error is
 * untouched: this reads only the tokenizer and the template, and never waits for the engine). */
qe_status qe_rerank_prompt(const qe_engine *e, const char *query, size_t query_len,
                           const char *document, size_t document_len, const qe_rerank_opts *o,
                           int32_t **ids, int *len, int *truncated, char *err, size_t errlen);
/* The template as text with "{query}" and "{document}" placeholders and the instruction written in
 * (NULL: the default): the form llama.cpp's converter stores as tokenizer.chat_template.rerank in
 * a Qwen3-Reranker GGUF. Into buf (cap bytes, NUL-terminated); returns the length, or -1 when it
 * does not fit. */
int qe_rerank_template(const char *instruction, char *buf, size_t cap);
/* Scores of n prompts given as ids (each a whole prompt, used as given), into scores[n]; packed and
 * batched like qe_embed_ids. */
qe_status qe_rerank_ids(qe_engine *e, const int32_t *const *ids, const int *lens, int n,
                        float *scores);
/* Scores of n documents against one query (NUL-terminated texts). o may be NULL. */
qe_status qe_rerank_texts(qe_engine *e, const char *query, const char *const *documents, int n,
                          const qe_rerank_opts *o, float *scores);
/* qe_rerank_texts with the default options but the instruction (NULL for the default). */
qe_status qe_rerank(qe_engine *e, const char *query, const char *const *documents, int n,
                    const char *instruction, float *scores);
/* The logit (W[yes] - W[no]) . h of a hidden state h (qe_dim floats, as qe_embed_ids_ex gives with
 * normalize 0 at full width, or a qe_sched opened that way): what a server turns into a score
 * (qe_rerank_sigmoid) or returns raw. 0 on an engine that is not a reranker. */
float qe_rerank_logit(const qe_engine *e, const float *hidden);
float qe_rerank_sigmoid(float logit);

qe_task qe_model_task(const qe_engine *e);
const char *qe_task_name(qe_task t);
/* Why AUTO chose the task (for inspect and the server's startup line). */
const char *qe_task_reason(const qe_engine *e);

int qe_dim(const qe_engine *e);
/* The message of the last failed call on this engine (thread-local to the engine lock). */
const char *qe_last_error(const qe_engine *e);
/* The tokenizer of the model folder, or NULL if it has no tokenizer.json. */
const struct tok_tokenizer *qe_tokenizer(const qe_engine *e);
/* QE_OK when the tokenizer (if any) fits the model: the token it appends to every input (and a
 * reranker's prompt template) is inside the embedding table. Else QE_ERR_FORMAT and why: a server
 * refuses to load such a folder, where every text request would fail (ids-only users, like the
 * benchmarks' random models, may go on). */
qe_status qe_tokenizer_fits(const qe_engine *e, char *err, size_t errlen);
/* Geometry for tools: NULL-safe accessors. */
int qe_max_positions(const qe_engine *e);
/* What the checkpoint stores its weights in: config.json's torch_dtype for a folder ("bfloat16"),
 * the embedding table's GGUF type for a .gguf file ("Q8_0", "F16"). */
const char *qe_checkpoint_dtype(const qe_engine *e);
int qe_vocab_size(const qe_engine *e);
const char *qe_backend_name(const qe_engine *e);
/* The work of embedding one sequence of len tokens, in tokens' worth of the layers' linear part
 * (the GEMMs): len * (1 + len / A), A = linear parameters / (layers * heads * head_dim), the
 * length whose attention costs as much as the GEMMs (7,670 for Qwen3-Embedding-0.6B). A server
 * weighs its queue with it, so a long document counts for what it costs. */
double qe_cost_tokens(const qe_engine *e, int len);
/* A, as above. */
double qe_attention_equal_length(const qe_engine *e);
/* Tokens the paged K/V pool holds (0: none), and how many of them are taken now. */
int qe_kv_pool_tokens(const qe_engine *e);
int qe_kv_pool_used_tokens(qe_engine *e);
/* Bytes the engine holds on the GPU (weights + activation arena); 0 on the CPU backend. */
size_t qe_device_bytes(const qe_engine *e);
const char *qe_status_name(qe_status s);

void qe_close(qe_engine *e);

#ifdef __cplusplus
}
#endif
#endif
