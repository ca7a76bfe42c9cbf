/* emu_context.cc — see emu_context.h. */
#include "emu_context.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#else
#define EMU_ASAN 0
#endif

namespace emu {

static const size_t STACK_BYTES = EMU_ASAN ? (size_t)1 << 20 : (size_t)256 << 10;

#if !EMU_UCONTEXT
/* Saves the callee-saved registers on the current stack, stores the stack pointer in *save,
 * switches to load and restores them from there. (MXCSR and the x87 control word are not
 * switched: every fiber runs with the thread's.) A new fiber's stack is prepared so that the
 * restore "returns" into qe_emu_fiber_start, which calls r13(r12). */
extern "C" void qe_emu_switch(void **save, void *load);
extern "C" void qe_emu_fiber_start(void);
asm(R"(
    .text
    .globl qe_emu_switch
    .type qe_emu_switch, @function
qe_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size qe_emu_switch, .-qe_emu_switch
    .globl qe_emu_fiber_start
    .type qe_emu_fiber_start, @function
qe_emu_fiber_start:
    movq %r12, %rdi
    callq *%r13
    ud2
    .size qe_emu_fiber_start, .-qe_emu_fiber_start
)");

static void raw_switch(context *from, context *to) {
    qe_emu_switch(&from->sp, to->sp);
}
static void prepare_stack(context *c, void (*entry)(void *), void *arg) {
    /* 7 slots below a 16-byte aligned top, so that the stack is 16-byte aligned after the ret */
    const uintptr_t top = ((uintptr_t)c->stack_lo + c->stack_size) & ~(uintptr_t)15;
    uint64_t *sp = (uint64_t *)(top - 72);
    sp[0] = 0, sp[1] = 0;                             /* r15, r14 */
    sp[2] = (uint64_t)(uintptr_t)entry;               /* r13: the function */
    sp[3] = (uint64_t)(uintptr_t)arg;                 /* r12: its argument */
    sp[4] = 0, sp[5] = 0;                             /* rbx, rbp (0 ends backtraces) */
    sp[6] = (uint64_t)(uintptr_t)&qe_emu_fiber_start; /* "return" address */
    c->sp = sp;
}
#else
/* Portable fallback: ucontext (slower: swapcontext also switches the signal mask). */
static void raw_switch(context *from, context *to) {
    swapcontext(&from->uc, &to->uc);
}
static void (*ucontext_entry_fn)(void *);
static void ucontext_entry(unsigned hi, unsigned lo) {
    ucontext_entry_fn((void *)(((uintptr_t)hi << 32) | lo));
}
static void prepare_stack(context *c, void (*entry)(void *), void *arg) {
    ucontext_entry_fn = entry;
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = (void *)c->stack_lo;
    c->uc.uc_stack.ss_size = c->stack_size;
    c->uc.uc_link = nullptr;
    makecontext(&c->uc, (void (*)())ucontext_entry, 2, (unsigned)((uintptr_t)arg >> 32),
                (unsigned)(uintptr_t)arg);
}
#endif

void context_new_stack(context *c) {
    const long page = sysconf(_SC_PAGESIZE);
    char *map = (char *)mmap(nullptr, STACK_BYTES + page, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (map == MAP_FAILED) {
        fprintf(stderr, "qe_emu: cannot map a %zu-byte fiber stack\n", STACK_BYTES);
        abort();
    }
    mprotect(map, page, PROT_NONE); /* a stack overflow faults instead of corrupting a neighbour */
    c->stack_lo = map + page;
    c->stack_size = STACK_BYTES;
}

void context_prepare(context *c, void (*entry)(void *), void *arg) {
    c->asan_fake_stack = nullptr;
#if EMU_ASAN /* the redzones of frames a fiber left alive (at its last switch) stay poisoned */
    if (c->low_water) {
        const char *lo = c->low_water - 4096, *top = (const char *)c->stack_lo + c->stack_size;
        if (lo < (const char *)c->stack_lo) lo = (const char *)c->stack_lo;
        ASAN_UNPOISON_MEMORY_REGION(lo, (size_t)(top - lo));
        c->low_water = nullptr;
    }
#endif
    prepare_stack(c, entry, arg);
}

void context_transfer(context *from, context *to, bool dying) {
#if EMU_ASAN
    char here;
    if (!from->low_water || &here < from->low_water) from->low_water = &here;
    __sanitizer_start_switch_fiber(dying ? nullptr : &from->asan_fake_stack, to->stack_lo,
                                   to->stack_size);
#else
    (void)dying;
#endif
    raw_switch(from, to);
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(from->asan_fake_stack, nullptr, nullptr);
#endif
}

void context_started() {
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr); /* first entry: nothing saved */
#endif
}

void context_of_thread(context *c) {
#if EMU_ASAN
    pthread_attr_t a;
    void *lo = nullptr;
    size_t size = 0;
    if (pthread_getattr_np(pthread_self(), &a) == 0) {
        pthread_attr_getstack(&a, &lo, &size);
        pthread_attr_destroy(&a);
    }
    c->stack_lo = lo, c->stack_size = size; /* for the sanitizer's fiber-switch annotations */
#else
    (void)c;
#endif
}

} // namespace emu
