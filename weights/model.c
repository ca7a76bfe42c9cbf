/* model.c — binds a model folder's tensors by name and checks each against config.json.
 * Accepts both key layouts (no prefix; "model." prefix with an lm_head.weight to ignore). */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Finds prefix+name and checks dtype and shape; err says expected vs actual. */
static const st_tensor *bind(const qe_model *m, const char *name, int64_t d0, int64_t d1, char *err,
                             size_t errlen) {
    char key[256];
    snprintf(key, sizeof key, "%s%s", m->prefix, name);
    const st_tensor *t = st_find(m->archive, key);
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
        for (int i = 0; i < t->ndim && pos < sizeof actual - 24; i++)
            pos += (size_t)snprintf(actual + pos, sizeof actual - pos, "%s%lld", i ? ", " : "",
                                    (long long)t->shape[i]);
        if (d1)
            snprintf(err, errlen,
                     "tensor \"%s\": expected shape [%lld, %lld] from config.json, "
                     "found [%s]",
                     key, (long long)d0, (long long)d1, actual);
        else
            snprintf(err, errlen,
                     "tensor \"%s\": expected shape [%lld] from config.json, found [%s]", key,
                     (long long)d0, actual);
        return NULL;
    }
    return t;
}

#define BIND(field, name, d0, d1)                                                                  \
    do {                                                                                           \
        if (!((field) = bind(m, name, d0, d1, err, errlen))) goto fail;                            \
    } while (0)

int model_open(const char *dir, qe_model *m, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    if (errlen) err[0] = 0;
    snprintf(m->dir, sizeof m->dir, "%s", dir);
    if (cfg_load(dir, &m->cfg, err, errlen)) return -1;
    if (st_open_dir(dir, &m->archive, err, errlen)) return -1;
    const qe_config *c = &m->cfg;
    if (st_find(m->archive, "embed_tokens.weight"))
        m->prefix = "";
    else if (st_find(m->archive, "model.embed_tokens.weight"))
        m->prefix = "model.";
    else {
        snprintf(err, errlen,
                 "%s: missing tensor \"embed_tokens.weight\" (or "
                 "\"model.embed_tokens.weight\")",
                 dir);
        goto fail;
    }
    const int64_t h = c->hidden_size, q = (int64_t)c->num_heads * c->head_dim;
    const int64_t kv = (int64_t)c->num_kv_heads * c->head_dim, f = c->intermediate_size;
    BIND(m->embed, "embed_tokens.weight", c->vocab_size, h);
    BIND(m->final_norm, "norm.weight", h, 0);
    m->dtype = m->embed->dtype;
    /* The layers the file has, before allocating what config.json asks for: a config that claims
     * 1e9 layers is a missing tensor, not "out of memory". */
    int have_layers = 0;
    {
        int n_t = st_count(m->archive);
        size_t pl = strlen(m->prefix);
        for (int i = 0; i < n_t; i++) {
            const char *name = st_at(m->archive, i)->name;
            int layer = -1;
            if (!strncmp(name, m->prefix, pl) && sscanf(name + pl, "layers.%d.", &layer) == 1 &&
                layer >= have_layers && layer < c->num_layers)
                have_layers = layer + 1;
        }
    }
    if (have_layers < c->num_layers) {
        char n[128];
        snprintf(n, sizeof n, "%slayers.%d.input_layernorm.weight", m->prefix, have_layers);
        snprintf(err, errlen,
                 "%s: missing tensor \"%s\" (and the rest of layers.%d.*): config.json says "
                 "num_hidden_layers = %d, the weights hold %d layer%s",
                 dir, n, have_layers, c->num_layers, have_layers, have_layers == 1 ? "" : "s");
        goto fail;
    }
    m->layers = calloc((unsigned)have_layers, sizeof *m->layers);
    if (!m->layers) goto fail;
    for (int l = 0; l < c->num_layers; l++) {
        qe_layer_tensors *L = &m->layers[l];
        char n[128];
#define LAYER(field, suffix, d0, d1)                                                               \
    snprintf(n, sizeof n, "layers.%d.%s", l, suffix);                                              \
    BIND(L->field, n, d0, d1)
        LAYER(attn_norm, "input_layernorm.weight", h, 0);
        LAYER(wq, "self_attn.q_proj.weight", q, h);
        LAYER(wk, "self_attn.k_proj.weight", kv, h);
        LAYER(wv, "self_attn.v_proj.weight", kv, h);
        LAYER(q_norm, "self_attn.q_norm.weight", c->head_dim, 0);
        LAYER(k_norm, "self_attn.k_norm.weight", c->head_dim, 0);
        LAYER(wo, "self_attn.o_proj.weight", h, q);
        LAYER(mlp_norm, "post_attention_layernorm.weight", h, 0);
        LAYER(w_gate, "mlp.gate_proj.weight", f, h);
        LAYER(w_up, "mlp.up_proj.weight", f, h);
        LAYER(w_down, "mlp.down_proj.weight", h, f);
#undef LAYER
    }
    /* Every tensor must have been bound (or be the ignorable lm_head): anything else, such as
     * biases or extra layers, means a model this engine would silently compute wrong. */
    int expected = 2 + 11 * c->num_layers, n = st_count(m->archive), lm_head = 0;
    for (int i = 0; i < n; i++) {
        const char *name = st_at(m->archive, i)->name;
        if (!strcmp(name, "lm_head.weight")) {
            lm_head = 1;
            continue;
        }
        size_t pl = strlen(m->prefix);
        const char *rest = strncmp(name, m->prefix, pl) == 0 ? name + pl : NULL;
        int layer = -1;
        if (rest && sscanf(rest, "layers.%d.", &layer) == 1 && layer >= c->num_layers) {
            snprintf(err, errlen,
                     "tensor \"%s\": layer %d but config.json says "
                     "num_hidden_layers = %d",
                     name, layer, c->num_layers);
            goto fail;
        }
    }
    if (n - lm_head != expected) {
        for (int i = 0; i < n; i++) {
            const st_tensor *t = st_at(m->archive, i);
            int used = !strcmp(t->name, "lm_head.weight") || t == m->embed || t == m->final_norm;
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
    free(m->layers);
    m->archive = NULL;
    m->layers = NULL;
}
