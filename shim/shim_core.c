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
#include <unistd.h>

extern char **environ;

const struct shim_hook_info shim_hooks[SHIM_HK_COUNT] = {
#define HOOK(lib, tag, ver, def, ret, name, params, args)                                          \
    [SHIM_HK_##name##_##tag] = {#name, ver, SHIM_LIB_##lib},
#include "shim_hooks.def"
#undef HOOK
};

static _Atomic(void *) shim_real_fns[SHIM_HK_COUNT];

static __thread int shim_depth __attribute__((tls_model("initial-exec")));

static struct pol_config shim_config;
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

static void shim_flush_diags(struct shim_held_diags *h)
{
    for (size_t off = 0; off < h->len;) {
        enum pol_log_level level = (enum pol_log_level)h->text[off];
        const char *msg = h->text + off + 1;
        shim_log(level, "%s", msg);
        off += 1 + strlen(msg) + 1;
    }
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
    shim_log_reinit_after_fork();
    shim_stats_atfork_child(&shim_config);
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

    pol_load(&shim_config, &src);
    shim_log_init(&shim_config);
    shim_flush_diags(&shim_held);
    shim_stats_init(&shim_config);
    pthread_atfork(NULL, NULL, shim_atfork_child);
    if (src.secure)
        shim_info("setuid/setgid program: environment and user config files not read");
    shim_info("loaded: arm %s, gate %s, policy %016llx%s%s", pol_arm_name(shim_config.arm),
              pol_gate_name(shim_config.gate), (unsigned long long)shim_config.hash,
              shim_config.config_path[0] ? ", config " : "", shim_config.config_path);
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

bool shim_enter(enum shim_hook_id id)
{
    if (shim_depth > 0)
        return false;
    if (!atomic_load_explicit(&shim_ready, memory_order_acquire))
        shim_init();
    shim_depth++;
    shim_count(id, SHIM_C_CALLS, 1);
    return true;
}

void shim_leave(void)
{
    shim_depth--;
}

const struct pol_config *shim_cfg(void)
{
    return &shim_config;
}

void shim_count_verdict(enum shim_hook_id id, enum pol_verdict v)
{
    switch (v) {
    case POL_INJECT:
        shim_count(id, SHIM_C_INJECTED, 1);
        break;
    case POL_OBSERVED:
        shim_count(id, SHIM_C_OBSERVED, 1);
        break;
    case POL_SKIP_POLICY:
        shim_count(id, SHIM_C_SKIPPED, 1);
        break;
    case POL_NOT_APPLICABLE:
        shim_count(id, SHIM_C_NOT_APPLICABLE, 1);
        break;
    }
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
    shim_stats_report(&shim_config);
    shim_stats_fini();
    shim_depth--;
}
