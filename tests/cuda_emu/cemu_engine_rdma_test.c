/*
 * Device memory over the rdma transport, against both emulations (the CUDA
 * runtime linked in, libibverbs found through LD_LIBRARY_PATH).
 *
 * Without peer memory (the emulated verbs' default: device memory is a
 * PROT_NONE mapping, which ibv_reg_mr cannot pin: EFAULT) a cuda:N region
 * is staged: the staging wrapper's host buffer is no registration of the
 * engine, so the rdma transport stages its slices through its registered
 * pool and counts them (rdma_staged), and a peer's device region is
 * reached over tcp. With peer memory (VERBS_EMU_PEER_MEMORY=1, the
 * emulated runtime as the peer-memory client) the region is registered
 * directly: no slice is staged, and a peer reaches it over rdma.
 * engine.rdma.gpu_direct=on without peer memory fails the registration.
 */
#include <check.h>
#include <cuda_runtime_api.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "eng_test.h"

#define SPAN (3u << 20)
#define SLICES (SPAN / (256 * 1024)) /* engine.rdma.slice_bytes' default */

struct pair {
    struct teshim_engine *tgt, *ini;
};

/* Two engines; the TESHIM_* settings of the case apply. */
static struct pair pair_new(void)
{
    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_RDMA, true);
    struct pair p;

    o.no_policy = false;
    o.request_timeout_ms = 20000;
    p.tgt = eng_test_create(&o);
    o.listen = NULL;
    p.ini = eng_test_create(&o);
    return p;
}

static void pair_free(struct pair *p)
{
    teshim_engine_destroy(p->ini);
    teshim_engine_destroy(p->tgt);
}

static struct teshim_engine_stats stats(struct teshim_engine *e)
{
    struct teshim_engine_stats st;

    ck_assert_int_eq(teshim_engine_stats(e, &st), 0);
    return st;
}

static void *dev_alloc(void)
{
    void *dev;

    ck_assert_int_eq(cudaMalloc(&dev, SPAN), cudaSuccess);
    return dev;
}

/* One request of SPAN bytes between local and the peer's remote. */
static void one(struct pair *p, int op, void *local, teshim_segment_t seg, void *remote)
{
    struct teshim_request q = {op, local, seg, (uint64_t)(uintptr_t)remote, SPAN};

    ck_assert_int_eq(eng_test_one(p->ini, &q).state, TESHIM_TASK_COMPLETED);
}

/* The segment closed, the initiator's and the peer's buffers unregistered. */
static void round_end(struct pair *p, teshim_segment_t seg, void *mine, void *peers)
{
    ck_assert_int_eq(teshim_segment_close(p->ini, seg), 0);
    ck_assert_int_eq(teshim_unregister(p->ini, mine), 0);
    ck_assert_int_eq(teshim_unregister(p->tgt, peers), 0);
}

/* Device memory as the local buffer of a WRITE then a READ to a host
 * region of the peer; the data arrives intact both ways. */
static void local_device_round(struct pair *p)
{
    unsigned char *remote = malloc(SPAN), *host = malloc(SPAN), *back = malloc(SPAN);
    void *dev = dev_alloc();

    ck_assert(remote && host && back);
    ck_assert_int_eq(teshim_register(p->tgt, remote, SPAN, "cpu", true), 0);
    ck_assert_int_eq(teshim_register(p->ini, dev, SPAN, "cuda:0", false), 0);
    teshim_segment_t seg = eng_test_open(p->ini, teshim_engine_port(p->tgt));
    ck_assert_str_eq(teshim_segment_transport(p->ini, seg), "rdma");

    eng_test_fill(host, SPAN, 5);
    ck_assert_int_eq(cudaMemcpy(dev, host, SPAN, cudaMemcpyHostToDevice), cudaSuccess);
    /* a pageable copy may still be landing: the engine's stream does not
     * wait for the application's */
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
    one(p, TESHIM_OP_WRITE, dev, seg, remote);
    ck_assert(eng_test_sum(remote, SPAN) == eng_test_sum(host, SPAN));

    eng_test_fill(remote, SPAN, 6);
    one(p, TESHIM_OP_READ, dev, seg, remote);
    ck_assert_int_eq(cudaMemcpy(back, dev, SPAN, cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert(eng_test_sum(back, SPAN) == eng_test_sum(remote, SPAN));

    round_end(p, seg, dev, remote);
    cudaFree(dev);
    free(remote);
    free(host);
    free(back);
}

/* The peer's device memory as the remote region of a WRITE then a READ
 * from a registered host buffer; the data arrives intact both ways. */
static void remote_device_round(struct pair *p)
{
    unsigned char *local = malloc(SPAN), *back = malloc(SPAN);
    void *dev = dev_alloc();

    ck_assert(local && back);
    ck_assert_int_eq(teshim_register(p->tgt, dev, SPAN, "cuda:0", true), 0);
    ck_assert_int_eq(teshim_register(p->ini, local, SPAN, "cpu", false), 0);
    teshim_segment_t seg = eng_test_open(p->ini, teshim_engine_port(p->tgt));
    ck_assert_str_eq(teshim_segment_transport(p->ini, seg), "rdma");

    eng_test_fill(local, SPAN, 7);
    one(p, TESHIM_OP_WRITE, local, seg, dev);
    ck_assert_int_eq(cudaMemcpy(back, dev, SPAN, cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert(eng_test_sum(back, SPAN) == eng_test_sum(local, SPAN));

    eng_test_fill(back, SPAN, 8);
    ck_assert_int_eq(cudaMemcpy(dev, back, SPAN, cudaMemcpyHostToDevice), cudaSuccess);
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
    one(p, TESHIM_OP_READ, local, seg, dev);
    ck_assert(eng_test_sum(local, SPAN) == eng_test_sum(back, SPAN));

    round_end(p, seg, local, dev);
    cudaFree(dev);
    free(local);
    free(back);
}

START_TEST(device_memory_staged)
{
    unsetenv("VERBS_EMU_PEER_MEMORY");
    setenv("TESHIM_LOG_LEVEL", "info", 1);
    struct eng_test_log log = eng_test_log_capture();
    struct pair p = pair_new();

    local_device_round(&p);
    struct teshim_engine_stats st = stats(p.ini);
    uint64_t conns = st.conn_new; /* a segment over rdma: its handshake */
    /* every slice of both requests went through the pool */
    ck_assert_uint_eq(st.rdma_staged, 2 * SLICES);
    ck_assert_uint_eq(st.rdma_gpu_fallbacks, 1);

    /* the peer's device region: not registered there, reached over tcp
     * (connections beyond the segment's handshake), not over the local
     * transport, which opens a same-host peer but cannot reach its device
     * memory either */
    remote_device_round(&p);
    st = stats(p.ini);
    ck_assert_uint_eq(st.rdma_staged, 2 * SLICES);
    ck_assert_uint_gt(st.conn_new, 2 * conns);
    ck_assert_uint_eq(stats(p.tgt).rdma_gpu_fallbacks, 1);
    pair_free(&p);
    /* once per engine, with the reason */
    ck_assert_int_eq(eng_test_log_lines(&log, "no peer memory for cuda:0: ibv_reg_mr: Bad address; "
                                              "staging through the pool"),
                     2);
    ck_assert_int_eq(eng_test_log_lines(&log, "the peer's device memory goes over tcp"), 1);
    eng_test_log_release(&log);
}
END_TEST

START_TEST(device_memory_direct)
{
    setenv("VERBS_EMU_PEER_MEMORY", "1", 1);
    struct pair p = pair_new();

    local_device_round(&p);
    struct teshim_engine_stats st = stats(p.ini);
    uint64_t conns = st.conn_new;
    ck_assert_uint_eq(st.rdma_staged, 0);
    ck_assert_uint_eq(st.rdma_gpu_fallbacks, 0);

    /* the peer's device region has a key: over rdma, no tcp connection
     * beyond the second segment's handshake */
    remote_device_round(&p);
    st = stats(p.ini);
    ck_assert_uint_eq(st.rdma_staged, 0);
    ck_assert_uint_eq(st.conn_new, 2 * conns);
    ck_assert_uint_eq(stats(p.tgt).rdma_gpu_fallbacks, 0);
    pair_free(&p);
}
END_TEST

/* Peer memory there, engine.rdma.gpu_direct=mode: a WRITE and a READ from
 * device memory stage staged slices; nothing counts as a fallback. */
static void with_peer_memory(const char *mode, uint64_t staged)
{
    setenv("VERBS_EMU_PEER_MEMORY", "1", 1);
    setenv("TESHIM_ENGINE_RDMA_GPU_DIRECT", mode, 1);
    struct pair p = pair_new();

    local_device_round(&p);
    ck_assert_uint_eq(stats(p.ini).rdma_staged, staged);
    ck_assert_uint_eq(stats(p.ini).rdma_gpu_fallbacks, 0);
    pair_free(&p);
}

START_TEST(device_memory_off)
{
    with_peer_memory("off", 2 * SLICES);
}
END_TEST

START_TEST(gpu_direct_on_with_peer_memory)
{
    with_peer_memory("on", 0);
}
END_TEST

START_TEST(gpu_direct_on_without_peer_memory)
{
    unsetenv("VERBS_EMU_PEER_MEMORY");
    setenv("TESHIM_ENGINE_RDMA_GPU_DIRECT", "on", 1);
    struct eng_test_log log = eng_test_log_capture();
    struct pair p = pair_new();
    void *dev = dev_alloc();
    unsigned char *host = malloc(SPAN);

    ck_assert_ptr_nonnull(host);
    ck_assert_int_eq(teshim_register(p.ini, dev, SPAN, "cuda:0", false), -EFAULT);
    /* host memory is not affected */
    ck_assert_int_eq(teshim_register(p.ini, host, SPAN, "cpu", false), 0);
    ck_assert_int_eq(teshim_unregister(p.ini, host), 0);
    pair_free(&p);
    ck_assert_int_eq(eng_test_log_lines(&log, "engine.rdma.gpu_direct=on but the NIC cannot "
                                              "register device memory (no peer memory: "
                                              "ibv_reg_mr: Bad address)"),
                     1);
    eng_test_log_release(&log);
    cudaFree(dev);
    free(host);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cuda_engine_rdma");
    TCase *tc = tcase_create("rdma");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, device_memory_staged);
    tcase_add_test(tc, device_memory_direct);
    tcase_add_test(tc, device_memory_off);
    tcase_add_test(tc, gpu_direct_on_without_peer_memory);
    tcase_add_test(tc, gpu_direct_on_with_peer_memory);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
