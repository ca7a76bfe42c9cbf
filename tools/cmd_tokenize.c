/* cmd_tokenize.c — placeholder while the sub-command is being written (replaced by its owner). */
#include <stdio.h>
#include "commands.h"
int cmd_tokenize(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "qembed tokenize: not available in this build yet\n");
    return 2;
}
