# Loader (config, safetensors, binding) and the CPU reference engine.
qe_add_test(test_weights SOURCES test_weights.c LIBS qe_tools)
qe_add_test(test_engine_cpu SOURCES test_engine_cpu.c LIBS qe_tools)
qe_add_test(test_cli SOURCES test_cli.c LIBS qe_tools)
target_compile_definitions(test_cli PRIVATE QE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
# Qwen3-Reranker: scores against the double-precision forward, the prompt on the real tokenizer.
qe_add_test(test_rerank SOURCES test_rerank.c LIBS qe_tools)
# GGUF: the reader on hand-built good and hostile files, metadata to qe_config, the fuzz corpus.
qe_add_test(test_gguf SOURCES test_gguf.c fuzz/fuzz_gguf.c LIBS qe_weights)
target_compile_definitions(test_gguf PRIVATE QE_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
# The ggml block formats: reference dequantizers on hand-made blocks with known values.
qe_add_test(test_quant_ref SOURCES test_quant_ref.c LIBS qe_kernels_ref)
# qembed quantize (HF folder -> GGUF) and GGUF models in the engine (CPU backend).
qe_add_test(test_quantize SOURCES test_quantize.c LIBS qe_tools)
# Optional: llama.cpp (node-llama-cpp@3.21.1) loads our q8_0 and q4_k_m files and embeds them like
# qembed does; skipped (77) without node or the package (tests/llamacpp/run_crosscheck.sh).
add_test(NAME llamacpp_gguf COMMAND bash ${CMAKE_SOURCE_DIR}/tests/llamacpp/run_crosscheck.sh
         $<TARGET_FILE:qembed_cli> ${CMAKE_BINARY_DIR}/test-scratch/llamacpp-gguf
         # the emulated CUDA backend on llama.cpp's own files, where the emulator is built
         $<$<TARGET_EXISTS:test_cuda_emu>:$<TARGET_FILE:test_cuda_emu>>)
set_tests_properties(llamacpp_gguf PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)
