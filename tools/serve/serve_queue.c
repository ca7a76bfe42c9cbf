/* serve_queue.c — the CPU side of the pipeline: a pool of tokenizer threads shared by every model,
 * and admission of tokenized jobs to their model's sequence queue (429 past --max-queue-tokens),
 * from which the model's engine threads take sequences into their schedulers between two steps
 * (serve_engine.c; the packing policy is the scheduler's, runtime/scheduler.h). /embed_all's
 * sequences are admitted the same way (an engine thread runs them per token). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "prompt_cut.h"
#include "serve_internal.h"
#include "tokenizer.h"

#define TOK_CHUNK                                                                                  \
    8 /* inputs per tokenizer task: small enough to spread one request over threads                \
       */

struct srv_tok_task {
    srv_job *job;
    int start, end;
    struct srv_tok_task *next;
};

void srv_seq_done(serve_server *s, srv_seq *q) {
    srv_job *j = q->job;
    if (atomic_fetch_sub(&j->seqs_left, 1) == 1) {
        pthread_mutex_lock(&j->time_mu);
        const int started = j->t_first_compute > 0;
        pthread_mutex_unlock(&j->time_mu);
        if (s) atomic_fetch_sub(started ? &j->m->jobs_running : &j->m->jobs_waiting, 1);
        srv_job_finish(j); /* no-op when the job already failed */
        srv_job_unref(j);  /* the queue's reference */
    }
}

static void tokenize_one(srv_job *j, int i) {
    if (j->rerank) { /* a document: the reranker's whole prompt */
        srv_rerank_tokenize(j, i);
        return;
    }
    /* A text behind an instruction or prompt is tokenized uncut and cut by prompt_cut, which
     * keeps the prompt whole and cuts the text only (the end token stays last either way): the
     * tokenizer's own cut would take the prompt's end along with the text on the right. */
    const int keep_prompt = j->truncate && j->prefix_lens && j->prefix_lens[i] > 0;
    tok_encode_opts o = {.add_special = 1,
                         .max_length = keep_prompt ? 0 : j->max_len,
                         .truncate_left = j->truncate_left,
                         .no_truncate = !j->truncate};
    char terr[256];
    srv_error e;
    const struct tok_tokenizer *tok = j->m->tok;
    tok_status st = tok_encode(tok, j->texts[i], j->text_lens[i], &o, &j->ids[i], &j->lens[i], terr,
                               sizeof terr);
    if (st == TOK_OK && keep_prompt &&
        prompt_cut(tok, j->ids[i], &j->lens[i], j->max_len, j->prefix_lens[i], j->truncate_left) !=
            0) {
        srv_err_set(&e, 413, "invalid_request_error", "input_too_long", "input",
                    "input %d: the instruction or prompt and the end token leave no room for the "
                    "text in the limit of %d tokens",
                    i, j->max_len);
        srv_job_fail(j, &e);
        return;
    }
    /* The tokenizer may know ids the model's embedding table lacks (the 4B and 8B configs say
     * vocab_size 151665 while <think> is 151667): refuse this input here, so the engine never
     * fails a whole batch of other clients' sequences because of it. */
    int bad = -1;
    for (int k = 0; st == TOK_OK && k < j->lens[i] && bad < 0; k++)
        if (j->ids[i][k] >= j->m->vocab) bad = k;
    if (bad >= 0) {
        srv_err_set(&e, 400, "invalid_request_error", "token_outside_model_vocabulary", "input",
                    "input %d: token %d (id %d) is outside the model's vocabulary of %d", i, bad,
                    j->ids[i][bad], j->m->vocab);
        srv_job_fail(j, &e);
        return;
    }
    if (st == TOK_OK && j->lens[i] > 0) return;
    if (st == TOK_ERR_TOO_LONG) {
        /* once more without the limit, to tell the client how long it is */
        tok_encode_opts full = {.add_special = 1};
        int32_t *ids = NULL;
        int n = -1;
        if (tok_encode(tok, j->texts[i], j->text_lens[i], &full, &ids, &n, terr, sizeof terr) !=
            TOK_OK)
            n = -1;
        free(ids);
        if (n >= 0)
            srv_err_set(
                &e, 413, "invalid_request_error", "input_too_long", "input",
                "input %d has %d tokens, more than the limit of %d tokens (set truncate: true "
                "to truncate)",
                i, n, j->max_len);
        else
            srv_err_set(&e, 413, "invalid_request_error", "input_too_long", "input",
                        "input %d is longer than the limit of %d tokens (set truncate: true to "
                        "truncate)",
                        i, j->max_len);
    } else if (st == TOK_ERR_UTF8) {
        srv_err_set(&e, 400, "invalid_request_error", "invalid_utf8", "input",
                    "input %d is not valid UTF-8", i);
    } else if (st == TOK_OK) {
        srv_err_set(&e, 400, "invalid_request_error", "empty_input", "input",
                    "input %d has no tokens", i);
    } else {
        srv_err_set(&e, 500, "server_error", "tokenizer_error", "input", "input %d: tokenizer: %s",
                    i, terr);
    }
    srv_job_fail(j, &e);
}

static void *tok_main(void *arg) {
    serve_server *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->tok_mu);
        while (!s->tok_stop && !s->tok_head)
            pthread_cond_wait(&s->tok_cv, &s->tok_mu);
        struct srv_tok_task *t = s->tok_head;
        if (!t) { /* stopping with nothing left */
            pthread_mutex_unlock(&s->tok_mu);
            return NULL;
        }
        s->tok_head = t->next;
        if (!s->tok_head) s->tok_tail = NULL;
        pthread_mutex_unlock(&s->tok_mu);

        srv_job *j = t->job;
        for (int i = t->start; i < t->end; i++) {
            int failed;
            pthread_mutex_lock(&j->mu);
            failed = j->done;
            pthread_mutex_unlock(&j->mu);
            if (failed || atomic_load(&j->cancelled) || s->tok_stop) break;
            if (j->texts) tokenize_one(j, i);
        }
        if (atomic_fetch_sub(&j->tok_chunks_left, 1) == 1) {
            int failed;
            pthread_mutex_lock(&j->mu);
            failed = j->done;
            pthread_mutex_unlock(&j->mu);
            if (!failed && atomic_load(&j->cancelled)) {
                srv_error e;
                srv_err_set(&e, 499, "invalid_request_error", "client_disconnected", "",
                            "the client closed the connection");
                srv_job_fail(j, &e);
            } else if (!failed) {
                if (s->tok_stop) {
                    srv_error e;
                    srv_err_set(&e, 503, "server_error", "shutting_down", "",
                                "the server is stopping");
                    srv_job_fail(j, &e);
                } else {
                    srv_admit(s, j);
                }
            }
        }
        srv_job_unref(j);
        free(t);
    }
}

/* Frees a list of tokenizer tasks that no thread took, with their job references. */
static void free_tasks(struct srv_tok_task *t) {
    while (t) {
        struct srv_tok_task *next = t->next;
        srv_job_unref(t->job);
        free(t);
        t = next;
    }
}

void srv_submit(serve_server *s, srv_job *j) {
    if (!j->texts) {
        srv_admit(s, j);
        return;
    }
    int chunks = (j->n + TOK_CHUNK - 1) / TOK_CHUNK;
    struct srv_tok_task *head = NULL, *tail = NULL;
    for (int c = 0; c < chunks; c++) {
        struct srv_tok_task *t = calloc(1, sizeof *t);
        if (!t) {
            free_tasks(head);
            srv_error e;
            srv_err_oom(&e);
            srv_job_fail(j, &e);
            return;
        }
        srv_job_ref(j);
        t->job = j;
        t->start = c * TOK_CHUNK;
        t->end = t->start + TOK_CHUNK < j->n ? t->start + TOK_CHUNK : j->n;
        if (tail)
            tail->next = t;
        else
            head = t;
        tail = t;
    }
    atomic_store(&j->tok_chunks_left, chunks);
    pthread_mutex_lock(&s->tok_mu);
    if (s->tok_stop) { /* no tokenizer thread will take it */
        pthread_mutex_unlock(&s->tok_mu);
        free_tasks(head);
        srv_error e;
        srv_err_set(&e, 503, "server_error", "shutting_down", "", "the server is stopping");
        srv_job_fail(j, &e);
        return;
    }
    if (s->tok_tail)
        s->tok_tail->next = head;
    else
        s->tok_head = head;
    s->tok_tail = tail;
    pthread_cond_broadcast(&s->tok_cv);
    pthread_mutex_unlock(&s->tok_mu);
}

void srv_admit(serve_server *s, srv_job *j) {
    srv_model *m = j->m;
    srv_error e;
    long total = 0;
    for (int i = 0; i < j->n; i++)
        total += j->lens[i];
    j->prompt_tokens = total;
    j->out = malloc((size_t)j->n * (size_t)j->dims * sizeof(float));
    if (j->route == ROUTE_EMBED_ALL) /* per-token rows, filled by the engine thread */
        j->tok_out = calloc((size_t)j->n, sizeof *j->tok_out);
    if (!j->out || (j->route == ROUTE_EMBED_ALL && !j->tok_out)) {
        srv_err_oom(&e);
        srv_job_fail(j, &e);
        return;
    }
    pthread_mutex_lock(&m->q_mu);
    int st = atomic_load(&s->state);
    if (m->q_stop || (st != SERVE_READY && st != SERVE_DRAINING)) {
        pthread_mutex_unlock(&m->q_mu);
        srv_err_set(&e, 503, "server_error", st == SERVE_FAULT ? "device_fault" : "unavailable", "",
                    st == SERVE_FAULT
                        ? "the engine had a device fault; this server no longer embeds"
                        : "the server is not accepting work");
        srv_job_fail(j, &e);
        return;
    }
    double cost = 0;
    for (int i = 0; i < j->n; i++)
        cost += j->seqs[i].cost = qe_cost_tokens(m->engine, j->lens[i]);
    const double limit = (double)s->cfg.max_queue_tokens;
    if (cost > limit) { /* could never fit: retrying is pointless */
        pthread_mutex_unlock(&m->q_mu);
        srv_err_set(&e, 413, "invalid_request_error", "request_too_large", "input",
                    "this request weighs %.0f token-equivalents (%ld tokens; a long input weighs "
                    "more, see qembed serve --help), more than the server queues at once (%ld, "
                    "--max-queue-tokens); send fewer or shorter inputs per request",
                    cost, total, s->cfg.max_queue_tokens);
        srv_job_fail(j, &e);
        return;
    }
    if (m->inflight_cost + cost > limit) {
        const double queued = m->inflight_cost;
        /* the wait until enough of what is queued has run, at the rate measured so far */
        const double rate = m->engine_seconds > 0.5 ? m->cost_done / m->engine_seconds : 0;
        const double wait = rate > 0 ? (queued + cost - limit) / rate : 1;
        pthread_mutex_unlock(&m->q_mu);
        srv_err_set(
            &e, 429, "rate_limit_error", "queue_full", "",
            "the queue is full: %.0f token-equivalents queued, this request adds %.0f, the limit "
            "is %ld; retry in about %.0f s",
            queued, cost, s->cfg.max_queue_tokens, wait < 1 ? 1 : wait);
        e.retry_after = wait < 1 ? 1 : wait > 3600 ? 3600 : (int)(wait + 0.999);
        srv_job_fail(j, &e);
        return;
    }
    srv_job_ref(j); /* the queue's reference, released by the last srv_seq_done */
    j->t_queued = srv_now();
    for (int i = 0; i < j->n; i++) {
        srv_seq *q = &j->seqs[i];
        q->next = NULL;
        if (m->q_tail)
            m->q_tail->next = q;
        else
            m->q_head = q;
        m->q_tail = q;
    }
    m->q_seqs += j->n;
    m->q_tokens += total;
    m->inflight_tokens += total;
    m->inflight_cost += cost;
    atomic_fetch_add(&m->jobs_waiting, 1);
    pthread_cond_broadcast(&m->q_cv);
    pthread_mutex_unlock(&m->q_mu);
}

srv_seq *srv_take_queue(srv_model *m, long max_tokens, srv_seq **dropped) {
    srv_seq *live = NULL, **live_tail = &live, **drop_tail = dropped;
    *dropped = NULL;
    long taken = 0;
    while (m->q_head && (taken == 0 || taken < max_tokens)) {
        srv_seq *q = m->q_head;
        const int len = q->job->lens[q->index];
        m->q_head = q->next;
        q->next = NULL;
        m->q_seqs--;
        m->q_tokens -= len;
        if (atomic_load(&q->job->cancelled)) {
            m->inflight_tokens -= len;
            m->inflight_cost -= q->cost;
            *drop_tail = q, drop_tail = &q->next;
        } else {
            *live_tail = q, live_tail = &q->next;
            taken += len;
        }
    }
    if (!m->q_head) m->q_tail = NULL;
    return live;
}

int srv_pipeline_start(serve_server *s) {
    s->n_tok_threads = s->cfg.tokenizer_threads > 0 ? s->cfg.tokenizer_threads : 2;
    s->tok_threads = calloc((size_t)s->n_tok_threads, sizeof *s->tok_threads);
    if (!s->tok_threads) return -1;
    int started = 0;
    for (; started < s->n_tok_threads; started++)
        if (pthread_create(&s->tok_threads[started], NULL, tok_main, s) != 0) break;
    s->n_tok_threads = started;
    s->pipeline_started = 1; /* srv_pipeline_stop joins what started, whatever fails next */
    if (started == 0) return -1;
    for (int i = 0; i < s->n_models; i++)
        for (int r = 0; r < s->models[i].n_replicas; r++) {
            srv_replica *rp = &s->models[i].replicas[r];
            if (pthread_create(&rp->thread, NULL, srv_engine_main, rp) != 0) return -1;
            rp->started = 1;
        }
    return 0;
}

/* Stops one model's engine threads; whatever is still in its queue is answered 503. */
static void stop_engine(serve_server *s, srv_model *m) {
    pthread_mutex_lock(&m->q_mu);
    m->q_stop = 1;
    pthread_cond_broadcast(&m->q_cv);
    pthread_mutex_unlock(&m->q_mu);
    for (int r = 0; r < m->n_replicas; r++)
        if (m->replicas[r].started) {
            pthread_join(m->replicas[r].thread, NULL);
            m->replicas[r].started = 0;
        }
    srv_error e;
    srv_err_set(&e, 503, "server_error", "shutting_down", "", "the server is stopping");
    /* what the engine thread did not take (it answered what it held) */
    while (m->q_head) {
        srv_seq *q = m->q_head;
        m->q_head = q->next;
        srv_job_fail(q->job, &e);
        srv_seq_done(s, q);
    }
    m->q_tail = NULL;
}

/* Stops every pipeline thread; whatever is still queued is answered 503. */
void srv_pipeline_stop(serve_server *s) {
    pthread_mutex_lock(&s->tok_mu);
    s->tok_stop = 1;
    pthread_cond_broadcast(&s->tok_cv);
    pthread_mutex_unlock(&s->tok_mu);
    for (int i = 0; i < s->n_tok_threads; i++)
        pthread_join(s->tok_threads[i], NULL);
    free(s->tok_threads);
    s->tok_threads = NULL;
    s->n_tok_threads = 0;
    for (int i = 0; i < s->n_models; i++)
        stop_engine(s, &s->models[i]);
    s->pipeline_started = 0;
}
