/* bench_dp.h — `qembed bench --devices`: the same batch on several engines at once (data
 * parallel, one engine per device), timed as a whole. */
#ifndef QE_TOOLS_BENCH_DP_H
#define QE_TOOLS_BENCH_DP_H
#include <stdint.h>

#include "../runtime/qembed.h"

/* warmup + iters rounds; in each, every engine embeds the batch once, all at the same time (one
 * thread each), and the round lasts until the last one is done. *median_s: the median round of
 * the timed ones. 0, or -1 after a failed call (the message on stderr). */
int bench_dp_rounds(qe_engine *const *engines, int n_engines, const int32_t *const *ids,
                    const int *lens, int n_seqs, int dims, int warmup, int iters, double *median_s);

#endif
