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
enum eng_same_host { ENG_SAME_HOST_AUTO, ENG_SAME_HOST_SERIAL, ENG_SAME_HOST_PARALLEL };

/* engine.transport, in the table's order */
enum eng_transport_pref { ENG_TP_AUTO, ENG_TP_TCP, ENG_TP_LOCAL };

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
};

/*
 * Fill p from the policy (defaults < profile < file < environment; the
 * built-in defaults only with opts->no_policy), then apply the caller's
 * non-zero overrides in opts, each checked against its table row's range.
 * 0, -EINVAL (an override out of range, logged) or -ENOMEM.
 */
int eng_params_load(const struct teshim_engine_opts *opts, struct eng_params *p);

#endif
