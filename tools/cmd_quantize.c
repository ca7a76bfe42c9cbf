/* cmd_quantize.c — `qembed quantize`: a Hugging Face Qwen3 folder to one GGUF file. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "quantize.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: qembed quantize --model DIR --type TYPE --out FILE.gguf [--quiet]\n\n"
            "Writes a GGUF v3 file (llama.cpp's format) from a Hugging Face Qwen3 folder: the\n"
            "qwen3.* geometry, pooling_type last-token, the tokenizer as tokenizer.ggml.*, and\n"
            "the tensors under llama.cpp's names. RMSNorm weights stay F32.\n\n"
            "  --type TYPE   f32 | f16 | bf16 | q8_0 | q4_0 | q6_k | q4_k_m\n"
            "                q4_k_m is llama.cpp's mix: Q4_K, with Q6_K for attn_v and ffn_down\n"
            "                in the layers llama.cpp picks and for the (tied) embedding table.\n"
            "                Quantized types put the embedding table in Q6_K (Q8_0 for q8_0).\n"
            "  --quiet       no progress line on stderr\n");
}

int cmd_quantize(int argc, char **argv) {
    qz_opts o = {0};
    const char *type = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--quiet"))
            o.quiet = 1;
        else if (i + 1 < argc && !strcmp(a, "--model"))
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
        fprintf(stderr, "%sqembed quantize: %s\n", o.quiet ? "" : "\n", err);
        return 1;
    }
    if (!o.quiet) fprintf(stderr, "qembed quantize: wrote %s (%s)\n", o.out_path, type);
    return 0;
}
