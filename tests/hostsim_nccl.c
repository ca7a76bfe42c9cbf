/* hostsim_nccl.c — a host stand-in for the part of NCCL that runtime/cuda_tp.c calls, over the
 * fake devices of hostsim_runtime.c, so the CUDA backend's tensor parallelism runs in CI on the
 * kernel emulator. Defined in the test executable, these take precedence over libnccl.so's.
 *
 * A communicator belongs to a clique (the ranks made together by ncclCommInitAll, or by
 * ncclCommInitRank calls with one unique id). ncclAllReduce queues an op on the stream's device
 * (or into the graph its thread is capturing); when the op runs it posts its buffers and waits
 * until every rank's op has run, running the queues of the ranks not yet there meanwhile (a GPU
 * would run them by itself), and the last one to arrive sums the ranks' buffers element by
 * element in rank order, so the result is deterministic, and writes every rank's output. Like
 * NCCL, a clique wants one device per rank, and all ranks must call the same collectives with
 * the same counts: a mismatch fails the op (a device fault) instead of hanging. */
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "hostsim.h"

typedef struct sim_clique {
    int n;
    int device[SIM_MAX_DEVICES];
    /* the collective in progress: who arrived with what */
    int arrived, here[SIM_MAX_DEVICES];
    const float *send[SIM_MAX_DEVICES];
    float *recv[SIM_MAX_DEVICES];
    size_t count[SIM_MAX_DEVICES];
    unsigned long long generation; /* collectives completed */
    int failed;                    /* the last one's counts differed */
    int refs;                      /* communicators alive */
    ncclUniqueId id;               /* ncclCommInitRank's rendezvous */
    int joined;
} sim_clique;

struct ncclComm {
    sim_clique *clique;
    int rank;
};

const char *ncclGetErrorString(ncclResult_t r) {
    switch (r) {
    case ncclSuccess:
        return "no error";
    case ncclInvalidArgument:
        return "invalid argument (stand-in)";
    case ncclInvalidUsage:
        return "invalid usage (stand-in)";
    case ncclSystemError:
        return "system error (stand-in)";
    default:
        return "NCCL stand-in error";
    }
}

static ncclResult_t bad_devices(const int *devs, int n) {
    if (n < 1 || n > SIM_MAX_DEVICES) return ncclInvalidArgument;
    for (int r = 0; r < n; r++) {
        if (devs[r] < 0 || devs[r] >= fake_devices) return ncclInvalidArgument;
        for (int q = 0; q < r; q++)
            if (devs[q] == devs[r]) return ncclInvalidUsage; /* NCCL: duplicate GPU */
    }
    return ncclSuccess;
}

ncclResult_t ncclCommInitAll(ncclComm_t *comms, int n, const int *devlist) {
    int devs[SIM_MAX_DEVICES];
    for (int r = 0; r < n && r < SIM_MAX_DEVICES; r++)
        devs[r] = devlist ? devlist[r] : r;
    const ncclResult_t bad = bad_devices(devs, n);
    if (bad != ncclSuccess) return bad;
    sim_clique *c = calloc(1, sizeof *c);
    if (!c) return ncclSystemError;
    c->n = n, c->refs = n;
    memcpy(c->device, devs, sizeof(int) * (size_t)n);
    for (int r = 0; r < n; r++) {
        comms[r] = calloc(1, sizeof *comms[r]);
        if (!comms[r]) abort();
        comms[r]->clique = c, comms[r]->rank = r;
    }
    return ncclSuccess;
}

/* ---- ncclCommInitRank: the threads of one id meet in a clique made by the first to come */

static pthread_mutex_t join_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t join_cv = PTHREAD_COND_INITIALIZER;
static sim_clique *joining[SIM_MAX_DEVICES]; /* cliques not yet complete */

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    static unsigned long long next = 1;
    memset(id, 0, sizeof *id);
    pthread_mutex_lock(&join_mu);
    const unsigned long long v = next++;
    pthread_mutex_unlock(&join_mu);
    memcpy(id->internal, &v, sizeof v);
    return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t *comm, int n, ncclUniqueId id, int rank) {
    int device = 0;
    cudaGetDevice(&device);
    if (n < 1 || n > SIM_MAX_DEVICES || rank < 0 || rank >= n) return ncclInvalidArgument;
    pthread_mutex_lock(&join_mu);
    sim_clique *c = NULL;
    for (int i = 0; i < SIM_MAX_DEVICES && !c; i++)
        if (joining[i] && !memcmp(&joining[i]->id, &id, sizeof id)) c = joining[i];
    if (!c) {
        int slot = -1;
        for (int i = 0; i < SIM_MAX_DEVICES && slot < 0; i++)
            if (!joining[i]) slot = i;
        if (slot < 0 || !(c = calloc(1, sizeof *c))) {
            pthread_mutex_unlock(&join_mu);
            return ncclSystemError;
        }
        c->n = n, c->id = id;
        for (int r = 0; r < n; r++)
            c->device[r] = -1;
        joining[slot] = c;
    }
    c->device[rank] = device;
    c->refs++;
    if (++c->joined == n) {
        for (int i = 0; i < SIM_MAX_DEVICES; i++)
            if (joining[i] == c) joining[i] = NULL;
        pthread_cond_broadcast(&join_cv);
    }
    while (c->joined < n)
        pthread_cond_wait(&join_cv, &join_mu);
    pthread_mutex_unlock(&join_mu);
    if (bad_devices(c->device, n) != ncclSuccess) return ncclInvalidUsage;
    *comm = calloc(1, sizeof **comm);
    if (!*comm) abort();
    (*comm)->clique = c, (*comm)->rank = rank;
    return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    if (!comm) return ncclInvalidArgument;
    sim_lock();
    const int last = --comm->clique->refs == 0;
    sim_unlock();
    if (last) free(comm->clique);
    free(comm);
    return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *err) {
    (void)comm;
    *err = ncclSuccess;
    return ncclSuccess;
}

/* Group calls only batch launches in NCCL; the ops here wait on their devices' queues already. */
ncclResult_t ncclGroupStart(void) {
    return ncclSuccess;
}
ncclResult_t ncclGroupEnd(void) {
    return ncclSuccess;
}

/* ---- the all-reduce */

typedef struct allreduce_args {
    ncclComm_t comm;
    const float *send;
    float *recv;
    size_t count;
} allreduce_args;

/* The last rank to arrive: the sums in rank order into a scratch first (send and recv may be
 * the same buffer), then every rank's recv. */
static void complete(sim_clique *c) {
    c->failed = 0;
    for (int r = 1; r < c->n; r++)
        if (c->count[r] != c->count[0]) c->failed = 1;
    const size_t n = c->count[0];
    float *sum = c->failed ? NULL : malloc(sizeof(float) * (n ? n : 1));
    if (sum) {
        for (size_t i = 0; i < n; i++) {
            float s = c->send[0][i];
            for (int r = 1; r < c->n; r++)
                s += c->send[r][i];
            sum[i] = s;
        }
        for (int r = 0; r < c->n; r++)
            memcpy(c->recv[r], sum, sizeof(float) * n);
        free(sum);
    } else {
        c->failed = 1;
    }
    c->arrived = 0;
    memset(c->here, 0, sizeof c->here);
    c->generation++;
    sim_wake();
}

/* Runs with the stand-in's lock held, as every op does. */
static int allreduce_run(const void *a_) {
    const allreduce_args *a = a_;
    sim_clique *c = a->comm->clique;
    const int r = a->comm->rank;
    const unsigned long long gen = c->generation;
    c->send[r] = a->send, c->recv[r] = a->recv, c->count[r] = a->count;
    c->here[r] = 1;
    if (++c->arrived == c->n) {
        complete(c);
        return c->failed;
    }
    while (c->generation == gen) {
        int ran = 0;
        for (int q = 0; q < c->n; q++)
            if (!c->here[q]) ran |= sim_help(c->device[q]);
        if (!ran && c->generation == gen) sim_wait();
    }
    return c->failed;
}

ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t type,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
    if (!comm || type != ncclFloat32 || op != ncclSum) return ncclInvalidArgument;
    const int device = comm->clique->device[comm->rank];
    if (sim_stream_device(stream) != device) return ncclInvalidUsage;
    allreduce_args a = {comm, send, recv, count};
    sim_enqueue_on(device, 1, allreduce_run, &a, sizeof a);
    return ncclSuccess;
}
