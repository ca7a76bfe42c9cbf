/* test_kernels.c — every CUDA kernel against its fp32 C reference (kernels/ref/ref.h) on seeded
 * random inputs, odd and tail sizes (1, 7, 113, 129, 2049 rows), several packed sequences, GQA
 * ratios 1/2/4, outputs poisoned (0xFF = NaN) before each launch; tolerance by output dtype; the
 * worst element is printed on failure with its coordinates, the NaN count and the count of
 * elements never written. Skips cleanly without a GPU. Built twice: against the CUDA kernels
 * (test_kernels, on a GPU) and against the same kernels on the CPU kernel emulator
 * (test_kernels_emu, QE_EMU_TEST: tests/emu, device memory is poisoned host memory), where the
 * attention tests also check bank conflicts and emulator reports. */
#include <cuda_runtime_api.h>
#include <stdint.h>

#include "kernels/kernel_switch.h"
#include "kernels/kernels.h"
#include "kernels/ref/ref.h"
#include "kernels/ref/ref_qpack.h"
#include "kernels/ref/ref_quant.h"
#include "gpu_util.h"
#include "test_util.h"
#include "weights/safetensors.h"
#ifdef QE_EMU_TEST
#include "qe_emu.h"
#endif

/* ------------------------------------------------------------------ helpers */

static uint64_t rng_state;
static void rng_seed(uint64_t s) {
    rng_state = s * 0x9E3779B97F4A7C15ull + 1;
}
static uint64_t rng_next(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
/* Uniform in [-a, a], never exactly zero-filled data. */
static float frand(float a) {
    return (float)((rng_next() >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0) * a;
}
static int irand(int n) {
    return (int)(rng_next() % (uint64_t)n);
}

/* Random bf16 values (and their exact fp32 copy). */
static void rand_bf16(uint16_t *b, float *f, size_t n, float a) {
    for (size_t i = 0; i < n; i++) {
        b[i] = st_f32_to_bf16(frand(a));
        if (f) f[i] = st_bf16_to_f32(b[i]);
    }
}

static void *dalloc(size_t bytes) {
    void *p = NULL;
    cr_assert_eq(cudaMalloc(&p, bytes ? bytes : 16), cudaSuccess, "cudaMalloc %zu", bytes);
    cr_assert_eq(cudaMemset(p, 0xFF, bytes ? bytes : 16), cudaSuccess); /* poison: NaN */
    return p;
}
static void *dup_to_dev(const void *h, size_t bytes) {
    void *d = dalloc(bytes);
    cr_assert_eq(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice), cudaSuccess);
    return d;
}
/* Why a wait failed: the error's name and, on the kernel emulator, its report. */
static const char *fault_detail(cudaError_t e) {
    static char buf[1400];
#ifdef QE_EMU_TEST
    snprintf(buf, sizeof buf, "%s; emulator: %s", cudaGetErrorName(e), qe_emu_last_error());
#else
    snprintf(buf, sizeof buf, "%s (%s)", cudaGetErrorName(e), cudaGetErrorString(e));
#endif
    return buf;
}
static void to_host(void *h, const void *d, size_t bytes) {
    const cudaError_t e = cudaDeviceSynchronize();
    cr_assert_eq(e, cudaSuccess, "kernel fault: %s", fault_detail(e));
    cr_assert_eq(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
}
static void poison(void *d, size_t bytes) {
    cr_assert_eq(cudaMemset(d, 0xFF, bytes), cudaSuccess);
}
#define KOK(call) cr_assert_eq((call), QE_K_OK, "%s failed: %s", #call, qe_k_last_error())

/* How to name element i of an output in a failure message. A matrix of `cols` columns by
 * default; an attention output ([tokens, heads, 128] of packed query rows, cu the host copy of
 * cu_seqlens_q, q_offset[s] = Lk - Lq of sequence s or NULL) by sequence, row, head and dim, with
 * the row's query block and key tiles (64 wide) and the dim's 16-byte chunk, where fragment,
 * swizzle and masking bugs show. */
typedef struct out_layout {
    int cols;
    const int32_t *cu;
    int n_seqs, heads, kv_heads;
    const int *q_offset;
} out_layout;

static void describe(const out_layout *l, size_t i, char *buf, size_t cap) {
    if (!l || !l->cu) {
        const int cols = l && l->cols ? l->cols : 1;
        snprintf(buf, cap, "element %zu (row %zu, col %zu)", i, i / cols, i % cols);
        return;
    }
    const size_t t = i / ((size_t)l->heads * 128);
    const int h = (int)(i / 128 % l->heads), d = (int)(i % 128);
    int s = 0;
    while (s + 1 < l->n_seqs && (size_t)l->cu[s + 1] <= t)
        s++;
    const int row = (int)t - l->cu[s], lq = l->cu[s + 1] - l->cu[s];
    const int off = l->q_offset ? l->q_offset[s] : 0, key = row + off;
    snprintf(buf, cap,
             "sequence %d row %d of %d (query block %d, row %d in it%s; sees keys 0..%d: diagonal "
             "key tile %d, key %d in it), head %d (kv head %d), dim %d (16-byte chunk %d)",
             s, row, lq, row / 64, row % 64,
             row % 64 == 0 || row % 64 == 63 ? ", a block edge" : "", key, key / 64, key % 64, h,
             h / (l->heads / l->kv_heads), d, d / 8);
}

/* |got - want| <= atol + rtol * |want| everywhere (NaN fails). On failure prints the worst
 * element where l names it, how many are NaN, and how many still hold the 0xFF poison the
 * output was filled with (never written: bf16 0xFFFF, fp32 0xFFFFFFFF). */
static int check_close_at(const char *what, const float *got, const float *want, size_t n,
                          double atol, double rtol, const out_layout *l) {
    double worst = -1;
    size_t wi = 0, nans = 0, unwritten = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        double r = isnan(got[i]) || isnan(want[i]) ? INFINITY : d / (atol + rtol * fabs(want[i]));
        if (r > worst) worst = r, wi = i;
        uint32_t bits;
        memcpy(&bits, &got[i], 4);
        if (bits == 0xFFFF0000u || bits == 0xFFFFFFFFu)
            unwritten++;
        else if (isnan(got[i]))
            nans++;
    }
    if (worst > 1.0) {
        char where[400];
        describe(l, wi, where, sizeof where);
        cr_log_error("%s: worst at %s of %zu: got %.7g want %.7g (|diff| %.3g, tol %.3g); %zu NaN, "
                     "%zu never written",
                     what, where, n, got[wi], want[wi], fabs((double)got[wi] - want[wi]),
                     atol + rtol * fabs(want[wi]), nans, unwritten);
        return 0;
    }
    return 1;
}
static void bf_to_f(const uint16_t *b, float *f, size_t n) {
    for (size_t i = 0; i < n; i++)
        f[i] = st_bf16_to_f32(b[i]);
}

static const int ROWS[] = {1, 7, 113, 129, 2049};
#define N_ROWS ((int)(sizeof ROWS / sizeof ROWS[0]))

/* bf16 output tolerance: ~2 ulps of bf16 relative, plus a small absolute floor. */
#define BF_RTOL 8e-3
#define BF_ATOL 1e-3

/* ------------------------------------------------------------------ embed */

Test(kernels, embed_gather) {
    require_gpu("GPU kernel test");
    const int vocab = 1001, hiddens[] = {64, 1024, 7};
    for (int hi = 0; hi < 3; hi++)
        for (int ri = 0; ri < N_ROWS; ri++) {
            const int H = hiddens[hi], T = ROWS[ri];
            rng_seed(100 + hi * 10 + ri);
            uint16_t *tb = malloc((size_t)vocab * H * 2);
            float *tf = malloc((size_t)vocab * H * 4);
            int32_t *tok = malloc((size_t)T * 4);
            float *want = malloc((size_t)T * H * 4), *got = malloc((size_t)T * H * 4);
            rand_bf16(tb, tf, (size_t)vocab * H, 2.0f);
            for (int t = 0; t < T; t++)
                tok[t] = irand(vocab);
            tok[0] = vocab - 1;
            ref_embed_gather(tf, H, tok, T, want);
            void *d_tab = dup_to_dev(tb, (size_t)vocab * H * 2);
            int32_t *d_tok = dup_to_dev(tok, (size_t)T * 4);
            float *d_out = dalloc((size_t)T * H * 4);
            KOK(qe_embed_gather(d_tab, vocab, H, d_tok, T, d_out, NULL));
            to_host(got, d_out, (size_t)T * H * 4);
            const out_layout l = {.cols = H};
            cr_expect(check_close_at("embed_gather", got, want, (size_t)T * H, 0, 0, &l),
                      "H %d T %d", H, T);
            cudaFree(d_tab), cudaFree(d_tok), cudaFree(d_out);
            free(tb), free(tf), free(tok), free(want), free(got);
        }
}

/* ------------------------------------------------------------------ add_rmsnorm */

Test(kernels, add_rmsnorm) {
    require_gpu("GPU kernel test");
    const int dims[] = {64, 1024, 2560, 7};
    for (int di = 0; di < 4; di++)
        for (int ri = 0; ri < N_ROWS; ri++)
            for (int with_delta = 0; with_delta < 2; with_delta++) {
                const int D = dims[di], R = ROWS[ri];
                const size_t n = (size_t)R * D;
                rng_seed(200 + di * 100 + ri * 10 + with_delta);
                float *x = malloc(n * 4), *delta = malloc(n * 4), *w = malloc((size_t)D * 4);
                float *want = malloc(n * 4), *got = malloc(n * 4), *xgot = malloc(n * 4);
                uint16_t *ob = malloc(n * 2);
                for (size_t i = 0; i < n; i++)
                    x[i] = frand(3.0f), delta[i] = frand(1.0f);
                for (int i = 0; i < D; i++)
                    w[i] = 0.5f + frand(0.4f);
                float *d_x = dup_to_dev(x, n * 4), *d_delta = dup_to_dev(delta, n * 4);
                float *d_w = dup_to_dev(w, (size_t)D * 4);
                uint16_t *d_out = dalloc(n * 2);
                ref_add_rmsnorm(x, with_delta ? delta : NULL, w, R, D, 1e-6f, want);
                KOK(qe_add_rmsnorm(d_x, with_delta ? d_delta : NULL, d_w, R, D, 1e-6f, d_out,
                                   NULL));
                to_host(ob, d_out, n * 2);
                to_host(xgot, d_x, n * 4);
                bf_to_f(ob, got, n);
                const out_layout l = {.cols = D};
                cr_expect(check_close_at("add_rmsnorm residual", xgot, x, n, 1e-6, 1e-6, &l),
                          "D %d R %d", D, R);
                cr_expect(check_close_at("add_rmsnorm out", got, want, n, BF_ATOL, BF_RTOL, &l),
                          "D %d R %d delta %d", D, R, with_delta);
                cudaFree(d_x), cudaFree(d_delta), cudaFree(d_w), cudaFree(d_out);
                free(x), free(delta), free(w), free(want), free(got), free(xgot), free(ob);
            }
}

/* ------------------------------------------------------------------ qk_norm + rope */

/* 1 when the v part of every qkv row of out (bf16) is bit for bit that of in. */
static int v_untouched(const uint16_t *out, const uint16_t *in, int T, int H, int KV, int HD) {
    const int row = (H + 2 * KV) * HD;
    for (int t = 0; t < T; t++)
        for (int i = (H + KV) * HD; i < row; i++)
            if (out[(size_t)t * row + i] != in[(size_t)t * row + i]) return 0;
    return 1;
}

Test(kernels, qk_norm_rope) {
    require_gpu("GPU kernel test");
    const int hk[][2] = {{4, 4}, {4, 2}, {8, 2}, {16, 8}};
    const int HD = 128;
    for (int gi = 0; gi < 4; gi++)
        for (int ri = 0; ri < N_ROWS; ri++) {
            const int H = hk[gi][0], KV = hk[gi][1], T = ROWS[ri];
            const int row = (H + 2 * KV) * HD;
            const size_t n = (size_t)T * row;
            rng_seed(300 + gi * 10 + ri);
            uint16_t *qb = malloc(n * 2), *ob = malloc(n * 2);
            float *qf = malloc(n * 4), *got = malloc(n * 4);
            float qw[128], kw[128];
            int32_t *pos = malloc((size_t)T * 4);
            rand_bf16(qb, qf, n, 2.0f);
            for (int i = 0; i < HD; i++)
                qw[i] = 0.5f + frand(0.5f), kw[i] = 0.5f + frand(0.5f);
            /* large and small positions: the angle must stay accurate up to 40959 */
            for (int t = 0; t < T; t++)
                pos[t] = (t & 1) ? irand(40960) : t;
            pos[0] = 40959;
            uint16_t *d_q = dup_to_dev(qb, n * 2);
            int32_t *d_pos = dup_to_dev(pos, (size_t)T * 4);
            float *d_qw = dup_to_dev(qw, sizeof qw), *d_kw = dup_to_dev(kw, sizeof kw);
            ref_qk_norm_rope(qf, T, H, KV, HD, pos, qw, kw, 1e-6f, 1e6);
            KOK(qe_qk_norm_rope(d_q, T, H, KV, HD, d_pos, d_qw, d_kw, 1e-6f, 1e6, NULL));
            to_host(ob, d_q, n * 2);
            bf_to_f(ob, got, n);
            /* normed values are O(1): an absolute bf16 tolerance of ~4 ulps at 1.0 */
            const out_layout l = {.cols = row};
            cr_expect(check_close_at("qk_norm_rope", got, qf, n, 1.6e-2, BF_RTOL, &l),
                      "H %d KV %d T %d", H, KV, T);
            cr_expect(v_untouched(ob, qb, T, H, KV, HD),
                      "qk_norm_rope modified v (H %d KV %d T %d)", H, KV, T);
            /* Angle accuracy at large positions, below what a bf16 tolerance can see: an angle
             * formed in fp32 is off by ~3e-3 rad at 40959, under one bf16 ulp of the output, yet
             * it moves 3.6% of the values there to another bf16 than the double-precision
             * reference rounds to; the kernel's double angle moves about 0.01% (measured on the
             * emulator), so the bound is 1%. */
            long far = 0, moved = 0;
            for (int t = 0; t < T; t++) {
                if (pos[t] < 20000) continue;
                for (int i = 0; i < (H + KV) * HD; i++, far++)
                    moved += ob[(size_t)t * row + i] != st_f32_to_bf16(qf[(size_t)t * row + i]);
            }
            cr_expect(far == 0 || moved * 100 < far,
                      "qk_norm_rope at positions >= 20000: %ld of %ld values round to another "
                      "bf16 than the double-precision reference (H %d KV %d T %d)",
                      moved, far, H, KV, T);
            cudaFree(d_q), cudaFree(d_pos), cudaFree(d_qw), cudaFree(d_kw);
            free(qb), free(ob), free(qf), free(got), free(pos);
        }
}

/* theta 0 (ALiBi models): the RMSNorm alone, positions not read (NULL here). The kernel against
 * the reference in that mode, and the reference's mode against its RoPE path at position 0 with
 * a real theta (a zero angle rotates nothing): the norm-only mode is the same norm, not a second
 * definition. */
Test(kernels, qk_norm_only) {
    require_gpu("GPU kernel test");
    const int hk[][2] = {{4, 2}, {12, 4}};
    const int HD = 128;
    for (int gi = 0; gi < 2; gi++)
        for (int ri = 0; ri < N_ROWS; ri++) {
            const int H = hk[gi][0], KV = hk[gi][1], T = ROWS[ri];
            const int row = (H + 2 * KV) * HD;
            const size_t n = (size_t)T * row;
            rng_seed(350 + gi * 10 + ri);
            uint16_t *qb = malloc(n * 2), *ob = malloc(n * 2);
            float *qf = malloc(n * 4), *at0 = malloc(n * 4), *got = malloc(n * 4);
            int32_t *zeros = calloc((size_t)T, sizeof(int32_t));
            float qw[128], kw[128];
            rand_bf16(qb, qf, n, 2.0f);
            for (int i = 0; i < HD; i++)
                qw[i] = 0.5f + frand(0.5f), kw[i] = 0.5f + frand(0.5f);
            memcpy(at0, qf, n * 4);
            ref_qk_norm_rope(qf, T, H, KV, HD, NULL, qw, kw, 1e-6f, 0.0);
            ref_qk_norm_rope(at0, T, H, KV, HD, zeros, qw, kw, 1e-6f, 1e6);
            size_t differ = 0;
            for (size_t i = 0; i < n; i++)
                differ += qf[i] != at0[i];
            cr_expect_eq(differ, 0, "ref norm-only vs RoPE at position 0: %zu of %zu differ",
                         differ, n);
            uint16_t *d_q = dup_to_dev(qb, n * 2);
            float *d_qw = dup_to_dev(qw, sizeof qw), *d_kw = dup_to_dev(kw, sizeof kw);
            KOK(qe_qk_norm_rope(d_q, T, H, KV, HD, NULL, d_qw, d_kw, 1e-6f, 0.0, NULL));
            to_host(ob, d_q, n * 2);
            bf_to_f(ob, got, n);
            const out_layout l = {.cols = row};
            cr_expect(check_close_at("qk_norm_only", got, qf, n, 1.6e-2, BF_RTOL, &l),
                      "H %d KV %d T %d", H, KV, T);
            cr_expect(v_untouched(ob, qb, T, H, KV, HD),
                      "qk_norm_only modified v (H %d KV %d T %d)", H, KV, T);
            cudaFree(d_q), cudaFree(d_qw), cudaFree(d_kw);
            free(qb), free(ob), free(qf), free(at0), free(got), free(zeros);
        }
}

/* ------------------------------------------------------------------ swiglu */

Test(kernels, swiglu) {
    require_gpu("GPU kernel test");
    const int inters[] = {192, 3072, 13};
    for (int ii = 0; ii < 3; ii++)
        for (int ri = 0; ri < N_ROWS; ri++) {
            const int I = inters[ii], R = ROWS[ri];
            const size_t n_in = (size_t)R * 2 * I, n_out = (size_t)R * I;
            rng_seed(400 + ii * 10 + ri);
            uint16_t *gb = malloc(n_in * 2), *ob = malloc(n_out * 2);
            float *gf = malloc(n_in * 4), *want = malloc(n_out * 4), *got = malloc(n_out * 4);
            rand_bf16(gb, gf, n_in, 4.0f);
            uint16_t *d_g = dup_to_dev(gb, n_in * 2), *d_o = dalloc(n_out * 2);
            ref_swiglu(gf, R, I, want);
            KOK(qe_swiglu(d_g, R, I, d_o, NULL));
            to_host(ob, d_o, n_out * 2);
            bf_to_f(ob, got, n_out);
            const out_layout l = {.cols = I};
            cr_expect(check_close_at("swiglu", got, want, n_out, BF_ATOL, BF_RTOL, &l), "I %d R %d",
                      I, R);
            cudaFree(d_g), cudaFree(d_o);
            free(gb), free(ob), free(gf), free(want), free(got);
        }
}

/* ------------------------------------------------------------------ pooling + gather */

/* lens -> cu_seqlens; returns the token count. */
static int make_cu(const int *lens, int n, int32_t *cu) {
    cu[0] = 0;
    for (int s = 0; s < n; s++)
        cu[s + 1] = cu[s] + lens[s];
    return cu[n];
}

Test(kernels, pool_last_and_gather) {
    require_gpu("GPU kernel test");
    const int lens[] = {1, 7, 113, 129, 2049, 3};
    const int S = 6, hiddens[] = {64, 1024, 2560};
    int32_t cu[7];
    const int T = make_cu(lens, S, cu);
    for (int hi = 0; hi < 3; hi++) {
        const int H = hiddens[hi];
        const int dims_list[] = {H, 32, H / 2 + 1};
        rng_seed(500 + hi);
        float *x = malloc((size_t)T * H * 4), *w = malloc((size_t)H * 4);
        for (size_t i = 0; i < (size_t)T * H; i++)
            x[i] = frand(3.0f);
        for (int i = 0; i < H; i++)
            w[i] = 0.5f + frand(0.4f);
        float *d_x = dup_to_dev(x, (size_t)T * H * 4), *d_w = dup_to_dev(w, (size_t)H * 4);
        int32_t *d_cu = dup_to_dev(cu, sizeof cu);
        for (int di = 0; di < 6; di++) { /* each width normalised, then raw */
            const int dims = dims_list[di % 3], norm = di < 3;
            float *want = malloc((size_t)S * dims * 4), *got = malloc((size_t)S * dims * 4);
            float *d_out = dalloc((size_t)S * dims * 4);
            ref_pool_last(x, H, cu, S, w, 1e-6f, dims, norm, want);
            KOK(qe_pool_last(d_x, H, d_cu, S, d_w, 1e-6f, dims, norm, d_out, NULL));
            to_host(got, d_out, (size_t)S * dims * 4);
            const out_layout l = {.cols = dims};
            cr_expect(check_close_at("pool_last", got, want, (size_t)S * dims, 1e-6, 1e-4, &l),
                      "H %d dims %d normalize %d", H, dims, norm);
            /* compact form: gather the last rows, then pool with cu_seqlens NULL */
            float *d_rows = dalloc((size_t)S * H * 4);
            KOK(qe_gather_last_rows(d_x, (size_t)H * 4, d_cu, S, d_rows, NULL));
            poison(d_out, (size_t)S * dims * 4);
            KOK(qe_pool_last(d_rows, H, NULL, S, d_w, 1e-6f, dims, norm, d_out, NULL));
            to_host(got, d_out, (size_t)S * dims * 4);
            cr_expect(
                check_close_at("pool_last compact", got, want, (size_t)S * dims, 1e-6, 1e-4, &l),
                "H %d dims %d normalize %d", H, dims, norm);
            float *rows = malloc((size_t)S * H * 4);
            to_host(rows, d_rows, (size_t)S * H * 4);
            for (int s = 0; s < S; s++)
                cr_expect(memcmp(rows + (size_t)s * H, x + (size_t)(cu[s + 1] - 1) * H,
                                 (size_t)H * 4) == 0,
                          "gather_last_rows row %d differs", s);
            cudaFree(d_out), cudaFree(d_rows);
            free(want), free(got), free(rows);
        }
        cudaFree(d_x), cudaFree(d_w), cudaFree(d_cu);
        free(x), free(w);
    }
}

/* ------------------------------------------------------------------ K/V pool writes */

/* qe_kv_append against a host loop: odd row counts and widths (the element path), even ones with
 * strides (the word path), rows scattered over a pool in shuffled order; the pool rows nothing
 * writes keep their poison. */
Test(kernels, kv_append_scatters_rows) {
    require_gpu("GPU kernel test");
    const int widths[][3] = {{512, 768, 512}, {33, 41, 35}, {256, 256, 300}}; /* row, src, dst */
    const int counts[] = {1, 7, 129};
    for (int wi = 0; wi < 3; wi++)
        for (int ci = 0; ci < 3; ci++) {
            const int row = widths[wi][0], ss = widths[wi][1], ds = widths[wi][2], n = counts[ci];
            const int pool_rows = 2 * n + 5;
            rng_seed(700 + wi * 10 + ci);
            uint16_t *src = malloc((size_t)n * ss * 2), *want = malloc((size_t)pool_rows * ds * 2);
            uint16_t *got = malloc((size_t)pool_rows * ds * 2);
            int32_t *perm = malloc(sizeof(int32_t) * (size_t)pool_rows);
            rand_bf16(src, NULL, (size_t)n * ss, 1.0f);
            for (int i = 0; i < pool_rows; i++)
                perm[i] = i;
            for (int i = pool_rows - 1; i > 0; i--) {
                const int k = irand(i + 1), t = perm[i];
                perm[i] = perm[k], perm[k] = t;
            }
            memset(want, 0xFF, (size_t)pool_rows * ds * 2);
            for (int i = 0; i < n; i++)
                memcpy(want + (size_t)perm[i] * ds, src + (size_t)i * ss, (size_t)row * 2);
            void *d_src = dup_to_dev(src, (size_t)n * ss * 2);
            void *d_rows = dup_to_dev(perm, sizeof(int32_t) * (size_t)n);
            void *d_pool = dalloc((size_t)pool_rows * ds * 2);
            KOK(qe_kv_append(d_src, ss, row, d_rows, n, d_pool, ds, NULL));
            to_host(got, d_pool, (size_t)pool_rows * ds * 2);
            cr_expect(memcmp(got, want, (size_t)pool_rows * ds * 2) == 0,
                      "kv_append row %d strides %d/%d, %d rows: pool differs", row, ss, ds, n);
            cudaFree(d_src), cudaFree(d_rows), cudaFree(d_pool);
            free(src), free(want), free(got), free(perm);
        }
    KOK(qe_kv_append(NULL, 8, 8, NULL, 0, NULL, 8, NULL)); /* nothing to write */
    cr_expect_eq(qe_kv_append(NULL, 4, 8, NULL, 1, NULL, 8, NULL), QE_K_ERR, "stride < row");
}

/* ------------------------------------------------------------------ GEMM */

/* On the emulator the product is computed by the cuBLASLt stand-in, so what runs is gemm.cu's use
 * of the API: the 2049-row case (a long host loop, most of all under ASan) adds nothing there. */
#ifdef QE_EMU_TEST
#define GEMM_ROWS (N_ROWS - 1)
#else
#define GEMM_ROWS N_ROWS
#endif

Test(kernels, gemm_bf16) {
    require_gpu("GPU kernel test");
    const int shapes[][2] = {{64, 512}, {1024, 384}, {256, 1536}}; /* k, n */
    void *ws = dalloc(32u << 20);
    qe_gemm *g = NULL;
    KOK(qe_gemm_create(&g, ws, 32u << 20));
    for (int si = 0; si < 3; si++)
        for (int ri = 0; ri < GEMM_ROWS; ri++)
            for (int mode = 0; mode < 3; mode++) { /* bf16 out, fp32 out, fp32 accumulate */
                const int K = shapes[si][0], N = shapes[si][1], M = ROWS[ri];
                rng_seed(600 + si * 100 + ri * 10 + mode);
                uint16_t *xb = malloc((size_t)M * K * 2), *wb = malloc((size_t)N * K * 2);
                float *xf = malloc((size_t)M * K * 4), *wf = malloc((size_t)N * K * 4);
                float *want = malloc((size_t)M * N * 4), *got = malloc((size_t)M * N * 4);
                float *bound = malloc((size_t)M * N * 4);
                uint16_t *yb = malloc((size_t)M * N * 2);
                rand_bf16(xb, xf, (size_t)M * K, 1.0f);
                rand_bf16(wb, wf, (size_t)N * K, 1.0f);
                for (size_t i = 0; i < (size_t)M * N; i++)
                    want[i] = frand(2.0f);
                void *d_x = dup_to_dev(xb, (size_t)M * K * 2),
                     *d_w = dup_to_dev(wb, (size_t)N * K * 2);
                void *d_y = mode == 2 ? dup_to_dev(want, (size_t)M * N * 4)
                                      : dalloc((size_t)M * N * (mode == 0 ? 2 : 4));
                ref_matmul(xf, M, K, wf, N, want, N, mode == 2);
                /* error bound per element: fp32 accumulation over sum |x w| */
                for (int m = 0; m < M; m++)
                    for (int nn = 0; nn < N; nn++) {
                        double a = 0;
                        for (int k = 0; k < K; k++)
                            a += fabs((double)xf[(size_t)m * K + k] * wf[(size_t)nn * K + k]);
                        bound[(size_t)m * N + nn] = (float)a;
                    }
                KOK(qe_gemm_bf16(g, d_x, K, M, K, d_w, N, d_y, N, mode != 0, mode == 2, NULL));
                if (mode == 0) {
                    to_host(yb, d_y, (size_t)M * N * 2);
                    bf_to_f(yb, got, (size_t)M * N);
                } else {
                    to_host(got, d_y, (size_t)M * N * 4);
                }
                double worst = -1;
                size_t wi = 0;
                for (size_t i = 0; i < (size_t)M * N; i++) {
                    /* the textbook bound of fp32 summation, K * 2^-24 * sum|xw| (doubled), plus
                     * bf16 output rounding (2 half-ulps) */
                    double tol = K * ldexp(1.0, -23) * bound[i] + 1e-6 +
                                 (mode == 0 ? 8e-3 * fabs(want[i]) : 0);
                    double r = isnan(got[i]) ? INFINITY : fabs(got[i] - want[i]) / tol;
                    if (r > worst) worst = r, wi = i;
                }
                cr_expect(worst <= 1.0,
                          "gemm M %d K %d N %d mode %d: worst element %zu got %.7g want %.7g "
                          "(sum|xw| %.3g)",
                          M, K, N, mode, wi, got[wi], want[wi], bound[wi]);
                cudaFree(d_x), cudaFree(d_w), cudaFree(d_y);
                free(xb), free(wb), free(xf), free(wf), free(want), free(got), free(bound),
                    free(yb);
            }
    qe_gemm_destroy(g);
    cudaFree(ws);
}

/* ------------------------------------------------------------------ quantized GEMM */

/* The kernels multiply x by bf16(dequant(w)): the reference is that product in double, with
 * dequant = ref_dequantize of the file's blocks (the packed layout and its ref_qpack_dequant_row
 * agree with it bit for bit: test_quant_ref). x is bf16 already, so what remains is the fp32
 * accumulation (the MMA's and the split-K sums): |err| <= K * 2^-23 * sum_k |x w| (the textbook
 * bound of a K-term fp32 sum, doubled as in gemm_bf16), plus for an accumulated y one more fp32
 * rounding of |y|, and for bf16 y its round-to-nearest, half an ulp: 2^-8 relative (8 significant
 * bits). A scale wrong by one bit moves y far past that (qgemm_catches_a_wrong_scale: 17x to 97x
 * the tolerance on the emulator). Comparing with bf16(dequant(w)) rather than dequant(w) keeps
 * the bound free of the weights' own rounding (2^-8 per weight), so it stays tight. */
static const int QG_TYPES[] = {QT_Q8_0, QT_Q4_K, QT_Q6_K};
static const int QG_K[] = {1024, 2048, 2560, 3072, 4096, 9728, 12288}; /* every Qwen3 K */
static const int QG_M[] = {1, 3, 17, 31, 33, 64, 65, 130};
#define QG_N                                                                                       \
    40 /* three 16-row tiles, the last one partial; small: the emulator's time is N*M*K            \
        */
#define QG_WS (32u << 20)

typedef struct qg_case {
    int type, m, k, n;
    int mode;   /* 0: bf16 y, 1: fp32 y, 2: fp32 y += */
    int use_ws; /* 0: no workspace (one split) */
    int mutate; /* plant a wrong scale in the packed weights before the upload */
} qg_case;

/* A wrong scale in every super-block (every 32-block span for Q8_0) of every row: Q4_K the low
 * nibble of sub-block 5's scale, Q6_K bit 4 of scale 5, Q8_0 the low exponent bit of d. */
static void qg_plant_bug(int type, uint8_t *packed, int rows, int k) {
    const size_t rb = qp_row_bytes((uint32_t)type, k), meta = qp_off_meta((uint32_t)type, k);
    for (int r = 0; r < rows; r++) {
        uint8_t *row = packed + (size_t)r * rb;
        for (int b = 0; b < k / 256; b++) {
            if (type == QT_Q4_K) row[meta + 16 * (size_t)b + 4 + 9] ^= 0x08;
            if (type == QT_Q6_K) row[qp_off_q6_sc(k) + 16 * (size_t)b + 5] ^= 0x10;
            if (type == QT_Q8_0) row[meta + 2 * (size_t)(8 * b + 3) + 1] ^= 0x04;
        }
    }
}

/* Runs one case; returns the worst |err| / tol (> 1 fails) and prints it when it fails and
 * `report`. */
static double qg_run(const qg_case *c, void *d_ws, int report) {
    const int M = c->m, K = c->k, N = c->n;
    const size_t nw = (size_t)N * K, ny = (size_t)M * N;
    rng_seed(7000 + (uint64_t)c->type * 1000003 + (uint64_t)K * 131 + (uint64_t)M * 7 + c->mode);
    float *wsrc = malloc(nw * 4), *wf = malloc(nw * 4), *xf = malloc((size_t)M * K * 4);
    uint16_t *xb = malloc((size_t)M * K * 2), *yb = malloc(ny * 2);
    const ref_qtype_info *ti = ref_qtype_get((uint32_t)c->type);
    uint8_t *blocks = malloc(nw / ti->block * ti->block_bytes);
    const size_t rb = qp_row_bytes((uint32_t)c->type, K);
    uint8_t *packed = malloc((size_t)N * rb);
    double *want = malloc(ny * sizeof(double)), *bound = malloc(ny * sizeof(double));
    float *got = malloc(ny * 4), *y0 = malloc(ny * 4);
    for (size_t i = 0; i < nw; i++)
        wsrc[i] = frand(1.0f);
    cr_assert_eq(ref_quantize((uint32_t)c->type, wsrc, blocks, (int64_t)nw), 0);
    cr_assert_eq(ref_dequantize((uint32_t)c->type, blocks, wf, (int64_t)nw), 0);
    for (size_t i = 0; i < nw; i++)
        wf[i] = st_bf16_to_f32(st_f32_to_bf16(wf[i])); /* what the MMA multiplies */
    cr_assert_eq(ref_qpack_rows((uint32_t)c->type, blocks, N, K, packed), 0);
    if (c->mutate) qg_plant_bug(c->type, packed, N, K);
    rand_bf16(xb, xf, (size_t)M * K, 1.0f);
    for (size_t i = 0; i < ny; i++)
        y0[i] = frand(2.0f);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double a = 0, b = 0;
            for (int k = 0; k < K; k++) {
                const double p = (double)xf[(size_t)m * K + k] * wf[(size_t)n * K + k];
                a += p, b += fabs(p);
            }
            want[(size_t)m * N + n] = a + (c->mode == 2 ? y0[(size_t)m * N + n] : 0);
            bound[(size_t)m * N + n] = b;
        }
    void *d_x = dup_to_dev(xb, (size_t)M * K * 2), *d_w = dup_to_dev(packed, (size_t)N * rb);
    void *d_y = c->mode == 2 ? dup_to_dev(y0, ny * 4) : dalloc(ny * (c->mode == 0 ? 2 : 4));
    KOK(qe_qgemm(d_x, K, M, K, d_w, c->type, N, d_y, N, c->mode != 0, c->mode == 2,
                 c->use_ws ? d_ws : NULL, QG_WS, NULL));
    if (c->mode == 0) {
        to_host(yb, d_y, ny * 2);
        bf_to_f(yb, got, ny);
    } else {
        to_host(got, d_y, ny * 4);
    }
    double worst = -1;
    size_t wi = 0, nans = 0;
    for (size_t i = 0; i < ny; i++) {
        const double acc = K * ldexp(1.0, -23) * bound[i] +
                           (c->mode == 2 ? ldexp(1.0, -23) * fabs(want[i]) : 0) + 1e-30;
        const double tol = c->mode == 0 ? acc + ldexp(1.0, -8) * (fabs(want[i]) + acc) : acc;
        const double r = isnan(got[i]) ? INFINITY : fabs(got[i] - want[i]) / tol;
        nans += isnan(got[i]) != 0;
        if (r > worst) worst = r, wi = i;
    }
    if (worst > 1.0 && report)
        cr_log_error("qgemm %s M %d K %d N %d mode %d ws %d: worst at row %zu col %zu: got %.7g "
                     "want %.7g (sum|xw| %.3g, %.3g x tol); %zu NaN (poison: never written)",
                     ti->name, M, K, N, c->mode, c->use_ws, wi / N, wi % N, got[wi], want[wi],
                     bound[wi], worst, nans);
    cudaFree(d_x), cudaFree(d_w), cudaFree(d_y);
    free(wsrc), free(wf), free(xf), free(xb), free(yb), free(blocks), free(packed), free(want),
        free(bound), free(got), free(y0);
    return worst;
}

/* Every type at every Qwen3 K, on the skinny (M = 1) and the prefill (M = 33) path. */
Test(kernels, qgemm_every_k, .timeout = 600) {
    require_gpu("GPU kernel test");
    void *ws = dalloc(QG_WS);
    for (int ti = 0; ti < 3; ti++)
        for (int ki = 0; ki < (int)(sizeof QG_K / sizeof QG_K[0]); ki++)
            for (int mi = 0; mi < 2; mi++) {
                const qg_case c = {QG_TYPES[ti], mi ? 33 : 1, QG_K[ki], QG_N, (ki + mi) % 3, 1, 0};
                cr_expect(qg_run(&c, ws, 1) <= 1.0, "qgemm type %d K %d M %d", c.type, c.k, c.m);
            }
    cudaFree(ws);
}

/* Every type at odd and tile-edge M (both paths, the 32/33 and 64/65 boundaries), three output
 * modes, with and without the split-K workspace. */
Test(kernels, qgemm_odd_m, .timeout = 600) {
    require_gpu("GPU kernel test");
    void *ws = dalloc(QG_WS);
    for (int ti = 0; ti < 3; ti++)
        for (int mi = 0; mi < (int)(sizeof QG_M / sizeof QG_M[0]); mi++) {
            const int M = QG_M[mi];
            const qg_case c = {QG_TYPES[ti], M, 2560, QG_N, mi % 3, mi != 2, 0};
            cr_expect(qg_run(&c, ws, 1) <= 1.0, "qgemm type %d M %d", c.type, M);
        }
    /* a wide N: several row blocks, split-K, and the reduction's accumulate into y */
    cr_expect_gt(qe_qgemm_splits(QT_Q4_K, 5, 2560, 520, QG_WS), 1, "the split path is tested");
    cr_expect_gt(qe_qgemm_splits(QT_Q6_K, 3, 2560, QG_N, QG_WS), 1, "the split path is tested");
    const qg_case wide = {QT_Q4_K, 5, 2560, 520, 2, 1, 0};
    cr_expect(qg_run(&wide, ws, 1) <= 1.0, "qgemm wide N");
    cudaFree(ws);
}

/* The tolerance is not so loose that a wrong scale passes: each planted bug must fail, on both
 * paths (the launch itself must still run cleanly). */
Test(kernels, qgemm_catches_a_wrong_scale) {
    require_gpu("GPU kernel test");
    void *ws = dalloc(QG_WS);
    for (int ti = 0; ti < 3; ti++)
        for (int path = 0; path < 2; path++) {
            const qg_case c = {QG_TYPES[ti], path ? 65 : 3, 2560, QG_N, 1, 1, 1};
            const double worst = qg_run(&c, ws, 0);
            cr_expect(worst > 1.0, "type %d M %d: the planted scale bug passed (%.3g x tol)",
                      c.type, c.m, worst);
        }
    cudaFree(ws);
}

/* The dequantization to bf16 rows: exactly bf16(ref_dequantize), every column in its place. */
Test(kernels, qdequant_bf16) {
    require_gpu("GPU kernel test");
    const int N = 19, ks[] = {256, 2560};
    for (int ti = 0; ti < 3; ti++)
        for (int ki = 0; ki < 2; ki++) {
            const int type = QG_TYPES[ti], K = ks[ki];
            const size_t n = (size_t)N * K, rb = qp_row_bytes((uint32_t)type, K);
            const ref_qtype_info *inf = ref_qtype_get((uint32_t)type);
            rng_seed(950 + ti * 10 + ki);
            float *src = malloc(n * 4), *want = malloc(n * 4), *got = malloc(n * 4);
            uint16_t *gb = malloc(n * 2);
            uint8_t *blocks = malloc(n / inf->block * inf->block_bytes), *packed = malloc(N * rb);
            for (size_t i = 0; i < n; i++)
                src[i] = frand(1.0f);
            cr_assert_eq(ref_quantize((uint32_t)type, src, blocks, (int64_t)n), 0);
            cr_assert_eq(ref_dequantize((uint32_t)type, blocks, want, (int64_t)n), 0);
            for (size_t i = 0; i < n; i++)
                want[i] = st_bf16_to_f32(st_f32_to_bf16(want[i]));
            cr_assert_eq(ref_qpack_rows((uint32_t)type, blocks, N, K, packed), 0);
            void *d_w = dup_to_dev(packed, N * rb), *d_out = dalloc(n * 2);
            KOK(qe_qdequant_bf16(d_w, type, N, K, d_out, NULL));
            to_host(gb, d_out, n * 2);
            bf_to_f(gb, got, n);
            const out_layout l = {.cols = K};
            cr_expect(check_close_at("qdequant_bf16", got, want, n, 0, 0, &l), "%s K %d", inf->name,
                      K);
            cudaFree(d_w), cudaFree(d_out);
            free(src), free(want), free(got), free(gb), free(blocks), free(packed);
        }
}

/* The quantized embedding gather: exactly ref_dequantize's rows. */
Test(kernels, embed_gather_quantized) {
    require_gpu("GPU kernel test");
    const int vocab = 301, hiddens[] = {256, 1024, 2560}, T = 7;
    for (int ti = 0; ti < 3; ti++)
        for (int hi = 0; hi < 3; hi++) {
            const int type = QG_TYPES[ti], H = hiddens[hi];
            const size_t n = (size_t)vocab * H, rb = qp_row_bytes((uint32_t)type, H);
            const ref_qtype_info *inf = ref_qtype_get((uint32_t)type);
            rng_seed(900 + ti * 10 + hi);
            float *src = malloc(n * 4), *tab = malloc(n * 4);
            float *want = malloc((size_t)T * H * 4), *got = malloc((size_t)T * H * 4);
            uint8_t *blocks = malloc(n / inf->block * inf->block_bytes);
            uint8_t *packed = malloc((size_t)vocab * rb);
            int32_t tok[7];
            for (size_t i = 0; i < n; i++)
                src[i] = frand(1.0f);
            cr_assert_eq(ref_quantize((uint32_t)type, src, blocks, (int64_t)n), 0);
            cr_assert_eq(ref_dequantize((uint32_t)type, blocks, tab, (int64_t)n), 0);
            cr_assert_eq(ref_qpack_rows((uint32_t)type, blocks, vocab, H, packed), 0);
            for (int t = 0; t < T; t++)
                tok[t] = irand(vocab);
            tok[0] = vocab - 1, tok[1] = 0;
            ref_embed_gather(tab, H, tok, T, want);
            void *d_tab = dup_to_dev(packed, (size_t)vocab * rb);
            int32_t *d_tok = dup_to_dev(tok, sizeof tok);
            float *d_out = dalloc((size_t)T * H * 4);
            KOK(qe_embed_gather_q(d_tab, type, vocab, H, d_tok, T, d_out, NULL));
            to_host(got, d_out, (size_t)T * H * 4);
            const out_layout l = {.cols = H};
            cr_expect(check_close_at("embed_gather_q", got, want, (size_t)T * H, 0, 0, &l),
                      "%s H %d", inf->name, H);
            cudaFree(d_tab), cudaFree(d_tok), cudaFree(d_out);
            free(src), free(tab), free(want), free(got), free(blocks), free(packed);
        }
}

/* ------------------------------------------------------------------ attention */

typedef struct attn_case {
    const int *lens;
    int n_seqs;
    int heads, kv_heads;
} attn_case;

/* Builds a random bf16 qkv buffer for the packed sequences; q scaled up so softmax is peaked. */
static void attn_inputs(int T, int H, int KV, uint16_t *qkv_b, float *qkv_f) {
    const int HD = 128, row = (H + 2 * KV) * HD;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < row; i++) {
            float a = i < H * HD ? 3.0f : 1.0f;
            qkv_b[(size_t)t * row + i] = st_f32_to_bf16(frand(a));
            qkv_f[(size_t)t * row + i] = st_bf16_to_f32(qkv_b[(size_t)t * row + i]);
        }
}

/* Runs contiguous attention on device qkv; returns fp32 copy of the bf16 output. */
static void run_attn(const uint16_t *d_qkv, int T, int H, int KV, const int32_t *d_cu, int S,
                     int max_len, const float *d_slopes, uint16_t *d_out, float *got) {
    const int HD = 128, row = (H + 2 * KV) * HD;
    qe_attn_params p;
    memset(&p, 0, sizeof p);
    p.q = d_qkv, p.k = d_qkv + H * HD, p.v = d_qkv + (H + KV) * HD, p.out = d_out;
    p.q_stride = row, p.kv_stride = row, p.out_stride = H * HD;
    p.cu_seqlens_q = d_cu, p.cu_seqlens_k = d_cu, p.n_seqs = S, p.max_seqlen_q = max_len;
    p.heads = H, p.kv_heads = KV, p.head_dim = HD, p.scale = 1.0f / sqrtf(128.0f);
    p.alibi_slopes = d_slopes;
    poison(d_out, (size_t)T * H * HD * 2);
    KOK(qe_attention(&p, NULL));
    uint16_t *ob = malloc((size_t)T * H * HD * 2);
    to_host(ob, d_out, (size_t)T * H * HD * 2);
    bf_to_f(ob, got, (size_t)T * H * HD);
    free(ob);
}

static const char *attn_variant = "fa2"; /* the variant running, for the messages */

/* Attention output tolerance: bf16 P and bf16 output rounding on values <= max |v|. */
#define ATT_ATOL 1e-2
#define ATT_RTOL 1e-2

static void attn_check_case(const attn_case *c, int alibi, uint64_t seed) {
    const int HD = 128, H = c->heads, KV = c->kv_heads, S = c->n_seqs;
    const int row = (H + 2 * KV) * HD;
    int32_t *cu = malloc((size_t)(S + 1) * 4);
    const int T = make_cu(c->lens, S, cu);
    int max_len = 0;
    for (int s = 0; s < S; s++)
        if (c->lens[s] > max_len) max_len = c->lens[s];
    rng_seed(seed);
    uint16_t *qb = malloc((size_t)T * row * 2);
    float *qf = malloc((size_t)T * row * 4);
    float *want = malloc((size_t)T * H * HD * 4), *got = malloc((size_t)T * H * HD * 4);
    float slopes[64];
    attn_inputs(T, H, KV, qb, qf);
    for (int h = 0; h < H; h++)
        slopes[h] = exp2f(-8.0f * (h + 1) / H); /* the ALiBi paper's set */
    ref_attention(qf, cu, S, H, KV, HD, alibi ? slopes : NULL, 0, H, want);
    uint16_t *d_qkv = dup_to_dev(qb, (size_t)T * row * 2);
    int32_t *d_cu = dup_to_dev(cu, (size_t)(S + 1) * 4);
    float *d_slopes = dup_to_dev(slopes, sizeof slopes);
    uint16_t *d_out = dalloc((size_t)T * H * HD * 2);
    run_attn(d_qkv, T, H, KV, d_cu, S, max_len, alibi ? d_slopes : NULL, d_out, got);
    double num = 0, den = 0;
    for (size_t i = 0; i < (size_t)T * H * HD; i++) {
        num += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
        den += (double)want[i] * want[i];
    }
    const out_layout l = {.cu = cu, .n_seqs = S, .heads = H, .kv_heads = KV};
    cr_expect(check_close_at("attention", got, want, (size_t)T * H * HD, ATT_ATOL, ATT_RTOL, &l),
              "variant %s: S %d T %d H %d KV %d alibi %d", attn_variant, S, T, H, KV, alibi);
    cr_expect(sqrt(num / (den + 1e-30)) < 5e-3,
              "variant %s: attention relative L2 error %.3g (S %d T %d H %d KV %d)", attn_variant,
              sqrt(num / (den + 1e-30)), S, T, H, KV);
    cudaFree(d_qkv), cudaFree(d_cu), cudaFree(d_slopes), cudaFree(d_out);
    free(cu), free(qb), free(qf), free(want), free(got);
}

static const int L1[] = {1}, L7[] = {7}, L113_129[] = {113, 129}, L2049[] = {2049};
static const int LMIX[] = {1, 7, 113, 129, 64, 65, 200};

/* On the kernel emulator, the attention tests also require conflict-free ldmatrix phases (the
 * XOR swizzle's purpose, invisible in the results) and no emulator report. */
static void expect_attention_clean(void) {
#ifdef QE_EMU_TEST
    const qe_emu_kernel_stats st = qe_emu_stats("flash_attn");
    cr_expect(st.launches > 0, "the emulator ran no attention kernel");
    cr_expect_eq(st.ldmatrix_wavefronts, st.ldmatrix_phases,
                 "attention ldmatrix bank conflicts: %ld wavefronts for %ld 8x8 phases",
                 st.ldmatrix_wavefronts, st.ldmatrix_phases);
    cr_expect_eq(qe_emu_error_count(), 0, "emulator reports: %s", qe_emu_last_error());
#endif
}

/* Runs one attention check on every variant of qe_attention (kernels.h), then goes back to the
 * environment's choice. */
static void on_every_attention_variant(void (*check)(void *), void *ctx) {
    for (int v = 0; v < QE_ATTN_VARIANTS; v++) {
        cr_assert_eq(qe_attention_select(v), 0);
        attn_variant = qe_attention_variant_name(v);
        cr_log_info("attention variant %d (%s)", v, attn_variant);
        check(ctx);
    }
    qe_attention_select(-1);
}

/* Every sequence set of causal attention at one head ratio. The 2049-token sequence runs with
 * half the heads on the emulator (its time is per head; the lengths are what the test is for). */
typedef struct {
    int heads, kv_heads;
    uint64_t seed;
} causal_args;

static void attention_causal_check(void *ctx) {
    const causal_args *a = ctx;
    const struct {
        const int *l;
        int n;
    } seqs[] = {{L1, 1}, {L7, 1}, {L113_129, 2}, {L2049, 1}, {LMIX, 7}};
    for (int si = 0; si < 5; si++) {
        attn_case c = {seqs[si].l, seqs[si].n, a->heads, a->kv_heads};
#ifdef QE_EMU_TEST
        if (seqs[si].l == L2049) c.heads /= 2, c.kv_heads /= 2; /* the ratio stays */
#endif
        attn_check_case(&c, 0, a->seed + si);
    }
}

static void attention_causal_at(int heads, int kv_heads, uint64_t seed) {
    causal_args a = {heads, kv_heads, seed};
    on_every_attention_variant(attention_causal_check, &a);
    expect_attention_clean();
}

Test(kernels, attention_causal_mha, .timeout = 300) {
    require_gpu("GPU kernel test");
    attention_causal_at(4, 4, 700);
}
Test(kernels, attention_causal_gqa2, .timeout = 300) {
    require_gpu("GPU kernel test");
    attention_causal_at(4, 2, 710);
}
Test(kernels, attention_causal_gqa4, .timeout = 300) {
    require_gpu("GPU kernel test");
    attention_causal_at(8, 2, 720);
}

static void attention_alibi_check(void *ctx) {
    (void)ctx;
    attn_case c = {LMIX, 7, 4, 2};
    attn_check_case(&c, 1, 801);
    attn_case c2 = {L113_129, 2, 8, 2};
    attn_check_case(&c2, 1, 802);
}

Test(kernels, attention_alibi) {
    require_gpu("GPU kernel test");
    on_every_attention_variant(attention_alibi_check, NULL);
    expect_attention_clean();
}

/* Paged K/V (random page order, several page sizes) must give exactly the contiguous result;
 * a chunked query block (the last Lq queries of each sequence against all its keys, as the
 * last-layer shortcut and chunked prefill use) must match the reference rows. */
static void attention_paged_check(void *ctx) {
    (void)ctx;
    const int HD = 128, H = 8, KV = 2, S = 5;
    const int lens[] = {129, 1, 300, 64, 77};
    const int row = (H + 2 * KV) * HD, kv_dim = KV * HD;
    int32_t cu[6];
    const int T = make_cu(lens, S, cu);
    const int max_len = 300;
    rng_seed(900);
    uint16_t *qb = malloc((size_t)T * row * 2);
    float *qf = malloc((size_t)T * row * 4);
    float *want = malloc((size_t)T * H * HD * 4), *full = malloc((size_t)T * H * HD * 4);
    float *got = malloc((size_t)T * H * HD * 4);
    attn_inputs(T, H, KV, qb, qf);
    ref_attention(qf, cu, S, H, KV, HD, NULL, 0, H, want);
    uint16_t *d_qkv = dup_to_dev(qb, (size_t)T * row * 2);
    int32_t *d_cu = dup_to_dev(cu, sizeof cu);
    uint16_t *d_out = dalloc((size_t)T * H * HD * 2);
    run_attn(d_qkv, T, H, KV, d_cu, S, max_len, NULL, d_out, full);
    const out_layout lfull = {.cu = cu, .n_seqs = S, .heads = H, .kv_heads = KV};
    cr_expect(check_close_at("attention contiguous", full, want, (size_t)T * H * HD, ATT_ATOL,
                             ATT_RTOL, &lfull));

    const int page_sizes[] = {16, 64, 7};
    for (int pi = 0; pi < 3; pi++) {
        const int ps = page_sizes[pi];
        int max_pages = (max_len + ps - 1) / ps, total_pages = 0;
        for (int s = 0; s < S; s++)
            total_pages += (lens[s] + ps - 1) / ps;
        total_pages += 3; /* unused pages stay poisoned */
        int32_t *bt = malloc((size_t)S * max_pages * 4);
        int *perm = malloc((size_t)total_pages * sizeof(int));
        for (int i = 0; i < total_pages; i++)
            perm[i] = i;
        for (int i = total_pages - 1; i > 0; i--) {
            int j = irand(i + 1), t = perm[i];
            perm[i] = perm[j], perm[j] = t;
        }
        uint16_t *kc = malloc((size_t)total_pages * ps * kv_dim * 2);
        uint16_t *vc = malloc((size_t)total_pages * ps * kv_dim * 2);
        memset(kc, 0xFF, (size_t)total_pages * ps * kv_dim * 2);
        memset(vc, 0xFF, (size_t)total_pages * ps * kv_dim * 2);
        int next = 0;
        for (int s = 0; s < S; s++) {
            for (int pg = 0; pg < max_pages; pg++)
                bt[s * max_pages + pg] = -1;
            for (int j = 0; j < lens[s]; j++) {
                if (j % ps == 0) bt[s * max_pages + j / ps] = perm[next++];
                const size_t dst = ((size_t)bt[s * max_pages + j / ps] * ps + j % ps) * kv_dim;
                const size_t src = (size_t)(cu[s] + j) * row;
                memcpy(kc + dst, qb + src + H * HD, (size_t)kv_dim * 2);
                memcpy(vc + dst, qb + src + (H + KV) * HD, (size_t)kv_dim * 2);
            }
        }
        uint16_t *d_kc = dup_to_dev(kc, (size_t)total_pages * ps * kv_dim * 2);
        uint16_t *d_vc = dup_to_dev(vc, (size_t)total_pages * ps * kv_dim * 2);
        int32_t *d_bt = dup_to_dev(bt, (size_t)S * max_pages * 4);

        /* full sequences, paged */
        qe_attn_params p;
        memset(&p, 0, sizeof p);
        p.q = d_qkv, p.k = d_kc, p.v = d_vc, p.out = d_out;
        p.q_stride = row, p.kv_stride = kv_dim, p.out_stride = H * HD;
        p.cu_seqlens_q = d_cu, p.cu_seqlens_k = d_cu, p.n_seqs = S, p.max_seqlen_q = max_len;
        p.heads = H, p.kv_heads = KV, p.head_dim = HD, p.scale = 1.0f / sqrtf(128.0f);
        p.block_table = d_bt, p.block_table_stride = max_pages, p.page_size = ps;
        poison(d_out, (size_t)T * H * HD * 2);
        KOK(qe_attention(&p, NULL));
        uint16_t *ob = malloc((size_t)T * H * HD * 2);
        to_host(ob, d_out, (size_t)T * H * HD * 2);
        bf_to_f(ob, got, (size_t)T * H * HD);
        cr_expect(
            memcmp(got, full, (size_t)T * H * HD * 4) == 0 ||
                check_close_at("paged vs contiguous", got, full, (size_t)T * H * HD, 0, 0, &lfull),
            "variant %s: paged attention (page size %d) differs from contiguous", attn_variant, ps);

        /* chunked: the last Lq queries of each sequence (Lq 1 is the last-layer shortcut) */
        /* 100: a second query block, bottom-right aligned against more keys */
        const int lq_list[] = {1, 5, 64, 100};
        for (int li = 0; li < 4; li++) {
            int32_t cuq[6];
            cuq[0] = 0;
            for (int s = 0; s < S; s++)
                cuq[s + 1] = cuq[s] + (lens[s] < lq_list[li] ? lens[s] : lq_list[li]);
            const int TQ = cuq[S];
            uint16_t *qrows = malloc((size_t)TQ * row * 2);
            float *cw = malloc((size_t)TQ * H * HD * 4), *cg = malloc((size_t)TQ * H * HD * 4);
            int max_q = 0, q_off[5];
            for (int s = 0; s < S; s++) {
                const int lq = cuq[s + 1] - cuq[s];
                q_off[s] = lens[s] - lq;
                if (lq > max_q) max_q = lq;
                for (int i = 0; i < lq; i++) {
                    const int src_row = cu[s] + lens[s] - lq + i;
                    memcpy(qrows + (size_t)(cuq[s] + i) * row, qb + (size_t)src_row * row,
                           (size_t)row * 2);
                    memcpy(cw + (size_t)(cuq[s] + i) * H * HD, want + (size_t)src_row * H * HD,
                           (size_t)H * HD * 4);
                }
            }
            uint16_t *d_qrows = dup_to_dev(qrows, (size_t)TQ * row * 2);
            int32_t *d_cuq = dup_to_dev(cuq, sizeof cuq);
            uint16_t *d_cout = dalloc((size_t)TQ * H * HD * 2);
            for (int paged = 0; paged < 2; paged++) {
                qe_attn_params pc = p;
                pc.q = d_qrows, pc.out = d_cout, pc.cu_seqlens_q = d_cuq, pc.max_seqlen_q = max_q;
                if (!paged) {
                    pc.k = d_qkv + H * HD, pc.v = d_qkv + (H + KV) * HD, pc.kv_stride = row;
                    pc.block_table = NULL;
                }
                poison(d_cout, (size_t)TQ * H * HD * 2);
                KOK(qe_attention(&pc, NULL));
                uint16_t *cb = malloc((size_t)TQ * H * HD * 2);
                to_host(cb, d_cout, (size_t)TQ * H * HD * 2);
                bf_to_f(cb, cg, (size_t)TQ * H * HD);
                const out_layout lc = {
                    .cu = cuq, .n_seqs = S, .heads = H, .kv_heads = KV, .q_offset = q_off};
                cr_expect(check_close_at("chunked attention", cg, cw, (size_t)TQ * H * HD, ATT_ATOL,
                                         ATT_RTOL, &lc),
                          "variant %s: Lq %d paged %d page size %d", attn_variant, lq_list[li],
                          paged, ps);
                free(cb);
            }
            cudaFree(d_qrows), cudaFree(d_cuq), cudaFree(d_cout);
            free(qrows), free(cw), free(cg);
        }
        cudaFree(d_kc), cudaFree(d_vc), cudaFree(d_bt);
        free(bt), free(perm), free(kc), free(vc), free(ob);
    }
    cudaFree(d_qkv), cudaFree(d_cu), cudaFree(d_out);
    free(qb), free(qf), free(want), free(full), free(got);
}

Test(kernels, attention_paged_and_chunked) {
    require_gpu("GPU kernel test");
    on_every_attention_variant(attention_paged_check, NULL);
    expect_attention_clean();
}

/* Argument errors come back as a status and a message, never a crash (no device needed: the
 * checks run before any CUDA call). */
Test(kernels, launcher_argument_errors) {
    qe_attn_params p;
    memset(&p, 0, sizeof p);
    p.head_dim = 64, p.heads = 4, p.kv_heads = 2;
    cr_expect_eq(qe_attention(&p, NULL), QE_K_ERR);
    cr_expect(strstr(qe_k_last_error(), "head_dim") != NULL, "message: %s", qe_k_last_error());
    cr_expect_eq(qe_qk_norm_rope(NULL, 1, 4, 2, 7, NULL, NULL, NULL, 1e-6f, 1e6, NULL), QE_K_ERR);
    cr_expect_eq(qe_qk_norm_rope(NULL, 1, 4, 2, 128, NULL, NULL, NULL, 1e-6f, -1.0, NULL),
                 QE_K_ERR);
    cr_expect(strstr(qe_k_last_error(), "theta") != NULL, "message: %s", qe_k_last_error());
    /* RoPE reads positions; only the norm-only mode (theta 0) may go without */
    cr_expect_eq(qe_qk_norm_rope(NULL, 1, 4, 2, 128, NULL, NULL, NULL, 1e-6f, 1e6, NULL), QE_K_ERR);
    cr_expect(strstr(qe_k_last_error(), "positions") != NULL, "message: %s", qe_k_last_error());
    cr_expect_eq(qe_pool_last(NULL, 64, NULL, 1, NULL, 1e-6f, 65, 1, NULL, NULL), QE_K_ERR);
    /* quantized GEMM: k not whole super-blocks, a type without a packed layout */
    static uint8_t buf[64] __attribute__((aligned(16)));
    cr_expect_eq(
        qe_qgemm((const qe_bf16 *)buf, 128, 1, 128, buf, QT_Q4_K, 1, buf, 1, 1, 0, NULL, 0, NULL),
        QE_K_ERR);
    cr_expect(strstr(qe_k_last_error(), "k % QP_K_ALIGN") != NULL, "message: %s",
              qe_k_last_error());
    cr_expect_eq(
        qe_qgemm((const qe_bf16 *)buf, 256, 1, 256, buf, QT_Q4_0, 1, buf, 1, 1, 0, NULL, 0, NULL),
        QE_K_ERR);
    cr_expect_eq(qe_embed_gather_q(buf, QT_Q8_0, 4, 100, NULL, 1, NULL, NULL), QE_K_ERR);
}

/* ------------------------------------------------------------------ skinny GEMM (issue 15, 4) */

/* The m <= 32 path of qe_gemm_bf16 (gemm_skinny.cu) and, beside it, the cuBLASLt one on the same
 * calls, at the k of Qwen3's layers (hidden 1024 / 2560 / 4096, intermediate 9728 / 12288) with
 * small odd and even n, x rows strided past k, y rows padded past n (the padding must stay
 * poison), every output mode. The tolerance is gemm_bf16's: fp32 summation of exact bf16
 * products, K * 2^-23 * sum|x w| (the split-K partials add at most K / 128 further roundings, well
 * inside it), plus for bf16 y its one rounding: half an ulp is <= 2^-8 |y|, 8e-3 |y| covers it
 * with the fp32 error on top. */
typedef struct skinny_case {
    int K, N, ldx, ldy;
    uint16_t *xb; /* [32, ldx] */
    float *xf;    /* [32, K], the same values packed */
    float *wf, *y0, *bound;
    void *d_x, *d_w, *d_y;
} skinny_case;

static const int SKINNY_M[] = {1, 3, 17, 24, 31, 32};
static const int SKINNY_SHAPES[][2] = {
    {1024, 200}, {2560, 41}, {4096, 199}, {9728, 40}, {12288, 41}};

static void skinny_case_init(skinny_case *c, int K, int N, uint64_t seed) {
    memset(c, 0, sizeof *c);
    c->K = K, c->N = N, c->ldx = K + 8, c->ldy = (N + 7) / 8 * 8 + 8;
    rng_seed(seed);
    c->xb = malloc((size_t)32 * c->ldx * 2);
    c->xf = malloc((size_t)32 * K * 4);
    rand_bf16(c->xb, NULL, (size_t)32 * c->ldx, 1.0f); /* the stride's tail too: never read */
    for (int m = 0; m < 32; m++)
        for (int k = 0; k < K; k++)
            c->xf[(size_t)m * K + k] = st_bf16_to_f32(c->xb[(size_t)m * c->ldx + k]);
    uint16_t *wb = malloc((size_t)N * K * 2);
    c->wf = malloc((size_t)N * K * 4);
    rand_bf16(wb, c->wf, (size_t)N * K, 1.0f);
    c->y0 = malloc((size_t)32 * c->ldy * 4);
    memset(c->y0, 0xFF, (size_t)32 * c->ldy * 4);
    for (int m = 0; m < 32; m++)
        for (int n = 0; n < N; n++)
            c->y0[(size_t)m * c->ldy + n] = frand(2.0f);
    c->bound = malloc((size_t)32 * N * 4);
    for (int m = 0; m < 32; m++)
        for (int n = 0; n < N; n++) {
            double a = 0;
            for (int k = 0; k < K; k++)
                a += fabs((double)c->xf[(size_t)m * K + k] * c->wf[(size_t)n * K + k]);
            c->bound[(size_t)m * N + n] = (float)a;
        }
    c->d_x = dup_to_dev(c->xb, (size_t)32 * c->ldx * 2);
    c->d_w = dup_to_dev(wb, (size_t)N * K * 2);
    c->d_y = dalloc((size_t)32 * c->ldy * 4);
    free(wb);
}

static void skinny_case_free(skinny_case *c) {
    cudaFree(c->d_x), cudaFree(c->d_w), cudaFree(c->d_y);
    free(c->xb), free(c->xf), free(c->wf), free(c->y0), free(c->bound);
}

/* One qe_gemm_bf16 call of m rows in mode 0 (bf16 y), 1 (fp32 y) or 2 (fp32 y += x w^T, y from
 * y0); out gets all 32 rows of y [32, ldy] widened to fp32, padding columns and the rows past m
 * included (bits kept: a bf16 0xFFFF widens to 0xFFFF0000). */
static void skinny_run(qe_gemm *g, const skinny_case *c, int m, int mode, float *out) {
    const size_t cells = (size_t)32 * c->ldy;
    if (mode == 2)
        cr_assert_eq(cudaMemcpy(c->d_y, c->y0, cells * 4, cudaMemcpyHostToDevice), cudaSuccess);
    else
        poison(c->d_y, cells * 4);
    KOK(qe_gemm_bf16(g, c->d_x, c->ldx, m, c->K, c->d_w, c->N, c->d_y, c->ldy, mode != 0, mode == 2,
                     NULL));
    if (mode == 0) {
        uint16_t *yb = malloc(cells * 2);
        to_host(yb, c->d_y, cells * 2);
        bf_to_f(yb, out, cells);
        free(yb);
    } else {
        to_host(out, c->d_y, cells * 4);
    }
}

/* Checks out (from skinny_run) against the double-free reference within the bound above, and
 * that no padding column was written. Returns 1 when it holds. */
static int skinny_check(const skinny_case *c, int m, int mode, const float *out, const char *path) {
    const int K = c->K, N = c->N;
    float *want = malloc((size_t)m * N * 4);
    for (int i = 0; i < m; i++)
        for (int n = 0; n < N; n++)
            want[(size_t)i * N + n] = c->y0[(size_t)i * c->ldy + n];
    ref_matmul(c->xf, m, K, c->wf, N, want, N, mode == 2);
    double worst = -1;
    size_t wi = 0, pad_written = 0;
    for (int i = 0; i < m; i++) {
        for (int n = 0; n < N; n++) {
            const size_t e = (size_t)i * N + n;
            const float got = out[(size_t)i * c->ldy + n];
            const double tol =
                K * ldexp(1.0, -23) * c->bound[e] + 1e-6 + (mode == 0 ? 8e-3 * fabs(want[e]) : 0);
            const double r = isnan(got) ? INFINITY : fabs(got - want[e]) / tol;
            if (r > worst) worst = r, wi = e;
        }
        for (int n = N; n < c->ldy; n++) {
            uint32_t bits;
            memcpy(&bits, &out[(size_t)i * c->ldy + n], 4);
            pad_written += bits != 0xFFFF0000u && bits != 0xFFFFFFFFu;
        }
    }
    for (int i = m; i < 32; i++) /* rows past m: as they were */
        for (int n = 0; n < c->ldy; n++) {
            const size_t e = (size_t)i * c->ldy + n;
            uint32_t bits, was = 0xFFFFFFFFu;
            memcpy(&bits, &out[e], 4);
            if (mode == 2) memcpy(&was, &c->y0[e], 4);
            pad_written += mode == 0 ? bits != 0xFFFF0000u : bits != was;
        }
    const int ok = worst <= 1.0 && pad_written == 0;
    if (!ok)
        cr_log_error("gemm %s M %d K %d N %d mode %d: worst row %zu col %zu got %.7g want %.7g "
                     "(%.3g of the bound; sum|xw| %.3g); %zu cells written past n or m",
                     path, m, K, N, mode, wi / N, wi % N, out[wi / N * c->ldy + wi % N], want[wi],
                     worst, c->bound[wi], pad_written);
    free(want);
    return ok;
}

Test(kernels, gemm_skinny_vs_reference, .timeout = 600) {
    require_gpu("GPU kernel test");
    void *ws = dalloc(32u << 20);
    qe_gemm *g = NULL;
    KOK(qe_gemm_create(&g, ws, 32u << 20));
    const int n_m = (int)(sizeof SKINNY_M / sizeof SKINNY_M[0]);
    for (int si = 0; si < (int)(sizeof SKINNY_SHAPES / sizeof SKINNY_SHAPES[0]); si++) {
        skinny_case c;
        skinny_case_init(&c, SKINNY_SHAPES[si][0], SKINNY_SHAPES[si][1], 1500 + si);
        /* the split-K reduction runs at every shape here (n is small) */
        cr_expect(qe_gemm_skinny_splits(c.N, c.K, 32u << 20) > 1, "K %d N %d: one slice", c.K, c.N);
        float *out = malloc((size_t)32 * c.ldy * 4), *again = malloc((size_t)32 * c.ldy * 4);
        float *full = malloc((size_t)32 * c.ldy * 4);
        for (int mode = 0; mode < 3; mode++) {
            KOK(qe_gemm_select(1));
            skinny_run(g, &c, 32, mode, full); /* m = 32: what every smaller m must repeat */
            for (int mi = 0; mi < n_m; mi++) {
                const int M = SKINNY_M[mi];
                for (int path = 0; path < 2; path++) {
                    KOK(qe_gemm_select(path));
                    skinny_run(g, &c, M, mode, out);
                    cr_expect(skinny_check(&c, M, mode, out, qe_gemm_path_name(path)),
                              "%s path, K %d N %d M %d mode %d", qe_gemm_path_name(path), c.K, c.N,
                              M, mode);
                }
                /* skinny: bitwise the same on a second call, and row for row the m = 32 result */
                KOK(qe_gemm_select(1));
                skinny_run(g, &c, M, mode, out);
                skinny_run(g, &c, M, mode, again);
                cr_expect(memcmp(out, again, (size_t)M * c.ldy * 4) == 0,
                          "skinny K %d N %d M %d mode %d: two calls differ", c.K, c.N, M, mode);
                cr_expect(memcmp(out, full, (size_t)M * c.ldy * 4) == 0,
                          "skinny K %d N %d M %d mode %d: rows differ from the same rows at M 32",
                          c.K, c.N, M, mode);
            }
        }
        free(out), free(again), free(full);
        skinny_case_free(&c);
    }
    KOK(qe_gemm_select(-1));
    qe_gemm_destroy(g);
    cudaFree(ws);
}

/* The skinny kernel's fused epilogues: bitwise what the unfused skinny call followed by
 * qe_swiglu / qe_qk_norm_rope gives (each of those is checked against its C reference above), at
 * odd m, odd head counts and widths, rotated or not, with many slices and with one (a workspace
 * just big enough), and nothing written past the output rows' width. */
typedef struct fused_case {
    int K, N, m;
    void *d_x, *d_w, *d_pos, *d_qw, *d_kw, *d_out, *d_ref, *d_gu;
} fused_case;

static void fused_case_init(fused_case *c, int K, int N, int m, uint64_t seed) {
    memset(c, 0, sizeof *c);
    c->K = K, c->N = N, c->m = m;
    rng_seed(seed);
    uint16_t *xb = malloc((size_t)m * K * 2), *wb = malloc((size_t)N * K * 2);
    rand_bf16(xb, NULL, (size_t)m * K, 1.0f);
    rand_bf16(wb, NULL, (size_t)N * K, 1.0f);
    int32_t pos[32];
    float nw[2 * 256];
    for (int i = 0; i < m; i++)
        pos[i] = (int32_t)(rng_next() % 40000);
    for (int i = 0; i < 2 * 256; i++)
        nw[i] = 0.5f + frand(0.5f);
    c->d_x = dup_to_dev(xb, (size_t)m * K * 2);
    c->d_w = dup_to_dev(wb, (size_t)N * K * 2);
    c->d_pos = dup_to_dev(pos, sizeof pos);
    c->d_qw = dup_to_dev(nw, 256 * 4);
    c->d_kw = dup_to_dev(nw + 256, 256 * 4);
    c->d_out = dalloc((size_t)m * (N + 8) * 2);
    c->d_ref = dalloc((size_t)m * (N + 8) * 2);
    c->d_gu = dalloc((size_t)m * N * 2);
    free(xb), free(wb);
}

static void fused_case_free(fused_case *c) {
    cudaFree(c->d_x), cudaFree(c->d_w), cudaFree(c->d_pos), cudaFree(c->d_qw);
    cudaFree(c->d_kw), cudaFree(c->d_out), cudaFree(c->d_ref), cudaFree(c->d_gu);
}

/* Compares the first bytes of d_out and d_ref (both poisoned before the calls). */
static int fused_same(const fused_case *c, size_t bytes, const char *what) {
    uint8_t *a = malloc(bytes), *b = malloc(bytes);
    to_host(a, c->d_out, bytes);
    to_host(b, c->d_ref, bytes);
    size_t first = bytes;
    for (size_t i = 0; i < bytes && first == bytes; i++)
        if (a[i] != b[i]) first = i;
    if (first < bytes)
        cr_log_error("%s K %d N %d m %d: first difference at byte %zu", what, c->K, c->N, c->m,
                     first);
    free(a), free(b);
    return first == bytes;
}

Test(kernels, gemm_skinny_fused_epilogues_equal_the_unfused_path, .timeout = 600) {
    require_gpu("GPU kernel test");
    const size_t big = 32u << 20;
    float *ws = dalloc(big);
    /* heads, kv_heads, head_dim, K: Qwen3-0.6B's qkv, then odd counts and a short head */
    static const int QKV[][4] = {{16, 8, 128, 1024}, {5, 3, 64, 264}};
    static const int SWIGLU[][2] = {{3072, 1024}, {37, 200}}; /* inter, K */
    static const int MS[] = {1, 7, 24, 32};
    for (int ci = 0; ci < 2; ci++)
        for (int mi = 0; mi < 4; mi++)
            for (int small = 0; small < 2; small++) {
                const int H = QKV[ci][0], KV = QKV[ci][1], HD = QKV[ci][2], K = QKV[ci][3];
                const int N = (H + 2 * KV) * HD, m = MS[mi];
                /* small: room for one slice's partials only */
                const size_t bytes = small ? (size_t)32 * N * 4 : big;
                fused_case c;
                fused_case_init(&c, K, N, m, 1700 + 10 * ci + mi);
                if (small) cr_expect_eq(qe_gemm_skinny_splits(N, K, bytes), 1);
                for (int rot = 0; rot < 2; rot++) {
                    const double theta = rot ? 1e6 : 0.0;
                    poison(c.d_out, (size_t)m * N * 2), poison(c.d_ref, (size_t)m * N * 2);
                    KOK(qe_gemm_skinny(c.d_x, K, m, K, c.d_w, N, c.d_ref, N, 0, 0, ws, bytes,
                                       NULL));
                    KOK(qe_qk_norm_rope(c.d_ref, m, H, KV, HD, c.d_pos, c.d_qw, c.d_kw, 1e-6f,
                                        theta, NULL));
                    KOK(qe_gemm_skinny_qkv_norm_rope(c.d_x, K, m, K, c.d_w, H, KV, HD, c.d_out,
                                                     c.d_pos, c.d_qw, c.d_kw, 1e-6f, theta, ws,
                                                     bytes, NULL));
                    cr_expect(fused_same(&c, (size_t)m * N * 2, "qkv_norm_rope"),
                              "qkv H %d KV %d HD %d m %d theta %g workspace %zu", H, KV, HD, m,
                              theta, bytes);
                }
                fused_case_free(&c);
            }
    for (int ci = 0; ci < 2; ci++)
        for (int mi = 0; mi < 4; mi++)
            for (int small = 0; small < 2; small++) {
                const int I = SWIGLU[ci][0], K = SWIGLU[ci][1], N = 2 * I, m = MS[mi];
                const size_t bytes = small ? (size_t)32 * N * 4 : big;
                fused_case c;
                fused_case_init(&c, K, N, m, 1800 + 10 * ci + mi);
                const int ld = I + 8; /* the 8 columns past inter must stay poison */
                poison(c.d_out, (size_t)m * ld * 2), poison(c.d_ref, (size_t)m * ld * 2);
                KOK(qe_gemm_skinny(c.d_x, K, m, K, c.d_w, N, c.d_gu, N, 0, 0, ws, bytes, NULL));
                /* qe_swiglu writes rows of inter: run it row by row into the strided rows */
                for (int r = 0; r < m; r++)
                    KOK(qe_swiglu((const uint16_t *)c.d_gu + (size_t)r * N, 1, I,
                                  (uint16_t *)c.d_ref + (size_t)r * ld, NULL));
                KOK(qe_gemm_skinny_swiglu(c.d_x, K, m, K, c.d_w, I, c.d_out, ld, ws, bytes, NULL));
                cr_expect(fused_same(&c, (size_t)m * ld * 2, "swiglu"),
                          "swiglu inter %d K %d m %d workspace %zu", I, K, m, bytes);
                fused_case_free(&c);
            }
    /* too little workspace for 32 rows of partials: refused, not run with fewer */
    fused_case c;
    fused_case_init(&c, 200, 74, 3, 1900);
    cr_expect_eq(qe_gemm_skinny_fused_supports(c.d_x, 200, 3, 200, c.d_w, 74, c.d_out,
                                               (size_t)32 * 74 * 4 - 4),
                 0);
    cr_expect_eq(qe_gemm_skinny_swiglu(c.d_x, 200, 3, 200, c.d_w, 37, c.d_out, 37, ws,
                                       (size_t)32 * 74 * 4 - 4, NULL),
                 QE_K_ERR);
    cr_expect_eq(qe_gemm_skinny_swiglu(c.d_x, 200, 33, 200, c.d_w, 37, c.d_out, 37, ws, big, NULL),
                 QE_K_ERR, "m 33 is not a skinny call");
    fused_case_free(&c);
    cudaFree(ws);
}

/* Without a workspace the kernel runs one slice a block and writes y itself (no second pass);
 * a workspace too small for the partials of m = 32 gets as many slices as fit, for every m. */
Test(kernels, gemm_skinny_one_slice_and_small_workspace) {
    require_gpu("GPU kernel test");
    skinny_case c;
    skinny_case_init(&c, 2560, 41, 1600);
    const size_t small = (size_t)3 * 32 * c.N * 4; /* partials of 3 slices at m = 32 */
    cr_expect_eq(qe_gemm_skinny_splits(c.N, c.K, 0), 1);
    cr_expect_eq(qe_gemm_skinny_splits(c.N, c.K, small), 3);
    float *ws = dalloc(small);
    float *out = malloc((size_t)32 * c.ldy * 4);
    const size_t ws_bytes[2] = {0, small};
    for (int wi = 0; wi < 2; wi++)
        for (int mode = 0; mode < 3; mode++)
            for (int mi = 0; mi < 3; mi++) {
                const int M = (int[]){1, 24, 32}[mi];
                const size_t cells = (size_t)32 * c.ldy;
                if (mode == 2)
                    cr_assert_eq(cudaMemcpy(c.d_y, c.y0, cells * 4, cudaMemcpyHostToDevice),
                                 cudaSuccess);
                else
                    poison(c.d_y, cells * 4);
                KOK(qe_gemm_skinny(c.d_x, c.ldx, M, c.K, c.d_w, c.N, c.d_y, c.ldy, mode != 0,
                                   mode == 2, wi ? ws : NULL, ws_bytes[wi], NULL));
                if (mode == 0) {
                    uint16_t *yb = malloc(cells * 2);
                    to_host(yb, c.d_y, cells * 2);
                    bf_to_f(yb, out, cells);
                    free(yb);
                } else {
                    to_host(out, c.d_y, cells * 4);
                }
                cr_expect(skinny_check(&c, M, mode, out, wi ? "skinny (3 slices)" : "skinny (1)"),
                          "workspace %zu bytes, M %d mode %d", ws_bytes[wi], M, mode);
            }
    /* what the path refuses: m past 32, k not a multiple of 8 (qe_gemm_bf16 sends those to
     * cuBLASLt) */
    cr_expect_eq(
        qe_gemm_skinny(c.d_x, c.ldx, 33, c.K, c.d_w, c.N, c.d_y, c.ldy, 1, 0, NULL, 0, NULL),
        QE_K_ERR);
    cr_expect(!qe_gemm_skinny_supports(c.d_x, c.ldx, 4, 2556, c.d_w, c.d_y, c.ldy, 1));
    cr_expect(!qe_gemm_skinny_supports(c.d_x, c.ldx, 0, c.K, c.d_w, c.d_y, c.ldy, 1));
    cr_expect_eq(qe_gemm_select(QE_GEMM_PATHS), -1);
    cr_expect_str_eq(qe_gemm_path_name(QE_GEMM_PATH_FUSED), "fused");
    cr_expect_str_eq(qe_gemm_path_name(1), "skinny");
    free(out);
    cudaFree(ws);
    skinny_case_free(&c);
}

/* ------------------------------------------------------------ wgmma fused epilogues (15, 3) */

/* qe_gemm_swiglu and qe_gemm_qkv_norm_rope (gemm_fused.cu) against the composed references of
 * ref_gemm_fused.c (the product summed in double, rounded to fp32, then ref_swiglu /
 * ref_qk_norm_rope), with an error bound derived per element from what each step may add:
 *
 *   product: the kernel's fp32 accumulation, K * 2^-23 * sum|x w| (the textbook K u bound
 *     doubled: the tensor core's adds may truncate), plus the reference's rounding of the double
 *     sum to fp32 (2^-24 |a|);
 *   SwiGLU: that error through f(g, u) = silu(g) u: |silu'| <= 1.1, so 1.1 Eg (|u| + Eu) +
 *     |silu(g)| Eu; fp32 evaluation in kernel and reference, each <= (4 + 2 (4 + |g|)) 2^-24 |f|
 *     (__expf is ex2.approx of an fp32 product: 2^-22 plus 2^-24 of the argument |g log2 e|);
 *   RMSNorm: rms is 1-Lipschitz in the rms distance, so |r - r*| <= rms(E) = dr, and
 *     |n_i - n*_i| <= |w_i| (E_i / (r* - dr) + |a*_i| dr / (r* (r* - dr))); RoPE is a rotation
 *     of the pair (i, i + 64), so the pair's error is the norm of the two; fp32 evaluation (sum of
 *     squares 128 * 2^-24, rsqrtf, the angle rounded to fp32 and sincosf) <= 2^-16 of the pair's
 *     magnitude in the kernel and 2^-21 in the reference: 2^-15 covers both;
 *   the output's bf16 rounding: 2^-8 of (|ref| + the error above).
 * A wrong gate/up half, a wrong RoPE pair or a wrong norm weight moves results by O(|y|), far
 * past these bounds (tried: see docs/kernels.md). */
typedef struct epi_case {
    int M, K, N;
    uint16_t *xb, *wb;
    float *xf, *wf;
    double *absprod; /* [M, N]: sum_k |x w| */
    void *d_x, *d_w;
} epi_case;

static void epi_case_init(epi_case *c, int M, int K, int N, uint64_t seed) {
    memset(c, 0, sizeof *c);
    c->M = M, c->K = K, c->N = N;
    rng_seed(seed);
    c->xb = malloc((size_t)M * K * 2), c->wb = malloc((size_t)N * K * 2);
    c->xf = malloc((size_t)M * K * 4), c->wf = malloc((size_t)N * K * 4);
    rand_bf16(c->xb, c->xf, (size_t)M * K, 1.0f);
    rand_bf16(c->wb, c->wf, (size_t)N * K, 1.0f);
    c->absprod = malloc((size_t)M * N * sizeof(double));
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            const float *a = c->xf + (size_t)m * K, *b = c->wf + (size_t)n * K;
            double s = 0;
            for (int k = 0; k < K; k++)
                s += fabs((double)a[k] * b[k]);
            c->absprod[(size_t)m * N + n] = s;
        }
    c->d_x = dup_to_dev(c->xb, (size_t)M * K * 2);
    c->d_w = dup_to_dev(c->wb, (size_t)N * K * 2);
}

static void epi_case_free(epi_case *c) {
    cudaFree(c->d_x), cudaFree(c->d_w);
    free(c->xb), free(c->wb), free(c->xf), free(c->wf), free(c->absprod);
}

/* The product's error bound at (m, n) against the reference's fp32 value a. */
static double fused_prod_err(const epi_case *c, size_t e, double a) {
    return c->K * ldexp(1.0, -23) * c->absprod[e] + ldexp(1.0, -24) * fabs(a);
}

/* Checks got against want within bound[] (per element); logs the worst. 1 when it holds. */
static int fused_check(const char *what, const epi_case *c, const float *got, const float *want,
                       const double *bound, int cols) {
    double worst = -1;
    size_t wi = 0, bad = 0;
    const size_t n = (size_t)c->M * cols;
    for (size_t i = 0; i < n; i++) {
        const double r = isnan(got[i]) ? INFINITY : fabs((double)got[i] - want[i]) / bound[i];
        bad += r > 1.0;
        if (r > worst) worst = r, wi = i;
    }
    if (worst > 1.0)
        cr_log_error("%s M %d K %d N %d: %zu of %zu outside the bound; worst row %zu col %zu: got "
                     "%.7g want %.7g (|diff| %.3g, bound %.3g)",
                     what, c->M, c->K, c->N, bad, n, wi / cols, wi % cols, got[wi], want[wi],
                     fabs((double)got[wi] - want[wi]), bound[wi]);
    else
        cr_log_info("%s M %d K %d N %d: worst error %.3g of its bound", what, c->M, c->K, c->N,
                    worst);
    return worst <= 1.0;
}

/* One qe_gemm_swiglu call on the case (N = 2 * inter) against ref_gemm_swiglu; 1 when within. */
static int fused_swiglu_run(const epi_case *c) {
    const int M = c->M, I = c->N / 2;
    const size_t n_out = (size_t)M * I;
    float *want = malloc(n_out * 4), *gu = malloc((size_t)M * c->N * 4), *got = malloc(n_out * 4);
    double *bound = malloc(n_out * sizeof(double));
    uint16_t *ob = malloc(n_out * 2);
    uint16_t *d_o = dalloc(n_out * 2);
    cr_assert_eq(ref_gemm_swiglu(c->xf, M, c->K, c->wf, I, want, gu), 0);
    for (int m = 0; m < M; m++)
        for (int i = 0; i < I; i++) {
            const size_t e = (size_t)m * I + i, eg = (size_t)m * c->N + i, eu = eg + I;
            const double g = gu[eg], u = gu[eu];
            const double Eg = fused_prod_err(c, eg, g), Eu = fused_prod_err(c, eu, u);
            const double silu = g / (1.0 + exp(-g)), f = fabs((double)want[e]);
            const double prop = 1.1 * Eg * (fabs(u) + Eu) + fabs(silu) * Eu;
            const double eval = 2 * (4 + 2 * (4 + fabs(g))) * ldexp(1.0, -24) * f;
            bound[e] = prop + eval + ldexp(1.0, -8) * (f + prop + eval) + 1e-30;
        }
    KOK(qe_gemm_swiglu(c->d_x, c->K, M, c->K, c->d_w, I, d_o, NULL));
    to_host(ob, d_o, n_out * 2);
    bf_to_f(ob, got, n_out);
    const int ok = fused_check("gemm_swiglu", c, got, want, bound, I);
    cudaFree(d_o);
    free(want), free(gu), free(got), free(bound), free(ob);
    return ok;
}

/* One qe_gemm_qkv_norm_rope call (heads H, kv heads KV, head_dim 128, theta 1e6 or 0) against
 * ref_gemm_qkv_norm_rope; also that the v heads are the plain product. 1 when within. */
static int fused_qkv_run(const epi_case *c, int H, int KV, double theta) {
    const int M = c->M, N = c->N, HD = 128;
    const size_t n = (size_t)M * N;
    float *want = malloc(n * 4), *raw = malloc(n * 4), *got = malloc(n * 4);
    double *bound = malloc(n * sizeof(double));
    uint16_t *ob = malloc(n * 2);
    float qw[128], kw[128];
    int32_t *pos = malloc((size_t)M * 4);
    for (int i = 0; i < HD; i++)
        qw[i] = 0.5f + frand(0.5f), kw[i] = 0.5f + frand(0.5f);
    for (int t = 0; t < M; t++) /* large and small positions, up to 40959 */
        pos[t] = (t & 1) ? irand(40960) : t;
    pos[0] = 40959;
    ref_gemm_qkv_norm_rope(c->xf, M, c->K, c->wf, H, KV, HD, pos, qw, kw, 1e-6f, theta, want, raw);
    for (int m = 0; m < M; m++)
        for (int h = 0; h < H + 2 * KV; h++) {
            const size_t e0 = (size_t)m * N + (size_t)h * HD;
            double E[128], ms = 0, mse = 0;
            for (int i = 0; i < HD; i++) {
                E[i] = fused_prod_err(c, e0 + i, raw[e0 + i]);
                ms += (double)raw[e0 + i] * raw[e0 + i], mse += E[i] * E[i];
            }
            if (h >= H + KV) { /* v: the product */
                for (int i = 0; i < HD; i++)
                    bound[e0 + i] = E[i] + ldexp(1.0, -8) * (fabs(want[e0 + i]) + E[i]) + 1e-30;
                continue;
            }
            const float *w = h < H ? qw : kw;
            const double r = sqrt(ms / HD + 1e-6), dr = sqrt(mse / HD);
            cr_assert(dr < r / 2, "the product's error bound swamps the norm (row %d head %d)", m,
                      h);
            double dn[128];
            for (int i = 0; i < HD; i++)
                dn[i] = fabs(w[i]) * (E[i] / (r - dr) + fabs(raw[e0 + i]) * dr / (r * (r - dr)));
            for (int i = 0; i < HD / 2; i++) {
                const double pair_err = sqrt(dn[i] * dn[i] + dn[i + 64] * dn[i + 64]);
                const double mag = sqrt((double)want[e0 + i] * want[e0 + i] +
                                        (double)want[e0 + i + 64] * want[e0 + i + 64]);
                const double e = pair_err + ldexp(1.0, -15) * mag;
                bound[e0 + i] = e + ldexp(1.0, -8) * (fabs(want[e0 + i]) + e) + 1e-30;
                bound[e0 + i + 64] = e + ldexp(1.0, -8) * (fabs(want[e0 + i + 64]) + e) + 1e-30;
            }
        }
    uint16_t *d_o = dalloc(n * 2);
    int32_t *d_pos = dup_to_dev(pos, (size_t)M * 4);
    float *d_qw = dup_to_dev(qw, sizeof qw), *d_kw = dup_to_dev(kw, sizeof kw);
    KOK(qe_gemm_qkv_norm_rope(c->d_x, c->K, M, c->K, c->d_w, H, KV, HD, theta > 0 ? d_pos : NULL,
                              d_qw, d_kw, 1e-6f, theta, d_o, NULL));
    to_host(ob, d_o, n * 2);
    bf_to_f(ob, got, n);
    const int ok = fused_check(theta > 0 ? "gemm_qkv_norm_rope" : "gemm_qkv_norm (theta 0)", c, got,
                               want, bound, N);
    cudaFree(d_o), cudaFree(d_pos), cudaFree(d_qw), cudaFree(d_kw);
    free(want), free(raw), free(got), free(bound), free(ob), free(pos);
    return ok;
}

/* Odd M (one partial row tile, several, a tile of one row) at every Qwen3 hidden size (the k of
 * both products). The kernel's code path does not depend on N beyond the number of column tiles
 * and, for SwiGLU, the up rows' offset (inter) and for qkv which heads are q, k and v; so the odd
 * M run with small N (3 SwiGLU column tiles; 4 q + 2 kv heads), and each model's real N (inter
 * 3072 / 9728 / 12288; 16 / 32 / 32 q heads over 8 kv) runs once at its own k, m = 7. */
static const int FUSED_M[] = {1, 7, 65, 130, 300};
static const int FUSED_K[] = {1024, 2560, 4096};
/* The row-tile handling does not depend on k either: every m at the first k, at the others a
 * partial tile (7) and two tiles, the second partial (130). */
static int fused_m_at(int ki, int mi) {
    return ki == 0 || mi == 1 || mi == 3;
}
/* The 4B and 8B real widths (152 and 192 column tiles at k 2560 / 4096) take the emulator about as
 * long as all other cases together, and several times that under ASan; the ASan run of CI skips
 * them (the same code path as the cases it runs; the plain run covers them). */
#if defined(__SANITIZE_ADDRESS__)
#define FUSED_REAL_N_MODELS 1
#else
#define FUSED_REAL_N_MODELS 3
#endif

Test(kernels, gemm_swiglu_fused, .timeout = 900) {
    require_gpu("GPU kernel test");
    for (int ki = 0; ki < 3; ki++)
        for (int mi = 0; mi < 5; mi++) {
            if (!fused_m_at(ki, mi)) continue;
            epi_case c;
            epi_case_init(&c, FUSED_M[mi], FUSED_K[ki], 2 * 192, 1700 + ki * 10 + mi);
            cr_expect(fused_swiglu_run(&c), "gemm_swiglu M %d K %d inter 192", c.M, c.K);
            epi_case_free(&c);
        }
    for (int mi = 0; mi < FUSED_REAL_N_MODELS; mi++) { /* the real widths: 0.6B, 4B, 8B */
        const int K = FUSED_K[mi], I = (int[]){3072, 9728, 12288}[mi];
        epi_case c;
        epi_case_init(&c, 7, K, 2 * I, 1790 + mi);
        cr_expect(fused_swiglu_run(&c), "gemm_swiglu M 7 K %d inter %d", K, I);
        epi_case_free(&c);
    }
}

Test(kernels, gemm_qkv_norm_rope_fused, .timeout = 900) {
    require_gpu("GPU kernel test");
    for (int ki = 0; ki < 3; ki++)
        for (int mi = 0; mi < 5; mi++) {
            if (!fused_m_at(ki, mi)) continue;
            epi_case c;
            epi_case_init(&c, FUSED_M[mi], FUSED_K[ki], (4 + 2 * 2) * 128, 1800 + ki * 10 + mi);
            cr_expect(fused_qkv_run(&c, 4, 2, 1e6), "gemm_qkv_norm_rope M %d K %d", c.M, c.K);
            if (mi == 3) cr_expect(fused_qkv_run(&c, 4, 2, 0.0), "theta 0, M %d K %d", c.M, c.K);
            epi_case_free(&c);
        }
    for (int mi = 0; mi < FUSED_REAL_N_MODELS;
         mi++) { /* the real heads: 0.6B 16 / 8, 4B and 8B 32 / 8 */
        const int K = FUSED_K[mi], H = mi ? 32 : 16;
        epi_case c;
        epi_case_init(&c, 7, K, (H + 2 * 8) * 128, 1890 + mi);
        cr_expect(fused_qkv_run(&c, H, 8, 1e6), "gemm_qkv_norm_rope M 7 K %d %d / 8 heads", K, H);
        epi_case_free(&c);
    }
}

/* What the fused launchers refuse, with the reason in the message (no device needed). */
Test(kernels, gemm_fused_refuses_other_shapes) {
    static uint16_t buf[64] __attribute__((aligned(16)));
    cr_expect_eq(qe_gemm_swiglu(buf, 1000, 1, 1000, buf, 64, buf, NULL), QE_K_ERR);
    cr_expect(strstr(qe_k_last_error(), "multiple of 64"), "%s", qe_k_last_error());
    cr_expect_eq(qe_gemm_swiglu(buf, 1024, 1, 1024, buf, 100, buf, NULL), QE_K_ERR);
    cr_expect(strstr(qe_k_last_error(), "inter"), "%s", qe_k_last_error());
    cr_expect_eq(qe_gemm_swiglu(buf, 1024, 1, 1024, buf + 1, 64, buf, NULL), QE_K_ERR);
    cr_expect(strstr(qe_k_last_error(), "aligned"), "%s", qe_k_last_error());
    cr_expect_eq(qe_gemm_qkv_norm_rope(buf, 1024, 1, 1024, buf, 4, 2, 64, NULL, (float *)buf,
                                       (float *)buf, 1e-6f, 0.0, buf, NULL),
                 QE_K_ERR);
    cr_expect(strstr(qe_k_last_error(), "head of 128"), "%s", qe_k_last_error());
    cr_expect_eq(qe_gemm_qkv_norm_rope(buf, 1024, 1, 1024, buf, 4, 2, 128, NULL, (float *)buf,
                                       (float *)buf, 1e-6f, 1e6, buf, NULL),
                 QE_K_ERR);
    /* the Qwen3 shapes qualify on an sm_90 device (the emulator is one), none without */
#ifdef QE_EMU_TEST
    const int sm90 = 1;
#else
    int n_dev = 0, major = 0, minor = 0;
    const int sm90 =
        cudaGetDeviceCount(&n_dev) == cudaSuccess && n_dev > 0 &&
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) == cudaSuccess &&
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0) == cudaSuccess &&
        major == 9 && minor == 0;
#endif
    cr_expect(!qe_gemm_swiglu_supports(buf, 1024, 2556, buf, 64, buf));
    cr_expect_eq(qe_gemm_swiglu_supports(buf, 2560, 2560, buf, 9728, buf), sm90);
    cr_expect_eq(qe_gemm_qkv_norm_rope_supports(buf, 4096, 4096, buf, 32, 8, 128, buf), sm90);
}

/* ------------------------------------------------------------------ kernel switches */

/* The QE_ATTN / QE_GEMM / QE_PDL rule (kernels/kernel_switch.h), on a variable of the test's own:
 * a name or a number picks, unset / empty / unknown mean choice 0, the select call overrides until
 * -1, and a choice that does not exist is refused. Host code only: runs without a GPU. */
static int switch_from(const char *value) {
    static const char *const NAMES[] = {"alpha", "beta", "gamma"};
    kernel_switch s = KERNEL_SWITCH("QE_TEST_KERNEL_SWITCH", NAMES);
    if (value)
        setenv("QE_TEST_KERNEL_SWITCH", value, 1);
    else
        unsetenv("QE_TEST_KERNEL_SWITCH");
    return kernel_switch_value(&s);
}

Test(kernels, kernel_switch_reads_names_numbers_and_falls_back_to_zero) {
    cr_expect_eq(switch_from(NULL), 0);
    cr_expect_eq(switch_from(""), 0);
    cr_expect_eq(switch_from("gamma"), 2);
    cr_expect_eq(switch_from("1"), 1);
    cr_expect_eq(switch_from("beta "), 0, "a name must match whole");
    cr_expect_eq(switch_from("3"), 0, "no choice 3");
    cr_expect_eq(switch_from("12"), 0);
    cr_expect_eq(switch_from("GAMMA"), 0, "names are case-sensitive, as documented");

    static const char *const NAMES[] = {"off", "on"};
    kernel_switch s = KERNEL_SWITCH("QE_TEST_KERNEL_SWITCH", NAMES);
    setenv("QE_TEST_KERNEL_SWITCH", "on", 1);
    cr_expect_eq(kernel_switch_value(&s), 1);
    setenv("QE_TEST_KERNEL_SWITCH", "off", 1);
    cr_expect_eq(kernel_switch_value(&s), 1, "the variable is read once");
    cr_expect_eq(kernel_switch_select(&s, 0), 0);
    cr_expect_eq(kernel_switch_value(&s), 0);
    cr_expect_eq(kernel_switch_select(&s, 2), -1);
    cr_expect_eq(kernel_switch_select(&s, -2), -1);
    cr_expect_eq(kernel_switch_value(&s), 0, "a refused choice changes nothing");
    cr_expect_eq(kernel_switch_select(&s, -1), 0);
    cr_expect_eq(kernel_switch_value(&s), 1, "-1 returns to the variable's choice");
    cr_expect_str_eq(kernel_switch_name(&s, 1), "on");
    cr_expect_null(kernel_switch_name(&s, 2));
    cr_expect_null(kernel_switch_name(&s, -1));
    unsetenv("QE_TEST_KERNEL_SWITCH");

    /* the three real switches name their choices through it */
    cr_expect_str_eq(qe_attention_variant_name(2), "fa3");
    cr_expect_null(qe_attention_variant_name(QE_ATTN_VARIANTS));
    cr_expect_eq(qe_pdl_select(2), -1);
}

/* The backend's open-time check (device_check.cu): this build runs on the device it is tested on. */
Test(kernels, the_build_has_code_for_the_device) {
    require_gpu("GPU kernel test");
    char why[400] = "";
    cr_expect_eq(qe_kernels_check_device(0, why, sizeof why), QE_K_OK, "%s", why);
}
