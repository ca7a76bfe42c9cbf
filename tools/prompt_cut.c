/* prompt_cut.c — a cut that keeps the instruction or prompt whole (prompt_cut.h says why). */
#include "prompt_cut.h"

#include <string.h>

#include "tokenizer/tokenizer.h"

int prompt_cut(const tok_tokenizer *t, int32_t *ids, int *n, int max, size_t prefix_len, int left) {
    if (*n <= max) return 0;
    /* the tokens that cover the prompt's bytes; post-processor tokens before it are special and
     * stand for no text */
    int k = 0;
    size_t covered = 0;
    while (k < *n && covered < prefix_len) {
        size_t tl = 0;
        if (tok_token_bytes(t, ids[k], &tl) && !(covered == 0 && tok_is_special(t, ids[k])))
            covered += tl;
        k++;
    }
    const int end_id = tok_end_id(t);
    const int ends = end_id >= 0 && ids[*n - 1] == end_id; /* the pooled token stays last */
    const int text = max - k - ends;                       /* text tokens kept */
    if (text < 1) return -1;
    if (left) /* the text's last tokens, and the end token, follow the prompt */
        memmove(ids + k, ids + (*n - text - ends), (size_t)(text + ends) * sizeof *ids);
    else if (ends) /* the text's first tokens are in place: the end token after them */
        ids[max - 1] = end_id;
    *n = max;
    return 0;
}
