/*
 * Raw peers and forked targets for the suites that speak the wire protocol
 * themselves (they build with the engine's private include path).
 */
#ifndef TESHIM_ENG_RAW_H
#define TESHIM_ENG_RAW_H

#include "eng_proto.h"
#include "eng_test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

static inline int raw_connect(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {10, 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static inline void raw_send(int fd, const struct eng_frame *f, const void *payload, size_t n)
{
    uint8_t h[ENG_FRAME_BYTES];
    eng_frame_encode(f, h);
    ck_assert_int_eq(send(fd, h, sizeof(h), MSG_NOSIGNAL), (ssize_t)sizeof(h));
    if (n)
        ck_assert_int_eq(send(fd, payload, n, MSG_NOSIGNAL), (ssize_t)n);
}

static inline int raw_recv_frame(int fd, struct eng_frame *f)
{
    uint8_t h[ENG_FRAME_BYTES];
    ssize_t n = recv(fd, h, sizeof(h), MSG_WAITALL);
    if (n != (ssize_t)sizeof(h))
        return -1;
    return eng_frame_parse(h, sizeof(h), f);
}

/* HELLO with the given flags (ENG_HELLO_*); the first answer's header in *a. */
static inline void raw_hello_flags(int fd, uint32_t flags, struct eng_frame *a)
{
    uint8_t p[ENG_HELLO_BYTES];
    struct eng_hello h = {.pid = 1, .name = "raw", .flags = flags};
    struct eng_frame f = {.type = ENG_F_HELLO, .payload_len = ENG_HELLO_BYTES};
    eng_hello_encode(&h, NULL, 0, p);
    raw_send(fd, &f, p, sizeof(p));
    ck_assert_int_eq(raw_recv_frame(fd, a), 0);
}

/* The handshake of a target without authentication, HELLO_ACK skipped. */
static inline void raw_hello(int fd)
{
    struct eng_frame a;
    raw_hello_flags(fd, 0, &a);
    ck_assert_int_eq(a.type, ENG_F_HELLO_ACK);
    uint8_t *buf = malloc(a.payload_len);
    ck_assert_int_eq(recv(fd, buf, a.payload_len, MSG_WAITALL), (ssize_t)a.payload_len);
    free(buf);
}

/* A READ of [addr, addr + len), the whole request. */
static inline struct eng_frame raw_read(uint64_t id, uint64_t addr, uint64_t len)
{
    struct eng_frame f = {
        .type = ENG_F_READ, .id = id, .addr = addr, .len = len, .req_addr = addr, .req_len = len};
    return f;
}

/*
 * A target process serving tbuf (allocated before the fork, so every
 * target has it at the same address), filled with the low byte of its port
 * when fill is set. Forked while the test is still single-threaded
 * (ThreadSanitizer cannot follow a fork of a threaded process); it creates
 * its engine when target_start sends it a port.
 */
struct tgt {
    pid_t pid;
    int go, res;
};

/* ... serving same-host peers in mode (engine.local.mode) */
static inline void target_fork_mode(struct tgt *t, char *tbuf, size_t len, bool fill,
                                    enum teshim_local_mode mode)
{
    int go[2], res[2];
    ck_assert_int_eq(pipe(go), 0);
    ck_assert_int_eq(pipe(res), 0);
    t->pid = fork();
    ck_assert_int_ge(t->pid, 0);
    if (t->pid == 0) {
        char addr[64];
        struct teshim_engine_opts o = eng_test_opts(TESHIM_TRANSPORT_TCP, true);
        struct teshim_engine *e;
        int port;
        o.local_mode = mode;
        close(go[1]);
        close(res[0]);
        if (read(go[0], &port, sizeof(port)) != sizeof(port))
            _exit(0);
        eng_test_name(addr, sizeof(addr), port);
        o.listen = addr;
        if (teshim_engine_create(&o, &e))
            _exit(3);
        port = teshim_engine_port(e);
        /* filled before it is registered: the registration's lock orders
         * the fill before the I/O threads' copies (ThreadSanitizer) */
        if (fill)
            memset(tbuf, port & 0xff, len);
        if (teshim_register(e, tbuf, len, "cpu", true))
            _exit(3);
        if (write(res[1], &port, sizeof(port)) != sizeof(port))
            _exit(4);
        for (;;)
            pause();
    }
    close(go[0]);
    close(res[1]);
    t->go = go[1];
    t->res = res[0];
}

/* ... letting same-host initiators copy (the local transport) */
static inline void target_fork(struct tgt *t, char *tbuf, size_t len, bool fill)
{
    target_fork_mode(t, tbuf, len, fill, TESHIM_LOCAL_MODE_INITIATOR);
}

/* An initiator made with o, l[len] registered, its segment on the target
 * at port (opened in *s) on the data path want. */
static inline struct teshim_engine *ini_open(struct teshim_engine_opts o, void *l, size_t len,
                                             int port, const char *want, teshim_segment_t *s)
{
    struct teshim_engine *ini = eng_test_create(&o);
    ck_assert_int_eq(teshim_register(ini, l, len, "cpu", false), 0);
    *s = eng_test_open(ini, port);
    ck_assert_str_eq(teshim_segment_transport(ini, *s), want);
    return ini;
}

/* Start the target on port (0 = any); returns the port it listens on. */
static inline int target_start(struct tgt *t, int port)
{
    ck_assert_int_eq(write(t->go, &port, sizeof(port)), (ssize_t)sizeof(port));
    ck_assert_int_eq(read(t->res, &port, sizeof(port)), (ssize_t)sizeof(port));
    return port;
}

static inline void target_kill(struct tgt *t)
{
    kill(t->pid, SIGKILL);
    waitpid(t->pid, NULL, 0);
    close(t->go);
    close(t->res);
}

#endif
