/* test_server_dp.c — data parallel serving (issue 14, part 1) on the CPU backend: several engines
 * of one model fed by its one queue (--devices: on the CPU each entry is one more engine), every
 * answer equal to one engine's, the work spread over the engines, and failover: an engine whose
 * device faults (qe_debug_inject_fault) leaves the rotation, its work is retried on the others,
 * and /health, /metrics say so; the server faults only when no engine is left; and --devices
 * grouped by --tensor-parallel into engines of several ranks. */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qembed_debug.h"
#include "srv_harness.h"
#include "test_util.h"

static void start_replicas(srvt_server *t, int n) {
    serve_config c;
    srvt_config(&c);
    c.n_devices = n;
    for (int i = 0; i < n; i++)
        c.devices[i] = i;
    c.max_batch_tokens = 64; /* a step holds a few inputs: a request spreads over the engines */
    srvt_start(t, &c);
}

static const char *TEXTS[] = {"the fox jumps", "vectors for search", "weather today",
                              "a longer input that takes a few more tokens than the others do",
                              "code: for (int i = 0; i < n; i++) sum += x[i];"};
enum { N_TEXTS = 5, IN_REQUEST = 12 };

/* One client: requests of IN_REQUEST inputs (text k = (id + i) % N_TEXTS), vectors kept. */
typedef struct client {
    const char *base;
    int id, n_requests;
    long status[8];
    float vecs[8][IN_REQUEST][64];
    pthread_t thread;
} client;

static void *client_main(void *p) {
    client *c = p;
    for (int r = 0; r < c->n_requests; r++) {
        char body[4096];
        size_t o = (size_t)snprintf(body, sizeof body, "{\"input\": [");
        for (int i = 0; i < IN_REQUEST; i++)
            o += (size_t)snprintf(body + o, sizeof body - o, "%s\"%s\"", i ? "," : "",
                                  TEXTS[(c->id + r + i) % N_TEXTS]);
        snprintf(body + o, sizeof body - o, "]}");
        srvt_resp resp;
        c->status[r] = srvt_post(c->base, "/v1/embeddings", body, &resp);
        cJSON *j = c->status[r] == 200 ? cJSON_Parse(resp.body) : NULL;
        const cJSON *data = cJSON_GetObjectItem(j, "data");
        for (int i = 0; i < IN_REQUEST && data; i++) {
            const cJSON *emb = cJSON_GetObjectItem(cJSON_GetArrayItem(data, i), "embedding"), *x;
            int d = 0;
            cJSON_ArrayForEach(x, emb) if (d < 64) c->vecs[r][i][d++] = (float)x->valuedouble;
        }
        if (c->status[r] == 200 && !data) c->status[r] = -1;
        cJSON_Delete(j);
        srvt_resp_free(&resp);
    }
    return NULL;
}

/* n clients at once, each n_requests; every answer 200 and equal to the engine's own vectors. */
static void run_clients(srvt_server *t, int n, int n_requests, const char *what) {
    qe_engine *e = serve_engine(t->s);
    const int D = qe_dim(e);
    cr_assert_leq(D, 64);
    float want[N_TEXTS][64];
    for (int k = 0; k < N_TEXTS; k++) {
        float *v = srvt_engine_texts(e, &TEXTS[k], 1, 0);
        memcpy(want[k], v, sizeof(float) * (size_t)D);
        free(v);
    }
    client *c = calloc((size_t)n, sizeof *c);
    for (int i = 0; i < n; i++) {
        c[i].base = t->base, c[i].id = i, c[i].n_requests = n_requests;
        cr_assert_eq(pthread_create(&c[i].thread, NULL, client_main, &c[i]), 0);
    }
    for (int i = 0; i < n; i++)
        pthread_join(c[i].thread, NULL);
    for (int i = 0; i < n; i++)
        for (int r = 0; r < n_requests; r++) {
            cr_assert_eq(c[i].status[r], 200, "%s: client %d request %d: %ld", what, i, r,
                         c[i].status[r]);
            for (int k = 0; k < IN_REQUEST; k++) {
                const double cos = tu_cosine_ff(c[i].vecs[r][k], want[(i + r + k) % N_TEXTS], D);
                cr_expect_geq(cos, 0.99999, "%s: client %d request %d input %d: cosine %.7f", what,
                              i, r, k, cos);
            }
        }
    free(c);
}

/* The value of a labelled line of /metrics ("name{labels}"), or -1. */
static long metric_line(const char *base, const char *line) {
    srvt_resp r;
    long v = -1;
    if (srvt_get(base, "/metrics", &r) == 200) {
        const char *p = strstr(r.body, line);
        if (p) v = strtol(p + strlen(line), NULL, 10);
    }
    srvt_resp_free(&r);
    return v;
}

#define REPLICA_LINE(name, r)                                                                      \
    name "{model=\"tiny-qwen3-embed\",replica=\"" #r "\",device=\"" #r "\"} "

/* Two engines, one queue: 6 clients at once all get the one engine's vectors, and both engines
 * ran steps. */
Test(server_dp, two_engines_share_the_queue_and_agree, .timeout = 300) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    srvt_server t;
    start_replicas(&t, 2);
    cr_assert_not_null(serve_replica_engine(t.s, 0, 1));
    cr_assert_null(serve_replica_engine(t.s, 0, 2));
    run_clients(&t, 6, 4, "two engines");
    const long a = metric_line(t.base, REPLICA_LINE("qembed_replica_steps_total", 0));
    const long b = metric_line(t.base, REPLICA_LINE("qembed_replica_steps_total", 1));
    cr_log_info("steps: engine 0 %ld, engine 1 %ld", a, b);
    cr_expect(a > 0 && b > 0, "both engines work: %ld and %ld steps", a, b);
    cr_expect_eq(metric_line(t.base, "qembed_model_replicas_up{model=\"tiny-qwen3-embed\"} "), 2);
    srvt_stop(&t);
}

/* A device fault on one engine: its work goes to the other, every answer stays right, the
 * metrics and /health say one engine is down while /health/ready stays 200; a fault on the last
 * engine faults the server. */
Test(server_dp, a_faulted_engine_leaves_and_its_work_is_retried, .timeout = 300) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    srvt_server t;
    start_replicas(&t, 2);
    qe_debug_inject_fault(serve_replica_engine(t.s, 0, 1));
    /* until engine 1 has run (and failed) a step: each round's answers must all be right */
    for (int round = 0; round < 20; round++) {
        run_clients(&t, 3, 1, "with a fault");
        if (metric_line(t.base, REPLICA_LINE("qembed_replica_up", 1)) == 0) break;
    }
    cr_assert_eq(metric_line(t.base, REPLICA_LINE("qembed_replica_up", 1)), 0,
                 "engine 1 never ran a step");
    cr_expect_eq(metric_line(t.base, REPLICA_LINE("qembed_replica_up", 0)), 1);
    cr_expect_eq(metric_line(t.base, "qembed_model_replicas_up{model=\"tiny-qwen3-embed\"} "), 1);
    srvt_resp r;
    cr_expect_eq(srvt_get(t.base, "/health", &r), 200);
    cr_expect(strstr(r.body, "\"replicas_down\":1"), "%s", r.body);
    srvt_resp_free(&r);
    cr_expect_eq(srvt_get(t.base, "/health/ready", &r), 200);
    srvt_resp_free(&r);
    run_clients(&t, 4, 2, "on the engine left");
    /* the last engine faults: the server does */
    qe_debug_inject_fault(serve_replica_engine(t.s, 0, 0));
    cr_expect_eq(srvt_post(t.base, "/v1/embeddings", "{\"input\": \"x\"}", &r), 503, "%s", r.body);
    cr_expect(strstr(r.body, "device_fault"), "%s", r.body);
    srvt_resp_free(&r);
    cr_expect_eq(srvt_get(t.base, "/health/ready", &r), 503);
    srvt_resp_free(&r);
    srvt_stop(&t);
}

/* Data parallel x tensor parallel (`--devices 0-3 --tensor-parallel 2`): the entries go two at a
 * time to each engine, so two engines of two ranks share the queue, both run steps and every
 * answer is right; an entry count that does not split into whole groups is refused at start. */
Test(server_dp, devices_group_by_tensor_parallel, .timeout = 300) {
    SKIP_UNLESS_EXISTS(TINY_MODEL);
    serve_config c;
    srvt_config(&c);
    c.n_devices = 4, c.tensor_parallel = 2;
    for (int i = 0; i < 4; i++)
        c.devices[i] = i;
    c.max_batch_tokens = 64;
    srvt_server t;
    srvt_start(&t, &c);
    cr_assert_not_null(serve_replica_engine(t.s, 0, 1));
    cr_assert_null(serve_replica_engine(t.s, 0, 2), "4 entries at 2 ranks each: 2 engines");
    run_clients(&t, 4, 3, "two engines of two ranks");
    /* an engine is labelled with its first rank's device */
    const char *second =
        "qembed_replica_steps_total{model=\"tiny-qwen3-embed\",replica=\"1\",device=\"2\"} ";
    cr_expect_gt(metric_line(t.base, REPLICA_LINE("qembed_replica_steps_total", 0)), 0);
    cr_expect_gt(metric_line(t.base, second), 0, "the second engine (devices 2,3) ran no step");
    srvt_stop(&t);
    serve_server *bad = NULL;
    char err[512] = "";
    c.n_devices = 3;
    cr_expect_neq(serve_start(&c, &bad, err, sizeof err), 0);
    cr_expect(strstr(err, "not a multiple of --tensor-parallel 2"), "%s", err);
    cr_expect_null(bad);
}
