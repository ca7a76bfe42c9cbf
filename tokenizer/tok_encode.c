/* tok_encode.c — the encode pipeline: validate UTF-8, split out added tokens (longest match at
 * the leftmost position, as Hugging Face does), NFC each remaining segment, pre-tokenize it into
 * words, BPE each word, then wrap in the post-processor's template and truncate. */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

static tok_status encode_segment(const tok_tokenizer *t, const uint8_t *s, size_t len,
                                 tok_idbuf *out) {
    if (len == 0) return TOK_OK;
    uint8_t *owned = NULL, *prefixed = NULL;
    if (t->nfc) {
        s = tok_nfc(s, len, &len, &owned);
        if (!s) return TOK_ERR_NOMEM;
    }
    if (t->add_prefix_space && s[0] != ' ') {
        prefixed = malloc(len + 1);
        if (!prefixed) {
            free(owned);
            return TOK_ERR_NOMEM;
        }
        prefixed[0] = ' ';
        memcpy(prefixed + 1, s, len);
        s = prefixed;
        len++;
    }
    tok_status st = TOK_OK;
    for (size_t pos = 0; pos < len;) {
        size_t end = tok_pretok_next(t->split, s, len, pos);
        if (tok_bpe_word(t, s + pos, end - pos, out) != 0) {
            st = TOK_ERR_NOMEM;
            break;
        }
        pos = end;
    }
    free(owned);
    free(prefixed);
    return st;
}

/* The added token starting exactly at s[i], longest first; NULL if none. */
static const tok_added *added_at(const tok_tokenizer *t, const uint8_t *s, size_t len, size_t i) {
    if (!t->added_first[s[i]]) return NULL;
    for (int k = 0; k < t->n_added; k++) {
        const tok_added *a = &t->added[k];
        if ((size_t)a->len <= len - i && !memcmp(s + i, a->content, (size_t)a->len)) return a;
    }
    return NULL;
}

static int white_space_at(const uint8_t *s, size_t i, int *n) {
    return (tok_class_of(tok_utf8_decode(s + i, n)) & TOK_CL_S) != 0;
}

/* Start of the white space that ends at `end` (for lstrip). */
static size_t strip_left(const uint8_t *s, size_t from, size_t end) {
    while (end > from) {
        size_t p = end - 1;
        while (p > from && (s[p] & 0xC0) == 0x80)
            p--;
        int n;
        if (!white_space_at(s, p, &n)) break;
        end = p;
    }
    return end;
}

static tok_status encode_text(const tok_tokenizer *t, const uint8_t *s, size_t len,
                              tok_idbuf *out) {
    size_t seg = 0;
    for (size_t i = 0; t->n_added && i < len;) {
        const tok_added *a = added_at(t, s, len, i);
        if (!a) {
            i++;
            continue;
        }
        size_t seg_end = a->lstrip ? strip_left(s, seg, i) : i;
        tok_status st = encode_segment(t, s + seg, seg_end - seg, out);
        if (st != TOK_OK) return st;
        if (tok_idbuf_push(out, &a->id, 1) != 0) return TOK_ERR_NOMEM;
        i += (size_t)a->len;
        int n;
        if (a->rstrip)
            while (i < len && white_space_at(s, i, &n))
                i += (size_t)n;
        seg = i;
    }
    return encode_segment(t, s + seg, len - seg, out);
}

/* Keeps at most max_length ids: the template's prefix and suffix stay (the suffix first when
 * even they do not fit), the sequence between them loses its end (or start). */
static void truncate_ids(const tok_tokenizer *t, tok_idbuf *b, int add_special, int max_length,
                         int left) {
    size_t np = add_special ? (size_t)t->n_prefix : 0, ns = add_special ? (size_t)t->n_suffix : 0;
    size_t max = (size_t)max_length;
    if (max < np + ns) { /* the suffix's tail (the end token) first, then the prefix's head */
        size_t ks = ns < max ? ns : max, kp = max - ks;
        memmove(b->ids + kp, b->ids + (b->n - ks), ks * sizeof *b->ids);
        b->n = max;
        return;
    }
    size_t body = b->n - np - ns, keep = max - np - ns;
    int32_t *body_start = b->ids + np;
    if (left) memmove(body_start, body_start + (body - keep), keep * sizeof *b->ids);
    memmove(body_start + keep, body_start + body, ns * sizeof *b->ids);
    b->n = max;
}

tok_status tok_encode(const tok_tokenizer *t, const char *text, size_t len,
                      const tok_encode_opts *opts, int32_t **ids, int *n_ids, char *err,
                      size_t errlen) {
    static const tok_encode_opts defaults = {1, 0, 0, 0};
    if (!opts) opts = &defaults;
    *ids = NULL;
    *n_ids = 0;
    const uint8_t *s = (const uint8_t *)text;
    const char *why = "";
    size_t bad = tok_utf8_invalid_at(s, len, &why);
    if (bad != (size_t)-1) {
        tok_set_err(err, errlen, "invalid UTF-8 at byte offset %zu of the text (byte 0x%02X): %s",
                    bad, s[bad], why);
        return TOK_ERR_UTF8;
    }
    if (len > (size_t)INT32_MAX / 2) {
        tok_set_err(err, errlen, "text of %zu bytes is too large to tokenize", len);
        return TOK_ERR_TOO_LONG;
    }
    tok_idbuf b = {0};
    b.cap = len / 3 + 16;
    b.ids = malloc(b.cap * sizeof *b.ids);
    tok_status st = b.ids ? TOK_OK : TOK_ERR_NOMEM;
    if (st == TOK_OK && opts->add_special && tok_idbuf_push(&b, t->prefix_ids, (size_t)t->n_prefix))
        st = TOK_ERR_NOMEM;
    if (st == TOK_OK) st = encode_text(t, s, len, &b);
    if (st == TOK_OK && opts->add_special && tok_idbuf_push(&b, t->suffix_ids, (size_t)t->n_suffix))
        st = TOK_ERR_NOMEM;
    if (st == TOK_OK && opts->max_length > 0 && b.n > (size_t)opts->max_length) {
        if (opts->no_truncate) {
            tok_set_err(err, errlen, "text is %zu tokens, longer than max_length %d", b.n,
                        opts->max_length);
            st = TOK_ERR_TOO_LONG;
        } else {
            truncate_ids(t, &b, opts->add_special, opts->max_length, opts->truncate_left);
        }
    }
    if (st != TOK_OK) {
        if (st == TOK_ERR_NOMEM)
            tok_set_err(err, errlen, "out of memory tokenizing %zu bytes", len);
        free(b.ids);
        return st;
    }
    *ids = b.ids;
    *n_ids = (int)b.n;
    return TOK_OK;
}
