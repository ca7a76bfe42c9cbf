/* serve_request.c — parses and validates request bodies (OpenAI /v1/embeddings, TEI /embed and
 * /, /decode; /tokenize, /similarity and /embed_all are in serve_tei.c) into jobs or direct
 * answers. Every rejection carries the status of SERVING.md's error table and names the offending
 * field. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "json_strict.h"
#include "serve_internal.h"
#include "tokenizer.h"

#define BAD(e, param, ...)                                                                         \
    srv_err_set((e), 400, "invalid_request_error", NULL, (param), __VA_ARGS__)

/* A field, with JSON null read as absent (clients send "dimensions": null). */
const cJSON *srv_json_field(const cJSON *obj, const char *name) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(obj, name);
    return (f && !cJSON_IsNull(f)) ? f : NULL;
}

/* Strict UTF-8 (json_strict.c's: no overlongs, no surrogates, nothing past U+10FFFF). */
int srv_utf8_valid(const unsigned char *s, size_t n) {
    return json_utf8_valid(s, n);
}

/* 413 when a request carries more inputs than --max-client-batch. */
int srv_over_client_batch(const serve_server *s, int n, const char *param, const char *what,
                          srv_error *e) {
    if (n <= s->cfg.max_client_batch) return 0;
    srv_err_set(e, 413, "invalid_request_error", "too_many_inputs", param,
                "%d %s is more than the limit of %d per request", n, what, s->cfg.max_client_batch);
    return 1;
}

/* A JSON number that is an integer id of the vocabulary. */
static int read_id(const cJSON *v, int vocab, int32_t *out, srv_error *e, const char *param) {
    if (!cJSON_IsNumber(v)) {
        BAD(e, param, "token ids must be integers");
        return -1;
    }
    double d = v->valuedouble;
    if (d != floor(d)) { /* floor, not a cast: casting 1e308 to an integer is undefined */
        BAD(e, param, "token ids must be integers (got %g)", d);
        return -1;
    }
    if (d < 0 || d >= vocab) {
        srv_err_set(e, 400, "invalid_request_error", "invalid_token_id", param,
                    "token id %.0f is outside the vocabulary [0, %d)", d,
                    vocab); /* no cast: d may be 1e300 */
        return -1;
    }
    *out = (int32_t)d;
    return 0;
}

int srv_read_bool(const cJSON *obj, const char *name, int dflt, int *out, srv_error *e) {
    const cJSON *f = srv_json_field(obj, name);
    if (!f) {
        *out = dflt;
        return 0;
    }
    if (!cJSON_IsBool(f)) {
        BAD(e, name, "'%s' must be a boolean", name);
        return -1;
    }
    *out = cJSON_IsTrue(f) ? 1 : 0;
    return 0;
}

/* Reads an array of ids into a fresh array. */
int srv_read_id_array(const cJSON *arr, int vocab, int32_t **ids, int *n, srv_error *e,
                      const char *param) {
    int m = cJSON_GetArraySize(arr);
    if (m == 0) {
        srv_err_set(e, 400, "invalid_request_error", "empty_input", param,
                    "a token id sequence must not be empty");
        return -1;
    }
    int32_t *v = malloc((size_t)m * sizeof *v);
    if (!v) {
        srv_err_set(e, 500, "server_error", "out_of_memory", param, "out of memory");
        return -1;
    }
    int i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, arr) {
        if (read_id(x, vocab, &v[i++], e, param) != 0) {
            free(v);
            return -1;
        }
    }
    *ids = v;
    *n = m;
    return 0;
}

/* Applies the length limit to ids given by the client. */
static int limit_ids(srv_job *j, int i, srv_error *e, const char *param) {
    if (j->lens[i] <= j->max_len) return 0;
    if (!j->truncate) {
        srv_err_set(e, 413, "invalid_request_error", "input_too_long", param,
                    "input %d has %d tokens, more than the limit of %d tokens (set truncate: true "
                    "to truncate)",
                    i, j->lens[i], j->max_len);
        return -1;
    }
    if (j->truncate_left) {
        memmove(j->ids[i], j->ids[i] + (j->lens[i] - j->max_len), (size_t)j->max_len * 4);
    } else if (j->end_id >= 0 && j->ids[i][j->lens[i] - 1] == j->end_id && j->max_len > 1) {
        /* an end token the client appended stays last, as it does for text (the pooled token) */
        j->ids[i][j->max_len - 1] = j->end_id;
    }
    j->lens[i] = j->max_len;
    return 0;
}

/* Every POST body: one strict JSON value that is an object, else a 400 saying why. A lone UTF-16
 * surrogate escape (what JavaScript sends for a string cut in a pair) makes the parser refuse the
 * body; it is named as the invalid UTF-8 it would decode to, with its byte offset. */
cJSON *srv_parse_body_object(const char *body, size_t len, srv_error *e) {
    const char *why = "not a JSON object";
    cJSON *root = json_parse_strict(body, len, &why);
    if (!root || !cJSON_IsObject(root)) {
        long at = root ? -1 : json_lone_surrogate_at(body, len);
        if (at >= 0)
            srv_err_set(e, 400, "invalid_request_error", "invalid_utf8", "",
                        "the body is not valid UTF-8: a lone UTF-16 surrogate escape %.6s at byte "
                        "%ld (a string cut inside a surrogate pair)",
                        body + at, at);
        else
            BAD(e, "", "the body is %s", why);
        cJSON_Delete(root);
        return NULL;
    }
    /* every key and string, the ones this server ignores ("user", unknown keys) too */
    char where[48];
    int is_key = 0;
    if (json_find_invalid_utf8(root, where, sizeof where, &is_key)) {
        char top[48];
        snprintf(top, sizeof top, "%s", where);
        top[strcspn(top, ".[")] = 0;
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(root, top);
        if (is_key)
            srv_err_set(e, 400, "invalid_request_error", "invalid_utf8", top,
                        "a key of the body (at '%s') is not valid UTF-8", where);
        else if (f && cJSON_IsString(f)) /* echoed with U+FFFD for the bad bytes */
            srv_err_set(e, 400, "invalid_request_error", "invalid_utf8", top,
                        "'%s' is not valid UTF-8: \"%.40s\"", where, f->valuestring);
        else
            srv_err_set(e, 400, "invalid_request_error", "invalid_utf8", top,
                        "'%s' is not valid UTF-8", where);
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

srv_job *srv_parse_embed(serve_server *s, srv_route route, const char *body, size_t len,
                         srv_error *e) {
    cJSON *root = srv_parse_body_object(body, len, e);
    if (!root) return NULL;
    srv_job *j = srv_embed_from_json(s, route, root, e);
    cJSON_Delete(root);
    return j;
}

srv_job *srv_embed_from_json(serve_server *s, srv_route route, const cJSON *root, srv_error *e) {
    const int tei = route != ROUTE_OPENAI;
    const char *in_name = tei ? "inputs" : "input";
    srv_job *j = NULL;
    const cJSON *input = srv_json_field(root, in_name);
    if (!input) {
        BAD(e, in_name, "'%s' is required", in_name);
        goto fail;
    }
    /* model: the one named, else the first embedding model */
    srv_model *m = srv_pick_model(s, srv_json_field(root, "model"), QE_TASK_EMBED, e);
    if (!m) goto fail;
    const cJSON *user = srv_json_field(root, "user");
    if (user && !cJSON_IsString(user)) {
        BAD(e, "user", "'user' must be a string");
        goto fail;
    }

    int dims = m->width;
    const cJSON *d = srv_json_field(root, "dimensions");
    if (d) {
        int lo = m->width < 32 ? m->width : 32;
        if (!cJSON_IsNumber(d) || d->valuedouble != floor(d->valuedouble)) {
            BAD(e, "dimensions", "'dimensions' must be an integer");
            goto fail;
        }
        if (d->valuedouble < lo || d->valuedouble > m->width) {
            srv_err_set(e, 400, "invalid_request_error", "invalid_dimensions", "dimensions",
                        "'dimensions' must be between %d and %d (got %g)", lo, m->width,
                        d->valuedouble);
            goto fail;
        }
        dims = (int)d->valuedouble;
    }

    int base64 = 0;
    const cJSON *ef = srv_json_field(root, "encoding_format");
    if (ef) {
        if (!cJSON_IsString(ef)) {
            BAD(e, "encoding_format", "'encoding_format' must be a string");
            goto fail;
        }
        if (!strcmp(ef->valuestring, "base64"))
            base64 = 1;
        else if (strcmp(ef->valuestring, "float") != 0) {
            BAD(e, "encoding_format",
                "'encoding_format' must be \"float\" or \"base64\" (got \"%.60s\")",
                ef->valuestring);
            goto fail;
        }
        if (tei && base64) {
            BAD(e, "encoding_format", "/embed returns floats only");
            goto fail;
        }
    }

    int truncate, normalize, truncate_left = 0;
    if (srv_read_bool(root, "truncate", 1, &truncate, e) ||
        srv_read_bool(root, "normalize", 1, &normalize, e))
        goto fail;
    const cJSON *td = srv_json_field(root, "truncation_direction");
    if (td) {
        if (!cJSON_IsString(td)) {
            BAD(e, "truncation_direction", "'truncation_direction' must be a string");
            goto fail;
        }
        if (!strcasecmp(td->valuestring, "left"))
            truncate_left = 1;
        else if (strcasecmp(td->valuestring, "right") != 0) {
            BAD(e, "truncation_direction", "'truncation_direction' must be \"right\" or \"left\"");
            goto fail;
        }
    }

    const cJSON *instr = srv_json_field(root, "instruction");
    const cJSON *pname = srv_json_field(root, "prompt_name");
    if (instr && !cJSON_IsString(instr)) {
        BAD(e, "instruction", "'instruction' must be a string");
        goto fail;
    }
    if (pname && !cJSON_IsString(pname)) {
        BAD(e, "prompt_name", "'prompt_name' must be a string");
        goto fail;
    }
    if (instr &&
        !srv_utf8_valid((const unsigned char *)instr->valuestring, strlen(instr->valuestring))) {
        srv_err_set(e, 400, "invalid_request_error", "invalid_utf8", "instruction",
                    "'instruction' is not valid UTF-8");
        goto fail;
    }
    if (instr && pname) {
        BAD(e, "instruction", "give either 'instruction' or 'prompt_name', not both");
        goto fail;
    }
    const char *prefix = NULL;
    if (pname) {
        prefix = m->tok ? tok_prompt(m->tok, pname->valuestring) : NULL;
        if (!prefix) {
            BAD(e, "prompt_name",
                "unknown prompt_name \"%.60s\" (the model folder defines none by that name)",
                pname->valuestring);
            goto fail;
        }
    }

    /* the shape of the input */
    enum { IN_TEXTS, IN_IDS, IN_ID_LISTS } kind;
    int n;
    if (cJSON_IsString(input)) {
        kind = IN_TEXTS;
        n = 1;
    } else if (cJSON_IsArray(input)) {
        n = cJSON_GetArraySize(input);
        if (n == 0) {
            srv_err_set(e, 400, "invalid_request_error", "empty_input", in_name,
                        "'%s' must not be an empty array", in_name);
            goto fail;
        }
        const cJSON *first = input->child;
        if (cJSON_IsString(first))
            kind = IN_TEXTS;
        else if (cJSON_IsNumber(first))
            kind = IN_IDS, n = 1;
        else if (cJSON_IsArray(first))
            kind = IN_ID_LISTS;
        else {
            BAD(e, in_name,
                "'%s' must be a string, an array of strings, an array of token ids or an "
                "array of arrays of token ids",
                in_name);
            goto fail;
        }
    } else {
        BAD(e, in_name,
            "'%s' must be a string, an array of strings, an array of token ids or an array "
            "of arrays of token ids",
            in_name);
        goto fail;
    }
    if (srv_over_client_batch(s, n, in_name, "inputs", e)) goto fail;
    if (kind != IN_TEXTS && (instr || pname)) {
        BAD(e, instr ? "instruction" : "prompt_name",
            "'%s' applies to text inputs only, not token ids",
            instr ? "instruction" : "prompt_name");
        goto fail;
    }

    j = srv_job_new(n);
    if (!j) {
        srv_err_oom(e);
        goto fail;
    }
    j->route = route;
    j->m = m;
    j->dims = dims;
    j->normalize = normalize;
    j->base64 = base64;
    j->width = m->width;
    j->max_len = m->max_input_tokens;
    j->truncate = truncate;
    j->truncate_left = truncate_left;
    j->end_id = m->tok ? tok_end_id(m->tok) : -1;

    if (kind == IN_TEXTS) {
        j->texts = calloc((size_t)n, sizeof *j->texts);
        j->text_lens = calloc((size_t)n, sizeof *j->text_lens);
        j->prefix_lens = calloc((size_t)n, sizeof *j->prefix_lens);
        if (!j->texts || !j->text_lens || !j->prefix_lens) {
            srv_err_oom(e);
            goto fail;
        }
        const cJSON *x = cJSON_IsString(input) ? input : input->child;
        for (int i = 0; i < n; i++, x = x->next) {
            if (!cJSON_IsString(x)) {
                BAD(e, in_name, "'%s' mixes strings with other types (element %d)", in_name, i);
                goto fail;
            }
            const char *t = x->valuestring;
            size_t tl = strlen(t);
            if (tl == 0) {
                srv_err_set(e, 400, "invalid_request_error", "empty_input", in_name,
                            "input %d is an empty string", i);
                goto fail;
            }
            if (!srv_utf8_valid((const unsigned char *)t, tl)) {
                srv_err_set(e, 400, "invalid_request_error", "invalid_utf8", in_name,
                            "input %d is not valid UTF-8", i);
                goto fail;
            }
            char *full;
            if (instr)
                full = tok_format_instruction(instr->valuestring, t);
            else if (prefix) {
                size_t pl = strlen(prefix);
                full = malloc(pl + tl + 1);
                if (full) {
                    memcpy(full, prefix, pl);
                    memcpy(full + pl, t, tl + 1);
                }
            } else
                full = strdup(t);
            if (!full) {
                srv_err_oom(e);
                goto fail;
            }
            j->texts[i] = full;
            j->text_lens[i] = strlen(full);
            j->prefix_lens[i] = j->text_lens[i] - tl; /* the instruction or prompt before it */
        }
    } else if (kind == IN_IDS) {
        if (srv_read_id_array(input, m->vocab, &j->ids[0], &j->lens[0], e, in_name) ||
            limit_ids(j, 0, e, in_name))
            goto fail;
    } else {
        int i = 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, input) {
            if (!cJSON_IsArray(x)) {
                BAD(e, in_name, "'%s' mixes arrays of token ids with other types (element %d)",
                    in_name, i);
                goto fail;
            }
            if (srv_read_id_array(x, m->vocab, &j->ids[i], &j->lens[i], e, in_name) ||
                limit_ids(j, i, e, in_name))
                goto fail;
            i++;
        }
    }
    return j;
fail:
    srv_job_unref(j);
    return NULL;
}

/* /decode {"ids": [id, ...] | [[id, ...], ...], "skip_special_tokens": bool = true}
 *   -> ["text", ...] (one string per sequence, also for a single flat array) */
char *srv_handle_decode(serve_server *s, const char *body, size_t len, size_t *out_len,
                        srv_error *e) {
    cJSON *root = srv_parse_body_object(body, len, e);
    sbuf b = {0};
    if (!root) return NULL;
    const srv_model *m = srv_model_with_tokenizer(s, root, e);
    if (!m) goto fail;
    const cJSON *in = srv_json_field(root, "ids");
    int skip;
    if (srv_read_bool(root, "skip_special_tokens", 1, &skip, e)) goto fail;
    if (!in || !cJSON_IsArray(in) || cJSON_GetArraySize(in) == 0) {
        const int empty = in && cJSON_IsArray(in); /* an empty array: TEI's Empty, as /tokenize */
        srv_err_set(e, 400, "invalid_request_error", empty ? "empty_input" : NULL, "ids",
                    "'ids' must be a non-empty array of token ids or of arrays of token ids");
        goto fail;
    }
    int nested = cJSON_IsArray(in->child);
    int n = nested ? cJSON_GetArraySize(in) : 1;
    if (srv_over_client_batch(s, n, "ids", "sequences", e)) goto fail;
    sb_put(&b, "[", 1);
    const cJSON *x = nested ? in->child : in;
    for (int i = 0; i < n; i++, x = x->next) {
        if (!cJSON_IsArray(x)) {
            BAD(e, "ids", "'ids' mixes arrays with other types");
            goto fail;
        }
        int32_t *ids = NULL;
        int nid = 0;
        if (srv_read_id_array(x, m->vocab, &ids, &nid, e, "ids")) goto fail;
        char *text = NULL;
        size_t tl = 0;
        char terr[200];
        tok_status st = tok_decode(m->tok, ids, nid, skip, &text, &tl, terr, sizeof terr);
        free(ids);
        if (st != TOK_OK) {
            srv_err_set(e, st == TOK_ERR_NOMEM ? 500 : 400, "invalid_request_error",
                        st == TOK_ERR_ID ? "invalid_token_id" : "decode_failed", "ids",
                        "sequence %d: %s", i, terr);
            free(text);
            goto fail;
        }
        if (i) sb_put(&b, ",", 1);
        sb_json_string(&b, text, tl);
        free(text);
    }
    sb_put(&b, "]", 1);
    cJSON_Delete(root);
    char *r = sb_take(&b, out_len);
    if (!r) srv_err_oom(e);
    return r;
fail:
    sb_free(&b);
    cJSON_Delete(root);
    return NULL;
}
