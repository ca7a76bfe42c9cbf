/* cublaslt_emu.c — a host stand-in for the part of cuBLASLt that kernels/gemm.cu uses, written
 * from cuBLASLt's documented semantics, so gemm.cu runs unchanged in the emulated suites and its
 * use of the API (the row-major to column-major mapping, leading dimensions, transposes, beta = 1
 * accumulation, output types, alignment preferences) is checked against an independent reading.
 *
 * cublasLtMatmul computes D = alpha * op(A) * op(B) + beta * C on column-major matrices: element
 * (i, j) of a layout (rows, cols, ld) is at i + j * ld; op(X) is X or its transpose; op(A) is
 * m x k, op(B) k x n, C and D m x n. Supported: A and B bf16, C and D bf16 or fp32 (the same
 * type), compute CUBLAS_COMPUTE_32F, scale CUDA_R_32F, alpha and beta on the host. Anything else
 * (another type, an attribute not listed, a shape that does not match) fails with the status
 * cuBLASLt documents, so an unemulated use cannot pass silently. The product runs on the
 * stand-in stream (tests/hostsim_runtime.c), like a kernel. */
#include <cublasLt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int sim_enqueue(int (*run)(const void *args), const void *args, size_t n);

struct cublasLtContext {
    int live;
};

typedef struct emu_desc {
    cublasComputeType_t compute;
    cudaDataType_t scale;
    int32_t trans_a, trans_b;
} emu_desc;

typedef struct emu_layout {
    cudaDataType_t type;
    uint64_t rows, cols;
    int64_t ld;
} emu_layout;

typedef struct emu_pref {
    uint64_t max_workspace;
    uint32_t min_align[4]; /* A, B, C, D */
} emu_pref;

/* What the heuristic puts in the opaque algorithm: a tag and the alignments it was chosen for
 * (cuBLASLt's kernels may assume them; a call with less-aligned pointers is refused). */
#define EMU_ALGO_TAG 0x454d554c54ull /* "EMULT" */
typedef struct emu_algo {
    uint64_t tag;
    uint32_t min_align[4];
} emu_algo;

const char *cublasLtGetStatusName(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS:
        return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
        return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
        return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
        return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED:
        return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_EXECUTION_FAILED:
        return "CUBLAS_STATUS_EXECUTION_FAILED";
    default:
        return "CUBLAS_STATUS_(emulated: other)";
    }
}

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) {
    if (!h) return CUBLAS_STATUS_INVALID_VALUE;
    *h = calloc(1, sizeof **h);
    if (!*h) return CUBLAS_STATUS_ALLOC_FAILED;
    (*h)->live = 1;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
    if (!h || !h->live) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->live = 0;
    free(h);
    return CUBLAS_STATUS_SUCCESS;
}

/* ---------------------------------------------------------------- descriptors */

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute,
                                        cudaDataType_t scale) {
    if (!d) return CUBLAS_STATUS_INVALID_VALUE;
    emu_desc *e = calloc(1, sizeof *e);
    if (!e) return CUBLAS_STATUS_ALLOC_FAILED;
    e->compute = compute, e->scale = scale, e->trans_a = CUBLAS_OP_N, e->trans_b = CUBLAS_OP_N;
    *d = (cublasLtMatmulDesc_t)(void *)e;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
    free(d);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d,
                                              cublasLtMatmulDescAttributes_t attr, const void *buf,
                                              size_t n) {
    emu_desc *e = (emu_desc *)(void *)d;
    if (!e || !buf) return CUBLAS_STATUS_INVALID_VALUE;
    int32_t *slot = attr == CUBLASLT_MATMUL_DESC_TRANSA   ? &e->trans_a
                    : attr == CUBLASLT_MATMUL_DESC_TRANSB ? &e->trans_b
                                                          : NULL;
    if (!slot) return CUBLAS_STATUS_NOT_SUPPORTED; /* not emulated */
    if (n != sizeof *slot) return CUBLAS_STATUS_INVALID_VALUE;
    memcpy(slot, buf, n);
    if (*slot != CUBLAS_OP_N && *slot != CUBLAS_OP_T) return CUBLAS_STATUS_NOT_SUPPORTED;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
    if (!l) return CUBLAS_STATUS_INVALID_VALUE;
    if (ld < (int64_t)rows || rows == 0 || cols == 0) return CUBLAS_STATUS_INVALID_VALUE;
    emu_layout *e = calloc(1, sizeof *e);
    if (!e) return CUBLAS_STATUS_ALLOC_FAILED;
    e->type = type, e->rows = rows, e->cols = cols, e->ld = ld;
    *l = (cublasLtMatrixLayout_t)(void *)e;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
    free(l);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
    if (!p) return CUBLAS_STATUS_INVALID_VALUE;
    emu_pref *e = calloc(1, sizeof *e);
    if (!e) return CUBLAS_STATUS_ALLOC_FAILED;
    for (int i = 0; i < 4; i++)
        e->min_align[i] = 256; /* the documented default */
    *p = (cublasLtMatmulPreference_t)(void *)e;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
    free(p);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void *buf, size_t n) {
    emu_pref *e = (emu_pref *)(void *)p;
    if (!e || !buf) return CUBLAS_STATUS_INVALID_VALUE;
    void *slot = NULL;
    size_t want = sizeof(uint32_t);
    switch (attr) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
        slot = &e->max_workspace, want = sizeof e->max_workspace;
        break;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
        slot = &e->min_align[0];
        break;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
        slot = &e->min_align[1];
        break;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
        slot = &e->min_align[2];
        break;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
        slot = &e->min_align[3];
        break;
    default:
        return CUBLAS_STATUS_NOT_SUPPORTED; /* not emulated */
    }
    if (n != want) return CUBLAS_STATUS_INVALID_VALUE;
    memcpy(slot, buf, n);
    return CUBLAS_STATUS_SUCCESS;
}

/* ---------------------------------------------------------------- shapes */

static size_t type_bytes(cudaDataType t) {
    return t == CUDA_R_16BF ? 2 : t == CUDA_R_32F ? 4 : 0;
}

/* op(A) m x k, op(B) k x n, C and D m x n; 0 when everything agrees and is supported. */
static cublasStatus_t check_shapes(const emu_desc *d, const emu_layout *a, const emu_layout *b,
                                   const emu_layout *c, const emu_layout *dd, uint64_t *m,
                                   uint64_t *n, uint64_t *k) {
    if (!d || !a || !b || !c || !dd) return CUBLAS_STATUS_INVALID_VALUE;
    if (d->compute != CUBLAS_COMPUTE_32F || d->scale != CUDA_R_32F)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (a->type != CUDA_R_16BF || b->type != CUDA_R_16BF || c->type != dd->type ||
        !type_bytes(c->type))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    *m = d->trans_a == CUBLAS_OP_T ? a->cols : a->rows;
    *k = d->trans_a == CUBLAS_OP_T ? a->rows : a->cols;
    const uint64_t kb = d->trans_b == CUBLAS_OP_T ? b->cols : b->rows;
    *n = d->trans_b == CUBLAS_OP_T ? b->rows : b->cols;
    if (kb != *k || c->rows != *m || c->cols != *n || dd->rows != *m || dd->cols != *n)
        return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t results[],
                                              int *returned) {
    if (!h || !pref || !results || !returned || requested <= 0) return CUBLAS_STATUS_INVALID_VALUE;
    uint64_t m, n, k;
    cublasStatus_t st =
        check_shapes((emu_desc *)(void *)desc, (emu_layout *)(void *)a, (emu_layout *)(void *)b,
                     (emu_layout *)(void *)c, (emu_layout *)(void *)d, &m, &n, &k);
    *returned = 0;
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    memset(&results[0], 0, sizeof results[0]);
    emu_algo algo = {EMU_ALGO_TAG, {0, 0, 0, 0}};
    memcpy(algo.min_align, ((emu_pref *)(void *)pref)->min_align, sizeof algo.min_align);
    memcpy(&results[0].algo, &algo, sizeof algo);
    results[0].workspaceSize = 0;
    results[0].state = CUBLAS_STATUS_SUCCESS;
    results[0].wavesCount = 1.0f;
    *returned = 1;
    return CUBLAS_STATUS_SUCCESS;
}

/* The emulated "kernel" has one configuration; these are its honest answers. */
cublasStatus_t cublasLtMatmulAlgoConfigGetAttribute(const cublasLtMatmulAlgo_t *algo,
                                                    cublasLtMatmulAlgoConfigAttributes_t attr,
                                                    void *buf, size_t n, size_t *written) {
    if (!algo || ((const emu_algo *)(const void *)algo)->tag != EMU_ALGO_TAG)
        return CUBLAS_STATUS_INVALID_VALUE;
    uint32_t v;
    switch (attr) {
    case CUBLASLT_ALGO_CONFIG_ID:
        v = 0;
        break;
    case CUBLASLT_ALGO_CONFIG_TILE_ID:
        v = CUBLASLT_MATMUL_TILE_UNDEFINED;
        break;
    case CUBLASLT_ALGO_CONFIG_STAGES_ID:
        v = CUBLASLT_MATMUL_STAGES_UNDEFINED;
        break;
    case CUBLASLT_ALGO_CONFIG_SPLITK_NUM:
        v = 1;
        break;
    default:
        return CUBLAS_STATUS_NOT_SUPPORTED; /* not emulated */
    }
    if (n == 0 && written) {
        *written = sizeof v;
        return CUBLAS_STATUS_SUCCESS;
    }
    if (!buf || n != sizeof v) return CUBLAS_STATUS_INVALID_VALUE;
    memcpy(buf, &v, sizeof v);
    if (written) *written = sizeof v;
    return CUBLAS_STATUS_SUCCESS;
}

/* ---------------------------------------------------------------- the product */

static float bf16_to_f32(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint16_t f32_to_bf16(float f) { /* round to nearest even; NaN stays NaN */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FFF;
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

typedef struct matmul_args {
    emu_desc d;
    emu_layout a, b, c, dd;
    uint64_t m, n, k;
    float alpha, beta;
    const uint16_t *A, *B;
    const void *C;
    void *D;
} matmul_args;

/* op(X)(i, j) of a column-major bf16 layout */
static float at(const uint16_t *x, const emu_layout *l, int32_t trans, uint64_t i, uint64_t j) {
    return trans == CUBLAS_OP_T ? bf16_to_f32(x[j + i * (uint64_t)l->ld])
                                : bf16_to_f32(x[i + j * (uint64_t)l->ld]);
}

static int matmul_run(const void *p) {
    const matmul_args *a = p;
    const int f32 = a->dd.type == CUDA_R_32F;
    for (uint64_t j = 0; j < a->n; j++)
        for (uint64_t i = 0; i < a->m; i++) {
            double acc = 0; /* fp32 products of bf16 are exact; the sum rounds once */
            for (uint64_t kk = 0; kk < a->k; kk++)
                acc += (double)at(a->A, &a->a, a->d.trans_a, i, kk) *
                       at(a->B, &a->b, a->d.trans_b, kk, j);
            const uint64_t ci = i + j * (uint64_t)a->c.ld, di = i + j * (uint64_t)a->dd.ld;
            float v = a->alpha * (float)acc;
            if (a->beta != 0.0f) /* beta = 0: C is not read (it may hold NaN) */
                v += a->beta *
                     (f32 ? ((const float *)a->C)[ci] : bf16_to_f32(((const uint16_t *)a->C)[ci]));
            if (f32)
                ((float *)a->D)[di] = v;
            else
                ((uint16_t *)a->D)[di] = f32_to_bf16(v);
        }
    return 0;
}

static int aligned(const void *p, uint32_t a) {
    return a == 0 || (uintptr_t)p % a == 0;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t desc, const void *alpha,
                              const void *A, cublasLtMatrixLayout_t al, const void *B,
                              cublasLtMatrixLayout_t bl, const void *beta, const void *C,
                              cublasLtMatrixLayout_t cl, void *D, cublasLtMatrixLayout_t dl,
                              const cublasLtMatmulAlgo_t *algo, void *workspace, size_t ws,
                              cudaStream_t stream) {
    (void)workspace, (void)ws, (void)stream;
    if (!h || !h->live) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!alpha || !beta || !A || !B || !C || !D || !algo) return CUBLAS_STATUS_INVALID_VALUE;
    const emu_algo *ea = (const emu_algo *)(const void *)algo;
    if (ea->tag != EMU_ALGO_TAG) return CUBLAS_STATUS_INVALID_VALUE;
    matmul_args a;
    memset(&a, 0, sizeof a);
    cublasStatus_t st =
        check_shapes((emu_desc *)(void *)desc, (emu_layout *)(void *)al, (emu_layout *)(void *)bl,
                     (emu_layout *)(void *)cl, (emu_layout *)(void *)dl, &a.m, &a.n, &a.k);
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    a.d = *(emu_desc *)(void *)desc;
    a.a = *(emu_layout *)(void *)al, a.b = *(emu_layout *)(void *)bl;
    a.c = *(emu_layout *)(void *)cl, a.dd = *(emu_layout *)(void *)dl;
    if (!aligned(A, ea->min_align[0]) || !aligned(B, ea->min_align[1]) ||
        !aligned(C, ea->min_align[2]) || !aligned(D, ea->min_align[3]) || !aligned(A, 2) ||
        !aligned(B, 2) || !aligned(D, (uint32_t)type_bytes(a.dd.type)))
        return CUBLAS_STATUS_INVALID_VALUE; /* less aligned than the algorithm was chosen for */
    memcpy(&a.alpha, alpha, 4);             /* host pointer mode: read when the call is made */
    memcpy(&a.beta, beta, 4);
    a.A = A, a.B = B, a.C = C, a.D = D;
    return sim_enqueue(matmul_run, &a, sizeof a) == 0 ? CUBLAS_STATUS_SUCCESS
                                                      : CUBLAS_STATUS_EXECUTION_FAILED;
}
