/* gguf_write.c — the GGUF v3 writer (gguf_write.h): metadata and tensor infos buffered, tensor
 * data streamed in declared order with ggml's alignment padding. Little-endian hosts only (as the
 * reader). */
#include "gguf_write.h"

#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "ref/ref_quant.h"

typedef struct {
    uint8_t *b;
    size_t n, cap;
    int oom;
} wbuf;

typedef struct {
    char *name;
    uint32_t type;
    int ndim;
    int64_t dims[GGUF_MAX_DIMS];
    uint64_t offset, nbytes;
} wtensor;

struct gguf_writer {
    wbuf kv;
    uint64_t n_kv;
    wtensor *t;
    int n_t, cap_t;
    uint32_t alignment;
    int next_data; /* the tensor gguf_w_data expects next */
    uint64_t data_end;
};

static void put(wbuf *w, const void *p, size_t n) {
    if (w->oom) return;
    if (w->n + n > w->cap) {
        size_t cap = (w->n + n) * 2 + 256;
        uint8_t *b = realloc(w->b, cap);
        if (!b) {
            w->oom = 1;
            return;
        }
        w->b = b;
        w->cap = cap;
    }
    memcpy(w->b + w->n, p, n);
    w->n += n;
}
static void put_u32(wbuf *w, uint32_t v) {
    put(w, &v, 4);
}
static void put_u64(wbuf *w, uint64_t v) {
    put(w, &v, 8);
}
static void put_str(wbuf *w, const char *s, size_t n) {
    put_u64(w, n);
    put(w, s, n);
}

gguf_writer *gguf_writer_new(void) {
    gguf_writer *w = calloc(1, sizeof *w);
    if (w) w->alignment = GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n_t; i++)
        free(w->t[i].name);
    free(w->t);
    free(w->kv.b);
    free(w);
}

static int key(gguf_writer *w, const char *k, gguf_vtype type) {
    put_str(&w->kv, k, strlen(k));
    put_u32(&w->kv, type);
    w->n_kv++;
    return w->kv.oom ? -1 : 0;
}

int gguf_w_u32(gguf_writer *w, const char *k, uint32_t v) {
    key(w, k, GGUF_U32);
    put_u32(&w->kv, v);
    return w->kv.oom ? -1 : 0;
}
int gguf_w_i32(gguf_writer *w, const char *k, int32_t v) {
    key(w, k, GGUF_I32);
    put(&w->kv, &v, 4);
    return w->kv.oom ? -1 : 0;
}
int gguf_w_f32(gguf_writer *w, const char *k, float v) {
    key(w, k, GGUF_F32);
    put(&w->kv, &v, 4);
    return w->kv.oom ? -1 : 0;
}
int gguf_w_bool(gguf_writer *w, const char *k, int v) {
    key(w, k, GGUF_BOOL);
    const uint8_t b = v ? 1 : 0;
    put(&w->kv, &b, 1);
    return w->kv.oom ? -1 : 0;
}
int gguf_w_str(gguf_writer *w, const char *k, const char *v) {
    key(w, k, GGUF_STRING);
    put_str(&w->kv, v, strlen(v));
    return w->kv.oom ? -1 : 0;
}
int gguf_w_str_array(gguf_writer *w, const char *k, const char *const *items, const size_t *lens,
                     size_t n) {
    key(w, k, GGUF_ARRAY);
    put_u32(&w->kv, GGUF_STRING);
    put_u64(&w->kv, n);
    for (size_t i = 0; i < n; i++)
        put_str(&w->kv, items[i], lens ? lens[i] : strlen(items[i]));
    return w->kv.oom ? -1 : 0;
}
int gguf_w_i32_array(gguf_writer *w, const char *k, const int32_t *v, size_t n) {
    key(w, k, GGUF_ARRAY);
    put_u32(&w->kv, GGUF_I32);
    put_u64(&w->kv, n);
    put(&w->kv, v, 4 * n);
    return w->kv.oom ? -1 : 0;
}

static uint64_t align_up(uint64_t x, uint64_t a) {
    return (x + a - 1) / a * a;
}

int gguf_w_tensor(gguf_writer *w, const char *name, uint32_t type, int ndim, const int64_t *dims) {
    const ref_qtype_info *qi = ref_qtype_get(type);
    if (!qi || ndim < 1 || ndim > GGUF_MAX_DIMS || dims[0] % qi->block) return -1;
    uint64_t n = 1;
    for (int d = 0; d < ndim; d++) {
        if (dims[d] <= 0 || (uint64_t)dims[d] > UINT64_MAX / n) return -1;
        n *= (uint64_t)dims[d];
    }
    const uint64_t bytes = ref_qtype_bytes(type, n);
    if (!bytes) return -1;
    if (w->n_t == w->cap_t) {
        int cap = w->cap_t ? 2 * w->cap_t : 64;
        wtensor *t = realloc(w->t, sizeof *t * (size_t)cap);
        if (!t) return -1;
        w->t = t;
        w->cap_t = cap;
    }
    wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name) return -1;
    t->type = type;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++)
        t->dims[d] = dims[d];
    t->offset = w->data_end;
    t->nbytes = bytes;
    w->data_end = align_up(t->offset + bytes, w->alignment);
    return w->n_t++;
}

uint64_t gguf_w_tensor_bytes(const gguf_writer *w, int i) {
    return i >= 0 && i < w->n_t ? w->t[i].nbytes : 0;
}

static int write_all(FILE *f, const void *p, size_t n, char *err, size_t errlen) {
    if (n && fwrite(p, 1, n, f) != n) {
        snprintf(err, errlen, "write failed (disk full?)");
        return -1;
    }
    return 0;
}

static int pad(FILE *f, uint64_t at, uint32_t alignment, char *err, size_t errlen) {
    static const uint8_t zeros[64];
    const size_t n = (size_t)(align_up(at, alignment) - at);
    return write_all(f, zeros, n, err, errlen);
}

int gguf_w_begin(gguf_writer *w, FILE *f, char *err, size_t errlen) {
    wbuf h = {0};
    put(&h, "GGUF", 4);
    put_u32(&h, 3);
    put_u64(&h, (uint64_t)w->n_t);
    put_u64(&h, w->n_kv);
    put(&h, w->kv.b, w->kv.n);
    for (int i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        put_str(&h, t->name, strlen(t->name));
        put_u32(&h, (uint32_t)t->ndim);
        for (int d = 0; d < t->ndim; d++)
            put_u64(&h, (uint64_t)t->dims[d]);
        put_u32(&h, t->type);
        put_u64(&h, t->offset);
    }
    if (h.oom || w->kv.oom) {
        free(h.b);
        snprintf(err, errlen, "out of memory building the GGUF header");
        return -1;
    }
    int rc = write_all(f, h.b, h.n, err, errlen) || pad(f, h.n, w->alignment, err, errlen) ? -1 : 0;
    free(h.b);
    w->next_data = 0;
    return rc;
}

int gguf_w_data(gguf_writer *w, FILE *f, int i, const void *data, char *err, size_t errlen) {
    if (i != w->next_data || i >= w->n_t) {
        snprintf(err, errlen, "tensor data written out of order (%d, expected %d)", i,
                 w->next_data);
        return -1;
    }
    const wtensor *t = &w->t[i];
    if (write_all(f, data, (size_t)t->nbytes, err, errlen) ||
        pad(f, t->offset + t->nbytes, w->alignment, err, errlen))
        return -1;
    w->next_data++;
    return 0;
}
