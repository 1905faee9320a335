/* CUDA copy decisions (policy/pol_decide_cuda.c), without any runtime. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>

#include "pol_cuda.h"

static struct pol_config cfg;

static void load(const char *const *env)
{
    struct pol_sources src = {0};

    src.environ = (char *const *)env;
    src.program = "cemu_policy_test";
    src.host = "h";
    src.config_path = "/dev/null";
    pol_load(&cfg, &src);
}

static const char *const bounce_on[] = {"TESHIM_CUDA_BOUNCE=on", NULL};

static struct pol_cuda_copy d2h(size_t n)
{
    struct pol_cuda_copy c = {.bytes = n,
                              .kind = CUABI_MEMCPY_D2H,
                              .src = POL_CUDA_MEM_DEVICE,
                              .dst = POL_CUDA_MEM_PAGEABLE};
    return c;
}

START_TEST(off_by_default)
{
    struct pol_cuda_copy c = d2h(1 << 20);
    struct pol_cuda_copy_dec d;

    load((const char *const[]){NULL});
    ck_assert_int_eq(pol_cuda_copy_quick(&cfg, 1 << 20), POL_SKIP_POLICY);
    ck_assert_int_eq(pol_cuda_copy(&cfg, &c, &d), POL_SKIP_POLICY);
    ck_assert(!d.bounce);
}
END_TEST

START_TEST(pageable_both_directions)
{
    struct pol_cuda_copy c = d2h(1 << 20);
    struct pol_cuda_copy_dec d;

    load(bounce_on);
    ck_assert_int_eq(pol_cuda_copy_quick(&cfg, 1 << 20), POL_INJECT);
    ck_assert_int_eq(pol_cuda_copy(&cfg, &c, &d), POL_INJECT);
    ck_assert_int_eq(d.dir, POL_CUDA_D2H);
    ck_assert(d.bounce);
    ck_assert(!d.register_);
    ck_assert_uint_eq(d.chunk, 2u << 20);
    ck_assert_uint_eq(d.buffers, 8);
    ck_assert_uint_eq(d.threads, 0); /* auto */
    c.src = POL_CUDA_MEM_PAGEABLE;
    c.dst = POL_CUDA_MEM_DEVICE;
    c.kind = CUABI_MEMCPY_DEFAULT;
    ck_assert_int_eq(pol_cuda_copy(&cfg, &c, &d), POL_INJECT);
    ck_assert_int_eq(d.dir, POL_CUDA_H2D);
}
END_TEST

START_TEST(other_memory_passes)
{
    static const enum pol_cuda_mem host[] = {POL_CUDA_MEM_PINNED, POL_CUDA_MEM_MANAGED,
                                             POL_CUDA_MEM_DEVICE, POL_CUDA_MEM_UNKNOWN};
    struct pol_cuda_copy_dec d;

    load(bounce_on);
    for (size_t i = 0; i < sizeof(host) / sizeof(host[0]); i++) {
        struct pol_cuda_copy c = d2h(1 << 20);
        c.dst = host[i];
        c.kind = CUABI_MEMCPY_DEFAULT;
        ck_assert_int_eq(pol_cuda_copy(&cfg, &c, &d), POL_NOT_APPLICABLE);
    }
    struct pol_cuda_copy h2h = d2h(1 << 20);
    h2h.src = POL_CUDA_MEM_PAGEABLE;
    h2h.kind = CUABI_MEMCPY_H2H;
    ck_assert_int_eq(pol_cuda_copy(&cfg, &h2h, &d), POL_NOT_APPLICABLE);
}
END_TEST

START_TEST(small_captured_pending_wrong_kind)
{
    struct pol_cuda_copy c;
    struct pol_cuda_copy_dec d;

    load(bounce_on);
    c = d2h((1 << 20) - 1);
    ck_assert_int_eq(pol_cuda_copy_quick(&cfg, c.bytes), POL_NOT_APPLICABLE);
    ck_assert_int_eq(pol_cuda_copy(&cfg, &c, &d), POL_NOT_APPLICABLE);
    c = d2h(1 << 20);
    ck_assert_int_eq(pol_cuda_copy(&cfg, &c, &d), POL_INJECT);
    c.capturing = true;
    ck_assert_int_eq(pol_cuda_copy(&cfg, &c, &d), POL_NOT_APPLICABLE);
    c = d2h(1 << 20);
    c.error_pending = true;
    ck_assert_int_eq(pol_cuda_copy(&cfg, &c, &d), POL_NOT_APPLICABLE);
    c = d2h(1 << 20);
    c.kind = CUABI_MEMCPY_H2D; /* contradicts the pointers: the runtime's error */
    ck_assert_int_eq(pol_cuda_copy(&cfg, &c, &d), POL_NOT_APPLICABLE);
}
END_TEST

START_TEST(gates)
{
    struct pol_cuda_copy c = d2h(1 << 20);
    struct pol_cuda_copy_dec d;

    load((const char *const[]){"TESHIM_CUDA_BOUNCE=on", "TESHIM_MODE=observe", NULL});
    ck_assert_int_eq(pol_cuda_copy(&cfg, &c, &d), POL_OBSERVED);
    load((const char *const[]){"TESHIM_CUDA_BOUNCE=on", "TESHIM_DISABLE=1", NULL});
    ck_assert_int_eq(pol_cuda_copy(&cfg, &c, &d), POL_SKIP_POLICY);
    load((const char *const[]){"TESHIM_CUDA_BOUNCE=on", "TESHIM_ROLLOUT_ARM=A", NULL});
    ck_assert_int_eq(pol_cuda_copy(&cfg, &c, &d), POL_SKIP_POLICY);
}
END_TEST

START_TEST(register_cache)
{
    struct pol_cuda_copy c = d2h(1 << 20);
    struct pol_cuda_copy_dec d;

    load((const char *const[]){"TESHIM_CUDA_REGISTER_CACHE=on", NULL});
    ck_assert_int_eq(pol_cuda_copy(&cfg, &c, &d), POL_INJECT);
    ck_assert(d.register_);
    ck_assert(!d.bounce);
    c.bytes = 512 * 1024; /* under cuda.register_min_bytes, no bounce to fall to */
    ck_assert_int_eq(pol_cuda_copy(&cfg, &c, &d), POL_NOT_APPLICABLE);
    load((const char *const[]){"TESHIM_CUDA_REGISTER_CACHE=on", "TESHIM_CUDA_BOUNCE=on",
                               "TESHIM_CUDA_BOUNCE_MIN_BYTES=64K", NULL});
    ck_assert_int_eq(pol_cuda_copy(&cfg, &c, &d), POL_INJECT);
    ck_assert(d.bounce);
    ck_assert(!d.register_);
}
END_TEST

START_TEST(profile_and_ranges)
{
    load((const char *const[]){"TESHIM_PROFILE=cuda-pinned", NULL});
    ck_assert_int_eq(pol_int(&cfg, POL_CUDA_BOUNCE), 1);
    ck_assert_int_eq(pol_int(&cfg, POL_CUDA_REGISTER_CACHE), 0);
    ck_assert_uint_eq(pol_cuda_pool_bytes(&cfg), 16u << 20);
    load((const char *const[]){"TESHIM_CUDA_BOUNCE_BUFFERS=1", "TESHIM_CUDA_BOUNCE_CHUNK_BYTES=1K",
                               NULL});
    ck_assert_uint_ge(cfg.nwarnings, 2);
    ck_assert_int_eq(pol_int(&cfg, POL_CUDA_BOUNCE_BUFFERS), 8);
    ck_assert_int_eq(pol_int(&cfg, POL_CUDA_BOUNCE_CHUNK_BYTES), 2 << 20);
}
END_TEST

/* cuda.copy_threads: auto (0) by default, 1..64, the word auto in any case;
 * anything else is reported and the value in force stays. */
START_TEST(copy_threads_values)
{
    static const struct {
        const char *text;
        int64_t want;
        bool warned;
    } cases[] = {
        {"auto", 0, false}, {"AUTO", 0, false}, {"0", 0, false}, {"1", 1, false},
        {"64", 64, false},  {"65", 0, true},    {"-1", 0, true}, {"many", 0, true},
        {"4x", 0, true},    {"", 0, true},
    };
    struct pol_cuda_copy c = d2h(1 << 20);
    struct pol_cuda_copy_dec d;
    char env[64], buf[32];

    load(bounce_on);
    ck_assert_int_eq(pol_int(&cfg, POL_CUDA_COPY_THREADS), 0);
    pol_format_value(&cfg, POL_CUDA_COPY_THREADS, buf, sizeof(buf));
    ck_assert_str_eq(buf, "auto");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(env, sizeof(env), "TESHIM_CUDA_COPY_THREADS=%s", cases[i].text);
        load((const char *const[]){"TESHIM_CUDA_BOUNCE=on", env, NULL});
        ck_assert_msg(pol_int(&cfg, POL_CUDA_COPY_THREADS) == cases[i].want, "'%s': %lld",
                      cases[i].text, (long long)pol_int(&cfg, POL_CUDA_COPY_THREADS));
        ck_assert_msg((cfg.nwarnings > 0) == cases[i].warned, "'%s': %u warnings", cases[i].text,
                      cfg.nwarnings);
        ck_assert_int_eq(pol_cuda_copy(&cfg, &c, &d), POL_INJECT);
        ck_assert_uint_eq(d.threads, (unsigned)cases[i].want);
    }
    pol_format_value(&cfg, POL_CUDA_COPY_THREADS, buf, sizeof(buf));
    ck_assert_str_eq(buf, "auto");
    load((const char *const[]){"TESHIM_CUDA_COPY_THREADS=12", NULL});
    pol_format_value(&cfg, POL_CUDA_COPY_THREADS, buf, sizeof(buf));
    ck_assert_str_eq(buf, "12");
}
END_TEST

/* A budget smaller than a pool of cuda.bounce_buffers chunks gets fewer
 * buffers (at least two), so a pool can still be made. */
START_TEST(buffers_fit_the_budget)
{
    struct pol_cuda_copy c = d2h(1 << 20);
    struct pol_cuda_copy_dec d;

    load(bounce_on);
    ck_assert_uint_eq(pol_cuda_buffers(&cfg), 8);
    load((const char *const[]){"TESHIM_CUDA_BOUNCE=on", "TESHIM_CUDA_PINNED_MAX_BYTES=6M", NULL});
    ck_assert_uint_eq(pol_cuda_buffers(&cfg), 3);
    ck_assert_int_eq(pol_cuda_copy(&cfg, &c, &d), POL_INJECT);
    ck_assert_uint_eq(d.buffers, 3);
    ck_assert_uint_eq(pol_cuda_pool_bytes(&cfg), 6u << 20);
    load((const char *const[]){"TESHIM_CUDA_PINNED_MAX_BYTES=0", NULL});
    ck_assert_uint_eq(pol_cuda_buffers(&cfg), 2);
    load((const char *const[]){"TESHIM_CUDA_PINNED_MAX_BYTES=1G", "TESHIM_CUDA_BOUNCE_BUFFERS=16",
                               NULL});
    ck_assert_uint_eq(pol_cuda_buffers(&cfg), 16);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cuda_policy");
    TCase *tc = tcase_create("decide");
    SRunner *sr;
    int failed;

    tcase_add_test(tc, off_by_default);
    tcase_add_test(tc, pageable_both_directions);
    tcase_add_test(tc, other_memory_passes);
    tcase_add_test(tc, small_captured_pending_wrong_kind);
    tcase_add_test(tc, gates);
    tcase_add_test(tc, register_cache);
    tcase_add_test(tc, profile_and_ranges);
    tcase_add_test(tc, copy_threads_values);
    tcase_add_test(tc, buffers_fit_the_budget);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
