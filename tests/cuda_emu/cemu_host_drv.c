/*
 * A driver-API host (UCX and NIXL shape): cuda.h, linked against
 * libcuda.so.1 by soname, pageable buffers copied with cuMemcpyHtoD /
 * cuMemcpyDtoH, their Async forms on a stream and on the NULL stream, and
 * cuMemcpy / cuMemcpyAsync with unified addressing. Built twice: legacy
 * default stream and -DCUDA_API_PER_THREAD_DEFAULT_STREAM (the _ptds/_ptsz
 * entry points). With "lookup" the copies go through what cuGetProcAddress
 * returned instead of the linked names.
 *
 * usage: cemu_host_drv [lookup]. Prints "checksum HEX" over everything read
 * back; exit 0 when every round trip returned the bytes sent.
 */
#include <cuda.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cemu_host.h"

#define CK(call) CK_CU(call)

typedef CUresult (*htod_fn)(CUdeviceptr, const void *, size_t);
typedef CUresult (*dtoh_fn)(void *, CUdeviceptr, size_t);
typedef CUresult (*htod_async_fn)(CUdeviceptr, const void *, size_t, CUstream);
typedef CUresult (*dtoh_async_fn)(void *, CUdeviceptr, size_t, CUstream);

int main(int argc, char **argv)
{
    bool lookup = argc > 1 && strcmp(argv[1], "lookup") == 0;
    size_t n = (1u << 20) + 4097;
    unsigned char *src = malloc(n), *dst = malloc(n);
    CUdevice dev;
    CUcontext ctx;
    CUdeviceptr d;
    CUstream s;
    htod_fn htod = cuMemcpyHtoD;
    dtoh_fn dtoh = cuMemcpyDtoH;
    htod_async_fn htod_async = cuMemcpyHtoDAsync;
    dtoh_async_fn dtoh_async = cuMemcpyDtoHAsync;

    if (!src || !dst)
        return 2;
    CK(cuInit(0));
    CK(cuDeviceGet(&dev, 0));
    CK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CK(cuCtxSetCurrent(ctx));
    CK(cuMemAlloc(&d, n));
    CK(cuStreamCreate(&s, CU_STREAM_DEFAULT));
    if (lookup) {
        htod = (htod_fn)lookup_fn("cuMemcpyHtoD", 12000);
        dtoh = (dtoh_fn)lookup_fn("cuMemcpyDtoH", 12000);
        htod_async = (htod_async_fn)lookup_fn("cuMemcpyHtoDAsync", 12000);
        dtoh_async = (dtoh_async_fn)lookup_fn("cuMemcpyDtoHAsync", 12000);
    }
    for (unsigned round = 0; round < 4; round++) {
        for (size_t i = 0; i < n; i++)
            src[i] = (unsigned char)(i * 131u + round * 7u + (i >> 12));
        memset(dst, 0, n);
        switch (round) {
        case 0: /* synchronous */
            CK(htod(d, src, n));
            CK(dtoh(dst, d, n));
            break;
        case 1: /* async on a stream */
            CK(htod_async(d, src, n, s));
            CK(dtoh_async(dst, d, n, s));
            CK(cuStreamSynchronize(s));
            break;
        case 2: /* async on the NULL stream */
            CK(htod_async(d, src, n, NULL));
            CK(dtoh_async(dst, d, n, NULL));
            CK(cuStreamSynchronize(NULL));
            break;
        default: /* unified addressing, on the default stream of the flavour
                  * (a pageable cuMemcpy may return before its DMA: the
                  * next copy must be ordered after it by its stream) */
            CK(cuMemcpy(d, (CUdeviceptr)(uintptr_t)src, n));
            CK(cuMemcpyAsync((CUdeviceptr)(uintptr_t)dst, d, n, NULL));
            CK(cuStreamSynchronize(NULL));
            break;
        }
        if (memcmp(src, dst, n) != 0) {
            fprintf(stderr, "round %u: data mismatch\n", round);
            return 1;
        }
        sum(dst, n);
    }
    CK(cuStreamDestroy(s));
    CK(cuMemFree(d));
    printf("checksum %016llx\n", (unsigned long long)checksum);
    return 0;
}
