# bench_embed_ids: qembed's half of the side-by-side run against llama.cpp
# (benchmarks/llamacpp/README.md): times qe_embed_ids on a fixed JSONL of id lists.
add_executable(bench_embed_ids ${CMAKE_CURRENT_SOURCE_DIR}/llamacpp/bench_embed_ids.c)
target_include_directories(bench_embed_ids PRIVATE ${CMAKE_SOURCE_DIR})
target_link_libraries(bench_embed_ids PRIVATE qembed PkgConfig::CJSON)
set_target_properties(bench_embed_ids PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/benchmarks)
