/* cli_io.c — see cli_io.h. */
#include "cli_io.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *shown(const char *path, const char *dash) {
    return strcmp(path, "-") ? path : dash;
}

int cli_io_open(cli_io *io, const char *cmd, const char *in_path, const char *out_path) {
    *io = (cli_io){.cmd = cmd, .in_path = in_path, .out_path = out_path};
    struct stat si, so;
    const int in_file = strcmp(in_path, "-") != 0, out_file = strcmp(out_path, "-") != 0;
    /* the input as a path, or standard input redirected from a file (< in.jsonl) */
    const int in_known = in_file ? stat(in_path, &si) == 0 : fstat(STDIN_FILENO, &si) == 0;
    if (in_file && in_known && S_ISDIR(si.st_mode)) {
        fprintf(stderr, "qembed %s: --input %s is a folder; it takes a JSONL file or -\n", cmd,
                in_path);
        return -1;
    }
    if (out_file && in_known && S_ISREG(si.st_mode) && stat(out_path, &so) == 0 &&
        si.st_dev == so.st_dev && si.st_ino == so.st_ino) {
        fprintf(stderr,
                "qembed %s: the input and --output are the same file (%s); writing would empty "
                "it before it is read\n",
                cmd, out_path);
        return -1;
    }
    io->in = in_file ? fopen(in_path, "rb") : stdin;
    if (!io->in) {
        fprintf(stderr, "qembed %s: cannot open %s: %s\n", cmd, in_path, strerror(errno));
        return -1;
    }
    io->out = out_file ? fopen(out_path, "wb") : stdout;
    if (!io->out) {
        fprintf(stderr, "qembed %s: cannot create %s: %s\n", cmd, out_path, strerror(errno));
        if (io->in != stdin) fclose(io->in);
        io->in = NULL;
        return -1;
    }
    return 0;
}

int cli_io_close(cli_io *io, int failed) {
    int bad = failed != 0;
    if (io->in) {
        if (ferror(io->in)) {
            fprintf(stderr, "qembed %s: reading %s failed part-way; the output is incomplete\n",
                    io->cmd, shown(io->in_path, "standard input"));
            bad = 1;
        }
        if (io->in != stdin) fclose(io->in);
    }
    if (io->out) {
        errno = 0;
        int wrong = fflush(io->out) != 0 || ferror(io->out);
        if (io->out != stdout) wrong |= fclose(io->out) != 0;
        if (wrong) {
            fprintf(stderr, "qembed %s: cannot write %s: %s\n", io->cmd,
                    shown(io->out_path, "standard output"), errno ? strerror(errno) : "I/O error");
            bad = 1;
        }
    }
    io->in = io->out = NULL;
    return bad ? -1 : 0;
}
