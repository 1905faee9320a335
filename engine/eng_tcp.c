/*
 * tcp: the transport face. Its ops table, segments (a peer with its
 * connections), adoption of connections the listener answered, creation
 * and destruction of the I/O threads.
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
    memcpy(p->instance_id, seg->hello.instance_id, sizeof(p->instance_id));
    bool same_host = !memcmp(seg->hello.boot_id, eng->boot_id, sizeof(eng->boot_id));
    p->serial = eng->p.same_host_send == ENG_SAME_HOST_SERIAL && same_host;
    p->local = seg->local_target = tcp_local_usable(eng, seg);
    /* a local-target peer's frames carry no data: nothing to keep in a cache */
    p->handoff = eng->p.same_host_send == ENG_SAME_HOST_IO && same_host && !p->local;
    p->self = (uint32_t)getpid();
    p->n = n;
    atomic_store(&p->refs, n);
    uint64_t now = eng_now_ns();
    for (int i = 0; i < n; i++) {
        struct tcp_conn *c = &p->conns[i];
        c->peer = p;
        c->fd = -1;
        c->w = &tp->w[atomic_fetch_add(&tp->rr, 1) % (unsigned)tp->nworkers];
        tcp_conn_locks_init(c);
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
        tcp_post_cmd(&p->conns[i], CMD_ADD | CMD_KICK);
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
        tcp_post_cmd(&p->conns[i], CMD_CLOSE);
}

static void tcp_destroy(struct eng_transport *base)
{
    struct tcp_tp *tp = (struct tcp_tp *)base;

    atomic_store(&tp->stop, true);
    for (int i = 0; i < tp->nworkers; i++) {
        if (tp->w[i].th) {
            tcp_worker_wake(&tp->w[i]);
            pthread_join(tp->w[i].th, NULL);
        }
    }
    /* device copies of served requests end before their connections go */
    eng_dev_quiesce(base->eng);
    for (int i = 0; i < tp->nworkers; i++) {
        struct tcp_worker *w = &tp->w[i];
        if (w->epfd < 0)
            continue;
        tcp_run_cmds(w);
        for (struct tcp_conn *c = w->conns, *next; c; c = next) {
            next = c->wnext;
            tcp_conn_reset(c, -ECANCELED);
        }
        tcp_graveyard_sweep(w);
    }
    while (tp->peers) {
        struct tcp_peer *p = tp->peers;
        tp->peers = p->next;
        for (int i = 0; i < p->n; i++)
            tcp_conn_locks_destroy(&p->conns[i]);
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
    tcp_conn_locks_init(c);
    pthread_mutex_init(&c->stage_lock, NULL);
    atomic_store(&c->state, C_READY);
    c->t_rx = c->t_tx = eng_now_ns();
    snprintf(c->pname, sizeof(c->pname), "%s", pname);
    tcp_sock_opts(base->eng, fd);
    tcp_post_cmd(c, CMD_ADOPT);
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
    .progress = tcp_progress,
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
        ret = -pthread_create(&tp->w[i].th, NULL, tcp_worker_main, &tp->w[i]);
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
