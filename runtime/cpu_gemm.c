/* cpu_gemm.c — the CPU backend's GEMM: the output split into panels, one pool task each.
 *
 * With BLIS (QE_HAVE_BLAS) a panel is all m rows x a 1/threads share of the n columns, and each
 * task runs one single-threaded bli_sgemm on it, on BLIS's packed path. Why BLIS, why this path
 * and why the pool's threads (figures in docs/benchmarks.md, "CPU GEMM"):
 *   - OpenBLAS 0.3.21 was within 12 % either way (up to 7 % faster from 256 tokens on), but its
 *     result for a row depends on where the row sits in the call (moved by 6 rows every row
 *     changes, by 12 none does), so a sequence's vector would change with whatever shares its
 *     step, and chunked prefill would no longer equal a whole run bitwise. BLIS computes every
 *     element with the same micro-kernel and the same k order wherever it falls (edge tiles are
 *     zero-padded, not special-cased): rows and columns come out bitwise the same in any batch
 *     and any panel split.
 *   - BLIS's small-matrix ("sup") path is off: it is another kernel family, so a step of 64
 *     tokens and one of 1,024 would round differently, and it was 2x slower at 64-256 tokens.
 *   - The engine's pool runs the panels (a serial BLIS build has no threads of its own): one set
 *     of threads for GEMMs and attention alike, sized by the engine's `threads` option, none
 *     spinning against the other. One panel per thread: each call packs all of x, so finer
 *     panels only add packing.
 *
 * Without BLIS the panels are 64 x 64 tiles of ref_matmul, the oracle the tests compare with. */
#include "cpu_gemm.h"

#include "kernels/ref/ref.h"

#if QE_HAVE_BLAS
#include <blis.h>
#include <pthread.h>
#include <stdio.h>
#endif

typedef struct gemm_job {
    const float *x, *w;
    float *y;
    int m, k, n, ldy, accumulate;
    int panel_rows, panel_cols, panels_n; /* panels_n: panels across n */
} gemm_job;

#if QE_HAVE_BLAS
/* Panel widths a multiple of 64: whole micro-tiles (BLIS's zen3 sgemm tile is 6 x 16) and whole
 * cache lines of y in each panel. */
enum { PANEL_ALIGN = 64 };

static pthread_once_t blis_once = PTHREAD_ONCE_INIT;
static char blis_name[96];

static void blis_describe(void) {
    snprintf(blis_name, sizeof blis_name, "BLIS %s (%s kernels), one thread per panel",
             bli_info_get_version_str(), bli_arch_string(bli_arch_query_id()));
}

static void panel_gemm(const float *x, int m, int k, const float *w, int n, float *y, int ldy,
                       int accumulate) {
    /* One thread: the pool runs the panels. BLIS's small-matrix ("sup") path off: only the
     * packed path computes every element with the same micro-kernel and k order wherever its
     * row and column fall, which the engine's bitwise promises rest on (a sequence's vector
     * does not depend on what shares its step, nor on the thread count). */
    rntm_t rntm = BLIS_RNTM_INITIALIZER;
    bli_rntm_set_num_threads(1, &rntm);
    bli_rntm_disable_l3_sup(&rntm);
    float one = 1.0f, beta = accumulate ? 1.0f : 0.0f; /* beta 0: y is written, never read */
    /* x: rows of k (row stride k); w^T: column j is w's row j (row stride 1, column stride k) */
    bli_sgemm_ex(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, m, n, k, &one, (float *)x, k, 1, (float *)w,
                 1, k, &beta, y, ldy, 1, NULL, &rntm);
}

static void panel_shape(int m, int n, int threads, int *rows, int *cols) {
    int share = (n + threads - 1) / threads;
    *rows = m;
    *cols = (share + PANEL_ALIGN - 1) / PANEL_ALIGN * PANEL_ALIGN;
}

const char *cpu_gemm_library(void) {
    pthread_once(&blis_once, blis_describe);
    return blis_name;
}
#else
/* 64 × 64: a tile's 64 weight rows (of at most a few thousand floats) stay in L2 while the
 * tile's rows of x pass over them. */
enum { TILE = 64 };

static void panel_gemm(const float *x, int m, int k, const float *w, int n, float *y, int ldy,
                       int accumulate) {
    ref_matmul(x, m, k, w, n, y, ldy, accumulate);
}

static void panel_shape(int m, int n, int threads, int *rows, int *cols) {
    (void)m, (void)n, (void)threads;
    *rows = TILE;
    *cols = TILE;
}

const char *cpu_gemm_library(void) {
    return "reference tiles";
}
#endif

static void gemm_panel(void *ctx, int task) {
    const gemm_job *j = ctx;
    const int r0 = (task / j->panels_n) * j->panel_rows, c0 = (task % j->panels_n) * j->panel_cols;
    const int rows = j->m - r0 < j->panel_rows ? j->m - r0 : j->panel_rows;
    const int cols = j->n - c0 < j->panel_cols ? j->n - c0 : j->panel_cols;
    panel_gemm(j->x + (size_t)r0 * j->k, rows, j->k, j->w + (size_t)c0 * j->k, cols,
               j->y + (size_t)r0 * j->ldy + c0, j->ldy, j->accumulate);
}

void cpu_gemm(qe_pool *pool, const float *x, int m, int k, const float *w, int n, float *y, int ldy,
              int accumulate) {
    if (m <= 0 || n <= 0) return;
    gemm_job j = {
        .x = x, .w = w, .y = y, .m = m, .k = k, .n = n, .ldy = ldy, .accumulate = accumulate};
    panel_shape(m, n, pool_threads(pool), &j.panel_rows, &j.panel_cols);
    j.panels_n = (n + j.panel_cols - 1) / j.panel_cols;
    const int panels_m = (m + j.panel_rows - 1) / j.panel_rows;
    pool_run(pool, panels_m * j.panels_n, gemm_panel, &j);
}

/* cpu_gemm_w on weights left in the file: one task per pool thread, each owning a run of whole
 * chunks of w's rows (the columns of y) and its own CPU_GEMM_CHUNK x k floats of scratch. A chunk
 * is converted, then multiplied with all m rows of x by panel_gemm, so each chunk is converted
 * once per call however many tokens the step has. */
typedef struct wgemm_job {
    const float *x;
    const cpu_weight *w;
    float *y, *scratch;
    int m, k, n, ldy, accumulate, chunks_per_task;
} wgemm_job;

/* Rows [r0, r0 + rows) of the stacked parts, converted to fp32 into out. */
static void convert_rows(const cpu_weight *w, int r0, int rows, int k, float *out) {
    int base = 0;
    for (int p = 0; p < w->n_parts && rows > 0; p++) {
        const st_tensor *t = w->part[p];
        const int n_p = (int)t->shape[0];
        if (r0 < base + n_p) {
            const int from = r0 - base, take = rows < n_p - from ? rows : n_p - from;
            const st_tensor view = st_rows(t, from, take);
            st_to_f32(&view, out);
            out += (size_t)take * k, r0 += take, rows -= take;
        }
        base += n_p;
    }
}

static void wgemm_task(void *ctx, int task) {
    const wgemm_job *j = ctx;
    float *buf = j->scratch + (size_t)task * CPU_GEMM_CHUNK * j->k;
    const int c_end = (task + 1) * j->chunks_per_task * CPU_GEMM_CHUNK;
    for (int c0 = task * j->chunks_per_task * CPU_GEMM_CHUNK; c0 < j->n && c0 < c_end;
         c0 += CPU_GEMM_CHUNK) {
        const int cols = j->n - c0 < CPU_GEMM_CHUNK ? j->n - c0 : CPU_GEMM_CHUNK;
        convert_rows(j->w, c0, cols, j->k, buf);
        panel_gemm(j->x, j->m, j->k, buf, cols, j->y + c0, j->ldy, j->accumulate);
    }
}

size_t cpu_gemm_w_scratch(int threads, int k) {
    return (size_t)(threads > 0 ? threads : 1) * CPU_GEMM_CHUNK * (size_t)(k > 0 ? k : 1);
}

void cpu_gemm_w(qe_pool *pool, const float *x, int m, int k, const cpu_weight *w, int n, float *y,
                int ldy, int accumulate, float *scratch) {
    if (w->f32) {
        cpu_gemm(pool, x, m, k, w->f32, n, y, ldy, accumulate);
        return;
    }
    if (m <= 0 || n <= 0) return;
    const int threads = pool_threads(pool), chunks = (n + CPU_GEMM_CHUNK - 1) / CPU_GEMM_CHUNK;
    wgemm_job j = {.x = x,
                   .w = w,
                   .y = y,
                   .scratch = scratch,
                   .m = m,
                   .k = k,
                   .n = n,
                   .ldy = ldy,
                   .accumulate = accumulate};
    j.chunks_per_task = (chunks + threads - 1) / threads;
    pool_run(pool, (chunks + j.chunks_per_task - 1) / j.chunks_per_task, wgemm_task, &j);
}
