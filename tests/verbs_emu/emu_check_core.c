/* The emulation's own behaviour: devices, the export table, the QP state
 * machine, RDMA between two processes (a forked target), remote access
 * errors, RNR retry, queue depths, unsignaled completions, completion
 * channels, peer death, registry reaping, typed stubs and the record.
 * The suite runs with two devices: emu0 (InfiniBand) and emu1 (RoCE). */
#include "emu_registry.h"
#include "emu_testlib.h"

#include <arpa/inet.h>
#include <check.h>
#include <dlfcn.h>
#include <errno.h>
#include <infiniband/verbs.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BUF_LEN 4096
#define WC_TIMEOUT_MS 5000

struct ep_opts {
    int dev;
    unsigned int mr_access;
    unsigned int qp_access;
    uint32_t max_send_wr, max_recv_wr;
    uint8_t rnr_retry, min_rnr_timer, retry_cnt;
    bool ex, channel;
    int sq_sig_all;
};

struct ep {
    struct ibv_context *ctx;
    struct ibv_pd *pd;
    struct ibv_comp_channel *ch;
    struct ibv_cq *cq;
    struct ibv_qp *qp;
    struct ibv_mr *mr;
    char *buf;
};

struct ep_info {
    uint32_t qpn, rkey;
    uint64_t addr;
    uint16_t lid;
    union ibv_gid gid;
};

static struct ep_opts ep_defaults(void)
{
    struct ep_opts o = {
        .dev = 0,
        .mr_access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ,
        .qp_access = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ,
        .max_send_wr = 16,
        .max_recv_wr = 16,
        .rnr_retry = 7,
        .min_rnr_timer = 1,
        .retry_cnt = 7,
    };
    return o;
}

static struct ibv_context *open_dev(int idx)
{
    int n = 0;
    struct ibv_device **list = ibv_get_device_list(&n);
    struct ibv_context *ctx;

    ck_assert_ptr_nonnull(list);
    ck_assert_int_gt(n, idx);
    ctx = ibv_open_device(list[idx]);
    ibv_free_device_list(list);
    ck_assert_ptr_nonnull(ctx);
    return ctx;
}

static void ep_create(struct ep *e, const struct ep_opts *o)
{
    memset(e, 0, sizeof(*e));
    e->ctx = open_dev(o->dev);
    e->pd = ibv_alloc_pd(e->ctx);
    ck_assert_ptr_nonnull(e->pd);
    if (o->channel) {
        e->ch = ibv_create_comp_channel(e->ctx);
        ck_assert_ptr_nonnull(e->ch);
    }
    e->cq = ibv_create_cq(e->ctx, 64, NULL, e->ch, 0);
    ck_assert_ptr_nonnull(e->cq);
    e->buf = aligned_alloc(4096, BUF_LEN);
    ck_assert_ptr_nonnull(e->buf);
    memset(e->buf, 0, BUF_LEN);
    e->mr = ibv_reg_mr_iova2(e->pd, e->buf, BUF_LEN, (uintptr_t)e->buf, o->mr_access);
    ck_assert_ptr_nonnull(e->mr);
    if (o->ex) {
        struct ibv_qp_init_attr_ex ia = {
            .send_cq = e->cq,
            .recv_cq = e->cq,
            .cap = {o->max_send_wr, o->max_recv_wr, 1, 1, 64},
            .qp_type = IBV_QPT_RC,
            .sq_sig_all = o->sq_sig_all,
            .comp_mask = IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_SEND_OPS_FLAGS,
            .pd = e->pd,
            .send_ops_flags = IBV_QP_EX_WITH_RDMA_WRITE | IBV_QP_EX_WITH_SEND,
        };
        e->qp = ibv_create_qp_ex(e->ctx, &ia);
    } else {
        struct ibv_qp_init_attr ia = {
            .send_cq = e->cq,
            .recv_cq = e->cq,
            .cap = {o->max_send_wr, o->max_recv_wr, 1, 1, 64},
            .qp_type = IBV_QPT_RC,
            .sq_sig_all = o->sq_sig_all,
        };
        e->qp = ibv_create_qp(e->pd, &ia);
    }
    ck_assert_ptr_nonnull(e->qp);
}

static void ep_destroy(struct ep *e)
{
    ck_assert_int_eq(ibv_destroy_qp(e->qp), 0);
    ck_assert_int_eq(ibv_dereg_mr(e->mr), 0);
    ck_assert_int_eq(ibv_destroy_cq(e->cq), 0);
    if (e->ch != NULL)
        ck_assert_int_eq(ibv_destroy_comp_channel(e->ch), 0);
    ck_assert_int_eq(ibv_dealloc_pd(e->pd), 0);
    ck_assert_int_eq(ibv_close_device(e->ctx), 0);
    free(e->buf);
}

static void ep_info(struct ep *e, const struct ep_opts *o, struct ep_info *i)
{
    struct ibv_port_attr pa;

    memset(i, 0, sizeof(*i));
    ck_assert_int_eq(ibv_query_port(e->ctx, 1, &pa), 0);
    i->qpn = e->qp->qp_num;
    i->rkey = e->mr->rkey;
    i->addr = (uintptr_t)e->buf;
    i->lid = pa.lid;
    ck_assert_int_eq(ibv_query_gid(e->ctx, 1, o->dev == 1 ? 3 : 0, &i->gid), 0);
}

static int ep_to_rts(struct ep *e, const struct ep_opts *o, const struct ep_info *peer)
{
    struct ibv_qp_attr a;
    int rc;

    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_INIT;
    a.port_num = 1;
    a.qp_access_flags = o->qp_access;
    rc = ibv_modify_qp(e->qp, &a,
                       IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
    if (rc != 0)
        return rc;
    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_RTR;
    a.path_mtu = IBV_MTU_1024;
    a.dest_qp_num = peer->qpn;
    a.max_dest_rd_atomic = 1;
    a.min_rnr_timer = o->min_rnr_timer;
    a.ah_attr.port_num = 1;
    a.ah_attr.dlid = peer->lid;
    if (o->dev == 1) {
        a.ah_attr.is_global = 1;
        a.ah_attr.grh.dgid = peer->gid;
        a.ah_attr.grh.sgid_index = 3;
        a.ah_attr.grh.hop_limit = 1;
    }
    rc = ibv_modify_qp(e->qp, &a,
                       IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                           IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
    if (rc != 0)
        return rc;
    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_RTS;
    a.timeout = 10;
    a.retry_cnt = o->retry_cnt;
    a.rnr_retry = o->rnr_retry;
    a.max_rd_atomic = 1;
    return ibv_modify_qp(e->qp, &a,
                         IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                             IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
}

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* 0 and *wc on a completion, -1 after timeout_ms without one */
static int ep_wait_wc(struct ep *e, struct ibv_wc *wc, int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;

    while (now_ms() < end) {
        int n = ibv_poll_cq(e->cq, 1, wc);

        ck_assert_int_ge(n, 0);
        if (n == 1)
            return 0;
        usleep(1000);
    }
    return -1;
}

static int post_rdma(struct ep *e, enum ibv_wr_opcode op, uint64_t wr_id, uint64_t local_off,
                     uint32_t len, uint32_t rkey, uint64_t raddr, unsigned int flags, uint32_t imm)
{
    struct ibv_sge sge = {(uintptr_t)e->buf + local_off, len, e->mr->lkey};
    struct ibv_send_wr wr, *bad = NULL;

    memset(&wr, 0, sizeof(wr));
    wr.wr_id = wr_id;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    wr.opcode = op;
    wr.send_flags = flags;
    wr.imm_data = imm;
    wr.wr.rdma.rkey = rkey;
    wr.wr.rdma.remote_addr = raddr;
    return ibv_post_send(e->qp, &wr, &bad);
}

static int post_recv(struct ep *e, uint64_t wr_id)
{
    struct ibv_sge sge = {(uintptr_t)e->buf, BUF_LEN, e->mr->lkey};
    struct ibv_recv_wr wr = {.wr_id = wr_id, .sg_list = &sge, .num_sge = 1};
    struct ibv_recv_wr *bad = NULL;

    return ibv_post_recv(e->qp, &wr, &bad);
}

/* --- a target process ------------------------------------------------ */

enum {
    CMD_QUIT = 'q',
    CMD_DUMP = 'd', /* -> 64 bytes of the buffer from offset 100 */
    CMD_RECV = 'r', /* post one receive of the whole buffer */
    CMD_WC = 'w',   /* -> the next completion (struct ibv_wc), 5 s bound */
    CMD_LATE = 's', /* sleep 300 ms, then post a receive */
};

struct pair {
    pid_t child;
    int to_child, from_child;
    struct ep e;
    struct ep_info peer;
};

static void xwrite(int fd, const void *p, size_t n)
{
    ck_assert_int_eq(write(fd, p, n), (ssize_t)n);
}

static void xread(int fd, void *p, size_t n)
{
    size_t got = 0;

    while (got < n) {
        ssize_t r = read(fd, (char *)p + got, n - got);

        ck_assert_int_gt(r, 0);
        got += (size_t)r;
    }
}

static void target_main(int in, int out, const struct ep_opts *o)
{
    struct ep e;
    struct ep_info mine, peer;
    struct ibv_wc wc;
    char cmd;

    ep_create(&e, o);
    ep_info(&e, o, &mine);
    xwrite(out, &mine, sizeof(mine));
    xread(in, &peer, sizeof(peer));
    if (ep_to_rts(&e, o, &peer) != 0)
        _exit(3);
    xwrite(out, "k", 1);
    while (read(in, &cmd, 1) == 1) {
        switch (cmd) {
        case CMD_DUMP:
            xwrite(out, e.buf + 100, 64);
            break;
        case CMD_RECV:
            post_recv(&e, 77);
            break;
        case CMD_LATE:
            usleep(300000);
            post_recv(&e, 78);
            break;
        case CMD_WC:
            memset(&wc, 0, sizeof(wc));
            if (ep_wait_wc(&e, &wc, WC_TIMEOUT_MS) != 0)
                wc.status = IBV_WC_GENERAL_ERR;
            xwrite(out, &wc, sizeof(wc));
            break;
        default:
            _exit(0);
        }
    }
    _exit(0);
}

static void pair_start(struct pair *p, const struct ep_opts *mine, const struct ep_opts *theirs)
{
    int a[2], b[2];
    struct ep_info me;
    char ok;

    ck_assert_int_eq(pipe(a), 0);
    ck_assert_int_eq(pipe(b), 0);
    p->child = fork();
    ck_assert_int_ge(p->child, 0);
    if (p->child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(a[1]);
        close(b[0]);
        target_main(a[0], b[1], theirs);
    }
    close(a[0]);
    close(b[1]);
    p->to_child = a[1];
    p->from_child = b[0];
    ep_create(&p->e, mine);
    ep_info(&p->e, mine, &me);
    xread(p->from_child, &p->peer, sizeof(p->peer));
    xwrite(p->to_child, &me, sizeof(me));
    ck_assert_int_eq(ep_to_rts(&p->e, mine, &p->peer), 0);
    xread(p->from_child, &ok, 1);
}

static void pair_cmd(struct pair *p, char cmd)
{
    xwrite(p->to_child, &cmd, 1);
}

static void pair_stop(struct pair *p)
{
    pair_cmd(p, CMD_QUIT);
    ck_assert_int_eq(et_wait(p->child, 10), 0);
    ep_destroy(&p->e);
    close(p->to_child);
    close(p->from_child);
}

static enum ibv_qp_state qp_state(struct ibv_qp *qp)
{
    struct ibv_qp_attr a;
    struct ibv_qp_init_attr ia;

    ck_assert_int_eq(ibv_query_qp(qp, &a, IBV_QP_STATE, &ia), 0);
    return a.qp_state;
}

/* --- devices and exports -------------------------------------------- */

START_TEST(test_devices)
{
    struct ibv_context *ib = open_dev(0), *roce = open_dev(1);
    struct ibv_port_attr pa;
    struct ibv_gid_entry ge;
    union ibv_gid gid;
    __be16 pkey;

    ck_assert_int_eq(ibv_query_port(ib, 1, &pa), 0);
    ck_assert_int_eq(pa.link_layer, IBV_LINK_LAYER_INFINIBAND);
    ck_assert_int_eq(pa.lid, 1);
    ck_assert_int_eq(pa.state, IBV_PORT_ACTIVE);
    ck_assert_int_eq(ibv_query_port(roce, 1, &pa), 0);
    ck_assert_int_eq(pa.link_layer, IBV_LINK_LAYER_ETHERNET);
    ck_assert_int_eq(pa.lid, 0);
    ck_assert_int_eq(pa.gid_tbl_len, 4);
    ck_assert_int_eq(ibv_query_gid(roce, 1, 3, &gid), 0);
    ck_assert_int_eq(gid.raw[10], 0xff);
    ck_assert_int_eq(gid.raw[12], 127);
    ck_assert_int_eq(gid.raw[15], 2);
    ck_assert_int_eq(ibv_query_gid_ex(roce, 1, 3, &ge, 0), 0);
    ck_assert_int_eq(ge.gid_type, IBV_GID_TYPE_ROCE_V2);
    ck_assert_int_eq(ibv_query_gid_ex(roce, 1, 4, &ge, 0), ENODATA);
    ck_assert_int_eq(ibv_query_gid(ib, 1, 1, &gid), -1);
    ck_assert_int_eq(ibv_query_pkey(ib, 1, 0, &pkey), 0);
    ck_assert_int_eq(ntohs(pkey), 0xffff);
    ck_assert_int_eq(ibv_query_port(ib, 2, &pa), EINVAL);
    ibv_close_device(ib);
    ibv_close_device(roce);
}
END_TEST

static void read_exports(const char *lib, char **out, size_t *len)
{
    char cmd[600];
    FILE *f, *m = open_memstream(out, len);

    snprintf(cmd, sizeof(cmd),
             "readelf --dyn-syms -W '%s' | awk '$7!=\"UND\" && $7!=\"ABS\" && NR>3 "
             "&& ($4==\"FUNC\"||$4==\"OBJECT\") {print $4, $8}' | sort",
             lib);
    f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    for (int c; (c = fgetc(f)) != EOF;)
        fputc(c, m);
    ck_assert_int_eq(pclose(f), 0);
    fclose(m);
}

START_TEST(test_export_table)
{
    const char *b = getenv("TESHIM_BUILD_DIR");
    char ours[512];
    char *real = NULL, *emu = NULL;
    size_t rl = 0, el = 0;

    snprintf(ours, sizeof(ours), "%s/lib/verbs-emu/libibverbs.so.1", b != NULL ? b : "build");
    read_exports("/usr/lib/x86_64-linux-gnu/libibverbs.so.1", &real, &rl);
    read_exports(ours, &emu, &el);
    ck_assert_int_gt(rl, 1000);
    ck_assert_msg(strstr(real, "@@IBVERBS_PRIVATE_") != NULL, "no private version read");
    ck_assert_str_eq(real, emu);
    free(real);
    free(emu);
}
END_TEST

START_TEST(test_typed_stubs)
{
    struct ibv_context *ctx = open_dev(0);
    struct ibv_pd *pd = ibv_alloc_pd(ctx);
    struct ibv_cq *cq = ibv_create_cq(ctx, 4, NULL, NULL, 0);
    struct ibv_srq_init_attr sa = {.attr = {.max_wr = 4, .max_sge = 1}};
    struct ibv_ah_attr ah = {.dlid = 1, .port_num = 1};
    struct ibv_qp_init_attr ud = {
        .send_cq = cq, .recv_cq = cq, .cap = {4, 4, 1, 1, 0}, .qp_type = IBV_QPT_UD};
    union ibv_gid gid = {{0}};

    errno = 0;
    ck_assert_ptr_null(ibv_create_srq(pd, &sa));
    ck_assert_int_eq(errno, EOPNOTSUPP);
    errno = 0;
    ck_assert_ptr_null(ibv_create_ah(pd, &ah));
    ck_assert_int_eq(errno, EOPNOTSUPP);
    ck_assert_int_eq(ibv_attach_mcast(NULL, &gid, 0), EOPNOTSUPP);
    errno = 0;
    ck_assert_ptr_null(ibv_create_qp(pd, &ud));
    ck_assert_int_eq(errno, EOPNOTSUPP);
    ibv_destroy_cq(cq);
    ibv_dealloc_pd(pd);
    ibv_close_device(ctx);
}
END_TEST

/* Pages without access (where CUDA device pointers live) cannot be pinned:
 * EFAULT, as on a system without peer memory; the switch alone does not
 * help where no emulated driver claims them. */
START_TEST(test_reg_no_access)
{
    struct ibv_context *ctx = open_dev(0);
    struct ibv_pd *pd = ibv_alloc_pd(ctx);
    size_t n = 1 << 16;
    char *p = mmap(NULL, n, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct ibv_mr *mr;

    ck_assert_ptr_ne(p, MAP_FAILED);
    for (int pm = 0; pm < 2; pm++) {
        if (pm)
            setenv("VERBS_EMU_PEER_MEMORY", "1", 1);
        errno = 0;
        ck_assert_ptr_null(ibv_reg_mr(pd, p + 4096, 8192, IBV_ACCESS_LOCAL_WRITE));
        ck_assert_int_eq(errno, EFAULT);
    }
    unsetenv("VERBS_EMU_PEER_MEMORY");
    ck_assert_int_eq(mprotect(p, n, PROT_READ | PROT_WRITE), 0);
    mr = ibv_reg_mr(pd, p + 4096, 8192, IBV_ACCESS_LOCAL_WRITE);
    ck_assert_ptr_nonnull(mr);
    ck_assert_int_eq(ibv_dereg_mr(mr), 0);
    munmap(p, n);
    ibv_dealloc_pd(pd);
    ibv_close_device(ctx);
}
END_TEST

/* --- state machine --------------------------------------------------- */

START_TEST(test_state_machine)
{
    struct ep_opts o = ep_defaults();
    struct ep e;
    struct ibv_qp_attr a;
    struct ibv_send_wr wr = {.opcode = IBV_WR_SEND}, *bad = NULL;
    int init = IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS;
    int rtr = IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
              IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER;

    o.dev = 1; /* RoCE: the address must be global */
    ep_create(&e, &o);
    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_RTR;
    ck_assert_int_eq(ibv_modify_qp(e.qp, &a, rtr), EINVAL); /* RESET -> RTR */
    a.qp_state = IBV_QPS_INIT;
    a.port_num = 1;
    ck_assert_int_eq(ibv_modify_qp(e.qp, &a, init & ~IBV_QP_ACCESS_FLAGS), EINVAL);
    ck_assert_int_eq(ibv_modify_qp(e.qp, &a, init | IBV_QP_SQ_PSN), EINVAL);
    ck_assert_int_eq(ibv_modify_qp(e.qp, &a, init), 0);
    ck_assert_int_eq(qp_state(e.qp), IBV_QPS_INIT);
    ck_assert_int_eq(ibv_post_send(e.qp, &wr, &bad), EINVAL);
    ck_assert_ptr_eq(bad, &wr);
    ck_assert_int_eq(post_recv(&e, 1), 0); /* receives may be posted in INIT */
    a.qp_state = IBV_QPS_RTS;
    ck_assert_int_eq(ibv_modify_qp(e.qp, &a, IBV_QP_STATE), EINVAL); /* INIT -> RTS */
    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_RTR;
    a.path_mtu = IBV_MTU_1024;
    a.dest_qp_num = 0x123;
    a.ah_attr.port_num = 1;
    ck_assert_int_eq(ibv_modify_qp(e.qp, &a, rtr & ~IBV_QP_MIN_RNR_TIMER), EINVAL);
    ck_assert_int_eq(ibv_modify_qp(e.qp, &a, rtr), EINVAL); /* RoCE without GRH */
    a.ah_attr.is_global = 1;
    a.ah_attr.grh.sgid_index = 9;
    ck_assert_int_eq(ibv_modify_qp(e.qp, &a, rtr), EINVAL); /* no such GID */
    a.ah_attr.grh.sgid_index = 3;
    ck_assert_int_eq(ibv_modify_qp(e.qp, &a, rtr), 0);
    ck_assert_int_eq(qp_state(e.qp), IBV_QPS_RTR);
    a.qp_state = IBV_QPS_ERR;
    ck_assert_int_eq(ibv_modify_qp(e.qp, &a, IBV_QP_STATE), 0);
    {
        struct ibv_wc wc;

        /* the receive posted in INIT is flushed */
        ck_assert_int_eq(ep_wait_wc(&e, &wc, 1000), 0);
        ck_assert_int_eq(wc.status, IBV_WC_WR_FLUSH_ERR);
        ck_assert_int_eq(wc.wr_id, 1);
    }
    a.qp_state = IBV_QPS_RESET;
    ck_assert_int_eq(ibv_modify_qp(e.qp, &a, IBV_QP_STATE), 0);
    ck_assert_int_eq(qp_state(e.qp), IBV_QPS_RESET);
    ep_destroy(&e);
}
END_TEST

/* --- RDMA between processes ------------------------------------------ */

START_TEST(test_write_read)
{
    struct ep_opts o = ep_defaults();
    struct pair p;
    struct ibv_wc wc;
    char got[64];

    o.dev = _i; /* both personalities */
    pair_start(&p, &o, &o);
    strcpy(p.e.buf, "hello from the initiator");
    ck_assert_int_eq(post_rdma(&p.e, IBV_WR_RDMA_WRITE, 1, 0, 32, p.peer.rkey, p.peer.addr + 100,
                               IBV_SEND_SIGNALED, 0),
                     0);
    ck_assert_int_eq(ep_wait_wc(&p.e, &wc, WC_TIMEOUT_MS), 0);
    ck_assert_int_eq(wc.status, IBV_WC_SUCCESS);
    ck_assert_int_eq(wc.opcode, IBV_WC_RDMA_WRITE);
    pair_cmd(&p, CMD_DUMP);
    xread(p.from_child, got, 64);
    ck_assert_str_eq(got, "hello from the initiator");
    ck_assert_int_eq(post_rdma(&p.e, IBV_WR_RDMA_READ, 2, 1000, 32, p.peer.rkey, p.peer.addr + 100,
                               IBV_SEND_SIGNALED, 0),
                     0);
    ck_assert_int_eq(ep_wait_wc(&p.e, &wc, WC_TIMEOUT_MS), 0);
    ck_assert_int_eq(wc.status, IBV_WC_SUCCESS);
    ck_assert_int_eq(wc.opcode, IBV_WC_RDMA_READ);
    ck_assert_int_eq(wc.byte_len, 32);
    ck_assert_str_eq(p.e.buf + 1000, "hello from the initiator");
    pair_stop(&p);
}
END_TEST

static void expect_remote_access_error(struct pair *p, enum ibv_wr_opcode op, uint32_t rkey,
                                       uint64_t raddr, uint32_t len)
{
    struct ibv_wc wc;

    ck_assert_int_eq(post_rdma(&p->e, op, 1, 0, len, rkey, raddr, IBV_SEND_SIGNALED, 0), 0);
    ck_assert_int_eq(post_rdma(&p->e, op, 2, 0, len, p->peer.rkey, p->peer.addr, 0, 0), 0);
    ck_assert_int_eq(ep_wait_wc(&p->e, &wc, WC_TIMEOUT_MS), 0);
    ck_assert_int_eq(wc.status, IBV_WC_REM_ACCESS_ERR);
    ck_assert_int_eq(wc.wr_id, 1);
    /* the QP is in the error state: what followed is flushed */
    ck_assert_int_eq(ep_wait_wc(&p->e, &wc, WC_TIMEOUT_MS), 0);
    ck_assert_int_eq(wc.status, IBV_WC_WR_FLUSH_ERR);
    ck_assert_int_eq(wc.wr_id, 2);
    ck_assert_int_eq(qp_state(p->e.qp), IBV_QPS_ERR);
}

START_TEST(test_write_out_of_bounds)
{
    struct ep_opts o = ep_defaults();
    struct pair p;

    pair_start(&p, &o, &o);
    expect_remote_access_error(&p, IBV_WR_RDMA_WRITE, p.peer.rkey, p.peer.addr + BUF_LEN - 8, 16);
    pair_stop(&p);
}
END_TEST

START_TEST(test_read_before_region)
{
    struct ep_opts o = ep_defaults();
    struct pair p;

    pair_start(&p, &o, &o);
    expect_remote_access_error(&p, IBV_WR_RDMA_READ, p.peer.rkey, p.peer.addr - 16, 16);
    pair_stop(&p);
}
END_TEST

START_TEST(test_wrong_rkey)
{
    struct ep_opts o = ep_defaults();
    struct pair p;

    pair_start(&p, &o, &o);
    /* our own rkey names a region of this process, not of the peer */
    expect_remote_access_error(&p, IBV_WR_RDMA_WRITE, p.e.mr->rkey, p.peer.addr, 16);
    pair_stop(&p);
}
END_TEST

START_TEST(test_mr_access_flags)
{
    struct ep_opts o = ep_defaults(), t = ep_defaults();
    struct pair p;

    t.mr_access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE; /* no remote read */
    pair_start(&p, &o, &t);
    expect_remote_access_error(&p, IBV_WR_RDMA_READ, p.peer.rkey, p.peer.addr, 16);
    pair_stop(&p);
}
END_TEST

START_TEST(test_qp_access_flags)
{
    struct ep_opts o = ep_defaults(), t = ep_defaults();
    struct pair p;

    t.qp_access = IBV_ACCESS_REMOTE_READ; /* the MR allows writes, the QP does not */
    pair_start(&p, &o, &t);
    expect_remote_access_error(&p, IBV_WR_RDMA_WRITE, p.peer.rkey, p.peer.addr, 16);
    pair_stop(&p);
}
END_TEST

START_TEST(test_send_with_imm)
{
    struct ep_opts o = ep_defaults();
    struct pair p;
    struct ibv_wc wc;
    char got[64];

    pair_start(&p, &o, &o);
    pair_cmd(&p, CMD_RECV);
    memset(p.e.buf, 0, 200);
    strcpy(p.e.buf + 100, "sent");
    ck_assert_int_eq(
        post_rdma(&p.e, IBV_WR_SEND_WITH_IMM, 5, 0, 128, 0, 0, IBV_SEND_SIGNALED, htonl(0x1234)),
        0);
    ck_assert_int_eq(ep_wait_wc(&p.e, &wc, WC_TIMEOUT_MS), 0);
    ck_assert_int_eq(wc.status, IBV_WC_SUCCESS);
    ck_assert_int_eq(wc.opcode, IBV_WC_SEND);
    pair_cmd(&p, CMD_WC);
    xread(p.from_child, &wc, sizeof(wc));
    ck_assert_int_eq(wc.status, IBV_WC_SUCCESS);
    ck_assert_int_eq(wc.opcode, IBV_WC_RECV);
    ck_assert_int_eq(wc.byte_len, 128);
    ck_assert_int_eq(wc.wr_id, 77);
    ck_assert(wc.wc_flags & IBV_WC_WITH_IMM);
    ck_assert_int_eq(ntohl(wc.imm_data), 0x1234);
    pair_cmd(&p, CMD_DUMP);
    xread(p.from_child, got, 64);
    ck_assert_str_eq(got, "sent");
    pair_stop(&p);
}
END_TEST

START_TEST(test_write_with_imm)
{
    struct ep_opts o = ep_defaults();
    struct pair p;
    struct ibv_wc wc;

    pair_start(&p, &o, &o);
    pair_cmd(&p, CMD_RECV);
    ck_assert_int_eq(post_rdma(&p.e, IBV_WR_RDMA_WRITE_WITH_IMM, 6, 0, 48, p.peer.rkey, p.peer.addr,
                               IBV_SEND_SIGNALED, htonl(99)),
                     0);
    ck_assert_int_eq(ep_wait_wc(&p.e, &wc, WC_TIMEOUT_MS), 0);
    ck_assert_int_eq(wc.status, IBV_WC_SUCCESS);
    pair_cmd(&p, CMD_WC);
    xread(p.from_child, &wc, sizeof(wc));
    ck_assert_int_eq(wc.status, IBV_WC_SUCCESS);
    ck_assert_int_eq(wc.opcode, IBV_WC_RECV_RDMA_WITH_IMM);
    ck_assert_int_eq(wc.byte_len, 48);
    ck_assert_int_eq(ntohl(wc.imm_data), 99);
    pair_stop(&p);
}
END_TEST

START_TEST(test_rnr_retry_exceeded)
{
    struct ep_opts o = ep_defaults();
    struct pair p;
    struct ibv_wc wc;

    o.rnr_retry = 2;
    pair_start(&p, &o, &o);
    ck_assert_int_eq(post_rdma(&p.e, IBV_WR_SEND, 9, 0, 16, 0, 0, IBV_SEND_SIGNALED, 0), 0);
    ck_assert_int_eq(ep_wait_wc(&p.e, &wc, WC_TIMEOUT_MS), 0);
    ck_assert_int_eq(wc.status, IBV_WC_RNR_RETRY_EXC_ERR);
    pair_stop(&p);
}
END_TEST

START_TEST(test_rnr_retry_until_posted)
{
    struct ep_opts o = ep_defaults(), t = ep_defaults();
    struct pair p;
    struct ibv_wc wc;

    t.min_rnr_timer = 14; /* 1.28 ms between retries */
    pair_start(&p, &o, &t);
    pair_cmd(&p, CMD_LATE);
    ck_assert_int_eq(post_rdma(&p.e, IBV_WR_SEND, 9, 0, 16, 0, 0, IBV_SEND_SIGNALED, 0), 0);
    ck_assert_int_eq(ep_wait_wc(&p.e, &wc, WC_TIMEOUT_MS), 0);
    ck_assert_int_eq(wc.status, IBV_WC_SUCCESS);
    pair_cmd(&p, CMD_WC);
    xread(p.from_child, &wc, sizeof(wc));
    ck_assert_int_eq(wc.wr_id, 78);
    pair_stop(&p);
}
END_TEST

START_TEST(test_queue_depths)
{
    struct ep_opts o = ep_defaults();
    struct pair p;

    o.max_send_wr = 4;
    o.max_recv_wr = 3;
    pair_start(&p, &o, &o);
    /* unsignaled requests keep their slots until a signaled one completes */
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(
            post_rdma(&p.e, IBV_WR_RDMA_WRITE, (uint64_t)i, 0, 8, p.peer.rkey, p.peer.addr, 0, 0),
            0);
    ck_assert_int_eq(post_rdma(&p.e, IBV_WR_RDMA_WRITE, 4, 0, 8, p.peer.rkey, p.peer.addr, 0, 0),
                     ENOMEM);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(post_recv(&p.e, (uint64_t)i), 0);
    ck_assert_int_eq(post_recv(&p.e, 3), ENOMEM);
    pair_stop(&p);
}
END_TEST

START_TEST(test_unsignaled)
{
    struct ep_opts o = ep_defaults();
    struct pair p;
    struct ibv_wc wc;

    o.max_send_wr = 4;
    pair_start(&p, &o, &o);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(
            post_rdma(&p.e, IBV_WR_RDMA_WRITE, (uint64_t)i, 0, 8, p.peer.rkey, p.peer.addr, 0, 0),
            0);
    ck_assert_int_eq(
        post_rdma(&p.e, IBV_WR_RDMA_WRITE, 3, 0, 8, p.peer.rkey, p.peer.addr, IBV_SEND_SIGNALED, 0),
        0);
    ck_assert_int_eq(ep_wait_wc(&p.e, &wc, WC_TIMEOUT_MS), 0);
    ck_assert_int_eq(wc.wr_id, 3);
    ck_assert_int_eq(ep_wait_wc(&p.e, &wc, 300), -1); /* nothing for the unsignaled ones */
    /* the signaled completion released all four slots */
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(post_rdma(&p.e, IBV_WR_RDMA_WRITE, 10, 0, 8, p.peer.rkey, p.peer.addr,
                                   IBV_SEND_SIGNALED, 0),
                         0);
    pair_stop(&p);
}
END_TEST

START_TEST(test_completion_channel)
{
    struct ep_opts o = ep_defaults();
    struct pair p;
    struct ibv_cq *cq = NULL;
    void *cq_ctx = NULL;
    struct ibv_wc wc;
    struct pollfd pfd;

    o.channel = true;
    pair_start(&p, &o, &o);
    pfd.fd = p.e.ch->fd;
    pfd.events = POLLIN;
    ck_assert_int_eq(poll(&pfd, 1, 0), 0);
    ck_assert_int_eq(ibv_req_notify_cq(p.e.cq, 0), 0);
    ck_assert_int_eq(
        post_rdma(&p.e, IBV_WR_RDMA_WRITE, 1, 0, 8, p.peer.rkey, p.peer.addr, IBV_SEND_SIGNALED, 0),
        0);
    ck_assert_int_eq(poll(&pfd, 1, WC_TIMEOUT_MS), 1);
    ck_assert_int_eq(ibv_get_cq_event(p.e.ch, &cq, &cq_ctx), 0);
    ck_assert_ptr_eq(cq, p.e.cq);
    ibv_ack_cq_events(cq, 1);
    ck_assert_int_eq(ibv_poll_cq(cq, 1, &wc), 1);
    ck_assert_int_eq(wc.status, IBV_WC_SUCCESS);
    /* not armed again: the next completion does not signal the channel */
    ck_assert_int_eq(
        post_rdma(&p.e, IBV_WR_RDMA_WRITE, 2, 0, 8, p.peer.rkey, p.peer.addr, IBV_SEND_SIGNALED, 0),
        0);
    ck_assert_int_eq(ep_wait_wc(&p.e, &wc, WC_TIMEOUT_MS), 0);
    ck_assert_int_eq(poll(&pfd, 1, 0), 0);
    pair_stop(&p);
}
END_TEST

START_TEST(test_wr_api)
{
    struct ep_opts o = ep_defaults(), t = ep_defaults();
    struct pair p;
    struct ibv_qp_ex *qpx;
    struct ibv_wc wc;
    char got[64];

    o.ex = true;
    pair_start(&p, &o, &t);
    qpx = ibv_qp_to_qp_ex(p.e.qp);
    ck_assert_ptr_nonnull(qpx);
    strcpy(p.e.buf, "through ibv_wr_rdma_write");
    ibv_wr_start(qpx);
    qpx->wr_id = 42;
    qpx->wr_flags = IBV_SEND_SIGNALED;
    ibv_wr_rdma_write(qpx, p.peer.rkey, p.peer.addr + 100);
    ibv_wr_set_sge(qpx, p.e.mr->lkey, (uintptr_t)p.e.buf, 32);
    ck_assert_int_eq(ibv_wr_complete(qpx), 0);
    ck_assert_int_eq(ep_wait_wc(&p.e, &wc, WC_TIMEOUT_MS), 0);
    ck_assert_int_eq(wc.status, IBV_WC_SUCCESS);
    ck_assert_int_eq(wc.wr_id, 42);
    pair_cmd(&p, CMD_DUMP);
    xread(p.from_child, got, 64);
    ck_assert_str_eq(got, "through ibv_wr_rdma_write");
    pair_stop(&p);
}
END_TEST

/* --- peer death and the registry ------------------------------------- */

START_TEST(test_peer_killed_flushes)
{
    struct ep_opts o = ep_defaults();
    struct pair p;
    struct ibv_wc wc;
    uint64_t start;

    pair_start(&p, &o, &o);
    ck_assert_int_eq(post_recv(&p.e, 11), 0);
    kill(p.child, SIGKILL);
    waitpid(p.child, NULL, 0);
    start = now_ms();
    ck_assert_int_eq(ep_wait_wc(&p.e, &wc, 10000), 0);
    ck_assert_int_eq(wc.status, IBV_WC_WR_FLUSH_ERR);
    ck_assert_int_eq(wc.wr_id, 11);
    ck_assert_int_lt(now_ms() - start, 10000);
    ck_assert_int_eq(qp_state(p.e.qp), IBV_QPS_ERR);
    ep_destroy(&p.e);
}
END_TEST

START_TEST(test_peer_killed_mid_run)
{
    struct ep_opts o = ep_defaults();
    struct pair p;
    struct ibv_wc wc;
    uint64_t end;
    int errors = 0, i = 0;

    pair_start(&p, &o, &o);
    end = now_ms() + 10000;
    while (errors == 0 && now_ms() < end) {
        if (i == 50) {
            kill(p.child, SIGKILL);
            waitpid(p.child, NULL, 0);
        }
        if (post_rdma(&p.e, IBV_WR_RDMA_WRITE, (uint64_t)i, 0, 1024, p.peer.rkey, p.peer.addr,
                      IBV_SEND_SIGNALED, 0) == 0)
            i++;
        while (ibv_poll_cq(p.e.cq, 1, &wc) == 1)
            errors += wc.status != IBV_WC_SUCCESS;
    }
    ck_assert_int_ge(i, 50);
    ck_assert_int_gt(errors, 0);
    ck_assert_int_eq(qp_state(p.e.qp), IBV_QPS_ERR);
    ep_destroy(&p.e);
}
END_TEST

START_TEST(test_registry_reaps_dead)
{
    pid_t child = fork();
    int status;

    ck_assert_int_ge(child, 0);
    if (child == 0) {
        struct ep_opts o = ep_defaults();
        struct ep e;

        ep_create(&e, &o);
        raise(SIGKILL); /* dies with its MR and QP registered */
        _exit(1);
    }
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert(WIFSIGNALED(status));
    ck_assert_int_eq(emu_reg_open(), 0);
    /* the first open above may already have reaped; register again */
    {
        pid_t c2 = fork();

        if (c2 == 0) {
            struct ep_opts o = ep_defaults();
            struct ep e;

            ep_create(&e, &o);
            raise(SIGKILL);
            _exit(1);
        }
        ck_assert_int_eq(waitpid(c2, &status, 0), c2);
        ck_assert_int_eq(emu_reg_count_pid(c2), 2); /* stale: one MR, one QP */
        ck_assert_int_ge(emu_reg_reap(), 2);
        ck_assert_int_eq(emu_reg_count_pid(c2), 0);
    }
    ck_assert_int_eq(emu_reg_count_pid(child), 0);
}
END_TEST

START_TEST(test_open_device_reaps)
{
    pid_t child;
    int status;

    /* this suite's own registry handle reaps when it opens: open it first */
    ck_assert_int_eq(emu_reg_open(), 0);
    child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        struct ep_opts o = ep_defaults();
        struct ep e;

        ep_create(&e, &o);
        raise(SIGKILL);
        _exit(1);
    }
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert_int_eq(emu_reg_count_pid(child), 2);
    /* the next process that opens a device cleans up */
    ibv_close_device(open_dev(0));
    ck_assert_int_eq(emu_reg_count_pid(child), 0);
}
END_TEST

/* --- the record ------------------------------------------------------- */

static char rec_path[256];

static void rec_setup(void)
{
    snprintf(rec_path, sizeof(rec_path), "/tmp/teshim-verbs-emu-record.%d.jsonl", (int)getpid());
    unlink(rec_path);
    setenv("VERBS_EMU_RECORD", rec_path, 1);
}

static void rec_teardown(void)
{
    unlink(rec_path);
}

static void rec_expect(const char *const needles[])
{
    if (et_count_lines(rec_path, needles) != 1) {
        et_dump(rec_path);
        ck_abort_msg("expected one record line with %s %s %s", needles[0],
                     needles[1] ? needles[1] : "", needles[1] && needles[2] ? needles[2] : "");
    }
}

START_TEST(test_record_registrations)
{
    struct ibv_context *ctx = open_dev(0);
    struct ibv_pd *pd = ibv_alloc_pd(ctx);
    static char buf[1 << 17];
    volatile unsigned int runtime = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_RELAXED_ORDERING;
    struct ibv_mr *a, *b, *c, *d;
    int fd = memfd_create("dmabuf", 0);
    char want[64];

    a = ibv_reg_mr(pd, buf, 4096, IBV_ACCESS_LOCAL_WRITE);
    b = ibv_reg_mr(pd, buf, sizeof(buf), runtime);
    c = ibv_reg_mr_iova(pd, buf, 8192, 0x1000, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ);
    d = ibv_reg_dmabuf_mr(pd, 0, 4096, 0, fd, IBV_ACCESS_LOCAL_WRITE);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(ibv_rereg_mr(a, IBV_REREG_MR_CHANGE_ACCESS, NULL, NULL, 0,
                                  IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE),
                     0);
    errno = 0;
    ck_assert_ptr_null(ibv_reg_mr(pd, buf, 4096, IBV_ACCESS_REMOTE_WRITE));
    ck_assert_int_eq(errno, EINVAL); /* remote write needs local write */
    /* a driver that rejects relaxed ordering, for fallback tests */
    setenv("VERBS_EMU_REJECT_ACCESS", "0x100000", 1);
    errno = 0;
    ck_assert_ptr_null(ibv_reg_mr(pd, buf, 8192, runtime));
    ck_assert_int_eq(errno, EINVAL);
    unsetenv("VERBS_EMU_REJECT_ACCESS");
    rec_expect(
        (const char *[]){"\"entry\":\"ibv_reg_mr\"", "\"length\":4096", "\"access\":1,", NULL});
    rec_expect((const char *[]){"\"entry\":\"ibv_reg_mr_iova2\"", "\"length\":131072",
                                "\"access\":1048577,", NULL});
    rec_expect(
        (const char *[]){"\"entry\":\"ibv_reg_mr_iova\"", "\"iova\":4096", "\"access\":5,", NULL});
    snprintf(want, sizeof(want), "\"fd\":%d", fd);
    rec_expect((const char *[]){"\"entry\":\"ibv_reg_dmabuf_mr\"", want, NULL});
    rec_expect((const char *[]){"\"call\":\"rereg_mr\"", "\"flags\":4", "\"access\":3,", NULL});
    rec_expect((const char *[]){"\"entry\":\"ibv_reg_mr\"", "\"access\":2,", "\"ret\":22", NULL});
    rec_expect((const char *[]){"\"entry\":\"ibv_reg_mr_iova2\"", "\"length\":8192",
                                "\"access\":1048577,", "\"ret\":22", NULL});
    ibv_dereg_mr(a);
    ibv_dereg_mr(b);
    ibv_dereg_mr(c);
    ibv_dereg_mr(d);
    close(fd);
    ibv_dealloc_pd(pd);
    ibv_close_device(ctx);
}
END_TEST

#define REG_THREADS 16
#define REG_EACH 40

struct reg_job {
    struct ibv_pd *pd;
    int idx;
    uint32_t keys[REG_EACH];
};

static void *reg_worker(void *arg)
{
    struct reg_job *j = arg;
    static char buf[REG_THREADS][4096];
    struct ibv_mr *mr[REG_EACH];
    int me = j->idx;

    for (int i = 0; i < REG_EACH; i++) {
        mr[i] = ibv_reg_mr(j->pd, buf[me], 4096, IBV_ACCESS_LOCAL_WRITE);
        j->keys[i] = mr[i] != NULL ? mr[i]->rkey : 0;
    }
    for (int i = 0; i < REG_EACH; i++)
        if (mr[i] != NULL)
            ibv_dereg_mr(mr[i]);
    return NULL;
}

struct line_check {
    int lines, bad;
};

static void check_line(const char *line, void *arg)
{
    struct line_check *c = arg;
    size_t n = strlen(line);

    c->lines++;
    if (n < 3 || line[0] != '{' || line[n - 2] != '}' || line[n - 1] != '\n' ||
        strchr(line + 1, '{') != NULL)
        c->bad++;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

/* 16 threads in each of two processes register at once: keys stay unique
 * and every record line stays whole */
START_TEST(test_concurrent_registrations)
{
    static struct reg_job jobs[REG_THREADS];
    static uint32_t all[REG_THREADS * REG_EACH];
    pthread_t t[REG_THREADS];
    struct ibv_context *ctx;
    struct ibv_pd *pd;
    struct line_check lc = {0, 0};
    pid_t other = fork();

    ck_assert_int_ge(other, 0);
    ctx = open_dev(0);
    pd = ibv_alloc_pd(ctx);
    for (int i = 0; i < REG_THREADS; i++) {
        jobs[i].pd = pd;
        jobs[i].idx = i;
        ck_assert_int_eq(pthread_create(&t[i], NULL, reg_worker, &jobs[i]), 0);
    }
    for (int i = 0; i < REG_THREADS; i++)
        pthread_join(t[i], NULL);
    if (other == 0)
        _exit(0);
    ck_assert_int_eq(et_wait(other, 20), 0);
    for (int i = 0; i < REG_THREADS; i++)
        memcpy(&all[i * REG_EACH], jobs[i].keys, sizeof(jobs[i].keys));
    qsort(all, REG_THREADS * REG_EACH, sizeof(all[0]), cmp_u32);
    ck_assert_uint_ne(all[0], 0);
    for (int i = 1; i < REG_THREADS * REG_EACH; i++)
        ck_assert_uint_ne(all[i], all[i - 1]);
    et_each_line(rec_path, check_line, &lc);
    /* two processes: open, alloc_pd, and a reg_mr and dereg_mr per call */
    ck_assert_int_eq(lc.lines, 2 * (2 + 2 * REG_THREADS * REG_EACH));
    ck_assert_int_eq(lc.bad, 0);
    ibv_dealloc_pd(pd);
    ibv_close_device(ctx);
}
END_TEST

typedef struct ibv_mr *(*reg_mr_1_0_fn)(void *pd, void *addr, size_t length, int access);
typedef int (*modify_qp_1_0_fn)(void *qp, struct ibv_qp_attr *attr, int mask);

/* callers of the 1.0 compat versions reach them, recorded as they called */
START_TEST(test_record_compat_versions)
{
    void *h = dlopen("libibverbs.so.1", RTLD_NOW | RTLD_NOLOAD);
    reg_mr_1_0_fn reg10;
    modify_qp_1_0_fn mod10;
    struct ibv_qp_attr a = {.qp_state = IBV_QPS_INIT, .qp_access_flags = 6};
    static char buf[4096];

    ck_assert_ptr_nonnull(h);
    *(void **)&reg10 = dlvsym(h, "ibv_reg_mr", "IBVERBS_1.0");
    *(void **)&mod10 = dlvsym(h, "ibv_modify_qp", "IBVERBS_1.0");
    ck_assert_ptr_nonnull(reg10);
    ck_assert_ptr_nonnull(mod10);
    ck_assert_ptr_ne(*(void **)&reg10, dlvsym(h, "ibv_reg_mr", "IBVERBS_1.1"));
    errno = 0;
    ck_assert_ptr_null(reg10(NULL, buf, sizeof(buf), 7));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(mod10(NULL, &a, IBV_QP_STATE | IBV_QP_ACCESS_FLAGS), EOPNOTSUPP);
    rec_expect((const char *[]){"\"entry\":\"ibv_reg_mr@IBVERBS_1.0\"", "\"length\":4096",
                                "\"access\":7,", "\"ret\":22", NULL});
    rec_expect((const char *[]){"\"entry\":\"ibv_modify_qp@IBVERBS_1.0\"", "\"attr_mask\":9,",
                                "\"qp_access_flags\":6,", NULL});
    dlclose(h);
}
END_TEST

START_TEST(test_record_modify_qp)
{
    struct ep_opts o = ep_defaults();
    struct ep e;
    struct ibv_qp_attr a;
    char qpn[64];

    o.dev = 1;
    ep_create(&e, &o);
    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_INIT;
    a.port_num = 1;
    a.qp_access_flags = IBV_ACCESS_REMOTE_WRITE;
    ck_assert_int_eq(
        ibv_modify_qp(e.qp, &a,
                      IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS),
        0);
    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_RTR;
    a.path_mtu = IBV_MTU_4096;
    a.dest_qp_num = 0x4321;
    a.min_rnr_timer = 12;
    a.ah_attr.port_num = 1;
    a.ah_attr.sl = 3;
    a.ah_attr.is_global = 1;
    a.ah_attr.grh.sgid_index = 3;
    a.ah_attr.grh.traffic_class = 106;
    ck_assert_int_eq(ibv_modify_qp(e.qp, &a,
                                   IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                                       IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC |
                                       IBV_QP_MIN_RNR_TIMER),
                     0);
    snprintf(qpn, sizeof(qpn), "\"qp_num\":%u,", e.qp->qp_num);
    rec_expect((const char *[]){"\"call\":\"modify_qp\"", qpn, "\"qp_state\":1",
                                "\"qp_access_flags\":2,", "\"attr_mask\":57,", NULL});
    rec_expect((const char *[]){"\"call\":\"modify_qp\"", qpn, "\"qp_state\":2",
                                "\"ah_attr.is_global\":1", "\"ah_attr.grh.traffic_class\":106",
                                "\"ah_attr.sl\":3,", "\"dest_qp_num\":17185,",
                                "\"ah_attr.grh.sgid_index\":3,", NULL});
    rec_expect(
        (const char *[]){"\"call\":\"create_qp\"", "\"qp_num\":", "\"cap.max_send_wr\":16", NULL});
    ep_destroy(&e);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("verbs_emu");
    TCase *dev = tcase_create("devices");
    TCase *qp = tcase_create("qp");
    TCase *rdma = tcase_create("rdma");
    TCase *life = tcase_create("lifetime");
    TCase *rec = tcase_create("record");
    SRunner *sr;
    int failed;

    setenv("VERBS_EMU_DEVICES", "2", 1);
    setenv("VERBS_EMU_PERSONALITY", "ib,roce", 1);
    setenv("VERBS_EMU_PEER_GRACE_MS", "300", 0);
    tcase_add_test(dev, test_devices);
    tcase_add_test(dev, test_export_table);
    tcase_add_test(dev, test_typed_stubs);
    tcase_add_test(dev, test_reg_no_access);
    tcase_add_test(qp, test_state_machine);
    tcase_add_loop_test(rdma, test_write_read, 0, 2);
    tcase_add_test(rdma, test_write_out_of_bounds);
    tcase_add_test(rdma, test_read_before_region);
    tcase_add_test(rdma, test_wrong_rkey);
    tcase_add_test(rdma, test_mr_access_flags);
    tcase_add_test(rdma, test_qp_access_flags);
    tcase_add_test(rdma, test_send_with_imm);
    tcase_add_test(rdma, test_write_with_imm);
    tcase_add_test(rdma, test_rnr_retry_exceeded);
    tcase_add_test(rdma, test_rnr_retry_until_posted);
    tcase_add_test(rdma, test_queue_depths);
    tcase_add_test(rdma, test_unsignaled);
    tcase_add_test(rdma, test_completion_channel);
    tcase_add_test(rdma, test_wr_api);
    tcase_set_timeout(rdma, 30);
    tcase_add_test(life, test_peer_killed_flushes);
    tcase_add_test(life, test_peer_killed_mid_run);
    tcase_add_test(life, test_registry_reaps_dead);
    tcase_add_test(life, test_open_device_reaps);
    tcase_set_timeout(life, 30);
    tcase_add_checked_fixture(rec, rec_setup, rec_teardown);
    tcase_add_test(rec, test_record_registrations);
    tcase_add_test(rec, test_record_modify_qp);
    tcase_add_test(rec, test_record_compat_versions);
    tcase_add_test(rec, test_concurrent_registrations);
    suite_add_tcase(s, dev);
    suite_add_tcase(s, qp);
    suite_add_tcase(s, rdma);
    suite_add_tcase(s, life);
    suite_add_tcase(s, rec);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
