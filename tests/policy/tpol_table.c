/* The parameter table itself: names, defaults, lookups, profiles. */
#include "tpol.h"

#include <ctype.h>
#include <string.h>

START_TEST(env_name_from_key)
{
    for (int p = 0; p < POL_NPARAMS; p++) {
        const struct pol_param_info *pi = &pol_params[p];
        char want[160] = "TESHIM_";
        size_t n = strlen(want);
        for (const char *k = pi->key; *k && n + 1 < sizeof(want); k++)
            want[n++] = *k == '.' ? '_' : (char)toupper((unsigned char)*k);
        want[n] = '\0';
        ck_assert_msg(strcmp(pi->env, want) == 0, "row %s: environment name %s, want %s", pi->key,
                      pi->env, want);
    }
}
END_TEST

START_TEST(keys_unique_and_lookups)
{
    for (int p = 0; p < POL_NPARAMS; p++) {
        ck_assert_msg(pol_find_key(pol_params[p].key) == p, "key %s", pol_params[p].key);
        ck_assert_msg(pol_find_env(pol_params[p].env) == p, "env %s", pol_params[p].env);
        ck_assert_msg(pol_params[p].doc[0] != '\0', "%s has no doc", pol_params[p].key);
        for (const char *k = pol_params[p].key; *k; k++)
            ck_assert_msg(islower((unsigned char)*k) || isdigit((unsigned char)*k) || *k == '.' ||
                              *k == '_',
                          "key %s: only lower case, digits, '.' and '_'", pol_params[p].key);
    }
    ck_assert_int_eq(pol_find_key("no.such.key"), -1);
    ck_assert_int_eq(pol_find_env("TESHIM_NO_SUCH"), -1);
    ck_assert_int_eq(pol_find_key("RDMA.TRAFFIC_CLASS"), -1);
}
END_TEST

START_TEST(defaults_valid)
{
    for (int p = 0; p < POL_NPARAMS; p++) {
        const struct pol_param_info *pi = &pol_params[p];
        int64_t v;
        if (pi->def[0] == '\0') {
            ck_assert_msg(pi->type != POL_T_BOOL && pi->type != POL_T_ENUM,
                          "%s: a bool or enum needs a default", pi->key);
            continue;
        }
        ck_assert_msg(pol_parse_value((enum pol_param)p, pi->def, &v) == 0,
                      "%s: default '%s' does not parse", pi->key, pi->def);
        if (pi->type == POL_T_INT || pi->type == POL_T_SIZE)
            ck_assert_msg(pi->min <= pi->max, "%s: empty range", pi->key);
        if (pi->type == POL_T_ENUM)
            ck_assert_msg(pi->choices[0] != '\0', "%s: no choices", pi->key);
    }
}
END_TEST

/* Every injection is off by default. */
START_TEST(injections_off_by_default)
{
    struct tpol t;

    tpol_init(&t);
    tpol_load(&t);
    ck_assert_int_eq(pol_int(&t.cfg, POL_RDMA_RELAXED_ORDERING), POL_RO_OFF);
    ck_assert(!pol_is_set(&t.cfg, POL_RDMA_TRAFFIC_CLASS));
    ck_assert(!pol_is_set(&t.cfg, POL_RDMA_SERVICE_LEVEL));
    for (int p = 0; p < POL_NPARAMS; p++) {
        const struct pol_param_info *pi = &pol_params[p];
        /* Areas' on/off switches: a bool or an enum whose first choice is off. */
        if (strncmp(pi->key, "log.", 4) == 0 || strncmp(pi->key, "stats.", 6) == 0)
            continue;
        if (pi->type == POL_T_ENUM && strncmp(pi->choices, "off|", 4) == 0)
            ck_assert_msg(pol_int(&t.cfg, (enum pol_param)p) == 0, "%s is on by default", pi->key);
    }
}
END_TEST

START_TEST(shipped_profiles_clean)
{
    ck_assert_uint_ge(pol_nprofiles, 2);
    for (size_t i = 0; i < pol_nprofiles; i++) {
        struct tpol t;
        tpol_init(&t);
        tpol_env(&t, "TESHIM_PROFILE", pol_profiles[i].name);
        tpol_eq(&t, tpol_load(&t), 0);
        int from_profile = 0;
        for (int p = 0; p < POL_NPARAMS; p++)
            from_profile += t.cfg.v[p].src == POL_SRC_PROFILE;
        ck_assert_msg(from_profile > 0, "profile %s sets nothing", pol_profiles[i].name);
    }
}
END_TEST

START_TEST(suggest)
{
    ck_assert_str_eq(pol_suggest("rdma.trafic_class", false), "rdma.traffic_class");
    ck_assert_str_eq(pol_suggest("rdma.relaxed_odering", false), "rdma.relaxed_ordering");
    ck_assert_str_eq(pol_suggest("TESHIM_RDMA_SERVICELEVEL", true), "TESHIM_RDMA_SERVICE_LEVEL");
    ck_assert_str_eq(pol_suggest("teshim_disable", true), "TESHIM_DISABLE");
    ck_assert_ptr_null(pol_suggest("zzzzzzzzzzzzzzzzzzzzzzzzzzzz", false));
    /* Profiles: a cut-short name, a dropped letter, a longer name. */
    ck_assert_str_eq(pol_suggest_profile("rdma-ro"), "rdma-ro-tc");
    ck_assert_str_eq(pol_suggest_profile("tcp-qo"), "tcp-qos");
    ck_assert_str_eq(pol_suggest_profile("observer"), "observe");
    ck_assert_str_eq(pol_suggest_profile("cuda-pined"), "cuda-pinned");
}
END_TEST

START_TEST(format_round_trip)
{
    struct tpol t;
    char buf[256];

    tpol_init(&t);
    tpol_env(&t, "TESHIM_RDMA_RELAXED_ORDERING_MIN_BYTES", "2M");
    tpol_env(&t, "TESHIM_RDMA_RELAXED_ORDERING", "AUTO");
    tpol_env(&t, "TESHIM_DISABLE", "true");
    tpol_env(&t, "TESHIM_RDMA_DEVICES", " a , b,,c ");
    tpol_load(&t);
    pol_format_value(&t.cfg, POL_RDMA_RELAXED_ORDERING_MIN_BYTES, buf, sizeof(buf));
    ck_assert_str_eq(buf, "2M");
    pol_format_value(&t.cfg, POL_RDMA_RELAXED_ORDERING, buf, sizeof(buf));
    ck_assert_str_eq(buf, "auto");
    pol_format_value(&t.cfg, POL_DISABLE, buf, sizeof(buf));
    ck_assert_str_eq(buf, "on");
    pol_format_value(&t.cfg, POL_RDMA_DEVICES, buf, sizeof(buf));
    ck_assert_str_eq(buf, "a,b,c");
    pol_format_value(&t.cfg, POL_RDMA_TRAFFIC_CLASS, buf, sizeof(buf));
    ck_assert_str_eq(buf, "");
    /* Every formatted value parses back to itself. */
    for (int p = 0; p < POL_NPARAMS; p++) {
        int64_t v;
        if (!t.cfg.v[p].set)
            continue;
        pol_format_value(&t.cfg, (enum pol_param)p, buf, sizeof(buf));
        ck_assert_msg(pol_parse_value((enum pol_param)p, buf, &v) == 0, "%s: '%s'",
                      pol_params[p].key, buf);
        if (pol_params[p].type != POL_T_STR && pol_params[p].type != POL_T_LIST)
            ck_assert_msg(v == t.cfg.v[p].i, "%s: '%s'", pol_params[p].key, buf);
    }
}
END_TEST

Suite *tpol_table_suite(void)
{
    Suite *s = suite_create("policy_table");
    TCase *tc = tcase_create("table");

    tcase_add_test(tc, env_name_from_key);
    tcase_add_test(tc, keys_unique_and_lookups);
    tcase_add_test(tc, defaults_valid);
    tcase_add_test(tc, injections_off_by_default);
    tcase_add_test(tc, shipped_profiles_clean);
    tcase_add_test(tc, suggest);
    tcase_add_test(tc, format_round_trip);
    suite_add_tcase(s, tc);
    return s;
}
