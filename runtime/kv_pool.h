/* kv_pool.h — the page allocator of the paged K/V pool: which pages are free. The pages
 * themselves (every layer's K|V rows, page_size tokens each) live in the backend, host or device
 * memory, made once at qe_open; a sequence longer than a step holds a block table of pages for
 * all of its tokens from admission to its last chunk. Host bookkeeping only, not thread-safe
 * (the engine lock covers it). */
#ifndef QE_RUNTIME_KV_POOL_H
#define QE_RUNTIME_KV_POOL_H
#include <stdint.h>

typedef struct kv_pool {
    int page_size; /* tokens per page */
    int n_pages;
    int n_free;
    int peak_used;     /* most pages ever held at once, for tests and metrics */
    int32_t *free_ids; /* [n_pages]: a stack, free_ids[0 .. n_free) */
} kv_pool;

/* 0, or -1 when the host has no memory for the free list. n_pages may be 0 (no pool). */
int kv_pool_init(kv_pool *p, int n_pages, int page_size);
void kv_pool_free(kv_pool *p);
/* Pages a sequence of `tokens` tokens needs. */
int kv_pool_pages_for(const kv_pool *p, int tokens);
/* Takes kv_pool_pages_for(tokens) pages into pages[]; 0, or -1 (nothing taken) when fewer are
 * free now. */
int kv_pool_take(kv_pool *p, int tokens, int32_t *pages);
/* Returns n pages taken earlier. */
void kv_pool_give(kv_pool *p, const int32_t *pages, int n);
static inline int kv_pool_used(const kv_pool *p) {
    return p->n_pages - p->n_free;
}

#endif
