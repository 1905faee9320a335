/*
 * Per-hook counters. They live in one struct shim_stats_area: in a POSIX
 * shared-memory segment /teshim-<uid>-<pidns>-<pid> (owner-only, removed at
 * exit; segments of processes that died are removed by readers) when
 * stats.live is on, so `teshim stats --live` can read a running process;
 * otherwise in anonymous memory. The JSON report is written from it at exit.
 */
#include "shim.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/auxv.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Counting before initialisation never happens (shim_enter initialises
 * first), but a valid target costs nothing and removes the question. */
static struct shim_stats_area shim_stats_boot;
struct shim_stats_area *shim_stats = &shim_stats_boot;
static char shim_seg_name[64];
/* Serialises shim_stats_report; cleared in a forked child. */
static atomic_flag shim_report_busy = ATOMIC_FLAG_INIT;
/* The name this image's report was written under; "" until it was. A later
 * report of the same image (at exit after an exec that failed) replaces it. */
static char shim_report_name[NAME_MAX + 1];

static const char *const ctr_names[SHIM_C_COUNT] = {
#define CTR_KEY(id, key, head, doc) [SHIM_C_##id] = key,
    SHIM_COUNTERS(CTR_KEY)
#undef CTR_KEY
};

const char *shim_ctr_name(enum shim_ctr c)
{
    return ctr_names[c];
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * The segment is named after the owner, the pid namespace and the pid:
 * containers that share /dev/shm (an IPC namespace) but not a pid namespace
 * reuse each other's pid numbers, and a name without the namespace would let
 * one process take over, or a reader reap, another's segment. 0 when the
 * namespace cannot be read (no /proc).
 */
static unsigned long long pid_namespace(void)
{
    struct stat st;

    return stat("/proc/self/ns/pid", &st) == 0 ? (unsigned long long)st.st_ino : 0;
}

/* A fresh shared segment for this pid; NULL (logged) if it cannot be made. */
static struct shim_stats_area *map_live_segment(void)
{
    struct shim_stats_area *a;
    int fd;

    snprintf(shim_seg_name, sizeof(shim_seg_name), "/teshim-%u-%llu-%d", (unsigned)getuid(),
             pid_namespace(), (int)getpid());
    fd = shm_open(shim_seg_name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST) {
        /* Left by an earlier process with the same pid: it is dead (we are
         * this pid now), so the segment is stale. */
        shm_unlink(shim_seg_name);
        fd = shm_open(shim_seg_name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    }
    if (fd < 0) {
        shim_log_once(POL_LOG_INFO, "live statistics off: shm_open %s: %m", shim_seg_name);
        goto err;
    }
    if (ftruncate(fd, sizeof(*a)) != 0) {
        shim_log_once(POL_LOG_INFO, "live statistics off: ftruncate %s: %m", shim_seg_name);
        goto err_unlink;
    }
    a = mmap(NULL, sizeof(*a), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (a == MAP_FAILED) {
        shim_log_once(POL_LOG_INFO, "live statistics off: mmap %s: %m", shim_seg_name);
        goto err_unlink;
    }
    close(fd);
    return a;

err_unlink:
    shm_unlink(shim_seg_name);
    close(fd);
err:
    shim_seg_name[0] = '\0';
    return NULL;
}

static struct shim_stats_area *map_area(const struct pol_config *cfg)
{
    struct shim_stats_area *a = NULL;

    if (pol_int(cfg, POL_STATS_LIVE))
        a = map_live_segment();
    if (!a) {
        a = mmap(NULL, sizeof(*a), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (a == MAP_FAILED)
            a = &shim_stats_boot;
    }
    return a;
}

static void fill_header(struct shim_stats_area *a, const struct pol_config *cfg)
{
    a->version = SHIM_STATS_LAYOUT;
    a->pid = (int32_t)getpid();
    a->nhooks = SHIM_HK_COUNT;
    snprintf(a->program, sizeof(a->program), "%s", cfg->program);
    snprintf(a->arm, sizeof(a->arm), "%s", pol_arm_name(cfg->arm));
    snprintf(a->gate, sizeof(a->gate), "%s", pol_gate_name(cfg->gate));
    a->policy_hash = cfg->hash;
    a->start_ns = now_ns();
    memset(&a->ctl, 0, sizeof(a->ctl));
    a->ctl.killed = cfg->gate == POL_GATE_KILLED;
    a->ctl.check_interval_ms = (uint64_t)pol_int(cfg, POL_ROLLOUT_CHECK_INTERVAL_MS);
    a->ctl.last_check_ns = a->start_ns;
    /* Readers trust the area only once the magic is there. */
    atomic_thread_fence(memory_order_release);
    a->magic = SHIM_STATS_MAGIC;
}

/*
 * Remove the segments of this user's processes of this pid namespace that
 * are gone. A process that ends without running destructors (SIGKILL, a
 * forked child leaving with _exit, as Python's multiprocessing workers do)
 * leaves its segment behind; each process start under teshim clears them, so
 * they cannot pile up on a host where nobody runs `teshim stats --live`. Only
 * at start, bounded, and never in a forked child.
 */
static void reap_stale_segments(void)
{
    unsigned long long ns = pid_namespace();
    char prefix[64], name[320];
    unsigned scanned = 0;
    struct dirent *e;
    DIR *d;

    if (!ns)
        return; /* pids cannot be judged without knowing their namespace */
    int n = snprintf(prefix, sizeof(prefix), "teshim-%u-%llu-", (unsigned)getuid(), ns);
    d = opendir("/dev/shm");
    if (!d)
        return;
    while ((e = readdir(d)) && scanned++ < 4096) {
        char *end;
        if (strncmp(e->d_name, prefix, (size_t)n) != 0)
            continue;
        long pid = strtol(e->d_name + n, &end, 10);
        if (*end || pid <= 0 || pid > 0x7fffffff || pid == (long)getpid())
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        snprintf(name, sizeof(name), "/%s", e->d_name);
        shm_unlink(name); /* fails harmlessly if another process was first */
    }
    closedir(d);
}

void shim_stats_init(const struct pol_config *cfg)
{
    if (pol_int(cfg, POL_STATS_LIVE))
        reap_stale_segments();
    struct shim_stats_area *a = map_area(cfg);

    if (a != &shim_stats_boot)
        memcpy(a->hooks, shim_stats_boot.hooks, sizeof(a->hooks));
    fill_header(a, cfg);
    shim_stats = a;
}

void shim_stats_atfork_child(const struct pol_config *cfg)
{
    /* The parent's segment is shared with us: the child counts in its own,
     * from zero, under its own pid. Only this thread exists after fork. */
    struct shim_stats_area *a = map_area(cfg);

    if (a == shim_stats)
        memset(a->hooks, 0, sizeof(a->hooks));
    fill_header(a, cfg);
    shim_stats = a;
    /* A report of the parent is not ours to replace, and a writer busy in
     * another thread at fork time does not exist here. */
    shim_report_name[0] = '\0';
    atomic_flag_clear(&shim_report_busy);
    shim_ibv_knob_reset();
}

void shim_stats_control(const struct pol_config *cfg, bool killed, uint64_t check_ns, bool changed,
                        bool rejected)
{
    struct shim_stats_area *a = shim_stats;
    uint32_t seq = atomic_load_explicit(&a->ctl.seq, memory_order_relaxed);

    /* One writer (the checking thread); a reader that copied an odd seq,
     * or a different one after, reads again. */
    atomic_store_explicit(&a->ctl.seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    if (changed) {
        snprintf(a->arm, sizeof(a->arm), "%s", pol_arm_name(cfg->arm));
        snprintf(a->gate, sizeof(a->gate), "%s", pol_gate_name(cfg->gate));
        a->policy_hash = cfg->hash;
        a->ctl.changes++;
        a->ctl.last_change_ns = check_ns;
    }
    a->ctl.rejected += rejected;
    a->ctl.killed = killed;
    a->ctl.check_interval_ms = (uint64_t)pol_int(cfg, POL_ROLLOUT_CHECK_INTERVAL_MS);
    a->ctl.last_check_ns = check_ns;
    atomic_store_explicit(&a->ctl.seq, seq + 2, memory_order_release);
}

void shim_stats_fini(void)
{
    if (shim_seg_name[0])
        shm_unlink(shim_seg_name);
    shim_seg_name[0] = '\0';
}

/* Append printf output to a fixed buffer; the length saturates. */
struct jbuf {
    char *p;
    size_t len, cap;
};

static void jput(struct jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void jput(struct jbuf *b, const char *fmt, ...)
{
    va_list ap;

    if (b->len >= b->cap)
        return;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        b->len += (size_t)n;
}

static void jstr(struct jbuf *b, const char *s)
{
    jput(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            jput(b, "\\%c", c);
        else if (c < 0x20)
            jput(b, "\\u%04x", c);
        else
            jput(b, "%c", c);
    }
    jput(b, "\"");
}

/* The program name as it goes into a file name: argv[0] is the caller's to
 * choose (in a setuid program, another user's), so only [A-Za-z0-9._+-]. */
static void file_safe(char *out, size_t cap, const char *in)
{
    size_t n = 0;

    for (; *in && n + 1 < cap; in++, n++) {
        char c = *in;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '+' || c == '-';
        out[n] = ok ? c : '_';
    }
    out[n] = '\0';
    if (n == 0 || strcmp(out, ".") == 0 || strcmp(out, "..") == 0)
        snprintf(out, cap, "unknown");
}

/* 64 unpredictable bits for a temporary name; clock and pid mixed in when
 * the kernel has no entropy yet (O_EXCL keeps even that safe: a guessed
 * name fails the create, it is never followed). */
static uint64_t tmp_random(void)
{
    static _Atomic uint64_t seq;
    uint64_t r = 0;

    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r)) {
        r = now_ns() ^ ((uint64_t)getpid() << 32) ^ atomic_fetch_add(&seq, 1);
        r *= 0x9e3779b97f4a7c15ull;
    }
    return r;
}

static int write_all(int fd, const char *p, size_t len)
{
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, p + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        if (w == 0)
            return -EIO;
        off += (size_t)w;
    }
    return 0;
}

/*
 * Give the written temporary file its report name without replacing anyone
 * else's file: teshim-PROG-PID.json, or teshim-PROG.N-PID.json when that is
 * taken (the same pid after an exec of the same program, or a name planted
 * by another user). The image's own earlier report is replaced. 0 or -errno.
 */
static int report_place(int dfd, const char *tmp, const char *prog, char *name, size_t cap)
{
    int pid = (int)getpid();

    if (shim_report_name[0]) {
        snprintf(name, cap, "%s", shim_report_name);
        return renameat(dfd, tmp, dfd, name) == 0 ? 0 : -errno;
    }
    for (int k = 0; k < 100; k++) {
        int n = k ? snprintf(name, cap, "teshim-%s.%d-%d.json", prog, k, pid)
                  : snprintf(name, cap, "teshim-%s-%d.json", prog, pid);
        if (n < 0 || (size_t)n >= cap)
            return -ENAMETOOLONG;
        if (renameat2(dfd, tmp, dfd, name, RENAME_NOREPLACE) == 0)
            return 0;
        if (errno == EINVAL || errno == ENOSYS) {
            /* A file system without RENAME_NOREPLACE: link() fails on an
             * existing name too. */
            if (linkat(dfd, tmp, dfd, name, 0) == 0) {
                unlinkat(dfd, tmp, 0);
                return 0;
            }
        }
        if (errno != EEXIST)
            return -errno;
    }
    return -EEXIST;
}

/* Write body as a report into dir; every failure is logged once here. */
static void report_write(const char *dir, const char *program, const char *body, size_t len)
{
    char prog[POL_NAME_MAX], tmp[NAME_MAX + 1], name[NAME_MAX + 1];
    int dfd, fd = -1, rc;

    dfd = shim_dir_open("stats.dir", dir, true, NULL);
    if (dfd < 0)
        return; /* logged, naming the cause */
    file_safe(prog, sizeof(prog), program);
    for (int tries = 0; fd < 0 && tries < 8; tries++) {
        snprintf(tmp, sizeof(tmp), ".teshim-%s-%d.%016llx.tmp", prog, (int)getpid(),
                 (unsigned long long)tmp_random());
        fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC,
                    0644);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        shim_warn("stats report %s/%s: %m", dir, tmp);
        goto out_close_dir;
    }
    rc = shim_file_check("stats report", tmp, fd, false);
    if (rc == 0) {
        rc = write_all(fd, body, len);
        if (rc)
            shim_warn("stats report %s/%s: %s", dir, tmp, strerror(-rc));
    }
    close(fd);
    if (rc == 0) {
        rc = report_place(dfd, tmp, prog, name, sizeof(name));
        if (rc)
            shim_warn("stats report %s/%s: %s", dir, name, strerror(-rc));
        else
            snprintf(shim_report_name, sizeof(shim_report_name), "%s", name);
    }
    if (rc)
        unlinkat(dfd, tmp, 0);
out_close_dir:
    close(dfd);
}

/* The knobs the host set itself, and who won each time one met a call
 * teshim would have changed. */
static void report_host_knobs(struct jbuf *b, const struct pol_config *cfg)
{
    uint64_t host[POL_NKNOBS], teshim[POL_NKNOBS];
    bool first = true;

    shim_ibv_knob_stats(host, teshim);
    for (int k = 0; k < POL_NKNOBS; k++) {
        const struct pol_host_knob *hk = &cfg->host_knobs[k];
        if (!hk->env[0])
            continue;
        jput(b, "%s\n    \"%s\": {\"env\": ", first ? ",\n  \"host_knobs\": {" : ",",
             pol_knob_name((enum pol_knob)k));
        jstr(b, hk->env);
        jput(b, ", \"value\": ");
        jstr(b, hk->value);
        jput(b, ", \"host_won\": %llu, \"teshim_won\": %llu}", (unsigned long long)host[k],
             (unsigned long long)teshim[k]);
        first = false;
    }
    if (!first)
        jput(b, "\n  }");
}

/*
 * stats.report = applied: only a process where a policy acted on a call
 * (injected, observed, fell back), or whose configuration changed at run
 * time, reports; one where every call was skipped or not applicable has
 * nothing to say (81 reports for one python3 started through pyenv). The
 * program teshim run started (TESHIM_RUN_PID, this pid; an exec keeps it)
 * reports either way: its user asked for it.
 */
static bool report_wanted(const struct pol_config *cfg)
{
    const struct shim_stats_area *a = shim_stats;
    const struct shim_change *ch;
    const char *run_pid;

    if (pol_int(cfg, POL_STATS_REPORT) == POL_REPORT_ALL || shim_reload_changes(&ch, NULL))
        return true;
    for (int h = 0; h < SHIM_HK_COUNT; h++)
        if (atomic_load(&a->hooks[h].c[SHIM_C_INJECTED]) ||
            atomic_load(&a->hooks[h].c[SHIM_C_OBSERVED]) ||
            atomic_load(&a->hooks[h].c[SHIM_C_FALLBACKS]))
            return true;
    /* Read at the end of the process, from its own thread: the host's
     * environment is its own to read here. */
    run_pid = getauxval(AT_SECURE) ? NULL : getenv("TESHIM_RUN_PID");
    return run_pid && strtol(run_pid, NULL, 10) == (long)getpid();
}

void shim_stats_report(const struct pol_config *cfg)
{
    const char *dir = pol_str(cfg, POL_STATS_DIR);
    static char body[64 * 1024];
    struct jbuf b = {body, 0, sizeof(body)};
    const struct shim_stats_area *a = shim_stats;

    if (!*dir || !report_wanted(cfg))
        return;
    /* Not this process's counters: a vfork child (about to exec) shares the
     * parent's memory, and a child made by a raw clone never refilled them. */
    if (a->pid != (int32_t)getpid())
        return;
    /* One writer at a time of the one body buffer (exit racing an exec on
     * another thread); the loser's report would say the same. */
    if (atomic_flag_test_and_set(&shim_report_busy))
        return;
    jput(&b, "{\n  \"teshim_version\": ");
    jstr(&b, TESHIM_VERSION);
    jput(&b, ",\n  \"program\": ");
    jstr(&b, cfg->program);
    jput(&b, ",\n  \"host\": ");
    jstr(&b, cfg->host);
    jput(&b,
         ",\n  \"pid\": %d,\n  \"arm\": \"%s\",\n  \"gate\": \"%s\",\n  \"policy_hash\": "
         "\"%016llx\",\n  \"config_file\": ",
         (int)getpid(), pol_arm_name(cfg->arm), pol_gate_name(cfg->gate),
         (unsigned long long)cfg->hash);
    jstr(&b, cfg->config_path);
    jput(&b, ",\n  \"profile\": ");
    jstr(&b, pol_str(cfg, POL_PROFILE));
    jput(&b, ",\n  \"config_warnings\": %u,\n  \"start_ns\": %llu,\n  \"end_ns\": %llu,\n",
         cfg->nwarnings, (unsigned long long)a->start_ns, (unsigned long long)now_ns());
    jput(&b, "  \"hooks\": {");
    for (int h = 0; h < SHIM_HK_COUNT; h++) {
        jput(&b, "%s\n    \"%s@%s\": {", h ? "," : "", shim_hooks[h].name, shim_hooks[h].version);
        for (int c = 0; c < SHIM_C_COUNT; c++)
            jput(&b, "%s\"%s\": %llu", c ? ", " : "", ctr_names[c],
                 (unsigned long long)atomic_load(&a->hooks[h].c[c]));
        jput(&b, "}");
    }
    jput(&b, "\n  }");
    if (pol_int(cfg, POL_CUDA_REGISTER_CACHE)) {
        struct shim_rc_stats rc;
        shim_cuda_rc_stats(&rc);
        jput(&b,
             ",\n  \"cuda_register_cache\": {\"registered\": %llu, \"released\": %llu, "
             "\"evicted\": %llu, \"unwatched\": %llu, \"app_register\": %llu}",
             (unsigned long long)rc.registered, (unsigned long long)rc.released,
             (unsigned long long)rc.evicted, (unsigned long long)rc.unwatched,
             (unsigned long long)rc.app_register);
    }
    report_host_knobs(&b, cfg);
    const struct shim_change *ch;
    unsigned dropped, nch = shim_reload_changes(&ch, &dropped);
    jput(&b, ",\n  \"changes_dropped\": %u,\n  \"changes\": [", dropped);
    for (unsigned i = 0; i < nch; i++) {
        jput(&b,
             "%s\n    {\"time_ns\": %llu, \"what\": \"%s\", \"gate_before\": \"%s\", "
             "\"gate_after\": \"%s\", \"policy_hash_before\": \"%016llx\", "
             "\"policy_hash_after\": \"%016llx\"",
             i ? "," : "", (unsigned long long)ch[i].time_ns, shim_change_name(ch[i].what),
             pol_gate_name(ch[i].gate_before), pol_gate_name(ch[i].gate_after),
             (unsigned long long)ch[i].hash_before, (unsigned long long)ch[i].hash_after);
        if (ch[i].what == SHIM_CHANGE_CONFIG_REJECTED)
            jput(&b, ", \"problems\": %u", ch[i].problems);
        jput(&b, "}");
    }
    jput(&b, "%s]", nch ? "\n  " : "");
    jput(&b, "\n}\n");
    if (b.len >= b.cap)
        shim_warn("stats report larger than %zu bytes; not written", sizeof(body));
    else
        report_write(dir, cfg->program, body, b.len);
    atomic_flag_clear(&shim_report_busy);
}
