/* safetensors.h — validated, mmap-based reader for Hugging Face safetensors files, single or
 * sharded through model.safetensors.index.json. Every offset is bound-checked at open. */
#ifndef QE_WEIGHTS_SAFETENSORS_H
#define QE_WEIGHTS_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>

typedef enum { ST_F32 = 0, ST_F16, ST_BF16, ST_OTHER } st_dtype;

#define ST_MAX_DIMS 8

typedef struct st_tensor {
    char *name; /* key as stored in the file */
    st_dtype dtype;
    char dtype_name[8]; /* as written in the header, e.g. "BF16" */
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data; /* into the mapping */
    size_t nbytes;
    int file_index; /* which shard */
} st_tensor;

typedef struct st_archive st_archive;

/* Parses one safetensors header held in memory (buf: the whole file). Used by the loader and the
 * fuzz target. On success tensors and n are malloc'd (names too); free with st_free_tensors. */
int st_parse_header(const uint8_t *buf, size_t len, st_tensor **tensors, int *n, char *err,
                    size_t errlen);
void st_free_tensors(st_tensor *tensors, int n);

/* Opens every safetensors file of a model folder: model.safetensors.index.json if present,
 * else model.safetensors, else every *.safetensors in the folder. */
int st_open_dir(const char *dir, st_archive **out, char *err, size_t errlen);
/* Opens one file. */
int st_open_file(const char *path, st_archive **out, char *err, size_t errlen);
void st_close(st_archive *a);

int st_count(const st_archive *a);
const st_tensor *st_at(const st_archive *a, int i);
const st_tensor *st_find(const st_archive *a, const char *name);
int st_file_count(const st_archive *a);

size_t st_dtype_size(st_dtype d);
const char *st_dtype_name(st_dtype d);

/* Element conversions (exact for widening; round-to-nearest-even for narrowing). */
float st_bf16_to_f32(uint16_t h);
uint16_t st_f32_to_bf16(float f);
float st_f16_to_f32(uint16_t h);
uint16_t st_f32_to_f16(float f);
/* Converts n elements of any supported dtype to float32. */
void st_to_f32(const st_tensor *t, float *out);

#endif
