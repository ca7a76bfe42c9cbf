/* random_model.h — writes a Hugging Face-layout Qwen3 model folder with random weights. */
#ifndef QE_TOOLS_RANDOM_MODEL_H
#define QE_TOOLS_RANDOM_MODEL_H
#include <stddef.h>
#include <stdint.h>

#include "weights/config.h"
#include "weights/safetensors.h"

typedef struct random_model_opts {
    qe_config cfg;
    const char *out_dir;
    uint64_t seed;
    st_dtype dtype;       /* ST_BF16 (default), ST_F16, ST_F32 */
    int prefixed;         /* 1: "model." keys plus an lm_head.weight (Qwen3ForCausalLM layout) */
    int reranker;         /* 1: a Qwen3-Reranker folder: "model." keys, lm_head.weight only when
                           * cfg.tie_word_embeddings is 0, the reranker's demo tokenizer */
    size_t shard_bytes;   /* start a new shard past this many bytes; 0 = 4 GB */
    int tokenizer_merges; /* merges in the demo tokenizer; 0 = 300 */
    int quiet;            /* no progress on stderr */
    int force;            /* 1: write into a folder that already holds files (random_model.c) */
} random_model_opts;

/* Fills cfg with a named preset: tiny, 0.6b, 4b, 8b. Returns -1 for an unknown name. */
int random_model_preset(const char *name, qe_config *cfg);
int random_model_write(const random_model_opts *o, char *err, size_t errlen);

#endif
