/* emu_tsan_hooks.cc — the shared-memory race check of plain loads and stores in kernel code. The
 * emulated kernels are compiled with GCC's ThreadSanitizer instrumentation but linked WITHOUT its
 * runtime: every load and store then calls one of the __tsan_* entry points below, which hand the
 * accesses to the window (static __shared__ arrays) to the emulator's race check and ignore the
 * rest. (The ASan build compiles the kernels without it: the two instrumentations exclude each
 * other; accesses made by the PTX instructions are checked in both builds.) */
#include "emu.h"

#define QE_EMU_HOOKS(n)                                                                            \
    void __tsan_read##n(void *p) {                                                                 \
        emu::shared_access(p, n, false, __builtin_return_address(0));                              \
    }                                                                                              \
    void __tsan_write##n(void *p) {                                                                \
        emu::shared_access(p, n, true, __builtin_return_address(0));                               \
    }                                                                                              \
    void __tsan_unaligned_read##n(void *p) {                                                       \
        emu::shared_access(p, n, false, __builtin_return_address(0));                              \
    }                                                                                              \
    void __tsan_unaligned_write##n(void *p) {                                                      \
        emu::shared_access(p, n, true, __builtin_return_address(0));                               \
    }

extern "C" {
QE_EMU_HOOKS(1)
QE_EMU_HOOKS(2)
QE_EMU_HOOKS(4)
QE_EMU_HOOKS(8)
QE_EMU_HOOKS(16)
/* the signatures GCC declares for its instrumentation */
void __tsan_read_range(void *p, long n) {
    emu::shared_access(p, (size_t)n, false, __builtin_return_address(0));
}
void __tsan_write_range(void *p, long n) {
    emu::shared_access(p, (size_t)n, true, __builtin_return_address(0));
}
void __tsan_init(void) {}
void __tsan_func_entry(void *caller) {
    (void)caller;
}
void __tsan_func_exit(void *unused) {
    (void)unused;
}
void __tsan_vptr_read(void *p) {
    (void)p;
}
void __tsan_vptr_update(void *p, void *v) {
    (void)p, (void)v;
}
}
