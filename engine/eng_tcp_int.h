/*
 * The tcp transport's private header: its objects and the functions its
 * files share. Files by role: eng_tcp_conn.c (a connection: locks, sending,
 * reset, connection setup), eng_tcp_init.c (initiator side), eng_tcp_target.c
 * (target side), eng_tcp_io.c (the I/O threads' loop), eng_tcp.c (the
 * transport face: its ops table). Included by those files only.
 *
 * TCP transport. N I/O threads ("workers"), each with its own epoll loop.
 * Incoming connections come from the engine's listener once their
 * handshake is answered (eng_listen.c) and are assigned to workers
 * round-robin (ops.adopt). Every remote segment ("peer") gets
 * engine.tcp.conns_per_peer connections assigned to workers round-robin;
 * a request is cut into slices of engine.tcp.slice_bytes spread over them.
 *
 * Data moves between sockets and registered memory with sendmsg/readv
 * straight from/into the user's buffers. The submitting thread writes a
 * slice itself when the socket has room (no hand-off); the rest goes out
 * from the worker on EPOLLOUT. To a same-host peer with
 * engine.tcp.same_host_send = io the worker sends all but a small request
 * alone on its connection (CMD_FLUSH; tcp_start). Answers come back in
 * order on each connection and are matched to the oldest outstanding
 * slice by id. Runs
 * of payload-less frames are read in one call: WRITE acknowledgements on
 * the initiator, READ requests on the target (eng_tcp_io.c).
 *
 * Requests for the target's device memory (cuda:N registrations) are
 * served through host staging buffers each connection keeps for reuse: a
 * READ's answer, or a WRITE's acknowledgement, is queued in order at once
 * but marked waiting, and is sent only when the asynchronous copy from or
 * to the device (eng_dev_copy, polled by the staging progress thread)
 * completed; the I/O thread never waits for the device, and answers on a
 * connection stay in request order.
 *
 * Latency path (engine.tcp.inline_bytes): a request up to that size goes
 * as one frame on the peer's least busy connection, sent by the
 * submitting thread (in io mode only when it is alone on it); a thread
 * that waits for it alone (teshim_batch_wait, ops.progress) reads the
 * connection itself and completes it, instead of sleeping until the
 * worker read the answer and woke it: one wake-up per
 * round trip fewer. Meanwhile the worker's epoll does not watch the
 * socket for input (c->rx_waiter), so it is not woken for nothing; the
 * waiter watches again when it leaves, so what arrives after it left is
 * the worker's as before: no progress depends on a waiter.
 *
 * Locking: a connection's send side (queues, fd, state) is under c->lock;
 * its receive side is under c->rx_lock, held by the worker while it reads
 * and by a waiter that reads (tcp_progress); its life cycle belongs to its
 * worker (tcp_conn_reset shuts the socket down to send a waiter away before
 * it takes rx_lock). rx_lock comes before send_lock and c->lock. Task
 * callbacks are never made with c->lock or send_lock held. c->lock is only held for
 * queue updates, never across sendmsg: one thread at a time sends, the
 * owner of c->sending, which holds c->send_lock for as long (see
 * tcp_conn_flush). c->iq is under c->lock: the sender moves what a sendmsg
 * took there after the call, and a reader whose answer came first (its
 * slice not on iq yet) waits on c->acct for that, never for a whole flush
 * (it used to take send_lock, held while MiBs were copied). An
 * accepted connection with device copies in flight (c->refs) is freed
 * only after they finished.
 */
#ifndef TESHIM_ENG_TCP_INT_H
#define TESHIM_ENG_TCP_INT_H

#include "eng_tp.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#define TICK_NS (20 * 1000000ull)
#define SCRATCH_BYTES (64 * 1024)
#define DEFER_BYTES (256 * 1024)
#ifndef FLUSH_BYTES
#define FLUSH_BYTES (1024 * 1024)
#endif
#define CONN_STAGES 2 /* staging buffers a connection keeps between requests */

struct tcp_block;

/* One frame to send: a request slice (initiator) or an answer (target). */
struct tcp_slice {
    struct tcp_slice *next;
    struct eng_task *task;   /* initiator: the request it belongs to */
    struct tcp_block *block; /* initiator: allocation shared with its siblings */
    struct eng_region *reg;  /* target: region an answer reads from */
    struct tcp_conn *conn;   /* target, device memory: the connection ... */
    void *stage;             /* ... whose staging buffer the copy uses */
    atomic_int refs;         /* target, device memory: send queue + copy */
    bool wait;               /* not to be sent yet: the copy runs (c->lock) */
    char *data;              /* payload to send, or destination of READ_RESP */
    void *owned;             /* freed when sent */
    uint32_t len;            /* payload bytes to send */
    uint32_t xfer;           /* bytes the slice moves */
    uint32_t qlen;           /* target: payload bytes counted in c->q_bytes */
    size_t sent;             /* of header + payload */
    uint64_t seq, raddr, t_start;
    uint8_t op;
    uint8_t hdr[ENG_FRAME_BYTES];
    uint8_t lreq[ENG_LOCAL_BYTES]; /* payload of a LOCAL_READ/LOCAL_WRITE (initiator) */
};

struct tcp_block {
    atomic_uint left;
    struct tcp_slice s[];
};

enum { C_IDLE, C_CONNECTING, C_HANDSHAKE, C_READY };
enum { R_HDR, R_PAYLOAD, R_DISCARD, R_CTRL };
enum { CMD_ADD = 1, CMD_KICK = 2, CMD_CLOSE = 4, CMD_ADOPT = 8, CMD_FLUSH = 16 };

struct tcp_worker;
struct tcp_peer;

struct tcp_conn {
    struct tcp_conn *wnext, *wprev; /* worker's list, worker only */
    struct tcp_conn *cnext;         /* worker's command list, under cmd_lock */
    int cmds;                       /* pending CMD_*, under cmd_lock */
    bool queued;
    struct tcp_worker *w;
    struct tcp_peer *peer; /* NULL: accepted */
    int fd;
    atomic_int state;
    bool want_out, dead;
    bool rx_waiter;       /* a waiter reads (tcp_progress): no EPOLLIN, under lock */
    atomic_int rx_err;    /* what a waiter's read failed with, for the worker's reset */
    atomic_uint inflight; /* initiator: slices queued or unanswered */
    bool in_read;         /* answers queued while reading go out together ... */
    uint64_t deferred;    /* ... unless this many payload bytes wait for them */
    pthread_mutex_t lock;
    pthread_mutex_t send_lock;      /* held by the sending thread */
    pthread_cond_t acct;            /* a sendmsg's slices are on iq now, under lock */
    int acct_waiters;               /* readers waiting for that, under lock */
    bool sending;                   /* a thread owns the send side, under lock */
    bool resetting;                 /* conn_reset waits for the sender, under lock */
    struct tcp_slice *sq, *sq_tail; /* to send; head may be partly sent */
    struct tcp_slice *iq, *iq_tail; /* sent, answer awaited (initiator), under lock */
    uint64_t seq;
    /* receive side, under rx_lock */
    pthread_mutex_t rx_lock;
    int rstage;
    uint8_t rhdr[ENG_FRAME_BYTES];
    size_t rgot;
    struct eng_frame rf;
    char *rdst;
    uint64_t rleft;
    int rstatus;
    struct tcp_slice *rslice;
    struct eng_region *rreg;
    /* the request last rejected with a message: its other slices only count */
    uint64_t rej_addr, rej_len, rej_at;
    uint8_t rej_type;
    uint8_t *ctrl; /* HELLO_ACK or AUTH being read (initiator) */
    size_t ctrl_got;
    uint8_t nonce[ENG_NONCE_BYTES]; /* of our HELLO (initiator) */
    bool authed;                    /* the target proved the key (initiator) */
    /* accepted connections: answers queued unsent and their payload bytes;
     * over engine.serve.max_queued(_bytes) the worker stops reading the
     * peer's requests (rpaused) until it has read half of them. t_tx: when
     * the send side last moved (or had nothing to send); all under lock */
    int q_n;
    uint64_t q_bytes;
    bool rpaused;
    uint64_t t_tx;
    uint64_t t_rx; /* last bytes received, worker only */
    /* connection establishment, outgoing only */
    int attempts;
    uint64_t t_first, t_next;
    _Atomic uint64_t t_used;
    char pname[64];
    /* device memory served (accepted connections) */
    atomic_int refs; /* device copies in flight: the worker frees c after */
    pthread_mutex_t stage_lock;
    void *stages[CONN_STAGES]; /* kept for the next request */
    int nstages;
    void *rstaging; /* a WRITE for device memory is received here */
    /* LOCAL_* requests (accepted connections, eng_tcp_local.c): the
     * payload being read, and the initiator's pid once checked to own the
     * connection's other end (0: not yet; -1: refused) */
    uint8_t lreq[ENG_LOCAL_BYTES];
    int64_t lpid;
};

struct tcp_peer {
    struct tcp_peer *next;
    /* copied from the segment, which may go before the worker's last look */
    struct sockaddr_storage sa;
    socklen_t salen;
    uint32_t pid;
    uint8_t instance_id[16]; /* the peer's at the segment's open */
    atomic_bool stale;       /* another instance answers there now: -ESTALE */
    atomic_uint rr;
    atomic_int refs;
    bool serial;               /* one sending thread at a time: peer_send */
    bool handoff;              /* bulk is sent by each connection's I/O thread */
    bool local;                /* same host, target-checked: LOCAL_* frames */
    uint32_t self;             /* our pid, in LOCAL_* frames */
    atomic_int sending, again; /* peer_send's owner flag and its doorbell */
    int n;
    struct tcp_conn conns[];
};

struct tcp_tp;

struct tcp_worker {
    struct tcp_tp *tp;
    pthread_t th;
    int epfd, evfd;
    uint64_t next_tick;
    pthread_mutex_t cmd_lock;
    struct tcp_conn *cmds;
    struct tcp_conn *conns;     /* every connection of this worker */
    struct tcp_conn *graveyard; /* freed after the current epoll batch */
    uint8_t *scratch;
};

struct tcp_tp {
    struct eng_transport base;
    int nworkers;
    struct tcp_worker *w;
    atomic_bool stop;
    atomic_uint rr;
    atomic_int nout; /* outgoing sockets open */
    pthread_mutex_t peers_lock;
    struct tcp_peer *peers;
};

static inline struct eng_ctx *tcp_conn_eng(struct tcp_conn *c)
{
    return c->w->tp->base.eng;
}

/* ---- connections (eng_tcp_conn.c): locks, staging buffers, sending, reset, setup  */

void tcp_conn_locks_init(struct tcp_conn *c);
void tcp_conn_locks_destroy(struct tcp_conn *c);
void tcp_worker_wake(struct tcp_worker *w);
void tcp_post_cmd(struct tcp_conn *c, int cmd);
void tcp_sock_opts(struct eng_ctx *eng, int fd);
void *tcp_conn_stage_take(struct tcp_conn *c, uint64_t len);
void tcp_conn_stage_give(struct tcp_conn *c, void *p);
void tcp_conn_free(struct tcp_conn *c);
void tcp_slice_free(struct tcp_slice *s);
void tcp_slice_finish(struct tcp_slice *s, int err);
void tcp_conn_reset(struct tcp_conn *c, int err);
int tcp_conn_flush_upto(struct tcp_conn *c, const struct tcp_slice *last);
static inline int tcp_conn_flush(struct tcp_conn *c)
{
    return tcp_conn_flush_upto(c, NULL);
}
void tcp_conn_push(struct tcp_conn *c);
void tcp_conn_watch(struct tcp_conn *c);
struct tcp_slice *tcp_conn_pop_answered(struct tcp_conn *c, uint8_t answer, uint64_t id,
                                        uint64_t addr, uint64_t len);
void tcp_conn_enqueue_locked(struct tcp_conn *c, struct tcp_slice *s);
size_t tcp_conn_room(struct tcp_conn *c, uint64_t *bytes);
bool tcp_conn_backlogged(struct tcp_conn *c);
void tcp_peer_send(struct tcp_peer *p, struct tcp_conn *out);
int tcp_start_ctrl(struct tcp_conn *c, uint32_t len);
void tcp_connect_failed(struct tcp_conn *c, int err);
void tcp_conn_connect(struct tcp_conn *c);
void tcp_conn_connected(struct tcp_conn *c);
void tcp_peer_unref(struct tcp_peer *p);

/* ---- target side (eng_tcp_target.c): serving peers' requests --------------- */

int tcp_send_answer(struct tcp_conn *c, uint8_t type, const struct eng_frame *req, int status,
                    struct eng_region *reg, void *owned, uint32_t owned_len);
int tcp_serve_device(struct tcp_conn *c, uint8_t type, const struct eng_frame *req,
                     struct eng_region *reg, void *stage);
int tcp_target_header(struct tcp_conn *c);
void tcp_target_reject(struct tcp_conn *c, const char *what);
void tcp_target_tick(struct tcp_conn *c, uint64_t now);

/* ---- same host, target-checked (eng_tcp_local.c) ------------------------- */

bool tcp_local_usable(struct eng_ctx *eng, struct eng_segment *seg);
int tcp_local_header(struct tcp_conn *c);
int tcp_local_serve(struct tcp_conn *c);

/* ---- initiator side (eng_tcp_init.c): requests out, answers in ------------- */

int tcp_initiator_header(struct tcp_conn *c);
int tcp_initiator_ctrl(struct tcp_conn *c);
void tcp_submit_begin(struct eng_transport *base);
void tcp_submit_end(struct eng_transport *base);
void tcp_start(struct eng_transport *base, struct eng_task *t);

/* ---- I/O loop (eng_tcp_io.c): the workers ---------------------------------- */

void tcp_run_cmds(struct tcp_worker *w);
void tcp_graveyard_sweep(struct tcp_worker *w);
void *tcp_worker_main(void *arg);
int tcp_progress(struct eng_transport *base, struct eng_task *t, uint64_t deadline_ns);

#endif
