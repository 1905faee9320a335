/*
 * The teshim command for operators: `teshim run` stops with exit status 2
 * on a configuration or a target that would silently apply nothing (unknown
 * profile, socket options without a scope, bad tcp.ports/tcp.peers, bad
 * values, a static executable) unless --force; `teshim config --check`
 * gates a rollout on a config file; `teshim stats DIR`.
 */
#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_util.h"

/* The settings of the person running the suite stay out. */
static char cfg_none[] = "TESHIM_CONFIG=/dev/null";

struct res {
    int status; /* exit status, or -1 when killed */
    char *out;  /* stdout and stderr */
};

static struct res run_v(char *const argv[], char *const env[])
{
    struct res r;
    int st = cli_run(argv, env, &r.out);

    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
}

static bool has(const struct res *r, const char *text)
{
    return strstr(r->out, text) != NULL;
}

#define CK_RES(r, cond) ck_assert_msg(cond, "%s (exit %d):\n%s", #cond, (r).status, (r).out)

/* teshim run ARGS... -- /bin/sh -c 'touch MARKER; exit 7': 2 and no marker
 * when refused, 7 and the marker when it ran. */
static struct res run_marked(const char *dir, bool *ran, char *const env[], const char *a1,
                             const char *a2, const char *a3, const char *a4, const char *a5)
{
    char marker[512], script[600];
    const char *args[] = {a1, a2, a3, a4, a5};
    char *argv[16];
    int n = 0;

    snprintf(marker, sizeof(marker), "%s/ran", dir);
    unlink(marker);
    snprintf(script, sizeof(script), "touch %s; exit 7", marker);
    argv[n++] = (char *)cli_path("CLI_TESHIM");
    argv[n++] = "run";
    for (int i = 0; i < 5 && args[i]; i++)
        argv[n++] = (char *)args[i];
    argv[n++] = "--";
    argv[n++] = "/bin/sh";
    argv[n++] = "-c";
    argv[n++] = script;
    argv[n] = NULL;
    struct res r = run_v(argv, env);
    *ran = access(marker, F_OK) == 0;
    return r;
}

START_TEST(run_refuses_unknown_profile)
{
    char *dir = cli_tmpdir();
    char *env[] = {cfg_none, NULL};
    bool ran;

    struct res r = run_marked(dir, &ran, env, "--profile", "rdma-ro", NULL, NULL, NULL);
    CK_RES(r, r.status == 2 && !ran);
    CK_RES(r, has(&r, "profile 'rdma-ro' not found") && has(&r, "rdma-ro-tc"));
    CK_RES(r, has(&r, "not started (--force starts it anyway)"));
    free(r.out);
    /* The same through the environment. */
    char *env2[] = {cfg_none, "TESHIM_PROFILE=tcp-q0s", NULL};
    r = run_marked(dir, &ran, env2, NULL, NULL, NULL, NULL, NULL);
    CK_RES(r, r.status == 2 && !ran && has(&r, "profile 'tcp-q0s' not found"));
    free(r.out);
    /* --force: the command runs, and its status is passed on. */
    r = run_marked(dir, &ran, env, "--force", "--profile", "rdma-ro", NULL, NULL);
    CK_RES(r, r.status == 7 && ran && has(&r, "--force: starting"));
    free(r.out);
    /* A shipped profile runs. */
    r = run_marked(dir, &ran, env, "--profile", "rdma-ro-tc", NULL, NULL, NULL);
    CK_RES(r, r.status == 7 && ran);
    free(r.out);
    cli_rmtree(dir);
}
END_TEST

START_TEST(run_refuses_socket_policy_without_scope)
{
    char *dir = cli_tmpdir();
    char *env[] = {cfg_none, NULL};
    bool ran;

    struct res r = run_marked(dir, &ran, env, "--profile", "tcp-qos", NULL, NULL, NULL);
    CK_RES(r, r.status == 2 && !ran);
    CK_RES(r, has(&r, "profile tcp-qos") && has(&r, "tcp.ports and tcp.peers are empty") &&
                  has(&r, "--set tcp.ports="));
    free(r.out);
    /* Not only profiles: any socket option. */
    r = run_marked(dir, &ran, env, "--set", "tcp.dscp=26", NULL, NULL, NULL);
    CK_RES(r, r.status == 2 && !ran && has(&r, "tcp.ports and tcp.peers are empty"));
    free(r.out);
    r = run_marked(dir, &ran, env, "--profile", "tcp-qos", "--set", "tcp.ports=5000-5999", NULL);
    CK_RES(r, r.status == 7 && ran);
    free(r.out);
    r = run_marked(dir, &ran, env, "--profile", "tcp-qos", "--set", "tcp.peers=10.0.0.0/8", NULL);
    CK_RES(r, r.status == 7 && ran);
    free(r.out);
    r = run_marked(dir, &ran, env, "--force", "--profile", "tcp-qos", NULL, NULL);
    CK_RES(r, r.status == 7 && ran);
    free(r.out);
    cli_rmtree(dir);
}
END_TEST

START_TEST(run_refuses_bad_lists_and_values)
{
    static const struct {
        const char *set, *env, *msg1, *msg2;
    } cases[] = {
        {"tcp.ports=5000-x", NULL, "tcp.ports: '5000-x'", "N or LO-HI"},
        {"tcp.ports=70000", NULL, "tcp.ports: '70000'", "0..65535"},
        {"tcp.peers=10.0.0.300/8", NULL, "tcp.peers: '10.0.0.300/8'", "A.B.C.D"},
        {"tcp.peers=10.0.0.0/33", NULL, "tcp.peers: '10.0.0.0/33'", "/0-32"},
        {NULL, "TESHIM_TCP_PORTS=80,,x", "tcp.ports", "Fix the list"},
        {NULL, "TESHIM_RDMA_TRAFFIC_CLASS=300", "rdma.traffic_class = '300'", "0..255"},
        {NULL, "TESHIM_RDMA_TRAFIC_CLASS=3", "unknown variable TESHIM_RDMA_TRAFIC_CLASS",
         "TESHIM_RDMA_TRAFFIC_CLASS"},
    };
    char *dir = cli_tmpdir();
    bool ran;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *env[] = {cfg_none, (char *)cases[i].env, NULL};
        struct res r = run_marked(dir, &ran, env, cases[i].set ? "--set" : NULL, cases[i].set, NULL,
                                  NULL, NULL);
        CK_RES(r, r.status == 2 && !ran);
        CK_RES(r, has(&r, cases[i].msg1) && has(&r, cases[i].msg2));
        free(r.out);
    }
    /* The same from a config file. */
    char conf[512], cenv[600];
    snprintf(conf, sizeof(conf), "%s/bad.conf", dir);
    FILE *f = fopen(conf, "w");
    ck_assert_ptr_nonnull(f);
    fputs("tcp.dscp = 26\ntcp.ports = 5000-4000\n", f);
    fclose(f);
    snprintf(cenv, sizeof(cenv), "TESHIM_CONFIG=%s", conf);
    char *env[] = {cenv, NULL};
    struct res r = run_marked(dir, &ran, env, NULL, NULL, NULL, NULL, NULL);
    CK_RES(r, r.status == 2 && !ran && has(&r, "'5000-4000'"));
    free(r.out);
    cli_rmtree(dir);
}
END_TEST

START_TEST(run_refuses_static_target)
{
    const char *stat_prog = cli_path("CLI_STATIC");
    char *dir = cli_tmpdir();
    char *env[] = {cfg_none, NULL};
    char *argv[] = {(char *)cli_path("CLI_TESHIM"), "run", "--", (char *)stat_prog, NULL};

    struct res r = run_v(argv, env);
    CK_RES(r, r.status == 2);
    CK_RES(r, has(&r, "statically linked (no PT_INTERP)") && has(&r, "--force"));
    free(r.out);
    /* --force runs it: its own status comes back. */
    char *fargv[] = {
        (char *)cli_path("CLI_TESHIM"), "run", "--force", "--", (char *)stat_prog, NULL};
    r = run_v(fargv, env);
    CK_RES(r, r.status == 3);
    free(r.out);
    /* A script is judged by its interpreter. */
    char script[512];
    snprintf(script, sizeof(script), "%s/static-script", dir);
    FILE *f = fopen(script, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "#!%s\n", stat_prog);
    fclose(f);
    chmod(script, 0755);
    char *sargv[] = {(char *)cli_path("CLI_TESHIM"), "run", "--", script, NULL};
    r = run_v(sargv, env);
    CK_RES(r, r.status == 2 && has(&r, "statically linked"));
    free(r.out);
    /* Dynamically linked programs and scripts run, found through PATH too. */
    char *dargv[] = {(char *)cli_path("CLI_TESHIM"), "run", "--", "sh", "-c", "exit 5", NULL};
    r = run_v(dargv, env);
    CK_RES(r, r.status == 5);
    free(r.out);
    cli_rmtree(dir);
}
END_TEST

static struct res config_check(const char *file, char *const env[])
{
    char *argv[] = {(char *)cli_path("CLI_TESHIM"), "config", "--check", (char *)file, NULL};
    return run_v(argv, env);
}

START_TEST(config_check_gates_a_file)
{
    char *dir = cli_tmpdir();
    char path[512];
    /* Variables of the environment are not the file's: --check FILE ignores them. */
    char *env[] = {cfg_none, "TESHIM_RDMA_TRAFFIC_CLASS=999", NULL};
    static const struct {
        const char *text, *msg;
    } bad[] = {
        {"rdma.traffic_class = 300\n", "rdma.traffic_class = '300' is out of range"},
        {"rdma.trafic_class = 3\n", "did you mean 'rdma.traffic_class'"},
        {"profile = rdma-ro\n", "profile 'rdma-ro' not found"},
        {"profile = tcp-qos\n", "tcp.ports and tcp.peers are empty"},
        {"tcp.ports = 1-2-3\n", "'1-2-3'"},
        {"tcp.peers = fe80::/129\n", "'fe80::/129'"},
        {"[profile canary]\nrdma.relaxed_ordering = sometimes\n", "'sometimes'"},
        /* a section nobody selects yet: its scope is checked as if selected */
        {"rdma.traffic_class = 3\n[profile wide]\ntcp.dscp = 10\n", "[profile wide]"},
        {"[canary]\n", "unknown section"},
    };

    snprintf(path, sizeof(path), "%s/t.conf", dir);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        FILE *f = fopen(path, "w");
        ck_assert_ptr_nonnull(f);
        fputs(bad[i].text, f);
        fclose(f);
        struct res r = config_check(path, env);
        CK_RES(r, r.status == 1);
        CK_RES(r, has(&r, bad[i].msg) && has(&r, "config --check: "));
        free(r.out);
    }
    /* A clean file. */
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("profile = tcp-qos\ntcp.ports = 5000-5999\nrollout.percent = 10\n"
          "[profile canary]\nrdma.relaxed_ordering = on\n",
          f);
    fclose(f);
    struct res r = config_check(path, env);
    CK_RES(r, r.status == 0 && has(&r, ": ok (1 profile section)"));
    free(r.out);
    /* A file that is not there. */
    r = config_check("/nonexistent/teshim.conf", env);
    CK_RES(r, r.status == 1 && has(&r, "No such file"));
    free(r.out);
    /* Without FILE: what a process would load here, environment included. */
    r = config_check(NULL, env);
    CK_RES(r, r.status == 1 && has(&r, "'999'"));
    free(r.out);
    char *clean_env[] = {cfg_none, NULL};
    r = config_check(NULL, clean_env);
    CK_RES(r, r.status == 0);
    free(r.out);
    cli_rmtree(dir);
}
END_TEST

/* The sample configuration the package installs is itself clean. */
START_TEST(config_check_passes_the_sample)
{
    char path[4096];
    char *env[] = {cfg_none, NULL};

    snprintf(path, sizeof(path), "%s/docs/teshim.conf.example", cli_path("TESHIM_SOURCE_DIR"));
    struct res r = config_check(path, env);
    CK_RES(r, r.status == 0);
    free(r.out);
}
END_TEST

START_TEST(stats_reads_a_directory)
{
    char *dir = cli_tmpdir();
    char *env[] = {cfg_none, NULL};
    char *argv[] = {(char *)cli_path("CLI_TESHIM"),
                    "run",
                    "--set",
                    "rdma.traffic_class=5",
                    "--stats-dir",
                    dir,
                    "--",
                    (char *)cli_path("CLI_HOST"),
                    "--fork",
                    "--modify-qp",
                    "2",
                    NULL};
    struct res r = run_v(argv, env);
    CK_RES(r, r.status == 0);
    free(r.out);
    /* Something else in the folder is not a report and is left alone. */
    char other[512];
    snprintf(other, sizeof(other), "%s/notes.json", dir);
    FILE *f = fopen(other, "w");
    ck_assert_ptr_nonnull(f);
    fputs("not json\n", f);
    fclose(f);

    char *sargv[] = {(char *)cli_path("CLI_TESHIM"), "stats", dir, NULL};
    r = run_v(sargv, env);
    CK_RES(r, r.status == 0);
    CK_RES(r, has(&r, "legend: ") && has(&r, "/teshim-cli_host-") &&
                  has(&r, "arm B (2 processes)") && !has(&r, "notes.json"));
    /* the ibv_modify_qp row of the totals: 4 calls, 4 injected */
    const char *tot = strstr(r.out, "arm B (2 processes)");
    long long calls = 0, inj = 0;
    CK_RES(r, tot && sscanf(tot + strlen("arm B (2 processes)"), "%lld %lld", &calls, &inj) == 2 &&
                  calls == 4 && inj == 4);
    free(r.out);

    /* An empty folder: nothing to summarise is an error that says so. */
    char empty[600];
    snprintf(empty, sizeof(empty), "%s/empty", dir);
    ck_assert_int_eq(mkdir(empty, 0700), 0);
    char *eargv[] = {(char *)cli_path("CLI_TESHIM"), "stats", empty, NULL};
    r = run_v(eargv, env);
    CK_RES(r, r.status == 1 && has(&r, "no teshim-*.json report in it"));
    free(r.out);
    cli_rmtree(dir);
}
END_TEST

/* The man pages are generated and committed, like docs/config.md: a change
 * of a help text or of the table without regenerating them fails here. */
START_TEST(man_pages_match_docs)
{
    static const struct {
        const char *doc, *a1, *a2;
    } pages[] = {
        {"docs/teshim.1", "help", "--man"},
        {"docs/teshim.conf.5", "config", "--man"},
    };
    char *env[] = {cfg_none, NULL};

    for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", cli_path("TESHIM_SOURCE_DIR"), pages[i].doc);
        char *doc = cli_slurp(path);
        ck_assert_msg(doc != NULL, "%s is missing", path);
        char *argv[] = {(char *)cli_path("CLI_TESHIM"), (char *)pages[i].a1, (char *)pages[i].a2,
                        NULL};
        struct res r = run_v(argv, env);
        ck_assert_int_eq(r.status, 0);
        ck_assert_msg(strcmp(r.out, doc) == 0,
                      "%s is stale: regenerate it with `build/bin/teshim %s %s > %s`", pages[i].doc,
                      pages[i].a1, pages[i].a2, pages[i].doc);
        free(r.out);
        free(doc);
    }
    /* every parameter and every subcommand has its entry */
    char path[4096];
    snprintf(path, sizeof(path), "%s/docs/teshim.conf.5", cli_path("TESHIM_SOURCE_DIR"));
    char *conf5 = cli_slurp(path);
    ck_assert_ptr_nonnull(conf5);
    ck_assert_ptr_nonnull(strstr(conf5, ".B rdma.traffic_class\n"));
    ck_assert_ptr_nonnull(strstr(conf5, "TESHIM_TCP_PORTS"));
    free(conf5);
    snprintf(path, sizeof(path), "%s/docs/teshim.1", cli_path("TESHIM_SOURCE_DIR"));
    char *man1 = cli_slurp(path);
    ck_assert_ptr_nonnull(man1);
    static const char *const subs[] = {"run", "config", "doctor", "stats", "ab", "demo"};
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        char want[64];
        snprintf(want, sizeof(want), "usage: teshim %s", subs[i]);
        ck_assert_msg(strstr(man1, want) != NULL, "teshim.1 lacks %s", want);
    }
    free(man1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cli_ops");
    TCase *run = tcase_create("run");
    TCase *cfg = tcase_create("config");
    TCase *stats = tcase_create("stats");
    TCase *docs = tcase_create("docs");

    tcase_add_test(run, run_refuses_unknown_profile);
    tcase_add_test(run, run_refuses_socket_policy_without_scope);
    tcase_add_test(run, run_refuses_bad_lists_and_values);
    tcase_add_test(run, run_refuses_static_target);
    tcase_add_test(cfg, config_check_gates_a_file);
    tcase_add_test(cfg, config_check_passes_the_sample);
    tcase_add_test(stats, stats_reads_a_directory);
    suite_add_tcase(s, run);
    suite_add_tcase(s, cfg);
    tcase_add_test(docs, man_pages_match_docs);
    suite_add_tcase(s, stats);
    suite_add_tcase(s, docs);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
