/* test_kernels_bench.c — CPU-side checks of `qembed bench`: its FLOP counter against the figures
 * of docs/PERF.md (counted independently there), its refusal of bad flags and workload specs, and
 * real runs on the CPU backend (one workload, and several on one engine). The CUDA side of the
 * bench output (graphs, chunks, GEMM plans) is checked on the kernel emulator in
 * test_bench_emu.c. */
#include "test_util.h"

#include <criterion/redirect.h>

#include "test_models.h"
#include "tools/commands.h"
#include "tools/random_model.h"
#include "weights/config.h"

double bench_step_flops(const qe_config *c, const int *lens, int n);

/* PERF.md: GFLOP per token, linear only and with causal attention at L = 512 (3 digits). */
Test(bench, flop_count_matches_perf_md) {
    const struct {
        const char *preset;
        double linear, at512;
    } rows[] = {{"0.6b", 0.88, 0.94}, {"4b", 7.27, 7.42}, {"8b", 13.9, 14.1}};
    for (int i = 0; i < 3; i++) {
        qe_config c;
        cr_assert_eq(random_model_preset(rows[i].preset, &c), 0, "preset %s", rows[i].preset);
        const int one = 1, l512 = 512;
        /* one token: attention adds 2 * heads * hd * layers, far below the rounding */
        double lin = bench_step_flops(&c, &one, 1) / 1e9;
        double at = bench_step_flops(&c, &l512, 1) / 512 / 1e9;
        /* PERF.md rounds to 3 digits (8B: 13.89 + 0.15 printed as 14.1): one unit of the last */
        double tol_lin = rows[i].linear < 10 ? 0.01 : 0.1;
        cr_expect(fabs(lin - rows[i].linear) <= tol_lin + 1e-4, "%s linear %.4f vs PERF.md %.2f",
                  rows[i].preset, lin, rows[i].linear);
        cr_expect(fabs(at - rows[i].at512) <= tol_lin + 1e-4, "%s at L=512 %.4f vs PERF.md %.2f",
                  rows[i].preset, at, rows[i].at512);
    }
    /* attention grows with L^2: two sequences of 256 cost less than one of 512 */
    qe_config c;
    cr_assert_eq(random_model_preset("4b", &c), 0, "preset 4b");
    const int two[] = {256, 256}, one[] = {512};
    cr_expect(bench_step_flops(&c, two, 2) < bench_step_flops(&c, one, 1),
              "attention must grow with L^2");
    /* PERF.md: at L = 8k the 4B limit drops to about 76k tokens/s at 750 TFLOP/s */
    const int l8k = 8192;
    double tps = 750e12 / (bench_step_flops(&c, &l8k, 1) / 8192);
    cr_expect(tps > 74e3 && tps < 78e3, "4B at 8k: %.0f tokens/s at 750 TFLOP/s", tps);
}

Test(bench, bad_options_fail) {
    char *a1[] = {"bench", "--iters", "zero"};
    cr_expect_eq(cmd_bench(3, a1), 2, "bad --iters must fail");
    char *a2[] = {"bench", "--frobnicate", "1"};
    cr_expect_eq(cmd_bench(3, a2), 2, "unknown option must fail");
    char *a3[] = {"bench", "--seq-len", "4"};
    cr_expect_eq(cmd_bench(3, a3), 2, "missing --model must fail");
    char *a4[] = {"bench", "--model", "/nonexistent/model", "--backend", "cpu"};
    cr_expect_eq(cmd_bench(5, a4), 1, "a missing model must fail");
}

/* Workload specs are checked before the model is opened: exit 2 for any bad one. */
Test(bench, bad_workloads_fail) {
    const char *bad[] = {"seq:abc",         "seq:0",           "seq:16,iters=0", "seq:16,frob=1",
                         "seq:16,iters",    "mix:9:3",         "mix:4",          "rand:4",
                         "seq:16,graphs=2", "seq:16,warmup=-1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *args[] = {"bench", "--model",    "/nonexistent/model", "--backend",
                        "cpu",   "--workload", (char *)bad[i]};
        cr_expect_eq(cmd_bench(7, args), 2, "--workload %s must be refused", bad[i]);
    }
    char *both[] = {"bench", "--model", "x", "--seq-len", "16", "--workload", "seq:16"};
    cr_expect_eq(cmd_bench(7, both), 2, "--seq-len with --workload must be refused");
    char *mix[] = {"bench", "--model", "x", "--mix", "16:512x"};
    cr_expect_eq(cmd_bench(5, mix), 2, "--mix 16:512x must be refused");
}

/* Several workloads on one cpu engine: one result line each, with its spec, the exact budget
 * (a sequence over it runs whole on cpu) and no graphs. */
Test(bench, workloads_on_cpu_backend, .init = cr_redirect_stdout, .timeout = 120) {
    char dir[1100];
    tu_make_model(dir, sizeof dir, "bench-wl", (tu_geometry){512, 64, 128, 2, 2, 1}, ST_BF16, 0, 7);
    char *args[] = {"bench",
                    "--model",
                    dir,
                    "--backend",
                    "cpu",
                    "--batch-tokens",
                    "32",
                    "--iters",
                    "1",
                    "--warmup",
                    "0",
                    "--workload",
                    "seq:8",
                    "--workload",
                    "seq:40,dims=16",
                    "--workload",
                    "mix:3:9,batch=20,iters=2"};
    cr_assert_eq(cmd_bench((int)(sizeof args / sizeof args[0]), args), 0, "bench workloads");
    fflush(stdout);
    FILE *f = cr_get_redirected_stdout();
    char line[1024], res[3][1024];
    int n = 0, gemm_na = 0;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "result ", 7) && n < 3) snprintf(res[n++], sizeof res[0], "%s", line);
        gemm_na += !strncmp(line, "gemm       n/a", 14);
    }
    cr_assert_eq(n, 3, "%d result lines", n);
    cr_expect(strstr(res[0], " tokens=32 seqs=4 ") && strstr(res[0], " workload=seq:8 budget=32 "),
              "%s", res[0]);
    cr_expect(strstr(res[1], " tokens=40 seqs=1 ") && strstr(res[1], " steps=2 chunks=2 "),
              "over the budget of 32: two chunks: %s", res[1]);
    cr_expect(strstr(res[2], " workload=mix:3:9,batch=20,iters=2 ") &&
                  strstr(res[2], " graphs=n/a"),
              "%s", res[2]);
    cr_expect_eq(gemm_na, 3, "cpu workloads say gemm n/a");
}

Test(bench, runs_on_cpu_backend, .init = cr_redirect_stdout, .timeout = 300) {
    SKIP_UNLESS_EXISTS(TINY_MODEL "/config.json");
    char *args[] = {"bench", "--model",        TINY_MODEL, "--backend", "cpu", "--mix",
                    "3:40",  "--batch-tokens", "96",       "--iters",   "2",   "--warmup",
                    "1"};
    cr_assert_eq(cmd_bench((int)(sizeof args / sizeof args[0]), args), 0,
                 "bench on the cpu backend");
    fflush(stdout);
    FILE *f = cr_get_redirected_stdout();
    char line[1024];
    int tokens = -1, seqs = -1;
    double tps = -1, tflops = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "result ", 7) == 0)
            sscanf(
                line,
                "result backend=cpu tokens=%d seqs=%d ms_per_step=%*f tokens_per_s=%lf tflops=%lf",
                &tokens, &seqs, &tps, &tflops);
    }
    cr_expect(tokens > 0 && tokens <= 96, "tokens %d", tokens);
    cr_expect(seqs >= 2, "seqs %d", seqs);
    cr_expect(tps > 0 && tflops > 0, "tokens/s %g TFLOP/s %g", tps, tflops);
}
