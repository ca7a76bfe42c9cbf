/* cuda_qweights.c — the CUDA backend's quantized weights: which matrices of a GGUF model stay
 * quantized on the GPU, their bytes in the weight allocation, their upload (ggml blocks repacked
 * into the packed rows of kernels/ref/ref_qpack.h, a stage of rows at a time) and the GEMM that
 * runs them (kernels/qgemm.cu).
 *
 * A fused matrix (q|k|v, gate|up) stays quantized when every part is a packed type (Q8_0, Q4_K,
 * Q6_K) over whole 256-element super-blocks; consecutive parts of one type are one run of rows
 * (one qe_qgemm), so a Q4_K_M layer's Q4_K q|k and Q6_K v are two launches into the column
 * ranges of one qkv row. Any other dtype (F16, BF16, F32, Q4_0, Q5_0, Q5_K) takes the bf16 upload
 * of backend_cuda.c. The embedding table likewise, gathered by qe_embed_gather_q. */
#include <string.h>

#include "cuda_internal.h"
#include "kernels/ref/ref_qpack.h"
#include "weights/model.h"

/* The packed type t runs as, or 0 when it takes the bf16 path. */
static int packed_type(const st_tensor *t, int k) {
    if (!t || t->dtype != ST_QUANT || !qp_supported(t->qtype)) return 0;
    return qp_row_bytes(t->qtype, k) ? (int)t->qtype : 0;
}

/* Plans one fused matrix of parts (rows each) with k columns: runs, or n_runs 0 for bf16. */
static void plan_lin(cuda_qlin *q, const st_tensor *const *parts, const int *rows, int n, int k) {
    memset(q, 0, sizeof *q);
    for (int i = 0; i < n; i++)
        if (!packed_type(parts[i], k)) return;
    q->k = k;
    for (int i = 0; i < n; i++) {
        const int type = packed_type(parts[i], k);
        if (q->n_runs > 0 && q->run[q->n_runs - 1].type == type) {
            q->run[q->n_runs - 1].rows += rows[i];
        } else {
            q->run[q->n_runs].type = type;
            q->run[q->n_runs].rows = rows[i];
            q->n_runs++;
        }
    }
}

void cuda_qplan(cuda_state *st, const qe_model *m) {
    const int H = st->hidden;
    st->embed_qtype = packed_type(m->embed, H);
    for (int l = 0; l < st->layers; l++) {
        const qe_layer_tensors *T = &m->layers[l];
        cuda_layer *L = &st->layer[l];
        const st_tensor *qkv[3] = {T->wq, T->wk, T->wv}, *o[1] = {T->wo};
        const st_tensor *gu[2] = {T->w_gate, T->w_up}, *down[1] = {T->w_down};
        const int qkv_rows[3] = {st->q_dim, st->kv_dim, st->kv_dim}, h_rows[1] = {H};
        const int gu_rows[2] = {st->inter, st->inter};
        plan_lin(&L->qqkv, qkv, qkv_rows, 3, H);
        plan_lin(&L->qo, o, h_rows, 1, st->q_dim);
        plan_lin(&L->qgu, gu, gu_rows, 2, H);
        plan_lin(&L->qdown, down, h_rows, 1, st->inter);
    }
}

size_t cuda_qrun_bytes(const cuda_qlin *q, int i) {
    return (size_t)q->run[i].rows * qp_row_bytes((uint32_t)q->run[i].type, q->k);
}

/* Packs t's rows into dst (rows of its packed type) through the stage, as many rows at a time as
 * fit in stage_bytes. */
static int upload_packed(void *dst, const st_tensor *t, int k, void *stage, size_t stage_bytes) {
    const size_t rb = qp_row_bytes(t->qtype, k), src_rb = st_row_bytes(t);
    const int64_t rows = t->shape[0];
    int64_t per = (int64_t)(stage_bytes / rb);
    if (per < 1)
        return qe_k_fail("argument", "row bytes", __func__, __FILE__, __LINE__,
                         "a packed row longer than the upload stage");
    for (int64_t r = 0; r < rows; r += per) {
        const int64_t n = rows - r < per ? rows - r : per;
        if (ref_qpack_rows(t->qtype, (const uint8_t *)t->data + (size_t)r * src_rb, (int)n, k,
                           stage) != 0)
            return qe_k_fail("argument", "ref_qpack_rows", __func__, __FILE__, __LINE__,
                             "type or row length not packable");
        CUDA_CHECK(cudaMemcpy((uint8_t *)dst + (size_t)r * rb, stage, (size_t)n * rb,
                              cudaMemcpyHostToDevice));
    }
    return QE_K_OK;
}

/* Uploads the parts of a planned fused matrix into its runs, in order. */
static int upload_lin(const cuda_qlin *q, const st_tensor *const *parts, int n, void *stage,
                      size_t stage_bytes) {
    int run = 0;
    size_t off = 0; /* rows of the current run already filled */
    for (int i = 0; i < n; i++) {
        const cuda_qrun *r = &q->run[run];
        const size_t rb = qp_row_bytes((uint32_t)r->type, q->k);
        K_CALL(upload_packed((uint8_t *)r->w + off * rb, parts[i], q->k, stage, stage_bytes));
        off += (size_t)parts[i]->shape[0];
        if (off == (size_t)r->rows) run++, off = 0;
    }
    return QE_K_OK;
}

int cuda_qupload_layer(cuda_state *st, const qe_model *m, int l, void *stage, size_t stage_bytes) {
    const qe_layer_tensors *T = &m->layers[l];
    const cuda_layer *L = &st->layer[l];
    const st_tensor *qkv[3] = {T->wq, T->wk, T->wv}, *gu[2] = {T->w_gate, T->w_up};
    if (L->qqkv.n_runs) K_CALL(upload_lin(&L->qqkv, qkv, 3, stage, stage_bytes));
    if (L->qo.n_runs) K_CALL(upload_lin(&L->qo, &T->wo, 1, stage, stage_bytes));
    if (L->qgu.n_runs) K_CALL(upload_lin(&L->qgu, gu, 2, stage, stage_bytes));
    if (L->qdown.n_runs) K_CALL(upload_lin(&L->qdown, &T->w_down, 1, stage, stage_bytes));
    return QE_K_OK;
}

int cuda_qupload_embed(cuda_state *st, const qe_model *m, void *stage, size_t stage_bytes) {
    return upload_packed(st->embed_q, m->embed, st->hidden, stage, stage_bytes);
}

int cuda_qlinear(const cuda_qlin *q, const qe_bf16 *x, int ldx, int rows, void *y, int ldy,
                 int y_f32, int accumulate, void *ws, size_t ws_bytes, qe_stream s) {
    int col = 0;
    for (int i = 0; i < q->n_runs; i++) {
        const cuda_qrun *r = &q->run[i];
        void *yc = (char *)y + (size_t)col * (y_f32 ? 4 : 2);
        K_CALL(qe_qgemm(x, ldx, rows, q->k, r->w, r->type, r->rows, yc, ldy, y_f32, accumulate, ws,
                        ws_bytes, s));
        col += r->rows;
    }
    return QE_K_OK;
}
