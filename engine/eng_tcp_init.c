/*
 * tcp: the initiator side. Requests cut into slices and queued on the
 * peer's connections (sent by the submitting thread when it can, batched
 * per teshim_submit), answers matched to their slices.
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

static struct tcp_slice *pop_answered(struct tcp_conn *c)
{
    return tcp_conn_pop_answered(c, c->rf.type, c->rf.id, c->rf.addr, c->rf.len);
}

int tcp_initiator_header(struct tcp_conn *c)
{
    struct eng_frame *f = &c->rf;
    struct tcp_slice *s;

    if (atomic_load(&c->state) == C_HANDSHAKE) {
        if (f->type == ENG_F_AUTH && f->payload_len)
            return tcp_start_ctrl(c, f->payload_len); /* the challenge */
        if (f->type == ENG_F_AUTH)
            return tcp_initiator_ctrl(c); /* a refusal */
        if (f->type != ENG_F_HELLO_ACK || f->status)
            return -EBADMSG;
        return tcp_start_ctrl(c, f->payload_len);
    }
    switch (f->type) {
    case ENG_F_WRITE_ACK:
    case ENG_F_LOCAL_ACK:
        s = pop_answered(c);
        if (!s)
            return -EBADMSG;
        c->t_used = eng_now_ns();
        tcp_slice_finish(s, f->status);
        return 0;
    case ENG_F_READ_RESP:
        s = pop_answered(c);
        if (!s)
            return -EBADMSG;
        c->t_used = eng_now_ns();
        if (f->status) {
            tcp_slice_finish(s, f->status);
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

/* The target's AUTH frame in c->rf (its payload in c->ctrl): answered
 * (the socket is fresh and takes it whole), or the refusal is final. */
static int initiator_auth(struct tcp_conn *c)
{
    struct eng_ctx *eng = tcp_conn_eng(c);
    uint8_t out[ENG_FRAME_BYTES + ENG_AUTH_BYTES];
    size_t out_len;
    int ret = eng_meta_auth_answer(eng, c->pname, &c->rf, c->ctrl, c->nonce, out, &out_len);

    free(c->ctrl);
    c->ctrl = NULL;
    if (out_len && send(c->fd, out, out_len, MSG_NOSIGNAL) != (ssize_t)out_len && !ret)
        ret = -ECONNRESET;
    if (!ret)
        c->authed = true;
    return ret;
}

int tcp_initiator_ctrl(struct tcp_conn *c)
{
    struct eng_ctx *eng = tcp_conn_eng(c);
    struct eng_hello h;
    int ret;

    if (c->rf.type == ENG_F_AUTH)
        return initiator_auth(c);
    ret = eng_hello_parse(c->ctrl, c->rf.payload_len, &h, NULL, 0);
    free(c->ctrl);
    c->ctrl = NULL;
    if (ret)
        return ret;
    if (eng->auth.len && !c->authed) {
        eng_err(eng,
                "segment %s: the peer answered without authenticating (it has no "
                "engine.auth_key_file); refused",
                c->pname);
        return -EACCES;
    }
    c->authed = false;
    if (eng_seg_same_instance(eng, c->pname, c->peer->instance_id, c->peer->pid, &h)) {
        atomic_store(&c->peer->stale, true);
        return -ESTALE;
    }
    pthread_mutex_lock(&c->lock);
    atomic_store(&c->state, C_READY);
    c->attempts = 0;
    c->t_used = eng_now_ns();
    atomic_fetch_add(&eng->st.conn_new, 1);
    atomic_fetch_add(&eng->st.connections, 1);
    if (c->peer->serial) {
        /* what was queued while connecting goes out with the peer's sender */
        pthread_mutex_unlock(&c->lock);
        tcp_peer_send(c->peer, NULL);
        return 0;
    }
    ret = tcp_conn_flush(c);
    pthread_mutex_unlock(&c->lock);
    return ret;
}

/* Connections a teshim_submit on this thread queued to and will flush
 * once at its end, so a batch leaves in few sendmsg calls. */
#define PLUG_MAX 16
static __thread struct {
    bool on;
    int n;
    struct tcp_conn *c[PLUG_MAX];
} plug;

void tcp_submit_begin(struct eng_transport *base)
{
    plug.on = true;
    plug.n = 0;
}

void tcp_submit_end(struct eng_transport *base)
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
                tcp_peer_send(c->peer, NULL);
            continue;
        }
        tcp_conn_push(c);
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

/* For a latency-path request: the first ready connection with nothing
 * queued or unanswered (it does not wait behind others' slices, and a
 * peer answering one request at a time keeps to one connection), else the
 * ready one with the least. */
static struct tcp_conn *pick_idle_conn(struct tcp_peer *p)
{
    struct tcp_conn *best = NULL;
    unsigned least = UINT_MAX;

    for (int k = 0; k < p->n && least; k++) {
        struct tcp_conn *c = &p->conns[k];
        unsigned n = atomic_load(&c->inflight);
        if (n < least && atomic_load(&c->state) == C_READY) {
            best = c;
            least = n;
        }
    }
    return best;
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

void tcp_start(struct eng_transport *base, struct eng_task *t)
{
    struct tcp_tp *tp = (struct tcp_tp *)base;
    struct eng_ctx *eng = base->eng;
    struct tcp_peer *p = t->seg->tp_priv;
    uint64_t sl = eng->p.slice_bytes;
    /* the latency path: one frame, whatever the slice size */
    bool inl = t->len <= eng->p.inline_bytes;
    unsigned n = inl ? 1 : (unsigned)((t->len + sl - 1) / sl);
    struct tcp_block *b;
    uint64_t now = eng_now_ns();

    if (atomic_load(&tp->stop) || atomic_load(&p->stale)) {
        if (atomic_load(&p->stale))
            eng_err(eng,
                    "segment %s: the peer restarted since the segment was opened; close "
                    "and reopen it",
                    t->seg->name);
        eng_task_set_slices(t, 1);
        eng_task_slice_done(t, 0, atomic_load(&p->stale) ? -ESTALE : -ECANCELED);
        return;
    }
    b = malloc(sizeof(*b) + n * sizeof(struct tcp_slice));
    if (!b) {
        eng_err(eng, "tcp: no memory for %u slices", n);
        eng_task_set_slices(t, 1);
        eng_task_slice_done(t, 0, -ENOMEM);
        return;
    }
    /* the target's device memory is out of process_vm_*'s reach */
    bool local = p->local && !eng_seg_in_device(t->seg, t->raddr, t->len);
    atomic_store(&b->left, n);
    eng_task_set_slices(t, n);
    for (unsigned i = 0; i < n; i++) {
        struct tcp_slice *s = &b->s[i];
        uint64_t off = (uint64_t)i * sl;
        uint32_t len = (uint32_t)(inl || t->len - off < sl ? t->len - off : sl);
        struct tcp_conn *c = inl ? pick_idle_conn(p) : NULL;
        if (!c)
            c = pick_conn(p);
        struct eng_frame f = {
            .type = local ? (t->op == TESHIM_OP_READ ? ENG_F_LOCAL_READ : ENG_F_LOCAL_WRITE)
                    : t->op == TESHIM_OP_READ ? ENG_F_READ
                                              : ENG_F_WRITE,
            .addr = t->raddr + off,
            .len = len,
            .req_addr = t->raddr,
            .req_len = t->len};
        int ret = 0;

        memset(s, 0, sizeof(*s));
        s->task = t;
        s->block = b;
        s->conn = c;
        s->data = t->local + off;
        s->xfer = len;
        s->raddr = f.addr;
        s->op = (uint8_t)t->op;
        s->t_start = now;
        if (local) {
            /* the target copies: it gets where, not what */
            struct eng_local_req lr = {.addr = (uint64_t)(uintptr_t)s->data, .pid = p->self};
            eng_local_req_encode(&lr, s->lreq);
            s->data = (char *)s->lreq;
            s->len = f.payload_len = ENG_LOCAL_BYTES;
        } else if (t->op == TESHIM_OP_WRITE) {
            s->len = f.payload_len = len;
        }
        atomic_fetch_add(&c->inflight, 1);
        if (inl)
            atomic_store(&t->tp_priv, c); /* a waiter may read its answer (tcp_progress) */
        pthread_mutex_lock(&c->lock);
        s->seq = f.id = ++c->seq;
        eng_frame_encode(&f, s->hdr);
        bool backlog = c->sq != NULL;
        tcp_conn_enqueue_locked(c, s);
        int st = atomic_load(&c->state);
        if (st == C_IDLE) {
            c->attempts = 0;
            c->t_first = c->t_next = now;
            atomic_store(&c->state, C_CONNECTING); /* publishes the fields above */
            pthread_mutex_unlock(&c->lock);
            tcp_post_cmd(c, CMD_KICK);
            continue;
        }
        if (st == C_READY) {
            atomic_fetch_add(&eng->st.conn_reuse, 1);
            if (p->serial) {
                /* the plug's end, or now, hands it to tcp_peer_send */
                pthread_mutex_unlock(&c->lock);
                if (!plug_add(c))
                    tcp_peer_send(p, NULL);
                continue;
            }
            if (p->handoff) {
                /* the connection's own I/O thread sends (same_host_send =
                 * io): a connection's sender and its receiver on the peer
                 * can then share a CPU, and its bytes stay in that CPU's
                 * cache (docs/perf.md, "The slow runs"). Only a small
                 * request alone on its connection goes from here, and
                 * nothing queued behind it meanwhile (flush_upto). With a
                 * backlog someone is at it already: a command posted, the
                 * worker flushing or waiting for room, or a thread sending
                 * a small request ahead, which posts when it stops. */
                bool post = !backlog;
                /* alone: nothing else in flight or queued on it, counted
                 * under the lock after ours was queued */
                if (inl && atomic_load(&c->inflight) == 1) {
                    ret = tcp_conn_flush_upto(c, s);
                    post = !ret && c->sq && !c->want_out;
                    if (ret)
                        shutdown(c->fd, SHUT_RDWR); /* the worker resets */
                }
                pthread_mutex_unlock(&c->lock);
                if (post)
                    tcp_post_cmd(c, CMD_FLUSH);
                continue;
            }
            /* send from this thread only when nothing is queued: with a
             * backlog the worker is already draining it on EPOLLOUT, and
             * submit returns instead of pushing the whole batch itself */
            ret = backlog || plug_add(c) ? 0 : tcp_conn_flush(c);
            if (ret)
                shutdown(c->fd, SHUT_RDWR); /* the worker sees the hang-up and resets */
        }
        pthread_mutex_unlock(&c->lock);
    }
}
