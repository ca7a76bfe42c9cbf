/* cmd_bench.c — `qembed bench`: times the engine (qe_embed_ids, any backend) on synthetic packed
 * batches of random ids after a warm-up, and prints geometry, dtype, tokens/s, ms per step and
 * achieved TFLOP/s against the measured H100 bf16 GEMM ceiling. --profile sets QE_PROFILE=1 so the
 * CUDA backend prints a per-op breakdown when the engine closes.
 *
 * FLOPs per step = sum over sequences of L * 2 * (linear parameters)
 *                + layers * 4 * (L/2) * heads * head_dim * L   (causal attention: QK^T and PV). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef QE_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "../runtime/qembed.h"
#include "../weights/config.h"
#include "commands.h"
#include "flags.h"

#define BENCH_CEILING_TFLOPS 750.0 /* cuBLAS bf16 GEMM on the H100, docs/DEVICE.md */
#define END_TOKEN 151643

/* FLOPs of one forward over sequences of the given lengths (see the header comment). */
double bench_step_flops(const qe_config *c, const int *lens, int n) {
    const double linear = 2.0 * (double)cfg_linear_params(c);
    const double attn_per_tok_per_pos = 2.0 * c->num_heads * c->head_dim * c->num_layers;
    double f = 0;
    for (int i = 0; i < n; i++) {
        const double L = lens[i];
        f += L * linear + L * L * attn_per_tok_per_pos; /* 4 * (L/2) * H * hd per token, layer */
    }
    return f;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: qembed bench --model DIR [--backend cuda|cpu] [--seq-len N | --mix MIN:MAX]\n"
            "                    [--batch-tokens N] [--iters N] [--warmup N] [--seed N]\n"
            "                    [--dims N] [--profile]\n\n"
            "Times qe_embed_ids on random-id batches packed up to the token budget.\n"
            "  --model DIR        model folder (e.g. from qembed make-random)\n"
            "  --backend B        cuda (default when built with CUDA) or cpu\n"
            "  --seq-len N        every sequence N tokens (default 512)\n"
            "  --mix MIN:MAX      sequence lengths uniform in [MIN, MAX]\n"
            "  --batch-tokens N   tokens per step, also the engine's max_batch_tokens\n"
            "                     (default 16384 on cuda, 1024 on cpu)\n"
            "  --iters N          timed steps (default 10)\n"
            "  --warmup N         untimed steps first (default 2)\n"
            "  --seed N           random ids and lengths (default 1)\n"
            "  --dims N           Matryoshka output width (default: full)\n"
            "  --profile          per-op GPU time breakdown at exit (QE_PROFILE=1)\n");
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static uint64_t bench_rng;
static uint32_t rnd(void) {
    bench_rng ^= bench_rng << 13;
    bench_rng ^= bench_rng >> 7;
    bench_rng ^= bench_rng << 17;
    return (uint32_t)(bench_rng >> 16);
}

int cmd_bench(int argc, char **argv) {
    const char *model = NULL;
    qe_backend backend =
#ifdef QE_HAVE_CUDA
        QE_BACKEND_CUDA;
#else
        QE_BACKEND_CPU;
#endif
    int seq_len = 512, mix_min = 0, mix_max = 0, batch_tokens = 0, iters = 10, warmup = 2;
    int seed = 1, dims = 0, profile = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--profile")) {
            profile = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "qembed bench: %s needs a value (see --help)\n", a);
            return 2;
        }
        i++;
        int bad = 0;
        if (!strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "--backend")) {
            if (!strcmp(v, "cpu"))
                backend = QE_BACKEND_CPU;
            else if (!strcmp(v, "cuda"))
                backend = QE_BACKEND_CUDA;
            else
                bad = 1;
        } else if (!strcmp(a, "--seq-len"))
            bad = flag_int("bench", a, v, 1, 1000000000, &seq_len) ? 2 : 0;
        else if (!strcmp(a, "--mix"))
            bad = sscanf(v, "%d:%d", &mix_min, &mix_max) != 2 || mix_min < 1 || mix_max < mix_min;
        else if (!strcmp(a, "--batch-tokens"))
            bad = flag_int("bench", a, v, 1, 1000000000, &batch_tokens) ? 2 : 0;
        else if (!strcmp(a, "--iters"))
            bad = flag_int("bench", a, v, 1, 1000000000, &iters) ? 2 : 0;
        else if (!strcmp(a, "--warmup"))
            bad = flag_int("bench", a, v, 0, 1000000000, &warmup) ? 2 : 0;
        else if (!strcmp(a, "--seed"))
            bad = flag_int("bench", a, v, 0, 1000000000, &seed) ? 2 : 0;
        else if (!strcmp(a, "--dims"))
            bad = flag_int("bench", a, v, 0, 1000000000, &dims) ? 2 : 0;
        else {
            fprintf(stderr, "qembed bench: unknown option %s (see --help)\n", a);
            return 2;
        }
        if (bad == 1) /* 2: flag_int said why */
            fprintf(stderr, "qembed bench: bad value '%s' for %s (see --help)\n", v, a);
        if (bad) return 2;
    }
    if (!model) {
        fprintf(stderr, "qembed bench: --model DIR is required\n");
        usage(stderr);
        return 2;
    }
    if (!batch_tokens) batch_tokens = backend == QE_BACKEND_CUDA ? 16384 : 1024;

    qe_config cfg;
    char err[1024] = "";
    if (cfg_load(model, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "qembed bench: %s\n", err);
        return 1;
    }

    /* The batch: fixed lengths, or a uniform mix, packed up to the budget (at least one). */
    bench_rng = 0x9E3779B97F4A7C15ull ^ (uint64_t)(seed + 1) * 0x2545F4914F6CDD1Dull;
    int cap = batch_tokens + 1, n = 0, tokens = 0;
    int *lens = malloc(sizeof(int) * (size_t)cap);
    if (!lens) return 1;
    for (;;) {
        int L = mix_min ? mix_min + (int)(rnd() % (uint32_t)(mix_max - mix_min + 1)) : seq_len;
        if (n > 0 && tokens + L > batch_tokens) break;
        lens[n++] = L;
        tokens += L;
        if (n == cap) break;
    }
    const int max_tokens = tokens > batch_tokens ? tokens : batch_tokens;
    int32_t **ids = calloc((size_t)n, sizeof *ids);
    for (int i = 0; ids && i < n; i++) {
        ids[i] = malloc(sizeof(int32_t) * (size_t)lens[i]);
        if (!ids[i]) return 1;
        for (int t = 0; t < lens[i]; t++)
            ids[i][t] = (int32_t)(rnd() % (uint32_t)cfg.vocab_size);
        if (cfg.vocab_size > END_TOKEN) ids[i][lens[i] - 1] = END_TOKEN;
    }
    if (!ids) return 1;

    if (profile) setenv("QE_PROFILE", "1", 1);
    qe_options opt;
    memset(&opt, 0, sizeof opt);
    opt.model_dir = model;
    opt.backend = backend;
    opt.max_batch_tokens = max_tokens;
    qe_engine *e = NULL;
    qe_status st = qe_open(&opt, &e, err, sizeof err);
    if (st != QE_OK) {
        fprintf(stderr, "qembed bench: cannot open %s: %s\n", model, err);
        return 1;
    }
    const int out_dims = dims ? dims : qe_dim(e);
    float *out = malloc(sizeof(float) * (size_t)n * out_dims);
    double *times = malloc(sizeof(double) * (size_t)iters);
    int rc = 0;
    if (!out || !times) {
        rc = 1;
        goto done;
    }
    for (int it = 0; it < warmup + iters; it++) {
        double t0 = now_s();
        st = qe_embed_ids(e, (const int32_t *const *)ids, lens, n, dims, out);
        double t1 = now_s();
        if (st != QE_OK) {
            fprintf(stderr, "qembed bench: step failed: %s\n", qe_last_error(e));
            rc = 1;
            goto done;
        }
        if (it >= warmup) times[it - warmup] = t1 - t0;
    }
    qsort(times, (size_t)iters, sizeof *times, cmp_double);
    const double med = times[iters / 2], best = times[0];
    const double flops = bench_step_flops(&cfg, lens, n);
    const double tflops = flops / med / 1e12;
    char when[64];
    time_t tnow = time(NULL);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", gmtime(&tnow));

    printf("qembed bench  %s\n", when);
    printf("model      %s\n", model);
    printf("geometry   hidden %d, layers %d, heads %d/%d x %d, intermediate %d, vocab %d "
           "(%.1f M linear params)\n",
           cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
           cfg.intermediate_size, cfg.vocab_size, (double)cfg_linear_params(&cfg) / 1e6);
    printf("backend    %s (%s)\n", qe_backend_name(e),
           backend == QE_BACKEND_CUDA ? "bf16 weights and GEMM inputs, fp32 accumulate" : "fp32");
    printf("checkpoint %s\n", cfg.torch_dtype);
#ifdef QE_HAVE_CUDA
    if (backend == QE_BACKEND_CUDA) {
        struct cudaDeviceProp prop;
        size_t fr = 0, tot = 0;
        if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess &&
            cudaMemGetInfo(&fr, &tot) == cudaSuccess)
            printf("gpu        %s, %d SMs, %.1f GiB (%.1f GiB free)\n", prop.name,
                   prop.multiProcessorCount, (double)tot / 1073741824.0, (double)fr / 1073741824.0);
    }
#endif
    if (mix_min)
        printf("batch      %d sequences, lengths %d..%d, %d tokens (budget %d)\n", n, mix_min,
               mix_max, tokens, batch_tokens);
    else
        printf("batch      %d sequences x %d tokens = %d tokens (budget %d)\n", n, seq_len, tokens,
               batch_tokens);
    printf("steps      %d timed after %d warm-up\n", iters, warmup);
    printf("time       %.3f ms per step (median), %.3f ms best\n", med * 1e3, best * 1e3);
    printf("throughput %.0f tokens/s (median), %.0f tokens/s best\n", tokens / med, tokens / best);
    printf("compute    %.3f GFLOP per step, %.2f TFLOP/s", flops / 1e9, tflops);
    if (backend == QE_BACKEND_CUDA)
        printf(" = %.1f%% of the %.0f TFLOP/s bf16 ceiling", 100.0 * tflops / BENCH_CEILING_TFLOPS,
               BENCH_CEILING_TFLOPS);
    printf("\n");
    printf("result backend=%s tokens=%d seqs=%d ms_per_step=%.4f tokens_per_s=%.1f tflops=%.4f\n",
           qe_backend_name(e), tokens, n, med * 1e3, tokens / med, tflops);
    fflush(stdout);
done:
    qe_close(e); /* prints the per-op profile when QE_PROFILE=1 */
    free(out);
    free(times);
    for (int i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
    free(lens);
    return rc;
}
