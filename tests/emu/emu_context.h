/* emu_context.h — stacks the emulator's fibers run on, and the switch between them
 * (emu_context.cc): a few instructions of x86-64 assembly, or ucontext elsewhere (and with
 * QE_EMU_UCONTEXT; 7x slower: swapcontext also switches the signal mask). Under ASan the switches
 * carry the sanitizer's fiber annotations. */
#ifndef QE_TESTS_EMU_EMU_CONTEXT_H
#define QE_TESTS_EMU_EMU_CONTEXT_H
#include <stddef.h>

#if defined(__x86_64__) && !defined(QE_EMU_UCONTEXT)
#define EMU_UCONTEXT 0
#else
#define EMU_UCONTEXT 1
#include <ucontext.h>
#endif

namespace emu {

/* A stack to run on: a fiber's, or the OS thread's own (the scheduler's). */
struct context {
#if EMU_UCONTEXT
    ucontext_t uc;
#else
    void *sp; /* saved stack pointer while switched out */
#endif
    const void *stack_lo;
    size_t stack_size;
    void *asan_fake_stack;
    const char *low_water; /* the deepest stack pointer seen at a switch (ASan: what to clear) */
};

/* Maps a fresh stack (with a guard page below it) for c. */
void context_new_stack(context *c);
/* Makes c start entry(arg) on its stack when first switched to; clears what an earlier use of
 * the stack left (ASan: the redzones of frames that never returned). */
void context_prepare(context *c, void (*entry)(void *), void *arg);
/* Leaves the current context for `to`; returns when something switches back. A dying context is
 * never resumed. */
void context_transfer(context *from, context *to, bool dying);
/* The running OS thread's own stack, as a context to switch back to. */
void context_of_thread(context *c);
/* To be called first thing on a new fiber's stack. */
void context_started();

} // namespace emu
#endif
