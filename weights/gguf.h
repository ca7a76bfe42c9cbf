/* gguf.h — validated, mmap-based reader for GGUF files (llama.cpp's single-file format), versions
 * 3 and 2 (same layout), little-endian. Everything is checked at open: counts and string lengths
 * against the bytes left, metadata types, the alignment, every tensor's type, shape, size, offset
 * and overlap. Nothing is exposed from a file that fails a check. */
#ifndef QE_WEIGHTS_GGUF_H
#define QE_WEIGHTS_GGUF_H
#include <stddef.h>
#include <stdint.h>

#define GGUF_MAX_DIMS 4
#define GGUF_DEFAULT_ALIGNMENT 32

/* Metadata value types, as the file writes them. */
typedef enum {
    GGUF_U8 = 0,
    GGUF_I8 = 1,
    GGUF_U16 = 2,
    GGUF_I16 = 3,
    GGUF_U32 = 4,
    GGUF_I32 = 5,
    GGUF_F32 = 6,
    GGUF_BOOL = 7,
    GGUF_STRING = 8,
    GGUF_ARRAY = 9,
    GGUF_U64 = 10,
    GGUF_I64 = 11,
    GGUF_F64 = 12,
} gguf_vtype;

typedef struct gguf_tensor {
    char *name;
    uint32_t type;         /* ggml type id (ref_qtype in kernels/ref/ref_quant.h) */
    const char *type_name; /* "Q4_K", "F16", ... */
    int ndim;              /* 1..GGUF_MAX_DIMS */
    /* GGUF (ggml) order, innermost first: dims[0] is the length of a row, the reverse of a
     * safetensors / PyTorch shape. token_embd.weight is [hidden, vocab]. Unused dims are 1. */
    int64_t dims[GGUF_MAX_DIMS];
    int64_t n_elements;
    const void *data; /* into the mapping (or the caller's buffer for gguf_parse) */
    size_t nbytes;    /* = n_elements / block * bytes per block */
    uint64_t offset;  /* from the start of the data section, a multiple of the alignment */
} gguf_tensor;

/* A string inside the file: not NUL-terminated. */
typedef struct gguf_span {
    const char *ptr;
    size_t len;
} gguf_span;

typedef struct gguf_file gguf_file;

/* Parses a whole GGUF file held in buf (len bytes); buf must outlive the result. Used by
 * gguf_open and the fuzz target. Returns 0, or -1 with err naming what is wrong. */
int gguf_parse(const uint8_t *buf, size_t len, gguf_file **out, char *err, size_t errlen);
/* mmaps path and parses it; errors are prefixed with the path. */
int gguf_open(const char *path, gguf_file **out, char *err, size_t errlen);
void gguf_close(gguf_file *g);

uint32_t gguf_version(const gguf_file *g);
uint32_t gguf_alignment(const gguf_file *g);

/* Tensors in file order. */
int gguf_count(const gguf_file *g);
const gguf_tensor *gguf_at(const gguf_file *g, int i);
const gguf_tensor *gguf_find(const gguf_file *g, const char *name);

/* Metadata in file order, i in [0, gguf_kv_count): key and value type (for an array, GGUF_ARRAY,
 * its element type and count). */
int gguf_kv_count(const gguf_file *g);
const char *gguf_kv_key(const gguf_file *g, int i);
gguf_vtype gguf_kv_type(const gguf_file *g, int i, gguf_vtype *elem_type, uint64_t *n_elems);
int gguf_has(const gguf_file *g, const char *key);
/* The index of key in file order, or -1. */
int gguf_kv_index(const gguf_file *g, const char *key);

/* Typed lookups. Each returns 0, or -1 with err naming the key: missing, or of another type
 * (both types named), or out of range for the asked type. Integer getters take any integer type
 * whose value fits (converters differ on u32 vs i32); gguf_get_f32 takes f32 or f64. */
int gguf_get_u32(const gguf_file *g, const char *key, uint32_t *out, char *err, size_t errlen);
int gguf_get_i32(const gguf_file *g, const char *key, int32_t *out, char *err, size_t errlen);
int gguf_get_u64(const gguf_file *g, const char *key, uint64_t *out, char *err, size_t errlen);
int gguf_get_f32(const gguf_file *g, const char *key, float *out, char *err, size_t errlen);
int gguf_get_bool(const gguf_file *g, const char *key, int *out, char *err, size_t errlen);
/* The string in the mapping (not NUL-terminated). */
int gguf_get_string(const gguf_file *g, const char *key, gguf_span *out, char *err, size_t errlen);
/* An array of strings: *items is malloc'd (free it), pointing into the mapping. */
int gguf_get_string_array(const gguf_file *g, const char *key, gguf_span **items, uint64_t *n,
                          char *err, size_t errlen);
/* An array of i32: *items is a malloc'd copy (free it). */
int gguf_get_i32_array(const gguf_file *g, const char *key, int32_t **items, uint64_t *n, char *err,
                       size_t errlen);

const char *gguf_vtype_name(uint32_t t);

#endif
