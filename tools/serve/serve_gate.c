/* serve_gate.c — the front gate: accepts every connection itself, keeps the client's socket for
 * the connection's life, and relays it to libmicrohttpd through a socketpair, vetting every
 * request head on the way (serve_frame.c), the first and every later one of a kept-alive
 * connection.
 *
 * Why a relay: libmicrohttpd 0.9.75 answers a bad head itself, in HTML (431, 414, 505, a
 * malformed Content-Length), and for a malformed Content-Length it writes its header block twice;
 * it offers no hook before it parses a head, and once it holds a socket it reads every later
 * request from it. So the library never holds the client's socket: it gets one end of a
 * socketpair (MHD_add_connection, with the client's real address, so its view of the peer and
 * the per-address cap stay keyed on the client) and sees only heads that passed, byte for byte.
 * A bad head is answered with the JSON error of SERVING.md once the library has completed every
 * request before it (the relay keeps the responses in order), then the connection closes. The
 * frame scanner follows Content-Length and chunked bodies, so it always knows where the next
 * head starts. Keep-alive and pipelining work as before.
 *
 * Flow control: each direction has one bounded buffer; the gate reads a side only while the
 * buffer toward the other has room, so a client that does not read its answers stalls the
 * library's writes (as a full socket would) and a fast upload waits for the library to read.
 * Closes travel both ways: a client's EOF becomes shutdown(SHUT_WR) of the pair once its bytes
 * are delivered, which the watcher of serve_http.c sees as POLLRDHUP (the "client departed"
 * cancellation), and the library's close (its own, or the request deadline's shutdown in
 * serve_conn.c) becomes the end of the client's connection once the answer is relayed.
 *
 * The first head's deadline is --request-timeout here (408); bodies and later heads are watched
 * by serve_conn.c on the library's side. At the connection cap the slowest request still
 * arriving (head or body) makes room: see evict_slowest.
 *
 * One thread, one epoll set, level-triggered: each connection's two sockets are registered with
 * the events that could make progress now, recomputed after every pass. A refused or evicted
 * connection is answered, shut for writing, and drained for a moment (a "lingering close") so the
 * client reads the answer rather than a reset. */
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "serve_internal.h"

#define GATE_IN_CAP (2 * SRV_HEAD_MAX) /* client -> library: a whole head fits behind a body */
#define GATE_OUT_CAP (32 << 10)        /* library -> client */
#define GATE_LINGER_S 2.0      /* how long a refused connection is drained after its answer */
#define GATE_RATE_FLOOR 1024   /* bytes/s: a request arriving slower may be evicted at the cap */
#define GATE_MAX_LINGERING 256 /* past this many lingering connections the oldest is closed */

typedef struct gate_conn {
    int fd;     /* the client's socket */
    int mfd;    /* the gate's end of the socketpair; -1 until the first head passes, and after */
    int lib_fd; /* the library's end (its number, for srv_conn_answered_on) */
    srv_frame fr;
    char *in; /* client -> library: [0, in_ok) vetted and to be forwarded, [in_ok, in_len) not */
    size_t in_len, in_ok;
    char *out; /* library -> client */
    size_t out_len;
    int client_eof, library_eof, library_shut, library_dry;
    int again;    /* pumped to its pass limit: more may move without a new event */
    int refusing; /* a bad head: answer refusal once the library is done with the rest */
    srv_error refusal;
    int closing;      /* nothing more will be relayed: flush out, then linger */
    double t_closing; /* since when: a client that never reads the rest is dropped */
    int lingering;    /* answered: draining until EOF or the linger deadline */
    double t0;        /* accepted; lingering: since when */
    double t_req;     /* when the current request's first byte came (accepted, for the first) */
    size_t req_bytes; /* its bytes so far */
    size_t out_total, out_at_req; /* bytes written to the client: all, and before t_req */
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
    int n, n_lingering;
    char scratch[4096];
};

static void unlink_conn(srv_gate *g, gate_conn *k) {
    if (k->prev)
        k->prev->next = k->next;
    else
        g->head = k->next;
    if (k->next) k->next->prev = k->prev;
    g->n--;
    g->n_lingering -= k->lingering;
}

static void close_library(srv_gate *g, gate_conn *k) {
    if (k->mfd < 0) return;
    epoll_ctl(g->ep, EPOLL_CTL_DEL, k->mfd, NULL);
    close(k->mfd); /* the library sees EOF and closes its end */
    k->mfd = -1;
}

/* Closes k; its memory is freed after the current batch of epoll events, which may still name it
 * (an eviction while accepting frees a connection whose event comes later in the batch). */
static void drop(srv_gate *g, gate_conn *k) {
    close_library(g, k);
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
        free(k->in);
        free(k->out);
        free(k);
    }
}

static void start_lingering(srv_gate *g, gate_conn *k) {
    shutdown(k->fd, SHUT_WR); /* the end of the answer: the client reads it, then EOF */
    k->lingering = 1;
    g->n_lingering++;
    k->t0 = srv_now();
}

/* A refusal on a connection the library holds nothing of: answered at once, then lingering. */
static void refuse_now(srv_gate *g, gate_conn *k, const srv_error *e) {
    close_library(g, k);
    while (recv(k->fd, g->scratch, sizeof g->scratch, MSG_DONTWAIT) > 0) {
    } /* consume what the client sent: unread bytes at close would reset the connection */
    srv_conn_write_error(k->fd, e);
    srv_metrics_request(&g->s->metrics, "other", e->status, e->code);
    k->lingering = 1;
    g->n_lingering++;
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

/* Still receiving a request: its head, or its body (not waiting for an answer, not idle). */
static int receiving(const gate_conn *k) {
    return !k->lingering && !k->closing && !k->refusing &&
           (k->mfd < 0 || k->fr.state != FRAME_HEAD || k->in_len > k->in_ok);
}

/* At the cap, the request arriving slowest makes room: of those still receiving a head or a body
 * below GATE_RATE_FLOOR bytes a second, the one that began longest ago. A well-behaved client
 * sends its head at once and its body at link speed, so under a slowloris or a slow body spread
 * over many addresses (which the per-address cap does not stop) the victim is the attacker's, and
 * a new client is still let in. The victim gets a 408 when nothing was written on its request yet.
 * Returns 0 when none qualifies. */
static int evict_slowest(srv_gate *g) {
    const double now = srv_now();
    gate_conn *old = NULL;
    for (gate_conn *k = g->head; k; k = k->next) {
        if (!receiving(k)) continue; /* lingering ones do not count against the cap */
        /* over at least a second: a head that came at once is no proof of a fast client */
        const double age = now - k->t_req;
        if ((double)k->req_bytes >= GATE_RATE_FLOOR * (age > 1 ? age : 1)) continue;
        if (!old || k->t_req <= old->t_req) old = k;
    }
    if (!old) return 0;
    pthread_mutex_lock(&g->s->conn_mu);
    g->s->conns_evicted++;
    pthread_mutex_unlock(&g->s->conn_mu);
    if (old->out_total == old->out_at_req && old->out_len == 0) {
        srv_error e;
        srv_err_set(&e, 408, "invalid_request_error", "request_timeout", "",
                    "the request arrived slower than %d bytes a second while the server was full",
                    GATE_RATE_FLOOR);
        refuse_now(g, old, &e); /* lingers: no longer counted against the cap */
    } else {
        drop(g, old);
    }
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
        while (g->n_lingering > GATE_MAX_LINGERING) { /* bounded: the oldest answer gives up */
            gate_conn *old = NULL;
            for (gate_conn *k = g->head; k; k = k->next)
                if (k->lingering && (!old || k->t0 < old->t0)) old = k;
            if (!old) break;
            drop(g, old);
        }
        if ((unsigned)(g->n - g->n_lingering) >= limit && !evict_slowest(g)) {
            close(fd);
            continue;
        }
        gate_conn *k = calloc(1, sizeof *k);
        if (k) k->in = malloc(GATE_IN_CAP);
        if (!k || !k->in) {
            if (k) free(k);
            close(fd);
            continue;
        }
        k->fd = fd;
        k->mfd = -1;
        k->t0 = k->t_req = srv_now();
        k->addr = a;
        k->alen = al;
        /* edge-triggered: a pass moves everything it can, and is redone on any edge of either
         * socket, so no interest masks need keeping */
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                 .data.ptr = k};
        if (epoll_ctl(g->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close(fd);
            free(k->in);
            free(k);
            continue;
        }
        k->next = g->head;
        if (g->head) g->head->prev = k;
        g->head = k;
        g->n++;
    }
}

/* The first head passed: the library gets its end of a new socketpair. 0, or -1 (dropped). */
static int hand_over(srv_gate *g, gate_conn *k) {
    int sv[2];
    k->out = malloc(GATE_OUT_CAP);
    if (!k->out || socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        drop(g, k);
        return -1;
    }
    k->mfd = sv[0];
    k->lib_fd = sv[1];
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = k};
    if (epoll_ctl(g->ep, EPOLL_CTL_ADD, k->mfd, &ev) != 0) {
        close(sv[1]);
        drop(g, k);
        return -1;
    }
    /* closes sv[1] on failure (past the library's own limits): the gate then sees EOF */
    MHD_add_connection(g->s->mhd, sv[1], (struct sockaddr *)&k->addr, k->alen);
    return 0;
}

/* The refusal goes after the answers to the requests before it: the library has completed as
 * many requests as it was given heads before the refused one (checked before the pass reads the
 * pair dry, so no byte of theirs is still on the way), or it closed. A refusal inside a body
 * (broken chunked framing) refuses the request whose head the library already has: it waits for
 * a body that will never come, so it is not waited for (the library's end is closed under it). */
static int library_done(srv_gate *g, const gate_conn *k) {
    const long before = k->fr.heads - (k->fr.state != FRAME_HEAD);
    return k->library_eof || (k->in_ok == 0 && srv_conn_answered_on(g->s, k->lib_fd) >= before);
}

/* The client's bytes toward the library: read (while there is room), vetted, forwarded; the
 * client's EOF passed on once its bytes are delivered. -1 when k was dropped or began lingering,
 * else whether anything moved. */
static int client_to_library(srv_gate *g, gate_conn *k) {
    int moved = 0;
    if (!k->client_eof && !k->refusing && !k->closing && k->in_len < GATE_IN_CAP) {
        ssize_t r = recv(k->fd, k->in + k->in_len, GATE_IN_CAP - k->in_len, MSG_DONTWAIT);
        if (r > 0) {
            if (k->mfd >= 0 && k->fr.state == FRAME_HEAD && k->in_len == k->in_ok) {
                k->t_req = srv_now(); /* a new request's first bytes */
                k->req_bytes = 0;
                k->out_at_req = k->out_total + k->out_len;
            }
            k->in_len += (size_t)r;
            k->req_bytes += (size_t)r;
            moved = 1;
        } else if (r == 0) {
            k->client_eof = moved = 1;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
            drop(g, k);
            return -1;
        }
    }
    if (!k->refusing && !k->closing && k->in_ok < k->in_len) {
        const long heads = k->fr.heads;
        srv_error e;
        k->in_ok += srv_frame_scan(&k->fr, k->in + k->in_ok, k->in_len - k->in_ok, &e);
        if (e.status) {
            k->refusing = moved = 1;
            k->refusal = e;
            k->in_len = k->in_ok; /* the rest is never forwarded */
        }
        if (heads == 0 && k->fr.heads > 0 && hand_over(g, k)) return -1;
    }
    if (k->mfd >= 0 && k->in_ok > 0 && !k->library_eof) {
        ssize_t w = send(k->mfd, k->in, k->in_ok, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            memmove(k->in, k->in + w, k->in_len - (size_t)w);
            k->in_len -= (size_t)w;
            k->in_ok -= (size_t)w;
            moved = 1;
        } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            k->library_eof = moved = 1; /* the library closed its end */
        }
    }
    if (k->client_eof && k->mfd < 0 && !k->refusing && !k->closing) { /* left before a head */
        drop(g, k);
        return -1;
    }
    if (k->client_eof && k->mfd >= 0 && k->in_ok == 0 && !k->library_shut) {
        shutdown(k->mfd, SHUT_WR); /* the library's watcher sees the client depart */
        k->library_shut = moved = 1;
    }
    return moved;
}

/* Writes what waits for the client. -1 when k was dropped, else whether anything moved. */
static int flush_to_client(srv_gate *g, gate_conn *k) {
    if (k->out_len == 0) return 0;
    ssize_t w = send(k->fd, k->out, k->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) {
        memmove(k->out, k->out + w, k->out_len - (size_t)w);
        k->out_len -= (size_t)w;
        k->out_total += (size_t)w;
        return 1;
    }
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        drop(g, k); /* the client is gone */
        return -1;
    }
    return 0;
}

/* The library's bytes toward the client: read while there is room (library_dry: it had none
 * left), written. -1 when k was dropped, else whether anything moved. */
static int library_to_client(srv_gate *g, gate_conn *k) {
    int moved = 0;
    k->library_dry = 0;
    if (k->mfd >= 0 && !k->library_eof && k->out_len < GATE_OUT_CAP) {
        ssize_t r = recv(k->mfd, k->out + k->out_len, GATE_OUT_CAP - k->out_len, MSG_DONTWAIT);
        if (r > 0) {
            k->out_len += (size_t)r;
            moved = 1;
        } else if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            k->library_eof = moved = 1;
        } else {
            k->library_dry = 1;
        }
    }
    return moved | flush_to_client(g, k);
}

/* The end of a connection: a refusal once the library is done with what came before it
 * (done_before: it was, as the pass began), or the library's close; then the rest of the answer
 * is flushed and the connection lingers. -1 when k was dropped or began lingering. */
static int settle(srv_gate *g, gate_conn *k, int done_before) {
    int moved = 0;
    if (k->refusing && !k->closing) {
        if (k->mfd < 0) { /* a first head: the library never saw the connection */
            refuse_now(g, k, &k->refusal);
            return -1;
        }
        if ((k->library_eof || (done_before && k->library_dry)) &&
            k->out_len + SRV_RAW_ERROR_MAX <= GATE_OUT_CAP) {
            close_library(g, k);
            k->out_len +=
                srv_conn_render_error(&k->refusal, k->out + k->out_len, GATE_OUT_CAP - k->out_len);
            srv_metrics_request(&g->s->metrics, "other", k->refusal.status, k->refusal.code);
            k->closing = moved = 1;
            k->t_closing = srv_now();
        }
    }
    if (k->library_eof && !k->refusing && !k->closing) { /* the library ended the connection */
        close_library(g, k);
        k->closing = moved = 1;
        k->t_closing = srv_now();
    }
    if (k->closing) {
        if (flush_to_client(g, k) < 0) return -1;
        if (k->out_len == 0) {
            start_lingering(g, k);
            return -1;
        }
    }
    return moved;
}

/* One pass of everything that can move on k without blocking; 1 when something moved, 0 when
 * nothing did or k was dropped or began lingering. */
static int pump_once(srv_gate *g, gate_conn *k) {
    const int done_before = k->refusing && k->mfd >= 0 && library_done(g, k);
    const int a = client_to_library(g, k);
    if (a < 0) return 0;
    const int b = library_to_client(g, k);
    if (b < 0) return 0;
    const int c = settle(g, k, done_before);
    if (c < 0) return 0;
    return a || b || c;
}

/* Drains a lingering connection's input; drops it at EOF or an error. */
static void linger(srv_gate *g, gate_conn *k) {
    ssize_t r;
    while ((r = recv(k->fd, g->scratch, sizeof g->scratch, MSG_DONTWAIT)) > 0) {
    }
    if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) drop(g, k);
}

/* Moves what can move on k, a bounded number of passes (one connection's fast stream must not
 * hold the others up); k->again when it stopped at the bound. */
static void pump(srv_gate *g, gate_conn *k) {
    k->again = 0;
    if (k->lingering) {
        linger(g, k);
        return;
    }
    for (int pass = 0; pump_once(g, k); pass++)
        if (pass == 16) {
            k->again = 1;
            return;
        }
    if (k->fd >= 0 && k->lingering) linger(g, k);
}

/* Deadlines: a first head that takes longer than --request-timeout, a linger that ran out. Also
 * re-pumps the connections that an event will not wake: stopped at the pass bound, or holding a
 * refusal until the library completes what came before it. Returns 1 when any still waits so. */
static int sweep(srv_gate *g) {
    const double now = srv_now(), limit = g->s->cfg.request_timeout_s;
    int waiting = 0;
    for (gate_conn *k = g->head, *next; k; k = next) {
        next = k->next;
        if (k->lingering) {
            if (now - k->t0 > GATE_LINGER_S) drop(g, k);
        } else if (k->mfd < 0 && !k->refusing && !k->closing && limit > 0 && now - k->t0 > limit) {
            char secs[32];
            snprintf(secs, sizeof secs, "%.0f", limit);
            srv_error e;
            srv_err_set(&e, 408, "invalid_request_error", "request_timeout", "",
                        "the request did not arrive within %s s (--request-timeout)", secs);
            refuse_now(g, k, &e);
            pthread_mutex_lock(&g->s->conn_mu);
            g->s->conns_timed_out++;
            pthread_mutex_unlock(&g->s->conn_mu);
        } else if (k->closing && now - k->t_closing > (limit > 0 ? limit : 60)) {
            drop(g, k); /* the rest of its answer waited that long for a client that reads */
        } else if (k->again || (k->refusing && !k->closing)) {
            pump(g, k);
            waiting |= k->fd >= 0 && (k->again || (k->refusing && !k->closing));
        }
    }
    return waiting;
}

static void *gate_main(void *arg) {
    srv_gate *g = arg;
    struct epoll_event evs[64];
    int waiting = 0;
    while (!atomic_load(&g->stop)) {
        int m = epoll_wait(g->ep, evs, 64, waiting ? 5 : 100);
        for (int i = 0; i < m; i++) {
            if (evs[i].data.ptr == NULL) {
                accept_all(g);
                continue;
            }
            gate_conn *k = evs[i].data.ptr; /* either of its sockets: one pump serves both */
            if (k->fd >= 0) pump(g, k);     /* else dropped earlier in this batch */
        }
        waiting = sweep(g);
        free_dead(g);
    }
    /* stopping: the answers the library completed may still be on their way; relay them for a
     * moment (every request is answered by now, srv_http_stop waits for that) */
    epoll_ctl(g->ep, EPOLL_CTL_DEL, g->lfd, NULL);
    for (double until = srv_now() + 1.0; srv_now() < until;) {
        int pending = 0;
        for (gate_conn *k = g->head, *next; k; k = next) {
            next = k->next;
            if (k->lingering) continue;
            pump(g, k);
            int queued = 0;
            if (k->fd >= 0 && k->mfd >= 0) ioctl(k->mfd, FIONREAD, &queued);
            pending |= k->fd >= 0 && !k->lingering && (k->out_len > 0 || queued > 0);
        }
        free_dead(g);
        if (!pending) break;
        usleep(1000);
    }
    return NULL;
}

int srv_gate_start(serve_server *s, int listen_fd, char *err, size_t errlen) {
    srv_gate *g = calloc(1, sizeof *g);
    if (!g) {
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
    free(g);
    s->gate = NULL;
}
