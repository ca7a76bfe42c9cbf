/* serve_rerank.c — reranking requests: TEI's /rerank ({"query", "texts"} -> [{"index", "score"}])
 * and the Cohere / Jina / vLLM shape of /v1/rerank and /v2/rerank ({"query", "documents", "top_n",
 * "return_documents"} -> {"results": [{"index", "relevance_score"}]}), which /rerank also answers
 * when the body has "documents".
 *
 * A rerank request is a job like an embedding request: its documents are the job's texts, the
 * tokenizer pool turns each into the reranker's prompt (qe_rerank_prompt), the engine thread runs
 * them in the same steps as everything else and keeps one logit per document (serve_engine.c);
 * limits, cancellation, the 429 budget and the metrics are the embedding path's. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "serve_internal.h"

#define BAD(e, param, ...)                                                                         \
    srv_err_set((e), 400, "invalid_request_error", NULL, (param), __VA_ARGS__)

/* A string field (absent: *out stays NULL); -1 with a 400 when it is not a UTF-8 string. */
static int read_string(const cJSON *root, const char *name, const char **out, size_t *len,
                       srv_error *e) {
    const cJSON *f = srv_json_field(root, name);
    if (!f) return 0;
    if (!cJSON_IsString(f)) {
        BAD(e, name, "'%s' must be a string", name);
        return -1;
    }
    *out = f->valuestring;
    *len = strlen(f->valuestring);
    return 0;
}

/* The documents: an array of strings, or of {"text": string} objects (Cohere's v1 form). */
static int read_documents(srv_job *j, const cJSON *arr, const char *name, srv_error *e) {
    int i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, arr) {
        const cJSON *t = cJSON_IsObject(x) ? srv_json_field(x, "text") : x;
        if (!cJSON_IsString(t)) {
            BAD(e, name, "'%s' must hold strings or {\"text\": string} objects (element %d)", name,
                i);
            return -1;
        }
        if (!t->valuestring[0]) { /* nothing to score: every empty document would tie */
            srv_err_set(e, 400, "invalid_request_error", "empty_input", name,
                        "'%s' element %d is an empty string", name, i);
            return -1;
        }
        if (!(j->texts[i] = strdup(t->valuestring))) {
            srv_err_oom(e);
            return -1;
        }
        j->text_lens[i] = strlen(t->valuestring);
        i++;
    }
    return 0;
}

int srv_rerank_limit(const srv_model *m) {
    const serve_config *c = &m->s->cfg;
    const int want = c->max_input_tokens > 0 ? c->max_input_tokens : QE_RERANK_DEFAULT_TOKENS;
    return want < m->max_positions ? want : m->max_positions;
}

srv_job *srv_parse_rerank(serve_server *s, srv_route route, const char *body, size_t len,
                          srv_error *e) {
    cJSON *root = srv_parse_body_object(body, len, e);
    if (!root) return NULL;
    srv_job *j = NULL;
    const cJSON *texts = srv_json_field(root, "texts"), *docs = srv_json_field(root, "documents");
    /* /rerank with "documents" is a Cohere-shaped request, answered in that shape */
    if (route == ROUTE_RERANK && docs && !texts) route = ROUTE_RERANK_API;
    const int tei = route == ROUTE_RERANK;
    const char *list_name = tei ? "texts" : "documents";
    const cJSON *list = tei ? texts : docs;
    /* the reranker named, else the first one served */
    srv_model *m = srv_pick_model(s, srv_json_field(root, "model"), QE_TASK_RERANK, e);
    if (!m) goto fail;
    const char *query = NULL, *instruction = NULL;
    size_t query_len = 0, instruction_len = 0;
    if (read_string(root, "query", &query, &query_len, e) ||
        read_string(root, "instruction", &instruction, &instruction_len, e))
        goto fail;
    if (!query) {
        BAD(e, "query", "'query' is required");
        goto fail;
    }
    if (query_len == 0) {
        srv_err_set(e, 400, "invalid_request_error", "empty_input", "query",
                    "'query' is an empty string");
        goto fail;
    }
    if (!list || !cJSON_IsArray(list)) {
        BAD(e, list_name, "'%s' is required: an array of %s", list_name,
            tei ? "strings" : "strings or {\"text\": string} objects");
        goto fail;
    }
    const int n = cJSON_GetArraySize(list);
    if (n == 0) {
        srv_err_set(e, 400, "invalid_request_error", "empty_input", list_name,
                    "'%s' must not be empty", list_name);
        goto fail;
    }
    if (srv_over_client_batch(s, n, list_name, list_name, e)) goto fail;
    int truncate, raw_scores, return_text, top_n = 0, truncate_left = 0;
    /* documents come back unless asked not to on the Cohere-shaped routes (as Jina and vLLM do;
     * Cohere's clients read only index and relevance_score); TEI's return_text is opt-in */
    if (srv_read_bool(root, "truncate", 1, &truncate, e) ||
        srv_read_bool(root, "raw_scores", 0, &raw_scores, e) ||
        srv_read_bool(root, tei ? "return_text" : "return_documents", !tei, &return_text, e))
        goto fail;
    const cJSON *td = srv_json_field(root, "truncation_direction");
    if (td && (!cJSON_IsString(td) || (strcasecmp(td->valuestring, "left") != 0 &&
                                       strcasecmp(td->valuestring, "right") != 0))) {
        BAD(e, "truncation_direction", "'truncation_direction' must be \"right\" or \"left\"");
        goto fail;
    }
    truncate_left = td && !strcasecmp(td->valuestring, "left");
    const cJSON *tn = srv_json_field(root, "top_n"); /* null or 0 (vLLM's default): every one */
    if (tn) {
        if (!cJSON_IsNumber(tn) || tn->valuedouble != floor(tn->valuedouble) ||
            tn->valuedouble < 0) {
            BAD(e, "top_n", "'top_n' must be an integer >= 0 (0: every document)");
            goto fail;
        }
        top_n = tn->valuedouble < n ? (int)tn->valuedouble : n;
    }

    j = srv_job_new(n);
    if (!j) {
        srv_err_oom(e);
        goto fail;
    }
    j->route = route;
    j->m = m;
    j->rerank = 1;
    j->dims = 1; /* one logit per document */
    j->width = m->width;
    j->max_len = srv_rerank_limit(m);
    j->truncate = truncate;
    j->truncate_left = truncate_left;
    j->raw_scores = raw_scores;
    j->return_text = return_text;
    j->top_n = top_n;
    j->end_id = -1;
    j->texts = calloc((size_t)n, sizeof *j->texts);
    j->text_lens = calloc((size_t)n, sizeof *j->text_lens);
    j->query = malloc(query_len + 1);
    j->instruction = instruction ? strdup(instruction) : NULL;
    if (!j->texts || !j->text_lens || !j->query || (instruction && !j->instruction)) {
        srv_err_oom(e);
        goto fail;
    }
    memcpy(j->query, query, query_len + 1);
    j->query_len = query_len;
    if (read_documents(j, list, list_name, e)) goto fail;
    cJSON_Delete(root);
    return j;
fail:
    srv_job_unref(j);
    cJSON_Delete(root);
    return NULL;
}

/* On a tokenizer thread: document i's prompt. */
void srv_rerank_tokenize(srv_job *j, int i) {
    const qe_rerank_opts o = {.instruction = j->instruction,
                              .max_tokens = j->max_len,
                              .truncate_left = j->truncate_left,
                              .no_truncate = !j->truncate};
    char why[400];
    qe_status st =
        qe_rerank_prompt(j->m->engine, j->query, j->query_len, j->texts[i], j->text_lens[i], &o,
                         &j->ids[i], &j->lens[i], NULL, why, sizeof why);
    if (st == QE_OK) return;
    srv_error e;
    const char *param = j->route == ROUTE_RERANK ? "texts" : "documents";
    /* with truncate false the runtime's reason ends "(truncation is off)": the client is told
     * the field that turns it on instead, once */
    static const char off[] = " (truncation is off)";
    const size_t wl = strlen(why), ol = sizeof off - 1;
    if (st == QE_ERR_TOO_LONG && !j->truncate && wl >= ol && !strcmp(why + wl - ol, off))
        why[wl - ol] = 0;
    if (st == QE_ERR_TOO_LONG)
        srv_err_set(&e, 413, "invalid_request_error", "input_too_long", param,
                    "document %d: %.300s%s", i, why,
                    j->truncate ? "" : " (set truncate: true to truncate)");
    else if (st == QE_ERR_NOMEM)
        srv_err_oom(&e);
    else
        srv_err_set(&e, 400, "invalid_request_error", "invalid_input", param, "document %d: %.300s",
                    i, why);
    srv_job_fail(j, &e);
}

typedef struct ranked {
    int index;
    float logit;
} ranked;

static int by_logit(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return x->index - y->index; /* ties in input order */
}

char *srv_render_rerank(const srv_job *j, size_t *len) {
    ranked *r = malloc(sizeof *r * (size_t)j->n);
    if (!r) return NULL;
    for (int i = 0; i < j->n; i++)
        r[i] = (ranked){i, j->out[i]};
    qsort(r, (size_t)j->n, sizeof *r, by_logit);
    const int shown = j->top_n > 0 ? j->top_n : j->n;
    const int tei = j->route == ROUTE_RERANK;
    sbuf b = {0};
    if (tei)
        sb_puts(&b, "[");
    else {
        sb_printf(&b, "{\"id\":\"rerank-%lu\",\"model\":", j->request_id);
        sb_json_string(&b, j->m->served_name, strlen(j->m->served_name));
        sb_puts(&b, ",\"results\":[");
    }
    for (int k = 0; k < shown; k++) {
        const ranked *x = &r[k];
        char num[24];
        srv_format_float(tei && j->raw_scores ? x->logit : qe_rerank_sigmoid(x->logit), num);
        sb_printf(&b, "%s{\"index\":%d,\"%s\":%s", k ? "," : "", x->index,
                  tei ? "score" : "relevance_score", num);
        if (j->return_text) {
            sb_puts(&b, tei ? ",\"text\":" : ",\"document\":{\"text\":");
            sb_json_string(&b, j->texts[x->index], j->text_lens[x->index]);
            if (!tei) sb_puts(&b, "}");
        }
        sb_puts(&b, "}");
    }
    if (tei)
        sb_puts(&b, "]");
    else
        sb_printf(&b,
                  "],\"usage\":{\"prompt_tokens\":%ld,\"total_tokens\":%ld},\"meta\":{"
                  "\"api_version\":{\"version\":\"2\"},\"billed_units\":{\"search_units\":1}}}",
                  j->prompt_tokens, j->prompt_tokens);
    free(r);
    return sb_take(&b, len);
}

char *srv_render_rerank_error(const srv_error *e, size_t *len) {
    size_t n = 0;
    char *base = srv_render_error(e, &n);
    if (!base) return NULL;
    sbuf b = {0};
    sb_put(&b, base, n - 1); /* without its closing brace */
    sb_puts(&b, ",\"detail\":");
    sb_json_string(&b, e->message, strlen(e->message));
    sb_puts(&b, "}");
    free(base);
    return sb_take(&b, len);
}
