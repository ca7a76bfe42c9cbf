/* test_cuda_emu.c — the CUDA backend end to end WITHOUT a GPU: runtime/backend_cuda.c and
 * cuda_graph.c (weight fusion and upload, arena carving, strides, the per-layer sequence, the
 * last-layer shortcut, step splitting, paged chunks through the K/V pool, pooling, the
 * two-slot pipeline, CUDA graphs for small steps, error paths) running the project's own CUDA
 * kernels on the CPU kernel emulator (tests/emu), with the cuBLASLt stand-in for the GEMMs and
 * host stand-ins for the CUDA runtime (hostsim_runtime.c). "Device" memory is host memory
 * poisoned with NaN at allocation, and the stream is lazy (hostsim.h): work happens only when the
 * host waits, so a host that reuses a staging buffer too early or reads a result before its wait
 * gets wrong numbers here. Checked against the CPU backend, the tiny fixture's goldens, and the
 * backend itself (chunked vs whole, graphs vs eager: bitwise, the kernels being deterministic per
 * row). What it cannot prove: timing, and what the GPU's own rounding does (the emulator sums
 * inside an mma in an order of its choosing). */
#include <cjson/cJSON.h>
#include <cuda_runtime_api.h>
#include <stdint.h>

#include "kernels/kernels.h"
#include "kernels/ref/ref.h"
#include "runtime/qembed.h"
#include "runtime/qembed_debug.h"
#include "hostsim.h"
#include "srv_harness.h"
#include "test_cancel.h"
#include "test_models.h"
#include "test_util.h"
#include "tools/quantize.h"
#include "weights/safetensors.h"

static qe_bf16 tobf(float f) {
    return st_f32_to_bf16(f);
}

/* ================================================================== tests */

#define SIM_COS 0.999 /* the GPU bf16 tolerance: the emulated kernels round like the GPU */

static qe_engine *open_cuda(const char *dir, int max_tokens, qe_status want, char *err, size_t n) {
    qe_options o;
    memset(&o, 0, sizeof o);
    o.model_dir = dir;
    o.backend = QE_BACKEND_CUDA;
    o.max_batch_tokens = max_tokens;
    qe_engine *e = NULL;
    qe_status s = qe_open(&o, &e, err, n);
    cr_assert_eq(s, want, "qe_open(%s, cuda) = %s: %s", dir, qe_status_name(s), err);
    return e;
}
static qe_engine *open_cpu(const char *dir) {
    qe_options o;
    memset(&o, 0, sizeof o);
    o.model_dir = dir;
    o.backend = QE_BACKEND_CPU;
    qe_engine *e = NULL;
    char err[512] = "";
    cr_assert_eq(qe_open(&o, &e, err, sizeof err), QE_OK, "qe_open cpu: %s", err);
    return e;
}

static uint64_t rs;
static int32_t **rand_ids(const int *lens, int n, int vocab) {
    int32_t **ids = malloc(sizeof *ids * (size_t)n);
    for (int i = 0; i < n; i++) {
        ids[i] = malloc(sizeof(int32_t) * (size_t)lens[i]);
        for (int t = 0; t < lens[i]; t++) {
            rs = rs * 6364136223846793005ull + 1442695040888963407ull;
            ids[i][t] = (int32_t)((rs >> 33) % (uint64_t)vocab);
        }
    }
    return ids;
}
static float *run(qe_engine *e, int32_t **ids, const int *lens, int n, int dims) {
    const int d = dims ? dims : qe_dim(e);
    float *out = malloc(sizeof(float) * (size_t)n * d);
    for (size_t i = 0; i < (size_t)n * d; i++)
        out[i] = NAN;
    qe_status s = qe_embed_ids(e, (const int32_t *const *)ids, lens, n, dims, out);
    cr_assert_eq(s, QE_OK, "qe_embed_ids(%s): %s", qe_backend_name(e), qe_last_error(e));
    return out;
}
static double worst_cos(const float *a, const float *b, int n, int d) {
    double w = 2;
    for (int i = 0; i < n; i++) {
        double c = tu_cosine_ff(a + (size_t)i * d, b + (size_t)i * d, d);
        if (isnan(c)) c = -1;
        if (c < w) w = c;
    }
    return w;
}

static const int LENS[] = {1, 7, 113, 129, 40, 2};
#define NL 6

static void sim_vs_cpu(const char *dir, const char *what) {
    char err[512] = "";
    qe_engine *gpu = open_cuda(dir, 0, QE_OK, err, sizeof err);
    qe_engine *cpu = open_cpu(dir);
    rs = 99;
    int32_t **ids = rand_ids(LENS, NL, qe_vocab_size(cpu));
    for (int di = 0; di < 2; di++) {
        const int dims = di ? 32 : 0, d = dims ? dims : qe_dim(cpu);
        float *a = run(cpu, ids, LENS, NL, dims), *b = run(gpu, ids, LENS, NL, dims);
        double w = worst_cos(a, b, NL, d);
        cr_log_info("emulated %s dims %d: worst cosine vs cpu %.6f", what, d, w);
        cr_expect(w >= SIM_COS, "%s dims %d: worst cosine %.6f", what, d, w);
        free(a), free(b);
    }
    for (int i = 0; i < NL; i++)
        free(ids[i]);
    free(ids);
    qe_close(gpu), qe_close(cpu);
}

Test(cuda_emu, forward_matches_cpu_gqa_1_2_4, .timeout = 600) {
    char dir[1100];
    tu_make_model(dir, sizeof dir, "hs-g1", (tu_geometry){2048, 128, 256, 2, 2, 2}, ST_BF16, 0, 3);
    sim_vs_cpu(dir, "2/2 heads bf16");
    tu_make_model(dir, sizeof dir, "hs-g2", (tu_geometry){2048, 64, 192, 3, 4, 2}, ST_F16, 0, 3);
    sim_vs_cpu(dir, "4/2 heads f16 (q width 512 > hidden 64)");
    tu_make_model(dir, sizeof dir, "hs-g4", (tu_geometry){2048, 256, 256, 2, 4, 1}, ST_F32, 0, 3);
    sim_vs_cpu(dir, "4/1 heads f32");
    cr_expect_eq(sim.live_allocs, 0, "device/pinned allocations leaked: %ld", sim.live_allocs);
}

/* Every attention variant (kernels.h, QE_ATTN) through the whole engine, whole and chunked (the
 * paged path), against the CPU backend; variant 0 is the test above's. */
Test(cuda_emu, attention_variants_match_cpu, .timeout = 900) {
    char dir[1100], err[512] = "";
    tu_make_model(dir, sizeof dir, "hs-attn-v", (tu_geometry){2048, 128, 256, 2, 4, 2}, ST_BF16, 0,
                  5);
    const int lens[] = {1, 150, 300, 33};
    qe_engine *cpu = open_cpu(dir);
    rs = 7;
    int32_t **ids = rand_ids(lens, 4, qe_vocab_size(cpu));
    float *want = run(cpu, ids, lens, 4, 0);
    for (int v = 1; v < QE_ATTN_VARIANTS; v++) {
        cr_assert_eq(qe_attention_select(v), 0);
        for (int budget = 0; budget <= 128; budget += 128) { /* 128: 300 tokens in chunks */
            qe_engine *gpu = open_cuda(dir, budget, QE_OK, err, sizeof err);
            float *got = run(gpu, ids, lens, 4, 0);
            const double w = worst_cos(want, got, 4, qe_dim(cpu));
            cr_log_info("attention variant %s, budget %d: worst cosine vs cpu %.6f",
                        qe_attention_variant_name(v), budget, w);
            cr_expect(w >= SIM_COS, "variant %s, budget %d: worst cosine %.6f",
                      qe_attention_variant_name(v), budget, w);
            free(got);
            qe_close(gpu);
        }
    }
    qe_attention_select(-1);
    for (int i = 0; i < 4; i++)
        free(ids[i]);
    free(ids), free(want);
    qe_close(cpu);
}

Test(cuda_emu, shortcut_splitting_and_residual_agree, .timeout = 600) {
    char dir[1100], err[512] = "";
    tu_make_model(dir, sizeof dir, "hs-inv", (tu_geometry){2048, 128, 256, 2, 4, 2}, ST_BF16, 0, 3);
    const int lens[] = {150, 1, 77, 129, 5, 60};
    const int n = 6;
    qe_engine *big = open_cuda(dir, 0, QE_OK, err, sizeof err);
    qe_engine *small = open_cuda(dir, 160, QE_OK, err, sizeof err); /* several steps */
    setenv("QE_CUDA_FULL_LAST_LAYER", "1", 1);
    qe_engine *full = open_cuda(dir, 0, QE_OK, err, sizeof err);
    unsetenv("QE_CUDA_FULL_LAST_LAYER");
    rs = 5;
    int32_t **ids = rand_ids(lens, n, qe_vocab_size(big));
    const int D = qe_dim(big);
    float *a = run(big, ids, lens, n, 0), *b = run(small, ids, lens, n, 0),
          *c = run(full, ids, lens, n, 0);
    /* the stand-ins are deterministic per row: splitting must give identical vectors */
    cr_expect(memcmp(a, b, sizeof(float) * (size_t)n * D) == 0,
              "packed vs stepped differ (cos %.7f)", worst_cos(a, b, n, D));
    cr_expect(worst_cos(a, c, n, D) >= 0.99999, "shortcut vs full last layer: %.7f",
              worst_cos(a, c, n, D));
    for (int i = 0; i < n; i++) {
        float *one = run(big, &ids[i], &lens[i], 1, 0);
        cr_expect(memcmp(one, a + (size_t)i * D, sizeof(float) * D) == 0, "alone vs packed: seq %d",
                  i);
        free(one);
    }
    /* residual hook vs the CPU backend's, after 1 and 2 layers */
    qe_engine *cpu = open_cpu(dir);
    for (int nl = 0; nl <= 2; nl++) {
        float *rg = malloc(sizeof(float) * (size_t)lens[0] * D),
              *rc = malloc(sizeof(float) * (size_t)lens[0] * D);
        cr_assert_eq(qe_debug_residual(big, ids[0], lens[0], nl, rg), QE_OK, "%s",
                     qe_last_error(big));
        cr_assert_eq(qe_debug_residual(cpu, ids[0], lens[0], nl, rc), QE_OK, "%s",
                     qe_last_error(cpu));
        double w = worst_cos(rg, rc, lens[0], D);
        cr_expect(w >= SIM_COS, "residual after %d layers: worst row cosine %.6f", nl, w);
        free(rg), free(rc);
    }
    for (int i = 0; i < n; i++)
        free(ids[i]);
    free(ids), free(a), free(b), free(c);
    qe_close(cpu), qe_close(full), qe_close(small), qe_close(big);
}

Test(cuda_emu, tiny_goldens, .timeout = 600) {
    SKIP_UNLESS_EXISTS(TINY_MODEL "/golden.json");
    size_t len = 0;
    char *text = tu_read_file(TINY_MODEL "/golden.json", &len), err[512] = "";
    cJSON *g = cJSON_ParseWithLength(text, len);
    free(text);
    cr_assert(g != NULL, "golden.json does not parse");
    qe_engine *e = open_cuda(TINY_MODEL, 0, QE_OK, err, sizeof err);
    const int D = qe_dim(e);
    int n = 0;
    double worst = 2;
    for (const cJSON *c = cJSON_GetObjectItem(g, "cases")->child; c; c = c->next, n++) {
        const cJSON *ia = cJSON_GetObjectItem(c, "ids"), *ea = cJSON_GetObjectItem(c, "embedding");
        int L = cJSON_GetArraySize(ia), i = 0;
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)L);
        double *want = malloc(sizeof(double) * (size_t)D);
        for (const cJSON *x = ia->child; x; x = x->next)
            ids[i++] = (int32_t)x->valuedouble;
        i = 0;
        for (const cJSON *x = ea->child; x && i < D; x = x->next)
            want[i++] = x->valuedouble;
        float *out = run(e, &ids, &L, 1, 0);
        double cs = tu_cosine(out, want, D);
        if (isnan(cs)) cs = -1;
        if (cs < worst) worst = cs;
        cr_expect(cs >= SIM_COS, "golden length %d: cosine %.6f", L, cs);
        free(ids), free(want), free(out);
    }
    cr_log_info("emulated goldens: worst cosine %.6f", worst);
    cr_expect(n > 0, "no golden cases");
    qe_close(e);
    cJSON_Delete(g);
}

Test(cuda_emu, error_paths_return_status_and_message) {
    SKIP_UNLESS_EXISTS(TINY_MODEL "/config.json");
    char err[512] = "";
    fake_devices = 0;
    open_cuda(TINY_MODEL, 0, QE_ERR_DEVICE, err, sizeof err);
    cr_expect(strstr(err, "no CUDA device") != NULL, "message: %s", err);
    fake_devices = 1;
    fake_free = (size_t)1 << 20; /* 1 MiB free: the model cannot fit */
    err[0] = 0;
    open_cuda(TINY_MODEL, 0, QE_ERR_NOMEM, err, sizeof err);
    cr_expect(strstr(err, "GiB") != NULL && strstr(err, "max-batch-tokens") != NULL, "message: %s",
              err);
    cr_expect_eq(sim.live_allocs, 0, "allocations leaked on the error path: %ld", sim.live_allocs);
    fake_free = (size_t)64 << 30;
    /* a sequence longer than the budget is no longer an error: it runs in chunks */
    qe_engine *e = open_cuda(TINY_MODEL, 32, QE_OK, err, sizeof err);
    const int lens[] = {40};
    rs = 1;
    int32_t **ids = rand_ids(lens, 1, 1000);
    float *out = malloc(sizeof(float) * (size_t)qe_dim(e));
    qe_status s = qe_embed_ids(e, (const int32_t *const *)ids, lens, 1, 0, out);
    cr_expect_eq(s, QE_OK, "got %s: %s", qe_status_name(s), qe_last_error(e));
    for (int i = 0; i < qe_dim(e); i++)
        cr_assert(isfinite(out[i]), "chunked output %d is %f", i, out[i]);
    free(out), free(ids[0]), free(ids);
    qe_close(e);
    cr_expect_eq(sim.live_allocs, 0, "allocations leaked: %ld", sim.live_allocs);
}

/* ================================================================== paged chunks */

/* The attention kernel as chunked prefill uses it, against kernels.h: the last Lq queries of a
 * sequence attending to Lk keys (bottom-right alignment), keys contiguous at an offset or paged
 * through a shuffled block table, give exactly (bitwise) the rows full self-attention gives those
 * queries. */
Test(cuda_emu, attention_bottom_right_and_paged) {
    enum { L = 70, HEADS = 4, KVH = 2, HD = 128, PAGE = 16, NPAGES = 5, POOL = 9, OFF = 7 };
    const int qs = HEADS * HD, ks = KVH * HD;
    qe_bf16 *q = malloc(sizeof(qe_bf16) * L * qs), *k = malloc(sizeof(qe_bf16) * (L + OFF) * ks),
            *v = malloc(sizeof(qe_bf16) * (L + OFF) * ks);
    qe_bf16 *kp = malloc(sizeof(qe_bf16) * POOL * PAGE * ks),
            *vp = malloc(sizeof(qe_bf16) * POOL * PAGE * ks);
    qe_bf16 *full = malloc(sizeof(qe_bf16) * L * qs), *part = malloc(sizeof(qe_bf16) * L * qs);
    rs = 17;
    for (int i = 0; i < L * qs; i++) {
        rs = rs * 6364136223846793005ull + 1442695040888963407ull;
        q[i] = tobf((float)((rs >> 40) % 2001) / 1000.0f - 1.0f);
    }
    for (int i = 0; i < (L + OFF) * ks; i++) {
        rs = rs * 6364136223846793005ull + 1442695040888963407ull;
        k[i] = tobf((float)((rs >> 40) % 2001) / 1000.0f - 1.0f);
        v[i] = tobf((float)((rs >> 20) % 2001) / 1000.0f - 1.0f);
    }
    /* keys of the sequence start at row OFF of k/v */
    const int32_t cu_full[2] = {0, L}, cu_k[2] = {OFF, OFF + L};
    qe_attn_params p;
    memset(&p, 0, sizeof p);
    p.q = q, p.k = k + OFF * ks, p.v = v + OFF * ks, p.out = full;
    p.q_stride = qs, p.kv_stride = ks, p.out_stride = qs;
    p.cu_seqlens_q = cu_full, p.cu_seqlens_k = cu_full, p.n_seqs = 1, p.max_seqlen_q = L;
    p.heads = HEADS, p.kv_heads = KVH, p.head_dim = HD, p.scale = 0.088f;
    cr_assert_eq(qe_attention(&p, NULL), QE_K_OK, "%s", qe_k_last_error());
    sim_drain();
    /* the mask is causal: query 0 sees only key 0, so its output is v[0] of its kv head */
    cr_expect(memcmp(full, v + OFF * ks, sizeof(qe_bf16) * HD) == 0, "query 0 != value 0");
    const int lqs[] = {1, 13, 16, 33, L};
    for (int li = 0; li < 5; li++) {
        const int Lq = lqs[li];
        const int32_t cu_q[2] = {0, Lq};
        /* contiguous, keys addressed through cu_seqlens_k[0] = OFF */
        memset(part, 0xFF, sizeof(qe_bf16) * L * qs);
        p.q = q + (size_t)(L - Lq) * qs, p.k = k, p.v = v, p.out = part;
        p.cu_seqlens_q = cu_q, p.cu_seqlens_k = cu_k, p.max_seqlen_q = Lq;
        cr_assert_eq(qe_attention(&p, NULL), QE_K_OK, "%s", qe_k_last_error());
        sim_drain();
        cr_expect(memcmp(part, full + (size_t)(L - Lq) * qs, sizeof(qe_bf16) * Lq * qs) == 0,
                  "contiguous Lq %d of Lk %d differs from full attention", Lq, L);
        /* paged: logical page i of the sequence lives in physical page table[i] of the pool */
        const int32_t table[NPAGES] = {6, 2, 8, 0, 4};
        memset(kp, 0xFF, sizeof(qe_bf16) * POOL * PAGE * ks);
        memset(vp, 0xFF, sizeof(qe_bf16) * POOL * PAGE * ks);
        for (int j = 0; j < L; j++) {
            const size_t r = (size_t)table[j / PAGE] * PAGE + j % PAGE;
            memcpy(kp + r * ks, k + (size_t)(OFF + j) * ks, sizeof(qe_bf16) * ks);
            memcpy(vp + r * ks, v + (size_t)(OFF + j) * ks, sizeof(qe_bf16) * ks);
        }
        const int32_t cu_kp[2] = {100, 100 + L}; /* only the difference counts when paged */
        memset(part, 0xFF, sizeof(qe_bf16) * L * qs);
        p.k = kp, p.v = vp, p.cu_seqlens_k = cu_kp;
        p.block_table = table, p.block_table_stride = NPAGES, p.page_size = PAGE;
        cr_assert_eq(qe_attention(&p, NULL), QE_K_OK, "%s", qe_k_last_error());
        sim_drain();
        cr_expect(memcmp(part, full + (size_t)(L - Lq) * qs, sizeof(qe_bf16) * Lq * qs) == 0,
                  "paged Lq %d of Lk %d differs from full attention", Lq, L);
        p.block_table = NULL, p.block_table_stride = 0, p.page_size = 0;
    }
    free(q), free(k), free(v), free(kp), free(vp), free(full), free(part);
}

/* Sequences longer than half a 64-token budget (chunks through the paged K/V pool, several in
 * flight and mixed with short ones in one step) vs the CPU backend and vs the same sequences run
 * whole under a large budget. The stand-ins are
 * deterministic per row and chunking changes neither a key nor the order keys are summed in, so
 * chunked and whole must be bitwise equal. */
static void chunked_vs_cpu_and_whole(const char *dir, const char *what, int layers, int kv_heads,
                                     int with_longest) {
    char err[512] = "";
    qe_engine *whole = open_cuda(dir, 0, QE_OK, err, sizeof err);
    qe_engine *chunk = open_cuda(dir, 64, QE_OK, err, sizeof err);
    qe_engine *cpu = open_cpu(dir);
    const int D = qe_dim(cpu);
    const size_t base_bytes = qe_device_bytes(chunk);
    /* alone, then a batch mixing short and long sequences (long ones between short ones) */
    const int lens[] = {65, 200, 513, 3, 64, 130, 1, 65, 40, 1100};
    const int n_alone = 3, n_mixed = with_longest ? 7 : 6;
    rs = 1234;
    int32_t **ids = rand_ids(lens, n_alone + n_mixed, qe_vocab_size(cpu));
    for (int i = 0; i < n_alone; i++) {
        float *a = run(cpu, &ids[i], &lens[i], 1, 0), *b = run(chunk, &ids[i], &lens[i], 1, 0),
              *c = run(whole, &ids[i], &lens[i], 1, 0);
        double w = worst_cos(a, b, 1, D);
        cr_log_info("emulated %s chunked %d tokens: cosine vs cpu %.6f", what, lens[i], w);
        cr_expect(w >= SIM_COS, "%s: %d tokens in 64-token chunks vs cpu: cosine %.6f", what,
                  lens[i], w);
        cr_expect(memcmp(b, c, sizeof(float) * D) == 0,
                  "%s: %d tokens chunked vs whole differ (cosine %.7f)", what, lens[i],
                  worst_cos(b, c, 1, D));
        free(a), free(b), free(c);
    }
    /* the pool was made at open (the model's positions, bf16 k and v rows of kv_heads * 128
     * per layer) and every page came back */
    const size_t per_token = (size_t)layers * 2 * kv_heads * 128 * 2;
    cr_expect_geq(base_bytes, per_token * (size_t)qe_kv_pool_tokens(chunk), "%s: pool bytes", what);
    cr_expect_eq(qe_device_bytes(chunk), base_bytes, "%s: device memory grew", what);
    cr_expect_eq(qe_kv_pool_used_tokens(chunk), 0, "%s: pages held after the calls", what);
    for (int di = 0; di < 2; di++) {
        const int dims = di ? 32 : 0, d = dims ? dims : D;
        int32_t **m = ids + n_alone;
        const int *ml = lens + n_alone;
        float *a = run(cpu, m, ml, n_mixed, dims), *b = run(chunk, m, ml, n_mixed, dims),
              *c = run(whole, m, ml, n_mixed, dims);
        double w = worst_cos(a, b, n_mixed, d);
        cr_log_info("emulated %s mixed batch dims %d: worst cosine vs cpu %.6f", what, d, w);
        cr_expect(w >= SIM_COS, "%s: mixed batch dims %d vs cpu: worst cosine %.6f", what, d, w);
        cr_expect(memcmp(b, c, sizeof(float) * (size_t)n_mixed * d) == 0,
                  "%s: mixed batch dims %d chunked vs whole differ (cosine %.7f)", what, d,
                  worst_cos(b, c, n_mixed, d));
        free(a), free(b), free(c);
    }
    cr_expect_eq(qe_device_bytes(chunk), base_bytes, "%s: device memory grew", what);
    cr_expect_eq(qe_kv_pool_used_tokens(chunk), 0, "%s: pages held after the calls", what);
    for (int i = 0; i < n_alone + n_mixed; i++)
        free(ids[i]);
    free(ids);
    qe_close(cpu), qe_close(chunk), qe_close(whole);
}

/* One geometry per test, so Criterion's jobs run them side by side. */
Test(cuda_emu, chunked_prefill_gqa_1, .timeout = 900) {
    char dir[1100];
    tu_make_model(dir, sizeof dir, "hs-c1", (tu_geometry){2048, 128, 256, 2, 2, 2}, ST_BF16, 0, 3);
    chunked_vs_cpu_and_whole(dir, "2/2 heads bf16", 2, 2, 0);
    cr_expect_eq(sim.live_allocs, 0, "device/pinned allocations leaked: %ld", sim.live_allocs);
}
Test(cuda_emu, chunked_prefill_gqa_2, .timeout = 900) {
    char dir[1100];
    tu_make_model(dir, sizeof dir, "hs-c2", (tu_geometry){2048, 64, 192, 3, 4, 2}, ST_F16, 0, 3);
    chunked_vs_cpu_and_whole(dir, "4/2 heads f16", 3, 2, 0);
    cr_expect_eq(sim.live_allocs, 0, "device/pinned allocations leaked: %ld", sim.live_allocs);
}
Test(cuda_emu, chunked_prefill_gqa_4_and_longest, .timeout = 900) {
    char dir[1100];
    tu_make_model(dir, sizeof dir, "hs-c4", (tu_geometry){2048, 256, 256, 2, 4, 1}, ST_F32, 0, 3);
    chunked_vs_cpu_and_whole(dir, "4/1 heads f32", 2, 1, 1);
    cr_expect_eq(sim.live_allocs, 0, "device/pinned allocations leaked: %ld", sim.live_allocs);
}

/* The paged path with the full last layer (every chunk runs it) and through the residual hook
 * (every layer count, chunked vs whole bitwise, vs the CPU backend); a pool too small for two
 * sequences at once runs them one after the other. */
Test(cuda_emu, chunked_full_last_layer_residual_and_nomem, .timeout = 600) {
    char dir[1100], err[512] = "";
    tu_make_model(dir, sizeof dir, "hs-cr", (tu_geometry){2048, 128, 256, 2, 4, 2}, ST_BF16, 0, 3);
    qe_engine *whole = open_cuda(dir, 0, QE_OK, err, sizeof err);
    qe_engine *chunk = open_cuda(dir, 64, QE_OK, err, sizeof err);
    setenv("QE_CUDA_FULL_LAST_LAYER", "1", 1);
    qe_engine *full = open_cuda(dir, 64, QE_OK, err, sizeof err);
    unsetenv("QE_CUDA_FULL_LAST_LAYER");
    qe_engine *cpu = open_cpu(dir);
    const int D = qe_dim(cpu);
    const int lens[] = {200, 5, 129};
    rs = 77;
    int32_t **ids = rand_ids(lens, 3, qe_vocab_size(cpu));
    float *a = run(chunk, ids, lens, 3, 0), *b = run(full, ids, lens, 3, 0),
          *c = run(cpu, ids, lens, 3, 0);
    cr_expect(worst_cos(a, b, 3, D) >= 0.99999, "chunked: shortcut vs full last layer: %.7f",
              worst_cos(a, b, 3, D));
    cr_expect(worst_cos(b, c, 3, D) >= SIM_COS, "chunked full last layer vs cpu: %.6f",
              worst_cos(b, c, 3, D));
    free(a), free(b), free(c);
    for (int nl = 0; nl <= 2; nl++) {
        const size_t n = (size_t)lens[0] * D;
        float *rc = malloc(sizeof(float) * n), *rw = malloc(sizeof(float) * n),
              *rp = malloc(sizeof(float) * n);
        for (size_t i = 0; i < n; i++)
            rc[i] = NAN;
        cr_assert_eq(qe_debug_residual(chunk, ids[0], lens[0], nl, rc), QE_OK, "%s",
                     qe_last_error(chunk));
        cr_assert_eq(qe_debug_residual(whole, ids[0], lens[0], nl, rw), QE_OK, "%s",
                     qe_last_error(whole));
        cr_assert_eq(qe_debug_residual(cpu, ids[0], lens[0], nl, rp), QE_OK, "%s",
                     qe_last_error(cpu));
        cr_expect(memcmp(rc, rw, sizeof(float) * n) == 0,
                  "residual after %d layers: chunked vs whole differ (worst row cosine %.7f)", nl,
                  worst_cos(rc, rw, lens[0], D));
        double w = worst_cos(rc, rp, lens[0], D);
        cr_expect(w >= SIM_COS, "chunked residual after %d layers vs cpu: worst row cosine %.6f",
                  nl, w);
        free(rc), free(rw), free(rp);
    }
    /* A pool of one page: the 200- and 129-token sequences each need it, so the second waits
     * for the first to finish (admission waits, never fails) and both equal their whole runs. */
    qe_options o;
    memset(&o, 0, sizeof o);
    o.model_dir = dir, o.backend = QE_BACKEND_CUDA, o.max_batch_tokens = 64;
    o.kv_pool_tokens = 256;
    qe_engine *e = NULL;
    cr_assert_eq(qe_open(&o, &e, err, sizeof err), QE_OK, "%s", err);
    const int both[] = {0, 2};
    int32_t *ids2[] = {ids[0], ids[2]};
    const int lens2[] = {lens[0], lens[2]};
    float *got = run(e, ids2, lens2, 2, 0);
    for (int k = 0; k < 2; k++) {
        float *want = run(whole, &ids[both[k]], &lens[both[k]], 1, 0);
        cr_expect(memcmp(got + (size_t)k * D, want, sizeof(float) * D) == 0,
                  "one-page pool: sequence %d differs from its whole run", both[k]);
        free(want);
    }
    cr_expect_eq(qe_kv_pool_used_tokens(e), 0, "pages held after the call");
    free(got);
    for (int i = 0; i < 3; i++)
        free(ids[i]);
    free(ids);
    qe_close(e), qe_close(cpu), qe_close(full), qe_close(chunk), qe_close(whole);
    cr_expect_eq(sim.live_allocs, 0, "device/pinned allocations leaked: %ld", sim.live_allocs);
}

/* An ALiBi model (position_embedding_type "alibi"; 6 heads, a count that is not a power of two):
 * the slopes uploaded with the weights, q/k normed and not rotated, the kernel's bias with the
 * last-layer shortcut's one query per sequence, in graphs, and in 64-token chunks against the
 * K/V cache (bottom-right alignment: i_abs = i + Lk - Lq). Vs the CPU backend, and chunked vs
 * whole bitwise. */
Test(cuda_emu, alibi_whole_and_chunked_match_cpu, .timeout = 900) {
    char dir[1100], err[512] = "";
    tu_make_model_with(dir, sizeof dir, "hs-al", (tu_geometry){2048, 64, 192, 2, 6, 2}, ST_BF16, 0,
                       3, 1);
    qe_engine *whole = open_cuda(dir, 0, QE_OK, err, sizeof err);
    qe_engine *chunk = open_cuda(dir, 64, QE_OK, err, sizeof err);
    qe_engine *cpu = open_cpu(dir);
    const int D = qe_dim(cpu);
    const int lens[] = {1, 7, 200, 40, 65};
    const int n = 5;
    rs = 4321;
    int32_t **ids = rand_ids(lens, n, qe_vocab_size(cpu));
    float *a = run(cpu, ids, lens, n, 0), *b = run(whole, ids, lens, n, 0),
          *c = run(chunk, ids, lens, n, 0);
    const double wb = worst_cos(a, b, n, D), wc = worst_cos(a, c, n, D);
    cr_log_info("emulated ALiBi: worst cosine vs cpu %.6f whole, %.6f chunked", wb, wc);
    cr_expect(wb >= SIM_COS, "ALiBi whole vs cpu: worst cosine %.6f", wb);
    cr_expect(wc >= SIM_COS, "ALiBi in 64-token chunks vs cpu: worst cosine %.6f", wc);
    cr_expect(memcmp(b, c, sizeof(float) * (size_t)n * D) == 0,
              "ALiBi chunked vs whole differ (worst cosine %.7f)", worst_cos(b, c, n, D));
    for (int i = 0; i < n; i++)
        free(ids[i]);
    free(ids), free(a), free(b), free(c);
    qe_close(cpu), qe_close(chunk), qe_close(whole);
    cr_expect_eq(sim.live_allocs, 0, "device/pinned allocations leaked: %ld", sim.live_allocs);
}

/* A Qwen3-Reranker (tied and untied output rows) on the CUDA backend: its scores are the pooled
 * hidden state's dot product with the yes-minus-no row, so they follow the CPU's within the
 * reranker's GPU tolerance, whole and in 64-token chunks. */
Test(cuda_emu, reranker_scores_match_cpu, .timeout = 900) {
    for (int tied = 0; tied <= 1; tied++) {
        char dir[1100], err[512] = "";
        tu_scratch_dir(dir, sizeof dir, tied ? "hs-rr-tied" : "hs-rr-untied");
        random_model_opts o;
        memset(&o, 0, sizeof o);
        cr_assert_eq(random_model_preset("tiny", &o.cfg), 0);
        o.cfg.vocab_size = 2048; /* the demo tokenizer's "yes" and "no" fall inside */
        o.cfg.num_layers = 2;
        o.cfg.tie_word_embeddings = tied;
        o.out_dir = dir, o.seed = 9, o.dtype = ST_BF16, o.reranker = 1, o.quiet = 1;
        cr_assert_eq(random_model_write(&o, err, sizeof err), 0, "%s", err);
        qe_engine *whole = open_cuda(dir, 0, QE_OK, err, sizeof err);
        qe_engine *chunk = open_cuda(dir, 64, QE_OK, err, sizeof err);
        qe_engine *cpu = open_cpu(dir);
        cr_assert_eq(qe_model_task(whole), QE_TASK_RERANK, "%s", qe_task_reason(whole));
        const int lens[] = {150, 3, 90, 1};
        enum { N = 4 };
        rs = 99 + (uint64_t)tied;
        int32_t **ids = rand_ids(lens, N, qe_vocab_size(cpu));
        float a[N], b[N], c[N];
        qe_engine *engines[] = {cpu, whole, chunk};
        float *outs[] = {a, b, c};
        for (int k = 0; k < 3; k++)
            cr_assert_eq(qe_rerank_ids(engines[k], (const int32_t *const *)ids, lens, N, outs[k]),
                         QE_OK, "%s", qe_last_error(engines[k]));
        /* and the logits, relative: a random model's scores may sit where the sigmoid is flat */
        const int H = qe_dim(cpu);
        float *h = malloc(sizeof(float) * (size_t)H * N * 2);
        cr_assert_eq(qe_embed_ids_ex(cpu, (const int32_t *const *)ids, lens, N, H, 0, h), QE_OK);
        cr_assert_eq(qe_embed_ids_ex(chunk, (const int32_t *const *)ids, lens, N, H, 0, h + N * H),
                     QE_OK);
        for (int i = 0; i < N; i++) {
            const float la = qe_rerank_logit(cpu, h + i * H),
                        lc = qe_rerank_logit(chunk, h + (N + i) * H);
            cr_log_info("reranker (%s), %d tokens: cpu %.6f, cuda %.6f, chunked %.6f (logits %.4f, "
                        "%.4f)",
                        tied ? "tied" : "untied", lens[i], a[i], b[i], c[i], la, lc);
            cr_expect_leq(fabsf(a[i] - b[i]), 2e-3f, "whole, sequence %d", i);
            cr_expect_leq(fabsf(a[i] - c[i]), 2e-3f, "chunked, sequence %d", i);
            cr_expect_leq(fabsf(la - lc), 2e-2f * fmaxf(1, fabsf(la)), "logit, sequence %d", i);
            free(ids[i]);
        }
        free(h);
        free(ids);
        qe_close(cpu), qe_close(chunk), qe_close(whole);
    }
    cr_expect_eq(sim.live_allocs, 0, "device/pinned allocations leaked: %ld", sim.live_allocs);
}

/* Data parallel on the CUDA backend (issue 14): engines on two (emulated) devices give the CPU's
 * vectors, a device that does not exist is refused, and a server with --devices 0,1 serves through
 * both engines. */
Test(cuda_emu, data_parallel_engines_on_two_devices, .timeout = 900) {
    fake_devices = 2;
    char dir[1100], err[512] = "";
    /* the full vocabulary: a server refuses a tokenizer whose end token the model lacks */
    tu_make_model(dir, sizeof dir, "hs-dp", (tu_geometry){151669, 64, 128, 2, 4, 2}, ST_BF16, 0, 5);
    qe_options o;
    memset(&o, 0, sizeof o);
    o.model_dir = dir, o.backend = QE_BACKEND_CUDA;
    qe_engine *dev[2] = {NULL, NULL}, *cpu = open_cpu(dir);
    for (int d = 0; d < 2; d++) {
        o.device = d;
        cr_assert_eq(qe_open(&o, &dev[d], err, sizeof err), QE_OK, "device %d: %s", d, err);
    }
    o.device = 2;
    qe_engine *none = NULL;
    cr_expect_eq(qe_open(&o, &none, err, sizeof err), QE_ERR_ARG);
    cr_expect(strstr(err, "device 2 does not exist"), "%s", err);
    const int lens[] = {5, 70, 1};
    rs = 77;
    int32_t **ids = rand_ids(lens, 3, qe_vocab_size(cpu));
    float *a = run(cpu, ids, lens, 3, 0), *b = run(dev[0], ids, lens, 3, 0),
          *c = run(dev[1], ids, lens, 3, 0);
    cr_expect(worst_cos(a, b, 3, qe_dim(cpu)) >= SIM_COS);
    cr_expect(memcmp(b, c, sizeof(float) * 3 * (size_t)qe_dim(cpu)) == 0, "the two devices differ");
    for (int i = 0; i < 3; i++)
        free(ids[i]);
    free(ids), free(a), free(b), free(c);
    qe_close(dev[0]), qe_close(dev[1]), qe_close(cpu);

    serve_config sc;
    srvt_config(&sc);
    sc.model_dir = dir, sc.backend = QE_BACKEND_CUDA;
    sc.devices[0] = 0, sc.devices[1] = 1, sc.n_devices = 2;
    srvt_server t;
    srvt_start(&t, &sc);
    cr_assert_not_null(serve_replica_engine(t.s, 0, 1));
    cr_assert_str_eq(qe_backend_name(serve_replica_engine(t.s, 0, 1)), "cuda");
    const char *body = "{\"input\": [[11, 12, 13], [14, 15, 16, 17], [18], [19, 20]]}";
    for (int k = 0; k < 3; k++) {
        srvt_resp r;
        cr_expect_eq(srvt_post(t.base, "/v1/embeddings", body, &r), 200, "%s", r.body);
        srvt_resp_free(&r);
    }
    srvt_stop(&t);
    sc.devices[1] = 3; /* a device the machine lacks: the server does not come up */
    srvt_start_nowait(&t, &sc);
    cr_expect_neq(serve_wait_ready(t.s, err, sizeof err), 0);
    cr_expect(strstr(err, "device 3"), "%s", err);
    srvt_stop(&t);
    fake_devices = 1;
    cr_expect_eq(sim.live_allocs, 0, "device/pinned allocations leaked: %ld", sim.live_allocs);
}

/* The worst cosine over LENS (random ids from seed) between the emulated CUDA backend and the CPU
 * backend on the same model; *device_bytes (may be NULL) gets the CUDA engine's device bytes. */
static double cuda_vs_cpu_on(const char *path, uint64_t seed, double *device_bytes) {
    char err[1024] = "";
    qe_engine *cuda = open_cuda(path, 0, QE_OK, err, sizeof err), *cpu = open_cpu(path);
    rs = seed;
    int32_t **ids = rand_ids(LENS, NL, qe_vocab_size(cpu));
    float *a = run(cpu, ids, LENS, NL, 0), *b = run(cuda, ids, LENS, NL, 0);
    const double wc = worst_cos(a, b, NL, qe_dim(cpu));
    if (device_bytes) *device_bytes = (double)qe_device_bytes(cuda);
    for (int i = 0; i < NL; i++)
        free(ids[i]);
    free(ids), free(a), free(b);
    qe_close(cpu), qe_close(cuda);
    return wc;
}

/* A q8_0 / q4_k_m GGUF of the tiny geometry on the CUDA backend: its 64-wide rows are no whole
 * 256-element super-blocks, so every matrix takes the bf16 upload (dequantized by the C reference)
 * like a folder's weights, and the vectors follow the CPU backend on the same file within the GPU
 * tolerance. quantized_gguf_runs_quantized below is the kept-quantized path. */
Test(cuda_emu, gguf_matches_cpu, .timeout = 900) {
    char dir[1100], path[1200], err[1024] = "";
    tu_scratch_dir(dir, sizeof dir, "hs-gguf");
    random_model_opts o;
    memset(&o, 0, sizeof o);
    cr_assert_eq(random_model_preset("tiny", &o.cfg), 0);
    o.cfg.vocab_size = 2048;
    o.cfg.num_layers = 2;
    o.out_dir = dir, o.seed = 13, o.dtype = ST_BF16, o.quiet = 1;
    cr_assert_eq(random_model_write(&o, err, sizeof err), 0, "%s", err);
    const qz_ftype types[] = {QZ_Q8_0, QZ_Q4_K_M};
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "%s/m-%s.gguf", dir, qz_ftype_name(types[k]));
        const qz_opts q = {.model_dir = dir, .out_path = path, .ftype = types[k], .quiet = 1};
        cr_assert_eq(qz_run(&q, err, sizeof err), 0, "%s", err);
        const double wc = cuda_vs_cpu_on(path, 7 + (uint64_t)k, NULL);
        cr_log_info("%s GGUF on cuda vs cpu: worst cosine %.6f", qz_ftype_name(types[k]), wc);
        cr_expect(wc >= SIM_COS, "%s GGUF, cuda vs cpu: worst cosine %.6f", qz_ftype_name(types[k]),
                  wc);
    }
    cr_expect_eq(sim.live_allocs, 0, "device/pinned allocations leaked: %ld", sim.live_allocs);
}

/* A bf16 folder in dir whose every dimension is whole 256-element super-blocks (hidden 256, inter
 * 512, 2 layers, 2 heads of 128, 1 kv head, vocab 2048): what the quantized-GGUF tests
 * quantize. */
static void write_superblock_model(const char *dir) {
    char err[1024] = "";
    random_model_opts o;
    memset(&o, 0, sizeof o);
    cr_assert_eq(random_model_preset("tiny", &o.cfg), 0);
    o.cfg.vocab_size = 2048;
    o.cfg.num_layers = 2;
    o.cfg.hidden_size = 256, o.cfg.intermediate_size = 512;
    o.cfg.num_heads = 2, o.cfg.num_kv_heads = 1, o.cfg.head_dim = 128;
    o.out_dir = dir, o.seed = 29, o.dtype = ST_BF16, o.quiet = 1;
    cr_assert_eq(random_model_write(&o, err, sizeof err), 0, "%s", err);
}

/* A GGUF model whose every dimension is whole 256-element super-blocks (hidden 256, inter 512, 2
 * heads of 128, 1 kv head): its Q8_0 / Q4_K / Q6_K matrices and embedding table stay quantized
 * on the device (kernels/qgemm.cu, qembed_gather.cu) and embed like the CPU backend on the same
 * file (the bar: cosine >= 0.999); the device holds fewer bytes than for the bf16 folder:
 * quantized weights at most 55% (q8_0: 1.0625 B per weight) / 45% (q4_k_m: Q4_K with Q6_K for
 * v, down and the table) of the bf16 ones. */
Test(cuda_emu, quantized_gguf_runs_quantized, .timeout = 900) {
    char dir[1100], path[1200], err[1024] = "";
    tu_scratch_dir(dir, sizeof dir, "hs-qgguf");
    write_superblock_model(dir);
    const double H = 256, I = 512, V = 2048, L = 2;
    const double bf16_weights = 2 * (V * H + L * (H * (256 + 2 * 128) + H * 256 + 3 * H * I));
    qe_engine *ref = open_cuda(dir, 0, QE_OK, err, sizeof err);
    const double bf16_bytes = (double)qe_device_bytes(ref);
    qe_close(ref);
    const qz_ftype types[] = {QZ_Q8_0, QZ_Q4_K_M};
    const double most[] = {0.55, 0.45};
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "%s/q-%s.gguf", dir, qz_ftype_name(types[k]));
        const qz_opts q = {.model_dir = dir, .out_path = path, .ftype = types[k], .quiet = 1};
        cr_assert_eq(qz_run(&q, err, sizeof err), 0, "%s", err);
        double q_bytes = 0;
        const double wc = cuda_vs_cpu_on(path, 31 + (uint64_t)k, &q_bytes);
        const double q_weights = bf16_weights - (bf16_bytes - q_bytes);
        cr_log_info("%s GGUF on cuda (quantized weights) vs cpu: worst cosine %.6f; device bytes "
                    "%.0f (bf16 folder %.0f): weights %.0f of bf16's %.0f (%.1f%%)",
                    qz_ftype_name(types[k]), wc, q_bytes, bf16_bytes, q_weights, bf16_weights,
                    100 * q_weights / bf16_weights);
        cr_expect(wc >= SIM_COS, "%s GGUF, cuda vs cpu: worst cosine %.6f", qz_ftype_name(types[k]),
                  wc);
        cr_expect(q_weights <= most[k] * bf16_weights,
                  "%s: the device holds %.0f bytes of weights, bf16 would be %.0f",
                  qz_ftype_name(types[k]), q_weights, bf16_weights);
    }
    cr_expect_eq(sim.live_allocs, 0, "device/pinned allocations leaked: %ld", sim.live_allocs);
}

/* A GGUF file llama.cpp's own quantizer wrote (QE_LLAMACPP_GGUF; the optional llamacpp_gguf test
 * makes them with llama_model_quantize and runs this): on the emulated CUDA backend it embeds like
 * the CPU backend on the same file. Skipped without one. */
Test(cuda_emu, llamacpp_quantized_file_matches_cpu, .timeout = 900) {
    const char *path = getenv("QE_LLAMACPP_GGUF");
    if (!path || !*path) cr_skip_test("QE_LLAMACPP_GGUF unset (tests/llamacpp/run_crosscheck.sh)");
    const double wc = cuda_vs_cpu_on(path, 21, NULL);
    cr_log_info("%s (llama.cpp's quantizer) on cuda vs cpu: worst cosine %.6f", path, wc);
    cr_expect(wc >= SIM_COS, "%s, cuda vs cpu: worst cosine %.6f", path, wc);
}

/* ================================================================== graphs and the pipeline */

/* Runs one batch (lens[n], fresh random ids) on both engines; they must agree bitwise. Returns
 * the graph engine's vectors. */
static float *graph_vs_eager(qe_engine *graphs, qe_engine *eager, const int *lens, int n, int dims,
                             const char *what) {
    int32_t **ids = rand_ids(lens, n, qe_vocab_size(eager));
    const int d = dims ? dims : qe_dim(eager);
    float *a = run(graphs, ids, lens, n, dims), *b = run(eager, ids, lens, n, dims);
    cr_expect(memcmp(a, b, sizeof(float) * (size_t)n * d) == 0,
              "%s: graph vs eager differ (worst cosine %.7f)", what, worst_cos(a, b, n, d));
    for (int i = 0; i < n; i++)
        free(ids[i]);
    free(ids), free(b);
    return a;
}

static qe_engine *open_eager(const char *dir, int max_tokens) {
    char err[512] = "";
    setenv("QE_CUDA_GRAPHS", "0", 1);
    qe_engine *e = open_cuda(dir, max_tokens, QE_OK, err, sizeof err);
    unsetenv("QE_CUDA_GRAPHS");
    return e;
}

/* Small steps run as graphs of padded shapes (cuda_graph.c): bitwise equal to eager steps (the
 * padding rows never mix into a real one), one capture per shape, replays with new ids give new
 * vectors (nothing of a step's contents is baked in), steps past 512 padded tokens run eagerly. */
Test(cuda_emu, graphs_match_eager_one_capture_per_shape, .timeout = 600) {
    char dir[1100], err[512] = "";
    tu_make_model(dir, sizeof dir, "hs-gr", (tu_geometry){2048, 128, 256, 2, 4, 2}, ST_BF16, 0, 3);
    qe_engine *g = open_cuda(dir, 0, QE_OK, err, sizeof err);
    qe_engine *e = open_eager(dir, 0);
    cr_assert_eq(sim.captures, 0, "the eager engine captured graphs");
    rs = 8;
    static const struct {
        int n, lens[3];
        long captures, launches; /* after this batch */
    } steps[] = {
        {1, {24}, 1, 1},         /* 32 tokens, 2 slots: new */
        {1, {24}, 1, 2},         /* same shape, other ids: replayed */
        {1, {17}, 1, 3},         /* pads to the same shape */
        {3, {5, 9, 3}, 2, 4},    /* 17 -> 32 tokens, 4 slots: new */
        {1, {300}, 3, 5},        /* 320 tokens */
        {3, {130, 1, 60}, 4, 6}, /* 191 -> 192 tokens, 4 slots */
        {1, {600}, 4, 6},        /* 640 padded > 512: eager */
        {3, {64, 64, 64}, 4, 7}, /* batch 5's shape with no filler tokens: replayed */
    };
    float *first = NULL;
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        char what[64];
        snprintf(what, sizeof what, "batch %zu", i);
        float *v = graph_vs_eager(g, e, steps[i].lens, steps[i].n, 0, what);
        cr_expect_eq(sim.captures, steps[i].captures, "%s: %ld graphs captured, want %ld", what,
                     sim.captures, steps[i].captures);
        cr_expect_eq(sim.graph_launches, steps[i].launches, "%s: %ld graph launches, want %ld",
                     what, sim.graph_launches, steps[i].launches);
        if (i == 0) {
            first = v;
        } else {
            if (i == 1)
                cr_expect(memcmp(first, v, sizeof(float) * (size_t)qe_dim(g)) != 0,
                          "a replay with other ids gave the same vector");
            free(v);
        }
    }
    free(first);
    /* Matryoshka and normalize: pooling runs after the graph with the call's arguments */
    const int lens[] = {24};
    free(graph_vs_eager(g, e, lens, 1, 32, "dims 32"));
    cr_expect_eq(sim.captures, 4, "dims changed the graph shape");
    qe_close(g), qe_close(e);
    cr_expect_eq(sim.live_graph_execs, 0, "graph execs leaked: %ld", sim.live_graph_execs);
    cr_expect_eq(sim.live_allocs, 0, "device/pinned allocations leaked: %ld", sim.live_allocs);
}

/* More shapes than the cache holds (GRAPH_CACHE 32): the least recently used is replaced, an
 * evicted shape is captured again, results stay exact. */
Test(cuda_emu, graph_cache_replaces_least_recently_used, .timeout = 900) {
    char dir[1100], err[512] = "";
    tu_make_model(dir, sizeof dir, "hs-gc", (tu_geometry){2048, 128, 256, 1, 2, 2}, ST_BF16, 0, 3);
    qe_engine *g = open_cuda(dir, 0, QE_OK, err, sizeof err);
    qe_engine *e = open_eager(dir, 0);
    /* the 16 padded token counts up to 512, as 1, 2 and 4 sequences (2, 4, 8 slots) */
    static const int tps[] = {16,  32,  48,  64,  80,  96,  112, 128,
                              160, 192, 224, 256, 320, 384, 448, 512};
    static const int nseqs[] = {1, 2, 4};
    rs = 21;
    long shapes = 0;
    for (int si = 0; si < 3; si++)
        for (int ti = 0; ti < 16; ti++) {
            int lens[4], n = nseqs[si];
            for (int k = 0; k < n; k++)
                lens[k] = tps[ti] / n;
            char what[64];
            snprintf(what, sizeof what, "%d tokens as %d sequences", tps[ti], n);
            free(graph_vs_eager(g, e, lens, n, 0, what));
            shapes++;
        }
    cr_expect_eq(sim.captures, shapes, "%ld captures for %ld shapes", sim.captures, shapes);
    cr_expect_eq(sim.live_graph_execs, 32, "%ld graphs kept, the cache holds 32",
                 sim.live_graph_execs);
    /* the first shape was the least recently used: gone, captured again */
    const int one[] = {16};
    free(graph_vs_eager(g, e, one, 1, 0, "16 tokens again"));
    cr_expect_eq(sim.captures, shapes + 1, "an evicted shape was not captured again");
    /* the last shape is still cached */
    const int four[] = {128, 128, 128, 128};
    free(graph_vs_eager(g, e, four, 4, 0, "512 tokens as 4 again"));
    cr_expect_eq(sim.captures, shapes + 1, "a cached shape was captured again");
    qe_close(g), qe_close(e);
    cr_expect_eq(sim.live_graph_execs, 0, "graph execs leaked: %ld", sim.live_graph_execs);
}

/* CUDA refusing to capture turns graphs off for the engine; every step still runs, eagerly. */
Test(cuda_emu, graph_capture_refused_runs_eagerly) {
    char dir[1100], err[512] = "";
    tu_make_model(dir, sizeof dir, "hs-gf", (tu_geometry){2048, 128, 256, 2, 2, 2}, ST_BF16, 0, 3);
    qe_engine *g = open_cuda(dir, 0, QE_OK, err, sizeof err);
    qe_engine *e = open_eager(dir, 0);
    rs = 4;
    const int lens[] = {24, 3};
    fake_capture_fails = 1;
    free(graph_vs_eager(g, e, lens, 2, 0, "capture refused"));
    fake_capture_fails = 0;
    free(graph_vs_eager(g, e, lens, 2, 0, "after the refusal"));
    cr_expect_eq(sim.captures, 0, "captured after a refusal");
    cr_expect_eq(sim.graph_launches, 0, "graph launched after a refusal");
    qe_close(g), qe_close(e);
}

/* Several steps in one call are enqueued ahead: the host packs step i+1 while step i is queued
 * (two events in flight), and the lazy stream proves each slot's staging is reused only after
 * its step ran: the vectors equal a one-step run bitwise. QE_PROFILE=1 runs one step at a time. */
Test(cuda_emu, steps_overlap_host_packing, .timeout = 600) {
    char dir[1100], err[512] = "";
    tu_make_model(dir, sizeof dir, "hs-ov", (tu_geometry){2048, 128, 256, 2, 4, 2}, ST_BF16, 0, 3);
    qe_engine *one = open_cuda(dir, 0, QE_OK, err, sizeof err);
    qe_engine *many = open_cuda(dir, 64, QE_OK, err, sizeof err);
    const int lens[] = {30, 31, 12, 50, 7, 33, 40, 1, 64, 9, 28};
    const int n = 11;
    rs = 6;
    int32_t **ids = rand_ids(lens, n, qe_vocab_size(one));
    const int D = qe_dim(one);
    float *a = run(one, ids, lens, n, 0);
    sim.max_in_flight = 0;
    float *b = run(many, ids, lens, n, 0);
    cr_expect_geq(sim.max_in_flight, 2, "steps were waited for one by one (%ld in flight)",
                  sim.max_in_flight);
    cr_expect(memcmp(a, b, sizeof(float) * (size_t)n * D) == 0,
              "pipelined steps vs one step differ (worst cosine %.7f)", worst_cos(a, b, n, D));
    setenv("QE_PROFILE", "1", 1);
    qe_engine *prof = open_cuda(dir, 64, QE_OK, err, sizeof err);
    unsetenv("QE_PROFILE");
    sim.max_in_flight = 0;
    float *c = run(prof, ids, lens, n, 0);
    cr_expect_eq(sim.max_in_flight, 1, "profiled steps overlapped (%ld in flight)",
                 sim.max_in_flight);
    cr_expect(memcmp(a, c, sizeof(float) * (size_t)n * D) == 0, "profiled run differs");
    for (int i = 0; i < n; i++)
        free(ids[i]);
    free(ids), free(a), free(b), free(c);
    qe_close(prof), qe_close(many), qe_close(one);
    cr_expect_eq(sim.live_allocs, 0, "device/pinned allocations leaked: %ld", sim.live_allocs);
}

/* qe_options.kv_pool_tokens: the paged pool is made by qe_open (rounded up to pages) and a long
 * sequence within it allocates nothing more; -1 makes none; a size asked for that cannot fit
 * fails qe_open with NOMEM and a message naming the flag, while the default shrinks to fit. */
Test(cuda_emu, kv_pool_made_at_open) {
    char dir[1100], err[512] = "";
    tu_make_model(dir, sizeof dir, "hs-rv", (tu_geometry){2048, 128, 256, 2, 2, 2}, ST_BF16, 0, 3);
    const size_t per_token = (size_t)2 * 2 * 256 * 2; /* layers x (k, v) x kv_dim x bf16 */
    qe_options o;
    memset(&o, 0, sizeof o);
    o.model_dir = dir;
    o.backend = QE_BACKEND_CUDA;
    o.max_batch_tokens = 64;
    qe_engine *none = NULL, *eager = NULL;
    o.kv_pool_tokens = -1;
    cr_assert_eq(qe_open(&o, &none, err, sizeof err), QE_OK, "%s", err);
    cr_expect_eq(qe_kv_pool_tokens(none), 0);
    o.kv_pool_tokens = 1100; /* 5 pages of 256 */
    cr_assert_eq(qe_open(&o, &eager, err, sizeof err), QE_OK, "%s", err);
    cr_expect_eq(qe_kv_pool_tokens(eager), 1280);
    const size_t pool = qe_device_bytes(eager) - qe_device_bytes(none);
    cr_expect_eq(pool, per_token * 1280, "the pool of 1280 tokens took %zu bytes", pool);
    const size_t made = qe_device_bytes(eager);
    const int lens[] = {1100};
    rs = 31;
    int32_t **ids = rand_ids(lens, 1, qe_vocab_size(eager));
    fake_malloc_max = 0; /* no allocation may happen now */
    float *v = run(eager, ids, lens, 1, 0);
    fake_malloc_max = SIZE_MAX;
    cr_expect_eq(qe_device_bytes(eager), made, "the pool grew");
    cr_expect_eq(qe_kv_pool_used_tokens(eager), 0, "pages still held after the call");
    /* a sequence longer than a step and than the pool: refused, naming the flag */
    const int long_len[] = {1300};
    int32_t **ids2 = rand_ids(long_len, 1, qe_vocab_size(eager));
    float *out = malloc(sizeof(float) * 128);
    qe_status s = qe_embed_ids(eager, (const int32_t *const *)ids2, long_len, 1, 0, out);
    cr_expect_eq(s, QE_ERR_TOO_LONG, "got %s", qe_status_name(s));
    cr_expect(strstr(qe_last_error(eager), "--kv-pool-tokens"), "message: %s",
              qe_last_error(eager));
    free(out), free(ids2[0]), free(ids2);
    free(v), free(ids[0]), free(ids);
    qe_close(eager), qe_close(none);
    const long live = sim.live_allocs;
    o.kv_pool_tokens = 40960; /* 80 MiB asked for; the arena (32 MiB) fits, the pool does not */
    fake_malloc_max = 64 << 20;
    qe_engine *fail = NULL;
    s = qe_open(&o, &fail, err, sizeof err);
    cr_expect_eq(s, QE_ERR_NOMEM, "got %s: %s", qe_status_name(s), err);
    cr_expect(fail == NULL);
    cr_expect(strstr(err, "40960 tokens") && strstr(err, "--kv-pool-tokens"), "message: %s", err);
    cr_expect_eq(sim.live_allocs, live, "the failed open leaked %ld allocations",
                 sim.live_allocs - live);
    o.kv_pool_tokens = 0; /* the default: the model's 40960 positions, halved until it fits */
    qe_engine *shrunk = NULL;
    s = qe_open(&o, &shrunk, err, sizeof err);
    fake_malloc_max = SIZE_MAX;
    cr_assert_eq(s, QE_OK, "%s", err);
    cr_expect(qe_kv_pool_tokens(shrunk) > 0 && qe_kv_pool_tokens(shrunk) < 40960, "pool %d",
              qe_kv_pool_tokens(shrunk));
    qe_close(shrunk);
}

/* ================================================================== cancellation */

/* The stop function is polled before every step and chunk; a stop mid-document ends the call
 * with nothing left in flight on the stream, and the engine's next results are unchanged. */
Test(cuda_emu, cancel_stops_at_the_next_step_or_chunk, .timeout = 600) {
    char dir[1100], err[512] = "";
    tu_make_model(dir, sizeof dir, "hs-cx", (tu_geometry){2048, 128, 256, 2, 4, 2}, ST_BF16, 0, 3);
    qe_engine *e = open_cuda(dir, 64, QE_OK, err, sizeof err);
    int lens[6] = {1100, 60, 60, 60, 60, 60};
    rs = 41;
    int32_t **ids = rand_ids(lens, 6, qe_vocab_size(e));
    expect_stops_at_steps_and_chunks(e, ids, lens);
    for (int i = 0; i < 6; i++)
        free(ids[i]);
    free(ids);
    qe_close(e);
    cr_expect_eq(sim.live_allocs, 0, "device/pinned allocations leaked: %ld", sim.live_allocs);
}

/* ================================================================== tensor parallelism */

/* TP (issue 14): runtime/cuda_tp.c's ranks, one per fake device and one host thread each, with
 * the NCCL stand-in (hostsim_nccl.c: all-reduce in rank order) on the emulated kernels. */
#ifdef QE_HAVE_NCCL

static qe_engine *open_cuda_tp(const char *dir, int tp, const int *devices, int max_tokens) {
    qe_options o;
    memset(&o, 0, sizeof o);
    o.model_dir = dir, o.backend = QE_BACKEND_CUDA;
    o.tensor_parallel = tp, o.tp_devices = devices, o.max_batch_tokens = max_tokens;
    qe_engine *e = NULL;
    char err[512] = "";
    const qe_status s = qe_open(&o, &e, err, sizeof err);
    cr_assert_eq(s, QE_OK, "qe_open(cuda, tp %d) = %s: %s", tp, qe_status_name(s), err);
    return e;
}

/* The largest relative difference of a row over rows of width d: |a_r - b_r| / |b_r| (L2). */
static double worst_row_rel(const float *a, const float *b, int rows, int d) {
    double w = 0;
    for (int r = 0; r < rows; r++) {
        double dd = 0, bb = 0;
        for (int i = 0; i < d; i++) {
            const double x = (double)a[(size_t)r * d + i] - b[(size_t)r * d + i];
            dd += x * x, bb += (double)b[(size_t)r * d + i] * b[(size_t)r * d + i];
        }
        const double rel = sqrt(dd) / (sqrt(bb) + 1e-30);
        if (!(rel <= w)) w = rel; /* NaN sticks */
    }
    return w;
}

/* The residual stream after each layer: TP = n against one rank, same kernels, row by row. The
 * split changes only how o_proj's and down_proj's fp32 sums are grouped (each rank sums its share
 * of the inner dimension, then the all-reduce adds the shares): a few fp32 ulps, which is all the
 * first layer shows (~5e-7). But the next norm rounds its output to bf16 for the GEMMs, and an
 * element that sat within those ulps of a bf16 rounding boundary moves by one bf16 ulp (2^-8 of
 * itself), and the GEMMs spread that over the row. The bound: the row differs by less than one
 * bf16 ulp of the row as a whole, |a - b| <= 2^-8 |b| in L2, i.e. less than every element of it
 * being off by one bf16 rounding step; not the 1e-5 of the fp32 CPU split. */
#define TP_RESIDUAL_TOL (1.0 / 256)

static void tp_against_one_rank(const char *dir, int n, int budget, const int *lens, int n_seqs,
                                const char *what) {
    qe_engine *one = open_cuda(dir, budget, QE_OK, (char[512]){0}, 512);
    qe_engine *tp = open_cuda_tp(dir, n, NULL, budget);
    cr_expect_str_eq(qe_backend_name(tp), "cuda");
    const int D = qe_dim(one);
    rs = 4242;
    int32_t **ids = rand_ids(lens, n_seqs, qe_vocab_size(one));
    /* residual of the first sequence after each layer (through the pool when it is chunked) */
    float *ra = malloc(sizeof(float) * (size_t)lens[0] * D),
          *rb = malloc(sizeof(float) * (size_t)lens[0] * D);
    for (int l = 1; l <= 2; l++) {
        cr_assert_eq(qe_debug_residual(one, ids[0], lens[0], l, ra), QE_OK, "%s",
                     qe_last_error(one));
        cr_assert_eq(qe_debug_residual(tp, ids[0], lens[0], l, rb), QE_OK, "%s", qe_last_error(tp));
        const double w = worst_row_rel(rb, ra, lens[0], D);
        cr_log_info("%s, tp %d: residual after layer %d within %.2e", what, n, l, w);
        cr_expect_leq(w, TP_RESIDUAL_TOL, "%s, tp %d: residual after layer %d differs by %.3e",
                      what, n, l, w);
    }
    qe_debug_counters before, after;
    qe_debug_counters_get(tp, &before);
    float *va = run(one, ids, lens, n_seqs, 0), *vb = run(tp, ids, lens, n_seqs, 0);
    qe_debug_counters_get(tp, &after);
    const double w = worst_cos(vb, va, n_seqs, D);
    cr_log_info("%s, tp %d: worst cosine %.9f", what, n, w);
    cr_expect_geq(w, 0.99999, "%s, tp %d: worst cosine %.8f", what, n, w);
    /* the same again: the ranks' graphs (captured with their all-reduces) replay */
    float *vc = run(tp, ids, lens, n_seqs, 0);
    cr_expect(memcmp(vb, vc, sizeof(float) * (size_t)n_seqs * D) == 0, "%s, tp %d: runs differ",
              what, n);
    if (budget == 0)
        cr_expect_gt(after.graph_captures + after.graph_replays, 0, "%s, tp %d: no graphs", what,
                     n);
    for (int i = 0; i < n_seqs; i++)
        free(ids[i]);
    free(ids), free(ra), free(rb), free(va), free(vb), free(vc);
    qe_close(tp), qe_close(one);
}

/* A quantized GGUF file split two ways: the ranks' rows stay whole blocks, their o_proj and
 * down_proj column slices are dequantized to F32 (cuda_tp.c); the same bounds as a folder's. */
Test(cuda_emu, tp_gguf_equal_one_rank, .timeout = 900) {
    fake_devices = 2;
    char dir[1100], path[1200], err[1024] = "";
    tu_make_model(dir, sizeof dir, "hs-tp-gguf", (tu_geometry){2048, 256, 512, 2, 4, 2}, ST_BF16, 0,
                  9);
    const qz_ftype types[] = {QZ_Q8_0, QZ_Q4_K_M};
    const int lens[] = {40, 1, 7};
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "%s/m-%s.gguf", dir, qz_ftype_name(types[k]));
        const qz_opts q = {.model_dir = dir, .out_path = path, .ftype = types[k], .quiet = 1};
        cr_assert_eq(qz_run(&q, err, sizeof err), 0, "%s", err);
        tp_against_one_rank(path, 2, 0, lens, 3, qz_ftype_name(types[k]));
    }
    fake_devices = 1;
}

/* 16 query heads over 8 kv heads (GQA 2 on every rank) split 2, 4 and 8 ways. */
Test(cuda_emu, tp_2_4_8_equal_one_rank, .timeout = 1200) {
    fake_devices = 8;
    char dir[1100];
    tu_make_model(dir, sizeof dir, "hs-tp", (tu_geometry){2048, 64, 256, 2, 16, 8}, ST_BF16, 0, 7);
    const int lens[] = {40, 1, 7, 113};
    for (int n = 2; n <= 8; n *= 2)
        tp_against_one_rank(dir, n, 0, lens, 4, "whole");
    fake_devices = 1;
    cr_expect_eq(sim.live_allocs, 0, "device/pinned allocations leaked: %ld", sim.live_allocs);
}

/* A sequence past half the budget runs in chunks through each rank's share of the paged pool. */
Test(cuda_emu, tp_chunked_through_the_pool, .timeout = 1200) {
    fake_devices = 4;
    char dir[1100];
    tu_make_model(dir, sizeof dir, "hs-tp-chunk", (tu_geometry){2048, 64, 256, 2, 8, 4}, ST_BF16, 0,
                  8);
    const int lens[] = {150, 9, 33};
    tp_against_one_rank(dir, 2, 64, lens, 3, "chunked");
    tp_against_one_rank(dir, 4, 64, lens, 3, "chunked");
    fake_devices = 1;
    cr_expect_eq(sim.live_allocs, 0, "device/pinned allocations leaked: %ld", sim.live_allocs);
}

/* ALiBi: each rank takes its heads' slopes of the whole model's set. */
Test(cuda_emu, tp_alibi_equal_one_rank, .timeout = 900) {
    fake_devices = 2;
    char dir[1100];
    tu_make_model_with(dir, sizeof dir, "hs-tp-alibi", (tu_geometry){2048, 64, 128, 2, 8, 2},
                       ST_BF16, 0, 9, 1);
    const int lens[] = {60, 3};
    tp_against_one_rank(dir, 2, 0, lens, 2, "alibi");
    fake_devices = 1;
}

/* QE_CUDA_TP_NCCL=1 sends one rank through the NCCL path: the same vectors, bit for bit, as the
 * plain path (rank 0 accumulates as the plain path does; a one-rank all-reduce adds nothing). */
Test(cuda_emu, tp_one_rank_through_nccl_equals_plain, .timeout = 600) {
    char dir[1100], err[512] = "";
    tu_make_model(dir, sizeof dir, "hs-tp1", (tu_geometry){2048, 64, 128, 2, 4, 2}, ST_BF16, 0, 10);
    qe_engine *plain = open_cuda(dir, 0, QE_OK, err, sizeof err);
    setenv("QE_CUDA_TP_NCCL", "1", 1);
    qe_engine *nccl = open_cuda_tp(dir, 1, NULL, 0);
    unsetenv("QE_CUDA_TP_NCCL");
    rs = 11;
    int32_t **ids = rand_ids(LENS, NL, qe_vocab_size(plain));
    const int D = qe_dim(plain);
    float *a = run(plain, ids, LENS, NL, 0), *b = run(nccl, ids, LENS, NL, 0);
    cr_expect(memcmp(a, b, sizeof(float) * NL * (size_t)D) == 0, "plain vs one NCCL rank: cos %.8f",
              worst_cos(a, b, NL, D));
    qe_debug_counters c;
    qe_debug_counters_get(nccl, &c);
    cr_expect_gt(c.graph_captures, 0, "the NCCL path captured no graph");
    for (int i = 0; i < NL; i++)
        free(ids[i]);
    free(ids), free(a), free(b);
    qe_close(nccl), qe_close(plain);
    cr_expect_eq(sim.live_allocs, 0, "device/pinned allocations leaked: %ld", sim.live_allocs);
}

Test(cuda_emu, tp_refusals_name_the_fix) {
    fake_devices = 2;
    char dir[1100], err[512] = "";
    tu_make_model(dir, sizeof dir, "hs-tp-bad", (tu_geometry){2048, 64, 208, 1, 8, 4}, ST_BF16, 0,
                  12);
    qe_options o;
    memset(&o, 0, sizeof o);
    o.model_dir = dir, o.backend = QE_BACKEND_CUDA;
    qe_engine *e = NULL;
    o.tensor_parallel = 3; /* divides neither the 8 heads nor the 4 kv heads */
    cr_expect_eq(qe_open(&o, &e, err, sizeof err), QE_ERR_ARG);
    cr_expect(strstr(err, "valid: 1, 2, 4"), "%s", err);
    o.tensor_parallel = 2;
    const int twice[] = {1, 1};
    o.tp_devices = twice;
    cr_expect_eq(qe_open(&o, &e, err, sizeof err), QE_ERR_ARG);
    cr_expect(strstr(err, "both on device 1"), "%s", err);
    const int missing[] = {0, 5};
    o.tp_devices = missing;
    cr_expect_neq(qe_open(&o, &e, err, sizeof err), QE_OK);
    cr_expect(strstr(err, "rank 1") && strstr(err, "device 5 does not exist"), "%s", err);
    o.tp_devices = NULL, o.tensor_parallel = 4; /* four devices wanted, two present */
    fake_devices = 4;
    cr_expect_eq(qe_open(&o, &e, err, sizeof err), QE_ERR_UNSUPPORTED); /* 208 / 4 = 52 columns */
    cr_expect(strstr(err, "multiple of 8"), "%s", err);
    fake_devices = 1;
    cr_expect_null(e);
    cr_expect_eq(sim.live_allocs, 0, "device/pinned allocations leaked: %ld", sim.live_allocs);
}

/* Cancellation under TP: the caller's stop is polled once per step or chunk, by rank 0 only (the
 * poll counts of the plain engine), every rank stops at the same step, and the engine's vectors
 * are unchanged afterwards (no rank was left behind in an all-reduce). */
Test(cuda_emu, tp_cancel_stops_every_rank_at_the_same_step, .timeout = 900) {
    fake_devices = 2;
    char dir[1100];
    tu_make_model(dir, sizeof dir, "hs-tp-cx", (tu_geometry){2048, 64, 128, 2, 4, 2}, ST_BF16, 0,
                  17);
    qe_engine *e = open_cuda_tp(dir, 2, NULL, 64);
    int lens[6] = {1100, 60, 60, 60, 60, 60};
    rs = 43;
    int32_t **ids = rand_ids(lens, 6, qe_vocab_size(e));
    expect_stops_at_steps_and_chunks(e, ids, lens);
    for (int i = 0; i < 6; i++)
        free(ids[i]);
    free(ids);
    qe_close(e);
    fake_devices = 1;
    cr_expect_eq(sim.live_allocs, 0, "device/pinned allocations leaked: %ld", sim.live_allocs);
}

typedef struct tp_call {
    qe_engine *e;
    int32_t **ids;
    const int *lens;
    int n;
    float *out;
    qe_status st;
} tp_call;
static void *tp_call_main(void *p) {
    tp_call *c = p;
    for (int k = 0; k < 3 && c->st == QE_OK; k++) /* a few rounds, overlapping the other engine */
        c->st = qe_embed_ids(c->e, (const int32_t *const *)c->ids, c->lens, c->n, 0, c->out);
    return NULL;
}

/* Data parallel x tensor parallel: two engines of two ranks on devices 0,1 and 2,3, called at
 * once from two threads, give one rank's vectors; then the same through `serve --devices 0-3
 * --tensor-parallel 2`. */
Test(cuda_emu, dp_times_tp_engines_and_server, .timeout = 1200) {
    fake_devices = 4;
    char dir[1100], err[512] = "";
    /* the full vocabulary: a server refuses a tokenizer whose end token the model lacks */
    tu_make_model(dir, sizeof dir, "hs-dptp", (tu_geometry){151669, 64, 128, 2, 4, 2}, ST_BF16, 0,
                  13);
    const int g0[] = {0, 1}, g1[] = {2, 3};
    qe_engine *one = open_cuda(dir, 0, QE_OK, err, sizeof err);
    qe_engine *e0 = open_cuda_tp(dir, 2, g0, 0), *e1 = open_cuda_tp(dir, 2, g1, 0);
    const int lens[] = {5, 70, 1, 33};
    rs = 14;
    int32_t **ids = rand_ids(lens, 4, qe_vocab_size(one));
    const int D = qe_dim(one);
    float *want = run(one, ids, lens, 4, 0);
    tp_call c[2] = {{e0, ids, lens, 4, malloc(sizeof(float) * 4 * D), QE_OK},
                    {e1, ids, lens, 4, malloc(sizeof(float) * 4 * D), QE_OK}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, tp_call_main, &c[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(c[i].st, QE_OK, "engine %d: %s", i, qe_last_error(c[i].e));
        cr_expect_geq(worst_cos(c[i].out, want, 4, D), 0.99999, "engine %d vs one rank: %.8f", i,
                      worst_cos(c[i].out, want, 4, D));
    }
    cr_expect(memcmp(c[0].out, c[1].out, sizeof(float) * 4 * D) == 0, "the two groups differ");
    qe_close(e0), qe_close(e1);

    serve_config sc;
    srvt_config(&sc);
    sc.model_dir = dir, sc.backend = QE_BACKEND_CUDA, sc.tensor_parallel = 2;
    for (int d = 0; d < 4; d++)
        sc.devices[d] = d;
    sc.n_devices = 4;
    srvt_server t;
    srvt_start(&t, &sc);
    cr_assert_not_null(serve_replica_engine(t.s, 0, 1), "two engines of two ranks");
    cr_expect_null(serve_replica_engine(t.s, 0, 2));
    char body[1024];
    size_t o = (size_t)snprintf(body, sizeof body, "{\"input\": [");
    for (int t0 = 0; t0 < lens[3]; t0++)
        o += (size_t)snprintf(body + o, sizeof body - o, "%s%d", t0 ? "," : "[", ids[3][t0]);
    snprintf(body + o, sizeof body - o, "]]}");
    for (int k = 0; k < 3; k++) {
        srvt_resp r;
        cr_expect_eq(srvt_post(t.base, "/v1/embeddings", body, &r), 200, "%s", r.body);
        srvt_expect_first_embedding(&r, want + 3 * (size_t)D, "dp x tp server");
    }
    srvt_stop(&t);
    /* groups that cannot be made: refused before anything loads */
    serve_server *bad = NULL;
    sc.n_devices = 3; /* not a multiple of 2 */
    cr_expect_neq(serve_start(&sc, &bad, err, sizeof err), 0);
    cr_expect(strstr(err, "not a multiple of --tensor-parallel 2"), "%s", err);
    sc.n_devices = 4, sc.devices[3] = 1; /* device 1 in both groups */
    cr_expect_neq(serve_start(&sc, &bad, err, sizeof err), 0);
    cr_expect(strstr(err, "device 1 is listed twice"), "%s", err);
    cr_expect_null(bad);
    for (int i = 0; i < 4; i++)
        free(ids[i]);
    free(ids), free(want), free(c[0].out), free(c[1].out);
    qe_close(one);
    fake_devices = 1;
    cr_expect_eq(sim.live_allocs, 0, "device/pinned allocations leaked: %ld", sim.live_allocs);
}

#else

Test(cuda_emu, tp_without_nccl_is_refused) {
    char dir[1100], err[512] = "";
    tu_make_model(dir, sizeof dir, "hs-tp-none", (tu_geometry){2048, 64, 128, 1, 4, 2}, ST_BF16, 0,
                  12);
    qe_options o;
    memset(&o, 0, sizeof o);
    o.model_dir = dir, o.backend = QE_BACKEND_CUDA, o.tensor_parallel = 2;
    qe_engine *e = NULL;
    cr_expect_eq(qe_open(&o, &e, err, sizeof err), QE_ERR_UNSUPPORTED);
    cr_expect(strstr(err, "needs NCCL"), "%s", err);
}

#endif

/* Two engines on one device (`serve --devices 0,0`) serving clients at once: every answer is one
 * engine's vector (the stand-in runs both engines' streams on the device's one queue). */
Test(cuda_emu, two_engines_share_one_device, .timeout = 900) {
    char dir[1100], err[512] = "";
    tu_make_model(dir, sizeof dir, "hs-share", (tu_geometry){151669, 64, 128, 2, 4, 2}, ST_BF16, 0,
                  15);
    qe_engine *one = open_cuda(dir, 0, QE_OK, err, sizeof err);
    const int lens[] = {3, 17, 64, 9};
    rs = 16;
    int32_t **ids = rand_ids(lens, 4, qe_vocab_size(one));
    const int D = qe_dim(one);
    float *want = run(one, ids, lens, 4, 0);
    qe_close(one);
    serve_config sc;
    srvt_config(&sc);
    sc.model_dir = dir, sc.backend = QE_BACKEND_CUDA;
    sc.devices[0] = 0, sc.devices[1] = 0, sc.n_devices = 2;
    sc.max_batch_tokens = 64; /* one request spreads over the two engines */
    srvt_server t;
    srvt_start(&t, &sc);
    cr_assert_not_null(serve_replica_engine(t.s, 0, 1));
    char body[4096];
    size_t o = (size_t)snprintf(body, sizeof body, "{\"input\": [");
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < lens[i]; k++)
            o += (size_t)snprintf(body + o, sizeof body - o, "%s%d%s", k ? "," : (i ? ",[" : "["),
                                  ids[i][k], k == lens[i] - 1 ? "]" : "");
    snprintf(body + o, sizeof body - o, "]}");
    enum { CLIENTS = 4 };
    srvt_bg bg[CLIENTS];
    for (int c = 0; c < CLIENTS; c++) {
        memset(&bg[c], 0, sizeof bg[c]);
        snprintf(bg[c].base, sizeof bg[c].base, "%s", t.base);
        bg[c].body = body;
        srvt_bg_start(&bg[c]);
    }
    for (int c = 0; c < CLIENTS; c++) {
        srvt_bg_join(&bg[c]);
        cr_assert_eq(bg[c].status, 200, "client %d: %s", c, bg[c].r.body);
        cJSON *j = srvt_json(&bg[c].r);
        for (int i = 0; i < 4; i++) {
            int dim = 0;
            float *v = srvt_openai_embedding(j, i, &dim);
            cr_assert_eq(dim, D);
            cr_expect_geq(tu_cosine_ff(v, want + (size_t)i * D, D), 0.99999,
                          "client %d input %d: cosine %.8f", c, i,
                          tu_cosine_ff(v, want + (size_t)i * D, D));
            free(v);
        }
        cJSON_Delete(j);
        srvt_resp_free(&bg[c].r);
    }
    srvt_stop(&t);
    for (int i = 0; i < 4; i++)
        free(ids[i]);
    free(ids), free(want);
    cr_expect_eq(sim.live_allocs, 0, "device/pinned allocations leaked: %ld", sim.live_allocs);
}

/* ================================================================== skinny GEMM */

#include "qe_emu.h" /* the kernel launch counts: the skinny kernel must have run */

/* Query-sized steps (at most 32 tokens, so every linear layer is an m <= 32 GEMM) through the
 * skinny path of qe_gemm_bf16 (issue 15, item 4), against the CPU backend and against the same
 * engine on the cuBLASLt path. On the skinny path the qkv and gate|up projections run with their
 * next op fused (gemm_skinny.cu): qe_qk_norm_rope's and qe_swiglu's own kernels must not run. */
Test(cuda_emu, skinny_gemm_query_steps_match_cpu, .timeout = 600) {
    char dir[1100], err[512] = "";
    tu_make_model(dir, sizeof dir, "hs-skinny", (tu_geometry){2048, 128, 384, 2, 4, 2}, ST_BF16, 0,
                  11);
    const int lens[] = {1, 7, 24, 32};
    qe_engine *cpu = open_cpu(dir), *gpu = open_cuda(dir, 32, QE_OK, err, sizeof err);
    rs = 13;
    int32_t **ids = rand_ids(lens, 4, qe_vocab_size(cpu));
    const int d = qe_dim(cpu);
    float *want = run(cpu, ids, lens, 4, 0);
    cr_assert_eq(qe_gemm_select(0), 0);
    float *lt = run(gpu, ids, lens, 4, 0);
    const long before = qe_emu_stats("gemm_skinny_kernel").launches;
    const long rope0 = qe_emu_stats("skinny_qkv_norm_rope_kernel").launches,
               swiglu0 = qe_emu_stats("skinny_swiglu_kernel").launches,
               unfused0 = qe_emu_stats("qk_norm_rope_kernel").launches +
                          qe_emu_stats("swiglu_vec8_kernel").launches;
    cr_assert_eq(qe_gemm_select(1), 0);
    float *sk = run(gpu, ids, lens, 4, 0);
    const long launched = qe_emu_stats("gemm_skinny_kernel").launches - before;
    cr_assert_eq(qe_gemm_select(-1), 0);
    cr_expect(launched > 0, "the skinny path ran no skinny kernel");
    cr_expect(qe_emu_stats("skinny_qkv_norm_rope_kernel").launches > rope0 &&
                  qe_emu_stats("skinny_swiglu_kernel").launches > swiglu0,
              "the fused epilogues did not run");
    cr_expect_eq(qe_emu_stats("qk_norm_rope_kernel").launches +
                     qe_emu_stats("swiglu_vec8_kernel").launches,
                 unfused0, "qk_norm_rope or swiglu ran beside the fused epilogues");
    const double w_cpu = worst_cos(want, sk, 4, d), w_lt = worst_cos(lt, sk, 4, d);
    cr_log_info("skinny GEMM, query steps (%ld skinny launches): worst cosine vs cpu %.6f, vs "
                "the cuBLASLt path %.6f",
                launched, w_cpu, w_lt);
    cr_expect(w_cpu >= SIM_COS, "skinny path vs cpu: worst cosine %.6f", w_cpu);
    cr_expect(w_lt >= SIM_COS, "skinny path vs the cuBLASLt path: worst cosine %.6f", w_lt);
    free(want), free(lt), free(sk);
    for (int i = 0; i < 4; i++)
        free(ids[i]);
    free(ids);
    qe_close(gpu), qe_close(cpu);
}

/* ================================================================== fused GEMM epilogues */

/* QE_GEMM=fused (issue 15, item 3): the qkv product with q/k-norm + RoPE and the gate/up product
 * with SwiGLU in one kernel each (gemm_fused.cu), against the CPU backend within the GPU
 * tolerance, on a RoPE and an ALiBi model (rope_theta 0: the norm only), whole and in chunks
 * through the paged pool (the chunks' absolute positions); both fused kernels must have run. */
Test(cuda_emu, fused_gemm_epilogues_match_cpu, .timeout = 900) {
    char dir[1100], err[512] = "";
    const int lens[] = {1, 150, 300, 33};
    for (int alibi = 0; alibi < 2; alibi++) {
        tu_make_model_with(dir, sizeof dir, alibi ? "hs-fused-alibi" : "hs-fused",
                           (tu_geometry){2048, 128, 256, 2, 4, 2}, ST_BF16, 0, 17, alibi);
        qe_engine *cpu = open_cpu(dir);
        rs = 19;
        int32_t **ids = rand_ids(lens, 4, qe_vocab_size(cpu));
        float *want = run(cpu, ids, lens, 4, 0);
        cr_assert_eq(qe_gemm_select(QE_GEMM_PATH_FUSED), 0);
        for (int budget = 0; budget <= 128; budget += 128) { /* 128: 300 tokens in chunks */
            const long qkv0 = qe_emu_stats("gemm_qkv_norm_rope_kernel").launches,
                       glu0 = qe_emu_stats("gemm_swiglu_kernel").launches;
            qe_engine *gpu = open_cuda(dir, budget, QE_OK, err, sizeof err);
            float *got = run(gpu, ids, lens, 4, 0);
            const long qkv = qe_emu_stats("gemm_qkv_norm_rope_kernel").launches - qkv0,
                       glu = qe_emu_stats("gemm_swiglu_kernel").launches - glu0;
            const double w = worst_cos(want, got, 4, qe_dim(cpu));
            cr_log_info("fused GEMMs (%s), budget %d: %ld + %ld fused launches; worst cosine vs "
                        "cpu %.6f",
                        alibi ? "alibi" : "rope", budget, qkv, glu, w);
            cr_expect(qkv > 0 && glu > 0, "budget %d: %ld qkv and %ld gate/up fused launches",
                      budget, qkv, glu);
            cr_expect(w >= SIM_COS, "fused GEMMs (%s), budget %d: worst cosine %.6f",
                      alibi ? "alibi" : "rope", budget, w);
            free(got);
            qe_close(gpu);
        }
        cr_assert_eq(qe_gemm_select(-1), 0);
        for (int i = 0; i < 4; i++)
            free(ids[i]);
        free(ids), free(want);
        qe_close(cpu);
    }
    cr_expect_eq(sim.live_allocs, 0, "device/pinned allocations leaked: %ld", sim.live_allocs);
}

/* QE_GEMM=fused-skinny: a step of at most 32 tokens takes the skinny kernels with their fused
 * epilogues and no wgmma GEMM, a longer one the wgmma fused kernels, except its last layer's
 * gate/up product over the sequences' last tokens alone (2 rows), which is skinny again; both
 * match the CPU backend. */
Test(cuda_emu, fused_skinny_path_splits_by_rows, .timeout = 900) {
    char dir[1100], err[512] = "";
    tu_make_model(dir, sizeof dir, "hs-fused-skinny", (tu_geometry){2048, 128, 256, 2, 4, 2},
                  ST_BF16, 0, 31);
    static const int query[] = {1, 7, 24}, longer[] = {40, 3};
    static const char *const K[] = {"gemm_qkv_norm_rope_kernel", "gemm_swiglu_kernel",
                                    "skinny_qkv_norm_rope_kernel", "skinny_swiglu_kernel"};
    qe_engine *cpu = open_cpu(dir), *gpu = open_cuda(dir, 0, QE_OK, err, sizeof err);
    cr_assert_eq(qe_gemm_select(QE_GEMM_PATH_FUSED_SKINNY), 0);
    cr_expect_str_eq(qe_gemm_path_name(QE_GEMM_PATH_FUSED_SKINNY), "fused-skinny");
    for (int c = 0; c < 2; c++) {
        const int *lens = c ? longer : query, n = c ? 2 : 3;
        rs = 43 + c;
        int32_t **ids = rand_ids(lens, n, qe_vocab_size(cpu));
        long before[4], ran[4];
        for (int k = 0; k < 4; k++)
            before[k] = qe_emu_stats(K[k]).launches;
        float *want = run(cpu, ids, lens, n, 0), *got = run(gpu, ids, lens, n, 0);
        for (int k = 0; k < 4; k++)
            ran[k] = qe_emu_stats(K[k]).launches - before[k];
        const double w = worst_cos(want, got, n, qe_dim(cpu));
        cr_log_info("fused-skinny, %s step: wgmma qkv %ld, gate/up %ld; skinny qkv %ld, gate/up "
                    "%ld; worst cosine vs cpu %.6f",
                    c ? "43-token" : "32-token", ran[0], ran[1], ran[2], ran[3], w);
        if (c == 0)
            cr_expect(ran[0] == 0 && ran[1] == 0 && ran[2] > 0 && ran[3] > 0,
                      "a 32-token step ran wgmma %ld + %ld, skinny %ld + %ld", ran[0], ran[1],
                      ran[2], ran[3]);
        else
            cr_expect(ran[0] > 0 && ran[1] > 0 && ran[2] == 0 && ran[3] > 0,
                      "a 43-token step ran wgmma %ld + %ld, skinny %ld + %ld", ran[0], ran[1],
                      ran[2], ran[3]);
        cr_expect(w >= SIM_COS, "fused-skinny: worst cosine %.6f", w);
        for (int i = 0; i < n; i++)
            free(ids[i]);
        free(ids), free(want), free(got);
    }
    cr_assert_eq(qe_gemm_select(-1), 0);
    qe_close(gpu), qe_close(cpu);
    cr_expect_eq(sim.live_allocs, 0, "device/pinned allocations leaked: %ld", sim.live_allocs);
}

/* QE_GEMM=fused where the fused kernels do not apply: a GGUF kept quantized (its matrices go
 * through the quantized GEMM, no fused launch) and tensor parallelism over two ranks whose
 * intermediate slice (96 columns) is no multiple of 64 (the gate/up product falls back to
 * cuBLASLt + qe_swiglu; each rank's qkv, whole heads, is fused). Both still match the CPU
 * backend. */
Test(cuda_emu, fused_gemm_falls_back_quantized_and_tp, .timeout = 900) {
    char dir[1100], path[1200], err[1024] = "";
    tu_scratch_dir(dir, sizeof dir, "hs-fused-q");
    write_superblock_model(dir);
    snprintf(path, sizeof path, "%s/q-q8_0.gguf", dir);
    const qz_opts q = {.model_dir = dir, .out_path = path, .ftype = QZ_Q8_0, .quiet = 1};
    cr_assert_eq(qz_run(&q, err, sizeof err), 0, "%s", err);
    cr_assert_eq(qe_gemm_select(QE_GEMM_PATH_FUSED), 0);
    long f0 = qe_emu_stats("gemm_qkv_norm_rope_kernel").launches +
              qe_emu_stats("gemm_swiglu_kernel").launches;
    const double wq = cuda_vs_cpu_on(path, 37, NULL);
    const long fq = qe_emu_stats("gemm_qkv_norm_rope_kernel").launches +
                    qe_emu_stats("gemm_swiglu_kernel").launches - f0;
    cr_log_info("fused selected, q8_0 GGUF kept quantized: %ld fused launches, worst cosine vs "
                "cpu %.6f",
                fq, wq);
    cr_expect_eq(fq, 0, "a quantized file ran %ld fused GEMMs", fq);
    cr_expect(wq >= SIM_COS, "fused selected, q8_0 GGUF: worst cosine %.6f", wq);

    fake_devices = 2;
    tu_make_model(dir, sizeof dir, "hs-fused-tp", (tu_geometry){2048, 128, 192, 2, 4, 2}, ST_BF16,
                  0, 23);
    const int lens[] = {40, 1, 7};
    qe_engine *cpu = open_cpu(dir), *tp = open_cuda_tp(dir, 2, NULL, 0);
    rs = 41;
    int32_t **ids = rand_ids(lens, 3, qe_vocab_size(cpu));
    const long qkv0 = qe_emu_stats("gemm_qkv_norm_rope_kernel").launches,
               glu0 = qe_emu_stats("gemm_swiglu_kernel").launches;
    float *want = run(cpu, ids, lens, 3, 0), *got = run(tp, ids, lens, 3, 0);
    const long qkv = qe_emu_stats("gemm_qkv_norm_rope_kernel").launches - qkv0,
               glu = qe_emu_stats("gemm_swiglu_kernel").launches - glu0;
    const double wt = worst_cos(want, got, 3, qe_dim(cpu));
    cr_log_info("fused selected, tp 2 (inter 96 a rank): %ld qkv, %ld gate/up fused launches; "
                "worst cosine vs cpu %.6f",
                qkv, glu, wt);
    cr_expect(qkv > 0 && glu == 0, "tp 2: %ld qkv and %ld gate/up fused launches", qkv, glu);
    cr_expect(wt >= SIM_COS, "fused selected, tp 2: worst cosine %.6f", wt);
    cr_assert_eq(qe_gemm_select(-1), 0);
    for (int i = 0; i < 3; i++)
        free(ids[i]);
    free(ids), free(want), free(got);
    qe_close(tp), qe_close(cpu);
    fake_devices = 1;
    cr_expect_eq(sim.live_allocs, 0, "device/pinned allocations leaked: %ld", sim.live_allocs);
}

/* QE_GEMM=fused under tensor parallelism where every rank's slice takes both fused kernels (128
 * intermediate columns and 2 + 1 heads a rank): the same bounds against one rank as a plain run. */
Test(cuda_emu, fused_gemm_tp_equal_one_rank, .timeout = 900) {
    fake_devices = 2;
    char dir[1100];
    tu_make_model(dir, sizeof dir, "hs-fused-tp2", (tu_geometry){2048, 128, 256, 2, 4, 2}, ST_BF16,
                  0, 27);
    const int lens[] = {40, 1, 7};
    cr_assert_eq(qe_gemm_select(QE_GEMM_PATH_FUSED), 0);
    const long glu0 = qe_emu_stats("gemm_swiglu_kernel").launches;
    tp_against_one_rank(dir, 2, 0, lens, 3, "fused");
    cr_expect_gt(qe_emu_stats("gemm_swiglu_kernel").launches - glu0, 0, "no fused gate/up ran");
    cr_assert_eq(qe_gemm_select(-1), 0);
    fake_devices = 1;
    cr_expect_eq(sim.live_allocs, 0, "device/pinned allocations leaked: %ld", sim.live_allocs);
}
