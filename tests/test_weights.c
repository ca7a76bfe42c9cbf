/* test_weights.c — config.json parsing, the safetensors reader on good and hostile files, and
 * binding a model folder by name in every supported layout and dtype. */
#include <stdint.h>

#include "qembed.h"
#include "random_model.h"
#include "serve/serve.h"
#include "test_util.h"
#include "weights/model.h"

static char err[512];

/* --- config.json --- */

static const char *GOOD_CFG =
    "{\"model_type\":\"qwen3\",\"vocab_size\":1000,\"hidden_size\":64,\"intermediate_size\":96,"
    "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":2,\"head_dim\":128,"
    "\"max_position_embeddings\":512,\"rms_norm_eps\":1e-6,\"rope_theta\":1000000,"
    "\"tie_word_embeddings\":true}";

Test(config, parses_every_field) {
    qe_config c;
    cr_assert_eq(cfg_parse(GOOD_CFG, strlen(GOOD_CFG), &c, err, sizeof err), 0, "%s", err);
    cr_assert_eq(c.vocab_size, 1000);
    cr_assert_eq(c.hidden_size, 64);
    cr_assert_eq(c.intermediate_size, 96);
    cr_assert_eq(c.num_layers, 2);
    cr_assert_eq(c.num_heads, 4);
    cr_assert_eq(c.num_kv_heads, 2);
    cr_assert_eq(c.head_dim, 128);
    cr_assert_eq(c.max_position_embeddings, 512);
    cr_assert_float_eq(c.rms_norm_eps, 1e-6, 1e-12);
    cr_assert_float_eq(c.rope_theta, 1e6, 1e-3);
    cr_assert(c.tie_word_embeddings);
}

Test(config, real_06b_config) {
    SKIP_UNLESS_EXISTS(FIXTURES "/qwen3-embedding-0.6b/config.json");
    qe_config c;
    cr_assert_eq(cfg_load(FIXTURES "/qwen3-embedding-0.6b", &c, err, sizeof err), 0, "%s", err);
    cr_assert_eq(c.hidden_size, 1024);
    cr_assert_eq(c.num_layers, 28);
    cr_assert_eq(c.num_kv_heads, 8);
    cr_assert_eq(c.vocab_size, 151669);
    cr_assert_eq(c.max_position_embeddings, 32768);
}

/* Removes one field and checks the error names it. */
Test(config, missing_field_is_named) {
    const char *fields[] = {"vocab_size",
                            "hidden_size",
                            "intermediate_size",
                            "num_hidden_layers",
                            "num_attention_heads",
                            "num_key_value_heads",
                            "head_dim",
                            "max_position_embeddings",
                            "rms_norm_eps",
                            "rope_theta",
                            "model_type"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        char json[1024], key[64];
        snprintf(key, sizeof key, "\"%s\":", fields[i]);
        snprintf(json, sizeof json, "%s", GOOD_CFG);
        char *at = strstr(json, key);
        cr_assert(at);
        memcpy(at + 1, "zz", 2); /* rename the key so the field is absent */
        qe_config c;
        cr_assert_neq(cfg_parse(json, strlen(json), &c, err, sizeof err), 0, "%s", fields[i]);
        cr_assert(strstr(err, fields[i]) || !strcmp(fields[i], "model_type"), "%s", err);
    }
}

Test(config, refuses_unknown_model_type_and_bad_values) {
    const char *cases[][2] = {
        {"\"qwen3\"", "\"llama\""},
        {"\"num_key_value_heads\":2", "\"num_key_value_heads\":3"},
        {"\"hidden_size\":64", "\"hidden_size\":\"64\""},
        {"\"hidden_size\":64", "\"hidden_size\":-5"},
        {"\"rope_theta\":1000000", "\"rope_theta\":0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char json[1024];
        const char *at = strstr(GOOD_CFG, cases[i][0]);
        cr_assert(at);
        snprintf(json, sizeof json, "%.*s%s%s", (int)(at - GOOD_CFG), GOOD_CFG, cases[i][1],
                 at + strlen(cases[i][0]));
        qe_config c;
        cr_assert_neq(cfg_parse(json, strlen(json), &c, err, sizeof err), 0, "case %zu", i);
        cr_assert_gt(strlen(err), 10);
    }
    qe_config c;
    cr_assert_neq(cfg_parse("[1,2]", 5, &c, err, sizeof err), 0);
    cr_assert_neq(cfg_parse("{", 1, &c, err, sizeof err), 0);
}

/* GOOD_CFG with text inserted after its opening brace, and rope_theta renamed away when drop. */
static int parse_with(const char *extra, int drop_theta, qe_config *c) {
    char json[1024];
    snprintf(json, sizeof json, "{%s%s", extra, GOOD_CFG + 1);
    char *theta = strstr(json, "\"rope_theta\":");
    if (drop_theta) memcpy(theta + 1, "zz", 2);
    return cfg_parse(json, strlen(json), c, err, sizeof err);
}

/* "position_embedding_type" selects ALiBi; RoPE is the default and keeps its theta. */
Test(config, position_embedding_type_selects_alibi) {
    qe_config c;
    cr_assert_eq(parse_with("\"position_embedding_type\":\"alibi\",", 1, &c), 0, "%s", err);
    cr_expect(c.alibi);
    cr_expect_eq(c.rope_theta, 0.0, "ALiBi needs no rope_theta and rotates nothing");
    /* a leftover rope_theta in an ALiBi config is ignored: nothing rotates */
    cr_assert_eq(parse_with("\"position_embedding_type\":\"alibi\",", 0, &c), 0, "%s", err);
    cr_expect(c.alibi);
    cr_expect_eq(c.rope_theta, 0.0);
    const char *rope[] = {"", "\"position_embedding_type\":null,",
                          "\"position_embedding_type\":\"rope\",",
                          "\"position_embedding_type\":\"rotary\","};
    for (size_t i = 0; i < sizeof rope / sizeof rope[0]; i++) {
        cr_assert_eq(parse_with(rope[i], 0, &c), 0, "%s: %s", rope[i], err);
        cr_expect(!c.alibi, "%s", rope[i]);
        cr_expect_float_eq(c.rope_theta, 1e6, 1e-3, "%s", rope[i]);
        cr_expect_neq(parse_with(rope[i], 1, &c), 0, "RoPE without rope_theta: %s", rope[i]);
        cr_expect(strstr(err, "rope_theta"), "%s", err);
    }
    const char *bad[] = {"\"position_embedding_type\":\"absolute\",",
                         "\"position_embedding_type\":\"ALiBi\",",
                         "\"position_embedding_type\":1,"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_expect_neq(parse_with(bad[i], 0, &c), 0, "accepted %s", bad[i]);
        cr_expect(strstr(err, "position_embedding_type") && strstr(err, "\"alibi\""), "%s", err);
    }
}

/* What make-random writes parses back to the same scheme. */
Test(config, alibi_round_trips_through_cfg_to_json) {
    qe_config c, back;
    cr_assert_eq(cfg_parse(GOOD_CFG, strlen(GOOD_CFG), &c, err, sizeof err), 0, "%s", err);
    for (int alibi = 0; alibi < 2; alibi++) {
        c.alibi = alibi;
        c.rope_theta = alibi ? 0 : 1e6;
        char *json = cfg_to_json(&c);
        cr_assert(json);
        cr_expect_eq(strstr(json, "\"position_embedding_type\": \"alibi\"") != NULL, alibi, "%s",
                     json);
        cr_expect_eq(strstr(json, "rope_theta") == NULL, alibi, "%s", json);
        cr_assert_eq(cfg_parse(json, strlen(json), &back, err, sizeof err), 0, "%s", err);
        cr_expect_eq(back.alibi, alibi);
        cr_expect_float_eq(back.rope_theta, c.rope_theta, 1e-3);
        free(json);
    }
}

/* Slopes worked out by hand from Press et al. / BLOOM's get_slopes: n a power of two gives
 * 2^(-8(h+1)/n); n = 12 gives the 8-head set, then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5 (every other
 * slope of the 16-head set 2^(-(h+1)/2)); n = 6: 2^-2, 2^-4, 2^-6, 2^-8, then 2^-1, 2^-3. */
Test(config, alibi_slopes_match_hand_computed_values) {
    static const struct {
        int n;
        double want[12];
    } cases[] = {
        {1, {0.00390625}},
        {2, {0.0625, 0.00390625}},
        {8, {0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625}},
        {12,
         {0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625, 0.70710678118654752,
          0.35355339059327376, 0.17677669529663688, 0.08838834764831844}},
        {6, {0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        float got[12];
        cfg_alibi_slopes(cases[i].n, got);
        for (int h = 0; h < cases[i].n; h++)
            cr_expect_float_eq(got[h], cases[i].want[h], 1e-7 * cases[i].want[h],
                               "%d heads, head %d: %.9g, want %.9g", cases[i].n, h, got[h],
                               cases[i].want[h]);
    }
    float s16[16];
    cfg_alibi_slopes(16, s16);
    for (int h = 0; h < 16; h++)
        cr_expect_float_eq(s16[h], exp2(-0.5 * (h + 1)), 1e-7, "16 heads, head %d", h);
}
/* --- safetensors files built by hand --- */

static size_t build_file(uint8_t *buf, const char *header, size_t data_len) {
    uint64_t n = strlen(header);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)(n >> (8 * i));
    memcpy(buf + 8, header, n);
    for (size_t i = 0; i < data_len; i++)
        buf[8 + n + i] = (uint8_t)(i * 7 + 1);
    return 8 + n + data_len;
}

static int parse(const char *header, size_t data_len) {
    static uint8_t buf[1 << 16];
    size_t len = build_file(buf, header, data_len);
    st_tensor *t;
    int n;
    int rc = st_parse_header(buf, len, &t, &n, err, sizeof err);
    if (rc == 0) st_free_tensors(t, n);
    return rc;
}

Test(safetensors, good_header) {
    static uint8_t buf[4096];
    size_t len = build_file(buf,
                            "{\"__metadata__\":{\"format\":\"pt\"},"
                            "\"a\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
                            "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[12,28]},"
                            "\"c\":{\"dtype\":\"F16\",\"shape\":[],\"data_offsets\":[28,30]}}",
                            30);
    st_tensor *t;
    int n;
    cr_assert_eq(st_parse_header(buf, len, &t, &n, err, sizeof err), 0, "%s", err);
    cr_assert_eq(n, 3);
    cr_assert_str_eq(t[0].name, "a");
    cr_assert_eq(t[0].dtype, ST_BF16);
    cr_assert_eq(t[0].ndim, 2);
    cr_assert_eq(t[0].shape[1], 3);
    cr_assert_eq(t[1].nbytes, 16);
    cr_assert_eq(t[2].ndim, 0);
    cr_assert_eq((const uint8_t *)t[1].data - buf, (long)(len - 30 + 12));
    st_free_tensors(t, n);
}

Test(safetensors, hostile_headers_are_refused_with_a_reason) {
    struct {
        const char *header;
        size_t data;
        const char *says;
    } cases[] = {
        {"{\"a\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,12]}}", 8, "past"},
        {"{\"a\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,10]}}", 12, "shape"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         12, "overlap"},
        {"{\"a\":{\"dtype\":\"Q9\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "dtype"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "shape"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, "data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
         16, "twice"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 8,
         "shape"},
        {"{\"a\":7}", 0, "object"},
        {"[1,2,3]", 0, "JSON"},
        {"{\"a\":{\"dtype\":\"F32\"", 0, "JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err[0] = 0;
        cr_assert_neq(parse(cases[i].header, cases[i].data), 0, "case %zu accepted", i);
        cr_assert(strstr(err, cases[i].says), "case %zu: message '%s' lacks '%s'", i, err,
                  cases[i].says);
    }
}

Test(safetensors, truncated_and_lying_length) {
    uint8_t buf[64] = {0};
    st_tensor *t;
    int n;
    cr_assert_neq(st_parse_header(buf, 5, &t, &n, err, sizeof err), 0);
    cr_assert(strstr(err, "too short"), "%s", err);
    buf[0] = 200; /* header length 200 in a 64-byte file */
    cr_assert_neq(st_parse_header(buf, sizeof buf, &t, &n, err, sizeof err), 0);
    cr_assert(strstr(err, "past the end"), "%s", err);
    memset(buf, 0xff, 8); /* 2^64-1 */
    cr_assert_neq(st_parse_header(buf, sizeof buf, &t, &n, err, sizeof err), 0);
}

Test(safetensors, dtype_conversions_round_trip) {
    const float vals[] = {0.0f, -0.0f, 1.0f, -2.5f, 3.14159f, 65504.0f, 1e-5f, 6.1e-5f, -1e-7f};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        float f = vals[i];
        float b = st_bf16_to_f32(st_f32_to_bf16(f)), h = st_f16_to_f32(st_f32_to_f16(f));
        cr_assert(fabsf(b - f) <= fabsf(f) * (1.0f / 128), "bf16 %g -> %g", f, b);
        cr_assert(fabsf(h - f) <= fabsf(f) * (1.0f / 1024) + 6e-8f, "f16 %g -> %g", f, h);
    }
    /* every bf16 and f16 bit pattern survives widening then narrowing (NaNs stay NaN) */
    for (uint32_t u = 0; u < 65536; u++) {
        float b = st_bf16_to_f32((uint16_t)u), h = st_f16_to_f32((uint16_t)u);
        if (b == b)
            cr_assert_eq(st_f32_to_bf16(b), u, "bf16 0x%04x", u);
        else
            cr_assert(st_f32_to_bf16(b) != 0x7f80 && (st_f32_to_bf16(b) & 0x7f80) == 0x7f80);
        if (h == h) cr_assert_eq(st_f32_to_f16(h), u, "f16 0x%04x", u);
    }
}

/* --- model folders --- */

static void small_config(qe_config *c, int heads, int kv) {
    memset(c, 0, sizeof *c);
    snprintf(c->model_type, sizeof c->model_type, "qwen3");
    c->vocab_size = 151669;
    c->hidden_size = 48;
    c->intermediate_size = 80;
    c->num_layers = 2;
    c->num_heads = heads;
    c->num_kv_heads = kv;
    c->head_dim = 128;
    c->max_position_embeddings = 4096;
    c->rms_norm_eps = 1e-6;
    c->rope_theta = 1e6;
    c->tie_word_embeddings = 1;
}

static void write_model(const char *dir, st_dtype dtype, int prefixed, size_t shard) {
    random_model_opts o = {0};
    small_config(&o.cfg, 4, 2);
    o.out_dir = dir;
    o.seed = 7;
    o.dtype = dtype;
    o.prefixed = prefixed;
    o.shard_bytes = shard;
    o.quiet = 1;
    cr_assert_eq(random_model_write(&o, err, sizeof err), 0, "%s", err);
}

Test(model, tiny_fixture_binds) {
    SKIP_UNLESS_EXISTS(TINY_MODEL "/model.safetensors");
    qe_model m;
    cr_assert_eq(model_open(TINY_MODEL, &m, err, sizeof err), 0, "%s", err);
    cr_assert_str_eq(m.prefix, "");
    cr_assert_eq(m.dtype, ST_BF16);
    cr_assert_eq(m.layers[2].wq->shape[0], 512);
    cr_assert_eq(m.layers[2].wo->shape[1], 512);
    model_close(&m);
}

Test(model, every_layout_and_dtype_binds_the_same_values) {
    char base[1024], dir[1100];
    tu_scratch_dir(base, sizeof base, "layouts");
    const struct {
        const char *name;
        st_dtype dtype;
        int prefixed;
        size_t shard;
    } v[] = {{"plain-bf16", ST_BF16, 0, 0},
             {"prefixed-bf16", ST_BF16, 1, 0},
             {"sharded-bf16", ST_BF16, 0, 10000000},
             {"sharded-prefixed-f16", ST_F16, 1, 10000000},
             {"plain-f32", ST_F32, 0, 0}};
    float ref[48], got[48];
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        snprintf(dir, sizeof dir, "%s/%s", base, v[i].name);
        write_model(dir, v[i].dtype, v[i].prefixed, v[i].shard);
        qe_model m;
        cr_assert_eq(model_open(dir, &m, err, sizeof err), 0, "%s: %s", v[i].name, err);
        cr_assert_str_eq(m.prefix, v[i].prefixed ? "model." : "");
        cr_assert_eq(m.dtype, v[i].dtype);
        cr_assert_eq(st_file_count(m.archive) > 1, v[i].shard != 0, "%s: %d files", v[i].name,
                     st_file_count(m.archive));
        cr_assert_eq(st_find(m.archive, "lm_head.weight") != NULL, v[i].prefixed);
        /* same seed: the same values up to the dtype's rounding */
        st_tensor row = *m.layers[1].w_down;
        row.nbytes = 48 * st_dtype_size(row.dtype);
        st_to_f32(&row, i == 0 ? ref : got);
        if (i)
            for (int k = 0; k < 48; k++)
                cr_assert_float_eq(got[k], ref[k], fabsf(ref[k]) / 64 + 1e-6f, "%s [%d]", v[i].name,
                                   k);
        model_close(&m);
    }
}

Test(model, deterministic_for_a_seed) {
    char a[1024], b[1024];
    tu_scratch_dir(a, sizeof a, "seed-a");
    tu_scratch_dir(b, sizeof b, "seed-b");
    write_model(a, ST_BF16, 0, 0);
    write_model(b, ST_BF16, 0, 0);
    char pa[1100], pb[1100];
    snprintf(pa, sizeof pa, "%s/model.safetensors", a);
    snprintf(pb, sizeof pb, "%s/model.safetensors", b);
    size_t la = 0, lb = 0;
    char *fa = tu_read_file(pa, &la), *fb = tu_read_file(pb, &lb);
    cr_assert(fa && fb);
    cr_assert_eq(la, lb);
    cr_assert(memcmp(fa, fb, la) == 0, "same seed wrote different bytes");
    free(fa);
    free(fb);
}

/* Copies a folder, then lets the test damage the copy. */
static void copy_model(const char *from, const char *to) {
    char cmd[2400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", to, from, to);
    cr_assert_eq(system(cmd), 0);
}

static void expect_refused(const char *dir, const char *says) {
    qe_model m;
    err[0] = 0;
    cr_assert_neq(model_open(dir, &m, err, sizeof err), 0, "%s opened", dir);
    cr_assert(strstr(err, says), "message '%s' lacks '%s'", err, says);
}

/* Replaces the first occurrence of from (binary-safe: safetensors headers follow NUL bytes). */
static void replace_in_file(const char *path, const char *from, const char *to) {
    size_t len;
    char *s = tu_read_file(path, &len);
    cr_assert(s);
    char *at = memmem(s, len, from, strlen(from));
    cr_assert(at, "%s not in %s", from, path);
    FILE *f = fopen(path, "wb");
    fwrite(s, 1, (size_t)(at - s), f);
    fwrite(to, 1, strlen(to), f);
    size_t rest = (size_t)(at - s) + strlen(from);
    fwrite(s + rest, 1, len - rest, f);
    fclose(f);
    free(s);
}

Test(model, damaged_folders_give_clear_errors) {
    char base[1024], good[1100], bad[1100], path[1300];
    tu_scratch_dir(base, sizeof base, "damaged");
    snprintf(good, sizeof good, "%s/good", base);
    snprintf(bad, sizeof bad, "%s/bad", base);
    write_model(good, ST_BF16, 0, 0);

    /* truncated file */
    copy_model(good, bad);
    snprintf(path, sizeof path, "%s/model.safetensors", bad);
    cr_assert_eq(truncate(path, 100000), 0);
    expect_refused(bad, "past the");

    /* wrong shape vs config: expected vs actual */
    copy_model(good, bad);
    snprintf(path, sizeof path, "%s/config.json", bad);
    replace_in_file(path, "\"intermediate_size\": 80", "\"intermediate_size\": 96");
    expect_refused(bad, "expected shape [96, 48] from config.json, found [80, 48]");

    /* missing tensor (renamed in the header, same length) */
    copy_model(good, bad);
    snprintf(path, sizeof path, "%s/model.safetensors", bad);
    replace_in_file(path, "layers.1.mlp.up_proj", "layers.1.mlp.xx_proj");
    expect_refused(bad, "missing tensor \"layers.1.mlp.up_proj.weight\"");

    /* more layers in the file than in config */
    copy_model(good, bad);
    snprintf(path, sizeof path, "%s/config.json", bad);
    replace_in_file(path, "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1");
    expect_refused(bad, "num_hidden_layers");

    /* no weights at all */
    copy_model(good, bad);
    snprintf(path, sizeof path, "%s/model.safetensors", bad);
    cr_assert_eq(unlink(path), 0);
    expect_refused(bad, "safetensors");

    /* missing config */
    copy_model(good, bad);
    snprintf(path, sizeof path, "%s/config.json", bad);
    cr_assert_eq(unlink(path), 0);
    expect_refused(bad, "config.json");
}

Test(model, sharded_index_errors) {
    char base[1024], good[1100], bad[1100], path[1300];
    tu_scratch_dir(base, sizeof base, "shards");
    snprintf(good, sizeof good, "%s/good", base);
    snprintf(bad, sizeof bad, "%s/bad", base);
    write_model(good, ST_BF16, 0, 10000000);
    copy_model(good, bad);
    snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", bad);
    cr_assert_eq(unlink(path), 0);
    expect_refused(bad, "model-00002-of-00002.safetensors");
    copy_model(good, bad);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", bad);
    replace_in_file(path, "\"norm.weight\": \"model-00002-of-00002",
                    "\"norm.weight\": \"model-00001-of-00002");
    expect_refused(bad, "norm.weight");
}

/* --- loader messages for hostile or mismatched folders (issue 11, item 14) --- */

/* A range error names the whole range, not only its lower bound. */
Test(config, range_errors_print_the_range) {
    char json[1024];
    const char *at = strstr(GOOD_CFG, "\"hidden_size\":64");
    cr_assert(at);
    snprintf(json, sizeof json, "%.*s\"hidden_size\":0%s", (int)(at - GOOD_CFG), GOOD_CFG,
             at + strlen("\"hidden_size\":64"));
    qe_config c;
    cr_assert_neq(cfg_parse(json, strlen(json), &c, err, sizeof err), 0);
    cr_assert(strstr(err, "[1, 1000000000]"), "%s", err);
}

/* num_hidden_layers far past the file's layers names the first missing layer, before any
 * allocation for them ("out of memory binding tensors" before). */
Test(model, too_many_layers_names_the_missing_tensors) {
    char base[1024], good[1100], bad[1100], path[1300];
    tu_scratch_dir(base, sizeof base, "layers1e9");
    snprintf(good, sizeof good, "%s/good", base);
    snprintf(bad, sizeof bad, "%s/bad", base);
    write_model(good, ST_BF16, 0, 0);
    copy_model(good, bad);
    snprintf(path, sizeof path, "%s/config.json", bad);
    replace_in_file(path, "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1e9");
    expect_refused(bad, "missing tensor \"layers.2.input_layernorm.weight\"");
    expect_refused(bad, "num_hidden_layers = 1000000000, the weights hold 2 layers");
    copy_model(good, bad);
    replace_in_file(path, "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
    expect_refused(bad, "missing tensor \"layers.2.input_layernorm.weight\"");
}

/* A tokenizer whose end token (appended to every input) lies past the model's embedding table
 * is refused when the server loads the folder, not at the first embed. */
Test(model, tokenizer_past_the_vocabulary_is_refused_at_load) {
    SKIP_UNLESS_EXISTS(TINY_MODEL "/tokenizer.json");
    char dir[1024], e2[512];
    tu_scratch_dir(dir, sizeof dir, "tok-past-vocab");
    random_model_opts o = {0};
    random_model_preset("tiny", &o.cfg);
    o.cfg.vocab_size = 151643; /* <|endoftext|> is 151643: one past the table */
    o.cfg.num_layers = 1;
    o.out_dir = dir;
    o.quiet = 1;
    cr_assert_eq(random_model_write(&o, e2, sizeof e2), 0, "%s", e2);
    qe_options opt = {.model_dir = dir, .backend = QE_BACKEND_CPU, .threads = 1};
    qe_engine *e = NULL;
    cr_assert_eq(qe_open(&opt, &e, e2, sizeof e2), QE_OK, "%s", e2); /* ids still work */
    cr_assert_eq(qe_tokenizer_fits(e, e2, sizeof e2), QE_ERR_FORMAT);
    cr_assert(strstr(e2, "151643") && strstr(e2, "vocab_size"), "%s", e2);
    qe_close(e);
    serve_config c;
    serve_config_defaults(&c);
    c.model_dir = dir;
    c.port = 0;
    c.quiet = 1;
    c.engine_threads = 1;
    serve_server *s = NULL;
    cr_assert_eq(serve_start(&c, &s, e2, sizeof e2), 0, "%s", e2);
    cr_assert_eq(serve_wait_ready(s, e2, sizeof e2), -1, "the server loaded it");
    cr_assert(strstr(e2, "does not fit the model"), "%s", e2);
    serve_stop(s);
    /* the 4B/8B layout (four rarely used added tokens past the table) still loads */
    o.cfg.vocab_size = 151665;
    o.force = 1; /* over the first one */
    cr_assert_eq(random_model_write(&o, e2, sizeof e2), 0, "%s", e2);
    cr_assert_eq(qe_open(&opt, &e, e2, sizeof e2), QE_OK, "%s", e2);
    cr_assert_eq(qe_tokenizer_fits(e, e2, sizeof e2), QE_OK, "%s", e2);
    qe_close(e);
}
