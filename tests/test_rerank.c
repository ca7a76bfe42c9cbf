/* test_rerank.c — Qwen3-Reranker on the CPU backend: scores against an independent
 * double-precision forward (naive_forward.h) on random tied and untied reranker models, the
 * prompt against the official construction on the real Qwen3 tokenizer, truncation, task
 * detection, the errors of folders that cannot rerank, and rerankers as GGUF files. */
#include <math.h>

#include "naive_forward.h"
#include "qembed.h"
#include "quantize.h"
#include "random_model.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

#define TINY TINY_MODEL

static char err[512]; /* the last failure's message, for the assertions */

/* The template of MODEL.md, written out again here (the test does not share the engine's). */
static const char PREFIX[] =
    "<|im_start|>system\nJudge whether the Document meets the requirements "
    "based on the Query and the Instruct provided. Note that the answer "
    "can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n";
static const char SUFFIX[] = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n";

/* A random reranker folder (the tiny preset's vocabulary, so the template's special ids exist). */
static void make_reranker(char *dir, size_t cap, const char *tag, int tied, int heads, int kv,
                          uint64_t seed) {
    tu_scratch_dir(dir, cap, tag);
    strncat(dir, "/model", cap - strlen(dir) - 1);
    random_model_opts o;
    memset(&o, 0, sizeof o);
    cr_assert_eq(random_model_preset("tiny", &o.cfg), 0);
    o.cfg.num_heads = heads;
    o.cfg.num_kv_heads = kv;
    o.cfg.num_layers = 2;
    o.cfg.tie_word_embeddings = tied;
    o.out_dir = dir;
    o.seed = seed;
    o.dtype = ST_BF16;
    o.reranker = 1;
    o.quiet = 1;
    cr_assert_eq(random_model_write(&o, err, sizeof err), 0, "%s: %s", tag, err);
}

static qe_engine *open_engine(const char *dir, qe_task task, int batch_tokens) {
    qe_options opt = {.model_dir = dir, .threads = 2, .max_batch_tokens = batch_tokens};
    opt.task = task;
    qe_engine *e = NULL;
    cr_assert_eq(qe_open(&opt, &e, err, sizeof err), QE_OK, "%s: %s", dir, err);
    return e;
}

static int32_t *encode(const tok_tokenizer *t, const char *s, int *n) {
    const tok_encode_opts o = {0, 0, 0, 0};
    int32_t *ids = NULL;
    char err[256];
    cr_assert_eq(tok_encode(t, s, strlen(s), &o, &ids, n, err, sizeof err), TOK_OK, "%s", err);
    return ids;
}

/* The official construction: prefix, body and suffix tokenized on their own, ids concatenated. */
static int32_t *official(const tok_tokenizer *t, const char *instr, const char *q, const char *d,
                         int *n) {
    size_t cap = strlen(instr) + strlen(q) + strlen(d) + 64;
    char *body = malloc(cap);
    snprintf(body, cap, "<Instruct>: %s\n<Query>: %s\n<Document>: %s", instr, q, d);
    int np, nb, ns;
    int32_t *p = encode(t, PREFIX, &np), *b = encode(t, body, &nb), *s = encode(t, SUFFIX, &ns);
    int32_t *all = malloc(sizeof(int32_t) * (size_t)(np + nb + ns));
    memcpy(all, p, sizeof(int32_t) * (size_t)np);
    memcpy(all + np, b, sizeof(int32_t) * (size_t)nb);
    memcpy(all + np + nb, s, sizeof(int32_t) * (size_t)ns);
    *n = np + nb + ns;
    free(body), free(p), free(b), free(s);
    return all;
}

/* The logit of one prompt in double: (W[yes] - W[no]) . h, W chosen as MODEL.md says. */
static double naive_logit(const qe_model *m, const int32_t *ids, int n, int yes, int no) {
    const int H = m->cfg.hidden_size;
    double *h = malloc(sizeof(double) * (size_t)H);
    naive_embed(m, ids, n, h);
    const st_tensor *w =
        m->cfg.tie_word_embeddings ? m->embed : st_find(m->archive, "lm_head.weight");
    cr_assert(w, "no output layer in the folder");
    double *W = tensor_d(w), logit = 0;
    for (int i = 0; i < H; i++)
        logit += (W[(size_t)yes * H + i] - W[(size_t)no * H + i]) * h[i];
    free(W), free(h);
    return logit;
}

static int single(const tok_tokenizer *t, const char *word) {
    int n;
    int32_t *ids = encode(t, word, &n);
    cr_assert_eq(n, 1, "\"%s\" is %d tokens", word, n);
    const int id = ids[0];
    free(ids);
    return id;
}

/* Engine scores of prompts of several lengths, packed in one call (and in chunks at a small step
 * budget), against the double-precision forward. */
static void against_oracle(const char *tag, int tied, int heads, int kv) {
    char dir[1024];
    make_reranker(dir, sizeof dir, tag, tied, heads, kv, 7 + (uint64_t)tied);
    qe_model m;
    cr_assert_eq(model_open(dir, &m, err, sizeof err), 0, "%s", err);
    cr_assert_eq(st_find(m.archive, "lm_head.weight") != NULL, !tied, "%s: lm_head", tag);
    const char *docs[] = {"the fox jumps over the lazy dog", "",
                          "int main(void) { return 0; } for (int i = 0; i < n; i++) sum += x[i];",
                          "When the question is about the weather, the answer is in the forecast. "
                          "Documents can be long: a knowledge base holds manuals, articles, source "
                          "code and messages in many languages."};
    enum { N = 4 };
    for (int budget = 0; budget <= 64; budget += 64) {
        qe_engine *e = open_engine(dir, QE_TASK_AUTO, budget);
        cr_assert_eq(qe_model_task(e), QE_TASK_RERANK, "%s: %s", tag, qe_task_reason(e));
        const tok_tokenizer *t = qe_tokenizer(e);
        const int yes = single(t, "yes"), no = single(t, "no");
        int32_t *ids[N];
        int lens[N];
        float got[N];
        for (int i = 0; i < N; i++)
            cr_assert_eq(qe_rerank_prompt(e, "what does the fox do", 20, docs[i], strlen(docs[i]),
                                          NULL, &ids[i], &lens[i], NULL, err, sizeof err),
                         QE_OK, "%s", err);
        cr_assert_eq(qe_rerank_ids(e, (const int32_t *const *)ids, lens, N, got), QE_OK, "%s",
                     qe_last_error(e));
        /* the logits too: a random model's scores may sit where the sigmoid is flat */
        const int H = qe_dim(e);
        float *hidden = malloc(sizeof(float) * (size_t)N * H);
        cr_assert_eq(qe_embed_ids_ex(e, (const int32_t *const *)ids, lens, N, H, 0, hidden), QE_OK);
        for (int i = 0; i < N; i++) {
            const double logit = naive_logit(&m, ids[i], lens[i], yes, no);
            const double want = 1 / (1 + exp(-logit));
            const double lg = qe_rerank_logit(e, hidden + (size_t)i * H);
            cr_expect_leq(fabs(got[i] - want), 1e-5,
                          "%s, budget %d, doc %d (%d tokens): %.8f vs %.8f", tag, budget, i,
                          lens[i], got[i], want);
            cr_expect_leq(fabs(lg - logit), 1e-5 * fmax(1, fabs(logit)),
                          "%s, budget %d, doc %d: logit %.7f vs %.7f", tag, budget, i, lg, logit);
            cr_expect_eq(got[i], qe_rerank_sigmoid((float)lg));
            cr_log_info("%s, budget %d, %d tokens: logit %.6f (double %.6f)", tag, budget, lens[i],
                        lg, logit);
            free(ids[i]);
        }
        free(hidden);
        qe_close(e);
    }
    model_close(&m);
}

Test(oracle, tied_gqa, .timeout = 300) {
    against_oracle("rerank-tied", 1, 4, 2);
}

Test(oracle, untied_gqa4, .timeout = 300) {
    against_oracle("rerank-untied", 0, 8, 2);
}

/* The score uses the right rows: with the real tokenizer (the tiny fixture forced to rerank),
 * "yes" is 9693 and "no" 2152, and the score is sigmoid of their embedding rows' difference
 * against the pooled hidden state the embedding path returns. */
Test(prompt, real_tokenizer_rows_and_score, .timeout = 120) {
    SKIP_UNLESS_EXISTS(TINY "/tokenizer.json");
    qe_engine *e = open_engine(TINY, QE_TASK_RERANK, 0);
    const tok_tokenizer *t = qe_tokenizer(e);
    cr_assert_eq(single(t, "yes"), 9693);
    cr_assert_eq(single(t, "no"), 2152);
    int32_t *ids;
    int n;
    cr_assert_eq(qe_rerank_prompt(e, "capital of France", 17, "Paris is the capital.", 21, NULL,
                                  &ids, &n, NULL, err, sizeof err),
                 QE_OK);
    const int H = qe_dim(e);
    float *h = malloc(sizeof(float) * (size_t)H), score;
    cr_assert_eq(qe_embed_ids_ex(e, (const int32_t *const *)&ids, &n, 1, H, 0, h), QE_OK);
    cr_assert_eq(qe_rerank_ids(e, (const int32_t *const *)&ids, &n, 1, &score), QE_OK);
    qe_model m;
    cr_assert_eq(model_open(TINY, &m, err, sizeof err), 0, "%s", err);
    double *E = tensor_d(m.embed), logit = 0;
    for (int i = 0; i < H; i++)
        logit += (E[(size_t)9693 * H + i] - E[(size_t)2152 * H + i]) * (double)h[i];
    cr_expect_leq(fabs(score - 1 / (1 + exp(-logit))), 1e-6, "%.8f vs %.8f", score,
                  1 / (1 + exp(-logit)));
    cr_expect_leq(fabs(qe_rerank_logit(e, h) - logit), 1e-5);
    free(E), free(h), free(ids);
    model_close(&m);
    qe_close(e);
}

/* The prompt's ids are the official construction's, on the real Qwen3 tokenizer: multilingual
 * queries and documents, the default, an empty and a custom instruction. */
/* The template as text (what a reranker GGUF stores for llama.cpp): the prefix, the body with
 * its placeholders and the instruction written in, the suffix. */
Test(prompt, template_text_with_placeholders) {
    char buf[1024], want[1024];
    const int n = qe_rerank_template(NULL, buf, sizeof buf);
    snprintf(want, sizeof want, "%s<Instruct>: %s\n<Query>: {query}\n<Document>: {document}%s",
             PREFIX, QE_RERANK_DEFAULT_INSTRUCTION, SUFFIX);
    cr_expect_eq(n, (int)strlen(want));
    cr_expect_str_eq(buf, want);
    cr_expect_eq(qe_rerank_template("find code", buf, 64), -1, "a buffer too small");
    cr_expect_geq(qe_rerank_template("find code", buf, sizeof buf), 0);
    cr_expect(strstr(buf, "<Instruct>: find code\n<Query>: {query}"), "%s", buf);
}

Test(prompt, official_construction_on_the_real_tokenizer, .timeout = 120) {
    SKIP_UNLESS_EXISTS(TINY "/tokenizer.json");
    qe_engine *e = open_engine(TINY, QE_TASK_RERANK, 0);
    const tok_tokenizer *t = qe_tokenizer(e);
    static const struct {
        const char *instr, *query, *doc;
    } cases[] = {
        {NULL, "What is the capital of China?", "The capital of China is Beijing."},
        {"", "Explain gravity", "Gravity is a force that attracts two bodies towards each other."},
        {"Find the code that answers the question", "如何反转一个链表？",
         "def reverse(head):\n    prev = None\n    while head:\n        head.next, prev, head = "
         "prev, head, head.next\n    return prev"},
        {NULL, "ما هي عاصمة مصر؟", "القاهرة هي عاصمة مصر 🇪🇬 и крупнейший город."},
        {NULL, "", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *instr = cases[i].instr ? cases[i].instr : QE_RERANK_DEFAULT_INSTRUCTION;
        int nw, ng, cut = 1;
        int32_t *want = official(t, instr, cases[i].query, cases[i].doc, &nw), *got;
        const qe_rerank_opts o = {.instruction = cases[i].instr};
        cr_assert_eq(qe_rerank_prompt(e, cases[i].query, strlen(cases[i].query), cases[i].doc,
                                      strlen(cases[i].doc), &o, &got, &ng, &cut, err, sizeof err),
                     QE_OK, "case %zu: %s", i, err);
        cr_expect_eq(cut, 0);
        cr_assert_eq(ng, nw, "case %zu: %d ids, the official construction %d", i, ng, nw);
        cr_expect_arr_eq(got, want, sizeof(int32_t) * (size_t)nw, "case %zu", i);
        free(want), free(got);
    }
    /* The template's fixed parts, as Qwen3's chat template ids are known. */
    int n;
    int32_t *s = encode(t, SUFFIX, &n);
    const int32_t suffix[] = {151645, 198, 151644, 77091, 198, 151667, 271, 151668, 271};
    cr_assert_eq(n, 9);
    cr_expect_arr_eq(s, suffix, sizeof suffix);
    free(s);
    int32_t *p = encode(t, PREFIX, &n);
    cr_expect_eq(p[0], 151644); /* <|im_start|> */
    cr_expect_eq(p[1], 8948);   /* system */
    cr_expect_eq(p[n - 1], 198);
    free(p);
    qe_close(e);
}

/* A document past the limit: only the body is cut, from its end (or, asked, the document from its
 * start); the template stays whole, and the whole is exactly the limit. */
Test(prompt, long_documents_are_cut_to_the_limit, .timeout = 120) {
    SKIP_UNLESS_EXISTS(TINY "/tokenizer.json");
    qe_engine *e = open_engine(TINY, QE_TASK_RERANK, 0);
    const tok_tokenizer *t = qe_tokenizer(e);
    size_t len = 0;
    char *doc = malloc(200000);
    while (len + 40 < 200000)
        len += (size_t)snprintf(doc + len, 200000 - len, "word%zu is a token or two. ", len);
    int nw;
    int32_t *full = official(t, QE_RERANK_DEFAULT_INSTRUCTION, "long", doc, &nw);
    int np, ns;
    int32_t *pre = encode(t, PREFIX, &np), *suf = encode(t, SUFFIX, &ns);
    cr_assert_gt(nw, QE_RERANK_DEFAULT_TOKENS);
    const int limits[] = {0, 300};
    for (int k = 0; k < 2; k++) {
        const int max = limits[k] ? limits[k] : QE_RERANK_DEFAULT_TOKENS;
        for (int left = 0; left <= 1; left++) {
            const qe_rerank_opts o = {.max_tokens = limits[k], .truncate_left = left};
            int32_t *got;
            int ng, cut = 0;
            cr_assert_eq(
                qe_rerank_prompt(e, "long", 4, doc, len, &o, &got, &ng, &cut, err, sizeof err),
                QE_OK, "%s", err);
            cr_expect_eq(ng, max, "limit %d, left %d: %d ids", max, left, ng);
            cr_expect_eq(cut, 1);
            cr_expect_arr_eq(got, pre, sizeof(int32_t) * (size_t)np, "the prefix is whole");
            cr_expect_arr_eq(got + ng - ns, suf, sizeof(int32_t) * (size_t)ns, "the suffix too");
            if (!left) /* the body's first ids, as the official code keeps them */
                cr_expect_arr_eq(got + np, full + np, sizeof(int32_t) * (size_t)(ng - np - ns));
            else {                   /* the body's head, then the document's last ids */
                const int head = 20; /* "<Instruct>: ...<Document>:" is longer than this */
                cr_expect_arr_eq(got + np, full + np, sizeof(int32_t) * head);
                const int tail = 50;
                cr_expect_arr_eq(got + ng - ns - tail, full + nw - ns - tail,
                                 sizeof(int32_t) * tail, "left cut keeps the document's end");
            }
            free(got);
        }
    }
    const qe_rerank_opts strict = {.no_truncate = 1};
    int32_t *got = NULL;
    int ng;
    cr_expect_eq(
        qe_rerank_prompt(e, "long", 4, doc, len, &strict, &got, &ng, NULL, err, sizeof err),
        QE_ERR_TOO_LONG);
    cr_expect(strstr(err, "truncation is off"), "%s", err);
    /* an instruction that leaves no room for the document: a right cut takes the body's end as
     * the official code does (the query and the instruction's end go too); a left cut, which
     * keeps all before the document, is refused */
    const qe_rerank_opts tiny_limit = {.max_tokens = 60, .instruction = doc + 100000};
    cr_expect_eq(qe_rerank_prompt(e, "q", 1, "d", 1, &tiny_limit, &got, &ng, NULL, err, sizeof err),
                 QE_OK);
    cr_expect_eq(ng, 60);
    free(got);
    const qe_rerank_opts left_limit = {.max_tokens = 60,
                                       .truncate_left = 1,
                                       .instruction = "a long instruction that fills the limit "
                                                      "with words and more words"};
    cr_expect_eq(
        qe_rerank_prompt(e, "q", 1, doc, len, &left_limit, &got, &ng, NULL, err, sizeof err),
        QE_ERR_TOO_LONG);
    cr_expect(strstr(err, "before the document"), "%s", err);
    free(doc), free(full), free(pre), free(suf);
    qe_close(e);
}

/* Texts in, scores out: qe_rerank equals scoring its prompts as ids, bit for bit; the raw mode is
 * the query's ids then the document's. */
Test(api, texts_equal_prompt_ids, .timeout = 300) {
    char dir[1024];
    make_reranker(dir, sizeof dir, "rerank-api", 1, 4, 2, 3);
    qe_engine *e = open_engine(dir, QE_TASK_AUTO, 0);
    const char *docs[] = {"vectors for search", "the weather forecast", "a fox"};
    float a[3], b[3];
    cr_assert_eq(qe_rerank(e, "what is a search engine", docs, 3, NULL, a), QE_OK, "%s",
                 qe_last_error(e));
    for (int i = 0; i < 3; i++) {
        int32_t *ids;
        int n;
        cr_assert_eq(qe_rerank_prompt(e, "what is a search engine", 23, docs[i], strlen(docs[i]),
                                      NULL, &ids, &n, NULL, err, sizeof err),
                     QE_OK);
        cr_assert_eq(qe_rerank_ids(e, (const int32_t *const *)&ids, &n, 1, &b[i]), QE_OK);
        cr_expect_eq(a[i], b[i], "document %d: %.9g vs %.9g", i, a[i], b[i]);
        free(ids);
    }
    /* another instruction changes the scores */
    cr_assert_eq(qe_rerank(e, "what is a search engine", docs, 3, "Judge the grammar", b), QE_OK);
    cr_expect(a[0] != b[0] || a[1] != b[1] || a[2] != b[2]);
    const qe_rerank_opts raw = {.raw = 1};
    int32_t *ids;
    int n, nq, nd;
    cr_assert_eq(
        qe_rerank_prompt(e, "query", 5, " document", 9, &raw, &ids, &n, NULL, err, sizeof err),
        QE_OK);
    int32_t *q = encode(qe_tokenizer(e), "query", &nq),
            *d = encode(qe_tokenizer(e), " document", &nd);
    cr_assert_eq(n, nq + nd);
    cr_expect_arr_eq(ids, q, sizeof(int32_t) * (size_t)nq);
    cr_expect_arr_eq(ids + nq, d, sizeof(int32_t) * (size_t)nd);
    free(ids), free(q), free(d);
    cr_expect_eq(qe_rerank_prompt(e, "", 0, "", 0, &raw, &ids, &n, NULL, err, sizeof err),
                 QE_ERR_ARG);
    qe_close(e);
}

/* Which task a folder is for, and what cannot rerank. */
Test(api, task_detection_and_refusals, .timeout = 300) {
    char dir[1024];
    make_reranker(dir, sizeof dir, "rerank-detect", 1, 4, 2, 5);
    qe_engine *e = open_engine(dir, QE_TASK_EMBED, 0); /* forced: embeds, cannot score */
    cr_expect_eq(qe_model_task(e), QE_TASK_EMBED);
    float s;
    const char *doc = "d";
    cr_expect_eq(qe_rerank(e, "q", &doc, 1, NULL, &s), QE_ERR_UNSUPPORTED);
    cr_expect(strstr(qe_last_error(e), "--task rerank"), "%s", qe_last_error(e));
    qe_close(e);
    /* the embedding fixture (when the shared fixtures are there): an embedding model unless told
     * otherwise */
    if (tu_exists(TINY "/config.json")) {
        e = open_engine(TINY, QE_TASK_AUTO, 0);
        cr_expect_eq(qe_model_task(e), QE_TASK_EMBED);
        cr_expect(strstr(qe_task_reason(e), "sentence-transformers"), "%s", qe_task_reason(e));
        qe_close(e);
    }
    /* untied with no lm_head: neither output layer, refused at open */
    char cfg[1100];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    qe_config c;
    cr_assert_eq(cfg_load(dir, &c, err, sizeof err), 0, "%s", err);
    c.tie_word_embeddings = 0;
    char *text = cfg_to_json(&c);
    FILE *f = fopen(cfg, "wb");
    cr_assert(f && fputs(text, f) >= 0);
    fclose(f);
    free(text);
    qe_options opt = {.model_dir = dir};
    cr_expect_eq(qe_open(&opt, &e, err, sizeof err), QE_ERR_FORMAT);
    cr_expect(strstr(err, "no lm_head.weight"), "%s", err);
    /* and a reranker needs its tokenizer */
    char tok[1100];
    snprintf(tok, sizeof tok, "%s/tokenizer.json", dir);
    cr_assert_eq(remove(tok), 0);
    opt.task = QE_TASK_RERANK;
    cr_expect_eq(qe_open(&opt, &e, err, sizeof err), QE_ERR_FORMAT);
    cr_expect(strstr(err, "needs tokenizer.json"), "%s", err);
}

/* A vocabulary too small for the template's special tokens: ids still score, texts are refused
 * with the reason, and a server would refuse the folder (qe_tokenizer_fits). */
Test(api, template_outside_the_vocabulary, .timeout = 120) {
    char dir[1024];
    tu_scratch_dir(dir, sizeof dir, "rerank-small-vocab");
    random_model_opts o;
    memset(&o, 0, sizeof o);
    cr_assert_eq(random_model_preset("tiny", &o.cfg), 0);
    o.cfg.vocab_size = 2048, o.cfg.num_layers = 1;
    o.out_dir = dir, o.seed = 4, o.dtype = ST_BF16, o.reranker = 1, o.quiet = 1;
    cr_assert_eq(random_model_write(&o, err, sizeof err), 0, "%s", err);
    qe_engine *e = open_engine(dir, QE_TASK_AUTO, 0);
    const int32_t ids[] = {10, 20, 30};
    const int32_t *p = ids;
    const int n = 3;
    float s;
    cr_expect_eq(qe_rerank_ids(e, &p, &n, 1, &s), QE_OK, "%s", qe_last_error(e));
    int32_t *got = NULL;
    int ng;
    cr_expect_eq(qe_rerank_prompt(e, "q", 1, "d", 1, NULL, &got, &ng, NULL, err, sizeof err),
                 QE_ERR_UNSUPPORTED);
    cr_expect(strstr(err, "template holds token id 151644"), "%s", err);
    cr_expect_eq(qe_tokenizer_fits(e, err, sizeof err), QE_ERR_FORMAT);
    cr_expect(strstr(err, "does not fit"), "%s", err);
    qe_close(e);
}

/* rows of a GGUF reranker's classifier, in double (as naive_logit's are) */
static double gguf_logit(const qe_model *m, const int32_t *ids, int n) {
    const int H = m->cfg.hidden_size;
    double *h = malloc(sizeof(double) * (size_t)H);
    naive_embed(m, ids, n, h);
    cr_assert(m->cls_out, "no cls.output.weight");
    double *W = tensor_d(m->cls_out), logit = 0;
    for (int i = 0; i < H; i++)
        logit += (W[i] - W[(size_t)H + i]) * h[i]; /* rows "yes", then "no" */
    free(W), free(h);
    return logit;
}

/* A reranker folder written as GGUF takes llama.cpp's reranker form (pooling_type 4, the yes and
 * no rows as cls.output.weight) and is detected as a reranker from it: an f32 file scores
 * bitwise like its folder (same prompts through the GGUF's tokenizer, same rows); a q8_0 file
 * matches the double forward on its own weights as the folder does on its own. Tied and untied. */
Test(gguf, reranker_files_score_like_their_folder, .timeout = 300) {
    const char *docs[] = {"the fox jumps over the lazy dog", "",
                          "int main(void) { return 0; } and a longer tail of words to score"};
    enum { N = 3 };
    for (int tied = 1; tied >= 0; tied--) {
        char dir[1024], path[1200];
        make_reranker(dir, sizeof dir, tied ? "rerank-gguf-tied" : "rerank-gguf-untied", tied, 4, 2,
                      11 + (uint64_t)tied);
        qe_engine *folder = open_engine(dir, QE_TASK_AUTO, 0);
        float want[N], got[N];
        cr_assert_eq(qe_rerank(folder, "what does the fox do", docs, N, NULL, want), QE_OK, "%s",
                     qe_last_error(folder));
        const qz_ftype types[2] = {QZ_F32, QZ_Q8_0};
        for (int ti = 0; ti < 2; ti++) {
            snprintf(path, sizeof path, "%s-%s.gguf", dir, qz_ftype_name(types[ti]));
            const qz_opts q = {.model_dir = dir, .out_path = path, .ftype = types[ti], .quiet = 1};
            cr_assert_eq(qz_run(&q, err, sizeof err), 0, "%s", err);
            qe_engine *e = open_engine(path, QE_TASK_AUTO, 0);
            cr_assert_eq(qe_model_task(e), QE_TASK_RERANK, "%s", qe_task_reason(e));
            cr_expect(strstr(qe_task_reason(e), "pooling_type is rank"), "%s", qe_task_reason(e));
            cr_assert_eq(qe_rerank(e, "what does the fox do", docs, N, NULL, got), QE_OK, "%s",
                         qe_last_error(e));
            if (types[ti] == QZ_F32) {
                for (int i = 0; i < N; i++)
                    cr_expect_eq(got[i], want[i], "tied %d, doc %d: %.8f vs the folder's %.8f",
                                 tied, i, got[i], want[i]);
            } else {
                qe_model m;
                cr_assert_eq(model_open(path, &m, err, sizeof err), 0, "%s", err);
                const int H = qe_dim(e);
                float *hidden = malloc(sizeof(float) * (size_t)H);
                for (int i = 0; i < N; i++) {
                    int32_t *ids;
                    int n;
                    cr_assert_eq(qe_rerank_prompt(e, "what does the fox do", 20, docs[i],
                                                  strlen(docs[i]), NULL, &ids, &n, NULL, err,
                                                  sizeof err),
                                 QE_OK, "%s", err);
                    const int32_t *p = ids;
                    cr_assert_eq(qe_embed_ids_ex(e, &p, &n, 1, H, 0, hidden), QE_OK);
                    const double logit = gguf_logit(&m, ids, n), lg = qe_rerank_logit(e, hidden);
                    cr_expect_leq(fabs(lg - logit), 1e-5 * fmax(1, fabs(logit)),
                                  "q8_0, tied %d, doc %d: logit %.7f vs %.7f", tied, i, lg, logit);
                    cr_log_info("q8_0 GGUF reranker, tied %d, doc %d: score %.6f (folder %.6f)",
                                tied, i, got[i], want[i]);
                    free(ids);
                }
                free(hidden);
                model_close(&m);
            }
            qe_close(e);
            remove(path);
        }
        qe_close(folder);
    }
}

/* The default K/V pool holds one prompt of the longest taken by default: a reranker's
 * QE_RERANK_DEFAULT_TOKENS (not the 40960 positions, five times the memory no prompt can use); the
 * same folder opened as an embedding model gets the positions; an explicit size is kept. */
Test(api, default_kv_pool_fits_the_reranker_limit, .timeout = 120) {
    char dir[1100];
    make_reranker(dir, sizeof dir, "rr-pool", 1, 4, 2, 3);
    qe_engine *e = open_engine(dir, QE_TASK_AUTO, 0);
    cr_assert_eq(qe_model_task(e), QE_TASK_RERANK);
    cr_expect_eq(qe_kv_pool_tokens(e), QE_RERANK_DEFAULT_TOKENS);
    qe_close(e);
    e = open_engine(dir, QE_TASK_EMBED, 0);
    cr_expect_eq(qe_kv_pool_tokens(e), qe_max_positions(e));
    qe_close(e);
    qe_options opt = {.model_dir = dir, .threads = 1, .kv_pool_tokens = 12000};
    cr_assert_eq(qe_open(&opt, &e, err, sizeof err), QE_OK, "%s", err);
    cr_expect_geq(qe_kv_pool_tokens(e), 12000, "an explicit pool was cut to %d",
                  qe_kv_pool_tokens(e));
    qe_close(e);
}
