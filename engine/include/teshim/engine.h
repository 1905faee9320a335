/*
 * teshim native transfer engine: a thread-safe batch-transfer C API.
 *
 * An engine owns the memory registrations of one process and talks to
 * remote segments, each named "host:port" after the listen address of the
 * peer engine. A transfer is a batch of READ/WRITE requests between a
 * registered local buffer and a peer's remote-accessible registrations;
 * requests run asynchronously and their state is polled (or waited for).
 *
 * Conventions: every function returns 0 (or a non-negative value where
 * documented) on success and a negative errno on failure; the cause of a
 * failure is logged once (log.level / log.file of the policy table, or the
 * engine's own log sink). Output parameters are last and written only on
 * success. All functions may be called from any thread.
 */
#ifndef TESHIM_ENGINE_H
#define TESHIM_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct teshim_engine;

/* Handle of an open remote segment (>= 0). */
typedef int64_t teshim_segment_t;
/* Handle of a batch (> 0). */
typedef uint64_t teshim_batch_t;

enum teshim_transport {
    TESHIM_TRANSPORT_DEFAULT = 0, /* engine.transport from the policy table */
    TESHIM_TRANSPORT_AUTO,        /* local for same-host peers that permit it, else tcp */
    TESHIM_TRANSPORT_TCP,
    TESHIM_TRANSPORT_LOCAL, /* same-host process_vm_*; falls back to tcp when not permitted */
    TESHIM_TRANSPORT_RDMA,  /* RC queue pairs over libibverbs; falls back to tcp without devices */
};

/* Who copies between same-host peers (engine.local.mode). */
enum teshim_local_mode {
    TESHIM_LOCAL_MODE_DEFAULT = 0, /* engine.local.mode from the policy table */
    TESHIM_LOCAL_MODE_TARGET,      /* the target checks each request and copies */
    TESHIM_LOCAL_MODE_INITIATOR,   /* the initiator copies straight into the target */
};

/* How threads send to a tcp peer on the same host (engine.tcp.same_host_send). */
enum teshim_same_host_send {
    TESHIM_SAME_HOST_DEFAULT = 0, /* engine.tcp.same_host_send from the policy table */
    TESHIM_SAME_HOST_AUTO,        /* serial where the process may run on 4 CPUs or fewer */
    TESHIM_SAME_HOST_SERIAL,      /* one thread at a time over all the peer's connections */
    TESHIM_SAME_HOST_PARALLEL,    /* one thread per connection */
    TESHIM_SAME_HOST_IO,          /* each connection's bulk by its own I/O thread */
};

/*
 * Options of teshim_engine_create. Zero / NULL fields take the value of the
 * policy table (engine.* parameters, read with pol_load from the process
 * environment and config file), so a caller only sets what it overrides.
 */
struct teshim_engine_opts {
    size_t size;            /* sizeof(struct teshim_engine_opts): lets the struct grow */
    const char *local_name; /* name announced to peers; NULL = "host:pid" */
    const char *listen;     /* "HOST:PORT" to serve segments on (port 0 = any);
                               NULL = do not serve (initiator only) */
    const char *metadata;   /* "p2p" (embedded handshake), "etcd://HOST:PORT[,...]"
                               (publish local_name, resolve names there);
                               NULL = engine.metadata */
    enum teshim_transport transport;
    int io_threads;         /* engine.tcp.io_threads; 0 = policy (0 there = online cores) */
    size_t slice_bytes;     /* engine.tcp.slice_bytes */
    int conns_per_peer;     /* engine.tcp.conns_per_peer */
    int max_conns;          /* engine.tcp.max_conns */
    int max_inflight;       /* engine.max_inflight */
    int connect_attempts;   /* engine.connect_attempts */
    int connect_backoff_ms; /* engine.connect_backoff_ms */
    int connect_timeout_ms; /* engine.connect_timeout_ms */
    int idle_timeout_ms;    /* engine.idle_timeout_ms (-1 = never, 0 = policy) */
    int request_timeout_ms; /* engine.request_timeout_ms */
    bool no_policy;         /* true: ignore the environment/config file, built-in defaults */
    /* fields added later: a caller built before them passes a smaller size
     * (at least TESHIM_ENGINE_OPTS_SIZE_V1), and they take the policy's value */
    enum teshim_same_host_send same_host_send; /* engine.tcp.same_host_send */
    enum teshim_local_mode local_mode;         /* engine.local.mode */
};

/* The size of the options before same_host_send: the least opts.size taken. */
#define TESHIM_ENGINE_OPTS_SIZE_V1 offsetof(struct teshim_engine_opts, same_host_send)

/*
 * Create an engine. With opts->listen set it starts serving its
 * remote-accessible registrations on that address (one SO_REUSEPORT
 * listener per I/O thread). Returns 0 and the engine in *eng_p; -EINVAL for
 * a bad option, -EADDRINUSE / -EADDRNOTAVAIL when the address cannot be
 * bound, -ENOMEM, -EMFILE...
 */
int teshim_engine_create(const struct teshim_engine_opts *opts, struct teshim_engine **eng_p);

/*
 * Stop the I/O threads, fail every unfinished request with -ECANCELED,
 * close connections and free everything. Batches and segment handles
 * become invalid. NULL is accepted.
 */
void teshim_engine_destroy(struct teshim_engine *eng);

/*
 * The port the engine listens on (useful after listening on port 0);
 * -ENOTCONN when it does not listen.
 */
int teshim_engine_port(const struct teshim_engine *eng);

/*
 * Register [addr, addr + len) for transfers. location is "cpu" or "cuda:N"
 * (N a decimal device index). remote_accessible lets peers read and write
 * the range; local-only registrations can only be the local side of a
 * request. Ranges may not overlap an existing registration (-EEXIST).
 * "cuda:N" needs a CUDA runtime that can be dlopen'ed (-ENODEV otherwise).
 * Device memory is staged through pinned host buffers by the engine, on a
 * stream of its own: it must be complete (synchronised) when a request
 * using it is submitted, and, when remote_accessible, whenever a peer may
 * read or write it. A peer's request for device memory is served over tcp
 * only (never by a same-host peer's process_vm_* access): the I/O thread
 * starts an asynchronous copy through a pinned staging buffer its
 * connection reuses and answers when the copy completed, so a WRITE is
 * acknowledged only once the bytes are on the device.
 */
int teshim_register(struct teshim_engine *eng, void *addr, size_t len, const char *location,
                    bool remote_accessible);

/*
 * Remove the registration starting at addr (-ENOENT if none). Requests
 * peers submit after it returns fail with -EFAULT, over every transport.
 * Waits until no tcp peer request is using it, at most
 * engine.unregister_timeout_ms: then the connections of the peers whose
 * requests still use it (a peer that does not read its answers) are
 * closed, their requests fail at the peer, and -ETIMEDOUT is returned
 * once they released it (the registration is gone, the memory free to
 * reuse). -EBUSY (logged) if even that did not release it: the memory
 * must stay valid. Same-host peers in engine.local.mode = target are
 * served here like tcp peers; in initiator mode (the "local" path) they
 * copy without running code here, so one already copying when this is
 * called may still complete: quiesce those peers before freeing memory
 * they may still be copying.
 */
int teshim_unregister(struct teshim_engine *eng, void *addr);

/*
 * Open the remote segment name ("host:port"): fetch the peer's
 * registrations through the embedded handshake (the local transport
 * fetches them again when a request falls outside them, so regions the
 * peer registers later are usable without reopening) (retrying with backoff
 * within engine.connect_timeout_ms) and choose the data path. Returns the
 * handle in *seg_p. -EINVAL for a malformed name, -ECONNREFUSED /
 * -ETIMEDOUT / -EHOSTUNREACH when the peer cannot be reached, -EACCES when
 * the peer requires engine.auth_key_file and ours is missing or holds
 * another key, -ENOKEY when ours is set and the peer has none. A segment
 * is bound to the peer's engine instance: once another instance answers at
 * its address (the peer restarted), its requests fail with -ESTALE and it
 * must be closed and opened again.
 * With etcd metadata, name is first looked up in etcd (the local_name a
 * peer engine published): its address is handshaken with and the key is
 * watched, so requests to a peer that restarted (another instance id
 * published) fail with -ESTALE and to one that left (key deleted, lease
 * expired) with -EHOSTDOWN until the segment is reopened. A name not
 * published there is opened as host:port; -ENOENT when it is neither.
 */
int teshim_segment_open(struct teshim_engine *eng, const char *name, teshim_segment_t *seg_p);

/* One remote-accessible region of an open segment. */
#define TESHIM_REGION_DEVICE 0x1u /* the peer registered it as cuda:N memory */

struct teshim_region {
    uint64_t addr; /* address in the peer's address space */
    uint64_t len;
    uint32_t flags; /* TESHIM_REGION_* */
};

/*
 * Copy up to max regions of an open segment into regions; returns the
 * number of regions the segment has (may exceed max). The list is the
 * one announced at open; for a local segment, the one last refreshed
 * (a request outside it, or after the peer unregistered, fetches it anew).
 */
int teshim_segment_regions(struct teshim_engine *eng, teshim_segment_t seg,
                           struct teshim_region *regions, size_t max);

/*
 * Name of the data path used for a segment: "tcp", "local" (same host,
 * the initiator copies: engine.local.mode = initiator on both sides) or
 * "local-target" (same host, the target checks each request and copies;
 * frames on tcp connections); NULL for an invalid handle.
 */
const char *teshim_segment_transport(struct teshim_engine *eng, teshim_segment_t seg);

/*
 * Close a segment. -EBUSY while requests to it are unfinished.
 */
int teshim_segment_close(struct teshim_engine *eng, teshim_segment_t seg);

/*
 * Allocate a batch able to hold max_requests requests (1..1048576).
 */
int teshim_batch_alloc(struct teshim_engine *eng, size_t max_requests, teshim_batch_t *batch_p);

/*
 * Free a batch; -EBUSY while any of its requests is unfinished or another
 * thread is inside teshim_batch_wait on it.
 */
int teshim_batch_free(struct teshim_engine *eng, teshim_batch_t batch);

enum teshim_opcode { TESHIM_OP_READ = 0, TESHIM_OP_WRITE = 1 };

/* One request: move length bytes between local and the peer's remote_offset. */
struct teshim_request {
    enum teshim_opcode opcode; /* READ: remote -> local; WRITE: local -> remote */
    void *local;               /* inside a local registration */
    teshim_segment_t segment;
    uint64_t remote_offset; /* address in the peer's address space, inside one of
                               its remote-accessible regions (teshim_segment_regions) */
    uint64_t length;        /* > 0 */
};

/*
 * Append n requests to a batch; they get task ids in submission order
 * (the first request of the batch is task 0). Every request is validated
 * before any is started: -EINVAL (bad opcode, zero length, bad segment),
 * -EFAULT (local range not inside one registration), -ENOSPC (batch full),
 * -ESTALE / -EHOSTDOWN (etcd: the segment's peer restarted / left).
 * Requests over engine.max_inflight wait in the engine's queue; they are
 * started by the I/O threads as others finish, never by polling.
 * engine.request_timeout_ms counts from here: a request still queued when
 * it passes fails with -ETIMEDOUT (TESHIM_TASK_TIMED_OUT) without starting.
 * Returns the task id of the first request.
 */
int teshim_submit(struct teshim_engine *eng, teshim_batch_t batch,
                  const struct teshim_request *reqs, size_t n);

enum teshim_task_state {
    TESHIM_TASK_WAITING = 0, /* queued by the limiter, not started */
    TESHIM_TASK_PENDING,     /* in flight */
    TESHIM_TASK_COMPLETED,
    TESHIM_TASK_FAILED,
    TESHIM_TASK_TIMED_OUT,
};

struct teshim_task_status {
    enum teshim_task_state state;
    uint64_t transferred; /* bytes moved so far */
    int error;            /* negative errno when FAILED / TIMED_OUT, else 0 */
    uint64_t latency_ns;  /* submission to completion, when finished */
};

/*
 * The state of task task_id of a batch; -ENOENT for an id not submitted.
 */
int teshim_task_status(struct teshim_engine *eng, teshim_batch_t batch, size_t task_id,
                       struct teshim_task_status *status_p);

/*
 * Wait until every request submitted to the batch is finished or timeout_ms
 * passes (-1 = no limit). Returns the number of finished tasks that did not
 * complete (failed or timed out), -ETIMEDOUT if some are still running.
 */
int teshim_batch_wait(struct teshim_engine *eng, teshim_batch_t batch, int timeout_ms);

/* Counters of an engine, monotonic except active/waiting/connections. */
struct teshim_engine_stats {
    uint64_t submitted;    /* requests accepted by teshim_submit */
    uint64_t finished;     /* requests completed, failed or timed out */
    uint64_t failed;       /* of which not completed */
    uint64_t active;       /* requests in flight now */
    uint64_t waiting;      /* requests queued by the limiter now */
    uint64_t bytes;        /* bytes moved by completed slices */
    uint64_t conn_new;     /* outgoing connections established */
    uint64_t conn_reuse;   /* slices sent on an already established connection */
    uint64_t conn_retries; /* connection attempts that failed and were retried */
    uint64_t conn_closed_idle;
    uint64_t conn_broken;        /* connections lost with work on them */
    uint64_t connections;        /* outgoing connections open now */
    uint64_t accepted;           /* incoming connections accepted */
    uint64_t peer_rejected;      /* peer requests refused (bounds, malformed) */
    uint64_t local_fallbacks;    /* segments that asked for local and got tcp */
    uint64_t rdma_staged;        /* rdma slices of unregistered local memory staged */
    uint64_t rdma_gpu_fallbacks; /* cuda:N registrations without peer memory (staged) */
};

/* The struct as the first release had it (up to local_fallbacks). */
#define TESHIM_ENGINE_STATS_SIZE_V1 offsetof(struct teshim_engine_stats, rdma_staged)

/*
 * Fill the first size bytes of *stats_p with the engine's counters (size:
 * sizeof(struct teshim_engine_stats) as the caller was built; the struct
 * only grows at its end). teshim_engine_stats() is a macro passing the
 * caller's sizeof; the exported function of that name, which programs
 * built before the struct grew call, fills TESHIM_ENGINE_STATS_SIZE_V1
 * bytes only. -EINVAL for NULL or a size below TESHIM_ENGINE_STATS_SIZE_V1.
 */
int teshim_engine_stats_size(struct teshim_engine *eng, struct teshim_engine_stats *stats_p,
                             size_t size);
int(teshim_engine_stats)(struct teshim_engine *eng, struct teshim_engine_stats *stats_p);
#define teshim_engine_stats(eng, stats_p)                                                          \
    teshim_engine_stats_size((eng), (stats_p), sizeof(*(stats_p)))

/* Text of a task state ("waiting", "pending", ...). */
const char *teshim_task_state_name(enum teshim_task_state s);

#ifdef __cplusplus
}
#endif
#endif
