/*
 * teshim ab's private header: its options, arms, runs and summaries, and
 * the functions its files share. The command is three steps:
 *   run        tsc_ab.c (options, the loop of runs), tsc_ab_arm.c (what an
 *              arm is), tsc_ab_run.c (one run of the command and its reports);
 *   summarise  tsc_ab_sum.c (statistics per measure, flags, verdicts);
 *   output     tsc_ab_out.c (the table, the flags, the picture's series),
 *              tsc_ab_json.c (--json), tsc_plot.c (--plot).
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
/* Below this many counted runs in either arm a measure gets no verdict: a
 * bootstrap of fewer values has too few distinct resamples to mean much
 * (with 1 run the interval has zero width). */
#define AB_MIN_RUNS 5
/* Confidence level of the interval of B/A. */
#define AB_LEVEL 0.95
/* How the interval is computed, as printed and written to the JSON. */
#define AB_INTERVAL_METHOD "95 % percentile-bootstrap interval of the B/A ratio of medians"

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
    char verdict[128]; /* "B better (higher)", "no verdict: ..." */
    bool has_verdict;  /* false: the verdict text says why there is none */
};

struct ab_flags {
    char text[8][256];
    unsigned n;
};

/* What an arm's reports add up to over its recorded runs. */
struct ab_totals {
    double calls, injected, observed, fallbacks;
    unsigned reports, with_reports, runs;
    char gates[64];
};

/* Everything the output step prints: the result of ab_summarise. */
struct ab_result {
    struct ab_summary sum[M_COUNT];
    bool measured[M_COUNT];
    double *vals[M_COUNT][2]; /* the counted values of each arm (malloc'd) */
    struct ab_totals arm[2];
    unsigned failed, missing;
    bool b_flagged; /* arm B applied nothing: no verdict for any measure */
    struct ab_flags flags;
};

/* Report keys of the measures (JSON). */
extern const char *const ab_m_keys[M_COUNT];

void ab_arm_clear(struct ab_arm *arm);
int ab_arm_spec(struct ab_arm *arm, const char *spec);
void ab_arm_describe(struct ab_arm *arm);
unsigned ab_arm_check(const struct ab_opts *o, const struct ab_arm *arm);
int ab_run_once(struct ab_opts *o, int a, const char *runid, struct ab_run *r);
bool ab_run_ok(const struct ab_run *r);
size_t ab_arm_values(const struct ab_run *runs, size_t n, int a, enum ab_measure m, double *out);
/* The verdict of s into s->verdict: none below AB_MIN_RUNS counted runs in
 * an arm or when b_flagged; else from where the interval lies against 1. */
void ab_verdict(struct ab_summary *s, bool b_flagged);
/* Summarise the recorded runs: 0, or -ENOMEM (reported). */
int ab_summarise(const struct ab_opts *o, const struct ab_run *runs, size_t n,
                 struct ab_result *res);
void ab_result_free(struct ab_result *res);
/* The output step: the table, the runs' problems, the arms' reports, the
 * flags, and --json / --plot when asked for. */
void ab_output(const struct ab_opts *o, const struct ab_run *runs, size_t n,
               const struct ab_result *res);
/* Label of measure m ("wall time (s)", the metric's name). */
const char *ab_measure_name(const struct ab_opts *o, int m);
extern const char *const ab_m_units[M_COUNT];
int ab_write_json(const struct ab_opts *o, const struct ab_run *runs, size_t n,
                  const struct ab_result *res);
void ab_add_flag(struct ab_flags *fl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
