/* srv_harness.c — see srv_harness.h. */
#include "srv_harness.h"

#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sbuf.h"
#include "test_util.h"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

void srvt_config(serve_config *c) {
    serve_config_defaults(c);
    c->model_dir = TINY_MODEL;
    c->port = 0;
    c->quiet = 1;
    c->http_threads = 4;
    c->engine_threads = 1;
    c->drain_timeout_s = 60;
}

void srvt_start_nowait(srvt_server *t, const serve_config *c) {
    pthread_once(&curl_once, curl_init_once);
    char err[512];
    memset(t, 0, sizeof *t);
    if (serve_start(c, &t->s, err, sizeof err) != 0) cr_assert_fail("serve_start: %s", err);
    t->port = serve_port(t->s);
    cr_assert(t->port > 0, "ephemeral port");
    snprintf(t->base, sizeof t->base, "http://127.0.0.1:%d", t->port);
}

void srvt_start(srvt_server *t, const serve_config *c) {
    srvt_start_nowait(t, c);
    char err[512];
    if (serve_wait_ready(t->s, err, sizeof err) != 0)
        cr_assert_fail("model failed to load: %s", err);
    t->e = serve_engine(t->s);
    cr_assert_not_null(t->e);
}

void srvt_start_truncating(srvt_server *t, int max_input_tokens) {
    serve_config c;
    srvt_config(&c);
    c.max_input_tokens = max_input_tokens;
    srvt_start(t, &c);
}

void srvt_stop(srvt_server *t) {
    if (t->s) serve_stop(t->s);
    t->s = NULL;
}

static size_t on_write(char *p, size_t size, size_t nmemb, void *ud) {
    sbuf *b = ud;
    sb_put(b, p, size * nmemb);
    return b->oom ? 0 : size * nmemb; /* 0 aborts the transfer */
}

static long request_ex(CURL *h, const char *base, const char *method, const char *path,
                       const char *body, size_t body_len, const char *extra_header, long timeout_ms,
                       srvt_resp *r) {
    pthread_once(&curl_once, curl_init_once);
    memset(r, 0, sizeof *r);
    int own = h == NULL;
    if (own)
        h = curl_easy_init();
    else
        curl_easy_reset(h);
    char url[1024];
    snprintf(url, sizeof url, "%s%s", base, path);
    sbuf b = {0}, hd = {0};
    struct curl_slist *hl = NULL;
    hl = curl_slist_append(hl, "Expect:");
    if (body) hl = curl_slist_append(hl, "Content-Type: application/json");
    if (extra_header) hl = curl_slist_append(hl, extra_header);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_write);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &hd);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    if (strcmp(method, body ? "POST" : "GET") != 0)
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    CURLcode rc = curl_easy_perform(h);
    r->curl_rc = (int)rc;
    if (rc == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    r->body = b.p ? b.p : calloc(1, 1);
    r->len = b.len;
    r->headers = hd.p ? hd.p : calloc(1, 1);
    curl_slist_free_all(hl);
    if (own) curl_easy_cleanup(h);
    return r->status;
}

long srvt_request(CURL *h, const char *base, const char *method, const char *path, const char *body,
                  size_t body_len, const char *extra_header, srvt_resp *r) {
    return request_ex(h, base, method, path, body, body_len, extra_header, 30000L, r);
}

long srvt_post_timeout(const char *base, const char *path, const char *body, long timeout_ms,
                       srvt_resp *r) {
    return request_ex(NULL, base, "POST", path, body, strlen(body), NULL, timeout_ms, r);
}

long srvt_post(const char *base, const char *path, const char *body, srvt_resp *r) {
    return srvt_request(NULL, base, "POST", path, body, strlen(body), NULL, r);
}

long srvt_get(const char *base, const char *path, srvt_resp *r) {
    return srvt_request(NULL, base, "GET", path, NULL, 0, NULL, r);
}

void srvt_resp_free(srvt_resp *r) {
    free(r->body);
    free(r->headers);
    memset(r, 0, sizeof *r);
}

int srvt_header(const srvt_resp *r, const char *name, char *out, size_t cap) {
    size_t nl = strlen(name);
    for (const char *p = r->headers; p && *p;) {
        const char *eol = strstr(p, "\r\n");
        size_t ll = eol ? (size_t)(eol - p) : strlen(p);
        if (ll > nl && !strncasecmp(p, name, nl) && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            size_t vl = ll - (size_t)(v - p);
            if (vl >= cap) vl = cap - 1;
            memcpy(out, v, vl);
            out[vl] = 0;
            return 1;
        }
        if (!eol) break;
        p = eol + 2;
    }
    return 0;
}

cJSON *srvt_json(const srvt_resp *r) {
    cJSON *j = cJSON_ParseWithLength(r->body, r->len);
    cr_assert_not_null(j, "response is not JSON (status %ld): %.300s", r->status, r->body);
    return j;
}

const char *srvt_error_message(const cJSON *j) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    cr_assert(cJSON_IsObject(e), "no error object");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "type");
    cr_assert(cJSON_IsString(m) && m->valuestring[0], "error.message");
    cr_assert(cJSON_IsString(t) && t->valuestring[0], "error.type");
    cr_assert_not_null(cJSON_GetObjectItemCaseSensitive(e, "param"), "error.param present");
    cr_assert_not_null(cJSON_GetObjectItemCaseSensitive(e, "code"), "error.code present");
    return m->valuestring;
}

const char *srvt_tei_error_message(const cJSON *j, const char *type) {
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "error_type");
    cr_assert(cJSON_IsString(e) && e->valuestring[0], "TEI error: no \"error\" string");
    cr_assert(cJSON_IsString(t), "TEI error: no \"error_type\" string");
    if (type)
        cr_assert_str_eq(t->valuestring, type, "error_type %s, want %s (%s)", t->valuestring, type,
                         e->valuestring);
    return e->valuestring;
}

void srvt_expect_tei_error(srvt_server *t, const char *path, const char *body, long status,
                           const char *type, const char *in_message) {
    srvt_resp r;
    long got = srvt_post(t->base, path, body, &r);
    cr_assert_eq(got, status, "%s %.200s: got %ld (%s), want %ld", path, body, got, r.body, status);
    cJSON *j = srvt_json(&r);
    const char *m = srvt_tei_error_message(j, type);
    if (in_message)
        cr_assert_not_null(strstr(m, in_message), "message '%s' lacks '%s'", m, in_message);
    cJSON_Delete(j);
    srvt_resp_free(&r);
}

float *srvt_float_array(const cJSON *arr, int *n) {
    cr_assert(cJSON_IsArray(arr), "expected an array of numbers");
    *n = cJSON_GetArraySize(arr);
    float *v = malloc((size_t)(*n ? *n : 1) * sizeof *v);
    int i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, arr) {
        cr_assert(cJSON_IsNumber(x), "element %d is not a number", i);
        v[i++] = (float)x->valuedouble;
    }
    return v;
}

static int b64v(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

float *srvt_base64_floats(const char *s, int *n) {
    size_t L = strlen(s);
    cr_assert(L % 4 == 0, "base64 length %zu not a multiple of 4", L);
    unsigned char *bytes = malloc(L / 4 * 3 + 3);
    size_t o = 0;
    for (size_t i = 0; i < L; i += 4) {
        int a = b64v(s[i]), b = b64v(s[i + 1]);
        int c = s[i + 2] == '=' ? 0 : b64v(s[i + 2]);
        int d = s[i + 3] == '=' ? 0 : b64v(s[i + 3]);
        cr_assert(a >= 0 && b >= 0 && c >= 0 && d >= 0, "bad base64 char near %zu", i);
        unsigned v = (unsigned)(a << 18 | b << 12 | c << 6 | d);
        bytes[o++] = (unsigned char)(v >> 16);
        if (s[i + 2] != '=') bytes[o++] = (unsigned char)(v >> 8);
        if (s[i + 3] != '=') bytes[o++] = (unsigned char)v;
    }
    cr_assert(o % 4 == 0, "decoded %zu bytes, not float32s", o);
    *n = (int)(o / 4);
    float *f = malloc((o ? o : 4));
    for (size_t i = 0; i < o / 4; i++) {
        uint32_t u = (uint32_t)bytes[4 * i] | (uint32_t)bytes[4 * i + 1] << 8 |
                     (uint32_t)bytes[4 * i + 2] << 16 | (uint32_t)bytes[4 * i + 3] << 24;
        memcpy(&f[i], &u, 4);
    }
    free(bytes);
    return f;
}

float *srvt_openai_embedding(const cJSON *resp, int index, int *dim) {
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(resp, "data");
    cr_assert(cJSON_IsArray(data), "data array");
    const cJSON *d = cJSON_GetArrayItem(data, index);
    cr_assert(cJSON_IsObject(d), "data[%d]", index);
    const cJSON *obj = cJSON_GetObjectItemCaseSensitive(d, "object");
    cr_assert(cJSON_IsString(obj) && !strcmp(obj->valuestring, "embedding"), "data[i].object");
    const cJSON *ix = cJSON_GetObjectItemCaseSensitive(d, "index");
    cr_assert(cJSON_IsNumber(ix) && ix->valueint == index, "data[%d].index", index);
    const cJSON *emb = cJSON_GetObjectItemCaseSensitive(d, "embedding");
    if (cJSON_IsString(emb)) return srvt_base64_floats(emb->valuestring, dim);
    return srvt_float_array(emb, dim);
}

float *srvt_engine_texts(qe_engine *e, const char *const *texts, int n, int dims) {
    int d = dims ? dims : qe_dim(e);
    float *out = malloc((size_t)n * (size_t)d * sizeof *out);
    qe_status st = qe_embed_texts(e, texts, n, dims, out);
    cr_assert_eq(st, QE_OK, "qe_embed_texts: %s", qe_last_error(e));
    return out;
}

float *srvt_engine_ids(qe_engine *e, const int32_t *const *ids, const int *lens, int n, int dims) {
    int d = dims ? dims : qe_dim(e);
    float *out = malloc((size_t)n * (size_t)d * sizeof *out);
    qe_status st = qe_embed_ids(e, ids, lens, n, dims, out);
    cr_assert_eq(st, QE_OK, "qe_embed_ids: %s", qe_last_error(e));
    return out;
}

void srvt_assert_close(const float *got, const float *want, int n, const char *what) {
    double worst = 0;
    int wi = 0;
    for (int i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (d > worst) worst = d, wi = i;
    }
    double cs = tu_cosine_ff(got, want, n);
    cr_assert(cs >= 0.99999, "%s: cosine %.8f < 0.99999 (worst |diff| %.3g at %d: %g vs %g)", what,
              cs, worst, wi, got[wi], want[wi]);
    cr_assert(worst < 1e-4, "%s: worst |diff| %.3g at %d", what, worst, wi);
}

char *srvt_long_text(int words, int seed) {
    static const char *w[] = {"alpha",  "river",  "quantum", "kernel", "banana", "embedding",
                              "thread", "Zürich", "数据",    "cloud",  "seven",  "orbit"};
    size_t cap = (size_t)words * 12 + 1;
    char *s = malloc(cap);
    size_t o = 0;
    unsigned x = (unsigned)seed * 2654435761u + 1;
    for (int i = 0; i < words; i++) {
        x = x * 1103515245u + 12345u;
        const char *t = w[(x >> 16) % 12];
        o += (size_t)snprintf(s + o, cap - o, "%s%s", i ? " " : "", t);
    }
    return s;
}

void srvt_expect_first_embedding(srvt_resp *r, const float *want, const char *what) {
    cJSON *j = srvt_json(r);
    int d;
    float *got = srvt_openai_embedding(j, 0, &d);
    srvt_assert_close(got, want, d, what);
    free(got);
    cJSON_Delete(j);
    srvt_resp_free(r);
}

void srvt_expect_serves(srvt_server *t, const char *text, const char *what) {
    char *body = malloc(strlen(text) + 16);
    cr_assert_not_null(body);
    sprintf(body, "{\"input\":\"%s\"}", text); /* text: plain words, nothing to escape */
    srvt_resp r;
    cr_assert_eq(srvt_post(t->base, "/v1/embeddings", body, &r), 200, "%s: %s", what, r.body);
    const char *tx[] = {text};
    float *want = srvt_engine_texts(t->e, tx, 1, 0);
    srvt_expect_first_embedding(&r, want, what);
    free(want);
    free(body);
}

static void *bg_main(void *p) {
    srvt_bg *b = p;
    b->status = b->timeout_ms
                    ? srvt_post_timeout(b->base, "/v1/embeddings", b->body, b->timeout_ms, &b->r)
                    : srvt_post(b->base, "/v1/embeddings", b->body, &b->r);
    return NULL;
}

void srvt_bg_start(srvt_bg *b) {
    cr_assert_eq(pthread_create(&b->thread, NULL, bg_main, b), 0);
}

void srvt_bg_join(srvt_bg *b) {
    pthread_join(b->thread, NULL);
}

char *srvt_ids_body(int n) {
    char *b = malloc(32 + (size_t)n * 8), *p = b;
    cr_assert_not_null(b);
    p += sprintf(p, "{\"input\":[[");
    for (int i = 0; i < n; i++)
        p += sprintf(p, i ? ",%d" : "%d", 100 + i % 5000);
    strcpy(p, "]]}");
    return b;
}

double srvt_metric_value(const char *base, const char *name) {
    srvt_resp r;
    if (srvt_get(base, "/metrics", &r) != 200) {
        srvt_resp_free(&r);
        return -1;
    }
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(r.body, key);
    double v = p ? strtod(p + strlen(key), NULL) : -1;
    srvt_resp_free(&r);
    return v;
}

long srvt_metric(const char *base, const char *name) {
    return (long)srvt_metric_value(base, name);
}
