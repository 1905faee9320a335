/*
 * Live statistics: the segment a process under libteshim.so publishes is
 * owner-only, readable by another process (the test itself and `teshim stats
 * --live`), removed at exit, and reaped by the reader when its process was
 * killed. No timing: the host signals readiness on a pipe and waits for EOF.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_util.h"
#include "shim_stats.h"

static unsigned long long pidns(void)
{
    struct stat st;

    ck_assert_int_eq(stat("/proc/self/ns/pid", &st), 0);
    return (unsigned long long)st.st_ino;
}

struct host {
    pid_t pid;
    int stdin_w; /* closing it lets the host exit */
    char seg[96];
    char path[128];
};

/* Start cli_host under the shim with traffic class 106 forced in arm B; it
 * makes `calls` hooked calls, then says it is ready and waits. */
static void host_start(struct host *h, int calls)
{
    int ready[2], in[2];
    char n[16], lib[4096];
    char c;

    snprintf(lib, sizeof(lib), "%s/lib/libteshim.so", cli_path("TESHIM_BUILD_DIR"));
    snprintf(n, sizeof(n), "%d", calls);
    /* Close-on-exec everywhere: the host keeps only its stdin and fd 9. */
    ck_assert_int_eq(pipe2(ready, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(in, O_CLOEXEC), 0);
    h->pid = fork();
    ck_assert_int_ge(h->pid, 0);
    if (h->pid == 0) {
        dup2(in[0], 0);
        dup2(ready[1], 9);
        setenv("LD_PRELOAD", lib, 1);
        setenv("TESHIM_RDMA_TRAFFIC_CLASS", "106", 1);
        setenv("TESHIM_ROLLOUT_ARM", "B", 1);
        setenv("TESHIM_STATS_LIVE", "on", 1);
        unsetenv("TESHIM_STATS_DIR");
        execl(cli_path("CLI_HOST"), "cli_host", "--modify-qp", n, "--ready-fd", "9", (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(ready[1]);
    h->stdin_w = in[1];
    ck_assert_msg(read(ready[0], &c, 1) == 1, "cli_host did not start under the shim");
    close(ready[0]);
    snprintf(h->seg, sizeof(h->seg), "teshim-%u-%llu-%d", (unsigned)getuid(), pidns(), (int)h->pid);
    snprintf(h->path, sizeof(h->path), "/dev/shm/%s", h->seg);
}

static char *live(const char *pid_opt)
{
    char *out;
    char *argv[] = {(char *)cli_path("CLI_TESHIM"), "stats",         "--live", "--count", "1",
                    pid_opt ? "--pid" : NULL,       (char *)pid_opt, NULL};

    int st = cli_run(argv, NULL, &out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s", out);
    return out;
}

START_TEST(segment_owner_only_read_live_removed_at_exit)
{
    struct host h;
    struct stat st;
    char pid[16];

    host_start(&h, 4);
    ck_assert_int_eq(stat(h.path, &st), 0);
    ck_assert_int_eq(st.st_mode & 07777, 0600);
    ck_assert_uint_eq(st.st_uid, getuid());

    /* Read by another process: this one, through the published layout. */
    int fd = open(h.path, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    const struct shim_stats_area *a = mmap(NULL, sizeof(*a), PROT_READ, MAP_SHARED, fd, 0);
    ck_assert_ptr_ne(a, MAP_FAILED);
    close(fd);
    ck_assert_uint_eq(a->magic, SHIM_STATS_MAGIC);
    ck_assert_uint_eq(a->version, SHIM_STATS_LAYOUT);
    ck_assert_int_eq(a->pid, h.pid);
    ck_assert_str_eq(a->program, "cli_host");
    ck_assert_str_eq(a->arm, "B");
    ck_assert_uint_eq(a->hooks[SHIM_HK_ibv_modify_qp_1_1].c[SHIM_C_CALLS], 4);
    ck_assert_uint_eq(a->hooks[SHIM_HK_ibv_modify_qp_1_1].c[SHIM_C_INJECTED], 4);
    uint64_t outcomes = 0;
    for (int c = SHIM_C_INJECTED; c <= SHIM_C_ERRORS; c++)
        outcomes += a->hooks[SHIM_HK_ibv_modify_qp_1_1].c[c];
    ck_assert_uint_eq(outcomes, 4);

    /* And by teshim stats --live. */
    snprintf(pid, sizeof(pid), "%d", (int)h.pid);
    char *out = live(pid);
    ck_assert_msg(strstr(out, "1 process with pid"), "%s", out);
    ck_assert_msg(strstr(out, "cli_host"), "%s", out);
    ck_assert_msg(strstr(out, "enforce"), "%s", out);
    ck_assert_msg(strstr(out, "ibv_modify_qp@IBVERBS_1.1"), "%s", out);
    ck_assert_msg(strstr(out, "        4         4"), "calls and injected: %s", out);
    /* The columns are explained on the screen, would-blocks among them. */
    ck_assert_msg(strstr(out, "legend: CALLS = INJECTED"), "%s", out);
    ck_assert_msg(strstr(out, "WOULDBLK"), "%s", out);
    /* Run-time control: the kill-switch state and the last check. */
    ck_assert_msg(strstr(out, "kill switch off; checked "), "%s", out);
    free(out);

    /* Removed at exit; our mapping stays valid after the unlink. */
    close(h.stdin_w);
    int status;
    ck_assert_int_eq(waitpid(h.pid, &status, 0), h.pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ck_assert_int_eq(access(h.path, F_OK), -1);
    ck_assert_int_eq(errno, ENOENT);
    ck_assert_uint_eq(a->hooks[SHIM_HK_ibv_modify_qp_1_1].c[SHIM_C_CALLS], 4);
    munmap((void *)a, sizeof(*a));
}
END_TEST

START_TEST(killed_process_segment_reaped_by_reader)
{
    struct host h;
    char pid[16];

    host_start(&h, 1);
    ck_assert_int_eq(kill(h.pid, SIGKILL), 0);
    ck_assert_int_eq(waitpid(h.pid, NULL, 0), h.pid);
    /* SIGKILL runs no destructor: the segment is left behind until a reader
     * (or the start of another process under teshim, which may run in
     * parallel with this suite) sees that its process is gone. */
    bool left = access(h.path, F_OK) == 0;
    snprintf(pid, sizeof(pid), "%d", (int)h.pid);
    char *out = live(pid);
    if (left)
        ck_assert_msg(strstr(out, "stale segment"), "%s", out);
    ck_assert_msg(strstr(out, "(no teshim process with pid"), "%s", out);
    ck_assert_int_eq(access(h.path, F_OK), -1);
    close(h.stdin_w);
    free(out);
}
END_TEST

/* The next process started under teshim removes the segment of one that
 * was killed, without any reader. */
START_TEST(killed_process_segment_reaped_by_next_process)
{
    struct host h, next;

    host_start(&h, 1);
    ck_assert_int_eq(kill(h.pid, SIGKILL), 0);
    ck_assert_int_eq(waitpid(h.pid, NULL, 0), h.pid);
    host_start(&next, 1);
    ck_assert_int_eq(access(h.path, F_OK), -1);
    ck_assert_int_eq(access(next.path, F_OK), 0);
    close(next.stdin_w);
    ck_assert_int_eq(waitpid(next.pid, NULL, 0), next.pid);
    close(h.stdin_w);
}
END_TEST

/* A segment of a live process written by another teshim build is shown
 * without its counters, and not removed. */
START_TEST(other_layout_is_not_misread)
{
    char name[96], path[128], pid[16];

    snprintf(name, sizeof(name), "/teshim-%u-%llu-%d", (unsigned)getuid(), pidns(), (int)getpid());
    snprintf(path, sizeof(path), "/dev/shm%s", name);
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, sizeof(struct shim_stats_area)), 0);
    struct shim_stats_area *a = mmap(NULL, sizeof(*a), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ck_assert_ptr_ne(a, MAP_FAILED);
    close(fd);
    a->version = SHIM_STATS_LAYOUT + 1;
    a->pid = (int32_t)getpid();
    a->nhooks = SHIM_HK_COUNT;
    strcpy(a->program, "future");
    strcpy(a->arm, "B");
    strcpy(a->gate, "enforce");
    a->hooks[0].c[SHIM_C_CALLS] = 99;
    a->magic = SHIM_STATS_MAGIC;

    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    char *out = live(pid);
    ck_assert_msg(strstr(out, "future"), "%s", out);
    ck_assert_msg(strstr(out, "layout or hook list differs"), "%s", out);
    ck_assert_ptr_null(strstr(out, "        99"));
    ck_assert_int_eq(access(path, F_OK), 0); /* alive and mapped: kept */
    free(out);
    munmap(a, sizeof(*a));
    shm_unlink(name);
}
END_TEST

/* A live process of a teshim of layout 2 (before the run-time control
 * fields): its counters are still read. */
START_TEST(layout_2_segment_still_read)
{
    char name[96], pid[16];
    size_t len = offsetof(struct shim_stats_area, ctl);

    snprintf(name, sizeof(name), "/teshim-%u-%llu-%d", (unsigned)getuid(), pidns(), (int)getpid());
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, (off_t)len), 0);
    struct shim_stats_area *a = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ck_assert_ptr_ne(a, MAP_FAILED);
    close(fd);
    a->version = 2;
    a->pid = (int32_t)getpid();
    a->nhooks = SHIM_HK_COUNT;
    strcpy(a->program, "older");
    strcpy(a->arm, "B");
    strcpy(a->gate, "enforce");
    a->hooks[SHIM_HK_ibv_modify_qp_1_1].c[SHIM_C_CALLS] = 77;
    a->hooks[SHIM_HK_ibv_modify_qp_1_1].c[SHIM_C_INJECTED] = 77;
    a->magic = SHIM_STATS_MAGIC;

    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    char *out = live(pid);
    ck_assert_msg(strstr(out, "older"), "%s", out);
    ck_assert_msg(strstr(out, "        77        77"), "%s", out);
    ck_assert_msg(strstr(out, "no run-time control fields"), "%s", out);
    ck_assert_ptr_null(strstr(out, "layout or hook list differs"));
    free(out);
    munmap(a, len);
    shm_unlink(name);
}
END_TEST

/* One sample of the text format: NAME{LABELS} VALUE. */
struct prom_sample {
    char name[64];
    char labels[512];
    double value;
};

static bool prom_parse_sample(const char *line, struct prom_sample *s)
{
    int n = 0;

    if (sscanf(line, "%63[a-z_]{%511[^}]} %lf%n", s->name, s->labels, &s->value, &n) != 3)
        return false;
    return line[n] == '\0' || line[n] == '\n';
}

/* The label's value in a label list (no escapes in the values tested). */
static bool prom_label_is(const char *labels, const char *name, const char *value)
{
    char want[256];

    snprintf(want, sizeof(want), "%s=\"%s\"", name, value);
    const char *p = strstr(labels, want);
    return p && (p == labels || p[-1] == ',') && (p[strlen(want)] == ',' || !p[strlen(want)]);
}

START_TEST(prometheus_export_parses)
{
    struct host h;
    char pid[16], dir[] = "/tmp/teshim-prom.XXXXXX", file[128], line[1024];
    char names[32][64];
    unsigned nnames = 0, samples = 0;
    double calls = -1, injected = -1, outcomes = 0;

    host_start(&h, 4);
    snprintf(pid, sizeof(pid), "%d", (int)h.pid);
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(file, sizeof(file), "%s/teshim.prom", dir);
    char *argv[] = {(char *)cli_path("CLI_TESHIM"),
                    "stats",
                    "--live",
                    "--pid",
                    pid,
                    "--prometheus",
                    file,
                    NULL};
    char *out = NULL;
    int st = cli_run(argv, NULL, &out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s", out);
    free(out);

    FILE *f = fopen(file, "r");
    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof(line), f)) {
        char name[64], type[32];
        if (sscanf(line, "# HELP %63s", name) == 1) {
            ck_assert_uint_lt(nnames, 32);
            snprintf(names[nnames++], sizeof(names[0]), "%s", name);
            continue;
        }
        if (sscanf(line, "# TYPE %63s %31s", name, type) == 2) {
            ck_assert_msg(nnames && strcmp(names[nnames - 1], name) == 0, "TYPE before HELP: %s",
                          line);
            ck_assert_msg(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0, "%s", line);
            continue;
        }
        struct prom_sample s;
        ck_assert_msg(prom_parse_sample(line, &s), "not a sample: %s", line);
        ck_assert_msg(nnames && strcmp(names[nnames - 1], s.name) == 0,
                      "sample outside its family: %s", line);
        ck_assert_msg(prom_label_is(s.labels, "program", "cli_host") &&
                          prom_label_is(s.labels, "pid", pid) &&
                          prom_label_is(s.labels, "arm", "B"),
                      "%s", line);
        samples++;
        if (!prom_label_is(s.labels, "hook", "ibv_modify_qp@IBVERBS_1.1"))
            continue;
        if (strcmp(s.name, "teshim_hook_calls_total") == 0)
            calls = s.value;
        if (strcmp(s.name, "teshim_hook_outcomes_total") == 0) {
            outcomes += s.value;
            if (prom_label_is(s.labels, "outcome", "injected"))
                injected = s.value;
        }
    }
    fclose(f);
    ck_assert_uint_gt(samples, 5);
    ck_assert_msg(calls == 4 && injected == 4 && outcomes == 4, "calls %g injected %g outcomes %g",
                  calls, injected, outcomes);
    /* Written whole through a renamed temporary: nothing else is left. */
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "test \"$(ls -A %s)\" = teshim.prom", dir);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
    close(h.stdin_w);
    ck_assert_int_eq(waitpid(h.pid, NULL, 0), h.pid);
}
END_TEST

/*
 * Issue 14, finding 8: a segment is another user's file, and its owner may
 * shrink it at any time; a reader that mapped it died with SIGBUS on the
 * pages past the new end. The owner (a second uid when the suite is root)
 * keeps truncating and rewriting its live segment while `teshim stats
 * --live` scans: a bounded number of scans, every one must exit normally.
 */
START_TEST(segment_truncated_while_read)
{
    int stop[2];
    uid_t uid = geteuid() == 0 ? 48233 : geteuid();

    /* Close-on-exec: only the owner and this suite hold it, so the owner
     * sees EOF as soon as the suite is done or gone. */
    ck_assert_int_eq(pipe2(stop, O_CLOEXEC), 0);
    pid_t owner = fork();
    ck_assert_int_ge(owner, 0);
    if (owner == 0) {
        static struct shim_stats_area a;
        char name[96];
        close(stop[1]);
        if (geteuid() == 0 && (setgroups(0, NULL) != 0 || setresgid(uid, uid, uid) != 0 ||
                               setresuid(uid, uid, uid) != 0))
            _exit(2);
        snprintf(name, sizeof(name), "/teshim-%u-%llu-%d", (unsigned)uid, pidns(), (int)getpid());
        int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0644);
        if (fd < 0 || ftruncate(fd, sizeof(a)) != 0)
            _exit(3);
        /* Mapped, as the shim's is: the reader finds it in our maps. */
        void *m = mmap(NULL, sizeof(a), PROT_READ, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED)
            _exit(4);
        a.version = SHIM_STATS_LAYOUT;
        a.pid = (int32_t)getpid();
        a.nhooks = SHIM_HK_COUNT;
        strcpy(a.program, "shrinking");
        a.magic = SHIM_STATS_MAGIC;
        fcntl(stop[0], F_SETFL, O_NONBLOCK);
        for (unsigned i = 0; i < 50000000; i++) {
            char c;
            if (i % 1024 == 0 && read(stop[0], &c, 1) == 0)
                break; /* the suite closed the pipe */
            if (ftruncate(fd, 0) != 0 || pwrite(fd, &a, sizeof(a), 0) != (ssize_t)sizeof(a)) {
                shm_unlink(name);
                _exit(5);
            }
        }
        shm_unlink(name);
        _exit(0);
    }
    close(stop[0]);
    usleep(20000);
    char *argv[] = {(char *)cli_path("CLI_TESHIM"),
                    "stats",
                    "--live",
                    "--all-namespaces",
                    "--count",
                    "200",
                    "--interval",
                    "0.001",
                    NULL};
    int st = 0;
    for (int run = 0; run < 10; run++) {
        char *out = NULL;
        st = cli_run(argv, NULL, &out);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "run %d: %s %d\n%.400s", run,
                      WIFSIGNALED(st) ? "killed by signal" : "exit status",
                      WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), out ? out : "");
        free(out);
    }
    close(stop[1]);
    ck_assert_int_eq(waitpid(owner, &st, 0), owner);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "segment owner failed: %d", st);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cli_live");
    TCase *tc = tcase_create("live");

    tcase_add_test(tc, segment_owner_only_read_live_removed_at_exit);
    tcase_add_test(tc, killed_process_segment_reaped_by_reader);
    tcase_add_test(tc, killed_process_segment_reaped_by_next_process);
    tcase_add_test(tc, other_layout_is_not_misread);
    tcase_add_test(tc, layout_2_segment_still_read);
    tcase_add_test(tc, prometheus_export_parses);
    tcase_add_test(tc, segment_truncated_while_read);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
