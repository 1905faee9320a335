/*
 * The copy service: location strings, the run-time lookup of a CUDA
 * runtime, the copy provider built on the pinned pools of eng_cudacopy.c,
 * the staging buffers, and the progress thread that advances the copies.
 */
#include "eng_copy.h"
#include "teshim/cudacopy.h"
#include "eng_tp.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int eng_location_parse(const char *loc, int *dev)
{
    char *end;
    long n;

    if (!loc)
        return -EINVAL;
    if (!strcmp(loc, "cpu")) {
        *dev = -1;
        return 0;
    }
    if (strncmp(loc, "cuda:", 5) || loc[5] < '0' || loc[5] > '9')
        return -EINVAL;
    errno = 0;
    n = strtol(loc + 5, &end, 10);
    if (errno || *end || n > 1023)
        return -EINVAL;
    *dev = (int)n;
    return 0;
}

/*
 * The provider: copies through the pinned pools of eng_cudacopy.c, issued on
 * a non-blocking stream of the engine's own per device and advanced by
 * polling events, never by waiting. The runtime, its entry points and the
 * streams are process-wide; the pools, the pinned budget and the staging
 * buffers are each engine's own, sized by its cuda.* settings
 * (cuda.bounce_chunk_bytes, cuda.bounce_buffers, cuda.copy_threads,
 * cuda.pinned_max_bytes; 2 MiB, 8, auto, 256 MiB by default), so two
 * engines of one process keep their own. The host memcpy between pageable
 * staging and the pools is shared with the component's copy threads, as in
 * the shim; the progress thread helps and never waits for them.
 */
#define ENG_CUDA_MAX_DEVICES 16

#define STAGE_KEEP 32
#define STAGE_KEEP_BYTES (256ull << 20)

/* The runtime's entry points and a stream per device: process-wide. */
static struct eng_cu {
    struct scc_api api;
    /* The runtime's functions the engine calls itself: teshim/cudart.def's
     * rows with ENG = 1. */
#define CUDART(in_scc, in_shim, in_eng, need, field, name, params)                                 \
    CUDART_IF_##in_eng(int(*field) params;)
#include "teshim/cudart.def"
#undef CUDART
    pthread_mutex_t lock; /* first use of a device, in any engine */
    struct CUstream_st *stream[ENG_CUDA_MAX_DEVICES];
} cu = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* A device as one engine uses it: the shared stream, its own pools. */
struct eng_cuda_dev {
    bool ready;
    struct scc_pools pools;
    struct CUstream_st *stream;
};

/* One engine's copy settings, pools and staging buffers (eng_ctx.copy). */
struct eng_copy {
    size_t chunk;
    unsigned buffers;
    unsigned threads;
    struct scc_budget budget;       /* cuda.pinned_max_bytes: pools and staging */
    struct scc_budget stage_budget; /* the part staging buffers may hold */
    struct eng_cuda_dev dev[ENG_CUDA_MAX_DEVICES];
    struct {
        pthread_mutex_t lock;
        char *buf[STAGE_KEEP];
        unsigned n;
        uint64_t bytes;
    } stages;
};

/* A copy in flight: through a pool (pageable host memory) or, for a pinned
 * staging buffer, one cudaMemcpyAsync straight into it and its event. */
struct eng_copy_tok {
    struct eng_copy *ec;
    struct scc_xfer x;
    struct scc_pool *pool;
    struct CUevent_st *ev;
    int device;
};

#define ENG_CUDA_EVENT_DISABLE_TIMING 0x02

/* The device's stream and pools, made on first use; NULL if the runtime
 * refused (its error cleared: the engine's calls leave no state behind). */
static struct eng_cuda_dev *cuda_dev(struct eng_copy *ec, int device)
{
    struct eng_cuda_dev *d;

    if (device < 0 || device >= ENG_CUDA_MAX_DEVICES)
        return NULL;
    d = &ec->dev[device];
    pthread_mutex_lock(&cu.lock);
    if (!d->ready) {
        if (!cu.stream[device] &&
            (cu.set_device(device) ||
             cu.stream_create_with_flags(&cu.stream[device], CUABI_STREAM_NON_BLOCKING))) {
            cu.stream[device] = NULL;
            cu.get_last_error();
        }
        if (cu.stream[device]) {
            d->stream = cu.stream[device];
            scc_pools_init(&d->pools, &cu.api, &ec->budget, ec->chunk, ec->buffers);
            scc_pools_set_threads(&d->pools, ec->threads, 0);
            d->ready = true;
        }
    }
    pthread_mutex_unlock(&cu.lock);
    return d->ready ? d : NULL;
}

static void tok_free(struct eng_cuda_dev *d, struct eng_copy_tok *tok)
{
    if (tok->pool)
        scc_pools_put(&d->pools, tok->pool);
    if (tok->ev)
        cu.api.event_destroy(tok->ev);
    free(tok);
}

/* One asynchronous copy between pinned host memory and the device. */
static int copy_direct(struct eng_cuda_dev *d, struct eng_copy_tok *tok, enum scc_dir dir,
                       void *host, void *dev, size_t n)
{
    bool d2h = dir == SCC_DIR_D2H;

    if (cu.api.event_create_with_flags(&tok->ev, ENG_CUDA_EVENT_DISABLE_TIMING)) {
        tok->ev = NULL;
        return -EIO;
    }
    if (cu.api.memcpy_async(d2h ? host : dev, d2h ? dev : host, n,
                            d2h ? CUABI_MEMCPY_D2H : CUABI_MEMCPY_H2D, d->stream))
        return -EIO;
    if (cu.api.event_record(tok->ev, d->stream)) {
        /* the copy may be running: nothing may reuse the buffer before it ends */
        cu.stream_synchronize(d->stream);
        return -EIO;
    }
    return 0;
}

/* Called from the staging progress thread only: it sets that thread's
 * current device, never an application thread's. A pinned host buffer
 * (an engine staging buffer) is copied to or from directly. */
static int copy_start(struct eng_copy *ec, enum scc_dir dir, void *host, void *dev, size_t n,
                      int device, bool pinned, void **token)
{
    struct eng_cuda_dev *d = ec ? cuda_dev(ec, device) : NULL;
    struct eng_copy_tok *tok;
    int err, rc;

    if (!d)
        return -ENODEV;
    if (cu.set_device(device)) {
        cu.get_last_error();
        return -ENODEV;
    }
    tok = calloc(1, sizeof(*tok));
    if (!tok)
        return -ENOMEM;
    tok->device = device;
    tok->ec = ec;
    if (pinned) {
        rc = copy_direct(d, tok, dir, host, dev, n);
        if (rc) {
            cu.get_last_error();
            tok_free(d, tok);
            return rc;
        }
        *token = tok;
        return 0;
    }
    tok->pool = scc_pools_get(&d->pools, &err);
    if (!tok->pool) {
        free(tok);
        if (err > 0)
            cu.get_last_error();
        /* -ENOSPC: every pinned byte is in use; retry when one comes back */
        return err > 0 ? -EIO : err;
    }
    scc_xfer_start(&tok->x, tok->pool, dir, host, dev, n, d->stream, SCC_WAIT_ALL);
    rc = scc_xfer_poll(&tok->x, false);
    if (rc > 0) {
        scc_pool_drain(tok->pool);
        cu.get_last_error();
        tok_free(d, tok);
        return -EIO;
    }
    *token = tok;
    return 0;
}

/* 0 when the copy finished (token freed), -EAGAIN while it runs, else its
 * error (token freed). */
static int copy_poll(void *token)
{
    struct eng_copy_tok *tok = token;
    struct eng_cuda_dev *d = &tok->ec->dev[tok->device];
    int rc;

    /* later chunks are issued from here: on the transfer's device */
    if (cu.set_device(tok->device)) {
        cu.get_last_error();
        rc = -ENODEV;
        goto out;
    }
    if (tok->ev) {
        rc = cu.api.event_query(tok->ev);
        if (rc == CUABI_ERROR_NOT_READY)
            return -EAGAIN;
        if (rc) {
            cu.get_last_error();
            rc = -EIO;
        }
        goto out;
    }
    rc = scc_xfer_poll(&tok->x, false);
    if (rc == SCC_PENDING)
        return -EAGAIN;
    if (rc) {
        scc_pool_drain(tok->pool);
        cu.get_last_error();
        rc = -EIO;
    }
out:
    tok_free(d, tok);
    return rc;
}

/* The provider's functions from the runtime opened; -ENOENT if one lacks. */
static int cuda_resolve(void *h, const char **missing)
{
    static const struct scc_sym syms[] = {
#define CUDART(in_scc, in_shim, in_eng, need, field, name, params)                                 \
    CUDART_IF_##in_eng({#name, offsetof(struct eng_cu, field), need}, )
#include "teshim/cudart.def"
#undef CUDART
    };
    int ret = scc_api_from_handle(&cu.api, h, missing);

    if (ret)
        return ret;
    return scc_syms_from_handle(&cu, syms, sizeof(syms) / sizeof(syms[0]), h, missing);
}

static pthread_mutex_t copy_lock = PTHREAD_MUTEX_INITIALIZER;
static int copy_state; /* 0 untried, 1 loaded, <0 error */

int eng_copy_open(struct eng_ctx *eng)
{
    static const char *const names[] = {CUDART_VERSION_13, CUDART_VERSION_12, "libcudart.so"};
    int ret;

    pthread_mutex_lock(&copy_lock);
    if (!copy_state) {
        copy_state = -ENODEV;
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            const char *missing = NULL;
            void *h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
            if (!h)
                continue;
            if (cuda_resolve(h, &missing)) {
                eng_err(eng, "cuda memory: %s lacks %s", names[i], missing);
                dlclose(h);
                continue;
            }
            copy_state = 1;
            break;
        }
    }
    ret = copy_state < 0 ? copy_state : 0;
    if (!ret && !eng->copy) {
        struct eng_copy *ec = calloc(1, sizeof(*ec));
        if (ec) {
            ec->chunk = eng->p.cuda_chunk;
            ec->buffers = (unsigned)eng->p.cuda_buffers;
            ec->threads = (unsigned)eng->p.cuda_threads;
            ec->budget.max = eng->p.cuda_pinned_max;
            /* staging buffers may hold what one pool leaves: a copy through a
             * pool (pageable staging) can always get one eventually */
            size_t pool_bytes = ec->chunk * ec->buffers;
            ec->stage_budget.max = ec->budget.max > pool_bytes ? ec->budget.max - pool_bytes : 0;
            pthread_mutex_init(&ec->stages.lock, NULL);
            eng->copy = ec;
        } else {
            ret = -ENOMEM;
        }
    }
    pthread_mutex_unlock(&copy_lock);
    if (ret == -ENOMEM)
        eng_err(eng, "cuda memory: no memory for the engine's copy pools");
    else if (ret)
        eng_err(eng, "cuda memory: no CUDA runtime could be loaded (%s): %s", names[0],
                "libcudart.so.13/.12 not found");
    return ret;
}

/* ---- staging buffers ------------------------------------------------------ */

/*
 * Host staging buffers are reused, not allocated per transfer: each engine
 * keeps a small cache of power-of-two buffers (at most STAGE_KEEP of them,
 * STAGE_KEEP_BYTES in all), and each tcp connection that serves device
 * memory a few more. A buffer is pinned (cudaMallocHost) while the staging
 * part of its engine's pinned budget allows, so the device copies straight
 * into it with one cudaMemcpyAsync; otherwise it is pageable and copies go
 * through a pool. Its capacity, kind and engine are stored just before it.
 */
#define STAGE_HDR 64

struct stage_hdr {
    uint64_t cap;
    bool pinned;
    struct eng_copy *owner; /* NULL: an engine without the CUDA runtime */
};

static const struct stage_hdr *stage_hdr(const void *p)
{
    return (const struct stage_hdr *)((const char *)p - STAGE_HDR);
}

uint64_t eng_stage_cap(const void *p)
{
    return stage_hdr(p)->cap;
}

bool eng_stage_pinned(const void *p)
{
    return stage_hdr(p)->pinned;
}

/* A pinned buffer of STAGE_HDR + cap bytes within the staging budget. */
static void *stage_alloc_pinned(struct eng_copy *ec, uint64_t cap)
{
    size_t n = STAGE_HDR + cap;
    void *p = NULL;

    if (!ec || !scc_budget_take(&ec->stage_budget, n))
        return NULL;
    if (!scc_budget_take(&ec->budget, n)) {
        scc_budget_give(&ec->stage_budget, n);
        return NULL;
    }
    if (cu.api.malloc_host(&p, n)) {
        cu.get_last_error();
        scc_budget_give(&ec->budget, n);
        scc_budget_give(&ec->stage_budget, n);
        return NULL;
    }
    return p;
}

static void stage_release(char *p)
{
    const struct stage_hdr *h = stage_hdr(p);
    size_t n = STAGE_HDR + h->cap;
    struct eng_copy *ec = h->owner;

    if (h->pinned) {
        cu.api.free_host(p - STAGE_HDR);
        scc_budget_give(&ec->budget, n);
        scc_budget_give(&ec->stage_budget, n);
    } else {
        free(p - STAGE_HDR);
    }
}

void *eng_stage_get(struct eng_ctx *eng, uint64_t len)
{
    struct eng_copy *ec = eng->copy;
    struct stage_hdr h = {.cap = 4096, .owner = ec};
    char *p = NULL;

    while (h.cap < len)
        h.cap <<= 1;
    if (ec) {
        pthread_mutex_lock(&ec->stages.lock);
        for (unsigned i = 0; i < ec->stages.n; i++)
            if (eng_stage_cap(ec->stages.buf[i]) == h.cap) {
                p = ec->stages.buf[i];
                ec->stages.buf[i] = ec->stages.buf[--ec->stages.n];
                ec->stages.bytes -= h.cap;
                break;
            }
        pthread_mutex_unlock(&ec->stages.lock);
    }
    if (p)
        return p;
    p = stage_alloc_pinned(ec, h.cap);
    h.pinned = p != NULL;
    if (!p)
        p = malloc(STAGE_HDR + h.cap);
    if (!p)
        return NULL;
    memcpy(p, &h, sizeof(h));
    return p + STAGE_HDR;
}

void eng_stage_put(void *buf)
{
    char *p = buf;
    uint64_t cap = eng_stage_cap(p);
    struct eng_copy *ec = stage_hdr(p)->owner;

    if (ec) {
        pthread_mutex_lock(&ec->stages.lock);
        if (ec->stages.n < STAGE_KEEP && ec->stages.bytes + cap <= STAGE_KEEP_BYTES) {
            ec->stages.buf[ec->stages.n++] = p;
            ec->stages.bytes += cap;
            p = NULL;
        }
        pthread_mutex_unlock(&ec->stages.lock);
    }
    if (p)
        stage_release(p);
}

void eng_copy_close(struct eng_ctx *eng)
{
    struct eng_copy *ec = eng->copy;

    if (!ec)
        return;
    for (int i = 0; i < ENG_CUDA_MAX_DEVICES; i++)
        if (ec->dev[i].ready)
            scc_pools_destroy(&ec->dev[i].pools);
    while (ec->stages.n)
        stage_release(ec->stages.buf[--ec->stages.n]);
    pthread_mutex_destroy(&ec->stages.lock);
    free(ec);
    eng->copy = NULL;
}

/* ---- the progress thread: staging copies of tasks and of served requests -- */

enum dev_phase { DEV_CB_START, DEV_CB };

struct eng_dev_op {
    struct eng_dev_op *next;
    struct eng_ctx *eng;
    enum dev_phase phase;
    void *tok;
    bool to_device;
    void *stage, *dev;
    uint64_t n;
    int device;
    void (*done)(void *arg, int err);
    void *arg;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct eng_dev_op *head;
    bool started;
} dq = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, false};

/*
 * An op has left the staging queue and everything it did is over: its
 * callback returned (and with it whatever the callback started). Only then
 * may the engine be destroyed (eng_dev_quiesce); eng was read before.
 */
static void dev_op_done(struct eng_ctx *eng)
{
    atomic_fetch_sub(&eng->dev_ops, 1);
}

static void dev_cb_finish(struct eng_dev_op *op, int err)
{
    struct eng_ctx *eng = op->eng;

    if (err)
        eng_err(eng, "cuda:%d copy of %llu bytes %s the device failed: %s", op->device,
                (unsigned long long)op->n, op->to_device ? "to" : "from", strerror(-err));
    op->done(op->arg, err);
    free(op);
    dev_op_done(eng);
}

/*
 * Advance one copy without waiting. Returns true when op is gone (its
 * callback called); *progressed when something moved.
 */
static bool dev_advance(struct eng_dev_op *op, bool *progressed)
{
    int rc;

    if (op->phase == DEV_CB_START) {
        rc = copy_start(op->eng->copy, op->to_device ? SCC_DIR_H2D : SCC_DIR_D2H, op->stage,
                        op->dev, op->n, op->device, eng_stage_pinned(op->stage), &op->tok);
        if (rc == -ENOSPC)
            return false; /* pinned budget in use: retry when a pool comes back */
        *progressed = true;
        if (rc) {
            dev_cb_finish(op, rc);
            return true;
        }
        op->phase = DEV_CB;
        return false;
    }
    rc = copy_poll(op->tok);
    if (rc == -EAGAIN)
        return false;
    *progressed = true;
    dev_cb_finish(op, rc);
    return true;
}

static void *dev_progress(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&dq.lock);
    for (;;) {
        struct eng_dev_op *list, *keep = NULL;
        bool progressed = false;

        while (!dq.head)
            pthread_cond_wait(&dq.cond, &dq.lock);
        list = dq.head;
        dq.head = NULL;
        pthread_mutex_unlock(&dq.lock);
        while (list) {
            struct eng_dev_op *op = list;
            list = op->next;
            if (!dev_advance(op, &progressed)) {
                op->next = keep;
                keep = op;
            }
        }
        if (keep && !progressed) {
            /* the device is busy: poll again shortly, nobody waits on it */
            struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
        }
        pthread_mutex_lock(&dq.lock);
        while (keep) {
            struct eng_dev_op *op = keep;
            keep = op->next;
            op->next = dq.head;
            dq.head = op;
        }
    }
    return NULL;
}

/* Queue op for the progress thread (started on first use): 0 or -EAGAIN. */
static int dev_queue(struct eng_dev_op *op)
{
    atomic_fetch_add(&op->eng->dev_ops, 1);
    pthread_mutex_lock(&dq.lock);
    if (!dq.started) {
        pthread_t th;
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        dq.started = pthread_create(&th, &a, dev_progress, NULL) == 0;
        pthread_attr_destroy(&a);
    }
    if (!dq.started) {
        pthread_mutex_unlock(&dq.lock);
        eng_err(op->eng, "cuda staging: cannot start the progress thread");
        dev_op_done(op->eng);
        return -EAGAIN;
    }
    op->next = dq.head;
    dq.head = op;
    pthread_cond_signal(&dq.cond);
    pthread_mutex_unlock(&dq.lock);
    return 0;
}

int eng_dev_copy(struct eng_ctx *eng, bool to_device, void *stage, void *dev, uint64_t n,
                 int device, void (*done)(void *arg, int err), void *arg)
{
    struct eng_dev_op *op = calloc(1, sizeof(*op));
    int err;

    if (!op)
        return -ENOMEM;
    *op = (struct eng_dev_op){.eng = eng,
                              .phase = DEV_CB_START,
                              .to_device = to_device,
                              .stage = stage,
                              .dev = dev,
                              .n = n,
                              .device = device,
                              .done = done,
                              .arg = arg};
    err = dev_queue(op);
    if (err)
        free(op);
    return err;
}

void eng_dev_quiesce(struct eng_ctx *eng)
{
    while (atomic_load(&eng->dev_ops))
        usleep(100);
}
