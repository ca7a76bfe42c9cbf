/* emu_report.cc — the emulator's error reports: the text (kernel, block, thread, source lines
 * through addr2line), stderr, the count and the last one for qe_emu.h. */
#include <dlfcn.h>
#include <elf.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <map>
#include <string>
#include <vector>

#include "emu_internal.h"

namespace emu {

static std::string last_error;
static long error_count;

/* Through addr2line on the executable (the kernels are built with -g); the raw offset when that
 * fails. Cached per address. */
const char *where(const void *pc) {
    static std::map<const void *, std::string> cache;
    if (!pc) return "?";
    auto hit = cache.find(pc);
    if (hit != cache.end()) return hit->second.c_str();
    Dl_info info;
    std::string out;
    if (dladdr(pc, &info) && info.dli_fname) {
        const Elf64_Ehdr *eh = (const Elf64_Ehdr *)info.dli_fbase;
        const uintptr_t rel = (uintptr_t)pc - 1 - /* the call instruction, not the next one */
                              (eh && eh->e_type == ET_DYN ? (uintptr_t)info.dli_fbase : 0);
        /* the main program's name is argv[0] (Criterion's workers: "boxfort-worker"): its path
         * then comes from /proc/self/exe, read here (in the shell below it is the shell) */
        char self[1024] = "";
        const ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
        if (len > 0) self[len] = 0;
        const char *file = access(info.dli_fname, R_OK) == 0 ? info.dli_fname : self;
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "addr2line -C -f -i -e '%s' 0x%lx 2>/dev/null", file,
                 (unsigned long)rel);
        /* addr2line -f -i: (function, file:line) pairs, innermost location first; the first
         * function named is the outermost one, the i-th (i >= 1) the one holding location i */
        FILE *p = popen(cmd, "r");
        std::vector<std::string> fns, locs;
        char fn[512], loc[512];
        while (p && fgets(fn, sizeof fn, p) && fgets(loc, sizeof loc, p)) {
            fn[strcspn(fn, "\n(")] = 0, loc[strcspn(loc, "\n")] = 0;
            char *disc = strstr(loc, " (discriminator");
            if (disc) *disc = 0;
            const char *base = strrchr(loc, '/') ? strrchr(loc, '/') + 1 : loc;
            fns.push_back(fn), locs.push_back(base);
        }
        for (size_t i = 0; i < locs.size(); i++) {
            /* the emulator's own inline plumbing says nothing about the kernel */
            if (locs.size() > 1 && !strncmp(locs[i].c_str(), "cuda_emu.h", 10)) continue;
            if (!strncmp(locs[i].c_str(), "??", 2)) continue;
            const std::string name = i >= 1 ? fns[i] : locs.size() == 1 ? fns[0] : "";
            if (!out.empty()) out += " inlined in ";
            out += locs[i] + (name.empty() ? "" : " (" + name + ")");
        }
        if (p) pclose(p);
        if (out.empty()) {
            snprintf(cmd, sizeof cmd, "%s+0x%lx", info.dli_fname, (unsigned long)rel);
            out = cmd;
        }
    } else {
        char buf[64];
        snprintf(buf, sizeof buf, "pc %p", pc);
        out = buf;
    }
    return (cache[pc] = out).c_str();
}

void vreport(const void *pc, const char *fmt, va_list ap) {
    char msg[1024], head[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    const launch_cfg *launch = running_launch();
    if (launch && cur)
        snprintf(head, sizeof head, "%s block (%u,%u,%u) thread (%u,%u,%u)", launch->kernel,
                 block_idx.x, block_idx.y, block_idx.z, cur->tid.x, cur->tid.y, cur->tid.z);
    else if (launch)
        snprintf(head, sizeof head, "%s", launch->kernel);
    else
        snprintf(head, sizeof head, "launch");
    std::string text = std::string("qe_emu: ") + head + ": " + msg;
    if (pc) text += std::string(" at ") + where(pc);
    if (launch)
        text +=
            std::string(" [launched at ") + launch->file + ":" + std::to_string(launch->line) + "]";
    last_error = text;
    error_count++;
    fprintf(stderr, "%s\n", text.c_str());
}

void report(const void *pc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vreport(pc, fmt, ap);
    va_end(ap);
}

} // namespace emu

extern "C" long qe_emu_error_count(void) {
    return emu::error_count;
}
extern "C" const char *qe_emu_last_error(void) {
    return emu::last_error.c_str();
}
