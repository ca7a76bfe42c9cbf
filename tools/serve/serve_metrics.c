/* serve_metrics.c — Prometheus text exposition: requests by route and status, failures by reason,
 * queue gauges, batch size / tokens and stage-duration histograms, tokens processed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve_internal.h"

static void hist_init(srv_hist *h, const double *bounds, int n) {
    memset(h, 0, sizeof *h);
    h->n = n;
    memcpy(h->bounds, bounds, (size_t)n * sizeof *bounds);
}

void srv_metrics_init(srv_metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    static const double secs[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                  0.25,   0.5,   1,      2.5,   5,    10,    30,   60};
    static const double sizes[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096};
    static const double toks[] = {16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072};
    const int ns = (int)(sizeof secs / sizeof secs[0]);
    hist_init(&m->batch_size, sizes, (int)(sizeof sizes / sizeof sizes[0]));
    hist_init(&m->batch_tokens, toks, (int)(sizeof toks / sizeof toks[0]));
    hist_init(&m->t_tokenize, secs, ns);
    hist_init(&m->t_queue, secs, ns);
    hist_init(&m->t_inference, secs, ns);
    hist_init(&m->t_total, secs, ns);
    hist_init(&m->t_req_inference, secs, ns);
    hist_init(&m->input_length, toks, (int)(sizeof toks / sizeof toks[0]));
}

/* TEI's err label of a failure (core/src/infer.rs, router/src/http/server.rs). */
static const char *te_err(const srv_error *e) {
    const char *code = e->code ? e->code : "";
    if (e->status == 499) return "dropped";
    if (!strcmp(code, "too_many_inputs")) return "batch_size";
    if (e->status == 429) return "overloaded";
    if (!strcmp(code, "tokenizer_error") || !strcmp(code, "tokenization_failed"))
        return "tokenization";
    if (e->status == 503) return "unhealthy";
    if (e->status >= 500) return "inference";
    return "validation";
}

void srv_metrics_te_request(srv_metrics *m, int n_inputs, int status, const srv_error *err) {
    const int batch = n_inputs > 1;
    pthread_mutex_lock(&m->mu);
    m->te_count[batch]++;
    if (status == 200) m->te_success[batch]++;
    if (status >= 400 && err) {
        const char *why = te_err(err);
        int k;
        for (k = 0; k < m->n_te_fail; k++)
            if (!strcmp(m->te_fail[k].err, why)) break;
        if (k == m->n_te_fail && m->n_te_fail < SRV_MAX_REASONS) {
            snprintf(m->te_fail[k].err, sizeof m->te_fail[k].err, "%s", why);
            m->te_fail[k].count = 0;
            m->n_te_fail++;
        }
        if (k < m->n_te_fail) m->te_fail[k].count++;
    }
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_free(srv_metrics *m) {
    pthread_mutex_destroy(&m->mu);
}

void srv_metrics_request(srv_metrics *m, const char *route, int status, const char *fail_reason) {
    pthread_mutex_lock(&m->mu);
    int i;
    for (i = 0; i < m->n_req; i++)
        if (m->req[i].status == status && !strcmp(m->req[i].route, route)) break;
    if (i == m->n_req && m->n_req < (int)(sizeof m->req / sizeof m->req[0])) {
        snprintf(m->req[i].route, sizeof m->req[i].route, "%s", route);
        m->req[i].status = status;
        m->req[i].count = 0;
        m->n_req++;
    }
    if (i < m->n_req) m->req[i].count++;
    if (fail_reason) {
        int k;
        for (k = 0; k < m->n_fail; k++)
            if (!strcmp(m->fail[k].reason, fail_reason)) break;
        if (k == m->n_fail && m->n_fail < SRV_MAX_REASONS) {
            snprintf(m->fail[k].reason, sizeof m->fail[k].reason, "%s", fail_reason);
            m->fail[k].count = 0;
            m->n_fail++;
        }
        if (k < m->n_fail) m->fail[k].count++;
    }
    pthread_mutex_unlock(&m->mu);
}

void srv_hist_observe(srv_metrics *m, srv_hist *h, double v) {
    pthread_mutex_lock(&m->mu);
    int i = 0;
    while (i < h->n && v > h->bounds[i])
        i++;
    h->counts[i]++;
    h->sum += v;
    h->total++;
    pthread_mutex_unlock(&m->mu);
}

static void put_hist(sbuf *b, const char *name, const char *help, const srv_hist *h) {
    sb_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    unsigned long cum = 0;
    for (int i = 0; i < h->n; i++) {
        cum += h->counts[i];
        sb_printf(b, "%s_bucket{le=\"%g\"} %lu\n", name, h->bounds[i], cum);
    }
    cum += h->counts[h->n];
    sb_printf(b, "%s_bucket{le=\"+Inf\"} %lu\n%s_sum %.6f\n%s_count %lu\n", name, cum, name, h->sum,
              name, h->total);
}

/* TEI's names for the same measurements (what TEI dashboards and autoscalers query), and the
 * gauges Kubernetes inference routers read with vLLM's meaning. Caller holds m->mu. */
/* The gauges summed over the models (the fullest queue for the 429 budget). */
typedef struct srv_totals {
    long waiting, running, q_seqs, q_tokens, inflight;
    int busy, kv_pool, kv_used;
    double max_cost;
    size_t device_bytes;
} srv_totals;

static void totals(serve_server *s, srv_totals *t) {
    memset(t, 0, sizeof *t);
    /* the engines are only settled once the server is ready */
    const int ready = atomic_load(&s->state) == SERVE_READY;
    for (int i = 0; i < s->n_models; i++) {
        srv_model *m = &s->models[i];
        t->waiting += atomic_load(&m->jobs_waiting);
        t->running += atomic_load(&m->jobs_running);
        pthread_mutex_lock(&m->q_mu);
        t->q_seqs += m->q_seqs;
        t->q_tokens += m->q_tokens;
        t->inflight += m->inflight_tokens;
        for (int r = 0; r < m->n_replicas; r++) {
            t->busy += m->replicas[r].busy;
            t->kv_used += m->replicas[r].kv_used_tokens;
        }
        if (m->inflight_cost > t->max_cost) t->max_cost = m->inflight_cost;
        pthread_mutex_unlock(&m->q_mu);
        for (int r = 0; ready && r < m->n_replicas; r++)
            if (m->replicas[r].engine) {
                t->kv_pool += qe_kv_pool_tokens(m->replicas[r].engine);
                t->device_bytes += qe_device_bytes(m->replicas[r].engine);
            }
    }
}

static void put_te(sbuf *b, serve_server *s, const srv_metrics *m) {
    static const char *method[2] = {"single", "batch"};
    sb_puts(b, "# HELP te_request_count Embedding requests received, by method (single: one "
               "input).\n# TYPE te_request_count counter\n");
    for (int k = 0; k < 2; k++)
        sb_printf(b, "te_request_count{method=\"%s\"} %lu\n", method[k], m->te_count[k]);
    sb_puts(b, "# HELP te_request_success Embedding requests answered 200.\n"
               "# TYPE te_request_success counter\n");
    for (int k = 0; k < 2; k++)
        sb_printf(b, "te_request_success{method=\"%s\"} %lu\n", method[k], m->te_success[k]);
    sb_puts(b, "# HELP te_request_failure Failed embedding requests by TEI's err label.\n"
               "# TYPE te_request_failure counter\n");
    for (int k = 0; k < m->n_te_fail; k++)
        sb_printf(b, "te_request_failure{err=\"%s\"} %lu\n", m->te_fail[k].err,
                  m->te_fail[k].count);
    put_hist(b, "te_request_duration", "Total time per request (seconds).", &m->t_total);
    put_hist(b, "te_request_tokenization_duration", "Tokenization time per request (seconds).",
             &m->t_tokenize);
    put_hist(b, "te_request_queue_duration", "Queue time per request (seconds).", &m->t_queue);
    put_hist(b, "te_request_inference_duration", "Engine time per request (seconds).",
             &m->t_req_inference);
    put_hist(b, "te_request_input_length", "Tokens per request.", &m->input_length);
    put_hist(b, "te_embed_duration", "Total time per embedding request (seconds).", &m->t_total);
    put_hist(b, "te_embed_tokenization_duration", "Tokenization time per embedding request.",
             &m->t_tokenize);
    put_hist(b, "te_embed_queue_duration", "Queue time per embedding request.", &m->t_queue);
    put_hist(b, "te_embed_inference_duration", "Engine time per embedding request.",
             &m->t_req_inference);
    put_hist(b, "te_batch_next_size", "Sequences per engine step.", &m->batch_size);
    put_hist(b, "te_batch_next_tokens", "Tokens per engine step.", &m->batch_tokens);
    put_hist(b, "te_batch_inference_duration", "Engine time per step (seconds).", &m->t_inference);
    srv_totals t;
    totals(s, &t);
    sb_printf(b,
              "# HELP te_queue_size Embedding requests admitted and waiting for their first "
              "step.\n# TYPE te_queue_size gauge\nte_queue_size %ld\n"
              "# HELP qembed:num_requests_waiting Requests admitted, not yet in an engine step "
              "(vLLM's meaning).\n# TYPE qembed:num_requests_waiting gauge\n"
              "qembed:num_requests_waiting %ld\n"
              "# HELP qembed:num_requests_running Requests whose sequences are being computed.\n"
              "# TYPE qembed:num_requests_running gauge\nqembed:num_requests_running %ld\n"
              "# HELP qembed:kv_cache_usage_perc Fraction (0..1) of the paged K/V pools held by "
              "long inputs in flight; 0 without a pool.\n"
              "# TYPE qembed:kv_cache_usage_perc gauge\nqembed:kv_cache_usage_perc %.6f\n"
              "# HELP qembed:queue_budget_usage_perc Fraction (0..1) of --max-queue-tokens in "
              "use in the fullest model's queue (past 1 a request gets 429).\n"
              "# TYPE qembed:queue_budget_usage_perc gauge\nqembed:queue_budget_usage_perc %.6f\n",
              t.waiting, t.waiting, t.running, t.kv_pool > 0 ? (double)t.kv_used / t.kv_pool : 0.0,
              t.max_cost / (double)s->cfg.max_queue_tokens);
}

/* Each engine (data parallel: one per --devices entry), by model, replica and device. */
static void put_per_replica(sbuf *b, serve_server *s) {
    static const char *const names[] = {"qembed_replica_up", "qembed_replica_busy",
                                        "qembed_replica_steps_total"};
    static const char *const help[] = {
        "1 while the engine is in rotation, 0 once a device fault took it out.",
        "1 while the engine computes a step.", "Steps the engine ran."};
    static const char *const types[] = {"gauge", "gauge", "counter"};
    for (int g = 0; g < 3; g++) {
        sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", names[g], help[g], names[g], types[g]);
        for (int i = 0; i < s->n_models; i++) {
            srv_model *md = &s->models[i];
            for (int r = 0; r < md->n_replicas; r++) {
                pthread_mutex_lock(&md->q_mu);
                const srv_replica *rp = &md->replicas[r];
                const unsigned long v = g == 0   ? (unsigned long)!rp->dead
                                        : g == 1 ? (unsigned long)rp->busy
                                                 : rp->steps;
                pthread_mutex_unlock(&md->q_mu);
                sb_printf(b, "%s{model=", names[g]);
                sb_json_string(b, md->served_name, strlen(md->served_name));
                sb_printf(b, ",replica=\"%d\",device=\"%d\"} %lu\n", r, rp->device, v);
            }
        }
    }
}

/* One gauge per model, labelled with its served name. */
static void put_per_model(sbuf *b, serve_server *s) {
    static const char *const names[] = {
        "qembed_model_requests_waiting", "qembed_model_requests_running",
        "qembed_model_queue_tokens", "qembed_model_kv_used_tokens", "qembed_model_replicas_up"};
    static const char *const help[] = {
        "Requests admitted to the model, not yet in a step.",
        "Requests whose sequences the model is computing.",
        "Tokens queued or computing on the model.", "K/V pool tokens the model's long inputs hold.",
        "The model's engines in rotation (not taken out by a device fault)."};
    for (int g = 0; g < 5; g++) {
        sb_printf(b, "# HELP %s %s\n# TYPE %s gauge\n", names[g], help[g], names[g]);
        for (int i = 0; i < s->n_models; i++) {
            srv_model *md = &s->models[i];
            pthread_mutex_lock(&md->q_mu);
            long kv = 0;
            for (int r = 0; r < md->n_replicas; r++)
                kv += md->replicas[r].kv_used_tokens;
            const long v = g == 0   ? atomic_load(&md->jobs_waiting)
                           : g == 1 ? atomic_load(&md->jobs_running)
                           : g == 2 ? md->inflight_tokens
                           : g == 3 ? kv
                                    : srv_replicas_up(md);
            pthread_mutex_unlock(&md->q_mu);
            sb_printf(b, "%s{model=", names[g]);
            sb_json_string(b, md->served_name, strlen(md->served_name));
            sb_printf(b, "} %ld\n", v);
        }
    }
    put_per_replica(b, s);
}

char *srv_metrics_render(serve_server *s, size_t *len) {
    sbuf b = {0};
    srv_totals t;
    totals(s, &t);
    long active;
    pthread_mutex_lock(&s->state_mu);
    active = s->active_requests;
    pthread_mutex_unlock(&s->state_mu);

    srv_metrics *m = &s->metrics;
    pthread_mutex_lock(&m->mu);
    sb_puts(&b, "# HELP qembed_requests_total HTTP requests answered, by route and status.\n"
                "# TYPE qembed_requests_total counter\n");
    for (int i = 0; i < m->n_req; i++)
        sb_printf(&b, "qembed_requests_total{route=\"%s\",status=\"%d\"} %lu\n", m->req[i].route,
                  m->req[i].status, m->req[i].count);
    sb_puts(&b, "# HELP qembed_request_failures_total Failed requests by reason.\n"
                "# TYPE qembed_request_failures_total counter\n");
    for (int i = 0; i < m->n_fail; i++)
        sb_printf(&b, "qembed_request_failures_total{reason=\"%s\"} %lu\n", m->fail[i].reason,
                  m->fail[i].count);
    sb_printf(
        &b,
        "# HELP qembed_up 1 when the engine answers (ready), else 0.\n# TYPE qembed_up gauge\n"
        "qembed_up %d\n"
        "# HELP qembed_requests_in_flight Accepted requests not yet answered.\n"
        "# TYPE qembed_requests_in_flight gauge\nqembed_requests_in_flight %ld\n"
        "# HELP qembed_queue_sequences Sequences waiting for a batch.\n"
        "# TYPE qembed_queue_sequences gauge\nqembed_queue_sequences %ld\n"
        "# HELP qembed_queue_tokens Tokens waiting for a batch.\n"
        "# TYPE qembed_queue_tokens gauge\nqembed_queue_tokens %ld\n"
        "# HELP qembed_inflight_tokens Tokens queued or computing (bounded by "
        "--max-queue-tokens).\n"
        "# TYPE qembed_inflight_tokens gauge\nqembed_inflight_tokens %ld\n"
        "# HELP qembed_engine_busy Engines computing a step now.\n"
        "# TYPE qembed_engine_busy gauge\nqembed_engine_busy %d\n"
        "# HELP qembed_tokens_processed_total Tokens embedded.\n"
        "# TYPE qembed_tokens_processed_total counter\nqembed_tokens_processed_total %lu\n"
        "# HELP qembed_sequences_processed_total Sequences embedded.\n"
        "# TYPE qembed_sequences_processed_total counter\nqembed_sequences_processed_total %lu\n"
        "# HELP qembed_batches_total Engine steps.\n"
        "# TYPE qembed_batches_total counter\nqembed_batches_total %lu\n"
        "# HELP qembed_cancelled_sequences_total Sequences dropped because the client left "
        "(queued, "
        "or stopped at a step boundary), or stopped by a shutdown.\n"
        "# TYPE qembed_cancelled_sequences_total counter\nqembed_cancelled_sequences_total %lu\n"
        "# HELP qembed_inputs_total Inputs received in embedding requests.\n"
        "# TYPE qembed_inputs_total counter\nqembed_inputs_total %lu\n"
        "# HELP qembed_prompt_tokens_total Prompt tokens of answered embedding requests.\n"
        "# TYPE qembed_prompt_tokens_total counter\nqembed_prompt_tokens_total %lu\n",
        atomic_load(&s->state) == SERVE_READY, active, t.q_seqs, t.q_tokens, t.inflight, t.busy,
        m->tokens_processed, m->sequences_processed, m->batches, m->cancelled_seqs, m->inputs_total,
        m->prompt_tokens_total);
    sb_printf(&b,
              "# HELP qembed_gpu_memory_bytes Device memory the engine holds (weights + "
              "activations); 0 on the CPU backend.\n# TYPE qembed_gpu_memory_bytes gauge\n"
              "qembed_gpu_memory_bytes %zu\n"
              "# HELP qembed_kv_pool_tokens Tokens the paged K/V pool holds for long inputs.\n"
              "# TYPE qembed_kv_pool_tokens gauge\nqembed_kv_pool_tokens %d\n"
              "# HELP qembed_kv_pool_used_tokens Pool tokens held by long inputs in flight (after "
              "the last step).\n"
              "# TYPE qembed_kv_pool_used_tokens gauge\nqembed_kv_pool_used_tokens %d\n",
              t.device_bytes, t.kv_pool, t.kv_used);
    put_per_model(&b, s);
    put_hist(&b, "qembed_batch_size", "Sequences (whole, or chunks) per engine step.",
             &m->batch_size);
    put_hist(&b, "qembed_batch_tokens", "Tokens per engine step.", &m->batch_tokens);
    put_hist(&b, "qembed_tokenization_duration_seconds", "Parse and tokenization time per request.",
             &m->t_tokenize);
    put_hist(&b, "qembed_queue_duration_seconds", "Time from admission to the first engine step.",
             &m->t_queue);
    put_hist(&b, "qembed_inference_duration_seconds", "Engine time per step.", &m->t_inference);
    put_hist(&b, "qembed_request_duration_seconds", "Total time per embedding request.",
             &m->t_total);
    put_te(&b, s, m);
    pthread_mutex_unlock(&m->mu);
    return sb_take(&b, len);
}
