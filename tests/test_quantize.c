/* test_quantize.c — `qembed quantize` and GGUF models in the engine: random models quantized to
 * every type open with the project's GGUF reader, their config round-trips, every tensor
 * dequantizes to its source within the type's block error bound and has the type the recipe
 * says; the GGUF tokenizer gives tokenizer.json's ids on every fixture case; an f32 GGUF embeds
 * bitwise like its folder, and q8_0 / q4_k_m GGUFs like a double forward on their dequantized
 * weights (and close to the full-precision model: cosines in the log). */
#include <cjson/cJSON.h>

#include "gguf_tokenizer.h"
#include "kernels/ref/ref_quant.h"
#include "naive_forward.h"
#include "qembed.h"
#include "quant_bound.h"
#include "quant_report.h"
#include "quantize.h"
#include "random_model.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"
#include "weights/gguf.h"
#include "weights/gguf_config.h"
#include "weights/gguf_write.h"

static char err[1024];

/* A geometry whose rows are whole 256-element super-blocks (so the K-quants are used, not their
 * fallbacks) and 8 layers (so llama.cpp's use_more_bits picks layers 0, 3, 6 and 7). */
static void make_model_kv(char *dir, size_t cap, const char *tag, int tied, int kv_heads) {
    tu_scratch_dir(dir, cap, tag);
    random_model_opts o = {0};
    random_model_preset("tiny", &o.cfg);
    o.cfg.vocab_size = 4096;
    o.cfg.hidden_size = 256;
    o.cfg.intermediate_size = 512;
    o.cfg.num_layers = 8;
    o.cfg.num_heads = 2;
    o.cfg.num_kv_heads = kv_heads;
    o.cfg.head_dim = 128;
    o.cfg.tie_word_embeddings = tied;
    o.prefixed = !tied; /* "model." keys and an lm_head.weight, used when untied */
    o.out_dir = dir;
    o.seed = 5;
    o.dtype = ST_BF16;
    o.quiet = 1;
    cr_assert_eq(random_model_write(&o, err, sizeof err), 0, "%s", err);
}

static void make_model(char *dir, size_t cap, const char *tag, int tied) {
    make_model_kv(dir, cap, tag, tied, 1);
}

static void quantize(const char *dir, qz_ftype ft, char *out, size_t cap) {
    snprintf(out, cap, "%s/model-%s.gguf", dir, qz_ftype_name(ft));
    const qz_opts o = {.model_dir = dir, .out_path = out, .ftype = ft, .quiet = 1};
    cr_assert_eq(qz_run(&o, err, sizeof err), 0, "quantize %s: %s", qz_ftype_name(ft), err);
}

static const char *const LAYER_GGUF[11] = {"attn_norm",   "attn_q",      "attn_k",      "attn_v",
                                           "attn_q_norm", "attn_k_norm", "attn_output", "ffn_norm",
                                           "ffn_gate",    "ffn_up",      "ffn_down"};

/* The type the recipe gives, written out independently of quantize.c for this 8-layer model. */
static uint32_t expected_type(qz_ftype ft, const char *name, int layer, int tied) {
    const int norm = strstr(name, "norm") != NULL;
    if (norm) return QT_F32;
    const int embd = !strcmp(name, "token_embd"), out = !strcmp(name, "output");
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
        return out || (embd && tied) ? QT_Q6_K : QT_Q4_0;
    case QZ_Q6_K:
        return QT_Q6_K;
    case QZ_Q4_K_M: {
        if (out || (embd && tied)) return QT_Q6_K;
        const int more = layer == 0 || layer == 3 || layer == 6 || layer == 7;
        if ((!strcmp(name, "attn_v") || !strcmp(name, "ffn_down")) && more) return QT_Q6_K;
        return QT_Q4_K;
    }
    }
    return UINT32_MAX;
}

/* One tensor of the file against its source: dims reversed, type, every element within bound. */
static void check_tensor(const gguf_file *g, const char *gname, const st_tensor *src,
                         uint32_t want_type, const char *ftname) {
    const gguf_tensor *t = gguf_find(g, gname);
    cr_assert(t, "%s: no tensor %s", ftname, gname);
    cr_assert_eq(t->type, want_type, "%s: %s is %s, the recipe says %s", ftname, gname,
                 t->type_name, ref_qtype_get(want_type)->name);
    cr_assert_eq(t->ndim, src->ndim, "%s: %s dims", ftname, gname);
    for (int d = 0; d < t->ndim; d++)
        cr_assert_eq(t->dims[d], src->shape[src->ndim - 1 - d], "%s: %s dim %d", ftname, gname, d);
    const size_t n = (size_t)t->n_elements;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    st_to_f32(src, x);
    for (size_t i = 0; i < n; i++)
        y[i] = NAN;
    cr_assert_eq(ref_dequantize(t->type, t->data, y, t->n_elements), 0);
    const int block = ref_qtype_get(t->type)->block;
    double worst = -1;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const size_t b0 = block > 1 ? i / (size_t)block * (size_t)block : i;
        const double e = fabs((double)y[i] - x[i]);
        const double bnd = quant_bound(t->type, x + b0, block > 1 ? (int)(i - b0) : 0);
        if (!(e <= bnd + 1e-30) && (worst < 0 || !(e - bnd <= worst))) {
            worst = isnan(e) ? INFINITY : e - bnd;
            at = i;
        }
    }
    cr_expect_lt(worst, 0, "%s: %s element %zu is %.7g for %.7g (past the %s bound by %g)", ftname,
                 gname, at, y[at], x[at], t->type_name, worst);
    free(x);
    free(y);
}

static void check_file(const char *dir, const char *path, qz_ftype ft, int tied) {
    qe_model m;
    cr_assert_eq(model_open(dir, &m, err, sizeof err), 0, "%s", err);
    gguf_file *g;
    cr_assert_eq(gguf_open(path, &g, err, sizeof err), 0, "%s", err);
    const char *ftn = qz_ftype_name(ft);
    qe_config c;
    cr_assert_eq(gguf_read_config(g, &c, err, sizeof err), 0, "%s: %s", ftn, err);
    const qe_config *w = &m.cfg;
    cr_expect_eq(c.vocab_size, w->vocab_size);
    cr_expect_eq(c.hidden_size, w->hidden_size);
    cr_expect_eq(c.intermediate_size, w->intermediate_size);
    cr_expect_eq(c.num_layers, w->num_layers);
    cr_expect_eq(c.num_heads, w->num_heads);
    cr_expect_eq(c.num_kv_heads, w->num_kv_heads);
    cr_expect_eq(c.head_dim, w->head_dim);
    cr_expect_eq(c.max_position_embeddings, w->max_position_embeddings);
    cr_expect_eq(c.rope_theta, (double)(float)w->rope_theta);
    cr_expect_eq(c.rms_norm_eps, (double)(float)w->rms_norm_eps);
    cr_expect_eq(c.tie_word_embeddings, tied, "%s: tied", ftn);
    uint32_t v;
    cr_expect_eq(gguf_get_u32(g, "qwen3.pooling_type", &v, err, sizeof err), 0);
    cr_expect_eq(v, GGUF_POOL_LAST);
    cr_expect_eq(gguf_get_u32(g, "general.file_type", &v, err, sizeof err), 0);
    cr_expect_eq(v, (uint32_t)ft);
    uint64_t n_tok = 0;
    gguf_kv_type(g, gguf_kv_index(g, "tokenizer.ggml.tokens"), NULL, &n_tok);
    cr_expect_eq(n_tok, (uint64_t)w->vocab_size, "%s: one token per embedding row", ftn);
    cr_expect_eq(gguf_count(g), 2 + 11 * w->num_layers + !tied, "%s: tensor count", ftn);
    check_tensor(g, "token_embd.weight", m.embed, expected_type(ft, "token_embd", 0, tied), ftn);
    for (int l = 0; l < w->num_layers; l++) {
        const st_tensor *const *src = (const st_tensor *const *)&m.layers[l];
        for (int k = 0; k < 11; k++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, LAYER_GGUF[k]);
            check_tensor(g, name, src[k], expected_type(ft, LAYER_GGUF[k], l, tied), ftn);
        }
    }
    check_tensor(g, "output_norm.weight", m.final_norm, QT_F32, ftn);
    if (!tied) check_tensor(g, "output.weight", m.lm_head, expected_type(ft, "output", 0, 0), ftn);
    gguf_close(g);
    model_close(&m);
}

Test(quantize, every_type_round_trips_within_its_bound, .timeout = 300) {
    const qz_ftype types[] = {QZ_F32, QZ_F16, QZ_BF16, QZ_Q8_0, QZ_Q4_0, QZ_Q6_K, QZ_Q4_K_M};
    for (int tied = 1; tied >= 0; tied--) {
        char dir[1024], path[1200];
        make_model(dir, sizeof dir, tied ? "qz-tied" : "qz-untied", tied);
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
            quantize(dir, types[i], path, sizeof path);
            check_file(dir, path, types[i], tied);
            remove(path);
        }
    }
}

/* The fallbacks for rows that are not whole blocks (the tiny fixture's 64-wide rows). */
Test(quantize, recipe_fallbacks) {
    cr_expect_eq(qz_tensor_type(QZ_Q4_K_M, QZ_KIND_ATTN_Q, 1, 3, 64, 1), QT_Q5_0);
    cr_expect_eq(qz_tensor_type(QZ_Q4_K_M, QZ_KIND_FFN_DOWN, 2, 3, 192, 1), QT_Q8_0, "Q6_K's");
    cr_expect_eq(qz_tensor_type(QZ_Q4_K_M, QZ_KIND_FFN_DOWN, 0, 3, 192, 1), QT_Q5_0, "Q4_K's");
    cr_expect_eq(qz_tensor_type(QZ_Q4_K_M, QZ_KIND_ATTN_OUTPUT, 1, 3, 512, 1), QT_Q4_K);
    cr_expect_eq(qz_tensor_type(QZ_Q4_K_M, QZ_KIND_TOKEN_EMBD, 0, 3, 64, 1), QT_Q8_0);
    cr_expect_eq(qz_tensor_type(QZ_Q4_K_M, QZ_KIND_TOKEN_EMBD, 0, 3, 256, 0), QT_Q4_K);
    cr_expect_eq(qz_tensor_type(QZ_Q6_K, QZ_KIND_FFN_DOWN, 0, 3, 192, 1), QT_Q8_0);
    cr_expect_eq(qz_tensor_type(QZ_Q4_0, QZ_KIND_FFN_UP, 0, 3, 48, 1), QT_F16);
    cr_expect_eq(qz_tensor_type(QZ_Q8_0, QZ_KIND_NORM, 0, 3, 64, 1), QT_F32);
    /* use_more_bits over 28 layers (the 0.6B): 0..2, 5, 8, ..., 23, 24..27 */
    int more = 0;
    for (int l = 0; l < 28; l++)
        more += qz_tensor_type(QZ_Q4_K_M, QZ_KIND_ATTN_V, l, 28, 1024, 1) == QT_Q6_K;
    cr_expect_eq(more, 3 + 7 + 4, "Q6_K attn_v in %d of 28 layers", more);
    qz_ftype ft;
    cr_expect_eq(qz_ftype_parse("Q4_K_M", &ft), 0);
    cr_expect_eq(ft, QZ_Q4_K_M);
    cr_expect_eq(qz_ftype_parse("q3_k", &ft), -1);
}

/* The tokenizer a GGUF carries gives tokenizer.json's ids on every fixture case. */
Test(quantize, gguf_tokenizer_matches_tokenizer_json, .timeout = 300) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    const char *cases = FIXTURES "/tokenizer/qwen3-tokenizer-cases.jsonl";
    SKIP_UNLESS_EXISTS(cases);
    char dir[1024], path[1200];
    tu_scratch_dir(dir, sizeof dir, "qz-tok");
    snprintf(path, sizeof path, "%s/tiny-f16.gguf", dir);
    const qz_opts o = {.model_dir = TINY_MODEL, .out_path = path, .ftype = QZ_F16, .quiet = 1};
    cr_assert_eq(qz_run(&o, err, sizeof err), 0, "%s", err);
    gguf_file *g;
    cr_assert_eq(gguf_open(path, &g, err, sizeof err), 0, "%s", err);
    tok_tokenizer *tg, *tj;
    cr_assert_eq(gguf_load_tokenizer(g, path, &tg, err, sizeof err), TOK_OK, "%s", err);
    cr_assert_eq(tok_load_file(TINY_MODEL "/tokenizer.json", &tj, err, sizeof err), TOK_OK, "%s",
                 err);
    cr_expect_eq(tok_end_id(tg), tok_end_id(tj));
    cr_expect_eq(tok_end_id(tg), 151643);
    cr_expect_eq(tok_vocab_size(tg), tok_vocab_size(tj));
    /* the named prompts travel too (qembed.sentence_transformers), so --prompt-name query works on
     * the file as on the folder */
    tok_tokenizer *tp;
    cr_assert_eq(tok_load(TINY_MODEL, &tp, err, sizeof err), TOK_OK, "%s", err);
    cr_assert_gt(tok_prompt_count(tp), 0, "the fixture names prompts");
    cr_expect_eq(tok_prompt_count(tg), tok_prompt_count(tp));
    for (int i = 0; i < tok_prompt_count(tp); i++) {
        const char *name = tok_prompt_name(tp, i), *got = tok_prompt(tg, name);
        cr_expect(got && !strcmp(got, tok_prompt(tp, name)), "prompt %s: %s", name, got);
    }
    tok_free(tp);
    char *text = tu_read_file(cases, NULL);
    cr_assert(text);
    int n_cases = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *c = cJSON_Parse(line);
        cr_assert(c, "bad case line");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(c, "text");
        cr_assert(cJSON_IsString(t));
        for (int special = 0; special < 2; special++) {
            const tok_encode_opts eo = {special, 0, 0, 0};
            int32_t *a = NULL, *b = NULL;
            int na = 0, nb = 0;
            const size_t len = strlen(t->valuestring);
            cr_assert_eq(tok_encode(tg, t->valuestring, len, &eo, &a, &na, err, sizeof err), TOK_OK,
                         "%s", err);
            cr_assert_eq(tok_encode(tj, t->valuestring, len, &eo, &b, &nb, err, sizeof err), TOK_OK,
                         "%s", err);
            cr_expect(na == nb && !memcmp(a, b, sizeof *a * (size_t)na),
                      "case %d (%.40s), special %d: %d ids from GGUF, %d from tokenizer.json",
                      n_cases, t->valuestring, special, na, nb);
            /* a text holding NUL is cut by cJSON's C strings: Hugging Face's ids are of more */
            const cJSON *want = strstr(line, "\\u0000")
                                    ? NULL
                                    : cJSON_GetObjectItemCaseSensitive(
                                          c, special ? "ids_qwen3_embedding_add_special" : "ids");
            if (want)
                cr_expect_eq(cJSON_GetArraySize(want), na, "case %d: Hugging Face's id count",
                             n_cases);
            int k = 0;
            for (const cJSON *id = want ? want->child : NULL; id && k < na; id = id->next, k++)
                cr_expect_eq(id->valueint, a[k], "case %d id %d", n_cases, k);
            free(a);
            free(b);
        }
        n_cases++;
        cJSON_Delete(c);
    }
    cr_log_info("GGUF tokenizer: %d fixture cases, ids identical to tokenizer.json\n", n_cases);
    cr_expect_gt(n_cases, 100);
    free(text);
    tok_free(tg);
    tok_free(tj);
    gguf_close(g);
}

static qe_engine *open_cpu(const char *path) {
    qe_options o = {.model_dir = path, .backend = QE_BACKEND_CPU, .threads = 2};
    qe_engine *e = NULL;
    cr_assert_eq(qe_open(&o, &e, err, sizeof err), QE_OK, "%s: %s", path, err);
    return e;
}

/* An f32 GGUF holds the folder's weights exactly: the engine's vectors are bitwise the same (ids
 * and, through the GGUF tokenizer, text); q8_0 and q4_k_m match a double forward on their own
 * dequantized weights and stay close to the full-precision model. */
Test(quantize, gguf_embeds_like_the_folder, .timeout = 300) {
    char dir[1024], path[1200];
    make_model(dir, sizeof dir, "qz-embed", 1);
    qe_engine *ref = open_cpu(dir);
    const int H = qe_dim(ref);
    const int lens[3] = {1, 9, 40};
    int32_t ids[40];
    for (int i = 0; i < 40; i++)
        ids[i] = (i * 7919 + 13) % 4096;
    float *want = malloc(sizeof(float) * 3 * (size_t)H),
          *got = malloc(sizeof(float) * 3 * (size_t)H);
    const int32_t *seqs[3] = {ids, ids, ids};
    cr_assert_eq(qe_embed_ids(ref, seqs, lens, 3, 0, want), QE_OK);
    const qz_ftype types[] = {QZ_F32, QZ_Q8_0, QZ_Q4_K_M};
    double *naive = malloc(sizeof(double) * (size_t)H);
    for (size_t ti = 0; ti < 3; ti++) {
        quantize(dir, types[ti], path, sizeof path);
        qe_engine *e = open_cpu(path);
        cr_assert_eq(qe_dim(e), H);
        cr_assert_eq(qe_embed_ids(e, seqs, lens, 3, 0, got), QE_OK, "%s", qe_last_error(e));
        if (types[ti] == QZ_F32) {
            cr_expect(!memcmp(want, got, sizeof(float) * 3 * (size_t)H),
                      "f32 GGUF: vectors differ from the folder's");
        } else {
            qe_model m;
            cr_assert_eq(model_open(path, &m, err, sizeof err), 0, "%s", err);
            for (int s = 0; s < 3; s++) {
                naive_embed(&m, ids, lens[s], naive);
                const double own = tu_cosine(got + (size_t)s * H, naive, H);
                const double full = tu_cosine_ff(got + (size_t)s * H, want + (size_t)s * H, H);
                cr_log_info("%s GGUF, %d tokens: cosine %.7f to the double forward on its "
                            "weights, %.7f to the full-precision model\n",
                            qz_ftype_name(types[ti]), lens[s], own, full);
                cr_expect_geq(own, 0.99999, "%s, %d tokens: cosine %.7f", qz_ftype_name(types[ti]),
                              lens[s], own);
                cr_expect_geq(full, types[ti] == QZ_Q8_0 ? 0.999 : 0.98,
                              "%s, %d tokens: cosine %.7f to the full-precision model",
                              qz_ftype_name(types[ti]), lens[s], full);
            }
            model_close(&m);
        }
        qe_close(e);
        remove(path);
    }
    qe_close(ref);
    free(want);
    free(got);
    free(naive);
}

/* src with every tensor dequantized to F32 by the C reference, the scalar metadata copied (no
 * tokenizer arrays: the test embeds ids): the matrices a quantized file means, held as fp32. */
static void write_dequantized_twin(const char *src, const char *dst) {
    gguf_file *g = NULL;
    cr_assert_eq(gguf_open(src, &g, err, sizeof err), 0, "%s", err);
    gguf_writer *w = gguf_writer_new();
    for (int i = 0; i < gguf_kv_count(g); i++) {
        const char *key = gguf_kv_key(g, i);
        uint32_t u;
        int32_t v;
        float f;
        int b;
        gguf_span sp;
        char str[256];
        switch (gguf_kv_type(g, i, NULL, NULL)) {
        case GGUF_U32:
            cr_assert_eq(gguf_get_u32(g, key, &u, err, sizeof err), 0);
            gguf_w_u32(w, key, u);
            break;
        case GGUF_I32:
            cr_assert_eq(gguf_get_i32(g, key, &v, err, sizeof err), 0);
            gguf_w_i32(w, key, v);
            break;
        case GGUF_F32:
            cr_assert_eq(gguf_get_f32(g, key, &f, err, sizeof err), 0);
            gguf_w_f32(w, key, f);
            break;
        case GGUF_BOOL:
            cr_assert_eq(gguf_get_bool(g, key, &b, err, sizeof err), 0);
            gguf_w_bool(w, key, b);
            break;
        case GGUF_STRING:
            cr_assert_eq(gguf_get_string(g, key, &sp, err, sizeof err), 0);
            snprintf(str, sizeof str, "%.*s", (int)sp.len, sp.ptr);
            gguf_w_str(w, key, str);
            break;
        default: /* arrays: the tokenizer */
            break;
        }
    }
    for (int i = 0; i < gguf_count(g); i++) {
        const gguf_tensor *t = gguf_at(g, i);
        cr_assert_geq(gguf_w_tensor(w, t->name, QT_F32, t->ndim, t->dims), 0);
    }
    FILE *out = fopen(dst, "wb");
    cr_assert(out);
    cr_assert_eq(gguf_w_begin(w, out, err, sizeof err), 0, "%s", err);
    for (int i = 0; i < gguf_count(g); i++) {
        const gguf_tensor *t = gguf_at(g, i);
        float *f32 = malloc(sizeof(float) * (size_t)t->n_elements);
        cr_assert_eq(ref_dequantize(t->type, t->data, f32, t->n_elements), 0);
        cr_assert_eq(gguf_w_data(w, out, i, f32, err, sizeof err), 0, "%s", err);
        free(f32);
    }
    fclose(out);
    gguf_writer_free(w);
    gguf_close(g);
}

/* The CPU backend keeps a quantized file's matrices in their blocks and dequantizes chunks of
 * rows inside each product, with the table's rows dequantized as they are gathered: its vectors
 * are bitwise those of the same weights dequantized once and held as fp32 (the twin), on any
 * thread count, whole or in 16-token chunks; with two tensor-parallel ranks (fp32 slices) they
 * match to cosine 0.99999. */
Test(quantize, quantized_file_embeds_bitwise_like_its_dequantized_twin, .timeout = 300) {
    char dir[1024], path[1200], twin[1300];
    make_model_kv(dir, sizeof dir, "qz-twin", 0, 2); /* 2 kv heads: two ranks can split it */
    enum { N_SEQ = 3, MAX_LEN = 70 };
    const int lens[N_SEQ] = {1, 23, MAX_LEN};
    int32_t ids[MAX_LEN];
    for (int i = 0; i < MAX_LEN; i++)
        ids[i] = (i * 104729 + 7) % 4096;
    const int32_t *seqs[N_SEQ] = {ids, ids + 3, ids};
    const qz_ftype types[] = {QZ_Q8_0, QZ_Q4_K_M, QZ_Q6_K, QZ_Q4_0};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        quantize(dir, types[ti], path, sizeof path);
        snprintf(twin, sizeof twin, "%s.f32-twin.gguf", path);
        write_dequantized_twin(path, twin);
        qe_options ot = {.model_dir = twin, .backend = QE_BACKEND_CPU, .threads = 2};
        qe_engine *ref = NULL;
        cr_assert_eq(qe_open(&ot, &ref, err, sizeof err), QE_OK, "%s", err);
        const int H = qe_dim(ref);
        float *want = malloc(sizeof(float) * N_SEQ * (size_t)H),
              *got = malloc(sizeof(float) * N_SEQ * (size_t)H);
        cr_assert_eq(qe_embed_ids(ref, seqs, lens, N_SEQ, 0, want), QE_OK);
        const struct { int threads, batch; } runs[] = {{1, 0}, {3, 0}, {2, 16}};
        for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
            qe_options oq = {.model_dir = path,
                             .backend = QE_BACKEND_CPU,
                             .threads = runs[r].threads,
                             .max_batch_tokens = runs[r].batch};
            qe_engine *e = NULL;
            cr_assert_eq(qe_open(&oq, &e, err, sizeof err), QE_OK, "%s", err);
            cr_assert_eq(qe_embed_ids(e, seqs, lens, N_SEQ, 0, got), QE_OK, "%s", qe_last_error(e));
            cr_expect(!memcmp(want, got, sizeof(float) * N_SEQ * (size_t)H),
                      "%s, %d threads, batch %d: vectors differ from the dequantized twin's",
                      qz_ftype_name(types[ti]), runs[r].threads, runs[r].batch);
            qe_close(e);
        }
        /* tensor parallel ranks slice fp32 copies of the same dequantized weights */
        qe_options otp = {
            .model_dir = path, .backend = QE_BACKEND_CPU, .threads = 2, .tensor_parallel = 2};
        qe_engine *tp = NULL;
        cr_assert_eq(qe_open(&otp, &tp, err, sizeof err), QE_OK, "%s", err);
        cr_assert_eq(qe_embed_ids(tp, seqs, lens, N_SEQ, 0, got), QE_OK, "%s", qe_last_error(tp));
        for (int i = 0; i < N_SEQ; i++) {
            const double c = tu_cosine_ff(got + (size_t)i * H, want + (size_t)i * H, H);
            cr_expect_geq(c, 0.99999, "%s, tensor parallel 2, sequence %d: cosine %.7f",
                          qz_ftype_name(types[ti]), i, c);
        }
        qe_close(tp);
        qe_close(ref);
        free(want), free(got);
        remove(twin);
        remove(path);
    }
}

/* Text through the GGUF tokenizer: the tiny fixture as an f32 GGUF embeds like its folder. */
Test(quantize, gguf_text_embeds_like_the_folder, .timeout = 300) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    char dir[1024], path[1200];
    tu_scratch_dir(dir, sizeof dir, "qz-text");
    snprintf(path, sizeof path, "%s/tiny-f32.gguf", dir);
    const qz_opts o = {.model_dir = TINY_MODEL, .out_path = path, .ftype = QZ_F32, .quiet = 1};
    cr_assert_eq(qz_run(&o, err, sizeof err), 0, "%s", err);
    qe_engine *a = open_cpu(TINY_MODEL), *b = open_cpu(path);
    const char *texts[] = {"hello world", "Instruct: find\nQuery:what is GGUF?", "<|im_start|>x"};
    const int H = qe_dim(a);
    float *va = malloc(sizeof(float) * 3 * (size_t)H), *vb = malloc(sizeof(float) * 3 * (size_t)H);
    cr_assert_eq(qe_embed_texts(a, texts, 3, 0, va), QE_OK);
    cr_assert_eq(qe_embed_texts(b, texts, 3, 0, vb), QE_OK, "%s", qe_last_error(b));
    cr_expect(!memcmp(va, vb, sizeof(float) * 3 * (size_t)H), "text vectors differ");
    free(va);
    free(vb);
    qe_close(a);
    qe_close(b);
}

/* A hand-made GGUF of a small geometry, every tensor F32 (zeros) but for what a variant breaks:
 * 1 gives blk.1.ffn_up a type the engine does not run (Q4_1), 2 gives blk.0.attn_k the wrong
 * shape, 3 leaves out blk.2.ffn_norm, 4 adds a bias. */
static void build_gguf(const char *path, int variant) {
    const int H = 64, F = 192, L = 3, NH = 4, NK = 2, HD = 32, V = 512;
    gguf_writer *w = gguf_writer_new();
    cr_assert(w);
    gguf_w_str(w, "general.architecture", "qwen3");
    gguf_w_u32(w, "qwen3.block_count", L);
    gguf_w_u32(w, "qwen3.context_length", 1024);
    gguf_w_u32(w, "qwen3.embedding_length", H);
    gguf_w_u32(w, "qwen3.feed_forward_length", F);
    gguf_w_u32(w, "qwen3.attention.head_count", NH);
    gguf_w_u32(w, "qwen3.attention.head_count_kv", NK);
    gguf_w_u32(w, "qwen3.attention.key_length", HD);
    gguf_w_f32(w, "qwen3.rope.freq_base", 1e6f);
    gguf_w_f32(w, "qwen3.attention.layer_norm_rms_epsilon", 1e-6f);
    if (variant >= 5) gguf_w_u32(w, "qwen3.pooling_type", GGUF_POOL_RANK);
    const int64_t q = NH * HD, kv = NK * HD;
    const int64_t in_out[11][2] = {{H, 0}, {H, q}, {H, kv}, {H, kv}, {HD, 0}, {HD, 0},
                                   {q, H}, {H, 0}, {H, F},  {H, F},  {F, H}};
    static const char *const names[11] = {"attn_norm",   "attn_q",      "attn_k",      "attn_v",
                                          "attn_q_norm", "attn_k_norm", "attn_output", "ffn_norm",
                                          "ffn_gate",    "ffn_up",      "ffn_down"};
    int64_t d[2] = {H, V};
    cr_assert_geq(gguf_w_tensor(w, "token_embd.weight", QT_F32, 2, d), 0);
    for (int l = 0; l < L; l++)
        for (int k = 0; k < 11; k++) {
            char n[64];
            snprintf(n, sizeof n, "blk.%d.%s.weight", l, names[k]);
            if (variant == 3 && l == 2 && k == 7) continue;
            d[0] = in_out[k][0];
            d[1] = in_out[k][1];
            if (variant == 2 && l == 0 && k == 2) d[1] = kv + 32;
            const uint32_t type = variant == 1 && l == 1 && k == 9 ? QT_Q4_1 : QT_F32;
            cr_assert_geq(gguf_w_tensor(w, n, type, d[1] ? 2 : 1, d), 0, "%s", n);
        }
    d[0] = H;
    gguf_w_tensor(w, "output_norm.weight", QT_F32, 1, d);
    if (variant == 4) gguf_w_tensor(w, "blk.0.attn_q.bias", QT_F32, 1, (int64_t[]){q});
    if (variant == 6) gguf_w_tensor(w, "cls.output.weight", QT_F32, 2, (int64_t[]){H, 1});
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    cr_assert_eq(gguf_w_begin(w, f, err, sizeof err), 0, "%s", err);
    for (int i = 0;; i++) {
        const uint64_t n = gguf_w_tensor_bytes(w, i);
        if (!n) break;
        void *zeros = calloc(1, (size_t)n);
        cr_assert_eq(gguf_w_data(w, f, i, zeros, err, sizeof err), 0, "%s", err);
        free(zeros);
    }
    fclose(f);
    gguf_writer_free(w);
}

/* What the loader refuses, with the tensor or key named. */
Test(quantize, gguf_refusals_name_the_tensor) {
    char dir[1024], path[1200];
    tu_scratch_dir(dir, sizeof dir, "qz-refuse");
    snprintf(path, sizeof path, "%s/m.gguf", dir);
    qe_model m;
    build_gguf(path, 0);
    cr_assert_eq(model_open(path, &m, err, sizeof err), 0, "the unbroken file: %s", err);
    cr_expect_eq(m.cfg.head_dim, 32);
    cr_expect_eq(m.layers[2].w_down->shape[0], 64, "[out, in] = GGUF dims reversed");
    cr_expect_eq(m.layers[2].w_down->shape[1], 192);
    model_close(&m);
    const struct {
        int variant;
        const char *want;
    } v[] = {{1, "\"blk.1.ffn_up.weight\": type Q4_1 is not supported"},
             {2, "\"blk.0.attn_k.weight\": expected shape [64, 64] from the GGUF metadata"},
             {3, "missing tensor \"blk.2.ffn_norm.weight\""},
             {4, "\"blk.0.attn_q.bias\" is not part of a Qwen3 model"},
             {6, "\"cls.output.weight\": expected [64, labels >= 2]"}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        build_gguf(path, v[i].variant);
        cr_expect_neq(model_open(path, &m, err, sizeof err), 0, "variant %d opened", v[i].variant);
        cr_expect(strstr(err, v[i].want), "variant %d: \"%s\" lacks \"%s\"", v[i].variant, err,
                  v[i].want);
    }
    /* a Qwen3-Reranker folder is written in llama.cpp's reranker form (test_rerank scores it) */
    random_model_opts ro = {0};
    random_model_preset("tiny", &ro.cfg);
    ro.cfg.num_layers = 1;
    ro.cfg.vocab_size = 2048;
    snprintf(path, sizeof path, "%s/rr", dir);
    ro.out_dir = path, ro.seed = 2, ro.dtype = ST_BF16, ro.reranker = 1, ro.quiet = 1;
    cr_assert_eq(random_model_write(&ro, err, sizeof err), 0, "%s", err);
    char out[1300];
    snprintf(out, sizeof out, "%s/rr.gguf", dir);
    const qz_opts q = {.model_dir = path, .out_path = out, .ftype = QZ_Q8_0, .quiet = 1};
    cr_assert_eq(qz_run(&q, err, sizeof err), 0, "%s", err);
    gguf_file *g = NULL;
    cr_assert_eq(gguf_open(out, &g, err, sizeof err), 0, "%s", err);
    cr_expect_eq(gguf_pooling_type(g), GGUF_POOL_RANK);
    const gguf_tensor *cls = gguf_find(g, "cls.output.weight");
    cr_expect(cls && cls->type == QT_F32 && cls->dims[0] == ro.cfg.hidden_size && cls->dims[1] == 2,
              "cls.output.weight");
    cr_expect(!gguf_find(g, "output.weight"), "a reranker's output layer is its classifier");
    cr_expect(gguf_has(g, "tokenizer.chat_template.rerank"), "the template, for llama.cpp");
    gguf_span *labels = NULL;
    uint64_t n_labels = 0;
    cr_expect_eq(gguf_get_string_array(g, "qwen3.classifier.output_labels", &labels, &n_labels, err,
                                       sizeof err),
                 0, "%s", err);
    cr_expect(n_labels == 2 && labels[0].len == 3 && !memcmp(labels[0].ptr, "yes", 3),
              "labels yes, no");
    free(labels);
    gguf_close(g);
    /* a rank file without its classifier cannot score */
    build_gguf(out, 5);
    qe_options ro5 = {.model_dir = out, .backend = QE_BACKEND_CPU};
    qe_engine *e5 = NULL;
    cr_expect_eq(qe_open(&ro5, &e5, err, sizeof err), QE_ERR_FORMAT);
    cr_expect(strstr(err, "needs its classifier, cls.output.weight"), "%s", err);
    qe_options opt = {.model_dir = "/nonexistent/x.gguf", .backend = QE_BACKEND_CPU};
    qe_engine *e = NULL;
    cr_expect_eq(qe_open(&opt, &e, err, sizeof err), QE_ERR_IO);
    cr_expect(strstr(err, "x.gguf"), "%s", err);
}

/* --report on the tiny fixture: one line per type, f32 keeps every vector and every neighbour
 * (the identity of quantization), the lossy types keep less, in the order of their bits. */
Test(quantize, report_measures_what_each_type_keeps, .timeout = 300) {
    SKIP_UNLESS_EXISTS(TINY_MODEL "/tokenizer.json");
    char dir[1100], corpus[1200], out[1200];
    tu_scratch_dir(dir, sizeof dir, "qz-report");
    snprintf(corpus, sizeof corpus, "%s/corpus.jsonl", dir);
    snprintf(out, sizeof out, "%s/report.txt", dir);
    FILE *f = fopen(corpus, "w");
    cr_assert(f);
    static const char *words[] = {"the fox",          "search engines", "weather",   "source code",
                                  "a knowledge base", "vectors",        "languages", "questions"};
    for (int i = 0; i < 24; i++)
        fprintf(f, "{\"text\": \"%s and %s, line %d\"}\n", words[i % 8], words[(i * 3 + 1) % 8], i);
    fclose(f);
    qz_report_opts r = {.model_dir = TINY_MODEL,
                        .corpus = corpus,
                        .scratch = dir,
                        .limit = 24,
                        .max_len = 32,
                        .threads = 2};
    r.types[0] = QZ_F32, r.types[1] = QZ_Q8_0, r.types[2] = QZ_Q4_0, r.n_types = 3;
    FILE *o = fopen(out, "w");
    char err[512];
    cr_assert_eq(qz_report(&r, o, err, sizeof err), 0, "%s", err);
    fclose(o);
    char *text = tu_read_file(out, NULL);
    double cos_mean[3], cos_min[3], recall[3];
    const char *p = text;
    for (int k = 0; k < 3; k++) {
        p = strstr(p, "report type=");
        cr_assert(p, "line %d missing: %s", k, text);
        char type[16];
        double bits;
        int texts;
        cr_assert_eq(sscanf(p,
                            "report type=%15s file_bits_per_param=%lf cos_mean=%lf cos_min=%lf "
                            "recall_at_10=%lf texts=%d",
                            type, &bits, &cos_mean[k], &cos_min[k], &recall[k], &texts),
                     6, "%s", p);
        cr_expect_eq(texts, 24);
        p++;
    }
    cr_expect_geq(cos_min[0], 0.999999, "f32 is the folder's own weights: %s", text);
    cr_expect_eq(recall[0], 1.0, "%s", text);
    cr_expect(cos_mean[1] > cos_mean[2] && cos_mean[1] > 0.999, "%s", text);
    cr_expect(recall[2] >= 0 && recall[2] <= 1 && cos_min[2] <= cos_mean[2], "%s", text);
    free(text);
    cr_expect_eq(qz_report(&(qz_report_opts){.model_dir = TINY_MODEL,
                                             .corpus = "/nonexistent",
                                             .scratch = dir,
                                             .limit = 24,
                                             .max_len = 32},
                           stdout, err, sizeof err),
                 -1);
    cr_expect(strstr(err, "cannot open the corpus"), "%s", err);
}
