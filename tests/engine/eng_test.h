/* Helpers shared by the engine suites. */
#ifndef TESHIM_ENG_TEST_H
#define TESHIM_ENG_TEST_H

#include "teshim/engine.h"

#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ENG_TEST_SLICE (64 * 1024) /* slice_bytes of eng_test_opts */

static inline struct teshim_engine_opts eng_test_opts(enum teshim_transport tr, bool listen)
{
    struct teshim_engine_opts o = {
        .size = sizeof(o),
        .listen = listen ? "127.0.0.1:0" : NULL,
        .transport = tr,
        .io_threads = 2,
        .slice_bytes = ENG_TEST_SLICE,
        .conns_per_peer = 2,
        .connect_attempts = 3,
        .connect_backoff_ms = 10,
        .connect_timeout_ms = 2000,
        .request_timeout_ms = 5000,
        .no_policy = true,
        /* the same on every host (auto depends on its cores); the suites'
         * peers are all on this host. check_engine_xfer runs both modes. */
        .same_host_send = TESHIM_SAME_HOST_SERIAL,
        /* TESHIM_TRANSPORT_LOCAL: the local transport, the initiator
         * copies; the target-checked same-host path (local-target) is
         * asked for with local_mode = TESHIM_LOCAL_MODE_TARGET */
        .local_mode =
            tr == TESHIM_TRANSPORT_LOCAL ? TESHIM_LOCAL_MODE_INITIATOR : TESHIM_LOCAL_MODE_DEFAULT,
    };
    return o;
}

/* The IPv4 port of socket fd's own end (peer false) or of its peer's; -1
 * for anything else. The wrapped-syscall suites tell the initiator's
 * sockets from the target's with it. */
static inline int eng_test_sock_port(int fd, bool peer)
{
    struct sockaddr_storage sa;
    socklen_t sl = sizeof(sa);

    if ((peer ? getpeername : getsockname)(fd, (struct sockaddr *)&sa, &sl) ||
        sa.ss_family != AF_INET)
        return -1;
    return ntohs(((struct sockaddr_in *)&sa)->sin_port);
}

static inline struct teshim_engine *eng_test_create(const struct teshim_engine_opts *o)
{
    struct teshim_engine *e = NULL;
    int ret = teshim_engine_create(o, &e);
    ck_assert_int_eq(ret, 0);
    return e;
}

static inline void eng_test_name(char *buf, size_t len, int port)
{
    snprintf(buf, len, "127.0.0.1:%d", port);
}

static inline teshim_segment_t eng_test_open(struct teshim_engine *ini, int port)
{
    char name[64];
    teshim_segment_t s = -1;
    eng_test_name(name, sizeof(name), port);
    ck_assert_int_eq(teshim_segment_open(ini, name, &s), 0);
    return s;
}

/* FNV-1a 64 over a buffer. */
static inline uint64_t eng_test_sum(const void *p, size_t n)
{
    const unsigned char *c = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ c[i]) * 0x100000001b3ull;
    return h;
}

static inline void eng_test_fill(void *p, size_t n, uint32_t seed)
{
    unsigned char *c = p;
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        c[i] = (unsigned char)(x >> 16);
    }
}

/* Submit one request and wait for it; returns the final status. */
static inline struct teshim_task_status eng_test_one(struct teshim_engine *e,
                                                     const struct teshim_request *r)
{
    teshim_batch_t b;
    struct teshim_task_status st;
    ck_assert_int_eq(teshim_batch_alloc(e, 1, &b), 0);
    ck_assert_int_eq(teshim_submit(e, b, r, 1), 0);
    ck_assert_int_ge(teshim_batch_wait(e, b, 20000), 0);
    ck_assert_int_eq(teshim_task_status(e, b, 0, &st), 0);
    ck_assert_int_eq(teshim_batch_free(e, b), 0);
    return st;
}

/* The engine's log (stderr) sent to an unlinked file while a test runs. */
struct eng_test_log {
    int fd, saved;
};

static inline struct eng_test_log eng_test_log_capture(void)
{
    char path[] = "/tmp/teshim-log-XXXXXX";
    struct eng_test_log l = {mkstemp(path), -1};

    ck_assert_int_ge(l.fd, 0);
    unlink(path);
    fflush(stderr);
    l.saved = dup(2);
    ck_assert_int_ge(l.saved, 0);
    ck_assert_int_eq(dup2(l.fd, 2), 2);
    return l;
}

/* Back to the real stderr (LeakSanitizer reports there at exit). A
 * sanitizer's report made meanwhile went to the file: copied out. */
static inline void eng_test_log_release(struct eng_test_log *l)
{
    static char buf[1 << 20];
    ssize_t n = pread(l->fd, buf, sizeof(buf) - 1, 0);

    buf[n > 0 ? n : 0] = '\0';
    if (n > 0 && strstr(buf, "Sanitizer") && write(l->saved, buf, (size_t)n) < 0)
        n = 0;
    fflush(stderr);
    dup2(l->saved, 2);
    close(l->saved);
    close(l->fd);
}

static inline off_t eng_test_log_size(const struct eng_test_log *l)
{
    struct stat st;
    return fstat(l->fd, &st) ? -1 : st.st_size;
}

/* Lines of the captured log that contain what. */
static inline int eng_test_log_lines(const struct eng_test_log *l, const char *what)
{
    char line[600];
    int n = 0;
    FILE *f = fdopen(dup(l->fd), "r");

    ck_assert_ptr_nonnull(f);
    rewind(f);
    while (fgets(line, sizeof(line), f))
        n += strstr(line, what) != NULL;
    fclose(f);
    return n;
}

#endif
