/* fuzz_gguf.c — libFuzzer target for the GGUF reader: any bytes must give either a clean error or
 * a file whose tensors lie inside the buffer with their type x shape bytes, whose metadata reads
 * back through every typed lookup, and whose first blocks dequantize. test_gguf also runs it on
 * the seeds in corpus_gguf/, so the corpus is replayed (under ASan there) without clang. */
#include <stdint.h>
#include <stdlib.h>

#include "kernels/ref/ref_quant.h"
#include "weights/gguf.h"
#include "weights/gguf_config.h"

static volatile unsigned sink; /* reads the fuzzer must not optimise away */

/* Every lookup that matches the entry's type (the others are refusals, also exercised). */
static void read_entry(const gguf_file *g, int i) {
    char err[256];
    const char *key = gguf_kv_key(g, i);
    gguf_vtype et;
    uint64_t n;
    const gguf_vtype t = gguf_kv_type(g, i, &et, &n);
    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    float f32;
    int b;
    gguf_span s, *items = NULL;
    int32_t *ids = NULL;
    gguf_get_u32(g, key, &u32, err, sizeof err);
    gguf_get_i32(g, key, &i32, err, sizeof err);
    gguf_get_u64(g, key, &u64, err, sizeof err);
    gguf_get_f32(g, key, &f32, err, sizeof err);
    gguf_get_bool(g, key, &b, err, sizeof err);
    if (gguf_get_string(g, key, &s, err, sizeof err) == 0 && s.len)
        sink += (unsigned char)s.ptr[s.len - 1]; /* the last byte is inside the buffer */
    if (gguf_get_string_array(g, key, &items, &u64, err, sizeof err) == 0) {
        if (t != GGUF_ARRAY || et != GGUF_STRING || u64 != n) abort();
        for (uint64_t k = 0; k < u64; k++)
            if (items[k].len) sink += (unsigned char)items[k].ptr[items[k].len - 1];
    }
    free(items);
    if (gguf_get_i32_array(g, key, &ids, &u64, err, sizeof err) == 0 && u64 != n) abort();
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf_file *g;
    char err[512];
    if (gguf_parse(data, size, &g, err, sizeof err) != 0) return 0;
    float block[256];
    for (int i = 0; i < gguf_count(g); i++) {
        const gguf_tensor *t = gguf_at(g, i);
        const uint8_t *p = t->data;
        if (p < data || p + t->nbytes > data + size) abort(); /* a bound the parser missed */
        if (gguf_find(g, t->name) != t) abort();
        const ref_qtype_info *q = ref_qtype_get(t->type);
        if (!q || t->nbytes != ref_qtype_bytes(t->type, (uint64_t)t->n_elements)) abort();
        if (q->can_dequantize) {
            const int64_t n = q->block > 1 ? q->block : (t->n_elements < 256 ? t->n_elements : 256);
            if (ref_dequantize(t->type, t->data, block, n) != 0) abort();
        }
    }
    for (int i = 0; i < gguf_kv_count(g); i++)
        read_entry(g, i);
    qe_config cfg;
    gguf_read_config(g, &cfg, err, sizeof err);
    gguf_close(g);
    return 0;
}
