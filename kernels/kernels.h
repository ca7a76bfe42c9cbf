/* kernels.h — the only header the rest of qembed sees of the CUDA kernels: one C launcher per op
 * (raw device pointers, sizes, a stream), the cuBLASLt GEMM wrapper, and the one error-macro
 * generator shared by the kernels and the CUDA runtime code. C types only.
 *
 * Every launcher returns QE_K_OK (0) or QE_K_ERR (-1); on error qe_k_last_error() holds a one-line
 * message (the failing call as text, function, file:line, the error's name). Thread-local. */
#ifndef QE_KERNELS_H
#define QE_KERNELS_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct CUstream_st *qe_stream; /* the same type as cudaStream_t; NULL = default stream */
typedef uint16_t qe_bf16;              /* raw bfloat16 bits */

#define QE_K_OK 0
#define QE_K_ERR (-1)

/* Records "kind error what in call (func, file:line)" as the last error; returns QE_K_ERR. */
int qe_k_fail(const char *kind, const char *call, const char *func, const char *file, int line,
              const char *what);
const char *qe_k_last_error(void);

/* QE_K_OK if this build's kernels run on the device (cudaSetDevice not needed); else QE_K_ERR and
 * a line in err naming the GPU, what the build holds and the CMake option that fixes it. */
int qe_kernels_check_device(int device, char *err, size_t errlen);
/* Whether the sm_90a kernels (attention fa3, the wgmma fused GEMM) run on the current device: a
 * compute capability 9.0 device and a build with sm_90a code (device_check.cu). */
int qe_sm90a_kernels_run(void);
/* Whether programmatic dependent launch can work here: sm_90+ code in the build and an sm_90+
 * device (qe_pdl_enabled asks it). */
int qe_pdl_supported(void);

/* The one generator of the check macros (CUDA_CHECK, CUBLAS_CHECK, ...): evaluate call once,
 * compare with its success value, record the error's name and return QE_K_ERR from the caller. */
#define QE_K_CHECK_GEN(kind, type, call, ok, namefn)                                               \
    do {                                                                                           \
        type qe_k_s_ = (call);                                                                     \
        if (qe_k_s_ != (ok))                                                                       \
            return qe_k_fail(kind, #call, __func__, __FILE__, __LINE__, namefn(qe_k_s_));          \
    } while (0)
/* Argument checks in launchers: the condition as text is the message. */
#define QE_K_REQUIRE(cond)                                                                         \
    do {                                                                                           \
        if (!(cond))                                                                               \
            return qe_k_fail("argument", #cond, __func__, __FILE__, __LINE__, "violated");         \
    } while (0)

/* ---- element-wise and row kernels (one .cu file each) ---- */

/* out[t, :] = float(table[tokens[t], :]); tokens must lie in [0, vocab) (clamped defensively). */
int qe_embed_gather(const qe_bf16 *table, int vocab, int hidden, const int32_t *tokens,
                    int n_tokens, float *out, qe_stream s);

/* residual += delta (delta fp32 [rows, dim] or NULL); out = bf16(rmsnorm(residual) * w). */
int qe_add_rmsnorm(float *residual, const float *delta, const float *w, int rows, int dim,
                   float eps, qe_bf16 *out, qe_stream s);

/* In place on the q and k heads of each qkv row ([q heads*hd | k kv*hd | v kv*hd], bf16):
 * per-head RMSNorm (fp32) with the shared q_norm_w / k_norm_w [head_dim], then NeoX RoPE at
 * positions[t] with inv_freq_i = theta^(-2i/head_dim). Angles are formed and reduced mod 2*pi in
 * double, then sincosf on the reduced fp32 angle. theta 0: the RMSNorm only, no rotation (ALiBi
 * models; positions is not read and may be NULL). head_dim must be even and <= 256. */
int qe_qk_norm_rope(qe_bf16 *qkv, int n_tokens, int heads, int kv_heads, int head_dim,
                    const int32_t *positions, const float *q_norm_w, const float *k_norm_w,
                    float eps, double theta, qe_stream s);

/* out[r, i] = bf16(silu(gate_up[r, i]) * gate_up[r, inter + i]) (fp32 math). */
int qe_swiglu(const qe_bf16 *gate_up, int rows, int inter, qe_bf16 *out, qe_stream s);

/* For each sequence s: row = x[cu_seqlens[s+1]-1] (or x[s] when cu_seqlens is NULL); final
 * RMSNorm with final_norm_w, keep the first dims values, L2-normalise them when normalize;
 * out fp32 [n_seqs, dims]. */
int qe_pool_last(const float *x, int hidden, const int32_t *cu_seqlens, int n_seqs,
                 const float *final_norm_w, float eps, int dims, int normalize, float *out,
                 qe_stream s);

/* dst row s = src row (cu_seqlens[s+1]-1); rows of row_bytes (a multiple of 4) bytes. */
int qe_gather_last_rows(const void *src, size_t row_bytes, const int32_t *cu_seqlens, int n_seqs,
                        void *dst, qe_stream s);

/* The paged K/V pool's writes: dst row dst_rows[i] (row stride dst_stride) = src row i (row
 * stride src_stride), row_elems bf16 each; every dst_rows[i] distinct. */
int qe_kv_append(const qe_bf16 *src, int src_stride, int row_elems, const int32_t *dst_rows,
                 int n_rows, qe_bf16 *dst, int dst_stride, qe_stream s);

/* ---- programmatic dependent launch (kernels/pdl.cu) ----
 * Whether the kernels launched by QE_LAUNCH_PDL (the per-layer ones of a forward: norms, RoPE,
 * K/V append, attention, SwiGLU, the skinny GEMM, gathers) may start while the stream's previous
 * kernel finishes (each waits for it in griddep_wait before touching memory). QE_PDL=1 (or on)
 * turns it on (read once); qe_pdl_select(1 / 0) overrides, -1 returns to QE_PDL's; select returns
 * 0, or -1 for another value. Off by default until a GPU has timed it (docs/kernels.md). */
int qe_pdl_enabled(void);
int qe_pdl_select(int on);

/* ---- flash attention (kernels/attention.cu) ---- */

/* Varlen causal GQA attention, bf16 in/out, fp32 online softmax, head_dim 128.
 * Sequence s has Lq = cu_seqlens_q[s+1]-cu_seqlens_q[s] queries and Lk keys (Lk >= Lq); the
 * queries are the LAST Lq positions of the sequence, so query i sees keys j <= i + (Lk - Lq)
 * (bottom-right causal alignment; Lq == Lk is ordinary self-attention).
 * Query token t (packed index), head h: q + t*q_stride + h*head_dim. Output likewise with
 * out_stride. Key j of sequence s, kv head g:
 *   contiguous (block_table NULL): k + (cu_seqlens_k[s] + j)*kv_stride + g*head_dim
 *   paged: page = block_table[s*block_table_stride + j/page_size],
 *          k + (page*page_size + j%page_size)*kv_stride + g*head_dim
 * (v the same with its own pointer). Query head h reads kv head h / (heads/kv_heads).
 * Logits are scale * q.k, plus alibi_slopes[h] * (j - i_abs) when alibi_slopes (fp32 [heads],
 * device) is not NULL, i_abs = i + Lk - Lq. All pointers are device pointers. */
typedef struct qe_attn_params {
    const qe_bf16 *q;
    const qe_bf16 *k;
    const qe_bf16 *v;
    qe_bf16 *out;
    int q_stride, kv_stride, out_stride; /* row strides in elements */
    const int32_t *cu_seqlens_q;         /* [n_seqs+1] */
    const int32_t *cu_seqlens_k;         /* [n_seqs+1]; only differences used when paged */
    int n_seqs;
    int max_seqlen_q; /* >= every Lq: sizes the grid */
    int heads, kv_heads, head_dim;
    float scale;
    const float *alibi_slopes;  /* [heads] or NULL */
    const int32_t *block_table; /* [n_seqs, block_table_stride] or NULL */
    int block_table_stride;
    int page_size; /* keys per page when paged (any positive value) */
} qe_attn_params;

int qe_attention(const qe_attn_params *p, qe_stream s);

/* Variants of qe_attention (issue 15: written and proven on the emulator before a GPU times them
 * side by side; docs/kernels.md predicts each): 0 "fa2", the production kernel (attention.cu);
 * 1 "m128", 128 queries a block, 32 rows a warp, a 3-stage ring of 32-key K/V tiles
 * (attention_m128.cu); 2 "fa3", sm_90a only: TMA K/V ring fed by a producer warp, two wgmma
 * consumer warpgroups of 64 rows in ping-pong, a persistent longest-first grid
 * (attention_fa3.cu). Same contract, same results to rounding. qe_attention runs the one the
 * environment's QE_ATTN names (a name or its number, read once; default 0), unless
 * qe_attention_select chose one (-1 returns to QE_ATTN's). select returns 0, or -1 for no such
 * variant; the name is NULL for one. */
enum { QE_ATTN_VARIANTS = 3 };
int qe_attention_select(int variant);
int qe_attention_variant(void);
const char *qe_attention_variant_name(int variant);

/* ---- quantized weights (kernels/qgemm.cu, qdequant.cu, qembed_gather.cu) ----
 * w is a packed matrix of n rows (kernels/ref/ref_qpack.h: ref_qpack_rows repacks ggml blocks
 * into it at upload), type a ggml type id: QT_Q8_0, QT_Q4_K or QT_Q6_K (ref_quant.h); k a
 * multiple of 256. */

/* y[m, n] (row stride ldy) = x[m, k] (bf16, row stride ldx) * dequant(w)[n, k]^T: the weights
 * dequantized to bf16 in registers, bf16 MMA, fp32 accumulation; y fp32 (accumulate: y +=, the
 * residual update) or bf16, as qe_gemm_bf16. m <= 32 runs split-K with fp32 partials in ws
 * (qe_qgemm_splits(type, m, k, n, ws_bytes) splits of m*n floats; ws NULL: one split) and a
 * fixed-order reduction: deterministic. x and w 16-byte aligned, ldx a multiple of 8. ws may be
 * the cuBLASLt workspace: both are used only inside their own launches on the stream. */
int qe_qgemm(const qe_bf16 *x, int ldx, int m, int k, const void *w, int type, int n, void *y,
             int ldy, int y_f32, int accumulate, void *ws, size_t ws_bytes, qe_stream s);
/* The split count qe_qgemm uses for this shape and workspace (1 for m > 32). */
int qe_qgemm_splits(int type, int m, int k, int n, size_t ws_bytes);

/* out[n, k] (bf16, row-major) = dequant(w): the values qe_qgemm multiplies (the dequantize-then-
 * cuBLASLt variant of bench_qgemm). */
int qe_qdequant_bf16(const void *w, int type, int n, int k, qe_bf16 *out, qe_stream s);

/* qe_embed_gather from a packed quantized table [vocab] rows of hidden (a multiple of 256). */
int qe_embed_gather_q(const void *table, int type, int vocab, int hidden, const int32_t *tokens,
                      int n_tokens, float *out, qe_stream s);

/* ---- GEMM through cuBLASLt (kernels/gemm.cu) ---- */

typedef struct qe_gemm qe_gemm; /* cuBLASLt handle, workspace, cached plans */

/* workspace: device memory of workspace_bytes (owned by the caller; 32 MiB is plenty). */
int qe_gemm_create(qe_gemm **out, void *workspace, size_t workspace_bytes);
void qe_gemm_destroy(qe_gemm *g);

/* y[m, n] (row stride ldy) = x[m, k] (bf16, row stride ldx) * w[n, k]^T (bf16, row stride k),
 * fp32 accumulate. y is fp32 when y_f32, else bf16. accumulate (fp32 y only): y += x w^T
 * (beta = 1, the residual-stream update). Pointers 16-byte aligned; ldx, ldy multiples of 8. */
int qe_gemm_bf16(qe_gemm *g, const qe_bf16 *x, int ldx, int m, int k, const qe_bf16 *w, int n,
                 void *y, int ldy, int y_f32, int accumulate, qe_stream s);

/* Paths of qe_gemm_bf16 (issue 15, items 3 and 4): 0 "cublaslt", every call through cuBLASLt (the
 * default); 1 "skinny", calls with m <= 32 through the split-K kernel of gemm_skinny.cu (the rest,
 * and calls it cannot take: k or ldx not a multiple of 8, x or w not 16-byte aligned, still go to
 * cuBLASLt); 2 "fused", every qe_gemm_bf16 call through cuBLASLt as 0, and the CUDA backend runs
 * the qkv and gate/up products of bf16 layers through qe_gemm_qkv_norm_rope / qe_gemm_swiglu
 * (gemm_fused.cu) instead of qe_gemm_bf16 + qe_qk_norm_rope / qe_swiglu, where they take the
 * shape (*_supports; an sm_90 device); 3 "fused-skinny", both: calls of m <= 32 as in 1 (the
 * backend's qkv and gate/up with the skinny kernel's fused epilogues), longer ones as in 2, the
 * candidate for production if each wins on its side. The environment's QE_GEMM names one (a name
 * or its number, read once); a test or benchmark chooses with qe_gemm_select (-1 returns to
 * QE_GEMM's). select returns 0, or -1 for no such path; the name is NULL for one. */
enum {
    QE_GEMM_PATH_CUBLASLT = 0,
    QE_GEMM_PATH_SKINNY = 1,
    QE_GEMM_PATH_FUSED = 2,
    QE_GEMM_PATH_FUSED_SKINNY = 3
};
enum { QE_GEMM_PATHS = 4 };
/* The longest call (m) the skinny kernel takes; whether the selected path sends one of m rows
 * there (1 and 3) or through the 128-row tiles (2 and 3 for the fused products). */
enum { QE_GEMM_SKINNY_MAX_M = 32 };
int qe_gemm_path_skinny(int m);
int qe_gemm_path_fused(int m);
int qe_gemm_select(int path);
int qe_gemm_path(void);
const char *qe_gemm_path_name(int path);

/* The skinny kernel itself (gemm_skinny.cu), as qe_gemm_bf16 runs it: same contract for
 * 1 <= m <= 32; fp32 partial sums of the split-K slices go to workspace (device memory; with too
 * little, fewer slices, down to one, which needs none). supports says whether it takes a call;
 * splits is the number of k slices it runs for n, k and that workspace (the same for every m). */
int qe_gemm_skinny(const qe_bf16 *x, int ldx, int m, int k, const qe_bf16 *w, int n, void *y,
                   int ldy, int y_f32, int accumulate, float *workspace, size_t workspace_bytes,
                   qe_stream s);
int qe_gemm_skinny_supports(const qe_bf16 *x, int ldx, int m, int k, const qe_bf16 *w,
                            const void *y, int ldy, int y_f32);
int qe_gemm_skinny_splits(int n, int k, size_t workspace_bytes);

/* The skinny kernel with the layer's next op done in its reduction pass (issue 15, item 4: fewer
 * launches for a query step), two launches instead of three, bitwise what qe_gemm_skinny followed
 * by that op gives:
 *   swiglu: act[m, inter] (row stride ld_act) = qe_swiglu of x [w_gate; w_up]^T (w [2 inter, k]);
 *   qkv_norm_rope: qkv[m, (heads + 2 kv_heads) head_dim] = qe_qk_norm_rope of x w_qkv^T, at
 *     positions (theta 0: the norm alone).
 * They always split k through workspace: fused_supports says whether a call fits (the skinny
 * kernel's conditions, and room for the partials of 32 rows of n = the projection's width). */
int qe_gemm_skinny_swiglu(const qe_bf16 *x, int ldx, int m, int k, const qe_bf16 *w_gate_up,
                          int inter, qe_bf16 *act, int ld_act, float *workspace,
                          size_t workspace_bytes, qe_stream s);
int qe_gemm_skinny_qkv_norm_rope(const qe_bf16 *x, int ldx, int m, int k, const qe_bf16 *w_qkv,
                                 int heads, int kv_heads, int head_dim, qe_bf16 *qkv,
                                 const int32_t *positions, const float *q_norm_w,
                                 const float *k_norm_w, float eps, double theta, float *workspace,
                                 size_t workspace_bytes, qe_stream s);
int qe_gemm_skinny_fused_supports(const qe_bf16 *x, int ldx, int m, int k, const qe_bf16 *w, int n,
                                  const void *out, size_t workspace_bytes);

/* ---- fused GEMM epilogues (kernels/gemm_fused.cu, sm_90a: wgmma + TMA; issue 15, item 3) ----
 * Our own GEMM for the two products an element-wise op follows, the op applied to the fp32
 * accumulators before the one bf16 rounding. x [m, k] (row stride ldx), fp32 accumulation.
 *
 * act[m, inter] (row stride inter) = bf16(silu(x Wg^T) * (x Wu^T)), wgu the stacked [2*inter, k]
 * (gate rows then up rows, as the engine uploads them). qe_swiglu(x wgu^T) rounded gu first.
 *
 * qkv[m, (heads + 2 kv_heads) * 128] = x wqkv^T with qe_qk_norm_rope's per-head RMSNorm (q_norm_w
 * / k_norm_w [128]) and NeoX RoPE at positions[t] (theta 0: the norm only, positions not read)
 * on the q and k heads, v as the product; the layout qe_qk_norm_rope leaves.
 *
 * Both need k a multiple of 64, inter a multiple of 64, head_dim 128, ldx a multiple of 8 and
 * x, w, y 16-byte aligned (every Qwen3 size; *_supports says whether a call qualifies, the
 * launchers refuse the rest). */
int qe_gemm_swiglu(const qe_bf16 *x, int ldx, int m, int k, const qe_bf16 *wgu, int inter,
                   qe_bf16 *act, qe_stream s);
int qe_gemm_qkv_norm_rope(const qe_bf16 *x, int ldx, int m, int k, const qe_bf16 *wqkv, int heads,
                          int kv_heads, int head_dim, const int32_t *positions,
                          const float *q_norm_w, const float *k_norm_w, float eps, double theta,
                          qe_bf16 *qkv, qe_stream s);
int qe_gemm_swiglu_supports(const qe_bf16 *x, int ldx, int k, const qe_bf16 *wgu, int inter,
                            const qe_bf16 *act);
int qe_gemm_qkv_norm_rope_supports(const qe_bf16 *x, int ldx, int k, const qe_bf16 *wqkv, int heads,
                                   int kv_heads, int head_dim, const qe_bf16 *qkv);

/* What the heuristic chose for one cached plan, for tools (qembed bench prints it): the shape,
 * the algorithm's CUBLASLT_ALGO_CONFIG_ID, _TILE_ID, _STAGES_ID and _SPLITK_NUM (-1 where
 * cuBLASLt does not report one), and how many qe_gemm_bf16 calls ran it (a CUDA graph's replays
 * make none). */
typedef struct qe_gemm_plan_info {
    int m, n, k, y_f32, accumulate;
    int algo_id, tile_id, stages_id, splitk;
    long long calls;
} qe_gemm_plan_info;

/* Copies up to cap of the cached plans into out (cache order); returns how many are cached. */
int qe_gemm_describe(const qe_gemm *g, qe_gemm_plan_info *out, int cap);

#ifdef __cplusplus
}
#endif
#endif
