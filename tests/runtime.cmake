# Pieces of the CPU backend tested on their own: the tiled fp32 attention against the
# double-precision reference and against its own full-attention rows (paged, bottom-right).
qe_add_test(test_cpu_attention SOURCES test_cpu_attention.c LIBS qembed)
