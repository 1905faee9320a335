/* pol_rdma_mr_access and pol_rdma_qp_attrs on plain structs. */
#include "tpol.h"

#include <stdarg.h>
#include <string.h>

#define RO (1 << 20)           /* IBV_ACCESS_RELAXED_ORDERING */
#define LOCAL_WRITE (1 << 0)   /* IBV_ACCESS_LOCAL_WRITE */
#define REMOTE_WRITE (1 << 1)  /* IBV_ACCESS_REMOTE_WRITE */
#define REMOTE_READ (1 << 2)   /* IBV_ACCESS_REMOTE_READ */
#define REMOTE_ATOMIC (1 << 3) /* IBV_ACCESS_REMOTE_ATOMIC */
#define QP_STATE (1 << 0)      /* IBV_QP_STATE */
#define QP_AV (1 << 7)         /* IBV_QP_AV */

/* A configuration from "NAME=VALUE" pairs (NULL-terminated). */
static void cfg_from(struct tpol *t, ...)
{
    va_list ap;

    tpol_init(t);
    va_start(ap, t);
    for (const char *n; (n = va_arg(ap, const char *));)
        tpol_env(t, n, va_arg(ap, const char *));
    va_end(ap);
    tpol_eq(t, tpol_load(t), 0);
}

static struct pol_rdma_mr big_mr(void)
{
    struct pol_rdma_mr mr = {
        .device = "mlx5_0",
        .length = 1 << 20,
        .access = LOCAL_WRITE | REMOTE_WRITE | REMOTE_READ,
    };
    return mr;
}

START_TEST(mr_off_by_default)
{
    struct tpol t;
    struct pol_rdma_mr mr = big_mr();
    int acc = -1;

    cfg_from(&t, NULL);
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_SKIP_POLICY);
    ck_assert_int_eq(acc, mr.access);
}
END_TEST

START_TEST(mr_on_injects)
{
    struct tpol t;
    struct pol_rdma_mr mr = big_mr();
    int acc = -1;

    cfg_from(&t, "TESHIM_RDMA_RELAXED_ORDERING", "on", NULL);
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_INJECT);
    ck_assert_int_eq(acc, mr.access | RO);
    /* Exactly at the threshold still qualifies. */
    mr.length = 64 * 1024;
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_INJECT);
    ck_assert_int_eq(acc, mr.access | RO);
    /* Unknown device, no device list: in scope. */
    mr.device = NULL;
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_INJECT);
}
END_TEST

START_TEST(mr_size_threshold)
{
    struct tpol t;
    struct pol_rdma_mr mr = big_mr();
    int acc = -1;

    cfg_from(&t, "TESHIM_RDMA_RELAXED_ORDERING", "on", NULL);
    mr.length = 64 * 1024 - 1;
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_NOT_APPLICABLE);
    ck_assert_int_eq(acc, mr.access);

    cfg_from(&t, "TESHIM_RDMA_RELAXED_ORDERING", "on", "TESHIM_RDMA_RELAXED_ORDERING_MIN_BYTES",
             "1M", NULL);
    mr.length = (1 << 20) - 4096;
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_NOT_APPLICABLE);
    mr.length = 1 << 20;
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_INJECT);

    /* 0 = every registration. */
    cfg_from(&t, "TESHIM_RDMA_RELAXED_ORDERING", "on", "TESHIM_RDMA_RELAXED_ORDERING_MIN_BYTES",
             "0", NULL);
    mr.length = 1;
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_INJECT);
}
END_TEST

START_TEST(mr_remote_atomic_kept_strict)
{
    struct tpol t;
    struct pol_rdma_mr mr = big_mr();
    int acc = -1;

    cfg_from(&t, "TESHIM_RDMA_RELAXED_ORDERING", "on", NULL);
    mr.access |= REMOTE_ATOMIC;
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_NOT_APPLICABLE);
    ck_assert_int_eq(acc, mr.access);
    ck_assert_int_eq(acc & RO, 0);
}
END_TEST

START_TEST(mr_already_ro)
{
    struct tpol t;
    struct pol_rdma_mr mr = big_mr();
    int acc = -1;

    cfg_from(&t, "TESHIM_RDMA_RELAXED_ORDERING", "on", NULL);
    mr.access |= RO;
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_NOT_APPLICABLE);
    ck_assert_int_eq(acc, mr.access);
    /* Policy off leaves the application's own RO alone too. */
    cfg_from(&t, NULL);
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_SKIP_POLICY);
    ck_assert_int_eq(acc, mr.access);
}
END_TEST

START_TEST(mr_device_failed_before)
{
    struct tpol t;
    struct pol_rdma_mr mr = big_mr();
    int acc = -1;

    cfg_from(&t, "TESHIM_RDMA_RELAXED_ORDERING", "on", NULL);
    mr.dev_ro_failed = true;
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_NOT_APPLICABLE);
    ck_assert_int_eq(acc, mr.access);
}
END_TEST

START_TEST(mr_auto)
{
    struct tpol t;
    struct pol_rdma_mr mr = big_mr();
    int acc = -1;

    cfg_from(&t, "TESHIM_RDMA_RELAXED_ORDERING", "auto", NULL);
    /* Neither known. */
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_NOT_APPLICABLE);
    ck_assert_int_eq(acc, mr.access);
    /* PCIe RO enabled but no iova2 in the library. */
    mr.dev_ro_capable = true;
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_NOT_APPLICABLE);
    /* iova2 but PCIe RO disabled. */
    mr.dev_ro_capable = false;
    mr.iova2_available = true;
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_NOT_APPLICABLE);
    ck_assert_int_eq(acc, mr.access);
    /* Both. */
    mr.dev_ro_capable = true;
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_INJECT);
    ck_assert_int_eq(acc, mr.access | RO);
    /* Both, but small. */
    mr.length = 4096;
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_NOT_APPLICABLE);
}
END_TEST

START_TEST(mr_observe)
{
    struct tpol t;
    struct pol_rdma_mr mr = big_mr();
    int acc = -1;

    cfg_from(&t, "TESHIM_RDMA_RELAXED_ORDERING", "on", "TESHIM_MODE", "observe", NULL);
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_OBSERVED);
    ck_assert_int_eq(acc, mr.access);
    /* Observed means "would have": a call that would not qualify stays N/A. */
    mr.length = 100;
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_NOT_APPLICABLE);
}
END_TEST

START_TEST(mr_gate_closed)
{
    struct tpol t;
    struct pol_rdma_mr mr = big_mr();
    int acc = -1;

    cfg_from(&t, "TESHIM_RDMA_RELAXED_ORDERING", "on", "TESHIM_ROLLOUT_ARM", "A", NULL);
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_SKIP_POLICY);
    ck_assert_int_eq(acc, mr.access);
    cfg_from(&t, "TESHIM_RDMA_RELAXED_ORDERING", "on", "TESHIM_DISABLE", "yes", NULL);
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_SKIP_POLICY);
    ck_assert_int_eq(acc, mr.access);
    cfg_from(&t, "TESHIM_RDMA_RELAXED_ORDERING", "on", "TESHIM_SCOPE_PROGRAMS", "other", NULL);
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_SKIP_POLICY);
    ck_assert_int_eq(acc, mr.access);
}
END_TEST

START_TEST(mr_device_scope)
{
    struct tpol t;
    struct pol_rdma_mr mr = big_mr();
    int acc = -1;

    cfg_from(&t, "TESHIM_RDMA_RELAXED_ORDERING", "on", "TESHIM_RDMA_DEVICES", "mlx5_*,rxe1", NULL);
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_INJECT);
    mr.device = "rxe1";
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_INJECT);
    mr.device = "rxe0";
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_SKIP_POLICY);
    ck_assert_int_eq(acc, mr.access);
    /* A device list and an unknown device: not in scope. */
    mr.device = NULL;
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_SKIP_POLICY);
}
END_TEST

static struct pol_rdma_qp rtr(bool av, bool global)
{
    struct pol_rdma_qp qp = {
        .device = "mlx5_0",
        .attr_mask = QP_STATE | (av ? QP_AV : 0),
        .is_global = global,
        .traffic_class = 3,
        .sl = 1,
    };
    return qp;
}

START_TEST(qp_off_by_default)
{
    struct tpol t;
    struct pol_rdma_qp qp = rtr(true, true);
    struct pol_rdma_qp_dec d;

    cfg_from(&t, NULL);
    pol_rdma_qp_attrs(&t.cfg, &qp, &d);
    ck_assert_int_eq(d.tc, POL_SKIP_POLICY);
    ck_assert_int_eq(d.sl, POL_SKIP_POLICY);
    ck_assert_uint_eq(d.traffic_class, 3);
    ck_assert_uint_eq(d.service_level, 1);
}
END_TEST

START_TEST(qp_tc_needs_av_and_global)
{
    struct tpol t;
    struct pol_rdma_qp_dec d;
    struct pol_rdma_qp qp;

    cfg_from(&t, "TESHIM_RDMA_TRAFFIC_CLASS", "106", NULL);
    qp = rtr(true, true);
    pol_rdma_qp_attrs(&t.cfg, &qp, &d);
    ck_assert_int_eq(d.tc, POL_INJECT);
    ck_assert_uint_eq(d.traffic_class, 106);
    ck_assert_int_eq(d.sl, POL_SKIP_POLICY); /* service_level unset */
    ck_assert_uint_eq(d.service_level, 1);

    qp = rtr(true, false);
    pol_rdma_qp_attrs(&t.cfg, &qp, &d);
    ck_assert_int_eq(d.tc, POL_NOT_APPLICABLE);
    ck_assert_uint_eq(d.traffic_class, 3);

    /* is_global without IBV_QP_AV in the mask: the address is not being set. */
    qp = rtr(false, true);
    pol_rdma_qp_attrs(&t.cfg, &qp, &d);
    ck_assert_int_eq(d.tc, POL_NOT_APPLICABLE);
    ck_assert_uint_eq(d.traffic_class, 3);
}
END_TEST

START_TEST(qp_sl_needs_av)
{
    struct tpol t;
    struct pol_rdma_qp_dec d;
    struct pol_rdma_qp qp;

    cfg_from(&t, "TESHIM_RDMA_SERVICE_LEVEL", "5", NULL);
    qp = rtr(true, false);
    pol_rdma_qp_attrs(&t.cfg, &qp, &d);
    ck_assert_int_eq(d.sl, POL_INJECT);
    ck_assert_uint_eq(d.service_level, 5);
    ck_assert_int_eq(d.tc, POL_SKIP_POLICY);
    ck_assert_uint_eq(d.traffic_class, 3);

    qp = rtr(false, false);
    pol_rdma_qp_attrs(&t.cfg, &qp, &d);
    ck_assert_int_eq(d.sl, POL_NOT_APPLICABLE);
    ck_assert_uint_eq(d.service_level, 1);

    /* Both configured, both apply on a global AV. */
    cfg_from(&t, "TESHIM_RDMA_SERVICE_LEVEL", "0", "TESHIM_RDMA_TRAFFIC_CLASS", "0", NULL);
    qp = rtr(true, true);
    pol_rdma_qp_attrs(&t.cfg, &qp, &d);
    ck_assert_int_eq(d.sl, POL_INJECT);
    ck_assert_int_eq(d.tc, POL_INJECT);
    ck_assert_uint_eq(d.service_level, 0);
    ck_assert_uint_eq(d.traffic_class, 0);
}
END_TEST

START_TEST(qp_observe_and_gates)
{
    struct tpol t;
    struct pol_rdma_qp_dec d;
    struct pol_rdma_qp qp = rtr(true, true);

    cfg_from(&t, "TESHIM_RDMA_TRAFFIC_CLASS", "106", "TESHIM_RDMA_SERVICE_LEVEL", "5",
             "TESHIM_MODE", "observe", NULL);
    pol_rdma_qp_attrs(&t.cfg, &qp, &d);
    ck_assert_int_eq(d.tc, POL_OBSERVED);
    ck_assert_int_eq(d.sl, POL_OBSERVED);
    ck_assert_uint_eq(d.traffic_class, 3);
    ck_assert_uint_eq(d.service_level, 1);

    cfg_from(&t, "TESHIM_RDMA_TRAFFIC_CLASS", "106", "TESHIM_RDMA_SERVICE_LEVEL", "5",
             "TESHIM_ROLLOUT_ARM", "A", NULL);
    pol_rdma_qp_attrs(&t.cfg, &qp, &d);
    ck_assert_int_eq(d.tc, POL_SKIP_POLICY);
    ck_assert_int_eq(d.sl, POL_SKIP_POLICY);
    ck_assert_uint_eq(d.traffic_class, 3);

    cfg_from(&t, "TESHIM_RDMA_TRAFFIC_CLASS", "106", "TESHIM_RDMA_DEVICES", "rxe*", NULL);
    pol_rdma_qp_attrs(&t.cfg, &qp, &d);
    ck_assert_int_eq(d.tc, POL_SKIP_POLICY);
    ck_assert_uint_eq(d.traffic_class, 3);
    qp.device = "rxe0";
    pol_rdma_qp_attrs(&t.cfg, &qp, &d);
    ck_assert_int_eq(d.tc, POL_INJECT);
    ck_assert_uint_eq(d.traffic_class, 106);
}
END_TEST

/* The host set its own relaxed-ordering knob: it wins unless overridden. */
START_TEST(mr_host_knob)
{
    struct tpol t;
    struct pol_rdma_mr mr = big_mr();
    enum pol_knob_winner k = POL_KNOB_TESHIM_WON;
    int acc = -1;

    cfg_from(&t, "TESHIM_RDMA_RELAXED_ORDERING", "on", NULL);
    ck_assert_int_eq(pol_rdma_mr_decide(&t.cfg, &mr, &acc, &k), POL_INJECT);
    ck_assert_int_eq(k, POL_KNOB_UNSET);

    cfg_from(&t, "TESHIM_RDMA_RELAXED_ORDERING", "on", "MC_IB_PCI_RELAXED_ORDERING", "0", NULL);
    ck_assert_int_eq(pol_rdma_mr_decide(&t.cfg, &mr, &acc, &k), POL_SKIP_POLICY);
    ck_assert_int_eq(k, POL_KNOB_HOST_WON);
    ck_assert_int_eq(acc, mr.access);
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_SKIP_POLICY);
    /* A call that does not qualify is not the knob's doing. */
    mr.length = 4096;
    ck_assert_int_eq(pol_rdma_mr_decide(&t.cfg, &mr, &acc, &k), POL_NOT_APPLICABLE);
    ck_assert_int_eq(k, POL_KNOB_UNSET);
    mr = big_mr();

    cfg_from(&t, "TESHIM_RDMA_RELAXED_ORDERING", "on", "NCCL_IB_PCI_RELAXED_ORDERING", "1",
             "TESHIM_RDMA_OVERRIDE_HOST_KNOBS", "on", NULL);
    ck_assert_int_eq(pol_rdma_mr_decide(&t.cfg, &mr, &acc, &k), POL_INJECT);
    ck_assert_int_eq(k, POL_KNOB_TESHIM_WON);
    ck_assert_int_eq(acc, mr.access | RO);

    /* Observe mode reports the same winner. */
    cfg_from(&t, "TESHIM_RDMA_RELAXED_ORDERING", "on", "UCX_IB_PCI_RELAXED_ORDERING", "auto",
             "TESHIM_MODE", "observe", NULL);
    ck_assert_int_eq(pol_rdma_mr_decide(&t.cfg, &mr, &acc, &k), POL_SKIP_POLICY);
    ck_assert_int_eq(k, POL_KNOB_HOST_WON);
    /* Another engine's traffic-class knob is not about registrations. */
    cfg_from(&t, "TESHIM_RDMA_RELAXED_ORDERING", "on", "MC_IB_TC", "3", NULL);
    ck_assert_int_eq(pol_rdma_mr_decide(&t.cfg, &mr, &acc, &k), POL_INJECT);
}
END_TEST

START_TEST(qp_host_knobs)
{
    struct tpol t;
    struct pol_rdma_qp_dec d;
    struct pol_rdma_qp qp = rtr(true, true);

    cfg_from(&t, "TESHIM_RDMA_TRAFFIC_CLASS", "106", "TESHIM_RDMA_SERVICE_LEVEL", "5", "NCCL_IB_TC",
             "3", NULL);
    pol_rdma_qp_attrs(&t.cfg, &qp, &d);
    ck_assert_int_eq(d.tc, POL_SKIP_POLICY);
    ck_assert_int_eq(d.tc_knob, POL_KNOB_HOST_WON);
    ck_assert_uint_eq(d.traffic_class, 3);
    ck_assert_int_eq(d.sl, POL_INJECT);
    ck_assert_int_eq(d.sl_knob, POL_KNOB_UNSET);
    ck_assert_uint_eq(d.service_level, 5);

    cfg_from(&t, "TESHIM_RDMA_TRAFFIC_CLASS", "106", "TESHIM_RDMA_SERVICE_LEVEL", "5", "UCX_IB_SL",
             "1", "MC_IB_TC", "", NULL);
    pol_rdma_qp_attrs(&t.cfg, &qp, &d);
    ck_assert_int_eq(d.tc, POL_SKIP_POLICY); /* set, even to nothing */
    ck_assert_int_eq(d.tc_knob, POL_KNOB_HOST_WON);
    ck_assert_int_eq(d.sl, POL_SKIP_POLICY);
    ck_assert_int_eq(d.sl_knob, POL_KNOB_HOST_WON);
    ck_assert_uint_eq(d.service_level, 1);

    cfg_from(&t, "TESHIM_RDMA_TRAFFIC_CLASS", "106", "TESHIM_RDMA_SERVICE_LEVEL", "5", "MC_IB_SL",
             "1", "UCX_IB_TRAFFIC_CLASS", "3", "TESHIM_RDMA_OVERRIDE_HOST_KNOBS", "on", NULL);
    pol_rdma_qp_attrs(&t.cfg, &qp, &d);
    ck_assert_int_eq(d.tc, POL_INJECT);
    ck_assert_int_eq(d.tc_knob, POL_KNOB_TESHIM_WON);
    ck_assert_uint_eq(d.traffic_class, 106);
    ck_assert_int_eq(d.sl, POL_INJECT);
    ck_assert_int_eq(d.sl_knob, POL_KNOB_TESHIM_WON);

    /* Not applicable (no GRH): the knob did not decide. */
    cfg_from(&t, "TESHIM_RDMA_TRAFFIC_CLASS", "106", "MC_IB_TC", "3", NULL);
    qp = rtr(true, false);
    pol_rdma_qp_attrs(&t.cfg, &qp, &d);
    ck_assert_int_eq(d.tc, POL_NOT_APPLICABLE);
    ck_assert_int_eq(d.tc_knob, POL_KNOB_UNSET);
}
END_TEST

START_TEST(host_knobs_read)
{
    struct tpol t;
    struct pol_host_knob k[POL_NKNOBS];
    char *env[] = {(char *)"NCCL_IB_TC=7", (char *)"MC_IB_TC=3", (char *)"MC_IB_TCX=9",
                   (char *)"UCX_IB_SL=2", NULL};

    pol_host_knobs_read(env, k);
    ck_assert_str_eq(k[POL_KNOB_TRAFFIC_CLASS].env, "MC_IB_TC"); /* Mooncake's first */
    ck_assert_str_eq(k[POL_KNOB_TRAFFIC_CLASS].value, "3");
    ck_assert_str_eq(k[POL_KNOB_SERVICE_LEVEL].env, "UCX_IB_SL");
    ck_assert_str_eq(k[POL_KNOB_RELAXED_ORDERING].env, "");
    pol_host_knobs_read(NULL, k);
    ck_assert_str_eq(k[POL_KNOB_TRAFFIC_CLASS].env, "");
    ck_assert_str_eq(pol_knob_name(POL_KNOB_SERVICE_LEVEL), "service_level");
    ck_assert_str_eq(pol_knob_vars(POL_KNOB_RELAXED_ORDERING)[1], "NCCL_IB_PCI_RELAXED_ORDERING");

    /* pol_load reads them, and they are no TESHIM_* variables to warn of. */
    cfg_from(&t, "NCCL_IB_PCI_RELAXED_ORDERING", "1", NULL);
    ck_assert_str_eq(t.cfg.host_knobs[POL_KNOB_RELAXED_ORDERING].env,
                     "NCCL_IB_PCI_RELAXED_ORDERING");
    ck_assert_str_eq(t.cfg.host_knobs[POL_KNOB_RELAXED_ORDERING].value, "1");
}
END_TEST

/* scope.objects: the calling object's file name. */
START_TEST(object_scope)
{
    struct tpol t;
    struct pol_rdma_mr mr = big_mr();
    struct pol_rdma_qp_dec d;
    struct pol_rdma_qp qp = rtr(true, true);
    int acc;

    cfg_from(&t, "TESHIM_RDMA_RELAXED_ORDERING", "on", "TESHIM_RDMA_TRAFFIC_CLASS", "106",
             "TESHIM_SCOPE_OBJECTS", "libtransfer_engine*.so, mooncake_*", NULL);
    mr.object = "libtransfer_engine.so";
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_INJECT);
    mr.object = "mooncake_master";
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_INJECT);
    mr.object = "libnvshmem_host.so.3";
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_SKIP_POLICY);
    ck_assert_int_eq(acc, mr.access);
    mr.object = NULL;
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_SKIP_POLICY);
    qp.object = "libnvshmem_host.so.3";
    pol_rdma_qp_attrs(&t.cfg, &qp, &d);
    ck_assert_int_eq(d.tc, POL_SKIP_POLICY);
    ck_assert_uint_eq(d.traffic_class, 3);
    qp.object = "libtransfer_engine.so";
    pol_rdma_qp_attrs(&t.cfg, &qp, &d);
    ck_assert_int_eq(d.tc, POL_INJECT);

    /* Empty: every caller, known or not. */
    cfg_from(&t, "TESHIM_RDMA_RELAXED_ORDERING", "on", NULL);
    mr.object = NULL;
    ck_assert_int_eq(pol_rdma_mr_access(&t.cfg, &mr, &acc), POL_INJECT);
}
END_TEST

Suite *tpol_rdma_suite(void)
{
    Suite *s = suite_create("policy_rdma");
    TCase *tc = tcase_create("mr_access");

    tcase_add_test(tc, mr_off_by_default);
    tcase_add_test(tc, mr_on_injects);
    tcase_add_test(tc, mr_size_threshold);
    tcase_add_test(tc, mr_remote_atomic_kept_strict);
    tcase_add_test(tc, mr_already_ro);
    tcase_add_test(tc, mr_device_failed_before);
    tcase_add_test(tc, mr_auto);
    tcase_add_test(tc, mr_observe);
    tcase_add_test(tc, mr_gate_closed);
    tcase_add_test(tc, mr_device_scope);
    suite_add_tcase(s, tc);
    tc = tcase_create("qp_attrs");
    tcase_add_test(tc, qp_off_by_default);
    tcase_add_test(tc, qp_tc_needs_av_and_global);
    tcase_add_test(tc, qp_sl_needs_av);
    tcase_add_test(tc, qp_observe_and_gates);
    tcase_add_test(tc, mr_host_knob);
    tcase_add_test(tc, qp_host_knobs);
    tcase_add_test(tc, host_knobs_read);
    tcase_add_test(tc, object_scope);
    suite_add_tcase(s, tc);
    return s;
}
