/* qembed_debug.h — hooks for tests and tools, not part of the stable API. */
#ifndef QEMBED_DEBUG_H
#define QEMBED_DEBUG_H
#include "qembed.h"

/* The residual stream [len, hidden] of one sequence after the first n_layers layers
 * (backends that support it: cpu). */
qe_status qe_debug_residual(qe_engine *e, const int32_t *ids, int len, int n_layers, float *out);

#endif
