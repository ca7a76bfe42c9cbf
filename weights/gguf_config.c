/* gguf_config.c — maps a GGUF file's metadata onto qe_config (config.h), the same geometry
 * config.json gives, with every key the math needs required and named when missing or bad. */
#include "gguf_config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define MAX_DIM 1000000000u /* the bound config.c puts on config.json's integers */

/* <arch>.<name> as a positive integer in [min, MAX_DIM]. */
static int get_dim(const gguf_file *g, const char *arch, const char *name, uint32_t min, int *out,
                   char *err, size_t errlen) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, name);
    uint32_t v;
    if (gguf_get_u32(g, key, &v, err, errlen)) return -1;
    if (v < min || v > MAX_DIM) {
        snprintf(err, errlen, "metadata key \"%s\" = %u is out of range [%u, %u]", key, v, min,
                 MAX_DIM);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int get_positive(const gguf_file *g, const char *arch, const char *name, double *out,
                        char *err, size_t errlen) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, name);
    float v;
    if (gguf_get_f32(g, key, &v, err, errlen)) return -1;
    if (!(v > 0) || isinf(v)) {
        snprintf(err, errlen, "metadata key \"%s\" = %g must be a positive number", key, v);
        return -1;
    }
    *out = v;
    return 0;
}

static const char *pool_name(uint32_t p) {
    static const char *names[] = {"none", "mean", "cls", "last", "rank"};
    return p < 5 ? names[p] : "unknown";
}

/* The engine pools the last token of each sequence; a file asking for another pooling would be
 * embedded wrong, so it is refused. "none" leaves pooling to the caller; "rank" is llama.cpp's
 * Qwen3-Reranker form, whose last token's state meets the cls.output rows (runtime/rerank.c). */
static int check_pooling(const gguf_file *g, const char *arch, char *err, size_t errlen) {
    char key[128];
    snprintf(key, sizeof key, "%s.pooling_type", arch);
    if (!gguf_has(g, key)) return 0;
    uint32_t p;
    if (gguf_get_u32(g, key, &p, err, errlen)) return -1;
    if (p != GGUF_POOL_LAST && p != GGUF_POOL_NONE && p != GGUF_POOL_RANK) {
        snprintf(err, errlen,
                 "metadata key \"%s\" = %u (%s): this engine pools the last token (%d, or %d "
                 "for a reranker) only",
                 key, p, pool_name(p), GGUF_POOL_LAST, GGUF_POOL_RANK);
        return -1;
    }
    return 0;
}

int gguf_pooling_type(const gguf_file *g) {
    char arch[64] = "", key[128], sub[256];
    gguf_span a;
    if (gguf_get_string(g, "general.architecture", &a, sub, sizeof sub) || a.len >= sizeof arch)
        return -1;
    memcpy(arch, a.ptr, a.len);
    snprintf(key, sizeof key, "%s.pooling_type", arch);
    uint32_t p;
    return gguf_has(g, key) && !gguf_get_u32(g, key, &p, sub, sizeof sub) ? (int)p : -1;
}

/* Rows of token_embd.weight (GGUF order [hidden, vocab]); else the tokenizer's token count. A
 * token list longer than the table would index past it. */
static int get_vocab(const gguf_file *g, const qe_config *c, int *out, char *err, size_t errlen) {
    const gguf_tensor *e = gguf_find(g, "token_embd.weight");
    uint64_t n_tok = 0;
    const int tok = gguf_kv_index(g, "tokenizer.ggml.tokens"), have_tokens = tok >= 0;
    if (have_tokens) {
        gguf_vtype et;
        if (gguf_kv_type(g, tok, &et, &n_tok) != GGUF_ARRAY || et != GGUF_STRING) {
            snprintf(err, errlen,
                     "metadata key \"tokenizer.ggml.tokens\" must be an array of string");
            return -1;
        }
    }
    if (e) {
        if (e->ndim != 2 || e->dims[0] != c->hidden_size) {
            snprintf(err, errlen,
                     "tensor \"token_embd.weight\": expected dims [%d, vocab] (innermost first), "
                     "found %d dims [%lld, %lld]",
                     c->hidden_size, e->ndim, (long long)e->dims[0],
                     (long long)(e->ndim > 1 ? e->dims[1] : 1));
            return -1;
        }
        if (e->dims[1] > (int64_t)MAX_DIM) {
            snprintf(err, errlen, "tensor \"token_embd.weight\": %lld rows is not plausible",
                     (long long)e->dims[1]);
            return -1;
        }
        if (have_tokens && n_tok > (uint64_t)e->dims[1]) {
            snprintf(err, errlen,
                     "tokenizer.ggml.tokens has %llu tokens but token_embd.weight only %lld rows",
                     (unsigned long long)n_tok, (long long)e->dims[1]);
            return -1;
        }
        *out = (int)e->dims[1];
        return 0;
    }
    if (!have_tokens || n_tok == 0 || n_tok > MAX_DIM) {
        snprintf(err, errlen,
                 "cannot tell the vocabulary size: no tensor \"token_embd.weight\" and no "
                 "non-empty metadata key \"tokenizer.ggml.tokens\"");
        return -1;
    }
    *out = (int)n_tok;
    return 0;
}

int gguf_read_config(const gguf_file *g, qe_config *c, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    gguf_span arch;
    if (gguf_get_string(g, "general.architecture", &arch, err, errlen)) return -1;
    if (arch.len != 5 || memcmp(arch.ptr, "qwen3", 5) != 0) {
        snprintf(err, errlen,
                 "general.architecture \"%.*s\" is not supported (this build runs \"qwen3\")",
                 (int)(arch.len < 40 ? arch.len : 40), arch.ptr);
        return -1;
    }
    const char *a = "qwen3";
    snprintf(c->model_type, sizeof c->model_type, "%s", a);
    if (get_dim(g, a, "block_count", 1, &c->num_layers, err, errlen) ||
        get_dim(g, a, "embedding_length", 1, &c->hidden_size, err, errlen) ||
        get_dim(g, a, "feed_forward_length", 1, &c->intermediate_size, err, errlen) ||
        get_dim(g, a, "attention.head_count", 1, &c->num_heads, err, errlen) ||
        get_dim(g, a, "attention.head_count_kv", 1, &c->num_kv_heads, err, errlen) ||
        get_dim(g, a, "attention.key_length", 2, &c->head_dim, err, errlen) ||
        get_dim(g, a, "context_length", 1, &c->max_position_embeddings, err, errlen) ||
        get_positive(g, a, "rope.freq_base", &c->rope_theta, err, errlen) ||
        get_positive(g, a, "attention.layer_norm_rms_epsilon", &c->rms_norm_eps, err, errlen) ||
        check_pooling(g, a, err, errlen))
        return -1;
    int v_len;
    if (gguf_has(g, "qwen3.attention.value_length")) {
        if (get_dim(g, a, "attention.value_length", 1, &v_len, err, errlen)) return -1;
        if (v_len != c->head_dim) {
            snprintf(err, errlen,
                     "qwen3.attention.value_length %d differs from attention.key_length %d "
                     "(this engine needs one head_dim)",
                     v_len, c->head_dim);
            return -1;
        }
    }
    if (c->num_heads % c->num_kv_heads != 0) {
        snprintf(err, errlen,
                 "qwen3.attention.head_count %d is not a multiple of "
                 "qwen3.attention.head_count_kv %d",
                 c->num_heads, c->num_kv_heads);
        return -1;
    }
    if (c->head_dim % 2 != 0) {
        snprintf(err, errlen, "qwen3.attention.key_length %d must be even for RoPE", c->head_dim);
        return -1;
    }
    if (get_vocab(g, c, &c->vocab_size, err, errlen)) return -1;
    c->tie_word_embeddings = gguf_find(g, "output.weight") == NULL;
    /* The embedding table's storage type stands in for config.json's torch_dtype. */
    const gguf_tensor *e = gguf_find(g, "token_embd.weight");
    snprintf(c->torch_dtype, sizeof c->torch_dtype, "%s", e ? e->type_name : "unknown");
    return 0;
}
