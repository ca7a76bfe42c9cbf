/* backend_cuda.c — the CUDA forward pass: bf16 weights in one device allocation (q|k|v and
 * gate|up fused at load), one activation arena sized by max_batch_tokens, fp32 residual stream,
 * cuBLASLt GEMMs and our kernels (kernels/kernels.h) in the per-layer order of DESIGN.md.
 *
 * Last-layer shortcut: after the last layer's K/V only each sequence's last row feeds pooling, so
 * its q/k-rotated qkv row and residual row are gathered, attention runs with one query per
 * sequence against all keys, and o_proj + MLP run on n_seqs rows instead of n_tokens.
 * QE_CUDA_FULL_LAST_LAYER=1 disables it (tests compare both).
 *
 * QE_PROFILE=1 records a CUDA event after every op and prints per-op totals when the backend is
 * destroyed (qe_close). */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "kernels.h"

#define CUDA_CHECK(call) QE_K_CHECK_GEN("CUDA", cudaError_t, call, cudaSuccess, cudaGetErrorName)
#define K_CALL(call)                                                                               \
    do {                                                                                           \
        if ((call) != QE_K_OK) return QE_K_ERR;                                                    \
    } while (0)

#define ALIGN_BYTES 256
#define GEMM_WORKSPACE (32u << 20)
#define DEFAULT_MAX_TOKENS 16384

typedef enum {
    OP_EMBED,
    OP_NORM,
    OP_QKV,
    OP_ROPE,
    OP_ATTN,
    OP_OPROJ,
    OP_GATEUP,
    OP_SWIGLU,
    OP_DOWN,
    OP_GATHER,
    OP_POOL,
    OP_COUNT
} cuda_op;
static const char *const op_names[OP_COUNT] = {
    "embed",        "add_rmsnorm", "qkv_gemm",  "qk_norm_rope", "attention", "o_gemm",
    "gate_up_gemm", "swiglu",      "down_gemm", "gather_last",  "pool"};

typedef struct cuda_layer {
    qe_bf16 *wqkv;    /* [q_dim + 2*kv_dim, hidden] */
    qe_bf16 *wo;      /* [hidden, q_dim] */
    qe_bf16 *wgu;     /* [2*inter, hidden]: gate rows then up rows */
    qe_bf16 *wdown;   /* [hidden, inter] */
    float *attn_norm; /* [hidden] */
    float *mlp_norm;  /* [hidden] */
    float *q_norm;    /* [head_dim] */
    float *k_norm;    /* [head_dim] */
} cuda_layer;

typedef struct cuda_profile {
    int enabled;
    int cap, n;
    cudaEvent_t *events;
    int *ops;
    double ms[OP_COUNT];
    long long calls[OP_COUNT];
    long long steps;
} cuda_profile;

typedef struct cuda_state {
    qe_config cfg;
    int hidden, q_dim, kv_dim, qkv_dim, inter, heads, kv_heads, head_dim, layers, vocab;
    float eps;
    int max_tokens;
    int full_last_layer;
    cudaStream_t stream;
    void *wmem; /* every weight */
    size_t wbytes;
    void *amem; /* the activation arena */
    size_t abytes;
    qe_bf16 *embed;    /* [vocab, hidden] */
    float *final_norm; /* [hidden] */
    cuda_layer *layer;
    /* activations, T = max_tokens rows */
    float *x;          /* [T, hidden] residual stream */
    qe_bf16 *h;        /* [T, hidden] normed GEMM input */
    qe_bf16 *qkv;      /* [T, qkv_dim] */
    qe_bf16 *attn;     /* [T, q_dim] */
    qe_bf16 *gu;       /* [T, 2*inter] */
    qe_bf16 *act;      /* [T, inter] */
    float *x_last;     /* [T, hidden] residual rows of the pooled tokens */
    qe_bf16 *qkv_last; /* [T, qkv_dim] */
    float *pooled;     /* [T, hidden] */
    int32_t *d_ints;   /* tokens[T] | positions[T] | cu[T+1] | cu_last[T+1] */
    int32_t *h_ints;   /* pinned host staging of the same */
    void *gemm_ws;
    qe_gemm *gemm;
    cuda_profile prof;
} cuda_state;

static size_t align_up(size_t n) {
    return (n + ALIGN_BYTES - 1) / ALIGN_BYTES * ALIGN_BYTES;
}

/* Carves aligned pieces from a byte range; with base NULL it only measures. */
typedef struct carver {
    char *base;
    size_t used;
} carver;
static void *carve(carver *c, size_t bytes) {
    void *p = c->base ? c->base + c->used : NULL;
    c->used += align_up(bytes);
    return p;
}

/* ---------------------------------------------------------------- profiling */

static void prof_init(cuda_state *st) {
    const char *env = getenv("QE_PROFILE");
    if (!env || strcmp(env, "1") != 0) return;
    cuda_profile *p = &st->prof;
    p->cap = 16 + 12 * st->layers;
    p->events = calloc((size_t)p->cap, sizeof *p->events);
    p->ops = calloc((size_t)p->cap, sizeof *p->ops);
    if (!p->events || !p->ops) return;
    for (int i = 0; i < p->cap; i++)
        if (cudaEventCreate(&p->events[i]) != cudaSuccess) {
            p->cap = i;
            break;
        }
    p->enabled = p->cap > 1;
}

static void prof_start(cuda_state *st) {
    cuda_profile *p = &st->prof;
    if (!p->enabled) return;
    p->n = 0;
    cudaEventRecord(p->events[p->n++], st->stream);
}

static void prof_mark(cuda_state *st, cuda_op op) {
    cuda_profile *p = &st->prof;
    if (!p->enabled || p->n >= p->cap) return;
    p->ops[p->n] = op;
    cudaEventRecord(p->events[p->n++], st->stream);
}

static void prof_finish(cuda_state *st) {
    cuda_profile *p = &st->prof;
    if (!p->enabled || p->n < 2) return;
    cudaEventSynchronize(p->events[p->n - 1]);
    for (int i = 1; i < p->n; i++) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, p->events[i - 1], p->events[i]) == cudaSuccess) {
            p->ms[p->ops[i]] += ms;
            p->calls[p->ops[i]]++;
        }
    }
    p->steps++;
}

static void prof_report(cuda_state *st) {
    cuda_profile *p = &st->prof;
    if (!p->enabled) return;
    double total = 0;
    for (int i = 0; i < OP_COUNT; i++)
        total += p->ms[i];
    fprintf(stderr, "qembed cuda profile: %lld steps, %.3f ms of GPU time in ops\n", p->steps,
            total);
    fprintf(stderr, "  %-14s %12s %8s %10s %12s\n", "op", "total ms", "%", "calls", "us/call");
    for (int i = 0; i < OP_COUNT; i++) {
        if (!p->calls[i]) continue;
        fprintf(stderr, "  %-14s %12.3f %7.1f%% %10lld %12.2f\n", op_names[i], p->ms[i],
                total > 0 ? 100.0 * p->ms[i] / total : 0.0, p->calls[i],
                1000.0 * p->ms[i] / (double)p->calls[i]);
    }
}

static void prof_free(cuda_state *st) {
    cuda_profile *p = &st->prof;
    if (p->events)
        for (int i = 0; i < p->cap; i++)
            cudaEventDestroy(p->events[i]);
    free(p->events);
    free(p->ops);
    memset(p, 0, sizeof *p);
}

/* ---------------------------------------------------------------- weights */

#define STAGE_ELEMS ((size_t)8 << 20)

static uint16_t load_u16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}

/* Copies n elements of t (any dtype) as bf16 to dst; stage holds STAGE_ELEMS bf16. */
static int upload_bf16(qe_bf16 *dst, const st_tensor *t, size_t n, uint16_t *stage) {
    const uint8_t *src = t->data;
    if (t->dtype == ST_BF16) {
        CUDA_CHECK(cudaMemcpy(dst, src, n * 2, cudaMemcpyHostToDevice));
        return QE_K_OK;
    }
    for (size_t done = 0; done < n; done += STAGE_ELEMS) {
        size_t m = n - done < STAGE_ELEMS ? n - done : STAGE_ELEMS;
        for (size_t i = 0; i < m; i++) {
            size_t e = done + i;
            float f;
            if (t->dtype == ST_F32) {
                memcpy(&f, src + 4 * e, 4);
            } else {
                f = st_f16_to_f32(load_u16(src + 2 * e));
            }
            stage[i] = st_f32_to_bf16(f);
        }
        CUDA_CHECK(cudaMemcpy(dst + done, stage, m * 2, cudaMemcpyHostToDevice));
    }
    return QE_K_OK;
}

static int upload_f32(float *dst, const st_tensor *t, size_t n, float *tmp) {
    st_to_f32(t, tmp);
    CUDA_CHECK(cudaMemcpy(dst, tmp, n * sizeof(float), cudaMemcpyHostToDevice));
    return QE_K_OK;
}

/* Element count of t when it matches want and its dtype is one we convert; else 0. */
static size_t tensor_elems(const st_tensor *t, size_t want) {
    if (!t || (t->dtype != ST_BF16 && t->dtype != ST_F16 && t->dtype != ST_F32)) return 0;
    size_t n = t->nbytes / st_dtype_size(t->dtype);
    return n == want ? n : 0;
}

static qe_status check_tensors(const qe_model *m, const cuda_state *st, char *err, size_t errlen) {
    const size_t H = (size_t)st->hidden;
    struct {
        const st_tensor *t;
        size_t n;
        const char *what;
    } list[12];
    if (!tensor_elems(m->embed, (size_t)st->vocab * H)) {
        snprintf(err, errlen, "cuda backend: embedding table has an unexpected size or dtype");
        return QE_ERR_FORMAT;
    }
    if (!tensor_elems(m->final_norm, H)) {
        snprintf(err, errlen, "cuda backend: final norm has an unexpected size or dtype");
        return QE_ERR_FORMAT;
    }
    for (int l = 0; l < st->layers; l++) {
        const qe_layer_tensors *L = &m->layers[l];
        int k = 0;
        list[k].t = L->attn_norm, list[k].n = H, list[k++].what = "input_layernorm";
        list[k].t = L->wq, list[k].n = (size_t)st->q_dim * H, list[k++].what = "q_proj";
        list[k].t = L->wk, list[k].n = (size_t)st->kv_dim * H, list[k++].what = "k_proj";
        list[k].t = L->wv, list[k].n = (size_t)st->kv_dim * H, list[k++].what = "v_proj";
        list[k].t = L->q_norm, list[k].n = (size_t)st->head_dim, list[k++].what = "q_norm";
        list[k].t = L->k_norm, list[k].n = (size_t)st->head_dim, list[k++].what = "k_norm";
        list[k].t = L->wo, list[k].n = H * (size_t)st->q_dim, list[k++].what = "o_proj";
        list[k].t = L->mlp_norm, list[k].n = H, list[k++].what = "post_attention_layernorm";
        list[k].t = L->w_gate, list[k].n = (size_t)st->inter * H, list[k++].what = "gate_proj";
        list[k].t = L->w_up, list[k].n = (size_t)st->inter * H, list[k++].what = "up_proj";
        list[k].t = L->w_down, list[k].n = H * (size_t)st->inter, list[k++].what = "down_proj";
        for (int i = 0; i < k; i++)
            if (!tensor_elems(list[i].t, list[i].n)) {
                snprintf(err, errlen,
                         "cuda backend: layer %d %s: expected %zu elements of BF16/F16/F32", l,
                         list[i].what, list[i].n);
                return QE_ERR_FORMAT;
            }
    }
    return QE_OK;
}

/* Lays out (base NULL: measures) every weight in one allocation. */
static size_t layout_weights(cuda_state *st, char *base) {
    carver c = {base, 0};
    const size_t H = (size_t)st->hidden;
    st->embed = carve(&c, (size_t)st->vocab * H * 2);
    st->final_norm = carve(&c, H * 4);
    for (int l = 0; l < st->layers; l++) {
        cuda_layer *L = &st->layer[l];
        L->wqkv = carve(&c, (size_t)st->qkv_dim * H * 2);
        L->wo = carve(&c, H * st->q_dim * 2);
        L->wgu = carve(&c, 2 * (size_t)st->inter * H * 2);
        L->wdown = carve(&c, H * st->inter * 2);
        L->attn_norm = carve(&c, H * 4);
        L->mlp_norm = carve(&c, H * 4);
        L->q_norm = carve(&c, (size_t)st->head_dim * 4);
        L->k_norm = carve(&c, (size_t)st->head_dim * 4);
    }
    return c.used;
}

static size_t layout_arena(cuda_state *st, char *base) {
    carver c = {base, 0};
    const size_t T = (size_t)st->max_tokens, H = (size_t)st->hidden;
    st->x = carve(&c, T * H * 4);
    st->h = carve(&c, T * H * 2);
    st->qkv = carve(&c, T * st->qkv_dim * 2);
    st->attn = carve(&c, T * st->q_dim * 2);
    st->gu = carve(&c, T * 2 * st->inter * 2);
    st->act = carve(&c, T * st->inter * 2);
    st->x_last = carve(&c, T * H * 4);
    st->qkv_last = carve(&c, T * st->qkv_dim * 2);
    st->pooled = carve(&c, T * H * 4);
    st->d_ints = carve(&c, (4 * T + 2) * sizeof(int32_t));
    st->gemm_ws = carve(&c, GEMM_WORKSPACE);
    return c.used;
}

static int upload_weights(cuda_state *st, const qe_model *m) {
    const size_t H = (size_t)st->hidden;
    uint16_t *stage = malloc(STAGE_ELEMS * 2);
    size_t big = H > (size_t)st->head_dim ? H : (size_t)st->head_dim;
    float *tmp = malloc(big * sizeof(float));
    int rc = QE_K_ERR;
    if (!stage || !tmp) {
        qe_k_fail("host", "malloc", __func__, __FILE__, __LINE__, "out of memory");
        goto done;
    }
    if (upload_bf16(st->embed, m->embed, (size_t)st->vocab * H, stage) ||
        upload_f32(st->final_norm, m->final_norm, H, tmp))
        goto done;
    for (int l = 0; l < st->layers; l++) {
        const qe_layer_tensors *T = &m->layers[l];
        cuda_layer *L = &st->layer[l];
        const size_t nq = (size_t)st->q_dim * H, nkv = (size_t)st->kv_dim * H;
        const size_t ni = (size_t)st->inter * H;
        if (upload_bf16(L->wqkv, T->wq, nq, stage) ||
            upload_bf16(L->wqkv + nq, T->wk, nkv, stage) ||
            upload_bf16(L->wqkv + nq + nkv, T->wv, nkv, stage) ||
            upload_bf16(L->wo, T->wo, H * st->q_dim, stage) ||
            upload_bf16(L->wgu, T->w_gate, ni, stage) ||
            upload_bf16(L->wgu + ni, T->w_up, ni, stage) ||
            upload_bf16(L->wdown, T->w_down, ni, stage) ||
            upload_f32(L->attn_norm, T->attn_norm, H, tmp) ||
            upload_f32(L->mlp_norm, T->mlp_norm, H, tmp) ||
            upload_f32(L->q_norm, T->q_norm, (size_t)st->head_dim, tmp) ||
            upload_f32(L->k_norm, T->k_norm, (size_t)st->head_dim, tmp))
            goto done;
    }
    rc = QE_K_OK;
done:
    free(stage);
    free(tmp);
    return rc;
}

/* ---------------------------------------------------------------- lifetime */

static void destroy(void *state) {
    cuda_state *st = state;
    if (!st) return;
    if (st->stream) cudaStreamSynchronize(st->stream);
    prof_report(st);
    prof_free(st);
    qe_gemm_destroy(st->gemm);
    if (st->h_ints) cudaFreeHost(st->h_ints);
    if (st->amem) cudaFree(st->amem);
    if (st->wmem) cudaFree(st->wmem);
    if (st->stream) cudaStreamDestroy(st->stream);
    free(st->layer);
    free(st);
}

static double gib(size_t b) {
    return (double)b / (1024.0 * 1024.0 * 1024.0);
}

static qe_status create(const qe_model *m, const qe_options *o, void **state, char *err,
                        size_t errlen) {
    *state = NULL;
    const qe_config *c = &m->cfg;
    int n_dev = 0;
    cudaError_t ce = cudaGetDeviceCount(&n_dev);
    if (ce != cudaSuccess || n_dev == 0) {
        snprintf(err, errlen, "cuda backend: no CUDA device (%s); use --backend cpu",
                 ce != cudaSuccess ? cudaGetErrorString(ce) : "device count 0");
        return QE_ERR_DEVICE;
    }
    if (o->device < 0 || o->device >= n_dev) {
        snprintf(err, errlen, "cuda backend: device %d does not exist (%d present)", o->device,
                 n_dev);
        return QE_ERR_ARG;
    }
    if (c->head_dim != 128) {
        snprintf(err, errlen,
                 "cuda backend: head_dim %d not supported (the attention kernel runs 128)",
                 c->head_dim);
        return QE_ERR_UNSUPPORTED;
    }
    if (c->num_kv_heads <= 0 || c->num_heads % c->num_kv_heads != 0 || c->hidden_size % 8 != 0 ||
        c->intermediate_size % 8 != 0) {
        snprintf(err, errlen,
                 "cuda backend: geometry heads %d / kv_heads %d / hidden %d / intermediate %d not "
                 "supported (need heads %% kv_heads == 0, hidden and intermediate multiples of 8)",
                 c->num_heads, c->num_kv_heads, c->hidden_size, c->intermediate_size);
        return QE_ERR_UNSUPPORTED;
    }
    if (m->dtype != ST_BF16 && m->dtype != ST_F16 && m->dtype != ST_F32) {
        snprintf(err, errlen, "cuda backend: checkpoint dtype not supported (BF16, F16, F32)");
        return QE_ERR_UNSUPPORTED;
    }
    cuda_state *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "cuda backend: out of host memory");
        return QE_ERR_NOMEM;
    }
    st->cfg = *c;
    st->hidden = c->hidden_size, st->inter = c->intermediate_size, st->heads = c->num_heads;
    st->kv_heads = c->num_kv_heads, st->head_dim = c->head_dim, st->layers = c->num_layers;
    st->vocab = c->vocab_size;
    st->q_dim = st->heads * st->head_dim, st->kv_dim = st->kv_heads * st->head_dim;
    st->qkv_dim = st->q_dim + 2 * st->kv_dim;
    st->eps = (float)c->rms_norm_eps;
    st->max_tokens = o->max_batch_tokens > 0 ? o->max_batch_tokens : DEFAULT_MAX_TOKENS;
    const char *full = getenv("QE_CUDA_FULL_LAST_LAYER");
    st->full_last_layer = full && strcmp(full, "1") == 0;
    st->layer = calloc((size_t)st->layers, sizeof *st->layer);
    qe_status status = QE_ERR_DEVICE;
    if (!st->layer) {
        snprintf(err, errlen, "cuda backend: out of host memory");
        status = QE_ERR_NOMEM;
        goto fail;
    }
    status = check_tensors(m, st, err, errlen);
    if (status != QE_OK) goto fail;
    status = QE_ERR_DEVICE;
    if (cudaSetDevice(o->device) != cudaSuccess || cudaStreamCreate(&st->stream) != cudaSuccess) {
        snprintf(err, errlen, "cuda backend: cannot initialise device %d: %s", o->device,
                 cudaGetErrorString(cudaGetLastError()));
        goto fail;
    }
    st->wbytes = layout_weights(st, NULL);
    st->abytes = layout_arena(st, NULL);
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
        snprintf(err, errlen, "cuda backend: cudaMemGetInfo failed on device %d", o->device);
        goto fail;
    }
    if (st->wbytes + st->abytes > free_b) {
        snprintf(err, errlen,
                 "cuda backend: needs %.2f GiB of weights + %.2f GiB of activations "
                 "(max_batch_tokens %d) but device %d has %.2f GiB free of %.2f; lower "
                 "--max-batch-tokens or use a larger GPU",
                 gib(st->wbytes), gib(st->abytes), st->max_tokens, o->device, gib(free_b),
                 gib(total_b));
        status = QE_ERR_NOMEM;
        goto fail;
    }
    if (cudaMalloc(&st->wmem, st->wbytes) != cudaSuccess ||
        cudaMalloc(&st->amem, st->abytes) != cudaSuccess) {
        cudaGetLastError();
        snprintf(err, errlen, "cuda backend: cudaMalloc of %.2f GiB failed on device %d",
                 gib(st->wbytes + st->abytes), o->device);
        status = QE_ERR_NOMEM;
        goto fail;
    }
    if (cudaMallocHost((void **)&st->h_ints, (4 * (size_t)st->max_tokens + 2) * sizeof(int32_t)) !=
        cudaSuccess) {
        cudaGetLastError();
        snprintf(err, errlen, "cuda backend: cannot pin %zu bytes of host memory",
                 (4 * (size_t)st->max_tokens + 2) * sizeof(int32_t));
        status = QE_ERR_NOMEM;
        goto fail;
    }
    layout_weights(st, st->wmem);
    layout_arena(st, st->amem);
    if (upload_weights(st, m) != QE_K_OK ||
        qe_gemm_create(&st->gemm, st->gemm_ws, GEMM_WORKSPACE) != QE_K_OK) {
        snprintf(err, errlen, "cuda backend: loading weights: %s", qe_k_last_error());
        goto fail;
    }
    prof_init(st);
    *state = st;
    return QE_OK;
fail:
    destroy(st);
    return status;
}

/* ---------------------------------------------------------------- forward */

/* One step: sequences [first, last) of the batch, at most max_tokens tokens, all in the arena.
 * With residual_out the step runs only the first n_layers layers (no shortcut) and copies the
 * residual stream [T, hidden] out instead of pooling. */
static int run_step(cuda_state *st, const qe_batch *b, int first, int last, int dims,
                    int normalize, float *out, int n_layers, float *residual_out) {
    const int S = last - first;
    const int t0 = b->cu_seqlens[first];
    const int T = b->cu_seqlens[last] - t0;
    const int H = st->hidden;
    const size_t Tm = (size_t)st->max_tokens;
    int32_t *h_tok = st->h_ints, *h_pos = st->h_ints + Tm, *h_cu = st->h_ints + 2 * Tm;
    int32_t *h_cu_last = h_cu + Tm + 1;
    int32_t *d_tok = st->d_ints, *d_pos = st->d_ints + Tm, *d_cu = st->d_ints + 2 * Tm;
    int32_t *d_cu_last = d_cu + Tm + 1;
    int max_len = 0;
    memcpy(h_tok, b->tokens + t0, (size_t)T * sizeof(int32_t));
    memcpy(h_pos, b->positions + t0, (size_t)T * sizeof(int32_t));
    for (int s = 0; s <= S; s++) {
        h_cu[s] = b->cu_seqlens[first + s] - t0;
        h_cu_last[s] = s;
        if (s > 0 && h_cu[s] - h_cu[s - 1] > max_len) max_len = h_cu[s] - h_cu[s - 1];
    }
    /* The four pieces are separate regions of the pinned buffer; copy the used parts. */
    CUDA_CHECK(cudaMemcpyAsync(d_tok, h_tok, (size_t)T * 4, cudaMemcpyHostToDevice, st->stream));
    CUDA_CHECK(cudaMemcpyAsync(d_pos, h_pos, (size_t)T * 4, cudaMemcpyHostToDevice, st->stream));
    CUDA_CHECK(cudaMemcpyAsync(d_cu, h_cu, (size_t)(Tm + 1 + S + 1) * 4, cudaMemcpyHostToDevice,
                               st->stream));

    qe_stream s = st->stream;
    qe_gemm *g = st->gemm;
    prof_start(st);
    K_CALL(qe_embed_gather(st->embed, st->vocab, H, d_tok, T, st->x, s));
    prof_mark(st, OP_EMBED);
    const int full_last = st->full_last_layer || residual_out != NULL;
    for (int l = 0; l < n_layers; l++) {
        const cuda_layer *L = &st->layer[l];
        const int shortcut = l == st->layers - 1 && !full_last;
        K_CALL(qe_add_rmsnorm(st->x, NULL, L->attn_norm, T, H, st->eps, st->h, s));
        prof_mark(st, OP_NORM);
        K_CALL(
            qe_gemm_bf16(g, st->h, H, T, H, L->wqkv, st->qkv_dim, st->qkv, st->qkv_dim, 0, 0, s));
        prof_mark(st, OP_QKV);
        K_CALL(qe_qk_norm_rope(st->qkv, T, st->heads, st->kv_heads, st->head_dim, d_pos, L->q_norm,
                               L->k_norm, st->eps, st->cfg.rope_theta, s));
        prof_mark(st, OP_ROPE);

        qe_attn_params ap;
        memset(&ap, 0, sizeof ap);
        ap.k = st->qkv + st->q_dim;
        ap.v = st->qkv + st->q_dim + st->kv_dim;
        ap.kv_stride = st->qkv_dim;
        ap.q_stride = st->qkv_dim;
        ap.out = st->attn;
        ap.out_stride = st->q_dim;
        ap.cu_seqlens_k = d_cu;
        ap.n_seqs = S;
        ap.heads = st->heads, ap.kv_heads = st->kv_heads, ap.head_dim = st->head_dim;
        ap.scale = 1.0f / sqrtf((float)st->head_dim);
        float *x = st->x;
        int rows = T;
        if (shortcut) {
            /* Only the pooled rows go on: their q (already normed and rotated) and residual. */
            K_CALL(qe_gather_last_rows(st->qkv, (size_t)st->qkv_dim * 2, d_cu, S, st->qkv_last, s));
            K_CALL(qe_gather_last_rows(st->x, (size_t)H * 4, d_cu, S, st->x_last, s));
            prof_mark(st, OP_GATHER);
            ap.q = st->qkv_last;
            ap.cu_seqlens_q = d_cu_last;
            ap.max_seqlen_q = 1;
            x = st->x_last;
            rows = S;
        } else {
            ap.q = st->qkv;
            ap.cu_seqlens_q = d_cu;
            ap.max_seqlen_q = max_len;
        }
        K_CALL(qe_attention(&ap, s));
        prof_mark(st, OP_ATTN);
        K_CALL(qe_gemm_bf16(g, st->attn, st->q_dim, rows, st->q_dim, L->wo, H, x, H, 1, 1, s));
        prof_mark(st, OP_OPROJ);
        K_CALL(qe_add_rmsnorm(x, NULL, L->mlp_norm, rows, H, st->eps, st->h, s));
        prof_mark(st, OP_NORM);
        K_CALL(qe_gemm_bf16(g, st->h, H, rows, H, L->wgu, 2 * st->inter, st->gu, 2 * st->inter, 0,
                            0, s));
        prof_mark(st, OP_GATEUP);
        K_CALL(qe_swiglu(st->gu, rows, st->inter, st->act, s));
        prof_mark(st, OP_SWIGLU);
        K_CALL(qe_gemm_bf16(g, st->act, st->inter, rows, st->inter, L->wdown, H, x, H, 1, 1, s));
        prof_mark(st, OP_DOWN);
    }
    if (residual_out) {
        CUDA_CHECK(cudaMemcpyAsync(residual_out, st->x, (size_t)T * H * sizeof(float),
                                   cudaMemcpyDeviceToHost, st->stream));
        CUDA_CHECK(cudaStreamSynchronize(st->stream));
        prof_finish(st);
        return QE_K_OK;
    }
    const int compact = !full_last;
    K_CALL(qe_pool_last(compact ? st->x_last : st->x, H, compact ? NULL : d_cu, S, st->final_norm,
                        st->eps, dims, normalize, st->pooled, s));
    prof_mark(st, OP_POOL);
    CUDA_CHECK(cudaMemcpyAsync(out, st->pooled, (size_t)S * dims * sizeof(float),
                               cudaMemcpyDeviceToHost, st->stream));
    CUDA_CHECK(cudaStreamSynchronize(st->stream));
    prof_finish(st);
    return QE_K_OK;
}

static qe_status forward(void *state, const qe_batch *b, int dims, int normalize, float *out,
                         char *err, size_t errlen) {
    cuda_state *st = state;
    if (dims <= 0) dims = st->hidden;
    if (dims > st->hidden || b->n_seqs < 0 || !b->cu_seqlens || b->cu_seqlens[0] != 0) {
        snprintf(err, errlen, "cuda backend: bad batch (dims %d of %d, %d sequences)", dims,
                 st->hidden, b->n_seqs);
        return QE_ERR_ARG;
    }
    for (int s = 0; s < b->n_seqs; s++) {
        int len = b->cu_seqlens[s + 1] - b->cu_seqlens[s];
        if (len <= 0) {
            snprintf(err, errlen, "cuda backend: sequence %d is empty", s);
            return QE_ERR_ARG;
        }
        if (len > st->max_tokens) {
            snprintf(err, errlen,
                     "cuda backend: sequence %d has %d tokens, more than max_batch_tokens %d "
                     "(chunked prefill is not implemented yet); raise --max-batch-tokens",
                     s, len, st->max_tokens);
            return QE_ERR_TOO_LONG;
        }
    }
    for (int t = 0; t < b->n_tokens; t++)
        if (b->tokens[t] < 0 || b->tokens[t] >= st->vocab) {
            snprintf(err, errlen, "cuda backend: token id %d at %d outside the vocabulary (%d)",
                     b->tokens[t], t, st->vocab);
            return QE_ERR_ARG;
        }
    int first = 0;
    while (first < b->n_seqs) {
        int last = first + 1;
        while (last < b->n_seqs && b->cu_seqlens[last + 1] - b->cu_seqlens[first] <= st->max_tokens)
            last++;
        if (run_step(st, b, first, last, dims, normalize, out + (size_t)first * dims,
                     st->layers, NULL) !=
            QE_K_OK) {
            snprintf(err, errlen, "cuda backend: %s", qe_k_last_error());
            return QE_ERR_DEVICE;
        }
        first = last;
    }
    return QE_OK;
}

/* The residual stream after the first n_layers layers, for tests; the batch must fit one step. */
static qe_status residual(void *state, const qe_batch *b, int n_layers, float *out, char *err,
                          size_t errlen) {
    cuda_state *st = state;
    if (n_layers < 0 || n_layers > st->layers || b->n_seqs <= 0 || b->cu_seqlens[0] != 0) {
        snprintf(err, errlen, "cuda backend: bad residual request (%d layers of %d)", n_layers,
                 st->layers);
        return QE_ERR_ARG;
    }
    if (b->n_tokens > st->max_tokens) {
        snprintf(err, errlen, "cuda backend: %d tokens exceed max_batch_tokens %d", b->n_tokens,
                 st->max_tokens);
        return QE_ERR_TOO_LONG;
    }
    for (int t = 0; t < b->n_tokens; t++)
        if (b->tokens[t] < 0 || b->tokens[t] >= st->vocab) {
            snprintf(err, errlen, "cuda backend: token id %d outside the vocabulary", b->tokens[t]);
            return QE_ERR_ARG;
        }
    if (run_step(st, b, 0, b->n_seqs, st->hidden, 1, NULL, n_layers, out) != QE_K_OK) {
        snprintf(err, errlen, "cuda backend: %s", qe_k_last_error());
        return QE_ERR_DEVICE;
    }
    return QE_OK;
}

static size_t device_bytes(const void *state) {
    const cuda_state *st = state;
    return st->wbytes + st->abytes;
}

const qe_backend_ops qe_cuda_backend = {"cuda", create, forward, destroy, residual, device_bytes};
