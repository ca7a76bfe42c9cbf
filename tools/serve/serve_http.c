/* serve_http.c — the HTTP front: libmicrohttpd routes, auth, body limits, and the hand-off to the
 * pipeline.
 *
 * Threading choice: MHD's internal thread pool (one epoll loop per worker) with suspend/resume. An
 * embedding request is parsed and validated on the worker, handed to the tokenizer pool, and its
 * connection suspended (MHD_suspend_connection); when the job is answered, whichever pipeline
 * thread finished it calls MHD_resume_connection, and MHD calls the handler again on the worker,
 * which serialises the response there (never on the engine thread). Workers therefore never block:
 * a few of them serve any number of waiting clients, and one slow request never holds up another
 * connection of the same worker (the head-of-line blocking that blocking waits in a pool have).
 * The resume is issued under the job's mutex after the suspend, so it can never come first.
 * MHD does not watch a suspended socket, so a watcher thread polls the sockets of suspended
 * requests for POLLRDHUP every 50 ms and marks a departed client's job cancelled: the engine's
 * scheduler drops its sequences before the next step, and the connection is closed once the job
 * settles. */
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "serve_internal.h"

typedef struct srv_req {
    unsigned long id;
    srv_job *job; /* the embedding job, once submitted */
    int fd;       /* the connection's socket, for the watcher */
    int watched;  /* in the watcher's list (under watch_mu) */
    struct srv_req *wprev, *wnext;
    srv_route route;
    char label[24]; /* metrics route label */
    char method[8];
    int counted; /* in active_requests (body complete before a drain began) */
    int too_big;
    int close_after; /* answer with "Connection: close" (the body was not read) */
    int has_early;   /* an answer decided on the head (401, 413), sent once the body is drained */
    srv_error early; /* that answer */
    size_t drained;  /* body bytes read and dropped */
    sbuf body;
    int status;
    int n_inputs;
    long tokens;
    double t_start, queue_ms, compute_ms;
    int cancelled;
} srv_req;

static const char *route_label(const char *url) {
    if (!strcmp(url, "/v1/embeddings")) return "/v1/embeddings";
    if (!strcmp(url, "/")) return "/"; /* TEI's root: what its clients post to */
    if (!strcmp(url, "/embed")) return "/embed";
    if (!strcmp(url, "/embed_all")) return "/embed_all";
    if (!strcmp(url, "/similarity")) return "/similarity";
    if (!strcmp(url, "/rerank")) return "/rerank";
    if (!strcmp(url, "/v1/rerank")) return "/v1/rerank";
    if (!strcmp(url, "/v2/rerank")) return "/v2/rerank";
    if (!strcmp(url, "/health/live")) return "/health/live";
    if (!strcmp(url, "/health/ready")) return "/health/ready";
    if (!strcmp(url, "/openapi.json")) return "/openapi.json";
    if (!strncmp(url, "/v1/models/", 11) && url[11]) return "/v1/models/{id}";
    if (!strcmp(url, "/tokenize")) return "/tokenize";
    if (!strcmp(url, "/decode")) return "/decode";
    if (!strcmp(url, "/v1/models")) return "/v1/models";
    if (!strcmp(url, "/info")) return "/info";
    if (!strcmp(url, "/health")) return "/health";
    if (!strcmp(url, "/metrics")) return "/metrics";
    return "other";
}

static enum MHD_Result send_body(serve_server *s, struct MHD_Connection *c, srv_req *r, int status,
                                 char *body, size_t len, const char *ctype, const srv_error *err) {
    if (!body) { /* out of memory while rendering */
        static const char oom[] =
            "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
            "\"param\":null,\"code\":\"out_of_memory\"}}";
        status = 500;
        body = strdup(oom);
        len = body ? strlen(body) : 0;
        if (!body) return MHD_NO;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (s->cfg.cors_allow_origin) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", s->cfg.cors_allow_origin);
        if (strcmp(s->cfg.cors_allow_origin, "*") != 0)
            MHD_add_response_header(resp, "Vary", "Origin");
    }
    if (status == 429) {
        char secs[16];
        snprintf(secs, sizeof secs, "%d", err && err->retry_after > 0 ? err->retry_after : 1);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, secs);
    }
    if (status == 503 && atomic_load(&s->state) == SERVE_LOADING)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (status == 401) MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (status == 405) { /* RFC 9110 15.5.6: the methods the route takes */
        const int post = r->route != ROUTE_OTHER, cors = s->cfg.cors_allow_origin != NULL;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW,
                                post ? (cors ? "POST, OPTIONS" : "POST")
                                     : (cors ? "GET, HEAD, OPTIONS" : "GET, HEAD"));
    }
    if (r->close_after) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    r->status = status;
    srv_metrics_request(&s->metrics, r->label, status, err ? srv_err_reason(err) : NULL);
    if (r->route <= ROUTE_EMBED_ALL) srv_metrics_te_request(&s->metrics, r->n_inputs, status, err);
    return ret;
}

static enum MHD_Result send_error(serve_server *s, struct MHD_Connection *c, srv_req *r,
                                  const srv_error *e) {
    size_t len = 0;
    int status = e->status;
    char *body = srv_route_is_tei(r->route)     ? srv_render_tei_error(e, &status, &len)
                 : r->route == ROUTE_RERANK_API ? srv_render_rerank_error(e, &len)
                                                : srv_render_error(e, &len);
    return send_body(s, c, r, status, body, len, "application/json", e);
}

static enum MHD_Result send_json(serve_server *s, struct MHD_Connection *c, srv_req *r, int status,
                                 const char *text) {
    char *body = strdup(text);
    return send_body(s, c, r, status, body, body ? strlen(body) : 0, "application/json", NULL);
}

static int authorized(serve_server *s, struct MHD_Connection *c) {
    if (!s->api_key) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return 0;
    h += 7;
    while (*h == ' ')
        h++;
    size_t a = strlen(h), b = strlen(s->api_key);
    unsigned diff = (unsigned)(a != b);
    for (size_t i = 0; i < a && i < b; i++)
        diff |= (unsigned char)(h[i] ^ s->api_key[i]);
    return diff == 0;
}

/* The client hung up (or the socket broke) while we waited. */
static int client_gone(int fd) {
    if (fd < 0) return 0;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return 0;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

static srv_error unavailable(serve_server *s, int counted) {
    srv_error e;
    int st = atomic_load(&s->state);
    if (st == SERVE_LOADING)
        srv_err_set(&e, 503, "server_error", "loading", "", "the model is loading; retry shortly");
    else if (st == SERVE_FAILED)
        srv_err_set(&e, 503, "server_error", "load_failed", "", "the model failed to load: %.300s",
                    s->load_error);
    else if (st == SERVE_FAULT)
        srv_err_set(&e, 503, "server_error", "device_fault", "",
                    "the engine had a device fault; this server no longer embeds");
    else if (st == SERVE_STOPPED || (st == SERVE_DRAINING && !counted))
        srv_err_set(&e, 503, "server_error", "draining", "",
                    "the server is shutting down and accepts no new work");
    else
        e.status = 0;
    return e;
}

static void watch_add(serve_server *s, srv_req *r) {
    pthread_mutex_lock(&s->watch_mu);
    r->wprev = NULL;
    r->wnext = s->watch_head;
    if (s->watch_head) s->watch_head->wprev = r;
    s->watch_head = r;
    r->watched = 1;
    pthread_mutex_unlock(&s->watch_mu);
}

static void watch_remove(serve_server *s, srv_req *r) {
    pthread_mutex_lock(&s->watch_mu);
    if (r->watched) {
        if (r->wprev)
            r->wprev->wnext = r->wnext;
        else
            s->watch_head = r->wnext;
        if (r->wnext) r->wnext->wprev = r->wprev;
        r->watched = 0;
    }
    pthread_mutex_unlock(&s->watch_mu);
}

/* Polls the sockets of suspended requests; a connection stays open (so its fd stays valid) until
 * its handler has run again, which first removes it from this list. */
static void *watcher_main(void *arg) {
    serve_server *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->watch_mu);
        int stop = s->watch_stop;
        for (srv_req *r = s->watch_head; r && !stop; r = r->wnext)
            if (!atomic_load(&r->job->cancelled) && client_gone(r->fd))
                atomic_store(&r->job->cancelled, 1);
        pthread_mutex_unlock(&s->watch_mu);
        if (stop) return NULL;
        srv_conn_reap(s);
        usleep(50 * 1000);
    }
}

static void resume_connection(void *arg) {
    MHD_resume_connection(arg);
}

/* First call: parse, submit, suspend. After the resume: answer from the finished job. */
static enum MHD_Result handle_embed(serve_server *s, struct MHD_Connection *c, srv_req *r) {
    srv_job *j = r->job;
    if (!j) {
        srv_error e = {0};
        const char *body = r->body.p ? r->body.p : "";
        if (r->route == ROUTE_SIMILARITY)
            j = srv_parse_similarity(s, body, r->body.len, &e);
        else if (r->route == ROUTE_RERANK || r->route == ROUTE_RERANK_API)
            j = srv_parse_rerank(s, r->route, body, r->body.len, &e);
        else
            j = srv_parse_embed(s, r->route, body, r->body.len, &e);
        if (!j) return send_error(s, c, r, &e);
        r->route = j->route; /* /rerank with "documents" answers in Cohere's shape */
        j->request_id = r->id;
        sb_free(&r->body);
        j->t_start = r->t_start;
        r->n_inputs = j->n;
        r->job = j;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        r->fd = ci ? ci->connect_fd : -1;
        pthread_mutex_lock(&s->metrics.mu);
        s->metrics.inputs_total += (unsigned long)j->n;
        pthread_mutex_unlock(&s->metrics.mu);
        srv_submit(s, j);
        pthread_mutex_lock(&j->mu);
        if (!j->done) {
            MHD_suspend_connection(c);
            j->notify = resume_connection;
            j->notify_arg = c;
            j->notify_armed = 1;
            watch_add(s, r);
            pthread_mutex_unlock(&j->mu);
            return MHD_YES;
        }
        pthread_mutex_unlock(&j->mu); /* answered already (an early error): reply now */
    } else {
        watch_remove(s, r);
    }
    if (atomic_load(&j->cancelled)) {
        r->cancelled = 1;
        r->status = 499; /* nginx's "client closed request", for the log and metrics only */
        srv_metrics_request(&s->metrics, r->label, 499, "client_disconnected");
        srv_error gone;
        srv_err_set(&gone, 499, NULL, "client_disconnected", "", "the client left");
        srv_metrics_te_request(&s->metrics, r->n_inputs, 499, &gone);
        return MHD_NO; /* closes the connection */
    }
    enum MHD_Result ret;
    r->tokens = j->prompt_tokens;
    if (j->err.status) {
        ret = send_error(s, c, r, &j->err);
    } else {
        size_t len = 0;
        char *out = j->rerank ? srv_render_rerank(j, &len) : srv_render_embeddings(s, j, &len);
        ret = send_body(s, c, r, 200, out, len, "application/json", NULL);
        double now = srv_now();
        r->queue_ms = j->t_first_compute > 0 ? (j->t_first_compute - j->t_queued) * 1e3 : 0;
        r->compute_ms = j->compute_s * 1e3;
        srv_hist_observe(&s->metrics, &s->metrics.t_tokenize, j->t_queued - j->t_start);
        if (j->t_first_compute > 0)
            srv_hist_observe(&s->metrics, &s->metrics.t_queue, j->t_first_compute - j->t_queued);
        srv_hist_observe(&s->metrics, &s->metrics.t_total, now - j->t_start);
        srv_hist_observe(&s->metrics, &s->metrics.t_req_inference, j->compute_s);
        srv_hist_observe(&s->metrics, &s->metrics.input_length, (double)j->prompt_tokens);
        pthread_mutex_lock(&s->metrics.mu);
        s->metrics.prompt_tokens_total += (unsigned long)j->prompt_tokens;
        pthread_mutex_unlock(&s->metrics.mu);
    }
    return ret;
}

/* A browser's CORS preflight: what a cross-origin page may send (answered before auth, as the
 * browser sends no credentials with it). */
static enum MHD_Result cors_preflight(serve_server *s, struct MHD_Connection *c, srv_req *r) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", s->cfg.cors_allow_origin);
    if (strcmp(s->cfg.cors_allow_origin, "*") != 0) MHD_add_response_header(resp, "Vary", "Origin");
    MHD_add_response_header(resp, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    const char *want =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Access-Control-Request-Headers");
    MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                            want && want[0] ? want : "Authorization, Content-Type");
    MHD_add_response_header(resp, "Access-Control-Max-Age", "86400");
    enum MHD_Result ret = MHD_queue_response(c, 204, resp);
    MHD_destroy_response(resp);
    r->status = 204;
    srv_metrics_request(&s->metrics, r->label, 204, NULL);
    return ret;
}

static enum MHD_Result dispatch(serve_server *s, struct MHD_Connection *c, srv_req *r,
                                const char *url, const char *method) {
    srv_error e = {0};
    int is_get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    int is_post = !strcmp(method, "POST");
    const char *label = r->label;
    int known = strcmp(label, "other") != 0;
    int wants_post = r->route != ROUTE_OTHER;

    if (!strcmp(method, "OPTIONS") && s->cfg.cors_allow_origin) return cors_preflight(s, c, r);
    if (!known) {
        srv_err_set(&e, 404, "invalid_request_error", "not_found", "", "no route %.100s %.200s",
                    method, url);
        return send_error(s, c, r, &e);
    }
    if ((wants_post && !is_post) || (!wants_post && !is_get)) {
        srv_err_set(&e, 405, "invalid_request_error", "method_not_allowed", "",
                    "%.100s takes %s, not %.20s", label, wants_post ? "POST" : "GET", method);
        return send_error(s, c, r, &e);
    }
    if (!strcmp(label, "/health")) {
        int st = atomic_load(&s->state);
        static const char *names[] = {"loading",      "ready",       "draining",
                                      "device_fault", "load_failed", "stopped"};
        char body[96];
        const int down = srv_replicas_down(s); /* still serving, on the engines left */
        if (down && st == SERVE_READY)
            snprintf(body, sizeof body, "{\"status\":\"%s\",\"replicas_down\":%d}", names[st],
                     down);
        else
            snprintf(body, sizeof body, "{\"status\":\"%s\"}", names[st]);
        return send_json(s, c, r, st == SERVE_READY ? 200 : 503, body);
    }
    if (!strcmp(label, "/health/live") || !strcmp(label, "/health/ready")) {
        /* live: the process can still serve (loading and draining included); ready: send work */
        int st = atomic_load(&s->state);
        int ok = label[8] == 'l' ? st == SERVE_LOADING || st == SERVE_READY || st == SERVE_DRAINING
                                 : st == SERVE_READY;
        return send_json(s, c, r, ok ? 200 : 503,
                         ok ? "{\"status\":\"ok\"}" : "{\"status\":\"unavailable\"}");
    }
    if (!strcmp(label, "/openapi.json")) return send_json(s, c, r, 200, srv_openapi_json());
    if (!strcmp(label, "/metrics")) {
        size_t len = 0;
        char *m = srv_metrics_render(s, &len);
        return send_body(s, c, r, 200, m, len, "text/plain; version=0.0.4; charset=utf-8", NULL);
    }
    if (!authorized(s, c)) {
        srv_err_set(&e, 401, "invalid_request_error", "invalid_api_key", "",
                    "missing or wrong API key: send \"Authorization: Bearer <key>\"");
        return send_error(s, c, r, &e);
    }
    if (!strcmp(label, "/v1/models")) {
        size_t len = 0;
        char *m = srv_render_models(s, &len);
        return send_body(s, c, r, 200, m, len, "application/json", NULL);
    }
    if (!strcmp(label, "/v1/models/{id}")) {
        srv_model *m = srv_model_called(s, url + 11, &e);
        if (!m) {
            e.status = 404; /* an unknown id is a missing resource */
            return send_error(s, c, r, &e);
        }
        size_t len = 0;
        char *body = srv_render_model(m, &len);
        return send_body(s, c, r, 200, body, len, "application/json", NULL);
    }
    /* everything else needs the loaded model */
    int st = atomic_load(&s->state);
    if (st == SERVE_LOADING || st == SERVE_FAILED || st == SERVE_STOPPED) {
        e = unavailable(s, r->counted);
        return send_error(s, c, r, &e);
    }
    if (!strcmp(label, "/info")) {
        size_t len = 0;
        char *m = srv_render_info(s, &len);
        return send_body(s, c, r, 200, m, len, "application/json", NULL);
    }
    if (r->too_big) {
        srv_err_set(&e, 413, "invalid_request_error", "body_too_large", "",
                    "the body is larger than the limit of %zu bytes", s->cfg.max_body);
        return send_error(s, c, r, &e);
    }
    const char *body = r->body.p ? r->body.p : "";
    if (r->route == ROUTE_TOKENIZE || r->route == ROUTE_DECODE) {
        size_t len = 0;
        char *out = r->route == ROUTE_TOKENIZE ? srv_handle_tokenize(s, body, r->body.len, &len, &e)
                                               : srv_handle_decode(s, body, r->body.len, &len, &e);
        if (!out) return send_error(s, c, r, &e);
        return send_body(s, c, r, 200, out, len, "application/json", NULL);
    }
    e = unavailable(s, r->counted); /* device fault, or arrived after a drain began */
    if (e.status) return send_error(s, c, r, &e);
    return handle_embed(s, c, r);
}

/* Bodies past this are not drained after an early answer: the connection is closed instead. */
static size_t drain_cap(const serve_server *s) {
    size_t cap = 2 * s->cfg.max_body, floor = (size_t)16 << 20;
    return cap > floor ? cap : floor;
}

/* Routes open without the API key: health probes, Prometheus, the OpenAPI document, CORS
 * preflights. */
static int needs_key(const srv_req *r) {
    return strcmp(r->label, "other") != 0 && strncmp(r->label, "/health", 7) != 0 &&
           strcmp(r->label, "/metrics") != 0 && strcmp(r->label, "/openapi.json") != 0 &&
           strcmp(r->method, "OPTIONS") != 0;
}

/* An answer decided on the head alone (no key, a body announced too large). A client that sends
 * its whole body before reading (Python's urllib) would see a reset instead of the answer if the
 * socket closed with its body unread, so a body up to drain_cap is read and dropped first (never
 * buffered), then the answer goes out. A client that asked "Expect: 100-continue" gets it at once
 * and sends no body; so does one announcing more than drain_cap (then the connection closes). */
static enum MHD_Result answer_early(serve_server *s, struct MHD_Connection *c, srv_req *r,
                                    const srv_error *e) {
    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    const char *ex = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    unsigned long long n = cl ? strtoull(cl, NULL, 10) : 0;
    int body_follows = te || n > 0;
    if (body_follows && !(ex && !strcasecmp(ex, "100-continue")) && (te || n <= drain_cap(s))) {
        r->early = *e;
        r->has_early = 1;
        return MHD_YES;
    }
    r->close_after = body_follows;
    return send_error(s, c, r, e);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
    (void)version;
    serve_server *s = cls;
    srv_req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        *con_cls = r;
        r->id = atomic_fetch_add(&s->next_request_id, 1) + 1;
        r->t_start = srv_now();
        snprintf(r->label, sizeof r->label, "%s", route_label(url));
        snprintf(r->method, sizeof r->method, "%s", method);
        if (!strcmp(r->label, "/v1/embeddings"))
            r->route = ROUTE_OPENAI;
        else if (!strcmp(r->label, "/embed") || !strcmp(r->label, "/"))
            r->route = ROUTE_TEI;
        else if (!strcmp(r->label, "/similarity"))
            r->route = ROUTE_SIMILARITY;
        else if (!strcmp(r->label, "/embed_all"))
            r->route = ROUTE_EMBED_ALL;
        else if (!strcmp(r->label, "/tokenize"))
            r->route = ROUTE_TOKENIZE;
        else if (!strcmp(r->label, "/decode"))
            r->route = ROUTE_DECODE;
        else if (!strcmp(r->label, "/rerank"))
            r->route = ROUTE_RERANK;
        else if (!strcmp(r->label, "/v1/rerank") || !strcmp(r->label, "/v2/rerank"))
            r->route = ROUTE_RERANK_API;
        else
            r->route = ROUTE_OTHER;
        if (srv_conn_head(s, c)) return MHD_NO; /* the request deadline closed it meanwhile */
        const char *cl =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        /* a malformed Content-Length never gets here: the gate answers it (serve_gate.c) */
        srv_error e;
        /* refuse a keyless request and an announced oversized body before reading the body */
        if (needs_key(r) && !authorized(s, c)) {
            srv_err_set(&e, 401, "invalid_request_error", "invalid_api_key", "",
                        "missing or wrong API key: send \"Authorization: Bearer <key>\"");
            return answer_early(s, c, r, &e);
        }
        unsigned long long n = cl ? strtoull(cl, NULL, 10) : 0;
        if (n > s->cfg.max_body) {
            srv_err_set(&e, 413, "invalid_request_error", "body_too_large", "",
                        "the body (%llu bytes) is larger than the limit of %zu bytes", n,
                        s->cfg.max_body);
            r->too_big = 1;
            return answer_early(s, c, r, &e);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (r->status || r->has_early || r->too_big) { /* answered or to be: drop, bounded */
            r->drained += *upload_size;
            *upload_size = 0;
            return r->drained > drain_cap(s) ? MHD_NO : MHD_YES;
        }
        if (!r->too_big) {
            if (r->body.len + *upload_size > s->cfg.max_body) {
                r->too_big = 1;
                sb_free(&r->body);
            } else {
                sb_put(&r->body, upload, *upload_size);
                if (r->body.oom) return MHD_NO;
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->status) return MHD_YES;              /* the response is already queued */
    if (r->job) return handle_embed(s, c, r);   /* resumed: the job is answered */
    if (srv_conn_received(s, c)) return MHD_NO; /* the request deadline closed it meanwhile */
    if (r->has_early) return send_error(s, c, r, &r->early);
    if (r->too_big && r->route != ROUTE_OTHER) {
        srv_error e;
        srv_err_set(&e, 413, "invalid_request_error", "body_too_large", "",
                    "the body is larger than the limit of %zu bytes", s->cfg.max_body);
        return send_error(s, c, r, &e);
    }
    /* A request counts for the drain once its body is complete: SIGTERM waits for work the server
     * has accepted, never for a client that is still (or forever) uploading. */
    pthread_mutex_lock(&s->state_mu);
    int st = atomic_load(&s->state);
    /* a scrape is not work in flight: qembed_requests_in_flight must not count itself */
    if (st != SERVE_DRAINING && st != SERVE_STOPPED && strcmp(r->label, "/metrics") != 0) {
        r->counted = 1;
        s->active_requests++;
    }
    pthread_mutex_unlock(&s->state_mu);
    return dispatch(s, c, r, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    serve_server *s = cls;
    srv_conn_answered(s, c);
    srv_req *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    double ms = (srv_now() - r->t_start) * 1e3;
    if (!s->cfg.quiet && (r->route != ROUTE_OTHER || r->status >= 400))
        fprintf(stderr,
                "qembed serve: req=%lu %s %s status=%d inputs=%d tokens=%ld queue_ms=%.2f "
                "compute_ms=%.2f total_ms=%.2f%s\n",
                r->id, r->method, r->label, r->status, r->n_inputs, r->tokens, r->queue_ms,
                r->compute_ms, ms,
                r->cancelled                                 ? " (client disconnected)"
                : toe != MHD_REQUEST_TERMINATED_COMPLETED_OK ? " (connection error)"
                                                             : "");
    if (r->status == 0) /* the connection ended before any answer: count it like a disconnect */
        srv_metrics_request(&s->metrics, r->label, 499, "client_disconnected");
    sb_free(&r->body);
    watch_remove(s, r);
    if (r->job) {
        /* the connection is going away: never resume it, and drop whatever is still queued */
        pthread_mutex_lock(&r->job->mu);
        r->job->notify_armed = 0;
        if (!r->job->done) atomic_store(&r->job->cancelled, 1);
        pthread_mutex_unlock(&r->job->mu);
        srv_job_unref(r->job);
    }
    if (r->counted) {
        pthread_mutex_lock(&s->state_mu);
        s->active_requests--;
        pthread_cond_broadcast(&s->state_cv);
        pthread_mutex_unlock(&s->state_mu);
    }
    free(r);
}

/* MHD's unescaping, except that a %00 stays visible: "/%00" must not read as the root route "/"
 * (TEI's embed) once the NUL ends the C string. */
static size_t unescape_keep_nul(void *cls, struct MHD_Connection *c, char *s) {
    (void)cls;
    (void)c;
    size_t n = MHD_http_unescape(s);
    for (size_t i = 0; i < n; i++)
        if (!s[i]) s[i] = '\x7f';
    return n;
}

int srv_http_start(serve_server *s, char *err, size_t errlen) {
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port[16];
    snprintf(port, sizeof port, "%d", s->cfg.port);
    int rc = getaddrinfo(s->host, port, &hints, &ai);
    if (rc != 0 || !ai) {
        snprintf(err, errlen, "cannot resolve --host %s: %s", s->host, gai_strerror(rc));
        return -1;
    }
    /* the listener belongs to the gate (serve_gate.c), which relays every connection to
     * libmicrohttpd through a socketpair, vetting each request head; the library never listens
     * itself */
    int lfd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (lfd >= 0) {
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (ai->ai_family == AF_INET6) setsockopt(lfd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    if (lfd < 0 || bind(lfd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(lfd, 4096) != 0) {
        if (lfd >= 0) close(lfd);
        freeaddrinfo(ai);
        snprintf(err, errlen, "cannot listen on %s:%d (in use, or not an address of this machine)",
                 s->host, s->cfg.port);
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage bound;
    socklen_t bl = sizeof bound;
    getsockname(lfd, (struct sockaddr *)&bound, &bl);
    s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC;
    unsigned pool = s->cfg.http_threads > 0 ? (unsigned)s->cfg.http_threads : 4;
    /* 64 KiB per connection: a head the gate let through (16 KiB, 100 lines) always fits. The
     * gate enforces the connection caps (it holds every client socket, and the per-address cap
     * needs the client's address); the library's own limit is only a backstop, with room for
     * the connections the gate evicted and the library has yet to close. */
    s->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_THREAD_POOL_SIZE, pool,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_UNESCAPE_CALLBACK,
        unescape_keep_nul, NULL, MHD_OPTION_NOTIFY_CONNECTION, srv_conn_notify, s,
        MHD_OPTION_CONNECTION_LIMIT, 2 * srv_conn_limit(s) + 64, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)(64 << 10), MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)300,
        MHD_OPTION_THREAD_STACK_SIZE, (size_t)(512 * 1024), MHD_OPTION_END);
    if (!s->mhd) {
        close(lfd);
        snprintf(err, errlen, "cannot start the HTTP server on %s:%d", s->host, s->cfg.port);
        return -1;
    }
    if (srv_gate_start(s, lfd, err, errlen) != 0) {
        close(lfd);
        MHD_stop_daemon(s->mhd);
        s->mhd = NULL;
        return -1;
    }
    s->watch_stop = 0;
    if (pthread_create(&s->watcher, NULL, watcher_main, s) != 0) {
        snprintf(err, errlen, "cannot start the connection watcher thread");
        srv_gate_stop(s);
        MHD_stop_daemon(s->mhd);
        s->mhd = NULL;
        return -1;
    }
    s->watcher_started = 1;
    return 0;
}

void srv_http_stop(serve_server *s, double timeout_s) {
    /* MHD must not be stopped with suspended connections: by now every job is answered and every
     * connection resumed; give the workers a moment to send those answers. */
    double until = srv_now() + timeout_s;
    pthread_mutex_lock(&s->state_mu);
    while (s->active_requests > 0 && srv_now() < until) {
        pthread_mutex_unlock(&s->state_mu);
        usleep(2000);
        pthread_mutex_lock(&s->state_mu);
    }
    pthread_mutex_unlock(&s->state_mu);
    srv_gate_stop(s);
    if (s->mhd) MHD_stop_daemon(s->mhd);
    s->mhd = NULL;
    if (s->watcher_started) {
        pthread_mutex_lock(&s->watch_mu);
        s->watch_stop = 1;
        pthread_mutex_unlock(&s->watch_mu);
        pthread_join(s->watcher, NULL);
        s->watcher_started = 0;
    }
}
