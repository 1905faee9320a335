/* The rdma transport's devices: libibverbs at run time, registrations on
 * every device, the staging pool, GID choice and queue pair transitions. */
#include "eng_rdma_int.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

/* Look every function up; 0, or -ENOENT when the library or a required
 * symbol is absent (optional ones stay NULL). */
static int rdma_syms(struct rdma_fns *f)
{
    f->lib = dlopen("libibverbs.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!f->lib)
        return -ENOENT;
#define SYM(field, name, ver) *(void **)(&f->field) = dlvsym(f->lib, name, ver)
    SYM(get_device_list, "ibv_get_device_list", "IBVERBS_1.1");
    SYM(free_device_list, "ibv_free_device_list", "IBVERBS_1.1");
    SYM(get_device_name, "ibv_get_device_name", "IBVERBS_1.1");
    SYM(open_device, "ibv_open_device", "IBVERBS_1.1");
    SYM(close_device, "ibv_close_device", "IBVERBS_1.1");
    SYM(query_device, "ibv_query_device", "IBVERBS_1.1");
    SYM(query_port, "ibv_query_port", "IBVERBS_1.1");
    SYM(query_gid, "ibv_query_gid", "IBVERBS_1.1");
    SYM(query_gid_ex, "_ibv_query_gid_ex", "IBVERBS_1.11");
    SYM(alloc_pd, "ibv_alloc_pd", "IBVERBS_1.1");
    SYM(dealloc_pd, "ibv_dealloc_pd", "IBVERBS_1.1");
    SYM(reg_mr, "ibv_reg_mr", "IBVERBS_1.1");
    SYM(reg_mr_iova2, "ibv_reg_mr_iova2", "IBVERBS_1.8");
    SYM(dereg_mr, "ibv_dereg_mr", "IBVERBS_1.1");
    SYM(create_cq, "ibv_create_cq", "IBVERBS_1.1");
    SYM(destroy_cq, "ibv_destroy_cq", "IBVERBS_1.1");
    SYM(create_qp, "ibv_create_qp", "IBVERBS_1.1");
    SYM(destroy_qp, "ibv_destroy_qp", "IBVERBS_1.1");
    SYM(modify_qp, "ibv_modify_qp", "IBVERBS_1.1");
#undef SYM
    if (!f->get_device_list || !f->free_device_list || !f->get_device_name || !f->open_device ||
        !f->close_device || !f->query_device || !f->query_port || !f->query_gid || !f->alloc_pd ||
        !f->dealloc_pd || !f->reg_mr || !f->dereg_mr || !f->create_cq || !f->destroy_cq ||
        !f->create_qp || !f->destroy_qp || !f->modify_qp) {
        f->lib = NULL; /* an incomplete library: left loaded, as a complete one */
        return -ENOENT;
    }
    return 0;
}

/* Whether name is in the comma list (empty list: every device). */
static bool dev_wanted(const char *list, const char *name)
{
    size_t n = strlen(name);

    if (!*list)
        return true;
    for (const char *p = list; *p;) {
        size_t l = strcspn(p, ", ");
        if (l == n && !strncmp(p, name, n))
            return true;
        p += l;
        p += strspn(p, ", ");
    }
    return false;
}

static void dev_close(struct rdma_tp *rt, struct rdma_dev *d)
{
    if (d->cq)
        rt->f.destroy_cq(d->cq);
    if (d->pd)
        rt->f.dealloc_pd(d->pd);
    if (d->ctx)
        rt->f.close_device(d->ctx);
    memset(d, 0, sizeof(*d));
}

static int dev_open(struct rdma_tp *rt, struct ibv_device *ib, struct rdma_dev *d)
{
    struct eng_ctx *eng = rt->base.eng;
    struct ibv_device_attr da;

    snprintf(d->name, sizeof(d->name), "%s", rt->f.get_device_name(ib));
    d->ctx = rt->f.open_device(ib);
    if (!d->ctx)
        goto err;
    if (rt->f.query_port(d->ctx, 1, &d->port) || rt->f.query_device(d->ctx, &da))
        goto err;
    if (d->port.state != IBV_PORT_ACTIVE) {
        eng_info(eng, "rdma: %s port 1 is not active; not used", d->name);
        dev_close(rt, d);
        return -ENODEV;
    }
    d->roce = d->port.link_layer == IBV_LINK_LAYER_ETHERNET;
    d->max_rd_atom = da.max_qp_rd_atom < RDMA_RD_ATOM ? da.max_qp_rd_atom : RDMA_RD_ATOM;
    d->pd = rt->f.alloc_pd(d->ctx);
    if (!d->pd)
        goto err;
    d->cq = rt->f.create_cq(d->ctx, eng->p.rdma_cq_depth, NULL, NULL, 0);
    if (!d->cq)
        goto err;
    return 0;

err:
    eng_warn(eng, "rdma: opening %s: %m; not used", d->name);
    dev_close(rt, d);
    return -ENODEV;
}

int rdma_load(struct rdma_tp *rt)
{
    struct eng_ctx *eng = rt->base.eng;
    struct ibv_device **list;
    int n = 0;

    if (rdma_syms(&rt->f)) {
        eng_info(eng, "rdma: libibverbs.so.1 not loadable (%s); rdma transport absent",
                 dlerror() ? "missing or incomplete" : "missing");
        return -ENODEV;
    }
    list = rt->f.get_device_list(&n);
    for (int i = 0; list && i < n && rt->ndev < RDMA_MAX_DEVS; i++) {
        if (!dev_wanted(eng->p.rdma_devices, rt->f.get_device_name(list[i])))
            continue;
        if (!dev_open(rt, list[i], &rt->dev[rt->ndev]))
            rt->ndev++;
    }
    if (list)
        rt->f.free_device_list(list);
    if (!rt->ndev) {
        eng_info(eng, "rdma: no usable device%s%s; rdma transport absent",
                 *eng->p.rdma_devices ? " among " : "", eng->p.rdma_devices);
        rdma_unload(rt);
        return -ENODEV;
    }
    for (int i = 0; i < rt->ndev; i++)
        eng_dbg(eng, "rdma: device %s (%s, lid %u)", rt->dev[i].name,
                rt->dev[i].roce ? "RoCE" : "InfiniBand", rt->dev[i].port.lid);
    return 0;
}

void rdma_unload(struct rdma_tp *rt)
{
    for (int i = 0; i < rt->ndev; i++)
        dev_close(rt, &rt->dev[i]);
    rt->ndev = 0;
    /* never dlclose'd: a provider (or the emulation) may keep threads of
     * its own running in the library after the last device is closed */
    rt->f.lib = NULL;
}

/* Register [addr, addr+len) on device d, with relaxed ordering where the
 * policy says so (the flag needs ibv_reg_mr_iova2, as verbs.h's macro
 * does for flags it cannot see at compile time). quiet: a failure is the
 * caller's to report (errno kept). */
static struct ibv_mr *reg_one(struct rdma_tp *rt, int d, void *addr, uint64_t len, int access,
                              bool quiet)
{
    struct eng_ctx *eng = rt->base.eng;
    int acc =
        eng_params_rdma_access(&eng->p, rt->dev[d].name, len, access, rt->f.reg_mr_iova2 != NULL);
    struct ibv_mr *mr;

    if (acc != access && rt->f.reg_mr_iova2) {
        mr = rt->f.reg_mr_iova2(rt->dev[d].pd, addr, len, (uint64_t)(uintptr_t)addr, (unsigned)acc);
        if (mr)
            return mr;
        if (!quiet)
            eng_warn(eng, "rdma: %s: registration with relaxed ordering refused (%m); without",
                     rt->dev[d].name);
    }
    mr = rt->f.reg_mr(rt->dev[d].pd, addr, len, access);
    if (!mr && !quiet)
        eng_err(eng, "rdma: %s: registering [%p, +%llu): %m", rt->dev[d].name, addr,
                (unsigned long long)len);
    return mr;
}

/* Register r on every device; 0 or -errno (errno set too). */
static int mr_add(struct rdma_tp *rt, const struct eng_region *r, bool quiet)
{
    int access =
        IBV_ACCESS_LOCAL_WRITE | (r->remote ? IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE : 0);
    struct rdma_mr m = {.addr = r->addr, .len = r->len, .remote = r->remote};
    size_t i;

    for (int d = 0; d < rt->ndev; d++) {
        m.mr[d] = reg_one(rt, d, (void *)(uintptr_t)r->addr, r->len, access, quiet);
        if (!m.mr[d]) {
            int err = errno ? errno : EIO;
            while (d-- > 0)
                rt->f.dereg_mr(m.mr[d]);
            errno = err;
            return -err;
        }
    }
    pthread_rwlock_wrlock(&rt->mr_lock);
    if (rt->nmrs == rt->capmrs) {
        size_t cap = rt->capmrs ? rt->capmrs * 2 : 16;
        struct rdma_mr *n = realloc(rt->mrs, cap * sizeof(*n));
        if (!n) {
            pthread_rwlock_unlock(&rt->mr_lock);
            for (int d = 0; d < rt->ndev; d++)
                rt->f.dereg_mr(m.mr[d]);
            eng_err(rt->base.eng, "rdma: no memory for %zu registrations", cap);
            errno = ENOMEM;
            return -ENOMEM;
        }
        rt->mrs = n;
        rt->capmrs = cap;
    }
    for (i = 0; i < rt->nmrs && rt->mrs[i].addr < r->addr; i++)
        ;
    memmove(rt->mrs + i + 1, rt->mrs + i, (rt->nmrs - i) * sizeof(*rt->mrs));
    rt->mrs[i] = m;
    rt->nmrs++;
    pthread_rwlock_unlock(&rt->mr_lock);
    return 0;
}

int rdma_mr_add(struct rdma_tp *rt, const struct eng_region *r)
{
    return mr_add(rt, r, false);
}

/*
 * A cuda:N region: registered with the NIC itself where the driver allows
 * it (peer memory: nvidia-peermem, or the emulation's switch), so its
 * slices go zero-copy and peers reach it over rdma; else, under
 * engine.rdma.gpu_direct=auto, staged as before (counted, logged once),
 * and under =on the registration fails.
 */
int rdma_mr_add_device(struct rdma_tp *rt, const struct eng_region *r)
{
    struct eng_ctx *eng = rt->base.eng;
    int mode = eng->p.rdma_gpu_direct;

    if (mode == ENG_GPU_DIRECT_OFF)
        return 0;
    int ret = mr_add(rt, r, true);
    if (!ret) {
        eng_dbg(eng, "rdma: cuda:%d [0x%llx, +%llu) registered directly (peer memory)", r->cuda_dev,
                (unsigned long long)r->addr, (unsigned long long)r->len);
        return 0;
    }
    if (mode == ENG_GPU_DIRECT_ON) {
        eng_err(eng,
                "register cuda:%d [0x%llx, +%llu): engine.rdma.gpu_direct=on but the NIC cannot "
                "register device memory (no peer memory: ibv_reg_mr: %s)",
                r->cuda_dev, (unsigned long long)r->addr, (unsigned long long)r->len,
                strerror(-ret));
        return ret;
    }
    atomic_fetch_add(&eng->rdma_gpu_fallbacks, 1);
    if (!atomic_exchange(&rt->gpu_fallback_logged, true))
        eng_info(eng, "rdma: no peer memory for cuda:%d: ibv_reg_mr: %s; staging through the pool",
                 r->cuda_dev, strerror(-ret));
    return 0;
}

void rdma_mr_del(struct rdma_tp *rt, uint64_t addr)
{
    struct rdma_mr m = {0};

    pthread_rwlock_wrlock(&rt->mr_lock);
    for (size_t i = 0; i < rt->nmrs; i++)
        if (rt->mrs[i].addr == addr) {
            m = rt->mrs[i];
            memmove(rt->mrs + i, rt->mrs + i + 1, (rt->nmrs - i - 1) * sizeof(*rt->mrs));
            rt->nmrs--;
            break;
        }
    pthread_rwlock_unlock(&rt->mr_lock);
    for (int d = 0; d < rt->ndev; d++)
        if (m.mr[d])
            rt->f.dereg_mr(m.mr[d]);
}

void rdma_mr_free_all(struct rdma_tp *rt)
{
    while (rt->nmrs)
        rdma_mr_del(rt, rt->mrs[0].addr);
    free(rt->mrs);
    rt->mrs = NULL;
    rt->capmrs = 0;
}

uint32_t rdma_lkey(struct rdma_tp *rt, uint64_t addr, uint64_t len, int dev)
{
    uint32_t key = 0;

    pthread_rwlock_rdlock(&rt->mr_lock);
    for (size_t i = 0; i < rt->nmrs && rt->mrs[i].addr <= addr; i++)
        if (addr - rt->mrs[i].addr <= rt->mrs[i].len &&
            len <= rt->mrs[i].len - (addr - rt->mrs[i].addr)) {
            key = rt->mrs[i].mr[dev]->lkey;
            break;
        }
    pthread_rwlock_unlock(&rt->mr_lock);
    return key;
}

bool rdma_registered(struct rdma_tp *rt, uint64_t addr, uint64_t len)
{
    return rdma_lkey(rt, addr, len, 0) != 0;
}

int rdma_rkeys(struct rdma_tp *rt, struct rdma_rkey **out, uint32_t *n)
{
    uint32_t k = 0;

    pthread_rwlock_rdlock(&rt->mr_lock);
    struct rdma_rkey *v = calloc(rt->nmrs + 1, sizeof(*v));
    for (size_t i = 0; v && i < rt->nmrs; i++) {
        if (!rt->mrs[i].remote)
            continue;
        v[k].addr = rt->mrs[i].addr;
        v[k].len = rt->mrs[i].len;
        for (int d = 0; d < rt->ndev; d++)
            v[k].rkey[d] = rt->mrs[i].mr[d]->rkey;
        k++;
    }
    pthread_rwlock_unlock(&rt->mr_lock);
    if (!v)
        return -ENOMEM;
    *out = v;
    *n = k;
    return 0;
}

int rdma_pool_open(struct rdma_tp *rt)
{
    struct eng_ctx *eng = rt->base.eng;
    uint64_t chunk = eng->p.rdma_slice;
    uint64_t n = eng->p.rdma_stage_bytes / chunk;

    if (!eng->p.rdma_stage_bytes)
        return 0;
    if (n < 2)
        n = 2;
    rt->pool = aligned_alloc(4096, n * chunk);
    rt->free_chunks = calloc(n, sizeof(int));
    if (!rt->pool || !rt->free_chunks) {
        eng_err(eng, "rdma: no memory for a %llu-byte staging pool",
                (unsigned long long)(n * chunk));
        goto err;
    }
    for (int d = 0; d < rt->ndev; d++) {
        rt->pool_mr[d] = reg_one(rt, d, rt->pool, n * chunk, IBV_ACCESS_LOCAL_WRITE, false);
        if (!rt->pool_mr[d])
            goto err;
    }
    rt->nchunks = (int)n;
    for (int i = 0; i < rt->nchunks; i++)
        rt->free_chunks[i] = i;
    rt->nfree = rt->nchunks;
    return 0;

err:
    rdma_pool_close(rt);
    return -ENOMEM;
}

void rdma_pool_close(struct rdma_tp *rt)
{
    for (int d = 0; d < rt->ndev; d++)
        if (rt->pool_mr[d])
            rt->f.dereg_mr(rt->pool_mr[d]);
    memset(rt->pool_mr, 0, sizeof(rt->pool_mr));
    free(rt->pool);
    free(rt->free_chunks);
    rt->pool = NULL;
    rt->free_chunks = NULL;
    rt->nchunks = rt->nfree = 0;
}

/* An IPv4-mapped GID (::ffff:a.b.c.d): its address in *ip. */
static bool gid_v4(const union ibv_gid *g, uint32_t *ip)
{
    static const uint8_t pre[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

    if (memcmp(g->raw, pre, 12))
        return false;
    memcpy(ip, g->raw + 12, 4);
    return true;
}

/* The netmask of the interface holding ip (network order), 0 if none. */
static uint32_t netmask_of(uint32_t ip)
{
    struct ifaddrs *ifa, *i;
    uint32_t mask = 0;

    if (getifaddrs(&ifa))
        return 0;
    for (i = ifa; i; i = i->ifa_next)
        if (i->ifa_addr && i->ifa_netmask && i->ifa_addr->sa_family == AF_INET &&
            ((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr == ip) {
            mask = ((struct sockaddr_in *)i->ifa_netmask)->sin_addr.s_addr;
            break;
        }
    freeifaddrs(ifa);
    return mask;
}

/*
 * RoCE: engine.rdma.gid_index when set; else a RoCE v2 GID that is the
 * IPv4-mapped address of the same subnet as our end of the handshake
 * connection; else the first RoCE v2 IPv4-mapped GID; else index 0.
 * InfiniBand: index 0 (the port GID; the path is addressed by LID).
 */
int rdma_pick_gid(struct rdma_tp *rt, int dev, const struct sockaddr_storage *local)
{
    struct rdma_dev *d = &rt->dev[dev];
    uint32_t ip = 0, mask = 0;
    int any_v2 = -1;

    if (!d->roce)
        return 0;
    if (rt->base.eng->p.rdma_gid_index >= 0)
        return rt->base.eng->p.rdma_gid_index;
    if (local && local->ss_family == AF_INET) {
        ip = ((const struct sockaddr_in *)local)->sin_addr.s_addr;
        mask = netmask_of(ip);
    }
    for (int i = 0; i < d->port.gid_tbl_len; i++) {
        union ibv_gid g;
        uint32_t gip;
        bool v2 = true;

        if (rt->f.query_gid(d->ctx, 1, i, &g) || !gid_v4(&g, &gip))
            continue;
        if (rt->f.query_gid_ex) {
            struct ibv_gid_entry e;
            v2 = !rt->f.query_gid_ex(d->ctx, 1, (uint32_t)i, &e, 0, sizeof(e)) &&
                 e.gid_type == IBV_GID_TYPE_ROCE_V2;
        }
        if (!v2)
            continue;
        if (mask && (gip & mask) == (ip & mask))
            return i;
        if (any_v2 < 0)
            any_v2 = i;
    }
    return any_v2 >= 0 ? any_v2 : 0;
}

void rdma_dev_self(struct rdma_tp *rt, int dev, int gid_index, struct rdma_w_dev *w)
{
    struct rdma_dev *d = &rt->dev[dev];
    union ibv_gid g;

    memset(w, 0, sizeof(*w));
    snprintf(w->name, sizeof(w->name), "%s", d->name);
    if (!rt->f.query_gid(d->ctx, 1, gid_index, &g))
        memcpy(w->gid, g.raw, 16);
    w->lid = d->port.lid;
    w->roce = d->roce;
    w->mtu = (uint8_t)d->port.active_mtu;
}

int rdma_qp_create(struct rdma_tp *rt, int dev, struct rdma_qp *q)
{
    struct eng_ctx *eng = rt->base.eng;
    struct rdma_dev *d = &rt->dev[dev];
    struct ibv_qp_init_attr ia = {
        .send_cq = d->cq,
        .recv_cq = d->cq,
        .cap = {.max_send_wr = (uint32_t)eng->p.rdma_max_wr,
                .max_recv_wr = 1,
                .max_send_sge = 1,
                .max_recv_sge = 1},
        .qp_type = IBV_QPT_RC,
    };
    struct ibv_qp_attr a = {.qp_state = IBV_QPS_INIT,
                            .pkey_index = 0,
                            .port_num = 1,
                            .qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ |
                                               IBV_ACCESS_REMOTE_WRITE};

    memset(q, 0, sizeof(*q));
    q->dev = dev;
    q->qp = rt->f.create_qp(d->pd, &ia);
    if (!q->qp) {
        eng_err(eng, "rdma: %s: creating a queue pair: %m", d->name);
        return -errno ? -errno : -EIO;
    }
    int ret = rt->f.modify_qp(q->qp, &a,
                              IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
    if (ret) {
        eng_err(eng, "rdma: %s: queue pair to INIT: %s", d->name, strerror(ret));
        rt->f.destroy_qp(q->qp);
        q->qp = NULL;
        return -ret;
    }
    return 0;
}

int rdma_qp_connect(struct rdma_tp *rt, struct rdma_qp *q, int gid_index,
                    const struct rdma_w_dev *rd, uint32_t qpn)
{
    struct eng_ctx *eng = rt->base.eng;
    struct rdma_dev *d = &rt->dev[q->dev];
    int mtu = eng->p.rdma_mtu ? eng->p.rdma_mtu
                              : (int)(rd->mtu < d->port.active_mtu ? rd->mtu : d->port.active_mtu);
    struct ibv_qp_attr a = {
        .qp_state = IBV_QPS_RTR,
        .path_mtu = (enum ibv_mtu)(mtu ? mtu : IBV_MTU_1024),
        .dest_qp_num = qpn,
        .rq_psn = 0,
        .max_dest_rd_atomic = (uint8_t)d->max_rd_atom,
        .min_rnr_timer = 12,
        .ah_attr = {.port_num = 1, .dlid = rd->lid},
    };
    uint8_t tc = 0, sl = 0;
    int ret;

    if (d->roce || !rd->lid) {
        a.ah_attr.is_global = 1;
        memcpy(a.ah_attr.grh.dgid.raw, rd->gid, 16);
        a.ah_attr.grh.sgid_index = (uint8_t)gid_index;
        a.ah_attr.grh.hop_limit = 64;
    }
    /* traffic class and service level from the shim's policy table */
    eng_params_rdma_qp(&eng->p, d->name, a.ah_attr.is_global, &tc, &sl);
    a.ah_attr.grh.traffic_class = a.ah_attr.is_global ? tc : 0;
    a.ah_attr.sl = sl;
    ret = rt->f.modify_qp(q->qp, &a,
                          IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                              IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
    if (ret) {
        eng_err(eng, "rdma: %s: queue pair to RTR (peer qp %u on %s): %s", d->name, qpn, rd->name,
                strerror(ret));
        return -ret;
    }
    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_RTS;
    a.timeout = (uint8_t)eng->p.rdma_timeout;
    a.retry_cnt = (uint8_t)eng->p.rdma_retry_cnt;
    a.rnr_retry = (uint8_t)eng->p.rdma_rnr_retry;
    a.sq_psn = 0;
    a.max_rd_atomic = (uint8_t)d->max_rd_atom;
    ret = rt->f.modify_qp(q->qp, &a,
                          IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                              IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
    if (ret) {
        eng_err(eng, "rdma: %s: queue pair to RTS: %s", d->name, strerror(ret));
        return -ret;
    }
    return 0;
}

void rdma_qp_error(struct rdma_tp *rt, struct rdma_qp *q)
{
    struct ibv_qp_attr a = {.qp_state = IBV_QPS_ERR};

    if (q->qp)
        rt->f.modify_qp(q->qp, &a, IBV_QP_STATE);
}

void rdma_conn_watch(struct rdma_tp *rt, struct rdma_conn *c)
{
    struct epoll_event e = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = c->id};

    if (c->fd >= 0 && epoll_ctl(rt->epfd, EPOLL_CTL_ADD, c->fd, &e))
        eng_warn(rt->base.eng, "rdma: watching a peer's connection: %m");
}

void rdma_conn_break(struct rdma_tp *rt, struct rdma_conn *c, int err, const char *why)
{
    if (c->broken)
        return;
    c->broken = true;
    c->break_err = err;
    if (c->seg) {
        eng_warn(rt->base.eng, "segment %s: rdma connection lost: %s", c->seg->name, why);
        atomic_fetch_add(&rt->base.eng->st.conn_broken, 1);
    }
    for (int i = 0; i < c->nqps; i++)
        rdma_qp_error(rt, &c->qps[i]);
}
