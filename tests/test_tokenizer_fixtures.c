/* test_tokenizer_fixtures.c — exact match with Hugging Face `tokenizers` on every shared
 * reference tokenization: llama.cpp's vocab test, the extended cases, the Qwen3 case file (with
 * the appended end token and decode), transformers' integration cases, golden_text.json, and
 * every document of the benchmark corpus (id count + sha256 of the ids). */
#include <cjson/cJSON.h>
#include <stdint.h>

#include "test_util.h"
#include "tools/json_strict.h"
#include "tokenizer/tokenizer.h"

void tok_sha256(const uint8_t *data, size_t len, uint8_t out[32]);

#define TOK_FIX FIXTURES "/tokenizer"
#define CORPUS QE_SHARED_DIR "/bench/corpus.jsonl"
#define CORPUS_IDS QE_SHARED_DIR "/bench/corpus.ids.tsv"

static tok_tokenizer *load_tiny(void) {
    SKIP_UNLESS_EXISTS(TINY_MODEL "/tokenizer.json");
    tok_tokenizer *t = NULL;
    char err[512] = "";
    tok_status st = tok_load(TINY_MODEL, &t, err, sizeof err);
    cr_assert_eq(st, TOK_OK, "tok_load: %s", err);
    return t;
}

/* Encodes and compares; returns 1 on exact match, else prints the first difference. */
static int check_ids(const tok_tokenizer *t, const char *label, int idx, const char *text,
                     size_t len, int add_special, const int32_t *want, int n_want) {
    tok_encode_opts o = {add_special, 0, 0, 0};
    int32_t *ids = NULL;
    int n = 0;
    char err[256] = "";
    tok_status st = tok_encode(t, text, len, &o, &ids, &n, err, sizeof err);
    if (st != TOK_OK) {
        cr_log_error("%s case %d: encode failed: %s", label, idx, err);
        return 0;
    }
    int ok = n == n_want;
    int first = 0;
    while (first < n && first < n_want && ids[first] == want[first])
        first++;
    if (first < n_want || first < n) ok = 0;
    if (!ok)
        cr_log_error("%s case %d (%.60s): %d ids, want %d; first difference at %d: got %d want %d",
                     label, idx, text, n, n_want, first, first < n ? ids[first] : -1,
                     first < n_want ? want[first] : -1);
    free(ids);
    return ok;
}

/* The .inp/.out pairs: cases separated by "\n__ggml_vocab_test__\n"; one line of ids each. */
static void run_inp_out(const char *inp_path, const char *out_path, const char *label,
                        int expect_cases) {
    SKIP_UNLESS_EXISTS(inp_path);
    tok_tokenizer *t = load_tiny();
    char *inp = tu_read_file(inp_path, NULL), *out = tu_read_file(out_path, NULL);
    cr_assert(inp && out);
    static const char SEP[] = "\n__ggml_vocab_test__\n";
    char *c = inp, *line = out;
    int cases = 0, passed = 0;
    for (char *end; (end = strstr(c, SEP)); c = end + strlen(SEP)) {
        char *eol = strchr(line, '\n');
        cr_assert(eol, "%s: fewer output lines than cases", label);
        *eol = 0;
        int32_t want[4096];
        int n_want = 0;
        for (char *p = line, *q; n_want < 4096; p = q) {
            long v = strtol(p, &q, 10);
            if (q == p) break;
            want[n_want++] = (int32_t)v;
        }
        passed += check_ids(t, label, cases, c, (size_t)(end - c), 0, want, n_want);
        cases++;
        line = eol + 1;
    }
    fprintf(stderr, "%s: %d/%d cases match\n", label, passed, cases);
    cr_expect_eq(cases, expect_cases, "%s: %d cases, expected %d", label, cases, expect_cases);
    cr_expect_eq(passed, cases, "%s: %d of %d cases match", label, passed, cases);
    free(inp);
    free(out);
    tok_free(t);
}

Test(tokenizer_fixtures, ggml_vocab_qwen2) {
    run_inp_out(TOK_FIX "/ggml-vocab-qwen2.gguf.inp", TOK_FIX "/ggml-vocab-qwen2.gguf.out",
                "ggml-vocab-qwen2", 46);
}

Test(tokenizer_fixtures, qwen2_extended) {
    run_inp_out(TOK_FIX "/qwen2-extended.inp", TOK_FIX "/qwen2-extended.out", "qwen2-extended",
                139);
}

/* The exact bytes of the string value of "key" in a one-line JSON object, with its length:
 * cJSON stops C strings at an escaped NUL (\u0000), which some cases contain. */
static char *json_string_field(const char *line, const char *key, size_t *len) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    cr_assert(p, "no \"%s\" in %.80s", key, line);
    p += strlen(pat);
    while (*p == ' ')
        p++;
    cr_assert_eq(*p, '"');
    p++;
    char *out = malloc(strlen(p) + 1);
    cr_assert_not_null(out);
    *len = json_unescape_string(p, out);
    return out;
}

static int json_ids(const cJSON *arr, int32_t *out, int cap) {
    int n = 0;
    for (const cJSON *v = arr ? arr->child : NULL; v && n < cap; v = v->next)
        out[n++] = (int32_t)v->valueint;
    return n;
}

Test(tokenizer_fixtures, qwen3_cases_ids_special_and_decode) {
    SKIP_UNLESS_EXISTS(TOK_FIX "/qwen3-tokenizer-cases.jsonl");
    tok_tokenizer *t = load_tiny();
    char *all = tu_read_file(TOK_FIX "/qwen3-tokenizer-cases.jsonl", NULL);
    cr_assert(all);
    int cases = 0, ids_ok = 0, special_ok = 0, decode_ok = 0;
    static int32_t want[1 << 16];
    for (char *line = strtok(all, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *c = cJSON_Parse(line);
        cr_assert(c, "bad JSON line in qwen3-tokenizer-cases.jsonl");
        size_t len, dec_len;
        char *text = json_string_field(line, "text", &len);
        char *expect = json_string_field(line, "decoded", &dec_len);
        int n = json_ids(cJSON_GetObjectItem(c, "ids"), want, 1 << 16);
        ids_ok += check_ids(t, "qwen3 ids", cases, text, len, 0, want, n);
        int ns = json_ids(cJSON_GetObjectItem(c, "ids_qwen3_embedding_add_special"), want, 1 << 16);
        special_ok += check_ids(t, "qwen3 add_special", cases, text, len, 1, want, ns);
        /* decode of the ids without specials gives "decoded" (NFC of the text). */
        char *dec = NULL;
        size_t dlen = 0;
        char err[256];
        n = json_ids(cJSON_GetObjectItem(c, "ids"), want, 1 << 16);
        cr_assert_eq(tok_decode(t, want, n, 0, &dec, &dlen, err, sizeof err), TOK_OK, "%s", err);
        int same = dlen == dec_len && !memcmp(dec, expect, dlen);
        if (cJSON_IsTrue(cJSON_GetObjectItem(c, "decode_roundtrip")))
            same = same && dlen == len && !memcmp(dec, text, len);
        if (!same) cr_log_error("qwen3 decode case %d: got '%s' want '%s'", cases, dec, expect);
        decode_ok += same;
        free(dec);
        free(text);
        free(expect);
        cJSON_Delete(c);
        cases++;
    }
    fprintf(stderr, "qwen3-tokenizer-cases: ids %d/%d, with end token %d/%d, decode %d/%d\n",
            ids_ok, cases, special_ok, cases, decode_ok, cases);
    cr_expect_eq(cases, 141);
    cr_expect_eq(ids_ok, cases);
    cr_expect_eq(special_ok, cases);
    cr_expect_eq(decode_ok, cases);
    free(all);
    tok_free(t);
}

static int encode_equal(const tok_tokenizer *t, const char *a, const char *b) {
    int32_t *x, *y;
    int nx, ny;
    char err[256];
    cr_assert_eq(tok_encode(t, a, strlen(a), NULL, &x, &nx, err, sizeof err), TOK_OK);
    cr_assert_eq(tok_encode(t, b, strlen(b), NULL, &y, &ny, err, sizeof err), TOK_OK);
    int same = nx == ny && !memcmp(x, y, (size_t)nx * sizeof *x);
    free(x);
    free(y);
    return same;
}

Test(tokenizer_fixtures, transformers_integration) {
    const char *path = TOK_FIX "/hf-transformers-qwen2-tokenizer-integration.json";
    SKIP_UNLESS_EXISTS(path);
    tok_tokenizer *t = load_tiny();
    char *doc = tu_read_file(path, NULL);
    cJSON *root = cJSON_Parse(doc);
    cr_assert(root);
    int cases = 0, passed = 0;
    static int32_t want[1 << 16];
    const cJSON *arr = cJSON_GetObjectItem(root, "cases");
    for (const cJSON *c = arr->child; c; c = c->next, cases++) {
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        int n = json_ids(cJSON_GetObjectItem(c, "ids"), want, 1 << 16);
        passed += check_ids(t, "transformers", cases, text, strlen(text), 0, want, n);
    }
    /* NFC: the decomposed input and its NFC form tokenize alike, and decode gives the NFC. */
    const cJSON *nfc = cJSON_GetObjectItem(root, "nfc_normalization_case");
    const char *in = cJSON_GetObjectItem(nfc, "input")->valuestring;
    const char *nfc_out = cJSON_GetObjectItem(nfc, "nfc_output")->valuestring;
    cr_expect(strcmp(in, nfc_out) != 0, "the NFC case should differ from its input");
    cr_expect(encode_equal(t, in, nfc_out), "NFC: input and NFC form tokenize differently");
    int32_t *ids;
    int n;
    char err[256], *dec;
    size_t dlen;
    cr_assert_eq(
        tok_encode(t, in, strlen(in), &(tok_encode_opts){0, 0, 0, 0}, &ids, &n, err, sizeof err),
        TOK_OK);
    cr_assert_eq(tok_decode(t, ids, n, 0, &dec, &dlen, err, sizeof err), TOK_OK);
    cr_expect_str_eq(dec, nfc_out);
    fprintf(stderr, "transformers integration: %d/%d cases match (+ NFC case)\n", passed, cases);
    cr_expect_eq(cases, 3);
    cr_expect_eq(passed, cases);
    free(ids);
    free(dec);
    cJSON_Delete(root);
    free(doc);
    tok_free(t);
}

Test(tokenizer_fixtures, golden_text_ids) {
    SKIP_UNLESS_EXISTS(TINY_MODEL "/golden_text.json");
    tok_tokenizer *t = load_tiny();
    char *doc = tu_read_file(TINY_MODEL "/golden_text.json", NULL);
    cJSON *root = cJSON_Parse(doc);
    cr_assert(root);
    int cases = 0, passed = 0;
    static int32_t want[1 << 16];
    for (const cJSON *c = cJSON_GetObjectItem(root, "cases")->child; c; c = c->next, cases++) {
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        int n = json_ids(cJSON_GetObjectItem(c, "ids"), want, 1 << 16);
        passed += check_ids(t, "golden_text", cases, text, strlen(text), 1, want, n);
    }
    fprintf(stderr, "golden_text.json: %d/%d cases match\n", passed, cases);
    cr_expect_gt(cases, 0);
    cr_expect_eq(passed, cases);
    cJSON_Delete(root);
    free(doc);
    tok_free(t);
}

Test(tokenizer_fixtures, whole_corpus_counts_and_sha256) {
    SKIP_UNLESS_EXISTS(CORPUS);
    SKIP_UNLESS_EXISTS(CORPUS_IDS);
    tok_tokenizer *t = load_tiny();
    char *corpus = tu_read_file(CORPUS, NULL), *ref = tu_read_file(CORPUS_IDS, NULL);
    cr_assert(corpus && ref);
    char *ref_line, *save_ref = NULL;
    int docs = 0, passed = 0;
    long total = 0;
    char *save = NULL;
    ref_line = strtok_r(ref, "\n", &save_ref);
    for (char *l = strtok_r(corpus, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        while (ref_line && ref_line[0] == '#')
            ref_line = strtok_r(NULL, "\n", &save_ref);
        cr_assert(ref_line, "corpus.ids.tsv has fewer lines than the corpus");
        int doc = -1, want_n = -1;
        char want_hex[65] = "";
        cr_assert_eq(sscanf(ref_line, "%d\t%d\t%64s", &doc, &want_n, want_hex), 3);
        cr_assert_eq(doc, docs);
        cJSON *j = cJSON_Parse(l);
        cr_assert(j, "corpus line %d is not JSON", docs + 1);
        const char *text = cJSON_GetObjectItem(j, "text")->valuestring;
        int32_t *ids;
        int n;
        char err[256];
        cr_assert_eq(tok_encode(t, text, strlen(text), NULL, &ids, &n, err, sizeof err), TOK_OK,
                     "doc %d: %s", docs, err);
        uint8_t le[4 * 8192 + 4], *buf = (size_t)n * 4 <= sizeof le ? le : malloc((size_t)n * 4);
        for (int i = 0; i < n; i++)
            for (int k = 0; k < 4; k++)
                buf[4 * i + k] = (uint8_t)((uint32_t)ids[i] >> (8 * k));
        uint8_t dig[32];
        tok_sha256(buf, (size_t)n * 4, dig);
        char hex[65];
        for (int i = 0; i < 32; i++)
            snprintf(hex + 2 * i, 3, "%02x", dig[i]);
        int ok = n == want_n && !strcmp(hex, want_hex);
        if (!ok) cr_log_error("corpus doc %d: %d ids (want %d), sha256 %s", docs, n, want_n, hex);
        passed += ok;
        total += n;
        if (buf != le) free(buf);
        free(ids);
        cJSON_Delete(j);
        docs++;
        ref_line = strtok_r(NULL, "\n", &save_ref);
    }
    fprintf(stderr, "corpus: %d/%d documents match (count + sha256), %ld ids\n", passed, docs,
            total);
    cr_expect_eq(docs, 2959);
    cr_expect_eq(passed, docs);
    cr_expect_eq(total, 1394989L);
    free(corpus);
    free(ref);
    tok_free(t);
}
