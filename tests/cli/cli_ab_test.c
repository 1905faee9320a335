/*
 * teshim ab end to end, on cli_host (an unmodified-style program making
 * hooked ibv_modify_qp calls against a stand-in libibverbs): alternation
 * order, metric parsing, failures and missing metrics reported, the interval
 * of the metric ratio, and the flag for a B arm that injected nothing.
 */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_util.h"
#include "tsc_json.h"
#include "../report_sum.h"

#define METRIC_RE "throughput ([0-9.]+) GB/s"

/* teshim ab ARGS... -- cli_host HOSTARGS...; returns the wait status. */
static int ab(const char *const *args, const char *const *host, char **out)
{
    char *argv[64];
    int n = 0;

    argv[n++] = (char *)cli_path("CLI_TESHIM");
    argv[n++] = "ab";
    for (; *args; args++)
        argv[n++] = (char *)*args;
    argv[n++] = "--";
    argv[n++] = (char *)cli_path("CLI_HOST");
    for (; *host; host++)
        argv[n++] = (char *)*host;
    argv[n] = NULL;
    return cli_run(argv, NULL, out);
}

static char *path_in(const char *dir, const char *name)
{
    char *p;

    ck_assert_int_ge(asprintf(&p, "%s/%s", dir, name), 0);
    return p;
}

static struct tsc_json *load_json(const char *path)
{
    char err[256];
    struct tsc_json *j = tsc_json_load(path, err, sizeof(err));

    ck_assert_msg(j, "%s: %s", path, err);
    return j;
}

START_TEST(arms_alternate_after_warmup)
{
    char *dir = cli_tmpdir(), *rec = path_in(dir, "order"), *json = path_in(dir, "ab.json"), *out;
    const char *args[] = {"-n", "3", "--warmup", "1", "--json", json, NULL};
    const char *host[] = {"--record", rec, NULL};

    int st = ab(args, host, &out);
    ck_assert_msg(WIFEXITED(st), "%s", out);
    char *order = cli_slurp(rec);
    ck_assert_ptr_nonnull(order);
    ck_assert_str_eq(order, "A warmup-1\nB warmup-1\nA 1\nB 1\nA 2\nB 2\nA 3\nB 3\n");
    /* The JSON lists the recorded runs in the order they ran. */
    struct tsc_json *j = load_json(json);
    const struct tsc_json *runs = tsc_json_get(j, "runs");
    ck_assert_ptr_nonnull(runs);
    int k = 0;
    for (const struct tsc_json *r = runs->child; r; r = r->next, k++) {
        ck_assert_str_eq(tsc_json_str(r, "arm", "?"), k % 2 ? "B" : "A");
        ck_assert_int_eq((int)tsc_json_num(r, "index", 0), k / 2 + 1);
    }
    ck_assert_int_eq(k, 6);
    tsc_json_free(j);
    free(order);
    free(out);
    free(rec);
    free(json);
    cli_rmtree(dir);
}
END_TEST

START_TEST(policy_applied_in_b_only)
{
    char *dir = cli_tmpdir(), *json = path_in(dir, "ab.json"), *out;
    const char *args[] = {"-n", "5", "--set", "rdma.traffic_class=106", "--json", json, NULL};
    const char *host[] = {"--fork", "--modify-qp", "5", NULL};

    int st = ab(args, host, &out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s", out);
    ck_assert_msg(strstr(out, "arm B: 10 reports from 5 of 5 runs; 50 hooked calls, 50 injected"),
                  "%s", out);
    ck_assert_msg(strstr(out, "arm A: 10 reports from 5 of 5 runs; 50 hooked calls, 0 injected"),
                  "%s", out);
    ck_assert_ptr_null(strstr(out, "FLAGGED"));
    struct tsc_json *j = load_json(json);
    for (const struct tsc_json *r = tsc_json_get(j, "runs")->child; r; r = r->next) {
        bool b = strcmp(tsc_json_str(r, "arm", "?"), "B") == 0;
        ck_assert_int_eq((int)tsc_json_num(r, "reports", 0), 2); /* parent and child */
        ck_assert_int_eq((int)tsc_json_num(r, "injected", -1), b ? 10 : 0);
        ck_assert_int_eq((int)tsc_json_num(r, "exit_status", -1), 0);
    }
    tsc_json_free(j);
    free(out);
    free(json);
    cli_rmtree(dir);
}
END_TEST

/* --reports keeps each run's reports; the variables ab sets for the program
 * (TESHIM_AB_ARM, TESHIM_AB_RUN) are not taken for unknown parameters. */
START_TEST(reports_kept_without_configuration_warnings)
{
    char *dir = cli_tmpdir(), *rep = path_in(dir, "reports"), *out;
    const char *args[] = {"-n", "1", "--reports", rep, "--policy-b", "set:rdma.traffic_class=7",
                          NULL};
    const char *host[] = {"--modify-qp", "1", NULL};

    /* One run per arm gives no verdict: exit status 1, the reports kept. */
    int st = ab(args, host, &out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1, "%s", out);
    ck_assert_msg(strstr(out, "no verdict: 1 run per arm, at least 5 needed"), "%s", out);
    const char *runs[] = {"A-1", "B-1"};
    for (int r = 0; r < 2; r++) {
        char *sub = path_in(rep, runs[r]);
        DIR *d = opendir(sub);
        struct dirent *e;
        int n = 0;
        ck_assert_ptr_nonnull(d);
        while ((e = readdir(d))) {
            if (!strstr(e->d_name, ".json"))
                continue;
            char *path = path_in(sub, e->d_name);
            char why[1024];
            ck_assert_msg(report_file_balances(path, why, sizeof(why)) == 0, "%s: %s", path, why);
            struct tsc_json *j = load_json(path);
            ck_assert_str_eq(tsc_json_str(j, "arm", "?"), r ? "B" : "A");
            ck_assert_int_eq((int)tsc_json_num(j, "config_warnings", -1), 0);
            tsc_json_free(j);
            free(path);
            n++;
        }
        closedir(d);
        ck_assert_int_eq(n, 1);
        free(sub);
    }
    free(out);
    free(rep);
    cli_rmtree(dir);
}
END_TEST

START_TEST(b_that_injected_nothing_is_flagged)
{
    char *out;
    /* A policy with no injection switched on: the hooks run, nothing changes. */
    const char *args[] = {"-n", "2", "--policy-b", "set:log.level=error", NULL};
    const char *host[] = {"--modify-qp", "3", NULL};

    int st = ab(args, host, &out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1, "%s", out);
    ck_assert_msg(strstr(out, "FLAGGED: policy injected nothing in arm B (6 hooked calls)"), "%s",
                  out);
    free(out);
}
END_TEST

START_TEST(b_in_observe_mode_is_flagged)
{
    char *out;
    const char *args[] = {"-n", "2", "--policy-b", "profile:observe", NULL};
    const char *host[] = {"--modify-qp", "3", NULL};

    int st = ab(args, host, &out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1, "%s", out);
    ck_assert_msg(strstr(out, "FLAGGED: arm B only observed (6 calls"), "%s", out);
    free(out);
}
END_TEST

START_TEST(b_without_reports_is_flagged)
{
    char *out;
    /* nopreload in B: no shim in the process, so no report at all. */
    const char *args[] = {"-n",         "1",         "--policy-a", "set:rdma.traffic_class=1",
                          "--policy-b", "nopreload", NULL};
    const char *host[] = {"--modify-qp", "1", NULL};

    int st = ab(args, host, &out);
    ck_assert_msg(WIFEXITED(st), "%s", out);
    ck_assert_msg(strstr(out, "arm B: 0 reports from 0 of 1 runs"), "%s", out);
    ck_assert_msg(strstr(out, "arm A: 1 report from 1 of 1 runs; 1 hooked calls, 1 injected"), "%s",
                  out);
    free(out);
}
END_TEST

START_TEST(metric_parsed_and_ratio_interval)
{
    char *dir = cli_tmpdir(), *json = path_in(dir, "ab.json"), *svg = path_in(dir, "ab.svg"), *out;
    const char *args[] = {"-n",     "5",  "--metric", METRIC_RE, "--set", "rdma.traffic_class=106",
                          "--json", json, "--plot",   svg,       NULL};
    const char *host[] = {"--modify-qp", "1", "--metric", "100,200", NULL};

    int st = ab(args, host, &out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s", out);
    struct tsc_json *j = load_json(json);
    const struct tsc_json *m = tsc_json_get(tsc_json_get(j, "summary"), "metric");
    ck_assert_ptr_nonnull(m);
    /* A: 100.001..100.005, B: 200.001..200.005; medians 100.003 and 200.003. */
    ck_assert_double_eq_tol(tsc_json_num(tsc_json_get(m, "A"), "median", 0), 100.003, 1e-9);
    ck_assert_double_eq_tol(tsc_json_num(tsc_json_get(m, "B"), "median", 0), 200.003, 1e-9);
    ck_assert_double_eq_tol(tsc_json_num(tsc_json_get(m, "B"), "min", 0), 200.001, 1e-9);
    ck_assert_double_eq_tol(tsc_json_num(tsc_json_get(m, "B"), "max", 0), 200.005, 1e-9);
    double ratio = tsc_json_num(m, "ratio_b_over_a", 0);
    ck_assert_double_eq_tol(ratio, 200.003 / 100.003, 1e-9);
    const struct tsc_json *ci = tsc_json_get(m, "ci95");
    double lo = ci->child->num, hi = ci->child->next->num;
    ck_assert(lo <= ratio && ratio <= hi);
    ck_assert(lo > 1.99 && hi < 2.01);
    ck_assert_str_eq(tsc_json_str(m, "verdict", ""), "B better (higher)");
    ck_assert_int_eq((int)tsc_json_num(m, "has_verdict", -1), 1);
    ck_assert_str_eq(tsc_json_str(j, "interval", ""),
                     "95 % percentile-bootstrap interval of the B/A ratio of medians");
    ck_assert_int_eq((int)tsc_json_num(j, "min_runs_per_arm", 0), 5);
    tsc_json_free(j);
    /* The table states the method beside the interval. */
    ck_assert_msg(strstr(out, "B/A and its interval: 95 % percentile-bootstrap interval of the B/A "
                              "ratio of medians"),
                  "%s", out);
    ck_assert_msg(strstr(out, "95% CI [") && strstr(out, "B better (higher), higher is better"),
                  "%s", out);
    free(out);
    free(json);
    free(svg);
    cli_rmtree(dir);
}
END_TEST

/* Fewer than 5 runs per arm: the table, the JSON and the exit status say
 * there is no verdict, even for a twofold difference. */
START_TEST(no_verdict_below_minimum_runs)
{
    char *dir = cli_tmpdir(), *json = path_in(dir, "ab.json"), *out;
    const char *args[] = {"-n",     "4",  "--metric", METRIC_RE, "--set", "rdma.traffic_class=106",
                          "--json", json, NULL};
    const char *host[] = {"--modify-qp", "1", "--metric", "100,200", NULL};

    int st = ab(args, host, &out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1, "%s", out);
    ck_assert_msg(strstr(out, "-n 4: below 5 runs per arm ab gives no verdict"), "%s", out);
    ck_assert_msg(strstr(out, "no verdict: 4 runs per arm, at least 5 needed"), "%s", out);
    ck_assert_ptr_null(strstr(out, "B better"));
    struct tsc_json *j = load_json(json);
    const struct tsc_json *m = tsc_json_get(tsc_json_get(j, "summary"), "metric");
    ck_assert_str_eq(tsc_json_str(m, "verdict", ""),
                     "no verdict: 4 runs per arm, at least 5 needed");
    ck_assert_int_eq((int)tsc_json_num(m, "has_verdict", -1), 0);
    tsc_json_free(j);
    free(out);

    /* Failed runs count against the minimum: 5 runs, one failure in A. */
    const char *args5[] = {"-n", "5", "--metric", METRIC_RE, "--set", "rdma.traffic_class=106",
                           NULL};
    const char *host5[] = {"--modify-qp", "1", "--metric", "100,200", "--exit", "A:3:4", NULL};
    st = ab(args5, host5, &out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1, "%s", out);
    ck_assert_msg(strstr(out, "no verdict: 4 runs in arm A and 5 in arm B, at least 5 per arm "
                              "needed"),
                  "%s", out);
    free(out);
    free(json);
    cli_rmtree(dir);
}
END_TEST

/* A flagged arm B gets no verdict, however clear the difference. */
START_TEST(no_verdict_for_flagged_b)
{
    char *dir = cli_tmpdir(), *json = path_in(dir, "ab.json"), *out;
    const char *args[] = {"-n",      "5",          "--metric",
                          METRIC_RE, "--policy-b", "set:log.level=error",
                          "--json",  json,         NULL};
    const char *host[] = {"--modify-qp", "1", "--metric", "100,200", NULL};

    int st = ab(args, host, &out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1, "%s", out);
    ck_assert_msg(strstr(out, "FLAGGED: policy injected nothing in arm B"), "%s", out);
    ck_assert_msg(strstr(out, "no verdict: arm B is flagged"), "%s", out);
    ck_assert_ptr_null(strstr(out, "B better"));
    struct tsc_json *j = load_json(json);
    ck_assert_int_eq((int)tsc_json_num(j, "b_flagged", -1), 1);
    const struct tsc_json *m = tsc_json_get(tsc_json_get(j, "summary"), "metric");
    ck_assert_int_eq((int)tsc_json_num(m, "has_verdict", -1), 0);
    tsc_json_free(j);
    free(out);
    free(json);
    cli_rmtree(dir);
}
END_TEST

/* The contents of the <text class="CLS" ...> elements of an SVG, in order;
 * returns how many (at most max). */
static int svg_texts(const char *svg, const char *cls, char out[][256], int max)
{
    char want[64];
    int n = 0;

    snprintf(want, sizeof(want), "<text class=\"%s\"", cls);
    for (const char *p = strstr(svg, want); p && n < max; p = strstr(p + 1, want)) {
        const char *b = strchr(p, '>'), *e = b ? strstr(b, "</text>") : NULL;
        ck_assert_msg(b && e, "unterminated <text> in the SVG");
        snprintf(out[n++], 256, "%.*s", (int)(e - b - 1), b + 1);
    }
    return n;
}

/* Every panel's ticks: from 0 (all values here are positive), equal steps
 * of 1, 2 or 5 times a power of ten, at most 7 of them. Returns the
 * panels; top[] gets each panel's last tick. */
static int check_svg_axes(const char *svg, double *top, int max_panels)
{
    char t[64][256];
    int n = svg_texts(svg, "tick", t, 64), panels = 0, in_panel = 0;
    double prev = 0, step = 0;

    ck_assert_int_ge(n, 2);
    for (int i = 0; i < n; i++) {
        char *end;
        double v = strtod(t[i], &end);
        ck_assert_msg(*end == '\0', "tick '%s' is not a number", t[i]);
        if (i == 0 || v <= prev) { /* a new panel starts at its lowest tick */
            ck_assert_msg(v == 0, "panel %d's axis starts at %s, not 0", panels + 1, t[i]);
            ck_assert_int_lt(panels, max_panels);
            panels++;
            in_panel = 1;
            step = 0;
        } else {
            double d = v - prev;
            if (step == 0) {
                step = d;
                double mant = step / pow(10, floor(log10(step) + 1e-9));
                ck_assert_msg(fabs(mant - 1) < 1e-6 || fabs(mant - 2) < 1e-6 ||
                                  fabs(mant - 5) < 1e-6,
                              "tick step %g is not 1, 2 or 5 times a power of ten", step);
            }
            ck_assert_msg(fabs(d - step) < step * 1e-6, "uneven ticks: %g then %g", step, d);
            ck_assert_msg(fabs(v / step - round(v / step)) < 1e-6, "tick %s not round", t[i]);
            ck_assert_int_le(++in_panel, 7);
        }
        top[panels - 1] = v;
        prev = v;
    }
    return panels;
}

/* The picture: B/A, its interval and the method, the flag, and value axes
 * from 0 with round ticks, so a 0.5 % difference looks like one. */
START_TEST(svg_ratio_interval_flag_round_axis_from_zero)
{
    char *dir = cli_tmpdir(), *svg = path_in(dir, "ab.svg"), *out, t[8][256];
    const char *args[] = {"-n",     "5", "--metric", METRIC_RE, "--set", "rdma.traffic_class=106",
                          "--plot", svg, NULL};
    const char *host[] = {"--modify-qp", "1", "--metric", "1000,1005", NULL};
    double top[4];

    int st = ab(args, host, &out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s", out);
    free(out);
    char *pic = cli_slurp(svg);
    ck_assert_ptr_nonnull(pic);
    ck_assert_msg(strstr(pic, "<svg") && strstr(pic, "</svg>"), "%s", pic);
    ck_assert_int_eq(check_svg_axes(pic, top, 4), 4); /* metric, wall, cpu, RSS */
    /* The metric (about 1000 and 1005) on 0..1500, not zoomed onto 1000..1005. */
    ck_assert_double_eq(top[0], 1500);
    ck_assert_int_eq(svg_texts(pic, "ratio", t, 8), 4);
    ck_assert_str_eq(t[0], "B/A = 1.0050");
    ck_assert_int_eq(svg_texts(pic, "interval", t, 8), 4);
    ck_assert_msg(strncmp(t[0], "95 % interval [1.00", 19) == 0, "%s", t[0]);
    ck_assert_int_eq(svg_texts(pic, "verdict", t, 8), 4);
    ck_assert_str_eq(t[0], "B better (higher)");
    ck_assert_int_eq(svg_texts(pic, "method", t, 8), 1);
    ck_assert_msg(strstr(t[0], "95 % percentile-bootstrap interval of the B/A ratio of medians"),
                  "%s", t[0]);
    ck_assert_int_eq(svg_texts(pic, "flag", t, 8), 1);
    ck_assert_str_eq(t[0], "not flagged: arm B applied its policy");
    free(pic);

    /* A flagged B: the flag across the top, no verdict in any panel. */
    const char *flagged[] = {
        "-n", "5", "--metric", METRIC_RE, "--policy-b", "set:log.level=error", "--plot", svg, NULL};
    st = ab(flagged, host, &out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1, "%s", out);
    free(out);
    pic = cli_slurp(svg);
    ck_assert_ptr_nonnull(pic);
    ck_assert_int_eq(svg_texts(pic, "flag", t, 8), 1);
    ck_assert_msg(strncmp(t[0], "FLAGGED: policy injected nothing in arm B", 41) == 0, "%s", t[0]);
    ck_assert_int_eq(svg_texts(pic, "verdict", t, 8), 4);
    for (int i = 0; i < 4; i++)
        ck_assert_str_eq(t[i], "no verdict: arm B is flagged (it applied no policy)");
    free(pic);
    free(svg);
    cli_rmtree(dir);
}
END_TEST

/* A profile typo stops ab before any run, naming the nearest profile. */
START_TEST(unknown_profile_refused_before_running)
{
    char *dir = cli_tmpdir(), *rec = path_in(dir, "order"), *out;
    const char *typo[] = {"--profile", "rdma-ro", NULL};
    const char *typo_b[] = {"--policy-b", "profile:tcp-qo", NULL};
    const char *unscoped[] = {"--policy-b", "profile:tcp-qos", NULL};
    const char *host[] = {"--record", rec, NULL};

    int st = ab(typo, host, &out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 2, "%s", out);
    ck_assert_msg(strstr(out, "profile 'rdma-ro' not found") &&
                      strstr(out, "did you mean 'rdma-ro-tc'?"),
                  "%s", out);
    ck_assert_msg(strstr(out, "ab: arm B: 1 problem above in its policy; nothing was run"), "%s",
                  out);
    free(out);
    st = ab(typo_b, host, &out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 2, "%s", out);
    ck_assert_msg(strstr(out, "did you mean 'tcp-qos'?"), "%s", out);
    free(out);
    /* A profile that loads but can apply nothing (no socket in scope). */
    st = ab(unscoped, host, &out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 2, "%s", out);
    ck_assert_msg(strstr(out, "tcp.ports and tcp.peers are empty"), "%s", out);
    free(out);
    ck_assert_msg(access(rec, F_OK) != 0, "the command ran");
    free(rec);
    cli_rmtree(dir);
}
END_TEST

START_TEST(missing_metric_and_failures_reported)
{
    char *dir = cli_tmpdir(), *json = path_in(dir, "ab.json"), *out;
    const char *args[] = {"-n", "3", "--metric", METRIC_RE, "--json", json, NULL};
    const char *host[] = {"--exit", "A:2:3", "--skip-metric", "B:2", "--metric", "1,2", NULL};

    int st = ab(args, host, &out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1, "%s", out);
    ck_assert_msg(strstr(out, "run B#2: no output line matched --metric"), "%s", out);
    ck_assert_msg(strstr(out, "run A#2 failed: exit 3 (left out of the statistics)"), "%s", out);
    struct tsc_json *j = load_json(json);
    int k = 0;
    for (const struct tsc_json *r = tsc_json_get(j, "runs")->child; r; r = r->next, k++) {
        const struct tsc_json *mv = tsc_json_get(r, "metric");
        if (k == 3) /* B#2 */
            ck_assert_int_eq(mv->type, TSC_JSON_NULL);
        else
            ck_assert_int_eq(mv->type, TSC_JSON_NUM);
        ck_assert_int_eq((int)tsc_json_num(r, "exit_status", -1), k == 2 ? 3 : 0);
    }
    const struct tsc_json *m = tsc_json_get(tsc_json_get(j, "summary"), "metric");
    ck_assert_int_eq((int)tsc_json_num(tsc_json_get(m, "A"), "n", 0), 2);
    ck_assert_int_eq((int)tsc_json_num(tsc_json_get(m, "B"), "n", 0), 2);
    tsc_json_free(j);
    free(out);
    free(json);
    cli_rmtree(dir);
}
END_TEST

START_TEST(command_not_found_is_an_error_not_a_crash)
{
    char *out;
    char *argv[] = {(char *)cli_path("CLI_TESHIM"),
                    "ab",
                    "-n",
                    "2",
                    "--",
                    "/nonexistent/teshim-cli-no-such-program",
                    NULL};

    int st = cli_run(argv, NULL, &out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 127, "%s", out);
    ck_assert_msg(strstr(out, "cannot run /nonexistent/teshim-cli-no-such-program"), "%s", out);
    free(out);
}
END_TEST

START_TEST(bad_policy_spec_is_a_usage_error)
{
    char *out;
    char *argv[] = {(char *)cli_path("CLI_TESHIM"),
                    "ab",
                    "--policy-b",
                    "set:rdma.trafic_class=1",
                    "--",
                    "true",
                    NULL};

    int st = cli_run(argv, NULL, &out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 2, "%s", out);
    ck_assert_msg(strstr(out, "did you mean 'rdma.traffic_class'"), "%s", out);
    free(out);
}
END_TEST

static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* teshim demo --pair, the command the demo's RDMA A/B step gives ab: the
 * client starts only once the server listens (no sleep), and the status
 * says whether both succeeded. */
START_TEST(demo_pair_runs_server_then_client)
{
    char port[16], listen_spec[64], connect_spec[64], *out;

    if (system("command -v socat >/dev/null 2>&1") != 0) {
        fprintf(stderr, "socat not installed: demo --pair not tested\n");
        return;
    }
    snprintf(port, sizeof(port), "%d", free_port());
    snprintf(listen_spec, sizeof(listen_spec), "TCP-LISTEN:%s,bind=127.0.0.1", port);
    snprintf(connect_spec, sizeof(connect_spec), "TCP:127.0.0.1:%s", port);
    char *ok[] = {(char *)cli_path("CLI_TESHIM"),
                  "demo",
                  "--pair",
                  port,
                  "--",
                  "socat",
                  "-u",
                  listen_spec,
                  "STDOUT",
                  "--",
                  "socat",
                  "-u",
                  "EXEC:echo paired",
                  connect_spec,
                  NULL};
    int st = cli_run(ok, NULL, &out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s", out);
    ck_assert_msg(strstr(out, "paired"), "the server printed what the client sent: %s", out);
    free(out);

    /* A client that fails makes the pair fail. */
    snprintf(port, sizeof(port), "%d", free_port());
    snprintf(listen_spec, sizeof(listen_spec), "TCP-LISTEN:%s,bind=127.0.0.1", port);
    char *bad[] = {(char *)cli_path("CLI_TESHIM"),
                   "demo",
                   "--pair",
                   port,
                   "--",
                   "socat",
                   "-u",
                   listen_spec,
                   "STDOUT",
                   "--",
                   "false",
                   NULL};
    st = cli_run(bad, NULL, &out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1, "%s", out);
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cli_ab");
    TCase *tc = tcase_create("ab");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, arms_alternate_after_warmup);
    tcase_add_test(tc, policy_applied_in_b_only);
    tcase_add_test(tc, reports_kept_without_configuration_warnings);
    tcase_add_test(tc, b_that_injected_nothing_is_flagged);
    tcase_add_test(tc, b_in_observe_mode_is_flagged);
    tcase_add_test(tc, b_without_reports_is_flagged);
    tcase_add_test(tc, metric_parsed_and_ratio_interval);
    tcase_add_test(tc, no_verdict_below_minimum_runs);
    tcase_add_test(tc, no_verdict_for_flagged_b);
    tcase_add_test(tc, unknown_profile_refused_before_running);
    tcase_add_test(tc, svg_ratio_interval_flag_round_axis_from_zero);
    tcase_add_test(tc, missing_metric_and_failures_reported);
    tcase_add_test(tc, command_not_found_is_an_error_not_a_crash);
    tcase_add_test(tc, bad_policy_spec_is_a_usage_error);
    tcase_add_test(tc, demo_pair_runs_server_then_client);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
