/*
 * Shared-secret authentication of the handshake (engine.auth_key_file):
 * SHA-256 and HMAC-SHA256 (FIPS 180-4, RFC 2104), the key file, nonces
 * and the two proofs of the challenge-response. Base layer. Not installed.
 *
 * Both sides send a random nonce (the initiator in HELLO, the target in
 * its AUTH challenge); the target proves the key with
 * HMAC(key, "teshim target" | nonce_i | nonce_t), the initiator with
 * HMAC(key, "teshim initiator" | nonce_t | nonce_i). Different labels: a
 * proof of one side is never accepted as the other's.
 */
#ifndef TESHIM_ENG_AUTH_H
#define TESHIM_ENG_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ENG_NONCE_BYTES 16
#define ENG_MAC_BYTES 32
#define ENG_AUTH_KEY_MAX 64 /* longer keys are hashed first, as HMAC does */
#define ENG_AUTH_KEY_MIN 16 /* bytes of a key file, trailing newline excluded */

/* The key of engine.auth_key_file; len 0 = no authentication. */
struct eng_auth_key {
    uint8_t k[ENG_AUTH_KEY_MAX];
    size_t len;
};

void eng_sha256(const void *data, size_t len, uint8_t out[32]);
/* HMAC-SHA256 of the concatenation of n parts. */
void eng_hmac_sha256(const uint8_t *key, size_t klen, const void *const *parts, const size_t *lens,
                     int n, uint8_t out[32]);

/*
 * Read the key file path into *key: a regular file owned by the effective
 * user, readable by nobody else (no group or other permission bits),
 * never through a symlink, 16..4096 bytes (one trailing newline dropped).
 * 0, or -errno with the reason in why (a sentence to log).
 */
int eng_auth_key_load(const char *path, struct eng_auth_key *key, char *why, size_t whylen);
/* Wipe a key. */
void eng_auth_key_clear(struct eng_auth_key *key);

/* Random bytes from getrandom (a clock mix if it fails). */
void eng_random(void *buf, size_t len);

/* The proof of the target (target = true) or of the initiator. */
void eng_auth_proof(const struct eng_auth_key *key, bool target,
                    const uint8_t nonce_i[ENG_NONCE_BYTES], const uint8_t nonce_t[ENG_NONCE_BYTES],
                    uint8_t out[ENG_MAC_BYTES]);
/* Constant-time comparison of two proofs. */
bool eng_auth_equal(const uint8_t a[ENG_MAC_BYTES], const uint8_t b[ENG_MAC_BYTES]);

#endif
