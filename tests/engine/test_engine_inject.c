/*
 * Failure injection over the engine's whole life: the Nth allocation,
 * socket, epoll, eventfd or thread creation from now fails (fi_inject.h),
 * for every N the sequence create / register / segment_open / batch_alloc
 * / submit / wait / free / close / unregister / destroy reaches, on both
 * transports. Every API call must succeed or return a negative errno with
 * a cause in the log; every task must end in a final state; nothing may
 * crash or hang, and under AddressSanitizer nothing may leak (each N runs
 * in its own forked child, checked by LeakSanitizer at its exit). One
 * request strays outside the peer's regions, so the local transport's
 * refresh of its region list runs under injection too.
 */
#include "eng_test.h"
#include "fi_inject.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

static const enum teshim_transport transports[] = {TESHIM_TRANSPORT_TCP, TESHIM_TRANSPORT_LOCAL};

/* Counted calls of one clean run stay below this, so the sweep reaches them
 * all; sweep_reaches_every_call fails when the engine grows past it. */
#define SWEEP_MAX 200
#define NREQ 4
#define RSZ (150u * 1024)

static struct eng_test_log elog; /* the engine's log while the sequence runs */

/*
 * The first broken expectation of a run. While the injector is armed the
 * sequence makes no Check call (Check's own allocations would be counted
 * and failed too); run_sequence asserts once it is disarmed.
 */
static char problem[512];

#define PROBLEM(...)                                                                               \
    do {                                                                                           \
        if (!problem[0])                                                                           \
            snprintf(problem, sizeof(problem), __VA_ARGS__);                                       \
    } while (0)

/* A call's result: 0 / non-negative, or a negative errno it logged. */
static int checked(int ret, off_t mark, const char *what)
{
    if (ret < -4095)
        PROBLEM("%s returned %d, not a negative errno", what, ret);
    else if (ret < 0 && eng_test_log_size(&elog) <= mark)
        PROBLEM("%s failed with %d (%s) and logged no cause", what, ret, strerror(-ret));
    return ret;
}

#define CHECKED(expr) checked((expr), eng_test_log_size(&elog), #expr)
#define EXPECT_OK(expr)                                                                            \
    do {                                                                                           \
        int r_ = (expr);                                                                           \
        if (r_)                                                                                    \
            PROBLEM("%s returned %d during cleanup", #expr, r_);                                   \
    } while (0)

/* The whole sequence; returns the number of counted calls it made. */
static long run_sequence(int idx, long nth)
{
    static char tbuf[NREQ * RSZ] __attribute__((aligned(4096)));
    static char l[NREQ * RSZ] __attribute__((aligned(4096)));
    struct teshim_engine_opts o = eng_test_opts(transports[idx], true);
    struct teshim_engine *t = NULL, *ini = NULL;
    struct teshim_request r[NREQ];
    teshim_segment_t s = -1;
    teshim_batch_t b = 0;
    long calls;

    o.io_threads = 2;
    o.connect_attempts = 2;
    o.connect_timeout_ms = 1000;
    o.request_timeout_ms = 1000;
    problem[0] = '\0';
    elog = eng_test_log_capture();
    fi_arm(nth);
    if (CHECKED(teshim_engine_create(&o, &t)))
        goto out;
    if (CHECKED(teshim_register(t, tbuf, sizeof(tbuf), "cpu", true)))
        goto out_t;
    o = eng_test_opts(transports[idx], false);
    o.io_threads = 2;
    o.max_inflight = 2; /* two requests wait in the limiter's queue */
    o.connect_attempts = 2;
    o.connect_timeout_ms = 1000;
    o.request_timeout_ms = 1000;
    if (CHECKED(teshim_engine_create(&o, &ini)))
        goto out_unreg_t;
    if (CHECKED(teshim_register(ini, l, sizeof(l), "cpu", false)))
        goto out_ini;
    char name[64];
    eng_test_name(name, sizeof(name), teshim_engine_port(t));
    if (CHECKED(teshim_segment_open(ini, name, &s)))
        goto out_unreg_ini;
    if (CHECKED(teshim_batch_alloc(ini, NREQ, &b)))
        goto out_seg;
    for (int i = 0; i < NREQ; i++)
        r[i] = (struct teshim_request){i % 2 ? TESHIM_OP_WRITE : TESHIM_OP_READ, l + i * RSZ, s,
                                       (uint64_t)(uintptr_t)tbuf + (uint64_t)i * RSZ, RSZ};
    /* the last one strays outside the peer's regions: the local transport
     * refreshes its list before failing it */
    r[NREQ - 1].remote_offset = (uint64_t)(uintptr_t)l;
    off_t mark = eng_test_log_size(&elog);
    if (checked(teshim_submit(ini, b, r, NREQ), mark, "teshim_submit") >= 0) {
        int failed = teshim_batch_wait(ini, b, 20000);
        if (failed < 0)
            PROBLEM("batch_wait: %d (a request hangs)", failed);
        for (int i = 0; i < NREQ; i++) {
            struct teshim_task_status st;
            if (teshim_task_status(ini, b, (size_t)i, &st)) {
                PROBLEM("task_status %d failed", i);
                continue;
            }
            if (st.state < TESHIM_TASK_COMPLETED)
                PROBLEM("task %d still %s", i, teshim_task_state_name(st.state));
            else if (st.state != TESHIM_TASK_COMPLETED && st.error >= 0)
                PROBLEM("task %d %s without an error", i, teshim_task_state_name(st.state));
            else if (st.state != TESHIM_TASK_COMPLETED && eng_test_log_size(&elog) <= mark)
                PROBLEM("task %d failed with %d, nothing logged", i, st.error);
        }
    }
    EXPECT_OK(teshim_batch_free(ini, b));
out_seg:
    EXPECT_OK(teshim_segment_close(ini, s));
out_unreg_ini:
    EXPECT_OK(teshim_unregister(ini, l));
out_ini:
    teshim_engine_destroy(ini);
out_unreg_t:
    EXPECT_OK(teshim_unregister(t, tbuf));
out_t:
    teshim_engine_destroy(t);
out:
    calls = fi_calls();
    fi_arm(0);
    eng_test_log_release(&elog);
    ck_assert_msg(!problem[0], "%s", problem);
    return calls;
}

START_TEST(sweep_reaches_every_call)
{
    long calls = run_sequence(_i, 0);
    printf("%s: %ld counted calls in a clean run\n", _i ? "local" : "tcp", calls);
    ck_assert_int_gt(calls, 10);
    ck_assert_int_lt(calls, SWEEP_MAX);
}
END_TEST

START_TEST(nth_call_fails_tcp)
{
    run_sequence(0, _i);
}
END_TEST

START_TEST(nth_call_fails_local)
{
    run_sequence(1, _i);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("engine_inject");
    TCase *tc = tcase_create("inject");

    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, sweep_reaches_every_call, 0, 2);
    tcase_add_loop_test(tc, nth_call_fails_tcp, 1, SWEEP_MAX + 1);
    tcase_add_loop_test(tc, nth_call_fails_local, 1, SWEEP_MAX + 1);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
