/*
 * The engine moving registered device memory ("cuda:0") over tcp through
 * the pinned pools, against the emulated runtime: WRITE from device memory
 * to a peer's host buffer and READ from it into device memory, at sizes
 * below, at and across the 2 MiB pool chunk, many requests at once, while
 * the application's own streams are held, and with the pinned allocation
 * failing (the task fails cleanly). The engine finds the runtime with
 * dlopen("libcudart.so.13"): the emulation this test is linked against.
 */
#include <check.h>
#include <stdbool.h>
#include <cuda_runtime_api.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cemu_test.h"
#include "teshim/cudacopy.h"
#include "eng_test.h"

static struct teshim_engine *target, *ini;
static teshim_segment_t seg;
static unsigned char *remote; /* the target's host buffer */
static void *dev;             /* the initiator's device buffer */
#define SPAN (12u << 20)

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * 13 + seed + (i >> 11));
}

static bool with_policy; /* read the cuda.* knobs from the environment */

static void setup(void)
{
    /* the engine suites' settings; slices of 256 KiB cross a 2 MiB pool
     * chunk in 8, and emulated copies get a generous timeout */
    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_TCP, true);

    o.slice_bytes = 256 * 1024;
    o.request_timeout_ms = 20000;
    o.no_policy = !with_policy;
    target = eng_test_create(&o);
    o.listen = NULL;
    ini = eng_test_create(&o);
    remote = malloc(SPAN);
    ck_assert_ptr_nonnull(remote);
    ck_assert_int_eq(teshim_register(target, remote, SPAN, "cpu", true), 0);
    ck_assert_int_eq(cudaMalloc(&dev, SPAN), cudaSuccess);
    ck_assert_int_eq(teshim_register(ini, dev, SPAN, "cuda:0", false), 0);
    seg = eng_test_open(ini, teshim_engine_port(target));
}

/* One pool's worth of pinned memory (2 x 2 MiB) for the whole process. */
static void setup_small_budget(void)
{
    setenv("TESHIM_CONFIG", "/dev/null", 1);
    setenv("TESHIM_CUDA_PINNED_MAX_BYTES", "4M", 1);
    /* the pool's host memcpy shared with 3 copy threads, whatever the CPUs */
    setenv("TESHIM_CUDA_COPY_THREADS", "4", 1);
    with_policy = true;
    setup();
}

static void teardown(void)
{
    teshim_engine_destroy(ini);
    teshim_engine_destroy(target);
    cudaFree(dev);
    free(remote);
}

/* Run n requests of len bytes at offsets k * len; returns failures. */
static size_t run(enum teshim_opcode op, size_t len, size_t n, int *first_error)
{
    struct teshim_request r[16];
    struct teshim_task_status st;
    teshim_batch_t b;
    size_t failed = 0;

    ck_assert_uint_le(n, 16);
    for (size_t k = 0; k < n; k++)
        r[k] = (struct teshim_request){.opcode = op,
                                       .local = (char *)dev + k * len,
                                       .segment = seg,
                                       .remote_offset = (uint64_t)(uintptr_t)remote + k * len,
                                       .length = len};
    ck_assert_int_eq(teshim_batch_alloc(ini, n, &b), 0);
    ck_assert_int_eq(teshim_submit(ini, b, r, n), 0);
    ck_assert_int_ge(teshim_batch_wait(ini, b, 30000), 0);
    *first_error = 0;
    for (size_t k = 0; k < n; k++) {
        ck_assert_int_eq(teshim_task_status(ini, b, k, &st), 0);
        if (st.state != TESHIM_TASK_COMPLETED) {
            failed++;
            if (!*first_error)
                *first_error = st.error;
        } else {
            ck_assert_uint_eq(st.transferred, len);
        }
    }
    ck_assert_int_eq(teshim_batch_free(ini, b), 0);
    return failed;
}

static void write_then_read(size_t len, size_t n)
{
    unsigned char *ref = malloc(len * n), *back = malloc(len * n);
    int err;

    /* device -> peer */
    fill(ref, len * n, (unsigned)len);
    ck_assert_int_eq(cudaMemcpy(dev, ref, len * n, cudaMemcpyHostToDevice), cudaSuccess);
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
    memset(remote, 0, len * n);
    ck_assert_uint_eq(run(TESHIM_OP_WRITE, len, n, &err), 0);
    ck_assert_int_eq(memcmp(remote, ref, len * n), 0);
    /* peer -> device */
    fill(remote, len * n, (unsigned)len + 7);
    ck_assert_int_eq(cudaMemset(dev, 0, len * n), cudaSuccess);
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
    ck_assert_uint_eq(run(TESHIM_OP_READ, len, n, &err), 0);
    ck_assert_int_eq(cudaMemcpy(back, dev, len * n, cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_int_eq(memcmp(back, remote, len * n), 0);
    /* the engine's calls leave no error for the application */
    ck_assert_int_eq(cudaPeekAtLastError(), cudaSuccess);
    free(ref);
    free(back);
}

START_TEST(small_and_odd_sizes)
{
    write_then_read(1, 1);
    write_then_read(4097, 3);
}
END_TEST

START_TEST(across_pool_chunks)
{
    /* 5 MiB + 3: three 2 MiB pool chunks, double-buffered. */
    write_then_read((5u << 20) + 3, 2);
}
END_TEST

START_TEST(many_requests_in_one_batch)
{
    /* 16 requests of 512 KiB in flight together, each with a pool. */
    write_then_read(512 * 1024, 16);
}
END_TEST

START_TEST(application_streams_held)
{
    /* The engine copies on a non-blocking stream of its own: work the
     * application left pending on its streams does not hold it up. */
    size_t len = 1u << 20;
    unsigned char *ref = malloc(2 * len), *back = malloc(2 * len);
    cudaStream_t s;
    int err;

    fill(ref, 2 * len, 3);
    ck_assert_int_eq(cudaMemcpy(dev, ref, 2 * len, cudaMemcpyHostToDevice), cudaSuccess);
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
    ck_assert_int_eq(cudaStreamCreate(&s), cudaSuccess);
    cemu_test_hold_stream(s);
    cemu_test_hold_stream(cudaStreamLegacy);
    ck_assert_int_eq(cudaMemsetAsync((char *)dev + SPAN - 4096, 1, 4096, s), cudaSuccess);
    ck_assert_int_eq(cudaMemsetAsync((char *)dev + SPAN - 8192, 1, 4096, 0), cudaSuccess);
    memset(remote, 0, 2 * len);
    ck_assert_uint_eq(run(TESHIM_OP_WRITE, len, 2, &err), 0);
    ck_assert_int_eq(memcmp(remote, ref, 2 * len), 0);
    fill(remote, 2 * len, 4);
    ck_assert_uint_eq(run(TESHIM_OP_READ, len, 2, &err), 0);
    cemu_test_release_stream(s);
    cemu_test_release_stream(cudaStreamLegacy);
    ck_assert_int_eq(cudaMemcpy(back, dev, 2 * len, cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_int_eq(memcmp(back, remote, 2 * len), 0);
    free(ref);
    free(back);
}
END_TEST

START_TEST(a_stalled_device_copy_blocks_no_io_thread)
{
    /* The engine's stream is held from its creation: a WRITE from device
     * memory cannot get its data. Meanwhile a WRITE from host memory on the
     * same engine and connections completes; then the device one does. */
    static unsigned char host[65536];
    struct teshim_request r[1];
    struct teshim_task_status st;
    teshim_batch_t bd, bh;
    unsigned char *ref = malloc(65536);

    fill(ref, 65536, 21);
    ck_assert_int_eq(cudaMemcpy(dev, ref, 65536, cudaMemcpyHostToDevice), cudaSuccess);
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
    fill(host, sizeof(host), 22);
    ck_assert_int_eq(teshim_register(ini, host, sizeof(host), "cpu", false), 0);
    memset(remote, 0, 2 * 65536);
    cemu_test_hold_new_streams(1);
    r[0] = (struct teshim_request){.opcode = TESHIM_OP_WRITE,
                                   .local = dev,
                                   .segment = seg,
                                   .remote_offset = (uint64_t)(uintptr_t)remote,
                                   .length = 65536};
    ck_assert_int_eq(teshim_batch_alloc(ini, 1, &bd), 0);
    ck_assert_int_eq(teshim_submit(ini, bd, r, 1), 0);
    r[0].local = host;
    r[0].remote_offset += 65536;
    ck_assert_int_eq(teshim_batch_alloc(ini, 1, &bh), 0);
    ck_assert_int_eq(teshim_submit(ini, bh, r, 1), 0);
    ck_assert_int_ge(teshim_batch_wait(ini, bh, 10000), 0);
    ck_assert_int_eq(teshim_task_status(ini, bh, 0, &st), 0);
    ck_assert_int_eq(st.state, TESHIM_TASK_COMPLETED);
    ck_assert_int_eq(memcmp(remote + 65536, host, 65536), 0);
    ck_assert_int_eq(teshim_task_status(ini, bd, 0, &st), 0);
    ck_assert_int_eq(st.state, TESHIM_TASK_PENDING);
    cemu_test_hold_new_streams(0);
    cemu_test_release_all_streams();
    ck_assert_int_ge(teshim_batch_wait(ini, bd, 10000), 0);
    ck_assert_int_eq(teshim_task_status(ini, bd, 0, &st), 0);
    ck_assert_int_eq(st.state, TESHIM_TASK_COMPLETED);
    ck_assert_int_eq(memcmp(remote, ref, 65536), 0);
    ck_assert_int_eq(teshim_batch_free(ini, bd), 0);
    ck_assert_int_eq(teshim_batch_free(ini, bh), 0);
    ck_assert_int_eq(teshim_unregister(ini, host), 0);
    free(ref);
}
END_TEST

START_TEST(pinned_allocation_failure_fails_the_task)
{
    int err;

    /* Every pinned allocation fails: the task fails with an error, no hang,
     * and the engine works again once allocations do. */
    cemu_test_fail_host_alloc(-1);
    ck_assert_uint_eq(run(TESHIM_OP_WRITE, 65536, 2, &err), 2);
    ck_assert_int_eq(err, -EIO);
    ck_assert_int_eq(cudaPeekAtLastError(), cudaSuccess);
    cemu_test_fail_host_alloc(0);
    write_then_read(65536, 2);
}
END_TEST

START_TEST(requests_wait_for_the_pinned_budget)
{
    /* 16 device requests, pinned memory for one transfer at a time: each
     * waits for the pool, none fails. */
    write_then_read(512 * 1024, 16);
    /* pageable staging, bounced through a pool: cuda.copy_threads reached it */
    ck_assert_uint_eq(scc_threads_running(), 3);
}
END_TEST

/* Two engines of one process, made with different cuda.* settings, each
 * copy through pools of their own settings (the first engine's used to
 * size the pools of all). */
START_TEST(each_engine_keeps_its_own_cuda_settings)
{
    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    struct teshim_engine *first;
    void *dev1;
    uint64_t before;
    int err = 0;

    /* no staging share of the budget: every copy goes through a pool */
    setenv("TESHIM_CONFIG", "/dev/null", 1);
    setenv("TESHIM_CUDA_BOUNCE_BUFFERS", "2", 1);
    setenv("TESHIM_CUDA_BOUNCE_CHUNK_BYTES", "1M", 1);
    setenv("TESHIM_CUDA_PINNED_MAX_BYTES", "2M", 1);
    o.no_policy = false;
    first = eng_test_create(&o);
    ck_assert_int_eq(cudaMalloc(&dev1, 1 << 20), cudaSuccess);
    ck_assert_int_eq(teshim_register(first, dev1, 1 << 20, "cuda:0", false), 0);
    /* the engines made now copy through two chunks of 4 MiB */
    setenv("TESHIM_CUDA_BOUNCE_CHUNK_BYTES", "4M", 1);
    setenv("TESHIM_CUDA_PINNED_MAX_BYTES", "8M", 1);
    with_policy = true;
    setup();
    before = cemu_test_pinned_bytes();
    ck_assert_uint_eq(run(TESHIM_OP_WRITE, 4u << 20, 1, &err), 0);
    ck_assert_uint_eq(cemu_test_pinned_bytes() - before, 8u << 20);
    teardown();
    teshim_engine_destroy(first);
    cudaFree(dev1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cuda_engine");
    TCase *tc = tcase_create("tcp");
    SRunner *sr;
    int failed;

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, small_and_odd_sizes);
    tcase_add_test(tc, across_pool_chunks);
    tcase_add_test(tc, many_requests_in_one_batch);
    tcase_add_test(tc, application_streams_held);
    tcase_add_test(tc, a_stalled_device_copy_blocks_no_io_thread);
    tcase_add_test(tc, pinned_allocation_failure_fails_the_task);
    suite_add_tcase(s, tc);
    tc = tcase_create("budget");
    tcase_add_checked_fixture(tc, setup_small_budget, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, requests_wait_for_the_pinned_budget);
    suite_add_tcase(s, tc);
    tc = tcase_create("settings");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, each_engine_keeps_its_own_cuda_settings);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
