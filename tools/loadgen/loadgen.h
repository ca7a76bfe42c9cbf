/* loadgen.h — a load generator for any OpenAI-compatible /v1/embeddings endpoint: libcurl multi,
 * a fixed number of requests in flight, texts from a JSONL corpus, bounded in requests and time. */
#ifndef QE_LOADGEN_H
#define QE_LOADGEN_H
#include <stdio.h>

typedef struct loadgen_config {
    const char *url;        /* default http://127.0.0.1:8080/v1/embeddings */
    const char *corpus;     /* JSONL {"text": ...}; default ../shared/bench/corpus.jsonl */
    int concurrency;        /* requests in flight; default 8 */
    int inputs_per_request; /* default 1 */
    /* no new request after this long; those in flight finish (each within request_timeout_s).
     * 0: none, but 10 when requests is 0 too. With requests, whichever comes first. */
    double duration_s;
    long requests;      /* stop after this many (0: duration decides) */
    double max_seconds; /* hard bound on the run whatever else (what is in flight then counts as
                         * failed); default duration + request_timeout_s, or 600 without one */
    double request_timeout_s;    /* per request; default 120 */
    int dimensions;              /* 0: not sent */
    const char *encoding_format; /* NULL: not sent; "float" or "base64" */
    const char *model;           /* NULL: not sent */
    const char *api_key;         /* NULL: no Authorization header */
} loadgen_config;

#define LOADGEN_MAX_STATUS 16
typedef struct loadgen_result {
    long sent, ok, errors;
    long inputs_ok;     /* inputs of successful requests */
    long prompt_tokens; /* sum of usage.prompt_tokens of successful requests */
    long missing_usage; /* successful responses without usage.prompt_tokens */
    double elapsed_s;
    double req_per_s, inputs_per_s, tokens_per_s;
    double lat_mean_ms, lat_p50_ms, lat_p90_ms, lat_p99_ms, lat_max_ms; /* successful requests */
    int n_status;
    struct {
        int status;
        long count;
    } status[LOADGEN_MAX_STATUS]; /* errors; status 0 = transport */
    long backoffs; /* 429/503 answers after which that connection paused (Retry-After) */
    char first_error[256];
} loadgen_result;

void loadgen_config_defaults(loadgen_config *c);
/* Runs the load; 0 when it ran (errors are counted, not fatal), -1 with a message in err when it
 * could not start (corpus missing or empty, curl failed to initialise). */
int loadgen_run(const loadgen_config *c, loadgen_result *r, char *err, size_t errlen);
/* Human-readable or JSON report. */
void loadgen_print(const loadgen_config *c, const loadgen_result *r, int json, FILE *f);

#endif
