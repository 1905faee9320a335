/*
 * teshim doctor PROGRAM (issue 15): for each host program the project
 * builds, the paths to CUDA and libibverbs it predicts, and only those.
 */
#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "cli_util.h"

static const char *const kinds[] = {
    "reach cuda-runtime:",  "reach cuda-static-runtime:", "reach cuda-driver:",
    "reach verbs-linked:",  "reach verbs-dlopen:",        "not reachable devx:",
    "not reachable static:"};
#define NKINDS (sizeof(kinds) / sizeof(kinds[0]))

static char *doctor(const char *prog, char *const *env)
{
    char *argv[] = {(char *)cli_path("CLI_TESHIM"), (char *)"doctor", (char *)prog, NULL};
    char *out = NULL;
    int st = cli_run(argv, env, &out);

    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) <= 1, "doctor %s: status %d\n%s", prog, st, out);
    ck_assert_msg(strstr(out, "program ") != NULL, "%s", out);
    return out;
}

/* The host under env var, where that area is built: exactly the paths in
 * want (indexes into kinds, -1 terminated). */
static void expect(const char *var, const int *want)
{
    const char *prog = getenv(var);
    char *out;

    if (!prog || !*prog) {
        printf("%s: host not built here, skipped\n", var);
        return;
    }
    out = doctor(prog, NULL);
    for (size_t k = 0; k < NKINDS; k++) {
        bool wanted = false;
        for (const int *w = want; *w >= 0; w++)
            wanted |= (size_t)*w == k;
        ck_assert_msg((strstr(out, kinds[k]) != NULL) == wanted, "%s: '%s' %s\n%s", var, kinds[k],
                      wanted ? "missing" : "unexpected", out);
    }
    free(out);
}

START_TEST(shared_runtime)
{
    expect("CLI_CUDART_HOST", (const int[]){0, -1});
}
END_TEST

START_TEST(static_runtime)
{
    expect("CLI_STATIC_CUDART_HOST", (const int[]){1, -1});
}
END_TEST

START_TEST(driver_api)
{
    expect("CLI_DRIVER_HOST", (const int[]){2, -1});
}
END_TEST

START_TEST(verbs_linked)
{
    expect("CLI_VERBS_HOST", (const int[]){3, -1});
}
END_TEST

START_TEST(verbs_dlopened)
{
    expect("CLI_DLVERBS_HOST", (const int[]){4, -1});
}
END_TEST

START_TEST(devx)
{
    expect("CLI_DEVX_HOST", (const int[]){5, -1});
    char *out = doctor(cli_path("CLI_DEVX_HOST"), NULL);
    ck_assert_ptr_nonnull(strstr(out, "warning: not reachable devx"));
    free(out);
}
END_TEST

START_TEST(static_executable)
{
    expect("CLI_STATIC_HOST", (const int[]){6, -1});
}
END_TEST

/* Nothing to reach: said, with no path named. */
START_TEST(no_path)
{
    char *out = doctor("/bin/sh", NULL);

    for (size_t k = 0; k < NKINDS; k++)
        ck_assert_msg(strstr(out, kinds[k]) == NULL, "%s\n%s", kinds[k], out);
    ck_assert_ptr_nonnull(strstr(out, "no CUDA or RDMA path in this file"));
    free(out);
}
END_TEST

/* A bare program name is looked for in PATH. */
START_TEST(bare_name_from_path)
{
    const char *prog = cli_path("CLI_DEVX_HOST");
    char dir[4096], path[4200], want[4300];
    const char *slash = strrchr(prog, '/');

    ck_assert_ptr_nonnull(slash);
    snprintf(dir, sizeof(dir), "%.*s", (int)(slash - prog), prog);
    snprintf(path, sizeof(path), "PATH=/nonexistent:%s:/usr/bin:/bin", dir);
    char *env[] = {path, NULL};
    char *out = doctor(slash + 1, env);
    snprintf(want, sizeof(want), "program %s\n", prog);
    ck_assert_msg(strstr(out, want) != NULL, "%s", out);
    ck_assert_ptr_nonnull(strstr(out, "not reachable devx:"));
    free(out);

    out = doctor("teshim-no-such-program", env);
    ck_assert_ptr_nonnull(strstr(out, "cannot open teshim-no-such-program"));
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cli_doctor");
    TCase *tc = tcase_create("reach");
    SRunner *sr;
    int failed;

    tcase_add_test(tc, shared_runtime);
    tcase_add_test(tc, static_runtime);
    tcase_add_test(tc, driver_api);
    tcase_add_test(tc, verbs_linked);
    tcase_add_test(tc, verbs_dlopened);
    tcase_add_test(tc, devx);
    tcase_add_test(tc, static_executable);
    tcase_add_test(tc, no_path);
    tcase_add_test(tc, bare_name_from_path);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
