/* tokenizer.h — Qwen2/Qwen3 byte-level BPE loaded from a model folder's tokenizer.json,
 * matching Hugging Face `tokenizers` exactly. All functions are safe to call from many threads
 * at once on one tok_tokenizer (encode/decode do not mutate shared state unsafely). */
#ifndef QE_TOKENIZER_H
#define QE_TOKENIZER_H
#include <stddef.h>
#include <stdint.h>

typedef struct tok_tokenizer tok_tokenizer;

typedef enum {
    TOK_OK = 0,
    TOK_ERR_IO,          /* file missing or unreadable */
    TOK_ERR_FORMAT,      /* tokenizer.json malformed */
    TOK_ERR_UNSUPPORTED, /* a tokenizer type/normalizer/pre-tokenizer we do not implement */
    TOK_ERR_UTF8,        /* input text is not valid UTF-8 */
    TOK_ERR_TOO_LONG,    /* longer than max_length and truncation was disabled */
    TOK_ERR_ID,          /* decode: id outside the vocabulary */
    TOK_ERR_NOMEM,
} tok_status;

typedef struct tok_encode_opts {
    int add_special;   /* 1: run the post-processor (appends <|endoftext|> for Qwen3-Embedding) */
    int max_length;    /* 0: no limit. Else keep at most this many ids, end token included */
    int truncate_left; /* 1: drop from the start instead of the end */
    int no_truncate;   /* 1: return TOK_ERR_TOO_LONG instead of truncating */
} tok_encode_opts;

/* Loads DIR/tokenizer.json (required) and DIR/config_sentence_transformers.json (optional,
 * for prompts). */
tok_status tok_load(const char *model_dir, tok_tokenizer **out, char *err, size_t errlen);
/* Loads from a tokenizer.json path only (no prompts). */
tok_status tok_load_file(const char *tokenizer_json_path, tok_tokenizer **out, char *err,
                         size_t errlen);
void tok_free(tok_tokenizer *t);

/* A Qwen2/Qwen3 tokenizer from arrays, as a GGUF file carries it (tokenizer.ggml.model "gpt2",
 * pre "qwen2"): the same pipeline as Qwen3's tokenizer.json (NFC, the Qwen2 split regex,
 * byte-level BPE by merge rank, end token appended), built through the same loader. */
typedef struct tok_arrays {
    const char *const *tokens; /* [n_tokens], id = index: a vocab string in the byte-level
                                * alphabet, or an added token's content */
    const size_t *token_lens;  /* bytes of each (NULL: NUL-terminated) */
    /* llama.cpp's token types: 1 normal, 3 control (a special added token), 4 user-defined (an
     * added token, not special), 5 unused (left out); 2 and 6 read as normal. NULL: all 1. */
    const int32_t *token_types;
    int n_tokens;
    const char *const *merges; /* "a b" each, rank = order */
    const size_t *merge_lens;  /* NULL: NUL-terminated */
    int n_merges;
    int end_id;         /* appended to every input by the post-processor; -1: none */
    const char *source; /* names where the arrays came from in messages */
} tok_arrays;
tok_status tok_load_arrays(const tok_arrays *a, tok_tokenizer **out, char *err, size_t errlen);

/* Encodes len bytes of UTF-8. *ids is malloc'd (caller frees); *n_ids its length.
 * opts may be NULL: add_special=1, no max_length. */
tok_status tok_encode(const tok_tokenizer *t, const char *text, size_t len,
                      const tok_encode_opts *opts, int32_t **ids, int *n_ids, char *err,
                      size_t errlen);

/* Decodes ids to UTF-8 text (malloc'd, NUL-terminated). skip_special: drop special tokens. */
tok_status tok_decode(const tok_tokenizer *t, const int32_t *ids, int n, int skip_special,
                      char **text, size_t *len, char *err, size_t errlen);

/* Number of ids the model may see (vocab + added tokens), i.e. max id + 1. */
int tok_vocab_size(const tok_tokenizer *t);
/* The id the post-processor appends (151643 for Qwen3-Embedding), or -1 if none. */
int tok_end_id(const tok_tokenizer *t);
/* Prompt prefix by name ("query", "document") from config_sentence_transformers.json, or NULL. */
const char *tok_prompt(const tok_tokenizer *t, const char *name);
/* The named prompts, for messages: how many, and the i-th name (NULL past the end). */
int tok_prompt_count(const tok_tokenizer *t);
const char *tok_prompt_name(const tok_tokenizer *t, int i);
/* Sets the prompts from a config_sentence_transformers.json text (its "prompts" object), when the
 * tokenizer has none yet; what names the source in errors. A GGUF file from qembed quantize
 * carries that text as qembed.sentence_transformers (runtime/gguf_tokenizer.c). */
tok_status tok_set_prompts_json(tok_tokenizer *t, const char *json, size_t len, const char *what,
                                char *err, size_t errlen);
/* "Instruct: {task}\nQuery:{text}" as a malloc'd string. */
char *tok_format_instruction(const char *task, const char *text);

/* The raw bytes id stands for (byte-level alphabet undone; an added token's content), not
 * NUL-terminated, and its length in *len; NULL for an id outside the vocabulary. */
const char *tok_token_bytes(const tok_tokenizer *t, int32_t id, size_t *len);
/* 1 for an added token marked special (what decode's skip_special drops), else 0. */
int tok_is_special(const tok_tokenizer *t, int32_t id);
const char *tok_status_name(tok_status s);

#endif
