/* emu_race.cc — the shared-memory race check: per byte of the window (static __shared__ arrays),
 * the last writer and the readers since, with their barrier epochs. An access by another thread
 * in the same epoch, one of the two a write, is a race: reported with both threads, the byte,
 * both source lines and the last barrier, and the launch stops. */
#include <stdio.h>
#include <string.h>

#include <map>
#include <vector>

#include "emu_internal.h"

namespace emu {

static uint32_t epoch = 1;          /* barrier epochs, over every block of every launch */
static const void *last_barrier_pc; /* of the running block: "since" in reports */

size_t cvta_shared(const void *p) {
    if (!in_window(p, 1))
        fail(__builtin_return_address(0), "__cvta_generic_to_shared(%p): not a __shared__ address",
             p);
    return (size_t)((const char *)p - window_base());
}

/* Per byte of the window: a stamp of its last writer and one of its readers since, each the
 * barrier epoch (low 20 bits) and the thread (11 bits; MANY_READERS: more than one thread read
 * it). Two threads touching a byte in one epoch, one of them writing, is a race. The stamps are
 * 32-bit so the checks below vectorise; the shadow is cleared when the epoch field wraps. The
 * code address of each access is kept as an index into a table of the sites seen. */
static const uint32_t EPOCH_BITS = 20, TID_MASK = 0x7FF, MANY_READERS = 0x7FF;
static struct {
    std::vector<uint32_t> w, r;
    std::vector<uint16_t> w_site, r_site;
    void resize(size_t n) {
        w.assign(n, 0), r.assign(n, 0), w_site.assign(n, 0), r_site.assign(n, 0);
    }
} shadow;
static std::vector<const void *> sites(1, nullptr); /* site 0: unknown */
static std::map<const void *, uint16_t> site_index;

/* The stamp of the current epoch with no thread: stamp & ~TID_MASK compares against it. */
static uint32_t epoch_stamp() {
    return (epoch & ((1u << EPOCH_BITS) - 1)) << 11;
}
static void next_epoch() {
    epoch++;
    if ((epoch & ((1u << EPOCH_BITS) - 1)) == 0) { /* wrapped: old stamps would look current */
        epoch++;
        shadow.resize(shadow.w.size());
    }
}

void race_block_starts() {
    if (shadow.w.size() < window_size()) shadow.resize(window_size());
    next_epoch(); /* nothing of the previous block orders against this one */
    last_barrier_pc = nullptr;
}
void race_barrier_passed(const void *pc) {
    next_epoch(); /* accesses on either side are now ordered */
    last_barrier_pc = pc;
}

static uint16_t site_of(const void *pc) {
    static struct {
        const void *pc;
        uint16_t idx;
    } cache[256]; /* direct-mapped: a kernel has few sites, looked up on every access */
    auto &slot = cache[((uintptr_t)pc >> 2) & 255];
    if (slot.pc == pc) return slot.idx;
    auto it = site_index.find(pc);
    uint16_t idx = 0;
    if (it != site_index.end()) {
        idx = it->second;
    } else if (sites.size() < 0xFFFF) {
        idx = (uint16_t)sites.size();
        sites.push_back(pc);
        site_index[pc] = idx;
    }
    slot.pc = pc, slot.idx = idx;
    return idx;
}

static void race(const void *p, size_t i, const char *kind, int tid, int other, const void *pc,
                 uint16_t other_site) {
    const char *since = last_barrier_pc ? where(last_barrier_pc) : "none yet";
    const size_t off = (size_t)((const char *)p - window_base()) + i;
    char who[48];
    if (other == (int)MANY_READERS)
        snprintf(who, sizeof who, "several threads");
    else
        snprintf(who, sizeof who, "thread %d", other);
    fail(nullptr,
         "shared-memory race (%s) on shared byte +0x%zx: thread %d%s at %s, and %s at %s, "
         "with no __syncthreads between (the last one: %s)",
         kind, off, tid, cur && cur->linear != tid ? " (in its warp's collective)" : "", where(pc),
         who, where(sites[other_site]), since);
}

/* Whether another thread wrote (write: or read) a byte of [off, off + n) in this epoch. Sixteen
 * bytes at a time with GCC vector types: the common case is a 16-byte access without conflict. */
typedef uint32_t v4u __attribute__((vector_size(16)));
static bool conflicts(size_t off, size_t n, uint32_t me, bool write) {
    const uint32_t *w = &shadow.w[off], *r = &shadow.r[off];
    const v4u now = {epoch_stamp(), epoch_stamp(), epoch_stamp(), epoch_stamp()};
    const v4u mine = {me, me, me, me}, tmask = {TID_MASK, TID_MASK, TID_MASK, TID_MASK};
    const v4u readers = write ? ~(v4u){0, 0, 0, 0} : (v4u){0, 0, 0, 0};
    v4u any = {0, 0, 0, 0};
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        v4u wv, rv;
        memcpy(&wv, w + i, 16), memcpy(&rv, r + i, 16);
        any |= ((wv & ~tmask) == now) & ((wv & tmask) != mine);
        any |= ((rv & ~tmask) == now) & ((rv & tmask) != mine) & readers;
    }
    uint32_t tail = 0;
    for (; i < n; i++)
        tail |= ((w[i] & ~TID_MASK) == now[0] && (w[i] & TID_MASK) != me) ||
                (write && (r[i] & ~TID_MASK) == now[0] && (r[i] & TID_MASK) != me);
    return (any[0] | any[1] | any[2] | any[3] | tail) != 0;
}

/* The first byte of [off, off + n) in conflict (conflicts() said there is one). */
static size_t first_conflict(size_t off, size_t n, uint32_t me, bool write) {
    const uint32_t now = epoch_stamp();
    for (size_t i = off; i < off + n; i++)
        if (((shadow.w[i] & ~TID_MASK) == now && (shadow.w[i] & TID_MASK) != me) ||
            (write && (shadow.r[i] & ~TID_MASK) == now && (shadow.r[i] & TID_MASK) != me))
            return i - off;
    return 0;
}

void race_check(const void *p, size_t n, bool write, int tid, const void *pc) {
    if (!in_window(p, n)) return;
    const size_t off = (size_t)((const char *)p - window_base());
    const uint32_t me = (uint32_t)tid & TID_MASK, now = epoch_stamp();
    if (conflicts(off, n, me, write)) {
        const size_t bad = first_conflict(off, n, me, write);
        const size_t i = off + bad;
        const uint32_t w = shadow.w[i], r = shadow.r[i];
        const bool by_writer = (w & ~TID_MASK) == now && (w & TID_MASK) != me;
        race(p, bad,
             by_writer ? (write ? "write after write" : "read after write") : "write after read",
             tid, (int)((by_writer ? w : r) & TID_MASK), pc,
             by_writer ? shadow.w_site[i] : shadow.r_site[i]);
    }
    const uint16_t site = site_of(pc);
    if (write) {
        uint32_t *w = &shadow.w[off];
        uint16_t *ws = &shadow.w_site[off];
        for (size_t i = 0; i < n; i++)
            w[i] = now | me, ws[i] = site;
        return;
    }
    uint32_t *r = &shadow.r[off];
    uint16_t *rs = &shadow.r_site[off];
    for (size_t i = 0; i < n; i++) { /* the epoch's first reader, the same one again, or many */
        const uint32_t fresh = (r[i] & ~TID_MASK) != now;
        const uint32_t same = (r[i] & TID_MASK) == me;
        r[i] = now | (fresh | same ? me : MANY_READERS);
        rs[i] = fresh ? site : rs[i];
    }
}

void race_forget(const void *p, size_t n) {
    if (!in_window(p, n)) return;
    const size_t off = (size_t)((const char *)p - window_base());
    memset(&shadow.w[off], 0, n * sizeof(uint32_t));
    memset(&shadow.r[off], 0, n * sizeof(uint32_t));
}

void shared_access(const void *p, size_t n, bool write, const void *pc) {
    if (!cur) return;
    if (cur->dep_pending) check_global_access(p, write, "a plain access", pc);
    if (past_dynamic_bytes(p) || past_dynamic_bytes((const char *)p + n - 1))
        fail(pc, "%s %zu byte(s) of dynamic shared memory at offset %zu, past the launch's %zu",
             write ? "store of" : "load of", n, (size_t)((const unsigned char *)p - dynamic_region),
             dynamic_bytes);
    if (in_window(p, n)) race_check(p, n, write, cur->linear, pc);
}

} // namespace emu
