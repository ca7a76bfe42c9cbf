/* config.c — parses and writes the config.json of a Qwen3 model folder. Every field the engine
 * uses is required; a missing or mistyped field is named in the error. */
#include "config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int get_int(const cJSON *root, const char *key, int min, int *out, char *err,
                   size_t errlen) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v) {
        snprintf(err, errlen, "config.json: missing field \"%s\"", key);
        return -1;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble)) {
        snprintf(err, errlen, "config.json: field \"%s\" must be an integer", key);
        return -1;
    }
    if (v->valuedouble < min || v->valuedouble > 1e9) {
        snprintf(err, errlen, "config.json: field \"%s\" = %.0f is out of range [%d, %.0f]", key,
                 v->valuedouble, min, 1e9);
        return -1;
    }
    *out = (int)v->valuedouble;
    return 0;
}

static int get_double(const cJSON *root, const char *key, double *out, char *err, size_t errlen) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v) {
        snprintf(err, errlen, "config.json: missing field \"%s\"", key);
        return -1;
    }
    if (!cJSON_IsNumber(v) || !(v->valuedouble > 0)) {
        snprintf(err, errlen, "config.json: field \"%s\" must be a positive number", key);
        return -1;
    }
    *out = v->valuedouble;
    return 0;
}

/* "position_embedding_type" picks how positions enter attention. Absent, null, "rope" or
 * "rotary" (ESM's spelling): RoPE, as every Qwen3 model. "alibi" (JinaBERT's spelling): ALiBi
 * biases on the logits and no rotation. Anything else ("absolute", "relative_key", ... of
 * BERT-style configs) would need weights this engine does not have: refused. MPT's
 * attn_config.alibi is not read: model_type "mpt" is refused before this. */
static int get_position_type(const cJSON *root, int *alibi, char *err, size_t errlen) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "position_embedding_type");
    *alibi = 0;
    if (!v || cJSON_IsNull(v)) return 0;
    const char *s = cJSON_IsString(v) ? v->valuestring : NULL;
    if (s && (!strcmp(s, "rope") || !strcmp(s, "rotary"))) return 0;
    if (s && !strcmp(s, "alibi")) {
        *alibi = 1;
        return 0;
    }
    if (s)
        snprintf(err, errlen,
                 "config.json: position_embedding_type \"%.40s\" is not supported (\"rope\", the "
                 "default, or \"alibi\")",
                 s);
    else
        snprintf(err, errlen,
                 "config.json: position_embedding_type must be a string (\"rope\", the default, "
                 "or \"alibi\")");
    return -1;
}

int cfg_parse(const char *json, size_t len, qe_config *c, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root || !cJSON_IsObject(root)) {
        snprintf(err, errlen, "config.json: not a JSON object");
        cJSON_Delete(root);
        return -1;
    }
    int rc = -1;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!cJSON_IsString(mt)) {
        snprintf(err, errlen, "config.json: missing field \"model_type\"");
        goto out;
    }
    if (strcmp(mt->valuestring, "qwen3") != 0) {
        snprintf(err, errlen,
                 "config.json: model_type \"%.40s\" is not supported (this build runs \"qwen3\")",
                 mt->valuestring);
        goto out;
    }
    snprintf(c->model_type, sizeof c->model_type, "%s", mt->valuestring);
    if (get_position_type(root, &c->alibi, err, errlen)) goto out;
    if (get_int(root, "vocab_size", 1, &c->vocab_size, err, errlen) ||
        get_int(root, "hidden_size", 1, &c->hidden_size, err, errlen) ||
        get_int(root, "intermediate_size", 1, &c->intermediate_size, err, errlen) ||
        get_int(root, "num_hidden_layers", 1, &c->num_layers, err, errlen) ||
        get_int(root, "num_attention_heads", 1, &c->num_heads, err, errlen) ||
        get_int(root, "num_key_value_heads", 1, &c->num_kv_heads, err, errlen) ||
        get_int(root, "head_dim", 2, &c->head_dim, err, errlen) ||
        get_int(root, "max_position_embeddings", 1, &c->max_position_embeddings, err, errlen) ||
        get_double(root, "rms_norm_eps", &c->rms_norm_eps, err, errlen) ||
        (!c->alibi && get_double(root, "rope_theta", &c->rope_theta, err, errlen)))
        goto out; /* an ALiBi model has no rotation: rope_theta stays 0, even if the file has one */
    if (c->num_heads % c->num_kv_heads != 0) {
        snprintf(err, errlen,
                 "config.json: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                 c->num_heads, c->num_kv_heads);
        goto out;
    }
    if (c->head_dim % 2 != 0) {
        snprintf(err, errlen, "config.json: head_dim %d must be even for RoPE", c->head_dim);
        goto out;
    }
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu") != 0)) {
        snprintf(err, errlen, "config.json: hidden_act must be \"silu\"");
        goto out;
    }
    const cJSON *bias = cJSON_GetObjectItemCaseSensitive(root, "attention_bias");
    if (cJSON_IsTrue(bias)) {
        snprintf(err, errlen, "config.json: attention_bias = true is not supported");
        goto out;
    }
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (rs && !cJSON_IsNull(rs)) {
        snprintf(err, errlen, "config.json: rope_scaling is not supported (must be null)");
        goto out;
    }
    const cJSON *sw = cJSON_GetObjectItemCaseSensitive(root, "use_sliding_window");
    if (cJSON_IsTrue(sw)) {
        snprintf(err, errlen, "config.json: use_sliding_window = true is not supported");
        goto out;
    }
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(root, "tie_word_embeddings");
    c->tie_word_embeddings = cJSON_IsTrue(tie);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(root, "torch_dtype");
    if (!dt) dt = cJSON_GetObjectItemCaseSensitive(root, "dtype");
    snprintf(c->torch_dtype, sizeof c->torch_dtype, "%s",
             cJSON_IsString(dt) ? dt->valuestring : "bfloat16");
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}

int cfg_load(const char *dir, qe_config *out, char *err, size_t errlen) {
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open %s: is this a Hugging Face model folder?", path);
        return -1;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n <= 0 || n > (1 << 24)) {
        fclose(f);
        snprintf(err, errlen, "%s: unexpected size %ld bytes", path, n);
        return -1;
    }
    char *buf = malloc((size_t)n);
    size_t got = buf ? fread(buf, 1, (size_t)n, f) : 0;
    fclose(f);
    int rc = -1;
    if (got == (size_t)n)
        rc = cfg_parse(buf, (size_t)n, out, err, errlen);
    else
        snprintf(err, errlen, "%s: read failed", path);
    free(buf);
    return rc;
}

char *cfg_to_json(const qe_config *c) {
    char *s = malloc(2048), position[64];
    if (!s) return NULL;
    if (c->alibi)
        snprintf(position, sizeof position, "\"position_embedding_type\": \"alibi\"");
    else
        snprintf(position, sizeof position, "\"rope_theta\": %.17g", c->rope_theta);
    snprintf(s, 2048,
             "{\n  \"architectures\": [\"Qwen3Model\"],\n  \"model_type\": \"qwen3\",\n"
             "  \"vocab_size\": %d,\n  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n"
             "  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n"
             "  \"num_key_value_heads\": %d,\n  \"head_dim\": %d,\n  \"hidden_act\": \"silu\",\n"
             "  \"max_position_embeddings\": %d,\n  \"rms_norm_eps\": %.9g,\n"
             "  %s,\n  \"rope_scaling\": null,\n"
             "  \"tie_word_embeddings\": %s,\n  \"attention_bias\": false,\n"
             "  \"attention_dropout\": 0.0,\n  \"bos_token_id\": 151643,\n"
             "  \"eos_token_id\": 151643,\n  \"torch_dtype\": \"%s\",\n"
             "  \"use_sliding_window\": false,\n  \"sliding_window\": null\n}\n",
             c->vocab_size, c->hidden_size, c->intermediate_size, c->num_layers, c->num_heads,
             c->num_kv_heads, c->head_dim, c->max_position_embeddings, c->rms_norm_eps, position,
             c->tie_word_embeddings ? "true" : "false", c->torch_dtype);
    return s;
}

/* The paper's slopes for m heads, m a power of two, are the geometric sequence 2^(-8/m),
 * 2^(-16/m), ..., 2^(-8): head h gets 2^(-8(h+1)/m). For other n, BLOOM's (and the paper's
 * code's) rule: with m the largest power of two below n, heads [0, m) get their m-head slopes
 * and the n - m heads left take every other slope of the 2m-head set, from its first:
 * 2^(-8(2k+1)/(2m)) for k = h - m, values between the first ones, so all slopes stay distinct. */
void cfg_alibi_slopes(int n_heads, float *out) {
    int m = 1;
    while (2 * m <= n_heads)
        m *= 2;
    for (int h = 0; h < n_heads; h++) {
        const double e = h < m ? -8.0 * (h + 1) / m : -8.0 * (2 * (h - m) + 1) / (2.0 * m);
        out[h] = (float)exp2(e);
    }
}

long long cfg_linear_params(const qe_config *c) {
    long long h = c->hidden_size, q = (long long)c->num_heads * c->head_dim;
    long long kv = (long long)c->num_kv_heads * c->head_dim, f = c->intermediate_size;
    long long per_layer = h * q + 2 * h * kv + q * h + 3 * h * f;
    return per_layer * c->num_layers;
}

long long cfg_total_params(const qe_config *c) {
    long long norms = (2LL * c->hidden_size + 2LL * c->head_dim) * c->num_layers + c->hidden_size;
    return cfg_linear_params(c) + (long long)c->vocab_size * c->hidden_size + norms;
}
