/* main.c — the qembed program: dispatches to one sub-command. */
#include <stdio.h>
#include <string.h>

#include "commands.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *what;
} subcommand;

static const subcommand COMMANDS[] = {
    {"embed", cmd_embed, "embed JSONL ({\"ids\":[..]} or {\"text\":..}) into JSONL vectors"},
    {"rerank", cmd_rerank, "score JSONL documents against a query with a Qwen3-Reranker"},
    {"tokenize", cmd_tokenize, "tokenize JSONL text into JSONL ids, with throughput"},
    {"serve", cmd_serve, "OpenAI-, TEI- and Cohere-compatible HTTP embedding and rerank server"},
    {"bench", cmd_bench, "time the engine on synthetic batches (tokens/s, per-op breakdown)"},
    {"loadgen", cmd_loadgen, "drive any OpenAI-compatible /v1/embeddings server with a corpus"},
    {"inspect", cmd_inspect,
     "show a model folder's or .gguf file's geometry, types, parameters and tensors"},
    {"make-random", cmd_make_random, "write a random Hugging Face-layout model folder"},
    {"quantize", cmd_quantize, "write a model folder as one GGUF file (f16, q8_0, q4_k_m, ...)"},
};
#define N_COMMANDS (int)(sizeof COMMANDS / sizeof COMMANDS[0])

static void usage(FILE *f) {
    fprintf(f, "usage: qembed <command> [options]   (qembed <command> --help for details)\n\n");
    for (int i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-12s %s\n", COMMANDS[i].name, COMMANDS[i].what);
    fprintf(f, "\n  qembed --version prints the version.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("qembed 0.1.0\n");
        return 0;
    }
    for (int i = 0; i < N_COMMANDS; i++)
        if (!strcmp(argv[1], COMMANDS[i].name)) return COMMANDS[i].run(argc - 1, argv + 1);
    fprintf(stderr, "qembed: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
