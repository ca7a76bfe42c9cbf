/* model.h — a Qwen3 model bound by name: config + every tensor of every layer, each checked
 * against the config's shapes. From a Hugging Face folder (safetensors; tensors stay in the
 * mmapped files, backends convert) or from one .gguf file (llama.cpp's names; every tensor stays
 * in the mapping, the quantized ones as ST_QUANT views of their ggml blocks). */
#ifndef QE_WEIGHTS_MODEL_H
#define QE_WEIGHTS_MODEL_H
#include "config.h"
#include "gguf.h"
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
    char dir[4096]; /* the folder, or the .gguf file */
    qe_config cfg;
    st_archive *archive; /* a folder's safetensors; NULL for a GGUF file */
    /* A GGUF file: its tensors seen as st_tensors with Hugging Face shapes ([out, in], the GGUF
     * dims reversed) under their GGUF names, pointing into the mapping; F32/F16/BF16 as a
     * folder's, the block types as ST_QUANT (st_to_f32 dequantizes them). */
    gguf_file *gguf;
    st_tensor *views;
    int n_views;
    const char *prefix;          /* "" or "model." (safetensors) */
    const st_tensor *embed;      /* [vocab, hidden] */
    const st_tensor *final_norm; /* [hidden] */
    const st_tensor *lm_head;    /* lm_head.weight / output.weight [vocab, hidden], or NULL */
    /* A GGUF reranker's classifier (llama.cpp's cls.output.weight, [labels, hidden]: the rows of
     * the answer tokens, "yes" then "no" as its converter writes them), or NULL. */
    const st_tensor *cls_out;
    qe_layer_tensors *layers; /* [num_layers] */
    st_dtype dtype;           /* dtype of the embedding table (the checkpoint's dtype) */
} qe_model;

/* Opens a model folder, or a GGUF file when path ends in ".gguf". */
int model_open(const char *path, qe_model *m, char *err, size_t errlen);
/* The geometry alone: config.json of a folder, or a GGUF file's metadata (no tensors bound). */
int model_read_config(const char *path, qe_config *cfg, char *err, size_t errlen);
/* 1 when path names a GGUF file (ends in ".gguf"). */
int model_is_gguf(const char *path);
void model_close(qe_model *m);

#endif
