/*
 * A minimal stand-in for libibverbs.so.1, for the cli tests only: it exports
 * ibv_modify_qp@IBVERBS_1.1 so a host program can make a hooked call without
 * a device. The shim forwards to it with dlvsym, exactly as to the real one.
 */
#include <infiniband/verbs.h>

int cli_ibv_modify_qp(struct ibv_qp *qp, struct ibv_qp_attr *attr, int attr_mask);

__asm__(".symver cli_ibv_modify_qp, ibv_modify_qp@@IBVERBS_1.1");

__attribute__((visibility("default"))) int
cli_ibv_modify_qp(struct ibv_qp *qp, struct ibv_qp_attr *attr, int attr_mask)
{
    if (attr_mask & IBV_QP_STATE)
        qp->state = attr->qp_state;
    return 0;
}
