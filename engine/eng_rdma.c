/*
 * The rdma transport's face: its ops table (see eng_rdma_int.h for the
 * design). Without libibverbs or a usable device the transport exists but
 * declines every segment (-EOPNOTSUPP), so the next one of the list
 * serves it.
 */
#include "eng_rdma_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

static int rdma_seg_open(struct eng_transport *tp, struct eng_segment *seg)
{
    struct rdma_tp *rt = (struct rdma_tp *)tp;
    struct rdma_conn *c;
    int ret;

    if (!rt->ndev)
        return -EOPNOTSUPP;
    c = calloc(1, sizeof(*c));
    if (!c) {
        eng_err(tp->eng, "segment %s: no memory for an rdma connection", seg->name);
        return -ENOMEM;
    }
    c->fd = -1;
    c->seg = seg;
    pthread_mutex_init(&c->setup_lock, NULL);
    pthread_mutex_lock(&rt->lk);
    c->id = ++rt->next_id;
    pthread_mutex_unlock(&rt->lk);
    ret = rdma_seg_connect(rt, seg, c);
    if (ret) {
        if (ret == -EOPNOTSUPP)
            eng_info(tp->eng, "segment %s: the peer has no rdma device", seg->name);
        rdma_conn_free(rt, c);
        return ret == -EOPNOTSUPP ? ret : -EOPNOTSUPP;
    }
    pthread_mutex_lock(&rt->lk);
    c->next = rt->conns;
    rt->conns = c;
    pthread_mutex_unlock(&rt->lk);
    seg->tp_priv = c;
    return 0;
}

static void rdma_seg_close(struct eng_transport *tp, struct eng_segment *seg)
{
    struct rdma_tp *rt = (struct rdma_tp *)tp;
    struct rdma_conn *c = seg->tp_priv;

    if (!c)
        return;
    pthread_mutex_lock(&rt->lk);
    for (struct rdma_conn **pp = &rt->conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    if (c->fd >= 0)
        epoll_ctl(rt->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    pthread_mutex_unlock(&rt->lk);
    rdma_conn_free(rt, c);
    seg->tp_priv = NULL;
}

static int rdma_adopt(struct eng_transport *tp, int fd, const char *pname)
{
    struct rdma_tp *rt = (struct rdma_tp *)tp;
    struct rdma_conn *c;

    pthread_mutex_lock(&rt->lk);
    for (c = rt->conns; c; c = c->next)
        if (!c->seg && !c->adopted && c->fd == fd)
            break;
    if (c)
        c->adopted = true;
    pthread_mutex_unlock(&rt->lk);
    if (!c)
        return -EOPNOTSUPP;
    eng_dbg(tp->eng, "rdma: peer %s connected its queue pairs", pname);
    rdma_conn_watch(rt, c);
    return 0;
}

/* Device memory is registered directly where the driver allows it (peer
 * memory); otherwise the staging wrapper moves it through host memory and
 * peers reach it over tcp. */
static int rdma_reg(struct eng_transport *tp, const struct eng_region *r)
{
    struct rdma_tp *rt = (struct rdma_tp *)tp;

    if (!rt->ndev)
        return 0;
    return r->cuda_dev >= 0 ? rdma_mr_add_device(rt, r) : rdma_mr_add(rt, r);
}

static void rdma_unreg(struct eng_transport *tp, const struct eng_region *r)
{
    struct rdma_tp *rt = (struct rdma_tp *)tp;

    if (rt->ndev)
        rdma_mr_del(rt, r->addr);
}

/* A peer's device memory only where it announced a key for it. */
static bool rdma_reaches(struct eng_transport *tp, struct eng_segment *seg, uint64_t addr,
                         uint64_t len)
{
    return !eng_seg_in_device(seg, addr, len) ||
           rdma_remote_keyed((struct rdma_tp *)tp, seg->tp_priv, addr, len);
}

/* Local device memory registered with the NIC goes unstaged. */
static bool rdma_direct(struct eng_transport *tp, const void *local, uint64_t len)
{
    struct rdma_tp *rt = (struct rdma_tp *)tp;

    return rt->ndev && rdma_registered(rt, (uint64_t)(uintptr_t)local, len);
}

static void rdma_destroy(struct eng_transport *tp)
{
    struct rdma_tp *rt = (struct rdma_tp *)tp;

    if (rt->ndev) {
        rdma_thread_stop(rt);
        while (rt->conns) {
            struct rdma_conn *c = rt->conns;
            rt->conns = c->next;
            rdma_conn_free(rt, c);
        }
        rdma_pool_close(rt);
        rdma_mr_free_all(rt);
        rdma_unload(rt);
    }
    pthread_mutex_destroy(&rt->lk);
    pthread_rwlock_destroy(&rt->mr_lock);
    free(rt);
}

static const struct eng_transport_ops rdma_ops = {
    .size = sizeof(struct eng_transport_ops),
    .name = "rdma",
    .seg_open = rdma_seg_open,
    .seg_close = rdma_seg_close,
    .start = rdma_start,
    .destroy = rdma_destroy,
    .reaches = rdma_reaches,
    .adopt = rdma_adopt,
    .hello = rdma_hello,
    .reg = rdma_reg,
    .unreg = rdma_unreg,
    .direct = rdma_direct,
};

int eng_rdma_create(struct eng_ctx *eng, struct eng_transport **tp_p)
{
    struct rdma_tp *rt = calloc(1, sizeof(*rt));

    if (!rt) {
        eng_err(eng, "engine_create: no memory for the rdma transport");
        return -ENOMEM;
    }
    eng_transport_init(&rt->base, eng, &rdma_ops);
    pthread_mutex_init(&rt->lk, NULL);
    pthread_rwlock_init(&rt->mr_lock, NULL);
    rt->epfd = rt->evfd = -1;
    /* no device: the transport stays, declining every segment */
    if (!rdma_load(rt) && (rdma_pool_open(rt) || rdma_thread_start(rt))) {
        eng_warn(eng, "rdma: transport disabled");
        rdma_thread_stop(rt);
        rdma_pool_close(rt);
        rdma_unload(rt);
    }
    *tp_p = &rt->base;
    return 0;
}
