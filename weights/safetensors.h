/* safetensors.h — validated, mmap-based reader for Hugging Face safetensors files, single or
 * sharded through model.safetensors.index.json. Every offset is bound-checked at open. */
#ifndef QE_WEIGHTS_SAFETENSORS_H
#define QE_WEIGHTS_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>

/* ST_QUANT: a GGUF tensor kept in its ggml blocks (qtype says which); never from a safetensors
 * file. ST_OTHER: a dtype the engine does not compute with. */
typedef enum { ST_F32 = 0, ST_F16, ST_BF16, ST_QUANT, ST_OTHER } st_dtype;

#define ST_MAX_DIMS 8

typedef struct st_tensor {
    char *name; /* key as stored in the file */
    st_dtype dtype;
    char dtype_name[8]; /* as written in the header, e.g. "BF16" */
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint32_t qtype;   /* ST_QUANT: the ggml type id of its blocks (kernels/ref/ref_quant.h) */
    const void *data; /* into the mapping */
    size_t nbytes;    /* the bytes at data; a view of some rows has fewer than the tensor */
    int file_index;   /* which shard */
} st_tensor;

typedef struct st_archive st_archive;

/* Parses one safetensors header held in memory (buf: the whole file). Used by the loader and the
 * fuzz target. On success tensors and n are malloc'd (names too); free with st_free_tensors. */
int st_parse_header(const uint8_t *buf, size_t len, st_tensor **tensors, int *n, char *err,
                    size_t errlen);
void st_free_tensors(st_tensor *tensors, int n);

/* Opens every safetensors file of a model folder: model.safetensors.index.json if present,
 * else model.safetensors, else every *.safetensors in the folder. */
/* A whole small file (under 64 MB: an index, a config, a tokenizer.json), NUL-terminated and
 * malloc'd, its length in *len; NULL when it is absent, unreadable or larger. */
char *st_read_small_file(const char *path, size_t *len);

int st_open_dir(const char *dir, st_archive **out, char *err, size_t errlen);
/* Opens one file. */
int st_open_file(const char *path, st_archive **out, char *err, size_t errlen);
void st_close(st_archive *a);

int st_count(const st_archive *a);
const st_tensor *st_at(const st_archive *a, int i);
const st_tensor *st_find(const st_archive *a, const char *name);
int st_file_count(const st_archive *a);

/* Bytes per element; 0 for ST_QUANT (blocks, see st_elems) and ST_OTHER. */
size_t st_dtype_size(st_dtype d);
const char *st_dtype_name(st_dtype d);

/* Element conversions (exact for widening; round-to-nearest-even for narrowing). */
float st_bf16_to_f32(uint16_t h);
uint16_t st_f32_to_bf16(float f);
float st_f16_to_f32(uint16_t h);
uint16_t st_f32_to_f16(float f);
/* Elements held in t->nbytes (for ST_QUANT: whole blocks of its qtype); 0 for ST_OTHER. */
size_t st_elems(const st_tensor *t);
/* Bytes one row of a 2-D tensor takes (shape[1] elements, whole blocks for ST_QUANT). */
size_t st_row_bytes(const st_tensor *t);
/* A view of rows [row0, row0 + nrows) of a 2-D tensor: same dtype, shape [nrows, shape[1]]. */
st_tensor st_rows(const st_tensor *t, int64_t row0, int64_t nrows);
/* Converts the st_elems(t) elements of any supported dtype to float32 (ST_QUANT: dequantized by
 * the C reference of its type, exactly the values every backend computes with). */
void st_to_f32(const st_tensor *t, float *out);

#endif
