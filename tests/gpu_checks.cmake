# The dry run of tools/gpu-checks.sh (no GPU): the binaries of this build, tiny random models, the
# CPU backend; every stage under its timeout, one summary line per stage, a stage killed at its
# timeout recorded as such with the later stages still run, failed tests rerun under the sanitizer
# stand-in, and $OUT within the device's 8-file limit, all checked by the script itself. Needs no
# shared fixtures; ~25 s on 2 cores.
add_test(NAME gpu_checks_dry COMMAND bash ${CMAKE_SOURCE_DIR}/tools/gpu-checks.sh)
set_tests_properties(gpu_checks_dry PROPERTIES TIMEOUT 300
  ENVIRONMENT "QE_GPU_CHECKS_DRY=1;QE_GPU_CHECKS_BUILD=${CMAKE_BINARY_DIR};OUT=${CMAKE_BINARY_DIR}/test-scratch/gpu-checks-dry")
