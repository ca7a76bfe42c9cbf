# bench_tokenizer: tokenizer throughput on the shared corpus (one thread and all threads).
add_executable(bench_tokenizer ${CMAKE_CURRENT_SOURCE_DIR}/bench_tokenizer.c)
target_link_libraries(bench_tokenizer PRIVATE qe_tokenizer PkgConfig::CJSON Threads::Threads)
target_compile_definitions(bench_tokenizer PRIVATE QE_SHARED_DIR="${QE_SHARED_DIR}")
