/* tok_unicode.c — the Unicode facts the tokenizer needs: UTF-8 validation, the character
 * classes of the pre-tokenizer regexes (\p{L}, \p{N}, \s), NFC, and the GPT-2 byte alphabet. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tok_internal.h"

uint8_t tok_class_bmp[0x10000];
static pthread_once_t class_once = PTHREAD_ONCE_INIT;

void tok_byte_to_char(uint16_t out[256]) {
    /* Printable Latin-1 bytes stand for themselves; the other 68 bytes take 256, 257, ... in
     * byte order (GPT-2's bytes_to_unicode). */
    int next = 256;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        out[b] = (uint16_t)(printable ? b : next++);
    }
}

/* \s in Oniguruma (the engine Hugging Face `tokenizers` uses) is the Unicode White_Space
 * property — not Python's isspace (which adds U+001C..U+001F). */
static int is_white_space(uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

static uint8_t regex_class(uint32_t cp) {
    uint8_t c = 0;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
        c |= TOK_CL_L;
        break;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
        c |= TOK_CL_N;
        break;
    default:
        break;
    }
    if (is_white_space(cp)) c |= TOK_CL_S;
    if (cp == '\r' || cp == '\n') c |= TOK_CL_CRLF;
    return c;
}

uint8_t tok_class_supp(uint32_t cp) {
    /* Supplementary planes are never marked NFC-safe: they hold composition partners
     * (e.g. U+110BA) and are rare enough that the full NFC pass costs nothing. */
    return regex_class(cp);
}

/* A code point is NFC-safe when a string made only of such code points is unchanged by NFC:
 * it has combining class 0, no canonical decomposition, and is never the second half of a
 * canonical composition. Everything below U+0300 qualifies (no mark and no composition
 * partner lives there; precomposed Latin letters are their own NFC). */
static void build_class_table(void) {
    static uint8_t second[0x10000];
    utf8proc_int32_t buf[8];
    for (uint32_t cp = 0; cp < 0x110000; cp++) {
        if (cp >= 0xD800 && cp <= 0xDFFF) continue;
        const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)cp);
        if (p->decomp_seqindex == UINT16_MAX || p->decomp_type != 0) continue;
        int last = 0;
        utf8proc_ssize_t n =
            utf8proc_decompose_char((utf8proc_int32_t)cp, buf, 8, UTF8PROC_DECOMPOSE, &last);
        for (utf8proc_ssize_t i = 1; i < n && i < 8; i++)
            if (buf[i] < 0x10000) second[buf[i]] = 1;
    }
    for (uint32_t cp = 0; cp < 0x10000; cp++) {
        uint8_t c = regex_class(cp);
        if (cp < 0x300) {
            c |= TOK_CL_NFC_SAFE;
        } else if (!(cp >= 0xD800 && cp <= 0xDFFF) && !second[cp] &&
                   !(cp >= 0x1100 && cp <= 0x11FF) && !(cp >= 0xA960 && cp <= 0xA97F) &&
                   !(cp >= 0xD7B0 && cp <= 0xD7FF)) {
            const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)cp);
            int decomposes = p->decomp_seqindex != UINT16_MAX && p->decomp_type == 0;
            int hangul_syllable = cp >= 0xAC00 && cp <= 0xD7A3;
            if (p->combining_class == 0 && (!decomposes || hangul_syllable)) c |= TOK_CL_NFC_SAFE;
        }
        tok_class_bmp[cp] = c;
    }
}

void tok_unicode_init(void) {
    pthread_once(&class_once, build_class_table);
}

size_t tok_utf8_invalid_at(const uint8_t *s, size_t len, const char **why) {
    size_t i = 0;
    while (i < len) {
        /* ASCII runs dominate: check 8 bytes at a time. */
        while (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= len) break;
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int need;
        uint32_t min;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
            min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            min = 0x10000;
        } else {
            *why = (c >= 0x80 && c <= 0xBF)   ? "unexpected continuation byte"
                   : (c == 0xC0 || c == 0xC1) ? "overlong encoding"
                                              : "byte never valid in UTF-8";
            return i;
        }
        uint32_t cp = c & (0x3F >> need);
        for (int k = 1; k <= need; k++) {
            if (i + (size_t)k >= len) {
                *why = "truncated multi-byte sequence";
                return i;
            }
            uint8_t d = s[i + (size_t)k];
            if ((d & 0xC0) != 0x80) {
                *why = "multi-byte sequence missing a continuation byte";
                return i;
            }
            cp = (cp << 6) | (d & 0x3F);
        }
        if (cp < min) {
            *why = "overlong encoding";
            return i;
        }
        if (cp >= 0xD800 && cp <= 0xDFFF) {
            *why = "UTF-16 surrogate code point";
            return i;
        }
        if (cp > 0x10FFFF) {
            *why = "code point above U+10FFFF";
            return i;
        }
        i += (size_t)need + 1;
    }
    return (size_t)-1;
}

int tok_utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

const uint8_t *tok_nfc(const uint8_t *s, size_t len, size_t *out_len, uint8_t **owned) {
    *owned = NULL;
    *out_len = len;
    size_t i = 0;
    while (i < len) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        int n;
        uint32_t cp = tok_utf8_decode(s + i, &n);
        if (!(tok_class_of(cp) & TOK_CL_NFC_SAFE)) break;
        i += (size_t)n;
    }
    if (i >= len) return s; /* the common case: nothing can change */
    utf8proc_uint8_t *out = NULL;
    utf8proc_ssize_t n =
        utf8proc_map(s, (utf8proc_ssize_t)len, &out, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (n < 0) {
        free(out);
        return NULL;
    }
    *owned = out;
    *out_len = (size_t)n;
    return out;
}
