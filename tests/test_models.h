/* test_models.h — random Qwen3 models of a chosen geometry for the engine suites, written in
 * process by tools/random_model.c (link qe_tools): the "tiny" preset's settings (head_dim 128,
 * eps 1e-6, rope theta 1e6, 40960 positions, tied embeddings) with the sizes given, and ALiBi
 * instead of RoPE when asked (the config of make-random --alibi). */
#ifndef QE_TEST_MODELS_H
#define QE_TEST_MODELS_H
#include "random_model.h"
#include "test_util.h"

typedef struct tu_geometry {
    int vocab, hidden, inter, layers, heads, kv_heads;
} tu_geometry;

/* Writes the model into a fresh scratch folder named after tag; dir receives its path. alibi:
 * "position_embedding_type": "alibi" (no rope_theta) in its config.json. */
static inline void tu_make_model_with(char *dir, size_t cap, const char *tag, tu_geometry g,
                                      st_dtype dtype, int prefixed, uint64_t seed, int alibi) {
    tu_scratch_dir(dir, cap, tag);
    strncat(dir, "/model", cap - strlen(dir) - 1);
    random_model_opts o;
    memset(&o, 0, sizeof o);
    cr_assert_eq(random_model_preset("tiny", &o.cfg), 0);
    o.cfg.vocab_size = g.vocab;
    o.cfg.hidden_size = g.hidden;
    o.cfg.intermediate_size = g.inter;
    o.cfg.num_layers = g.layers;
    o.cfg.num_heads = g.heads;
    o.cfg.num_kv_heads = g.kv_heads;
    o.cfg.alibi = alibi;
    if (alibi) o.cfg.rope_theta = 0;
    o.out_dir = dir;
    o.seed = seed;
    o.dtype = dtype;
    o.prefixed = prefixed;
    o.quiet = 1;
    char err[512];
    cr_assert_eq(random_model_write(&o, err, sizeof err), 0, "random model %s: %s", tag, err);
}

/* A RoPE model, as every Qwen3 checkpoint. */
static inline void tu_make_model(char *dir, size_t cap, const char *tag, tu_geometry g,
                                 st_dtype dtype, int prefixed, uint64_t seed) {
    tu_make_model_with(dir, cap, tag, g, dtype, prefixed, seed, 0);
}

#endif
