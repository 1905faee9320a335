/*
 * Real, unmodified Debian programs under libteshim.so: socat and curl
 * clients and servers, iperf3, and ss reading the kernel's view of the
 * sockets. Exits 77 (skipped) when one of the programs is not installed.
 */
#include "sock_test_util.h"

#include <limits.h>

static char out[SOCK_OUT_MAX];
static char out2[SOCK_OUT_MAX];

/* Every real program runs under `teshim run`, as a user would. */
/* A shell function: wait up to 10 s until something listens on port $1. */
#define WL                                                                                         \
    "wl() { for i in $(seq 200); do ss -Hltn \"sport = :$1\" | grep -q . && return 0; "            \
    "sleep 0.05; done; return 1; }; "
#define PRE "env -u TESHIM_BUILD_DIR -u TESHIM_SOURCE_DIR %s/bin/teshim run --set log.level=warn "

START_TEST(client_started_before_server_connects)
{
    const char *b = sock_build_dir();
    int rc = sock_run(out, sizeof(out),
                      "(sleep 0.7; exec timeout 10 socat TCP-LISTEN:28201,reuseaddr "
                      "SYSTEM:\"echo served; sleep 0.2\") & "
                      "echo x | " PRE "--set tcp.ports=28201 --set tcp.connect_retries=30 "
                      "--set tcp.connect_backoff_ms=50 --set tcp.connect_max_ms=8000 "
                      "-- timeout 15 socat - TCP:127.0.0.1:28201; echo client_rc $?; "
                      "kill $(jobs -p) 2>/dev/null; wait",
                      b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    ck_assert_msg(strstr(out, "served"), "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "client_rc") == 0, "%s", sock_tail(out));
    /* Without the policy the same client fails at once: the test can fail. */
    rc =
        sock_run(out, sizeof(out),
                 "(sleep 0.7; exec timeout 2 socat TCP-LISTEN:28201,reuseaddr "
                 "SYSTEM:\"echo served; sleep 0.2\") & "
                 "echo x | " PRE "--set tcp.ports=28201 -- timeout 15 socat - TCP:127.0.0.1:28201; "
                 "echo client_rc $?; kill $(jobs -p) 2>/dev/null; wait",
                 b);
    ck_assert_msg(!strstr(out, "served") && sock_kv(out, "client_rc") != 0, "%s", sock_tail(out));
}
END_TEST

START_TEST(client_gives_up_within_bound)
{
    const char *b = sock_build_dir();
    int rc = sock_run(out, sizeof(out),
                      "s=$(date +%%s%%N); echo x | " PRE
                      "--set log.level=debug --set tcp.ports=28202 --set tcp.connect_retries=100 "
                      "--set tcp.connect_backoff_ms=20 --set tcp.connect_max_ms=600 "
                      "-- timeout 15 socat - TCP:127.0.0.1:28202; echo client_rc $?; "
                      "echo elapsed_ms $(( ($(date +%%s%%N) - s) / 1000000 ))",
                      b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "client_rc") != 0, "%s", sock_tail(out));
    ck_assert_msg(strstr(out, "Connection refused"), "socat reports the real error\n%s",
                  sock_tail(out));
    ck_assert_msg(sock_count_lines(out, ", retry ") >= 2, "%s", sock_tail(out));
    /* 600 ms of retries; generous for a loaded CI machine, far below 100
     * retries of doubling delays. */
    ck_assert_msg(sock_kv(out, "elapsed_ms") < 5000, "%s", sock_tail(out));
}
END_TEST

START_TEST(ss_shows_buffers_and_keepalive_iperf3)
{
    const char *b = sock_build_dir();
    int rc = sock_run(out, sizeof(out),
                      WL "timeout 20 iperf3 -s -1 -p 28203 >/dev/null 2>&1 & wl 28203; " PRE
                         "--set tcp.ports=28203 --set tcp.sndbuf=96K --set tcp.rcvbuf=80K "
                         "--set tcp.keepalive_idle_s=600 --set tcp.user_timeout_ms=7000 "
                         "-- timeout 15 iperf3 -c 127.0.0.1 -p 28203 -t 2 >/dev/null 2>&1 & C=$!; "
                         "sleep 1.2; ss -tiem state established \"( dport = :28203 )\"; "
                         "wait $C; echo client_rc $?; wait",
                      b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "client_rc") == 0, "%s", sock_tail(out));
    /* Control and data connections are both in scope; the busy data
     * connection shows its retransmission timer, the idle control
     * connection the keepalive timer of 600 s. */
    ck_assert_msg(sock_count_lines(out, "timer:(keepalive,9min") >= 1, "%s", sock_tail(out));
    ck_assert_msg(sock_count_lines(out, ",tb196608,") >= 2, "send buffer 2 x 96K\n%s",
                  sock_tail(out));
    ck_assert_msg(sock_count_lines(out, ",rb163840,") >= 2, "receive buffer 2 x 80K\n%s",
                  sock_tail(out));
    /* The same without the shim: kernel defaults, autotuned. */
    rc = sock_run(out2, sizeof(out2),
                  WL "timeout 20 iperf3 -s -1 -p 28204 >/dev/null 2>&1 & wl 28204; "
                     "timeout 15 iperf3 -c 127.0.0.1 -p 28204 -t 2 >/dev/null 2>&1 & C=$!; "
                     "sleep 1.2; ss -tiem state established \"( dport = :28204 )\"; "
                     "wait $C; echo client_rc $?; wait");
    ck_assert_msg(rc == 0, "%s", sock_tail(out2));
    ck_assert_msg(sock_count_lines(out2, "timer:(keepalive,") == 0, "%s", sock_tail(out2));
    ck_assert_msg(sock_count_lines(out2, ",tb196608,") == 0, "%s", sock_tail(out2));
}
END_TEST

START_TEST(passthrough_results_unchanged_curl)
{
    const char *b = sock_build_dir();
    static const char *const urls[] = {"http://127.0.0.1:28205/", "http://[::1]:28205/", NULL};

    for (int i = 0; urls[i]; i++) {
        /* Nothing listens: curl's own error and exit status, with and
         * without every policy on in scope. */
        sock_run(out, sizeof(out), "timeout 10 curl -sS %s; echo rc $?", urls[i]);
        sock_run(out2, sizeof(out2),
                 PRE "--set tcp.ports=28205 --set tcp.dscp=10 --set tcp.nodelay=on "
                     "--set tcp.max_connections=2 --set tcp.connect_retries=3 "
                     "-- timeout 10 curl -sS %s; echo rc $?",
                 b, urls[i]);
        ck_assert_int_eq(sock_kv(out, "rc"), 7);
        ck_assert_int_eq(sock_kv(out2, "rc"), 7);
        ck_assert_msg(strstr(out2, "Couldn't connect to server"), "%s", sock_tail(out2));
    }
}
END_TEST

START_TEST(transfer_under_the_shim_ipv4_ipv6)
{
    const char *b = sock_build_dir();
    static const char *const hosts[] = {"127.0.0.1", "[::1]", NULL};

    for (int i = 0; hosts[i]; i++) {
        int rc = sock_run(
            out, sizeof(out),
            WL PRE "--set tcp.ports=28206 --set tcp.dscp=26 --set tcp.nodelay=on "
                   "--set tcp.keepalive_idle_s=30 -- timeout 10 socat "
                   "TCP6-LISTEN:28206,reuseaddr,ipv6only=0 SYSTEM:\"echo hello; sleep 0.2\" & "
                   "wl 28206; " PRE "--set tcp.ports=28206 --set tcp.dscp=26 "
                   "--set tcp.nodelay=on --set tcp.keepalive_idle_s=30 -- timeout 5 "
                   "curl -sS --http0.9 http://%s:28206/; echo rc $?; wait",
            b, b, hosts[i]);
        ck_assert_msg(rc == 0, "%s", sock_tail(out));
        ck_assert_msg(strstr(out, "hello") && sock_kv(out, "rc") == 0, "%s", sock_tail(out));
    }
}
END_TEST

START_TEST(cap_holds_for_parallel_iperf3_streams)
{
    const char *b = sock_build_dir();
    char dir[] = "/tmp/teshim-sock-real-XXXXXX";
    ck_assert(mkdtemp(dir) != NULL);
    /* iperf3 -P 6 opens a control connection and 6 streams; with a cap of 3
     * the streams over it cannot connect (non-blocking connects never wait)
     * and the server never sees more than 3 connections from it. */
    int rc = sock_run(out, sizeof(out),
                      WL "timeout 20 iperf3 -s -1 -p 28207 >/dev/null 2>&1 & wl 28207; " PRE
                         "--set stats.dir=%s --set tcp.ports=28207 --set tcp.max_connections=3 "
                         "-- timeout 15 iperf3 -c 127.0.0.1 -p 28207 -t 1 -P 6; echo client_rc $?; "
                         "kill $(jobs -p) 2>/dev/null; wait",
                      b, dir);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "client_rc") != 0, "%s", sock_tail(out));
    long refused = sock_stat(dir, "iperf3", "connect", "errors");
    ck_assert_msg(refused >= 1, "%ld\n%s", refused, sock_tail(out));
    ck_assert_msg(strstr(out, "Resource temporarily unavailable"), "%s", sock_tail(out));
    sock_run(out, sizeof(out), "rm -rf %s", dir);
}
END_TEST

/* Exits 77 with the reason when a program the suite runs is missing. */
static void skip_unless_programs(void)
{
    static char probe[4096];
    static const char *const progs[] = {"socat", "curl", "iperf3", "ss", NULL};

    for (int i = 0; progs[i]; i++) {
        if (sock_run(probe, sizeof(probe), "command -v %s", progs[i]) != 0) {
            printf("SKIP: %s is not installed (the README test command installs it)\n", progs[i]);
            exit(77);
        }
    }
}

int main(void)
{
    skip_unless_programs();
    Suite *s = suite_create("sock_real");
    TCase *tc = tcase_create("real");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, client_started_before_server_connects);
    tcase_add_test(tc, client_gives_up_within_bound);
    tcase_add_test(tc, ss_shows_buffers_and_keepalive_iperf3);
    tcase_add_test(tc, passthrough_results_unchanged_curl);
    tcase_add_test(tc, transfer_under_the_shim_ipv4_ipv6);
    tcase_add_test(tc, cap_holds_for_parallel_iperf3_streams);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
