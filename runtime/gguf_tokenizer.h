/* gguf_tokenizer.h — the tokenizer a GGUF file carries (tokenizer.ggml.*), as a tok_tokenizer. */
#ifndef QE_RUNTIME_GGUF_TOKENIZER_H
#define QE_RUNTIME_GGUF_TOKENIZER_H
#include <stddef.h>

#include "tokenizer/tokenizer.h"
#include "weights/gguf.h"

/* Reads tokenizer.ggml.model ("gpt2"), .pre ("qwen2": any other pre-tokenizer is refused, its
 * regex would split text differently), .tokens, .token_type, .merges, and .eos_token_id appended
 * to every input when .add_eos_token is true. path names the file in messages. Returns TOK_OK, or
 * an error with err naming the key. A file without tokenizer.ggml.tokens gives TOK_ERR_IO (no
 * tokenizer: ids only). */
tok_status gguf_load_tokenizer(const gguf_file *g, const char *path, tok_tokenizer **out, char *err,
                               size_t errlen);

/* Our own key (GGUF has none for it): the model folder's config_sentence_transformers.json, whole,
 * as qembed quantize found it; its "prompts" become the tokenizer's named prompts. */
#define GGUF_KEY_SENTENCE_TRANSFORMERS "qembed.sentence_transformers"

#endif
