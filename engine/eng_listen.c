/*
 * The engine's control plane, next to the metadata client (eng_meta.c):
 * the listener on the engine's address and the handshake server. A peer
 * connects, sends HELLO and gets HELLO_ACK (our identity and the
 * remote-accessible regions); the connection then belongs to the first
 * transport of the list that adopts it (tcp carries its frames on it), or
 * is closed (a metadata fetch hangs up after the answer anyway). One thread
 * serves every handshake with non-blocking sockets, so the engine listens
 * with any set of transports, and no transport owns the listener.
 */
#include "eng_listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define LISTEN_PAUSE_NS (100 * 1000000ull)

/* A connection in its handshake. */
struct hs_conn {
    struct hs_conn *next, *prev;
    int fd;
    char pname[64];
    uint64_t t_accept;
    bool auth; /* reading the AUTH response, not HELLO */
    uint8_t hdr[ENG_FRAME_BYTES];
    size_t got; /* of the header, then of the payload */
    struct eng_frame f;
    uint8_t *hello;                  /* HELLO payload: identity + trailer */
    uint32_t hello_len;              /* its bytes (c->f is the AUTH frame's after a challenge) */
    uint8_t auth_in[ENG_AUTH_BYTES]; /* the AUTH response */
    uint8_t nonce_i[ENG_NONCE_BYTES], nonce_t[ENG_NONCE_BYTES];
    uint8_t *out; /* AUTH or HELLO_ACK being sent */
    size_t out_len, sent;
    enum { HS_NEXT_READ, HS_NEXT_ADOPT, HS_NEXT_CLOSE } next_step; /* once out is sent */
};

struct eng_listener {
    struct eng_ctx *eng;
    eng_adopt_fn adopt;
    eng_hello_fn hello;
    void *adopt_arg;
    int lfd, epfd, evfd;
    bool paused;
    uint64_t resume;
    pthread_t th;
    bool started;
    struct hs_conn *conns; /* newest first */
};

static void hs_close(struct eng_listener *l, struct hs_conn *c)
{
    if (c->fd >= 0) {
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        l->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c->out);
    free(c->hello);
    free(c);
}

/* A frame that is not the one expected: counted and logged, the caller closes. */
static void hs_reject(struct eng_listener *l, struct hs_conn *c, int ret)
{
    if (ret == -EBADMSG)
        eng_warn(l->eng, "peer %s: unexpected frame type %u, closing the connection", c->pname,
                 c->f.type);
    else
        eng_warn(l->eng, "peer %s: %s frame, closing the connection", c->pname,
                 ret == -EPROTO ? "wrong magic or protocol version in a" : "malformed");
    atomic_fetch_add(&l->eng->st.peer_rejected, 1);
}

/* Queue an AUTH frame: the challenge (status 0) or a refusal, after which
 * the connection is closed. */
static int hs_auth_frame(struct eng_listener *l, struct hs_conn *c, int status)
{
    struct eng_frame f = {.type = ENG_F_AUTH, .id = c->f.id, .status = status};

    c->out = malloc(ENG_FRAME_BYTES + ENG_AUTH_BYTES);
    if (!c->out)
        return -ENOMEM;
    if (!status) {
        f.payload_len = ENG_AUTH_BYTES;
        eng_random(c->nonce_t, sizeof(c->nonce_t));
        memcpy(c->out + ENG_FRAME_BYTES, c->nonce_t, ENG_NONCE_BYTES);
        eng_auth_proof(&l->eng->auth, true, c->nonce_i, c->nonce_t,
                       c->out + ENG_FRAME_BYTES + ENG_NONCE_BYTES);
    }
    eng_frame_encode(&f, c->out);
    c->out_len = ENG_FRAME_BYTES + f.payload_len;
    c->sent = 0;
    if (status)
        atomic_fetch_add(&l->eng->st.peer_rejected, 1);
    c->next_step = status ? HS_NEXT_CLOSE : HS_NEXT_READ;
    return 0;
}

/* Authenticated, or no authentication: encode HELLO_ACK into c->out, the
 * transports' answers to the HELLO's trailer after the regions. */
static int hs_answer(struct eng_listener *l, struct hs_conn *c)
{
    struct eng_hello self;
    struct eng_region_desc *regs;
    struct eng_frame f = {.type = ENG_F_HELLO_ACK, .id = c->f.id};
    size_t off, tlen = 0;
    uint32_t n;
    int ret;

    ret = eng_region_list(l->eng, &regs, &n);
    if (ret)
        return ret;
    off = ENG_FRAME_BYTES + ENG_HELLO_BYTES + (size_t)n * ENG_REGION_BYTES;
    c->out = malloc(off + ENG_TRAILER_MAX);
    if (!c->out) {
        free(regs);
        return -ENOMEM;
    }
    eng_hello_self(l->eng, &self);
    eng_hello_encode(&self, regs, n, c->out + ENG_FRAME_BYTES);
    free(regs);
    ret = l->hello(l->adopt_arg, c->fd, c->hello + ENG_HELLO_BYTES, c->hello_len - ENG_HELLO_BYTES,
                   c->out + off, ENG_TRAILER_MAX, &tlen);
    if (ret)
        return ret;
    f.payload_len = (uint32_t)(off - ENG_FRAME_BYTES + tlen);
    eng_frame_encode(&f, c->out);
    c->out_len = off + tlen;
    c->sent = 0;
    c->next_step = HS_NEXT_ADOPT;
    return 0;
}

/* HELLO is whole: challenge the peer, refuse it, or answer it. */
static int hs_hello(struct eng_listener *l, struct hs_conn *c)
{
    struct eng_hello peer;
    bool key = l->eng->auth.len > 0;

    if (eng_hello_parse(c->hello, c->hello_len, &peer, NULL, 0) || peer.nregions)
        return -EBADMSG;
    eng_dbg(l->eng, "peer %s: hello from %s", c->pname, peer.name);
    memcpy(c->nonce_i, peer.nonce, sizeof(c->nonce_i));
    c->auth = true;
    if (key && !(peer.flags & ENG_HELLO_AUTH)) {
        eng_warn(l->eng, "peer %s: refused: not authenticated (it has no engine.auth_key_file)",
                 c->pname);
        return hs_auth_frame(l, c, -EACCES);
    }
    if (!key && (peer.flags & ENG_HELLO_AUTH)) {
        eng_warn(l->eng,
                 "peer %s: refused: it asks for authentication, and engine.auth_key_file "
                 "is not set here",
                 c->pname);
        return hs_auth_frame(l, c, -ENOKEY);
    }
    return key ? hs_auth_frame(l, c, 0) : hs_answer(l, c);
}

/* The AUTH response is whole: check the initiator's proof. */
static int hs_auth(struct eng_listener *l, struct hs_conn *c)
{
    uint8_t proof[ENG_MAC_BYTES];

    if (c->f.status) {
        eng_warn(l->eng, "peer %s: refused our authentication (%s)", c->pname,
                 c->f.status == -ENOKEY ? "it has no engine.auth_key_file"
                                        : "its engine.auth_key_file holds another key");
        atomic_fetch_add(&l->eng->st.peer_rejected, 1);
        return -EACCES;
    }
    eng_auth_proof(&l->eng->auth, false, c->nonce_i, c->nonce_t, proof);
    if (!eng_auth_equal(proof, c->auth_in + ENG_NONCE_BYTES)) {
        eng_warn(l->eng, "peer %s: authentication failed (another key); refused", c->pname);
        return hs_auth_frame(l, c, -EACCES);
    }
    return hs_answer(l, c);
}

/* Read what there is of HELLO (or of the AUTH response); 1 when an answer
 * is ready in c->out, 0 for more, or -errno to close. Never reads past the
 * frame: what follows is the adopting transport's. */
static int hs_read(struct eng_listener *l, struct hs_conn *c)
{
    for (;;) {
        bool in_hdr = c->got < ENG_FRAME_BYTES;
        size_t plen = in_hdr ? 0 : c->f.payload_len;
        uint8_t *body = c->auth ? c->auth_in : c->hello;
        uint8_t *dst = in_hdr ? c->hdr + c->got : body + (c->got - ENG_FRAME_BYTES);
        size_t want = in_hdr ? ENG_FRAME_BYTES - c->got : ENG_FRAME_BYTES + plen - c->got;
        ssize_t n = want ? recv(c->fd, dst, want, 0) : 0;

        if (want && n < 0)
            return errno == EINTR ? 0 : errno == EAGAIN ? 0 : -errno;
        if (want && n == 0)
            return -ECONNRESET;
        c->got += (size_t)n;
        if (in_hdr && c->got == ENG_FRAME_BYTES) {
            int ret = eng_frame_parse(c->hdr, ENG_FRAME_BYTES, &c->f);
            if (!ret && c->f.type != (c->auth ? ENG_F_AUTH : ENG_F_HELLO))
                ret = -EBADMSG;
            if (ret) {
                hs_reject(l, c, ret);
                return ret;
            }
            plen = c->f.payload_len;
            if (!c->auth) {
                /* identity and trailer, kept until the answer is made */
                free(c->hello);
                c->hello = malloc(plen ? plen : 1);
                if (!c->hello)
                    return -ENOMEM;
                c->hello_len = (uint32_t)plen;
            } else if (plen > sizeof(c->auth_in)) {
                hs_reject(l, c, -EBADMSG);
                return -EBADMSG;
            }
        }
        if (c->got >= ENG_FRAME_BYTES && c->got == ENG_FRAME_BYTES + plen) {
            int ret;
            c->got = 0;
            ret = c->auth ? hs_auth(l, c) : hs_hello(l, c);
            return ret ? ret : 1;
        }
        if ((size_t)n < want)
            return 0;
    }
}

/* Send what the socket takes of c->out; 1 when all is sent. */
static int hs_write(struct hs_conn *c)
{
    while (c->sent < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->sent, c->out_len - c->sent, MSG_NOSIGNAL);
        if (n < 0)
            return errno == EINTR ? 0 : errno == EAGAIN ? 0 : -errno;
        c->sent += (size_t)n;
    }
    return 1;
}

static void hs_event(struct eng_listener *l, struct hs_conn *c, uint32_t ev)
{
    int ret = 0;

    if (!c->out)
        ret = hs_read(l, c);
    if (ret == 1) {
        struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
        epoll_ctl(l->epfd, EPOLL_CTL_MOD, c->fd, &e);
    }
    if (ret >= 0 && c->out)
        ret = hs_write(c);
    if (ret == 0 && (ev & (EPOLLERR | EPOLLHUP)) && !(ev & EPOLLIN))
        ret = -ECONNRESET;
    if (ret == 1 && c->next_step == HS_NEXT_READ) {
        /* the challenge is out: the response comes next */
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
        free(c->out);
        c->out = NULL;
        epoll_ctl(l->epfd, EPOLL_CTL_MOD, c->fd, &e);
        return;
    }
    if (ret == 1 && c->next_step == HS_NEXT_CLOSE)
        ret = -EACCES; /* the refusal is out */
    if (ret < 0) {
        /* a failure of ours (no memory) is an error; the peer's doing is not */
        if (ret == -ENOMEM)
            eng_err(l->eng, "peer %s: closing the connection: %s", c->pname, strerror(-ret));
        else if (ret != -ECONNRESET)
            eng_dbg(l->eng, "peer %s: connection closed: %s", c->pname, strerror(-ret));
        hs_close(l, c);
        return;
    }
    if (ret == 1) {
        /* answered: the connection is a transport's, or closed */
        int fd = c->fd;
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
        c->fd = -1;
        if (l->adopt(l->adopt_arg, fd, c->pname))
            close(fd);
        hs_close(l, c);
    }
}

/* Close the handshakes older than engine.handshake_timeout_ms: a peer that
 * connects and stays silent does not keep a descriptor. */
static void hs_expire(struct eng_listener *l, uint64_t now)
{
    uint64_t to = (uint64_t)l->eng->p.handshake_timeout_ms * 1000000ull;

    for (struct hs_conn *c = l->conns, *next; c; c = next) {
        next = c->next;
        if (now - c->t_accept <= to)
            continue;
        eng_warn(l->eng, "peer %s: no handshake within %d ms; closing the connection", c->pname,
                 l->eng->p.handshake_timeout_ms);
        atomic_fetch_add(&l->eng->st.peer_rejected, 1);
        hs_close(l, c);
    }
}

/* Out of descriptors: the oldest unfinished handshake makes room, so peers
 * that connect and stay silent cannot keep others out. False if none. */
static bool hs_evict_oldest(struct eng_listener *l)
{
    struct hs_conn *c = l->conns;

    if (!c)
        return false;
    while (c->next)
        c = c->next;
    eng_warn(l->eng,
             "listener: out of file descriptors; closing the oldest unfinished "
             "handshake (peer %s)",
             c->pname);
    atomic_fetch_add(&l->eng->st.peer_rejected, 1);
    hs_close(l, c);
    return true;
}

static void peer_name(const struct sockaddr_storage *sa, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;

    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        port = ntohs(s4->sin_port);
    } else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        port = ntohs(s6->sin6_port);
    }
    snprintf(buf, len, "%s:%d", ip, port);
}

static void accept_all(struct eng_listener *l)
{
    for (int i = 0; i < 16; i++) {
        struct sockaddr_storage sa;
        socklen_t sl = sizeof(sa);
        int fd = accept4(l->lfd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 && (errno == EMFILE || errno == ENFILE) && hs_evict_oldest(l))
            continue;
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* level-triggered: leaving it armed would spin; the
                 * connection waits in the backlog until fds free up */
                eng_warn(l->eng, "tcp: accept: %m; pausing the listener for 100 ms");
                struct epoll_event e = {.events = 0, .data.ptr = &l->lfd};
                epoll_ctl(l->epfd, EPOLL_CTL_MOD, l->lfd, &e);
                l->paused = true;
                l->resume = eng_now_ns() + LISTEN_PAUSE_NS;
            }
            return;
        }
        struct hs_conn *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            return;
        }
        c->fd = fd;
        c->t_accept = eng_now_ns();
        peer_name(&sa, c->pname, sizeof(c->pname));
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &e)) {
            close(fd);
            free(c);
            continue;
        }
        c->next = l->conns;
        if (l->conns)
            l->conns->prev = c;
        l->conns = c;
        atomic_fetch_add(&l->eng->st.accepted, 1);
    }
}

static void *listener_main(void *arg)
{
    struct eng_listener *l = arg;
    struct epoll_event ev[64];

    for (;;) {
        /* unfinished handshakes are timed: look at them every 50 ms */
        int n = epoll_wait(l->epfd, ev, 64, l->paused ? 20 : l->conns ? 50 : -1);
        bool acc = false;
        for (int i = 0; i < n; i++) {
            void *p = ev[i].data.ptr;
            if (p == &l->evfd)
                return NULL;
            if (p == &l->lfd)
                acc = true;
            else
                hs_event(l, p, ev[i].events);
        }
        /* after the batch: accepting may close a handshake with an event
         * in it (hs_evict_oldest) */
        if (acc)
            accept_all(l);
        if (l->conns)
            hs_expire(l, eng_now_ns());
        if (l->paused && eng_now_ns() >= l->resume) {
            struct epoll_event e = {.events = EPOLLIN, .data.ptr = &l->lfd};
            epoll_ctl(l->epfd, EPOLL_CTL_MOD, l->lfd, &e);
            l->paused = false;
        }
    }
}

static uint16_t sa_port(const struct sockaddr_storage *sa)
{
    return sa->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)sa)->sin6_port
                                     : ((const struct sockaddr_in *)sa)->sin_port;
}

/* Bind the listener; 0, or -errno (logged). */
static int listen_bind(struct eng_listener *l, const char *host, int *port_p)
{
    struct sockaddr_storage sa;
    socklen_t sl = 0;
    int one = 1, fd, ret;

    ret = eng_parse_hostport(host, true, &sa, &sl);
    if (ret) {
        eng_err(l->eng, "engine_create: listen address '%s' is not HOST:PORT", host);
        return ret;
    }
    if (sa_port(&sa)) {
        /* SO_REUSEPORT would let us share a port another engine of the same
         * user listens on, splitting its peers' connections between two
         * processes: make sure the port is free first */
        fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0) {
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
            ret = bind(fd, (struct sockaddr *)&sa, sl) ? -errno : 0;
            close(fd);
            if (ret)
                goto err_log;
        }
    }
    fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        ret = -errno;
        goto err_log;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) ||
        bind(fd, (struct sockaddr *)&sa, sl) || listen(fd, 1024)) {
        ret = -errno;
        goto err_close;
    }
    struct sockaddr_storage got;
    socklen_t gl = sizeof(got);
    getsockname(fd, (struct sockaddr *)&got, &gl);
    l->lfd = fd;
    *port_p = ntohs(sa_port(&got));
    return 0;

err_close:
    close(fd);
err_log:
    eng_err(l->eng, "engine_create: listen on %s: %s", host, strerror(-ret));
    return ret;
}

int eng_listener_start(struct eng_ctx *eng, const char *host, eng_adopt_fn adopt,
                       eng_hello_fn hello, void *arg, int *port_p, struct eng_listener **l_p)
{
    struct eng_listener *l = calloc(1, sizeof(*l));
    struct epoll_event e = {.events = EPOLLIN};
    int ret;

    if (!l) {
        eng_err(eng, "engine_create: no memory for the listener");
        return -ENOMEM;
    }
    l->eng = eng;
    l->adopt = adopt;
    l->hello = hello;
    l->adopt_arg = arg;
    l->lfd = l->epfd = l->evfd = -1;
    ret = listen_bind(l, host, port_p);
    if (ret)
        goto err_stop;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    e.data.ptr = &l->evfd;
    if (l->epfd < 0 || l->evfd < 0 || epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->evfd, &e)) {
        ret = -errno;
        eng_err(eng, "engine_create: listener: %s", strerror(-ret));
        goto err_stop;
    }
    e.data.ptr = &l->lfd;
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->lfd, &e)) {
        ret = -errno;
        eng_err(eng, "engine_create: listener: %s", strerror(-ret));
        goto err_stop;
    }
    ret = -pthread_create(&l->th, NULL, listener_main, l);
    if (ret) {
        eng_err(eng, "engine_create: listener thread: %s", strerror(-ret));
        goto err_stop;
    }
    l->started = true;
    *l_p = l;
    return 0;

err_stop:
    eng_listener_stop(l);
    return ret;
}

void eng_listener_stop(struct eng_listener *l)
{
    if (!l)
        return;
    if (l->started) {
        uint64_t one = 1;
        if (write(l->evfd, &one, sizeof(one)) < 0)
            eng_err(l->eng, "listener: eventfd write: %m");
        pthread_join(l->th, NULL);
    }
    while (l->conns)
        hs_close(l, l->conns);
    if (l->lfd >= 0)
        close(l->lfd);
    if (l->evfd >= 0)
        close(l->evfd);
    if (l->epfd >= 0)
        close(l->epfd);
    free(l);
}
