/*
 * Embedded peer-to-peer metadata: a segment is named after its engine's
 * listen address; opening it connects there, sends HELLO and receives the
 * peer's identity and remote-accessible regions in HELLO_ACK. Attempts are
 * retried with exponential backoff and jitter, bounded in number
 * (engine.connect_attempts) and in time (engine.connect_timeout_ms).
 */
#include "eng_meta.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int eng_parse_hostport(const char *s, bool passive, struct sockaddr_storage *sa, socklen_t *len)
{
    char host[256];
    const char *colon, *port;
    struct addrinfo hints = {0}, *ai;
    size_t hl;
    char *end;
    long pn;

    if (!s)
        return -EINVAL;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':')
            return -EINVAL;
        hl = (size_t)(rb - s - 1);
        memcpy(host, s + 1, hl < sizeof(host) ? hl : 0);
        port = rb + 2;
    } else {
        colon = strrchr(s, ':');
        if (!colon || strchr(s, ':') != colon)
            return -EINVAL;
        hl = (size_t)(colon - s);
        port = colon + 1;
        if (hl < sizeof(host))
            memcpy(host, s, hl);
    }
    if (!hl || hl >= sizeof(host) || !*port)
        return -EINVAL;
    host[hl] = '\0';
    errno = 0;
    pn = strtol(port, &end, 10);
    if (errno || *end || pn < (passive ? 0 : 1) || pn > 65535 || port[0] == '-' || port[0] == '+')
        return -EINVAL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
    if (getaddrinfo(host, port, &hints, &ai))
        return -EHOSTUNREACH;
    memcpy(sa, ai->ai_addr, ai->ai_addrlen);
    *len = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

static int wait_fd(int fd, short ev, uint64_t deadline)
{
    struct pollfd p = {.fd = fd, .events = ev};
    for (;;) {
        uint64_t now = eng_now_ns();
        if (now >= deadline)
            return -ETIMEDOUT;
        int n = poll(&p, 1, (int)((deadline - now) / 1000000 + 1));
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -errno;
    }
}

static int io_all(int fd, void *buf, size_t len, bool out, uint64_t deadline)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = out ? send(fd, (char *)buf + done, len - done, MSG_NOSIGNAL)
                        : recv(fd, (char *)buf + done, len - done, 0);
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (n == 0)
            return -ECONNRESET;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN)
            return -errno;
        int ret = wait_fd(fd, out ? POLLOUT : POLLIN, deadline);
        if (ret)
            return ret;
    }
    return 0;
}

void eng_hello_self(struct eng_ctx *eng, struct eng_hello *h)
{
    memset(h, 0, sizeof(*h));
    memcpy(h->boot_id, eng->boot_id, 16);
    h->pid = (uint32_t)getpid();
    h->probe_addr = eng->p.local_serve ? (uint64_t)(uintptr_t)&eng->words : 0;
    h->probe_value = eng->words.probe;
    strcpy(h->name, eng->name);
    if (eng->p.local_serve && eng->p.local_mode == ENG_LOCAL_TARGET)
        h->flags = ENG_HELLO_LOCAL_TARGET;
    memcpy(h->instance_id, eng->instance_id, 16);
}

void eng_hello_initiator(struct eng_ctx *eng, const uint8_t nonce[ENG_NONCE_BYTES],
                         struct eng_hello *h)
{
    eng_hello_self(eng, h);
    memcpy(h->nonce, nonce, ENG_NONCE_BYTES);
    if (eng->auth.len) {
        struct eng_hello bare = {.flags = ENG_HELLO_AUTH}; /* no name either */
        memcpy(bare.nonce, nonce, ENG_NONCE_BYTES);
        *h = bare;
    }
}

int eng_meta_auth_answer(struct eng_ctx *eng, const char *who, const struct eng_frame *f,
                         const uint8_t *p, const uint8_t nonce[ENG_NONCE_BYTES], uint8_t *out,
                         size_t *out_len)
{
    struct eng_frame r = {.type = ENG_F_AUTH, .id = f->id};
    uint8_t proof[ENG_MAC_BYTES];
    int ret = 0;

    *out_len = 0;
    if (f->status == -ENOKEY) {
        eng_err(eng,
                "segment %s: the peer has no engine.auth_key_file and refuses our "
                "authenticated handshake",
                who);
        return -ENOKEY;
    }
    if (f->status) {
        eng_err(eng, "segment %s: the peer refused the handshake: %s", who,
                eng->auth.len ? "authentication failed (its engine.auth_key_file holds another key)"
                              : "it requires authentication; set engine.auth_key_file to its key");
        return -EACCES;
    }
    if (!eng->auth.len) {
        eng_err(eng,
                "segment %s: the peer requires authentication; set engine.auth_key_file to "
                "its key",
                who);
        r.status = -ENOKEY;
        ret = -EACCES;
    } else {
        eng_auth_proof(&eng->auth, true, nonce, p, proof);
        if (!eng_auth_equal(proof, p + ENG_NONCE_BYTES)) {
            eng_err(eng,
                    "segment %s: authentication failed: the peer's engine.auth_key_file "
                    "holds another key",
                    who);
            r.status = -EACCES;
            ret = -EACCES;
        } else {
            r.payload_len = ENG_AUTH_BYTES;
            memcpy(out + ENG_FRAME_BYTES, nonce, ENG_NONCE_BYTES);
            eng_auth_proof(&eng->auth, false, nonce, p, out + ENG_FRAME_BYTES + ENG_NONCE_BYTES);
        }
    }
    eng_frame_encode(&r, out);
    *out_len = ENG_FRAME_BYTES + r.payload_len;
    return ret;
}

/* The target's AUTH challenge (header in f, already read): answered; then
 * the next header is read into hdr. */
static int meta_auth(struct eng_ctx *eng, const struct eng_segment *seg, int fd, uint64_t deadline,
                     const uint8_t nonce[ENG_NONCE_BYTES], struct eng_frame *f, uint8_t *hdr)
{
    uint8_t p[ENG_AUTH_BYTES], out[ENG_FRAME_BYTES + ENG_AUTH_BYTES];
    size_t out_len;
    int ret = 0;

    if (f->payload_len)
        ret = io_all(fd, p, sizeof(p), false, deadline);
    if (ret)
        return ret;
    ret = eng_meta_auth_answer(eng, seg->name, f, f->payload_len ? p : NULL, nonce, out, &out_len);
    if (out_len && io_all(fd, out, out_len, true, deadline) && !ret)
        ret = -ECONNRESET;
    if (!ret)
        ret = io_all(fd, hdr, ENG_FRAME_BYTES, false, deadline);
    if (!ret)
        ret = eng_frame_parse(hdr, ENG_FRAME_BYTES, f);
    return ret;
}

/* What one handshake sends and returns besides the identity. */
struct meta_io {
    const uint8_t *out; /* our trailer */
    size_t out_len;
    uint8_t **trailer_p; /* the peer's, or NULL */
    uint32_t *trailer_len_p;
    int *fd_p; /* keep the connection */
};

/* One attempt: connect, HELLO, (AUTH,) HELLO_ACK into *h and *regions_p. */
static int meta_once(struct eng_ctx *eng, const struct eng_segment *seg, uint64_t deadline,
                     struct eng_hello *h, struct eng_region_desc **regions_p,
                     const struct meta_io *io)
{
    struct eng_region_desc *regions = NULL;
    uint8_t hdr[ENG_FRAME_BYTES];
    uint8_t hello[ENG_HELLO_BYTES];
    uint8_t nonce[ENG_NONCE_BYTES];
    struct eng_hello self;
    struct eng_frame f = {.type = ENG_F_HELLO,
                          .payload_len = (uint32_t)(ENG_HELLO_BYTES + io->out_len)};
    uint8_t *buf = NULL;
    int fd, ret, err = 0;
    socklen_t el = sizeof(err);

    fd = socket(seg->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&seg->sa, seg->salen) && errno != EINPROGRESS) {
        ret = -errno;
        goto out_close;
    }
    ret = wait_fd(fd, POLLOUT, deadline);
    if (ret)
        goto out_close;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) {
        ret = -err;
        goto out_close;
    }
    eng_random(nonce, sizeof(nonce));
    eng_hello_initiator(eng, nonce, &self);
    eng_frame_encode(&f, hdr);
    eng_hello_encode(&self, NULL, 0, hello);
    ret = io_all(fd, hdr, sizeof(hdr), true, deadline);
    if (!ret)
        ret = io_all(fd, hello, sizeof(hello), true, deadline);
    if (!ret && io->out_len)
        ret = io_all(fd, (void *)io->out, io->out_len, true, deadline);
    if (!ret)
        ret = io_all(fd, hdr, sizeof(hdr), false, deadline);
    if (ret)
        goto out_close;
    ret = eng_frame_parse(hdr, sizeof(hdr), &f);
    if (!ret && f.type == ENG_F_AUTH) {
        ret = meta_auth(eng, seg, fd, deadline, nonce, &f, hdr);
        if (ret && ret != -EPROTO && ret != -EBADMSG)
            goto out_close; /* refused (logged), or the connection failed */
    } else if (!ret && f.type == ENG_F_HELLO_ACK && eng->auth.len) {
        eng_err(eng,
                "segment %s: the peer answered without authenticating (it has no "
                "engine.auth_key_file); refused",
                seg->name);
        ret = -EACCES;
        goto out_close;
    }
    if (ret || f.type != ENG_F_HELLO_ACK || f.status) {
        eng_err(eng, "segment %s: handshake answered with %s", seg->name,
                ret == -EPROTO ? "another protocol version"
                : f.status     ? strerror(-f.status)
                               : "a malformed frame");
        ret = ret == -EPROTO ? -EPROTO : f.status ? f.status : -EBADMSG;
        goto out_close;
    }
    buf = malloc(f.payload_len);
    regions = malloc((f.payload_len / ENG_REGION_BYTES + 1) * sizeof(*regions));
    if (!buf || !regions) {
        eng_err(eng, "segment %s: no memory for the peer's %u-byte handshake", seg->name,
                f.payload_len);
        ret = -ENOMEM;
        goto out_free;
    }
    ret = io_all(fd, buf, f.payload_len, false, deadline);
    if (ret)
        goto out_free;
    ret = eng_hello_parse(buf, f.payload_len, h, regions, ENG_MAX_REGIONS);
    if (ret) {
        eng_err(eng, "segment %s: malformed handshake from the peer", seg->name);
        goto out_free;
    }
    if (io->trailer_p) {
        size_t off = eng_hello_trailer_off(h);
        *io->trailer_len_p = (uint32_t)(f.payload_len - off);
        memmove(buf, buf + off, f.payload_len - off);
        *io->trailer_p = buf;
        buf = NULL;
    }
    free(buf);
    if (io->fd_p)
        *io->fd_p = fd;
    else
        close(fd);
    *regions_p = regions;
    return 0;

out_free:
    free(buf);
    free(regions);
out_close:
    close(fd);
    return ret;
}

int eng_meta_fetch(struct eng_ctx *eng, const struct eng_segment *seg, struct eng_hello *h,
                   struct eng_region_desc **regions_p)
{
    return eng_meta_fetch_ex(eng, seg, NULL, 0, h, regions_p, NULL, NULL, NULL);
}

int eng_meta_fetch_ex(struct eng_ctx *eng, const struct eng_segment *seg, const uint8_t *out,
                      size_t out_len, struct eng_hello *h, struct eng_region_desc **regions_p,
                      uint8_t **trailer_p, uint32_t *trailer_len_p, int *fd_p)
{
    const struct meta_io io = {out, out_len, trailer_p, trailer_len_p, fd_p};
    uint64_t start = eng_now_ns();
    uint64_t deadline = start + (uint64_t)eng->p.connect_timeout_ms * 1000000ull;
    int ret = -ETIMEDOUT;

    for (int attempt = 1; attempt <= eng->p.connect_attempts; attempt++) {
        ret = meta_once(eng, seg, deadline, h, regions_p, &io);
        if (!ret || ret == -EPROTO || ret == -EBADMSG || ret == -EACCES || ret == -ENOKEY)
            break;
        uint64_t wait = (uint64_t)eng_backoff_ms(eng->p.connect_backoff_ms,
                                                 eng->p.connect_backoff_max_ms, attempt) *
                        1000000ull;
        if (attempt == eng->p.connect_attempts || eng_now_ns() + wait >= deadline)
            break;
        atomic_fetch_add(&eng->st.conn_retries, 1);
        eng_dbg(eng, "segment %s: attempt %d failed (%s), retrying", seg->name, attempt,
                strerror(-ret));
        usleep((useconds_t)(wait / 1000));
    }
    if (ret)
        eng_err(eng, "segment %s: handshake failed: %s", seg->name, strerror(-ret));
    return ret;
}

/* ---- the metadata service: p2p, or etcd (eng_meta_etcd.c) ----------------- */

static int p2p_publish(struct eng_meta *m, const struct eng_meta_rec *r)
{
    (void)m;
    (void)r;
    return 0; /* the name is the listen address: nothing to publish */
}

static int p2p_resolve(struct eng_meta *m, const char *name, struct eng_meta_rec *r, uint64_t *rev)
{
    (void)m;
    (void)name;
    (void)r;
    (void)rev;
    return -ENOENT; /* every name is its own host:port */
}

static int p2p_watch(struct eng_meta *m, const char *name, const struct eng_meta_rec *r,
                     uint64_t rev, struct eng_meta_watch **w)
{
    (void)m;
    (void)name;
    (void)r;
    (void)rev;
    *w = NULL;
    return 0;
}

static void p2p_unwatch(struct eng_meta_watch *w)
{
    (void)w;
}

static void p2p_close(struct eng_meta *m)
{
    free(m);
}

static const struct eng_meta_ops p2p_ops = {
    .name = "p2p",
    .publish = p2p_publish,
    .resolve = p2p_resolve,
    .watch = p2p_watch,
    .unwatch = p2p_unwatch,
    .close = p2p_close,
};

int eng_meta_p2p_open(struct eng_ctx *eng, struct eng_meta **m_p)
{
    struct eng_meta *m = calloc(1, sizeof(*m));

    if (!m) {
        eng_err(eng, "engine_create: no memory for the metadata service");
        return -ENOMEM;
    }
    m->ops = &p2p_ops;
    m->eng = eng;
    *m_p = m;
    return 0;
}

int eng_meta_open(struct eng_ctx *eng, const char *spec, struct eng_meta **m_p)
{
    if (!spec || !*spec || !strcmp(spec, "p2p"))
        return eng_meta_p2p_open(eng, m_p);
    if (!strncmp(spec, "etcd://", 7))
        return eng_meta_etcd_open(eng, spec + 7, m_p);
    eng_err(eng, "engine_create: metadata '%s' is neither p2p nor etcd://HOST:PORT[,HOST:PORT...]",
            spec);
    return -EINVAL;
}
