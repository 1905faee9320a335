/*
 * The public API, part one: engines, registrations, segments and the
 * statistics. Thin: it validates arguments and calls the services and the
 * transports of the list (eng_tp_list.c), which never call back up here.
 */
#include "eng.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

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

/* A connection the listener answered: the first transport that takes it. */
static int adopt(void *arg, int fd, const char *pname)
{
    struct teshim_engine *eng = arg;

    for (int i = 0; i < eng->ntps; i++)
        if (!eng->tps[i]->ops.adopt(eng->tps[i], fd, pname))
            return 0;
    return -EOPNOTSUPP;
}

/*
 * Publish this engine's segment (etcd; nothing with p2p): its address to
 * handshake with, instance id and a summary of its remote-accessible
 * regions. Only a listening engine serves a segment.
 */
static int publish_self(struct teshim_engine *eng)
{
    struct eng_meta_rec r = {0};
    struct eng_region_desc *d = NULL;
    char host[256], h[256];
    uint32_t n = 0;
    size_t hl;

    if (eng->port < 0)
        return 0;
    /* the host part of the listen address; a wildcard is replaced by ours */
    hl = strlen(eng->listen_host);
    while (hl && eng->listen_host[hl - 1] != ':')
        hl--;
    snprintf(host, sizeof(host), "%.*s", hl ? (int)hl - 1 : 0, eng->listen_host);
    if (!*host || !strcmp(host, "0.0.0.0") || !strcmp(host, "[::]")) {
        h[0] = '\0';
        gethostname(h, sizeof(h) - 1);
        h[sizeof(h) - 1] = '\0';
        snprintf(host, sizeof(host), "%s", h);
    }
    snprintf(r.addr, sizeof(r.addr), "%s:%d", host, eng->port);
    memcpy(r.instance_id, eng->ctx.instance_id, 16);
    if (!eng_region_list(&eng->ctx, &d, &n)) {
        r.nregions = n;
        for (uint32_t i = 0; i < n; i++)
            r.bytes += d[i].len;
        free(d);
    }
    return eng->meta->ops->publish(eng->meta, &r);
}

/* A HELLO's trailer: every transport appends its answer. */
static int hello(void *arg, int fd, const uint8_t *in, size_t in_len, uint8_t *out, size_t max,
                 size_t *out_len)
{
    struct teshim_engine *eng = arg;
    size_t pos = 0;

    for (int i = 0; i < eng->ntps; i++) {
        int ret = eng->tps[i]->ops.hello(eng->tps[i], fd, in, in_len, out, max, &pos);
        if (ret)
            return ret;
    }
    *out_len = pos;
    return 0;
}

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
    if (opts->local_name && (!*opts->local_name || strlen(opts->local_name) >= ENG_NAME_MAX)) {
        eng_err(NULL, "engine_create: local_name must be 1..%d bytes", ENG_NAME_MAX - 1);
        return -EINVAL;
    }
    eng = calloc(1, sizeof(*eng));
    if (!eng) {
        eng_err(NULL, "engine_create: no memory for the engine");
        return -ENOMEM;
    }
    ret = eng_params_load(opts, &eng->ctx.p);
    if (ret)
        goto err_free;
    eng_logger_open(&eng->ctx.log, eng->ctx.p.log_level, eng->ctx.p.log_file);
    eng_random(eng->ctx.instance_id, sizeof(eng->ctx.instance_id));
    if (eng->ctx.p.auth_key_file[0]) {
        char why[160];
        ret = eng_auth_key_load(eng->ctx.p.auth_key_file, &eng->ctx.auth, why, sizeof(why));
        if (ret) {
            eng_err(ctx_of(eng), "engine_create: engine.auth_key_file %s refused: %s",
                    eng->ctx.p.auth_key_file, why);
            eng_logger_close(&eng->ctx.log);
            goto err_free;
        }
    }
    if (opts->local_name) {
        strcpy(eng->ctx.name, opts->local_name);
    } else {
        char host[40] = "host";
        gethostname(host, sizeof(host) - 1);
        snprintf(eng->ctx.name, sizeof(eng->ctx.name), "%.40s:%d", host, (int)getpid());
    }
    eng->port = -1;
    read_boot_id(eng->ctx.boot_id);
    eng->ctx.words.probe = eng_now_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)eng;
    pthread_rwlock_init(&eng->reg_lock, NULL);
    pthread_mutex_init(&eng->seg_lock, NULL);
    pthread_rwlock_init(&eng->batch_lock, NULL);
    pthread_mutex_init(&eng->lim_lock, NULL);
    if (opts->listen) {
        if (strlen(opts->listen) >= sizeof(eng->listen_host)) {
            eng_err(ctx_of(eng), "engine_create: listen address too long");
            ret = -EINVAL;
            goto err_locks;
        }
        strcpy(eng->listen_host, opts->listen);
    }
    ret = eng_transports_create(&eng->ctx, eng->tps, ENG_MAX_TRANSPORTS, &eng->ntps);
    if (ret)
        goto err_locks;
    if (opts->listen) {
        ret = eng_listener_start(&eng->ctx, eng->listen_host, adopt, hello, eng, &eng->port,
                                 &eng->listener);
        if (ret)
            goto err_transports;
    }
    ret =
        eng_meta_open(&eng->ctx, opts->metadata ? opts->metadata : eng->ctx.p.metadata, &eng->meta);
    if (!ret)
        ret = publish_self(eng);
    if (ret)
        goto err_listener;
    if (opts->listen && eng->ctx.p.local_serve && eng->ctx.p.local_mode == ENG_LOCAL_INITIATOR) {
        /* Yama ptrace_scope 1 would refuse process_vm_* from peers; without
         * Yama this fails with EINVAL, which is fine. In target mode the
         * peers never access us: they let us access them (eng_tcp_local.c) */
        prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
    }
    *eng_p = eng;
    return 0;

err_listener:
    if (eng->meta)
        eng->meta->ops->close(eng->meta);
    eng_listener_stop(eng->listener);
err_transports:
    for (int i = eng->ntps - 1; i >= 0; i--)
        eng->tps[i]->ops.destroy(eng->tps[i]);
err_locks:
    pthread_mutex_destroy(&eng->lim_lock);
    pthread_rwlock_destroy(&eng->batch_lock);
    pthread_mutex_destroy(&eng->seg_lock);
    pthread_rwlock_destroy(&eng->reg_lock);
    eng_logger_close(&eng->ctx.log);
    eng_auth_key_clear(&eng->ctx.auth);
err_free:
    eng_params_free(&eng->ctx.p); /* also a refused key file's engine */
    free(eng);
    return ret;
}

void teshim_engine_destroy(struct teshim_engine *eng)
{
    if (!eng)
        return;
    struct eng_task *queued;
    size_t nqueued;

    /* peers watching our name see it go before we stop serving */
    for (size_t i = 0; i < eng->nsegs; i++)
        if (eng->segs[i] && eng->segs[i]->watch)
            eng->meta->ops->unwatch(eng->segs[i]->watch);
    eng->meta->ops->close(eng->meta);
    /* no new connection from here on */
    eng_listener_stop(eng->listener);
    /* device tasks in a staging copy finish first: they start transports */
    eng_dev_quiesce(&eng->ctx);
    /* the limiter's queue is emptied first: a request finished while one
     * transport is destroyed would otherwise start a queued one on another,
     * maybe already freed */
    queued = eng_limiter_take_all(eng);
    /* the transports fail what is in flight; each staging wrapper waits
     * for the copy to the device of a READ its transport completed */
    for (int i = eng->ntps - 1; i >= 0; i--)
        eng->tps[i]->ops.destroy(eng->tps[i]);
    nqueued = eng_limiter_cancel(eng, queued);
    if (nqueued)
        eng_info(ctx_of(eng), "engine_destroy: %zu queued requests cancelled", nqueued);
    for (size_t i = 0; i < eng->nsegs; i++)
        if (eng->segs[i])
            eng_seg_free(eng->segs[i]);
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
    eng_regions_free(eng);
    eng_copy_close(&eng->ctx);
    pthread_mutex_destroy(&eng->lim_lock);
    pthread_rwlock_destroy(&eng->batch_lock);
    pthread_mutex_destroy(&eng->seg_lock);
    pthread_rwlock_destroy(&eng->reg_lock);
    eng_logger_close(&eng->ctx.log);
    eng_auth_key_clear(&eng->ctx.auth);
    eng_params_free(&eng->ctx.p);
    free(eng);
}

int teshim_engine_port(const struct teshim_engine *eng)
{
    if (!eng)
        return -EINVAL;
    return eng->port > 0 ? eng->port : -ENOTCONN;
}

int teshim_register(struct teshim_engine *eng, void *addr, size_t len, const char *location,
                    bool remote_accessible)
{
    int dev, ret;
    uint64_t a = (uint64_t)(uintptr_t)addr;

    if (!eng || !addr || !len || a + len < a) {
        eng_err(ctx_of(eng), "register: %s",
                !eng    ? "NULL engine"
                : !addr ? "NULL address"
                : !len  ? "zero length"
                        : "range wraps around");
        return -EINVAL;
    }
    if (eng_location_parse(location, &dev)) {
        eng_err(ctx_of(eng), "register: location '%s' is neither cpu nor cuda:N",
                location ? location : "(null)");
        return -EINVAL;
    }
    if (dev >= 0) {
        ret = eng_copy_open(&eng->ctx);
        if (ret)
            return ret;
    }
    ret = eng_region_add(eng, a, len, remote_accessible, dev);
    if (ret)
        return ret;
    /* the transports that register memory with a device (rdma) */
    struct eng_region r = {.addr = a, .len = len, .remote = remote_accessible, .cuda_dev = dev};
    for (int i = 0; i < eng->ntps; i++) {
        ret = eng->tps[i]->ops.reg(eng->tps[i], &r);
        if (ret) {
            while (i-- > 0)
                eng->tps[i]->ops.unreg(eng->tps[i], &r);
            eng_region_remove(eng, a);
            return ret;
        }
    }
    if (remote_accessible)
        publish_self(eng); /* the summary; sent in the background */
    return 0;
}

int teshim_unregister(struct teshim_engine *eng, void *addr)
{
    uint64_t a = (uint64_t)(uintptr_t)addr;

    if (!eng || !addr) {
        eng_err(ctx_of(eng), "unregister: NULL argument");
        return -EINVAL;
    }
    int ret = eng_region_remove(eng, a);
    if (ret == -ENOENT)
        eng_err(ctx_of(eng), "unregister: no registration starts at %p", addr);
    if (ret == 0 || ret == -ETIMEDOUT) {
        /* gone from the table: the device registrations (rdma) go too */
        struct eng_region r = {.addr = a};
        for (int i = 0; i < eng->ntps; i++)
            eng->tps[i]->ops.unreg(eng->tps[i], &r);
    }
    if (ret != -ENOENT)
        publish_self(eng); /* the summary; sent in the background */
    return ret;
}

/*
 * The data path of a segment: engine.transport names the transport tried
 * first, and the ones after it in the list are its fallbacks (auto: the
 * whole list, the local transport before tcp). A named transport that
 * cannot serve the peer is counted as a fallback.
 */
static int seg_open_path(struct teshim_engine *eng, struct eng_segment *seg)
{
    const char *want = eng->ctx.p.transport == ENG_TP_TCP     ? "tcp"
                       : eng->ctx.p.transport == ENG_TP_LOCAL ? "local"
                       : eng->ctx.p.transport == ENG_TP_RDMA  ? "rdma"
                                                              : NULL;
    int first = 0, ret = -EOPNOTSUPP;

    while (want && first < eng->ntps && strcmp(eng->tps[first]->ops.name, want))
        first++;
    for (int i = first; i < eng->ntps && ret; i++) {
        struct eng_transport *tp = eng->tps[i];
        ret = tp->ops.seg_open(tp, seg);
        if (!ret) {
            seg->tp = tp;
        } else if (want && i == first && i + 1 < eng->ntps) {
            atomic_fetch_add(&eng->ctx.st.local_fallbacks, 1);
            eng_info(ctx_of(eng), "segment %s: %s transport not usable (%s), using %s", seg->name,
                     tp->ops.name, strerror(-ret), eng->tps[i + 1]->ops.name);
        }
    }
    return ret;
}

/*
 * seg's address: the one published under its name (etcd; 1 and *rec, *rev),
 * else the name itself as host:port (0); -errno (logged).
 */
static int seg_resolve(struct teshim_engine *eng, struct eng_segment *seg, struct eng_meta_rec *rec,
                       uint64_t *rev)
{
    int ret = eng->meta->ops->resolve(eng->meta, seg->name, rec, rev);
    bool etcd = strcmp(eng->meta->ops->name, "p2p");

    if (!ret) {
        if (!eng_parse_hostport(rec->addr, false, &seg->sa, &seg->salen))
            return 1;
        eng_err(ctx_of(eng), "segment_open: %s is published at '%s', which is not reachable",
                seg->name, rec->addr);
        return -EHOSTUNREACH;
    }
    if (!eng_parse_hostport(seg->name, false, &seg->sa, &seg->salen)) {
        if (ret != -ENOENT)
            eng_warn(ctx_of(eng), "segment_open: %s opened by its address, unwatched", seg->name);
        return 0;
    }
    if (ret != -ENOENT)
        return ret; /* etcd not answering: logged */
    eng_err(ctx_of(eng), "segment_open: '%s' is %s", seg->name,
            etcd ? "neither a name published in etcd nor a reachable host:port"
                 : "not a reachable host:port");
    return etcd ? -ENOENT : -EINVAL;
}

int teshim_segment_open(struct teshim_engine *eng, const char *name, teshim_segment_t *seg_p)
{
    struct eng_segment *seg;
    struct eng_meta_rec rec;
    uint64_t rev = 0;
    int ret, published;

    if (!eng || !name || !seg_p || strlen(name) >= sizeof(seg->name)) {
        eng_err(ctx_of(eng), "segment_open: %s",
                name && strlen(name) >= 300 ? "name too long" : "NULL argument");
        return -EINVAL;
    }
    seg = eng_seg_alloc(name);
    if (!seg) {
        eng_err(ctx_of(eng), "segment_open: no memory for a segment");
        return -ENOMEM;
    }
    ret = seg_resolve(eng, seg, &rec, &rev);
    if (ret < 0)
        goto err_free;
    published = ret;
    ret = eng_meta_fetch_ex(&eng->ctx, seg, NULL, 0, &seg->hello, &seg->regions, &seg->trailer,
                            &seg->trailer_len, NULL);
    if (ret)
        goto err_free;
    seg->nregions = seg->hello.nregions;
    if (published && (strcmp(seg->hello.name, name) ||
                      memcmp(seg->hello.instance_id, rec.instance_id, sizeof(rec.instance_id)))) {
        /* the address answers, but not with the instance etcd published */
        eng_err(ctx_of(eng),
                "segment_open: %s: the engine at %s is '%s', not the instance "
                "published under that name (stale record?)",
                name, rec.addr, seg->hello.name);
        ret = -ESTALE;
        goto err_free;
    }
    if (published) {
        ret = eng->meta->ops->watch(eng->meta, name, &rec, rev, &seg->watch);
        if (ret)
            goto err_free;
    }

    ret = seg_open_path(eng, seg);
    if (ret)
        goto err_free;

    pthread_mutex_lock(&eng->seg_lock);
    if (eng->nsegs == eng->capsegs) {
        size_t cap = eng->capsegs ? eng->capsegs * 2 : 16;
        struct eng_segment **n = realloc(eng->segs, cap * sizeof(*n));
        if (!n) {
            pthread_mutex_unlock(&eng->seg_lock);
            eng_err(ctx_of(eng), "segment_open: no memory for %zu segments", cap);
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
    if (seg->watch)
        eng->meta->ops->unwatch(seg->watch);
    eng_seg_free(seg);
    return ret;
}

int teshim_segment_regions(struct teshim_engine *eng, teshim_segment_t id,
                           struct teshim_region *regions, size_t max)
{
    struct eng_segment *s = eng ? eng_seg_lookup(eng, id) : NULL;
    if (!s || (max && !regions)) {
        eng_err(ctx_of(eng), "segment_regions: %s", !s ? "invalid segment" : "NULL regions");
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
    struct eng_segment *s = eng ? eng_seg_lookup(eng, id) : NULL;
    return !s ? NULL : s->local_target ? "local-target" : s->tp->ops.name;
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
        eng_err(ctx_of(eng), "segment_close: %s",
                ret == -EBUSY ? "requests unfinished" : "invalid segment");
        return ret;
    }
    if (s->watch)
        eng->meta->ops->unwatch(s->watch);
    s->tp->ops.seg_close(s->tp, s);
    if (s->dev_path)
        s->dev_path->tp->ops.seg_close(s->dev_path->tp, s->dev_path);
    eng_seg_free(s);
    return 0;
}

int teshim_engine_stats_size(struct teshim_engine *eng, struct teshim_engine_stats *stats_p,
                             size_t size)
{
    struct teshim_engine_stats st, *s = &st;

    if (!eng || !stats_p || size < TESHIM_ENGINE_STATS_SIZE_V1) {
        eng_err(ctx_of(eng), "engine_stats: %s",
                eng && stats_p ? "size smaller than the first release's struct" : "NULL argument");
        return -EINVAL;
    }
    s->submitted = atomic_load(&eng->ctx.st.submitted);
    s->finished = atomic_load(&eng->ctx.st.finished);
    s->failed = atomic_load(&eng->ctx.st.failed);
    s->active = atomic_load(&eng->ctx.st.active);
    s->waiting = atomic_load(&eng->ctx.st.waiting);
    s->bytes = atomic_load(&eng->ctx.st.bytes);
    s->conn_new = atomic_load(&eng->ctx.st.conn_new);
    s->conn_reuse = atomic_load(&eng->ctx.st.conn_reuse);
    s->conn_retries = atomic_load(&eng->ctx.st.conn_retries);
    s->conn_closed_idle = atomic_load(&eng->ctx.st.conn_closed_idle);
    s->conn_broken = atomic_load(&eng->ctx.st.conn_broken);
    s->connections = atomic_load(&eng->ctx.st.connections);
    s->accepted = atomic_load(&eng->ctx.st.accepted);
    s->peer_rejected = atomic_load(&eng->ctx.st.peer_rejected);
    s->local_fallbacks = atomic_load(&eng->ctx.st.local_fallbacks);
    s->rdma_staged = atomic_load(&eng->ctx.rdma_staged);
    s->rdma_gpu_fallbacks = atomic_load(&eng->ctx.rdma_gpu_fallbacks);
    memcpy(stats_p, s, size < sizeof(st) ? size : sizeof(st));
    return 0;
}

/* The exported name, for programs built before the struct grew (the
 * parentheses keep the header's macro out). */
int(teshim_engine_stats)(struct teshim_engine *eng, struct teshim_engine_stats *stats_p)
{
    return teshim_engine_stats_size(eng, stats_p, TESHIM_ENGINE_STATS_SIZE_V1);
}

const char *teshim_task_state_name(enum teshim_task_state s)
{
    static const char *const names[] = {"waiting", "pending", "completed", "failed", "timed out"};
    return (unsigned)s < 5 ? names[s] : "invalid";
}
