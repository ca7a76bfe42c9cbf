/* serve_response.c — response bodies: the embeddings list (a fast float formatter, since printf
 * dominates serving time in peers, and base64 of little-endian float32), errors, /info, /v1/models.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "serve_internal.h"

#define QE_SERVE_VERSION "0.1.0"

/* 10^(k-64): the scale 10^(8 - e10) spans 10^-31 (FLT_MAX) to 10^54 (the smallest subnormal,
 * 1.4e-45), with a step of slack either side for the exponent correction below. */
static double POW10[129];
static pthread_once_t pow10_once = PTHREAD_ONCE_INIT;
static void pow10_init(void) {
    for (int k = 0; k < 129; k++)
        POW10[k] = pow(10.0, k - 64);
}
static double p10(int k) {
    return POW10[k + 64];
}

/* Nine significant digits always read back to the same float32. The scaling runs in double, whose
 * error (~1e-16 relative) is far below the half-unit of the ninth digit that round-tripping needs.
 */
int srv_format_float(float x, char *buf) {
    pthread_once(&pow10_once, pow10_init);
    char *p = buf;
    double v = x;
    if (!isfinite(v) || v == 0) {
        buf[0] = '0';
        buf[1] = 0;
        return 1;
    }
    if (v < 0) {
        *p++ = '-';
        v = -v;
    }
    int e10 = (int)floor(log10(v));
    uint64_t m = 0;
    for (int tries = 0; tries < 3; tries++) {
        double sc = v * p10(8 - e10);
        m = (uint64_t)(sc + 0.5);
        if (m < 100000000ull)
            e10--;
        else if (m >= 1000000000ull)
            e10++;
        else
            break;
    }
    char dig[9];
    for (int i = 8; i >= 0; i--) {
        dig[i] = (char)('0' + m % 10);
        m /= 10;
    }
    int nd = 9;
    while (nd > 1 && dig[nd - 1] == '0')
        nd--;
    if (e10 >= -5 && e10 < 0) {
        *p++ = '0';
        *p++ = '.';
        for (int i = 0; i < -e10 - 1; i++)
            *p++ = '0';
        memcpy(p, dig, (size_t)nd);
        p += nd;
    } else if (e10 >= 0 && e10 < 9) {
        int ip = e10 + 1; /* digits before the point */
        for (int i = 0; i < ip; i++)
            *p++ = i < nd ? dig[i] : '0';
        if (nd > ip) {
            *p++ = '.';
            memcpy(p, dig + ip, (size_t)(nd - ip));
            p += nd - ip;
        }
    } else {
        *p++ = dig[0];
        if (nd > 1) {
            *p++ = '.';
            memcpy(p, dig + 1, (size_t)(nd - 1));
            p += nd - 1;
        }
        *p++ = 'e';
        int ee = e10;
        if (ee < 0) {
            *p++ = '-';
            ee = -ee;
        }
        if (ee >= 10) *p++ = (char)('0' + ee / 10);
        *p++ = (char)('0' + ee % 10);
    }
    *p = 0;
    return (int)(p - buf);
}

void srv_base64(sbuf *b, const unsigned char *s, size_t n) {
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    sb_reserve(b, (n + 2) / 3 * 4);
    if (b->oom) return;
    char *o = b->p + b->len;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        *o++ = A[v >> 18];
        *o++ = A[(v >> 12) & 63];
        *o++ = A[(v >> 6) & 63];
        *o++ = A[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0);
        *o++ = A[v >> 18];
        *o++ = A[(v >> 12) & 63];
        *o++ = i + 1 < n ? A[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    b->len = (size_t)(o - b->p);
    b->p[b->len] = 0;
}

/* Little-endian float32 bytes whatever the host order. */
static void put_base64_floats(sbuf *b, const float *v, int n) {
    unsigned char *bytes = malloc((size_t)n * 4);
    if (!bytes) {
        b->oom = 1;
        return;
    }
    for (int i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        bytes[4 * i] = (unsigned char)u;
        bytes[4 * i + 1] = (unsigned char)(u >> 8);
        bytes[4 * i + 2] = (unsigned char)(u >> 16);
        bytes[4 * i + 3] = (unsigned char)(u >> 24);
    }
    sb_put(b, "\"", 1);
    srv_base64(b, bytes, (size_t)n * 4);
    sb_put(b, "\"", 1);
    free(bytes);
}

static void put_float_array(sbuf *b, const float *v, int n) {
    sb_reserve(b, (size_t)n * 17 + 2);
    if (b->oom) return;
    char *o = b->p + b->len;
    *o++ = '[';
    for (int i = 0; i < n; i++) {
        if (i) *o++ = ',';
        o += srv_format_float(v[i], o); /* at most 16 chars each, reserved above */
    }
    *o++ = ']';
    b->len = (size_t)(o - b->p);
    b->p[b->len] = 0;
}

char *srv_render_embeddings(serve_server *s, const srv_job *j, size_t *len) {
    sbuf b = {0};
    if (j->route == ROUTE_SIMILARITY || j->route == ROUTE_EMBED_ALL)
        return srv_render_tei(s, j, len);
    if (j->route == ROUTE_TEI) {
        sb_put(&b, "[", 1);
        for (int i = 0; i < j->n; i++) {
            if (i) sb_put(&b, ",", 1);
            put_float_array(&b, j->out + (size_t)i * j->dims, j->dims);
        }
        sb_put(&b, "]", 1);
        return sb_take(&b, len);
    }
    sb_puts(&b, "{\"object\":\"list\",\"data\":[");
    for (int i = 0; i < j->n; i++) {
        sb_printf(&b, "%s{\"object\":\"embedding\",\"index\":%d,\"embedding\":", i ? "," : "", i);
        if (j->base64)
            put_base64_floats(&b, j->out + (size_t)i * j->dims, j->dims);
        else
            put_float_array(&b, j->out + (size_t)i * j->dims, j->dims);
        sb_put(&b, "}", 1);
    }
    sb_puts(&b, "],\"model\":");
    sb_json_string(&b, j->m->served_name, strlen(j->m->served_name));
    sb_printf(&b, ",\"usage\":{\"prompt_tokens\":%ld,\"total_tokens\":%ld}}", j->prompt_tokens,
              j->prompt_tokens);
    return sb_take(&b, len);
}

char *srv_render_error(const srv_error *e, size_t *len) {
    sbuf b = {0};
    sb_puts(&b, "{\"error\":{\"message\":");
    sb_json_string(&b, e->message, strlen(e->message));
    sb_puts(&b, ",\"type\":");
    sb_json_string(&b, e->type ? e->type : "invalid_request_error",
                   strlen(e->type ? e->type : "invalid_request_error"));
    sb_puts(&b, ",\"param\":");
    if (e->param[0])
        sb_json_string(&b, e->param, strlen(e->param));
    else
        sb_puts(&b, "null");
    sb_puts(&b, ",\"code\":");
    if (e->code)
        sb_json_string(&b, e->code, strlen(e->code));
    else
        sb_puts(&b, "null");
    sb_puts(&b, "}}");
    return sb_take(&b, len);
}

/* TEI's Info fields first (router/src/lib.rs), then ours. model_dtype is what the checkpoint
 * stores (config.json's torch_dtype), compute_dtype what the backend computes in: the CPU
 * backend converts every weight to float32; the CUDA backend runs bf16 GEMMs over an fp32
 * residual stream. max_concurrent_requests 0: no cap on connections of its own. */
char *srv_render_info(serve_server *s, size_t *len) {
    const srv_model *m = &s->models[0]; /* TEI describes one model: the first */
    sbuf b = {0};
    sb_puts(&b, "{\"model_id\":");
    sb_json_string(&b, m->served_name, strlen(m->served_name));
    sb_puts(&b, ",\"model_sha\":");
    if (m->model_sha[0])
        sb_json_string(&b, m->model_sha, strlen(m->model_sha));
    else
        sb_puts(&b, "null");
    const char *backend = qe_backend_name(m->engine);
    if (!backend) backend = "unknown";
    const char *compute = s->cfg.backend == QE_BACKEND_CPU ? "float32" : "bfloat16";
    /* TEI's model_type: a reranker is its classifier kind, with one label (the relevance) */
    const int rerank = m->task == QE_TASK_RERANK;
    sb_printf(&b,
              ",\"model_dtype\":\"%s\",\"compute_dtype\":\"%s\",\"model_type\":%s,"
              "\"max_concurrent_requests\":0,"
              "\"max_input_length\":%d,\"max_batch_tokens\":%d,\"max_batch_requests\":null,"
              "\"max_client_batch_size\":%d,\"auto_truncate\":true,\"tokenization_workers\":%d,"
              "\"version\":\"%s\",\"sha\":null,\"docker_label\":null",
              m->dtype, compute,
              rerank ? "{\"reranker\":{\"id2label\":{\"0\":\"relevance\"},"
                       "\"label2id\":{\"relevance\":0}}}"
                     : "{\"embedding\":{\"pooling\":\"last_token\"}}",
              rerank ? srv_rerank_limit(m) : m->max_input_tokens, s->cfg.max_batch_tokens,
              s->cfg.max_client_batch, s->n_tok_threads, QE_SERVE_VERSION);
    sb_puts(&b, ",\"model_dir\":");
    sb_json_string(&b, m->dir, strlen(m->dir));
    sb_printf(&b,
              ",\"dim\":%d,\"max_positions\":%d,\"vocab_size\":%d,\"dtype\":\"%s\","
              "\"backend\":\"%s\",\"max_queue_tokens\":%ld,\"pooling\":\"last_token\","
              "\"normalized\":%s,\"served_models\":[",
              m->width, m->max_positions, m->vocab, m->dtype, backend, s->cfg.max_queue_tokens,
              rerank ? "false" : "true");
    for (int i = 0; i < s->n_models; i++) { /* every model behind the port, in --model order */
        if (i) sb_puts(&b, ",");
        sb_json_string(&b, s->models[i].served_name, strlen(s->models[i].served_name));
    }
    sb_puts(&b, "]}");
    return sb_take(&b, len);
}

/* One entry of /v1/models; qembed's "task" beside OpenAI's fields. "created" is when the server
 * started, the same on every call (clients cache model lists by it). */
static void put_model(sbuf *b, const srv_model *m) {
    sb_puts(b, "{\"id\":");
    sb_json_string(b, m->served_name, strlen(m->served_name));
    sb_printf(b, ",\"object\":\"model\",\"created\":%ld,\"owned_by\":\"qembed\",\"task\":\"%s\"}",
              (long)m->s->started, qe_task_name(m->task));
}

char *srv_render_models(serve_server *s, size_t *len) {
    sbuf b = {0};
    sb_puts(&b, "{\"object\":\"list\",\"data\":[");
    for (int i = 0; i < s->n_models; i++) {
        if (i) sb_puts(&b, ",");
        put_model(&b, &s->models[i]);
    }
    sb_puts(&b, "]}");
    return sb_take(&b, len);
}

char *srv_render_model(const srv_model *m, size_t *len) {
    sbuf b = {0};
    put_model(&b, m);
    return sb_take(&b, len);
}
