/*
 * A target serving its own device memory ("cuda:0", remote-accessible) to
 * peers, against the emulated runtime: READ and WRITE from host and from
 * device memory at sizes below, at and across the pool chunk; a WRITE is
 * acknowledged only once its bytes are on the device; answers stay in
 * request order on a connection while a device copy runs; the staging
 * buffers are reused, not allocated per request; pinned allocation failure
 * and a small pinned budget; bounds; a same-host (local transport) peer
 * reaching device memory over tcp. Device memory in the emulation faults
 * on host access, so a target that touched it with the CPU would crash.
 */
#include <check.h>
#include <cuda_runtime_api.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cemu_test.h"
#include "teshim/cudacopy.h"
#include "eng_test.h"

#define SPAN (12u << 20)

static struct teshim_engine *target, *ini;
static teshim_segment_t seg;
static void *tdev;           /* the target's device memory, served */
static unsigned char *thost; /* the target's host memory, served */
static unsigned char *lhost; /* the initiator's host buffer */
static void *ldev;           /* the initiator's device buffer */
static int transport = TESHIM_TRANSPORT_TCP;
static bool with_policy;
static enum teshim_local_mode local_mode; /* of both engines; 0: eng_test_opts' */

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * 29 + seed + (i >> 12));
}

static void setup(void)
{
    /* the engine suites' settings; slices of 256 KiB cross a 2 MiB pool
     * chunk in 8, and emulated copies get a generous timeout */
    struct teshim_engine_opts o = eng_test_opts(transport, true);

    o.slice_bytes = 256 * 1024;
    o.request_timeout_ms = 20000;
    o.no_policy = !with_policy;
    if (local_mode)
        o.local_mode = local_mode;
    target = eng_test_create(&o);
    o.listen = NULL;
    ini = eng_test_create(&o);
    ck_assert_int_eq(cudaMalloc(&tdev, SPAN), cudaSuccess);
    ck_assert_int_eq(teshim_register(target, tdev, SPAN, "cuda:0", true), 0);
    thost = malloc(SPAN);
    ck_assert_ptr_nonnull(thost);
    ck_assert_int_eq(teshim_register(target, thost, SPAN, "cpu", true), 0);
    lhost = malloc(SPAN);
    ck_assert_ptr_nonnull(lhost);
    ck_assert_int_eq(teshim_register(ini, lhost, SPAN, "cpu", false), 0);
    ck_assert_int_eq(cudaMalloc(&ldev, SPAN), cudaSuccess);
    ck_assert_int_eq(teshim_register(ini, ldev, SPAN, "cuda:0", false), 0);
    seg = eng_test_open(ini, teshim_engine_port(target));
}

static void setup_local(void)
{
    transport = TESHIM_TRANSPORT_AUTO;
    local_mode = TESHIM_LOCAL_MODE_INITIATOR;
    setup();
}

/* the same host, the target copying (engine.local.mode = target) */
static void setup_local_target(void)
{
    transport = TESHIM_TRANSPORT_AUTO;
    local_mode = TESHIM_LOCAL_MODE_TARGET;
    setup();
}

/* One pool's worth of pinned memory: staging buffers are pageable and every
 * device copy goes through the pool. */
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
    cudaFree(tdev);
    cudaFree(ldev);
    free(thost);
    free(lhost);
}

static teshim_batch_t submit(enum teshim_opcode op, void *local, uint64_t raddr, size_t len,
                             size_t n)
{
    struct teshim_request r[16];
    teshim_batch_t b;

    ck_assert_uint_le(n, 16);
    for (size_t k = 0; k < n; k++)
        r[k] = (struct teshim_request){.opcode = op,
                                       .local = (char *)local + k * len,
                                       .segment = seg,
                                       .remote_offset = raddr + k * len,
                                       .length = len};
    ck_assert_int_eq(teshim_batch_alloc(ini, n, &b), 0);
    ck_assert_int_eq(teshim_submit(ini, b, r, n), 0);
    return b;
}

/* Run n requests of len bytes at offsets k * len; failures, first error. */
static size_t run(enum teshim_opcode op, void *local, uint64_t raddr, size_t len, size_t n,
                  int *first_error)
{
    teshim_batch_t b = submit(op, local, raddr, len, n);
    struct teshim_task_status st;
    size_t failed = 0;

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

static uint64_t tdev_addr(size_t off)
{
    return (uint64_t)(uintptr_t)tdev + off;
}

/* Host memory -> the target's device memory and back, checked on the device. */
static void host_round_trip(size_t len, size_t n)
{
    size_t total = len * n;
    unsigned char *ref = malloc(total), *back = malloc(total);
    int err;

    fill(lhost, total, (unsigned)len);
    memcpy(ref, lhost, total);
    ck_assert_int_eq(cudaMemset(tdev, 0, total + 4096), cudaSuccess);
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
    ck_assert_uint_eq(run(TESHIM_OP_WRITE, lhost, tdev_addr(0), len, n, &err), 0);
    /* acknowledged: the bytes are on the device, nothing past them */
    ck_assert_int_eq(cudaMemcpy(back, tdev, total, cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_int_eq(memcmp(back, ref, total), 0);
    unsigned char tail[4096], zero[4096] = {0};
    ck_assert_int_eq(cudaMemcpy(tail, (char *)tdev + total, sizeof(tail), cudaMemcpyDeviceToHost),
                     cudaSuccess);
    ck_assert_int_eq(memcmp(tail, zero, sizeof(tail)), 0);

    fill(ref, total, (unsigned)len + 99);
    ck_assert_int_eq(cudaMemcpy(tdev, ref, total, cudaMemcpyHostToDevice), cudaSuccess);
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
    memset(lhost, 0, total);
    ck_assert_uint_eq(run(TESHIM_OP_READ, lhost, tdev_addr(0), len, n, &err), 0);
    ck_assert_int_eq(memcmp(lhost, ref, total), 0);
    ck_assert_int_eq(cudaPeekAtLastError(), cudaSuccess);
    free(ref);
    free(back);
}

START_TEST(host_to_target_device_small_and_odd)
{
    host_round_trip(1, 1);
    host_round_trip(4097, 3);
}
END_TEST

START_TEST(host_to_target_device_across_chunks)
{
    /* 5 MiB + 3 in 256 KiB slices over two connections */
    host_round_trip((5u << 20) + 3, 2);
}
END_TEST

START_TEST(host_to_target_device_many_in_flight)
{
    host_round_trip(512 * 1024, 16);
}
END_TEST

START_TEST(device_to_device)
{
    size_t len = (3u << 20) + 11;
    unsigned char *ref = malloc(len), *back = malloc(len);
    int err;

    fill(ref, len, 5);
    ck_assert_int_eq(cudaMemcpy(ldev, ref, len, cudaMemcpyHostToDevice), cudaSuccess);
    ck_assert_int_eq(cudaMemset(tdev, 0, len), cudaSuccess);
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
    ck_assert_uint_eq(run(TESHIM_OP_WRITE, ldev, tdev_addr(4096), len, 1, &err), 0);
    ck_assert_int_eq(cudaMemcpy(back, (char *)tdev + 4096, len, cudaMemcpyDeviceToHost),
                     cudaSuccess);
    ck_assert_int_eq(memcmp(back, ref, len), 0);
    ck_assert_int_eq(cudaMemset(ldev, 0, len), cudaSuccess);
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
    ck_assert_uint_eq(run(TESHIM_OP_READ, ldev, tdev_addr(4096), len, 1, &err), 0);
    ck_assert_int_eq(cudaMemcpy(back, ldev, len, cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_int_eq(memcmp(back, ref, len), 0);
    free(ref);
    free(back);
}
END_TEST

START_TEST(write_is_acknowledged_only_on_the_device)
{
    /* The engine's own stream is held from its creation: the target has
     * the bytes but cannot put them on the device, so the WRITE stays
     * pending; a READ of the target's host memory on the same connections
     * queues behind it in order and completes after. */
    size_t len = 65536;
    struct teshim_task_status st;
    unsigned char *back = malloc(len);

    fill(lhost, len, 7);
    fill(thost, len, 8);
    cemu_test_hold_new_streams(1);
    teshim_batch_t w = submit(TESHIM_OP_WRITE, lhost, tdev_addr(0), len, 1);
    ck_assert_int_eq(teshim_batch_wait(ini, w, 300), -ETIMEDOUT);
    ck_assert_int_eq(teshim_task_status(ini, w, 0, &st), 0);
    ck_assert_int_eq(st.state, TESHIM_TASK_PENDING);
    cemu_test_hold_new_streams(0);
    cemu_test_release_all_streams();
    ck_assert_int_eq(teshim_batch_wait(ini, w, 10000), 0);
    ck_assert_int_eq(teshim_task_status(ini, w, 0, &st), 0);
    ck_assert_int_eq(st.state, TESHIM_TASK_COMPLETED);
    ck_assert_int_eq(cudaMemcpy(back, tdev, len, cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_int_eq(memcmp(back, lhost, len), 0);
    ck_assert_int_eq(teshim_batch_free(ini, w), 0);
    free(back);
}
END_TEST

START_TEST(answers_stay_in_order_behind_a_device_copy)
{
    /* Every request on one connection: a device READ whose copy is held,
     * then host READs. They complete only after the device one, and every
     * byte lands where it belongs. */
    struct teshim_engine_opts o = {.size = sizeof(o),
                                   .transport = TESHIM_TRANSPORT_TCP,
                                   .io_threads = 1,
                                   .conns_per_peer = 1,
                                   .no_policy = true};
    struct teshim_engine *one;
    teshim_segment_t s1;
    struct teshim_request r[4];
    struct teshim_task_status st;
    teshim_batch_t b;
    char name[64];
    size_t len = 65536;

    ck_assert_int_eq(teshim_engine_create(&o, &one), 0);
    ck_assert_int_eq(teshim_register(one, lhost, SPAN, "cpu", false), 0);
    snprintf(name, sizeof(name), "127.0.0.1:%d", teshim_engine_port(target));
    ck_assert_int_eq(teshim_segment_open(one, name, &s1), 0);
    unsigned char *ref = malloc(len);
    fill(ref, len, 31);
    ck_assert_int_eq(cudaMemcpy(tdev, ref, len, cudaMemcpyHostToDevice), cudaSuccess);
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
    fill(thost, 3 * len, 32);
    memset(lhost, 0, 4 * len);
    cemu_test_hold_new_streams(1);
    r[0] = (struct teshim_request){.opcode = TESHIM_OP_READ,
                                   .local = lhost,
                                   .segment = s1,
                                   .remote_offset = tdev_addr(0),
                                   .length = len};
    for (int k = 1; k < 4; k++)
        r[k] = (struct teshim_request){.opcode = TESHIM_OP_READ,
                                       .local = lhost + (size_t)k * len,
                                       .segment = s1,
                                       .remote_offset = (uint64_t)(uintptr_t)thost + (k - 1) * len,
                                       .length = len};
    ck_assert_int_eq(teshim_batch_alloc(one, 4, &b), 0);
    ck_assert_int_eq(teshim_submit(one, b, r, 4), 0);
    ck_assert_int_eq(teshim_batch_wait(one, b, 300), -ETIMEDOUT);
    for (int k = 0; k < 4; k++) {
        ck_assert_int_eq(teshim_task_status(one, b, (size_t)k, &st), 0);
        ck_assert_int_eq(st.state, TESHIM_TASK_PENDING);
    }
    cemu_test_hold_new_streams(0);
    cemu_test_release_all_streams();
    ck_assert_int_eq(teshim_batch_wait(one, b, 10000), 0);
    ck_assert_int_eq(memcmp(lhost, ref, len), 0);
    ck_assert_int_eq(memcmp(lhost + len, thost, 3 * len), 0);
    ck_assert_int_eq(teshim_batch_free(one, b), 0);
    teshim_engine_destroy(one);
    free(ref);
}
END_TEST

START_TEST(staging_buffers_are_reused)
{
    /* Warm up, then make every pinned allocation fail: further requests
     * still complete and still copy from pinned memory, so no request
     * allocates its own staging buffer. */
    int err;

    uint64_t thost_addr = (uint64_t)(uintptr_t)thost;

    host_round_trip(65536, 8);
    /* the initiator's own device memory too (engine-wide cache) */
    ck_assert_uint_eq(run(TESHIM_OP_WRITE, ldev, thost_addr, 65536, 1, &err), 0);
    ck_assert_uint_eq(run(TESHIM_OP_READ, ldev, thost_addr, 65536, 1, &err), 0);
    cemu_test_reset_counters();
    cemu_test_fail_host_alloc(-1);
    for (int round = 0; round < 10; round++) {
        fill(lhost, 65536, (unsigned)round);
        ck_assert_uint_eq(run(TESHIM_OP_WRITE, lhost, tdev_addr(0), 65536, 1, &err), 0);
        ck_assert_uint_eq(run(TESHIM_OP_READ, lhost + 65536, tdev_addr(0), 65536, 1, &err), 0);
        ck_assert_int_eq(memcmp(lhost, lhost + 65536, 65536), 0);
        /* device -> target host -> device */
        ck_assert_uint_eq(run(TESHIM_OP_READ, ldev, tdev_addr(0), 65536, 1, &err), 0);
        ck_assert_uint_eq(run(TESHIM_OP_WRITE, ldev, thost_addr, 65536, 1, &err), 0);
        ck_assert_int_eq(memcmp(thost, lhost, 65536), 0);
    }
    cemu_test_fail_host_alloc(0);
    ck_assert_uint_ge(cemu_test_copies(CEMU_H2D, CEMU_HOST_PINNED), 20);
    ck_assert_uint_ge(cemu_test_copies(CEMU_D2H, CEMU_HOST_PINNED), 30);
    ck_assert_uint_eq(cemu_test_copies(CEMU_H2D, CEMU_HOST_PAGEABLE), 0);
    ck_assert_uint_eq(cemu_test_copies(CEMU_D2H, CEMU_HOST_PAGEABLE), 0);
}
END_TEST

START_TEST(pinned_allocation_failure_fails_the_request)
{
    /* No pinned memory at all on a fresh engine pair (this test runs in its
     * own process): staging is pageable and the pool cannot be made, so the
     * requests fail with -EIO, no hang; the application sees no error. */
    int err;

    cemu_test_fail_host_alloc(-1);
    ck_assert_uint_eq(run(TESHIM_OP_WRITE, lhost, tdev_addr(0), 65536, 2, &err), 2);
    ck_assert_int_eq(err, -EIO);
    ck_assert_uint_eq(run(TESHIM_OP_READ, lhost, tdev_addr(0), 65536, 2, &err), 2);
    ck_assert_int_eq(err, -EIO);
    ck_assert_int_eq(cudaPeekAtLastError(), cudaSuccess);
    cemu_test_fail_host_alloc(0);
    host_round_trip(65536, 2);
}
END_TEST

START_TEST(out_of_bounds_is_rejected)
{
    int err;

    /* straddles the end of the device registration */
    ck_assert_uint_eq(run(TESHIM_OP_READ, lhost, tdev_addr(SPAN - 4096), 8192, 1, &err), 1);
    ck_assert_int_eq(err, -EFAULT);
    ck_assert_uint_eq(run(TESHIM_OP_WRITE, lhost, tdev_addr(SPAN - 4096), 8192, 1, &err), 1);
    ck_assert_int_eq(err, -EFAULT);
    host_round_trip(4096, 1);
}
END_TEST

START_TEST(regions_report_device_memory)
{
    struct teshim_region r[4];
    int n = teshim_segment_regions(ini, seg, r, 4), dev = 0, host = 0;

    ck_assert_int_eq(n, 2);
    for (int i = 0; i < n; i++) {
        if (r[i].addr == tdev_addr(0)) {
            ck_assert_uint_eq(r[i].flags, TESHIM_REGION_DEVICE);
            dev++;
        } else {
            ck_assert_uint_eq(r[i].addr, (uint64_t)(uintptr_t)thost);
            ck_assert_uint_eq(r[i].flags, 0);
            host++;
        }
    }
    ck_assert_int_eq(dev + host, 2);
    ck_assert_int_eq(dev, 1);
}
END_TEST

START_TEST(same_host_peer_reaches_device_memory_over_tcp)
{
    /* process_vm_* cannot reach device memory: the segment's data path is
     * local, device requests take a tcp path made for them (local-target:
     * READ/WRITE frames instead of LOCAL_* ones). */
    int err;

    ck_assert_str_eq(teshim_segment_transport(ini, seg),
                     local_mode == TESHIM_LOCAL_MODE_TARGET ? "local-target" : "local");
    host_round_trip(300 * 1024, 4);
    fill(thost, 65536, 3);
    ck_assert_uint_eq(run(TESHIM_OP_READ, lhost, (uint64_t)(uintptr_t)thost, 65536, 1, &err), 0);
    ck_assert_int_eq(memcmp(lhost, thost, 65536), 0);
    ck_assert_int_eq(teshim_segment_close(ini, seg), 0);
}
END_TEST

START_TEST(small_budget_goes_through_the_pool)
{
    cemu_test_reset_counters();
    host_round_trip((5u << 20) + 3, 2);
    /* pageable staging, bounced through the pool's pinned chunks */
    ck_assert_uint_ge(cemu_test_copies(CEMU_H2D, CEMU_HOST_PINNED), 6);
    ck_assert_uint_le(cemu_test_pinned_bytes(), 4u << 20);
    /* the pool's host memcpy went to the copy threads cuda.copy_threads set */
    ck_assert_uint_eq(scc_threads_running(), 3);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cuda_serve");
    TCase *tc = tcase_create("tcp");
    SRunner *sr;
    int failed;

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, host_to_target_device_small_and_odd);
    tcase_add_test(tc, host_to_target_device_across_chunks);
    tcase_add_test(tc, host_to_target_device_many_in_flight);
    tcase_add_test(tc, device_to_device);
    tcase_add_test(tc, write_is_acknowledged_only_on_the_device);
    tcase_add_test(tc, answers_stay_in_order_behind_a_device_copy);
    tcase_add_test(tc, staging_buffers_are_reused);
    tcase_add_test(tc, pinned_allocation_failure_fails_the_request);
    tcase_add_test(tc, out_of_bounds_is_rejected);
    tcase_add_test(tc, regions_report_device_memory);
    suite_add_tcase(s, tc);
    tc = tcase_create("local");
    tcase_add_checked_fixture(tc, setup_local, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, same_host_peer_reaches_device_memory_over_tcp);
    suite_add_tcase(s, tc);
    tc = tcase_create("local_target");
    tcase_add_checked_fixture(tc, setup_local_target, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, same_host_peer_reaches_device_memory_over_tcp);
    suite_add_tcase(s, tc);
    tc = tcase_create("budget");
    tcase_add_checked_fixture(tc, setup_small_budget, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, small_budget_goes_through_the_pool);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
