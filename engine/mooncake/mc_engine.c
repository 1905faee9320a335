/*
 * Mooncake's C API (transfer_engine_c.h) on teshim's public engine API.
 *
 * Segment ids: Mooncake's are int32 and 0 is the engine's own segment,
 * while teshim's handles start at 0 for the first peer. So ids are this
 * layer's: one table entry per name, id = index + 1, kept for the engine's
 * life so a name reopened gets its old id back. Batch ids are teshim's
 * (uint64, > 0, never INVALID_BATCH).
 */
#include "transfer_engine_c.h"

#include <teshim/engine.h>

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MC_EXPORT __attribute__((visibility("default")))
#define MC_NAME_MAX 256

struct mc_seg {
    char name[MC_NAME_MAX];
    teshim_segment_t handle;
    unsigned opens; /* openSegment calls not undone; handle valid while > 0 */
};

struct mc_engine {
    struct teshim_engine *eng;
    char name[MC_NAME_MAX]; /* the segment name peers open: "host:port" (P2P), or
                               local_server_name (published in etcd) */
    char addr[MC_NAME_MAX]; /* "host:port" it serves on (getLocalIpAndPort) */
    pthread_mutex_t lock;   /* segs, nsegs, self */
    struct mc_seg *segs;
    size_t nsegs, cap;
    teshim_segment_t self; /* LOCAL_SEGMENT's handle, opened on first use */
    bool self_open;
    char tcp; /* its address is the "tcp" transport_t */
};

/* Mooncake's negative code for a teshim negative errno; errno keeps the cause. */
static int mc_code(int err)
{
    errno = -err;
    switch (err) {
    case -ENOSPC:
        return TESHIM_MC_ERR_TOO_MANY_REQUESTS;
    case -ENOENT:
    case -EFAULT:
        return TESHIM_MC_ERR_ADDRESS_NOT_REGISTERED;
    case -EBUSY:
        return TESHIM_MC_ERR_BATCH_BUSY;
    case -ENODEV:
        return TESHIM_MC_ERR_DEVICE_NOT_FOUND;
    case -EEXIST:
        return TESHIM_MC_ERR_ADDRESS_OVERLAPPED;
    case -ENOMEM:
        return TESHIM_MC_ERR_MEMORY;
    case -ENOTSUP:
        return TESHIM_MC_ERR_NOT_IMPLEMENTED;
    case -ESTALE:    /* the segment's peer restarted (handshake or etcd) ... */
    case -EHOSTDOWN: /* ... or left (etcd): reopen it */
        return TESHIM_MC_ERR_METADATA;
    case -ECONNREFUSED:
    case -ECONNRESET:
    case -ETIMEDOUT:
    case -EHOSTUNREACH:
    case -ENETUNREACH:
    case -EADDRINUSE:
    case -EADDRNOTAVAIL:
    case -EMFILE:
    case -EPIPE:
        return TESHIM_MC_ERR_SOCKET;
    default:
        return TESHIM_MC_ERR_INVALID_ARGUMENT;
    }
}

/* The positive Status code Mooncake's submitTransfer & co. return. */
static int mc_status_code(int err)
{
    int c = mc_code(err);
    return c == TESHIM_MC_ERR_NOT_IMPLEMENTED ? TESHIM_MC_STATUS_NOT_IMPLEMENTED : -c;
}

/* "[v6]:port", "[v6]", "host:port", "host" or a bare v6 address -> host. */
static int split_host(const char *s, char *host, size_t cap)
{
    const char *end;
    size_t len;

    if (s[0] == '[') {
        end = strchr(s, ']');
        if (!end)
            return -EINVAL;
        s++;
    } else {
        end = strchr(s, ':');
        if (end && strchr(end + 1, ':'))
            end = NULL; /* two colons without brackets: an IPv6 address */
        if (!end)
            end = s + strlen(s);
    }
    len = (size_t)(end - s);
    if (!len || len >= cap)
        return -EINVAL;
    memcpy(host, s, len);
    host[len] = '\0';
    return 0;
}

/* engine.metadata for a Mooncake connection string; NULL = p2p. */
static const char *mc_metadata(const char *conn, char *buf, size_t cap)
{
    if (!conn || !strcmp(conn, "P2PHANDSHAKE"))
        return NULL;
    if (strstr(conn, "://"))
        return conn;
    snprintf(buf, cap, "etcd://%s", conn); /* Mooncake reads a bare address as etcd */
    return buf;
}

MC_EXPORT transfer_engine_t createTransferEngine(const char *metadata_conn_string,
                                                 const char *local_server_name,
                                                 const char *ip_or_host_name, uint64_t rpc_port,
                                                 int auto_discover)
{
    struct teshim_engine_opts o = {.size = sizeof(o)};
    char host[MC_NAME_MAX - 8], listen[MC_NAME_MAX], meta[MC_NAME_MAX];
    bool v6;
    struct mc_engine *mc;
    int ret, port;

    o.metadata = mc_metadata(metadata_conn_string, meta, sizeof(meta));
    /* with etcd, local_server_name is the name published there and
     * ip_or_host_name, when given, the address served on */
    if (!local_server_name ||
        split_host(o.metadata && ip_or_host_name && *ip_or_host_name ? ip_or_host_name
                                                                     : local_server_name,
                   host, sizeof(host))) {
        errno = EINVAL;
        return NULL;
    }
    if (o.metadata)
        o.local_name = local_server_name;
    v6 = strchr(host, ':') != NULL;
    snprintf(listen, sizeof(listen), v6 ? "[%s]:0" : "%s:0", host);
    o.listen = listen;
    if (getenv("MC_FORCE_TCP"))
        o.transport = TESHIM_TRANSPORT_TCP;
    mc = calloc(1, sizeof(*mc));
    if (!mc) {
        errno = ENOMEM;
        return NULL;
    }
    ret = pthread_mutex_init(&mc->lock, NULL);
    if (ret) {
        ret = -ret;
        goto err_free;
    }
    ret = teshim_engine_create(&o, &mc->eng);
    if (ret)
        goto err_destroy_lock;
    port = teshim_engine_port(mc->eng);
    if (port < 0) {
        ret = port;
        goto err_destroy_engine;
    }
    snprintf(mc->addr, sizeof(mc->addr), v6 ? "[%s]:%d" : "%s:%d", host, port);
    snprintf(mc->name, sizeof(mc->name), "%s", o.metadata ? local_server_name : mc->addr);
    return mc;

err_destroy_engine:
    teshim_engine_destroy(mc->eng);
err_destroy_lock:
    pthread_mutex_destroy(&mc->lock);
err_free:
    free(mc);
    errno = -ret;
    return NULL;
}

MC_EXPORT void destroyTransferEngine(transfer_engine_t engine)
{
    struct mc_engine *mc = engine;

    if (!mc)
        return;
    teshim_engine_destroy(mc->eng); /* closes every segment handle with it */
    pthread_mutex_destroy(&mc->lock);
    free(mc->segs);
    free(mc);
}

MC_EXPORT int discoverTopology(transfer_engine_t engine)
{
    return mc_code(-ENOTSUP);
}

MC_EXPORT int getLocalIpAndPort(transfer_engine_t engine, char *buf_out, size_t buf_len)
{
    struct mc_engine *mc = engine;

    if (!mc || !buf_out || !buf_len)
        return mc_code(-EINVAL);
    if ((size_t)snprintf(buf_out, buf_len, "%s", mc->addr) >= buf_len)
        return mc_code(-ENOBUFS);
    return 0;
}

MC_EXPORT transport_t installTransport(transfer_engine_t engine, const char *proto, void **args)
{
    struct mc_engine *mc = engine;

    if (!mc || !proto || strcmp(proto, "tcp")) {
        errno = mc && proto ? EPROTONOSUPPORT : EINVAL;
        return NULL;
    }
    return &mc->tcp;
}

MC_EXPORT int uninstallTransport(transfer_engine_t engine, const char *proto)
{
    if (!engine || !proto || strcmp(proto, "tcp"))
        return mc_code(-EINVAL);
    return 0;
}

/* The entry of name, added when new; NULL when the table cannot grow. Under lock. */
static struct mc_seg *seg_entry(struct mc_engine *mc, const char *name)
{
    struct mc_seg *s;

    for (size_t i = 0; i < mc->nsegs; i++)
        if (!strcmp(mc->segs[i].name, name))
            return &mc->segs[i];
    if (mc->nsegs == mc->cap) {
        size_t cap = mc->cap ? mc->cap * 2 : 8;
        if (cap > INT32_MAX - 1)
            return NULL;
        s = realloc(mc->segs, cap * sizeof(*s));
        if (!s)
            return NULL;
        mc->segs = s;
        mc->cap = cap;
    }
    s = &mc->segs[mc->nsegs++];
    memset(s, 0, sizeof(*s));
    strcpy(s->name, name);
    return s;
}

/*
 * Open name and return its id (>= 1) or LOCAL_SEGMENT; fresh = close an
 * open one and handshake again. The handshake runs without the lock.
 */
static int seg_open(struct mc_engine *mc, const char *name, bool fresh)
{
    teshim_segment_t h, old = -1;
    struct mc_seg *s;
    int ret, id;

    while (*name == '/')
        name++;
    if (!*name || strlen(name) >= MC_NAME_MAX || strpbrk(name, "\"\\"))
        return -EINVAL; /* no quote or backslash: showLinks prints names into JSON */
    if (!strcmp(name, mc->name))
        return LOCAL_SEGMENT;
    pthread_mutex_lock(&mc->lock);
    s = seg_entry(mc, name);
    if (!s) {
        ret = -ENOMEM;
        goto out_unlock;
    }
    id = (int)(s - mc->segs) + 1;
    if (s->opens && !fresh) {
        s->opens++;
        ret = id;
        goto out_unlock;
    }
    pthread_mutex_unlock(&mc->lock);
    ret = teshim_segment_open(mc->eng, name, &h);
    if (ret)
        return ret;
    pthread_mutex_lock(&mc->lock);
    s = &mc->segs[id - 1]; /* the table may have moved */
    if (s->opens && !fresh) {
        old = h; /* another thread opened it meanwhile: keep theirs */
    } else if (s->opens) {
        ret = teshim_segment_close(mc->eng, s->handle);
        if (ret) {
            old = h;
            goto out_unlock;
        }
        s->handle = h;
    } else {
        s->handle = h;
    }
    s->opens++;
    ret = id;
out_unlock:
    pthread_mutex_unlock(&mc->lock);
    if (old >= 0)
        teshim_segment_close(mc->eng, old);
    return ret;
}

MC_EXPORT segment_id_t openSegment(transfer_engine_t engine, const char *segment_name)
{
    int ret;

    if (!engine || !segment_name)
        return mc_code(-EINVAL);
    ret = seg_open(engine, segment_name, false);
    return ret < 0 ? mc_code(ret) : ret;
}

MC_EXPORT segment_id_t openSegmentNoCache(transfer_engine_t engine, const char *segment_name)
{
    int ret;

    if (!engine || !segment_name)
        return mc_code(-EINVAL);
    ret = seg_open(engine, segment_name, true);
    return ret < 0 ? mc_code(ret) : ret;
}

MC_EXPORT int closeSegment(transfer_engine_t engine, segment_id_t segment_id)
{
    struct mc_engine *mc = engine;
    struct mc_seg *s;
    int ret = 0;

    if (!mc || segment_id < 0)
        return mc_code(-EINVAL);
    if (segment_id == LOCAL_SEGMENT)
        return 0;
    pthread_mutex_lock(&mc->lock);
    if ((size_t)segment_id > mc->nsegs || !mc->segs[segment_id - 1].opens) {
        ret = -EINVAL;
        goto out_unlock;
    }
    s = &mc->segs[segment_id - 1];
    if (s->opens == 1)
        ret = teshim_segment_close(mc->eng, s->handle);
    if (!ret)
        s->opens--;
out_unlock:
    pthread_mutex_unlock(&mc->lock);
    return ret ? mc_code(ret) : 0;
}

MC_EXPORT int warmupEfaSegment(transfer_engine_t engine, const char *segment_name)
{
    return engine ? 0 : mc_code(-EINVAL);
}

MC_EXPORT int removeLocalSegment(transfer_engine_t engine, const char *segment_name)
{
    return mc_code(-ENOTSUP);
}

/* teshim's location for a Mooncake one: "cpu:N", "*" and NULL are host memory. */
static const char *mc_location(const char *loc)
{
    if (!loc || !*loc || !strcmp(loc, "*") || !strncmp(loc, "cpu", 3))
        return "cpu";
    return loc;
}

MC_EXPORT int registerLocalMemory(transfer_engine_t engine, void *addr, size_t length,
                                  const char *location, int remote_accessible)
{
    struct mc_engine *mc = engine;
    int ret;

    if (!mc)
        return mc_code(-EINVAL);
    ret = teshim_register(mc->eng, addr, length, mc_location(location), remote_accessible != 0);
    return ret ? mc_code(ret) : 0;
}

MC_EXPORT int unregisterLocalMemory(transfer_engine_t engine, void *addr)
{
    struct mc_engine *mc = engine;
    int ret;

    if (!mc)
        return mc_code(-EINVAL);
    ret = teshim_unregister(mc->eng, addr);
    return ret ? mc_code(ret) : 0;
}

MC_EXPORT int registerLocalMemoryBatch(transfer_engine_t engine, buffer_entry_t *buffer_list,
                                       size_t buffer_len, const char *location)
{
    struct mc_engine *mc = engine;
    size_t done;
    int ret = 0;

    if (!mc || (!buffer_list && buffer_len))
        return mc_code(-EINVAL);
    for (done = 0; done < buffer_len; done++) {
        ret = teshim_register(mc->eng, buffer_list[done].addr, buffer_list[done].length,
                              mc_location(location), true);
        if (ret)
            goto err_unregister;
    }
    return 0;

err_unregister:
    while (done--)
        teshim_unregister(mc->eng, buffer_list[done].addr);
    return mc_code(ret);
}

MC_EXPORT int unregisterLocalMemoryBatch(transfer_engine_t engine, void **addr_list,
                                         size_t addr_len)
{
    struct mc_engine *mc = engine;
    int first = 0;

    if (!mc || (!addr_list && addr_len))
        return mc_code(-EINVAL);
    for (size_t i = 0; i < addr_len; i++) {
        int ret = teshim_unregister(mc->eng, addr_list[i]);
        if (ret && !first)
            first = ret;
    }
    return first ? mc_code(first) : 0;
}

MC_EXPORT batch_id_t allocateBatchID(transfer_engine_t engine, size_t batch_size)
{
    struct mc_engine *mc = engine;
    teshim_batch_t b;
    int ret;

    if (!mc) {
        errno = EINVAL;
        return INVALID_BATCH;
    }
    ret = teshim_batch_alloc(mc->eng, batch_size, &b);
    if (ret) {
        errno = -ret;
        return INVALID_BATCH;
    }
    return b;
}

/* The teshim handle of a segment id; LOCAL_SEGMENT is opened on first use. */
static int seg_handle(struct mc_engine *mc, segment_id_t id, teshim_segment_t *h_p)
{
    teshim_segment_t h;
    int ret = 0;

    pthread_mutex_lock(&mc->lock);
    if (id == LOCAL_SEGMENT && !mc->self_open) {
        pthread_mutex_unlock(&mc->lock);
        ret = teshim_segment_open(mc->eng, mc->addr, &h);
        if (ret)
            return ret;
        pthread_mutex_lock(&mc->lock);
        if (mc->self_open) {
            pthread_mutex_unlock(&mc->lock);
            teshim_segment_close(mc->eng, h); /* another thread was first */
            pthread_mutex_lock(&mc->lock);
        } else {
            mc->self = h;
            mc->self_open = true;
        }
    }
    if (id == LOCAL_SEGMENT)
        *h_p = mc->self;
    else if (id > 0 && (size_t)id <= mc->nsegs && mc->segs[id - 1].opens)
        *h_p = mc->segs[id - 1].handle;
    else
        ret = -EINVAL;
    pthread_mutex_unlock(&mc->lock);
    return ret;
}

MC_EXPORT int submitTransfer(transfer_engine_t engine, batch_id_t batch_id,
                             struct transfer_request *entries, size_t count)
{
    struct mc_engine *mc = engine;
    struct teshim_request *reqs;
    int ret = 0;

    if (!mc || (!entries && count))
        return mc_status_code(-EINVAL);
    if (!count)
        return 0;
    reqs = calloc(count, sizeof(*reqs));
    if (!reqs)
        return mc_status_code(-ENOMEM);
    for (size_t i = 0; i < count; i++) {
        if (entries[i].opcode != OPCODE_READ && entries[i].opcode != OPCODE_WRITE) {
            ret = -EINVAL;
            goto out_free;
        }
        reqs[i].opcode = entries[i].opcode == OPCODE_READ ? TESHIM_OP_READ : TESHIM_OP_WRITE;
        reqs[i].local = entries[i].source;
        reqs[i].remote_offset = entries[i].target_offset;
        reqs[i].length = entries[i].length;
        ret = seg_handle(mc, entries[i].target_id, &reqs[i].segment);
        if (ret)
            goto out_free;
    }
    ret = teshim_submit(mc->eng, batch_id, reqs, count);
    if (ret > 0)
        ret = 0; /* the first task id */
out_free:
    free(reqs);
    return ret ? mc_status_code(ret) : 0;
}

MC_EXPORT int submitTransferWithNotify(transfer_engine_t engine, batch_id_t batch_id,
                                       struct transfer_request *entries, size_t count,
                                       notify_msg_t notify_msg)
{
    return mc_status_code(-ENOTSUP);
}

MC_EXPORT notify_msg_t *getNotifsFromEngine(transfer_engine_t engine, int *size)
{
    if (size)
        *size = 0;
    errno = ENOTSUP;
    return NULL;
}

MC_EXPORT int freeNotifsMsgBuf(notify_msg_t *msg, int size)
{
    for (int i = 0; msg && i < size; i++) {
        free(msg[i].name);
        free(msg[i].msg);
    }
    free(msg);
    return 0;
}

MC_EXPORT int genNotifyInEngine(transfer_engine_t engine, uint64_t target_id,
                                notify_msg_t notify_msg)
{
    return mc_code(-ENOTSUP);
}

MC_EXPORT int getTransferStatus(transfer_engine_t engine, batch_id_t batch_id, size_t task_id,
                                struct transfer_status *status)
{
    struct mc_engine *mc = engine;
    struct teshim_task_status st;
    int ret;

    if (!mc || !status)
        return mc_status_code(-EINVAL);
    ret = teshim_task_status(mc->eng, batch_id, task_id, &st);
    if (ret)
        return mc_status_code(ret == -ENOENT ? -EINVAL : ret);
    switch (st.state) {
    case TESHIM_TASK_COMPLETED:
        status->status = STATUS_COMPLETED;
        break;
    case TESHIM_TASK_FAILED:
        status->status = st.error == -ECANCELED ? STATUS_CANCELED : STATUS_FAILED;
        break;
    case TESHIM_TASK_TIMED_OUT:
        status->status = STATUS_TIMEOUT;
        break;
    default: /* waiting in the limiter or in flight: Mooncake says WAITING */
        status->status = STATUS_WAITING;
        break;
    }
    status->transferred_bytes = st.transferred;
    return 0;
}

MC_EXPORT int freeBatchID(transfer_engine_t engine, batch_id_t batch_id)
{
    struct mc_engine *mc = engine;
    int ret;

    if (!mc)
        return mc_status_code(-EINVAL);
    ret = teshim_batch_free(mc->eng, batch_id);
    return ret ? mc_status_code(ret == -ENOENT ? -EINVAL : ret) : 0;
}

MC_EXPORT int syncSegmentCache(transfer_engine_t engine)
{
    return engine ? 0 : mc_code(-EINVAL);
}

MC_EXPORT int getNicLoadStats(transfer_engine_t engine, nic_load_stat_t *stats, size_t *count)
{
    return mc_code(-ENOTSUP);
}

MC_EXPORT void enableGracefulShutdown(transfer_engine_t engine)
{
}

/* Append to buf at *off; false once it no longer fits. */
__attribute__((format(printf, 4, 5))) static bool put(char *buf, size_t cap, size_t *off,
                                                      const char *fmt, ...)
{
    va_list ap;
    int n;

    if (*off >= cap)
        return false;
    va_start(ap, fmt);
    n = vsnprintf(buf + *off, cap - *off, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap - *off) {
        *off = cap;
        return false;
    }
    *off += (size_t)n;
    return true;
}

MC_EXPORT int showLinks(transfer_engine_t engine, char *buf_out, size_t buf_len, int json)
{
    struct mc_engine *mc = engine;
    size_t off = 0;
    bool ok, first = true;

    if (!mc || !buf_out || !buf_len)
        return mc_code(-EINVAL);
    buf_out[0] = '\0';
    pthread_mutex_lock(&mc->lock);
    ok = !json || put(buf_out, buf_len, &off, "{\"local\":\"%s\",\"segments\":[", mc->name);
    for (size_t i = 0; ok && i < mc->nsegs; i++) {
        const char *t;
        if (!mc->segs[i].opens)
            continue;
        t = teshim_segment_transport(mc->eng, mc->segs[i].handle);
        if (json)
            ok = put(buf_out, buf_len, &off, "%s{\"id\":%zu,\"name\":\"%s\",\"transport\":\"%s\"}",
                     first ? "" : ",", i + 1, mc->segs[i].name, t ? t : "?");
        else
            ok = put(buf_out, buf_len, &off, "%zu %s %s\n", i + 1, mc->segs[i].name, t ? t : "?");
        first = false;
    }
    if (ok && json)
        ok = put(buf_out, buf_len, &off, "]}");
    pthread_mutex_unlock(&mc->lock);
    return ok ? 0 : mc_code(-ENOBUFS);
}
