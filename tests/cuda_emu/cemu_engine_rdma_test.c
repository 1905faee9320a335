/*
 * Device memory over the rdma transport, against both emulations (the CUDA
 * runtime linked in, libibverbs found through LD_LIBRARY_PATH): the
 * staging wrapper's host buffer is no registration of the engine, so the
 * rdma transport stages its slices through its registered pool and counts
 * them (rdma_staged); the data arrives intact both ways.
 */
#include <check.h>
#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "eng_test.h"

#define SPAN (3u << 20)

START_TEST(device_memory_staged)
{
    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_RDMA, true);
    o.request_timeout_ms = 20000;
    struct teshim_engine *tgt = eng_test_create(&o);
    o.listen = NULL;
    struct teshim_engine *ini = eng_test_create(&o);
    unsigned char *remote = malloc(SPAN), *host = malloc(SPAN), *back = malloc(SPAN);
    void *dev;

    ck_assert_ptr_nonnull(remote);
    ck_assert_ptr_nonnull(host);
    ck_assert_ptr_nonnull(back);
    ck_assert_int_eq(teshim_register(tgt, remote, SPAN, "cpu", true), 0);
    ck_assert_int_eq(cudaMalloc(&dev, SPAN), cudaSuccess);
    ck_assert_int_eq(teshim_register(ini, dev, SPAN, "cuda:0", false), 0);
    teshim_segment_t seg = eng_test_open(ini, teshim_engine_port(tgt));
    ck_assert_str_eq(teshim_segment_transport(ini, seg), "rdma");

    eng_test_fill(host, SPAN, 5);
    ck_assert_int_eq(cudaMemcpy(dev, host, SPAN, cudaMemcpyHostToDevice), cudaSuccess);
    /* a pageable copy may still be landing: the engine's stream does not
     * wait for the application's */
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
    struct teshim_request w = {TESHIM_OP_WRITE, dev, seg, (uint64_t)(uintptr_t)remote, SPAN};
    ck_assert_int_eq(eng_test_one(ini, &w).state, TESHIM_TASK_COMPLETED);
    ck_assert(eng_test_sum(remote, SPAN) == eng_test_sum(host, SPAN));

    eng_test_fill(remote, SPAN, 6);
    struct teshim_request r = {TESHIM_OP_READ, dev, seg, (uint64_t)(uintptr_t)remote, SPAN};
    ck_assert_int_eq(eng_test_one(ini, &r).state, TESHIM_TASK_COMPLETED);
    ck_assert_int_eq(cudaMemcpy(back, dev, SPAN, cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert(eng_test_sum(back, SPAN) == eng_test_sum(remote, SPAN));

    struct teshim_engine_stats st;
    ck_assert_int_eq(teshim_engine_stats(ini, &st), 0);
    /* every slice of both requests went through the pool (64 KiB slices) */
    ck_assert_uint_eq(st.rdma_staged, 2 * SPAN / (256 * 1024));
    teshim_engine_destroy(ini);
    teshim_engine_destroy(tgt);
    cudaFree(dev);
    free(remote);
    free(host);
    free(back);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cuda_engine_rdma");
    TCase *tc = tcase_create("rdma");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, device_memory_staged);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
