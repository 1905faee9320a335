/* The per-process progress threads that carry RC traffic.
 *
 * Each process that creates a QP listens on an abstract unix socket named
 * after its pid. Two threads run:
 *  - the executor takes send work requests in order, one QP at a time.
 *    RDMA WRITE and READ are one-sided: after checking the rkey in the
 *    shared registry (owner = the peer QP's process, same PD, bounds, MR
 *    and QP access flags) the data moves with process_vm_writev/readv.
 *    SEND, SEND_WITH_IMM and the immediate of WRITE_WITH_IMM are messages
 *    to the peer's responder, which answers OK, RNR (no receive posted:
 *    the executor waits min_rnr_timer and retries up to rnr_retry times,
 *    7 = forever) or an error;
 *  - the responder accepts those messages, consumes receive requests and
 *    watches the peers: when the process owning a connected QP's peer is
 *    gone, the QP moves to the error state and its requests are flushed.
 * The responder never waits for another process, so two processes sending
 * to each other cannot deadlock. */
#include "emu.h"
#include "emu_registry.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define EMU_MAX_CONNS 64
#define EMU_WATCH_MS 100

enum emu_msg_op {
    EMU_MSG_SEND = 1,
    EMU_MSG_WRITE_IMM = 2,
};

enum emu_reply_status {
    EMU_R_OK = 0,
    EMU_R_RNR = 1,
    EMU_R_NOT_READY = 2, /* no such QP or not in RTR/RTS: no ACK at all */
    EMU_R_ERROR = 3,     /* a NAK: wc_status says which */
};

struct emu_msg {
    uint32_t op;
    uint32_t dst_qpn;
    uint32_t src_qpn;
    uint32_t imm;
    uint32_t has_imm;
    uint32_t len;
};

struct emu_reply {
    uint32_t status;
    uint32_t rnr_timer;
    uint32_t wc_status;
};

static pthread_mutex_t emu_w_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t emu_w_cond = PTHREAD_COND_INITIALIZER;
static pthread_cond_t emu_w_idle = PTHREAD_COND_INITIALIZER;
static struct emu_qp *emu_w_qps;
static struct emu_qp *emu_w_cursor; /* the executor's round-robin position */
static uint64_t emu_w_kicks;
static pid_t emu_w_pid;
static int emu_w_listen = -1;

static struct {
    pid_t pid;
    int fd;
} emu_w_peers[EMU_MAX_CONNS];

static void emu_sock_name(pid_t pid, struct sockaddr_un *sa, socklen_t *len)
{
    int n;

    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    n = snprintf(sa->sun_path + 1, sizeof(sa->sun_path) - 1, "teshim-verbs-emu.%d", (int)pid);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

static int emu_full_io(int fd, void *buf, size_t len, bool out)
{
    char *p = buf;

    while (len > 0) {
        ssize_t n = out ? send(fd, p, len, MSG_NOSIGNAL) : recv(fd, p, len, 0);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int emu_wc_opcode(int wr_opcode)
{
    switch (wr_opcode) {
    case IBV_WR_RDMA_WRITE:
    case IBV_WR_RDMA_WRITE_WITH_IMM:
        return IBV_WC_RDMA_WRITE;
    case IBV_WR_RDMA_READ:
        return IBV_WC_RDMA_READ;
    default:
        return IBV_WC_SEND;
    }
}

static void emu_complete(struct emu_qp *q, struct ibv_cq *cq, uint64_t wr_id, int opcode,
                         int status, uint32_t byte_len)
{
    struct ibv_wc wc;

    memset(&wc, 0, sizeof(wc));
    wc.wr_id = wr_id;
    wc.status = (enum ibv_wc_status)status;
    wc.opcode = (enum ibv_wc_opcode)opcode;
    wc.byte_len = byte_len;
    wc.qp_num = q->qpx.qp_base.qp_num;
    wc.src_qp = q->attr.dest_qp_num;
    wc.vendor_err = status == IBV_WC_SUCCESS ? 0 : 0x100 + (uint32_t)status;
    emu_cq_push((struct emu_cq *)cq, &wc);
}

/* Moves the QP to the error state and completes everything outstanding
 * with IBV_WC_WR_FLUSH_ERR. Called with q->lock held. */
void emu_qp_flush_locked(struct emu_qp *q)
{
    uint32_t sslots = q->cap.max_send_wr + 1;
    uint32_t rslots = q->cap.max_recv_wr + 1;

    q->attr.qp_state = IBV_QPS_ERR;
    q->qpx.qp_base.state = IBV_QPS_ERR;
    for (; q->sq_exec < q->sq_post; q->sq_exec++) {
        struct emu_swr *s = &q->sq[q->sq_exec % sslots];

        emu_complete(q, q->qpx.qp_base.send_cq, s->wr_id, emu_wc_opcode(s->opcode),
                     IBV_WC_WR_FLUSH_ERR, 0);
        free(s->inl);
        s->inl = NULL;
    }
    q->sq_free = q->sq_exec;
    for (; q->rq_take < q->rq_post; q->rq_take++)
        emu_complete(q, q->qpx.qp_base.recv_cq, q->rq[q->rq_take % rslots].wr_id, IBV_WC_RECV,
                     IBV_WC_WR_FLUSH_ERR, 0);
}

/* --- local memory checks -------------------------------------------- */

/* The sge's lkey is ours, in pd, covers it and allows need; *view (when
 * not NULL) is where this process reaches its bytes: the registration's
 * view (device memory registered through the peer-memory client). */
static int emu_lkey_ok(const struct ibv_sge *sge, uint32_t pd, unsigned int need, void **view)
{
    struct emu_reg_mr m;

    if (view != NULL)
        *view = (void *)(uintptr_t)sge->addr;
    if (sge->length == 0)
        return 1;
    if (emu_reg_mr_find(sge->lkey, &m) != 0 || m.pid != getpid() || m.pd != pd)
        return 0;
    if (sge->addr < m.addr || sge->addr + sge->length > m.addr + m.length ||
        sge->addr + sge->length < sge->addr)
        return 0;
    if (view != NULL)
        *view = (void *)(uintptr_t)(m.view + (sge->addr - m.addr));
    return (m.access & need) == need;
}

/* --- responder ------------------------------------------------------ */

static struct emu_qp *emu_find_qp_locked(uint32_t qpn)
{
    for (struct emu_qp *q = emu_w_qps; q != NULL; q = q->next)
        if (q->qpx.qp_base.qp_num == qpn)
            return q;
    return NULL;
}

/* Handles one request with emu_w_lock held; a successful receive's
 * completion is returned in *wc / *cq, to be pushed after the reply went
 * out (hardware sends the ACK whatever the receiving program does next;
 * a program that exits on its last completion must not lose the ACK). */
static void emu_respond(const struct emu_msg *m, const uint8_t *payload, struct emu_reply *rep,
                        struct ibv_wc *wcp, struct emu_cq **cqp)
{
    struct emu_qp *q;
    uint32_t slots;
    struct emu_rwr *w;
    void *views[EMU_MAX_SGE];
    uint32_t pd;
    size_t room = 0, off = 0;
    int wc_status = IBV_WC_SUCCESS;

    memset(rep, 0, sizeof(*rep));
    *cqp = NULL;
    q = emu_find_qp_locked(m->dst_qpn);
    if (q == NULL) {
        rep->status = EMU_R_NOT_READY;
        return;
    }
    pthread_mutex_lock(&q->lock);
    if ((q->attr.qp_state != IBV_QPS_RTR && q->attr.qp_state != IBV_QPS_RTS &&
         q->attr.qp_state != IBV_QPS_SQD) ||
        q->attr.dest_qp_num != m->src_qpn) {
        rep->status = EMU_R_NOT_READY;
        goto out_qp;
    }
    if (q->rq_take == q->rq_post) {
        rep->status = EMU_R_RNR;
        rep->rnr_timer = q->attr.min_rnr_timer;
        goto out_qp;
    }
    slots = q->cap.max_recv_wr + 1;
    w = &q->rq[q->rq_take % slots];
    pd = q->qpx.qp_base.pd->handle;
    if (m->op == EMU_MSG_SEND) {
        for (int i = 0; i < w->num_sge; i++) {
            if (!emu_lkey_ok(&w->sge[i], pd, IBV_ACCESS_LOCAL_WRITE, &views[i])) {
                wc_status = IBV_WC_LOC_PROT_ERR;
                break;
            }
            room += w->sge[i].length;
        }
        if (wc_status == IBV_WC_SUCCESS && room < m->len)
            wc_status = IBV_WC_LOC_LEN_ERR;
        for (int i = 0; wc_status == IBV_WC_SUCCESS && i < w->num_sge && off < m->len; i++) {
            size_t n = w->sge[i].length < m->len - off ? w->sge[i].length : m->len - off;

            memcpy(views[i], payload + off, n);
            off += n;
        }
    }
    q->rq_take++;
    if (wc_status != IBV_WC_SUCCESS) {
        emu_complete(q, q->qpx.qp_base.recv_cq, w->wr_id, IBV_WC_RECV, wc_status, 0);
        emu_qp_flush_locked(q);
        emu_reg_qp_update(q->qpx.qp_base.qp_num, IBV_QPS_ERR, q->attr.qp_access_flags);
        rep->status = EMU_R_ERROR;
        rep->wc_status =
            wc_status == IBV_WC_LOC_LEN_ERR ? IBV_WC_REM_INV_REQ_ERR : IBV_WC_REM_OP_ERR;
        goto out_qp;
    }
    {
        struct ibv_wc wc;

        memset(&wc, 0, sizeof(wc));
        wc.wr_id = w->wr_id;
        wc.status = IBV_WC_SUCCESS;
        wc.opcode = m->op == EMU_MSG_SEND ? IBV_WC_RECV : IBV_WC_RECV_RDMA_WITH_IMM;
        wc.byte_len = m->len;
        wc.qp_num = m->dst_qpn;
        wc.src_qp = m->src_qpn;
        wc.pkey_index = 0;
        wc.slid = q->attr.ah_attr.dlid; /* the peer's LID (0 on RoCE) */
        if (m->has_imm) {
            wc.wc_flags |= IBV_WC_WITH_IMM;
            wc.imm_data = m->imm;
        }
        *wcp = wc;
        *cqp = (struct emu_cq *)q->qpx.qp_base.recv_cq;
    }
    rep->status = EMU_R_OK;
out_qp:
    pthread_mutex_unlock(&q->lock);
}

static int emu_serve(int fd, uint8_t **buf, size_t *cap)
{
    struct emu_msg m;
    struct emu_reply rep;
    struct ibv_wc wc;
    struct emu_cq *cq;
    int rc;

    if (emu_full_io(fd, &m, sizeof(m), false) != 0)
        return -1;
    if (m.len > *cap) {
        uint8_t *n = realloc(*buf, m.len);

        if (n == NULL)
            return -1;
        *buf = n;
        *cap = m.len;
    }
    if (m.op == EMU_MSG_SEND && m.len > 0 && emu_full_io(fd, *buf, m.len, false) != 0)
        return -1;
    pthread_mutex_lock(&emu_w_lock);
    emu_respond(&m, *buf, &rep, &wc, &cq);
    rc = emu_full_io(fd, &rep, sizeof(rep), true);
    if (cq != NULL)
        emu_cq_push(cq, &wc);
    pthread_mutex_unlock(&emu_w_lock);
    return rc;
}

static bool emu_pid_gone(pid_t pid)
{
    return pid > 0 && kill(pid, 0) != 0 && errno == ESRCH;
}

static uint64_t emu_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A QP whose peer process died goes to the error state and flushes, after
 * VERBS_EMU_PEER_GRACE_MS (default 1000; a negative value disables it).
 * Hardware would notice only when it next sends (retry exhaustion, which
 * the executor reproduces); the grace lets a program finish polling what
 * completed before its peer exited, and the flush keeps a program that
 * only waits for receives from hanging. */
static void emu_watch_peers(void)
{
    static long grace = -2;
    uint64_t now = emu_now_ms();

    if (grace == -2) {
        const char *env = getenv("VERBS_EMU_PEER_GRACE_MS");

        grace = env != NULL && *env != '\0' ? strtol(env, NULL, 10) : 1000;
    }
    if (grace < 0)
        return;
    pthread_mutex_lock(&emu_w_lock);
    for (struct emu_qp *q = emu_w_qps; q != NULL; q = q->next) {
        bool gone;

        pthread_mutex_lock(&q->lock);
        gone = (q->attr.qp_state == IBV_QPS_RTR || q->attr.qp_state == IBV_QPS_RTS ||
                q->attr.qp_state == IBV_QPS_SQD) &&
               emu_pid_gone(q->remote_pid);
        if (!gone)
            q->peer_gone_ms = 0;
        else if (q->peer_gone_ms == 0)
            q->peer_gone_ms = now;
        if (gone && now - q->peer_gone_ms >= (uint64_t)grace) {
            emu_log("qp %u: peer process %d is gone, moving to the error state",
                    q->qpx.qp_base.qp_num, (int)q->remote_pid);
            emu_qp_flush_locked(q);
            emu_reg_qp_update(q->qpx.qp_base.qp_num, IBV_QPS_ERR, q->attr.qp_access_flags);
        }
        pthread_mutex_unlock(&q->lock);
    }
    pthread_mutex_unlock(&emu_w_lock);
}

static void *emu_responder(void *arg)
{
    struct pollfd fds[EMU_MAX_CONNS + 1];
    int nfds = 1;
    uint8_t *buf = NULL;
    size_t cap = 0;
    sigset_t all;

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    fds[0].fd = emu_w_listen;
    fds[0].events = POLLIN;
    for (;;) {
        int n = poll(fds, (nfds_t)nfds, EMU_WATCH_MS);

        if (n > 0 && (fds[0].revents & POLLIN)) {
            int c = accept4(emu_w_listen, NULL, NULL, SOCK_CLOEXEC);

            if (c >= 0 && nfds <= EMU_MAX_CONNS) {
                fds[nfds].fd = c;
                fds[nfds].events = POLLIN;
                fds[nfds].revents = 0;
                nfds++;
            } else if (c >= 0) {
                emu_log("too many peer connections, refusing one");
                close(c);
            }
        }
        for (int i = 1; n > 0 && i < nfds; i++) {
            if (fds[i].revents == 0)
                continue;
            if (emu_serve(fds[i].fd, &buf, &cap) != 0) {
                close(fds[i].fd);
                fds[i] = fds[--nfds];
                i--;
            }
        }
        emu_watch_peers();
    }
    return arg;
}

/* --- executor ------------------------------------------------------- */

struct emu_exec {
    uint32_t qpn, dest_qpn, pd;
    uint8_t retry_cnt, rnr_retry, timeout;
    struct ibv_ah_attr ah;
};

static void emu_drop_peer(pid_t pid)
{
    for (int i = 0; i < EMU_MAX_CONNS; i++) {
        if (emu_w_peers[i].pid == pid) {
            close(emu_w_peers[i].fd);
            emu_w_peers[i].pid = 0;
        }
    }
}

static int emu_peer_fd(pid_t pid)
{
    struct sockaddr_un sa;
    socklen_t len;
    int free_slot = -1, fd;

    for (int i = 0; i < EMU_MAX_CONNS; i++) {
        if (emu_w_peers[i].pid == pid)
            return emu_w_peers[i].fd;
        if (emu_w_peers[i].pid == 0 && free_slot < 0)
            free_slot = i;
    }
    if (free_slot < 0) {
        free_slot = 0;
        emu_drop_peer(emu_w_peers[0].pid);
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    emu_sock_name(pid, &sa, &len);
    if (connect(fd, (struct sockaddr *)&sa, len) != 0) {
        close(fd);
        return -1;
    }
    emu_w_peers[free_slot].pid = pid;
    emu_w_peers[free_slot].fd = fd;
    return fd;
}

static int emu_exchange(pid_t pid, const struct emu_msg *m, const uint8_t *payload,
                        struct emu_reply *rep)
{
    int fd = emu_peer_fd(pid);

    if (fd < 0)
        return -1;
    if (emu_full_io(fd, (void *)m, sizeof(*m), true) != 0 ||
        (m->op == EMU_MSG_SEND && m->len > 0 &&
         emu_full_io(fd, (void *)payload, m->len, true) != 0) ||
        emu_full_io(fd, rep, sizeof(*rep), false) != 0) {
        emu_drop_peer(pid);
        return -1;
    }
    return 0;
}

static void emu_sleep_us(uint64_t us)
{
    struct timespec ts = {.tv_sec = (time_t)(us / 1000000), .tv_nsec = (long)(us % 1000000) * 1000};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* IB specification table of RNR NAK timer values, in microseconds */
static uint64_t emu_rnr_us(uint32_t code)
{
    static const uint32_t t[32] = {
        655360, 10,    20,    30,    40,    60,     80,     120,    160,    240,    320,
        480,    640,   960,   1280,  1920,  2560,   3840,   5120,   7680,   10240,  15360,
        20480,  30720, 40960, 61440, 81920, 122880, 163840, 245760, 327680, 491520,
    };
    return t[code & 31];
}

/* Local ACK timeout: 4.096 us * 2^timeout, bounded so tests stay short. */
static uint64_t emu_ack_us(uint8_t timeout)
{
    uint64_t us = timeout == 0 ? 1000 : (4ull << timeout);

    if (us < 1000)
        us = 1000;
    return us > 200000 ? 200000 : us;
}

static bool emu_still_current(struct emu_qp *q, uint64_t idx)
{
    bool ok;

    pthread_mutex_lock(&q->lock);
    ok = q->sq_exec == idx && (q->attr.qp_state == IBV_QPS_RTS || q->attr.qp_state == IBV_QPS_SQD);
    pthread_mutex_unlock(&q->lock);
    return ok;
}

/* Delivers a message with RC retry semantics; returns a wc status. */
static int emu_deliver(struct emu_qp *q, uint64_t idx, const struct emu_exec *x, pid_t pid,
                       const struct emu_msg *m, const uint8_t *payload)
{
    unsigned int rnr_left = x->rnr_retry, retry_left = x->retry_cnt;
    struct emu_reply rep;

    for (;;) {
        if (!emu_still_current(q, idx))
            return IBV_WC_WR_FLUSH_ERR;
        if (emu_exchange(pid, m, payload, &rep) != 0) {
            if (emu_pid_gone(pid) || retry_left-- == 0)
                return IBV_WC_RETRY_EXC_ERR;
            emu_sleep_us(emu_ack_us(x->timeout));
            continue;
        }
        switch (rep.status) {
        case EMU_R_OK:
            return IBV_WC_SUCCESS;
        case EMU_R_RNR:
            if (x->rnr_retry != 7 && rnr_left-- == 0)
                return IBV_WC_RNR_RETRY_EXC_ERR;
            emu_sleep_us(emu_rnr_us(rep.rnr_timer));
            break;
        case EMU_R_NOT_READY:
            if (retry_left-- == 0)
                return IBV_WC_RETRY_EXC_ERR;
            emu_sleep_us(emu_ack_us(x->timeout));
            break;
        default:
            return (int)rep.wc_status;
        }
    }
}

/* Does the address vector reach the port the peer QP lives on? */
static bool emu_av_reaches(const struct ibv_ah_attr *ah, uint32_t dev_index)
{
    struct emu_device *d = emu_device_by_index((int)dev_index);
    union ibv_gid gid;
    int type;

    if (d == NULL)
        return true; /* the peer was configured with more devices than we were */
    if (!ah->is_global)
        return d->pers == EMU_PERS_IB && ah->dlid == d->lid;
    for (int i = 0; i < emu_gid_count(d); i++)
        if (emu_gid(d, i, &gid, &type) == 0 && memcmp(&gid, &ah->grh.dgid, sizeof(gid)) == 0)
            return true;
    return false;
}

static int emu_rdma(const struct emu_swr *s, void *const *views, const struct emu_reg_qp *rq,
                    size_t len)
{
    struct iovec local[EMU_MAX_SGE], remote;
    unsigned int need =
        s->opcode == IBV_WR_RDMA_READ ? IBV_ACCESS_REMOTE_READ : IBV_ACCESS_REMOTE_WRITE;
    struct emu_reg_mr m;
    unsigned long nl = 0;
    ssize_t n;

    if (len == 0)
        return IBV_WC_SUCCESS;
    if (emu_reg_mr_find(s->rkey, &m) != 0 || m.pid != rq->pid || m.pd != rq->pd ||
        s->raddr < m.addr || s->raddr + len > m.addr + m.length || s->raddr + len < s->raddr ||
        (m.access & need) != need || (rq->access & need) != need)
        return IBV_WC_REM_ACCESS_ERR;
    if (s->inl != NULL) {
        local[0].iov_base = s->inl;
        local[0].iov_len = s->inl_len;
        nl = 1;
    } else {
        for (int i = 0; i < s->num_sge; i++) {
            if (s->sge[i].length == 0)
                continue;
            local[nl].iov_base = views[i];
            local[nl].iov_len = s->sge[i].length;
            nl++;
        }
    }
    remote.iov_base = (void *)(uintptr_t)(m.view + (s->raddr - m.addr));
    remote.iov_len = len;
    if (s->opcode == IBV_WR_RDMA_READ)
        n = process_vm_readv(rq->pid, local, nl, &remote, 1, 0);
    else
        n = process_vm_writev(rq->pid, local, nl, &remote, 1, 0);
    if (n < 0 && errno == ESRCH)
        return IBV_WC_RETRY_EXC_ERR;
    if (n < 0 && errno == EPERM) {
        emu_log("process_vm_%sv to pid %d not permitted: %s",
                s->opcode == IBV_WR_RDMA_READ ? "read" : "write", (int)rq->pid, strerror(errno));
        return IBV_WC_REM_OP_ERR;
    }
    if (n != (ssize_t)len)
        return IBV_WC_REM_ACCESS_ERR;
    return IBV_WC_SUCCESS;
}

static int emu_execute(struct emu_qp *q, uint64_t idx, const struct emu_swr *s,
                       const struct emu_exec *x, uint32_t *byte_len)
{
    unsigned int lneed = s->opcode == IBV_WR_RDMA_READ ? IBV_ACCESS_LOCAL_WRITE : 0;
    void *views[EMU_MAX_SGE];
    struct emu_reg_qp rq;
    struct emu_msg m;
    uint8_t *payload = NULL;
    size_t len = 0;
    int st;

    if (s->inl != NULL) {
        len = s->inl_len;
    } else {
        for (int i = 0; i < s->num_sge; i++) {
            if (!emu_lkey_ok(&s->sge[i], x->pd, lneed, &views[i]))
                return IBV_WC_LOC_PROT_ERR;
            len += s->sge[i].length;
        }
    }
    *byte_len = (uint32_t)len;
    if (len > (1ull << 31))
        return IBV_WC_LOC_LEN_ERR;
    /* the peer: no ACK ever comes from a QP that does not exist */
    for (unsigned int retry = x->retry_cnt;; retry--) {
        if (emu_reg_qp_find(x->dest_qpn, &rq) == 0 && !emu_pid_gone(rq.pid) &&
            (rq.state == IBV_QPS_RTR || rq.state == IBV_QPS_RTS || rq.state == IBV_QPS_SQD))
            break;
        if (retry == 0 || !emu_still_current(q, idx))
            return IBV_WC_RETRY_EXC_ERR;
        emu_sleep_us(emu_ack_us(x->timeout));
    }
    if (!emu_av_reaches(&x->ah, rq.dev_index))
        return IBV_WC_RETRY_EXC_ERR;
    memset(&m, 0, sizeof(m));
    m.dst_qpn = x->dest_qpn;
    m.src_qpn = x->qpn;
    switch (s->opcode) {
    case IBV_WR_RDMA_WRITE:
    case IBV_WR_RDMA_READ:
        return emu_rdma(s, views, &rq, len);
    case IBV_WR_RDMA_WRITE_WITH_IMM:
        st = emu_rdma(s, views, &rq, len);
        if (st != IBV_WC_SUCCESS)
            return st;
        m.op = EMU_MSG_WRITE_IMM;
        m.len = (uint32_t)len;
        m.imm = s->imm;
        m.has_imm = 1;
        return emu_deliver(q, idx, x, rq.pid, &m, NULL);
    default:
        break;
    }
    m.op = EMU_MSG_SEND;
    m.len = (uint32_t)len;
    m.imm = s->imm;
    m.has_imm = s->opcode == IBV_WR_SEND_WITH_IMM;
    if (s->inl != NULL) {
        payload = s->inl;
    } else if (len > 0) {
        size_t off = 0;

        payload = malloc(len);
        if (payload == NULL)
            return IBV_WC_LOC_QP_OP_ERR;
        for (int i = 0; i < s->num_sge; i++) {
            memcpy(payload + off, views[i], s->sge[i].length);
            off += s->sge[i].length;
        }
    }
    st = emu_deliver(q, idx, x, rq.pid, &m, payload);
    if (payload != s->inl)
        free(payload);
    return st;
}

static struct emu_qp *emu_pick_locked(void)
{
    struct emu_qp *start = emu_w_cursor != NULL ? emu_w_cursor->next : NULL;

    for (int pass = 0; pass < 2; pass++) {
        for (struct emu_qp *q = pass == 0 ? start : emu_w_qps; q != NULL; q = q->next) {
            bool ready;

            pthread_mutex_lock(&q->lock);
            ready = q->sq_exec < q->sq_post && q->attr.qp_state == IBV_QPS_RTS;
            pthread_mutex_unlock(&q->lock);
            if (ready) {
                emu_w_cursor = q;
                return q;
            }
        }
    }
    return NULL;
}

static void emu_run_one(struct emu_qp *q)
{
    uint32_t slots = q->cap.max_send_wr + 1;
    struct emu_exec x;
    struct emu_swr s;
    uint64_t idx;
    uint32_t byte_len = 0;
    int st;

    pthread_mutex_lock(&q->lock);
    idx = q->sq_exec;
    s = q->sq[idx % slots];
    /* the executor owns the inline copy now: a flush while it runs must
     * not free it */
    q->sq[idx % slots].inl = NULL;
    x.qpn = q->qpx.qp_base.qp_num;
    x.dest_qpn = q->attr.dest_qp_num;
    x.pd = q->qpx.qp_base.pd->handle;
    x.retry_cnt = q->attr.retry_cnt;
    x.rnr_retry = q->attr.rnr_retry;
    x.timeout = q->attr.timeout;
    x.ah = q->attr.ah_attr;
    pthread_mutex_unlock(&q->lock);

    st = emu_execute(q, idx, &s, &x, &byte_len);

    pthread_mutex_lock(&q->lock);
    if (q->sq_exec == idx && q->attr.qp_state != IBV_QPS_ERR && q->attr.qp_state != IBV_QPS_RESET) {
        bool signaled = q->sq_sig_all || (s.flags & IBV_SEND_SIGNALED);

        q->sq_exec++;
        if (st != IBV_WC_SUCCESS || signaled) {
            emu_complete(q, q->qpx.qp_base.send_cq, s.wr_id, emu_wc_opcode(s.opcode), st,
                         s.opcode == IBV_WR_RDMA_READ || st == IBV_WC_SUCCESS ? byte_len : 0);
            q->sq_free = q->sq_exec;
        }
        if (st != IBV_WC_SUCCESS) {
            emu_qp_flush_locked(q);
            emu_reg_qp_update(x.qpn, IBV_QPS_ERR, q->attr.qp_access_flags);
        }
    }
    pthread_mutex_unlock(&q->lock);
    free(s.inl);
}

static void *emu_executor(void *arg)
{
    sigset_t all;

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    pthread_mutex_lock(&emu_w_lock);
    for (;;) {
        uint64_t seen = emu_w_kicks;
        struct emu_qp *q = emu_pick_locked();

        if (q == NULL) {
            while (seen == emu_w_kicks)
                pthread_cond_wait(&emu_w_cond, &emu_w_lock);
            continue;
        }
        q->busy = true;
        pthread_mutex_unlock(&emu_w_lock);
        emu_run_one(q);
        pthread_mutex_lock(&emu_w_lock);
        q->busy = false;
        pthread_cond_broadcast(&emu_w_idle);
    }
    return arg;
}

int emu_wire_start(void)
{
    struct sockaddr_un sa;
    socklen_t len;
    pthread_t t1, t2;
    int rc = 0, fd;

    pthread_mutex_lock(&emu_w_lock);
    if (emu_w_pid == getpid())
        goto out;
    /* first QP of this process (or of a forked child: threads and the
     * listening socket of the parent did not come along) */
    emu_w_qps = NULL;
    memset(emu_w_peers, 0, sizeof(emu_w_peers));
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    emu_sock_name(getpid(), &sa, &len);
    if (bind(fd, (struct sockaddr *)&sa, len) != 0 || listen(fd, 64) != 0) {
        rc = -errno;
        emu_log("cannot listen for peers: %s", strerror(errno));
        close(fd);
        goto out;
    }
    emu_w_listen = fd;
    if (pthread_create(&t1, NULL, emu_responder, NULL) != 0 ||
        pthread_create(&t2, NULL, emu_executor, NULL) != 0) {
        rc = -EAGAIN;
        goto out;
    }
    pthread_detach(t1);
    pthread_detach(t2);
    emu_w_pid = getpid();
out:
    pthread_mutex_unlock(&emu_w_lock);
    return rc;
}

void emu_wire_kick(void)
{
    pthread_mutex_lock(&emu_w_lock);
    emu_w_kicks++;
    pthread_cond_signal(&emu_w_cond);
    pthread_mutex_unlock(&emu_w_lock);
}

void emu_wire_add_qp(struct emu_qp *q)
{
    pthread_mutex_lock(&emu_w_lock);
    q->next = emu_w_qps;
    emu_w_qps = q;
    pthread_mutex_unlock(&emu_w_lock);
}

void emu_wire_remove_qp(struct emu_qp *q)
{
    pthread_mutex_lock(&emu_w_lock);
    for (struct emu_qp **pp = &emu_w_qps; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == q) {
            *pp = q->next;
            break;
        }
    }
    if (emu_w_cursor == q)
        emu_w_cursor = NULL;
    /* stop a request waiting on an RNR loop, then wait for the executor */
    pthread_mutex_lock(&q->lock);
    q->attr.qp_state = IBV_QPS_RESET;
    pthread_mutex_unlock(&q->lock);
    while (q->busy)
        pthread_cond_wait(&emu_w_idle, &emu_w_lock);
    pthread_mutex_unlock(&emu_w_lock);
}
