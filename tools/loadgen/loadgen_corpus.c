/* loadgen_corpus.c — reads the texts of a JSONL corpus ({"text": ...} per line). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loadgen/loadgen_internal.h"

int lg_corpus_load(const char *path, lg_corpus *c, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open corpus %s", path);
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0;
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (n == 0 || line[0] == '\n') continue;
        cJSON *j = cJSON_ParseWithLength(line, (size_t)n);
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "text");
        if (cJSON_IsString(t) && t->valuestring[0]) {
            if (c->n == c->cap) {
                int nc = c->cap ? 2 * c->cap : 1024;
                char **nt = realloc(c->texts, (size_t)nc * sizeof *nt);
                if (!nt) {
                    cJSON_Delete(j);
                    break;
                }
                c->texts = nt;
                c->cap = nc;
            }
            c->texts[c->n] = strdup(t->valuestring);
            if (c->texts[c->n]) c->n++;
        }
        cJSON_Delete(j);
    }
    free(line);
    fclose(f);
    if (c->n == 0) {
        snprintf(err, errlen, "corpus %s has no {\"text\": ...} lines (read %ld lines)", path,
                 lineno);
        lg_corpus_free(c);
        return -1;
    }
    return 0;
}

void lg_corpus_free(lg_corpus *c) {
    for (int i = 0; i < c->n; i++)
        free(c->texts[i]);
    free(c->texts);
    memset(c, 0, sizeof *c);
}
