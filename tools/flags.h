/* flags.h — number-valued command-line flags of the qembed sub-commands, parsed one way: the
 * whole string, in range, else one line on stderr ("qembed CMD: FLAG wants ...") and -1. */
#ifndef QE_TOOLS_FLAGS_H
#define QE_TOOLS_FLAGS_H

#include "qembed.h"

int flag_long(const char *cmd, const char *flag, const char *v, long lo, long hi, long *out);
int flag_int(const char *cmd, const char *flag, const char *v, int lo, int hi, int *out);
int flag_double(const char *cmd, const char *flag, const char *v, double lo, double hi,
                double *out);

/* A device list: "0,1,2", ranges "0-3", repeats "0,0" (two engines on one device); at most cap
 * entries into out[*n]. */
int flag_devices(const char *cmd, const char *v, int *out, int cap, int *n);
/* --backend cpu|cuda. */
int flag_backend(const char *cmd, const char *v, qe_backend *out);

#endif
