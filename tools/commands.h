/* commands.h — the sub-commands of the qembed program. Each returns the process exit code. */
#ifndef QE_TOOLS_COMMANDS_H
#define QE_TOOLS_COMMANDS_H

int cmd_embed(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_rerank(int argc, char **argv);
int cmd_make_random(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_loadgen(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
