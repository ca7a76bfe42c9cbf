/* errors.cu — the last-error message behind QE_K_CHECK_GEN: one thread-local line per thread. */
#include <stdio.h>

#include "common.cuh"

static thread_local char qe_k_msg[512];

extern "C" int qe_k_fail(const char *kind, const char *call, const char *func, const char *file,
                         int line, const char *what) {
    const char *base = file;
    for (const char *p = file; *p; p++)
        if (*p == '/') base = p + 1;
    snprintf(qe_k_msg, sizeof qe_k_msg, "%s error %s in `%s` (%s, %s:%d)", kind, what ? what : "?",
             call, func, base, line);
    return QE_K_ERR;
}

extern "C" const char *qe_k_last_error(void) {
    return qe_k_msg[0] ? qe_k_msg : "no error";
}
