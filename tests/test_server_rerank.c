/* test_server_rerank.c — the reranking routes (issue 12, part 4) on a random Qwen3-Reranker: TEI's
 * /rerank, and /v1/rerank, /v2/rerank in the Cohere / Jina / vLLM shape, with the bodies those
 * clients send; scores compared with the engine the server uses; errors and the model-kind checks;
 * and several models behind one port (part 5): an embedding model and a reranker answering
 * interleaved requests from many clients at once.
 *
 * Request bodies as the clients build them (read from their source):
 *  - cohere (Python 5.x) Client.rerank -> POST {base}/v1/rerank, snake_case keys, documents strings
 *    or objects, parameters the caller set: {"model", "query", "documents", "top_n",
 *    "rank_fields", "return_documents", "max_chunks_per_doc"}.
 *  - langchain_cohere CohereRerank (ClientV2) -> POST {base}/v2/rerank with "max_tokens_per_doc":
 *    null when unset; reads results[].index and .relevance_score only.
 *  - LlamaIndex / LangChain JinaRerank -> POST {base}/rerank of api.jina.ai/v1 (= /v1/rerank) with
 *    {"query", "documents", "model", "top_n"}; reads results, or "detail" on an error.
 *  - vLLM's clients: {"model", "query", "documents", "top_n": 0 (= all)}.
 *  - LlamaIndex TEI rerank -> POST {base}/rerank {"query", "texts"}; wants a bare array of one
 *    {"index", "score"} per text. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "random_model.h"
#include "srv_harness.h"
#include "test_util.h"

static char model_dir[1100];

/* A random reranker (tiny geometry, 2 layers; the reranker's demo tokenizer), once per process. */
static const char *reranker(void) {
    if (model_dir[0]) return model_dir;
    tu_scratch_dir(model_dir, sizeof model_dir, "srv-rerank");
    strncat(model_dir, "/qwen3-reranker-test", sizeof model_dir - strlen(model_dir) - 1);
    random_model_opts o;
    memset(&o, 0, sizeof o);
    cr_assert_eq(random_model_preset("tiny", &o.cfg), 0);
    o.cfg.num_layers = 2;
    o.out_dir = model_dir, o.seed = 21, o.dtype = ST_BF16, o.reranker = 1, o.quiet = 1;
    char err[512];
    cr_assert_eq(random_model_write(&o, err, sizeof err), 0, "%s", err);
    return model_dir;
}

static void start_reranker(srvt_server *t) {
    serve_config c;
    srvt_config(&c);
    c.model_dir = reranker();
    srvt_start(t, &c);
    cr_assert_eq(qe_model_task(t->e), QE_TASK_RERANK);
}

static const char *QUERY = "what does the fox do";
static const char *DOCS[] = {"the fox jumps over the lazy dog", "vectors for search",
                             "the weather forecast", "a fox and a dog"};
enum { N_DOCS = 4 };

/* The engine's own scores for DOCS against QUERY (default instruction). */
static void engine_scores(qe_engine *e, float *out) {
    cr_assert_eq(qe_rerank(e, QUERY, DOCS, N_DOCS, NULL, out), QE_OK, "%s", qe_last_error(e));
}

/* results[k] are sorted by score (descending), every index once, each score the engine's. */
static void expect_ranked(const cJSON *results, const char *score_key, const float *want, int n,
                          const char *what) {
    cr_assert(cJSON_IsArray(results), "%s: no results array", what);
    cr_assert_eq(cJSON_GetArraySize(results), n, "%s: %d results", what,
                 cJSON_GetArraySize(results));
    int seen[64] = {0};
    double prev = INFINITY;
    const cJSON *x;
    cJSON_ArrayForEach(x, results) {
        const cJSON *idx = cJSON_GetObjectItem(x, "index"), *sc = cJSON_GetObjectItem(x, score_key);
        cr_assert(cJSON_IsNumber(idx) && cJSON_IsNumber(sc), "%s: index and %s", what, score_key);
        const int i = idx->valueint;
        cr_assert(i >= 0 && i < N_DOCS && !seen[i], "%s: index %d", what, i);
        seen[i] = 1;
        cr_expect_leq(fabs(sc->valuedouble - want[i]), 1e-6, "%s: document %d: %.8f vs engine %.8f",
                      what, i, sc->valuedouble, want[i]);
        cr_expect_leq(sc->valuedouble, prev, "%s: not sorted by score", what);
        prev = sc->valuedouble;
    }
}

static cJSON *post_json(srvt_server *t, const char *path, const char *body, long status) {
    srvt_resp r;
    cr_assert_eq(srvt_post(t->base, path, body, &r), status, "%s %s: %s", path, body, r.body);
    cJSON *j = srvt_json(&r);
    srvt_resp_free(&r);
    return j;
}

/* TEI's /rerank as LlamaIndex's TEI postprocessor posts it: a bare array of every text, sorted by
 * score; raw_scores gives the logits, return_text the texts. */
Test(server_rerank, tei_rerank_scores_match_the_engine, .timeout = 120) {
    srvt_server t;
    start_reranker(&t);
    float want[N_DOCS];
    engine_scores(t.e, want);
    const char *body = "{\"query\": \"what does the fox do\", \"texts\": [\"the fox jumps over the "
                       "lazy dog\", \"vectors for search\", \"the weather forecast\", \"a fox and "
                       "a dog\"]}";
    cJSON *j = post_json(&t, "/rerank", body, 200);
    expect_ranked(j, "score", want, N_DOCS, "/rerank");
    cr_expect_null(cJSON_GetObjectItem(cJSON_GetArrayItem(j, 0), "text"));
    cJSON_Delete(j);
    const char *raw = "{\"query\": \"what does the fox do\", \"texts\": [\"the fox jumps over the "
                      "lazy dog\", \"vectors for search\", \"the weather forecast\", \"a fox and "
                      "a dog\"], \"raw_scores\": true, \"return_text\": true}";
    j = post_json(&t, "/rerank", raw, 200);
    const cJSON *x;
    cJSON_ArrayForEach(x, j) {
        const int i = cJSON_GetObjectItem(x, "index")->valueint;
        const double logit = cJSON_GetObjectItem(x, "score")->valuedouble;
        cr_expect_leq(fabs(1 / (1 + exp(-logit)) - want[i]), 1e-6, "raw score of %d", i);
        const cJSON *text = cJSON_GetObjectItem(x, "text");
        cr_expect(cJSON_IsString(text) && !strcmp(text->valuestring, DOCS[i]), "text of %d", i);
    }
    cJSON_Delete(j);
    srvt_stop(&t);
}

/* The Cohere, LangChain, Jina and vLLM bodies on /v1/rerank and /v2/rerank (and /rerank with
 * "documents"): results sorted, top_n applied, documents echoed unless return_documents is false,
 * usage counting the prompts' tokens. */
Test(server_rerank, cohere_jina_vllm_bodies, .timeout = 120) {
    srvt_server t;
    start_reranker(&t);
    float want[N_DOCS];
    engine_scores(t.e, want);
    char bodies[4][1024];
    const char *docs_json = "[\"the fox jumps over the lazy dog\", \"vectors for search\", \"the "
                            "weather forecast\", \"a fox and a dog\"]";
    snprintf(bodies[0], sizeof bodies[0], /* cohere Python v1, documents as objects */
             "{\"model\": \"qwen3-reranker-test\", \"query\": \"what does the fox do\", "
             "\"documents\": [{\"text\": \"the fox jumps over the lazy dog\"}, \"vectors for "
             "search\", {\"title\": \"t\", \"text\": \"the weather forecast\"}, \"a fox and a "
             "dog\"], \"top_n\": 3, \"rank_fields\": [\"text\"], \"return_documents\": true, "
             "\"max_chunks_per_doc\": 10}");
    snprintf(bodies[1], sizeof bodies[1], /* langchain_cohere, ClientV2 */
             "{\"model\": \"qwen3-reranker-test\", \"query\": \"what does the fox do\", "
             "\"documents\": %s, \"top_n\": 3, \"max_tokens_per_doc\": null}",
             docs_json);
    snprintf(bodies[2], sizeof bodies[2], /* Jina's clients */
             "{\"query\": \"what does the fox do\", \"documents\": %s, \"model\": "
             "\"qwen3-reranker-test\", \"top_n\": 3}",
             docs_json);
    snprintf(bodies[3], sizeof bodies[3], /* vLLM's: top_n 0 is every document */
             "{\"model\": \"qwen3-reranker-test\", \"query\": \"what does the fox do\", "
             "\"documents\": %s, \"top_n\": 0, \"return_documents\": false}",
             docs_json);
    const char *paths[] = {"/v1/rerank", "/v2/rerank", "/v1/rerank", "/rerank"};
    const int shown[] = {3, 3, 3, N_DOCS}, echoed[] = {1, 1, 1, 0};
    for (int b = 0; b < 4; b++) {
        cJSON *j = post_json(&t, paths[b], bodies[b], 200);
        const cJSON *results = cJSON_GetObjectItem(j, "results");
        cr_assert(cJSON_IsArray(results), "%s: %s", paths[b], cJSON_PrintUnformatted(j));
        /* top_n keeps the best: the first shown of the whole ranking */
        float top[N_DOCS];
        memcpy(top, want, sizeof top);
        cr_expect_eq(cJSON_GetArraySize(results), shown[b], "body %d", b);
        const cJSON *x;
        double prev = INFINITY;
        int k = 0;
        cJSON_ArrayForEach(x, results) {
            const int i = cJSON_GetObjectItem(x, "index")->valueint;
            const double sc = cJSON_GetObjectItem(x, "relevance_score")->valuedouble;
            cr_expect_leq(fabs(sc - want[i]), 1e-6, "body %d, document %d", b, i);
            cr_expect_leq(sc, prev, "body %d: not sorted", b);
            prev = sc;
            int better = 0; /* documents ranked above this one */
            for (int d = 0; d < N_DOCS; d++)
                better += want[d] > want[i] || (want[d] == want[i] && d < i);
            cr_expect_eq(better, k, "body %d: result %d is document %d, ranked %d", b, k, i,
                         better);
            const cJSON *doc = cJSON_GetObjectItem(x, "document");
            if (echoed[b])
                cr_expect(cJSON_IsObject(doc) &&
                              !strcmp(cJSON_GetObjectItem(doc, "text")->valuestring, DOCS[i]),
                          "body %d: document %d not echoed as {\"text\"}", b, i);
            else
                cr_expect_null(doc, "body %d: return_documents false", b);
            k++;
        }
        const cJSON *usage = cJSON_GetObjectItem(j, "usage");
        cr_expect(cJSON_IsObject(usage) &&
                      cJSON_GetObjectItem(usage, "total_tokens")->valueint > N_DOCS * 100,
                  "usage: %s", cJSON_PrintUnformatted(j));
        cr_expect_str_eq(cJSON_GetObjectItem(j, "model")->valuestring, "qwen3-reranker-test");
        cr_expect(cJSON_IsString(cJSON_GetObjectItem(j, "id")));
        cJSON_Delete(j);
    }
    srvt_stop(&t);
}

/* Bad requests get the route's error shape, with "detail" for Jina's clients; each kind of model
 * refuses the other kind's routes; a long document is cut (or, with truncate false, refused). */
Test(server_rerank, errors_and_limits, .timeout = 120) {
    srvt_server t;
    serve_config c;
    srvt_config(&c);
    c.model_dir = reranker();
    c.max_client_batch = 3;
    c.max_input_tokens = 300;
    srvt_start(&t, &c);
    static const struct {
        const char *path, *body;
        long status;
        const char *in_message;
    } cases[] = {
        {"/v1/rerank", "{\"query\": \"q\", \"documents\": []}", 400, "must not be empty"},
        {"/v1/rerank", "{\"documents\": [\"a\"]}", 400, "'query' is required"},
        {"/v2/rerank", "{\"query\": \"q\", \"documents\": [1]}", 400, "{\"text\": string}"},
        {"/v1/rerank", "{\"query\": \"q\", \"documents\": [\"a\", \"b\", \"c\", \"d\"]}", 413,
         "limit of 3"},
        {"/v1/rerank", "{\"query\": \"q\", \"documents\": [\"a\"], \"top_n\": -1}", 400, "top_n"},
        {"/v1/rerank", "{\"model\": \"other\", \"query\": \"q\", \"documents\": [\"a\"]}", 400,
         "not served here"},
        {"/v1/embeddings", "{\"input\": \"a\"}", 400, "is a reranker"},
        /* empty strings are 400 empty_input, as on the embedding routes (they were scored) */
        {"/v1/rerank", "{\"query\": \"\", \"documents\": [\"a\"]}", 400, "'query' is an empty"},
        {"/v1/rerank", "{\"query\": \"q\", \"documents\": [\"a\", \"\"]}", 400, "element 1"},
        {"/v2/rerank", "{\"query\": \"q\", \"documents\": [{\"text\": \"\"}]}", 400,
         "empty string"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        srvt_resp r;
        cr_expect_eq(srvt_post(t.base, cases[i].path, cases[i].body, &r), cases[i].status,
                     "%s %s: %ld %s", cases[i].path, cases[i].body, r.status, r.body);
        cJSON *j = srvt_json(&r);
        const char *msg = srvt_error_message(j);
        cr_expect(msg && strstr(msg, cases[i].in_message), "%s: %s", cases[i].body, msg);
        if (strstr(msg ? msg : "", "empty")) {
            const cJSON *code = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "code");
            cr_expect(cJSON_IsString(code) && !strcmp(code->valuestring, "empty_input"), "%s",
                      r.body);
        }
        if (strstr(cases[i].path, "rerank")) {
            const cJSON *detail = cJSON_GetObjectItem(j, "detail");
            cr_expect(cJSON_IsString(detail) && !strcmp(detail->valuestring, msg), "detail: %s",
                      r.body);
        }
        cJSON_Delete(j);
        srvt_resp_free(&r);
    }
    srvt_expect_tei_error(&t, "/rerank", "{\"query\": \"q\", \"texts\": []}", 400, NULL,
                          "must not be empty");
    srvt_expect_tei_error(&t, "/rerank", "{\"query\": \"q\", \"texts\": [\"\"]}", 400, "Empty",
                          "empty string");
    srvt_expect_tei_error(&t, "/rerank", "{\"query\": \"\", \"texts\": [\"a\"]}", 400, "Empty",
                          "empty string");
    /* a document past --max-input-tokens: cut to it, or refused with truncate false */
    char *long_doc = srvt_long_text(600, 3);
    size_t cap = strlen(long_doc) + 200;
    char *body = malloc(cap);
    snprintf(body, cap, "{\"query\": \"q\", \"documents\": [\"%s\"]}", long_doc);
    cJSON *j = post_json(&t, "/v1/rerank", body, 200);
    cr_expect_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "total_tokens")->valueint,
                 300, "a cut prompt is exactly the limit");
    cJSON_Delete(j);
    snprintf(body, cap, "{\"query\": \"q\", \"texts\": [\"%s\"], \"truncate\": false}", long_doc);
    srvt_expect_tei_error(&t, "/rerank", body, 413, NULL, "truncate");
    /* the message says how to truncate once ("(truncation is off) (set truncate: true ...)") */
    srvt_resp r413;
    cr_expect_eq(srvt_post(t.base, "/rerank", body, &r413), 413);
    cr_expect(strstr(r413.body, "(set truncate: true to truncate)\"") &&
                  !strstr(r413.body, "truncation is off"),
              "%s", r413.body);
    srvt_resp_free(&r413);
    free(body), free(long_doc);
    srvt_stop(&t);
    /* an embedding model refuses the rerank routes (the shared fixture's, when it is there) */
    if (!tu_exists(TINY_MODEL "/config.json")) return;
    srvt_config(&c);
    srvt_start(&t, &c);
    srvt_resp r;
    cr_expect_eq(srvt_post(t.base, "/v1/rerank", "{\"query\": \"q\", \"documents\": [\"a\"]}", &r),
                 400, "%s", r.body);
    cr_expect(strstr(r.body, "not a reranker"), "%s", r.body);
    srvt_resp_free(&r);
    srvt_stop(&t);
}

/* /openapi.json lists the reranking routes; /info says the model is a reranker and its limit. */
Test(server_rerank, openapi_and_info, .timeout = 60) {
    srvt_server t;
    start_reranker(&t);
    srvt_resp r;
    cr_assert_eq(srvt_get(t.base, "/openapi.json", &r), 200);
    cJSON *j = srvt_json(&r);
    const cJSON *paths = cJSON_GetObjectItem(j, "paths");
    const char *routes[] = {"/rerank", "/v1/rerank", "/v2/rerank"};
    for (int i = 0; i < 3; i++)
        cr_expect_not_null(cJSON_GetObjectItem(paths, routes[i]), "openapi lacks %s", routes[i]);
    cJSON_Delete(j);
    srvt_resp_free(&r);
    cr_assert_eq(srvt_get(t.base, "/info", &r), 200);
    j = srvt_json(&r);
    cr_expect_not_null(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "model_type"), "reranker"), "%s",
                       r.body);
    cr_expect_eq(cJSON_GetObjectItem(j, "max_input_length")->valueint, QE_RERANK_DEFAULT_TOKENS);
    cJSON_Delete(j);
    srvt_resp_free(&r);
    srvt_stop(&t);
}

/* ---- several models behind one port (issue 12, part 5) ---- */

static void start_pair(srvt_server *t) {
    serve_config c;
    srvt_config(&c);
    c.served_model_name = "embedder";
    c.more_models[0] = (serve_model_config){reranker(), "reranker", QE_TASK_AUTO};
    c.n_more_models = 1;
    srvt_start(t, &c);
}

/* One request of a worker: an embedding (kind 0) or a rerank (kind 1) of text k. */
typedef struct pair_worker {
    const char *base;
    int id, n_requests;
    float scores[16][N_DOCS]; /* per rerank request, by document */
    float vecs[16][64];       /* per embedding request */
    int kind[16], text[16];
    long status[16];
    pthread_t thread;
} pair_worker;

static const char *TEXTS[] = {"the fox jumps", "vectors for search", "weather today"};

static void *pair_main(void *p) {
    pair_worker *w = p;
    for (int r = 0; r < w->n_requests; r++) {
        const int kind = (w->id + r) % 2, k = (w->id * 7 + r) % 3;
        w->kind[r] = kind, w->text[r] = k;
        char body[512];
        if (kind == 0)
            snprintf(body, sizeof body, "{\"model\": \"embedder\", \"input\": \"%s\"}", TEXTS[k]);
        else
            snprintf(body, sizeof body,
                     "{\"model\": \"reranker\", \"query\": \"%s\", \"documents\": [\"the fox "
                     "jumps over the lazy dog\", \"vectors for search\", \"the weather "
                     "forecast\", \"a fox and a dog\"], \"return_documents\": false}",
                     TEXTS[k]);
        srvt_resp resp;
        w->status[r] = srvt_post(w->base, kind == 0 ? "/v1/embeddings" : "/v1/rerank", body, &resp);
        cJSON *j = w->status[r] == 200 ? cJSON_Parse(resp.body) : NULL;
        if (j && kind == 0) {
            const cJSON *emb = cJSON_GetObjectItem(
                cJSON_GetArrayItem(cJSON_GetObjectItem(j, "data"), 0), "embedding");
            int d = 0;
            const cJSON *x;
            cJSON_ArrayForEach(x, emb) if (d < 64) w->vecs[r][d++] = (float)x->valuedouble;
        } else if (j) {
            const cJSON *x;
            cJSON_ArrayForEach(x, cJSON_GetObjectItem(j, "results")) {
                const int i = cJSON_GetObjectItem(x, "index")->valueint;
                if (i >= 0 && i < N_DOCS)
                    w->scores[r][i] = (float)cJSON_GetObjectItem(x, "relevance_score")->valuedouble;
            }
        }
        if (!j && w->status[r] == 200) w->status[r] = -1; /* not JSON */
        cJSON_Delete(j);
        srvt_resp_free(&resp);
    }
    return NULL;
}

/* An embedding model and a reranker in one server: /v1/models lists both, each route goes to its
 * kind (by name, or the first of the kind), and embeddings and reranks interleaved from 6 clients
 * at once all equal what each engine computes alone. */
Test(server_multi, embeddings_and_reranks_interleaved, .timeout = 300) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    srvt_server t;
    start_pair(&t);
    qe_engine *emb = serve_model_engine(t.s, 0), *rr = serve_model_engine(t.s, 1);
    cr_assert(emb && rr && qe_model_task(emb) == QE_TASK_EMBED &&
              qe_model_task(rr) == QE_TASK_RERANK);
    cr_assert_leq(qe_dim(emb), 64);
    srvt_resp r;
    cr_assert_eq(srvt_get(t.base, "/v1/models", &r), 200);
    cJSON *j = srvt_json(&r);
    const cJSON *data = cJSON_GetObjectItem(j, "data");
    cr_assert_eq(cJSON_GetArraySize(data), 2, "%s", r.body);
    cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(data, 0), "id")->valuestring,
                     "embedder");
    cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(data, 1), "id")->valuestring,
                     "reranker");
    cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(data, 1), "task")->valuestring,
                     "rerank");
    cJSON_Delete(j);
    srvt_resp_free(&r);
    cr_expect_eq(srvt_get(t.base, "/v1/models/reranker", &r), 200, "%s", r.body);
    srvt_resp_free(&r);
    cr_expect_eq(srvt_get(t.base, "/v1/models/nope", &r), 404, "%s", r.body);
    srvt_resp_free(&r);

    /* what each engine computes alone */
    float want_vec[3][64], want_score[3][N_DOCS];
    for (int k = 0; k < 3; k++) {
        float *v = srvt_engine_texts(emb, &TEXTS[k], 1, 0);
        memcpy(want_vec[k], v, sizeof(float) * (size_t)qe_dim(emb));
        free(v);
        cr_assert_eq(qe_rerank(rr, TEXTS[k], DOCS, N_DOCS, NULL, want_score[k]), QE_OK);
    }
    enum { WORKERS = 6, REQUESTS = 8 };
    pair_worker *w = calloc(WORKERS, sizeof *w);
    for (int i = 0; i < WORKERS; i++) {
        w[i].base = t.base, w[i].id = i, w[i].n_requests = REQUESTS;
        cr_assert_eq(pthread_create(&w[i].thread, NULL, pair_main, &w[i]), 0);
    }
    for (int i = 0; i < WORKERS; i++)
        pthread_join(w[i].thread, NULL);
    for (int i = 0; i < WORKERS; i++)
        for (int q = 0; q < REQUESTS; q++) {
            const int k = w[i].text[q];
            cr_assert_eq(w[i].status[q], 200, "worker %d request %d: status %ld", i, q,
                         w[i].status[q]);
            if (w[i].kind[q] == 0) {
                const double cos = tu_cosine_ff(w[i].vecs[q], want_vec[k], qe_dim(emb));
                cr_expect_geq(cos, 0.99999, "worker %d request %d: cosine %.7f", i, q, cos);
            } else
                for (int d = 0; d < N_DOCS; d++)
                    cr_expect_leq(fabsf(w[i].scores[q][d] - want_score[k][d]), 1e-6f,
                                  "worker %d request %d document %d", i, q, d);
        }
    free(w);
    /* routes without a model go to the first of their kind; a model of the other kind is refused */
    cJSON *x = post_json(&t, "/rerank", "{\"query\": \"q\", \"texts\": [\"a\", \"b\"]}", 200);
    cr_expect_eq(cJSON_GetArraySize(x), 2);
    cJSON_Delete(x);
    x = post_json(&t, "/embed", "{\"inputs\": \"a\"}", 200);
    cr_expect_eq(cJSON_GetArraySize(cJSON_GetArrayItem(x, 0)), qe_dim(emb));
    cJSON_Delete(x);
    cr_expect_eq(
        srvt_post(t.base, "/v1/embeddings", "{\"model\": \"reranker\", \"input\": \"a\"}", &r),
        400);
    cr_expect(strstr(r.body, "is a reranker"), "%s", r.body);
    srvt_resp_free(&r);
    cr_expect_eq(srvt_post(t.base, "/v1/rerank",
                           "{\"model\": \"embedder\", \"query\": \"q\", \"documents\": [\"a\"]}",
                           &r),
                 400);
    cr_expect(strstr(r.body, "not a reranker"), "%s", r.body);
    srvt_resp_free(&r);
    /* each model's gauges, by name */
    cr_assert_eq(srvt_get(t.base, "/metrics", &r), 200);
    cr_expect(strstr(r.body, "qembed_model_requests_waiting{model=\"embedder\"} 0"), "%s", r.body);
    cr_expect(strstr(r.body, "qembed_model_requests_waiting{model=\"reranker\"} 0"), "%s", r.body);
    srvt_resp_free(&r);
    srvt_stop(&t);
}

/* Two models may not share a served name; a server of two embedding models picks by name. */
Test(server_multi, names_are_unique_and_choose_the_model, .timeout = 120) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    c.more_models[0] = (serve_model_config){TINY_MODEL, NULL, QE_TASK_AUTO};
    c.n_more_models = 1;
    serve_server *s = NULL;
    char err[512];
    cr_expect_neq(serve_start(&c, &s, err, sizeof err), 0);
    cr_expect(strstr(err, "--served-model-name"), "%s", err);
    c.served_model_name = "a";
    c.more_models[0].served_name = "b";
    srvt_server t;
    srvt_start(&t, &c);
    srvt_resp r;
    cr_expect_eq(srvt_post(t.base, "/v1/embeddings", "{\"model\": \"b\", \"input\": \"x\"}", &r),
                 200, "%s", r.body);
    cJSON *j = srvt_json(&r);
    cr_expect_str_eq(cJSON_GetObjectItem(j, "model")->valuestring, "b");
    cJSON_Delete(j);
    srvt_resp_free(&r);
    cr_expect_eq(srvt_post(t.base, "/v1/embeddings", "{\"model\": \"c\", \"input\": \"x\"}", &r),
                 400);
    cr_expect(strstr(r.body, "'a', 'b'"), "names the served models: %s", r.body);
    srvt_resp_free(&r);
    srvt_stop(&t);
}

/* A client that leaves a long rerank request: its documents leave the queue and the scheduler
 * (as an embedding request's do), and the server reranks correctly right after. */
Test(server_rerank, departed_client_is_dropped, .timeout = 120) {
    srvt_server t;
    serve_config c;
    srvt_config(&c);
    c.model_dir = reranker();
    c.max_batch_tokens = 256; /* about one prompt per step: the request takes a while */
    srvt_start(&t, &c);
    enum { DOCS_N = 1024 };
    size_t cap = DOCS_N * 200 + 64, o = 0;
    char *body = malloc(cap);
    o += (size_t)snprintf(body, cap, "{\"query\": \"what does the fox do\", \"documents\": [");
    for (int i = 0; i < DOCS_N; i++)
        o += (size_t)snprintf(body + o, cap - o,
                              "%s\"document %d: the fox jumps over the lazy dog again\"",
                              i ? "," : "", i);
    snprintf(body + o, cap - o, "]}");
    srvt_resp r;
    long st = srvt_post_timeout(t.base, "/v1/rerank", body, 300, &r); /* gives up, closes */
    srvt_resp_free(&r);
    free(body);
    if (st == 200) cr_skip_test("the server reranked %d documents within 300 ms", DOCS_N);
    long inflight = -1;
    for (int i = 0; i < 400 && inflight != 0; i++) {
        inflight = srvt_metric(t.base, "qembed_inflight_tokens");
        if (inflight != 0) usleep(10000);
    }
    cr_assert_eq(inflight, 0, "queued tokens released after the client left");
    const long dropped = srvt_metric(t.base, "qembed_cancelled_sequences_total");
    cr_assert_gt(dropped, 0, "documents dropped (processed %ld)",
                 srvt_metric(t.base, "qembed_sequences_processed_total"));
    float want[N_DOCS];
    engine_scores(t.e, want);
    cJSON *j = post_json(&t, "/rerank",
                         "{\"query\": \"what does the fox do\", \"texts\": [\"the fox jumps over "
                         "the lazy dog\", \"vectors for search\", \"the weather forecast\", \"a "
                         "fox and a dog\"]}",
                         200);
    expect_ranked(j, "score", want, N_DOCS, "after a cancel");
    cJSON_Delete(j);
    srvt_stop(&t);
}
