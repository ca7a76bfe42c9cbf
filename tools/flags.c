/* flags.c — the number parsers of flags.h. */
#include "flags.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int flag_long(const char *cmd, const char *flag, const char *v, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long x = strtol(v ? v : "", &end, 10);
    if (!v || !*v || *end || errno || x < lo || x > hi) {
        fprintf(stderr, "qembed %s: %s wants an integer in [%ld, %ld], got '%s'\n", cmd, flag, lo,
                hi, v ? v : "");
        return -1;
    }
    *out = x;
    return 0;
}

int flag_int(const char *cmd, const char *flag, const char *v, int lo, int hi, int *out) {
    long x;
    if (flag_long(cmd, flag, v, lo, hi, &x)) return -1;
    *out = (int)x;
    return 0;
}

int flag_double(const char *cmd, const char *flag, const char *v, double lo, double hi,
                double *out) {
    char *end;
    errno = 0;
    double x = strtod(v ? v : "", &end);
    if (!v || !*v || *end || errno || !(x >= lo && x <= hi)) {
        fprintf(stderr, "qembed %s: %s wants a number in [%g, %g], got '%s'\n", cmd, flag, lo, hi,
                v ? v : "");
        return -1;
    }
    *out = x;
    return 0;
}

int flag_devices(const char *cmd, const char *v, int *out, int cap, int *n) {
    *n = 0;
    for (const char *p = v ? v : ""; *p;) {
        char *end;
        const long lo = strtol(p, &end, 10);
        long hi = lo;
        if (end == p || lo < 0) goto bad;
        if (*end == '-') {
            const char *q = end + 1;
            hi = strtol(q, &end, 10);
            if (end == q || hi < lo) goto bad;
        }
        for (long d = lo; d <= hi; d++) {
            if (*n == cap) {
                fprintf(stderr, "qembed %s: --devices: at most %d engines\n", cmd, cap);
                return -1;
            }
            out[(*n)++] = (int)d;
        }
        if (*end == ',')
            end++;
        else if (*end)
            goto bad;
        p = end;
    }
    if (*n > 0) return 0;
bad:
    fprintf(stderr,
            "qembed %s: --devices wants device ordinals like 0,1 or 0-3 (a repeat runs two engines "
            "on one device), got '%s'\n",
            cmd, v ? v : "");
    return -1;
}

int flag_backend(const char *cmd, const char *v, qe_backend *out) {
    if (v && !strcmp(v, "cpu"))
        *out = QE_BACKEND_CPU;
    else if (v && !strcmp(v, "cuda"))
        *out = QE_BACKEND_CUDA;
    else {
        fprintf(stderr, "qembed %s: --backend wants cpu or cuda, got '%s'\n", cmd, v ? v : "");
        return -1;
    }
    return 0;
}
