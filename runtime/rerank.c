/* rerank.c — Qwen3-Reranker on the embedding engine: which task a folder is for, the one row pair
 * of the output layer a score needs, the official prompt, and the scores.
 *
 * A reranker's score is the softmax of the "yes" and "no" logits of the last token, which is
 * sigmoid((W[yes] - W[no]) . h): the 151,669-way output layer is never computed, only one
 * difference row, made once at qe_open in fp32. h is the pooled hidden state the embedding path
 * already returns (qe_embed_ids_ex with normalize 0), so a reranker runs the same steps, packing
 * and kernels as an embedding model on both backends; the dot product is on the host (a few
 * thousand multiply-adds per document, beside a forward of billions).
 *
 * A GGUF file in llama.cpp's reranker form (pooling_type 4, "rank") carries those two rows itself
 * as cls.output.weight, labelled by qwen3.classifier.output_labels; its softmax over them is the
 * same sigmoid of the difference. */
#include "rerank.h"

#include "weights/gguf_config.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char PREFIX[] =
    "<|im_start|>system\nJudge whether the Document meets the requirements "
    "based on the Query and the Instruct provided. Note that the answer "
    "can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n";
static const char SUFFIX[] = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n";

const char *qe_task_name(qe_task t) {
    return t == QE_TASK_RERANK ? "rerank" : t == QE_TASK_EMBED ? "embed" : "auto";
}

int qe_rerank_template(const char *instruction, char *buf, size_t cap) {
    const int n =
        snprintf(buf, cap, "%s<Instruct>: %s\n<Query>: {query}\n<Document>: {document}%s", PREFIX,
                 instruction ? instruction : QE_RERANK_DEFAULT_INSTRUCTION, SUFFIX);
    return n >= 0 && (size_t)n < cap ? n : -1;
}

static int has_file(const char *dir, const char *name) {
    char path[4200];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0;
}

static qe_task detect(const char *dir, const qe_model *m, const tok_tokenizer *tok, char *why,
                      size_t cap) {
    if (has_file(dir, "modules.json") || has_file(dir, "config_sentence_transformers.json")) {
        snprintf(why, cap,
                 "sentence-transformers files (modules.json or "
                 "config_sentence_transformers.json) make it an embedding model");
        return QE_TASK_EMBED;
    }
    if (m->gguf && gguf_pooling_type(m->gguf) == GGUF_POOL_RANK) {
        snprintf(why, cap, "a GGUF file whose pooling_type is rank (4): a reranker");
        return QE_TASK_RERANK;
    }
    if (m->gguf) {
        snprintf(why, cap,
                 "a GGUF file whose pooling_type is last-token (or none): an embedding model");
        return QE_TASK_EMBED;
    }
    if (m->lm_head) {
        snprintf(why, cap,
                 "a causal-LM checkpoint with lm_head.weight and no sentence-transformers "
                 "files: a reranker");
        return QE_TASK_RERANK;
    }
    if (tok && tok_end_id(tok) < 0) {
        snprintf(why, cap,
                 "its tokenizer appends no end token and there are no "
                 "sentence-transformers files: a reranker");
        return QE_TASK_RERANK;
    }
    snprintf(why, cap, "no sign of a reranker: an embedding model");
    return QE_TASK_EMBED;
}

/* The one id a word tokenizes to, or -1 with err. */
static int single_id(const tok_tokenizer *tok, const char *word, int vocab, char *err,
                     size_t errlen) {
    const tok_encode_opts o = {0, 0, 0, 0};
    int32_t *ids = NULL;
    int n = 0;
    char sub[256];
    if (tok_encode(tok, word, strlen(word), &o, &ids, &n, sub, sizeof sub) != TOK_OK) {
        snprintf(err, errlen, "reranker: cannot tokenize \"%s\": %s", word, sub);
        return -1;
    }
    const int id = n == 1 ? ids[0] : -1;
    free(ids);
    if (n != 1)
        snprintf(err, errlen,
                 "reranker: the tokenizer splits \"%s\" into %d tokens; a Qwen3-Reranker's "
                 "answer tokens are one token each",
                 word, n);
    else if (id >= vocab)
        snprintf(err, errlen,
                 "reranker: \"%s\" is token %d, outside the model's vocabulary (0..%d)", word, id,
                 vocab - 1);
    return n == 1 && id < vocab ? id : -1;
}

int rerank_answer_ids(const tok_tokenizer *tok, int vocab, int *yes, int *no, char *err,
                      size_t errlen) {
    *yes = single_id(tok, "yes", vocab, err, errlen);
    *no = *yes >= 0 ? single_id(tok, "no", vocab, err, errlen) : -1;
    return *no >= 0 ? 0 : -1;
}

/* Row r of a [vocab, hidden] tensor as fp32: a view of the row, converted as every tensor is. */
static void row_f32(const st_tensor *t, int r, float *out) {
    const st_tensor row = st_rows(t, r, 1);
    st_to_f32(&row, out);
}

/* W: embed_tokens.weight when tied, else lm_head.weight, checked like every bound tensor. */
static const st_tensor *output_layer(const qe_model *m, char *err, size_t errlen) {
    const qe_config *c = &m->cfg;
    if (c->tie_word_embeddings) return m->embed;
    const st_tensor *t = m->lm_head;
    if (!t) {
        snprintf(err, errlen,
                 "%s: a reranker needs its output layer: config.json says tie_word_embeddings "
                 "is false and there is no lm_head.weight",
                 m->dir);
        return NULL;
    }
    if (t->dtype == ST_OTHER || t->ndim != 2 || t->shape[0] != c->vocab_size ||
        t->shape[1] != c->hidden_size) {
        snprintf(err, errlen,
                 "tensor \"lm_head.weight\": expected a BF16, F16 or F32 tensor of shape [%d, %d] "
                 "from config.json",
                 c->vocab_size, c->hidden_size);
        return NULL;
    }
    return t;
}

static int encode_plain(const tok_tokenizer *tok, const char *text, size_t len, int max, int left,
                        int32_t **ids, int *n, char *err, size_t errlen) {
    const tok_encode_opts o = {0, max, left, 0};
    return tok_encode(tok, text, len, &o, ids, n, err, errlen) == TOK_OK ? 0 : -1;
}

/* The rows of "yes" and "no" in a GGUF reranker's cls.output.weight: where its
 * classifier.output_labels put them, else 0 and 1 (the order llama.cpp's converter writes). */
static int cls_rows(const qe_model *m, int *yes, int *no, char *err, size_t errlen) {
    *yes = 0, *no = 1;
    char key[128];
    snprintf(key, sizeof key, "%s.classifier.output_labels", m->cfg.model_type);
    if (!gguf_has(m->gguf, key)) return 0;
    gguf_span *labels = NULL;
    uint64_t n = 0;
    if (gguf_get_string_array(m->gguf, key, &labels, &n, err, errlen)) return -1;
    *yes = *no = -1;
    for (uint64_t i = 0; i < n && i < (uint64_t)m->cls_out->shape[0]; i++) {
        if (labels[i].len == 3 && !memcmp(labels[i].ptr, "yes", 3)) *yes = (int)i;
        if (labels[i].len == 2 && !memcmp(labels[i].ptr, "no", 2)) *no = (int)i;
    }
    free(labels);
    if (*yes < 0 || *no < 0) {
        snprintf(err, errlen,
                 "%s: metadata key \"%s\" names no \"yes\" and \"no\" rows of cls.output.weight "
                 "(a Qwen3-Reranker's answer tokens)",
                 m->dir, key);
        return -1;
    }
    return 0;
}

int rerank_head_open(rerank_head *h, const char *dir, const qe_model *m, const tok_tokenizer *tok,
                     qe_task asked, char *err, size_t errlen) {
    memset(h, 0, sizeof *h);
    h->template_outside = -1;
    if (asked == QE_TASK_AUTO)
        h->task = detect(dir, m, tok, h->reason, sizeof h->reason);
    else {
        h->task = asked;
        snprintf(h->reason, sizeof h->reason, "asked for (task %s)", qe_task_name(asked));
    }
    if (h->task != QE_TASK_RERANK) return 0;
    if (m->gguf && !m->cls_out && gguf_pooling_type(m->gguf) == GGUF_POOL_RANK) {
        snprintf(err, errlen,
                 "%s: pooling_type rank (a reranker) needs its classifier, cls.output.weight, "
                 "which the file lacks",
                 dir);
        return -1;
    }
    if (!tok) {
        snprintf(err, errlen,
                 m->gguf ? "%s: a reranker needs a tokenizer (the tokenizer.ggml.* metadata) for "
                           "its prompt template"
                         : "%s: a reranker needs tokenizer.json, to find the ids of \"yes\" and "
                           "\"no\"",
                 dir);
        return -1;
    }
    const qe_config *c = &m->cfg;
    const st_tensor *w = NULL;
    if (m->cls_out) { /* a GGUF reranker: the file holds the two rows */
        w = m->cls_out;
        snprintf(h->rows_of, sizeof h->rows_of, "cls.output.weight (the GGUF's classifier)");
        if (cls_rows(m, &h->yes_id, &h->no_id, err, errlen)) return -1;
    } else {
        w = output_layer(m, err, errlen);
        snprintf(h->rows_of, sizeof h->rows_of, "%s",
                 c->tie_word_embeddings
                     ? (m->gguf ? "token_embd.weight (tied)" : "embed_tokens.weight (tied)")
                 : m->gguf ? "output.weight"
                           : "lm_head.weight");
        if (!w || rerank_answer_ids(tok, c->vocab_size, &h->yes_id, &h->no_id, err, errlen))
            return -1;
    }
    const int H = c->hidden_size;
    h->diff = malloc(sizeof(float) * (size_t)H * 2);
    if (!h->diff) {
        snprintf(err, errlen, "out of host memory");
        return -1;
    }
    float *no = h->diff + H;
    row_f32(w, h->yes_id, h->diff);
    row_f32(w, h->no_id, no);
    for (int i = 0; i < H; i++)
        h->diff[i] -= no[i];
    char sub[256];
    if (encode_plain(tok, PREFIX, strlen(PREFIX), 0, 0, &h->prefix, &h->n_prefix, sub,
                     sizeof sub) ||
        encode_plain(tok, SUFFIX, strlen(SUFFIX), 0, 0, &h->suffix, &h->n_suffix, sub,
                     sizeof sub)) {
        snprintf(err, errlen, "reranker: cannot tokenize the prompt template: %s", sub);
        rerank_head_free(h);
        return -1;
    }
    /* every prompt holds the template: past the embedding table, no text can be scored (ids
     * still can: qe_tokenizer_fits refuses it for a server, qe_rerank_prompt per call) */
    for (int k = 0; k < h->n_prefix + h->n_suffix && h->template_outside < 0; k++) {
        const int id = k < h->n_prefix ? h->prefix[k] : h->suffix[k - h->n_prefix];
        if (id >= c->vocab_size) h->template_outside = id;
    }
    return 0;
}

void rerank_head_free(rerank_head *h) {
    free(h->diff);
    free(h->prefix);
    free(h->suffix);
    h->diff = NULL, h->prefix = h->suffix = NULL;
}

qe_task qe_model_task(const qe_engine *e) {
    return engine_rerank_head(e)->task;
}
const char *qe_task_reason(const qe_engine *e) {
    return engine_rerank_head(e)->reason;
}

float qe_rerank_logit(const qe_engine *e, const float *hidden) {
    const rerank_head *h = engine_rerank_head(e);
    if (!h->diff) return 0;
    double s = 0; /* in double: the score of a long prompt must not depend on summation order */
    const int n = qe_dim(e);
    for (int i = 0; i < n; i++)
        s += (double)h->diff[i] * hidden[i];
    return (float)s;
}

float qe_rerank_sigmoid(float logit) {
    return (float)(1.0 / (1.0 + exp(-(double)logit)));
}

static qe_status not_reranker(qe_engine *e) {
    return engine_fail(e, QE_ERR_UNSUPPORTED,
                       "this is an embedding model (%s); open a Qwen3-Reranker, or force the task "
                       "with --task rerank",
                       qe_task_reason(e));
}

qe_status qe_rerank_ids(qe_engine *e, const int32_t *const *ids, const int *lens, int n,
                        float *scores) {
    if (!engine_rerank_head(e)->diff) return not_reranker(e);
    if (n <= 0) return n == 0 ? QE_OK : engine_fail(e, QE_ERR_ARG, "no prompts given");
    const int H = qe_dim(e);
    float *hidden = malloc(sizeof(float) * (size_t)n * (size_t)H);
    if (!hidden) return engine_fail(e, QE_ERR_NOMEM, "out of host memory");
    qe_status s = qe_embed_ids_ex(e, ids, lens, n, H, 0, hidden);
    for (int i = 0; s == QE_OK && i < n; i++)
        scores[i] = qe_rerank_sigmoid(qe_rerank_logit(e, hidden + (size_t)i * H));
    free(hidden);
    return s;
}

/* How many ids a prompt may have: the caller's limit, else 8192, never past the positions. */
static int prompt_limit(const qe_engine *e, const qe_rerank_opts *o) {
    int max = o && o->max_tokens > 0 ? o->max_tokens : QE_RERANK_DEFAULT_TOKENS;
    return max < qe_max_positions(e) ? max : qe_max_positions(e);
}

/* Cuts n_cut ids out of body[0..*n) at from (the document's first id for a left cut, else the
 * end). */
static void cut(int32_t *body, int *n, int from, int n_cut, int left) {
    if (left)
        memmove(body + from, body + from + n_cut, sizeof(int32_t) * (size_t)(*n - from - n_cut));
    *n -= n_cut;
}

/* Where the document's ids begin in body: after the ids of head (the body up to the document)
 * where body starts with them, which the Qwen pre-tokenizer guarantees (the document follows a
 * space); else after the ids the two share. */
static int document_start(const tok_tokenizer *tok, const char *head, size_t head_len,
                          const int32_t *body, int n_body) {
    int32_t *ids = NULL;
    int n = 0;
    char sub[64];
    if (encode_plain(tok, head, head_len, 0, 0, &ids, &n, sub, sizeof sub)) return n_body;
    int at = 0;
    while (at < n && at < n_body && ids[at] == body[at])
        at++;
    free(ids);
    return at;
}

/* A failure of qe_rerank_prompt: the message in err. */
static qe_status prompt_fail(char *err, size_t errlen, qe_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static qe_status prompt_fail(char *err, size_t errlen, qe_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (errlen) vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return st;
}

qe_status qe_rerank_prompt(const qe_engine *e, const char *query, size_t query_len,
                           const char *document, size_t document_len, const qe_rerank_opts *o,
                           int32_t **ids, int *len, int *truncated, char *err, size_t errlen) {
    *ids = NULL, *len = 0;
    if (truncated) *truncated = 0;
    const rerank_head *h = engine_rerank_head(e);
    if (!h->diff)
        return prompt_fail(err, errlen, QE_ERR_UNSUPPORTED,
                           "this is an embedding model (%s); force the task with --task rerank",
                           qe_task_reason(e));
    if (h->template_outside >= 0 && !(o && o->raw))
        return prompt_fail(err, errlen, QE_ERR_UNSUPPORTED,
                           "the reranker's prompt template holds token id %d, outside the model's "
                           "vocabulary (0..%d): the tokenizer does not fit the model",
                           h->template_outside, qe_vocab_size(e) - 1);
    const tok_tokenizer *tok = qe_tokenizer(e);
    const int raw = o && o->raw, left = o && o->truncate_left, max = prompt_limit(e, o);
    const char *instr = o && o->instruction ? o->instruction : QE_RERANK_DEFAULT_INSTRUCTION;
    /* the body: the template's middle, or (raw) the query then the document */
    const size_t cap = strlen(instr) + query_len + document_len + 64;
    char *body = malloc(cap);
    if (!body) return prompt_fail(err, errlen, QE_ERR_NOMEM, "out of host memory");
    size_t blen = 0, head_len = 0;
    if (!raw) {
        blen = (size_t)snprintf(body, cap, "<Instruct>: %s\n<Query>: ", instr);
        memcpy(body + blen, query, query_len);
        blen += query_len;
        blen += (size_t)snprintf(body + blen, cap - blen, "\n<Document>:");
        head_len = blen;
        body[blen++] = ' ';
    } else {
        memcpy(body, query, query_len);
        blen = head_len = query_len;
    }
    memcpy(body + blen, document, document_len);
    blen += document_len;
    int32_t *mid = NULL;
    int n_mid = 0;
    char sub[256];
    qe_status s = QE_OK;
    if (encode_plain(tok, body, blen, 0, 0, &mid, &n_mid, sub, sizeof sub))
        s = prompt_fail(err, errlen, QE_ERR_ARG, "%s", sub);
    const int fixed = raw ? 0 : h->n_prefix + h->n_suffix, room = max - fixed;
    if (s == QE_OK && n_mid > room) {
        /* a left cut starts at the document's first id; a right one takes the body's end */
        const int from = left ? document_start(tok, body, head_len, mid, n_mid) : 0;
        const int keep_before = left ? from : 0; /* ids a cut may not touch */
        if (o && o->no_truncate)
            s = prompt_fail(err, errlen, QE_ERR_TOO_LONG,
                            "the prompt has %d tokens; the limit is %d (truncation is off)",
                            n_mid + fixed, max);
        else if (room <= keep_before)
            s = prompt_fail(err, errlen, QE_ERR_TOO_LONG,
                            "the prompt has %d tokens before the document; the limit is %d",
                            keep_before + fixed, max);
        else {
            cut(mid, &n_mid, from, n_mid - room, left);
            if (truncated) *truncated = 1;
        }
    }
    free(body);
    int32_t *out = s == QE_OK ? malloc(sizeof(int32_t) * (size_t)(n_mid + fixed + 1)) : NULL;
    if (s == QE_OK && !out) s = prompt_fail(err, errlen, QE_ERR_NOMEM, "out of host memory");
    if (s == QE_OK) {
        int n = 0;
        if (!raw) memcpy(out, h->prefix, sizeof(int32_t) * (size_t)h->n_prefix), n = h->n_prefix;
        memcpy(out + n, mid, sizeof(int32_t) * (size_t)n_mid), n += n_mid;
        if (!raw) memcpy(out + n, h->suffix, sizeof(int32_t) * (size_t)h->n_suffix);
        n += raw ? 0 : h->n_suffix;
        if (n == 0) {
            free(out), out = NULL;
            s = prompt_fail(err, errlen, QE_ERR_ARG, "the query and the document are both empty");
        }
        *ids = out, *len = n;
    }
    free(mid);
    return s;
}

qe_status qe_rerank_texts(qe_engine *e, const char *query, const char *const *documents, int n,
                          const qe_rerank_opts *o, float *scores) {
    if (!engine_rerank_head(e)->diff) return not_reranker(e);
    if (n < 0 || !query || (n > 0 && !documents))
        return engine_fail(e, QE_ERR_ARG, "no query or documents given");
    int32_t **ids = calloc((size_t)(n > 0 ? n : 1), sizeof *ids);
    int *lens = calloc((size_t)(n > 0 ? n : 1), sizeof *lens);
    qe_status s = ids && lens ? QE_OK : engine_fail(e, QE_ERR_NOMEM, "out of host memory");
    for (int i = 0; s == QE_OK && i < n; i++) {
        char why[400];
        s = qe_rerank_prompt(e, query, strlen(query), documents[i], strlen(documents[i]), o,
                             &ids[i], &lens[i], NULL, why, sizeof why);
        if (s != QE_OK) engine_fail(e, s, "document %d: %s", i, why);
    }
    if (s == QE_OK) s = qe_rerank_ids(e, (const int32_t *const *)ids, lens, n, scores);
    for (int i = 0; ids && i < n; i++)
        free(ids[i]);
    free(ids);
    free(lens);
    return s;
}

qe_status qe_rerank(qe_engine *e, const char *query, const char *const *documents, int n,
                    const char *instruction, float *scores) {
    const qe_rerank_opts o = {.instruction = instruction};
    return qe_rerank_texts(e, query, documents, n, &o, scores);
}
