/* test_bench_emu.c — `qembed bench` on the CUDA backend WITHOUT a GPU: the backend linked
 * against the host stand-ins of the CUDA runtime (hostsim.h) and the emulated kernels, as in
 * test_cuda_emu.c. What it proves: the multi-workload bench opens the engine once and
 * reports, per workload, what the backend counted (steps, chunked-prefill chunks under an exact
 * --batch-tokens budget, CUDA graph captures / replays / refusals, graphs turned off by
 * graphs=0 and by a profile) and one line per GEMM plan; and that the counters of
 * qembed_debug.h follow the graph cache. What it cannot prove: any timing, or what cuBLASLt
 * chooses (the cuBLASLt stand-in reports one algorithm: id 0, tile and stages undefined, split-K
 * 1). */
#include "test_util.h"

#include <criterion/redirect.h>

#include "hostsim.h"
#include "qe_emu.h"
#include "runtime/qembed.h"
#include "runtime/qembed_debug.h"
#include "test_models.h"
#include "tools/commands.h"

/* The value of key=NUMBER on line, or -1. */
static long long field(const char *line, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, " %s=", key);
    const char *p = strstr(line, pat);
    return p ? strtoll(p + strlen(pat), NULL, 10) : -1;
}

/* The result lines and the qkv GEMM lines of a bench run whose stdout was redirected. */
typedef struct bench_out {
    int n_results, n_qkv;
    char results[8][1024], qkv[8][1024];
} bench_out;
static void read_output(bench_out *o) {
    fflush(stdout);
    FILE *f = cr_get_redirected_stdout();
    char line[1024];
    memset(o, 0, sizeof *o);
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "result ", 7) && o->n_results < 8)
            snprintf(o->results[o->n_results++], 1024, "%s", line);
        if (!strncmp(line, "gemm       qkv ", 15) && o->n_qkv < 8)
            snprintf(o->qkv[o->n_qkv++], 1024, "%s", line);
    }
}

static void make_model(char *dir, size_t cap, const char *tag) {
    tu_make_model(dir, cap, tag, (tu_geometry){2048, 64, 192, 2, 4, 2}, ST_BF16, 0, 5);
}

/* Four workloads on one engine with a 64-token budget. */
Test(bench_emu, workloads_report_steps_chunks_graphs_and_gemms, .init = cr_redirect_stdout,
     .timeout = 300) {
    char dir[1100];
    make_model(dir, sizeof dir, "bh-work");
    char *args[] = {"bench",
                    "--model",
                    dir,
                    "--backend",
                    "cuda",
                    "--batch-tokens",
                    "64",
                    "--workload",
                    "seq:24,batch=24,iters=3,warmup=1",
                    "--workload",
                    "seq:24,batch=24,iters=3,warmup=1,graphs=0",
                    "--workload",
                    "seq:150,iters=1,warmup=0",
                    "--workload",
                    "seq:16,iters=2,warmup=0,profile=1"};
    cr_assert_eq(cmd_bench((int)(sizeof args / sizeof args[0]), args), 0, "bench on the emulator");
    bench_out o;
    read_output(&o);
    cr_assert_eq(o.n_results, 4, "%d result lines", o.n_results);
    const char *graph = o.results[0], *eager = o.results[1], *chunked = o.results[2],
               *prof = o.results[3];
    cr_expect(strstr(graph, "workload=seq:24,batch=24,iters=3,warmup=1 ") &&
                  strstr(graph, " graphs=on") && field(graph, "captures") == 1 &&
                  field(graph, "replays") == 4 && field(graph, "steps") == 1,
              "graph workload: %s", graph);
    cr_expect(strstr(eager, " graphs=off") && field(eager, "captures") == 0 &&
                  field(eager, "replays") == 0 && field(eager, "steps") == 1,
              "graphs=0 workload: %s", eager);
    cr_expect(field(chunked, "budget") == 64 && field(chunked, "steps") == 3 &&
                  field(chunked, "chunks") == 3 && field(chunked, "tokens") == 150,
              "a 150-token sequence under a 64-token budget runs in 3 chunks: %s", chunked);
    cr_expect(field(prof, "replays") == 0 && field(prof, "steps") == 1,
              "a profiled workload runs without graphs: %s", prof);
    /* qkv plans: the graph's padded 32 rows, captured once per layer (replays make no host
     * call); the eager 24 rows, 4 calls x 2 layers; the chunks of 64 and 22 rows; the profiled
     * 4 x 16 rows share the 64-row plan */
    cr_assert_eq(o.n_qkv, 5, "%d qkv gemm lines", o.n_qkv);
    cr_expect(strstr(o.qkv[0], "m=32 ") && field(o.qkv[0], "calls") == 2, "%s", o.qkv[0]);
    cr_expect(strstr(o.qkv[1], "m=24 ") && field(o.qkv[1], "calls") == 8, "%s", o.qkv[1]);
    cr_expect(strstr(o.qkv[0], "algo=0 tile=0 stages=0 splitk=1"), "%s", o.qkv[0]);
}

/* Kernel switches per workload (attn=, gemm=, pdl=) on one engine: each result line names the
 * switches it ran under, the switched kernels ran, a switched workload captures its own graph
 * rather than replaying one captured under other kernels, and the workload after it is back on
 * the process's switches, replaying the first workload's graph. */
Test(bench_emu, workload_kernel_switches, .init = cr_redirect_stdout, .timeout = 300) {
    char dir[1100];
    make_model(dir, sizeof dir, "bh-sw");
    char *args[] = {"bench",
                    "--model",
                    dir,
                    "--backend",
                    "cuda",
                    "--batch-tokens",
                    "64",
                    "--workload",
                    "seq:24,batch=24,iters=2,warmup=1",
                    "--workload",
                    "seq:24,batch=24,iters=2,warmup=1,gemm=skinny,pdl=1",
                    "--workload",
                    "seq:24,batch=24,iters=2,warmup=1,attn=m128",
                    "--workload",
                    "seq:24,batch=24,iters=2,warmup=1"};
    const long skinny0 = qe_emu_stats("skinny_swiglu_kernel").launches,
               m128_0 = qe_emu_stats("flash_attn_m128_kernel").launches;
    cr_assert_eq(cmd_bench((int)(sizeof args / sizeof args[0]), args), 0, "bench on the emulator");
    bench_out o;
    read_output(&o);
    cr_assert_eq(o.n_results, 4, "%d result lines", o.n_results);
    cr_expect(strstr(o.results[0], " attn=fa2 gemm=cublaslt pdl=0") &&
                  field(o.results[0], "captures") == 1,
              "%s", o.results[0]);
    cr_expect(strstr(o.results[1], " attn=fa2 gemm=skinny pdl=1") &&
                  field(o.results[1], "captures") == 1 && field(o.results[1], "replays") == 3,
              "switched: its own graph: %s", o.results[1]);
    cr_expect(strstr(o.results[2], " attn=m128 gemm=cublaslt pdl=0") &&
                  field(o.results[2], "captures") == 1,
              "%s", o.results[2]);
    cr_expect(strstr(o.results[3], " attn=fa2 gemm=cublaslt pdl=0") &&
                  field(o.results[3], "captures") == 0 && field(o.results[3], "replays") == 3,
              "back on the defaults, the first graph replays: %s", o.results[3]);
    cr_expect(qe_emu_stats("skinny_swiglu_kernel").launches > skinny0, "the skinny path ran");
    cr_expect(qe_emu_stats("flash_attn_m128_kernel").launches > m128_0, "m128 ran");
    char *bad[] = {"bench", "--model", dir, "--backend", "cuda", "--workload", "seq:8,attn=nope"};
    cr_expect_eq(cmd_bench(7, bad), 2, "an unknown variant is refused");
}

/* A refused capture is visible in the graphs line and the result line; later steps run eagerly. */
Test(bench_emu, refused_capture_is_reported, .init = cr_redirect_stdout, .timeout = 300) {
    char dir[1100];
    make_model(dir, sizeof dir, "bh-ref");
    fake_capture_fails = 1;
    char *args[] = {"bench", "--model",        dir,  "--backend", "cuda", "--seq-len",
                    "24",    "--batch-tokens", "64", "--iters",   "2",    "--warmup",
                    "0"};
    cr_assert_eq(cmd_bench((int)(sizeof args / sizeof args[0]), args), 0, "bench on the emulator");
    fflush(stdout);
    FILE *f = cr_get_redirected_stdout();
    char line[1024], result[1024] = "", graphs[1024] = "";
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "result ", 7)) snprintf(result, sizeof result, "%s", line);
        if (!strncmp(line, "graphs ", 7)) snprintf(graphs, sizeof graphs, "%s", line);
    }
    cr_expect(field(result, "refused") == 1 && field(result, "replays") == 0 &&
                  strstr(result, " graphs=off"),
              "%s", result);
    cr_expect(strstr(graphs, "refused"), "graphs line: %s", graphs);
}

/* The counters and the graph switch through qembed_debug.h, on one engine. */
Test(bench_emu, debug_counters_follow_the_graph_cache, .timeout = 300) {
    char dir[1100], err[512] = "";
    make_model(dir, sizeof dir, "bh-cnt");
    qe_options o;
    memset(&o, 0, sizeof o);
    o.model_dir = dir, o.backend = QE_BACKEND_CUDA, o.max_batch_tokens = 64;
    qe_engine *e = NULL;
    cr_assert_eq(qe_open(&o, &e, err, sizeof err), QE_OK, "%s", err);
    int32_t ids[100];
    for (int i = 0; i < 100; i++)
        ids[i] = (int32_t)(i * 7 % 2048);
    const int32_t *one[] = {ids};
    float out[64];
    const int lens[][1] = {{20}, {20}, {10}, {100}};
    for (int c = 0; c < 4; c++)
        cr_assert_eq(qe_embed_ids(e, one, lens[c], 1, 0, out), QE_OK, "%s", qe_last_error(e));
    qe_debug_counters k;
    cr_assert_eq(qe_debug_counters_get(e, &k), QE_OK);
    cr_expect(k.counted && k.max_batch_tokens == 64 && k.graphs_on, "counted %d budget %d",
              k.counted, k.max_batch_tokens);
    /* 20 and 20 share one padded shape (32 rows), 10 another (16); 100 is longer than half the
     * budget: 2 chunks through the pool, never as a graph */
    cr_expect_eq(k.graph_captures, 2, "captures %lld", k.graph_captures);
    cr_expect_eq(k.graph_replays, 3, "replays %lld", k.graph_replays);
    cr_expect_eq(k.steps, 5, "steps %lld", k.steps);
    cr_expect_eq(k.chunks, 2, "chunks %lld", k.chunks);
    cr_assert_eq(qe_debug_set_graphs(e, 0), QE_OK);
    cr_assert_eq(qe_embed_ids(e, one, lens[0], 1, 0, out), QE_OK);
    qe_debug_counters_get(e, &k);
    cr_expect(!k.graphs_on && k.graph_replays == 3, "graphs off: replays %lld", k.graph_replays);
    cr_assert_eq(qe_debug_set_graphs(e, 1), QE_OK);
    cr_assert_eq(qe_embed_ids(e, one, lens[0], 1, 0, out), QE_OK);
    qe_debug_counters_get(e, &k);
    cr_expect(k.graphs_on && k.graph_replays == 4 && k.graph_captures == 2,
              "graphs on again: the cached graph replays (%lld, %lld captures)", k.graph_replays,
              k.graph_captures);
    qe_debug_gemm_plan plans[32];
    const int np = qe_debug_gemm_plans(e, plans, 32);
    cr_expect(np > 0 && plans[0].calls > 0, "%d gemm plans", np);
    qe_close(e);
    cr_expect_eq(sim.live_allocs, 0, "allocations leaked: %ld", sim.live_allocs);
}

#ifdef QE_HAVE_NCCL
/* `bench --tensor-parallel 2 --devices 0-3` on the CUDA backend: the workload timed on one rank
 * first, then on the two-rank engine (result tp=2 and a result_tp line with the speedup and the
 * efficiency), then on both two-rank engines at once (a result_dp line, 2 engines of 4 entries).
 * The stand-in's times mean nothing; the lines and their fields are what is checked. */
Test(bench_emu, tensor_parallel_reports_scaling, .init = cr_redirect_stdout, .timeout = 300) {
    char dir[1100];
    make_model(dir, sizeof dir, "bh-tp");
    fake_devices = 4;
    char *args[] = {"bench", "--model",           dir,  "--backend", "cuda", "--seq-len",
                    "24",    "--batch-tokens",    "48", "--iters",   "2",    "--warmup",
                    "0",     "--tensor-parallel", "2",  "--devices", "0-3"};
    cr_assert_eq(cmd_bench((int)(sizeof args / sizeof args[0]), args), 0, "bench on the emulator");
    fake_devices = 1;
    fflush(stdout);
    FILE *f = cr_get_redirected_stdout();
    char line[1024], result[1024] = "", tp[1024] = "", dp[1024] = "";
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "result ", 7)) snprintf(result, sizeof result, "%s", line);
        if (!strncmp(line, "result_tp ", 10)) snprintf(tp, sizeof tp, "%s", line);
        if (!strncmp(line, "result_dp ", 10)) snprintf(dp, sizeof dp, "%s", line);
    }
    cr_expect(field(result, "tp") == 2 && strstr(result, "backend=cuda"), "%s", result);
    cr_expect(field(tp, "ranks") == 2 && strstr(tp, " speedup=") && strstr(tp, " efficiency=") &&
                  strstr(tp, " one_rank_tokens_per_s="),
              "result_tp: %s", tp);
    cr_expect(field(dp, "devices") == 4 && field(dp, "engines") == 2, "result_dp: %s", dp);
}
#endif
