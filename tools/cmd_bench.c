/* cmd_bench.c — placeholder while the sub-command is being written (replaced by its owner). */
#include <stdio.h>
#include "commands.h"
int cmd_bench(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "qembed bench: not available in this build yet\n");
    return 2;
}
