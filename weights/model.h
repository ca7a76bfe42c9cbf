/* model.h — a Qwen3 model folder bound by name: config + every tensor of every layer, each
 * checked against the config's shapes. Tensors stay in the mmapped files; backends convert. */
#ifndef QE_WEIGHTS_MODEL_H
#define QE_WEIGHTS_MODEL_H
#include "config.h"
#include "safetensors.h"

typedef struct qe_layer_tensors {
    const st_tensor *attn_norm; /* input_layernorm [hidden] */
    const st_tensor *wq;        /* [heads*head_dim, hidden] */
    const st_tensor *wk;        /* [kv_heads*head_dim, hidden] */
    const st_tensor *wv;        /* [kv_heads*head_dim, hidden] */
    const st_tensor *q_norm;    /* [head_dim] */
    const st_tensor *k_norm;    /* [head_dim] */
    const st_tensor *wo;        /* [hidden, heads*head_dim] */
    const st_tensor *mlp_norm;  /* post_attention_layernorm [hidden] */
    const st_tensor *w_gate;    /* [intermediate, hidden] */
    const st_tensor *w_up;      /* [intermediate, hidden] */
    const st_tensor *w_down;    /* [hidden, intermediate] */
} qe_layer_tensors;

typedef struct qe_model {
    char dir[4096];
    qe_config cfg;
    st_archive *archive;
    const char *prefix;          /* "" or "model." */
    const st_tensor *embed;      /* [vocab, hidden] */
    const st_tensor *final_norm; /* [hidden] */
    qe_layer_tensors *layers;    /* [num_layers] */
    st_dtype dtype;              /* dtype of the embedding table (the checkpoint's dtype) */
} qe_model;

int model_open(const char *dir, qe_model *m, char *err, size_t errlen);
void model_close(qe_model *m);

#endif
