/* tok_internal.h — the loaded tokenizer's tables and the helpers shared by the tokenizer's
 * files (loading, Unicode, pre-tokenizing, BPE, encode, decode). Not part of the public API. */
#ifndef QE_TOK_INTERNAL_H
#define QE_TOK_INTERNAL_H
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* Character classes used by the pre-tokenizer regexes (bit set). */
enum {
    TOK_CL_L = 1,         /* \p{L} */
    TOK_CL_N = 2,         /* \p{N} */
    TOK_CL_S = 4,         /* \s: Unicode White_Space, as Oniguruma (HF's regex engine) defines it */
    TOK_CL_CRLF = 8,      /* \r or \n (also set TOK_CL_S) */
    TOK_CL_NFC_SAFE = 16, /* a string made only of such code points is already NFC */
};

/* How the text is split into words before BPE. */
typedef enum {
    TOK_SPLIT_QWEN2, /* Split(Qwen2 regex, Isolated) then ByteLevel(use_regex=false) */
    TOK_SPLIT_GPT2,  /* ByteLevel(use_regex=true): the GPT-2 regex */
    TOK_SPLIT_NONE,  /* ByteLevel(use_regex=false) alone: each segment is one word */
} tok_split_kind;

/* One slot of the merge table: pair (left id, right id) -> rank and merged id. */
typedef struct {
    uint64_t key; /* ((left+1) << 32) | (right+1); 0 marks an empty slot */
    int32_t rank;
    int32_t new_id;
} tok_merge_slot;

typedef struct {
    char *content;
    int len;
    int id;
    int special;
    int lstrip, rstrip;
} tok_added;

struct tok_tokenizer {
    uint64_t uid; /* unique per load: keys the per-thread word caches */
    int n_ids;    /* max id + 1 */

    /* id -> raw bytes the id stands for (byte-level alphabet undone), for decode. */
    char *id_bytes;
    uint32_t *id_off; /* [n_ids + 1]; an id absent from the vocabulary has an empty range */
    uint8_t *id_present;
    uint8_t *id_special; /* added token marked special: dropped by decode(skip_special) */

    int32_t byte_id[256]; /* id of the one-byte token for each byte */

    tok_merge_slot *merges;
    uint64_t merge_mask;

    tok_added *added; /* sorted longest first so the first hit at a position is the longest */
    int n_added;
    uint8_t added_first[256]; /* 1: some added token starts with this byte */

    int nfc;
    tok_split_kind split;
    int add_prefix_space;

    int32_t *prefix_ids, *suffix_ids; /* post-processor template around the sequence */
    int n_prefix, n_suffix;

    char **prompt_names, **prompt_texts;
    int n_prompts;
};

/* tok_unicode.c */
/* GPT-2 byte-level alphabet: the code point each byte is shown as in vocab strings. */
void tok_byte_to_char(uint16_t out[256]);
void tok_unicode_init(void); /* builds the class table once (thread-safe) */
/* Returns the offset of the first invalid byte, or (size_t)-1 when s is valid UTF-8. */
size_t tok_utf8_invalid_at(const uint8_t *s, size_t len, const char **why);
/* Decodes one code point of valid UTF-8 at s; *n gets its byte length. */
static inline uint32_t tok_utf8_decode(const uint8_t *s, int *n) {
    uint8_t c = s[0];
    if (c < 0x80) {
        *n = 1;
        return c;
    }
    if (c < 0xE0) {
        *n = 2;
        return ((uint32_t)(c & 0x1F) << 6) | (s[1] & 0x3F);
    }
    if (c < 0xF0) {
        *n = 3;
        return ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    }
    *n = 4;
    return ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
           ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
}
int tok_utf8_encode(uint32_t cp, char *out);
extern uint8_t tok_class_bmp[0x10000]; /* filled by tok_unicode_init */
uint8_t tok_class_supp(uint32_t cp);
static inline uint8_t tok_class_of(uint32_t cp) {
    return cp < 0x10000 ? tok_class_bmp[cp] : tok_class_supp(cp);
}
/* NFC of s[0..len): returns s itself (no copy) when already NFC for sure, else a malloc'd
 * string in *owned (caller frees). NULL on allocation failure. */
const uint8_t *tok_nfc(const uint8_t *s, size_t len, size_t *out_len, uint8_t **owned);

/* tok_pretokenize.c: end offset of the word that starts at pos (pos < len). */
size_t tok_pretok_next(tok_split_kind kind, const uint8_t *s, size_t len, size_t pos);

/* tok_bpe.c: appends the ids of one word to a growable buffer. */
typedef struct {
    int32_t *ids;
    size_t n, cap;
} tok_idbuf;
int tok_idbuf_push(tok_idbuf *b, const int32_t *ids, size_t n);
int tok_bpe_word(const tok_tokenizer *t, const uint8_t *w, size_t len, tok_idbuf *out);
static inline int32_t tok_merge_rank(const tok_tokenizer *t, int32_t a, int32_t b,
                                     int32_t *new_id) {
    uint64_t key = ((uint64_t)(uint32_t)(a + 1) << 32) | (uint32_t)(b + 1);
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    for (uint64_t i = (h >> 20) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        const tok_merge_slot *s = &t->merges[i];
        if (s->key == key) {
            *new_id = s->new_id;
            return s->rank;
        }
        if (s->key == 0) return -1;
    }
}

/* tok_load.c / tok_load_pipeline.c / tok_prompts.c: loading. */
struct cJSON;
typedef struct {
    tok_tokenizer *t;
    char *err;
    size_t errlen;
    const char *path; /* for messages */
} tok_loader;
char *tok_read_file(const char *path, size_t *len); /* malloc'd, NUL-terminated; NULL if absent */
const char *tok_json_type(const struct cJSON *o);   /* "type" field, or "" */
int tok_json_flag(const struct cJSON *o, const char *name); /* field is true */
tok_status tok_load_pipeline(tok_loader *L, const struct cJSON *root);
/* A parsed tokenizer.json (path names it in messages): what tok_load_file and tok_load_arrays
 * share. */
tok_status tok_load_root(const struct cJSON *root, const char *path, tok_tokenizer **out, char *err,
                         size_t errlen);
tok_status tok_load_prompts(tok_tokenizer *t, const char *path, char *err, size_t errlen);

/* tok_api.c */
void tok_set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
