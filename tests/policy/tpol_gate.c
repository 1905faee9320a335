/* The process-wide gate: rollout arm, kill switch, observe mode, scope. */
#include "tpol.h"

#include <stdio.h>
#include <string.h>

START_TEST(bucket_is_stable)
{
    uint32_t b = pol_rollout_bucket("s", "node17", "vllm");

    ck_assert_uint_lt(b, 10000);
    for (int i = 0; i < 100; i++)
        ck_assert_uint_eq(pol_rollout_bucket("s", "node17", "vllm"), b);

    /* Through pol_load: same identity, same bucket and arm, every time. */
    struct tpol t;
    tpol_init(&t);
    t.src.host = "node17";
    t.src.program = "vllm";
    tpol_env(&t, "TESHIM_ROLLOUT_SALT", "s");
    tpol_env(&t, "TESHIM_ROLLOUT_PERCENT", "50");
    tpol_load(&t);
    ck_assert_uint_eq(t.cfg.rollout_bucket, b);
    enum pol_arm arm = t.cfg.arm;
    ck_assert_int_eq(arm, b < 5000 ? POL_ARM_B : POL_ARM_A);
    for (int i = 0; i < 10; i++) {
        tpol_load(&t);
        ck_assert_int_eq(t.cfg.arm, arm);
    }
}
END_TEST

/* Salt, host and program each move an identity; the fields do not run
 * into each other ("ab","c" differs from "a","bc"). */
START_TEST(bucket_depends_on_each_field)
{
    unsigned moved_salt = 0, moved_host = 0, moved_prog = 0, moved_split = 0;

    for (int i = 0; i < 200; i++) {
        char host[32], other[32];
        snprintf(host, sizeof(host), "host%d", i);
        snprintf(other, sizeof(other), "host%dx", i);
        uint32_t b = pol_rollout_bucket("salt", host, "prog");
        moved_salt += pol_rollout_bucket("salt2", host, "prog") != b;
        moved_host += pol_rollout_bucket("salt", other, "prog") != b;
        moved_prog += pol_rollout_bucket("salt", host, "prog2") != b;
        moved_split +=
            pol_rollout_bucket("salt", host, "xprog") != pol_rollout_bucket("salt", other, "prog");
    }
    ck_assert_uint_gt(moved_salt, 190);
    ck_assert_uint_gt(moved_host, 190);
    ck_assert_uint_gt(moved_prog, 190);
    ck_assert_uint_gt(moved_split, 190);
}
END_TEST

/* 10 000 distinct identities at 30 %: binomial sd = sqrt(10000*.3*.7) = 46,
 * so 3000 +- 150 (1.5 %) is more than three sd; the hash is deterministic,
 * so this either always passes or exposes a biased hash. */
START_TEST(rollout_percent_share)
{
    static const int percents[] = {30, 0, 100, 1, 50};

    for (size_t k = 0; k < sizeof(percents) / sizeof(percents[0]); k++) {
        char pct[8];
        unsigned in_b = 0;
        struct tpol t;
        tpol_init(&t);
        snprintf(pct, sizeof(pct), "%d", percents[k]);
        tpol_env(&t, "TESHIM_ROLLOUT_PERCENT", pct);
        tpol_env(&t, "TESHIM_ROLLOUT_SALT", "canary-1");
        for (int i = 0; i < 10000; i++) {
            char host[32];
            snprintf(host, sizeof(host), "gpu-node-%05d", i);
            t.src.host = host;
            t.src.program = (i & 1) ? "python3" : "sglang";
            tpol_load(&t);
            in_b += t.cfg.arm == POL_ARM_B;
            ck_assert_int_eq(t.cfg.gate,
                             t.cfg.arm == POL_ARM_B ? POL_GATE_ENFORCE : POL_GATE_ARM_A);
        }
        int want = percents[k] * 100;
        ck_assert_msg(in_b + 150 >= (unsigned)want && in_b <= (unsigned)want + 150,
                      "rollout.percent=%d put %u of 10000 in arm B", percents[k], in_b);
        if (percents[k] == 0 || percents[k] == 100)
            ck_assert_uint_eq(in_b, (unsigned)want);
    }
}
END_TEST

START_TEST(rollout_arm_forces)
{
    struct tpol t;

    tpol_init(&t);
    tpol_env(&t, "TESHIM_ROLLOUT_PERCENT", "100");
    tpol_env(&t, "TESHIM_ROLLOUT_ARM", "A");
    tpol_eq(&t, tpol_load(&t), 0);
    ck_assert_int_eq(t.cfg.arm, POL_ARM_A);
    ck_assert_int_eq(t.cfg.gate, POL_GATE_ARM_A);
    ck_assert_int_eq(pol_gate_verdict(&t.cfg), POL_SKIP_POLICY);

    tpol_init(&t);
    tpol_env(&t, "TESHIM_ROLLOUT_PERCENT", "0");
    tpol_env(&t, "TESHIM_ROLLOUT_ARM", "b");
    tpol_eq(&t, tpol_load(&t), 0);
    ck_assert_int_eq(t.cfg.arm, POL_ARM_B);
    ck_assert_int_eq(t.cfg.gate, POL_GATE_ENFORCE);
    ck_assert_int_eq(pol_gate_verdict(&t.cfg), POL_INJECT);
}
END_TEST

START_TEST(kill_switch_env)
{
    struct tpol t;

    tpol_init(&t);
    tpol_env(&t, "TESHIM_PROFILE", "rdma-ro-tc");
    tpol_env(&t, "TESHIM_DISABLE", "1");
    tpol_env(&t, "TESHIM_ROLLOUT_ARM", "B");
    tpol_eq(&t, tpol_load(&t), 0);
    ck_assert_int_eq(t.cfg.gate, POL_GATE_KILLED);
    ck_assert_int_eq(pol_gate_verdict(&t.cfg), POL_SKIP_POLICY);
    /* The arm is still recorded; the kill switch wins over it. */
    ck_assert_int_eq(t.cfg.arm, POL_ARM_B);
}
END_TEST

START_TEST(kill_switch_file)
{
    struct tpol t;

    tpol_init(&t);
    const char *kill = tpol_path(&t, "disable");
    tpol_env(&t, "TESHIM_KILL_SWITCH_FILE", kill);
    tpol_env(&t, "TESHIM_MODE", "observe");
    tpol_eq(&t, tpol_load(&t), 0);
    ck_assert_int_eq(t.cfg.gate, POL_GATE_OBSERVE);

    tpol_write(&t, "disable", "");
    tpol_load(&t);
    ck_assert_int_eq(t.cfg.gate, POL_GATE_KILLED);
    ck_assert_int_eq(pol_gate_verdict(&t.cfg), POL_SKIP_POLICY);

    /* Named in the config file works the same. */
    struct tpol u;
    tpol_init(&u);
    char text[600];
    snprintf(text, sizeof(text), "kill_switch.file = %s\n", kill);
    tpol_env(&u, "TESHIM_CONFIG", tpol_write(&u, "k.conf", text));
    tpol_eq(&u, tpol_load(&u), 0);
    ck_assert_int_eq(u.cfg.gate, POL_GATE_KILLED);
}
END_TEST

START_TEST(observe_mode)
{
    struct tpol t;

    tpol_init(&t);
    tpol_env(&t, "TESHIM_PROFILE", "observe");
    tpol_eq(&t, tpol_load(&t), 0);
    ck_assert_int_eq(t.cfg.gate, POL_GATE_OBSERVE);
    ck_assert_int_eq(pol_gate_verdict(&t.cfg), POL_OBSERVED);
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_RELAXED_ORDERING), POL_RO_ON);

    /* Arm A beats observe: nothing is even counted as observed. */
    tpol_env(&t, "TESHIM_ROLLOUT_ARM", "A");
    tpol_load(&t);
    ck_assert_int_eq(t.cfg.gate, POL_GATE_ARM_A);
}
END_TEST

START_TEST(scope_programs)
{
    static const struct {
        const char *incl, *excl, *prog;
        bool in;
    } cases[] = {
        {"", "", "anything", true},
        {"vllm", "", "vllm", true},
        {"vllm", "", "vllm2", false},
        {"vllm,python3*", "", "python3.11", true},
        {" vllm , sglang ", "", "sglang", true},
        {"ib_*", "", "ib_write_bw", true},
        {"ib_*", "", "ibv_rc_pingpong", false},
        {"", "ib_read_*", "ib_read_lat", false},
        {"ib_*", "ib_read_*", "ib_write_bw", true},
        {"ib_*", "ib_read_*", "ib_read_bw", false},
        {"*", "python3", "python3", false},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tpol t;
        tpol_init(&t);
        t.src.program = cases[i].prog;
        tpol_env(&t, "TESHIM_SCOPE_PROGRAMS", cases[i].incl);
        tpol_env(&t, "TESHIM_SCOPE_EXCLUDE_PROGRAMS", cases[i].excl);
        tpol_eq(&t, tpol_load(&t), 0);
        ck_assert_msg(t.cfg.gate == (cases[i].in ? POL_GATE_ENFORCE : POL_GATE_OUT_OF_SCOPE),
                      "programs '%s' exclude '%s' program '%s': gate %s", cases[i].incl,
                      cases[i].excl, cases[i].prog, pol_gate_name(t.cfg.gate));
    }
}
END_TEST

START_TEST(list_match)
{
    ck_assert(pol_list_match("a,b*,c?", "a"));
    ck_assert(pol_list_match("a,b*,c?", "bxx"));
    ck_assert(pol_list_match("a,b*,c?", "c1"));
    ck_assert(!pol_list_match("a,b*,c?", "c12"));
    ck_assert(!pol_list_match("", "a"));
    ck_assert(!pol_list_match("a", NULL));
    ck_assert(!pol_list_match(NULL, "a"));
    ck_assert(pol_list_match("mlx5_[02]", "mlx5_2"));
    ck_assert(!pol_list_match("mlx5_[02]", "mlx5_1"));
}
END_TEST

/* The two gates of one configuration, as a process re-reading its kill
 * switch keeps them: the file's presence decides, TESHIM_DISABLE wins. */
START_TEST(gate_with_and_without_kill_file)
{
    struct tpol t;

    tpol_init(&t);
    tpol_load(&t);
    ck_assert_int_eq(t.cfg.gate, POL_GATE_ENFORCE);
    pol_decide_gate(&t.cfg, true);
    ck_assert_int_eq(t.cfg.gate, POL_GATE_KILLED);
    pol_decide_gate(&t.cfg, false);
    ck_assert_int_eq(t.cfg.gate, POL_GATE_ENFORCE);

    tpol_env(&t, "TESHIM_DISABLE", "1");
    tpol_load(&t);
    pol_decide_gate(&t.cfg, false);
    ck_assert_int_eq(t.cfg.gate, POL_GATE_KILLED);
}
END_TEST

/* A copy outlives its source: its strings live in its own arena. */
START_TEST(config_copy_owns_its_strings)
{
    struct tpol t;
    static struct pol_config copy;

    tpol_init(&t);
    tpol_env(&t, "TESHIM_TCP_PORTS", "80, 5000-5999");
    tpol_env(&t, "TESHIM_SCOPE_PROGRAMS", "vllm*");
    tpol_load(&t);
    pol_config_copy(&copy, &t.cfg);
    memset(&t.cfg, 0x5a, sizeof(t.cfg));
    ck_assert_str_eq(pol_str(&copy, POL_TCP_PORTS), "80,5000-5999");
    ck_assert_str_eq(pol_str(&copy, POL_SCOPE_PROGRAMS), "vllm*");
    const char *p = pol_str(&copy, POL_TCP_PORTS);
    ck_assert(p >= copy.arena && p < copy.arena + sizeof(copy.arena));
}
END_TEST

/* A reload keeps what is read at start only, says so, and hashes again. */
START_TEST(reload_keeps_start_only_values)
{
    struct tpol t;
    static struct pol_config cur;

    tpol_init(&t);
    tpol_env(&t, "TESHIM_STATS_DIR", "/var/log/a");
    tpol_env(&t, "TESHIM_CUDA_BOUNCE", "on");
    tpol_load(&t);
    pol_config_copy(&cur, &t.cfg);

    tpol_init(&t);
    tpol_env(&t, "TESHIM_STATS_DIR", "/var/log/b");
    tpol_env(&t, "TESHIM_CUDA_BOUNCE", "off");
    tpol_env(&t, "TESHIM_TCP_DSCP", "12");
    tpol_load(&t);
    uint64_t loaded = t.cfg.hash;
    unsigned before = t.diags.n;
    tpol_eq(&t, pol_keep_start_only(&t.cfg, &cur, t.src.diag, t.src.diag_arg), 2);
    ck_assert_str_eq(pol_str(&t.cfg, POL_STATS_DIR), "/var/log/a");
    ck_assert_int_eq(pol_int(&t.cfg, POL_CUDA_BOUNCE), 1);
    ck_assert_int_eq(pol_int(&t.cfg, POL_TCP_DSCP), 12); /* applied at run time */
    ck_assert_uint_ne(t.cfg.hash, loaded);               /* cuda.bounce is policy */
    tpol_eq(&t, t.diags.n - before, 2);
    tpol_eq(&t, tpol_count(&t, "cuda.bounce changed to 'off'", "until the next start", NULL), 1);
    ck_assert(pol_start_only(POL_LOG_LEVEL) && pol_start_only(POL_ENGINE_MAX_INFLIGHT));
    ck_assert(!pol_start_only(POL_TCP_DSCP) && !pol_start_only(POL_KILL_SWITCH_FILE) &&
              !pol_start_only(POL_ROLLOUT_PERCENT));
}
END_TEST

/* The config file's problems are counted apart from the environment's: a
 * reload refuses a file with problems, not a process with a bad variable. */
START_TEST(file_problems_counted_apart)
{
    struct tpol t;

    tpol_init(&t);
    tpol_env(&t, "TESHIM_BOGUS", "1");
    tpol_env(&t, "TESHIM_CONFIG", tpol_write(&t, "ok.conf", "tcp.dscp = 10\n"));
    tpol_load(&t);
    tpol_eq(&t, t.cfg.nwarnings, 1);
    tpol_eq(&t, t.cfg.nfile_warnings, 0);

    tpol_init(&t);
    tpol_env(&t, "TESHIM_CONFIG",
             tpol_write(&t, "bad.conf", "profile = nosuch\ntcp.dscp = 99\ntcp.nodelai = on\n"));
    tpol_load(&t);
    tpol_eq(&t, t.cfg.nfile_warnings, 3);

    tpol_init(&t);
    tpol_env(&t, "TESHIM_CONFIG", tpol_path(&t, "missing.conf"));
    tpol_load(&t);
    tpol_eq(&t, t.cfg.nfile_warnings, 1);
}
END_TEST

Suite *tpol_gate_suite(void)
{
    Suite *s = suite_create("policy_gate");
    TCase *tc = tcase_create("rollout");

    tcase_add_test(tc, bucket_is_stable);
    tcase_add_test(tc, bucket_depends_on_each_field);
    tcase_add_test(tc, rollout_percent_share);
    tcase_add_test(tc, rollout_arm_forces);
    suite_add_tcase(s, tc);
    tc = tcase_create("switches");
    tcase_add_test(tc, kill_switch_env);
    tcase_add_test(tc, kill_switch_file);
    tcase_add_test(tc, observe_mode);
    suite_add_tcase(s, tc);
    tc = tcase_create("scope");
    tcase_add_test(tc, scope_programs);
    tcase_add_test(tc, list_match);
    suite_add_tcase(s, tc);
    tc = tcase_create("reload");
    tcase_add_test(tc, gate_with_and_without_kill_file);
    tcase_add_test(tc, config_copy_owns_its_strings);
    tcase_add_test(tc, reload_keeps_start_only_values);
    tcase_add_test(tc, file_problems_counted_apart);
    suite_add_tcase(s, tc);
    return s;
}
