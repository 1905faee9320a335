/*
 * A host program built like an unmodified RDMA application: the real
 * <infiniband/verbs.h>, linked with -libverbs, no knowledge of teshim. Each
 * argument is a step; every step prints one line on stdout that the shim
 * suite reads back. Sizes take K/M suffixes.
 *
 *   reg_const:SIZE       ibv_reg_mr, constant flags       -> ibv_reg_mr@IBVERBS_1.1
 *   reg_atomic:SIZE      the same with REMOTE_ATOMIC       -> ibv_reg_mr@IBVERBS_1.1
 *   reg_rt:SIZE:ACCESS   ibv_reg_mr, run-time flags        -> ibv_reg_mr_iova2@IBVERBS_1.8
 *   reg_iova:SIZE        ibv_reg_mr_iova, constant flags   -> ibv_reg_mr_iova@IBVERBS_1.7
 *   reg_dmabuf:SIZE      ibv_reg_dmabuf_mr on a memfd      -> ibv_reg_dmabuf_mr@IBVERBS_1.12
 *   rereg:SIZE           register local-only, then ibv_rereg_mr adding remote access
 *   rereg_atomic:SIZE    register with remote atomics, then rereg without them
 *   reg_bad              a registration the library refuses (length 0): NULL + errno
 *   qp:grh, qp:nogrh     RC QP through INIT to RTR, address with or without GRH
 *   rts:grh, rts:nogrh   the same, then on to RTS
 *   qp_bad               an invalid transition (RESET to RTR): errno as return value
 *   threads:T:N:SIZE     T threads each registering (run-time flags) N times
 *   fork                 fork; the child registers 1 MiB and exits
 *   exec                 fork and exec this program with "reg_rt:1M:7"
 *   execself:FN          replace this process (no fork) by this program with
 *                        "reg_rt:1M:7" through FN: execve, execv, execvp,
 *                        execvpe, execl, execlp, execle or fexecve
 *   -d INDEX             later steps use device INDEX (default 0)
 */
#include <errno.h>
#include <fcntl.h>
#include <infiniband/verbs.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

struct host {
    struct ibv_context *ctx;
    struct ibv_pd *pd;
    int dev;
};

static struct host host;
static const char *self_path;

static void die(const char *what)
{
    fprintf(stderr, "tshim_host: %s: %s\n", what, strerror(errno));
    exit(2);
}

static size_t parse_size(const char *s)
{
    char *end;
    size_t v = strtoull(s, &end, 0);

    if (*end == 'K' || *end == 'k')
        v <<= 10;
    else if (*end == 'M' || *end == 'm')
        v <<= 20;
    return v;
}

static void open_device(int index)
{
    int n = 0;
    struct ibv_device **list = ibv_get_device_list(&n);

    if (!list || index >= n)
        die("no such device");
    if (host.ctx) {
        ibv_dealloc_pd(host.pd);
        ibv_close_device(host.ctx);
    }
    host.ctx = ibv_open_device(list[index]);
    if (!host.ctx)
        die("ibv_open_device");
    host.pd = ibv_alloc_pd(host.ctx);
    if (!host.pd)
        die("ibv_alloc_pd");
    host.dev = index;
    ibv_free_device_list(list);
}

static void report_mr(const char *step, struct ibv_mr *mr)
{
    if (mr) {
        printf("%s ok\n", step);
        ibv_dereg_mr(mr);
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
        mr = ibv_reg_mr(host.pd, buf, len,
                        IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ);
    } else if (strcmp(kind, "reg_atomic") == 0) {
        mr =
            ibv_reg_mr(host.pd, buf, len,
                       IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC);
    } else if (strcmp(kind, "reg_rt") == 0) {
        char *acc = strchr(arg, ':');
        int access = acc ? (int)strtol(acc + 1, NULL, 0) : IBV_ACCESS_LOCAL_WRITE;
        mr = ibv_reg_mr(host.pd, buf, len, access);
    } else if (strcmp(kind, "reg_iova") == 0) {
        mr = ibv_reg_mr_iova(host.pd, buf, len, 0x10000,
                             IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ);
    } else if (strcmp(kind, "reg_dmabuf") == 0) {
        int fd = memfd_create("tshim-dmabuf", MFD_CLOEXEC);
        if (fd < 0 || ftruncate(fd, (off_t)len) != 0)
            die("memfd");
        mr = ibv_reg_dmabuf_mr(host.pd, 0, len, 0, fd,
                               IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
        report_mr(step, mr);
        close(fd);
        free(buf);
        return;
    }
    report_mr(step, mr);
    free(buf);
}

static void step_rereg(const char *step, const char *kind, char *arg)
{
    size_t len = parse_size(arg);
    void *buf = calloc(1, len);
    struct ibv_mr *mr = strcmp(kind, "rereg_atomic") == 0
                            ? ibv_reg_mr(host.pd, buf, len,
                                         IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                                             IBV_ACCESS_REMOTE_ATOMIC)
                            : ibv_reg_mr(host.pd, buf, len, IBV_ACCESS_LOCAL_WRITE);

    if (!mr)
        die("ibv_reg_mr before rereg");
    int rc =
        ibv_rereg_mr(mr, IBV_REREG_MR_CHANGE_ACCESS, NULL, NULL, 0,
                     IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ);
    printf("%s rc=%d\n", step, rc);
    ibv_dereg_mr(mr);
    free(buf);
}

static void step_reg_bad(const char *step)
{
    char buf[64];

    errno = 0;
    struct ibv_mr *mr = ibv_reg_mr(host.pd, buf, 0, IBV_ACCESS_LOCAL_WRITE);
    report_mr(step, mr);
}

static struct ibv_qp *make_qp(struct ibv_cq **cq)
{
    struct ibv_qp_init_attr ia;

    *cq = ibv_create_cq(host.ctx, 16, NULL, NULL, 0);
    if (!*cq)
        die("ibv_create_cq");
    memset(&ia, 0, sizeof(ia));
    ia.send_cq = *cq;
    ia.recv_cq = *cq;
    ia.cap.max_send_wr = 4;
    ia.cap.max_recv_wr = 4;
    ia.cap.max_send_sge = 1;
    ia.cap.max_recv_sge = 1;
    ia.qp_type = IBV_QPT_RC;
    struct ibv_qp *qp = ibv_create_qp(host.pd, &ia);
    if (!qp)
        die("ibv_create_qp");
    return qp;
}

static void step_qp(const char *step, bool grh, bool rts)
{
    struct ibv_cq *cq;
    struct ibv_qp *qp = make_qp(&cq);
    struct ibv_qp_attr a, before;
    int rc;

    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_INIT;
    a.pkey_index = 0;
    a.port_num = 1;
    a.qp_access_flags = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
    rc =
        ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
    if (rc) {
        errno = rc;
        die("modify_qp to INIT");
    }

    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_RTR;
    a.path_mtu = IBV_MTU_1024;
    a.dest_qp_num = qp->qp_num;
    a.rq_psn = 0;
    a.max_dest_rd_atomic = 1;
    a.min_rnr_timer = 12;
    a.ah_attr.dlid = (uint16_t)(host.dev + 1);
    a.ah_attr.sl = 2;
    a.ah_attr.port_num = 1;
    if (grh) {
        a.ah_attr.is_global = 1;
        a.ah_attr.grh.hop_limit = 1;
        a.ah_attr.grh.sgid_index = 0;
        a.ah_attr.grh.traffic_class = 4;
        a.ah_attr.grh.dgid.raw[0] = 0xfe;
        a.ah_attr.grh.dgid.raw[1] = 0x80;
    }
    before = a;
    rc = ibv_modify_qp(qp, &a,
                       IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                           IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
    printf("%s rc=%d attr_unchanged=%d\n", step, rc, memcmp(&a, &before, sizeof(a)) == 0);
    if (rc == 0 && rts) {
        memset(&a, 0, sizeof(a));
        a.qp_state = IBV_QPS_RTS;
        a.timeout = 14;
        a.retry_cnt = 7;
        a.rnr_retry = 7;
        a.max_rd_atomic = 1;
        before = a;
        rc = ibv_modify_qp(qp, &a,
                           IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                               IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
        printf("%s to-rts rc=%d attr_unchanged=%d\n", step, rc,
               memcmp(&a, &before, sizeof(a)) == 0);
    }
    ibv_destroy_qp(qp);
    ibv_destroy_cq(cq);
}

static void step_qp_bad(const char *step)
{
    struct ibv_cq *cq;
    struct ibv_qp *qp = make_qp(&cq);
    struct ibv_qp_attr a;

    memset(&a, 0, sizeof(a));
    a.qp_state = IBV_QPS_RTR;
    a.ah_attr.port_num = 1;
    a.ah_attr.dlid = 1;
    errno = 0;
    int rc = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV);
    printf("%s rc=%d\n", step, rc);
    ibv_destroy_qp(qp);
    ibv_destroy_cq(cq);
}

struct worker {
    pthread_t tid;
    int n;
    size_t len;
    int access;
    int failed;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    void *buf = calloc(1, w->len);

    for (int i = 0; i < w->n; i++) {
        struct ibv_mr *mr = ibv_reg_mr(host.pd, buf, w->len, w->access);
        if (!mr)
            w->failed++;
        else
            ibv_dereg_mr(mr);
    }
    free(buf);
    return NULL;
}

static void step_threads(const char *step, char *arg)
{
    int nt = (int)strtol(arg, &arg, 0);
    int n = (int)strtol(arg + 1, &arg, 0);
    size_t len = parse_size(arg + 1);
    struct worker w[64];
    int failed = 0;

    if (nt > 64)
        nt = 64;
    for (int i = 0; i < nt; i++) {
        w[i].n = n;
        w[i].len = len;
        w[i].access = (int)strtol("7", NULL, 0);
        w[i].failed = 0;
        if (pthread_create(&w[i].tid, NULL, worker_main, &w[i]) != 0)
            die("pthread_create");
    }
    for (int i = 0; i < nt; i++) {
        pthread_join(w[i].tid, NULL);
        failed += w[i].failed;
    }
    printf("%s registered=%d failed=%d\n", step, nt * n - failed, failed);
}

static void step_fork(const char *step, bool do_exec)
{
    fflush(stdout);
    pid_t pid = fork();

    if (pid < 0)
        die("fork");
    if (pid == 0) {
        if (do_exec) {
            char *argv[] = {(char *)"tshim_host", (char *)"reg_rt:1M:7", NULL};
            execv(self_path, argv);
            _exit(127);
        }
        char *arg = strdup("1M:7");
        step_reg("child reg_rt", "reg_rt", arg);
        exit(0); /* a normal exit: the child's report is written */
    }
    int st;
    waitpid(pid, &st, 0);
    printf("%s child=%d status=%d\n", step, (int)pid, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

extern char **environ;

static void step_execself(const char *step, const char *fn)
{
    char *argv[] = {(char *)"tshim_host", (char *)"reg_rt:1M:7", NULL};
    const char *p = self_path;

    fflush(stdout);
    if (strcmp(fn, "execve") == 0)
        execve(p, argv, environ);
    else if (strcmp(fn, "execv") == 0)
        execv(p, argv);
    else if (strcmp(fn, "execvp") == 0)
        execvp(p, argv);
    else if (strcmp(fn, "execvpe") == 0)
        execvpe(p, argv, environ);
    else if (strcmp(fn, "execl") == 0)
        execl(p, argv[0], argv[1], (char *)NULL);
    else if (strcmp(fn, "execlp") == 0)
        execlp(p, argv[0], argv[1], (char *)NULL);
    else if (strcmp(fn, "execle") == 0)
        execle(p, argv[0], argv[1], (char *)NULL, environ);
    else if (strcmp(fn, "fexecve") == 0) {
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd >= 0)
            fexecve(fd, argv, environ);
    } else {
        errno = EINVAL;
    }
    printf("%s failed errno=%d\n", step, errno);
}

int main(int argc, char **argv)
{
    static char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

    if (n > 0)
        self[n] = '\0';
    self_path = self;
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("pid %d\n", (int)getpid());
    open_device(0);
    for (int i = 1; i < argc; i++) {
        char step[256], *arg;
        snprintf(step, sizeof(step), "%s", argv[i]);
        arg = strchr(step, ':');
        if (arg)
            *arg++ = '\0';
        if (strcmp(step, "-d") == 0 && i + 1 < argc)
            open_device(atoi(argv[++i]));
        else if (strncmp(step, "reg_", 4) == 0 && strcmp(step, "reg_bad") != 0 && arg)
            step_reg(argv[i], step, arg);
        else if (strcmp(step, "reg_bad") == 0)
            step_reg_bad(argv[i]);
        else if (strncmp(step, "rereg", 5) == 0 && arg)
            step_rereg(argv[i], step, arg);
        else if ((strcmp(step, "qp") == 0 || strcmp(step, "rts") == 0) && arg)
            step_qp(argv[i], strcmp(arg, "grh") == 0, strcmp(step, "rts") == 0);
        else if (strcmp(step, "qp_bad") == 0)
            step_qp_bad(argv[i]);
        else if (strcmp(step, "threads") == 0 && arg)
            step_threads(argv[i], arg);
        else if (strcmp(step, "fork") == 0)
            step_fork(argv[i], false);
        else if (strcmp(step, "exec") == 0)
            step_fork(argv[i], true);
        else if (strcmp(step, "execself") == 0 && arg)
            step_execself(argv[i], arg);
        else {
            fprintf(stderr, "tshim_host: unknown step %s\n", argv[i]);
            return 2;
        }
    }
    ibv_dealloc_pd(host.pd);
    ibv_close_device(host.ctx);
    return 0;
}
