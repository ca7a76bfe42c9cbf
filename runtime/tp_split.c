/* tp_split.c — see tp_split.h. */
#include "tp_split.h"

#include <stdio.h>
#include <string.h>

int tp_check(const qe_config *c, int n, char *err, size_t errlen) {
    if (n >= 1 && c->num_heads % n == 0 && c->num_kv_heads % n == 0 && c->intermediate_size >= n)
        return 0;
    char valid[128] = "";
    size_t at = 0;
    for (int k = 1; k <= c->num_kv_heads && at < sizeof valid - 8; k++)
        if (c->num_heads % k == 0 && c->num_kv_heads % k == 0)
            at += (size_t)snprintf(valid + at, sizeof valid - at, "%s%d", at ? ", " : "", k);
    snprintf(err, errlen,
             "tensor parallel %d cannot split this model: it must divide both the %d query heads "
             "and the %d kv heads (valid: %s)",
             n, c->num_heads, c->num_kv_heads, valid);
    return -1;
}

tp_shard tp_shard_of(const qe_config *c, int n, int r) {
    tp_shard s;
    memset(&s, 0, sizeof s);
    s.rank = r, s.n = n;
    s.q_heads = c->num_heads / n, s.q_head0 = r * s.q_heads;
    s.kv_heads = c->num_kv_heads / n, s.kv_head0 = r * s.kv_heads;
    /* the intermediate in near-equal runs: the first F % n ranks take one column more */
    const int F = c->intermediate_size, base = F / n, extra = F % n;
    s.f_len = base + (r < extra);
    s.f0 = r * base + (r < extra ? r : extra);
    return s;
}
