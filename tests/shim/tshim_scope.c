/*
 * The host's own knobs and the calling object's scope (issue 15): a knob
 * the host set itself (MC_IB_*, NCCL_IB_*, UCX_IB_*) wins over the policy
 * unless rdma.override_host_knobs, and the report says which won;
 * scope.objects limits the RDMA policy to calls made by the named objects.
 */
#include "tshim.h"

#include <stdio.h>
#include <string.h>

#define REG_1_1 "ibv_reg_mr@IBVERBS_1.1"
#define MODIFY_QP "ibv_modify_qp@IBVERBS_1.1"

static void policy_on(struct tshim_run *r)
{
    tshim_env(r, "TESHIM_RDMA_RELAXED_ORDERING", "on");
    tshim_env(r, "TESHIM_RDMA_TRAFFIC_CLASS", "106");
    tshim_env(r, "TESHIM_RDMA_SERVICE_LEVEL", "5");
}

static const struct tsc_json *rtr_grh(const struct tshim_run *r)
{
    for (unsigned i = 0; i < tshim_rec_count(r, "modify_qp", NULL); i++) {
        const struct tsc_json *j = tshim_rec(r, "modify_qp", NULL, i);
        if (tsc_json_get(j, "ah_attr.is_global") && tshim_num(j, "ah_attr.is_global") == 1)
            return j;
    }
    ck_assert_msg(0, "no RTR transition with GRH in the record");
    return NULL;
}

static long long knob(const struct tsc_json *rep, const char *name, const char *field)
{
    const struct tsc_json *k = tsc_json_get(rep, "host_knobs");

    ck_assert_msg(k != NULL, "report without host_knobs");
    k = tsc_json_get(k, name);
    ck_assert_msg(k != NULL, "host_knobs without %s", name);
    return (long long)tsc_json_num(k, field, -1);
}

START_TEST(host_knobs_win_by_default)
{
    struct tshim_run r;

    tshim_init(&r, true);
    policy_on(&r);
    tshim_env(&r, "MC_IB_PCI_RELAXED_ORDERING", "0");
    tshim_env(&r, "NCCL_IB_TC", "4");
    tshim_host(&r, "reg_const:1M", "reg_const:4K", "rts:grh", NULL);
    /* The host's choices reached the library... */
    tshim_ck(&r, tshim_num(tshim_rec(&r, "reg_mr", "ibv_reg_mr", 0), "access") == 7);
    tshim_ck(&r, tshim_num(rtr_grh(&r), "ah_attr.grh.traffic_class") == 4);
    /* ...and what the host did not set itself is still teshim's. */
    tshim_ck(&r, tshim_num(rtr_grh(&r), "ah_attr.sl") == 5);

    struct tsc_json *rep = tshim_report(&r, 0);
    ck_assert_int_eq(tshim_ctr(rep, REG_1_1, "skipped_by_policy"), 1);
    ck_assert_int_eq(tshim_ctr(rep, REG_1_1, "not_applicable"), 1);
    ck_assert_int_eq(tshim_ctr(rep, REG_1_1, "injected"), 0);
    ck_assert_int_eq(tshim_ctr(rep, MODIFY_QP, "injected"), 1); /* the service level */
    ck_assert_str_eq(
        tsc_json_str(tsc_json_get(tsc_json_get(rep, "host_knobs"), "relaxed_ordering"), "env", ""),
        "MC_IB_PCI_RELAXED_ORDERING");
    ck_assert_int_eq(knob(rep, "relaxed_ordering", "host_won"), 1);
    ck_assert_int_eq(knob(rep, "relaxed_ordering", "teshim_won"), 0);
    ck_assert_int_eq(knob(rep, "traffic_class", "host_won"), 1);
    ck_assert_ptr_null(tsc_json_get(tsc_json_get(rep, "host_knobs"), "service_level"));
    tsc_json_free(rep);
}
END_TEST

START_TEST(override_host_knobs)
{
    struct tshim_run r;

    tshim_init(&r, true);
    policy_on(&r);
    tshim_env(&r, "TESHIM_RDMA_OVERRIDE_HOST_KNOBS", "on");
    tshim_env(&r, "UCX_IB_PCI_RELAXED_ORDERING", "off");
    tshim_env(&r, "MC_IB_TC", "4");
    tshim_env(&r, "MC_IB_SL", "2");
    tshim_host(&r, "reg_const:1M", "rts:grh", NULL);
    tshim_ck(&r, tshim_num(tshim_rec(&r, "reg_mr", "ibv_reg_mr", 0), "access") == (7 | TSHIM_RO));
    tshim_ck(&r, tshim_num(rtr_grh(&r), "ah_attr.grh.traffic_class") == 106);
    tshim_ck(&r, tshim_num(rtr_grh(&r), "ah_attr.sl") == 5);
    struct tsc_json *rep = tshim_report(&r, 0);
    ck_assert_int_eq(tshim_ctr(rep, REG_1_1, "injected"), 1);
    ck_assert_int_eq(knob(rep, "relaxed_ordering", "teshim_won"), 1);
    ck_assert_int_eq(knob(rep, "relaxed_ordering", "host_won"), 0);
    ck_assert_int_eq(knob(rep, "traffic_class", "teshim_won"), 1);
    ck_assert_int_eq(knob(rep, "service_level", "teshim_won"), 1);
    tsc_json_free(rep);
}
END_TEST

/* No knob set: the report has no host_knobs section. */
START_TEST(no_host_knobs_no_section)
{
    struct tshim_run r;

    tshim_init(&r, true);
    policy_on(&r);
    tshim_host(&r, "reg_const:1M", NULL);
    struct tsc_json *rep = tshim_report(&r, 0);
    ck_assert_ptr_null(tsc_json_get(rep, "host_knobs"));
    ck_assert_int_eq(tshim_ctr(rep, REG_1_1, "injected"), 1);
    tsc_json_free(rep);
}
END_TEST

/* The early host's registrations are made by libtshim_early.so, not by the
 * program: scope.objects names the caller. */
START_TEST(scope_objects_names_the_caller)
{
    static const struct {
        const char *objects;
        bool lib_in, prog_in;
    } cases[] = {
        {"libtshim_early.so", true, false},
        {"tshim_early_host,tshim_host", false, true},
        {"libtransfer_engine*.so", false, false},
        {"", true, true},
    };
    char path[1024];
    const char *early[] = {path, NULL};

    /* tshim_build's buffers are reused: keep a copy. */
    snprintf(path, sizeof(path), "%s", tshim_build("bin/tshim_early_host"));

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tshim_run r;

        tshim_init(&r, true);
        policy_on(&r);
        tshim_env(&r, "TESHIM_SCOPE_OBJECTS", cases[i].objects);
        tshim_exec(&r, early);
        tshim_ck(&r, r.status == 0);
        tshim_ck(&r, (tshim_num(tshim_rec(&r, "reg_mr", "ibv_reg_mr", 0), "access") & TSHIM_RO) ==
                         (cases[i].lib_in ? TSHIM_RO : 0));

        tshim_init(&r, true);
        policy_on(&r);
        tshim_env(&r, "TESHIM_SCOPE_OBJECTS", cases[i].objects);
        tshim_host(&r, "reg_const:1M", "rts:grh", NULL);
        tshim_ck(&r, (tshim_num(tshim_rec(&r, "reg_mr", "ibv_reg_mr", 0), "access") & TSHIM_RO) ==
                         (cases[i].prog_in ? TSHIM_RO : 0));
        tshim_ck(&r, tshim_num(rtr_grh(&r), "ah_attr.grh.traffic_class") ==
                         (cases[i].prog_in ? 106 : 4));
        struct tsc_json *rep = tshim_report(&r, 0);
        ck_assert_int_eq(
            tshim_ctr(rep, REG_1_1, cases[i].prog_in ? "injected" : "skipped_by_policy"), 1);
        tsc_json_free(rep);
    }
}
END_TEST

Suite *tshim_scope_suite(void)
{
    Suite *s = suite_create("shim_scope");
    TCase *tc = tcase_create("knobs");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, host_knobs_win_by_default);
    tcase_add_test(tc, override_host_knobs);
    tcase_add_test(tc, no_host_knobs_no_section);
    tcase_add_test(tc, scope_objects_names_the_caller);
    suite_add_tcase(s, tc);
    return s;
}
