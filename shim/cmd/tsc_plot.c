/* teshim ab --plot: both arms' distributions as a self-contained SVG. */
#include "tsc.h"
#include "tsc_ab.h"
#include "tsc_abstat.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define PANEL_W 280
#define PANEL_H 300
#define PLOT_TOP 40 /* inside a panel: room for the panel title */
#define PLOT_H 200
#define AXIS_X 60

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

/* Value to y inside a panel whose range is [lo, hi]. */
static double y_of(double v, double lo, double hi, double top)
{
    return top + PLOT_TOP + PLOT_H - (v - lo) / (hi - lo) * PLOT_H;
}

static void panel(FILE *f, const struct tsc_ab_series *s, double x0, double top)
{
    double lo = INFINITY, hi = -INFINITY;

    for (int a = 0; a < 2; a++)
        for (size_t i = 0; i < s->n[a]; i++) {
            lo = fmin(lo, s->v[a][i]);
            hi = fmax(hi, s->v[a][i]);
        }
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" font-weight=\"bold\">", x0 + AXIS_X, top + 12);
    xml_text(f, s->name);
    fprintf(f, "</text>\n<text x=\"%.0f\" y=\"%.0f\" font-size=\"11\">", x0 + AXIS_X, top + 28);
    xml_text(f, s->unit);
    fprintf(f, "%s%s is better</text>\n", s->unit[0] ? ", " : "",
            s->lower_better ? "lower" : "higher");
    if (!(lo <= hi)) {
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\">no values</text>\n", x0 + AXIS_X,
                top + PLOT_TOP + PLOT_H / 2);
        return;
    }
    /* Pad the range so a constant series still has an axis. */
    double pad = hi > lo ? (hi - lo) * 0.1 : (fabs(lo) > 0 ? fabs(lo) * 0.05 : 1);
    lo -= pad;
    hi += pad;
    double ax = x0 + AXIS_X;
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#444\"/>\n", ax,
            top + PLOT_TOP, ax, top + PLOT_TOP + PLOT_H);
    for (int t = 0; t <= 4; t++) {
        double v = lo + (hi - lo) * t / 4.0;
        double y = y_of(v, lo, hi, top);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ccc\"/>\n", ax,
                y, x0 + PANEL_W - 10, y);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" font-size=\"11\">%.4g</text>\n",
                ax - 4, y + 4, v);
    }
    for (int a = 0; a < 2; a++) {
        double cx = ax + 50 + a * 100;
        fprintf(f,
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"%s\">arm %c "
                "(n=%zu)</text>\n",
                cx, top + PLOT_TOP + PLOT_H + 20, arm_color[a], a ? 'B' : 'A', s->n[a]);
        if (!s->n[a])
            continue;
        double mn = tsc_min(s->v[a], s->n[a]), mx = tsc_max(s->v[a], s->n[a]);
        double med = tsc_median(s->v[a], s->n[a]);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n", cx,
                y_of(mn, lo, hi, top), cx, y_of(mx, lo, hi, top), arm_color[a]);
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                "stroke-width=\"3\"/>\n",
                cx - 25, y_of(med, lo, hi, top), cx + 25, y_of(med, lo, hi, top), arm_color[a]);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" fill=\"%s\">%.4g</text>\n",
                cx + 27, y_of(med, lo, hi, top) + 3, arm_color[a], med);
        for (size_t i = 0; i < s->n[a]; i++) {
            /* Spread the dots sideways, in run order, so equal values show. */
            double dx = s->n[a] > 1 ? -18.0 + 36.0 * (double)i / (double)(s->n[a] - 1) : 0;
            fprintf(f,
                    "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\" "
                    "fill-opacity=\"0.6\"/>\n",
                    cx + dx, y_of(s->v[a][i], lo, hi, top), arm_color[a]);
        }
    }
}

int tsc_ab_plot_svg(const char *path, const char *title, const struct tsc_ab_series *s, size_t ns)
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
    double top = 20.0 + 16.0 * lines + 24.0;
    double w = PANEL_W * (double)(ns ? ns : 1) + 20, h = top + PANEL_H;
    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"13\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            w, h, w, h);
    /* One <text> per line of the title: SVG does not wrap. */
    const char *line = title;
    for (unsigned l = 0; l < lines; l++) {
        size_t n = strcspn(line, "\n");
        char buf[1024];
        snprintf(buf, sizeof(buf), "%.*s", (int)(n < sizeof(buf) ? n : sizeof(buf) - 1), line);
        fprintf(f, "<text x=\"10\" y=\"%.0f\" font-size=\"%d\">", 22.0 + 16.0 * l, l ? 12 : 15);
        xml_text(f, buf);
        fprintf(f, "</text>\n");
        line += n + (line[n] == '\n');
    }
    fprintf(f,
            "<text x=\"10\" y=\"%.0f\" font-size=\"11\" fill=\"#555\">dots: runs in order; "
            "thick bar: median (value beside it); line: min to max</text>\n",
            22.0 + 16.0 * lines);
    for (size_t i = 0; i < ns; i++)
        panel(f, &s[i], 10 + PANEL_W * (double)i, top);
    fprintf(f, "</svg>\n");
    if (fclose(f) != 0) {
        rc = -errno;
        tsc_err("ab: --plot %s: %s", path, strerror(errno));
    }
    return rc;
}
