/*
 * tcp: the target side. Requests of a peer checked against the
 * remote-accessible registrations, answered from or written into them;
 * device memory served through staging buffers and asynchronous copies.
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

int tcp_send_answer(struct tcp_conn *c, uint8_t type, const struct eng_frame *req, int status,
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
    tcp_conn_enqueue_locked(c, s);
    c->deferred += req->len;
    if (!c->in_read || c->deferred >= DEFER_BYTES) {
        c->deferred = 0;
        ret = tcp_conn_flush(c);
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

    pthread_mutex_lock(&c->lock);
    if (err)
        s->len = 0;
    f.payload_len = s->len;
    eng_frame_encode(&f, s->hdr);
    s->wait = false;
    if (c->fd >= 0 && tcp_conn_flush(c))
        shutdown(c->fd, SHUT_RDWR); /* the worker sees the hang-up and resets */
    pthread_mutex_unlock(&c->lock);
    tcp_slice_free(s);
    atomic_fetch_sub(&c->refs, 1);
}

/*
 * Serve a READ (type READ_RESP) or a received WRITE (type WRITE_ACK, its
 * payload in stage) for device memory in reg: queue the answer, waiting,
 * and start the copy. Worker only.
 */
int tcp_serve_device(struct tcp_conn *c, uint8_t type, const struct eng_frame *req,
                     struct eng_region *reg, void *stage)
{
    struct eng_ctx *eng = tcp_conn_eng(c);
    bool to_device = type == ENG_F_WRITE_ACK;
    struct tcp_slice *s;
    int ret;

    if (!stage)
        stage = tcp_conn_stage_take(c, req->len);
    s = stage ? calloc(1, sizeof(*s)) : NULL;
    if (!s) {
        if (stage)
            tcp_conn_stage_give(c, stage);
        eng_err(eng, "peer %s: no memory to stage %llu bytes of cuda:%d", c->pname,
                (unsigned long long)req->len, reg->cuda_dev);
        return tcp_send_answer(c, type, req, -ENOMEM, reg, NULL, 0);
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
    tcp_conn_enqueue_locked(c, s);
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
void tcp_target_reject(struct tcp_conn *c, const char *what)
{
    struct eng_ctx *eng = tcp_conn_eng(c);
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

/*
 * The timers of an accepted connection (worker, on its tick): a peer that
 * leaves its answers unread (the socket full) for
 * engine.serve.stall_timeout_ms, one silent for engine.serve.idle_timeout_ms,
 * and one whose answers use a region being unregistered
 * (teshim_unregister's bound passed) lose the connection.
 */
void tcp_target_tick(struct tcp_conn *c, uint64_t now)
{
    struct eng_ctx *eng = tcp_conn_eng(c);
    uint64_t stall_to = (uint64_t)eng->p.serve_stall_timeout_ms * 1000000ull;
    uint64_t idle_to = (uint64_t)eng->p.serve_idle_timeout_ms * 1000000ull;
    const char *why = NULL;
    bool idle = false;

    pthread_mutex_lock(&c->lock);
    if (c->sq && c->want_out && now > c->t_tx && now - c->t_tx > stall_to)
        why = "the peer does not read its answers";
    else if (!c->sq && c->rstage == R_HDR && !c->rgot && idle_to && now > c->t_rx &&
             now - c->t_rx > idle_to)
        why = "idle", idle = true;
    if (!why && atomic_load(&eng->revoking)) {
        bool hit = c->rreg && atomic_load(&c->rreg->revoked);
        for (struct tcp_slice *s = c->sq; s && !hit; s = s->next)
            hit = s->reg && atomic_load(&s->reg->revoked);
        if (hit)
            why = "its requests use a region being unregistered";
    }
    pthread_mutex_unlock(&c->lock);
    if (!why)
        return;
    if (idle)
        eng_dbg(eng, "peer %s: idle connection closed", c->pname);
    else
        eng_warn(eng, "peer %s: closing the connection: %s", c->pname, why);
    tcp_conn_reset(c, -ECONNRESET);
}

int tcp_target_header(struct tcp_conn *c)
{
    struct eng_frame *f = &c->rf;
    struct eng_region *reg;

    /* the listener answered HELLO before the connection was ours */
    switch (f->type) {
    case ENG_F_WRITE:
        reg = eng_region_get(tcp_conn_eng(c), f->req_addr, f->req_len);
        c->rleft = f->len;
        if (!reg) {
            tcp_target_reject(c, "write");
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
            c->rstaging = tcp_conn_stage_take(c, f->len);
            c->rdst = c->rstaging;
            if (!c->rstaging) {
                eng_err(tcp_conn_eng(c), "peer %s: no memory to stage %llu bytes of cuda:%d",
                        c->pname, (unsigned long long)f->len, reg->cuda_dev);
                c->rstatus = -ENOMEM;
                c->rstage = R_DISCARD;
            }
        }
        return 0;
    case ENG_F_READ:
        reg = eng_region_get(tcp_conn_eng(c), f->req_addr, f->req_len);
        if (!reg)
            tcp_target_reject(c, "read");
        else if (reg->cuda_dev >= 0)
            return tcp_serve_device(c, ENG_F_READ_RESP, f, reg, NULL);
        return tcp_send_answer(c, ENG_F_READ_RESP, f, reg ? 0 : -EFAULT, reg, NULL, 0);
    default:
        return -EBADMSG;
    }
}
