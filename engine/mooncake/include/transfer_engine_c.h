/*
 * Mooncake Transfer Engine's C API, served by teshim's engine.
 *
 * This header has the file name, the function names, the argument and
 * return types, the struct layouts and the constants of Mooncake's
 * transfer_engine_c.h, so a program written against Mooncake's C API
 * compiles and links against libteshim_mooncake unchanged
 * (pkg-config teshim-mooncake). It is teshim's own text: the contract is
 * Mooncake's public header and documentation; the behaviour is that of
 * engine/include/teshim/engine.h underneath. docs/engine.md has the table
 * of what is supported and what fails.
 *
 * Return conventions, as in Mooncake:
 *  - createTransferEngine returns NULL on failure;
 *  - allocateBatchID returns INVALID_BATCH on failure;
 *  - openSegment returns a segment id >= 0, or a negative code;
 *  - submitTransfer, getTransferStatus and freeBatchID return 0 or a
 *    positive status code (TESHIM_MC_STATUS_*), as Mooncake's do;
 *  - every other int function returns 0 or a negative code (TESHIM_MC_ERR_*).
 * On every failure errno is set to the engine's cause (an errno value), and
 * the cause is logged once by the engine (log.level of the policy table).
 * Strings passed in are not kept after the call returns. All functions may
 * be called from any thread.
 */
#ifndef TESHIM_TRANSFER_ENGINE_C_H
#define TESHIM_TRANSFER_ENGINE_C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Lets a program tell teshim's implementation from Mooncake's. */
#define TESHIM_MOONCAKE_API 1

/*
 * Mooncake spells these types as macros, not typedefs; they stay macros so
 * code that tests or redefines them compiles the same way.
 */
#define segment_handle_t int32_t
#define segment_id_t int32_t
#define batch_id_t uint64_t

/* The engine's own segment: requests to it loop back into this process. */
#define LOCAL_SEGMENT (0)
/* What allocateBatchID returns when it fails. */
#define INVALID_BATCH UINT64_MAX

/* transfer_request.opcode: READ copies remote -> source, WRITE source -> remote. */
#define OPCODE_READ (0)
#define OPCODE_WRITE (1)

struct transfer_request {
    int opcode;             /* OPCODE_READ or OPCODE_WRITE */
    void *source;           /* local buffer inside a registered region */
    segment_id_t target_id; /* from openSegment, or LOCAL_SEGMENT */
    uint64_t target_offset; /* address in the target process's address space */
    uint64_t length;        /* bytes, > 0 */
};
typedef struct transfer_request transfer_request_t;

/* A notification (unsupported here: see submitTransferWithNotify). */
struct notify_msg {
    char *name;
    char *msg;
};
typedef struct notify_msg notify_msg_t;

/*
 * transfer_status.status. A request queued or in flight reads
 * STATUS_WAITING (Mooncake reports both that way; STATUS_PENDING is never
 * returned); a request failed because the engine was stopped reads
 * STATUS_CANCELED.
 */
#define STATUS_WAITING (0)
#define STATUS_PENDING (1)
#define STATUS_INVALID (2)
#define STATUS_CANCELED (3)
#define STATUS_COMPLETED (4)
#define STATUS_TIMEOUT (5)
#define STATUS_FAILED (6)

struct transfer_status {
    int status;                 /* STATUS_* */
    uint64_t transferred_bytes; /* bytes moved so far (a lower bound) */
};
typedef struct transfer_status transfer_status_t;

/* Mooncake's segment descriptor (RDMA memory or an NVMe-oF file). */
struct segment_desc {
    int type;
    union {
        struct {
            void *addr;
            uint64_t size;
            const char *location;
        } rdma;
        struct {
            const char *file_path;
            const char *subsystem_name;
            const char *proto;
            const char *ip;
            uint64_t port;
        } nvmeof;
    } desc_;
};
typedef struct segment_desc segment_desc_t;

/* One buffer of registerLocalMemoryBatch. */
struct buffer_entry {
    void *addr;
    size_t length;
};
typedef struct buffer_entry buffer_entry_t;

/* Per-NIC load of getNicLoadStats (unsupported here: no RDMA NICs). */
struct nic_load_stat {
    char device_name[64];
    uint64_t inflight_bytes;
    double ewma_bandwidth_bps;
};
typedef struct nic_load_stat nic_load_stat_t;

typedef void *transfer_engine_t;
typedef void *transport_t;

/*
 * teshim's names for the codes the functions return (Mooncake keeps the
 * same values in its error.h and Status codes, which this header does not
 * declare). The negative ones are returned by the int functions, the
 * positive ones by submitTransfer, getTransferStatus and freeBatchID.
 */
enum teshim_mc_code {
    TESHIM_MC_ERR_INVALID_ARGUMENT = -1,
    TESHIM_MC_ERR_TOO_MANY_REQUESTS = -2,
    TESHIM_MC_ERR_ADDRESS_NOT_REGISTERED = -3,
    TESHIM_MC_ERR_BATCH_BUSY = -4,
    TESHIM_MC_ERR_DEVICE_NOT_FOUND = -6,
    TESHIM_MC_ERR_ADDRESS_OVERLAPPED = -7,
    TESHIM_MC_ERR_SOCKET = -102,
    TESHIM_MC_ERR_METADATA = -200,
    TESHIM_MC_ERR_MEMORY = -302,
    TESHIM_MC_ERR_NOT_IMPLEMENTED = -303,
    TESHIM_MC_STATUS_INVALID_ARGUMENT = 1,
    TESHIM_MC_STATUS_TOO_MANY_REQUESTS = 2,
    TESHIM_MC_STATUS_ADDRESS_NOT_REGISTERED = 3,
    TESHIM_MC_STATUS_BATCH_BUSY = 4,
    TESHIM_MC_STATUS_DEVICE_NOT_FOUND = 6,
    TESHIM_MC_STATUS_ADDRESS_OVERLAPPED = 7,
    TESHIM_MC_STATUS_SOCKET = 102,
    TESHIM_MC_STATUS_METADATA = 200,
    TESHIM_MC_STATUS_MEMORY = 302,
    TESHIM_MC_STATUS_NOT_IMPLEMENTED = 999,
};

/*
 * Create an engine and start serving this process's remote-accessible
 * registrations. metadata_conn_string "P2PHANDSHAKE" uses teshim's embedded
 * handshake: the engine listens on the host part of local_server_name
 * ("host", "host:port", "[v6addr]:port") on a port the kernel picks (the
 * port in local_server_name is ignored, as in Mooncake's P2P mode), and its
 * segment name is "host:port" (getLocalIpAndPort). "etcd://HOST:PORT[,...]"
 * or a bare "HOST:PORT" (etcd, as in Mooncake) publish the segment in etcd
 * under local_server_name (at most 63 bytes), served on ip_or_host_name
 * (else the host part of local_server_name) on a port the kernel picks;
 * peers open it by that name, and notice when it restarts or leaves.
 * NULL when etcd cannot be reached. Other schemes: NULL (EINVAL).
 * rpc_port is ignored (Mooncake ignores it too unless
 * MC_LEGACY_RPC_PORT_BINDING is set); auto_discover needs no
 * topology here. MC_FORCE_TCP in the environment keeps same-host peers on
 * tcp instead of teshim's same-host transport.
 */
transfer_engine_t createTransferEngine(const char *metadata_conn_string,
                                       const char *local_server_name, const char *ip_or_host_name,
                                       uint64_t rpc_port, int auto_discover);

/* Unsupported (no NIC topology): TESHIM_MC_ERR_NOT_IMPLEMENTED. */
int discoverTopology(transfer_engine_t engine);

/*
 * Write "host:port" (this engine's segment name in P2P mode) to buf_out.
 * TESHIM_MC_ERR_INVALID_ARGUMENT when it does not fit in buf_len (the text
 * is then truncated).
 */
int getLocalIpAndPort(transfer_engine_t engine, char *buf_out, size_t buf_len);

/*
 * "tcp" returns the engine's tcp transport (the same handle every time;
 * teshim's engine always has it, args are not used). Any other protocol
 * ("rdma", "nvmeof", "nvlink", ...) returns NULL with errno EPROTONOSUPPORT.
 */
transport_t installTransport(transfer_engine_t engine, const char *proto, void **args);

/*
 * 0 for "tcp" (as in Mooncake, the transport stays usable: it carries every
 * request here); TESHIM_MC_ERR_INVALID_ARGUMENT for any other protocol.
 */
int uninstallTransport(transfer_engine_t engine, const char *proto);

/*
 * Open the segment segment_name ("host:port" of a peer's
 * getLocalIpAndPort in P2P mode, the local_server_name a peer published in
 * etcd mode; leading '/' are dropped): a handshake with
 * the peer, bounded by engine.connect_timeout_ms. Opening the same name
 * again returns the same id and counts one more open; this engine's own
 * name returns LOCAL_SEGMENT. Negative on failure (TESHIM_MC_ERR_SOCKET
 * when the peer cannot be reached, TESHIM_MC_ERR_INVALID_ARGUMENT for a
 * malformed name).
 */
segment_id_t openSegment(transfer_engine_t engine, const char *segment_name);

/*
 * openSegment with a fresh handshake: a segment already open is closed and
 * opened again under the same id, so regions the peer registered since are
 * known. TESHIM_MC_ERR_BATCH_BUSY while requests to it are unfinished.
 */
segment_id_t openSegmentNoCache(transfer_engine_t engine, const char *segment_name);

/*
 * Undo one openSegment. When the last is undone the connections to the
 * peer are closed and the id fails until the name is opened again (it gets
 * the same id). TESHIM_MC_ERR_BATCH_BUSY while requests to it are
 * unfinished, TESHIM_MC_ERR_INVALID_ARGUMENT for an id not open.
 * LOCAL_SEGMENT is always open: closing it returns 0.
 */
int closeSegment(transfer_engine_t engine, segment_id_t segment_id);

/* No EFA here: returns 0 and does nothing, as Mooncake does without EFA. */
int warmupEfaSegment(transfer_engine_t engine, const char *segment_name);

/* Unsupported (P2P keeps no metadata entries): TESHIM_MC_ERR_NOT_IMPLEMENTED. */
int removeLocalSegment(transfer_engine_t engine, const char *segment_name);

/*
 * Stop the engine: unfinished requests end as canceled, connections close,
 * registrations and open segments are dropped. NULL is accepted.
 */
void destroyTransferEngine(transfer_engine_t engine);

/*
 * Register [addr, addr + length). location: "cpu", "cpu:N", "*" or NULL
 * (host memory), "cuda:N" (device memory, staged by the engine; needs a
 * CUDA runtime, else TESHIM_MC_ERR_DEVICE_NOT_FOUND). "*" does not probe
 * the pointer: device memory must be named cuda:N. remote_accessible
 * non-zero lets peers read and write it. TESHIM_MC_ERR_ADDRESS_OVERLAPPED
 * when it overlaps a registration, TESHIM_MC_ERR_INVALID_ARGUMENT for a
 * zero length.
 */
int registerLocalMemory(transfer_engine_t engine, void *addr, size_t length, const char *location,
                        int remote_accessible);

/* Remove the registration starting at addr (TESHIM_MC_ERR_ADDRESS_NOT_REGISTERED if none). */
int unregisterLocalMemory(transfer_engine_t engine, void *addr);

/*
 * Register buffer_len buffers, remote-accessible, all or none: on a failure
 * the ones already registered are unregistered again.
 */
int registerLocalMemoryBatch(transfer_engine_t engine, buffer_entry_t *buffer_list,
                             size_t buffer_len, const char *location);

/* Unregister every address of the list; returns the first failure (all are tried). */
int unregisterLocalMemoryBatch(transfer_engine_t engine, void **addr_list, size_t addr_len);

/* A batch for up to batch_size (1..1048576) requests; INVALID_BATCH on failure. */
batch_id_t allocateBatchID(transfer_engine_t engine, size_t batch_size);

/*
 * Append count requests to a batch (task ids follow in submission order,
 * from 0) and start them. Every request is checked before any starts:
 * TESHIM_MC_STATUS_INVALID_ARGUMENT (opcode, zero length, segment id not
 * open), TESHIM_MC_STATUS_ADDRESS_NOT_REGISTERED (source range not inside
 * one registration), TESHIM_MC_STATUS_TOO_MANY_REQUESTS (over the batch's
 * size), TESHIM_MC_STATUS_METADATA (etcd mode: the segment's peer
 * restarted or left; errno ESTALE / EHOSTDOWN; reopen it with
 * openSegmentNoCache). A remote range outside the peer's registrations
 * fails the task.
 */
int submitTransfer(transfer_engine_t engine, batch_id_t batch_id, struct transfer_request *entries,
                   size_t count);

/* Unsupported (no notifications): TESHIM_MC_STATUS_NOT_IMPLEMENTED, nothing submitted. */
int submitTransferWithNotify(transfer_engine_t engine, batch_id_t batch_id,
                             struct transfer_request *entries, size_t count,
                             notify_msg_t notify_msg);

/* Unsupported: returns NULL with *size = 0 and errno ENOTSUP. */
notify_msg_t *getNotifsFromEngine(transfer_engine_t engine, int *size);

/*
 * Free an array of size notifications whose name and msg strings were
 * allocated with malloc (as getNotifsFromEngine's would be). Returns 0.
 */
int freeNotifsMsgBuf(notify_msg_t *msg, int size);

/* Unsupported: TESHIM_MC_ERR_NOT_IMPLEMENTED. */
int genNotifyInEngine(transfer_engine_t engine, uint64_t target_id, notify_msg_t notify_msg);

/*
 * The state of task task_id of a batch in *status (written on success
 * only). TESHIM_MC_STATUS_INVALID_ARGUMENT for a task id not submitted or
 * a batch not allocated.
 */
int getTransferStatus(transfer_engine_t engine, batch_id_t batch_id, size_t task_id,
                      struct transfer_status *status);

/* Free a batch; TESHIM_MC_STATUS_BATCH_BUSY while any of its requests is unfinished. */
int freeBatchID(transfer_engine_t engine, batch_id_t batch_id);

/*
 * Returns 0: teshim keeps no cache to sync (the peer checks every tcp
 * request against its current registrations; the same-host transport
 * refetches a peer's list itself). openSegmentNoCache refreshes one
 * segment's list.
 */
int syncSegmentCache(transfer_engine_t engine);

/* Unsupported (no RDMA NICs): TESHIM_MC_ERR_NOT_IMPLEMENTED, *count untouched. */
int getNicLoadStats(transfer_engine_t engine, nic_load_stat_t *stats, size_t *count);

/*
 * Unsupported: installs no signal handlers (a void function cannot report
 * it). destroyTransferEngine cancels unfinished requests.
 */
void enableGracefulShutdown(transfer_engine_t engine);

/*
 * Write the engine's links to buf_out: one line per open segment
 * ("id name transport", transport "tcp" or "local"), or with json non-zero
 * {"local":"host:port","segments":[{"id":N,"name":"...","transport":"..."}]}.
 * TESHIM_MC_ERR_INVALID_ARGUMENT when it does not fit (truncated).
 */
int showLinks(transfer_engine_t engine, char *buf_out, size_t buf_len, int json);

#ifdef __cplusplus
}
#endif
#endif
