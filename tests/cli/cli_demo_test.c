/*
 * teshim demo, one step at a time (--step NAME): the emulated RDMA step
 * shows relaxed ordering applied under rdma-ro-tc because the emulated
 * device offers its PCIe config space (VERBS_EMU_SYSFS) where teshim reads
 * it (rdma.sysfs_root); a device whose Device Control forbids relaxed
 * ordering makes the step fail; the other steps report what they injected;
 * a step that does not exist is a usage error.
 */
#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "cli_util.h"

static bool have(const char *prog)
{
    char cmd[256];

    snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", prog);
    if (system(cmd) == 0)
        return true;
    fprintf(stderr, "%s not installed (scripts/deps.sh test installs it): case not run\n", prog);
    return false;
}

/* The end of a long output, for a failure message Check can carry. */
static const char *tail(const char *out)
{
    size_t n = strlen(out);

    return n > 3000 ? out + n - 3000 : out;
}

/* teshim demo --step NAME with extra environment; the wait status. */
static int demo_step(const char *name, char *const *env, char **out)
{
    char *argv[] = {(char *)cli_path("CLI_TESHIM"), "demo", "--step", (char *)name, NULL};

    return cli_run(argv, env, out);
}

START_TEST(rdma_step_applies_relaxed_ordering_under_rdma_ro_tc)
{
    char *out;

    if (!have("ibv_rc_pingpong"))
        return;
    int st = demo_step("rdma", NULL, &out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s", tail(out));
    ck_assert_msg(strstr(out, "run --profile rdma-ro-tc"), "%s", tail(out));
    ck_assert_msg(strstr(out, "PCIe Device Control in ") &&
                      strstr(out, "/sysfs: relaxed ordering enabled"),
                  "%s", tail(out));
    ck_assert_msg(strstr(out, "-> relaxed ordering applied: 2 of 2 registrations reached the "
                              "device with IBV_ACCESS_RELAXED_ORDERING"),
                  "%s", tail(out));
    ck_assert_msg(strstr(out, "-> traffic class applied: 2 of 2 QP transitions"), "%s", tail(out));
    ck_assert_msg(strstr(out, "-> injected: ibv_reg_mr"), "%s", tail(out));
    free(out);
}
END_TEST

/* The same profile on a device whose PCIe function has relaxed ordering
 * off: auto leaves it off, and the demo says so and fails. */
START_TEST(rdma_step_fails_where_pcie_forbids_relaxed_ordering)
{
    char *out, *env[] = {"VERBS_EMU_PCIE_RO=0", NULL};

    if (!have("ibv_rc_pingpong"))
        return;
    int st = demo_step("rdma", env, &out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1, "%s", tail(out));
    ck_assert_msg(strstr(out, "/sysfs: relaxed ordering disabled"), "%s", tail(out));
    ck_assert_msg(strstr(out, "-> relaxed ordering NOT applied: none of 2 registrations"), "%s",
                  tail(out));
    ck_assert_msg(strstr(out, "demo: step failed: rdma"), "%s", tail(out));
    free(out);
}
END_TEST

/* The other steps that act on a program say what they injected. */
START_TEST(steps_report_their_injections)
{
    static const struct {
        const char *step, *tool, *want;
    } cases[] = {
        {"host", NULL, "-> injected: ibv_modify_qp@IBVERBS_1.1 3"},
        {"tcp", "iperf3", "run --profile tcp-qos --set tcp.ports="},
    };
    char *out;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (cases[i].tool && !have(cases[i].tool))
            continue;
        int st = demo_step(cases[i].step, NULL, &out);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s", tail(out));
        ck_assert_msg(strstr(out, cases[i].want), "%s", tail(out));
        ck_assert_msg(strstr(out, "-> injected: ") && !strstr(out, "-> injected: nothing"), "%s",
                      tail(out));
        free(out);
    }
}
END_TEST

START_TEST(unknown_step_is_a_usage_error)
{
    char *out;

    int st = demo_step("rdma-ro", NULL, &out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 2, "%s", tail(out));
    ck_assert_msg(strstr(out, "--step rdma-ro: no such step"), "%s", tail(out));
    free(out);
    char *argv[] = {(char *)cli_path("CLI_TESHIM"), "demo", "--runs", "0", NULL};
    st = cli_run(argv, NULL, &out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 2, "%s", tail(out));
    ck_assert_msg(strstr(out, "--runs 0: runs per arm in 1..50"), "%s", tail(out));
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cli_demo");
    TCase *tc = tcase_create("demo");

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, rdma_step_applies_relaxed_ordering_under_rdma_ro_tc);
    tcase_add_test(tc, rdma_step_fails_where_pcie_forbids_relaxed_ordering);
    tcase_add_test(tc, steps_report_their_injections);
    tcase_add_test(tc, unknown_step_is_a_usage_error);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
