/* gguf_internal.h — the parsed GGUF file, shared by the reader (gguf.c) and the typed metadata
 * lookups (gguf_meta.c). Not for use outside weights/. */
#ifndef QE_WEIGHTS_GGUF_INTERNAL_H
#define QE_WEIGHTS_GGUF_INTERNAL_H
#include "gguf.h"

typedef struct gguf_kv {
    char *key;
    uint32_t type;
    uint32_t elem_type;   /* arrays only */
    uint64_t n;           /* arrays: element count */
    const uint8_t *value; /* the value's bytes (an array: its first element) */
} gguf_kv;

struct gguf_file {
    void *map; /* owned mapping (gguf_open), else NULL */
    size_t map_len;
    uint32_t version, alignment;
    gguf_kv *kv;
    int n_kv;
    gguf_tensor *t;
    int n_t;
    int *t_by_name, *kv_by_key; /* indices sorted by name, for lookup and the duplicate check */
};

/* The entry for key, or NULL. */
const gguf_kv *gguf_find_kv(const gguf_file *g, const char *key);

#endif
