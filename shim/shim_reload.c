/*
 * Run-time control: the kill-switch file and the config file are checked
 * while the host runs, and a change is published between calls.
 *
 * When. No thread of ours runs in the host (a thread would change what the
 * host sees: its thread count, fork's cost, seccomp filters). Instead the
 * first hooked call after rollout.check_interval_ms does the check: a
 * stat() of the kill-switch file and of the config file(s) a process would
 * read. Only a change costs more (the file is read and parsed by the thread
 * that saw it). A process that makes no hooked call does not check, and
 * needs not: nothing of it is changed by a policy meanwhile. Its live
 * segment shows when it last checked.
 *
 * How. A configuration and its killed twin (the same, gate "killed") are
 * built together and never change once published. shim_enter() loads the
 * published pointer once per call (shim_cur), so a call reads one
 * configuration from its start to its end; a swap is one release store.
 *
 * Why nothing is freed. A hook may hold its snapshot across a real call
 * that blocks without bound (connect, accept, a CUDA synchronisation), so
 * no grace period bounded by time is safe, and a reader count or hazard
 * pointer would add an atomic read-modify-write or a full fence on a shared
 * line to every hooked call. Instead snapshots are kept for the life of the
 * process and deduplicated: a configuration seen before (a rollback, a kill
 * switch toggled on and off) is published again, not rebuilt. At most
 * SHIM_PAIRS_MAX distinct configurations are built per process (about
 * 45 KiB each); past that, edits are refused with a warning until the next
 * start, and the kill switch still works (it never allocates).
 */
#include "shim.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SHIM_PAIRS_MAX 32

struct shim_pair {
    struct shim_snap live;   /* the gate as the configuration decides it */
    struct shim_snap killed; /* the same, gate killed */
};

/* A file as stat() saw it: a change of any field is a change. */
struct file_sig {
    bool exists;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
};

/* The config files a process would read: TESHIM_CONFIG, or /etc/teshim.conf
 * and the user's file (a file appearing at the first path wins). */
#define SHIM_WATCH_MAX 2

struct reload_state {
    struct shim_pair boot; /* the first configuration: static, no allocation at start */
    struct shim_pair *pairs[SHIM_PAIRS_MAX];
    unsigned npairs;
    const struct shim_pair *cur;
    bool killed;
    uint64_t interval_ns; /* 0: never */
    char watch[SHIM_WATCH_MAX][PATH_MAX];
    struct file_sig sig[SHIM_WATCH_MAX];
    /* The sources for a reload: the environment as it was at start (the
     * host may change its own environment meanwhile; reading it from
     * another thread would race setenv). */
    struct pol_sources src;
    char env_text[8192];
    char *env[128];
    char host[POL_NAME_MAX], program[POL_NAME_MAX];
    struct shim_change changes[SHIM_CHANGES_MAX];
    unsigned nchanges, dropped;
    bool limit_warned;
};

static struct reload_state rl;
static struct pol_config rl_next; /* a reload's scratch: too big for a hook's stack */
static atomic_flag rl_busy = ATOMIC_FLAG_INIT;
_Atomic uint64_t shim_reload_due_ns = UINT64_MAX;

static const char *const change_names[] = {
    [SHIM_CHANGE_KILL_ON] = "kill_on",
    [SHIM_CHANGE_KILL_OFF] = "kill_off",
    [SHIM_CHANGE_CONFIG] = "config",
    [SHIM_CHANGE_CONFIG_REJECTED] = "config_rejected",
};

const char *shim_change_name(enum shim_change_what w)
{
    return change_names[w];
}

static uint64_t realtime_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sig_read(const char *path, struct file_sig *s)
{
    struct stat st;

    memset(s, 0, sizeof(*s));
    if (!*path || stat(path, &st) != 0)
        return;
    s->exists = true;
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    s->size = st.st_size;
    s->mtime = st.st_mtim;
    s->ctime = st.st_ctim;
}

static bool sig_equal(const struct file_sig *a, const struct file_sig *b)
{
    return a->exists == b->exists && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
           a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

static bool kill_file_present(const struct pol_config *cfg)
{
    struct stat st;
    const char *path = pol_str(cfg, POL_KILL_SWITCH_FILE);

    return *path && stat(path, &st) == 0;
}

static const char *env_get(char *const *envp, const char *name)
{
    size_t n = strlen(name);

    for (; envp && *envp; envp++)
        if (strncmp(*envp, name, n) == 0 && (*envp)[n] == '=')
            return *envp + n + 1;
    return NULL;
}

/* Keep what pol_load reads of the environment: TESHIM_*, HOME, XDG_CONFIG_HOME. */
static void copy_env(char *const *envp)
{
    size_t used = 0, n = 0;

    for (; envp && *envp && n + 1 < sizeof(rl.env) / sizeof(rl.env[0]); envp++) {
        const char *e = *envp;
        if (strncmp(e, "TESHIM_", 7) != 0 && strncmp(e, "HOME=", 5) != 0 &&
            strncmp(e, "XDG_CONFIG_HOME=", 16) != 0)
            continue;
        size_t len = strlen(e) + 1;
        if (used + len > sizeof(rl.env_text)) {
            shim_warn("environment too large to keep for run-time reloads; %s and later "
                      "TESHIM_* variables are not applied again",
                      e);
            break;
        }
        memcpy(rl.env_text + used, e, len);
        rl.env[n++] = rl.env_text + used;
        used += len;
    }
    rl.env[n] = NULL;
}

static void watch_paths(const struct pol_sources *src)
{
    const char *tc = src->secure ? NULL : env_get(src->environ, "TESHIM_CONFIG");

    if (src->config_path)
        snprintf(rl.watch[0], sizeof(rl.watch[0]), "%s", src->config_path);
    else if (tc && *tc)
        snprintf(rl.watch[0], sizeof(rl.watch[0]), "%s", tc);
    else {
        const char *xdg = src->secure ? NULL : env_get(src->environ, "XDG_CONFIG_HOME");
        const char *home = src->secure ? NULL : env_get(src->environ, "HOME");
        snprintf(rl.watch[0], sizeof(rl.watch[0]), "%s",
                 src->etc_path ? src->etc_path : "/etc/teshim.conf");
        if (xdg && *xdg)
            snprintf(rl.watch[1], sizeof(rl.watch[1]), "%s/teshim.conf", xdg);
        else if (home && *home)
            snprintf(rl.watch[1], sizeof(rl.watch[1]), "%s/.config/teshim.conf", home);
    }
    for (int i = 0; i < SHIM_WATCH_MAX; i++)
        sig_read(rl.watch[i], &rl.sig[i]);
}

/* Fill pair p from cfg (copied): the live gate, the killed twin, what the
 * hooks derive from each. */
static void pair_fill(struct shim_pair *p, const struct pol_config *cfg, bool quiet)
{
    if (&p->live.cfg != cfg)
        pol_config_copy(&p->live.cfg, cfg);
    pol_decide_gate(&p->live.cfg, false);
    pol_config_copy(&p->killed.cfg, &p->live.cfg);
    pol_decide_gate(&p->killed.cfg, true);
    shim_sock_derive(&p->live.cfg, &p->live.sock, quiet);
    shim_sock_derive(&p->killed.cfg, &p->killed.sock, true);
}

static const struct shim_snap *pair_pick(const struct shim_pair *p, bool killed)
{
    return killed ? &p->killed : &p->live;
}

static void set_interval(const struct pol_config *cfg, uint64_t now)
{
    rl.interval_ns = (uint64_t)pol_int(cfg, POL_ROLLOUT_CHECK_INTERVAL_MS) * 1000000ull;
    atomic_store_explicit(&shim_reload_due_ns, rl.interval_ns ? now + rl.interval_ns : UINT64_MAX,
                          memory_order_relaxed);
}

struct pol_config *shim_reload_boot_cfg(void)
{
    return &rl.boot.live.cfg;
}

const struct shim_snap *shim_reload_start(const struct pol_sources *src)
{
    struct timespec ts;

    copy_env(src->environ);
    rl.src = *src;
    rl.src.environ = src->secure ? NULL : rl.env;
    snprintf(rl.host, sizeof(rl.host), "%s", src->host ? src->host : "unknown");
    snprintf(rl.program, sizeof(rl.program), "%s", src->program ? src->program : "unknown");
    rl.src.host = rl.host;
    rl.src.program = rl.program;
    rl.src.diag = NULL; /* each reload sets its own */
    watch_paths(src);
    rl.killed = kill_file_present(&rl.boot.live.cfg);
    pair_fill(&rl.boot, &rl.boot.live.cfg, false);
    rl.cur = &rl.boot;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    set_interval(&rl.boot.live.cfg, (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec);
    return pair_pick(rl.cur, rl.killed);
}

/* Diagnostics of a reload go to the log as they come: we are past init. */
static void reload_diag(void *arg, enum pol_log_level level, const char *msg)
{
    const char *path = arg;

    shim_log(level, "config file %s changed: %s", path, msg);
}

static void record(enum shim_change_what what, const struct pol_config *before,
                   const struct pol_config *after, uint64_t after_hash, unsigned problems)
{
    struct shim_change *c;

    if (rl.nchanges == SHIM_CHANGES_MAX) {
        rl.dropped++;
        return;
    }
    c = &rl.changes[rl.nchanges++];
    c->time_ns = realtime_ns();
    c->what = what;
    c->gate_before = before->gate;
    c->gate_after = after->gate;
    c->hash_before = before->hash;
    c->hash_after = after_hash;
    c->problems = problems;
}

static struct shim_pair *pair_find(const struct pol_config *cfg)
{
    for (unsigned i = 0; i <= rl.npairs; i++) {
        struct shim_pair *p = i == 0 ? &rl.boot : rl.pairs[i - 1];
        const struct pol_config *c = &p->live.cfg;
        if (c->hash == cfg->hash && c->arm == cfg->arm && c->gate == cfg->gate &&
            strcmp(c->config_path, cfg->config_path) == 0)
            return p;
    }
    return NULL;
}

/*
 * Read the sources again. The pair to publish, or NULL to keep the one in
 * force: the file has a problem (every one is logged and the last good
 * configuration stays), or nothing that matters changed.
 */
static const struct shim_pair *reload_config(const char *path)
{
    const struct pol_config *cur = &rl.cur->live.cfg;
    struct pol_sources src = rl.src;
    struct shim_pair *p;

    src.diag = reload_diag;
    src.diag_arg = (void *)path;
    pol_load(&rl_next, &src);
    if (rl_next.nfile_warnings) {
        shim_warn("config file %s changed: %u problem%s above; keeping the last good "
                  "configuration (policy %016llx)",
                  path, rl_next.nfile_warnings, rl_next.nfile_warnings == 1 ? "" : "s",
                  (unsigned long long)cur->hash);
        record(SHIM_CHANGE_CONFIG_REJECTED, cur, cur, rl_next.hash, rl_next.nfile_warnings);
        return NULL;
    }
    pol_keep_start_only(&rl_next, cur, reload_diag, (void *)path);
    pol_decide_gate(&rl_next, false);
    p = pair_find(&rl_next);
    if (p)
        return p == rl.cur ? NULL : p;
    if (rl.npairs == SHIM_PAIRS_MAX) {
        if (!rl.limit_warned)
            shim_warn("config file %s changed: %u configurations already loaded in this "
                      "process; keeping policy %016llx until the next start",
                      path, SHIM_PAIRS_MAX + 1, (unsigned long long)cur->hash);
        rl.limit_warned = true;
        record(SHIM_CHANGE_CONFIG_REJECTED, cur, cur, rl_next.hash, 0);
        return NULL;
    }
    p = mmap(NULL, sizeof(*p), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        shim_warn("config file %s changed: no memory for it (%m); keeping policy %016llx", path,
                  (unsigned long long)cur->hash);
        return NULL;
    }
    pair_fill(p, &rl_next, false);
    rl.pairs[rl.npairs++] = p;
    return p;
}

void shim_reload_check(uint64_t now)
{
    const struct shim_pair *next;
    const struct pol_config *before;
    bool killed, changed = false, rejected = false;
    unsigned nchanges;

    if (atomic_flag_test_and_set_explicit(&rl_busy, memory_order_acquire))
        return; /* another thread is checking */
    if (now < atomic_load_explicit(&shim_reload_due_ns, memory_order_relaxed))
        goto out; /* it just did */
    int saved = errno;
    before = &pair_pick(rl.cur, rl.killed)->cfg;
    next = rl.cur;
    nchanges = rl.nchanges;
    for (int i = 0; i < SHIM_WATCH_MAX; i++) {
        struct file_sig s;
        if (!rl.watch[i][0])
            continue;
        sig_read(rl.watch[i], &s);
        if (sig_equal(&s, &rl.sig[i]))
            continue;
        rl.sig[i] = s;
        changed = true;
    }
    if (changed) {
        const struct shim_pair *p = reload_config(rl.watch[0][0] && rl.sig[0].exists ? rl.watch[0]
                                                  : rl.watch[1][0]                   ? rl.watch[1]
                                                                                     : rl.watch[0]);
        rejected = rl.nchanges > nchanges;
        if (p)
            next = p;
    }
    killed = kill_file_present(&next->live.cfg);
    changed = next != rl.cur || killed != rl.killed;
    if (changed) {
        const struct pol_config *after = &pair_pick(next, killed)->cfg;
        if (next != rl.cur)
            record(SHIM_CHANGE_CONFIG, before, after, after->hash, 0);
        if (killed != rl.killed)
            record(killed ? SHIM_CHANGE_KILL_ON : SHIM_CHANGE_KILL_OFF, before, after, after->hash,
                   0);
        shim_info("%s: gate %s -> %s, policy %016llx -> %016llx",
                  killed != rl.killed ? (killed ? "kill switch on" : "kill switch off")
                                      : "configuration changed",
                  pol_gate_name(before->gate), pol_gate_name(after->gate),
                  (unsigned long long)before->hash, (unsigned long long)after->hash);
        rl.cur = next;
        rl.killed = killed;
        shim_publish(pair_pick(next, killed));
    }
    set_interval(&pair_pick(rl.cur, rl.killed)->cfg, now);
    shim_stats_control(&pair_pick(rl.cur, rl.killed)->cfg, rl.killed, realtime_ns(), changed,
                       rejected);
    errno = saved;
out:
    atomic_flag_clear_explicit(&rl_busy, memory_order_release);
}

void shim_reload_atfork_child(void)
{
    /* The thread that was checking does not exist here; the child's report
     * starts at the fork, like its counters. */
    atomic_flag_clear(&rl_busy);
    rl.nchanges = 0;
    rl.dropped = 0;
}

unsigned shim_reload_changes(const struct shim_change **list_p, unsigned *dropped_p)
{
    *list_p = rl.changes;
    if (dropped_p)
        *dropped_p = rl.dropped;
    return rl.nchanges;
}
