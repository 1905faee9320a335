/* Frame and handshake encoding; every field read from a peer is checked. */
#include "eng_proto.h"

#include <endian.h>
#include <errno.h>
#include <string.h>

static void put32(uint8_t *p, uint32_t v)
{
    v = htole32(v);
    memcpy(p, &v, 4);
}

static void put64(uint8_t *p, uint64_t v)
{
    v = htole64(v);
    memcpy(p, &v, 8);
}

static uint16_t get16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return le16toh(v);
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return le32toh(v);
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return le64toh(v);
}

/* Layout: magic 4, version 1, type 1, reserved 2, status 4, payload_len 4,
 * id 8, addr 8, len 8, req_addr 8, req_len 8. */
void eng_frame_encode(const struct eng_frame *f, uint8_t *buf)
{
    put32(buf, ENG_MAGIC);
    buf[4] = ENG_VERSION;
    buf[5] = f->type;
    buf[6] = 0;
    buf[7] = 0;
    put32(buf + 8, (uint32_t)f->status);
    put32(buf + 12, f->payload_len);
    put64(buf + 16, f->id);
    put64(buf + 24, f->addr);
    put64(buf + 32, f->len);
    put64(buf + 40, f->req_addr);
    put64(buf + 48, f->req_len);
}

int eng_frame_parse(const uint8_t *buf, size_t len, struct eng_frame *f)
{
    if (len < ENG_FRAME_BYTES)
        return -EBADMSG;
    if (get32(buf) != ENG_MAGIC || buf[4] != ENG_VERSION)
        return -EPROTO;
    if (buf[6] || buf[7] || buf[5] < ENG_F_HELLO || buf[5] > ENG_F_MAX_TYPE)
        return -EBADMSG;
    f->type = buf[5];
    f->status = (int32_t)get32(buf + 8);
    f->payload_len = get32(buf + 12);
    f->id = get64(buf + 16);
    f->addr = get64(buf + 24);
    f->len = get64(buf + 32);
    f->req_addr = get64(buf + 40);
    f->req_len = get64(buf + 48);
    if (f->status > 0 || f->status < -4095)
        return -EBADMSG;
    switch (f->type) {
    case ENG_F_HELLO:
    case ENG_F_HELLO_ACK:
        if (f->payload_len < ENG_HELLO_BYTES || f->payload_len > ENG_CTRL_MAX)
            return -EBADMSG;
        if (f->type == ENG_F_HELLO && f->payload_len > ENG_HELLO_BYTES + ENG_TRAILER_MAX)
            return -EBADMSG;
        break;
    case ENG_F_READ:
    case ENG_F_WRITE:
    case ENG_F_LOCAL_READ:
    case ENG_F_LOCAL_WRITE:
        if (f->status || !f->len || f->len > ENG_SLICE_MAX ||
            f->payload_len != (f->type == ENG_F_WRITE  ? f->len
                               : f->type == ENG_F_READ ? 0
                                                       : ENG_LOCAL_BYTES))
            return -EBADMSG;
        /* the slice lies inside its request, neither wraps */
        if (f->addr + f->len < f->addr || f->req_addr + f->req_len < f->req_addr ||
            f->addr < f->req_addr || f->addr + f->len > f->req_addr + f->req_len)
            return -EBADMSG;
        break;
    case ENG_F_READ_RESP:
        if (!f->len || f->len > ENG_SLICE_MAX || f->payload_len != (f->status ? 0 : f->len))
            return -EBADMSG;
        break;
    case ENG_F_WRITE_ACK:
        if (f->payload_len)
            return -EBADMSG;
        break;
    case ENG_F_LOCAL_ACK:
        if (f->payload_len || !f->len || f->len > ENG_SLICE_MAX)
            return -EBADMSG;
        break;
    case ENG_F_AUTH:
        if (f->payload_len != (f->status ? 0 : ENG_AUTH_BYTES))
            return -EBADMSG;
        break;
    }
    return 0;
}

/* Layout: addr 8, pid 4, reserved 4. */
void eng_local_req_encode(const struct eng_local_req *r, uint8_t *buf)
{
    put64(buf, r->addr);
    put32(buf + 8, r->pid);
    put32(buf + 12, 0);
}

int eng_local_req_parse(const uint8_t *buf, struct eng_local_req *r)
{
    r->addr = get64(buf);
    r->pid = get32(buf + 8);
    return !r->pid || get32(buf + 12) ? -EBADMSG : 0;
}

/* Hello layout: boot_id 16, pid 4, nregions 4, probe_addr 8, probe_value 8,
 * name 64, instance_id 16, nonce 16, flags 4, reserved 4; then the regions. */
size_t eng_hello_encode(const struct eng_hello *h, const struct eng_region_desc *r, uint32_t n,
                        uint8_t *buf)
{
    memcpy(buf, h->boot_id, 16);
    put32(buf + 16, h->pid);
    put32(buf + 20, n);
    put64(buf + 24, h->probe_addr);
    put64(buf + 32, h->probe_value);
    memset(buf + 40, 0, ENG_NAME_MAX);
    size_t nl = strnlen(h->name, ENG_NAME_MAX - 1);
    memcpy(buf + 40, h->name, nl);
    memcpy(buf + 104, h->instance_id, 16);
    memcpy(buf + 120, h->nonce, 16);
    put32(buf + 136, h->flags);
    put32(buf + 140, 0);
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *d = buf + ENG_HELLO_BYTES + (size_t)ENG_REGION_BYTES * i;
        put64(d, r[i].addr);
        put64(d + 8, r[i].len);
        put32(d + 16, r[i].flags);
        put32(d + 20, 0);
    }
    return ENG_HELLO_BYTES + (size_t)n * ENG_REGION_BYTES;
}

int eng_hello_parse(const uint8_t *buf, size_t len, struct eng_hello *h, struct eng_region_desc *r,
                    uint32_t max)
{
    if (len < ENG_HELLO_BYTES || len > ENG_CTRL_MAX)
        return -EBADMSG;
    memcpy(h->boot_id, buf, 16);
    h->pid = get32(buf + 16);
    h->nregions = get32(buf + 20);
    h->probe_addr = get64(buf + 24);
    h->probe_value = get64(buf + 32);
    if (!memchr(buf + 40, '\0', ENG_NAME_MAX))
        return -EBADMSG;
    memcpy(h->name, buf + 40, ENG_NAME_MAX);
    memcpy(h->instance_id, buf + 104, 16);
    memcpy(h->nonce, buf + 120, 16);
    h->flags = get32(buf + 136);
    if ((h->flags & ~ENG_HELLO_FLAGS) || get32(buf + 140))
        return -EBADMSG;
    if (h->nregions > ENG_MAX_REGIONS || len < eng_hello_trailer_off(h) ||
        len - eng_hello_trailer_off(h) > ENG_TRAILER_MAX)
        return -EBADMSG;
    for (size_t at = eng_hello_trailer_off(h); at < len;) {
        if (len - at < ENG_TLV_BYTES || get16(buf + at + 2) ||
            get32(buf + at + 4) > len - at - ENG_TLV_BYTES)
            return -EBADMSG;
        at += ENG_TLV_BYTES + get32(buf + at + 4);
    }
    for (uint32_t i = 0; i < h->nregions; i++) {
        const uint8_t *d = buf + ENG_HELLO_BYTES + (size_t)ENG_REGION_BYTES * i;
        uint64_t a = get64(d), l = get64(d + 8);
        uint32_t fl = get32(d + 16);
        if (!l || a + l < a || (fl & ~ENG_REGION_FLAGS) || get32(d + 20))
            return -EBADMSG;
        if (i < max) {
            r[i].addr = a;
            r[i].len = l;
            r[i].flags = fl;
        }
    }
    return 0;
}

size_t eng_hello_trailer_off(const struct eng_hello *h)
{
    return ENG_HELLO_BYTES + (size_t)h->nregions * ENG_REGION_BYTES;
}

int eng_tlv_put(uint8_t *buf, size_t max, size_t *pos, uint16_t type, const void *val, uint32_t len)
{
    if (*pos > max || max - *pos < ENG_TLV_BYTES + (size_t)len)
        return -ENOSPC;
    uint16_t t = htole16(type);
    memcpy(buf + *pos, &t, 2);
    memset(buf + *pos + 2, 0, 2);
    put32(buf + *pos + 4, len);
    if (len)
        memcpy(buf + *pos + ENG_TLV_BYTES, val, len);
    *pos += ENG_TLV_BYTES + len;
    return 0;
}

int eng_tlv_find(const uint8_t *trailer, size_t len, uint16_t type, const uint8_t **val_p,
                 uint32_t *len_p)
{
    for (size_t at = 0; len - at >= ENG_TLV_BYTES;) {
        uint32_t l = get32(trailer + at + 4);
        if (l > len - at - ENG_TLV_BYTES)
            break;
        if (get16(trailer + at) == type) {
            *val_p = trailer + at + ENG_TLV_BYTES;
            *len_p = l;
            return 0;
        }
        at += ENG_TLV_BYTES + l;
    }
    return -ENOENT;
}
