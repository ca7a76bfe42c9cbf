/* model.c — binds a model's tensors by name and checks each against its config. A Hugging Face
 * folder: both key layouts (no prefix; "model." prefix with an lm_head.weight to ignore), checked
 * against config.json. A GGUF file: llama.cpp's names (token_embd, blk.N.attn_q, ...), checked
 * against the geometry in its metadata (gguf_config.c), quantized tensors kept in their blocks. */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_config.h"
#include "ref/ref_quant.h"

int model_is_gguf(const char *path) {
    const size_t n = strlen(path);
    return n > 5 && !strcmp(path + n - 5, ".gguf");
}

static int m_count(const qe_model *m) {
    return m->gguf ? m->n_views : st_count(m->archive);
}
static const st_tensor *m_at(const qe_model *m, int i) {
    return m->gguf ? &m->views[i] : st_at(m->archive, i);
}
static const st_tensor *m_find(const qe_model *m, const char *name) {
    if (!m->gguf) return st_find(m->archive, name);
    for (int i = 0; i < m->n_views; i++)
        if (!strcmp(m->views[i].name, name)) return &m->views[i];
    return NULL;
}

/* Finds the tensor (prefix + name, or the GGUF name) and checks dtype and shape ([out, in]);
 * err says expected vs actual, for a GGUF file in its own dims order (innermost first). */
static const st_tensor *bind(const qe_model *m, const char *name, int64_t d0, int64_t d1, char *err,
                             size_t errlen) {
    char key[256];
    snprintf(key, sizeof key, "%s%s", m->gguf ? "" : m->prefix, name);
    const st_tensor *t = m_find(m, key);
    if (!t) {
        snprintf(err, errlen, "%s: missing tensor \"%s\"", m->dir, key);
        return NULL;
    }
    if (t->dtype == ST_OTHER) {
        snprintf(err, errlen, "tensor \"%s\": dtype %s is not supported (BF16, F16 or F32)", key,
                 t->dtype_name);
        return NULL;
    }
    int want_nd = d1 ? 2 : 1;
    int ok = t->ndim == want_nd && t->shape[0] == d0 && (want_nd == 1 || t->shape[1] == d1);
    if (!ok) {
        char actual[128] = "";
        size_t pos = 0;
        const int gg = m->gguf != NULL;
        for (int i = 0; i < t->ndim && pos < sizeof actual - 24; i++)
            pos += (size_t)snprintf(actual + pos, sizeof actual - pos, "%s%lld", i ? ", " : "",
                                    (long long)t->shape[gg ? t->ndim - 1 - i : i]);
        const char *from = gg ? "the GGUF metadata (dims innermost first)" : "config.json";
        if (d1)
            snprintf(err, errlen, "tensor \"%s\": expected shape [%lld, %lld] from %s, found [%s]",
                     key, (long long)(gg ? d1 : d0), (long long)(gg ? d0 : d1), from, actual);
        else
            snprintf(err, errlen, "tensor \"%s\": expected shape [%lld] from %s, found [%s]", key,
                     (long long)d0, from, actual);
        return NULL;
    }
    return t;
}

#define BIND(field, name, d0, d1)                                                                  \
    do {                                                                                           \
        if (!((field) = bind(m, name, d0, d1, err, errlen))) goto fail;                            \
    } while (0)

/* The names of a layer's tensors in both spellings, in qe_layer_tensors order. */
static const char *const LAYER_HF[11] = {
    "input_layernorm.weight",  "self_attn.q_proj.weight",
    "self_attn.k_proj.weight", "self_attn.v_proj.weight",
    "self_attn.q_norm.weight", "self_attn.k_norm.weight",
    "self_attn.o_proj.weight", "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",    "mlp.up_proj.weight",
    "mlp.down_proj.weight"};
static const char *const LAYER_GGUF[11] = {
    "attn_norm.weight",   "attn_q.weight",      "attn_k.weight",      "attn_v.weight",
    "attn_q_norm.weight", "attn_k_norm.weight", "attn_output.weight", "ffn_norm.weight",
    "ffn_gate.weight",    "ffn_up.weight",      "ffn_down.weight"};

/* A GGUF file's tensors as st_tensor views into the mapping: every type the dequantizers know is
 * accepted (the others are refused with the tensor named), shapes reversed to [out, in]. F32, F16
 * and BF16 tensors look like a folder's; the block types are ST_QUANT with their ggml type, kept
 * as they are in the file: each backend decides what to do with them. */
static int gguf_views(qe_model *m, char *err, size_t errlen) {
    const int n = gguf_count(m->gguf);
    m->views = calloc((size_t)(n ? n : 1), sizeof *m->views);
    if (!m->views) return -1;
    for (int i = 0; i < n; i++) {
        const gguf_tensor *g = gguf_at(m->gguf, i);
        const ref_qtype_info *qi = ref_qtype_get(g->type);
        if (!qi || !qi->can_dequantize) {
            snprintf(err, errlen,
                     "tensor \"%s\": type %s is not supported by this engine (F32, F16, BF16, "
                     "Q8_0, Q4_0, Q5_0, Q4_K, Q5_K, Q6_K)",
                     g->name, g->type_name);
            return -1;
        }
        st_tensor *v = &m->views[m->n_views++];
        v->name = g->name;
        v->ndim = g->ndim;
        for (int d = 0; d < g->ndim; d++)
            v->shape[d] = g->dims[g->ndim - 1 - d];
        snprintf(v->dtype_name, sizeof v->dtype_name, "%s", g->type_name);
        v->dtype = g->type == QT_F32    ? ST_F32
                   : g->type == QT_F16  ? ST_F16
                   : g->type == QT_BF16 ? ST_BF16
                                        : ST_QUANT;
        v->qtype = g->type;
        v->data = g->data;
        v->nbytes = g->nbytes;
    }
    return 0;
}

/* Opens the weights and config; sets the layer-name format. */
static int open_source(const char *path, qe_model *m, const char **layer_fmt, char *err,
                       size_t errlen) {
    if (!model_is_gguf(path)) {
        *layer_fmt = "layers.%d.";
        if (cfg_load(path, &m->cfg, err, errlen) || st_open_dir(path, &m->archive, err, errlen))
            return -1;
        if (st_find(m->archive, "embed_tokens.weight"))
            m->prefix = "";
        else if (st_find(m->archive, "model.embed_tokens.weight"))
            m->prefix = "model.";
        else {
            snprintf(err, errlen,
                     "%s: missing tensor \"embed_tokens.weight\" (or "
                     "\"model.embed_tokens.weight\")",
                     path);
            return -1;
        }
        return 0;
    }
    *layer_fmt = "blk.%d.";
    m->prefix = "";
    if (gguf_open(path, &m->gguf, err, errlen)) return -1;
    char sub[400];
    if (gguf_read_config(m->gguf, &m->cfg, sub, sizeof sub)) {
        snprintf(err, errlen, "%s: %s", path, sub);
        return -1;
    }
    return gguf_views(m, err, errlen);
}

int model_read_config(const char *path, qe_config *cfg, char *err, size_t errlen) {
    if (!model_is_gguf(path)) return cfg_load(path, cfg, err, errlen);
    gguf_file *g = NULL;
    if (gguf_open(path, &g, err, errlen)) return -1;
    char sub[400];
    const int rc = gguf_read_config(g, cfg, sub, sizeof sub);
    if (rc) snprintf(err, errlen, "%s: %s", path, sub);
    gguf_close(g);
    return rc;
}

int model_open(const char *dir, qe_model *m, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    if (errlen) err[0] = 0;
    snprintf(m->dir, sizeof m->dir, "%s", dir);
    const char *layer_fmt;
    if (open_source(dir, m, &layer_fmt, err, errlen)) goto fail;
    const int gg = m->gguf != NULL;
    const char *src =
        gg ? "the GGUF metadata says qwen3.block_count" : "config.json says num_hidden_layers";
    const char *lm_name = gg ? "output.weight" : "lm_head.weight";
    const qe_config *c = &m->cfg;
    const int64_t h = c->hidden_size, q = (int64_t)c->num_heads * c->head_dim;
    const int64_t kv = (int64_t)c->num_kv_heads * c->head_dim, f = c->intermediate_size;
    BIND(m->embed, gg ? "token_embd.weight" : "embed_tokens.weight", c->vocab_size, h);
    BIND(m->final_norm, gg ? "output_norm.weight" : "norm.weight", h, 0);
    m->dtype = m->embed->dtype;
    /* The layers the file has, before allocating what the config asks for: a config that claims
     * 1e9 layers is a missing tensor, not "out of memory". */
    int have_layers = 0;
    const size_t pl = strlen(m->prefix);
    for (int i = 0; i < m_count(m); i++) {
        const char *name = m_at(m, i)->name;
        int layer = -1;
        if (!strncmp(name, m->prefix, pl) && sscanf(name + pl, layer_fmt, &layer) == 1 &&
            layer >= have_layers && layer < c->num_layers)
            have_layers = layer + 1;
    }
    if (have_layers < c->num_layers) {
        char n[128], lead[32];
        snprintf(lead, sizeof lead, layer_fmt, have_layers);
        snprintf(n, sizeof n, "%s%s%s", m->prefix, lead, gg ? LAYER_GGUF[0] : LAYER_HF[0]);
        snprintf(err, errlen,
                 "%s: missing tensor \"%s\" (and the rest of %s*): %s = %d, the weights hold "
                 "%d layer%s",
                 dir, n, lead, src, c->num_layers, have_layers, have_layers == 1 ? "" : "s");
        goto fail;
    }
    m->layers = calloc((unsigned)have_layers, sizeof *m->layers);
    if (!m->layers) goto fail;
    for (int l = 0; l < c->num_layers; l++) {
        qe_layer_tensors *L = &m->layers[l];
        const st_tensor **slot = (const st_tensor **)L;
        /* [out, in] of each, in qe_layer_tensors order */
        const int64_t shape[11][2] = {{h, 0},           {q, h},           {kv, h}, {kv, h},
                                      {c->head_dim, 0}, {c->head_dim, 0}, {h, q},  {h, 0},
                                      {f, h},           {f, h},           {h, f}};
        for (int k = 0; k < 11; k++) {
            char n[128], lead[32];
            snprintf(lead, sizeof lead, layer_fmt, l);
            snprintf(n, sizeof n, "%s%s", lead, gg ? LAYER_GGUF[k] : LAYER_HF[k]);
            BIND(slot[k], n, shape[k][0], shape[k][1]);
        }
    }
    /* The output layer: lm_head.weight (ignored by an embedding model) / output.weight. */
    m->lm_head = m_find(m, lm_name);
    /* A GGUF reranker's classifier rows (runtime/rerank.c reads them) */
    m->cls_out = gg ? m_find(m, "cls.output.weight") : NULL;
    if (m->cls_out && (m->cls_out->ndim != 2 || m->cls_out->shape[1] != h ||
                       m->cls_out->shape[0] < 2 || m->cls_out->dtype == ST_OTHER)) {
        snprintf(err, errlen,
                 "tensor \"cls.output.weight\": expected [%lld, labels >= 2] (dims innermost "
                 "first), the rows of a reranker's answer tokens",
                 (long long)h);
        goto fail;
    }
    /* Every tensor must have been bound (or be the output layer): anything else, such as biases
     * or extra layers, means a model this engine would silently compute wrong. */
    int expected = 2 + 11 * c->num_layers, n = m_count(m);
    for (int i = 0; i < n; i++) {
        const char *name = m_at(m, i)->name;
        if (m_at(m, i) == m->lm_head || m_at(m, i) == m->cls_out) continue;
        const char *rest = strncmp(name, m->prefix, pl) == 0 ? name + pl : NULL;
        int layer = -1;
        if (rest && sscanf(rest, layer_fmt, &layer) == 1 && layer >= c->num_layers) {
            snprintf(err, errlen, "tensor \"%s\": layer %d but %s = %d", name, layer, src,
                     c->num_layers);
            goto fail;
        }
    }
    if (n - (m->lm_head != NULL) - (m->cls_out != NULL) != expected) {
        for (int i = 0; i < n; i++) {
            const st_tensor *t = m_at(m, i);
            int used = t == m->lm_head || t == m->cls_out || t == m->embed || t == m->final_norm;
            for (int l = 0; l < c->num_layers && !used; l++) {
                const st_tensor *const *p = (const st_tensor *const *)&m->layers[l];
                for (size_t k = 0; k < sizeof(qe_layer_tensors) / sizeof(void *); k++)
                    used |= p[k] == t;
            }
            if (!used) {
                snprintf(err, errlen,
                         "tensor \"%s\" is not part of a Qwen3 model this engine "
                         "runs (unexpected bias or extra weight)",
                         t->name);
                goto fail;
            }
        }
    }
    return 0;
fail:
    if (!err[0]) snprintf(err, errlen, "out of memory binding tensors");
    model_close(m);
    return -1;
}

void model_close(qe_model *m) {
    st_close(m->archive);
    gguf_close(m->gguf);
    free(m->views);
    free(m->layers);
    m->archive = NULL;
    m->gguf = NULL;
    m->views = NULL;
    m->layers = NULL;
}
