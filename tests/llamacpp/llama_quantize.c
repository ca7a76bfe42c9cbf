/* llama_quantize.c — for the optional llama.cpp cross-check: quantizes a GGUF file with llama.cpp's
 * own quantizer (llama_model_quantize in the libllama node-llama-cpp ships), so qembed can be
 * checked on files llama.cpp wrote, not only on its own.
 *   llama_quantize LIBLLAMA.so IN.gguf OUT.gguf FTYPE   (FTYPE: llama_ftype, 7 = Q8_0, 15 = Q4_K_M)
 *
 * No llama.h ships with the package, so the parameters are taken from
 * llama_model_quantize_default_params() as opaque bytes and only their first two fields are set:
 * nthread and ftype, two 32-bit ints that lead the struct in every llama.cpp release. The struct
 * is returned by value; declaring the return as a larger struct is safe on x86-64 and arm64 (the
 * caller passes the buffer, the callee fills its own size of it). */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    unsigned char bytes[1024]; /* more than any release's llama_model_quantize_params */
} quantize_params;

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: llama_quantize LIBLLAMA.so IN.gguf OUT.gguf FTYPE\n");
        return 2;
    }
    void *lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "llama_quantize: %s\n", dlerror());
        return 1;
    }
    void (*backend_init)(void) = (void (*)(void))dlsym(lib, "llama_backend_init");
    quantize_params (*defaults)(void) =
        (quantize_params(*)(void))dlsym(lib, "llama_model_quantize_default_params");
    uint32_t (*quantize)(const char *, const char *, const void *) =
        (uint32_t(*)(const char *, const char *, const void *))dlsym(lib, "llama_model_quantize");
    if (!backend_init || !defaults || !quantize) {
        fprintf(stderr, "llama_quantize: %s lacks the llama_model_quantize API\n", argv[1]);
        return 1;
    }
    backend_init();
    quantize_params p = defaults();
    const int32_t lead[2] = {2, atoi(argv[4])}; /* nthread, ftype */
    memcpy(p.bytes, lead, sizeof lead);
    const uint32_t rc = quantize(argv[2], argv[3], &p);
    if (rc) fprintf(stderr, "llama_quantize: llama_model_quantize returned %u\n", rc);
    return rc ? 1 : 0;
}
