/*
 * libc socket hooks: socket options on TCP sockets in scope, connect retries
 * with backoff, and a cap on outgoing connections.
 *
 * Options are applied just before the real connect() and listen() (and on a
 * socket returned by accept()), never later: whatever the application sets
 * afterwards wins naturally, and what it set before is recognised by
 * comparing the socket's value with the kernel default read from a fresh
 * socket of the same family (tcp.override = on sets ours anyway).
 *
 * close() is exported too, so every close in the process passes here. Its
 * path is one lock-free load in the per-descriptor state table for
 * descriptors teshim does not track; only sockets created while a TCP policy
 * is active, and listeners, have state.
 */
#include "shim.h"
#include "pol_tcp.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* This file defines the rows of shim_hooks_sock.def. */
#define HOOK(lib, ...) SHIM_PROTO(__VA_ARGS__)
#include "shim_hooks_sock.def"
#undef HOOK

/* ---- per-descriptor state ---------------------------------------------- */

enum {
    ST_TCP = 1u << 0,             /* TCP socket seen at socket() */
    ST_INET6 = 1u << 1,           /* ... of family AF_INET6 */
    ST_SLOT = 1u << 2,            /* holds one of tcp.max_connections */
    ST_LISTEN_INJECTED = 1u << 3, /* a listener teshim set options on */
};

/* Two levels so a process with a high descriptor limit costs nothing until
 * it uses high numbers: 256 chunks of 4096 entries cover 1M descriptors. */
#define FD_CHUNK_BITS 12
#define FD_CHUNK (1u << FD_CHUNK_BITS)
#define FD_CHUNKS 256u

static _Atomic(_Atomic(uint32_t) *) fd_chunks[FD_CHUNKS];

static _Atomic(uint32_t) *fd_entry(int fd, bool create)
{
    if (fd < 0 || (unsigned)fd >= FD_CHUNK * FD_CHUNKS)
        return NULL;
    unsigned top = (unsigned)fd >> FD_CHUNK_BITS;
    _Atomic(uint32_t) *chunk = atomic_load_explicit(&fd_chunks[top], memory_order_acquire);
    if (!chunk && create) {
        /* mmap, not malloc: this may run inside the host's allocator. */
        void *m = mmap(NULL, FD_CHUNK * sizeof(*chunk), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            return NULL;
        _Atomic(uint32_t) *expected = NULL;
        if (atomic_compare_exchange_strong(&fd_chunks[top], &expected, m))
            chunk = m;
        else {
            munmap(m, FD_CHUNK * sizeof(*chunk));
            chunk = expected;
        }
    }
    return chunk ? &chunk[(unsigned)fd & (FD_CHUNK - 1)] : NULL;
}

static uint32_t fd_get(int fd)
{
    _Atomic(uint32_t) *e = fd_entry(fd, false);

    return e ? atomic_load_explicit(e, memory_order_relaxed) : 0;
}

/* false when fd has no entry (out of memory, or above the table). */
static bool fd_or(int fd, uint32_t bits)
{
    _Atomic(uint32_t) *e = fd_entry(fd, true);

    if (!e)
        return false;
    atomic_fetch_or_explicit(e, bits, memory_order_relaxed);
    return true;
}

static void slot_release(void);

/* A new descriptor with number fd: forget what an earlier one left (it was
 * closed behind our back, by dup2 or close_range). */
static void fd_reset(int fd, uint32_t st)
{
    _Atomic(uint32_t) *e = fd_entry(fd, st != 0);
    uint32_t old;

    if (!e)
        return;
    old = atomic_exchange_explicit(e, st, memory_order_relaxed);
    if (old & ST_SLOT)
        slot_release();
}

/* ---- process-wide state -------------------------------------------------- */

static pthread_once_t sock_once = PTHREAD_ONCE_INIT;

static pthread_mutex_t slot_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t slot_cond;
static int64_t slots_used;

/* Kernel defaults of a fresh TCP socket, per family. */
struct fam_defaults {
    atomic_bool ready;
    unsigned known;
    int v[POL_TCP_O_COUNT];
};
static struct fam_defaults fam_defaults[2];
static pthread_mutex_t fam_lock = PTHREAD_MUTEX_INITIALIZER;

static void sock_cond_init(void)
{
    pthread_condattr_t ca;

    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&slot_cond, &ca);
    pthread_condattr_destroy(&ca);
}

static void sock_atfork_child(void)
{
    /* Another thread may have held them at fork; the child is alone now. It
     * inherits the descriptors, so it keeps their slots in its own count. */
    pthread_mutex_init(&slot_lock, NULL);
    pthread_mutex_init(&fam_lock, NULL);
    sock_cond_init();
}

void shim_sock_derive(const struct pol_config *cfg, struct shim_sock_conf *sc, bool quiet)
{
    char err[256];

    if (pol_tcp_scope_parse(pol_str(cfg, POL_TCP_PORTS), pol_str(cfg, POL_TCP_PEERS), &sc->scope,
                            err, sizeof(err)) != 0 &&
        !quiet)
        shim_warn("%s; the TCP scope is left empty (no socket in scope)", err);
    sc->active = pol_gate_verdict(cfg) != POL_SKIP_POLICY && pol_tcp_configured(cfg) &&
                 !pol_tcp_scope_empty(&sc->scope);
    if (!quiet && pol_tcp_configured(cfg) && pol_tcp_scope_empty(&sc->scope))
        shim_info("tcp policy configured but tcp.ports and tcp.peers are empty: no socket in "
                  "scope");
}

static void sock_do_init(void)
{
    sock_cond_init();
    pthread_atfork(NULL, NULL, sock_atfork_child);
}

/* The scope of the configuration this call reads (one per call: a change
 * published meanwhile is seen by the next call). */
static const struct pol_tcp_scope *sock_scope(void)
{
    return &shim_snap()->sock.scope;
}

/* Valid after shim_enter() returned true. */
static bool sock_policy_active(void)
{
    pthread_once(&sock_once, sock_do_init);
    return shim_snap()->sock.active;
}

/* ---- helpers ------------------------------------------------------------- */

static bool is_tcp_args(int domain, int type, int protocol)
{
    return (domain == AF_INET || domain == AF_INET6) && (type & 0xf) == SOCK_STREAM &&
           (protocol == 0 || protocol == IPPROTO_TCP);
}

/* The family of fd if it is a TCP socket, from its state or the kernel. */
static int tcp_family(int fd, uint32_t st)
{
    int dom, type, proto;
    socklen_t l = sizeof(int);

    if (st & ST_TCP)
        return st & ST_INET6 ? AF_INET6 : AF_INET;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &l) != 0)
        return -1;
    l = sizeof(int);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) != 0)
        return -1;
    l = sizeof(int);
    if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &l) != 0)
        return -1;
    return is_tcp_args(dom, type, proto) ? dom : -1;
}

static void read_opts(int fd, unsigned mask, int *v, unsigned *known)
{
    *known = 0;
    for (int o = 0; o < POL_TCP_O_COUNT; o++) {
        int level, name;
        socklen_t l = sizeof(int);
        if (!(mask & (1u << o)))
            continue;
        pol_tcp_opt_id((enum pol_tcp_opt)o, &level, &name);
        if (getsockopt(fd, level, name, &v[o], &l) == 0)
            *known |= 1u << o;
    }
}

static void capture_defaults(int fd, int family)
{
    struct fam_defaults *d = &fam_defaults[family == AF_INET6];

    if (atomic_load_explicit(&d->ready, memory_order_acquire))
        return;
    pthread_mutex_lock(&fam_lock);
    if (!atomic_load_explicit(&d->ready, memory_order_relaxed)) {
        read_opts(fd, (1u << POL_TCP_O_COUNT) - 1, d->v, &d->known);
        atomic_store_explicit(&d->ready, true, memory_order_release);
    }
    pthread_mutex_unlock(&fam_lock);
}

/* The defaults of family; made from a probe socket when no socket of the
 * family went through socket() (one inherited over exec, for example). */
static const struct fam_defaults *get_defaults(int family)
{
    struct fam_defaults *d = &fam_defaults[family == AF_INET6];
    shim_fn_socket_libc real_socket = SHIM_REAL(socket, libc);
    shim_fn_close_libc real_close = SHIM_REAL(close, libc);

    if (!atomic_load_explicit(&d->ready, memory_order_acquire) && real_socket && real_close) {
        int fd = real_socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0) {
            capture_defaults(fd, family);
            real_close(fd);
        }
    }
    return atomic_load_explicit(&d->ready, memory_order_acquire) ? d : NULL;
}

struct apply_result {
    unsigned set;    /* options set */
    unsigned failed; /* options whose setsockopt failed */
    bool unknown;    /* the kernel defaults could not be read */
};

/*
 * Set the wanted options on fd; what the application chose is read from src
 * (fd itself, or the listener an accepted socket inherited from).
 */
static void apply_opts(int fd, int src, int family, bool v4mapped, struct apply_result *r)
{
    const struct pol_config *cfg = shim_cfg();
    struct pol_tcp_plan plan;
    int cur[POL_TCP_O_COUNT] = {0}, app[POL_TCP_O_COUNT] = {0};
    unsigned known;

    memset(r, 0, sizeof(*r));
    pol_tcp_plan(cfg, family, v4mapped, &plan);
    if (!plan.mask)
        return;
    const struct fam_defaults *d = get_defaults(family);
    if (!d) {
        r->unknown = true;
        shim_log_once(POL_LOG_WARN, "tcp: kernel defaults of socket options unknown; options "
                                    "not applied");
        return;
    }
    read_opts(fd, plan.mask, cur, &known);
    if (src != fd) {
        unsigned known_app;
        read_opts(src, plan.mask, app, &known_app);
        known &= known_app;
    }
    unsigned set = pol_tcp_to_set(cfg, &plan, cur, src != fd ? app : cur, d->v, known & d->known);
    for (int o = 0; o < POL_TCP_O_COUNT; o++) {
        int level, name;
        if (!(set & (1u << o)))
            continue;
        pol_tcp_opt_id((enum pol_tcp_opt)o, &level, &name);
        if (setsockopt(fd, level, name, &plan.value[o], sizeof(int)) == 0) {
            r->set |= 1u << o;
        } else {
            r->failed |= 1u << o;
            shim_log_once(POL_LOG_WARN, "tcp: setsockopt %s = %d: %m; left as it was",
                          pol_tcp_opt_name((enum pol_tcp_opt)o), plan.value[o]);
        }
    }
}

/*
 * The outcome of apply_opts: injected when an option was set (a partial
 * application still changed the socket), a fallback when nothing was set
 * because a set failed or the kernel defaults are unknown, otherwise not
 * applicable (everything already as wanted).
 */
static enum shim_ctr apply_outcome(const struct apply_result *r)
{
    if (r->set)
        return SHIM_C_INJECTED;
    return r->failed || r->unknown ? SHIM_C_FALLBACKS : SHIM_C_NOT_APPLICABLE;
}

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static __thread uint64_t sock_rng __attribute__((tls_model("initial-exec")));

static uint32_t sock_rand(void)
{
    if (!sock_rng) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        sock_rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)(uintptr_t)&ts ^ (uint64_t)getpid();
        sock_rng |= 1;
    }
    sock_rng ^= sock_rng << 13;
    sock_rng ^= sock_rng >> 7;
    sock_rng ^= sock_rng << 17;
    return (uint32_t)(sock_rng >> 16);
}

/* Sleep ms; false when a signal cut it short. */
static bool sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

    return clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL) == 0;
}

/* ---- connection cap ------------------------------------------------------ */

/* Take a slot, waiting up to wait_ms; 0 or -EAGAIN. */
static int slot_acquire(int64_t cap, int64_t wait_ms)
{
    struct timespec dl;
    int rc = 0, cancel;

    /* The wait is teshim's, not a cancellation point of the host's connect:
     * a cancel here would leave the lock held. */
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cancel);
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += wait_ms / 1000;
    dl.tv_nsec += (wait_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&slot_lock);
    while (slots_used >= cap && rc == 0)
        rc = wait_ms > 0 ? pthread_cond_timedwait(&slot_cond, &slot_lock, &dl) : ETIMEDOUT;
    if (slots_used < cap) {
        slots_used++;
        rc = 0;
    } else {
        rc = -EAGAIN;
    }
    pthread_mutex_unlock(&slot_lock);
    pthread_setcancelstate(cancel, NULL);
    return rc;
}

static void slot_release(void)
{
    pthread_mutex_lock(&slot_lock);
    if (slots_used > 0)
        slots_used--;
    pthread_cond_signal(&slot_cond);
    pthread_mutex_unlock(&slot_lock);
}

/* ---- hooks ----------------------------------------------------------- */

int shim_hook_socket_libc(int domain, int type, int protocol)
{
    shim_fn_socket_libc real = SHIM_REAL(socket, libc);
    enum shim_hook_id id = SHIM_HK_socket_libc;

    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    if (!shim_enter(id))
        return real(domain, type, protocol);
    int fd = real(domain, type, protocol);
    int err = errno;
    enum shim_ctr o = SHIM_C_NOT_APPLICABLE;
    if (fd < 0) {
        /* counted as the error it is */
    } else if (!is_tcp_args(domain, type, protocol)) {
        fd_reset(fd, 0);
    } else if (!sock_policy_active()) {
        fd_reset(fd, 0);
        o = SHIM_C_SKIPPED;
    } else {
        /* Nothing is changed here (the scope needs the peer), so the call
         * is not applicable; the fresh socket tells the kernel defaults the
         * later decisions compare to. */
        capture_defaults(fd, domain);
        fd_reset(fd, ST_TCP | (domain == AF_INET6 ? ST_INET6 : 0));
    }
    shim_count_result(id, o, fd, err);
    shim_leave();
    errno = err;
    return fd;
}

static bool retryable(int err)
{
    return err == ECONNREFUSED || err == ETIMEDOUT;
}

/* The body of connect() once inside the hook; returns with errno set. */
static int sock_connect(shim_fn_connect_libc real, int fd, const struct sockaddr *addr,
                        socklen_t len)
{
    const struct pol_config *cfg = shim_cfg();
    enum shim_hook_id id = SHIM_HK_connect_libc;
    struct sockaddr_storage local;
    socklen_t llen = sizeof(local);
    const struct sockaddr *lp = NULL;
    bool changed = false, took_slot = false;
    enum shim_ctr o;
    int rc, err;

    size_t need = !addr || len < sizeof(sa_family_t) ? SIZE_MAX
                  : addr->sa_family == AF_INET       ? sizeof(struct sockaddr_in)
                  : addr->sa_family == AF_INET6      ? sizeof(struct sockaddr_in6)
                                                     : SIZE_MAX;
    uint32_t st = fd_get(fd);
    int family = -1;
    enum pol_verdict v = POL_NOT_APPLICABLE;

    if (!sock_policy_active())
        v = POL_SKIP_POLICY;
    else if (need != SIZE_MAX && len >= need && (family = tcp_family(fd, st)) > 0) {
        if (sock_scope()->nports && getsockname(fd, (struct sockaddr *)&local, &llen) == 0)
            lp = (const struct sockaddr *)&local;
        v = pol_tcp_verdict(cfg, sock_scope(), lp, addr);
    }
    if (v != POL_INJECT) {
        rc = real(fd, addr, len);
        err = errno;
        o = shim_verdict_ctr(v);
        goto out;
    }

    struct apply_result ar;
    apply_opts(fd, fd, family, pol_tcp_v4mapped(addr), &ar);
    enum shim_ctr applied = apply_outcome(&ar);
    changed = applied == SHIM_C_INJECTED;

    int fl = fcntl(fd, F_GETFL);
    bool blocking = fl >= 0 && !(fl & O_NONBLOCK);
    int64_t cap = pol_int(cfg, POL_TCP_MAX_CONNECTIONS);
    if (cap > 0 && !(st & ST_SLOT)) {
        changed = true;
        if (slot_acquire(cap, blocking ? pol_int(cfg, POL_TCP_CONNECT_WAIT_MS) : 0) != 0) {
            shim_log_once(POL_LOG_INFO,
                          "tcp: connect over tcp.max_connections = %lld fails with "
                          "EAGAIN",
                          (long long)cap);
            /* The host sees a failure: counted as an error. */
            rc = -1;
            err = EAGAIN;
            o = SHIM_C_INJECTED;
            goto out;
        }
        took_slot = fd_or(fd, ST_SLOT);
        if (!took_slot) {
            /* Its close could not return the slot: do not hold one. */
            slot_release();
            shim_log_once(POL_LOG_WARN,
                          "tcp: descriptor %d cannot be tracked; its connection "
                          "is not counted in tcp.max_connections",
                          fd);
        }
    }

    int retries = blocking ? (int)pol_int(cfg, POL_TCP_CONNECT_RETRIES) : 0;
    int64_t start = mono_ms();
    rc = real(fd, addr, len);
    err = errno;
    for (int k = 0; rc < 0 && retryable(err); k++) {
        int64_t d = pol_tcp_backoff_delay_ms(pol_int(cfg, POL_TCP_CONNECT_BACKOFF_MS), k, retries,
                                             mono_ms() - start,
                                             pol_int(cfg, POL_TCP_CONNECT_MAX_MS), sock_rand());
        if (d < 0)
            break;
        /* A signal during the wait ends the retries with the last real
         * result, as the connect it interrupts would have returned. */
        if (d > 0 && !sleep_ms(d))
            break;
        changed = true;
        shim_debug("tcp: connect fd %d: %s, retry %d after %lld ms", fd, strerror(err), k + 1,
                   (long long)d);
        rc = real(fd, addr, len);
        err = errno;
    }
    if (rc < 0 && err != EINPROGRESS && err != EINTR && took_slot) {
        /* Not connected and not connecting: the slot is free again. */
        _Atomic(uint32_t) *e = fd_entry(fd, false);
        if (e)
            atomic_fetch_and_explicit(e, ~(uint32_t)ST_SLOT, memory_order_relaxed);
        slot_release();
    }
    o = changed ? SHIM_C_INJECTED : applied;

out:
    shim_count_result(id, o, rc, err);
    errno = err;
    return rc;
}

int shim_hook_connect_libc(int fd, const struct sockaddr *addr, socklen_t len)
{
    shim_fn_connect_libc real = SHIM_REAL(connect, libc);

    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    if (!shim_enter(SHIM_HK_connect_libc))
        return real(fd, addr, len);
    int rc = sock_connect(real, fd, addr, len);
    int err = errno;
    shim_leave();
    errno = err;
    return rc;
}

int shim_hook_listen_libc(int fd, int backlog)
{
    shim_fn_listen_libc real = SHIM_REAL(listen, libc);
    enum shim_hook_id id = SHIM_HK_listen_libc;

    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    if (!shim_enter(id))
        return real(fd, backlog);

    enum pol_verdict v = POL_SKIP_POLICY;
    enum shim_ctr o;
    int family = -1;
    struct sockaddr_storage local;
    socklen_t llen = sizeof(local);
    if (sock_policy_active()) {
        family = tcp_family(fd, fd_get(fd));
        if (family < 0)
            v = POL_NOT_APPLICABLE;
        else if (getsockname(fd, (struct sockaddr *)&local, &llen) == 0)
            v = pol_tcp_verdict(shim_cfg(), sock_scope(), (struct sockaddr *)&local, NULL);
        else
            v = POL_NOT_APPLICABLE;
    }
    o = shim_verdict_ctr(v);
    if (v == POL_INJECT) {
        struct apply_result ar;
        /* An IPv6 listener may accept IPv4-mapped peers: IP_TOS as well. */
        apply_opts(fd, fd, family, family == AF_INET6, &ar);
        o = apply_outcome(&ar);
        if (o == SHIM_C_INJECTED)
            fd_or(fd, ST_LISTEN_INJECTED); /* without an entry, accepts decide by scope */
    }
    int rc = real(fd, backlog);
    int err = errno;
    shim_count_result(id, o, rc, err);
    shim_leave();
    errno = err;
    return rc;
}

/* Policy for a socket accept() returned from listener lfd; its outcome. */
static enum shim_ctr sock_accepted(int lfd, int nfd)
{
    struct sockaddr_storage local, peer;
    socklen_t llen = sizeof(local), plen = sizeof(peer);
    enum pol_verdict v = POL_NOT_APPLICABLE;
    uint32_t lst;
    int family;

    fd_reset(nfd, 0);
    if (!sock_policy_active())
        return SHIM_C_SKIPPED;
    lst = fd_get(lfd);
    family = tcp_family(nfd, lst);
    if (family < 0)
        return SHIM_C_NOT_APPLICABLE;
    if (getpeername(nfd, (struct sockaddr *)&peer, &plen) != 0)
        peer.ss_family = AF_UNSPEC;
    if (lst & ST_LISTEN_INJECTED)
        v = POL_INJECT; /* in scope by its local port, as its listener */
    else if (getsockname(nfd, (struct sockaddr *)&local, &llen) == 0 && peer.ss_family != AF_UNSPEC)
        v = pol_tcp_verdict(shim_cfg(), sock_scope(), (struct sockaddr *)&local,
                            (struct sockaddr *)&peer);
    if (v == POL_INJECT) {
        struct apply_result ar;
        /* What the application set on the listener is what it chose for
         * this socket: read it there. Most options are inherited from the
         * listener; SO_PRIORITY is not, and buffers may have grown. */
        apply_opts(nfd, lfd, family, pol_tcp_v4mapped((struct sockaddr *)&peer), &ar);
        /* A socket of a listener teshim configured inherited its options:
         * injected even when nothing more was set here. */
        if (!(lst & ST_LISTEN_INJECTED))
            return apply_outcome(&ar);
    }
    return shim_verdict_ctr(v);
}

int shim_hook_accept_libc(int fd, struct sockaddr *addr, socklen_t *len)
{
    shim_fn_accept_libc real = SHIM_REAL(accept, libc);
    enum shim_hook_id id = SHIM_HK_accept_libc;

    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    if (!shim_enter(id))
        return real(fd, addr, len);
    int nfd = real(fd, addr, len);
    int err = errno;
    /* Nothing accepted, nothing decided: an empty queue of a non-blocking
     * listener counts as would_block, a real failure as an error. */
    shim_count_result(id, nfd >= 0 ? sock_accepted(fd, nfd) : SHIM_C_UNDECIDED, nfd, err);
    shim_leave();
    errno = err;
    return nfd;
}

int shim_hook_accept4_libc(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    shim_fn_accept4_libc real = SHIM_REAL(accept4, libc);
    enum shim_hook_id id = SHIM_HK_accept4_libc;

    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    if (!shim_enter(id))
        return real(fd, addr, len, flags);
    int nfd = real(fd, addr, len, flags);
    int err = errno;
    /* Nothing accepted, nothing decided: an empty queue of a non-blocking
     * listener counts as would_block, a real failure as an error. */
    shim_count_result(id, nfd >= 0 ? sock_accepted(fd, nfd) : SHIM_C_UNDECIDED, nfd, err);
    shim_leave();
    errno = err;
    return nfd;
}

int shim_hook_close_libc(int fd)
{
    shim_fn_close_libc real = SHIM_REAL(close, libc);
    enum shim_hook_id id = SHIM_HK_close_libc;

    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    _Atomic(uint32_t) *e = fd_entry(fd, false);
    if (!e || atomic_load_explicit(e, memory_order_relaxed) == 0)
        return real(fd);

    /* Forget the state before the descriptor number can be reused. */
    uint32_t st = atomic_exchange_explicit(e, 0, memory_order_relaxed);
    if (st & ST_SLOT)
        slot_release();
    if (!shim_enter(id))
        return real(fd);
    int rc = real(fd);
    int err = errno;
    shim_count_result(id, st & ST_SLOT ? SHIM_C_INJECTED : SHIM_C_NOT_APPLICABLE, rc, err);
    shim_leave();
    errno = err;
    return rc;
}

/* Resolve the real functions early: close() may run in a signal handler,
 * where the first resolution (dlvsym) would not be safe. */
__attribute__((constructor)) static void sock_resolve_early(void)
{
    int saved = errno;

    for (int h = 0; h < SHIM_HK_COUNT; h++)
        if (shim_hooks[h].lib == SHIM_LIB_LIBC)
            shim_resolve((enum shim_hook_id)h);
    errno = saved;
}

#define HOOK(lib, ...) SHIM_SYMVER(__VA_ARGS__)
#include "shim_hooks_sock.def"
#undef HOOK
