/*
 * Mooncake's C API on teshim's engine: the semantics transfer_engine_c.h
 * documents, each case on engines of its own on loopback (tcp between two
 * engines of this process: MC_FORCE_TCP).
 */
#include "transfer_engine_c.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEN (256u << 10)

struct pair {
    transfer_engine_t tgt, ini;
    char tgt_name[128];
    unsigned char *tbuf, *ibuf;
};

static void pair_up(struct pair *p)
{
    setenv("MC_FORCE_TCP", "1", 1);
    p->tgt = createTransferEngine("P2PHANDSHAKE", "127.0.0.1:12345", NULL, 0, 1);
    p->ini = createTransferEngine("P2PHANDSHAKE", "127.0.0.1", NULL, 0, 1);
    ck_assert_ptr_nonnull(p->tgt);
    ck_assert_ptr_nonnull(p->ini);
    ck_assert_int_eq(getLocalIpAndPort(p->tgt, p->tgt_name, sizeof(p->tgt_name)), 0);
    p->tbuf = calloc(1, LEN);
    p->ibuf = calloc(1, LEN);
    ck_assert_int_eq(registerLocalMemory(p->tgt, p->tbuf, LEN, "cpu:0", 1), 0);
    ck_assert_int_eq(registerLocalMemory(p->ini, p->ibuf, LEN, "*", 1), 0);
}

static void pair_down(struct pair *p)
{
    destroyTransferEngine(p->ini);
    destroyTransferEngine(p->tgt);
    free(p->tbuf);
    free(p->ibuf);
}

/* Submit one request, poll until final, free the batch; the final status. */
static int run_one(transfer_engine_t e, int op, void *src, segment_id_t seg, uint64_t dst,
                   uint64_t len)
{
    struct transfer_request r = {op, src, seg, dst, len};
    struct transfer_status st = {-1, 0};
    batch_id_t b = allocateBatchID(e, 4);

    ck_assert_uint_ne(b, INVALID_BATCH);
    ck_assert_int_eq(submitTransfer(e, b, &r, 1), 0);
    do
        ck_assert_int_eq(getTransferStatus(e, b, 0, &st), 0);
    while (st.status == STATUS_WAITING);
    ck_assert_int_eq(freeBatchID(e, b), 0);
    if (st.status == STATUS_COMPLETED)
        ck_assert_uint_eq(st.transferred_bytes, len);
    return st.status;
}

START_TEST(name_is_host_and_kernel_port)
{
    transfer_engine_t e = createTransferEngine("P2PHANDSHAKE", "127.0.0.1:1", NULL, 0, 0);
    char buf[64], small[6];
    int port = 0, n = 0;

    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(getLocalIpAndPort(e, buf, sizeof(buf)), 0);
    ck_assert_int_eq(sscanf(buf, "127.0.0.1:%d%n", &port, &n), 1);
    ck_assert_int_eq((size_t)n, strlen(buf));
    ck_assert_int_gt(port, 1); /* the port asked for is ignored: port 1 is privileged */
    ck_assert_int_eq(getLocalIpAndPort(e, small, sizeof(small)), TESHIM_MC_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(errno, ENOBUFS);
    destroyTransferEngine(e);
    destroyTransferEngine(NULL);
}
END_TEST

START_TEST(create_refuses_what_the_engine_lacks)
{
    errno = 0;
    ck_assert_ptr_null(createTransferEngine("P2PHANDSHAKE", "", NULL, 0, 0));
    ck_assert_int_eq(errno, EINVAL);
    /* etcd (a bare HOST:PORT means etcd) with nothing there */
    ck_assert_ptr_null(createTransferEngine("127.0.0.1:1", "node0", NULL, 0, 0));
    ck_assert_ptr_null(createTransferEngine("etcd://127.0.0.1:1", "node0", NULL, 0, 0));
    ck_assert_ptr_null(createTransferEngine("redis://127.0.0.1:1", "node0", NULL, 0, 0));
}
END_TEST

START_TEST(transports_and_unsupported_calls)
{
    transfer_engine_t e = createTransferEngine("P2PHANDSHAKE", "127.0.0.1", NULL, 0, 0);
    struct transfer_request r = {OPCODE_WRITE, NULL, 0, 0, 1};
    notify_msg_t msg = {"n", "m"}, *many;
    nic_load_stat_t nic;
    size_t count = 7;
    int size = -1;
    transport_t t;

    ck_assert_ptr_nonnull(e);
    t = installTransport(e, "tcp", NULL);
    ck_assert_ptr_nonnull(t);
    ck_assert_ptr_eq(installTransport(e, "tcp", NULL), t);
    ck_assert_ptr_null(installTransport(e, "rdma", NULL));
    ck_assert_int_eq(errno, EPROTONOSUPPORT);
    ck_assert_int_eq(uninstallTransport(e, "tcp"), 0);
    ck_assert_int_eq(uninstallTransport(e, "rdma"), TESHIM_MC_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(discoverTopology(e), TESHIM_MC_ERR_NOT_IMPLEMENTED);
    ck_assert_int_eq(removeLocalSegment(e, "x"), TESHIM_MC_ERR_NOT_IMPLEMENTED);
    ck_assert_int_eq(genNotifyInEngine(e, 1, msg), TESHIM_MC_ERR_NOT_IMPLEMENTED);
    ck_assert_int_eq(getNicLoadStats(e, &nic, &count), TESHIM_MC_ERR_NOT_IMPLEMENTED);
    ck_assert_uint_eq(count, 7);
    ck_assert_int_eq(submitTransferWithNotify(e, 1, &r, 1, msg), TESHIM_MC_STATUS_NOT_IMPLEMENTED);
    ck_assert_ptr_null(getNotifsFromEngine(e, &size));
    ck_assert_int_eq(size, 0);
    ck_assert_int_eq(errno, ENOTSUP);
    many = calloc(2, sizeof(*many));
    many[0].name = strdup("a");
    many[1].msg = strdup("b");
    ck_assert_int_eq(freeNotifsMsgBuf(many, 2), 0); /* frees the strings and the array */
    ck_assert_int_eq(warmupEfaSegment(e, "x"), 0);
    ck_assert_int_eq(syncSegmentCache(e), 0);
    enableGracefulShutdown(e);
    destroyTransferEngine(e);
}
END_TEST

START_TEST(registrations)
{
    transfer_engine_t e = createTransferEngine("P2PHANDSHAKE", "127.0.0.1", NULL, 0, 0);
    static char mem[4][4096];
    buffer_entry_t list[3] = {{mem[0], 4096}, {mem[1], 4096}, {mem[1] + 8, 16}};
    void *addrs[3] = {mem[0], mem[1], mem[3]};

    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(registerLocalMemory(e, mem[2], 4096, "cpu:1", 0), 0);
    ck_assert_int_eq(registerLocalMemory(e, mem[2] + 64, 64, "cpu", 1),
                     TESHIM_MC_ERR_ADDRESS_OVERLAPPED);
    ck_assert_int_eq(registerLocalMemory(e, mem[3], 0, "cpu", 1), TESHIM_MC_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(registerLocalMemory(e, mem[3], 64, "cuda:zz", 1),
                     TESHIM_MC_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(unregisterLocalMemory(e, mem[3]), TESHIM_MC_ERR_ADDRESS_NOT_REGISTERED);
    /* the third overlaps the second: none stays registered */
    ck_assert_int_eq(registerLocalMemoryBatch(e, list, 3, "cpu:0"),
                     TESHIM_MC_ERR_ADDRESS_OVERLAPPED);
    ck_assert_int_eq(unregisterLocalMemory(e, mem[0]), TESHIM_MC_ERR_ADDRESS_NOT_REGISTERED);
    ck_assert_int_eq(registerLocalMemoryBatch(e, list, 2, "cpu:0"), 0);
    /* every address tried, the first failure returned */
    ck_assert_int_eq(unregisterLocalMemoryBatch(e, addrs, 3), TESHIM_MC_ERR_ADDRESS_NOT_REGISTERED);
    ck_assert_int_eq(unregisterLocalMemory(e, mem[1]), TESHIM_MC_ERR_ADDRESS_NOT_REGISTERED);
    ck_assert_int_eq(unregisterLocalMemory(e, mem[2]), 0);
    destroyTransferEngine(e);
}
END_TEST

START_TEST(segment_ids)
{
    struct pair p;
    char self[128];
    segment_id_t a, b;

    pair_up(&p);
    ck_assert_int_eq(getLocalIpAndPort(p.ini, self, sizeof(self)), 0);
    ck_assert_int_eq(openSegment(p.ini, self), LOCAL_SEGMENT);
    ck_assert_int_eq(closeSegment(p.ini, LOCAL_SEGMENT), 0);
    a = openSegment(p.ini, p.tgt_name);
    ck_assert_int_ge(a, 1);
    b = openSegment(p.ini, p.tgt_name);
    ck_assert_int_eq(b, a); /* same name, same id, one more open */
    ck_assert_int_eq(closeSegment(p.ini, a), 0);
    ck_assert_int_eq(run_one(p.ini, OPCODE_WRITE, p.ibuf, a, (uintptr_t)p.tbuf, 64),
                     STATUS_COMPLETED);
    ck_assert_int_eq(closeSegment(p.ini, a), 0);
    ck_assert_int_eq(closeSegment(p.ini, a), TESHIM_MC_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(closeSegment(p.ini, 999), TESHIM_MC_ERR_INVALID_ARGUMENT);
    {
        struct transfer_request r = {OPCODE_WRITE, p.ibuf, a, (uintptr_t)p.tbuf, 64};
        batch_id_t bt = allocateBatchID(p.ini, 1);
        ck_assert_int_eq(submitTransfer(p.ini, bt, &r, 1), TESHIM_MC_STATUS_INVALID_ARGUMENT);
        ck_assert_int_eq(freeBatchID(p.ini, bt), 0);
    }
    /* a leading '/' is dropped; the name gets its id back */
    char slashed[160];
    snprintf(slashed, sizeof(slashed), "//%s", p.tgt_name);
    ck_assert_int_eq(openSegment(p.ini, slashed), a);
    ck_assert_int_eq(openSegmentNoCache(p.ini, p.tgt_name), a);
    ck_assert_int_eq(run_one(p.ini, OPCODE_READ, p.ibuf, a, (uintptr_t)p.tbuf, 64),
                     STATUS_COMPLETED);
    ck_assert_int_lt(openSegment(p.ini, "127.0.0.1:1"), 0);
    ck_assert_int_eq(openSegment(p.ini, "no-port"), TESHIM_MC_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(openSegment(p.ini, "/"), TESHIM_MC_ERR_INVALID_ARGUMENT);
    pair_down(&p);
}
END_TEST

START_TEST(transfers_and_status_codes)
{
    struct pair p;
    segment_id_t seg;
    batch_id_t b;
    struct transfer_status st;
    struct transfer_request r[3];

    pair_up(&p);
    seg = openSegment(p.ini, p.tgt_name);
    ck_assert_int_ge(seg, 1);
    for (size_t i = 0; i < LEN; i++)
        p.ibuf[i] = (unsigned char)(i * 7 + 3);
    ck_assert_int_eq(run_one(p.ini, OPCODE_WRITE, p.ibuf, seg, (uintptr_t)p.tbuf, LEN),
                     STATUS_COMPLETED);
    ck_assert_mem_eq(p.tbuf, p.ibuf, LEN);
    memset(p.ibuf, 0, LEN);
    ck_assert_int_eq(run_one(p.ini, OPCODE_READ, p.ibuf + 1, seg, (uintptr_t)p.tbuf + 5, 1000),
                     STATUS_COMPLETED);
    ck_assert_mem_eq(p.ibuf + 1, p.tbuf + 5, 1000);
    /* outside the peer's registration: the task fails */
    ck_assert_int_eq(run_one(p.ini, OPCODE_READ, p.ibuf, seg, (uintptr_t)p.tbuf + LEN - 8, 64),
                     STATUS_FAILED);
    /* loopback through LOCAL_SEGMENT */
    ck_assert_int_eq(
        run_one(p.ini, OPCODE_WRITE, p.ibuf + 1, LOCAL_SEGMENT, (uintptr_t)p.ibuf + LEN / 2, 1000),
        STATUS_COMPLETED);
    ck_assert_mem_eq(p.ibuf + LEN / 2, p.tbuf + 5, 1000);

    b = allocateBatchID(p.ini, 2);
    ck_assert_uint_ne(b, INVALID_BATCH);
    for (int i = 0; i < 3; i++)
        r[i] = (struct transfer_request){OPCODE_READ, p.ibuf + i * 64, seg,
                                         (uintptr_t)p.tbuf + i * 64, 64};
    ck_assert_int_eq(submitTransfer(p.ini, b, r, 3), TESHIM_MC_STATUS_TOO_MANY_REQUESTS);
    r[1].source = (char *)&st; /* not registered */
    ck_assert_int_eq(submitTransfer(p.ini, b, r, 2), TESHIM_MC_STATUS_ADDRESS_NOT_REGISTERED);
    r[1].source = p.ibuf;
    r[1].opcode = 5;
    ck_assert_int_eq(submitTransfer(p.ini, b, r, 2), TESHIM_MC_STATUS_INVALID_ARGUMENT);
    r[1].opcode = OPCODE_READ;
    r[1].target_id = 77;
    ck_assert_int_eq(submitTransfer(p.ini, b, r, 2), TESHIM_MC_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(submitTransfer(p.ini, b, r, 0), 0);
    ck_assert_int_eq(getTransferStatus(p.ini, b, 0, &st), TESHIM_MC_STATUS_INVALID_ARGUMENT);
    ck_assert_int_eq(freeBatchID(p.ini, b), 0);
    ck_assert_int_eq(freeBatchID(p.ini, b), TESHIM_MC_STATUS_INVALID_ARGUMENT);
    ck_assert_uint_eq(allocateBatchID(p.ini, 0), INVALID_BATCH);
    pair_down(&p);
}
END_TEST

START_TEST(show_links)
{
    struct pair p;
    char buf[512], want[256], tiny[8];
    segment_id_t seg;

    pair_up(&p);
    ck_assert_int_eq(showLinks(p.ini, buf, sizeof(buf), 0), 0);
    ck_assert_str_eq(buf, "");
    seg = openSegment(p.ini, p.tgt_name);
    ck_assert_int_eq(showLinks(p.ini, buf, sizeof(buf), 0), 0);
    snprintf(want, sizeof(want), "%d %s tcp\n", seg, p.tgt_name);
    ck_assert_str_eq(buf, want);
    ck_assert_int_eq(showLinks(p.ini, buf, sizeof(buf), 1), 0);
    ck_assert_ptr_nonnull(strstr(buf, "\"transport\":\"tcp\"}]}"));
    ck_assert_ptr_nonnull(strstr(buf, p.tgt_name));
    ck_assert_int_eq(showLinks(p.ini, tiny, sizeof(tiny), 1), TESHIM_MC_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(closeSegment(p.ini, seg), 0);
    ck_assert_int_eq(showLinks(p.ini, buf, sizeof(buf), 0), 0);
    ck_assert_str_eq(buf, "");
    pair_down(&p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("mooncake_api");
    TCase *tc = tcase_create("api");
    SRunner *sr;
    int failed;

    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, name_is_host_and_kernel_port);
    tcase_add_test(tc, create_refuses_what_the_engine_lacks);
    tcase_add_test(tc, transports_and_unsupported_calls);
    tcase_add_test(tc, registrations);
    tcase_add_test(tc, segment_ids);
    tcase_add_test(tc, transfers_and_status_codes);
    tcase_add_test(tc, show_links);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
