/* bench_dp.c — see bench_dp.h. A round starts every engine's call together and ends when the last
 * returns, which is what a data-parallel server's throughput is made of; comparing its tokens per
 * second with one engine's gives the scaling efficiency. */
#include "bench_dp.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef struct dp_call {
    qe_engine *e;
    const int32_t *const *ids;
    const int *lens;
    int n, dims;
    float *out;
    qe_status st;
} dp_call;

static void *dp_main(void *p) {
    dp_call *c = p;
    c->st = qe_embed_ids(c->e, c->ids, c->lens, c->n, c->dims, c->out);
    return NULL;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int bench_dp_rounds(qe_engine *const *engines, int n_engines, const int32_t *const *ids,
                    const int *lens, int n_seqs, int dims, int warmup, int iters,
                    double *median_s) {
    dp_call *c = calloc((size_t)n_engines, sizeof *c);
    pthread_t *th = calloc((size_t)n_engines, sizeof *th);
    double *times = calloc((size_t)(iters > 0 ? iters : 1), sizeof *times);
    const int width = dims ? dims : qe_dim(engines[0]);
    int rc = c && th && times ? 0 : -1;
    for (int i = 0; rc == 0 && i < n_engines; i++) {
        c[i] = (dp_call){engines[i], ids, lens, n_seqs, dims, NULL, QE_OK};
        if (!(c[i].out = malloc(sizeof(float) * (size_t)n_seqs * (size_t)width))) rc = -1;
    }
    if (rc) fprintf(stderr, "qembed bench: out of host memory for --devices\n");
    for (int it = 0; rc == 0 && it < warmup + iters; it++) {
        const double t0 = now_s();
        int started = 0;
        for (; started < n_engines; started++)
            if (pthread_create(&th[started], NULL, dp_main, &c[started]) != 0) break;
        for (int i = 0; i < started; i++)
            pthread_join(th[i], NULL);
        const double dt = now_s() - t0;
        if (started < n_engines) {
            fprintf(stderr, "qembed bench: cannot start the engines' threads\n");
            rc = -1;
        }
        for (int i = 0; rc == 0 && i < n_engines; i++)
            if (c[i].st != QE_OK) {
                fprintf(stderr, "qembed bench: --devices: engine %d failed: %s\n", i,
                        qe_last_error(c[i].e));
                rc = -1;
            }
        if (rc == 0 && it >= warmup) times[it - warmup] = dt;
    }
    if (rc == 0 && iters > 0) {
        qsort(times, (size_t)iters, sizeof *times, cmp_double);
        *median_s = times[iters / 2];
    }
    for (int i = 0; c && i < n_engines; i++)
        free(c[i].out);
    free(c), free(th), free(times);
    return rc;
}
