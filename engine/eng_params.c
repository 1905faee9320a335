/* The engine's settings from the policy table, by offset. */
#include "eng_params.h"
#include "eng_base.h"
#include "pol.h"
#include "pol_cuda.h"
#include "teshim/engine.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

/* A field of struct eng_params and the table row it is read from. */
struct param_row {
    enum pol_param id;
    size_t off, size;
};

#define ROW(field, row)                                                                            \
    {                                                                                              \
        POL_##row, offsetof(struct eng_params, field), sizeof(((struct eng_params *)0)->field)     \
    }

static const struct param_row rows[] = {
    ROW(transport, ENGINE_TRANSPORT),
    ROW(io_threads, ENGINE_TCP_IO_THREADS),
    ROW(slice_bytes, ENGINE_TCP_SLICE_BYTES),
    ROW(conns_per_peer, ENGINE_TCP_CONNS_PER_PEER),
    ROW(same_host_send, ENGINE_TCP_SAME_HOST_SEND),
    ROW(max_conns, ENGINE_TCP_MAX_CONNS),
    ROW(nodelay, ENGINE_TCP_NODELAY),
    ROW(sockbuf, ENGINE_TCP_SOCKBUF_BYTES),
    ROW(inline_bytes, ENGINE_TCP_INLINE_BYTES),
    ROW(max_inflight, ENGINE_MAX_INFLIGHT),
    ROW(connect_attempts, ENGINE_CONNECT_ATTEMPTS),
    ROW(connect_backoff_ms, ENGINE_CONNECT_BACKOFF_MS),
    ROW(connect_backoff_max_ms, ENGINE_CONNECT_BACKOFF_MAX_MS),
    ROW(connect_timeout_ms, ENGINE_CONNECT_TIMEOUT_MS),
    ROW(idle_timeout_ms, ENGINE_IDLE_TIMEOUT_MS),
    ROW(request_timeout_ms, ENGINE_REQUEST_TIMEOUT_MS),
    ROW(local_serve, ENGINE_LOCAL_SERVE),
    ROW(local_mode, ENGINE_LOCAL_MODE),
    ROW(metadata, ENGINE_METADATA),
    ROW(etcd_prefix, ENGINE_ETCD_PREFIX),
    ROW(etcd_ttl_s, ENGINE_ETCD_TTL_S),
    ROW(auth_key_file, ENGINE_AUTH_KEY_FILE),
    ROW(handshake_timeout_ms, ENGINE_HANDSHAKE_TIMEOUT_MS),
    ROW(serve_idle_timeout_ms, ENGINE_SERVE_IDLE_TIMEOUT_MS),
    ROW(serve_stall_timeout_ms, ENGINE_SERVE_STALL_TIMEOUT_MS),
    ROW(serve_max_queued, ENGINE_SERVE_MAX_QUEUED),
    ROW(serve_max_queued_bytes, ENGINE_SERVE_MAX_QUEUED_BYTES),
    ROW(unregister_timeout_ms, ENGINE_UNREGISTER_TIMEOUT_MS),
    ROW(log_level, LOG_LEVEL),
    ROW(log_file, LOG_FILE),
    ROW(cuda_chunk, CUDA_BOUNCE_CHUNK_BYTES),
    ROW(cuda_threads, CUDA_COPY_THREADS),
    ROW(cuda_pinned_max, CUDA_PINNED_MAX_BYTES),
    ROW(rdma_devices, ENGINE_RDMA_DEVICES),
    ROW(rdma_qps, ENGINE_RDMA_QPS_PER_PEER),
    ROW(rdma_slice, ENGINE_RDMA_SLICE_BYTES),
    ROW(rdma_max_wr, ENGINE_RDMA_MAX_WR),
    ROW(rdma_cq_depth, ENGINE_RDMA_CQ_DEPTH),
    ROW(rdma_mtu, ENGINE_RDMA_MTU),
    ROW(rdma_timeout, ENGINE_RDMA_TIMEOUT),
    ROW(rdma_retry_cnt, ENGINE_RDMA_RETRY_CNT),
    ROW(rdma_rnr_retry, ENGINE_RDMA_RNR_RETRY),
    ROW(rdma_gid_index, ENGINE_RDMA_GID_INDEX),
    ROW(rdma_stage_bytes, ENGINE_RDMA_STAGE_BYTES),
    ROW(rdma_gpu_direct, ENGINE_RDMA_GPU_DIRECT),
};

/* A field of struct teshim_engine_opts that overrides a table row (0 = no). */
struct override_row {
    size_t opt_off, opt_size;
    enum pol_param id;
};

#define OVR(field, row)                                                                            \
    {                                                                                              \
        offsetof(struct teshim_engine_opts, field),                                                \
            sizeof(((struct teshim_engine_opts *)0)->field), POL_##row                             \
    }

static const struct override_row overrides[] = {
    OVR(io_threads, ENGINE_TCP_IO_THREADS),
    OVR(slice_bytes, ENGINE_TCP_SLICE_BYTES),
    OVR(conns_per_peer, ENGINE_TCP_CONNS_PER_PEER),
    OVR(max_conns, ENGINE_TCP_MAX_CONNS),
    OVR(max_inflight, ENGINE_MAX_INFLIGHT),
    OVR(connect_attempts, ENGINE_CONNECT_ATTEMPTS),
    OVR(connect_backoff_ms, ENGINE_CONNECT_BACKOFF_MS),
    OVR(connect_timeout_ms, ENGINE_CONNECT_TIMEOUT_MS),
    OVR(idle_timeout_ms, ENGINE_IDLE_TIMEOUT_MS),
    OVR(request_timeout_ms, ENGINE_REQUEST_TIMEOUT_MS),
};

static const struct param_row *row_of(enum pol_param id)
{
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        if (rows[i].id == id)
            return &rows[i];
    return NULL;
}

/* Store v into the field of row r (int, uint64_t or bool by its size). */
static void row_store(struct eng_params *p, const struct param_row *r, int64_t v)
{
    char *f = (char *)p + r->off;

    if (r->size == sizeof(bool))
        *(bool *)(void *)f = v != 0;
    else if (r->size == sizeof(int))
        *(int *)(void *)f = (int)v;
    else
        *(uint64_t *)(void *)f = (uint64_t)v;
}

static void pol_diag(void *arg, enum pol_log_level level, const char *msg)
{
    eng_log(NULL, level <= POL_LOG_WARN ? ENG_LOG_WARN : ENG_LOG_INFO, "config: %s", msg);
}

/* Online CPUs, at least 1. */
static int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > INT_MAX ? INT_MAX : (int)n;
}

/* CPUs this process may run on (its affinity mask, as a cpuset or
 * taskset leaves it), else the online ones. */
static int usable_cpus(void)
{
    cpu_set_t set;

    if (!sched_getaffinity(0, sizeof(set), &set) && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    return online_cpus();
}

static pthread_mutex_t pol_lock = PTHREAD_MUTEX_INITIALIZER;

/* Every row from the effective configuration. */
static int fill_from_policy(const struct teshim_engine_opts *o, struct eng_params *p)
{
    struct pol_config *cfg = calloc(1, sizeof(*cfg));
    struct pol_sources src = {.environ = o->no_policy ? NULL : environ,
                              .program = program_invocation_short_name,
                              .etc_path = o->no_policy ? "/nonexistent" : NULL,
                              .diag = pol_diag};

    if (!cfg) {
        eng_log(NULL, ENG_LOG_ERROR, "engine_create: no memory for the policy table");
        return -ENOMEM;
    }
    pthread_mutex_lock(&pol_lock); /* pol_load is not reentrant */
    pol_load(cfg, &src);
    pthread_mutex_unlock(&pol_lock);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const struct param_row *r = &rows[i];
        if (pol_params[r->id].type == POL_T_STR) {
            const char *s = pol_str(cfg, r->id);
            snprintf((char *)p + r->off, r->size, "%s", s ? s : "");
        } else {
            row_store(p, r, pol_int(cfg, r->id));
        }
    }
    /* derived: fewer buffers when that many chunks exceed the pinned cap */
    p->cuda_buffers = (int)pol_cuda_buffers(cfg);
    p->pol = cfg; /* the rdma.* decisions */
    return 0;
}

/* The caller's non-zero overrides, each within its row's range. */
static int apply_overrides(const struct teshim_engine_opts *o, struct eng_params *p)
{
    for (size_t i = 0; i < sizeof(overrides) / sizeof(overrides[0]); i++) {
        const struct override_row *ov = &overrides[i];
        const struct pol_param_info *info = &pol_params[ov->id];
        const char *f = (const char *)o + ov->opt_off;
        int64_t v;

        if (ov->opt_size == sizeof(int)) {
            v = *(const int *)(const void *)f;
        } else {
            uint64_t u = *(const uint64_t *)(const void *)f;
            v = u > INT64_MAX ? -1 : (int64_t)u;
        }
        if (!v)
            continue; /* 0: the policy's value */
        if (ov->id == POL_ENGINE_IDLE_TIMEOUT_MS && v < 0)
            v = 0; /* -1: never */
        else if (v < info->min || v > info->max) {
            eng_log(NULL, ENG_LOG_ERROR, "engine_create: %s = %lld out of range [%lld, %lld]",
                    info->key, (long long)v, (long long)info->min, (long long)info->max);
            return -EINVAL;
        }
        row_store(p, row_of(ov->id), v);
    }
    return 0;
}

int eng_params_load(const struct teshim_engine_opts *o, struct eng_params *p)
{
    int ret = fill_from_policy(o, p);

    if (!ret)
        ret = apply_overrides(o, p);
    if (!ret && (o->transport > TESHIM_TRANSPORT_RDMA || (int)o->transport < 0)) {
        eng_log(NULL, ENG_LOG_ERROR, "engine_create: unknown transport %d", (int)o->transport);
        ret = -EINVAL;
    }
    if (ret) {
        eng_params_free(p);
        return ret;
    }
    if (o->transport)
        p->transport = (int)o->transport - 1;
    if (o->same_host_send > TESHIM_SAME_HOST_IO || (int)o->same_host_send < 0) {
        eng_log(NULL, ENG_LOG_ERROR, "engine_create: unknown same_host_send %d",
                (int)o->same_host_send);
        eng_params_free(p);
        return -EINVAL;
    }
    if (o->same_host_send)
        p->same_host_send = (int)o->same_host_send - 1;
    if (o->local_mode > TESHIM_LOCAL_MODE_INITIATOR || (int)o->local_mode < 0) {
        eng_log(NULL, ENG_LOG_ERROR, "engine_create: unknown local_mode %d", (int)o->local_mode);
        return -EINVAL;
    }
    if (o->local_mode)
        p->local_mode = (int)o->local_mode - 1;
    if (p->log_level > ENG_LOG_DEBUG)
        p->log_level = ENG_LOG_DEBUG;
    if (!p->io_threads) {
        int n = online_cpus();
        p->io_threads = n > 64 ? 64 : n;
    }
    if (p->same_host_send == ENG_SAME_HOST_AUTO)
        p->same_host_send = usable_cpus() <= 4 ? ENG_SAME_HOST_SERIAL : ENG_SAME_HOST_PARALLEL;
    return 0;
}

void eng_params_free(struct eng_params *p)
{
    free(p->pol);
    p->pol = NULL;
}

int eng_params_rdma_access(const struct eng_params *p, const char *dev, uint64_t len, int access,
                           bool iova2)
{
    const struct pol_config *cfg = p->pol;
    struct pol_rdma_mr mr = {
        .device = dev, .length = len, .access = access, .iova2_available = iova2};
    int out = access;

    if (!cfg)
        return access;
    /* auto: only where the device's PCIe function has relaxed ordering on */
    if (pol_int(cfg, POL_RDMA_RELAXED_ORDERING) == POL_RO_AUTO)
        mr.dev_ro_capable = pol_pcie_relaxed_ordering(pol_str(cfg, POL_RDMA_SYSFS_ROOT), dev) == 1;
    pol_rdma_mr_access(cfg, &mr, &out);
    return out;
}

void eng_params_rdma_qp(const struct eng_params *p, const char *dev, bool is_global, uint8_t *tc,
                        uint8_t *sl)
{
    /* IBV_QP_AV: the transition carries an address vector */
    struct pol_rdma_qp qp = {.device = dev,
                             .attr_mask = 1 << 7,
                             .is_global = is_global,
                             .traffic_class = *tc,
                             .sl = *sl};
    struct pol_rdma_qp_dec dec;

    if (!p->pol)
        return;
    pol_rdma_qp_attrs(p->pol, &qp, &dec);
    if (dec.tc == POL_INJECT)
        *tc = dec.traffic_class;
    if (dec.sl == POL_INJECT)
        *sl = dec.service_level;
}
