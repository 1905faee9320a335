/*
 * TCP transport. N I/O threads ("workers"), each with its own epoll loop.
 * Incoming connections come from the engine's listener once their
 * handshake is answered (eng_listen.c) and are assigned to workers
 * round-robin (ops.adopt). Every remote segment ("peer") gets
 * engine.tcp.conns_per_peer connections assigned to workers round-robin;
 * a request is cut into slices of engine.tcp.slice_bytes spread over them.
 *
 * Data moves between sockets and registered memory with sendmsg/readv
 * straight from/into the user's buffers. The submitting thread writes a
 * slice itself when the socket has room (no hand-off); the rest goes out
 * from the worker on EPOLLOUT. Answers come back in order on each
 * connection and are matched to the oldest outstanding slice by id.
 *
 * Requests for the target's device memory (cuda:N registrations) are
 * served through host staging buffers each connection keeps for reuse: a
 * READ's answer, or a WRITE's acknowledgement, is queued in order at once
 * but marked waiting, and is sent only when the asynchronous copy from or
 * to the device (eng_dev_copy, polled by the staging progress thread)
 * completed; the I/O thread never waits for the device, and answers on a
 * connection stay in request order.
 *
 * Locking: a connection's send side (queues, fd, state) is under c->lock;
 * its receive side and its life cycle belong to its worker. Task
 * callbacks are never made with a lock held. c->lock is only held for
 * queue updates, never across sendmsg: one thread at a time sends, the
 * owner of c->sending, which holds c->send_lock for as long (see
 * conn_flush). c->iq is under c->send_lock, taken before c->lock. An
 * accepted connection with device copies in flight (c->refs) is freed
 * only after they finished.
 */
#include "eng_tp.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#define TICK_NS (20 * 1000000ull)
#define SCRATCH_BYTES (64 * 1024)
#define DEFER_BYTES (256 * 1024)
#ifndef FLUSH_BYTES
#define FLUSH_BYTES (1024 * 1024)
#endif
#define CONN_STAGES 2 /* staging buffers a connection keeps between requests */

struct tcp_block;

/* One frame to send: a request slice (initiator) or an answer (target). */
struct tcp_slice {
    struct tcp_slice *next;
    struct eng_task *task;   /* initiator: the request it belongs to */
    struct tcp_block *block; /* initiator: allocation shared with its siblings */
    struct eng_region *reg;  /* target: region an answer reads from */
    struct tcp_conn *conn;   /* target, device memory: the connection ... */
    void *stage;             /* ... whose staging buffer the copy uses */
    atomic_int refs;         /* target, device memory: send queue + copy */
    bool wait;               /* not to be sent yet: the copy runs (c->lock) */
    char *data;              /* payload to send, or destination of READ_RESP */
    void *owned;             /* freed when sent */
    uint32_t len;            /* payload bytes to send */
    uint32_t xfer;           /* bytes the slice moves */
    size_t sent;             /* of header + payload */
    uint64_t seq, raddr, t_start;
    uint8_t op;
    uint8_t hdr[ENG_FRAME_BYTES];
};

struct tcp_block {
    atomic_uint left;
    struct tcp_slice s[];
};

enum { C_IDLE, C_CONNECTING, C_HANDSHAKE, C_READY };
enum { R_HDR, R_PAYLOAD, R_DISCARD, R_CTRL };
enum { CMD_ADD = 1, CMD_KICK = 2, CMD_CLOSE = 4, CMD_ADOPT = 8 };

struct tcp_worker;
struct tcp_peer;

struct tcp_conn {
    struct tcp_conn *wnext, *wprev; /* worker's list, worker only */
    struct tcp_conn *cnext;         /* worker's command list, under cmd_lock */
    int cmds;                       /* pending CMD_*, under cmd_lock */
    bool queued;
    struct tcp_worker *w;
    struct tcp_peer *peer; /* NULL: accepted */
    int fd;
    atomic_int state;
    bool want_out, dead;
    bool in_read;      /* answers queued while reading go out together ... */
    uint64_t deferred; /* ... unless this many payload bytes wait for them */
    pthread_mutex_t lock;
    pthread_mutex_t send_lock;      /* held by the sending thread; guards iq */
    bool sending;                   /* a thread owns the send side, under lock */
    bool resetting;                 /* conn_reset waits for the sender, under lock */
    struct tcp_slice *sq, *sq_tail; /* to send; head may be partly sent */
    struct tcp_slice *iq, *iq_tail; /* sent, answer awaited (initiator), send_lock */
    uint64_t seq;
    /* receive side, worker only */
    int rstage;
    uint8_t rhdr[ENG_FRAME_BYTES];
    size_t rgot;
    struct eng_frame rf;
    char *rdst;
    uint64_t rleft;
    int rstatus;
    struct tcp_slice *rslice;
    struct eng_region *rreg;
    /* the request last rejected with a message: its other slices only count */
    uint64_t rej_addr, rej_len, rej_at;
    uint8_t rej_type;
    uint8_t *ctrl; /* HELLO_ACK being read (initiator) */
    size_t ctrl_got;
    /* connection establishment, outgoing only */
    int attempts;
    uint64_t t_first, t_next, t_used;
    char pname[64];
    /* device memory served (accepted connections) */
    atomic_int refs; /* device copies in flight: the worker frees c after */
    pthread_mutex_t stage_lock;
    void *stages[CONN_STAGES]; /* kept for the next request */
    int nstages;
    void *rstaging; /* a WRITE for device memory is received here */
};

struct tcp_peer {
    struct tcp_peer *next;
    /* copied from the segment, which may go before the worker's last look */
    struct sockaddr_storage sa;
    socklen_t salen;
    uint32_t pid;
    atomic_uint rr;
    atomic_int refs;
    bool serial;               /* one sending thread at a time: peer_send */
    atomic_int sending, again; /* peer_send's owner flag and its doorbell */
    int n;
    struct tcp_conn conns[];
};

struct tcp_tp;

struct tcp_worker {
    struct tcp_tp *tp;
    pthread_t th;
    int epfd, evfd;
    uint64_t next_tick;
    pthread_mutex_t cmd_lock;
    struct tcp_conn *cmds;
    struct tcp_conn *conns;     /* every connection of this worker */
    struct tcp_conn *graveyard; /* freed after the current epoll batch */
    uint8_t *scratch;
};

struct tcp_tp {
    struct eng_transport base;
    int nworkers;
    struct tcp_worker *w;
    atomic_bool stop;
    atomic_uint rr;
    atomic_int nout; /* outgoing sockets open */
    pthread_mutex_t peers_lock;
    struct tcp_peer *peers;
};

static struct eng_ctx *conn_eng(struct tcp_conn *c)
{
    return c->w->tp->base.eng;
}

static void conn_locks_init(struct tcp_conn *c)
{
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->send_lock, NULL);
}

static void conn_locks_destroy(struct tcp_conn *c)
{
    pthread_mutex_destroy(&c->send_lock);
    pthread_mutex_destroy(&c->lock);
}

static void worker_wake(struct tcp_worker *w)
{
    uint64_t one = 1;
    if (write(w->evfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        eng_err(w->tp->base.eng, "tcp: eventfd write: %m");
}

static void post_cmd(struct tcp_conn *c, int cmd)
{
    struct tcp_worker *w = c->w;
    pthread_mutex_lock(&w->cmd_lock);
    c->cmds |= cmd;
    if (!c->queued) {
        c->queued = true;
        c->cnext = w->cmds;
        w->cmds = c;
    }
    pthread_mutex_unlock(&w->cmd_lock);
    worker_wake(w);
}

static void sock_opts(struct eng_ctx *eng, int fd)
{
    int one = 1;
    if (eng->p.nodelay)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (eng->p.sockbuf) {
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &eng->p.sockbuf, sizeof(eng->p.sockbuf));
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &eng->p.sockbuf, sizeof(eng->p.sockbuf));
    }
}

static void epoll_set(struct tcp_conn *c, uint32_t ev)
{
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(c->w->epfd, EPOLL_CTL_MOD, c->fd, &e);
}

/* ---- staging buffers of a connection -------------------------------------- */

static void *conn_stage_take(struct tcp_conn *c, uint64_t len)
{
    void *p = NULL;

    pthread_mutex_lock(&c->stage_lock);
    for (int i = 0; i < c->nstages; i++) {
        if (eng_stage_cap(c->stages[i]) >= len) {
            p = c->stages[i];
            c->stages[i] = c->stages[--c->nstages];
            break;
        }
    }
    pthread_mutex_unlock(&c->stage_lock);
    return p ? p : eng_stage_get(len);
}

static void conn_stage_give(struct tcp_conn *c, void *p)
{
    pthread_mutex_lock(&c->stage_lock);
    if (c->nstages < CONN_STAGES) {
        c->stages[c->nstages++] = p;
        p = NULL;
    }
    pthread_mutex_unlock(&c->stage_lock);
    if (p)
        eng_stage_put(p);
}

/* Free an accepted connection no device copy refers to any more. */
static void conn_free(struct tcp_conn *c)
{
    for (int i = 0; i < c->nstages; i++)
        eng_stage_put(c->stages[i]);
    pthread_mutex_destroy(&c->stage_lock);
    conn_locks_destroy(c);
    free(c);
}

/* ---- completion --------------------------------------------------------- */

static void slice_free(struct tcp_slice *s)
{
    if (s->block) {
        if (atomic_fetch_sub(&s->block->left, 1) == 1)
            free(s->block);
    } else {
        /* an answer for device memory goes when it is both sent (or
         * dropped) and its copy finished */
        if (s->stage && atomic_fetch_sub(&s->refs, 1) != 1)
            return;
        eng_region_put(s->reg);
        if (s->stage)
            conn_stage_give(s->conn, s->stage);
        free(s->owned);
        free(s);
    }
}

/* Finish an initiator slice (no lock held) or drop a target answer. */
static void slice_finish(struct tcp_slice *s, int err)
{
    if (s->task)
        eng_task_slice_done(s->task, err ? 0 : s->xfer, err);
    slice_free(s);
}

static void finish_list(struct tcp_slice *s, int err)
{
    while (s) {
        struct tcp_slice *n = s->next;
        slice_finish(s, err);
        s = n;
    }
}

/*
 * Close the socket and fail everything queued or outstanding on it. An
 * outgoing connection goes back to IDLE (reconnected on demand); an
 * accepted one is freed after the current epoll batch. Worker only.
 */
static void conn_reset(struct tcp_conn *c, int err)
{
    struct eng_ctx *eng = conn_eng(c);
    struct tcp_slice *sq, *iq, *rs = c->rslice;

    /* a thread in sendmsg uses the fd and the queued slices: tell it to
     * stop after this call, and wait for it */
    pthread_mutex_lock(&c->lock);
    c->resetting = true;
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_lock(&c->send_lock);
    pthread_mutex_lock(&c->lock);
    c->resetting = false;
    sq = c->sq;
    iq = c->iq;
    c->sq = c->sq_tail = c->iq = c->iq_tail = NULL;
    if ((sq || iq || rs) && c->peer) {
        atomic_fetch_add(&eng->st.conn_broken, 1);
        eng_warn(eng, "peer %s: connection lost with requests on it: %s", c->pname,
                 strerror(err ? -err : ECONNRESET));
    }
    if (atomic_load(&c->state) == C_READY && c->peer)
        atomic_fetch_sub(&eng->st.connections, 1);
    atomic_store(&c->state, C_IDLE);
    if (c->fd >= 0) {
        epoll_ctl(c->w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        if (c->peer)
            atomic_fetch_sub(&c->w->tp->nout, 1);
    }
    c->fd = -1;
    c->want_out = false;
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_unlock(&c->send_lock);

    c->rslice = NULL;
    eng_region_put(c->rreg);
    c->rreg = NULL;
    if (c->rstaging) {
        conn_stage_give(c, c->rstaging);
        c->rstaging = NULL;
    }
    free(c->ctrl);
    c->ctrl = NULL;
    c->rstage = R_HDR;
    c->rgot = 0;
    if (rs)
        slice_finish(rs, err);
    finish_list(iq, err);
    finish_list(sq, err);
    if (!c->peer && !c->dead) {
        c->dead = true;
        if (c->wprev)
            c->wprev->wnext = c->wnext;
        else
            c->w->conns = c->wnext;
        if (c->wnext)
            c->wnext->wprev = c->wprev;
        c->wnext = c->w->graveyard;
        c->w->graveyard = c;
    }
}

/* ---- sending ------------------------------------------------------------ */

/*
 * Send what the socket takes; called and returns with c->lock held; 0 or
 * -errno. A combining send: the caller that finds the send side free
 * takes it (c->sending, then c->send_lock) and runs sendmsg with c->lock
 * released, looping until the queue is empty or the socket is full, so
 * submitting threads never sleep on c->lock across a copy. A caller that
 * finds it taken has only queued and returns at once: the owner sees its
 * slices (queued under c->lock) before it lets go. Slices move to iq
 * under c->send_lock before the worker can look for their answers there.
 */
static int conn_flush(struct tcp_conn *c)
{
    bool full = false;
    int ret = 0;

    if (c->sending)
        return 0;
    c->sending = true;
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_lock(&c->send_lock);
    pthread_mutex_lock(&c->lock);
    /* the connection may have been reset while this thread waited */
    while (c->sq && !c->resetting && atomic_load(&c->state) == C_READY) {
        struct iovec iov[64];
        struct msghdr mh = {.msg_iov = iov};
        int k = 0;
        size_t total = 0;
        /* at most FLUSH_BYTES a call: the worker may wait for send_lock;
         * an answer whose device copy runs holds back those after it */
        for (struct tcp_slice *s = c->sq; s && !s->wait && k < 62 && total < FLUSH_BYTES;
             s = s->next) {
            size_t off = s->sent;
            if (off < ENG_FRAME_BYTES) {
                iov[k].iov_base = s->hdr + off;
                iov[k++].iov_len = ENG_FRAME_BYTES - off;
                total += ENG_FRAME_BYTES - off;
                off = ENG_FRAME_BYTES;
            }
            if (s->len && total < FLUSH_BYTES) {
                size_t l = s->len - (off - ENG_FRAME_BYTES);
                if (l > FLUSH_BYTES - total)
                    l = FLUSH_BYTES - total;
                iov[k].iov_base = s->data + (off - ENG_FRAME_BYTES);
                iov[k++].iov_len = l;
                total += l;
            }
        }
        if (!k)
            break;
        mh.msg_iovlen = (size_t)k;
        /* only the owner takes slices off sq, and conn_reset waits for
         * send_lock: the fd and the slices stay valid without c->lock */
        int fd = c->fd;
        pthread_mutex_unlock(&c->lock);
        ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        int err = n < 0 ? errno : 0;
        pthread_mutex_lock(&c->lock);
        if (n < 0) {
            if (err == EINTR)
                continue;
            if (err != EAGAIN) {
                ret = -err;
                break;
            }
            if (!c->want_out) {
                c->want_out = true;
                epoll_set(c, EPOLLIN | EPOLLOUT);
            }
            full = true;
            break;
        }
        while (n > 0) {
            struct tcp_slice *s = c->sq;
            size_t rem = ENG_FRAME_BYTES + s->len - s->sent;
            if ((size_t)n < rem) {
                s->sent += (size_t)n;
                break;
            }
            n -= (ssize_t)rem;
            c->sq = s->next;
            if (!c->sq)
                c->sq_tail = NULL;
            s->next = NULL;
            if (s->task) {
                if (c->iq_tail)
                    c->iq_tail->next = s;
                else
                    c->iq = s;
                c->iq_tail = s;
            } else {
                slice_free(s);
            }
        }
    }
    /* nothing left, or only what waits for a device copy or a reset */
    if (!ret && !full && c->want_out) {
        c->want_out = false;
        epoll_set(c, EPOLLIN);
    }
    c->sending = false;
    pthread_mutex_unlock(&c->send_lock);
    return ret;
}

static void conn_enqueue_locked(struct tcp_conn *c, struct tcp_slice *s)
{
    s->next = NULL;
    if (c->sq_tail)
        c->sq_tail->next = s;
    else
        c->sq = s;
    c->sq_tail = s;
}

/*
 * Send what is queued to a serial peer from one thread at a time,
 * submitter or worker alike, connection after connection. Such a peer runs
 * on this host (engine.tcp.same_host_send): its receiving threads share our
 * few cores, and two of our threads sending on its two connections at once
 * leave them less of the CPU than one does (docs/perf.md, threads 1 -> 4).
 * A thread that finds the peer's send side taken rings p->again and
 * leaves: the owner goes over every connection again before it lets go,
 * so nothing queued is left behind. A worker woken by EPOLLOUT on `out`
 * that finds the owner at work first stops watching out for room (it would
 * wake again at once, the event is level-triggered): the owner's sendmsg
 * watches again if the socket is still full.
 */
static void peer_send(struct tcp_peer *p, struct tcp_conn *out)
{
    if (out && atomic_load(&p->sending)) {
        pthread_mutex_lock(&out->lock);
        if (out->want_out) {
            out->want_out = false;
            epoll_set(out, EPOLLIN);
        }
        pthread_mutex_unlock(&out->lock);
    }
    atomic_store(&p->again, 1);
    while (atomic_load(&p->again)) {
        int idle = 0;
        if (!atomic_compare_exchange_strong(&p->sending, &idle, 1))
            return; /* the owner sees again */
        while (atomic_exchange(&p->again, 0)) {
            for (int i = 0; i < p->n; i++) {
                struct tcp_conn *c = &p->conns[i];
                pthread_mutex_lock(&c->lock);
                if (c->sq && atomic_load(&c->state) == C_READY && conn_flush(c))
                    shutdown(c->fd, SHUT_RDWR); /* its worker sees the hang-up and resets */
                pthread_mutex_unlock(&c->lock);
            }
        }
        atomic_store(&p->sending, 0);
    }
}

/* ---- target side ------------------------------------------------------- */

static int send_answer(struct tcp_conn *c, uint8_t type, const struct eng_frame *req, int status,
                       struct eng_region *reg, void *owned, uint32_t owned_len)
{
    struct tcp_slice *s = calloc(1, sizeof(*s));
    struct eng_frame f = {
        .type = type, .status = status, .id = req->id, .addr = req->addr, .len = req->len};
    int ret;

    if (!s) {
        eng_region_put(reg);
        free(owned);
        return -ENOMEM;
    }
    if (owned) {
        s->data = owned;
        s->owned = owned;
        s->len = owned_len;
    } else if (type == ENG_F_READ_RESP && !status) {
        s->data = (char *)(uintptr_t)req->addr;
        s->len = (uint32_t)req->len;
    }
    s->reg = reg;
    f.payload_len = s->len;
    eng_frame_encode(&f, s->hdr);
    pthread_mutex_lock(&c->lock);
    conn_enqueue_locked(c, s);
    c->deferred += req->len;
    if (!c->in_read || c->deferred >= DEFER_BYTES) {
        c->deferred = 0;
        ret = conn_flush(c);
    } else {
        ret = 0;
    }
    pthread_mutex_unlock(&c->lock);
    return ret;
}

/* The device copy of a served request ended: send its answer. Called once
 * from the staging progress thread (or the worker when the copy could not
 * be queued), no lock held. */
static void device_copied(void *arg, int err)
{
    struct tcp_slice *s = arg;
    struct tcp_conn *c = s->conn;
    struct eng_frame f = {
        .type = s->op, .status = err, .id = s->seq, .addr = s->raddr, .len = s->xfer};

    if (err)
        s->len = 0;
    f.payload_len = s->len;
    eng_frame_encode(&f, s->hdr);
    pthread_mutex_lock(&c->lock);
    s->wait = false;
    if (c->fd >= 0 && conn_flush(c))
        shutdown(c->fd, SHUT_RDWR); /* the worker sees the hang-up and resets */
    pthread_mutex_unlock(&c->lock);
    slice_free(s);
    atomic_fetch_sub(&c->refs, 1);
}

/*
 * Serve a READ (type READ_RESP) or a received WRITE (type WRITE_ACK, its
 * payload in stage) for device memory in reg: queue the answer, waiting,
 * and start the copy. Worker only.
 */
static int serve_device(struct tcp_conn *c, uint8_t type, const struct eng_frame *req,
                        struct eng_region *reg, void *stage)
{
    struct eng_ctx *eng = conn_eng(c);
    bool to_device = type == ENG_F_WRITE_ACK;
    struct tcp_slice *s;
    int ret;

    if (!stage)
        stage = conn_stage_take(c, req->len);
    s = stage ? calloc(1, sizeof(*s)) : NULL;
    if (!s) {
        if (stage)
            conn_stage_give(c, stage);
        eng_err(eng, "peer %s: no memory to stage %llu bytes of cuda:%d", c->pname,
                (unsigned long long)req->len, reg->cuda_dev);
        return send_answer(c, type, req, -ENOMEM, reg, NULL, 0);
    }
    s->reg = reg;
    s->conn = c;
    s->stage = stage;
    s->wait = true;
    s->op = type;
    s->seq = req->id;
    s->raddr = req->addr;
    s->xfer = (uint32_t)req->len;
    if (!to_device) {
        s->data = stage;
        s->len = (uint32_t)req->len;
    }
    atomic_store(&s->refs, 2);
    atomic_fetch_add(&c->refs, 1);
    pthread_mutex_lock(&c->lock);
    conn_enqueue_locked(c, s);
    pthread_mutex_unlock(&c->lock);
    ret = eng_dev_copy(eng, to_device, stage, (void *)(uintptr_t)req->addr, req->len, reg->cuda_dev,
                       device_copied, s);
    if (ret) {
        eng_err(eng, "peer %s: cannot start a cuda:%d copy: %s", c->pname, reg->cuda_dev,
                strerror(-ret));
        device_copied(s, ret);
    }
    return 0;
}

/*
 * A slice outside the remote-accessible registrations. Counted always;
 * logged once per request and connection (a request of many slices is
 * rejected slice by slice), and again after a second for a peer that
 * repeats the same request.
 */
static void reject(struct tcp_conn *c, const char *what)
{
    struct eng_ctx *eng = conn_eng(c);
    uint64_t now = eng_now_ns();

    atomic_fetch_add(&eng->st.peer_rejected, 1);
    if (c->rej_type == c->rf.type && c->rej_addr == c->rf.req_addr && c->rej_len == c->rf.req_len &&
        now - c->rej_at < 1000000000ull)
        return;
    c->rej_type = c->rf.type;
    c->rej_addr = c->rf.req_addr;
    c->rej_len = c->rf.req_len;
    c->rej_at = now;
    eng_warn(eng, "peer %s: %s [0x%llx, +%llu) outside remote-accessible registrations: rejected",
             c->pname, what, (unsigned long long)c->rf.req_addr, (unsigned long long)c->rf.req_len);
}

/* The next len bytes are a handshake payload, read whole into c->ctrl. */
static int start_ctrl(struct tcp_conn *c, uint32_t len)
{
    c->ctrl = malloc(len);
    if (!c->ctrl)
        return -ENOMEM;
    c->ctrl_got = 0;
    c->rleft = len;
    c->rstage = R_CTRL;
    return 0;
}

static int target_header(struct tcp_conn *c)
{
    struct eng_frame *f = &c->rf;
    struct eng_region *reg;

    /* the listener answered HELLO before the connection was ours */
    switch (f->type) {
    case ENG_F_WRITE:
        reg = eng_region_get(conn_eng(c), f->req_addr, f->req_len);
        c->rleft = f->len;
        if (!reg) {
            reject(c, "write");
            c->rstatus = -EFAULT;
            c->rstage = R_DISCARD;
            return 0;
        }
        c->rreg = reg;
        c->rdst = (char *)(uintptr_t)f->addr;
        c->rstatus = 0;
        c->rstage = R_PAYLOAD;
        if (reg->cuda_dev >= 0) {
            /* device memory: received into a staging buffer, copied after */
            c->rstaging = conn_stage_take(c, f->len);
            c->rdst = c->rstaging;
            if (!c->rstaging) {
                eng_err(conn_eng(c), "peer %s: no memory to stage %llu bytes of cuda:%d", c->pname,
                        (unsigned long long)f->len, reg->cuda_dev);
                c->rstatus = -ENOMEM;
                c->rstage = R_DISCARD;
            }
        }
        return 0;
    case ENG_F_READ:
        reg = eng_region_get(conn_eng(c), f->req_addr, f->req_len);
        if (!reg)
            reject(c, "read");
        else if (reg->cuda_dev >= 0)
            return serve_device(c, ENG_F_READ_RESP, f, reg, NULL);
        return send_answer(c, ENG_F_READ_RESP, f, reg ? 0 : -EFAULT, reg, NULL, 0);
    default:
        return -EBADMSG;
    }
}

/* ---- initiator side ---------------------------------------------------- */

static struct tcp_slice *pop_answered(struct tcp_conn *c, uint8_t op)
{
    struct tcp_slice *s;
    pthread_mutex_lock(&c->send_lock);
    s = c->iq;
    if (s && s->seq == c->rf.id && s->op == op && s->xfer == c->rf.len && s->raddr == c->rf.addr) {
        c->iq = s->next;
        if (!c->iq)
            c->iq_tail = NULL;
        s->next = NULL;
    } else {
        s = NULL;
    }
    pthread_mutex_unlock(&c->send_lock);
    return s;
}

static int initiator_header(struct tcp_conn *c)
{
    struct eng_frame *f = &c->rf;
    struct tcp_slice *s;

    if (atomic_load(&c->state) == C_HANDSHAKE) {
        if (f->type != ENG_F_HELLO_ACK || f->status)
            return -EBADMSG;
        return start_ctrl(c, f->payload_len);
    }
    switch (f->type) {
    case ENG_F_WRITE_ACK:
        s = pop_answered(c, TESHIM_OP_WRITE);
        if (!s)
            return -EBADMSG;
        c->t_used = eng_now_ns();
        slice_finish(s, f->status);
        return 0;
    case ENG_F_READ_RESP:
        s = pop_answered(c, TESHIM_OP_READ);
        if (!s)
            return -EBADMSG;
        c->t_used = eng_now_ns();
        if (f->status) {
            slice_finish(s, f->status);
            return 0;
        }
        c->rslice = s;
        c->rdst = s->data;
        c->rleft = s->xfer;
        c->rstage = R_PAYLOAD;
        return 0;
    default:
        return -EBADMSG;
    }
}

static int initiator_hello_ack(struct tcp_conn *c)
{
    struct eng_ctx *eng = conn_eng(c);
    struct eng_hello h;
    int ret = eng_hello_parse(c->ctrl, c->rf.payload_len, &h, NULL, 0);

    free(c->ctrl);
    c->ctrl = NULL;
    if (ret)
        return ret;
    if (h.pid != c->peer->pid)
        eng_info(eng, "peer %s: restarted (pid %u, was %u)", c->pname, h.pid, c->peer->pid);
    pthread_mutex_lock(&c->lock);
    atomic_store(&c->state, C_READY);
    c->attempts = 0;
    c->t_used = eng_now_ns();
    atomic_fetch_add(&eng->st.conn_new, 1);
    atomic_fetch_add(&eng->st.connections, 1);
    if (c->peer->serial) {
        /* what was queued while connecting goes out with the peer's sender */
        pthread_mutex_unlock(&c->lock);
        peer_send(c->peer, NULL);
        return 0;
    }
    ret = conn_flush(c);
    pthread_mutex_unlock(&c->lock);
    return ret;
}

/* ---- receiving --------------------------------------------------------- */

static int on_header(struct tcp_conn *c)
{
    int ret = eng_frame_parse(c->rhdr, ENG_FRAME_BYTES, &c->rf);
    c->rgot = 0;
    if (ret) {
        eng_warn(conn_eng(c), "peer %s: %s frame, closing the connection", c->pname,
                 ret == -EPROTO ? "wrong magic or protocol version in a" : "malformed");
        atomic_fetch_add(&conn_eng(c)->st.peer_rejected, 1);
        return ret;
    }
    ret = c->peer ? initiator_header(c) : target_header(c);
    if (ret == -EBADMSG) {
        eng_warn(conn_eng(c), "peer %s: unexpected frame type %u, closing the connection", c->pname,
                 c->rf.type);
        atomic_fetch_add(&conn_eng(c)->st.peer_rejected, 1);
    }
    return ret;
}

static int on_body_done(struct tcp_conn *c)
{
    int stage = c->rstage;
    c->rstage = R_HDR;
    if (stage == R_CTRL)
        return initiator_hello_ack(c);
    if (c->peer) {
        struct tcp_slice *s = c->rslice;
        c->rslice = NULL;
        slice_finish(s, 0);
        return 0;
    }
    if (c->rstaging) {
        struct eng_region *reg = c->rreg;
        void *buf = c->rstaging;
        c->rreg = NULL;
        c->rstaging = NULL;
        return serve_device(c, ENG_F_WRITE_ACK, &c->rf, reg, buf);
    }
    eng_region_put(c->rreg);
    c->rreg = NULL;
    return send_answer(c, ENG_F_WRITE_ACK, &c->rf, c->rstatus, NULL, NULL, 0);
}

/* Read what is there; 0 when drained, -errno to reset the connection. */
/*
 * Initiator: answers to WRITEs are bare headers, so when k of them lead
 * the outstanding queue they are read in one call of exactly k headers
 * (never a byte of a READ answer's payload, which goes to user memory).
 * Returns 1 when it read, 0 when the head is not such a run (or *done:
 * nothing to read), -errno to reset the connection.
 */
static int read_acks(struct tcp_conn *c, bool *done)
{
    uint8_t buf[32 * ENG_FRAME_BYTES];
    size_t k = 0;

    *done = false;
    pthread_mutex_lock(&c->send_lock);
    for (struct tcp_slice *s = c->iq; s && k < 32 && s->op == TESHIM_OP_WRITE; s = s->next)
        k++;
    pthread_mutex_unlock(&c->send_lock);
    if (k < 2)
        return 0;
    ssize_t n = recv(c->fd, buf, k * ENG_FRAME_BYTES, MSG_DONTWAIT);
    if (n < 0)
        return errno == EAGAIN ? (*done = true, 0) : -errno;
    if (n == 0)
        return -ECONNRESET;
    *done = (size_t)n < k * ENG_FRAME_BYTES;
    for (size_t off = 0; off < (size_t)n;) {
        size_t m = (size_t)n - off < ENG_FRAME_BYTES ? (size_t)n - off : ENG_FRAME_BYTES;
        memcpy(c->rhdr, buf + off, m);
        c->rgot = m;
        off += m;
        if (m == ENG_FRAME_BYTES) {
            int ret = on_header(c);
            if (ret)
                return ret;
        }
    }
    return 1;
}

static int conn_read(struct tcp_conn *c)
{
    for (int loops = 0; loops < 32; loops++) {
        struct iovec iov[2];
        int k = 1;
        if (c->peer && c->rstage == R_HDR && !c->rgot && atomic_load(&c->state) == C_READY) {
            bool done;
            int ret = read_acks(c, &done);
            if (ret < 0 || done)
                return ret < 0 ? ret : 0;
            if (ret)
                continue;
        }
        switch (c->rstage) {
        case R_HDR:
            iov[0].iov_base = c->rhdr + c->rgot;
            iov[0].iov_len = ENG_FRAME_BYTES - c->rgot;
            break;
        case R_PAYLOAD:
            /* read the next header in the same call */
            iov[0].iov_base = c->rdst;
            iov[0].iov_len = c->rleft;
            iov[1].iov_base = c->rhdr;
            iov[1].iov_len = ENG_FRAME_BYTES;
            k = 2;
            break;
        case R_DISCARD:
            iov[0].iov_base = c->w->scratch;
            iov[0].iov_len = c->rleft < SCRATCH_BYTES ? c->rleft : SCRATCH_BYTES;
            break;
        default:
            iov[0].iov_base = c->ctrl + c->ctrl_got;
            iov[0].iov_len = c->rleft;
            break;
        }
        size_t want = iov[0].iov_len + (k == 2 ? iov[1].iov_len : 0);
        ssize_t n = readv(c->fd, iov, k);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? 0 : -errno;
        }
        if (n == 0)
            return -ECONNRESET;
        size_t got = (size_t)n;
        int ret = 0;
        switch (c->rstage) {
        case R_HDR:
            c->rgot += got;
            if (c->rgot == ENG_FRAME_BYTES)
                ret = on_header(c);
            break;
        case R_PAYLOAD: {
            size_t m = got < c->rleft ? got : c->rleft;
            c->rdst += m;
            c->rleft -= m;
            if (!c->rleft) {
                c->rgot = got - m;
                ret = on_body_done(c);
                if (!ret && c->rgot == ENG_FRAME_BYTES)
                    ret = on_header(c);
            }
            break;
        }
        case R_DISCARD:
            c->rleft -= got;
            if (!c->rleft)
                ret = on_body_done(c);
            break;
        default:
            c->ctrl_got += got;
            c->rleft -= got;
            if (!c->rleft)
                ret = on_body_done(c);
            break;
        }
        if (ret)
            return ret;
        if (got < want)
            return 0;
    }
    return 0;
}

/* ---- connection establishment ------------------------------------------ */

static void connect_failed(struct tcp_conn *c, int err)
{
    struct eng_ctx *eng = conn_eng(c);
    uint64_t now = eng_now_ns();

    if (c->fd >= 0) {
        epoll_ctl(c->w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        pthread_mutex_lock(&c->lock);
        close(c->fd);
        c->fd = -1;
        pthread_mutex_unlock(&c->lock);
        atomic_fetch_sub(&c->w->tp->nout, 1);
    }
    c->attempts++;
    uint64_t wait = (uint64_t)eng_backoff_ms(eng->p.connect_backoff_ms,
                                             eng->p.connect_backoff_max_ms, c->attempts) *
                    1000000ull;
    if (c->attempts >= eng->p.connect_attempts ||
        now + wait - c->t_first > (uint64_t)eng->p.connect_timeout_ms * 1000000ull) {
        eng_err(eng, "peer %s: connection failed after %d attempts: %s", c->pname, c->attempts,
                strerror(-err));
        conn_reset(c, err);
        return;
    }
    atomic_fetch_add(&eng->st.conn_retries, 1);
    eng_dbg(eng, "peer %s: connect attempt %d: %s", c->pname, c->attempts, strerror(-err));
    c->t_next = now + wait;
}

static void conn_connect(struct tcp_conn *c)
{
    struct eng_ctx *eng = conn_eng(c);
    struct tcp_peer *p = c->peer;
    struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
    int fd, err;

    c->t_next = UINT64_MAX;
    if (atomic_load(&c->w->tp->nout) >= eng->p.max_conns) {
        connect_failed(c, -EMFILE);
        return;
    }
    fd = socket(p->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        connect_failed(c, -errno);
        return;
    }
    atomic_fetch_add(&c->w->tp->nout, 1);
    sock_opts(eng, fd);
    if (connect(fd, (struct sockaddr *)&p->sa, p->salen) && errno != EINPROGRESS) {
        err = -errno;
        goto err_close;
    }
    if (epoll_ctl(c->w->epfd, EPOLL_CTL_ADD, fd, &e)) {
        err = -errno;
        goto err_close;
    }
    pthread_mutex_lock(&c->lock);
    c->fd = fd;
    pthread_mutex_unlock(&c->lock);
    return;

err_close:
    close(fd);
    atomic_fetch_sub(&c->w->tp->nout, 1);
    connect_failed(c, err);
}

/* The socket of a CONNECTING connection became writable. */
static void conn_connected(struct tcp_conn *c)
{
    struct eng_ctx *eng = conn_eng(c);
    uint8_t buf[ENG_FRAME_BYTES + ENG_HELLO_BYTES];
    struct eng_frame f = {.type = ENG_F_HELLO, .payload_len = ENG_HELLO_BYTES};
    struct eng_hello self;
    int err = 0;
    socklen_t el = sizeof(err);

    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) {
        connect_failed(c, -err);
        return;
    }
    eng_frame_encode(&f, buf);
    eng_hello_self(eng, &self);
    eng_hello_encode(&self, NULL, 0, buf + ENG_FRAME_BYTES);
    /* a fresh socket takes 144 bytes at once */
    if (send(c->fd, buf, sizeof(buf), MSG_NOSIGNAL) != (ssize_t)sizeof(buf)) {
        connect_failed(c, -errno);
        return;
    }
    atomic_store(&c->state, C_HANDSHAKE);
    epoll_set(c, EPOLLIN);
}

/* ---- worker loop ------------------------------------------------------- */

static void conn_event(struct tcp_conn *c, uint32_t ev)
{
    int st = atomic_load(&c->state);
    int ret = 0;

    if (c->fd < 0 || c->dead)
        return;
    if (st == C_CONNECTING) {
        if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            conn_connected(c);
        return;
    }
    if (ev & EPOLLIN) {
        c->in_read = !c->peer;
        ret = conn_read(c);
        c->in_read = false;
        if (!ret && !c->peer) {
            pthread_mutex_lock(&c->lock);
            c->deferred = 0;
            ret = conn_flush(c);
            pthread_mutex_unlock(&c->lock);
        }
    }
    if (!ret && (ev & EPOLLOUT)) {
        if (c->peer && c->peer->serial) {
            peer_send(c->peer, c);
        } else {
            pthread_mutex_lock(&c->lock);
            ret = conn_flush(c);
            pthread_mutex_unlock(&c->lock);
        }
    }
    if (!ret && (ev & (EPOLLERR | EPOLLHUP)) && !(ev & EPOLLIN))
        ret = -ECONNRESET;
    if (ret) {
        /* a failure of ours (no memory) is an error; the peer's doing is not */
        if (ret == -ENOMEM)
            eng_err(conn_eng(c), "peer %s: closing the connection: %s", c->pname, strerror(-ret));
        else if (ret != -ECONNRESET || c->peer)
            eng_dbg(conn_eng(c), "peer %s: connection closed: %s", c->pname, strerror(-ret));
        conn_reset(c, ret == -EBADMSG || ret == -EPROTO ? -EPROTO : -ECONNRESET);
    }
}

static void peer_unref(struct tcp_peer *p)
{
    if (atomic_fetch_sub(&p->refs, 1) == 1) {
        for (int i = 0; i < p->n; i++)
            conn_locks_destroy(&p->conns[i]);
        free(p);
    }
}

static void run_cmds(struct tcp_worker *w)
{
    /* one connection at a time off the list, under the lock: a connection
     * posted again meanwhile is linked anew (its cnext rewritten), so a
     * detached list would be walked into the new one and a connection
     * closed twice (found by check_engine_inject under TSan) */
    for (;;) {
        pthread_mutex_lock(&w->cmd_lock);
        struct tcp_conn *c = w->cmds;
        int cmds = 0;
        if (c) {
            w->cmds = c->cnext;
            c->queued = false;
            cmds = c->cmds;
            c->cmds = 0;
        }
        pthread_mutex_unlock(&w->cmd_lock);
        if (!c)
            break;
        if (cmds & CMD_ADOPT) {
            struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
            if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, c->fd, &e)) {
                eng_err(w->tp->base.eng, "peer %s: epoll: %m; closing the connection", c->pname);
                close(c->fd);
                conn_free(c);
                continue;
            }
        }
        if (cmds & (CMD_ADD | CMD_ADOPT)) {
            c->wnext = w->conns;
            c->wprev = NULL;
            if (w->conns)
                w->conns->wprev = c;
            w->conns = c;
        }
        if ((cmds & CMD_KICK) && atomic_load(&c->state) == C_CONNECTING && c->fd < 0)
            conn_connect(c);
        if (cmds & CMD_CLOSE) {
            conn_reset(c, -ECANCELED);
            if (c->wprev)
                c->wprev->wnext = c->wnext;
            else
                w->conns = c->wnext;
            if (c->wnext)
                c->wnext->wprev = c->wprev;
            peer_unref(c->peer);
        }
    }
}

static void tick(struct tcp_worker *w, uint64_t now)
{
    struct eng_ctx *eng = w->tp->base.eng;
    uint64_t req_to = (uint64_t)eng->p.request_timeout_ms * 1000000ull;
    uint64_t conn_to = (uint64_t)eng->p.connect_timeout_ms * 1000000ull;
    uint64_t idle_to = (uint64_t)eng->p.idle_timeout_ms * 1000000ull;

    eng_limiter_expire(eng, now);
    for (struct tcp_conn *c = w->conns, *next; c; c = next) {
        next = c->wnext;
        if (!c->peer)
            continue;
        int st = atomic_load(&c->state);
        if (st == C_CONNECTING && c->fd < 0 && now >= c->t_next) {
            conn_connect(c);
        } else if ((st == C_CONNECTING || st == C_HANDSHAKE) && c->fd >= 0 &&
                   now - c->t_first > conn_to) {
            connect_failed(c, -ETIMEDOUT);
        } else if (st == C_READY) {
            pthread_mutex_lock(&c->send_lock);
            pthread_mutex_lock(&c->lock);
            struct tcp_slice *head = c->iq ? c->iq : c->sq;
            bool busy = head || c->rslice;
            /* a slice queued while this tick waited for the locks is
             * younger than now */
            bool late = head && now > head->t_start && now - head->t_start > req_to;
            pthread_mutex_unlock(&c->lock);
            pthread_mutex_unlock(&c->send_lock);
            if (late) {
                eng_err(eng, "peer %s: request unanswered for %d ms, resetting the connection",
                        c->pname, eng->p.request_timeout_ms);
                conn_reset(c, -ETIMEDOUT);
            } else if (!busy && idle_to && now - c->t_used > idle_to) {
                eng_dbg(eng, "peer %s: idle connection closed", c->pname);
                atomic_fetch_add(&eng->st.conn_closed_idle, 1);
                conn_reset(c, 0);
            }
        }
    }
}

/* Free the dead accepted connections no device copy refers to any more. */
static void graveyard_sweep(struct tcp_worker *w)
{
    for (struct tcp_conn **cp = &w->graveyard; *cp;) {
        struct tcp_conn *c = *cp;
        if (atomic_load(&c->refs)) {
            cp = &c->wnext;
            continue;
        }
        *cp = c->wnext;
        conn_free(c);
    }
}

static void *worker_main(void *arg)
{
    struct tcp_worker *w = arg;
    struct epoll_event ev[64];

    while (!atomic_load(&w->tp->stop)) {
        int n = epoll_wait(w->epfd, ev, 64, 20);
        bool cmds = false;
        for (int i = 0; i < n; i++) {
            void *p = ev[i].data.ptr;
            if (p == &w->evfd) {
                uint64_t v;
                if (read(w->evfd, &v, sizeof(v)) < 0)
                    v = 0;
                cmds = true;
            } else {
                conn_event(p, ev[i].events);
            }
        }
        /* commands and timers after the batch: they may close sockets
         * that still have events in it */
        if (cmds)
            run_cmds(w);
        uint64_t now = eng_now_ns();
        if (now >= w->next_tick) {
            tick(w, now);
            w->next_tick = now + TICK_NS;
        }
        graveyard_sweep(w);
    }
    return NULL;
}

/* ---- transport operations ---------------------------------------------- */

/* Connections a teshim_submit on this thread queued to and will flush
 * once at its end, so a batch leaves in few sendmsg calls. */
#define PLUG_MAX 16
static __thread struct {
    bool on;
    int n;
    struct tcp_conn *c[PLUG_MAX];
} plug;

static void tcp_submit_begin(struct eng_transport *base)
{
    plug.on = true;
    plug.n = 0;
}

static void tcp_submit_end(struct eng_transport *base)
{
    plug.on = false;
    for (int i = 0; i < plug.n; i++) {
        struct tcp_conn *c = plug.c[i];
        if (c->peer->serial) {
            /* once per peer: its later connections in the plug are the same */
            bool seen = false;
            for (int k = 0; k < i && !seen; k++)
                seen = plug.c[k]->peer == c->peer;
            if (!seen)
                peer_send(c->peer, NULL);
            continue;
        }
        pthread_mutex_lock(&c->lock);
        if (atomic_load(&c->state) == C_READY && !c->want_out && conn_flush(c))
            shutdown(c->fd, SHUT_RDWR); /* the worker sees the hang-up and resets */
        pthread_mutex_unlock(&c->lock);
    }
    plug.n = 0;
}

/* true if c is (now) in the plug; false if it is off or full */
static bool plug_add(struct tcp_conn *c)
{
    if (!plug.on)
        return false;
    for (int i = 0; i < plug.n; i++)
        if (plug.c[i] == c)
            return true;
    if (plug.n == PLUG_MAX)
        return false;
    plug.c[plug.n++] = c;
    return true;
}

static struct tcp_conn *pick_conn(struct tcp_peer *p)
{
    unsigned i = atomic_fetch_add(&p->rr, 1);
    struct tcp_conn *c = &p->conns[i % (unsigned)p->n];
    if (atomic_load(&c->state) == C_READY)
        return c;
    for (int k = 1; k < p->n; k++) {
        struct tcp_conn *o = &p->conns[(i + (unsigned)k) % (unsigned)p->n];
        if (atomic_load(&o->state) == C_READY)
            return o;
    }
    return c;
}

static void tcp_start(struct eng_transport *base, struct eng_task *t)
{
    struct tcp_tp *tp = (struct tcp_tp *)base;
    struct eng_ctx *eng = base->eng;
    struct tcp_peer *p = t->seg->tp_priv;
    uint64_t sl = eng->p.slice_bytes;
    unsigned n = (unsigned)((t->len + sl - 1) / sl);
    struct tcp_block *b;
    uint64_t now = eng_now_ns();

    if (atomic_load(&tp->stop)) {
        eng_task_set_slices(t, 1);
        eng_task_slice_done(t, 0, -ECANCELED);
        return;
    }
    b = malloc(sizeof(*b) + n * sizeof(struct tcp_slice));
    if (!b) {
        eng_err(eng, "tcp: no memory for %u slices", n);
        eng_task_set_slices(t, 1);
        eng_task_slice_done(t, 0, -ENOMEM);
        return;
    }
    atomic_store(&b->left, n);
    eng_task_set_slices(t, n);
    for (unsigned i = 0; i < n; i++) {
        struct tcp_slice *s = &b->s[i];
        uint64_t off = (uint64_t)i * sl;
        uint32_t len = (uint32_t)(t->len - off < sl ? t->len - off : sl);
        struct tcp_conn *c = pick_conn(p);
        struct eng_frame f = {.type = t->op == TESHIM_OP_READ ? ENG_F_READ : ENG_F_WRITE,
                              .addr = t->raddr + off,
                              .len = len,
                              .req_addr = t->raddr,
                              .req_len = t->len};
        int ret = 0;

        memset(s, 0, sizeof(*s));
        s->task = t;
        s->block = b;
        s->data = t->local + off;
        s->xfer = len;
        s->raddr = f.addr;
        s->op = (uint8_t)t->op;
        s->t_start = now;
        if (t->op == TESHIM_OP_WRITE)
            s->len = f.payload_len = len;
        pthread_mutex_lock(&c->lock);
        s->seq = f.id = ++c->seq;
        eng_frame_encode(&f, s->hdr);
        bool backlog = c->sq != NULL;
        conn_enqueue_locked(c, s);
        int st = atomic_load(&c->state);
        if (st == C_IDLE) {
            c->attempts = 0;
            c->t_first = c->t_next = now;
            atomic_store(&c->state, C_CONNECTING); /* publishes the fields above */
            pthread_mutex_unlock(&c->lock);
            post_cmd(c, CMD_KICK);
            continue;
        }
        if (st == C_READY) {
            atomic_fetch_add(&eng->st.conn_reuse, 1);
            if (p->serial) {
                /* the plug's end, or now, hands it to peer_send */
                pthread_mutex_unlock(&c->lock);
                if (!plug_add(c))
                    peer_send(p, NULL);
                continue;
            }
            /* send from this thread only when nothing is queued: with a
             * backlog the worker is already draining it on EPOLLOUT, and
             * submit returns instead of pushing the whole batch itself */
            ret = backlog || plug_add(c) ? 0 : conn_flush(c);
            if (ret)
                shutdown(c->fd, SHUT_RDWR); /* the worker sees the hang-up and resets */
        }
        pthread_mutex_unlock(&c->lock);
    }
}

static int tcp_seg_open(struct eng_transport *base, struct eng_segment *seg)
{
    struct tcp_tp *tp = (struct tcp_tp *)base;
    struct eng_ctx *eng = base->eng;
    int n = eng->p.conns_per_peer;
    struct tcp_peer *p = calloc(1, sizeof(*p) + (size_t)n * sizeof(struct tcp_conn));

    if (!p) {
        eng_err(eng, "segment %s: no memory for %d connections", seg->name, n);
        return -ENOMEM;
    }
    memcpy(&p->sa, &seg->sa, sizeof(p->sa));
    p->salen = seg->salen;
    p->pid = seg->hello.pid;
    p->serial = eng->p.same_host_send == ENG_SAME_HOST_SERIAL &&
                !memcmp(seg->hello.boot_id, eng->boot_id, sizeof(eng->boot_id));
    p->n = n;
    atomic_store(&p->refs, n);
    uint64_t now = eng_now_ns();
    for (int i = 0; i < n; i++) {
        struct tcp_conn *c = &p->conns[i];
        c->peer = p;
        c->fd = -1;
        c->w = &tp->w[atomic_fetch_add(&tp->rr, 1) % (unsigned)tp->nworkers];
        conn_locks_init(c);
        snprintf(c->pname, sizeof(c->pname), "%.50s#%d", seg->name, i);
        /* connect eagerly: the first request does not wait for it */
        atomic_store(&c->state, C_CONNECTING);
        c->t_first = c->t_next = now;
    }
    seg->tp_priv = p;
    pthread_mutex_lock(&tp->peers_lock);
    p->next = tp->peers;
    tp->peers = p;
    pthread_mutex_unlock(&tp->peers_lock);
    for (int i = 0; i < n; i++)
        post_cmd(&p->conns[i], CMD_ADD | CMD_KICK);
    return 0;
}

static void tcp_seg_close(struct eng_transport *base, struct eng_segment *seg)
{
    struct tcp_tp *tp = (struct tcp_tp *)base;
    struct tcp_peer *p = seg->tp_priv;

    pthread_mutex_lock(&tp->peers_lock);
    for (struct tcp_peer **pp = &tp->peers; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    pthread_mutex_unlock(&tp->peers_lock);
    /* the worker of the last connection closed frees p: read n first */
    int n = p->n;
    for (int i = 0; i < n; i++)
        post_cmd(&p->conns[i], CMD_CLOSE);
}

static void tcp_destroy(struct eng_transport *base)
{
    struct tcp_tp *tp = (struct tcp_tp *)base;

    atomic_store(&tp->stop, true);
    for (int i = 0; i < tp->nworkers; i++) {
        if (tp->w[i].th) {
            worker_wake(&tp->w[i]);
            pthread_join(tp->w[i].th, NULL);
        }
    }
    /* device copies of served requests end before their connections go */
    eng_dev_quiesce(base->eng);
    for (int i = 0; i < tp->nworkers; i++) {
        struct tcp_worker *w = &tp->w[i];
        if (w->epfd < 0)
            continue;
        run_cmds(w);
        for (struct tcp_conn *c = w->conns, *next; c; c = next) {
            next = c->wnext;
            conn_reset(c, -ECANCELED);
        }
        graveyard_sweep(w);
    }
    while (tp->peers) {
        struct tcp_peer *p = tp->peers;
        tp->peers = p->next;
        for (int i = 0; i < p->n; i++)
            conn_locks_destroy(&p->conns[i]);
        free(p);
    }
    for (int i = 0; i < tp->nworkers; i++) {
        struct tcp_worker *w = &tp->w[i];
        if (w->evfd >= 0)
            close(w->evfd);
        if (w->epfd >= 0)
            close(w->epfd);
        pthread_mutex_destroy(&w->cmd_lock);
        free(w->scratch);
    }
    pthread_mutex_destroy(&tp->peers_lock);
    free(tp->w);
    free(tp);
}

/* A connection the listener answered the handshake of: a worker's now. */
static int tcp_adopt(struct eng_transport *base, int fd, const char *pname)
{
    struct tcp_tp *tp = (struct tcp_tp *)base;
    struct tcp_conn *c;

    if (atomic_load(&tp->stop))
        return -ECANCELED;
    c = calloc(1, sizeof(*c));
    if (!c) {
        eng_err(base->eng, "peer %s: no memory for the connection", pname);
        return -ENOMEM;
    }
    c->fd = fd;
    c->w = &tp->w[atomic_fetch_add(&tp->rr, 1) % (unsigned)tp->nworkers];
    conn_locks_init(c);
    pthread_mutex_init(&c->stage_lock, NULL);
    atomic_store(&c->state, C_READY);
    snprintf(c->pname, sizeof(c->pname), "%s", pname);
    sock_opts(base->eng, fd);
    post_cmd(c, CMD_ADOPT);
    return 0;
}

static const struct eng_transport_ops tcp_ops = {
    .size = sizeof(struct eng_transport_ops),
    .name = "tcp",
    .seg_open = tcp_seg_open,
    .seg_close = tcp_seg_close,
    .start = tcp_start,
    .destroy = tcp_destroy,
    .submit_begin = tcp_submit_begin,
    .submit_end = tcp_submit_end,
    .adopt = tcp_adopt,
};

int eng_tcp_create(struct eng_ctx *eng, struct eng_transport **tp_p)
{
    struct tcp_tp *tp = calloc(1, sizeof(*tp));
    int ret = 0;

    if (!tp) {
        eng_err(eng, "engine_create: no memory for the tcp transport");
        return -ENOMEM;
    }
    eng_transport_init(&tp->base, eng, &tcp_ops);
    pthread_mutex_init(&tp->peers_lock, NULL);
    tp->nworkers = eng->p.io_threads;
    tp->w = calloc((size_t)tp->nworkers, sizeof(*tp->w));
    if (!tp->w) {
        eng_err(eng, "engine_create: no memory for %d I/O threads", tp->nworkers);
        pthread_mutex_destroy(&tp->peers_lock);
        free(tp);
        return -ENOMEM;
    }
    for (int i = 0; i < tp->nworkers; i++) {
        tp->w[i].epfd = tp->w[i].evfd = -1;
        pthread_mutex_init(&tp->w[i].cmd_lock, NULL);
    }
    for (int i = 0; i < tp->nworkers; i++) {
        struct tcp_worker *w = &tp->w[i];
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = &w->evfd};
        w->tp = tp;
        w->scratch = malloc(SCRATCH_BYTES);
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        w->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (!w->scratch || w->epfd < 0 || w->evfd < 0 ||
            epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->evfd, &e)) {
            ret = w->scratch ? -errno : -ENOMEM;
            eng_err(eng, "engine_create: I/O thread %d: %s", i, strerror(-ret));
            goto err_destroy;
        }
    }
    for (int i = 0; i < tp->nworkers; i++) {
        ret = -pthread_create(&tp->w[i].th, NULL, worker_main, &tp->w[i]);
        if (ret) {
            eng_err(eng, "engine_create: I/O thread: %s", strerror(-ret));
            goto err_destroy;
        }
    }
    *tp_p = &tp->base;
    return 0;

err_destroy:
    tcp_destroy(&tp->base);
    return ret;
}
