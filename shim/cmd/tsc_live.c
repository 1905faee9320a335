/*
 * teshim stats --live: the counters every process under libteshim.so
 * publishes in /dev/shm/teshim-<uid>-<pidns>-<pid> (see shim/shim_stats.c),
 * and the clean-up of segments whose process is gone. Only segments of this
 * reader's pid namespace can be judged (and removed): containers sharing
 * /dev/shm see each other's segments under pid numbers that mean nothing here.
 *
 * A segment is copied with pread, never mapped: its owner may shrink it at
 * any time (ftruncate), and a mapping would then fault with SIGBUS on the
 * pages past the new end. A copy shorter than the layout is "starting" or
 * junk; the header is trusted only after the magic (written last, with
 * release order) and the layout checks. An open descriptor keeps the
 * segment readable even if its process exits and unlinks it meanwhile.
 */
#include "tsc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shim_stats.h"

#define SHM_DIR "/dev/shm"

static const char *const live_hook_names[SHIM_HK_COUNT] = {
#define HOOK(lib, tag, ver, def, ret, name, params, args, ...)                                     \
    [SHIM_HK_##name##_##tag] = #name "@" ver,
#include "shim_hooks.def"
#undef HOOK
};

/* What one segment holds, copied out of the mapping. */
struct live_proc {
    char seg[256];
    unsigned uid;
    unsigned long long ns;
    int pid;
    bool foreign_ns; /* another pid namespace: shown on request, never reaped */
    bool layout_ok;  /* counters readable: same layout and hook list */
    char program[128];
    char arm[4];
    char gate[16];
    uint64_t policy_hash;
    uint64_t start_ns;
    uint64_t c[SHIM_HK_COUNT][SHIM_C_COUNT];
    bool has_ctl; /* layout 3: run-time control fields */
    struct shim_stats_ctl ctl;
};

/* Counts of one scan. */
struct live_scan {
    unsigned shown, removed, unreadable, stale_foreign, foreign_layout, other_ns;
};

/* "teshim-<uid>-<pidns>-<pid>" exactly; 0 and the parts, or -1. */
static int parse_seg_name(const char *name, unsigned *uid, unsigned long long *ns, int *pid)
{
    int n = 0;

    if (sscanf(name, "teshim-%u-%llu-%d%n", uid, ns, pid, &n) != 3 || name[n] != '\0' || *pid <= 0)
        return -1;
    return 0;
}

static unsigned long long own_pid_namespace(void)
{
    struct stat st;

    return stat("/proc/self/ns/pid", &st) == 0 ? (unsigned long long)st.st_ino : 0;
}

/* Does pid still map this segment? 1 yes, 0 no, -1 cannot tell (no access
 * to its maps). A process that exec'd a program outside teshim, or a pid
 * reused by another program, keeps the name but not the mapping. */
static int maps_segment(int pid, const char *seg)
{
    char path[64], line[1024], want[300];
    FILE *f;
    int found = 0;

    snprintf(path, sizeof(path), "/proc/%d/maps", pid);
    snprintf(want, sizeof(want), SHM_DIR "/%s", seg);
    f = fopen(path, "re");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f)) {
        char *p = strstr(line, want);
        if (p && (p[strlen(want)] == '\n' || p[strlen(want)] == ' ' || p[strlen(want)] == '\0')) {
            found = 1;
            break;
        }
    }
    /* An empty maps file means the process is a zombie or gone. */
    fclose(f);
    return found;
}

static bool pid_alive(int pid)
{
    return kill(pid, 0) == 0 || errno == EPERM;
}

/* Unlink seg if the name still names the file we examined (a process of
 * the same pid may have replaced it in between). */
static bool remove_segment(const char *seg, const struct stat *seen)
{
    char path[300];
    struct stat now;

    snprintf(path, sizeof(path), SHM_DIR "/%s", seg);
    if (stat(path, &now) != 0 || now.st_ino != seen->st_ino || now.st_dev != seen->st_dev)
        return false;
    return unlink(path) == 0;
}

/* Copy up to cap bytes from the start of fd; the count, or -errno. A copy
 * of a segment being written is a snapshot of its counters, each one read
 * whole (aligned 8-byte words); the magic at offset 0 is read first. */
static ssize_t read_copy(int fd, void *buf, size_t cap)
{
    size_t n = 0;

    while (n < cap) {
        ssize_t r = pread(fd, (char *)buf + n, cap - n, (off_t)n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            break;
        n += (size_t)r;
    }
    return (ssize_t)n;
}

/*
 * Examine one segment: 1 and *p filled for a live process, 0 when skipped
 * (stale and removed, unreadable, foreign), counted in *scan.
 */
static int read_segment(const char *seg, struct live_proc *p, struct live_scan *scan)
{
    char path[300];
    struct stat st;
    static struct shim_stats_area copy;
    const struct shim_stats_area *a = &copy;
    size_t hdr = offsetof(struct shim_stats_area, hooks);
    int fd, rc = 0;

    memset(p, 0, sizeof(*p));
    if (parse_seg_name(seg, &p->uid, &p->ns, &p->pid) != 0)
        return 0;
    /* Namespace 0: the process could not tell; nor can we. */
    p->foreign_ns = p->ns == 0 || p->ns != own_pid_namespace();
    snprintf(p->seg, sizeof(p->seg), "%s", seg);
    snprintf(path, sizeof(path), SHM_DIR "/%s", seg);
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        scan->unreadable += errno == EACCES || errno == EPERM;
        return 0;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != p->uid) {
        /* Not what the shim creates: a name claiming another owner. */
        scan->unreadable++;
        goto out_close;
    }
    bool mine = st.st_uid == geteuid() && !p->foreign_ns;
    bool alive = p->foreign_ns || pid_alive(p->pid);
    if ((size_t)st.st_size < hdr) {
        /* Created but not sized yet (the process is starting), or junk. */
        if (!alive && mine)
            scan->removed += remove_segment(seg, &st);
        goto out_close;
    }
    ssize_t got = read_copy(fd, &copy, sizeof(copy));
    /* The header's gate and hash change with the control fields, under
     * ctl.seq (layout 3): a copy taken while they were written is taken
     * again. A process that never changes them leaves seq even. */
    for (int tries = 0; got == (ssize_t)sizeof(copy) && copy.version == SHIM_STATS_LAYOUT &&
                        (atomic_load(&copy.ctl.seq) & 1) && tries < 100;
         tries++) {
        struct timespec d = {0, 100000};
        nanosleep(&d, NULL);
        got = read_copy(fd, &copy, sizeof(copy));
    }
    if (got < 0) {
        scan->unreadable++;
        goto out_close;
    }
    size_t len = (size_t)got;
    /* Shrunk since fstat: as if not sized yet (shown on the next screen). */
    bool ready = len >= hdr && a->magic == SHIM_STATS_MAGIC;
    bool stale = !alive;
    /* Only an initialised segment can be judged by the maps: the magic is
     * written after the mapping exists. */
    if (!stale && ready && !p->foreign_ns && maps_segment(p->pid, seg) == 0)
        stale = true;
    if (stale) {
        if (mine)
            scan->removed += remove_segment(seg, &st);
        else
            scan->stale_foreign++;
        goto out_close;
    }
    if (!ready)
        goto out_close; /* still starting: shown on the next screen */
    memcpy(p->program, a->program, sizeof(p->program));
    p->program[sizeof(p->program) - 1] = '\0';
    memcpy(p->arm, a->arm, sizeof(p->arm));
    p->arm[sizeof(p->arm) - 1] = '\0';
    memcpy(p->gate, a->gate, sizeof(p->gate));
    p->gate[sizeof(p->gate) - 1] = '\0';
    p->policy_hash = a->policy_hash;
    p->start_ns = a->start_ns;
    /* Layout 2 (no control fields) is layout 3's prefix: its counters are
     * read the same way. */
    p->has_ctl = a->version == SHIM_STATS_LAYOUT && len == sizeof(*a);
    p->layout_ok =
        a->nhooks == SHIM_HK_COUNT && a->pid == p->pid &&
        (p->has_ctl || (a->version == 2 && len == offsetof(struct shim_stats_area, ctl)));
    if (p->has_ctl && p->layout_ok)
        memcpy(&p->ctl, &a->ctl, sizeof(p->ctl));
    p->has_ctl &= p->layout_ok;
    if (p->layout_ok) {
        for (int h = 0; h < SHIM_HK_COUNT; h++)
            for (int c = 0; c < SHIM_C_COUNT; c++)
                p->c[h][c] = atomic_load_explicit(&a->hooks[h].c[c], memory_order_relaxed);
    } else {
        scan->foreign_layout++;
    }
    rc = 1;
out_close:
    close(fd);
    return rc;
}

static int cmp_proc(const void *x, const void *y)
{
    const struct live_proc *a = x, *b = y;

    return (a->pid > b->pid) - (a->pid < b->pid);
}

/*
 * Scan /dev/shm: stale segments of our own dead processes are removed; when
 * procs is not NULL, live ones (restricted to pid when > 0) are returned in
 * a sorted array the caller frees. 0 or -errno.
 */
static int live_scan(int pid, bool all_ns, struct live_proc **procs, size_t *nprocs,
                     struct live_scan *scan)
{
    DIR *d = opendir(SHM_DIR);
    struct dirent *e;
    struct live_proc *arr = NULL, one;
    size_t n = 0, cap = 0;

    memset(scan, 0, sizeof(*scan));
    if (!d)
        return -errno;
    while ((e = readdir(d))) {
        unsigned uid;
        unsigned long long ns;
        int epid;
        if (parse_seg_name(e->d_name, &uid, &ns, &epid) != 0)
            continue;
        if (!read_segment(e->d_name, &one, scan))
            continue;
        if (one.foreign_ns && !all_ns) {
            scan->other_ns++;
            continue;
        }
        if (!procs || (pid > 0 && (one.pid != pid || one.foreign_ns)))
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            struct live_proc *t = realloc(arr, ncap * sizeof(*arr));
            if (!t)
                break; /* show what fits */
            arr = t;
            cap = ncap;
        }
        arr[n++] = one;
    }
    closedir(d);
    scan->shown = (unsigned)n;
    if (procs) {
        if (n)
            qsort(arr, n, sizeof(*arr), cmp_proc);
        *procs = arr;
        *nprocs = n;
    } else {
        free(arr);
    }
    return 0;
}

int tsc_live_reap(void)
{
    struct live_scan scan;

    if (live_scan(0, false, NULL, NULL, &scan) != 0)
        return 0;
    return (int)scan.removed;
}

static void print_proc(const struct live_proc *p, uint64_t now)
{
    double up = p->start_ns && now > p->start_ns ? (double)(now - p->start_ns) / 1e9 : 0;
    bool any = false;

    printf("%-8d %-24.24s %-3s %-12s %016llx %8.1fs%s\n", p->pid, p->program, p->arm, p->gate,
           (unsigned long long)p->policy_hash, up,
           p->foreign_ns ? "  (other pid namespace: pid as seen there)" : "");
    if (!p->layout_ok) {
        printf("  (counters written by a different teshim build: layout or hook list differs)\n");
        return;
    }
    if (p->has_ctl) {
        const struct shim_stats_ctl *c = &p->ctl;
        double ago = now > c->last_check_ns ? (double)(now - c->last_check_ns) / 1e9 : 0;
        printf("    kill switch %s; checked %.1fs ago", c->killed ? "on" : "off", ago);
        if (c->check_interval_ms)
            printf(" (every %llu ms)", (unsigned long long)c->check_interval_ms);
        else
            printf(" (at start only)");
        printf("; %u change%s", c->changes, c->changes == 1 ? "" : "s");
        if (c->last_change_ns)
            printf(", last %.1fs ago",
                   now > c->last_change_ns ? (double)(now - c->last_change_ns) / 1e9 : 0);
        if (c->rejected)
            printf("; %u config edit%s refused", c->rejected, c->rejected == 1 ? "" : "s");
        printf("\n");
    } else {
        printf("    (an older teshim: no run-time control fields)\n");
    }
    for (int h = 0; h < SHIM_HK_COUNT; h++) {
        uint64_t sum = 0;
        for (int c = 0; c < SHIM_C_COUNT; c++)
            sum += p->c[h][c];
        if (!sum)
            continue;
        if (!any) {
            printf("    %-34s", "HOOK");
            for (int c = 0; c < SHIM_C_COUNT; c++)
                printf(" %9s", tsc_ctr_heads[c]);
            printf("\n");
        }
        any = true;
        printf("    %-34s", live_hook_names[h]);
        for (int c = 0; c < SHIM_C_COUNT; c++)
            printf(" %9llu", (unsigned long long)p->c[h][c]);
        printf("\n");
    }
    if (!any)
        printf("    (no hooked call yet)\n");
}

/* A Prometheus label value: backslash, double quote and newline escaped. */
static void prom_label(FILE *f, const char *name, const char *v, bool first)
{
    fprintf(f, "%s%s=\"", first ? "" : ",", name);
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            fprintf(f, "\\%c", *v);
        else if (*v == '\n')
            fputs("\\n", f);
        else
            fputc(*v, f);
    }
    fputc('"', f);
}

static void prom_proc_labels(FILE *f, const struct live_proc *p)
{
    char pid[16];

    snprintf(pid, sizeof(pid), "%d", p->pid);
    prom_label(f, "program", p->program, true);
    prom_label(f, "pid", pid, false);
    prom_label(f, "arm", p->arm, false);
}

/*
 * The node_exporter textfile format: one HELP and TYPE line per metric
 * family, then its samples. Counters of hooks that saw no call are left
 * out (a host has dozens of hooks).
 */
static void prom_write(FILE *f, const struct live_proc *procs, size_t n)
{
    fprintf(f, "# HELP teshim_process_info A process running under libteshim.so (value 1).\n"
               "# TYPE teshim_process_info gauge\n");
    for (size_t k = 0; k < n; k++) {
        char hash[20];
        snprintf(hash, sizeof(hash), "%016llx", (unsigned long long)procs[k].policy_hash);
        fprintf(f, "teshim_process_info{");
        prom_proc_labels(f, &procs[k]);
        prom_label(f, "gate", procs[k].gate, false);
        prom_label(f, "policy_hash", hash, false);
        fprintf(f, "} 1\n");
    }
    fprintf(f, "# HELP teshim_process_kill_switch Whether the kill-switch file was there at the "
               "process's last check.\n# TYPE teshim_process_kill_switch gauge\n");
    for (size_t k = 0; k < n; k++) {
        if (!procs[k].has_ctl)
            continue;
        fprintf(f, "teshim_process_kill_switch{");
        prom_proc_labels(f, &procs[k]);
        fprintf(f, "} %u\n", procs[k].ctl.killed ? 1u : 0u);
    }
    fprintf(f, "# HELP teshim_process_last_check_seconds When the process last checked its kill "
               "switch and config file (Unix time).\n"
               "# TYPE teshim_process_last_check_seconds gauge\n");
    for (size_t k = 0; k < n; k++) {
        if (!procs[k].has_ctl)
            continue;
        fprintf(f, "teshim_process_last_check_seconds{");
        prom_proc_labels(f, &procs[k]);
        fprintf(f, "} %.3f\n", (double)procs[k].ctl.last_check_ns / 1e9);
    }
    fprintf(f, "# HELP teshim_process_changes_total Configuration and kill-switch changes the "
               "process applied at run time.\n# TYPE teshim_process_changes_total counter\n");
    for (size_t k = 0; k < n; k++) {
        if (!procs[k].has_ctl)
            continue;
        fprintf(f, "teshim_process_changes_total{");
        prom_proc_labels(f, &procs[k]);
        fprintf(f, "} %u\n", procs[k].ctl.changes);
    }
    fprintf(f, "# HELP teshim_hook_calls_total Calls that reached a teshim hook.\n"
               "# TYPE teshim_hook_calls_total counter\n");
    for (size_t k = 0; k < n; k++) {
        for (int h = 0; procs[k].layout_ok && h < SHIM_HK_COUNT; h++) {
            if (!procs[k].c[h][SHIM_C_CALLS])
                continue;
            fprintf(f, "teshim_hook_calls_total{");
            prom_proc_labels(f, &procs[k]);
            prom_label(f, "hook", live_hook_names[h], false);
            fprintf(f, "} %llu\n", (unsigned long long)procs[k].c[h][SHIM_C_CALLS]);
        }
    }
    fprintf(f, "# HELP teshim_hook_outcomes_total Calls of a hook by outcome (the outcomes of a "
               "hook add up to its calls).\n# TYPE teshim_hook_outcomes_total counter\n");
    for (size_t k = 0; k < n; k++) {
        for (int h = 0; procs[k].layout_ok && h < SHIM_HK_COUNT; h++) {
            if (!procs[k].c[h][SHIM_C_CALLS])
                continue;
            for (int c = SHIM_C_INJECTED; c < SHIM_C_BYTES; c++) {
                fprintf(f, "teshim_hook_outcomes_total{");
                prom_proc_labels(f, &procs[k]);
                prom_label(f, "hook", live_hook_names[h], false);
                prom_label(f, "outcome", tsc_ctr_keys[c], false);
                fprintf(f, "} %llu\n", (unsigned long long)procs[k].c[h][c]);
            }
        }
    }
    fprintf(f, "# HELP teshim_hook_bytes_total Bytes covered by injected calls of a hook.\n"
               "# TYPE teshim_hook_bytes_total counter\n");
    for (size_t k = 0; k < n; k++) {
        for (int h = 0; procs[k].layout_ok && h < SHIM_HK_COUNT; h++) {
            if (!procs[k].c[h][SHIM_C_CALLS])
                continue;
            fprintf(f, "teshim_hook_bytes_total{");
            prom_proc_labels(f, &procs[k]);
            prom_label(f, "hook", live_hook_names[h], false);
            fprintf(f, "} %llu\n", (unsigned long long)procs[k].c[h][SHIM_C_BYTES]);
        }
    }
}

/* Write the export to path whole or not at all: a temporary file in the
 * same directory renamed over it, as node_exporter's textfile collector
 * asks (it may read at any moment). 0 or -errno. */
static int prom_write_file(const char *path, const struct live_proc *procs, size_t n)
{
    char tmp[4200];
    int fd, rc = 0;
    FILE *f;

    if (snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid()) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return -errno;
    f = fdopen(fd, "w");
    if (!f) {
        rc = -errno;
        close(fd);
        goto err_unlink;
    }
    prom_write(f, procs, n);
    if (fflush(f) != 0 || fsync(fd) != 0)
        rc = -errno;
    if (fclose(f) != 0 && !rc)
        rc = -errno;
    if (!rc && rename(tmp, path) != 0)
        rc = -errno;
    if (!rc)
        return 0;
err_unlink:
    unlink(tmp);
    return rc;
}

static void live_usage(FILE *f)
{
    fprintf(f, "usage: teshim stats --live [--pid PID] [--interval S] [--count N] "
               "[--all-namespaces] [--prometheus [FILE]]\n"
               "Shows every process running under libteshim.so on this host (its arm, gate,\n"
               "policy hash and non-zero per-hook counters), read from the shared-memory\n"
               "segments " SHM_DIR "/teshim-<uid>-<pidns>-<pid> (owner-only: other users'\n"
               "processes are visible to root only). Refreshes every S seconds (default 1);\n"
               "--count N stops after N screens (default: until interrupted on a terminal,\n"
               "1 otherwise). Segments left by processes that died (SIGKILL) are removed\n"
               "when they are ours. Processes of other pid namespaces (containers sharing\n"
               "/dev/shm) are counted; --all-namespaces lists them too (their liveness\n"
               "cannot be checked from here, so their segments are never removed).\n"
               "Each process also shows its kill-switch state, when it last checked the\n"
               "kill-switch file and its config file, and how many changes it applied.\n"
               "--prometheus writes the counters in the Prometheus text format instead (to\n"
               "FILE, replaced whole each refresh, for node_exporter's textfile collector;\n"
               "to standard output without FILE): labels program, pid, arm, hook, outcome.\n");
}

int tsc_stats_live(int argc, char **argv)
{
    int pid = 0;
    bool all_ns = false;
    double interval = 1.0;
    long count = isatty(STDOUT_FILENO) ? 0 : 1;
    bool tty = isatty(STDOUT_FILENO);
    bool prom = false;
    const char *prom_file = NULL;

    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        char *end;
        if (strcmp(o, "--live") == 0)
            continue;
        if (strcmp(o, "--prometheus") == 0) {
            prom = true;
            if (i + 1 < argc && argv[i + 1][0] != '-')
                prom_file = argv[++i];
            continue;
        }
        if (strcmp(o, "--all-namespaces") == 0) {
            all_ns = true;
            continue;
        }
        if (strcmp(o, "--help") == 0 || strcmp(o, "-h") == 0) {
            live_usage(stdout);
            return 0;
        }
        if (i + 1 >= argc || (strcmp(o, "--pid") != 0 && strcmp(o, "--interval") != 0 &&
                              strcmp(o, "--count") != 0)) {
            tsc_err("stats --live: unknown option or missing value '%s'", o);
            live_usage(stderr);
            return TSC_EXIT_USAGE;
        }
        const char *v = argv[++i];
        errno = 0;
        if (strcmp(o, "--pid") == 0) {
            long l = strtol(v, &end, 10);
            if (*end || l <= 0 || l > 0x7fffffff) {
                tsc_err("stats --live: --pid %s is not a process id", v);
                return TSC_EXIT_USAGE;
            }
            pid = (int)l;
        } else if (strcmp(o, "--interval") == 0) {
            interval = strtod(v, &end);
            if (*end || !(interval > 0) || interval > 3600) {
                tsc_err("stats --live: --interval %s: seconds in (0, 3600]", v);
                return TSC_EXIT_USAGE;
            }
        } else {
            count = strtol(v, &end, 10);
            if (*end || count < 1) {
                tsc_err("stats --live: --count %s: a positive number of screens", v);
                return TSC_EXIT_USAGE;
            }
        }
    }

    for (long screen = 0; count == 0 || screen < count; screen++) {
        struct live_proc *procs = NULL;
        size_t n = 0;
        struct live_scan scan;
        struct timespec ts;
        char when[64];

        if (screen > 0) {
            struct timespec d = {(time_t)interval,
                                 (long)((interval - (double)(time_t)interval) * 1e9)};
            nanosleep(&d, NULL);
        }
        int rc = live_scan(pid, all_ns, &procs, &n, &scan);
        if (rc) {
            tsc_err("stats --live: %s: %s", SHM_DIR, strerror(-rc));
            return 1;
        }
        if (prom) {
            if (prom_file)
                rc = prom_write_file(prom_file, procs, n);
            else
                prom_write(stdout, procs, n);
            free(procs);
            fflush(stdout);
            if (rc) {
                tsc_err("stats --live --prometheus %s: %s", prom_file, strerror(-rc));
                return 1;
            }
            if (count == 0 && !prom_file)
                count = 1; /* one scrape on a terminal too */
            continue;
        }
        clock_gettime(CLOCK_REALTIME, &ts);
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", localtime(&ts.tv_sec));
        if (tty)
            fputs("\033[H\033[2J", stdout);
        printf("teshim live statistics, %s: %zu process%s", when, n, n == 1 ? "" : "es");
        if (pid > 0)
            printf(" with pid %d", pid);
        if (scan.removed)
            printf(", %u stale segment%s removed", scan.removed, scan.removed == 1 ? "" : "s");
        if (scan.unreadable)
            printf(", %u not readable (other users: run as root)", scan.unreadable);
        if (scan.stale_foreign)
            printf(", %u stale of other users", scan.stale_foreign);
        if (scan.other_ns)
            printf(", %u in other pid namespaces", scan.other_ns);
        printf("\n");
        if (n)
            printf("legend: %s\n%-8s %-24s %-3s %-12s %-16s %9s\n", tsc_ctr_legend, "PID",
                   "PROGRAM", "ARM", "GATE", "POLICY", "UPTIME");
        uint64_t now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
        for (size_t k = 0; k < n; k++)
            print_proc(&procs[k], now);
        if (!n && pid > 0)
            printf("(no teshim process with pid %d)\n", pid);
        free(procs);
        fflush(stdout);
    }
    return 0;
}
