/* gguf_config.h — the model geometry of a GGUF file, from its metadata, as a qe_config. */
#ifndef QE_WEIGHTS_GGUF_CONFIG_H
#define QE_WEIGHTS_GGUF_CONFIG_H
#include <stddef.h>

#include "config.h"
#include "gguf.h"

/* GGUF's pooling_type values (llama.cpp's enum). */
enum {
    GGUF_POOL_NONE = 0,
    GGUF_POOL_MEAN = 1,
    GGUF_POOL_CLS = 2,
    GGUF_POOL_LAST = 3,
    GGUF_POOL_RANK = 4
};

/* Fills cfg from general.architecture ("qwen3") and the <arch>.* keys: block_count,
 * embedding_length, feed_forward_length, attention.head_count, attention.head_count_kv,
 * attention.key_length (head_dim, never embedding_length / head_count), rope.freq_base,
 * attention.layer_norm_rms_epsilon, context_length. vocab_size is token_embd.weight's row count
 * (else the length of tokenizer.ggml.tokens); no output.weight tensor means tied embeddings.
 * <arch>.pooling_type, when present, must be last-token, rank (a reranker) or none: the engine
 * pools the last token. Returns 0, or -1 with the missing or bad key named. */
int gguf_read_config(const gguf_file *g, qe_config *cfg, char *err, size_t errlen);

/* <general.architecture>.pooling_type, or -1 when the file has none (or it is not a u32). */
int gguf_pooling_type(const gguf_file *g);

#endif
