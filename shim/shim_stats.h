/*
 * The counters of libteshim.so: one list, and the layout of the live
 * segment. The contract between the library (shim.h includes it), the
 * teshim command (stats, live, ab) and the tests: they read this header,
 * never the library's internal shim.h. Changing the layout bumps
 * SHIM_STATS_LAYOUT.
 */
#ifndef TESHIM_SHIM_STATS_H
#define TESHIM_SHIM_STATS_H

#include <stdatomic.h>
#include <stdint.h>

/* One id per hook, in the order of the hook list. */
enum shim_hook_id {
#define HOOK(lib, tag, ver, def, ret, name, params, args, ...) SHIM_HK_##name##_##tag,
#include "shim_hooks.def"
#undef HOOK
    SHIM_HK_COUNT
};

/*
 * The counters of a hook: X(ID, report key, column head, meaning). Every
 * call a hook counts in CALLS lands in exactly one outcome, INJECTED to
 * ERRORS, so the outcomes of a hook sum to its CALLS; BYTES is a measure,
 * not an outcome.
 */
#define SHIM_COUNTERS(X)                                                                           \
    X(CALLS, "calls", "CALLS", "calls of the hook")                                                \
    X(INJECTED, "injected", "INJECTED", "the call was changed")                                    \
    X(OBSERVED, "observed", "OBSERVED", "would have been changed (mode = observe)")                \
    X(SKIPPED, "skipped_by_policy", "SKIPPED", "policy off, arm A, killed, out of scope")          \
    X(NOT_APPLICABLE, "not_applicable", "N/A", "policy on, but this call does not qualify")        \
    X(FALLBACKS, "fallbacks", "FALLBACK", "policy could not be applied: the real call ran")        \
    X(WOULD_BLOCK, "would_block", "WOULDBLK", "a benign code before anything was decided")         \
    X(ERRORS, "errors", "ERRORS", "a failure the host treats as one")                              \
    X(BYTES, "bytes", "BYTES", "bytes covered by injected calls")

enum shim_ctr {
#define SHIM_CTR_ID(id, key, head, doc) SHIM_C_##id,
    SHIM_COUNTERS(SHIM_CTR_ID)
#undef SHIM_CTR_ID
        SHIM_C_COUNT,
    /* What a hook passes when the call returned before there was anything
     * to decide (accept with no connection): see shim_count_result(). */
    SHIM_C_UNDECIDED = SHIM_C_CALLS,
};

struct shim_hook_stats {
    _Atomic uint64_t c[SHIM_C_COUNT];
};

/*
 * Run-time control as a reader sees it (layout 3): written under seq, odd
 * while the fields and the header's arm, gate and policy_hash change.
 */
struct shim_stats_ctl {
    _Atomic uint32_t seq;
    uint32_t killed;            /* the kill-switch file was there at the last check */
    uint32_t changes;           /* changes published so far */
    uint32_t rejected;          /* config edits refused (the last good one stayed) */
    uint64_t check_interval_ms; /* 0: never checked after start */
    uint64_t last_check_ns;     /* CLOCK_REALTIME of the last check; the start at first */
    uint64_t last_change_ns;    /* CLOCK_REALTIME of the last change; 0: none */
};

/* The live counters; shared-memory backed when stats.live is on. */
struct shim_stats_area {
    uint32_t magic;   /* SHIM_STATS_MAGIC once fully initialised */
    uint32_t version; /* layout version */
    int32_t pid;
    uint32_t nhooks;
    char program[128];
    char arm[4];
    char gate[16];
    uint64_t policy_hash;
    uint64_t start_ns; /* CLOCK_REALTIME */
    struct shim_hook_stats hooks[SHIM_HK_COUNT];
    /* Layout 3. After the counters, so a layout-2 segment is this one's
     * prefix and readers keep reading its counters. */
    struct shim_stats_ctl ctl;
};
#define SHIM_STATS_MAGIC 0x74657368u /* "tesh" */
#define SHIM_STATS_LAYOUT 3          /* 2: would_block; 3: ctl (run-time control) */

#endif
