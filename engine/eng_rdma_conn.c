/*
 * The rdma transport's connection setup over the engine's handshake.
 *
 * Every HELLO_ACK of an engine with devices carries a DEVS record: its
 * devices (name, GID, LID, link layer, active MTU) and the rkeys of its
 * remote-accessible registrations on each of them. An initiator that
 * opens a segment over rdma sends a second HELLO whose trailer has its own
 * DEVS (no keys) and a QPS record: for each of its queue pairs (already
 * in INIT) its device, the peer's device it pairs with, and its number.
 * The target creates a queue pair for each, takes them to RTS and answers
 * their numbers in its QPS record; the initiator then takes its own to
 * RTS. The connection stays open (the target's ops.adopt takes it): its
 * end tells either side that the other left.
 *
 * Records (host order, little endian):
 *   DEVS  u32 ndev, u32 nkeys, ndev x struct rdma_w_dev,
 *         nkeys x (u64 addr, u64 len, ndev x u32 rkey)
 *   QPS   u32 n, n x (u32 sender's device, u32 receiver's device, u32 qpn)
 */
#include "eng_rdma_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct rdma_w_qp {
    uint32_t dev, rdev, qpn;
};

/* Append our DEVS record (keys: the remote-accessible registrations). */
static int put_devs(struct rdma_tp *rt, const int *gid_idx, bool keys, uint8_t *out, size_t max,
                    size_t *pos)
{
    struct rdma_rkey *rk = NULL;
    uint32_t nk = 0, nd = (uint32_t)rt->ndev;
    int ret = 0;

    if (keys && (ret = rdma_rkeys(rt, &rk, &nk)))
        return ret;
    size_t klen = 16 + 4 * (size_t)nd;
    size_t len = 8 + nd * sizeof(struct rdma_w_dev) + nk * klen;
    uint8_t *b = malloc(len);
    if (!b) {
        free(rk);
        return -ENOMEM;
    }
    memcpy(b, &nd, 4);
    memcpy(b + 4, &nk, 4);
    for (uint32_t d = 0; d < nd; d++)
        rdma_dev_self(rt, (int)d, gid_idx[d], (struct rdma_w_dev *)(void *)(b + 8) + d);
    uint8_t *k = b + 8 + nd * sizeof(struct rdma_w_dev);
    for (uint32_t i = 0; i < nk; i++, k += klen) {
        memcpy(k, &rk[i].addr, 8);
        memcpy(k + 8, &rk[i].len, 8);
        memcpy(k + 16, rk[i].rkey, 4 * nd);
    }
    ret = eng_tlv_put(out, max, pos, ENG_TLV_RDMA_DEVS, b, (uint32_t)len);
    if (ret)
        eng_err(rt->base.eng, "rdma: %u registrations do not fit in a handshake", nk);
    free(b);
    free(rk);
    return ret;
}

int rdma_parse_devs(const uint8_t *trailer, size_t len, struct rdma_conn *c, bool keys)
{
    const uint8_t *v;
    uint32_t vl, nd, nk;

    if (eng_tlv_find(trailer, len, ENG_TLV_RDMA_DEVS, &v, &vl))
        return -ENOENT;
    if (vl < 8)
        return -EBADMSG;
    memcpy(&nd, v, 4);
    memcpy(&nk, v + 4, 4);
    size_t klen = 16 + 4 * (size_t)nd;
    if (!nd || nd > RDMA_MAX_DEVS || (vl - 8 - nd * sizeof(struct rdma_w_dev)) / klen != nk ||
        vl != 8 + nd * sizeof(struct rdma_w_dev) + nk * klen)
        return -EBADMSG;
    struct rdma_w_dev devs[RDMA_MAX_DEVS];
    memcpy(devs, v + 8, nd * sizeof(*devs));
    for (uint32_t d = 0; d < nd; d++)
        if (!memchr(devs[d].name, '\0', sizeof(devs[d].name)) || devs[d].mtu > IBV_MTU_4096)
            return -EBADMSG;
    struct rdma_rkey *rk = NULL;
    if (keys) {
        rk = calloc(nk + 1, sizeof(*rk));
        if (!rk)
            return -ENOMEM;
        const uint8_t *k = v + 8 + nd * sizeof(struct rdma_w_dev);
        for (uint32_t i = 0; i < nk; i++, k += klen) {
            memcpy(&rk[i].addr, k, 8);
            memcpy(&rk[i].len, k + 8, 8);
            memcpy(rk[i].rkey, k + 16, 4 * nd);
            if (!rk[i].len || rk[i].addr + rk[i].len < rk[i].addr) {
                free(rk);
                return -EBADMSG;
            }
        }
        free(c->rkeys);
        c->rkeys = rk;
        c->nrkeys = nk;
    }
    c->rndev = (int)nd;
    memcpy(c->rdevs, devs, nd * sizeof(*devs));
    return 0;
}

/* Our end of fd's connection, or of a route to sa (UDP connect sends
 * nothing). */
static void local_addr(int fd, const struct sockaddr_storage *sa, socklen_t salen,
                       struct sockaddr_storage *out)
{
    socklen_t l = sizeof(*out);

    memset(out, 0, sizeof(*out));
    if (fd >= 0) {
        getsockname(fd, (struct sockaddr *)out, &l);
        return;
    }
    int u = socket(sa->ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (u < 0)
        return;
    if (!connect(u, (const struct sockaddr *)sa, salen))
        getsockname(u, (struct sockaddr *)out, &l);
    close(u);
}

static void pick_gids(struct rdma_tp *rt, const struct sockaddr_storage *local, int *gid_idx)
{
    for (int d = 0; d < rt->ndev; d++)
        gid_idx[d] = rdma_pick_gid(rt, d, local);
}

static void qps_destroy(struct rdma_tp *rt, struct rdma_qp *qps, int n)
{
    for (int i = 0; qps && i < n; i++)
        if (qps[i].qp)
            rt->f.destroy_qp(qps[i].qp);
    free(qps);
}

void rdma_conn_free(struct rdma_tp *rt, struct rdma_conn *c)
{
    qps_destroy(rt, c->qps, c->nqps);
    if (c->fd >= 0)
        close(c->fd);
    free(c->rkeys);
    pthread_mutex_destroy(&c->setup_lock);
    free(c);
}

/* The QPS record's entries; NULL when absent or malformed. */
static const struct rdma_w_qp *get_qps(const uint8_t *trailer, size_t len, uint32_t *n_p)
{
    const uint8_t *v;
    uint32_t vl, n;

    if (eng_tlv_find(trailer, len, ENG_TLV_RDMA_QPS, &v, &vl) || vl < 4)
        return NULL;
    memcpy(&n, v, 4);
    if (!n || n > RDMA_MAX_PATHS * 64 || vl != 4 + n * sizeof(struct rdma_w_qp))
        return NULL;
    *n_p = n;
    return (const struct rdma_w_qp *)(const void *)(v + 4);
}

static int put_qps(const struct rdma_qp *qps, int n, uint8_t *out, size_t max, size_t *pos)
{
    size_t len = 4 + (size_t)n * sizeof(struct rdma_w_qp);
    uint8_t *b = malloc(len);
    int ret;

    if (!b)
        return -ENOMEM;
    memcpy(b, &n, 4);
    for (int i = 0; i < n; i++) {
        struct rdma_w_qp w = {(uint32_t)qps[i].dev, (uint32_t)qps[i].rdev, qps[i].qp->qp_num};
        memcpy(b + 4 + i * sizeof(w), &w, sizeof(w));
    }
    ret = eng_tlv_put(out, max, pos, ENG_TLV_RDMA_QPS, b, (uint32_t)len);
    free(b);
    return ret;
}

/* Target: queue pairs for a peer's QPS record, taken to RTS. */
static int target_accept(struct rdma_tp *rt, int fd, const uint8_t *in, size_t in_len,
                         const int *gid_idx, uint8_t *out, size_t max, size_t *pos)
{
    struct eng_ctx *eng = rt->base.eng;
    struct rdma_conn *c = calloc(1, sizeof(*c));
    const struct rdma_w_qp *w;
    uint32_t n = 0;
    int ret;

    if (!c)
        return -ENOMEM;
    c->fd = -1;
    pthread_mutex_init(&c->setup_lock, NULL);
    w = get_qps(in, in_len, &n);
    ret = w ? rdma_parse_devs(in, in_len, c, false) : -EBADMSG;
    if (ret)
        goto err_free;
    c->qps = calloc(n, sizeof(*c->qps));
    if (!c->qps) {
        ret = -ENOMEM;
        goto err_free;
    }
    for (uint32_t i = 0; i < n; i++) {
        struct rdma_w_qp e;
        memcpy(&e, w + i, sizeof(e));
        if (e.rdev >= (uint32_t)rt->ndev || e.dev >= (uint32_t)c->rndev) {
            eng_warn(eng, "rdma: a peer asked for device %u of %d (its own %u of %d)", e.rdev,
                     rt->ndev, e.dev, c->rndev);
            ret = -EBADMSG;
            goto err_free;
        }
        ret = rdma_qp_create(rt, (int)e.rdev, &c->qps[i]);
        if (ret)
            goto err_free;
        c->nqps++;
        c->qps[i].rdev = (int)e.dev;
        ret = rdma_qp_connect(rt, &c->qps[i], gid_idx[e.rdev], &c->rdevs[e.dev], e.qpn);
        if (ret)
            goto err_free;
    }
    ret = put_qps(c->qps, c->nqps, out, max, pos);
    if (ret)
        goto err_free;
    c->fd = fd; /* not ours until adopted */
    pthread_mutex_lock(&rt->lk);
    /* a connection answered before but never handed over (the listener
     * closed it): its fd number is being reused */
    for (struct rdma_conn **pp = &rt->conns; *pp; pp = &(*pp)->next)
        if (!(*pp)->seg && !(*pp)->adopted && (*pp)->fd == fd) {
            struct rdma_conn *old = *pp;
            *pp = old->next;
            old->fd = -1;
            rdma_conn_free(rt, old);
            break;
        }
    c->id = ++rt->next_id;
    c->next = rt->conns;
    rt->conns = c;
    pthread_mutex_unlock(&rt->lk);
    eng_dbg(eng, "rdma: %d queue pairs for a peer, connected", c->nqps);
    return 0;

err_free:
    if (ret == -EBADMSG)
        atomic_fetch_add(&eng->st.peer_rejected, 1);
    c->fd = -1;
    rdma_conn_free(rt, c);
    return ret;
}

int rdma_hello(struct eng_transport *tp, int fd, const uint8_t *in, size_t in_len, uint8_t *out,
               size_t max, size_t *pos)
{
    struct rdma_tp *rt = (struct rdma_tp *)tp;
    struct sockaddr_storage local;
    int gid_idx[RDMA_MAX_DEVS];
    const uint8_t *v;
    uint32_t vl;
    int ret;

    if (!rt->ndev)
        return 0;
    local_addr(fd, NULL, 0, &local);
    pick_gids(rt, &local, gid_idx);
    if (!eng_tlv_find(in, in_len, ENG_TLV_RDMA_QPS, &v, &vl)) {
        ret = target_accept(rt, fd, in, in_len, gid_idx, out, max, pos);
        if (ret)
            return ret;
    }
    return put_devs(rt, gid_idx, true, out, max, pos);
}

/* A handshake's answer from another engine instance than the segment was
 * opened on makes the segment stale for good (as over tcp). */
static int rdma_same_instance(struct rdma_tp *rt, struct rdma_conn *c, const struct eng_hello *h)
{
    int ret = eng_seg_same_instance(rt->base.eng, c->seg->name, c->seg->hello.instance_id,
                                    c->seg->hello.pid, h);
    if (ret)
        atomic_store(&c->stale, true);
    return ret;
}

/* Initiator: replace our queue pairs (fresh ones in INIT) and the peer's
 * identity, keys and region list from a new handshake. */
int rdma_seg_connect(struct rdma_tp *rt, struct eng_segment *seg, struct rdma_conn *c)
{
    struct eng_ctx *eng = rt->base.eng;
    int qpp = eng->p.rdma_qps, gid_idx[RDMA_MAX_DEVS];
    struct sockaddr_storage local;
    struct eng_region_desc *regions = NULL;
    struct rdma_qp *qps = NULL;
    struct eng_hello h;
    uint8_t *out = NULL, *tr = NULL;
    uint32_t trlen = 0, n = 0;
    size_t pos = 0;
    int fd = -1, nq = 0, ret;

    pthread_mutex_lock(&rt->lk);
    ret = c->rndev ? 0 : rdma_parse_devs(seg->trailer, seg->trailer_len, c, true);
    pthread_mutex_unlock(&rt->lk);
    if (ret)
        return ret == -ENOENT ? -EOPNOTSUPP : ret;
    int npaths = rt->ndev > c->rndev ? rt->ndev : c->rndev;
    qps = calloc((size_t)(npaths * qpp), sizeof(*qps));
    out = malloc(ENG_TRAILER_MAX);
    if (!qps || !out) {
        ret = -ENOMEM;
        goto out_free;
    }
    for (int i = 0; i < npaths * qpp; i++, nq++) {
        ret = rdma_qp_create(rt, (i / qpp) % rt->ndev, &qps[i]);
        if (ret)
            goto out_free;
        qps[i].rdev = (i / qpp) % c->rndev;
    }
    local_addr(-1, &seg->sa, seg->salen, &local);
    pick_gids(rt, &local, gid_idx);
    ret = put_devs(rt, gid_idx, false, out, ENG_TRAILER_MAX, &pos);
    if (!ret)
        ret = put_qps(qps, nq, out, ENG_TRAILER_MAX, &pos);
    if (!ret)
        ret = eng_meta_fetch_ex(eng, seg, out, pos, &h, &regions, &tr, &trlen, &fd);
    if (!ret)
        ret = rdma_same_instance(rt, c, &h);
    if (ret)
        goto out_free;
    const struct rdma_w_qp *w = get_qps(tr, trlen, &n);
    pthread_mutex_lock(&rt->lk);
    if (w && n == (uint32_t)nq)
        ret = rdma_parse_devs(tr, trlen, c, true);
    pthread_mutex_unlock(&rt->lk);
    if (!w || n != (uint32_t)nq || ret) {
        eng_err(eng, "segment %s: the peer did not set up rdma queue pairs", seg->name);
        ret = -EPROTO;
        goto out_free;
    }
    for (int i = 0; i < nq && !ret; i++) {
        struct rdma_w_qp e;
        memcpy(&e, w + i, sizeof(e));
        if (e.dev != (uint32_t)qps[i].rdev || e.rdev != (uint32_t)qps[i].dev) {
            ret = -EPROTO;
            break;
        }
        ret = rdma_qp_connect(rt, &qps[i], gid_idx[qps[i].dev], &c->rdevs[e.dev], e.qpn);
    }
    if (ret)
        goto out_free;
    c->peer_pid = h.pid;
    eng_seg_set_regions(seg, regions, h.nregions, 0);
    regions = NULL;
    pthread_mutex_lock(&rt->lk);
    struct rdma_qp *old = c->qps;
    int nold = c->nqps, oldfd = c->fd;
    c->qps = qps;
    c->nqps = nq;
    c->fd = fd;
    c->broken = false;
    qps = NULL;
    fd = -1;
    pthread_mutex_unlock(&rt->lk);
    qps_destroy(rt, old, nold);
    if (oldfd >= 0)
        close(oldfd);
    rdma_conn_watch(rt, c);
    atomic_fetch_add(&eng->st.conn_new, 1);
    eng_dbg(eng, "segment %s: %d rdma queue pairs over %d device pairs", seg->name, nq, npaths);

out_free:
    if (fd >= 0)
        close(fd);
    qps_destroy(rt, qps, nq);
    free(regions);
    free(tr);
    free(out);
    return ret;
}

int rdma_refresh(struct rdma_tp *rt, struct rdma_conn *c)
{
    struct eng_ctx *eng = rt->base.eng;
    struct eng_segment *seg = c->seg;
    struct eng_region_desc *regions = NULL;
    struct eng_hello h;
    uint8_t *tr = NULL;
    uint32_t trlen = 0;
    int ret;

    ret = eng_meta_fetch_ex(eng, seg, NULL, 0, &h, &regions, &tr, &trlen, NULL);
    if (ret)
        return ret;
    ret = rdma_same_instance(rt, c, &h);
    if (ret) {
        /* its keys are not ours to use */
        pthread_mutex_lock(&rt->lk);
        rdma_conn_break(rt, c, -ESTALE, "the peer restarted");
        pthread_mutex_unlock(&rt->lk);
        goto out;
    }
    pthread_mutex_lock(&rt->lk);
    ret = rdma_parse_devs(tr, trlen, c, true);
    pthread_mutex_unlock(&rt->lk);
    if (!ret) {
        eng_seg_set_regions(seg, regions, h.nregions, 0);
        regions = NULL;
    }
out:
    free(regions);
    free(tr);
    return ret;
}
