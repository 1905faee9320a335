/*
 * The rdma transport's data path: requests checked and cut into slices,
 * slices posted as RDMA WRITE/READ work requests within the bounds per
 * queue pair and per completion queue, and one completion thread that
 * polls the devices' completion queues, posts what waited for room,
 * watches the handshake connections (a peer that left) and fails work
 * older than engine.request_timeout_ms. Nothing waits for the caller.
 */
#include "eng_rdma_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

static atomic_bool *idle_flag(struct rdma_tp *rt)
{
    return &rt->idle;
}

static void kick(struct rdma_tp *rt)
{
    uint64_t one = 1;

    if (atomic_load(idle_flag(rt)) && write(rt->evfd, &one, sizeof(one)) < 0)
        eng_dbg(rt->base.eng, "rdma: waking the completion thread: %m");
}

static void fly_unlink(struct rdma_conn *c, struct rdma_wr *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        c->fly_head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        c->fly_tail = w->prev;
    w->next = w->prev = NULL;
}

/* The rkey of [addr, addr+len) on the peer's device rdev (rt->lk). */
static bool rkey_of(const struct rdma_conn *c, uint64_t addr, uint64_t len, int rdev,
                    uint32_t *rkey)
{
    for (uint32_t i = 0; i < c->nrkeys; i++) {
        const struct rdma_rkey *k = &c->rkeys[i];
        if (addr >= k->addr && addr - k->addr <= k->len && len <= k->len - (addr - k->addr)) {
            if (rkey)
                *rkey = k->rkey[rdev];
            return true;
        }
    }
    return false;
}

/* A queue pair of c with room, round-robin; NULL when all are full. */
static struct rdma_qp *qp_with_room(struct rdma_tp *rt, struct rdma_conn *c)
{
    for (int k = 0; k < c->nqps; k++) {
        struct rdma_qp *q = &c->qps[(c->rr + (unsigned)k) % (unsigned)c->nqps];
        if (q->out < rt->base.eng->p.rdma_max_wr &&
            rt->dev[q->dev].cq_out < rt->base.eng->p.rdma_cq_depth) {
            c->rr += (unsigned)k + 1;
            return q;
        }
    }
    return NULL;
}

/* Post w on q (rt->lk); 0 or -errno. */
static int post_one(struct rdma_tp *rt, struct rdma_wr *w, struct rdma_qp *q)
{
    struct eng_task *t = w->t;
    uint64_t laddr = (uint64_t)(uintptr_t)t->local + w->off;
    uint32_t lkey = rdma_lkey(rt, laddr, w->len, q->dev), rkey = 0;
    struct ibv_sge sge = {.addr = laddr, .length = (uint32_t)w->len};
    struct ibv_send_wr wr = {.wr_id = (uint64_t)(uintptr_t)w,
                             .sg_list = &sge,
                             .num_sge = 1,
                             .opcode =
                                 t->op == TESHIM_OP_READ ? IBV_WR_RDMA_READ : IBV_WR_RDMA_WRITE,
                             .send_flags = IBV_SEND_SIGNALED};
    struct ibv_send_wr *bad;

    if (!rkey_of(w->c, t->raddr + w->off, w->len, q->rdev, &rkey))
        return -EFAULT; /* the keys changed under the request */
    if (!lkey) {
        /* not registered here: through a chunk of the registered pool */
        if (!rt->nfree)
            return -EAGAIN;
        w->chunk = rt->free_chunks[--rt->nfree];
        sge.addr = (uint64_t)(uintptr_t)(rt->pool + (size_t)w->chunk * rt->base.eng->p.rdma_slice);
        lkey = rt->pool_mr[q->dev]->lkey;
        if (t->op == TESHIM_OP_WRITE)
            memcpy((void *)(uintptr_t)sge.addr, t->local + w->off, w->len);
        atomic_fetch_add(&rt->base.eng->rdma_staged, 1);
    }
    sge.lkey = lkey;
    wr.wr.rdma.remote_addr = t->raddr + w->off;
    wr.wr.rdma.rkey = rkey;
    int ret = q->qp->context->ops.post_send(q->qp, &wr, &bad);
    if (ret) {
        eng_err(rt->base.eng, "segment %s: posting a work request: %s", w->c->seg->name,
                strerror(ret));
        return -ret;
    }
    w->q = q;
    w->t_post = eng_now_ns();
    q->out++;
    rt->dev[q->dev].cq_out++;
    w->prev = w->c->fly_tail;
    w->next = NULL;
    if (w->c->fly_tail)
        w->c->fly_tail->next = w;
    else
        w->c->fly_head = w;
    w->c->fly_tail = w;
    return 0;
}

static void chunk_put(struct rdma_tp *rt, struct rdma_wr *w)
{
    if (w->chunk >= 0)
        rt->free_chunks[rt->nfree++] = w->chunk;
    w->chunk = -1;
}

/*
 * Post what waits, in order, where there is room (rt->lk). Work requests
 * of a broken connection, or that cannot be posted, move to *fail with
 * their error in t_post.
 */
static void pump(struct rdma_tp *rt, struct rdma_wr **fail)
{
    struct rdma_wr *w = rt->pend_head, *prev = NULL;

    while (w) {
        struct rdma_wr *next = w->next;
        struct rdma_qp *q = NULL;
        int ret = w->c->broken ? w->c->break_err : 0;

        if (!ret) {
            q = qp_with_room(rt, w->c);
            if (!q) {
                prev = w;
                w = next;
                continue;
            }
            ret = post_one(rt, w, q);
            if (ret == -EAGAIN) {
                prev = w; /* waits for a staging chunk */
                w = next;
                continue;
            }
        }
        /* out of the pending queue */
        if (prev)
            prev->next = next;
        else
            rt->pend_head = next;
        if (rt->pend_tail == w)
            rt->pend_tail = prev;
        if (ret) {
            chunk_put(rt, w);
            w->c->out--;
            w->t_post = (uint64_t)-ret;
            w->next = *fail;
            *fail = w;
        }
        w = next;
    }
}

/* Finish the work requests of list outside rt->lk: err in t_post. */
static void fail_list(struct rdma_wr *list)
{
    while (list) {
        struct rdma_wr *w = list;
        list = w->next;
        eng_task_slice_done(w->t, 0, -(int)w->t_post);
        free(w);
    }
}

static void task_fail(struct eng_task *t, int err)
{
    eng_task_set_slices(t, 1);
    eng_task_slice_done(t, 0, err);
}

bool rdma_remote_keyed(struct rdma_tp *rt, struct rdma_conn *c, uint64_t addr, uint64_t len)
{
    pthread_mutex_lock(&rt->lk);
    bool found = c && rkey_of(c, addr, len, 0, NULL);
    pthread_mutex_unlock(&rt->lk);
    return found;
}

/* Connected, keys for the whole request, inside the peer's regions (host
 * memory, or device memory it registered directly: it has a key). */
static int start_check(struct rdma_tp *rt, struct rdma_conn *c, struct eng_task *t)
{
    struct eng_ctx *eng = rt->base.eng;
    int ret = 0;
    bool broken;

    if (atomic_load(&c->stale)) {
        eng_err(eng, "segment %s: the peer restarted; close and reopen the segment", t->seg->name);
        return -ESTALE;
    }
    pthread_mutex_lock(&rt->lk);
    broken = c->broken;
    if (broken && c->out) {
        pthread_mutex_unlock(&rt->lk);
        eng_err(eng, "segment %s: rdma connection lost, its work requests still flushing",
                t->seg->name);
        return -ECONNRESET;
    }
    pthread_mutex_unlock(&rt->lk);
    if (broken) {
        pthread_mutex_lock(&c->setup_lock);
        if (c->broken) /* still: reconnect (a restarted peer gets new keys) */
            ret = rdma_seg_connect(rt, t->seg, c);
        pthread_mutex_unlock(&c->setup_lock);
        if (ret) {
            eng_err(eng, "segment %s: reconnecting over rdma: %s", t->seg->name, strerror(-ret));
            return ret == -EOPNOTSUPP ? -ECONNRESET : ret;
        }
    }
    for (int pass = 0; pass < 2; pass++) {
        if (rdma_remote_keyed(rt, c, t->raddr, t->len) &&
            (!eng_seg_check(t->seg, t->raddr, t->len, 0) ||
             eng_seg_in_device(t->seg, t->raddr, t->len)))
            return 0;
        if (pass)
            break;
        /* registered after we fetched the keys? */
        pthread_mutex_lock(&c->setup_lock);
        ret = rdma_refresh(rt, c);
        pthread_mutex_unlock(&c->setup_lock);
        if (ret)
            return ret;
    }
    eng_err(eng, "segment %s: [0x%llx, +%llu) is outside the peer's rdma-accessible regions",
            t->seg->name, (unsigned long long)t->raddr, (unsigned long long)t->len);
    return -EFAULT;
}

void rdma_start(struct eng_transport *tp, struct eng_task *t)
{
    struct rdma_tp *rt = (struct rdma_tp *)tp;
    struct rdma_conn *c = t->seg->tp_priv;
    uint64_t slice = tp->eng->p.rdma_slice;
    struct rdma_wr *first = NULL, *last = NULL, *fail = NULL;
    int ret = start_check(rt, c, t);

    if (ret) {
        task_fail(t, ret);
        return;
    }
    unsigned n = (unsigned)((t->len + slice - 1) / slice), made = 0;
    eng_task_set_slices(t, n);
    for (; made < n; made++) {
        struct rdma_wr *w = calloc(1, sizeof(*w));
        if (!w)
            break;
        w->t = t;
        w->c = c;
        w->chunk = -1;
        w->off = (uint64_t)made * slice;
        w->len = t->len - w->off < slice ? t->len - w->off : slice;
        if (last)
            last->next = w;
        else
            first = w;
        last = w;
    }
    if (made < n)
        eng_err(tp->eng, "segment %s: no memory for %u of %u slices", t->seg->name, n - made, n);
    pthread_mutex_lock(&rt->lk);
    if (first) {
        c->out += (int)made;
        if (rt->pend_tail)
            rt->pend_tail->next = first;
        else
            rt->pend_head = first;
        rt->pend_tail = last;
        pump(rt, &fail);
    }
    pthread_mutex_unlock(&rt->lk);
    kick(rt);
    fail_list(fail);
    for (; made < n; made++)
        eng_task_slice_done(t, 0, -ENOMEM);
}

static int wc_errno(const struct ibv_wc *wc)
{
    switch (wc->status) {
    case IBV_WC_REM_ACCESS_ERR:
    case IBV_WC_LOC_PROT_ERR:
        return -EFAULT;
    case IBV_WC_RETRY_EXC_ERR:
    case IBV_WC_RNR_RETRY_EXC_ERR:
        return -EHOSTUNREACH;
    default:
        return -ECONNRESET;
    }
}

/* Poll every device; finish what completed. Returns how many. */
static int poll_all(struct rdma_tp *rt)
{
    struct ibv_wc wc[32];
    struct rdma_wr *done[32 * RDMA_MAX_DEVS];
    int err[32 * RDMA_MAX_DEVS], nd = 0;
    struct rdma_wr *fail = NULL;

    for (int d = 0; d < rt->ndev; d++) {
        struct ibv_cq *cq = rt->dev[d].cq;
        int n = cq->context->ops.poll_cq(cq, 32, wc);
        if (n <= 0)
            continue;
        pthread_mutex_lock(&rt->lk);
        for (int i = 0; i < n; i++) {
            struct rdma_wr *w = (struct rdma_wr *)(uintptr_t)wc[i].wr_id;
            w->q->out--;
            rt->dev[d].cq_out--;
            fly_unlink(w->c, w);
            err[nd] = 0;
            if (wc[i].status != IBV_WC_SUCCESS) {
                err[nd] = w->c->broken && wc[i].status == IBV_WC_WR_FLUSH_ERR ? w->c->break_err
                                                                              : wc_errno(&wc[i]);
                if (w->c->seg && !w->c->broken)
                    eng_err(rt->base.eng, "segment %s: rdma %s of %llu bytes failed: %s",
                            w->c->seg->name, w->t->op == TESHIM_OP_READ ? "read" : "write",
                            (unsigned long long)w->len,
                            wc[i].status == IBV_WC_REM_ACCESS_ERR ? "remote access error"
                                                                  : "transport error");
                rdma_conn_break(rt, w->c, err[nd], "a work request failed");
            }
            done[nd++] = w;
        }
        pthread_mutex_unlock(&rt->lk);
    }
    for (int i = 0; i < nd; i++) {
        struct rdma_wr *w = done[i];
        if (!err[i] && w->chunk >= 0 && w->t->op == TESHIM_OP_READ)
            memcpy(w->t->local + w->off, rt->pool + (size_t)w->chunk * rt->base.eng->p.rdma_slice,
                   w->len);
    }
    if (nd) {
        pthread_mutex_lock(&rt->lk);
        for (int i = 0; i < nd; i++) {
            chunk_put(rt, done[i]);
            done[i]->c->out--;
        }
        pump(rt, &fail);
        pthread_mutex_unlock(&rt->lk);
    }
    for (int i = 0; i < nd; i++) {
        eng_task_slice_done(done[i]->t, err[i] ? 0 : done[i]->len, err[i]);
        free(done[i]);
    }
    fail_list(fail);
    return nd;
}

/* Every tick: work requests in flight past the request timeout break
 * their connection (its queue pairs flush them, failing their tasks). */
static void tick(struct rdma_tp *rt, uint64_t now)
{
    uint64_t limit = (uint64_t)rt->base.eng->p.request_timeout_ms * 1000000ull;
    struct rdma_wr *fail = NULL;

    pthread_mutex_lock(&rt->lk);
    /* a request posted after now was read is younger than now: no
     * unsigned wrap into an instant timeout */
    for (struct rdma_conn *c = rt->conns; c; c = c->next)
        if (c->fly_head && now > c->fly_head->t_post && now - c->fly_head->t_post > limit)
            rdma_conn_break(rt, c, -ETIMEDOUT, "a work request timed out");
    pump(rt, &fail); /* fails what waits on a broken connection */
    pthread_mutex_unlock(&rt->lk);
    fail_list(fail);
    eng_limiter_expire(rt->base.eng, now);
}

/* A watched handshake connection is readable: the peer left (or wrote,
 * which it never does: drained). */
static void conn_event(struct rdma_tp *rt, uint64_t id)
{
    struct rdma_conn *c, **pp;
    char buf[64];

    pthread_mutex_lock(&rt->lk);
    for (pp = &rt->conns; (c = *pp) && c->id != id; pp = &c->next)
        ;
    if (!c || c->fd < 0) {
        pthread_mutex_unlock(&rt->lk);
        return;
    }
    ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR))) {
        pthread_mutex_unlock(&rt->lk);
        return;
    }
    epoll_ctl(rt->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    if (c->seg) {
        rdma_conn_break(rt, c, -ECONNRESET, "the peer closed its connection");
        pthread_mutex_unlock(&rt->lk);
        return;
    }
    /* target: the initiator is gone with its queue pairs */
    *pp = c->next;
    pthread_mutex_unlock(&rt->lk);
    rdma_conn_free(rt, c);
}

static bool busy(struct rdma_tp *rt)
{
    bool b = false;

    pthread_mutex_lock(&rt->lk);
    for (int d = 0; d < rt->ndev; d++)
        b = b || rt->dev[d].cq_out > 0;
    pthread_mutex_unlock(&rt->lk);
    return b;
}

static void *rdma_main(void *arg)
{
    struct rdma_tp *rt = arg;
    uint64_t last = eng_now_ns();
    struct epoll_event ev[16];

    for (;;) {
        int got = poll_all(rt), wait = 0;
        uint64_t now = eng_now_ns();

        if (now - last >= RDMA_TICK_NS) {
            tick(rt, now);
            last = now;
        }
        if (!got) {
            atomic_store(idle_flag(rt), true);
            wait = busy(rt) ? 0 : (int)(RDMA_TICK_NS / 1000000);
        }
        int n = epoll_wait(rt->epfd, ev, 16, wait);
        atomic_store(idle_flag(rt), false);
        for (int i = 0; i < n; i++) {
            if (ev[i].data.u64 == 0) {
                uint64_t v;
                if (read(rt->evfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
                    eng_dbg(rt->base.eng, "rdma: eventfd: %m");
                continue;
            }
            conn_event(rt, ev[i].data.u64);
        }
        pthread_mutex_lock(&rt->lk);
        bool stop = rt->stop;
        pthread_mutex_unlock(&rt->lk);
        if (stop)
            return NULL;
        if (!got && !n && !wait)
            usleep(10); /* work in flight: poll again soon, leave the CPU to the peer */
    }
}

int rdma_thread_start(struct rdma_tp *rt)
{
    struct epoll_event e = {.events = EPOLLIN, .data.u64 = 0};
    int ret;

    rt->epfd = epoll_create1(EPOLL_CLOEXEC);
    rt->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (rt->epfd < 0 || rt->evfd < 0 || epoll_ctl(rt->epfd, EPOLL_CTL_ADD, rt->evfd, &e)) {
        eng_err(rt->base.eng, "rdma: completion thread: %m");
        return -errno;
    }
    ret = pthread_create(&rt->th, NULL, rdma_main, rt);
    if (ret) {
        eng_err(rt->base.eng, "rdma: completion thread: %s", strerror(ret));
        return -ret;
    }
    rt->started = true;
    return 0;
}

/* Stop the thread, flush every queue pair and finish what was in flight
 * or waiting (their tasks fail). */
void rdma_thread_stop(struct rdma_tp *rt)
{
    struct rdma_wr *fail = NULL;

    if (rt->started) {
        uint64_t one = 1;
        pthread_mutex_lock(&rt->lk);
        rt->stop = true;
        pthread_mutex_unlock(&rt->lk);
        atomic_store(idle_flag(rt), true);
        if (write(rt->evfd, &one, sizeof(one)) < 0)
            eng_err(rt->base.eng, "rdma: eventfd: %m");
        pthread_join(rt->th, NULL);
        rt->started = false;
    }
    pthread_mutex_lock(&rt->lk);
    for (struct rdma_conn *c = rt->conns; c; c = c->next)
        rdma_conn_break(rt, c, -ECONNRESET, "the engine is destroyed");
    pump(rt, &fail);
    pthread_mutex_unlock(&rt->lk);
    fail_list(fail);
    /* flushed work completes at once; bounded in case a device does not */
    for (uint64_t t0 = eng_now_ns(); busy(rt) && eng_now_ns() - t0 < 2000000000ull;)
        if (!poll_all(rt))
            usleep(100);
    if (rt->evfd >= 0)
        close(rt->evfd);
    if (rt->epfd >= 0)
        close(rt->epfd);
    rt->evfd = rt->epfd = -1;
}
