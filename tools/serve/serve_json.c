/* serve_json.c — what the strict parser's refusal does not say: where a body holds a lone UTF-16
 * surrogate escape (JavaScript's String of a cut surrogate pair serialises as "\ud800"), so the
 * client hears "invalid UTF-8 at byte N" instead of "not valid JSON". */
#include <stddef.h>

#include "serve_internal.h"

static int hex4(const char *p, unsigned *v) {
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        unsigned d = (c >= '0' && c <= '9')   ? (unsigned)(c - '0')
                     : (c >= 'a' && c <= 'f') ? (unsigned)(c - 'a' + 10)
                     : (c >= 'A' && c <= 'F') ? (unsigned)(c - 'A' + 10)
                                              : 16u;
        if (d > 15) return -1;
        *v = *v * 16 + d;
    }
    return 0;
}

long srv_json_lone_surrogate_at(const char *buf, size_t len) {
    int in_string = 0;
    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (!in_string) {
            in_string = c == '"';
            continue;
        }
        if (c == '"') {
            in_string = 0;
            continue;
        }
        if (c != '\\') continue;
        if (i + 1 >= len) return -1;
        unsigned cp, lo;
        if (buf[i + 1] != 'u' || i + 6 > len || hex4(buf + i + 2, &cp)) {
            i++; /* a two-character escape, or a broken one the parser already names */
            continue;
        }
        if (cp >= 0xDC00 && cp <= 0xDFFF) return (long)i; /* a low half with no high half */
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (i + 12 <= len && buf[i + 6] == '\\' && buf[i + 7] == 'u' &&
                !hex4(buf + i + 8, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
                i += 11; /* a well-formed pair */
                continue;
            }
            return (long)i;
        }
        i += 5;
    }
    return -1;
}
