/* safetensors.c — mmap reader for safetensors files. The header is untrusted input: its length,
 * every shape, dtype and offset are checked against the file before any tensor is exposed. */
#include "safetensors.h"

#include "ref/ref_quant.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mapfile.h"

#define ST_MAX_HEADER (100u << 20) /* the format's own limit on header size */

typedef struct st_file {
    char *path;
    void *map;
    size_t size;
} st_file;

struct st_archive {
    st_file *files;
    int n_files;
    st_tensor *tensors;
    int n_tensors;
};

typedef struct {
    const char *name;
    st_dtype dtype;
    size_t size;
} dtype_info;

static const dtype_info DTYPES[] = {
    {"F32", ST_F32, 4},   {"F16", ST_F16, 2},       {"BF16", ST_BF16, 2},     {"F64", ST_OTHER, 8},
    {"I64", ST_OTHER, 8}, {"I32", ST_OTHER, 4},     {"I16", ST_OTHER, 2},     {"I8", ST_OTHER, 1},
    {"U8", ST_OTHER, 1},  {"BOOL", ST_OTHER, 1},    {"U16", ST_OTHER, 2},     {"U32", ST_OTHER, 4},
    {"U64", ST_OTHER, 8}, {"F8_E4M3", ST_OTHER, 1}, {"F8_E5M2", ST_OTHER, 1},
};

size_t st_dtype_size(st_dtype d) {
    switch (d) {
    case ST_F32:
        return 4;
    case ST_F16:
    case ST_BF16:
        return 2;
    default:
        return 0;
    }
}

const char *st_dtype_name(st_dtype d) {
    switch (d) {
    case ST_F32:
        return "F32";
    case ST_F16:
        return "F16";
    case ST_BF16:
        return "BF16";
    default:
        return "other";
    }
}

void st_free_tensors(st_tensor *t, int n) {
    if (!t) return;
    for (int i = 0; i < n; i++)
        free(t[i].name);
    free(t);
}

static int cmp_by_offset(const void *a, const void *b) {
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    const char *px = x->data, *py = y->data;
    return px < py ? -1 : px > py;
}

/* Reads one tensor entry; returns 0 or -1 with err set. */
static int parse_entry(const cJSON *e, const uint8_t *data, size_t data_len, st_tensor *t,
                       char *err, size_t errlen) {
    if (!cJSON_IsObject(e)) {
        snprintf(err, errlen, "tensor \"%s\": entry is not an object", t->name);
        return -1;
    }
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs)) {
        snprintf(err, errlen,
                 "tensor \"%s\": needs dtype (string), shape and data_offsets (arrays)", t->name);
        return -1;
    }
    size_t esize = 0;
    for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++)
        if (!strcmp(dt->valuestring, DTYPES[i].name)) {
            t->dtype = DTYPES[i].dtype;
            esize = DTYPES[i].size;
        }
    if (!esize) {
        snprintf(err, errlen, "tensor \"%s\": unknown dtype \"%.16s\"", t->name, dt->valuestring);
        return -1;
    }
    snprintf(t->dtype_name, sizeof t->dtype_name, "%s", dt->valuestring);
    int nd = cJSON_GetArraySize(shape);
    if (nd > ST_MAX_DIMS) {
        snprintf(err, errlen, "tensor \"%s\": %d dimensions (at most %d)", t->name, nd,
                 ST_MAX_DIMS);
        return -1;
    }
    t->ndim = nd;
    unsigned long long elems = 1;
    for (int i = 0; i < nd; i++) {
        const cJSON *d = cJSON_GetArrayItem(shape, i);
        if (!cJSON_IsNumber(d) || d->valuedouble < 0 || d->valuedouble > 1e15 ||
            d->valuedouble != floor(d->valuedouble)) {
            snprintf(err, errlen, "tensor \"%s\": shape[%d] is not a non-negative integer", t->name,
                     i);
            return -1;
        }
        t->shape[i] = (int64_t)d->valuedouble;
        if (t->shape[i] && elems > (1ULL << 50) / (unsigned long long)t->shape[i]) {
            snprintf(err, errlen, "tensor \"%s\": shape too large", t->name);
            return -1;
        }
        elems *= (unsigned long long)t->shape[i];
    }
    if (cJSON_GetArraySize(offs) != 2) {
        snprintf(err, errlen, "tensor \"%s\": data_offsets must have two entries", t->name);
        return -1;
    }
    double b = cJSON_GetArrayItem(offs, 0)->valuedouble,
           en = cJSON_GetArrayItem(offs, 1)->valuedouble;
    if (!cJSON_IsNumber(cJSON_GetArrayItem(offs, 0)) ||
        !cJSON_IsNumber(cJSON_GetArrayItem(offs, 1)) || b < 0 || en < b || en > 1e18 ||
        b != floor(b) || en != floor(en)) {
        snprintf(err, errlen, "tensor \"%s\": data_offsets are not a valid [begin, end] pair",
                 t->name);
        return -1;
    }
    if (en > (double)data_len) {
        snprintf(err, errlen,
                 "tensor \"%s\": data_offsets [%.0f, %.0f] run past the data section (%zu bytes)",
                 t->name, b, en, data_len);
        return -1;
    }
    t->nbytes = (size_t)(en - b);
    if ((unsigned long long)t->nbytes != elems * esize) {
        snprintf(err, errlen,
                 "tensor \"%s\": shape x dtype size = %llu bytes but data_offsets span %zu bytes",
                 t->name, elems * esize, t->nbytes);
        return -1;
    }
    t->data = data + (size_t)b;
    return 0;
}

int st_parse_header(const uint8_t *buf, size_t len, st_tensor **out, int *n_out, char *err,
                    size_t errlen) {
    *out = NULL;
    *n_out = 0;
    if (len < 8) {
        snprintf(err, errlen, "file is %zu bytes: too short for a safetensors header", len);
        return -1;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | buf[i];
    if (hlen > len - 8) {
        snprintf(err, errlen,
                 "header length %llu runs past the end of the file (%zu bytes): "
                 "truncated or not a safetensors file",
                 (unsigned long long)hlen, len);
        return -1;
    }
    if (hlen > ST_MAX_HEADER || hlen < 2) {
        snprintf(err, errlen, "header length %llu is not plausible", (unsigned long long)hlen);
        return -1;
    }
    cJSON *root = cJSON_ParseWithLength((const char *)buf + 8, (size_t)hlen);
    if (!root || !cJSON_IsObject(root)) {
        snprintf(err, errlen, "header is not a JSON object");
        cJSON_Delete(root);
        return -1;
    }
    const uint8_t *data = buf + 8 + hlen;
    size_t data_len = len - 8 - (size_t)hlen;
    int cap = cJSON_GetArraySize(root), n = 0, rc = -1;
    st_tensor *t = calloc((size_t)cap + 1, sizeof *t);
    const st_tensor **sorted = calloc((size_t)cap + 1, sizeof *sorted);
    if (!t || !sorted) {
        snprintf(err, errlen, "out of memory reading header");
        goto out;
    }
    for (const cJSON *e = root->child; e; e = e->next) {
        if (!e->string) continue;
        if (!strcmp(e->string, "__metadata__")) continue;
        for (int j = 0; j < n; j++)
            if (!strcmp(t[j].name, e->string)) {
                snprintf(err, errlen, "tensor \"%.200s\" appears twice in the header", e->string);
                goto out;
            }
        t[n].name = strdup(e->string);
        if (!t[n].name) goto out;
        n++;
        if (parse_entry(e, data, data_len, &t[n - 1], err, errlen)) goto out;
    }
    for (int i = 0; i < n; i++)
        sorted[i] = &t[i];
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_by_offset);
    for (int i = 1; i < n; i++) {
        const uint8_t *prev_end = (const uint8_t *)sorted[i - 1]->data + sorted[i - 1]->nbytes;
        if ((const uint8_t *)sorted[i]->data < prev_end && sorted[i]->nbytes) {
            snprintf(err, errlen, "tensors \"%.100s\" and \"%.100s\" overlap in the data section",
                     sorted[i - 1]->name, sorted[i]->name);
            goto out;
        }
    }
    rc = 0;
out:
    cJSON_Delete(root);
    free(sorted);
    if (rc)
        st_free_tensors(t, n);
    else {
        *out = t;
        *n_out = n;
    }
    return rc;
}

static int map_file(const char *path, st_file *f, char *err, size_t errlen) {
    void *map;
    if (map_readonly(path, &map, &f->size, err, errlen)) return -1;
    f->map = map;
    f->path = strdup(path);
    return 0;
}

/* Maps one file and appends its tensors to the archive. */
static int add_file(st_archive *a, const char *path, char *err, size_t errlen) {
    st_file *files = realloc(a->files, sizeof *files * (size_t)(a->n_files + 1));
    if (!files) return -1;
    a->files = files;
    st_file *f = &a->files[a->n_files];
    if (map_file(path, f, err, errlen)) return -1;
    a->n_files++;
    st_tensor *t;
    int n;
    char sub[400];
    if (st_parse_header(f->map, f->size, &t, &n, sub, sizeof sub)) {
        snprintf(err, errlen, "%s: %s", path, sub);
        return -1;
    }
    st_tensor *all = realloc(a->tensors, sizeof *all * (size_t)(a->n_tensors + n + 1));
    if (!all) {
        st_free_tensors(t, n);
        return -1;
    }
    a->tensors = all;
    for (int i = 0; i < n; i++) {
        if (st_find(a, t[i].name)) {
            snprintf(err, errlen, "tensor \"%.200s\" is stored in more than one file", t[i].name);
            for (int j = i; j < n; j++)
                free(t[j].name);
            free(t);
            return -1;
        }
        t[i].file_index = a->n_files - 1;
        a->tensors[a->n_tensors++] = t[i];
    }
    free(t);
    return 0;
}

int st_open_file(const char *path, st_archive **out, char *err, size_t errlen) {
    st_archive *a = calloc(1, sizeof *a);
    if (!a) return -1;
    if (add_file(a, path, err, errlen)) {
        st_close(a);
        return -1;
    }
    *out = a;
    return 0;
}

char *st_read_small_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = (n >= 0 && n < (64 << 20)) ? malloc((size_t)n + 1) : NULL;
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) {
        b[n] = 0;
        *len = (size_t)n;
    }
    return b;
}

/* Sharded checkpoint: open each file named in weight_map once, then check every listed tensor
 * is really in the file the index says. */
static int open_index(st_archive *a, const char *dir, const char *index_path, char *err,
                      size_t errlen) {
    size_t len;
    char *text = st_read_small_file(index_path, &len);
    if (!text) {
        snprintf(err, errlen, "cannot read %s", index_path);
        return -1;
    }
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(map)) {
        snprintf(err, errlen, "%s: no \"weight_map\" object", index_path);
        cJSON_Delete(root);
        return -1;
    }
    int rc = 0;
    char path[4200];
    for (const cJSON *e = map->child; e && !rc; e = e->next) {
        if (!cJSON_IsString(e) || strchr(e->valuestring, '/') || e->valuestring[0] == '.') {
            snprintf(err, errlen, "%s: weight_map entry for \"%.100s\" is not a file name",
                     index_path, e->string ? e->string : "?");
            rc = -1;
            break;
        }
        snprintf(path, sizeof path, "%s/%s", dir, e->valuestring);
        int seen = 0;
        for (int i = 0; i < a->n_files; i++)
            seen |= !strcmp(a->files[i].path, path);
        if (!seen) rc = add_file(a, path, err, errlen);
    }
    for (const cJSON *e = map->child; e && !rc; e = e->next) {
        const st_tensor *t = st_find(a, e->string);
        snprintf(path, sizeof path, "%s/%s", dir, e->valuestring);
        if (!t || strcmp(a->files[t->file_index].path, path) != 0) {
            snprintf(err, errlen, "%s lists tensor \"%.200s\" in %.200s, but it is not there",
                     index_path, e->string, e->valuestring);
            rc = -1;
        }
    }
    cJSON_Delete(root);
    return rc;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int st_open_dir(const char *dir, st_archive **out, char *err, size_t errlen) {
    st_archive *a = calloc(1, sizeof *a);
    if (!a) return -1;
    char path[4200];
    struct stat st;
    int rc;
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (stat(path, &st) == 0) {
        rc = open_index(a, dir, path, err, errlen);
    } else {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (stat(path, &st) == 0) {
            rc = add_file(a, path, err, errlen);
        } else {
            /* No index: every *.safetensors in the folder, in name order. */
            DIR *d = opendir(dir);
            if (!d) {
                snprintf(err, errlen, "cannot open model folder %s: %s", dir, strerror(errno));
                st_close(a);
                return -1;
            }
            char *names[1024];
            int n = 0;
            for (struct dirent *de; (de = readdir(d)) && n < 1024;)
                if (ends_with(de->d_name, ".safetensors")) names[n++] = strdup(de->d_name);
            closedir(d);
            qsort(names, (size_t)n, sizeof *names, cmp_str);
            rc = 0;
            if (!n) {
                snprintf(err, errlen, "%s has no model.safetensors, no index and no *.safetensors",
                         dir);
                rc = -1;
            }
            for (int i = 0; i < n; i++) {
                snprintf(path, sizeof path, "%s/%s", dir, names[i]);
                if (!rc) rc = add_file(a, path, err, errlen);
                free(names[i]);
            }
        }
    }
    if (rc) {
        st_close(a);
        return -1;
    }
    *out = a;
    return 0;
}

void st_close(st_archive *a) {
    if (!a) return;
    for (int i = 0; i < a->n_files; i++) {
        map_release(a->files[i].map, a->files[i].size);
        free(a->files[i].path);
    }
    free(a->files);
    st_free_tensors(a->tensors, a->n_tensors);
    free(a);
}

int st_count(const st_archive *a) {
    return a->n_tensors;
}
const st_tensor *st_at(const st_archive *a, int i) {
    return &a->tensors[i];
}
int st_file_count(const st_archive *a) {
    return a->n_files;
}

const st_tensor *st_find(const st_archive *a, const char *name) {
    for (int i = 0; i < a->n_tensors; i++)
        if (!strcmp(a->tensors[i].name, name)) return &a->tensors[i];
    return NULL;
}

float st_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t st_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                          /* nearest even */
    return (uint16_t)(u >> 16);
}

float st_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0) {
        if (man == 0)
            u = sign;
        else { /* subnormal: renormalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t st_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000;
    int32_t exp = (int32_t)((u >> 23) & 0xff) - 127 + 15;
    uint32_t man = u & 0x7fffff;
    if (((u >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        man |= 0x800000;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = sign | ((uint32_t)exp << 10) | (man >> 13), rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
    return (uint16_t)half;
}

size_t st_elems(const st_tensor *t) {
    if (t->dtype == ST_QUANT) {
        const ref_qtype_info *q = ref_qtype_get(t->qtype);
        return q ? t->nbytes / (size_t)q->block_bytes * (size_t)q->block : 0;
    }
    const size_t es = st_dtype_size(t->dtype);
    return es ? t->nbytes / es : 0;
}

size_t st_row_bytes(const st_tensor *t) {
    const uint64_t cols = (uint64_t)t->shape[t->ndim - 1];
    if (t->dtype == ST_QUANT) return (size_t)ref_qtype_bytes(t->qtype, cols);
    return (size_t)cols * st_dtype_size(t->dtype);
}

st_tensor st_rows(const st_tensor *t, int64_t row0, int64_t nrows) {
    st_tensor v = *t;
    const size_t rb = st_row_bytes(t);
    v.data = (const char *)t->data + (size_t)row0 * rb;
    v.nbytes = (size_t)nrows * rb;
    v.shape[0] = nrows;
    return v;
}

void st_to_f32(const st_tensor *t, float *out) {
    size_t n = st_elems(t);
    const uint8_t *p = t->data;
    switch (t->dtype) {
    case ST_QUANT:
        ref_dequantize(t->qtype, p, out, (int64_t)n);
        break;
    case ST_F32:
        memcpy(out, p, t->nbytes);
        break;
    case ST_BF16:
        for (size_t i = 0; i < n; i++)
            out[i] = st_bf16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        break;
    case ST_F16:
        for (size_t i = 0; i < n; i++)
            out[i] = st_f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        break;
    default:
        break;
    }
}
