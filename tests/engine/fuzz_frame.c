/*
 * Fuzz target for the engine's wire parser: frame headers and the
 * HELLO/HELLO_ACK payload. Built with clang -fsanitize=fuzzer (libFuzzer)
 * when available; fuzz_replay.c runs the same entry point over the seed
 * corpus in every build. A header that parses must encode back to the
 * same bytes, an AUTH frame carries a nonce and a proof or (a refusal)
 * nothing, a LOCAL_READ/LOCAL_WRITE exactly a struct eng_local_req (which
 * parses only with a pid and zero reserved bytes) and a LOCAL_ACK nothing,
 * and a parsed HELLO must have known flags, describe only non-wrapping
 * regions and a trailer whose records lie inside it.
 */
#include "eng_proto.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct eng_frame f;
    struct eng_hello h;
    struct eng_region_desc r[8];
    uint8_t again[ENG_FRAME_BYTES];

    if (eng_frame_parse(data, size, &f) == 0) {
        eng_frame_encode(&f, again);
        if (memcmp(again, data, ENG_FRAME_BYTES))
            abort();
        bool lreq = f.type == ENG_F_LOCAL_READ || f.type == ENG_F_LOCAL_WRITE;
        if ((lreq && f.payload_len != ENG_LOCAL_BYTES) ||
            (f.type == ENG_F_LOCAL_ACK && (f.payload_len || !f.len)))
            abort();
        if ((f.type == ENG_F_READ || f.type == ENG_F_WRITE || lreq) &&
            (f.addr < f.req_addr || f.addr + f.len > f.req_addr + f.req_len || !f.len ||
             f.len > ENG_SLICE_MAX))
            abort();
        if (f.type == ENG_F_AUTH && f.payload_len != (f.status ? 0u : ENG_AUTH_BYTES))
            abort();
        if ((f.type == ENG_F_HELLO || f.type == ENG_F_HELLO_ACK) && size > ENG_FRAME_BYTES) {
            size_t n = size - ENG_FRAME_BYTES;
            if (n > f.payload_len)
                n = f.payload_len;
            if (eng_hello_parse(data + ENG_FRAME_BYTES, n, &h, r, 8) == 0) {
                if (!memchr(h.name, '\0', sizeof(h.name)) || (h.flags & ~ENG_HELLO_FLAGS))
                    abort();
                for (uint32_t i = 0; i < h.nregions && i < 8; i++)
                    if (!r[i].len || r[i].addr + r[i].len < r[i].addr)
                        abort();
                /* a parsed trailer's records lie inside it */
                size_t off = eng_hello_trailer_off(&h);
                const uint8_t *v, *tr = data + ENG_FRAME_BYTES + off;
                uint32_t vl;
                for (uint16_t t = 0; t < 4; t++)
                    if (!eng_tlv_find(tr, n - off, t, &v, &vl) &&
                        (v < tr || v + vl > tr + (n - off)))
                        abort();
            }
        }
    }
    /* the payload parsers on their own, from any offset */
    if (size)
        eng_hello_parse(data + 1, size - 1, &h, r, 8);
    if (size >= ENG_FRAME_BYTES + ENG_LOCAL_BYTES) {
        struct eng_local_req lr;
        uint8_t back[ENG_LOCAL_BYTES];
        if (eng_local_req_parse(data + ENG_FRAME_BYTES, &lr) == 0) {
            eng_local_req_encode(&lr, back);
            if (!lr.pid || memcmp(back, data + ENG_FRAME_BYTES, ENG_LOCAL_BYTES))
                abort();
        }
    }
    return 0;
}
