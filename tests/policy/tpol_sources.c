/* Sources and their precedence: default < profile < config file < environment. */
#include "tpol.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#define SRC_OF(t, p) ((enum pol_source)(t)->cfg.v[POL_##p].src)

START_TEST(defaults_only)
{
    struct tpol t;

    tpol_init(&t);
    tpol_eq(&t, tpol_load(&t), 0);
    ck_assert_str_eq(t.cfg.config_path, "");
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_RELAXED_ORDERING), POL_RO_OFF);
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_RELAXED_ORDERING_MIN_BYTES), 64 * 1024);
    ck_assert(!pol_is_set(&t.cfg, POL_RDMA_TRAFFIC_CLASS));
    ck_assert(!pol_is_set(&t.cfg, POL_RDMA_SERVICE_LEVEL));
    ck_assert_int_eq(pol_int(&t.cfg, POL_ROLLOUT_PERCENT), 100);
    ck_assert_str_eq(pol_str(&t.cfg, POL_KILL_SWITCH_FILE), "/run/teshim/disable");
    for (int p = 0; p < POL_NPARAMS; p++)
        ck_assert_msg(t.cfg.v[p].src == POL_SRC_DEFAULT, "%s not from the default",
                      pol_params[p].key);
    ck_assert_str_eq(t.cfg.program, "prog");
    ck_assert_str_eq(t.cfg.host, "host");
}
END_TEST

START_TEST(profile_over_default)
{
    struct tpol t;

    tpol_init(&t);
    tpol_env(&t, "TESHIM_PROFILE", "rdma-ro-tc");
    ck_assert_uint_eq(tpol_load(&t), 0);
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_RELAXED_ORDERING), POL_RO_AUTO);
    ck_assert_int_eq(SRC_OF(&t, RDMA_RELAXED_ORDERING), POL_SRC_PROFILE);
    ck_assert(pol_is_set(&t.cfg, POL_RDMA_TRAFFIC_CLASS));
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_TRAFFIC_CLASS), 106);
    ck_assert_int_eq(SRC_OF(&t, RDMA_TRAFFIC_CLASS), POL_SRC_PROFILE);
    ck_assert_int_eq(SRC_OF(&t, MODE), POL_SRC_DEFAULT);
    ck_assert_str_eq(pol_str(&t.cfg, POL_PROFILE), "rdma-ro-tc");
    ck_assert_int_eq(SRC_OF(&t, PROFILE), POL_SRC_ENV);
}
END_TEST

START_TEST(file_over_profile)
{
    struct tpol t;

    tpol_init(&t);
    const char *f = tpol_write(&t, "a.conf",
                               "# a comment\n"
                               "profile = rdma-ro-tc\n"
                               "rdma.traffic_class = 20   # trailing comment\n"
                               "  rdma.service_level=\"3\"\n");
    tpol_env(&t, "TESHIM_CONFIG", f);
    ck_assert_uint_eq(tpol_load(&t), 0);
    ck_assert_str_eq(t.cfg.config_path, f);
    ck_assert_str_eq(pol_str(&t.cfg, POL_PROFILE), "rdma-ro-tc");
    ck_assert_int_eq(SRC_OF(&t, PROFILE), POL_SRC_FILE);
    /* From the profile the file named. */
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_RELAXED_ORDERING), POL_RO_AUTO);
    ck_assert_int_eq(SRC_OF(&t, RDMA_RELAXED_ORDERING), POL_SRC_PROFILE);
    /* The file's own line beats the profile's 106. */
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_TRAFFIC_CLASS), 20);
    ck_assert_int_eq(SRC_OF(&t, RDMA_TRAFFIC_CLASS), POL_SRC_FILE);
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_SERVICE_LEVEL), 3);
    ck_assert_int_eq(SRC_OF(&t, RDMA_SERVICE_LEVEL), POL_SRC_FILE);
}
END_TEST

START_TEST(env_over_file)
{
    struct tpol t;

    tpol_init(&t);
    const char *f = tpol_write(&t, "a.conf",
                               "rdma.traffic_class = 20\nrdma.relaxed_ordering = on\n"
                               "rdma.service_level = 4\n");
    tpol_env(&t, "TESHIM_CONFIG", f);
    tpol_env(&t, "TESHIM_RDMA_TRAFFIC_CLASS", "30");
    tpol_env(&t, "TESHIM_RDMA_RELAXED_ORDERING", "off");
    /* An empty value unsets a parameter whose default is unset. */
    tpol_env(&t, "TESHIM_RDMA_SERVICE_LEVEL", "");
    ck_assert_uint_eq(tpol_load(&t), 0);
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_TRAFFIC_CLASS), 30);
    ck_assert_int_eq(SRC_OF(&t, RDMA_TRAFFIC_CLASS), POL_SRC_ENV);
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_RELAXED_ORDERING), POL_RO_OFF);
    ck_assert_int_eq(SRC_OF(&t, RDMA_RELAXED_ORDERING), POL_SRC_ENV);
    ck_assert(!pol_is_set(&t.cfg, POL_RDMA_SERVICE_LEVEL));
    ck_assert_int_eq(SRC_OF(&t, RDMA_SERVICE_LEVEL), POL_SRC_ENV);
}
END_TEST

START_TEST(env_profile_over_file_profile)
{
    struct tpol t;

    tpol_init(&t);
    const char *f = tpol_write(&t, "a.conf", "profile = observe\n");
    tpol_env(&t, "TESHIM_CONFIG", f);
    tpol_env(&t, "TESHIM_PROFILE", "rdma-ro-tc");
    ck_assert_uint_eq(tpol_load(&t), 0);
    ck_assert_str_eq(pol_str(&t.cfg, POL_PROFILE), "rdma-ro-tc");
    ck_assert_int_eq(SRC_OF(&t, PROFILE), POL_SRC_ENV);
    /* observe's mode line was not applied; rdma-ro-tc's auto was. */
    ck_assert_int_eq(pol_int(&t.cfg, POL_MODE), POL_MODE_ENFORCE);
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_RELAXED_ORDERING), POL_RO_AUTO);
}
END_TEST

START_TEST(file_profile_section_wins_over_shipped)
{
    struct tpol t;

    tpol_init(&t);
    const char *f = tpol_write(&t, "a.conf",
                               "profile = rdma-ro-tc\n"
                               "[profile other]\n"
                               "rdma.service_level = 9\n"
                               "[profile rdma-ro-tc]\n"
                               "rdma.traffic_class = 40\n"
                               "mode = observe\n");
    tpol_env(&t, "TESHIM_CONFIG", f);
    tpol_eq(&t, tpol_load(&t), 0);
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_TRAFFIC_CLASS), 40);
    ck_assert_int_eq(SRC_OF(&t, RDMA_TRAFFIC_CLASS), POL_SRC_PROFILE);
    ck_assert_int_eq(pol_int(&t.cfg, POL_MODE), POL_MODE_OBSERVE);
    /* The shipped rdma-ro-tc (relaxed ordering auto) was not applied at all. */
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_RELAXED_ORDERING), POL_RO_OFF);
    ck_assert_int_eq(SRC_OF(&t, RDMA_RELAXED_ORDERING), POL_SRC_DEFAULT);
    /* A section of a profile not selected is not applied. */
    ck_assert(!pol_is_set(&t.cfg, POL_RDMA_SERVICE_LEVEL));
}
END_TEST

START_TEST(profile_section_selected_by_env)
{
    struct tpol t;

    tpol_init(&t);
    const char *f = tpol_write(&t, "a.conf",
                               "rdma.traffic_class = 5\n"
                               "[profile mine]\n"
                               "rdma.traffic_class = 7\n"
                               "rdma.service_level = 2\n");
    tpol_env(&t, "TESHIM_CONFIG", f);
    tpol_env(&t, "TESHIM_PROFILE", "mine");
    tpol_eq(&t, tpol_load(&t), 0);
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_SERVICE_LEVEL), 2);
    ck_assert_int_eq(SRC_OF(&t, RDMA_SERVICE_LEVEL), POL_SRC_PROFILE);
    /* The file's top level still beats its own profile section. */
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_TRAFFIC_CLASS), 5);
    ck_assert_int_eq(SRC_OF(&t, RDMA_TRAFFIC_CLASS), POL_SRC_FILE);
}
END_TEST

START_TEST(unknown_profile_reported_once)
{
    struct tpol t;

    tpol_init(&t);
    tpol_env(&t, "TESHIM_PROFILE", "nosuch");
    tpol_eq(&t, tpol_load(&t), 1);
    ck_assert_uint_eq(tpol_count(&t, "nosuch", "not found", "rdma-ro-tc", NULL), 1);
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_RELAXED_ORDERING), POL_RO_OFF);
}
END_TEST

/* TESHIM_CONFIG, else etc_path (/etc/teshim.conf), else $XDG_CONFIG_HOME
 * (else ~/.config). */
START_TEST(config_path_teshim_config_first)
{
    struct tpol t;

    tpol_init(&t);
    const char *envf = tpol_write(&t, "env.conf", "rdma.traffic_class = 1\n");
    tpol_write(&t, "etc-teshim.conf", "rdma.traffic_class = 2\n");
    tpol_write(&t, "xdg/teshim.conf", "rdma.traffic_class = 3\n");
    tpol_env(&t, "TESHIM_CONFIG", envf);
    tpol_env(&t, "XDG_CONFIG_HOME", tpol_path(&t, "xdg"));
    tpol_eq(&t, tpol_load(&t), 0);
    ck_assert_str_eq(t.cfg.config_path, envf);
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_TRAFFIC_CLASS), 1);
}
END_TEST

START_TEST(config_path_etc_before_xdg)
{
    struct tpol t;

    tpol_init(&t);
    const char *etc = tpol_write(&t, "etc-teshim.conf", "rdma.traffic_class = 2\n");
    tpol_write(&t, "xdg/teshim.conf", "rdma.traffic_class = 3\n");
    tpol_env(&t, "XDG_CONFIG_HOME", tpol_path(&t, "xdg"));
    ck_assert_uint_eq(tpol_load(&t), 0);
    ck_assert_str_eq(t.cfg.config_path, etc);
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_TRAFFIC_CLASS), 2);
}
END_TEST

START_TEST(config_path_xdg_then_home)
{
    struct tpol t;

    tpol_init(&t);
    const char *xdg = tpol_write(&t, "xdg/teshim.conf", "rdma.traffic_class = 3\n");
    tpol_write(&t, ".config/teshim.conf", "rdma.traffic_class = 4\n");
    tpol_env(&t, "XDG_CONFIG_HOME", tpol_path(&t, "xdg"));
    ck_assert_uint_eq(tpol_load(&t), 0);
    ck_assert_str_eq(t.cfg.config_path, xdg);
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_TRAFFIC_CLASS), 3);

    /* Without XDG_CONFIG_HOME: $HOME/.config/teshim.conf. */
    struct tpol u;
    tpol_init(&u);
    const char *home = tpol_write(&u, ".config/teshim.conf", "rdma.traffic_class = 4\n");
    ck_assert_uint_eq(tpol_load(&u), 0);
    ck_assert_str_eq(u.cfg.config_path, home);
    ck_assert_int_eq(pol_int(&u.cfg, POL_RDMA_TRAFFIC_CLASS), 4);
}
END_TEST

START_TEST(config_path_explicit_source)
{
    struct tpol t;

    tpol_init(&t);
    const char *mine = tpol_write(&t, "mine.conf", "rdma.traffic_class = 9\n");
    const char *envf = tpol_write(&t, "env.conf", "rdma.traffic_class = 1\n");
    tpol_env(&t, "TESHIM_CONFIG", envf);
    t.src.config_path = mine;
    ck_assert_uint_eq(tpol_load(&t), 0);
    ck_assert_str_eq(t.cfg.config_path, mine);
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_TRAFFIC_CLASS), 9);
}
END_TEST

/* Issue 14: a NUL byte ended the text where C strings see it, dropping the
 * rest of the file silently. The line holding it is reported and ignored;
 * the lines after it apply. */
START_TEST(config_file_nul_byte)
{
    static const char text[] = "rdma.traffic_class = 20\nrdma.service_level\0 = 7\n"
                               "rdma.service_level = 3\n";
    struct tpol t;

    tpol_init(&t);
    const char *f = tpol_path(&t, "nul.conf");
    tpol_write(&t, "nul.conf", "");
    int fd = open(f, O_WRONLY | O_TRUNC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, sizeof(text) - 1), (ssize_t)sizeof(text) - 1);
    close(fd);
    tpol_env(&t, "TESHIM_CONFIG", f);
    tpol_eq(&t, tpol_load(&t), 1);
    tpol_eq(&t, tpol_count(&t, f, ":2: NUL byte", NULL), 1);
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_TRAFFIC_CLASS), 20);
    ck_assert(pol_is_set(&t.cfg, POL_RDMA_SERVICE_LEVEL));
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_SERVICE_LEVEL), 3);
}
END_TEST

/* Issue 14: a setuid program's environment is its caller's. Secure
 * sources read none of it: not TESHIM_*, not TESHIM_CONFIG, not the user
 * files through HOME or XDG_CONFIG_HOME; the system file and defaults do. */
START_TEST(secure_reads_no_environment)
{
    struct tpol t;

    tpol_init(&t);
    const char *user = tpol_write(&t, "user.conf", "stats.dir = /tmp/user\n");
    tpol_write(&t, "xdg/teshim.conf", "stats.dir = /tmp/xdg\n");
    tpol_write(&t, ".config/teshim.conf", "stats.dir = /tmp/home\n");
    tpol_env(&t, "TESHIM_CONFIG", user);
    tpol_env(&t, "XDG_CONFIG_HOME", tpol_path(&t, "xdg"));
    tpol_env(&t, "TESHIM_STATS_DIR", "/tmp/env");
    tpol_env(&t, "TESHIM_LOG_FILE", "/tmp/env.log");
    tpol_env(&t, "TESHIM_PROFILE", "rdma-ro-tc");
    tpol_env(&t, "TESHIM_NO_SUCH_THING", "1");
    t.src.secure = true;
    tpol_eq(&t, tpol_load(&t), 0);
    ck_assert_str_eq(t.cfg.config_path, "");
    ck_assert_str_eq(pol_str(&t.cfg, POL_STATS_DIR), "");
    ck_assert_str_eq(pol_str(&t.cfg, POL_LOG_FILE), "");
    ck_assert_str_eq(pol_str(&t.cfg, POL_PROFILE), "");

    /* The system file still applies (HOME is never looked at either). */
    const char *etc = tpol_write(&t, "etc-teshim.conf", "stats.dir = /var/log/teshim\n");
    tpol_eq(&t, tpol_load(&t), 0);
    ck_assert_str_eq(t.cfg.config_path, etc);
    ck_assert_str_eq(pol_str(&t.cfg, POL_STATS_DIR), "/var/log/teshim");
    for (int p = 0; p < POL_NPARAMS; p++)
        ck_assert_msg(t.cfg.v[p].src != POL_SRC_ENV, "%s from the environment", pol_params[p].key);
}
END_TEST

START_TEST(config_file_missing)
{
    struct tpol t;

    tpol_init(&t);
    tpol_env(&t, "TESHIM_CONFIG", tpol_path(&t, "absent.conf"));
    tpol_env(&t, "TESHIM_RDMA_TRAFFIC_CLASS", "8");
    ck_assert_uint_eq(tpol_load(&t), 1);
    ck_assert_uint_eq(tpol_count(&t, "absent.conf", "No such file", NULL), 1);
    ck_assert_str_eq(t.cfg.config_path, "");
    /* The environment still applies. */
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_TRAFFIC_CLASS), 8);
}
END_TEST

/* TESHIM_CONFIG=/dev/null, the usual "no file", is an empty file: no
 * warning, while other devices and FIFOs stay refused. */
START_TEST(config_file_dev_null_is_empty)
{
    struct tpol t;

    tpol_init(&t);
    tpol_env(&t, "TESHIM_CONFIG", "/dev/null");
    tpol_env(&t, "TESHIM_RDMA_TRAFFIC_CLASS", "8");
    ck_assert_uint_eq(tpol_load(&t), 0);
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_TRAFFIC_CLASS), 8);
    tpol_init(&t);
    tpol_env(&t, "TESHIM_CONFIG", "/dev/zero");
    ck_assert_uint_eq(tpol_load(&t), 1);
    ck_assert_uint_eq(tpol_count(&t, "/dev/zero", "not a regular file", NULL), 1);
}
END_TEST

START_TEST(load_is_repeatable)
{
    struct tpol t;

    tpol_init(&t);
    const char *f = tpol_write(&t, "a.conf", "profile = rdma-ro-tc\nrdma.devices = mlx5_*, rxe0\n");
    tpol_env(&t, "TESHIM_CONFIG", f);
    tpol_load(&t);
    uint64_t h = t.cfg.hash;
    ck_assert_str_eq(pol_str(&t.cfg, POL_RDMA_DEVICES), "mlx5_*,rxe0");
    tpol_load(&t);
    ck_assert_uint_eq(t.cfg.hash, h);
    ck_assert_str_eq(pol_str(&t.cfg, POL_RDMA_DEVICES), "mlx5_*,rxe0");
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_TRAFFIC_CLASS), 106);
}
END_TEST

/* The hash tells policies apart and ignores where logs and reports go. */
START_TEST(policy_hash)
{
    struct tpol a, b, c;

    tpol_init(&a);
    tpol_load(&a);
    tpol_init(&b);
    tpol_env(&b, "TESHIM_LOG_LEVEL", "debug");
    tpol_env(&b, "TESHIM_STATS_DIR", "/tmp/x");
    tpol_load(&b);
    ck_assert_uint_eq(a.cfg.hash, b.cfg.hash);
    tpol_init(&c);
    tpol_env(&c, "TESHIM_RDMA_TRAFFIC_CLASS", "1");
    tpol_load(&c);
    ck_assert_uint_ne(a.cfg.hash, c.cfg.hash);
}
END_TEST

/* The profile line is read like every other line: quotes stripped, the key
 * matched whole (a typo does not select a profile). */
START_TEST(file_profile_line_parsed_like_others)
{
    struct tpol t;

    tpol_init(&t);
    tpol_env(&t, "TESHIM_CONFIG", tpol_write(&t, "a.conf", "profile = \"rdma-ro-tc\"\n"));
    tpol_eq(&t, tpol_load(&t), 0);
    ck_assert_str_eq(pol_str(&t.cfg, POL_PROFILE), "rdma-ro-tc");
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_RELAXED_ORDERING), POL_RO_AUTO);

    tpol_init(&t);
    tpol_env(&t, "TESHIM_CONFIG", tpol_write(&t, "b.conf", "profiles = rdma-ro-tc\n"));
    tpol_eq(&t, tpol_load(&t), 1);
    tpol_eq(&t, tpol_count(&t, "unknown key 'profiles'", "did you mean 'profile'", NULL), 1);
    ck_assert_str_eq(pol_str(&t.cfg, POL_PROFILE), "");
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_RELAXED_ORDERING), POL_RO_OFF);
}
END_TEST

START_TEST(config_file_crlf_and_size)
{
    struct tpol t;

    tpol_init(&t);
    tpol_env(&t, "TESHIM_CONFIG",
             tpol_write(&t, "crlf.conf",
                        "rdma.traffic_class = 5\r\n[profile p]\r\nrdma.service_level = 1\r\n"));
    tpol_env(&t, "TESHIM_PROFILE", "p");
    tpol_eq(&t, tpol_load(&t), 0);
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_TRAFFIC_CLASS), 5);
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_SERVICE_LEVEL), 1);

    /* Larger than the loader reads: reported, defaults and environment used. */
    static char big[70 * 1024];
    for (size_t i = 0; i + 1 < sizeof(big); i++)
        big[i] = (i % 64 == 63) ? '\n' : '#';
    tpol_init(&t);
    tpol_env(&t, "TESHIM_CONFIG", tpol_write(&t, "big.conf", big));
    tpol_env(&t, "TESHIM_RDMA_TRAFFIC_CLASS", "9");
    tpol_eq(&t, tpol_load(&t), 1);
    tpol_eq(&t, tpol_count(&t, "big.conf", "larger than 64 KiB", NULL), 1);
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_TRAFFIC_CLASS), 9);
}
END_TEST

Suite *tpol_sources_suite(void)
{
    Suite *s = suite_create("policy_sources");
    TCase *tc = tcase_create("precedence");

    tcase_add_test(tc, defaults_only);
    tcase_add_test(tc, profile_over_default);
    tcase_add_test(tc, file_over_profile);
    tcase_add_test(tc, env_over_file);
    tcase_add_test(tc, env_profile_over_file_profile);
    tcase_add_test(tc, file_profile_section_wins_over_shipped);
    tcase_add_test(tc, profile_section_selected_by_env);
    tcase_add_test(tc, unknown_profile_reported_once);
    tcase_add_test(tc, load_is_repeatable);
    tcase_add_test(tc, policy_hash);
    tcase_add_test(tc, file_profile_line_parsed_like_others);
    tcase_add_test(tc, config_file_crlf_and_size);
    tcase_add_test(tc, config_file_nul_byte);
    tcase_add_test(tc, secure_reads_no_environment);
    suite_add_tcase(s, tc);
    tc = tcase_create("config_path");
    tcase_add_test(tc, config_path_teshim_config_first);
    tcase_add_test(tc, config_path_etc_before_xdg);
    tcase_add_test(tc, config_path_xdg_then_home);
    tcase_add_test(tc, config_path_explicit_source);
    tcase_add_test(tc, config_file_missing);
    tcase_add_test(tc, config_file_dev_null_is_empty);
    suite_add_tcase(s, tc);
    return s;
}
