/* Enum-to-string and rate conversions, answered like rdma-core does. */
#include "emu.h"

const char *ibv_node_type_str(enum ibv_node_type t)
{
    static const char *const names[] = {
        [IBV_NODE_CA] = "InfiniBand channel adapter",
        [IBV_NODE_SWITCH] = "InfiniBand switch",
        [IBV_NODE_ROUTER] = "InfiniBand router",
        [IBV_NODE_RNIC] = "iWARP NIC",
        [IBV_NODE_USNIC] = "usNIC",
        [IBV_NODE_USNIC_UDP] = "usNIC UDP",
        [IBV_NODE_UNSPECIFIED] = "unspecified",
    };

    if (t < IBV_NODE_CA || t > IBV_NODE_UNSPECIFIED || names[t] == NULL)
        return "unknown";
    return names[t];
}

const char *ibv_port_state_str(enum ibv_port_state s)
{
    static const char *const names[] = {
        [IBV_PORT_NOP] = "PORT_NOP",       [IBV_PORT_DOWN] = "PORT_DOWN",
        [IBV_PORT_INIT] = "PORT_INIT",     [IBV_PORT_ARMED] = "PORT_ARMED",
        [IBV_PORT_ACTIVE] = "PORT_ACTIVE", [IBV_PORT_ACTIVE_DEFER] = "PORT_ACTIVE_DEFER",
    };

    if (s < IBV_PORT_NOP || s > IBV_PORT_ACTIVE_DEFER)
        return "unknown";
    return names[s];
}

const char *ibv_event_type_str(enum ibv_event_type e)
{
    static const char *const names[] = {
        [IBV_EVENT_CQ_ERR] = "CQ error",
        [IBV_EVENT_QP_FATAL] = "local work queue catastrophic error",
        [IBV_EVENT_QP_REQ_ERR] = "invalid request local work queue error",
        [IBV_EVENT_QP_ACCESS_ERR] = "local access violation work queue error",
        [IBV_EVENT_COMM_EST] = "communication established",
        [IBV_EVENT_SQ_DRAINED] = "send queue drained",
        [IBV_EVENT_PATH_MIG] = "path migrated",
        [IBV_EVENT_PATH_MIG_ERR] = "path migration request error",
        [IBV_EVENT_DEVICE_FATAL] = "local catastrophic error",
        [IBV_EVENT_PORT_ACTIVE] = "port active",
        [IBV_EVENT_PORT_ERR] = "port error",
        [IBV_EVENT_LID_CHANGE] = "LID change",
        [IBV_EVENT_PKEY_CHANGE] = "P_Key change",
        [IBV_EVENT_SM_CHANGE] = "SM change",
        [IBV_EVENT_SRQ_ERR] = "SRQ catastrophic error",
        [IBV_EVENT_SRQ_LIMIT_REACHED] = "SRQ limit reached",
        [IBV_EVENT_QP_LAST_WQE_REACHED] = "last WQE reached",
        [IBV_EVENT_CLIENT_REREGISTER] = "client reregistration",
        [IBV_EVENT_GID_CHANGE] = "GID table change",
        [IBV_EVENT_WQ_FATAL] = "WQ fatal",
    };

    if (e < IBV_EVENT_CQ_ERR || e > IBV_EVENT_WQ_FATAL || names[e] == NULL)
        return "unknown";
    return names[e];
}

const char *ibv_wc_status_str(enum ibv_wc_status s)
{
    static const char *const names[] = {
        [IBV_WC_SUCCESS] = "success",
        [IBV_WC_LOC_LEN_ERR] = "local length error",
        [IBV_WC_LOC_QP_OP_ERR] = "local QP operation error",
        [IBV_WC_LOC_EEC_OP_ERR] = "local EE context operation error",
        [IBV_WC_LOC_PROT_ERR] = "local protection error",
        [IBV_WC_WR_FLUSH_ERR] = "Work Request Flushed Error",
        [IBV_WC_MW_BIND_ERR] = "memory management operation error",
        [IBV_WC_BAD_RESP_ERR] = "bad response error",
        [IBV_WC_LOC_ACCESS_ERR] = "local access error",
        [IBV_WC_REM_INV_REQ_ERR] = "remote invalid request error",
        [IBV_WC_REM_ACCESS_ERR] = "remote access error",
        [IBV_WC_REM_OP_ERR] = "remote operation error",
        [IBV_WC_RETRY_EXC_ERR] = "transport retry counter exceeded",
        [IBV_WC_RNR_RETRY_EXC_ERR] = "RNR retry counter exceeded",
        [IBV_WC_LOC_RDD_VIOL_ERR] = "local RDD violation error",
        [IBV_WC_REM_INV_RD_REQ_ERR] = "remote invalid RD request",
        [IBV_WC_REM_ABORT_ERR] = "aborted error",
        [IBV_WC_INV_EECN_ERR] = "invalid EE context number",
        [IBV_WC_INV_EEC_STATE_ERR] = "invalid EE context state",
        [IBV_WC_FATAL_ERR] = "fatal error",
        [IBV_WC_RESP_TIMEOUT_ERR] = "response timeout error",
        [IBV_WC_GENERAL_ERR] = "general error",
        [IBV_WC_TM_ERR] = "TM error",
        [IBV_WC_TM_RNDV_INCOMPLETE] = "TM software rendezvous",
    };

    if (s < IBV_WC_SUCCESS || s > IBV_WC_TM_RNDV_INCOMPLETE || names[s] == NULL)
        return "unknown";
    return names[s];
}

int ibv_rate_to_mult(enum ibv_rate rate)
{
    switch (rate) {
    case IBV_RATE_2_5_GBPS:
        return 1;
    case IBV_RATE_5_GBPS:
        return 2;
    case IBV_RATE_10_GBPS:
        return 4;
    case IBV_RATE_20_GBPS:
        return 8;
    case IBV_RATE_30_GBPS:
        return 12;
    case IBV_RATE_40_GBPS:
        return 16;
    case IBV_RATE_60_GBPS:
        return 24;
    case IBV_RATE_80_GBPS:
        return 32;
    case IBV_RATE_120_GBPS:
        return 48;
    default:
        return -1;
    }
}

enum ibv_rate mult_to_ibv_rate(int mult)
{
    for (int r = IBV_RATE_2_5_GBPS; r <= IBV_RATE_120_GBPS; r++)
        if (ibv_rate_to_mult((enum ibv_rate)r) == mult)
            return (enum ibv_rate)r;
    return IBV_RATE_MAX;
}

static const struct {
    enum ibv_rate rate;
    int mbps;
} emu_rates[] = {
    {IBV_RATE_2_5_GBPS, 2500},   {IBV_RATE_5_GBPS, 5000},     {IBV_RATE_10_GBPS, 10000},
    {IBV_RATE_20_GBPS, 20000},   {IBV_RATE_30_GBPS, 30000},   {IBV_RATE_40_GBPS, 40000},
    {IBV_RATE_60_GBPS, 60000},   {IBV_RATE_80_GBPS, 80000},   {IBV_RATE_120_GBPS, 120000},
    {IBV_RATE_14_GBPS, 14062},   {IBV_RATE_56_GBPS, 56250},   {IBV_RATE_112_GBPS, 112500},
    {IBV_RATE_168_GBPS, 168750}, {IBV_RATE_25_GBPS, 25781},   {IBV_RATE_100_GBPS, 103125},
    {IBV_RATE_200_GBPS, 206250}, {IBV_RATE_300_GBPS, 309375}, {IBV_RATE_28_GBPS, 28125},
    {IBV_RATE_50_GBPS, 53125},   {IBV_RATE_400_GBPS, 425000}, {IBV_RATE_600_GBPS, 637500},
};

int ibv_rate_to_mbps(enum ibv_rate rate)
{
    for (size_t i = 0; i < sizeof(emu_rates) / sizeof(emu_rates[0]); i++)
        if (emu_rates[i].rate == rate)
            return emu_rates[i].mbps;
    return -1;
}

enum ibv_rate mbps_to_ibv_rate(int mbps)
{
    for (size_t i = 0; i < sizeof(emu_rates) / sizeof(emu_rates[0]); i++)
        if (emu_rates[i].mbps == mbps)
            return emu_rates[i].rate;
    return IBV_RATE_MAX;
}
