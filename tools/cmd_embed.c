/* cmd_embed.c — `qembed embed`: JSONL in ({"ids": [...]} or {"text": "..."}), JSONL out
 * ({"index", "tokens", "embedding"}), in input order, on either backend. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "cli_io.h"
#include "flags.h"
#include "json_strict.h"
#include "prompt_cut.h"
#include "qembed.h"
#include "tokenizer/tokenizer.h"

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: qembed embed --model DIR|FILE.gguf [--backend cpu|cuda] [--dims N]\n"
        "                    [--input FILE|-] [--output FILE|-]\n"
        "                    [--instruction TEXT | --prompt-name NAME] [--max-length N]\n"
        "                    [--threads N] [--max-batch-tokens N] [--shard I/N]\n"
        "                    [--tensor-parallel N] [--task embed]\n\n"
        "Reads JSONL, one object per line: {\"ids\": [..]} (used exactly as given, no token\n"
        "appended) or {\"text\": \"..\"} (tokenized with the model's tokenizer.json, or a GGUF\n"
        "file's tokenizer, end token appended). Writes one line per input, in order:\n"
        "  {\"index\": i, \"tokens\": n, \"embedding\": [..]}\n"
        "Vectors are L2-normalised; floats round-trip float32.\n\n"
        "  --backend B          cpu (fp32 reference) or cuda (default cpu)\n"
        "  --dims N             Matryoshka: keep the first N values, renormalise\n"
        "  --instruction TEXT   format texts as queries: Instruct: TEXT\\nQuery:{text}\n"
        "  --prompt-name NAME   prefix texts with a prompt of config_sentence_transformers.json\n"
        "                       (query or document)\n"
        "  --max-length N       truncate texts to N tokens, end token kept (default: the\n"
        "                       model's max positions)\n"
        "  --threads N          CPU backend threads (default: all cores)\n"
        "  --max-batch-tokens N tokens per forward step (default 16384)\n"
        "  --shard I/N          embed only the records (non-blank lines) whose index is I\n"
        "                       modulo N, keeping their global index: N runs (machines, array\n"
        "                       jobs) split one input; `paste -d '\\n' out.0 ... out.N-1 |\n"
        "                       grep -v '^$'` merges their outputs into the unsharded file\n"
        "                       (docs/scaling.md)\n"
        "  --tensor-parallel N  split every layer over N ranks (CPU backend: in process, to\n"
        "                       prove the split; it must divide the query and kv heads)\n"
        "  --task embed         embed with a folder that looks like a reranker (qembed inspect\n"
        "                       says which a folder is; rerankers score with qembed rerank)\n");
}

typedef struct {
    int32_t *ids;
    int len;
    long index; /* the input's place in the whole input (its line among the records) */
} seq;

enum { LINES_PER_CALL = 256 };

static int parse_line(const char *line, long lineno, const tok_tokenizer *tok, const char *prefix,
                      const char *instruction, int max_len, seq *out) {
    const char *why = "not a JSON object";
    cJSON *j = json_parse_strict(line, strlen(line), &why);
    int rc = -1;
    out->ids = NULL;
    out->len = 0;
    char err[400];
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(j, "ids");
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(j, "text");
    if (!cJSON_IsObject(j)) {
        fprintf(stderr, "qembed embed: line %ld: %s\n", lineno, why);
    } else if (ids && text) {
        fprintf(stderr, "qembed embed: line %ld: give \"ids\" or \"text\", not both\n", lineno);
    } else if (cJSON_IsArray(ids)) {
        int n = cJSON_GetArraySize(ids), i = 0;
        out->ids = malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
        out->len = n;
        if (!out->ids) {
            fprintf(stderr, "qembed embed: line %ld: out of memory\n", lineno);
            goto out;
        }
        for (const cJSON *v = ids->child; v; v = v->next, i++) {
            if (!cJSON_IsNumber(v) || v->valuedouble < INT32_MIN || v->valuedouble > INT32_MAX ||
                v->valuedouble != floor(v->valuedouble)) {
                fprintf(stderr, "qembed embed: line %ld: ids[%d] is not an integer\n", lineno, i);
                goto out;
            }
            out->ids[i] = (int32_t)v->valuedouble;
        }
        if (n == 0)
            fprintf(stderr, "qembed embed: line %ld: \"ids\" is empty\n", lineno);
        else
            rc = 0;
    } else if (cJSON_IsString(text)) {
        if (!tok) {
            fprintf(stderr,
                    "qembed embed: line %ld: {\"text\"} needs a tokenizer.json in the "
                    "model folder\n",
                    lineno);
            goto out;
        }
        char *formatted =
            instruction ? tok_format_instruction(instruction, text->valuestring) : NULL;
        if (!formatted && prefix) {
            size_t a = strlen(prefix), b = strlen(text->valuestring);
            formatted = malloc(a + b + 1);
            if (!formatted) {
                fprintf(stderr, "qembed embed: line %ld: out of memory\n", lineno);
                goto out;
            }
            memcpy(formatted, prefix, a);
            memcpy(formatted + a, text->valuestring, b + 1);
        }
        const char *s = formatted ? formatted : text->valuestring;
        /* behind a prompt the whole is tokenized and prompt_cut keeps the prompt, cutting the
         * text's end: the tokenizer's cut would take the prompt's end too */
        tok_encode_opts o = {1, formatted ? 0 : max_len, 0, 0};
        const size_t prefix_len = formatted ? strlen(s) - strlen(text->valuestring) : 0;
        if (tok_encode(tok, s, strlen(s), &o, &out->ids, &out->len, err, sizeof err) != TOK_OK)
            fprintf(stderr, "qembed embed: line %ld: %s\n", lineno, err);
        else if (formatted && prompt_cut(tok, out->ids, &out->len, max_len, prefix_len, 0) != 0)
            fprintf(stderr,
                    "qembed embed: line %ld: the instruction or prompt and the end token leave "
                    "no room for the text in --max-length %d\n",
                    lineno, max_len);
        else
            rc = 0;
        free(formatted);
    } else {
        fprintf(stderr,
                "qembed embed: line %ld: expected {\"ids\": [...]} or {\"text\": \"...\"}\n",
                lineno);
    }
out:
    cJSON_Delete(j);
    if (rc) {
        free(out->ids);
        out->ids = NULL;
    }
    return rc;
}

/* "I/N" with 0 <= I < N: this run's share of the records. */
static int parse_shard(const char *v, long *i, long *n) {
    char *end = NULL;
    *i = strtol(v, &end, 10);
    int ok = end != v && *end == '/';
    if (ok) {
        const char *d = end + 1;
        *n = strtol(d, &end, 10);
        ok = end != d && *end == 0 && *n >= 1 && *n <= 1000000 && *i >= 0 && *i < *n;
    }
    if (!ok)
        fprintf(stderr, "qembed embed: --shard wants I/N with 0 <= I < N (e.g. 0/4), got '%s'\n",
                v);
    return ok ? 0 : -1;
}

static int flush(qe_engine *e, seq *seqs, int n, int dims, FILE *out) {
    const int32_t **ids = calloc((size_t)n, sizeof *ids);
    int *lens = calloc((size_t)n, sizeof *lens);
    float *vec = malloc(sizeof(float) * (size_t)n * (size_t)dims);
    if (!ids || !lens || !vec) {
        fprintf(stderr, "qembed embed: out of memory\n");
        for (int i = 0; i < n; i++)
            free(seqs[i].ids);
        free(ids);
        free(lens);
        free(vec);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        ids[i] = seqs[i].ids;
        lens[i] = seqs[i].len;
    }
    qe_status s = qe_embed_ids(e, ids, lens, n, dims, vec);
    if (s != QE_OK)
        fprintf(stderr, "qembed embed: inputs %ld..%ld: %s\n", seqs[0].index, seqs[n - 1].index,
                qe_last_error(e));
    for (int i = 0; i < n && s == QE_OK; i++) {
        fprintf(out, "{\"index\": %ld, \"tokens\": %d, \"embedding\": [", seqs[i].index, lens[i]);
        for (int d = 0; d < dims; d++)
            fprintf(out, d ? ", %.9g" : "%.9g", vec[(size_t)i * dims + d]);
        fputs("]}\n", out);
    }
    for (int i = 0; i < n; i++)
        free(seqs[i].ids);
    free(ids);
    free(lens);
    free(vec);
    return s == QE_OK ? 0 : -1;
}

int cmd_embed(int argc, char **argv) {
    qe_options opt = {0};
    const char *in_path = "-", *out_path = "-", *instruction = NULL, *prompt_name = NULL;
    int dims = 0, max_len = 0;
    long shard_i = 0, shard_n = 1; /* --shard I/N: the records whose index is I modulo N */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "qembed embed: %s needs a value, or is no option (see --help)\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--model"))
            opt.model_dir = v;
        else if (!strcmp(a, "--backend")) {
            if (flag_backend("embed", v, &opt.backend)) return 2;
        } else if (!strcmp(a, "--dims")) {
            if (flag_int("embed", a, v, 1, 1 << 20, &dims)) return 2;
        } else if (!strcmp(a, "--input"))
            in_path = v;
        else if (!strcmp(a, "--output"))
            out_path = v;
        else if (!strcmp(a, "--instruction"))
            instruction = v;
        else if (!strcmp(a, "--prompt-name"))
            prompt_name = v;
        else if (!strcmp(a, "--max-length")) {
            if (flag_int("embed", a, v, 1, 1 << 30, &max_len)) return 2;
        } else if (!strcmp(a, "--threads")) {
            if (flag_int("embed", a, v, 1, 1024, &opt.threads)) return 2;
        } else if (!strcmp(a, "--max-batch-tokens")) {
            if (flag_int("embed", a, v, 1, 1 << 30, &opt.max_batch_tokens)) return 2;
        } else if (!strcmp(a, "--tensor-parallel")) {
            if (flag_int("embed", a, v, 1, 64, &opt.tensor_parallel)) return 2;
        } else if (!strcmp(a, "--shard")) {
            if (parse_shard(v, &shard_i, &shard_n)) return 2;
        } else if (!strcmp(a, "--task")) {
            if (strcmp(v, "embed")) {
                fprintf(stderr, "qembed embed: --task takes only embed here (qembed rerank "
                                "reranks)\n");
                return 2;
            }
            opt.task = QE_TASK_EMBED;
        } else {
            fprintf(stderr, "qembed embed: unknown option %s (see --help)\n", a);
            return 2;
        }
    }
    if (!opt.model_dir) {
        fprintf(stderr, "qembed embed: --model DIR is required\n");
        usage(stderr);
        return 2;
    }
    if (instruction && prompt_name) {
        fprintf(stderr, "qembed embed: give --instruction or --prompt-name, not both\n");
        return 2;
    }
    char err[512];
    qe_engine *e;
    qe_status st = qe_open(&opt, &e, err, sizeof err);
    if (st != QE_OK) {
        fprintf(stderr, "qembed embed: %s\n", err);
        return 1;
    }
    int rc = 1;
    cli_io io = {0};
    const tok_tokenizer *tok = qe_tokenizer(e);
    const char *prefix = NULL;
    if (qe_model_task(e) == QE_TASK_RERANK) {
        fprintf(stderr,
                "qembed embed: %s is a reranker (%s): score with qembed rerank, or embed anyway "
                "with --task embed\n",
                opt.model_dir, qe_task_reason(e));
        goto done;
    }
    if (dims == 0) dims = qe_dim(e);
    if (dims < 1 || dims > qe_dim(e)) {
        fprintf(stderr, "qembed embed: --dims %d out of range 1..%d\n", dims, qe_dim(e));
        goto done;
    }
    if (max_len <= 0 || max_len > qe_max_positions(e)) max_len = qe_max_positions(e);
    if (prompt_name) {
        prefix = tok ? tok_prompt(tok, prompt_name) : NULL;
        if (!prefix) {
            const int n = tok ? tok_prompt_count(tok) : 0;
            fprintf(stderr, "qembed embed: the model has no prompt named '%s' (%s", prompt_name,
                    n ? "it has" : "it has none: config_sentence_transformers.json names them");
            for (int i = 0; i < n; i++)
                fprintf(stderr, "%s %s", i ? "," : "", tok_prompt_name(tok, i));
            fprintf(stderr, "); --instruction TEXT gives one directly\n");
            goto done;
        }
    }
    if (cli_io_open(&io, "embed", in_path, out_path)) goto done;
    FILE *in = io.in, *out = io.out;
    seq seqs[LINES_PER_CALL];
    int n = 0, bad = 0;
    long lineno = 0, record = -1; /* records are the non-blank lines, counted from 0 */
    char *line = NULL;
    size_t cap = 0;
    for (ssize_t len; !bad && (len = getline(&line, &cap, in)) >= 0;) {
        lineno++;
        if (strspn(line, " \t\r\n") == (size_t)len) continue; /* blank line */
        if (++record % shard_n != shard_i) continue;          /* another shard's */
        if (parse_line(line, lineno, tok, prefix, instruction, max_len, &seqs[n])) {
            bad = 1;
            break;
        }
        seqs[n].index = record;
        if (++n == LINES_PER_CALL) {
            bad = flush(e, seqs, n, dims, out);
            n = 0;
        }
    }
    free(line);
    if (bad)
        for (int i = 0; i < n; i++)
            free(seqs[i].ids);
    else if (n)
        bad = flush(e, seqs, n, dims, out);
    rc = cli_io_close(&io, bad) ? 1 : 0;
done:
    cli_io_close(&io, 1); /* an early exit's streams; nothing after the close above */
    qe_close(e);
    return rc;
}
