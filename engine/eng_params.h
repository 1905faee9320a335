/*
 * The engine's settings, filled from the policy table (pol_params_engine.def,
 * pol_params_cuda.def, log.*) by offset: one row per field names the table
 * row it comes from, so the type, the default and the range are the
 * table's. Base layer. Not installed.
 */
#ifndef TESHIM_ENG_PARAMS_H
#define TESHIM_ENG_PARAMS_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

struct teshim_engine_opts;

/* engine.tcp.same_host_send, in the table's order */
enum eng_same_host {
    ENG_SAME_HOST_AUTO,
    ENG_SAME_HOST_SERIAL,
    ENG_SAME_HOST_PARALLEL,
    ENG_SAME_HOST_IO
};

/* engine.transport, in the table's order */
enum eng_transport_pref { ENG_TP_AUTO, ENG_TP_TCP, ENG_TP_LOCAL, ENG_TP_RDMA };

struct pol_config;

/* engine.local.mode, in the table's order */
enum eng_local_mode { ENG_LOCAL_TARGET, ENG_LOCAL_INITIATOR };

struct eng_params {
    int transport; /* enum eng_transport_pref */
    int io_threads;
    uint64_t slice_bytes;
    int conns_per_peer;
    int same_host_send; /* enum eng_same_host; auto is resolved at create */
    int max_conns;
    bool nodelay;
    int sockbuf;
    uint64_t inline_bytes; /* 0 = no latency path */
    int max_inflight;
    int connect_attempts;
    int connect_backoff_ms;
    int connect_backoff_max_ms;
    int connect_timeout_ms;
    int idle_timeout_ms; /* 0 = never */
    int request_timeout_ms;
    bool local_serve;
    int local_mode;        /* enum eng_local_mode */
    char metadata[512];    /* "p2p" or "etcd://..." */
    char etcd_prefix[256]; /* key prefix of published segments */
    int etcd_ttl_s;
    char auth_key_file[PATH_MAX]; /* "" = no authentication */
    int handshake_timeout_ms;
    int serve_idle_timeout_ms; /* 0 = never */
    int serve_stall_timeout_ms;
    int serve_max_queued;
    uint64_t serve_max_queued_bytes;
    int unregister_timeout_ms;
    int log_level;
    char log_file[PATH_MAX]; /* "" = stderr */
    /* staging of cuda:N memory: this engine's pinned pools (cuda.*) */
    uint64_t cuda_chunk;
    int cuda_buffers;
    int cuda_threads; /* host copy threads of a bounced copy; 0 = auto */
    uint64_t cuda_pinned_max;
    /* engine.rdma.* */
    char rdma_devices[256]; /* "" = every device */
    int rdma_qps;
    uint64_t rdma_slice;
    int rdma_max_wr;
    int rdma_cq_depth;
    int rdma_mtu; /* 0 = auto, else enum ibv_mtu */
    int rdma_timeout;
    int rdma_retry_cnt;
    int rdma_rnr_retry;
    int rdma_gid_index; /* -1 = auto */
    uint64_t rdma_stage_bytes;
    int rdma_gpu_direct; /* ENG_GPU_DIRECT_* */
    /* the effective policy table, for the rdma.* decisions below */
    struct pol_config *pol;
};

/* engine.rdma.gpu_direct, in the order of its table row */
enum { ENG_GPU_DIRECT_AUTO, ENG_GPU_DIRECT_OFF, ENG_GPU_DIRECT_ON };

/* The decisions of the shim's RDMA policy (policy/pol_decide.c), for the
 * engine's own registrations and queue pairs. */
/* Access flags of a registration of len bytes on device dev: access with
 * IBV_ACCESS_RELAXED_ORDERING added where the policy says so (iova2: the
 * library has ibv_reg_mr_iova2, which the flag needs). */
int eng_params_rdma_access(const struct eng_params *p, const char *dev, uint64_t len, int access,
                           bool iova2);
/* Traffic class and service level for a transition with an address
 * vector: *tc and *sl are set to the policy's values where it sets them,
 * else left as they are (is_global: the AV has a GRH). */
void eng_params_rdma_qp(const struct eng_params *p, const char *dev, bool is_global, uint8_t *tc,
                        uint8_t *sl);
/* Free what eng_params_load allocated. */
void eng_params_free(struct eng_params *p);

/*
 * Fill p from the policy (defaults < profile < file < environment; the
 * built-in defaults only with opts->no_policy), then apply the caller's
 * non-zero overrides in opts, each checked against its table row's range.
 * 0, -EINVAL (an override out of range, logged) or -ENOMEM.
 */
int eng_params_load(const struct teshim_engine_opts *opts, struct eng_params *p);

#endif
