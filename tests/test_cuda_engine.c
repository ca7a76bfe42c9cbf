/* test_cuda_engine.c — the whole CUDA forward: against the CPU backend (the fp32 oracle) on
 * `qembed make-random` models of several geometries and dtypes, against the Hugging Face goldens
 * of the tiny fixture (cosine >= 0.999 per sequence, the GPU bf16 tolerance of
 * fixtures/README.md), the layer-0 residual, batching invariance, the last-layer shortcut against
 * the full last layer, paged chunks (sequences longer than half the token budget) against the CPU
 * backend and against the same sequences run whole, the error paths, two engines sharing a GPU,
 * and tensor parallelism (one rank through NCCL against the plain path; 2 and 4 ranks where the
 * machine has the GPUs). Skips cleanly without a GPU. */
#include <cjson/cJSON.h>
#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdint.h>

#include "runtime/qembed.h"
#include "runtime/qembed_debug.h"
#include "gpu_util.h"
#include "test_models.h"
#include "test_util.h"

#define GPU_COS 0.999         /* GPU bf16 path vs fp32/f64 references (fixtures/README.md) */
#define INVARIANCE_COS 0.9995 /* the same GPU path, differently batched */

/* Overridable for runs from a packed copy on the GPU machine, where the build-time paths differ:
 * QE_QEMBED = the qembed binary, QE_TINY_MODEL = the tiny fixture folder. */
static const char *qembed_bin(void) {
    const char *e = getenv("QE_QEMBED");
    return e && *e ? e : QE_BINARY_DIR "/qembed";
}
static const char *tiny_model(void) {
    const char *e = getenv("QE_TINY_MODEL");
    return e && *e ? e : TINY_MODEL;
}

#define SKIP_UNLESS_TINY(file)                                                                     \
    do {                                                                                           \
        char p_[2048];                                                                             \
        snprintf(p_, sizeof p_, "%s/%s", tiny_model(), file);                                      \
        if (!tu_exists(p_)) cr_skip_test("fixture %s absent (set QE_TINY_MODEL)", p_);             \
    } while (0)

static uint64_t rng_state;
static uint32_t rng_u32(void) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

static qe_engine *open_engine(const char *dir, qe_backend be, int max_tokens) {
    qe_options o;
    memset(&o, 0, sizeof o);
    o.model_dir = dir;
    o.backend = be;
    o.max_batch_tokens = max_tokens;
    qe_engine *e = NULL;
    char err[512] = "";
    qe_status s = qe_open(&o, &e, err, sizeof err);
    cr_assert_eq(s, QE_OK, "qe_open(%s, %s): %s", dir, be == QE_BACKEND_CUDA ? "cuda" : "cpu", err);
    return e;
}

/* Random id sequences with the given lengths (ids < vocab). */
static int32_t **random_ids(const int *lens, int n, int vocab, uint64_t seed) {
    rng_state = seed;
    int32_t **ids = malloc(sizeof *ids * (size_t)n);
    for (int i = 0; i < n; i++) {
        ids[i] = malloc(sizeof(int32_t) * (size_t)lens[i]);
        for (int t = 0; t < lens[i]; t++)
            ids[i][t] = (int32_t)(rng_u32() % (uint32_t)vocab);
    }
    return ids;
}
static void free_ids(int32_t **ids, int n) {
    for (int i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
}

static float *embed(qe_engine *e, int32_t **ids, const int *lens, int n, int dims) {
    const int d = dims ? dims : qe_dim(e);
    float *out = malloc(sizeof(float) * (size_t)n * d);
    for (size_t i = 0; i < (size_t)n * d; i++)
        out[i] = NAN; /* poison */
    qe_status s = qe_embed_ids(e, (const int32_t *const *)ids, lens, n, dims, out);
    cr_assert_eq(s, QE_OK, "qe_embed_ids (%s): %s", qe_backend_name(e), qe_last_error(e));
    return out;
}

/* Worst per-row cosine between two [n, d] sets; NaN counts as -1. */
static double worst_cosine(const float *a, const float *b, int n, int d, int *worst_row) {
    double worst = 2;
    for (int i = 0; i < n; i++) {
        double c = tu_cosine_ff(a + (size_t)i * d, b + (size_t)i * d, d);
        if (isnan(c)) c = -1;
        if (c < worst) worst = c, *worst_row = i;
    }
    return worst;
}

static const int LENS[] = {1, 7, 113, 129, 300, 64, 2};
#define N_LENS 7

/* CUDA vs CPU on one random model, full width and a Matryoshka cut. */
static void cuda_vs_cpu(const char *dir, const char *what) {
    qe_engine *cpu = open_engine(dir, QE_BACKEND_CPU, 0);
    qe_engine *gpu = open_engine(dir, QE_BACKEND_CUDA, 0);
    int32_t **ids = random_ids(LENS, N_LENS, qe_vocab_size(cpu), 42);
    const int dims_list[] = {0, 32};
    for (int di = 0; di < 2; di++) {
        const int d = dims_list[di] ? dims_list[di] : qe_dim(cpu);
        float *a = embed(cpu, ids, LENS, N_LENS, dims_list[di]);
        float *b = embed(gpu, ids, LENS, N_LENS, dims_list[di]);
        int row = 0;
        double w = worst_cosine(a, b, N_LENS, d, &row);
        cr_log_info("%s dims %d: worst cosine cuda vs cpu %.6f (sequence length %d)", what, d, w,
                    LENS[row]);
        cr_expect(w >= GPU_COS, "%s dims %d: cosine %.6f < %.3f on the sequence of length %d", what,
                  d, w, GPU_COS, LENS[row]);
        for (int i = 0; i < N_LENS; i++) {
            double nn = 0;
            for (int j = 0; j < d; j++)
                nn += (double)b[(size_t)i * d + j] * b[(size_t)i * d + j];
            cr_expect(fabs(sqrt(nn) - 1.0) < 1e-4, "%s: row %d norm %.6f", what, i, sqrt(nn));
        }
        free(a), free(b);
    }
    free_ids(ids, N_LENS);
    qe_close(gpu);
    qe_close(cpu);
}

Test(cuda_engine, vs_cpu_gqa1_bf16, .timeout = 600) {
    require_gpu("CUDA engine test");
    char dir[1100];
    tu_make_model(dir, sizeof dir, "cuda-g1", (tu_geometry){4096, 256, 512, 2, 4, 4}, ST_BF16, 0,
                  11);
    cuda_vs_cpu(dir, "hidden 256, 4/4 heads, bf16");
}

Test(cuda_engine, vs_cpu_gqa2_f16, .timeout = 600) {
    require_gpu("CUDA engine test");
    char dir[1100];
    tu_make_model(dir, sizeof dir, "cuda-g2", (tu_geometry){4096, 128, 384, 3, 4, 2}, ST_F16, 1,
                  12);
    cuda_vs_cpu(dir, "hidden 128, 4/2 heads, f16, prefixed keys");
}

Test(cuda_engine, vs_cpu_gqa4_f32, .timeout = 600) {
    require_gpu("CUDA engine test");
    char dir[1100];
    tu_make_model(dir, sizeof dir, "cuda-g4", (tu_geometry){4096, 512, 1024, 2, 8, 2}, ST_F32, 0,
                  13);
    cuda_vs_cpu(dir, "hidden 512, 8/2 heads, f32");
}

Test(cuda_engine, vs_cpu_tiny_preset, .timeout = 600) {
    require_gpu("CUDA engine test");
    char dir[1100], cmd[2400];
    tu_scratch_dir(dir, sizeof dir, "cuda-tiny");
    snprintf(cmd, sizeof cmd, "'%s' make-random --preset tiny --out '%s' --seed 5 --quiet",
             qembed_bin(), dir);
    cr_assert_eq(system(cmd), 0, "failed: %s", cmd);
    cuda_vs_cpu(dir, "tiny preset");
}

/* ------------------------------------------------------------------ goldens */

static cJSON *load_golden(void) {
    size_t len = 0;
    char path[2048];
    snprintf(path, sizeof path, "%s/golden.json", tiny_model());
    char *text = tu_read_file(path, &len);
    cr_assert(text != NULL);
    cJSON *g = cJSON_ParseWithLength(text, len);
    free(text);
    cr_assert(g != NULL, "golden.json does not parse");
    return g;
}

static int32_t *json_ids(const cJSON *arr, int *n) {
    *n = cJSON_GetArraySize(arr);
    int32_t *v = malloc(sizeof(int32_t) * (size_t)(*n ? *n : 1));
    int i = 0;
    for (const cJSON *x = arr->child; x; x = x->next)
        v[i++] = (int32_t)x->valuedouble;
    return v;
}
static double *json_doubles(const cJSON *arr, int *n) {
    *n = cJSON_GetArraySize(arr);
    double *v = malloc(sizeof(double) * (size_t)(*n ? *n : 1));
    int i = 0;
    for (const cJSON *x = arr->child; x; x = x->next)
        v[i++] = x->valuedouble;
    return v;
}

/* Every golden case, one at a time and all packed in one batch. */
Test(cuda_engine, tiny_goldens, .timeout = 600) {
    require_gpu("CUDA engine test");
    SKIP_UNLESS_TINY("golden.json");
    cJSON *g = load_golden();
    qe_engine *e = open_engine(tiny_model(), QE_BACKEND_CUDA, 0);
    const cJSON *cases = cJSON_GetObjectItem(g, "cases");
    const int n = cJSON_GetArraySize(cases), D = qe_dim(e);
    int32_t **ids = malloc(sizeof *ids * (size_t)n);
    int *lens = malloc(sizeof(int) * (size_t)n);
    double **want = malloc(sizeof *want * (size_t)n);
    int i = 0;
    for (const cJSON *c = cases->child; c; c = c->next, i++) {
        int dl = 0;
        ids[i] = json_ids(cJSON_GetObjectItem(c, "ids"), &lens[i]);
        want[i] = json_doubles(cJSON_GetObjectItem(c, "embedding"), &dl);
        cr_assert_eq(dl, D, "golden width %d vs model %d", dl, D);
    }
    double worst = 2;
    for (i = 0; i < n; i++) {
        float *one = embed(e, &ids[i], &lens[i], 1, 0);
        double c = tu_cosine(one, want[i], D);
        if (isnan(c)) c = -1;
        if (c < worst) worst = c;
        cr_expect(c >= GPU_COS, "golden case of length %d: cosine %.6f < %.3f", lens[i], c,
                  GPU_COS);
        free(one);
    }
    float *all = embed(e, ids, lens, n, 0);
    for (i = 0; i < n; i++) {
        double c = tu_cosine(all + (size_t)i * D, want[i], D);
        cr_expect(c >= GPU_COS, "packed golden case %d (length %d): cosine %.6f", i, lens[i], c);
    }
    cr_log_info("cuda goldens: %d cases, worst cosine %.6f", n, worst);
    free(all);
    for (i = 0; i < n; i++)
        free(ids[i]), free(want[i]);
    free(ids), free(lens), free(want);
    qe_close(e);
    cJSON_Delete(g);
}

Test(cuda_engine, tiny_layer0_residual) {
    require_gpu("CUDA engine test");
    SKIP_UNLESS_TINY("golden.json");
    cJSON *g = load_golden();
    const cJSON *dbg = cJSON_GetObjectItem(g, "debug");
    int len = 0;
    int32_t *ids = json_ids(cJSON_GetObjectItem(dbg, "ids"), &len);
    qe_engine *e = open_engine(tiny_model(), QE_BACKEND_CUDA, 0);
    const int D = qe_dim(e);
    float *res = malloc(sizeof(float) * (size_t)len * D);
    qe_status s = qe_debug_residual(e, ids, len, 1, res);
    cr_assert_eq(s, QE_OK, "qe_debug_residual: %s", qe_last_error(e));
    int t = 0;
    for (const cJSON *row = cJSON_GetObjectItem(dbg, "layer0_out")->child; row;
         row = row->next, t++) {
        int dl = 0;
        double *want = json_doubles(row, &dl);
        cr_assert_eq(dl, D);
        double c = tu_cosine(res + (size_t)t * D, want, D);
        cr_expect(c >= GPU_COS, "layer-0 residual row %d: cosine %.6f", t, c);
        free(want);
    }
    cr_expect_eq(t, len);
    free(res), free(ids);
    qe_close(e);
    cJSON_Delete(g);
}

/* ------------------------------------------------------------------ invariance */

/* Alone, packed together, and split across many steps by a small token budget: the same vectors.
 * Also the last-layer shortcut against the full last layer (QE_CUDA_FULL_LAST_LAYER=1). */
Test(cuda_engine, batching_invariance_and_shortcut, .timeout = 600) {
    require_gpu("CUDA engine test");
    char dir[1100];
    tu_make_model(dir, sizeof dir, "cuda-inv", (tu_geometry){4096, 256, 512, 2, 8, 2}, ST_BF16, 0,
                  21);
    const int lens[] = {300, 1, 77, 129, 5, 250, 64};
    const int n = 7;
    qe_engine *big = open_engine(dir, QE_BACKEND_CUDA, 0);
    qe_engine *small = open_engine(dir, QE_BACKEND_CUDA, 320); /* forces several steps */
    const int D = qe_dim(big);
    int32_t **ids = random_ids(lens, n, qe_vocab_size(big), 77);
    float *packed = embed(big, ids, lens, n, 0);
    float *stepped = embed(small, ids, lens, n, 0);
    int row = 0;
    double w = worst_cosine(packed, stepped, n, D, &row);
    cr_expect(w >= INVARIANCE_COS, "packed vs stepped: cosine %.6f at sequence %d", w, row);
    for (int i = 0; i < n; i++) {
        float *one = embed(big, &ids[i], &lens[i], 1, 0);
        double c = tu_cosine_ff(one, packed + (size_t)i * D, D);
        cr_expect(c >= INVARIANCE_COS, "alone vs packed, sequence %d (len %d): cosine %.6f", i,
                  lens[i], c);
        free(one);
    }
    setenv("QE_CUDA_FULL_LAST_LAYER", "1", 1);
    qe_engine *full = open_engine(dir, QE_BACKEND_CUDA, 0);
    unsetenv("QE_CUDA_FULL_LAST_LAYER");
    float *f = embed(full, ids, lens, n, 0);
    w = worst_cosine(packed, f, n, D, &row);
    cr_expect(w >= INVARIANCE_COS, "shortcut vs full last layer: cosine %.6f at sequence %d", w,
              row);
    qe_engine *cpu = open_engine(dir, QE_BACKEND_CPU, 0);
    float *c = embed(cpu, ids, lens, n, 0);
    w = worst_cosine(c, f, n, D, &row);
    cr_expect(w >= GPU_COS, "full last layer vs cpu: cosine %.6f at sequence %d", w, row);
    free(packed), free(stepped), free(f), free(c);
    free_ids(ids, n);
    qe_close(cpu), qe_close(full), qe_close(small), qe_close(big);
}

/* CUDA graphs for small steps (runtime/cuda_graph.c) against the same engine with graphs off
 * (QE_CUDA_GRAPHS=0), and against the CPU backend: shapes that pad (filler tokens, empty slots),
 * a replay with other ids, many small steps enqueued ahead under a 40-token budget (the two-slot
 * pipeline, each step a graph). Cosines, not bits: cuBLASLt may tile a padded m differently. */
Test(cuda_engine, graphs_and_pipelined_steps_match_eager, .timeout = 600) {
    require_gpu("CUDA engine test");
    char dir[1100];
    tu_make_model(dir, sizeof dir, "cuda-graph", (tu_geometry){4096, 256, 512, 2, 8, 2}, ST_BF16, 0,
                  23);
    setenv("QE_CUDA_GRAPHS", "0", 1);
    qe_engine *eager = open_engine(dir, QE_BACKEND_CUDA, 0);
    unsetenv("QE_CUDA_GRAPHS");
    qe_engine *graph = open_engine(dir, QE_BACKEND_CUDA, 0);
    qe_engine *piped = open_engine(dir, QE_BACKEND_CUDA, 40);
    qe_engine *cpu = open_engine(dir, QE_BACKEND_CPU, 0);
    const int D = qe_dim(cpu);
    static const struct {
        int n, lens[4];
    } batches[] = {{1, {24}},  {1, {24}},  {3, {5, 9, 3}}, {3, {130, 1, 60}}, {4, {16, 16, 16, 16}},
                   {1, {300}}, {2, {1, 1}}};
    for (size_t bi = 0; bi < sizeof batches / sizeof *batches; bi++) {
        const int n = batches[bi].n;
        int32_t **ids = random_ids(batches[bi].lens, n, qe_vocab_size(cpu), 500 + bi);
        float *a = embed(eager, ids, batches[bi].lens, n, 0);
        float *b = embed(graph, ids, batches[bi].lens, n, 0);
        float *c = embed(cpu, ids, batches[bi].lens, n, 0);
        int row = 0;
        double w = worst_cosine(a, b, n, D, &row), v = worst_cosine(c, b, n, D, &row);
        cr_log_info("graphs, batch %zu: vs eager %.6f, vs cpu %.6f", bi, w, v);
        cr_expect(w >= INVARIANCE_COS, "batch %zu: graph vs eager cosine %.6f", bi, w);
        cr_expect(v >= GPU_COS, "batch %zu: graph vs cpu cosine %.6f", bi, v);
        free(a), free(b), free(c);
        free_ids(ids, n);
    }
    const int lens[] = {30, 31, 12, 9, 7, 33, 40, 1, 17, 28, 3};
    const int n = 11;
    int32_t **ids = random_ids(lens, n, qe_vocab_size(cpu), 99);
    float *a = embed(eager, ids, lens, n, 0), *b = embed(piped, ids, lens, n, 0);
    int row = 0;
    double w = worst_cosine(a, b, n, D, &row);
    cr_expect(w >= INVARIANCE_COS, "pipelined 40-token steps vs one step: cosine %.6f at %d", w,
              row);
    free(a), free(b);
    free_ids(ids, n);
    qe_close(cpu), qe_close(piped), qe_close(graph), qe_close(eager);
}

/* ------------------------------------------------------------------ chunked prefill */

/* Sequences longer than half the token budget run in chunks through the paged K/V pool:
 * alone and in a batch mixing short and long ones, against the CPU backend (GPU_COS) and against
 * the same sequences run whole under the default budget (INVARIANCE_COS: the GEMMs tile
 * differently with m, so not bitwise). Budget 100 puts chunk boundaries off the attention tiles;
 * budget 1024 gives multi-tile queries against several thousand keys. */
static void chunked_vs_cpu(const char *dir, const char *what, int budget, const int *lens, int n) {
    qe_engine *cpu = open_engine(dir, QE_BACKEND_CPU, 0);
    qe_engine *whole = open_engine(dir, QE_BACKEND_CUDA, 0);
    qe_engine *chunk = open_engine(dir, QE_BACKEND_CUDA, budget);
    const int D = qe_dim(cpu);
    int32_t **ids = random_ids(lens, n, qe_vocab_size(cpu), 1000 + (uint64_t)budget);
    const size_t before = qe_device_bytes(chunk);
    for (int i = 0; i < n; i++) {
        float *a = embed(cpu, &ids[i], &lens[i], 1, 0), *b = embed(chunk, &ids[i], &lens[i], 1, 0),
              *c = embed(whole, &ids[i], &lens[i], 1, 0);
        double w = tu_cosine_ff(a, b, D), v = tu_cosine_ff(b, c, D);
        if (isnan(w)) w = -1;
        if (isnan(v)) v = -1;
        cr_log_info("%s: %d tokens in chunks of %d: cosine vs cpu %.6f, vs whole %.6f", what,
                    lens[i], budget, w, v);
        cr_expect(w >= GPU_COS, "%s: %d tokens in chunks of %d vs cpu: cosine %.6f", what, lens[i],
                  budget, w);
        cr_expect(v >= INVARIANCE_COS, "%s: %d tokens chunked (%d) vs whole: cosine %.6f", what,
                  lens[i], budget, v);
        free(a), free(b), free(c);
    }
    /* the pool was made at open: the chunks allocated nothing */
    cr_expect(qe_kv_pool_tokens(chunk) > 0, "%s: no K/V pool", what);
    cr_expect_eq(qe_device_bytes(chunk), before, "%s: device memory grew during the chunks", what);
    for (int di = 0; di < 2; di++) {
        const int dims = di ? 32 : 0, d = dims ? dims : D;
        float *a = embed(cpu, ids, lens, n, dims), *b = embed(chunk, ids, lens, n, dims);
        int row = 0;
        double w = worst_cosine(a, b, n, d, &row);
        cr_expect(w >= GPU_COS,
                  "%s: mixed batch dims %d (chunks of %d) vs cpu: cosine %.6f at "
                  "length %d",
                  what, d, budget, w, lens[row]);
        free(a), free(b);
    }
    free_ids(ids, n);
    qe_close(chunk), qe_close(whole), qe_close(cpu);
}

Test(cuda_engine, chunked_prefill_matches_cpu, .timeout = 900) {
    require_gpu("CUDA engine test");
    char dir[1100];
    const int small[] = {101, 3, 250, 100, 1, 777, 64};
    const int large[] = {1025, 7, 3000, 2048, 300};
    tu_make_model(dir, sizeof dir, "cuda-ch2", (tu_geometry){4096, 128, 384, 3, 4, 2}, ST_F16, 0,
                  31);
    chunked_vs_cpu(dir, "hidden 128, 4/2 heads, f16", 100, small, 7);
    tu_make_model(dir, sizeof dir, "cuda-ch4", (tu_geometry){4096, 256, 512, 2, 8, 2}, ST_BF16, 0,
                  32);
    chunked_vs_cpu(dir, "hidden 256, 8/2 heads, bf16", 100, small, 7);
    chunked_vs_cpu(dir, "hidden 256, 8/2 heads, bf16", 1024, large, 5);
    tu_make_model(dir, sizeof dir, "cuda-ch1", (tu_geometry){4096, 256, 512, 2, 4, 4}, ST_BF16, 0,
                  33);
    chunked_vs_cpu(dir, "hidden 256, 4/4 heads, bf16", 1024, large, 5);
}

/* An ALiBi model (the config of make-random --alibi; 12 heads: slopes of a head count that is
 * not a power of two): whole, and in 100-token chunks through the K/V pool. */
Test(cuda_engine, alibi_vs_cpu_whole_and_chunked, .timeout = 900) {
    require_gpu("CUDA engine test");
    char dir[1100];
    const int lens[] = {101, 3, 250, 100, 1, 777, 64};
    tu_make_model_with(dir, sizeof dir, "cuda-alibi", (tu_geometry){4096, 256, 512, 2, 12, 4},
                       ST_BF16, 0, 34, 1);
    cuda_vs_cpu(dir, "ALiBi, hidden 256, 12/4 heads, bf16");
    chunked_vs_cpu(dir, "ALiBi, hidden 256, 12/4 heads, bf16", 100, lens, 7);
}

/* ------------------------------------------------------------------ errors */

/* A sequence longer than the budget is no longer an error; the engine keeps working after it. */
Test(cuda_engine, sequence_longer_than_budget_runs_chunked) {
    require_gpu("CUDA engine test");
    SKIP_UNLESS_TINY("config.json");
    qe_engine *e = open_engine(tiny_model(), QE_BACKEND_CUDA, 64);
    qe_engine *cpu = open_engine(tiny_model(), QE_BACKEND_CPU, 0);
    const int lens[] = {100};
    int32_t **ids = random_ids(lens, 1, 1000, 3);
    float *out = embed(e, ids, lens, 1, 0), *want = embed(cpu, ids, lens, 1, 0);
    double c = tu_cosine_ff(out, want, qe_dim(e));
    cr_expect(c >= GPU_COS, "100 tokens in chunks of 64 vs cpu: cosine %.6f", c);
    const int ok_lens[] = {60};
    int32_t **ok_ids = random_ids(ok_lens, 1, 1000, 4);
    cr_expect_eq(qe_embed_ids(e, (const int32_t *const *)ok_ids, ok_lens, 1, 0, out), QE_OK, "%s",
                 qe_last_error(e));
    free(out), free(want);
    free_ids(ids, 1), free_ids(ok_ids, 1);
    qe_close(cpu), qe_close(e);
}

/* A Qwen3-Reranker (tied and untied output rows, GQA 4:1) on the GPU: its scores follow the CPU's
 * within 2e-3, whole and in 64-token chunks (issue 12's CUDA tolerance). */
Test(cuda_engine, reranker_scores_match_cpu, .timeout = 600) {
    require_gpu("CUDA reranker test");
    for (int tied = 0; tied <= 1; tied++) {
        char dir[1100], err[512];
        tu_scratch_dir(dir, sizeof dir, tied ? "cuda-rr-tied" : "cuda-rr-untied");
        random_model_opts o;
        memset(&o, 0, sizeof o);
        cr_assert_eq(random_model_preset("tiny", &o.cfg), 0);
        o.cfg.vocab_size = 2048; /* the demo tokenizer's "yes" and "no" fall inside */
        o.cfg.hidden_size = 256, o.cfg.intermediate_size = 512, o.cfg.num_layers = 2;
        o.cfg.num_heads = 8, o.cfg.num_kv_heads = 2, o.cfg.tie_word_embeddings = tied;
        o.out_dir = dir, o.seed = 13, o.dtype = ST_BF16, o.reranker = 1, o.quiet = 1;
        cr_assert_eq(random_model_write(&o, err, sizeof err), 0, "%s", err);
        qe_engine *cpu = open_engine(dir, QE_BACKEND_CPU, 0);
        qe_engine *gpu = open_engine(dir, QE_BACKEND_CUDA, 0);
        qe_engine *chunked = open_engine(dir, QE_BACKEND_CUDA, 64);
        enum { N = 5 };
        const int lens[N] = {1, 9, 100, 257, 31};
        int32_t **ids = random_ids(lens, N, 2048, 77 + (uint64_t)tied);
        float a[N], b[N], c[N];
        cr_assert_eq(qe_rerank_ids(cpu, (const int32_t *const *)ids, lens, N, a), QE_OK);
        cr_assert_eq(qe_rerank_ids(gpu, (const int32_t *const *)ids, lens, N, b), QE_OK, "%s",
                     qe_last_error(gpu));
        cr_assert_eq(qe_rerank_ids(chunked, (const int32_t *const *)ids, lens, N, c), QE_OK, "%s",
                     qe_last_error(chunked));
        for (int i = 0; i < N; i++) {
            cr_log_info("reranker (%s), %d tokens: cpu %.6f, gpu %.6f, chunked %.6f",
                        tied ? "tied" : "untied", lens[i], a[i], b[i], c[i]);
            cr_expect_leq(fabsf(a[i] - b[i]), 2e-3f, "whole, sequence %d", i);
            cr_expect_leq(fabsf(a[i] - c[i]), 2e-3f, "chunked, sequence %d", i);
        }
        free_ids(ids, N);
        qe_close(chunked), qe_close(gpu), qe_close(cpu);
    }
}

/* Two engines on one GPU (qembed serve --devices 0,0), driven from two threads at once: each
 * gives the CPU's vectors (issue 14: engines sharing a GPU serve correctly). */
typedef struct twin_run {
    qe_engine *e;
    int32_t **ids;
    const int *lens;
    int n, rounds;
    float *out;
    qe_status st;
} twin_run;

static void *twin_main(void *p) {
    twin_run *r = p;
    for (int k = 0; k < r->rounds && r->st == QE_OK; k++)
        r->st = qe_embed_ids(r->e, (const int32_t *const *)r->ids, r->lens, r->n, 0, r->out);
    return NULL;
}

Test(cuda_engine, two_engines_share_one_gpu, .timeout = 600) {
    require_gpu("CUDA two-engine test");
    char dir[1100];
    tu_make_model(dir, sizeof dir, "cuda-twin", (tu_geometry){4096, 256, 512, 2, 4, 2}, ST_BF16, 0,
                  17);
    qe_engine *cpu = open_engine(dir, QE_BACKEND_CPU, 0);
    const int lens[] = {7, 300, 64, 1, 129};
    enum { N = 5 };
    int32_t **ids = random_ids(lens, N, 4096, 99);
    float *want = embed(cpu, ids, lens, N, 0);
    const int D = qe_dim(cpu);
    twin_run r[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        r[i] = (twin_run){open_engine(dir, QE_BACKEND_CUDA, 0),  ids,  lens, N, 20,
                          malloc(sizeof(float) * N * (size_t)D), QE_OK};
        cr_assert_eq(pthread_create(&th[i], NULL, twin_main, &r[i]), 0);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        cr_expect_eq(r[i].st, QE_OK, "engine %d: %s", i, qe_last_error(r[i].e));
        int row;
        const double w = worst_cosine(r[i].out, want, N, D, &row);
        cr_expect_geq(w, GPU_COS, "engine %d vs cpu: worst cosine %.6f (row %d)", i, w, row);
        free(r[i].out);
        qe_close(r[i].e);
    }
    free(want);
    free_ids(ids, N);
    qe_close(cpu);
}

/* Tensor parallelism (runtime/cuda_tp.c), as tests/test_cuda_emu.c runs it on the emulator. */
#ifdef QE_HAVE_NCCL
static qe_engine *open_tp(const char *dir, int tp, int max_tokens) {
    qe_options o;
    memset(&o, 0, sizeof o);
    o.model_dir = dir, o.backend = QE_BACKEND_CUDA;
    o.tensor_parallel = tp, o.max_batch_tokens = max_tokens;
    qe_engine *e = NULL;
    char err[512] = "";
    const qe_status s = qe_open(&o, &e, err, sizeof err);
    cr_assert_eq(s, QE_OK, "qe_open(cuda, tp %d): %s", tp, err);
    return e;
}

/* One rank through NCCL (QE_CUDA_TP_NCCL=1) against the plain path on the same GPU: rank 0
 * accumulates as the plain path does and a one-rank all-reduce adds nothing, so the vectors are
 * the same (the same kernels and plans; bitwise equality is logged, cosine asserted), whole, with
 * graphs, and in chunks. */
Test(cuda_engine, tp_one_rank_through_nccl_equals_plain, .timeout = 600) {
    require_gpu("CUDA TP = 1 through NCCL");
    char dir[1100];
    tu_make_model(dir, sizeof dir, "cuda-tp1", (tu_geometry){4096, 256, 512, 2, 4, 2}, ST_BF16, 0,
                  18);
    for (int budget = 0; budget <= 256; budget += 256) {
        qe_engine *plain = open_engine(dir, QE_BACKEND_CUDA, budget);
        setenv("QE_CUDA_TP_NCCL", "1", 1);
        qe_engine *nccl = open_tp(dir, 1, budget);
        unsetenv("QE_CUDA_TP_NCCL");
        int32_t **ids = random_ids(LENS, N_LENS, 4096, 21);
        const int D = qe_dim(plain);
        float *a = embed(plain, ids, LENS, N_LENS, 0), *b = embed(nccl, ids, LENS, N_LENS, 0);
        int row;
        const double w = worst_cosine(b, a, N_LENS, D, &row);
        const int same = memcmp(a, b, sizeof(float) * N_LENS * (size_t)D) == 0;
        cr_log_info("budget %d: one NCCL rank vs plain: worst cosine %.9f, bitwise %s", budget, w,
                    same ? "equal" : "different");
        cr_expect_geq(w, 0.99999, "budget %d: worst cosine %.8f (row %d)", budget, w, row);
        free(a), free(b);
        free_ids(ids, N_LENS);
        qe_close(nccl), qe_close(plain);
    }
}

/* Two or four GPUs: TP = 2 (and 4) against one rank, when the machine has them. */
Test(cuda_engine, tp_ranks_equal_one_rank, .timeout = 600) {
    require_gpu("CUDA TP on several GPUs");
    int n_dev = 0;
    cudaGetDeviceCount(&n_dev);
    if (n_dev < 2) cr_skip_test("%d GPU: tensor parallelism over NCCL needs two or more", n_dev);
    char dir[1100];
    tu_make_model(dir, sizeof dir, "cuda-tp", (tu_geometry){4096, 256, 512, 2, 8, 4}, ST_BF16, 0,
                  19);
    qe_engine *one = open_engine(dir, QE_BACKEND_CUDA, 0);
    int32_t **ids = random_ids(LENS, N_LENS, 4096, 23);
    const int D = qe_dim(one);
    float *want = embed(one, ids, LENS, N_LENS, 0);
    for (int n = 2; n <= 4 && n <= n_dev; n *= 2) {
        qe_engine *tp = open_tp(dir, n, 0);
        float *got = embed(tp, ids, LENS, N_LENS, 0);
        int row;
        const double w = worst_cosine(got, want, N_LENS, D, &row);
        cr_log_info("tp %d: worst cosine vs one rank %.9f", n, w);
        cr_expect_geq(w, 0.99999, "tp %d: worst cosine %.8f (row %d)", n, w, row);
        free(got);
        qe_close(tp);
    }
    free(want);
    free_ids(ids, N_LENS);
    qe_close(one);
}
#endif
