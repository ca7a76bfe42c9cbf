/* random_model.c — random weights in the real shapes, written as safetensors (sharded past the
 * shard size, with model.safetensors.index.json). Linear weights are uniform with std
 * 1/sqrt(fan_in) and norm gains uniform in [0.5, 1.5] so that every block moves the output;
 * the embedding table has std 1. Each tensor's values depend only on (seed, tensor name), and
 * the generator runs in parallel over fixed-size chunks, so output is identical for a seed. */
#include "random_model.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "demo_tokenizer.h"

int random_model_preset(const char *name, qe_config *c) {
    /* vocab, hidden, inter, layers, heads, kv, max positions, tied */
    static const struct {
        const char *name;
        int v, h, f, l, qh, kvh, pos, tie;
    } P[] = {{"tiny", 151669, 64, 192, 3, 4, 2, 40960, 1},
             {"0.6b", 151669, 1024, 3072, 28, 16, 8, 32768, 1},
             {"4b", 151665, 2560, 9728, 36, 32, 8, 40960, 1},
             {"8b", 151665, 4096, 12288, 36, 32, 8, 40960, 0}};
    for (size_t i = 0; i < sizeof P / sizeof P[0]; i++) {
        if (strcmp(name, P[i].name) != 0) continue;
        memset(c, 0, sizeof *c);
        snprintf(c->model_type, sizeof c->model_type, "qwen3");
        c->vocab_size = P[i].v;
        c->hidden_size = P[i].h;
        c->intermediate_size = P[i].f;
        c->num_layers = P[i].l;
        c->num_heads = P[i].qh;
        c->num_kv_heads = P[i].kvh;
        c->head_dim = 128;
        c->max_position_embeddings = P[i].pos;
        c->rms_norm_eps = 1e-6;
        c->rope_theta = 1e6;
        c->tie_word_embeddings = P[i].tie;
        snprintf(c->torch_dtype, sizeof c->torch_dtype, "bfloat16");
        return 0;
    }
    return -1;
}

typedef enum { INIT_LINEAR, INIT_GAIN, INIT_EMBED } init_kind;

typedef struct {
    char name[128];
    int64_t d0, d1; /* d1 = 0 for vectors */
    init_kind kind;
    int shard;
    size_t offset; /* within its shard's data section */
} planned;

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t hash_name(const char *s, uint64_t seed) {
    uint64_t h = 1469598103934665603ULL ^ seed;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

enum { CHUNK = 1 << 20 }; /* elements per independently seeded chunk */

typedef struct {
    const planned *t;
    uint64_t seed;
    st_dtype dtype;
    size_t first, count; /* element range of this buffer */
    uint8_t *out;
    int part, parts;
} fill_job;

static void fill_range(const fill_job *j, size_t begin, size_t end) {
    const planned *t = j->t;
    double fan_in = t->d1 ? (double)t->d1 : 1.0;
    float lo, span;
    if (t->kind == INIT_GAIN) {
        lo = 0.5f;
        span = 1.0f;
    } else {
        float a = (float)(sqrt(3.0) / (t->kind == INIT_LINEAR ? sqrt(fan_in) : 1.0));
        lo = -a;
        span = 2 * a;
    }
    /* Keyed by the unprefixed name: both key layouts of one seed hold the same values. */
    const char *key = strncmp(t->name, "model.", 6) ? t->name : t->name + 6;
    uint64_t base = hash_name(key, j->seed);
    for (size_t c = begin / CHUNK; c * CHUNK < end; c++) {
        uint64_t s = base ^ (c * 0xD1B54A32D192ED03ULL);
        size_t e0 = c * CHUNK, i = e0 > begin ? e0 : begin,
               stop = e0 + CHUNK < end ? e0 + CHUNK : end;
        for (size_t k = e0; k < i; k++)
            splitmix(&s); /* skip to this buffer's start */
        for (; i < stop; i++) {
            float v = lo + span * (float)(splitmix(&s) >> 40) * (1.0f / 16777216.0f);
            size_t o = i - j->first;
            if (j->dtype == ST_F32)
                memcpy(j->out + 4 * o, &v, 4);
            else {
                uint16_t h = j->dtype == ST_BF16 ? st_f32_to_bf16(v) : st_f32_to_f16(v);
                memcpy(j->out + 2 * o, &h, 2);
            }
        }
    }
}

static void *fill_worker(void *arg) {
    const fill_job *j = arg;
    size_t per = (j->count + (size_t)j->parts - 1) / (size_t)j->parts;
    size_t b = j->first + per * (size_t)j->part, e = b + per;
    if (e > j->first + j->count) e = j->first + j->count;
    if (b < e) fill_range(j, b, e);
    return NULL;
}

/* Fills elements [first, first+count) of tensor t into out, on every core. */
static void fill(const planned *t, uint64_t seed, st_dtype dtype, size_t first, size_t count,
                 uint8_t *out, int threads) {
    pthread_t tid[64];
    int started[64] = {0};
    fill_job jobs[64];
    if (threads > 64) threads = 64;
    if (threads < 1) threads = 1;
    for (int p = 0; p < threads; p++)
        jobs[p] = (fill_job){t, seed, dtype, first, count, out, p, threads};
    for (int p = 1; p < threads; p++)
        started[p] = pthread_create(&tid[p], NULL, fill_worker, &jobs[p]) == 0;
    fill_worker(&jobs[0]);
    for (int p = 1; p < threads; p++) {
        if (started[p])
            pthread_join(tid[p], NULL);
        else
            fill_worker(&jobs[p]);
    }
}

static int plan(const random_model_opts *o, planned **out) {
    const qe_config *c = &o->cfg;
    const char *pre = o->prefixed || o->reranker ? "model." : "";
    int64_t h = c->hidden_size, q = (int64_t)c->num_heads * c->head_dim;
    int64_t kv = (int64_t)c->num_kv_heads * c->head_dim, f = c->intermediate_size;
    planned *t = calloc((size_t)(11 * c->num_layers + 3), sizeof *t);
    if (!t) return -1;
    int n = 0;
#define ADD(kind_, d0_, d1_, ...)                                                                  \
    do {                                                                                           \
        snprintf(t[n].name, sizeof t[n].name, __VA_ARGS__);                                        \
        t[n].d0 = d0_;                                                                             \
        t[n].d1 = d1_;                                                                             \
        t[n].kind = kind_;                                                                         \
        n++;                                                                                       \
    } while (0)
    ADD(INIT_EMBED, c->vocab_size, h, "%sembed_tokens.weight", pre);
    for (int l = 0; l < c->num_layers; l++) {
        ADD(INIT_GAIN, h, 0, "%slayers.%d.input_layernorm.weight", pre, l);
        ADD(INIT_LINEAR, q, h, "%slayers.%d.self_attn.q_proj.weight", pre, l);
        ADD(INIT_LINEAR, kv, h, "%slayers.%d.self_attn.k_proj.weight", pre, l);
        ADD(INIT_LINEAR, kv, h, "%slayers.%d.self_attn.v_proj.weight", pre, l);
        ADD(INIT_GAIN, c->head_dim, 0, "%slayers.%d.self_attn.q_norm.weight", pre, l);
        ADD(INIT_GAIN, c->head_dim, 0, "%slayers.%d.self_attn.k_norm.weight", pre, l);
        ADD(INIT_LINEAR, h, q, "%slayers.%d.self_attn.o_proj.weight", pre, l);
        ADD(INIT_GAIN, h, 0, "%slayers.%d.post_attention_layernorm.weight", pre, l);
        ADD(INIT_LINEAR, f, h, "%slayers.%d.mlp.gate_proj.weight", pre, l);
        ADD(INIT_LINEAR, f, h, "%slayers.%d.mlp.up_proj.weight", pre, l);
        ADD(INIT_LINEAR, h, f, "%slayers.%d.mlp.down_proj.weight", pre, l);
    }
    ADD(INIT_GAIN, h, 0, "%snorm.weight", pre);
    if (o->reranker ? !c->tie_word_embeddings : o->prefixed)
        ADD(INIT_LINEAR, c->vocab_size, h, "lm_head.weight");
#undef ADD
    *out = t;
    return n;
}

static size_t tensor_bytes(const planned *t, st_dtype d) {
    return (size_t)t->d0 * (size_t)(t->d1 ? t->d1 : 1) * st_dtype_size(d);
}

static char *header_json(const planned *t, int n, int shard, st_dtype d) {
    size_t cap = 256 + (size_t)n * 256, len = 0;
    char *s = malloc(cap);
    len += (size_t)snprintf(s + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++) {
        if (t[i].shard != shard) continue;
        char shape[64];
        if (t[i].d1)
            snprintf(shape, sizeof shape, "%lld,%lld", (long long)t[i].d0, (long long)t[i].d1);
        else
            snprintf(shape, sizeof shape, "%lld", (long long)t[i].d0);
        len += (size_t)snprintf(
            s + len, cap - len,
            ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%s],\"data_offsets\":[%zu,%zu]}", t[i].name,
            st_dtype_name(d), shape, t[i].offset, t[i].offset + tensor_bytes(&t[i], d));
    }
    len += (size_t)snprintf(s + len, cap - len, "}");
    /* Pad with spaces so the data section starts 8-byte aligned, as the format recommends. */
    while ((len + 8) % 8)
        s[len++] = ' ';
    s[len] = 0;
    return s;
}

static void shard_name(char *out, size_t cap, int shard, int n_shards) {
    if (n_shards == 1)
        snprintf(out, cap, "model.safetensors");
    else
        snprintf(out, cap, "model-%05d-of-%05d.safetensors", shard + 1, n_shards);
}

static int write_shard(const random_model_opts *o, const planned *t, int n, int shard, int n_shards,
                       size_t *written, size_t total, char *err, size_t errlen) {
    char name[64], path[4200];
    shard_name(name, sizeof name, shard, n_shards);
    snprintf(path, sizeof path, "%s/%s", o->out_dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    char *hdr = header_json(t, n, shard, o->dtype);
    uint64_t hlen = strlen(hdr);
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)(hlen >> (8 * i));
    int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(hdr, 1, hlen, f) == hlen;
    free(hdr);
    const size_t esize = st_dtype_size(o->dtype), buf_elems = 16u << 20;
    uint8_t *buf = malloc(buf_elems * esize);
    int threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    time_t last = time(NULL);
    for (int i = 0; i < n && ok && buf; i++) {
        if (t[i].shard != shard) continue;
        size_t elems = (size_t)t[i].d0 * (size_t)(t[i].d1 ? t[i].d1 : 1);
        for (size_t first = 0; first < elems && ok; first += buf_elems) {
            size_t count = elems - first < buf_elems ? elems - first : buf_elems;
            fill(&t[i], o->seed, o->dtype, first, count, buf, threads);
            ok = fwrite(buf, esize, count, f) == count;
            *written += count * esize;
            if (!o->quiet && time(NULL) != last) {
                last = time(NULL);
                fprintf(stderr, "\rmake-random: %.2f / %.2f GB", *written / 1e9, total / 1e9);
            }
        }
    }
    free(buf);
    if (fclose(f) != 0) ok = 0;
    if (!ok) snprintf(err, errlen, "writing %s failed: %s (disk full?)", path, strerror(errno));
    return ok ? 0 : -1;
}

static int write_text(const char *dir, const char *name, const char *text, char *err,
                      size_t errlen) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    int ok = f && fputs(text, f) >= 0;
    if (f && fclose(f)) ok = 0;
    if (!ok) snprintf(err, errlen, "cannot write %s", path);
    return ok ? 0 : -1;
}

/* Whether a shard name of any count: model-00001-of-00003.safetensors. */
static int is_shard_name(const char *name) {
    unsigned a, b;
    char tail[16];
    return sscanf(name, "model-%5u-of-%5u%15s", &a, &b, tail) == 3 &&
           !strcmp(tail, ".safetensors") && strlen(name) == 32;
}

/* The folder to write into: new, or empty, or (with force) one whose earlier weights and
 * task files go first, because the loader would still read them (an index left by a sharded run
 * wins over a new model.safetensors; a sentence-transformers file makes a reranker an embedding
 * model). A folder of other files without force is refused: it may be a real model. */
static int prepare_folder(const random_model_opts *o, char *err, size_t errlen) {
    if (mkdir(o->out_dir, 0755) == 0) return 0;
    if (errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", o->out_dir, strerror(errno));
        return -1;
    }
    DIR *d = opendir(o->out_dir);
    if (!d) {
        snprintf(err, errlen, "%s exists and is not a folder one can write into: %s", o->out_dir,
                 strerror(errno));
        return -1;
    }
    int rc = 0;
    for (struct dirent *de; rc == 0 && (de = readdir(d));) {
        const char *n = de->d_name;
        if (!strcmp(n, ".") || !strcmp(n, "..")) continue;
        if (!o->force) {
            snprintf(err, errlen,
                     "%s already holds files (%s, ...); give an empty or new folder, or --force to "
                     "write over it",
                     o->out_dir, n);
            rc = -1;
        } else if (is_shard_name(n) || !strcmp(n, "model.safetensors") ||
                   !strcmp(n, "model.safetensors.index.json") ||
                   !strcmp(n, "config_sentence_transformers.json")) {
            char path[4200];
            snprintf(path, sizeof path, "%s/%s", o->out_dir, n);
            if (remove(path) != 0) {
                snprintf(err, errlen, "cannot remove %s: %s", path, strerror(errno));
                rc = -1;
            }
        }
    }
    closedir(d);
    return rc;
}

int random_model_write(const random_model_opts *o, char *err, size_t errlen) {
    if (o->dtype == ST_OTHER) {
        snprintf(err, errlen, "dtype must be bf16, f16 or f32");
        return -1;
    }
    if (prepare_folder(o, err, errlen)) return -1;
    planned *t;
    int n = plan(o, &t);
    if (n < 0) return -1;
    size_t limit = o->shard_bytes ? o->shard_bytes : (size_t)4 << 30, used = 0, total = 0;
    int shard = 0;
    for (int i = 0; i < n; i++) {
        size_t b = tensor_bytes(&t[i], o->dtype);
        if (used && used + b > limit) {
            shard++;
            used = 0;
        }
        t[i].shard = shard;
        t[i].offset = used;
        used += b;
        total += b;
    }
    int n_shards = shard + 1, rc = 0;
    qe_config cfg = o->cfg;
    snprintf(cfg.torch_dtype, sizeof cfg.torch_dtype, "%s",
             o->dtype == ST_BF16  ? "bfloat16"
             : o->dtype == ST_F16 ? "float16"
                                  : "float32");
    char *cj = cfg_to_json(&cfg);
    rc = write_text(o->out_dir, "config.json", cj, err, errlen);
    free(cj);
    size_t written = 0;
    for (int s = 0; s < n_shards && !rc; s++)
        rc = write_shard(o, t, n, s, n_shards, &written, total, err, errlen);
    if (!rc && n_shards > 1) {
        size_t cap = 256 + (size_t)n * 200, len = 0;
        char *idx = malloc(cap), name[64];
        len += (size_t)snprintf(idx, cap,
                                "{\n  \"metadata\": {\"total_size\": %zu},\n"
                                "  \"weight_map\": {\n",
                                total);
        for (int i = 0; i < n; i++) {
            shard_name(name, sizeof name, t[i].shard, n_shards);
            len += (size_t)snprintf(idx + len, cap - len, "    \"%s\": \"%s\"%s\n", t[i].name, name,
                                    i + 1 < n ? "," : "");
        }
        snprintf(idx + len, cap - len, "  }\n}\n");
        rc = write_text(o->out_dir, "model.safetensors.index.json", idx, err, errlen);
        free(idx);
    }
    if (!rc)
        rc = demo_tokenizer_write(o->out_dir, o->tokenizer_merges ? o->tokenizer_merges : 300,
                                  o->reranker, err, errlen);
    if (!o->quiet && written)
        fprintf(stderr, "\rmake-random: %.2f GB in %d file(s)      \n", written / 1e9, n_shards);
    free(t);
    return rc;
}
