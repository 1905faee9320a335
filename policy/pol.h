/*
 * teshim policy: the parameter table, the sources it is read from, and the
 * decisions taken on plain structs. Pure C on libc: no dlsym, no hooks, so
 * every decision is unit-tested without preloading anything.
 */
#ifndef TESHIM_POL_H
#define TESHIM_POL_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum pol_type { POL_T_BOOL, POL_T_INT, POL_T_SIZE, POL_T_ENUM, POL_T_STR, POL_T_LIST };

enum pol_param {
#define POL_PARAM(id, key, type, def, min, max, choices, doc) POL_##id,
#include "pol_params.def"
#undef POL_PARAM
    POL_NPARAMS
};

/* Where the effective value of a parameter came from; later sources win. */
enum pol_source { POL_SRC_DEFAULT, POL_SRC_PROFILE, POL_SRC_FILE, POL_SRC_ENV };

/* One row of the table, as written in pol_params*.def. */
struct pol_param_info {
    const char *key; /* "rdma.traffic_class" */
    const char *env; /* "TESHIM_RDMA_TRAFFIC_CLASS" */
    enum pol_type type;
    const char *def;     /* default as text; "" = unset */
    int64_t min, max;    /* INT and SIZE */
    const char *choices; /* ENUM: "off|on|auto"; INT: "" or one word meaning 0 ("auto") */
    const char *doc;
};

extern const struct pol_param_info pol_params[POL_NPARAMS];

/* Enumerations with meaning in code; keep in step with the .def choices. */
enum pol_ro_mode { POL_RO_OFF, POL_RO_ON, POL_RO_AUTO };
enum pol_mode { POL_MODE_ENFORCE, POL_MODE_OBSERVE };
enum pol_forced_arm { POL_FORCE_AUTO, POL_FORCE_A, POL_FORCE_B };
enum pol_log_level { POL_LOG_ERROR, POL_LOG_WARN, POL_LOG_INFO, POL_LOG_DEBUG, POL_LOG_TRACE };

enum pol_arm { POL_ARM_A, POL_ARM_B };
enum pol_stats_report { POL_REPORT_APPLIED, POL_REPORT_ALL };

/*
 * The process-wide gate, decided once at load. Only ENFORCE changes calls;
 * OBSERVE counts what would have been injected.
 */
enum pol_gate {
    POL_GATE_ENFORCE,
    POL_GATE_OBSERVE,
    POL_GATE_ARM_A,        /* rollout put this process in the passthrough arm */
    POL_GATE_KILLED,       /* TESHIM_DISABLE or the kill-switch file */
    POL_GATE_OUT_OF_SCOPE, /* program not in scope.programs / in exclude list */
};

struct pol_value {
    int64_t i;     /* BOOL, INT, SIZE, ENUM */
    const char *s; /* STR, LIST (comma-separated, trimmed); points into the arena */
    bool set;      /* false only for parameters whose default is "" and nobody set */
    uint8_t src;   /* enum pol_source */
};

/*
 * What a transfer engine lets its users set itself among the things teshim
 * injects. Where the host process has one of the knob's variables in its
 * environment, the host decided: teshim keeps out unless
 * rdma.override_host_knobs is on.
 */
enum pol_knob {
    POL_KNOB_RELAXED_ORDERING,
    POL_KNOB_TRAFFIC_CLASS,
    POL_KNOB_SERVICE_LEVEL,
    POL_NKNOBS
};

struct pol_host_knob {
    char env[40];   /* the first of the knob's variables found set; "" = none */
    char value[24]; /* its value (truncated) */
};

/* Who had the last word on a knob for one call. */
enum pol_knob_winner {
    POL_KNOB_UNSET,      /* the host did not set it, or the call did not qualify */
    POL_KNOB_HOST_WON,   /* teshim would have injected; the host's setting kept */
    POL_KNOB_TESHIM_WON, /* injected over the host's setting (override on) */
};

/* "relaxed_ordering", "traffic_class", "service_level". */
const char *pol_knob_name(enum pol_knob k);
/* The knob's environment variables (NULL-terminated), in the order read. */
const char *const *pol_knob_vars(enum pol_knob k);
/* Fill knobs[POL_NKNOBS] from a "KEY=VALUE" list (NULL: none set). */
void pol_host_knobs_read(char *const *environ, struct pol_host_knob *knobs);

#define POL_ARENA_BYTES 16384
#define POL_NAME_MAX 128

/* The effective configuration: flat, read-only once loaded, safe to copy. */
struct pol_config {
    struct pol_value v[POL_NPARAMS];
    char program[POL_NAME_MAX];
    char host[POL_NAME_MAX];
    char config_path[PATH_MAX]; /* file actually read (whole: open() takes no longer); "" if none */
    enum pol_arm arm;
    enum pol_gate gate;
    uint32_t rollout_bucket; /* 0..9999, the identity's place on the rollout scale */
    uint64_t hash;           /* of every effective value: tells two policies apart */
    unsigned nwarnings;      /* diagnostics reported while loading */
    /* The host's own settings of what the RDMA policy injects. */
    struct pol_host_knob host_knobs[POL_NKNOBS];
    unsigned nfile_warnings; /* of which the config file's (reading it, its lines, its profile) */
    size_t arena_used;
    char arena[POL_ARENA_BYTES];
};

/* Diagnostic sink: one complete line (no newline) per call. */
typedef void (*pol_diag_fn)(void *arg, enum pol_log_level level, const char *msg);

/* Everything pol_load reads, made explicit so tests can feed it. */
struct pol_sources {
    char *const *environ;    /* NULL-terminated "KEY=VALUE" list; NULL = none */
    const char *program;     /* program name (basename); NULL = "unknown" */
    const char *host;        /* host name; NULL = "unknown" */
    const char *config_path; /* NULL = TESHIM_CONFIG, else /etc/teshim.conf, else
                                $XDG_CONFIG_HOME/teshim.conf (else ~/.config) */
    const char *etc_path;    /* NULL = "/etc/teshim.conf"; tests override */
    pol_diag_fn diag;        /* NULL = silent */
    void *diag_arg;
    /* A setuid/setgid program (AT_SECURE): its environment is the caller's,
     * another user's. environ is not read at all (no TESHIM_*, no
     * TESHIM_CONFIG, HOME or XDG_CONFIG_HOME): only config_path/etc_path
     * and the built-in defaults apply. */
    bool secure;
};

/*
 * Build the effective configuration from defaults < profile < config file
 * < environment. Never fails: every bad value is reported once through the
 * diag sink naming the key, the value and the accepted range, and the
 * default is kept. Returns the number of diagnostics reported.
 */
unsigned pol_load(struct pol_config *cfg, const struct pol_sources *src);

/*
 * Decide the arm and the gate of cfg again, with the kill-switch file taken
 * as present or not (pol_load looks at the file itself). A process that
 * re-reads its sources at run time keeps both gates of one configuration.
 */
void pol_decide_gate(struct pol_config *cfg, bool kill_file);

/* Copy a configuration: the string values of dst point into dst's own
 * arena, so dst outlives src. */
void pol_config_copy(struct pol_config *dst, const struct pol_config *src);

/*
 * Parameters read once at process start (log.*, stats.*, cuda.*, engine.*,
 * rdma.sysfs_root): what they size or open (pools, threads, files, caches)
 * is not rebuilt while the process runs.
 */
bool pol_start_only(enum pol_param p);

/*
 * A configuration re-read at run time (next) keeps the start-only values of
 * the one in force (cur); each that differed is reported through diag as
 * applying at the next start. The hash of next is computed again. Returns
 * how many differed.
 */
unsigned pol_keep_start_only(struct pol_config *next, const struct pol_config *cur,
                             pol_diag_fn diag, void *diag_arg);

/* Typed accessors. */
static inline int64_t pol_int(const struct pol_config *cfg, enum pol_param p)
{
    return cfg->v[p].i;
}
static inline bool pol_is_set(const struct pol_config *cfg, enum pol_param p)
{
    return cfg->v[p].set;
}
static inline const char *pol_str(const struct pol_config *cfg, enum pol_param p)
{
    return cfg->v[p].s ? cfg->v[p].s : "";
}

/* Parse one value for parameter p; 0 or -EINVAL/-ERANGE. Used by pol_load
 * and by `teshim run --set` to refuse a bad value before starting anything. */
int pol_parse_value(enum pol_param p, const char *text, int64_t *out);

/* Look a parameter up by key ("rdma.traffic_class") or environment name. */
int pol_find_key(const char *key);
int pol_find_env(const char *env_name);
/* TESHIM_* variables of teshim's own tools, which are not parameters. */
bool pol_is_tool_env(const char *name);
/* The known key or environment name closest to name; NULL if nothing is close. */
const char *pol_suggest(const char *name, bool env_form);
/* The shipped profile closest to name (edit distance, a profile that name
 * begins or that begins with name first); NULL when none is shipped. */
const char *pol_suggest_profile(const char *name);

/* Text of the effective value of p (enum name, bytes with suffix...). */
void pol_format_value(const struct pol_config *cfg, enum pol_param p, char *buf, size_t len);
const char *pol_source_name(enum pol_source s);
const char *pol_gate_name(enum pol_gate g);
const char *pol_arm_name(enum pol_arm a);

/* Shipped profiles, embedded at build time from policy/profiles/NAME.conf. */
struct pol_profile {
    const char *name;
    const char *text;
};
extern const struct pol_profile pol_profiles[];
extern const size_t pol_nprofiles;

/* Rollout: the stable bucket 0..9999 of (salt, host, program). */
uint32_t pol_rollout_bucket(const char *salt, const char *host, const char *program);

/* true if name matches one of the comma-separated globs in list. */
bool pol_list_match(const char *list, const char *name);

/* ---- decisions -------------------------------------------------------- */

/* What a decision concluded; each maps to one stats counter. */
enum pol_verdict {
    POL_INJECT,         /* apply the change */
    POL_OBSERVED,       /* would apply, mode = observe */
    POL_SKIP_POLICY,    /* policy off, arm A, killed, out of scope */
    POL_NOT_APPLICABLE, /* policy on but this call does not qualify */
};

/* A memory registration about to be made. */
struct pol_rdma_mr {
    const char *device; /* ibv_get_device_name of the PD's device; NULL = unknown */
    size_t length;
    int access;           /* the caller's access flags */
    bool dev_ro_capable;  /* auto mode: PCIe RlxdOrd is set for the device */
    bool iova2_available; /* auto mode: ibv_reg_mr_iova2 exists in the library */
    bool dev_ro_failed;   /* an earlier registration with RO failed on this device */
    const char *object;   /* file name of the calling object (scope.objects); NULL = unknown */
};

/* Decide the access flags of a registration; *access_out is always set. */
enum pol_verdict pol_rdma_mr_access(const struct pol_config *cfg, const struct pol_rdma_mr *mr,
                                    int *access_out);
/* The same, saying in *knob_out (may be NULL) whether the host's own
 * relaxed-ordering knob decided. */
enum pol_verdict pol_rdma_mr_decide(const struct pol_config *cfg, const struct pol_rdma_mr *mr,
                                    int *access_out, enum pol_knob_winner *knob_out);

/* A QP modification. */
struct pol_rdma_qp {
    const char *device;
    int attr_mask;
    bool is_global;
    uint8_t traffic_class;
    uint8_t sl;
    const char *object; /* file name of the calling object (scope.objects); NULL = unknown */
};

struct pol_rdma_qp_dec {
    enum pol_verdict tc;   /* traffic class */
    enum pol_verdict sl;   /* service level */
    uint8_t traffic_class; /* the value to use when tc == POL_INJECT */
    uint8_t service_level;
    enum pol_knob_winner tc_knob, sl_knob; /* the host's own knobs */
};

void pol_rdma_qp_attrs(const struct pol_config *cfg, const struct pol_rdma_qp *qp,
                       struct pol_rdma_qp_dec *out);

/*
 * PCIe relaxed ordering of an RDMA device's function: 1 if the Device Control
 * register enables it, 0 if not, -errno if unknown (-EACCES: the capability
 * list is not readable without privileges; -ENOENT: no PCIe capability).
 */
int pol_pcie_relaxed_ordering(const char *sysfs_root, const char *device);

/* The gate's verdict for any injection: INJECT, OBSERVED or SKIP_POLICY. */
enum pol_verdict pol_gate_verdict(const struct pol_config *cfg);

#endif
