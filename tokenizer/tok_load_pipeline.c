/* tok_load_pipeline.c — the text pipeline around the BPE model in tokenizer.json: normalizer
 * (NFC or none), pre-tokenizer (Qwen2 Split + ByteLevel, or ByteLevel alone), post-processor
 * (TemplateProcessing / ByteLevel) and decoder (ByteLevel). Anything else is refused by name. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

/* The only Split regex we implement (by hand, in tok_pretokenize.c). */
static const char QWEN2_PATTERN[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
                                    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
                                    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static tok_status load_normalizer(tok_loader *L, const cJSON *norm) {
    if (!norm || cJSON_IsNull(norm)) return TOK_OK;
    const char *type = tok_json_type(norm);
    if (!strcmp(type, "NFC")) {
        L->t->nfc = 1;
        return TOK_OK;
    }
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(norm, "normalizers");
        for (const cJSON *n = cJSON_IsArray(list) ? list->child : NULL; n; n = n->next) {
            tok_status st = load_normalizer(L, n);
            if (st != TOK_OK) return st;
        }
        return TOK_OK;
    }
    tok_set_err(L->err, L->errlen, "%s: normalizer '%s' is not supported (only NFC or none)",
                L->path, type);
    return TOK_ERR_UNSUPPORTED;
}

static tok_status byte_level_pretok(tok_loader *L, const cJSON *p, int alone) {
    const cJSON *use_regex = cJSON_GetObjectItemCaseSensitive(p, "use_regex");
    int regex = !use_regex || cJSON_IsTrue(use_regex); /* HF's default is true */
    L->t->add_prefix_space = tok_json_flag(p, "add_prefix_space");
    if (regex && !alone) {
        tok_set_err(L->err, L->errlen,
                    "%s: ByteLevel pre-tokenizer with use_regex after a Split is not supported",
                    L->path);
        return TOK_ERR_UNSUPPORTED;
    }
    if (alone) L->t->split = regex ? TOK_SPLIT_GPT2 : TOK_SPLIT_NONE;
    return TOK_OK;
}

static tok_status load_pretokenizer(tok_loader *L, const cJSON *p) {
    const char *type = p ? tok_json_type(p) : "";
    if (!strcmp(type, "ByteLevel")) return byte_level_pretok(L, p, 1);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
        const cJSON *split = cJSON_IsArray(list) ? list->child : NULL;
        const cJSON *bl = split ? split->next : NULL;
        const cJSON *pattern = cJSON_GetObjectItemCaseSensitive(split, "pattern");
        const cJSON *regex = cJSON_GetObjectItemCaseSensitive(pattern, "Regex");
        const cJSON *behavior = cJSON_GetObjectItemCaseSensitive(split, "behavior");
        if (split && bl && !bl->next && !strcmp(tok_json_type(split), "Split") &&
            cJSON_IsString(regex) && !strcmp(regex->valuestring, QWEN2_PATTERN) &&
            cJSON_IsString(behavior) && !strcmp(behavior->valuestring, "Isolated") &&
            !tok_json_flag(split, "invert") && !strcmp(tok_json_type(bl), "ByteLevel")) {
            L->t->split = TOK_SPLIT_QWEN2;
            return byte_level_pretok(L, bl, 0);
        }
    }
    tok_set_err(L->err, L->errlen,
                "%s: pre_tokenizer '%s' is not supported (only ByteLevel, or Split with the "
                "Qwen2 regex followed by ByteLevel)",
                L->path, type[0] ? type : "(none)");
    return TOK_ERR_UNSUPPORTED;
}

/* TemplateProcessing "single": special tokens before the sequence form the prefix, after it
 * the suffix. */
static tok_status load_template(tok_loader *L, const cJSON *p) {
    tok_tokenizer *t = L->t;
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(p, "single");
    const cJSON *specials = cJSON_GetObjectItemCaseSensitive(p, "special_tokens");
    int seen_seq = 0;
    for (const cJSON *it = cJSON_IsArray(single) ? single->child : NULL; it; it = it->next) {
        if (cJSON_GetObjectItemCaseSensitive(it, "Sequence")) {
            seen_seq = 1;
            continue;
        }
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(sp, "id");
        const cJSON *def = cJSON_IsString(name)
                               ? cJSON_GetObjectItemCaseSensitive(specials, name->valuestring)
                               : NULL;
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(def, "ids");
        if (!cJSON_IsArray(ids)) {
            tok_set_err(L->err, L->errlen,
                        "%s: post_processor template names a special token without ids", L->path);
            return TOK_ERR_FORMAT;
        }
        for (const cJSON *id = ids->child; id; id = id->next) {
            if (!cJSON_IsNumber(id) || id->valueint < 0 || id->valueint >= t->n_ids) {
                tok_set_err(L->err, L->errlen, "%s: post_processor id outside the vocabulary",
                            L->path);
                return TOK_ERR_FORMAT;
            }
            int32_t **arr = seen_seq ? &t->suffix_ids : &t->prefix_ids;
            int *n = seen_seq ? &t->n_suffix : &t->n_prefix;
            int32_t *grown = realloc(*arr, (size_t)(*n + 1) * sizeof *grown);
            if (!grown) return TOK_ERR_NOMEM;
            grown[(*n)++] = id->valueint;
            *arr = grown;
        }
    }
    if (!seen_seq) {
        tok_set_err(L->err, L->errlen, "%s: post_processor template has no sequence", L->path);
        return TOK_ERR_FORMAT;
    }
    return TOK_OK;
}

static tok_status load_postprocessor(tok_loader *L, const cJSON *p) {
    if (!p || cJSON_IsNull(p)) return TOK_OK;
    const char *type = tok_json_type(p);
    if (!strcmp(type, "ByteLevel")) return TOK_OK; /* only adjusts offsets */
    if (!strcmp(type, "TemplateProcessing")) return load_template(L, p);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "processors");
        for (const cJSON *q = cJSON_IsArray(list) ? list->child : NULL; q; q = q->next) {
            tok_status st = load_postprocessor(L, q);
            if (st != TOK_OK) return st;
        }
        return TOK_OK;
    }
    tok_set_err(L->err, L->errlen,
                "%s: post_processor '%s' is not supported (only TemplateProcessing, ByteLevel)",
                L->path, type);
    return TOK_ERR_UNSUPPORTED;
}

tok_status tok_load_pipeline(tok_loader *L, const cJSON *root) {
    tok_status st;
    if ((st = load_normalizer(L, cJSON_GetObjectItemCaseSensitive(root, "normalizer"))) ||
        (st = load_pretokenizer(L, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"))) ||
        (st = load_postprocessor(L, cJSON_GetObjectItemCaseSensitive(root, "post_processor"))))
        return st;
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    if (dec && !cJSON_IsNull(dec) && strcmp(tok_json_type(dec), "ByteLevel") != 0) {
        tok_set_err(L->err, L->errlen, "%s: decoder '%s' is not supported (only ByteLevel)",
                    L->path, tok_json_type(dec));
        return TOK_ERR_UNSUPPORTED;
    }
    return TOK_OK;
}
