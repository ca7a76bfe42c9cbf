/* tok_prompts.c — named prompts ("query", "document") from a model folder's
 * config_sentence_transformers.json. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

/* The "prompts" object of a config_sentence_transformers.json text: name -> prefix strings. */
tok_status tok_set_prompts_json(tok_tokenizer *t, const char *json, size_t len, const char *what,
                                char *err, size_t errlen) {
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) {
        tok_set_err(err, errlen, "%s: not valid JSON", what);
        return TOK_ERR_FORMAT;
    }
    const cJSON *prompts = cJSON_GetObjectItemCaseSensitive(root, "prompts");
    int n = cJSON_IsObject(prompts) ? cJSON_GetArraySize(prompts) : 0;
    tok_status st = TOK_OK;
    if (n > 0 && !t->prompt_names) {
        t->prompt_names = calloc((size_t)n, sizeof(char *));
        t->prompt_texts = calloc((size_t)n, sizeof(char *));
        if (!t->prompt_names || !t->prompt_texts) st = TOK_ERR_NOMEM;
        for (const cJSON *p = prompts->child; p && st == TOK_OK; p = p->next) {
            if (!cJSON_IsString(p)) continue;
            char *name = strdup(p->string), *value = strdup(p->valuestring);
            if (!name || !value) {
                free(name);
                free(value);
                st = TOK_ERR_NOMEM;
                break;
            }
            t->prompt_names[t->n_prompts] = name;
            t->prompt_texts[t->n_prompts++] = value;
        }
    }
    cJSON_Delete(root);
    if (st == TOK_ERR_NOMEM) tok_set_err(err, errlen, "%s: out of memory", what);
    return st;
}

/* Prompts from config_sentence_transformers.json; a missing file just means no prompts. */
tok_status tok_load_prompts(tok_tokenizer *t, const char *path, char *err, size_t errlen) {
    size_t len = 0;
    char *text = tok_read_file(path, &len);
    if (!text) return TOK_OK;
    const tok_status st = tok_set_prompts_json(t, text, len, path, err, errlen);
    free(text);
    return st;
}

int tok_prompt_count(const tok_tokenizer *t) {
    return t->n_prompts;
}

const char *tok_prompt_name(const tok_tokenizer *t, int i) {
    return i >= 0 && i < t->n_prompts ? t->prompt_names[i] : NULL;
}

const char *tok_prompt(const tok_tokenizer *t, const char *name) {
    for (int i = 0; i < t->n_prompts; i++)
        if (!strcmp(t->prompt_names[i], name)) return t->prompt_texts[i];
    return NULL;
}
