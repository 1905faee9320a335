/*
 * Mooncake's C API with etcd metadata: createTransferEngine with Mooncake's
 * connection strings ("etcd://HOST:PORT" and a bare "HOST:PORT") publishes
 * the engine under local_server_name; a peer opens it by that name, moves
 * data with a checksum, and once the target is destroyed its requests are
 * refused with TESHIM_MC_STATUS_METADATA (errno EHOSTDOWN).
 */
#include "etcd_test.h"
#include "transfer_engine_c.h"

#define LEN (256 * 1024)

/* Submit one request and wait for it: the submit code; *state its end. */
static int mc_one(transfer_engine_t e, int op, void *local, segment_id_t seg, uint64_t remote,
                  int *state)
{
    struct transfer_request r = {op, local, seg, remote, LEN};
    struct transfer_status st;
    batch_id_t b = allocateBatchID(e, 1);
    int ret;

    ck_assert(b != INVALID_BATCH);
    ret = submitTransfer(e, b, &r, 1);
    while (!ret) {
        ck_assert_int_eq(getTransferStatus(e, b, 0, &st), 0);
        *state = st.status;
        if (st.status != STATUS_WAITING && st.status != STATUS_PENDING)
            break;
        usleep(1000);
    }
    ck_assert_int_eq(freeBatchID(e, b), 0);
    return ret;
}

START_TEST(mooncake_api_by_name_through_etcd)
{
    struct etcd s;
    char bare[64], addr[64];
    unsigned char *tbuf = malloc(LEN), *ibuf = malloc(LEN);
    double t0;
    int ret = 0, st;

    ttl("30");
    etcd_start(&s);
    snprintf(bare, sizeof(bare), "%s", s.spec + 7); /* Mooncake: bare HOST:PORT = etcd */
    transfer_engine_t tgt = createTransferEngine(s.spec, "mc-target", "127.0.0.1", 0, 0);
    transfer_engine_t ini = createTransferEngine(bare, "mc-initiator", "127.0.0.1", 0, 0);
    ck_assert_ptr_nonnull(tgt);
    ck_assert_ptr_nonnull(ini);
    ck_assert_int_eq(getLocalIpAndPort(tgt, addr, sizeof(addr)), 0);
    ck_assert_int_eq(strncmp(addr, "127.0.0.1:", 10), 0);
    eng_test_fill(tbuf, LEN, 61);
    ck_assert_int_eq(registerLocalMemory(tgt, tbuf, LEN, "cpu:0", 1), 0);
    ck_assert_int_eq(registerLocalMemory(ini, ibuf, LEN, "cpu:0", 1), 0);
    segment_id_t seg = openSegment(ini, "mc-target");
    ck_assert_int_gt(seg, 0);
    ck_assert_int_eq(mc_one(ini, OPCODE_READ, ibuf, seg, (uint64_t)(uintptr_t)tbuf, &st), 0);
    ck_assert_int_eq(st, STATUS_COMPLETED);
    ck_assert_uint_eq(eng_test_sum(ibuf, LEN), eng_test_sum(tbuf, LEN));
    eng_test_fill(ibuf, LEN, 62);
    ck_assert_int_eq(mc_one(ini, OPCODE_WRITE, ibuf, seg, (uint64_t)(uintptr_t)tbuf, &st), 0);
    ck_assert_int_eq(st, STATUS_COMPLETED);
    ck_assert_uint_eq(eng_test_sum(ibuf, LEN), eng_test_sum(tbuf, LEN));
    /* the target leaves: its key is revoked, the initiator is told */
    struct eng_test_log l = eng_test_log_capture();
    destroyTransferEngine(tgt);
    for (t0 = now_s(); !ret && now_s() - t0 < 10;)
        if (!(ret = mc_one(ini, OPCODE_READ, ibuf, seg, (uint64_t)(uintptr_t)tbuf, &st)))
            usleep(20000);
    eng_test_log_release(&l);
    ck_assert_int_eq(ret, TESHIM_MC_STATUS_METADATA);
    ck_assert_int_eq(errno, EHOSTDOWN);
    ck_assert_int_lt(openSegmentNoCache(ini, "mc-target"), 0);
    destroyTransferEngine(ini);
    free(tbuf);
    free(ibuf);
    etcd_stop(&s);
}
END_TEST

static void add_tests(TCase *tc)
{
    tcase_add_test(tc, mooncake_api_by_name_through_etcd);
}

int main(void)
{
    if (etcd_missing())
        return 77;
    return etcd_run("etcd_mooncake", add_tests);
}
