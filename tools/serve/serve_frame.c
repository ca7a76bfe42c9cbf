/* serve_frame.c — the request stream of one connection, as the gate relays it: where each request
 * head ends, whether libmicrohttpd may have it, and where its body (Content-Length bytes, or
 * chunked transfer-encoding) ends, so that the next head is found and vetted too.
 *
 * Why here and not in libmicrohttpd: 0.9.75 answers a bad head itself, in HTML (431, 414, 505, a
 * malformed Content-Length), and for a malformed Content-Length writes its header block twice.
 * The checks are exactly those the library would fail on, answered in the JSON error contract of
 * SERVING.md instead; a head that passes reaches the library byte for byte. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "serve_internal.h"

#define FRAME_HEADER_LINES 100 /* a head with more header lines is 431 */
#define FRAME_CHUNK_LINE 4096  /* a chunk-size line (with extensions) or trailer line past this */

static void refuse(srv_error *e, int status, const char *code, const char *fmt, const char *arg) {
    srv_err_set(e, status, "invalid_request_error", code, "", fmt, arg);
}

/* The value of header name in h[0..n) (lines after the first), trimmed, into out; how many
 * lines carry that name (0: absent). */
static int find_header(const char *h, size_t n, const char *name, char *out, size_t cap) {
    size_t nl = strlen(name);
    int found = 0;
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
            if (!found++) snprintf(out, cap, "%.*s", (int)(ve - v), v);
        }
        p = eol < end ? eol : NULL;
    }
    return found;
}

/* The checks of a complete head h[0..hn) (empty lines before it skipped): 0 when libmicrohttpd
 * may have it, else -1 with the answer in e. Sets the body that follows it in f. */
static int vet_head(srv_frame *f, const char *h, size_t hn, srv_error *e) {
    for (size_t i = 0; i < hn; i++) { /* a NUL would cut the C string the library hands over */
        unsigned char ch = (unsigned char)h[i];
        if ((ch < 0x20 && ch != '\t' && ch != '\r' && ch != '\n') || ch == 0x7f) {
            char at[24];
            snprintf(at, sizeof at, "0x%02x", ch);
            refuse(e, 400, "bad_header", "the request head holds the control byte %s", at);
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
        refuse(e, 400, "bad_request_line", "the request line '%.60s' is not METHOD PATH VERSION",
               line);
        return -1;
    }
    const char *ver = sp2 + 1;
    size_t vl = (size_t)(eol - ver);
    if (vl && ver[vl - 1] == '\r') vl--;
    if (vl != 8 || strncmp(ver, "HTTP/1.", 7) || ver[7] < '0' || ver[7] > '9') {
        refuse(e, 505, "http_version_not_supported",
               "the request line '%.60s' is not HTTP/1.0 or HTTP/1.1", line);
        return -1;
    }
    int lines = 0;
    for (const char *p = eol + 1; p < h + hn; lines++) { /* each header line: NAME: VALUE */
        if (lines > FRAME_HEADER_LINES) {
            refuse(e, 431, "headers_too_large", "the request has more than %s header lines", "100");
            return -1;
        }
        const char *nl = memchr(p, '\n', (size_t)(h + hn - p));
        size_t ll = (size_t)(nl - p);
        if (ll && p[ll - 1] == '\r') ll--;
        const char *colon = ll ? memchr(p, ':', ll) : NULL;
        const char *space = colon ? memchr(p, ' ', (size_t)(colon - p)) : NULL;
        if (ll && p[0] != ' ' && p[0] != '\t' && (!colon || colon == p || space)) {
            snprintf(line, sizeof line, "%.*s", (int)(ll < 60 ? ll : 60), p);
            refuse(e, 400, "bad_header", "the header line '%.60s' is not NAME: VALUE", line);
            return -1;
        }
        p = nl + 1;
    }
    char cl[64], te[64];
    const int n_cl = find_header(h, hn, "Content-Length", cl, sizeof cl);
    const int n_te = find_header(h, hn, "Transfer-Encoding", te, sizeof te);
    if (n_te) { /* the body's framing is chunked, whatever a Content-Length says (RFC 9112 6.3) */
        if (n_te > 1 || strcasecmp(te, "chunked") != 0) {
            refuse(e, 400, "unsupported_transfer_encoding",
                   "the Transfer-Encoding '%.40s' is not chunked", te);
            return -1;
        }
        f->state = FRAME_CHUNK_SIZE;
        return 0;
    }
    if (n_cl > 1) { /* two lengths: which one the library would take is a smuggler's question */
        refuse(e, 400, "invalid_content_length", "the request has %s Content-Length headers",
               "several");
        return -1;
    }
    if (n_cl && !srv_content_length_ok(cl)) {
        if (cl[0] && strspn(cl, "0123456789") == strlen(cl))
            refuse(e, 413, "body_too_large",
                   "the Content-Length %.40s is larger than any body accepted", cl);
        else
            refuse(e, 400, "invalid_content_length",
                   "the Content-Length '%.40s' is not a number of bytes", cl);
        return -1;
    }
    f->left = n_cl ? strtoull(cl, NULL, 10) : 0;
    f->state = f->left ? FRAME_BODY : FRAME_HEAD;
    return 0;
}

/* A head at b[0..n): its length when complete and good, 0 when more is needed, -1 refused. */
static long scan_head(srv_frame *f, const char *b, size_t n, srv_error *e) {
    size_t start = 0;
    while (start < n && (b[start] == '\r' || b[start] == '\n')) /* empty lines before a head */
        start++;
    const char *h = b + start, *end = NULL;
    const size_t hn = n - start;
    for (const char *p = memchr(h, '\n', hn); p; p = memchr(p + 1, '\n', hn - (size_t)(p + 1 - h)))
        if (p + 1 < h + hn && (p[1] == '\n' || (p[1] == '\r' && p + 2 < h + hn && p[2] == '\n'))) {
            end = p + (p[1] == '\n' ? 2 : 3);
            break;
        }
    /* the request line alone past the limit is 414, whether or not the rest of the head came in
     * the same read */
    const char *lf = memchr(h, '\n', hn);
    if ((lf ? (size_t)(lf - h) : hn) >= SRV_HEAD_MAX) {
        refuse(e, 414, "uri_too_long", "the request line is longer than %s bytes", "16384");
        return -1;
    }
    if (!end) {
        if (hn < SRV_HEAD_MAX) return 0;
        refuse(e, 431, "headers_too_large", "the request head is larger than %s bytes", "16384");
        return -1;
    }
    if ((size_t)(end - h) > SRV_HEAD_MAX) {
        refuse(e, 431, "headers_too_large", "the request head is larger than %s bytes", "16384");
        return -1;
    }
    if (vet_head(f, h, (size_t)(end - h), e)) return -1;
    f->heads++;
    return (long)(end - b);
}

/* One line (up to LF) at b[0..n) of a chunked body: its length with the LF, 0 when incomplete. */
static long chunk_line(const char *b, size_t n, srv_error *e) {
    const char *lf = memchr(b, '\n', n < FRAME_CHUNK_LINE ? n : FRAME_CHUNK_LINE);
    if (lf) return (long)(lf - b + 1);
    if (n >= FRAME_CHUNK_LINE) {
        refuse(e, 400, "bad_chunk", "a chunk-size or trailer line is longer than %s bytes", "4096");
        return -1;
    }
    return 0;
}

size_t srv_frame_scan(srv_frame *f, const char *b, size_t n, srv_error *e) {
    size_t used = 0;
    e->status = 0;
    while (used < n) {
        const char *p = b + used;
        const size_t left = n - used;
        long k;
        switch (f->state) {
        case FRAME_HEAD:
            if ((k = scan_head(f, p, left, e)) <= 0) return used;
            used += (size_t)k;
            break;
        case FRAME_BODY: {
            const size_t take = f->left < left ? (size_t)f->left : left;
            used += take;
            f->left -= take;
            if (!f->left) f->state = FRAME_HEAD;
            break;
        }
        case FRAME_CHUNK_SIZE: {
            if ((k = chunk_line(p, left, e)) <= 0) return used;
            unsigned long long size = 0;
            size_t i = 0, digits = 0;
            for (; i < (size_t)k; i++, digits++) {
                const char c = p[i];
                const int d = c >= '0' && c <= '9'   ? c - '0'
                              : c >= 'a' && c <= 'f' ? c - 'a' + 10
                              : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                     : -1;
                if (d < 0) break;
                if (size >> 59) { /* past 64 bits */
                    refuse(e, 413, "body_too_large", "a chunk is larger than any body %s",
                           "accepted");
                    return used;
                }
                size = size * 16 + (unsigned)d;
            }
            /* after the digits: optional spaces, ";extensions", CRLF */
            while (i < (size_t)k && (p[i] == ' ' || p[i] == '\t'))
                i++;
            if (!digits || (p[i] != ';' && p[i] != '\r' && p[i] != '\n')) {
                int ll = (int)k - 1; /* the line without its LF, nor the CR before it */
                if (ll > 0 && p[ll - 1] == '\r') ll--;
                char line[48];
                snprintf(line, sizeof line, "%.*s", ll < 40 ? ll : 40, p);
                refuse(e, 400, "bad_chunk", "the chunk-size line '%.40s' is not hexadecimal", line);
                return used;
            }
            used += (size_t)k;
            f->left = size;
            f->state = size ? FRAME_CHUNK_DATA : FRAME_TRAILER;
            break;
        }
        case FRAME_CHUNK_DATA: {
            const size_t take = f->left < left ? (size_t)f->left : left;
            used += take;
            f->left -= take;
            if (!f->left) f->state = FRAME_CHUNK_END;
            break;
        }
        case FRAME_CHUNK_END: /* the CRLF after a chunk's data */
            if ((k = chunk_line(p, left, e)) <= 0) return used;
            if (!(k == 1 || (k == 2 && p[0] == '\r'))) {
                refuse(e, 400, "bad_chunk", "a chunk's data is longer than its size%s", "");
                return used;
            }
            used += (size_t)k;
            f->state = FRAME_CHUNK_SIZE;
            break;
        case FRAME_TRAILER: /* trailer lines until an empty one */
            if ((k = chunk_line(p, left, e)) <= 0) return used;
            used += (size_t)k;
            if (k == 1 || (k == 2 && p[0] == '\r')) f->state = FRAME_HEAD;
            break;
        }
    }
    return used;
}
