/* test_util.h — helpers shared by the Criterion suites: fixture paths, skipping, comparisons. */
#ifndef QE_TEST_UTIL_H
#define QE_TEST_UTIL_H
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FIXTURES QE_SHARED_DIR "/fixtures"
#define TINY_MODEL FIXTURES "/tiny-qwen3-embed"

static inline int tu_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* Skips the current test with a one-line message when a shared fixture is absent. */
#define SKIP_UNLESS_EXISTS(path)                                                                   \
    do {                                                                                           \
        if (!tu_exists(path)) {                                                                    \
            cr_skip_test("fixture %s absent (needs ../shared beside the project)", path);          \
        }                                                                                          \
    } while (0)

static inline double tu_cosine(const float *a, const double *b, int n) {
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += b[i] * b[i];
    }
    return ab / (sqrt(aa) * sqrt(bb) + 1e-300);
}

static inline double tu_cosine_ff(const float *a, const float *b, int n) {
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return ab / (sqrt(aa) * sqrt(bb) + 1e-300);
}

/* Reads a whole file; NULL when missing. */
static inline char *tu_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        if (len) *len = (size_t)n;
    }
    return buf;
}

/* A fresh scratch directory under the build tree (unique per process). */
static inline void tu_scratch_dir(char *out, size_t cap, const char *tag) {
    snprintf(out, cap, "%s/test-scratch/%s-%d", QE_BINARY_DIR, tag, (int)getpid());
    char cmd[2400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", out, out);
    if (system(cmd) != 0) cr_assert_fail("cannot make %s", out);
}

#endif
