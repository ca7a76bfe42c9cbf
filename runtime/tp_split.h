/* tp_split.h — how tensor parallelism splits a layer over N ranks (Megatron-style), the one
 * definition every backend uses: rank r computes the query heads [q_head0, q_head0 + q_heads) with
 * their kv heads, and the columns [f0, f0 + f_len) of the MLP's intermediate; o_proj and down_proj
 * then give each rank a partial residual update, summed over the ranks (the all-reduce). The
 * embedding gather, the norms and the pooling are replicated. */
#ifndef QE_RUNTIME_TP_SPLIT_H
#define QE_RUNTIME_TP_SPLIT_H
#include <stddef.h>

#include "weights/config.h"

typedef struct tp_shard {
    int rank, n;
    int q_head0, q_heads;   /* query heads of this rank */
    int kv_head0, kv_heads; /* their kv heads (GQA groups stay whole) */
    int f0, f_len;          /* intermediate columns */
} tp_shard;

/* 0 when n ranks can split the model: n divides the query heads and the kv heads (the
 * intermediate may split unevenly). Else -1 with err naming the valid values. */
int tp_check(const qe_config *c, int n, char *err, size_t errlen);
/* Rank r's share (tp_check(c, n) must have passed). */
tp_shard tp_shard_of(const qe_config *c, int n, int r);

#endif
