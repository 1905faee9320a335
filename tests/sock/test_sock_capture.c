/*
 * DSCP on the wire: tcpdump on the loopback interface while unmodified curl
 * and socat talk under libteshim.so. Packet capture needs CAP_NET_RAW; where
 * it is not possible the suite exits 77 (CTest SKIP_RETURN_CODE) with the
 * reason, and never passes silently.
 */
#include "sock_test_util.h"

static char out[SOCK_OUT_MAX];

/* Every real program runs under `teshim run`, as a user would. */
/* A shell function: wait up to 10 s until something listens on port $1. */
#define WL                                                                                         \
    "wl() { for i in $(seq 200); do ss -Hltn \"sport = :$1\" | grep -q . && return 0; "            \
    "sleep 0.05; done; return 1; }; "
#define PRE "env -u TESHIM_BUILD_DIR -u TESHIM_SOURCE_DIR %s/bin/teshim run --set log.level=warn "

/*
 * Count, in tcpdump -v text, the packets whose line names "> dst" (the
 * address and port, with the colon) and how many of them carry mark
 * ("tos 0x68" or "class 0x68"). IPv4 prints the header on the line before
 * the addresses, IPv6 on the same line.
 */
static void count_marked(const char *cap, const char *dst, const char *mark, int *total,
                         int *marked)
{
    const char *prev = cap;

    *total = *marked = 0;
    for (const char *l = cap; l && *l;) {
        const char *e = strchr(l, '\n');
        size_t len = e ? (size_t)(e - l) : strlen(l);
        char line[1024], pline[1024];
        snprintf(line, sizeof(line), "%.*s", (int)(len < 1023 ? len : 1023), l);
        const char *pe = strchr(prev, '\n');
        size_t plen = pe && pe < l ? (size_t)(pe - prev) : 0;
        snprintf(pline, sizeof(pline), "%.*s", (int)(plen < 1023 ? plen : 1023), prev);
        if (strstr(line, dst)) {
            (*total)++;
            const char *hdr = strstr(line, "IP6 (") ? line : pline;
            if (strstr(hdr, mark))
                (*marked)++;
        }
        prev = l;
        l = e ? e + 1 : NULL;
    }
}

/*
 * Capture around a client to an in-scope and an out-of-scope server; both
 * servers and the client run under the shim with the scope = in_port.
 */
static void capture(const char *addr, const char *url_host, int in_port, int out_port)
{
    const char *b = sock_build_dir();
    int rc = sock_run(
        out, sizeof(out),
        WL
        "D=$(mktemp -d); "
        "timeout 20 tcpdump -i lo -n -v -l \"tcp port %d or tcp port %d\" >$D/cap 2>$D/err & T=$!; "
        "for i in $(seq 100); do grep -q \"listening on\" $D/err && break; sleep 0.05; done; "
        "for p in %d %d; do " PRE "--set tcp.ports=%d --set tcp.dscp=26 -- timeout 10 "
        "socat TCP6-LISTEN:$p,bind=%s,reuseaddr,fork,ipv6only=0 SYSTEM:\"echo hello; sleep 0.2\" & "
        "done; "
        "wl %d; wl %d; "
        "for p in %d %d; do " PRE "--set tcp.ports=%d --set tcp.dscp=26 -- timeout 5 "
        "curl -sS --http0.9 --max-time 3 http://%s:$p/; done; "
        "sleep 0.5; kill $T; kill $(jobs -p) 2>/dev/null; wait; "
        "echo ---; cat $D/cap; rm -rf $D",
        in_port, out_port, in_port, out_port, b, in_port, strchr(addr, ':') ? "[::1]" : "[::]",
        in_port, out_port, in_port, out_port, b, in_port, url_host);
    ck_assert_msg(rc == 0, "%s", sock_tail(out));
    ck_assert_msg(sock_count_lines(out, "hello") == 2, "both transfers completed\n%s",
                  sock_tail(out));
}

START_TEST(dscp_on_in_scope_connection_only_ipv4)
{
    int total, marked;
    char dst[64];

    capture("127.0.0.1", "127.0.0.1", 28301, 28302);
    /* Client to server and server to client of the in-scope connection. */
    snprintf(dst, sizeof(dst), "> 127.0.0.1.%d:", 28301);
    count_marked(out, dst, "tos 0x68", &total, &marked);
    ck_assert_msg(total > 0 && marked == total, "to %d: %d of %d marked\n%s", 28301, marked, total,
                  out);
    snprintf(dst, sizeof(dst), "127.0.0.1.%d > ", 28301);
    count_marked(out, dst, "tos 0x68", &total, &marked);
    ck_assert_msg(total > 0 && marked == total, "from %d: %d of %d marked\n%s", 28301, marked,
                  total, sock_tail(out));
    snprintf(dst, sizeof(dst), "> 127.0.0.1.%d:", 28302);
    count_marked(out, dst, "tos 0x68", &total, &marked);
    ck_assert_msg(total > 0 && marked == 0, "to %d: %d of %d marked\n%s", 28302, marked, total,
                  out);
    snprintf(dst, sizeof(dst), "127.0.0.1.%d > ", 28302);
    count_marked(out, dst, "tos 0x0,", &total, &marked);
    ck_assert_msg(total > 0 && marked == total, "from %d: %d of %d unmarked\n%s", 28302, marked,
                  total, sock_tail(out));
}
END_TEST

START_TEST(dscp_on_in_scope_connection_only_ipv6)
{
    int total, marked;
    char dst[64];

    capture("::1", "[::1]", 28303, 28304);
    snprintf(dst, sizeof(dst), "> ::1.%d:", 28303);
    count_marked(out, dst, "class 0x68", &total, &marked);
    ck_assert_msg(total > 0 && marked == total, "to %d: %d of %d marked\n%s", 28303, marked, total,
                  out);
    snprintf(dst, sizeof(dst), "::1.%d > ", 28303);
    count_marked(out, dst, "class 0x68", &total, &marked);
    ck_assert_msg(total > 0 && marked == total, "from %d: %d of %d marked\n%s", 28303, marked,
                  total, sock_tail(out));
    snprintf(dst, sizeof(dst), "> ::1.%d:", 28304);
    count_marked(out, dst, "class 0x68", &total, &marked);
    ck_assert_msg(total > 0 && marked == 0, "to %d: %d of %d marked\n%s", 28304, marked, total,
                  out);
}
END_TEST

/* Exits 77 with the reason when tcpdump cannot capture on lo here. */
static void skip_unless_capture_possible(void)
{
    static char probe[8192];
    int rc =
        sock_run(probe, sizeof(probe),
                 "command -v tcpdump >/dev/null || { echo \"tcpdump not installed\"; exit 3; }; "
                 "command -v socat >/dev/null || { echo \"socat not installed\"; exit 3; }; "
                 "command -v curl >/dev/null || { echo \"curl not installed\"; exit 3; }; "
                 "timeout 2 tcpdump -i lo -n -c 1 \"tcp port 1\"; echo rc=$?");
    if (rc == 3 || !strstr(probe, "listening on")) {
        printf("SKIP: packet capture on lo is not possible here (needs tcpdump, socat, curl and "
               "CAP_NET_RAW):\n%s\n",
               probe);
        exit(77);
    }
}

int main(void)
{
    skip_unless_capture_possible();
    Suite *s = suite_create("sock_capture");
    TCase *tc = tcase_create("capture");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, dscp_on_in_scope_connection_only_ipv4);
    tcase_add_test(tc, dscp_on_in_scope_connection_only_ipv6);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
