/*
 * The exported CUDA runtime API of the emulation: argument checks, the
 * per-thread last-error state and the host-synchronisation rules of the
 * copy and memset calls (CUDA Runtime API, "API synchronization behavior"):
 *
 *   cudaMemcpy       pageable H2D: synchronise the stream, stage the source,
 *                    return (the DMA may still be pending);
 *                    D2H, pinned H2D, H2H: return after completion;
 *                    D2D: return at once.
 *   cudaMemcpyAsync  pageable H2D: stage the source now, return;
 *                    D2H or H2H with pageable memory: return after completion;
 *                    everything else: return at once.
 *   cudaMemcpy2D[Async] the same rules, for height rows of width bytes;
 *                    width above either pitch fails with
 *                    cudaErrorInvalidPitchValue, as does a pitch above
 *                    cudaDevAttrMaxPitch (CEMU_MAX_PITCH); width or height
 *                    0 copies nothing.
 *
 * A process forked after the runtime initialised gets
 * cudaErrorInitializationError from every call, as with a real driver.
 */
#include <cuda.h>

#include "cemu.h"
#include "cemu_core.h"
#include "cemu_stub.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static cudaError_t init_failed;
static bool forked;
static __thread cudaError_t last_error;

static void atfork_child(void)
{
    forked = true;
}

/* The driver is opened on first use, as NVIDIA's runtime does
 * (cemu_core_client.c): without it every call fails. */
static void init(void)
{
    init_failed = cemu_core_connect();
    pthread_atfork(NULL, NULL, atfork_child);
}

void cemu_runtime_init(void)
{
    pthread_once(&init_once, init);
}

static cudaError_t enter(void)
{
    if (forked)
        return cudaErrorInitializationError;
    pthread_once(&init_once, init);
    return init_failed;
}

/* Every call's return: failures become the thread's last error. */
static cudaError_t ret(cudaError_t e)
{
    if (e != cudaSuccess && e != cudaErrorNotReady)
        last_error = e;
    return e;
}

#define ENTER()                                                                                    \
    do {                                                                                           \
        cudaError_t e_ = enter();                                                                  \
        if (e_ != cudaSuccess)                                                                     \
            return ret(e_);                                                                        \
    } while (0)

/* A CUresult of the driver as the runtime reports it: the codes the
 * emulated driver returns for copies share their values with cudaError_t
 * (invalid value, out of memory, not initialised). */
static cudaError_t from_cu(int r)
{
    return (cudaError_t)r;
}

#define DEVP(p) ((unsigned long long)(uintptr_t)(p))
#define STREAM(s, fl) cemu_stream_get((s), (fl))

/*
 * Check kind against where the pointers lie, then make the copy through
 * the driver entry point NVIDIA's runtime uses for it (FACTS.md):
 * cuMemcpyHtoD / cuMemcpyDtoH (and their Async forms) for the two host
 * directions, cuMemcpy / cuMemcpyAsync with unified addressing for the
 * rest. The stream handle is passed as given: the driver entry point of
 * the call's flavour reads NULL as the legacy or the per-thread stream.
 */
static cudaError_t do_memcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind,
                             cudaStream_t s, enum cemu_flavour fl, bool async)
{
    struct cemu_where wd, ws;
    bool dd, sd;
    int f = fl == CEMU_PTSZ_API;

    if ((unsigned)kind > cudaMemcpyDefault)
        return cudaErrorInvalidMemcpyDirection;
    if (n == 0)
        return cudaSuccess;
    if (!dst || !src)
        return cudaErrorInvalidValue;
    if (!cemu_where_copy(dst, n, src, n, &wd, &ws))
        return cudaErrorInvalidValue;
    dd = wd.kind == CEMU_MEM_DEVICE;
    sd = ws.kind == CEMU_MEM_DEVICE;
    if ((kind == cudaMemcpyHostToHost && (dd || sd)) ||
        (kind == cudaMemcpyHostToDevice && (!dd || sd)) ||
        (kind == cudaMemcpyDeviceToHost && (dd || !sd)) ||
        (kind == cudaMemcpyDeviceToDevice && (!dd || !sd)))
        return cudaErrorInvalidValue;
    if (kind == cudaMemcpyHostToDevice)
        return from_cu(async ? cemu_drv.htod_async[f](DEVP(dst), src, n, s)
                             : cemu_drv.htod[f](DEVP(dst), src, n));
    if (kind == cudaMemcpyDeviceToHost)
        return from_cu(async ? cemu_drv.dtoh_async[f](dst, DEVP(src), n, s)
                             : cemu_drv.dtoh[f](dst, DEVP(src), n));
    return from_cu(async ? cemu_drv.any_async[f](DEVP(dst), DEVP(src), n, s)
                         : cemu_drv.any[f](DEVP(dst), DEVP(src), n));
}

/* cudaDevAttrMaxPitch of current NVIDIA GPUs. */
#define CEMU_MAX_PITCH ((size_t)INT32_MAX)

/* Bytes a 2D region spans from its start: (height-1)*pitch + width, or
 * SIZE_MAX when that overflows. */
static size_t span2d(size_t pitch, size_t width, size_t height)
{
    size_t span;

    if (__builtin_mul_overflow(height - 1, pitch, &span) ||
        __builtin_add_overflow(span, width, &span))
        return SIZE_MAX;
    return span;
}

/* The driver's memory type of a side a kind names (host, device, or
 * unified addressing for cudaMemcpyDefault). */
static CUmemorytype mem_type(enum cudaMemcpyKind kind, bool dst)
{
    switch (kind) {
    case cudaMemcpyHostToHost:
        return CU_MEMORYTYPE_HOST;
    case cudaMemcpyHostToDevice:
        return dst ? CU_MEMORYTYPE_DEVICE : CU_MEMORYTYPE_HOST;
    case cudaMemcpyDeviceToHost:
        return dst ? CU_MEMORYTYPE_HOST : CU_MEMORYTYPE_DEVICE;
    case cudaMemcpyDeviceToDevice:
        return CU_MEMORYTYPE_DEVICE;
    default:
        return CU_MEMORYTYPE_UNIFIED;
    }
}

/*
 * Check the runtime's rules (pitches, kind against where the pointers lie),
 * then make the copy through the driver entry points NVIDIA's runtime
 * looks up for the family (FACTS.md): cuMemcpy2DUnaligned for cudaMemcpy2D,
 * cuMemcpy2DAsync for cudaMemcpy2DAsync, with a CUDA_MEMCPY2D whose memory
 * types the kind names. The stream handle is passed as given.
 */
static cudaError_t do_memcpy2d(void *dst, size_t dpitch, const void *src, size_t spitch,
                               size_t width, size_t height, enum cudaMemcpyKind kind,
                               cudaStream_t s, enum cemu_flavour fl, bool async)
{
    struct cemu_where wd, ws;
    bool dd, sd;
    size_t dspan, sspan, n;
    int f = fl == CEMU_PTSZ_API;
    CUDA_MEMCPY2D p;

    if ((unsigned)kind > cudaMemcpyDefault)
        return cudaErrorInvalidMemcpyDirection;
    if (width > dpitch || width > spitch || dpitch > CEMU_MAX_PITCH || spitch > CEMU_MAX_PITCH)
        return cudaErrorInvalidPitchValue;
    if (width == 0 || height == 0)
        return cudaSuccess;
    if (!dst || !src || !STREAM(s, fl))
        return cudaErrorInvalidValue;
    dspan = span2d(dpitch, width, height);
    sspan = span2d(spitch, width, height);
    if (!cemu_where_copy(dst, dspan, src, sspan, &wd, &ws))
        return cudaErrorInvalidValue;
    dd = wd.kind == CEMU_MEM_DEVICE;
    sd = ws.kind == CEMU_MEM_DEVICE;
    if ((kind == cudaMemcpyHostToHost && (dd || sd)) ||
        (kind == cudaMemcpyHostToDevice && (!dd || sd)) ||
        (kind == cudaMemcpyDeviceToHost && (dd || !sd)) ||
        (kind == cudaMemcpyDeviceToDevice && (!dd || !sd)))
        return cudaErrorInvalidValue;
    if (__builtin_mul_overflow(width, height, &n))
        return cudaErrorInvalidValue;
    memset(&p, 0, sizeof(p));
    p.srcMemoryType = mem_type(kind, false);
    p.srcHost = src;
    p.srcDevice = DEVP(src);
    p.srcPitch = spitch;
    p.dstMemoryType = mem_type(kind, true);
    p.dstHost = dst;
    p.dstDevice = DEVP(dst);
    p.dstPitch = dpitch;
    p.WidthInBytes = width;
    p.Height = height;
    return from_cu(async ? cemu_drv.copy2d_async[f](&p, s) : cemu_drv.copy2d[f](&p));
}

static cudaError_t do_memset(void *p, int value, size_t n, struct CUstream_st *st, bool async)
{
    struct cemu_where w;
    uint64_t seq;

    if (n == 0)
        return cudaSuccess;
    cemu_where(p, &w);
    if (w.kind == CEMU_MEM_PAGEABLE || !w.valid || w.avail < n)
        return cudaErrorInvalidValue;
    seq = cemu_submit_copy(st, w.rw, NULL, n, value, NULL);
    /* Synchronous memset to host-resident (pinned, managed) memory completes first. */
    if (!async && w.kind != CEMU_MEM_DEVICE && seq)
        cemu_stream_wait_seq(st, seq);
    return cudaSuccess;
}

/* ---- device and errors ------------------------------------------------ */

/* CEMU_DEVICES=N (1..CEMU_MAX_DEVICES, default 1) devices share the memory
 * arena; each has its own legacy stream, per-thread streams and events. */
static int device_count(void)
{
    const char *env = getenv("CEMU_DEVICES");
    int n = env ? atoi(env) : 1;

    return n < 1 ? 1 : n > CEMU_MAX_DEVICES ? CEMU_MAX_DEVICES : n;
}

CEMU_EXPORT cudaError_t cudaGetDeviceCount(int *count)
{
    ENTER();
    if (!count)
        return ret(cudaErrorInvalidValue);
    *count = device_count();
    return cudaSuccess;
}

CEMU_EXPORT cudaError_t cudaSetDevice(int device)
{
    ENTER();
    if (device < 0 || device >= device_count())
        return ret(cudaErrorInvalidDevice);
    cemu_set_device(device);
    return cudaSuccess;
}

CEMU_EXPORT cudaError_t cudaGetDevice(int *device)
{
    ENTER();
    if (!device)
        return ret(cudaErrorInvalidValue);
    *device = cemu_get_device();
    return cudaSuccess;
}

CEMU_EXPORT cudaError_t cudaDeviceSynchronize(void)
{
    ENTER();
    cemu_device_sync();
    return cudaSuccess;
}

CEMU_EXPORT cudaError_t cudaDriverGetVersion(int *v)
{
    if (!v)
        return ret(cudaErrorInvalidValue);
    *v = CEMU_CUDART_SOVERSION * 1000;
    return cudaSuccess;
}

CEMU_EXPORT cudaError_t cudaRuntimeGetVersion(int *v)
{
    if (!v)
        return ret(cudaErrorInvalidValue);
    *v = CEMU_CUDART_SOVERSION * 1000;
    return cudaSuccess;
}

CEMU_EXPORT cudaError_t cudaGetLastError(void)
{
    cudaError_t e = last_error;

    last_error = cudaSuccess;
    return e;
}

CEMU_EXPORT cudaError_t cudaPeekAtLastError(void)
{
    return last_error;
}

#define CEMU_ERRORS(X)                                                                             \
    X(cudaSuccess, "no error")                                                                     \
    X(cudaErrorInvalidValue, "invalid argument")                                                   \
    X(cudaErrorMemoryAllocation, "out of memory")                                                  \
    X(cudaErrorInitializationError, "initialization error")                                        \
    X(cudaErrorInvalidDevice, "invalid device ordinal")                                            \
    X(cudaErrorInvalidPitchValue, "invalid pitch argument")                                        \
    X(cudaErrorInvalidMemcpyDirection, "invalid copy direction for memcpy")                        \
    X(cudaErrorInvalidResourceHandle, "invalid resource handle")                                   \
    X(cudaErrorNotReady, "device not ready")                                                       \
    X(cudaErrorHostMemoryAlreadyRegistered,                                                        \
      "part or all of the requested memory range is already mapped")                               \
    X(cudaErrorHostMemoryNotRegistered,                                                            \
      "pointer does not correspond to a registered memory region")                                 \
    X(cudaErrorIllegalState, "the operation cannot be performed in the present state")             \
    X(cudaErrorStreamCaptureUnsupported, "operation not permitted when stream is capturing")       \
    X(cudaErrorStreamCaptureInvalidated,                                                           \
      "operation failed due to a previous error during capture")                                   \
    X(cudaErrorNotSupported, "operation not supported")

CEMU_EXPORT const char *cudaGetErrorString(cudaError_t e)
{
#define X(code, text)                                                                              \
    if (e == code)                                                                                 \
        return text;
    CEMU_ERRORS(X)
#undef X
    return "unknown error";
}

CEMU_EXPORT const char *cudaGetErrorName(cudaError_t e)
{
#define X(code, text)                                                                              \
    if (e == code)                                                                                 \
        return #code;
    CEMU_ERRORS(X)
#undef X
    return "cudaErrorUnknown";
}

/* ---- memory ------------------------------------------------------------ */

CEMU_EXPORT cudaError_t cudaMalloc(void **p, size_t size)
{
    ENTER();
    return ret(cemu_dev_alloc(p, size));
}

CEMU_EXPORT cudaError_t cudaFree(void *p)
{
    struct cemu_where w;

    ENTER();
    /* cudaFree synchronises the device before releasing. */
    cemu_device_sync();
    cemu_where(p, &w);
    if (p && w.kind == CEMU_MEM_MANAGED)
        return ret(cemu_pinned_free(p));
    return ret(cemu_dev_free(p));
}

CEMU_EXPORT cudaError_t cudaMallocHost(void **p, size_t size)
{
    ENTER();
    return ret(cemu_pinned_alloc(p, size, 0));
}

CEMU_EXPORT cudaError_t cudaHostAlloc(void **p, size_t size, unsigned int flags)
{
    ENTER();
    if (flags &
        ~(unsigned)(cudaHostAllocPortable | cudaHostAllocMapped | cudaHostAllocWriteCombined))
        return ret(cudaErrorInvalidValue);
    return ret(cemu_pinned_alloc(p, size, flags));
}

CEMU_EXPORT cudaError_t cudaFreeHost(void *p)
{
    ENTER();
    cemu_device_sync();
    return ret(cemu_pinned_free(p));
}

CEMU_EXPORT cudaError_t cudaHostRegister(void *p, size_t size, unsigned int flags)
{
    ENTER();
    if (flags & ~(unsigned)(cudaHostRegisterPortable | cudaHostRegisterMapped |
                            cudaHostRegisterIoMemory | cudaHostRegisterReadOnly))
        return ret(cudaErrorInvalidValue);
    return ret(cemu_pinned_register(p, size, flags));
}

CEMU_EXPORT cudaError_t cudaHostUnregister(void *p)
{
    ENTER();
    return ret(cemu_pinned_unregister(p));
}

CEMU_EXPORT cudaError_t cudaHostGetDevicePointer(void **pdev, void *host, unsigned int flags)
{
    struct cemu_where w;

    ENTER();
    if (!pdev || flags != 0)
        return ret(cudaErrorInvalidValue);
    cemu_where(host, &w);
    if (w.kind != CEMU_MEM_PINNED && w.kind != CEMU_MEM_MANAGED)
        return ret(cudaErrorInvalidValue);
    *pdev = host;
    return cudaSuccess;
}

CEMU_EXPORT cudaError_t cudaMallocManaged(void **p, size_t size, unsigned int flags)
{
    ENTER();
    (void)flags;
    return ret(cemu_managed_alloc(p, size));
}

CEMU_EXPORT cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *a, const void *p)
{
    struct cemu_where w;

    ENTER();
    if (!a)
        return ret(cudaErrorInvalidValue);
    cemu_where(p, &w);
    memset(a, 0, sizeof(*a));
    switch (w.kind) {
    case CEMU_MEM_DEVICE:
        if (!w.valid)
            return ret(cudaErrorInvalidValue);
        a->type = cudaMemoryTypeDevice;
        a->device = cemu_get_device();
        a->devicePointer = (void *)p;
        break;
    case CEMU_MEM_PINNED:
        a->type = cudaMemoryTypeHost;
        a->devicePointer = (void *)p;
        a->hostPointer = (void *)p;
        break;
    case CEMU_MEM_MANAGED:
        a->type = cudaMemoryTypeManaged;
        a->devicePointer = (void *)p;
        a->hostPointer = (void *)p;
        break;
    case CEMU_MEM_PAGEABLE:
        a->type = cudaMemoryTypeUnregistered;
        a->device = cudaInvalidDeviceId;
        break;
    }
    return cudaSuccess;
}

/* ---- copies and memset, both default-stream flavours -------------------- */

CEMU_EXPORT cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind)
{
    ENTER();
    return ret(do_memcpy(dst, src, n, kind, NULL, CEMU_LEGACY_API, false));
}

CEMU_EXPORT cudaError_t cudaMemcpy_ptds(void *dst, const void *src, size_t n,
                                        enum cudaMemcpyKind kind)
{
    ENTER();
    return ret(do_memcpy(dst, src, n, kind, NULL, CEMU_PTSZ_API, false));
}

CEMU_EXPORT cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n,
                                        enum cudaMemcpyKind kind, cudaStream_t s)
{
    ENTER();
    return ret(do_memcpy(dst, src, n, kind, s, CEMU_LEGACY_API, true));
}

CEMU_EXPORT cudaError_t cudaMemcpyAsync_ptsz(void *dst, const void *src, size_t n,
                                             enum cudaMemcpyKind kind, cudaStream_t s)
{
    ENTER();
    return ret(do_memcpy(dst, src, n, kind, s, CEMU_PTSZ_API, true));
}

CEMU_EXPORT cudaError_t cudaMemcpy2D(void *dst, size_t dpitch, const void *src, size_t spitch,
                                     size_t width, size_t height, enum cudaMemcpyKind kind)
{
    ENTER();
    return ret(
        do_memcpy2d(dst, dpitch, src, spitch, width, height, kind, NULL, CEMU_LEGACY_API, false));
}

CEMU_EXPORT cudaError_t cudaMemcpy2D_ptds(void *dst, size_t dpitch, const void *src, size_t spitch,
                                          size_t width, size_t height, enum cudaMemcpyKind kind)
{
    ENTER();
    return ret(
        do_memcpy2d(dst, dpitch, src, spitch, width, height, kind, NULL, CEMU_PTSZ_API, false));
}

CEMU_EXPORT cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch,
                                          size_t width, size_t height, enum cudaMemcpyKind kind,
                                          cudaStream_t s)
{
    ENTER();
    return ret(
        do_memcpy2d(dst, dpitch, src, spitch, width, height, kind, s, CEMU_LEGACY_API, true));
}

CEMU_EXPORT cudaError_t cudaMemcpy2DAsync_ptsz(void *dst, size_t dpitch, const void *src,
                                               size_t spitch, size_t width, size_t height,
                                               enum cudaMemcpyKind kind, cudaStream_t s)
{
    ENTER();
    return ret(do_memcpy2d(dst, dpitch, src, spitch, width, height, kind, s, CEMU_PTSZ_API, true));
}

CEMU_EXPORT cudaError_t cudaMemset(void *p, int value, size_t n)
{
    ENTER();
    return ret(do_memset(p, value, n, STREAM(NULL, CEMU_LEGACY_API), false));
}

CEMU_EXPORT cudaError_t cudaMemset_ptds(void *p, int value, size_t n)
{
    ENTER();
    return ret(do_memset(p, value, n, STREAM(NULL, CEMU_PTSZ_API), false));
}

CEMU_EXPORT cudaError_t cudaMemsetAsync(void *p, int value, size_t n, cudaStream_t s)
{
    ENTER();
    return ret(do_memset(p, value, n, STREAM(s, CEMU_LEGACY_API), true));
}

CEMU_EXPORT cudaError_t cudaMemsetAsync_ptsz(void *p, int value, size_t n, cudaStream_t s)
{
    ENTER();
    return ret(do_memset(p, value, n, STREAM(s, CEMU_PTSZ_API), true));
}

/* ---- streams ------------------------------------------------------------ */

CEMU_EXPORT cudaError_t cudaStreamCreate(cudaStream_t *ps)
{
    ENTER();
    return ret(cemu_stream_create(ps, cudaStreamDefault));
}

CEMU_EXPORT cudaError_t cudaStreamCreateWithFlags(cudaStream_t *ps, unsigned int flags)
{
    ENTER();
    return ret(cemu_stream_create(ps, flags));
}

CEMU_EXPORT cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    ENTER();
    return ret(cemu_stream_destroy(s));
}

static cudaError_t stream_sync(cudaStream_t s, enum cemu_flavour fl)
{
    struct CUstream_st *st = STREAM(s, fl);

    if (cemu_stream_capturing(st)) {
        cemu_capture_invalidate(st);
        return cudaErrorStreamCaptureUnsupported;
    }
    /* A marker carries the implicit dependencies: synchronising the legacy
     * stream also waits for the blocking streams it waits for. */
    cemu_stream_wait_seq(st, cemu_submit_marker(st));
    return cudaSuccess;
}

CEMU_EXPORT cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    ENTER();
    return ret(stream_sync(s, CEMU_LEGACY_API));
}

CEMU_EXPORT cudaError_t cudaStreamSynchronize_ptsz(cudaStream_t s)
{
    ENTER();
    return ret(stream_sync(s, CEMU_PTSZ_API));
}

static cudaError_t stream_query(cudaStream_t s, enum cemu_flavour fl)
{
    return cemu_stream_idle(STREAM(s, fl)) ? cudaSuccess : cudaErrorNotReady;
}

CEMU_EXPORT cudaError_t cudaStreamQuery(cudaStream_t s)
{
    ENTER();
    return ret(stream_query(s, CEMU_LEGACY_API));
}

CEMU_EXPORT cudaError_t cudaStreamQuery_ptsz(cudaStream_t s)
{
    ENTER();
    return ret(stream_query(s, CEMU_PTSZ_API));
}

static cudaError_t stream_flags(cudaStream_t s, enum cemu_flavour fl, unsigned int *flags)
{
    if (!flags)
        return cudaErrorInvalidValue;
    *flags = cemu_stream_flags(STREAM(s, fl));
    return cudaSuccess;
}

CEMU_EXPORT cudaError_t cudaStreamGetFlags(cudaStream_t s, unsigned int *flags)
{
    ENTER();
    return ret(stream_flags(s, CEMU_LEGACY_API, flags));
}

CEMU_EXPORT cudaError_t cudaStreamGetFlags_ptsz(cudaStream_t s, unsigned int *flags)
{
    ENTER();
    return ret(stream_flags(s, CEMU_PTSZ_API, flags));
}

CEMU_EXPORT cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int flags)
{
    ENTER();
    (void)flags;
    return ret(cemu_stream_wait_event(STREAM(s, CEMU_LEGACY_API), e));
}

CEMU_EXPORT cudaError_t cudaStreamWaitEvent_ptsz(cudaStream_t s, cudaEvent_t e, unsigned int flags)
{
    ENTER();
    (void)flags;
    return ret(cemu_stream_wait_event(STREAM(s, CEMU_PTSZ_API), e));
}

CEMU_EXPORT cudaError_t cudaLaunchHostFunc(cudaStream_t s, cudaHostFn_t fn, void *arg)
{
    ENTER();
    if (!fn)
        return ret(cudaErrorInvalidValue);
    cemu_submit_host_fn(STREAM(s, CEMU_LEGACY_API), fn, arg);
    return cudaSuccess;
}

CEMU_EXPORT cudaError_t cudaLaunchHostFunc_ptsz(cudaStream_t s, cudaHostFn_t fn, void *arg)
{
    ENTER();
    if (!fn)
        return ret(cudaErrorInvalidValue);
    cemu_submit_host_fn(STREAM(s, CEMU_PTSZ_API), fn, arg);
    return cudaSuccess;
}

/* ---- capture ------------------------------------------------------------- */

static cudaError_t is_capturing(cudaStream_t s, enum cemu_flavour fl,
                                enum cudaStreamCaptureStatus *status)
{
    if (!status)
        return cudaErrorInvalidValue;
    *status = cemu_stream_capturing(STREAM(s, fl)) ? cudaStreamCaptureStatusActive
                                                   : cudaStreamCaptureStatusNone;
    return cudaSuccess;
}

CEMU_EXPORT cudaError_t cudaStreamIsCapturing(cudaStream_t s, enum cudaStreamCaptureStatus *status)
{
    ENTER();
    return ret(is_capturing(s, CEMU_LEGACY_API, status));
}

CEMU_EXPORT cudaError_t cudaStreamIsCapturing_ptsz(cudaStream_t s,
                                                   enum cudaStreamCaptureStatus *status)
{
    ENTER();
    return ret(is_capturing(s, CEMU_PTSZ_API, status));
}

CEMU_EXPORT cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode mode)
{
    ENTER();
    (void)mode;
    return ret(cemu_capture_begin(STREAM(s, CEMU_LEGACY_API)));
}

CEMU_EXPORT cudaError_t cudaStreamBeginCapture_ptsz(cudaStream_t s, enum cudaStreamCaptureMode mode)
{
    ENTER();
    (void)mode;
    return ret(cemu_capture_begin(STREAM(s, CEMU_PTSZ_API)));
}

CEMU_EXPORT cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g)
{
    ENTER();
    return ret(cemu_capture_end(STREAM(s, CEMU_LEGACY_API), g));
}

CEMU_EXPORT cudaError_t cudaStreamEndCapture_ptsz(cudaStream_t s, cudaGraph_t *g)
{
    ENTER();
    return ret(cemu_capture_end(STREAM(s, CEMU_PTSZ_API), g));
}

CEMU_EXPORT cudaError_t cudaGraphInstantiate(cudaGraphExec_t *ge, cudaGraph_t g,
                                             unsigned long long flags)
{
    ENTER();
    (void)flags;
    return ret(cemu_graph_instantiate(ge, g));
}

CEMU_EXPORT cudaError_t cudaGraphLaunch(cudaGraphExec_t ge, cudaStream_t s)
{
    ENTER();
    return ret(cemu_graph_launch(ge, STREAM(s, CEMU_LEGACY_API)));
}

CEMU_EXPORT cudaError_t cudaGraphLaunch_ptsz(cudaGraphExec_t ge, cudaStream_t s)
{
    ENTER();
    return ret(cemu_graph_launch(ge, STREAM(s, CEMU_PTSZ_API)));
}

CEMU_EXPORT cudaError_t cudaGraphExecDestroy(cudaGraphExec_t ge)
{
    ENTER();
    free(ge);
    return cudaSuccess;
}

CEMU_EXPORT cudaError_t cudaGraphDestroy(cudaGraph_t g)
{
    ENTER();
    return ret(cemu_graph_destroy(g));
}

/* ---- events -------------------------------------------------------------- */

CEMU_EXPORT cudaError_t cudaEventCreate(cudaEvent_t *e)
{
    ENTER();
    return ret(cemu_event_create(e, cudaEventDefault));
}

CEMU_EXPORT cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags)
{
    ENTER();
    return ret(cemu_event_create(e, flags));
}

CEMU_EXPORT cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    ENTER();
    return ret(cemu_event_destroy(e));
}

CEMU_EXPORT cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    ENTER();
    return ret(cemu_event_record(e, STREAM(s, CEMU_LEGACY_API)));
}

CEMU_EXPORT cudaError_t cudaEventRecord_ptsz(cudaEvent_t e, cudaStream_t s)
{
    ENTER();
    return ret(cemu_event_record(e, STREAM(s, CEMU_PTSZ_API)));
}

CEMU_EXPORT cudaError_t cudaEventQuery(cudaEvent_t e)
{
    ENTER();
    return ret(cemu_event_query(e));
}

CEMU_EXPORT cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    ENTER();
    return ret(cemu_event_sync(e));
}

CEMU_EXPORT cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    ENTER();
    return ret(cemu_event_elapsed(ms, a, b));
}

/* ---- functions not emulated (cemu_stubs_gen.c) ----------------------------- */

int cemu_not_supported(const char *name)
{
    if (getenv("CEMU_TRACE"))
        fprintf(stderr, "cemu: %s is not emulated: cudaErrorNotSupported\n", name);
    return ret(cudaErrorNotSupported);
}

/* The test controls live with the machinery in the driver (cemu_drv.c,
 * cemu_core_client.c). */
