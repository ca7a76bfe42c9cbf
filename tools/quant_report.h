/* quant_report.h — `qembed quantize --report`: the embedding quality each quantization keeps
 * (cosine to the full-precision vectors, nearest-neighbour recall@10) on a corpus. */
#ifndef QE_TOOLS_QUANT_REPORT_H
#define QE_TOOLS_QUANT_REPORT_H
#include <stdio.h>

#include "quantize.h"

typedef struct qz_report_opts {
    const char *model_dir; /* the full-precision folder (the reference) */
    const char *corpus;    /* JSONL {"text"} lines */
    const char *scratch;   /* where the quantized files are written (and removed) */
    qz_ftype types[8];
    int n_types;
    int limit, max_len, threads; /* texts read, tokens per text, CPU threads (0: all) */
} qz_report_opts;

/* One `report type=... cos_mean=... cos_min=... recall_at_10=...` line per type on out. 0, or -1
 * with err. */
int qz_report(const qz_report_opts *o, FILE *out, char *err, size_t errlen);

#endif
