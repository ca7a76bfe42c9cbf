/* quantize.h — a Hugging Face Qwen3 folder to one GGUF v3 file (`qembed quantize`): llama.cpp's
 * tensor names and metadata keys, the tokenizer as tokenizer.ggml.* arrays, and the tensors in
 * one file type (f32, f16, bf16, q8_0, q4_0, q6_k, or llama.cpp's q4_k_m mix). A Qwen3-Reranker
 * folder is written in llama.cpp's reranker form: pooling_type 4 (rank), the output layer's "yes"
 * and "no" rows as cls.output.weight, labelled by qwen3.classifier.output_labels. */
#ifndef QE_TOOLS_QUANTIZE_H
#define QE_TOOLS_QUANTIZE_H
#include <stddef.h>
#include <stdint.h>

/* The file types; values are llama.cpp's general.file_type (llama_ftype). */
typedef enum {
    QZ_F32 = 0,
    QZ_F16 = 1,
    QZ_Q4_0 = 2,
    QZ_Q8_0 = 7,
    QZ_Q4_K_M = 15,
    QZ_Q6_K = 18,
    QZ_BF16 = 32,
} qz_ftype;

/* What a tensor is, for the recipe. */
typedef enum {
    QZ_KIND_NORM, /* any RMSNorm weight (1-D): always F32 */
    QZ_KIND_TOKEN_EMBD,
    QZ_KIND_OUTPUT,
    QZ_KIND_ATTN_Q,
    QZ_KIND_ATTN_K,
    QZ_KIND_ATTN_V,
    QZ_KIND_ATTN_OUTPUT,
    QZ_KIND_FFN_GATE,
    QZ_KIND_FFN_UP,
    QZ_KIND_FFN_DOWN,
    QZ_KIND_CLS_OUT, /* a reranker's cls.output.weight (its yes and no rows): always F32 */
} qz_kind;

/* Parses "q8_0", "q4_k_m", ... (also "Q4_K_M"); -1 for an unknown name. */
int qz_ftype_parse(const char *s, qz_ftype *out);
const char *qz_ftype_name(qz_ftype t);

/* The ggml type a tensor gets: kind, its layer (for the per-layer rules; ignored otherwise), the
 * model's layer count, its row length (ncols, GGUF dims[0]) and whether the embedding table is
 * also the output layer. The rule is described at its definition in quantize.c. */
uint32_t qz_tensor_type(qz_ftype ft, qz_kind kind, int layer, int n_layers, int64_t ncols,
                        int tied);

typedef struct qz_opts {
    const char *model_dir;
    const char *out_path;
    qz_ftype ftype;
    int quiet; /* no progress line on stderr */
} qz_opts;

/* Writes the file (to out_path.tmp, renamed at the end). Returns 0, or -1 with err. */
int qz_run(const qz_opts *o, char *err, size_t errlen);

#endif
