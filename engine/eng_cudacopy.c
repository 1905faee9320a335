/* Pinned bounce pool and pipelined copies; see eng_cudacopy.h. */
#include "eng_cudacopy.h"

#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* cudaEventDisableTiming: the events only order, they never time. */
#define SCC_EVENT_DISABLE_TIMING 0x02

int scc_api_from_handle(struct scc_api *api, void *handle, const char **missing)
{
    static const struct {
        const char *name;
        size_t off;
    } fns[] = {
        {"cudaMallocHost", offsetof(struct scc_api, malloc_host)},
        {"cudaFreeHost", offsetof(struct scc_api, free_host)},
        {"cudaMemcpyAsync", offsetof(struct scc_api, memcpy_async)},
        {"cudaEventCreateWithFlags", offsetof(struct scc_api, event_create_with_flags)},
        {"cudaEventDestroy", offsetof(struct scc_api, event_destroy)},
        {"cudaEventRecord", offsetof(struct scc_api, event_record)},
        {"cudaEventQuery", offsetof(struct scc_api, event_query)},
        {"cudaEventSynchronize", offsetof(struct scc_api, event_synchronize)},
    };

    for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
        void *p = dlsym(handle, fns[i].name);
        if (!p) {
            if (missing)
                *missing = fns[i].name;
            return -ENOENT;
        }
        /* Every member is a function pointer: store the address as one. */
        memcpy((char *)api + fns[i].off, &p, sizeof(p));
    }
    void *p2d = dlsym(handle, "cudaMemcpy2DAsync");
    memcpy(&api->memcpy2d_async, &p2d, sizeof(p2d));
    return 0;
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
    for (i = 0; i < nbuf; i++) {
        err = api->malloc_host(&pool->buf[i].p, chunk);
        if (err) {
            pool->buf[i].p = NULL;
            goto err_free;
        }
        err = api->event_create_with_flags(&pool->buf[i].ev, SCC_EVENT_DISABLE_TIMING);
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
        if (pool->buf[i].busy)
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
    pthread_mutex_init(&ps->lock, NULL);
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

/* Move chunk k between host memory and buffer p (to_buf: host -> p). */
static void host_move(const struct scc_xfer *x, size_t k, char *p, bool to_buf)
{
    size_t hoff, doff, len, nrows;

    chunk_at(x, k, &hoff, &doff, &len, &nrows);
    if (!nrows || x->hpitch == x->width) {
        if (to_buf)
            memcpy(p, x->host + hoff, len);
        else
            memcpy(x->host + hoff, p, len);
        return;
    }
    for (size_t r = 0; r < nrows; r++) {
        if (to_buf)
            memcpy(p + r * x->width, x->host + hoff + r * x->hpitch, x->width);
        else
            memcpy(x->host + hoff + r * x->hpitch, p + r * x->width, x->width);
    }
}

/* Wait (or check) for b's last copy: 0, SCC_ERR_NOT_READY or an error. */
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

/* Issue the device-side copy of chunk k through buffer b. */
static int issue(struct scc_xfer *x, struct scc_buf *b, size_t k)
{
    const struct scc_api *api = x->pool->api;
    size_t hoff, doff, len, nrows, w = x->width;
    int err;

    chunk_at(x, k, &hoff, &doff, &len, &nrows);
    if (x->dir == SCC_DIR_H2D) {
        host_move(x, k, b->p, true);
        if (nrows)
            err = api->memcpy2d_async(x->dev + doff, x->dpitch, b->p, w, w, nrows, SCC_H2D,
                                      x->stream);
        else
            err = api->memcpy_async(x->dev + doff, b->p, len, SCC_H2D, x->stream);
    } else if (nrows) {
        err = api->memcpy2d_async(b->p, w, x->dev + doff, x->dpitch, w, nrows, SCC_D2H, x->stream);
    } else {
        err = api->memcpy_async(b->p, x->dev + doff, len, SCC_D2H, x->stream);
    }
    if (!err)
        err = api->event_record(b->ev, x->stream);
    if (!err)
        b->busy = true;
    return err;
}

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
        /* Move the oldest chunk out while the device copies the next. */
        struct scc_buf *b = &pool->buf[x->drained % pool->nbuf];
        err = buf_wait(pool, b, block);
        if (err)
            return err;
        host_move(x, x->drained, b->p, false);
        x->drained++;
    }
    return 0;
}

static int poll_h2d(struct scc_xfer *x, bool block)
{
    struct scc_pool *pool = x->pool;
    int err;

    /* Chunk mode: the caller fills and issues; here only completion. */
    while (x->host && x->issued < x->nchunks) {
        struct scc_buf *b = &pool->buf[x->issued % pool->nbuf];
        /* The buffer's previous copy must have read it before it is refilled. */
        err = buf_wait(pool, b, block);
        if (err)
            return err;
        err = issue(x, b, x->issued);
        if (err)
            return err;
        x->issued++;
    }
    if (x->issued < x->nchunks)
        return SCC_ERR_NOT_READY; /* chunk mode: chunks still to come */
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
    if (x->issued == 0 && x->drained == 0)
        for (unsigned i = 0; i < x->pool->nbuf; i++) {
            rc = buf_wait(x->pool, &x->pool->buf[i], block);
            if (rc == SCC_ERR_NOT_READY)
                return SCC_PENDING;
            if (rc) {
                x->err = rc;
                return rc;
            }
        }
    rc = x->dir == SCC_DIR_D2H ? poll_d2h(x, block) : poll_h2d(x, block);
    if (rc == SCC_ERR_NOT_READY)
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
    if (err == SCC_ERR_NOT_READY)
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
    err = api->memcpy_async(x->dev + off, b->p, chunk_len(x, x->issued), SCC_H2D, x->stream);
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
