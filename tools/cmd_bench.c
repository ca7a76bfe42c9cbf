/* cmd_bench.c — `qembed bench`: times the engine (qe_embed_ids, any backend) on synthetic packed
 * batches of random ids after a warm-up, and prints geometry, dtype, tokens/s, ms per call and
 * achieved TFLOP/s against the measured H100 bf16 GEMM ceiling. One engine runs several workloads
 * (--workload, repeatable), so a large model is loaded once for all of them; each workload ends
 * with one `result key=value ...` line. --profile sets QE_PROFILE=1 so the CUDA backend prints a
 * per-op breakdown when the engine closes; a workload's profile=1 profiles that workload alone.
 *
 * The engine's step budget (max_batch_tokens) is exactly --batch-tokens, as in the server: a
 * sequence longer than half of it runs in chunks through the paged K/V pool (both backends) and
 * a call holding more tokens runs as several steps. Each workload reports the steps and chunks
 * the engine ran; with the CUDA backend also the CUDA graphs captured, replayed and refused, and
 * the cuBLASLt algorithm of each GEMM shape (qembed_debug.h).
 *
 * FLOPs per call = sum over sequences of L * 2 * (linear parameters)
 *                + layers * 4 * (L/2) * heads * head_dim * L   (causal attention: QK^T and PV). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef QE_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "../kernels/kernels.h"
#endif

#include "../runtime/cpu_gemm.h"
#include "../runtime/qembed.h"
#include "../runtime/qembed_debug.h"
#include "../weights/config.h"
#include "../weights/model.h"
#include "bench_dp.h"
#include "commands.h"
#include "flags.h"

#define BENCH_CEILING_TFLOPS 750.0 /* cuBLAS bf16 GEMM on the H100, docs/DEVICE.md */
#define END_TOKEN 151643
#define MAX_WORKLOADS 32
#define MAX_PLANS 256
#define BIG 1000000000

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
    fprintf(
        f,
        "usage: qembed bench --model DIR|FILE.gguf [--backend cuda|cpu] [--seq-len N | --mix "
        "MIN:MAX |\n"
        "                    --workload SPEC ...] [--batch-tokens N] [--iters N] [--warmup N]\n"
        "                    [--seed N] [--dims N] [--kv-pool-tokens N] [--tensor-parallel N]\n"
        "                    [--devices LIST]\n"
        "                    [--profile]\n\n"
        "Times qe_embed_ids on random-id batches; the model is opened once for every workload.\n"
        "  --model DIR        model folder (e.g. from qembed make-random)\n"
        "  --backend B        cuda (default when built with CUDA) or cpu\n"
        "  --seq-len N        one workload: every sequence N tokens (default 512)\n"
        "  --mix MIN:MAX      one workload: sequence lengths uniform in [MIN, MAX]\n"
        "  --workload SPEC    a workload (repeatable, at most 32, run in order; not with\n"
        "                     --seq-len or --mix): seq:N or mix:MIN:MAX, then any of\n"
        "                       ,batch=N    tokens packed per call (default --batch-tokens)\n"
        "                       ,iters=N    timed calls (default --iters)\n"
        "                       ,warmup=N   untimed calls first (default --warmup)\n"
        "                       ,dims=N     Matryoshka output width (default --dims)\n"
        "                       ,graphs=0   CUDA graphs off for this workload (1: on, the "
        "default)\n"
        "                       ,profile=1  per-op GPU time of the timed calls (CUDA; steps then\n"
        "                                   run one at a time, without graphs)\n"
        "                       ,attn=NAME  attention variant (CUDA; fa2, m128, fa3: QE_ATTN)\n"
        "                       ,gemm=NAME  GEMM path (CUDA; cublaslt, skinny, fused, fused-skinny:\n"
        "                                   QE_GEMM)\n"
        "                       ,pdl=0|1    programmatic dependent launch (CUDA; QE_PDL)\n"
        "                     e.g. --workload seq:512 --workload mix:16:512\n"
        "                          --workload seq:32768,iters=3,warmup=1\n"
        "                          --workload seq:24,batch=24,iters=50,graphs=0\n"
        "                          --workload seq:512,attn=fa3 --workload "
        "seq:24,batch=24,gemm=skinny\n"
        "  --batch-tokens N   the engine's step budget (max_batch_tokens), exactly: a sequence\n"
        "                     longer than half of it runs in chunks through the K/V pool, a\n"
        "                     larger call in several steps; also the default tokens per call\n"
        "                     (default 16384 on cuda, 1024 on cpu)\n"
        "  --kv-pool-tokens N the paged K/V pool's size (default: the model's positions, halved\n"
        "                     until it fits); with --batch-tokens it sizes what the device holds\n"
        "  --iters N          timed calls (default 10)\n"
        "  --warmup N         untimed calls first (default 2)\n"
        "  --seed N           random ids and lengths (default 1)\n"
        "  --dims N           Matryoshka output width (default: full)\n"
        "  --tensor-parallel N  each layer split over N ranks (on cuda one GPU each, over\n"
        "                     NCCL; the result line says tp=N). Each workload is timed first\n"
        "                     on one rank (the first device), and a result_tp line gives the\n"
        "                     speedup and scaling efficiency against it\n"
        "  --devices LIST     data parallel: one engine per entry, or per N entries with\n"
        "                     --tensor-parallel N (CUDA devices 0,1 or 0-3; a repeat puts two\n"
        "                     engines on one GPU); after the one-engine timing every workload\n"
        "                     runs on all of them at once, and a result_dp line gives their\n"
        "                     tokens/s and the scaling efficiency against one\n"
        "  --profile          per-op GPU time of every call, printed at exit (QE_PROFILE=1)\n\n"
        "Each workload ends with one line\n"
        "  result backend=B tokens=N seqs=N ms_per_step=X tokens_per_s=X tflops=X workload=SPEC\n"
        "         budget=N steps=N chunks=N graphs=on|off|n/a [captures=N replays=N refused=N]\n"
        "(one line; ms_per_step is the median time of one call, which is one step when the call\n"
        "fits the budget; steps and chunks are per call), then with --tensor-parallel\n"
        "  result_tp ranks=N tokens_per_s=X one_rank_tokens_per_s=X speedup=X efficiency=X ...\n"
        "and with --devices\n"
        "  result_dp devices=N tokens_per_s=X one_engine_tokens_per_s=X efficiency=X ...\n");
}

/* ---------------------------------------------------------------- options */

typedef struct bench_workload {
    char spec[128];                /* as given, or made from --seq-len / --mix */
    int seq_len, mix_min, mix_max; /* mix_min 0: every sequence seq_len tokens */
    int batch;                     /* tokens packed per call; 0: the engine budget */
    int iters, warmup, dims;
    int graphs; /* 1 on (the default), 0 off */
    int profile;
    int attn, gemm, pdl; /* kernel switches for this workload (CUDA); -1: the process's */
} bench_workload;

typedef struct bench_args {
    const char *model;
    qe_backend backend;
    int seq_len, mix_min, mix_max, seq_given, batch_tokens, iters, warmup, seed, dims, profile;
    int kv_pool_tokens;         /* 0: the engine's default */
    int tensor_parallel;        /* qe_options.tensor_parallel (1: none) */
    int devices[16], n_devices; /* --devices: one engine per entry (per tp entries), timed
                                 * together too */
    int n_engines;              /* n_devices / tensor_parallel */
    qe_engine **engines;        /* [n_engines] once open; engines[0] is the one timed alone */
    /* tensor_parallel > 1: each workload's median call on one rank (the same engine with
     * tensor_parallel 1 on the first device), timed first; 0 where it could not run */
    double one_rank_s[MAX_WORKLOADS];
    int n_specs;
    const char *specs[MAX_WORKLOADS];
} bench_args;

/* "MIN:MAX" with 1 <= MIN <= MAX; 2 (after one line naming flag) when it is not. */
static int parse_range(const char *flag, const char *v, int *lo, int *hi) {
    char buf[64];
    const char *colon = strchr(v, ':');
    if (!colon || (size_t)(colon - v) >= sizeof buf) {
        fprintf(stderr, "qembed bench: %s wants MIN:MAX, got '%s'\n", flag, v);
        return 2;
    }
    memcpy(buf, v, (size_t)(colon - v));
    buf[colon - v] = '\0';
    if (flag_int("bench", flag, buf, 1, BIG, lo) || flag_int("bench", flag, colon + 1, 1, BIG, hi))
        return 2;
    if (*hi < *lo) {
        fprintf(stderr, "qembed bench: %s wants MIN <= MAX, got '%s'\n", flag, v);
        return 2;
    }
    return 0;
}

/* attn=NAME, gemm=NAME or pdl=0|1: a kernel switch for one workload (docs/kernels.md), instead
 * of the process's QE_ATTN / QE_GEMM / QE_PDL, so one engine times every variant. */
static int parse_switch(const char *k, const char *v, const char *spec, bench_workload *w) {
#ifdef QE_HAVE_CUDA
    if (!strcmp(k, "pdl")) return flag_int("bench", "--workload pdl", v, 0, 1, &w->pdl) ? 2 : 0;
    const int attn = !strcmp(k, "attn"), n = attn ? QE_ATTN_VARIANTS : QE_GEMM_PATHS;
    char names[256] = "";
    for (int i = 0; i < n; i++) {
        const char *name = attn ? qe_attention_variant_name(i) : qe_gemm_path_name(i);
        if (!strcmp(v, name)) {
            *(attn ? &w->attn : &w->gemm) = i;
            return 0;
        }
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "", name);
    }
    fprintf(stderr, "qembed bench: --workload %s=%s in '%s': no such %s (%s)\n", k, v, spec,
            attn ? "attention variant" : "GEMM path", names);
#else
    (void)v, (void)w;
    fprintf(stderr, "qembed bench: --workload %s in '%s' needs a build with CUDA\n", k, spec);
#endif
    return 2;
}

/* Sets the workload's kernel switches (on), or returns to the process's (off). The CUDA
 * backend's graphs are keyed by them (cuda_graph.c), so no stale graph replays. */
static void apply_switches(const bench_workload *w, int on) {
#ifdef QE_HAVE_CUDA
    if (w->attn >= 0) qe_attention_select(on ? w->attn : -1);
    if (w->gemm >= 0) qe_gemm_select(on ? w->gemm : -1);
    if (w->pdl >= 0) qe_pdl_select(on ? w->pdl : -1);
#else
    (void)w, (void)on;
#endif
}

/* One ",key=value" item of a workload spec. */
static int parse_workload_key(char *item, const char *spec, bench_workload *w) {
    char *eq = strchr(item, '=');
    if (!eq) {
        fprintf(stderr, "qembed bench: --workload wants key=value items, got '%s' in '%s'\n", item,
                spec);
        return 2;
    }
    *eq = '\0';
    const char *k = item, *v = eq + 1;
    if (!strcmp(k, "batch"))
        return flag_int("bench", "--workload batch", v, 1, BIG, &w->batch) ? 2 : 0;
    if (!strcmp(k, "iters"))
        return flag_int("bench", "--workload iters", v, 1, BIG, &w->iters) ? 2 : 0;
    if (!strcmp(k, "warmup"))
        return flag_int("bench", "--workload warmup", v, 0, BIG, &w->warmup) ? 2 : 0;
    if (!strcmp(k, "dims"))
        return flag_int("bench", "--workload dims", v, 0, BIG, &w->dims) ? 2 : 0;
    if (!strcmp(k, "graphs"))
        return flag_int("bench", "--workload graphs", v, 0, 1, &w->graphs) ? 2 : 0;
    if (!strcmp(k, "profile"))
        return flag_int("bench", "--workload profile", v, 0, 1, &w->profile) ? 2 : 0;
    if (!strcmp(k, "attn") || !strcmp(k, "gemm") || !strcmp(k, "pdl"))
        return parse_switch(k, v, spec, w);
    fprintf(stderr,
            "qembed bench: --workload: unknown key '%s' in '%s' (keys: batch, iters, warmup, "
            "dims, graphs, profile, attn, gemm, pdl)\n",
            k, spec);
    return 2;
}

/* "seq:N" or "mix:MIN:MAX", then ",key=value" items; w starts as the defaults. */
static int parse_workload(const char *spec, bench_workload *w) {
    char buf[sizeof w->spec];
    if (strlen(spec) >= sizeof buf) {
        fprintf(stderr, "qembed bench: --workload wants at most %zu characters, got '%s'\n",
                sizeof buf - 1, spec);
        return 2;
    }
    snprintf(w->spec, sizeof w->spec, "%s", spec);
    snprintf(buf, sizeof buf, "%s", spec);
    char *rest = strchr(buf, ',');
    if (rest) *rest++ = '\0';
    int bad = 0;
    if (!strncmp(buf, "seq:", 4)) {
        bad = flag_int("bench", "--workload seq", buf + 4, 1, BIG, &w->seq_len) ? 2 : 0;
        w->mix_min = w->mix_max = 0;
    } else if (!strncmp(buf, "mix:", 4)) {
        bad = parse_range("--workload mix", buf + 4, &w->mix_min, &w->mix_max);
    } else {
        fprintf(stderr, "qembed bench: --workload wants seq:N or mix:MIN:MAX first, got '%s'\n",
                spec);
        return 2;
    }
    for (char *item = rest; !bad && item;) {
        char *next = strchr(item, ',');
        if (next) *next++ = '\0';
        bad = parse_workload_key(item, spec, w);
        item = next;
    }
    return bad;
}

/* A flag with a value; 0 done, 2 bad (a line on stderr said why), -1 not a value flag. */
static int parse_value_flag(bench_args *a, const char *f, const char *v) {
    if (!strcmp(f, "--model")) {
        a->model = v;
    } else if (!strcmp(f, "--backend")) {
        return flag_backend("bench", v, &a->backend) ? 2 : 0;
    } else if (!strcmp(f, "--seq-len")) {
        a->seq_given = 1;
        return flag_int("bench", f, v, 1, BIG, &a->seq_len) ? 2 : 0;
    } else if (!strcmp(f, "--mix")) {
        a->seq_given = 1;
        return parse_range(f, v, &a->mix_min, &a->mix_max);
    } else if (!strcmp(f, "--workload")) {
        if (a->n_specs == MAX_WORKLOADS) {
            fprintf(stderr, "qembed bench: --workload given more than %d times\n", MAX_WORKLOADS);
            return 2;
        }
        a->specs[a->n_specs++] = v;
    } else if (!strcmp(f, "--batch-tokens")) {
        return flag_int("bench", f, v, 1, BIG, &a->batch_tokens) ? 2 : 0;
    } else if (!strcmp(f, "--kv-pool-tokens")) {
        return flag_int("bench", f, v, 1, BIG, &a->kv_pool_tokens) ? 2 : 0;
    } else if (!strcmp(f, "--iters")) {
        return flag_int("bench", f, v, 1, BIG, &a->iters) ? 2 : 0;
    } else if (!strcmp(f, "--warmup")) {
        return flag_int("bench", f, v, 0, BIG, &a->warmup) ? 2 : 0;
    } else if (!strcmp(f, "--seed")) {
        return flag_int("bench", f, v, 0, BIG, &a->seed) ? 2 : 0;
    } else if (!strcmp(f, "--devices")) {
        return flag_devices("bench", v, a->devices, 16, &a->n_devices) ? 2 : 0;
    } else if (!strcmp(f, "--tensor-parallel")) {
        return flag_int("bench", f, v, 1, 64, &a->tensor_parallel) ? 2 : 0;
    } else if (!strcmp(f, "--dims")) {
        return flag_int("bench", f, v, 0, BIG, &a->dims) ? 2 : 0;
    } else {
        return -1;
    }
    return 0;
}

/* 0: run; 1: --help printed (exit 0); 2: bad usage (a line on stderr said why). */
static int parse_args(int argc, char **argv, bench_args *a) {
    memset(a, 0, sizeof *a);
#ifdef QE_HAVE_CUDA
    a->backend = QE_BACKEND_CUDA;
#else
    a->backend = QE_BACKEND_CPU;
#endif
    a->seq_len = 512, a->iters = 10, a->warmup = 2, a->seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage(stdout);
            return 1;
        }
        if (!strcmp(f, "--profile")) {
            a->profile = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "qembed bench: %s needs a value, or is no option (see --help)\n", f);
            return 2;
        }
        i++;
        const int rc = parse_value_flag(a, f, v);
        if (rc == -1) fprintf(stderr, "qembed bench: unknown option %s (see --help)\n", f);
        if (rc) return 2;
    }
    if (!a->model) {
        fprintf(stderr, "qembed bench: --model DIR is required\n");
        usage(stderr);
        return 2;
    }
    if (a->seq_given && a->n_specs) {
        fprintf(stderr, "qembed bench: --seq-len / --mix describe the one workload; with "
                        "--workload give every workload as one\n");
        return 2;
    }
    if (!a->batch_tokens) a->batch_tokens = a->backend == QE_BACKEND_CUDA ? 16384 : 1024;
    return 0;
}

/* The workloads: each --workload, or the one of --seq-len / --mix. */
static int make_workloads(const bench_args *a, bench_workload *w, int *n) {
    bench_workload def;
    memset(&def, 0, sizeof def);
    def.seq_len = a->seq_len, def.mix_min = a->mix_min, def.mix_max = a->mix_max;
    def.iters = a->iters, def.warmup = a->warmup, def.dims = a->dims, def.graphs = 1;
    def.attn = def.gemm = def.pdl = -1;
    if (!a->n_specs) {
        w[0] = def;
        if (a->mix_min)
            snprintf(w[0].spec, sizeof w[0].spec, "mix:%d:%d", a->mix_min, a->mix_max);
        else
            snprintf(w[0].spec, sizeof w[0].spec, "seq:%d", a->seq_len);
        *n = 1;
        return 0;
    }
    for (int i = 0; i < a->n_specs; i++) {
        w[i] = def;
        if (parse_workload(a->specs[i], &w[i])) return 2;
    }
    *n = a->n_specs;
    return 0;
}

/* ---------------------------------------------------------------- one workload's batch */

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

typedef struct bench_batch {
    int n, tokens;
    int *lens;
    int32_t **ids;
} bench_batch;

static void batch_free(bench_batch *b) {
    for (int i = 0; b->ids && i < b->n; i++)
        free(b->ids[i]);
    free(b->ids);
    free(b->lens);
    memset(b, 0, sizeof *b);
}

/* Fixed lengths or a uniform mix, packed up to budget tokens (at least one sequence), random ids
 * ending in the end token. Every workload starts from the same seed. */
static int batch_make(bench_batch *b, const bench_workload *w, int budget, int seed,
                      const qe_config *cfg) {
    memset(b, 0, sizeof *b);
    bench_rng = 0x9E3779B97F4A7C15ull ^ (uint64_t)(seed + 1) * 0x2545F4914F6CDD1Dull;
    const int cap = budget / (w->mix_min ? w->mix_min : w->seq_len) + 1; /* most that fit */
    b->lens = malloc(sizeof(int) * (size_t)cap);
    if (!b->lens) return -1;
    for (;;) {
        int L = w->mix_min ? w->mix_min + (int)(rnd() % (uint32_t)(w->mix_max - w->mix_min + 1))
                           : w->seq_len;
        if (b->n > 0 && b->tokens + L > budget) break;
        b->lens[b->n++] = L;
        b->tokens += L;
        if (b->n == cap) break;
    }
    b->ids = calloc((size_t)b->n, sizeof *b->ids);
    if (!b->ids) return -1;
    for (int i = 0; i < b->n; i++) {
        b->ids[i] = malloc(sizeof(int32_t) * (size_t)b->lens[i]);
        if (!b->ids[i]) return -1;
        for (int t = 0; t < b->lens[i]; t++)
            b->ids[i][t] = (int32_t)(rnd() % (uint32_t)cfg->vocab_size);
        if (cfg->vocab_size > END_TOKEN) b->ids[i][b->lens[i] - 1] = END_TOKEN;
    }
    return 0;
}

/* ---------------------------------------------------------------- printing */

static void print_header(qe_engine *e, const bench_args *a, const qe_config *cfg) {
    char when[64];
    time_t tnow = time(NULL);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", gmtime(&tnow));
    const int cuda = a->backend == QE_BACKEND_CUDA;
    printf("qembed bench  %s\n", when);
    printf("model      %s\n", a->model);
    printf("geometry   hidden %d, layers %d, heads %d/%d x %d, intermediate %d, vocab %d "
           "(%.1f M linear params)\n",
           cfg->hidden_size, cfg->num_layers, cfg->num_heads, cfg->num_kv_heads, cfg->head_dim,
           cfg->intermediate_size, cfg->vocab_size, (double)cfg_linear_params(cfg) / 1e6);
    printf("backend    %s (%s)\n", qe_backend_name(e),
           cuda ? "bf16 weights and GEMM inputs, fp32 accumulate" : "fp32");
    printf("checkpoint %s\n", cfg->torch_dtype);
#ifdef QE_HAVE_CUDA
    if (cuda) {
        struct cudaDeviceProp prop;
        size_t fr = 0, tot = 0;
        if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess &&
            cudaMemGetInfo(&fr, &tot) == cudaSuccess)
            printf("gpu        %s, %d SMs, %.1f GiB (%.1f GiB free)\n", prop.name,
                   prop.multiProcessorCount, (double)tot / 1073741824.0, (double)fr / 1073741824.0);
    }
#endif
    printf("engine     max_batch_tokens %d (--batch-tokens), K/V pool of %d tokens\n",
           a->batch_tokens, qe_kv_pool_tokens(e));
    if (qe_device_bytes(e) > 0)
        printf("device     %.2f GiB held (weights, activation arena, K/V pool)\n",
               (double)qe_device_bytes(e) / 1073741824.0);
}

static void print_batch(const bench_workload *w, const bench_batch *b, int budget) {
    if (w->mix_min)
        printf("batch      %d sequences, lengths %d..%d, %d tokens per call\n", b->n, w->mix_min,
               w->mix_max, b->tokens);
    else
        printf("batch      %d sequence%s x %d tokens = %d tokens per call\n", b->n,
               b->n == 1 ? "" : "s", w->seq_len, b->tokens);
    int longest = 0;
    for (int i = 0; i < b->n; i++)
        if (b->lens[i] > longest) longest = b->lens[i];
    printf("steps      under the budget of %d tokens", budget);
    if (longest > budget / 2)
        printf(": sequences longer than %d run in chunks through the K/V pool", budget / 2);
    printf(" (the result line counts them)\n");
    printf("calls      %d timed after %d warm-up\n", w->iters, w->warmup);
}

/* What the shape of a plan is in the forward (by its n and k). */
static const char *gemm_role(const qe_config *c, const qe_debug_gemm_plan *p) {
    const int H = c->hidden_size, q = c->num_heads * c->head_dim,
              kv = c->num_kv_heads * c->head_dim;
    if (p->n == q + 2 * kv && p->k == H) return "qkv";
    if (p->n == 2 * c->intermediate_size && p->k == H) return "gate_up";
    if (p->n == H && p->k == q) return "o_proj";
    if (p->n == H && p->k == c->intermediate_size) return "down";
    return "other";
}

typedef struct plan_list {
    int n;
    qe_debug_gemm_plan p[MAX_PLANS];
} plan_list;

static void plans_get(qe_engine *e, plan_list *l) {
    const int n = qe_debug_gemm_plans(e, l->p, MAX_PLANS);
    l->n = n < MAX_PLANS ? n : MAX_PLANS;
}

/* Calls of plan i of after since before (a slot reused by another shape counts from 0). */
static long long plan_delta(const plan_list *before, const plan_list *after, int i) {
    const qe_debug_gemm_plan *a = &after->p[i];
    if (i < before->n) {
        const qe_debug_gemm_plan *b = &before->p[i];
        if (b->m == a->m && b->n == a->n && b->k == a->k && b->out_f32 == a->out_f32 &&
            b->accumulate == a->accumulate && b->calls <= a->calls)
            return a->calls - b->calls;
    }
    return a->calls;
}

static int role_rank(const char *role) {
    static const char *const order[] = {"qkv", "o_proj", "gate_up", "down"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(role, order[i])) return i;
    return 4;
}

typedef struct gemm_row {
    const qe_debug_gemm_plan *p;
    const char *role;
    long long calls;
} gemm_row;

/* Most rows first, then in forward order: a workload's main step before its last layer. */
static int cmp_gemm_row(const void *a_, const void *b_) {
    const gemm_row *a = a_, *b = b_;
    if (a->p->m != b->p->m) return a->p->m > b->p->m ? -1 : 1;
    return role_rank(a->role) - role_rank(b->role);
}

/* One line per GEMM plan the workload ran: its shape and what cuBLASLt chose. calls counts host
 * calls: a graph's capture calls each GEMM once, its replays make none. */
static void print_gemms(const qe_config *c, const plan_list *before, const plan_list *after) {
    gemm_row rows[MAX_PLANS];
    int n = 0;
    for (int i = 0; i < after->n; i++) {
        const long long calls = plan_delta(before, after, i);
        if (calls > 0) rows[n++] = (gemm_row){&after->p[i], gemm_role(c, &after->p[i]), calls};
    }
    qsort(rows, (size_t)n, sizeof *rows, cmp_gemm_row);
    for (int i = 0; i < n; i++) {
        const qe_debug_gemm_plan *p = rows[i].p;
        printf("gemm       %-7s m=%-6d n=%-6d k=%-6d %-6s algo=%d tile=%d stages=%d splitk=%d "
               "calls=%lld\n",
               rows[i].role, p->m, p->n, p->k,
               p->accumulate ? "fp32+=" : (p->out_f32 ? "fp32" : "bf16"), p->algo_id, p->tile_id,
               p->stages_id, p->splitk, rows[i].calls);
    }
}

static const char *graphs_word(const qe_debug_counters *after) {
    return !after->counted ? "n/a" : after->graphs_on ? "on" : "off";
}

/* Steps, chunks and graph activity of the workload (counter differences), one line. */
static void print_graphs(const bench_workload *w, const qe_debug_counters *b,
                         const qe_debug_counters *a) {
    if (!a->counted) {
        printf("graphs     n/a (no CUDA graphs on this backend)\n");
        return;
    }
    const long long steps = a->steps - b->steps, replays = a->graph_replays - b->graph_replays;
    printf("graphs     %s: %lld captured, %lld replayed, %lld refused, of %lld steps",
           graphs_word(a), a->graph_captures - b->graph_captures, replays,
           a->graph_refused - b->graph_refused, steps);
    if (a->graph_refused > b->graph_refused)
        printf(" (a capture was refused: graphs are off for the rest of this engine)");
    else if (!w->graphs)
        printf(" (graphs=0)");
    else if (w->profile)
        printf(" (off while profiling)");
    else if (!a->graphs_on)
        printf(" (unavailable: QE_CUDA_GRAPHS=0, QE_PROFILE=1 or an earlier refused capture)");
    else if (replays < steps)
        printf(" (chunks and steps over the graph size limit run kernel by kernel)");
    printf("\n");
}

/* ---------------------------------------------------------------- running */

typedef struct bench_timing {
    double med, best;
    long long steps, chunks; /* per call, from the counters (cuda) */
} bench_timing;

/* warmup + iters calls of the batch; times[] gets the timed ones. 0, or 1 after a failed call. */
static int time_calls(qe_engine *e, const bench_workload *w, const bench_batch *b, float *out,
                      double *times) {
    for (int it = 0; it < w->warmup + w->iters; it++) {
        if (w->profile && it == w->warmup && qe_debug_profile(e, 1) != QE_OK)
            printf("profile    n/a (%s)\n", qe_last_error(e));
        const double t0 = now_s();
        qe_status st = qe_embed_ids(e, (const int32_t *const *)b->ids, b->lens, b->n, w->dims, out);
        const double t1 = now_s();
        if (st != QE_OK) {
            fprintf(stderr, "qembed bench: workload %s: call failed: %s\n", w->spec,
                    qe_last_error(e));
            return 1;
        }
        if (it >= w->warmup) times[it - w->warmup] = t1 - t0;
    }
    return 0;
}

static void print_result(qe_engine *e, const qe_config *cfg, const bench_workload *w,
                         const bench_batch *b, int budget, int tp, const double *sorted,
                         const qe_debug_counters *before, const qe_debug_counters *after) {
    const double med = sorted[w->iters / 2], best = sorted[0];
    const double flops = bench_step_flops(cfg, b->lens, b->n), tflops = flops / med / 1e12;
    const int cuda = after->counted;
    printf("time       %.3f ms per call (median), %.3f ms best\n", med * 1e3, best * 1e3);
    printf("throughput %.0f tokens/s (median), %.0f tokens/s best\n", b->tokens / med,
           b->tokens / best);
    printf("compute    %.3f GFLOP per call, %.2f TFLOP/s", flops / 1e9, tflops);
    if (cuda)
        printf(" = %.1f%% of the %.0f TFLOP/s bf16 ceiling", 100.0 * tflops / BENCH_CEILING_TFLOPS,
               BENCH_CEILING_TFLOPS);
    printf("\n");
    /* what the engine counted, per call */
    const long long calls = w->warmup + w->iters;
    const long long steps = (after->steps - before->steps) / calls;
    const long long n_chunks = (after->chunks - before->chunks) / calls;
    printf("result backend=%s tokens=%d seqs=%d ms_per_step=%.4f tokens_per_s=%.1f tflops=%.4f "
           "workload=%s budget=%d steps=%lld chunks=%lld graphs=%s tp=%d",
           qe_backend_name(e), b->tokens, b->n, med * 1e3, b->tokens / med, tflops, w->spec, budget,
           steps, n_chunks, graphs_word(after), tp);
    if (cuda)
        printf(" captures=%lld replays=%lld refused=%lld",
               after->graph_captures - before->graph_captures,
               after->graph_replays - before->graph_replays,
               after->graph_refused - before->graph_refused);
#ifdef QE_HAVE_CUDA
    if (cuda) /* the kernel switches: QE_ATTN, QE_GEMM, QE_PDL (docs/kernels.md) */
        printf(" attn=%s gemm=%s pdl=%d", qe_attention_variant_name(qe_attention_variant()),
               qe_gemm_path_name(qe_gemm_path()), qe_pdl_enabled());
#endif
    printf("\n");
}

/* The workload on every engine at once (--devices): their tokens/s together against n times the
 * one engine's (one_s per call). 0 or 1. */
static int run_dp(const bench_args *a, const bench_workload *w, const bench_batch *b,
                  double one_s) {
    double med = 0;
    if (bench_dp_rounds(a->engines, a->n_engines, (const int32_t *const *)b->ids, b->lens, b->n,
                        w->dims, w->warmup, w->iters, &med))
        return 1;
    const int n = a->n_engines;
    const double one = b->tokens / one_s, all = (double)n * b->tokens / med;
    printf("dp         %d engines at once: %.0f tokens/s, %.2f x one engine (%.1f%% of linear)\n",
           n, all, all / one, 100.0 * all / (one * n));
    printf("result_dp devices=%d tokens_per_s=%.1f one_engine_tokens_per_s=%.1f efficiency=%.4f "
           "ms_per_round=%.4f workload=%s engines=%d\n",
           a->n_devices, all, one, all / (one * n), med * 1e3, w->spec, n);
    return 0;
}

/* Tensor parallel: the engine's tokens/s against one rank's (timed before it opened), the
 * speedup and the efficiency (speedup / ranks). */
static void print_tp(const bench_args *a, const bench_workload *w, const bench_batch *b, int index,
                     double tp_s) {
    const int n = a->tensor_parallel;
    const double one_s = a->one_rank_s[index];
    if (one_s <= 0) {
        printf("tp         %d ranks: no one-rank figure (it did not run: see above)\n", n);
        return;
    }
    const double speedup = one_s / tp_s;
    printf("tp         %d ranks: %.0f tokens/s, %.2f x one device (%.1f%% of linear)\n", n,
           b->tokens / tp_s, speedup, 100.0 * speedup / n);
    printf("result_tp ranks=%d tokens_per_s=%.1f one_rank_tokens_per_s=%.1f speedup=%.4f "
           "efficiency=%.4f ms_per_step=%.4f one_rank_ms_per_step=%.4f workload=%s\n",
           n, b->tokens / tp_s, b->tokens / one_s, speedup, speedup / n, tp_s * 1e3, one_s * 1e3,
           w->spec);
}

/* Before the tensor-parallel engine opens (a model split for want of memory may not fit twice):
 * every workload's median call on one rank, the first device, for print_tp. A model one device
 * cannot hold leaves the figures 0, said once. */
static void time_one_rank(bench_args *a, const qe_options *tp_opt, const bench_workload *w,
                          int n_work, const qe_config *cfg) {
    qe_options o = *tp_opt;
    o.tensor_parallel = 1, o.tp_devices = NULL;
    qe_engine *e = NULL;
    char err[1024] = "";
    if (qe_open(&o, &e, err, sizeof err) != QE_OK) {
        printf("tp         one rank does not open (%s): no scaling figures\n", err);
        return;
    }
    for (int i = 0; i < n_work; i++) {
        bench_batch b;
        const int dims = w[i].dims ? w[i].dims : qe_dim(e);
        double *times = malloc(sizeof(double) * (size_t)w[i].iters);
        float *out = NULL;
        if (batch_make(&b, &w[i], w[i].batch ? w[i].batch : a->batch_tokens, a->seed, cfg) == 0 &&
            times && (out = malloc(sizeof(float) * (size_t)b.n * (size_t)dims))) {
            bench_workload quiet = w[i];
            quiet.profile = 0;
            if (a->backend == QE_BACKEND_CUDA) qe_debug_set_graphs(e, w[i].graphs);
            apply_switches(&w[i], 1);
            const int rc = time_calls(e, &quiet, &b, out, times);
            apply_switches(&w[i], 0);
            if (rc == 0) {
                qsort(times, (size_t)w[i].iters, sizeof *times, cmp_double);
                a->one_rank_s[i] = times[w[i].iters / 2];
            }
        }
        free(out), free(times);
        batch_free(&b);
    }
    qe_close(e);
}

/* One workload on the open engine: its batch, its calls, its lines. 0 or 1 (a call failed). */
static int run_workload(qe_engine *e, const qe_config *cfg, const bench_args *a,
                        const bench_workload *w, int index, int count) {
    const int cuda = a->backend == QE_BACKEND_CUDA;
    bench_batch b;
    printf("\nworkload   %s (%d of %d)\n", w->spec, index + 1, count);
    if (batch_make(&b, w, w->batch ? w->batch : a->batch_tokens, a->seed, cfg) != 0) {
        batch_free(&b);
        fprintf(stderr, "qembed bench: out of host memory for workload %s\n", w->spec);
        return 1;
    }
    print_batch(w, &b, a->batch_tokens);
    const int out_dims = w->dims ? w->dims : qe_dim(e);
    float *out = malloc(sizeof(float) * (size_t)b.n * (size_t)out_dims);
    double *times = malloc(sizeof(double) * (size_t)w->iters);
    plan_list *plans = malloc(2 * sizeof *plans);
    int rc = 1;
    if (out && times && plans) {
        if (cuda) qe_debug_set_graphs(e, w->graphs);
        apply_switches(w, 1); /* on until the result lines are printed: they name them */
        qe_debug_counters before, after;
        qe_debug_counters_get(e, &before);
        plans_get(e, &plans[0]);
        rc = time_calls(e, w, &b, out, times);
        fflush(stdout); /* the profile report goes to stderr, after this workload's lines */
        if (w->profile && cuda) qe_debug_profile(e, 0);
        qe_debug_counters_get(e, &after);
        plans_get(e, &plans[1]);
        if (rc == 0) {
            qsort(times, (size_t)w->iters, sizeof *times, cmp_double);
            print_graphs(w, &before, &after);
            if (cuda)
                print_gemms(cfg, &plans[0], &plans[1]);
            else
                printf("gemm       n/a (no cuBLASLt plans on cpu; its GEMMs: %s)\n",
                       cpu_gemm_library());
            print_result(e, cfg, w, &b, a->batch_tokens,
                         a->tensor_parallel > 1 ? a->tensor_parallel : 1, times, &before, &after);
            if (a->tensor_parallel > 1) print_tp(a, w, &b, index, times[w->iters / 2]);
            if (a->n_engines > 1) rc = run_dp(a, w, &b, times[w->iters / 2]);
        }
        apply_switches(w, 0);
    } else {
        fprintf(stderr, "qembed bench: out of host memory for workload %s\n", w->spec);
    }
    fflush(stdout);
    free(plans);
    free(out);
    free(times);
    batch_free(&b);
    return rc;
}

int cmd_bench(int argc, char **argv) {
    bench_args a;
    const int parsed = parse_args(argc, argv, &a);
    if (parsed) return parsed == 1 ? 0 : 2;
    bench_workload w[MAX_WORKLOADS];
    int n_work = 0;
    if (make_workloads(&a, w, &n_work)) return 2;

    qe_config cfg;
    char err[1024] = "";
    if (model_read_config(a.model, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "qembed bench: %s\n", err);
        return 1;
    }
    if (a.profile) setenv("QE_PROFILE", "1", 1);
    qe_options opt;
    memset(&opt, 0, sizeof opt);
    opt.model_dir = a.model;
    opt.backend = a.backend;
    opt.max_batch_tokens = a.batch_tokens; /* exactly: longer sequences run in chunks */
    opt.kv_pool_tokens = a.kv_pool_tokens;
    opt.tensor_parallel = a.tensor_parallel;
    opt.device = a.n_devices > 0 ? a.devices[0] : 0;
    const int tp = a.tensor_parallel > 1 ? a.tensor_parallel : 1;
    if (a.n_devices % tp) {
        fprintf(stderr,
                "qembed bench: --devices lists %d entries, not a multiple of --tensor-parallel "
                "%d (each engine takes %d, one per rank)\n",
                a.n_devices, tp, tp);
        return 2;
    }
    a.n_engines = a.n_devices / tp;
    opt.tp_devices = tp > 1 && a.n_devices > 0 ? a.devices : NULL;
    if (tp > 1) time_one_rank(&a, &opt, w, n_work, &cfg);
    qe_engine *e = NULL;
    qe_status st = qe_open(&opt, &e, err, sizeof err);
    if (st != QE_OK) {
        fprintf(stderr, "qembed bench: cannot open %s: %s\n", a.model, err);
        return 1;
    }
    /* --devices: engines[0] is e (on the first entry's device, or first tp entries), then one
     * per further entry (or tp entries) */
    qe_engine *engines[16] = {e};
    a.engines = engines;
    for (int d = 1; d < a.n_engines; d++) {
        opt.device = a.devices[d * tp];
        opt.tp_devices = tp > 1 ? &a.devices[d * tp] : NULL;
        if ((st = qe_open(&opt, &engines[d], err, sizeof err)) != QE_OK) {
            fprintf(stderr, "qembed bench: cannot open %s on device %d: %s\n", a.model,
                    a.devices[d * tp], err);
            for (int k = 0; k < d; k++)
                qe_close(engines[k]);
            return 1;
        }
    }
    print_header(e, &a, &cfg);
    int rc = 0;
    for (int i = 0; i < n_work; i++) /* a failed workload does not stop the next */
        rc |= run_workload(e, &cfg, &a, &w[i], i, n_work);
    for (int d = 1; d < a.n_engines; d++)
        qe_close(engines[d]);
    qe_close(e); /* prints the per-op profile when QE_PROFILE=1 */
    return rc;
}
