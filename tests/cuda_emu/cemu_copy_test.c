/*
 * The pinned bounce pool and pipelined copy component (engine/eng_cudacopy.c)
 * driven directly against the emulated runtime, as the engine would use it:
 * data at every size shape, non-blocking progress with event polling while
 * a stream is held, the budget, allocation failure at each buffer (every
 * cleanup path) and error propagation.
 */
#include <check.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cemu_test.h"
#include "eng_cudacopy.h"

/* The runtime's functions through the component's table: the casts only
 * turn enum and handle types into the ABI-identical ones the table names. */
static int t_malloc_host(void **p, size_t n)
{
    return cudaMallocHost(p, n);
}
static int t_free_host(void *p)
{
    return cudaFreeHost(p);
}
static int t_memcpy_async(void *d, const void *s, size_t n, int kind, struct CUstream_st *st)
{
    return cudaMemcpyAsync(d, s, n, (enum cudaMemcpyKind)kind, st);
}
static int t_event_create(struct CUevent_st **e, unsigned flags)
{
    return cudaEventCreateWithFlags(e, flags);
}
static int t_event_destroy(struct CUevent_st *e)
{
    return cudaEventDestroy(e);
}
static int t_event_record(struct CUevent_st *e, struct CUstream_st *s)
{
    return cudaEventRecord(e, s);
}
static int t_event_query(struct CUevent_st *e)
{
    return cudaEventQuery(e);
}
static int t_event_sync(struct CUevent_st *e)
{
    return cudaEventSynchronize(e);
}

static int t_memcpy2d_async(void *d, size_t dp, const void *s, size_t sp, size_t w, size_t h,
                            int kind, struct CUstream_st *st)
{
    return cudaMemcpy2DAsync(d, dp, s, sp, w, h, (enum cudaMemcpyKind)kind, st);
}

static const struct scc_api api = {.malloc_host = t_malloc_host,
                                   .free_host = t_free_host,
                                   .memcpy_async = t_memcpy_async,
                                   .event_create_with_flags = t_event_create,
                                   .event_destroy = t_event_destroy,
                                   .event_record = t_event_record,
                                   .event_query = t_event_query,
                                   .event_synchronize = t_event_sync,
                                   .memcpy2d_async = t_memcpy2d_async};

#define CHUNK (64 * 1024)

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * 7 + seed);
}

START_TEST(data_at_every_shape)
{
    static const size_t sizes[] = {1,         4095,           CHUNK - 1, CHUNK,
                                   CHUNK + 1, 3 * CHUNK + 17, 40 * CHUNK};
    struct scc_budget b = {.max = 1 << 20};
    struct scc_pool pool;
    struct scc_xfer x;
    void *dev;
    unsigned char *src = malloc(40 * CHUNK + 64), *dst = malloc(40 * CHUNK + 64);

    ck_assert_int_eq(scc_pool_init(&pool, &api, &b, CHUNK, 3), 0);
    ck_assert_uint_eq(b.used, 3 * CHUNK);
    ck_assert_int_eq(cudaMalloc(&dev, 40 * CHUNK + 64), cudaSuccess);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t n = sizes[i];
        fill(src, n, (unsigned)i);
        scc_xfer_start(&x, &pool, SCC_DIR_H2D, src + 1, (char *)dev + 3, n, cudaStreamLegacy,
                       SCC_WAIT_SOURCE);
        ck_assert_int_eq(scc_xfer_run(&x), 0);
        memset(dst, 0, n + 2);
        scc_xfer_start(&x, &pool, SCC_DIR_D2H, dst + 2, (char *)dev + 3, n, cudaStreamLegacy,
                       SCC_WAIT_ALL);
        ck_assert_int_eq(scc_xfer_run(&x), 0);
        ck_assert_int_eq(memcmp(src + 1, dst + 2, n), 0);
    }
    ck_assert(scc_pool_idle(&pool));
    scc_pool_destroy(&pool);
    ck_assert_uint_eq(b.used, 0);
    ck_assert_uint_eq(cemu_test_pinned_bytes(), 0);
    free(src);
    free(dst);
}
END_TEST

/*
 * 2D transfers: rows packed in the pinned buffers, several rows per chunk
 * (cudaMemcpy2DAsync) or a row split over chunks (cudaMemcpyAsync), both
 * directions, pitches equal to the width or not, against the runtime's own
 * cudaMemcpy2D. The bytes between rows are never touched.
 */
START_TEST(data_2d_at_every_shape)
{
    static const struct {
        size_t w, hp, dp, h;
    } g[] = {
        {1, 1, 1, 1},
        {100, 100, 100, 7},
        {333, 512, 1000, 900},
        {4096, 4096, 8192, 50},
        {CHUNK, CHUNK, CHUNK, 3},
        {CHUNK + 5, CHUNK + 9, 3 * CHUNK, 4},
        {3 * CHUNK + 1, 3 * CHUNK + 1, 3 * CHUNK + 1, 2},
        {17, 4096, 17, 300},
    };
    size_t cap = 4 << 20;
    struct scc_budget b = {.max = 1 << 20};
    struct scc_pool pool;
    struct scc_xfer x;
    void *dev;
    unsigned char *src = malloc(cap), *dst = malloc(cap), *ref = malloc(cap);

    ck_assert_int_eq(scc_pool_init(&pool, &api, &b, CHUNK, 2), 0);
    ck_assert_int_eq(cudaMalloc(&dev, cap), cudaSuccess);
    for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++) {
        size_t hspan = (g[i].h - 1) * g[i].hp + g[i].w, dspan = (g[i].h - 1) * g[i].dp + g[i].w;
        ck_assert_uint_le(hspan, cap);
        ck_assert_uint_le(dspan, cap);
        fill(src, hspan, (unsigned)i);
        ck_assert_int_eq(cudaMemset(dev, 0xA5, dspan), cudaSuccess);
        ck_assert_int_eq(scc_xfer_start_2d(&x, &pool, SCC_DIR_H2D, src, g[i].hp, dev, g[i].dp,
                                           g[i].w, g[i].h, cudaStreamLegacy, SCC_WAIT_SOURCE),
                         0);
        ck_assert_int_eq(scc_xfer_run(&x), 0);
        /* The device holds what the runtime's own 2D copy would have put there. */
        memset(ref, 0xA5, dspan);
        for (size_t r = 0; r < g[i].h; r++)
            memcpy(ref + r * g[i].dp, src + r * g[i].hp, g[i].w);
        ck_assert_int_eq(cudaMemcpy(dst, dev, dspan, cudaMemcpyDeviceToHost), cudaSuccess);
        ck_assert_int_eq(memcmp(ref, dst, dspan), 0);
        /* And back, into a host area with other bytes between the rows. */
        memset(dst, 0x5A, hspan);
        memset(ref, 0x5A, hspan);
        ck_assert_int_eq(
            cudaMemcpy2D(ref, g[i].hp, dev, g[i].dp, g[i].w, g[i].h, cudaMemcpyDeviceToHost),
            cudaSuccess);
        ck_assert_int_eq(scc_xfer_start_2d(&x, &pool, SCC_DIR_D2H, dst, g[i].hp, dev, g[i].dp,
                                           g[i].w, g[i].h, cudaStreamLegacy, SCC_WAIT_ALL),
                         0);
        ck_assert_int_eq(scc_xfer_run(&x), 0);
        ck_assert_int_eq(memcmp(ref, dst, hspan), 0);
    }
    /* Geometries the runtime refuses, or with nothing to do, are not started. */
    ck_assert_int_eq(scc_xfer_start_2d(&x, &pool, SCC_DIR_H2D, src, 10, dev, 100, 11, 2,
                                       cudaStreamLegacy, SCC_WAIT_ALL),
                     -EINVAL);
    ck_assert_int_eq(scc_xfer_start_2d(&x, &pool, SCC_DIR_H2D, src, 100, dev, 10, 11, 2,
                                       cudaStreamLegacy, SCC_WAIT_ALL),
                     -EINVAL);
    ck_assert_int_eq(scc_xfer_start_2d(&x, &pool, SCC_DIR_H2D, src, 100, dev, 100, 10, 0,
                                       cudaStreamLegacy, SCC_WAIT_ALL),
                     -EINVAL);
    ck_assert_int_eq(scc_xfer_start_2d(&x, &pool, SCC_DIR_H2D, NULL, 100, dev, 100, 10, 2,
                                       cudaStreamLegacy, SCC_WAIT_ALL),
                     -EINVAL);
    ck_assert(scc_pool_idle(&pool));
    scc_pool_destroy(&pool);
    ck_assert_int_eq(cudaFree(dev), cudaSuccess);
    free(src);
    free(dst);
    free(ref);
}
END_TEST

/* Without cudaMemcpy2DAsync in the table, rows that fit a chunk are
 * refused; rows wider than a chunk need only cudaMemcpyAsync. */
START_TEST(data_2d_needs_memcpy2d_only_for_packed_rows)
{
    struct scc_api a = api;
    struct scc_budget b = {.max = 1 << 20};
    struct scc_pool pool;
    struct scc_xfer x;
    void *dev;
    size_t w = 2 * CHUNK + 3, h = 3;
    unsigned char *src = malloc(w * h), *dst = malloc(w * h);

    a.memcpy2d_async = NULL;
    ck_assert_int_eq(scc_pool_init(&pool, &a, &b, CHUNK, 2), 0);
    ck_assert_int_eq(cudaMalloc(&dev, w * h), cudaSuccess);
    ck_assert_int_eq(scc_xfer_start_2d(&x, &pool, SCC_DIR_H2D, src, 100, dev, 100, 100, 2,
                                       cudaStreamLegacy, SCC_WAIT_ALL),
                     -EINVAL);
    fill(src, w * h, 4);
    ck_assert_int_eq(scc_xfer_start_2d(&x, &pool, SCC_DIR_H2D, src, w, dev, w, w, h,
                                       cudaStreamLegacy, SCC_WAIT_ALL),
                     0);
    ck_assert_int_eq(scc_xfer_run(&x), 0);
    ck_assert_int_eq(cudaMemcpy(dst, dev, w * h, cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_int_eq(memcmp(src, dst, w * h), 0);
    scc_pool_destroy(&pool);
    ck_assert_int_eq(cudaFree(dev), cudaSuccess);
    free(src);
    free(dst);
}
END_TEST

START_TEST(nonblocking_progress_with_event_polling)
{
    struct scc_budget b = {.max = 1 << 20};
    struct scc_pool pool;
    struct scc_xfer x;
    cudaStream_t s;
    void *dev;
    unsigned char *src = malloc(8 * CHUNK), *dst = malloc(8 * CHUNK);

    ck_assert_int_eq(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    ck_assert_int_eq(cudaMalloc(&dev, 8 * CHUNK), cudaSuccess);
    ck_assert_int_eq(scc_pool_init(&pool, &api, &b, CHUNK, 2), 0);
    fill(src, 8 * CHUNK, 3);
    ck_assert_int_eq(cudaMemcpy(dev, src, 8 * CHUNK, cudaMemcpyHostToDevice), cudaSuccess);
    /* A pageable cudaMemcpy H2D may return before its DMA finished, and a
     * non-blocking stream does not wait for the legacy one. */
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
    cemu_test_hold_stream(s);
    scc_xfer_start(&x, &pool, SCC_DIR_D2H, dst, dev, 8 * CHUNK, s, SCC_WAIT_ALL);
    /* An I/O thread polls: never blocks while the device is busy. */
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(scc_xfer_poll(&x, false), SCC_PENDING);
    ck_assert_uint_eq(cemu_test_stream_pending(s), 4); /* 2 copies + 2 event records */
    /* The poll did not leave an error for the application to find. */
    ck_assert_int_eq(cudaPeekAtLastError(), cudaSuccess);
    cemu_test_release_stream(s);
    int rc;
    while ((rc = scc_xfer_poll(&x, false)) == SCC_PENDING)
        ;
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(memcmp(src, dst, 8 * CHUNK), 0);
    ck_assert_int_eq(scc_xfer_poll(&x, false), 0);
    scc_pool_destroy(&pool);
    free(src);
    free(dst);
}
END_TEST

START_TEST(async_h2d_returns_when_source_consumed)
{
    struct scc_budget b = {.max = 1 << 20};
    struct scc_pool pool;
    struct scc_xfer x;
    cudaStream_t s;
    void *dev;
    unsigned char *src = malloc(2 * CHUNK), *dst = malloc(2 * CHUNK), *ref = malloc(2 * CHUNK);

    ck_assert_int_eq(cudaStreamCreate(&s), cudaSuccess);
    ck_assert_int_eq(cudaMalloc(&dev, 2 * CHUNK), cudaSuccess);
    ck_assert_int_eq(scc_pool_init(&pool, &api, &b, CHUNK, 2), 0);
    fill(src, 2 * CHUNK, 9);
    memcpy(ref, src, 2 * CHUNK);
    cemu_test_hold_stream(s);
    scc_xfer_start(&x, &pool, SCC_DIR_H2D, src, dev, 2 * CHUNK, s, SCC_WAIT_SOURCE);
    ck_assert_int_eq(scc_xfer_run(&x), 0); /* held stream: still returns */
    ck_assert(!scc_pool_idle(&pool));
    memset(src, 0, 2 * CHUNK); /* the source is ours again */
    cemu_test_release_stream(s);
    ck_assert_int_eq(cudaMemcpy(dst, dev, 2 * CHUNK, cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_int_eq(memcmp(ref, dst, 2 * CHUNK), 0);
    ck_assert_int_eq(scc_pool_drain(&pool), 0);
    ck_assert(scc_pool_idle(&pool));
    scc_pool_destroy(&pool);
    free(src);
    free(dst);
    free(ref);
}
END_TEST

START_TEST(h2d_done_rules)
{
    /* On a stream still busy with earlier work: an async-style transfer is
     * done once its source is consumed; a cudaMemcpy-style one only when the
     * earlier work (and its first chunk) completed. Separate pools, so
     * neither waits for the other's buffers. */
    struct scc_budget b = {.max = 1 << 20};
    struct scc_pool p1, p2;
    struct scc_xfer x1, x2;
    cudaStream_t s;
    void *dev;
    unsigned char src[CHUNK];

    ck_assert_int_eq(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    ck_assert_int_eq(cudaMalloc(&dev, 2 * CHUNK), cudaSuccess);
    ck_assert_int_eq(scc_pool_init(&p1, &api, &b, CHUNK, 2), 0);
    ck_assert_int_eq(scc_pool_init(&p2, &api, &b, CHUNK, 2), 0);
    fill(src, CHUNK, 5);
    cemu_test_hold_stream(s);
    ck_assert_int_eq(cudaMemsetAsync(dev, 0, 2 * CHUNK, s), cudaSuccess);
    scc_xfer_start(&x1, &p1, SCC_DIR_H2D, src, dev, CHUNK, s, SCC_WAIT_SOURCE);
    ck_assert_int_eq(scc_xfer_poll(&x1, false), 0);
    scc_xfer_start(&x2, &p2, SCC_DIR_H2D, src, (char *)dev + CHUNK, CHUNK, s, SCC_WAIT_STREAM);
    ck_assert_int_eq(scc_xfer_poll(&x2, false), SCC_PENDING);
    ck_assert_int_eq(scc_xfer_poll(&x2, false), SCC_PENDING);
    cemu_test_release_stream(s);
    ck_assert_int_eq(scc_xfer_run(&x2), 0);
    ck_assert_int_eq(scc_pool_drain(&p1), 0);
    scc_pool_destroy(&p1);
    scc_pool_destroy(&p2);
}
END_TEST

START_TEST(budget_refuses)
{
    struct scc_budget b = {.max = 3 * CHUNK};
    struct scc_pool p1, p2;

    ck_assert_int_eq(scc_pool_init(&p1, &api, &b, CHUNK, 2), 0);
    ck_assert_int_eq(scc_pool_init(&p2, &api, &b, CHUNK, 2), -ENOSPC);
    ck_assert_uint_eq(b.used, 2 * CHUNK);
    scc_pool_destroy(&p1);
    ck_assert_int_eq(scc_pool_init(&p2, &api, &b, CHUNK, 2), 0);
    scc_pool_destroy(&p2);
    ck_assert_int_eq(scc_pool_init(&p2, &api, &b, CHUNK, 1), -EINVAL);
    ck_assert_uint_eq(b.used, 0);
}
END_TEST

START_TEST(allocation_failure_from_the_runtime)
{
    struct scc_budget b = {.max = 1 << 20};
    struct scc_pool pool;

    cemu_test_fail_host_alloc(1);
    ck_assert_int_eq(scc_pool_init(&pool, &api, &b, CHUNK, 2), cudaErrorMemoryAllocation);
    ck_assert_uint_eq(b.used, 0);
    ck_assert_uint_eq(cemu_test_pinned_bytes(), 0);
    cemu_test_fail_host_alloc(-1);
    ck_assert_int_eq(scc_pool_init(&pool, &api, &b, CHUNK, 2), cudaErrorMemoryAllocation);
    ck_assert_uint_eq(b.used, 0);
    cemu_test_fail_host_alloc(0);
    ck_assert_int_eq(scc_pool_init(&pool, &api, &b, CHUNK, 2), 0);
    scc_pool_destroy(&pool);
}
END_TEST

/* A runtime whose nth cudaMallocHost fails: drives the cleanup of a pool
 * whose earlier buffers and events were already made. */
static int alloc_fail_at = -1, calls;
static int t_malloc_host_nth(void **p, size_t n)
{
    if (calls++ == alloc_fail_at)
        return cudaErrorMemoryAllocation;
    return cudaMallocHost(p, n);
}
static int events_fail_at = -1, ev_calls;
static int t_event_create_nth(struct CUevent_st **e, unsigned flags)
{
    if (ev_calls++ == events_fail_at)
        return cudaErrorMemoryAllocation;
    return cudaEventCreateWithFlags(e, flags);
}

START_TEST(partial_pool_unwinds)
{
    struct scc_api a = api;
    struct scc_budget b = {.max = 1 << 20};
    struct scc_pool pool;

    a.malloc_host = t_malloc_host_nth;
    a.event_create_with_flags = t_event_create_nth;
    for (int i = 0; i < 4; i++) {
        calls = ev_calls = 0;
        alloc_fail_at = i;
        events_fail_at = -1;
        ck_assert_int_eq(scc_pool_init(&pool, &a, &b, CHUNK, 4), cudaErrorMemoryAllocation);
        ck_assert_uint_eq(b.used, 0);
        ck_assert_uint_eq(cemu_test_pinned_bytes(), 0);
        calls = ev_calls = 0;
        alloc_fail_at = -1;
        events_fail_at = i;
        ck_assert_int_eq(scc_pool_init(&pool, &a, &b, CHUNK, 4), cudaErrorMemoryAllocation);
        ck_assert_uint_eq(b.used, 0);
        ck_assert_uint_eq(cemu_test_pinned_bytes(), 0);
    }
}
END_TEST

START_TEST(runtime_error_is_returned)
{
    struct scc_budget b = {.max = 1 << 20};
    struct scc_pool pool;
    struct scc_xfer x;
    void *dev;
    unsigned char *buf = malloc(4 * CHUNK);

    ck_assert_int_eq(cudaMalloc(&dev, 2 * CHUNK), cudaSuccess);
    ck_assert_int_eq(scc_pool_init(&pool, &api, &b, CHUNK, 2), 0);
    /* Past the allocation's end: the third chunk fails. */
    scc_xfer_start(&x, &pool, SCC_DIR_D2H, buf, dev, 4 * CHUNK, cudaStreamLegacy, SCC_WAIT_ALL);
    ck_assert_int_eq(scc_xfer_run(&x), cudaErrorInvalidValue);
    ck_assert_int_eq(scc_xfer_poll(&x, true), cudaErrorInvalidValue);
    ck_assert_int_eq(scc_pool_drain(&pool), 0);
    ck_assert_int_eq(cudaGetLastError(), cudaErrorInvalidValue);
    scc_pool_destroy(&pool);
    free(buf);
}
END_TEST

START_TEST(many_transfers_in_flight_from_one_thread)
{
    /* An engine I/O thread: four transfers at once, each with a pool from
     * the set, advanced by polling only; the budget allows three pools. */
    struct scc_budget b = {.max = 3 * 2 * CHUNK};
    struct scc_pools ps;
    struct scc_pool *pool[4];
    struct scc_xfer x[4];
    cudaStream_t s;
    unsigned char *host[4], *ref[4];
    void *dev[4];
    size_t n = 5 * CHUNK + 123;
    int err, rc[4];

    ck_assert_int_eq(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    scc_pools_init(&ps, &api, &b, CHUNK, 2);
    for (int i = 0; i < 4; i++) {
        host[i] = malloc(n);
        ref[i] = malloc(n);
        fill(ref[i], n, (unsigned)(90 + i));
        ck_assert_int_eq(cudaMalloc(&dev[i], n), cudaSuccess);
        if (i % 2) {
            /* D2H: the device holds the reference. */
            ck_assert_int_eq(cudaMemcpy(dev[i], ref[i], n, cudaMemcpyHostToDevice), cudaSuccess);
            memset(host[i], 0, n);
        } else {
            memcpy(host[i], ref[i], n);
        }
    }
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
    for (int i = 0; i < 3; i++)
        ck_assert_ptr_nonnull(pool[i] = scc_pools_get(&ps, &err));
    ck_assert_ptr_null(scc_pools_get(&ps, &err));
    ck_assert_int_eq(err, -ENOSPC);
    cemu_test_hold_stream(s);
    for (int i = 0; i < 3; i++)
        scc_xfer_start(&x[i], pool[i], i % 2 ? SCC_DIR_D2H : SCC_DIR_H2D, host[i], dev[i], n, s,
                       SCC_WAIT_ALL);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(scc_xfer_poll(&x[i], false), SCC_PENDING);
    cemu_test_release_stream(s);
    /* The fourth starts when a pool comes back. */
    bool started = false;
    int done = 0;
    for (int i = 0; i < 4; i++)
        rc[i] = SCC_PENDING;
    while (done < 4) {
        for (int i = 0; i < (started ? 4 : 3); i++) {
            if (rc[i] != SCC_PENDING)
                continue;
            rc[i] = scc_xfer_poll(&x[i], false);
            if (rc[i] == SCC_PENDING)
                continue;
            ck_assert_int_eq(rc[i], 0);
            done++;
            scc_pools_put(&ps, pool[i]);
            if (!started) {
                ck_assert_ptr_nonnull(pool[3] = scc_pools_get(&ps, &err));
                scc_xfer_start(&x[3], pool[3], SCC_DIR_D2H, host[3], dev[3], n, s, SCC_WAIT_ALL);
                started = true;
            }
        }
    }
    for (int i = 0; i < 4; i++) {
        if (i % 2 == 0)
            ck_assert_int_eq(cudaMemcpy(host[i], dev[i], n, cudaMemcpyDeviceToHost), cudaSuccess);
        ck_assert_int_eq(memcmp(host[i], ref[i], n), 0);
        free(host[i]);
        free(ref[i]);
    }
    ck_assert_uint_eq(b.used, 3 * 2 * CHUNK);
    scc_pools_destroy(&ps);
    ck_assert_uint_eq(b.used, 0);
    ck_assert_uint_eq(cemu_test_pinned_bytes(), 0);
}
END_TEST

START_TEST(chunk_mode_without_a_host_copy)
{
    /* As an engine sends a device region: straight from the pinned chunks;
     * and receives one: straight into them. */
    struct scc_budget b = {.max = 1 << 20};
    struct scc_pool pool;
    struct scc_xfer x;
    cudaStream_t s;
    size_t n = 7 * CHUNK + 5, got = 0, len;
    unsigned char *ref = malloc(n), *sink = malloc(n);
    void *dev, *data;
    int rc;

    ck_assert_int_eq(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    ck_assert_int_eq(cudaMalloc(&dev, n), cudaSuccess);
    ck_assert_int_eq(scc_pool_init(&pool, &api, &b, CHUNK, 3), 0);
    fill(ref, n, 33);
    ck_assert_int_eq(cudaMemcpy(dev, ref, n, cudaMemcpyHostToDevice), cudaSuccess);
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);

    scc_xfer_start(&x, &pool, SCC_DIR_D2H, NULL, dev, n, s, SCC_WAIT_ALL);
    cemu_test_hold_stream(s);
    ck_assert_int_eq(scc_xfer_next_chunk(&x, false, &data, &len), SCC_PENDING);
    ck_assert_int_eq(scc_xfer_poll(&x, false), SCC_PENDING);
    cemu_test_release_stream(s);
    while ((rc = scc_xfer_next_chunk(&x, false, &data, &len)) != SCC_END) {
        if (rc == SCC_PENDING)
            continue;
        ck_assert_int_eq(rc, 0);
        memcpy(sink + got, data, len); /* "send" */
        got += len;
        ck_assert_int_eq(scc_xfer_chunk_done(&x), 0);
    }
    ck_assert_uint_eq(got, n);
    ck_assert_int_eq(memcmp(ref, sink, n), 0);
    ck_assert_int_eq(scc_xfer_poll(&x, false), 0);

    fill(ref, n, 44);
    got = 0;
    scc_xfer_start(&x, &pool, SCC_DIR_H2D, NULL, dev, n, s, SCC_WAIT_ALL);
    while ((rc = scc_xfer_next_chunk(&x, false, &data, &len)) != SCC_END) {
        if (rc == SCC_PENDING)
            continue;
        ck_assert_int_eq(rc, 0);
        memcpy(data, ref + got, len); /* "receive" */
        got += len;
        ck_assert_int_eq(scc_xfer_chunk_done(&x), 0);
    }
    while ((rc = scc_xfer_poll(&x, false)) == SCC_PENDING)
        ;
    ck_assert_int_eq(rc, 0);
    ck_assert(scc_pool_idle(&pool));
    ck_assert_int_eq(cudaMemcpy(sink, dev, n, cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_int_eq(memcmp(ref, sink, n), 0);
    scc_pool_destroy(&pool);
    free(ref);
    free(sink);
}
END_TEST

START_TEST(api_from_a_dlopened_runtime)
{
    /* As the engine loads it: by soname, RTLD_LOCAL. */
    void *h = dlopen("libcudart.so." CEMU_SOVER_STR, RTLD_NOW | RTLD_LOCAL);
    struct scc_api a;
    struct scc_budget b = {.max = 1 << 20};
    struct scc_pool pool;
    struct scc_xfer x;
    const char *missing = NULL;
    unsigned char src[3 * 4096], dst[3 * 4096];
    void *dev;

    ck_assert_ptr_nonnull(h);
    ck_assert_int_eq(scc_api_from_handle(&a, h, &missing), 0);
    ck_assert_ptr_eq((void *)a.memcpy_async, dlsym(h, "cudaMemcpyAsync"));
    ck_assert_ptr_eq((void *)a.memcpy2d_async, dlsym(h, "cudaMemcpy2DAsync"));
    ck_assert_int_eq(scc_pool_init(&pool, &a, &b, 4096, 2), 0);
    ck_assert_int_eq(cudaMalloc(&dev, sizeof(src)), cudaSuccess);
    fill(src, sizeof(src), 77);
    scc_xfer_start(&x, &pool, SCC_DIR_H2D, src, dev, sizeof(src), cudaStreamLegacy, SCC_WAIT_ALL);
    ck_assert_int_eq(scc_xfer_run(&x), 0);
    scc_xfer_start(&x, &pool, SCC_DIR_D2H, dst, dev, sizeof(dst), cudaStreamLegacy, SCC_WAIT_ALL);
    ck_assert_int_eq(scc_xfer_run(&x), 0);
    ck_assert_int_eq(memcmp(src, dst, sizeof(src)), 0);
    scc_pool_destroy(&pool);
    /* A library without the runtime's functions: refused, the name given. */
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_LOCAL);
    ck_assert_int_eq(scc_api_from_handle(&a, libc, &missing), -ENOENT);
    ck_assert_str_eq(missing, "cudaMallocHost");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cuda_copy");
    TCase *tc = tcase_create("pool");
    SRunner *sr;
    int failed;

    tcase_add_test(tc, data_at_every_shape);
    tcase_add_test(tc, data_2d_at_every_shape);
    tcase_add_test(tc, data_2d_needs_memcpy2d_only_for_packed_rows);
    tcase_add_test(tc, nonblocking_progress_with_event_polling);
    tcase_add_test(tc, async_h2d_returns_when_source_consumed);
    tcase_add_test(tc, h2d_done_rules);
    tcase_add_test(tc, budget_refuses);
    tcase_add_test(tc, allocation_failure_from_the_runtime);
    tcase_add_test(tc, partial_pool_unwinds);
    tcase_add_test(tc, runtime_error_is_returned);
    tcase_add_test(tc, many_transfers_in_flight_from_one_thread);
    tcase_add_test(tc, chunk_mode_without_a_host_copy);
    tcase_add_test(tc, api_from_a_dlopened_runtime);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
