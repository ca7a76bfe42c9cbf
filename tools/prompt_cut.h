/* prompt_cut.h — truncation of a text behind an instruction or prompt that never cuts the prompt:
 * what `qembed serve` (truncate, truncation_direction) and `qembed embed --max-length` do when an
 * input carries `instruction` or `prompt_name`. The tokenizer's own cut (tok_encode's max_length)
 * does not know where the prompt ends, so a right cut could eat into it and leave every input the
 * same ids. */
#ifndef QE_TOOLS_PROMPT_CUT_H
#define QE_TOOLS_PROMPT_CUT_H
#include <stddef.h>
#include <stdint.h>

struct tok_tokenizer;

/* ids[0..*n) are the uncut tokens of a text whose first prefix_len bytes are the prompt. Keeps
 * max ids: the tokens that cover the prompt's bytes (a token across the boundary counts as
 * prompt), then the text's tokens less its end (left == 0) or its start (left == 1), then the end
 * token when the ids end with it. Nothing changes when *n <= max. Returns 0, or -1 when the prompt
 * and the end token leave no room for any of the text (then ids and *n are unchanged). */
int prompt_cut(const struct tok_tokenizer *t, int32_t *ids, int *n, int max, size_t prefix_len,
               int left);

#endif
