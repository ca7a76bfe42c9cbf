/* quant_report.c — `qembed quantize --report`: what a quantization costs in embedding quality. For
 * each type the folder is quantized to a scratch GGUF, the corpus embedded with it and with the
 * folder itself (the full-precision reference), and printed: the cosine of each text's quantized
 * vector to its reference vector (mean, min), and how well the quantized vectors keep the
 * nearest-neighbour ranking (recall@10: each text in turn is the query against all the others; the
 * share of its 10 reference neighbours that its 10 quantized neighbours hold, averaged). */
#include "quant_report.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "json_strict.h"
#include "qembed.h"
#include "tokenizer/tokenizer.h"
#include "weights/config.h"

enum { TOP_K = 10 };

typedef struct corpus {
    int32_t **ids;
    int *lens, n;
} corpus;

static void corpus_free(corpus *c) {
    for (int i = 0; c->ids && i < c->n; i++)
        free(c->ids[i]);
    free(c->ids), free(c->lens);
}

/* Up to limit {"text"} lines of path, tokenized (end token appended, max_len tokens). */
static int corpus_read(const char *path, const tok_tokenizer *t, int limit, int max_len, corpus *c,
                       char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open the corpus %s", path);
        return -1;
    }
    c->ids = calloc((size_t)limit, sizeof *c->ids);
    c->lens = calloc((size_t)limit, sizeof *c->lens);
    char *line = NULL;
    size_t cap = 0;
    int rc = c->ids && c->lens ? 0 : -1;
    long lineno = 0, skipped = 0, first_skipped = 0;
    for (ssize_t len; rc == 0 && c->n < limit && (len = getline(&line, &cap, f)) >= 0;) {
        lineno++;
        if (strspn(line, " \t\r\n") == (size_t)len) continue; /* blank line */
        const char *why = "";
        cJSON *j = json_parse_strict(line, (size_t)len, &why);
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(j, "text");
        if (cJSON_IsString(text) && text->valuestring[0]) {
            const tok_encode_opts o = {1, max_len, 0, 0};
            char sub[256];
            if (tok_encode(t, text->valuestring, strlen(text->valuestring), &o, &c->ids[c->n],
                           &c->lens[c->n], sub, sizeof sub) != TOK_OK) {
                snprintf(err, errlen, "corpus line %ld: %s", lineno, sub);
                rc = -1;
            } else
                c->n++;
        } else if (!skipped++)
            first_skipped = lineno;
        cJSON_Delete(j);
    }
    free(line);
    if (skipped) /* said, not fatal: a corpus may mix in other records */
        fprintf(stderr,
                "qembed quantize: --report: %ld corpus line(s) are not {\"text\": \"...\"} with a "
                "non-empty text and were skipped (the first: line %ld)\n",
                skipped, first_skipped);
    fclose(f);
    if (rc == 0 && c->n <= TOP_K) {
        snprintf(err, errlen, "the corpus %s has %d texts; recall@%d needs more than %d", path,
                 c->n, TOP_K, TOP_K);
        rc = -1;
    }
    return rc;
}

/* The corpus's vectors (L2-normalised, full width) with the model at path. */
static float *embed_all(const char *path, const corpus *c, int threads, int *dim, char *err,
                        size_t errlen) {
    qe_options o = {.model_dir = path, .threads = threads};
    qe_engine *e = NULL;
    if (qe_open(&o, &e, err, errlen) != QE_OK) return NULL;
    *dim = qe_dim(e);
    float *v = malloc(sizeof(float) * (size_t)c->n * (size_t)*dim);
    if (v && qe_embed_ids(e, (const int32_t *const *)c->ids, c->lens, c->n, 0, v) != QE_OK) {
        snprintf(err, errlen, "%s: %s", path, qe_last_error(e));
        free(v), v = NULL;
    }
    qe_close(e);
    return v;
}

static double dot(const float *a, const float *b, int n) {
    double s = 0;
    for (int i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* The TOP_K nearest of text q among the others (by dot product of unit vectors), into top. */
static void neighbours(const float *v, int n, int d, int q, int *top) {
    double best[TOP_K];
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (i == q) continue;
        const double s = dot(v + (size_t)q * d, v + (size_t)i * d, d);
        int at;
        if (k < TOP_K)
            at = k++;
        else if (s > best[TOP_K - 1])
            at = TOP_K - 1; /* the last one leaves */
        else
            continue;
        for (; at > 0 && best[at - 1] < s; at--) /* kept in descending order */
            best[at] = best[at - 1], top[at] = top[at - 1];
        best[at] = s, top[at] = i;
    }
}

static double recall_at_k(const float *ref, const float *q, int n, int d) {
    double sum = 0;
    for (int t = 0; t < n; t++) {
        int a[TOP_K], b[TOP_K], hit = 0;
        neighbours(ref, n, d, t, a);
        neighbours(q, n, d, t, b);
        for (int i = 0; i < TOP_K; i++)
            for (int j = 0; j < TOP_K; j++)
                hit += a[i] == b[j];
        sum += (double)hit / TOP_K;
    }
    return sum / n;
}

static long long file_bytes(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

int qz_report(const qz_report_opts *o, FILE *out, char *err, size_t errlen) {
    tok_tokenizer *tok = NULL;
    char sub[512];
    if (tok_load(o->model_dir, &tok, sub, sizeof sub) != TOK_OK) {
        snprintf(err, errlen, "%s: %s", o->model_dir, sub);
        return -1;
    }
    corpus c;
    int rc = corpus_read(o->corpus, tok, o->limit, o->max_len, &c, err, errlen);
    tok_free(tok);
    qe_config cfg;
    if (rc == 0) rc = cfg_load(o->model_dir, &cfg, err, errlen);
    int d = 0;
    float *ref = rc == 0 ? embed_all(o->model_dir, &c, o->threads, &d, err, errlen) : NULL;
    if (!ref) rc = -1;
    long tokens = 0;
    for (int i = 0; i < c.n; i++)
        tokens += c.lens[i];
    if (rc == 0)
        fprintf(out, "corpus     %d texts, %ld tokens (%s, at most %d tokens each)\n", c.n, tokens,
                o->corpus, o->max_len);
    const double params = rc == 0 ? (double)cfg_total_params(&cfg) : 1;
    for (int k = 0; rc == 0 && k < o->n_types; k++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/report-%s.gguf", o->scratch, qz_ftype_name(o->types[k]));
        const qz_opts q = {
            .model_dir = o->model_dir, .out_path = path, .ftype = o->types[k], .quiet = 1};
        if (qz_run(&q, err, errlen)) {
            rc = -1;
            break;
        }
        int dq = 0;
        float *v = embed_all(path, &c, o->threads, &dq, err, errlen);
        if (!v || dq != d) {
            free(v);
            rc = -1;
            break;
        }
        double mean = 0, min = 2;
        for (int i = 0; i < c.n; i++) {
            const double cs = dot(v + (size_t)i * d, ref + (size_t)i * d, d);
            mean += cs / c.n;
            min = cs < min ? cs : min;
        }
        const double recall = recall_at_k(ref, v, c.n, d);
        const double bpw = 8.0 * (double)file_bytes(path) / params; /* metadata and tokenizer too */
        fprintf(
            out,
            "report type=%s file_bits_per_param=%.2f cos_mean=%.6f cos_min=%.6f recall_at_10=%.4f "
            "texts=%d\n",
            qz_ftype_name(o->types[k]), bpw, mean, min, recall, c.n);
        fflush(out);
        free(v);
        remove(path);
    }
    free(ref);
    corpus_free(&c);
    return rc;
}
