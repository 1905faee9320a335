/*
 * A host program that reaches libibverbs the way NCCL and Mooncake's TENT
 * backend do: not linked with it (no DT_NEEDED, no PLT entry for a verbs
 * function), it dlopen's libibverbs.so.1 and looks every entry point up
 * through the handle. Only <infiniband/verbs.h> for the types.
 *
 *   tshim_dlhost MODE STEP...
 *   MODE nccl   dlopen(RTLD_NOW), dlvsym(handle, name, "IBVERBS_1.1") and
 *               the newer versions by name (ibv_reg_mr_iova2 "IBVERBS_1.8",
 *               ibv_reg_dmabuf_mr "IBVERBS_1.12"), as NCCL's ibvsymbols.cc
 *   MODE tent   dlopen(RTLD_NOW | RTLD_GLOBAL), plain dlsym(handle, name)
 *   MODE nccl-1.1  as nccl, but only the IBVERBS_1.1 entry points (older
 *               NCCL; rdma-core's own ibv_reg_mr then calls the iova2 the
 *               host never looked up)
 *
 * The steps mirror tshim_host's, so that both hosts leave the same record:
 *   reg_const:SIZE      ibv_reg_mr, LOCAL_WRITE | REMOTE_WRITE | REMOTE_READ
 *   reg_rt:SIZE:ACCESS  ibv_reg_mr_iova2(iova = addr), what verbs.h's macro
 *                       makes of run-time flags
 *   reg_dmabuf:SIZE     ibv_reg_dmabuf_mr on a memfd
 *   qp:grh, qp:nogrh    RC QP through INIT to RTR, address with/without GRH
 *   rts:grh             the same, then on to RTS
 *   lookup:NAME         where dlsym/dlvsym of NAME through the handle lands
 *                       ("in=" the object's file name)
 *   other:PATH          dlopen PATH (a library defining ibv_reg_mr of its
 *                       own) and print where its ibv_reg_mr lands and what
 *                       calling it returns
 */
#include <dlfcn.h>
#include <errno.h>
#include <infiniband/verbs.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#undef ibv_reg_mr
#undef ibv_reg_mr_iova

static void *lib;
static bool nccl, only_1_1;

static struct {
    struct ibv_device **(*get_device_list)(int *n);
    void (*free_device_list)(struct ibv_device **list);
    struct ibv_context *(*open_device)(struct ibv_device *dev);
    int (*close_device)(struct ibv_context *ctx);
    struct ibv_pd *(*alloc_pd)(struct ibv_context *ctx);
    int (*dealloc_pd)(struct ibv_pd *pd);
    struct ibv_mr *(*reg_mr)(struct ibv_pd *pd, void *addr, size_t len, int access);
    struct ibv_mr *(*reg_mr_iova2)(struct ibv_pd *pd, void *addr, size_t len, uint64_t iova,
                                   unsigned int access);
    struct ibv_mr *(*reg_dmabuf_mr)(struct ibv_pd *pd, uint64_t off, size_t len, uint64_t iova,
                                    int fd, int access);
    int (*dereg_mr)(struct ibv_mr *mr);
    struct ibv_cq *(*create_cq)(struct ibv_context *ctx, int cqe, void *cq_context,
                                struct ibv_comp_channel *ch, int vec);
    int (*destroy_cq)(struct ibv_cq *cq);
    struct ibv_qp *(*create_qp)(struct ibv_pd *pd, struct ibv_qp_init_attr *attr);
    int (*destroy_qp)(struct ibv_qp *qp);
    int (*modify_qp)(struct ibv_qp *qp, struct ibv_qp_attr *attr, int mask);
} v;

static struct ibv_context *ctx;
static struct ibv_pd *pd;

static void die(const char *what)
{
    fprintf(stderr, "tshim_dlhost: %s: %s\n", what, strerror(errno));
    exit(2);
}

/* One entry point, the way the mode's engine asks for it. */
static void *sym(const char *name, const char *version)
{
    void *p = nccl ? dlvsym(lib, name, version) : dlsym(lib, name);

    if (!p) {
        fprintf(stderr, "tshim_dlhost: %s: %s\n", name, dlerror());
        exit(2);
    }
    return p;
}

#define LOAD(field, name, version)                                                                 \
    do {                                                                                           \
        void *p_ = sym(name, version);                                                             \
        memcpy(&v.field, &p_, sizeof(p_));                                                         \
    } while (0)

static void load(void)
{
    lib = dlopen("libibverbs.so.1", nccl ? RTLD_NOW : RTLD_NOW | RTLD_GLOBAL);
    if (!lib) {
        fprintf(stderr, "tshim_dlhost: dlopen: %s\n", dlerror());
        exit(2);
    }
    LOAD(get_device_list, "ibv_get_device_list", "IBVERBS_1.1");
    LOAD(free_device_list, "ibv_free_device_list", "IBVERBS_1.1");
    LOAD(open_device, "ibv_open_device", "IBVERBS_1.1");
    LOAD(close_device, "ibv_close_device", "IBVERBS_1.1");
    LOAD(alloc_pd, "ibv_alloc_pd", "IBVERBS_1.1");
    LOAD(dealloc_pd, "ibv_dealloc_pd", "IBVERBS_1.1");
    LOAD(reg_mr, "ibv_reg_mr", "IBVERBS_1.1");
    if (!only_1_1) {
        LOAD(reg_mr_iova2, "ibv_reg_mr_iova2", "IBVERBS_1.8");
        LOAD(reg_dmabuf_mr, "ibv_reg_dmabuf_mr", "IBVERBS_1.12");
    }
    LOAD(dereg_mr, "ibv_dereg_mr", "IBVERBS_1.1");
    LOAD(create_cq, "ibv_create_cq", "IBVERBS_1.1");
    LOAD(destroy_cq, "ibv_destroy_cq", "IBVERBS_1.1");
    LOAD(create_qp, "ibv_create_qp", "IBVERBS_1.1");
    LOAD(destroy_qp, "ibv_destroy_qp", "IBVERBS_1.1");
    LOAD(modify_qp, "ibv_modify_qp", "IBVERBS_1.1");
}

static void open_device(void)
{
    int n = 0;
    struct ibv_device **list = v.get_device_list(&n);

    if (!list || n < 1)
        die("no device");
    ctx = v.open_device(list[0]);
    if (!ctx)
        die("ibv_open_device");
    pd = v.alloc_pd(ctx);
    if (!pd)
        die("ibv_alloc_pd");
    v.free_device_list(list);
}

static size_t parse_size(const char *s)
{
    char *end;
    size_t n = strtoull(s, &end, 0);

    if (*end == 'K' || *end == 'k')
        n <<= 10;
    else if (*end == 'M' || *end == 'm')
        n <<= 20;
    return n;
}

static void report_mr(const char *step, struct ibv_mr *mr)
{
    if (mr) {
        printf("%s ok\n", step);
        v.dereg_mr(mr);
    } else {
        printf("%s null errno=%d\n", step, errno);
    }
}

static void step_reg(const char *step, const char *kind, char *arg)
{
    size_t len = parse_size(arg);
    void *buf = calloc(1, len ? len : 1);
    struct ibv_mr *mr = NULL;

    if (!buf)
        die("calloc");
    if (strcmp(kind, "reg_const") == 0) {
        mr = v.reg_mr(pd, buf, len,
                      IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ);
    } else if (strcmp(kind, "reg_rt") == 0 && v.reg_mr_iova2) {
        char *acc = strchr(arg, ':');
        int access = acc ? (int)strtol(acc + 1, NULL, 0) : IBV_ACCESS_LOCAL_WRITE;
        mr = v.reg_mr_iova2(pd, buf, len, (uintptr_t)buf, (unsigned int)access);
    } else if (strcmp(kind, "reg_dmabuf") == 0 && v.reg_dmabuf_mr) {
        int fd = memfd_create("tshim-dmabuf", MFD_CLOEXEC);
        if (fd < 0 || ftruncate(fd, (off_t)len) != 0)
            die("memfd");
        mr = v.reg_dmabuf_mr(pd, 0, len, 0, fd, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
        report_mr(step, mr);
        close(fd);
        free(buf);
        return;
    } else {
        fprintf(stderr, "tshim_dlhost: unknown registration %s\n", kind);
        exit(2);
    }
    report_mr(step, mr);
    free(buf);
}

static int modify(struct ibv_qp *qp, struct ibv_qp_attr *a, int mask, const char *what)
{
    struct ibv_qp_attr before = *a;
    int rc = v.modify_qp(qp, a, mask);

    printf("%s rc=%d attr_unchanged=%d\n", what, rc, memcmp(a, &before, sizeof(*a)) == 0);
    return rc;
}

static void step_qp(const char *step, bool grh, bool rts)
{
    struct ibv_qp_init_attr ia;
    struct ibv_qp_attr a;
    struct ibv_cq *cq = v.create_cq(ctx, 16, NULL, NULL, 0);
    struct ibv_qp *qp;
    char what[300];

    if (!cq)
        die("ibv_create_cq");
    memset(&ia, 0, sizeof(ia));
    ia.send_cq = cq;
    ia.recv_cq = cq;
    ia.cap.max_send_wr = 4;
    ia.cap.max_recv_wr = 4;
    ia.cap.max_send_sge = 1;
    ia.cap.max_recv_sge = 1;
    ia.qp_type = IBV_QPT_RC;
    qp = v.create_qp(pd, &ia);
    if (!qp)
        die("ibv_create_qp");

    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_INIT;
    a.port_num = 1;
    a.qp_access_flags = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
    if (v.modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS) !=
        0)
        die("modify_qp to INIT");

    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_RTR;
    a.path_mtu = IBV_MTU_1024;
    a.dest_qp_num = qp->qp_num;
    a.max_dest_rd_atomic = 1;
    a.min_rnr_timer = 12;
    a.ah_attr.dlid = 1;
    a.ah_attr.sl = 2;
    a.ah_attr.port_num = 1;
    if (grh) {
        a.ah_attr.is_global = 1;
        a.ah_attr.grh.hop_limit = 1;
        a.ah_attr.grh.traffic_class = 4;
        a.ah_attr.grh.dgid.raw[0] = 0xfe;
        a.ah_attr.grh.dgid.raw[1] = 0x80;
    }
    snprintf(what, sizeof(what), "%s", step);
    if (modify(qp, &a,
               IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                   IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER,
               what) == 0 &&
        rts) {
        memset(&a, 0, sizeof(a));
        a.qp_state = IBV_QPS_RTS;
        a.timeout = 14;
        a.retry_cnt = 7;
        a.rnr_retry = 7;
        a.max_rd_atomic = 1;
        snprintf(what, sizeof(what), "%s to-rts", step);
        modify(qp, &a,
               IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
                   IBV_QP_MAX_QP_RD_ATOMIC,
               what);
    }
    v.destroy_qp(qp);
    v.destroy_cq(cq);
}

static const char *object_of(const void *p)
{
    Dl_info info;
    const char *slash;

    if (!p || !dladdr(p, &info) || !info.dli_fname)
        return "none";
    slash = strrchr(info.dli_fname, '/');
    return slash ? slash + 1 : info.dli_fname;
}

static void step_lookup(const char *step, const char *name)
{
    void *p = nccl ? dlvsym(lib, name, "IBVERBS_1.1") : dlsym(lib, name);

    printf("%s in=%s\n", step, object_of(p));
}

/* A library of the host's own that happens to define ibv_reg_mr: its lookup
 * is its own business. */
static void step_other(const char *step, const char *path)
{
    void *h = dlopen(path, RTLD_NOW);
    struct ibv_mr *(*fn)(struct ibv_pd *, void *, size_t, int);
    void *p;

    if (!h) {
        fprintf(stderr, "tshim_dlhost: dlopen %s: %s\n", path, dlerror());
        exit(2);
    }
    p = nccl ? dlvsym(h, "ibv_reg_mr", "IBVERBS_1.1") : dlsym(h, "ibv_reg_mr");
    if (!p) {
        printf("%s missing\n", step);
        return;
    }
    memcpy(&fn, &p, sizeof(fn));
    printf("%s in=%s ret=%p\n", step, object_of(p), (void *)fn(NULL, NULL, 0, 7));
}

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "nccl") != 0 && strcmp(argv[1], "tent") != 0 &&
                     strcmp(argv[1], "nccl-1.1") != 0)) {
        fprintf(stderr, "usage: tshim_dlhost nccl|nccl-1.1|tent STEP...\n");
        return 2;
    }
    nccl = strncmp(argv[1], "nccl", 4) == 0;
    only_1_1 = strcmp(argv[1], "nccl-1.1") == 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("pid %d\n", (int)getpid());
    load();
    open_device();
    for (int i = 2; i < argc; i++) {
        char step[256], *arg;
        snprintf(step, sizeof(step), "%s", argv[i]);
        arg = strchr(step, ':');
        if (arg)
            *arg++ = '\0';
        if (strncmp(step, "reg_", 4) == 0 && arg)
            step_reg(argv[i], step, arg);
        else if ((strcmp(step, "qp") == 0 || strcmp(step, "rts") == 0) && arg)
            step_qp(argv[i], strcmp(arg, "grh") == 0, strcmp(step, "rts") == 0);
        else if (strcmp(step, "lookup") == 0 && arg)
            step_lookup(argv[i], arg);
        else if (strcmp(step, "other") == 0 && arg)
            step_other(argv[i], arg);
        else {
            fprintf(stderr, "tshim_dlhost: unknown step %s\n", argv[i]);
            return 2;
        }
    }
    v.dealloc_pd(pd);
    v.close_device(ctx);
    return 0;
}
