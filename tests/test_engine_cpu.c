/* test_engine_cpu.c — the CPU reference engine against the Hugging Face goldens, against an
 * independent double-precision forward (naive_forward.h) on geometries the goldens do not cover,
 * and for batching, threading and Matryoshka invariances. */
#include <cjson/cJSON.h>

#include "naive_forward.h"
#include "qembed.h"
#include "qembed_debug.h"
#include "random_model.h"
#include "test_cancel.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"
#include "weights/model.h"

static char err[512];

static qe_engine *open_cpu(const char *dir, int threads, int batch_tokens) {
    qe_options o = {.model_dir = dir,
                    .backend = QE_BACKEND_CPU,
                    .threads = threads,
                    .max_batch_tokens = batch_tokens};
    qe_engine *e = NULL;
    cr_assert_eq(qe_open(&o, &e, err, sizeof err), QE_OK, "%s", err);
    return e;
}

static cJSON *load_json(const char *path) {
    char *text = tu_read_file(path, NULL);
    cr_assert(text, "cannot read %s", path);
    cJSON *j = cJSON_Parse(text);
    free(text);
    cr_assert(j);
    return j;
}

static int32_t *ids_of(const cJSON *arr, int *len) {
    *len = cJSON_GetArraySize(arr);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)*len);
    int i = 0;
    for (const cJSON *v = arr->child; v; v = v->next)
        ids[i++] = (int32_t)v->valuedouble;
    return ids;
}

static double *doubles_of(const cJSON *arr, int *len) {
    *len = cJSON_GetArraySize(arr);
    double *d = malloc(sizeof(double) * (size_t)*len);
    int i = 0;
    for (const cJSON *v = arr->child; v; v = v->next)
        d[i++] = v->valuedouble;
    return d;
}

/* Every golden case, one call each, on a CPU engine with the given step budget (0: the default);
 * returns how many cases were longer than the budget (run in chunks). */
static int goldens_at(int budget) {
    cJSON *g = load_json(TINY_MODEL "/golden.json");
    qe_engine *e = open_cpu(TINY_MODEL, 0, budget);
    const int D = qe_dim(e);
    float *v = malloc(sizeof(float) * (size_t)D);
    int n_cases = 0, chunked = 0;
    double worst = 1;
    for (const cJSON *c = cJSON_GetObjectItem(g, "cases")->child; c; c = c->next) {
        int len, dl;
        int32_t *ids = ids_of(cJSON_GetObjectItem(c, "ids"), &len);
        double *want = doubles_of(cJSON_GetObjectItem(c, "embedding"), &dl);
        cr_assert_eq(dl, D);
        const int32_t *p = ids;
        cr_assert_eq(qe_embed_ids(e, &p, &len, 1, 0, v), QE_OK, "%s", qe_last_error(e));
        double cos = tu_cosine(v, want, D);
        if (cos < worst) worst = cos;
        cr_assert_geq(cos, 0.99999, "length %d (budget %d): cosine %.7f", len, budget, cos);
        n_cases++;
        chunked += budget && len > budget;
        free(ids);
        free(want);
    }
    cr_assert_eq(n_cases, 11);
    cr_log_info("golden (budget %d): %d cases, worst cosine %.8f", budget, n_cases, worst);
    free(v);
    qe_close(e);
    cJSON_Delete(g);
    return chunked;
}

Test(golden, every_case_matches_hugging_face, .timeout = 300) {
    SKIP_UNLESS_EXISTS(TINY_MODEL "/golden.json");
    goldens_at(0);
}

Test(golden, all_cases_packed_in_one_batch, .timeout = 300) {
    SKIP_UNLESS_EXISTS(TINY_MODEL "/golden.json");
    cJSON *g = load_json(TINY_MODEL "/golden.json");
    qe_engine *e = open_cpu(TINY_MODEL, 2, 0);
    const int D = qe_dim(e);
    const cJSON *cases = cJSON_GetObjectItem(g, "cases");
    int n = cJSON_GetArraySize(cases), i = 0;
    int32_t **ids = calloc((size_t)n, sizeof *ids);
    int *lens = calloc((size_t)n, sizeof *lens);
    for (const cJSON *c = cases->child; c; c = c->next, i++)
        ids[i] = ids_of(cJSON_GetObjectItem(c, "ids"), &lens[i]);
    float *v = malloc(sizeof(float) * (size_t)n * D);
    cr_assert_eq(qe_embed_ids(e, (const int32_t *const *)ids, lens, n, 0, v), QE_OK);
    i = 0;
    for (const cJSON *c = cases->child; c; c = c->next, i++) {
        int dl;
        double *want = doubles_of(cJSON_GetObjectItem(c, "embedding"), &dl);
        double cos = tu_cosine(v + (size_t)i * D, want, D);
        cr_assert_geq(cos, 0.99999, "case %d (length %d) in a packed batch: %.7f", i, lens[i], cos);
        free(want);
        free(ids[i]);
    }
    free(ids);
    free(lens);
    free(v);
    qe_close(e);
    cJSON_Delete(g);
}

Test(golden, layer0_residual_matches) {
    SKIP_UNLESS_EXISTS(TINY_MODEL "/golden.json");
    cJSON *g = load_json(TINY_MODEL "/golden.json");
    const cJSON *dbg = cJSON_GetObjectItem(g, "debug");
    int len;
    int32_t *ids = ids_of(cJSON_GetObjectItem(dbg, "ids"), &len);
    qe_engine *e = open_cpu(TINY_MODEL, 1, 0);
    const int D = qe_dim(e);
    float *x = malloc(sizeof(float) * (size_t)len * D);
    cr_assert_eq(qe_debug_residual(e, ids, len, 1, x), QE_OK, "%s", qe_last_error(e));
    int t = 0;
    double worst = 0;
    for (const cJSON *row = cJSON_GetObjectItem(dbg, "layer0_out")->child; row;
         row = row->next, t++) {
        int dl;
        double *want = doubles_of(row, &dl);
        cr_assert_eq(dl, D);
        for (int d = 0; d < D; d++) {
            double diff = fabs(x[(size_t)t * D + d] - want[d]);
            if (diff > worst) worst = diff;
            cr_assert_leq(diff, 1e-4 * (1 + fabs(want[d])), "token %d dim %d: %g vs %g", t, d,
                          x[(size_t)t * D + d], want[d]);
        }
        free(want);
    }
    cr_assert_eq(t, len);
    cr_log_info("layer0: worst abs diff %.3g", worst);
    free(x);
    free(ids);
    qe_close(e);
    cJSON_Delete(g);
}

Test(golden, text_end_to_end, .timeout = 300) {
    SKIP_UNLESS_EXISTS(TINY_MODEL "/golden_text.json");
    cJSON *g = load_json(TINY_MODEL "/golden_text.json");
    qe_engine *e = open_cpu(TINY_MODEL, 0, 0);
    const tok_tokenizer *tok = qe_tokenizer(e);
    cr_assert(tok);
    const int D = qe_dim(e);
    float *v = malloc(sizeof(float) * (size_t)D);
    int n = 0;
    for (const cJSON *c = cJSON_GetObjectItem(g, "cases")->child; c; c = c->next, n++) {
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        int len, got_len, dl;
        int32_t *want_ids = ids_of(cJSON_GetObjectItem(c, "ids"), &len), *got;
        cr_assert_eq(tok_encode(tok, text, strlen(text), NULL, &got, &got_len, err, sizeof err),
                     TOK_OK, "%s", err);
        cr_assert_eq(got_len, len, "case %d: %d ids, want %d", n, got_len, len);
        cr_assert(memcmp(got, want_ids, sizeof(int32_t) * (size_t)len) == 0, "case %d ids", n);
        double *want = doubles_of(cJSON_GetObjectItem(c, "embedding"), &dl);
        cr_assert_eq(qe_embed_texts(e, &text, 1, 0, v), QE_OK, "%s", qe_last_error(e));
        double cos = tu_cosine(v, want, D);
        cr_assert_geq(cos, 0.99999, "case %d: cosine %.7f", n, cos);
        free(got);
        free(want_ids);
        free(want);
    }
    cr_assert_eq(n, 10);
    free(v);
    qe_close(e);
    cJSON_Delete(g);
}

static void geometry(const char *tag, int hidden, int inter, int layers, int heads, int kv,
                     int head_dim, st_dtype dtype, int prefixed, size_t shard, int alibi) {
    char dir[1024];
    tu_scratch_dir(dir, sizeof dir, tag);
    random_model_opts o = {0};
    random_model_preset("tiny", &o.cfg);
    o.cfg.hidden_size = hidden;
    o.cfg.intermediate_size = inter;
    o.cfg.num_layers = layers;
    o.cfg.num_heads = heads;
    o.cfg.num_kv_heads = kv;
    o.cfg.head_dim = head_dim;
    o.cfg.alibi = alibi; /* what make-random --alibi writes */
    o.cfg.rope_theta = alibi ? 0 : o.cfg.rope_theta;
    o.out_dir = dir;
    o.seed = 11;
    o.dtype = dtype;
    o.prefixed = prefixed;
    o.shard_bytes = shard;
    o.quiet = 1;
    cr_assert_eq(random_model_write(&o, err, sizeof err), 0, "%s", err);
    qe_model m;
    cr_assert_eq(model_open(dir, &m, err, sizeof err), 0, "%s", err);
    cr_assert_eq(m.cfg.alibi, alibi, "%s: config.json does not say the position scheme", tag);
    /* whole, and with a 16-token budget: the 40-token sequence then runs in three chunks */
    qe_engine *e = open_cpu(dir, 2, 0), *chunked = open_cpu(dir, 2, 16);
    const int lens[3] = {1, 9, 40};
    int32_t ids[40];
    double *want = malloc(sizeof(double) * (size_t)hidden);
    float *got = malloc(sizeof(float) * (size_t)hidden),
          *whole = malloc(sizeof(float) * (size_t)hidden);
    for (int i = 0; i < 40; i++)
        ids[i] = (i * 7919 + 13) % 151643;
    for (int c = 0; c < 3; c++) {
        naive_embed(&m, ids, lens[c], want);
        const int32_t *p = ids;
        for (int k = 0; k < 2; k++) {
            qe_engine *x = k ? chunked : e;
            cr_assert_eq(qe_embed_ids(x, &p, &lens[c], 1, 0, got), QE_OK, "%s", qe_last_error(x));
            double cos = tu_cosine(got, want, hidden);
            cr_assert_geq(cos, 0.99999, "%s length %d%s: cosine %.7f", tag, lens[c],
                          k ? " in 16-token chunks" : "", cos);
            if (!k) memcpy(whole, got, sizeof(float) * (size_t)hidden);
        }
        cr_expect(memcmp(whole, got, sizeof(float) * (size_t)hidden) == 0,
                  "%s length %d: chunked differs from whole", tag, lens[c]);
    }
    free(want);
    free(got);
    free(whole);
    qe_close(chunked);
    qe_close(e);
    model_close(&m);
}

Test(unseen, mha_f32, .timeout = 120) {
    geometry("mha", 40, 72, 2, 2, 2, 64, ST_F32, 0, 0, 0);
}
Test(unseen, gqa4_bf16_prefixed, .timeout = 120) {
    geometry("gqa4", 96, 160, 2, 8, 2, 32, ST_BF16, 1, 0, 0);
}
Test(unseen, gqa8_f16_sharded, .timeout = 120) {
    geometry("gqa8", 64, 100, 3, 8, 1, 128, ST_F16, 0, 10000000, 0);
}
/* ALiBi models (position_embedding_type "alibi"): no rotation, slopes on the logits, whole and
 * in chunks against the K/V cache. 6 heads: the slopes of a head count that is not a power of
 * two; 8/8: the paper's plain geometric set, MHA. */
Test(unseen, alibi_gqa3_bf16, .timeout = 120) {
    geometry("alibi6", 64, 100, 2, 6, 2, 64, ST_BF16, 0, 0, 1);
}
Test(unseen, alibi_mha8_f32, .timeout = 120) {
    geometry("alibi8", 48, 80, 2, 8, 8, 32, ST_F32, 0, 0, 1);
}

/* --- invariances --- */

Test(invariance, batching_threads_and_step_size, .timeout = 300) {
    SKIP_UNLESS_EXISTS(TINY_MODEL "/model.safetensors");
    enum { N = 6 };
    const int lens[N] = {1, 33, 7, 129, 2, 64};
    int32_t *ids[N];
    for (int s = 0; s < N; s++) {
        ids[s] = malloc(sizeof(int32_t) * (size_t)lens[s]);
        for (int t = 0; t < lens[s]; t++)
            ids[s][t] = (s * 1009 + t * 7717) % 151669;
    }
    qe_engine *alone = open_cpu(TINY_MODEL, 1, 0), *packed = open_cpu(TINY_MODEL, 2, 70);
    const int D = qe_dim(alone);
    float *a = malloc(sizeof(float) * N * D), *b = malloc(sizeof(float) * N * D);
    for (int s = 0; s < N; s++) {
        const int32_t *p = ids[s];
        cr_assert_eq(qe_embed_ids(alone, &p, &lens[s], 1, 0, a + s * D), QE_OK);
    }
    cr_assert_eq(qe_embed_ids(packed, (const int32_t *const *)ids, lens, N, 0, b), QE_OK);
    for (int s = 0; s < N; s++) {
        double cos = tu_cosine_ff(a + s * D, b + s * D, D);
        cr_assert_geq(cos, 0.999999, "sequence %d: alone vs packed cosine %.8f", s, cos);
    }
    for (int s = 0; s < N; s++)
        free(ids[s]);
    free(a);
    free(b);
    qe_close(alone);
    qe_close(packed);
}

Test(invariance, matryoshka_dims) {
    SKIP_UNLESS_EXISTS(TINY_MODEL "/model.safetensors");
    qe_engine *e = open_cpu(TINY_MODEL, 2, 0);
    const int D = qe_dim(e);
    int32_t ids[20];
    for (int t = 0; t < 20; t++)
        ids[t] = 1000 + 37 * t;
    const int32_t *p = ids;
    int len = 20;
    float *full = malloc(sizeof(float) * D), cut[32];
    cr_assert_eq(qe_embed_ids(e, &p, &len, 1, D, full), QE_OK);
    cr_assert_eq(qe_embed_ids(e, &p, &len, 1, 32, cut), QE_OK);
    double nf = 0, nc = 0, ref = 0;
    for (int i = 0; i < D; i++)
        nf += (double)full[i] * full[i];
    for (int i = 0; i < 32; i++) {
        nc += (double)cut[i] * cut[i];
        ref += (double)full[i] * full[i];
    }
    cr_assert_float_eq(nf, 1.0, 1e-5);
    cr_assert_float_eq(nc, 1.0, 1e-5);
    for (int i = 0; i < 32; i++)
        cr_assert_float_eq(cut[i], full[i] / sqrt(ref), 1e-6, "dim %d", i);
    free(full);
    qe_close(e);
}

Test(errors, bad_requests_are_refused_with_a_message) {
    SKIP_UNLESS_EXISTS(TINY_MODEL "/model.safetensors");
    qe_engine *e = open_cpu(TINY_MODEL, 1, 0);
    float v[64];
    int32_t bad[2] = {5, 151669};
    const int32_t *p = bad;
    int len = 2;
    cr_assert_eq(qe_embed_ids(e, &p, &len, 1, 0, v), QE_ERR_ARG);
    cr_assert(strstr(qe_last_error(e), "outside the vocabulary"), "%s", qe_last_error(e));
    len = 0;
    cr_assert_eq(qe_embed_ids(e, &p, &len, 1, 0, v), QE_ERR_ARG);
    len = 1;
    cr_assert_eq(qe_embed_ids(e, &p, &len, 1, 65, v), QE_ERR_ARG);
    cr_assert(strstr(qe_last_error(e), "dims"), "%s", qe_last_error(e));
    len = 40961;
    cr_assert_eq(qe_embed_ids(e, &p, &len, 1, 0, v), QE_ERR_TOO_LONG);
    qe_close(e);
    qe_options o = {.model_dir = "/nonexistent/model"};
    qe_engine *x;
    cr_assert_eq(qe_open(&o, &x, err, sizeof err), QE_ERR_IO);
    cr_assert(strstr(err, "/nonexistent/model"), "%s", err);
}

Test(invariance, unnormalized_is_the_scaled_normalized_vector) {
    SKIP_UNLESS_EXISTS(TINY_MODEL "/model.safetensors");
    qe_engine *e = open_cpu(TINY_MODEL, 2, 0);
    int32_t ids[9] = {11, 2222, 333, 44444, 5555, 66, 777, 8888, 151643};
    const int32_t *p = ids;
    int len = 9;
    float unit[48], raw[48];
    cr_assert_eq(qe_embed_ids_ex(e, &p, &len, 1, 48, 1, unit), QE_OK);
    cr_assert_eq(qe_embed_ids_ex(e, &p, &len, 1, 48, 0, raw), QE_OK);
    double n = 0;
    for (int i = 0; i < 48; i++)
        n += (double)raw[i] * raw[i];
    n = sqrt(n);
    cr_assert(fabs(n - 1) > 1e-3, "raw norm %g", n);
    for (int i = 0; i < 48; i++)
        cr_assert_float_eq(raw[i] / n, unit[i], 1e-6, "dim %d", i);
    qe_close(e);
}

/* --- paged chunks: a sequence longer than half the step budget runs in chunks through the K/V
 * pool, so no step exceeds the budget --- */

/* Chunking changes neither a key nor the order keys are summed in (the attention's key tiles
 * start at key 0 either way, matmuls and norms are per row): chunked and whole are bitwise
 * equal, alone and in a batch with short sequences, and so is the residual stream. */
Test(chunked, equals_whole_runs_bitwise, .timeout = 300) {
    SKIP_UNLESS_EXISTS(TINY_MODEL "/model.safetensors");
    enum { N = 7 };
    const int lens[N] = {65, 3, 200, 64, 513, 1, 1100};
    int32_t *ids[N];
    for (int s = 0; s < N; s++) {
        ids[s] = malloc(sizeof(int32_t) * (size_t)lens[s]);
        for (int t = 0; t < lens[s]; t++)
            ids[s][t] = (s * 4099 + t * 7717 + 5) % 151669;
    }
    qe_engine *whole = open_cpu(TINY_MODEL, 2, 0), *chunk = open_cpu(TINY_MODEL, 2, 64);
    const int D = qe_dim(whole);
    float *a = malloc(sizeof(float) * N * D), *b = malloc(sizeof(float) * N * D);
    for (int s = 0; s < N; s++) {
        const int32_t *p = ids[s];
        cr_assert_eq(qe_embed_ids(whole, &p, &lens[s], 1, 0, a + s * D), QE_OK);
    }
    cr_assert_eq(qe_embed_ids(chunk, (const int32_t *const *)ids, lens, N, 0, b), QE_OK, "%s",
                 qe_last_error(chunk));
    for (int s = 0; s < N; s++)
        cr_expect(memcmp(a + s * D, b + s * D, sizeof(float) * D) == 0,
                  "sequence %d (%d tokens, budget 64): chunked differs from whole (cosine %.9f)", s,
                  lens[s], tu_cosine_ff(a + s * D, b + s * D, D));
    for (int nl = 1; nl <= 3; nl++) {
        const size_t n = (size_t)lens[4] * D;
        float *rw = malloc(sizeof(float) * n), *rc = malloc(sizeof(float) * n);
        cr_assert_eq(qe_debug_residual(whole, ids[4], lens[4], nl, rw), QE_OK);
        cr_assert_eq(qe_debug_residual(chunk, ids[4], lens[4], nl, rc), QE_OK);
        cr_expect(memcmp(rw, rc, sizeof(float) * n) == 0,
                  "residual after %d layers: chunked differs from whole", nl);
        free(rw), free(rc);
    }
    for (int s = 0; s < N; s++)
        free(ids[s]);
    free(a), free(b);
    qe_close(whole), qe_close(chunk);
}

/* Every golden case with a 256-token budget (1000 and 2048 tokens run in 4 and 8 chunks). */
Test(chunked, goldens_at_a_small_budget, .timeout = 300) {
    SKIP_UNLESS_EXISTS(TINY_MODEL "/golden.json");
    cr_expect_geq(goldens_at(256), 2, "no golden case was long enough to be chunked");
}

/* --- cancellation: the caller's stop function, polled at every step and chunk boundary --- */

Test(cancel, stops_at_the_next_step_or_chunk, .timeout = 120) {
    SKIP_UNLESS_EXISTS(TINY_MODEL "/model.safetensors");
    qe_engine *e = open_cpu(TINY_MODEL, 2, 64);
    int lens[6] = {1100, 60, 60, 60, 60, 60};
    int32_t *ids[6];
    for (int s = 0; s < 6; s++) {
        ids[s] = malloc(sizeof(int32_t) * (size_t)lens[s]);
        for (int t = 0; t < lens[s]; t++)
            ids[s][t] = (s * 31 + t * 7717 + 3) % 151669;
    }
    expect_stops_at_steps_and_chunks(e, ids, lens);
    for (int s = 0; s < 6; s++)
        free(ids[s]);
    qe_close(e);
}

/* --- the paged pool and mixed steps (qe_sched: the scheduler a server feeds across calls) --- */

typedef struct mixed_run {
    float *out; /* [n, D] by tag */
    int D, done, gone;
} mixed_run;
static void mixed_done(void *ctx, void *tag, const float *vec) {
    mixed_run *r = ctx;
    memcpy(r->out + (size_t)(intptr_t)tag * r->D, vec, sizeof(float) * (size_t)r->D);
    r->done++;
}
static int drop_everything(void *ctx, void *tag) {
    (void)ctx, (void)tag;
    return 1;
}
static void mixed_gone(void *ctx, void *tag, qe_status why) {
    (void)tag, (void)why;
    ((mixed_run *)ctx)->gone++;
}

/* 4 documents through the pool, with short queries added between steps: every
 * vector equals the same sequence embedded alone (bitwise: chunk boundaries change neither a key
 * nor the order keys are summed in, and the CPU GEMM is row-deterministic), every query finishes
 * in the step after it was added, and the pool never holds more than its size. */
Test(mixed, documents_and_queries_equal_isolated_runs, .timeout = 300) {
    SKIP_UNLESS_EXISTS(TINY_MODEL "/model.safetensors");
    qe_options o = {.model_dir = TINY_MODEL,
                    .backend = QE_BACKEND_CPU,
                    .threads = 2,
                    .max_batch_tokens = 128,
                    .kv_pool_tokens = 1600,
                    .kv_page_tokens = 32};
    qe_engine *e = NULL;
    cr_assert_eq(qe_open(&o, &e, err, sizeof err), QE_OK, "%s", err);
    cr_expect_eq(qe_kv_pool_tokens(e), 1600);
    const int D = qe_dim(e), n_docs = 4, n_q = 6, n = n_docs + n_q;
    int lens[10];
    int32_t *ids[10];
    for (int s = 0; s < n; s++) {
        lens[s] = s < n_docs ? 390 + 3 * s : 3 + 5 * s;
        ids[s] = malloc(sizeof(int32_t) * (size_t)lens[s]);
        for (int t = 0; t < lens[s]; t++)
            ids[s][t] = (s * 131 + t * 7717 + 11) % 151669;
    }
    float *alone = malloc(sizeof(float) * (size_t)n * D);
    for (int s = 0; s < n; s++)
        cr_assert_eq(
            qe_embed_ids(e, (const int32_t *const *)&ids[s], &lens[s], 1, 0, alone + (size_t)s * D),
            QE_OK, "%s", qe_last_error(e));
    qe_sched *sc = NULL;
    cr_assert_eq(qe_sched_open(e, 0, 1, &sc), QE_OK);
    mixed_run r = {malloc(sizeof(float) * (size_t)n * D), D, 0, 0};
    const qe_sched_hooks h = {.done = mixed_done, .gone = mixed_gone, .ctx = &r};
    for (int s = 0; s < n_docs; s++)
        cr_assert_eq(qe_sched_add(sc, ids[s], lens[s], (void *)(intptr_t)s), QE_OK);
    qe_sched_stats st;
    int steps = 0, max_used = 0, max_chunks = 0;
    for (int q = n_docs; qe_sched_waiting(sc) > 0 || q < n; steps++) {
        const int before = r.done;
        const int adding = q < n && steps % 2 == 1; /* a query every other step */
        if (adding) cr_assert_eq(qe_sched_add(sc, ids[q], lens[q], (void *)(intptr_t)q), QE_OK);
        cr_assert_eq(qe_sched_step(sc, &h, &st), QE_OK, "%s", qe_last_error(e));
        cr_assert_leq(st.tokens, 128, "step of %d tokens", st.tokens);
        cr_assert_leq(st.kv_used_tokens, st.kv_total_tokens);
        if (st.kv_used_tokens > max_used) max_used = st.kv_used_tokens;
        if (st.chunks > max_chunks) max_chunks = st.chunks;
        if (adding) {
            cr_expect_gt(r.done, before, "query %d did not finish in the next step", q);
            q++;
        }
        cr_assert_lt(steps, 1000);
    }
    cr_expect_eq(r.done, n);
    cr_expect_eq(r.gone, 0);
    /* first come first served among documents: the oldest takes what the queries leave, the next
     * is admitted into the room its last chunk leaves (two documents' chunks in one step) */
    cr_expect_eq(max_chunks, 2, "at most %d documents' chunks in a step", max_chunks);
    cr_expect_gt(max_used, 0);
    cr_expect_eq(qe_kv_pool_used_tokens(e), 0, "pages held after the documents finished");
    for (int s = 0; s < n; s++)
        cr_expect(memcmp(alone + (size_t)s * D, r.out + (size_t)s * D, sizeof(float) * D) == 0,
                  "sequence %d (%d tokens): mixed differs from alone", s, lens[s]);
    /* the same through one qe_embed_ids call */
    float *one_call = malloc(sizeof(float) * (size_t)n * D);
    cr_assert_eq(qe_embed_ids(e, (const int32_t *const *)ids, lens, n, 0, one_call), QE_OK);
    cr_expect(memcmp(alone, one_call, sizeof(float) * (size_t)n * D) == 0,
              "one call differs from sequences alone");
    /* a document dropped mid-way gives its pages back before the next step runs */
    cr_assert_eq(qe_sched_add(sc, ids[0], lens[0], (void *)(intptr_t)0), QE_OK);
    cr_assert_eq(qe_sched_step(sc, &h, &st), QE_OK);
    cr_expect_gt(st.kv_used_tokens, 0);
    qe_sched_hooks drop = h;
    drop.drop = drop_everything;
    cr_assert_eq(qe_sched_step(sc, &drop, &st), QE_OK);
    cr_expect_eq(st.seqs, 0);
    cr_expect_eq(st.kv_used_tokens, 0, "pages held after the drop");
    cr_expect_eq(r.gone, 1, "the dropped document was not reported");
    qe_sched_close(sc, &h);
    /* too long for a step and for the pool: refused, naming the flag */
    int32_t *huge = calloc(2000, sizeof(int32_t));
    const int huge_len = 2000;
    qe_status s = qe_embed_ids(e, (const int32_t *const *)&huge, &huge_len, 1, 0, one_call);
    cr_expect_eq(s, QE_ERR_TOO_LONG, "got %s", qe_status_name(s));
    cr_expect(strstr(qe_last_error(e), "--kv-pool-tokens"), "message: %s", qe_last_error(e));
    free(huge), free(one_call), free(r.out), free(alone);
    for (int s2 = 0; s2 < n; s2++)
        free(ids[s2]);
    qe_close(e);
}
