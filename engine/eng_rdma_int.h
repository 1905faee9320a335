/*
 * The rdma transport's private header. Files by role: eng_rdma_dev.c
 * (libibverbs loaded at run time, devices, registrations, the staging
 * pool, GID choice, queue pair transitions), eng_rdma_conn.c (connection
 * setup over the handshake: the records of HELLO/HELLO_ACK, both sides),
 * eng_rdma_io.c (posting slices, the completion thread, timeouts),
 * eng_rdma.c (the transport face: its ops table). Included by those files
 * only.
 *
 * libibverbs is never linked: it is dlopen'ed ("libibverbs.so.1") and its
 * functions are looked up with dlvsym at the versions rdma-core exports,
 * so the engine runs where it is absent (the transport then has no device
 * and declines every segment). Posting and polling go through the
 * context's ops, as verbs.h's inline ibv_post_send/ibv_poll_cq do.
 *
 * A segment gets, for every pair (local device i mod L, remote device i
 * mod R), i < max(L, R), engine.rdma.qps_per_peer RC queue pairs, set up
 * by a second handshake on a connection that stays open: its end tells
 * each side the other is gone (the target then destroys its queue pairs).
 * A request is bounds-checked against the peer's announced regions and
 * their rkeys, cut into slices of engine.rdma.slice_bytes, and each slice
 * is one RDMA WRITE or READ posted round-robin over the queue pairs that
 * have room (engine.rdma.max_wr per queue pair, engine.rdma.cq_depth per
 * device); the rest waits in order and is posted by the completion
 * thread as room frees. Local memory without a registration (a device
 * task's host staging buffer) goes through chunks of a registered pool.
 *
 * Locking: one mutex (rt->lk) guards the counters, the pending queue, the
 * connection lists and posting. Task callbacks are made without it.
 */
#ifndef TESHIM_ENG_RDMA_INT_H
#define TESHIM_ENG_RDMA_INT_H

#include "eng_tp.h"

#include <infiniband/verbs.h> /* types only: the library is dlopen'ed */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the rdma records are written in host order, which must be little endian"
#endif

#define RDMA_MAX_DEVS 8
#define RDMA_MAX_PATHS RDMA_MAX_DEVS
#define RDMA_TICK_NS (20 * 1000000ull)
#define RDMA_RD_ATOM 16

/* The libibverbs functions used, looked up with dlvsym. */
struct rdma_fns {
    void *lib;
    struct ibv_device **(*get_device_list)(int *n);
    void (*free_device_list)(struct ibv_device **list);
    const char *(*get_device_name)(struct ibv_device *dev);
    struct ibv_context *(*open_device)(struct ibv_device *dev);
    int (*close_device)(struct ibv_context *ctx);
    int (*query_device)(struct ibv_context *ctx, struct ibv_device_attr *attr);
    int (*query_port)(struct ibv_context *ctx, uint8_t port, struct ibv_port_attr *attr);
    int (*query_gid)(struct ibv_context *ctx, uint8_t port, int index, union ibv_gid *gid);
    int (*query_gid_ex)(struct ibv_context *ctx, uint32_t port, uint32_t index,
                        struct ibv_gid_entry *entry, uint32_t flags, size_t entry_size);
    struct ibv_pd *(*alloc_pd)(struct ibv_context *ctx);
    int (*dealloc_pd)(struct ibv_pd *pd);
    struct ibv_mr *(*reg_mr)(struct ibv_pd *pd, void *addr, size_t len, int access);
    struct ibv_mr *(*reg_mr_iova2)(struct ibv_pd *pd, void *addr, size_t len, uint64_t iova,
                                   unsigned int access);
    int (*dereg_mr)(struct ibv_mr *mr);
    struct ibv_cq *(*create_cq)(struct ibv_context *ctx, int cqe, void *cq_ctx,
                                struct ibv_comp_channel *ch, int vec);
    int (*destroy_cq)(struct ibv_cq *cq);
    struct ibv_qp *(*create_qp)(struct ibv_pd *pd, struct ibv_qp_init_attr *attr);
    int (*destroy_qp)(struct ibv_qp *qp);
    int (*modify_qp)(struct ibv_qp *qp, struct ibv_qp_attr *attr, int mask);
};

/* An opened device (port 1). */
struct rdma_dev {
    char name[32];
    struct ibv_context *ctx;
    struct ibv_pd *pd;
    struct ibv_cq *cq;
    struct ibv_port_attr port;
    bool roce; /* Ethernet link layer: addressed by GID */
    int max_rd_atom;
    int cq_out; /* work requests outstanding on the device's CQ (rt->lk) */
};

/* A local registration and its keys on every device. */
struct rdma_mr {
    uint64_t addr, len;
    bool remote;
    struct ibv_mr *mr[RDMA_MAX_DEVS];
};

/* What a peer announced of one of its devices (the DEVS record). */
struct rdma_w_dev {
    char name[32];
    uint8_t gid[16];
    uint16_t lid;
    uint8_t roce;
    uint8_t mtu;
    uint32_t reserved;
};
_Static_assert(sizeof(struct rdma_w_dev) == 56, "DEVS record layout");

/* A remote region with its rkey on each of the peer's devices. */
struct rdma_rkey {
    uint64_t addr, len;
    uint32_t rkey[RDMA_MAX_DEVS];
};

struct rdma_conn;

struct rdma_qp {
    struct ibv_qp *qp;
    int dev;  /* local device index */
    int rdev; /* the peer's device */
    int out;  /* work requests outstanding (rt->lk) */
};

/* One slice: one work request. */
struct rdma_wr {
    struct rdma_wr *next, *prev; /* pending queue, or the conn's in-flight list */
    struct eng_task *t;
    struct rdma_conn *c;
    struct rdma_qp *q;
    uint64_t off, len;
    int chunk; /* staging chunk, -1 = the caller's registered memory */
    uint64_t t_post;
};

/* The queue pairs of one segment (initiator), or of one peer's connection
 * to us (target). */
struct rdma_conn {
    struct rdma_conn *next;
    uint64_t id;             /* epoll key */
    struct eng_segment *seg; /* NULL on the target side */
    int fd;                  /* the handshake connection, kept open */
    bool adopted;            /* target: the listener handed fd over */
    bool broken;             /* a queue pair failed or the peer left */
    int break_err;           /* what its flushed work requests fail with */
    int nqps;
    struct rdma_qp *qps;
    unsigned rr;
    int out;                             /* work requests outstanding or pending */
    struct rdma_wr *fly_head, *fly_tail; /* in flight, oldest first */
    /* initiator: the peer's instance, devices and keys */
    uint32_t peer_pid;
    atomic_bool stale; /* another instance answers at the peer's address: -ESTALE */
    int rndev;
    struct rdma_w_dev rdevs[RDMA_MAX_DEVS];
    struct rdma_rkey *rkeys;
    uint32_t nrkeys;
    pthread_mutex_t setup_lock; /* one reconnect at a time */
};

struct rdma_tp {
    struct eng_transport base;
    struct rdma_fns f;
    int ndev;
    struct rdma_dev dev[RDMA_MAX_DEVS];
    pthread_rwlock_t mr_lock;
    struct rdma_mr *mrs; /* sorted by addr */
    size_t nmrs, capmrs;
    /* staging pool: nchunks chunks of rdma_slice bytes, registered */
    uint8_t *pool;
    struct ibv_mr *pool_mr[RDMA_MAX_DEVS];
    int nchunks, *free_chunks, nfree;
    pthread_mutex_t lk;
    struct rdma_wr *pend_head, *pend_tail;
    struct rdma_conn *conns; /* both sides */
    uint64_t next_id;
    int epfd, evfd;
    pthread_t th;
    bool started, stop;
    atomic_bool idle;                /* the completion thread may sleep: ring evfd */
    atomic_bool gpu_fallback_logged; /* "no peer memory" said once */
};

/* eng_rdma_dev.c */
int rdma_load(struct rdma_tp *rt);
void rdma_unload(struct rdma_tp *rt);
int rdma_mr_add(struct rdma_tp *rt, const struct eng_region *r);
/* A cuda:N region, by engine.rdma.gpu_direct: 0 also when it is staged. */
int rdma_mr_add_device(struct rdma_tp *rt, const struct eng_region *r);
void rdma_mr_del(struct rdma_tp *rt, uint64_t addr);
void rdma_mr_free_all(struct rdma_tp *rt);
/* The lkey of [addr, addr+len) on device dev; 0 = not registered. */
uint32_t rdma_lkey(struct rdma_tp *rt, uint64_t addr, uint64_t len, int dev);
/* Whether [addr, addr+len) lies in one local registration (its devices). */
bool rdma_registered(struct rdma_tp *rt, uint64_t addr, uint64_t len);
/* The remote-accessible registrations as rkey entries (malloc'ed). */
int rdma_rkeys(struct rdma_tp *rt, struct rdma_rkey **out, uint32_t *n);
int rdma_pool_open(struct rdma_tp *rt);
void rdma_pool_close(struct rdma_tp *rt);
/* The GID index of dev to speak from towards a peer whose handshake
 * connection has our end at local (RoCE). */
int rdma_pick_gid(struct rdma_tp *rt, int dev, const struct sockaddr_storage *local);
void rdma_dev_self(struct rdma_tp *rt, int dev, int gid_index, struct rdma_w_dev *w);
/* A queue pair on dev, in INIT. */
int rdma_qp_create(struct rdma_tp *rt, int dev, struct rdma_qp *q);
/* INIT -> RTR -> RTS towards the peer's qpn on its device rd. */
int rdma_qp_connect(struct rdma_tp *rt, struct rdma_qp *q, int gid_index,
                    const struct rdma_w_dev *rd, uint32_t qpn);
void rdma_qp_error(struct rdma_tp *rt, struct rdma_qp *q);
/* Watch c's handshake connection in the completion thread's epoll. */
void rdma_conn_watch(struct rdma_tp *rt, struct rdma_conn *c);
/* Mark c broken and move its queue pairs to the error state (rt->lk). */
void rdma_conn_break(struct rdma_tp *rt, struct rdma_conn *c, int err, const char *why);

/* eng_rdma_conn.c */
int rdma_seg_connect(struct rdma_tp *rt, struct eng_segment *seg, struct rdma_conn *c);
int rdma_hello(struct eng_transport *tp, int fd, const uint8_t *in, size_t in_len, uint8_t *out,
               size_t max, size_t *pos);
int rdma_parse_devs(const uint8_t *trailer, size_t len, struct rdma_conn *c, bool keys);
void rdma_conn_free(struct rdma_tp *rt, struct rdma_conn *c);
/* Fetch the peer's keys and regions again (a request missed them). */
int rdma_refresh(struct rdma_tp *rt, struct rdma_conn *c);

/* eng_rdma_io.c */
int rdma_thread_start(struct rdma_tp *rt);
void rdma_thread_stop(struct rdma_tp *rt);
void rdma_start(struct eng_transport *tp, struct eng_task *t);
/* Whether the peer of c announced a key for [addr, addr+len). */
bool rdma_remote_keyed(struct rdma_tp *rt, struct rdma_conn *c, uint64_t addr, uint64_t len);

#endif
