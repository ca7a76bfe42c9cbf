/* serve_engine.c — the engine threads, one per replica of a model (data parallel: one engine per
 * --devices entry, all fed by the model's one queue). Between two steps a thread moves queued
 * sequences into its engine's scheduler (qe_sched, runtime/scheduler.h), then runs one step, so
 * the short sequences of later requests join the very next step between the chunks of long
 * documents. A model with one engine takes the whole queue each time; with several, an engine
 * takes about a step's worth of tokens whenever it is free, so the others get the rest. Vectors
 * come back at full width without normalising and are scattered into their jobs (Matryoshka cut
 * and L2 normalisation per job, since one step mixes requests asking for different `dimensions`
 * and `normalize`; a rerank job keeps the logit). Before every step the scheduler drops the
 * sequences of clients that left (a long document's pages come back at once) and, after
 * serve_cancel_running, everything.
 *
 * A device fault takes the replica out of rotation: the sequences of the failed step and every
 * other one it held go back to the head of the queue for the others, and its thread ends. When
 * a model has no replica left, the server faults (/health 503 for good).
 *
 * /embed_all's sequences (per-token vectors) come through the same queue, so they count in the
 * 429 budget and the waiting and running gauges like any other, but run here between two steps
 * as one qe_embed_tokens call each: the scheduler's steps pool a vector per sequence, and the
 * per-token rows are the residual hook's. A long one needs K/V pages for all its tokens while the
 * scheduler's long documents hold theirs: it then waits, first in line among the long work (the
 * long sequences that come after it are held back until it ran; short ones still join every
 * step), while the scheduler's steps run the pages free. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "serve_internal.h"

static void scatter(const float *row, srv_job *j, int index) {
    if (j->rerank) { /* a document's relevance: the logit of the hidden state */
        j->out[index] = qe_rerank_logit(j->m->engine, row);
        return;
    }
    float *dst = j->out + (size_t)index * j->dims;
    double ss = 0;
    for (int k = 0; k < j->dims; k++)
        ss += (double)row[k] * row[k];
    /* the same arithmetic as the engine's own pooling, so vectors match qe_embed_ids bit for bit */
    double inv = !j->normalize ? 1.0 : ss > 0 ? 1.0 / sqrt(ss) : 0.0;
    for (int k = 0; k < j->dims; k++)
        dst[k] = (float)(row[k] * inv);
}

static int seq_len(const srv_seq *q) {
    return q->job->lens[q->index];
}

/* A sequence leaves the engine: its tokens leave the in-flight count (the 429 budget) and the
 * replica's share. */
static void seq_leaves(srv_replica *r, srv_seq *q) {
    srv_model *m = r->m;
    pthread_mutex_lock(&m->q_mu);
    m->inflight_tokens -= seq_len(q);
    m->inflight_cost -= q->cost;
    r->pending_tokens -= seq_len(q);
    pthread_mutex_unlock(&m->q_mu);
    srv_seq_done(m->s, q);
}

/* Back to the head of the queue, for another replica (this one faulted). 0 when the server is
 * stopping or no replica is left: the caller answers it. */
static int requeue(srv_replica *r, srv_seq *q) {
    srv_model *m = r->m;
    pthread_mutex_lock(&m->q_mu);
    const int ok = !m->q_stop && srv_replicas_up(m) > 0 && !atomic_load(&m->s->cancel_running);
    if (ok) {
        r->pending_tokens -= seq_len(q);
        q->next = m->q_head;
        m->q_head = q;
        if (!m->q_tail) m->q_tail = q;
        m->q_seqs++;
        m->q_tokens += seq_len(q);
        pthread_cond_broadcast(&m->q_cv);
    }
    pthread_mutex_unlock(&m->q_mu);
    return ok;
}

/* A device fault on r: out of rotation (once). Returns the replicas the model has left. */
static int replica_faulted(srv_replica *r) {
    srv_model *m = r->m;
    pthread_mutex_lock(&m->q_mu);
    const int first = !r->dead;
    r->dead = 1;
    const int left = srv_replicas_up(m);
    pthread_mutex_unlock(&m->q_mu);
    if (first && left > 0)
        fprintf(stderr,
                "qembed serve: %s: device fault on replica %d (device %d): %s; %d replica%s "
                "left, its work goes to them\n",
                m->served_name, r->index, r->device, qe_last_error(r->engine), left,
                left == 1 ? "" : "s");
    /* no engine left: the server faults now, before the failed step's requests are answered */
    if (left == 0 && atomic_exchange(&m->s->state, SERVE_FAULT) != SERVE_FAULT)
        fprintf(stderr, "qembed serve: device fault: %s; /health now answers 503\n",
                qe_last_error(r->engine));
    return left;
}

/* A sequence computed (a pooled vector, or /embed_all's rows, in secs of its own): its cost and
 * time go to the rate that predicts a queue's wait, its tokens to the metrics, and it leaves. */
static void seq_computed(srv_replica *r, srv_seq *q, double secs) {
    srv_model *m = r->m;
    serve_server *s = m->s;
    pthread_mutex_lock(&m->q_mu);
    m->cost_done += q->cost;
    m->engine_seconds += secs;
    pthread_mutex_unlock(&m->q_mu);
    pthread_mutex_lock(&s->metrics.mu);
    s->metrics.tokens_processed += (unsigned long)seq_len(q);
    s->metrics.sequences_processed++;
    pthread_mutex_unlock(&s->metrics.mu);
    seq_leaves(r, q);
}

static void on_done(void *ctx, void *tag, const float *vec) {
    srv_seq *q = tag;
    if (!atomic_load(&q->job->cancelled)) scatter(vec, q->job, q->index);
    seq_computed(ctx, q, 0); /* the step's seconds are counted once, by the engine loop */
}

static int on_drop(void *ctx, void *tag) {
    const serve_server *s = ((const srv_replica *)ctx)->m->s;
    const srv_seq *q = tag;
    return atomic_load(&s->cancel_running) || atomic_load(&s->state) == SERVE_FAULT ||
           atomic_load(&q->job->cancelled);
}

/* A sequence that gets no vector here: its client left (nothing to answer), or the server
 * cancelled it, or its step failed; a device fault sends it to another replica when one is
 * left. */
static void on_gone(void *ctx, void *tag, qe_status why) {
    srv_replica *r = ctx;
    srv_model *m = r->m;
    serve_server *s = m->s;
    srv_seq *q = tag;
    srv_job *j = q->job;
    if (!atomic_load(&j->cancelled) && (why == QE_ERR_DEVICE || r->dead) &&
        replica_faulted(r) > 0 && requeue(r, q))
        return; /* retried on another replica */
    srv_error e = {0};
    if (atomic_load(&j->cancelled)) {
        /* the client is gone: nothing to answer */
    } else if (atomic_load(&s->state) == SERVE_FAULT || why == QE_ERR_DEVICE) {
        srv_err_set(&e, 503, "server_error", "device_fault", "",
                    "the engine had a device fault; this server no longer embeds");
    } else if (why == QE_ERR_CANCELLED) {
        srv_err_set(&e, 503, "server_error", "cancelled", "",
                    "the server stopped this work: shutting down, or the client left");
    } else {
        const int client = why == QE_ERR_ARG || why == QE_ERR_TOO_LONG;
        srv_err_set(&e, client ? 400 : 500, client ? "invalid_request_error" : "server_error",
                    "engine_error", "", "engine: %s: %.300s", qe_status_name(why),
                    qe_last_error(r->engine));
    }
    if (e.status) srv_job_fail(j, &e);
    pthread_mutex_lock(&s->metrics.mu);
    s->metrics.cancelled_seqs += why == QE_ERR_CANCELLED;
    pthread_mutex_unlock(&s->metrics.mu);
    seq_leaves(r, q);
}

/* Charges a step's time to the job once per step (several of its sequences may share one). */
static void on_ran(void *ctx, void *tag, double step_s) {
    srv_replica *r = ctx;
    srv_model *m = r->m;
    const unsigned long step_no = r->step_id;
    srv_job *j = ((srv_seq *)tag)->job;
    pthread_mutex_lock(&j->time_mu);
    if (j->t_first_compute == 0) { /* waiting -> running */
        j->t_first_compute = srv_now() - step_s;
        atomic_fetch_sub(&m->jobs_waiting, 1);
        atomic_fetch_add(&m->jobs_running, 1);
    }
    if (j->last_batch != step_no) {
        j->last_batch = step_no;
        j->compute_s += step_s;
    }
    pthread_mutex_unlock(&j->time_mu);
}

/* A new step of r (caller holds m->q_mu): numbered across the model's replicas, so a job whose
 * sequences run on two of them is charged each step once. */
static void begin_step(srv_replica *r) {
    r->step_id = ++r->m->steps;
    r->steps++;
}

/* /embed_all's sequences taken from the queue, in arrival order; the first may wait for pages. */
typedef struct tok_list {
    srv_seq *head, *tail;
} tok_list;

/* Runs the first per-token sequence of l; 0 when it must wait for K/V pages the scheduler's
 * sequences hold (it stays first), 1 when it left the list (answered, failed or sent to another
 * replica). */
static int run_tokens(srv_replica *r, qe_sched *sc, tok_list *l) {
    srv_model *m = r->m;
    srv_seq *q = l->head;
    srv_job *j = q->job;
    if (on_drop(r, q)) {
        l->head = q->next;
        on_gone(r, q, QE_ERR_CANCELLED);
        return 1;
    }
    const int len = seq_len(q);
    pthread_mutex_lock(&m->q_mu);
    begin_step(r); /* a step of its own, for on_ran's charge */
    pthread_mutex_unlock(&m->q_mu);
    float *rows = malloc((size_t)len * (size_t)j->width * sizeof(float));
    const double t0 = srv_now();
    qe_status st = rows ? qe_embed_tokens(r->engine, j->ids[q->index], len, rows) : QE_ERR_NOMEM;
    const double secs = srv_now() - t0;
    if (rows && st == QE_ERR_NOMEM && qe_sched_waiting(sc) > 0) {
        free(rows); /* pages taken: the scheduler's next steps give them back */
        return 0;
    }
    l->head = q->next;
    if (st == QE_ERR_DEVICE) {
        free(rows);
        on_gone(r, q, st);
        return 1;
    }
    if (st != QE_OK) {
        free(rows);
        srv_error e;
        if (!rows)
            srv_err_oom(&e);
        else
            srv_err_set(&e,
                        st == QE_ERR_TOO_LONG ? 413
                        : st == QE_ERR_ARG    ? 400
                                              : 500,
                        st == QE_ERR_ARG || st == QE_ERR_TOO_LONG ? "invalid_request_error"
                                                                  : "server_error",
                        "engine_error", "inputs", "input %d: %s: %.300s", q->index,
                        qe_status_name(st), qe_last_error(r->engine));
        srv_job_fail(j, &e);
        seq_leaves(r, q);
        return 1;
    }
    j->tok_out[q->index] = rows; /* freed with the job */
    on_ran(r, q, secs);
    seq_computed(r, q, secs);
    return 1;
}

static void list_push(tok_list *l, srv_seq *q) {
    q->next = NULL;
    if (l->head)
        l->tail->next = q;
    else
        l->head = q;
    l->tail = q;
}

/* Into the scheduler: the new work joins the next step. One the engine refuses (too long for its
 * pool and its steps) fails its job with 413. */
static void into_sched(srv_replica *r, qe_sched *sc, srv_seq *q) {
    srv_job *j = q->job;
    qe_status st = qe_sched_add(sc, j->ids[q->index], seq_len(q), q);
    if (st == QE_OK) return;
    srv_error e;
    srv_err_set(&e, st == QE_ERR_TOO_LONG ? 413 : 400, "invalid_request_error",
                st == QE_ERR_TOO_LONG ? "input_too_long" : "engine_error", "input",
                "input %d: %.300s", q->index, qe_last_error(r->engine));
    srv_job_fail(j, &e);
    seq_leaves(r, q);
}

/* What r may take from the queue now (caller holds q_mu): everything when it is the model's only
 * engine; else the tokens that fill its next step, so the other replicas get the rest. */
static long take_limit(const srv_replica *r) {
    if (r->m->n_replicas == 1) return LONG_MAX;
    return r->m->s->cfg.max_batch_tokens - r->pending_tokens;
}

/* Moves queued sequences on (caller holds q_mu, released meanwhile): /embed_all's to tl, the rest
 * into the scheduler, except, while hold_long, those long enough to need K/V pages, which wait
 * in held (a waiting /embed_all came first; short ones never take pages, so they still join the
 * next step). Those of clients that left are only released. */
static void take_queue(srv_replica *r, qe_sched *sc, tok_list *tl, tok_list *held, int hold_long) {
    srv_model *m = r->m;
    serve_server *s = m->s;
    srv_seq *dropped = NULL, *live = srv_take_queue(m, take_limit(r), &dropped);
    for (srv_seq *q = live; q; q = q->next)
        r->pending_tokens += seq_len(q);
    pthread_mutex_unlock(&m->q_mu);
    for (srv_seq *q = live, *next; q; q = next) {
        next = q->next;
        if (q->job->route == ROUTE_EMBED_ALL)
            list_push(tl, q);
        else if (hold_long && seq_len(q) > s->cfg.max_batch_tokens / 2)
            list_push(held, q);
        else
            into_sched(r, sc, q);
    }
    unsigned long n_dropped = 0;
    for (srv_seq *q = dropped, *next; q; q = next, n_dropped++) {
        next = q->next;
        srv_seq_done(s, q);
    }
    if (n_dropped) {
        pthread_mutex_lock(&s->metrics.mu);
        s->metrics.cancelled_seqs += n_dropped;
        pthread_mutex_unlock(&s->metrics.mu);
    }
    pthread_mutex_lock(&m->q_mu);
}

/* Every sequence of l leaves as gone: answered 503 on the stop path, retried elsewhere when r
 * faulted. */
static void list_gone(srv_replica *r, tok_list *l) {
    while (l->head) {
        srv_seq *q = l->head;
        l->head = q->next;
        on_gone(r, q, QE_ERR_CANCELLED);
    }
}

void *srv_engine_main(void *arg) {
    srv_replica *r = arg;
    srv_model *m = r->m;
    serve_server *s = m->s;
    qe_sched *sc = NULL;
    if (qe_sched_open(r->engine, 0, 0, &sc) != QE_OK) {
        fprintf(stderr, "qembed serve: %s: cannot open the scheduler of replica %d: %s\n",
                m->served_name, r->index, qe_last_error(r->engine));
        return NULL; /* srv_pipeline_stop answers what is queued */
    }
    const qe_sched_hooks hooks = {
        .done = on_done, .drop = on_drop, .gone = on_gone, .ran = on_ran, .ctx = r};
    tok_list tl = {0}, held = {0};
    int tok_waits = 0; /* the first of tl waits for pages: long sequences behind it are held */
    pthread_mutex_lock(&m->q_mu);
    for (;;) {
        /* a faulted replica leaves while others are left (the last one stays: the FAULT state
         * then drops and answers whatever comes) */
        while (!m->q_stop && !(r->dead && srv_replicas_up(m) > 0) &&
               !(m->q_head && take_limit(r) > 0) && qe_sched_waiting(sc) == 0 && !tl.head)
            pthread_cond_wait(&m->q_cv, &m->q_mu);
        if (m->q_stop || (r->dead && srv_replicas_up(m) > 0))
            break; /* what we hold is answered, or retried, below */
        if (m->q_head && take_limit(r) > 0) take_queue(r, sc, &tl, &held, tok_waits);
        if (tl.head || held.head) {
            pthread_mutex_unlock(&m->q_mu);
            while (tl.head && run_tokens(r, sc, &tl)) {
            }
            tok_waits = tl.head != NULL;
            while (!tok_waits && held.head) { /* in arrival order, behind the /embed_all */
                srv_seq *q = held.head;
                held.head = q->next;
                into_sched(r, sc, q);
            }
            pthread_mutex_lock(&m->q_mu);
        }
        if ((r->dead && srv_replicas_up(m) > 0) || qe_sched_waiting(sc) == 0) continue;
        r->busy = 1;
        begin_step(r);
        pthread_mutex_unlock(&m->q_mu);

        qe_sched_stats st;
        qe_status status = qe_sched_step(sc, &hooks, &st);
        if (status == QE_ERR_DEVICE) replica_faulted(r);   /* once; the sequences went in gone() */
        if (status != QE_OK && st.seqs == 0) usleep(1000); /* nothing could run: no spinning */
        pthread_mutex_lock(&s->metrics.mu);
        s->metrics.batches += status == QE_OK && st.seqs > 0;
        pthread_mutex_unlock(&s->metrics.mu);
        if (status == QE_OK && st.seqs > 0) {
            srv_hist_observe(&s->metrics, &s->metrics.batch_size, st.seqs);
            srv_hist_observe(&s->metrics, &s->metrics.batch_tokens, st.tokens);
            srv_hist_observe(&s->metrics, &s->metrics.t_inference, st.seconds);
        }
        pthread_mutex_lock(&m->q_mu);
        r->busy = 0;
        r->kv_used_tokens = st.kv_used_tokens;
        if (status == QE_OK) m->engine_seconds += st.seconds;
    }
    pthread_mutex_unlock(&m->q_mu);
    list_gone(r, &tl);
    list_gone(r, &held);
    qe_sched_close(sc, &hooks); /* gone() answers each with 503, or retries it elsewhere */
    return NULL;
}
