# bench_cpu_gemm: the CPU backend's GEMM on one 0.6B layer's products, checked, then timed.
add_executable(bench_cpu_gemm ${CMAKE_CURRENT_SOURCE_DIR}/bench_cpu_gemm.c)
target_include_directories(bench_cpu_gemm PRIVATE ${CMAKE_SOURCE_DIR})
target_link_libraries(bench_cpu_gemm PRIVATE qembed)
set_target_properties(bench_cpu_gemm PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/benchmarks)
