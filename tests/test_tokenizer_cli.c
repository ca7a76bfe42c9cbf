/* test_tokenizer_cli.c — `qembed tokenize` as a user runs it: output ids equal the library's
 * in input order on several threads, --no-special / --max-length, an escaped NUL kept exactly,
 * and bad lines (JSON, missing "text", invalid UTF-8) failing with their line number. */
#include <cjson/cJSON.h>
#include <sys/wait.h>

#include "test_util.h"
#include "tokenizer/tokenizer.h"

#define QEMBED QE_BINARY_DIR "/qembed"
#define CORPUS QE_SHARED_DIR "/bench/corpus.jsonl"

/* Runs `qembed tokenize ARGS < input`; returns the exit status, stdout and stderr. */
static int tokenize(const char *dir, const char *input, size_t input_len, const char *args,
                    char **out, char **err) {
    char in_path[1200], out_path[1200], err_path[1200], cmd[4096];
    snprintf(in_path, sizeof in_path, "%s/in.jsonl", dir);
    snprintf(out_path, sizeof out_path, "%s/out.jsonl", dir);
    snprintf(err_path, sizeof err_path, "%s/err.txt", dir);
    FILE *f = fopen(in_path, "wb");
    cr_assert(f);
    fwrite(input, 1, input_len, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, QEMBED " tokenize --model '%s' %s --input '%s' > '%s' 2> '%s'",
             TINY_MODEL, args, in_path, out_path, err_path);
    int st = system(cmd);
    *out = tu_read_file(out_path, NULL);
    *err = tu_read_file(err_path, NULL);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static tok_tokenizer *load_tiny(void) {
    SKIP_UNLESS_EXISTS(TINY_MODEL "/tokenizer.json");
    tok_tokenizer *t;
    char err[512];
    cr_assert_eq(tok_load(TINY_MODEL, &t, err, sizeof err), TOK_OK, "%s", err);
    return t;
}

/* Compares one output line {"ids": [...]} with the library's ids for text. */
static int line_matches(const char *line, const tok_tokenizer *t, const char *text, size_t len,
                        const tok_encode_opts *o) {
    int32_t *ids;
    int n;
    char err[256];
    cr_assert_eq(tok_encode(t, text, len, o, &ids, &n, err, sizeof err), TOK_OK, "%s", err);
    cJSON *j = cJSON_Parse(line);
    const cJSON *arr = cJSON_GetObjectItem(j, "ids");
    int ok = cJSON_IsArray(arr) && cJSON_GetArraySize(arr) == n;
    int i = 0;
    for (const cJSON *v = ok ? arr->child : NULL; v; v = v->next, i++)
        ok = ok && v->valueint == ids[i];
    cJSON_Delete(j);
    free(ids);
    return ok;
}

Test(tokenizer_cli, corpus_lines_in_order_on_threads, .timeout = 120) {
    SKIP_UNLESS_EXISTS(CORPUS);
    tok_tokenizer *t = load_tiny();
    char dir[1024];
    tu_scratch_dir(dir, sizeof dir, "tok-cli");
    size_t len = 0;
    char *corpus = tu_read_file(CORPUS, &len);
    cr_assert(corpus);
    char *out, *err;
    cr_assert_eq(tokenize(dir, corpus, len, "--threads 2", &out, &err), 0, "stderr: %s", err);
    cr_expect(strstr(err, "MB/s") && strstr(err, "tokens/s") && strstr(err, "2959 docs"),
              "throughput line: %s", err);
    int lines = 0, matched = 0;
    char *save_in = NULL, *save_out = NULL;
    char *o = strtok_r(out, "\n", &save_out);
    for (char *l = strtok_r(corpus, "\n", &save_in); l; l = strtok_r(NULL, "\n", &save_in)) {
        cr_assert(o, "fewer output lines than input lines");
        cJSON *j = cJSON_Parse(l);
        const char *text = cJSON_GetObjectItem(j, "text")->valuestring;
        matched += line_matches(o, t, text, strlen(text), NULL);
        cJSON_Delete(j);
        lines++;
        o = strtok_r(NULL, "\n", &save_out);
    }
    cr_expect_null(o, "more output lines than input lines");
    cr_expect_eq(matched, lines, "%d of %d lines match the library", matched, lines);
    free(corpus);
    free(out);
    free(err);
    tok_free(t);
}

Test(tokenizer_cli, options_and_escaped_nul) {
    tok_tokenizer *t = load_tiny();
    char dir[1024];
    tu_scratch_dir(dir, sizeof dir, "tok-cli-opts");
    static const char in[] = "{\"text\": \"Hello world, this is a longer line of text\"}\n"
                             "{\"text\": \"a\\u0000b\"}\n";
    char *out, *err;
    cr_assert_eq(tokenize(dir, in, sizeof in - 1, "--no-special --threads 1", &out, &err), 0, "%s",
                 err);
    char *second = strchr(out, '\n');
    cr_assert(second);
    *second++ = 0;
    tok_encode_opts plain = {0, 0, 0, 0};
    const char *first_text = "Hello world, this is a longer line of text";
    cr_expect(line_matches(out, t, first_text, strlen(first_text), &plain), "--no-special: %s",
              out);
    cr_expect(line_matches(second, t, "a\0b", 3, &plain), "escaped NUL: %s", second);
    free(out);
    free(err);
    cr_assert_eq(tokenize(dir, in, sizeof in - 1, "--max-length 5", &out, &err), 0, "%s", err);
    tok_encode_opts five = {1, 5, 0, 0};
    cr_expect(line_matches(out, t, first_text, strlen(first_text), &five), "--max-length: %s", out);
    free(out);
    free(err);
    tok_free(t);
}

Test(tokenizer_cli, bad_lines_fail_with_their_number) {
    SKIP_UNLESS_EXISTS(TINY_MODEL "/tokenizer.json");
    char dir[1024];
    tu_scratch_dir(dir, sizeof dir, "tok-cli-bad");
    static const struct {
        const char *input, *want;
    } cases[] = {
        {"{\"text\": \"ok\"}\n{\"text\": \"ok\"}\n{\"text\": \"x\"\n", "line 3: not valid JSON"},
        {"{\"text\": \"ok\"}\n{\"body\": \"no text\"}\n", "line 2: no string field \"text\""},
        {"{\"text\": 42}\n", "line 1: no string field \"text\""},
        {"{\"text\": \"bad \xC3\x28\"}\n", "line 1: invalid UTF-8 at byte offset 4"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *out, *err;
        int rc = tokenize(dir, cases[i].input, strlen(cases[i].input), "", &out, &err);
        cr_expect_neq(rc, 0, "case %zu should fail", i);
        cr_expect(err && strstr(err, cases[i].want), "case %zu: stderr '%s' lacks '%s'", i, err,
                  cases[i].want);
        free(out);
        free(err);
    }
    char *out, *err;
    cr_expect_eq(tokenize(dir, "", 0, "--help", &out, &err), 0);
    cr_expect(out && strstr(out, "usage: qembed tokenize"), "help: %s", out);
    free(out);
    free(err);
    cr_expect_neq(tokenize(dir, "", 0, "--threads zero", &out, &err), 0);
    free(out);
    free(err);
}
