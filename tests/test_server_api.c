/* test_server_api.c — every route's happy path against the in-process server, values compared with
 * qe_embed_texts / qe_embed_ids on the very engine the server uses; the exact bodies the `openai`
 * Python client and TEI clients send; the float formatter and base64 encoder. */
#include <criterion/criterion.h>
#include <limits.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quantize.h"
#include "serve/serve_internal.h"
#include "srv_harness.h"
#include "test_util.h"
#include "tokenizer.h"

static const char *TEXTS[] = {"hello", "The quick brown fox jumps over the lazy dog.",
                              "Qwen3 embeddings pool the last token.",
                              "数据 and Zürich, naïve café"};

static void openai_compare(srvt_server *t, const char *body, const char *const *texts, int n,
                           int dims) {
    srvt_resp r;
    cr_assert_eq(srvt_post(t->base, "/v1/embeddings", body, &r), 200, "status %ld: %s", r.status,
                 r.body);
    cJSON *j = srvt_json(&r);
    cr_assert_str_eq(cJSON_GetObjectItem(j, "object")->valuestring, "list");
    cr_assert_str_eq(cJSON_GetObjectItem(j, "model")->valuestring, "tiny-qwen3-embed");
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "data")), n);
    float *want = srvt_engine_texts(t->e, texts, n, dims);
    int d = dims ? dims : qe_dim(t->e);
    long tokens = 0;
    for (int i = 0; i < n; i++) {
        int got_d = 0;
        float *got = srvt_openai_embedding(j, i, &got_d);
        cr_assert_eq(got_d, d, "width %d, want %d", got_d, d);
        srvt_assert_close(got, want + (size_t)i * d, d, texts[i]);
        free(got);
        int32_t *ids = NULL;
        int nid = 0;
        char err[128];
        cr_assert_eq(tok_encode(qe_tokenizer(t->e), texts[i], strlen(texts[i]), NULL, &ids, &nid,
                                err, sizeof err),
                     TOK_OK);
        tokens += nid;
        free(ids);
    }
    const cJSON *u = cJSON_GetObjectItem(j, "usage");
    cr_assert_eq((long)cJSON_GetObjectItem(u, "prompt_tokens")->valuedouble, tokens,
                 "prompt_tokens");
    cr_assert_eq((long)cJSON_GetObjectItem(u, "total_tokens")->valuedouble, tokens, "total_tokens");
    free(want);
    cJSON_Delete(j);
    srvt_resp_free(&r);
}

Test(server_api, openai_float_strings) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    srvt_server t;
    srvt_start(&t, &c);
    openai_compare(&t, "{\"input\":\"hello\"}", TEXTS, 1, 0);
    openai_compare(&t,
                   "{\"input\":[\"hello\",\"The quick brown fox jumps over the lazy dog.\","
                   "\"Qwen3 embeddings pool the last token.\",\"数据 and Zürich, naïve café\"],"
                   "\"model\":\"tiny-qwen3-embed\",\"encoding_format\":\"float\",\"user\":\"u1\"}",
                   TEXTS, 4, 0);
    /* full width is the engine's own vector: bitwise equal */
    srvt_resp r;
    cr_assert_eq(srvt_post(t.base, "/v1/embeddings", "{\"input\":[\"hello\"]}", &r), 200);
    cJSON *j = srvt_json(&r);
    int d;
    float *got = srvt_openai_embedding(j, 0, &d);
    float *want = srvt_engine_texts(t.e, TEXTS, 1, 0);
    for (int i = 0; i < d; i++)
        cr_assert_eq(got[i], want[i], "element %d: %.9g vs %.9g", i, got[i], want[i]);
    free(got);
    free(want);
    cJSON_Delete(j);
    srvt_resp_free(&r);
    srvt_stop(&t);
}

Test(server_api, openai_python_client_base64_and_dimensions) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    c.served_model_name = "x";
    srvt_server t;
    srvt_start(&t, &c);
    /* what `openai.embeddings.create(input=["hello"], model="x")` sends */
    srvt_resp r;
    cr_assert_eq(
        srvt_post(t.base, "/v1/embeddings",
                  "{\"input\": [\"hello\"], \"model\": \"x\", \"encoding_format\": \"base64\"}",
                  &r),
        200, "%s", r.body);
    cJSON *j = srvt_json(&r);
    cr_assert(cJSON_IsString(cJSON_GetObjectItem(
                  cJSON_GetArrayItem(cJSON_GetObjectItem(j, "data"), 0), "embedding")),
              "base64 string");
    int d;
    float *got = srvt_openai_embedding(j, 0, &d);
    float *want = srvt_engine_texts(t.e, TEXTS, 1, 0);
    cr_assert_eq(d, qe_dim(t.e));
    cr_assert_eq(memcmp(got, want, (size_t)d * 4), 0, "base64 carries the exact float32 bits");
    free(got);
    free(want);
    cJSON_Delete(j);
    srvt_resp_free(&r);
    /* Matryoshka: dimensions 32 re-normalised, as the engine does it */
    cr_assert_eq(
        srvt_post(t.base, "/v1/embeddings",
                  "{\"input\":[\"hello\",\"The quick brown fox jumps over the lazy dog.\"],"
                  "\"model\":\"x\",\"encoding_format\":\"base64\",\"dimensions\":32}",
                  &r),
        200);
    j = srvt_json(&r);
    want = srvt_engine_texts(t.e, TEXTS, 2, 32);
    for (int i = 0; i < 2; i++) {
        got = srvt_openai_embedding(j, i, &d);
        cr_assert_eq(d, 32);
        double nrm = 0;
        for (int k = 0; k < d; k++)
            nrm += (double)got[k] * got[k];
        cr_assert(fabs(nrm - 1) < 1e-5, "unit norm after the cut (%g)", nrm);
        srvt_assert_close(got, want + i * 32, 32, "dimensions 32");
        free(got);
    }
    free(want);
    cJSON_Delete(j);
    srvt_resp_free(&r);
    srvt_stop(&t);
}

Test(server_api, openai_token_ids) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    srvt_server t;
    srvt_start(&t, &c);
    const int32_t a[] = {9707, 11, 1879, 0, 151643}, b[] = {785, 3974, 13876, 151643}, cc[] = {42};
    const int32_t *ids[] = {a, b, cc};
    const int lens[] = {5, 4, 1};
    float *want = srvt_engine_ids(t.e, ids, lens, 3, 0);
    int W = qe_dim(t.e);
    srvt_resp r;
    /* one sequence as a flat array */
    cr_assert_eq(srvt_post(t.base, "/v1/embeddings", "{\"input\":[9707,11,1879,0,151643]}", &r),
                 200, "%s", r.body);
    cJSON *j = srvt_json(&r);
    cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "data")), 1);
    int d;
    float *got = srvt_openai_embedding(j, 0, &d);
    cr_assert_eq(memcmp(got, want, (size_t)W * 4), 0, "flat ids: bitwise equal to qe_embed_ids");
    cr_assert_eq(
        (long)cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "prompt_tokens")->valuedouble,
        5);
    free(got);
    cJSON_Delete(j);
    srvt_resp_free(&r);
    /* several sequences, ids used exactly as given (no end token appended) */
    cr_assert_eq(srvt_post(t.base, "/v1/embeddings",
                           "{\"input\":[[9707,11,1879,0,151643],[785,3974,13876,151643],[42]],"
                           "\"encoding_format\":\"base64\"}",
                           &r),
                 200);
    j = srvt_json(&r);
    for (int i = 0; i < 3; i++) {
        got = srvt_openai_embedding(j, i, &d);
        cr_assert_eq(d, W);
        srvt_assert_close(got, want + (size_t)i * W, W, "id sequence");
        free(got);
    }
    cr_assert_eq(
        (long)cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "prompt_tokens")->valuedouble,
        10);
    cJSON_Delete(j);
    srvt_resp_free(&r);
    free(want);
    srvt_stop(&t);
}

Test(server_api, tei_embed_unchanged_request) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    srvt_server t;
    srvt_start(&t, &c);
    srvt_resp r;
    cr_assert_eq(
        srvt_post(
            t.base, "/embed",
            "{\"inputs\": \"The quick brown fox jumps over the lazy dog.\", \"normalize\": true}",
            &r),
        200, "%s", r.body);
    cJSON *j = srvt_json(&r);
    cr_assert(cJSON_IsArray(j) && cJSON_GetArraySize(j) == 1, "array of arrays");
    int d;
    float *got = srvt_float_array(cJSON_GetArrayItem(j, 0), &d);
    float *want = srvt_engine_texts(t.e, TEXTS + 1, 1, 0);
    cr_assert_eq(d, qe_dim(t.e));
    srvt_assert_close(got, want, d, "TEI single");
    free(got);
    free(want);
    cJSON_Delete(j);
    srvt_resp_free(&r);
    cr_assert_eq(
        srvt_post(t.base, "/embed",
                  "{\"inputs\":[\"hello\",\"The quick brown fox jumps over the lazy dog.\"],"
                  "\"truncate\":true,\"truncation_direction\":\"Right\",\"dimensions\":48}",
                  &r),
        200, "%s", r.body);
    j = srvt_json(&r);
    cr_assert_eq(cJSON_GetArraySize(j), 2);
    want = srvt_engine_texts(t.e, TEXTS, 2, 48);
    for (int i = 0; i < 2; i++) {
        got = srvt_float_array(cJSON_GetArrayItem(j, i), &d);
        cr_assert_eq(d, 48);
        srvt_assert_close(got, want + i * 48, 48, "TEI batch dims 48");
        free(got);
    }
    free(want);
    cJSON_Delete(j);
    srvt_resp_free(&r);
    srvt_stop(&t);
}

Test(server_api, instruction_and_prompt_name) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    srvt_server t;
    srvt_start(&t, &c);
    const tok_tokenizer *tk = qe_tokenizer(t.e);
    /* instruction: Instruct: {task}\nQuery:{text} */
    char *formatted = tok_format_instruction("Find the fruit", "banana bread");
    const char *ft[] = {formatted};
    float *want = srvt_engine_texts(t.e, ft, 1, 0);
    srvt_resp r;
    cr_assert_eq(srvt_post(t.base, "/v1/embeddings",
                           "{\"input\":\"banana bread\",\"instruction\":\"Find the fruit\"}", &r),
                 200);
    srvt_expect_first_embedding(&r, want, "instruction");
    free(want);
    free(formatted);
    /* prompt_name query: the prefix of config_sentence_transformers.json */
    const char *p = tok_prompt(tk, "query");
    cr_assert_not_null(p);
    char buf[512];
    snprintf(buf, sizeof buf, "%sbanana bread", p);
    const char *pt[] = {buf};
    want = srvt_engine_texts(t.e, pt, 1, 0);
    cr_assert_eq(
        srvt_post(t.base, "/embed", "{\"inputs\":\"banana bread\",\"prompt_name\":\"query\"}", &r),
        200);
    cJSON *j = srvt_json(&r);
    int d;
    float *got = srvt_float_array(cJSON_GetArrayItem(j, 0), &d);
    srvt_assert_close(got, want, d, "prompt_name query");
    free(got);
    free(want);
    cJSON_Delete(j);
    srvt_resp_free(&r);
    srvt_stop(&t);
}

Test(server_api, truncation_right_and_left) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    srvt_server t;
    srvt_start_truncating(&t, 16);
    const tok_tokenizer *tk = qe_tokenizer(t.e);
    char *text = srvt_long_text(60, 3);
    char body[2048];
    char err[128];
    for (int left = 0; left <= 1; left++) {
        tok_encode_opts o = {.add_special = 1, .max_length = 16, .truncate_left = left};
        int32_t *ids = NULL;
        int n = 0;
        cr_assert_eq(tok_encode(tk, text, strlen(text), &o, &ids, &n, err, sizeof err), TOK_OK);
        cr_assert_eq(n, 16);
        const int32_t *ip[] = {ids};
        float *want = srvt_engine_ids(t.e, ip, &n, 1, 0);
        snprintf(body, sizeof body, "{\"input\":\"%s\",\"truncation_direction\":\"%s\"}", text,
                 left ? "left" : "right");
        srvt_resp r;
        cr_assert_eq(srvt_post(t.base, "/v1/embeddings", body, &r), 200, "%s", r.body);
        cJSON *j = srvt_json(&r);
        int d;
        float *got = srvt_openai_embedding(j, 0, &d);
        srvt_assert_close(got, want, d, left ? "left truncation" : "right truncation");
        cr_assert_eq((long)cJSON_GetObjectItem(cJSON_GetObjectItem(j, "usage"), "prompt_tokens")
                         ->valuedouble,
                     16);
        free(got);
        free(want);
        free(ids);
        cJSON_Delete(j);
        srvt_resp_free(&r);
    }
    /* ids given by the client are truncated the same way */
    srvt_resp r;
    cr_assert_eq(srvt_post(t.base, "/v1/embeddings",
                           "{\"input\":[[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20]],"
                           "\"truncation_direction\":\"left\"}",
                           &r),
                 200);
    int32_t tail[16];
    for (int i = 0; i < 16; i++)
        tail[i] = 5 + i;
    const int32_t *tp[] = {tail};
    int tl = 16;
    float *want = srvt_engine_ids(t.e, tp, &tl, 1, 0);
    srvt_expect_first_embedding(&r, want, "left-truncated ids");
    free(want);
    free(text);
    srvt_stop(&t);
}

Test(server_api, tokenize_decode_models_info_health_metrics) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    srvt_server t;
    srvt_start(&t, &c);
    const tok_tokenizer *tk = qe_tokenizer(t.e);
    char err[128];
    srvt_resp r;
    /* /tokenize */
    cr_assert_eq(srvt_post(t.base, "/tokenize", "{\"inputs\":[\"hello world\",\"数据\"]}", &r), 200,
                 "%s", r.body);
    cJSON *j = srvt_json(&r);
    cr_assert_eq(cJSON_GetArraySize(j), 2);
    const char *src[] = {"hello world", "数据"};
    for (int i = 0; i < 2; i++) {
        int32_t *ids = NULL;
        int n = 0;
        cr_assert_eq(tok_encode(tk, src[i], strlen(src[i]), NULL, &ids, &n, err, sizeof err),
                     TOK_OK);
        const cJSON *a = cJSON_GetArrayItem(j, i);
        cr_assert_eq(cJSON_GetArraySize(a), n);
        for (int k = 0; k < n; k++)
            cr_assert_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(a, k), "id")->valueint, ids[k]);
        free(ids);
    }
    cJSON_Delete(j);
    srvt_resp_free(&r);
    cr_assert_eq(srvt_post(t.base, "/tokenize",
                           "{\"inputs\":\"hello world\",\"add_special_tokens\":false}", &r),
                 200);
    j = srvt_json(&r);
    const cJSON *a = cJSON_GetArrayItem(j, 0);
    cr_assert_neq(
        cJSON_GetObjectItem(cJSON_GetArrayItem(a, cJSON_GetArraySize(a) - 1), "id")->valueint,
        tok_end_id(tk), "no end token without special tokens");
    cJSON_Delete(j);
    srvt_resp_free(&r);
    /* /decode */
    int32_t *ids = NULL;
    int n = 0;
    cr_assert_eq(
        tok_encode(tk, "Zürich café", strlen("Zürich café"), NULL, &ids, &n, err, sizeof err),
        TOK_OK);
    char body[1024];
    int o = snprintf(body, sizeof body, "{\"ids\":[");
    for (int k = 0; k < n; k++)
        o += snprintf(body + o, sizeof body - (size_t)o, "%s%d", k ? "," : "", ids[k]);
    snprintf(body + o, sizeof body - (size_t)o, "]}");
    char *want_text = NULL;
    size_t wl = 0;
    cr_assert_eq(tok_decode(tk, ids, n, 1, &want_text, &wl, err, sizeof err), TOK_OK);
    cr_assert_eq(srvt_post(t.base, "/decode", body, &r), 200, "%s", r.body);
    j = srvt_json(&r);
    cr_assert_str_eq(cJSON_GetArrayItem(j, 0)->valuestring, want_text);
    cr_assert_str_eq(cJSON_GetArrayItem(j, 0)->valuestring, "Zürich café");
    free(want_text);
    free(ids);
    cJSON_Delete(j);
    srvt_resp_free(&r);
    /* /v1/models */
    cr_assert_eq(srvt_get(t.base, "/v1/models", &r), 200);
    j = srvt_json(&r);
    cr_assert_str_eq(
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "data"), 0), "id")
            ->valuestring,
        "tiny-qwen3-embed");
    cJSON_Delete(j);
    srvt_resp_free(&r);
    /* /info */
    cr_assert_eq(srvt_get(t.base, "/info", &r), 200);
    j = srvt_json(&r);
    cr_assert_eq(cJSON_GetObjectItem(j, "dim")->valueint, qe_dim(t.e));
    cr_assert_eq(cJSON_GetObjectItem(j, "max_input_length")->valueint, qe_max_positions(t.e));
    cr_assert_str_eq(cJSON_GetObjectItem(j, "backend")->valuestring, qe_backend_name(t.e));
    cr_assert(cJSON_IsString(cJSON_GetObjectItem(j, "dtype")));
    cr_assert(cJSON_IsString(cJSON_GetObjectItem(j, "version")));
    cr_assert_str_eq(cJSON_GetObjectItem(j, "model_id")->valuestring, "tiny-qwen3-embed");
    cJSON_Delete(j);
    srvt_resp_free(&r);
    /* /health */
    cr_assert_eq(srvt_get(t.base, "/health", &r), 200);
    srvt_resp_free(&r);
    /* an embedding, then /metrics counts it */
    cr_assert_eq(srvt_post(t.base, "/v1/embeddings", "{\"input\":[\"a\",\"b\",\"c\"]}", &r), 200);
    srvt_resp_free(&r);
    cr_assert_eq(srvt_post(t.base, "/v1/embeddings", "{\"input\":[]}", &r), 400);
    srvt_resp_free(&r);
    cr_assert_eq(srvt_get(t.base, "/metrics", &r), 200);
    char ct[128];
    cr_assert(srvt_header(&r, "Content-Type", ct, sizeof ct) && !strncmp(ct, "text/plain", 10));
    cr_assert_not_null(
        strstr(r.body, "qembed_requests_total{route=\"/v1/embeddings\",status=\"200\"} 1\n"), "%s",
        r.body);
    cr_assert_not_null(
        strstr(r.body, "qembed_requests_total{route=\"/v1/embeddings\",status=\"400\"} 1\n"));
    cr_assert_not_null(strstr(r.body, "qembed_request_failures_total{reason=\"empty_input\"} 1\n"));
    cr_assert_not_null(strstr(r.body, "qembed_sequences_processed_total 3\n"));
    cr_assert_not_null(strstr(r.body, "qembed_inputs_total 3\n"));
    cr_assert_not_null(strstr(r.body, "qembed_batch_size_count"));
    cr_assert_not_null(strstr(r.body, "qembed_request_duration_seconds_count 1\n"));
    cr_assert_not_null(strstr(r.body, "qembed_inference_duration_seconds_bucket{le=\"+Inf\"}"));
    cr_assert_not_null(strstr(r.body, "qembed_queue_tokens 0\n"));
    cr_assert_not_null(strstr(r.body, "qembed_gpu_memory_bytes 0\n"),
                       "CPU backend holds no GPU memory");
    srvt_resp_free(&r);
    srvt_stop(&t);
}

Test(server_units, float_formatter_round_trips) {
    unsigned x = 12345;
    char buf[32];
    for (int i = 0; i < 200000; i++) {
        x = x * 1664525u + 1013904223u;
        float f;
        if (i % 2) {
            uint32_t u = x;
            memcpy(&f, &u, 4);
            if (!isfinite(f)) continue;
        } else {
            f = ((float)(x >> 8) / 16777216.0f - 0.5f) * (i % 7 ? 0.4f : 3e-4f);
        }
        int n = srv_format_float(f, buf);
        cr_assert(n > 0 && n <= 16 && (int)strlen(buf) == n, "length %d for %.9g", n, f);
        float back = strtof(buf, NULL);
        cr_assert(back == f, "%.9g printed as %s reads back %.9g", f, buf, back);
    }
    cr_assert_eq(srv_format_float(0.0f, buf), 1);
    cr_assert_eq(strtof(buf, NULL), 0.0f);
    /* the extremes: every subnormal below 1e-41 (the range a too-small table once missed), the
     * smallest normal and the largest float, both signs */
    for (uint32_t u = 1; u < 0x00002000u; u++) {
        for (int sign = 0; sign < 2; sign++) {
            uint32_t bits = u | (sign ? 0x80000000u : 0);
            float f;
            memcpy(&f, &bits, 4);
            int n = srv_format_float(f, buf);
            cr_assert(n > 0 && n <= 16, "length %d for 0x%08x", n, bits);
            cr_assert(strtof(buf, NULL) == f, "0x%08x printed as %s", bits, buf);
        }
    }
    const float extremes[] = {FLT_MIN, -FLT_MIN, FLT_MAX, -FLT_MAX, 1e-38f, 3.4e38f};
    for (size_t i = 0; i < sizeof extremes / sizeof extremes[0]; i++) {
        srv_format_float(extremes[i], buf);
        cr_assert(strtof(buf, NULL) == extremes[i], "%.9g printed as %s", extremes[i], buf);
    }
}

Test(server_units, base64_matches_rfc4648_vectors) {
    /* RFC 4648 section 10 test vectors */
    const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *out[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        sbuf b = {0};
        srv_base64(&b, (const unsigned char *)in[i], strlen(in[i]));
        char *s = sb_take(&b, NULL);
        cr_assert_str_eq(s, out[i]);
        free(s);
    }
}

/* ---- taking the queue into the scheduler, on a hand-built queue ---- */

typedef struct fake_queue {
    srv_model *s; /* one model's queue */
    srv_job *jobs[16];
    int n_jobs;
} fake_queue;

/* Queues one job per length (one sequence each), in order. */
static void fq_init(fake_queue *f, const int *lens, int n) {
    memset(f, 0, sizeof *f);
    f->s = calloc(1, sizeof *f->s);
    for (int i = 0; i < n; i++) {
        srv_job *j = srv_job_new(1);
        j->lens[0] = lens[i];
        f->jobs[f->n_jobs++] = j;
        srv_seq *q = &j->seqs[0];
        if (f->s->q_tail)
            f->s->q_tail->next = q;
        else
            f->s->q_head = q;
        f->s->q_tail = q;
        f->s->q_seqs++;
        f->s->q_tokens += lens[i];
        f->s->inflight_tokens += lens[i];
    }
}

static void fq_free(fake_queue *f) {
    for (int i = 0; i < f->n_jobs; i++)
        srv_job_unref(f->jobs[i]);
    free(f->s);
}

/* The job numbers of a list, like "0,2". */
static void fq_list(const fake_queue *f, const srv_seq *q, char *out, size_t cap) {
    size_t o = 0;
    out[0] = 0;
    for (int i = 0; q; q = q->next, i++)
        for (int k = 0; k < f->n_jobs; k++)
            if (q->job == f->jobs[k])
                o += (size_t)snprintf(out + o, cap - o, "%s%d", i ? "," : "", k);
}

/* Everything queued moves at once, in arrival order; the sequences of clients that left are set
 * apart and leave the 429 budget. */
Test(server_units, taking_the_queue_keeps_order_and_drops_the_departed) {
    const int lens[] = {10, 7, 100, 9, 5};
    fake_queue f;
    fq_init(&f, lens, 5);
    atomic_store(&f.jobs[1]->cancelled, 1);
    atomic_store(&f.jobs[3]->cancelled, 1);
    srv_seq *dropped = NULL;
    srv_seq *live = srv_take_queue(f.s, LONG_MAX, &dropped);
    char got[64];
    fq_list(&f, live, got, sizeof got);
    cr_assert_str_eq(got, "0,2,4");
    fq_list(&f, dropped, got, sizeof got);
    cr_assert_str_eq(got, "1,3");
    cr_assert_null(f.s->q_head);
    cr_assert_null(f.s->q_tail);
    cr_assert_eq(f.s->q_seqs, 0);
    cr_assert_eq(f.s->q_tokens, 0);
    cr_assert_eq(f.s->inflight_tokens, 115, "dropped tokens leave the budget (%ld)",
                 f.s->inflight_tokens);
    fq_free(&f);
}

/* A replica of several takes about a step's worth from the head and leaves the rest queued (the
 * first is taken whatever its length); the departed met on the way are set apart. */
Test(server_units, a_replica_takes_a_steps_worth) {
    const int lens[] = {10, 7, 100, 9, 5};
    fake_queue f;
    fq_init(&f, lens, 5);
    atomic_store(&f.jobs[1]->cancelled, 1);
    srv_seq *dropped = NULL;
    char got[64];
    srv_seq *live = srv_take_queue(f.s, 15, &dropped); /* 10, then 100 passes the 15 */
    fq_list(&f, live, got, sizeof got);
    cr_assert_str_eq(got, "0,2");
    fq_list(&f, dropped, got, sizeof got);
    cr_assert_str_eq(got, "1");
    cr_assert_eq(f.s->q_seqs, 2);
    cr_assert_eq(f.s->q_tokens, 14);
    live = srv_take_queue(f.s, 1, &dropped); /* the first always goes */
    fq_list(&f, live, got, sizeof got);
    cr_assert_str_eq(got, "3");
    live = srv_take_queue(f.s, LONG_MAX, &dropped);
    fq_list(&f, live, got, sizeof got);
    cr_assert_str_eq(got, "4");
    cr_assert_null(f.s->q_head);
    cr_assert_null(f.s->q_tail);
    cr_assert_eq(f.s->q_seqs, 0);
    cr_assert_eq(f.s->q_tokens, 0);
    fq_free(&f);
}

/* normalize:false returns the pooled hidden state (after the final norm), cut to `dimensions`,
 * exactly as qe_embed_ids_ex gives it; the default stays unit length. */
Test(server_api, normalize_false_returns_raw_pooled_vectors) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    srvt_server t;
    srvt_start(&t, &c);
    const int32_t a[] = {9707, 11, 1879, 151643};
    const int32_t *ids[] = {a};
    const int lens[] = {4};
    float want[32];
    cr_assert_eq(qe_embed_ids_ex(t.e, ids, lens, 1, 32, 0, want), QE_OK);
    double norm = 0;
    for (int k = 0; k < 32; k++)
        norm += (double)want[k] * want[k];
    cr_assert(fabs(norm - 1) > 1e-3, "raw vector happens to be unit length (%g)", norm);
    srvt_resp r;
    cr_assert_eq(
        srvt_post(t.base, "/v1/embeddings",
                  "{\"input\":[9707,11,1879,151643],\"normalize\":false,\"dimensions\":32}", &r),
        200, "%s", r.body);
    cJSON *j = srvt_json(&r);
    int d;
    float *got = srvt_openai_embedding(j, 0, &d);
    cr_assert_eq(d, 32);
    cr_assert_eq(memcmp(got, want, sizeof want), 0, "normalize:false differs from the engine");
    free(got);
    cJSON_Delete(j);
    srvt_resp_free(&r);
    srvt_stop(&t);
}

/* A GGUF file behind the server: it embeds like the engine does on the file, and /info says the
 * file's storage type (not "unknown"). */
Test(server_api, serves_a_gguf_file, .timeout = 120) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    char dir[1100], path[1200], err[512];
    tu_scratch_dir(dir, sizeof dir, "srv-gguf");
    snprintf(path, sizeof path, "%s/tiny-q8_0.gguf", dir);
    const qz_opts q = {.model_dir = TINY_MODEL, .out_path = path, .ftype = QZ_Q8_0, .quiet = 1};
    cr_assert_eq(qz_run(&q, err, sizeof err), 0, "%s", err);
    serve_config c;
    srvt_config(&c);
    c.model_dir = path;
    srvt_server t;
    srvt_start(&t, &c);
    srvt_expect_serves(&t, "a quantized model", "gguf");
    srvt_resp r;
    cr_assert_eq(srvt_get(t.base, "/info", &r), 200);
    cJSON *j = srvt_json(&r);
    cr_expect_str_eq(cJSON_GetObjectItem(j, "model_dtype")->valuestring, "Q8_0");
    cJSON_Delete(j);
    srvt_resp_free(&r);
    srvt_stop(&t);
}
