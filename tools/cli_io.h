/* cli_io.h — the JSONL streams of embed, rerank and tokenize: "-" is stdin / stdout, anything else
 * a file. Opening refuses a folder as input and an output that is the input file itself, named or
 * redirected to standard input (opening it for writing would empty it before a line is read);
 * closing reports a read or write error (a disk full, a folder read as a file) with the file's
 * name, so no command ends in silence. */
#ifndef QE_CLI_IO_H
#define QE_CLI_IO_H
#include <stdio.h>

typedef struct {
    const char *cmd; /* "embed", for the messages */
    const char *in_path, *out_path;
    FILE *in, *out;
} cli_io;

/* 0, or -1 after a message on stderr (nothing is left open). */
int cli_io_open(cli_io *io, const char *cmd, const char *in_path, const char *out_path);

/* Closes both (stdin and stdout are flushed, not closed). Returns 0 when failed is 0 and nothing
 * failed; -1 otherwise, after a message for a read or write error. */
int cli_io_close(cli_io *io, int failed);

#endif
