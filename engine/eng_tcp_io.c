/*
 * tcp: the I/O threads. Each runs an epoll loop over its connections:
 * reading frames (to the initiator or the target side), commands from
 * other threads, and a timer for connection retries and timeouts.
 */
#include "eng_tcp_int.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

static int on_header(struct tcp_conn *c)
{
    int ret = eng_frame_parse(c->rhdr, ENG_FRAME_BYTES, &c->rf);
    c->rgot = 0;
    if (ret) {
        eng_warn(tcp_conn_eng(c), "peer %s: %s frame, closing the connection", c->pname,
                 ret == -EPROTO ? "wrong magic or protocol version in a" : "malformed");
        atomic_fetch_add(&tcp_conn_eng(c)->st.peer_rejected, 1);
        return ret;
    }
    if (c->peer)
        ret = tcp_initiator_header(c);
    else if (c->rf.type == ENG_F_LOCAL_READ || c->rf.type == ENG_F_LOCAL_WRITE)
        ret = tcp_local_header(c);
    else
        ret = tcp_target_header(c);
    if (ret == -EBADMSG) {
        eng_warn(tcp_conn_eng(c), "peer %s: unexpected frame type %u, closing the connection",
                 c->pname, c->rf.type);
        atomic_fetch_add(&tcp_conn_eng(c)->st.peer_rejected, 1);
    }
    return ret;
}

static int on_body_done(struct tcp_conn *c)
{
    int stage = c->rstage;
    c->rstage = R_HDR;
    if (stage == R_CTRL)
        return tcp_initiator_ctrl(c);
    if (c->peer) {
        struct tcp_slice *s = c->rslice;
        c->rslice = NULL;
        tcp_slice_finish(s, 0);
        return 0;
    }
    if (c->rf.type == ENG_F_LOCAL_READ || c->rf.type == ENG_F_LOCAL_WRITE)
        return tcp_local_serve(c);
    if (c->rstaging) {
        struct eng_region *reg = c->rreg;
        void *buf = c->rstaging;
        c->rreg = NULL;
        c->rstaging = NULL;
        return tcp_serve_device(c, ENG_F_WRITE_ACK, &c->rf, reg, buf);
    }
    eng_region_put(c->rreg);
    c->rreg = NULL;
    return tcp_send_answer(c, ENG_F_WRITE_ACK, &c->rf, c->rstatus, NULL, NULL, 0);
}

/* n bytes of payload-less frames, read into buf in one call: each whole
 * header is handled in turn, a partial last one stays in c->rhdr for the
 * next read. 1, or on_header's error. */
static int take_headers(struct tcp_conn *c, const uint8_t *buf, size_t n)
{
    for (size_t off = 0; off < n;) {
        size_t m = n - off < ENG_FRAME_BYTES ? n - off : ENG_FRAME_BYTES;
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
    pthread_mutex_lock(&c->lock);
    for (struct tcp_slice *s = c->iq; s && k < 32 && s->op == TESHIM_OP_WRITE; s = s->next)
        k++;
    pthread_mutex_unlock(&c->lock);
    if (k < 2)
        return 0;
    ssize_t n = recv(c->fd, buf, k * ENG_FRAME_BYTES, MSG_DONTWAIT);
    if (n < 0)
        return errno == EAGAIN ? (*done = true, 0) : -errno;
    if (n == 0)
        return -ECONNRESET;
    *done = (size_t)n < k * ENG_FRAME_BYTES;
    return take_headers(c, buf, (size_t)n);
}

/*
 * Target: READ requests carry no payload, so a run of them is read in one
 * call instead of one readv per header. Looked at only after a READ (a
 * flood of reads comes in runs; a stream of writes is not peeked at): a
 * peek shows how many whole READ headers lead the socket, and a recv takes
 * exactly those, never a byte of a WRITE's payload (which goes straight to
 * registered memory), and no more than the answer queue has room for.
 * Returns 1 when it read, 0 when the head is not such a run (or *done:
 * nothing to read), -errno to reset the connection.
 */
static int read_requests(struct tcp_conn *c, bool *done)
{
    uint8_t buf[32 * ENG_FRAME_BYTES];
    uint64_t bytes_room, bytes = 0;
    size_t k, room;
    ssize_t n;

    *done = false;
    pthread_mutex_lock(&c->lock);
    room = tcp_conn_room(c, &bytes_room);
    pthread_mutex_unlock(&c->lock);
    if (room > 32)
        room = 32;
    if (room < 2)
        return 0;
    n = recv(c->fd, buf, room * ENG_FRAME_BYTES, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0)
        return errno == EAGAIN ? (*done = true, 0) : -errno;
    if (n == 0)
        return -ECONNRESET;
    for (k = 0; (k + 1) * ENG_FRAME_BYTES <= (size_t)n; k++) {
        struct eng_frame f;
        if (eng_frame_parse(buf + k * ENG_FRAME_BYTES, ENG_FRAME_BYTES, &f) ||
            f.type != ENG_F_READ || f.payload_len || (bytes += f.len) > bytes_room)
            break;
    }
    if (k < 2)
        return 0;
    /* only this thread reads the socket (rx_lock): what was peeked is there */
    n = recv(c->fd, buf, k * ENG_FRAME_BYTES, MSG_DONTWAIT);
    if (n < 0)
        return -errno;
    if (n == 0)
        return -ECONNRESET;
    c->t_rx = eng_now_ns();
    *done = (size_t)n < k * ENG_FRAME_BYTES;
    return take_headers(c, buf, (size_t)n);
}

/* Target: too many answers wait for the peer to read them. Send what the
 * socket takes; if still too many, stop reading its requests (the flush
 * that drains them reads again). True when paused. */
static bool target_backpressure(struct tcp_conn *c, int *ret)
{
    bool paused = false;

    pthread_mutex_lock(&c->lock);
    if (tcp_conn_backlogged(c)) {
        c->deferred = 0;
        *ret = tcp_conn_flush(c);
        if (!*ret && tcp_conn_backlogged(c)) {
            c->rpaused = paused = true;
            tcp_conn_watch(c);
        }
    }
    pthread_mutex_unlock(&c->lock);
    return paused || *ret;
}

/* Read what is there; 0 when drained, -errno to reset the connection. */
static int conn_read(struct tcp_conn *c)
{
    for (int loops = 0; loops < 32; loops++) {
        struct iovec iov[2];
        int k = 1, bp = 0;
        if (!c->peer && target_backpressure(c, &bp))
            return bp;
        /* the peer owes nothing more: no read to learn that the socket is
         * empty (what came unasked is read on the next call, and fails) */
        if (loops && c->peer && c->rstage == R_HDR && !c->rgot && !atomic_load(&c->inflight))
            return 0;
        /* a run of payload-less frames in one call: answers to WRITEs
         * (initiator), READ requests after a READ (target) */
        if (c->rstage == R_HDR && !c->rgot &&
            (c->peer ? atomic_load(&c->state) == C_READY : c->rf.type == ENG_F_READ)) {
            bool done;
            int ret = c->peer ? read_acks(c, &done) : read_requests(c, &done);
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
        if (!c->peer)
            c->t_rx = eng_now_ns();
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

static bool task_finished(struct eng_task *t)
{
    return atomic_load(&t->state) >= TESHIM_TASK_COMPLETED;
}

/*
 * ops.progress: the waiter for the one-frame request t reads t's
 * connection itself, and so completes t (and whatever answers come
 * before it) without waiting for the worker to wake it. The worker's
 * epoll stops watching the socket for input meanwhile and watches again
 * before this returns. Blocks in poll, never spins. A reset by the worker
 * (request timeout, engine destroy) shuts the socket down, which ends the
 * wait; a read error is left to the worker (c->rx_err).
 */
int tcp_progress(struct eng_transport *base, struct eng_task *t, uint64_t deadline_ns)
{
    struct tcp_conn *c = atomic_load(&t->tp_priv);
    int fd = -1, ret = -EAGAIN;

    if (!c || pthread_mutex_trylock(&c->rx_lock))
        return -EAGAIN; /* not a one-frame request, or the worker is reading */
    pthread_mutex_lock(&c->lock);
    if (atomic_load(&c->state) == C_READY && c->fd >= 0 && !c->resetting &&
        !atomic_load(&c->rx_err)) {
        fd = c->fd;
        c->rx_waiter = true;
        tcp_conn_watch(c);
    }
    pthread_mutex_unlock(&c->lock);
    /* poll first: the answer is rarely there yet when the waiter comes */
    while (fd >= 0 && !task_finished(t)) {
        int ms = 200; /* a bound on the wait, not a poll interval: input ends it */
        if (deadline_ns) {
            uint64_t now = eng_now_ns();
            if (now >= deadline_ns) {
                ret = -ETIMEDOUT;
                break;
            }
            if (deadline_ns - now < 200000000ull)
                ms = (int)((deadline_ns - now + 999999) / 1000000);
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, ms) <= 0)
            continue;
        int err = conn_read(c);
        if (err) {
            atomic_store(&c->rx_err, err);
            shutdown(fd, SHUT_RDWR); /* the worker sees the hang-up and resets */
            break;
        }
    }
    if (fd >= 0 && task_finished(t))
        ret = 0;
    if (fd >= 0) {
        pthread_mutex_lock(&c->lock);
        c->rx_waiter = false;
        tcp_conn_watch(c);
        pthread_mutex_unlock(&c->lock);
    }
    pthread_mutex_unlock(&c->rx_lock);
    return ret;
}

static void conn_event(struct tcp_conn *c, uint32_t ev)
{
    int st = atomic_load(&c->state);
    int ret = 0;

    if (c->fd < 0 || c->dead)
        return;
    if (st == C_CONNECTING) {
        if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            tcp_conn_connected(c);
        return;
    }
    /* a waiter's read failed: it shut the socket down, the reset is ours */
    ret = atomic_exchange(&c->rx_err, 0);
    /* input a waiter reads (tcp_progress) is its own: it watches again for
     * the worker when it leaves */
    if (!ret && (ev & EPOLLIN) && !pthread_mutex_trylock(&c->rx_lock)) {
        c->in_read = !c->peer;
        ret = conn_read(c);
        c->in_read = false;
        pthread_mutex_unlock(&c->rx_lock);
        if (!ret && !c->peer) {
            pthread_mutex_lock(&c->lock);
            c->deferred = 0;
            ret = tcp_conn_flush(c);
            pthread_mutex_unlock(&c->lock);
        }
    }
    if (!ret && (ev & EPOLLOUT)) {
        if (c->peer && c->peer->serial) {
            tcp_peer_send(c->peer, c);
        } else {
            pthread_mutex_lock(&c->lock);
            ret = tcp_conn_flush(c);
            pthread_mutex_unlock(&c->lock);
        }
    }
    if (!ret && (ev & (EPOLLERR | EPOLLHUP)) && !(ev & EPOLLIN))
        ret = -ECONNRESET;
    if (ret) {
        /* a failure of ours (no memory) is an error; the peer's doing is not */
        if (ret == -ENOMEM)
            eng_err(tcp_conn_eng(c), "peer %s: closing the connection: %s", c->pname,
                    strerror(-ret));
        else if (ret != -ECONNRESET || c->peer)
            eng_dbg(tcp_conn_eng(c), "peer %s: connection closed: %s", c->pname, strerror(-ret));
        /* what the tasks see: a refused handshake or a restarted peer as
         * such, any other failure as a reset */
        if (ret == -EBADMSG)
            ret = -EPROTO;
        else if (ret != -EPROTO && ret != -EACCES && ret != -ENOKEY && ret != -ESTALE)
            ret = -ECONNRESET;
        tcp_conn_reset(c, ret);
    }
}

void tcp_run_cmds(struct tcp_worker *w)
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
                tcp_conn_free(c);
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
            tcp_conn_connect(c);
        if (cmds & CMD_FLUSH)
            tcp_conn_push(c); /* bulk handed over by teshim_submit (io) */
        if (cmds & CMD_CLOSE) {
            tcp_conn_reset(c, -ECANCELED);
            if (c->wprev)
                c->wprev->wnext = c->wnext;
            else
                w->conns = c->wnext;
            if (c->wnext)
                c->wnext->wprev = c->wprev;
            tcp_peer_unref(c->peer);
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
        if (!c->peer) {
            tcp_target_tick(c, now);
            continue;
        }
        int st = atomic_load(&c->state);
        if (st == C_CONNECTING && c->fd < 0 && now >= c->t_next) {
            tcp_conn_connect(c);
        } else if ((st == C_CONNECTING || st == C_HANDSHAKE) && c->fd >= 0 &&
                   now - c->t_first > conn_to) {
            tcp_connect_failed(c, -ETIMEDOUT);
        } else if (st == C_READY) {
            /* a waiter reading it (rx_lock taken) makes it busy too */
            bool busy = pthread_mutex_trylock(&c->rx_lock) != 0;
            if (!busy) {
                busy = c->rslice != NULL;
                pthread_mutex_unlock(&c->rx_lock);
            }
            /* a waiter may have read an answer after now was taken */
            uint64_t used = atomic_load(&c->t_used);
            pthread_mutex_lock(&c->lock);
            struct tcp_slice *head = c->iq ? c->iq : c->sq;
            busy = busy || head;
            /* a slice queued while this tick waited for the locks is
             * younger than now */
            bool late = head && now > head->t_start && now - head->t_start > req_to;
            pthread_mutex_unlock(&c->lock);
            if (late) {
                eng_err(eng, "peer %s: request unanswered for %d ms, resetting the connection",
                        c->pname, eng->p.request_timeout_ms);
                tcp_conn_reset(c, -ETIMEDOUT);
            } else if (!busy && idle_to && now > used && now - used > idle_to) {
                eng_dbg(eng, "peer %s: idle connection closed", c->pname);
                atomic_fetch_add(&eng->st.conn_closed_idle, 1);
                tcp_conn_reset(c, 0);
            }
        }
    }
}

/* Free the dead accepted connections no device copy refers to any more. */
void tcp_graveyard_sweep(struct tcp_worker *w)
{
    for (struct tcp_conn **cp = &w->graveyard; *cp;) {
        struct tcp_conn *c = *cp;
        if (atomic_load(&c->refs)) {
            cp = &c->wnext;
            continue;
        }
        *cp = c->wnext;
        tcp_conn_free(c);
    }
}

void *tcp_worker_main(void *arg)
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
            tcp_run_cmds(w);
        uint64_t now = eng_now_ns();
        if (now >= w->next_tick) {
            tick(w, now);
            w->next_tick = now + TICK_NS;
        }
        tcp_graveyard_sweep(w);
    }
    return NULL;
}
