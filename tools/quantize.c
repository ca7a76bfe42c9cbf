/* quantize.c — `qembed quantize`'s work: binds a Hugging Face Qwen3 folder as the engine does
 * (weights/model.c), then writes one GGUF v3 file with llama.cpp's tensor names (token_embd,
 * blk.N.attn_q, ..., output_norm; output only for an untied lm_head), dims innermost first, its
 * qwen3.* and tokenizer.ggml.* metadata, and each matrix in the type the recipe below picks. One
 * tensor is held at a time (as fp32 and quantized). The quantizers are the reference ones
 * (kernels/ref/ref_quantize.c): ggml's block formats with plain rounding, not llama.cpp's
 * error-minimising search, so the files load in llama.cpp but are not byte-identical to its
 * output. */
#include "quantize.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/ref/ref_quant.h"
#include "runtime/gguf_tokenizer.h"
#include "runtime/qembed.h"
#include "runtime/rerank.h"
#include "tokenizer/tokenizer.h"
#include "weights/gguf_config.h"
#include "weights/gguf_write.h"
#include "weights/model.h"

static const struct {
    const char *name;
    qz_ftype ft;
} FTYPES[] = {{"f32", QZ_F32},   {"f16", QZ_F16},   {"bf16", QZ_BF16},    {"q8_0", QZ_Q8_0},
              {"q4_0", QZ_Q4_0}, {"q6_k", QZ_Q6_K}, {"q4_k_m", QZ_Q4_K_M}};
#define N_FTYPES (int)(sizeof FTYPES / sizeof FTYPES[0])

int qz_ftype_parse(const char *s, qz_ftype *out) {
    for (int i = 0; i < N_FTYPES; i++)
        if (!strcasecmp(s, FTYPES[i].name)) {
            *out = FTYPES[i].ft;
            return 0;
        }
    return -1;
}

const char *qz_ftype_name(qz_ftype t) {
    for (int i = 0; i < N_FTYPES; i++)
        if (FTYPES[i].ft == t) return FTYPES[i].name;
    return "?";
}

/* llama.cpp's "use_more_bits": the first and last eighth of the layers, and every third layer in
 * between, get more bits. */
static int use_more_bits(int i, int n) {
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

static uint32_t base_type(qz_ftype ft) {
    switch (ft) {
    case QZ_F32:
        return QT_F32;
    case QZ_F16:
        return QT_F16;
    case QZ_BF16:
        return QT_BF16;
    case QZ_Q8_0:
        return QT_Q8_0;
    case QZ_Q4_0:
        return QT_Q4_0;
    case QZ_Q6_K:
        return QT_Q6_K;
    default:
        return QT_Q4_K;
    }
}

static int quantized(uint32_t t) {
    return t != QT_F32 && t != QT_F16 && t != QT_BF16;
}

/* The recipe, as llama.cpp's llama_tensor_get_type (src/llama-quant.cpp) applies it to a dense
 * Qwen3 model (no experts, no imatrix):
 *  - 1-D tensors (the RMSNorm weights) are never quantized: F32.
 *  - Unquantized file types (f32, f16, bf16): every matrix in that type.
 *  - The output layer, and token_embd when it doubles as the output (tied embeddings): Q8_0 when
 *    the file type is Q8_0 or the row length is not a multiple of the type's block, else Q6_K
 *    (so q4_0, q6_k and q4_k_m files all carry a Q6_K embedding table). An untied token_embd
 *    keeps the file's base type.
 *  - q4_k_m: Q4_K for everything else, except attn_v and ffn_down in the layers use_more_bits
 *    picks (layer i of n: i < n/8, i >= 7n/8, or (i - n/8) % 3 == 2; about a third of the layers
 *    plus both ends), which get Q6_K. llama.cpp counts attn_v tensors and ffn_down tensors in
 *    file order, which for a dense model is the layer index.
 *  - Row lengths that are not whole 256-element super-blocks fall back as in llama.cpp's
 *    tensor_type_fallback: Q4_K -> Q5_0, Q6_K -> Q8_0, and F16 when even 32 does not divide the
 *    row (so does Q4_0 / Q8_0 then). */
uint32_t qz_tensor_type(qz_ftype ft, qz_kind kind, int layer, int n_layers, int64_t ncols,
                        int tied) {
    /* the classifier's two rows are the score itself: kept exact, as the norms are */
    if (kind == QZ_KIND_NORM || kind == QZ_KIND_CLS_OUT) return QT_F32;
    uint32_t t = base_type(ft);
    if (!quantized(t)) return t;
    if (kind == QZ_KIND_OUTPUT || (tied && kind == QZ_KIND_TOKEN_EMBD)) {
        const int block = ref_qtype_get(t)->block;
        t = t == QT_Q8_0 || ncols % block ? QT_Q8_0 : QT_Q6_K;
    } else if (ft == QZ_Q4_K_M && (kind == QZ_KIND_ATTN_V || kind == QZ_KIND_FFN_DOWN) &&
               use_more_bits(layer, n_layers))
        t = QT_Q6_K;
    if (ncols % ref_qtype_get(t)->block) t = t == QT_Q4_K ? QT_Q5_0 : QT_Q8_0;
    if (ncols % ref_qtype_get(t)->block) t = QT_F16;
    return t;
}

/* --- metadata --- */

/* The tokenizer as llama.cpp's "gpt2" model with the "qwen2" pre-tokenizer: every id of the
 * embedding table gets a token (vocab strings in the byte-level alphabet, added tokens as their
 * content, gaps as "[PADi]"), a type (1 normal, 3 control = a special added token, 4 user-defined
 * = another added token, 5 unused = a gap), and the merges in rank order as "a b". Ids past the
 * table (the 4B/8B layout's four added tokens) cannot be embedded and are left out. */
static int write_tokenizer(gguf_writer *w, const char *dir, int n_vocab, int end_id, int quiet,
                           char *err, size_t errlen) {
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    size_t len = 0;
    char *text = st_read_small_file(path, &len);
    if (!text || len == 0) {
        free(text);
        snprintf(err, errlen, "%s: cannot read (a model folder needs its tokenizer)", path);
        return -1;
    }
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    int rc = -1;
    const char **tokens = calloc((size_t)n_vocab, sizeof *tokens);
    int32_t *types = calloc((size_t)n_vocab, sizeof *types);
    char **pads = calloc((size_t)n_vocab, sizeof *pads);
    const char **merges = NULL;
    char **merge_own = NULL;
    int n_merges = 0, dropped = 0;
    if (!root || !tokens || !types || !pads) {
        snprintf(err, errlen, "%s: %s", path, root ? "out of memory" : "not valid JSON");
        goto done;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *mj = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(mj)) {
        snprintf(err, errlen, "%s: no model.vocab object or model.merges array", path);
        goto done;
    }
    for (const cJSON *v = vocab->child; v; v = v->next) {
        const int id = v->valueint;
        if (id >= n_vocab) {
            dropped++;
            continue;
        }
        if (id >= 0) {
            tokens[id] = v->string;
            types[id] = 1;
        }
    }
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(a, "content");
        if (!cJSON_IsNumber(id) || !cJSON_IsString(content)) continue;
        if (id->valueint < 0 || id->valueint >= n_vocab) {
            dropped++;
            continue;
        }
        tokens[id->valueint] = content->valuestring;
        types[id->valueint] = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "special")) ? 3 : 4;
    }
    for (int i = 0; i < n_vocab; i++)
        if (!tokens[i]) {
            char b[32];
            snprintf(b, sizeof b, "[PAD%d]", i);
            if (!(pads[i] = strdup(b))) goto oom;
            tokens[i] = pads[i];
            types[i] = 5;
        }
    n_merges = cJSON_GetArraySize(mj);
    merges = calloc((size_t)n_merges + 1, sizeof *merges);
    merge_own = calloc((size_t)n_merges + 1, sizeof *merge_own);
    if (!merges || !merge_own) goto oom;
    int k = 0;
    for (const cJSON *m = mj->child; m; m = m->next, k++) {
        if (cJSON_IsString(m))
            merges[k] = m->valuestring;
        else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                 cJSON_IsString(m->child->next)) {
            const char *a = m->child->valuestring, *b = m->child->next->valuestring;
            const size_t na = strlen(a), nb = strlen(b);
            if (!(merge_own[k] = malloc(na + nb + 2))) goto oom;
            memcpy(merge_own[k], a, na);
            merge_own[k][na] = ' ';
            memcpy(merge_own[k] + na + 1, b, nb + 1);
            merges[k] = merge_own[k];
        } else {
            snprintf(err, errlen, "%s: model.merges[%d] is neither \"a b\" nor [\"a\", \"b\"]",
                     path, k);
            goto done;
        }
    }
    if (gguf_w_str(w, "tokenizer.ggml.model", "gpt2") ||
        gguf_w_str(w, "tokenizer.ggml.pre", "qwen2") ||
        gguf_w_str_array(w, "tokenizer.ggml.tokens", tokens, NULL, (size_t)n_vocab) ||
        gguf_w_i32_array(w, "tokenizer.ggml.token_type", types, (size_t)n_vocab) ||
        gguf_w_str_array(w, "tokenizer.ggml.merges", merges, NULL, (size_t)n_merges))
        goto oom;
    const int has_end = end_id >= 0 && end_id < n_vocab;
    if (has_end && (gguf_w_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)end_id) ||
                    gguf_w_u32(w, "tokenizer.ggml.padding_token_id", (uint32_t)end_id)))
        goto oom;
    if (gguf_w_bool(w, "tokenizer.ggml.add_bos_token", 0) ||
        gguf_w_bool(w, "tokenizer.ggml.add_eos_token", has_end))
        goto oom;
    if (dropped && !quiet)
        fprintf(stderr,
                "qembed quantize: %d token%s past the %d-row embedding table left out of "
                "tokenizer.ggml.tokens\n",
                dropped, dropped == 1 ? "" : "s", n_vocab);
    rc = 0;
    goto done;
oom:
    snprintf(err, errlen, "out of memory writing the tokenizer metadata");
done:
    for (int i = 0; pads && i < n_vocab; i++)
        free(pads[i]);
    for (int i = 0; merge_own && i < n_merges; i++)
        free(merge_own[i]);
    free(pads);
    free(merge_own);
    free(merges);
    free(tokens);
    free(types);
    cJSON_Delete(root);
    return rc;
}

static int write_config(gguf_writer *w, const qe_model *m, qz_ftype ft, int rerank, char *err,
                        size_t errlen) {
    const qe_config *c = &m->cfg;
    const char *base = strrchr(m->dir, '/');
    base = base && base[1] ? base + 1 : m->dir;
    int bad = gguf_w_str(w, "general.architecture", "qwen3") ||
              gguf_w_str(w, "general.type", "model") || gguf_w_str(w, "general.name", base) ||
              gguf_w_u32(w, "general.file_type", (uint32_t)ft) ||
              gguf_w_u32(w, "general.alignment", GGUF_DEFAULT_ALIGNMENT);
    if (!bad && quantized(base_type(ft))) bad = gguf_w_u32(w, "general.quantization_version", 2);
    bad =
        bad || gguf_w_u32(w, "qwen3.block_count", (uint32_t)c->num_layers) ||
        gguf_w_u32(w, "qwen3.context_length", (uint32_t)c->max_position_embeddings) ||
        gguf_w_u32(w, "qwen3.embedding_length", (uint32_t)c->hidden_size) ||
        gguf_w_u32(w, "qwen3.feed_forward_length", (uint32_t)c->intermediate_size) ||
        gguf_w_u32(w, "qwen3.attention.head_count", (uint32_t)c->num_heads) ||
        gguf_w_u32(w, "qwen3.attention.head_count_kv", (uint32_t)c->num_kv_heads) ||
        gguf_w_f32(w, "qwen3.rope.freq_base", (float)c->rope_theta) ||
        gguf_w_f32(w, "qwen3.attention.layer_norm_rms_epsilon", (float)c->rms_norm_eps) ||
        gguf_w_u32(w, "qwen3.attention.key_length", (uint32_t)c->head_dim) ||
        gguf_w_u32(w, "qwen3.attention.value_length", (uint32_t)c->head_dim) ||
        /* an embedding model: the last token's hidden state (llama.cpp's LLAMA_POOLING_TYPE_LAST);
         * a reranker: that state against cls.output's rows (LLAMA_POOLING_TYPE_RANK) */
        gguf_w_u32(w, "qwen3.pooling_type", rerank ? GGUF_POOL_RANK : GGUF_POOL_LAST);
    static const char *const labels[2] = {"yes", "no"}; /* cls.output's rows, in this order */
    char tmpl[1024];
    if (rerank)
        bad = bad || gguf_w_str_array(w, "qwen3.classifier.output_labels", labels, NULL, 2) ||
              /* the prompt, for llama.cpp's reranking (its server, node-llama-cpp) */
              qe_rerank_template(NULL, tmpl, sizeof tmpl) < 0 ||
              gguf_w_str(w, "tokenizer.chat_template.rerank", tmpl);
    /* an embedding model's named prompts ("query": "Instruct: ...\nQuery:"), which GGUF has no
     * key for: config_sentence_transformers.json whole, read back by runtime/gguf_tokenizer.c */
    char path[4200], *st_json = NULL;
    size_t st_len = 0;
    snprintf(path, sizeof path, "%s/config_sentence_transformers.json", m->dir);
    if (!bad && !rerank && (st_json = st_read_small_file(path, &st_len)) && st_len > 0)
        bad = gguf_w_str(w, GGUF_KEY_SENTENCE_TRANSFORMERS, st_json);
    free(st_json);
    if (bad) snprintf(err, errlen, "out of memory writing the metadata");
    return bad ? -1 : 0;
}

/* --- tensors --- */

/* A reranker's cls.output.weight: rows "yes" then "no" of its output layer (lm_head.weight, or
 * the tied table) as F32 [2, hidden], what llama.cpp's converter writes for a Qwen3-Reranker. */
static int make_cls_out(const qe_model *m, const st_tensor *lm_head, const tok_tokenizer *tok,
                        st_tensor *cls, char *err, size_t errlen) {
    const qe_config *c = &m->cfg;
    const st_tensor *w = lm_head ? lm_head : m->embed;
    int yes, no;
    if (rerank_answer_ids(tok, c->vocab_size, &yes, &no, err, errlen)) return -1;
    if (w->ndim != 2 || w->shape[0] != c->vocab_size || w->shape[1] != c->hidden_size) {
        snprintf(err, errlen, "tensor \"%s\": expected shape [%d, %d]", w->name, c->vocab_size,
                 c->hidden_size);
        return -1;
    }
    float *rows = malloc(sizeof(float) * 2 * (size_t)c->hidden_size);
    if (!rows) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    const st_tensor ry = st_rows(w, yes, 1), rn = st_rows(w, no, 1);
    st_to_f32(&ry, rows);
    st_to_f32(&rn, rows + c->hidden_size);
    *cls = (st_tensor){.name = "cls.output.weight", .dtype = ST_F32, .ndim = 2, .data = rows};
    snprintf(cls->dtype_name, sizeof cls->dtype_name, "F32");
    cls->shape[0] = 2, cls->shape[1] = c->hidden_size;
    cls->nbytes = sizeof(float) * 2 * (size_t)c->hidden_size;
    return 0;
}

typedef struct {
    char name[64];
    const st_tensor *src;
    qz_kind kind;
    int layer;
} qz_item;

/* Whether out may be written: a new path, or an existing regular file that is not one of the
 * input folder's own weight or config files (a GGUF written over model.safetensors would leave a
 * folder that no longer loads). A device, a folder or a fifo is refused: the file appears by a
 * rename over the path. */
static int check_out_path(const char *out, const char *dir, char *err, size_t errlen) {
    struct stat so, sp, sd;
    if (stat(out, &so) != 0) return 0; /* a new file (or an error create will name) */
    if (!S_ISREG(so.st_mode)) {
        snprintf(err, errlen, "%s exists and is not a regular file; --out takes a file's path",
                 out);
        return -1;
    }
    const char *slash = strrchr(out, '/');
    const char *base = slash ? slash + 1 : out;
    char parent[4096];
    snprintf(parent, sizeof parent, "%.*s", slash ? (int)(slash - out) + 1 : 1, slash ? out : ".");
    const size_t n = strlen(base);
    const int weights_or_config = (n > 12 && !strcmp(base + n - 12, ".safetensors")) ||
                                  (n > 5 && !strcmp(base + n - 5, ".json"));
    if (weights_or_config && stat(parent, &sp) == 0 && stat(dir, &sd) == 0 &&
        sp.st_dev == sd.st_dev && sp.st_ino == sd.st_ino) {
        snprintf(err, errlen,
                 "%s is one of the files of %s, the model being read; choose another --out", out,
                 dir);
        return -1;
    }
    return 0;
}

/* A private temporary beside out (so the rename stays on one file system), mode 0666 less the
 * umask like a plain fopen's; NULL with err set. */
static FILE *create_temp(const char *out, char *tmp, size_t tmplen, char *err, size_t errlen) {
    snprintf(tmp, tmplen, "%s.XXXXXX", out);
    const int fd = mkstemp(tmp);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot create a file beside it", out);
        tmp[0] = 0;
        return NULL;
    }
    const mode_t mask = umask(0);
    umask(mask);
    fchmod(fd, 0666 & ~mask);
    FILE *f = fdopen(fd, "wb");
    if (!f) {
        close(fd);
        snprintf(err, errlen, "%s: cannot open", tmp);
    }
    return f;
}

int qz_run(const qz_opts *o, char *err, size_t errlen) {
    if (check_out_path(o->out_path, o->model_dir, err, errlen)) return -1;
    qe_model m;
    if (model_open(o->model_dir, &m, err, errlen)) return -1;
    const qe_config *c = &m.cfg;
    gguf_writer *w = NULL;
    tok_tokenizer *tok = NULL;
    qz_item *items = NULL;
    st_tensor cls = {0}; /* a reranker's classifier rows, made here */
    float *f32 = NULL;
    void *q = NULL;
    FILE *f = NULL;
    char tmp[4200] = ""; /* the temporary, once made */
    int rc = -1, n_items = 0;
    if (c->alibi) {
        snprintf(err, errlen,
                 "%s: an ALiBi model (position_embedding_type \"alibi\") has no qwen3 GGUF form",
                 o->model_dir);
        goto done;
    }
    /* the appended end token, as the tokenizer's post-processor says (not config.json's eos) */
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", o->model_dir);
    if (tok_load_file(path, &tok, err, errlen) != TOK_OK) goto done;
    /* Qwen3-Reranker folders ship a tokenizer that appends nothing (the engine's detection,
     * runtime/rerank.c, says the same of such a folder) */
    const int rerank = tok_end_id(tok) < 0;
    const st_tensor *lm_head = c->tie_word_embeddings ? NULL : st_find(m.archive, "lm_head.weight");
    if (rerank && make_cls_out(&m, lm_head, tok, &cls, err, errlen)) goto done;
    /* The output layer's type rule applies to the table when the file has no output.weight:
     * tied, or a reranker, whose output layer is cls.output (as llama.cpp's has_output says). */
    const int tied = lm_head == NULL || rerank;
    items = calloc((size_t)(3 + 11 * c->num_layers), sizeof *items);
    if (!items || !(w = gguf_writer_new())) goto oom;
#define ITEM(src_, kind_, layer_, ...)                                                             \
    do {                                                                                           \
        qz_item *it = &items[n_items++];                                                           \
        snprintf(it->name, sizeof it->name, __VA_ARGS__);                                          \
        it->src = (src_);                                                                          \
        it->kind = (kind_);                                                                        \
        it->layer = (layer_);                                                                      \
    } while (0)
    ITEM(m.embed, QZ_KIND_TOKEN_EMBD, 0, "token_embd.weight");
    for (int l = 0; l < c->num_layers; l++) {
        const qe_layer_tensors *L = &m.layers[l];
        ITEM(L->attn_norm, QZ_KIND_NORM, l, "blk.%d.attn_norm.weight", l);
        ITEM(L->wq, QZ_KIND_ATTN_Q, l, "blk.%d.attn_q.weight", l);
        ITEM(L->wk, QZ_KIND_ATTN_K, l, "blk.%d.attn_k.weight", l);
        ITEM(L->wv, QZ_KIND_ATTN_V, l, "blk.%d.attn_v.weight", l);
        ITEM(L->q_norm, QZ_KIND_NORM, l, "blk.%d.attn_q_norm.weight", l);
        ITEM(L->k_norm, QZ_KIND_NORM, l, "blk.%d.attn_k_norm.weight", l);
        ITEM(L->wo, QZ_KIND_ATTN_OUTPUT, l, "blk.%d.attn_output.weight", l);
        ITEM(L->mlp_norm, QZ_KIND_NORM, l, "blk.%d.ffn_norm.weight", l);
        ITEM(L->w_gate, QZ_KIND_FFN_GATE, l, "blk.%d.ffn_gate.weight", l);
        ITEM(L->w_up, QZ_KIND_FFN_UP, l, "blk.%d.ffn_up.weight", l);
        ITEM(L->w_down, QZ_KIND_FFN_DOWN, l, "blk.%d.ffn_down.weight", l);
    }
    ITEM(m.final_norm, QZ_KIND_NORM, 0, "output_norm.weight");
    if (rerank)
        ITEM(&cls, QZ_KIND_CLS_OUT, 0, "cls.output.weight");
    else if (lm_head)
        ITEM(lm_head, QZ_KIND_OUTPUT, 0, "output.weight");
#undef ITEM
    if (write_config(w, &m, o->ftype, rerank, err, errlen) ||
        write_tokenizer(w, o->model_dir, c->vocab_size, tok_end_id(tok), o->quiet, err, errlen))
        goto done;
    size_t max_elems = 0;
    for (int i = 0; i < n_items; i++) {
        const st_tensor *t = items[i].src;
        if (!rerank && lm_head && t == lm_head &&
            (t->ndim != 2 || t->shape[0] != c->vocab_size || t->shape[1] != c->hidden_size)) {
            snprintf(err, errlen, "tensor \"lm_head.weight\": expected shape [%d, %d]",
                     c->vocab_size, c->hidden_size);
            goto done;
        }
        /* GGUF dims are the safetensors shape reversed: [out, in] becomes [in, out] */
        int64_t dims[2] = {t->shape[t->ndim - 1], t->ndim == 2 ? t->shape[0] : 1};
        const uint32_t type =
            qz_tensor_type(o->ftype, items[i].kind, items[i].layer, c->num_layers, dims[0], tied);
        if (gguf_w_tensor(w, items[i].name, type, t->ndim, dims) != i) goto oom;
        size_t n = (size_t)(dims[0] * dims[1]);
        if (n > max_elems) max_elems = n;
    }
    size_t max_bytes = 0;
    for (int i = 0; i < n_items; i++)
        if (gguf_w_tensor_bytes(w, i) > max_bytes) max_bytes = (size_t)gguf_w_tensor_bytes(w, i);
    f32 = malloc(sizeof *f32 * max_elems);
    q = malloc(max_bytes);
    if (!f32 || !q) goto oom;
    if (!(f = create_temp(o->out_path, tmp, sizeof tmp, err, errlen))) goto done;
    if (gguf_w_begin(w, f, err, errlen)) goto done;
    int progress = 0; /* a progress line is open on stderr */
    for (int i = 0; i < n_items; i++) {
        const st_tensor *t = items[i].src;
        const int64_t n = t->ndim == 2 ? t->shape[0] * t->shape[1] : t->shape[0];
        const uint32_t type = qz_tensor_type(o->ftype, items[i].kind, items[i].layer, c->num_layers,
                                             t->shape[t->ndim - 1], tied);
        if (!o->quiet)
            progress = fprintf(stderr, "\rqembed quantize: tensor %d of %d  %-28s %-5s", i + 1,
                               n_items, items[i].name, ref_qtype_get(type)->name) > 0;
        st_to_f32(t, f32);
        int bad = ref_quantize(type, f32, q, n);
        if (bad)
            snprintf(err, errlen, "tensor \"%s\": cannot quantize to %s", items[i].name,
                     ref_qtype_get(type)->name);
        else
            bad = gguf_w_data(w, f, i, q, err, errlen);
        if (bad) {
            if (progress) fprintf(stderr, "\n"); /* the error goes on a line of its own */
            goto done;
        }
    }
    if (progress) fprintf(stderr, "\n");
    if (fclose(f)) {
        f = NULL;
        snprintf(err, errlen, "%s: write failed", tmp);
        goto done;
    }
    f = NULL;
    if (rename(tmp, o->out_path)) {
        snprintf(err, errlen, "cannot rename %s to %s", tmp, o->out_path);
        goto done;
    }
    rc = 0;
    goto done;
oom:
    snprintf(err, errlen, "out of memory");
done:
    if (f) fclose(f);
    if (rc && tmp[0]) remove(tmp);
    free((void *)cls.data);
    free(f32);
    free(q);
    free(items);
    gguf_writer_free(w);
    tok_free(tok);
    model_close(&m);
    return rc;
}
