/* loadgen_run.c — the load loop: `concurrency` curl easy handles on one multi handle, each reused
 * (keep-alive) for request after request until the request count or the time is up; latencies and
 * usage.prompt_tokens are collected per successful response. */
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loadgen/loadgen_internal.h"
#include "sbuf.h"

typedef struct slot {
    CURL *h;
    char *body;
    sbuf resp; /* the response body (only usage.prompt_tokens and errors are read) */
    double t0;
    int busy;
    double resume_at; /* after a 429/503: no new request before this time */
} slot;

#define BACKOFF_DEFAULT_S 0.1 /* a 429/503 without Retry-After */
#define BACKOFF_MAX_S 5.0

/* The pause a slot takes after an overloaded (429) or unavailable (503) answer: the server's
 * Retry-After in seconds when given, else BACKOFF_DEFAULT_S; never past BACKOFF_MAX_S. Without it
 * every slot would re-send at once, and the run would count a storm of refusals, not the server. */
static double backoff_s(CURL *h) {
    curl_off_t ra = -1;
    if (curl_easy_getinfo(h, CURLINFO_RETRY_AFTER, &ra) != CURLE_OK || ra <= 0)
        return BACKOFF_DEFAULT_S;
    return (double)ra < BACKOFF_MAX_S ? (double)ra : BACKOFF_MAX_S;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void loadgen_config_defaults(loadgen_config *c) {
    memset(c, 0, sizeof *c);
    c->url = "http://127.0.0.1:8080/v1/embeddings";
    c->corpus = "../shared/bench/corpus.jsonl";
    c->concurrency = 8;
    c->inputs_per_request = 1;
    c->request_timeout_s = 120;
}

static size_t on_data(char *p, size_t size, size_t nmemb, void *ud) {
    slot *s = ud;
    sb_put(&s->resp, p, size * nmemb); /* out of memory: the rest is dropped, the run goes on */
    return size * nmemb;
}

/* usage.prompt_tokens without parsing a body of thousands of floats: the last "prompt_tokens" key.
 */
static long prompt_tokens_of(const char *body, size_t len) {
    static const char key[] = "\"prompt_tokens\"";
    const char *last = NULL, *p = body;
    while ((p = memmem(p, len - (size_t)(p - body), key, sizeof key - 1)) != NULL) {
        last = p;
        p += sizeof key - 1;
    }
    if (!last) return -1;
    last += sizeof key - 1;
    while (*last == ' ' || *last == ':' || *last == '\t' || *last == '\n')
        last++;
    char *end;
    long v = strtol(last, &end, 10);
    return end == last ? -1 : v;
}

static char *make_body(const loadgen_config *c, const lg_corpus *corpus, long *next) {
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "input");
    for (int i = 0; i < c->inputs_per_request; i++) {
        cJSON_AddItemToArray(arr, cJSON_CreateString(corpus->texts[*next % corpus->n]));
        (*next)++;
    }
    if (c->model) cJSON_AddStringToObject(o, "model", c->model);
    if (c->dimensions > 0) cJSON_AddNumberToObject(o, "dimensions", c->dimensions);
    if (c->encoding_format) cJSON_AddStringToObject(o, "encoding_format", c->encoding_format);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static void count_status(loadgen_result *r, int status) {
    for (int i = 0; i < r->n_status; i++)
        if (r->status[i].status == status) {
            r->status[i].count++;
            return;
        }
    if (r->n_status < LOADGEN_MAX_STATUS) {
        r->status[r->n_status].status = status;
        r->status[r->n_status].count = 1;
        r->n_status++;
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *v, long n, double q) {
    if (n == 0) return 0;
    long i = (long)ceil(q * (double)n) - 1;
    if (i < 0) i = 0;
    if (i >= n) i = n - 1;
    return v[i];
}

int loadgen_run(const loadgen_config *cfg, loadgen_result *r, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    loadgen_config c = *cfg;
    if (c.concurrency <= 0) c.concurrency = 1;
    if (c.inputs_per_request <= 0) c.inputs_per_request = 1;
    if (c.request_timeout_s <= 0) c.request_timeout_s = 120;
    if (c.requests <= 0 && c.duration_s <= 0) c.duration_s = 10;
    if (c.max_seconds <= 0)
        c.max_seconds = c.duration_s > 0 ? c.duration_s + c.request_timeout_s : 600;
    lg_corpus corpus;
    if (lg_corpus_load(c.corpus, &corpus, err, errlen) != 0) return -1;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, errlen, "curl_global_init failed");
        lg_corpus_free(&corpus);
        return -1;
    }
    CURLM *m = curl_multi_init();
    slot *slots = calloc((size_t)c.concurrency, sizeof *slots);
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    hdr = curl_slist_append(hdr, "Expect:");
    char auth[1024];
    if (c.api_key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", c.api_key);
        hdr = curl_slist_append(hdr, auth);
    }
    long lat_cap = 1024, lat_n = 0;
    double *lat = malloc((size_t)lat_cap * sizeof *lat);
    if (!m || !slots || !hdr || !lat) {
        snprintf(err, errlen, "out of memory");
        free(slots);
        free(lat);
        curl_slist_free_all(hdr);
        if (m) curl_multi_cleanup(m);
        lg_corpus_free(&corpus);
        curl_global_cleanup();
        return -1;
    }
    long next_text = 0;
    const double t_start = now_s();
    /* past t_stop no request starts and those in flight finish; past t_hard they are dropped */
    const double t_stop =
        t_start + (c.duration_s > 0 && c.duration_s < c.max_seconds ? c.duration_s : c.max_seconds);
    const double t_hard = t_start + c.max_seconds;
    int running = 0;
    for (;;) {
        double t = now_s();
        /* start requests on idle slots while budget remains */
        for (int i = 0; i < c.concurrency; i++) {
            slot *s = &slots[i];
            if (s->busy || t < s->resume_at) continue;
            if ((c.requests > 0 && r->sent >= c.requests) || t >= t_stop) break;
            if (!s->h) {
                s->h = curl_easy_init();
                if (!s->h) continue;
            }
            free(s->body);
            s->body = make_body(&c, &corpus, &next_text);
            if (!s->body) continue;
            sb_clear(&s->resp);
            curl_easy_setopt(s->h, CURLOPT_URL, c.url);
            curl_easy_setopt(s->h, CURLOPT_HTTPHEADER, hdr);
            curl_easy_setopt(s->h, CURLOPT_POSTFIELDS, s->body);
            curl_easy_setopt(s->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(s->body));
            curl_easy_setopt(s->h, CURLOPT_WRITEFUNCTION, on_data);
            curl_easy_setopt(s->h, CURLOPT_WRITEDATA, s);
            curl_easy_setopt(s->h, CURLOPT_NOSIGNAL, 1L);
            curl_easy_setopt(s->h, CURLOPT_TIMEOUT_MS, (long)(c.request_timeout_s * 1000));
            curl_easy_setopt(s->h, CURLOPT_PRIVATE, s);
            s->t0 = now_s();
            s->busy = 1;
            r->sent++;
            curl_multi_add_handle(m, s->h);
        }
        int any_busy = 0, any_waiting = 0;
        const int more = !(c.requests > 0 && r->sent >= c.requests) && t < t_stop;
        for (int i = 0; i < c.concurrency; i++) {
            any_busy |= slots[i].busy;
            any_waiting |= more && slots[i].resume_at > t;
        }
        if (!any_busy && !any_waiting) break;
        if (t >= t_hard) { /* the hard bound: abandon what is in flight */
            for (int i = 0; i < c.concurrency; i++)
                if (slots[i].busy) {
                    curl_multi_remove_handle(m, slots[i].h);
                    slots[i].busy = 0;
                    r->errors++;
                    count_status(r, 0);
                }
            if (!r->first_error[0])
                snprintf(r->first_error, sizeof r->first_error,
                         "run stopped at --max-seconds with requests in flight");
            break;
        }
        curl_multi_perform(m, &running);
        int left, finished = 0;
        CURLMsg *msg;
        while ((msg = curl_multi_info_read(m, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE) continue;
            finished++;
            slot *s = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
            CURLcode rc = msg->data.result;
            long status = 0;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
            double ms = (now_s() - s->t0) * 1e3;
            curl_multi_remove_handle(m, s->h);
            s->busy = 0;
            if (rc == CURLE_OK && status == 200) {
                r->ok++;
                r->inputs_ok += c.inputs_per_request;
                long pt = s->resp.p ? prompt_tokens_of(s->resp.p, s->resp.len) : -1;
                if (pt >= 0)
                    r->prompt_tokens += pt;
                else
                    r->missing_usage++;
                if (lat_n == lat_cap) {
                    double *nl = realloc(lat, (size_t)lat_cap * 2 * sizeof *lat);
                    if (nl) {
                        lat = nl;
                        lat_cap *= 2;
                    }
                }
                if (lat_n < lat_cap) lat[lat_n++] = ms;
            } else {
                r->errors++;
                count_status(r, rc == CURLE_OK ? (int)status : 0);
                if (rc == CURLE_OK && (status == 429 || status == 503)) {
                    s->resume_at = now_s() + backoff_s(msg->easy_handle);
                    r->backoffs++;
                }
                if (!r->first_error[0]) {
                    if (rc != CURLE_OK)
                        snprintf(r->first_error, sizeof r->first_error, "transport: %s",
                                 curl_easy_strerror(rc));
                    else
                        snprintf(r->first_error, sizeof r->first_error, "HTTP %ld: %.200s", status,
                                 s->resp.p ? s->resp.p : "");
                }
            }
        }
        if (!finished) curl_multi_poll(m, NULL, 0, 20, NULL); /* else refill the idle slots now */
    }
    r->elapsed_s = now_s() - t_start;
    if (r->elapsed_s > 0) {
        r->req_per_s = (double)r->ok / r->elapsed_s;
        r->inputs_per_s = (double)r->inputs_ok / r->elapsed_s;
        r->tokens_per_s = (double)r->prompt_tokens / r->elapsed_s;
    }
    if (lat_n > 0) {
        qsort(lat, (size_t)lat_n, sizeof *lat, cmp_double);
        double sum = 0;
        for (long i = 0; i < lat_n; i++)
            sum += lat[i];
        r->lat_mean_ms = sum / (double)lat_n;
        r->lat_p50_ms = pct(lat, lat_n, 0.50);
        r->lat_p90_ms = pct(lat, lat_n, 0.90);
        r->lat_p99_ms = pct(lat, lat_n, 0.99);
        r->lat_max_ms = lat[lat_n - 1];
    }
    for (int i = 0; i < c.concurrency; i++) {
        if (slots[i].h) curl_easy_cleanup(slots[i].h);
        free(slots[i].body);
        sb_free(&slots[i].resp);
    }
    free(slots);
    free(lat);
    curl_slist_free_all(hdr);
    curl_multi_cleanup(m);
    curl_global_cleanup();
    lg_corpus_free(&corpus);
    return 0;
}

void loadgen_print(const loadgen_config *c, const loadgen_result *r, int json, FILE *f) {
    if (json) {
        fprintf(
            f,
            "{\"url\":\"%s\",\"concurrency\":%d,\"inputs_per_request\":%d,\"sent\":%ld,\"ok\":%ld,"
            "\"errors\":%ld,\"elapsed_s\":%.3f,\"requests_per_s\":%.3f,\"inputs_per_s\":%.3f,"
            "\"input_tokens_per_s\":%.1f,\"prompt_tokens\":%ld,\"latency_ms\":{\"mean\":%.3f,"
            "\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f},\"backoffs\":%ld,"
            "\"errors_by_status\":{",
            c->url, c->concurrency, c->inputs_per_request, r->sent, r->ok, r->errors, r->elapsed_s,
            r->req_per_s, r->inputs_per_s, r->tokens_per_s, r->prompt_tokens, r->lat_mean_ms,
            r->lat_p50_ms, r->lat_p90_ms, r->lat_p99_ms, r->lat_max_ms, r->backoffs);
        for (int i = 0; i < r->n_status; i++)
            fprintf(f, "%s\"%d\":%ld", i ? "," : "", r->status[i].status, r->status[i].count);
        fprintf(f, "}}\n");
        return;
    }
    fprintf(f, "url                %s\n", c->url);
    fprintf(f, "concurrency        %d x %d inputs/request\n", c->concurrency,
            c->inputs_per_request);
    fprintf(f, "requests           %ld sent, %ld ok, %ld errors in %.2f s\n", r->sent, r->ok,
            r->errors, r->elapsed_s);
    fprintf(f, "throughput         %.1f requests/s, %.1f inputs/s, %.0f input tokens/s\n",
            r->req_per_s, r->inputs_per_s, r->tokens_per_s);
    fprintf(f, "latency (ms)       mean %.2f  p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n",
            r->lat_mean_ms, r->lat_p50_ms, r->lat_p90_ms, r->lat_p99_ms, r->lat_max_ms);
    if (r->missing_usage)
        fprintf(f, "note               %ld responses had no usage.prompt_tokens\n",
                r->missing_usage);
    for (int i = 0; i < r->n_status; i++)
        fprintf(f, "errors             %ld x %s %d\n", r->status[i].count,
                r->status[i].status ? "HTTP" : "transport", r->status[i].status);
    if (r->backoffs)
        fprintf(f, "backed off         %ld times after 429/503 (Retry-After honoured)\n",
                r->backoffs);
    if (r->first_error[0]) fprintf(f, "first error        %s\n", r->first_error);
}
