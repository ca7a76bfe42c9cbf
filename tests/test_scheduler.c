/* test_scheduler.c — the step former (runtime/scheduler.h) on its own: budgets, pages and the
 * fairness policy on hand-made and random workloads, with no model. Every formed step is checked
 * against what the backends rely on (token count, contiguous chunks, pool rows inside the
 * sequence's own pages), and every sequence must finish exactly once, in order. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/scheduler.h"

/* A sequence the test queued: its tokens are its index repeated, so a step's tokens say whose. */
typedef struct tseq {
    int32_t *ids;
    int len, done, finished, finished_at, arrived_at;
} tseq;

typedef struct world {
    kv_pool pool;
    sched s;
    tseq *q;
    int n, step;
    int short_tokens, long_tokens; /* of the last step */
} world;

static void world_init(world *w, int budget, int pages, int page_size, int cap) {
    memset(w, 0, sizeof *w);
    cr_assert_eq(kv_pool_init(&w->pool, pages, page_size), 0);
    sched_init(&w->s, &w->pool, budget);
    w->q = calloc((size_t)cap, sizeof *w->q);
}

static int add(world *w, int len) {
    tseq *t = &w->q[w->n];
    t->len = len, t->arrived_at = w->step;
    t->ids = malloc(sizeof(int32_t) * (size_t)len);
    for (int i = 0; i < len; i++)
        t->ids[i] = w->n;
    char why[400];
    cr_assert_eq(sched_add(&w->s, t->ids, len, (void *)(intptr_t)w->n, why, sizeof why), 0, "%s",
                 why);
    return w->n++;
}

/* Forms one step and checks it; returns its sequence count. */
static int step(world *w) {
    sched_step st;
    const int n = sched_form(&w->s, &st, 4);
    cr_assert_geq(n, 0);
    w->short_tokens = w->long_tokens = 0;
    if (n == 0) return 0;
    const qe_batch *b = &st.b;
    cr_assert_leq(b->n_tokens, w->s.budget, "step %d: %d tokens over the budget %d", w->step,
                  b->n_tokens, w->s.budget);
    cr_assert_leq(kv_pool_used(&w->pool), w->pool.n_pages, "pages over the pool");
    const int n_whole = b->n_seqs - b->n_paged;
    const int t0 = b->cu_seqlens[n_whole];
    for (int i = 0; i < b->n_seqs; i++) {
        const int first = b->cu_seqlens[i], c = b->cu_seqlens[i + 1] - first;
        const int id = b->tokens[first];
        tseq *t = &w->q[id];
        cr_assert_gt(c, 0);
        cr_assert_eq(st.seqs[i]->tag, (void *)(intptr_t)id);
        for (int k = 0; k < c; k++) {
            cr_assert_eq(b->tokens[first + k], id, "step %d: sequence %d mixes tokens", w->step, i);
            cr_assert_eq(b->positions[first + k], t->done + k, "positions not contiguous");
        }
        if (i < n_whole) {
            cr_assert_eq(t->done, 0);
            cr_assert_eq(c, t->len, "a whole sequence was cut");
            w->short_tokens += c;
        } else {
            const int p = i - n_whole;
            cr_assert_eq(b->past[p], t->done);
            for (int k = 0; k < c; k++) {
                const int pos = t->done + k, ps = w->pool.page_size;
                const int row = b->kv_rows[first - t0 + k];
                cr_assert_eq(row, b->block_table[p * b->bt_stride + pos / ps] * ps + pos % ps,
                             "kv row and block table disagree");
            }
            w->long_tokens += c;
        }
        t->done += c;
        cr_assert_eq(st.final[i], t->done == t->len);
        if (st.final[i]) {
            cr_assert_eq(t->finished, 0, "sequence %d finished twice", id);
            t->finished = 1, t->finished_at = w->step;
        }
    }
    sched_step_release(&st);
    w->step++;
    return n;
}

static void world_free(world *w) {
    sched_clear(&w->s, NULL, NULL);
    cr_expect_eq(kv_pool_used(&w->pool), 0, "pages not returned");
    for (int i = 0; i < w->n; i++)
        free(w->q[i].ids);
    free(w->q);
    kv_pool_free(&w->pool);
}

/* 4 long documents in flight: a short query queued between steps runs in the very next step, and
 * the documents still get at least half of every step. */
Test(scheduler, a_query_is_not_stuck_behind_long_documents) {
    world w;
    world_init(&w, 256, 64, 16, 16); /* 1024 pool tokens: room for all 4 documents */
    for (int i = 0; i < 4; i++)
        add(&w, 1000);
    for (int k = 0; k < 3; k++)
        step(&w);
    const int query = add(&w, 7);
    step(&w);
    cr_expect(w.q[query].finished && w.q[query].finished_at == 3, "the query waited");
    cr_expect_geq(w.long_tokens, 128, "documents got %d tokens", w.long_tokens);
    while (step(&w) > 0)
        ;
    for (int i = 0; i < w.n; i++)
        cr_expect(w.q[i].finished, "sequence %d never finished", i);
    cr_expect_eq(w.pool.peak_used, 63, "4 documents of 63 pages at most: peak %d",
                 w.pool.peak_used);
    world_free(&w);
}

/* A flood of short sequences (a full budget of them every step) cannot starve a document, and
 * the shorts still finish in arrival order. */
Test(scheduler, neither_kind_starves) {
    world w;
    world_init(&w, 200, 40, 50, 700);
    const int doc = add(&w, 2000);
    for (int k = 0; k < 30; k++) {
        for (int i = 0; i < 20; i++)
            add(&w, 10);
        step(&w);
        if (!w.q[doc].finished)
            cr_expect_geq(w.long_tokens, 100, "step %d: document got %d", k, w.long_tokens);
        cr_expect_geq(w.short_tokens, 100, "step %d: shorts got %d", k, w.short_tokens);
    }
    while (step(&w) > 0)
        ;
    cr_expect(w.q[doc].finished);
    for (int i = 2; i < w.n; i++)
        cr_expect_geq(w.q[i].finished_at, w.q[i - 1].finished_at, "short %d passed short %d", i,
                      i - 1);
    world_free(&w);
}

/* A pool with room for one document at a time: the others wait for its pages (never refused),
 * and are admitted in arrival order. */
Test(scheduler, admission_waits_for_pages) {
    world w;
    world_init(&w, 100, 4, 100, 8);
    for (int i = 0; i < 3; i++)
        add(&w, 400);
    int admitted_order[3], na = 0;
    while (step(&w) > 0)
        for (int i = 0; i < 3; i++)
            if (w.q[i].done > 0 && (na == 0 || admitted_order[na - 1] != i)) {
                int seen = 0;
                for (int k = 0; k < na; k++)
                    seen |= admitted_order[k] == i;
                if (!seen) admitted_order[na++] = i;
            }
    cr_assert_eq(na, 3);
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(admitted_order[i], i);
        cr_expect(w.q[i].finished);
    }
    cr_expect(w.q[0].finished_at < w.q[1].finished_at && w.q[1].finished_at < w.q[2].finished_at);
    cr_expect_eq(w.pool.peak_used, 4);
    world_free(&w);
}

/* Too long for both a step and the pool: refused with the flag to raise. Longer than half a step
 * but never fitting the pool: runs whole. */
Test(scheduler, refusals_and_whole_fallback) {
    world w;
    world_init(&w, 100, 2, 16, 4);
    char why[400];
    int32_t ids[101] = {0};
    cr_expect_eq(sched_add(&w.s, ids, 101, NULL, why, sizeof why), -1);
    cr_expect(strstr(why, "--kv-pool-tokens") && strstr(why, "101 tokens"), "%s", why);
    kv_pool_free(&w.pool);
    cr_assert_eq(kv_pool_init(&w.pool, 0, 16), 0); /* no pool at all */
    const int big = add(&w, 90);
    cr_expect_eq(step(&w), 1);
    cr_expect(w.q[big].finished && w.short_tokens == 90, "ran as %d whole tokens", w.short_tokens);
    world_free(&w);
}

/* Dropping an in-flight document gives its pages back at once. */
static int drop_all(void *ctx, void *tag) {
    (void)ctx, (void)tag;
    return 1;
}
static void count_gone(void *ctx, void *tag) {
    (void)tag;
    ++*(int *)ctx;
}
Test(scheduler, a_dropped_document_frees_its_pages) {
    world w;
    world_init(&w, 64, 40, 16, 4);
    add(&w, 500);
    add(&w, 5);
    step(&w);
    cr_expect_eq(kv_pool_used(&w.pool), 32, "500 tokens hold 32 pages");
    int gone = 0;
    cr_expect_eq(sched_sweep(&w.s, drop_all, count_gone, &gone), 1);
    cr_expect_eq(gone, 1);
    cr_expect_eq(kv_pool_used(&w.pool), 0);
    cr_expect_eq(sched_pending(&w.s), 0);
    world_free(&w);
}

/* Random workloads: every invariant step() checks, and every sequence done exactly once. */
Test(scheduler, random_workloads) {
    unsigned r = 12345;
    for (int trial = 0; trial < 40; trial++) {
        r = r * 1103515245u + 12345u;
        const int budget = 16 + (int)(r >> 8) % 300, ps = 1 + (int)(r >> 4) % 40;
        const int pages = (3 * budget + ps - 1) / ps + (int)(r >> 12) % 20;
        world w;
        world_init(&w, budget, pages, ps, 200);
        for (int k = 0; k < 60 || sched_pending(&w.s) > 0; k++) {
            r = r * 1103515245u + 12345u;
            if (k < 60 && w.n < 200 && (r >> 16) % 3 == 0) {
                int len = 1 + (int)(r >> 5) % (3 * budget);
                if (kv_pool_pages_for(&w.pool, len) > pages && len > budget) len = budget;
                add(&w, len);
            }
            step(&w);
            cr_assert_lt(k, 100000, "no progress");
        }
        for (int i = 0; i < w.n; i++)
            cr_assert(w.q[i].finished, "trial %d: sequence %d (%d tokens) unfinished", trial, i,
                      w.q[i].len);
        world_free(&w);
    }
}
