/*
 * What the test hosts (cemu_host_*.c, one program each) share: the
 * checksum over everything they read back (FNV-1a; per thread where the
 * host defines CEMU_CHECKSUM_TLS as __thread before including this), the
 * fill pattern, an allocation that cannot fail, the ordering checks'
 * releasing thread, and CK_CU and (cuda.h included first) a lookup through
 * cuGetProcAddress in the build's default stream flavour for driver calls.
 */
#ifndef TESHIM_CEMU_HOST_H
#define TESHIM_CEMU_HOST_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cemu_test.h"

#ifndef CEMU_CHECKSUM_TLS
#define CEMU_CHECKSUM_TLS
#endif

/* Exit 2 naming the driver call (a CUresult) that failed. */
#define CK_CU(call)                                                                                \
    do {                                                                                           \
        int e_ = (int)(call);                                                                      \
        if (e_ != 0) {                                                                             \
            fprintf(stderr, "%s:%d: %s: %d\n", __FILE__, __LINE__, #call, e_);                     \
            exit(2);                                                                               \
        }                                                                                          \
    } while (0)

static CEMU_CHECKSUM_TLS uint64_t checksum = 1469598103934665603ull;

static inline void sum(const void *p, size_t n)
{
    const unsigned char *c = p;

    for (size_t i = 0; i < n; i++)
        checksum = (checksum ^ c[i]) * 1099511628211ull;
}

static inline void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)((i * 131u + seed * 7u + (i >> 12)) & 0xff);
}

static inline void *xmalloc(size_t n)
{
    void *p = malloc(n);

    if (!p)
        exit(2);
    return p;
}

/*
 * The ordering checks: the copy under test runs while writer is held;
 * releaser, on its own thread, releases writer once that copy waits for it
 * (correct) or has returned without waiting (wrong: copy_done set), never
 * a race on the outcome.
 */
static volatile int copy_done __attribute__((unused));
static struct CUstream_st *writer __attribute__((unused));

static inline void *releaser(void *arg)
{
    (void)arg;
    while (!__atomic_load_n(&copy_done, __ATOMIC_ACQUIRE) && cemu_test_blocked_ops() == 0)
        usleep(1000);
    cemu_test_release_stream(writer);
    return NULL;
}

#ifdef __cuda_cuda_h__
/* name at version through cuGetProcAddress, with the flags of the build's
 * default stream flavour. */
static inline void *lookup_fn(const char *name, int version)
{
#ifdef CUDA_API_PER_THREAD_DEFAULT_STREAM
    cuuint64_t flags = CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM;
#else
    cuuint64_t flags = CU_GET_PROC_ADDRESS_LEGACY_STREAM;
#endif
    void *fn = NULL;
    CUdriverProcAddressQueryResult st;

    CK_CU(cuGetProcAddress(name, &fn, version, flags, &st));
    return fn;
}
#endif

#endif
