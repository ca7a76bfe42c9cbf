/* tok_api.c — the small accessors of the public API: status names, error text, vocabulary
 * size, end id, prompts, instruction formatting. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

void tok_set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

const char *tok_status_name(tok_status s) {
    switch (s) {
    case TOK_OK:
        return "ok";
    case TOK_ERR_IO:
        return "io error";
    case TOK_ERR_FORMAT:
        return "malformed tokenizer.json";
    case TOK_ERR_UNSUPPORTED:
        return "unsupported tokenizer";
    case TOK_ERR_UTF8:
        return "invalid UTF-8";
    case TOK_ERR_TOO_LONG:
        return "input too long";
    case TOK_ERR_ID:
        return "id outside the vocabulary";
    case TOK_ERR_NOMEM:
        return "out of memory";
    }
    return "unknown status";
}

int tok_vocab_size(const tok_tokenizer *t) {
    return t->n_ids;
}

int tok_end_id(const tok_tokenizer *t) {
    return t->n_suffix ? t->suffix_ids[t->n_suffix - 1] : -1;
}

char *tok_format_instruction(const char *task, const char *text) {
    /* Qwen3-Embedding's query format: no space after "Query:". */
    size_t n = strlen("Instruct: ") + strlen(task) + strlen("\nQuery:") + strlen(text) + 1;
    char *s = malloc(n);
    if (s) snprintf(s, n, "Instruct: %s\nQuery:%s", task, text);
    return s;
}

const char *tok_token_bytes(const tok_tokenizer *t, int32_t id, size_t *len) {
    *len = 0;
    if (id < 0 || id >= t->n_ids || !t->id_present[id]) return NULL;
    *len = t->id_off[id + 1] - t->id_off[id];
    return t->id_bytes + t->id_off[id];
}

int tok_is_special(const tok_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_ids && t->id_special[id];
}
