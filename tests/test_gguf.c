/* test_gguf.c — the GGUF reader on hand-built files: a good file read back field by field, then
 * one broken file per check the reader makes (each refusal's message names what is wrong), the
 * typed metadata lookups, and the metadata-to-qe_config mapping. */
#include <dirent.h>
#include <stdint.h>

#include "gguf_writer.h"
#include "test_util.h"
#include "weights/gguf.h"
#include "weights/gguf_config.h"

static char err[512];

/* Parses f; on success *g is set. The buffer is returned for the caller to free after close. */
static uint8_t *parse_file(gw_file *f, gguf_file **g, int *rc) {
    size_t len;
    uint8_t *buf = gw_build(f, &len);
    *rc = gguf_parse(buf, len, g, err, sizeof err);
    return buf;
}

/* Builds f, expects the parse to fail with every needle in the message, frees f. */
static void expect_refused(gw_file *f, const char *needle1, const char *needle2) {
    gguf_file *g = NULL;
    int rc;
    uint8_t *buf = parse_file(f, &g, &rc);
    cr_expect_neq(rc, 0, "expected a refusal mentioning \"%s\"", needle1);
    cr_expect_null(g);
    cr_expect(strstr(err, needle1), "message \"%s\" should mention \"%s\"", err, needle1);
    if (needle2)
        cr_expect(strstr(err, needle2), "message \"%s\" should mention \"%s\"", err, needle2);
    if (rc == 0) gguf_close(g);
    free(buf);
    gw_free(f);
}

/* A small file with every metadata type and three tensor types. */
static gw_file sample(void) {
    gw_file f = gw_new();
    gw_kv_str(&f, "general.architecture", "qwen3");
    gw_kv_u32(&f, "u32", 7);
    gw_kv_i32(&f, "i32", -3);
    gw_kv_f32(&f, "f32", 0.25f);
    gw_kv_f64(&f, "f64", 1e-6);
    gw_kv_bool(&f, "bool", 1);
    gw_kv_u64(&f, "u64", 1ULL << 40);
    const char *toks[] = {"a", "bc", "", "def"};
    gw_kv_str_array(&f, "toks", toks, 4);
    const int32_t ids[] = {5, -1, 70000};
    gw_kv_i32_array(&f, "ids", ids, 3);
    gw_key(&f, "u8", 0);
    gw_put(&f.kv, "\x09", 1);
    gw_key(&f, "i16", 3);
    gw_put(&f.kv, "\xfe\xff", 2);
    gw_key(&f, "i8", 1);
    gw_put(&f.kv, "\x80", 1);
    gw_key(&f, "u16", 2);
    gw_put(&f.kv, "\x34\x12", 2);
    const int64_t big = -(1LL << 40);
    gw_key(&f, "i64", 11);
    gw_put(&f.kv, &big, 8);
    gw_tensor_add(&f, "a.f32", QT_F32, 3, 2, 0, 0);    /* 24 bytes, padded to 32 */
    gw_tensor_add(&f, "b.q4k", QT_Q4_K, 256, 2, 0, 0); /* 288 bytes */
    gw_tensor_add(&f, "c.q8", QT_Q8_0, 32, 1, 1, 3);   /* 102 bytes, 4 dims */
    return f;
}

Test(gguf, reads_a_good_file_back) {
    gw_file f = sample();
    gguf_file *g;
    int rc;
    uint8_t *buf = parse_file(&f, &g, &rc);
    cr_assert_eq(rc, 0, "%s", err);
    cr_expect_eq(gguf_version(g), 3);
    cr_expect_eq(gguf_alignment(g), 32);
    cr_assert_eq(gguf_count(g), 3);
    const gguf_tensor *a = gguf_at(g, 0), *b = gguf_at(g, 1), *c = gguf_at(g, 2);
    cr_expect_str_eq(a->name, "a.f32");
    cr_expect_eq(a->type, QT_F32);
    cr_expect_str_eq(a->type_name, "F32");
    cr_expect_eq(a->ndim, 2);
    cr_expect(a->dims[0] == 3 && a->dims[1] == 2 && a->dims[2] == 1 && a->dims[3] == 1);
    cr_expect_eq(a->n_elements, 6);
    cr_expect_eq(a->nbytes, 24);
    cr_expect_eq(b->nbytes, 288);
    cr_expect_eq(b->offset, 32);
    cr_expect_str_eq(b->type_name, "Q4_K");
    cr_expect_eq(c->ndim, 4);
    cr_expect_eq(c->nbytes, 3 * 34);
    cr_expect_eq(c->offset, 320);
    /* data points at its offset inside the data section, which starts aligned after the infos */
    const uint8_t *data0 = a->data;
    cr_expect_eq(((const uint8_t *)b->data - data0), 32);
    cr_expect_eq((data0 - buf) % 32, 0);
    cr_expect_eq(data0[0], 1);
    cr_expect_eq(data0[1], 8);
    cr_expect_eq(gguf_find(g, "b.q4k"), b);
    cr_expect_eq(gguf_find(g, "c.q8"), c);
    cr_expect_null(gguf_find(g, "missing"));
    cr_expect_null(gguf_at(g, 3));

    cr_assert_eq(gguf_kv_count(g), 14);
    cr_expect_str_eq(gguf_kv_key(g, 0), "general.architecture");
    gguf_vtype et;
    uint64_t n;
    cr_expect_eq(gguf_kv_type(g, 7, &et, &n), GGUF_ARRAY);
    cr_expect_eq(et, GGUF_STRING);
    cr_expect_eq(n, 4);
    cr_expect_eq(gguf_kv_index(g, "toks"), 7);
    cr_expect_eq(gguf_kv_index(g, "nope"), -1);
    cr_expect(gguf_has(g, "f64"));
    cr_expect_not(gguf_has(g, "nope"));
    gguf_close(g);
    free(buf);
    gw_free(&f);
}

Test(gguf, typed_lookups) {
    gw_file f = sample();
    gguf_file *g;
    int rc;
    uint8_t *buf = parse_file(&f, &g, &rc);
    cr_assert_eq(rc, 0, "%s", err);
    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    float f32;
    int b;
    cr_expect_eq(gguf_get_u32(g, "u32", &u32, err, sizeof err), 0, "%s", err);
    cr_expect_eq(u32, 7);
    cr_expect_eq(gguf_get_u32(g, "u8", &u32, err, sizeof err), 0, "%s", err);
    cr_expect_eq(u32, 9, "any integer type that fits");
    cr_expect_eq(gguf_get_i32(g, "i32", &i32, err, sizeof err), 0, "%s", err);
    cr_expect_eq(i32, -3);
    cr_expect_eq(gguf_get_i32(g, "i16", &i32, err, sizeof err), 0, "%s", err);
    cr_expect_eq(i32, -2);
    cr_expect_eq(gguf_get_i32(g, "u32", &i32, err, sizeof err), 0, "%s", err);
    cr_expect_eq(i32, 7);
    cr_expect_eq(gguf_get_i32(g, "i8", &i32, err, sizeof err), 0, "%s", err);
    cr_expect_eq(i32, -128);
    cr_expect_eq(gguf_get_u32(g, "u16", &u32, err, sizeof err), 0, "%s", err);
    cr_expect_eq(u32, 0x1234);
    cr_expect_neq(gguf_get_u64(g, "i64", &u64, err, sizeof err), 0);
    cr_expect(strstr(err, "-1099511627776") && strstr(err, "u64"), "%s", err);
    cr_expect_neq(gguf_get_i32(g, "i64", &i32, err, sizeof err), 0);
    cr_expect(strstr(err, "does not fit in i32"), "%s", err);
    cr_expect_eq(gguf_get_u64(g, "u64", &u64, err, sizeof err), 0, "%s", err);
    cr_expect_eq(u64, 1ULL << 40);
    cr_expect_eq(gguf_get_f32(g, "f32", &f32, err, sizeof err), 0, "%s", err);
    cr_expect_eq(f32, 0.25f);
    cr_expect_eq(gguf_get_f32(g, "f64", &f32, err, sizeof err), 0, "%s", err);
    cr_expect_float_eq(f32, 1e-6f, 1e-12);
    cr_expect_eq(gguf_get_bool(g, "bool", &b, err, sizeof err), 0, "%s", err);
    cr_expect_eq(b, 1);
    gguf_span s;
    cr_expect_eq(gguf_get_string(g, "general.architecture", &s, err, sizeof err), 0, "%s", err);
    cr_expect(s.len == 5 && !memcmp(s.ptr, "qwen3", 5));
    gguf_span *toks;
    cr_assert_eq(gguf_get_string_array(g, "toks", &toks, &u64, err, sizeof err), 0, "%s", err);
    cr_assert_eq(u64, 4);
    cr_expect(toks[0].len == 1 && toks[0].ptr[0] == 'a');
    cr_expect(toks[1].len == 2 && !memcmp(toks[1].ptr, "bc", 2));
    cr_expect_eq(toks[2].len, 0);
    cr_expect(toks[3].len == 3 && !memcmp(toks[3].ptr, "def", 3));
    free(toks);
    int32_t *ids;
    cr_assert_eq(gguf_get_i32_array(g, "ids", &ids, &u64, err, sizeof err), 0, "%s", err);
    cr_expect(u64 == 3 && ids[0] == 5 && ids[1] == -1 && ids[2] == 70000);
    free(ids);

    /* refusals name the key and both types, or the range */
    cr_expect_neq(gguf_get_u32(g, "absent.key", &u32, err, sizeof err), 0);
    cr_expect(strstr(err, "\"absent.key\"") && strstr(err, "missing"), "%s", err);
    cr_expect_neq(gguf_get_u32(g, "general.architecture", &u32, err, sizeof err), 0);
    cr_expect(strstr(err, "general.architecture") && strstr(err, "string") && strstr(err, "u32"),
              "%s", err);
    cr_expect_neq(gguf_get_u32(g, "i32", &u32, err, sizeof err), 0);
    cr_expect(strstr(err, "-3") && strstr(err, "u32"), "%s", err);
    cr_expect_neq(gguf_get_i32(g, "u64", &i32, err, sizeof err), 0);
    cr_expect(strstr(err, "does not fit in i32"), "%s", err);
    cr_expect_neq(gguf_get_f32(g, "u32", &f32, err, sizeof err), 0);
    cr_expect(strstr(err, "\"u32\" is a u32, expected f32"), "%s", err);
    cr_expect_neq(gguf_get_bool(g, "u8", &b, err, sizeof err), 0);
    cr_expect(strstr(err, "expected bool"), "%s", err);
    cr_expect_neq(gguf_get_string(g, "toks", &s, err, sizeof err), 0);
    cr_expect(strstr(err, "array of string") && strstr(err, "expected string"), "%s", err);
    cr_expect_neq(gguf_get_i32_array(g, "toks", &ids, &u64, err, sizeof err), 0);
    cr_expect(strstr(err, "array of i32"), "%s", err);
    cr_expect_null(ids);
    cr_expect_neq(gguf_get_string_array(g, "u32", &toks, &u64, err, sizeof err), 0);
    cr_expect(strstr(err, "\"u32\" is a u32"), "%s", err);
    gguf_close(g);
    free(buf);
    gw_free(&f);
}

Test(gguf, version_2_reads_like_3) {
    gw_file f = sample();
    f.version = 2;
    gguf_file *g;
    int rc;
    uint8_t *buf = parse_file(&f, &g, &rc);
    cr_assert_eq(rc, 0, "%s", err);
    cr_expect_eq(gguf_version(g), 2);
    cr_expect_eq(gguf_count(g), 3);
    gguf_close(g);
    free(buf);
    gw_free(&f);
}

Test(gguf, empty_file_and_no_tensors) {
    gw_file f = gw_new();
    gguf_file *g;
    int rc;
    uint8_t *buf = parse_file(&f, &g, &rc);
    cr_assert_eq(rc, 0, "a header alone is a valid (empty) file: %s", err);
    cr_expect_eq(gguf_count(g), 0);
    cr_expect_eq(gguf_kv_count(g), 0);
    cr_expect_null(gguf_find(g, "x"));
    gguf_close(g);
    free(buf);
    cr_expect_neq(gguf_parse((const uint8_t *)"", 0, &g, err, sizeof err), 0);
    cr_expect(strstr(err, "truncated"), "%s", err);
}

Test(gguf, opens_a_file_and_names_the_path_on_error) {
    char dir[512], path[600];
    tu_scratch_dir(dir, sizeof dir, "gguf-open");
    snprintf(path, sizeof path, "%s/m.gguf", dir);
    gw_file f = sample();
    size_t len;
    uint8_t *buf = gw_build(&f, &len);
    FILE *fp = fopen(path, "wb");
    cr_assert(fp);
    cr_assert_eq(fwrite(buf, 1, len, fp), len);
    fclose(fp);
    gguf_file *g;
    cr_assert_eq(gguf_open(path, &g, err, sizeof err), 0, "%s", err);
    cr_expect_eq(gguf_count(g), 3);
    const gguf_tensor *t = gguf_find(g, "c.q8");
    cr_assert(t);
    gguf_file *mem;
    cr_assert_eq(gguf_parse(buf, len, &mem, err, sizeof err), 0, "%s", err);
    const size_t at = (size_t)((const uint8_t *)gguf_find(mem, "c.q8")->data - buf);
    cr_expect_eq(memcmp(t->data, buf + at, t->nbytes), 0, "the mapping holds the file's bytes");
    gguf_close(mem);
    gguf_close(g);
    /* the same bytes, cut: the error carries the path */
    fp = fopen(path, "wb");
    fwrite(buf, 1, len / 2, fp);
    fclose(fp);
    cr_expect_neq(gguf_open(path, &g, err, sizeof err), 0);
    cr_expect(strstr(err, path), "%s", err);
    cr_expect_neq(gguf_open("/nonexistent/x.gguf", &g, err, sizeof err), 0);
    cr_expect(strstr(err, "/nonexistent/x.gguf"), "%s", err);
    cr_expect_neq(gguf_open(dir, &g, err, sizeof err), 0);
    cr_expect(strstr(err, "not a regular file"), "%s", err);
    free(buf);
    gw_free(&f);
}

/* --- refusals, one per check --- */

Test(gguf, refuses_bad_magic) {
    gw_file f = sample();
    memcpy(f.magic, "GGML", 4);
    expect_refused(&f, "not a GGUF file", "magic");
}

Test(gguf, refuses_other_versions_by_number) {
    const uint32_t bad[] = {0, 1, 4, 99};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gw_file f = sample();
        f.version = bad[i];
        char want[32];
        snprintf(want, sizeof want, "version %u", bad[i]);
        expect_refused(&f, want, "not supported");
    }
    gw_file f = sample();
    f.version = 0x03000000u; /* version 3 written big-endian */
    expect_refused(&f, "big-endian", NULL);
}

/* Every prefix of a good file that cuts into its last tensor is refused cleanly, never read past.
 * (The padding after the last tensor is not required, as llama.cpp's mmap loader does not.) */
Test(gguf, refuses_every_truncation) {
    gw_file f = sample();
    size_t len;
    uint8_t *buf = gw_build(&f, &len);
    gguf_file *whole;
    cr_assert_eq(gguf_parse(buf, len, &whole, err, sizeof err), 0, "%s", err);
    const gguf_tensor *last = gguf_at(whole, 2);
    const size_t end = (size_t)((const uint8_t *)last->data + last->nbytes - buf);
    gguf_close(whole);
    for (size_t cut = 0; cut < end; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1); /* exact size, so ASan sees any overread */
        memcpy(copy, buf, cut);
        gguf_file *g;
        cr_assert_neq(gguf_parse(copy, cut, &g, err, sizeof err), 0, "prefix of %zu bytes", cut);
        cr_assert_gt(strlen(err), 10);
        free(copy);
    }
    /* a cut inside the fixed header says so */
    gguf_file *g;
    cr_expect_neq(gguf_parse(buf, 12, &g, err, sizeof err), 0);
    cr_expect(strstr(err, "truncated") && strstr(err, "tensor count"), "%s", err);
    free(buf);
    gw_free(&f);
}

Test(gguf, refuses_counts_the_file_cannot_hold) {
    gw_file f = sample();
    f.claim_n_t = 1ULL << 40;
    expect_refused(&f, "claims 1099511627776 tensors", "more than");
    f = sample();
    f.claim_n_kv = UINT64_MAX - 1; /* (UINT64_MAX is GW_AUTO) */
    expect_refused(&f, "metadata entries", "more than");
}

Test(gguf, refuses_a_string_length_past_the_end) {
    gw_file f = gw_new();
    gw_u64(&f.kv, 1ULL << 40); /* key length */
    gw_put(&f.kv, "abcdefghijklmnop", 16);
    f.n_kv = 1;
    expect_refused(&f, "string length 1099511627776", "past the end");
    /* the same inside a string value, and inside an array of strings */
    f = gw_new();
    gw_key(&f, "k", 8);
    gw_u64(&f.kv, 100);
    gw_put(&f.kv, "short", 5);
    expect_refused(&f, "metadata \"k\"", "past the end");
    f = gw_new();
    gw_key(&f, "arr", 9);
    gw_u32(&f.kv, 8);
    gw_u64(&f.kv, 2);
    gw_str(&f.kv, "ok");
    gw_u64(&f.kv, 1000);
    gw_put(&f.kv, "x", 1);
    expect_refused(&f, "metadata \"arr\"", "past the end");
}

Test(gguf, refuses_bad_metadata_types) {
    gw_file f = gw_new();
    gw_key(&f, "weird", 13);
    gw_u32(&f.kv, 0);
    expect_refused(&f, "\"weird\"", "unknown value type 13");
    f = gw_new();
    gw_key(&f, "nested", 9);
    gw_u32(&f.kv, 9);
    gw_u64(&f.kv, 1);
    gw_u32(&f.kv, 4);
    gw_u64(&f.kv, 1);
    gw_u32(&f.kv, 1);
    expect_refused(&f, "\"nested\"", "arrays of arrays");
    f = gw_new();
    gw_key(&f, "arr", 9);
    gw_u32(&f.kv, 77);
    gw_u64(&f.kv, 0);
    expect_refused(&f, "\"arr\"", "unknown array element type 77");
    f = gw_new();
    gw_key(&f, "big", 9);
    gw_u32(&f.kv, 10);
    gw_u64(&f.kv, 1ULL << 61); /* 2^61 u64s: the byte count would overflow */
    expect_refused(&f, "\"big\"", "past the end");
    f = gw_new();
    gw_key(&f, "x", 4);
    gw_put(&f.kv, "\1\2", 2); /* half a u32 */
    expect_refused(&f, "metadata \"x\" needs a 4-byte u32", NULL);
    f = gw_new();
    gw_kv_u32(&f, "dup", 1);
    gw_kv_u32(&f, "dup", 2);
    expect_refused(&f, "metadata key \"dup\"", "twice");
    f = gw_new();
    gw_key(&f, "", 4);
    gw_u32(&f.kv, 1);
    expect_refused(&f, "metadata key", "1 to");
}

Test(gguf, alignment_key) {
    gw_file f = sample();
    gw_kv_u32(&f, "general.alignment", 64);
    f.alignment = 64;
    gguf_file *g;
    int rc;
    uint8_t *buf = parse_file(&f, &g, &rc);
    cr_assert_eq(rc, 0, "%s", err);
    cr_expect_eq(gguf_alignment(g), 64);
    cr_expect_eq(gguf_at(g, 1)->offset, 64);
    cr_expect_eq(((const uint8_t *)gguf_at(g, 0)->data - buf) % 64, 0);
    gguf_close(g);
    free(buf);
    gw_free(&f);
    const uint32_t bad[] = {0, 48, 3};
    for (size_t i = 0; i < 3; i++) {
        f = sample();
        gw_kv_u32(&f, "general.alignment", bad[i]);
        expect_refused(&f, "general.alignment", "power of two");
    }
    f = sample();
    gw_kv_u64(&f, "general.alignment", 32);
    expect_refused(&f, "general.alignment", "found u64");
}

Test(gguf, refuses_a_tensor_past_the_data_section) {
    gw_file f = sample();
    f.t[2].offset = 1ULL << 20;
    f.data_len = 448; /* what the three tensors take in place */
    expect_refused(&f, "tensor \"c.q8\"", "past the end of the data section");
    f = sample();
    f.t[0].offset = UINT64_MAX - 31; /* offset + bytes would wrap */
    f.data_len = 448;
    expect_refused(&f, "tensor \"a.f32\"", "past the end");
}

Test(gguf, refuses_a_misaligned_offset) {
    gw_file f = sample();
    f.t[1].offset = 40;
    expect_refused(&f, "tensor \"b.q4k\": offset 40", "alignment 32");
}

Test(gguf, refuses_overlapping_tensors) {
    gw_file f = sample();
    f.t[2].offset = 256; /* inside b.q4k's [32, 320) */
    expect_refused(&f, "overlap", "b.q4k");
    f = sample();
    f.t[1].offset = 0; /* same start as a.f32 */
    expect_refused(&f, "overlap", "a.f32");
}

/* GGUF stores no byte length: each tensor's bytes are its type x shape, and the next tensor
 * starts right after them (padded). A gap means the shape or type is not what was written. */
Test(gguf, refuses_bytes_not_type_times_shape) {
    gw_file f = sample();
    f.t[1].offset = 64; /* a.f32 is 24 bytes (32 padded) but gets 64 */
    f.t[2].offset = 384;
    expect_refused(&f, "tensor \"a.f32\": type F32 x shape = 24 bytes", "gives it 64");
}

Test(gguf, refuses_an_unknown_type_naming_the_tensor) {
    const uint32_t bad[] = {4, 5, 31, 36, 42, 1000};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        gw_file f = sample();
        f.t[1].type = bad[i];
        char want[64];
        snprintf(want, sizeof want, "unknown type id %u", bad[i]);
        expect_refused(&f, "tensor \"b.q4k\"", want);
    }
}

Test(gguf, refuses_an_innermost_dim_not_a_multiple_of_the_block) {
    gw_file f = sample();
    f.t[1].dims[0] = 100;
    f.t[1].dims[1] = 256; /* 100 x 256 elements: whole blocks in total, but not per row */
    expect_refused(&f, "tensor \"b.q4k\": type Q4_K packs 256", "innermost dimension is 100");
    f = sample();
    f.t[2].dims[0] = 48;
    expect_refused(&f, "tensor \"c.q8\": type Q8_0 packs 32", "is 48");
}

Test(gguf, refuses_duplicate_tensor_names) {
    gw_file f = sample();
    f.t[2].name = "a.f32";
    expect_refused(&f, "tensor \"a.f32\"", "appears twice");
}

Test(gguf, refuses_bad_dims) {
    gw_file f = sample();
    f.t[2].ndim = 5;
    f.t[2].dims[4] = 1;
    expect_refused(&f, "tensor \"c.q8\": 5 dimensions", "1 to 4");
    f = sample();
    f.t[0].ndim = 0;
    expect_refused(&f, "tensor \"a.f32\": 0 dimensions", NULL);
    f = sample();
    f.t[0].dims[1] = 0;
    expect_refused(&f, "tensor \"a.f32\": dimension 1 = 0", "> 0");
    f = sample();
    f.t[0].dims[0] = 1ULL << 40;
    f.t[0].dims[1] = 1ULL << 40;
    expect_refused(&f, "tensor \"a.f32\"", "overflow");
    f = sample();
    f.t[0].dims[0] = 1ULL << 63;
    expect_refused(&f, "tensor \"a.f32\"", "overflow");
    f = sample();
    f.t[0].dims[0] = 1ULL << 62; /* 2^62 f32: a count that fits, bytes that do not */
    f.t[0].ndim = 1;
    expect_refused(&f, "tensor \"a.f32\"", NULL);
}

Test(gguf, refuses_bad_names) {
    gw_file f = sample();
    f.t[0].name = "";
    expect_refused(&f, "tensor name", "1 to 256");
    char longname[300];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    f = sample();
    f.t[0].name = longname;
    expect_refused(&f, "tensor name", "1 to 256");
}

/* The libFuzzer target's entry point (tests/fuzz/fuzz_gguf.c, linked into this suite): it aborts
 * on any bound the reader missed. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The fuzz corpus (tests/fuzz/corpus_gguf) through the fuzz target, exactly sized buffers so
 * ASan sees any overread; the seeds that are whole files must also parse. */
Test(gguf, fuzz_corpus_replays_cleanly) {
    const char *dir = QE_SOURCE_DIR "/tests/fuzz/corpus_gguf";
    DIR *d = opendir(dir);
    cr_assert(d, "cannot open %s", dir);
    int n = 0, parsed = 0;
    for (struct dirent *de; (de = readdir(d));) {
        if (de->d_name[0] == '.') continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        size_t len;
        char *text = tu_read_file(path, &len);
        cr_assert(text, "%s", path);
        uint8_t *buf = malloc(len ? len : 1);
        memcpy(buf, text, len);
        free(text);
        LLVMFuzzerTestOneInput(buf, len);
        gguf_file *g;
        if (gguf_parse(buf, len, &g, err, sizeof err) == 0) {
            parsed++;
            gguf_close(g);
        }
        free(buf);
        n++;
    }
    closedir(d);
    cr_expect_geq(n, 6, "the corpus has its seeds");
    cr_expect_geq(parsed, 6, "the six hand-made seeds are valid files");
}

/* --- metadata to qe_config --- */

/* The keys a qwen3 GGUF carries, in a table so a test can leave any one out or retype it. */
typedef struct {
    const char *key;
    char kind; /* 'u': u32, 'f': f32, 's': string */
    double value;
} cfg_key;

static const cfg_key QWEN3_KEYS[] = {
    {"qwen3.block_count", 'u', 2},
    {"qwen3.embedding_length", 'u', 64},
    {"qwen3.feed_forward_length", 'u', 96},
    {"qwen3.attention.head_count", 'u', 4},
    {"qwen3.attention.head_count_kv", 'u', 2},
    {"qwen3.attention.key_length", 'u', 128},
    {"qwen3.rope.freq_base", 'f', 1000000},
    {"qwen3.attention.layer_norm_rms_epsilon", 'f', 1e-6},
    {"qwen3.context_length", 'u', 512},
};
#define N_QWEN3_KEYS (sizeof QWEN3_KEYS / sizeof QWEN3_KEYS[0])

/* A qwen3 file without key `skip` (NULL: all of them), tokens and token_embd.weight [64, vocab]. */
static gw_file qwen3_file(const char *skip, int vocab, int with_output) {
    gw_file f = gw_new();
    gw_kv_str(&f, "general.architecture", "qwen3");
    for (size_t i = 0; i < N_QWEN3_KEYS; i++) {
        const cfg_key *k = &QWEN3_KEYS[i];
        if (skip && !strcmp(skip, k->key)) continue;
        if (k->kind == 'u')
            gw_kv_u32(&f, k->key, (uint32_t)k->value);
        else
            gw_kv_f32(&f, k->key, (float)k->value);
    }
    if (!skip || strcmp(skip, "qwen3.pooling_type")) gw_kv_u32(&f, "qwen3.pooling_type", 3);
    static const char *toks[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"};
    gw_kv_str_array(&f, "tokenizer.ggml.tokens", toks, 10);
    if (vocab) gw_tensor_add(&f, "token_embd.weight", QT_Q8_0, 64, (uint64_t)vocab, 0, 0);
    gw_tensor_add(&f, "output_norm.weight", QT_F32, 64, 0, 0, 0);
    if (with_output) gw_tensor_add(&f, "output.weight", QT_Q6_K, 256, 64, 0, 0);
    return f;
}

/* Parses f and reads its config; returns gguf_read_config's result. */
static int read_cfg(gw_file *f, qe_config *c) {
    gguf_file *g;
    int rc;
    uint8_t *buf = parse_file(f, &g, &rc);
    cr_assert_eq(rc, 0, "the file itself is valid: %s", err);
    rc = gguf_read_config(g, c, err, sizeof err);
    gguf_close(g);
    free(buf);
    gw_free(f);
    return rc;
}

Test(gguf_config, maps_every_key) {
    gw_file f = qwen3_file(NULL, 12, 0);
    qe_config c;
    cr_assert_eq(read_cfg(&f, &c), 0, "%s", err);
    cr_expect_str_eq(c.model_type, "qwen3");
    cr_expect_eq(c.num_layers, 2);
    cr_expect_eq(c.hidden_size, 64);
    cr_expect_eq(c.intermediate_size, 96);
    cr_expect_eq(c.num_heads, 4);
    cr_expect_eq(c.num_kv_heads, 2);
    cr_expect_eq(c.head_dim, 128, "key_length, not embedding_length / head_count = 16");
    cr_expect_float_eq(c.rope_theta, 1e6, 1e-3);
    cr_expect_float_eq(c.rms_norm_eps, 1e-6, 1e-12);
    cr_expect_eq(c.max_position_embeddings, 512);
    cr_expect_eq(c.vocab_size, 12, "token_embd.weight's rows (dims[1]), not the 10 tokens");
    cr_expect(c.tie_word_embeddings, "no output.weight: tied");
    cr_expect_eq(c.alibi, 0);
    cr_expect_str_eq(c.torch_dtype, "Q8_0");
}

Test(gguf_config, output_weight_unties_and_tokens_give_vocab) {
    gw_file f = qwen3_file(NULL, 0, 1);
    qe_config c;
    cr_assert_eq(read_cfg(&f, &c), 0, "%s", err);
    cr_expect_not(c.tie_word_embeddings);
    cr_expect_eq(c.vocab_size, 10, "no token_embd.weight: the token list's length");
}

Test(gguf_config, names_each_missing_key) {
    for (size_t i = 0; i < N_QWEN3_KEYS; i++) {
        gw_file f = qwen3_file(QWEN3_KEYS[i].key, 12, 0);
        qe_config c;
        cr_expect_neq(read_cfg(&f, &c), 0, "%s", QWEN3_KEYS[i].key);
        cr_expect(strstr(err, QWEN3_KEYS[i].key) && strstr(err, "missing"), "%s", err);
    }
    gw_file f = gw_new();
    qe_config c;
    cr_expect_neq(read_cfg(&f, &c), 0);
    cr_expect(strstr(err, "general.architecture"), "%s", err);
}

/* qwen3_file with one more entry written first (a duplicate key would be refused, so the
 * replaced key is dropped from the table). */
static int read_cfg_with(const char *drop, void (*add)(gw_file *), int vocab, qe_config *c) {
    gw_file f = gw_new();
    add(&f);
    gw_file base = qwen3_file(drop, vocab, 0);
    /* base's entries after the test's */
    gw_put(&f.kv, base.kv.b, base.kv.n);
    f.n_kv += base.n_kv;
    memcpy(f.t, base.t, sizeof f.t);
    f.n_t = base.n_t;
    gw_free(&base);
    return read_cfg(&f, c);
}

static void add_extra_key(gw_file *f) {
    gw_kv_str(f, "general.name", "tiny");
}
static void add_mean_pooling(gw_file *f) {
    gw_kv_u32(f, "qwen3.pooling_type", 1);
}
static void add_string_layers(gw_file *f) {
    gw_kv_str(f, "qwen3.block_count", "two");
}
static void add_odd_heads(gw_file *f) {
    gw_kv_u32(f, "qwen3.attention.head_count_kv", 3);
}
static void add_zero_eps(gw_file *f) {
    gw_kv_f32(f, "qwen3.attention.layer_norm_rms_epsilon", 0);
}
static void add_value_length(gw_file *f) {
    gw_kv_u32(f, "qwen3.attention.value_length", 64);
}

Test(gguf_config, refuses_bad_values_naming_the_key) {
    qe_config c;
    cr_expect_neq(read_cfg_with("qwen3.pooling_type", add_mean_pooling, 12, &c), 0);
    cr_expect(strstr(err, "qwen3.pooling_type") && strstr(err, "mean"), "%s", err);
    cr_expect_neq(read_cfg_with("qwen3.block_count", add_string_layers, 12, &c), 0);
    cr_expect(strstr(err, "qwen3.block_count") && strstr(err, "string"), "%s", err);
    cr_expect_neq(read_cfg_with("qwen3.attention.head_count_kv", add_odd_heads, 12, &c), 0);
    cr_expect(strstr(err, "head_count_kv 3"), "%s", err);
    cr_expect_neq(read_cfg_with("qwen3.attention.layer_norm_rms_epsilon", add_zero_eps, 12, &c), 0);
    cr_expect(strstr(err, "layer_norm_rms_epsilon") && strstr(err, "positive"), "%s", err);
    cr_expect_neq(read_cfg_with(NULL, add_value_length, 12, &c), 0);
    cr_expect(strstr(err, "value_length 64"), "%s", err);
    /* more tokens than embedding rows */
    cr_expect_neq(read_cfg_with(NULL, add_extra_key, 8, &c), 0);
    cr_expect(strstr(err, "10 tokens") && strstr(err, "8 rows"), "%s", err);
}

Test(gguf_config, refuses_other_architectures) {
    gw_file f = gw_new();
    gw_kv_str(&f, "general.architecture", "llama");
    qe_config c;
    cr_expect_neq(read_cfg(&f, &c), 0);
    cr_expect(strstr(err, "\"llama\"") && strstr(err, "qwen3"), "%s", err);
}

Test(gguf_config, refuses_a_token_embd_of_the_wrong_width) {
    gw_file f = qwen3_file(NULL, 0, 0);
    gw_tensor_add(&f, "token_embd.weight", QT_F32, 32, 12, 0, 0);
    qe_config c;
    cr_expect_neq(read_cfg(&f, &c), 0);
    cr_expect(strstr(err, "token_embd.weight") && strstr(err, "[64, vocab]"), "%s", err);
}
