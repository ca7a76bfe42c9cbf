/* bench_tokenizer.c — tokenizer throughput on the benchmark corpus: one thread, then all
 * threads. Each timed pass runs in fresh threads so the per-thread word caches start cold; the
 * id total is checked against the reference (1,394,989 with the appended end token).
 *   bench_tokenizer [corpus.jsonl] [model_dir] */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tokenizer.h"

#define REPS 5
#define EXPECT_IDS 1394989L

typedef struct {
    const tok_tokenizer *t;
    char **texts;
    size_t *lens;
    int n;
    atomic_int next;
    atomic_long ids;
    atomic_int failed;
} pass;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *worker(void *arg) {
    pass *p = arg;
    long ids_total = 0;
    for (int i; (i = atomic_fetch_add(&p->next, 16)) < p->n;) {
        for (int k = i; k < i + 16 && k < p->n; k++) {
            int32_t *ids;
            int n;
            char err[256];
            if (tok_encode(p->t, p->texts[k], p->lens[k], NULL, &ids, &n, err, sizeof err) !=
                TOK_OK) {
                fprintf(stderr, "doc %d: %s\n", k, err);
                atomic_store(&p->failed, 1);
                continue;
            }
            ids_total += n;
            free(ids);
        }
    }
    atomic_fetch_add(&p->ids, ids_total);
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median seconds over REPS passes with n_threads fresh threads; *ids gets the id total. */
static double run(pass *p, int n_threads, long *ids) {
    double times[REPS];
    pthread_t th[256];
    for (int r = 0; r < REPS; r++) {
        atomic_store(&p->next, 0);
        atomic_store(&p->ids, 0);
        double t0 = now_s();
        for (int k = 0; k < n_threads; k++)
            pthread_create(&th[k], NULL, worker, p);
        for (int k = 0; k < n_threads; k++)
            pthread_join(th[k], NULL);
        times[r] = now_s() - t0;
        *ids = atomic_load(&p->ids);
    }
    qsort(times, REPS, sizeof times[0], cmp_double);
    return times[REPS / 2];
}

int main(int argc, char **argv) {
    const char *corpus = argc > 1 ? argv[1] : QE_SHARED_DIR "/bench/corpus.jsonl";
    const char *model = argc > 2 ? argv[2] : QE_SHARED_DIR "/fixtures/tiny-qwen3-embed";
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: bench_tokenizer [corpus.jsonl] [model_dir]\n");
        return 0;
    }
    char err[512];
    tok_tokenizer *t;
    double t0 = now_s();
    if (tok_load(model, &t, err, sizeof err) != TOK_OK) {
        fprintf(stderr, "bench_tokenizer: %s\n", err);
        return 1;
    }
    double load_s = now_s() - t0;
    FILE *f = fopen(corpus, "rb");
    if (!f) {
        fprintf(stderr, "bench_tokenizer: cannot open %s\n", corpus);
        return 1;
    }
    pass p = {.t = t};
    int cap = 0;
    size_t bytes = 0;
    char *line = NULL;
    size_t line_cap = 0;
    for (ssize_t got; (got = getline(&line, &line_cap, f)) > 0;) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(j, "text");
        if (!cJSON_IsString(text)) {
            fprintf(stderr, "bench_tokenizer: line %d has no \"text\"\n", p.n + 1);
            return 1;
        }
        if (p.n == cap) {
            cap = cap ? 2 * cap : 1024;
            p.texts = realloc(p.texts, (size_t)cap * sizeof *p.texts);
            p.lens = realloc(p.lens, (size_t)cap * sizeof *p.lens);
        }
        p.texts[p.n] = strdup(text->valuestring);
        p.lens[p.n] = strlen(text->valuestring);
        bytes += p.lens[p.n++];
        cJSON_Delete(j);
    }
    free(line);
    fclose(f);
    int cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1) cores = 1;
    if (cores > 256) cores = 256;
    printf("corpus %s: %d docs, %.2f MB; tokenizer loaded in %.0f ms\n", corpus, p.n,
           (double)bytes / 1e6, load_s * 1e3);
    int ok = 1;
    int threads[2] = {1, cores};
    for (int k = 0; k < (cores > 1 ? 2 : 1); k++) {
        long ids = 0;
        double s = run(&p, threads[k], &ids);
        printf("%3d thread%s: %7.2f MB/s  %10.0f tokens/s  %8.0f docs/s  (%ld ids, median of %d)\n",
               threads[k], threads[k] > 1 ? "s" : " ", (double)bytes / 1e6 / s, (double)ids / s,
               p.n / s, ids, REPS);
        if (argc <= 1 && ids != EXPECT_IDS) {
            printf("FAIL: %ld ids, the reference gives %ld\n", ids, EXPECT_IDS);
            ok = 0;
        }
    }
    if (atomic_load(&p.failed)) ok = 0;
    if (argc <= 1 && ok) printf("id total matches the reference (%ld)\n", EXPECT_IDS);
    for (int i = 0; i < p.n; i++)
        free(p.texts[i]);
    free(p.texts);
    free(p.lens);
    tok_free(t);
    return ok ? 0 : 1;
}
