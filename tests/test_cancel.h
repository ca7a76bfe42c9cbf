/* test_cancel.h — the cancellation checks both engine suites run (test_engine_cpu on the CPU
 * backend, test_cuda_emu on the emulated CUDA backend): a stop function that stops on its n-th
 * poll, and the whole check for an engine opened with a 64-token budget. */
#ifndef QE_TEST_CANCEL_H
#define QE_TEST_CANCEL_H
#include "runtime/qembed.h"
#include "test_util.h"

typedef struct stop_after {
    int polls, stop_at; /* stop on poll number stop_at + 1 */
} stop_after;
static inline int stop_after_n(void *ctx) {
    stop_after *s = ctx;
    return ++s->polls > s->stop_at;
}

/* ids/lens: a 1100-token sequence, then five of 60 tokens. At a 64-token budget the long one is
 * 18 chunks, polled before each and stopped at the fourth; the five are one step each, polled
 * once per step; and the engine's vectors afterwards equal those before the cancellations. */
static inline void expect_stops_at_steps_and_chunks(qe_engine *e, int32_t **ids, int *lens) {
    const int D = qe_dim(e);
    float *want = malloc(sizeof(float) * 6 * D), *got = malloc(sizeof(float) * 6 * D);
    const int32_t *const *all = (const int32_t *const *)ids;
    stop_after never = {0, 1 << 30}, third = {0, 3}, steps = {0, 1 << 30}, second = {0, 1};
    cr_assert_eq(qe_embed_ids_stoppable(e, all, lens, 1, 0, 1, want, stop_after_n, &never), QE_OK,
                 "%s", qe_last_error(e));
    cr_expect_eq(never.polls, 18, "1100 tokens in 64-token chunks: %d polls", never.polls);
    qe_status st = qe_embed_ids_stoppable(e, all, lens, 1, 0, 1, got, stop_after_n, &third);
    cr_expect_eq(st, QE_ERR_CANCELLED, "got %s", qe_status_name(st));
    cr_expect_eq(third.polls, 4, "the call went on after the stop: %d polls", third.polls);
    cr_expect(strstr(qe_last_error(e), "cancelled"), "message: %s", qe_last_error(e));
    cr_assert_eq(
        qe_embed_ids_stoppable(e, all + 1, lens + 1, 5, 0, 1, want + D, stop_after_n, &steps),
        QE_OK);
    cr_expect_eq(steps.polls, 5, "five one-step sequences: %d polls", steps.polls);
    cr_expect_eq(
        qe_embed_ids_stoppable(e, all + 1, lens + 1, 5, 0, 1, got + D, stop_after_n, &second),
        QE_ERR_CANCELLED);
    cr_expect_eq(second.polls, 2);
    cr_assert_eq(qe_embed_ids(e, all, lens, 6, 0, got), QE_OK);
    cr_expect(memcmp(want, got, sizeof(float) * 6 * D) == 0, "vectors changed after a cancel");
    free(want), free(got);
}

#endif
