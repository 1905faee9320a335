/*
 * The gate under LD_PRELOAD: nothing injected in observe mode (but counted
 * as observed), in arm A, under either kill switch, or out of scope.
 */
#include "tshim.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "pol.h"

#define REG_1_1 "ibv_reg_mr@IBVERBS_1.1"
#define REG_IOVA2 "ibv_reg_mr_iova2@IBVERBS_1.8"
#define MODIFY_QP "ibv_modify_qp@IBVERBS_1.1"

static void policy_on(struct tshim_run *r)
{
    tshim_env(r, "TESHIM_RDMA_RELAXED_ORDERING", "on");
    tshim_env(r, "TESHIM_RDMA_TRAFFIC_CLASS", "106");
    tshim_env(r, "TESHIM_RDMA_SERVICE_LEVEL", "5");
}

/* Nothing of teshim's in the record: no RO, the application's tc and sl. */
static void assert_untouched(const struct tshim_run *r)
{
    unsigned nreg = tshim_rec_count(r, "reg_mr", NULL), nrtr = 0;

    tshim_ck(r, nreg == 2);
    for (unsigned i = 0; i < nreg; i++)
        tshim_ck(r, (tshim_num(tshim_rec(r, "reg_mr", NULL, i), "access") & TSHIM_RO) == 0);
    for (unsigned i = 0; i < tshim_rec_count(r, "modify_qp", NULL); i++) {
        const struct tsc_json *j = tshim_rec(r, "modify_qp", NULL, i);
        if (!tsc_json_get(j, "ah_attr.sl"))
            continue;
        nrtr++;
        tshim_ck(r, tshim_num(j, "ah_attr.sl") == 2);
        tshim_ck(r, tshim_num(j, "ah_attr.grh.traffic_class") == 4);
    }
    tshim_ck(r, nrtr == 1);
}

static void run_gated(struct tshim_run *r, const char *arm, const char *gate)
{
    tshim_host(r, "reg_const:1M", "reg_rt:1M:7", "qp:grh", NULL);
    assert_untouched(r);
    struct tsc_json *rep = tshim_report(r, 0);
    ck_assert_str_eq(tsc_json_str(rep, "arm", ""), arm);
    ck_assert_str_eq(tsc_json_str(rep, "gate", ""), gate);
    ck_assert_int_eq(tshim_ctr(rep, REG_1_1, "calls"), 1);
    ck_assert_int_eq(tshim_ctr(rep, REG_1_1, "injected"), 0);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "injected"), 0);
    ck_assert_int_eq(tshim_ctr(rep, MODIFY_QP, "injected"), 0);
    if (strcmp(gate, "observe") == 0) {
        ck_assert_int_eq(tshim_ctr(rep, REG_1_1, "observed"), 1);
        ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "observed"), 1);
        ck_assert_int_eq(tshim_ctr(rep, MODIFY_QP, "observed"), 1);
        ck_assert_int_eq(tshim_ctr(rep, MODIFY_QP, "not_applicable"), 1);
    } else {
        ck_assert_int_eq(tshim_ctr(rep, REG_1_1, "skipped_by_policy"), 1);
        ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "skipped_by_policy"), 1);
        ck_assert_int_eq(tshim_ctr(rep, MODIFY_QP, "skipped_by_policy"), 2);
        ck_assert_int_eq(tshim_ctr(rep, REG_1_1, "observed"), 0);
    }
    tsc_json_free(rep);
}

START_TEST(observe_mode)
{
    struct tshim_run r;

    tshim_init(&r, true);
    policy_on(&r);
    tshim_env(&r, "TESHIM_MODE", "observe");
    run_gated(&r, "B", "observe");

    /* The shipped observe profile does the same. */
    tshim_init(&r, true);
    tshim_env(&r, "TESHIM_PROFILE", "observe");
    tshim_host(&r, "reg_rt:1M:7", NULL);
    tshim_ck(&r, (tshim_num(tshim_rec(&r, "reg_mr", NULL, 0), "access") & TSHIM_RO) == 0);
    struct tsc_json *rep = tshim_report(&r, 0);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "observed"), 1);
    ck_assert_str_eq(tsc_json_str(rep, "profile", ""), "observe");
    tsc_json_free(rep);
}
END_TEST

START_TEST(arm_a)
{
    struct tshim_run r;

    tshim_init(&r, true);
    policy_on(&r);
    tshim_env(&r, "TESHIM_ROLLOUT_ARM", "A");
    run_gated(&r, "A", "arm-a");

    /* rollout.percent = 0 puts every identity in arm A. */
    tshim_init(&r, true);
    policy_on(&r);
    tshim_env(&r, "TESHIM_ROLLOUT_PERCENT", "0");
    run_gated(&r, "A", "arm-a");
}
END_TEST

START_TEST(kill_switch_env)
{
    struct tshim_run r;

    tshim_init(&r, true);
    policy_on(&r);
    tshim_env(&r, "TESHIM_DISABLE", "1");
    run_gated(&r, "B", "killed");
}
END_TEST

START_TEST(kill_switch_file)
{
    struct tshim_run r;

    tshim_init(&r, true);
    policy_on(&r);
    int fd = open(tshim_path(&r, "disable"), O_WRONLY | O_CREAT, 0644);
    ck_assert_int_ge(fd, 0);
    close(fd);
    run_gated(&r, "B", "killed");

    /* Named in a config file rather than the environment. */
    tshim_init(&r, true);
    policy_on(&r);
    const char *kill = tshim_path(&r, "other-disable");
    char text[700];
    snprintf(text, sizeof(text), "kill_switch.file = %s\n", kill);
    FILE *f = fopen(tshim_path(&r, "k.conf"), "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    fd = open(kill, O_WRONLY | O_CREAT, 0644);
    ck_assert_int_ge(fd, 0);
    close(fd);
    tshim_env(&r, "TESHIM_CONFIG", tshim_path(&r, "k.conf"));
    /* The environment's name for the file would win: drop it. */
    tshim_unenv(&r, "TESHIM_KILL_SWITCH_FILE");
    run_gated(&r, "B", "killed");
}
END_TEST

START_TEST(program_out_of_scope)
{
    struct tshim_run r;

    tshim_init(&r, true);
    policy_on(&r);
    tshim_env(&r, "TESHIM_SCOPE_PROGRAMS", "vllm,sglang");
    run_gated(&r, "B", "out-of-scope");

    tshim_init(&r, true);
    policy_on(&r);
    tshim_env(&r, "TESHIM_SCOPE_EXCLUDE_PROGRAMS", "tshim_*");
    run_gated(&r, "B", "out-of-scope");

    /* In scope by glob: injected. */
    tshim_init(&r, true);
    policy_on(&r);
    tshim_env(&r, "TESHIM_SCOPE_PROGRAMS", "vllm,tshim_h*");
    tshim_host(&r, "reg_rt:1M:7", NULL);
    tshim_ck(&r, tshim_num(tshim_rec(&r, "reg_mr", NULL, 0), "access") == (7u | TSHIM_RO));
}
END_TEST

START_TEST(device_out_of_scope)
{
    struct tshim_run r;

    tshim_init(&r, true);
    policy_on(&r);
    tshim_env(&r, "VERBS_EMU_DEVICES", "2");
    tshim_env(&r, "TESHIM_RDMA_DEVICES", "emu1");
    tshim_host(&r, "reg_rt:1M:7", "qp:grh", "-d", "1", "reg_rt:1M:7", "qp:grh", NULL);
    const struct tsc_json *on0 = tshim_rec(&r, "reg_mr", NULL, 0);
    const struct tsc_json *on1 = tshim_rec(&r, "reg_mr", NULL, 1);
    ck_assert_str_eq(tsc_json_str(on0, "dev", ""), "emu0");
    ck_assert_str_eq(tsc_json_str(on1, "dev", ""), "emu1");
    tshim_ck(&r, tshim_num(on0, "access") == 7u);
    tshim_ck(&r, tshim_num(on1, "access") == (7u | TSHIM_RO));
    unsigned rtr = 0;
    for (unsigned i = 0; i < tshim_rec_count(&r, "modify_qp", NULL); i++) {
        const struct tsc_json *j = tshim_rec(&r, "modify_qp", NULL, i);
        if (!tsc_json_get(j, "ah_attr.grh.traffic_class"))
            continue;
        tshim_ck(&r, tshim_num(j, "ah_attr.grh.traffic_class") == (rtr == 0 ? 4 : 106));
        rtr++;
    }
    tshim_ck(&r, rtr == 2);
    struct tsc_json *rep = tshim_report(&r, 0);
    ck_assert_str_eq(tsc_json_str(rep, "gate", ""), "enforce");
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "skipped_by_policy"), 1);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "injected"), 1);
    tsc_json_free(rep);
}
END_TEST

/* Bad settings reach the process as warnings, once, and change nothing. */
START_TEST(bad_setting_reported_once)
{
    struct tshim_run r;

    tshim_init(&r, true);
    tshim_env(&r, "TESHIM_RDMA_RELAXED_ORDERING", "always");
    tshim_env(&r, "TESHIM_RDMA_TRAFIC_CLASS", "106");
    tshim_host(&r, "reg_rt:1M:7", "fork", NULL);
    tshim_ck(&r, tshim_strcount(r.err, "rdma.relaxed_ordering = 'always'") == 1);
    tshim_ck(&r, tshim_strcount(r.err, "off|on|auto") == 1);
    tshim_ck(&r, tshim_strcount(r.err, "did you mean TESHIM_RDMA_TRAFFIC_CLASS") == 1);
    tshim_ck(&r, (tshim_num(tshim_rec(&r, "reg_mr", NULL, 0), "access") & TSHIM_RO) == 0);
    struct tsc_json *rep = tshim_report(&r, 0);
    ck_assert_int_eq((int)tsc_json_num(rep, "config_warnings", -1), 2);
    tsc_json_free(rep);
}
END_TEST

/* The arm of a (host, program) identity is the same in every run and is
 * the one pol_rollout_bucket gives; the report names it. */
START_TEST(rollout_arm_stable)
{
    struct utsname un;
    const char *want_arm = NULL, *hash = NULL;

    ck_assert_int_eq(uname(&un), 0);
    bool in_b = pol_rollout_bucket("tshim-salt", un.nodename, "tshim_host") < 5000;
    for (int i = 0; i < 3; i++) {
        struct tshim_run r;
        tshim_init(&r, true);
        policy_on(&r);
        tshim_env(&r, "TESHIM_ROLLOUT_PERCENT", "50");
        tshim_env(&r, "TESHIM_ROLLOUT_SALT", "tshim-salt");
        /* kill_switch.file is part of the hashed policy: the same in every run. */
        tshim_env(&r, "TESHIM_KILL_SWITCH_FILE", "/nonexistent/tshim-kill-switch");
        tshim_host(&r, "reg_rt:1M:7", NULL);
        unsigned access = (unsigned)tshim_num(tshim_rec(&r, "reg_mr", NULL, 0), "access");
        tshim_ck(&r, ((access & TSHIM_RO) != 0) == in_b);
        struct tsc_json *rep = tshim_report(&r, 0);
        ck_assert_str_eq(tsc_json_str(rep, "arm", ""), in_b ? "B" : "A");
        ck_assert_str_eq(tsc_json_str(rep, "gate", ""), in_b ? "enforce" : "arm-a");
        if (!want_arm) {
            want_arm = strdup(tsc_json_str(rep, "arm", ""));
            hash = strdup(tsc_json_str(rep, "policy_hash", ""));
        }
        ck_assert_str_eq(tsc_json_str(rep, "arm", ""), want_arm);
        ck_assert_str_eq(tsc_json_str(rep, "policy_hash", ""), hash);
        tsc_json_free(rep);
    }
}
END_TEST

/* With log.file set, the configuration's warnings go to the file (once),
 * not to the application's stderr; log.level filters them like any other. */
START_TEST(config_warnings_follow_log_settings)
{
    struct tshim_run r;
    char *log = NULL;

    tshim_init(&r, true);
    tshim_env(&r, "TESHIM_RDMA_TRAFFIC_CLASS", "999");
    tshim_env(&r, "TESHIM_LOG_FILE", tshim_path(&r, "teshim.log"));
    tshim_env(&r, "TESHIM_LIBRARY", tshim_build("lib/libteshim.so"));
    tshim_host(&r, "reg_rt:1M:7", NULL);
    tshim_ck(&r, strstr(r.err, "teshim[") == NULL);
    FILE *f = fopen(tshim_path(&r, "teshim.log"), "r");
    tshim_ck(&r, f != NULL);
    size_t cap = 0;
    ck_assert_int_gt(getdelim(&log, &cap, '\0', f), 0);
    fclose(f);
    ck_assert_msg(tshim_strcount(log, "rdma.traffic_class = '999'") == 1, "%s", log);
    ck_assert_msg(tshim_strcount(log, "teshim[") == 1, "%s", log);
    free(log);
    struct tsc_json *rep = tshim_report(&r, 0);
    ck_assert_int_eq((int)tsc_json_num(rep, "config_warnings", -1), 1);
    tsc_json_free(rep);

    tshim_init(&r, true);
    tshim_env(&r, "TESHIM_RDMA_TRAFFIC_CLASS", "999");
    tshim_env(&r, "TESHIM_LOG_LEVEL", "error");
    tshim_host(&r, "reg_rt:1M:7", NULL);
    tshim_ck(&r, strstr(r.err, "teshim[") == NULL);
}
END_TEST

Suite *tshim_gate_suite(void)
{
    Suite *s = suite_create("shim_gate");
    TCase *tc = tcase_create("gate");

    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, observe_mode);
    tcase_add_test(tc, arm_a);
    tcase_add_test(tc, rollout_arm_stable);
    tcase_add_test(tc, kill_switch_env);
    tcase_add_test(tc, kill_switch_file);
    tcase_add_test(tc, program_out_of_scope);
    tcase_add_test(tc, device_out_of_scope);
    tcase_add_test(tc, bad_setting_reported_once);
    tcase_add_test(tc, config_warnings_follow_log_settings);
    suite_add_tcase(s, tc);
    return s;
}
