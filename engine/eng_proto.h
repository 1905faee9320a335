/*
 * Wire protocol of the engine: fixed 56-byte frame headers, little endian,
 * followed by payload_len bytes. Every frame carries the magic and the
 * protocol version; a peer speaking another version is refused at HELLO.
 *
 *   HELLO      initiator -> target, payload = struct eng_hello (no regions)
 *              + trailer
 *   AUTH       target -> initiator: the challenge (its nonce and proof);
 *              initiator -> target: the response (its proof); status < 0
 *              and no payload: a refusal (eng_auth.h), then the sender closes
 *   HELLO_ACK  target -> initiator, payload = struct eng_hello + regions
 *              + trailer; with authentication, sent only once the
 *              initiator's proof was checked: nothing about the target
 *              goes out before that (the transports answer the HELLO's
 *              trailer only then too)
 *   READ       request len bytes at addr, no payload
 *   READ_RESP  status 0: payload = the len bytes; status < 0: no payload
 *   WRITE      payload = len bytes to store at addr
 *   WRITE_ACK  status of a WRITE, no payload
 *   LOCAL_READ, LOCAL_WRITE  same-host peers, target-checked
 *              (engine.local.mode = target): like READ/WRITE, but the
 *              payload is the initiator's buffer (struct eng_local_req:
 *              its pid and the address of the slice's local bytes); the
 *              target checks the request and copies with process_vm_*
 *   LOCAL_ACK  status of a LOCAL_READ/LOCAL_WRITE, no payload
 * Requests are answered in order on a connection; id echoes the request's.
 * A READ/WRITE slice also names the whole request it is part of, so the
 * target refuses every slice of a request that is not entirely inside one
 * remote-accessible registration, not only the slices that stray.
 */
#ifndef TESHIM_ENG_PROTO_H
#define TESHIM_ENG_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define ENG_MAGIC 0x4d485354u /* "TSHM" */
#define ENG_VERSION 4 /* 2: region flags; 3: instance id, nonce, AUTH, trailer; 4: LOCAL_* */
#define ENG_FRAME_BYTES 56
#define ENG_SLICE_MAX (64u << 20) /* largest data payload of one frame */
#define ENG_MAX_REGIONS 4096      /* regions announced in HELLO_ACK */
#define ENG_NAME_MAX 64
#define ENG_HELLO_BYTES (16 + 4 + 4 + 8 + 8 + ENG_NAME_MAX + 16 + 16 + 4 + 4)
#define ENG_AUTH_BYTES (16 + 32) /* AUTH payload: nonce, proof (HMAC-SHA256) */
#define ENG_REGION_BYTES 24
#define ENG_TLV_BYTES 8              /* type 2, reserved 2, length 4 */
#define ENG_TRAILER_MAX (512u << 10) /* all TLVs of one hello */
#define ENG_LOCAL_BYTES 16 /* LOCAL_READ/LOCAL_WRITE payload: local addr 8, pid 4, reserved 4 */
#define ENG_CTRL_MAX (ENG_HELLO_BYTES + ENG_MAX_REGIONS * ENG_REGION_BYTES + ENG_TRAILER_MAX)

enum eng_frame_type {
    ENG_F_HELLO = 1,
    ENG_F_HELLO_ACK,
    ENG_F_READ,
    ENG_F_READ_RESP,
    ENG_F_WRITE,
    ENG_F_WRITE_ACK,
    ENG_F_AUTH,
    ENG_F_LOCAL_READ,
    ENG_F_LOCAL_WRITE,
    ENG_F_LOCAL_ACK,
    ENG_F_MAX_TYPE = ENG_F_LOCAL_ACK,
};

/* A decoded frame header. */
struct eng_frame {
    uint8_t type;
    int32_t status;       /* 0 or a negative errno, answers only */
    uint32_t payload_len; /* bytes following the header */
    uint64_t id;          /* request id, echoed in the answer */
    uint64_t addr;        /* remote address of READ/WRITE */
    uint64_t len;         /* bytes of READ/WRITE and their answers */
    uint64_t req_addr;    /* READ/WRITE: the whole request this slice belongs to; */
    uint64_t req_len;     /* the target checks all of it before moving a byte */
};

/* The identity block of HELLO and HELLO_ACK. */
struct eng_hello {
    uint8_t boot_id[16]; /* /proc/sys/kernel/random/boot_id: same host test */
    uint32_t pid;
    uint32_t nregions;
    uint64_t probe_addr;     /* address of a word a same-host peer may read ... */
    uint64_t probe_value;    /* ... and find this value in: process_vm_* works */
    char name[ENG_NAME_MAX]; /* NUL-terminated */
    /* random per engine start: a peer restarted at the same address has
     * another one, and the segments opened on the old one fail (-ESTALE) */
    uint8_t instance_id[16];
    uint8_t nonce[16]; /* HELLO: the initiator's challenge nonce */
    uint32_t flags;    /* ENG_HELLO_* */
};

/* HELLO: the initiator has an engine.auth_key_file and wants the target
 * to prove it has the same key. */
#define ENG_HELLO_AUTH 0x1u
/* HELLO_ACK: same-host peers get this target's memory only through
 * LOCAL_* frames it checks (engine.local.mode = target), never with their
 * own process_vm_* */
#define ENG_HELLO_LOCAL_TARGET 0x2u
#define ENG_HELLO_FLAGS (ENG_HELLO_AUTH | ENG_HELLO_LOCAL_TARGET)

/* A region in HELLO_ACK: addr, len, flags, 4 reserved bytes (zero). */
#define ENG_REGION_DEVICE 0x1u /* GPU memory: only the tcp transport reaches it */
#define ENG_REGION_FLAGS ENG_REGION_DEVICE

struct eng_region_desc {
    uint64_t addr;
    uint64_t len;
    uint32_t flags;
};

/*
 * The trailer of HELLO and HELLO_ACK: after the regions, a list of
 * transport records, each type (2 bytes), reserved (2, zero), length (4)
 * and that many bytes. A transport reads the types it knows and skips the
 * others, so any transport can announce what its data path needs (the
 * rdma transport: devices, GIDs, LIDs, queue pairs, rkeys).
 */
enum eng_tlv_type {
    ENG_TLV_RDMA_DEVS = 1, /* the rdma transport's devices and region keys */
    ENG_TLV_RDMA_QPS,      /* the rdma transport's queue pairs of one connection */
};

/* Append a record to buf[*pos, max); 0 or -ENOSPC. */
int eng_tlv_put(uint8_t *buf, size_t max, size_t *pos, uint16_t type, const void *val,
                uint32_t len);
/* The first record of type in trailer[0, len): 0 with *val_p and *len_p set,
 * or -ENOENT. The trailer must have passed eng_hello_parse. */
int eng_tlv_find(const uint8_t *trailer, size_t len, uint16_t type, const uint8_t **val_p,
                 uint32_t *len_p);
/* Offset of the trailer in a parsed hello payload. */
size_t eng_hello_trailer_off(const struct eng_hello *h);

/* The payload of LOCAL_READ/LOCAL_WRITE. */
struct eng_local_req {
    uint64_t addr; /* the slice's bytes in the initiator's memory */
    uint32_t pid;  /* the initiator (checked against the connection's owner) */
};

void eng_local_req_encode(const struct eng_local_req *r, uint8_t *buf);

/* Decode buf[ENG_LOCAL_BYTES]: 0, or -EBADMSG (reserved bytes not zero,
 * pid 0). */
int eng_local_req_parse(const uint8_t *buf, struct eng_local_req *r);

/* Encode f into buf[ENG_FRAME_BYTES]. */
void eng_frame_encode(const struct eng_frame *f, uint8_t *buf);

/*
 * Decode and validate a header: magic, version, known type, reserved bits
 * zero, payload length consistent with the type and within the limits.
 * 0, -EPROTO (wrong magic or version) or -EBADMSG (anything else).
 */
int eng_frame_parse(const uint8_t *buf, size_t len, struct eng_frame *f);

/* Encode a hello block plus n regions into buf (ENG_HELLO_BYTES + 24 n). */
size_t eng_hello_encode(const struct eng_hello *h, const struct eng_region_desc *r, uint32_t n,
                        uint8_t *buf);

/*
 * Decode a HELLO/HELLO_ACK payload; regions (up to max) are written to r.
 * Checks the name is terminated, the regions fit the length, every region
 * is non-empty without wrapping, with known flags and zero reserved bytes,
 * and what follows them is a well-formed trailer (records with zero
 * reserved bytes ending exactly at len, within ENG_TRAILER_MAX).
 * 0 or -EBADMSG.
 */
int eng_hello_parse(const uint8_t *buf, size_t len, struct eng_hello *h, struct eng_region_desc *r,
                    uint32_t max);

#endif
