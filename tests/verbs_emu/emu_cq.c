/* Completion channels and completion queues. A channel is a pipe: when a
 * completion reaches an armed CQ the CQ's address is written to it, so the
 * channel fd becomes readable for poll()/select() and ibv_get_cq_event()
 * reads which CQ fired. */
#include "emu.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct ibv_comp_channel *ibv_create_comp_channel(struct ibv_context *ctx)
{
    struct emu_channel *c = calloc(1, sizeof(*c));
    int fds[2];

    if (c == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    if (pipe2(fds, O_CLOEXEC) != 0) {
        free(c);
        return NULL;
    }
    /* the progress threads never block on a program that stopped reading
     * its events: a full pipe drops the event (the CQ stays readable) */
    fcntl(fds[1], F_SETFL, O_NONBLOCK);
    c->ch.context = ctx;
    c->ch.fd = fds[0];
    c->wfd = fds[1];
    return &c->ch;
}

int ibv_destroy_comp_channel(struct ibv_comp_channel *ch)
{
    struct emu_channel *c = (struct emu_channel *)ch;

    if (ch->refcnt > 0)
        return EBUSY;
    close(c->wfd);
    close(ch->fd);
    free(c);
    return 0;
}

struct ibv_cq *ibv_create_cq(struct ibv_context *ctx, int cqe, void *cq_context,
                             struct ibv_comp_channel *channel, int comp_vector)
{
    struct emu_cq *c = NULL;
    struct emu_rec r;
    int rc = 0;

    if (cqe < 1 || cqe > EMU_MAX_CQE || comp_vector < 0 || comp_vector >= ctx->num_comp_vectors)
        rc = EINVAL;
    if (rc == 0) {
        c = calloc(1, sizeof(*c));
        if (c != NULL)
            c->ring = calloc((size_t)cqe, sizeof(*c->ring));
        if (c == NULL || c->ring == NULL) {
            free(c);
            c = NULL;
            rc = ENOMEM;
        }
    }
    emu_rec_begin(&r, "create_cq");
    emu_rec_str(&r, "dev", ctx->device->name);
    emu_rec_i64(&r, "cqe", cqe);
    emu_rec_i64(&r, "channel", channel != NULL);
    emu_rec_i64(&r, "comp_vector", comp_vector);
    emu_rec_i64(&r, "ret", rc);
    emu_rec_end(&r);
    if (rc != 0) {
        errno = rc;
        return NULL;
    }
    c->cap = (size_t)cqe;
    c->cq.context = ctx;
    c->cq.channel = channel;
    c->cq.cq_context = cq_context;
    c->cq.cqe = cqe;
    pthread_mutex_init(&c->cq.mutex, NULL);
    pthread_cond_init(&c->cq.cond, NULL);
    pthread_mutex_init(&c->lock, NULL);
    if (channel != NULL)
        __atomic_add_fetch(&channel->refcnt, 1, __ATOMIC_RELAXED);
    return &c->cq;
}

int ibv_destroy_cq(struct ibv_cq *cq)
{
    struct emu_cq *c = (struct emu_cq *)cq;
    struct emu_rec r;

    emu_rec_begin(&r, "destroy_cq");
    emu_rec_end(&r);
    if (cq->channel != NULL)
        __atomic_sub_fetch(&cq->channel->refcnt, 1, __ATOMIC_RELAXED);
    pthread_mutex_destroy(&c->lock);
    free(c->ring);
    free(c);
    return 0;
}

int ibv_resize_cq(struct ibv_cq *cq, int cqe)
{
    struct emu_cq *c = (struct emu_cq *)cq;
    int rc = 0;

    pthread_mutex_lock(&c->lock);
    if (cqe < 1 || cqe > EMU_MAX_CQE || (size_t)cqe < c->count)
        rc = EINVAL;
    else
        cq->cqe = cqe;
    pthread_mutex_unlock(&c->lock);
    return rc;
}

/* Completions are never dropped: the ring grows past cqe when a program
 * lets it overrun (hardware would put the CQ in error instead). */
void emu_cq_push(struct emu_cq *c, const struct ibv_wc *wc)
{
    bool notify = false;

    pthread_mutex_lock(&c->lock);
    if (c->count == c->cap) {
        size_t ncap = c->cap * 2;
        struct ibv_wc *n = calloc(ncap, sizeof(*n));

        if (n == NULL) {
            emu_log("cq overrun and out of memory: completion of wr_id %llu lost",
                    (unsigned long long)wc->wr_id);
            pthread_mutex_unlock(&c->lock);
            return;
        }
        for (size_t i = 0; i < c->count; i++)
            n[i] = c->ring[(c->head + i) % c->cap];
        free(c->ring);
        c->ring = n;
        c->head = 0;
        c->cap = ncap;
    }
    c->ring[(c->head + c->count) % c->cap] = *wc;
    c->count++;
    if (c->armed && c->cq.channel != NULL &&
        (!c->solicited_only || (wc->wc_flags & IBV_WC_WITH_IMM) || wc->status != IBV_WC_SUCCESS ||
         wc->opcode & IBV_WC_RECV)) {
        c->armed = false;
        notify = true;
    }
    pthread_mutex_unlock(&c->lock);
    if (notify) {
        struct emu_channel *ch = (struct emu_channel *)c->cq.channel;
        struct ibv_cq *p = &c->cq;

        if (write(ch->wfd, &p, sizeof(p)) != (ssize_t)sizeof(p))
            emu_log("completion channel write failed");
    }
}

int emu_poll_cq(struct ibv_cq *cq, int n, struct ibv_wc *wc)
{
    struct emu_cq *c = (struct emu_cq *)cq;
    int got = 0;

    pthread_mutex_lock(&c->lock);
    while (got < n && c->count > 0) {
        wc[got++] = c->ring[c->head];
        c->head = (c->head + 1) % c->cap;
        c->count--;
    }
    pthread_mutex_unlock(&c->lock);
    /* programs busy-poll: an empty poll lets the progress threads run, or
     * on a machine with few cores every hand-off waits for a time slice */
    if (got == 0)
        sched_yield();
    return got;
}

int emu_req_notify_cq(struct ibv_cq *cq, int solicited_only)
{
    struct emu_cq *c = (struct emu_cq *)cq;

    if (cq->channel == NULL)
        return EINVAL;
    pthread_mutex_lock(&c->lock);
    c->armed = true;
    c->solicited_only = solicited_only != 0;
    pthread_mutex_unlock(&c->lock);
    return 0;
}

int ibv_get_cq_event(struct ibv_comp_channel *channel, struct ibv_cq **cq, void **cq_context)
{
    struct ibv_cq *p;
    ssize_t n = read(channel->fd, &p, sizeof(p));

    if (n != (ssize_t)sizeof(p))
        return -1;
    *cq = p;
    *cq_context = p->cq_context;
    return 0;
}

void ibv_ack_cq_events(struct ibv_cq *cq, unsigned int nevents)
{
    pthread_mutex_lock(&cq->mutex);
    cq->comp_events_completed += nevents;
    pthread_cond_signal(&cq->cond);
    pthread_mutex_unlock(&cq->mutex);
}
