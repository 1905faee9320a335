/*
 * Validation: every bad value is reported once through the diag sink with
 * the key, the value and the accepted range, and the value in force (the
 * default when nothing else set it) stays.
 */
#include "tpol.h"

#include <stdlib.h>
#include <string.h>

/* Load with one environment variable; expect exactly one diagnostic. */
static void load_env_one(struct tpol *t, const char *name, const char *value)
{
    tpol_init(t);
    tpol_env(t, name, value);
    tpol_eq(t, tpol_load(t), 1);
    tpol_eq(t, t->diags.n, 1);
    ck_assert_int_eq(t->diags.level[0], POL_LOG_WARN);
}

/* Load a config file; expect exactly one diagnostic. */
static void load_file_one(struct tpol *t, const char *text)
{
    tpol_init(t);
    tpol_env(t, "TESHIM_CONFIG", tpol_write(t, "bad.conf", text));
    tpol_eq(t, tpol_load(t), 1);
    tpol_eq(t, t->diags.n, 1);
}

START_TEST(bad_bool)
{
    struct tpol t;

    load_env_one(&t, "TESHIM_DISABLE", "maybe");
    tpol_eq(&t, tpol_count(&t, "disable", "'maybe'", "not valid", "on|off", NULL), 1);
    ck_assert_int_eq(pol_int(&t.cfg, POL_DISABLE), 0);
    ck_assert_int_eq(t.cfg.v[POL_DISABLE].src, POL_SRC_DEFAULT);
    ck_assert_int_eq(t.cfg.gate, POL_GATE_ENFORCE);
}
END_TEST

START_TEST(bool_spellings)
{
    static const char *const on[] = {"1", "on", "ON", "true", "yes", "enable"};
    static const char *const off[] = {"0", "off", "False", "no", "disabled"};

    for (size_t i = 0; i < sizeof(on) / sizeof(on[0]); i++) {
        struct tpol t;
        tpol_init(&t);
        tpol_env(&t, "TESHIM_DISABLE", on[i]);
        tpol_eq(&t, tpol_load(&t), 0);
        ck_assert_msg(pol_int(&t.cfg, POL_DISABLE) == 1, "'%s' is not on", on[i]);
    }
    for (size_t i = 0; i < sizeof(off) / sizeof(off[0]); i++) {
        struct tpol t;
        tpol_init(&t);
        tpol_env(&t, "TESHIM_STATS_LIVE", off[i]);
        tpol_eq(&t, tpol_load(&t), 0);
        ck_assert_msg(pol_int(&t.cfg, POL_STATS_LIVE) == 0, "'%s' is not off", off[i]);
    }
}
END_TEST

START_TEST(bad_int)
{
    struct tpol t;

    load_env_one(&t, "TESHIM_RDMA_TRAFFIC_CLASS", "abc");
    tpol_eq(&t, tpol_count(&t, "rdma.traffic_class", "'abc'", "not valid", "0..255", NULL), 1);
    ck_assert(!pol_is_set(&t.cfg, POL_RDMA_TRAFFIC_CLASS));

    /* Trailing garbage is not a number either; never a silent 0 or 12. */
    load_env_one(&t, "TESHIM_ROLLOUT_PERCENT", "12abc");
    tpol_eq(&t, tpol_count(&t, "rollout.percent", "'12abc'", "0..100", NULL), 1);
    ck_assert_int_eq(pol_int(&t.cfg, POL_ROLLOUT_PERCENT), 100);
}
END_TEST

START_TEST(int_out_of_range)
{
    struct tpol t;

    load_env_one(&t, "TESHIM_RDMA_TRAFFIC_CLASS", "256");
    tpol_eq(&t, tpol_count(&t, "rdma.traffic_class", "'256'", "out of range", "0..255", NULL), 1);
    ck_assert(!pol_is_set(&t.cfg, POL_RDMA_TRAFFIC_CLASS));

    load_env_one(&t, "TESHIM_RDMA_SERVICE_LEVEL", "-1");
    tpol_eq(&t, tpol_count(&t, "rdma.service_level", "'-1'", "out of range", "0..15", NULL), 1);
    ck_assert(!pol_is_set(&t.cfg, POL_RDMA_SERVICE_LEVEL));

    load_file_one(&t, "rollout.percent = 101\n");
    tpol_eq(&t,
            tpol_count(&t, "bad.conf:1", "rollout.percent", "'101'", "out of range", "0..100",
                       "'100'", NULL),
            1);
    ck_assert_int_eq(pol_int(&t.cfg, POL_ROLLOUT_PERCENT), 100);

    /* Beyond 64 bits. */
    load_env_one(&t, "TESHIM_ROLLOUT_PERCENT", "99999999999999999999999");
    tpol_eq(&t, tpol_count(&t, "rollout.percent", "out of range", "0..100", NULL), 1);
    ck_assert_int_eq(pol_int(&t.cfg, POL_ROLLOUT_PERCENT), 100);
}
END_TEST

START_TEST(bad_size)
{
    struct tpol t;

    load_env_one(&t, "TESHIM_RDMA_RELAXED_ORDERING_MIN_BYTES", "12Q");
    tpol_eq(&t,
            tpol_count(&t, "rdma.relaxed_ordering_min_bytes", "'12Q'", "not valid", "K, M, G",
                       "'64K'", NULL),
            1);
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_RELAXED_ORDERING_MIN_BYTES), 64 * 1024);

    load_env_one(&t, "TESHIM_RDMA_RELAXED_ORDERING_MIN_BYTES", "-4K");
    tpol_eq(&t, tpol_count(&t, "rdma.relaxed_ordering_min_bytes", "out of range", NULL), 1);
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_RELAXED_ORDERING_MIN_BYTES), 64 * 1024);

    /* A multiplier that overflows 64 bits. */
    load_env_one(&t, "TESHIM_RDMA_RELAXED_ORDERING_MIN_BYTES", "99999999999T");
    tpol_eq(&t, tpol_count(&t, "rdma.relaxed_ordering_min_bytes", "out of range", NULL), 1);
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_RELAXED_ORDERING_MIN_BYTES), 64 * 1024);
}
END_TEST

START_TEST(size_suffixes)
{
    static const struct {
        const char *text;
        int64_t bytes;
    } cases[] = {{"0", 0},          {"4096", 4096},    {"4k", 4096},  {"1M", 1 << 20},
                 {"2MiB", 2 << 20}, {"1G", 1LL << 30}, {"3KB", 3072}, {"0x1000", 4096}};

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tpol t;
        tpol_init(&t);
        tpol_env(&t, "TESHIM_RDMA_RELAXED_ORDERING_MIN_BYTES", cases[i].text);
        tpol_eq(&t, tpol_load(&t), 0);
        ck_assert_msg(pol_int(&t.cfg, POL_RDMA_RELAXED_ORDERING_MIN_BYTES) == cases[i].bytes,
                      "'%s' gave %lld", cases[i].text,
                      (long long)pol_int(&t.cfg, POL_RDMA_RELAXED_ORDERING_MIN_BYTES));
    }
}
END_TEST

START_TEST(bad_enum)
{
    struct tpol t;

    load_file_one(&t, "rdma.relaxed_ordering = sometimes\n");
    tpol_eq(&t,
            tpol_count(&t, "rdma.relaxed_ordering", "'sometimes'", "off|on|auto", "'off'", NULL),
            1);
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_RELAXED_ORDERING), POL_RO_OFF);

    load_env_one(&t, "TESHIM_MODE", "enforcing");
    tpol_eq(&t, tpol_count(&t, "mode", "'enforcing'", "enforce|observe", NULL), 1);
    ck_assert_int_eq(pol_int(&t.cfg, POL_MODE), POL_MODE_ENFORCE);
}
END_TEST

/* A bad value later in the chain keeps the earlier source's good one. */
START_TEST(bad_env_keeps_file_value)
{
    struct tpol t;

    tpol_init(&t);
    tpol_env(&t, "TESHIM_CONFIG", tpol_write(&t, "a.conf", "rdma.traffic_class = 26\n"));
    tpol_env(&t, "TESHIM_RDMA_TRAFFIC_CLASS", "300");
    tpol_eq(&t, tpol_load(&t), 1);
    tpol_eq(&t, tpol_count(&t, "TESHIM_RDMA_TRAFFIC_CLASS", "'300'", "'26'", NULL), 1);
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_TRAFFIC_CLASS), 26);
    ck_assert_int_eq(t.cfg.v[POL_RDMA_TRAFFIC_CLASS].src, POL_SRC_FILE);
}
END_TEST

START_TEST(overlong_value)
{
    struct tpol t;
    size_t n = 20000;
    char *big = malloc(n + 1);

    ck_assert_ptr_nonnull(big);
    /* A list longer than any sane one. */
    for (size_t i = 0; i < n; i++)
        big[i] = (i % 8 == 7) ? ',' : 'a';
    big[n] = '\0';
    load_env_one(&t, "TESHIM_SCOPE_PROGRAMS", big);
    tpol_eq(&t,
            tpol_count(&t, "scope.programs = 'aaaaaaa,", "too long", "20000 bytes", "at most 1022",
                       "keeping ''", NULL),
            1);
    ck_assert_str_eq(pol_str(&t.cfg, POL_SCOPE_PROGRAMS), "");
    ck_assert_int_eq(t.cfg.gate, POL_GATE_ENFORCE);

    /* A string beyond the configuration's arena. */
    memset(big, 'b', n);
    load_env_one(&t, "TESHIM_LOG_FILE", big);
    tpol_eq(&t, tpol_count(&t, "log.file = 'bbbb", "too long", "20000 bytes", "at most", NULL), 1);
    ck_assert_str_eq(pol_str(&t.cfg, POL_LOG_FILE), "");
    free(big);
}
END_TEST

START_TEST(unknown_file_key_suggests)
{
    struct tpol t;

    load_file_one(&t, "\n\nrdma.trafic_class = 7\n");
    tpol_eq(&t,
            tpol_count(&t, "bad.conf:3", "unknown key 'rdma.trafic_class'",
                       "did you mean 'rdma.traffic_class'", NULL),
            1);
    ck_assert(!pol_is_set(&t.cfg, POL_RDMA_TRAFFIC_CLASS));

    /* Nothing close: reported without a suggestion. */
    load_file_one(&t, "completely.different.thing = 1\n");
    tpol_eq(&t, tpol_count(&t, "unknown key 'completely.different.thing'", NULL), 1);
    tpol_eq(&t, tpol_count(&t, "did you mean", NULL), 0);
}
END_TEST

START_TEST(unknown_env_suggests)
{
    struct tpol t;

    load_env_one(&t, "TESHIM_RDMA_TRAFIC_CLASS", "7");
    tpol_eq(
        &t,
        tpol_count(&t, "TESHIM_RDMA_TRAFIC_CLASS", "did you mean TESHIM_RDMA_TRAFFIC_CLASS", NULL),
        1);
    ck_assert(!pol_is_set(&t.cfg, POL_RDMA_TRAFFIC_CLASS));

    load_env_one(&t, "TESHIM_CONFG", "/nonexistent");
    tpol_eq(&t, tpol_count(&t, "TESHIM_CONFG", "TESHIM_CONFIG", NULL), 1);

    load_env_one(&t, "TESHIM_DISABEL", "1");
    tpol_eq(&t, tpol_count(&t, "did you mean TESHIM_DISABLE?", NULL), 1);
    ck_assert_int_eq(t.cfg.gate, POL_GATE_ENFORCE);

    /* An overlong name is reported, once, and nothing breaks. */
    char name[400];
    memset(name, 'X', sizeof(name) - 1);
    memcpy(name, "TESHIM_", 7);
    name[sizeof(name) - 1] = '\0';
    load_env_one(&t, name, "1");
    tpol_eq(&t, tpol_count(&t, "unknown variable", NULL), 1);
}
END_TEST

START_TEST(other_env_ignored)
{
    struct tpol t;

    tpol_init(&t);
    /* The teshim command's own variable is not a parameter, nor unknown. */
    tpol_env(&t, "TESHIM_LIBRARY", "/opt/teshim/lib/libteshim.so");
    tpol_env(&t, "TESHIMX", "1");
    tpol_env(&t, "PATH", "/bin");
    tpol_env(&t, "NOT_TESHIM_RDMA_TRAFFIC_CLASS", "1");
    tpol_eq(&t, tpol_load(&t), 0);
}
END_TEST

START_TEST(bad_section)
{
    struct tpol t;

    load_file_one(&t, "rdma.traffic_class = 1\n"
                      "[rdma]\n"
                      "rdma.traffic_class = 2\n"
                      "nonsense here\n");
    tpol_eq(&t, tpol_count(&t, "bad.conf:2", "unknown section [rdma]", NULL), 1);
    /* The lines of a bad section are skipped, not applied. */
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_TRAFFIC_CLASS), 1);

    load_file_one(&t, "[profile x\nrdma.traffic_class = 2\n");
    tpol_eq(&t, tpol_count(&t, "bad.conf:1", "without ']'", NULL), 1);
    ck_assert(!pol_is_set(&t.cfg, POL_RDMA_TRAFFIC_CLASS));
}
END_TEST

START_TEST(missing_equals)
{
    struct tpol t;

    load_file_one(&t, "rdma.traffic_class 12\nrdma.service_level = 1\n");
    tpol_eq(&t,
            tpol_count(&t, "bad.conf:1", "expected 'key = value'", "rdma.traffic_class 12", NULL),
            1);
    ck_assert(!pol_is_set(&t.cfg, POL_RDMA_TRAFFIC_CLASS));
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_SERVICE_LEVEL), 1);
}
END_TEST

/* Problems inside the selected [profile NAME] section: reported once each,
 * although the file is walked twice (profile pass and top-level pass). */
START_TEST(problems_in_selected_profile_once)
{
    struct tpol t;

    tpol_init(&t);
    tpol_env(&t, "TESHIM_CONFIG",
             tpol_write(&t, "p.conf",
                        "profile = mine\n"
                        "[profile mine]\n"
                        "rdma.trafic_class = 1\n"
                        "rdma.service_level 3\n"
                        "rdma.traffic_class = 999\n"
                        "[profile other]\n"
                        "rdma.servce_level = 1\n"));
    unsigned n = tpol_load(&t);
    tpol_eq(&t, tpol_count(&t, "p.conf:3", "rdma.trafic_class", "did you mean", NULL), 1);
    tpol_eq(&t, tpol_count(&t, "p.conf:4", "expected 'key = value'", NULL), 1);
    tpol_eq(&t, tpol_count(&t, "p.conf:5", "'999'", "out of range", NULL), 1);
    /* Typos in a section not selected are still worth a word, once. */
    tpol_eq(&t, tpol_count(&t, "p.conf:7", "rdma.servce_level", NULL), 1);
    tpol_eq(&t, n, 4);
    tpol_eq(&t, t.diags.n, 4);
}
END_TEST

Suite *tpol_values_suite(void)
{
    Suite *s = suite_create("policy_values");
    TCase *tc = tcase_create("invalid");

    tcase_add_test(tc, bad_bool);
    tcase_add_test(tc, bool_spellings);
    tcase_add_test(tc, bad_int);
    tcase_add_test(tc, int_out_of_range);
    tcase_add_test(tc, bad_size);
    tcase_add_test(tc, size_suffixes);
    tcase_add_test(tc, bad_enum);
    tcase_add_test(tc, bad_env_keeps_file_value);
    tcase_add_test(tc, overlong_value);
    tcase_add_test(tc, unknown_file_key_suggests);
    tcase_add_test(tc, unknown_env_suggests);
    tcase_add_test(tc, other_env_ignored);
    tcase_add_test(tc, bad_section);
    tcase_add_test(tc, missing_equals);
    tcase_add_test(tc, problems_in_selected_profile_once);
    suite_add_tcase(s, tc);
    return s;
}
