/* fuzz_safetensors.c — libFuzzer target for the safetensors header parser: any bytes must give
 * either a clean error or tensors that lie inside the buffer and match their shapes. */
#include <stdint.h>
#include <stdlib.h>

#include "weights/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_tensor *t;
    int n;
    char err[256];
    if (st_parse_header(data, size, &t, &n, err, sizeof err) != 0) return 0;
    for (int i = 0; i < n; i++) {
        const uint8_t *p = t[i].data;
        if (p < data || p + t[i].nbytes > data + size) abort(); /* a bound the parser missed */
        if (t[i].dtype != ST_OTHER) {
            float first;
            st_tensor one = t[i];
            if (one.nbytes >= st_dtype_size(one.dtype)) {
                one.nbytes = st_dtype_size(one.dtype);
                st_to_f32(&one, &first);
            }
        }
    }
    st_free_tensors(t, n);
    return 0;
}
