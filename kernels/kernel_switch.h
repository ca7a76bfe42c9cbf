/* kernel_switch.h — one kernel choice, read from an environment variable or set by a select call:
 * QE_ATTN (attention.cu), QE_GEMM (gemm.cu), QE_PDL (pdl.cu). The variable holds a choice's name
 * or its number; unset or empty means choice 0, the production one; anything else is said once on
 * stderr and means 0 too, so a typo never stops a server. A test or benchmark overrides the
 * variable with kernel_switch_select (-1 returns to it).
 *
 * Plain C with static inline functions, so the CUDA files, the emulator's build of them and the C
 * tests share it. The state is two plain ints, not a C++ guarded static: the emulator's
 * instrumented build has no atomics runtime. The variable is read at the first use, before any
 * stream work, from one thread. */
#ifndef QE_KERNEL_SWITCH_H
#define QE_KERNEL_SWITCH_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *env;          /* the variable's name */
    const char *const *names; /* one per choice, the index is its number */
    int count;
    int selected; /* kernel_switch_select's choice; -1: the variable's */
    int from_env; /* the variable's, once read; -1: not yet */
} kernel_switch;

/* A switch over a static array of names: KERNEL_SWITCH("QE_ATTN", NAMES). */
#define KERNEL_SWITCH(env, names)                                                                  \
    { (env), (names), (int)(sizeof(names) / sizeof((names)[0])), -1, -1 }

/* The variable's choice: a name, or a one-digit number below count. */
static inline int kernel_switch_parse(const kernel_switch *s, const char *e) {
    if (!e || !*e) return 0;
    for (int v = 0; v < s->count; v++)
        if (!strcmp(e, s->names[v]) || (e[0] == '0' + v && !e[1])) return v;
    fprintf(stderr, "qembed: %s=%s is none of", s->env, e);
    for (int v = 0; v < s->count; v++)
        fprintf(stderr, "%s %s", v ? "," : "", s->names[v]);
    fprintf(stderr, " (or 0-%d); using %s\n", s->count - 1, s->names[0]);
    return 0;
}

static inline int kernel_switch_value(kernel_switch *s) {
    if (s->from_env < 0) s->from_env = kernel_switch_parse(s, getenv(s->env));
    return s->selected >= 0 ? s->selected : s->from_env;
}

/* 0, or -1 for a choice that does not exist (the switch is then unchanged). */
static inline int kernel_switch_select(kernel_switch *s, int v) {
    if (v < -1 || v >= s->count) return -1;
    s->selected = v;
    return 0;
}

/* The choice's name, or NULL for one that does not exist. */
static inline const char *kernel_switch_name(const kernel_switch *s, int v) {
    return v >= 0 && v < s->count ? s->names[v] : NULL;
}

#endif
