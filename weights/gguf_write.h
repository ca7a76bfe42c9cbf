/* gguf_write.h — writes GGUF v3 files (llama.cpp's single-file format) the way ggml lays them out:
 * header, metadata, tensor infos, padding to the alignment, then each tensor's data in the order
 * it was declared, each padded to the alignment. Metadata and tensor infos are collected in memory
 * first (so offsets are known), then tensor data is streamed one tensor at a time, so a writer
 * never holds more than one tensor. The reader (gguf.h) accepts exactly what this writes. */
#ifndef QE_WEIGHTS_GGUF_WRITE_H
#define QE_WEIGHTS_GGUF_WRITE_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct gguf_writer gguf_writer;

/* A writer with the default alignment (32). NULL when out of memory. */
gguf_writer *gguf_writer_new(void);
void gguf_writer_free(gguf_writer *w);

/* Metadata, in the order added. Each returns 0, or -1 when out of memory. */
int gguf_w_u32(gguf_writer *w, const char *key, uint32_t v);
int gguf_w_i32(gguf_writer *w, const char *key, int32_t v);
int gguf_w_f32(gguf_writer *w, const char *key, float v);
int gguf_w_bool(gguf_writer *w, const char *key, int v);
int gguf_w_str(gguf_writer *w, const char *key, const char *v);
/* An array of n strings; lens[i] bytes each (lens NULL: NUL-terminated). */
int gguf_w_str_array(gguf_writer *w, const char *key, const char *const *items, const size_t *lens,
                     size_t n);
int gguf_w_i32_array(gguf_writer *w, const char *key, const int32_t *v, size_t n);

/* Declares a tensor: ggml type id, 1..4 dims innermost first (GGUF order). Returns its index, or
 * -1 for a bad shape, an unknown type, a row that is not whole blocks, or no memory. */
int gguf_w_tensor(gguf_writer *w, const char *name, uint32_t type, int ndim, const int64_t *dims);
/* The bytes tensor i takes (type x shape). */
uint64_t gguf_w_tensor_bytes(const gguf_writer *w, int i);

/* Writes header, metadata and tensor infos to f. Then gguf_w_data for every tensor in declared
 * order. Each returns 0, or -1 with err saying why (a write error, data out of order). */
int gguf_w_begin(gguf_writer *w, FILE *f, char *err, size_t errlen);
int gguf_w_data(gguf_writer *w, FILE *f, int i, const void *data, char *err, size_t errlen);

#endif
