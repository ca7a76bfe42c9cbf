# Per-kernel benchmarks (CUDA only): each checks the production kernel against its C reference,
# then times it with CUDA events (warm-up, median). Run from the build tree on a GPU machine.
if(QE_CUDA)
  foreach(b bench_attention bench_memops bench_gemm_skinny bench_gemm_fused bench_qgemm)
    add_executable(${b} ${CMAKE_CURRENT_SOURCE_DIR}/${b}.c)
    target_include_directories(${b} PRIVATE ${CMAKE_SOURCE_DIR})
    target_link_libraries(${b} PRIVATE qe_kernels qe_kernels_ref qe_weights CUDA::cudart_static m)
    set_target_properties(${b} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/benchmarks)
  endforeach()
endif()
