/* tok_bpe.c — byte-level BPE on one pre-tokenized word: start from one symbol per byte and
 * apply merges lowest rank first (leftmost on ties), as Hugging Face does. Short words use a
 * small array scan; long words a heap with linked symbols (O(n log n): a 100k-character word
 * stays fast). A per-thread cache maps recent words to their ids. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

#define SMALL_WORD 48
#define CACHE_SLOTS (1u << 16)
#define CACHE_ENTRIES (1u << 15)
#define CACHE_BYTES (1u << 20)
#define CACHE_IDS (1u << 18)

int tok_idbuf_push(tok_idbuf *b, const int32_t *ids, size_t n) {
    if (n == 0) return 0; /* ids may be NULL (an empty template part) */
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n)
            cap *= 2;
        int32_t *p = realloc(b->ids, cap * sizeof *p);
        if (!p) return -1;
        b->ids = p;
        b->cap = cap;
    }
    memcpy(b->ids + b->n, ids, n * sizeof *ids);
    b->n += n;
    return 0;
}

/* ---- the per-thread word cache ------------------------------------------------------------ */

typedef struct {
    uint64_t hash;
    uint32_t word_off, ids_off;
    uint16_t word_len, n_ids;
} cache_entry;

typedef struct {
    uint64_t uid;               /* the tokenizer these entries belong to */
    uint32_t slot[CACHE_SLOTS]; /* entry index + 1; 0 = empty */
    cache_entry e[CACHE_ENTRIES];
    uint32_t n_e, n_bytes, n_ids;
    uint8_t bytes[CACHE_BYTES];
    int32_t ids[CACHE_IDS];
} word_cache;

/* A thread keeps caches for a few tokenizers at once (say, a server with two models), so
 * alternating between them does not wipe a cache on every call. */
#define CACHES_PER_THREAD 4

typedef struct {
    word_cache *c[CACHES_PER_THREAD];
    unsigned next_evict;
} thread_caches;

static pthread_key_t cache_key;
static pthread_once_t cache_key_once = PTHREAD_ONCE_INIT;
static _Thread_local thread_caches *tls_caches;

static void free_caches(void *p) {
    thread_caches *tc = p;
    for (int i = 0; i < CACHES_PER_THREAD; i++)
        free(tc->c[i]);
    free(tc);
}
static void make_cache_key(void) {
    (void)pthread_key_create(&cache_key, free_caches);
}

static void cache_reset(word_cache *c, uint64_t uid) {
    memset(c->slot, 0, sizeof c->slot);
    c->n_e = c->n_bytes = c->n_ids = 0;
    c->uid = uid;
}

/* This thread's cache for tokenizer uid; NULL when memory is short (BPE then runs uncached). */
static word_cache *cache_get(uint64_t uid) {
    thread_caches *tc = tls_caches;
    if (!tc) {
        pthread_once(&cache_key_once, make_cache_key);
        tc = calloc(1, sizeof *tc);
        if (!tc) return NULL;
        /* The key's destructor frees the caches when the thread exits. */
        pthread_setspecific(cache_key, tc);
        tls_caches = tc;
    }
    for (int i = 0; i < CACHES_PER_THREAD; i++)
        if (tc->c[i] && tc->c[i]->uid == uid) return tc->c[i];
    int slot = -1;
    for (int i = 0; i < CACHES_PER_THREAD && slot < 0; i++)
        if (!tc->c[i]) slot = i;
    if (slot < 0) slot = (int)(tc->next_evict++ % CACHES_PER_THREAD);
    if (!tc->c[slot] && !(tc->c[slot] = malloc(sizeof(word_cache)))) return NULL;
    cache_reset(tc->c[slot], uid);
    return tc->c[slot];
}

static inline uint64_t hash_word(const uint8_t *w, size_t len) {
    uint64_t h = 0x243F6A8885A308D3ull ^ len;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t x;
        memcpy(&x, w + i, 8);
        h = (h ^ x) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 32;
    }
    if (i < len) {
        uint64_t x = 0;
        memcpy(&x, w + i, len - i);
        h = (h ^ x) * 0x9E3779B97F4A7C15ull;
    }
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    return h ^ (h >> 32);
}

static const cache_entry *cache_find(const word_cache *c, uint64_t h, const uint8_t *w, size_t len,
                                     uint32_t *slot_out) {
    for (uint32_t i = (uint32_t)h & (CACHE_SLOTS - 1);; i = (i + 1) & (CACHE_SLOTS - 1)) {
        uint32_t s = c->slot[i];
        if (!s) {
            *slot_out = i;
            return NULL;
        }
        const cache_entry *e = &c->e[s - 1];
        if (e->hash == h && e->word_len == len && !memcmp(c->bytes + e->word_off, w, len)) return e;
    }
}

static void cache_put(word_cache *c, uint64_t h, uint32_t slot, const uint8_t *w, size_t len,
                      const int32_t *ids, size_t n) {
    /* Full: start over (CACHE_ENTRIES is half of CACHE_SLOTS, so probing stays short). */
    if (c->n_e >= CACHE_ENTRIES || c->n_bytes + len > CACHE_BYTES || c->n_ids + n > CACHE_IDS) {
        cache_reset(c, c->uid);
        (void)cache_find(c, h, w, len, &slot);
    }
    cache_entry *e = &c->e[c->n_e];
    e->hash = h;
    e->word_off = c->n_bytes;
    e->word_len = (uint16_t)len;
    e->ids_off = c->n_ids;
    e->n_ids = (uint16_t)n;
    memcpy(c->bytes + c->n_bytes, w, len);
    memcpy(c->ids + c->n_ids, ids, n * sizeof *ids);
    c->n_bytes += (uint32_t)len;
    c->n_ids += (uint32_t)n;
    c->slot[slot] = ++c->n_e;
}

/* ---- merging ----------------------------------------------------------------------------- */

/* Words up to SMALL_WORD bytes: ranks[i] is the rank of pair (i, i+1); each step scans for the
 * smallest, merges, and recomputes only the two neighbouring pairs. */
static size_t merge_small(const tok_tokenizer *t, const uint8_t *w, size_t len, int32_t *sym) {
    int32_t rank[SMALL_WORD], nid[SMALL_WORD];
    size_t m = len;
    for (size_t i = 0; i < m; i++)
        sym[i] = t->byte_id[w[i]];
    for (size_t i = 0; i + 1 < m; i++) {
        rank[i] = tok_merge_rank(t, sym[i], sym[i + 1], &nid[i]);
        if (rank[i] < 0) rank[i] = INT32_MAX;
    }
    while (m > 1) {
        size_t b = 0;
        for (size_t i = 1; i + 1 < m; i++)
            if (rank[i] < rank[b]) b = i;
        if (rank[b] == INT32_MAX) break;
        sym[b] = nid[b];
        memmove(sym + b + 1, sym + b + 2, (m - b - 2) * sizeof *sym);
        if (m >= b + 3) {
            memmove(rank + b + 1, rank + b + 2, (m - b - 3) * sizeof *rank);
            memmove(nid + b + 1, nid + b + 2, (m - b - 3) * sizeof *nid);
        }
        m--;
        if (b + 1 < m) {
            rank[b] = tok_merge_rank(t, sym[b], sym[b + 1], &nid[b]);
            if (rank[b] < 0) rank[b] = INT32_MAX;
        }
        if (b > 0) {
            rank[b - 1] = tok_merge_rank(t, sym[b - 1], sym[b], &nid[b - 1]);
            if (rank[b - 1] < 0) rank[b - 1] = INT32_MAX;
        }
    }
    return m;
}

/* Min-heap of (rank << 32 | position): smallest rank first, then leftmost. */
static void heap_push(uint64_t *h, size_t *n, uint64_t v) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p] <= v) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = v;
}

static uint64_t heap_pop(uint64_t *h, size_t *n) {
    uint64_t top = h[0], v = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && h[c + 1] < h[c]) c++;
        if (v <= h[c]) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = v;
    return top;
}

/* Long words: symbols stay in place and are linked; a stale heap entry (its pair changed since
 * it was pushed) is recognised because the pair's rank no longer equals the entry's. */
static int merge_long(const tok_tokenizer *t, const uint8_t *w, size_t len, tok_idbuf *out) {
    int32_t *sym = malloc(len * sizeof *sym);
    int32_t *prev = malloc(len * sizeof *prev);
    int32_t *next = malloc(len * sizeof *next);
    uint64_t *heap = malloc(3 * len * sizeof *heap);
    int rc = -1;
    if (!sym || !prev || !next || !heap) goto done;
    size_t nh = 0;
    for (size_t i = 0; i < len; i++) {
        sym[i] = t->byte_id[w[i]];
        prev[i] = (int32_t)i - 1;
        next[i] = (i + 1 < len) ? (int32_t)i + 1 : -1;
    }
    int32_t nid;
    for (size_t i = 0; i + 1 < len; i++) {
        int32_t r = tok_merge_rank(t, sym[i], sym[i + 1], &nid);
        if (r >= 0) heap_push(heap, &nh, ((uint64_t)r << 32) | i);
    }
    while (nh) {
        uint64_t top = heap_pop(heap, &nh);
        int32_t r = (int32_t)(top >> 32), p = (int32_t)(uint32_t)top;
        if (sym[p] < 0 || next[p] < 0) continue;
        int32_t q = next[p];
        if (tok_merge_rank(t, sym[p], sym[q], &nid) != r) continue;
        sym[p] = nid;
        sym[q] = -1;
        next[p] = next[q];
        if (next[q] >= 0) prev[next[q]] = p;
        if (prev[p] >= 0) {
            int32_t r2 = tok_merge_rank(t, sym[prev[p]], sym[p], &nid);
            if (r2 >= 0) heap_push(heap, &nh, ((uint64_t)r2 << 32) | (uint32_t)prev[p]);
        }
        if (next[p] >= 0) {
            int32_t r2 = tok_merge_rank(t, sym[p], sym[next[p]], &nid);
            if (r2 >= 0) heap_push(heap, &nh, ((uint64_t)r2 << 32) | (uint32_t)p);
        }
    }
    size_t m = 0;
    for (int32_t i = 0; i >= 0; i = next[i])
        sym[m++] = sym[i];
    rc = tok_idbuf_push(out, sym, m);
done:
    free(sym);
    free(prev);
    free(next);
    free(heap);
    return rc;
}

int tok_bpe_word(const tok_tokenizer *t, const uint8_t *w, size_t len, tok_idbuf *out) {
    if (len == 1) return tok_idbuf_push(out, &t->byte_id[w[0]], 1);
    if (len > SMALL_WORD) return merge_long(t, w, len, out);
    word_cache *c = cache_get(t->uid);
    uint64_t h = 0;
    uint32_t slot = 0;
    if (c) {
        h = hash_word(w, len);
        const cache_entry *e = cache_find(c, h, w, len, &slot);
        if (e) return tok_idbuf_push(out, c->ids + e->ids_off, e->n_ids);
    }
    int32_t sym[SMALL_WORD];
    size_t m = merge_small(t, w, len, sym);
    if (c) cache_put(c, h, slot, w, len, sym, m);
    return tok_idbuf_push(out, sym, m);
}
