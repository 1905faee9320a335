/* Statistics of teshim ab on fixed data: median, quantiles, the seeded
 * bootstrap interval, and metric extraction. */
#include <check.h>
#include <math.h>
#include <stdlib.h>

#include "tsc_abstat.h"

START_TEST(median_odd_even_unsorted)
{
    const double odd[] = {3, 1, 2}, even[] = {4, 1, 3, 2}, one[] = {7};
    double copy[] = {3, 1, 2};

    ck_assert_double_eq(tsc_median(odd, 3), 2);
    ck_assert_double_eq(tsc_median(even, 4), 2.5);
    ck_assert_double_eq(tsc_median(one, 1), 7);
    ck_assert(isnan(tsc_median(odd, 0)));
    tsc_median(copy, 3);
    ck_assert_double_eq(copy[0], 3); /* input untouched */
    ck_assert_double_eq(tsc_min(even, 4), 1);
    ck_assert_double_eq(tsc_max(even, 4), 4);
}
END_TEST

START_TEST(quantile_type7)
{
    /* R: quantile(c(1,2,3,4,5), c(0, .025, .25, .5, .975, 1)) */
    const double s[] = {1, 2, 3, 4, 5};

    ck_assert_double_eq(tsc_quantile_sorted(s, 5, 0), 1);
    ck_assert_double_eq_tol(tsc_quantile_sorted(s, 5, 0.025), 1.1, 1e-12);
    ck_assert_double_eq(tsc_quantile_sorted(s, 5, 0.25), 2);
    ck_assert_double_eq(tsc_quantile_sorted(s, 5, 0.5), 3);
    ck_assert_double_eq_tol(tsc_quantile_sorted(s, 5, 0.975), 4.9, 1e-12);
    ck_assert_double_eq(tsc_quantile_sorted(s, 5, 1), 5);
}
END_TEST

START_TEST(rng_seeded_and_in_range)
{
    struct tsc_rng a, b;
    unsigned hits[5] = {0};

    tsc_rng_seed(&a, 42);
    tsc_rng_seed(&b, 42);
    for (int i = 0; i < 1000; i++)
        ck_assert_uint_eq(tsc_rng_next(&a), tsc_rng_next(&b));
    /* splitmix64's published first output for seed 0 */
    tsc_rng_seed(&a, 0);
    ck_assert_uint_eq(tsc_rng_next(&a), 0xe220a8397b1dcdafull);
    for (int i = 0; i < 5000; i++) {
        size_t k = tsc_rng_below(&a, 5);
        ck_assert_uint_lt(k, 5);
        hits[k]++;
    }
    for (int k = 0; k < 5; k++)
        ck_assert_uint_gt(hits[k], 800); /* every index is drawn */
}
END_TEST

START_TEST(ci_constant_arms_is_exact)
{
    const double a[] = {2, 2, 2, 2}, b[] = {3, 3, 3};
    struct tsc_ratio_ci ci;

    ck_assert_int_eq(tsc_bootstrap_ratio(a, 4, b, 3, 1000, 0.95, 1, &ci), 0);
    ck_assert(ci.defined);
    ck_assert_double_eq(ci.ratio, 1.5);
    ck_assert_double_eq(ci.lo, 1.5);
    ck_assert_double_eq(ci.hi, 1.5);
}
END_TEST

START_TEST(ci_separated_arms_bracket_true_ratio)
{
    /* B is A doubled with its own noise: the true ratio of medians is 2. */
    const double a[] = {98, 101, 100, 99, 102, 100.5, 99.5, 100, 101.5, 98.5};
    const double b[] = {201, 199, 200, 202, 198, 200.5, 199.5, 203, 197, 200};
    struct tsc_ratio_ci ci;

    ck_assert_int_eq(tsc_bootstrap_ratio(a, 10, b, 10, TSC_AB_RESAMPLES, 0.95, TSC_AB_SEED, &ci),
                     0);
    ck_assert_double_eq_tol(ci.ratio, 2.0, 1e-12);
    ck_assert(ci.lo <= 2.0 && 2.0 <= ci.hi);
    ck_assert(ci.lo > 1.9 && ci.hi < 2.1); /* and is tight: far from 1 */
    ck_assert(ci.lo > 1.0);
}
END_TEST

START_TEST(ci_identical_arms_contain_one)
{
    const double a[] = {5.1, 4.9, 5.0, 5.3, 4.7, 5.2, 4.8, 5.05};
    struct tsc_ratio_ci ci;

    ck_assert_int_eq(tsc_bootstrap_ratio(a, 8, a, 8, TSC_AB_RESAMPLES, 0.95, TSC_AB_SEED, &ci), 0);
    ck_assert_double_eq(ci.ratio, 1.0);
    ck_assert(ci.lo < 1.0 && ci.hi > 1.0);
}
END_TEST

START_TEST(ci_reproducible_with_seed)
{
    const double a[] = {1, 2, 3, 4, 5, 6}, b[] = {2, 3, 5, 7, 11, 13};
    struct tsc_ratio_ci x, y, z;

    tsc_bootstrap_ratio(a, 6, b, 6, 2000, 0.95, 7, &x);
    tsc_bootstrap_ratio(a, 6, b, 6, 2000, 0.95, 7, &y);
    tsc_bootstrap_ratio(a, 6, b, 6, 2000, 0.95, 8, &z);
    ck_assert_double_eq(x.lo, y.lo);
    ck_assert_double_eq(x.hi, y.hi);
    ck_assert(x.lo != z.lo || x.hi != z.hi);
    /* The interval lies within what any resample can give: min(b)/max(a)
     * to max(b)/min(a). */
    ck_assert(x.lo >= 2.0 / 6.0 && x.hi <= 13.0 / 1.0);
    ck_assert(x.lo <= x.ratio && x.ratio <= x.hi);
}
END_TEST

START_TEST(ci_undefined_cases)
{
    const double a0[] = {0, 0, 0}, b[] = {1, 2};
    struct tsc_ratio_ci ci;

    ck_assert_int_eq(tsc_bootstrap_ratio(a0, 3, b, 2, 100, 0.95, 1, &ci), 0);
    ck_assert(!ci.defined);
    ck_assert_int_eq(tsc_bootstrap_ratio(b, 2, b, 0, 100, 0.95, 1, &ci), 0);
    ck_assert(!ci.defined);
}
END_TEST

static double metric(const char *re_text, const char *out, int *found)
{
    regex_t re;
    double v = NAN;

    ck_assert_int_eq(regcomp(&re, re_text, REG_EXTENDED), 0);
    *found = tsc_metric_scan(&re, out, &v);
    regfree(&re);
    return v;
}

START_TEST(metric_capture_group_last_line_wins)
{
    int found;
    double v = metric("throughput ([0-9.]+) GB/s",
                      "warming up\nthroughput 1.5 GB/s\nthroughput 2.25 GB/s\ndone\n", &found);

    ck_assert_int_eq(found, 1);
    ck_assert_double_eq(v, 2.25);
}
END_TEST

START_TEST(metric_first_number_of_match)
{
    int found;
    /* iperf3's receiver line: no group, the first number of the match. */
    double v = metric("[0-9.]+ Gbits/sec.*receiver",
                      "[  5]   0.00-1.00   sec  3.50 GBytes  30.1 Gbits/sec   receiver\n", &found);

    ck_assert_int_eq(found, 1);
    ck_assert_double_eq(v, 30.1);
}
END_TEST

START_TEST(metric_sign_exponent_no_hex)
{
    int found;

    ck_assert_double_eq(metric("delta=(.*)", "delta=-3.5e2 ms", &found), -350);
    ck_assert_int_eq(found, 1);
    ck_assert_double_eq(metric("id (.*)", "id 0x1f", &found), 0);
    ck_assert_int_eq(found, 1);
}
END_TEST

START_TEST(metric_missing)
{
    int found;

    metric("throughput ([0-9.]+)", "error: connection refused\n", &found);
    ck_assert_int_eq(found, 0);
    metric("throughput (.*)", "throughput n/a\n", &found);
    ck_assert_int_eq(found, 0); /* matched, but no number in it */
    metric("x", "", &found);
    ck_assert_int_eq(found, 0);
}
END_TEST

/* Ticks are multiples of a 1-2-5 step, cover the range, at most 5 intervals. */
static void check_ticks(double lo, double hi, double want_step, double want_first, double want_last)
{
    double t[7], step = 0;
    size_t n = tsc_axis_ticks(lo, hi, 5, t, &step);

    ck_assert_msg(n >= 2 && n <= 7, "[%g, %g]: %zu ticks", lo, hi, n);
    ck_assert_double_eq_tol(step, want_step, want_step * 1e-9);
    ck_assert_double_eq_tol(t[0], want_first, want_step * 1e-9);
    ck_assert_double_eq_tol(t[n - 1], want_last, want_step * 1e-9);
    ck_assert(t[0] <= lo && t[n - 1] >= hi);
    double mant = step / pow(10, floor(log10(step) + 1e-9));
    ck_assert_msg(fabs(mant - 1) < 1e-9 || fabs(mant - 2) < 1e-9 || fabs(mant - 5) < 1e-9,
                  "step %g", step);
    for (size_t k = 0; k < n; k++) {
        double q = t[k] / step;
        ck_assert_msg(fabs(q - round(q)) < 1e-6, "tick %g not a multiple of %g", t[k], step);
    }
}

START_TEST(axis_ticks_round_1_2_5)
{
    check_ticks(0, 200.005, 50, 0, 250);
    check_ticks(0, 1005, 500, 0, 1500);
    check_ticks(0, 0.00297, 0.001, 0, 0.003);
    check_ticks(0, 1, 0.2, 0, 1);
    check_ticks(0, 7.3, 2, 0, 8);
    check_ticks(-3, 4, 2, -4, 4);
    check_ticks(995, 1005, 5, 995, 1005);
    check_ticks(996, 1003, 2, 996, 1004);
    check_ticks(5, 5, 0.5, 4.5, 5.5); /* one value: widened by a tenth */
    double t[7], step;
    ck_assert_uint_eq(tsc_axis_ticks(1, 0, 5, t, &step), 0);
    ck_assert_uint_eq(tsc_axis_ticks(0, INFINITY, 5, t, &step), 0);
    ck_assert_uint_eq(tsc_axis_ticks(0, NAN, 5, t, &step), 0);
    ck_assert_uint_eq(tsc_axis_ticks(0, 1, 0, t, &step), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cli_abstat");
    TCase *tc = tcase_create("abstat");

    tcase_add_test(tc, median_odd_even_unsorted);
    tcase_add_test(tc, quantile_type7);
    tcase_add_test(tc, rng_seeded_and_in_range);
    tcase_add_test(tc, ci_constant_arms_is_exact);
    tcase_add_test(tc, ci_separated_arms_bracket_true_ratio);
    tcase_add_test(tc, ci_identical_arms_contain_one);
    tcase_add_test(tc, ci_reproducible_with_seed);
    tcase_add_test(tc, ci_undefined_cases);
    tcase_add_test(tc, metric_capture_group_last_line_wins);
    tcase_add_test(tc, metric_first_number_of_match);
    tcase_add_test(tc, metric_sign_exponent_no_hex);
    tcase_add_test(tc, metric_missing);
    tcase_add_test(tc, axis_ticks_round_1_2_5);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
