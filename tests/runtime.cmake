# Pieces of the CPU backend tested on their own: the tiled fp32 attention against the
# double-precision reference and against its own full-attention rows (paged, bottom-right).
qe_add_test(test_cpu_attention SOURCES test_cpu_attention.c LIBS qembed)
# The step former on its own: budgets, pages and fairness on hand-made and random workloads.
qe_add_test(test_scheduler SOURCES test_scheduler.c LIBS qembed)
# Tensor parallelism on the CPU backend: N in-process ranks against one, and the goldens.
qe_add_test(test_tp SOURCES test_tp.c LIBS qe_tools TIMEOUT 900)
