/* TCP decisions on plain structs: scope, options, verdicts, backoff. */
#include "pol_tcp.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

static struct pol_config cfg;

/* Load a configuration from the given TESHIM_* assignments only. */
static void load(const char *const *env)
{
    struct pol_sources src = {0};

    src.environ = (char *const *)env;
    src.program = "test";
    src.host = "host";
    src.config_path = "/nonexistent/teshim.conf";
    src.etc_path = "/nonexistent/teshim.conf";
    pol_load(&cfg, &src);
}

static struct sockaddr_storage sa4(const char *ip, int port)
{
    struct sockaddr_storage ss;
    struct sockaddr_in *s = (struct sockaddr_in *)&ss;

    memset(&ss, 0, sizeof(ss));
    s->sin_family = AF_INET;
    s->sin_port = htons((uint16_t)port);
    ck_assert_int_eq(inet_pton(AF_INET, ip, &s->sin_addr), 1);
    return ss;
}

static struct sockaddr_storage sa6(const char *ip, int port)
{
    struct sockaddr_storage ss;
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;

    memset(&ss, 0, sizeof(ss));
    s->sin6_family = AF_INET6;
    s->sin6_port = htons((uint16_t)port);
    ck_assert_int_eq(inet_pton(AF_INET6, ip, &s->sin6_addr), 1);
    return ss;
}

#define SA(x) ((const struct sockaddr *)&(x))

START_TEST(scope_parse_ports_and_peers)
{
    struct pol_tcp_scope s;
    char err[256];

    ck_assert_int_eq(
        pol_tcp_scope_parse("80, 5000-5999,65535", "10.0.0.0/8,::1,fd00::/8", &s, err, sizeof(err)),
        0);
    ck_assert_uint_eq(s.nports, 3);
    ck_assert_uint_eq(s.ports[1].lo, 5000);
    ck_assert_uint_eq(s.ports[1].hi, 5999);
    ck_assert_uint_eq(s.npeers, 3);
    ck_assert_uint_eq(s.peers[0].prefix, 8);
    ck_assert_uint_eq(s.peers[1].prefix, 128);
    ck_assert_int_eq(s.peers[2].family, AF_INET6);
}
END_TEST

START_TEST(scope_parse_rejects_bad_items)
{
    static const char *const bad_ports[] = {"x", "70000", "10-5", "5-", "-5", "1.5", NULL};
    static const char *const bad_peers[] = {"10.0.0.0/33", "::1/129",   "host", "10.0.0/8",
                                            "1.2.3.4/",    "1.2.3.4/x", NULL};
    struct pol_tcp_scope s;
    char err[256];

    for (int i = 0; bad_ports[i]; i++) {
        ck_assert_int_eq(pol_tcp_scope_parse(bad_ports[i], "", &s, err, sizeof(err)), -EINVAL);
        ck_assert_msg(strstr(err, bad_ports[i]), "%s", err);
        ck_assert(pol_tcp_scope_empty(&s));
    }
    for (int i = 0; bad_peers[i]; i++) {
        ck_assert_int_eq(pol_tcp_scope_parse("80", bad_peers[i], &s, err, sizeof(err)), -EINVAL);
        ck_assert_msg(strstr(err, "tcp.peers"), "%s", err);
        /* One bad item empties the whole scope: nothing in scope. */
        ck_assert(pol_tcp_scope_empty(&s));
    }
    char many[512] = "";
    for (int i = 0; i <= POL_TCP_MAX_RANGES; i++)
        snprintf(many + strlen(many), sizeof(many) - strlen(many), "%d,", 1000 + i);
    ck_assert_int_eq(pol_tcp_scope_parse(many, "", &s, err, sizeof(err)), -E2BIG);
}
END_TEST

START_TEST(scope_ports_match_local_or_remote)
{
    struct pol_tcp_scope s;
    struct sockaddr_storage in = sa4("192.0.2.1", 5500), out = sa4("192.0.2.1", 6000),
                            local = sa4("0.0.0.0", 5001), eph = sa4("0.0.0.0", 40000);

    ck_assert_int_eq(pol_tcp_scope_parse("5000-5999", "", &s, NULL, 0), 0);
    ck_assert(pol_tcp_in_scope(&s, NULL, SA(in)));
    ck_assert(!pol_tcp_in_scope(&s, NULL, SA(out)));
    ck_assert(pol_tcp_in_scope(&s, SA(local), SA(out)));
    ck_assert(!pol_tcp_in_scope(&s, SA(eph), SA(out)));
    ck_assert(pol_tcp_in_scope(&s, SA(local), NULL)); /* a listener */
    ck_assert(!pol_tcp_in_scope(&s, NULL, NULL));
}
END_TEST

START_TEST(scope_cidr_v4_v6_and_mapped)
{
    struct pol_tcp_scope s;
    struct sockaddr_storage a = sa4("10.1.2.3", 80), b = sa4("11.0.0.1", 80), c = sa6("::1", 80),
                            d = sa6("::2", 80), m = sa6("::ffff:10.9.9.9", 80),
                            e = sa4("172.31.255.255", 1), f = sa4("172.32.0.0", 1),
                            g = sa6("fd12::1", 1);

    ck_assert_int_eq(pol_tcp_scope_parse("", "10.0.0.0/8,::1,172.16.0.0/12,fd00::/8", &s, NULL, 0),
                     0);
    ck_assert(pol_tcp_in_scope(&s, NULL, SA(a)));
    ck_assert(!pol_tcp_in_scope(&s, NULL, SA(b)));
    ck_assert(pol_tcp_in_scope(&s, NULL, SA(c)));
    ck_assert(!pol_tcp_in_scope(&s, NULL, SA(d)));
    ck_assert(pol_tcp_in_scope(&s, NULL, SA(m)));
    ck_assert(pol_tcp_in_scope(&s, NULL, SA(e)));
    ck_assert(!pol_tcp_in_scope(&s, NULL, SA(f)));
    ck_assert(pol_tcp_in_scope(&s, NULL, SA(g)));
    /* A listener has no peer: a peers scope cannot match it. */
    ck_assert(!pol_tcp_in_scope(&s, SA(a), NULL));
    ck_assert(pol_tcp_v4mapped(SA(m)));
    ck_assert(!pol_tcp_v4mapped(SA(c)));
    ck_assert(!pol_tcp_v4mapped(SA(a)));
}
END_TEST

START_TEST(scope_both_lists_must_match)
{
    struct pol_tcp_scope s;
    struct sockaddr_storage yes = sa4("10.0.0.1", 80), port_no = sa4("10.0.0.1", 81),
                            peer_no = sa4("11.0.0.1", 80);

    ck_assert_int_eq(pol_tcp_scope_parse("80", "10.0.0.0/8", &s, NULL, 0), 0);
    ck_assert(pol_tcp_in_scope(&s, NULL, SA(yes)));
    ck_assert(!pol_tcp_in_scope(&s, NULL, SA(port_no)));
    ck_assert(!pol_tcp_in_scope(&s, NULL, SA(peer_no)));
    ck_assert_int_eq(pol_tcp_scope_parse("0/0", "", &s, NULL, 0), -EINVAL);
    ck_assert_int_eq(pol_tcp_scope_parse("", "0.0.0.0/0", &s, NULL, 0), 0);
    ck_assert(pol_tcp_in_scope(&s, NULL, SA(peer_no)));
}
END_TEST

START_TEST(plan_follows_configuration)
{
    static const char *const env[] = {"TESHIM_TCP_DSCP=46", "TESHIM_TCP_NODELAY=on",
                                      "TESHIM_TCP_KEEPALIVE_IDLE_S=30",
                                      "TESHIM_TCP_USER_TIMEOUT_MS=5000", NULL};
    struct pol_tcp_plan p;

    load(env);
    pol_tcp_plan(&cfg, AF_INET, false, &p);
    ck_assert_uint_eq(p.mask, (1u << POL_TCP_O_TOS) | (1u << POL_TCP_O_NODELAY) |
                                  (1u << POL_TCP_O_KEEPALIVE) | (1u << POL_TCP_O_KEEPIDLE) |
                                  (1u << POL_TCP_O_USER_TIMEOUT));
    ck_assert_int_eq(p.value[POL_TCP_O_TOS], 46 << 2);
    ck_assert_int_eq(p.value[POL_TCP_O_KEEPIDLE], 30);
    pol_tcp_plan(&cfg, AF_INET6, false, &p);
    ck_assert(p.mask & (1u << POL_TCP_O_TCLASS));
    ck_assert(!(p.mask & (1u << POL_TCP_O_TOS)));
    pol_tcp_plan(&cfg, AF_INET6, true, &p);
    ck_assert(p.mask & (1u << POL_TCP_O_TCLASS));
    ck_assert(p.mask & (1u << POL_TCP_O_TOS));
    ck_assert(pol_tcp_configured(&cfg));
}
END_TEST

START_TEST(nothing_configured_by_default)
{
    static const char *const env[] = {NULL};
    struct pol_tcp_plan p;
    struct pol_tcp_scope s;
    struct sockaddr_storage a = sa4("127.0.0.1", 80);

    load(env);
    pol_tcp_plan(&cfg, AF_INET6, true, &p);
    ck_assert_uint_eq(p.mask, 0);
    ck_assert(!pol_tcp_configured(&cfg));
    ck_assert_int_eq(pol_tcp_scope_parse("80", "", &s, NULL, 0), 0);
    ck_assert_int_eq(pol_tcp_verdict(&cfg, &s, NULL, SA(a)), POL_SKIP_POLICY);
}
END_TEST

START_TEST(application_values_win_unless_override)
{
    static const char *const env[] = {"TESHIM_TCP_DSCP=10", "TESHIM_TCP_SNDBUF=64K",
                                      "TESHIM_TCP_NODELAY=on", NULL};
    static const char *const env_ovr[] = {"TESHIM_TCP_DSCP=10", "TESHIM_TCP_SNDBUF=64K",
                                          "TESHIM_TCP_NODELAY=on", "TESHIM_TCP_OVERRIDE=on", NULL};
    struct pol_tcp_plan p;
    int deflt[POL_TCP_O_COUNT] = {0}, cur[POL_TCP_O_COUNT] = {0};
    unsigned all = (1u << POL_TCP_O_COUNT) - 1;

    deflt[POL_TCP_O_SNDBUF] = cur[POL_TCP_O_SNDBUF] = 16384;
    load(env);
    pol_tcp_plan(&cfg, AF_INET, false, &p);
    /* Fresh socket: everything wanted is set. */
    ck_assert_uint_eq(pol_tcp_to_set(&cfg, &p, cur, cur, deflt, all), p.mask);
    /* The application chose a TOS and a buffer: those stay. */
    cur[POL_TCP_O_TOS] = 0x20;
    cur[POL_TCP_O_SNDBUF] = 2 * 32768;
    ck_assert_uint_eq(pol_tcp_to_set(&cfg, &p, cur, cur, deflt, all), 1u << POL_TCP_O_NODELAY);
    /* Already what we want (buffers read back doubled): nothing to do. */
    cur[POL_TCP_O_TOS] = 40;
    cur[POL_TCP_O_SNDBUF] = 2 * 65536;
    cur[POL_TCP_O_NODELAY] = 1;
    ck_assert_uint_eq(pol_tcp_to_set(&cfg, &p, cur, cur, deflt, all), 0);
    /* Unknown values are left alone. */
    cur[POL_TCP_O_NODELAY] = 0;
    ck_assert_uint_eq(pol_tcp_to_set(&cfg, &p, cur, cur, deflt, all & ~(1u << POL_TCP_O_NODELAY)),
                      0);
    /* An accepted socket: what the application chose is on the listener.
     * The listener holds our TOS (ours or the same choice): set it here
     * too, unless already inherited; a listener TOS of the application's
     * own stays. */
    int lst[POL_TCP_O_COUNT] = {0}, acc[POL_TCP_O_COUNT] = {0};
    lst[POL_TCP_O_TOS] = 40;
    lst[POL_TCP_O_SNDBUF] = acc[POL_TCP_O_SNDBUF] = 16384;
    lst[POL_TCP_O_NODELAY] = acc[POL_TCP_O_NODELAY] = 1;
    ck_assert_uint_eq(pol_tcp_to_set(&cfg, &p, acc, lst, deflt, all),
                      (1u << POL_TCP_O_TOS) | (1u << POL_TCP_O_SNDBUF));
    acc[POL_TCP_O_TOS] = 40;
    ck_assert_uint_eq(pol_tcp_to_set(&cfg, &p, acc, lst, deflt, all), 1u << POL_TCP_O_SNDBUF);
    lst[POL_TCP_O_TOS] = acc[POL_TCP_O_TOS] = 0x20;
    ck_assert_uint_eq(pol_tcp_to_set(&cfg, &p, acc, lst, deflt, all), 1u << POL_TCP_O_SNDBUF);
    /* Override: the application's values are replaced. */
    load(env_ovr);
    cur[POL_TCP_O_TOS] = 0x20;
    ck_assert_uint_eq(pol_tcp_to_set(&cfg, &p, cur, cur, deflt, all),
                      (1u << POL_TCP_O_TOS) | (1u << POL_TCP_O_NODELAY));
}
END_TEST

START_TEST(verdict_gates_and_scope)
{
    static const char *const on[] = {"TESHIM_TCP_DSCP=10", NULL};
    static const char *const obs[] = {"TESHIM_TCP_DSCP=10", "TESHIM_MODE=observe", NULL};
    static const char *const off[] = {"TESHIM_TCP_DSCP=10", "TESHIM_DISABLE=1", NULL};
    static const char *const arm_a[] = {"TESHIM_TCP_DSCP=10", "TESHIM_ROLLOUT_ARM=A", NULL};
    static const char *const prog[] = {"TESHIM_TCP_DSCP=10", "TESHIM_SCOPE_PROGRAMS=other", NULL};
    static const char *const cap[] = {"TESHIM_TCP_MAX_CONNECTIONS=4", NULL};
    struct pol_tcp_scope s, empty;
    struct sockaddr_storage in = sa4("127.0.0.1", 80), out = sa4("127.0.0.1", 81);

    ck_assert_int_eq(pol_tcp_scope_parse("80", "", &s, NULL, 0), 0);
    ck_assert_int_eq(pol_tcp_scope_parse("", "", &empty, NULL, 0), 0);
    load(on);
    ck_assert_int_eq(pol_tcp_verdict(&cfg, &s, NULL, SA(in)), POL_INJECT);
    ck_assert_int_eq(pol_tcp_verdict(&cfg, &s, NULL, SA(out)), POL_SKIP_POLICY);
    ck_assert_int_eq(pol_tcp_verdict(&cfg, &empty, NULL, SA(in)), POL_SKIP_POLICY);
    load(obs);
    ck_assert_int_eq(pol_tcp_verdict(&cfg, &s, NULL, SA(in)), POL_OBSERVED);
    load(off);
    ck_assert_int_eq(pol_tcp_verdict(&cfg, &s, NULL, SA(in)), POL_SKIP_POLICY);
    load(arm_a);
    ck_assert_int_eq(pol_tcp_verdict(&cfg, &s, NULL, SA(in)), POL_SKIP_POLICY);
    load(prog);
    ck_assert_int_eq(pol_tcp_verdict(&cfg, &s, NULL, SA(in)), POL_SKIP_POLICY);
    load(cap);
    ck_assert(pol_tcp_configured(&cfg));
    ck_assert_int_eq(pol_tcp_verdict(&cfg, &s, NULL, SA(in)), POL_INJECT);
}
END_TEST

START_TEST(bad_values_keep_defaults)
{
    static const char *const env[] = {"TESHIM_TCP_DSCP=64", "TESHIM_TCP_KEEPALIVE_COUNT=0",
                                      "TESHIM_TCP_SNDBUF=1", NULL};

    load(env);
    ck_assert(!pol_is_set(&cfg, POL_TCP_DSCP));
    ck_assert(!pol_is_set(&cfg, POL_TCP_KEEPALIVE_COUNT));
    ck_assert(!pol_is_set(&cfg, POL_TCP_SNDBUF));
    ck_assert_uint_ge(cfg.nwarnings, 3);
}
END_TEST

static uint32_t fixed_rand(void *arg)
{
    return *(uint32_t *)arg;
}

static uint32_t counting_rand(void *arg)
{
    return (*(uint32_t *)arg)++;
}

START_TEST(backoff_doubles_with_jitter)
{
    /* r = 0: the low end, half of each doubled delay. */
    ck_assert_int_eq(pol_tcp_backoff_delay_ms(100, 0, 5, 0, 100000, 0), 50);
    ck_assert_int_eq(pol_tcp_backoff_delay_ms(100, 1, 5, 0, 100000, 0), 100);
    ck_assert_int_eq(pol_tcp_backoff_delay_ms(100, 4, 5, 0, 100000, 0), 800);
    /* r at the top of the range: the whole delay. */
    ck_assert_int_eq(pol_tcp_backoff_delay_ms(100, 0, 5, 0, 100000, 50), 100);
    ck_assert_int_eq(pol_tcp_backoff_delay_ms(100, 2, 5, 0, 100000, 200), 400);
    for (uint32_t r = 0; r < 1000; r += 7) {
        int64_t d = pol_tcp_backoff_delay_ms(100, 3, 5, 0, 100000, r);
        ck_assert(d >= 400 && d <= 800);
    }
    /* Attempts are bounded. */
    ck_assert_int_eq(pol_tcp_backoff_delay_ms(100, 5, 5, 0, 100000, 0), -1);
    ck_assert_int_eq(pol_tcp_backoff_delay_ms(100, 0, 0, 0, 100000, 0), -1);
}
END_TEST

START_TEST(backoff_bounded_in_total_time)
{
    /* The last delay is cut to what is left; none after the bound. */
    ck_assert_int_eq(pol_tcp_backoff_delay_ms(100, 3, 10, 900, 1000, 0), 100);
    ck_assert_int_eq(pol_tcp_backoff_delay_ms(100, 3, 10, 1000, 1000, 0), -1);
    ck_assert_int_eq(pol_tcp_backoff_delay_ms(100, 0, 10, 1500, 1000, 0), -1);
    /* Large retry numbers do not overflow. */
    int64_t d = pol_tcp_backoff_delay_ms(1000, 900, 1000, 0, 3600000, 0);
    ck_assert(d > 0 && d <= 3600000);
}
END_TEST

START_TEST(backoff_schedule_sums_within_bound)
{
    static const char *const env[] = {"TESHIM_TCP_CONNECT_RETRIES=20",
                                      "TESHIM_TCP_CONNECT_BACKOFF_MS=50",
                                      "TESHIM_TCP_CONNECT_MAX_MS=2000", NULL};
    int64_t d[64], sum = 0;
    uint32_t r = 0;

    load(env);
    int n = pol_tcp_backoff_schedule(&cfg, fixed_rand, &r, d, 64);
    /* 25, 50, 100, 200, 400, 800 = 1575; then 1600 cut to 425. */
    ck_assert_int_eq(n, 7);
    ck_assert_int_eq(d[0], 25);
    ck_assert_int_eq(d[5], 800);
    ck_assert_int_eq(d[6], 425);
    for (int i = 0; i < n; i++)
        sum += d[i];
    ck_assert_int_eq(sum, 2000);
    /* Another random source, another schedule, same bounds. */
    r = 12345;
    n = pol_tcp_backoff_schedule(&cfg, counting_rand, &r, d, 64);
    sum = 0;
    for (int i = 0; i < n; i++) {
        ck_assert(d[i] > 0);
        sum += d[i];
    }
    ck_assert_int_le(sum, 2000);
    ck_assert_int_le(n, 20);
}
END_TEST

static Suite *sock_policy_suite(void)
{
    Suite *s = suite_create("sock_policy");
    TCase *tc = tcase_create("tcp");

    tcase_add_test(tc, scope_parse_ports_and_peers);
    tcase_add_test(tc, scope_parse_rejects_bad_items);
    tcase_add_test(tc, scope_ports_match_local_or_remote);
    tcase_add_test(tc, scope_cidr_v4_v6_and_mapped);
    tcase_add_test(tc, scope_both_lists_must_match);
    tcase_add_test(tc, plan_follows_configuration);
    tcase_add_test(tc, nothing_configured_by_default);
    tcase_add_test(tc, application_values_win_unless_override);
    tcase_add_test(tc, verdict_gates_and_scope);
    tcase_add_test(tc, bad_values_keep_defaults);
    tcase_add_test(tc, backoff_doubles_with_jitter);
    tcase_add_test(tc, backoff_bounded_in_total_time);
    tcase_add_test(tc, backoff_schedule_sums_within_bound);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(sock_policy_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
