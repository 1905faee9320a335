/*
 * teshim ab: run a command alternately in arm A and arm B (A B A B ...), so
 * that drift of the machine (thermal, page cache, neighbours) hits both arms
 * alike, and compare wall time, CPU time, peak RSS and the application's own
 * figure, with teshim's reports telling whether arm B's policy was applied.
 *
 * Both arms run the same binary with the same libteshim.so preloaded; by
 * default arm A is the shim in rollout arm A (passthrough). Only the policy
 * differs, so the shim's own cost (interposition, constructor, counters) is
 * on both sides and the ratio measures the policy, not the preload.
 */
#include "tsc.h"
#include "tsc_ab.h"
#include "tsc_ab_int.h"
#include "tsc_json.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <poll.h>
#include <regex.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static const char *const m_names[M_COUNT] = {"metric", "wall time", "cpu time", "peak RSS"};
const char *const ab_m_keys[M_COUNT] = {"metric", "wall_s", "cpu_s", "max_rss_mib"};
static const char *const m_units[M_COUNT] = {"", "s", "s", "MiB"};

/* SIGINT/SIGTERM: finish with the runs done so far. The run in progress
 * gets the terminal's SIGINT itself; ab waits for it and then stops. */
static volatile sig_atomic_t ab_interrupted;

static void ab_on_signal(int sig)
{
    ab_interrupted = sig;
}

static void ab_catch_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = ab_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

static void ab_usage(FILE *f)
{
    fprintf(f,
            "usage: teshim ab [-n RUNS] [--warmup N] [--metric REGEX] [--metric-name NAME]\n"
            "                 [--lower-is-better] [--policy-a SPEC]... [--policy-b SPEC]...\n"
            "                 [--profile P] [--config F] [--set key=value]...\n"
            "                 [--json FILE] [--plot FILE.svg] [--reports DIR] [--seed N]\n"
            "                 [-v|--verbose] -- CMD [ARGS...]\n"
            "\n"
            "Runs CMD RUNS times in each arm (default 10), alternating A B A B ..., after N\n"
            "unrecorded warm-up runs of each arm (default 0). Both arms preload the same\n"
            "libteshim.so: arm A in rollout arm A (passthrough) unless --policy-a is given,\n"
            "arm B with the policy under test forced into rollout arm B. --profile, --config\n"
            "and --set give that policy; --policy-a/--policy-b SPEC add per-arm settings:\n"
            "  profile:NAME     a shipped profile or a [profile NAME] of the config file\n"
            "  config:FILE      a configuration file\n"
            "  set:KEY=VALUE    one parameter (repeatable)\n"
            "  none             passthrough: the shim loaded in rollout arm A (A's default)\n"
            "  nopreload        no libteshim.so at all (measures the shim's own cost)\n"
            "A bare shipped profile name is taken as profile:NAME.\n"
            "\n"
            "Each run gets TESHIM_AB_ARM=A|B, TESHIM_AB_RUN=N and a fresh TESHIM_STATS_DIR;\n"
            "ab measures wall time, CPU time (user+sys of the run and the children it\n"
            "waited for), peak RSS, and with --metric the application's figure: the last\n"
            "output line (stdout or stderr) matching the POSIX extended REGEX, its first\n"
            "capture group or else the whole match, first number in it. Output is shown\n"
            "with --verbose. Runs that exit non-zero are reported and left out of the\n"
            "statistics; runs without the metric are reported by name.\n"
            "\n"
            "Per arm: median, min, max; B/A is the ratio of the medians with a 95%%\n"
            "percentile-bootstrap confidence interval (%u resamples of each arm, seed\n"
            "--seed, default %u: the same runs give the same interval). An arm B whose\n"
            "reports show nothing injected is flagged: such a comparison says nothing\n"
            "about the policy. Exit status 0 when every run succeeded, had the metric and\n"
            "B injected; 1 otherwise; 2 for usage errors.\n",
            TSC_AB_RESAMPLES, TSC_AB_SEED);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path); /* best effort: a leftover temporary folder is harmless */
    return 0;
}

static int parse_opts(struct ab_opts *o, int argc, char **argv, bool *help)
{
    int i;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end;
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            *help = true;
            return 0;
        }
        if (strcmp(a, "--lower-is-better") == 0) {
            o->lower_better = true;
            continue;
        }
        if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            o->verbose = true;
            continue;
        }
        int r = tsc_settings_option(argc, argv, &i);
        if (r < 0)
            return -1;
        if (r > 0)
            continue;
        if (a[0] != '-')
            break; /* the command starts here */
        if (!v) {
            tsc_err("ab: %s needs a value", a);
            return -1;
        }
        i++;
        if (strcmp(a, "-n") == 0 || strcmp(a, "--runs") == 0) {
            unsigned long n = strtoul(v, &end, 10);
            if (*end || n < 1 || n > AB_MAX_RUNS) {
                tsc_err("ab: -n %s: runs per arm in 1..%d", v, AB_MAX_RUNS);
                return -1;
            }
            o->runs = (unsigned)n;
        } else if (strcmp(a, "--warmup") == 0) {
            unsigned long n = strtoul(v, &end, 10);
            if (*end || n > AB_MAX_RUNS) {
                tsc_err("ab: --warmup %s: runs per arm in 0..%d", v, AB_MAX_RUNS);
                return -1;
            }
            o->warmup = (unsigned)n;
        } else if (strcmp(a, "--metric") == 0) {
            o->metric_re = v;
        } else if (strcmp(a, "--metric-name") == 0) {
            o->metric_name = v;
        } else if (strcmp(a, "--policy-a") == 0 || strcmp(a, "--policy-b") == 0) {
            if (ab_arm_spec(&o->arm[a[9] == 'b'], v) != 0)
                return -1;
        } else if (strcmp(a, "--json") == 0) {
            o->json = v;
        } else if (strcmp(a, "--plot") == 0) {
            o->plot = v;
        } else if (strcmp(a, "--reports") == 0) {
            o->reports_dir = v;
        } else if (strcmp(a, "--seed") == 0) {
            o->seed = strtoull(v, &end, 0);
            if (*end) {
                tsc_err("ab: --seed %s: not a number", v);
                return -1;
            }
        } else {
            tsc_err("ab: unknown option '%s'", a);
            return -1;
        }
    }
    if (i >= argc) {
        tsc_err("ab: no command given");
        return -1;
    }
    o->cmd = argv + i;
    if (o->metric_re) {
        int rc = regcomp(&o->re, o->metric_re, REG_EXTENDED);
        if (rc) {
            char msg[256];
            regerror(rc, &o->re, msg, sizeof(msg));
            tsc_err("ab: --metric '%s': %s", o->metric_re, msg);
            o->metric_re = NULL;
            return -1;
        }
    }
    return 0;
}

static int make_root(struct ab_opts *o)
{
    if (o->reports_dir) {
        if (mkdir(o->reports_dir, 0755) != 0 && errno != EEXIST) {
            tsc_err("ab: --reports %s: %s", o->reports_dir, strerror(errno));
            return -1;
        }
        char *real = realpath(o->reports_dir, NULL);
        if (!real) {
            tsc_err("ab: --reports %s: %s", o->reports_dir, strerror(errno));
            return -1;
        }
        snprintf(o->root, sizeof(o->root), "%s", real);
        free(real);
        return 0;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(o->root, sizeof(o->root), "%s/teshim-ab-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(o->root)) {
        tsc_err("ab: mkdtemp %s: %s", o->root, strerror(errno));
        return -1;
    }
    o->root_is_temp = true;
    return 0;
}

static void progress(bool on, unsigned done, unsigned total, char arm, bool warm)
{
    if (!on)
        return;
    fprintf(stderr, "\r\033[Kteshim ab: %s %u/%u (arm %c)", warm ? "warm-up" : "run", done + 1,
            total, arm);
    fflush(stderr);
}

static void print_table(const struct ab_opts *o, const struct ab_summary *sum,
                        const bool measured[M_COUNT])
{
    printf("\n%-22s %-4s %12s %12s %12s %4s\n", "MEASURE", "ARM", "MEDIAN", "MIN", "MAX", "N");
    for (int m = 0; m < M_COUNT; m++) {
        if (!measured[m])
            continue;
        char label[64];
        if (m == M_METRIC)
            snprintf(label, sizeof(label), "%s", o->metric_name ? o->metric_name : "metric");
        else
            snprintf(label, sizeof(label), "%s (%s)", m_names[m], m_units[m]);
        const struct ab_summary *s = &sum[m];
        for (int a = 0; a < 2; a++) {
            if (s->n[a])
                printf("%-22.22s %-4c %12.5g %12.5g %12.5g %4zu\n", a ? "" : label, a ? 'B' : 'A',
                       s->med[a], s->min[a], s->max[a], s->n[a]);
            else
                printf("%-22.22s %-4c %12s %12s %12s %4d\n", a ? "" : label, a ? 'B' : 'A', "-",
                       "-", "-", 0);
        }
        if (s->ci.defined)
            printf("%-22s B/A  %12.4f  95%% CI [%.4f, %.4f]  %s%s\n", "", s->ci.ratio, s->ci.lo,
                   s->ci.hi, ab_verdict(s),
                   m == M_METRIC ? (o->lower_better ? ", lower is better" : ", higher is better")
                                 : "");
        else
            printf("%-22s B/A  %12s  (an arm has no values, or A's median is 0)\n", "", "n/a");
    }
}

int tsc_cmd_ab(int argc, char **argv)
{
    struct ab_opts o = {0};
    struct ab_run *runs = NULL;
    struct ab_flags flags = {0};
    bool help = false;
    int rc = 1;

    o.runs = 10;
    o.seed = TSC_AB_SEED;
    o.arm[0] = (struct ab_arm){.name = 'A', .preload = true, .passthrough = true};
    o.arm[1] = (struct ab_arm){.name = 'B', .preload = true, .passthrough = false};
    const char *pre = getenv("LD_PRELOAD");
    o.orig_preload = pre ? strdup(pre) : NULL;
    if (parse_opts(&o, argc, argv, &help) != 0) {
        fprintf(stderr, "'teshim ab --help' describes the options\n");
        rc = TSC_EXIT_USAGE;
        goto out;
    }
    if (help) {
        ab_usage(stdout);
        rc = 0;
        goto out;
    }
    if (!o.arm[1].preload || o.arm[1].passthrough)
        fprintf(stderr, "teshim: note: arm B is a passthrough arm: this compares two baselines\n");
    if (tsc_preload_env() != 0) {
        rc = TSC_EXIT_NOTFOUND;
        goto out;
    }
    ab_arm_describe(&o.arm[0]);
    ab_arm_describe(&o.arm[1]);
    tsc_live_reap();
    if (make_root(&o) != 0)
        goto out;
    runs = calloc(2 * (size_t)o.runs, sizeof(*runs));
    if (!runs)
        goto out;

    printf("teshim ab: %u run%s per arm, alternating A B A B ...", o.runs, o.runs == 1 ? "" : "s");
    if (o.warmup)
        printf(", after %u warm-up run%s per arm", o.warmup, o.warmup == 1 ? "" : "s");
    printf("\n  command: ");
    for (char **c = o.cmd; *c; c++)
        printf("%s%s", c == o.cmd ? "" : " ", *c);
    printf("\n  arm A: %s\n  arm B: %s\n", o.arm[0].desc, o.arm[1].desc);
    fflush(stdout);

    bool tty = isatty(STDERR_FILENO) && !o.verbose;
    ab_catch_signals();
    for (unsigned w = 0; w < 2 * o.warmup && !ab_interrupted; w++) {
        struct ab_run scratch;
        char id[32];
        snprintf(id, sizeof(id), "warmup-%u", w / 2 + 1);
        progress(tty, w, 2 * o.warmup, w % 2 ? 'B' : 'A', true);
        int r = ab_run_once(&o, (int)(w % 2), id, &scratch);
        if (r != 0) {
            rc = r == -ENOENT ? TSC_EXIT_NOTFOUND : 1;
            goto out_progress;
        }
    }
    size_t nruns = 0;
    for (unsigned k = 0; k < 2 * o.runs && !ab_interrupted; k++) {
        char id[32];
        unsigned idx = k / 2 + 1;
        snprintf(id, sizeof(id), "%u", idx);
        progress(tty, k, 2 * o.runs, k % 2 ? 'B' : 'A', false);
        int r = ab_run_once(&o, (int)(k % 2), id, &runs[nruns]);
        if (r != 0) {
            rc = r == -ENOENT || r == -EACCES ? TSC_EXIT_NOTFOUND : 1;
            goto out_progress;
        }
        runs[nruns++].index = idx;
    }
    if (tty)
        fprintf(stderr, "\r\033[K");
    if (ab_interrupted)
        printf("\ninterrupted (signal %d) after %zu recorded run%s: the summary covers them\n",
               (int)ab_interrupted, nruns, nruns == 1 ? "" : "s");

    /* Statistics per measure. */
    struct ab_summary sum[M_COUNT];
    bool measured[M_COUNT] = {false, true, true, true};
    measured[M_METRIC] = o.metric_re != NULL;
    double *va = calloc(nruns + 1, sizeof(double)), *vb = calloc(nruns + 1, sizeof(double));
    double *keep[M_COUNT][2] = {{0}};
    if (!va || !vb) {
        free(va);
        free(vb);
        goto out;
    }
    for (int m = 0; m < M_COUNT; m++) {
        struct ab_summary *s = &sum[m];
        memset(s, 0, sizeof(*s));
        s->lower_better = m == M_METRIC ? o.lower_better : true;
        s->n[0] = ab_arm_values(runs, nruns, 0, (enum ab_measure)m, va);
        s->n[1] = ab_arm_values(runs, nruns, 1, (enum ab_measure)m, vb);
        for (int a = 0; a < 2; a++) {
            const double *v = a ? vb : va;
            s->med[a] = tsc_median(v, s->n[a]);
            s->min[a] = tsc_min(v, s->n[a]);
            s->max[a] = tsc_max(v, s->n[a]);
            keep[m][a] = malloc((s->n[a] + 1) * sizeof(double));
            if (keep[m][a])
                memcpy(keep[m][a], v, s->n[a] * sizeof(double));
        }
        if (tsc_bootstrap_ratio(va, s->n[0], vb, s->n[1], TSC_AB_RESAMPLES, 0.95, o.seed, &s->ci))
            tsc_err("ab: out of memory in the bootstrap");
    }
    free(va);
    free(vb);
    print_table(&o, sum, measured);

    /* Failures, missing metrics and whether the policy did anything. */
    unsigned failed = 0, missing = 0;
    double inj[2] = {0}, obs[2] = {0}, calls[2] = {0}, fb[2] = {0};
    unsigned reports[2] = {0}, with_reports[2] = {0}, in_arm[2] = {0};
    char gates[2][64] = {"", ""};
    printf("\n");
    for (size_t i = 0; i < nruns; i++) {
        const struct ab_run *r = &runs[i];
        char st[64];
        if (!ab_run_ok(r)) {
            ab_describe_status(r->status, st, sizeof(st));
            printf("run %c#%u failed: %s (left out of the statistics)\n", r->arm ? 'B' : 'A',
                   r->index, st);
            failed++;
        } else if (o.metric_re && !r->has_metric) {
            printf("run %c#%u: no output line matched --metric '%s'\n", r->arm ? 'B' : 'A',
                   r->index, o.metric_re);
            missing++;
        }
        inj[r->arm] += r->injected;
        obs[r->arm] += r->observed;
        calls[r->arm] += r->calls;
        fb[r->arm] += r->fallbacks;
        reports[r->arm] += r->reports;
        with_reports[r->arm] += r->reports > 0;
        in_arm[r->arm]++;
        if (r->gates[0] && !strstr(gates[r->arm], r->gates)) {
            size_t l = strlen(gates[r->arm]);
            snprintf(gates[r->arm] + l, sizeof(gates[0]) - l, "%s%s", l ? "," : "", r->gates);
        }
    }
    if (failed)
        ab_add_flag(&flags, "%u run%s exited with a failure", failed, failed == 1 ? "" : "s");
    if (missing)
        ab_add_flag(&flags, "%u successful run%s lacked the metric", missing,
                    missing == 1 ? "" : "s");
    for (int a = 0; a < 2; a++)
        printf("arm %c: %u report%s from %u of %u runs; %.0f hooked calls, %.0f injected, "
               "%.0f observed, %.0f fallbacks; gate %s\n",
               a ? 'B' : 'A', reports[a], reports[a] == 1 ? "" : "s", with_reports[a], in_arm[a],
               calls[a], inj[a], obs[a], fb[a], gates[a][0] ? gates[a] : "-");
    bool b_flagged = false;
    if (o.arm[1].preload && !o.arm[1].passthrough && in_arm[1]) {
        if (!reports[1]) {
            ab_add_flag(&flags,
                        "FLAGGED: arm B wrote no teshim report: libteshim.so did not run in "
                        "the command (static or setuid binary?), the comparison says "
                        "nothing about the policy");
            b_flagged = true;
        } else if (inj[1] == 0 && obs[1] == 0) {
            ab_add_flag(&flags,
                        "FLAGGED: policy injected nothing in arm B (%.0f hooked calls): the "
                        "comparison says nothing about the policy",
                        calls[1]);
            b_flagged = true;
        } else if (inj[1] == 0) {
            ab_add_flag(&flags,
                        "FLAGGED: arm B only observed (%.0f calls would have been changed, "
                        "mode = observe): the comparison measures the shim, not the policy",
                        obs[1]);
            b_flagged = true;
        }
        if (fb[1] > 0)
            ab_add_flag(&flags, "arm B fell back %.0f times: the policy was not applied everywhere",
                        fb[1]);
    }
    if (inj[0] > 0 && o.arm[0].passthrough)
        ab_add_flag(&flags, "arm A (passthrough) injected %.0f times: check the configuration",
                    inj[0]);
    for (unsigned i = 0; i < flags.n; i++)
        printf("%s\n", flags.text[i]);
    if (!flags.n)
        printf("arm B applied its policy in every run; every run succeeded\n");

    if (o.json && ab_write_json(&o, runs, nruns, sum, measured, &flags) == 0)
        printf("runs and summary written to %s\n", o.json);
    if (o.plot) {
        struct tsc_ab_series ser[M_COUNT];
        size_t ns = 0;
        for (int m = 0; m < M_COUNT; m++) {
            if (!measured[m])
                continue;
            ser[ns] = (struct tsc_ab_series){
                .name = m == M_METRIC ? (o.metric_name ? o.metric_name : "metric") : m_names[m],
                .unit = m == M_METRIC ? "application's figure" : m_units[m],
                .lower_better = sum[m].lower_better,
                .v = {keep[m][0], keep[m][1]},
                .n = {keep[m][0] ? sum[m].n[0] : 0, keep[m][1] ? sum[m].n[1] : 0},
            };
            ns++;
        }
        char title[2600];
        snprintf(title, sizeof(title), "teshim ab: %s\narm A: %s\narm B: %s", o.cmd[0],
                 o.arm[0].desc, o.arm[1].desc);
        if (tsc_ab_plot_svg(o.plot, title, ser, ns) == 0)
            printf("picture of both arms written to %s\n", o.plot);
    }
    if (o.reports_dir)
        printf("teshim reports of every run kept in %s/<arm>-<run>/\n", o.root);
    for (int m = 0; m < M_COUNT; m++)
        for (int a = 0; a < 2; a++)
            free(keep[m][a]);
    rc = failed || missing || b_flagged || ab_interrupted ? 1 : 0;
    goto out;

out_progress:
    if (tty)
        fprintf(stderr, "\r\033[K");
out:
    if (o.root_is_temp)
        nftw(o.root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (o.metric_re)
        regfree(&o.re);
    ab_arm_clear(&o.arm[0]);
    ab_arm_clear(&o.arm[1]);
    free(runs);
    free((char *)o.orig_preload);
    return rc;
}
