/* tok_pretokenize.c — splits text into words exactly as the pre-tokenizer regexes do, written
 * out by hand (no regex engine). Qwen2:
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|
 *   \s*[\r\n]+|\s+(?!\S)|\s+
 * GPT-2 (ByteLevel with use_regex):
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * Alternatives are tried in order and quantifiers are greedy with backtracking, as in
 * Oniguruma; every position matches some alternative, so words tile the text. */
#include "tok_internal.h"

/* Class of the code point at s[i] (i < len); *n gets its byte length. ASCII is a table hit. */
static inline uint8_t class_at(const uint8_t *s, size_t i, int *n) {
    if (s[i] < 0x80) {
        *n = 1;
        return tok_class_bmp[s[i]];
    }
    return tok_class_of(tok_utf8_decode(s + i, n));
}

#define OTHER(c) (((c) & (TOK_CL_L | TOK_CL_N | TOK_CL_S)) == 0)

static inline size_t run_of(const uint8_t *s, size_t len, size_t j, uint8_t want) {
    int n;
    while (j < len && (class_at(s, j, &n) & want))
        j += (size_t)n;
    return j;
}

static inline size_t run_of_other(const uint8_t *s, size_t len, size_t j) {
    int n;
    while (j < len && OTHER(class_at(s, j, &n)))
        j += (size_t)n;
    return j;
}

static inline int lower_ascii(uint8_t c) {
    return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

/* The contraction alternatives; returns the match length or 0. Case-insensitive matching in
 * Oniguruma also folds U+017F LATIN SMALL LETTER LONG S to 's'. */
static size_t contraction(const uint8_t *s, size_t len, size_t i, int fold) {
    if (s[i] != '\'' || i + 1 >= len) return 0;
    int a = fold ? lower_ascii(s[i + 1]) : s[i + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (fold && s[i + 1] == 0xC5 && i + 2 < len && s[i + 2] == 0xBF) return 3;
    if (i + 2 >= len) return 0;
    int b = fold ? lower_ascii(s[i + 2]) : s[i + 2];
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

/* Whitespace run starting at i: \s+(?!\S) gives back the last white-space character when a
 * non-space follows, so that character joins the next word; a lone one matches \s+. */
static size_t whitespace_word(const uint8_t *s, size_t len, size_t i, int crlf_rule) {
    size_t j = i, last = i, last_crlf_end = 0;
    int n;
    while (j < len) {
        uint8_t c = class_at(s, j, &n);
        if (!(c & TOK_CL_S)) break;
        if (c & TOK_CL_CRLF) last_crlf_end = j + (size_t)n;
        last = j;
        j += (size_t)n;
    }
    /* \s*[\r\n]+ : greedy \s* backs off to the last \r or \n of the run. */
    if (crlf_rule && last_crlf_end) return last_crlf_end;
    if (j == len) return j;
    return last > i ? last : j;
}

static size_t qwen2_next(const uint8_t *s, size_t len, size_t i) {
    size_t m = contraction(s, len, i, 1);
    if (m) return i + m;
    int n0;
    uint8_t c0 = class_at(s, i, &n0);
    size_t j = i + (size_t)n0;
    if (c0 & TOK_CL_L) return run_of(s, len, j, TOK_CL_L);
    if (!(c0 & (TOK_CL_L | TOK_CL_N | TOK_CL_CRLF)) && j < len) {
        int n1;
        if (class_at(s, j, &n1) & TOK_CL_L) return run_of(s, len, j + (size_t)n1, TOK_CL_L);
    }
    if (c0 & TOK_CL_N) return j;
    /* ' ?[^\s\p{L}\p{N}]+[\r\n]*' */
    size_t k = (s[i] == ' ') ? i + 1 : i;
    int nk;
    if (k < len && OTHER(class_at(s, k, &nk))) {
        k = run_of_other(s, len, k);
        while (k < len && (s[k] == '\r' || s[k] == '\n'))
            k++;
        return k;
    }
    return whitespace_word(s, len, i, 1);
}

static size_t gpt2_next(const uint8_t *s, size_t len, size_t i) {
    size_t m = contraction(s, len, i, 0);
    if (m) return i + m;
    size_t k = (s[i] == ' ' && i + 1 < len) ? i + 1 : i;
    int n;
    uint8_t c = class_at(s, k, &n);
    if (c & TOK_CL_L) return run_of(s, len, k, TOK_CL_L);
    if (c & TOK_CL_N) return run_of(s, len, k, TOK_CL_N);
    if (OTHER(c)) return run_of_other(s, len, k);
    return whitespace_word(s, len, i, 0);
}

size_t tok_pretok_next(tok_split_kind kind, const uint8_t *s, size_t len, size_t pos) {
    switch (kind) {
    case TOK_SPLIT_QWEN2:
        return qwen2_next(s, len, pos);
    case TOK_SPLIT_GPT2:
        return gpt2_next(s, len, pos);
    case TOK_SPLIT_NONE:
        break;
    }
    return len;
}
