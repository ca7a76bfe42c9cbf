/* test_server_errors.c — every row of SERVING.md's error table: the status, the OpenAI error shape,
 * Retry-After on 429, and that the server keeps serving correct answers after each error. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "random_model.h"
#include "srv_harness.h"
#include "test_util.h"
#include "tokenizer.h"

/* POSTs body to path and checks status, the error shape, and (where given) a substring of the
 * message and the error's code. */
static void expect_error_coded(srvt_server *t, const char *path, const char *body, long status,
                               const char *in_message, const char *code) {
    srvt_resp r;
    long got = srvt_post(t->base, path, body, &r);
    cr_assert_eq(got, status, "%s %.200s: got %ld (%s), want %ld", path, body, got, r.body, status);
    cJSON *j = srvt_json(&r);
    const char *m = srvt_error_message(j);
    if (in_message)
        cr_assert_not_null(strstr(m, in_message), "message '%s' lacks '%s'", m, in_message);
    const cJSON *c = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"), "code");
    if (code)
        cr_assert(cJSON_IsString(c) && !strcmp(c->valuestring, code), "%s %s: code is not %s: %s",
                  path, body, code, r.body);
    cJSON_Delete(j);
    srvt_resp_free(&r);
}

static void expect_error(srvt_server *t, const char *path, const char *body, long status,
                         const char *in_message) {
    expect_error_coded(t, path, body, status, in_message, NULL);
}

static void expect_code(srvt_server *t, const char *path, const char *body, long status,
                        const char *code) {
    expect_error_coded(t, path, body, status, NULL, code);
}

static void expect_ok(srvt_server *t) {
    srvt_resp r;
    cr_assert_eq(srvt_post(t->base, "/v1/embeddings", "{\"input\":\"still serving\"}", &r), 200,
                 "%s", r.body);
    srvt_resp_free(&r);
}

/* A model whose embedding table is smaller than its tokenizer (the real 4B/8B: 151665 vs 151669):
 * text that tokenizes past the table is one client's 400, not a failed batch for everyone. */
Test(server_errors, token_outside_the_model_vocabulary, .timeout = 60) {
    char dir[1024], err[512];
    tu_scratch_dir(dir, sizeof dir, "srv-smallvocab");
    random_model_opts o = {0};
    random_model_preset("tiny", &o.cfg);
    o.cfg.vocab_size = 151665;
    o.cfg.num_layers = 1;
    o.out_dir = dir;
    o.quiet = 1;
    cr_assert_eq(random_model_write(&o, err, sizeof err), 0, "%s", err);
    serve_config c;
    srvt_config(&c);
    c.model_dir = dir;
    srvt_server t;
    srvt_start(&t, &c);
    expect_error(&t, "/v1/embeddings", "{\"input\":\"think: <think> hard\"}", 400,
                 "outside the model");
    expect_error(&t, "/v1/embeddings", "{\"input\":[[1,151666]]}", 400, NULL);
    expect_ok(&t);
    srvt_stop(&t);
}

/* Client bytes echoed in an error message stay valid UTF-8 (U+FFFD for invalid bytes). */
Test(server_errors, invalid_utf8_is_not_echoed_raw) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    srvt_server t;
    srvt_start(&t, &c);
    srvt_resp r;
    cr_assert_eq(
        srvt_post(t.base, "/v1/embeddings", "{\"input\":\"a\",\"model\":\"\xff\xfe\"}", &r), 400);
    for (size_t i = 0; i < r.len; i++)
        cr_assert((unsigned char)r.body[i] != 0xff && (unsigned char)r.body[i] != 0xfe,
                  "raw invalid byte at %zu: %s", i, r.body);
    cr_assert_not_null(strstr(r.body, "\xEF\xBF\xBD"), "%s", r.body);
    srvt_resp_free(&r);
    srvt_stop(&t);
}

Test(server_errors, bad_requests_are_400) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    srvt_server t;
    srvt_start(&t, &c);
    const char *E = "/v1/embeddings";
    expect_error(&t, E, "{\"input\":", 400, "JSON");
    expect_error(&t, E, "not json at all", 400, NULL);
    expect_error(&t, E, "", 400, NULL);
    expect_error(&t, E, "[\"hello\"]", 400, "object");
    expect_error(&t, E, "{}", 400, "input");
    expect_error(&t, E, "{\"input\":42.5}", 400, NULL);
    expect_error(&t, E, "{\"input\":{\"a\":1}}", 400, NULL);
    expect_error(&t, E, "{\"input\":[\"a\",3]}", 400, "mixes");
    expect_error(&t, E, "{\"input\":[[1,2],\"a\"]}", 400, "mixes");
    expect_error(&t, E, "{\"input\":[1.5,2]}", 400, "integer");
    expect_error(&t, E, "{\"input\":\"a\"} trailing garbage", 400, "JSON");
    /* the reason reads after "the body is" (it said "the body is a string holds ...") */
    expect_error(&t, E, "{\"input\":\"abc\\u0000def\"}", 400,
                 "the body is not accepted: a string holds \\u0000 (NUL)");
    expect_error(&t, E, "{\"input\":\"\\u0000abc\"}", 400, "NUL");
    expect_error(&t, E, "{\"input\":\"a\",\"model\":\"tiny-qwen3-embed\\u0000x\"}", 400, "NUL");
    srvt_expect_tei_error(&t, "/tokenize", "{\"inputs\":\"a\\u0000b\"}", 422, "Validation", "NUL");
    /* an escaped backslash followed by the letters u0000 is text, not a NUL */
    srvt_resp ok;
    cr_assert_eq(srvt_post(t.base, E, "{\"input\":\"a\\\\u0000b\"}", &ok), 200, "%s", ok.body);
    srvt_resp_free(&ok);
    srvt_expect_tei_error(&t, "/decode", "{\"ids\":[1,2]}]", 422, "Validation", "JSON");
    expect_error(&t, E, "{\"input\":[true]}", 400, NULL);
    expect_error(&t, E, "{\"input\":[]}", 400, "empty");
    expect_error(&t, E, "{\"input\":\"\"}", 400, "empty");
    expect_error(&t, E, "{\"input\":[\"ok\",\"\"]}", 400, "empty");
    expect_error(&t, E, "{\"input\":[[]]}", 400, "empty");
    /* every empty input has the code empty_input ([[]] had none) */
    expect_code(&t, E, "{\"input\":[]}", 400, "empty_input");
    expect_code(&t, E, "{\"input\":\"\"}", 400, "empty_input");
    expect_code(&t, E, "{\"input\":[[]]}", 400, "empty_input");
    expect_code(&t, E, "{\"input\":[[5],[]]}", 400, "empty_input");
    expect_error(&t, E, "{\"input\":\"a\",\"dimensions\":\"64\"}", 400, "integer");
    expect_error(&t, E, "{\"input\":\"a\",\"dimensions\":31}", 400, "between");
    expect_error(&t, E, "{\"input\":\"a\",\"dimensions\":65}", 400, "between");
    expect_error(&t, E, "{\"input\":\"a\",\"dimensions\":0}", 400, NULL);
    expect_error(&t, E, "{\"input\":\"a\",\"encoding_format\":\"int8\"}", 400, "encoding_format");
    expect_error(&t, E, "{\"input\":\"a\",\"encoding_format\":1}", 400, NULL);
    expect_error(&t, E, "{\"input\":\"a\",\"model\":\"gpt-4\"}", 400, "gpt-4");
    expect_error(&t, E, "{\"input\":\"a\",\"model\":7}", 400, NULL);
    expect_error(&t, E, "{\"input\":\"a\",\"truncate\":\"yes\"}", 400, "truncate");
    expect_error(&t, E, "{\"input\":\"a\",\"truncation_direction\":\"middle\"}", 400, NULL);
    expect_error(&t, E, "{\"input\":\"a\",\"normalize\":\"no\"}", 400, "normalize");
    expect_error(&t, E, "{\"input\":\"a\",\"prompt_name\":\"nope\"}", 400, "prompt_name");
    expect_error(&t, E, "{\"input\":\"a\",\"instruction\":\"x\",\"prompt_name\":\"query\"}", 400,
                 NULL);
    expect_error(&t, E, "{\"input\":[1,2],\"instruction\":\"x\"}", 400, NULL);
    expect_error(&t, E, "{\"input\":\"a\",\"user\":[1]}", 400, "user");
    /* token ids outside the vocabulary */
    char body[128];
    snprintf(body, sizeof body, "{\"input\":[1,2,%d]}", qe_vocab_size(t.e));
    expect_error(&t, E, body, 400, "vocabulary");
    expect_error(&t, E, "{\"input\":[[5],[-1]]}", 400, "vocabulary");
    expect_error(&t, E, "{\"input\":[99999999999]}", 400, NULL);
    /* far past any integer type: named in the message without a cast (found by fuzzing) */
    expect_error(&t, E, "{\"input\":[1e300]}", 400, "vocabulary");
    srvt_expect_tei_error(&t, "/decode", "{\"ids\":[[0,2,3],[1.4e79]]}", 422, "Validation",
                          "vocabulary");
    /* invalid UTF-8: raw bytes inside the JSON string (an overlong and a lone continuation byte) */
    expect_error(&t, E, "{\"input\":\"abc\xC0\xAF\"}", 400, "UTF-8");
    expect_error(&t, E, "{\"input\":[\"ok\",\"\x80zz\"]}", 400, "UTF-8");
    expect_error(&t, E, "{\"input\":\"\xED\xA0\x80\"}", 400, NULL); /* UTF-8 encoded surrogate */
    /* TEI route and the token routes */
    srvt_expect_tei_error(&t, "/embed", "{\"input\":\"wrong field name\"}", 422, "Validation",
                          "inputs");
    srvt_expect_tei_error(&t, "/embed", "{\"inputs\":[]}", 400, "Empty", NULL);
    srvt_expect_tei_error(&t, "/embed", "{\"inputs\":\"a\",\"normalize\":1}", 422, "Validation",
                          NULL);
    srvt_expect_tei_error(&t, "/tokenize", "{\"inputs\":5}", 422, "Validation", NULL);
    srvt_expect_tei_error(&t, "/decode", "{\"ids\":[1,-4]}", 422, "Validation", NULL);
    srvt_expect_tei_error(&t, "/decode", "{\"ids\":\"x\"}", 422, "Validation", NULL);
    expect_ok(&t);
    /* unknown route and wrong method */
    srvt_resp r;
    cr_assert_eq(srvt_get(t.base, "/v2/nothing", &r), 404);
    srvt_resp_free(&r);
    cr_assert_eq(srvt_get(t.base, "/v1/embeddings", &r), 405);
    cJSON *j = srvt_json(&r);
    srvt_error_message(j);
    cJSON_Delete(j);
    srvt_resp_free(&r);
    /* a 405 names the methods the route takes (RFC 9110 15.5.6: it must) */
    static const struct {
        const char *method, *path, *allow;
    } wrong[] = {{"GET", "/v1/embeddings", "POST"},  {"PUT", "/embed", "POST"},
                 {"DELETE", "/rerank", "POST"},      {"POST", "/health", "GET, HEAD"},
                 {"PUT", "/v1/models", "GET, HEAD"}, {"POST", "/metrics", "GET, HEAD"}};
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        cr_assert_eq(srvt_request(NULL, t.base, wrong[i].method, wrong[i].path,
                                  wrong[i].method[0] == 'P' ? "{}" : NULL,
                                  wrong[i].method[0] == 'P' ? 2 : 0, NULL, &r),
                     405, "%s %s", wrong[i].method, wrong[i].path);
        char allow[64];
        cr_assert(srvt_header(&r, "Allow", allow, sizeof allow), "%s %s: no Allow header: %s",
                  wrong[i].method, wrong[i].path, r.headers);
        cr_assert_str_eq(allow, wrong[i].allow, "%s %s", wrong[i].method, wrong[i].path);
        srvt_resp_free(&r);
    }
    /* unknown fields are ignored */
    cr_assert_eq(srvt_post(t.base, E, "{\"input\":\"a\",\"some_future_field\":{\"x\":1}}", &r),
                 200);
    srvt_resp_free(&r);
    expect_ok(&t);
    srvt_stop(&t);
}

Test(server_errors, limits_are_413) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    c.max_client_batch = 4;
    c.max_input_tokens = 8;
    c.max_body = 4096;
    srvt_server t;
    srvt_start(&t, &c);
    const char *E = "/v1/embeddings";
    expect_error(&t, E, "{\"input\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", 413, "limit of 4");
    expect_error(&t, E, "{\"input\":[[1],[2],[3],[4],[5]]}", 413, NULL);
    srvt_expect_tei_error(&t, "/embed", "{\"inputs\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", 413,
                          "Validation", NULL);
    /* too long with truncate: false names the length and the limit */
    char *text = srvt_long_text(40, 1);
    char body[1024];
    snprintf(body, sizeof body, "{\"input\":\"%s\",\"truncate\":false}", text);
    int32_t *ids = NULL;
    int n = 0;
    char err[128], want[64];
    cr_assert_eq(tok_encode(qe_tokenizer(t.e), text, strlen(text), NULL, &ids, &n, err, sizeof err),
                 TOK_OK);
    free(ids);
    snprintf(want, sizeof want, "has %d tokens", n);
    expect_error(&t, E, body, 413, want);
    expect_error(&t, E, body, 413, "limit of 8");
    snprintf(body, sizeof body, "{\"inputs\":\"%s\",\"truncate\":false}", text);
    srvt_expect_tei_error(&t, "/embed", body, 413, "Validation", "limit of 8");
    expect_error(&t, E, "{\"input\":[1,2,3,4,5,6,7,8,9],\"truncate\":false}", 413, "has 9 tokens");
    /* ... and is truncated by default */
    snprintf(body, sizeof body, "{\"input\":\"%s\"}", text);
    srvt_resp r;
    cr_assert_eq(srvt_post(t.base, E, body, &r), 200, "%s", r.body);
    cJSON *j = srvt_json(&r);
    cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "prompt_tokens")->valueint,
                 8);
    cJSON_Delete(j);
    srvt_resp_free(&r);
    free(text);
    /* a body over --max-body: announced by Content-Length, and a valid JSON that is just too big */
    size_t big = 64 * 1024;
    char *bb = malloc(big + 64);
    int o = snprintf(bb, big + 64, "{\"input\":\"");
    memset(bb + o, 'x', big);
    snprintf(bb + o + big, 64, "\"}");
    cr_assert_eq(srvt_post(t.base, E, bb, &r), 413, "got %ld", r.status);
    j = srvt_json(&r);
    cr_assert_not_null(strstr(srvt_error_message(j), "4096"));
    cJSON_Delete(j);
    srvt_resp_free(&r);
    /* just under the limit is fine (a short text padded with spaces in JSON) */
    o = snprintf(bb, 4096, "{\"input\":\"fits\"");
    memset(bb + o, ' ', 4000 - (size_t)o);
    snprintf(bb + 4000, 8, "}");
    cr_assert_eq(srvt_post(t.base, E, bb, &r), 200, "%s", r.body);
    srvt_resp_free(&r);
    free(bb);
    expect_ok(&t);
    srvt_stop(&t);
}

Test(server_errors, queue_full_is_429_with_retry_after, .timeout = 120) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    /* the queue weighs an input of L tokens L * (1 + L / A), A = 264 for the tiny model: 2500
     * tokens weigh 26174, 1000 weigh 4788, 3001 weigh 37115 */
    c.max_queue_tokens = 30000;
    srvt_server t;
    srvt_start(&t, &c);
    cr_assert_eq(qe_attention_equal_length(t.e), 264.0);
    /* a 2500-token request keeps the CPU engine busy for a while (past the harness's 30 s client
     * timeout under ASan on 2 cores: it gets the test's own limit) ... */
    char *first_body = srvt_ids_body(2500);
    srvt_bg first = {.body = first_body, .timeout_ms = 110000};
    snprintf(first.base, sizeof first.base, "%s", t.base);
    srvt_bg_start(&first);
    srvt_resp r;
    int admitted = 0;
    for (int i = 0; i < 400 && !admitted; i++) {
        cr_assert_eq(srvt_get(t.base, "/metrics", &r), 200);
        admitted = strstr(r.body, "qembed_inflight_tokens 2500\n") != NULL;
        srvt_resp_free(&r);
        if (!admitted) usleep(5000);
    }
    cr_assert(admitted, "the first request never showed in qembed_inflight_tokens");
    /* ... so 1000 more tokens exceed the limit: 429 with Retry-After */
    char *second = srvt_ids_body(1000);
    cr_assert_eq(srvt_post(t.base, "/v1/embeddings", second, &r), 429, "%s", r.body);
    char ra[32];
    cr_assert(srvt_header(&r, "Retry-After", ra, sizeof ra), "Retry-After header");
    cr_assert(atoi(ra) >= 1);
    cJSON *j = srvt_json(&r);
    cr_assert_not_null(strstr(srvt_error_message(j), "queue"));
    cr_assert_not_null(strstr(srvt_error_message(j), "4788"), "%s", srvt_error_message(j));
    cJSON_Delete(j);
    srvt_resp_free(&r);
    /* a request larger than the whole limit could never be queued: 413, not a retry loop */
    char *huge = srvt_ids_body(3001);
    cr_assert_eq(srvt_post(t.base, "/v1/embeddings", huge, &r), 413, "%s", r.body);
    j = srvt_json(&r);
    cr_assert_not_null(strstr(srvt_error_message(j), "--max-queue-tokens"));
    cJSON_Delete(j);
    srvt_resp_free(&r);
    srvt_bg_join(&first);
    cr_assert_eq(first.status, 200);
    srvt_resp_free(&first.r);
    /* once the first is answered, the second fits */
    cr_assert_eq(srvt_post(t.base, "/v1/embeddings", second, &r), 200, "%s", r.body);
    srvt_resp_free(&r);
    expect_ok(&t);
    free(first_body);
    free(second);
    free(huge);
    srvt_stop(&t);
}

Test(server_errors, api_key_is_401) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    c.api_key = "sekret-123";
    srvt_server t;
    srvt_start(&t, &c);
    const char *body = "{\"input\":\"hello\"}";
    srvt_resp r;
    cr_assert_eq(srvt_request(NULL, t.base, "POST", "/v1/embeddings", body, strlen(body), NULL, &r),
                 401);
    cJSON *j = srvt_json(&r);
    srvt_error_message(j);
    cJSON_Delete(j);
    srvt_resp_free(&r);
    cr_assert_eq(srvt_request(NULL, t.base, "POST", "/v1/embeddings", body, strlen(body),
                              "Authorization: Bearer wrong", &r),
                 401);
    srvt_resp_free(&r);
    cr_assert_eq(srvt_request(NULL, t.base, "POST", "/v1/embeddings", body, strlen(body),
                              "Authorization: Bearer sekret-1234", &r),
                 401);
    srvt_resp_free(&r);
    cr_assert_eq(srvt_request(NULL, t.base, "POST", "/embed", "{\"inputs\":\"a\"}", 15,
                              "Authorization: Basic c2VrcmV0LTEyMw==", &r),
                 401);
    srvt_resp_free(&r);
    cr_assert_eq(srvt_request(NULL, t.base, "GET", "/v1/models", NULL, 0, NULL, &r), 401);
    srvt_resp_free(&r);
    cr_assert_eq(srvt_request(NULL, t.base, "POST", "/v1/embeddings", body, strlen(body),
                              "Authorization: Bearer sekret-123", &r),
                 200, "%s", r.body);
    srvt_resp_free(&r);
    cr_assert_eq(srvt_request(NULL, t.base, "GET", "/v1/models", NULL, 0,
                              "Authorization: Bearer sekret-123", &r),
                 200);
    srvt_resp_free(&r);
    /* health stays open for load balancers, and so do /metrics and the OpenAPI document
     * (docs/serving.md; /openapi.json asked for the key) */
    static const char *open_routes[] = {"/health", "/health/live", "/metrics", "/openapi.json"};
    for (size_t i = 0; i < sizeof open_routes / sizeof open_routes[0]; i++) {
        cr_assert_eq(srvt_get(t.base, open_routes[i], &r), 200, "%s: %s", open_routes[i], r.body);
        srvt_resp_free(&r);
    }
    srvt_stop(&t);
}

Test(server_errors, not_ready_is_503) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    char dir[1024];
    tu_scratch_dir(dir, sizeof dir, "srv-noload");
    serve_config c;
    srvt_config(&c);
    c.model_dir = dir; /* an empty folder: loading fails, the listener stays up */
    srvt_server t;
    srvt_start_nowait(&t, &c);
    char err[256];
    cr_assert_eq(serve_wait_ready(t.s, err, sizeof err), -1);
    srvt_resp r;
    cr_assert_eq(srvt_get(t.base, "/health", &r), 503);
    srvt_resp_free(&r);
    cr_assert_eq(srvt_post(t.base, "/v1/embeddings", "{\"input\":\"a\"}", &r), 503);
    cJSON *j = srvt_json(&r);
    cr_assert_not_null(strstr(srvt_error_message(j), "load"));
    cJSON_Delete(j);
    srvt_resp_free(&r);
    cr_assert_eq(srvt_post(t.base, "/embed", "{\"inputs\":\"a\"}", &r), 503);
    srvt_resp_free(&r);
    cr_assert_eq(srvt_get(t.base, "/info", &r), 503);
    srvt_resp_free(&r);
    srvt_stop(&t);
}

Test(server_errors, health_is_503_while_loading) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    srvt_server t;
    srvt_start_nowait(&t, &c);
    /* whatever moment we catch: health agrees with the state, and becomes 200 once loaded */
    int saw_loading = 0;
    for (int i = 0; i < 2000; i++) {
        serve_state st = serve_get_state(t.s);
        srvt_resp r;
        long code = srvt_get(t.base, "/health", &r);
        serve_state after = serve_get_state(t.s);
        srvt_resp_free(&r);
        if (st == SERVE_LOADING && after == SERVE_LOADING) {
            cr_assert_eq(code, 503);
            saw_loading = 1;
        }
        if (st == SERVE_READY) {
            cr_assert_eq(code, 200);
            break;
        }
        usleep(5000);
    }
    cr_assert_eq(serve_wait_ready(t.s, NULL, 0), 0);
    srvt_resp r;
    cr_assert_eq(srvt_get(t.base, "/health", &r), 200);
    srvt_resp_free(&r);
    cr_log_info("caught the loading state: %s", saw_loading ? "yes" : "no (model loaded too fast)");
    srvt_stop(&t);
}

Test(server_errors, draining_is_503) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    srvt_server t;
    srvt_start(&t, &c);
    expect_ok(&t);
    cr_assert_eq(serve_drain(t.s), 0);
    cr_assert_eq(serve_get_state(t.s), SERVE_DRAINING);
    srvt_resp r;
    cr_assert_eq(srvt_get(t.base, "/health", &r), 503);
    srvt_resp_free(&r);
    expect_error(&t, "/v1/embeddings", "{\"input\":\"late\"}", 503, "shutting down");
    srvt_expect_tei_error(&t, "/embed", "{\"inputs\":\"late\"}", 503, "Unhealthy", NULL);
    srvt_stop(&t);
}
