/* loadgen_internal.h — pieces shared by the files of the load generator. */
#ifndef QE_LOADGEN_INTERNAL_H
#define QE_LOADGEN_INTERNAL_H
#include <stddef.h>

#include "loadgen/loadgen.h"

typedef struct lg_corpus {
    char **texts;
    int n, cap;
} lg_corpus;

int lg_corpus_load(const char *path, lg_corpus *c, char *err, size_t errlen);
void lg_corpus_free(lg_corpus *c);

#endif
