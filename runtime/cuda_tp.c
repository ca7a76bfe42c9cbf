/* cuda_tp.c — tensor parallelism on the CUDA backend (qe_options.tensor_parallel): N ranks, one
 * per device of the engine's list, each an ordinary CUDA backend state (backend_cuda.c) made from
 * its share of the model by tp_split.h, the partitioning the CPU backend runs too: the q/k/v rows
 * of its heads, o_proj's columns of them, the gate/up rows and down_proj columns of its run of the
 * intermediate. So every rank runs the plain per-layer sequence on narrower matrices, and the two
 * residual updates of a layer (o_proj, down_proj) are summed over the ranks by one NCCL
 * all-reduce each (cuda_internal.h's tp_accumulate says how). The embedding gather, the norms and
 * the pooling run on every rank; the vectors and residual rows handed back are rank 0's.
 *
 * Threads: one host thread per rank, the only one that drives its device and communicator. Rank
 * 0 runs on the caller's thread; ranks 1..N-1 on workers made at create that wait for a job.
 * (Not one thread driving every rank between ncclGroupStart/End: each layer would have to be cut
 * at its two all-reduces and interleaved over the ranks, one thread would enqueue N ranks'
 * launches one after another, and capturing a graph per rank would need every rank capturing at
 * once from that thread. With a thread per rank, each rank runs backend_cuda.c's step unchanged:
 * the two staging slots, paged chunks, the last-layer shortcut and graphs.)
 *
 * CUDA graphs: captured per rank by its own thread, the all-reduces inside (NCCL collectives are
 * capturable). Every rank sees the same steps in the same order, so all capture and replay the
 * same shapes and their collectives match; QE_CUDA_GRAPHS=0 turns them off as on the plain path.
 *
 * Cancellation: only rank 0 (the caller's thread, as qembed.h promises) polls the caller's stop
 * function, once per step; the other ranks wait for its answer before the step. Ranks that
 * disagreed about a step would wait in its all-reduce forever.
 *
 * TP = 1 normally takes the plain path; QE_CUDA_TP_NCCL=1 (engine.c) sends it through here with a
 * one-rank communicator, so a GPU check can compare the two paths' vectors and costs. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cuda_internal.h"
#include "tp_split.h"

typedef enum { JOB_FORWARD, JOB_RESIDUAL, JOB_COMM_DESTROY, JOB_QUIT } tp_job_kind;

typedef struct tp_job {
    tp_job_kind kind;
    int n_steps, dims, normalize; /* forward */
    const qe_batch *step;         /* residual: one step, its n_layers, rank 0's out */
    int n_layers;
    float *out;
} tp_job;

struct cuda_tp;
typedef struct tp_stop_ctx {
    struct cuda_tp *tp;
    int rank, step;
} tp_stop_ctx;

/* What rank r needs of one forward: its copies of the steps (stop through tp_stop; past rank 0
 * the outputs go to its scratch) and their stop contexts. Grown, never shrunk. */
typedef struct tp_rank_io {
    qe_batch *steps;
    tp_stop_ctx *stops;
    int steps_cap;
    float *scratch; /* ranks past 0: their pooled vectors / residual rows, which nothing reads */
    size_t scratch_cap;
} tp_rank_io;

typedef struct cuda_tp {
    int n;
    int *devices;      /* [n] */
    cuda_state **rank; /* [n] */
    ncclComm_t *comm;  /* [n] */
    tp_rank_io *io;    /* [n] */
    qe_status *status; /* [n] of the last job */
    char (*err)[512];  /* [n] */
    pthread_t *thread; /* [n]: 1..started-1 run */
    int started;
    pthread_mutex_t mu;
    pthread_cond_t job_cv, done_cv, stop_cv;
    unsigned long long gen; /* jobs posted */
    int pending;            /* workers still on the current job */
    tp_job job;
    /* the caller's stop per step of the current forward: -1 not yet asked, else 0 or 1 */
    const qe_batch *user_steps;
    int *decided;
    int decided_cap;
} cuda_tp;

int cuda_tp_allreduce(cuda_state *st, float *x, size_t n) {
    if (!st->tp_comm) return QE_K_OK;
    NCCL_CHECK(ncclAllReduce(x, x, n, ncclFloat32, ncclSum, st->tp_comm, st->stream));
    return QE_K_OK;
}

/* ---------------------------------------------------------------- the ranks' shares */

/* Columns [col0, col0 + n) of a quantized 2-D tensor as F32 (a column slice splits its blocks):
 * each row dequantized whole by the C reference, the slice kept. */
static int quant_cols_of(const st_tensor *t, int col0, int n, st_tensor *v, void **copy) {
    const size_t rows = (size_t)t->shape[0], cols = (size_t)t->shape[1];
    float *buf = malloc(rows * (size_t)n * sizeof(float)), *row = malloc(cols * sizeof(float));
    if (!buf || !row) {
        free(buf), free(row);
        return -1;
    }
    for (size_t r = 0; r < rows; r++) {
        const st_tensor rv = st_rows(t, (int64_t)r, 1);
        st_to_f32(&rv, row);
        memcpy(buf + r * (size_t)n, row + col0, (size_t)n * sizeof(float));
    }
    free(row);
    *v = *t;
    v->dtype = ST_F32, v->qtype = 0;
    snprintf(v->dtype_name, sizeof v->dtype_name, "F32");
    v->data = buf, v->nbytes = rows * (size_t)n * sizeof(float), v->shape[1] = n;
    *copy = buf;
    return 0;
}

/* Columns [col0, col0 + n) of a 2-D tensor, copied into *copy (which the caller frees). */
static int cols_of(const st_tensor *t, int col0, int n, st_tensor *v, void **copy) {
    if (t->dtype == ST_QUANT) return quant_cols_of(t, col0, n, v, copy);
    const size_t es = st_dtype_size(t->dtype), rows = (size_t)t->shape[0];
    const size_t cols = (size_t)t->shape[1];
    char *buf = malloc(rows * (size_t)n * es);
    if (!buf) return -1;
    for (size_t r = 0; r < rows; r++)
        memcpy(buf + r * (size_t)n * es, (const char *)t->data + (r * cols + (size_t)col0) * es,
               (size_t)n * es);
    *v = *t;
    v->data = buf, v->nbytes = rows * (size_t)n * es, v->shape[1] = n;
    *copy = buf;
    return 0;
}

/* A rank's model: m with the rank's widths in its config and its slices as the layers' matrices
 * (st_rows views of whole rows, which keep a quantized tensor's blocks whole, or copies for the
 * column slices). views holds 7 tensors a layer and copies 2; the caller frees both once the rank's
 * state has uploaded them. */
enum { SLICES = 7, COPIES = 2 };
static int rank_model(const qe_model *m, const tp_shard *sh, qe_model *out, qe_layer_tensors *lt,
                      st_tensor *views, void **copies) {
    const qe_config *c = &m->cfg;
    const int hd = c->head_dim;
    *out = *m;
    out->cfg.num_heads = sh->q_heads, out->cfg.num_kv_heads = sh->kv_heads;
    out->cfg.intermediate_size = sh->f_len;
    out->layers = lt;
    for (int l = 0; l < c->num_layers; l++) {
        const qe_layer_tensors *L = &m->layers[l];
        st_tensor *v = views + (size_t)l * SLICES;
        void **cp = copies + (size_t)l * COPIES;
        lt[l] = *L;
        v[0] = st_rows(L->wq, sh->q_head0 * hd, sh->q_heads * hd);
        v[1] = st_rows(L->wk, sh->kv_head0 * hd, sh->kv_heads * hd);
        v[2] = st_rows(L->wv, sh->kv_head0 * hd, sh->kv_heads * hd);
        v[3] = st_rows(L->w_gate, sh->f0, sh->f_len);
        v[4] = st_rows(L->w_up, sh->f0, sh->f_len);
        if (cols_of(L->wo, sh->q_head0 * hd, sh->q_heads * hd, &v[5], &cp[0]) ||
            cols_of(L->w_down, sh->f0, sh->f_len, &v[6], &cp[1]))
            return -1;
        lt[l].wq = &v[0], lt[l].wk = &v[1], lt[l].wv = &v[2];
        lt[l].w_gate = &v[3], lt[l].w_up = &v[4], lt[l].wo = &v[5], lt[l].w_down = &v[6];
    }
    return 0;
}

/* The tensors the split reads must be 2-D matrices of a dtype backend_cuda.c uploads (a GGUF
 * file's quantized ones included: rows split whole, column slices as F32). */
static int splittable(const qe_model *m) {
    for (int l = 0; l < m->cfg.num_layers; l++) {
        const qe_layer_tensors *L = &m->layers[l];
        const st_tensor *all[] = {L->wq, L->wk, L->wv, L->wo, L->w_gate, L->w_up, L->w_down};
        for (int i = 0; i < 7; i++)
            if (!all[i] || all[i]->ndim != 2 || !all[i]->data ||
                (all[i]->dtype != ST_BF16 && all[i]->dtype != ST_F16 && all[i]->dtype != ST_F32 &&
                 all[i]->dtype != ST_QUANT))
                return 0;
    }
    return 1;
}

/* Rank r's ALiBi slopes are heads [q_head0, q_head0 + q_heads) of the whole model's, not the
 * slopes of a model with q_heads heads, which its create uploaded. */
static qe_status fix_alibi(cuda_state *st, const qe_config *c, const tp_shard *sh, char *err,
                           size_t errlen) {
    if (!st->alibi_slopes) return QE_OK;
    float *all = malloc(sizeof(float) * (size_t)c->num_heads);
    if (!all) {
        snprintf(err, errlen, "cuda backend: out of host memory");
        return QE_ERR_NOMEM;
    }
    cfg_alibi_slopes(c->num_heads, all);
    cudaError_t e = cudaSetDevice(st->device);
    if (e == cudaSuccess)
        e = cudaMemcpy(st->alibi_slopes, all + sh->q_head0, sizeof(float) * (size_t)sh->q_heads,
                       cudaMemcpyHostToDevice);
    free(all);
    if (e == cudaSuccess) return QE_OK;
    snprintf(err, errlen, "cuda backend: rank %d: uploading its ALiBi slopes: %s", sh->rank,
             cudaGetErrorString(e));
    return QE_ERR_DEVICE;
}

/* Rank r's state on its device, from its share of the model. */
static qe_status create_rank(cuda_tp *tp, const qe_model *m, const qe_options *o, int r, char *err,
                             size_t errlen) {
    const qe_config *c = &m->cfg;
    const tp_shard sh = tp_shard_of(c, tp->n, r);
    const size_t layers = (size_t)c->num_layers;
    qe_model rm;
    qe_layer_tensors *lt = calloc(layers, sizeof *lt);
    st_tensor *views = calloc(layers * SLICES, sizeof *views);
    void **copies = calloc(layers * COPIES, sizeof *copies);
    qe_status s = QE_ERR_NOMEM;
    if (!lt || !views || !copies || rank_model(m, &sh, &rm, lt, views, copies)) {
        snprintf(err, errlen,
                 "cuda backend: out of host memory slicing the weights for tensor-parallel rank "
                 "%d",
                 r);
    } else {
        qe_options ro = *o;
        ro.device = tp->devices[r];
        char sub[400];
        void *st = NULL;
        s = qe_cuda_backend.create(&rm, &ro, &st, sub, sizeof sub);
        tp->rank[r] = st;
        if (s != QE_OK)
            snprintf(err, errlen, "tensor-parallel rank %d (device %d): %s", r, ro.device, sub);
        else
            s = fix_alibi(tp->rank[r], c, &sh, err, errlen);
    }
    for (size_t i = 0; copies && i < layers * COPIES; i++)
        free(copies[i]);
    free(copies), free(views), free(lt);
    if (s == QE_OK) tp->rank[r]->tp_rank = r;
    return s;
}

/* The device of each rank: the options' list, else device, device + 1, ...; all different. */
static qe_status pick_devices(cuda_tp *tp, const qe_options *o, char *err, size_t errlen) {
    for (int r = 0; r < tp->n; r++) {
        tp->devices[r] = o->tp_devices ? o->tp_devices[r] : o->device + r;
        for (int q = 0; q < r; q++)
            if (tp->devices[q] == tp->devices[r]) {
                snprintf(err, errlen,
                         "tensor parallel: ranks %d and %d both on device %d; each rank needs a "
                         "GPU of its own (NCCL runs one rank per device)",
                         q, r, tp->devices[r]);
                return QE_ERR_ARG;
            }
    }
    return QE_OK;
}

/* ---------------------------------------------------------------- the rank threads */

/* The caller's stop, asked by rank 0 and shared: ranks past 0 wait for its answer. */
static int tp_stop(void *ctx) {
    tp_stop_ctx *c = ctx;
    cuda_tp *tp = c->tp;
    int v;
    if (c->rank == 0) {
        const qe_batch *b = &tp->user_steps[c->step];
        v = b->stop(b->stop_ctx) != 0;
        pthread_mutex_lock(&tp->mu);
        tp->decided[c->step] = v;
        pthread_cond_broadcast(&tp->stop_cv);
        pthread_mutex_unlock(&tp->mu);
        return v;
    }
    pthread_mutex_lock(&tp->mu);
    while (tp->decided[c->step] < 0)
        pthread_cond_wait(&tp->stop_cv, &tp->mu);
    v = tp->decided[c->step];
    pthread_mutex_unlock(&tp->mu);
    return v;
}

static void run_job(cuda_tp *tp, int r) {
    const tp_job *j = &tp->job;
    tp_rank_io *io = &tp->io[r];
    switch (j->kind) {
    case JOB_FORWARD:
        tp->status[r] = qe_cuda_backend.forward(tp->rank[r], io->steps, j->n_steps, j->dims,
                                                j->normalize, tp->err[r], sizeof tp->err[r]);
        break;
    case JOB_RESIDUAL:
        tp->status[r] =
            qe_cuda_backend.residual(tp->rank[r], j->step, j->n_layers, r ? io->scratch : j->out,
                                     tp->err[r], sizeof tp->err[r]);
        break;
    case JOB_COMM_DESTROY:
        if (tp->comm[r]) {
            cudaSetDevice(tp->devices[r]);
            ncclCommDestroy(tp->comm[r]);
            tp->comm[r] = NULL;
        }
        tp->status[r] = QE_OK;
        break;
    case JOB_QUIT:
        break;
    }
}

typedef struct worker_arg {
    cuda_tp *tp;
    int rank;
} worker_arg;

static void *worker_main(void *arg_) {
    worker_arg arg = *(worker_arg *)arg_;
    free(arg_);
    cuda_tp *tp = arg.tp;
    unsigned long long seen = 0;
    pthread_mutex_lock(&tp->mu);
    for (;;) {
        while (tp->gen == seen)
            pthread_cond_wait(&tp->job_cv, &tp->mu);
        seen = tp->gen;
        const tp_job_kind kind = tp->job.kind;
        pthread_mutex_unlock(&tp->mu);
        run_job(tp, arg.rank);
        pthread_mutex_lock(&tp->mu);
        if (--tp->pending == 0) pthread_cond_signal(&tp->done_cv);
        if (kind == JOB_QUIT) break;
    }
    pthread_mutex_unlock(&tp->mu);
    return NULL;
}

/* Runs tp->job on every rank (rank 0 here) and returns once all are done. */
static void run_all(cuda_tp *tp) {
    pthread_mutex_lock(&tp->mu);
    tp->pending = tp->started - 1;
    tp->gen++;
    pthread_cond_broadcast(&tp->job_cv);
    pthread_mutex_unlock(&tp->mu);
    run_job(tp, 0);
    pthread_mutex_lock(&tp->mu);
    if (tp->job.kind == JOB_FORWARD) /* rank 0 stopped early: the others stop at the next step */
        for (int i = 0; i < tp->job.n_steps; i++)
            if (tp->decided[i] < 0) tp->decided[i] = 1;
    pthread_cond_broadcast(&tp->stop_cv);
    while (tp->pending > 0)
        pthread_cond_wait(&tp->done_cv, &tp->mu);
    pthread_mutex_unlock(&tp->mu);
}

/* The job's status: rank 0's failure, else the first other rank's. */
static qe_status merged(const cuda_tp *tp, char *err, size_t errlen) {
    for (int r = 0; r < tp->n; r++)
        if (tp->status[r] != QE_OK) {
            if (r == 0)
                snprintf(err, errlen, "%s", tp->err[r]);
            else
                snprintf(err, errlen, "tensor-parallel rank %d: %s", r, tp->err[r]);
            return tp->status[r];
        }
    return QE_OK;
}

/* ---------------------------------------------------------------- lifetime */

static void tp_destroy(void *state) {
    cuda_tp *tp = state;
    if (!tp) return;
    /* the rank states first (each waits for its stream and frees its graphs, which hold NCCL
     * kernels), then the communicators, each on its rank's thread, then the threads */
    for (int r = 0; tp->rank && r < tp->n; r++)
        if (tp->rank[r]) qe_cuda_backend.destroy(tp->rank[r]);
    if (tp->comm) {
        tp->job.kind = JOB_COMM_DESTROY;
        if (tp->started > 0) run_all(tp);
        for (int r = 0; r < tp->n; r++) /* ranks without a thread (a failed create) */
            if (tp->comm[r]) tp->job.kind = JOB_COMM_DESTROY, run_job(tp, r);
    }
    if (tp->started > 1) {
        tp->job.kind = JOB_QUIT;
        run_all(tp);
        for (int r = 1; r < tp->started; r++)
            pthread_join(tp->thread[r], NULL);
    }
    if (tp->started > 0) {
        pthread_mutex_destroy(&tp->mu);
        pthread_cond_destroy(&tp->job_cv);
        pthread_cond_destroy(&tp->done_cv);
        pthread_cond_destroy(&tp->stop_cv);
    }
    for (int r = 0; tp->io && r < tp->n; r++)
        free(tp->io[r].steps), free(tp->io[r].stops), free(tp->io[r].scratch);
    free(tp->devices), free(tp->rank), free(tp->comm), free(tp->io), free(tp->status);
    free(tp->err), free(tp->thread), free(tp->decided);
    free(tp);
}

static qe_status start_threads(cuda_tp *tp, char *err, size_t errlen) {
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->job_cv, NULL);
    pthread_cond_init(&tp->done_cv, NULL);
    pthread_cond_init(&tp->stop_cv, NULL);
    tp->started = 1; /* rank 0: the caller */
    for (; tp->started < tp->n; tp->started++) {
        worker_arg *a = malloc(sizeof *a);
        if (a) a->tp = tp, a->rank = tp->started;
        if (!a || pthread_create(&tp->thread[tp->started], NULL, worker_main, a)) {
            free(a);
            snprintf(err, errlen, "cuda backend: cannot start the thread of rank %d", tp->started);
            return QE_ERR_NOMEM;
        }
    }
    return QE_OK;
}

static qe_status tp_create(const qe_model *m, const qe_options *o, void **state, char *err,
                           size_t errlen) {
    *state = NULL;
    const qe_config *c = &m->cfg;
    const int n = o->tensor_parallel > 1 ? o->tensor_parallel : 1;
    if (n > 1 && tp_check(c, n, err, errlen)) return QE_ERR_ARG;
    if (!splittable(m)) {
        snprintf(err, errlen,
                 "cuda backend: tensor parallelism needs BF16, F16 or F32 layer matrices");
        return QE_ERR_UNSUPPORTED;
    }
    for (int r = 0; r < n; r++) { /* backend_cuda.c's GEMMs take widths in multiples of 8 */
        const tp_shard sh = tp_shard_of(c, n, r);
        if (sh.f_len % 8) {
            snprintf(err, errlen,
                     "cuda backend: tensor parallel %d gives rank %d %d intermediate columns of "
                     "%d; the CUDA GEMMs need a multiple of 8 per rank (choose N with "
                     "intermediate_size / N a multiple of 8)",
                     n, r, sh.f_len, c->intermediate_size);
            return QE_ERR_UNSUPPORTED;
        }
    }
    cuda_tp *tp = calloc(1, sizeof *tp);
    if (!tp) return QE_ERR_NOMEM;
    tp->n = n;
    tp->devices = calloc((size_t)n, sizeof *tp->devices);
    tp->rank = calloc((size_t)n, sizeof *tp->rank);
    tp->comm = calloc((size_t)n, sizeof *tp->comm);
    tp->io = calloc((size_t)n, sizeof *tp->io);
    tp->status = calloc((size_t)n, sizeof *tp->status);
    tp->err = calloc((size_t)n, sizeof *tp->err);
    tp->thread = calloc((size_t)n, sizeof *tp->thread);
    qe_status s = QE_ERR_NOMEM;
    if (!tp->devices || !tp->rank || !tp->comm || !tp->io || !tp->status || !tp->err ||
        !tp->thread) {
        snprintf(err, errlen, "cuda backend: out of host memory");
        goto fail;
    }
    if ((s = pick_devices(tp, o, err, errlen)) != QE_OK) goto fail;
    for (int r = 0; r < n; r++)
        if ((s = create_rank(tp, m, o, r, err, errlen)) != QE_OK) goto fail;
    /* one process, one communicator per rank: NCCL's single-process form */
    const ncclResult_t nr = ncclCommInitAll(tp->comm, n, tp->devices);
    if (nr != ncclSuccess) {
        memset(tp->comm, 0, sizeof *tp->comm * (size_t)n);
        snprintf(err, errlen, "cuda backend: NCCL cannot make the communicators of %d ranks: %s", n,
                 ncclGetErrorString(nr));
        s = QE_ERR_DEVICE;
        goto fail;
    }
    for (int r = 0; r < n; r++)
        tp->rank[r]->tp_comm = tp->comm[r];
    if ((s = start_threads(tp, err, errlen)) != QE_OK) goto fail;
    *state = tp;
    return QE_OK;
fail:
    tp_destroy(tp);
    return s;
}

/* ---------------------------------------------------------------- forward */

/* The ranks' copies of the steps for one forward (tp_rank_io), and the stop answers reset. */
static int prepare(cuda_tp *tp, const qe_batch *steps, int n_steps, int dims) {
    if (n_steps > tp->decided_cap) {
        int *d = realloc(tp->decided, sizeof *d * (size_t)n_steps);
        if (!d) return -1;
        tp->decided = d, tp->decided_cap = n_steps;
    }
    size_t outs = 0;
    for (int i = 0; i < n_steps; i++) {
        tp->decided[i] = -1;
        outs += (size_t)steps[i].n_seqs * (size_t)dims;
    }
    tp->user_steps = steps;
    for (int r = 0; r < tp->n; r++) {
        tp_rank_io *io = &tp->io[r];
        if (n_steps > io->steps_cap) {
            free(io->steps), free(io->stops);
            io->steps = malloc(sizeof *io->steps * (size_t)n_steps);
            io->stops = malloc(sizeof *io->stops * (size_t)n_steps);
            io->steps_cap = io->steps && io->stops ? n_steps : 0;
            if (!io->steps_cap) return -1;
        }
        if (r > 0 && outs > io->scratch_cap) {
            free(io->scratch);
            io->scratch = malloc(sizeof(float) * outs);
            io->scratch_cap = io->scratch ? outs : 0;
            if (!io->scratch) return -1;
        }
        size_t at = 0;
        for (int i = 0; i < n_steps; i++) {
            qe_batch *b = &io->steps[i];
            *b = steps[i];
            if (r > 0) b->out = io->scratch + at;
            at += (size_t)steps[i].n_seqs * (size_t)dims;
            io->stops[i] = (tp_stop_ctx){tp, r, i};
            if (steps[i].stop) b->stop = tp_stop, b->stop_ctx = &io->stops[i];
        }
    }
    return 0;
}

static qe_status tp_forward(void *state, const qe_batch *steps, int n_steps, int dims,
                            int normalize, char *err, size_t errlen) {
    cuda_tp *tp = state;
    if (prepare(tp, steps, n_steps, dims > 0 ? dims : 0)) {
        snprintf(err, errlen, "cuda backend: out of host memory for the ranks' steps");
        return QE_ERR_NOMEM;
    }
    tp->job =
        (tp_job){.kind = JOB_FORWARD, .n_steps = n_steps, .dims = dims, .normalize = normalize};
    run_all(tp);
    return merged(tp, err, errlen);
}

static qe_status tp_residual(void *state, const qe_batch *b, int n_layers, float *out, char *err,
                             size_t errlen) {
    cuda_tp *tp = state;
    const size_t rows = (size_t)b->n_tokens * (size_t)tp->rank[0]->hidden;
    for (int r = 1; r < tp->n; r++) {
        tp_rank_io *io = &tp->io[r];
        if (rows > io->scratch_cap) {
            free(io->scratch);
            io->scratch = malloc(sizeof(float) * rows);
            io->scratch_cap = io->scratch ? rows : 0;
            if (!io->scratch) {
                snprintf(err, errlen, "cuda backend: out of host memory");
                return QE_ERR_NOMEM;
            }
        }
    }
    tp->job = (tp_job){.kind = JOB_RESIDUAL, .step = b, .n_layers = n_layers, .out = out};
    run_all(tp);
    return merged(tp, err, errlen);
}

/* Every rank made the pool it could; the engine may use what all of them have. */
static int tp_kv_pages(const void *state) {
    const cuda_tp *tp = state;
    int pages = qe_cuda_backend.kv_pages(tp->rank[0]);
    for (int r = 1; r < tp->n; r++) {
        const int p = qe_cuda_backend.kv_pages(tp->rank[r]);
        if (p < pages) pages = p;
    }
    return pages;
}

/* What the ranks hold on their devices together. */
static size_t tp_device_bytes(const void *state) {
    const cuda_tp *tp = state;
    size_t b = 0;
    for (int r = 0; r < tp->n; r++)
        b += qe_cuda_backend.device_bytes(tp->rank[r]);
    return b;
}

/* The tool hooks: counters, plans and the profile are rank 0's (the ranks run the same steps);
 * graphs go on and off on every rank, so all keep launching the same way. */
static void tp_counters(const void *state, qe_debug_counters *out) {
    qe_cuda_backend.counters(((const cuda_tp *)state)->rank[0], out);
}
static int tp_set_graphs(void *state, int on) {
    cuda_tp *tp = state;
    for (int r = 0; r < tp->n; r++)
        if (qe_cuda_backend.set_graphs(tp->rank[r], on)) return -1;
    return 0;
}
static int tp_profile(void *state, int on) {
    return qe_cuda_backend.profile(((cuda_tp *)state)->rank[0], on);
}
static int tp_gemm_plans(const void *state, qe_debug_gemm_plan *out, int cap) {
    return qe_cuda_backend.gemm_plans(((const cuda_tp *)state)->rank[0], out, cap);
}

const qe_backend_ops qe_cuda_tp_backend = {
    .name = "cuda",
    .create = tp_create,
    .forward = tp_forward,
    .destroy = tp_destroy,
    .residual = tp_residual,
    .device_bytes = tp_device_bytes,
    .kv_pages = tp_kv_pages,
    .counters = tp_counters,
    .set_graphs = tp_set_graphs,
    .profile = tp_profile,
    .gemm_plans = tp_gemm_plans,
};
