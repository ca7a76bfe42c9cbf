/* tok_load.c — reads a Hugging Face tokenizer.json into the tables encode and decode use: the
 * BPE model (vocabulary, merges in either spelling, added tokens) here, the text pipeline in
 * tok_load_pipeline.c, prompts in tok_prompts.c. A model other than byte-level BPE is refused
 * with a message naming it. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

static atomic_uint_fast64_t next_uid = 1;

/* ---- string -> id map over the vocabulary's keys, used while building the merge table ---- */

typedef struct {
    const char **key;
    uint32_t *klen;
    int32_t *id;
    uint64_t mask;
} str_map;

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 0x100000001B3ull;
    return h ^ (h >> 31);
}

static int str_map_init(str_map *m, size_t n) {
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    m->key = calloc(cap, sizeof *m->key);
    m->klen = calloc(cap, sizeof *m->klen);
    m->id = calloc(cap, sizeof *m->id);
    m->mask = cap - 1;
    return (m->key && m->klen && m->id) ? 0 : -1;
}

static void str_map_free(str_map *m) {
    free(m->key);
    free(m->klen);
    free(m->id);
}

static void str_map_put(str_map *m, const char *k, size_t n, int32_t id) {
    for (uint64_t i = hash_bytes(k, n) & m->mask;; i = (i + 1) & m->mask) {
        if (!m->key[i] || (m->klen[i] == n && !memcmp(m->key[i], k, n))) {
            m->key[i] = k;
            m->klen[i] = (uint32_t)n;
            m->id[i] = id;
            return;
        }
    }
}

static int32_t str_map_get(const str_map *m, const char *k, size_t n) {
    for (uint64_t i = hash_bytes(k, n) & m->mask;; i = (i + 1) & m->mask) {
        if (!m->key[i]) return -1;
        if (m->klen[i] == n && !memcmp(m->key[i], k, n)) return m->id[i];
    }
}

/* ---- helpers ---------------------------------------------------------------------------- */

char *tok_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1))) {
            if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
                free(buf);
                buf = NULL;
            } else {
                buf[n] = 0;
                *len = (size_t)n;
            }
        }
    }
    fclose(f);
    return buf;
}

const char *tok_json_type(const cJSON *o) {
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) ? t->valuestring : "";
}

int tok_json_flag(const cJSON *o, const char *name) {
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, name));
}

/* "" or null or absent */
static int empty_string_field(const cJSON *o, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return !v || cJSON_IsNull(v) || (cJSON_IsString(v) && !v->valuestring[0]);
}

/* Undoes the byte-level alphabet; a string with a character outside it is kept as its own
 * UTF-8 (the ByteLevel decoder does the same per token). Writes into out (>= strlen(s)). */
static size_t token_bytes(const char *s, size_t n, const int16_t *char_to_byte, char *out,
                          int *bytelevel) {
    const char *why;
    *bytelevel = tok_utf8_invalid_at((const uint8_t *)s, n, &why) == (size_t)-1;
    size_t o = 0;
    for (size_t i = 0; *bytelevel && i < n;) {
        int k;
        uint32_t cp = tok_utf8_decode((const uint8_t *)s + i, &k);
        if (cp >= 512 || char_to_byte[cp] < 0)
            *bytelevel = 0;
        else
            out[o++] = (char)char_to_byte[cp];
        i += (size_t)k;
    }
    if (*bytelevel) return o;
    memcpy(out, s, n);
    return n;
}

/* ---- the sections of tokenizer.json --------------------------------------------------- */

static tok_status check_model(tok_loader *L, const cJSON *model) {
    if (!cJSON_IsObject(model)) {
        tok_set_err(L->err, L->errlen, "%s: no \"model\" object", L->path);
        return TOK_ERR_FORMAT;
    }
    const char *type = tok_json_type(model);
    if (strcmp(type, "BPE") != 0) {
        tok_set_err(L->err, L->errlen,
                    "%s: model type '%s' is not supported (only byte-level BPE, as in Qwen2/Qwen3)",
                    L->path, type[0] ? type : "(none)");
        return TOK_ERR_UNSUPPORTED;
    }
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (dropout && !cJSON_IsNull(dropout)) {
        tok_set_err(L->err, L->errlen, "%s: BPE dropout is not supported", L->path);
        return TOK_ERR_UNSUPPORTED;
    }
    if (tok_json_flag(model, "byte_fallback") || tok_json_flag(model, "ignore_merges") ||
        !empty_string_field(model, "continuing_subword_prefix") ||
        !empty_string_field(model, "end_of_word_suffix")) {
        tok_set_err(L->err, L->errlen,
                    "%s: BPE options byte_fallback / ignore_merges / continuing_subword_prefix / "
                    "end_of_word_suffix are not supported",
                    L->path);
        return TOK_ERR_UNSUPPORTED;
    }
    return TOK_OK;
}

typedef struct {
    int id;
    const char *str;
    size_t len;
} id_string;

/* Collects the vocabulary and added tokens, sizes the id tables and fills them. */
static tok_status load_ids(tok_loader *L, const cJSON *vocab, const cJSON *added, str_map *map) {
    tok_tokenizer *t = L->t;
    if (!cJSON_IsObject(vocab)) {
        tok_set_err(L->err, L->errlen, "%s: model.vocab is not an object", L->path);
        return TOK_ERR_FORMAT;
    }
    int n_vocab = cJSON_GetArraySize(vocab);
    if (str_map_init(map, (size_t)n_vocab) != 0) return TOK_ERR_NOMEM;
    int max_id = -1;
    size_t total = 0;
    for (const cJSON *v = vocab->child; v; v = v->next) {
        if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e8 || !v->string) {
            tok_set_err(L->err, L->errlen, "%s: model.vocab entry '%s' has no valid id", L->path,
                        v->string ? v->string : "?");
            return TOK_ERR_FORMAT;
        }
        size_t n = strlen(v->string);
        str_map_put(map, v->string, n, v->valueint);
        if (v->valueint > max_id) max_id = v->valueint;
        total += n;
    }
    if (added && !cJSON_IsArray(added)) {
        tok_set_err(L->err, L->errlen, "%s: added_tokens is not an array", L->path);
        return TOK_ERR_FORMAT;
    }
    int n_added = added ? cJSON_GetArraySize(added) : 0;
    t->added = calloc((size_t)(n_added ? n_added : 1), sizeof *t->added);
    if (!t->added) return TOK_ERR_NOMEM;
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(a, "content");
        if (!cJSON_IsNumber(id) || !cJSON_IsString(content) || !content->valuestring[0]) {
            tok_set_err(L->err, L->errlen, "%s: added_tokens entry without id or content", L->path);
            return TOK_ERR_FORMAT;
        }
        if (id->valuedouble < 0 || id->valuedouble > 1e8 ||
            id->valuedouble != (double)(long long)id->valuedouble) {
            tok_set_err(
                L->err, L->errlen,
                "%s: added token '%.80s' has id %.0f, out of range (an integer in [0, %.0f])",
                L->path, content->valuestring, id->valuedouble, 1e8);
            return TOK_ERR_FORMAT;
        }
        if (tok_json_flag(a, "single_word")) {
            tok_set_err(L->err, L->errlen,
                        "%s: added token '%s' uses single_word, which is not supported", L->path,
                        content->valuestring);
            return TOK_ERR_UNSUPPORTED;
        }
        tok_added *ad = &t->added[t->n_added++];
        ad->len = (int)strlen(content->valuestring);
        ad->content = strdup(content->valuestring);
        if (!ad->content) return TOK_ERR_NOMEM;
        ad->id = id->valueint;
        ad->special = tok_json_flag(a, "special");
        ad->lstrip = tok_json_flag(a, "lstrip");
        ad->rstrip = tok_json_flag(a, "rstrip");
        if (ad->id > max_id) max_id = ad->id;
        total += (size_t)ad->len;
    }
    t->n_ids = max_id + 1;
    size_t n = (size_t)t->n_ids;
    t->id_bytes = malloc(total + 1);
    t->id_off = calloc(n + 1, sizeof *t->id_off);
    t->id_present = calloc(n, 1);
    t->id_special = calloc(n, 1);
    id_string *strs = calloc(n, sizeof *strs);
    if (!t->id_bytes || !t->id_off || !t->id_present || !t->id_special || !strs) {
        free(strs);
        return TOK_ERR_NOMEM;
    }
    for (const cJSON *v = vocab->child; v; v = v->next) {
        strs[v->valueint].str = v->string;
        strs[v->valueint].len = strlen(v->string);
    }
    for (int i = 0; i < t->n_added; i++) { /* an added token's content wins over the vocab */
        strs[t->added[i].id].str = t->added[i].content;
        strs[t->added[i].id].len = (size_t)t->added[i].len;
        t->id_special[t->added[i].id] = (uint8_t)t->added[i].special;
    }
    uint16_t b2c[256];
    int16_t c2b[512];
    tok_byte_to_char(b2c);
    memset(c2b, 0xFF, sizeof c2b);
    for (int b = 0; b < 256; b++)
        c2b[b2c[b]] = (int16_t)b;
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        t->id_off[i] = (uint32_t)off;
        if (!strs[i].str) continue;
        int bl;
        off += token_bytes(strs[i].str, strs[i].len, c2b, t->id_bytes + off, &bl);
        t->id_present[i] = 1;
    }
    t->id_off[n] = (uint32_t)off;
    free(strs);
    /* Each byte's own token: the start of every word's BPE. */
    for (int b = 0; b < 256; b++) {
        char s[4];
        int k = tok_utf8_encode(b2c[b], s);
        t->byte_id[b] = str_map_get(map, s, (size_t)k);
        if (t->byte_id[b] < 0) {
            tok_set_err(L->err, L->errlen,
                        "%s: vocabulary lacks the byte-level token for byte 0x%02X (not a "
                        "byte-level BPE vocabulary)",
                        L->path, b);
            return TOK_ERR_UNSUPPORTED;
        }
    }
    return TOK_OK;
}

static tok_status load_merges(tok_loader *L, const cJSON *merges, const str_map *map) {
    tok_tokenizer *t = L->t;
    if (!cJSON_IsArray(merges)) {
        tok_set_err(L->err, L->errlen, "%s: model.merges is not an array", L->path);
        return TOK_ERR_FORMAT;
    }
    int n = cJSON_GetArraySize(merges);
    size_t cap = 16;
    while (cap < 2 * (size_t)n)
        cap *= 2;
    t->merges = calloc(cap, sizeof *t->merges);
    if (!t->merges) return TOK_ERR_NOMEM;
    t->merge_mask = cap - 1;
    char buf[1024];
    int rank = 0;
    for (const cJSON *m = merges->child; m; m = m->next, rank++) {
        const char *a, *b;
        size_t na, nb;
        if (cJSON_IsString(m)) { /* "a b" */
            a = m->valuestring;
            const char *sp = strchr(a, ' ');
            if (!sp || strchr(sp + 1, ' ')) goto bad;
            na = (size_t)(sp - a);
            b = sp + 1;
            nb = strlen(b);
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                   cJSON_IsString(m->child->next)) { /* ["a","b"] */
            a = m->child->valuestring;
            b = m->child->next->valuestring;
            na = strlen(a);
            nb = strlen(b);
        } else {
            goto bad;
        }
        if (na + nb > sizeof buf) goto bad;
        int32_t ia = str_map_get(map, a, na), ib = str_map_get(map, b, nb);
        memcpy(buf, a, na);
        memcpy(buf + na, b, nb);
        int32_t ic = str_map_get(map, buf, na + nb);
        if (ia < 0 || ib < 0 || ic < 0) {
            tok_set_err(L->err, L->errlen,
                        "%s: merge %d ('%.*s' + '%.*s') is not in the vocabulary", L->path, rank,
                        (int)na, a, (int)nb, b);
            return TOK_ERR_FORMAT;
        }
        /* A repeated pair keeps its last rank, as Hugging Face's map insertion does. */
        uint64_t key = ((uint64_t)(uint32_t)(ia + 1) << 32) | (uint32_t)(ib + 1);
        uint64_t h = key * 0x9E3779B97F4A7C15ull;
        for (uint64_t i = (h >> 20) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
            tok_merge_slot *s = &t->merges[i];
            if (s->key == 0 || s->key == key) {
                s->key = key;
                s->rank = rank;
                s->new_id = ic;
                break;
            }
        }
    }
    return TOK_OK;
bad:
    tok_set_err(L->err, L->errlen, "%s: merge %d is neither \"a b\" nor [\"a\", \"b\"]", L->path,
                rank);
    return TOK_ERR_FORMAT;
}

static int longest_first(const void *a, const void *b) {
    const tok_added *x = a, *y = b;
    return (y->len > x->len) - (y->len < x->len);
}

static tok_status load_json(tok_loader *L, const cJSON *root) {
    tok_tokenizer *t = L->t;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    tok_status st = check_model(L, model);
    if (st != TOK_OK) return st;
    str_map map = {0};
    st = load_ids(L, cJSON_GetObjectItemCaseSensitive(model, "vocab"),
                  cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), &map);
    if (st == TOK_OK) st = load_merges(L, cJSON_GetObjectItemCaseSensitive(model, "merges"), &map);
    str_map_free(&map);
    if (st != TOK_OK) return st;
    st = tok_load_pipeline(L, root);
    if (st != TOK_OK) return st;
    qsort(t->added, (size_t)t->n_added, sizeof *t->added, longest_first);
    for (int i = 0; i < t->n_added; i++)
        t->added_first[(uint8_t)t->added[i].content[0]] = 1;
    return TOK_OK;
}

tok_status tok_load_root(const cJSON *root, const char *path, tok_tokenizer **out, char *err,
                         size_t errlen) {
    *out = NULL;
    tok_unicode_init();
    tok_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return TOK_ERR_NOMEM;
    t->uid = atomic_fetch_add(&next_uid, 1);
    t->split = TOK_SPLIT_NONE;
    tok_loader L = {t, err, errlen, path};
    tok_status st = load_json(&L, root);
    if (st != TOK_OK) {
        if (st == TOK_ERR_NOMEM) tok_set_err(err, errlen, "%s: out of memory", path);
        tok_free(t);
        return st;
    }
    *out = t;
    return TOK_OK;
}

tok_status tok_load_file(const char *path, tok_tokenizer **out, char *err, size_t errlen) {
    *out = NULL;
    size_t len = 0;
    char *text = tok_read_file(path, &len);
    if (!text) {
        tok_set_err(err, errlen, "%s: %s", path, strerror(errno ? errno : EIO));
        return TOK_ERR_IO;
    }
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) {
        tok_set_err(err, errlen, "%s: not valid JSON", path);
        return TOK_ERR_FORMAT;
    }
    tok_status st = tok_load_root(root, path, out, err, errlen);
    cJSON_Delete(root);
    return st;
}

tok_status tok_load(const char *model_dir, tok_tokenizer **out, char *err, size_t errlen) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", model_dir);
    tok_status st = tok_load_file(path, out, err, errlen);
    if (st != TOK_OK) return st;
    snprintf(path, sizeof path, "%s/config_sentence_transformers.json", model_dir);
    st = tok_load_prompts(*out, path, err, errlen);
    if (st != TOK_OK) {
        tok_free(*out);
        *out = NULL;
    }
    return st;
}

void tok_free(tok_tokenizer *t) {
    if (!t) return;
    free(t->id_bytes);
    free(t->id_off);
    free(t->id_present);
    free(t->id_special);
    free(t->merges);
    for (int i = 0; i < t->n_added; i++)
        free(t->added[i].content);
    free(t->added);
    free(t->prefix_ids);
    free(t->suffix_ids);
    for (int i = 0; i < t->n_prompts; i++) {
        free(t->prompt_names[i]);
        free(t->prompt_texts[i]);
    }
    free(t->prompt_names);
    free(t->prompt_texts);
    free(t);
}
