/* bench_embed_ids.c — times qembed's embedding of a fixed JSONL of {"ids": [...]} lines, the
 * qembed half of compare.mjs: the model is opened (and converted) before the clock starts, as
 * llama.cpp's is, then the documents are embedded either packed into one call (--packed, how
 * `qembed embed` runs them) or one call per document (how llama.cpp's embedding context runs
 * them). Writes the unit vectors as JSONL and one JSON summary line on stdout.
 *
 *   bench_embed_ids --model DIR --input IDS.jsonl --output VEC.jsonl [--threads N] [--packed]
 *                   [--warmup N] [--iters N] */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/qembed.h"

enum { MAX_DOCS = 4096 };

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Reads up to MAX_DOCS lines of {"ids": [...]}; returns how many, or -1. */
static int read_ids(const char *path, int32_t **ids, int *lens) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int n = 0;
    size_t cap = 0;
    char *line = NULL;
    while (n < MAX_DOCS && getline(&line, &cap, f) > 0) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "ids");
        if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) == 0) {
            cJSON_Delete(j);
            continue;
        }
        lens[n] = cJSON_GetArraySize(a);
        ids[n] = malloc(sizeof(int32_t) * (size_t)lens[n]);
        int i = 0;
        for (const cJSON *v = a->child; v; v = v->next)
            ids[n][i++] = (int32_t)v->valuedouble;
        cJSON_Delete(j);
        n++;
    }
    free(line);
    fclose(f);
    return n;
}

/* One pass over the documents: one call, or one call per document. */
static int embed_all(qe_engine *e, int32_t **ids, const int *lens, int n, int packed, int dim,
                     float *out) {
    if (packed) return qe_embed_ids(e, (const int32_t *const *)ids, lens, n, 0, out) != QE_OK;
    for (int d = 0; d < n; d++)
        if (qe_embed_ids(e, (const int32_t *const *)&ids[d], &lens[d], 1, 0, out + (size_t)d * dim))
            return 1;
    return 0;
}

int main(int argc, char **argv) {
    const char *model = NULL, *input = NULL, *output = NULL;
    int threads = 0, packed = 0, warmup = 1, iters = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--packed"))
            packed = 1;
        else if (v && !strcmp(a, "--model"))
            model = v, i++;
        else if (v && !strcmp(a, "--input"))
            input = v, i++;
        else if (v && !strcmp(a, "--output"))
            output = v, i++;
        else if (v && !strcmp(a, "--threads"))
            threads = atoi(v), i++;
        else if (v && !strcmp(a, "--warmup"))
            warmup = atoi(v), i++;
        else if (v && !strcmp(a, "--iters"))
            iters = atoi(v), i++;
        else {
            fprintf(stderr, "usage: bench_embed_ids --model DIR --input IDS.jsonl --output "
                            "VEC.jsonl [--threads N] [--packed] [--warmup N] [--iters N]\n");
            return 2;
        }
    }
    static int32_t *ids[MAX_DOCS];
    static int lens[MAX_DOCS];
    const int n = model && input && output && iters > 0 ? read_ids(input, ids, lens) : -1;
    if (n <= 0) {
        fprintf(stderr, "bench_embed_ids: need --model, --output, iters > 0 and an --input of "
                        "{\"ids\"} lines\n");
        return 2;
    }
    long tokens = 0;
    for (int d = 0; d < n; d++)
        tokens += lens[d];

    qe_options opt = {.model_dir = model, .backend = QE_BACKEND_CPU, .threads = threads};
    qe_engine *e = NULL;
    char err[512];
    if (qe_open(&opt, &e, err, sizeof err) != QE_OK) {
        fprintf(stderr, "bench_embed_ids: %s\n", err);
        return 1;
    }
    const int dim = qe_dim(e);
    float *out = malloc(sizeof(float) * (size_t)n * dim);
    int rc = 0;
    for (int w = 0; w < warmup && !rc; w++) /* the first document: pages and caches warm */
        rc = embed_all(e, ids, lens, 1, 1, dim, out);
    double best = 1e30, total = 0;
    for (int it = 0; it < iters && !rc; it++) {
        const double t0 = now_s();
        rc = embed_all(e, ids, lens, n, packed, dim, out);
        const double t = now_s() - t0;
        total += t;
        best = t < best ? t : best;
    }
    if (rc) {
        fprintf(stderr, "bench_embed_ids: %s\n", qe_last_error(e));
    } else {
        FILE *f = fopen(output, "w");
        for (int d = 0; f && d < n; d++) {
            fprintf(f, "{\"index\": %d, \"embedding\": [", d);
            for (int i = 0; i < dim; i++)
                fprintf(f, "%s%.9g", i ? ", " : "", out[(size_t)d * dim + i]);
            fprintf(f, "]}\n");
        }
        if (f) fclose(f);
        printf("{\"docs\": %d, \"tokens\": %ld, \"mode\": \"%s\", \"iters\": %d, \"best_s\": %.4f, "
               "\"mean_s\": %.4f, \"tokens_per_s\": %.2f}\n",
               n, tokens, packed ? "packed" : "per-doc", iters, best, total / iters,
               (double)tokens / best);
    }
    free(out);
    for (int d = 0; d < n; d++)
        free(ids[d]);
    qe_close(e);
    return rc;
}
