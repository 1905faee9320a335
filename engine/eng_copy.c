/*
 * Location strings, the run-time lookup of a CUDA runtime, the copy
 * provider built on the pinned pools of eng_cudacopy.c, and the staging of
 * device-memory tasks around the transports.
 */
#include "eng.h"
#include "eng_copy.h"
#include "eng_cudacopy.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
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
 * polling events, never by waiting. It is process-wide: the first engine
 * that opens it sets its knobs (cuda.bounce_chunk_bytes,
 * cuda.bounce_buffers, cuda.pinned_max_bytes; 2 MiB, 2, 256 MiB by default).
 */
#define ENG_CUDA_MAX_DEVICES 16
#define ENG_CUDA_STREAM_NON_BLOCKING 0x01

struct eng_cuda_dev {
    bool ready;
    struct scc_pools pools;
    struct CUstream_st *stream;
};

static struct {
    struct scc_api api;
    int (*set_device)(int device);
    int (*stream_create)(struct CUstream_st **s, unsigned flags);
    int (*get_last_error)(void);
    struct scc_budget budget;
    size_t chunk;
    unsigned buffers;
    pthread_mutex_t lock;
    struct eng_cuda_dev dev[ENG_CUDA_MAX_DEVICES];
} cu = {.lock = PTHREAD_MUTEX_INITIALIZER};

struct eng_copy_tok {
    struct scc_xfer x;
    struct scc_pool *pool;
    int device;
};

/* The device's stream and pools, made on first use; NULL if the runtime
 * refused (its error cleared: the engine's calls leave no state behind). */
static struct eng_cuda_dev *cuda_dev(int device)
{
    struct eng_cuda_dev *d;

    if (device < 0 || device >= ENG_CUDA_MAX_DEVICES)
        return NULL;
    d = &cu.dev[device];
    pthread_mutex_lock(&cu.lock);
    if (!d->ready) {
        if (cu.set_device(device) == 0 &&
            cu.stream_create(&d->stream, ENG_CUDA_STREAM_NON_BLOCKING) == 0) {
            scc_pools_init(&d->pools, &cu.api, &cu.budget, cu.chunk, cu.buffers);
            d->ready = true;
        } else {
            cu.get_last_error();
        }
    }
    pthread_mutex_unlock(&cu.lock);
    return d->ready ? d : NULL;
}

static void tok_free(struct eng_cuda_dev *d, struct eng_copy_tok *tok)
{
    scc_pools_put(&d->pools, tok->pool);
    free(tok);
}

/* Called from the staging progress thread only: it sets that thread's
 * current device, never an application thread's. */
static int copy_start(enum scc_dir dir, void *host, void *dev, size_t n, int device, void **token)
{
    struct eng_cuda_dev *d = cuda_dev(device);
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

static int copy_to_host(struct eng_copy *c, void *host, const void *dev, size_t n, int device,
                        void **token)
{
    return copy_start(SCC_DIR_D2H, host, (void *)dev, n, device, token);
}

static int copy_to_device(struct eng_copy *c, void *dev, const void *host, size_t n, int device,
                          void **token)
{
    return copy_start(SCC_DIR_H2D, (void *)host, dev, n, device, token);
}

static int copy_poll(struct eng_copy *c, void *token)
{
    struct eng_copy_tok *tok = token;
    struct eng_cuda_dev *d = &cu.dev[tok->device];
    int rc;

    /* later chunks are issued from here: on the transfer's device */
    if (cu.set_device(tok->device)) {
        cu.get_last_error();
        rc = -ENODEV;
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

static void copy_close(struct eng_copy *c)
{
}

/* The provider's functions from the runtime opened; -ENOENT if one lacks. */
static int cuda_resolve(void *h, const char **missing)
{
    void *sd = dlsym(h, "cudaSetDevice"), *sc = dlsym(h, "cudaStreamCreateWithFlags"),
         *gl = dlsym(h, "cudaGetLastError");
    int ret = scc_api_from_handle(&cu.api, h, missing);

    if (ret)
        return ret;
    if (!sd || !sc || !gl) {
        *missing = !sd ? "cudaSetDevice" : !sc ? "cudaStreamCreateWithFlags" : "cudaGetLastError";
        return -ENOENT;
    }
    memcpy(&cu.set_device, &sd, sizeof(sd));
    memcpy(&cu.stream_create, &sc, sizeof(sc));
    memcpy(&cu.get_last_error, &gl, sizeof(gl));
    return 0;
}

static pthread_mutex_t copy_lock = PTHREAD_MUTEX_INITIALIZER;
static struct eng_copy copy_cudart;
static int copy_state; /* 0 untried, 1 loaded, <0 error */

int eng_copy_open(struct teshim_engine *eng, struct eng_copy **c_p)
{
    static const char *const names[] = {"libcudart.so.13", "libcudart.so.12", "libcudart.so"};
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
            copy_cudart.cudart = h;
            cu.chunk = eng->p.cuda_chunk;
            cu.buffers = (unsigned)eng->p.cuda_buffers;
            cu.budget.max = eng->p.cuda_pinned_max;
            copy_cudart.ops = (struct eng_copy_ops){
                .size = sizeof(struct eng_copy_ops),
                .name = names[i],
                .to_host = copy_to_host,
                .to_device = copy_to_device,
                .poll = copy_poll,
                .close = copy_close,
            };
            copy_state = 1;
            break;
        }
    }
    ret = copy_state < 0 ? copy_state : 0;
    pthread_mutex_unlock(&copy_lock);
    if (ret) {
        eng_err(eng, "cuda memory: no CUDA runtime could be loaded (%s): %s", names[0],
                "libcudart.so.13/.12 not found");
        return ret;
    }
    *c_p = &copy_cudart;
    return 0;
}

/* ---- device tasks: staging around the transports ------------------------- */

enum dev_phase { DEV_OUT_START, DEV_OUT, DEV_IN_START, DEV_IN };

struct eng_dev_op {
    struct eng_dev_op *next;
    struct eng_task *t;
    enum dev_phase phase;
    void *tok;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct eng_dev_op *head;
    bool started;
} dq = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, false};

static struct teshim_engine *task_eng(const struct eng_task *t)
{
    return t->seg->tp->eng;
}

/*
 * Host staging buffers are reused, not allocated per transfer: a small cache
 * of power-of-two buffers (at most STAGE_KEEP of them, STAGE_KEEP_BYTES in
 * all). A buffer's capacity is stored just before it.
 */
#define STAGE_KEEP 32
#define STAGE_KEEP_BYTES (256ull << 20)
#define STAGE_HDR 64

static struct {
    pthread_mutex_t lock;
    char *buf[STAGE_KEEP];
    unsigned n;
    uint64_t bytes;
} stages = {.lock = PTHREAD_MUTEX_INITIALIZER};

static uint64_t stage_cap(const char *p)
{
    uint64_t cap;

    memcpy(&cap, p - STAGE_HDR, sizeof(cap));
    return cap;
}

static void *stage_get(uint64_t len)
{
    uint64_t cap = 4096;
    char *p = NULL;

    while (cap < len)
        cap <<= 1;
    pthread_mutex_lock(&stages.lock);
    for (unsigned i = 0; i < stages.n; i++)
        if (stage_cap(stages.buf[i]) == cap) {
            p = stages.buf[i];
            stages.buf[i] = stages.buf[--stages.n];
            stages.bytes -= cap;
            break;
        }
    pthread_mutex_unlock(&stages.lock);
    if (p)
        return p;
    p = malloc(STAGE_HDR + cap);
    if (!p)
        return NULL;
    memcpy(p, &cap, sizeof(cap));
    return p + STAGE_HDR;
}

static void stage_put(char *p)
{
    uint64_t cap = stage_cap(p);

    pthread_mutex_lock(&stages.lock);
    if (stages.n < STAGE_KEEP && stages.bytes + cap <= STAGE_KEEP_BYTES) {
        stages.buf[stages.n++] = p;
        stages.bytes += cap;
        p = NULL;
    }
    pthread_mutex_unlock(&stages.lock);
    if (p)
        free(p - STAGE_HDR);
}

/* Release the staging and give the task back its own address. */
static void dev_unstage(struct eng_task *t)
{
    if (t->stage)
        stage_put(t->stage);
    t->stage = NULL;
    t->local = t->dev_ptr;
}

/*
 * An op has left the staging queue and everything it did is over: the task
 * finished (limiter included) or the transport has it. Only then may the
 * engine be destroyed (eng_dev_quiesce); the task itself may already be
 * freed with its batch, so eng was read before.
 */
static void dev_op_done(struct teshim_engine *eng)
{
    atomic_fetch_sub(&eng->dev_ops, 1);
}

static void dev_fail(struct eng_dev_op *op, int err)
{
    struct eng_task *t = op->t;
    struct teshim_engine *eng = task_eng(t);

    eng_err(eng, "cuda:%d staging copy of %llu bytes failed: %s", t->cuda_dev,
            (unsigned long long)t->len, strerror(-err));
    free(op);
    dev_unstage(t);
    eng_task_finish(t, err);
    dev_op_done(eng);
}

/*
 * Advance one staging step without waiting. Returns true when op is gone
 * (finished or handed to the transport); *progressed when something moved.
 */
static bool dev_advance(struct eng_dev_op *op, bool *progressed)
{
    struct eng_task *t = op->t;
    int rc;

    switch (op->phase) {
    case DEV_OUT_START:
    case DEV_IN_START:
        rc =
            op->phase == DEV_OUT_START
                ? copy_to_host(&copy_cudart, t->stage, t->dev_ptr, t->len, t->cuda_dev, &op->tok)
                : copy_to_device(&copy_cudart, t->dev_ptr, t->stage, t->len, t->cuda_dev, &op->tok);
        if (rc == -ENOSPC)
            return false; /* pinned budget in use: retry when a pool comes back */
        if (rc) {
            dev_fail(op, rc);
            *progressed = true;
            return true;
        }
        op->phase = op->phase == DEV_OUT_START ? DEV_OUT : DEV_IN;
        *progressed = true;
        return false;
    case DEV_OUT:
    case DEV_IN:
        rc = copy_poll(&copy_cudart, op->tok);
        if (rc == -EAGAIN)
            return false;
        *progressed = true;
        if (rc) {
            dev_fail(op, rc);
            return true;
        }
        struct teshim_engine *eng = task_eng(t);
        if (op->phase == DEV_OUT) {
            /* the staging holds the device data: the transport sends it */
            struct eng_transport *tp = t->seg->tp;
            free(op);
            t->local = t->stage;
            tp->ops.start(tp, t);
        } else {
            free(op);
            dev_unstage(t);
            eng_task_finish(t, 0);
        }
        dev_op_done(eng);
        return true;
    }
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

static void dev_enqueue(struct eng_task *t, enum dev_phase phase)
{
    struct eng_dev_op *op = calloc(1, sizeof(*op));

    if (!op) {
        dev_unstage(t);
        eng_task_finish(t, -ENOMEM);
        return;
    }
    op->t = t;
    op->phase = phase;
    atomic_fetch_add(&task_eng(t)->dev_ops, 1);
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
        struct teshim_engine *eng = task_eng(t);
        pthread_mutex_unlock(&dq.lock);
        free(op);
        dev_unstage(t);
        eng_task_finish(t, -EAGAIN);
        dev_op_done(eng);
        return;
    }
    op->next = dq.head;
    dq.head = op;
    pthread_cond_signal(&dq.cond);
    pthread_mutex_unlock(&dq.lock);
}

void eng_dev_task_start(struct teshim_engine *eng, struct eng_task *t)
{
    t->dev_ptr = t->local;
    t->stage = stage_get(t->len);
    if (!t->stage) {
        dev_unstage(t);
        eng_task_finish(t, -ENOMEM);
        return;
    }
    if (t->op == TESHIM_OP_WRITE) {
        dev_enqueue(t, DEV_OUT_START);
        return;
    }
    /* READ: the transport receives into the staging first */
    t->local = t->stage;
    t->seg->tp->ops.start(t->seg->tp, t);
}

bool eng_dev_task_transport_done(struct eng_task *t, int err)
{
    if (t->op == TESHIM_OP_READ && !err) {
        dev_enqueue(t, DEV_IN_START);
        return true;
    }
    dev_unstage(t);
    return false;
}

void eng_dev_quiesce(struct teshim_engine *eng)
{
    while (atomic_load(&eng->dev_ops))
        usleep(100);
}
