/* Pinned bounce pool and pipelined copies; see teshim/cudacopy.h. */
#include "teshim/cudacopy.h"

#include <dlfcn.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int scc_syms_from_handle(void *table, const struct scc_sym *syms, size_t n, void *handle,
                         const char **missing)
{
    for (size_t i = 0; i < n; i++) {
        void *p = dlsym(handle, syms[i].name);
        if (!p && syms[i].need) {
            if (missing)
                *missing = syms[i].name;
            return -ENOENT;
        }
        /* Every member is a function pointer: store the address as one. */
        memcpy((char *)table + syms[i].off, &p, sizeof(p));
    }
    return 0;
}

int scc_api_from_handle(struct scc_api *api, void *handle, const char **missing)
{
    static const struct scc_sym syms[] = {
#define CUDART(in_scc, in_shim, in_eng, need, field, name, params)                                 \
    CUDART_IF_##in_scc({#name, offsetof(struct scc_api, field), need}, )
#include "teshim/cudart.def"
#undef CUDART
    };

    return scc_syms_from_handle(api, syms, sizeof(syms) / sizeof(syms[0]), handle, missing);
}

bool scc_budget_take(struct scc_budget *b, size_t n)
{
    size_t used = atomic_load_explicit(&b->used, memory_order_relaxed);

    do {
        if (n > b->max || used > b->max - n)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(&b->used, &used, used + n, memory_order_relaxed,
                                                    memory_order_relaxed));
    return true;
}

void scc_budget_give(struct scc_budget *b, size_t n)
{
    atomic_fetch_sub_explicit(&b->used, n, memory_order_relaxed);
}

/* ---- the process-wide copy threads ---------------------------------------- */

/*
 * Jobs with pieces nobody claimed yet wait in one FIFO, oldest chunk first,
 * so the chunk whose device-side copy is issued next is finished first.
 * Claims and the last piece's completion happen under the lock; a job is
 * out of the queue once its last piece was claimed, so its owner may reuse
 * it as soon as `left` reads 0, and no thread touches a job after its own
 * decrement of `left`.
 */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t work; /* a job was queued, or stop */
    pthread_cond_t done; /* a queued job finished */
    struct scc_job *head, *tail;
    pthread_t tid[SCC_THREADS_MAX];
    unsigned n;      /* threads running */
    bool stopping;   /* the image is going away: no new thread, threads leave */
    time_t retry_at; /* a creation failed: not before then again */
} cw = {.lock = PTHREAD_MUTEX_INITIALIZER,
        .work = PTHREAD_COND_INITIALIZER,
        .done = PTHREAD_COND_INITIALIZER};

static pthread_once_t cw_once = PTHREAD_ONCE_INIT;

int (*scc_thread_create)(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *),
                         void *arg) = pthread_create;

/* Threads do not survive fork: the child starts with none and an empty
 * queue (a parent's thread may have held the lock), and makes its own. */
static void cw_atfork_child(void)
{
    pthread_mutex_init(&cw.lock, NULL);
    pthread_cond_init(&cw.work, NULL);
    pthread_cond_init(&cw.done, NULL);
    cw.head = cw.tail = NULL;
    cw.n = 0;
    cw.stopping = false;
    cw.retry_at = 0;
}

static void cw_init_once(void)
{
    pthread_atfork(NULL, NULL, cw_atfork_child);
}

/*
 * At exit, or when the library holding this code is unloaded (dlclose of
 * the engine), the threads must be gone before the code is: ask them to
 * leave and join them. A thread finishes the piece it holds first; pieces
 * still queued are finished by their owners, which never rely on a thread.
 */
__attribute__((destructor)) static void cw_stop(void)
{
    unsigned n;

    pthread_mutex_lock(&cw.lock);
    cw.stopping = true;
    n = cw.n;
    pthread_cond_broadcast(&cw.work);
    pthread_mutex_unlock(&cw.lock);
    for (unsigned i = 0; i < n; i++)
        pthread_join(cw.tid[i], NULL);
    pthread_mutex_lock(&cw.lock);
    cw.n = 0;
    pthread_mutex_unlock(&cw.lock);
}

unsigned scc_threads_running(void)
{
    unsigned n;

    pthread_mutex_lock(&cw.lock);
    n = cw.n;
    pthread_mutex_unlock(&cw.lock);
    return n;
}

unsigned scc_threads_auto(void)
{
    cpu_set_t set;
    int n = 1;

    if (!sched_getaffinity(0, sizeof(set), &set) && CPU_COUNT(&set) > 0)
        n = CPU_COUNT(&set);
    return n > SCC_THREADS_AUTO_MAX ? SCC_THREADS_AUTO_MAX : (unsigned)n;
}

/* Run piece i of j. */
static void piece_run(const struct scc_job *j, size_t i)
{
    if (j->rows == 1) {
        size_t off = i * j->per, n = j->width - off < j->per ? j->width - off : j->per;
        if (j->to_buf)
            memcpy(j->buf + off, j->host + off, n);
        else
            memcpy(j->host + off, j->buf + off, n);
        return;
    }
    size_t r1 = (i + 1) * j->per < j->rows ? (i + 1) * j->per : j->rows;
    for (size_t r = i * j->per; r < r1; r++) {
        if (j->to_buf)
            memcpy(j->buf + r * j->width, j->host + r * j->hpitch, j->width);
        else
            memcpy(j->host + r * j->hpitch, j->buf + r * j->width, j->width);
    }
}

/* Take piece *i of a queued job (cw.lock held); false when none is left. */
static bool queue_claim(struct scc_job *j, size_t *i)
{
    if (j->next == j->npieces)
        return false;
    *i = j->next++;
    if (j->next < j->npieces)
        return true;
    /* Its last piece: out of the queue. */
    struct scc_job **pp = &cw.head, *prev = NULL;
    while (*pp != j) {
        prev = *pp;
        pp = &(*pp)->qnext;
    }
    *pp = j->qnext;
    if (cw.tail == j)
        cw.tail = prev;
    j->qnext = NULL;
    return true;
}

/* A piece of a queued job finished (cw.lock held). */
static void queue_piece_done(struct scc_job *j)
{
    if (atomic_fetch_sub_explicit(&j->left, 1, memory_order_acq_rel) == 1)
        pthread_cond_broadcast(&cw.done);
}

static void *cw_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&cw.lock);
    for (;;) {
        size_t i = 0;
        while (!cw.head && !cw.stopping)
            pthread_cond_wait(&cw.work, &cw.lock);
        if (cw.stopping)
            break;
        /* A queued job always has a piece left: its last claim dequeues it. */
        struct scc_job *j = cw.head;
        (void)queue_claim(j, &i);
        pthread_mutex_unlock(&cw.lock);
        piece_run(j, i);
        pthread_mutex_lock(&cw.lock);
        queue_piece_done(j);
    }
    pthread_mutex_unlock(&cw.lock);
    return NULL;
}

/*
 * Grow the pool to `want` threads (cw.lock held). A thread that cannot be
 * made is not retried for a second: the owners copy on without it. The
 * threads block every signal, so the application's handlers never run on
 * them.
 */
static void cw_grow(unsigned want)
{
    struct timespec now;
    pthread_attr_t attr;
    sigset_t all, old;

    if (want > SCC_THREADS_MAX - 1)
        want = SCC_THREADS_MAX - 1;
    if (cw.n >= want || cw.stopping)
        return;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (cw.retry_at && now.tv_sec < cw.retry_at)
        return;
    cw.retry_at = 0;
    if (pthread_attr_init(&attr))
        return;
    /* memcpy needs little stack; keep the threads' footprint small */
    pthread_attr_setstacksize(&attr, 256u << 10);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    while (cw.n < want) {
        if (scc_thread_create(&cw.tid[cw.n], &attr, cw_main, NULL)) {
            cw.retry_at = now.tv_sec + 1;
            break;
        }
        cw.n++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
}

/* Do one unclaimed piece of j: false when none was left to claim. */
static bool job_help(struct scc_job *j)
{
    size_t i;

    if (!j->queued) {
        if (j->next == j->npieces)
            return false;
        i = j->next++;
        piece_run(j, i);
        atomic_fetch_sub_explicit(&j->left, 1, memory_order_release);
        return true;
    }
    pthread_mutex_lock(&cw.lock);
    bool got = queue_claim(j, &i);
    pthread_mutex_unlock(&cw.lock);
    if (!got)
        return false;
    piece_run(j, i);
    pthread_mutex_lock(&cw.lock);
    queue_piece_done(j);
    pthread_mutex_unlock(&cw.lock);
    return true;
}

static bool job_done(const struct scc_job *j)
{
    return atomic_load_explicit(&j->left, memory_order_acquire) == 0;
}

/*
 * Finish j: do its unclaimed pieces, then wait for those the threads hold.
 * Not a cancellation point: a thread cancelled in the wait would leave
 * holding cw.lock and stop every copy in the process.
 */
static void job_wait(struct scc_job *j)
{
    int cs;

    while (job_help(j))
        ;
    if (job_done(j))
        return;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cs);
    pthread_mutex_lock(&cw.lock);
    while (!job_done(j))
        pthread_cond_wait(&cw.done, &cw.lock);
    pthread_mutex_unlock(&cw.lock);
    pthread_setcancelstate(cs, NULL);
}

void scc_pool_set_threads(struct scc_pool *pool, unsigned threads, size_t min_piece)
{
    if (threads == 0)
        threads = scc_threads_auto();
    pool->threads = threads > SCC_THREADS_MAX ? SCC_THREADS_MAX : threads;
    pool->min_piece = min_piece ? min_piece : SCC_MIN_PIECE;
}

static void free_buffers(struct scc_pool *pool, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        if (pool->buf[i].ev)
            pool->api->event_destroy(pool->buf[i].ev);
        if (pool->buf[i].p)
            pool->api->free_host(pool->buf[i].p);
        pool->buf[i] = (struct scc_buf){0};
    }
}

int scc_pool_init(struct scc_pool *pool, const struct scc_api *api, struct scc_budget *budget,
                  size_t chunk, unsigned nbuf)
{
    unsigned i;
    int err = 0;

    memset(pool, 0, sizeof(*pool));
    if (nbuf < 2 || nbuf > SCC_MAX_BUFFERS || chunk == 0)
        return -EINVAL;
    if (!scc_budget_take(budget, chunk * nbuf))
        return -ENOSPC;
    pool->api = api;
    pool->budget = budget;
    pool->chunk = chunk;
    pool->nbuf = nbuf;
    scc_pool_set_threads(pool, 1, 0);
    for (i = 0; i < nbuf; i++) {
        err = api->malloc_host(&pool->buf[i].p, chunk);
        if (err) {
            pool->buf[i].p = NULL;
            goto err_free;
        }
        err = api->event_create_with_flags(&pool->buf[i].ev, CUABI_EVENT_DISABLE_TIMING);
        if (err) {
            pool->buf[i].ev = NULL;
            i++;
            goto err_free;
        }
    }
    return 0;

err_free:
    free_buffers(pool, i);
    scc_budget_give(budget, chunk * nbuf);
    pool->nbuf = 0;
    return err;
}

int scc_pool_drain(struct scc_pool *pool)
{
    int first = 0;

    for (unsigned i = 0; i < pool->nbuf; i++) {
        /* A transfer left on an error may have host copies going. */
        job_wait(&pool->buf[i].job);
        if (!pool->buf[i].busy)
            continue;
        int err = pool->api->event_synchronize(pool->buf[i].ev);
        if (err && !first)
            first = err;
        pool->buf[i].busy = false;
    }
    return first;
}

bool scc_pool_idle(const struct scc_pool *pool)
{
    for (unsigned i = 0; i < pool->nbuf; i++)
        if (pool->buf[i].busy || !job_done(&pool->buf[i].job))
            return false;
    return true;
}

void scc_pool_destroy(struct scc_pool *pool)
{
    if (!pool->nbuf)
        return;
    scc_pool_drain(pool);
    free_buffers(pool, pool->nbuf);
    scc_budget_give(pool->budget, pool->chunk * pool->nbuf);
    pool->nbuf = 0;
}

void scc_pool_forget(struct scc_pool *pool)
{
    memset(pool, 0, sizeof(*pool));
}

struct scc_pool_node {
    struct scc_pool pool; /* first: a pool pointer is its node */
    struct scc_pool_node *next;
};

void scc_pools_init(struct scc_pools *ps, const struct scc_api *api, struct scc_budget *budget,
                    size_t chunk, unsigned nbuf)
{
    memset(ps, 0, sizeof(*ps));
    ps->api = api;
    ps->budget = budget;
    ps->chunk = chunk;
    ps->nbuf = nbuf;
    ps->threads = 1;
    ps->min_piece = 0;
    pthread_mutex_init(&ps->lock, NULL);
}

void scc_pools_set_threads(struct scc_pools *ps, unsigned threads, size_t min_piece)
{
    pthread_mutex_lock(&ps->lock);
    ps->threads = threads;
    ps->min_piece = min_piece;
    pthread_mutex_unlock(&ps->lock);
}

struct scc_pool *scc_pools_get(struct scc_pools *ps, int *err)
{
    struct scc_pool_node *n;

    pthread_mutex_lock(&ps->lock);
    n = ps->free;
    if (n)
        ps->free = n->next;
    pthread_mutex_unlock(&ps->lock);
    if (n)
        return &n->pool;
    n = calloc(1, sizeof(*n));
    if (!n) {
        *err = -ENOMEM;
        return NULL;
    }
    *err = scc_pool_init(&n->pool, ps->api, ps->budget, ps->chunk, ps->nbuf);
    if (*err) {
        free(n);
        return NULL;
    }
    pthread_mutex_lock(&ps->lock);
    scc_pool_set_threads(&n->pool, ps->threads, ps->min_piece);
    pthread_mutex_unlock(&ps->lock);
    return &n->pool;
}

void scc_pools_put(struct scc_pools *ps, struct scc_pool *pool)
{
    struct scc_pool_node *n = (struct scc_pool_node *)pool;

    pthread_mutex_lock(&ps->lock);
    n->next = ps->free;
    ps->free = n;
    pthread_mutex_unlock(&ps->lock);
}

void scc_pools_destroy(struct scc_pools *ps)
{
    while (ps->free) {
        struct scc_pool_node *n = ps->free;
        ps->free = n->next;
        scc_pool_destroy(&n->pool);
        free(n);
    }
    pthread_mutex_destroy(&ps->lock);
}

void scc_xfer_start(struct scc_xfer *x, struct scc_pool *pool, enum scc_dir dir, void *host,
                    void *dev, size_t n, struct CUstream_st *stream, enum scc_wait wait)
{
    memset(x, 0, sizeof(*x));
    x->pool = pool;
    x->dir = dir;
    x->host = host;
    x->dev = dev;
    x->n = n;
    x->stream = stream;
    x->wait = dir == SCC_DIR_D2H ? SCC_WAIT_ALL : wait;
    x->nchunks = (n + pool->chunk - 1) / pool->chunk;
}

int scc_xfer_start_2d(struct scc_xfer *x, struct scc_pool *pool, enum scc_dir dir, void *host,
                      size_t hpitch, void *dev, size_t dpitch, size_t width, size_t height,
                      struct CUstream_st *stream, enum scc_wait wait)
{
    size_t n, span;

    if (!host || !width || !height || width > hpitch || width > dpitch ||
        __builtin_mul_overflow(width, height, &n) ||
        __builtin_mul_overflow(height - 1, hpitch > dpitch ? hpitch : dpitch, &span) ||
        __builtin_add_overflow(span, width, &span) ||
        (width <= pool->chunk && !pool->api->memcpy2d_async))
        return -EINVAL;
    scc_xfer_start(x, pool, dir, host, dev, n, stream, wait);
    x->width = width;
    x->hpitch = hpitch;
    x->dpitch = dpitch;
    if (width <= pool->chunk) {
        x->rows = pool->chunk / width;
        x->nchunks = (height + x->rows - 1) / x->rows;
    } else {
        x->per_row = (width + pool->chunk - 1) / pool->chunk;
        x->nchunks = height * x->per_row;
    }
    return 0;
}

/*
 * Where chunk k lies: *hoff and *doff from the host and device starts, *len
 * bytes in the pinned buffer, *nrows rows of x->width bytes when they are
 * rows (strided on both sides), 0 when the chunk is contiguous on both.
 */
static void chunk_at(const struct scc_xfer *x, size_t k, size_t *hoff, size_t *doff, size_t *len,
                     size_t *nrows)
{
    size_t c = x->pool->chunk;

    if (x->rows) {
        size_t r0 = k * x->rows;
        *nrows = x->n / x->width - r0 < x->rows ? x->n / x->width - r0 : x->rows;
        *hoff = r0 * x->hpitch;
        *doff = r0 * x->dpitch;
        *len = *nrows * x->width;
    } else if (x->per_row) {
        size_t row = k / x->per_row, off = (k % x->per_row) * c;
        *nrows = 0;
        *hoff = row * x->hpitch + off;
        *doff = row * x->dpitch + off;
        *len = x->width - off < c ? x->width - off : c;
    } else {
        *nrows = 0;
        *hoff = *doff = k * c;
        *len = x->n - *hoff < c ? x->n - *hoff : c;
    }
}

/* Make b's job the memcpy of chunk k of x, and offer its pieces to the
 * copy threads when there is more than one. */
static void job_start(struct scc_xfer *x, struct scc_buf *b, size_t k, bool to_buf)
{
    const struct scc_pool *pool = x->pool;
    struct scc_job *j = &b->job;
    size_t hoff, doff, len, nrows, t = pool->threads;

    chunk_at(x, k, &hoff, &doff, &len, &nrows);
    j->host = x->host + hoff;
    j->buf = b->p;
    j->to_buf = to_buf;
    j->next = 0;
    if (nrows <= 1 || x->hpitch == x->width) {
        /* Contiguous on the host side: cut at cache-line multiples. */
        size_t per = (len + t - 1) / t;
        per = per < pool->min_piece ? pool->min_piece : (per + 63) & ~(size_t)63;
        j->rows = 1;
        j->width = j->hpitch = len;
        j->per = per;
        j->npieces = (len + per - 1) / per;
    } else {
        size_t per = (nrows + t - 1) / t, min_rows = (pool->min_piece + x->width - 1) / x->width;
        j->rows = nrows;
        j->width = x->width;
        j->hpitch = x->hpitch;
        j->per = per < min_rows ? min_rows : per;
        j->npieces = (nrows + j->per - 1) / j->per;
    }
    /* Queued even when it is one piece: the threads then stage other
     * chunks while the owner does this one. */
    j->queued = t > 1;
    atomic_store_explicit(&j->left, j->npieces, memory_order_relaxed);
    if (!j->queued)
        return; /* the owner copies it when it gets there */
    pthread_once(&cw_once, cw_init_once);
    pthread_mutex_lock(&cw.lock);
    cw_grow((unsigned)t - 1);
    j->qnext = NULL;
    if (cw.tail)
        cw.tail->qnext = j;
    else
        cw.head = j;
    cw.tail = j;
    for (size_t i = 0; i < j->npieces && i < cw.n; i++)
        pthread_cond_signal(&cw.work);
    pthread_mutex_unlock(&cw.lock);
}

/* Do one unclaimed piece of the oldest of x's host copies under way
 * (chunks first..last): false when there is none. */
static bool xfer_help(struct scc_xfer *x, size_t first, size_t last)
{
    for (size_t k = first; k < last; k++)
        if (job_help(&x->pool->buf[k % x->pool->nbuf].job))
            return true;
    return false;
}

/* Wait (or check) for b's last copy: 0, CUABI_ERROR_NOT_READY or an error. */
static int buf_wait(struct scc_pool *pool, struct scc_buf *b, bool block)
{
    int err;

    if (!b->busy)
        return 0;
    err = block ? pool->api->event_synchronize(b->ev) : pool->api->event_query(b->ev);
    if (err == 0)
        b->busy = false;
    return err;
}

/* Issue the device-side copy of chunk k through buffer b (H2D: b holds it). */
static int issue(struct scc_xfer *x, struct scc_buf *b, size_t k)
{
    const struct scc_api *api = x->pool->api;
    size_t hoff, doff, len, nrows, w = x->width;
    int err;

    chunk_at(x, k, &hoff, &doff, &len, &nrows);
    if (x->dir == SCC_DIR_H2D) {
        if (nrows)
            err = api->memcpy2d_async(x->dev + doff, x->dpitch, b->p, w, w, nrows, CUABI_MEMCPY_H2D,
                                      x->stream);
        else
            err = api->memcpy_async(x->dev + doff, b->p, len, CUABI_MEMCPY_H2D, x->stream);
    } else if (nrows) {
        err = api->memcpy2d_async(b->p, w, x->dev + doff, x->dpitch, w, nrows, CUABI_MEMCPY_D2H,
                                  x->stream);
    } else {
        err = api->memcpy_async(b->p, x->dev + doff, len, CUABI_MEMCPY_D2H, x->stream);
    }
    if (!err)
        err = api->event_record(b->ev, x->stream);
    if (!err)
        b->busy = true;
    return err;
}

/* Start the host copies of chunks x->staged .. limit - 1 whose buffers'
 * device-side copies completed, in order, without waiting: 0 or a runtime
 * error. */
static int stage_ready(struct scc_xfer *x, size_t limit, bool to_buf)
{
    while (x->staged < limit) {
        struct scc_buf *b = &x->pool->buf[x->staged % x->pool->nbuf];
        int err = buf_wait(x->pool, b, false);
        if (err == CUABI_ERROR_NOT_READY)
            return 0;
        if (err)
            return err;
        job_start(x, b, x->staged, to_buf);
        x->staged++;
    }
    return 0;
}

/*
 * Device to host. Chunks are issued in order into free buffers; a chunk
 * that arrived is moved out by a host job while later ones are copied; its
 * buffer is free again once the job finished. The caller helps with the
 * jobs and waits only when there is nothing to help with.
 */
static int poll_d2h(struct scc_xfer *x, bool block)
{
    struct scc_pool *pool = x->pool;
    int err;

    while (x->drained < x->nchunks) {
        /* Keep every free buffer busy with the next chunks. */
        while (x->issued < x->nchunks && x->issued - x->drained < pool->nbuf) {
            err = issue(x, &pool->buf[x->issued % pool->nbuf], x->issued);
            if (err)
                return err;
            x->issued++;
        }
        /* Chunks that arrived are moved out, in order. */
        err = stage_ready(x, x->issued, false);
        if (err)
            return err;
        /* Moved chunks free their buffers for the next ones. */
        size_t before = x->drained;
        while (x->drained < x->staged && job_done(&pool->buf[x->drained % pool->nbuf].job))
            x->drained++;
        if (x->drained != before || xfer_help(x, x->drained, x->staged))
            continue;
        if (!block)
            return CUABI_ERROR_NOT_READY;
        if (x->drained < x->staged) {
            job_wait(&pool->buf[x->drained % pool->nbuf].job);
        } else {
            err = buf_wait(pool, &pool->buf[x->staged % pool->nbuf], true);
            if (err)
                return err;
        }
    }
    return 0;
}

/*
 * Host to device. Each buffer whose previous copy completed takes the next
 * chunk's host job at once, so several chunks are staged in parallel; the
 * device-side copies are issued strictly in chunk order, each as soon as
 * its chunk is staged.
 */
static int poll_h2d(struct scc_xfer *x, bool block)
{
    struct scc_pool *pool = x->pool;
    int err;

    /* Chunk mode: the caller fills and issues; here only completion. */
    while (x->host && x->issued < x->nchunks) {
        /* A buffer's previous copy must have read it before it is refilled. */
        size_t ahead = x->issued + pool->nbuf;
        err = stage_ready(x, ahead < x->nchunks ? ahead : x->nchunks, true);
        if (err)
            return err;
        struct scc_buf *b = &pool->buf[x->issued % pool->nbuf];
        if (x->staged == x->issued) {
            /* The next chunk's buffer is still read by the device. */
            if (!block)
                return CUABI_ERROR_NOT_READY;
            err = buf_wait(pool, b, true);
            if (err)
                return err;
            continue;
        }
        if (!job_done(&b->job)) {
            if (xfer_help(x, x->issued, x->staged))
                continue;
            if (!block)
                return CUABI_ERROR_NOT_READY;
            job_wait(&b->job);
        }
        err = issue(x, b, x->issued);
        if (err)
            return err;
        x->issued++;
    }
    if (x->issued < x->nchunks)
        return CUABI_ERROR_NOT_READY; /* chunk mode: chunks still to come */
    if (x->wait == SCC_WAIT_ALL)
        for (unsigned i = 0; i < pool->nbuf; i++) {
            err = buf_wait(pool, &pool->buf[i], block);
            if (err)
                return err;
        }
    /* Chunk 0 went into buffer 0; with more chunks than buffers it was
     * already waited for when buffer 0 was refilled. */
    if (x->wait == SCC_WAIT_STREAM && x->nchunks && x->nchunks <= pool->nbuf) {
        err = buf_wait(pool, &pool->buf[0], block);
        if (err)
            return err;
    }
    return 0;
}

int scc_xfer_poll(struct scc_xfer *x, bool block)
{
    int rc;

    if (x->err)
        return x->err;
    if (x->done)
        return 0;
    /* Chunk mode, device to host: done when the caller took every chunk. */
    if (!x->host && x->dir == SCC_DIR_D2H)
        return x->drained == x->nchunks ? 0 : SCC_PENDING;
    /* Buffers still read by an earlier asynchronous transfer (maybe on
     * another stream) are waited for before this one writes into them. */
    if (x->issued == 0 && x->staged == 0 && x->drained == 0)
        for (unsigned i = 0; i < x->pool->nbuf; i++) {
            rc = buf_wait(x->pool, &x->pool->buf[i], block);
            if (rc == CUABI_ERROR_NOT_READY)
                return SCC_PENDING;
            if (rc) {
                x->err = rc;
                return rc;
            }
        }
    rc = x->dir == SCC_DIR_D2H ? poll_d2h(x, block) : poll_h2d(x, block);
    if (rc == CUABI_ERROR_NOT_READY)
        return SCC_PENDING;
    if (rc)
        x->err = rc;
    else
        x->done = true;
    return rc;
}

int scc_xfer_run(struct scc_xfer *x)
{
    return scc_xfer_poll(x, true);
}

static size_t chunk_len(const struct scc_xfer *x, size_t k)
{
    size_t off = k * x->pool->chunk;

    return x->n - off < x->pool->chunk ? x->n - off : x->pool->chunk;
}

int scc_xfer_next_chunk(struct scc_xfer *x, bool block, void **data, size_t *len)
{
    struct scc_pool *pool = x->pool;
    struct scc_buf *b;
    int err;

    if (x->err)
        return x->err;
    if (x->dir == SCC_DIR_D2H) {
        if (x->drained == x->nchunks)
            return SCC_END;
        /* Keep the device ahead of the caller by up to every free buffer. */
        if (x->issued == 0) {
            for (unsigned i = 0; i < pool->nbuf; i++) {
                err = buf_wait(pool, &pool->buf[i], block);
                if (err)
                    goto out;
            }
        }
        while (x->issued < x->nchunks && x->issued - x->drained < pool->nbuf) {
            err = issue(x, &pool->buf[x->issued % pool->nbuf], x->issued);
            if (err)
                goto out;
            x->issued++;
        }
        b = &pool->buf[x->drained % pool->nbuf];
        err = buf_wait(pool, b, block);
        if (err)
            goto out;
        *data = b->p;
        *len = chunk_len(x, x->drained);
        return 0;
    }
    if (x->issued == x->nchunks)
        return SCC_END;
    b = &pool->buf[x->issued % pool->nbuf];
    /* Its previous copy to the device must have read it. */
    err = buf_wait(pool, b, block);
    if (err)
        goto out;
    *data = b->p;
    *len = chunk_len(x, x->issued);
    return 0;
out:
    if (err == CUABI_ERROR_NOT_READY)
        return SCC_PENDING;
    x->err = err;
    return err;
}

int scc_xfer_chunk_done(struct scc_xfer *x)
{
    const struct scc_api *api = x->pool->api;
    struct scc_buf *b;
    size_t off;
    int err;

    if (x->err)
        return x->err;
    if (x->dir == SCC_DIR_D2H) {
        x->drained++;
        return 0;
    }
    b = &x->pool->buf[x->issued % x->pool->nbuf];
    off = x->issued * x->pool->chunk;
    err =
        api->memcpy_async(x->dev + off, b->p, chunk_len(x, x->issued), CUABI_MEMCPY_H2D, x->stream);
    if (!err)
        err = api->event_record(b->ev, x->stream);
    if (err) {
        x->err = err;
        return err;
    }
    b->busy = true;
    x->issued++;
    return 0;
}
