/* The command's process toolkit (tsc_proc.c), shared by ab and demo:
 * exec errors reported to the caller, environment set and unset in the
 * child, output captured even when a grandchild keeps the pipe, time limits
 * that kill the process group, stop with SIGTERM. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tsc_proc.h"

struct buf {
    char s[4096];
    size_t n;
};

static void feed(void *arg, const char *data, size_t n)
{
    struct buf *b = arg;

    if (b->n + n < sizeof(b->s)) {
        memcpy(b->s + b->n, data, n);
        b->n += n;
        b->s[b->n] = '\0';
    }
}

/* Run sh -c script with env, capture its output into b; the wait status. */
static int capture(const char *script, char *const *env, struct buf *b)
{
    char *argv[] = {"sh", "-c", (char *)script, NULL};
    int fds[2], status = -1;
    struct rusage ru;

    ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
    struct tsc_spawn s = {.argv = argv, .env = env, .out_fd = fds[1]};
    pid_t pid = tsc_proc_spawn(&s);
    close(fds[1]);
    ck_assert_int_gt(pid, 0);
    memset(b, 0, sizeof(*b));
    ck_assert_int_eq(tsc_proc_capture(pid, fds[0], feed, b, &status, &ru), 0);
    close(fds[0]);
    return status;
}

START_TEST(exec_error_reaches_the_caller)
{
    char *argv[] = {"/nonexistent/teshim-no-such-program", NULL};
    struct tsc_spawn s = {.argv = argv};

    ck_assert_int_eq(tsc_proc_spawn(&s), -ENOENT);
    char *dir[] = {"/", NULL};
    s.argv = dir;
    ck_assert_int_eq(tsc_proc_spawn(&s), -EACCES);
}
END_TEST

START_TEST(environment_set_and_unset)
{
    struct buf b;
    char *env[] = {"TSC_PROC_SET=yes", "TSC_PROC_GONE", NULL};

    setenv("TSC_PROC_GONE", "still here", 1);
    int st = capture("echo \"$TSC_PROC_SET ${TSC_PROC_GONE-unset}\"; exit 3", env, &b);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 3);
    ck_assert_str_eq(b.s, "yes unset\n");
    char how[64];
    tsc_proc_describe(st, how, sizeof(how));
    ck_assert_str_eq(how, "exit 3");
}
END_TEST

/* A background grandchild keeps the pipe open: capture returns when the
 * child exits, with everything it wrote. */
START_TEST(capture_ends_with_the_child_not_the_pipe)
{
    struct buf b;
    double t0 = tsc_mono();

    int st = capture("sleep 20 & echo first; echo second >&2", NULL, &b);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    ck_assert_str_eq(b.s, "first\nsecond\n");
    ck_assert_msg(tsc_mono() - t0 < 15, "capture waited for the grandchild");
}
END_TEST

/* Dead or a zombie: the state in /proc/PID/stat. */
static bool gone(pid_t pid)
{
    char path[64], buf[512];

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return true;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')');
    return !paren || paren[2] == 'Z' || paren[2] == 'X';
}

/* Past its limit a child is killed with its whole process group. */
START_TEST(time_limit_kills_the_group)
{
    char pidfile[] = "/tmp/teshim-proc-XXXXXX", script[128];
    int fd = mkstemp(pidfile);
    ck_assert_int_ge(fd, 0);
    close(fd);
    snprintf(script, sizeof(script), "sleep 30 & echo $! > %s; wait", pidfile);
    char *argv[] = {"sh", "-c", script, NULL};
    struct tsc_spawn s = {.argv = argv, .own_group = true};
    int status;

    pid_t pid = tsc_proc_spawn(&s);
    ck_assert_int_gt(pid, 0);
    double t0 = tsc_mono();
    ck_assert_int_eq(tsc_proc_wait(pid, 1.0, true, &status, NULL), -ETIMEDOUT);
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    ck_assert_msg(tsc_mono() - t0 < 10, "the limit was not kept");
    /* The group is gone: the background sleep was killed too. */
    FILE *f = fopen(pidfile, "re");
    int sleeper = 0;
    ck_assert(f && fscanf(f, "%d", &sleeper) == 1 && sleeper > 0);
    fclose(f);
    unlink(pidfile);
    for (int i = 0; i < 100 && !gone(sleeper); i++) {
        struct timespec t = {0, 50 * 1000 * 1000};
        nanosleep(&t, NULL);
    }
    ck_assert_msg(gone(sleeper), "the grandchild %d outlived its group", sleeper);
}
END_TEST

START_TEST(stop_with_sigterm)
{
    char *argv[] = {"sleep", "30", NULL};
    struct tsc_spawn s = {.argv = argv, .own_group = true};

    pid_t pid = tsc_proc_spawn(&s);
    ck_assert_int_gt(pid, 0);
    ck_assert(tsc_proc_stop(pid, true, 10));
    ck_assert_int_eq(kill(pid, 0), -1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cli_proc");
    TCase *tc = tcase_create("proc");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, exec_error_reaches_the_caller);
    tcase_add_test(tc, environment_set_and_unset);
    tcase_add_test(tc, capture_ends_with_the_child_not_the_pipe);
    tcase_add_test(tc, time_limit_kills_the_group);
    tcase_add_test(tc, stop_with_sigterm);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
