/* teshim ab: the result as JSON (--json). */
#include "tsc.h"
#include "tsc_ab.h"
#include "tsc_ab_int.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

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

int ab_write_json(const struct ab_opts *o, const struct ab_run *runs, size_t n,
                  const struct ab_result *res)
{
    const struct ab_flags *fl = &res->flags;
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
            "\"level\": %g, \"method\": \"percentile\", \"seed\": %llu},\n"
            "  \"interval\": \"%s\",\n  \"min_runs_per_arm\": %d,\n  \"b_flagged\": %s,\n",
            TSC_AB_RESAMPLES, AB_LEVEL, (unsigned long long)o->seed, AB_INTERVAL_METHOD,
            AB_MIN_RUNS, res->b_flagged ? "true" : "false");
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
        if (!res->measured[m])
            continue;
        const struct ab_summary *s = &res->sum[m];
        fprintf(f, "%s\n    \"%s\": {", first ? "" : ",", ab_m_keys[m]);
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
        json_str(f, s->verdict);
        fprintf(f, ", \"has_verdict\": %s}", s->has_verdict ? "true" : "false");
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
