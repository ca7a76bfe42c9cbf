/* cmd_tokenize.c — `qembed tokenize`: JSONL {"text": ...} in, JSONL {"ids": [...]} out in input
 * order, tokenized on several threads; throughput goes to stderr. Bad JSON, a missing "text" or
 * invalid UTF-8 stops with the line number and a non-zero exit. */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli_io.h"
#include "commands.h"
#include "flags.h"
#include "json_strict.h"
#include "gguf_tokenizer.h"
#include "tokenizer.h"
#include "weights/model.h"

#define BATCH_LINES 8192

typedef struct {
    char *line; /* input, NUL-terminated */
    size_t len;
    long line_no;
    char *out; /* formatted output line, or NULL (blank input line) */
    char *error;
    size_t text_bytes;
    int n_ids;
} job;

typedef struct {
    const tok_tokenizer *t;
    tok_encode_opts opts;
    job *jobs;
    int n;
    atomic_int next;
} batch;

static void usage(FILE *f) {
    fprintf(f, "usage: qembed tokenize --model DIR|FILE.gguf [options]\n"
               "  reads JSONL lines {\"text\": ...} and writes {\"ids\": [...]} in the same order\n"
               "  --model DIR        model folder with tokenizer.json, or a .gguf file (required)\n"
               "  --no-special       do not append the end token (<|endoftext|>)\n"
               "  --threads N        worker threads (default: all cores)\n"
               "  --max-length N     truncate to N ids, end token kept (default: no limit)\n"
               "  --input FILE|-     input JSONL (default: stdin)\n"
               "  --output FILE|-    output JSONL (default: stdout)\n"
               "  throughput (MB/s, tokens/s, docs) is printed to stderr\n");
}

static char *dup_printf(const char *fmt, const char *a, const char *b) {
    size_t n = strlen(fmt) + strlen(a) + strlen(b) + 1;
    char *s = malloc(n);
    if (s) snprintf(s, n, fmt, a, b);
    return s;
}

/* Finds the top-level "text" value in a line cJSON accepted and decodes it exactly. */
static char *exact_text(const char *line, size_t *len) {
    int depth = 0;
    for (const char *p = line; *p; p++) {
        if (*p == '{' || *p == '[')
            depth++;
        else if (*p == '}' || *p == ']')
            depth--;
        else if (*p == '"') {
            const char *start = p + 1;
            for (p++; *p && *p != '"'; p++)
                if (*p == '\\' && p[1]) p++;
            if (!*p) return NULL;
            const char *q = p + 1;
            while (*q == ' ' || *q == '\t')
                q++;
            if (depth == 1 && *q == ':' && p - start == 4 && !memcmp(start, "text", 4)) {
                q++;
                while (*q == ' ' || *q == '\t')
                    q++;
                if (*q != '"') return NULL;
                char *out = malloc(strlen(q) + 1);
                if (out) *len = json_unescape_string(q + 1, out);
                return out;
            }
        }
    }
    return NULL;
}

static void run_job(const batch *b, job *j) {
    const char *s = j->line;
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
        s++;
    if (!*s) return;       /* blank line: nothing to write */
    const char *at = NULL; /* cJSON_GetErrorPtr is a global: not safe across threads */
    cJSON *root = cJSON_ParseWithLengthOpts(j->line, j->len, &at, 0);
    if (root && at && at < j->line + j->len &&
        at[strspn(at, " \t\r\n")] != 0) { /* more after the value */
        cJSON_Delete(root);
        root = NULL;
    }
    if (!root) {
        char where[32] = "";
        if (at && at >= j->line && at <= j->line + j->len)
            snprintf(where, sizeof where, "%ld", (long)(at - j->line) + 1);
        j->error = dup_printf("not valid JSON%s%s", where[0] ? " near column " : "", where);
        return;
    }
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(root, "text");
    if (!cJSON_IsObject(root) || !cJSON_IsString(text)) {
        j->error = dup_printf("%s%s", "no string field \"text\"", "");
        cJSON_Delete(root);
        return;
    }
    size_t len = strlen(text->valuestring);
    char *exact = NULL;
    if (strstr(j->line, "\\u0000")) exact = exact_text(j->line, &len);
    int32_t *ids = NULL;
    int n = 0;
    char err[256] = "";
    tok_status st = tok_encode(b->t, exact ? exact : text->valuestring, len, &b->opts, &ids, &n,
                               err, sizeof err);
    free(exact);
    cJSON_Delete(root);
    if (st != TOK_OK) {
        j->error = dup_printf("%s%s", err, "");
        return;
    }
    j->text_bytes = len;
    j->n_ids = n;
    char *out = malloc(16 + 12 * (size_t)n), *o = out;
    if (!out) {
        free(ids);
        j->error = dup_printf("%s%s", "out of memory", "");
        return;
    }
    o += sprintf(o, "{\"ids\": [");
    for (int i = 0; i < n; i++)
        o += sprintf(o, i ? ", %d" : "%d", ids[i]);
    strcpy(o, "]}\n");
    free(ids);
    j->out = out;
}

static void *worker(void *arg) {
    batch *b = arg;
    for (int i; (i = atomic_fetch_add(&b->next, 1)) < b->n;)
        run_job(b, &b->jobs[i]);
    return NULL;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *in_path = "-", *out_path = "-";
    int threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    tok_encode_opts opts = {1, 0, 0, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_value = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--no-special")) {
            opts.add_special = 0;
        } else if (!strcmp(a, "--model") && has_value) {
            model = argv[++i];
        } else if (!strcmp(a, "--input") && has_value) {
            in_path = argv[++i];
        } else if (!strcmp(a, "--output") && has_value) {
            out_path = argv[++i];
        } else if (!strcmp(a, "--threads") && has_value) {
            if (flag_int("tokenize", a, argv[++i], 1, 1 << 30, &threads)) return 2;
        } else if (!strcmp(a, "--max-length") && has_value) {
            if (flag_int("tokenize", a, argv[++i], 1, 1 << 30, &opts.max_length)) return 2;
        } else {
            fprintf(stderr, "qembed tokenize: unknown or incomplete option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!model) {
        fprintf(stderr, "qembed tokenize: --model DIR is required\n");
        usage(stderr);
        return 2;
    }
    if (threads < 1) threads = 1;
    if (threads > 256) threads = 256;
    char err[512];
    tok_tokenizer *t = NULL;
    if (model_is_gguf(model)) { /* the tokenizer a GGUF file carries */
        gguf_file *g = NULL;
        const int bad = gguf_open(model, &g, err, sizeof err) ||
                        gguf_load_tokenizer(g, model, &t, err, sizeof err) != TOK_OK;
        gguf_close(g);
        if (bad) {
            fprintf(stderr, "qembed tokenize: %s\n", err);
            return 1;
        }
    } else if (tok_load(model, &t, err, sizeof err) != TOK_OK) {
        fprintf(stderr, "qembed tokenize: %s\n", err);
        return 1;
    }
    cli_io io;
    if (cli_io_open(&io, "tokenize", in_path, out_path)) {
        tok_free(t);
        return 1;
    }
    FILE *in = io.in, *out = io.out;
    batch b = {.t = t, .opts = opts, .jobs = calloc(BATCH_LINES, sizeof(job))};
    pthread_t th[256];
    long line_no = 0, docs = 0, tokens = 0;
    size_t text_bytes = 0;
    int rc = b.jobs ? 0 : 1;
    double t0 = now_s();
    char *line = NULL;
    size_t cap = 0;
    ssize_t got = 0;
    while (rc == 0 && got >= 0) {
        b.n = 0;
        while (b.n < BATCH_LINES && (got = getline(&line, &cap, in)) >= 0) {
            job *j = &b.jobs[b.n++];
            memset(j, 0, sizeof *j);
            j->line = line; /* take the buffer; getline allocates a new one */
            j->len = (size_t)got;
            j->line_no = ++line_no;
            line = NULL;
            cap = 0;
        }
        atomic_store(&b.next, 0);
        int nt = threads < b.n ? threads : b.n;
        for (int k = 1; k < nt; k++)
            pthread_create(&th[k], NULL, worker, &b);
        if (nt > 0) worker(&b);
        for (int k = 1; k < nt; k++)
            pthread_join(th[k], NULL);
        for (int i = 0; i < b.n; i++) {
            job *j = &b.jobs[i];
            if (rc == 0 && j->error) {
                fprintf(stderr, "qembed tokenize: %s line %ld: %s\n",
                        strcmp(in_path, "-") ? in_path : "<stdin>", j->line_no, j->error);
                rc = 1;
            }
            if (rc == 0 && j->out) {
                fputs(j->out, out);
                docs++;
                tokens += j->n_ids;
                text_bytes += j->text_bytes;
            }
            free(j->line);
            free(j->out);
            free(j->error);
        }
    }
    free(line);
    double dt = now_s() - t0;
    rc = cli_io_close(&io, rc) ? 1 : 0;
    if (rc == 0)
        fprintf(stderr,
                "qembed tokenize: %ld docs, %ld tokens, %.2f MB of text in %.3f s: %.2f MB/s, "
                "%.0f tokens/s (%d threads)\n",
                docs, tokens, (double)text_bytes / 1e6, dt, (double)text_bytes / 1e6 / dt,
                (double)tokens / dt, threads);
    free(b.jobs);
    tok_free(t);
    return rc;
}
