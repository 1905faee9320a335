/*
 * The transport header: everything a transport may use, and nothing else
 * (the engine's driver.h). A transport is one ops table; its object embeds
 * struct eng_transport first. It sees the engine as struct eng_ctx (its
 * settings, identity and counters), the segments it serves and the tasks
 * it runs, and calls the services below it: regions, task progress, the
 * segments' region lists, the metadata handshake, the staging buffers and
 * device copies. The public API, the limiter and the batches stay private
 * (eng.h). Not installed.
 */
#ifndef TESHIM_ENG_TP_H
#define TESHIM_ENG_TP_H

#include "eng_auth.h"
#include "eng_base.h"
#include "eng_copy.h"
#include "eng_params.h"
#include "eng_proto.h"
#include "teshim/engine.h" /* opcodes */

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct eng_transport;
struct eng_task;
struct eng_segment;
struct eng_meta_watch;
struct eng_region;

/*
 * The part of an engine its transports see. The public teshim_engine
 * embeds it first.
 */
struct eng_ctx {
    struct eng_params p;
    struct eng_logger log;
    char name[ENG_NAME_MAX];
    uint8_t boot_id[16];
    /* random per engine start (HELLO_ACK): peers tell a restart from a
     * reconnection, and a metadata backend may publish it */
    uint8_t instance_id[16];
    struct eng_auth_key auth; /* engine.auth_key_file; len 0 = none */
    /* regions unregistered while peers' answers still use them: the tcp
     * workers close the connections holding such answers */
    atomic_int revoking;
    /* Read by same-host peers with process_vm_readv at the address HELLO
     * announces (probe_addr): the probe value, then the generation of
     * unregistrations, bumped by every teshim_unregister so a peer's cached
     * region list is known stale. Both sides speak the same protocol
     * version, hence the same layout. */
    struct eng_peer_words {
        volatile uint64_t probe;
        atomic_uint_fast64_t unreg_gen;
    } words;
    /* the counters of teshim_engine_stats, in its order */
    struct {
        atomic_uint_fast64_t submitted, finished, failed, active, waiting, bytes, conn_new,
            conn_reuse, conn_retries, conn_closed_idle, conn_broken, connections, accepted,
            peer_rejected, local_fallbacks;
    } st;
    atomic_int dev_ops; /* device copies queued or running (eng_copy.c) */
    /* slices of unregistered local memory staged through the rdma
     * transport's registered pool */
    atomic_uint_fast64_t rdma_staged;
    /* cuda:N registrations the rdma transport could not register directly
     * (no peer memory): staged instead */
    atomic_uint_fast64_t rdma_gpu_fallbacks;
    struct eng_copy *copy; /* cuda.* pools and staging, made by eng_copy_open */
};

/* Logging against an engine's logger (NULL: stderr, every level). */
static inline const struct eng_logger *eng_ctx_log(const struct eng_ctx *c)
{
    return c ? &c->log : NULL;
}
#define eng_err(c, ...) eng_log(eng_ctx_log(c), ENG_LOG_ERROR, __VA_ARGS__)
#define eng_warn(c, ...) eng_log(eng_ctx_log(c), ENG_LOG_WARN, __VA_ARGS__)
#define eng_info(c, ...) eng_log(eng_ctx_log(c), ENG_LOG_INFO, __VA_ARGS__)
#define eng_dbg(c, ...) eng_log(eng_ctx_log(c), ENG_LOG_DEBUG, __VA_ARGS__)

/*
 * A transport: one table of operations. eng_transport_init overlays the
 * given table on typed stubs, so callers never test for NULL; a provider
 * built against an older, shorter table (.size) gets the stubs for the
 * members it lacks.
 */
struct eng_transport_ops {
    size_t size; /* sizeof(struct eng_transport_ops) of the provider */
    const char *name;
    /* Prepare the data path to an opened segment (handshake already done).
     * -EOPNOTSUPP / -EPERM tell the engine to try the next transport.
     * Stub: -EOPNOTSUPP. */
    int (*seg_open)(struct eng_transport *tp, struct eng_segment *seg);
    /* Release what seg_open set up; no request to seg is unfinished.
     * Stub: nothing. */
    void (*seg_close)(struct eng_transport *tp, struct eng_segment *seg);
    /* Start a task admitted by the limiter. The transport calls
     * eng_task_set_slices once, then eng_task_slice_done for every slice,
     * from any thread, never with one of its locks held. Stub: fails the
     * task with -EOPNOTSUPP. */
    void (*start)(struct eng_transport *tp, struct eng_task *task);
    /* Stop threads, fail what is queued, free the object. Stub: nothing. */
    void (*destroy)(struct eng_transport *tp);
    /* Around the start calls of one teshim_submit on the calling thread:
     * a transport may hold back sends in begin and issue them together in
     * end (one sendmsg for many requests). Stubs: nothing. */
    void (*submit_begin)(struct eng_transport *tp);
    void (*submit_end)(struct eng_transport *tp);
    /* Whether requests to [addr, addr+len) of the open segment seg can go
     * over this transport (the local one cannot reach the peer's device
     * memory). Stub: true. */
    bool (*reaches)(struct eng_transport *tp, struct eng_segment *seg, uint64_t addr, uint64_t len);
    /* Take over an accepted connection whose handshake the metadata server
     * answered: fd (non-blocking) now carries this transport's frames;
     * pname names the peer in messages. 0 (fd is the transport's), or
     * -EOPNOTSUPP (the stub: a transport without connections of its own). */
    int (*adopt)(struct eng_transport *tp, int fd, const char *pname);
    /* Answer the trailer of a HELLO that arrived on fd (in[0, in_len), the
     * records of every transport): append this transport's records to
     * out at *pos (eng_tlv_put), up to max. A transport that sets up state
     * for the peer here may then take fd in adopt. Stub: 0, nothing. */
    int (*hello)(struct eng_transport *tp, int fd, const uint8_t *in, size_t in_len, uint8_t *out,
                 size_t max, size_t *pos);
    /* A registration was added / is being removed (after the engine's own
     * list took it out, no peer request uses it). reg may fail the
     * registration (-errno, logged). Stubs: 0 / nothing. */
    int (*reg)(struct eng_transport *tp, const struct eng_region *r);
    void (*unreg)(struct eng_transport *tp, const struct eng_region *r);
    /* Help the started, unfinished task t along from the calling thread, a
     * waiter that would otherwise sleep until a transport thread finished
     * it (teshim_batch_wait): the transport may read t's answer itself, so
     * the waiter completes t with no hand-off. 0 once t finished;
     * -ETIMEDOUT when deadline_ns (eng_now_ns clock; 0 = none) passed
     * first; -EAGAIN when it cannot help now (the caller sleeps as
     * before). The transport's threads complete t all the same when nobody
     * calls this: no progress may depend on it. The caller keeps t's
     * segment open meanwhile. Stub: -EAGAIN. */
    int (*progress)(struct eng_transport *tp, struct eng_task *t, uint64_t deadline_ns);
    /* Whether the transport moves local device memory [local, +len) itself
     * (registered with its NIC: peer memory, GPUDirect); the staging
     * wrapper then starts the device task on it unstaged. Stub: false. */
    bool (*direct)(struct eng_transport *tp, const void *local, uint64_t len);
};

struct eng_transport {
    struct eng_transport_ops ops; /* provider ops overlaid on the stubs */
    struct eng_ctx *eng;
};

/* Fill tp's table: ops over the typed stubs. */
void eng_transport_init(struct eng_transport *tp, struct eng_ctx *eng,
                        const struct eng_transport_ops *ops);

/* ---- the list of transports (eng_tp_list.c) ------------------------------- */

/* Transport constructors, one per row of the list. */
int eng_local_create(struct eng_ctx *eng, struct eng_transport **tp_p);
int eng_tcp_create(struct eng_ctx *eng, struct eng_transport **tp_p);
int eng_rdma_create(struct eng_ctx *eng, struct eng_transport **tp_p);
/* Create every transport of the list, each in its staging wrapper, into
 * tps (at most max) in preference order; *n_p set. On failure the ones made
 * are destroyed. */
int eng_transports_create(struct eng_ctx *eng, struct eng_transport **tps, int max, int *n_p);
/* The staging wrapper around inner (eng_tp_stage.c): device tasks are
 * staged through host memory around it; everything else goes to inner. */
int eng_tp_stage_wrap(struct eng_transport *inner, struct eng_transport **tp_p);

/* A local registration. */
struct eng_region {
    uint64_t addr, len;
    bool remote;
    int cuda_dev;        /* -1 = host memory */
    atomic_int users;    /* peer requests using the region right now */
    atomic_bool revoked; /* unregistered while still used: connections close */
};

/* An open remote segment. */
struct eng_segment {
    int64_t id;
    char name[300];
    struct sockaddr_storage sa;
    socklen_t salen;
    struct eng_hello hello; /* the peer's identity at open */
    uint8_t *trailer;       /* its HELLO_ACK's transport records (malloc'ed) */
    uint32_t trailer_len;
    pthread_rwlock_t regions_lock;
    struct eng_region_desc *regions; /* under regions_lock */
    uint32_t nregions;
    uint64_t regions_gen; /* the peer's unreg_gen the list is valid for */
    /* local transport: one refresh of the list at a time, and when the
     * last one started (rate limit) */
    pthread_mutex_t refresh_lock;
    uint64_t t_refresh;
    struct eng_transport *tp; /* the data path */
    void *tp_priv;
    bool local_target; /* tcp carries LOCAL_* frames: the target copies */
    atomic_int busy;   /* unfinished requests */
    /* another transport's path to the part of the peer tp does not reach
     * (its device memory from the local transport); made on first use */
    struct eng_segment *dev_path;
    /* a segment opened by a name published in etcd: its watch (eng_meta.h) */
    struct eng_meta_watch *watch;
};

struct eng_batch;

/* One request. A transport reads op, local, raddr, len and seg. */
struct eng_task {
    struct eng_batch *batch;
    struct eng_segment *seg;
    struct eng_ctx *eng;
    struct eng_transport *tp; /* started on (the staging wrapper of seg->tp) */
    struct eng_task *next;    /* limiter queue */
    int op;
    char *local;
    uint64_t raddr, len;
    uint64_t t_submit, t_done;
    atomic_int state;
    atomic_int error;
    atomic_uint_fast64_t transferred;
    atomic_uint slices_left;
    /* called when the last slice is done: eng_task_finish, or the staging
     * wrapper's completion for a device task (its copy to the device) */
    void (*done)(struct eng_task *t, int err);
    int cuda_dev;            /* local memory on this CUDA device; -1 = host memory */
    char *dev_ptr;           /* device tasks: the caller's device address while local
                                points at the host staging buffer */
    void *stage;             /* device tasks: the host staging buffer */
    teshim_segment_t seg_id; /* the request's segment, as the caller named it */
    void *_Atomic tp_priv;   /* the transport's, for progress (tcp: the connection of
                                a one-frame request); NULL at submit */
};

/* ---- services a transport calls ------------------------------------------ */

/* Task progress: n slices, then each one's bytes and error; the last one
 * calls t->done. Any thread, no transport lock held. */
void eng_task_set_slices(struct eng_task *t, unsigned n);
void eng_task_slice_done(struct eng_task *t, uint64_t bytes, int err);
/* Finish a task with err (0 = completed): counters, state, waiters, and its
 * limiter slot, which may start a queued task. */
void eng_task_finish(struct eng_task *t, int err);
/* Fail the tasks the limiter queued longer than engine.request_timeout_ms;
 * cheap when none is queued (a transport's timer drives it too). */
void eng_limiter_expire(struct eng_ctx *eng, uint64_t now);

/* Peer side: find the remote-accessible region holding [addr, addr+len)
 * and take a reference (eng_region_put when done); NULL if none. */
struct eng_region *eng_region_get(struct eng_ctx *eng, uint64_t addr, uint64_t len);
void eng_region_put(struct eng_region *r);
/* The remote-accessible regions as descriptors (malloc'ed) for HELLO_ACK. */
int eng_region_list(struct eng_ctx *eng, struct eng_region_desc **out, uint32_t *n);

/* 0 when [addr, addr+len) is inside one host-memory region of seg's list,
 * valid for the peer's unregistration generation gen; -EFAULT outside;
 * -ESTALE when the list is older than gen. */
int eng_seg_check(struct eng_segment *seg, uint64_t addr, uint64_t len, uint64_t gen);
/* True if [addr, addr+len) lies in a region the peer announced as device
 * memory (ENG_REGION_DEVICE). */
bool eng_seg_in_device(struct eng_segment *seg, uint64_t addr, uint64_t len);
/* Whether a handshake's answer h comes from the engine instance a segment
 * was opened on (its instance id and pid from that open): 0, or -ESTALE,
 * logged (the peer restarted at its address: other registrations, other
 * keys; the segment's requests fail until it is closed and opened again). */
int eng_seg_same_instance(struct eng_ctx *eng, const char *name, const uint8_t opened_id[16],
                          uint32_t opened_pid, const struct eng_hello *h);
/* Install a fetched list (taking ownership) valid for generation gen. */
void eng_seg_set_regions(struct eng_segment *seg, struct eng_region_desc *regions, uint32_t n,
                         uint64_t gen);

/* Embedded p2p metadata: connect to seg's address, exchange HELLO, return
 * the peer's identity in *h and its regions (h->nregions, malloc'ed) in
 * *regions_p, with engine.connect_* retries. seg is not modified. */
int eng_meta_fetch(struct eng_ctx *eng, const struct eng_segment *seg, struct eng_hello *h,
                   struct eng_region_desc **regions_p);
/*
 * The same with transport records: out[0, out_len) is sent as the HELLO's
 * trailer; the HELLO_ACK's trailer is returned in *trailer_p (malloc'ed,
 * *trailer_len_p bytes; may be NULL when not wanted). With fd_p, the
 * connection of the attempt that succeeded is kept open and returned in
 * *fd_p (non-blocking), for a transport that ties state to it.
 */
int eng_meta_fetch_ex(struct eng_ctx *eng, const struct eng_segment *seg, const uint8_t *out,
                      size_t out_len, struct eng_hello *h, struct eng_region_desc **regions_p,
                      uint8_t **trailer_p, uint32_t *trailer_len_p, int *fd_p);
/* Parse "host:port" ("[v6]:port") into sa; 0 or -EINVAL / -EHOSTUNREACH. */
int eng_parse_hostport(const char *s, bool passive, struct sockaddr_storage *sa, socklen_t *len);
/* Our identity block for HELLO_ACK. */
void eng_hello_self(struct eng_ctx *eng, struct eng_hello *h);
/* HELLO of an initiator: with a key, only the flag and the nonce (nothing
 * of us before the peer proved the key). */
void eng_hello_initiator(struct eng_ctx *eng, const uint8_t nonce[ENG_NONCE_BYTES],
                         struct eng_hello *h);
/*
 * The initiator's answer to the target's AUTH frame f (payload p, NULL for
 * a refusal) on a connection whose HELLO carried nonce: checks the target's
 * proof and writes our response (header and payload, ENG_FRAME_BYTES +
 * ENG_AUTH_BYTES, or a bare refusal) into out, its length in *out_len.
 * 0 to go on (send out, then wait for HELLO_ACK), or -EACCES / -ENOKEY,
 * logged naming the segment who (send out, then close).
 */
int eng_meta_auth_answer(struct eng_ctx *eng, const char *who, const struct eng_frame *f,
                         const uint8_t *p, const uint8_t nonce[ENG_NONCE_BYTES], uint8_t *out,
                         size_t *out_len);

#endif
