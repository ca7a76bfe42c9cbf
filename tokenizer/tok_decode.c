/* tok_decode.c — ids back to text: each id's bytes (byte-level alphabet undone at load), then
 * invalid UTF-8 replaced by U+FFFD per maximal invalid subpart, as Hugging Face's ByteLevel
 * decoder does (Rust's String::from_utf8_lossy). */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

/* Length of the valid UTF-8 sequence at s (> 0), or minus the length of the maximal invalid
 * subpart to replace by one U+FFFD. */
static int utf8_step(const uint8_t *s, size_t avail) {
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    int need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        return -1;
    }
    for (int k = 1; k <= need; k++) {
        if ((size_t)k >= avail) return -k;
        uint8_t d = s[k];
        if (k == 1 ? (d < lo || d > hi) : (d < 0x80 || d > 0xBF)) return -k;
    }
    return need + 1;
}

tok_status tok_decode(const tok_tokenizer *t, const int32_t *ids, int n, int skip_special,
                      char **text, size_t *len, char *err, size_t errlen) {
    *text = NULL;
    if (len) *len = 0;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || !t->id_present[id]) {
            tok_set_err(err, errlen, "id %d at position %d is outside the vocabulary (%d ids)",
                        (int)id, i, t->n_ids);
            return TOK_ERR_ID;
        }
        total += t->id_off[id + 1] - t->id_off[id];
    }
    uint8_t *raw = malloc(total + 1);
    char *out = malloc(3 * total + 1); /* each invalid byte may become 3 bytes of U+FFFD */
    if (!raw || !out) {
        free(raw);
        free(out);
        tok_set_err(err, errlen, "out of memory decoding %d ids", n);
        return TOK_ERR_NOMEM;
    }
    size_t r = 0;
    for (int i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (skip_special && t->id_special[id]) continue;
        size_t k = t->id_off[id + 1] - t->id_off[id];
        memcpy(raw + r, t->id_bytes + t->id_off[id], k);
        r += k;
    }
    size_t o = 0;
    for (size_t i = 0; i < r;) {
        int step = utf8_step(raw + i, r - i);
        if (step > 0) {
            memcpy(out + o, raw + i, (size_t)step);
            o += (size_t)step;
            i += (size_t)step;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += (size_t)-step;
        }
    }
    out[o] = 0;
    free(raw);
    *text = out;
    if (len) *len = o;
    return TOK_OK;
}
