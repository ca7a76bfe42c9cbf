/* demo_tokenizer.h — writes a small byte-level BPE tokenizer.json in the real Qwen format (256
 * byte tokens, merges learned from a built-in text, the Qwen special tokens, the <|endoftext|>
 * post-processor) so a make-random model runs text end to end with nothing downloaded. */
#ifndef QE_TOOLS_DEMO_TOKENIZER_H
#define QE_TOOLS_DEMO_TOKENIZER_H
#include <stddef.h>

/* Writes DIR/tokenizer.json, DIR/tokenizer_config.json, DIR/config_sentence_transformers.json.
 * reranker: a Qwen3-Reranker's tokenizer instead: no end token appended, "yes" and "no" one token
 * each, and no sentence-transformers file. */
int demo_tokenizer_write(const char *dir, int n_merges, int reranker, char *err, size_t errlen);

#endif
