/*
 * Statistics and output parsing for `teshim ab`: medians, quantiles, a seeded
 * bootstrap confidence interval of a ratio of medians, and extraction of the
 * application's own figure from its output. Pure functions on plain arrays,
 * unit-tested on fixed data (tests/cli/).
 */
#ifndef TESHIM_TSC_ABSTAT_H
#define TESHIM_TSC_ABSTAT_H

#include <regex.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Resamples of the bootstrap, as documented in `teshim ab --help`. */
#define TSC_AB_RESAMPLES 10000
/* Default seed: the same data always gives the same interval. */
#define TSC_AB_SEED 20261121u

/* Deterministic generator (splitmix64): a seed gives one sequence. */
struct tsc_rng {
    uint64_t s;
};
void tsc_rng_seed(struct tsc_rng *r, uint64_t seed);
uint64_t tsc_rng_next(struct tsc_rng *r);
/* Uniform integer in [0, n), n > 0. */
size_t tsc_rng_below(struct tsc_rng *r, size_t n);

/* Median of v[0..n) (mean of the two middle values when n is even); v is not
 * modified. n == 0 gives NAN. */
double tsc_median(const double *v, size_t n);

/* Quantile q in [0,1] of already sorted s[0..n), linear interpolation
 * between order statistics (Hyndman-Fan type 7, R's default). n == 0: NAN. */
double tsc_quantile_sorted(const double *s, size_t n, double q);

/* Smallest and largest of v[0..n); NAN when n == 0. */
double tsc_min(const double *v, size_t n);
double tsc_max(const double *v, size_t n);

/* A ratio of medians with its bootstrap confidence interval. */
struct tsc_ratio_ci {
    double ratio; /* median(b) / median(a); NAN when undefined */
    double lo, hi;
    bool defined; /* both arms have values and median(a) != 0 */
};

/*
 * ratio = median(b)/median(a) with a percentile-bootstrap interval at level
 * (0.95 for 95 %): each of `resamples` rounds draws len(a) values of a and
 * len(b) values of b with replacement, independently, and takes the ratio of
 * their medians; lo and hi are the (1-level)/2 and (1+level)/2 quantiles of
 * those ratios. Rounds whose resampled median(a) is 0 are dropped. Seeded:
 * the same data and seed always give the same interval. 0 or -ENOMEM.
 */
int tsc_bootstrap_ratio(const double *a, size_t na, const double *b, size_t nb, unsigned resamples,
                        double level, uint64_t seed, struct tsc_ratio_ci *out);

/*
 * Round axis ticks for [lo, hi]: a step of 1, 2 or 5 times a power of ten,
 * the smallest giving at most max_ticks intervals; the first tick at or
 * below lo, the last at or above hi. Writes the ticks to t (room for
 * max_ticks + 2: the widest step may overhang at both ends) and the step to
 * *step; returns how many, or 0 when the range is not finite, hi < lo, or
 * max_ticks < 1. A range of one value is widened by a tenth of it (by 1
 * for 0).
 */
size_t tsc_axis_ticks(double lo, double hi, unsigned max_ticks, double *t, double *step);

/*
 * The application's figure in a block of output: the LAST line that matches
 * re (compiled with REG_EXTENDED); from it, the first capture group when the
 * expression has one, else the whole match, is scanned for the first number
 * (optional sign, decimals, exponent). Returns 1 and sets *value when found,
 * 0 when no line matches or the matched text holds no number.
 */
int tsc_metric_scan(const regex_t *re, const char *text, double *value);

/* One line (no newline needed): 1 and *value when re matches it with a
 * number, else 0. tsc_metric_scan applies this to every line. */
int tsc_metric_line(const regex_t *re, const char *line, double *value);

#endif
