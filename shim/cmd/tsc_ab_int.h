/*
 * teshim ab's private header: its options, arms, runs and summaries, and
 * the functions its files share: tsc_ab.c (the command: options, the loop
 * of runs, the table), tsc_ab_arm.c (what an arm is), tsc_ab_run.c (one
 * run of the command and its reports), tsc_ab_json.c (the JSON result).
 */
#ifndef TESHIM_TSC_AB_INT_H
#define TESHIM_TSC_AB_INT_H

#include "tsc_abstat.h"

#include <regex.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AB_MAX_ENV 64
#define AB_MAX_RUNS 10000

enum ab_measure { M_METRIC, M_WALL, M_CPU, M_RSS, M_COUNT };

/* How one arm is run. */
struct ab_arm {
    char name;        /* 'A' or 'B' */
    bool preload;     /* libteshim.so in LD_PRELOAD (off only for "nopreload") */
    bool passthrough; /* rollout arm A: the shim loaded, nothing applied */
    char *env[AB_MAX_ENV];
    size_t nenv;
    char desc[1024];
};

struct ab_run {
    int arm; /* 0 = A, 1 = B */
    unsigned index;
    double v[M_COUNT];
    bool has_metric;
    int status; /* wait status */
    unsigned reports;
    double calls, injected, observed, fallbacks;
    char gates[64]; /* distinct gates seen in the reports, comma-separated */
    char policy_hash[20];
};

struct ab_opts {
    unsigned runs, warmup;
    const char *metric_re;
    const char *metric_name;
    regex_t re;
    bool lower_better;
    bool verbose;
    const char *json, *plot, *reports_dir;
    uint64_t seed;
    char **cmd;
    struct ab_arm arm[2];
    const char *orig_preload; /* LD_PRELOAD before teshim's was added */
    char root[4096];          /* per-run report folders live here */
    bool root_is_temp;
};

/* Line-wise processing of a run's output: metric and --verbose echo. */
struct out_state {
    const struct ab_opts *o;
    char line[65536];
    size_t len;
    bool overlong;
    double metric;
    bool has_metric;
};

struct ab_summary {
    size_t n[2];
    double med[2], min[2], max[2];
    struct tsc_ratio_ci ci;
    bool lower_better;
};

struct ab_flags {
    char text[8][256];
    unsigned n;
};

/* Report keys of the measures (JSON). */
extern const char *const ab_m_keys[M_COUNT];

void ab_arm_clear(struct ab_arm *arm);
int ab_arm_spec(struct ab_arm *arm, const char *spec);
void ab_arm_describe(struct ab_arm *arm);
int ab_run_once(struct ab_opts *o, int a, const char *runid, struct ab_run *r);
bool ab_run_ok(const struct ab_run *r);
void ab_describe_status(int status, char *buf, size_t len);
size_t ab_arm_values(const struct ab_run *runs, size_t n, int a, enum ab_measure m, double *out);
const char *ab_verdict(const struct ab_summary *s);
int ab_write_json(const struct ab_opts *o, const struct ab_run *runs, size_t n,
                  const struct ab_summary *sum, bool measured[M_COUNT], const struct ab_flags *fl);
void ab_add_flag(struct ab_flags *fl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
