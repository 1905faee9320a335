/*
 * Files, setuid programs and hostile users (issue 14). The attacker is a
 * second, unprivileged uid that owns no account on the machine: a child of
 * the suite switches to it to plant symlinks and FIFOs where a root process
 * under teshim will write. Programs that could hang run with a time limit:
 * a hang fails the case (status -1) instead of the suite.
 *
 * The setuid case is the kernel's own: a setuid-root copy of a small
 * program, exec'd by the unprivileged uid (so AT_SECURE is set by the
 * kernel, not simulated), with libteshim.so listed in /etc/ld.so.preload as
 * a system-wide preload does, in a private mount namespace so the host's
 * /etc is untouched.
 */
#include "tshim.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define REG_IOVA2 "ibv_reg_mr_iova2@IBVERBS_1.8"
#define PRECIOUS "precious\n"

static uid_t attacker;

/* Every case acts as a second user: only root can be one. */
static bool have_root(void)
{
    if (geteuid() == 0)
        return true;
    fprintf(stderr, "shim_security: skipped, needs root to act as a second user\n");
    return false;
}

static void pick_attacker(void)
{
    for (uid_t u = 48231; u < 48431; u++) {
        if (!getpwuid(u) && !getgrgid(u)) {
            attacker = u;
            return;
        }
    }
    ck_abort_msg("no unused uid in 48231..48430");
}

static void drop_to_attacker(void)
{
    if (setgroups(0, NULL) != 0 || setresgid(attacker, attacker, attacker) != 0 ||
        setresuid(attacker, attacker, attacker) != 0)
        _exit(124);
}

/* What the attacker plants: a symlink (target set) or a FIFO at each path. */
struct plant {
    char path[4][700];
    char target[4][700]; /* "" = a FIFO */
    unsigned n;
};

static void plant_add(struct plant *p, const char *path, const char *target)
{
    ck_assert_uint_lt(p->n, 4);
    snprintf(p->path[p->n], sizeof(p->path[0]), "%s", path);
    snprintf(p->target[p->n], sizeof(p->target[0]), "%s", target ? target : "");
    p->n++;
}

/* Plant as the attacker, in a child; asserts every plant succeeded. */
static void plant_as_attacker(const struct plant *p)
{
    pid_t pid = fork();

    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        drop_to_attacker();
        for (unsigned i = 0; i < p->n; i++) {
            int rc = p->target[i][0] ? symlink(p->target[i], p->path[i]) : mkfifo(p->path[i], 0666);
            if (rc != 0) {
                perror(p->path[i]);
                _exit(1);
            }
        }
        _exit(0);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "attacker could not plant (%d)", st);
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);

    ck_assert_msg(fd >= 0, "%s: %m", path);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static char *read_text(const char *path)
{
    static char buf[8192];
    int fd = open(path, O_RDONLY | O_NOFOLLOW);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;

    if (fd >= 0)
        close(fd);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

/* The attacker's target kept its content (quoted short: an overwritten one
 * holds a whole report). */
static void assert_untouched(const char *path)
{
    const char *now = read_text(path);

    ck_assert_msg(strcmp(now, PRECIOUS) == 0, "%s was written through a planted link: '%.120s'",
                  path, now);
}

static bool is_symlink_to(const char *path, const char *target)
{
    char buf[1024];
    ssize_t n = readlink(path, buf, sizeof(buf) - 1);

    if (n < 0)
        return false;
    buf[n] = '\0';
    return strcmp(buf, target) == 0;
}

/* A directory every user may write to, with the sticky bit, like /tmp. */
static const char *sticky_dir(struct tshim_run *r)
{
    const char *d = tshim_path(r, "shared");

    ck_assert_int_eq(chmod(r->dir, 0711), 0); /* the attacker may pass */
    ck_assert_int_eq(mkdir(d, 0700), 0);
    ck_assert_int_eq(chmod(d, 01777), 0);
    return d;
}

/* A directory the attacker owns. */
static const char *attacker_dir(struct tshim_run *r, const char *name)
{
    const char *d = tshim_path(r, name);

    ck_assert_int_eq(chmod(r->dir, 0711), 0);
    ck_assert_int_eq(mkdir(d, 0755), 0);
    ck_assert_int_eq(chown(d, attacker, attacker), 0);
    return d;
}

/* on_fork: the names the report and the log of process pid would have had
 * before issue 14 (they were predictable), planted in r->arg's directory. */
struct trap {
    const char *dir;
    const char *victim;     /* symlink target; NULL: FIFOs */
    const char *log_victim; /* NULL: no log trap */
    bool report_trap;
    pid_t pid;
};

static void plant_traps(struct tshim_run *r, pid_t pid)
{
    struct trap *t = r->arg;
    struct plant p = {0};
    char path[700];

    t->pid = pid;
    if (t->report_trap) {
        snprintf(path, sizeof(path), "%s/teshim-tshim_host-%d.json.tmp", t->dir, (int)pid);
        plant_add(&p, path, t->victim);
        if (t->victim) {
            snprintf(path, sizeof(path), "%s/teshim-tshim_host-%d.json", t->dir, (int)pid);
            plant_add(&p, path, t->victim);
        }
    }
    if (t->log_victim || (!t->victim && !t->report_trap)) {
        snprintf(path, sizeof(path), "%s/teshim.log", t->dir);
        plant_add(&p, path, t->log_victim);
    }
    plant_as_attacker(&p);
}

static const char *victim_file(struct tshim_run *r, const char *name)
{
    const char *v = tshim_path(r, name);

    write_file(v, PRECIOUS, 0644);
    return v;
}

static void policy_on(struct tshim_run *r)
{
    tshim_env(r, "TESHIM_RDMA_RELAXED_ORDERING", "on");
    tshim_env(r, "TESHIM_ROLLOUT_ARM", "B");
}

/*
 * Finding 1, shared sticky directory: the attacker links the report's
 * temporary and final names and the log file to root-owned files. Root's
 * process writes its report under a name nobody could plant, and refuses
 * the log file; the linked files keep their content.
 */
START_TEST(symlinks_in_sticky_dir)
{
    struct tshim_run r;
    struct trap t = {0};
    char report[800], jerr[128];
    struct stat st;

    if (!have_root())
        return;
    tshim_init(&r, true);
    policy_on(&r);
    t.dir = sticky_dir(&r);
    t.victim = victim_file(&r, "victim");
    t.log_victim = victim_file(&r, "victim-log");
    t.report_trap = true;
    tshim_env(&r, "TESHIM_STATS_DIR", t.dir);
    tshim_env(&r, "TESHIM_LOG_FILE", tshim_path(&r, "shared/teshim.log"));
    tshim_env(&r, "TESHIM_LOG_LEVEL", "info");
    r.on_fork = plant_traps;
    r.arg = &t;
    r.timeout_s = 30;
    tshim_host(&r, "reg_rt:1M:7", NULL);
    assert_untouched(t.victim);
    assert_untouched(t.log_victim);
    /* The planted names are left as they were. */
    snprintf(report, sizeof(report), "%s/teshim-tshim_host-%d.json", t.dir, (int)t.pid);
    ck_assert(is_symlink_to(report, t.victim));
    tshim_ck(&r, strstr(r.err, "log.file") != NULL);
    /* The report is there, under the next free name, a file of root's. */
    snprintf(report, sizeof(report), "%s/teshim-tshim_host.1-%d.json", t.dir, (int)t.pid);
    ck_assert_int_eq(lstat(report, &st), 0);
    ck_assert(S_ISREG(st.st_mode));
    ck_assert_uint_eq(st.st_uid, 0);
    struct tsc_json *j = tsc_json_load(report, jerr, sizeof(jerr));
    ck_assert_ptr_nonnull(j);
    ck_assert_int_eq((int)tsc_json_num(j, "pid", -1), (int)t.pid);
    ck_assert_int_eq(tshim_ctr(j, REG_IOVA2, "injected"), 1);
    tsc_json_free(j);
}
END_TEST

/* Finding 1, a directory the attacker owns: refused as a whole, for the
 * report and for the log, with a warning naming the owner. */
START_TEST(symlinks_in_attacker_dir)
{
    struct tshim_run r;
    struct trap t = {0};
    char owner[64];

    if (!have_root())
        return;
    tshim_init(&r, true);
    policy_on(&r);
    t.dir = attacker_dir(&r, "evil");
    t.victim = victim_file(&r, "victim");
    t.log_victim = victim_file(&r, "victim-log");
    t.report_trap = true;
    tshim_env(&r, "TESHIM_STATS_DIR", t.dir);
    tshim_env(&r, "TESHIM_LOG_FILE", tshim_path(&r, "evil/teshim.log"));
    tshim_env(&r, "TESHIM_LOG_LEVEL", "info");
    r.on_fork = plant_traps;
    r.arg = &t;
    r.timeout_s = 30;
    tshim_host(&r, "reg_rt:1M:7", NULL);
    assert_untouched(t.victim);
    assert_untouched(t.log_victim);
    snprintf(owner, sizeof(owner), "owned by uid %u", (unsigned)attacker);
    tshim_ck(&r, tshim_strcount(r.err, owner) == 2); /* stats.dir and log.file */
    tshim_ck(&r, tshim_report_count(&r) == 0);
}
END_TEST

/* Finding 4: a FIFO at the report's temporary name hung the process at
 * exit (opened for writing, waiting for a reader). */
START_TEST(fifo_at_report_name)
{
    struct tshim_run r;
    struct trap t = {0};

    if (!have_root())
        return;
    tshim_init(&r, true);
    policy_on(&r);
    t.dir = sticky_dir(&r);
    t.report_trap = true;
    tshim_env(&r, "TESHIM_STATS_DIR", t.dir);
    r.on_fork = plant_traps;
    r.arg = &t;
    r.timeout_s = 20;
    const char *argv[] = {tshim_build("bin/tshim_host"), "reg_rt:1M:7", NULL};
    tshim_exec(&r, argv);
    tshim_ck(&r, r.status != -1); /* -1: killed after 20 s */
    tshim_ck(&r, r.status == 0);
    snprintf(r.stats, sizeof(r.stats), "%s", t.dir);
    struct tsc_json *j = tshim_report(&r, t.pid);
    ck_assert_int_eq(tshim_ctr(j, REG_IOVA2, "calls"), 1);
    tsc_json_free(j);
}
END_TEST

/* Finding 4: a FIFO as log file hung the process at its start. */
START_TEST(fifo_as_log_file)
{
    struct tshim_run r;
    struct trap t = {0};

    if (!have_root())
        return;
    tshim_init(&r, true);
    policy_on(&r);
    t.dir = sticky_dir(&r);
    tshim_env(&r, "TESHIM_LOG_FILE", tshim_path(&r, "shared/teshim.log"));
    tshim_env(&r, "TESHIM_LOG_LEVEL", "info");
    r.on_fork = plant_traps;
    r.arg = &t;
    r.timeout_s = 20;
    const char *argv[] = {tshim_build("bin/tshim_host"), "reg_rt:1M:7", NULL};
    tshim_exec(&r, argv);
    tshim_ck(&r, r.status != -1);
    tshim_ck(&r, r.status == 0);
    tshim_ck(&r, strstr(r.err, "log.file") != NULL);
    tshim_ck(&r, tshim_report_count(&r) == 1);
}
END_TEST

/* Finding 4: a FIFO as config file, named by TESHIM_CONFIG or found at
 * $HOME/.config/teshim.conf, hung the process at its start. */
START_TEST(fifo_as_config_file)
{
    for (int home = 0; home < 2; home++) {
        struct tshim_run r;

        tshim_init(&r, true);
        policy_on(&r);
        const char *fifo = tshim_path(&r, home ? ".config/teshim.conf" : "fifo.conf");
        if (home) {
            if (access("/etc/teshim.conf", F_OK) == 0)
                continue; /* the system file is read first */
            ck_assert_int_eq(mkdir(tshim_path(&r, ".config"), 0755), 0);
            tshim_unenv(&r, "TESHIM_CONFIG");
        } else {
            tshim_env(&r, "TESHIM_CONFIG", fifo);
        }
        ck_assert_int_eq(mkfifo(fifo, 0600), 0);
        r.timeout_s = 20;
        const char *argv[] = {tshim_build("bin/tshim_host"), "reg_rt:1M:7", NULL};
        tshim_exec(&r, argv);
        tshim_ck(&r, r.status != -1);
        tshim_ck(&r, r.status == 0);
        tshim_ck(&r, strstr(r.err, "not a regular file") != NULL);
        tshim_ck(&r, strstr(r.err, fifo) != NULL);
        /* The policy from the environment still applies. */
        struct tsc_json *j = tshim_report(&r, 0);
        ck_assert_int_eq(tshim_ctr(j, REG_IOVA2, "injected"), 1);
        tsc_json_free(j);
    }
}
END_TEST

/* Finding 4: TESHIM_CONFIG=/dev/stdin read the application's input. */
START_TEST(config_dev_stdin_keeps_input)
{
    struct tshim_run r;
    const char *argv[] = {"/bin/cat", NULL};

    tshim_init(&r, true);
    tshim_env(&r, "TESHIM_CONFIG", "/dev/stdin");
    r.input = "the application's input\n";
    r.timeout_s = 20;
    tshim_exec(&r, argv);
    tshim_ck(&r, r.status == 0);
    tshim_ck(&r, strcmp(r.out, "the application's input\n") == 0);
    tshim_ck(&r, strstr(r.err, "config file /dev/stdin: not a regular file") != NULL);
}
END_TEST

/* Finding 2: names and values are echoed in log lines; a newline in them
 * wrote a line of the attacker's choosing (a cron entry) into the log. */
START_TEST(control_characters_escaped)
{
    struct tshim_run r;

    tshim_init(&r, true);
    tshim_env(&r, "TESHIM_RDMA_TRAFFIC_CLASS", "1\n* * * * * root touch /tmp/x1");
    tshim_env(&r, "TESHIM_X\n* * * * * root touch /tmp/x2\n#", "1");
    tshim_host(&r, "reg_rt:1M:7", NULL);
    tshim_ck(&r, strstr(r.err, "\\n* * * * * root touch /tmp/x1") != NULL);
    tshim_ck(&r, strstr(r.err, "TESHIM_X\\n* * * * * root touch /tmp/x2\\n#") != NULL);
    /* Every line of standard error is one of teshim's, whole. */
    for (const char *l = r.err; *l;) {
        tshim_ck(&r, strncmp(l, "teshim[", 7) == 0);
        const char *nl = strchr(l, '\n');
        l = nl ? nl + 1 : l + strlen(l);
    }
}
END_TEST

/* Item 9: a report path longer than 512 bytes was cut (and landed in
 * another directory or nowhere); a path that cannot fit at all is refused
 * with a warning. */
START_TEST(long_report_path)
{
    struct tshim_run r;
    char dir[1200];

    tshim_init(&r, true);
    int n = snprintf(dir, sizeof(dir), "%s", r.dir);
    while (n < 700) {
        n += snprintf(dir + n, sizeof(dir) - (size_t)n, "/%s",
                      "a-directory-of-forty-characters-1234567");
        ck_assert_int_eq(mkdir(dir, 0755), 0);
    }
    tshim_env(&r, "TESHIM_STATS_DIR", dir);
    tshim_host(&r, "reg_rt:1M:7", NULL);
    DIR *d = opendir(dir);
    unsigned found = 0;
    ck_assert_ptr_nonnull(d);
    for (struct dirent *e; (e = readdir(d));)
        found += strncmp(e->d_name, "teshim-tshim_host-", 18) == 0;
    closedir(d);
    tshim_ck(&r, found == 1);

    /* Longer than any path: refused, named, nothing written. */
    static char huge[5000];
    memset(huge, 'x', sizeof(huge) - 1);
    memcpy(huge, r.dir, strlen(r.dir));
    huge[strlen(r.dir)] = '/';
    tshim_env(&r, "TESHIM_STATS_DIR", huge);
    tshim_host(&r, "reg_rt:1M:7", NULL);
    tshim_ck(&r, strstr(r.err, "stats.dir: path longer than") != NULL);
}
END_TEST

/* The report key of a hook name, whatever its version on this machine. */
static long long hook_calls(const struct tsc_json *report, const char *name)
{
    const struct tsc_json *hooks = tsc_json_get(report, "hooks");
    size_t n = strlen(name);

    ck_assert_ptr_nonnull(hooks);
    for (const struct tsc_json *h = hooks->child; h; h = h->next)
        if (strncmp(h->key, name, n) == 0 && h->key[n] == '@')
            return (long long)tsc_json_num(h, "calls", -1);
    ck_abort_msg("no hook %s in the report", name);
    return -1;
}

/* Item 9: a process that replaced itself with exec never wrote its report.
 * Every entry point of the exec family writes it first; the new image
 * (the same program, the same pid) reports under the next free name. */
START_TEST(report_before_exec)
{
    static const char *const fns[] = {"execve", "execv",  "execvp", "execvpe",
                                      "execl",  "execlp", "execle", "fexecve"};
    const char *fn = fns[_i];
    struct tshim_run r;
    char step[64], path[800], jerr[128];

    tshim_init(&r, true);
    policy_on(&r);
    snprintf(step, sizeof(step), "execself:%s", fn);
    tshim_host(&r, "reg_rt:1M:7", step, NULL);
    tshim_ck(&r, tshim_strcount(r.out, "reg_rt:1M:7 ok") == 2);
    tshim_ck(&r, tshim_report_count(&r) == 2);
    snprintf(path, sizeof(path), "%s/teshim-tshim_host-%d.json", r.stats, (int)r.pid);
    struct tsc_json *before = tsc_json_load(path, jerr, sizeof(jerr));
    snprintf(path, sizeof(path), "%s/teshim-tshim_host.1-%d.json", r.stats, (int)r.pid);
    struct tsc_json *after = tsc_json_load(path, jerr, sizeof(jerr));
    tshim_ck(&r, before && after);
    ck_assert_int_eq(hook_calls(before, fn), 1);
    ck_assert_int_eq(tshim_ctr(before, REG_IOVA2, "injected"), 1);
    ck_assert_int_eq(hook_calls(after, fn), 0);
    ck_assert_int_eq(tshim_ctr(after, REG_IOVA2, "injected"), 1);
    tsc_json_free(before);
    tsc_json_free(after);
}
END_TEST

/* ---- the setuid program under a system-wide preload ------------------- */

struct secure_ns {
    char etc_orig[700]; /* the real /etc, bound here inside the namespace */
    char etc_new[700];  /* links to it, plus ld.so.preload and teshim.conf */
};

static void secure_child(struct tshim_run *r)
{
    struct secure_ns *ns = r->arg;

    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("/etc", ns->etc_orig, NULL, MS_BIND | MS_REC, NULL) != 0 ||
        mount(ns->etc_new, "/etc", NULL, MS_BIND, NULL) != 0)
        _exit(123);
    drop_to_attacker();
}

/* A copy of /etc made of links into the real one, plus files of ours. */
static void fake_etc(struct tshim_run *r, struct secure_ns *ns, const char *preload,
                     const char *conf)
{
    DIR *d = opendir("/etc");
    char from[1200], to[1200];

    snprintf(ns->etc_orig, sizeof(ns->etc_orig), "%s", tshim_path(r, "etc-orig"));
    snprintf(ns->etc_new, sizeof(ns->etc_new), "%s", tshim_path(r, "etc"));
    ck_assert_int_eq(mkdir(ns->etc_orig, 0755), 0);
    ck_assert_int_eq(mkdir(ns->etc_new, 0755), 0);
    ck_assert_ptr_nonnull(d);
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
            !strcmp(e->d_name, "ld.so.preload") || !strcmp(e->d_name, "teshim.conf"))
            continue;
        snprintf(from, sizeof(from), "%s/%s", ns->etc_orig, e->d_name);
        snprintf(to, sizeof(to), "%s/%s", ns->etc_new, e->d_name);
        ck_assert_int_eq(symlink(from, to), 0);
    }
    closedir(d);
    snprintf(to, sizeof(to), "%s/ld.so.preload", ns->etc_new);
    write_file(to, preload, 0644);
    snprintf(to, sizeof(to), "%s/teshim.conf", ns->etc_new);
    write_file(to, conf, 0644);
}

/* Copy file from to path to, mode mode (setuid included), owned by root. */
static void install(const char *from, const char *to, mode_t mode)
{
    static char buf[1 << 20];
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_EXCL, 0700);
    ssize_t n;

    ck_assert_int_ge(in, 0);
    ck_assert_int_ge(out, 0);
    while ((n = read(in, buf, sizeof(buf))) > 0)
        ck_assert_int_eq(write(out, buf, (size_t)n), n);
    close(in);
    ck_assert_int_eq(fchown(out, 0, 0), 0);
    ck_assert_int_eq(fchmod(out, mode), 0);
    close(out);
}

/*
 * Finding 2: the caller of a setuid-root program chose where it wrote, as
 * root: the report directory and log file (environment, TESHIM_CONFIG,
 * $HOME and $XDG_CONFIG_HOME config files). Under AT_SECURE only
 * /etc/teshim.conf and the defaults apply.
 */
START_TEST(setuid_ignores_caller_environment)
{
    struct tshim_run r;
    struct secure_ns ns;
    char preload[1100], conf[2000], path[1200];

    if (!have_root())
        return;
#ifdef __SANITIZE_ADDRESS__
    return; /* an instrumented libteshim.so cannot preload into the plain program */
#endif
    tshim_init(&r, false);
    const char *evil = attacker_dir(&r, "evil");
    const char *sys = tshim_path(&r, "sysstats");
    const char *prog = tshim_path(&r, "tshim_secure_host");
    install(tshim_build("bin/tshim_secure_host"), prog, 04755);
    snprintf(preload, sizeof(preload), "%s\n", tshim_build("lib/libteshim.so"));
    snprintf(conf, sizeof(conf),
             "stats.dir = %s\nstats.live = off\nstats.report = all\nlog.level = info\n"
             "kill_switch.file = %s/disable\n",
             sys, r.dir);
    fake_etc(&r, &ns, preload, conf);

    /* What the caller sets: each names a file under the directory it owns. */
    snprintf(path, sizeof(path), "%s/home/.config", evil);
    ck_assert_int_eq(mkdir(tshim_path(&r, "evil/home"), 0755), 0);
    ck_assert_int_eq(mkdir(path, 0755), 0);
    ck_assert_int_eq(mkdir(tshim_path(&r, "evil/xdg"), 0755), 0);
    snprintf(conf, sizeof(conf), "stats.dir = %s/conf-stats\nlog.file = %s/conf.log\n", evil, evil);
    write_file(tshim_path(&r, "evil/evil.conf"), conf, 0644);
    write_file(tshim_path(&r, "evil/home/.config/teshim.conf"), conf, 0644);
    write_file(tshim_path(&r, "evil/xdg/teshim.conf"), conf, 0644);
    snprintf(path, sizeof(path), "%s/env-stats", evil);
    tshim_env(&r, "TESHIM_STATS_DIR", path);
    snprintf(path, sizeof(path), "%s/env.log", evil);
    tshim_env(&r, "TESHIM_LOG_FILE", path);
    tshim_env(&r, "TESHIM_CONFIG", tshim_path(&r, "evil/evil.conf"));
    tshim_env(&r, "HOME", tshim_path(&r, "evil/home"));
    tshim_env(&r, "XDG_CONFIG_HOME", tshim_path(&r, "evil/xdg"));
    tshim_env(&r, "TESHIM_LOG_LEVEL", "debug");
    tshim_env(&r, "TESHIM_X\n* * * * * root touch /tmp/x\n#", "1");

    r.child_setup = secure_child;
    r.arg = &ns;
    r.timeout_s = 30;
    const char *argv[] = {prog, NULL};
    tshim_exec(&r, argv);
    tshim_ck(&r, r.status == 0);
    /* The kernel ran it setuid: AT_SECURE, the caller's uid, euid root. */
    snprintf(path, sizeof(path), "secure 1 ruid %u euid 0\n", (unsigned)attacker);
    tshim_ck(&r, strstr(r.out, path) != NULL);

    /* Nothing appeared where the caller pointed. */
    static const char *const made[] = {"env-stats", "env.log", "conf-stats", "conf.log"};
    for (size_t i = 0; i < sizeof(made) / sizeof(made[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", evil, made[i]);
        ck_assert_msg(access(path, F_OK) != 0, "%s was created\n%s", path, r.err);
    }
    /* teshim was there, configured by the system file only. */
    snprintf(r.stats, sizeof(r.stats), "%s", sys);
    struct tsc_json *j = tshim_report(&r, 0);
    ck_assert_str_eq(tsc_json_str(j, "config_file", ""), "/etc/teshim.conf");
    ck_assert_int_eq((int)tsc_json_num(j, "config_warnings", -1), 0);
    ck_assert_int_eq(hook_calls(j, "socket"), 1);
    tsc_json_free(j);
    tshim_ck(&r, strstr(r.err, "environment and user config files not read") != NULL);
    tshim_ck(&r, strstr(r.err, "* * * * *") == NULL);
}
END_TEST

Suite *tshim_security_suite(void)
{
    Suite *s = suite_create("shim_security");
    TCase *tc = tcase_create("security");

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, symlinks_in_sticky_dir);
    tcase_add_test(tc, symlinks_in_attacker_dir);
    tcase_add_test(tc, fifo_at_report_name);
    tcase_add_test(tc, fifo_as_log_file);
    tcase_add_test(tc, fifo_as_config_file);
    tcase_add_test(tc, config_dev_stdin_keeps_input);
    tcase_add_test(tc, control_characters_escaped);
    tcase_add_test(tc, long_report_path);
    tcase_add_loop_test(tc, report_before_exec, 0, 8);
    tcase_add_test(tc, setuid_ignores_caller_environment);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr;
    int failed;

    pick_attacker();
    sr = srunner_create(tshim_security_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
