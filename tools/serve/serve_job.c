/* serve_job.c — the job one embedding request becomes: reference counted, because the HTTP thread,
 * the tokenizer pool and queued sequences each hold it, and a client may leave at any point. */
#include <stdlib.h>
#include <string.h>

#include "serve_internal.h"

srv_job *srv_job_new(int n) {
    srv_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    atomic_init(&j->refs, 1);
    atomic_init(&j->cancelled, 0);
    atomic_init(&j->tok_chunks_left, 0);
    atomic_init(&j->seqs_left, n);
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    pthread_mutex_init(&j->time_mu, NULL);
    j->n = n;
    j->ids = calloc((size_t)n, sizeof *j->ids);
    j->lens = calloc((size_t)n, sizeof *j->lens);
    j->seqs = calloc((size_t)n, sizeof *j->seqs);
    if (!j->ids || !j->lens || !j->seqs) {
        srv_job_unref(j);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        j->seqs[i].job = j;
        j->seqs[i].index = i;
    }
    return j;
}

void srv_job_ref(srv_job *j) {
    atomic_fetch_add(&j->refs, 1);
}

void srv_job_unref(srv_job *j) {
    if (!j || atomic_fetch_sub(&j->refs, 1) != 1) return;
    for (int i = 0; i < j->n; i++) {
        free(j->ids ? j->ids[i] : NULL);
        free(j->texts ? j->texts[i] : NULL);
        free(j->tok_out ? j->tok_out[i] : NULL);
    }
    free(j->tok_out);
    free(j->query);
    free(j->instruction);
    free(j->prefix_lens);
    free(j->ids);
    free(j->lens);
    free(j->texts);
    free(j->text_lens);
    free(j->seqs);
    free(j->out);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->time_mu);
    free(j);
}

/* Marks the job done (with e, or successful when e is NULL) unless it already is, and wakes its
 * waiter: a thread on the condition variable or the suspended HTTP connection. */
static void complete(srv_job *j, const srv_error *e) {
    pthread_mutex_lock(&j->mu);
    if (!j->done) {
        if (e) j->err = *e;
        j->done = 1;
        j->t_done = srv_now();
        pthread_cond_broadcast(&j->cv);
        if (j->notify_armed) {
            j->notify_armed = 0;
            j->notify(j->notify_arg);
        }
    }
    pthread_mutex_unlock(&j->mu);
}

void srv_job_fail(srv_job *j, const srv_error *e) {
    complete(j, e);
}

void srv_job_finish(srv_job *j) {
    complete(j, NULL);
}
