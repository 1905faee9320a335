/* Devices, contexts and the query verbs of the emulated libibverbs.
 *
 * VERBS_EMU_DEVICES (1..8, default 1) devices named emu0, emu1, ... each
 * with one active port. VERBS_EMU_PERSONALITY is "ib" or "roce", or a
 * comma-separated list giving each device its own (the last one repeats).
 * IB: LID index+1, one GID (fe80::GUID), no GRH needed.
 * RoCE: link layer Ethernet, LID 0, four GIDs like a RoCE NIC with an IPv4
 * address: [0] fe80::GUID RoCE v1, [1] the same as RoCE v2, [2] and [3]
 * ::ffff:127.0.0.(index+1) as RoCE v1 and v2; addresses must be global. */
#include "emu.h"
#include "emu_registry.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

/* rdma-core's private prototypes (driver.h is not installed) */
int ibv_read_sysfs_file(const char *dir, const char *file, char *buf, size_t size);
const char *ibv_get_sysfs_path(void);
int ibv_dontfork_range(void *base, size_t size);
int ibv_dofork_range(void *base, size_t size);
int ibv_query_gid_type(struct ibv_context *context, uint8_t port_num, unsigned int index,
                       int *type);

/* read by providers (IBVERBS_PRIVATE_<N>); no provider ever runs here */
bool verbs_allow_disassociate_destroy;

#define EMU_SYSFS_ROOT "/sys/class/infiniband/"
#define EMU_GUID_BASE 0x7e5e000000000000ull

static struct emu_device emu_devices[EMU_MAX_DEVICES];
static int emu_ndevices;
static pthread_once_t emu_devices_once = PTHREAD_ONCE_INIT;

static void emu_devices_init(void)
{
    const char *env = getenv("VERBS_EMU_DEVICES");
    const char *pers = getenv("VERBS_EMU_PERSONALITY");
    enum emu_personality cur = EMU_PERS_IB;
    int n = 1;

    /* process_vm_readv/writev from the peers needs ptrace permission under
     * Yama ptrace_scope=1; this process opts in to being accessed */
    prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
    if (env != NULL && env[0] != '\0') {
        n = atoi(env);
        if (n < 0 || n > EMU_MAX_DEVICES) {
            emu_log("VERBS_EMU_DEVICES=%s out of range 0..%d, using 1", env, EMU_MAX_DEVICES);
            n = 1;
        }
    }
    for (int i = 0; i < n; i++) {
        struct emu_device *d = &emu_devices[i];

        if (pers != NULL && *pers != '\0') {
            if (strncmp(pers, "roce", 4) == 0)
                cur = EMU_PERS_ROCE;
            else if (strncmp(pers, "ib", 2) == 0)
                cur = EMU_PERS_IB;
            else
                emu_log("unknown personality in VERBS_EMU_PERSONALITY: %s", pers);
            pers = strchr(pers, ',');
            if (pers != NULL)
                pers++;
        }
        d->index = i;
        d->pers = cur;
        d->guid = EMU_GUID_BASE + (uint64_t)i + 1;
        d->lid = cur == EMU_PERS_IB ? (uint16_t)(i + 1) : 0;
        d->dev.node_type = IBV_NODE_CA;
        d->dev.transport_type = IBV_TRANSPORT_IB;
        snprintf(d->dev.name, sizeof(d->dev.name), "emu%d", i);
        snprintf(d->dev.dev_name, sizeof(d->dev.dev_name), "uverbs%d", i);
        snprintf(d->dev.dev_path, sizeof(d->dev.dev_path), "/sys/class/infiniband_verbs/uverbs%d",
                 i);
        snprintf(d->dev.ibdev_path, sizeof(d->dev.ibdev_path), EMU_SYSFS_ROOT "emu%d", i);
    }
    emu_ndevices = n;
    emu_sysfs_publish(n);
}

static void emu_devices_ready(void)
{
    pthread_once(&emu_devices_once, emu_devices_init);
}

struct emu_device *emu_device_of(struct ibv_context *ctx)
{
    return ((struct emu_context *)verbs_get_ctx(ctx))->edev;
}

struct emu_device *emu_device_by_index(int index)
{
    emu_devices_ready();
    if (index < 0 || index >= emu_ndevices)
        return NULL;
    return &emu_devices[index];
}

struct ibv_device **ibv_get_device_list(int *num_devices)
{
    struct ibv_device **list;

    emu_devices_ready();
    list = calloc((size_t)emu_ndevices + 1, sizeof(*list));
    if (list == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    for (int i = 0; i < emu_ndevices; i++)
        list[i] = &emu_devices[i].dev;
    if (num_devices != NULL)
        *num_devices = emu_ndevices;
    return list;
}

void ibv_free_device_list(struct ibv_device **list)
{
    free(list);
}

const char *ibv_get_device_name(struct ibv_device *device)
{
    return device->name;
}

__be64 ibv_get_device_guid(struct ibv_device *device)
{
    return htobe64(((struct emu_device *)device)->guid);
}

int ibv_get_device_index(struct ibv_device *device)
{
    return ((struct emu_device *)device)->index;
}

static int emu_query_device(struct ibv_context *ctx, struct ibv_device_attr *a)
{
    struct emu_device *d = emu_device_of(ctx);

    memset(a, 0, sizeof(*a));
    snprintf(a->fw_ver, sizeof(a->fw_ver), "%s", "1.0.0");
    a->node_guid = htobe64(d->guid);
    a->sys_image_guid = htobe64(d->guid);
    a->max_mr_size = 1ull << 40;
    a->page_size_cap = 0xfffff000;
    a->vendor_id = 0;
    a->vendor_part_id = 0;
    a->hw_ver = 0;
    a->max_qp = 4096;
    a->max_qp_wr = EMU_MAX_QP_WR;
    a->device_cap_flags = IBV_DEVICE_RC_RNR_NAK_GEN | IBV_DEVICE_PORT_ACTIVE_EVENT |
                          IBV_DEVICE_SYS_IMAGE_GUID | IBV_DEVICE_CHANGE_PHY_PORT |
                          IBV_DEVICE_N_NOTIFY_CQ;
    a->max_sge = EMU_MAX_SGE;
    a->max_sge_rd = EMU_MAX_SGE;
    a->max_cq = 4096;
    a->max_cqe = EMU_MAX_CQE;
    a->max_mr = 8192;
    a->max_pd = 4096;
    a->max_qp_rd_atom = EMU_MAX_RD_ATOM;
    a->max_res_rd_atom = EMU_MAX_RD_ATOM * 4096;
    a->max_qp_init_rd_atom = EMU_MAX_RD_ATOM;
    a->atomic_cap = IBV_ATOMIC_NONE;
    a->max_pkeys = 1;
    a->local_ca_ack_delay = 16;
    a->phys_port_cnt = 1;
    return 0;
}

int ibv_query_device(struct ibv_context *ctx, struct ibv_device_attr *attr)
{
    return emu_query_device(ctx, attr);
}

int emu_port_attr(struct emu_device *d, uint8_t port, struct ibv_port_attr *a)
{
    if (port != 1)
        return EINVAL;
    memset(a, 0, sizeof(*a));
    a->state = IBV_PORT_ACTIVE;
    a->max_mtu = IBV_MTU_4096;
    a->active_mtu = IBV_MTU_4096;
    a->gid_tbl_len = emu_gid_count(d);
    a->max_msg_sz = 1u << 31;
    a->pkey_tbl_len = 1;
    a->active_width = 2;  /* 4X */
    a->active_speed = 32; /* EDR */
    a->phys_state = 5;    /* LinkUp */
    if (d->pers == EMU_PERS_IB) {
        a->port_cap_flags = IBV_PORT_CM_SUP | IBV_PORT_SYS_IMAGE_GUID_SUP;
        a->lid = d->lid;
        a->sm_lid = 1;
        a->max_vl_num = 1;
        a->subnet_timeout = 18;
        a->link_layer = IBV_LINK_LAYER_INFINIBAND;
    } else {
        a->port_cap_flags = IBV_PORT_CM_SUP;
        a->link_layer = IBV_LINK_LAYER_ETHERNET;
    }
    return 0;
}

static int emu_query_port_op(struct ibv_context *ctx, uint8_t port, struct ibv_port_attr *attr,
                             size_t len)
{
    struct ibv_port_attr full;
    int rc = emu_port_attr(emu_device_of(ctx), port, &full);

    if (rc == 0)
        memcpy(attr, &full, len < sizeof(full) ? len : sizeof(full));
    return rc;
}

/* the exported symbol takes the older, shorter struct (everything up to
 * port_cap_flags2) */
int(ibv_query_port)(struct ibv_context *ctx, uint8_t port, struct _compat_ibv_port_attr *attr)
{
    return emu_query_port_op(ctx, port, (struct ibv_port_attr *)attr,
                             offsetof(struct ibv_port_attr, port_cap_flags2));
}

int emu_gid_count(struct emu_device *d)
{
    return d->pers == EMU_PERS_IB ? 1 : EMU_ROCE_GIDS;
}

int emu_gid(struct emu_device *d, int index, union ibv_gid *gid, int *type)
{
    uint64_t guid = htobe64(d->guid);

    if (index < 0 || index >= emu_gid_count(d))
        return EINVAL;
    memset(gid, 0, sizeof(*gid));
    if (index < 2) {
        gid->raw[0] = 0xfe;
        gid->raw[1] = 0x80;
        memcpy(&gid->raw[8], &guid, 8);
    } else {
        gid->raw[10] = 0xff;
        gid->raw[11] = 0xff;
        gid->raw[12] = 127;
        gid->raw[15] = (uint8_t)(d->index + 1);
    }
    if (d->pers == EMU_PERS_IB)
        *type = IBV_GID_TYPE_IB;
    else
        *type = (index % 2 == 0) ? IBV_GID_TYPE_ROCE_V1 : IBV_GID_TYPE_ROCE_V2;
    return 0;
}

int ibv_query_gid(struct ibv_context *ctx, uint8_t port, int index, union ibv_gid *gid)
{
    int type;

    if (port != 1 || emu_gid(emu_device_of(ctx), index, gid, &type) != 0) {
        errno = EINVAL;
        return -1;
    }
    return 0;
}

int ibv_query_gid_type(struct ibv_context *ctx, uint8_t port, unsigned int index, int *type)
{
    union ibv_gid gid;
    int t;

    if (port != 1 || emu_gid(emu_device_of(ctx), (int)index, &gid, &t) != 0) {
        errno = EINVAL;
        return -1;
    }
    /* enum ibv_gid_type_sysfs: 0 = IB/RoCE v1, 1 = RoCE v2 */
    *type = t == IBV_GID_TYPE_ROCE_V2 ? 1 : 0;
    return 0;
}

static void emu_gid_entry(struct emu_device *d, uint32_t index, struct ibv_gid_entry *e)
{
    int type = 0;

    memset(e, 0, sizeof(*e));
    emu_gid(d, (int)index, &e->gid, &type);
    e->gid_index = index;
    e->port_num = 1;
    e->gid_type = (uint32_t)type;
    e->ndev_ifindex = d->pers == EMU_PERS_ROCE ? 1 : 0; /* lo */
}

int _ibv_query_gid_ex(struct ibv_context *ctx, uint32_t port, uint32_t index,
                      struct ibv_gid_entry *entry, uint32_t flags, size_t entry_size)
{
    struct emu_device *d = emu_device_of(ctx);
    struct ibv_gid_entry e;

    if (flags != 0 || port != 1)
        return EINVAL;
    if (index >= (uint32_t)emu_gid_count(d))
        return ENODATA;
    emu_gid_entry(d, index, &e);
    memcpy(entry, &e, entry_size < sizeof(e) ? entry_size : sizeof(e));
    return 0;
}

ssize_t _ibv_query_gid_table(struct ibv_context *ctx, struct ibv_gid_entry *entries,
                             size_t max_entries, uint32_t flags, size_t entry_size)
{
    struct emu_device *d = emu_device_of(ctx);
    size_t n = (size_t)emu_gid_count(d);

    if (flags != 0 || entry_size < sizeof(struct ibv_gid_entry))
        return -EINVAL;
    if (max_entries < n)
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        emu_gid_entry(d, (uint32_t)i, (struct ibv_gid_entry *)((char *)entries + i * entry_size));
    return (ssize_t)n;
}

int ibv_query_pkey(struct ibv_context *ctx, uint8_t port, int index, __be16 *pkey)
{
    if (port != 1 || index != 0) {
        errno = EINVAL;
        return -1;
    }
    *pkey = htobe16(0xffff);
    return 0;
}

int ibv_get_pkey_index(struct ibv_context *ctx, uint8_t port, __be16 pkey)
{
    if (port != 1 || (be16toh(pkey) & 0x7fff) != 0x7fff) {
        errno = EINVAL;
        return -1;
    }
    return 0;
}

const char *ibv_get_sysfs_path(void)
{
    return "/sys";
}

/* the attributes ibv_devinfo and friends read from sysfs */
static int emu_sysfs_value(struct emu_device *d, const char *file, char *out, size_t size)
{
    struct ibv_port_attr pa;
    union ibv_gid gid;
    unsigned int idx;
    int type;

    emu_port_attr(d, 1, &pa);
    if (strcmp(file, "board_id") == 0)
        return snprintf(out, size, "TESHIM_EMU_%s\n", d->pers == EMU_PERS_IB ? "IB" : "ROCE");
    if (strcmp(file, "fw_ver") == 0)
        return snprintf(out, size, "1.0.0\n");
    if (strcmp(file, "hca_type") == 0 || strcmp(file, "hw_rev") == 0)
        return snprintf(out, size, "0\n");
    if (strcmp(file, "node_type") == 0)
        return snprintf(out, size, "1: CA\n");
    if (strcmp(file, "node_guid") == 0 || strcmp(file, "sys_image_guid") == 0)
        return snprintf(out, size, "%04x:%04x:%04x:%04x\n", (unsigned)(d->guid >> 48) & 0xffff,
                        (unsigned)(d->guid >> 32) & 0xffff, (unsigned)(d->guid >> 16) & 0xffff,
                        (unsigned)d->guid & 0xffff);
    if (strcmp(file, "ports/1/link_layer") == 0)
        return snprintf(out, size, "%s\n", d->pers == EMU_PERS_IB ? "InfiniBand" : "Ethernet");
    if (strcmp(file, "ports/1/state") == 0)
        return snprintf(out, size, "4: ACTIVE\n");
    if (strcmp(file, "ports/1/phys_state") == 0)
        return snprintf(out, size, "5: LinkUp\n");
    if (strcmp(file, "ports/1/lid") == 0)
        return snprintf(out, size, "0x%x\n", pa.lid);
    if (strcmp(file, "ports/1/rate") == 0)
        return snprintf(out, size, "100 Gb/sec (4X EDR)\n");
    if (sscanf(file, "ports/1/gids/%u", &idx) == 1 && emu_gid(d, (int)idx, &gid, &type) == 0) {
        int n = 0;
        for (int i = 0; i < 16; i += 2)
            n += snprintf(out + n, size > (size_t)n ? size - (size_t)n : 0, "%02x%02x%s",
                          gid.raw[i], gid.raw[i + 1], i < 14 ? ":" : "\n");
        return n;
    }
    if (sscanf(file, "ports/1/gid_attrs/types/%u", &idx) == 1 &&
        emu_gid(d, (int)idx, &gid, &type) == 0 && d->pers == EMU_PERS_ROCE)
        return snprintf(out, size, "%s\n", type == IBV_GID_TYPE_ROCE_V2 ? "RoCE v2" : "IB/RoCE v1");
    if (sscanf(file, "ports/1/gid_attrs/ndevs/%u", &idx) == 1 &&
        emu_gid(d, (int)idx, &gid, &type) == 0 && d->pers == EMU_PERS_ROCE)
        return snprintf(out, size, "lo\n");
    return -1;
}

int ibv_read_sysfs_file(const char *dir, const char *file, char *buf, size_t size)
{
    char path[512];
    ssize_t n;
    int fd;

    emu_devices_ready();
    for (int i = 0; i < emu_ndevices; i++) {
        struct emu_device *d = &emu_devices[i];
        char tmp[256];
        int len;

        if (strcmp(dir, d->dev.ibdev_path) != 0)
            continue;
        len = emu_sysfs_value(d, file, tmp, sizeof(tmp));
        if (len < 0 || size == 0) {
            errno = ENOENT;
            return -1;
        }
        snprintf(buf, size, "%s", tmp);
        len = (int)strlen(buf);
        if (len > 0 && buf[len - 1] == '\n')
            buf[--len] = '\0';
        return len;
    }
    /* anything else is read for real, like rdma-core does */
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    n = read(fd, buf, size);
    close(fd);
    if (n < 0)
        return -1;
    if (n > 0 && buf[n - 1] == '\n')
        buf[--n] = '\0';
    else if ((size_t)n < size)
        buf[n] = '\0';
    return (int)n;
}

static struct ibv_context *emu_open(struct emu_device *d)
{
    struct emu_context *ec = calloc(1, sizeof(*ec));
    struct ibv_context *ctx;
    int fds[2];

    if (ec == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    ctx = &ec->vctx.context;
    ec->edev = d;
    ec->vctx.sz = sizeof(ec->vctx);
    ec->vctx.query_port = emu_query_port_op;
    ec->vctx.create_qp_ex = emu_create_qp_ex;
    ctx->abi_compat = __VERBS_ABI_IS_EXTENDED;
    ctx->device = &d->dev;
    ctx->ops._compat_query_device = emu_query_device;
    ctx->ops.poll_cq = emu_poll_cq;
    ctx->ops.req_notify_cq = emu_req_notify_cq;
    ctx->ops.post_send = emu_post_send;
    ctx->ops.post_recv = emu_post_recv;
    ctx->num_comp_vectors = 1;
    /* no asynchronous events are generated: async_fd is a pipe that never
     * becomes readable until the context is closed */
    if (pipe2(fds, O_CLOEXEC) != 0) {
        free(ec);
        return NULL;
    }
    ctx->async_fd = fds[0];
    ec->async_wfd = fds[1];
    ctx->cmd_fd = -1;
    pthread_mutex_init(&ctx->mutex, NULL);
    return ctx;
}

struct ibv_context *ibv_open_device(struct ibv_device *device)
{
    struct emu_device *d = (struct emu_device *)device;
    struct ibv_context *ctx;
    struct emu_rec r;
    int rc;

    emu_devices_ready();
    if (d < emu_devices || d >= emu_devices + emu_ndevices) {
        errno = ENODEV;
        return NULL;
    }
    rc = emu_reg_open();
    if (rc != 0) {
        emu_log("cannot open the shared registry: %s", strerror(-rc));
        errno = -rc;
        return NULL;
    }
    ctx = emu_open(d);
    emu_rec_begin(&r, "open_device");
    emu_rec_str(&r, "dev", device->name);
    emu_rec_str(&r, "personality", d->pers == EMU_PERS_IB ? "ib" : "roce");
    emu_rec_i64(&r, "ret", ctx == NULL ? errno : 0);
    emu_rec_end(&r);
    return ctx;
}

int ibv_close_device(struct ibv_context *ctx)
{
    struct emu_context *ec = (struct emu_context *)verbs_get_ctx(ctx);
    struct emu_rec r;

    emu_rec_begin(&r, "close_device");
    emu_rec_str(&r, "dev", ctx->device->name);
    emu_rec_end(&r);
    close(ec->async_wfd); /* wakes a thread blocked in ibv_get_async_event */
    close(ctx->async_fd);
    free(ec);
    return 0;
}

int ibv_get_async_event(struct ibv_context *ctx, struct ibv_async_event *event)
{
    char c;

    /* no asynchronous events are generated: like the real call this blocks
     * on async_fd (or fails with EAGAIN if the program made it
     * non-blocking) and returns -1 once the context is closed */
    if (read(ctx->async_fd, &c, 1) == 0)
        errno = ENODEV;
    return -1;
}

void ibv_ack_async_event(struct ibv_async_event *event)
{
}

static int emu_fork_state = IBV_FORK_DISABLED;

int ibv_fork_init(void)
{
    emu_fork_state = IBV_FORK_ENABLED;
    return 0;
}

enum ibv_fork_status ibv_is_fork_initialized(void)
{
    return (enum ibv_fork_status)emu_fork_state;
}

int ibv_dontfork_range(void *base, size_t size)
{
    return 0;
}

int ibv_dofork_range(void *base, size_t size)
{
    return 0;
}
