/* json_strict.c — see json_strict.h. */
#include "json_strict.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* RFC 8259: inside a string every byte below 0x20 must be escaped; between values only space, tab,
 * CR and LF are whitespace. cJSON takes any byte <= 0x20 as whitespace and copies raw control
 * bytes into strings, where a raw NUL silently ends the C string. Returns the offset of the first
 * offending byte, or -1. */
static long raw_control_at(const char *buf, size_t len, int *in_string) {
    int in = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (in) {
            if (c == '\\')
                i++; /* the escaped byte is checked by cJSON (it must be a valid escape) */
            else if (c == '"')
                in = 0;
            else if (c < 0x20) {
                *in_string = 1;
                return (long)i;
            }
        } else if (c == '"') {
            in = 1;
        } else if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
            *in_string = 0;
            return (long)i;
        }
    }
    return -1;
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first key that an object of v (at any depth) holds twice, or NULL. Sorting the names keeps
 * a body of a million keys at n log n. */
static const char *duplicate_key(const cJSON *v) {
    for (; v; v = v->next) {
        if (cJSON_IsObject(v) && v->child && v->child->next) {
            size_t n = 0;
            for (const cJSON *c = v->child; c; c = c->next)
                n++;
            const char **names = malloc(n * sizeof *names);
            if (!names) return "(out of memory)";
            size_t i = 0;
            for (const cJSON *c = v->child; c; c = c->next)
                names[i++] = c->string ? c->string : "";
            qsort(names, n, sizeof *names, cmp_names);
            const char *dup = NULL;
            for (i = 1; i < n && !dup; i++)
                if (!strcmp(names[i - 1], names[i])) dup = names[i];
            free(names);
            if (dup) return dup;
        }
        if ((cJSON_IsObject(v) || cJSON_IsArray(v)) && v->child) {
            const char *d = duplicate_key(v->child);
            if (d) return d;
        }
    }
    return NULL;
}

int json_has_escaped_nul(const char *buf, size_t len) {
    for (size_t i = 0; i + 1 < len; i++) {
        if (buf[i] != '\\') continue;
        /* an escape: "\\u0000" is NUL; "\\\\u0000" is a backslash then text, skipped here */
        if (buf[i + 1] == 'u' && i + 6 <= len && !memcmp(buf + i + 2, "0000", 4)) return 1;
        i++;
    }
    return 0;
}

/* The deepest nesting of arrays and objects, outside strings (cJSON refuses past
 * CJSON_NESTING_LIMIT, and its failure alone would read as a syntax error). */
static long max_depth(const char *buf, size_t len) {
    long depth = 0, deepest = 0;
    for (size_t i = 0, in_string = 0; i < len; i++) {
        const char c = buf[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = 0;
        } else if (c == '"')
            in_string = 1;
        else if (c == '[' || c == '{') {
            if (++depth > deepest) deepest = depth;
        } else if (c == ']' || c == '}')
            depth--;
    }
    return deepest;
}

cJSON *json_parse_strict(const char *buf, size_t len, const char **why) {
    static _Thread_local char reason[160];
    int in_string = 0;
    long at = raw_control_at(buf, len, &in_string);
    if (at >= 0) {
        snprintf(reason, sizeof reason,
                 "not valid JSON (a raw control byte 0x%02x at offset %ld%s: RFC 8259 wants "
                 "control characters escaped)",
                 (unsigned char)buf[at], at, in_string ? ", inside a string" : "");
        *why = reason;
        return NULL;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    if (!root) {
        const long deepest = max_depth(buf, len);
        if (deepest > CJSON_NESTING_LIMIT) {
            snprintf(reason, sizeof reason,
                     "not accepted: arrays and objects nested %ld deep, past the limit of %d",
                     deepest, CJSON_NESTING_LIMIT);
            *why = reason;
        } else
            *why = "not valid JSON";
        return NULL;
    }
    for (const char *p = end; p && p < buf + len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
            cJSON_Delete(root);
            *why = "not valid JSON (text after the value)";
            return NULL;
        }
    if (json_has_escaped_nul(buf, len)) {
        cJSON_Delete(root);
        *why = "not accepted: a string holds \\u0000 (NUL)";
        return NULL;
    }
    const char *dup = duplicate_key(root);
    if (dup) {
        snprintf(reason, sizeof reason,
                 "not accepted: the key \"%.60s\" appears twice in one object", dup);
        cJSON_Delete(root);
        *why = reason;
        return NULL;
    }
    return root;
}

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

size_t json_unescape_string(const char *p, char *out) {
    char *o = out;
    while (*p && *p != '"') {
        if (*p != '\\') {
            *o++ = *p++;
            continue;
        }
        p++;
        char c = *p++;
        switch (c) {
        case 'b':
            *o++ = '\b';
            break;
        case 'f':
            *o++ = '\f';
            break;
        case 'n':
            *o++ = '\n';
            break;
        case 'r':
            *o++ = '\r';
            break;
        case 't':
            *o++ = '\t';
            break;
        case 'u': {
            unsigned cp, lo;
            if (hex4(p, &cp)) goto done; /* cut short: keep what came before */
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && p[0] == '\\' && p[1] == 'u' && !hex4(p + 2, &lo) &&
                lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            }
            if (cp < 0x80) {
                *o++ = (char)cp;
            } else if (cp < 0x800) {
                *o++ = (char)(0xC0 | (cp >> 6));
                *o++ = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                *o++ = (char)(0xE0 | (cp >> 12));
                *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                *o++ = (char)(0x80 | (cp & 0x3F));
            } else {
                *o++ = (char)(0xF0 | (cp >> 18));
                *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
                *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
                *o++ = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default:
            *o++ = c;
            break; /* \" \\ \/ */
        }
    }
done:
    *o = 0;
    return (size_t)(o - out);
}

int json_utf8_valid(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int k;
        unsigned cp, min;
        if ((c & 0xE0) == 0xC0)
            k = 1, cp = c & 0x1F, min = 0x80;
        else if ((c & 0xF0) == 0xE0)
            k = 2, cp = c & 0x0F, min = 0x800;
        else if ((c & 0xF8) == 0xF0)
            k = 3, cp = c & 0x07, min = 0x10000;
        else
            return 0;
        for (int t = 1; t <= k; t++) {
            if (i + (size_t)t >= n || (s[i + t] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + t] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += (size_t)k + 1;
    }
    return 1;
}

static int utf8_ok(const char *s) {
    return json_utf8_valid((const unsigned char *)s, strlen(s));
}

/* Appends ".key" or "[i]" to path[0..len) (cut to fit); returns the new length. */
static size_t path_push(char *path, size_t cap, size_t len, const cJSON *parent, const cJSON *c,
                        int index) {
    if (len >= cap) return len;
    int n;
    if (cJSON_IsArray(parent))
        n = snprintf(path + len, cap - len, "[%d]", index);
    else
        n = snprintf(path + len, cap - len, len ? ".%s" : "%s",
                     c->string && utf8_ok(c->string) ? c->string : "?");
    size_t m = len + (n > 0 ? (size_t)n : 0);
    return m < cap ? m : cap - 1;
}

static int find_invalid_utf8(const cJSON *parent, char *path, size_t cap, size_t len, int *is_key) {
    int i = 0;
    for (const cJSON *c = parent->child; c; c = c->next, i++) {
        size_t m = path_push(path, cap, len, parent, c, i);
        if (cJSON_IsObject(parent) && c->string && !utf8_ok(c->string)) {
            *is_key = 1;
            return 1;
        }
        if (cJSON_IsString(c) && c->valuestring && !utf8_ok(c->valuestring)) {
            *is_key = 0;
            return 1;
        }
        if ((cJSON_IsObject(c) || cJSON_IsArray(c)) && find_invalid_utf8(c, path, cap, m, is_key))
            return 1;
        path[len] = 0;
    }
    return 0;
}

int json_find_invalid_utf8(const cJSON *root, char *path, size_t cap, int *is_key) {
    if (cap == 0) return 0;
    path[0] = 0;
    *is_key = 0;
    if (cJSON_IsString(root)) return root->valuestring && !utf8_ok(root->valuestring);
    if (!cJSON_IsObject(root) && !cJSON_IsArray(root)) return 0;
    return find_invalid_utf8(root, path, cap, 0, is_key);
}

long json_lone_surrogate_at(const char *buf, size_t len) {
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
