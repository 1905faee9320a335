/*
 * What reaches libibverbs when the policy is on, for every entry point,
 * and that the application sees the same results and conventions.
 */
#include "tshim.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REG_1_1 "ibv_reg_mr@IBVERBS_1.1"
#define REG_IOVA "ibv_reg_mr_iova@IBVERBS_1.7"
#define REG_IOVA2 "ibv_reg_mr_iova2@IBVERBS_1.8"
#define REG_DMABUF "ibv_reg_dmabuf_mr@IBVERBS_1.12"
#define REREG "ibv_rereg_mr@IBVERBS_1.1"
#define MODIFY_QP "ibv_modify_qp@IBVERBS_1.1"
#define QPS_RTR 2   /* IBV_QPS_RTR */
#define LW_RW_RR 7u /* LOCAL_WRITE | REMOTE_WRITE | REMOTE_READ */

static void policy_on(struct tshim_run *r)
{
    tshim_env(r, "TESHIM_RDMA_RELAXED_ORDERING", "on");
    tshim_env(r, "TESHIM_RDMA_TRAFFIC_CLASS", "106");
    tshim_env(r, "TESHIM_RDMA_SERVICE_LEVEL", "5");
}

/* Every entry point once, and both QP transitions. */
static void run_all_entry_points(struct tshim_run *r)
{
    tshim_host(r, "reg_const:1M", "reg_rt:1M:7", "reg_iova:1M", "reg_dmabuf:1M", "rereg:1M",
               "qp:grh", "qp:nogrh", NULL);
}

static unsigned rec_access(const struct tshim_run *r, const char *call, const char *entry,
                           unsigned nth)
{
    const struct tsc_json *j = tshim_rec(r, call, entry, nth);
    ck_assert_msg(j != NULL, "no record of %s %s #%u", call, entry ? entry : "", nth);
    return (unsigned)tshim_num(j, "access");
}

/* The RTR transitions, in order: [0] with GRH, [1] without. */
static const struct tsc_json *rtr(const struct tshim_run *r, unsigned nth)
{
    unsigned seen = 0;

    for (unsigned i = 0; i < tshim_rec_count(r, "modify_qp", NULL); i++) {
        const struct tsc_json *j = tshim_rec(r, "modify_qp", NULL, i);
        if (tsc_json_get(j, "qp_state") && tshim_num(j, "qp_state") == QPS_RTR && seen++ == nth)
            return j;
    }
    ck_assert_msg(0, "no RTR transition #%u in the record", nth);
    return NULL;
}

START_TEST(injected_on_every_entry_point)
{
    struct tshim_run r;

    tshim_init(&r, true);
    policy_on(&r);
    run_all_entry_points(&r);

    /* The record: what libibverbs received. */
    tshim_ck(&r, rec_access(&r, "reg_mr", "ibv_reg_mr", 0) == (LW_RW_RR | TSHIM_RO));
    tshim_ck(&r, rec_access(&r, "reg_mr", "ibv_reg_mr_iova2", 0) == (7u | TSHIM_RO));
    tshim_ck(&r, rec_access(&r, "reg_mr", "ibv_reg_mr_iova", 0) == (1u | 4u | TSHIM_RO));
    tshim_ck(&r, rec_access(&r, "reg_mr", "ibv_reg_dmabuf_mr", 0) == (1u | 2u | TSHIM_RO));
    /* rereg: the initial local-only registration is bulk too; the change
     * of access gets the flag again. */
    tshim_ck(&r, rec_access(&r, "reg_mr", "ibv_reg_mr", 1) == (1u | TSHIM_RO));
    tshim_ck(&r, rec_access(&r, "rereg_mr", NULL, 0) == (LW_RW_RR | TSHIM_RO));
    tshim_ck(&r, tshim_rec_count(&r, "reg_mr", NULL) == 5);

    const struct tsc_json *grh = rtr(&r, 0), *nogrh = rtr(&r, 1);
    tshim_ck(&r, tshim_num(grh, "ah_attr.is_global") == 1);
    tshim_ck(&r, tshim_num(grh, "ah_attr.grh.traffic_class") == 106);
    tshim_ck(&r, tshim_num(grh, "ah_attr.sl") == 5);
    tshim_ck(&r, tshim_num(nogrh, "ah_attr.is_global") == 0);
    tshim_ck(&r, tshim_num(nogrh, "ah_attr.sl") == 5);
    tshim_ck(&r, tsc_json_get(nogrh, "ah_attr.grh.traffic_class") == NULL);
    /* The application's own values elsewhere are untouched. */
    tshim_ck(&r, tshim_num(grh, "ah_attr.grh.hop_limit") == 1);
    tshim_ck(&r, tshim_num(grh, "path_mtu") == 3);

    /* The application saw success and its attr as it wrote it. */
    tshim_ck(&r, tshim_out(&r, "qp:grh", "rc") == 0);
    tshim_ck(&r, tshim_out(&r, "qp:grh", "attr_unchanged") == 1);
    tshim_ck(&r, tshim_out(&r, "qp:nogrh", "attr_unchanged") == 1);
    tshim_ck(&r, tshim_out(&r, "rereg:1M", "rc") == 0);

    /* The report counts exactly that. */
    struct tsc_json *rep = tshim_report(&r, 0);
    ck_assert_str_eq(tsc_json_str(rep, "arm", ""), "B");
    ck_assert_str_eq(tsc_json_str(rep, "gate", ""), "enforce");
    ck_assert_str_eq(tsc_json_str(rep, "teshim_version", ""), TESHIM_VERSION);
    ck_assert_str_eq(tsc_json_str(rep, "program", ""), "tshim_host");
    ck_assert_uint_eq(strlen(tsc_json_str(rep, "policy_hash", "")), 16);
    ck_assert_int_eq((int)tsc_json_num(rep, "config_warnings", -1), 0);
    ck_assert_int_eq(tshim_ctr(rep, REG_1_1, "calls"), 2);
    ck_assert_int_eq(tshim_ctr(rep, REG_1_1, "injected"), 2);
    ck_assert_int_eq(tshim_ctr(rep, REG_1_1, "bytes"), 2 << 20);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "calls"), 1);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "injected"), 1);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA, "injected"), 1);
    ck_assert_int_eq(tshim_ctr(rep, REG_DMABUF, "injected"), 1);
    ck_assert_int_eq(tshim_ctr(rep, REREG, "calls"), 1);
    ck_assert_int_eq(tshim_ctr(rep, REREG, "injected"), 1);
    /* INIT (no address: not applicable) and RTR (injected), twice. */
    ck_assert_int_eq(tshim_ctr(rep, MODIFY_QP, "calls"), 4);
    ck_assert_int_eq(tshim_ctr(rep, MODIFY_QP, "injected"), 2);
    ck_assert_int_eq(tshim_ctr(rep, MODIFY_QP, "not_applicable"), 2);
    static const char *const zero[] = {"observed", "skipped_by_policy", "fallbacks", "errors"};
    static const char *const hooks[] = {REG_1_1, REG_IOVA, REG_IOVA2, REG_DMABUF, REREG, MODIFY_QP};
    for (size_t h = 0; h < 6; h++)
        for (size_t c = 0; c < 4; c++)
            ck_assert_msg(tshim_ctr(rep, hooks[h], zero[c]) == 0, "%s %s", hooks[h], zero[c]);
    tsc_json_free(rep);
    /* Nothing to warn about. */
    tshim_ck(&r, r.err[0] == '\0');
}
END_TEST

/* RoCE: every address is global, so the traffic class always applies. */
START_TEST(roce_traffic_class)
{
    struct tshim_run r;

    tshim_init(&r, true);
    policy_on(&r);
    tshim_env(&r, "VERBS_EMU_PERSONALITY", "roce");
    tshim_host(&r, "qp:grh", "reg_rt:1M:7", NULL);
    const struct tsc_json *j = rtr(&r, 0);
    tshim_ck(&r, tshim_num(j, "ret") == 0);
    tshim_ck(&r, tshim_num(j, "ah_attr.grh.traffic_class") == 106);
    tshim_ck(&r, tshim_num(j, "ah_attr.sl") == 5);
    tshim_ck(&r, tshim_out(&r, "qp:grh", "attr_unchanged") == 1);
    tshim_ck(&r, rec_access(&r, "reg_mr", NULL, 0) == (7u | TSHIM_RO));
}
END_TEST

/* The same host, no teshim: the baseline the other tests compare with. */
START_TEST(baseline_without_teshim)
{
    struct tshim_run r;

    tshim_init(&r, false);
    policy_on(&r);
    run_all_entry_points(&r);
    tshim_ck(&r, rec_access(&r, "reg_mr", "ibv_reg_mr", 0) == LW_RW_RR);
    tshim_ck(&r, rec_access(&r, "reg_mr", "ibv_reg_mr_iova2", 0) == 7u);
    tshim_ck(&r, rec_access(&r, "rereg_mr", NULL, 0) == LW_RW_RR);
    tshim_ck(&r, tshim_num(rtr(&r, 0), "ah_attr.grh.traffic_class") == 4);
    tshim_ck(&r, tshim_num(rtr(&r, 0), "ah_attr.sl") == 2);
    tshim_ck(&r, tshim_report_count(&r) == 0);
}
END_TEST

START_TEST(off_by_default)
{
    struct tshim_run r;

    tshim_init(&r, true);
    run_all_entry_points(&r);
    for (unsigned i = 0; i < tshim_rec_count(&r, "reg_mr", NULL); i++)
        tshim_ck(&r, (rec_access(&r, "reg_mr", NULL, i) & TSHIM_RO) == 0);
    tshim_ck(&r, (rec_access(&r, "rereg_mr", NULL, 0) & TSHIM_RO) == 0);
    tshim_ck(&r, tshim_num(rtr(&r, 0), "ah_attr.grh.traffic_class") == 4);
    tshim_ck(&r, tshim_num(rtr(&r, 0), "ah_attr.sl") == 2);
    tshim_ck(&r, tshim_num(rtr(&r, 1), "ah_attr.sl") == 2);
    struct tsc_json *rep = tshim_report(&r, 0);
    ck_assert_int_eq(tshim_ctr(rep, REG_1_1, "calls"), 2);
    ck_assert_int_eq(tshim_ctr(rep, REG_1_1, "skipped_by_policy"), 2);
    ck_assert_int_eq(tshim_ctr(rep, REG_1_1, "injected"), 0);
    ck_assert_int_eq(tshim_ctr(rep, MODIFY_QP, "skipped_by_policy"), 4);
    ck_assert_int_eq(tshim_ctr(rep, MODIFY_QP, "injected"), 0);
    tsc_json_free(rep);
}
END_TEST

START_TEST(below_size_threshold)
{
    struct tshim_run r;

    tshim_init(&r, true);
    policy_on(&r);
    tshim_host(&r, "reg_rt:64K:7", "reg_rt:60K:7", "reg_const:4K", NULL);
    tshim_ck(&r, rec_access(&r, "reg_mr", "ibv_reg_mr_iova2", 0) == (7u | TSHIM_RO));
    tshim_ck(&r, rec_access(&r, "reg_mr", "ibv_reg_mr_iova2", 1) == 7u);
    tshim_ck(&r, rec_access(&r, "reg_mr", "ibv_reg_mr", 0) == LW_RW_RR);
    struct tsc_json *rep = tshim_report(&r, 0);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "injected"), 1);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "not_applicable"), 1);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "bytes"), 64 << 10);
    ck_assert_int_eq(tshim_ctr(rep, REG_1_1, "not_applicable"), 1);
    tsc_json_free(rep);

    /* The threshold is a parameter. */
    tshim_init(&r, true);
    policy_on(&r);
    tshim_env(&r, "TESHIM_RDMA_RELAXED_ORDERING_MIN_BYTES", "4K");
    tshim_host(&r, "reg_const:4K", NULL);
    tshim_ck(&r, rec_access(&r, "reg_mr", "ibv_reg_mr", 0) == (LW_RW_RR | TSHIM_RO));
}
END_TEST

START_TEST(remote_atomics_kept_strict)
{
    struct tshim_run r;

    tshim_init(&r, true);
    policy_on(&r);
    tshim_host(&r, "reg_atomic:1M", "reg_rt:1M:15", NULL);
    tshim_ck(&r, rec_access(&r, "reg_mr", "ibv_reg_mr", 0) == (1u | 2u | 8u));
    tshim_ck(&r, rec_access(&r, "reg_mr", "ibv_reg_mr_iova2", 0) == 15u);
    struct tsc_json *rep = tshim_report(&r, 0);
    ck_assert_int_eq(tshim_ctr(rep, REG_1_1, "not_applicable"), 1);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "not_applicable"), 1);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "injected"), 0);
    tsc_json_free(rep);
}
END_TEST

/* The application asked for RO itself: passed on, not counted as ours. */
START_TEST(application_ro_untouched)
{
    struct tshim_run r;

    tshim_init(&r, true);
    policy_on(&r);
    tshim_host(&r, "reg_rt:1M:0x100007", NULL);
    tshim_ck(&r, rec_access(&r, "reg_mr", "ibv_reg_mr_iova2", 0) == (7u | TSHIM_RO));
    struct tsc_json *rep = tshim_report(&r, 0);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "injected"), 0);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "not_applicable"), 1);
    tsc_json_free(rep);
}
END_TEST

/* A driver that refuses the flag with EINVAL: one retry without it, the
 * device no longer gets it, one fallback counted, one warning. */
START_TEST(fallback_on_einval)
{
    struct tshim_run r;

    tshim_init(&r, true);
    policy_on(&r);
    tshim_env(&r, "VERBS_EMU_REJECT_ACCESS", "0x100000");
    tshim_host(&r, "reg_rt:1M:7", "reg_const:1M", "reg_rt:2M:7", NULL);
    tshim_ck(&r, tshim_strcount(r.out, " ok\n") == 3);
    /* iova2: refused with RO, retried without; then never asked with RO. */
    const struct tsc_json *first = tshim_rec(&r, "reg_mr", "ibv_reg_mr_iova2", 0);
    tshim_ck(&r, tshim_num(first, "access") == (7u | TSHIM_RO));
    tshim_ck(&r, tshim_num(first, "ret") == EINVAL);
    tshim_ck(&r, rec_access(&r, "reg_mr", "ibv_reg_mr_iova2", 1) == 7u);
    tshim_ck(&r, tshim_num(tshim_rec(&r, "reg_mr", "ibv_reg_mr_iova2", 1), "ret") == 0);
    tshim_ck(&r, rec_access(&r, "reg_mr", "ibv_reg_mr", 0) == LW_RW_RR);
    tshim_ck(&r, rec_access(&r, "reg_mr", "ibv_reg_mr_iova2", 2) == 7u);
    tshim_ck(&r, tshim_rec_count(&r, "reg_mr", NULL) == 4);
    struct tsc_json *rep = tshim_report(&r, 0);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "calls"), 2);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "fallbacks"), 1);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "injected"), 0);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "errors"), 0);
    ck_assert_int_eq(tshim_ctr(rep, REG_1_1, "injected"), 0);
    ck_assert_int_eq(tshim_ctr(rep, REG_1_1, "fallbacks"), 0);
    tsc_json_free(rep);
    tshim_ck(&r, tshim_strcount(r.err, "RELAXED_ORDERING refused") == 1);
}
END_TEST

/* The same rule in ibv_rereg_mr: the change of access is retried without
 * RO (the return value and errno are the verbs ones), and RO stops. */
START_TEST(fallback_on_einval_rereg)
{
    struct tshim_run r;

    tshim_init(&r, true);
    policy_on(&r);
    tshim_env(&r, "VERBS_EMU_REJECT_ACCESS", "0x100000");
    tshim_host(&r, "rereg_atomic:1M", "reg_rt:1M:7", NULL);
    tshim_ck(&r, tshim_out(&r, "rereg_atomic:1M", "rc") == 0);
    /* Atomics: the first registration was never a candidate. */
    tshim_ck(&r, rec_access(&r, "reg_mr", "ibv_reg_mr", 0) == (1u | 2u | 8u));
    const struct tsc_json *refused = tshim_rec(&r, "rereg_mr", NULL, 0);
    tshim_ck(&r, tshim_num(refused, "access") == (LW_RW_RR | TSHIM_RO));
    tshim_ck(&r, tshim_num(refused, "ret") == EINVAL);
    tshim_ck(&r, rec_access(&r, "rereg_mr", NULL, 1) == LW_RW_RR);
    tshim_ck(&r, tshim_num(tshim_rec(&r, "rereg_mr", NULL, 1), "ret") == 0);
    tshim_ck(&r, tshim_rec_count(&r, "rereg_mr", NULL) == 2);
    tshim_ck(&r, rec_access(&r, "reg_mr", "ibv_reg_mr_iova2", 0) == 7u);
    struct tsc_json *rep = tshim_report(&r, 0);
    ck_assert_int_eq(tshim_ctr(rep, REREG, "fallbacks"), 1);
    ck_assert_int_eq(tshim_ctr(rep, REREG, "errors"), 0);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "not_applicable"), 1);
    tsc_json_free(rep);
}
END_TEST

/* A registration that fails for a reason of its own (remote write without
 * local write) must not be taken for a refusal of RO. */
START_TEST(unrelated_einval_is_not_a_fallback)
{
    struct tshim_run r;

    tshim_init(&r, true);
    policy_on(&r);
    tshim_host(&r, "reg_rt:1M:2", "reg_rt:1M:7", NULL);
    tshim_ck(&r, tshim_out(&r, "reg_rt:1M:2", "errno") == EINVAL);
    /* The next good registration still gets the flag. */
    const struct tsc_json *last = tshim_rec(&r, "reg_mr", "ibv_reg_mr_iova2",
                                            tshim_rec_count(&r, "reg_mr", "ibv_reg_mr_iova2") - 1);
    tshim_ck(&r, tshim_num(last, "access") == (7u | TSHIM_RO));
    tshim_ck(&r, tshim_num(last, "ret") == 0);
    struct tsc_json *rep = tshim_report(&r, 0);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "fallbacks"), 0);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "errors"), 1);
    tsc_json_free(rep);
}
END_TEST

/* Failures keep the API's conventions: NULL + errno from registrations, the
 * errno value as the return of ibv_modify_qp; exactly as without teshim. */
START_TEST(error_conventions)
{
    struct tshim_run base, r;

    tshim_init(&base, false);
    tshim_host(&base, "reg_bad", "qp_bad", NULL);
    tshim_init(&r, true);
    policy_on(&r);
    tshim_host(&r, "reg_bad", "qp_bad", NULL);
    tshim_ck(&base, tshim_out(&base, "reg_bad", "errno") == EINVAL);
    tshim_ck(&base, tshim_out(&base, "qp_bad", "rc") == EINVAL);
    tshim_ck(&r, strcmp(r.out + strcspn(r.out, "\n"), base.out + strcspn(base.out, "\n")) == 0);
    struct tsc_json *rep = tshim_report(&r, 0);
    ck_assert_int_eq(tshim_ctr(rep, REG_1_1, "errors"), 1);
    ck_assert_int_eq(tshim_ctr(rep, MODIFY_QP, "errors"), 1);
    tsc_json_free(rep);
}
END_TEST

/*
 * One rule for errors, whatever the policy decided: a registration or QP
 * transition that fails is an error and nothing else (not also injected,
 * skipped or not applicable), with the policy on and off alike, so each
 * hook's outcomes add up to its calls (tshim_report checks the sums).
 */
START_TEST(error_rule_verbs)
{
    for (int on = 0; on < 2; on++) {
        struct tshim_run r;

        tshim_init(&r, true);
        if (on)
            policy_on(&r);
        /* iova2: one refused for its own flags, one good; 1.1: length 0;
         * modify_qp: INIT, RTR with a GRH, and an invalid RESET to RTR. */
        tshim_host(&r, "reg_rt:1M:2", "reg_rt:1M:7", "reg_bad", "qp:grh", "qp_bad", NULL);
        struct tsc_json *rep = tshim_report(&r, 0);
        ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "calls"), 2);
        ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "errors"), 1);
        ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, on ? "injected" : "skipped_by_policy"), 1);
        ck_assert_int_eq(tshim_ctr(rep, REG_1_1, "calls"), 1);
        ck_assert_int_eq(tshim_ctr(rep, REG_1_1, "errors"), 1);
        ck_assert_int_eq(tshim_ctr(rep, MODIFY_QP, "calls"), 3);
        ck_assert_int_eq(tshim_ctr(rep, MODIFY_QP, "errors"), 1);
        if (on) {
            ck_assert_int_eq(tshim_ctr(rep, MODIFY_QP, "injected"), 1);
            ck_assert_int_eq(tshim_ctr(rep, MODIFY_QP, "not_applicable"), 1);
        } else {
            ck_assert_int_eq(tshim_ctr(rep, MODIFY_QP, "skipped_by_policy"), 2);
        }
        /* Verbs calls have no benign codes: nothing is a would-block. */
        ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "would_block"), 0);
        ck_assert_int_eq(tshim_ctr(rep, MODIFY_QP, "would_block"), 0);
        tsc_json_free(rep);
    }
}
END_TEST

/* A PCIe config space whose Express capability has RlxdOrd set or clear. */
static void fake_pcie(struct tshim_run *r, const char *dev, bool ro)
{
    unsigned char cfg[256] = {0};
    char cmd[800], path[800];

    snprintf(cmd, sizeof(cmd), "mkdir -p %s/sys/class/infiniband/%s/device", r->dir, dev);
    ck_assert_int_eq(system(cmd), 0);
    cfg[0x06] = 0x10; /* status: capability list */
    cfg[0x34] = 0x40;
    cfg[0x40] = 0x10;             /* PCI Express */
    cfg[0x48] = ro ? 0x30 : 0x20; /* Device Control, RlxdOrd = bit 4 */
    snprintf(path, sizeof(path), "%s/sys/class/infiniband/%s/device/config", r->dir, dev);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(cfg, 1, sizeof(cfg), f), sizeof(cfg));
    fclose(f);
}

/* auto: only on devices whose PCIe function has relaxed ordering enabled. */
START_TEST(auto_follows_pcie_state)
{
    struct tshim_run r;

    tshim_init(&r, true);
    fake_pcie(&r, "emu0", true);
    fake_pcie(&r, "emu1", false);
    tshim_env(&r, "VERBS_EMU_DEVICES", "3");
    tshim_env(&r, "TESHIM_RDMA_RELAXED_ORDERING", "auto");
    tshim_env(&r, "TESHIM_RDMA_SYSFS_ROOT", tshim_path(&r, "sys"));
    tshim_host(&r, "reg_rt:1M:7", "reg_rt:1M:7", "-d", "1", "reg_rt:1M:7", "-d", "2", "reg_rt:1M:7",
               NULL);
    tshim_ck(&r, rec_access(&r, "reg_mr", NULL, 0) == (7u | TSHIM_RO));
    tshim_ck(&r, rec_access(&r, "reg_mr", NULL, 1) == (7u | TSHIM_RO));
    /* RlxdOrd clear, and no config space at all (unknown: left off). */
    tshim_ck(&r, rec_access(&r, "reg_mr", NULL, 2) == 7u);
    tshim_ck(&r, rec_access(&r, "reg_mr", NULL, 3) == 7u);
    struct tsc_json *rep = tshim_report(&r, 0);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "injected"), 2);
    ck_assert_int_eq(tshim_ctr(rep, REG_IOVA2, "not_applicable"), 2);
    tsc_json_free(rep);
    tshim_ck(&r, r.err[0] == '\0');
}
END_TEST

Suite *tshim_inject_suite(void)
{
    Suite *s = suite_create("shim_inject");
    TCase *tc = tcase_create("rdma");

    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, injected_on_every_entry_point);
    tcase_add_test(tc, roce_traffic_class);
    tcase_add_test(tc, baseline_without_teshim);
    tcase_add_test(tc, off_by_default);
    tcase_add_test(tc, below_size_threshold);
    tcase_add_test(tc, remote_atomics_kept_strict);
    tcase_add_test(tc, application_ro_untouched);
    tcase_add_test(tc, auto_follows_pcie_state);
    tcase_add_test(tc, fallback_on_einval);
    tcase_add_test(tc, fallback_on_einval_rereg);
    tcase_add_test(tc, unrelated_einval_is_not_a_fallback);
    tcase_add_test(tc, error_conventions);
    tcase_add_test(tc, error_rule_verbs);
    suite_add_tcase(s, tc);
    return s;
}
