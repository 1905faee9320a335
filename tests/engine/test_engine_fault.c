/*
 * Faults: a target killed or hung mid-transfer, a process short of file
 * descriptors, and peers sending malformed or out-of-bounds frames.
 */
#include "eng.h"
#include "eng_raw.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define TSIZE (64u << 20)

/* Submit n requests of sz bytes and wait; returns how many did not complete. */
static int run_batch(struct teshim_engine *e, teshim_segment_t s, char *l, char *tbuf, int n,
                     size_t sz, enum teshim_opcode op)
{
    struct teshim_request r[16];
    teshim_batch_t b;
    ck_assert_int_le(n, 16);
    for (int i = 0; i < n; i++)
        r[i] = (struct teshim_request){op, l + (size_t)i * sz, s,
                                       (uint64_t)(uintptr_t)tbuf + (size_t)i * sz, sz};
    ck_assert_int_eq(teshim_batch_alloc(e, (size_t)n, &b), 0);
    ck_assert_int_eq(teshim_submit(e, b, r, (size_t)n), 0);
    int failed = teshim_batch_wait(e, b, 15000);
    ck_assert_int_ge(failed, 0);
    ck_assert_int_eq(teshim_batch_free(e, b), 0);
    return failed;
}

START_TEST(killed_target_fails_tasks_and_restart_needs_reopen)
{
    char *tbuf = aligned_alloc(4096, TSIZE);
    char *l = aligned_alloc(4096, TSIZE);
    int port = 0, n = 64;
    size_t sz = TSIZE / 64;
    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    struct teshim_engine *ini;
    struct teshim_task_status st;
    teshim_batch_t b;

    struct tgt t1, t2;
    memset(tbuf, 1, TSIZE);
    target_fork(&t1, tbuf, TSIZE, false);
    target_fork(&t2, tbuf, TSIZE, false);
    port = target_start(&t1, 0);
    o.request_timeout_ms = 3000;
    ini = eng_test_create(&o);
    ck_assert_int_eq(teshim_register(ini, l, TSIZE, "cpu", false), 0);
    teshim_segment_t s = eng_test_open(ini, port);

    /* kill it while 64 MiB of writes are in flight (stopped first, so
     * not all of them can have completed) */
    kill(t1.pid, SIGSTOP);
    waitpid(t1.pid, NULL, WUNTRACED); /* returns once it is stopped */
    struct teshim_request *r = calloc((size_t)n, sizeof(*r));
    for (int i = 0; i < n; i++)
        r[i] = (struct teshim_request){TESHIM_OP_WRITE, l + (size_t)i * sz, s,
                                       (uint64_t)(uintptr_t)tbuf + (size_t)i * sz, sz};
    ck_assert_int_eq(teshim_batch_alloc(ini, (size_t)n, &b), 0);
    ck_assert_int_eq(teshim_submit(ini, b, r, (size_t)n), 0);
    target_kill(&t1);
    int failed = teshim_batch_wait(ini, b, 10000);
    ck_assert_int_ge(failed, 1); /* finished (no hang), some failed */
    for (int i = 0; i < n; i++) {
        ck_assert_int_eq(teshim_task_status(ini, b, (size_t)i, &st), 0);
        ck_assert_int_ge(st.state, TESHIM_TASK_COMPLETED);
        if (st.state != TESHIM_TASK_COMPLETED)
            ck_assert_int_lt(st.error, 0);
    }
    ck_assert_int_eq(teshim_batch_free(ini, b), 0);

    /* while it is down, new requests fail after the bounded retries */
    ck_assert_int_eq(run_batch(ini, s, l, tbuf, 2, 4096, TESHIM_OP_READ), 2);

    /* restarted on the same port: another instance, whose registrations
     * the segment was not opened on; its requests fail (-ESTALE, checked in
     * check_engine_hostile), a fresh open works */
    ck_assert_int_eq(target_start(&t2, port), port);
    ck_assert_int_eq(run_batch(ini, s, l, tbuf, 4, sz, TESHIM_OP_WRITE), 4);
    ck_assert_int_eq(teshim_segment_close(ini, s), 0);
    teshim_segment_t s2 = eng_test_open(ini, port);
    struct teshim_request rr = {TESHIM_OP_READ, l, s2, (uint64_t)(uintptr_t)tbuf, 4096};
    ck_assert_int_eq(eng_test_one(ini, &rr).state, TESHIM_TASK_COMPLETED);
    teshim_engine_destroy(ini);
    target_kill(&t2);
    free(r);
    free(l);
    free(tbuf);
}
END_TEST

START_TEST(hung_target_times_out)
{
    char *tbuf = aligned_alloc(4096, TSIZE);
    static char l[65536];
    int port = 0;
    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    struct teshim_engine *ini;

    struct tgt t1;
    target_fork(&t1, tbuf, TSIZE, false);
    port = target_start(&t1, 0);
    o.request_timeout_ms = 300;
    ini = eng_test_create(&o);
    ck_assert_int_eq(teshim_register(ini, l, sizeof(l), "cpu", false), 0);
    teshim_segment_t s = eng_test_open(ini, port);
    kill(t1.pid, SIGSTOP);
    waitpid(t1.pid, NULL, WUNTRACED); /* returns once it is stopped */
    struct teshim_request r = {TESHIM_OP_READ, l, s, (uint64_t)(uintptr_t)tbuf, sizeof(l)};
    struct teshim_task_status st = eng_test_one(ini, &r);
    ck_assert_int_eq(st.state, TESHIM_TASK_TIMED_OUT);
    ck_assert_int_eq(st.error, -ETIMEDOUT);
    target_kill(&t1);
    teshim_engine_destroy(ini);
    free(tbuf);
}
END_TEST

struct waiter {
    struct teshim_engine *e;
    teshim_batch_t b;
    atomic_int done;
};

static void *wait_thread(void *arg)
{
    struct waiter *w = arg;
    teshim_batch_wait(w->e, w->b, -1);
    atomic_store(&w->done, 1);
    return NULL;
}

/* A thread blocked in teshim_batch_wait does not hold up other threads'
 * batch_alloc/free (it used to sleep holding the batch table's lock). */
START_TEST(batch_wait_blocks_nobody_else)
{
    char *tbuf = aligned_alloc(4096, TSIZE);
    static char l[4096];
    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    struct tgt t1;
    struct waiter w = {0};
    pthread_t th;
    teshim_batch_t b2;

    target_fork(&t1, tbuf, TSIZE, false);
    int port = target_start(&t1, 0);
    o.request_timeout_ms = 10000;
    w.e = eng_test_create(&o);
    ck_assert_int_eq(teshim_register(w.e, l, sizeof(l), "cpu", false), 0);
    teshim_segment_t s = eng_test_open(w.e, port);
    kill(t1.pid, SIGSTOP);
    waitpid(t1.pid, NULL, WUNTRACED);
    struct teshim_request r = {TESHIM_OP_READ, l, s, (uint64_t)(uintptr_t)tbuf, sizeof(l)};
    ck_assert_int_eq(teshim_batch_alloc(w.e, 1, &w.b), 0);
    ck_assert_int_eq(teshim_submit(w.e, w.b, &r, 1), 0);
    ck_assert_int_eq(pthread_create(&th, NULL, wait_thread, &w), 0);
    usleep(100000); /* let it block in teshim_batch_wait */
    ck_assert_int_eq(teshim_batch_alloc(w.e, 4, &b2), 0);
    ck_assert_int_eq(teshim_batch_free(w.e, b2), 0);
    ck_assert_int_eq(teshim_batch_free(w.e, w.b), -EBUSY);
    ck_assert_int_eq(atomic_load(&w.done), 0); /* the request is still stuck */
    target_kill(&t1);                          /* fails it: the waiter returns */
    pthread_join(th, NULL);
    ck_assert_int_eq(teshim_batch_free(w.e, w.b), 0);
    teshim_engine_destroy(w.e);
    free(tbuf);
}
END_TEST

/*
 * A waiter that gives up leaves the connection to the I/O thread: a small
 * request's waiter reads its answer itself (the latency path) and the
 * worker's epoll stops watching the socket meanwhile; after batch_wait
 * timed out on a stopped target, the target resumes and the answer must
 * still be read and the task completed, with nobody waiting or polling
 * (and well before the request timeout).
 */
START_TEST(waiter_gone_answer_still_read)
{
    char *tbuf = aligned_alloc(4096, TSIZE);
    static char l[4096];
    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    struct teshim_engine_stats es;
    struct teshim_task_status st;
    struct teshim_engine *ini;
    teshim_batch_t b;
    struct tgt t1;

    memset(tbuf, 0x42, TSIZE);
    target_fork(&t1, tbuf, TSIZE, false);
    int port = target_start(&t1, 0);
    o.request_timeout_ms = 30000;
    ini = eng_test_create(&o);
    ck_assert_int_eq(teshim_register(ini, l, sizeof(l), "cpu", false), 0);
    teshim_segment_t s = eng_test_open(ini, port);
    struct teshim_request r = {TESHIM_OP_READ, l, s, (uint64_t)(uintptr_t)tbuf, sizeof(l)};
    ck_assert_int_eq(eng_test_one(ini, &r).state, TESHIM_TASK_COMPLETED); /* connected */
    memset(l, 0, sizeof(l));
    kill(t1.pid, SIGSTOP);
    waitpid(t1.pid, NULL, WUNTRACED);
    ck_assert_int_eq(teshim_batch_alloc(ini, 1, &b), 0);
    ck_assert_int_eq(teshim_submit(ini, b, &r, 1), 0);
    ck_assert_int_eq(teshim_batch_wait(ini, b, 200), -ETIMEDOUT);
    kill(t1.pid, SIGCONT);
    for (int k = 0; k < 1000; k++) {
        ck_assert_int_eq(teshim_engine_stats(ini, &es), 0);
        if (es.finished == 2)
            break;
        usleep(10000);
    }
    ck_assert_uint_eq(es.finished, 2);
    ck_assert_int_eq(teshim_task_status(ini, b, 0, &st), 0);
    ck_assert_int_eq(st.state, TESHIM_TASK_COMPLETED);
    ck_assert_int_eq(l[0], 0x42);
    ck_assert_int_eq(l[sizeof(l) - 1], 0x42);
    ck_assert_int_eq(teshim_batch_free(ini, b), 0);
    teshim_engine_destroy(ini);
    target_kill(&t1);
    free(tbuf);
}
END_TEST

/*
 * With 64 file descriptors, 6 targets and an initiator opening 4
 * connections to each cannot all get theirs: everything must still end in
 * a final state, cleanly, and the process must survive.
 */
START_TEST(fd_limit_fails_cleanly)
{
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit rl = {64, 64};
        enum { NT = 6, SZ = 65536 };
        struct teshim_engine *t[NT], *ini;
        teshim_segment_t seg[NT];
        /* every request has its own local and remote bytes */
        static char tb[NT][SZ * 16], lb[NT * 16 * SZ];
        int opened = 0, segt[NT];

        if (setrlimit(RLIMIT_NOFILE, &rl))
            _exit(10);
        for (int i = 0; i < NT; i++) {
            struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_TCP, true);
            if (teshim_engine_create(&o, &t[i]) ||
                teshim_register(t[i], tb[i], sizeof(tb[i]), "cpu", true))
                _exit(11);
        }
        struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
        o.conns_per_peer = 4;
        o.connect_timeout_ms = 1000;
        o.request_timeout_ms = 2000;
        o.max_inflight = 8;
        if (teshim_engine_create(&o, &ini) || teshim_register(ini, lb, sizeof(lb), "cpu", false))
            _exit(12);
        for (int i = 0; i < NT; i++)
            if (!teshim_segment_open(ini, "127.0.0.1:1", &seg[i]))
                _exit(13); /* nothing listens there */
        for (int i = 0; i < NT; i++) {
            char name[64];
            eng_test_name(name, sizeof(name), teshim_engine_port(t[i]));
            int ret = teshim_segment_open(ini, name, &seg[opened]);
            if (!ret)
                segt[opened++] = i;
            else if (ret >= 0)
                _exit(14);
        }
        if (!opened)
            _exit(15);
        teshim_batch_t b;
        int n = opened * 16;
        struct teshim_request *r = calloc((size_t)n, sizeof(*r));
        for (int i = 0; i < n; i++)
            r[i] = (struct teshim_request){
                i % 2 ? TESHIM_OP_READ : TESHIM_OP_WRITE, lb + (size_t)i * SZ, seg[i % opened],
                (uint64_t)(uintptr_t)tb[segt[i % opened]] + (size_t)(i / opened) * SZ, SZ};
        if (teshim_batch_alloc(ini, (size_t)n, &b) || teshim_submit(ini, b, r, (size_t)n) < 0)
            _exit(16);
        int failed = teshim_batch_wait(ini, b, 20000);
        if (failed < 0)
            _exit(17);
        for (int i = 0; i < n; i++) {
            struct teshim_task_status st;
            if (teshim_task_status(ini, b, (size_t)i, &st) || st.state < TESHIM_TASK_COMPLETED)
                _exit(18);
        }
        printf("fd limit: %d segments of %d opened, %d of %d requests failed\n", opened, NT, failed,
               n);
        teshim_engine_destroy(ini);
        for (int i = 0; i < NT; i++)
            teshim_engine_destroy(t[i]);
        _exit(0);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status), "child killed by signal %d", WTERMSIG(status));
    ck_assert_int_eq(WEXITSTATUS(status), 0);
}
END_TEST

/* ---- raw peers --------------------------------------------------------- */

/* The target closes the connection: recv sees EOF. */
static void assert_closed(int fd)
{
    char c;
    ck_assert_int_le(recv(fd, &c, 1, MSG_WAITALL), 0);
    close(fd);
}

START_TEST(malformed_frames_close_only_that_connection)
{
    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_TCP, true);
    struct teshim_engine *t = eng_test_create(&o);
    char *tbuf = aligned_alloc(4096, 1 << 20);
    static char guard[8192];
    struct teshim_engine_stats es;
    struct eng_frame f, a;
    int port, fd;

    memset(tbuf, 0x11, 1 << 20);
    ck_assert_int_eq(teshim_register(t, tbuf, 1 << 20, "cpu", true), 0);
    ck_assert_int_eq(teshim_register(t, guard, sizeof(guard), "cpu", false), 0);
    port = teshim_engine_port(t);
    uint64_t base = (uint64_t)(uintptr_t)tbuf;

    /* garbage instead of a header */
    fd = raw_connect(port);
    ck_assert_int_eq(send(fd, "GET / HTTP/1.0\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                          56, MSG_NOSIGNAL),
                     56);
    assert_closed(fd);

    /* a request before HELLO */
    fd = raw_connect(port);
    f = (struct eng_frame){
        .type = ENG_F_READ, .addr = base, .len = 64, .req_addr = base, .req_len = 64};
    raw_send(fd, &f, NULL, 0);
    assert_closed(fd);

    /* another protocol version */
    fd = raw_connect(port);
    uint8_t h[ENG_FRAME_BYTES];
    f = (struct eng_frame){.type = ENG_F_HELLO, .payload_len = ENG_HELLO_BYTES};
    eng_frame_encode(&f, h);
    h[4] = ENG_VERSION + 1;
    ck_assert_int_eq(send(fd, h, sizeof(h), MSG_NOSIGNAL), (ssize_t)sizeof(h));
    assert_closed(fd);

    /* a write announcing more payload than any slice may carry */
    fd = raw_connect(port);
    raw_hello(fd);
    f = (struct eng_frame){.type = ENG_F_WRITE,
                           .addr = base,
                           .len = 1ull << 40,
                           .payload_len = 0,
                           .req_addr = base,
                           .req_len = 1ull << 40};
    raw_send(fd, &f, NULL, 0);
    assert_closed(fd);

    /* a slice outside its own request */
    fd = raw_connect(port);
    raw_hello(fd);
    f = (struct eng_frame){
        .type = ENG_F_READ, .addr = base + 4096, .len = 64, .req_addr = base, .req_len = 64};
    raw_send(fd, &f, NULL, 0);
    assert_closed(fd);

    /* out of bounds: refused with -EFAULT, the connection stays usable */
    fd = raw_connect(port);
    raw_hello(fd);
    f = (struct eng_frame){.type = ENG_F_READ,
                           .id = 7,
                           .addr = (uintptr_t)guard,
                           .len = 64,
                           .req_addr = (uintptr_t)guard,
                           .req_len = 64};
    raw_send(fd, &f, NULL, 0);
    ck_assert_int_eq(raw_recv_frame(fd, &a), 0);
    ck_assert_int_eq(a.type, ENG_F_READ_RESP);
    ck_assert_int_eq(a.status, -EFAULT);
    ck_assert_uint_eq(a.id, 7);
    char payload[4096];
    memset(payload, 0x77, sizeof(payload));
    f = (struct eng_frame){.type = ENG_F_WRITE,
                           .id = 8,
                           .addr = base + (1 << 20) - 2048,
                           .len = 4096,
                           .payload_len = 4096,
                           .req_addr = base + (1 << 20) - 2048,
                           .req_len = 4096};
    raw_send(fd, &f, payload, sizeof(payload));
    ck_assert_int_eq(raw_recv_frame(fd, &a), 0);
    ck_assert_int_eq(a.type, ENG_F_WRITE_ACK);
    ck_assert_int_eq(a.status, -EFAULT);
    /* a valid write on the same connection */
    f = (struct eng_frame){.type = ENG_F_WRITE,
                           .id = 9,
                           .addr = base,
                           .len = 4096,
                           .payload_len = 4096,
                           .req_addr = base,
                           .req_len = 4096};
    raw_send(fd, &f, payload, sizeof(payload));
    ck_assert_int_eq(raw_recv_frame(fd, &a), 0);
    ck_assert_int_eq(a.status, 0);
    ck_assert_int_eq(tbuf[0], 0x77);
    ck_assert_int_eq(tbuf[(1 << 20) - 1], 0x11);
    close(fd);
    for (size_t i = 0; i < sizeof(guard); i++)
        ck_assert_int_eq(guard[i], 0);

    ck_assert_int_eq(teshim_engine_stats(t, &es), 0);
    ck_assert_uint_ge(es.peer_rejected, 7);

    /* the target still serves a proper engine */
    o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    struct teshim_engine *ini = eng_test_create(&o);
    static char l[4096];
    ck_assert_int_eq(teshim_register(ini, l, sizeof(l), "cpu", false), 0);
    teshim_segment_t s = eng_test_open(ini, port);
    struct teshim_request r = {TESHIM_OP_READ, l, s, base, sizeof(l)};
    ck_assert_int_eq(eng_test_one(ini, &r).state, TESHIM_TASK_COMPLETED);
    ck_assert_int_eq(l[0], 0x77);
    teshim_engine_destroy(ini);
    teshim_engine_destroy(t);
    free(tbuf);
}
END_TEST

/*
 * A transport that starts tasks and never finishes them (a peer that stops
 * answering forever), swapped under an open segment: the requests behind
 * it in the limiter's queue must still time out, from their submission.
 */
struct stuck_tp {
    struct eng_transport base;
    struct eng_task *started[4];
    atomic_int n;
};

static void stuck_start(struct eng_transport *tp, struct eng_task *t)
{
    struct stuck_tp *st = (struct stuck_tp *)tp;
    int i = atomic_fetch_add(&st->n, 1);
    if (i < 4)
        st->started[i] = t;
    eng_task_set_slices(t, 1);
}

static const struct eng_transport_ops stuck_ops = {
    .size = sizeof(struct eng_transport_ops),
    .name = "stuck",
    .start = stuck_start,
};

START_TEST(queued_requests_time_out_behind_stuck_ones)
{
    static char tbuf[65536], l[65536];
    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_TCP, true);
    struct teshim_engine *t = eng_test_create(&o), *ini;
    struct teshim_engine_stats es;
    struct teshim_task_status st;
    struct stuck_tp stuck = {0};
    struct teshim_request r[3];
    teshim_batch_t b;

    o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    o.max_inflight = 1;
    o.request_timeout_ms = 100;
    ini = eng_test_create(&o);
    ck_assert_int_eq(teshim_register(t, tbuf, sizeof(tbuf), "cpu", true), 0);
    ck_assert_int_eq(teshim_register(ini, l, sizeof(l), "cpu", false), 0);
    teshim_segment_t s = eng_test_open(ini, teshim_engine_port(t));
    struct eng_segment *seg = ini->segs[s];
    struct eng_transport *real = seg->tp;
    eng_transport_init(&stuck.base, &ini->ctx, &stuck_ops);
    seg->tp = &stuck.base;

    for (int i = 0; i < 3; i++)
        r[i] = (struct teshim_request){TESHIM_OP_READ, l + i * 4096, s,
                                       (uint64_t)(uintptr_t)tbuf + (uint64_t)i * 4096, 4096};
    ck_assert_int_eq(teshim_batch_alloc(ini, 3, &b), 0);
    ck_assert_int_eq(teshim_submit(ini, b, r, 3), 0);
    /* task 0 holds the only slot forever; 1 and 2 wait behind it */
    for (int k = 0; k < 1000; k++) {
        ck_assert_int_eq(teshim_task_status(ini, b, 2, &st), 0);
        if (st.state != TESHIM_TASK_WAITING)
            break;
        usleep(10000);
    }
    for (int i = 1; i < 3; i++) {
        ck_assert_int_eq(teshim_task_status(ini, b, (size_t)i, &st), 0);
        ck_assert_int_eq(st.state, TESHIM_TASK_TIMED_OUT);
        ck_assert_int_eq(st.error, -ETIMEDOUT);
        ck_assert_uint_eq(st.transferred, 0);
    }
    ck_assert_int_eq(teshim_task_status(ini, b, 0, &st), 0);
    ck_assert_int_eq(st.state, TESHIM_TASK_PENDING); /* in flight: untouched */
    ck_assert_int_eq(atomic_load(&stuck.n), 1);      /* the expired ones never started */
    ck_assert_int_eq(teshim_engine_stats(ini, &es), 0);
    ck_assert_uint_eq(es.active, 1);
    ck_assert_uint_eq(es.waiting, 0);
    ck_assert_uint_eq(es.finished, 2);
    ck_assert_uint_eq(es.failed, 2);
    ck_assert_int_eq(teshim_batch_free(ini, b), -EBUSY);

    /* the stuck one finishes: the slot returns, and the limiter still admits */
    eng_task_slice_done(stuck.started[0], 4096, 0);
    ck_assert_int_eq(teshim_batch_wait(ini, b, 10000), 2);
    ck_assert_int_eq(teshim_batch_free(ini, b), 0);
    seg->tp = real;
    struct teshim_request ok = {TESHIM_OP_READ, l, s, (uint64_t)(uintptr_t)tbuf, 4096};
    ck_assert_int_eq(eng_test_one(ini, &ok).state, TESHIM_TASK_COMPLETED);
    /* the slot returns just after the waiter is woken */
    for (int k = 0; k < 1000; k++) {
        ck_assert_int_eq(teshim_engine_stats(ini, &es), 0);
        if (!es.active)
            break;
        usleep(1000);
    }
    ck_assert_uint_eq(es.active, 0);
    ck_assert_uint_eq(es.waiting, 0);
    ck_assert_uint_eq(es.finished, 4);
    ck_assert_uint_eq(es.failed, 2);
    ck_assert_int_eq(teshim_segment_close(ini, s), 0);
    teshim_engine_destroy(ini);
    teshim_engine_destroy(t);
}
END_TEST

/*
 * engine_destroy with a request queued by the limiter behind one that a
 * transport finishes while it is destroyed: the queued request must be
 * cancelled, not started on a transport already destroyed (AddressSanitizer
 * saw tcp_start on the freed tcp transport).
 */
static struct eng_transport *real_local;

static void finishing_destroy(struct eng_transport *tp)
{
    struct stuck_tp *st = (struct stuck_tp *)tp;
    for (int i = 0; i < atomic_load(&st->n) && i < 4; i++)
        eng_task_slice_done(st->started[i], 0, -ECANCELED);
    real_local->ops.destroy(real_local);
}

static const struct eng_transport_ops finishing_ops = {
    .size = sizeof(struct eng_transport_ops),
    .name = "finishing",
    .start = stuck_start,
    .destroy = finishing_destroy,
};

START_TEST(destroy_cancels_queued_requests)
{
    static char tbuf[65536], l[65536];
    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_TCP, true);
    struct teshim_engine *t = eng_test_create(&o), *ini;
    struct stuck_tp fin = {0};
    teshim_batch_t b;

    o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    o.max_inflight = 1;
    ini = eng_test_create(&o);
    ck_assert_int_eq(teshim_register(t, tbuf, sizeof(tbuf), "cpu", true), 0);
    ck_assert_int_eq(teshim_register(ini, l, sizeof(l), "cpu", false), 0);
    teshim_segment_t s1 = eng_test_open(ini, teshim_engine_port(t));
    teshim_segment_t s2 = eng_test_open(ini, teshim_engine_port(t));
    /* s2's requests go to a transport destroyed after tcp, which finishes
     * them then */
    eng_transport_init(&fin.base, &ini->ctx, &finishing_ops);
    ck_assert_str_eq(ini->tps[0]->ops.name, "local"); /* destroyed last */
    real_local = ini->tps[0];
    ini->tps[0] = &fin.base;
    ini->segs[s2]->tp = &fin.base;
    struct teshim_request r[2] = {
        {TESHIM_OP_READ, l, s2, (uint64_t)(uintptr_t)tbuf, 4096},
        {TESHIM_OP_READ, l + 4096, s1, (uint64_t)(uintptr_t)tbuf, 4096},
    };
    ck_assert_int_eq(teshim_batch_alloc(ini, 2, &b), 0);
    ck_assert_int_eq(teshim_submit(ini, b, r, 2), 0);
    ck_assert_int_eq(atomic_load(&fin.n), 1); /* r[1] waits in the queue */
    teshim_engine_destroy(ini);
    teshim_engine_destroy(t);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("engine_fault");
    TCase *tc = tcase_create("faults");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, killed_target_fails_tasks_and_restart_needs_reopen);
    tcase_add_test(tc, hung_target_times_out);
    tcase_add_test(tc, batch_wait_blocks_nobody_else);
    tcase_add_test(tc, waiter_gone_answer_still_read);
    tcase_add_test(tc, fd_limit_fails_cleanly);
    tcase_add_test(tc, malformed_frames_close_only_that_connection);
    tcase_add_test(tc, queued_requests_time_out_behind_stuck_ones);
    tcase_add_test(tc, destroy_cancels_queued_requests);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
