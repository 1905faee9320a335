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
#include "tsc_ab_int.h"

#include <errno.h>
#include <ftw.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *const ab_m_keys[M_COUNT] = {"metric", "wall_s", "cpu_s", "max_rss_mib"};

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
            "about the policy. A measure gets a verdict (B better, B worse, no\n"
            "significant difference) only with at least %d counted runs in each arm and\n"
            "an arm B that is not flagged; otherwise it reads \"no verdict\" and why.\n"
            "Exit status 0 when every run succeeded, had the metric, B injected and every\n"
            "measure got a verdict; 1 otherwise; 2 for usage errors and for a policy\n"
            "that does not load cleanly (an unknown profile, a bad value, a socket\n"
            "policy without a scope), checked before anything runs.\n",
            TSC_AB_RESAMPLES, TSC_AB_SEED, AB_MIN_RUNS);
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

static void print_plan(const struct ab_opts *o)
{
    printf("teshim ab: %u run%s per arm, alternating A B A B ...", o->runs,
           o->runs == 1 ? "" : "s");
    if (o->warmup)
        printf(", after %u warm-up run%s per arm", o->warmup, o->warmup == 1 ? "" : "s");
    printf("\n  command: ");
    for (char **c = o->cmd; *c; c++)
        printf("%s%s", c == o->cmd ? "" : " ", *c);
    printf("\n  arm A: %s\n  arm B: %s\n", o->arm[0].desc, o->arm[1].desc);
    fflush(stdout);
}

/*
 * The run step: the warm-up runs, then the recorded runs into runs[] (room
 * for 2 * o->runs), A B A B ..., until done or interrupted. Returns 0 with
 * *nruns set, or the exit status when a run could not be made at all
 * (127: the command cannot be executed).
 */
static int run_arms(struct ab_opts *o, struct ab_run *runs, size_t *nruns)
{
    bool tty = isatty(STDERR_FILENO) && !o->verbose;
    unsigned total = 2 * (o->warmup + o->runs);
    int rc = 0;

    *nruns = 0;
    ab_catch_signals();
    for (unsigned k = 0; k < total && !ab_interrupted && rc == 0; k++) {
        bool warm = k < 2 * o->warmup;
        unsigned idx = (warm ? k : k - 2 * o->warmup) / 2 + 1;
        struct ab_run scratch, *r = warm ? &scratch : &runs[*nruns];
        char id[32];
        snprintf(id, sizeof(id), warm ? "warmup-%u" : "%u", idx);
        progress(tty, warm ? k : k - 2 * o->warmup, warm ? 2 * o->warmup : 2 * o->runs,
                 k % 2 ? 'B' : 'A', warm);
        int e = ab_run_once(o, (int)(k % 2), id, r);
        if (e != 0)
            rc = e == -ENOENT || e == -EACCES ? TSC_EXIT_NOTFOUND : 1;
        else if (!warm)
            runs[(*nruns)++].index = idx;
    }
    if (tty)
        fprintf(stderr, "\r\033[K");
    if (rc == 0 && ab_interrupted)
        printf("\ninterrupted (signal %d) after %zu recorded run%s: the summary covers them\n",
               (int)ab_interrupted, *nruns, *nruns == 1 ? "" : "s");
    return rc;
}

int tsc_cmd_ab(int argc, char **argv)
{
    struct ab_opts o = {0};
    struct ab_run *runs = NULL;
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
    if (ab_arm_check(&o, &o.arm[0]) + ab_arm_check(&o, &o.arm[1])) {
        fprintf(stderr, "'teshim ab --help' describes the options\n");
        rc = TSC_EXIT_USAGE;
        goto out;
    }
    if (o.runs < AB_MIN_RUNS)
        fprintf(stderr,
                "teshim: note: -n %u: below %d runs per arm ab gives no verdict (exit status 1)\n",
                o.runs, AB_MIN_RUNS);
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

    print_plan(&o);
    size_t nruns;
    rc = run_arms(&o, runs, &nruns);
    if (rc != 0)
        goto out;

    struct ab_result res;
    rc = 1;
    if (ab_summarise(&o, runs, nruns, &res) == 0) {
        ab_output(&o, runs, nruns, &res);
        bool verdicts = true;
        for (int m = 0; m < M_COUNT; m++)
            verdicts &= !res.measured[m] || res.sum[m].has_verdict;
        rc = res.failed || res.missing || res.b_flagged || !verdicts || ab_interrupted ? 1 : 0;
    }
    ab_result_free(&res);
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
