/* Decisions for the RDMA hooks, on plain structs. */
#include "pol.h"

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

enum pol_verdict pol_rdma_mr_access(const struct pol_config *cfg, const struct pol_rdma_mr *mr,
                                    int *access_out)
{
    int64_t mode = pol_int(cfg, POL_RDMA_RELAXED_ORDERING);
    enum pol_verdict gate = pol_gate_verdict(cfg);

    *access_out = mr->access;
    if (gate == POL_SKIP_POLICY || mode == POL_RO_OFF || !device_in_scope(cfg, mr->device))
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
    if (gate == POL_INJECT)
        *access_out = mr->access | POL_IBV_ACCESS_RELAXED_ORDERING;
    return gate;
}

void pol_rdma_qp_attrs(const struct pol_config *cfg, const struct pol_rdma_qp *qp,
                       struct pol_rdma_qp_dec *out)
{
    enum pol_verdict gate = pol_gate_verdict(cfg);
    bool scoped = device_in_scope(cfg, qp->device);
    bool av = (qp->attr_mask & POL_IBV_QP_AV) != 0;

    out->traffic_class = qp->traffic_class;
    out->service_level = qp->sl;

    if (gate == POL_SKIP_POLICY || !scoped || !pol_is_set(cfg, POL_RDMA_TRAFFIC_CLASS))
        out->tc = POL_SKIP_POLICY;
    else if (!av || !qp->is_global)
        out->tc = POL_NOT_APPLICABLE; /* traffic class lives in the GRH only */
    else {
        out->tc = gate;
        if (gate == POL_INJECT)
            out->traffic_class = (uint8_t)pol_int(cfg, POL_RDMA_TRAFFIC_CLASS);
    }

    if (gate == POL_SKIP_POLICY || !scoped || !pol_is_set(cfg, POL_RDMA_SERVICE_LEVEL))
        out->sl = POL_SKIP_POLICY;
    else if (!av)
        out->sl = POL_NOT_APPLICABLE;
    else {
        out->sl = gate;
        if (gate == POL_INJECT)
            out->service_level = (uint8_t)pol_int(cfg, POL_RDMA_SERVICE_LEVEL);
    }
}
