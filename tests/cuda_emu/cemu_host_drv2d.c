/*
 * A driver-API host for the 2D copies: cuda.h, linked against libcuda.so.1
 * by soname, pitched copies between pageable host memory and device memory
 * with cuMemcpy2D, cuMemcpy2DUnaligned and cuMemcpy2DAsync (CUDA_MEMCPY2D:
 * host and device or unified memory types, X/Y offsets, pitches above the
 * width, odd widths). Built twice: legacy default stream and
 * -DCUDA_API_PER_THREAD_DEFAULT_STREAM (the _ptds/_ptsz entry points).
 *
 * usage: cemu_host_drv2d MODE[-lookup] [IGNORED]
 *   roundtrip  every entry point both ways, sync and async (NULL and a
 *              created stream);
 *   ordering   a synchronous cuMemcpy2D D2H on the default stream must see
 *              the write of a held blocking stream (exit 3 when it did not);
 *   asynchold  an async pageable H2D on a held stream returns with its
 *              source consumed;
 *   errors     bad arguments: prints each error code.
 * With -lookup the copies go through what cuGetProcAddress returned
 * instead of the linked names.
 * Prints "checksum HEX" over every host buffer read back (the bytes between
 * rows included, which a copy must leave alone).
 */
#include <cuda.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cemu_host.h"
#include "cemu_test.h"

#define CK(call) CK_CU(call)

typedef CUresult (*copy_fn)(const CUDA_MEMCPY2D *);
typedef CUresult (*copy_async_fn)(const CUDA_MEMCPY2D *, CUstream);

static copy_fn copy2d = cuMemcpy2D;
static copy_fn copy2d_unaligned = cuMemcpy2DUnaligned;
static copy_async_fn copy2d_async = cuMemcpy2DAsync;

/* The source and destination members of a CUDA_MEMCPY2D have one layout
 * (X, Y, type, host, device, array, pitch): swap them. */
_Static_assert(offsetof(CUDA_MEMCPY2D, WidthInBytes) == 2 * offsetof(CUDA_MEMCPY2D, dstXInBytes),
               "CUDA_MEMCPY2D sides");
static void flip(CUDA_MEMCPY2D *p)
{
    unsigned char src[offsetof(CUDA_MEMCPY2D, dstXInBytes)];

    memcpy(src, p, sizeof(src));
    memcpy(p, &p->dstXInBytes, sizeof(src));
    memcpy(&p->dstXInBytes, src, sizeof(src));
}

/* A host-to-device (h2d) or device-to-host copy of h rows of w bytes: the
 * host side at (hx, hy) of rows hp apart, the device side dp apart, with
 * the device side named CU_MEMORYTYPE_DEVICE or, unified, _UNIFIED. */
static CUDA_MEMCPY2D desc(bool h2d, void *host, size_t hx, size_t hy, size_t hp, CUdeviceptr dev,
                          size_t dp, size_t w, size_t h, bool unified)
{
    CUDA_MEMCPY2D p;

    memset(&p, 0, sizeof(p));
    p.srcMemoryType = CU_MEMORYTYPE_HOST;
    p.srcHost = host;
    p.srcXInBytes = hx;
    p.srcY = hy;
    p.srcPitch = hp;
    p.dstMemoryType = unified ? CU_MEMORYTYPE_UNIFIED : CU_MEMORYTYPE_DEVICE;
    p.dstDevice = dev;
    p.dstPitch = dp;
    p.WidthInBytes = w;
    p.Height = h;
    if (!h2d)
        flip(&p);
    return p;
}

/* Rows of a (pitch hp, from offset off) equal those of b. */
static void expect_rows(const unsigned char *a, const unsigned char *b, size_t off, size_t hp,
                        size_t w, size_t h, const char *what)
{
    for (size_t r = 0; r < h; r++)
        if (memcmp(a + off + r * hp, b + off + r * hp, w) != 0) {
            fprintf(stderr, "data mismatch: %s, row %zu\n", what, r);
            exit(2);
        }
}

struct geom {
    size_t w, hp, dp, h, hx, hy; /* width, pitches, height, host offset */
};

/* With 64 KiB bounce chunks (the tests' setting): rows equal to the pitch,
 * odd widths, a host offset, rows wider than a chunk, many chunks. */
static const struct geom geoms[] = {
    {4096, 4096, 4096, 256, 0, 0},  {1001, 1024, 1536, 700, 0, 0}, {997, 1031, 1024, 300, 17, 3},
    {70000, 70001, 70144, 9, 0, 0}, {513, 4096, 513, 2000, 0, 0},
};

static void roundtrip_geom(const struct geom *g, unsigned seed)
{
    size_t hs = (g->hy + g->h) * g->hp, ds = (g->h - 1) * g->dp + g->w;
    size_t off = g->hy * g->hp + g->hx;
    unsigned char *src = xmalloc(hs), *dst = xmalloc(hs);
    CUdeviceptr dev;
    CUstream s;
    CUDA_MEMCPY2D up, down;

    CK(cuMemAlloc(&dev, ds));
    CK(cuStreamCreate(&s, CU_STREAM_DEFAULT));
    for (int round = 0; round < 4; round++) {
        bool unified = round & 1;
        fill(src, hs, seed + (unsigned)round);
        memset(dst, 0x5A + round, hs);
        up = desc(true, src, g->hx, g->hy, g->hp, dev, g->dp, g->w, g->h, unified);
        down = desc(false, dst, g->hx, g->hy, g->hp, dev, g->dp, g->w, g->h, unified);
        switch (round) {
        case 0:
            CK(copy2d(&up));
            CK(copy2d(&down));
            break;
        case 1:
            CK(copy2d_unaligned(&up));
            CK(copy2d_unaligned(&down));
            break;
        case 2: /* the NULL stream of the build's flavour */
            CK(copy2d_async(&up, NULL));
            CK(copy2d_async(&down, NULL));
            CK(cuStreamSynchronize(NULL));
            break;
        default: /* a created stream; the pageable source is reusable at return */
            CK(copy2d_async(&up, s));
            memset(src, 0xEE, hs);
            CK(copy2d_async(&down, s));
            CK(cuStreamSynchronize(s));
            fill(src, hs, seed + (unsigned)round);
            break;
        }
        expect_rows(dst, src, off, g->hp, g->w, g->h, "2D round trip");
        sum(dst, hs);
    }
    CK(cuStreamDestroy(s));
    CK(cuMemFree(dev));
    free(src);
    free(dst);
}

static void roundtrip(void)
{
    for (size_t i = 0; i < sizeof(geoms) / sizeof(geoms[0]); i++)
        roundtrip_geom(&geoms[i], (unsigned)i * 10);
}

/* ---- ordering: a synchronous 2D D2H must see a held stream's write ------- */

static int ordering(void)
{
    enum { W = 1000, P = 1024, H = 512 };
    unsigned char *a = xmalloc(P * H), *b, *out = xmalloc(P * H);
    CUdeviceptr dev;
    CUDA_MEMCPY2D down;
    pthread_t t;

#ifdef CUDA_API_PER_THREAD_DEFAULT_STREAM
    writer = CU_STREAM_LEGACY;
#else
    CK(cuStreamCreate(&writer, CU_STREAM_DEFAULT));
#endif
    CK(cuMemAllocHost((void **)&b, P * H));
    fill(a, P * H, 1);
    fill(b, P * H, 2);
    CK(cuMemAlloc(&dev, P * H));
    CK(cuMemcpyHtoD(dev, a, P * H));
    CK(cuCtxSynchronize());
    cemu_test_hold_stream(writer);
    CK(cuMemcpyHtoDAsync(dev, b, P * H, writer));
    pthread_create(&t, NULL, releaser, NULL);
    memset(out, 0, P * H);
    down = desc(false, out, 0, 0, P, dev, P, W, H, false);
    CK(copy2d(&down));
    __atomic_store_n(&copy_done, 1, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    CK(cuCtxSynchronize());
    sum(out, P * H);
    if (memcmp(out, a, W) == 0) {
        printf("ORDERING VIOLATED: the copy did not wait for the held stream\n");
        return 3;
    }
    expect_rows(out, b, 0, P, W, H, "ordering");
    CK(cuMemFree(dev));
    CK(cuMemFreeHost(b));
    free(a);
    free(out);
    return 0;
}

/* An async pageable 2D H2D returns on a held stream (it fits the tests'
 * pool of 2 x 64 KiB: 100 rows of 1000 bytes). */
static void asynchold(void)
{
    enum { W = 1000, P = 1100, H = 100 };
    unsigned char *src = xmalloc(P * H), *ref = xmalloc(P * H), *dst = xmalloc(P * H);
    CUdeviceptr dev;
    CUstream s;
    CUDA_MEMCPY2D up, down;

    fill(src, P * H, 40);
    memcpy(ref, src, P * H);
    CK(cuMemAlloc(&dev, W * H));
    CK(cuStreamCreate(&s, CU_STREAM_DEFAULT));
    cemu_test_hold_stream(s);
    up = desc(true, src, 0, 0, P, dev, W, W, H, false);
    CK(copy2d_async(&up, s));
    memset(src, 0, P * H);
    cemu_test_release_stream(s);
    CK(cuStreamSynchronize(s));
    memset(dst, 0, P * H);
    down = desc(false, dst, 0, 0, P, dev, W, W, H, false);
    CK(copy2d(&down));
    expect_rows(dst, ref, 0, P, W, H, "async 2D copy on a held stream");
    sum(dst, P * H);
    CK(cuStreamDestroy(s));
    CK(cuMemFree(dev));
    free(src);
    free(ref);
    free(dst);
}

/* ---- bad arguments ------------------------------------------------------------ */

static void report(const char *what, CUresult e)
{
    printf("%s %d\n", what, (int)e);
}

static void errors(void)
{
    enum { W = 1000, P = 1024, H = 200 };
    unsigned char *buf = xmalloc(P * H);
    CUdeviceptr dev;
    CUDA_MEMCPY2D p;

    CK(cuMemAlloc(&dev, P * H));
    fill(buf, P * H, 5);
    p = desc(true, buf, 0, 0, W - 1, dev, P, W, H, false);
    report("width-above-src-pitch", copy2d(&p));
    p = desc(false, buf, 0, 0, P, dev, W - 1, W, H, false);
    report("width-above-device-pitch-async", copy2d_async(&p, NULL));
    p = desc(true, buf, 30, 0, P, dev, P, W, H, false);
    report("x-beyond-pitch", copy2d_unaligned(&p));
    p = desc(true, buf, 0, 0, (size_t)1 << 32, dev, P, W, 1, false);
    report("pitch-above-max", copy2d(&p));
    p = desc(true, buf, 0, 0, P, dev, P, W, H, false);
    p.srcMemoryType = (CUmemorytype)0;
    report("no-memory-type", copy2d(&p));
    p.srcMemoryType = (CUmemorytype)7;
    report("bad-memory-type", copy2d(&p));
    p = desc(true, buf, 0, 0, P, dev, P, W, H, false);
    p.dstMemoryType = CU_MEMORYTYPE_ARRAY;
    report("array", copy2d(&p));
    /* The device side named host memory, and the host side device memory. */
    p = desc(true, buf, 0, 0, P, dev, P, W, H, false);
    p.dstMemoryType = CU_MEMORYTYPE_HOST;
    p.dstHost = (void *)(uintptr_t)dev;
    report("device-as-host", copy2d(&p));
    p = desc(false, buf, 0, 0, P, (CUdeviceptr)(uintptr_t)buf, P, W, H, false);
    report("host-as-device", copy2d(&p));
    /* The last rows past the end of the device allocation. */
    p = desc(false, buf, 0, 0, P, dev, 2 * P, W, H / 2 + 1, false);
    report("overrun", copy2d(&p));
    p = desc(false, NULL, 0, 0, P, dev, P, W, H, false);
    report("null-host", copy2d_async(&p, NULL));
    report("null-argument", copy2d(NULL));
    /* Nothing to copy. */
    p = desc(false, buf, 0, 0, P, dev, P, 0, H, false);
    report("zero-width", copy2d(&p));
    p = desc(false, buf, 0, 0, P, dev, P, W, 0, false);
    report("zero-height", copy2d(&p));
    memset(buf, 0, P * H);
    p = desc(false, buf, 0, 0, P, dev, P, W, H, false);
    CK(copy2d(&p));
    sum(buf, P * H);
    CK(cuMemFree(dev));
    free(buf);
}

int main(int argc, char **argv)
{
    char mode[64];
    size_t len;
    CUdevice d;
    CUcontext ctx;
    int rc = 0;

    CK(cuInit(0));
    CK(cuDeviceGet(&d, 0));
    CK(cuDevicePrimaryCtxRetain(&ctx, d));
    CK(cuCtxSetCurrent(ctx));
    snprintf(mode, sizeof(mode), "%s", argc > 1 ? argv[1] : "roundtrip");
    len = strlen(mode);
    if (len > 7 && strcmp(mode + len - 7, "-lookup") == 0) {
        mode[len - 7] = '\0';
        copy2d = (copy_fn)lookup_fn("cuMemcpy2D", 12000);
        copy2d_unaligned = (copy_fn)lookup_fn("cuMemcpy2DUnaligned", 12000);
        copy2d_async = (copy_async_fn)lookup_fn("cuMemcpy2DAsync", 12000);
    }
    if (strcmp(mode, "roundtrip") == 0) {
        roundtrip();
    } else if (strcmp(mode, "ordering") == 0) {
        rc = ordering();
    } else if (strcmp(mode, "asynchold") == 0) {
        asynchold();
    } else if (strcmp(mode, "errors") == 0) {
        errors();
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    printf("checksum %016llx\n", (unsigned long long)checksum);
    return rc;
}
