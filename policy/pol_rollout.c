/* Rollout arm assignment and name matching. */
#include "pol.h"

#include <fnmatch.h>
#include <string.h>

static uint64_t fnv1a_bytes(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

/*
 * FNV-1a over "salt\0host\0program", then a 64-bit finaliser so identities
 * that differ in one character still spread over the whole 0..9999 scale.
 */
uint32_t pol_rollout_bucket(const char *salt, const char *host, const char *program)
{
    uint64_t h = 1469598103934665603ULL;

    h = fnv1a_bytes(h, salt ? salt : "", strlen(salt ? salt : "") + 1);
    h = fnv1a_bytes(h, host ? host : "", strlen(host ? host : "") + 1);
    h = fnv1a_bytes(h, program ? program : "", strlen(program ? program : ""));
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return (uint32_t)(h % 10000);
}

bool pol_list_match(const char *list, const char *name)
{
    char item[256];

    if (!list || !name)
        return false;
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, ",");
        if (n > 0 && n < sizeof(item)) {
            memcpy(item, p, n);
            item[n] = '\0';
            if (fnmatch(item, name, 0) == 0)
                return true;
        }
        p += n;
        if (*p == ',')
            p++;
    }
    return false;
}
