/* gguf_meta.c — typed lookups of GGUF metadata. The reader has already bounded every value
 * inside the file; here each lookup checks the key exists and has the asked type, and names the
 * key (and both types) when not. Values are copied out with memcpy: they sit at any alignment. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_internal.h"

static const gguf_kv *need(const gguf_file *g, const char *key, char *err, size_t errlen) {
    const gguf_kv *kv = gguf_find_kv(g, key);
    if (!kv) snprintf(err, errlen, "metadata key \"%s\" is missing", key);
    return kv;
}

static int wrong_type(const gguf_kv *kv, const char *want, char *err, size_t errlen) {
    if (kv->type == GGUF_ARRAY)
        snprintf(err, errlen, "metadata key \"%s\" is an array of %s, expected %s", kv->key,
                 gguf_vtype_name(kv->elem_type), want);
    else
        snprintf(err, errlen, "metadata key \"%s\" is a %s, expected %s", kv->key,
                 gguf_vtype_name(kv->type), want);
    return -1;
}

/* Any integer value as (negative?, magnitude-or-value): u64 and i64 together cover every type. */
static int int_value(const gguf_kv *kv, int *neg, uint64_t *u, int64_t *s) {
    const uint8_t *p = kv->value;
    *neg = 0;
    switch (kv->type) {
    case GGUF_U8:
        *u = p[0];
        break;
    case GGUF_U16: {
        uint16_t v;
        memcpy(&v, p, 2);
        *u = v;
        break;
    }
    case GGUF_U32: {
        uint32_t v;
        memcpy(&v, p, 4);
        *u = v;
        break;
    }
    case GGUF_U64:
        memcpy(u, p, 8);
        break;
    case GGUF_I8:
        *s = (int8_t)p[0];
        break;
    case GGUF_I16: {
        int16_t v;
        memcpy(&v, p, 2);
        *s = v;
        break;
    }
    case GGUF_I32: {
        int32_t v;
        memcpy(&v, p, 4);
        *s = v;
        break;
    }
    case GGUF_I64:
        memcpy(s, p, 8);
        break;
    default:
        return -1;
    }
    const int is_signed =
        kv->type == GGUF_I8 || kv->type == GGUF_I16 || kv->type == GGUF_I32 || kv->type == GGUF_I64;
    if (is_signed) {
        *neg = *s < 0;
        if (!*neg) *u = (uint64_t)*s;
    } else {
        *s = *u > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)*u;
    }
    return 0;
}

/* An integer in [lo, hi] (lo <= 0 <= hi). */
static int get_int(const gguf_file *g, const char *key, int64_t lo, uint64_t hi, const char *tname,
                   int64_t *s_out, uint64_t *u_out, char *err, size_t errlen) {
    const gguf_kv *kv = need(g, key, err, errlen);
    if (!kv) return -1;
    int neg;
    uint64_t u = 0;
    int64_t s = 0;
    if (int_value(kv, &neg, &u, &s)) return wrong_type(kv, tname, err, errlen);
    if ((neg && s < lo) || (!neg && u > hi)) {
        if (neg)
            snprintf(err, errlen, "metadata key \"%s\" = %lld does not fit in %s", key,
                     (long long)s, tname);
        else
            snprintf(err, errlen, "metadata key \"%s\" = %llu does not fit in %s", key,
                     (unsigned long long)u, tname);
        return -1;
    }
    if (s_out) *s_out = s;
    if (u_out) *u_out = u;
    return 0;
}

int gguf_get_u32(const gguf_file *g, const char *key, uint32_t *out, char *err, size_t errlen) {
    uint64_t u;
    if (get_int(g, key, 0, UINT32_MAX, "u32", NULL, &u, err, errlen)) return -1;
    *out = (uint32_t)u;
    return 0;
}

int gguf_get_i32(const gguf_file *g, const char *key, int32_t *out, char *err, size_t errlen) {
    int64_t s;
    if (get_int(g, key, INT32_MIN, INT32_MAX, "i32", &s, NULL, err, errlen)) return -1;
    *out = (int32_t)s;
    return 0;
}

int gguf_get_u64(const gguf_file *g, const char *key, uint64_t *out, char *err, size_t errlen) {
    return get_int(g, key, 0, UINT64_MAX, "u64", NULL, out, err, errlen);
}

int gguf_get_f32(const gguf_file *g, const char *key, float *out, char *err, size_t errlen) {
    const gguf_kv *kv = need(g, key, err, errlen);
    if (!kv) return -1;
    if (kv->type == GGUF_F32) {
        memcpy(out, kv->value, 4);
    } else if (kv->type == GGUF_F64) {
        double d;
        memcpy(&d, kv->value, 8);
        *out = (float)d;
    } else {
        return wrong_type(kv, "f32", err, errlen);
    }
    return 0;
}

int gguf_get_bool(const gguf_file *g, const char *key, int *out, char *err, size_t errlen) {
    const gguf_kv *kv = need(g, key, err, errlen);
    if (!kv) return -1;
    if (kv->type != GGUF_BOOL) return wrong_type(kv, "bool", err, errlen);
    *out = kv->value[0] != 0;
    return 0;
}

/* A string value at p (its u64 length, then the bytes; both bounded at parse). */
static const uint8_t *span_at(const uint8_t *p, gguf_span *s) {
    uint64_t n;
    memcpy(&n, p, 8);
    s->ptr = (const char *)p + 8;
    s->len = (size_t)n;
    return p + 8 + n;
}

int gguf_get_string(const gguf_file *g, const char *key, gguf_span *out, char *err, size_t errlen) {
    const gguf_kv *kv = need(g, key, err, errlen);
    if (!kv) return -1;
    if (kv->type != GGUF_STRING) return wrong_type(kv, "string", err, errlen);
    span_at(kv->value, out);
    return 0;
}

static const gguf_kv *need_array(const gguf_file *g, const char *key, uint32_t elem,
                                 const char *want, char *err, size_t errlen) {
    const gguf_kv *kv = need(g, key, err, errlen);
    if (kv && (kv->type != GGUF_ARRAY || kv->elem_type != elem)) {
        wrong_type(kv, want, err, errlen);
        return NULL;
    }
    return kv;
}

int gguf_get_string_array(const gguf_file *g, const char *key, gguf_span **items, uint64_t *n,
                          char *err, size_t errlen) {
    *items = NULL;
    *n = 0;
    const gguf_kv *kv = need_array(g, key, GGUF_STRING, "an array of string", err, errlen);
    if (!kv) return -1;
    gguf_span *s = malloc(sizeof *s * (size_t)(kv->n ? kv->n : 1));
    if (!s) {
        snprintf(err, errlen, "metadata key \"%s\": out of memory for %llu strings", key,
                 (unsigned long long)kv->n);
        return -1;
    }
    const uint8_t *p = kv->value;
    for (uint64_t i = 0; i < kv->n; i++)
        p = span_at(p, &s[i]);
    *items = s;
    *n = kv->n;
    return 0;
}

int gguf_get_i32_array(const gguf_file *g, const char *key, int32_t **items, uint64_t *n, char *err,
                       size_t errlen) {
    *items = NULL;
    *n = 0;
    const gguf_kv *kv = need_array(g, key, GGUF_I32, "an array of i32", err, errlen);
    if (!kv) return -1;
    int32_t *v = malloc(sizeof *v * (size_t)(kv->n ? kv->n : 1));
    if (!v) {
        snprintf(err, errlen, "metadata key \"%s\": out of memory for %llu values", key,
                 (unsigned long long)kv->n);
        return -1;
    }
    memcpy(v, kv->value, sizeof *v * (size_t)kv->n);
    *items = v;
    *n = kv->n;
    return 0;
}
