/* pdl.cu — the switch for programmatic dependent launch (issue 15, item 4): whether the kernels
 * launched by QE_LAUNCH_PDL (common.cuh) let the stream's next kernel start before they end.
 * Off by default until a GPU has timed it: QE_PDL=1 (or on) turns it on, read at the first
 * launch; qe_pdl_select overrides that. */
#include "common.cuh"
#include "kernel_switch.h"

static const char *const PDL_NAMES[] = {"off", "on"};
static kernel_switch pdl_switch = KERNEL_SWITCH("QE_PDL", PDL_NAMES);

/* On only where it can work (qe_pdl_supported): a build without sm_90 code has no griddep_wait in
 * its kernels, so an overlap would let a kernel read what the one before has not written yet. */
extern "C" int qe_pdl_enabled(void) {
    return kernel_switch_value(&pdl_switch) && qe_pdl_supported();
}

extern "C" int qe_pdl_select(int on) {
    return kernel_switch_select(&pdl_switch, on);
}
