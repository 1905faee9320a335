/* Internal header of the emulated libibverbs (a test component: it is never
 * shipped inside libteshim.so). The library answers the public verbs ABI
 * of the installed rdma-core without a kernel: devices come from the
 * environment, memory registrations and queue pairs are published in a
 * registry shared between processes, and RC traffic between processes is
 * carried by a progress thread per process (see emu_qp.c). */
#ifndef TESHIM_EMU_H
#define TESHIM_EMU_H

#include <infiniband/verbs.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define EMU_MAX_DEVICES 8
#define EMU_MAX_SGE 16
#define EMU_MAX_INLINE 1024
#define EMU_MAX_QP_WR 16384
#define EMU_MAX_CQE 262144
#define EMU_MAX_RD_ATOM 16
#define EMU_ROCE_GIDS 4

enum emu_personality {
    EMU_PERS_IB,
    EMU_PERS_ROCE,
};

/* The emulated device. struct ibv_device comes first and the pointer after
 * it sits where rdma-core's struct verbs_device keeps its provider ops, so
 * a provider's "is this my device" test (ops == &my_ops) answers no. */
struct emu_device {
    struct ibv_device dev;
    const void *provider_ops;
    int index;
    enum emu_personality pers;
    uint64_t guid;
    uint16_t lid;
};

struct emu_context {
    struct verbs_context vctx;
    struct emu_device *edev;
    int async_wfd; /* write end of async_fd; nothing is ever written */
};

struct emu_pd {
    struct ibv_pd pd;
};

struct emu_mr {
    struct ibv_mr mr;
    unsigned int access;
};

struct emu_channel {
    struct ibv_comp_channel ch;
    int wfd;
};

struct emu_cq {
    struct ibv_cq cq;
    pthread_mutex_t lock;
    struct ibv_wc *ring;
    size_t cap;
    size_t head;
    size_t count;
    bool armed;
    bool solicited_only;
};

/* A send work request as the emulation keeps it: copied at post time, so
 * the caller's ibv_send_wr and sg_list may be reused at once (inline data
 * is copied too; other data is read when the request executes, like DMA). */
struct emu_swr {
    uint64_t wr_id;
    int opcode;
    unsigned int flags;
    uint32_t imm;
    uint32_t rkey;
    uint64_t raddr;
    int num_sge;
    struct ibv_sge sge[EMU_MAX_SGE];
    uint8_t *inl;
    size_t inl_len;
};

struct emu_rwr {
    uint64_t wr_id;
    int num_sge;
    struct ibv_sge sge[EMU_MAX_SGE];
};

struct emu_qp {
    struct ibv_qp_ex qpx;     /* first: struct ibv_qp is its first member */
    uint64_t verbs_comp_mask; /* where rdma-core's verbs_qp keeps it */
    bool is_ex;
    struct emu_context *ectx;
    pthread_mutex_t lock;
    struct ibv_qp_cap cap;
    int sq_sig_all;
    struct ibv_qp_attr attr;
    /* send queue: slots [sq_free, sq_post) are occupied; [sq_exec, sq_post)
     * still have to run. An unsignaled request keeps its slot until a later
     * signaled one completes, as on hardware. */
    struct emu_swr *sq;
    uint64_t sq_post, sq_exec, sq_free;
    struct emu_rwr *rq;
    uint64_t rq_post, rq_take;
    /* ibv_wr_* batch between wr_start and wr_complete */
    struct emu_swr *batch;
    unsigned int batch_len;
    int batch_err;
    pid_t remote_pid;      /* owner of dest_qp_num, resolved at RTR */
    uint64_t peer_gone_ms; /* when the responder first saw remote_pid gone */
    bool busy;
    struct emu_qp *next;
};

/* emu_device.c */
struct emu_device *emu_device_of(struct ibv_context *ctx);
struct emu_device *emu_device_by_index(int index);
int emu_port_attr(struct emu_device *edev, uint8_t port, struct ibv_port_attr *attr);
int emu_gid(struct emu_device *edev, int index, union ibv_gid *gid, int *type);
int emu_gid_count(struct emu_device *edev);

/* emu_record.c: control-path record (JSON lines, VERBS_EMU_RECORD) */
struct emu_rec {
    char buf[2048];
    size_t len;
};
void emu_rec_begin(struct emu_rec *r, const char *call);
void emu_rec_str(struct emu_rec *r, const char *key, const char *val);
void emu_rec_u64(struct emu_rec *r, const char *key, uint64_t val);
void emu_rec_i64(struct emu_rec *r, const char *key, int64_t val);
void emu_rec_hex(struct emu_rec *r, const char *key, const uint8_t *bytes, size_t n);
void emu_rec_end(struct emu_rec *r);
void emu_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* emu_sysfs.c: the devices' PCIe config space under $VERBS_EMU_SYSFS. */
void emu_sysfs_publish(int ndevices);
void emu_stub_called(const char *symbol);

/* emu_cq.c */
void emu_cq_push(struct emu_cq *cq, const struct ibv_wc *wc);
int emu_poll_cq(struct ibv_cq *cq, int n, struct ibv_wc *wc);
int emu_req_notify_cq(struct ibv_cq *cq, int solicited_only);

/* emu_qp.c */
int emu_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr, struct ibv_send_wr **bad);
int emu_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad);
struct ibv_qp *emu_create_qp_ex(struct ibv_context *ctx, struct ibv_qp_init_attr_ex *attr);

/* emu_wire.c: the per-process progress threads */
int emu_wire_start(void);
void emu_wire_kick(void);
void emu_wire_add_qp(struct emu_qp *qp);
void emu_wire_remove_qp(struct emu_qp *qp);
void emu_qp_flush_locked(struct emu_qp *qp);

#endif
