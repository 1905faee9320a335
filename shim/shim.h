/*
 * libteshim.so internals: the hook table generated from shim_hooks.def, lazy
 * resolution of the real functions, the per-thread re-entry guard, counters
 * and logging. Every hook body follows the same shape:
 *
 *     T shim_hook_NAME_TAG(params)
 *     {
 *         __typeof__(&...) real = SHIM_REAL(NAME, TAG);   may be NULL
 *         if (!shim_enter(SHIM_HK_NAME_TAG))               re-entry or init
 *             return real ? real(args) : error;            pass through
 *         ... ask policy/, call real on a copy, count ...
 *         shim_leave();
 *     }
 */
#ifndef TESHIM_SHIM_H
#define TESHIM_SHIM_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "pol.h"
#include "pol_tcp.h"
#include "shim_stats.h"
#include "shim_types.h"

enum shim_lib {
    SHIM_LIB_IBV,
    SHIM_LIB_CUDA,
    SHIM_LIB_LIBC,
    SHIM_LIB_MEM,
    SHIM_LIB_CUDRV,
    SHIM_LIB_DL
};

/* Real-function pointer types, one per hook: shim_fn_NAME_TAG. */
#define HOOK(lib, tag, ver, def, ret, name, params, args, ...)                                     \
    typedef ret(*shim_fn_##name##_##tag) params;
#include "shim_hooks.def"
#undef HOOK

/*
 * How a call reports failure (the RESULT column of the hook list), read from
 * its return value rv and errno: see shim_count_result().
 */
enum shim_result {
    SHIM_RESULT_NEG1_ERRNO,    /* -1 (or MAP_FAILED), the code in errno: libc */
    SHIM_RESULT_NULL_ERRNO,    /* NULL, the code in errno: ibv_reg_mr* */
    SHIM_RESULT_NONZERO_ERRNO, /* non-zero, the code in errno: ibv_rereg_mr */
    SHIM_RESULT_RETURNED,      /* non-zero is the code: ibv_modify_qp, cudaError_t */
};

/* At most this many benign codes per row (the BENIGN column). */
#define SHIM_BENIGN_MAX 8

struct shim_hook_info {
    const char *name;
    const char *version;
    enum shim_lib lib;
    enum shim_result result;
    /* Failure codes the host does not treat as errors; unused slots are 0,
     * which is never a failure code. */
    int benign[SHIM_BENIGN_MAX];
};
extern const struct shim_hook_info shim_hooks[SHIM_HK_COUNT];

/* The real function of a hook, resolved on first use with dlvsym(RTLD_NEXT,
 * name, version); NULL if the host does not have it (logged once). */
void *shim_resolve(enum shim_hook_id id);
#define SHIM_REAL(name, tag) ((shim_fn_##name##_##tag)shim_resolve(SHIM_HK_##name##_##tag))

/* The real function of a hook found another way (a lookup through dlsym
 * or cuGetProcAddress): kept when none was resolved yet. Returns the real
 * function the hook now forwards to. */
void *shim_adopt_real(enum shim_hook_id id, void *fn);
/* The real function of hook id, or else the definition of its name and
 * version in the object that contains address obj, found through that
 * object's own handle and adopted (a library dlopen'ed RTLD_LOCAL, which
 * RTLD_NEXT does not see); NULL if neither has it. */
void *shim_resolve_in(enum shim_hook_id id, const void *obj);
/* The address of hook id's body (what a substituted lookup returns). */
void *shim_hook_addr(enum shim_hook_id id);
/* True when code address p lies in libteshim.so itself. */
bool shim_is_own(const void *p);
/* True when p lies in an object whose file name starts with prefix
 * ("libcuda.so", "libibverbs.so"). */
bool shim_in_library(const void *p, const char *prefix);

/* Look up another symbol of a host library by exact version, no hook. */
void *shim_dlvsym(const char *name, const char *version);

/*
 * Enter a hook: counts the call and returns true when policy may be applied.
 * False means pass straight through: a teshim hook is already running on this
 * thread (re-entry from inside teshim or from the real function). Every true
 * return is paired with shim_leave().
 */
bool shim_enter(enum shim_hook_id id);
void shim_leave(void);
/* Mark this thread as running teshim code without entering a hook (no
 * count, no initialisation): false if it already is. Paired with
 * shim_leave(). The memory hooks use it around their bookkeeping. */
bool shim_enter_internal(void);

/* ---- the configuration in force (shim_core.c, shim_reload.c) ---------- */

/* What the socket hooks derive from one configuration (shim_sock.c). quiet:
 * do not log what the scope lacks (the killed twin of a configuration). */
struct shim_sock_conf {
    struct pol_tcp_scope scope;
    bool active; /* a TCP policy is configured, the gate is open, scope non-empty */
};
void shim_sock_derive(const struct pol_config *cfg, struct shim_sock_conf *sc, bool quiet);

/*
 * One published configuration and what the hooks derive from it. Immutable
 * once published and never freed (shim_reload.c says why), so a hook may
 * keep reading it across a real call that blocks.
 */
struct shim_snap {
    struct pol_config cfg;
    struct shim_sock_conf sock;
};

/*
 * The snapshot this call reads: shim_enter() takes one per call, so a hook
 * sees one configuration from its start to its end, and a change published
 * meanwhile applies from the next call on. Outside a hook, the one in force.
 */
const struct shim_snap *shim_snap(void);
/* The effective configuration; valid once shim_enter returned true. */
const struct pol_config *shim_cfg(void);
/* Make s the configuration of every call that starts from now on. */
void shim_publish(const struct shim_snap *s);

/*
 * Run-time control (shim_reload.c). Every rollout.check_interval_ms, the
 * first hooked call after the interval stats the kill-switch file and the
 * config file and, on a change, publishes the other snapshot.
 */
/* The configuration pol_load fills at start. */
struct pol_config *shim_reload_boot_cfg(void);
/* The first snapshot, from the boot configuration loaded from src (whose
 * environment is copied for later reloads). */
const struct shim_snap *shim_reload_start(const struct pol_sources *src);
/* CLOCK_MONOTONIC_COARSE nanoseconds at which the next check is due;
 * UINT64_MAX: never. */
extern _Atomic uint64_t shim_reload_due_ns;
/* The check, by whichever thread gets there first at or after due. */
void shim_reload_check(uint64_t now_ns);
void shim_reload_atfork_child(void);

/* What changed at run time, for the report. */
enum shim_change_what {
    SHIM_CHANGE_KILL_ON,
    SHIM_CHANGE_KILL_OFF,
    SHIM_CHANGE_CONFIG,
    SHIM_CHANGE_CONFIG_REJECTED,
};
struct shim_change {
    uint64_t time_ns; /* CLOCK_REALTIME */
    enum shim_change_what what;
    enum pol_gate gate_before, gate_after;
    uint64_t hash_before, hash_after; /* rejected: hash_after is the refused file's */
    unsigned problems;                /* rejected: the problems found */
};
const char *shim_change_name(enum shim_change_what w);
/* The changes so far (at most SHIM_CHANGES_MAX kept); *dropped_p: more. */
#define SHIM_CHANGES_MAX 64
unsigned shim_reload_changes(const struct shim_change **list_p, unsigned *dropped_p);

/* ---- counters --------------------------------------------------------- */

/* The counters and the live segment: shim_stats.h. */

/* Publish the arm, gate and hash of cfg and the control fields in the live
 * area (a reader sees them whole). */
void shim_stats_control(const struct pol_config *cfg, bool killed, uint64_t check_ns, bool changed,
                        bool rejected);

extern struct shim_stats_area *shim_stats;

/*
 * Count the one outcome of a call, by one rule for every hook. The call
 * failed when its return value says so in the row's RESULT convention (rv
 * is the return value as an integer: a pointer through intptr_t, errno the
 * errno after the real call). Then:
 *   - a code outside the row's BENIGN list is an error, whatever the hook
 *     decided: the host sees a failure;
 *   - a benign code (EINPROGRESS of connect, EAGAIN of accept) is not: the
 *     call counts under the outcome the hook reached (the options a connect
 *     set before EINPROGRESS were set), or under WOULD_BLOCK when the hook
 *     had reached none (SHIM_C_UNDECIDED: nothing was accepted);
 *   - a success counts under the hook's outcome (NOT_APPLICABLE for
 *     SHIM_C_UNDECIDED).
 * outcome is INJECTED..FALLBACKS or SHIM_C_UNDECIDED. Keeps errno.
 */
void shim_count_result(enum shim_hook_id id, enum shim_ctr outcome, intptr_t rv, int err);

/* Count a call of a hook that does not enter through shim_enter() (the
 * memory hooks count only the calls that did something). */
void shim_count_call(enum shim_hook_id id);

/* A call already counted under outcome was returned rv/err after all:
 * take it out of was and count it again by the rule (exec, counted before
 * the report it writes, may fail after it). */
void shim_count_redo(enum shim_hook_id id, enum shim_ctr was, intptr_t rv, int err);

/* Add n to the BYTES of hook id (a measure of injected calls, not an outcome). */
void shim_count_bytes(enum shim_hook_id id, uint64_t n);

/* The outcome counter of a policy verdict. */
enum shim_ctr shim_verdict_ctr(enum pol_verdict v);

const char *shim_ctr_name(enum shim_ctr c);

/* Map the counters (shared memory or anonymous) and fill the header. */
void shim_stats_init(const struct pol_config *cfg);
/* Forked child: counters start at zero under the child's pid. */
void shim_stats_atfork_child(const struct pol_config *cfg);
/* Write the JSON report to stats.dir; called at exit. */
void shim_stats_report(const struct pol_config *cfg);
/* Remove the live segment (at exit). */
void shim_stats_fini(void);

/* ---- memory the CUDA register cache may pin (shim_mem.c) -------------- */

/* Watch allocations and mappings when cuda.register_cache is on. */
void shim_mem_init(const struct pol_config *cfg);
void shim_mem_atfork_child(void);
/* True when [p, p + n) lies in memory whose release teshim sees. */
bool shim_mem_watched(const void *p, size_t n);
/* Ranges left unwatched because the table was full. */
uint64_t shim_mem_unwatched_full(void);
/* [p, p + n) is about to lose its pages: drop every cached registration
 * over it (shim_cuda.c). Returns how many were dropped. */
unsigned shim_cuda_release(const void *p, size_t n);

/* The register cache's figures for the report. */
struct shim_rc_stats {
    uint64_t registered;   /* ranges registered */
    uint64_t released;     /* registrations dropped because their memory went */
    uint64_t evicted;      /* registrations dropped for the budget */
    uint64_t unwatched;    /* hot copies not cached: memory teshim cannot watch */
    uint64_t app_register; /* the application registered a range the cache held */
};
void shim_cuda_rc_stats(struct shim_rc_stats *s);

/* How often the host's own RDMA knobs (pol_config.host_knobs) met a call
 * teshim would have changed: kept (host_won) or overridden (teshim_won). */
void shim_ibv_knob_stats(uint64_t host_won[POL_NKNOBS], uint64_t teshim_won[POL_NKNOBS]);
/* A forked child counts from zero. */
void shim_ibv_knob_reset(void);

/* ---- lookups (shim_dl.c, shim_cudrv.c) -------------------------------- */

/* A lookup of name answered p: teshim's driver hook for it when p is the
 * real driver's entry point of a wrapped row (p adopted as its real
 * function), else p. */
void *shim_cudrv_substitute(const char *name, void *p);

/* "TESHIM_WARNED=h1,h2...": the configuration problems this process and
 * its parents reported, for the images it execs; NULL when none. */
const char *shim_warned_mark(void);

/* ---- files ------------------------------------------------------------ */

/*
 * Open directory dir (mkdir'ed first if create) for writing teshim's files
 * into: O_DIRECTORY|O_NOFOLLOW, refused when owned by another user than
 * root or this euid, or writable by every user without the sticky bit. A
 * descriptor or -errno; every refusal is logged naming what ("stats.dir").
 * *shared_p (may be NULL): every user may create files in it (sticky).
 */
int shim_dir_open(const char *what, const char *dir, bool create, bool *shared_p);
/* An opened file teshim writes to is a regular file with one link; in a
 * shared directory, owned by this euid. 0 or -errno (logged). */
int shim_file_check(const char *what, const char *path, int fd, bool shared);
/* log.file: appended to, never followed through a symlink, never a FIFO or
 * device, created 0600 if missing. A descriptor or -errno (logged). */
int shim_log_file_open(const char *path);

/* ---- logging ---------------------------------------------------------- */

void shim_log_init(const struct pol_config *cfg);
void shim_log_reinit_after_fork(void);
bool shim_log_enabled(enum pol_log_level level);
/* Formats into a stack buffer and write(2)s it; keeps errno. */
void shim_log_write(enum pol_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define shim_log(level, ...)                                                                       \
    do {                                                                                           \
        if (shim_log_enabled(level))                                                               \
            shim_log_write(level, __VA_ARGS__);                                                    \
    } while (0)
#define shim_error(...) shim_log(POL_LOG_ERROR, __VA_ARGS__)
#define shim_warn(...) shim_log(POL_LOG_WARN, __VA_ARGS__)
#define shim_info(...) shim_log(POL_LOG_INFO, __VA_ARGS__)
#define shim_debug(...) shim_log(POL_LOG_DEBUG, __VA_ARGS__)
/* Hot paths: at most one message per call site per process. */
#define shim_log_once(level, ...)                                                                  \
    do {                                                                                           \
        static atomic_flag shim_once_ = ATOMIC_FLAG_INIT;                                          \
        if (shim_log_enabled(level) && !atomic_flag_test_and_set(&shim_once_))                     \
            shim_log_write(level, __VA_ARGS__);                                                    \
    } while (0)

/* ---- exports ---------------------------------------------------------- */

/*
 * NAME@VERSION (or @@ for the default) for every row of one library. Placed
 * in the file that defines that library's hook bodies: .symver only aliases
 * a symbol defined in the same object.
 */
#define SHIM_AT_1 "@@"
#define SHIM_AT_0 "@"
#define SHIM_SYMVER(tag, ver, def, ret, name, params, args, ...)                                   \
    __asm__(".symver shim_hook_" #name "_" #tag ", " #name SHIM_AT_##def ver);
#define SHIM_PROTO(tag, ver, def, ret, name, params, args, ...)                                    \
    __attribute__((visibility("default"))) ret shim_hook_##name##_##tag params;
#define SHIM_NOTHING(...)
#define SHIM_UNPAREN(...) __VA_ARGS__

/*
 * Hook bodies generated from the list: a row whose SHAPE is (GEN, BODY,
 * EXTRA...) gets, through SHIM_GENERATE(row), the hook
 *
 *     RET shim_hook_NAME_TAG PARAMS
 *     {
 *         int rt = 0;
 *         void *fn = shim_real_LIB(SHIM_HK_NAME_TAG, &rt);  the real function
 *         if (!fn)
 *             return MISSING;                                 the row's code
 *         if (!shim_enter(SHIM_HK_NAME_TAG))                 counts the call
 *             return real ARGS;                               re-entry: pass through
 *         rc = BODY(SHIM_HK_NAME_TAG, fn, rt, EXTRA..., ARGS...);
 *         shim_leave();
 *         return rc;
 *     }
 *
 * shim_real_LIB(id, &rt) is the library's resolver (shim_cuda.h for CUDA
 * and CUDRV; rt tells the body which runtime version answered). BODY, a
 * function or a macro of the hook file, does what differs and counts the
 * call's outcome. A row with SHAPE (HAND) generates nothing: its body is
 * written by hand. The SHIM_CALL* helpers let an argument list expand
 * before a macro is applied to it (one per nesting level: a macro is not
 * expanded inside its own expansion).
 */
#define SHIM_CALL1(m, ...) m(__VA_ARGS__)
#define SHIM_CALL2(m, ...) m(__VA_ARGS__)
#define SHIM_CALL3(m, ...) m(__VA_ARGS__)
#define SHIM_GENERATE(lib, tag, ver, def, ret, name, params, args, res, codes, missing, shape)     \
    SHIM_CALL1(SHIM_GEN_, (lib, tag, ret, name, params, args, missing), SHIM_UNPAREN shape)
#define SHIM_GEN_(row, kind, ...) SHIM_GEN_##kind(row, __VA_ARGS__)
#define SHIM_GEN_HAND(...)
#define SHIM_GEN_GEN(row, ...) SHIM_CALL2(SHIM_GEN_HOOK, SHIM_UNPAREN row, __VA_ARGS__)
#define SHIM_GEN_HOOK(lib, tag, ret, name, params, args, missing, body, ...)                       \
    ret shim_hook_##name##_##tag params                                                            \
    {                                                                                              \
        enum shim_hook_id id_ = SHIM_HK_##name##_##tag;                                            \
        shim_fn_##name##_##tag real_;                                                              \
        int rt_ = 0;                                                                               \
        void *fn_ = shim_real_##lib(id_, &rt_);                                                    \
        ret rc_;                                                                                   \
                                                                                                   \
        if (!fn_)                                                                                  \
            return missing;                                                                        \
        memcpy(&real_, &fn_, sizeof(real_));                                                       \
        if (!shim_enter(id_))                                                                      \
            return real_ args;                                                                     \
        rc_ = SHIM_CALL3(body, id_, fn_, rt_, ##__VA_ARGS__, SHIM_UNPAREN args);                   \
        shim_leave();                                                                              \
        return rc_;                                                                                \
    }

#endif
