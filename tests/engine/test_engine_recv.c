/*
 * How a tcp target reads its requests. READ requests carry no payload, so
 * a run of them is read in one call (a peek, then a recv of exactly the
 * run) rather than one readv per header; a WRITE's header ends the run and
 * its payload still goes straight to registered memory. readv is wrapped
 * (-Wl,--wrap=readv) to count the target's reads of a lone header.
 */
#include "eng_proto.h"
#include "eng_test.h"

#include <netinet/in.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/uio.h>

ssize_t __real_readv(int fd, const struct iovec *iov, int n);
ssize_t __wrap_readv(int fd, const struct iovec *iov, int n);

static atomic_int target_port; /* sockets whose own port is this are the target's */
static atomic_int header_reads;

ssize_t __wrap_readv(int fd, const struct iovec *iov, int n)
{
    int port = atomic_load(&target_port);

    if (port && n == 1 && iov[0].iov_len == ENG_FRAME_BYTES &&
        eng_test_sock_port(fd, false) == port)
        atomic_fetch_add(&header_reads, 1);
    return __real_readv(fd, iov, n);
}

#define NREQ 512
#define REQ 4096
#define SPAN ((size_t)NREQ * REQ)

struct pair {
    struct teshim_engine *t, *ini;
    teshim_segment_t seg;
    char *tmem, *lmem;
};

static void pair_open(struct pair *p)
{
    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_TCP, true);

    p->t = eng_test_create(&o);
    o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    o.max_inflight = NREQ;
    p->ini = eng_test_create(&o);
    p->tmem = aligned_alloc(4096, SPAN);
    p->lmem = aligned_alloc(4096, 2 * SPAN); /* the second half: read-backs */
    ck_assert_ptr_nonnull(p->tmem);
    ck_assert_ptr_nonnull(p->lmem);
    ck_assert_int_eq(teshim_register(p->t, p->tmem, SPAN, "cpu", true), 0);
    ck_assert_int_eq(teshim_register(p->ini, p->lmem, 2 * SPAN, "cpu", false), 0);
    p->seg = eng_test_open(p->ini, teshim_engine_port(p->t));
}

static void pair_close(struct pair *p)
{
    ck_assert_int_eq(teshim_segment_close(p->ini, p->seg), 0);
    teshim_engine_destroy(p->ini);
    teshim_engine_destroy(p->t);
    free(p->tmem);
    free(p->lmem);
}

/* One batch of NREQ requests of REQ bytes, request i at offset i * REQ of
 * local (in p->lmem) and of the target's region, op_of(i) its direction;
 * every task must complete. */
static void one_batch(struct pair *p, char *local, int (*op_of)(int))
{
    static struct teshim_request q[NREQ];
    teshim_batch_t b;

    for (int i = 0; i < NREQ; i++)
        q[i] = (struct teshim_request){op_of(i) ? TESHIM_OP_READ : TESHIM_OP_WRITE,
                                       local + (size_t)i * REQ, p->seg,
                                       (uint64_t)(uintptr_t)p->tmem + (uint64_t)i * REQ, REQ};
    ck_assert_int_eq(teshim_batch_alloc(p->ini, NREQ, &b), 0);
    ck_assert_int_eq(teshim_submit(p->ini, b, q, NREQ), 0);
    ck_assert_int_eq(teshim_batch_wait(p->ini, b, 20000), 0);
    for (int i = 0; i < NREQ; i++) {
        struct teshim_task_status st;
        ck_assert_int_eq(teshim_task_status(p->ini, b, (size_t)i, &st), 0);
        ck_assert_int_eq(st.state, TESHIM_TASK_COMPLETED);
        ck_assert_uint_eq(st.transferred, REQ);
    }
    teshim_batch_free(p->ini, b);
}

static int all_reads(int i)
{
    (void)i;
    return 1;
}

static int writes_only(int i)
{
    (void)i;
    return 0;
}

/* runs of 7 reads, then a write */
static int mixed(int i)
{
    return i % 8 != 7;
}

START_TEST(read_requests_read_in_runs)
{
    struct pair p;

    pair_open(&p);
    eng_test_fill(p.lmem, SPAN, 7);
    one_batch(&p, p.lmem, writes_only);
    memcpy(p.lmem + SPAN, p.lmem, SPAN); /* what the target holds now */
    memset(p.lmem, 0, SPAN);
    atomic_store(&header_reads, 0);
    atomic_store(&target_port, teshim_engine_port(p.t));
    for (int round = 0; round < 4; round++)
        one_batch(&p, p.lmem, all_reads);
    atomic_store(&target_port, 0);
    ck_assert_int_eq(memcmp(p.lmem, p.lmem + SPAN, SPAN), 0);
    /* one readv per header was 4 x 512 = 2048 before; a run costs at most
     * one lone header read (the READ that starts it) */
    int n = atomic_load(&header_reads);
    ck_assert_msg(n < 4 * NREQ / 8, "%d lone-header reads for %d READ requests", n, 4 * NREQ);
    pair_close(&p);
}
END_TEST

START_TEST(writes_end_a_run_of_reads)
{
    struct pair p;
    char *want_l = malloc(SPAN), *want_t = malloc(SPAN), *back;

    ck_assert_ptr_nonnull(want_l);
    ck_assert_ptr_nonnull(want_t);
    pair_open(&p);
    back = p.lmem + SPAN;
    for (int round = 0; round < 4; round++) {
        /* the target holds pattern A (written over the wire); the batch
         * reads 7 of every 8 blocks and writes the 8th from pattern B: the
         * reads must see A, and the target, read back, B where written and
         * A elsewhere */
        eng_test_fill(p.lmem, SPAN, 100 + (uint32_t)round);
        one_batch(&p, p.lmem, writes_only);
        memcpy(want_t, p.lmem, SPAN);
        eng_test_fill(p.lmem, SPAN, 200 + (uint32_t)round);
        for (int i = 0; i < NREQ; i++) {
            size_t off = (size_t)i * REQ;
            memcpy(want_l + off, (mixed(i) ? want_t : p.lmem) + off, REQ);
        }
        for (int i = 0; i < NREQ; i++)
            if (!mixed(i))
                memcpy(want_t + (size_t)i * REQ, p.lmem + (size_t)i * REQ, REQ);
        one_batch(&p, p.lmem, mixed);
        ck_assert_int_eq(memcmp(p.lmem, want_l, SPAN), 0);
        memset(back, 0, SPAN);
        one_batch(&p, back, all_reads);
        ck_assert_int_eq(memcmp(back, want_t, SPAN), 0);
    }
    pair_close(&p);
    free(want_l);
    free(want_t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("engine_recv");
    TCase *tc = tcase_create("target_reads");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, read_requests_read_in_runs);
    tcase_add_test(tc, writes_end_a_run_of_reads);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
