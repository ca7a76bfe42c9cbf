/* gguf.c — mmap reader for GGUF files. The whole file is untrusted input: every count, length,
 * type, shape and offset is checked against the bytes actually there before anything is exposed,
 * so later code can index tensors and metadata without re-checking.
 *
 * Layout (little-endian): "GGUF", u32 version, u64 tensor count, u64 metadata count; metadata as
 * (string key, u32 type, value); tensor infos as (string name, u32 ndim, u64 dims[ndim], u32 type,
 * u64 offset); padding to the alignment; the data section. A string is a u64 length and that many
 * bytes, no NUL. */
#include "gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_internal.h"
#include "mapfile.h"
#include "ref/ref_quant.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c reads little-endian files by copying bytes: a big-endian host needs byte swaps"
#endif

#define MAX_NAME 256 /* tensor names; ggml itself stops at 64 */
#define MAX_KEY 1024
#define MAX_ENTRIES (1 << 24) /* per count: far above any model (thousands), and int-indexable */
/* The least bytes one entry can take, to bound counts by the file size before allocating:
 * key length, 1-byte key, type, u8 value; name length, 1-byte name, ndim, one dim, type, offset. */
#define MIN_KV_BYTES (8 + 1 + 4 + 1)
#define MIN_TENSOR_BYTES (8 + 1 + 4 + 8 + 4 + 8)

/* A read position in the buffer; every take is bounded by what is left. */
typedef struct {
    const uint8_t *base;
    size_t pos, len;
} cursor;

static const char *VTYPE_NAMES[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                    "bool", "string", "array", "u64", "i64", "f64"};
static const size_t VTYPE_SIZES[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
#define N_VTYPES (sizeof VTYPE_NAMES / sizeof VTYPE_NAMES[0])

const char *gguf_vtype_name(uint32_t t) {
    return t < N_VTYPES ? VTYPE_NAMES[t] : "unknown";
}

static int take(cursor *c, size_t n, const uint8_t **p, const char *what, char *err,
                size_t errlen) {
    if (n > c->len - c->pos) {
        snprintf(err, errlen,
                 "truncated: %s needs %zu bytes at offset %zu, but the file ends at %zu", what, n,
                 c->pos, c->len);
        return -1;
    }
    *p = c->base + c->pos;
    c->pos += n;
    return 0;
}

static int rd_u32(cursor *c, uint32_t *v, const char *what, char *err, size_t errlen) {
    const uint8_t *p;
    if (take(c, 4, &p, what, err, errlen)) return -1;
    memcpy(v, p, 4);
    return 0;
}

static int rd_u64(cursor *c, uint64_t *v, const char *what, char *err, size_t errlen) {
    const uint8_t *p;
    if (take(c, 8, &p, what, err, errlen)) return -1;
    memcpy(v, p, 8);
    return 0;
}

/* A string; `what` names it in errors, or, when key is set, the metadata entry it belongs to
 * (formatted only on error: a vocabulary is 150k strings). */
static int rd_str(cursor *c, gguf_span *s, const char *what, const char *key, char *err,
                  size_t errlen) {
    uint64_t n;
    const uint8_t *p;
    if (rd_u64(c, &n, key ? "metadata string length" : what, err, errlen)) return -1;
    if (n > c->len - c->pos) {
        snprintf(err, errlen,
                 "%s%s%s: string length %llu at offset %zu runs past the end of the file (%zu "
                 "bytes left)",
                 key ? "metadata \"" : what, key ? key : "", key ? "\"" : "", (unsigned long long)n,
                 c->pos - 8, c->len - c->pos);
        return -1;
    }
    take(c, (size_t)n, &p, what, err, errlen);
    s->ptr = (const char *)p;
    s->len = (size_t)n;
    return 0;
}

/* A name or key as a C string: non-empty, bounded, no NUL inside. */
static char *dup_name(const gguf_span *s, size_t max, const char *what, char *err, size_t errlen) {
    if (s->len == 0 || s->len > max || memchr(s->ptr, 0, s->len)) {
        snprintf(err, errlen, "%s \"%.*s\": must be 1 to %zu bytes without NUL", what,
                 (int)(s->len < 64 ? s->len : 64), s->ptr, max);
        return NULL;
    }
    char *d = malloc(s->len + 1);
    if (!d) {
        snprintf(err, errlen, "out of memory reading %s", what);
        return NULL;
    }
    memcpy(d, s->ptr, s->len);
    d[s->len] = 0;
    return d;
}

/* Steps over one value of type `type` (an array element when in_array). */
static int skip_value(cursor *c, uint32_t type, const char *key, int in_array, char *err,
                      size_t errlen) {
    const uint8_t *p;
    if (type >= N_VTYPES) {
        snprintf(err, errlen, "metadata \"%s\": unknown value type %u", key, type);
        return -1;
    }
    if (type == GGUF_STRING) {
        gguf_span s;
        return rd_str(c, &s, NULL, key, err, errlen);
    }
    if (type == GGUF_ARRAY) {
        if (in_array) {
            snprintf(err, errlen, "metadata \"%s\": arrays of arrays are not supported", key);
            return -1;
        }
        uint32_t et;
        uint64_t n;
        if (rd_u32(c, &et, "array type", err, errlen) || rd_u64(c, &n, "array count", err, errlen))
            return -1;
        if (et >= N_VTYPES) {
            snprintf(err, errlen, "metadata \"%s\": unknown array element type %u", key, et);
            return -1;
        }
        if (et == GGUF_ARRAY) {
            snprintf(err, errlen, "metadata \"%s\": arrays of arrays are not supported", key);
            return -1;
        }
        /* Bound the count by the bytes left before looping (a string takes at least 8). */
        const size_t least = et == GGUF_STRING ? 8 : VTYPE_SIZES[et];
        if (n > (c->len - c->pos) / least) {
            snprintf(err, errlen,
                     "metadata \"%s\": array of %llu %s runs past the end of the file (%zu bytes "
                     "left)",
                     key, (unsigned long long)n, gguf_vtype_name(et), c->len - c->pos);
            return -1;
        }
        if (et != GGUF_STRING) return take(c, (size_t)n * least, &p, key, err, errlen);
        for (uint64_t i = 0; i < n; i++)
            if (skip_value(c, GGUF_STRING, key, 1, err, errlen)) return -1;
        return 0;
    }
    if (VTYPE_SIZES[type] > c->len - c->pos) {
        snprintf(err, errlen,
                 "truncated: metadata \"%s\" needs a %zu-byte %s at offset %zu, but "
                 "the file ends at %zu",
                 key, VTYPE_SIZES[type], gguf_vtype_name(type), c->pos, c->len);
        return -1;
    }
    c->pos += VTYPE_SIZES[type];
    return 0;
}

static int read_kv(cursor *c, int i, gguf_kv *kv, char *err, size_t errlen) {
    gguf_span key;
    char what[64];
    snprintf(what, sizeof what, "metadata key #%d", i);
    if (rd_str(c, &key, what, NULL, err, errlen)) return -1;
    if (!(kv->key = dup_name(&key, MAX_KEY, "metadata key", err, errlen))) return -1;
    if (rd_u32(c, &kv->type, "metadata value type", err, errlen)) return -1;
    const size_t at = c->pos;
    if (kv->type == GGUF_ARRAY && c->len - c->pos >= 12) {
        memcpy(&kv->elem_type, c->base + at, 4);
        memcpy(&kv->n, c->base + at + 4, 8);
        kv->value = c->base + at + 12;
    } else {
        kv->value = c->base + at;
    }
    return skip_value(c, kv->type, kv->key, 0, err, errlen);
}

static int read_tensor_info(cursor *c, int i, gguf_tensor *t, char *err, size_t errlen) {
    gguf_span name;
    char what[64];
    snprintf(what, sizeof what, "tensor #%d name", i);
    if (rd_str(c, &name, what, NULL, err, errlen)) return -1;
    if (!(t->name = dup_name(&name, MAX_NAME, "tensor name", err, errlen))) return -1;
    uint32_t nd;
    if (rd_u32(c, &nd, "tensor dimension count", err, errlen)) return -1;
    if (nd < 1 || nd > GGUF_MAX_DIMS) {
        snprintf(err, errlen, "tensor \"%s\": %u dimensions (1 to %d)", t->name, nd, GGUF_MAX_DIMS);
        return -1;
    }
    t->ndim = (int)nd;
    int64_t elems = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        uint64_t v = 1;
        if (d < t->ndim && rd_u64(c, &v, "tensor dimension", err, errlen)) return -1;
        if (v == 0 || v > (uint64_t)INT64_MAX || (int64_t)v > INT64_MAX / elems) {
            snprintf(err, errlen, "tensor \"%s\": dimension %d = %llu %s", t->name, d,
                     (unsigned long long)v,
                     v == 0 ? "(every dimension must be > 0)" : "makes the element count overflow");
            return -1;
        }
        t->dims[d] = (int64_t)v;
        elems *= (int64_t)v;
    }
    t->n_elements = elems;
    if (rd_u32(c, &t->type, "tensor type", err, errlen)) return -1;
    const ref_qtype_info *q = ref_qtype_get(t->type);
    if (!q) {
        snprintf(err, errlen, "tensor \"%s\": unknown type id %u", t->name, t->type);
        return -1;
    }
    t->type_name = q->name;
    if (t->dims[0] % q->block) {
        snprintf(err, errlen,
                 "tensor \"%s\": type %s packs %d elements per block, but the innermost dimension "
                 "is %lld (not a multiple)",
                 t->name, q->name, q->block, (long long)t->dims[0]);
        return -1;
    }
    const uint64_t nbytes = ref_qtype_bytes(t->type, (uint64_t)elems);
    if (nbytes == 0 || nbytes > SIZE_MAX) {
        snprintf(err, errlen, "tensor \"%s\": %lld elements of %s do not fit in memory", t->name,
                 (long long)elems, q->name);
        return -1;
    }
    t->nbytes = (size_t)nbytes;
    return rd_u64(c, &t->offset, "tensor offset", err, errlen);
}

/* general.alignment, when present: a u32 power of two. */
static int read_alignment(gguf_file *g, char *err, size_t errlen) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *kv = gguf_find_kv(g, "general.alignment");
    if (!kv) return 0;
    uint32_t a = 0;
    if (kv->type == GGUF_U32) memcpy(&a, kv->value, 4);
    if (kv->type != GGUF_U32 || a == 0 || (a & (a - 1))) {
        snprintf(err, errlen, "general.alignment must be a u32 power of two (found %s %u)",
                 gguf_vtype_name(kv->type), a);
        return -1;
    }
    g->alignment = a;
    return 0;
}

typedef const char *(*name_fn)(const gguf_file *g, int i);

static const char *tensor_name(const gguf_file *g, int i) {
    return g->t[i].name;
}
static const char *kv_name(const gguf_file *g, int i) {
    return g->kv[i].key;
}

/* qsort has no context argument: sort (name, index) pairs. */
typedef struct {
    const char *name;
    int index;
} named;

static int cmp_named(const void *a, const void *b) {
    return strcmp(((const named *)a)->name, ((const named *)b)->name);
}

/* Fills order[] with the indices 0..n-1 sorted by name; refuses a name seen twice. */
static int sort_names(const gguf_file *g, name_fn name_of, int n, int *order, const char *what,
                      char *err, size_t errlen) {
    named *tmp = malloc(sizeof *tmp * (size_t)(n ? n : 1));
    if (!tmp) {
        snprintf(err, errlen, "out of memory sorting %s names", what);
        return -1;
    }
    for (int i = 0; i < n; i++)
        tmp[i] = (named){name_of(g, i), i};
    qsort(tmp, (size_t)n, sizeof *tmp, cmp_named);
    int rc = 0;
    for (int i = 0; i < n; i++) {
        if (i && !strcmp(tmp[i].name, tmp[i - 1].name)) {
            snprintf(err, errlen, "%s \"%.200s\" appears twice", what, tmp[i].name);
            rc = -1;
            break;
        }
        order[i] = tmp[i].index;
    }
    free(tmp);
    return rc;
}

/* Binary search over order[] (indices sorted by name); -1 when absent. */
static int search(const gguf_file *g, name_fn name_of, const int *order, int n, const char *name) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        const int mid = lo + (hi - lo) / 2, c = strcmp(name, name_of(g, order[mid]));
        if (!c) return order[mid];
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return -1;
}

static size_t align_up(size_t x, size_t a) {
    return (x + a - 1) / a * a;
}

typedef struct {
    uint64_t offset;
    int index;
} by_offset;

static int cmp_offset(const void *a, const void *b) {
    const by_offset *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Places every tensor in the data section: offsets aligned and inside it, and, as ggml writes
 * them, each tensor's span (to the next tensor) exactly its type x shape bytes rounded up to the
 * alignment; the last one must fit before the end. */
static int place_tensors(gguf_file *g, const uint8_t *data, size_t data_len, char *err,
                         size_t errlen) {
    by_offset *o = malloc(sizeof *o * (size_t)(g->n_t ? g->n_t : 1));
    if (!o) {
        snprintf(err, errlen, "out of memory placing tensors");
        return -1;
    }
    int rc = -1;
    for (int i = 0; i < g->n_t; i++) {
        gguf_tensor *t = &g->t[i];
        if (t->offset % g->alignment) {
            snprintf(err, errlen,
                     "tensor \"%s\": offset %llu is not a multiple of the alignment %u", t->name,
                     (unsigned long long)t->offset, g->alignment);
            goto out;
        }
        if (t->offset > data_len || t->nbytes > data_len - t->offset) {
            snprintf(err, errlen,
                     "tensor \"%s\": %zu bytes at offset %llu run past the end of the data "
                     "section (%zu bytes)",
                     t->name, t->nbytes, (unsigned long long)t->offset, data_len);
            goto out;
        }
        t->data = data + t->offset;
        o[i].offset = t->offset;
        o[i].index = i;
    }
    qsort(o, (size_t)g->n_t, sizeof *o, cmp_offset);
    for (int i = 0; i + 1 < g->n_t; i++) {
        const gguf_tensor *a = &g->t[o[i].index], *b = &g->t[o[i + 1].index];
        const uint64_t span = b->offset - a->offset;
        if (span < a->nbytes) {
            snprintf(err, errlen,
                     "tensors \"%.100s\" and \"%.100s\" overlap in the data section (%zu bytes at "
                     "%llu, the next at %llu)",
                     a->name, b->name, a->nbytes, (unsigned long long)a->offset,
                     (unsigned long long)b->offset);
            goto out;
        }
        if (span != align_up(a->nbytes, g->alignment)) {
            snprintf(err, errlen,
                     "tensor \"%s\": type %s x shape = %zu bytes (%zu padded), but the data "
                     "section gives it %llu (up to \"%.100s\")",
                     a->name, a->type_name, a->nbytes, align_up(a->nbytes, g->alignment),
                     (unsigned long long)span, b->name);
            goto out;
        }
    }
    rc = 0;
out:
    free(o);
    return rc;
}

static int check_version(cursor *c, gguf_file *g, char *err, size_t errlen) {
    if (rd_u32(c, &g->version, "version", err, errlen)) return -1;
    if (g->version == 2 || g->version == 3) return 0;
    if (g->version == 0x02000000u || g->version == 0x03000000u)
        snprintf(err, errlen,
                 "GGUF version %u: the file looks big-endian (only little-endian is read)",
                 __builtin_bswap32(g->version));
    else if (g->version == 1)
        snprintf(err, errlen,
                 "GGUF version 1 is not supported (32-bit counts; re-convert the model): this "
                 "reader takes versions 2 and 3");
    else
        snprintf(err, errlen, "GGUF version %u is not supported (this reader takes 2 and 3)",
                 g->version);
    return -1;
}

static int parse(gguf_file *g, const uint8_t *buf, size_t len, char *err, size_t errlen) {
    cursor c = {buf, 0, len};
    const uint8_t *magic;
    if (len >= 4 && memcmp(buf, "GGUF", 4) != 0) {
        snprintf(err, errlen, "not a GGUF file: magic is %02x %02x %02x %02x, expected \"GGUF\"",
                 buf[0], buf[1], buf[2], buf[3]);
        return -1;
    }
    if (take(&c, 4, &magic, "magic", err, errlen) || check_version(&c, g, err, errlen)) return -1;
    uint64_t n_t, n_kv;
    if (rd_u64(&c, &n_t, "tensor count", err, errlen) ||
        rd_u64(&c, &n_kv, "metadata count", err, errlen))
        return -1;
    const size_t left = len - c.pos;
    if (n_kv > left / MIN_KV_BYTES || n_t > left / MIN_TENSOR_BYTES ||
        n_kv * MIN_KV_BYTES + n_t * MIN_TENSOR_BYTES > left) {
        snprintf(err, errlen,
                 "header claims %llu tensors and %llu metadata entries, more than the %zu bytes "
                 "after it can hold",
                 (unsigned long long)n_t, (unsigned long long)n_kv, left);
        return -1;
    }
    if (n_kv > MAX_ENTRIES || n_t > MAX_ENTRIES) {
        snprintf(err, errlen,
                 "header claims %llu tensors and %llu metadata entries (at most %d each)",
                 (unsigned long long)n_t, (unsigned long long)n_kv, MAX_ENTRIES);
        return -1;
    }
    g->kv = calloc((size_t)n_kv + 1, sizeof *g->kv);
    g->kv_by_key = calloc((size_t)n_kv + 1, sizeof *g->kv_by_key);
    g->t = calloc((size_t)n_t + 1, sizeof *g->t);
    g->t_by_name = calloc((size_t)n_t + 1, sizeof *g->t_by_name);
    if (!g->kv || !g->kv_by_key || !g->t || !g->t_by_name) {
        snprintf(err, errlen, "out of memory reading the header");
        return -1;
    }
    for (uint64_t i = 0; i < n_kv; i++) {
        g->n_kv++; /* counted before reading so a half-read key is freed */
        if (read_kv(&c, (int)i, &g->kv[i], err, errlen)) return -1;
    }
    if (sort_names(g, kv_name, g->n_kv, g->kv_by_key, "metadata key", err, errlen) ||
        read_alignment(g, err, errlen))
        return -1;
    for (uint64_t i = 0; i < n_t; i++) {
        g->n_t++;
        if (read_tensor_info(&c, (int)i, &g->t[i], err, errlen)) return -1;
    }
    if (sort_names(g, tensor_name, g->n_t, g->t_by_name, "tensor", err, errlen)) return -1;
    /* The data section starts at the first aligned offset after the tensor infos. A file with no
     * tensors may end right after them. */
    const size_t data_start = align_up(c.pos, g->alignment);
    if (g->n_t == 0) return 0;
    if (data_start > len) {
        snprintf(err, errlen,
                 "the data section would start at %zu (aligned to %u), past the end of the file "
                 "(%zu bytes)",
                 data_start, g->alignment, len);
        return -1;
    }
    return place_tensors(g, buf + data_start, len - data_start, err, errlen);
}

int gguf_parse(const uint8_t *buf, size_t len, gguf_file **out, char *err, size_t errlen) {
    *out = NULL;
    if (errlen) err[0] = 0;
    gguf_file *g = calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (parse(g, buf, len, err, errlen)) {
        gguf_close(g);
        return -1;
    }
    *out = g;
    return 0;
}

int gguf_open(const char *path, gguf_file **out, char *err, size_t errlen) {
    *out = NULL;
    void *map;
    size_t size;
    if (map_readonly(path, &map, &size, err, errlen)) return -1;
    char sub[512];
    gguf_file *g;
    if (gguf_parse(map ? map : (const uint8_t *)"", size, &g, sub, sizeof sub)) {
        map_release(map, size);
        snprintf(err, errlen, "%s: %s", path, sub);
        return -1;
    }
    g->map = map;
    g->map_len = size;
    *out = g;
    return 0;
}

void gguf_close(gguf_file *g) {
    if (!g) return;
    for (int i = 0; i < g->n_kv; i++)
        free(g->kv[i].key);
    for (int i = 0; i < g->n_t; i++)
        free(g->t[i].name);
    free(g->kv);
    free(g->t);
    free(g->kv_by_key);
    free(g->t_by_name);
    map_release(g->map, g->map_len);
    free(g);
}

uint32_t gguf_version(const gguf_file *g) {
    return g->version;
}
uint32_t gguf_alignment(const gguf_file *g) {
    return g->alignment;
}
int gguf_count(const gguf_file *g) {
    return g->n_t;
}
const gguf_tensor *gguf_at(const gguf_file *g, int i) {
    return i >= 0 && i < g->n_t ? &g->t[i] : NULL;
}

const gguf_tensor *gguf_find(const gguf_file *g, const char *name) {
    const int i = search(g, tensor_name, g->t_by_name, g->n_t, name);
    return i < 0 ? NULL : &g->t[i];
}

const gguf_kv *gguf_find_kv(const gguf_file *g, const char *key) {
    const int i = search(g, kv_name, g->kv_by_key, g->n_kv, key);
    return i < 0 ? NULL : &g->kv[i];
}

int gguf_kv_count(const gguf_file *g) {
    return g->n_kv;
}
const char *gguf_kv_key(const gguf_file *g, int i) {
    return i >= 0 && i < g->n_kv ? g->kv[i].key : NULL;
}
gguf_vtype gguf_kv_type(const gguf_file *g, int i, gguf_vtype *elem_type, uint64_t *n_elems) {
    const gguf_kv *kv = &g->kv[i];
    if (elem_type) *elem_type = kv->type == GGUF_ARRAY ? (gguf_vtype)kv->elem_type : kv->type;
    if (n_elems) *n_elems = kv->type == GGUF_ARRAY ? kv->n : 1;
    return (gguf_vtype)kv->type;
}
int gguf_kv_index(const gguf_file *g, const char *key) {
    return search(g, kv_name, g->kv_by_key, g->n_kv, key);
}
int gguf_has(const gguf_file *g, const char *key) {
    return gguf_find_kv(g, key) != NULL;
}
