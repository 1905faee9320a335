/* Decisions for the RDMA hooks, on plain structs. */
#include "pol.h"

#include <stdio.h>
#include <string.h>

/* The ABI values of verbs.h; policy/ depends on libc only. */
#define POL_IBV_ACCESS_REMOTE_ATOMIC (1 << 3)
#define POL_IBV_ACCESS_RELAXED_ORDERING (1 << 20)
#define POL_IBV_QP_AV (1 << 7)

enum pol_verdict pol_gate_verdict(const struct pol_config *cfg)
{
    switch (cfg->gate) {
    case POL_GATE_ENFORCE:
        return POL_INJECT;
    case POL_GATE_OBSERVE:
        return POL_OBSERVED;
    default:
        return POL_SKIP_POLICY;
    }
}

static bool device_in_scope(const struct pol_config *cfg, const char *device)
{
    const char *list = pol_str(cfg, POL_RDMA_DEVICES);

    if (!*list)
        return true;
    return device && pol_list_match(list, device);
}

static bool object_in_scope(const struct pol_config *cfg, const char *object)
{
    const char *list = pol_str(cfg, POL_SCOPE_OBJECTS);

    if (!*list)
        return true;
    return object && pol_list_match(list, object);
}

static const char *const knob_vars[POL_NKNOBS][4] = {
    [POL_KNOB_RELAXED_ORDERING] = {"MC_IB_PCI_RELAXED_ORDERING", "NCCL_IB_PCI_RELAXED_ORDERING",
                                   "UCX_IB_PCI_RELAXED_ORDERING", NULL},
    [POL_KNOB_TRAFFIC_CLASS] = {"MC_IB_TC", "NCCL_IB_TC", "UCX_IB_TRAFFIC_CLASS", NULL},
    [POL_KNOB_SERVICE_LEVEL] = {"MC_IB_SL", "NCCL_IB_SL", "UCX_IB_SL", NULL},
};

const char *pol_knob_name(enum pol_knob k)
{
    static const char *const names[POL_NKNOBS] = {"relaxed_ordering", "traffic_class",
                                                  "service_level"};
    return (unsigned)k < POL_NKNOBS ? names[k] : "?";
}

const char *const *pol_knob_vars(enum pol_knob k)
{
    return knob_vars[(unsigned)k < POL_NKNOBS ? k : 0];
}

void pol_host_knobs_read(char *const *environ, struct pol_host_knob *knobs)
{
    memset(knobs, 0, sizeof(*knobs) * POL_NKNOBS);
    for (int k = 0; k < POL_NKNOBS; k++)
        for (const char *const *v = knob_vars[k]; *v && !knobs[k].env[0]; v++) {
            size_t n = strlen(*v);
            for (char *const *e = environ; e && *e; e++)
                if (strncmp(*e, *v, n) == 0 && (*e)[n] == '=') {
                    snprintf(knobs[k].env, sizeof(knobs[k].env), "%s", *v);
                    snprintf(knobs[k].value, sizeof(knobs[k].value), "%s", *e + n + 1);
                    break;
                }
        }
}

/* A verdict that would change the call meets the host's own knob k: the
 * host's setting stands unless the policy says override. */
static enum pol_verdict knob_rule(const struct pol_config *cfg, enum pol_knob k, enum pol_verdict v,
                                  enum pol_knob_winner *winner)
{
    *winner = POL_KNOB_UNSET;
    if ((v != POL_INJECT && v != POL_OBSERVED) || !cfg->host_knobs[k].env[0])
        return v;
    if (pol_int(cfg, POL_RDMA_OVERRIDE_HOST_KNOBS)) {
        *winner = POL_KNOB_TESHIM_WON;
        return v;
    }
    *winner = POL_KNOB_HOST_WON;
    return POL_SKIP_POLICY;
}

enum pol_verdict pol_rdma_mr_access(const struct pol_config *cfg, const struct pol_rdma_mr *mr,
                                    int *access_out)
{
    return pol_rdma_mr_decide(cfg, mr, access_out, NULL);
}

enum pol_verdict pol_rdma_mr_decide(const struct pol_config *cfg, const struct pol_rdma_mr *mr,
                                    int *access_out, enum pol_knob_winner *knob_out)
{
    int64_t mode = pol_int(cfg, POL_RDMA_RELAXED_ORDERING);
    enum pol_verdict gate = pol_gate_verdict(cfg);
    enum pol_knob_winner knob;

    *access_out = mr->access;
    if (knob_out)
        *knob_out = POL_KNOB_UNSET;
    if (gate == POL_SKIP_POLICY || mode == POL_RO_OFF || !device_in_scope(cfg, mr->device) ||
        !object_in_scope(cfg, mr->object))
        return POL_SKIP_POLICY;
    /* Already asked for by the application: nothing to inject. */
    if (mr->access & POL_IBV_ACCESS_RELAXED_ORDERING)
        return POL_NOT_APPLICABLE;
    /* Atomics need strict ordering with the data they guard. */
    if (mr->access & POL_IBV_ACCESS_REMOTE_ATOMIC)
        return POL_NOT_APPLICABLE;
    if ((int64_t)mr->length < pol_int(cfg, POL_RDMA_RELAXED_ORDERING_MIN_BYTES))
        return POL_NOT_APPLICABLE;
    if (mr->dev_ro_failed)
        return POL_NOT_APPLICABLE;
    if (mode == POL_RO_AUTO && !(mr->dev_ro_capable && mr->iova2_available))
        return POL_NOT_APPLICABLE;
    gate = knob_rule(cfg, POL_KNOB_RELAXED_ORDERING, gate, &knob);
    if (knob_out)
        *knob_out = knob;
    if (gate == POL_INJECT)
        *access_out = mr->access | POL_IBV_ACCESS_RELAXED_ORDERING;
    return gate;
}

void pol_rdma_qp_attrs(const struct pol_config *cfg, const struct pol_rdma_qp *qp,
                       struct pol_rdma_qp_dec *out)
{
    enum pol_verdict gate = pol_gate_verdict(cfg);
    bool scoped = device_in_scope(cfg, qp->device) && object_in_scope(cfg, qp->object);
    bool av = (qp->attr_mask & POL_IBV_QP_AV) != 0;

    out->traffic_class = qp->traffic_class;
    out->service_level = qp->sl;
    out->tc_knob = POL_KNOB_UNSET;
    out->sl_knob = POL_KNOB_UNSET;

    if (gate == POL_SKIP_POLICY || !scoped || !pol_is_set(cfg, POL_RDMA_TRAFFIC_CLASS))
        out->tc = POL_SKIP_POLICY;
    else if (!av || !qp->is_global)
        out->tc = POL_NOT_APPLICABLE; /* traffic class lives in the GRH only */
    else {
        out->tc = knob_rule(cfg, POL_KNOB_TRAFFIC_CLASS, gate, &out->tc_knob);
        if (out->tc == POL_INJECT)
            out->traffic_class = (uint8_t)pol_int(cfg, POL_RDMA_TRAFFIC_CLASS);
    }

    if (gate == POL_SKIP_POLICY || !scoped || !pol_is_set(cfg, POL_RDMA_SERVICE_LEVEL))
        out->sl = POL_SKIP_POLICY;
    else if (!av)
        out->sl = POL_NOT_APPLICABLE;
    else {
        out->sl = knob_rule(cfg, POL_KNOB_SERVICE_LEVEL, gate, &out->sl_knob);
        if (out->sl == POL_INJECT)
            out->service_level = (uint8_t)pol_int(cfg, POL_RDMA_SERVICE_LEVEL);
    }
}
