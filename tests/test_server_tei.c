/* test_server_tei.c — TEI and vLLM compatibility (issue 11, items 1-8): the root route as
 * huggingface clients post to it, TEI's error shape and statuses, /tokenize with offsets, /info's
 * TEI fields, te_* and vLLM-meaning metrics, /v1/models/{id}, /similarity, /embed_all, the health
 * probes, CORS, /openapi.json, truncation that keeps the instruction and the end token, and lone
 * surrogates. Values are compared with the engine the server uses. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "json_strict.h"
#include "prompt_cut.h"
#include "serve/serve_internal.h"
#include "srv_harness.h"
#include "test_util.h"
#include "tokenizer.h"

/* Request bodies as the clients build them (their source, not guessed):
 *  - @huggingface/inference 4.x featureExtraction({endpointUrl, inputs}): POST to the endpoint
 *    URL itself (the root of a TEI server), "Content-Type: application/json", "Authorization:
 *    Bearer <token>" when given, body JSON.stringify({inputs, ...parameters}).
 *  - huggingface_hub InferenceClient(base_url).feature_extraction(text, normalize=True,
 *    truncate=True): POST to the base URL, body {"inputs": text, <the parameters set>}. */
static const char HF_JS_FEATURE_EXTRACTION[] = "{\"inputs\":\"That is a happy person\"}";
static const char HF_HUB_FEATURE_EXTRACTION[] =
    "{\"inputs\": \"That is a happy person\", \"normalize\": true, \"truncate\": true}";

static void start_default(srvt_server *t) {
    serve_config c;
    srvt_config(&c);
    srvt_start(t, &c);
}

/* Item 1: POST / answers as /embed, for the bodies and headers the HF clients send. */
Test(server_tei, root_route_is_tei_embed_as_hf_clients_post_it) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    srvt_server t;
    start_default(&t);
    const char *text[] = {"That is a happy person"};
    float *want = srvt_engine_texts(t.e, text, 1, 0);
    const char *bodies[] = {HF_JS_FEATURE_EXTRACTION, HF_HUB_FEATURE_EXTRACTION};
    for (int b = 0; b < 2; b++) {
        srvt_resp r;
        cr_assert_eq(srvt_request(NULL, t.base, "POST", "/", bodies[b], strlen(bodies[b]),
                                  "Authorization: Bearer hf_notchecked", &r),
                     200, "%s", r.body);
        cJSON *j = srvt_json(&r);
        cr_assert(cJSON_IsArray(j) && cJSON_GetArraySize(j) == 1, "array of arrays: %s", r.body);
        int d;
        float *got = srvt_float_array(cJSON_GetArrayItem(j, 0), &d);
        cr_assert_eq(d, qe_dim(t.e));
        srvt_assert_close(got, want, d, "POST /");
        free(got);
        cJSON_Delete(j);
        srvt_resp_free(&r);
    }
    free(want);
    srvt_stop(&t);
}

/* Item 2: TEI's routes answer {"error", "error_type"} with TEI's statuses; OpenAI's keep theirs. */
Test(server_tei, tei_routes_answer_tei_errors) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    c.max_client_batch = 2;
    srvt_server t;
    srvt_start(&t, &c);
    srvt_expect_tei_error(&t, "/", "{}", 422, "Validation", "inputs");
    srvt_expect_tei_error(&t, "/", "{\"inputs\":\"\"}", 400, "Empty", NULL);
    srvt_expect_tei_error(&t, "/embed", "{\"inputs\":[]}", 400, "Empty", NULL);
    srvt_expect_tei_error(&t, "/", "{\"inputs\":[\"a\",\"b\",\"c\"]}", 413, "Validation",
                          "limit of 2");
    srvt_expect_tei_error(&t, "/embed", "not json", 422, "Validation", "JSON");
    srvt_expect_tei_error(&t, "/similarity", "{\"inputs\":{\"source_sentence\":\"a\"}}", 422,
                          "Validation", NULL);
    srvt_expect_tei_error(&t, "/similarity",
                          "{\"inputs\":{\"source_sentence\":\"a\",\"sentences\":[\"b\",7]}}", 422,
                          "Validation", "sentences[1]"); /* its own index, not the request's */
    srvt_expect_tei_error(&t, "/similarity",
                          "{\"inputs\":{\"source_sentence\":\"a\",\"sentences\":[\"b\",\"\"]}}",
                          400, "Empty", "sentences[1]");
    srvt_expect_tei_error(&t, "/similarity",
                          "{\"inputs\":{\"source_sentence\":\"\",\"sentences\":[\"b\"]}}", 400,
                          "Empty", "source_sentence");
    srvt_expect_tei_error(&t, "/embed_all", "{\"inputs\":[1.5]}", 422, "Validation", NULL);
    srvt_expect_tei_error(&t, "/tokenize", "{\"inputs\":[]}", 400, "Empty", NULL);
    srvt_expect_tei_error(&t, "/tokenize", "{}", 422, "Validation", "inputs");
    /* every empty input is TEI's Empty, 400: an empty string on /tokenize (it answered the end
     * token alone), an empty id list, and /decode's empty array (it was 422) */
    srvt_expect_tei_error(&t, "/tokenize", "{\"inputs\":\"\"}", 400, "Empty", "empty string");
    srvt_expect_tei_error(&t, "/tokenize", "{\"inputs\":[\"a\",\"\"]}", 400, "Empty", "input 1");
    srvt_expect_tei_error(&t, "/embed", "{\"inputs\":[[]]}", 400, "Empty", NULL);
    srvt_expect_tei_error(&t, "/decode", "{\"ids\":[]}", 400, "Empty", NULL);
    srvt_expect_tei_error(&t, "/decode", "{\"ids\":[[1],[]]}", 400, "Empty", NULL);
    /* the OpenAI route keeps OpenAI's shape and 400 */
    srvt_resp r;
    cr_assert_eq(srvt_post(t.base, "/v1/embeddings", "{}", &r), 400);
    cJSON *j = srvt_json(&r);
    srvt_error_message(j);
    cJSON_Delete(j);
    srvt_resp_free(&r);
    srvt_stop(&t);
}

/* Item 2: the statuses TEI gives to its other error types. */
Test(server_units, tei_error_types_and_statuses) {
    struct {
        int status;
        const char *code;
        int want_status;
        const char *want_type;
    } cases[] = {
        {400, NULL, 422, "Validation"},
        {400, "empty_input", 400, "Empty"},
        {400, "tokenizer_error", 422, "Tokenizer"},
        {500, "tokenizer_error", 422, "Tokenizer"},
        {413, "too_many_inputs", 413, "Validation"},
        {429, "queue_full", 429, "Overloaded"},
        {503, "draining", 503, "Unhealthy"},
        {500, "engine_error", 424, "Backend"},
        {500, "out_of_memory", 424, "Backend"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        srv_error e;
        srv_err_set(&e, cases[i].status, NULL, cases[i].code, "", "case %zu", i);
        int status = 0;
        size_t len = 0;
        char *body = srv_render_tei_error(&e, &status, &len);
        cr_assert_eq(status, cases[i].want_status, "case %zu: %d", i, status);
        cJSON *j = cJSON_ParseWithLength(body, len);
        cr_assert_not_null(j, "%s", body);
        cr_assert_str_eq(cJSON_GetObjectItem(j, "error_type")->valuestring, cases[i].want_type);
        cr_assert_str_eq(cJSON_GetObjectItem(j, "error")->valuestring, e.message);
        cJSON_Delete(j);
        free(body);
    }
}

/* Item 3: TEI's SimpleToken lists, byte offsets into the text, specials without offsets. */
Test(server_tei, tokenize_returns_tei_tokens_with_offsets) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    srvt_server t;
    start_default(&t);
    const tok_tokenizer *tk = qe_tokenizer(t.e);
    const char *src[] = {"hello world", "Zürich 数据 café"};
    srvt_resp r;
    cr_assert_eq(
        srvt_post(t.base, "/tokenize", "{\"inputs\":[\"hello world\",\"Zürich 数据 café\"]}", &r),
        200, "%s", r.body);
    cJSON *j = srvt_json(&r);
    cr_assert_eq(cJSON_GetArraySize(j), 2);
    for (int i = 0; i < 2; i++) {
        int32_t *ids = NULL;
        int n = 0;
        char err[128];
        cr_assert_eq(tok_encode(tk, src[i], strlen(src[i]), NULL, &ids, &n, err, sizeof err),
                     TOK_OK);
        const cJSON *a = cJSON_GetArrayItem(j, i);
        cr_assert_eq(cJSON_GetArraySize(a), n);
        size_t expect_start = 0;
        for (int k = 0; k < n; k++) {
            const cJSON *o = cJSON_GetArrayItem(a, k);
            cr_assert_eq(cJSON_GetObjectItem(o, "id")->valueint, ids[k]);
            cr_assert(cJSON_IsString(cJSON_GetObjectItem(o, "text")));
            const int special = cJSON_IsTrue(cJSON_GetObjectItem(o, "special"));
            if (k == n - 1) {
                cr_assert(special && ids[k] == tok_end_id(tk), "the end token is special");
                cr_assert(cJSON_IsNull(cJSON_GetObjectItem(o, "start")));
                cr_assert(cJSON_IsNull(cJSON_GetObjectItem(o, "stop")));
                cr_assert_str_eq(cJSON_GetObjectItem(o, "text")->valuestring, "<|endoftext|>");
                continue;
            }
            cr_assert(!special);
            size_t start = (size_t)cJSON_GetObjectItem(o, "start")->valuedouble;
            size_t stop = (size_t)cJSON_GetObjectItem(o, "stop")->valuedouble;
            cr_assert_eq(start, expect_start, "token %d starts at %zu, want %zu", k, start,
                         expect_start);
            cr_assert(stop > start && stop <= strlen(src[i]));
            expect_start = stop;
        }
        cr_assert_eq(expect_start, strlen(src[i]), "the offsets cover the text");
        free(ids);
    }
    /* "hello world": the token texts are slices of the input */
    const cJSON *w = cJSON_GetArrayItem(cJSON_GetArrayItem(j, 0), 1);
    cr_assert_str_eq(cJSON_GetObjectItem(w, "text")->valuestring, " world");
    cr_assert_eq(cJSON_GetObjectItem(w, "start")->valueint, 5);
    cr_assert_eq(cJSON_GetObjectItem(w, "stop")->valueint, 11);
    cJSON_Delete(j);
    srvt_resp_free(&r);
    /* add_special_tokens false: no end token; prompt_name: offsets into prompt + input */
    cr_assert_eq(srvt_post(t.base, "/tokenize",
                           "{\"inputs\":\"hello\",\"add_special_tokens\":false,"
                           "\"prompt_name\":\"query\"}",
                           &r),
                 200, "%s", r.body);
    j = srvt_json(&r);
    const cJSON *a = cJSON_GetArrayItem(j, 0);
    const char *p = tok_prompt(tk, "query");
    size_t full = strlen(p) + strlen("hello");
    const cJSON *last = cJSON_GetArrayItem(a, cJSON_GetArraySize(a) - 1);
    cr_assert(!cJSON_IsTrue(cJSON_GetObjectItem(last, "special")), "no special token");
    cr_assert_eq((size_t)cJSON_GetObjectItem(last, "stop")->valuedouble, full);
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(a, 0), "start")->valueint, 0);
    cJSON_Delete(j);
    srvt_resp_free(&r);
    srvt_stop(&t);
}

/* Item 4: TEI's /info fields; the checkpoint's dtype and the compute dtype apart. */
Test(server_tei, info_has_tei_fields_and_both_dtypes) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    srvt_server t;
    start_default(&t);
    srvt_resp r;
    cr_assert_eq(srvt_get(t.base, "/info", &r), 200);
    cJSON *j = srvt_json(&r);
    static const char *fields[] = {"model_id",
                                   "model_sha",
                                   "model_dtype",
                                   "model_type",
                                   "max_concurrent_requests",
                                   "max_input_length",
                                   "max_batch_tokens",
                                   "max_batch_requests",
                                   "max_client_batch_size",
                                   "auto_truncate",
                                   "tokenization_workers",
                                   "version"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        cr_assert_not_null(cJSON_GetObjectItem(j, fields[i]), "/info lacks %s: %s", fields[i],
                           r.body);
    cr_assert_str_eq(cJSON_GetObjectItem(j, "model_id")->valuestring, "tiny-qwen3-embed");
    /* the fixture's config.json says torch_dtype bfloat16; the CPU backend computes in fp32 */
    cr_assert_str_eq(cJSON_GetObjectItem(j, "model_dtype")->valuestring, "bfloat16");
    cr_assert_str_eq(cJSON_GetObjectItem(j, "compute_dtype")->valuestring, "float32");
    const cJSON *mt = cJSON_GetObjectItem(j, "model_type");
    cr_assert_str_eq(
        cJSON_GetObjectItem(cJSON_GetObjectItem(mt, "embedding"), "pooling")->valuestring,
        "last_token");
    cr_assert_eq(cJSON_GetObjectItem(j, "max_input_length")->valueint, qe_max_positions(t.e));
    cr_assert_eq(cJSON_GetObjectItem(j, "tokenization_workers")->valueint, 2);
    cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "auto_truncate")));
    cr_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "model_sha")), "not a HF cache snapshot");
    cJSON_Delete(j);
    srvt_resp_free(&r);
    srvt_stop(&t);
}

/* Item 5: te_* names, vLLM-meaning gauges, and a scrape that does not count itself. */
Test(server_tei, metrics_have_te_names_and_router_gauges) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    srvt_server t;
    start_default(&t);
    srvt_resp r;
    cr_assert_eq(srvt_post(t.base, "/embed", "{\"inputs\":\"one\"}", &r), 200);
    srvt_resp_free(&r);
    cr_assert_eq(srvt_post(t.base, "/v1/embeddings", "{\"input\":[\"a\",\"b\"]}", &r), 200);
    srvt_resp_free(&r);
    cr_assert_eq(srvt_post(t.base, "/embed", "{\"inputs\":\"a\",\"dimensions\":1}", &r), 422);
    srvt_resp_free(&r);
    /* the last request leaves the in-flight count just after its answer is sent (the library's
     * completion callback), so a scrape may come first: wait for it to settle. A scrape that
     * counted itself would never read 0. */
    for (int i = 0; i < 100 && srvt_metric(t.base, "qembed_requests_in_flight") != 0; i++)
        usleep(10000);
    cr_assert_eq(srvt_get(t.base, "/metrics", &r), 200);
    static const char *lines[] = {
        "te_request_count{method=\"single\"} 2\n",
        "te_request_count{method=\"batch\"} 1\n",
        "te_request_success{method=\"single\"} 1\n",
        "te_request_success{method=\"batch\"} 1\n",
        "te_request_failure{err=\"validation\"} 1\n",
        "te_request_duration_count 2\n",
        "te_request_tokenization_duration_count 2\n",
        "te_request_queue_duration_count 2\n",
        "te_request_inference_duration_count 2\n",
        "te_embed_duration_count 2\n",
        "te_batch_next_size_count",
        "te_batch_next_tokens_count",
        "te_queue_size 0\n",
        "qembed:num_requests_waiting 0\n",
        "qembed:num_requests_running 0\n",
        "qembed:kv_cache_usage_perc 0",
        "qembed_requests_in_flight 0\n", /* the scrape itself is not in flight */
        "qembed_requests_total{route=\"/embed\",status=\"200\"} 1\n",
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
        cr_assert_not_null(strstr(r.body, lines[i]), "/metrics lacks '%s'", lines[i]);
    double kv = srvt_metric_value(t.base, "qembed:kv_cache_usage_perc");
    cr_assert(kv >= 0 && kv <= 1, "kv usage %g", kv);
    srvt_resp_free(&r);
    srvt_stop(&t);
}

/* Item 5: waiting and running while a long request computes. */
Test(server_tei, router_gauges_count_running_requests, .timeout = 120) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    srvt_server t;
    start_default(&t);
    char *body = srvt_ids_body(3000);
    srvt_bg bg = {.body = body, .timeout_ms = 110000};
    snprintf(bg.base, sizeof bg.base, "%s", t.base);
    srvt_bg_start(&bg);
    long seen = 0;
    for (int i = 0; i < 2000 && seen == 0; i++) {
        seen = srvt_metric(t.base, "qembed:num_requests_running") +
               srvt_metric(t.base, "qembed:num_requests_waiting");
        if (!seen) usleep(2000);
    }
    srvt_bg_join(&bg);
    cr_assert_eq(bg.status, 200, "%s", bg.r.body);
    srvt_resp_free(&bg.r);
    free(body);
    cr_assert_eq(seen, 1, "the request was counted waiting or running while it ran");
    cr_assert_eq(srvt_metric(t.base, "qembed:num_requests_running"), 0);
    cr_assert_eq(srvt_metric(t.base, "qembed:num_requests_waiting"), 0);
    srvt_stop(&t);
}

/* Item 6: GET /v1/models/{id}. */
Test(server_tei, models_retrieve_by_id) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    srvt_server t;
    start_default(&t);
    srvt_resp r;
    cr_assert_eq(srvt_get(t.base, "/v1/models/tiny-qwen3-embed", &r), 200, "%s", r.body);
    cJSON *j = srvt_json(&r);
    cr_assert_str_eq(cJSON_GetObjectItem(j, "id")->valuestring, "tiny-qwen3-embed");
    cr_assert_str_eq(cJSON_GetObjectItem(j, "object")->valuestring, "model");
    cJSON_Delete(j);
    srvt_resp_free(&r);
    cr_assert_eq(srvt_get(t.base, "/v1/models/gpt-4", &r), 404, "%s", r.body);
    j = srvt_json(&r);
    cr_assert_not_null(strstr(srvt_error_message(j), "gpt-4"));
    cJSON_Delete(j);
    srvt_resp_free(&r);
    /* "created" is fixed (the server's start), not the time of each call */
    double created[3];
    for (int k = 0; k < 3; k++) {
        if (k) usleep(1100 * 1000);
        cr_assert_eq(srvt_get(t.base, k < 2 ? "/v1/models" : "/v1/models/tiny-qwen3-embed", &r),
                     200);
        j = srvt_json(&r);
        const cJSON *m = k < 2 ? cJSON_GetArrayItem(cJSON_GetObjectItem(j, "data"), 0) : j;
        const cJSON *c = cJSON_GetObjectItem(m, "created");
        cr_assert(cJSON_IsNumber(c), "%s", r.body);
        created[k] = c->valuedouble;
        cJSON_Delete(j);
        srvt_resp_free(&r);
    }
    cr_assert(created[0] == created[1] && created[1] == created[2], "created %.0f, %.0f, %.0f",
              created[0], created[1], created[2]);
    cr_assert(created[0] > 0 && created[0] <= (double)time(NULL));
    srvt_stop(&t);
}

/* Item 6: POST /similarity: cosine of the source with each sentence. */
Test(server_tei, similarity_is_cosine_of_engine_vectors) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    srvt_server t;
    start_default(&t);
    const char *texts[] = {"What is Deep Learning?", "What is Machine Learning?", "banana bread"};
    float *v = srvt_engine_texts(t.e, texts, 3, 0);
    const int W = qe_dim(t.e);
    srvt_resp r;
    /* huggingface_hub's sentence_similarity body */
    cr_assert_eq(
        srvt_post(t.base, "/similarity",
                  "{\"inputs\": {\"source_sentence\": \"What is Deep Learning?\", \"sentences\": "
                  "[\"What is Machine Learning?\", \"banana bread\"]}, \"parameters\": "
                  "{\"truncate\": true}}",
                  &r),
        200, "%s", r.body);
    cJSON *j = srvt_json(&r);
    cr_assert_eq(cJSON_GetArraySize(j), 2, "%s", r.body);
    for (int i = 0; i < 2; i++) {
        double dot = 0;
        for (int k = 0; k < W; k++)
            dot += (double)v[k] * v[(size_t)(i + 1) * W + k];
        double got = cJSON_GetArrayItem(j, i)->valuedouble;
        cr_assert(fabs(got - dot) < 1e-5, "similarity %d: %g, want %g", i, got, dot);
    }
    cJSON_Delete(j);
    srvt_resp_free(&r);
    free(v);
    srvt_stop(&t);
}

/* Item 6: the engine's per-token vectors: the last row is the pooled, unnormalised vector. */
Test(server_tei, engine_tokens_last_row_is_the_pooled_vector) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    srvt_server t;
    start_default(&t);
    const int32_t a[] = {9707, 11, 1879, 0, 13, 151643};
    const int len = 6, W = qe_dim(t.e);
    float *rows = malloc(sizeof(float) * (size_t)len * W);
    cr_assert_eq(qe_embed_tokens(t.e, a, len, rows), QE_OK, "%s", qe_last_error(t.e));
    const int32_t *ids[] = {a};
    float *pooled = malloc(sizeof(float) * (size_t)W);
    cr_assert_eq(qe_embed_ids_ex(t.e, ids, &len, 1, 0, 0, pooled), QE_OK);
    for (int k = 0; k < W; k++)
        cr_assert_eq(rows[(size_t)(len - 1) * W + k], pooled[k], "element %d: %.9g vs %.9g", k,
                     rows[(size_t)(len - 1) * W + k], pooled[k]);
    /* the first row is what a one-token sequence of it pools (causal attention) */
    const int one = 1;
    cr_assert_eq(qe_embed_ids_ex(t.e, ids, &one, 1, 0, 0, pooled), QE_OK);
    srvt_assert_close(rows, pooled, W, "row 0");
    free(rows);
    free(pooled);
    srvt_stop(&t);
}

/* Item 6: POST /embed_all: [input][token][width], rows as qe_embed_tokens gives them. */
Test(server_tei, embed_all_returns_per_token_vectors) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    srvt_server t;
    start_default(&t);
    const tok_tokenizer *tk = qe_tokenizer(t.e);
    const char *src[] = {"hello world", "late chunking"};
    srvt_resp r;
    cr_assert_eq(
        srvt_post(t.base, "/embed_all", "{\"inputs\":[\"hello world\",\"late chunking\"]}", &r),
        200, "%s", r.body);
    cJSON *j = srvt_json(&r);
    cr_assert_eq(cJSON_GetArraySize(j), 2);
    const int W = qe_dim(t.e);
    for (int i = 0; i < 2; i++) {
        int32_t *ids = NULL;
        int n = 0;
        char err[128];
        cr_assert_eq(tok_encode(tk, src[i], strlen(src[i]), NULL, &ids, &n, err, sizeof err),
                     TOK_OK);
        float *want = malloc(sizeof(float) * (size_t)n * W);
        cr_assert_eq(qe_embed_tokens(t.e, ids, n, want), QE_OK);
        const cJSON *a = cJSON_GetArrayItem(j, i);
        cr_assert_eq(cJSON_GetArraySize(a), n, "one vector per token");
        for (int k = 0; k < n; k++) {
            int d;
            float *got = srvt_float_array(cJSON_GetArrayItem(a, k), &d);
            cr_assert_eq(d, W);
            for (int x = 0; x < W; x++)
                cr_assert_eq(got[x], want[(size_t)k * W + x], "input %d token %d", i, k);
            free(got);
        }
        free(want);
        free(ids);
    }
    cJSON_Delete(j);
    srvt_resp_free(&r);
    /* token ids as given */
    cr_assert_eq(srvt_post(t.base, "/embed_all", "{\"inputs\":[9707,11]}", &r), 200, "%s", r.body);
    j = srvt_json(&r);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetArrayItem(j, 0)), 2);
    cJSON_Delete(j);
    srvt_resp_free(&r);
    srvt_stop(&t);
}

/* Item 6: the probes beside /health, and /openapi.json. */
Test(server_tei, health_probes_and_openapi) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    srvt_server t;
    start_default(&t);
    srvt_resp r;
    cr_assert_eq(srvt_get(t.base, "/health/live", &r), 200);
    srvt_resp_free(&r);
    cr_assert_eq(srvt_get(t.base, "/health/ready", &r), 200);
    srvt_resp_free(&r);
    cr_assert_eq(srvt_get(t.base, "/openapi.json", &r), 200);
    cJSON *j = srvt_json(&r);
    cr_assert_not_null(cJSON_GetObjectItem(j, "openapi"));
    const cJSON *paths = cJSON_GetObjectItem(j, "paths");
    static const char *routes[] = {"/",         "/embed",       "/embed_all",      "/similarity",
                                   "/tokenize", "/decode",      "/v1/embeddings",  "/v1/models",
                                   "/info",     "/health/live", "/v1/models/{id}", "/metrics"};
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        cr_assert_not_null(cJSON_GetObjectItem(paths, routes[i]), "openapi lacks %s", routes[i]);
    cJSON_Delete(j);
    srvt_resp_free(&r);
    cr_assert_eq(serve_drain(t.s), 0);
    cr_assert_eq(srvt_get(t.base, "/health/ready", &r), 503, "not ready while draining");
    srvt_resp_free(&r);
    cr_assert_eq(srvt_get(t.base, "/health/live", &r), 200, "alive while draining");
    srvt_resp_free(&r);
    srvt_stop(&t);
}

/* Item 6: --cors-allow-origin: preflights answered, the header on every answer; off by default. */
Test(server_tei, cors_is_opt_in) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    srvt_server t;
    start_default(&t);
    srvt_resp r;
    cr_assert_eq(
        srvt_request(NULL, t.base, "OPTIONS", "/embed", NULL, 0, "Origin: https://app.example", &r),
        405);
    char v[256];
    cr_assert(!srvt_header(&r, "Access-Control-Allow-Origin", v, sizeof v));
    srvt_resp_free(&r);
    srvt_stop(&t);

    serve_config c;
    srvt_config(&c);
    c.cors_allow_origin = "https://app.example";
    c.api_key = "k";
    srvt_start(&t, &c);
    cr_assert_eq(srvt_request(NULL, t.base, "OPTIONS", "/v1/embeddings", NULL, 0,
                              "Access-Control-Request-Headers: authorization, content-type", &r),
                 204, "%s", r.body);
    cr_assert(srvt_header(&r, "Access-Control-Allow-Origin", v, sizeof v));
    cr_assert_str_eq(v, "https://app.example");
    cr_assert(srvt_header(&r, "Access-Control-Allow-Methods", v, sizeof v));
    cr_assert_not_null(strstr(v, "POST"));
    cr_assert(srvt_header(&r, "Access-Control-Allow-Headers", v, sizeof v));
    cr_assert_not_null(strstr(v, "authorization"));
    srvt_resp_free(&r);
    cr_assert_eq(srvt_request(NULL, t.base, "POST", "/v1/embeddings", "{\"input\":\"a\"}", 13,
                              "Authorization: Bearer k", &r),
                 200);
    cr_assert(srvt_header(&r, "Access-Control-Allow-Origin", v, sizeof v));
    srvt_resp_free(&r);
    srvt_stop(&t);
}

/* Item 7: left truncation cuts the text, never the instruction or prompt, nor the end token. */
Test(server_tei, left_truncation_keeps_the_instruction) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    c.max_input_tokens = 24;
    srvt_server t;
    srvt_start(&t, &c);
    const tok_tokenizer *tk = qe_tokenizer(t.e);
    char *text = srvt_long_text(80, 5);
    char body[4096], err[128];
    /* instruction */
    char *full = tok_format_instruction("Find the fruit", text);
    size_t plen = strlen(full) - strlen(text);
    int32_t *ids = NULL;
    int n = 0;
    cr_assert_eq(tok_encode(tk, full, strlen(full), NULL, &ids, &n, err, sizeof err), TOK_OK);
    cr_assert_gt(n, 24);
    /* what must survive: the tokens of "Instruct: Find the fruit\nQuery:" at the head */
    int32_t *pids = NULL;
    int pn = 0;
    tok_encode_opts nos = {0};
    cr_assert_eq(tok_encode(tk, full, plen, &nos, &pids, &pn, err, sizeof err), TOK_OK);
    cr_assert_eq(prompt_cut(tk, ids, &n, 24, plen, 1), 0);
    cr_assert_eq(n, 24);
    for (int k = 0; k < pn - 1; k++) /* the prompt's last token may merge into the text's */
        cr_assert_eq(ids[k], pids[k], "prompt token %d", k);
    cr_assert_eq(ids[23], tok_end_id(tk), "the end token stays last");
    const int32_t *ip[] = {ids};
    float *want = srvt_engine_ids(t.e, ip, &n, 1, 0);
    snprintf(
        body, sizeof body,
        "{\"input\":\"%s\",\"instruction\":\"Find the fruit\",\"truncation_direction\":\"left\"}",
        text);
    srvt_resp r;
    cr_assert_eq(srvt_post(t.base, "/v1/embeddings", body, &r), 200, "%s", r.body);
    srvt_expect_first_embedding(&r, want, "left truncation keeps the instruction");
    /* and the answer differs from the one without the instruction (the bug: they were equal) */
    snprintf(body, sizeof body, "{\"input\":\"%s\",\"truncation_direction\":\"left\"}", text);
    cr_assert_eq(srvt_post(t.base, "/v1/embeddings", body, &r), 200);
    cJSON *j = srvt_json(&r);
    int d;
    float *plain = srvt_openai_embedding(j, 0, &d);
    double dot = 0;
    for (int k = 0; k < d; k++)
        dot += (double)plain[k] * want[k];
    cr_assert(dot < 0.99999, "the instruction changed nothing (cos %g)", dot);
    free(plain);
    cJSON_Delete(j);
    srvt_resp_free(&r);
    free(want);
    free(ids);
    free(pids);
    free(full);
    /* prompt_name on TEI's route, the same way */
    const char *p = tok_prompt(tk, "query");
    size_t fl = strlen(p) + strlen(text) + 1;
    full = malloc(fl);
    snprintf(full, fl, "%s%s", p, text);
    cr_assert_eq(tok_encode(tk, full, strlen(full), NULL, &ids, &n, err, sizeof err), TOK_OK);
    cr_assert_eq(prompt_cut(tk, ids, &n, 24, strlen(p), 1), 0);
    ip[0] = ids;
    want = srvt_engine_ids(t.e, ip, &n, 1, 0);
    snprintf(body, sizeof body,
             "{\"inputs\":\"%s\",\"prompt_name\":\"query\",\"truncation_direction\":\"Left\"}",
             text);
    cr_assert_eq(srvt_post(t.base, "/embed", body, &r), 200, "%s", r.body);
    j = srvt_json(&r);
    float *got = srvt_float_array(cJSON_GetArrayItem(j, 0), &d);
    srvt_assert_close(got, want, d, "left truncation keeps the prompt");
    free(got);
    cJSON_Delete(j);
    srvt_resp_free(&r);
    free(want);
    free(ids);
    free(full);
    free(text);
    srvt_stop(&t);
}

/* Audit 1: a right cut (the default) behind a prompt took the prompt's end along with the text
 * when the limit did not hold the prompt, the text and the end token: every input became the same
 * ids ("hello" and "totally different text" got one vector). Now the prompt is never cut: such an
 * input is 413 input_too_long, as a left cut already was, and an input that fits keeps the whole
 * prompt, the text's start and the end token. */
Test(server_tei, right_truncation_never_cuts_the_prompt) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    srvt_server t;
    srvt_start_truncating(&t, 16);
    const tok_tokenizer *tk = qe_tokenizer(t.e);
    const char *p = tok_prompt(tk, "query");
    int32_t *pids = NULL;
    int pn = 0;
    char err[128];
    tok_encode_opts nos = {0};
    cr_assert_eq(tok_encode(tk, p, strlen(p), &nos, &pids, &pn, err, sizeof err), TOK_OK);
    cr_assert_geq(pn, 15, "the query prompt (%d tokens) must fill the limit for this test", pn);
    free(pids);
    const char *two = "{\"input\":[\"hello\",\"totally different text\"],\"prompt_name\":\"query\"";
    char body[4096];
    srvt_resp r;
    for (int left = 0; left < 2; left++) {
        snprintf(body, sizeof body, "%s%s}", two, left ? ",\"truncation_direction\":\"left\"" : "");
        cr_assert_eq(srvt_post(t.base, "/v1/embeddings", body, &r), 413, "%s: %s", body, r.body);
        cJSON *j = srvt_json(&r);
        cr_assert_not_null(strstr(srvt_error_message(j), "no room"), "%s", r.body);
        const cJSON *code = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "code");
        cr_assert(cJSON_IsString(code) && !strcmp(code->valuestring, "input_too_long"), "%s",
                  r.body);
        cJSON_Delete(j);
        srvt_resp_free(&r);
    }
    srvt_expect_tei_error(&t, "/embed",
                          "{\"inputs\":[\"hello\",\"x y\"],\"prompt_name\":\"query\"}", 413,
                          "Validation", "no room");
    /* a short instruction: the text loses its end, the prompt and the end token stay */
    char *texts[2] = {srvt_long_text(40, 5), srvt_long_text(40, 6)};
    float *want[2];
    for (int k = 0; k < 2; k++) {
        char *full = tok_format_instruction("Fruit", texts[k]);
        int32_t *ids = NULL;
        int n = 0;
        cr_assert_eq(tok_encode(tk, full, strlen(full), NULL, &ids, &n, err, sizeof err), TOK_OK);
        cr_assert_eq(prompt_cut(tk, ids, &n, 16, strlen(full) - strlen(texts[k]), 0), 0);
        cr_assert_eq(ids[15], tok_end_id(tk), "the end token stays last");
        const int32_t *ip[] = {ids};
        want[k] = srvt_engine_ids(t.e, ip, &n, 1, 0);
        free(ids);
        free(full);
    }
    snprintf(body, sizeof body, "{\"input\":[\"%s\",\"%s\"],\"instruction\":\"Fruit\"}", texts[0],
             texts[1]);
    cr_assert_eq(srvt_post(t.base, "/v1/embeddings", body, &r), 200, "%s", r.body);
    cJSON *j = srvt_json(&r);
    int d;
    for (int k = 0; k < 2; k++) {
        float *got = srvt_openai_embedding(j, k, &d);
        srvt_assert_close(got, want[k], d, "a right cut keeps the instruction");
        free(got);
    }
    double dot = 0;
    for (int k = 0; k < d; k++)
        dot += (double)want[0][k] * want[1][k];
    cr_assert(dot < 0.99999, "two texts gave one vector (cos %g)", dot);
    cJSON_Delete(j);
    srvt_resp_free(&r);
    for (int k = 0; k < 2; k++) {
        free(want[k]);
        free(texts[k]);
    }
    srvt_stop(&t);
}

/* Item 7: token ids cut on the right keep a user-appended end token, as text does. */
Test(server_tei, right_truncated_ids_keep_the_end_token) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    srvt_server t;
    srvt_start_truncating(&t, 16);
    const int end = tok_end_id(qe_tokenizer(t.e));
    char body[512];
    int o = snprintf(body, sizeof body, "{\"input\":[[");
    for (int i = 1; i <= 20; i++)
        o += snprintf(body + o, sizeof body - (size_t)o, "%d,", i);
    snprintf(body + o, sizeof body - (size_t)o, "%d]]}", end);
    int32_t keep[16];
    for (int i = 0; i < 15; i++)
        keep[i] = 1 + i;
    keep[15] = end;
    const int32_t *kp[] = {keep};
    int kl = 16;
    float *want = srvt_engine_ids(t.e, kp, &kl, 1, 0);
    srvt_resp r;
    cr_assert_eq(srvt_post(t.base, "/v1/embeddings", body, &r), 200, "%s", r.body);
    srvt_expect_first_embedding(&r, want, "right-truncated ids keep the end token");
    free(want);
    /* without an end token the cut is plain */
    cr_assert_eq(srvt_post(t.base, "/v1/embeddings",
                           "{\"input\":[[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18]]}", &r),
                 200);
    int32_t head[16];
    for (int i = 0; i < 16; i++)
        head[i] = 1 + i;
    kp[0] = head;
    want = srvt_engine_ids(t.e, kp, &kl, 1, 0);
    srvt_expect_first_embedding(&r, want, "plain right cut");
    free(want);
    srvt_stop(&t);
}

/* Item 8: a lone surrogate escape is invalid UTF-8 at a byte offset, not "not valid JSON". */
Test(server_tei, lone_surrogate_is_invalid_utf8_with_position) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    srvt_server t;
    start_default(&t);
    srvt_resp r;
    cr_assert_eq(srvt_post(t.base, "/v1/embeddings", "{\"input\":\"a\\ud800b\"}", &r), 400);
    cJSON *j = srvt_json(&r);
    const char *m = srvt_error_message(j);
    cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "code")->valuestring,
                     "invalid_utf8");
    cr_assert_not_null(strstr(m, "byte 11"), "%s", m);
    cJSON_Delete(j);
    srvt_resp_free(&r);
    cr_assert_eq(srvt_post(t.base, "/v1/embeddings", "{\"input\":[\"ok\",\"\\udc00\"]}", &r), 400);
    j = srvt_json(&r);
    cr_assert_not_null(strstr(srvt_error_message(j), "UTF-8"));
    cJSON_Delete(j);
    srvt_resp_free(&r);
    srvt_expect_tei_error(&t, "/embed", "{\"inputs\":\"x\\ud83d\"}", 422, "Validation", "UTF-8");
    /* a well-formed pair is fine, and an escaped backslash before "ud800" is text */
    cr_assert_eq(srvt_post(t.base, "/v1/embeddings", "{\"input\":\"smile \\ud83d\\ude00\"}", &r),
                 200, "%s", r.body);
    srvt_resp_free(&r);
    cr_assert_eq(srvt_post(t.base, "/v1/embeddings", "{\"input\":\"a\\\\ud800\"}", &r), 200, "%s",
                 r.body);
    srvt_resp_free(&r);
    srvt_stop(&t);
}

Test(server_units, lone_surrogate_scanner) {
    const char *a = "{\"x\":\"a\\ud800b\"}";
    cr_assert_eq(json_lone_surrogate_at(a, strlen(a)), 7);
    const char *b = "{\"x\":\"\\ud83d\\ude00\"}";
    cr_assert_eq(json_lone_surrogate_at(b, strlen(b)), -1);
    const char *c = "{\"x\":\"\\\\ud800\"}";
    cr_assert_eq(json_lone_surrogate_at(c, strlen(c)), -1);
    const char *d = "{\"\\udfff\":1}";
    cr_assert_eq(json_lone_surrogate_at(d, strlen(d)), 2);
    const char *e = "{\"x\":\"\\ud800\\u0041\"}";
    cr_assert_eq(json_lone_surrogate_at(e, strlen(e)), 6);
}

/* A long sequence runs in chunks through the paged K/V pool (here a step holds 64 tokens), beside
 * the server's own scheduler: the per-token rows still end in the pooled vector. */
Test(server_tei, engine_tokens_of_a_chunked_sequence) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    c.max_batch_tokens = 64;
    c.max_input_tokens = 512;
    srvt_server t;
    srvt_start(&t, &c);
    const int len = 200, W = qe_dim(t.e);
    int32_t *a = malloc(sizeof(int32_t) * len);
    for (int i = 0; i < len; i++)
        a[i] = 100 + (i * 37) % 5000;
    float *rows = malloc(sizeof(float) * (size_t)len * W);
    cr_assert_eq(qe_embed_tokens(t.e, a, len, rows), QE_OK, "%s", qe_last_error(t.e));
    const int32_t *ids[] = {a};
    float *pooled = malloc(sizeof(float) * (size_t)W);
    cr_assert_eq(qe_embed_ids_ex(t.e, ids, &len, 1, 0, 0, pooled), QE_OK);
    srvt_assert_close(rows + (size_t)(len - 1) * W, pooled, W, "chunked last row");
    free(pooled);
    free(rows);
    free(a);
    srvt_stop(&t);
}

/* /embed_all in a thread of its own: POST body, keep the answer. */
typedef struct embed_all_bg {
    const char *base, *body;
    srvt_resp r;
    long status;
    atomic_int finished;
} embed_all_bg;
static void *embed_all_main(void *arg) {
    embed_all_bg *b = arg;
    b->status = srvt_post_timeout(b->base, "/embed_all", b->body, 280000, &b->r);
    atomic_store(&b->finished, 1);
    return NULL;
}

/* Issue 11, residual: /embed_all went past the queue straight to the engine, so it was not in
 * the gauges or the 429 budget, and a long input got 424 while a long document held the K/V
 * pool's pages. Now it is queued like any request: it waits (counted as waiting) for the pages,
 * then gets the same rows as qe_embed_tokens. */
Test(server_tei, embed_all_waits_for_pages_in_the_queue, .timeout = 300) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    c.max_batch_tokens = 64;       /* the document runs in 32 chunks */
    c.kv_pool_tokens = 2048 + 128; /* pages of 256: one left, too few for the 384-token
                                    * /embed_all */
    srvt_server t;
    srvt_start(&t, &c);
    char *doc = srvt_ids_body(2048);
    srvt_bg d = {.body = doc, .timeout_ms = 280000};
    snprintf(d.base, sizeof d.base, "%s", t.base);
    srvt_bg_start(&d);
    for (int i = 0; i < 5000 && srvt_metric(t.base, "qembed_kv_pool_used_tokens") <= 0; i++)
        usleep(1000);
    enum { LEN = 384 };
    int32_t ids[LEN];
    sbuf body = {0};
    sb_put(&body, "{\"inputs\":[", 11);
    for (int i = 0; i < LEN; i++) {
        ids[i] = 100 + (i * 7) % 5000;
        sb_printf(&body, "%s%d", i ? "," : "", ids[i]);
    }
    sb_put(&body, "]}", 2);
    embed_all_bg b = {.base = t.base, .body = body.p};
    pthread_t th;
    pthread_create(&th, NULL, embed_all_main, &b);
    long waiting = 0; /* the document's request and ours, until ours is answered */
    for (int i = 0; i < 2000 && waiting < 2 && !atomic_load(&b.finished); i++) {
        waiting = srvt_metric(t.base, "qembed:num_requests_waiting") +
                  srvt_metric(t.base, "qembed:num_requests_running");
        if (waiting < 2) usleep(1000);
    }
    const long queued = srvt_metric(t.base, "qembed:num_requests_waiting");
    const int doc_running = srvt_metric(t.base, "qembed_sequences_processed_total") == 0;
    /* a short query is not held behind the waiting /embed_all: it needs no pages */
    srvt_resp q;
    cr_assert_eq(srvt_post(t.base, "/v1/embeddings", "{\"input\":\"a short query\"}", &q), 200);
    srvt_resp_free(&q);
    pthread_join(th, NULL);
    srvt_bg_join(&d);
    if (!doc_running) cr_skip_test("the document was done before /embed_all: nothing measured");
    cr_assert_eq(d.status, 200, "the document: %ld %s", d.status, d.r.body);
    cr_assert_eq(b.status, 200, "/embed_all: %ld %.300s", b.status, b.r.body);
    cr_assert_eq(queued, 1, "/embed_all is not counted as waiting (%ld)", queued);
    float *want = malloc(sizeof(float) * (size_t)LEN * (size_t)qe_dim(t.e));
    cr_assert_eq(qe_embed_tokens(t.e, ids, LEN, want), QE_OK);
    cJSON *j = srvt_json(&b.r);
    const cJSON *rows = cJSON_GetArrayItem(j, 0);
    cr_assert_eq(cJSON_GetArraySize(rows), LEN);
    const int W = qe_dim(t.e);
    for (int k = 0; k < LEN; k++) {
        int n = 0;
        float *got = srvt_float_array(cJSON_GetArrayItem(rows, k), &n);
        cr_assert_eq(n, W);
        for (int x = 0; x < W; x++)
            cr_assert_eq(got[x], want[(size_t)k * W + x], "token %d", k);
        free(got);
    }
    cJSON_Delete(j);
    free(want);
    srvt_resp_free(&b.r);
    srvt_resp_free(&d.r);
    sb_free(&body);
    free(doc);
    cr_expect_eq(srvt_metric(t.base, "qembed:num_requests_waiting"), 0);
    cr_expect_eq(srvt_metric(t.base, "qembed:num_requests_running"), 0);
    srvt_stop(&t);
}
