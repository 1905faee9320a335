/*
 * teshim ab --plot: both arms' distributions as a self-contained SVG, with
 * B/A, its interval and the verdict under each panel and arm B's flag
 * across the top.
 *
 * The value axis has round ticks (1-2-5 steps) and starts at 0 whenever
 * every value is positive: a reader compares bar heights against the
 * axis's origin, and an axis zoomed onto the data makes a 0.5 % difference
 * fill the panel. The text elements a reader (or a test) looks for carry a
 * class: tick, ratio, interval, verdict, method, flag.
 */
#include "tsc.h"
#include "tsc_ab.h"
#include "tsc_abstat.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define PANEL_W 320
#define PANEL_H 360
#define PLOT_TOP 40 /* inside a panel: room for the panel title */
#define PLOT_H 200
#define AXIS_X 70
#define MAX_TICKS 5

static const char *const arm_color[2] = {"#1f77b4", "#d62728"};

static void xml_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else if (*s == '&')
            fputs("&amp;", f);
        else if (*s == '"')
            fputs("&quot;", f);
        else
            fputc(*s, f);
    }
}

/* <text> with a class, escaped content. */
static void text_el(FILE *f, double x, double y, const char *cls, const char *attrs,
                    const char *content)
{
    fprintf(f, "<text class=\"%s\" x=\"%.1f\" y=\"%.1f\"%s%s>", cls, x, y, attrs[0] ? " " : "",
            attrs);
    xml_text(f, content);
    fprintf(f, "</text>\n");
}

/* Value to y inside a panel whose axis runs over [lo, hi]. */
static double y_of(double v, double lo, double hi, double top)
{
    return top + PLOT_TOP + PLOT_H - (v - lo) / (hi - lo) * PLOT_H;
}

/* Decimals that show every multiple of step exactly (none for step >= 1). */
static int tick_decimals(double step)
{
    int d = (int)-floor(log10(step) + 1e-9);

    return d > 0 ? d : 0;
}

/* The value axis: [lo, hi] to its ticks; lo is 0 when every value is
 * positive. Returns the number of ticks (0: no values). */
static size_t value_axis(const struct tsc_ab_series *s, double t[MAX_TICKS + 2], double *step)
{
    double lo = INFINITY, hi = -INFINITY;

    for (int a = 0; a < 2; a++)
        for (size_t i = 0; i < s->n[a]; i++) {
            lo = fmin(lo, s->v[a][i]);
            hi = fmax(hi, s->v[a][i]);
        }
    if (!(lo <= hi))
        return 0;
    if (lo >= 0)
        lo = 0;
    if (hi <= 0 && lo < 0)
        hi = 0;
    if (hi == 0 && lo == 0)
        hi = 1; /* every value 0 (a CPU time below the clock's tick): 0..1 */
    return tsc_axis_ticks(lo, hi, MAX_TICKS, t, step);
}

static void arm_column(FILE *f, const struct tsc_ab_series *s, int a, double ax, double lo,
                       double hi, double top)
{
    double cx = ax + 60 + a * 110;

    fprintf(f,
            "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"%s\">arm %c "
            "(n=%zu)</text>\n",
            cx, top + PLOT_TOP + PLOT_H + 20, arm_color[a], a ? 'B' : 'A', s->n[a]);
    if (!s->n[a])
        return;
    double mn = tsc_min(s->v[a], s->n[a]), mx = tsc_max(s->v[a], s->n[a]);
    double med = tsc_median(s->v[a], s->n[a]);
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n", cx,
            y_of(mn, lo, hi, top), cx, y_of(mx, lo, hi, top), arm_color[a]);
    fprintf(f,
            "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
            "stroke-width=\"3\"/>\n",
            cx - 25, y_of(med, lo, hi, top), cx + 25, y_of(med, lo, hi, top), arm_color[a]);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" fill=\"%s\">%.4g</text>\n", cx + 27,
            y_of(med, lo, hi, top) + 3, arm_color[a], med);
    for (size_t i = 0; i < s->n[a]; i++) {
        /* Spread the dots sideways, in run order, so equal values show. */
        double dx = s->n[a] > 1 ? -18.0 + 36.0 * (double)i / (double)(s->n[a] - 1) : 0;
        fprintf(f,
                "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\" "
                "fill-opacity=\"0.6\"/>\n",
                cx + dx, y_of(s->v[a][i], lo, hi, top), arm_color[a]);
    }
}

/* Under the panel: B/A, its interval, the verdict. */
static void ratio_lines(FILE *f, const struct tsc_ab_series *s, double x, double y)
{
    char buf[256];
    const struct tsc_ratio_ci *r = &s->ratio;

    if (r->defined) {
        snprintf(buf, sizeof(buf), "B/A = %.4f", r->ratio);
        text_el(f, x, y, "ratio", "font-weight=\"bold\"", buf);
        snprintf(buf, sizeof(buf), "95 %% interval [%.4f, %.4f]", r->lo, r->hi);
    } else {
        text_el(f, x, y, "ratio", "font-weight=\"bold\"", "B/A = n/a");
        snprintf(buf, sizeof(buf), "95 %% interval: none (an arm has no values)");
    }
    text_el(f, x, y + 16, "interval", "font-size=\"12\"", buf);
    bool none = strncmp(s->verdict, "no verdict", 10) == 0;
    text_el(f, x, y + 32, "verdict",
            none ? "font-size=\"12\" fill=\"#b00\"" : "font-size=\"12\" font-weight=\"bold\"",
            s->verdict);
}

static void panel(FILE *f, const struct tsc_ab_series *s, double x0, double top)
{
    double t[MAX_TICKS + 2], step = 0;
    char buf[160];
    double ax = x0 + AXIS_X;

    text_el(f, ax, top + 12, "measure", "font-weight=\"bold\"", s->name);
    snprintf(buf, sizeof(buf), "%s%s%s is better", s->unit, s->unit[0] ? ", " : "",
             s->lower_better ? "lower" : "higher");
    text_el(f, ax, top + 28, "unit", "font-size=\"11\"", buf);
    size_t nt = value_axis(s, t, &step);
    if (nt < 2) {
        text_el(f, ax, top + PLOT_TOP + PLOT_H / 2, "novalues", "", "no values");
        ratio_lines(f, s, x0 + 10, top + PLOT_TOP + PLOT_H + 46);
        return;
    }
    double lo = t[0], hi = t[nt - 1];
    int dec = tick_decimals(step);
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#444\"/>\n", ax,
            top + PLOT_TOP, ax, top + PLOT_TOP + PLOT_H);
    for (size_t k = 0; k < nt; k++) {
        double y = y_of(t[k], lo, hi, top);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ccc\"/>\n", ax,
                y, x0 + PANEL_W - 10, y);
        snprintf(buf, sizeof(buf), "%.*f", dec, t[k] == 0 ? 0.0 : t[k]);
        text_el(f, ax - 4, y + 4, "tick", "text-anchor=\"end\" font-size=\"11\"", buf);
    }
    for (int a = 0; a < 2; a++)
        arm_column(f, s, a, ax, lo, hi, top);
    ratio_lines(f, s, x0 + 10, top + PLOT_TOP + PLOT_H + 46);
}

/* One <text> per line: SVG does not wrap. Returns the lines written. */
static unsigned text_lines(FILE *f, const char *text, double y0, const char *cls)
{
    const char *line = text;
    unsigned l = 0;

    while (*line) {
        size_t n = strcspn(line, "\n");
        char buf[1024];
        snprintf(buf, sizeof(buf), "%.*s", (int)(n < sizeof(buf) ? n : sizeof(buf) - 1), line);
        text_el(f, 10, y0 + 16.0 * l, cls, l ? "font-size=\"12\"" : "font-size=\"15\"", buf);
        line += n + (line[n] == '\n');
        l++;
    }
    return l;
}

int tsc_ab_plot_svg(const char *path, const char *title, const char *method, const char *flag,
                    const struct tsc_ab_series *s, size_t ns)
{
    FILE *f = fopen(path, "we");
    int rc = 0;

    if (!f) {
        rc = -errno;
        tsc_err("ab: --plot %s: %s", path, strerror(errno));
        return rc;
    }
    unsigned lines = 1;
    for (const char *c = title; *c; c++)
        lines += *c == '\n';
    double top = 22.0 + 16.0 * (lines + 3) + 10;
    double w = PANEL_W * (double)(ns ? ns : 1) + 20, h = top + PANEL_H;
    /* SVG does not wrap: a long flag widens the picture (about 7 px a character). */
    if (flag && 7.0 * (double)strlen(flag) + 20 > w)
        w = 7.0 * (double)strlen(flag) + 20;
    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"13\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            w, h, w, h);
    text_lines(f, title, 22.0, "title");
    double y = 22.0 + 16.0 * lines;
    if (flag)
        text_el(f, 10, y, "flag", "font-size=\"12\" font-weight=\"bold\" fill=\"#b00\"", flag);
    else
        text_el(f, 10, y, "flag", "font-size=\"12\" fill=\"#555\"",
                "not flagged: arm B applied its policy");
    char buf[256];
    snprintf(buf, sizeof(buf), "B/A: ratio of the medians; interval: %s", method);
    text_el(f, 10, y + 16, "method", "font-size=\"11\" fill=\"#555\"", buf);
    text_el(f, 10, y + 32, "legend", "font-size=\"11\" fill=\"#555\"",
            "dots: runs in order; thick bar: median (value beside it); line: min to max");
    for (size_t i = 0; i < ns; i++)
        panel(f, &s[i], 10 + PANEL_W * (double)i, top);
    fprintf(f, "</svg>\n");
    if (fclose(f) != 0) {
        rc = -errno;
        tsc_err("ab: --plot %s: %s", path, strerror(errno));
    }
    return rc;
}
