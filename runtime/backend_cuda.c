/* backend_cuda.c — placeholder until the CUDA forward lands (replaced by its owner). */
#include <stdio.h>
#include "backend.h"
static qe_status create(const qe_model *m, const qe_options *o, void **s, char *err, size_t n) {
    (void)m; (void)o; (void)s;
    snprintf(err, n, "the CUDA backend is not available in this build yet; use --backend cpu");
    return QE_ERR_UNSUPPORTED;
}
static qe_status forward(void *s, const qe_batch *b, int d, float *out, char *err, size_t n) {
    (void)s; (void)b; (void)d; (void)out; (void)err; (void)n;
    return QE_ERR_UNSUPPORTED;
}
static void destroy(void *s) { (void)s; }
const qe_backend_ops qe_cuda_backend = {"cuda", create, forward, destroy};
