/* sbuf.h — a growable byte buffer: response bodies in the server, response capture in the load
 * generator and the tests. A failed allocation sets oom and later writes do nothing, so a caller
 * checks once at the end (sb_take returns NULL). */
#ifndef QE_SBUF_H
#define QE_SBUF_H
#include <stddef.h>

typedef struct sbuf {
    char *p; /* NUL-terminated once anything was written */
    size_t len, cap;
    int oom;
} sbuf;

void sb_reserve(sbuf *b, size_t extra);
void sb_put(sbuf *b, const char *s, size_t n);
void sb_puts(sbuf *b, const char *s);
void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
char *sb_take(sbuf *b, size_t *len); /* NUL-terminated, caller frees; NULL after an oom */
void sb_clear(sbuf *b);              /* empty again, keeping the allocation for reuse */
void sb_free(sbuf *b);

#endif
