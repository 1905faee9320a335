/*
 * The public API: argument validation, registrations, segments, batches,
 * the concurrency limiter, and dispatch to the transports.
 */
#include "eng.h"
#include "eng_copy.h"
#include "pol.h"
#include "pol_cuda.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define BATCH_MAX_REQUESTS (1u << 20)

uint64_t eng_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void eng_log(const struct teshim_engine *eng, int level, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    char buf[512];
    int saved = errno;
    int n;
    va_list ap;

    if (eng && level > eng->p.log_level)
        goto out;
    n = snprintf(buf, sizeof(buf), "teshim-engine[%d] %s: ", (int)getpid(), names[level]);
    va_start(ap, fmt);
    n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(buf) - 2)
        n = (int)sizeof(buf) - 2;
    buf[n++] = '\n';
    if (write(2, buf, (size_t)n) < 0)
        n = 0;
out:
    errno = saved;
}

int eng_backoff_ms(const struct eng_params *p, int attempt)
{
    uint64_t d = (uint64_t)p->connect_backoff_ms;
    for (int i = 1; i < attempt && d < (uint64_t)p->connect_backoff_max_ms; i++)
        d *= 2;
    if (d > (uint64_t)p->connect_backoff_max_ms)
        d = (uint64_t)p->connect_backoff_max_ms;
    /* full jitter over the upper half: spreads peers restarting together */
    uint64_t r = (eng_now_ns() >> 10) ^ ((uint64_t)attempt * 0x9e3779b97f4a7c15ull);
    r ^= r >> 17;
    return (int)(d / 2 + r % (d / 2 + 1));
}

static void seg_free(struct eng_segment *seg);
static void task_complete(struct teshim_engine *eng, struct eng_task *t, int err);

/* ---- parameters ------------------------------------------------------- */

static void pol_diag(void *arg, enum pol_log_level level, const char *msg)
{
    eng_log(NULL, level <= POL_LOG_WARN ? ENG_LOG_WARN : ENG_LOG_INFO, "config: %s", msg);
}

/* Online CPUs, at least 1. */
static int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > INT_MAX ? INT_MAX : (int)n;
}

/* CPUs this process may run on (its affinity mask, as a cpuset or
 * taskset leaves it), else the online ones. */
static int usable_cpus(void)
{
    cpu_set_t set;

    if (!sched_getaffinity(0, sizeof(set), &set) && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    return online_cpus();
}

static pthread_mutex_t pol_lock = PTHREAD_MUTEX_INITIALIZER;

static int load_params(const struct teshim_engine_opts *o, struct eng_params *p)
{
    struct pol_config *cfg = calloc(1, sizeof(*cfg));
    struct pol_sources src = {.environ = o->no_policy ? NULL : environ,
                              .program = program_invocation_short_name,
                              .etc_path = o->no_policy ? "/nonexistent" : NULL,
                              .diag = pol_diag};

    if (!cfg) {
        eng_err(NULL, "engine_create: no memory for the policy table");
        return -ENOMEM;
    }
    pthread_mutex_lock(&pol_lock); /* pol_load is not reentrant */
    pol_load(cfg, &src);
    pthread_mutex_unlock(&pol_lock);
    p->transport = (int)pol_int(cfg, POL_ENGINE_TRANSPORT);
    p->io_threads = (int)pol_int(cfg, POL_ENGINE_TCP_IO_THREADS);
    p->slice_bytes = (uint64_t)pol_int(cfg, POL_ENGINE_TCP_SLICE_BYTES);
    p->conns_per_peer = (int)pol_int(cfg, POL_ENGINE_TCP_CONNS_PER_PEER);
    p->same_host_send = (int)pol_int(cfg, POL_ENGINE_TCP_SAME_HOST_SEND);
    p->max_conns = (int)pol_int(cfg, POL_ENGINE_TCP_MAX_CONNS);
    p->nodelay = pol_int(cfg, POL_ENGINE_TCP_NODELAY) != 0;
    p->sockbuf = (int)pol_int(cfg, POL_ENGINE_TCP_SOCKBUF_BYTES);
    p->max_inflight = (int)pol_int(cfg, POL_ENGINE_MAX_INFLIGHT);
    p->connect_attempts = (int)pol_int(cfg, POL_ENGINE_CONNECT_ATTEMPTS);
    p->connect_backoff_ms = (int)pol_int(cfg, POL_ENGINE_CONNECT_BACKOFF_MS);
    p->connect_backoff_max_ms = (int)pol_int(cfg, POL_ENGINE_CONNECT_BACKOFF_MAX_MS);
    p->connect_timeout_ms = (int)pol_int(cfg, POL_ENGINE_CONNECT_TIMEOUT_MS);
    p->idle_timeout_ms = (int)pol_int(cfg, POL_ENGINE_IDLE_TIMEOUT_MS);
    p->request_timeout_ms = (int)pol_int(cfg, POL_ENGINE_REQUEST_TIMEOUT_MS);
    p->local_serve = pol_int(cfg, POL_ENGINE_LOCAL_SERVE) != 0;
    p->log_level = (int)pol_int(cfg, POL_LOG_LEVEL);
    p->cuda_chunk = (uint64_t)pol_int(cfg, POL_CUDA_BOUNCE_CHUNK_BYTES);
    p->cuda_buffers = (int)pol_cuda_buffers(cfg);
    p->cuda_threads = (int)pol_int(cfg, POL_CUDA_COPY_THREADS);
    p->cuda_pinned_max = (uint64_t)pol_int(cfg, POL_CUDA_PINNED_MAX_BYTES);
    if (p->log_level > ENG_LOG_DEBUG)
        p->log_level = ENG_LOG_DEBUG;
    free(cfg);

    /* the caller's overrides, each checked against the table's range */
#define OVERRIDE(field, value, lo, hi)                                                             \
    do {                                                                                           \
        if (value) {                                                                               \
            if ((int64_t)(value) < (lo) || (int64_t)(value) > (hi)) {                              \
                eng_err(NULL, "engine_create: %s = %lld out of range [%lld, %lld]", #value,        \
                        (long long)(value), (long long)(lo), (long long)(hi));                     \
                return -EINVAL;                                                                    \
            }                                                                                      \
            p->field = (__typeof__(p->field))(value);                                              \
        }                                                                                          \
    } while (0)
    OVERRIDE(io_threads, o->io_threads, 1, 64);
    OVERRIDE(slice_bytes, o->slice_bytes, 4096, ENG_SLICE_MAX);
    OVERRIDE(conns_per_peer, o->conns_per_peer, 1, 64);
    OVERRIDE(max_conns, o->max_conns, 1, 65536);
    OVERRIDE(max_inflight, o->max_inflight, 1, 1 << 20);
    OVERRIDE(connect_attempts, o->connect_attempts, 1, 100);
    OVERRIDE(connect_backoff_ms, o->connect_backoff_ms, 1, 60000);
    OVERRIDE(connect_timeout_ms, o->connect_timeout_ms, 10, 3600000);
    OVERRIDE(request_timeout_ms, o->request_timeout_ms, 10, 86400000);
    if (o->idle_timeout_ms < 0)
        p->idle_timeout_ms = 0;
    else
        OVERRIDE(idle_timeout_ms, o->idle_timeout_ms, 1, 86400000);
#undef OVERRIDE
    if (o->transport > TESHIM_TRANSPORT_LOCAL || (int)o->transport < 0) {
        eng_err(NULL, "engine_create: unknown transport %d", (int)o->transport);
        return -EINVAL;
    }
    if (o->transport)
        p->transport = (int)o->transport - 1;
    if (o->same_host_send > TESHIM_SAME_HOST_PARALLEL || (int)o->same_host_send < 0) {
        eng_err(NULL, "engine_create: unknown same_host_send %d", (int)o->same_host_send);
        return -EINVAL;
    }
    if (o->same_host_send)
        p->same_host_send = (int)o->same_host_send - 1;
    if (!p->io_threads) {
        int n = online_cpus();
        p->io_threads = n > 64 ? 64 : n;
    }
    if (p->same_host_send == ENG_SAME_HOST_AUTO)
        p->same_host_send = usable_cpus() <= 4 ? ENG_SAME_HOST_SERIAL : ENG_SAME_HOST_PARALLEL;
    return 0;
}

static void read_boot_id(uint8_t id[16])
{
    char buf[64] = "";
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    size_t j = 0;

    memset(id, 0, 16);
    if (fd < 0)
        return;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    for (ssize_t i = 0; i < n && j < 32; i++) {
        int c = buf[i], v;
        if (c >= '0' && c <= '9')
            v = c - '0';
        else if (c >= 'a' && c <= 'f')
            v = c - 'a' + 10;
        else
            continue;
        id[j / 2] = (uint8_t)(id[j / 2] | (j % 2 ? v : v << 4));
        j++;
    }
}

/* ---- engine ----------------------------------------------------------- */

int teshim_engine_create(const struct teshim_engine_opts *user, struct teshim_engine **eng_p)
{
    struct teshim_engine_opts copy = {0}, *opts = &copy;
    struct teshim_engine *eng;
    int ret;

    if (!user || !eng_p || user->size < TESHIM_ENGINE_OPTS_SIZE_V1) {
        eng_err(NULL, "engine_create: %s",
                !user || !eng_p ? "NULL argument" : "opts.size too small");
        return -EINVAL;
    }
    /* an older caller's struct ends early: the fields it lacks stay 0 (policy) */
    memcpy(&copy, user, user->size < sizeof(copy) ? user->size : sizeof(copy));
    if (opts->metadata && strcmp(opts->metadata, "p2p")) {
        eng_err(NULL, "engine_create: metadata '%s' not supported (p2p)", opts->metadata);
        return -EINVAL;
    }
    if (opts->local_name && (!*opts->local_name || strlen(opts->local_name) >= ENG_NAME_MAX)) {
        eng_err(NULL, "engine_create: local_name must be 1..%d bytes", ENG_NAME_MAX - 1);
        return -EINVAL;
    }
    eng = calloc(1, sizeof(*eng));
    if (!eng) {
        eng_err(NULL, "engine_create: no memory for the engine");
        return -ENOMEM;
    }
    ret = load_params(opts, &eng->p);
    if (ret)
        goto err_free;
    if (opts->local_name) {
        strcpy(eng->name, opts->local_name);
    } else {
        char host[40] = "host";
        gethostname(host, sizeof(host) - 1);
        snprintf(eng->name, sizeof(eng->name), "%.40s:%d", host, (int)getpid());
    }
    eng->port = -1;
    read_boot_id(eng->boot_id);
    eng->words.probe = eng_now_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)eng;
    pthread_rwlock_init(&eng->reg_lock, NULL);
    pthread_mutex_init(&eng->seg_lock, NULL);
    pthread_rwlock_init(&eng->batch_lock, NULL);
    pthread_mutex_init(&eng->lim_lock, NULL);
    if (opts->listen) {
        if (strlen(opts->listen) >= sizeof(eng->listen_host)) {
            eng_err(eng, "engine_create: listen address too long");
            ret = -EINVAL;
            goto err_locks;
        }
        strcpy(eng->listen_host, opts->listen);
        eng->port = 0;
    }
    ret = eng_tcp_create(eng, &eng->tcp);
    if (ret)
        goto err_locks;
    ret = eng_local_create(eng, &eng->local);
    if (ret)
        goto err_tcp;
    if (opts->listen && eng->p.local_serve) {
        /* Yama ptrace_scope 1 would refuse process_vm_* from peers; without
         * Yama this fails with EINVAL, which is fine. */
        prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
    }
    *eng_p = eng;
    return 0;

err_tcp:
    eng->tcp->ops.destroy(eng->tcp);
err_locks:
    pthread_mutex_destroy(&eng->lim_lock);
    pthread_rwlock_destroy(&eng->batch_lock);
    pthread_mutex_destroy(&eng->seg_lock);
    pthread_rwlock_destroy(&eng->reg_lock);
err_free:
    free(eng);
    return ret;
}

void teshim_engine_destroy(struct teshim_engine *eng)
{
    if (!eng)
        return;
    struct eng_task *queued;
    size_t nqueued = 0;

    /* device tasks in a staging copy finish first: they start transports */
    eng_dev_quiesce(eng);
    /* the limiter's queue is emptied first: a request finished while one
     * transport is destroyed would otherwise start a queued one on another,
     * maybe already freed */
    pthread_mutex_lock(&eng->lim_lock);
    queued = eng->wait_head;
    eng->wait_head = eng->wait_tail = NULL;
    pthread_mutex_unlock(&eng->lim_lock);
    /* the transports fail what is in flight */
    eng->tcp->ops.destroy(eng->tcp);
    eng->local->ops.destroy(eng->local);
    /* a READ the transports completed meanwhile copies to its device */
    eng_dev_quiesce(eng);
    while (queued) {
        struct eng_task *t = queued;
        queued = t->next;
        atomic_fetch_sub(&eng->st.waiting, 1);
        task_complete(eng, t, -ECANCELED);
        nqueued++;
    }
    if (nqueued)
        eng_info(eng, "engine_destroy: %zu queued requests cancelled", nqueued);
    for (size_t i = 0; i < eng->nsegs; i++)
        if (eng->segs[i])
            seg_free(eng->segs[i]);
    free(eng->segs);
    for (size_t i = 0; i < eng->capbatches; i++) {
        struct eng_batch *b = eng->batches[i];
        if (!b)
            continue;
        pthread_mutex_destroy(&b->lock);
        pthread_cond_destroy(&b->cond);
        free(b->tasks);
        free(b);
    }
    free(eng->batches);
    for (size_t i = 0; i < eng->nregs; i++)
        free(eng->regs[i]);
    free(eng->regs);
    pthread_mutex_destroy(&eng->lim_lock);
    pthread_rwlock_destroy(&eng->batch_lock);
    pthread_mutex_destroy(&eng->seg_lock);
    pthread_rwlock_destroy(&eng->reg_lock);
    free(eng);
}

int teshim_engine_port(const struct teshim_engine *eng)
{
    if (!eng)
        return -EINVAL;
    return eng->port > 0 ? eng->port : -ENOTCONN;
}

void eng_hello_self(struct teshim_engine *eng, struct eng_hello *h)
{
    memset(h, 0, sizeof(*h));
    memcpy(h->boot_id, eng->boot_id, 16);
    h->pid = (uint32_t)getpid();
    h->probe_addr = eng->p.local_serve ? (uint64_t)(uintptr_t)&eng->words : 0;
    h->probe_value = eng->words.probe;
    strcpy(h->name, eng->name);
}

/* ---- registrations ---------------------------------------------------- */

/* Index of the first region with addr > a. */
static size_t reg_upper(struct teshim_engine *eng, uint64_t a)
{
    size_t lo = 0, hi = eng->nregs;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (eng->regs[mid]->addr <= a)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The region containing [a, a+len), reg_lock held; NULL if none. */
static struct eng_region *reg_find(struct teshim_engine *eng, uint64_t a, uint64_t len)
{
    size_t i = reg_upper(eng, a);
    if (!i || a + len < a)
        return NULL;
    struct eng_region *r = eng->regs[i - 1];
    if (a + len > r->addr + r->len)
        return NULL;
    return r;
}

int teshim_register(struct teshim_engine *eng, void *addr, size_t len, const char *location,
                    bool remote_accessible)
{
    struct eng_region *r;
    int dev, ret;
    uint64_t a = (uint64_t)(uintptr_t)addr;

    if (!eng || !addr || !len || a + len < a) {
        eng_err(eng, "register: %s",
                !eng    ? "NULL engine"
                : !addr ? "NULL address"
                : !len  ? "zero length"
                        : "range wraps around");
        return -EINVAL;
    }
    if (eng_location_parse(location, &dev)) {
        eng_err(eng, "register: location '%s' is neither cpu nor cuda:N",
                location ? location : "(null)");
        return -EINVAL;
    }
    if (dev >= 0) {
        ret = eng_copy_open(eng);
        if (ret)
            return ret;
    }
    r = calloc(1, sizeof(*r));
    if (!r) {
        eng_err(eng, "register: no memory for a region");
        return -ENOMEM;
    }
    r->addr = a;
    r->len = len;
    r->remote = remote_accessible;
    r->cuda_dev = dev;
    pthread_rwlock_wrlock(&eng->reg_lock);
    size_t i = reg_upper(eng, a);
    if ((i && eng->regs[i - 1]->addr + eng->regs[i - 1]->len > a) ||
        (i < eng->nregs && eng->regs[i]->addr < a + len)) {
        eng_err(eng, "register: [%p, +%zu) overlaps a registration", addr, len);
        ret = -EEXIST;
        goto err_unlock;
    }
    if (eng->nregs == eng->capregs) {
        size_t cap = eng->capregs ? eng->capregs * 2 : 16;
        struct eng_region **n = realloc(eng->regs, cap * sizeof(*n));
        if (!n) {
            eng_err(eng, "register: no memory for %zu regions", cap);
            ret = -ENOMEM;
            goto err_unlock;
        }
        eng->regs = n;
        eng->capregs = cap;
    }
    memmove(eng->regs + i + 1, eng->regs + i, (eng->nregs - i) * sizeof(*eng->regs));
    eng->regs[i] = r;
    eng->nregs++;
    pthread_rwlock_unlock(&eng->reg_lock);
    return 0;

err_unlock:
    pthread_rwlock_unlock(&eng->reg_lock);
    free(r);
    return ret;
}

int teshim_unregister(struct teshim_engine *eng, void *addr)
{
    uint64_t a = (uint64_t)(uintptr_t)addr;
    struct eng_region *r = NULL;

    if (!eng || !addr) {
        eng_err(eng, "unregister: NULL argument");
        return -EINVAL;
    }
    pthread_rwlock_wrlock(&eng->reg_lock);
    size_t i = reg_upper(eng, a);
    if (i && eng->regs[i - 1]->addr == a) {
        r = eng->regs[i - 1];
        memmove(eng->regs + i - 1, eng->regs + i, (eng->nregs - i) * sizeof(*eng->regs));
        eng->nregs--;
        /* same-host peers see their cached list is stale (eng_local.c) */
        atomic_fetch_add(&eng->words.unreg_gen, 1);
    }
    pthread_rwlock_unlock(&eng->reg_lock);
    if (!r) {
        eng_err(eng, "unregister: no registration starts at %p", addr);
        return -ENOENT;
    }
    /* peers' requests already admitted finish before the memory goes */
    while (atomic_load(&r->users))
        usleep(100);
    free(r);
    return 0;
}

struct eng_region *eng_region_get(struct teshim_engine *eng, uint64_t addr, uint64_t len)
{
    pthread_rwlock_rdlock(&eng->reg_lock);
    struct eng_region *r = reg_find(eng, addr, len);
    if (r && !r->remote)
        r = NULL;
    if (r)
        atomic_fetch_add(&r->users, 1);
    pthread_rwlock_unlock(&eng->reg_lock);
    return r;
}

void eng_region_put(struct eng_region *r)
{
    if (r)
        atomic_fetch_sub(&r->users, 1);
}

int eng_region_list(struct teshim_engine *eng, struct eng_region_desc **out, uint32_t *n)
{
    uint32_t k = 0;
    pthread_rwlock_rdlock(&eng->reg_lock);
    struct eng_region_desc *d = malloc((eng->nregs + 1) * sizeof(*d));
    if (!d) {
        pthread_rwlock_unlock(&eng->reg_lock);
        return -ENOMEM;
    }
    for (size_t i = 0; i < eng->nregs && k < ENG_MAX_REGIONS; i++) {
        if (!eng->regs[i]->remote)
            continue;
        d[k].addr = eng->regs[i]->addr;
        d[k].len = eng->regs[i]->len;
        d[k].flags = eng->regs[i]->cuda_dev >= 0 ? ENG_REGION_DEVICE : 0;
        k++;
    }
    pthread_rwlock_unlock(&eng->reg_lock);
    *out = d;
    *n = k;
    return 0;
}

/* ---- segments --------------------------------------------------------- */

int eng_seg_check(struct eng_segment *seg, uint64_t a, uint64_t len, uint64_t gen)
{
    int ret = -EFAULT;

    pthread_rwlock_rdlock(&seg->regions_lock);
    if (gen != seg->regions_gen)
        ret = -ESTALE;
    for (uint32_t i = 0; i < seg->nregions && ret == -EFAULT; i++) {
        const struct eng_region_desc *d = &seg->regions[i];
        /* device memory is not reachable with process_vm_* */
        if (!(d->flags & ENG_REGION_DEVICE) && a >= d->addr && a + len >= a &&
            a + len <= d->addr + d->len)
            ret = 0;
    }
    pthread_rwlock_unlock(&seg->regions_lock);
    return ret;
}

bool eng_seg_in_device(struct eng_segment *seg, uint64_t a, uint64_t len)
{
    bool in = false;

    pthread_rwlock_rdlock(&seg->regions_lock);
    for (uint32_t i = 0; i < seg->nregions && !in; i++) {
        const struct eng_region_desc *d = &seg->regions[i];
        in = (d->flags & ENG_REGION_DEVICE) && a >= d->addr && a + len >= a &&
             a + len <= d->addr + d->len;
    }
    pthread_rwlock_unlock(&seg->regions_lock);
    return in;
}

void eng_seg_set_regions(struct eng_segment *seg, struct eng_region_desc *regions, uint32_t n,
                         uint64_t gen)
{
    pthread_rwlock_wrlock(&seg->regions_lock);
    free(seg->regions);
    seg->regions = regions;
    seg->nregions = n;
    seg->regions_gen = gen;
    pthread_rwlock_unlock(&seg->regions_lock);
}

/* A segment's memory (its transports' state is theirs to release). The
 * device path is a bare segment: no list, no locks of its own. */
static void seg_free(struct eng_segment *seg)
{
    free(seg->dev_path);
    pthread_mutex_destroy(&seg->refresh_lock);
    pthread_rwlock_destroy(&seg->regions_lock);
    free(seg->regions);
    free(seg);
}

static struct eng_segment *seg_lookup(struct teshim_engine *eng, teshim_segment_t id)
{
    struct eng_segment *s = NULL;
    pthread_mutex_lock(&eng->seg_lock);
    if (id >= 0 && (size_t)id < eng->nsegs)
        s = eng->segs[id];
    pthread_mutex_unlock(&eng->seg_lock);
    return s;
}

int teshim_segment_open(struct teshim_engine *eng, const char *name, teshim_segment_t *seg_p)
{
    struct eng_segment *seg;
    int ret;

    if (!eng || !name || !seg_p || strlen(name) >= sizeof(seg->name)) {
        eng_err(eng, "segment_open: %s",
                name && strlen(name) >= 300 ? "name too long" : "NULL argument");
        return -EINVAL;
    }
    seg = calloc(1, sizeof(*seg));
    if (!seg) {
        eng_err(eng, "segment_open: no memory for a segment");
        return -ENOMEM;
    }
    strcpy(seg->name, name);
    pthread_rwlock_init(&seg->regions_lock, NULL);
    pthread_mutex_init(&seg->refresh_lock, NULL);
    ret = eng_parse_hostport(name, false, &seg->sa, &seg->salen);
    if (ret) {
        eng_err(eng, "segment_open: '%s' is not a reachable host:port", name);
        goto err_free;
    }
    ret = eng_meta_fetch(eng, seg, &seg->hello, &seg->regions);
    if (ret)
        goto err_free;
    seg->nregions = seg->hello.nregions;

    /* data path: local when asked (or auto) and permitted, else tcp */
    ret = -EOPNOTSUPP;
    if (eng->p.transport != 1) {
        ret = eng->local->ops.seg_open(eng->local, seg);
        if (!ret)
            seg->tp = eng->local;
        else if (eng->p.transport == 2) {
            atomic_fetch_add(&eng->st.local_fallbacks, 1);
            eng_info(eng, "segment %s: local transport not usable (%s), using tcp", name,
                     strerror(-ret));
        }
    }
    if (ret) {
        ret = eng->tcp->ops.seg_open(eng->tcp, seg);
        if (ret)
            goto err_free;
        seg->tp = eng->tcp;
    }

    pthread_mutex_lock(&eng->seg_lock);
    if (eng->nsegs == eng->capsegs) {
        size_t cap = eng->capsegs ? eng->capsegs * 2 : 16;
        struct eng_segment **n = realloc(eng->segs, cap * sizeof(*n));
        if (!n) {
            pthread_mutex_unlock(&eng->seg_lock);
            eng_err(eng, "segment_open: no memory for %zu segments", cap);
            ret = -ENOMEM;
            goto err_tp;
        }
        eng->segs = n;
        eng->capsegs = cap;
    }
    seg->id = (int64_t)eng->nsegs;
    eng->segs[eng->nsegs++] = seg;
    pthread_mutex_unlock(&eng->seg_lock);
    *seg_p = seg->id;
    return 0;

err_tp:
    seg->tp->ops.seg_close(seg->tp, seg);
err_free:
    seg_free(seg);
    return ret;
}

int teshim_segment_regions(struct teshim_engine *eng, teshim_segment_t id,
                           struct teshim_region *regions, size_t max)
{
    struct eng_segment *s = eng ? seg_lookup(eng, id) : NULL;
    if (!s || (max && !regions)) {
        eng_err(eng, "segment_regions: %s", !s ? "invalid segment" : "NULL regions");
        return -EINVAL;
    }
    pthread_rwlock_rdlock(&s->regions_lock);
    int n = (int)s->nregions;
    for (size_t i = 0; i < s->nregions && i < max; i++) {
        regions[i].addr = s->regions[i].addr;
        regions[i].len = s->regions[i].len;
        regions[i].flags = s->regions[i].flags & ENG_REGION_DEVICE ? TESHIM_REGION_DEVICE : 0;
    }
    pthread_rwlock_unlock(&s->regions_lock);
    return n;
}

const char *teshim_segment_transport(struct teshim_engine *eng, teshim_segment_t id)
{
    struct eng_segment *s = eng ? seg_lookup(eng, id) : NULL;
    return s ? s->tp->ops.name : NULL;
}

int teshim_segment_close(struct teshim_engine *eng, teshim_segment_t id)
{
    struct eng_segment *s = NULL;
    int ret = 0;

    if (!eng)
        return -EINVAL;
    pthread_mutex_lock(&eng->seg_lock);
    if (id >= 0 && (size_t)id < eng->nsegs)
        s = eng->segs[id];
    if (!s)
        ret = -EINVAL;
    else if (atomic_load(&s->busy) || (s->dev_path && atomic_load(&s->dev_path->busy)))
        ret = -EBUSY;
    else
        eng->segs[id] = NULL;
    pthread_mutex_unlock(&eng->seg_lock);
    if (ret) {
        eng_err(eng, "segment_close: %s",
                ret == -EBUSY ? "requests unfinished" : "invalid segment");
        return ret;
    }
    s->tp->ops.seg_close(s->tp, s);
    if (s->dev_path)
        s->dev_path->tp->ops.seg_close(s->dev_path->tp, s->dev_path);
    seg_free(s);
    return 0;
}

/* ---- batches and tasks ------------------------------------------------ */

static struct eng_batch *batch_lookup_locked(struct teshim_engine *eng, teshim_batch_t id)
{
    size_t slot = (size_t)(id & 0xffffffffu);
    if (!slot || slot > eng->capbatches)
        return NULL;
    struct eng_batch *b = eng->batches[slot - 1];
    return b && b->id == id ? b : NULL;
}

int teshim_batch_alloc(struct teshim_engine *eng, size_t max_requests, teshim_batch_t *batch_p)
{
    struct eng_batch *b;
    size_t slot;
    int ret;

    if (!eng || !batch_p || !max_requests || max_requests > BATCH_MAX_REQUESTS) {
        eng_err(eng, "batch_alloc: %s",
                !eng || !batch_p ? "NULL argument" : "max_requests not in 1..1048576");
        return -EINVAL;
    }
    b = calloc(1, sizeof(*b));
    if (!b) {
        eng_err(eng, "batch_alloc: no memory for a batch");
        return -ENOMEM;
    }
    b->tasks = calloc(max_requests, sizeof(*b->tasks));
    if (!b->tasks) {
        eng_err(eng, "batch_alloc: no memory for %zu tasks", max_requests);
        ret = -ENOMEM;
        goto err_free;
    }
    b->max = max_requests;
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->cond, NULL);
    pthread_rwlock_wrlock(&eng->batch_lock);
    for (slot = 0; slot < eng->capbatches && eng->batches[slot]; slot++)
        ;
    if (slot == eng->capbatches) {
        size_t cap = eng->capbatches ? eng->capbatches * 2 : 16;
        struct eng_batch **n = realloc(eng->batches, cap * sizeof(*n));
        if (!n) {
            pthread_rwlock_unlock(&eng->batch_lock);
            eng_err(eng, "batch_alloc: no memory for %zu batches", cap);
            ret = -ENOMEM;
            goto err_cond;
        }
        memset(n + eng->capbatches, 0, (cap - eng->capbatches) * sizeof(*n));
        eng->batches = n;
        eng->capbatches = cap;
    }
    b->id = ((uint64_t)++eng->batch_gen << 32) | (slot + 1);
    eng->batches[slot] = b;
    pthread_rwlock_unlock(&eng->batch_lock);
    *batch_p = b->id;
    return 0;

err_cond:
    pthread_cond_destroy(&b->cond);
    pthread_mutex_destroy(&b->lock);
    free(b->tasks);
err_free:
    free(b);
    return ret;
}

int teshim_batch_free(struct teshim_engine *eng, teshim_batch_t id)
{
    struct eng_batch *b;
    int ret = 0;

    if (!eng)
        return -EINVAL;
    pthread_rwlock_wrlock(&eng->batch_lock);
    b = batch_lookup_locked(eng, id);
    if (!b)
        ret = -EINVAL;
    else if (atomic_load(&b->unfinished) || atomic_load(&b->waiters))
        ret = -EBUSY;
    else
        eng->batches[(id & 0xffffffffu) - 1] = NULL;
    pthread_rwlock_unlock(&eng->batch_lock);
    if (ret) {
        eng_err(eng, "batch_free: %s",
                ret == -EBUSY ? "requests unfinished or a thread waiting on it" : "invalid batch");
        return ret;
    }
    /* a finishing task may still hold b->lock for its broadcast */
    pthread_mutex_lock(&b->lock);
    pthread_mutex_unlock(&b->lock);
    pthread_cond_destroy(&b->cond);
    pthread_mutex_destroy(&b->lock);
    free(b->tasks);
    free(b);
    return 0;
}

static void task_start(struct teshim_engine *eng, struct eng_task *t)
{
    atomic_store(&t->state, TESHIM_TASK_PENDING);
    if (t->cuda_dev >= 0)
        eng_dev_task_start(eng, t);
    else
        t->seg->tp->ops.start(t->seg->tp, t);
}

/* Tasks admitted while this thread is already starting one: started by
 * the outer loop instead of recursing (a local transport finishes inline). */
static __thread struct eng_task *start_pending;
static __thread int start_depth;

static void start_admitted(struct teshim_engine *eng, struct eng_task *t)
{
    if (start_depth) {
        t->next = start_pending;
        start_pending = t;
        return;
    }
    start_depth = 1;
    task_start(eng, t);
    while ((t = start_pending)) {
        start_pending = t->next;
        task_start(eng, t);
    }
    start_depth = 0;
}

/* Unlink the queued tasks whose request timeout has passed, lim_lock held;
 * returns them chained by next. The queue is in submission order (up to
 * the few microseconds between a submit's clock read and its lock), so
 * the scan stops at the first task still in time: a task a little out of
 * order expires on the next call. */
static struct eng_task *limiter_take_expired(struct teshim_engine *eng, uint64_t now)
{
    uint64_t to = (uint64_t)eng->p.request_timeout_ms * 1000000ull;
    struct eng_task *head = eng->wait_head, *t = head, *last = NULL;
    size_t n = 0;

    while (t && now >= t->t_submit && now - t->t_submit >= to) {
        last = t;
        t = t->next;
        n++;
    }
    if (!n)
        return NULL;
    eng->wait_head = t;
    if (!t)
        eng->wait_tail = NULL;
    last->next = NULL;
    atomic_fetch_sub(&eng->st.waiting, n);
    return head;
}

/* Fail expired queued tasks (taken by limiter_take_expired), no lock held. */
static void limiter_fail_expired(struct teshim_engine *eng, struct eng_task *t)
{
    while (t) {
        struct eng_task *next = t->next;
        eng_err(eng,
                "segment %s: request queued by the limiter (engine.max_inflight %d) for %d ms, "
                "timed out before it started",
                t->seg->name, eng->p.max_inflight, eng->p.request_timeout_ms);
        task_complete(eng, t, -ETIMEDOUT);
        t = next;
    }
}

void eng_limiter_expire(struct teshim_engine *eng, uint64_t now)
{
    struct eng_task *t;

    if (!atomic_load(&eng->st.waiting))
        return;
    pthread_mutex_lock(&eng->lim_lock);
    t = limiter_take_expired(eng, now);
    pthread_mutex_unlock(&eng->lim_lock);
    limiter_fail_expired(eng, t);
}

static void limiter_release(struct teshim_engine *eng)
{
    struct eng_task *t, *expired;

    pthread_mutex_lock(&eng->lim_lock);
    /* a task whose time ran out in the queue is not started */
    expired = limiter_take_expired(eng, eng_now_ns());
    eng->active--;
    t = eng->wait_head;
    if (t) {
        eng->wait_head = t->next;
        if (!eng->wait_head)
            eng->wait_tail = NULL;
        eng->active++;
        atomic_fetch_sub(&eng->st.waiting, 1);
    } else {
        atomic_fetch_sub(&eng->st.active, 1);
    }
    pthread_mutex_unlock(&eng->lim_lock);
    limiter_fail_expired(eng, expired);
    if (t)
        start_admitted(eng, t);
}

void eng_task_set_slices(struct eng_task *t, unsigned n)
{
    atomic_store(&t->slices_left, n);
}

void eng_task_slice_done(struct eng_task *t, uint64_t bytes, int err)
{
    if (bytes)
        atomic_fetch_add(&t->transferred, bytes);
    if (err) {
        int zero = 0;
        atomic_compare_exchange_strong(&t->error, &zero, err);
    }
    if (atomic_fetch_sub(&t->slices_left, 1) != 1)
        return;
    err = atomic_load(&t->error);
    if (t->cuda_dev >= 0 && eng_dev_task_transport_done(t, err))
        return;
    eng_task_finish(t, err);
}

void eng_task_finish(struct eng_task *t, int err)
{
    struct teshim_engine *eng = t->seg->tp->eng;

    task_complete(eng, t, err);
    limiter_release(eng);
}

/* Counters, state and waiters of a finished task; its limiter slot, if it
 * had one, is the caller's. */
static void task_complete(struct teshim_engine *eng, struct eng_task *t, int err)
{
    struct eng_batch *b = t->batch;

    if (err) {
        int zero = 0;
        atomic_compare_exchange_strong(&t->error, &zero, err);
        err = atomic_load(&t->error);
    }
    t->t_done = eng_now_ns();
    atomic_fetch_add(&eng->st.finished, 1);
    atomic_fetch_add(&eng->st.bytes, atomic_load(&t->transferred));
    if (err) {
        atomic_fetch_add(&eng->st.failed, 1);
        atomic_fetch_add(&b->failed, 1);
    }
    atomic_fetch_sub(&t->seg->busy, 1);
    /* The batch stops counting the task before its state says finished: a
     * caller that polls teshim_task_status and then frees the batch must
     * find nothing unfinished. The last finisher wakes waiters; b stays
     * valid: free needs unfinished == 0, and takes b->lock (held here until
     * the state is written) before destroying it. */
    pthread_mutex_lock(&b->lock);
    bool last = atomic_fetch_sub(&b->unfinished, 1) == 1;
    atomic_store(&t->state, !err                ? TESHIM_TASK_COMPLETED
                            : err == -ETIMEDOUT ? TESHIM_TASK_TIMED_OUT
                                                : TESHIM_TASK_FAILED);
    if (last)
        pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->lock);
}

/* The tcp path of a same-host segment, for the peer's device memory. */
static struct eng_segment *seg_dev_path(struct teshim_engine *eng, struct eng_segment *s)
{
    struct eng_segment *d;

    pthread_mutex_lock(&eng->seg_lock);
    d = s->dev_path;
    if (!d && (d = calloc(1, sizeof(*d)))) {
        d->id = s->id;
        memcpy(d->name, s->name, sizeof(d->name));
        d->sa = s->sa;
        d->salen = s->salen;
        d->hello = s->hello;
        d->tp = eng->tcp;
        if (eng->tcp->ops.seg_open(eng->tcp, d)) {
            free(d);
            d = NULL;
        } else {
            s->dev_path = d;
            eng_info(eng, "segment %s: the peer's device memory goes over tcp", s->name);
        }
    }
    pthread_mutex_unlock(&eng->seg_lock);
    return d;
}

static int check_request(struct teshim_engine *eng, const struct teshim_request *r,
                         struct eng_segment **seg_p, int *dev_p)
{
    struct eng_segment *s;
    uint64_t a = (uint64_t)(uintptr_t)r->local;

    if (r->opcode != TESHIM_OP_READ && r->opcode != TESHIM_OP_WRITE) {
        eng_err(eng, "submit: opcode %d is neither read nor write", (int)r->opcode);
        return -EINVAL;
    }
    if (!r->length || !r->local || r->remote_offset + r->length < r->remote_offset) {
        eng_err(eng, "submit: %s",
                !r->length  ? "zero length"
                : !r->local ? "NULL local"
                            : "remote range wraps around");
        return -EINVAL;
    }
    s = seg_lookup(eng, r->segment);
    if (!s) {
        eng_err(eng, "submit: segment %lld is not open", (long long)r->segment);
        return -EINVAL;
    }
    if (s->tp == eng->local && eng_seg_in_device(s, r->remote_offset, r->length)) {
        s = seg_dev_path(eng, s);
        if (!s) {
            eng_err(eng, "submit: no tcp path to the device memory of segment %lld",
                    (long long)r->segment);
            return -ENOMEM;
        }
    }
    pthread_rwlock_rdlock(&eng->reg_lock);
    struct eng_region *reg = reg_find(eng, a, r->length);
    int dev = reg ? reg->cuda_dev : -1;
    pthread_rwlock_unlock(&eng->reg_lock);
    if (!reg) {
        eng_err(eng, "submit: local [%p, +%llu) is not inside one registration", r->local,
                (unsigned long long)r->length);
        return -EFAULT;
    }
    *seg_p = s;
    *dev_p = dev;
    return 0;
}

int teshim_submit(struct teshim_engine *eng, teshim_batch_t id, const struct teshim_request *reqs,
                  size_t n)
{
    struct eng_batch *b;
    struct eng_segment *segs_stack[64], **segs = segs_stack;
    int devs_stack[64], *devs = devs_stack;
    struct eng_task *run = NULL, **run_tail = &run;
    size_t first;
    int ret = 0;

    if (!eng || !reqs || !n) {
        eng_err(eng, "submit: %s", !n ? "no requests" : "NULL argument");
        return -EINVAL;
    }
    if (n > 64 && (!(segs = malloc(n * sizeof(*segs))) || !(devs = malloc(n * sizeof(*devs))))) {
        eng_err(eng, "submit: no memory to check %zu requests", n);
        free(segs);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n && !ret; i++)
        ret = check_request(eng, &reqs[i], &segs[i], &devs[i]);
    if (ret)
        goto out;

    pthread_rwlock_rdlock(&eng->batch_lock);
    b = batch_lookup_locked(eng, id);
    if (!b) {
        pthread_rwlock_unlock(&eng->batch_lock);
        eng_err(eng, "submit: invalid batch");
        ret = -EINVAL;
        goto out;
    }
    pthread_mutex_lock(&b->lock);
    if (b->n + n > b->max) {
        pthread_mutex_unlock(&b->lock);
        pthread_rwlock_unlock(&eng->batch_lock);
        eng_err(eng, "submit: batch holds %zu of %zu requests, %zu more do not fit", b->n, b->max,
                n);
        ret = -ENOSPC;
        goto out;
    }
    first = b->n;
    b->n += n;
    atomic_fetch_add(&b->unfinished, n);
    pthread_mutex_unlock(&b->lock);
    pthread_rwlock_unlock(&eng->batch_lock);

    uint64_t now = eng_now_ns();
    for (size_t i = 0; i < n; i++) {
        struct eng_task *t = &b->tasks[first + i];
        t->batch = b;
        t->seg = segs[i];
        t->op = reqs[i].opcode;
        t->local = reqs[i].local;
        t->raddr = reqs[i].remote_offset;
        t->len = reqs[i].length;
        t->t_submit = now;
        t->cuda_dev = devs[i];
        t->dev_ptr = NULL;
        t->stage = NULL;
        t->next = NULL;
        atomic_store(&t->state, TESHIM_TASK_WAITING);
        /* one for the task, one until this call has queued it (the task
         * may finish before the transport's submit_end touched the peer) */
        atomic_fetch_add(&segs[i]->busy, 2);
    }
    atomic_fetch_add(&eng->st.submitted, n);

    /* admit what the limiter allows, queue the rest in order */
    eng_limiter_expire(eng, now);
    pthread_mutex_lock(&eng->lim_lock);
    for (size_t i = 0; i < n; i++) {
        struct eng_task *t = &b->tasks[first + i];
        if (!eng->wait_head && eng->active < eng->p.max_inflight) {
            eng->active++;
            atomic_fetch_add(&eng->st.active, 1);
            *run_tail = t;
            run_tail = &t->next;
        } else {
            if (eng->wait_tail)
                eng->wait_tail->next = t;
            else
                eng->wait_head = t;
            eng->wait_tail = t;
            atomic_fetch_add(&eng->st.waiting, 1);
        }
    }
    pthread_mutex_unlock(&eng->lim_lock);
    eng->tcp->ops.submit_begin(eng->tcp);
    eng->local->ops.submit_begin(eng->local);
    while (run) {
        struct eng_task *t = run;
        run = t->next;
        start_admitted(eng, t);
    }
    eng->local->ops.submit_end(eng->local);
    eng->tcp->ops.submit_end(eng->tcp);
    for (size_t i = 0; i < n; i++)
        atomic_fetch_sub(&segs[i]->busy, 1);
    ret = (int)first;
out:
    if (segs != segs_stack)
        free(segs);
    if (devs != devs_stack)
        free(devs);
    return ret;
}

int teshim_task_status(struct teshim_engine *eng, teshim_batch_t id, size_t task_id,
                       struct teshim_task_status *st)
{
    struct eng_batch *b;
    int ret = 0;

    if (!eng || !st) {
        eng_err(eng, "task_status: NULL argument");
        return -EINVAL;
    }
    pthread_rwlock_rdlock(&eng->batch_lock);
    b = batch_lookup_locked(eng, id);
    if (!b) {
        ret = -EINVAL;
    } else {
        pthread_mutex_lock(&b->lock);
        size_t n = b->n;
        pthread_mutex_unlock(&b->lock);
        if (task_id >= n) {
            ret = -ENOENT;
        } else {
            struct eng_task *t = &b->tasks[task_id];
            st->state = (enum teshim_task_state)atomic_load(&t->state);
            st->transferred = atomic_load(&t->transferred);
            st->error = st->state >= TESHIM_TASK_FAILED ? atomic_load(&t->error) : 0;
            st->latency_ns = st->state >= TESHIM_TASK_COMPLETED ? t->t_done - t->t_submit : 0;
        }
    }
    pthread_rwlock_unlock(&eng->batch_lock);
    if (ret)
        eng_err(eng, "task_status: %s", ret == -ENOENT ? "no such task" : "invalid batch");
    return ret;
}

int teshim_batch_wait(struct teshim_engine *eng, teshim_batch_t id, int timeout_ms)
{
    struct eng_batch *b;
    struct timespec dl;
    int ret = 0;

    if (!eng)
        return -EINVAL;
    pthread_rwlock_rdlock(&eng->batch_lock);
    b = batch_lookup_locked(eng, id);
    if (!b) {
        pthread_rwlock_unlock(&eng->batch_lock);
        eng_err(eng, "batch_wait: invalid batch");
        return -EINVAL;
    }
    /* sleep without the table lock (a writer, batch_alloc/free from another
     * thread, would otherwise wait for this batch); the count keeps b */
    atomic_fetch_add(&b->waiters, 1);
    pthread_rwlock_unlock(&eng->batch_lock);
    clock_gettime(CLOCK_REALTIME, &dl);
    if (timeout_ms >= 0) {
        dl.tv_sec += timeout_ms / 1000;
        dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&b->lock);
    while (atomic_load(&b->unfinished) && !ret) {
        if (timeout_ms < 0)
            pthread_cond_wait(&b->cond, &b->lock);
        else if (pthread_cond_timedwait(&b->cond, &b->lock, &dl) == ETIMEDOUT)
            ret = -ETIMEDOUT;
    }
    if (!atomic_load(&b->unfinished))
        ret = (int)atomic_load(&b->failed);
    pthread_mutex_unlock(&b->lock);
    atomic_fetch_sub(&b->waiters, 1); /* last touch of b */
    return ret;
}

int teshim_engine_stats(struct teshim_engine *eng, struct teshim_engine_stats *s)
{
    if (!eng || !s) {
        eng_err(eng, "engine_stats: NULL argument");
        return -EINVAL;
    }
    s->submitted = atomic_load(&eng->st.submitted);
    s->finished = atomic_load(&eng->st.finished);
    s->failed = atomic_load(&eng->st.failed);
    s->active = atomic_load(&eng->st.active);
    s->waiting = atomic_load(&eng->st.waiting);
    s->bytes = atomic_load(&eng->st.bytes);
    s->conn_new = atomic_load(&eng->st.conn_new);
    s->conn_reuse = atomic_load(&eng->st.conn_reuse);
    s->conn_retries = atomic_load(&eng->st.conn_retries);
    s->conn_closed_idle = atomic_load(&eng->st.conn_closed_idle);
    s->conn_broken = atomic_load(&eng->st.conn_broken);
    s->connections = atomic_load(&eng->st.connections);
    s->accepted = atomic_load(&eng->st.accepted);
    s->peer_rejected = atomic_load(&eng->st.peer_rejected);
    s->local_fallbacks = atomic_load(&eng->st.local_fallbacks);
    return 0;
}

const char *teshim_task_state_name(enum teshim_task_state s)
{
    static const char *const names[] = {"waiting", "pending", "completed", "failed", "timed out"};
    return (unsigned)s < 5 ? names[s] : "invalid";
}
