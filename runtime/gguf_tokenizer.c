/* gguf_tokenizer.c — a GGUF file's tokenizer.ggml.* metadata to the tokenizer's arrays loader
 * (tok_load_arrays): llama.cpp's "gpt2" byte-level BPE with the "qwen2" pre-tokenizer, which is
 * what Qwen3's tokenizer.json describes. */
#include "gguf_tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int span_is(gguf_span s, const char *want) {
    return s.len == strlen(want) && !memcmp(s.ptr, want, s.len);
}

tok_status gguf_load_tokenizer(const gguf_file *g, const char *path, tok_tokenizer **out, char *err,
                               size_t errlen) {
    *out = NULL;
    if (!gguf_has(g, "tokenizer.ggml.tokens")) {
        snprintf(err, errlen, "%s: no tokenizer.ggml.tokens (no tokenizer)", path);
        return TOK_ERR_IO;
    }
    char sub[300];
    gguf_span model, pre = {"", 0};
    if (gguf_get_string(g, "tokenizer.ggml.model", &model, sub, sizeof sub)) goto bad_key;
    if (!span_is(model, "gpt2")) {
        snprintf(err, errlen,
                 "%s: tokenizer.ggml.model \"%.*s\" is not supported (byte-level BPE, \"gpt2\")",
                 path, (int)(model.len < 40 ? model.len : 40), model.ptr);
        return TOK_ERR_UNSUPPORTED;
    }
    if (gguf_get_string(g, "tokenizer.ggml.pre", &pre, sub, sizeof sub)) goto bad_key;
    if (!span_is(pre, "qwen2")) {
        snprintf(err, errlen,
                 "%s: tokenizer.ggml.pre \"%.*s\" is not supported (Qwen2/Qwen3's \"qwen2\" "
                 "pre-tokenizer only)",
                 path, (int)(pre.len < 40 ? pre.len : 40), pre.ptr);
        return TOK_ERR_UNSUPPORTED;
    }
    gguf_span *tokens = NULL, *merges = NULL;
    int32_t *types = NULL;
    uint64_t n_tok = 0, n_types = 0, n_merges = 0;
    const char **tp = NULL, **mp = NULL;
    size_t *tl = NULL, *ml = NULL;
    tok_status st = TOK_ERR_FORMAT;
    if (gguf_get_string_array(g, "tokenizer.ggml.tokens", &tokens, &n_tok, sub, sizeof sub) ||
        gguf_get_string_array(g, "tokenizer.ggml.merges", &merges, &n_merges, sub, sizeof sub) ||
        (gguf_has(g, "tokenizer.ggml.token_type") &&
         gguf_get_i32_array(g, "tokenizer.ggml.token_type", &types, &n_types, sub, sizeof sub))) {
        snprintf(err, errlen, "%s: %s", path, sub);
        goto done;
    }
    if (n_tok > 100000000 || n_merges > 100000000 || (types && n_types != n_tok)) {
        snprintf(err, errlen,
                 "%s: tokenizer.ggml.token_type has %llu entries for %llu tokens (or too many)",
                 path, (unsigned long long)n_types, (unsigned long long)n_tok);
        goto done;
    }
    int end_id = -1, add_eos = 0;
    if (gguf_has(g, "tokenizer.ggml.add_eos_token") &&
        gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &add_eos, sub, sizeof sub)) {
        snprintf(err, errlen, "%s: %s", path, sub);
        goto done;
    }
    if (add_eos) {
        uint32_t eos;
        if (gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &eos, sub, sizeof sub)) {
            snprintf(err, errlen, "%s: tokenizer.ggml.add_eos_token is true but %s", path, sub);
            goto done;
        }
        end_id = eos < n_tok ? (int)eos : -2;
        if (end_id == -2) {
            snprintf(err, errlen, "%s: tokenizer.ggml.eos_token_id %u is outside the %llu tokens",
                     path, eos, (unsigned long long)n_tok);
            goto done;
        }
    }
    tp = malloc(sizeof *tp * (n_tok + 1));
    tl = malloc(sizeof *tl * (n_tok + 1));
    mp = malloc(sizeof *mp * (n_merges + 1));
    ml = malloc(sizeof *ml * (n_merges + 1));
    if (!tp || !tl || !mp || !ml) {
        st = TOK_ERR_NOMEM;
        snprintf(err, errlen, "%s: out of memory", path);
        goto done;
    }
    for (uint64_t i = 0; i < n_tok; i++) {
        tp[i] = tokens[i].ptr;
        tl[i] = tokens[i].len;
    }
    for (uint64_t i = 0; i < n_merges; i++) {
        mp[i] = merges[i].ptr;
        ml[i] = merges[i].len;
    }
    const tok_arrays a = {tp, tl, types, (int)n_tok, mp, ml, (int)n_merges, end_id, path};
    st = tok_load_arrays(&a, out, err, errlen);
    gguf_span prompts;
    if (st == TOK_OK && gguf_has(g, GGUF_KEY_SENTENCE_TRANSFORMERS)) {
        st = gguf_get_string(g, GGUF_KEY_SENTENCE_TRANSFORMERS, &prompts, sub, sizeof sub)
                 ? TOK_ERR_FORMAT
                 : tok_set_prompts_json(*out, prompts.ptr, prompts.len,
                                        GGUF_KEY_SENTENCE_TRANSFORMERS, sub, sizeof sub);
        if (st != TOK_OK) {
            snprintf(err, errlen, "%s: %s", path, sub);
            tok_free(*out);
            *out = NULL;
        }
    }
done:
    free(tokens);
    free(merges);
    free(types);
    free(tp);
    free(tl);
    free(mp);
    free(ml);
    return st;
bad_key:
    snprintf(err, errlen, "%s: %s", path, sub);
    return TOK_ERR_FORMAT;
}
