/* cmd_inspect.c — `qembed inspect`: what a model folder holds, checked the way the engine
 * loads it (so a folder that inspects cleanly also opens). */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "gguf_tokenizer.h"
#include "rerank.h"
#include "tokenizer/tokenizer.h"
#include "kernels/ref/ref_quant.h"
#include "weights/gguf_config.h"
#include "weights/model.h"

static void usage(FILE *f) {
    fprintf(f, "usage: qembed inspect --model DIR|FILE.gguf [--tensors] [--task embed|rerank]\n\n"
               "Prints the model's geometry, dtype, parameter count, task and the tensors found,\n"
               "after checking every tensor against config.json as the engine does. For a .gguf\n"
               "file: the geometry from its metadata, the storage type of each kind of tensor,\n"
               "parameters and bytes.\n"
               "  --tensors   list every tensor (default: a summary)\n"
               "  --task T    check the folder as this task (default: decided from the folder)\n");
}

static void print_tensor(const st_tensor *t) {
    printf("  %-56s %-5s [", t->name, t->dtype_name);
    for (int d = 0; d < t->ndim; d++)
        printf("%s%lld", d ? ", " : "", (long long)t->shape[d]);
    printf("]\n");
}

static int ends_with(const char *s, const char *suffix) {
    const size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* The kind of a GGUF tensor: its name without the "blk.N." of a layer. */
static const char *gguf_kind(const char *name) {
    int layer, at = 0;
    if (sscanf(name, "blk.%d.%n", &layer, &at) == 1 && at > 0) return name + at;
    return name;
}

static int inspect_gguf(const char *path, int all, qe_task task) {
    gguf_file *g;
    char err[512];
    if (gguf_open(path, &g, err, sizeof err)) {
        fprintf(stderr, "qembed inspect: %s\n", err);
        return 1;
    }
    qe_config c;
    if (gguf_read_config(g, &c, err, sizeof err)) {
        fprintf(stderr, "qembed inspect: %s: %s\n", path, err);
        gguf_close(g);
        return 1;
    }
    /* bound as the engine binds it (names, shapes, types), without dequantizing */
    qe_model m;
    if (model_open(path, &m, err, sizeof err)) {
        fprintf(stderr, "qembed inspect: %s\n", err);
        gguf_close(g);
        return 1;
    }
    /* the task, decided as qe_open decides it: the pooling type, or --task */
    tok_tokenizer *tok = NULL;
    rerank_head rr;
    const int bad = (gguf_has(g, "tokenizer.ggml.tokens") &&
                     gguf_load_tokenizer(m.gguf, path, &tok, err, sizeof err) != TOK_OK) ||
                    rerank_head_open(&rr, path, &m, tok, task, err, sizeof err);
    if (!bad) rerank_head_free(&rr); /* only its task and reason are shown */
    tok_free(tok);
    model_close(&m);
    if (bad) {
        fprintf(stderr, "qembed inspect: %s\n", err);
        gguf_close(g);
        return 1;
    }
    gguf_span name = {"", 0};
    gguf_get_string(g, "general.name", &name, err, sizeof err);
    uint64_t n_tok = 0;
    const int tk = gguf_kv_index(g, "tokenizer.ggml.tokens");
    if (tk >= 0) gguf_kv_type(g, tk, NULL, &n_tok);
    uint32_t pool = GGUF_POOL_LAST;
    if (gguf_has(g, "qwen3.pooling_type"))
        gguf_get_u32(g, "qwen3.pooling_type", &pool, err, sizeof err);
    printf("model          %s (GGUF v%u%s%.*s)\n", path, gguf_version(g), name.len ? ", " : "",
           (int)name.len, name.ptr);
    printf("type           %s, llama.cpp tensor names; pooling %s\n", c.model_type,
           pool == GGUF_POOL_NONE   ? "none"
           : pool == GGUF_POOL_RANK ? "rank (a reranker: the last token against cls.output)"
                                    : "last token");
    printf("task           %s: %s\n", qe_task_name(rr.task), rr.reason);
    printf("embedding      %d (embedding_length)\n", c.hidden_size);
    printf("layers         %d\n", c.num_layers);
    printf("heads          %d query / %d kv (GQA %d:1), head_dim %d\n", c.num_heads, c.num_kv_heads,
           c.num_heads / c.num_kv_heads, c.head_dim);
    printf("intermediate   %d\n", c.intermediate_size);
    printf("vocab          %d (%llu tokens in tokenizer.ggml.tokens)\n", c.vocab_size,
           (unsigned long long)n_tok);
    int add_eos = 0;
    uint32_t eos = 0;
    if (gguf_has(g, "tokenizer.ggml.add_eos_token"))
        gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &add_eos, err, sizeof err);
    if (add_eos && !gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &eos, err, sizeof err))
        printf("end token      %u appended to every text (tokenizer.ggml.add_eos_token)\n", eos);
    else if (tk >= 0)
        printf("end token      none appended (tokenizer.ggml.add_eos_token is not true): texts "
               "are pooled at their own last token, not at an appended <|endoftext|>\n");
    printf("max positions  %d\n", c.max_position_embeddings);
    printf("positions      RoPE, theta %g; rms eps %g\n", c.rope_theta, c.rms_norm_eps);
    printf("embeddings     %s\n", c.tie_word_embeddings ? "tied (no output.weight)" : "untied");
    /* parameters and bytes, and per kind of tensor the types it is stored in */
    enum { MAX_KINDS = 32 };
    struct {
        char kind[64];
        int count[64]; /* by ggml type id, ids < 64 */
        long long params;
        unsigned long long bytes;
    } kinds[MAX_KINDS];
    int n_kinds = 0;
    long long params = 0;
    unsigned long long bytes = 0;
    for (int i = 0; i < gguf_count(g); i++) {
        const gguf_tensor *t = gguf_at(g, i);
        params += t->n_elements;
        bytes += t->nbytes;
        const char *k = gguf_kind(t->name);
        int j = 0;
        while (j < n_kinds && strcmp(kinds[j].kind, k))
            j++;
        if (j == n_kinds) {
            if (n_kinds == MAX_KINDS) continue;
            memset(&kinds[j], 0, sizeof kinds[j]);
            snprintf(kinds[j].kind, sizeof kinds[j].kind, "%s", k);
            n_kinds++;
        }
        if (t->type < 64) kinds[j].count[t->type]++;
        kinds[j].params += t->n_elements;
        kinds[j].bytes += t->nbytes;
    }
    printf("parameters     %.3f B (%lld)\n", params / 1e9, params);
    printf("tensor bytes   %.1f MiB, %.2f bits per weight; %d tensors, each bound and checked as "
           "the engine loads them\n",
           bytes / 1048576.0, params ? 8.0 * (double)bytes / (double)params : 0.0, gguf_count(g));
    printf("types          (per kind of tensor; blk.N. omitted)\n");
    for (int j = 0; j < n_kinds; j++) {
        char types[256] = "";
        size_t pos = 0;
        for (uint32_t ty = 0; ty < 64 && pos < sizeof types - 32; ty++)
            if (kinds[j].count[ty]) {
                const ref_qtype_info *qi = ref_qtype_get(ty);
                pos += (size_t)snprintf(types + pos, sizeof types - pos, "%s%s x%d",
                                        pos ? ", " : "", qi ? qi->name : "?", kinds[j].count[ty]);
            }
        printf("  %-24s %-28s %8.2f MiB\n", kinds[j].kind, types, kinds[j].bytes / 1048576.0);
    }
    if (all)
        for (int i = 0; i < gguf_count(g); i++) {
            const gguf_tensor *t = gguf_at(g, i);
            printf("  %-40s %-5s [", t->name, t->type_name);
            for (int d = 0; d < t->ndim; d++)
                printf("%s%lld", d ? ", " : "", (long long)t->dims[d]);
            printf("]\n");
        }
    gguf_close(g);
    return 0;
}

int cmd_inspect(int argc, char **argv) {
    const char *dir = NULL;
    int all = 0;
    qe_task task = QE_TASK_AUTO;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--model") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--tensors"))
            all = 1;
        else if (!strcmp(argv[i], "--task") && i + 1 < argc) {
            const char *v = argv[++i];
            task = !strcmp(v, "embed") ? QE_TASK_EMBED : !strcmp(v, "rerank") ? QE_TASK_RERANK : -1;
            if ((int)task < 0) {
                fprintf(stderr, "qembed inspect: --task must be embed or rerank\n");
                return 2;
            }
        } else {
            const int valued = !strcmp(argv[i], "--model") || !strcmp(argv[i], "--task");
            fprintf(stderr, "qembed inspect: %s %s\n", argv[i],
                    valued ? "needs a value" : "is no option (see --help)");
            return 2;
        }
    }
    if (!dir) {
        fprintf(stderr, "qembed inspect: --model DIR|FILE.gguf is required\n");
        usage(stderr);
        return 2;
    }
    if (ends_with(dir, ".gguf")) return inspect_gguf(dir, all, task);
    qe_model m;
    char err[512];
    if (model_open(dir, &m, err, sizeof err)) {
        fprintf(stderr, "qembed inspect: %s\n", err);
        return 1;
    }
    /* the task, decided as qe_open decides it (the tokenizer is needed for a reranker's ids) */
    tok_tokenizer *tok = NULL;
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *tf = fopen(path, "rb");
    if (tf) {
        fclose(tf);
        if (tok_load(dir, &tok, err, sizeof err) != TOK_OK) {
            fprintf(stderr, "qembed inspect: %s\n", err);
            model_close(&m);
            return 1;
        }
    }
    rerank_head rr;
    if (rerank_head_open(&rr, dir, &m, tok, task, err, sizeof err)) {
        fprintf(stderr, "qembed inspect: %s\n", err);
        tok_free(tok);
        model_close(&m);
        return 1;
    }
    const qe_config *c = &m.cfg;
    long long total = cfg_total_params(c), linear = cfg_linear_params(c);
    printf("model          %s\n", dir);
    printf("type           %s, key layout: %s\n", c->model_type,
           m.prefix[0] ? "\"model.\" prefix (Qwen3ForCausalLM)" : "no prefix (embedding repo)");
    printf("task           %s: %s\n", qe_task_name(rr.task), rr.reason);
    if (rr.task == QE_TASK_RERANK)
        printf("rerank head    rows \"yes\" %d and \"no\" %d of %s; template %d + %d tokens\n",
               rr.yes_id, rr.no_id, rr.rows_of, rr.n_prefix, rr.n_suffix);
    printf("embedding      %d (hidden_size)\n", c->hidden_size);
    printf("layers         %d\n", c->num_layers);
    printf("heads          %d query / %d kv (GQA %d:1), head_dim %d\n", c->num_heads,
           c->num_kv_heads, c->num_heads / c->num_kv_heads, c->head_dim);
    printf("intermediate   %d\n", c->intermediate_size);
    printf("vocab          %d\n", c->vocab_size);
    printf("max positions  %d\n", c->max_position_embeddings);
    if (c->alibi)
        printf("positions      ALiBi (position_embedding_type \"alibi\"), no RoPE; rms eps %g\n",
               c->rms_norm_eps);
    else
        printf("positions      RoPE, theta %g; rms eps %g\n", c->rope_theta, c->rms_norm_eps);
    printf("dtype          %s (config says %s)\n", st_dtype_name(m.dtype), c->torch_dtype);
    printf("parameters     %.3f B (%.3f B in linear layers: %.2f GFLOP per token)\n", total / 1e9,
           linear / 1e9, 2.0 * linear / 1e9);
    printf("files          %d safetensors, %d tensors%s\n", st_file_count(m.archive),
           st_count(m.archive),
           !st_find(m.archive, "lm_head.weight") ? ""
           : rr.task == QE_TASK_RERANK && !c->tie_word_embeddings
               ? " (2 rows of lm_head.weight used)"
               : " (lm_head.weight ignored)");
    if (all) {
        for (int i = 0; i < st_count(m.archive); i++)
            print_tensor(st_at(m.archive, i));
    } else {
        print_tensor(m.embed);
        const qe_layer_tensors *L = &m.layers[0];
        const st_tensor *first[] = {L->attn_norm, L->wq,     L->wk,    L->wv,
                                    L->q_norm,    L->k_norm, L->wo,    L->mlp_norm,
                                    L->w_gate,    L->w_up,   L->w_down};
        for (size_t i = 0; i < sizeof first / sizeof first[0]; i++)
            print_tensor(first[i]);
        if (c->num_layers > 1)
            printf("  ... (%d more layers; --tensors lists all)\n", c->num_layers - 1);
        print_tensor(m.final_norm);
    }
    rerank_head_free(&rr);
    tok_free(tok);
    model_close(&m);
    return 0;
}
