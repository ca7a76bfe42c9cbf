/* scheduler.h — the step former: which sequences, and which chunk of each long one, make the next
 * forward step under the token budget. Host logic over lengths and the page allocator; engine.c
 * runs it for qe_embed_ids and behind the qe_sched_* API that qembed serve feeds across requests.
 *
 * The policy (docs/architecture.md, "Scheduler"): a sequence of at most budget/2 tokens is short
 * and runs whole in one step. A longer one is paged: admitted when the pool has pages for all of
 * its tokens (admission waits, in arrival order among long sequences, never fails), then run in
 * chunks whose K/V rows go to its pages. Each step takes short sequences first come first served
 * up to half the budget while long work is in flight (the whole budget otherwise), and gives the
 * rest to the chunks of the long sequences in admission order. Both kinds therefore get at least
 * half of every step while both are waiting: neither starves the other. A sequence longer than
 * half the budget that the pool could never hold runs whole (at most the budget) as the first of
 * a step; longer still, it is refused. */
#ifndef QE_RUNTIME_SCHEDULER_H
#define QE_RUNTIME_SCHEDULER_H
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "kv_pool.h"

typedef struct sched_seq {
    const int32_t *ids;
    int len;
    int done;       /* tokens already run */
    int paged;      /* runs in chunks through the pool */
    int32_t *pages; /* its block table, kv_pool_pages_for(len) pages; NULL until admitted */
    void *tag;      /* the caller's */
    struct sched_seq *next;
} sched_seq;

typedef struct sched {
    kv_pool *pool;
    int budget;                        /* tokens per step */
    sched_seq *pending, *pending_tail; /* arrival order */
    sched_seq **active;                /* admitted paged sequences, admission order */
    int n_active, cap_active;
    long n_pending;
} sched;

/* One formed step: b is what the backend runs (whole sequences first, then the paged chunks);
 * seqs[i] is b's sequence i; final[i] whether its vector is complete after this step (whole
 * sequences and last chunks), then the step owns that sequence (sched_step_release frees it). */
typedef struct sched_step {
    qe_batch b;
    sched_seq **seqs;
    int32_t *final; /* [n_seqs] */
    int32_t *ints;  /* one allocation behind b's arrays */
    float *out;     /* b.out: [n_seqs, dims] */
} sched_step;

void sched_init(sched *s, kv_pool *pool, int budget);
/* Releases every sequence still queued or in flight (pages back to the pool); calls gone(ctx,
 * tag) for each when gone is not NULL. */
void sched_clear(sched *s, void (*gone)(void *ctx, void *tag), void *ctx);
/* Queues a sequence; ids must stay valid until it is done. 0, or -1 with why (a sequence no step
 * and no pool can hold; names what to raise) or when the host is out of memory. */
int sched_add(sched *s, const int32_t *ids, int len, void *tag, char *why, size_t whylen);
/* Drops every queued or in-flight sequence for which drop(ctx, tag) is nonzero (its pages go back
 * at once), calling gone(ctx, tag) for each. Returns how many. */
int sched_sweep(sched *s, int (*drop)(void *ctx, void *tag), void (*gone)(void *ctx, void *tag),
                void *ctx);
/* Forms the next step into *st (dims wide outputs). Returns its sequence count: 0 when nothing is
 * queued, -1 when the host is out of memory. */
int sched_form(sched *s, sched_step *st, int dims);
void sched_step_release(sched_step *st);
/* A step that failed or was cancelled: gone(ctx, tag) for each of its sequences, which all leave
 * the scheduler (an unfinished long one with its pages), then the step is released. */
void sched_step_abandon(sched *s, sched_step *st, void (*gone)(void *ctx, void *tag), void *ctx);
/* Sequences queued or in flight. */
static inline long sched_pending(const sched *s) {
    return s->n_pending + s->n_active;
}

#endif
