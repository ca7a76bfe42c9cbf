/* cmd_make_random.c — `qembed make-random`: a random model folder for demos, tests and
 * benchmarks, in the exact layout of a Hugging Face download. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "flags.h"
#include "random_model.h"

static void usage(FILE *f) {
    fprintf(
        f, "usage: qembed make-random (--preset tiny|0.6b|4b|8b | --config FILE) --out DIR\n"
           "                          [--seed N] [--dtype bf16|f16|f32] [--layout plain|prefixed]\n"
           "                          [--shard-mb N] [--alibi] [--task embed|rerank] [--untied]\n"
           "                          [--force] [--quiet]\n\n"
           "Writes a Hugging Face-layout Qwen3 model folder with random weights: config.json,\n"
           "safetensors (sharded past 4 GB, or --shard-mb), and a small byte-level BPE\n"
           "tokenizer.json in the real format, so `qembed embed` runs text with nothing\n"
           "downloaded. Same seed, same bytes.\n\n"
           "  --preset NAME    geometry of a real model (tiny = the test fixture's geometry)\n"
           "  --config FILE    geometry from a config.json (e.g. a real model's)\n"
           "  --seed N         random seed (default 1)\n"
           "  --dtype D        weight dtype on disk (default bf16)\n"
           "  --layout L       plain: keys without prefix (embedding repos); prefixed: \"model.\"\n"
           "                   keys plus lm_head.weight (Qwen3ForCausalLM checkpoints)\n"
           "  --shard-mb N     start a new shard past N MB (default 4096)\n"
           "  --alibi          ALiBi instead of RoPE, same weights: the config.json says\n"
           "                   \"position_embedding_type\": \"alibi\" and has no rope_theta\n"
           "                   (Qwen3 models use RoPE; this exercises the engine's ALiBi path)\n"
           "  --task T         embed (default): a Qwen3-Embedding folder; rerank: a\n"
           "                   Qwen3-Reranker folder (\"model.\" keys, its prompt tokens)\n"
           "  --untied         a separate lm_head.weight instead of the tied embedding table\n"
           "  --force          write into a folder that already holds files, removing its\n"
           "                   earlier weights first (without it such a folder is refused)\n"
           "  --quiet          no progress on stderr\n");
}

int cmd_make_random(int argc, char **argv) {
    random_model_opts o = {0};
    o.dtype = ST_BF16;
    o.seed = 1;
    const char *preset = NULL, *config = NULL;
    int alibi = 0, untied = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--quiet")) {
            o.quiet = 1;
            continue;
        } else if (!strcmp(a, "--alibi")) {
            alibi = 1;
            continue;
        } else if (!strcmp(a, "--untied")) {
            untied = 1;
            continue;
        } else if (!strcmp(a, "--force")) {
            o.force = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "qembed make-random: %s needs a value, or is no option (see --help)\n",
                    a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--preset"))
            preset = v;
        else if (!strcmp(a, "--config"))
            config = v;
        else if (!strcmp(a, "--out"))
            o.out_dir = v;
        else if (!strcmp(a, "--task")) {
            if (strcmp(v, "embed") && strcmp(v, "rerank")) {
                fprintf(stderr, "qembed make-random: --task must be embed or rerank\n");
                return 2;
            }
            o.reranker = !strcmp(v, "rerank");
        } else if (!strcmp(a, "--seed")) {
            long seed;
            if (flag_long("make-random", a, v, 0, LONG_MAX, &seed)) return 2;
            o.seed = (uint64_t)seed;
        } else if (!strcmp(a, "--shard-mb")) {
            double mb;
            if (flag_double("make-random", a, v, 0.001, 1e9, &mb)) return 2;
            o.shard_bytes = (size_t)(mb * 1e6);
        } else if (!strcmp(a, "--dtype")) {
            o.dtype = !strcmp(v, "bf16")  ? ST_BF16
                      : !strcmp(v, "f16") ? ST_F16
                      : !strcmp(v, "f32") ? ST_F32
                                          : ST_OTHER;
            if (o.dtype == ST_OTHER) {
                fprintf(stderr, "qembed make-random: --dtype must be bf16, f16 or f32\n");
                return 2;
            }
        } else if (!strcmp(a, "--layout")) {
            if (strcmp(v, "plain") && strcmp(v, "prefixed")) {
                fprintf(stderr, "qembed make-random: --layout must be plain or prefixed\n");
                return 2;
            }
            o.prefixed = !strcmp(v, "prefixed");
        } else {
            fprintf(stderr, "qembed make-random: unknown option %s (see --help)\n", a);
            return 2;
        }
    }
    if (!o.out_dir || (!preset == !config)) {
        fprintf(stderr, "qembed make-random: give --out and exactly one of --preset, --config\n");
        usage(stderr);
        return 2;
    }
    char err[512];
    if (preset && random_model_preset(preset, &o.cfg)) {
        fprintf(stderr, "qembed make-random: unknown preset '%s' (tiny, 0.6b, 4b, 8b)\n", preset);
        return 2;
    }
    if (config) {
        FILE *f = fopen(config, "rb");
        char *buf = f ? malloc(1 << 20) : NULL;
        size_t n = buf ? fread(buf, 1, 1 << 20, f) : 0;
        if (f) fclose(f);
        int bad = !buf || cfg_parse(buf, n, &o.cfg, err, sizeof err);
        if (!buf) snprintf(err, sizeof err, "cannot read %s", config);
        free(buf);
        if (bad) {
            fprintf(stderr, "qembed make-random: %s\n", err);
            return 1;
        }
    }
    if (alibi) { /* after --config, which may name either scheme */
        o.cfg.alibi = 1;
        o.cfg.rope_theta = 0;
    }
    if (untied) o.cfg.tie_word_embeddings = 0;
    if (random_model_write(&o, err, sizeof err)) {
        fprintf(stderr, "qembed make-random: %s\n", err);
        return 1;
    }
    if (!o.quiet) fprintf(stderr, "make-random: wrote %s\n", o.out_dir);
    return 0;
}
