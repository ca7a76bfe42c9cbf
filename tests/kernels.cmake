# The CUDA kernels against their C references, the whole CUDA forward against the CPU backend and
# the goldens (GPU suites: skip cleanly without a device), and the CPU-side bench FLOP counter.
if(QE_CUDA)
  qe_add_test(test_kernels GPU SOURCES test_kernels.c
              LIBS qe_kernels qe_kernels_ref qe_weights CUDA::cudart_static)
  qe_add_test(test_cuda_engine GPU TIMEOUT 1200 SOURCES test_cuda_engine.c
              LIBS qe_tools PkgConfig::CJSON CUDA::cudart_static)
endif()
qe_add_test(test_kernels_bench SOURCES test_kernels_bench.c LIBS qe_tools)
# The same kernel suite and the CUDA backend end to end without a GPU, on the CPU kernel
# emulator: tests/emu.cmake.
# The kernels also build for older GPUs than the default sm_90a (CMAKE_CUDA_ARCHITECTURES=80 or
# 86): tools/check-kernel-archs.sh, nvcc only, once (not again in the sanitizer tree).
if(QE_CUDA AND NOT QE_SANITIZE)
  add_test(NAME kernels_other_archs
           COMMAND bash ${CMAKE_SOURCE_DIR}/tools/check-kernel-archs.sh ${CMAKE_CUDA_COMPILER} 80 86)
  set_tests_properties(kernels_other_archs PROPERTIES TIMEOUT 600)
endif()
