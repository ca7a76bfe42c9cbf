/* rerank.h — inside libqembed: what a reranker engine keeps beside the model (the task, the
 * yes-minus-no row, the template's ids), made by qe_open through rerank_head_open. */
#ifndef QE_RUNTIME_RERANK_H
#define QE_RUNTIME_RERANK_H
#include <stddef.h>
#include <stdint.h>

#include "qembed.h"
#include "tokenizer/tokenizer.h"
#include "weights/model.h"

typedef struct rerank_head {
    qe_task task;             /* EMBED or RERANK, never AUTO */
    char reason[200];         /* why (qe_task_reason) */
    float *diff;              /* [hidden]: W[yes] - W[no] in fp32; NULL for an embedding model */
    int yes_id, no_id;        /* their rows: token ids through the tokenizer, or cls.output's */
    char rows_of[64];         /* the tensor they are rows of */
    int32_t *prefix, *suffix; /* the template's fixed parts, tokenized once */
    int n_prefix, n_suffix;
    int template_outside; /* a template id past the embedding table, or -1 */
} rerank_head;

/* Decides the task (asked, or from the folder when AUTO) and, for a reranker, makes the head.
 * Returns 0, or -1 with err saying what the folder lacks. */
int rerank_head_open(rerank_head *h, const char *dir, const qe_model *m, const tok_tokenizer *tok,
                     qe_task asked, char *err, size_t errlen);
void rerank_head_free(rerank_head *h);
/* The ids of the answer tokens "yes" and "no": one token each, inside a vocab-row table. Returns
 * 0, or -1 with err saying which is not (qembed quantize reads the same rows). */
int rerank_answer_ids(const tok_tokenizer *tok, int vocab, int *yes, int *no, char *err,
                      size_t errlen);

/* From engine.c: the engine's head, and its last-error setter (takes the engine lock). */
const rerank_head *engine_rerank_head(const qe_engine *e);
qe_status engine_fail(qe_engine *e, qe_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
