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
#include "tsc_abstat.h"
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

#define AB_MAX_ENV 64
#define AB_MAX_RUNS 10000

enum ab_measure { M_METRIC, M_WALL, M_CPU, M_RSS, M_COUNT };

static const char *const m_names[M_COUNT] = {"metric", "wall time", "cpu time", "peak RSS"};
static const char *const m_keys[M_COUNT] = {"metric", "wall_s", "cpu_s", "max_rss_mib"};
static const char *const m_units[M_COUNT] = {"", "s", "s", "MiB"};

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

static int arm_add_env(struct ab_arm *arm, const char *key, const char *val)
{
    if (arm->nenv >= AB_MAX_ENV) {
        tsc_err("ab: too many settings for arm %c", arm->name);
        return -1;
    }
    if (asprintf(&arm->env[arm->nenv], "%s=%s", key, val) < 0)
        return -1;
    arm->nenv++;
    return 0;
}

static void arm_clear(struct ab_arm *arm)
{
    for (size_t i = 0; i < arm->nenv; i++)
        free(arm->env[i]);
    arm->nenv = 0;
}

static bool shipped_profile(const char *name)
{
    for (size_t k = 0; k < pol_nprofiles; k++)
        if (pol_profiles[k].name && strcmp(pol_profiles[k].name, name) == 0)
            return true;
    return false;
}

/* --policy-a / --policy-b SPEC; 0 or -1 (reported). */
static int arm_spec(struct ab_arm *arm, const char *spec)
{
    if (strcmp(spec, "none") == 0 || strcmp(spec, "passthrough") == 0) {
        arm_clear(arm);
        arm->passthrough = true;
        arm->preload = true;
        return 0;
    }
    if (strcmp(spec, "nopreload") == 0) {
        arm_clear(arm);
        arm->passthrough = true;
        arm->preload = false;
        return 0;
    }
    if (!arm->preload) {
        tsc_err("ab: arm %c: '%s' given after nopreload", arm->name, spec);
        return -1;
    }
    arm->passthrough = false;
    if (strncmp(spec, "profile:", 8) == 0 || shipped_profile(spec)) {
        const char *name = strncmp(spec, "profile:", 8) == 0 ? spec + 8 : spec;
        if (!*name) {
            tsc_err("ab: arm %c: profile: needs a name", arm->name);
            return -1;
        }
        return arm_add_env(arm, "TESHIM_PROFILE", name);
    }
    if (strncmp(spec, "config:", 7) == 0) {
        char *real = realpath(spec + 7, NULL);
        if (!real || access(real, R_OK) != 0) {
            tsc_err("ab: arm %c: %s: %s", arm->name, spec + 7, strerror(errno));
            free(real);
            return -1;
        }
        int rc = arm_add_env(arm, "TESHIM_CONFIG", real);
        free(real);
        return rc;
    }
    if (strncmp(spec, "set:", 4) == 0) {
        const char *kv = spec + 4, *eq = strchr(kv, '=');
        char key[128];
        if (!eq || eq == kv) {
            tsc_err("ab: arm %c: %s: expected set:key=value", arm->name, spec);
            return -1;
        }
        snprintf(key, sizeof(key), "%.*s", (int)(eq - kv), kv);
        int p = pol_find_key(key);
        if (p < 0) {
            const char *s = pol_suggest(key, false);
            tsc_err("ab: arm %c: unknown key '%s'%s%s%s", arm->name, key,
                    s ? " (did you mean '" : "", s ? s : "", s ? "'?)" : "");
            return -1;
        }
        if (pol_parse_value((enum pol_param)p, eq + 1, NULL) != 0) {
            tsc_err("ab: arm %c: %s: '%s' is not a valid value (see teshim config --all)",
                    arm->name, key, eq + 1);
            return -1;
        }
        return arm_add_env(arm, pol_params[p].env, eq + 1);
    }
    tsc_err("ab: arm %c: '%s' is not none, nopreload, profile:NAME, config:FILE or "
            "set:KEY=VALUE",
            arm->name, spec);
    return -1;
}

static void arm_describe(struct ab_arm *arm)
{
    size_t len = 0;

    arm->desc[0] = '\0';
    if (!arm->preload) {
        snprintf(arm->desc, sizeof(arm->desc), "no libteshim.so (nopreload)");
        return;
    }
    if (arm->passthrough) {
        snprintf(arm->desc, sizeof(arm->desc),
                 "passthrough: libteshim.so loaded in rollout arm A, nothing applied");
        return;
    }
    len += (size_t)snprintf(arm->desc, sizeof(arm->desc), "rollout arm B");
    for (size_t i = 0; i < arm->nenv && len < sizeof(arm->desc); i++)
        len += (size_t)snprintf(arm->desc + len, sizeof(arm->desc) - len, ", %s", arm->env[i]);
    /* Settings shared by both arms come from this process's environment. */
    for (char **e = environ; *e && len < sizeof(arm->desc); e++)
        if (strncmp(*e, "TESHIM_", 7) == 0 && strchr(*e, '=')) {
            char name[160];
            snprintf(name, sizeof(name), "%.*s", (int)(strchr(*e, '=') - *e), *e);
            if (pol_find_env(name) >= 0)
                len += (size_t)snprintf(arm->desc + len, sizeof(arm->desc) - len, ", %s", *e);
        }
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Line-wise processing of a run's output: metric and --verbose echo. */
struct out_state {
    const struct ab_opts *o;
    char line[65536];
    size_t len;
    bool overlong;
    double metric;
    bool has_metric;
};

static void out_line(struct out_state *s)
{
    double v;

    s->line[s->len] = '\0';
    if (s->o->metric_re && tsc_metric_line(&s->o->re, s->line, &v)) {
        s->metric = v;
        s->has_metric = true;
    }
    s->len = 0;
}

static void out_feed(struct out_state *s, const char *buf, size_t n)
{
    if (s->o->verbose)
        fwrite(buf, 1, n, stderr);
    for (size_t i = 0; i < n; i++) {
        if (buf[i] == '\n') {
            if (!s->overlong)
                out_line(s);
            s->overlong = false;
            s->len = 0;
            continue;
        }
        if (s->overlong)
            continue;
        if (s->len + 1 >= sizeof(s->line)) {
            out_line(s); /* match what fits, then skip the rest of the line */
            s->overlong = true;
            continue;
        }
        s->line[s->len++] = buf[i];
    }
}

/* Drain what is readable now; returns false at EOF or error. */
static bool out_read(int fd, struct out_state *s)
{
    char buf[16384];

    for (;;) {
        ssize_t r = read(fd, buf, sizeof(buf));
        if (r > 0) {
            out_feed(s, buf, (size_t)r);
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return true;
        return false;
    }
}

/* Sum the reports of a run's folder into r. */
static void collect_reports(const char *dir, struct ab_run *r)
{
    DIR *d = opendir(dir);
    struct dirent *e;

    if (!d)
        return;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        char path[4500], err[256];
        if (n < 6 || strcmp(e->d_name + n - 5, ".json") != 0 || strncmp(e->d_name, "teshim-", 7))
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        struct tsc_json *j = tsc_json_load(path, err, sizeof(err));
        if (!j) {
            tsc_err("ab: report %s: %s", path, err);
            continue;
        }
        const struct tsc_json *hooks = tsc_json_get(j, "hooks");
        if (hooks && hooks->type == TSC_JSON_OBJ) {
            r->reports++;
            for (const struct tsc_json *h = hooks->child; h; h = h->next) {
                r->calls += tsc_json_num(h, "calls", 0);
                r->injected += tsc_json_num(h, "injected", 0);
                r->observed += tsc_json_num(h, "observed", 0);
                r->fallbacks += tsc_json_num(h, "fallbacks", 0);
            }
            const char *g = tsc_json_str(j, "gate", "?");
            if (!strstr(r->gates, g)) {
                size_t l = strlen(r->gates);
                snprintf(r->gates + l, sizeof(r->gates) - l, "%s%s", l ? "," : "", g);
            }
            if (!r->policy_hash[0])
                snprintf(r->policy_hash, sizeof(r->policy_hash), "%s",
                         tsc_json_str(j, "policy_hash", ""));
        }
        tsc_json_free(j);
    }
    closedir(d);
}

static void child_exec(const struct ab_opts *o, const struct ab_arm *arm, const char *dir,
                       const char *runid, int out_fd, int err_fd)
{
    int devnull = open("/dev/null", O_RDONLY);

    if (devnull >= 0) {
        dup2(devnull, STDIN_FILENO);
        close(devnull);
    }
    dup2(out_fd, STDOUT_FILENO);
    dup2(out_fd, STDERR_FILENO);
    close(out_fd);
    if (!arm->preload) {
        if (o->orig_preload)
            setenv("LD_PRELOAD", o->orig_preload, 1);
        else
            unsetenv("LD_PRELOAD");
    }
    setenv("TESHIM_ROLLOUT_ARM", arm->passthrough ? "A" : "B", 1);
    for (size_t i = 0; i < arm->nenv; i++)
        putenv(arm->env[i]);
    setenv("TESHIM_STATS_DIR", dir, 1);
    /* Every process reports: arm A applies nothing, and a B that applied
     * nothing is flagged from its reports. */
    setenv("TESHIM_STATS_REPORT", "all", 1);
    setenv("TESHIM_AB_ARM", arm->name == 'A' ? "A" : "B", 1);
    setenv("TESHIM_AB_RUN", runid, 1);
    execvp(o->cmd[0], o->cmd);
    int e = errno;
    if (write(err_fd, &e, sizeof(e)) < 0)
        e = 0;
    _exit(127);
}

/*
 * One run of arm a; 0 with r filled, -ENOENT etc. when the command cannot be
 * executed at all (reported), other -errno on internal failure.
 */
static int run_once(struct ab_opts *o, int a, const char *runid, struct ab_run *r)
{
    const struct ab_arm *arm = &o->arm[a];
    char dir[4200];
    int out[2], errp[2], rc = 0;
    struct out_state *st = calloc(1, sizeof(*st));

    if (!st)
        return -ENOMEM;
    st->o = o;
    memset(r, 0, sizeof(*r));
    r->arm = a;
    snprintf(dir, sizeof(dir), "%s/%c-%s", o->root, arm->name, runid);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        rc = -errno;
        tsc_err("ab: %s: %s", dir, strerror(errno));
        goto out_free;
    }
    if (pipe2(out, O_CLOEXEC) != 0) {
        rc = -errno;
        goto out_free;
    }
    if (pipe2(errp, O_CLOEXEC) != 0) {
        rc = -errno;
        goto out_close_out;
    }
    fflush(NULL);
    double t0 = now_s();
    pid_t pid = fork();
    if (pid < 0) {
        rc = -errno;
        tsc_err("ab: fork: %s", strerror(errno));
        goto out_close_err;
    }
    if (pid == 0) {
        close(out[0]);
        close(errp[0]);
        child_exec(o, arm, dir, runid, out[1], errp[1]);
    }
    close(out[1]);
    close(errp[1]);
    out[1] = errp[1] = -1;

    /* A pidfd tells when the child exits even if a grandchild keeps the
     * output pipe open; without one, poll with a short timeout. */
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    struct rusage ru;
    int status = 0;
    double t1 = 0;
    bool exited = false, pipe_open = true;
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    while (!exited) {
        struct pollfd p[2] = {{out[0], POLLIN, 0}, {pidfd, POLLIN, 0}};
        int np = poll(pipe_open ? p : p + 1, pipe_open ? 2 : 1, pidfd >= 0 ? -1 : 10);
        if (np < 0 && errno != EINTR)
            break;
        if (pipe_open && p[0].revents)
            pipe_open = out_read(out[0], st);
        pid_t w = wait4(pid, &status, WNOHANG, &ru);
        if (w == pid) {
            t1 = now_s();
            exited = true;
        } else if (w < 0 && errno != EINTR) {
            break;
        }
    }
    if (!exited) {
        wait4(pid, &status, 0, &ru);
        t1 = now_s();
    }
    /* What the command wrote before it exited is in the pipe: read it. */
    if (pipe_open)
        out_read(out[0], st);
    if (st->len && !st->overlong)
        out_line(st);
    if (pidfd >= 0)
        close(pidfd);

    int child_errno = 0;
    if (read(errp[0], &child_errno, sizeof(child_errno)) == (ssize_t)sizeof(child_errno)) {
        tsc_err("ab: cannot run %s: %s", o->cmd[0], strerror(child_errno));
        rc = -child_errno;
        goto out_close_err;
    }
    r->status = status;
    r->v[M_WALL] = t1 - t0;
    r->v[M_CPU] = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                  (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    r->v[M_RSS] = (double)ru.ru_maxrss / 1024.0;
    r->has_metric = st->has_metric;
    r->v[M_METRIC] = st->has_metric ? st->metric : NAN;
    collect_reports(dir, r);

out_close_err:
    if (errp[0] >= 0)
        close(errp[0]);
    if (errp[1] >= 0)
        close(errp[1]);
out_close_out:
    if (out[0] >= 0)
        close(out[0]);
    if (out[1] >= 0)
        close(out[1]);
out_free:
    free(st);
    return rc;
}

static bool run_ok(const struct ab_run *r)
{
    return WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0;
}

static void describe_status(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exit %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(buf, len, "status 0x%x", status);
}

/* The values of measure m of arm a that count: successful runs, and for the
 * metric only those where it was found. */
static size_t arm_values(const struct ab_run *runs, size_t n, int a, enum ab_measure m, double *out)
{
    size_t k = 0;

    for (size_t i = 0; i < n; i++) {
        if (runs[i].arm != a || !run_ok(&runs[i]))
            continue;
        if (m == M_METRIC && !runs[i].has_metric)
            continue;
        out[k++] = runs[i].v[m];
    }
    return k;
}

struct ab_summary {
    size_t n[2];
    double med[2], min[2], max[2];
    struct tsc_ratio_ci ci;
    bool lower_better;
};

static const char *verdict(const struct ab_summary *s)
{
    if (!s->ci.defined || isnan(s->ci.lo))
        return "no ratio";
    if (s->ci.lo > 1.0)
        return s->lower_better ? "B worse (higher)" : "B better (higher)";
    if (s->ci.hi < 1.0)
        return s->lower_better ? "B better (lower)" : "B worse (lower)";
    return "no significant difference";
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void json_num(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, "%.9g", v);
    else
        fputs("null", f);
}

struct ab_flags {
    char text[8][256];
    unsigned n;
};

static void add_flag(struct ab_flags *fl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void add_flag(struct ab_flags *fl, const char *fmt, ...)
{
    va_list ap;

    if (fl->n >= 8)
        return;
    va_start(ap, fmt);
    vsnprintf(fl->text[fl->n++], sizeof(fl->text[0]), fmt, ap);
    va_end(ap);
}

static int write_json(const struct ab_opts *o, const struct ab_run *runs, size_t n,
                      const struct ab_summary *sum, bool measured[M_COUNT],
                      const struct ab_flags *fl)
{
    FILE *f = fopen(o->json, "we");

    if (!f) {
        tsc_err("ab: --json %s: %s", o->json, strerror(errno));
        return -1;
    }
    fprintf(f, "{\n  \"teshim_ab\": 1,\n  \"teshim_version\": ");
    json_str(f, TESHIM_VERSION);
    fprintf(f, ",\n  \"command\": [");
    for (char **c = o->cmd; *c; c++) {
        fprintf(f, "%s", c == o->cmd ? "" : ", ");
        json_str(f, *c);
    }
    fprintf(f, "],\n  \"runs_per_arm\": %u,\n  \"warmup_per_arm\": %u,\n", o->runs, o->warmup);
    fprintf(f,
            "  \"order\": \"alternating A B\",\n  \"bootstrap\": {\"resamples\": %u, "
            "\"level\": 0.95, \"method\": \"percentile\", \"seed\": %llu},\n",
            TSC_AB_RESAMPLES, (unsigned long long)o->seed);
    fprintf(f, "  \"metric_regex\": ");
    if (o->metric_re)
        json_str(f, o->metric_re);
    else
        fputs("null", f);
    fprintf(f, ",\n  \"metric_lower_is_better\": %s,\n  \"arms\": {",
            o->lower_better ? "true" : "false");
    for (int a = 0; a < 2; a++) {
        fprintf(f, "%s\n    \"%c\": {\"policy\": ", a ? "," : "", o->arm[a].name);
        json_str(f, o->arm[a].desc);
        fprintf(f, ", \"preload\": %s, \"passthrough\": %s}", o->arm[a].preload ? "true" : "false",
                o->arm[a].passthrough ? "true" : "false");
    }
    fprintf(f, "\n  },\n  \"runs\": [");
    for (size_t i = 0; i < n; i++) {
        const struct ab_run *r = &runs[i];
        fprintf(f, "%s\n    {\"arm\": \"%c\", \"index\": %u, \"wall_s\": ", i ? "," : "",
                r->arm ? 'B' : 'A', r->index);
        json_num(f, r->v[M_WALL]);
        fprintf(f, ", \"cpu_s\": ");
        json_num(f, r->v[M_CPU]);
        fprintf(f, ", \"max_rss_mib\": ");
        json_num(f, r->v[M_RSS]);
        fprintf(f, ", \"metric\": ");
        json_num(f, r->has_metric ? r->v[M_METRIC] : NAN);
        fprintf(f, ", \"exit_status\": ");
        if (WIFEXITED(r->status))
            fprintf(f, "%d, \"signal\": null", WEXITSTATUS(r->status));
        else
            fprintf(f, "null, \"signal\": %d", WIFSIGNALED(r->status) ? WTERMSIG(r->status) : 0);
        fprintf(f,
                ", \"reports\": %u, \"calls\": %.0f, \"injected\": %.0f, \"observed\": %.0f, "
                "\"fallbacks\": %.0f, \"gates\": ",
                r->reports, r->calls, r->injected, r->observed, r->fallbacks);
        json_str(f, r->gates);
        fprintf(f, ", \"policy_hash\": ");
        json_str(f, r->policy_hash);
        fprintf(f, "}");
    }
    fprintf(f, "\n  ],\n  \"summary\": {");
    bool first = true;
    for (int m = 0; m < M_COUNT; m++) {
        if (!measured[m])
            continue;
        const struct ab_summary *s = &sum[m];
        fprintf(f, "%s\n    \"%s\": {", first ? "" : ",", m_keys[m]);
        first = false;
        for (int a = 0; a < 2; a++) {
            fprintf(f, "\"%c\": {\"n\": %zu, \"median\": ", a ? 'B' : 'A', s->n[a]);
            json_num(f, s->med[a]);
            fprintf(f, ", \"min\": ");
            json_num(f, s->min[a]);
            fprintf(f, ", \"max\": ");
            json_num(f, s->max[a]);
            fprintf(f, "}, ");
        }
        fprintf(f, "\"ratio_b_over_a\": ");
        json_num(f, s->ci.ratio);
        fprintf(f, ", \"ci95\": [");
        json_num(f, s->ci.lo);
        fprintf(f, ", ");
        json_num(f, s->ci.hi);
        fprintf(f, "], \"lower_is_better\": %s, \"verdict\": ", s->lower_better ? "true" : "false");
        json_str(f, verdict(s));
        fprintf(f, "}");
    }
    fprintf(f, "\n  },\n  \"flags\": [");
    for (unsigned i = 0; i < fl->n; i++) {
        fprintf(f, "%s\n    ", i ? "," : "");
        json_str(f, fl->text[i]);
    }
    fprintf(f, "%s]\n}\n", fl->n ? "\n  " : "");
    if (fclose(f) != 0) {
        tsc_err("ab: --json %s: %s", o->json, strerror(errno));
        return -1;
    }
    return 0;
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
            if (arm_spec(&o->arm[a[9] == 'b'], v) != 0)
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
                   s->ci.hi, verdict(s),
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
    arm_describe(&o.arm[0]);
    arm_describe(&o.arm[1]);
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
        int r = run_once(&o, (int)(w % 2), id, &scratch);
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
        int r = run_once(&o, (int)(k % 2), id, &runs[nruns]);
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
        s->n[0] = arm_values(runs, nruns, 0, (enum ab_measure)m, va);
        s->n[1] = arm_values(runs, nruns, 1, (enum ab_measure)m, vb);
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
        if (!run_ok(r)) {
            describe_status(r->status, st, sizeof(st));
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
        add_flag(&flags, "%u run%s exited with a failure", failed, failed == 1 ? "" : "s");
    if (missing)
        add_flag(&flags, "%u successful run%s lacked the metric", missing, missing == 1 ? "" : "s");
    for (int a = 0; a < 2; a++)
        printf("arm %c: %u report%s from %u of %u runs; %.0f hooked calls, %.0f injected, "
               "%.0f observed, %.0f fallbacks; gate %s\n",
               a ? 'B' : 'A', reports[a], reports[a] == 1 ? "" : "s", with_reports[a], in_arm[a],
               calls[a], inj[a], obs[a], fb[a], gates[a][0] ? gates[a] : "-");
    bool b_flagged = false;
    if (o.arm[1].preload && !o.arm[1].passthrough && in_arm[1]) {
        if (!reports[1]) {
            add_flag(&flags, "FLAGGED: arm B wrote no teshim report: libteshim.so did not run in "
                             "the command (static or setuid binary?), the comparison says "
                             "nothing about the policy");
            b_flagged = true;
        } else if (inj[1] == 0 && obs[1] == 0) {
            add_flag(&flags,
                     "FLAGGED: policy injected nothing in arm B (%.0f hooked calls): the "
                     "comparison says nothing about the policy",
                     calls[1]);
            b_flagged = true;
        } else if (inj[1] == 0) {
            add_flag(&flags,
                     "FLAGGED: arm B only observed (%.0f calls would have been changed, "
                     "mode = observe): the comparison measures the shim, not the policy",
                     obs[1]);
            b_flagged = true;
        }
        if (fb[1] > 0)
            add_flag(&flags, "arm B fell back %.0f times: the policy was not applied everywhere",
                     fb[1]);
    }
    if (inj[0] > 0 && o.arm[0].passthrough)
        add_flag(&flags, "arm A (passthrough) injected %.0f times: check the configuration",
                 inj[0]);
    for (unsigned i = 0; i < flags.n; i++)
        printf("%s\n", flags.text[i]);
    if (!flags.n)
        printf("arm B applied its policy in every run; every run succeeded\n");

    if (o.json && write_json(&o, runs, nruns, sum, measured, &flags) == 0)
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
    arm_clear(&o.arm[0]);
    arm_clear(&o.arm[1]);
    free(runs);
    free((char *)o.orig_preload);
    return rc;
}
