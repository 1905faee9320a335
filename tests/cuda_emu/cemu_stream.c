/*
 * Streams, events and capture of the emulated runtime.
 *
 * Every operation gets a sequence number on its stream; a stream's worker
 * runs them in order. The cross-stream rules of CUDA are dependencies fixed
 * at submission:
 *   - an operation on the legacy default stream waits for everything already
 *     submitted to every blocking stream (created without
 *     cudaStreamNonBlocking) and to every per-thread default stream;
 *   - an operation on a blocking stream or a per-thread default stream waits
 *     for everything already submitted to the legacy stream;
 *   - a non-blocking stream waits for nothing but its own earlier work;
 *   - cudaStreamWaitEvent adds a marker waiting for the event's record.
 * A held stream (cemu_test_hold_stream) starts nothing new until released;
 * what depends on it waits too, exactly as on a busy GPU.
 */
#include "cemu.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

pthread_mutex_t cemu_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t cemu_cond = PTHREAD_COND_INITIALIZER;

struct cemu_dep {
    struct CUstream_st *st;
    uint64_t seq;
};

enum cemu_op_type { OP_COPY, OP_MARKER, OP_HOST_FN };

struct cemu_op {
    struct cemu_op *next;
    enum cemu_op_type type;
    void *dst;
    const void *src; /* NULL with OP_COPY: memset to value */
    size_t n;        /* bytes, or bytes per row when rows > 0 */
    size_t rows;     /* 2D copy: rows of n bytes, dpitch/spitch apart; 0 = 1D */
    size_t dpitch;   /* 2D: distance between destination rows */
    size_t spitch;   /* 2D: distance between source rows */
    int value;
    void *free_src;
    cudaHostFn_t fn;
    void *arg;
    struct CUevent_st *ev; /* marker of an event record: timestamp it */
    uint64_t seq;
    size_t ndeps;
    struct cemu_dep deps[];
};

struct CUstream_st {
    enum cemu_stream_kind kind;
    int device;
    unsigned flags;
    struct cemu_op *head, *tail;
    uint64_t submitted, completed, copies;
    bool held, dying, started;
    struct CUgraph_st *capture; /* non-NULL while capturing */
    struct CUstream_st *next_all;
};

struct CUevent_st {
    int device;                 /* current when it was created */
    struct CUstream_st *cap_st; /* last recorded while st was capturing */
    struct CUstream_st *st;     /* NULL until recorded */
    uint64_t seq;
    unsigned flags;
    struct timespec t;
};

/* A captured graph: the operations recorded, replayed in order at launch. */
struct CUgraph_st {
    struct cemu_op *head, *tail;
    bool invalidated; /* a call that cannot be captured ran during capture */
};

struct CUgraphExec_st {
    struct CUgraph_st *g;
};

/* One legacy default stream per device; per-thread streams per thread and
 * device. all_streams lists every stream ever made (legacy ones first). */
static struct CUstream_st legacy_streams[CEMU_MAX_DEVICES];
static atomic_bool hold_new; /* cemu_test_hold_new_streams */
static struct CUstream_st *all_streams;
static pthread_once_t streams_once = PTHREAD_ONCE_INIT;
static pthread_key_t ptds_key;
static __thread struct CUstream_st *ptds_streams[CEMU_MAX_DEVICES];
static __thread int cur_device;

void cemu_set_device(int device)
{
    cur_device = device;
}

int cemu_get_device(void)
{
    return cur_device;
}

static bool deps_done(const struct cemu_op *op)
{
    for (size_t i = 0; i < op->ndeps; i++)
        if (op->deps[i].st->completed < op->deps[i].seq)
            return false;
    return true;
}

static void run_op(struct CUstream_st *st, struct cemu_op *op)
{
    switch (op->type) {
    case OP_COPY:
        if (op->src && op->rows)
            for (size_t r = 0; r < op->rows; r++)
                memcpy((char *)op->dst + r * op->dpitch, (const char *)op->src + r * op->spitch,
                       op->n);
        else if (op->src)
            memcpy(op->dst, op->src, op->n);
        else
            memset(op->dst, op->value, op->n);
        free(op->free_src);
        break;
    case OP_MARKER:
        if (op->ev)
            clock_gettime(CLOCK_MONOTONIC, &op->ev->t);
        break;
    case OP_HOST_FN:
        op->fn(op->arg);
        break;
    }
    (void)st;
}

static void *worker(void *arg)
{
    struct CUstream_st *st = arg;

    pthread_mutex_lock(&cemu_lock);
    for (;;) {
        struct cemu_op *op = st->head;
        if (!op) {
            if (st->dying)
                break;
            pthread_cond_wait(&cemu_cond, &cemu_lock);
            continue;
        }
        if (st->held || !deps_done(op)) {
            pthread_cond_wait(&cemu_cond, &cemu_lock);
            continue;
        }
        pthread_mutex_unlock(&cemu_lock);
        run_op(st, op);
        pthread_mutex_lock(&cemu_lock);
        st->head = op->next;
        if (!st->head)
            st->tail = NULL;
        if (op->type == OP_COPY)
            st->copies++;
        st->completed = op->seq;
        free(op);
        pthread_cond_broadcast(&cemu_cond);
    }
    st->started = false;
    pthread_mutex_unlock(&cemu_lock);
    return NULL;
}

/* Start st's worker if needed; caller holds cemu_lock. */
static void start_worker(struct CUstream_st *st)
{
    pthread_attr_t a;
    pthread_t t;

    if (st->started)
        return;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &a, worker, st) == 0)
        st->started = true;
    pthread_attr_destroy(&a);
}

/* A thread exits: its per-thread streams finish their work and go. */
static void ptds_exit(void *arg)
{
    struct CUstream_st **streams = arg;

    pthread_mutex_lock(&cemu_lock);
    for (int d = 0; d < CEMU_MAX_DEVICES; d++)
        if (streams[d])
            streams[d]->dying = true;
    pthread_cond_broadcast(&cemu_cond);
    pthread_mutex_unlock(&cemu_lock);
}

static void streams_init(void)
{
    for (int d = CEMU_MAX_DEVICES - 1; d >= 0; d--) {
        legacy_streams[d].kind = CEMU_S_LEGACY;
        legacy_streams[d].device = d;
        legacy_streams[d].next_all = all_streams;
        all_streams = &legacy_streams[d];
    }
    pthread_key_create(&ptds_key, ptds_exit);
}

static struct CUstream_st *new_stream(enum cemu_stream_kind kind, unsigned flags)
{
    struct CUstream_st *st = calloc(1, sizeof(*st));

    if (!st)
        return NULL;
    st->kind = kind;
    st->flags = flags;
    st->device = cur_device;
    st->held = atomic_load(&hold_new);
    pthread_once(&streams_once, streams_init);
    pthread_mutex_lock(&cemu_lock);
    st->next_all = all_streams->next_all;
    all_streams->next_all = st;
    pthread_mutex_unlock(&cemu_lock);
    return st;
}

struct CUstream_st *cemu_stream_get(cudaStream_t s, enum cemu_flavour fl)
{
    pthread_once(&streams_once, streams_init);
    if (s == cudaStreamLegacy || (s == NULL && fl == CEMU_LEGACY_API))
        return &legacy_streams[cur_device];
    if (s == cudaStreamPerThread || s == NULL) {
        if (!ptds_streams[cur_device]) {
            ptds_streams[cur_device] = new_stream(CEMU_S_PER_THREAD, 0);
            pthread_setspecific(ptds_key, ptds_streams);
        }
        return ptds_streams[cur_device];
    }
    return s;
}

cudaError_t cemu_stream_create(cudaStream_t *ps, unsigned flags)
{
    struct CUstream_st *st;

    if (!ps || (flags & ~(unsigned)cudaStreamNonBlocking))
        return cudaErrorInvalidValue;
    st = new_stream((flags & cudaStreamNonBlocking) ? CEMU_S_NONBLOCKING : CEMU_S_BLOCKING, flags);
    if (!st)
        return cudaErrorMemoryAllocation;
    *ps = st;
    return cudaSuccess;
}

cudaError_t cemu_stream_destroy(cudaStream_t s)
{
    struct CUstream_st *st = s;

    if (!st || s == cudaStreamLegacy || s == cudaStreamPerThread)
        return cudaErrorInvalidResourceHandle;
    /* Work already submitted still completes; the worker leaves when idle.
     * The struct stays allocated: dependencies may still name it. */
    pthread_mutex_lock(&cemu_lock);
    st->dying = true;
    pthread_cond_broadcast(&cemu_cond);
    pthread_mutex_unlock(&cemu_lock);
    return cudaSuccess;
}

unsigned cemu_stream_flags(struct CUstream_st *s)
{
    return (s)->flags;
}

bool cemu_stream_capturing(struct CUstream_st *s)
{
    bool c;

    pthread_mutex_lock(&cemu_lock);
    c = (s)->capture != NULL;
    pthread_mutex_unlock(&cemu_lock);
    return c;
}

/* The implicit dependencies of an operation about to go on st; cemu_lock held. */
static size_t implicit_deps(struct CUstream_st *st, struct cemu_dep *out, size_t max)
{
    size_t n = 0;

    struct CUstream_st *legacy = &legacy_streams[st->device];

    /* The rules hold within one device (one context). */
    if (st->kind == CEMU_S_LEGACY) {
        for (struct CUstream_st *s = all_streams; s; s = s->next_all)
            if (s != st && s->device == st->device &&
                (s->kind == CEMU_S_BLOCKING || s->kind == CEMU_S_PER_THREAD) &&
                s->submitted > s->completed && n < max)
                out[n++] = (struct cemu_dep){s, s->submitted};
    } else if (st->kind != CEMU_S_NONBLOCKING) {
        if (legacy->submitted > legacy->completed && n < max)
            out[n++] = (struct cemu_dep){legacy, legacy->submitted};
    }
    return n;
}

static size_t count_streams(void)
{
    size_t n = 0;

    for (struct CUstream_st *s = all_streams; s; s = s->next_all)
        n++;
    return n;
}

/*
 * Queue op on st (or record it into st's capture) with its implicit
 * dependencies and an optional explicit one. Returns the sequence number,
 * 0 when captured. Takes ownership of op.
 */
static uint64_t submit(struct CUstream_st *st, struct cemu_op *op, const struct cemu_dep *extra)
{
    struct cemu_op *full;
    uint64_t seq;
    size_t max;

    pthread_mutex_lock(&cemu_lock);
    if (st->capture) {
        op->next = NULL;
        if (st->capture->tail)
            st->capture->tail->next = op;
        else
            st->capture->head = op;
        st->capture->tail = op;
        pthread_mutex_unlock(&cemu_lock);
        return 0;
    }
    max = count_streams() + 1;
    full = realloc(op, sizeof(*op) + max * sizeof(struct cemu_dep));
    if (!full)
        abort(); /* test component: out of memory is not a case worth emulating */
    op = full;
    op->ndeps = implicit_deps(st, op->deps, max);
    if (extra && extra->st && extra->st != st && op->ndeps < max)
        op->deps[op->ndeps++] = *extra;
    op->next = NULL;
    op->seq = seq = ++st->submitted;
    if (st->tail)
        st->tail->next = op;
    else
        st->head = op;
    st->tail = op;
    start_worker(st);
    pthread_cond_broadcast(&cemu_cond);
    pthread_mutex_unlock(&cemu_lock);
    return seq;
}

static struct cemu_op *new_op(enum cemu_op_type type)
{
    struct cemu_op *op = calloc(1, sizeof(*op));

    if (!op)
        abort();
    op->type = type;
    return op;
}

uint64_t cemu_submit_copy(struct CUstream_st *s, void *dst, const void *src, size_t n, int value,
                          void *free_src)
{
    struct cemu_op *op = new_op(OP_COPY);

    op->dst = dst;
    op->src = src;
    op->n = n;
    op->value = value;
    op->free_src = free_src;
    return submit(s, op, NULL);
}

uint64_t cemu_submit_copy2d(struct CUstream_st *s, void *dst, size_t dpitch, const void *src,
                            size_t spitch, size_t width, size_t height, void *free_src)
{
    struct cemu_op *op = new_op(OP_COPY);

    op->dst = dst;
    op->dpitch = dpitch;
    op->src = src;
    op->spitch = spitch;
    op->n = width;
    op->rows = height;
    op->free_src = free_src;
    return submit(s, op, NULL);
}

uint64_t cemu_submit_marker(struct CUstream_st *s)
{
    return submit(s, new_op(OP_MARKER), NULL);
}

uint64_t cemu_submit_host_fn(struct CUstream_st *s, cudaHostFn_t fn, void *arg)
{
    struct cemu_op *op = new_op(OP_HOST_FN);

    op->fn = fn;
    op->arg = arg;
    return submit(s, op, NULL);
}

void cemu_stream_wait_seq(struct CUstream_st *s, uint64_t seq)
{
    struct CUstream_st *st = s;

    pthread_mutex_lock(&cemu_lock);
    while (st->completed < seq)
        pthread_cond_wait(&cemu_cond, &cemu_lock);
    pthread_mutex_unlock(&cemu_lock);
}

void cemu_stream_sync(struct CUstream_st *s)
{
    struct CUstream_st *st = s;
    uint64_t seq;

    pthread_mutex_lock(&cemu_lock);
    seq = st->submitted;
    pthread_mutex_unlock(&cemu_lock);
    cemu_stream_wait_seq(s, seq);
}

bool cemu_stream_idle(struct CUstream_st *s)
{
    struct CUstream_st *st = s;
    bool idle;

    pthread_mutex_lock(&cemu_lock);
    idle = st->completed == st->submitted;
    pthread_mutex_unlock(&cemu_lock);
    return idle;
}

/* Some stream has work left; caller holds cemu_lock. */
static bool device_busy_locked(void)
{
    for (struct CUstream_st *s = all_streams; s; s = s->next_all)
        if (s->completed < s->submitted)
            return true;
    return false;
}

bool cemu_device_idle(void)
{
    bool busy;

    pthread_mutex_lock(&cemu_lock);
    busy = device_busy_locked();
    pthread_mutex_unlock(&cemu_lock);
    return !busy;
}

bool cemu_device_wait_idle(int timeout_ms)
{
    struct timespec dl;
    bool busy;

    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&cemu_lock);
    while ((busy = device_busy_locked()) &&
           pthread_cond_timedwait(&cemu_cond, &cemu_lock, &dl) != ETIMEDOUT)
        ;
    busy = device_busy_locked();
    pthread_mutex_unlock(&cemu_lock);
    return !busy;
}

void cemu_device_sync(void)
{
    pthread_mutex_lock(&cemu_lock);
    for (;;) {
        bool busy = false;
        for (struct CUstream_st *s = all_streams; s; s = s->next_all)
            busy |= s->completed < s->submitted;
        if (!busy)
            break;
        pthread_cond_wait(&cemu_cond, &cemu_lock);
    }
    pthread_mutex_unlock(&cemu_lock);
}

cudaError_t cemu_event_create(cudaEvent_t *pe, unsigned flags)
{
    struct CUevent_st *e;

    if (!pe)
        return cudaErrorInvalidValue;
    e = calloc(1, sizeof(*e));
    if (!e)
        return cudaErrorMemoryAllocation;
    e->flags = flags;
    e->device = cur_device;
    *pe = e;
    return cudaSuccess;
}

cudaError_t cemu_event_destroy(cudaEvent_t e)
{
    if (!e)
        return cudaErrorInvalidResourceHandle;
    /* A marker still queued may point at it: keep it until that ran. */
    if (e->st)
        cemu_stream_wait_seq((struct CUstream_st *)e->st, e->seq);
    free(e);
    return cudaSuccess;
}

cudaError_t cemu_event_record(cudaEvent_t e, struct CUstream_st *s)
{
    struct CUstream_st *st = s;
    struct cemu_op *op;
    uint64_t seq;

    if (!e)
        return cudaErrorInvalidResourceHandle;
    /* An event belongs to the device current at its creation. */
    if (e->device != st->device)
        return cudaErrorInvalidResourceHandle;
    op = new_op(OP_MARKER);
    op->ev = e;
    seq = submit(st, op, NULL);
    if (seq == 0) {
        /* Captured: a node of the graph, not an event the host can wait on. */
        pthread_mutex_lock(&cemu_lock);
        e->cap_st = st;
        pthread_mutex_unlock(&cemu_lock);
        return cudaSuccess;
    }
    pthread_mutex_lock(&cemu_lock);
    e->st = st;
    e->seq = seq;
    e->cap_st = NULL;
    pthread_mutex_unlock(&cemu_lock);
    return cudaSuccess;
}

/* Waiting on an event recorded in a capture that is still going: not
 * permitted, and it invalidates that capture. Caller holds cemu_lock. */
static bool captured_event(cudaEvent_t e)
{
    if (!e->cap_st || !e->cap_st->capture)
        return false;
    e->cap_st->capture->invalidated = true;
    return true;
}

void cemu_capture_invalidate(struct CUstream_st *st)
{
    pthread_mutex_lock(&cemu_lock);
    if (st->capture)
        st->capture->invalidated = true;
    pthread_mutex_unlock(&cemu_lock);
}

cudaError_t cemu_event_query(cudaEvent_t e)
{
    cudaError_t rc = cudaSuccess;

    if (!e)
        return cudaErrorInvalidResourceHandle;
    pthread_mutex_lock(&cemu_lock);
    if (captured_event(e))
        rc = cudaErrorStreamCaptureUnsupported;
    else if (e->st && e->st->completed < e->seq)
        rc = cudaErrorNotReady;
    pthread_mutex_unlock(&cemu_lock);
    return rc;
}

cudaError_t cemu_event_sync(cudaEvent_t e)
{
    struct CUstream_st *st;
    uint64_t seq;

    if (!e)
        return cudaErrorInvalidResourceHandle;
    pthread_mutex_lock(&cemu_lock);
    if (captured_event(e)) {
        pthread_mutex_unlock(&cemu_lock);
        return cudaErrorStreamCaptureUnsupported;
    }
    st = e->st;
    seq = e->seq;
    pthread_mutex_unlock(&cemu_lock);
    if (st)
        cemu_stream_wait_seq((struct CUstream_st *)st, seq);
    return cudaSuccess;
}

cudaError_t cemu_event_elapsed(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    if (!ms || !a || !b)
        return cudaErrorInvalidValue;
    if ((a->flags | b->flags) & cudaEventDisableTiming)
        return cudaErrorInvalidResourceHandle;
    if (cemu_event_query(a) != cudaSuccess || cemu_event_query(b) != cudaSuccess)
        return cudaErrorNotReady;
    *ms = (float)((double)(b->t.tv_sec - a->t.tv_sec) * 1e3 +
                  (double)(b->t.tv_nsec - a->t.tv_nsec) / 1e6);
    return cudaSuccess;
}

cudaError_t cemu_stream_wait_event(struct CUstream_st *s, cudaEvent_t e)
{
    struct cemu_dep dep = {0};

    if (!e)
        return cudaErrorInvalidResourceHandle;
    /* The record current at this call counts; a later record does not. */
    pthread_mutex_lock(&cemu_lock);
    dep.st = e->st;
    dep.seq = e->seq;
    pthread_mutex_unlock(&cemu_lock);
    submit(s, new_op(OP_MARKER), &dep);
    return cudaSuccess;
}

cudaError_t cemu_capture_begin(struct CUstream_st *s)
{
    struct CUstream_st *st = s;
    struct CUgraph_st *g;
    cudaError_t rc = cudaSuccess;

    /* The legacy stream cannot be captured. */
    if (st->kind == CEMU_S_LEGACY)
        return cudaErrorStreamCaptureUnsupported;
    g = calloc(1, sizeof(*g));
    if (!g)
        return cudaErrorMemoryAllocation;
    pthread_mutex_lock(&cemu_lock);
    if (st->capture)
        rc = cudaErrorIllegalState;
    else
        st->capture = g;
    pthread_mutex_unlock(&cemu_lock);
    if (rc != cudaSuccess)
        free(g);
    return rc;
}

cudaError_t cemu_capture_end(struct CUstream_st *s, cudaGraph_t *pg)
{
    struct CUstream_st *st = s;
    cudaError_t rc = cudaSuccess;

    if (!pg)
        return cudaErrorInvalidValue;
    struct CUgraph_st *g;

    pthread_mutex_lock(&cemu_lock);
    g = st->capture;
    st->capture = NULL;
    pthread_mutex_unlock(&cemu_lock);
    if (!g)
        return cudaErrorIllegalState;
    if (g->invalidated) {
        *pg = NULL;
        cemu_graph_destroy(g);
        return cudaErrorStreamCaptureInvalidated;
    }
    *pg = g;
    return rc;
}

cudaError_t cemu_graph_instantiate(cudaGraphExec_t *ge, cudaGraph_t g)
{
    struct CUgraphExec_st *x;

    if (!ge || !g)
        return cudaErrorInvalidValue;
    x = calloc(1, sizeof(*x));
    if (!x)
        return cudaErrorMemoryAllocation;
    x->g = g;
    *ge = x;
    return cudaSuccess;
}

cudaError_t cemu_graph_launch(cudaGraphExec_t ge, struct CUstream_st *s)
{
    if (!ge)
        return cudaErrorInvalidResourceHandle;
    for (struct cemu_op *o = ge->g->head; o; o = o->next) {
        struct cemu_op *op = new_op(o->type);
        op->dst = o->dst;
        op->src = o->src;
        op->n = o->n;
        op->rows = o->rows;
        op->dpitch = o->dpitch;
        op->spitch = o->spitch;
        op->value = o->value;
        op->fn = o->fn;
        op->arg = o->arg;
        submit(s, op, NULL);
    }
    return cudaSuccess;
}

cudaError_t cemu_graph_destroy(void *p)
{
    struct CUgraph_st *g = p;

    if (!g)
        return cudaErrorInvalidValue;
    while (g->head) {
        struct cemu_op *o = g->head;
        g->head = o->next;
        free(o);
    }
    free(g);
    return cudaSuccess;
}

CEMU_EXPORT int cemu_test_hold_stream(void *s)
{
    struct CUstream_st *st = cemu_stream_get(s, CEMU_LEGACY_API);

    if (!st)
        return -EINVAL;
    pthread_mutex_lock(&cemu_lock);
    st->held = true;
    pthread_mutex_unlock(&cemu_lock);
    return 0;
}

CEMU_EXPORT int cemu_test_release_stream(void *s)
{
    struct CUstream_st *st = cemu_stream_get(s, CEMU_LEGACY_API);

    if (!st)
        return -EINVAL;
    pthread_mutex_lock(&cemu_lock);
    st->held = false;
    pthread_cond_broadcast(&cemu_cond);
    pthread_mutex_unlock(&cemu_lock);
    return 0;
}

CEMU_EXPORT uint64_t cemu_test_stream_pending(void *s)
{
    struct CUstream_st *st = cemu_stream_get(s, CEMU_LEGACY_API);
    uint64_t n;

    pthread_mutex_lock(&cemu_lock);
    n = st->submitted - st->completed;
    pthread_mutex_unlock(&cemu_lock);
    return n;
}

CEMU_EXPORT void cemu_test_hold_new_streams(int on)
{
    atomic_store(&hold_new, on != 0);
}

CEMU_EXPORT void cemu_test_release_all_streams(void)
{
    pthread_once(&streams_once, streams_init);
    pthread_mutex_lock(&cemu_lock);
    for (struct CUstream_st *s = all_streams; s; s = s->next_all)
        s->held = false;
    pthread_cond_broadcast(&cemu_cond);
    pthread_mutex_unlock(&cemu_lock);
}

CEMU_EXPORT uint64_t cemu_test_blocked_ops(void)
{
    uint64_t n = 0;

    pthread_mutex_lock(&cemu_lock);
    for (struct CUstream_st *s = all_streams; s; s = s->next_all)
        if (s->head && !s->held && !deps_done(s->head))
            n++;
    pthread_mutex_unlock(&cemu_lock);
    return n;
}

CEMU_EXPORT uint64_t cemu_test_stream_copies(void *s)
{
    struct CUstream_st *st = cemu_stream_get(s, CEMU_LEGACY_API);
    uint64_t n;

    pthread_mutex_lock(&cemu_lock);
    n = st->copies;
    pthread_mutex_unlock(&cemu_lock);
    return n;
}
