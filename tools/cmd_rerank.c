/* cmd_rerank.c — `qembed rerank`: scores JSONL documents against one query with a Qwen3-Reranker
 * and writes JSONL ({"index", "score", "tokens"}), in input order or sorted by score. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_io.h"
#include "commands.h"
#include "flags.h"
#include "json_strict.h"
#include "qembed.h"

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: qembed rerank --model DIR|FILE.gguf --query TEXT [--input FILE|-]\n"
        "                     [--output FILE|-] [--instruction TEXT] [--raw] [--sort]\n"
        "                     [--top-n N] [--max-length N] [--truncate-left] [--no-truncate]\n"
        "                     [--backend cpu|cuda] [--threads N] [--max-batch-tokens N]\n"
        "                     [--print-ids] [--task rerank]\n\n"
        "Reads JSONL documents, one per line: {\"text\": \"..\"} or a JSON string. Writes one\n"
        "line per document:\n"
        "  {\"index\": i, \"score\": s, \"tokens\": n}\n"
        "s in 0..1 is the model's probability that the document answers the query. Each prompt\n"
        "is the Qwen3-Reranker template around \"<Instruct>: ..\\n<Query>: ..\\n<Document>: "
        "..\".\n\n"
        "  --instruction TEXT   the task (default: \"%s\")\n"
        "  --raw                no template: the query's tokens, then the document's\n"
        "  --sort               highest score first (ties in input order); default input order\n"
        "  --top-n N            with --sort: only the first N lines\n"
        "  --max-length N       tokens per prompt, template included (default %d, at most the\n"
        "                       model's positions); longer documents lose their end\n"
        "  --truncate-left      a long document loses its start instead\n"
        "  --no-truncate        a prompt over --max-length is an error\n"
        "  --backend B          cpu (fp32 reference) or cuda (default cpu)\n"
        "  --threads N          CPU backend threads (default: all cores)\n"
        "  --max-batch-tokens N tokens per forward step (default 16384)\n"
        "  --task rerank        treat the folder as a reranker whatever it looks like\n"
        "  --print-ids          add each prompt's token ids to its line (\"ids\": [...]):\n"
        "                       what the model scored, to compare with another engine\n",
        QE_RERANK_DEFAULT_INSTRUCTION, QE_RERANK_DEFAULT_TOKENS);
}

typedef struct {
    long index;
    float score;
    int tokens;
    int32_t *ids; /* the prompt, kept for --print-ids; else NULL */
} ranked;

enum { DOCS_PER_CALL = 256 };

/* The document text of one JSONL line (malloc'd), or NULL with a message. */
static char *parse_line(const char *line, long lineno) {
    const char *why = "not JSON";
    cJSON *j = json_parse_strict(line, strlen(line), &why);
    const cJSON *t = cJSON_IsString(j) ? j : cJSON_GetObjectItemCaseSensitive(j, "text");
    char *doc = NULL;
    if (!j)
        fprintf(stderr, "qembed rerank: line %ld: %s\n", lineno, why);
    else if (!cJSON_IsString(t))
        fprintf(stderr, "qembed rerank: line %ld: expected {\"text\": \"...\"} or a string\n",
                lineno);
    else if (!(doc = strdup(t->valuestring)))
        fprintf(stderr, "qembed rerank: out of memory\n");
    cJSON_Delete(j);
    return doc;
}

/* Scores docs[0..n) into out[first..first+n). */
static int score(qe_engine *e, const char *query, char **docs, int n, long first,
                 const qe_rerank_opts *o, int keep_ids, ranked *out) {
    int32_t *ids[DOCS_PER_CALL];
    int lens[DOCS_PER_CALL], k = 0;
    float scores[DOCS_PER_CALL];
    qe_status s = QE_OK;
    for (; k < n && s == QE_OK; k++) {
        char why[400];
        s = qe_rerank_prompt(e, query, strlen(query), docs[k], strlen(docs[k]), o, &ids[k],
                             &lens[k], NULL, why, sizeof why);
        if (s != QE_OK) {
            fprintf(stderr, "qembed rerank: document %ld: %s\n", first + k, why);
            break;
        }
    }
    if (s == QE_OK) {
        s = qe_rerank_ids(e, (const int32_t *const *)ids, lens, n, scores);
        if (s != QE_OK)
            fprintf(stderr, "qembed rerank: documents %ld..%ld: %s\n", first, first + n - 1,
                    qe_last_error(e));
    }
    for (int i = 0; i < n && s == QE_OK; i++) {
        out[first + i] = (ranked){first + i, scores[i], lens[i], keep_ids ? ids[i] : NULL};
        if (keep_ids) ids[i] = NULL; /* the row owns them now */
    }
    for (int i = 0; i < k; i++)
        free(ids[i]);
    return s == QE_OK ? 0 : -1;
}

static int by_score(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->score != y->score) return x->score < y->score ? 1 : -1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static int read_docs(FILE *in, char ***docs_out, long *n_out) {
    char **docs = NULL, *line = NULL;
    long n = 0, cap = 0, lineno = 0;
    size_t lcap = 0;
    int bad = 0;
    for (ssize_t len; !bad && (len = getline(&line, &lcap, in)) >= 0;) {
        lineno++;
        if (strspn(line, " \t\r\n") == (size_t)len) continue; /* blank line */
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            char **grown = realloc(docs, sizeof *docs * (size_t)cap);
            if (!grown) {
                fprintf(stderr, "qembed rerank: out of memory\n");
                bad = 1;
                break;
            }
            docs = grown;
        }
        if (!(docs[n] = parse_line(line, lineno)))
            bad = 1;
        else
            n++;
    }
    free(line);
    *docs_out = docs, *n_out = n;
    return bad ? -1 : 0;
}

int cmd_rerank(int argc, char **argv) {
    qe_options opt = {0};
    qe_rerank_opts ro = {0};
    const char *in_path = "-", *out_path = "-", *query = NULL;
    int sort = 0, top_n = 0, print_ids = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        int *toggle = !strcmp(a, "--raw")             ? &ro.raw
                      : !strcmp(a, "--sort")          ? &sort
                      : !strcmp(a, "--truncate-left") ? &ro.truncate_left
                      : !strcmp(a, "--no-truncate")   ? &ro.no_truncate
                      : !strcmp(a, "--print-ids")     ? &print_ids
                                                      : NULL;
        if (toggle) {
            *toggle = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "qembed rerank: %s needs a value, or is no option (see --help)\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--model"))
            opt.model_dir = v;
        else if (!strcmp(a, "--query"))
            query = v;
        else if (!strcmp(a, "--instruction"))
            ro.instruction = v;
        else if (!strcmp(a, "--input"))
            in_path = v;
        else if (!strcmp(a, "--output"))
            out_path = v;
        else if (!strcmp(a, "--backend")) {
            if (flag_backend("rerank", v, &opt.backend)) return 2;
        } else if (!strcmp(a, "--top-n")) {
            if (flag_int("rerank", a, v, 1, 1 << 30, &top_n)) return 2;
        } else if (!strcmp(a, "--max-length")) {
            if (flag_int("rerank", a, v, 1, 1 << 30, &ro.max_tokens)) return 2;
        } else if (!strcmp(a, "--threads")) {
            if (flag_int("rerank", a, v, 1, 1024, &opt.threads)) return 2;
        } else if (!strcmp(a, "--max-batch-tokens")) {
            if (flag_int("rerank", a, v, 1, 1 << 30, &opt.max_batch_tokens)) return 2;
        } else if (!strcmp(a, "--task")) {
            if (strcmp(v, "rerank")) {
                fprintf(stderr, "qembed rerank: --task takes only rerank here (qembed embed "
                                "embeds)\n");
                return 2;
            }
            opt.task = QE_TASK_RERANK;
        } else {
            fprintf(stderr, "qembed rerank: unknown option %s (see --help)\n", a);
            return 2;
        }
    }
    if (!opt.model_dir || !query) {
        fprintf(stderr, "qembed rerank: --model DIR and --query TEXT are required\n");
        usage(stderr);
        return 2;
    }
    if (top_n && !sort) {
        fprintf(stderr, "qembed rerank: --top-n needs --sort\n");
        return 2;
    }
    if (ro.truncate_left && ro.no_truncate) {
        fprintf(stderr, "qembed rerank: give --truncate-left or --no-truncate, not both\n");
        return 2;
    }
    /* the default K/V pool holds one prompt of the default limit; a longer limit needs its own */
    if (ro.max_tokens > QE_RERANK_DEFAULT_TOKENS && !opt.kv_pool_tokens)
        opt.kv_pool_tokens = ro.max_tokens;
    char err[512];
    qe_engine *e;
    if (qe_open(&opt, &e, err, sizeof err) != QE_OK) {
        fprintf(stderr, "qembed rerank: %s\n", err);
        return 1;
    }
    int rc = 1;
    char **docs = NULL;
    long n = 0;
    ranked *out_rows = NULL;
    cli_io io = {0};
    if (qe_model_task(e) != QE_TASK_RERANK) {
        fprintf(stderr, "qembed rerank: %s is not a reranker (%s); --task rerank forces it\n",
                opt.model_dir, qe_task_reason(e));
        goto done;
    }
    if (cli_io_open(&io, "rerank", in_path, out_path)) goto done;
    FILE *out = io.out;
    if (read_docs(io.in, &docs, &n)) goto done;
    out_rows = calloc((size_t)(n ? n : 1), sizeof *out_rows);
    if (!out_rows) {
        fprintf(stderr, "qembed rerank: out of memory\n");
        goto done;
    }
    const int progress = isatty(2) && n > DOCS_PER_CALL;
    int bad = 0;
    for (long first = 0; first < n && !bad; first += DOCS_PER_CALL) {
        const int k = n - first < DOCS_PER_CALL ? (int)(n - first) : DOCS_PER_CALL;
        bad = score(e, query, docs + first, k, first, &ro, print_ids, out_rows);
        if (progress) fprintf(stderr, "\rrerank: %ld/%ld documents", first + k, n);
    }
    if (progress) fputc('\n', stderr);
    if (bad) goto done;
    if (sort) qsort(out_rows, (size_t)n, sizeof *out_rows, by_score);
    const long shown = top_n && top_n < n ? top_n : n;
    for (long i = 0; i < shown; i++) {
        fprintf(out, "{\"index\": %ld, \"score\": %.9g, \"tokens\": %d", out_rows[i].index,
                out_rows[i].score, out_rows[i].tokens);
        for (int t = 0; out_rows[i].ids && t < out_rows[i].tokens; t++)
            fprintf(out, "%s%d", t ? ", " : ", \"ids\": [", out_rows[i].ids[t]);
        fprintf(out, "%s}\n", out_rows[i].ids && out_rows[i].tokens ? "]" : "");
    }
    rc = cli_io_close(&io, 0) ? 1 : 0;
done:
    cli_io_close(&io, 1); /* an early exit's streams; nothing after the close above */
    for (long i = 0; i < n; i++) {
        free(docs[i]);
        if (out_rows) free(out_rows[i].ids);
    }
    free(docs);
    free(out_rows);
    qe_close(e);
    return rc;
}
