/* RC queue pairs: creation, the IB state machine with the required and
 * optional attributes of each transition, posting (ibv_post_send/recv and
 * the ibv_wr_* API of extended QPs), query and destroy. The requests run
 * in the per-process progress thread (emu_wire.c). */
#include "emu.h"
#include "emu_registry.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define EMU_SEND_OPS                                                                               \
    (IBV_QP_EX_WITH_RDMA_WRITE | IBV_QP_EX_WITH_RDMA_WRITE_WITH_IMM | IBV_QP_EX_WITH_SEND |        \
     IBV_QP_EX_WITH_SEND_WITH_IMM | IBV_QP_EX_WITH_RDMA_READ)

static void emu_wrx_start(struct ibv_qp_ex *qpx);
static int emu_wrx_complete(struct ibv_qp_ex *qpx);
static void emu_wrx_abort(struct ibv_qp_ex *qpx);
static void emu_wrx_send(struct ibv_qp_ex *qpx);
static void emu_wrx_send_imm(struct ibv_qp_ex *qpx, __be32 imm);
static void emu_wrx_write(struct ibv_qp_ex *qpx, uint32_t rkey, uint64_t raddr);
static void emu_wrx_write_imm(struct ibv_qp_ex *qpx, uint32_t rkey, uint64_t raddr, __be32 imm);
static void emu_wrx_read(struct ibv_qp_ex *qpx, uint32_t rkey, uint64_t raddr);
static void emu_wrx_set_sge(struct ibv_qp_ex *qpx, uint32_t lkey, uint64_t addr, uint32_t len);
static void emu_wrx_set_sge_list(struct ibv_qp_ex *qpx, size_t n, const struct ibv_sge *sge);
static void emu_wrx_set_inline(struct ibv_qp_ex *qpx, void *addr, size_t len);
static void emu_wrx_set_inline_list(struct ibv_qp_ex *qpx, size_t n, const struct ibv_data_buf *b);

static void emu_rec_cap(struct emu_rec *r, const struct ibv_qp_cap *cap)
{
    emu_rec_u64(r, "cap.max_send_wr", cap->max_send_wr);
    emu_rec_u64(r, "cap.max_recv_wr", cap->max_recv_wr);
    emu_rec_u64(r, "cap.max_send_sge", cap->max_send_sge);
    emu_rec_u64(r, "cap.max_recv_sge", cap->max_recv_sge);
    emu_rec_u64(r, "cap.max_inline_data", cap->max_inline_data);
}

static struct ibv_qp *emu_qp_create(const char *entry, struct ibv_context *ctx,
                                    struct ibv_qp_init_attr_ex *ia)
{
    struct emu_qp *q = NULL;
    struct ibv_pd *pd = ia->pd;
    struct emu_rec r;
    uint32_t qpn = 0;
    int rc = 0;

    if (ia->qp_type != IBV_QPT_RC || ia->srq != NULL)
        rc = EOPNOTSUPP;
    else if ((ia->comp_mask & ~(uint32_t)(IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_SEND_OPS_FLAGS)) !=
             0)
        rc = EOPNOTSUPP;
    else if ((ia->comp_mask & IBV_QP_INIT_ATTR_SEND_OPS_FLAGS) &&
             (ia->send_ops_flags & ~(uint64_t)EMU_SEND_OPS) != 0)
        rc = EOPNOTSUPP;
    else if (pd == NULL || ia->send_cq == NULL || ia->recv_cq == NULL)
        rc = EINVAL;
    else if (ia->cap.max_send_wr > EMU_MAX_QP_WR || ia->cap.max_recv_wr > EMU_MAX_QP_WR ||
             ia->cap.max_send_sge > EMU_MAX_SGE || ia->cap.max_recv_sge > EMU_MAX_SGE ||
             ia->cap.max_inline_data > EMU_MAX_INLINE)
        rc = EINVAL;
    if (rc == 0 && emu_wire_start() != 0)
        rc = EAGAIN;
    if (rc == 0) {
        q = calloc(1, sizeof(*q));
        if (q != NULL) {
            q->sq = calloc(ia->cap.max_send_wr + 1, sizeof(*q->sq));
            q->rq = calloc(ia->cap.max_recv_wr + 1, sizeof(*q->rq));
            q->batch = calloc(ia->cap.max_send_wr + 1, sizeof(*q->batch));
        }
        if (q == NULL || q->sq == NULL || q->rq == NULL || q->batch == NULL)
            rc = ENOMEM;
    }
    if (rc == 0)
        rc = -emu_reg_qp_add(pd->handle, (uint32_t)emu_device_of(ctx)->index, &qpn);
    emu_rec_begin(&r, "create_qp");
    emu_rec_str(&r, "entry", entry);
    emu_rec_str(&r, "dev", ctx->device->name);
    emu_rec_u64(&r, "pd", pd != NULL ? pd->handle : 0);
    emu_rec_i64(&r, "qp_type", ia->qp_type);
    emu_rec_i64(&r, "sq_sig_all", ia->sq_sig_all);
    emu_rec_cap(&r, &ia->cap);
    emu_rec_u64(&r, "comp_mask", ia->comp_mask);
    emu_rec_u64(&r, "send_ops_flags", ia->send_ops_flags);
    emu_rec_i64(&r, "ret", rc);
    if (rc == 0)
        emu_rec_u64(&r, "qp_num", qpn);
    emu_rec_end(&r);
    if (rc != 0) {
        if (q != NULL) {
            free(q->sq);
            free(q->rq);
            free(q->batch);
            free(q);
        }
        errno = rc;
        return NULL;
    }
    q->ectx = (struct emu_context *)verbs_get_ctx(ctx);
    q->cap = ia->cap;
    q->sq_sig_all = ia->sq_sig_all;
    q->qpx.qp_base.context = ctx;
    q->qpx.qp_base.qp_context = ia->qp_context;
    q->qpx.qp_base.pd = pd;
    q->qpx.qp_base.send_cq = ia->send_cq;
    q->qpx.qp_base.recv_cq = ia->recv_cq;
    q->qpx.qp_base.handle = qpn;
    q->qpx.qp_base.qp_num = qpn;
    q->qpx.qp_base.state = IBV_QPS_RESET;
    q->qpx.qp_base.qp_type = IBV_QPT_RC;
    pthread_mutex_init(&q->qpx.qp_base.mutex, NULL);
    pthread_cond_init(&q->qpx.qp_base.cond, NULL);
    pthread_mutex_init(&q->lock, NULL);
    q->attr.qp_state = IBV_QPS_RESET;
    q->attr.cap = ia->cap;
    if (ia->comp_mask & IBV_QP_INIT_ATTR_SEND_OPS_FLAGS) {
        struct ibv_qp_ex *x = &q->qpx;

        q->is_ex = true;
        x->wr_start = emu_wrx_start;
        x->wr_complete = emu_wrx_complete;
        x->wr_abort = emu_wrx_abort;
        x->wr_send = emu_wrx_send;
        x->wr_send_imm = emu_wrx_send_imm;
        x->wr_rdma_write = emu_wrx_write;
        x->wr_rdma_write_imm = emu_wrx_write_imm;
        x->wr_rdma_read = emu_wrx_read;
        x->wr_set_sge = emu_wrx_set_sge;
        x->wr_set_sge_list = emu_wrx_set_sge_list;
        x->wr_set_inline_data = emu_wrx_set_inline;
        x->wr_set_inline_data_list = emu_wrx_set_inline_list;
    }
    emu_wire_add_qp(q);
    return &q->qpx.qp_base;
}

struct ibv_qp *ibv_create_qp(struct ibv_pd *pd, struct ibv_qp_init_attr *attr)
{
    struct ibv_qp_init_attr_ex ia;
    struct ibv_qp *qp;

    memset(&ia, 0, sizeof(ia));
    memcpy(&ia, attr, sizeof(*attr));
    ia.comp_mask = IBV_QP_INIT_ATTR_PD;
    ia.pd = pd;
    qp = emu_qp_create("ibv_create_qp", pd->context, &ia);
    if (qp != NULL)
        attr->cap = ia.cap;
    return qp;
}

struct ibv_qp *emu_create_qp_ex(struct ibv_context *ctx, struct ibv_qp_init_attr_ex *attr)
{
    return emu_qp_create("ibv_create_qp_ex", ctx, attr);
}

struct ibv_qp_ex *ibv_qp_to_qp_ex(struct ibv_qp *qp)
{
    struct emu_qp *q = (struct emu_qp *)qp;

    if (!q->is_ex) {
        errno = EOPNOTSUPP;
        return NULL;
    }
    return &q->qpx;
}

/* The RC rows of the IB specification's QP state transition table
 * (o10-2.2.x): attributes that must and that may accompany a transition. */
static const struct {
    enum ibv_qp_state cur, next;
    int req, opt;
} emu_rc_transitions[] = {
    {IBV_QPS_RESET, IBV_QPS_INIT,
     IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS, 0},
    {IBV_QPS_INIT, IBV_QPS_INIT, 0, IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS},
    {IBV_QPS_INIT, IBV_QPS_RTR,
     IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
         IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER,
     IBV_QP_ALT_PATH | IBV_QP_ACCESS_FLAGS | IBV_QP_PKEY_INDEX},
    {IBV_QPS_RTR, IBV_QPS_RTR, 0, IBV_QP_ALT_PATH | IBV_QP_ACCESS_FLAGS | IBV_QP_PKEY_INDEX},
    {IBV_QPS_RTR, IBV_QPS_RTS,
     IBV_QP_STATE | IBV_QP_SQ_PSN | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
         IBV_QP_MAX_QP_RD_ATOMIC,
     IBV_QP_CUR_STATE | IBV_QP_ALT_PATH | IBV_QP_ACCESS_FLAGS | IBV_QP_MIN_RNR_TIMER |
         IBV_QP_PATH_MIG_STATE},
    {IBV_QPS_RTS, IBV_QPS_RTS, 0,
     IBV_QP_CUR_STATE | IBV_QP_ACCESS_FLAGS | IBV_QP_ALT_PATH | IBV_QP_PATH_MIG_STATE |
         IBV_QP_MIN_RNR_TIMER},
    {IBV_QPS_ERR, IBV_QPS_ERR, 0, 0},
};

static int emu_check_transition(enum ibv_qp_state cur, enum ibv_qp_state next, int mask)
{
    int have = mask | ((mask & IBV_QP_STATE) ? 0 : IBV_QP_STATE);

    if (next == IBV_QPS_RESET || next == IBV_QPS_ERR) {
        if (cur == next && next == IBV_QPS_ERR)
            return (mask & ~(IBV_QP_STATE | IBV_QP_CUR_STATE)) ? EINVAL : 0;
        return (mask & ~(IBV_QP_STATE | IBV_QP_CUR_STATE)) ? EINVAL : 0;
    }
    for (size_t i = 0; i < sizeof(emu_rc_transitions) / sizeof(emu_rc_transitions[0]); i++) {
        int req, opt;

        if (emu_rc_transitions[i].cur != cur || emu_rc_transitions[i].next != next)
            continue;
        req = emu_rc_transitions[i].req;
        opt = emu_rc_transitions[i].opt;
        if ((have & req) != req)
            return EINVAL;
        if ((mask & ~(req | opt | IBV_QP_STATE)) != 0)
            return EINVAL;
        return 0;
    }
    return EINVAL;
}

static int emu_check_av(struct emu_device *d, const struct ibv_ah_attr *ah)
{
    if (ah->port_num != 1)
        return EINVAL;
    if (d->pers == EMU_PERS_ROCE && !ah->is_global)
        return EINVAL; /* RoCE carries a GRH on every packet */
    if (ah->is_global && ah->grh.sgid_index >= emu_gid_count(d))
        return EINVAL;
    if (d->pers == EMU_PERS_IB && !ah->is_global && ah->dlid == 0)
        return EINVAL;
    return 0;
}

static int emu_check_values(struct emu_qp *q, const struct ibv_qp_attr *a, int mask)
{
    struct emu_device *d = q->ectx->edev;

    if ((mask & IBV_QP_CUR_STATE) && a->cur_qp_state != q->attr.qp_state)
        return EINVAL;
    if ((mask & IBV_QP_PORT) && a->port_num != 1)
        return EINVAL;
    if ((mask & IBV_QP_PKEY_INDEX) && a->pkey_index != 0)
        return EINVAL;
    if ((mask & IBV_QP_PATH_MTU) && (a->path_mtu < IBV_MTU_256 || a->path_mtu > IBV_MTU_4096))
        return EINVAL;
    if ((mask & IBV_QP_AV) && emu_check_av(d, &a->ah_attr) != 0)
        return EINVAL;
    if ((mask & IBV_QP_MAX_DEST_RD_ATOMIC) && a->max_dest_rd_atomic > EMU_MAX_RD_ATOM)
        return EINVAL;
    if ((mask & IBV_QP_MAX_QP_RD_ATOMIC) && a->max_rd_atomic > EMU_MAX_RD_ATOM)
        return EINVAL;
    if ((mask & IBV_QP_RETRY_CNT) && a->retry_cnt > 7)
        return EINVAL;
    if ((mask & IBV_QP_RNR_RETRY) && a->rnr_retry > 7)
        return EINVAL;
    if ((mask & IBV_QP_MIN_RNR_TIMER) && a->min_rnr_timer > 31)
        return EINVAL;
    if ((mask & IBV_QP_TIMEOUT) && a->timeout > 31)
        return EINVAL;
    if ((mask & IBV_QP_DEST_QPN) && a->dest_qp_num > 0xffffff)
        return EINVAL;
    return 0;
}

static void emu_rec_qp_attr(struct emu_rec *r, const struct ibv_qp_attr *a, int mask)
{
    if (mask & IBV_QP_STATE)
        emu_rec_i64(r, "qp_state", a->qp_state);
    if (mask & IBV_QP_CUR_STATE)
        emu_rec_i64(r, "cur_qp_state", a->cur_qp_state);
    if (mask & IBV_QP_ACCESS_FLAGS)
        emu_rec_u64(r, "qp_access_flags", a->qp_access_flags);
    if (mask & IBV_QP_PKEY_INDEX)
        emu_rec_u64(r, "pkey_index", a->pkey_index);
    if (mask & IBV_QP_PORT)
        emu_rec_u64(r, "port_num", a->port_num);
    if (mask & IBV_QP_PATH_MTU)
        emu_rec_i64(r, "path_mtu", a->path_mtu);
    if (mask & IBV_QP_DEST_QPN)
        emu_rec_u64(r, "dest_qp_num", a->dest_qp_num);
    if (mask & IBV_QP_RQ_PSN)
        emu_rec_u64(r, "rq_psn", a->rq_psn);
    if (mask & IBV_QP_SQ_PSN)
        emu_rec_u64(r, "sq_psn", a->sq_psn);
    if (mask & IBV_QP_MAX_DEST_RD_ATOMIC)
        emu_rec_u64(r, "max_dest_rd_atomic", a->max_dest_rd_atomic);
    if (mask & IBV_QP_MAX_QP_RD_ATOMIC)
        emu_rec_u64(r, "max_rd_atomic", a->max_rd_atomic);
    if (mask & IBV_QP_MIN_RNR_TIMER)
        emu_rec_u64(r, "min_rnr_timer", a->min_rnr_timer);
    if (mask & IBV_QP_TIMEOUT)
        emu_rec_u64(r, "timeout", a->timeout);
    if (mask & IBV_QP_RETRY_CNT)
        emu_rec_u64(r, "retry_cnt", a->retry_cnt);
    if (mask & IBV_QP_RNR_RETRY)
        emu_rec_u64(r, "rnr_retry", a->rnr_retry);
    if (mask & IBV_QP_AV) {
        const struct ibv_ah_attr *ah = &a->ah_attr;

        emu_rec_u64(r, "ah_attr.dlid", ah->dlid);
        emu_rec_u64(r, "ah_attr.sl", ah->sl);
        emu_rec_u64(r, "ah_attr.src_path_bits", ah->src_path_bits);
        emu_rec_u64(r, "ah_attr.static_rate", ah->static_rate);
        emu_rec_u64(r, "ah_attr.port_num", ah->port_num);
        emu_rec_u64(r, "ah_attr.is_global", ah->is_global);
        if (ah->is_global) {
            emu_rec_hex(r, "ah_attr.grh.dgid", ah->grh.dgid.raw, 16);
            emu_rec_u64(r, "ah_attr.grh.flow_label", ah->grh.flow_label);
            emu_rec_u64(r, "ah_attr.grh.sgid_index", ah->grh.sgid_index);
            emu_rec_u64(r, "ah_attr.grh.hop_limit", ah->grh.hop_limit);
            emu_rec_u64(r, "ah_attr.grh.traffic_class", ah->grh.traffic_class);
        }
    }
}

int ibv_modify_qp(struct ibv_qp *qp, struct ibv_qp_attr *attr, int mask)
{
    struct emu_qp *q = (struct emu_qp *)qp;
    enum ibv_qp_state cur, next;
    struct emu_rec r;
    int rc;

    pthread_mutex_lock(&q->lock);
    cur = q->attr.qp_state;
    next = (mask & IBV_QP_STATE) ? attr->qp_state : cur;
    rc = emu_check_transition(cur, next, mask);
    if (rc == 0)
        rc = emu_check_values(q, attr, mask);
    if (rc == 0) {
        struct ibv_qp_attr *s = &q->attr;

        if (mask & IBV_QP_ACCESS_FLAGS)
            s->qp_access_flags = attr->qp_access_flags;
        if (mask & IBV_QP_PKEY_INDEX)
            s->pkey_index = attr->pkey_index;
        if (mask & IBV_QP_PORT)
            s->port_num = attr->port_num;
        if (mask & IBV_QP_AV)
            s->ah_attr = attr->ah_attr;
        if (mask & IBV_QP_PATH_MTU)
            s->path_mtu = attr->path_mtu;
        if (mask & IBV_QP_DEST_QPN) {
            struct emu_reg_qp rq;

            s->dest_qp_num = attr->dest_qp_num;
            q->remote_pid = emu_reg_qp_find(attr->dest_qp_num, &rq) == 0 ? rq.pid : 0;
        }
        if (mask & IBV_QP_RQ_PSN)
            s->rq_psn = attr->rq_psn;
        if (mask & IBV_QP_SQ_PSN)
            s->sq_psn = attr->sq_psn;
        if (mask & IBV_QP_MAX_DEST_RD_ATOMIC)
            s->max_dest_rd_atomic = attr->max_dest_rd_atomic;
        if (mask & IBV_QP_MAX_QP_RD_ATOMIC)
            s->max_rd_atomic = attr->max_rd_atomic;
        if (mask & IBV_QP_MIN_RNR_TIMER)
            s->min_rnr_timer = attr->min_rnr_timer;
        if (mask & IBV_QP_TIMEOUT)
            s->timeout = attr->timeout;
        if (mask & IBV_QP_RETRY_CNT)
            s->retry_cnt = attr->retry_cnt;
        if (mask & IBV_QP_RNR_RETRY)
            s->rnr_retry = attr->rnr_retry;
        s->qp_state = next;
        qp->state = next;
        if (next == IBV_QPS_RESET) {
            /* back to RESET: the queues are emptied without completions */
            q->sq_free = q->sq_exec = q->sq_post;
            q->rq_take = q->rq_post;
            memset(s, 0, sizeof(*s));
            s->qp_state = IBV_QPS_RESET;
            s->cap = q->cap;
        } else if (next == IBV_QPS_ERR && cur != IBV_QPS_ERR) {
            emu_qp_flush_locked(q);
        }
        emu_reg_qp_update(qp->qp_num, next, s->qp_access_flags);
    }
    pthread_mutex_unlock(&q->lock);
    emu_rec_begin(&r, "modify_qp");
    emu_rec_str(&r, "entry", "ibv_modify_qp");
    emu_rec_u64(&r, "qp_num", qp->qp_num);
    emu_rec_u64(&r, "attr_mask", (unsigned int)mask);
    emu_rec_qp_attr(&r, attr, mask);
    emu_rec_i64(&r, "ret", rc);
    emu_rec_end(&r);
    if (rc == 0)
        emu_wire_kick();
    return rc;
}

int ibv_query_qp(struct ibv_qp *qp, struct ibv_qp_attr *attr, int mask,
                 struct ibv_qp_init_attr *init)
{
    struct emu_qp *q = (struct emu_qp *)qp;

    pthread_mutex_lock(&q->lock);
    *attr = q->attr;
    attr->cap = q->cap;
    attr->cur_qp_state = q->attr.qp_state;
    pthread_mutex_unlock(&q->lock);
    memset(init, 0, sizeof(*init));
    init->qp_context = qp->qp_context;
    init->send_cq = qp->send_cq;
    init->recv_cq = qp->recv_cq;
    init->cap = q->cap;
    init->qp_type = qp->qp_type;
    init->sq_sig_all = q->sq_sig_all;
    return 0;
}

int ibv_destroy_qp(struct ibv_qp *qp)
{
    struct emu_qp *q = (struct emu_qp *)qp;
    struct emu_rec r;

    emu_wire_remove_qp(q);
    emu_reg_qp_del(qp->qp_num);
    emu_rec_begin(&r, "destroy_qp");
    emu_rec_u64(&r, "qp_num", qp->qp_num);
    emu_rec_end(&r);
    for (uint64_t i = q->sq_free; i < q->sq_post; i++)
        free(q->sq[i % (q->cap.max_send_wr + 1)].inl);
    pthread_mutex_destroy(&q->lock);
    free(q->sq);
    free(q->rq);
    free(q->batch);
    free(q);
    return 0;
}

/* --- posting -------------------------------------------------------- */

static int emu_swr_fill(struct emu_qp *q, struct emu_swr *s, const struct ibv_send_wr *wr)
{
    memset(s, 0, sizeof(*s));
    s->wr_id = wr->wr_id;
    s->opcode = wr->opcode;
    s->flags = wr->send_flags;
    s->imm = wr->imm_data;
    switch (wr->opcode) {
    case IBV_WR_RDMA_WRITE:
    case IBV_WR_RDMA_WRITE_WITH_IMM:
    case IBV_WR_RDMA_READ:
        s->rkey = wr->wr.rdma.rkey;
        s->raddr = wr->wr.rdma.remote_addr;
        break;
    case IBV_WR_SEND:
    case IBV_WR_SEND_WITH_IMM:
        break;
    default:
        return EINVAL;
    }
    if (wr->num_sge < 0 || (uint32_t)wr->num_sge > q->cap.max_send_sge)
        return EINVAL;
    if ((wr->send_flags & IBV_SEND_INLINE) && wr->opcode != IBV_WR_RDMA_READ) {
        size_t total = 0;

        for (int i = 0; i < wr->num_sge; i++)
            total += wr->sg_list[i].length;
        if (total > q->cap.max_inline_data)
            return EINVAL;
        s->inl = malloc(total + 1);
        if (s->inl == NULL)
            return ENOMEM;
        for (int i = 0; i < wr->num_sge; i++) {
            memcpy(s->inl + s->inl_len, (void *)(uintptr_t)wr->sg_list[i].addr,
                   wr->sg_list[i].length);
            s->inl_len += wr->sg_list[i].length;
        }
        return 0;
    }
    s->num_sge = wr->num_sge;
    memcpy(s->sge, wr->sg_list, sizeof(struct ibv_sge) * (size_t)wr->num_sge);
    return 0;
}

static bool emu_sq_postable(struct emu_qp *q)
{
    enum ibv_qp_state st = q->attr.qp_state;

    return st == IBV_QPS_RTS || st == IBV_QPS_ERR || st == IBV_QPS_SQD || st == IBV_QPS_SQE;
}

int emu_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr, struct ibv_send_wr **bad)
{
    struct emu_qp *q = (struct emu_qp *)qp;
    uint32_t slots = q->cap.max_send_wr + 1;
    int rc = 0;

    pthread_mutex_lock(&q->lock);
    for (; wr != NULL; wr = wr->next) {
        if (!emu_sq_postable(q)) {
            rc = EINVAL;
            break;
        }
        if (q->sq_post - q->sq_free >= q->cap.max_send_wr) {
            rc = ENOMEM;
            break;
        }
        rc = emu_swr_fill(q, &q->sq[q->sq_post % slots], wr);
        if (rc != 0)
            break;
        q->sq_post++;
    }
    if (q->attr.qp_state == IBV_QPS_ERR)
        emu_qp_flush_locked(q);
    pthread_mutex_unlock(&q->lock);
    if (rc != 0)
        *bad = wr;
    emu_wire_kick();
    return rc;
}

int emu_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad)
{
    struct emu_qp *q = (struct emu_qp *)qp;
    uint32_t slots = q->cap.max_recv_wr + 1;
    int rc = 0;

    pthread_mutex_lock(&q->lock);
    for (; wr != NULL; wr = wr->next) {
        struct emu_rwr *w;

        if (q->attr.qp_state == IBV_QPS_RESET) {
            rc = EINVAL;
            break;
        }
        if (wr->num_sge < 0 || (uint32_t)wr->num_sge > q->cap.max_recv_sge) {
            rc = EINVAL;
            break;
        }
        if (q->rq_post - q->rq_take >= q->cap.max_recv_wr) {
            rc = ENOMEM;
            break;
        }
        w = &q->rq[q->rq_post % slots];
        w->wr_id = wr->wr_id;
        w->num_sge = wr->num_sge;
        memcpy(w->sge, wr->sg_list, sizeof(struct ibv_sge) * (size_t)wr->num_sge);
        q->rq_post++;
    }
    if (q->attr.qp_state == IBV_QPS_ERR)
        emu_qp_flush_locked(q);
    pthread_mutex_unlock(&q->lock);
    if (rc != 0)
        *bad = wr;
    return rc;
}

/* --- ibv_wr_* (extended QP) ------------------------------------------ */

static struct emu_qp *emu_qp_of(struct ibv_qp_ex *qpx)
{
    return (struct emu_qp *)qpx;
}

static void emu_wrx_start(struct ibv_qp_ex *qpx)
{
    struct emu_qp *q = emu_qp_of(qpx);

    pthread_mutex_lock(&q->lock);
    q->batch_len = 0;
    q->batch_err = 0;
}

static struct emu_swr *emu_wrx_new(struct ibv_qp_ex *qpx, int opcode)
{
    struct emu_qp *q = emu_qp_of(qpx);
    struct emu_swr *s;

    if (q->batch_len >= q->cap.max_send_wr) {
        q->batch_err = ENOMEM;
        return NULL;
    }
    s = &q->batch[q->batch_len++];
    memset(s, 0, sizeof(*s));
    s->wr_id = qpx->wr_id;
    s->flags = qpx->wr_flags;
    s->opcode = opcode;
    return s;
}

static struct emu_swr *emu_wrx_cur(struct ibv_qp_ex *qpx)
{
    struct emu_qp *q = emu_qp_of(qpx);

    if (q->batch_len == 0) {
        q->batch_err = EINVAL;
        return NULL;
    }
    return &q->batch[q->batch_len - 1];
}

static void emu_wrx_send(struct ibv_qp_ex *qpx)
{
    emu_wrx_new(qpx, IBV_WR_SEND);
}

static void emu_wrx_send_imm(struct ibv_qp_ex *qpx, __be32 imm)
{
    struct emu_swr *s = emu_wrx_new(qpx, IBV_WR_SEND_WITH_IMM);

    if (s != NULL)
        s->imm = imm;
}

static void emu_wrx_rdma(struct ibv_qp_ex *qpx, int opcode, uint32_t rkey, uint64_t raddr,
                         __be32 imm)
{
    struct emu_swr *s = emu_wrx_new(qpx, opcode);

    if (s != NULL) {
        s->rkey = rkey;
        s->raddr = raddr;
        s->imm = imm;
    }
}

static void emu_wrx_write(struct ibv_qp_ex *qpx, uint32_t rkey, uint64_t raddr)
{
    emu_wrx_rdma(qpx, IBV_WR_RDMA_WRITE, rkey, raddr, 0);
}

static void emu_wrx_write_imm(struct ibv_qp_ex *qpx, uint32_t rkey, uint64_t raddr, __be32 imm)
{
    emu_wrx_rdma(qpx, IBV_WR_RDMA_WRITE_WITH_IMM, rkey, raddr, imm);
}

static void emu_wrx_read(struct ibv_qp_ex *qpx, uint32_t rkey, uint64_t raddr)
{
    emu_wrx_rdma(qpx, IBV_WR_RDMA_READ, rkey, raddr, 0);
}

static void emu_wrx_set_sge_list(struct ibv_qp_ex *qpx, size_t n, const struct ibv_sge *sge)
{
    struct emu_qp *q = emu_qp_of(qpx);
    struct emu_swr *s = emu_wrx_cur(qpx);

    if (s == NULL)
        return;
    if (n > q->cap.max_send_sge) {
        q->batch_err = EINVAL;
        return;
    }
    s->num_sge = (int)n;
    memcpy(s->sge, sge, n * sizeof(*sge));
}

static void emu_wrx_set_sge(struct ibv_qp_ex *qpx, uint32_t lkey, uint64_t addr, uint32_t len)
{
    struct ibv_sge sge = {.addr = addr, .length = len, .lkey = lkey};

    emu_wrx_set_sge_list(qpx, 1, &sge);
}

static void emu_wrx_set_inline_list(struct ibv_qp_ex *qpx, size_t n, const struct ibv_data_buf *b)
{
    struct emu_qp *q = emu_qp_of(qpx);
    struct emu_swr *s = emu_wrx_cur(qpx);
    size_t total = 0;

    if (s == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        total += b[i].length;
    if (total > q->cap.max_inline_data) {
        q->batch_err = EINVAL;
        return;
    }
    s->inl = malloc(total + 1);
    if (s->inl == NULL) {
        q->batch_err = ENOMEM;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        memcpy(s->inl + s->inl_len, b[i].addr, b[i].length);
        s->inl_len += b[i].length;
    }
    s->flags |= IBV_SEND_INLINE;
}

static void emu_wrx_set_inline(struct ibv_qp_ex *qpx, void *addr, size_t len)
{
    struct ibv_data_buf b = {.addr = addr, .length = len};

    emu_wrx_set_inline_list(qpx, 1, &b);
}

static void emu_wrx_drop(struct emu_qp *q)
{
    for (unsigned int i = 0; i < q->batch_len; i++)
        free(q->batch[i].inl);
    q->batch_len = 0;
}

static int emu_wrx_complete(struct ibv_qp_ex *qpx)
{
    struct emu_qp *q = emu_qp_of(qpx);
    uint32_t slots = q->cap.max_send_wr + 1;
    int rc = q->batch_err;

    if (rc == 0 && !emu_sq_postable(q))
        rc = EINVAL;
    if (rc == 0 && q->sq_post - q->sq_free + q->batch_len > q->cap.max_send_wr)
        rc = ENOMEM;
    if (rc == 0) {
        for (unsigned int i = 0; i < q->batch_len; i++)
            q->sq[(q->sq_post++) % slots] = q->batch[i];
        q->batch_len = 0;
        if (q->attr.qp_state == IBV_QPS_ERR)
            emu_qp_flush_locked(q);
    } else {
        emu_wrx_drop(q);
    }
    pthread_mutex_unlock(&q->lock);
    emu_wire_kick();
    return rc;
}

static void emu_wrx_abort(struct ibv_qp_ex *qpx)
{
    struct emu_qp *q = emu_qp_of(qpx);

    emu_wrx_drop(q);
    pthread_mutex_unlock(&q->lock);
}

/* ibv_modify_qp@IBVERBS_1.0 takes the pre-1.1 struct ibv_qp (the attribute
 * struct is unchanged): recorded with its attributes, then EOPNOTSUPP. */
int emu_compat_ibv_modify_qp_IBVERBS_1_0(void *qp, struct ibv_qp_attr *attr, int mask);
int emu_compat_ibv_modify_qp_IBVERBS_1_0(void *qp, struct ibv_qp_attr *attr, int mask)
{
    struct emu_rec r;

    emu_rec_begin(&r, "modify_qp");
    emu_rec_str(&r, "entry", "ibv_modify_qp@IBVERBS_1.0");
    emu_rec_u64(&r, "attr_mask", (unsigned int)mask);
    emu_rec_qp_attr(&r, attr, mask);
    emu_rec_i64(&r, "ret", EOPNOTSUPP);
    emu_rec_end(&r);
    return EOPNOTSUPP;
}
__asm__(".symver emu_compat_ibv_modify_qp_IBVERBS_1_0,ibv_modify_qp@IBVERBS_1.0");
