/* cmd_quantize.c — `qembed quantize`: a Hugging Face Qwen3 folder to one GGUF file. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "flags.h"
#include "quant_report.h"
#include "quantize.h"

#define TOP_K_MIN 11 /* recall@10 needs more texts than neighbours */

static void usage(FILE *f) {
    fprintf(f,
            "usage: qembed quantize --model DIR --type TYPE --out FILE.gguf [--quiet]\n"
            "       qembed quantize --model DIR --report --corpus FILE.jsonl [--types LIST]\n"
            "                       [--limit N] [--max-length N] [--scratch DIR]\n\n"
            "Writes a GGUF v3 file (llama.cpp's format) from a Hugging Face Qwen3 folder: the\n"
            "qwen3.* geometry, pooling_type last-token, the tokenizer as tokenizer.ggml.*, and\n"
            "the tensors under llama.cpp's names. RMSNorm weights stay F32.\n\n"
            "  --type TYPE   f32 | f16 | bf16 | q8_0 | q4_0 | q6_k | q4_k_m\n"
            "                q4_k_m is llama.cpp's mix: Q4_K, with Q6_K for attn_v and ffn_down\n"
            "                in the layers llama.cpp picks and for the (tied) embedding table.\n"
            "                Quantized types put the embedding table in Q6_K (Q8_0 for q8_0).\n"
            "  --quiet       no progress line on stderr\n\n"
            "--report measures what each quantization costs: the folder is quantized to each of\n"
            "--types (default q8_0,q6_k,q4_k_m,q4_0) in --scratch (default /tmp; removed after),\n"
            "the corpus's {\"text\"} lines (at most --limit, default 200; --max-length tokens\n"
            "each, default 256) are embedded with it and with the folder, and one line per type\n"
            "gives the cosine to the full-precision vectors (mean, min) and recall@10: of each\n"
            "text's 10 nearest neighbours among the others, the share the quantized vectors\n"
            "keep. On the CPU backend.\n");
}

/* "q8_0,q4_k_m": into r->types. */
static int parse_types(const char *v, qz_report_opts *r) {
    char buf[256];
    if (snprintf(buf, sizeof buf, "%s", v) >= (int)sizeof buf) {
        fprintf(stderr, "qembed quantize: --types: the list is longer than %zu characters\n",
                sizeof buf - 1);
        return -1;
    }
    r->n_types = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (r->n_types == 8 || qz_ftype_parse(t, &r->types[r->n_types])) {
            fprintf(stderr, "qembed quantize: --types: '%s' is not a type (or more than 8)\n", t);
            return -1;
        }
        r->n_types++;
    }
    if (r->n_types == 0)
        fprintf(stderr, "qembed quantize: --types '%s' names no type (a list like q8_0,q4_k_m)\n",
                v);
    return r->n_types > 0 ? 0 : -1;
}

static int run_report(qz_report_opts *r) {
    if (!r->corpus) {
        fprintf(stderr, "qembed quantize: --report needs --corpus FILE.jsonl\n");
        return 2;
    }
    if (r->n_types == 0) parse_types("q8_0,q6_k,q4_k_m,q4_0", r);
    char err[1024];
    if (qz_report(r, stdout, err, sizeof err)) {
        fprintf(stderr, "qembed quantize: --report: %s\n", err);
        return 1;
    }
    return 0;
}

int cmd_quantize(int argc, char **argv) {
    qz_opts o = {0};
    const char *type = NULL;
    qz_report_opts r = {.scratch = "/tmp", .limit = 200, .max_len = 256};
    int report = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--quiet"))
            o.quiet = 1;
        else if (!strcmp(a, "--report"))
            report = 1;
        else if (i + 1 < argc && !strcmp(a, "--corpus"))
            r.corpus = argv[++i];
        else if (i + 1 < argc && !strcmp(a, "--scratch"))
            r.scratch = argv[++i];
        else if (i + 1 < argc && !strcmp(a, "--types")) {
            if (parse_types(argv[++i], &r)) return 2;
        } else if (i + 1 < argc && !strcmp(a, "--limit")) {
            if (flag_int("quantize", a, argv[++i], TOP_K_MIN, 100000, &r.limit)) return 2;
        } else if (i + 1 < argc && !strcmp(a, "--max-length")) {
            if (flag_int("quantize", a, argv[++i], 1, 1 << 20, &r.max_len)) return 2;
        } else if (i + 1 < argc && !strcmp(a, "--model"))
            o.model_dir = argv[++i];
        else if (i + 1 < argc && !strcmp(a, "--type"))
            type = argv[++i];
        else if (i + 1 < argc && !strcmp(a, "--out"))
            o.out_path = argv[++i];
        else {
            fprintf(stderr, "qembed quantize: unknown option or missing value: %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (report) {
        if (!o.model_dir) {
            fprintf(stderr, "qembed quantize: --report needs --model DIR\n");
            return 2;
        }
        r.model_dir = o.model_dir;
        return run_report(&r);
    }
    if (!o.model_dir || !type || !o.out_path) {
        fprintf(stderr, "qembed quantize: --model, --type and --out are required\n");
        usage(stderr);
        return 2;
    }
    if (qz_ftype_parse(type, &o.ftype)) {
        fprintf(stderr,
                "qembed quantize: --type %s is not one of f32, f16, bf16, q8_0, q4_0, q6_k, "
                "q4_k_m\n",
                type);
        return 2;
    }
    char err[1024];
    if (qz_run(&o, err, sizeof err)) {
        fprintf(stderr, "qembed quantize: %s\n", err);
        return 1;
    }
    if (!o.quiet) fprintf(stderr, "qembed quantize: wrote %s (%s)\n", o.out_path, type);
    return 0;
}
