/*
 * Process life under the shim: a hook reached before teshim's constructor,
 * fork and exec, concurrent threads, and the 1.0 compat entry point.
 */
#include "tshim.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REG_1_1 "ibv_reg_mr@IBVERBS_1.1"
#define REG_IOVA "ibv_reg_mr_iova@IBVERBS_1.7"
#define REG_IOVA2 "ibv_reg_mr_iova2@IBVERBS_1.8"
#define REG_DMABUF "ibv_reg_dmabuf_mr@IBVERBS_1.12"

static void policy_on(struct tshim_run *r)
{
    tshim_env(r, "TESHIM_RDMA_RELAXED_ORDERING", "on");
    tshim_env(r, "TESHIM_RDMA_TRAFFIC_CLASS", "106");
}

/* The dynamic linker's "calling init: PATH" line for a path ending in
 * name; NULL if there is none. */
static const char *init_line(const char *err, const char *name)
{
    size_t nl = strlen(name);

    for (const char *p = err; (p = strstr(p, "calling init: ")); p++) {
        const char *eol = strchr(p, '\n');
        if (eol && (size_t)(eol - p) > nl && strncmp(eol - nl, name, nl) == 0)
            return p;
    }
    return NULL;
}

/*
 * libtshim_early.so is a DT_NEEDED library of the executable and registers
 * memory in its constructor. LD_DEBUG=libs shows the order the dynamic
 * linker ran initialisers in, interleaved on stderr with the library's own
 * line: the registration must come before libteshim.so's initialiser, so
 * the hook really initialised teshim lazily, and still applied the policy.
 */
START_TEST(hook_before_constructor)
{
    struct tshim_run r;
    const char *argv[] = {tshim_build("bin/tshim_early_host"), NULL};

    tshim_init(&r, true);
    policy_on(&r);
    /* "libs" includes the "calling init: PATH" lines. */
    tshim_env(&r, "LD_DEBUG", "libs");
    tshim_exec(&r, argv);
    tshim_ck(&r, r.status == 0);
    tshim_ck(&r, strstr(r.out, "early registration ok") != NULL);
    const char *own = init_line(r.err, "/libtshim_early.so");
    const char *early = strstr(r.err, "tshim_early: constructor registering");
    const char *teshim = init_line(r.err, "/libteshim.so");
    tshim_ck(&r, early && teshim && own);
    /* libtshim_early.so's initialiser is announced, it registers, and only
     * then does the dynamic linker call libteshim.so's. */
    tshim_ck(&r, own < early);
    tshim_ck(&r, early < teshim);
    /* And the registration made before the constructor was rewritten. */
    const struct tsc_json *reg = tshim_rec(&r, "reg_mr", "ibv_reg_mr", 0);
    tshim_ck(&r, reg != NULL);
    tshim_ck(&r, (tshim_num(reg, "access") & TSHIM_RO) != 0);
    tshim_ck(&r, tshim_num(reg, "pid") == r.pid);
    tshim_ck(&r, tshim_report_count(&r) == 1);
    struct tsc_json *rep = tshim_report(&r, 0);
    ck_assert_int_eq(tshim_ctr(rep, REG_1_1, "calls"), 1);
    ck_assert_int_eq(tshim_ctr(rep, REG_1_1, "injected"), 1);
    tsc_json_free(rep);
}
END_TEST

/* Threads racing into the hooks before the constructor: one initialises,
 * the others wait for it; every call is counted and rewritten. */
START_TEST(threads_before_constructor)
{
    struct tshim_run r;
    const char *argv[] = {tshim_build("bin/tshim_early_host"), NULL};

    tshim_init(&r, true);
    policy_on(&r);
    tshim_env(&r, "TSHIM_EARLY_THREADS", "8");
    tshim_exec(&r, argv);
    tshim_ck(&r, r.status == 0);
    tshim_ck(&r, tshim_out(&r, "early threads", "registered") == 80);
    tshim_ck(&r, tshim_rec_count(&r, "reg_mr", "ibv_reg_mr_iova2") == 80);
    for (unsigned i = 0; i < 80; i++)
        tshim_ck(&r, tshim_num(tshim_rec(&r, "reg_mr", "ibv_reg_mr_iova2", i), "access") ==
                         (7u | TSHIM_RO));
    struct tsc_json *rep = tshim_report(&r, 0);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "calls"), 80);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "injected"), 80);
    ck_assert_int_eq(tshim_ctr(rep, REG_1_1, "injected"), 1);
    tsc_json_free(rep);
}
END_TEST

/* A forked child counts in a report of its own, from zero. */
START_TEST(fork_child_separate_report)
{
    struct tshim_run r;

    tshim_init(&r, true);
    policy_on(&r);
    tshim_host(&r, "reg_rt:1M:7", "reg_rt:1M:7", "fork", "reg_rt:1M:7", NULL);
    pid_t child = (pid_t)tshim_out(&r, "fork", "child");
    tshim_ck(&r, tshim_out(&r, "fork", "status") == 0);
    tshim_ck(&r, child > 0 && child != r.pid);
    tshim_ck(&r, tshim_rec_count(&r, "reg_mr", NULL) == 4);
    unsigned by_child = 0;
    for (unsigned i = 0; i < 4; i++) {
        const struct tsc_json *j = tshim_rec(&r, "reg_mr", NULL, i);
        tshim_ck(&r, tshim_num(j, "access") == (7u | TSHIM_RO));
        by_child += tshim_num(j, "pid") == child;
    }
    tshim_ck(&r, by_child == 1);
    tshim_ck(&r, tshim_report_count(&r) == 2);
    struct tsc_json *parent = tshim_report(&r, r.pid), *kid = tshim_report(&r, child);
    ck_assert_int_eq(tshim_ctr(parent, REG_IOVA2, "calls"), 3);
    ck_assert_int_eq(tshim_ctr(parent, REG_IOVA2, "injected"), 3);
    /* Not inherited: the child's own single registration only. */
    ck_assert_int_eq(tshim_ctr(kid, REG_IOVA2, "calls"), 1);
    ck_assert_int_eq(tshim_ctr(kid, REG_IOVA2, "injected"), 1);
    ck_assert_int_eq(tshim_ctr(kid, REG_IOVA2, "bytes"), 1 << 20);
    ck_assert_str_eq(tsc_json_str(kid, "policy_hash", "a"),
                     tsc_json_str(parent, "policy_hash", "b"));
    tsc_json_free(parent);
    tsc_json_free(kid);
}
END_TEST

/* The same with live statistics on (the default): the child gets a segment
 * of its own, and every process removes its segment at exit. */
START_TEST(fork_child_live_stats)
{
    struct tshim_run r;

    tshim_init(&r, true);
    policy_on(&r);
    tshim_unenv(&r, "TESHIM_STATS_LIVE");
    tshim_host(&r, "reg_rt:1M:7", "fork", "exec", NULL);
    pid_t child = (pid_t)tshim_out(&r, "fork", "child");
    pid_t exec_child = (pid_t)tshim_out(&r, "exec", "child");
    struct tsc_json *parent = tshim_report(&r, r.pid), *kid = tshim_report(&r, child);
    ck_assert_int_eq(tshim_ctr(parent, REG_IOVA2, "calls"), 1);
    ck_assert_int_eq(tshim_ctr(kid, REG_IOVA2, "calls"), 1);
    tsc_json_free(parent);
    tsc_json_free(kid);
    kid = tshim_report(&r, exec_child);
    ck_assert_int_eq(tshim_ctr(kid, REG_IOVA2, "calls"), 1);
    tsc_json_free(kid);
    DIR *d = opendir("/dev/shm");
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d));) {
        const char *dash = strrchr(e->d_name, '-');
        if (strncmp(e->d_name, "teshim-", 7) != 0 || !dash)
            continue;
        pid_t p = (pid_t)atoi(dash + 1);
        ck_assert_msg(p != r.pid && p != child && p != exec_child, "segment %s left behind",
                      e->d_name);
    }
    closedir(d);
}
END_TEST

/* fork + exec: the new image loads teshim again (LD_PRELOAD is inherited)
 * and reports under the child's pid. */
START_TEST(exec_child_under_shim)
{
    struct tshim_run r;

    tshim_init(&r, true);
    policy_on(&r);
    tshim_host(&r, "reg_rt:1M:7", "exec", NULL);
    pid_t child = (pid_t)tshim_out(&r, "exec", "child");
    tshim_ck(&r, tshim_out(&r, "exec", "status") == 0);
    tshim_ck(&r, tshim_rec_count(&r, "reg_mr", NULL) == 2);
    const struct tsc_json *j = tshim_rec(&r, "reg_mr", NULL, 1);
    tshim_ck(&r, tshim_num(j, "pid") == child);
    tshim_ck(&r, tshim_num(j, "access") == (7u | TSHIM_RO));
    tshim_ck(&r, tshim_report_count(&r) == 2);
    struct tsc_json *parent = tshim_report(&r, r.pid), *kid = tshim_report(&r, child);
    ck_assert_int_eq(tshim_ctr(parent, REG_IOVA2, "calls"), 1);
    ck_assert_int_eq(tshim_ctr(kid, REG_IOVA2, "calls"), 1);
    ck_assert_int_eq(tshim_ctr(kid, REG_IOVA2, "injected"), 1);
    ck_assert_str_eq(tsc_json_str(kid, "program", ""), "tshim_host");
    tsc_json_free(parent);
    tsc_json_free(kid);
}
END_TEST

/*
 * stats.report = applied (the default): of a shell and the programs it
 * starts, only the one where a policy acted writes a report; with all,
 * every one does.
 */
START_TEST(report_only_where_a_policy_applied)
{
    struct tshim_run r;
    char script[1024];

    tshim_init(&r, true);
    tshim_unenv(&r, "TESHIM_STATS_REPORT");
    policy_on(&r);
    snprintf(script, sizeof(script), "/bin/true; /bin/true; %s reg_rt:1M:7; exit 0",
             tshim_build("bin/tshim_host"));
    const char *argv[] = {"/bin/bash", "-c", script, NULL};
    tshim_exec(&r, argv);
    tshim_ck(&r, r.status == 0);
    tshim_ck(&r, tshim_report_count(&r) == 1);
    struct tsc_json *j = tshim_report(&r, r.pid);
    ck_assert_str_eq(tsc_json_str(j, "program", ""), "tshim_host");
    ck_assert_int_eq(tshim_ctr(j, REG_IOVA2, "injected"), 1);
    tsc_json_free(j);

    struct tshim_run all;
    tshim_init(&all, true);
    tshim_env(&all, "TESHIM_STATS_REPORT", "all");
    policy_on(&all);
    tshim_exec(&all, argv);
    tshim_ck(&all, all.status == 0);
    tshim_ck(&all, tshim_report_count(&all) == 4); /* bash, true, true, tshim_host */
}
END_TEST

/* teshim run --stats-dir: the program it started reports even where no
 * policy applied; its children do not. */
START_TEST(report_of_the_program_teshim_run_started)
{
    struct tshim_run r;

    tshim_init(&r, false);
    tshim_unenv(&r, "TESHIM_STATS_REPORT");
    const char *argv[] = {
        tshim_build("bin/teshim"),      "run", "--stats-dir", r.stats, "--", "/bin/bash", "-c",
        "/bin/true; /bin/true; exit 0", NULL};
    tshim_exec(&r, argv);
    tshim_ck(&r, r.status == 0);
    tshim_ck(&r, tshim_report_count(&r) == 1);
    tshim_ck(&r, tshim_strcount(r.err, "teshim") == 0);
}
END_TEST

/*
 * One warning per cause per process tree: a shell tree of seven processes
 * under one bad variable says so once; a child that brings a cause of its
 * own says that one, once.
 */
START_TEST(config_warning_once_per_process_tree)
{
    struct tshim_run r;

    tshim_init(&r, true);
    tshim_env(&r, "TESHIM_BOGUS", "1");
    const char *argv[] = {"/bin/bash", "-c",
                          "/bin/true; /bin/true; sh -c \"/bin/true; /bin/true\"; "
                          "TESHIM_BOGUS2=1 sh -c \"/bin/true; /bin/true\"; exit 0",
                          NULL};
    tshim_exec(&r, argv);
    tshim_ck(&r, r.status == 0);
    tshim_ck(&r, tshim_strcount(r.err, "unknown variable TESHIM_BOGUS ") == 1);
    tshim_ck(&r, tshim_strcount(r.err, "unknown variable TESHIM_BOGUS2") == 1);
}
END_TEST

START_TEST(threads_count_exactly)
{
    struct tshim_run r;

    tshim_init(&r, true);
    policy_on(&r);
    tshim_host(&r, "threads:16:40:128K", NULL);
    tshim_ck(&r, tshim_out(&r, "threads:16:40:128K", "registered") == 640);
    tshim_ck(&r, tshim_rec_count(&r, "reg_mr", "ibv_reg_mr_iova2") == 640);
    for (unsigned i = 0; i < 640; i++)
        tshim_ck(&r, tshim_num(tshim_rec(&r, "reg_mr", NULL, i), "access") == (7u | TSHIM_RO));
    struct tsc_json *rep = tshim_report(&r, 0);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "calls"), 640);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "injected"), 640);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "bytes"), 640LL * 128 * 1024);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "errors"), 0);
    tsc_json_free(rep);
}
END_TEST

/* A binary linked to ibv_reg_mr@IBVERBS_1.0 reaches the library's 1.0
 * function untouched: teshim exports no 1.0 version, counts nothing. */
START_TEST(compat_1_0_not_intercepted)
{
    struct tshim_run base, r;
    const char *argv[] = {tshim_build("bin/tshim_host10"), NULL};

    tshim_init(&base, false);
    tshim_exec(&base, argv);
    tshim_ck(&base, base.status == 0);
    tshim_init(&r, true);
    policy_on(&r);
    tshim_env(&r, "TESHIM_RDMA_RELAXED_ORDERING_MIN_BYTES", "0");
    tshim_exec(&r, argv);
    tshim_ck(&r, r.status == 0);
    /* The same answer as without teshim, from the same function. */
    tshim_ck(&r, strcmp(strchr(r.out, '\n'), strchr(base.out, '\n')) == 0);
    /* The library's 1.0 function recorded the call, then registered through
     * ibv_reg_mr_iova2 as rdma-core does, through an interposable lookup:
     * that nested call reached teshim's hook, whose caller is the library
     * itself, so it passed through without the relaxed-ordering bit. */
    unsigned n10 = 0, niova2 = 0, nreg = tshim_rec_count(&r, "reg_mr", NULL);
    for (unsigned i = 0; i < nreg; i++) {
        const struct tsc_json *j = tshim_rec(&r, "reg_mr", NULL, i);
        const char *entry = tsc_json_str(j, "entry", "");
        tshim_ck(&r, (tshim_num(j, "access") & TSHIM_RO) == 0);
        n10 += strcmp(entry, "ibv_reg_mr@IBVERBS_1.0") == 0;
        niova2 += strcmp(entry, "ibv_reg_mr_iova2") == 0;
    }
    tshim_ck(&r, n10 == 1);
    tshim_ck(&r, niova2 == 1);
    tshim_ck(&r, nreg == 2);
    tshim_ck(&r, tshim_rec_count(&base, "reg_mr", NULL) == nreg);
    struct tsc_json *rep = tshim_report(&r, 0);
    static const char *const hooks[] = {REG_1_1, REG_IOVA, REG_IOVA2, REG_DMABUF};
    for (size_t h = 0; h < 4; h++)
        ck_assert_msg(tshim_ctr(rep, hooks[h], "calls") == 0, "%s counted a 1.0 call", hooks[h]);
    tsc_json_free(rep);
}
END_TEST

/* A program that never touches libibverbs runs as without teshim. */
START_TEST(program_without_verbs)
{
    struct tshim_run r;
    /* The shell leaves with _exit; false, exec'd under the same pid, exits. */
    const char *argv[] = {"/bin/sh", "-c", "echo pid $$; exec /bin/false", NULL};

    tshim_init(&r, true);
    policy_on(&r);
    tshim_exec(&r, argv);
    tshim_ck(&r, r.status == 1);
    tshim_ck(&r, r.err[0] == '\0');
    struct tsc_json *rep = tshim_report(&r, 0);
    ck_assert_int_eq(tshim_ctr(rep, REG_1_1, "calls"), 0);
    tsc_json_free(rep);
}
END_TEST

/* A report that cannot be written is a warning; the program's own exit
 * status stands. */
START_TEST(stats_dir_unwritable)
{
    struct tshim_run r;

    tshim_init(&r, true);
    policy_on(&r);
    tshim_env(&r, "TESHIM_STATS_DIR", "/proc/teshim-no-such-dir");
    tshim_host(&r, "reg_rt:1M:7", NULL);
    tshim_ck(&r, strstr(r.err, "/proc/teshim-no-such-dir") != NULL);
    tshim_ck(&r, tshim_strcount(r.err, "teshim[") == 1);
}
END_TEST

/* log.level = debug: the load is announced with arm, gate and policy hash,
 * and the PCIe state of a device once (auto mode). */
START_TEST(debug_log)
{
    struct tshim_run r;

    tshim_init(&r, true);
    tshim_env(&r, "TESHIM_RDMA_RELAXED_ORDERING", "auto");
    tshim_env(&r, "TESHIM_LOG_LEVEL", "debug");
    tshim_env(&r, "TESHIM_RDMA_SYSFS_ROOT", tshim_path(&r, "nosys"));
    tshim_host(&r, "reg_rt:1M:7", "reg_rt:1M:7", NULL);
    tshim_ck(&r, strstr(r.err, "loaded: arm B, gate enforce, policy ") != NULL);
    tshim_ck(&r, tshim_strcount(r.err, "emu0: PCIe relaxed-ordering state unknown") == 1);
    tshim_ck(&r, (tshim_num(tshim_rec(&r, "reg_mr", NULL, 0), "access") & TSHIM_RO) == 0);
}
END_TEST

Suite *tshim_process_suite(void)
{
    Suite *s = suite_create("shim_process");
    TCase *tc = tcase_create("process");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, hook_before_constructor);
    tcase_add_test(tc, threads_before_constructor);
    tcase_add_test(tc, fork_child_separate_report);
    tcase_add_test(tc, fork_child_live_stats);
    tcase_add_test(tc, exec_child_under_shim);
    tcase_add_test(tc, report_only_where_a_policy_applied);
    tcase_add_test(tc, report_of_the_program_teshim_run_started);
    tcase_add_test(tc, config_warning_once_per_process_tree);
    tcase_add_test(tc, threads_count_exactly);
    tcase_add_test(tc, compat_1_0_not_intercepted);
    tcase_add_test(tc, program_without_verbs);
    tcase_add_test(tc, stats_dir_unwritable);
    tcase_add_test(tc, debug_log);
    suite_add_tcase(s, tc);
    return s;
}
