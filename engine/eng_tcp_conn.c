/*
 * tcp: a connection. Its locks and staging buffers, completion of its
 * slices, the combining send (conn_flush) and the serial peer's sender,
 * reset, and connection setup with backoff (initiator side). The locking
 * rules are atop eng_tcp_int.h.
 */
#include "eng_tcp_int.h"

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

void tcp_conn_locks_init(struct tcp_conn *c)
{
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->send_lock, NULL);
    pthread_mutex_init(&c->rx_lock, NULL);
    pthread_cond_init(&c->acct, NULL);
}

void tcp_conn_locks_destroy(struct tcp_conn *c)
{
    pthread_cond_destroy(&c->acct);
    pthread_mutex_destroy(&c->rx_lock);
    pthread_mutex_destroy(&c->send_lock);
    pthread_mutex_destroy(&c->lock);
}

void tcp_worker_wake(struct tcp_worker *w)
{
    uint64_t one = 1;
    if (write(w->evfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        eng_err(w->tp->base.eng, "tcp: eventfd write: %m");
}

void tcp_post_cmd(struct tcp_conn *c, int cmd)
{
    struct tcp_worker *w = c->w;
    bool wake;
    pthread_mutex_lock(&w->cmd_lock);
    c->cmds |= cmd;
    /* still queued: the worker was woken for it and has not taken it off
     * the list yet (it reads c->cmds when it does, under cmd_lock) */
    wake = !c->queued;
    if (!c->queued) {
        c->queued = true;
        c->cnext = w->cmds;
        w->cmds = c;
    }
    pthread_mutex_unlock(&w->cmd_lock);
    if (wake)
        tcp_worker_wake(w);
}

void tcp_sock_opts(struct eng_ctx *eng, int fd)
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

/* What the worker's epoll watches c for: input unless a waiter reads it
 * or the peer has too many answers unread (backpressure), room to send
 * when the socket was full. c->lock held. */
void tcp_conn_watch(struct tcp_conn *c)
{
    if (c->fd >= 0)
        epoll_set(c, (c->rx_waiter || c->rpaused ? 0u : (uint32_t)EPOLLIN) |
                         (c->want_out ? (uint32_t)EPOLLOUT : 0u));
}

void *tcp_conn_stage_take(struct tcp_conn *c, uint64_t len)
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
    return p ? p : eng_stage_get(tcp_conn_eng(c), len);
}

void tcp_conn_stage_give(struct tcp_conn *c, void *p)
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
void tcp_conn_free(struct tcp_conn *c)
{
    for (int i = 0; i < c->nstages; i++)
        eng_stage_put(c->stages[i]);
    pthread_mutex_destroy(&c->stage_lock);
    tcp_conn_locks_destroy(c);
    free(c);
}

void tcp_slice_free(struct tcp_slice *s)
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
            tcp_conn_stage_give(s->conn, s->stage);
        free(s->owned);
        free(s);
    }
}

/* Finish an initiator slice (no lock held) or drop a target answer. */
void tcp_slice_finish(struct tcp_slice *s, int err)
{
    if (s->task) {
        atomic_fetch_sub(&s->conn->inflight, 1);
        eng_task_slice_done(s->task, err ? 0 : s->xfer, err);
    }
    tcp_slice_free(s);
}

static void finish_list(struct tcp_slice *s, int err)
{
    while (s) {
        struct tcp_slice *n = s->next;
        tcp_slice_finish(s, err);
        s = n;
    }
}

/*
 * Close the socket and fail everything queued or outstanding on it. An
 * outgoing connection goes back to IDLE (reconnected on demand); an
 * accepted one is freed after the current epoll batch. err 0 is an idle
 * close: it does nothing if a request came meanwhile. Worker only.
 */
void tcp_conn_reset(struct tcp_conn *c, int err)
{
    struct eng_ctx *eng = tcp_conn_eng(c);
    struct tcp_slice *sq, *iq, *rs;

    /* a waiter reading the socket (tcp_progress) leaves when it is shut
     * down; the receive side is then ours */
    if (pthread_mutex_trylock(&c->rx_lock)) {
        pthread_mutex_lock(&c->lock);
        if (c->fd >= 0)
            shutdown(c->fd, SHUT_RDWR);
        pthread_mutex_unlock(&c->lock);
        pthread_mutex_lock(&c->rx_lock);
    }
    rs = c->rslice;
    atomic_store(&c->rx_err, 0);
    /* a thread in sendmsg uses the fd and the queued slices: tell it to
     * stop after this call, and wait for it */
    pthread_mutex_lock(&c->lock);
    c->resetting = true;
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_lock(&c->send_lock);
    pthread_mutex_lock(&c->lock);
    c->resetting = false;
    if (!err && (c->sq || c->iq || rs)) {
        /* an idle close overtaken by a request: the connection stays, and
         * what a sender left when it saw resetting goes out */
        pthread_mutex_unlock(&c->send_lock);
        if (atomic_load(&c->state) == C_READY && tcp_conn_flush(c))
            shutdown(c->fd, SHUT_RDWR); /* the worker sees the hang-up and resets */
        pthread_mutex_unlock(&c->lock);
        pthread_mutex_unlock(&c->rx_lock);
        return;
    }
    sq = c->sq;
    iq = c->iq;
    c->sq = c->sq_tail = c->iq = c->iq_tail = NULL;
    c->q_n = 0;
    c->q_bytes = 0;
    c->rpaused = false;
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
        tcp_conn_stage_give(c, c->rstaging);
        c->rstaging = NULL;
    }
    free(c->ctrl);
    c->ctrl = NULL;
    c->rstage = R_HDR;
    c->rgot = 0;
    pthread_mutex_unlock(&c->rx_lock);
    if (rs)
        tcp_slice_finish(rs, err);
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

/* How many more answers (and *bytes more bytes) an accepted connection
 * may queue unsent before engine.serve.max_queued(_bytes) (paused: half of
 * them). Under c->lock. */
size_t tcp_conn_room(struct tcp_conn *c, uint64_t *bytes)
{
    const struct eng_params *p = &tcp_conn_eng(c)->p;
    int div = c->rpaused ? 2 : 1;
    int n = p->serve_max_queued / div;
    uint64_t b = p->serve_max_queued_bytes / div;

    *bytes = c->q_bytes < b ? b - c->q_bytes : 0;
    return c->q_n < n ? (size_t)(n - c->q_n) : 0;
}

/* Whether that room is used up. Under c->lock. */
bool tcp_conn_backlogged(struct tcp_conn *c)
{
    uint64_t bytes;

    return !tcp_conn_room(c, &bytes) || !bytes;
}

/*
 * Send what the socket takes; called and returns with c->lock held; 0 or
 * -errno. A combining send: the caller that finds the send side free
 * takes it (c->sending, then c->send_lock) and runs sendmsg with c->lock
 * released, looping until the queue is empty or the socket is full, so
 * submitting threads never sleep on c->lock across a copy. A caller that
 * finds it taken has only queued and returns at once: the owner sees its
 * slices (queued under c->lock) before it lets go. Slices move to iq
 * under c->lock after each sendmsg, and a reader waiting for them is
 * woken then (tcp_conn_pop_answered). With last set the owner stops once
 * that slice is sent whole (what others queued behind it stays in sq).
 */
int tcp_conn_flush_upto(struct tcp_conn *c, const struct tcp_slice *last)
{
    bool full = false, upto = false;
    int ret = 0;

    if (c->sending)
        return 0;
    c->sending = true;
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_lock(&c->send_lock);
    pthread_mutex_lock(&c->lock);
    /* the connection may have been reset while this thread waited */
    while (c->sq && !upto && !c->resetting && atomic_load(&c->state) == C_READY) {
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
            if (s == last)
                break;
        }
        if (!k)
            break;
        mh.msg_iovlen = (size_t)k;
        /* only the owner takes slices off sq, and tcp_conn_reset waits for
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
                tcp_conn_watch(c);
            }
            full = true;
            break;
        }
        if (n > 0)
            c->t_tx = eng_now_ns();
        while (n > 0) {
            struct tcp_slice *s = c->sq;
            size_t rem = ENG_FRAME_BYTES + s->len - s->sent;
            if ((size_t)n < rem) {
                s->sent += (size_t)n;
                break;
            }
            n -= (ssize_t)rem;
            upto = s == last;
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
                c->q_n--;
                c->q_bytes -= s->qlen;
                tcp_slice_free(s);
            }
        }
        if (c->acct_waiters)
            pthread_cond_broadcast(&c->acct);
    }
    /* nothing left, or only what waits for a device copy or a reset */
    bool rearm = false;
    if (!ret && !full && !upto && c->want_out) {
        c->want_out = false;
        rearm = true;
    }
    if (c->rpaused && !tcp_conn_backlogged(c)) {
        c->rpaused = false; /* the peer read enough: its requests again */
        rearm = true;
    }
    if (rearm)
        tcp_conn_watch(c);
    c->sending = false;
    if (c->acct_waiters)
        pthread_cond_broadcast(&c->acct);
    pthread_mutex_unlock(&c->send_lock);
    return ret;
}

/* Send what is queued on a ready connection that is not waiting for room
 * (EPOLLOUT sends it then); a failure shuts the socket down, and its
 * worker sees the hang-up and resets. Takes c->lock. */
void tcp_conn_push(struct tcp_conn *c)
{
    pthread_mutex_lock(&c->lock);
    if (atomic_load(&c->state) == C_READY && !c->want_out && tcp_conn_flush(c))
        shutdown(c->fd, SHUT_RDWR);
    pthread_mutex_unlock(&c->lock);
}

/*
 * The slice an answer (type op, id, addr, len) is for, taken off iq; NULL
 * if it is not the oldest outstanding one (a protocol error). Answers come
 * in order, so when iq is empty the slice is the one a sender's sendmsg
 * is taking right now: its answer came before the sender moved it to iq,
 * and this waits for that (one sendmsg at most).
 */
/* The answer type of a request frame type (a slice's is its hdr[5], the
 * type byte of eng_frame_encode's layout). */
static uint8_t answer_type(uint8_t req)
{
    return req == ENG_F_READ    ? ENG_F_READ_RESP
           : req == ENG_F_WRITE ? ENG_F_WRITE_ACK
                                : ENG_F_LOCAL_ACK;
}

struct tcp_slice *tcp_conn_pop_answered(struct tcp_conn *c, uint8_t answer, uint64_t id,
                                        uint64_t addr, uint64_t len)
{
    struct tcp_slice *s;

    pthread_mutex_lock(&c->lock);
    while (!c->iq && c->sending) {
        c->acct_waiters++;
        pthread_cond_wait(&c->acct, &c->lock);
        c->acct_waiters--;
    }
    s = c->iq;
    if (s && s->seq == id && answer_type(s->hdr[5]) == answer && s->xfer == len &&
        s->raddr == addr) {
        c->iq = s->next;
        if (!c->iq)
            c->iq_tail = NULL;
        s->next = NULL;
    } else {
        s = NULL;
    }
    pthread_mutex_unlock(&c->lock);
    return s;
}

void tcp_conn_enqueue_locked(struct tcp_conn *c, struct tcp_slice *s)
{
    s->next = NULL;
    if (!c->sq)
        c->t_tx = eng_now_ns(); /* a stall is timed from the first unsent answer */
    if (!s->task) {
        s->qlen = s->len;
        c->q_n++;
        c->q_bytes += s->qlen;
    }
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
void tcp_peer_send(struct tcp_peer *p, struct tcp_conn *out)
{
    if (out && atomic_load(&p->sending)) {
        pthread_mutex_lock(&out->lock);
        if (out->want_out) {
            out->want_out = false;
            tcp_conn_watch(out);
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
                if (c->sq && atomic_load(&c->state) == C_READY && tcp_conn_flush(c))
                    shutdown(c->fd, SHUT_RDWR); /* its worker sees the hang-up and resets */
                pthread_mutex_unlock(&c->lock);
            }
        }
        atomic_store(&p->sending, 0);
    }
}

/* The next len bytes are a handshake payload, read whole into c->ctrl. */
int tcp_start_ctrl(struct tcp_conn *c, uint32_t len)
{
    c->ctrl = malloc(len);
    if (!c->ctrl)
        return -ENOMEM;
    c->ctrl_got = 0;
    c->rleft = len;
    c->rstage = R_CTRL;
    return 0;
}

void tcp_connect_failed(struct tcp_conn *c, int err)
{
    struct eng_ctx *eng = tcp_conn_eng(c);
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
        tcp_conn_reset(c, err);
        return;
    }
    atomic_fetch_add(&eng->st.conn_retries, 1);
    eng_dbg(eng, "peer %s: connect attempt %d: %s", c->pname, c->attempts, strerror(-err));
    c->t_next = now + wait;
}

void tcp_conn_connect(struct tcp_conn *c)
{
    struct eng_ctx *eng = tcp_conn_eng(c);
    struct tcp_peer *p = c->peer;
    struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
    int fd, err;

    c->t_next = UINT64_MAX;
    if (atomic_load(&c->w->tp->nout) >= eng->p.max_conns) {
        tcp_connect_failed(c, -EMFILE);
        return;
    }
    fd = socket(p->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        tcp_connect_failed(c, -errno);
        return;
    }
    atomic_fetch_add(&c->w->tp->nout, 1);
    tcp_sock_opts(eng, fd);
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
    tcp_connect_failed(c, err);
}

/* The socket of a CONNECTING connection became writable. */
void tcp_conn_connected(struct tcp_conn *c)
{
    struct eng_ctx *eng = tcp_conn_eng(c);
    uint8_t buf[ENG_FRAME_BYTES + ENG_HELLO_BYTES];
    struct eng_frame f = {.type = ENG_F_HELLO, .payload_len = ENG_HELLO_BYTES};
    struct eng_hello self;
    int err = 0;
    socklen_t el = sizeof(err);

    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) {
        tcp_connect_failed(c, -err);
        return;
    }
    eng_frame_encode(&f, buf);
    eng_random(c->nonce, sizeof(c->nonce));
    c->authed = false;
    eng_hello_initiator(eng, c->nonce, &self);
    eng_hello_encode(&self, NULL, 0, buf + ENG_FRAME_BYTES);
    /* a fresh socket takes 200 bytes at once */
    if (send(c->fd, buf, sizeof(buf), MSG_NOSIGNAL) != (ssize_t)sizeof(buf)) {
        tcp_connect_failed(c, -errno);
        return;
    }
    atomic_store(&c->state, C_HANDSHAKE);
    epoll_set(c, EPOLLIN);
}

void tcp_peer_unref(struct tcp_peer *p)
{
    if (atomic_fetch_sub(&p->refs, 1) == 1) {
        for (int i = 0; i < p->n; i++)
            tcp_conn_locks_destroy(&p->conns[i]);
        free(p);
    }
}
