/*
 * Private structures of the engine shared by the core and the transports.
 * Not installed; the public API is include/teshim/engine.h.
 */
#ifndef TESHIM_ENG_H
#define TESHIM_ENG_H

#include "teshim/engine.h"
#include "eng_proto.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct eng_transport;
struct eng_task;
struct eng_segment;

/*
 * A transport: one table of operations. eng_transport_init overlays the
 * given table on typed stubs that fail with -EOPNOTSUPP, so the core never
 * tests for NULL. A transport's object embeds struct eng_transport first.
 */
struct eng_transport_ops {
    size_t size; /* sizeof(struct eng_transport_ops) of the provider */
    const char *name;
    /* Prepare the data path to an opened segment (handshake already done).
     * -EOPNOTSUPP / -EPERM tell the core to try the next transport. */
    int (*seg_open)(struct eng_transport *tp, struct eng_segment *seg);
    /* Release what seg_open set up; no request to seg is unfinished. */
    void (*seg_close)(struct eng_transport *tp, struct eng_segment *seg);
    /* Start a task admitted by the limiter. The transport calls
     * eng_task_set_slices once, then eng_task_slice_done for every slice,
     * from any thread, never with one of its locks held. */
    void (*start)(struct eng_transport *tp, struct eng_task *task);
    /* Stop threads, fail what is queued, free the object. */
    void (*destroy)(struct eng_transport *tp);
    /* Around the start calls of one teshim_submit on the calling thread:
     * a transport may hold back sends in begin and issue them together in
     * end (one sendmsg for many requests). */
    void (*submit_begin)(struct eng_transport *tp);
    void (*submit_end)(struct eng_transport *tp);
};

struct eng_transport {
    struct eng_transport_ops ops; /* provider ops overlaid on the stubs */
    struct teshim_engine *eng;
};

void eng_transport_init(struct eng_transport *tp, struct teshim_engine *eng,
                        const struct eng_transport_ops *ops);

/* Transport constructors. */
int eng_tcp_create(struct teshim_engine *eng, struct eng_transport **tp_p);
int eng_local_create(struct teshim_engine *eng, struct eng_transport **tp_p);

/* A local registration. */
struct eng_region {
    uint64_t addr, len;
    bool remote;
    int cuda_dev;     /* -1 = host memory */
    atomic_int users; /* peer requests using the region right now */
};

/* engine.tcp.same_host_send, in the table's order */
enum eng_same_host { ENG_SAME_HOST_AUTO, ENG_SAME_HOST_SERIAL, ENG_SAME_HOST_PARALLEL };

struct eng_params {
    int transport; /* 0 auto, 1 tcp, 2 local */
    int io_threads;
    uint64_t slice_bytes;
    int conns_per_peer;
    int same_host_send; /* enum eng_same_host; auto is resolved at create */
    int max_conns;
    bool nodelay;
    int sockbuf;
    int max_inflight;
    int connect_attempts;
    int connect_backoff_ms;
    int connect_backoff_max_ms;
    int connect_timeout_ms;
    int idle_timeout_ms; /* 0 = never */
    int request_timeout_ms;
    bool local_serve;
    int log_level;
    /* staging of cuda:N memory: the pinned pools' knobs (cuda.* parameters) */
    uint64_t cuda_chunk;
    int cuda_buffers;
    int cuda_threads; /* host copy threads of a bounced copy; 0 = auto */
    uint64_t cuda_pinned_max;
};

struct eng_segment {
    int64_t id;
    char name[300];
    struct sockaddr_storage sa;
    socklen_t salen;
    struct eng_hello hello; /* the peer's identity at open */
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
    atomic_int busy; /* unfinished requests */
    /* tp local: the tcp path to the peer's device memory, which
     * process_vm_* cannot reach; made on first use, under seg_lock */
    struct eng_segment *dev_path;
};

struct eng_batch {
    teshim_batch_t id;
    size_t max;
    size_t n; /* submitted, under the engine's batch lock */
    struct eng_task *tasks;
    atomic_size_t unfinished;
    atomic_size_t failed;
    atomic_int waiters; /* threads in teshim_batch_wait: free refuses meanwhile */
    pthread_mutex_t lock;
    pthread_cond_t cond;
};

struct eng_task {
    struct eng_batch *batch;
    struct eng_segment *seg;
    struct eng_task *next; /* limiter queue */
    int op;
    char *local;
    uint64_t raddr, len;
    uint64_t t_submit, t_done;
    atomic_int state;
    atomic_int error;
    atomic_uint_fast64_t transferred;
    atomic_uint slices_left;
    int cuda_dev;  /* local memory on this CUDA device; -1 = host memory */
    char *dev_ptr; /* device tasks: the caller's device address while local
                      points at the host staging buffer */
    void *stage;   /* device tasks: the host staging buffer */
};

struct teshim_engine {
    struct eng_params p;
    char name[ENG_NAME_MAX];
    int port; /* -1: not listening */
    char listen_host[256];

    pthread_rwlock_t reg_lock;
    struct eng_region **regs; /* sorted by addr */
    size_t nregs, capregs;

    pthread_mutex_t seg_lock;
    struct eng_segment **segs;
    size_t nsegs, capsegs;

    pthread_rwlock_t batch_lock;
    struct eng_batch **batches;
    size_t capbatches;
    uint32_t batch_gen;

    pthread_mutex_t lim_lock;
    int active;
    struct eng_task *wait_head, *wait_tail;

    struct eng_transport *tcp, *local;
    atomic_int dev_ops; /* device tasks queued for a staging copy (eng_copy.c) */
    uint8_t boot_id[16];
    /* Read by same-host peers with process_vm_readv at the address HELLO
     * announces (probe_addr): the probe value, then the generation of
     * unregistrations, bumped by every teshim_unregister so a peer's cached
     * region list is known stale. Both sides speak the same protocol
     * version, hence the same layout. */
    struct eng_peer_words {
        volatile uint64_t probe;
        atomic_uint_fast64_t unreg_gen;
    } words;

    struct {
        atomic_uint_fast64_t submitted, finished, failed, active, waiting, bytes, conn_new,
            conn_reuse, conn_retries, conn_closed_idle, conn_broken, connections, accepted,
            peer_rejected, local_fallbacks;
    } st;
};

/* Logging: one line to stderr (or log.file) if level <= the engine's. */
enum { ENG_LOG_ERROR, ENG_LOG_WARN, ENG_LOG_INFO, ENG_LOG_DEBUG };
void eng_log(const struct teshim_engine *eng, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define eng_err(e, ...) eng_log(e, ENG_LOG_ERROR, __VA_ARGS__)
#define eng_warn(e, ...) eng_log(e, ENG_LOG_WARN, __VA_ARGS__)
#define eng_info(e, ...) eng_log(e, ENG_LOG_INFO, __VA_ARGS__)
#define eng_dbg(e, ...) eng_log(e, ENG_LOG_DEBUG, __VA_ARGS__)

uint64_t eng_now_ns(void);

/* Peer side: find the remote-accessible region holding [addr, addr+len)
 * and take a reference (eng_region_put when done); NULL if none. */
struct eng_region *eng_region_get(struct teshim_engine *eng, uint64_t addr, uint64_t len);
void eng_region_put(struct eng_region *r);
/* The remote-accessible regions as descriptors (malloc'ed) for HELLO_ACK. */
int eng_region_list(struct teshim_engine *eng, struct eng_region_desc **out, uint32_t *n);
/* Our identity block. */
void eng_hello_self(struct teshim_engine *eng, struct eng_hello *h);

/* Task progress, called by transports. */
void eng_task_set_slices(struct eng_task *t, unsigned n);
void eng_task_slice_done(struct eng_task *t, uint64_t bytes, int err);
/* Finish a task with err (0 = completed): counters, state, waiters, limiter. */
void eng_task_finish(struct eng_task *t, int err);

/* Fail with -ETIMEDOUT the tasks queued by the limiter for longer than
 * engine.request_timeout_ms (measured from submission); cheap when nothing
 * is queued. Driven by submit, by every finish, and by the tcp I/O
 * threads' timer, so a queue behind stuck requests still expires. */
void eng_limiter_expire(struct teshim_engine *eng, uint64_t now);

/* Embedded p2p metadata: connect to seg's address, exchange HELLO, return
 * the peer's identity in *h and its regions (h->nregions, malloc'ed) in
 * *regions_p. seg is not modified. */
int eng_meta_fetch(struct teshim_engine *eng, const struct eng_segment *seg, struct eng_hello *h,
                   struct eng_region_desc **regions_p);

/* The regions of an open segment, under its own lock: the list is
 * replaced when the local transport refreshes it. */
/* 0 when [addr, addr+len) is inside one region of a list valid for the
 * peer's unregistration generation gen; -EFAULT outside; -ESTALE when the
 * list is older than gen. */
int eng_seg_check(struct eng_segment *seg, uint64_t addr, uint64_t len, uint64_t gen);
/* True if [addr, addr+len) lies in a region the peer announced as device
 * memory (ENG_REGION_DEVICE: reached over tcp, not process_vm_*). */
bool eng_seg_in_device(struct eng_segment *seg, uint64_t addr, uint64_t len);
/* Install a fetched list (taking ownership) valid for the peer's
 * unregistration generation gen; the old list is freed. */
void eng_seg_set_regions(struct eng_segment *seg, struct eng_region_desc *regions, uint32_t n,
                         uint64_t gen);
/* Parse "host:port" ("[v6]:port") into sa; 0 or -EINVAL / -EHOSTUNREACH. */
int eng_parse_hostport(const char *s, bool passive, struct sockaddr_storage *sa, socklen_t *len);
/* Backoff before attempt n (1-based) with jitter, in ms. */
int eng_backoff_ms(const struct eng_params *p, int attempt);

#endif
