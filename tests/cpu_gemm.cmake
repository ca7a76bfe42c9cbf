# The CPU backend's GEMM (runtime/cpu_gemm.c: BLIS, or the reference tiles without it) against
# ref_matmul: odd shapes, accumulate, ldy > n, 1-3 pool threads; rows bitwise independent of
# their batch.
qe_add_test(test_cpu_gemm SOURCES test_cpu_gemm.c LIBS qembed)
