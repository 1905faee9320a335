/*
 * The emulated CUDA driver, libcuda.so.1: the driver API a program or a
 * runtime reaches (cuInit, devices and primary contexts, memory, host
 * registration, the copy family with its _ptds/_ptsz flavours (2D
 * included: cuMemcpy2D, cuMemcpy2DUnaligned, cuMemcpy2DAsync), streams,
 * events, cuGetProcAddress with versions and flags, cuGetExportTable), over
 * the memory and stream machinery of cemu_mem.c and cemu_stream.c, which
 * the emulated runtime shares through the export table (cemu_core.h).
 *
 * Built with cuda.h and __CUDA_API_VERSION_INTERNAL, as NVIDIA builds its
 * driver: every exported function is checked against the real prototype
 * (the header then names the _v2, _ptds and _ptsz entry points). Exported
 * unversioned, like the real library.
 *
 * Copies keep the "API synchronization behavior" the runtime documents for
 * both APIs (cemu_api.c): pageable host-to-device stages the source (the
 * synchronous form first waits for the stream), device-to-host and
 * synchronous host-to-host return after completion, device-to-device
 * returns at once; the Async forms return once the source was consumed.
 */
#define __CUDA_API_VERSION_INTERNAL 1
#include <cuda.h>

#include "cemu.h"
#include "cemu_core.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define DRV_EXPORT __attribute__((visibility("default")))

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static atomic_bool inited;
static bool init_failed;
static _Atomic uint64_t copies[CEMU_NDIRS][CEMU_HOST_NTYPES];
static _Atomic uint64_t copy_bytes[CEMU_NDIRS][CEMU_HOST_NTYPES];
static _Atomic uint64_t copies2d;

/* cudaError_t and CUresult share the codes the machinery returns (0, 1
 * invalid value, 2 out of memory, 3 not initialised, 400 invalid handle,
 * 600 not ready, 900/901 capture); the rest map by name. */
static CUresult cu(cudaError_t e)
{
    switch (e) {
    case cudaSuccess:
        return CUDA_SUCCESS;
    case cudaErrorInvalidValue:
        return CUDA_ERROR_INVALID_VALUE;
    case cudaErrorMemoryAllocation:
        return CUDA_ERROR_OUT_OF_MEMORY;
    case cudaErrorInitializationError:
        return CUDA_ERROR_NOT_INITIALIZED;
    case cudaErrorInvalidResourceHandle:
        return CUDA_ERROR_INVALID_HANDLE;
    case cudaErrorNotReady:
        return CUDA_ERROR_NOT_READY;
    case cudaErrorHostMemoryAlreadyRegistered:
        return CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED;
    case cudaErrorHostMemoryNotRegistered:
        return CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
    case cudaErrorStreamCaptureUnsupported:
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    case cudaErrorStreamCaptureInvalidated:
        return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
    case cudaErrorIllegalState:
        return CUDA_ERROR_ILLEGAL_STATE;
    case cudaErrorNotSupported:
        return CUDA_ERROR_NOT_SUPPORTED;
    default:
        return CUDA_ERROR_UNKNOWN;
    }
}

static void init(void)
{
    init_failed = cemu_mem_init() != 0;
}

DRV_EXPORT CUresult cuInit(unsigned int flags)
{
    if (flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_once(&init_once, init);
    if (init_failed)
        return CUDA_ERROR_NOT_INITIALIZED;
    atomic_store(&inited, true);
    return CUDA_SUCCESS;
}

/* Every call but cuInit, cuDriverGetVersion and the lookups needs cuInit. */
#define ENTER()                                                                                    \
    do {                                                                                           \
        if (!atomic_load_explicit(&inited, memory_order_acquire))                                  \
            return CUDA_ERROR_NOT_INITIALIZED;                                                     \
    } while (0)

DRV_EXPORT CUresult cuDriverGetVersion(int *v)
{
    if (!v)
        return CUDA_ERROR_INVALID_VALUE;
    *v = CUDA_VERSION;
    return CUDA_SUCCESS;
}

/* ---- devices and primary contexts -------------------------------------- */

static int device_count(void)
{
    const char *env = getenv("CEMU_DEVICES");
    int n = env ? atoi(env) : 1;

    return n < 1 ? 1 : n > CEMU_MAX_DEVICES ? CEMU_MAX_DEVICES : n;
}

/* A context is its device's slot here: one primary context per device. */
static char contexts[CEMU_MAX_DEVICES];

DRV_EXPORT CUresult cuDeviceGetCount(int *count)
{
    ENTER();
    if (!count)
        return CUDA_ERROR_INVALID_VALUE;
    *count = device_count();
    return CUDA_SUCCESS;
}

DRV_EXPORT CUresult cuDeviceGet(CUdevice *dev, int ordinal)
{
    ENTER();
    if (!dev)
        return CUDA_ERROR_INVALID_VALUE;
    if (ordinal < 0 || ordinal >= device_count())
        return CUDA_ERROR_INVALID_DEVICE;
    *dev = ordinal;
    return CUDA_SUCCESS;
}

DRV_EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice dev)
{
    ENTER();
    if (!ctx)
        return CUDA_ERROR_INVALID_VALUE;
    if (dev < 0 || dev >= device_count())
        return CUDA_ERROR_INVALID_DEVICE;
    *ctx = (CUcontext)&contexts[dev];
    return CUDA_SUCCESS;
}

DRV_EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev)
{
    ENTER();
    return dev < 0 || dev >= device_count() ? CUDA_ERROR_INVALID_DEVICE : CUDA_SUCCESS;
}

DRV_EXPORT CUresult cuCtxSetCurrent(CUcontext ctx)
{
    char *c = (char *)ctx;

    ENTER();
    if (!c)
        return CUDA_SUCCESS;
    if (c < contexts || c >= contexts + device_count())
        return CUDA_ERROR_INVALID_CONTEXT;
    cemu_set_device((int)(c - contexts));
    return CUDA_SUCCESS;
}

DRV_EXPORT CUresult cuCtxGetCurrent(CUcontext *ctx)
{
    ENTER();
    if (!ctx)
        return CUDA_ERROR_INVALID_VALUE;
    *ctx = (CUcontext)&contexts[cemu_get_device()];
    return CUDA_SUCCESS;
}

DRV_EXPORT CUresult cuCtxGetDevice(CUdevice *dev)
{
    ENTER();
    if (!dev)
        return CUDA_ERROR_INVALID_VALUE;
    *dev = cemu_get_device();
    return CUDA_SUCCESS;
}

DRV_EXPORT CUresult cuCtxSynchronize(void)
{
    ENTER();
    cemu_device_sync();
    return CUDA_SUCCESS;
}

/* ---- memory ---------------------------------------------------------------- */

DRV_EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t n)
{
    void *p = NULL;
    cudaError_t e;

    ENTER();
    if (!dptr)
        return CUDA_ERROR_INVALID_VALUE;
    e = cemu_dev_alloc(&p, n);
    if (e == cudaSuccess)
        *dptr = (CUdeviceptr)(uintptr_t)p;
    return cu(e);
}

DRV_EXPORT CUresult cuMemFree_v2(CUdeviceptr dptr)
{
    ENTER();
    cemu_device_sync();
    return cu(cemu_dev_free((void *)(uintptr_t)dptr));
}

DRV_EXPORT CUresult cuMemAllocHost_v2(void **pp, size_t n)
{
    ENTER();
    return cu(cemu_pinned_alloc(pp, n, 0));
}

DRV_EXPORT CUresult cuMemHostAlloc(void **pp, size_t n, unsigned int flags)
{
    ENTER();
    if (flags & ~(unsigned)(CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP |
                            CU_MEMHOSTALLOC_WRITECOMBINED))
        return CUDA_ERROR_INVALID_VALUE;
    return cu(cemu_pinned_alloc(pp, n, flags));
}

DRV_EXPORT CUresult cuMemFreeHost(void *p)
{
    ENTER();
    cemu_device_sync();
    return cu(cemu_pinned_free(p));
}

DRV_EXPORT CUresult cuMemHostRegister_v2(void *p, size_t n, unsigned int flags)
{
    ENTER();
    if (flags & ~(unsigned)(CU_MEMHOSTREGISTER_PORTABLE | CU_MEMHOSTREGISTER_DEVICEMAP |
                            CU_MEMHOSTREGISTER_IOMEMORY | CU_MEMHOSTREGISTER_READ_ONLY))
        return CUDA_ERROR_INVALID_VALUE;
    return cu(cemu_pinned_register(p, n, flags));
}

DRV_EXPORT CUresult cuMemHostUnregister(void *p)
{
    ENTER();
    return cu(cemu_pinned_unregister(p));
}

/* CU_POINTER_ATTRIBUTE_MEMORY_TYPE and _IS_MANAGED, as the driver answers
 * them: memory it does not know (pageable) is CUDA_ERROR_INVALID_VALUE. */
DRV_EXPORT CUresult cuPointerGetAttribute(void *data, CUpointer_attribute attr, CUdeviceptr ptr)
{
    struct cemu_where w;

    ENTER();
    if (!data)
        return CUDA_ERROR_INVALID_VALUE;
    cemu_where((const void *)(uintptr_t)ptr, &w);
    if (w.kind == CEMU_MEM_PAGEABLE || (w.kind == CEMU_MEM_DEVICE && !w.valid))
        return CUDA_ERROR_INVALID_VALUE;
    switch (attr) {
    case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
        *(unsigned int *)data =
            w.kind == CEMU_MEM_PINNED ? CU_MEMORYTYPE_HOST : CU_MEMORYTYPE_DEVICE;
        return CUDA_SUCCESS;
    case CU_POINTER_ATTRIBUTE_IS_MANAGED:
        *(unsigned int *)data = w.kind == CEMU_MEM_MANAGED;
        return CUDA_SUCCESS;
    default:
        return CUDA_ERROR_NOT_SUPPORTED;
    }
}

/* ---- copies ------------------------------------------------------------------ */

static enum cemu_host_type host_type(enum cemu_mem_kind k)
{
    switch (k) {
    case CEMU_MEM_PINNED:
        return CEMU_HOST_PINNED;
    case CEMU_MEM_MANAGED:
        return CEMU_HOST_MANAGED;
    case CEMU_MEM_DEVICE:
        return CEMU_HOST_NONE;
    default:
        return CEMU_HOST_PAGEABLE;
    }
}

void cemu_count_copy(enum cemu_dir dir, enum cemu_host_type ht, size_t n, bool is2d)
{
    atomic_fetch_add(&copies[dir][ht], 1);
    atomic_fetch_add(&copy_bytes[dir][ht], n);
    if (is2d)
        atomic_fetch_add(&copies2d, 1);
}

/* The direction of a copy from ws to wd and the host memory type it is
 * counted under (*ht); counted. */
static enum cemu_dir classify(const struct cemu_where *wd, const struct cemu_where *ws, size_t n,
                              bool is2d, enum cemu_host_type *ht)
{
    bool dd = wd->kind == CEMU_MEM_DEVICE, sd = ws->kind == CEMU_MEM_DEVICE;
    enum cemu_dir dir = sd ? (dd ? CEMU_D2D : CEMU_D2H) : (dd ? CEMU_H2D : CEMU_H2H);

    if (dir == CEMU_H2D)
        *ht = host_type(ws->kind);
    else if (dir == CEMU_D2H)
        *ht = host_type(wd->kind);
    else if (dir == CEMU_H2H)
        *ht = ws->kind == CEMU_MEM_PAGEABLE ? CEMU_HOST_PAGEABLE : host_type(wd->kind);
    else
        *ht = CEMU_HOST_NONE;
    cemu_count_copy(dir, *ht, n, is2d);
    return dir;
}

/*
 * Submit h rows of w bytes (dpitch, spitch apart; a 1D copy is one row)
 * with the "API synchronization behavior": a captured stream records it;
 * a pageable host-to-device copy is staged packed (pitch = width) at the
 * call, as the driver stages pageable rows, the synchronous form first
 * waiting for the stream; the synchronous forms of the others but
 * device-to-device, and async ones with pageable memory, return after
 * completion.
 */
static CUresult submit_rows(struct CUstream_st *st, enum cemu_dir dir, enum cemu_host_type ht,
                            void *dst, size_t dpitch, const char *src, size_t spitch, size_t w,
                            size_t h, bool async)
{
    uint64_t seq;

    if (cemu_stream_capturing(st)) {
        cemu_submit_copy2d(st, dst, dpitch, src, spitch, w, h, NULL);
        return CUDA_SUCCESS;
    }
    if (dir == CEMU_H2D && ht == CEMU_HOST_PAGEABLE) {
        char *stage = malloc(w * h);
        if (!stage)
            return CUDA_ERROR_OUT_OF_MEMORY;
        if (!async)
            cemu_stream_wait_seq(st, cemu_submit_marker(st));
        for (size_t r = 0; r < h; r++)
            memcpy(stage + r * w, src + r * spitch, w);
        cemu_submit_copy2d(st, dst, dpitch, stage, w, w, h, stage);
        return CUDA_SUCCESS;
    }
    seq = cemu_submit_copy2d(st, dst, dpitch, src, spitch, w, h, NULL);
    if (async ? ht == CEMU_HOST_PAGEABLE : dir != CEMU_D2D)
        cemu_stream_wait_seq(st, seq);
    return CUDA_SUCCESS;
}

/* What a driver copy function requires of its two sides. */
enum side { ANY, DEV, HOST };

static CUresult drv_copy(void *dst, const void *src, size_t n, CUstream h, enum cemu_flavour fl,
                         bool async, enum side need_dst, enum side need_src)
{
    struct cemu_where wd, ws;
    struct CUstream_st *st;
    enum cemu_dir dir;
    enum cemu_host_type ht;
    bool dd, sd;

    ENTER();
    if (n == 0)
        return CUDA_SUCCESS;
    if (!dst || !src)
        return CUDA_ERROR_INVALID_VALUE;
    if (!cemu_where_copy(dst, n, src, n, &wd, &ws))
        return CUDA_ERROR_INVALID_VALUE;
    dd = wd.kind == CEMU_MEM_DEVICE;
    sd = ws.kind == CEMU_MEM_DEVICE;
    if ((need_dst == DEV && !dd) || (need_dst == HOST && dd) || (need_src == DEV && !sd) ||
        (need_src == HOST && sd))
        return CUDA_ERROR_INVALID_VALUE;
    st = cemu_stream_get(h, fl);
    dir = classify(&wd, &ws, n, false, &ht);
    return submit_rows(st, dir, ht, wd.rw, n, ws.rw, n, n, 1, async);
}

#define DP(p) ((void *)(uintptr_t)(p))

/* Each entry point in its legacy and per-thread flavour: the NULL stream
 * (and the synchronous forms) mean the legacy stream in the first, the
 * calling thread's per-thread stream in the second. */
#define DRV_COPIES(suffix, fl)                                                                     \
    DRV_EXPORT CUresult cuMemcpyHtoD_v2##suffix(CUdeviceptr dst, const void *src, size_t n)        \
    {                                                                                              \
        return drv_copy(DP(dst), src, n, NULL, fl, false, DEV, HOST);                              \
    }                                                                                              \
    DRV_EXPORT CUresult cuMemcpyDtoH_v2##suffix(void *dst, CUdeviceptr src, size_t n)              \
    {                                                                                              \
        return drv_copy(dst, DP(src), n, NULL, fl, false, HOST, DEV);                              \
    }                                                                                              \
    DRV_EXPORT CUresult cuMemcpyDtoD_v2##suffix(CUdeviceptr dst, CUdeviceptr src, size_t n)        \
    {                                                                                              \
        return drv_copy(DP(dst), DP(src), n, NULL, fl, false, DEV, DEV);                           \
    }

#define DRV_ASYNC_COPIES(suffix, fl)                                                               \
    DRV_EXPORT CUresult cuMemcpyHtoDAsync_v2##suffix(CUdeviceptr dst, const void *src, size_t n,   \
                                                     CUstream h)                                   \
    {                                                                                              \
        return drv_copy(DP(dst), src, n, h, fl, true, DEV, HOST);                                  \
    }                                                                                              \
    DRV_EXPORT CUresult cuMemcpyDtoHAsync_v2##suffix(void *dst, CUdeviceptr src, size_t n,         \
                                                     CUstream h)                                   \
    {                                                                                              \
        return drv_copy(dst, DP(src), n, h, fl, true, HOST, DEV);                                  \
    }                                                                                              \
    DRV_EXPORT CUresult cuMemcpyDtoDAsync_v2##suffix(CUdeviceptr dst, CUdeviceptr src, size_t n,   \
                                                     CUstream h)                                   \
    {                                                                                              \
        return drv_copy(DP(dst), DP(src), n, h, fl, true, DEV, DEV);                               \
    }

DRV_COPIES(, CEMU_LEGACY_API)
DRV_COPIES(_ptds, CEMU_PTSZ_API)
DRV_ASYNC_COPIES(, CEMU_LEGACY_API)
DRV_ASYNC_COPIES(_ptsz, CEMU_PTSZ_API)

/* Unified addressing: the direction comes from the pointers. */
DRV_EXPORT CUresult cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t n)
{
    return drv_copy(DP(dst), DP(src), n, NULL, CEMU_LEGACY_API, false, ANY, ANY);
}

DRV_EXPORT CUresult cuMemcpy_ptds(CUdeviceptr dst, CUdeviceptr src, size_t n)
{
    return drv_copy(DP(dst), DP(src), n, NULL, CEMU_PTSZ_API, false, ANY, ANY);
}

DRV_EXPORT CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream h)
{
    return drv_copy(DP(dst), DP(src), n, h, CEMU_LEGACY_API, true, ANY, ANY);
}

DRV_EXPORT CUresult cuMemcpyAsync_ptsz(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream h)
{
    return drv_copy(DP(dst), DP(src), n, h, CEMU_PTSZ_API, true, ANY, ANY);
}

/* ---- 2D copies --------------------------------------------------------------- */

/* CU_DEVICE_ATTRIBUTE_MAX_PITCH of current NVIDIA GPUs. */
#define CEMU_MAX_PITCH ((size_t)INT32_MAX)

/* One side of a CUDA_MEMCPY2D: its first byte (Host or Device + Y * Pitch
 * + XInBytes) and the bytes its rows span, or false for what the driver
 * refuses with CUDA_ERROR_INVALID_VALUE: a memory type other than host,
 * device or unified (arrays are not emulated: no array handle is valid),
 * X + width beyond the pitch, a pitch above CEMU_MAX_PITCH, a NULL base, a
 * geometry that overflows. */
static bool side_2d(CUmemorytype type, const void *host, CUdeviceptr dev, size_t x, size_t y,
                    size_t pitch, size_t width, size_t height, char **at, size_t *span)
{
    uintptr_t base = type == CU_MEMORYTYPE_HOST ? (uintptr_t)host : (uintptr_t)dev;
    size_t off, end;

    if (type != CU_MEMORYTYPE_HOST && type != CU_MEMORYTYPE_DEVICE && type != CU_MEMORYTYPE_UNIFIED)
        return false;
    if (pitch > CEMU_MAX_PITCH || __builtin_add_overflow(x, width, &end) || end > pitch || !base)
        return false;
    if (__builtin_mul_overflow(y, pitch, &off) || __builtin_add_overflow(off, x, &off) ||
        __builtin_add_overflow(base, off, &base) ||
        __builtin_mul_overflow(height - 1, pitch, span) ||
        __builtin_add_overflow(*span, width, span))
        return false;
    *at = (char *)base;
    return true;
}

/* Where a side lies agrees with its memory type (unified: anywhere). */
static bool side_is(CUmemorytype type, bool on_device)
{
    return type == CU_MEMORYTYPE_UNIFIED || (type == CU_MEMORYTYPE_DEVICE) == on_device;
}

/*
 * cuMemcpy2D, cuMemcpy2DUnaligned and cuMemcpy2DAsync: height rows of
 * width bytes, with the synchronisation rules of the 1D copies (cemu_api.c,
 * "API synchronization behavior"). Width or height 0 copies nothing.
 */
static CUresult drv_copy2d(const CUDA_MEMCPY2D *p, CUstream h, enum cemu_flavour fl, bool async)
{
    struct cemu_where wd, ws;
    struct CUstream_st *st;
    enum cemu_dir dir;
    enum cemu_host_type ht;
    size_t w, hgt, dspan, sspan, n;
    char *dst, *src;
    bool dd, sd;

    ENTER();
    if (!p)
        return CUDA_ERROR_INVALID_VALUE;
    w = p->WidthInBytes;
    hgt = p->Height;
    if (w == 0 || hgt == 0)
        return CUDA_SUCCESS;
    if (!side_2d(p->srcMemoryType, p->srcHost, p->srcDevice, p->srcXInBytes, p->srcY, p->srcPitch,
                 w, hgt, &src, &sspan) ||
        !side_2d(p->dstMemoryType, p->dstHost, p->dstDevice, p->dstXInBytes, p->dstY, p->dstPitch,
                 w, hgt, &dst, &dspan) ||
        __builtin_mul_overflow(w, hgt, &n))
        return CUDA_ERROR_INVALID_VALUE;
    if (!cemu_where_copy(dst, dspan, src, sspan, &wd, &ws))
        return CUDA_ERROR_INVALID_VALUE;
    dd = wd.kind == CEMU_MEM_DEVICE;
    sd = ws.kind == CEMU_MEM_DEVICE;
    if (!side_is(p->dstMemoryType, dd) || !side_is(p->srcMemoryType, sd))
        return CUDA_ERROR_INVALID_VALUE;
    st = cemu_stream_get(h, fl);
    if (!st)
        return CUDA_ERROR_INVALID_HANDLE;
    dir = classify(&wd, &ws, n, true, &ht);
    return submit_rows(st, dir, ht, wd.rw, p->dstPitch, ws.rw, p->srcPitch, w, hgt, async);
}

DRV_EXPORT CUresult cuMemcpy2D_v2(const CUDA_MEMCPY2D *p)
{
    return drv_copy2d(p, NULL, CEMU_LEGACY_API, false);
}

DRV_EXPORT CUresult cuMemcpy2D_v2_ptds(const CUDA_MEMCPY2D *p)
{
    return drv_copy2d(p, NULL, CEMU_PTSZ_API, false);
}

/* Any pitch the emulation accepts is one cuMemcpy2D accepts: the same copy. */
DRV_EXPORT CUresult cuMemcpy2DUnaligned_v2(const CUDA_MEMCPY2D *p)
{
    return drv_copy2d(p, NULL, CEMU_LEGACY_API, false);
}

DRV_EXPORT CUresult cuMemcpy2DUnaligned_v2_ptds(const CUDA_MEMCPY2D *p)
{
    return drv_copy2d(p, NULL, CEMU_PTSZ_API, false);
}

DRV_EXPORT CUresult cuMemcpy2DAsync_v2(const CUDA_MEMCPY2D *p, CUstream h)
{
    return drv_copy2d(p, h, CEMU_LEGACY_API, true);
}

DRV_EXPORT CUresult cuMemcpy2DAsync_v2_ptsz(const CUDA_MEMCPY2D *p, CUstream h)
{
    return drv_copy2d(p, h, CEMU_PTSZ_API, true);
}

/* ---- streams and events --------------------------------------------------------- */

DRV_EXPORT CUresult cuStreamCreate(CUstream *ph, unsigned int flags)
{
    ENTER();
    return cu(cemu_stream_create(ph, flags));
}

DRV_EXPORT CUresult cuStreamDestroy_v2(CUstream h)
{
    ENTER();
    return cu(cemu_stream_destroy(h));
}

static CUresult stream_sync(CUstream h, enum cemu_flavour fl)
{
    struct CUstream_st *st;

    ENTER();
    st = cemu_stream_get(h, fl);
    if (cemu_stream_capturing(st)) {
        cemu_capture_invalidate(st);
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    }
    cemu_stream_wait_seq(st, cemu_submit_marker(st));
    return CUDA_SUCCESS;
}

DRV_EXPORT CUresult cuStreamSynchronize(CUstream h)
{
    return stream_sync(h, CEMU_LEGACY_API);
}

DRV_EXPORT CUresult cuStreamSynchronize_ptsz(CUstream h)
{
    return stream_sync(h, CEMU_PTSZ_API);
}

DRV_EXPORT CUresult cuStreamQuery(CUstream h)
{
    ENTER();
    return cemu_stream_idle(cemu_stream_get(h, CEMU_LEGACY_API)) ? CUDA_SUCCESS
                                                                 : CUDA_ERROR_NOT_READY;
}

DRV_EXPORT CUresult cuStreamQuery_ptsz(CUstream h)
{
    ENTER();
    return cemu_stream_idle(cemu_stream_get(h, CEMU_PTSZ_API)) ? CUDA_SUCCESS
                                                               : CUDA_ERROR_NOT_READY;
}

static CUresult is_capturing(CUstream h, enum cemu_flavour fl, CUstreamCaptureStatus *status)
{
    ENTER();
    if (!status)
        return CUDA_ERROR_INVALID_VALUE;
    *status = cemu_stream_capturing(cemu_stream_get(h, fl)) ? CU_STREAM_CAPTURE_STATUS_ACTIVE
                                                            : CU_STREAM_CAPTURE_STATUS_NONE;
    return CUDA_SUCCESS;
}

DRV_EXPORT CUresult cuStreamIsCapturing(CUstream h, CUstreamCaptureStatus *status)
{
    return is_capturing(h, CEMU_LEGACY_API, status);
}

DRV_EXPORT CUresult cuStreamIsCapturing_ptsz(CUstream h, CUstreamCaptureStatus *status)
{
    return is_capturing(h, CEMU_PTSZ_API, status);
}

DRV_EXPORT CUresult cuEventCreate(CUevent *pe, unsigned int flags)
{
    ENTER();
    return cu(cemu_event_create(pe, flags));
}

DRV_EXPORT CUresult cuEventDestroy_v2(CUevent e)
{
    ENTER();
    return cu(cemu_event_destroy(e));
}

DRV_EXPORT CUresult cuEventRecord(CUevent e, CUstream h)
{
    ENTER();
    return cu(cemu_event_record(e, cemu_stream_get(h, CEMU_LEGACY_API)));
}

DRV_EXPORT CUresult cuEventRecord_ptsz(CUevent e, CUstream h)
{
    ENTER();
    return cu(cemu_event_record(e, cemu_stream_get(h, CEMU_PTSZ_API)));
}

DRV_EXPORT CUresult cuEventQuery(CUevent e)
{
    ENTER();
    return cu(cemu_event_query(e));
}

DRV_EXPORT CUresult cuEventSynchronize(CUevent e)
{
    ENTER();
    return cu(cemu_event_sync(e));
}

/* ---- lookups ------------------------------------------------------------------------ */

/*
 * cuGetProcAddress's table: a base name, the CUDA version that introduced
 * this ABI of it, whether it is the per-thread-stream flavour, and the
 * entry point. A lookup takes the newest row not newer than the version
 * asked, of the flavour the flags ask for (per-thread when
 * CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM is set and the name has
 * such a flavour at that version; legacy otherwise).
 */
struct proc {
    const char *name;
    int version;
    bool ptds;
    void (*fn)(void);
};

CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags);
CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags,
                             CUdriverProcAddressQueryResult *symbolStatus);
DRV_EXPORT CUresult cuGetExportTable(const void **table, const CUuuid *id);

#define P(name, ver, ptds, fn)                                                                     \
    {                                                                                              \
        name, ver, ptds, (void (*)(void))fn                                                        \
    }
static const struct proc procs[] = {
    P("cuInit", 2000, false, cuInit),
    P("cuDriverGetVersion", 2020, false, cuDriverGetVersion),
    P("cuGetProcAddress", 11030, false, cuGetProcAddress),
    P("cuGetProcAddress", 12000, false, cuGetProcAddress_v2),
    P("cuGetExportTable", 3000, false, cuGetExportTable),
    P("cuDeviceGetCount", 2000, false, cuDeviceGetCount),
    P("cuDeviceGet", 2000, false, cuDeviceGet),
    P("cuDevicePrimaryCtxRetain", 7000, false, cuDevicePrimaryCtxRetain),
    P("cuDevicePrimaryCtxRelease", 11000, false, cuDevicePrimaryCtxRelease_v2),
    P("cuCtxSetCurrent", 4000, false, cuCtxSetCurrent),
    P("cuCtxGetCurrent", 4000, false, cuCtxGetCurrent),
    P("cuCtxGetDevice", 2000, false, cuCtxGetDevice),
    P("cuCtxSynchronize", 2000, false, cuCtxSynchronize),
    P("cuMemAlloc", 3020, false, cuMemAlloc_v2),
    P("cuMemFree", 3020, false, cuMemFree_v2),
    P("cuMemAllocHost", 3020, false, cuMemAllocHost_v2),
    P("cuMemHostAlloc", 2020, false, cuMemHostAlloc),
    P("cuMemFreeHost", 2000, false, cuMemFreeHost),
    P("cuMemHostRegister", 6050, false, cuMemHostRegister_v2),
    P("cuMemHostUnregister", 4000, false, cuMemHostUnregister),
    P("cuPointerGetAttribute", 4000, false, cuPointerGetAttribute),
    P("cuMemcpyHtoD", 3020, false, cuMemcpyHtoD_v2),
    P("cuMemcpyHtoD", 7000, true, cuMemcpyHtoD_v2_ptds),
    P("cuMemcpyDtoH", 3020, false, cuMemcpyDtoH_v2),
    P("cuMemcpyDtoH", 7000, true, cuMemcpyDtoH_v2_ptds),
    P("cuMemcpyDtoD", 3020, false, cuMemcpyDtoD_v2),
    P("cuMemcpyDtoD", 7000, true, cuMemcpyDtoD_v2_ptds),
    P("cuMemcpyHtoDAsync", 3020, false, cuMemcpyHtoDAsync_v2),
    P("cuMemcpyHtoDAsync", 7000, true, cuMemcpyHtoDAsync_v2_ptsz),
    P("cuMemcpyDtoHAsync", 3020, false, cuMemcpyDtoHAsync_v2),
    P("cuMemcpyDtoHAsync", 7000, true, cuMemcpyDtoHAsync_v2_ptsz),
    P("cuMemcpyDtoDAsync", 3020, false, cuMemcpyDtoDAsync_v2),
    P("cuMemcpyDtoDAsync", 7000, true, cuMemcpyDtoDAsync_v2_ptsz),
    P("cuMemcpy", 4000, false, cuMemcpy),
    P("cuMemcpy", 7000, true, cuMemcpy_ptds),
    P("cuMemcpyAsync", 4000, false, cuMemcpyAsync),
    P("cuMemcpyAsync", 7000, true, cuMemcpyAsync_ptsz),
    P("cuMemcpy2D", 3020, false, cuMemcpy2D_v2),
    P("cuMemcpy2D", 7000, true, cuMemcpy2D_v2_ptds),
    P("cuMemcpy2DUnaligned", 3020, false, cuMemcpy2DUnaligned_v2),
    P("cuMemcpy2DUnaligned", 7000, true, cuMemcpy2DUnaligned_v2_ptds),
    P("cuMemcpy2DAsync", 3020, false, cuMemcpy2DAsync_v2),
    P("cuMemcpy2DAsync", 7000, true, cuMemcpy2DAsync_v2_ptsz),
    P("cuStreamCreate", 2000, false, cuStreamCreate),
    P("cuStreamDestroy", 4000, false, cuStreamDestroy_v2),
    P("cuStreamSynchronize", 2000, false, cuStreamSynchronize),
    P("cuStreamSynchronize", 7000, true, cuStreamSynchronize_ptsz),
    P("cuStreamQuery", 2000, false, cuStreamQuery),
    P("cuStreamQuery", 7000, true, cuStreamQuery_ptsz),
    P("cuStreamIsCapturing", 10000, false, cuStreamIsCapturing),
    P("cuStreamIsCapturing", 10000, true, cuStreamIsCapturing_ptsz),
    P("cuEventCreate", 2000, false, cuEventCreate),
    P("cuEventDestroy", 4000, false, cuEventDestroy_v2),
    P("cuEventRecord", 2000, false, cuEventRecord),
    P("cuEventRecord", 7000, true, cuEventRecord_ptsz),
    P("cuEventQuery", 2000, false, cuEventQuery),
    P("cuEventSynchronize", 2000, false, cuEventSynchronize),
};
#undef P

static CUresult lookup(const char *symbol, void **pfn, int version, cuuint64_t flags,
                       CUdriverProcAddressQueryResult *status)
{
    const struct proc *best = NULL;
    bool named = false;
    bool want_ptds = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0;

    if (!symbol || !pfn || (flags & ~(cuuint64_t)3))
        return CUDA_ERROR_INVALID_VALUE;
    *pfn = NULL;
    for (int pass = 0; pass < 2 && !best; pass++) {
        bool ptds = pass == 0 ? want_ptds : false;
        for (size_t i = 0; i < sizeof(procs) / sizeof(procs[0]); i++) {
            const struct proc *p = &procs[i];
            if (strcmp(p->name, symbol) != 0)
                continue;
            named = true;
            if (p->ptds == ptds && p->version <= version && (!best || p->version > best->version))
                best = p;
        }
        if (!want_ptds)
            break;
    }
    if (!best) {
        if (status)
            *status = named ? CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT
                            : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
        return CUDA_ERROR_NOT_FOUND;
    }
    if (status)
        *status = CU_GET_PROC_ADDRESS_SUCCESS;
    memcpy(pfn, &best->fn, sizeof(*pfn));
    return CUDA_SUCCESS;
}

DRV_EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion,
                                        cuuint64_t flags,
                                        CUdriverProcAddressQueryResult *symbolStatus)
{
    return lookup(symbol, pfn, cudaVersion, flags, symbolStatus);
}

DRV_EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion,
                                     cuuint64_t flags)
{
    return lookup(symbol, pfn, cudaVersion, flags, NULL);
}

/* ---- the table the emulated runtime shares the machinery through ---------- */

#define CORE_ENTRY(ret, name, params, args) .name = name,
static const struct cemu_core core = {.size = sizeof(struct cemu_core),
                                      CEMU_CORE_FNS(CORE_ENTRY, CORE_ENTRY)};
#undef CORE_ENTRY

DRV_EXPORT CUresult cuGetExportTable(const void **table, const CUuuid *id)
{
    if (!table || !id)
        return CUDA_ERROR_INVALID_VALUE;
    if (memcmp(id->bytes, CEMU_CORE_UUID, sizeof(id->bytes)) != 0)
        return CUDA_ERROR_INVALID_VALUE;
    *table = &core;
    return CUDA_SUCCESS;
}

/* ---- test controls of the copy counters --------------------------------------- */

CEMU_EXPORT uint64_t cemu_test_copies(enum cemu_dir dir, enum cemu_host_type host)
{
    if ((unsigned)dir >= CEMU_NDIRS || (unsigned)host >= CEMU_HOST_NTYPES)
        return 0;
    return atomic_load(&copies[dir][host]);
}

CEMU_EXPORT uint64_t cemu_test_copy_bytes(enum cemu_dir dir, enum cemu_host_type host)
{
    if ((unsigned)dir >= CEMU_NDIRS || (unsigned)host >= CEMU_HOST_NTYPES)
        return 0;
    return atomic_load(&copy_bytes[dir][host]);
}

CEMU_EXPORT uint64_t cemu_test_copies_2d(void)
{
    return atomic_load(&copies2d);
}

CEMU_EXPORT void cemu_test_reset_counters(void)
{
    atomic_store(&copies2d, 0);
    for (int d = 0; d < CEMU_NDIRS; d++)
        for (int h = 0; h < CEMU_HOST_NTYPES; h++) {
            atomic_store(&copies[d][h], 0);
            atomic_store(&copy_bytes[d][h], 0);
        }
}
