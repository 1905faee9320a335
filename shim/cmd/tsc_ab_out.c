/*
 * teshim ab, the output step: the table of each measure with B/A, its
 * interval and the method, the runs' problems, what each arm's reports show,
 * the flags, then --json and --plot.
 */
#include "tsc.h"
#include "tsc_ab.h"
#include "tsc_ab_int.h"
#include "tsc_proc.h"

#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

static const char *const m_names[M_COUNT] = {"metric", "wall time", "cpu time", "peak RSS"};
const char *const ab_m_units[M_COUNT] = {"", "s", "s", "MiB"};

const char *ab_measure_name(const struct ab_opts *o, int m)
{
    if (m == M_METRIC)
        return o->metric_name ? o->metric_name : "metric";
    return m_names[m];
}

static void print_table(const struct ab_opts *o, const struct ab_result *res)
{
    printf("\nB/A and its interval: %s\n"
           "(%u resamples of each arm, seed %llu); a verdict needs at least %d runs per arm\n"
           "and an arm B that applied its policy.\n",
           AB_INTERVAL_METHOD, TSC_AB_RESAMPLES, (unsigned long long)o->seed, AB_MIN_RUNS);
    printf("\n%-22s %-4s %12s %12s %12s %4s\n", "MEASURE", "ARM", "MEDIAN", "MIN", "MAX", "N");
    for (int m = 0; m < M_COUNT; m++) {
        if (!res->measured[m])
            continue;
        char label[64];
        if (m == M_METRIC)
            snprintf(label, sizeof(label), "%s", ab_measure_name(o, m));
        else
            snprintf(label, sizeof(label), "%s (%s)", m_names[m], ab_m_units[m]);
        const struct ab_summary *s = &res->sum[m];
        for (int a = 0; a < 2; a++) {
            if (s->n[a])
                printf("%-22.22s %-4c %12.5g %12.5g %12.5g %4zu\n", a ? "" : label, a ? 'B' : 'A',
                       s->med[a], s->min[a], s->max[a], s->n[a]);
            else
                printf("%-22.22s %-4c %12s %12s %12s %4d\n", a ? "" : label, a ? 'B' : 'A', "-",
                       "-", "-", 0);
        }
        const char *better =
            m == M_METRIC ? (o->lower_better ? ", lower is better" : ", higher is better") : "";
        if (s->ci.defined)
            printf("%-22s B/A  %12.4f  95%% CI [%.4f, %.4f]  %s%s\n", "", s->ci.ratio, s->ci.lo,
                   s->ci.hi, s->verdict, s->has_verdict ? better : "");
        else
            printf("%-22s B/A  %12s  (an arm has no values, or A's median is 0)  %s\n", "", "n/a",
                   s->verdict);
    }
}

static void print_runs(const struct ab_opts *o, const struct ab_run *runs, size_t n)
{
    printf("\n");
    for (size_t i = 0; i < n; i++) {
        const struct ab_run *r = &runs[i];
        char st[64];
        if (!ab_run_ok(r)) {
            tsc_proc_describe(r->status, st, sizeof(st));
            printf("run %c#%u failed: %s (left out of the statistics)\n", r->arm ? 'B' : 'A',
                   r->index, st);
        } else if (o->metric_re && !r->has_metric) {
            printf("run %c#%u: no output line matched --metric '%s'\n", r->arm ? 'B' : 'A',
                   r->index, o->metric_re);
        }
    }
}

static void print_arms(const struct ab_result *res)
{
    for (int a = 0; a < 2; a++) {
        const struct ab_totals *t = &res->arm[a];
        printf("arm %c: %u report%s from %u of %u runs; %.0f hooked calls, %.0f injected, "
               "%.0f observed, %.0f fallbacks; gate %s\n",
               a ? 'B' : 'A', t->reports, t->reports == 1 ? "" : "s", t->with_reports, t->runs,
               t->calls, t->injected, t->observed, t->fallbacks, t->gates[0] ? t->gates : "-");
    }
    for (unsigned i = 0; i < res->flags.n; i++)
        printf("%s\n", res->flags.text[i]);
    if (!res->flags.n)
        printf("arm B applied its policy in every run; every run succeeded\n");
}

static void write_plot(const struct ab_opts *o, const struct ab_result *res)
{
    struct tsc_ab_series ser[M_COUNT];
    size_t ns = 0;
    const char *flag = NULL;

    for (unsigned i = 0; i < res->flags.n && !flag; i++)
        if (strncmp(res->flags.text[i], "FLAGGED", 7) == 0)
            flag = res->flags.text[i];
    for (int m = 0; m < M_COUNT; m++) {
        if (!res->measured[m])
            continue;
        const struct ab_summary *s = &res->sum[m];
        ser[ns++] = (struct tsc_ab_series){
            .name = ab_measure_name(o, m),
            .unit = m == M_METRIC ? "application's figure" : ab_m_units[m],
            .lower_better = s->lower_better,
            .v = {res->vals[m][0], res->vals[m][1]},
            .n = {s->n[0], s->n[1]},
            .ratio = s->ci,
            .verdict = s->verdict,
        };
    }
    char title[2600];
    snprintf(title, sizeof(title), "teshim ab: %s\narm A: %s\narm B: %s", o->cmd[0], o->arm[0].desc,
             o->arm[1].desc);
    if (tsc_ab_plot_svg(o->plot, title, AB_INTERVAL_METHOD, flag, ser, ns) == 0)
        printf("picture of both arms written to %s\n", o->plot);
}

void ab_output(const struct ab_opts *o, const struct ab_run *runs, size_t n,
               const struct ab_result *res)
{
    print_table(o, res);
    print_runs(o, runs, n);
    print_arms(res);
    if (o->json && ab_write_json(o, runs, n, res) == 0)
        printf("runs and summary written to %s\n", o->json);
    if (o->plot)
        write_plot(o, res);
    if (o->reports_dir)
        printf("teshim reports of every run kept in %s/<arm>-<run>/\n", o->root);
}
