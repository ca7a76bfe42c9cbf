/* srv_harness.h — helpers for the server suites: an in-process server on an ephemeral loopback
 * port, a small libcurl client, JSON and base64 readers, comparisons against the engine. */
#ifndef QE_SRV_HARNESS_H
#define QE_SRV_HARNESS_H
#include <cjson/cJSON.h>
#include <pthread.h>
#include <curl/curl.h>
#include <stddef.h>

#include "serve/serve.h"

typedef struct srvt_server {
    serve_server *s;
    qe_engine *e;
    int port;
    char base[64]; /* http://127.0.0.1:PORT */
} srvt_server;

/* Defaults for a test server: the tiny model, port 0, quiet, small queue. */
void srvt_config(serve_config *c);
/* Starts c (cr_fatal on failure) and waits until the model is loaded. */
void srvt_start(srvt_server *t, const serve_config *c);
/* The default test server (srvt_config) with inputs held to max_input_tokens, started: the
 * truncation tests' server. */
void srvt_start_truncating(srvt_server *t, int max_input_tokens);
/* Starts without waiting (for servers meant to fail loading). */
void srvt_start_nowait(srvt_server *t, const serve_config *c);
void srvt_stop(srvt_server *t);

typedef struct srvt_resp {
    long status;
    char *body;
    size_t len;
    char *headers; /* raw response headers */
    int curl_rc;
} srvt_resp;

/* One request. path is appended to base; body may be NULL (GET). extra_header may be NULL.
 * h: a reusable easy handle or NULL for a fresh one. Returns the HTTP status (0 on transport
 * error). */
long srvt_request(CURL *h, const char *base, const char *method, const char *path, const char *body,
                  size_t body_len, const char *extra_header, srvt_resp *r);
/* POST that gives up (closes the connection) after timeout_ms. */
long srvt_post_timeout(const char *base, const char *path, const char *body, long timeout_ms,
                       srvt_resp *r);
long srvt_post(const char *base, const char *path, const char *body, srvt_resp *r);
long srvt_get(const char *base, const char *path, srvt_resp *r);
void srvt_resp_free(srvt_resp *r);
/* Value of a response header (case-insensitive name) copied into out; 0 if absent. */
int srvt_header(const srvt_resp *r, const char *name, char *out, size_t cap);

/* Parses the body; cr_assert that it is JSON. Caller cJSON_Delete()s. */
cJSON *srvt_json(const srvt_resp *r);
/* Checks the OpenAI error shape {"error":{"message":str,"type":str,"param":..,"code":..}} and
 * returns the message (owned by j). */
const char *srvt_error_message(const cJSON *j);
/* Checks TEI's error shape {"error": str, "error_type": str} (error_type equal to type unless
 * type is NULL) and returns the message (owned by j). */
const char *srvt_tei_error_message(const cJSON *j, const char *type);
/* POST body to path answers status in TEI's error shape with error_type type, its message holding
 * in_message (when not NULL). */
void srvt_expect_tei_error(srvt_server *t, const char *path, const char *body, long status,
                           const char *type, const char *in_message);
/* The n-th embedding of an OpenAI response (floats or base64) as a malloc'd array; *dim its length.
 */
float *srvt_openai_embedding(const cJSON *resp, int index, int *dim);
/* A JSON array of numbers as floats (strtof of the printed text would lose nothing: cJSON keeps a
 * double, and a double read of a 9-digit float prints rounds to the same float). */
float *srvt_float_array(const cJSON *arr, int *n);
float *srvt_base64_floats(const char *s, int *n);

/* Expected vectors straight from the engine. */
float *srvt_engine_texts(qe_engine *e, const char *const *texts, int n, int dims);
float *srvt_engine_ids(qe_engine *e, const int32_t *const *ids, const int *lens, int n, int dims);
/* max |a-b| and cosine; asserts cosine >= 0.99999. */
void srvt_assert_close(const float *got, const float *want, int n, const char *what);

/* The first embedding of r (a 200 OpenAI response) is close to want (srvt_assert_close); frees
 * r. */
void srvt_expect_first_embedding(srvt_resp *r, const float *want, const char *what);
/* POST {"input": text} answers 200 with the engine's own vector for text. */
void srvt_expect_serves(srvt_server *t, const char *text, const char *what);

/* A POST /v1/embeddings on a thread of its own (requests in flight during drains, signals). */
typedef struct srvt_bg {
    char base[64];
    const char *body;
    long timeout_ms; /* 0: the harness default */
    srvt_resp r;
    long status;
    pthread_t thread;
} srvt_bg;
void srvt_bg_start(srvt_bg *b); /* base and body set by the caller */
void srvt_bg_join(srvt_bg *b);  /* then status and r hold the answer */

/* A long text (repeated words) for truncation and load tests; malloc'd. */
char *srvt_long_text(int words, int seed);
/* The value of one /metrics line (name, no labels), or -1 when it or /metrics is missing. */
long srvt_metric(const char *base, const char *name);
double srvt_metric_value(const char *base, const char *name); /* the same, unrounded */
/* {"input":[[ids]]}: one input of n token ids (100 + i % 5000), as a malloc'd string. */
char *srvt_ids_body(int n);

#endif
