/* serve_engine.c — the engine thread: takes each batch the former packed, runs the engine on it
 * at full width without normalising, and scatters the rows into their jobs (Matryoshka cut and
 * L2 normalisation per job, since one engine call mixes requests asking for different
 * `dimensions` and `normalize`). A device fault turns the server's health to 503 for good. The
 * engine call stops at its next step when every client of the batch has gone or the server
 * cancels running work. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve_internal.h"

static void scatter(const float *row, int width, srv_job *j, int index) {
    (void)width;
    float *dst = j->out + (size_t)index * j->dims;
    double ss = 0;
    for (int k = 0; k < j->dims; k++)
        ss += (double)row[k] * row[k];
    /* the same arithmetic as the engine's own pooling, so vectors match qe_embed_ids bit for bit */
    double inv = !j->normalize ? 1.0 : ss > 0 ? 1.0 / sqrt(ss) : 0.0;
    for (int k = 0; k < j->dims; k++)
        dst[k] = (float)(row[k] * inv);
}

/* The engine call's stop function (qe_embed_ids_stoppable), polled at every step and chunk
 * boundary: the call ends there when the server cancels running work (a drain that timed out)
 * or when every client of the batch has gone, so a departed client's long document stops within
 * a step instead of running all its chunks. */
typedef struct batch_watch {
    serve_server *s;
    const srv_batch *b;
    int live;
} batch_watch;

static int batch_should_stop(void *ctx) {
    const batch_watch *w = ctx;
    if (atomic_load(&w->s->cancel_running)) return 1;
    for (int i = 0; i < w->live; i++)
        if (!atomic_load(&w->b->seqs[i]->job->cancelled)) return 0;
    return 1;
}

void *srv_engine_main(void *arg) {
    serve_server *s = arg;
    const int32_t **ids = NULL;
    int *lens = NULL;
    float *out = NULL;
    size_t cap = 0, out_cap = 0;
    unsigned long batch_counter = 0;
    for (;;) {
        pthread_mutex_lock(&s->q_mu);
        while (!s->q_stop && s->slot.n == 0)
            pthread_cond_wait(&s->q_cv, &s->q_mu);
        if (s->slot.n == 0 || s->q_stop) { /* srv_pipeline_stop answers what is left */
            pthread_mutex_unlock(&s->q_mu);
            break;
        }
        srv_batch b = s->slot;
        unsigned long batch_no = ++batch_counter;
        memset(&s->slot, 0, sizeof s->slot);
        s->engine_busy = 1;
        pthread_cond_broadcast(&s->q_cv); /* the former may pack the next batch meanwhile */
        pthread_mutex_unlock(&s->q_mu);

        /* A client that left while its sequences waited costs no engine time: its sequences move
         * behind the live ones and are only released. */
        int live = 0, dropped = 0;
        for (int i = 0; i < b.n; i++)
            if (!atomic_load(&b.seqs[i]->job->cancelled)) {
                srv_seq *t = b.seqs[live];
                b.seqs[live++] = b.seqs[i];
                b.seqs[i] = t;
            }
        dropped = b.n - live;

        srv_error e = {0};
        int ok = 0, stopped = 0;
        double t0 = srv_now(), t1 = t0;
        if ((size_t)b.n > cap) {
            cap = (size_t)b.n * 2;
            const int32_t **ni = realloc(ids, cap * sizeof *ids);
            if (ni) ids = ni;
            int *nl = realloc(lens, cap * sizeof *lens);
            if (nl) lens = nl;
            if (!ni || !nl) cap = 0;
        }
        size_t need = (size_t)b.n * (size_t)s->width;
        if (need > out_cap) {
            float *no = realloc(out, need * sizeof *out);
            if (no) {
                out = no;
                out_cap = need;
            }
        }
        if (atomic_load(&s->state) == SERVE_FAULT) {
            srv_err_set(&e, 503, "server_error", "device_fault", "",
                        "the engine had a device fault; this server no longer embeds");
        } else if ((size_t)b.n > cap || need > out_cap) {
            srv_err_oom(&e);
        } else {
            for (int i = 0; i < live; i++) {
                ids[i] = b.seqs[i]->job->ids[b.seqs[i]->index];
                lens[i] = b.seqs[i]->job->lens[b.seqs[i]->index];
            }
            batch_watch watch = {s, &b, live};
            qe_status st = live ? qe_embed_ids_stoppable(s->engine, ids, lens, live, 0, 0, out,
                                                         batch_should_stop, &watch)
                                : QE_OK;
            t1 = srv_now();
            if (st == QE_OK) {
                ok = 1;
            } else if (st == QE_ERR_CANCELLED) {
                stopped = live;
                srv_err_set(&e, 503, "server_error", "cancelled", "",
                            "the server stopped this work: shutting down, or the client left");
            } else if (st == QE_ERR_DEVICE) {
                atomic_store(&s->state, SERVE_FAULT);
                fprintf(stderr, "qembed serve: device fault: %s; /health now answers 503\n",
                        qe_last_error(s->engine));
                srv_err_set(&e, 503, "server_error", "device_fault", "", "device fault: %.300s",
                            qe_last_error(s->engine));
            } else {
                srv_err_set(&e, st == QE_ERR_ARG || st == QE_ERR_TOO_LONG ? 400 : 500,
                            st == QE_ERR_ARG || st == QE_ERR_TOO_LONG ? "invalid_request_error"
                                                                      : "server_error",
                            "engine_error", "", "engine: %s: %.300s", qe_status_name(st),
                            qe_last_error(s->engine));
            }
        }
        for (int i = 0; i < b.n; i++) {
            srv_seq *q = b.seqs[i];
            srv_job *j = q->job;
            if (i >= live) continue; /* dropped above: nothing was computed for it */
            if (ok) {
                if (!atomic_load(&j->cancelled))
                    scatter(out + (size_t)i * s->width, s->width, j, q->index);
                pthread_mutex_lock(&j->time_mu);
                if (j->t_first_compute == 0) j->t_first_compute = t0;
                if (j->last_batch != batch_no) {
                    j->last_batch = batch_no;
                    j->compute_s += t1 - t0;
                }
                pthread_mutex_unlock(&j->time_mu);
            } else {
                srv_job_fail(j, &e);
            }
        }
        long live_tokens = 0;
        for (int i = 0; i < live; i++)
            live_tokens += b.seqs[i]->job->lens[b.seqs[i]->index];
        ok = ok && live > 0; /* an all-dropped batch is no engine call */
        pthread_mutex_lock(&s->metrics.mu);
        s->metrics.cancelled_seqs += (unsigned long)(dropped + stopped);
        if (ok) {
            s->metrics.tokens_processed += (unsigned long)live_tokens;
            s->metrics.sequences_processed += (unsigned long)live;
            s->metrics.batches++;
        }
        pthread_mutex_unlock(&s->metrics.mu);
        if (ok) {
            srv_hist_observe(&s->metrics, &s->metrics.batch_size, live);
            srv_hist_observe(&s->metrics, &s->metrics.batch_tokens, (double)live_tokens);
            srv_hist_observe(&s->metrics, &s->metrics.t_inference, t1 - t0);
        }
        pthread_mutex_lock(&s->q_mu);
        s->inflight_tokens -= b.tokens;
        s->engine_busy = 0;
        pthread_mutex_unlock(&s->q_mu);
        for (int i = 0; i < b.n; i++)
            srv_seq_done(s, b.seqs[i]);
        free(b.seqs);
    }
    free(ids);
    free(lens);
    free(out);
    return NULL;
}
