/* gguf_writer.h — a tiny GGUF writer for the tests: metadata entries appended one by one, tensor
 * infos with their offsets laid out as ggml does (each aligned, in order) unless a test forces one,
 * and every header field overridable so a test can build exactly the broken file it needs. */
#ifndef QE_TESTS_GGUF_WRITER_H
#define QE_TESTS_GGUF_WRITER_H
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ref/ref_quant.h"

typedef struct {
    uint8_t *b;
    size_t n, cap;
} gw_buf;

static inline void gw_put(gw_buf *w, const void *p, size_t n) {
    if (w->n + n > w->cap) {
        w->cap = (w->n + n) * 2 + 64;
        w->b = realloc(w->b, w->cap);
    }
    memcpy(w->b + w->n, p, n);
    w->n += n;
}
static inline void gw_u32(gw_buf *w, uint32_t v) {
    gw_put(w, &v, 4);
}
static inline void gw_u64(gw_buf *w, uint64_t v) {
    gw_put(w, &v, 8);
}
static inline void gw_str(gw_buf *w, const char *s) {
    gw_u64(w, strlen(s));
    gw_put(w, s, strlen(s));
}

#define GW_MAX_TENSORS 16
#define GW_AUTO UINT64_MAX /* offset: the next aligned one, as ggml lays tensors out */

typedef struct {
    const char *name;
    uint32_t type;
    uint32_t ndim;
    uint64_t dims[8];
    uint64_t offset;
} gw_tensor;

typedef struct {
    char magic[4];
    uint32_t version;
    uint32_t alignment;             /* used to lay out the file (the key is the test's to write) */
    uint64_t claim_n_t, claim_n_kv; /* counts written in the header; GW_AUTO: the real ones */
    uint64_t data_len;              /* bytes of data section; GW_AUTO: up to the last tensor */
    gw_buf kv;
    uint64_t n_kv;
    gw_tensor t[GW_MAX_TENSORS];
    int n_t;
} gw_file;

static inline gw_file gw_new(void) {
    gw_file f;
    memset(&f, 0, sizeof f);
    memcpy(f.magic, "GGUF", 4);
    f.version = 3;
    f.alignment = 32;
    f.claim_n_t = f.claim_n_kv = f.data_len = GW_AUTO;
    return f;
}

/* Starts a metadata entry; the caller appends the value (gw_kv_* do it for each type). */
static inline void gw_key(gw_file *f, const char *key, uint32_t type) {
    gw_str(&f->kv, key);
    gw_u32(&f->kv, type);
    f->n_kv++;
}
static inline void gw_kv_u32(gw_file *f, const char *key, uint32_t v) {
    gw_key(f, key, 4);
    gw_u32(&f->kv, v);
}
static inline void gw_kv_i32(gw_file *f, const char *key, int32_t v) {
    gw_key(f, key, 5);
    gw_put(&f->kv, &v, 4);
}
static inline void gw_kv_f32(gw_file *f, const char *key, float v) {
    gw_key(f, key, 6);
    gw_put(&f->kv, &v, 4);
}
static inline void gw_kv_f64(gw_file *f, const char *key, double v) {
    gw_key(f, key, 12);
    gw_put(&f->kv, &v, 8);
}
static inline void gw_kv_bool(gw_file *f, const char *key, int v) {
    gw_key(f, key, 7);
    uint8_t b = (uint8_t)v;
    gw_put(&f->kv, &b, 1);
}
static inline void gw_kv_u64(gw_file *f, const char *key, uint64_t v) {
    gw_key(f, key, 10);
    gw_u64(&f->kv, v);
}
static inline void gw_kv_str(gw_file *f, const char *key, const char *v) {
    gw_key(f, key, 8);
    gw_str(&f->kv, v);
}
static inline void gw_kv_str_array(gw_file *f, const char *key, const char *const *v, int n) {
    gw_key(f, key, 9);
    gw_u32(&f->kv, 8);
    gw_u64(&f->kv, (uint64_t)n);
    for (int i = 0; i < n; i++)
        gw_str(&f->kv, v[i]);
}
static inline void gw_kv_i32_array(gw_file *f, const char *key, const int32_t *v, int n) {
    gw_key(f, key, 9);
    gw_u32(&f->kv, 5);
    gw_u64(&f->kv, (uint64_t)n);
    gw_put(&f->kv, v, sizeof *v * (size_t)n);
}

/* Adds a tensor of 1..4 dims (0-terminated list, innermost first) at the next aligned offset. */
static inline gw_tensor *gw_tensor_add(gw_file *f, const char *name, uint32_t type, uint64_t d0,
                                       uint64_t d1, uint64_t d2, uint64_t d3) {
    gw_tensor *t = &f->t[f->n_t++];
    memset(t, 0, sizeof *t);
    t->name = name;
    t->type = type;
    const uint64_t d[4] = {d0, d1, d2, d3};
    for (int i = 0; i < 4 && d[i]; i++)
        t->dims[t->ndim++] = d[i];
    t->offset = GW_AUTO;
    return t;
}

static inline uint64_t gw_tensor_bytes(const gw_tensor *t) {
    uint64_t n = 1;
    for (uint32_t i = 0; i < t->ndim && i < 8; i++)
        n *= t->dims[i];
    return ref_qtype_bytes(t->type, n);
}

static inline uint64_t gw_align(uint64_t x, uint64_t a) {
    return (x + a - 1) / a * a;
}

/* Writes the file: header, metadata, tensor infos, padding, data (bytes i*7+1, each tensor's
 * block padded to the alignment, data_len bytes in all when set). Offsets left GW_AUTO are filled
 * in on f. *len gets the size. */
static inline uint8_t *gw_build(gw_file *f, size_t *len) {
    gw_buf w = {0};
    gw_put(&w, f->magic, 4);
    gw_u32(&w, f->version);
    gw_u64(&w, f->claim_n_t == GW_AUTO ? (uint64_t)f->n_t : f->claim_n_t);
    gw_u64(&w, f->claim_n_kv == GW_AUTO ? f->n_kv : f->claim_n_kv);
    if (f->kv.n) gw_put(&w, f->kv.b, f->kv.n);
    uint64_t next = 0, end = 0;
    for (int i = 0; i < f->n_t; i++) {
        gw_tensor *t = &f->t[i];
        if (t->offset == GW_AUTO) t->offset = next;
        const uint64_t stop = t->offset + gw_tensor_bytes(t);
        next = gw_align(stop, f->alignment);
        if (next > end) end = next;
        gw_str(&w, t->name);
        gw_u32(&w, t->ndim);
        for (uint32_t d = 0; d < t->ndim && d < 8; d++)
            gw_u64(&w, t->dims[d]);
        gw_u32(&w, t->type);
        gw_u64(&w, t->offset);
    }
    const uint8_t zero = 0;
    while (f->n_t && w.n % f->alignment)
        gw_put(&w, &zero, 1);
    if (f->data_len != GW_AUTO) end = f->data_len;
    for (uint64_t i = 0; i < end; i++) {
        const uint8_t v = (uint8_t)(i * 7 + 1);
        gw_put(&w, &v, 1);
    }
    *len = w.n;
    return w.b;
}

static inline void gw_free(gw_file *f) {
    free(f->kv.b);
    f->kv.b = NULL;
}

#endif
