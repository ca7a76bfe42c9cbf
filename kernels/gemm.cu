/* gemm.cu — the linear layers through cuBLASLt: y = x w^T with bf16 x and w, fp32 accumulate, bf16
 * or fp32 y (fp32 with beta = 1 adds o_proj / down_proj straight into the fp32 residual stream).
 * Plans (descriptors, layouts, the heuristic's algorithm) are cached per shape so the hot path
 * makes no heuristic query after the first step. Each plan also keeps what the heuristic chose
 * (algorithm, tile, stages, split-K) and a call count, so tools can say which algorithm each
 * shape ran (qe_gemm_describe). With QE_GEMM=skinny (or qe_gemm_select), calls of m <= 32 run the
 * split-K kernel of gemm_skinny.cu instead, on the same workspace. QE_GEMM=fused changes no call
 * here: it tells the CUDA backend to run the qkv and gate/up products of bf16 layers through the
 * fused-epilogue kernels of gemm_fused.cu (qe_gemm_swiglu, qe_gemm_qkv_norm_rope); every other
 * product still comes here and goes to cuBLASLt. */
#include <cublasLt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"
#include "kernel_switch.h"

#define CUBLAS_CHECK(call)                                                                         \
    QE_K_CHECK_GEN("cuBLAS", cublasStatus_t, call, CUBLAS_STATUS_SUCCESS, cublasLtGetStatusName)

#define GEMM_PLAN_CACHE 96

typedef struct gemm_key {
    int m, n, k, ldx, ldy, y_f32, accumulate;
    unsigned align_x, align_w, align_y;
} gemm_key;

typedef struct gemm_plan {
    int used;
    gemm_key key;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
    int algo_id, tile_id, stages_id, splitk; /* read off algo once, for qe_gemm_describe */
    long long calls;
} gemm_plan;

struct qe_gemm {
    cublasLtHandle_t lt;
    void *workspace;
    size_t workspace_bytes;
    gemm_plan plans[GEMM_PLAN_CACHE];
    int next_victim;
};

static void plan_release(gemm_plan *p) {
    if (!p->used) return;
    cublasLtMatrixLayoutDestroy(p->a);
    cublasLtMatrixLayoutDestroy(p->b);
    cublasLtMatrixLayoutDestroy(p->c);
    cublasLtMatmulDescDestroy(p->desc);
    p->used = 0;
}

extern "C" int qe_gemm_create(qe_gemm **out, void *workspace, size_t workspace_bytes) {
    QE_K_REQUIRE(out != NULL);
    *out = NULL;
    qe_gemm *g = (qe_gemm *)calloc(1, sizeof *g);
    QE_K_REQUIRE(g != NULL);
    cublasStatus_t st = cublasLtCreate(&g->lt);
    if (st != CUBLAS_STATUS_SUCCESS) {
        free(g);
        CUBLAS_CHECK(st);
    }
    g->workspace = workspace;
    g->workspace_bytes = workspace ? workspace_bytes : 0;
    *out = g;
    return QE_K_OK;
}

extern "C" void qe_gemm_destroy(qe_gemm *g) {
    if (!g) return;
    for (int i = 0; i < GEMM_PLAN_CACHE; i++)
        plan_release(&g->plans[i]);
    cublasLtDestroy(g->lt);
    free(g);
}

static unsigned ptr_alignment(const void *p) {
    unsigned a = 256;
    while (a > 1 && ((uintptr_t)p % a) != 0)
        a >>= 1;
    return a;
}

/* One of the four 4-byte configuration attributes of a chosen algorithm (ID and SPLITK_NUM are
 * int32, TILE_ID and STAGES_ID uint32, all small); -1 when cuBLASLt does not report it. */
static int algo_config(const cublasLtMatmulAlgo_t *algo,
                       cublasLtMatmulAlgoConfigAttributes_t attr) {
    int32_t v = 0;
    size_t written = 0;
    if (cublasLtMatmulAlgoConfigGetAttribute(algo, attr, &v, sizeof v, &written) !=
            CUBLAS_STATUS_SUCCESS ||
        written != sizeof v)
        return -1;
    return (int)v;
}

/* Row-major y[m,n] = x[m,k] w[n,k]^T is column-major y^T[n,m] = W x^T with W = (w viewed
 * column-major [k,n])^T: A = w (k x n, ld k, op T), B = x (k x m, ld ldx, op N), D = y (n x m). */
static int plan_build(qe_gemm *g, const gemm_key *key, gemm_plan *p) {
    memset(p, 0, sizeof *p);
    p->used = 1; /* from here on plan_release frees whatever was created, on any failure */
    const cublasOperation_t op_t = CUBLAS_OP_T, op_n = CUBLAS_OP_N;
    cublasStatus_t st = cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_t,
                                            sizeof op_t);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_n,
                                            sizeof op_n);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, key->k, key->n, key->k);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, key->k, key->m, key->ldx);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatrixLayoutCreate(&p->c, key->y_f32 ? CUDA_R_32F : CUDA_R_16BF, key->n,
                                        key->m, key->ldy);
    if (st != CUBLAS_STATUS_SUCCESS) {
        plan_release(p);
        CUBLAS_CHECK(st);
    }
    cublasLtMatmulPreference_t pref;
    st = cublasLtMatmulPreferenceCreate(&pref);
    if (st != CUBLAS_STATUS_SUCCESS) {
        plan_release(p);
        CUBLAS_CHECK(st);
    }
    const uint64_t ws = g->workspace_bytes;
    const uint32_t al_a = key->align_w, al_b = key->align_x, al_c = key->align_y;
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                              sizeof ws);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                  &al_a, sizeof al_a);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                  &al_b, sizeof al_b);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                  &al_c, sizeof al_c);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                  &al_c, sizeof al_c);
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0;
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasLtMatmulAlgoGetHeuristic(g->lt, p->desc, p->a, p->b, p->c, p->c, pref, 1, &heur,
                                            &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st == CUBLAS_STATUS_SUCCESS && found == 0) st = CUBLAS_STATUS_NOT_SUPPORTED;
    if (st != CUBLAS_STATUS_SUCCESS) {
        plan_release(p);
        CUBLAS_CHECK(st);
    }
    p->algo = heur.algo;
    p->algo_id = algo_config(&p->algo, CUBLASLT_ALGO_CONFIG_ID);
    p->tile_id = algo_config(&p->algo, CUBLASLT_ALGO_CONFIG_TILE_ID);
    p->stages_id = algo_config(&p->algo, CUBLASLT_ALGO_CONFIG_STAGES_ID);
    p->splitk = algo_config(&p->algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM);
    p->key = *key;
    p->used = 1;
    return QE_K_OK;
}

/* ---- the paths (issue 15, item 4): QE_GEMM picks, tests and benchmarks select ---- */

static const char *const PATH_NAMES[QE_GEMM_PATHS] = {"cublaslt", "skinny", "fused",
                                                      "fused-skinny"};
static kernel_switch path_switch = KERNEL_SWITCH("QE_GEMM", PATH_NAMES);

extern "C" int qe_gemm_path(void) {
    return kernel_switch_value(&path_switch);
}

extern "C" int qe_gemm_select(int path) {
    return kernel_switch_select(&path_switch, path);
}

extern "C" const char *qe_gemm_path_name(int path) {
    return kernel_switch_name(&path_switch, path);
}

extern "C" int qe_gemm_path_skinny(int m) {
    const int p = qe_gemm_path();
    return m <= QE_GEMM_SKINNY_MAX_M &&
           (p == QE_GEMM_PATH_SKINNY || p == QE_GEMM_PATH_FUSED_SKINNY);
}

extern "C" int qe_gemm_path_fused(int m) {
    const int p = qe_gemm_path();
    return p == QE_GEMM_PATH_FUSED || (p == QE_GEMM_PATH_FUSED_SKINNY && m > QE_GEMM_SKINNY_MAX_M);
}

/* The skinny path shares the cuBLASLt workspace for its split-K partials: both run in stream
 * order on the caller's stream, as every cuBLASLt call on this workspace already must. */
extern "C" int qe_gemm_bf16(qe_gemm *g, const qe_bf16 *x, int ldx, int m, int k, const qe_bf16 *w,
                            int n, void *y, int ldy, int y_f32, int accumulate, qe_stream s) {
    QE_K_REQUIRE(g != NULL && x != NULL && w != NULL && y != NULL);
    QE_K_REQUIRE(m >= 0 && n > 0 && k > 0 && ldx >= k && ldy >= n);
    QE_K_REQUIRE(!accumulate || y_f32);
    if (m == 0) return QE_K_OK;
    if (qe_gemm_path_skinny(m) && qe_gemm_skinny_supports(x, ldx, m, k, w, y, ldy, y_f32))
        return qe_gemm_skinny(x, ldx, m, k, w, n, y, ldy, y_f32, accumulate, (float *)g->workspace,
                              g->workspace_bytes, s);
    gemm_key key;
    memset(&key, 0, sizeof key);
    key.m = m, key.n = n, key.k = k, key.ldx = ldx, key.ldy = ldy;
    key.y_f32 = y_f32 ? 1 : 0, key.accumulate = accumulate ? 1 : 0;
    key.align_x = ptr_alignment(x), key.align_w = ptr_alignment(w), key.align_y = ptr_alignment(y);

    gemm_plan *plan = NULL;
    for (int i = 0; i < GEMM_PLAN_CACHE; i++)
        if (g->plans[i].used && memcmp(&g->plans[i].key, &key, sizeof key) == 0) {
            plan = &g->plans[i];
            break;
        }
    if (!plan) {
        plan = &g->plans[g->next_victim];
        g->next_victim = (g->next_victim + 1) % GEMM_PLAN_CACHE;
        plan_release(plan);
        if (plan_build(g, &key, plan) != QE_K_OK) return QE_K_ERR;
    }
    plan->calls++;
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    CUBLAS_CHECK(cublasLtMatmul(g->lt, plan->desc, &alpha, w, plan->a, x, plan->b, &beta, y,
                                plan->c, y, plan->c, &plan->algo, g->workspace, g->workspace_bytes,
                                s));
    return QE_K_OK;
}

extern "C" int qe_gemm_describe(const qe_gemm *g, qe_gemm_plan_info *out, int cap) {
    int n = 0;
    for (int i = 0; g && i < GEMM_PLAN_CACHE; i++) {
        const gemm_plan *p = &g->plans[i];
        if (!p->used) continue;
        if (n < cap) {
            qe_gemm_plan_info *d = &out[n];
            d->m = p->key.m, d->n = p->key.n, d->k = p->key.k;
            d->y_f32 = p->key.y_f32, d->accumulate = p->key.accumulate;
            d->algo_id = p->algo_id, d->tile_id = p->tile_id;
            d->stages_id = p->stages_id, d->splitk = p->splitk;
            d->calls = p->calls;
        }
        n++;
    }
    return n;
}
