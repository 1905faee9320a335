/*
 * teshim ab, the summarise step: per measure the median, min and max of each
 * arm and the interval of B/A; per arm what its reports add up to; the
 * flags (failed runs, missing metrics, a B that applied nothing); and the
 * verdict of each measure, withheld below AB_MIN_RUNS runs per arm or when
 * arm B is flagged.
 */
#include "tsc.h"
#include "tsc_ab_int.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The values of measure m of arm a that count: successful runs, and for the
 * metric only those where it was found. */
size_t ab_arm_values(const struct ab_run *runs, size_t n, int a, enum ab_measure m, double *out)
{
    size_t k = 0;

    for (size_t i = 0; i < n; i++) {
        if (runs[i].arm != a || !ab_run_ok(&runs[i]))
            continue;
        if (m == M_METRIC && !runs[i].has_metric)
            continue;
        out[k++] = runs[i].v[m];
    }
    return k;
}

void ab_verdict(struct ab_summary *s, bool b_flagged)
{
    size_t n = s->n[0] < s->n[1] ? s->n[0] : s->n[1];
    const char *v;

    s->has_verdict = false;
    if (b_flagged) {
        snprintf(s->verdict, sizeof(s->verdict),
                 "no verdict: arm B is flagged (it applied no policy)");
        return;
    }
    if (n < AB_MIN_RUNS) {
        if (s->n[0] == s->n[1])
            snprintf(s->verdict, sizeof(s->verdict),
                     "no verdict: %zu run%s per arm, at least %d needed", n, n == 1 ? "" : "s",
                     AB_MIN_RUNS);
        else
            snprintf(s->verdict, sizeof(s->verdict),
                     "no verdict: %zu runs in arm A and %zu in arm B, at least %d per arm needed",
                     s->n[0], s->n[1], AB_MIN_RUNS);
        return;
    }
    if (!s->ci.defined || isnan(s->ci.lo)) {
        snprintf(s->verdict, sizeof(s->verdict), "no verdict: no ratio (A's median is 0)");
        return;
    }
    if (s->ci.lo > 1.0)
        v = s->lower_better ? "B worse (higher)" : "B better (higher)";
    else if (s->ci.hi < 1.0)
        v = s->lower_better ? "B better (lower)" : "B worse (lower)";
    else
        v = "no significant difference";
    snprintf(s->verdict, sizeof(s->verdict), "%s", v);
    s->has_verdict = true;
}

void ab_add_flag(struct ab_flags *fl, const char *fmt, ...)
{
    va_list ap;

    if (fl->n >= sizeof(fl->text) / sizeof(fl->text[0]))
        return;
    va_start(ap, fmt);
    vsnprintf(fl->text[fl->n++], sizeof(fl->text[0]), fmt, ap);
    va_end(ap);
}

static void add_run(struct ab_totals *t, const struct ab_run *r)
{
    t->injected += r->injected;
    t->observed += r->observed;
    t->calls += r->calls;
    t->fallbacks += r->fallbacks;
    t->reports += r->reports;
    t->with_reports += r->reports > 0;
    t->runs++;
    if (r->gates[0] && !strstr(t->gates, r->gates)) {
        size_t l = strlen(t->gates);
        snprintf(t->gates + l, sizeof(t->gates) - l, "%s%s", l ? "," : "", r->gates);
    }
}

/* Whether the policies did anything: arm B flagged when it did not. */
static void flag_arms(const struct ab_opts *o, struct ab_result *res)
{
    const struct ab_totals *b = &res->arm[1];

    if (o->arm[1].preload && !o->arm[1].passthrough && b->runs) {
        if (!b->reports) {
            ab_add_flag(&res->flags, "FLAGGED: arm B wrote no teshim report: libteshim.so did not "
                                     "run in the command (static or setuid binary?), the "
                                     "comparison says nothing about the policy");
            res->b_flagged = true;
        } else if (b->injected == 0 && b->observed == 0) {
            ab_add_flag(&res->flags,
                        "FLAGGED: policy injected nothing in arm B (%.0f hooked calls): the "
                        "comparison says nothing about the policy",
                        b->calls);
            res->b_flagged = true;
        } else if (b->injected == 0) {
            ab_add_flag(&res->flags,
                        "FLAGGED: arm B only observed (%.0f calls would have been changed, "
                        "mode = observe): the comparison measures the shim, not the policy",
                        b->observed);
            res->b_flagged = true;
        }
        if (b->fallbacks > 0)
            ab_add_flag(&res->flags,
                        "arm B fell back %.0f times: the policy was not applied everywhere",
                        b->fallbacks);
    }
    if (res->arm[0].injected > 0 && o->arm[0].passthrough)
        ab_add_flag(&res->flags, "arm A (passthrough) injected %.0f times: check the configuration",
                    res->arm[0].injected);
}

int ab_summarise(const struct ab_opts *o, const struct ab_run *runs, size_t n,
                 struct ab_result *res)
{
    memset(res, 0, sizeof(*res));
    for (size_t i = 0; i < n; i++) {
        const struct ab_run *r = &runs[i];
        if (!ab_run_ok(r))
            res->failed++;
        else if (o->metric_re && !r->has_metric)
            res->missing++;
        add_run(&res->arm[r->arm], r);
    }
    if (res->failed)
        ab_add_flag(&res->flags, "%u run%s exited with a failure", res->failed,
                    res->failed == 1 ? "" : "s");
    if (res->missing)
        ab_add_flag(&res->flags, "%u successful run%s lacked the metric", res->missing,
                    res->missing == 1 ? "" : "s");
    flag_arms(o, res);

    res->measured[M_METRIC] = o->metric_re != NULL;
    res->measured[M_WALL] = res->measured[M_CPU] = res->measured[M_RSS] = true;
    for (int m = 0; m < M_COUNT; m++) {
        struct ab_summary *s = &res->sum[m];
        s->lower_better = m == M_METRIC ? o->lower_better : true;
        for (int a = 0; a < 2; a++) {
            double *v = malloc((n + 1) * sizeof(*v));
            if (!v) {
                tsc_err("ab: out of memory");
                return -ENOMEM;
            }
            res->vals[m][a] = v;
            s->n[a] = ab_arm_values(runs, n, a, (enum ab_measure)m, v);
            s->med[a] = tsc_median(v, s->n[a]);
            s->min[a] = tsc_min(v, s->n[a]);
            s->max[a] = tsc_max(v, s->n[a]);
        }
        if (tsc_bootstrap_ratio(res->vals[m][0], s->n[0], res->vals[m][1], s->n[1],
                                TSC_AB_RESAMPLES, AB_LEVEL, o->seed, &s->ci)) {
            tsc_err("ab: out of memory in the bootstrap");
            return -ENOMEM;
        }
        ab_verdict(s, res->b_flagged);
    }
    return 0;
}

void ab_result_free(struct ab_result *res)
{
    for (int m = 0; m < M_COUNT; m++)
        for (int a = 0; a < 2; a++) {
            free(res->vals[m][a]);
            res->vals[m][a] = NULL;
        }
}
