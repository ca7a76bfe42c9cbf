/* fuzz_tokenizer.c — libFuzzer target: encode then decode arbitrary bytes with the real Qwen3
 * tokenizer. Invalid UTF-8 must be refused (never a crash); valid text must decode back to its
 * NFC form; truncation must respect max_length and keep the end token.
 * QE_FUZZ_TOKENIZER: a model folder or a tokenizer.json (default: the tiny fixture). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

static tok_tokenizer *tok;

static void load_once(void) {
    if (tok) return;
    char path[4096];
    const char *env = getenv("QE_FUZZ_TOKENIZER");
    if (env) {
        snprintf(path, sizeof path, "%s", env);
    } else { /* this file is tests/fuzz/; the fixtures are in ../shared beside the project */
        snprintf(path, sizeof path, "%s", __FILE__);
        char *slash = strrchr(path, '/');
        if (slash) *slash = 0;
        strncat(path, "/../../../shared/fixtures/tiny-qwen3-embed", sizeof path - strlen(path) - 1);
    }
    char err[512];
    size_t n = strlen(path);
    tok_status st = (n > 5 && !strcmp(path + n - 5, ".json"))
                        ? tok_load_file(path, &tok, err, sizeof err)
                        : tok_load(path, &tok, err, sizeof err);
    if (st != TOK_OK) {
        fprintf(stderr, "fuzz_tokenizer: cannot load %s: %s\n", path, err);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    load_once();
    /* The first byte picks the options; the rest is the text. */
    uint8_t knob = size ? data[0] : 0;
    const uint8_t *text = size ? data + 1 : data;
    size_t len = size ? size - 1 : 0;
    tok_encode_opts o = {knob & 1, (knob & 2) ? 1 + (knob >> 3) : 0, (knob >> 2) & 1, 0};
    int32_t *ids = NULL;
    int n = 0;
    char err[256];
    const char *why;
    int valid = tok_utf8_invalid_at(text, len, &why) == (size_t)-1;
    tok_status st = tok_encode(tok, (const char *)text, len, &o, &ids, &n, err, sizeof err);
    if (!valid) {
        if (st != TOK_ERR_UTF8 || ids) abort();
        return 0;
    }
    if (st != TOK_OK) abort();
    if (o.max_length && n > o.max_length) abort();
    int end = tok_end_id(tok);
    if (o.add_special && end >= 0 && (n == 0 || ids[n - 1] != end)) abort();
    char *dec = NULL;
    size_t dlen = 0;
    if (tok_decode(tok, ids, n, 1, &dec, &dlen, err, sizeof err) != TOK_OK) abort();
    /* Round trip, when nothing was cut and no added token can split the NFC differently. */
    int has_added = 0;
    for (size_t i = 0; i < len && !has_added; i++)
        has_added = tok->added_first[text[i]];
    if (!o.max_length && !has_added) {
        size_t nlen;
        uint8_t *owned;
        const uint8_t *nfc = tok_nfc(text, len, &nlen, &owned);
        if (!nfc || nlen != dlen || memcmp(nfc, dec, dlen) != 0) abort();
        free(owned);
    }
    free(dec);
    free(ids);
    return 0;
}
