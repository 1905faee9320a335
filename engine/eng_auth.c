/* SHA-256, HMAC-SHA256, the key file and the proofs of the handshake. */
#include "eng_auth.h"
#include "eng_base.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

struct sha256 {
    uint32_t h[8];
    uint8_t buf[64];
    size_t n;       /* bytes in buf */
    uint64_t total; /* bytes hashed */
};

static uint32_t ror(uint32_t x, int n)
{
    return (x >> n) | (x << (32 - n));
}

static void sha_block(struct sha256 *s, const uint8_t *p)
{
    uint32_t w[64], a, b, c, d, e, f, g, h;

    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
    e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 =
            h + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    s->h[0] += a, s->h[1] += b, s->h[2] += c, s->h[3] += d;
    s->h[4] += e, s->h[5] += f, s->h[6] += g, s->h[7] += h;
}

static void sha_init(struct sha256 *s)
{
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, h0, sizeof(h0));
    s->n = 0;
    s->total = 0;
}

static void sha_add(struct sha256 *s, const void *data, size_t len)
{
    const uint8_t *p = data;

    s->total += len;
    while (len) {
        size_t m = 64 - s->n < len ? 64 - s->n : len;
        memcpy(s->buf + s->n, p, m);
        s->n += m;
        p += m;
        len -= m;
        if (s->n == 64) {
            sha_block(s, s->buf);
            s->n = 0;
        }
    }
}

static void sha_end(struct sha256 *s, uint8_t out[32])
{
    uint64_t bits = s->total * 8;
    uint8_t pad = 0x80, zero = 0, lenb[8];

    sha_add(s, &pad, 1);
    while (s->n != 56)
        sha_add(s, &zero, 1);
    for (int i = 0; i < 8; i++)
        lenb[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha_add(s, lenb, 8);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(s->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)s->h[i];
    }
}

void eng_sha256(const void *data, size_t len, uint8_t out[32])
{
    struct sha256 s;
    sha_init(&s);
    sha_add(&s, data, len);
    sha_end(&s, out);
}

void eng_hmac_sha256(const uint8_t *key, size_t klen, const void *const *parts, const size_t *lens,
                     int n, uint8_t out[32])
{
    uint8_t k[64] = {0}, pad[64], inner[32];
    struct sha256 s;

    if (klen > 64)
        eng_sha256(key, klen, k);
    else
        memcpy(k, key, klen);
    for (int i = 0; i < 64; i++)
        pad[i] = k[i] ^ 0x36;
    sha_init(&s);
    sha_add(&s, pad, 64);
    for (int i = 0; i < n; i++)
        sha_add(&s, parts[i], lens[i]);
    sha_end(&s, inner);
    for (int i = 0; i < 64; i++)
        pad[i] = k[i] ^ 0x5c;
    sha_init(&s);
    sha_add(&s, pad, 64);
    sha_add(&s, inner, 32);
    sha_end(&s, out);
    explicit_bzero(k, sizeof(k));
    explicit_bzero(pad, sizeof(pad));
}

int eng_auth_key_load(const char *path, struct eng_auth_key *key, char *why, size_t whylen)
{
    uint8_t buf[4097];
    struct stat st;
    ssize_t n;
    int fd, ret = 0;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
        ret = -errno;
        snprintf(why, whylen, "%s", strerror(errno));
        return ret;
    }
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        snprintf(why, whylen, "not a regular file");
        ret = -EINVAL;
    } else if (st.st_uid != geteuid()) {
        snprintf(why, whylen, "owned by uid %u, not by this process's user (uid %u)",
                 (unsigned)st.st_uid, (unsigned)geteuid());
        ret = -EACCES;
    } else if (st.st_mode & 077) {
        snprintf(why, whylen, "readable or writable by others (mode %04o); chmod 600 it",
                 (unsigned)(st.st_mode & 07777));
        ret = -EACCES;
    }
    n = ret ? 0 : read(fd, buf, sizeof(buf));
    if (!ret && n < 0) {
        ret = -errno;
        snprintf(why, whylen, "%s", strerror(errno));
    }
    close(fd);
    if (!ret && n > 0 && buf[n - 1] == '\n')
        n--;
    if (!ret && (n < ENG_AUTH_KEY_MIN || n > 4096)) {
        snprintf(why, whylen, "the key must be %d to 4096 bytes (it has %zd)", ENG_AUTH_KEY_MIN, n);
        ret = -EINVAL;
    }
    if (!ret && n > ENG_AUTH_KEY_MAX) {
        eng_sha256(buf, (size_t)n, key->k);
        key->len = 32;
    } else if (!ret) {
        memcpy(key->k, buf, (size_t)n);
        key->len = (size_t)n;
    }
    explicit_bzero(buf, sizeof(buf));
    return ret;
}

void eng_auth_key_clear(struct eng_auth_key *key)
{
    explicit_bzero(key, sizeof(*key));
}

void eng_random(void *buf, size_t len)
{
    uint8_t *p = buf;
    size_t got = 0;

    while (got < len) {
        ssize_t n = getrandom(p + got, len - got, 0);
        if (n <= 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    /* no getrandom (very old kernel): hashed clock and pid, unique per
     * start, not secret (nonces only need to be fresh) */
    while (got < len) {
        uint64_t seed[2] = {eng_now_ns(), (uint64_t)getpid() << 32 | got};
        uint8_t h[32];
        eng_sha256(seed, sizeof(seed), h);
        for (size_t i = 0; i < 32 && got < len; i++)
            p[got++] = h[i];
    }
}

void eng_auth_proof(const struct eng_auth_key *key, bool target,
                    const uint8_t nonce_i[ENG_NONCE_BYTES], const uint8_t nonce_t[ENG_NONCE_BYTES],
                    uint8_t out[ENG_MAC_BYTES])
{
    static const char lt[] = "teshim target", li[] = "teshim initiator";
    const void *parts[3] = {target ? lt : li, target ? nonce_i : nonce_t,
                            target ? nonce_t : nonce_i};
    const size_t lens[3] = {target ? sizeof(lt) : sizeof(li), ENG_NONCE_BYTES, ENG_NONCE_BYTES};
    eng_hmac_sha256(key->k, key->len, parts, lens, 3, out);
}

bool eng_auth_equal(const uint8_t a[ENG_MAC_BYTES], const uint8_t b[ENG_MAC_BYTES])
{
    uint8_t d = 0;
    for (int i = 0; i < ENG_MAC_BYTES; i++)
        d |= a[i] ^ b[i];
    return d == 0;
}
