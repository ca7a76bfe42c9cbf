/* parallel.h — a tiny fixed pool of worker threads for the CPU backend: run n independent tasks
 * and wait for all of them. The calling thread takes tasks too. */
#ifndef QE_RUNTIME_PARALLEL_H
#define QE_RUNTIME_PARALLEL_H

typedef struct qe_pool qe_pool;
typedef void (*qe_task_fn)(void *ctx, int task);

/* threads counts the caller: threads = 1 runs everything inline. NULL on failure. */
qe_pool *pool_create(int threads);
void pool_run(qe_pool *p, int n_tasks, qe_task_fn fn, void *ctx);
int pool_threads(const qe_pool *p);
void pool_destroy(qe_pool *p);

#endif
