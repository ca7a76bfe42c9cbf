/* serve_conn.c — connection-level defences against hostile clients: a deadline for each request's
 * head and body (libmicrohttpd's own timeout is an idle timeout, which a client sending a byte a
 * second resets forever), the connection limit kept under the fd limit, and the raw JSON answer
 * written straight to a socket (the gate's refusals, a 408).
 *
 * Every connection is tracked from MHD_CONNECTION_NOTIFY_STARTED to _CLOSED (the library calls
 * CLOSED before it closes the socket, so a listed fd is always the connection's own); its fd is
 * the library's end of the gate's socketpair (serve_gate.c), whose shutdown the gate relays to the
 * client, and the gate asks here how many requests the library completed on it. A late
 * connection is shut down (shutdown(2), never close(2): the library owns the fd and closes it when
 * it sees the end); the library then runs its usual close path. One that never finished its first
 * head gets a 408 first: nothing else has been written on it, and the handler, which would write,
 * is refused once the connection is reaped (srv_conn_received). */
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "serve_internal.h"

typedef struct srv_conn {
    int fd;
    double t0;     /* when the current request's head began to be awaited */
    int receiving; /* 1: waiting for a head or receiving a body: the deadline applies */
    int in_body;   /* the current request's head has arrived */
    int answered;  /* requests answered on this connection */
    int reaped;    /* shut down by the deadline */
    struct srv_conn *prev, *next;
} srv_conn;

void srv_conn_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                     enum MHD_ConnectionNotificationCode code) {
    serve_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        srv_conn *k = calloc(1, sizeof *k);
        if (!k) return; /* untracked: only the idle timeout applies */
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        k->fd = ci ? ci->connect_fd : -1;
        k->t0 = srv_now();
        k->receiving = 1;
        pthread_mutex_lock(&s->conn_mu);
        k->next = s->conn_head;
        if (s->conn_head) s->conn_head->prev = k;
        s->conn_head = k;
        pthread_mutex_unlock(&s->conn_mu);
        *socket_context = k;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        srv_conn *k = *socket_context;
        if (!k) return;
        pthread_mutex_lock(&s->conn_mu);
        if (k->prev)
            k->prev->next = k->next;
        else
            s->conn_head = k->next;
        if (k->next) k->next->prev = k->prev;
        pthread_mutex_unlock(&s->conn_mu);
        free(k);
        *socket_context = NULL;
    }
}

static srv_conn *conn_of(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

int srv_conn_head(serve_server *s, struct MHD_Connection *c) {
    srv_conn *k = conn_of(c);
    if (!k) return 0;
    pthread_mutex_lock(&s->conn_mu);
    int reaped = k->reaped;
    k->in_body = 1;
    pthread_mutex_unlock(&s->conn_mu);
    return reaped ? -1 : 0;
}

int srv_conn_received(serve_server *s, struct MHD_Connection *c) {
    srv_conn *k = conn_of(c);
    if (!k) return 0;
    pthread_mutex_lock(&s->conn_mu);
    int reaped = k->reaped;
    k->receiving = 0;
    pthread_mutex_unlock(&s->conn_mu);
    return reaped ? -1 : 0;
}

void srv_conn_answered(serve_server *s, struct MHD_Connection *c) {
    srv_conn *k = conn_of(c);
    if (!k) return;
    pthread_mutex_lock(&s->conn_mu);
    k->receiving = 1; /* a kept-alive connection now waits for its next head */
    k->in_body = 0;
    k->t0 = srv_now();
    k->answered++;
    pthread_mutex_unlock(&s->conn_mu);
}

size_t srv_conn_render_error(const srv_error *e, char *out, size_t cap) {
    size_t blen = 0;
    char *body = srv_render_error(e, &blen);
    if (!body) return 0;
    const char *reason = e->status == 400   ? "Bad Request"
                         : e->status == 408 ? "Request Timeout"
                         : e->status == 413 ? "Content Too Large"
                         : e->status == 414 ? "URI Too Long"
                         : e->status == 431 ? "Request Header Fields Too Large"
                         : e->status == 505 ? "HTTP Version Not Supported"
                                            : "Error";
    int hl = snprintf(out, cap,
                      "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: "
                      "%zu\r\nConnection: close\r\n\r\n",
                      e->status, reason, blen);
    size_t n = 0;
    if (hl > 0 && (size_t)hl + blen <= cap) {
        memcpy(out + hl, body, blen);
        n = (size_t)hl + blen;
    }
    free(body);
    return n;
}

void srv_conn_write_error(int fd, const srv_error *e) {
    if (fd < 0) return;
    char buf[SRV_RAW_ERROR_MAX];
    size_t n = srv_conn_render_error(e, buf, sizeof buf);
    /* a fresh socket's send buffer takes these few hundred bytes at once; a short write only
     * happens to a client that stopped reading, which then loses an answer it would not read */
    if (n) (void)!send(fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    shutdown(fd, SHUT_WR); /* the end of the answer: the client reads it, then EOF */
}

long srv_conn_answered_on(serve_server *s, int fd) {
    long n = -1;
    pthread_mutex_lock(&s->conn_mu);
    for (srv_conn *k = s->conn_head; k; k = k->next)
        if (k->fd == fd) {
            n = k->answered;
            break;
        }
    pthread_mutex_unlock(&s->conn_mu);
    return n;
}

void srv_conn_reap(serve_server *s) {
    const double now = srv_now(), limit = s->cfg.request_timeout_s;
    if (limit <= 0) return;
    pthread_mutex_lock(&s->conn_mu);
    for (srv_conn *k = s->conn_head; k; k = k->next) {
        if (!k->receiving || k->reaped || k->fd < 0 || now - k->t0 < limit) continue;
        k->reaped = 1;
        s->conns_timed_out++;
        if (k->answered == 0 && !k->in_body) { /* a first head that never completed: say why */
            srv_error e;
            srv_err_set(&e, 408, "invalid_request_error", "request_timeout", "",
                        "the request did not arrive within %.0f s (--request-timeout)", limit);
            srv_conn_write_error(k->fd, &e);
        }
        shutdown(k->fd, SHUT_RDWR);
    }
    pthread_mutex_unlock(&s->conn_mu);
}

unsigned srv_conn_limit(const serve_server *s) {
    long want = s->cfg.max_connections > 0 ? s->cfg.max_connections : 1024;
    struct rlimit rl;
    /* each connection is three fds: the client's socket and the socketpair to the library (the
     * gate relays, serve_gate.c); leave room for the model files, the listener, epoll, pipes */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        long room = ((long)rl.rlim_cur - 64) / 3;
        if (room < 16) room = 16;
        if (want > room) want = room;
    }
    return (unsigned)want;
}

int srv_content_length_ok(const char *v) {
    if (!v || !*v) return 0;
    unsigned long long n = 0;
    for (const char *p = v; *p; p++) {
        if (*p < '0' || *p > '9') return 0;
        unsigned d = (unsigned)(*p - '0');
        if (n > (~0ULL - d) / 10) return 0; /* past 64 bits */
        n = n * 10 + d;
    }
    return 1;
}
