/*
 * Socket hooks under LD_PRELOAD: sockhost (built like an unmodified program)
 * runs with libteshim.so preloaded and prints what its sockets hold.
 */
#include "sock_test_util.h"

#include <limits.h>
#include <stdbool.h>
#include <unistd.h>

static char out[SOCK_OUT_MAX];
static char out2[SOCK_OUT_MAX];

#define PRE                                                                                        \
    "timeout 30 env -u TESHIM_BUILD_DIR -u TESHIM_SOURCE_DIR LD_PRELOAD=%s/lib/libteshim.so "      \
    "TESHIM_LOG_LEVEL=warn TESHIM_STATS_REPORT=all "
#define ALL                                                                                        \
    "TESHIM_TCP_DSCP=26 TESHIM_TCP_PRIORITY=3 TESHIM_TCP_NODELAY=on TESHIM_TCP_SNDBUF=64K "        \
    "TESHIM_TCP_RCVBUF=96K TESHIM_TCP_KEEPALIVE_IDLE_S=17 TESHIM_TCP_KEEPALIVE_INTERVAL_S=5 "      \
    "TESHIM_TCP_KEEPALIVE_COUNT=4 TESHIM_TCP_USER_TIMEOUT_MS=4321 "
#define HOST "%s/bin/sockhost"

static void assert_all_set(const char *who, bool v6)
{
    char k[64];
#define EXPECT(name, val)                                                                          \
    do {                                                                                           \
        snprintf(k, sizeof(k), "%s_%s", who, name);                                                \
        ck_assert_msg(sock_kv(out, k) == (val), "%s = %ld, want %d\n%s", k, sock_kv(out, k),       \
                      (int)(val), sock_tail(out));                                                 \
    } while (0)
    EXPECT(v6 ? "tclass" : "tos", 26 << 2);
    EXPECT("priority", 3);
    EXPECT("nodelay", 1);
    EXPECT("sndbuf", 2 * 65536);
    EXPECT("rcvbuf", 2 * 96 * 1024);
    EXPECT("keepalive", 1);
    EXPECT("keepidle", 17);
    EXPECT("keepintvl", 5);
    EXPECT("keepcnt", 4);
    EXPECT("user_timeout", 4321);
#undef EXPECT
}

static void assert_defaults(const char *who, bool v6)
{
    char k[64];

    snprintf(k, sizeof(k), "%s_%s", who, v6 ? "tclass" : "tos");
    ck_assert_msg(sock_kv(out, k) == 0, "%s\n%s", k, sock_tail(out));
    snprintf(k, sizeof(k), "%s_nodelay", who);
    ck_assert_msg(sock_kv(out, k) == 0, "%s\n%s", k, sock_tail(out));
    snprintf(k, sizeof(k), "%s_keepalive", who);
    ck_assert_msg(sock_kv(out, k) == 0, "%s\n%s", k, sock_tail(out));
    snprintf(k, sizeof(k), "%s_user_timeout", who);
    ck_assert_msg(sock_kv(out, k) == 0, "%s\n%s", k, sock_tail(out));
    snprintf(k, sizeof(k), "%s_sndbuf", who);
    ck_assert_msg(sock_kv(out, k) != 2 * 65536, "%s\n%s", k, sock_tail(out));
}

START_TEST(options_ipv4_in_scope)
{
    const char *b = sock_build_dir();
    int rc = sock_run(out, sizeof(out),
                      PRE ALL "TESHIM_TCP_PORTS=28101 " HOST " opts 127.0.0.1 28101", b, b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    assert_all_set("cli", false);
    /* The accepted socket inherits from the listener teshim configured. */
    assert_all_set("srv", false);
}
END_TEST

START_TEST(options_ipv6_in_scope)
{
    const char *b = sock_build_dir();
    int rc =
        sock_run(out, sizeof(out), PRE ALL "TESHIM_TCP_PORTS=28102 " HOST " opts ::1 28102", b, b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    assert_all_set("cli", true);
    assert_all_set("srv", true);
}
END_TEST

START_TEST(options_out_of_scope_port)
{
    const char *b = sock_build_dir();
    int rc = sock_run(out, sizeof(out),
                      PRE ALL "TESHIM_TCP_PORTS=1000-2000 " HOST " opts 127.0.0.1 28103", b, b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    assert_defaults("cli", false);
    assert_defaults("srv", false);
}
END_TEST

START_TEST(options_empty_scope_is_none)
{
    const char *b = sock_build_dir();
    int rc = sock_run(out, sizeof(out), PRE ALL HOST " opts 127.0.0.1 28104", b, b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    assert_defaults("cli", false);
}
END_TEST

START_TEST(options_peer_scope)
{
    const char *b = sock_build_dir();
    int rc = sock_run(out, sizeof(out),
                      PRE ALL "TESHIM_TCP_PEERS=127.0.0.0/8 " HOST " opts 127.0.0.1 28105", b, b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    assert_all_set("cli", false);
    /* The accepted socket's peer is 127.0.0.1 too: set at accept. */
    assert_all_set("srv", false);
    rc = sock_run(out, sizeof(out),
                  PRE ALL "TESHIM_TCP_PEERS=10.0.0.0/8,::1 " HOST " opts 127.0.0.1 28105", b, b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    assert_defaults("cli", false);
    rc = sock_run(out, sizeof(out),
                  PRE ALL "TESHIM_TCP_PEERS=10.0.0.0/8,::1/128 " HOST " opts ::1 28105", b, b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    assert_all_set("cli", true);
}
END_TEST

START_TEST(application_values_win)
{
    const char *b = sock_build_dir();
    int rc = sock_run(out, sizeof(out),
                      PRE ALL "TESHIM_TCP_PORTS=28106 " HOST " opts 127.0.0.1 28106 preset", b, b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "cli_tos") == 0x20, "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "cli_keepidle") == 99, "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "cli_sndbuf") == 2 * 65536, "%s", sock_tail(out));
    /* What the application left alone is still teshim's. */
    ck_assert_msg(sock_kv(out, "cli_nodelay") == 1, "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "cli_user_timeout") == 4321, "%s", sock_tail(out));
}
END_TEST

START_TEST(override_beats_application)
{
    const char *b = sock_build_dir();
    int rc = sock_run(out, sizeof(out),
                      PRE ALL "TESHIM_TCP_OVERRIDE=on TESHIM_TCP_PORTS=28107 " HOST
                              " opts 127.0.0.1 28107 preset",
                      b, b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "cli_tos") == 26 << 2, "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "cli_keepidle") == 17, "%s", sock_tail(out));
}
END_TEST

START_TEST(gates_leave_sockets_alone)
{
    const char *b = sock_build_dir();
    static const char *const gates[] = {"TESHIM_MODE=observe", "TESHIM_DISABLE=1",
                                        "TESHIM_ROLLOUT_ARM=A", "TESHIM_SCOPE_PROGRAMS=other"};

    for (size_t i = 0; i < sizeof(gates) / sizeof(gates[0]); i++) {
        int rc = sock_run(out, sizeof(out),
                          PRE ALL "TESHIM_TCP_PORTS=28108 %s " HOST " opts 127.0.0.1 28108", b,
                          gates[i], b);
        ck_assert_msg(rc == 0, "%s: %s", gates[i], sock_tail(out));
        assert_defaults("cli", false);
        assert_defaults("srv", false);
    }
}
END_TEST

START_TEST(passthrough_errno_unchanged)
{
    const char *b = sock_build_dir();
    int rc = sock_run(out, sizeof(out), "timeout 30 " HOST " errno 127.0.0.1 28109", b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    ck_assert_msg(strstr(out, "connect_refused -1 ECONNREFUSED"), "%s", sock_tail(out));
    ck_assert_msg(strstr(out, "connect_nonblock -1 EINPROGRESS"), "%s", sock_tail(out));
    /* In scope, every option on, retries, cap: the same results. */
    rc = sock_run(out2, sizeof(out2),
                  PRE ALL "TESHIM_TCP_PORTS=28109 TESHIM_TCP_CONNECT_RETRIES=2 "
                          "TESHIM_TCP_CONNECT_BACKOFF_MS=1 TESHIM_TCP_MAX_CONNECTIONS=100 " HOST
                          " errno 127.0.0.1 28109",
                  b, b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out2));
    ck_assert_str_eq(out, out2);
    /* Preloaded with no TCP policy, and with the port out of scope. */
    rc = sock_run(out2, sizeof(out2), PRE HOST " errno 127.0.0.1 28109", b, b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out2));
    ck_assert_str_eq(out, out2);
    rc = sock_run(out2, sizeof(out2), PRE ALL "TESHIM_TCP_PORTS=9 " HOST " errno 127.0.0.1 28109",
                  b, b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out2));
    ck_assert_str_eq(out, out2);
    /* And the same over IPv6. */
    rc = sock_run(out, sizeof(out), "timeout 30 " HOST " errno ::1 28109", b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    rc = sock_run(out2, sizeof(out2), PRE ALL "TESHIM_TCP_PORTS=28109 " HOST " errno ::1 28109", b,
                  b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out2));
    ck_assert_str_eq(out, out2);
}
END_TEST

START_TEST(accept4_flags_preserved)
{
    const char *b = sock_build_dir();
    int rc = sock_run(out, sizeof(out),
                      PRE ALL "TESHIM_TCP_PEERS=127.0.0.1 " HOST " accept4 127.0.0.1 28110", b, b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "flags_cloexec") == 1, "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "flags_nonblock") == 1, "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "plain_cloexec") == 0, "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "plain_nonblock") == 0, "%s", sock_tail(out));
}
END_TEST

START_TEST(cap_refuses_over_limit_and_slots_return)
{
    const char *b = sock_build_dir();
    int rc = sock_run(out, sizeof(out),
                      PRE "TESHIM_TCP_PORTS=28111 TESHIM_TCP_MAX_CONNECTIONS=3 " HOST
                          " hold 127.0.0.1 28111 5",
                      b, b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "ok") == 3, "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "eagain") == 2, "%s", sock_tail(out));
    ck_assert_msg(strstr(out, "after_close ok"), "%s", sock_tail(out));
}
END_TEST

START_TEST(cap_holds_under_burst)
{
    const char *b = sock_build_dir();
    int rc = sock_run(out, sizeof(out),
                      PRE "TESHIM_TCP_PORTS=28112 TESHIM_TCP_MAX_CONNECTIONS=4 "
                          "TESHIM_TCP_CONNECT_WAIT_MS=20000 " HOST " burst 127.0.0.1 28112 32 30",
                      b, b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "ok") == 32, "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "maxopen") <= 4, "%s", sock_tail(out));
    /* Without waiting, the connects over the cap fail with EAGAIN. */
    rc = sock_run(out, sizeof(out),
                  PRE "TESHIM_TCP_PORTS=28112 TESHIM_TCP_MAX_CONNECTIONS=4 " HOST
                      " burst 127.0.0.1 28112 32 200",
                  b, b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "maxopen") <= 4, "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "other") == 0, "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "ok") + sock_kv(out, "eagain") == 32, "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "eagain") > 0, "%s", sock_tail(out));
    /* Without the shim the burst is not capped: the test can fail. */
    rc = sock_run(out, sizeof(out), "timeout 30 " HOST " burst 127.0.0.1 28112 32 200", b);
    ck_assert_msg(sock_kv(out, "maxopen") > 4, "%s", sock_tail(out));
}
END_TEST

START_TEST(backoff_gives_up_within_bound)
{
    const char *b = sock_build_dir();
    int rc =
        sock_run(out, sizeof(out),
                 PRE "TESHIM_LOG_LEVEL=debug TESHIM_TCP_PORTS=28113 TESHIM_TCP_CONNECT_RETRIES=50 "
                     "TESHIM_TCP_CONNECT_BACKOFF_MS=20 TESHIM_TCP_CONNECT_MAX_MS=400 " HOST
                     " connect 127.0.0.1 28113",
                 b, b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    ck_assert_msg(strstr(out, "connect -1 ECONNREFUSED"), "%s", sock_tail(out));
    /* Retried, with doubling delays, but far fewer than 50 times: the bound
     * of 400 ms ended it. */
    int retries = sock_count_lines(out, ", retry ");
    ck_assert_msg(retries >= 2 && retries < 10, "%d retries\n%s", retries, sock_tail(out));
}
END_TEST

START_TEST(backoff_never_for_nonblocking)
{
    const char *b = sock_build_dir();
    int rc =
        sock_run(out, sizeof(out),
                 PRE "TESHIM_LOG_LEVEL=debug TESHIM_TCP_PORTS=28114 TESHIM_TCP_CONNECT_RETRIES=50 "
                     "TESHIM_TCP_CONNECT_BACKOFF_MS=20 " HOST " errno 127.0.0.1 28114",
                 b, b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    /* connect_refused and connect_again are blocking and retried; the
     * non-blocking connect is not. */
    ck_assert_msg(strstr(out, "connect_nonblock -1 EINPROGRESS"), "%s", sock_tail(out));
    ck_assert_msg(sock_count_lines(out, ", retry ") > 0, "%s", sock_tail(out));
}
END_TEST

START_TEST(fork_and_exec_under_the_shim)
{
    const char *b = sock_build_dir();
    int rc = sock_run(out, sizeof(out),
                      PRE "TESHIM_TCP_DSCP=26 TESHIM_TCP_PORTS=28115 " HOST " fork 127.0.0.1 28115",
                      b, b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "parent_tos") == 104, "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "child_tos") == 104, "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "exec_tos") == 104, "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "exec_status") == 0, "%s", sock_tail(out));
}
END_TEST

START_TEST(constructor_before_shim_constructor)
{
    const char *b = sock_build_dir();
    int rc = sock_run(out, sizeof(out),
                      PRE "TESHIM_TCP_DSCP=26 TESHIM_TCP_PORTS=28117 SOCKCTOR_PORT=28117 "
                          "%s/bin/sockctor_host",
                      b, b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "ctor_tos") == 104, "%s", sock_tail(out));
    ck_assert_msg(sock_kv(out, "main_ran") == 1, "%s", sock_tail(out));
}
END_TEST

START_TEST(stats_count_each_socket)
{
    const char *b = sock_build_dir();
    char dir[] = "/tmp/teshim-sock-stats-XXXXXX";
    ck_assert(mkdtemp(dir) != NULL);
    int rc =
        sock_run(out, sizeof(out),
                 PRE ALL "TESHIM_STATS_DIR=%s TESHIM_TCP_PORTS=28116 " HOST " opts 127.0.0.1 28116",
                 b, dir, b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    ck_assert_int_eq(sock_stat(dir, "sockhost", "connect", "calls"), 1);
    ck_assert_int_eq(sock_stat(dir, "sockhost", "connect", "injected"), 1);
    ck_assert_int_eq(sock_stat(dir, "sockhost", "listen", "injected"), 1);
    ck_assert_int_eq(sock_stat(dir, "sockhost", "accept", "injected"), 1);
    ck_assert_int_eq(sock_stat(dir, "sockhost", "socket", "calls"), 2);
    /* Only descriptors teshim tracks reach the counted path of close:
     * the client socket and the listener. */
    ck_assert_int_eq(sock_stat(dir, "sockhost", "close", "calls"), 2);
    sock_run(out, sizeof(out), "rm -f %s/*.json", dir);
    /* Out of scope: skipped by policy, nothing injected. */
    rc = sock_run(out, sizeof(out),
                  PRE ALL "TESHIM_STATS_DIR=%s TESHIM_TCP_PORTS=9 " HOST " opts 127.0.0.1 28116", b,
                  dir, b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    ck_assert_int_eq(sock_stat(dir, "sockhost", "connect", "skipped_by_policy"), 1);
    ck_assert_int_eq(sock_stat(dir, "sockhost", "connect", "injected"), 0);
    sock_run(out, sizeof(out), "rm -f %s/*.json", dir);
    /* Observe mode counts what it would have done. */
    rc = sock_run(out, sizeof(out),
                  PRE ALL "TESHIM_MODE=observe TESHIM_STATS_DIR=%s "
                          "TESHIM_TCP_PORTS=28116 " HOST " opts 127.0.0.1 28116",
                  b, dir, b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    ck_assert_int_eq(sock_stat(dir, "sockhost", "connect", "observed"), 1);
    ck_assert_int_eq(sock_stat(dir, "sockhost", "connect", "injected"), 0);
    sock_run(out, sizeof(out), "rm -rf %s", dir);
}
END_TEST

/*
 * The Mooncake case: an event-driven target polls its non-blocking listener
 * with accept/accept4 and gets EAGAIN thousands of times a run. Those are
 * would-blocks, never errors, with a policy in scope and without one; the
 * non-blocking connect's EINPROGRESS is no error either.
 */
START_TEST(accept_loop_counts_would_block_not_errors)
{
    const char *b = sock_build_dir();
    static const char *const env[] = {ALL "TESHIM_TCP_PORTS=28118 ", ""};
    char dir[] = "/tmp/teshim-sock-wb-XXXXXX";

    ck_assert(mkdtemp(dir) != NULL);
    for (int k = 0; k < 2; k++) {
        int rc = sock_run(out, sizeof(out),
                          PRE "%sTESHIM_STATS_DIR=%s " HOST " acceptloop 127.0.0.1 28118 300", b,
                          env[k], dir, b);
        ck_assert_msg(rc == 0, "%s", sock_tail(out));
        long wb = sock_kv(out, "would_block");
        ck_assert_msg(wb >= 300 && sock_kv(out, "accepted") == 1, "%s", sock_tail(out));
        ck_assert_int_eq(sock_stat(dir, "sockhost", "accept", "errors"), 0);
        ck_assert_int_eq(sock_stat(dir, "sockhost", "accept4", "errors"), 0);
        ck_assert_int_eq(sock_stat(dir, "sockhost", "accept4", "would_block"), 150);
        ck_assert_int_eq(sock_stat(dir, "sockhost", "accept", "would_block"), wb - 150);
        ck_assert_int_eq(sock_stat(dir, "sockhost", "accept", "calls"), wb - 150 + 1);
        /* The accepted connection: injected in scope, skipped without policy. */
        ck_assert_int_eq(sock_stat(dir, "sockhost", "accept", k ? "skipped_by_policy" : "injected"),
                         1);
        ck_assert_int_eq(sock_stat(dir, "sockhost", "connect", "calls"), 1);
        ck_assert_int_eq(sock_stat(dir, "sockhost", "connect", "errors"), 0);
        ck_assert_int_eq(
            sock_stat(dir, "sockhost", "connect", k ? "skipped_by_policy" : "injected"), 1);
        sock_run(out, sizeof(out), "rm -f %s/*.json", dir);
    }
    sock_run(out, sizeof(out), "rm -rf %s", dir);
}
END_TEST

/*
 * The real failures of every socket hook are errors, the benign codes are
 * not: sockhost errno makes 7 failing connects (refused twice, bad fd, not a
 * socket, NULL, short address, missing Unix path) beside a UDP connect and a
 * non-blocking one (EINPROGRESS), 2 failing socket and listen calls, accept
 * and accept4 on a bad descriptor and a non-listening socket, and one
 * accept on an empty non-blocking listener.
 */
START_TEST(error_rule_sockets)
{
    const char *b = sock_build_dir();
    char dir[] = "/tmp/teshim-sock-err-XXXXXX";

    ck_assert(mkdtemp(dir) != NULL);
    int rc = sock_run(out, sizeof(out),
                      PRE ALL "TESHIM_TCP_PORTS=28119 TESHIM_STATS_DIR=%s " HOST
                              " errno 127.0.0.1 28119",
                      b, dir, b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    ck_assert_int_eq(sock_stat(dir, "sockhost", "connect", "calls"), 9);
    ck_assert_int_eq(sock_stat(dir, "sockhost", "connect", "errors"), 7);
    /* EINPROGRESS after the options were set: injected, not an error. */
    ck_assert_int_eq(sock_stat(dir, "sockhost", "connect", "injected"), 1);
    ck_assert_int_eq(sock_stat(dir, "sockhost", "connect", "not_applicable"), 1); /* UDP */
    ck_assert_int_eq(sock_stat(dir, "sockhost", "socket", "errors"), 2);
    ck_assert_int_eq(sock_stat(dir, "sockhost", "listen", "errors"), 2);
    ck_assert_int_eq(sock_stat(dir, "sockhost", "accept", "calls"), 3);
    ck_assert_int_eq(sock_stat(dir, "sockhost", "accept", "errors"), 2);
    ck_assert_int_eq(sock_stat(dir, "sockhost", "accept", "would_block"), 1);
    ck_assert_int_eq(sock_stat(dir, "sockhost", "accept4", "errors"), 2);
    ck_assert_int_eq(sock_stat(dir, "sockhost", "accept4", "would_block"), 0);
    sock_run(out, sizeof(out), "rm -rf %s", dir);
}
END_TEST

START_TEST(data_path_not_exported)
{
    const char *b = sock_build_dir();
    int rc = sock_run(out, sizeof(out),
                      "readelf --dyn-syms -W %s/lib/libteshim.so | grep -v \" UND \"", b);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    ck_assert_msg(strstr(out, "connect@@GLIBC_"), "%s", sock_tail(out));
    static const char *const data[] = {
        "send",     "recv",   "sendto",     "recvfrom",   "sendmsg",    "recvmsg",  "sendmmsg",
        "recvmmsg", "read",   "write",      "readv",      "writev",     "sendfile", "splice",
        "poll",     "select", "epoll_wait", "setsockopt", "getsockopt", "bind",     NULL};
    for (int i = 0; data[i]; i++) {
        char pat[64];
        char bare[64];
        snprintf(pat, sizeof(pat), " %s@", data[i]);
        snprintf(bare, sizeof(bare), " %s\n", data[i]);
        ck_assert_msg(!strstr(out, pat) && !strstr(out, bare), "libteshim.so exports %s\n%s",
                      data[i], sock_tail(out));
    }
}
END_TEST

static Suite *sock_hooks_suite(void)
{
    Suite *s = suite_create("sock_hooks");
    TCase *tc = tcase_create("hooks");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, options_ipv4_in_scope);
    tcase_add_test(tc, options_ipv6_in_scope);
    tcase_add_test(tc, options_out_of_scope_port);
    tcase_add_test(tc, options_empty_scope_is_none);
    tcase_add_test(tc, options_peer_scope);
    tcase_add_test(tc, application_values_win);
    tcase_add_test(tc, override_beats_application);
    tcase_add_test(tc, gates_leave_sockets_alone);
    tcase_add_test(tc, passthrough_errno_unchanged);
    tcase_add_test(tc, accept4_flags_preserved);
    tcase_add_test(tc, cap_refuses_over_limit_and_slots_return);
    tcase_add_test(tc, cap_holds_under_burst);
    tcase_add_test(tc, backoff_gives_up_within_bound);
    tcase_add_test(tc, backoff_never_for_nonblocking);
    tcase_add_test(tc, fork_and_exec_under_the_shim);
    tcase_add_test(tc, constructor_before_shim_constructor);
    tcase_add_test(tc, stats_count_each_socket);
    tcase_add_test(tc, accept_loop_counts_would_block_not_errors);
    tcase_add_test(tc, error_rule_sockets);
    tcase_add_test(tc, data_path_not_exported);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(sock_hooks_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
