/*
 * Initialisation, real-function resolution and the re-entry guard.
 *
 * Any hook may run before our constructor (another library's constructor
 * calls it), so every hook initialises lazily through shim_enter(). The
 * thread-local depth counter is raised before initialisation starts: a hook
 * reached from inside teshim itself, or from the real function it wraps,
 * passes straight through instead of recursing or dead-locking on the once.
 */
#include "shim.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* Every column is named here, without "...": a row that lacks one does
 * not compile. BENIGN is a parenthesised list, possibly
 * empty; the leading 0 keeps "()" a valid initializer and matches no code. */
const struct shim_hook_info shim_hooks[SHIM_HK_COUNT] = {
#define HOOK(l, tag, ver, def, ret, fn, params, args, res, codes, missing, shape)                  \
    [SHIM_HK_##fn##_##tag] = {.name = #fn,                                                         \
                              .version = ver,                                                      \
                              .lib = SHIM_LIB_##l,                                                 \
                              .result = SHIM_RESULT_##res,                                         \
                              .benign = {0, SHIM_UNPAREN codes}},
#include "shim_hooks.def"
#undef HOOK
};

static _Atomic(void *) shim_real_fns[SHIM_HK_COUNT];

static void ctr_add(enum shim_hook_id id, enum shim_ctr c, uint64_t n)
{
    atomic_fetch_add_explicit(&shim_stats->hooks[id].c[c], n, memory_order_relaxed);
}

static __thread int shim_depth __attribute__((tls_model("initial-exec")));

/*
 * The configuration in force. Hooks read it through shim_cur, the snapshot
 * taken when the outermost hook of this thread entered: one load per call,
 * so a hook never mixes two configurations. Before the first load it points
 * at an all-zero snapshot (never read: shim_enter initialises first).
 */
static const struct shim_snap shim_zero_snap;
static _Atomic(const struct shim_snap *) shim_pub = &shim_zero_snap;
static __thread const struct shim_snap *shim_cur __attribute__((tls_model("initial-exec")));
static pthread_once_t shim_once = PTHREAD_ONCE_INIT;
static atomic_bool shim_ready;

void *shim_dlvsym(const char *name, const char *version)
{
    void *fn = dlvsym(RTLD_NEXT, name, version);

    /* A host library built without symbol versions still answers by name. */
    if (!fn)
        fn = dlsym(RTLD_NEXT, name);
    return fn;
}

void *shim_resolve(enum shim_hook_id id)
{
    void *fn = atomic_load_explicit(&shim_real_fns[id], memory_order_acquire);

    if (fn)
        return fn;
    fn = dlvsym(RTLD_NEXT, shim_hooks[id].name, shim_hooks[id].version);
    if (!fn) {
        /* Not cached: a library opened later with RTLD_GLOBAL may bring it. */
        /* What that means is the hook's to say: some fail the call, the CUDA
         * hooks serve it with the other runtime version. */
        shim_debug("%s@%s not found in the host's libraries", shim_hooks[id].name,
                   shim_hooks[id].version);
        return NULL;
    }
    atomic_store_explicit(&shim_real_fns[id], fn, memory_order_release);
    return fn;
}

void *shim_resolve_in(enum shim_hook_id id, const void *obj)
{
    void *fn = shim_resolve(id), *h;
    Dl_info info;

    if (fn || !obj || !dladdr(obj, &info) || !info.dli_fname)
        return fn;
    /* The object's own handle: its lookups search it and its dependencies,
     * never the preloaded libteshim.so. */
    h = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    if (!h)
        return NULL;
    fn = dlvsym(h, shim_hooks[id].name, shim_hooks[id].version);
    dlclose(h);
    if (!fn || shim_is_own(fn))
        return NULL;
    return shim_adopt_real(id, fn);
}

/*
 * Diagnostics of the load are held here until log.level and log.file are
 * known (they are configuration too), then written through the log like any
 * other message. Filled and drained inside shim_do_init, under the once.
 */
struct shim_held_diags {
    char text[8192]; /* level byte, message, NUL; repeated */
    size_t len;
    unsigned dropped;
};
static struct shim_held_diags shim_held;

static void shim_diag(void *arg, enum pol_log_level level, const char *msg)
{
    struct shim_held_diags *h = arg;
    size_t n = strlen(msg) + 1;

    if (h->len + 1 + n > sizeof(h->text)) {
        h->dropped++;
        return;
    }
    h->text[h->len++] = (char)level;
    memcpy(h->text + h->len, msg, n);
    h->len += n;
}

/*
 * One warning per cause per process tree: a process passes the hashes of
 * the configuration problems it reported (and those its parent had) to the
 * images it execs, in TESHIM_WARNED (shim_exec.c); a process that inherits
 * a hash stays silent about that problem. A forked child inherits the list
 * in memory and does not load again. 36 copies of the same warning for one
 * python3 started through pyenv were the reason.
 */
#define SHIM_WARNED_MAX 32
#define SHIM_WARNED_VAR "TESHIM_WARNED="
static char shim_warned[sizeof(SHIM_WARNED_VAR) + SHIM_WARNED_MAX * 9];
static unsigned shim_nwarned;

static uint32_t diag_hash(const char *msg)
{
    uint32_t h = 2166136261u;

    for (; *msg; msg++) {
        h ^= (unsigned char)*msg;
        h *= 16777619u;
    }
    return h;
}

static bool warned_has(const char *list, uint32_t h)
{
    char hex[9];

    snprintf(hex, sizeof(hex), "%08x", h);
    for (const char *p = list; p && *p; p += strcspn(p, ","), p += *p == ',')
        if (strncmp(p, hex, 8) == 0 && (p[8] == ',' || p[8] == '\0'))
            return true;
    return false;
}

static void warned_add(uint32_t h)
{
    size_t n = strlen(shim_warned);

    if (shim_nwarned == SHIM_WARNED_MAX || warned_has(shim_warned + strlen(SHIM_WARNED_VAR), h))
        return;
    snprintf(shim_warned + n, sizeof(shim_warned) - n, "%s%08x", shim_nwarned ? "," : "", h);
    shim_nwarned++;
}

const char *shim_warned_mark(void)
{
    return shim_nwarned ? shim_warned : NULL;
}

static void shim_flush_diags(struct shim_held_diags *h, const char *inherited)
{
    unsigned quiet = 0;

    snprintf(shim_warned, sizeof(shim_warned), "%s", SHIM_WARNED_VAR);
    shim_nwarned = 0;
    for (size_t off = 0; off < h->len;) {
        enum pol_log_level level = (enum pol_log_level)h->text[off];
        const char *msg = h->text + off + 1;
        uint32_t hash = diag_hash(msg);
        if (warned_has(inherited, hash))
            quiet++;
        else
            shim_log(level, "%s", msg);
        warned_add(hash);
        off += 1 + strlen(msg) + 1;
    }
    if (quiet)
        shim_debug("%u configuration problem%s already reported by a parent process", quiet,
                   quiet == 1 ? "" : "s");
    if (h->dropped)
        shim_warn("%u more configuration problems not shown", h->dropped);
    h->len = 0;
    h->dropped = 0;
}

static void shim_program_name(char *buf, size_t len)
{
    const char *p = program_invocation_short_name;

    if (p && *p) {
        snprintf(buf, len, "%s", p);
        return;
    }
    snprintf(buf, len, "unknown");
}

static void shim_atfork_child(void)
{
    shim_mem_atfork_child();
    shim_log_reinit_after_fork();
    shim_reload_atfork_child();
    shim_stats_atfork_child(shim_cfg());
}

static void shim_do_init(void)
{
    struct utsname un;
    char prog[POL_NAME_MAX];
    struct pol_sources src = {0};

    shim_program_name(prog, sizeof(prog));
    /* A setuid/setgid program (or one with file capabilities) runs with its
     * caller's environment, the caller being another user: under a
     * system-wide preload (/etc/ld.so.preload) none of it may choose files
     * this process writes as its owner. The dynamic linker's own test. */
    src.secure = getauxval(AT_SECURE) != 0;
    src.environ = environ;
    src.program = prog;
    src.host = uname(&un) == 0 ? un.nodename : "unknown";
    src.diag = shim_diag;
    src.diag_arg = &shim_held;

    struct pol_config *boot = shim_reload_boot_cfg();
    pol_load(boot, &src);
    shim_log_init(boot);
    shim_flush_diags(&shim_held, src.secure ? NULL : getenv("TESHIM_WARNED"));
    shim_publish(shim_reload_start(&src));
    const struct pol_config *cfg = shim_cfg();
    shim_stats_init(cfg);
    shim_mem_init(cfg);
    pthread_atfork(NULL, NULL, shim_atfork_child);
    if (src.secure)
        shim_info("setuid/setgid program: environment and user config files not read");
    shim_info("loaded: arm %s, gate %s, policy %016llx%s%s", pol_arm_name(cfg->arm),
              pol_gate_name(cfg->gate), (unsigned long long)cfg->hash,
              cfg->config_path[0] ? ", config " : "", cfg->config_path);
    atomic_store_explicit(&shim_ready, true, memory_order_release);
}

static void shim_init(void)
{
    int saved = errno;

    shim_depth++;
    pthread_once(&shim_once, shim_do_init);
    shim_depth--;
    errno = saved;
}

static uint64_t mono_coarse_ns(void)
{
    struct timespec ts;

    /* The vDSO answers without a system call; its tick (1-4 ms) is far
     * below any useful check interval. */
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

bool shim_enter(enum shim_hook_id id)
{
    if (shim_depth > 0)
        return false;
    if (!atomic_load_explicit(&shim_ready, memory_order_acquire))
        shim_init();
    shim_depth++;
    ctr_add(id, SHIM_C_CALLS, 1);
    /* Inside the hook (depth raised): what the check calls passes through. */
    if (atomic_load_explicit(&shim_reload_due_ns, memory_order_relaxed) != UINT64_MAX) {
        uint64_t now = mono_coarse_ns();
        if (now >= atomic_load_explicit(&shim_reload_due_ns, memory_order_relaxed))
            shim_reload_check(now);
    }
    shim_cur = atomic_load_explicit(&shim_pub, memory_order_acquire);
    return true;
}

bool shim_enter_internal(void)
{
    if (shim_depth > 0)
        return false;
    shim_depth++;
    return true;
}

void shim_leave(void)
{
    if (--shim_depth == 0)
        shim_cur = NULL;
}

const struct shim_snap *shim_snap(void)
{
    const struct shim_snap *s = shim_cur;

    return s ? s : atomic_load_explicit(&shim_pub, memory_order_acquire);
}

const struct pol_config *shim_cfg(void)
{
    return &shim_snap()->cfg;
}

void shim_publish(const struct shim_snap *s)
{
    atomic_store_explicit(&shim_pub, s, memory_order_release);
}

enum shim_ctr shim_verdict_ctr(enum pol_verdict v)
{
    switch (v) {
    case POL_INJECT:
        return SHIM_C_INJECTED;
    case POL_OBSERVED:
        return SHIM_C_OBSERVED;
    case POL_SKIP_POLICY:
        return SHIM_C_SKIPPED;
    case POL_NOT_APPLICABLE:
        break;
    }
    return SHIM_C_NOT_APPLICABLE;
}

/* The failure code of a call by its row's convention; 0 on success. A
 * failure whose errno is 0 (a library that forgot to set it) is still a
 * failure: -1 stands for the unknown code. */
static int result_code(enum shim_result conv, intptr_t rv, int err)
{
    bool failed = false;

    switch (conv) {
    case SHIM_RESULT_NEG1_ERRNO:
        failed = rv == -1;
        break;
    case SHIM_RESULT_NULL_ERRNO:
        failed = rv == 0;
        break;
    case SHIM_RESULT_NONZERO_ERRNO:
        failed = rv != 0;
        break;
    case SHIM_RESULT_RETURNED:
        return rv == 0 ? 0 : rv == (int)rv ? (int)rv : -1;
    }
    if (!failed)
        return 0;
    return err ? err : -1;
}

static bool is_benign(enum shim_hook_id id, int code)
{
    for (int i = 0; i < SHIM_BENIGN_MAX; i++)
        if (shim_hooks[id].benign[i] == code)
            return true;
    return false;
}

void shim_count_result(enum shim_hook_id id, enum shim_ctr outcome, intptr_t rv, int err)
{
    int code = result_code(shim_hooks[id].result, rv, err);
    enum shim_ctr c = outcome;

    if (code != 0 && !is_benign(id, code))
        c = SHIM_C_ERRORS;
    else if (outcome == SHIM_C_UNDECIDED)
        c = code != 0 ? SHIM_C_WOULD_BLOCK : SHIM_C_NOT_APPLICABLE;
    ctr_add(id, c, 1);
}

void shim_count_redo(enum shim_hook_id id, enum shim_ctr was, intptr_t rv, int err)
{
    ctr_add(id, was, (uint64_t)-1); /* unsigned wrap: one less */
    shim_count_result(id, was, rv, err);
}

void shim_count_call(enum shim_hook_id id)
{
    ctr_add(id, SHIM_C_CALLS, 1);
}

void shim_count_bytes(enum shim_hook_id id, uint64_t n)
{
    ctr_add(id, SHIM_C_BYTES, n);
}

__attribute__((constructor)) static void shim_constructor(void)
{
    shim_init();
}

__attribute__((destructor)) static void shim_destructor(void)
{
    if (!atomic_load_explicit(&shim_ready, memory_order_acquire))
        return;
    shim_depth++;
    shim_stats_report(shim_cfg());
    shim_stats_fini();
    shim_depth--;
}

void *shim_adopt_real(enum shim_hook_id id, void *fn)
{
    void *expected = NULL;

    if (!fn)
        return atomic_load_explicit(&shim_real_fns[id], memory_order_acquire);
    if (atomic_compare_exchange_strong_explicit(&shim_real_fns[id], &expected, fn,
                                                memory_order_acq_rel, memory_order_acquire))
        return fn;
    return expected;
}

/* Every hook body, declared with default visibility (their own files
 * define them). */
#define HOOK(lib, ...) SHIM_PROTO(__VA_ARGS__)
#include "shim_hooks.def"
#undef HOOK

static void *const shim_hook_addrs[SHIM_HK_COUNT] = {
#define HOOK(l, tag, ver, def, ret, fn, ...)                                                       \
    [SHIM_HK_##fn##_##tag] = (void *)shim_hook_##fn##_##tag,
#include "shim_hooks.def"
#undef HOOK
};

void *shim_hook_addr(enum shim_hook_id id)
{
    return shim_hook_addrs[id];
}

bool shim_is_own(const void *p)
{
    static _Atomic(uintptr_t) own_base;
    uintptr_t base = atomic_load_explicit(&own_base, memory_order_relaxed);
    Dl_info a, b;

    if (!base) {
        if (!dladdr((void *)shim_is_own, &a))
            return false;
        base = (uintptr_t)a.dli_fbase;
        atomic_store_explicit(&own_base, base, memory_order_relaxed);
    }
    return dladdr(p, &b) && (uintptr_t)b.dli_fbase == base;
}

bool shim_in_library(const void *p, const char *prefix)
{
    Dl_info info;
    const char *base;

    if (!dladdr(p, &info) || !info.dli_fname)
        return false;
    base = strrchr(info.dli_fname, '/');
    base = base ? base + 1 : info.dli_fname;
    return strncmp(base, prefix, strlen(prefix)) == 0;
}
