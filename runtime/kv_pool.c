/* kv_pool.c — a stack of free page ids. */
#include "kv_pool.h"

#include <stdlib.h>

int kv_pool_init(kv_pool *p, int n_pages, int page_size) {
    p->page_size = page_size > 0 ? page_size : 1;
    p->n_pages = n_pages > 0 ? n_pages : 0;
    p->peak_used = 0;
    p->free_ids = malloc(sizeof(int32_t) * (size_t)(p->n_pages > 0 ? p->n_pages : 1));
    if (!p->free_ids) {
        p->n_pages = p->n_free = 0;
        return -1;
    }
    /* highest id on the bottom, so the first sequence gets pages 0, 1, 2, ... in order */
    for (int i = 0; i < p->n_pages; i++)
        p->free_ids[i] = p->n_pages - 1 - i;
    p->n_free = p->n_pages;
    return 0;
}

void kv_pool_free(kv_pool *p) {
    free(p->free_ids);
    p->free_ids = NULL;
    p->n_pages = p->n_free = 0;
}

int kv_pool_pages_for(const kv_pool *p, int tokens) {
    return (int)(((long long)tokens + p->page_size - 1) / p->page_size);
}

int kv_pool_take(kv_pool *p, int tokens, int32_t *pages) {
    const int n = kv_pool_pages_for(p, tokens);
    if (n > p->n_free) return -1;
    for (int i = 0; i < n; i++)
        pages[i] = p->free_ids[--p->n_free];
    if (kv_pool_used(p) > p->peak_used) p->peak_used = kv_pool_used(p);
    return 0;
}

void kv_pool_give(kv_pool *p, const int32_t *pages, int n) {
    for (int i = 0; i < n; i++)
        p->free_ids[p->n_free++] = pages[i];
}
