/*
 * How threads send to a tcp peer on the same host (engine.tcp.same_host_send).
 * serial: one thread at a time, submitter or I/O thread, sends over all the
 * peer's connections; parallel: one per connection; io: each connection's
 * own I/O thread, never the submitter, except a small request alone on its
 * connection (the latency path). sendmsg is wrapped
 * (-Wl,--wrap=sendmsg) to count the initiator's calls in progress at once;
 * each call is held back a little so that a second sender would be seen.
 * Small socket buffers make the sockets fill, so the I/O threads' EPOLLOUT
 * path sends too. Data are checked by checksum in both modes.
 */
#include "eng_test.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/socket.h>

ssize_t __real_sendmsg(int fd, const struct msghdr *m, int flags);
ssize_t __wrap_sendmsg(int fd, const struct msghdr *m, int flags);

static atomic_int target_port; /* sockets whose peer is this port are the initiator's */
static atomic_int in_send, max_send, calls, eagain, by_io, by_sub, big_sub;
static __thread bool submitter; /* set on the test's submitting threads */

ssize_t __wrap_sendmsg(int fd, const struct msghdr *m, int flags)
{
    int port = atomic_load(&target_port);

    if (!port || eng_test_sock_port(fd, true) != port)
        return __real_sendmsg(fd, m, flags);
    int n = atomic_fetch_add(&in_send, 1) + 1;
    int seen = atomic_load(&max_send);
    while (n > seen && !atomic_compare_exchange_weak(&max_send, &seen, n))
        ;
    atomic_fetch_add(&calls, 1);
    atomic_fetch_add(submitter ? &by_sub : &by_io, 1);
    size_t bytes = 0;
    for (size_t i = 0; i < m->msg_iovlen; i++)
        bytes += m->msg_iov[i].iov_len;
    if (submitter && bytes > 8192)
        atomic_fetch_add(&big_sub, 1); /* more than one small request's frame */
    usleep(100);
    ssize_t r = __real_sendmsg(fd, m, flags);
    int err = errno;
    if (r < 0 && err == EAGAIN)
        atomic_fetch_add(&eagain, 1);
    atomic_fetch_sub(&in_send, 1);
    errno = err;
    return r;
}

#define THREADS 4
#define REQ (256 * 1024)
#define NREQ 4
#define SPAN ((size_t)REQ * NREQ)
#define SMALL 4096 /* after the threads' parts: the small writes' own */

struct run {
    struct teshim_engine *t, *ini;
    teshim_segment_t seg;
    char *tmem, *lmem;
};

struct submitter {
    struct run *r;
    int idx, rounds, ok;
};

/* Each thread: write a pattern to its part of the target, read it back
 * into a second buffer, compare. */
static void *submit_thread(void *arg)
{
    struct submitter *s = arg;
    char *out = s->r->lmem + (size_t)s->idx * 2 * SPAN, *back = out + SPAN;
    uint64_t raddr = (uint64_t)(uintptr_t)s->r->tmem + (uint64_t)s->idx * SPAN;

    submitter = true;
    for (int round = 0; round < s->rounds; round++) {
        eng_test_fill(out, SPAN, (uint32_t)(s->idx * 1000 + round));
        memset(back, 0, SPAN);
        for (int op = 0; op < 2; op++) {
            struct teshim_request q[NREQ];
            teshim_batch_t b;
            for (int i = 0; i < NREQ; i++)
                q[i] = (struct teshim_request){op ? TESHIM_OP_READ : TESHIM_OP_WRITE,
                                               (op ? back : out) + (size_t)i * REQ, s->r->seg,
                                               raddr + (uint64_t)i * REQ, REQ};
            if (teshim_batch_alloc(s->r->ini, NREQ, &b))
                return NULL;
            int ret = teshim_submit(s->r->ini, b, q, NREQ);
            if (!ret)
                ret = teshim_batch_wait(s->r->ini, b, 20000);
            teshim_batch_free(s->r->ini, b);
            if (ret)
                return NULL;
        }
        if (eng_test_sum(out, SPAN) == eng_test_sum(back, SPAN))
            s->ok++;
    }
    return NULL;
}

/* One write of 4 KiB, waited for, to a part of the target no other
 * thread writes */
static void small_write(struct run *r)
{
    struct teshim_request q = {TESHIM_OP_WRITE, r->lmem + THREADS * 2 * SPAN, r->seg,
                               (uint64_t)(uintptr_t)r->tmem + THREADS * SPAN, SMALL};

    ck_assert_int_eq(eng_test_one(r->ini, &q).state, TESHIM_TASK_COMPLETED);
}

/* 200 of them, one at a time, from a submitting thread */
static void *small_writes(void *arg)
{
    submitter = true;
    for (int i = 0; i < 200; i++)
        small_write(arg);
    return NULL;
}

static int run_threads(struct run *r, int rounds)
{
    pthread_t th[THREADS];
    struct submitter s[THREADS];
    int ok = 0;

    for (int i = 0; i < THREADS; i++) {
        s[i] = (struct submitter){r, i, rounds, 0};
        ck_assert_int_eq(pthread_create(&th[i], NULL, submit_thread, &s[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        ok += s[i].ok;
    }
    return ok;
}

/* The loop index: how the initiator is told, and what it must do. */
static const struct variant {
    enum teshim_same_host_send opt;
    const char *env; /* TESHIM_ENGINE_TCP_SAME_HOST_SEND, read when opt is DEFAULT */
    bool one_cpu;    /* created on a thread allowed one CPU only: auto means serial */
    bool serial;
    bool io; /* the submitters send no bulk */
} variants[] = {
    {TESHIM_SAME_HOST_SERIAL, NULL, false, true, false},
    {TESHIM_SAME_HOST_PARALLEL, NULL, false, false, false},
    {TESHIM_SAME_HOST_DEFAULT, "parallel", false, false, false},
    {TESHIM_SAME_HOST_DEFAULT, "serial", false, true, false},
    {TESHIM_SAME_HOST_AUTO, NULL, true, true, false},
    {TESHIM_SAME_HOST_IO, NULL, false, false, true},
    {TESHIM_SAME_HOST_DEFAULT, "io", false, false, true},
};

START_TEST(same_host_senders)
{
    const struct variant *v = &variants[_i];
    struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_TCP, true);
    cpu_set_t all, one;
    struct run r;

    r.t = eng_test_create(&o);
    o = eng_test_opts(TESHIM_TRANSPORT_TCP, false);
    o.same_host_send = v->opt;
    o.no_policy = false; /* the socket buffers below come from the table */
    setenv("TESHIM_ENGINE_TCP_SOCKBUF_BYTES", "32K", 1);
    if (v->env)
        setenv("TESHIM_ENGINE_TCP_SAME_HOST_SEND", v->env, 1);
    ck_assert_int_eq(sched_getaffinity(0, sizeof(all), &all), 0);
    if (v->one_cpu) {
        int cpu = 0;
        while (!CPU_ISSET(cpu, &all))
            cpu++;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        ck_assert_int_eq(sched_setaffinity(0, sizeof(one), &one), 0);
    }
    r.ini = eng_test_create(&o);
    ck_assert_int_eq(sched_setaffinity(0, sizeof(all), &all), 0);
    unsetenv("TESHIM_ENGINE_TCP_SOCKBUF_BYTES");
    unsetenv("TESHIM_ENGINE_TCP_SAME_HOST_SEND");
    r.tmem = aligned_alloc(4096, THREADS * SPAN + SMALL);
    r.lmem = aligned_alloc(4096, THREADS * 2 * SPAN + SMALL);
    ck_assert_ptr_nonnull(r.tmem);
    ck_assert_ptr_nonnull(r.lmem);
    ck_assert_int_eq(teshim_register(r.t, r.tmem, THREADS * SPAN + SMALL, "cpu", true), 0);
    ck_assert_int_eq(teshim_register(r.ini, r.lmem, THREADS * 2 * SPAN + SMALL, "cpu", false), 0);
    r.seg = eng_test_open(r.ini, teshim_engine_port(r.t));
    atomic_store(&target_port, teshim_engine_port(r.t));

    ck_assert_int_eq(run_threads(&r, 6), THREADS * 6);
    /* parallel: run on until a second sender shows, which proves the count
     * sees one (a bound of rounds keeps a failure finite) */
    for (int more = 0; !v->serial && atomic_load(&max_send) < 2 && more < 20; more++)
        ck_assert_int_eq(run_threads(&r, 2), THREADS * 2);
    if (v->io) {
        /* no bulk from the submitters; a small request alone on its
         * connection (the latency path) from the submitting thread */
        ck_assert_int_eq(atomic_load(&by_sub), 0);
        submitter = true;
        small_write(&r);
        submitter = false;
        ck_assert_int_eq(atomic_load(&by_sub), 1);
        /* small requests written one at a time while four threads write
         * bulk: a small one alone on its connection goes from its thread,
         * but never with the bulk queued behind it meanwhile */
        pthread_t small;
        ck_assert_int_eq(pthread_create(&small, NULL, small_writes, &r), 0);
        ck_assert_int_eq(run_threads(&r, 4), THREADS * 4);
        ck_assert_int_eq(pthread_join(small, NULL), 0);
        ck_assert_int_eq(atomic_load(&big_sub), 0);
    } else {
        ck_assert_int_gt(atomic_load(&big_sub), 0); /* the count sees submitters' bulk */
    }
    atomic_store(&target_port, 0);

    int sends = atomic_load(&calls), full = atomic_load(&eagain), most = atomic_load(&max_send);
    ck_assert_int_gt(sends, 0);
    ck_assert_int_gt(full, 0);                /* the sockets filled ... */
    ck_assert_int_gt(atomic_load(&by_io), 0); /* ... and the I/O threads sent on EPOLLOUT */
    if (v->serial)
        ck_assert_int_eq(most, 1);
    else
        ck_assert_int_ge(most, 2);
    ck_assert_int_eq(teshim_segment_close(r.ini, r.seg), 0);
    teshim_engine_destroy(r.ini);
    teshim_engine_destroy(r.t);
    free(r.tmem);
    free(r.lmem);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("engine_send");
    TCase *tc = tcase_create("same_host_send");

    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, same_host_senders, 0, (int)(sizeof(variants) / sizeof(variants[0])));
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
