/* scheduler.c — the step former (the policy is in scheduler.h). */
#include "scheduler.h"

#include <stdlib.h>
#include <string.h>

void sched_init(sched *s, kv_pool *pool, int budget) {
    memset(s, 0, sizeof *s);
    s->pool = pool;
    s->budget = budget;
}

static void seq_free(sched *s, sched_seq *q) {
    if (q->pages) kv_pool_give(s->pool, q->pages, kv_pool_pages_for(s->pool, q->len));
    free(q->pages);
    free(q);
}

void sched_clear(sched *s, void (*gone)(void *ctx, void *tag), void *ctx) {
    sched_sweep(s, NULL, gone, ctx);
    free(s->active);
    s->active = NULL;
    s->cap_active = 0;
}

int sched_add(sched *s, const int32_t *ids, int len, void *tag, char *why, size_t whylen) {
    const int pages = kv_pool_pages_for(s->pool, len);
    const int fits_pool = s->pool->n_pages > 0 && pages <= s->pool->n_pages;
    const int paged = len > s->budget / 2 && fits_pool;
    if (len > s->budget && !fits_pool) {
        snprintf(why, whylen,
                 "a sequence of %d tokens is longer than a step (max_batch_tokens %d) and the K/V "
                 "pool holds %d tokens of long sequences; raise kv_pool_tokens (qembed "
                 "--kv-pool-tokens) to at least %d, or max_batch_tokens",
                 len, s->budget, s->pool->n_pages * s->pool->page_size, pages * s->pool->page_size);
        return -1;
    }
    sched_seq *q = calloc(1, sizeof *q);
    if (!q) {
        snprintf(why, whylen, "out of host memory queueing a sequence");
        return -1;
    }
    q->ids = ids, q->len = len, q->paged = paged, q->tag = tag;
    if (s->pending_tail)
        s->pending_tail->next = q;
    else
        s->pending = q;
    s->pending_tail = q;
    s->n_pending++;
    return 0;
}

int sched_sweep(sched *s, int (*drop)(void *ctx, void *tag), void (*gone)(void *ctx, void *tag),
                void *ctx) {
    int n = 0;
    sched_seq **link = &s->pending, *prev = NULL;
    while (*link) {
        sched_seq *q = *link;
        if (drop && !drop(ctx, q->tag)) {
            prev = q;
            link = &q->next;
            continue;
        }
        *link = q->next;
        if (s->pending_tail == q) s->pending_tail = prev;
        s->n_pending--;
        if (gone) gone(ctx, q->tag);
        seq_free(s, q);
        n++;
    }
    int kept = 0;
    for (int i = 0; i < s->n_active; i++) {
        sched_seq *q = s->active[i];
        if (drop && !drop(ctx, q->tag)) {
            s->active[kept++] = q;
            continue;
        }
        if (gone) gone(ctx, q->tag);
        seq_free(s, q);
        n++;
    }
    s->n_active = kept;
    return n;
}

/* What one step takes: (sequence, chunk length) pairs, whole ones first. */
typedef struct pick {
    sched_seq *q;
    int n;
} pick;

/* Unlinks q from the pending list (prev is the one before it, NULL at the head). */
static void unlink_pending(sched *s, sched_seq *prev, sched_seq *q) {
    if (prev)
        prev->next = q->next;
    else
        s->pending = q->next;
    if (s->pending_tail == q) s->pending_tail = prev;
    q->next = NULL;
    s->n_pending--;
}

/* Chooses the step's sequences into picks (capacity: min(queued + active, budget)); returns how
 * many, of which *n_whole are whole; -1 when out of memory. */
static int choose(sched *s, pick *picks, int *n_whole) {
    const int B = s->budget;
    int n = 0, used = 0, long_waiting = s->n_active > 0;
    for (sched_seq *q = s->pending; q && !long_waiting; q = q->next)
        long_waiting = q->paged;
    const int short_cap = long_waiting ? B / 2 : B;
    /* short sequences, first come first served; the first of a step may be as long as a step */
    for (sched_seq *q = s->pending, *prev = NULL, *next; q; q = next) {
        next = q->next;
        if (q->paged) {
            prev = q;
            continue;
        }
        if (used + q->len > short_cap && !(used == 0 && q->len <= B)) break;
        unlink_pending(s, prev, q);
        picks[n++] = (pick){q, q->len};
        used += q->len;
    }
    *n_whole = n;
    int left = B - used;
    /* chunks of the long sequences in flight, oldest first */
    for (int i = 0; i < s->n_active && left > 0; i++) {
        sched_seq *q = s->active[i];
        const int c = q->len - q->done < left ? q->len - q->done : left;
        picks[n++] = (pick){q, c};
        left -= c;
    }
    /* admission of waiting long sequences, in arrival order, while the step has room */
    for (sched_seq *q = s->pending, *prev = NULL, *next; q && left > 0; q = next) {
        next = q->next;
        if (!q->paged) {
            prev = q;
            continue;
        }
        const int pages = kv_pool_pages_for(s->pool, q->len);
        if (pages > s->pool->n_free) break; /* waits; no later long sequence passes it */
        if (s->n_active == s->cap_active) {
            const int cap = s->cap_active ? 2 * s->cap_active : 8;
            sched_seq **a = realloc(s->active, sizeof *a * (size_t)cap);
            if (!a) return -1;
            s->active = a, s->cap_active = cap;
        }
        q->pages = malloc(sizeof(int32_t) * (size_t)pages);
        if (!q->pages) return -1;
        kv_pool_take(s->pool, q->len, q->pages);
        unlink_pending(s, prev, q);
        s->active[s->n_active++] = q;
        const int c = q->len < left ? q->len : left;
        picks[n++] = (pick){q, c};
        left -= c;
    }
    return n;
}

/* Out of memory while forming: the whole sequences taken go back to the head of the queue (in
 * their order; admitted long ones stay admitted), so nothing is lost. */
static void requeue(sched *s, pick *picks, int n_whole) {
    for (int i = n_whole - 1; i >= 0; i--) {
        picks[i].q->next = s->pending;
        s->pending = picks[i].q;
        if (!s->pending_tail) s->pending_tail = picks[i].q;
        s->n_pending++;
    }
}

int sched_form(sched *s, sched_step *st, int dims) {
    memset(st, 0, sizeof *st);
    long cap = sched_pending(s);
    if (cap == 0) return 0;
    if (cap > s->budget) cap = s->budget; /* every pick takes at least one of the budget's tokens */
    pick *picks = malloc(sizeof *picks * (size_t)cap);
    if (!picks) return -1;
    int n_whole = 0;
    const int n = choose(s, picks, &n_whole);
    if (n <= 0) {
        if (n < 0) requeue(s, picks, n_whole);
        free(picks);
        return n;
    }
    const int n_paged = n - n_whole;
    int T = 0, T_paged = 0, stride = 0;
    for (int i = 0; i < n; i++) {
        T += picks[i].n;
        if (i >= n_whole) {
            T_paged += picks[i].n;
            const int pages = kv_pool_pages_for(s->pool, picks[i].q->len);
            if (pages > stride) stride = pages;
        }
    }
    /* tokens[T] | positions[T] | cu[n+1] | final[n] | past[np] | kv_rows[Tp] | table[np*stride] */
    const size_t n_ints = 2 * (size_t)T + (size_t)(2 * n + 1) + (size_t)n_paged + (size_t)T_paged +
                          (size_t)n_paged * (size_t)stride;
    st->ints = malloc(sizeof(int32_t) * n_ints);
    st->seqs = malloc(sizeof *st->seqs * (size_t)n);
    st->out = malloc(sizeof(float) * (size_t)n * (size_t)dims);
    if (!st->ints || !st->seqs || !st->out) {
        requeue(s, picks, n_whole);
        free(picks);
        sched_step_release(st);
        return -1;
    }
    int32_t *tok = st->ints, *pos = tok + T, *cu = pos + T, *fin = cu + n + 1, *past = fin + n;
    int32_t *rows = past + n_paged, *table = rows + T_paged;
    cu[0] = 0;
    for (int i = 0, r = 0; i < n; i++) {
        sched_seq *q = picks[i].q;
        const int c = picks[i].n, start = q->done;
        memcpy(tok + cu[i], q->ids + start, sizeof(int32_t) * (size_t)c);
        for (int t = 0; t < c; t++)
            pos[cu[i] + t] = start + t;
        cu[i + 1] = cu[i] + c;
        st->seqs[i] = q;
        q->done += c;
        fin[i] = q->done == q->len;
        if (i < n_whole) continue;
        const int p = i - n_whole, ps = s->pool->page_size;
        past[p] = start;
        for (int t = 0; t < c; t++, r++)
            rows[r] = q->pages[(start + t) / ps] * ps + (start + t) % ps;
        const int pages = kv_pool_pages_for(s->pool, q->len);
        for (int k = 0; k < stride; k++)
            table[(size_t)p * stride + k] = q->pages[k < pages ? k : pages - 1];
    }
    /* A finished long sequence leaves the active list now: its pages may serve the next step
     * (which runs after this one reads them). The step owns every finished sequence. */
    int kept = 0;
    for (int i = 0; i < s->n_active; i++) {
        sched_seq *q = s->active[i];
        if (q->done < q->len) {
            s->active[kept++] = q;
            continue;
        }
        kv_pool_give(s->pool, q->pages, kv_pool_pages_for(s->pool, q->len));
        free(q->pages);
        q->pages = NULL;
    }
    s->n_active = kept;
    free(picks);
    st->final = fin;
    st->b = (qe_batch){.n_seqs = n,
                       .n_tokens = T,
                       .tokens = tok,
                       .positions = pos,
                       .cu_seqlens = cu,
                       .n_paged = n_paged,
                       .past = past,
                       .kv_rows = rows,
                       .block_table = table,
                       .bt_stride = stride,
                       .out = st->out};
    return n;
}

void sched_step_release(sched_step *st) {
    for (int i = 0; st->seqs && st->final && i < st->b.n_seqs; i++)
        if (st->final[i]) free(st->seqs[i]);
    free(st->ints);
    free(st->seqs);
    free(st->out);
    memset(st, 0, sizeof *st);
}

void sched_step_abandon(sched *s, sched_step *st, void (*gone)(void *ctx, void *tag), void *ctx) {
    for (int i = 0; i < st->b.n_seqs; i++) {
        sched_seq *q = st->seqs[i];
        if (st->final[i]) { /* the step owns it: freed with the step */
            if (gone) gone(ctx, q->tag);
            continue;
        }
        /* An unfinished long sequence leaves the active list here. A window of steps may hold
         * several of its chunks: only the first abandoned finds it there (a later step holding
         * its last chunk owns it already and reports it then). */
        for (int k = 0; k < s->n_active; k++)
            if (s->active[k] == q) {
                s->n_active--;
                memmove(s->active + k, s->active + k + 1,
                        sizeof *s->active * (size_t)(s->n_active - k));
                if (gone) gone(ctx, q->tag);
                seq_free(s, q);
                break;
            }
    }
    sched_step_release(st);
}
