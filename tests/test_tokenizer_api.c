/* test_tokenizer_api.c — the tokenizer API beyond the reference cases: truncation, errors
 * (invalid UTF-8, unknown ids, unsupported tokenizer.json), long inputs staying fast, threads
 * agreeing with one thread, prompts and instructions, both merge spellings. */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "test_util.h"
#include "tokenizer/tokenizer.h"

void tok_sha256(const uint8_t *data, size_t len, uint8_t out[32]);

#define CORPUS QE_SHARED_DIR "/bench/corpus.jsonl"
#define END_ID 151643

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static tok_tokenizer *load_tiny(void) {
    SKIP_UNLESS_EXISTS(TINY_MODEL "/tokenizer.json");
    tok_tokenizer *t = NULL;
    char err[512] = "";
    cr_assert_eq(tok_load(TINY_MODEL, &t, err, sizeof err), TOK_OK, "tok_load: %s", err);
    return t;
}

static int32_t *enc(const tok_tokenizer *t, const char *s, size_t len, tok_encode_opts *o, int *n) {
    int32_t *ids = NULL;
    char err[256] = "";
    tok_status st = tok_encode(t, s, len, o, &ids, n, err, sizeof err);
    cr_assert_eq(st, TOK_OK, "encode: %s", err);
    return ids;
}

static const char LONG_TEXT[] =
    "The quick brown fox jumps over the lazy dog. 東京は日本の首都です。 Ünïcödé text, "
    "numbers 1234567 and code: int main(void) { return 0; }\n\n  indented line\r\n";

Test(tokenizer_api, sha256_known_vectors) {
    static const struct {
        const char *msg, *hex;
    } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint8_t d[32];
        char hex[65];
        tok_sha256((const uint8_t *)v[i].msg, strlen(v[i].msg), d);
        for (int k = 0; k < 32; k++)
            snprintf(hex + 2 * k, 3, "%02x", d[k]);
        cr_expect_str_eq(hex, v[i].hex, "sha256('%s')", v[i].msg);
    }
}

Test(tokenizer_api, loads_fast_with_sizes_and_end_id) {
    SKIP_UNLESS_EXISTS(TINY_MODEL "/tokenizer.json");
    /* the loader is single-threaded: its thread's CPU time is the work it does, whatever else
     * the machine runs (wall time on a loaded CI box is not its cost) */
    struct timespec c0, c1;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
    double t0 = now_s();
    tok_tokenizer *t = load_tiny();
    double dt = now_s() - t0;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
    const double cpu = (double)(c1.tv_sec - c0.tv_sec) + 1e-9 * (double)(c1.tv_nsec - c0.tv_nsec);
    fprintf(stderr, "tokenizer.json load: %.0f ms (%.0f ms of CPU)\n", dt * 1e3, cpu * 1e3);
    cr_expect_lt(cpu, 1.0, "loading took %.2f s of CPU", cpu);
    cr_expect_eq(tok_vocab_size(t), 151669);
    cr_expect_eq(tok_end_id(t), END_ID);
    int n;
    int32_t *ids = enc(t, "", 0, NULL, &n);
    cr_expect(n == 1 && ids[0] == END_ID, "empty text gives just the end token");
    free(ids);
    tok_free(t);
}

Test(tokenizer_api, truncation_keeps_end_token) {
    tok_tokenizer *t = load_tiny();
    int n_full;
    int32_t *full = enc(t, LONG_TEXT, strlen(LONG_TEXT), NULL, &n_full);
    cr_assert_gt(n_full, 20);
    cr_assert_eq(full[n_full - 1], END_ID);
    int n;
    tok_encode_opts right = {1, 10, 0, 0}, left = {1, 10, 1, 0}, plain = {0, 5, 0, 0};
    int32_t *r = enc(t, LONG_TEXT, strlen(LONG_TEXT), &right, &n);
    cr_assert_eq(n, 10);
    cr_expect_arr_eq(r, full, 9 * sizeof *r, "right truncation keeps the first 9 ids");
    cr_expect_eq(r[9], END_ID);
    free(r);
    int32_t *l = enc(t, LONG_TEXT, strlen(LONG_TEXT), &left, &n);
    cr_assert_eq(n, 10);
    cr_expect_arr_eq(l, full + (n_full - 10), 9 * sizeof *l, "left truncation keeps the last 9");
    cr_expect_eq(l[9], END_ID);
    free(l);
    int32_t *p = enc(t, LONG_TEXT, strlen(LONG_TEXT), &plain, &n);
    cr_assert_eq(n, 5);
    cr_expect_arr_eq(p, full, 5 * sizeof *p, "without the template: the first 5 ids");
    free(p);
    tok_encode_opts one = {1, 1, 0, 0};
    int32_t *o = enc(t, LONG_TEXT, strlen(LONG_TEXT), &one, &n);
    cr_expect(n == 1 && o[0] == END_ID, "max_length 1 keeps only the end token");
    free(o);
    tok_encode_opts exact = {1, n_full, 0, 1};
    int32_t *e = enc(t, LONG_TEXT, strlen(LONG_TEXT), &exact, &n);
    cr_expect_eq(n, n_full, "a text of exactly max_length is not an error");
    free(e);
    free(full);
    tok_free(t);
}

Test(tokenizer_api, too_long_without_truncation_is_an_error) {
    tok_tokenizer *t = load_tiny();
    tok_encode_opts o = {1, 8, 0, 1};
    int32_t *ids = (int32_t *)1;
    int n = -1;
    char err[256] = "";
    tok_status st = tok_encode(t, LONG_TEXT, strlen(LONG_TEXT), &o, &ids, &n, err, sizeof err);
    cr_expect_eq(st, TOK_ERR_TOO_LONG);
    cr_expect_null(ids);
    cr_expect(strstr(err, "max_length 8") != NULL, "message: %s", err);
    tok_free(t);
}

Test(tokenizer_api, invalid_utf8_reports_the_offset) {
    tok_tokenizer *t = load_tiny();
    static const struct {
        const char *bytes;
        size_t len, offset;
        const char *what;
    } bad[] = {
        {"ab\xC0\xAF", 4, 2, "overlong 2-byte"},
        {"x\xE0\x80\xAF", 4, 1, "overlong 3-byte"},
        {"\xF0\x80\x80\xAF", 4, 0, "overlong 4-byte"},
        {"hi \xED\xA0\x80", 6, 3, "surrogate D800"},
        {"\xED\xBF\xBF", 3, 0, "surrogate DFFF"},
        {"abc\xE4\xB8", 5, 3, "truncated 3-byte at end"},
        {"\xE4\xB8x", 3, 0, "truncated 3-byte before ASCII"},
        {"\xC3", 1, 0, "lone lead byte"},
        {"\x80"
         "abc",
         4, 0, "stray continuation"},
        {"0123456789\xBF", 11, 10, "stray continuation after an ASCII run"},
        {"\xF4\x90\x80\x80", 4, 0, "above U+10FFFF"},
        {"\xF5\x80\x80\x80", 4, 0, "F5 lead byte"},
        {"\xFF", 1, 0, "FF byte"},
        {"\xC3\xA9\xC3", 3, 2, "truncated after a valid character"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int32_t *ids = NULL;
        int n = 0;
        char err[256] = "", want[64];
        tok_status st = tok_encode(t, bad[i].bytes, bad[i].len, NULL, &ids, &n, err, sizeof err);
        cr_expect_eq(st, TOK_ERR_UTF8, "%s: status %s", bad[i].what, tok_status_name(st));
        cr_expect_null(ids, "%s: no ids on error", bad[i].what);
        snprintf(want, sizeof want, "byte offset %zu", bad[i].offset);
        cr_expect(strstr(err, want) != NULL, "%s: message '%s' lacks '%s'", bad[i].what, err, want);
    }
    /* Valid edge code points pass. */
    static const char ok[] = "\x7F\xC2\x80\xDF\xBF\xE0\xA0\x80\xED\x9F\xBF\xEE\x80\x80"
                             "\xF0\x90\x80\x80\xF4\x8F\xBF\xBF";
    int n;
    free(enc(t, ok, sizeof ok - 1, NULL, &n));
    tok_free(t);
}

static void timed_roundtrip(const tok_tokenizer *t, const char *s, size_t len, const char *what,
                            int expect_roundtrip) {
    double t0 = now_s();
    int n;
    tok_encode_opts o = {0, 0, 0, 0};
    int32_t *ids = enc(t, s, len, &o, &n);
    double dt = now_s() - t0;
    fprintf(stderr, "%s: %zu bytes -> %d ids in %.1f ms\n", what, len, n, dt * 1e3);
    cr_expect_lt(dt, 2.0, "%s took %.2f s", what, dt);
    cr_expect_gt(n, 0);
    char *dec;
    size_t dlen;
    char err[256];
    cr_assert_eq(tok_decode(t, ids, n, 0, &dec, &dlen, err, sizeof err), TOK_OK, "%s", err);
    if (expect_roundtrip)
        cr_expect(dlen == len && !memcmp(dec, s, len), "%s: decode differs", what);
    free(dec);
    free(ids);
}

Test(tokenizer_api, long_inputs_stay_fast, .timeout = 60) {
    tok_tokenizer *t = load_tiny();
    size_t n = 100000;
    char *s = malloc(4 * n + 1);
    static const char *units[] = {"a", " ", "1", "!", "\n", "é", "東", "\xF0\x9F\x98\x80", "ab"};
    for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
        size_t k = strlen(units[u]), len = 0;
        for (size_t i = 0; i < n; i++, len += k)
            memcpy(s + len, units[u], k);
        char what[64];
        snprintf(what, sizeof what, "100k x '%s'", units[u]);
        timed_roundtrip(t, s, len, what, 1);
    }
    free(s);
    /* 1 MB of mixed text with few repeats: seeded pseudo-random words from several scripts. */
    size_t cap = 1 << 20, len = 0;
    char *m = malloc(cap + 64);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    static const char *pieces[] = {"th", "e", "qu", "ick", "ü",  "ñ", "日", "本", "д",  "ж",
                                   "ا",  "ب", "7",  "42",  "()", ";", "  ", "\n", "'s", "é"};
    while (len < cap) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        const char *p = pieces[x % 20];
        size_t k = strlen(p);
        memcpy(m + len, p, k);
        len += k;
        if ((x >> 40) % 5 == 0) m[len++] = ' ';
    }
    timed_roundtrip(t, m, len, "1 MB mixed", 1);
    free(m);
    tok_free(t);
}

typedef struct {
    const tok_tokenizer *t;
    char **texts;
    int n_texts;
    int32_t **ids;
    int *n_ids;
} mt_job;

static void *mt_worker(void *arg) {
    mt_job *j = arg;
    for (int i = 0; i < j->n_texts; i++) {
        char err[256];
        if (tok_encode(j->t, j->texts[i], strlen(j->texts[i]), NULL, &j->ids[i], &j->n_ids[i], err,
                       sizeof err) != TOK_OK)
            j->n_ids[i] = -1;
    }
    return NULL;
}

Test(tokenizer_api, threads_agree_with_one_thread, .timeout = 120) {
    SKIP_UNLESS_EXISTS(CORPUS);
    tok_tokenizer *t = load_tiny();
    char *corpus = tu_read_file(CORPUS, NULL);
    enum { DOCS = 600, THREADS = 4 };
    char *texts[DOCS];
    int n_texts = 0;
    char *save = NULL;
    for (char *l = strtok_r(corpus, "\n", &save); l && n_texts < DOCS;
         l = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(l);
        texts[n_texts++] = strdup(cJSON_GetObjectItem(j, "text")->valuestring);
        cJSON_Delete(j);
    }
    mt_job jobs[THREADS + 1];
    pthread_t th[THREADS];
    for (int k = 0; k <= THREADS; k++) {
        jobs[k] =
            (mt_job){t, texts, n_texts, calloc(DOCS, sizeof(int32_t *)), calloc(DOCS, sizeof(int))};
    }
    mt_worker(&jobs[THREADS]); /* the single-thread reference */
    for (int k = 0; k < THREADS; k++)
        pthread_create(&th[k], NULL, mt_worker, &jobs[k]);
    for (int k = 0; k < THREADS; k++)
        pthread_join(th[k], NULL);
    int mismatches = 0;
    for (int k = 0; k < THREADS; k++)
        for (int i = 0; i < n_texts; i++) {
            mt_job *a = &jobs[k], *b = &jobs[THREADS];
            if (a->n_ids[i] != b->n_ids[i] || a->n_ids[i] < 0 ||
                memcmp(a->ids[i], b->ids[i], (size_t)a->n_ids[i] * sizeof(int32_t)))
                mismatches++;
        }
    cr_expect_eq(mismatches, 0, "%d of %d thread encodings differ", mismatches, THREADS * n_texts);
    for (int k = 0; k <= THREADS; k++) {
        for (int i = 0; i < n_texts; i++)
            free(jobs[k].ids[i]);
        free(jobs[k].ids);
        free(jobs[k].n_ids);
    }
    for (int i = 0; i < n_texts; i++)
        free(texts[i]);
    free(corpus);
    tok_free(t);
}

Test(tokenizer_api, instruction_and_prompts) {
    char *s = tok_format_instruction("Find the capital", "Paris?");
    cr_expect_str_eq(s, "Instruct: Find the capital\nQuery:Paris?");
    free(s);
    tok_tokenizer *t = load_tiny();
    char *cfg = tu_read_file(TINY_MODEL "/config_sentence_transformers.json", NULL);
    cJSON *root = cJSON_Parse(cfg);
    const cJSON *prompts = cJSON_GetObjectItem(root, "prompts");
    const char *q = cJSON_GetObjectItem(prompts, "query")->valuestring;
    cr_assert_not_null(tok_prompt(t, "query"));
    cr_expect_str_eq(tok_prompt(t, "query"), q);
    cr_expect_str_eq(tok_prompt(t, "document"), "");
    cr_expect_null(tok_prompt(t, "no-such-prompt"));
    /* The model's query prompt is the instruction format with the default task. */
    char *fmt = tok_format_instruction(
        "Given a web search query, retrieve relevant passages that answer the query", "");
    cr_expect_str_eq(fmt, q);
    free(fmt);
    cJSON_Delete(root);
    free(cfg);
    tok_free(t);
    tok_tokenizer *bare = NULL;
    char err[256];
    cr_assert_eq(tok_load_file(TINY_MODEL "/tokenizer.json", &bare, err, sizeof err), TOK_OK);
    cr_expect_null(tok_prompt(bare, "query"), "tok_load_file reads no prompts");
    tok_free(bare);
}

Test(tokenizer_api, decode_special_unknown_and_partial_bytes) {
    tok_tokenizer *t = load_tiny();
    int n;
    int32_t *ids = enc(t, "Hello<|im_start|> world", 23, NULL, &n);
    cr_assert_eq(ids[n - 1], END_ID);
    char *s, err[256];
    size_t len;
    cr_assert_eq(tok_decode(t, ids, n, 0, &s, &len, err, sizeof err), TOK_OK);
    cr_expect_str_eq(s, "Hello<|im_start|> world<|endoftext|>");
    free(s);
    cr_assert_eq(tok_decode(t, ids, n, 1, &s, &len, err, sizeof err), TOK_OK);
    cr_expect_str_eq(s, "Hello world");
    free(s);
    free(ids);
    int32_t bad[] = {9707, 151669};
    cr_expect_eq(tok_decode(t, bad, 2, 0, &s, &len, err, sizeof err), TOK_ERR_ID);
    cr_expect(strstr(err, "151669") != NULL, "message: %s", err);
    int32_t neg[] = {-1};
    cr_expect_eq(tok_decode(t, neg, 1, 0, &s, &len, err, sizeof err), TOK_ERR_ID);
    /* U+20000 is split over several ids: its first id alone is an incomplete sequence and
     * decodes to U+FFFD (HF's lossy decoder), the ids together give the character back. */
    static const char rare[] = "\xF0\xA0\x80\x80";
    ids = enc(t, rare, 4, &(tok_encode_opts){0, 0, 0, 0}, &n);
    cr_assert_geq(n, 2, "U+20000 should take several ids, got %d", n);
    cr_assert_eq(tok_decode(t, ids, 1, 0, &s, &len, err, sizeof err), TOK_OK);
    cr_expect(strstr(s, "\xEF\xBF\xBD") != NULL, "a partial sequence decodes to U+FFFD");
    free(s);
    cr_assert_eq(tok_decode(t, ids, n, 0, &s, &len, err, sizeof err), TOK_OK);
    cr_expect_str_eq(s, rare);
    free(s);
    free(ids);
    tok_free(t);
}

/* Writes a tokenizer.json into a scratch dir and loads it. */
static tok_status load_json_text(const char *tag, const char *json, tok_tokenizer **t, char *err,
                                 size_t errlen) {
    char dir[1024], path[1100];
    tu_scratch_dir(dir, sizeof dir, tag);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs(json, f);
    fclose(f);
    return tok_load(dir, t, err, errlen);
}

Test(tokenizer_api, refuses_what_it_does_not_implement) {
    tok_tokenizer *t = NULL;
    char err[512] = "";
    tok_status st = load_json_text(
        "wordpiece",
        "{\"model\":{\"type\":\"WordPiece\",\"unk_token\":\"[UNK]\",\"vocab\":{\"[UNK]\":0}}}", &t,
        err, sizeof err);
    cr_expect_eq(st, TOK_ERR_UNSUPPORTED);
    cr_expect(strstr(err, "WordPiece") != NULL, "message: %s", err);
    cr_expect_null(t);
    st = load_json_text("unigram", "{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",0.0]]}}", &t,
                        err, sizeof err);
    cr_expect_eq(st, TOK_ERR_UNSUPPORTED);
    cr_expect(strstr(err, "Unigram") != NULL, "message: %s", err);
    st = load_json_text("badjson", "{\"model\": ", &t, err, sizeof err);
    cr_expect_eq(st, TOK_ERR_FORMAT);
    char dir[1024];
    tu_scratch_dir(dir, sizeof dir, "empty");
    cr_expect_eq(tok_load(dir, &t, err, sizeof err), TOK_ERR_IO);
    cr_expect(strstr(err, "tokenizer.json") != NULL, "message: %s", err);
}

/* An added token whose id is past any vocabulary is named with its id (issue 11, item 14): not
 * "entry without id or content". */
Test(tokenizer_api, added_token_id_out_of_range_is_named) {
    tok_tokenizer *t = NULL;
    char err[512] = "";
    tok_status st = load_json_text(
        "added-2p40",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
        "\"added_tokens\":[{\"id\":1099511627776,\"content\":\"<big>\",\"special\":true}]}",
        &t, err, sizeof err);
    cr_expect_eq(st, TOK_ERR_FORMAT);
    cr_expect(strstr(err, "1099511627776") && strstr(err, "out of range") && strstr(err, "<big>"),
              "message: %s", err);
    st = load_json_text("added-noid",
                        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
                        "\"added_tokens\":[{\"content\":\"<x>\"}]}",
                        &t, err, sizeof err);
    cr_expect_eq(st, TOK_ERR_FORMAT);
    cr_expect(strstr(err, "without id") != NULL, "message: %s", err);
}

/* A tiny byte-level BPE: the 256 byte tokens plus merges, in either spelling. */
static char *tiny_bpe_json(int pair_form, const char *normalizer) {
    cJSON *root = cJSON_CreateObject(), *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    int next = 256;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        int cp = printable ? b : next++;
        char s[4] = {0};
        if (cp < 0x80) {
            s[0] = (char)cp;
        } else {
            s[0] = (char)(0xC0 | (cp >> 6));
            s[1] = (char)(0x80 | (cp & 0x3F));
        }
        cJSON_AddNumberToObject(vocab, s, b);
    }
    static const char *merges[][2] = {{"l", "o"}, {"lo", "w"}, {"e", "r"}, {"\xC4\xA0", "low"}};
    static const char *merged[] = {"lo", "low", "er", "\xC4\xA0low"};
    cJSON *ml = cJSON_AddArrayToObject(model, "merges");
    for (int i = 0; i < 4; i++) {
        cJSON_AddNumberToObject(vocab, merged[i], 256 + i);
        if (pair_form) {
            cJSON *p = cJSON_CreateArray();
            cJSON_AddItemToArray(p, cJSON_CreateString(merges[i][0]));
            cJSON_AddItemToArray(p, cJSON_CreateString(merges[i][1]));
            cJSON_AddItemToArray(ml, p);
        } else {
            char s[32];
            snprintf(s, sizeof s, "%s %s", merges[i][0], merges[i][1]);
            cJSON_AddItemToArray(ml, cJSON_CreateString(s));
        }
    }
    if (normalizer) {
        cJSON_AddItemToObject(root, "normalizer", cJSON_Parse(normalizer));
    } else {
        cJSON_AddNullToObject(root, "normalizer");
    }
    cJSON_AddItemToObject(root, "pre_tokenizer",
                          cJSON_Parse("{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
                                      "\"use_regex\":true}"));
    cJSON_AddNullToObject(root, "post_processor");
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

Test(tokenizer_api, merges_in_both_spellings_and_gpt2_split) {
    const char *text = "lower low  lowlow";
    int32_t *got[2];
    int n[2];
    for (int form = 0; form < 2; form++) {
        char *json = tiny_bpe_json(form, NULL), err[512] = "";
        tok_tokenizer *t = NULL;
        cr_assert_eq(load_json_text(form ? "pairs" : "strings", json, &t, err, sizeof err), TOK_OK,
                     "%s", err);
        cr_expect_eq(tok_end_id(t), -1, "no post-processor: nothing appended");
        got[form] = enc(t, text, strlen(text), NULL, &n[form]);
        tok_free(t);
        free(json);
    }
    /* GPT-2 split: "lower" " low" " " " lowlow" -> low er | Ġlow | Ġ | Ġlow low
     * (byte b's token has id b here, so the lone space is id 32). */
    const int32_t want[] = {257, 258, 259, 32, 259, 257};
    cr_assert_eq(n[0], 6, "got %d ids", n[0]);
    cr_expect_arr_eq(got[0], want, sizeof want);
    cr_expect_eq(n[1], n[0]);
    cr_expect_arr_eq(got[1], got[0], (size_t)n[0] * sizeof(int32_t));
    free(got[0]);
    free(got[1]);
    char *json = tiny_bpe_json(0, "{\"type\":\"Lowercase\"}"), err[512];
    tok_tokenizer *t = NULL;
    cr_expect_eq(load_json_text("lowercase", json, &t, err, sizeof err), TOK_ERR_UNSUPPORTED);
    cr_expect(strstr(err, "Lowercase") != NULL, "message: %s", err);
    free(json);
}

Test(tokenizer_api, word_caches_belong_to_their_tokenizer) {
    /* Same words through two different vocabularies on one thread, interleaved, and again
     * after a free and reload: each tokenizer must see only its own cached words. */
    tok_tokenizer *qwen = load_tiny();
    char *json = tiny_bpe_json(0, NULL), err[512];
    tok_tokenizer *small = NULL;
    cr_assert_eq(load_json_text("cache", json, &small, err, sizeof err), TOK_OK, "%s", err);
    const char *text = "lower low";
    tok_encode_opts plain = {0, 0, 0, 0};
    int nq, ns, nq2;
    int32_t *q = enc(qwen, text, strlen(text), &plain, &nq);
    int32_t *s = enc(small, text, strlen(text), &plain, &ns);
    const int32_t want_small[] = {257, 258, 259};
    cr_assert_eq(ns, 3);
    cr_expect_arr_eq(s, want_small, sizeof want_small);
    int32_t *q2 = enc(qwen, text, strlen(text), &plain, &nq2);
    cr_assert_eq(nq2, nq);
    cr_expect_arr_eq(q2, q, (size_t)nq * sizeof *q);
    cr_expect(nq != ns || memcmp(q, s, (size_t)nq * sizeof *q), "the vocabularies differ");
    free(s);
    free(q2);
    tok_free(small);
    cr_assert_eq(load_json_text("cache2", json, &small, err, sizeof err), TOK_OK, "%s", err);
    s = enc(small, text, strlen(text), &plain, &ns);
    cr_assert_eq(ns, 3);
    cr_expect_arr_eq(s, want_small, sizeof want_small);
    free(s);
    free(q);
    free(json);
    tok_free(small);
    tok_free(qwen);
}
