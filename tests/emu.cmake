# The kernel emulator (tests/emu/README.md): the CUDA kernels of kernels/*.cu compiled unchanged
# for the host and run on CPU fibers, so CI tests every kernel without a GPU. It needs the CUDA
# toolkit's headers (cuda_runtime_api.h, cublasLt.h), not a device.
if(QE_CUDA)
  set(QE_EMU_DIR ${CMAKE_CURRENT_SOURCE_DIR}/emu)
  if(QE_SANITIZE)
    set(QE_EMU_SAN -fsanitize=address,undefined -fno-omit-frame-pointer
        -fno-sanitize-recover=undefined)
  else()
    set(QE_EMU_SAN)
  endif()

  # The emulator itself (never race-instrumented: it reads shared memory for whole warps).
  add_library(qe_emu_core OBJECT ${QE_EMU_DIR}/emu_context.cc ${QE_EMU_DIR}/emu_core.cc
              ${QE_EMU_DIR}/emu_race.cc ${QE_EMU_DIR}/emu_report.cc ${QE_EMU_DIR}/emu_ptx.cc
              ${QE_EMU_DIR}/emu_hopper.cc ${QE_EMU_DIR}/emu_dynamic_smem.cc
              ${QE_EMU_DIR}/emu_tsan_hooks.cc ${QE_EMU_DIR}/cublaslt_emu.c)
  target_include_directories(qe_emu_core PRIVATE ${QE_EMU_DIR} ${CUDAToolkit_INCLUDE_DIRS})
  target_compile_options(qe_emu_core PRIVATE -g -O3 -Wall -Wextra -Werror ${QE_EMU_SAN})
  set_target_properties(qe_emu_core PROPERTIES CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON)

  # Every kernels/*.cu as host C++: one generated translation unit that includes it.
  file(GLOB QE_EMU_CU CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/kernels/*.cu)
  set(QE_EMU_TUS)
  foreach(cu IN LISTS QE_EMU_CU)
    get_filename_component(base ${cu} NAME)
    set(tu ${CMAKE_CURRENT_BINARY_DIR}/emu/${base}.cc)
    file(CONFIGURE OUTPUT ${tu} CONTENT "#include \"${cu}\"\n")
    list(APPEND QE_EMU_TUS ${tu})
  endforeach()
  # -g: error reports name source lines (addr2line). Outside the ASan build, GCC's
  # ThreadSanitizer instrumentation (without its runtime) feeds every load and store to the
  # shared-memory race check (emu_tsan_hooks.cc).
  if(QE_SANITIZE)
    set(QE_EMU_KERNEL_CHECK ${QE_EMU_SAN})
  else()
    set(QE_EMU_KERNEL_CHECK -fsanitize=thread --param=tsan-instrument-func-entry-exit=0)
  endif()
  function(qe_emu_kernel_flags target)
    target_compile_definitions(${target} PRIVATE QE_EMU=1)
    target_include_directories(${target} PRIVATE ${CMAKE_SOURCE_DIR}/kernels ${QE_EMU_DIR}
                               ${CUDAToolkit_INCLUDE_DIRS})
    # no sibling calls: the emulator names a site by its caller's return address; -Wno-psabi:
    # GCC notes the (old) ABI change for a 64-byte aligned argument at every kernel taking a
    # CUtensorMap
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-g -O2 -Wall -Wextra
                           -Werror -Wno-unknown-pragmas -Wno-psabi -fno-optimize-sibling-calls
                           ${QE_EMU_KERNEL_CHECK}>)
    set_target_properties(${target} PROPERTIES CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON
                          LINKER_LANGUAGE CXX)
  endfunction()
  add_library(qe_kernels_emu OBJECT ${QE_EMU_TUS})
  qe_emu_kernel_flags(qe_kernels_emu)

  # The emulator's own tests: small kernels with hand-computed answers and planted hangs/races.
  qe_add_test(test_emu SOURCES test_emu.cc test_emu_hopper.cc hostsim_runtime.c LIBS qe_emu_core)
  qe_emu_kernel_flags(test_emu)

  # The kernel suite on the emulator: tests/test_kernels.c as it runs on a GPU, against the
  # stand-in runtime (device memory is host memory, poisoned).
  qe_add_test(test_kernels_emu TIMEOUT 900 SOURCES test_kernels.c hostsim_runtime.c
              LIBS qe_kernels_emu qe_emu_core qe_kernels_ref qe_weights)
  target_compile_definitions(test_kernels_emu PRIVATE QE_EMU_TEST=1)
  target_include_directories(test_kernels_emu PRIVATE ${QE_EMU_DIR} ${CUDAToolkit_INCLUDE_DIRS})
  set_target_properties(test_kernels_emu PROPERTIES LINKER_LANGUAGE CXX)

  # The CUDA backend end to end (runtime/backend_cuda.c, cuda_graph.c) on the emulated kernels,
  # the cuBLASLt stand-in and the stand-in runtime: vs the CPU backend and the goldens; and
  # `qembed bench` on it (one engine for several workloads, chunks, graph and GEMM lines).
  # With NCCL, the NCCL stand-in too (hostsim_nccl.c): tensor parallelism on the fake devices.
  set(QE_EMU_NCCL)
  if(QE_NCCL_FOUND)
    set(QE_EMU_NCCL hostsim_nccl.c)
  endif()
  foreach(t test_cuda_emu test_bench_emu)
    qe_add_test(${t} TIMEOUT 1500 SOURCES ${t}.c hostsim_runtime.c ${QE_EMU_NCCL} srv_harness.c
                LIBS qe_kernels_emu qe_emu_core qe_tools PkgConfig::CJSON PkgConfig::CURL)
    target_compile_definitions(${t} PRIVATE QE_EMU_TEST=1)
    target_include_directories(${t} PRIVATE ${QE_EMU_DIR})
    set_target_properties(${t} PROPERTIES LINKER_LANGUAGE CXX)
  endforeach()
endif()

# The mutation list of tools/mutate-kernels.py still applies to the kernels (each planted bug's
# original text occurs once), so the script cannot silently rot. Running the mutants takes ~15
# minutes and is not part of the suite (results: docs/kernels.md).
find_program(QE_PYTHON3 python3)
if(QE_PYTHON3)
  add_test(NAME mutants_apply COMMAND ${QE_PYTHON3} ${CMAKE_SOURCE_DIR}/tools/mutate-kernels.py
           --check)
endif()
