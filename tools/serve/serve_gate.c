/* serve_gate.c — the front gate: accepts connections itself and hands one to libmicrohttpd only
 * once its first request head has arrived complete and well-formed (MHD_add_connection).
 *
 * Why: libmicrohttpd 0.9.75 answers a bad head itself, in HTML (431, 414, 505, a malformed
 * Content-Length), and for a malformed Content-Length it writes its header block twice; its
 * timeout is an idle timeout that a byte a second resets forever. The gate peeks at the head
 * (MSG_PEEK: the bytes stay queued for the library), answers a bad or late one with the JSON error
 * of SERVING.md, and holds a waiting client at the cost of one fd and a few bytes. The head's
 * deadline is --request-timeout; the body's, and later heads of a kept-alive connection, are
 * watched by serve_conn.c.
 *
 * One thread, one epoll set: the listener (level-triggered) and every waiting connection
 * (edge-triggered: a peek leaves the bytes unread, so level-triggered would wake forever). A
 * refused connection is answered, shut for writing, and drained for a moment (a "lingering close")
 * so the client reads the answer rather than a reset. */
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "serve_internal.h"

#define GATE_HEAD_MAX (16 << 10) /* a request head past this is 431 (414 if one line) */
#define GATE_HEADER_LINES 100    /* and past this many header lines */
#define GATE_LINGER_S 2.0        /* how long a refused connection is drained after its answer */

typedef struct gate_conn {
    int fd;
    int lingering; /* answered: draining until EOF or the linger deadline */
    double t0;
    struct sockaddr_storage addr;
    socklen_t alen;
    struct gate_conn *prev, *next;
} gate_conn;

struct srv_gate {
    serve_server *s;
    int lfd, ep;
    atomic_int stop;
    pthread_t thread;
    gate_conn *head;
    gate_conn *dead; /* dropped, freed after the batch of events */
    int n;
    char *buf; /* GATE_HEAD_MAX + 1 */
};

static void unlink_conn(srv_gate *g, gate_conn *k) {
    if (k->prev)
        k->prev->next = k->next;
    else
        g->head = k->next;
    if (k->next) k->next->prev = k->prev;
    g->n--;
}

/* Closes k; its memory is freed after the current batch of epoll events, which may still name it
 * (an eviction while accepting frees a connection whose event comes later in the batch). */
static void drop(srv_gate *g, gate_conn *k) {
    epoll_ctl(g->ep, EPOLL_CTL_DEL, k->fd, NULL);
    close(k->fd);
    unlink_conn(g, k);
    k->fd = -1;
    k->next = g->dead;
    g->dead = k;
}

static void free_dead(srv_gate *g) {
    while (g->dead) {
        gate_conn *k = g->dead;
        g->dead = k->next;
        free(k);
    }
}

/* Answers e, then lingers: the client's unread bytes are read and dropped until it closes. */
static void refuse(srv_gate *g, gate_conn *k, int status, const char *code, const char *fmt,
                   const char *arg) {
    srv_error e;
    srv_err_set(&e, status, "invalid_request_error", code, "", fmt, arg);
    while (recv(k->fd, g->buf, GATE_HEAD_MAX, MSG_DONTWAIT) > 0) {
    } /* consume what the client sent: unread bytes at close would reset the connection */
    srv_conn_write_error(k->fd, &e);
    srv_metrics_request(&g->s->metrics, "other", status, code);
    k->lingering = 1;
    k->t0 = srv_now();
}

static int same_addr(const gate_conn *a, const struct sockaddr_storage *b) {
    if (a->addr.ss_family != b->ss_family) return 0;
    if (b->ss_family == AF_INET)
        return ((const struct sockaddr_in *)&a->addr)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    if (b->ss_family == AF_INET6)
        return !memcmp(&((const struct sockaddr_in6 *)&a->addr)->sin6_addr,
                       &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr));
    return 0;
}

/* At the cap, the connection that has waited longest for its head makes room: a well-behaved
 * client sends its head at once, so under a slowloris spread over many addresses (which the
 * per-address cap does not stop) the oldest waiting head is the attacker's, and a new client is
 * still let in. Returns 0 when nothing could be evicted. */
static int evict_oldest(srv_gate *g) {
    gate_conn *old = NULL;
    for (gate_conn *k = g->head; k; k = k->next) {
        if (k->lingering) { /* answered already: it goes first */
            old = k;
            break;
        }
        if (!old || k->t0 <= old->t0) old = k;
    }
    if (!old) return 0;
    pthread_mutex_lock(&g->s->conn_mu);
    g->s->conns_evicted++;
    pthread_mutex_unlock(&g->s->conn_mu);
    drop(g, old);
    return 1;
}

static void accept_all(srv_gate *g) {
    const serve_server *s = g->s;
    const unsigned limit = srv_conn_limit(s);
    /* a few at a time: the heads of those accepted get looked at between batches, so a burst of
     * connections cannot evict a client whose head has arrived but was not examined yet */
    for (int batch = 0; batch < 16; batch++) {
        struct sockaddr_storage a;
        socklen_t al = sizeof a;
        int fd = accept4(g->lfd, (struct sockaddr *)&a, &al, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return; /* EAGAIN, or out of fds: the next wake-up retries */
        int from_addr = 0;
        for (gate_conn *k = g->head; k && s->cfg.max_connections_per_ip > 0; k = k->next)
            from_addr += !k->lingering && same_addr(k, &a);
        if (s->cfg.max_connections_per_ip > 0 && from_addr >= s->cfg.max_connections_per_ip) {
            close(fd); /* as libmicrohttpd does past its limits */
            continue;
        }
        if ((unsigned)g->n >= limit && !evict_oldest(g)) {
            close(fd);
            continue;
        }
        gate_conn *k = calloc(1, sizeof *k);
        if (!k) {
            close(fd);
            continue;
        }
        k->fd = fd;
        k->t0 = srv_now();
        k->addr = a;
        k->alen = al;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = k};
        if (epoll_ctl(g->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close(fd);
            free(k);
            continue;
        }
        k->next = g->head;
        if (g->head) g->head->prev = k;
        g->head = k;
        g->n++;
    }
}

/* The value of header name in head[0..n) (lines after the first), trimmed, into out; 1 if found. */
static int find_header(const char *h, size_t n, const char *name, char *out, size_t cap) {
    size_t nl = strlen(name);
    const char *p = memchr(h, '\n', n), *end = h + n;
    while (p && p + 1 < end) {
        const char *line = p + 1;
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol) eol = end;
        if ((size_t)(eol - line) > nl && !strncasecmp(line, name, nl) && line[nl] == ':') {
            const char *v = line + nl + 1, *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            snprintf(out, cap, "%.*s", (int)(ve - v), v);
            return 1;
        }
        p = eol < end ? eol : NULL;
    }
    return 0;
}

/* 0: wait for more; 1: handed to libmicrohttpd; -1: refused (lingering). */
/* The checks of a complete head h[0..hn): 0 when libmicrohttpd may have it, else -1 (refused,
 * lingering). */
static int vet_head(srv_gate *g, gate_conn *k, const char *h, size_t hn) {
    for (size_t i = 0; i < hn; i++) { /* a NUL would cut the C string the library hands over */
        unsigned char ch = (unsigned char)h[i];
        if ((ch < 0x20 && ch != '\t' && ch != '\r' && ch != '\n') || ch == 0x7f) {
            char at[24];
            snprintf(at, sizeof at, "0x%02x", ch);
            refuse(g, k, 400, "bad_header", "the request head holds the control byte %s", at);
            return -1;
        }
    }
    /* request line: METHOD SP TARGET SP HTTP/1.x */
    const char *eol = memchr(h, '\n', hn);
    char line[96];
    snprintf(line, sizeof line, "%.*s", (int)(eol - h - (eol > h && eol[-1] == '\r')), h);
    const char *sp1 = memchr(h, ' ', (size_t)(eol - h));
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (!sp1 || !sp2 || sp1 == h || sp2 == sp1 + 1) {
        refuse(g, k, 400, "bad_request_line", "the request line '%.60s' is not METHOD PATH VERSION",
               line);
        return -1;
    }
    const char *ver = sp2 + 1;
    size_t vl = (size_t)(eol - ver);
    if (vl && ver[vl - 1] == '\r') vl--;
    if (vl != 8 || strncmp(ver, "HTTP/1.", 7) || ver[7] < '0' || ver[7] > '9') {
        refuse(g, k, 505, "http_version_not_supported",
               "the request line '%.60s' is not HTTP/1.0 or HTTP/1.1", line);
        return -1;
    }
    int lines = 0;
    for (const char *p = eol + 1; p < h + hn; lines++) { /* each header line: NAME: VALUE */
        if (lines > GATE_HEADER_LINES) {
            refuse(g, k, 431, "headers_too_large", "the request has more than %s header lines",
                   "100");
            return -1;
        }
        const char *e = memchr(p, '\n', (size_t)(h + hn - p));
        size_t ll = (size_t)(e - p);
        if (ll && p[ll - 1] == '\r') ll--;
        const char *colon = ll ? memchr(p, ':', ll) : NULL;
        const char *space = colon ? memchr(p, ' ', (size_t)(colon - p)) : NULL;
        if (ll && p[0] != ' ' && p[0] != '\t' && (!colon || colon == p || space)) {
            snprintf(line, sizeof line, "%.*s", (int)(ll < 60 ? ll : 60), p);
            refuse(g, k, 400, "bad_header", "the header line '%.60s' is not NAME: VALUE", line);
            return -1;
        }
        p = e + 1;
    }
    char cl[64], te[8];
    if (find_header(h, hn, "Content-Length", cl, sizeof cl) &&
        !find_header(h, hn, "Transfer-Encoding", te, sizeof te) && !srv_content_length_ok(cl)) {
        int digits = cl[0] && strspn(cl, "0123456789") == strlen(cl);
        if (digits)
            refuse(g, k, 413, "body_too_large",
                   "the Content-Length %.40s is larger than any body accepted", cl);
        else
            refuse(g, k, 400, "invalid_content_length",
                   "the Content-Length '%.40s' is not a number of bytes", cl);
        return -1;
    }
    return 0;
}

static int examine(srv_gate *g, gate_conn *k) {
    ssize_t got = recv(k->fd, g->buf, GATE_HEAD_MAX, MSG_PEEK | MSG_DONTWAIT);
    if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
        drop(g, k);
        return -1;
    }
    if (got < 0) return 0;
    size_t n = (size_t)got;
    char *b = g->buf;
    b[n] = 0;
    size_t start = strspn(b, "\r\n"); /* empty lines before a request line are ignored */
    const char *h = b + start;
    size_t hn = n - start;
    const char *end = NULL;
    for (const char *p = memchr(h, '\n', hn); p; p = memchr(p + 1, '\n', hn - (size_t)(p + 1 - h)))
        if (p + 1 < h + hn && (p[1] == '\n' || (p[1] == '\r' && p + 2 < h + hn && p[2] == '\n'))) {
            end = p + 1;
            break;
        }
    if (!end) {
        if (n < GATE_HEAD_MAX) return 0;
        if (!memchr(h, '\n', hn))
            refuse(g, k, 414, "uri_too_long", "the request line is longer than %s bytes", "16384");
        else
            refuse(g, k, 431, "headers_too_large", "the request head is larger than %s bytes",
                   "16384");
        return -1;
    }
    if (vet_head(g, k, h, (size_t)(end - h))) return -1;
    /* a good head: libmicrohttpd takes the connection and reads the same bytes */
    epoll_ctl(g->ep, EPOLL_CTL_DEL, k->fd, NULL);
    int fd = k->fd;
    struct sockaddr_storage a = k->addr;
    socklen_t al = k->alen;
    unlink_conn(g, k);
    k->fd = -1; /* freed after the batch, like a dropped one */
    k->next = g->dead;
    g->dead = k;
    MHD_add_connection(g->s->mhd, fd, (struct sockaddr *)&a, al); /* closes fd on failure */
    return 1;
}

static void *gate_main(void *arg) {
    srv_gate *g = arg;
    struct epoll_event evs[64];
    while (!atomic_load(&g->stop)) {
        int m = epoll_wait(g->ep, evs, 64, 100);
        for (int i = 0; i < m; i++) {
            if (evs[i].data.ptr == NULL) {
                accept_all(g);
                continue;
            }
            gate_conn *k = evs[i].data.ptr;
            if (k->fd < 0) continue; /* dropped earlier in this batch */
            if (k->lingering) {
                ssize_t r;
                while ((r = recv(k->fd, g->buf, GATE_HEAD_MAX, MSG_DONTWAIT)) > 0) {
                }
                if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) drop(g, k);
                continue;
            }
            examine(g, k);
        }
        /* deadlines: a head that takes longer than --request-timeout, a linger that ran out */
        const double now = srv_now(), limit = g->s->cfg.request_timeout_s;
        for (gate_conn *k = g->head, *next; k; k = next) {
            next = k->next;
            if (k->lingering) {
                if (now - k->t0 > GATE_LINGER_S) drop(g, k);
            } else if (limit > 0 && now - k->t0 > limit) {
                char secs[32];
                snprintf(secs, sizeof secs, "%.0f", limit);
                refuse(g, k, 408, "request_timeout",
                       "the request did not arrive within %s s (--request-timeout)", secs);
                pthread_mutex_lock(&g->s->conn_mu);
                g->s->conns_timed_out++;
                pthread_mutex_unlock(&g->s->conn_mu);
            }
        }
        free_dead(g);
    }
    return NULL;
}

int srv_gate_start(serve_server *s, int listen_fd, char *err, size_t errlen) {
    srv_gate *g = calloc(1, sizeof *g);
    if (!g || !(g->buf = malloc(GATE_HEAD_MAX + 1))) {
        if (g) free(g);
        snprintf(err, errlen, "out of memory for the connection gate");
        return -1;
    }
    g->s = s;
    g->lfd = listen_fd;
    g->ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (g->ep < 0 || epoll_ctl(g->ep, EPOLL_CTL_ADD, listen_fd, &ev) != 0 ||
        pthread_create(&g->thread, NULL, gate_main, g) != 0) {
        if (g->ep >= 0) close(g->ep);
        free(g->buf);
        free(g);
        snprintf(err, errlen, "cannot start the connection gate: %s", strerror(errno));
        return -1;
    }
    s->gate = g;
    return 0;
}

void srv_gate_stop(serve_server *s) {
    srv_gate *g = s->gate;
    if (!g) return;
    atomic_store(&g->stop, 1);
    pthread_join(g->thread, NULL);
    while (g->head)
        drop(g, g->head);
    free_dead(g);
    close(g->ep);
    close(g->lfd);
    free(g->buf);
    free(g);
    s->gate = NULL;
}
