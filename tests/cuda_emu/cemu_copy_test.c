/*
 * The pinned bounce pool and pipelined copy component (engine/eng_cudacopy.c)
 * driven directly against the emulated runtime, as the engine would use it:
 * data at every size shape, non-blocking progress with event polling while
 * a stream is held, the budget, allocation failure at each buffer (every
 * cleanup path) and error propagation; then the same with the host-side
 * copies shared with the component's copy threads: data at many sizes and
 * thread counts, device copies still issued in order from the caller, the
 * pool bounded and lazy, thread creation failing, fork and exit.
 */
#include <check.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cemu_test.h"
#include "teshim/cudacopy.h"

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

/* ---- host-side staging shared with copy threads --------------------------- */

/* Pieces this small make every chunk of these tests split over threads. */
#define PIECE 4096

static void set_threads(struct scc_pool *pool, unsigned threads)
{
    scc_pool_set_threads(pool, threads, PIECE);
    ck_assert_uint_eq(pool->threads, threads);
}

/* A round trip of n bytes from src + 1 through dev + 3 into dst + 2. */
static void round_trip(struct scc_pool *pool, unsigned char *src, unsigned char *dst, void *dev,
                       size_t n, unsigned seed)
{
    struct scc_xfer x;

    fill(src + 1, n, seed);
    scc_xfer_start(&x, pool, SCC_DIR_H2D, src + 1, (char *)dev + 3, n, cudaStreamLegacy,
                   SCC_WAIT_SOURCE);
    ck_assert_int_eq(scc_xfer_run(&x), 0);
    memset(dst, 0, n + 3);
    scc_xfer_start(&x, pool, SCC_DIR_D2H, dst + 2, (char *)dev + 3, n, cudaStreamLegacy,
                   SCC_WAIT_ALL);
    ck_assert_int_eq(scc_xfer_run(&x), 0);
    ck_assert_msg(memcmp(src + 1, dst + 2, n) == 0, "%zu bytes, %u threads, %u buffers: differ", n,
                  pool->threads, pool->nbuf);
    /* nothing written around it */
    ck_assert_int_eq(dst[0] | dst[1] | dst[n + 2], 0);
}

START_TEST(parallel_data_at_many_sizes_and_threads)
{
    static const size_t sizes[] = {
        1,         PIECE - 1,      PIECE + 1,      CHUNK - 1,        CHUNK,
        CHUNK + 1, 3 * CHUNK + 17, 9 * CHUNK - 65, 40 * CHUNK + 4093};
    static const unsigned threads[] = {1, 2, 3, 4, 7};
    static const unsigned nbufs[] = {2, 3, 8};
    struct scc_budget b = {.max = 8 << 20};
    size_t cap = 41 * CHUNK;
    unsigned char *src = malloc(cap), *dst = malloc(cap);
    void *dev;

    ck_assert_uint_eq(scc_threads_running(), 0);
    ck_assert_int_eq(cudaMalloc(&dev, cap), cudaSuccess);
    for (size_t t = 0; t < sizeof(threads) / sizeof(threads[0]); t++)
        for (size_t nb = 0; nb < sizeof(nbufs) / sizeof(nbufs[0]); nb++) {
            struct scc_pool pool;
            ck_assert_int_eq(scc_pool_init(&pool, &api, &b, CHUNK, nbufs[nb]), 0);
            set_threads(&pool, threads[t]);
            for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
                round_trip(&pool, src, dst, dev, sizes[i], (unsigned)(t * 31 + i));
            ck_assert(scc_pool_idle(&pool));
            scc_pool_destroy(&pool);
            /* Threads are made on first need, never more than asked for. */
            ck_assert_uint_eq(scc_threads_running(), threads[t] - 1);
        }
    /* Default pieces (SCC_MIN_PIECE) on chunks of 2 MiB: cut in 4. */
    struct scc_pool pool;
    ck_assert_int_eq(scc_pool_init(&pool, &api, &b, 2 << 20, 2), 0);
    scc_pool_set_threads(&pool, 4, 0);
    ck_assert_uint_eq(pool.min_piece, SCC_MIN_PIECE);
    round_trip(&pool, src, dst, dev, cap - 8, 5);
    scc_pool_destroy(&pool);
    ck_assert_uint_eq(b.used, 0);
    ck_assert_int_eq(cudaFree(dev), cudaSuccess);
    free(src);
    free(dst);
}
END_TEST

/* Device to host into freshly mapped memory, as PyTorch's .cpu() does: the
 * copy threads take the first-touch faults. */
START_TEST(parallel_into_fresh_mappings)
{
    struct scc_budget b = {.max = 1 << 20};
    struct scc_pool pool;
    struct scc_xfer x;
    size_t n = 37 * CHUNK + 11;
    unsigned char *ref = malloc(n);
    void *dev;

    ck_assert_int_eq(cudaMalloc(&dev, n), cudaSuccess);
    ck_assert_int_eq(scc_pool_init(&pool, &api, &b, CHUNK, 4), 0);
    set_threads(&pool, 4);
    fill(ref, n, 61);
    ck_assert_int_eq(cudaMemcpy(dev, ref, n, cudaMemcpyHostToDevice), cudaSuccess);
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
    for (int i = 0; i < 3; i++) {
        unsigned char *fresh =
            mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        ck_assert_ptr_ne(fresh, MAP_FAILED);
        scc_xfer_start(&x, &pool, SCC_DIR_D2H, fresh, dev, n, cudaStreamLegacy, SCC_WAIT_ALL);
        ck_assert_int_eq(scc_xfer_run(&x), 0);
        ck_assert_int_eq(memcmp(fresh, ref, n), 0);
        ck_assert_int_eq(munmap(fresh, n), 0);
    }
    scc_pool_destroy(&pool);
    free(ref);
}
END_TEST

/* 2D transfers with rows shared between threads (pieces of whole rows) and
 * rows wider than a chunk split over them, against the runtime's own copy. */
START_TEST(parallel_2d_at_every_shape)
{
    static const struct {
        size_t w, hp, dp, h;
    } g[] = {
        {1, 1, 1, 1},           {100, 100, 100, 700},   {333, 512, 1000, 900},
        {4096, 4096, 8192, 50}, {5000, 6000, 5000, 40}, {CHUNK + 5, CHUNK + 9, 3 * CHUNK, 4},
        {17, 4096, 17, 300},
    };
    size_t cap = 4 << 20;
    struct scc_budget b = {.max = 1 << 20};
    struct scc_pool pool;
    struct scc_xfer x;
    void *dev;
    unsigned char *src = malloc(cap), *dst = malloc(cap), *ref = malloc(cap);

    ck_assert_int_eq(cudaMalloc(&dev, cap), cudaSuccess);
    for (unsigned t = 1; t <= 5; t += 2) {
        ck_assert_int_eq(scc_pool_init(&pool, &api, &b, CHUNK, 3), 0);
        set_threads(&pool, t);
        for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++) {
            size_t hspan = (g[i].h - 1) * g[i].hp + g[i].w, dspan = (g[i].h - 1) * g[i].dp + g[i].w;
            fill(src, hspan, (unsigned)(i + t));
            ck_assert_int_eq(cudaMemset(dev, 0xA5, dspan), cudaSuccess);
            ck_assert_int_eq(scc_xfer_start_2d(&x, &pool, SCC_DIR_H2D, src, g[i].hp, dev, g[i].dp,
                                               g[i].w, g[i].h, cudaStreamLegacy, SCC_WAIT_SOURCE),
                             0);
            ck_assert_int_eq(scc_xfer_run(&x), 0);
            memset(ref, 0xA5, dspan);
            for (size_t r = 0; r < g[i].h; r++)
                memcpy(ref + r * g[i].dp, src + r * g[i].hp, g[i].w);
            ck_assert_int_eq(cudaMemcpy(dst, dev, dspan, cudaMemcpyDeviceToHost), cudaSuccess);
            ck_assert_msg(memcmp(ref, dst, dspan) == 0, "shape %zu, %u threads: device differs", i,
                          t);
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
        scc_pool_destroy(&pool);
    }
    ck_assert_int_eq(cudaFree(dev), cudaSuccess);
    free(src);
    free(dst);
    free(ref);
}
END_TEST

/* Every runtime call a transfer makes, in order, and from which thread. */
#define REC_MAX 4096
struct rec {
    char op; /* 'c' copy, 'r' event record */
    const char *dev;
    pthread_t th;
};
static struct rec rec[REC_MAX];
static unsigned nrec;
static int rec_memcpy_async(void *d, const void *s, size_t n, int kind, struct CUstream_st *st)
{
    if (nrec < REC_MAX)
        rec[nrec++] = (struct rec){'c', kind == cudaMemcpyHostToDevice ? d : s, pthread_self()};
    return t_memcpy_async(d, s, n, kind, st);
}
static int rec_event_record(struct CUevent_st *e, struct CUstream_st *s)
{
    if (nrec < REC_MAX)
        rec[nrec++] = (struct rec){'r', NULL, pthread_self()};
    return t_event_record(e, s);
}

/*
 * Whatever the threads do on the host side, the device-side copies are
 * issued by the calling thread, in chunk order, each followed by its event
 * record, on the caller's stream: the same sequence of runtime calls as
 * with one thread.
 */
START_TEST(device_copies_in_order_from_the_caller)
{
    struct scc_api a = api;
    struct scc_budget b = {.max = 1 << 20};
    size_t n = 23 * CHUNK + 99, nchunks = 24;
    unsigned char *src = malloc(n), *dst = malloc(n);
    char *dev;
    pthread_t me = pthread_self();

    a.memcpy_async = rec_memcpy_async;
    a.event_record = rec_event_record;
    ck_assert_int_eq(cudaMalloc((void **)&dev, n), cudaSuccess);
    fill(src, n, 8);
    for (unsigned t = 1; t <= 4; t += 3)
        for (int dir = 0; dir < 2; dir++) {
            struct scc_pool pool;
            struct scc_xfer x;
            ck_assert_int_eq(scc_pool_init(&pool, &a, &b, CHUNK, 4), 0);
            set_threads(&pool, t);
            nrec = 0;
            scc_xfer_start(&x, &pool, dir ? SCC_DIR_D2H : SCC_DIR_H2D, dir ? dst : src, dev, n,
                           cudaStreamLegacy, SCC_WAIT_ALL);
            ck_assert_int_eq(scc_xfer_run(&x), 0);
            ck_assert_uint_eq(nrec, 2 * nchunks);
            for (unsigned i = 0; i < nrec; i++) {
                ck_assert(pthread_equal(rec[i].th, me));
                ck_assert_int_eq(rec[i].op, i % 2 ? 'r' : 'c');
                if (!(i % 2))
                    ck_assert_ptr_eq(rec[i].dev, dev + (i / 2) * CHUNK);
            }
            scc_pool_destroy(&pool);
        }
    ck_assert_int_eq(memcmp(src, dst, n), 0);
    ck_assert_int_eq(cudaFree(dev), cudaSuccess);
    free(src);
    free(dst);
}
END_TEST

/*
 * Poll x without blocking until want operations are queued on the held
 * stream s (host-side staging runs on the copy threads, so how many polls
 * that takes depends on the machine's load; bounded at 10 s), then a few
 * more: every poll says pending, and no more work is issued than the
 * buffers allow.
 */
static void poll_until_issued(struct scc_xfer *x, cudaStream_t s, unsigned want)
{
    struct timespec t0, t;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        ck_assert_int_eq(scc_xfer_poll(x, false), SCC_PENDING);
        ck_assert_uint_le(cemu_test_stream_pending(s), want);
        sched_yield();
        clock_gettime(CLOCK_MONOTONIC, &t);
        ck_assert_msg(t.tv_sec - t0.tv_sec < 10, "only %u of %u operations issued in 10 s",
                      (unsigned)cemu_test_stream_pending(s), want);
    } while (cemu_test_stream_pending(s) < want);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(scc_xfer_poll(x, false), SCC_PENDING);
    ck_assert_uint_eq(cemu_test_stream_pending(s), want);
}

/* An I/O thread polling with copy threads: it never waits for them, the
 * device-side work is what it was with one thread. */
START_TEST(parallel_nonblocking_progress)
{
    struct scc_budget b = {.max = 1 << 20};
    struct scc_pool pool;
    struct scc_xfer x;
    cudaStream_t s;
    void *dev;
    size_t n = 8 * CHUNK + 5;
    unsigned char *src = malloc(n), *dst = malloc(n);
    int rc;

    ck_assert_int_eq(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    ck_assert_int_eq(cudaMalloc(&dev, n), cudaSuccess);
    ck_assert_int_eq(scc_pool_init(&pool, &api, &b, CHUNK, 2), 0);
    set_threads(&pool, 4);
    fill(src, n, 13);
    /* H2D on a held stream: two chunks staged and issued, then it waits
     * for their buffers without blocking. */
    cemu_test_hold_stream(s);
    scc_xfer_start(&x, &pool, SCC_DIR_H2D, src, dev, n, s, SCC_WAIT_ALL);
    poll_until_issued(&x, s, 4); /* 2 copies + 2 event records */
    ck_assert_int_eq(cudaPeekAtLastError(), cudaSuccess);
    cemu_test_release_stream(s);
    while ((rc = scc_xfer_poll(&x, false)) == SCC_PENDING)
        ;
    ck_assert_int_eq(rc, 0);
    /* D2H the same way. */
    cemu_test_hold_stream(s);
    scc_xfer_start(&x, &pool, SCC_DIR_D2H, dst, dev, n, s, SCC_WAIT_ALL);
    poll_until_issued(&x, s, 4);
    cemu_test_release_stream(s);
    while ((rc = scc_xfer_poll(&x, false)) == SCC_PENDING)
        ;
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(memcmp(src, dst, n), 0);
    ck_assert(scc_pool_idle(&pool));
    scc_pool_destroy(&pool);
    free(src);
    free(dst);
}
END_TEST

/* A chunk failing on the device while earlier chunks are still moved out by
 * the threads: the error comes back, drain waits for the host copies too. */
START_TEST(parallel_runtime_error_drains_host_copies)
{
    struct scc_budget b = {.max = 1 << 20};
    struct scc_pool pool;
    struct scc_xfer x;
    void *dev;
    unsigned char *buf = malloc(6 * CHUNK);

    ck_assert_int_eq(cudaMalloc(&dev, 4 * CHUNK), cudaSuccess);
    ck_assert_int_eq(scc_pool_init(&pool, &api, &b, CHUNK, 4), 0);
    set_threads(&pool, 4);
    scc_xfer_start(&x, &pool, SCC_DIR_D2H, buf, dev, 6 * CHUNK, cudaStreamLegacy, SCC_WAIT_ALL);
    ck_assert_int_eq(scc_xfer_run(&x), cudaErrorInvalidValue);
    ck_assert_int_eq(scc_pool_drain(&pool), 0);
    ck_assert(scc_pool_idle(&pool));
    ck_assert_int_eq(cudaGetLastError(), cudaErrorInvalidValue);
    scc_pool_destroy(&pool);
    free(buf);
}
END_TEST

START_TEST(chunk_mode_with_copy_threads)
{
    struct scc_budget b = {.max = 1 << 20};
    struct scc_pool pool;
    struct scc_xfer x;
    size_t n = 5 * CHUNK + 7, got = 0, len;
    unsigned char *ref = malloc(n), *sink = malloc(n);
    void *dev, *data;
    int rc;

    ck_assert_int_eq(cudaMalloc(&dev, n), cudaSuccess);
    ck_assert_int_eq(scc_pool_init(&pool, &api, &b, CHUNK, 3), 0);
    set_threads(&pool, 4);
    fill(ref, n, 71);
    scc_xfer_start(&x, &pool, SCC_DIR_H2D, NULL, dev, n, cudaStreamLegacy, SCC_WAIT_ALL);
    while ((rc = scc_xfer_next_chunk(&x, true, &data, &len)) != SCC_END) {
        ck_assert_int_eq(rc, 0);
        memcpy(data, ref + got, len);
        got += len;
        ck_assert_int_eq(scc_xfer_chunk_done(&x), 0);
    }
    ck_assert_int_eq(scc_xfer_run(&x), 0);
    got = 0;
    scc_xfer_start(&x, &pool, SCC_DIR_D2H, NULL, dev, n, cudaStreamLegacy, SCC_WAIT_ALL);
    while ((rc = scc_xfer_next_chunk(&x, true, &data, &len)) != SCC_END) {
        ck_assert_int_eq(rc, 0);
        memcpy(sink + got, data, len);
        got += len;
        ck_assert_int_eq(scc_xfer_chunk_done(&x), 0);
    }
    ck_assert_uint_eq(got, n);
    ck_assert_int_eq(memcmp(ref, sink, n), 0);
    /* chunk mode copies nothing on the host: no thread was needed */
    ck_assert_uint_eq(scc_threads_running(), 0);
    scc_pool_destroy(&pool);
    free(ref);
    free(sink);
}
END_TEST

START_TEST(thread_count_bounds)
{
    struct scc_budget b = {.max = 1 << 20};
    struct scc_pool pool;
    cpu_set_t set;
    unsigned want = 1;

    if (!sched_getaffinity(0, sizeof(set), &set) && CPU_COUNT(&set) > 0)
        want = (unsigned)CPU_COUNT(&set);
    if (want > SCC_THREADS_AUTO_MAX)
        want = SCC_THREADS_AUTO_MAX;
    ck_assert_uint_eq(scc_threads_auto(), want);
    ck_assert_int_eq(scc_pool_init(&pool, &api, &b, CHUNK, 2), 0);
    ck_assert_uint_eq(pool.threads, 1); /* the caller alone until told otherwise */
    scc_pool_set_threads(&pool, 0, 0);
    ck_assert_uint_eq(pool.threads, want);
    scc_pool_set_threads(&pool, 1000, 0);
    ck_assert_uint_eq(pool.threads, SCC_THREADS_MAX);
    scc_pool_destroy(&pool);
    /* One CPU allowed: auto is the caller alone. */
    CPU_ZERO(&set);
    CPU_SET(sched_getcpu() < 0 ? 0 : sched_getcpu(), &set);
    ck_assert_int_eq(sched_setaffinity(0, sizeof(set), &set), 0);
    ck_assert_uint_eq(scc_threads_auto(), 1);
}
END_TEST

/* Thread creation fails: the caller copies alone, nothing fails. */
static int creations, creations_allowed;
static int create_limited(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    if (creations++ >= creations_allowed)
        return EAGAIN;
    return pthread_create(th, attr, fn, arg);
}

static void creation_fails_after(int allowed)
{
    struct scc_budget b = {.max = 1 << 20};
    struct scc_pool pool;
    size_t n = 17 * CHUNK + 3;
    unsigned char *src = malloc(n + 8), *dst = malloc(n + 8);
    void *dev;

    creations = 0;
    creations_allowed = allowed;
    scc_thread_create = create_limited;
    ck_assert_int_eq(cudaMalloc(&dev, n + 8), cudaSuccess);
    ck_assert_int_eq(scc_pool_init(&pool, &api, &b, CHUNK, 4), 0);
    set_threads(&pool, 4);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 3; i++)
        round_trip(&pool, src, dst, dev, n - (size_t)i * 999, (unsigned)i);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ck_assert_uint_eq(scc_threads_running(), (unsigned)allowed);
    /* Not retried at every chunk (51 of them): one more attempt at most per
     * started second (under ThreadSanitizer on a loaded machine the round
     * trips can take longer than the 1 s between attempts). */
    ck_assert_int_le(creations, allowed + 1 + (int)(t1.tv_sec - t0.tv_sec));
    scc_pool_destroy(&pool);
    free(src);
    free(dst);
}

START_TEST(thread_creation_failure_falls_back)
{
    creation_fails_after(0);
}
END_TEST

START_TEST(thread_creation_partial_failure)
{
    creation_fails_after(1);
}
END_TEST

/* A runtime that copies at once (for processes where the emulation cannot
 * run: a forked child, or one being torn down). */
static int f_malloc_host(void **p, size_t n)
{
    *p = malloc(n);
    return *p ? 0 : cudaErrorMemoryAllocation;
}
static int f_free_host(void *p)
{
    free(p);
    return 0;
}
static int f_memcpy_async(void *d, const void *s, size_t n, int kind, struct CUstream_st *st)
{
    (void)kind;
    (void)st;
    memcpy(d, s, n);
    return 0;
}
static int f_event_create(struct CUevent_st **e, unsigned flags)
{
    (void)flags;
    *e = malloc(1);
    return *e ? 0 : cudaErrorMemoryAllocation;
}
static int f_event_destroy(struct CUevent_st *e)
{
    free(e);
    return 0;
}
static int f_event_done(struct CUevent_st *e)
{
    (void)e;
    return 0;
}
static int f_event_record(struct CUevent_st *e, struct CUstream_st *s)
{
    (void)e;
    (void)s;
    return 0;
}
static const struct scc_api fake = {.malloc_host = f_malloc_host,
                                    .free_host = f_free_host,
                                    .memcpy_async = f_memcpy_async,
                                    .event_create_with_flags = f_event_create,
                                    .event_destroy = f_event_destroy,
                                    .event_record = f_event_record,
                                    .event_query = f_event_done,
                                    .event_synchronize = f_event_done};

/* Round trips through plain memory standing for the device; 0 if right. */
static int fake_round_trips(unsigned threads, int rounds)
{
    struct scc_budget b = {.max = 1 << 20};
    struct scc_pool pool;
    struct scc_xfer x;
    size_t n = 13 * CHUNK + 5;
    unsigned char *src = malloc(n), *dev = malloc(n), *dst = malloc(n);
    int bad = 0;

    if (!src || !dev || !dst || scc_pool_init(&pool, &fake, &b, CHUNK, 4))
        return -1;
    scc_pool_set_threads(&pool, threads, PIECE);
    for (int r = 0; r < rounds || rounds < 0; r++) {
        fill(src, n, (unsigned)r);
        memset(dst, 0, n);
        scc_xfer_start(&x, &pool, SCC_DIR_H2D, src, dev, n, NULL, SCC_WAIT_ALL);
        bad |= scc_xfer_run(&x);
        scc_xfer_start(&x, &pool, SCC_DIR_D2H, dst, dev, n, NULL, SCC_WAIT_ALL);
        bad |= scc_xfer_run(&x);
        bad |= memcmp(src, dst, n) != 0;
    }
    scc_pool_destroy(&pool);
    free(src);
    free(dev);
    free(dst);
    return bad;
}

/*
 * The parent's copy threads do not exist in a forked child: the child
 * starts with none and makes its own on first need. (Under ThreadSanitizer,
 * which cannot start threads after a multi-threaded fork, the child copies
 * alone.)
 */
START_TEST(forked_child_makes_its_own_threads)
{
    unsigned child_threads = 4;
    int st;

#if defined(__SANITIZE_THREAD__)
    child_threads = 1;
#endif
    ck_assert_int_eq(fake_round_trips(4, 2), 0);
    ck_assert_uint_eq(scc_threads_running(), 3);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (scc_threads_running() != 0)
            _exit(10);
        if (fake_round_trips(child_threads, 3))
            _exit(11);
        _exit(scc_threads_running() == child_threads - 1 ? 0 : 12);
    }
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 0);
    /* the parent's threads go on serving it */
    ck_assert_int_eq(fake_round_trips(4, 2), 0);
    ck_assert_uint_eq(scc_threads_running(), 3);
}
END_TEST

static void *copy_forever(void *arg)
{
    (void)arg;
    fake_round_trips(4, -1);
    return NULL;
}

/* exit() while another thread copies with the copy threads busy: the
 * process ends, neither hanging in the threads' shutdown nor crashing. */
START_TEST(exit_while_copying)
{
    int st;
    pid_t pid = fork();

    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        pthread_t th;
        struct timespec ts = {0, 20 * 1000 * 1000};
        alarm(20); /* a hang ends as SIGALRM, not as a stuck test */
        if (pthread_create(&th, NULL, copy_forever, NULL))
            _exit(3);
        nanosleep(&ts, NULL);
        exit(0);
    }
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st), "child ended by signal %d", WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    ck_assert_int_eq(WEXITSTATUS(st), 0);
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
    tc = tcase_create("parallel");
    tcase_add_test(tc, parallel_data_at_many_sizes_and_threads);
    tcase_add_test(tc, parallel_into_fresh_mappings);
    tcase_add_test(tc, parallel_2d_at_every_shape);
    tcase_add_test(tc, device_copies_in_order_from_the_caller);
    tcase_add_test(tc, parallel_nonblocking_progress);
    tcase_add_test(tc, parallel_runtime_error_drains_host_copies);
    tcase_add_test(tc, chunk_mode_with_copy_threads);
    tcase_add_test(tc, thread_count_bounds);
    tcase_add_test(tc, thread_creation_failure_falls_back);
    tcase_add_test(tc, thread_creation_partial_failure);
    tcase_add_test(tc, forked_child_makes_its_own_threads);
    tcase_add_test(tc, exit_while_copying);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
