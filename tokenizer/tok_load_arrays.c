/* tok_load_arrays.c — a tokenizer from token / type / merge arrays (a GGUF file's
 * tokenizer.ggml.*): they are written out as the tokenizer.json Qwen3 ships (NFC normalizer,
 * Split with the Qwen2 regex + ByteLevel, BPE, TemplateProcessing appending the end token,
 * ByteLevel decoder) and loaded by the one tokenizer.json loader, so both sources give the same
 * tables and the same ids by construction. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

typedef struct {
    char *b;
    size_t n, cap;
    int oom;
} jbuf;

static void jput(jbuf *j, const char *s, size_t n) {
    if (j->oom) return;
    if (j->n + n + 1 > j->cap) {
        size_t cap = (j->n + n + 1) * 2;
        char *b = realloc(j->b, cap);
        if (!b) {
            j->oom = 1;
            return;
        }
        j->b = b;
        j->cap = cap;
    }
    memcpy(j->b + j->n, s, n);
    j->n += n;
    j->b[j->n] = 0;
}
static void jcat(jbuf *j, const char *s) {
    jput(j, s, strlen(s));
}

/* s[0..n) as a JSON string; -1 for a NUL byte (no tokenizer.json string can hold one). */
static int jstr(jbuf *j, const char *s, size_t n) {
    jput(j, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        const unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        jput(j, s + run, i - run);
        run = i + 1;
        if (!c) return -1;
        char esc[8];
        if (c == '"' || c == '\\')
            snprintf(esc, sizeof esc, "\\%c", c);
        else
            snprintf(esc, sizeof esc, "\\u%04x", c);
        jcat(j, esc);
    }
    jput(j, s + run, n - run);
    jput(j, "\"", 1);
    return 0;
}

static const char PIPELINE[] =
    "\"normalizer\":{\"type\":\"NFC\"},"
    "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\","
    "\"pattern\":{\"Regex\":\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?"
    "\\\\p{L}+|\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|"
    "\\\\s+(?!\\\\S)|\\\\s+\"},\"behavior\":\"Isolated\",\"invert\":false},"
    "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":false,"
    "\"use_regex\":false}]},"
    "\"decoder\":{\"type\":\"ByteLevel\"},";

tok_status tok_load_arrays(const tok_arrays *a, tok_tokenizer **out, char *err, size_t errlen) {
    *out = NULL;
    const char *src = a->source ? a->source : "tokenizer arrays";
    jbuf j = {0};
    int bad = -1;
    jcat(&j, "{");
    jcat(&j, PIPELINE);
    if (a->end_id >= 0) {
        if (a->end_id >= a->n_tokens) {
            tok_set_err(err, errlen, "%s: end token id %d is outside the %d tokens", src, a->end_id,
                        a->n_tokens);
            return TOK_ERR_FORMAT;
        }
        char ids[64];
        snprintf(ids, sizeof ids, "\"ids\":[%d]}}}", a->end_id);
        jcat(&j, "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"Sequence\":"
                 "{\"id\":\"A\",\"type_id\":0}},{\"SpecialToken\":{\"id\":\"END\",\"type_id\":0}}"
                 "],\"special_tokens\":{\"END\":{\"id\":\"END\",");
        jcat(&j, ids);
        jcat(&j, ",");
    }
    /* added tokens: control (special) and user-defined; the rest form the BPE vocabulary */
    jcat(&j, "\"added_tokens\":[");
    int first = 1;
    for (int i = 0; i < a->n_tokens; i++) {
        const int type = a->token_types ? a->token_types[i] : 1;
        if (type != 3 && type != 4) continue;
        char head[64];
        snprintf(head, sizeof head, "%s{\"id\":%d,\"special\":%s,\"content\":", first ? "" : ",", i,
                 type == 3 ? "true" : "false");
        jcat(&j, head);
        if (jstr(&j, a->tokens[i], a->token_lens ? a->token_lens[i] : strlen(a->tokens[i]))) {
            bad = i;
            goto nul;
        }
        jcat(&j, "}");
        first = 0;
    }
    jcat(&j, "],\"model\":{\"type\":\"BPE\",\"vocab\":{");
    first = 1;
    for (int i = 0; i < a->n_tokens; i++) {
        const int type = a->token_types ? a->token_types[i] : 1;
        if (type == 3 || type == 4 || type == 5) continue;
        if (!first) jcat(&j, ",");
        if (jstr(&j, a->tokens[i], a->token_lens ? a->token_lens[i] : strlen(a->tokens[i]))) {
            bad = i;
            goto nul;
        }
        char id[24];
        snprintf(id, sizeof id, ":%d", i);
        jcat(&j, id);
        first = 0;
    }
    jcat(&j, "},\"merges\":[");
    for (int i = 0; i < a->n_merges; i++) {
        if (i) jcat(&j, ",");
        if (jstr(&j, a->merges[i], a->merge_lens ? a->merge_lens[i] : strlen(a->merges[i]))) {
            tok_set_err(err, errlen, "%s: merge %d holds a NUL byte", src, i);
            free(j.b);
            return TOK_ERR_FORMAT;
        }
    }
    jcat(&j, "]}}");
    if (j.oom) {
        free(j.b);
        tok_set_err(err, errlen, "%s: out of memory", src);
        return TOK_ERR_NOMEM;
    }
    cJSON *root = cJSON_ParseWithLength(j.b, j.n);
    free(j.b);
    if (!root) {
        tok_set_err(err, errlen, "%s: cannot build the tokenizer (internal JSON error)", src);
        return TOK_ERR_FORMAT;
    }
    tok_status st = tok_load_root(root, src, out, err, errlen);
    cJSON_Delete(root);
    return st;
nul:
    free(j.b);
    tok_set_err(err, errlen, "%s: token %d holds a NUL byte", src, bad);
    return TOK_ERR_FORMAT;
}
