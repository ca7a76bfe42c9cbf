/* backend_cuda.c — the CUDA forward pass: bf16 weights in one device allocation (q|k|v and
 * gate|up fused at load; a GGUF file's Q8_0/Q4_K/Q6_K matrices and embedding table stay
 * quantized there instead, cuda_qweights.c), one activation arena sized by max_batch_tokens, fp32
 * residual stream, cuBLASLt GEMMs (or the quantized GEMM) and our kernels (kernels/kernels.h) in
 * the per-layer order of DESIGN.md.
 *
 * Last-layer shortcut: after the last layer's K/V only each sequence's last row feeds pooling, so
 * its q/k-rotated qkv row and residual row are gathered, attention runs with one query per
 * sequence against all keys, and o_proj + MLP run on n_seqs rows instead of n_tokens.
 * QE_CUDA_FULL_LAST_LAYER=1 disables it (tests compare both).
 *
 * Paged K/V pool: a step's last n_paged sequences are chunks of long sequences (backend.h's
 * qe_batch; the engine's scheduler, runtime/scheduler.h, decides which). Every layer writes each
 * chunk's K|V rows (after q/k-norm and RoPE at the chunk's absolute positions) to its pool rows
 * (qe_kv_append), and the chunk's queries attend to all of its sequence's keys through its block
 * table (Lq = chunk length, Lk = tokens so far: the attention kernel's bottom-right causal
 * alignment); the whole sequences of the step attend to their own rows as before, in a launch of
 * their own. The pool is one device allocation, [layers][pages * page_size][k | v] bf16, made at
 * create. The last-layer shortcut applies to chunks too: their last rows go on (a chunk before
 * its sequence's last computes one row nothing reads).
 *
 * Overlap: steps are enqueued on one stream without waiting; two pinned staging slots alternate
 * (cuda_internal.h), so while the GPU runs step i the host packs step i+1 and copies out step
 * i-1's vectors. One stream is enough: the copies are small and ordered with the kernels that
 * read and write the same device buffers.
 *
 * Small steps (<= 512 padded tokens) run as CUDA graphs, one per padded shape (cuda_graph.c).
 * QE_PROFILE=1 times every op (cuda_profile.c); it runs steps one at a time, without graphs.
 * Graph captures/replays/refusals and the GEMM plans are there for tools through qembed_debug.h
 * (the hooks at the end of this file; the engine counts steps and chunks).
 *
 * Tensor parallelism: cuda_tp.c runs one such state per rank, made from the rank's share of the
 * model; the layer's two all-reduces are the cuda_tp_allreduce calls after o_proj and down_proj
 * (no-ops on the plain path; cuda_internal.h's tp_accumulate says how the sum is formed). */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cuda_internal.h"
#include "kernels/ref/ref_qpack.h"

#define ALIGN_BYTES 256
#define GEMM_WORKSPACE (32u << 20)
#define OUT_STAGE_ROWS 1024 /* pooled rows a staging slot holds; more go straight to the caller */

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

/* ---------------------------------------------------------------- weights */

#define STAGE_ELEMS ((size_t)8 << 20)

static uint16_t load_u16(const uint8_t *p) {
    return (uint16_t)(p[0] | (p[1] << 8));
}

/* A quantized tensor (a GGUF file's blocks) as bf16: whole rows dequantized by the C reference
 * into f (STAGE_ELEMS floats), as many rows as fit the stage at a time. */
static int upload_quant_rows(qe_bf16 *dst, const st_tensor *t, uint16_t *stage, float *f) {
    const int64_t cols = t->shape[t->ndim - 1], rows = (int64_t)(st_elems(t) / (size_t)cols);
    const int64_t per = (int64_t)STAGE_ELEMS / cols > 0 ? (int64_t)STAGE_ELEMS / cols : 1;
    for (int64_t r = 0; r < rows; r += per) {
        const int64_t n = rows - r < per ? rows - r : per;
        const st_tensor view = st_rows(t, r, n);
        st_to_f32(&view, f);
        for (int64_t i = 0; i < n * cols; i++)
            stage[i] = st_f32_to_bf16(f[i]);
        CUDA_CHECK(
            cudaMemcpy(dst + r * cols, stage, (size_t)(n * cols) * 2, cudaMemcpyHostToDevice));
    }
    return QE_K_OK;
}

static int upload_quant_bf16(qe_bf16 *dst, const st_tensor *t, uint16_t *stage) {
    if (t->shape[t->ndim - 1] > (int64_t)STAGE_ELEMS)
        return qe_k_fail("argument", "row length", __func__, __FILE__, __LINE__,
                         "a row longer than the upload stage");
    float *f = malloc(STAGE_ELEMS * sizeof(float));
    if (!f) return qe_k_fail("host", "malloc", __func__, __FILE__, __LINE__, "out of memory");
    const int rc = upload_quant_rows(dst, t, stage, f);
    free(f);
    return rc;
}

/* Copies n elements of t (any dtype) as bf16 to dst; stage holds STAGE_ELEMS bf16. */
static int upload_bf16(qe_bf16 *dst, const st_tensor *t, size_t n, uint16_t *stage) {
    const uint8_t *src = t->data;
    if (t->dtype == ST_QUANT) return upload_quant_bf16(dst, t, stage);
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

/* An ALiBi model's slopes, computed on the host (tmp holds heads floats). */
static int upload_alibi_slopes(float *dst, int heads, float *tmp) {
    cfg_alibi_slopes(heads, tmp);
    CUDA_CHECK(cudaMemcpy(dst, tmp, (size_t)heads * sizeof(float), cudaMemcpyHostToDevice));
    return QE_K_OK;
}

/* Element count of t when it matches want and its dtype is one we convert; else 0. */
static size_t tensor_elems(const st_tensor *t, size_t want) {
    if (!t ||
        (t->dtype != ST_BF16 && t->dtype != ST_F16 && t->dtype != ST_F32 && t->dtype != ST_QUANT))
        return 0;
    size_t n = st_elems(t);
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

/* A matrix of n weights: its quantized runs when q has them (the bf16 pointer is then NULL),
 * else n bf16. */
static qe_bf16 *carve_lin(carver *c, cuda_qlin *q, size_t n) {
    if (!q->n_runs) return carve(c, n * 2);
    for (int i = 0; i < q->n_runs; i++)
        q->run[i].w = carve(c, cuda_qrun_bytes(q, i));
    return NULL;
}

/* Lays out (base NULL: measures) every weight in one allocation. */
static size_t layout_weights(cuda_state *st, char *base) {
    carver c = {base, 0};
    const size_t H = (size_t)st->hidden;
    if (st->embed_qtype)
        st->embed_q = carve(&c, (size_t)st->vocab * qp_row_bytes((uint32_t)st->embed_qtype, H));
    else
        st->embed = carve(&c, (size_t)st->vocab * H * 2);
    st->final_norm = carve(&c, H * 4);
    st->alibi_slopes = st->cfg.alibi ? carve(&c, (size_t)st->heads * 4) : NULL;
    for (int l = 0; l < st->layers; l++) {
        cuda_layer *L = &st->layer[l];
        L->wqkv = carve_lin(&c, &L->qqkv, (size_t)st->qkv_dim * H);
        L->wo = carve_lin(&c, &L->qo, H * st->q_dim);
        L->wgu = carve_lin(&c, &L->qgu, 2 * (size_t)st->inter * H);
        L->wdown = carve_lin(&c, &L->qdown, H * st->inter);
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
    st->d_ints = carve(&c, N_INTS(T) * sizeof(int32_t));
    st->gemm_ws = carve(&c, GEMM_WORKSPACE);
    return c.used;
}

static int upload_weights(cuda_state *st, const qe_model *m) {
    const size_t H = (size_t)st->hidden;
    uint16_t *stage = malloc(STAGE_ELEMS * 2);
    size_t big = H > (size_t)st->head_dim ? H : (size_t)st->head_dim;
    if (big < (size_t)st->heads) big = (size_t)st->heads;
    float *tmp = malloc(big * sizeof(float));
    int rc = QE_K_ERR;
    if (!stage || !tmp) {
        qe_k_fail("host", "malloc", __func__, __FILE__, __LINE__, "out of memory");
        goto done;
    }
    if ((st->embed_qtype ? cuda_qupload_embed(st, m, stage, STAGE_ELEMS * 2)
                         : upload_bf16(st->embed, m->embed, (size_t)st->vocab * H, stage)) ||
        upload_f32(st->final_norm, m->final_norm, H, tmp) ||
        (st->alibi_slopes && upload_alibi_slopes(st->alibi_slopes, st->heads, tmp)))
        goto done;
    for (int l = 0; l < st->layers; l++) {
        const qe_layer_tensors *T = &m->layers[l];
        cuda_layer *L = &st->layer[l];
        const size_t nq = (size_t)st->q_dim * H, nkv = (size_t)st->kv_dim * H;
        const size_t ni = (size_t)st->inter * H;
        if ((L->wqkv && (upload_bf16(L->wqkv, T->wq, nq, stage) ||
                         upload_bf16(L->wqkv + nq, T->wk, nkv, stage) ||
                         upload_bf16(L->wqkv + nq + nkv, T->wv, nkv, stage))) ||
            (L->wo && upload_bf16(L->wo, T->wo, H * st->q_dim, stage)) ||
            (L->wgu && (upload_bf16(L->wgu, T->w_gate, ni, stage) ||
                        upload_bf16(L->wgu + ni, T->w_up, ni, stage))) ||
            (L->wdown && upload_bf16(L->wdown, T->w_down, ni, stage)) ||
            cuda_qupload_layer(st, m, l, stage, STAGE_ELEMS * 2) ||
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
    cudaSetDevice(st->device);
    if (st->stream) cudaStreamSynchronize(st->stream);
    prof_report(st);
    prof_free(st);
    graph_free(st);
    qe_gemm_destroy(st->gemm);
    for (int i = 0; i < 2; i++) {
        stage_slot *sl = &st->slot[i];
        if (sl->ints) cudaFreeHost(sl->ints);
        if (sl->paged) cudaFreeHost(sl->paged);
        if (sl->out) cudaFreeHost(sl->out);
        if (sl->done) cudaEventDestroy(sl->done);
    }
    if (st->kv) cudaFree(st->kv);
    if (st->d_paged) cudaFree(st->d_paged);
    if (st->amem) cudaFree(st->amem);
    if (st->wmem) cudaFree(st->wmem);
    if (st->stream) cudaStreamDestroy(st->stream);
    free(st->layer);
    free(st);
}

static double gib(size_t b) {
    return (double)b / (1024.0 * 1024.0 * 1024.0);
}

/* The K/V pool (qe_options.kv_pool_tokens): a size asked for is made or qe_open fails; the
 * default (the model's positions) is halved until it fits beside the weights and the arena. */
static qe_status make_pool(cuda_state *st, const qe_options *o, char *err, size_t errlen) {
    int is_default;
    st->page_size = o->kv_page_tokens;
    int pages = qe_kv_pool_pages_wanted(o, &st->cfg, &is_default);
    const size_t page_bytes =
        (size_t)st->layers * (size_t)st->page_size * 2 * (size_t)st->kv_dim * sizeof(qe_bf16);
    for (; pages > 0; pages /= 2) {
        void *p = NULL;
        if (cudaMalloc(&p, (size_t)pages * page_bytes) == cudaSuccess) {
            st->kv = p;
            break;
        }
        cudaGetLastError();
        if (!is_default) {
            snprintf(err, errlen,
                     "cuda backend: cannot allocate the K/V pool for %d tokens (%.2f GiB = %d "
                     "layers x 2 x %d kv_dim x 2 bytes per token); lower kv_pool_tokens (qembed "
                     "--kv-pool-tokens) or free device memory",
                     pages * st->page_size, gib((size_t)pages * page_bytes), st->layers,
                     st->kv_dim);
            return QE_ERR_NOMEM;
        }
    }
    st->kv_n_pages = pages;
    st->kv_rows = (size_t)pages * (size_t)st->page_size;
    st->kvbytes = (size_t)pages * page_bytes;
    return QE_OK;
}

/* The two host staging slots (cuda_internal.h): pinned ints and pooled outputs, an event each. */
static qe_status alloc_slots(cuda_state *st, char *err, size_t errlen) {
    const size_t rows = st->max_tokens < OUT_STAGE_ROWS ? (size_t)st->max_tokens : OUT_STAGE_ROWS;
    st->out_cap = rows * (size_t)st->hidden;
    const size_t ints = N_INTS(st->max_tokens) * sizeof(int32_t),
                 outs = st->out_cap * sizeof(float);
    for (int i = 0; i < 2; i++) {
        stage_slot *sl = &st->slot[i];
        if (cudaMallocHost((void **)&sl->ints, ints) != cudaSuccess ||
            cudaMallocHost((void **)&sl->out, outs) != cudaSuccess) {
            cudaGetLastError();
            snprintf(err, errlen, "cuda backend: cannot pin %zu bytes of host memory",
                     2 * (ints + outs));
            return QE_ERR_NOMEM;
        }
        if (cudaEventCreateWithFlags(&sl->done, cudaEventDisableTiming) != cudaSuccess) {
            snprintf(err, errlen, "cuda backend: cannot create an event: %s",
                     cudaGetErrorString(cudaGetLastError()));
            return QE_ERR_DEVICE;
        }
    }
    return QE_OK;
}

/* The paged arrays' buffers (device, and each slot's pinned one), made at create for the largest
 * step: cu_k and kv_rows at most 2 * max_tokens + 1 ints, and a block table of at most
 * min(max_tokens, pages) chunks (each holds a page of its own) of at most `pages` entries. */
static qe_status alloc_paged(cuda_state *st, char *err, size_t errlen) {
    if (st->kv_n_pages == 0) return QE_OK;
    const size_t P = (size_t)st->kv_n_pages, T = (size_t)st->max_tokens;
    const size_t cap = 2 * T + 1 + (T < P ? T : P) * P;
    if (cudaMalloc((void **)&st->d_paged, cap * sizeof(int32_t)) != cudaSuccess) {
        cudaGetLastError();
        snprintf(err, errlen, "cuda backend: cannot allocate %zu bytes for block tables",
                 cap * sizeof(int32_t));
        return QE_ERR_NOMEM;
    }
    for (int i = 0; i < 2; i++)
        if (cudaMallocHost((void **)&st->slot[i].paged, cap * sizeof(int32_t)) != cudaSuccess) {
            cudaGetLastError();
            snprintf(err, errlen, "cuda backend: cannot pin %zu bytes of host memory",
                     cap * sizeof(int32_t));
            return QE_ERR_NOMEM;
        }
    st->paged_cap = cap;
    return QE_OK;
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
    if (m->dtype != ST_BF16 && m->dtype != ST_F16 && m->dtype != ST_F32 && m->dtype != ST_QUANT) {
        snprintf(err, errlen,
                 "cuda backend: checkpoint dtype not supported (BF16, F16, F32, or a GGUF file's "
                 "quantized types)");
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
    st->max_tokens = o->max_batch_tokens > 0 ? o->max_batch_tokens : QE_DEFAULT_BATCH_TOKENS;
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
    cuda_qplan(st, m); /* before the layout: which matrices stay quantized */
    status = QE_ERR_DEVICE;
    st->device = o->device;
    if (cudaSetDevice(o->device) != cudaSuccess || cudaStreamCreate(&st->stream) != cudaSuccess) {
        snprintf(err, errlen, "cuda backend: cannot initialise device %d: %s", o->device,
                 cudaGetErrorString(cudaGetLastError()));
        goto fail;
    }
    char why[400];
    if (qe_kernels_check_device(o->device, why, sizeof why) != QE_K_OK) {
        snprintf(err, errlen, "cuda backend: %s", why);
        status = QE_ERR_UNSUPPORTED;
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
    status = alloc_slots(st, err, errlen);
    if (status != QE_OK) goto fail;
    status = QE_ERR_DEVICE;
    layout_weights(st, st->wmem);
    layout_arena(st, st->amem);
    if (upload_weights(st, m) != QE_K_OK ||
        qe_gemm_create(&st->gemm, st->gemm_ws, GEMM_WORKSPACE) != QE_K_OK) {
        snprintf(err, errlen, "cuda backend: loading weights: %s", qe_k_last_error());
        goto fail;
    }
    status = make_pool(st, o, err, errlen);
    if (status == QE_OK) status = alloc_paged(st, err, errlen);
    if (status != QE_OK) goto fail;
    status = QE_ERR_DEVICE;
    prof_init(st);
    graph_init(st);
    *state = st;
    return QE_OK;
fail:
    destroy(st);
    return status;
}

/* ---------------------------------------------------------------- forward */

/* Packs a step's int arrays into the slot's pinned buffers in g's layout: tokens[Tp] |
 * positions[Tp] | cu[Sp+1] | cu_last[Sp+1] in ints, and the paged chunks' cu_k | kv_rows |
 * block_table in paged; points g's d_ arrays at the same layouts in d_ints and d_paged. A graph
 * step's padding is filled as cuda_graph.c describes. */
static void pack_step(cuda_state *st, stage_slot *sl, step_geom *g, const qe_batch *b) {
    const int T = g->T, S = g->S, Tp = g->Tp, Sp = g->Sp, n_whole = S - g->n_paged;
    int32_t *tok = sl->ints, *pos = tok + Tp, *c = pos + Tp, *c_last = c + Sp + 1;
    memcpy(tok, b->tokens, (size_t)T * sizeof(int32_t));
    memcpy(pos, b->positions, (size_t)T * sizeof(int32_t));
    for (int t = T; t < Tp; t++)
        tok[t] = 0, pos[t] = t - T; /* the filler sequence */
    int max_len = 0, max_paged = 0;
    for (int i = 0; i <= S; i++) {
        c[i] = b->cu_seqlens[i];
        c_last[i] = i; /* the shortcut's one query per sequence */
        const int len = i > 0 ? c[i] - c[i - 1] : 0;
        if (i > 0 && i <= n_whole && len > max_len) max_len = len;
        if (i > n_whole && len > max_paged) max_paged = len;
    }
    for (int i = S + 1; i <= Sp; i++) {
        c[i] = Tp;                /* slot S: the filler; after it, empty slots */
        c_last[i] = S + (Tp > T); /* an empty filler has no query either */
    }
    /* a graph's grid may not depend on the contents */
    g->max_len = g->graph ? Tp : max_len;
    g->max_len_paged = max_paged;
    g->d_tok = st->d_ints;
    g->d_pos = g->d_tok + Tp;
    g->d_cu = g->d_pos + Tp;
    g->d_cu_last = g->d_cu + Sp + 1;
    if (g->n_paged == 0) return;
    const int np = g->n_paged, T_paged = T - c[n_whole];
    int32_t *cu_k = sl->paged, *rows = cu_k + np + 1, *table = rows + T_paged;
    cu_k[0] = 0;
    for (int i = 0; i < np; i++)
        cu_k[i + 1] = cu_k[i] + b->past[i] + (c[n_whole + i + 1] - c[n_whole + i]);
    memcpy(rows, b->kv_rows, (size_t)T_paged * sizeof(int32_t));
    memcpy(table, b->block_table, (size_t)np * (size_t)b->bt_stride * sizeof(int32_t));
    g->d_cu_k = st->d_paged;
    g->d_kv_rows = g->d_cu_k + np + 1;
    g->d_table = g->d_kv_rows + T_paged;
}

/* One attention launch over sequences [first, first + n) of the step: whole ones (paged 0)
 * against their own K/V rows of qkv, paged chunks against the pool. */
static int attend(cuda_state *st, const step_geom *g, int l, int first, int n, int paged,
                  int shortcut) {
    if (n == 0) return QE_K_OK;
    qe_attn_params ap;
    memset(&ap, 0, sizeof ap);
    if (paged) {
        const size_t kv_row = 2 * (size_t)st->kv_dim;
        qe_bf16 *pool = st->kv + (size_t)l * st->kv_rows * kv_row;
        ap.k = pool, ap.v = pool + st->kv_dim, ap.kv_stride = (int)kv_row;
        ap.cu_seqlens_k = g->d_cu_k;
        ap.block_table = g->d_table, ap.block_table_stride = g->bt_stride;
        ap.page_size = g->page_size;
    } else {
        ap.k = st->qkv + st->q_dim, ap.v = st->qkv + st->q_dim + st->kv_dim;
        ap.kv_stride = st->qkv_dim;
        ap.cu_seqlens_k = g->d_cu;
    }
    if (shortcut) {
        /* only the pooled rows go on: their q (already normed and rotated), one per sequence */
        ap.q = st->qkv_last, ap.cu_seqlens_q = g->d_cu_last + first, ap.max_seqlen_q = 1;
    } else {
        ap.q = st->qkv, ap.cu_seqlens_q = g->d_cu + first;
        ap.max_seqlen_q = paged ? g->max_len_paged : g->max_len;
    }
    ap.q_stride = st->qkv_dim;
    ap.out = st->attn, ap.out_stride = st->q_dim;
    ap.n_seqs = n;
    ap.heads = st->heads, ap.kv_heads = st->kv_heads, ap.head_dim = st->head_dim;
    ap.scale = 1.0f / sqrtf((float)st->head_dim);
    ap.alibi_slopes = st->alibi_slopes; /* ALiBi: cfg.rope_theta 0, so q/k were not rotated */
    return qe_attention(&ap, st->stream);
}

/* y = x w^T: cuBLASLt for a bf16 w, the quantized GEMM for a matrix kept quantized (q). */
static int linear(cuda_state *st, const qe_bf16 *x, int ldx, int rows, int k, const qe_bf16 *w,
                  const cuda_qlin *q, int n, void *y, int ldy, int y_f32, int accumulate) {
    if (q->n_runs)
        return cuda_qlinear(q, x, ldx, rows, y, ldy, y_f32, accumulate, st->gemm_ws, GEMM_WORKSPACE,
                            st->stream);
    return qe_gemm_bf16(st->gemm, x, ldx, rows, k, w, n, y, ldy, y_f32, accumulate, st->stream);
}

/* Whether a bf16 projection of rows rows runs with its next op fused into the skinny GEMM
 * (gemm_skinny.cu; QE_GEMM=skinny or fused-skinny, and a call of at most 32 rows that fits the
 * workspace). */
static int skinny_fuses(const qe_bf16 *x, int rows, int k, const qe_bf16 *w, const cuda_qlin *q,
                        int n, const void *out) {
    return qe_gemm_path_skinny(rows) && q->n_runs == 0 && w != NULL &&
           qe_gemm_skinny_fused_supports(x, k, rows, k, w, n, out, GEMM_WORKSPACE);
}

/* QE_GEMM=fused (or fused-skinny past 32 rows): whether the qkv and gate/up products of a bf16
 * layer run with their element-wise op in the epilogue of gemm_fused.cu's GEMM; a quantized
 * matrix keeps the separate kernels, and the kernels' *_supports refuse another device or shape (a
 * tensor-parallel slice of the intermediate that is no multiple of 64, say), which keeps them too,
 * product by product. */
static int wgmma_fuses(int rows, const cuda_qlin *q, const qe_bf16 *w) {
    return qe_gemm_path_fused(rows) && q->n_runs == 0 && w != NULL;
}

/* qkv = the qkv projection of h with its q/k heads normed and rotated (qe_qk_norm_rope). */
static int qkv_norm_rope(cuda_state *st, const cuda_layer *L, const step_geom *g, int T) {
    const int H = st->hidden;
    if (wgmma_fuses(T, &L->qqkv, L->wqkv) &&
        qe_gemm_qkv_norm_rope_supports(st->h, H, H, L->wqkv, st->heads, st->kv_heads, st->head_dim,
                                       st->qkv)) {
        K_CALL(qe_gemm_qkv_norm_rope(st->h, H, T, H, L->wqkv, st->heads, st->kv_heads, st->head_dim,
                                     g->d_pos, L->q_norm, L->k_norm, st->eps, st->cfg.rope_theta,
                                     st->qkv, st->stream));
        prof_mark(st, OP_QKV); /* the norm and RoPE inside: OP_ROPE gets no time */
        return QE_K_OK;
    }
    if (skinny_fuses(st->h, T, H, L->wqkv, &L->qqkv, st->qkv_dim, st->qkv)) {
        K_CALL(qe_gemm_skinny_qkv_norm_rope(st->h, H, T, H, L->wqkv, st->heads, st->kv_heads,
                                            st->head_dim, st->qkv, g->d_pos, L->q_norm, L->k_norm,
                                            st->eps, st->cfg.rope_theta, st->gemm_ws,
                                            GEMM_WORKSPACE, st->stream));
        prof_mark(st, OP_QKV);
        return QE_K_OK;
    }
    K_CALL(linear(st, st->h, H, T, H, L->wqkv, &L->qqkv, st->qkv_dim, st->qkv, st->qkv_dim, 0, 0));
    prof_mark(st, OP_QKV);
    K_CALL(qe_qk_norm_rope(st->qkv, T, st->heads, st->kv_heads, st->head_dim, g->d_pos, L->q_norm,
                           L->k_norm, st->eps, st->cfg.rope_theta, st->stream));
    prof_mark(st, OP_ROPE);
    return QE_K_OK;
}

/* act = SwiGLU of the gate|up projection of h's first rows rows. */
static int gate_up_swiglu(cuda_state *st, const cuda_layer *L, int rows) {
    const int H = st->hidden, I = st->inter;
    if (wgmma_fuses(rows, &L->qgu, L->wgu) &&
        qe_gemm_swiglu_supports(st->h, H, H, L->wgu, I, st->act)) {
        K_CALL(qe_gemm_swiglu(st->h, H, rows, H, L->wgu, I, st->act, st->stream));
        prof_mark(st, OP_GATEUP); /* SwiGLU inside: OP_SWIGLU gets no time */
        return QE_K_OK;
    }
    if (skinny_fuses(st->h, rows, H, L->wgu, &L->qgu, 2 * I, st->act)) {
        K_CALL(qe_gemm_skinny_swiglu(st->h, H, rows, H, L->wgu, I, st->act, I, st->gemm_ws,
                                     GEMM_WORKSPACE, st->stream));
        prof_mark(st, OP_GATEUP);
        return QE_K_OK;
    }
    K_CALL(linear(st, st->h, H, rows, H, L->wgu, &L->qgu, 2 * I, st->gu, 2 * I, 0, 0));
    prof_mark(st, OP_GATEUP);
    K_CALL(qe_swiglu(st->gu, rows, I, st->act, st->stream));
    prof_mark(st, OP_SWIGLU);
    return QE_K_OK;
}

/* Embed + the layers of one packed step, enqueued on the stream, all in the arena and the pool
 * (the paged chunks' K|V rows are written to the pool before each layer's attention reads it). */
int cuda_enqueue_layers(cuda_state *st, const step_geom *g) {
    const int H = st->hidden, T = g->Tp, S = g->Sp;
    const int n_whole = S - g->n_paged;
    qe_stream s = st->stream;
    if (st->embed_qtype)
        K_CALL(
            qe_embed_gather_q(st->embed_q, st->embed_qtype, st->vocab, H, g->d_tok, T, st->x, s));
    else
        K_CALL(qe_embed_gather(st->embed, st->vocab, H, g->d_tok, T, st->x, s));
    prof_mark(st, OP_EMBED);
    for (int l = 0; l < g->n_layers; l++) {
        const cuda_layer *L = &st->layer[l];
        const int shortcut = l == st->layers - 1 && !g->full_last;
        K_CALL(qe_add_rmsnorm(st->x, NULL, L->attn_norm, T, H, st->eps, st->h, s));
        prof_mark(st, OP_NORM);
        K_CALL(qkv_norm_rope(st, L, g, T));
        if (g->n_paged > 0) {
            const int first_tok = g->T - g->n_paged_tokens;
            K_CALL(qe_kv_append(st->qkv + (size_t)first_tok * st->qkv_dim + st->q_dim, st->qkv_dim,
                                2 * st->kv_dim, g->d_kv_rows, g->n_paged_tokens,
                                st->kv + (size_t)l * st->kv_rows * 2 * st->kv_dim, 2 * st->kv_dim,
                                s));
            prof_mark(st, OP_KV);
        }
        float *x = st->x;
        int rows = T;
        if (shortcut) {
            K_CALL(
                qe_gather_last_rows(st->qkv, (size_t)st->qkv_dim * 2, g->d_cu, S, st->qkv_last, s));
            K_CALL(qe_gather_last_rows(st->x, (size_t)H * 4, g->d_cu, S, st->x_last, s));
            prof_mark(st, OP_GATHER);
            x = st->x_last;
            rows = S;
        }
        K_CALL(attend(st, g, l, 0, n_whole, 0, shortcut));
        K_CALL(attend(st, g, l, n_whole, g->n_paged, 1, shortcut));
        prof_mark(st, OP_ATTN);
        K_CALL(linear(st, st->attn, st->q_dim, rows, st->q_dim, L->wo, &L->qo, H, x, H, 1,
                      tp_accumulate(st)));
        K_CALL(cuda_tp_allreduce(st, x, (size_t)rows * H));
        prof_mark(st, OP_OPROJ);
        K_CALL(qe_add_rmsnorm(x, NULL, L->mlp_norm, rows, H, st->eps, st->h, s));
        prof_mark(st, OP_NORM);
        K_CALL(gate_up_swiglu(st, L, rows));
        K_CALL(linear(st, st->act, st->inter, rows, st->inter, L->wdown, &L->qdown, H, x, H, 1,
                      tp_accumulate(st)));
        K_CALL(cuda_tp_allreduce(st, x, (size_t)rows * H));
        prof_mark(st, OP_DOWN);
    }
    return QE_K_OK;
}

/* Enqueues a packed step: the int arrays' upload, its layers (as a graph when g->graph), then
 * pooling of its S sequences and the copy of out [S, dims] (or, with residual_out, of its
 * residual rows [T, hidden]) to b->out, and records the slot's event. */
static int enqueue_step(cuda_state *st, stage_slot *sl, const step_geom *g, int dims, int normalize,
                        float *out, float *residual_out) {
    const int H = st->hidden;
    const size_t n_ints = 2 * (size_t)g->Tp + 2 * ((size_t)g->Sp + 1);
    CUDA_CHECK(cudaMemcpyAsync(st->d_ints, sl->ints, n_ints * sizeof(int32_t),
                               cudaMemcpyHostToDevice, st->stream));
    if (g->n_paged > 0)
        CUDA_CHECK(cudaMemcpyAsync(st->d_paged, sl->paged, g->n_paged_ints * sizeof(int32_t),
                                   cudaMemcpyHostToDevice, st->stream));
    prof_start(st);
    if (g->graph)
        K_CALL(graph_enqueue_layers(st, g));
    else
        K_CALL(cuda_enqueue_layers(st, g));
    sl->dst = NULL, sl->n = 0;
    if (residual_out) {
        CUDA_CHECK(cudaMemcpyAsync(residual_out, st->x, (size_t)g->T * H * sizeof(float),
                                   cudaMemcpyDeviceToHost, st->stream));
    } else {
        const int compact = !g->full_last && g->n_layers > 0; /* x_last exists once a layer ran */
        K_CALL(qe_pool_last(compact ? st->x_last : st->x, H, compact ? NULL : g->d_cu, g->S,
                            st->final_norm, st->eps, dims, normalize, st->pooled, st->stream));
        prof_mark(st, OP_POOL);
        const size_t n = (size_t)g->S * (size_t)dims;
        /* more rows than a slot holds: straight to the caller (then the copy blocks the host) */
        float *dst = n <= st->out_cap ? sl->out : out;
        CUDA_CHECK(cudaMemcpyAsync(dst, st->pooled, n * sizeof(float), cudaMemcpyDeviceToHost,
                                   st->stream));
        if (dst == sl->out) sl->dst = out, sl->n = n;
    }
    CUDA_CHECK(cudaEventRecord(sl->done, st->stream));
    sl->busy = 1;
    return QE_K_OK;
}

/* Waits for the slot's step and hands its vectors to the caller; the slot is free afterwards. */
static int wait_slot(cuda_state *st, stage_slot *sl) {
    if (!sl->busy) return QE_K_OK;
    sl->busy = 0;
    CUDA_CHECK(cudaEventSynchronize(sl->done));
    prof_finish(st);
    if (sl->dst) memcpy(sl->dst, sl->out, sl->n * sizeof(float));
    sl->dst = NULL;
    return QE_K_OK;
}

static int wait_all(cuda_state *st) {
    /* the older step first: the slot after the one last used */
    K_CALL(wait_slot(st, &st->slot[st->next_slot]));
    return wait_slot(st, &st->slot[st->next_slot ^ 1]);
}

/* One step (at most max_tokens tokens). Packs it into the next staging slot once that slot's
 * previous step has finished, enqueues it and returns without waiting for it: the caller packs
 * the next step while this one runs, and wait_all delivers the outputs. The profiler and the
 * residual hook wait at once. */
static int run_step(cuda_state *st, const qe_batch *b, int dims, int normalize, int n_layers,
                    float *residual_out) {
    step_geom g;
    memset(&g, 0, sizeof g);
    g.T = b->n_tokens, g.S = b->n_seqs, g.n_paged = b->n_paged, g.n_layers = n_layers;
    g.bt_stride = b->bt_stride, g.page_size = st->page_size;
    g.n_paged_tokens = b->n_paged ? b->n_tokens - b->cu_seqlens[b->n_seqs - b->n_paged] : 0;
    g.n_paged_ints = b->n_paged ? (size_t)b->n_paged + 1 + (size_t)g.n_paged_tokens +
                                      (size_t)b->n_paged * (size_t)b->bt_stride
                                : 0;
    if (g.n_paged_ints > st->paged_cap)
        return qe_k_fail("step", "n_paged_ints <= paged_cap", __func__, __FILE__, __LINE__,
                         "the block tables exceed their buffers");
    stage_slot *sl = &st->slot[st->next_slot];
    st->next_slot ^= 1;
    K_CALL(wait_slot(st, sl)); /* its pinned arrays may be rewritten once that step is done */
    g.full_last = st->full_last_layer || residual_out != NULL;
    g.Tp = g.T, g.Sp = g.S;
    g.graph =
        b->n_paged == 0 && !residual_out && n_layers == st->layers && graph_shape(st, &g.Tp, &g.Sp);
    pack_step(st, sl, &g, b);
    K_CALL(enqueue_step(st, sl, &g, dims, normalize, b->out, residual_out));
    if (st->prof.enabled || residual_out) K_CALL(wait_slot(st, sl));
    return QE_K_OK;
}

/* After a failed launch or wait: wait for the stream (queued copies may still read the pinned
 * staging), drop the steps in flight, report the message. */
static qe_status step_failed(cuda_state *st, char *err, size_t errlen) {
    snprintf(err, errlen, "cuda backend: %s", qe_k_last_error());
    cudaStreamSynchronize(st->stream);
    st->slot[0].busy = st->slot[1].busy = 0;
    return QE_ERR_DEVICE;
}

/* Makes this host thread's current device the engine's (a server calls from several threads). */
static int enter_device(cuda_state *st, char *err, size_t errlen) {
    cudaError_t e = cudaSetDevice(st->device);
    if (e != cudaSuccess)
        snprintf(err, errlen, "cuda backend: cudaSetDevice(%d): %s", st->device,
                 cudaGetErrorString(e));
    return e == cudaSuccess;
}

/* The caller asked to stop (qe_batch.stop): what was started finishes first, so nothing is left
 * in flight or writing into the caller's buffer. */
static qe_status stopped(cuda_state *st, char *err, size_t errlen) {
    if (wait_all(st) != QE_K_OK) return step_failed(st, err, errlen);
    return QE_ERR_CANCELLED;
}

/* A step the kernels can run without reading or writing out of bounds: within the arena, ids in
 * the vocabulary, pool rows and pages inside the pool. */
static qe_status check_step(const cuda_state *st, const qe_batch *b, char *err, size_t errlen) {
    const int n_whole = b->n_seqs - b->n_paged;
    if (b->n_seqs <= 0 || b->n_paged < 0 || n_whole < 0 || !b->cu_seqlens ||
        b->cu_seqlens[0] != 0 || b->n_tokens > st->max_tokens ||
        b->cu_seqlens[b->n_seqs] != b->n_tokens) {
        snprintf(err, errlen, "cuda backend: bad step (%d tokens of %d sequences, budget %d)",
                 b->n_tokens, b->n_seqs, st->max_tokens);
        return QE_ERR_ARG;
    }
    for (int i = 0; i < b->n_seqs; i++)
        if (b->cu_seqlens[i + 1] <= b->cu_seqlens[i]) {
            snprintf(err, errlen, "cuda backend: sequence %d of the step is empty", i);
            return QE_ERR_ARG;
        }
    for (int t = 0; t < b->n_tokens; t++)
        if (b->tokens[t] < 0 || b->tokens[t] >= st->vocab) {
            snprintf(err, errlen, "cuda backend: token id %d at %d outside the vocabulary (%d)",
                     b->tokens[t], t, st->vocab);
            return QE_ERR_ARG;
        }
    const int t0 = b->cu_seqlens[n_whole];
    for (int t = t0; b->n_paged && t < b->n_tokens; t++)
        if (b->kv_rows[t - t0] < 0 || (size_t)b->kv_rows[t - t0] >= st->kv_rows) {
            snprintf(err, errlen, "cuda backend: a step's K/V row lies outside the pool");
            return QE_ERR_ARG;
        }
    for (long long i = 0; i < (long long)b->n_paged * b->bt_stride; i++)
        if (b->block_table[i] < 0 || b->block_table[i] >= st->kv_n_pages) {
            snprintf(err, errlen, "cuda backend: a step's page lies outside the pool");
            return QE_ERR_ARG;
        }
    return QE_OK;
}

static qe_status forward(void *state, const qe_batch *steps, int n_steps, int dims, int normalize,
                         char *err, size_t errlen) {
    cuda_state *st = state;
    if (!enter_device(st, err, errlen)) return QE_ERR_DEVICE;
    if (dims <= 0 || dims > st->hidden) {
        snprintf(err, errlen, "cuda backend: dims %d of %d", dims, st->hidden);
        return QE_ERR_ARG;
    }
    for (int i = 0; i < n_steps; i++) {
        qe_status status = check_step(st, &steps[i], err, errlen);
        if (status != QE_OK) return status;
    }
    for (int i = 0; i < n_steps; i++) {
        if (qe_batch_stopped(&steps[i], "cuda backend", err, errlen))
            return stopped(st, err, errlen);
        if (run_step(st, &steps[i], dims, normalize, st->layers, NULL) != QE_K_OK)
            return step_failed(st, err, errlen);
    }
    if (wait_all(st) != QE_K_OK) return step_failed(st, err, errlen);
    return QE_OK;
}

/* The residual stream of one step after its first n_layers layers, for tests. */
static qe_status residual(void *state, const qe_batch *b, int n_layers, float *out, char *err,
                          size_t errlen) {
    cuda_state *st = state;
    if (!enter_device(st, err, errlen)) return QE_ERR_DEVICE;
    if (n_layers < 0 || n_layers > st->layers) {
        snprintf(err, errlen, "cuda backend: bad residual request (%d layers of %d)", n_layers,
                 st->layers);
        return QE_ERR_ARG;
    }
    qe_status status = check_step(st, b, err, errlen);
    if (status != QE_OK) return status;
    if (run_step(st, b, st->hidden, 1, n_layers, out) != QE_K_OK || wait_all(st) != QE_K_OK)
        return step_failed(st, err, errlen);
    return QE_OK;
}

static int kv_pages(const void *state) {
    return ((const cuda_state *)state)->kv_n_pages;
}

/* Weights + activation arena + the K/V pool. */
static size_t device_bytes(const void *state) {
    const cuda_state *st = state;
    return st->wbytes + st->abytes + st->kvbytes;
}

/* ---------------------------------------------------------------- tool hooks (qembed_debug.h) */

static void counters(const void *state, qe_debug_counters *out) {
    const cuda_state *st = state;
    const cuda_graphs *c = &st->graphs;
    out->counted = 1;
    out->max_batch_tokens = st->max_tokens;
    out->graphs_on = graph_on(st);
    out->graph_captures = c->captures, out->graph_replays = c->replays;
    out->graph_refused = c->refused;
}

static int set_graphs(void *state, int on) {
    cuda_state *st = state;
    st->graphs.wanted = on != 0; /* graph_on still needs them available */
    return 0;
}

static int profile(void *state, int on) {
    return prof_set(state, on);
}

static int gemm_plans(const void *state, qe_debug_gemm_plan *out, int cap) {
    const cuda_state *st = state;
    qe_gemm_plan_info *info = cap > 0 ? malloc(sizeof *info * (size_t)cap) : NULL;
    const int n = qe_gemm_describe(st->gemm, info, info ? cap : 0);
    for (int i = 0; info && i < n && i < cap; i++) {
        const qe_gemm_plan_info *p = &info[i];
        qe_debug_gemm_plan d = {p->m,       p->n,       p->k,         p->y_f32,  p->accumulate,
                                p->algo_id, p->tile_id, p->stages_id, p->splitk, p->calls};
        out[i] = d;
    }
    free(info);
    return n;
}

const qe_backend_ops qe_cuda_backend = {
    .name = "cuda",
    .create = create,
    .forward = forward,
    .destroy = destroy,
    .residual = residual,
    .device_bytes = device_bytes,
    .kv_pages = kv_pages,
    .counters = counters,
    .set_graphs = set_graphs,
    .profile = profile,
    .gemm_plans = gemm_plans,
};
