/* config.h — the model geometry read from a Hugging Face config.json (Qwen3 family). */
#ifndef QE_WEIGHTS_CONFIG_H
#define QE_WEIGHTS_CONFIG_H
#include <stddef.h>

typedef struct qe_config {
    char model_type[32]; /* "qwen3" */
    int vocab_size;
    int hidden_size; /* = embedding width */
    int intermediate_size;
    int num_layers;   /* num_hidden_layers */
    int num_heads;    /* num_attention_heads */
    int num_kv_heads; /* num_key_value_heads */
    int head_dim;     /* explicit in the file; never hidden / heads */
    int max_position_embeddings;
    double rms_norm_eps;
    double rope_theta; /* 0 for an ALiBi model: q/k are normed, never rotated (qe_qk_norm_rope) */
    int alibi;         /* "position_embedding_type": "alibi" (else RoPE): see cfg_alibi_slopes */
    int tie_word_embeddings;
    char torch_dtype[16]; /* "bfloat16", "float16", "float32" */
} qe_config;

/* Parses the JSON text of a config.json. Returns 0 or -1 with a message naming the bad field. */
int cfg_parse(const char *json, size_t len, qe_config *out, char *err, size_t errlen);
/* Reads DIR/config.json and parses it. */
int cfg_load(const char *model_dir, qe_config *out, char *err, size_t errlen);
/* Writes a config.json for the geometry (used by make-random). Returns a malloc'd string. */
char *cfg_to_json(const qe_config *cfg);

/* The ALiBi slope of each of n_heads query heads (Press et al. 2022; BLOOM's rule when n_heads is
 * not a power of two), out[h] for h in [0, n_heads): attention logits get out[h] * (j - i) for
 * query i and key j. The one definition both backends and the tests use. */
void cfg_alibi_slopes(int n_heads, float *out);

/* Parameters in the linear layers of the transformer blocks (no embedding). */
long long cfg_linear_params(const qe_config *cfg);
/* All parameters, embedding table included (lm_head not counted). */
long long cfg_total_params(const qe_config *cfg);

#endif
