/* Shared between teshim ab (tsc_ab.c) and its picture (tsc_plot.c). */
#ifndef TESHIM_TSC_AB_H
#define TESHIM_TSC_AB_H

#include "tsc_abstat.h"

#include <stdbool.h>
#include <stddef.h>

/* One measure of both arms: values of the recorded runs that count. */
struct tsc_ab_series {
    const char *name; /* "wall time" */
    const char *unit; /* "s" */
    bool lower_better;
    const double *v[2]; /* [0] arm A, [1] arm B */
    size_t n[2];
    struct tsc_ratio_ci ratio; /* B/A of the medians and its interval */
    const char *verdict;       /* "B better (higher)", "no verdict: ..." */
};

/*
 * Write an SVG picture of the series: one panel per measure, each run a dot
 * in its arm's column, the median a bar, the range a line, on an axis with
 * round ticks (1-2-5 steps) that starts at 0 when every value is positive;
 * under it B/A, its interval (method says how it was computed) and the
 * verdict. flag (NULL: none) is written across the top in red. 0 or
 * -errno (reported).
 */
int tsc_ab_plot_svg(const char *path, const char *title, const char *method, const char *flag,
                    const struct tsc_ab_series *s, size_t ns);

#endif
