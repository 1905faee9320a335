/* Medians, quantiles, the bootstrap interval and metric extraction for ab. */
#include "tsc_abstat.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void tsc_rng_seed(struct tsc_rng *r, uint64_t seed)
{
    r->s = seed;
}

uint64_t tsc_rng_next(struct tsc_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

size_t tsc_rng_below(struct tsc_rng *r, size_t n)
{
    /* 53 random bits scaled to [0, n): no modulo bias worth the name for the
     * sample sizes of an experiment. */
    double u = (double)(tsc_rng_next(r) >> 11) / 9007199254740992.0;
    size_t k = (size_t)(u * (double)n);

    return k < n ? k : n - 1;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;

    return (a > b) - (a < b);
}

static double median_sorted(const double *s, size_t n)
{
    if (n == 0)
        return NAN;
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2.0;
}

double tsc_median(const double *v, size_t n)
{
    double buf[64], *s = n <= 64 ? buf : malloc(n * sizeof(*s));
    double m;

    if (n == 0 || !s)
        return NAN;
    memcpy(s, v, n * sizeof(*s));
    qsort(s, n, sizeof(*s), cmp_double);
    m = median_sorted(s, n);
    if (s != buf)
        free(s);
    return m;
}

double tsc_quantile_sorted(const double *s, size_t n, double q)
{
    if (n == 0)
        return NAN;
    if (q <= 0)
        return s[0];
    if (q >= 1)
        return s[n - 1];
    double h = q * (double)(n - 1);
    size_t k = (size_t)floor(h);
    if (k + 1 >= n)
        return s[n - 1];
    return s[k] + (h - (double)k) * (s[k + 1] - s[k]);
}

double tsc_min(const double *v, size_t n)
{
    double m = NAN;

    for (size_t i = 0; i < n; i++)
        if (i == 0 || v[i] < m)
            m = v[i];
    return m;
}

double tsc_max(const double *v, size_t n)
{
    double m = NAN;

    for (size_t i = 0; i < n; i++)
        if (i == 0 || v[i] > m)
            m = v[i];
    return m;
}

/* Median of n values drawn with replacement from v, using scratch s[n]. */
static double resampled_median(struct tsc_rng *r, const double *v, size_t n, double *s)
{
    for (size_t i = 0; i < n; i++)
        s[i] = v[tsc_rng_below(r, n)];
    qsort(s, n, sizeof(*s), cmp_double);
    return median_sorted(s, n);
}

int tsc_bootstrap_ratio(const double *a, size_t na, const double *b, size_t nb, unsigned resamples,
                        double level, uint64_t seed, struct tsc_ratio_ci *out)
{
    struct tsc_rng rng;
    double *ratios, *scratch;
    size_t kept = 0;
    int rc = 0;

    out->ratio = out->lo = out->hi = NAN;
    out->defined = false;
    if (na == 0 || nb == 0)
        return 0;
    double ma = tsc_median(a, na), mb = tsc_median(b, nb);
    if (ma == 0 || !isfinite(ma) || !isfinite(mb))
        return 0;
    out->ratio = mb / ma;
    out->defined = true;

    ratios = malloc((resamples ? resamples : 1) * sizeof(*ratios));
    if (!ratios)
        return -ENOMEM;
    scratch = malloc((na > nb ? na : nb) * sizeof(*scratch));
    if (!scratch) {
        rc = -ENOMEM;
        goto err_free_ratios;
    }
    tsc_rng_seed(&rng, seed);
    for (unsigned i = 0; i < resamples; i++) {
        double ra = resampled_median(&rng, a, na, scratch);
        double rb = resampled_median(&rng, b, nb, scratch);
        if (ra != 0)
            ratios[kept++] = rb / ra;
    }
    if (kept) {
        qsort(ratios, kept, sizeof(*ratios), cmp_double);
        out->lo = tsc_quantile_sorted(ratios, kept, (1.0 - level) / 2.0);
        out->hi = tsc_quantile_sorted(ratios, kept, (1.0 + level) / 2.0);
    }
    free(scratch);
err_free_ratios:
    free(ratios);
    return rc;
}

static bool starts_number(const char *p, const char *end)
{
    return (*p >= '0' && *p <= '9') || (*p == '.' && p + 1 < end && p[1] >= '0' && p[1] <= '9');
}

/* First number in [from, to): optional minus sign right before it, digits,
 * optional fraction and exponent (strtod's syntax, without hex or inf). */
static int first_number(const char *from, const char *to, double *value)
{
    char buf[128];

    for (const char *p = from; p < to; p++) {
        if (!starts_number(p, to))
            continue;
        const char *start = p > from && p[-1] == '-' ? p - 1 : p;
        /* Only number characters: strtod alone would read "0x1f" as hex. */
        size_t n = 0;
        while (start + n < to && n < sizeof(buf) - 1 && strchr("0123456789.eE+-", start[n]))
            n++;
        memcpy(buf, start, n);
        buf[n] = '\0';
        char *stop;
        double v = strtod(buf, &stop);
        if (stop == buf)
            continue;
        *value = v;
        return 1;
    }
    return 0;
}

int tsc_metric_line(const regex_t *re, const char *line, double *value)
{
    regmatch_t m[2];
    size_t g;

    if (regexec(re, line, 2, m, 0) != 0)
        return 0;
    g = re->re_nsub >= 1 && m[1].rm_so >= 0 ? 1 : 0;
    return first_number(line + m[g].rm_so, line + m[g].rm_eo, value);
}

int tsc_metric_scan(const regex_t *re, const char *text, double *value)
{
    int found = 0;
    char line[4096];

    while (*text) {
        size_t n = strcspn(text, "\n");
        size_t c = n < sizeof(line) - 1 ? n : sizeof(line) - 1;
        double v;

        memcpy(line, text, c);
        line[c] = '\0';
        if (tsc_metric_line(re, line, &v)) {
            *value = v;
            found = 1;
        }
        text += n + (text[n] == '\n');
    }
    return found;
}

size_t tsc_axis_ticks(double lo, double hi, unsigned max_ticks, double *t, double *step)
{
    static const double mant[] = {1, 2, 5, 10};

    if (!isfinite(lo) || !isfinite(hi) || hi < lo || max_ticks < 1)
        return 0;
    if (hi == lo) {
        double d = lo != 0 ? fabs(lo) / 10 : 1;
        lo -= d;
        hi += d;
    }
    double mag = pow(10, floor(log10((hi - lo) / max_ticks)));
    for (size_t i = 0; i < sizeof(mant) / sizeof(mant[0]); i++) {
        double s = mant[i] * mag;
        double k0 = floor(lo / s), k1 = ceil(hi / s);
        if (k1 - k0 > max_ticks && i + 1 < sizeof(mant) / sizeof(mant[0]))
            continue;
        size_t n = (size_t)(k1 - k0) + 1;
        for (size_t k = 0; k < n; k++)
            t[k] = (k0 + (double)k) * s;
        *step = s;
        return n;
    }
    return 0;
}
