/* serve_tei.c — what only TEI's API has: its error shape and statuses, /tokenize with offsets,
 * /similarity, and /embed_all's per-token answer. The shapes follow text-embeddings-inference's
 * router (router/src/http/types.rs) so its clients (huggingface_hub, @huggingface/inference) read
 * our answers as TEI's. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "serve_internal.h"
#include "tokenizer.h"

/* TEI's ErrorType and the status it maps to (Validation and Tokenizer 422, Empty 400,
 * Overloaded 429, Unhealthy 503, Backend 424); the size limits keep 413 as TEI's batch-size
 * check does. Auth, routing and method errors have no TEI type: they keep their status and
 * name it. */
static const char *tei_type(const srv_error *e, int *status) {
    const char *code = e->code ? e->code : "";
    *status = e->status;
    if (!strcmp(code, "tokenizer_error") || !strcmp(code, "tokenization_failed")) {
        *status = 422;
        return "Tokenizer";
    }
    switch (e->status) {
    case 400:
        if (!strcmp(code, "empty_input")) return "Empty";
        *status = 422;
        return "Validation";
    case 401:
        return "Unauthorized";
    case 404:
        return "NotFound";
    case 405:
        return "MethodNotAllowed";
    case 413:
        return "Validation";
    case 429:
        return "Overloaded";
    case 503:
        return "Unhealthy";
    default:
        if (e->status >= 500) {
            *status = 424;
            return "Backend";
        }
        return "Validation";
    }
}

char *srv_render_tei_error(const srv_error *e, int *status, size_t *len) {
    const char *type = tei_type(e, status);
    sbuf b = {0};
    sb_puts(&b, "{\"error\":");
    sb_json_string(&b, e->message, strlen(e->message));
    sb_puts(&b, ",\"error_type\":");
    sb_json_string(&b, type, strlen(type));
    sb_puts(&b, "}");
    return sb_take(&b, len);
}

/* Where a token's bytes lie in the text it came from: at pos exactly, or after white space an
 * added token's strip swallowed. Returns the start, or -1 when the text was changed under it
 * (NFC normalisation). */
static long token_at(const char *text, size_t n, size_t pos, const char *tb, size_t tl) {
    for (size_t p = pos; p <= n && p - pos <= 16; p++) {
        if (tl <= n - p && !memcmp(text + p, tb, tl)) return (long)p;
        if (p < n && text[p] != ' ' && text[p] != '\n' && text[p] != '\t' && text[p] != '\r') break;
    }
    return -1;
}

/* One input's tokens as TEI's SimpleToken list. Offsets are bytes into the text tokenized (the
 * prompt included when prompt_name is given); special tokens have null offsets and their
 * content as text, as in TEI. Where NFC changed the text the offsets follow the token lengths
 * (approximate). */
static void put_tokens(sbuf *b, const tok_tokenizer *tk, const char *text, size_t n,
                       const int32_t *ids, int nid) {
    size_t pos = 0;
    sb_put(b, "[", 1);
    for (int k = 0; k < nid; k++) {
        size_t tl = 0;
        const char *tb = tok_token_bytes(tk, ids[k], &tl);
        if (!tb) tb = "", tl = 0;
        const int special = tok_is_special(tk, ids[k]);
        long at = token_at(text, n, pos, tb, tl);
        sb_printf(b, "%s{\"id\":%d,\"text\":", k ? "," : "", (int)ids[k]);
        if (special) {
            if (at >= 0) pos = (size_t)at + tl; /* typed in the text: step over it */
            sb_json_string(b, tb, tl);
            sb_puts(b, ",\"special\":true,\"start\":null,\"stop\":null}");
            continue;
        }
        size_t start = at >= 0 ? (size_t)at : pos;
        size_t stop = start + tl <= n ? start + tl : n;
        sb_json_string(b, text + start, stop - start);
        sb_printf(b, ",\"special\":false,\"start\":%zu,\"stop\":%zu}", start, stop);
        pos = stop;
    }
    sb_put(b, "]", 1);
}

/* /tokenize {"inputs": str | [str], "add_special_tokens": bool = true, "prompt_name": str}
 *   -> [[{"id", "text", "special", "start", "stop"}, ...], ...] (one list per input) */
char *srv_handle_tokenize(serve_server *s, const char *body, size_t len, size_t *out_len,
                          srv_error *e) {
    cJSON *root = srv_parse_body_object(body, len, e);
    sbuf b = {0};
    if (!root) return NULL;
    const srv_model *m = srv_model_with_tokenizer(s, root, e);
    if (!m) goto fail;
    const cJSON *in = srv_json_field(root, "inputs");
    int add_special;
    const char *prefix = "";
    if (srv_read_bool(root, "add_special_tokens", 1, &add_special, e)) goto fail;
    const cJSON *pn = srv_json_field(root, "prompt_name");
    if (pn) {
        prefix = cJSON_IsString(pn) ? tok_prompt(m->tok, pn->valuestring) : NULL;
        if (!prefix) {
            srv_err_set(e, 400, "invalid_request_error", NULL, "prompt_name",
                        "unknown prompt_name (the model folder defines none by that name)");
            goto fail;
        }
    }
    if (!in || !(cJSON_IsString(in) || (cJSON_IsArray(in) && cJSON_GetArraySize(in) > 0))) {
        const int empty = in && cJSON_IsArray(in); /* an empty array: TEI's Empty */
        srv_err_set(e, 400, "invalid_request_error", empty ? "empty_input" : NULL, "inputs",
                    "'inputs' must be a string or a non-empty array of strings");
        goto fail;
    }
    int n = cJSON_IsString(in) ? 1 : cJSON_GetArraySize(in);
    if (srv_over_client_batch(s, n, "inputs", "inputs", e)) goto fail;
    sb_put(&b, "[", 1);
    const cJSON *x = cJSON_IsString(in) ? in : in->child;
    for (int i = 0; i < n; i++, x = x->next) {
        if (!cJSON_IsString(x)) {
            srv_err_set(e, 400, "invalid_request_error", NULL, "inputs",
                        "'inputs' must contain strings only");
            goto fail;
        }
        size_t tl = strlen(x->valuestring);
        if (tl == 0) { /* as on the embedding routes: nothing to tokenize but the template */
            srv_err_set(e, 400, "invalid_request_error", "empty_input", "inputs",
                        "input %d is an empty string", i);
            goto fail;
        }
        if (!srv_utf8_valid((const unsigned char *)x->valuestring, tl)) {
            srv_err_set(e, 400, "invalid_request_error", "invalid_utf8", "inputs",
                        "input %d is not valid UTF-8", i);
            goto fail;
        }
        size_t pl = strlen(prefix);
        char *full = malloc(pl + tl + 1);
        if (!full) goto oom;
        memcpy(full, prefix, pl);
        memcpy(full + pl, x->valuestring, tl + 1);
        tok_encode_opts o = {.add_special = add_special};
        int32_t *ids = NULL;
        int nid = 0;
        char terr[200];
        tok_status st = tok_encode(m->tok, full, pl + tl, &o, &ids, &nid, terr, sizeof terr);
        if (st != TOK_OK) {
            srv_err_set(e, st == TOK_ERR_NOMEM ? 500 : 400, "invalid_request_error",
                        st == TOK_ERR_UTF8 ? "invalid_utf8" : "tokenization_failed", "inputs",
                        "input %d: %s", i, terr);
            free(full);
            free(ids);
            goto fail;
        }
        if (i) sb_put(&b, ",", 1);
        put_tokens(&b, m->tok, full, pl + tl, ids, nid);
        free(full);
        free(ids);
    }
    sb_put(&b, "]", 1);
    cJSON_Delete(root);
    char *r = sb_take(&b, out_len);
    if (!r) srv_err_oom(e);
    return r;
oom:
    srv_err_oom(e);
fail:
    sb_free(&b);
    cJSON_Delete(root);
    return NULL;
}

/* TEI's similarity request becomes an embedding request of [source, sentences...] with the
 * parameters at the top level: one validator for every family. */
srv_job *srv_parse_similarity(serve_server *s, const char *body, size_t len, srv_error *e) {
    cJSON *root = srv_parse_body_object(body, len, e);
    if (!root) return NULL;
    srv_job *j = NULL;
    cJSON *req = NULL;
    const cJSON *in = srv_json_field(root, "inputs");
    const cJSON *src = in ? srv_json_field(in, "source_sentence") : NULL;
    const cJSON *sents = in ? srv_json_field(in, "sentences") : NULL;
    if (!cJSON_IsObject(in) || !cJSON_IsString(src) || !cJSON_IsArray(sents)) {
        srv_err_set(e, 400, "invalid_request_error", NULL, "inputs",
                    "'inputs' must be {\"source_sentence\": string, \"sentences\": [string, ...]}");
        goto done;
    }
    if (cJSON_GetArraySize(sents) == 0) {
        srv_err_set(e, 400, "invalid_request_error", "empty_input", "inputs",
                    "'inputs.sentences' must not be empty");
        goto done;
    }
    const cJSON *params = srv_json_field(root, "parameters");
    if (params && !cJSON_IsObject(params)) {
        srv_err_set(e, 400, "invalid_request_error", NULL, "parameters",
                    "'parameters' must be an object");
        goto done;
    }
    req = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(req, "inputs");
    if (!req || !arr) goto oom;
    cJSON_AddItemToArray(arr, cJSON_CreateString(src->valuestring));
    const cJSON *x;
    int i = 0;
    cJSON_ArrayForEach(x, sents) {
        /* said here, by their own names: below they would be inputs i + 1 and 0 of the request */
        if (!cJSON_IsString(x)) {
            srv_err_set(e, 400, "invalid_request_error", NULL, "inputs",
                        "'inputs.sentences[%d]' must be a string", i);
            goto done;
        }
        if (!x->valuestring[0] || !src->valuestring[0]) {
            if (x->valuestring[0])
                srv_err_set(e, 400, "invalid_request_error", "empty_input", "inputs",
                            "'inputs.source_sentence' is an empty string");
            else
                srv_err_set(e, 400, "invalid_request_error", "empty_input", "inputs",
                            "'inputs.sentences[%d]' is an empty string", i);
            goto done;
        }
        i++;
        cJSON *d = cJSON_Duplicate(x, 1);
        if (!d) goto oom;
        cJSON_AddItemToArray(arr, d);
    }
    static const char *copied[] = {"truncate", "truncation_direction", "prompt_name"};
    for (int k = 0; k < 3; k++) {
        const cJSON *f = params ? srv_json_field(params, copied[k]) : NULL;
        if (!f) f = srv_json_field(root, copied[k]);
        if (f) cJSON_AddItemToObject(req, copied[k], cJSON_Duplicate(f, 1));
    }
    j = srv_embed_from_json(s, ROUTE_SIMILARITY, req, e);
    goto done;
oom:
    srv_err_oom(e);
done:
    cJSON_Delete(req);
    cJSON_Delete(root);
    return j;
}

static void put_floats(sbuf *b, const float *v, int n) {
    sb_reserve(b, (size_t)n * 17 + 2);
    if (b->oom) return;
    char *o = b->p + b->len;
    *o++ = '[';
    for (int i = 0; i < n; i++) {
        if (i) *o++ = ',';
        o += srv_format_float(v[i], o);
    }
    *o++ = ']';
    b->len = (size_t)(o - b->p);
    b->p[b->len] = 0;
}

char *srv_render_tei(serve_server *s, const srv_job *j, size_t *len) {
    (void)s;
    sbuf b = {0};
    sb_put(&b, "[", 1);
    if (j->route == ROUTE_SIMILARITY) {
        /* cosine similarity: the vectors are unit length, so the dot product */
        const float *a = j->out;
        for (int i = 1; i < j->n; i++) {
            const float *v = j->out + (size_t)i * j->dims;
            double dot = 0;
            for (int k = 0; k < j->dims; k++)
                dot += (double)a[k] * v[k];
            char num[24];
            srv_format_float((float)dot, num);
            sb_printf(&b, "%s%s", i > 1 ? "," : "", num);
        }
    } else {
        for (int i = 0; i < j->n; i++) {
            sb_put(&b, i ? ",[" : "[", i ? 2 : 1);
            for (int t = 0; t < j->lens[i]; t++) {
                if (t) sb_put(&b, ",", 1);
                put_floats(&b, j->tok_out[i] + (size_t)t * j->width, j->width);
            }
            sb_put(&b, "]", 1);
        }
    }
    sb_put(&b, "]", 1);
    return sb_take(&b, len);
}
