/* pdl.cu — the switch for programmatic dependent launch (issue 15, item 4): whether the kernels
 * launched by QE_LAUNCH_PDL (common.cuh) let the stream's next kernel start before they end.
 * Off by default until a GPU has timed it: QE_PDL=1 turns it on (read at the first launch),
 * qe_pdl_select overrides that. */
#include <stdlib.h>

#include "common.cuh"

static int selected = -1; /* qe_pdl_select's choice; -1: QE_PDL's */
static int from_env = -1; /* a plain int, not a guarded static: the emulator's instrumented
                             build has no atomics runtime */

extern "C" int qe_pdl_enabled(void) {
    if (from_env < 0) {
        const char *e = getenv("QE_PDL");
        from_env = e && e[0] == '1' && !e[1];
    }
    return selected >= 0 ? selected : from_env;
}

extern "C" int qe_pdl_select(int on) {
    if (on < -1 || on > 1) return -1;
    selected = on;
    return 0;
}
