/* test_tp.c — tensor parallelism on the CPU backend (issue 14, part 3): the layer split of
 * tp_split.h run as N in-process ranks whose partial updates are summed, against TP = 1: the
 * residual stream after every layer within 1e-5 and the vectors at cosine >= 0.99999, for
 * N = 2, 4, 8, RoPE and ALiBi, whole and in chunks through the paged pool; the tiny fixture's
 * Hugging Face goldens at TP = 2; and the refusals (a split that does not divide the heads, TP on
 * CUDA without a GPU or NCCL). */
#include <cjson/cJSON.h>
#include <math.h>

#include "qembed.h"
#include "qembed_debug.h"
#include "test_models.h"
#include "test_util.h"

static qe_engine *open_tp(const char *dir, int tp, int budget) {
    qe_options o = {.model_dir = dir, .threads = 2, .max_batch_tokens = budget};
    o.tensor_parallel = tp;
    qe_engine *e = NULL;
    char err[512];
    cr_assert_eq(qe_open(&o, &e, err, sizeof err), QE_OK, "tp %d: %s", tp, err);
    return e;
}

static int32_t *ids_of_len(int n, uint32_t seed, int vocab) {
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n);
    for (int i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        ids[i] = (int32_t)(seed % (uint32_t)vocab);
    }
    return ids;
}

/* The largest |a - b| relative to max(1, |b|) over n values. */
static double worst_rel(const float *a, const float *b, size_t n) {
    double w = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - b[i]) / fmax(1.0, fabs((double)b[i]));
        if (d > w) w = d;
    }
    return w;
}

/* TP = n against TP = 1 on one model: every layer's residual stream of a sequence, and the
 * vectors of a packed batch (a long sequence among them in chunks when budget is small). */
static void against_one_rank(const char *dir, int n, int budget, const char *what) {
    qe_engine *one = open_tp(dir, 1, budget), *tp = open_tp(dir, n, budget);
    const int H = qe_dim(one), L = 40, layers = 2;
    int32_t *ids = ids_of_len(L, 7, 1000);
    float *a = malloc(sizeof(float) * (size_t)L * H), *b = malloc(sizeof(float) * (size_t)L * H);
    for (int l = 1; l <= layers; l++) {
        cr_assert_eq(qe_debug_residual(one, ids, L, l, a), QE_OK, "%s", qe_last_error(one));
        cr_assert_eq(qe_debug_residual(tp, ids, L, l, b), QE_OK, "%s", qe_last_error(tp));
        const double w = worst_rel(b, a, (size_t)L * H);
        cr_expect_leq(w, 1e-5, "%s, tp %d: residual after layer %d differs by %.2e", what, n, l, w);
    }
    const int lens[] = {1, 17, 150, 33};
    enum { N = 4 };
    int32_t *seqs[N];
    for (int i = 0; i < N; i++)
        seqs[i] = ids_of_len(lens[i], 100u + (uint32_t)i, 1000);
    float *va = malloc(sizeof(float) * N * (size_t)H), *vb = malloc(sizeof(float) * N * (size_t)H);
    cr_assert_eq(qe_embed_ids(one, (const int32_t *const *)seqs, lens, N, 0, va), QE_OK);
    cr_assert_eq(qe_embed_ids(tp, (const int32_t *const *)seqs, lens, N, 0, vb), QE_OK, "%s",
                 qe_last_error(tp));
    double worst = 1;
    for (int i = 0; i < N; i++) {
        const double cos = tu_cosine_ff(vb + (size_t)i * H, va + (size_t)i * H, H);
        worst = cos < worst ? cos : worst;
        cr_expect_geq(cos, 0.99999, "%s, tp %d, sequence %d (%d tokens): cosine %.8f", what, n, i,
                      lens[i], cos);
    }
    cr_log_info("%s, tp %d, budget %d: worst cosine %.9f", what, n, budget, worst);
    for (int i = 0; i < N; i++)
        free(seqs[i]);
    free(ids), free(a), free(b), free(va), free(vb);
    qe_close(tp), qe_close(one);
}

/* 16 query heads over 8 kv heads, an intermediate that 4 and 8 split unevenly (198). */
static const tu_geometry SPLITTABLE = {1000, 64, 198, 2, 16, 8};

Test(tp, rope_2_4_8_equal_one_rank, .timeout = 600) {
    char dir[1100];
    tu_make_model(dir, sizeof dir, "tp-rope", SPLITTABLE, ST_BF16, 0, 3);
    for (int n = 2; n <= 8; n *= 2) {
        against_one_rank(dir, n, 0, "rope, whole");
        against_one_rank(dir, n, 64, "rope, chunked"); /* the 150-token one through the pool */
    }
}

Test(tp, alibi_2_and_8_equal_one_rank, .timeout = 600) {
    char dir[1100];
    tu_make_model_with(dir, sizeof dir, "tp-alibi", SPLITTABLE, ST_BF16, 0, 4, 1);
    against_one_rank(dir, 2, 0, "alibi, whole");
    against_one_rank(dir, 8, 64, "alibi, chunked");
}

/* The Hugging Face goldens of the tiny fixture (4 heads over 2 kv heads) at TP = 2. */
Test(tp, tiny_goldens_at_two_ranks, .timeout = 300) {
    SKIP_UNLESS_EXISTS(TINY_MODEL "/golden.json");
    size_t len = 0;
    char *text = tu_read_file(TINY_MODEL "/golden.json", &len);
    cJSON *g = cJSON_ParseWithLength(text, len);
    free(text);
    qe_engine *e = open_tp(TINY_MODEL, 2, 0);
    const int D = qe_dim(e);
    float *v = malloc(sizeof(float) * (size_t)D);
    double *want = malloc(sizeof(double) * (size_t)D);
    int n = 0;
    for (const cJSON *c = cJSON_GetObjectItem(g, "cases")->child; c; c = c->next, n++) {
        const cJSON *ia = cJSON_GetObjectItem(c, "ids"), *ea = cJSON_GetObjectItem(c, "embedding");
        int L = cJSON_GetArraySize(ia), k = 0;
        cr_assert_eq(cJSON_GetArraySize(ea), D);
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)L);
        for (const cJSON *x = ia->child; x; x = x->next)
            ids[k++] = (int32_t)x->valuedouble;
        k = 0;
        for (const cJSON *x = ea->child; x; x = x->next)
            want[k++] = x->valuedouble;
        const int32_t *p = ids;
        cr_assert_eq(qe_embed_ids(e, &p, &L, 1, 0, v), QE_OK, "%s", qe_last_error(e));
        const double cos = tu_cosine(v, want, D);
        cr_expect_geq(cos, 0.99999, "golden case %d (%d tokens): cosine %.7f", n, L, cos);
        free(ids);
    }
    cr_expect_eq(n, 11);
    free(v), free(want);
    qe_close(e);
    cJSON_Delete(g);
}

Test(tp, splits_that_cannot_be_made_are_refused) {
    char dir[1100], err[512];
    tu_make_model(dir, sizeof dir, "tp-refuse", SPLITTABLE, ST_BF16, 0, 5);
    qe_options o = {.model_dir = dir, .tensor_parallel = 3};
    qe_engine *e = NULL;
    cr_expect_eq(qe_open(&o, &e, err, sizeof err), QE_ERR_ARG);
    cr_expect(strstr(err, "valid: 1, 2, 4, 8"), "%s", err);
    o.tensor_parallel = 16; /* divides the 16 query heads, not the 8 kv heads */
    cr_expect_eq(qe_open(&o, &e, err, sizeof err), QE_ERR_ARG);
    /* on CUDA the ranks run over NCCL (tests/test_cuda_emu.c); this model's intermediate (198)
     * gives ranks widths the CUDA GEMMs cannot take, which is said before any device is asked */
    o.tensor_parallel = 2, o.backend = QE_BACKEND_CUDA;
    const qe_status s = qe_open(&o, &e, err, sizeof err);
#if !defined(QE_HAVE_CUDA)
    cr_expect_eq(s, QE_ERR_UNSUPPORTED);
    cr_expect(strstr(err, "no CUDA backend"), "%s", err);
#elif !defined(QE_HAVE_NCCL)
    cr_expect_eq(s, QE_ERR_UNSUPPORTED);
    cr_expect(strstr(err, "needs NCCL"), "%s", err);
#else
    cr_expect_eq(s, QE_ERR_UNSUPPORTED, "%s: %s", qe_status_name(s), err);
    cr_expect(strstr(err, "99 intermediate columns of 198") && strstr(err, "multiple of 8"), "%s",
              err);
#endif
    cr_expect_null(e);
}
