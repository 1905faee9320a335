/*
 * CUDA driver hooks (shim_hooks_cudrv.def): what programs that never call
 * a shared libcudart still reach. A static CUDA runtime (nvcc's default)
 * gets every driver entry point through cuGetProcAddress, which it gets
 * from dlsym on libcuda.so.1 (shim_dl.c substitutes teshim's); driver-API
 * callers (UCX, NIXL) call the copy family directly or look it up.
 *
 * cuGetProcAddress[_v2] forwards to the real one and, where the driver's
 * answer is one of the wrapped copy entry points, keeps that answer as the
 * wrapper's real function and returns the wrapper instead; asked for
 * itself, it returns itself in the ABI asked (v1 before 12000). The stream
 * flavour follows the lookup: flags with the per-thread bit (from 7000)
 * give the _ptds/_ptsz wrapper, anything else the legacy one.
 *
 * The copy wrappers take the runtime hooks' route (shim_cuda.c), through the
 * same copy component (engine/include/teshim/cudacopy.h) with a table of driver entry
 * points: pageable <-> device copies above the threshold are chunked through
 * reused pinned buffers, on the stream the call named (the NULL stream read
 * as CU_STREAM_LEGACY or CU_STREAM_PER_THREAD by the flavour), returning no
 * earlier than the original would have; the 2D wrappers (cuMemcpy2D,
 * cuMemcpy2DUnaligned, cuMemcpy2DAsync) route a CUDA_MEMCPY2D between host
 * and device (or unified) memory types as the runtime's 2D hooks do, rows
 * packed in the pinned buffers. A copy is routed once: a call made
 * while a teshim hook runs on the thread (a runtime hook making its copy,
 * teshim's own chunks) passes through untouched. Pinned, managed,
 * device-to-device, array, small and captured copies pass through. The opt-in
 * register cache is the runtime hooks' only: a driver-level copy that
 * policy wants only registered passes through.
 */
#include "shim.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "teshim/cudacopy.h"
#include "pol_cuda.h"
#include "shim_cuda.h"
#include "teshim/cuda_abi.h"

/* This file defines the rows of shim_hooks_cudrv.def. */
#define HOOK(lib, ...) SHIM_PROTO(__VA_ARGS__)
#include "shim_hooks_cudrv.def"
#undef HOOK

/* The real function of a driver row: what a lookup handed out, or the next
 * definition by name (a program linked with libcuda.so.1). */
static void *real_of(enum shim_hook_id id)
{
    void *fn = shim_adopt_real(id, NULL);

    if (fn)
        return fn;
    return shim_adopt_real(id, shim_dlvsym(shim_hooks[id].name, shim_hooks[id].version));
}

void *shim_real_CUDRV(enum shim_hook_id id, int *rti)
{
    return real_of(id);
}

/* ---- lookups -------------------------------------------------------------- */

/* A wrapped base name: its rows by flavour, and the version from which the
 * driver answers with the ABI the wrapper has. */
struct wrapped {
    const char *base;
    int version;
    enum shim_hook_id legacy, ptds;
};

static const struct wrapped wrapped[] = {
    {"cuMemcpyHtoD", 3020, SHIM_HK_cuMemcpyHtoD_v2_drv, SHIM_HK_cuMemcpyHtoD_v2_ptds_drv},
    {"cuMemcpyDtoH", 3020, SHIM_HK_cuMemcpyDtoH_v2_drv, SHIM_HK_cuMemcpyDtoH_v2_ptds_drv},
    {"cuMemcpyHtoDAsync", 3020, SHIM_HK_cuMemcpyHtoDAsync_v2_drv,
     SHIM_HK_cuMemcpyHtoDAsync_v2_ptsz_drv},
    {"cuMemcpyDtoHAsync", 3020, SHIM_HK_cuMemcpyDtoHAsync_v2_drv,
     SHIM_HK_cuMemcpyDtoHAsync_v2_ptsz_drv},
    {"cuMemcpy", 4000, SHIM_HK_cuMemcpy_drv, SHIM_HK_cuMemcpy_ptds_drv},
    {"cuMemcpyAsync", 4000, SHIM_HK_cuMemcpyAsync_drv, SHIM_HK_cuMemcpyAsync_ptsz_drv},
    {"cuMemcpy2D", 3020, SHIM_HK_cuMemcpy2D_v2_drv, SHIM_HK_cuMemcpy2D_v2_ptds_drv},
    {"cuMemcpy2DUnaligned", 3020, SHIM_HK_cuMemcpy2DUnaligned_v2_drv,
     SHIM_HK_cuMemcpy2DUnaligned_v2_ptds_drv},
    {"cuMemcpy2DAsync", 3020, SHIM_HK_cuMemcpy2DAsync_v2_drv, SHIM_HK_cuMemcpy2DAsync_v2_ptsz_drv},
};

/* The wrapper for real function p of row id, adopting p; p itself when the
 * row already forwards to another function. */
static void *adopt(enum shim_hook_id id, void *p)
{
    return shim_adopt_real(id, p) == p ? shim_hook_addr(id) : p;
}

/* What a lookup of symbol (version, flags) that answered *pfn hands out. */
static void *translate(const char *symbol, int version, uint64_t flags, void *p)
{
    bool ptds = (flags & CUABI_CU_GET_PROC_ADDRESS_PER_THREAD) && version >= 7000;

    if (strcmp(symbol, "cuGetProcAddress") == 0) {
        if (version >= 12000)
            return adopt(SHIM_HK_cuGetProcAddress_v2_drv, p);
        if (version >= 11030)
            return adopt(SHIM_HK_cuGetProcAddress_drv, p);
        return p;
    }
    for (size_t i = 0; i < sizeof(wrapped) / sizeof(wrapped[0]); i++)
        if (strcmp(symbol, wrapped[i].base) == 0)
            return version >= wrapped[i].version
                       ? adopt(ptds ? wrapped[i].ptds : wrapped[i].legacy, p)
                       : p;
    return p;
}

void *shim_cudrv_substitute(const char *name, void *p)
{
    for (int id = 0; id < SHIM_HK_COUNT; id++)
        if (shim_hooks[id].lib == SHIM_LIB_CUDRV && strcmp(shim_hooks[id].name, name) == 0)
            return shim_in_library(p, "libcuda.so") ? adopt((enum shim_hook_id)id, p) : p;
    return p;
}

/* Count one lookup, one outcome per call. Substitution is made whatever
 * the thread is doing (a runtime opening the driver from inside another
 * hook, its first cudaMemcpy, must still get the wrappers), so every call
 * is counted too, without entering: nothing here needs the configuration. */
static void count_lookup(enum shim_hook_id id, bool changed, shim_CUresult rc)
{
    shim_count_call(id);
    shim_count_result(id, changed ? SHIM_C_INJECTED : SHIM_C_NOT_APPLICABLE, rc, 0);
}

shim_CUresult shim_hook_cuGetProcAddress_v2_drv(const char *symbol, void **pfn, int version,
                                                uint64_t flags, int *status)
{
    shim_fn_cuGetProcAddress_v2_drv real;
    void *fn = real_of(SHIM_HK_cuGetProcAddress_v2_drv);
    shim_CUresult rc;
    void *was;

    if (!fn)
        return CUABI_CU_ERROR_NOT_FOUND;
    memcpy(&real, &fn, sizeof(real));
    rc = real(symbol, pfn, version, flags, status);
    if (rc != CUABI_CU_SUCCESS || !symbol || !pfn || !*pfn) {
        count_lookup(SHIM_HK_cuGetProcAddress_v2_drv, false, rc);
        return rc;
    }
    was = *pfn;
    *pfn = translate(symbol, version, flags, was);
    count_lookup(SHIM_HK_cuGetProcAddress_v2_drv, *pfn != was, rc);
    return rc;
}

shim_CUresult shim_hook_cuGetProcAddress_drv(const char *symbol, void **pfn, int version,
                                             uint64_t flags)
{
    shim_fn_cuGetProcAddress_drv real;
    void *fn = real_of(SHIM_HK_cuGetProcAddress_drv);
    shim_CUresult rc;
    void *was;

    if (!fn)
        return CUABI_CU_ERROR_NOT_FOUND;
    memcpy(&real, &fn, sizeof(real));
    rc = real(symbol, pfn, version, flags);
    if (rc != CUABI_CU_SUCCESS || !symbol || !pfn || !*pfn) {
        count_lookup(SHIM_HK_cuGetProcAddress_drv, false, rc);
        return rc;
    }
    was = *pfn;
    *pfn = translate(symbol, version, flags, was);
    count_lookup(SHIM_HK_cuGetProcAddress_drv, *pfn != was, rc);
    return rc;
}

/* ---- the driver entry points teshim's own copies use ---------------------- */

struct drv {
    shim_CUresult (*mem_alloc_host)(void **p, size_t n);
    shim_CUresult (*mem_free_host)(void *p);
    shim_CUresult (*htod_async)(shim_CUdeviceptr dst, const void *src, size_t n,
                                struct CUstream_st *s);
    shim_CUresult (*dtoh_async)(void *dst, shim_CUdeviceptr src, size_t n, struct CUstream_st *s);
    shim_CUresult (*copy2d_async)(const struct cuabi_memcpy2d *p, struct CUstream_st *s);
    shim_CUresult (*event_create)(struct CUevent_st **e, unsigned flags);
    shim_CUresult (*event_destroy)(struct CUevent_st *e);
    shim_CUresult (*event_record)(struct CUevent_st *e, struct CUstream_st *s);
    shim_CUresult (*event_query)(struct CUevent_st *e);
    shim_CUresult (*event_synchronize)(struct CUevent_st *e);
    shim_CUresult (*pointer_get_attribute)(void *data, int attr, shim_CUdeviceptr p);
    shim_CUresult (*stream_is_capturing)(struct CUstream_st *s, int *status);
    shim_CUresult (*ctx_get_device)(int *dev);
    bool ok;
};

static struct drv drv;
static pthread_once_t drv_once = PTHREAD_ONCE_INIT;

/* Through the real cuGetProcAddress (the one the host's lookups reached,
 * or the next by name), at the version whose ABI the table has. */
static void drv_resolve(void)
{
    void *v2 = real_of(SHIM_HK_cuGetProcAddress_v2_drv);
    void *v1 = v2 ? NULL : real_of(SHIM_HK_cuGetProcAddress_drv);
    const char *missing = NULL;

#define DRV_SYM(field, name, ver)                                                                  \
    do {                                                                                           \
        void *p_ = NULL;                                                                           \
        if (v2) {                                                                                  \
            shim_fn_cuGetProcAddress_v2_drv f_;                                                    \
            memcpy(&f_, &v2, sizeof(f_));                                                          \
            f_(name, &p_, ver, 0, NULL);                                                           \
        } else if (v1) {                                                                           \
            shim_fn_cuGetProcAddress_drv f_;                                                       \
            memcpy(&f_, &v1, sizeof(f_));                                                          \
            f_(name, &p_, ver, 0);                                                                 \
        }                                                                                          \
        if (!p_)                                                                                   \
            missing = name;                                                                        \
        memcpy(&drv.field, &p_, sizeof(p_));                                                       \
    } while (0)
    DRV_SYM(mem_alloc_host, "cuMemAllocHost", 3020);
    DRV_SYM(mem_free_host, "cuMemFreeHost", 2000);
    DRV_SYM(htod_async, "cuMemcpyHtoDAsync", 3020);
    DRV_SYM(dtoh_async, "cuMemcpyDtoHAsync", 3020);
    DRV_SYM(copy2d_async, "cuMemcpy2DAsync", 3020);
    DRV_SYM(event_create, "cuEventCreate", 2000);
    DRV_SYM(event_destroy, "cuEventDestroy", 4000);
    DRV_SYM(event_record, "cuEventRecord", 2000);
    DRV_SYM(event_query, "cuEventQuery", 2000);
    DRV_SYM(event_synchronize, "cuEventSynchronize", 2000);
    DRV_SYM(pointer_get_attribute, "cuPointerGetAttribute", 4000);
    DRV_SYM(stream_is_capturing, "cuStreamIsCapturing", 10000);
    DRV_SYM(ctx_get_device, "cuCtxGetDevice", 2000);
#undef DRV_SYM
    drv.ok = missing == NULL;
    if (missing)
        shim_warn("cuda driver: %s not found; driver-level copies pass through", missing);
}

/* The copy component's table, over the driver: same codes (0, 2 out of
 * memory, 600 not ready), explicit stream handles. */
static int a_malloc_host(void **p, size_t n)
{
    return drv.mem_alloc_host(p, n);
}

static int a_free_host(void *p)
{
    return drv.mem_free_host(p);
}

static int a_memcpy_async(void *dst, const void *src, size_t n, int kind, struct CUstream_st *s)
{
    if (kind == CUABI_MEMCPY_H2D)
        return drv.htod_async((shim_CUdeviceptr)(uintptr_t)dst, src, n, s);
    return drv.dtoh_async(dst, (shim_CUdeviceptr)(uintptr_t)src, n, s);
}

/* Host rows to or from device rows, as the component's chunks need them. */
static int a_memcpy2d_async(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                            size_t height, int kind, struct CUstream_st *s)
{
    bool h2d = kind == CUABI_MEMCPY_H2D;
    struct cuabi_memcpy2d p = {
        .srcMemoryType = h2d ? CUABI_CU_MEMORYTYPE_HOST : CUABI_CU_MEMORYTYPE_DEVICE,
        .srcHost = src,
        .srcDevice = (shim_CUdeviceptr)(uintptr_t)src,
        .srcPitch = spitch,
        .dstMemoryType = h2d ? CUABI_CU_MEMORYTYPE_DEVICE : CUABI_CU_MEMORYTYPE_HOST,
        .dstHost = dst,
        .dstDevice = (shim_CUdeviceptr)(uintptr_t)dst,
        .dstPitch = dpitch,
        .WidthInBytes = width,
        .Height = height,
    };

    return drv.copy2d_async(&p, s);
}

static int a_event_create(struct CUevent_st **e, unsigned flags)
{
    return drv.event_create(e, flags);
}

static int a_event_destroy(struct CUevent_st *e)
{
    return drv.event_destroy(e);
}

static int a_event_record(struct CUevent_st *e, struct CUstream_st *s)
{
    return drv.event_record(e, s);
}

static int a_event_query(struct CUevent_st *e)
{
    return drv.event_query(e);
}

static int a_event_synchronize(struct CUevent_st *e)
{
    return drv.event_synchronize(e);
}

static const struct scc_api drv_api = {
    .malloc_host = a_malloc_host,
    .free_host = a_free_host,
    .memcpy_async = a_memcpy_async,
    .event_create_with_flags = a_event_create,
    .event_destroy = a_event_destroy,
    .event_record = a_event_record,
    .event_query = a_event_query,
    .event_synchronize = a_event_synchronize,
    .memcpy2d_async = a_memcpy2d_async,
};

/* ---- per-thread pools ------------------------------------------------------ */

#define DRV_MAX_DEVICES 16

struct dpool {
    struct scc_pool pool;
    unsigned gen;
};

static pthread_key_t pool_key;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static unsigned fork_gen;
static __thread struct dpool *tls_pools[DRV_MAX_DEVICES] __attribute__((tls_model("initial-exec")));

static void dpool_thread_exit(void *arg)
{
    struct dpool **pools = arg;

    for (int d = 0; d < DRV_MAX_DEVICES; d++) {
        struct dpool *dp = pools[d];
        if (!dp)
            continue;
        if (dp->gen == fork_gen)
            scc_pool_destroy(&dp->pool);
        free(dp);
        pools[d] = NULL;
    }
}

/* The budget is reset for a forked child by its owner (shim_cuda.c). */
static void dpool_atfork_child(void)
{
    fork_gen++;
}

static void pool_init_once(void)
{
    /* One budget for all the pinned memory teshim holds (cuda.pinned_max_bytes):
     * the runtime hooks' pools and cached registrations, and these. */
    shim_cuda_once();
    pthread_key_create(&pool_key, dpool_thread_exit);
    pthread_atfork(NULL, NULL, dpool_atfork_child);
}

static struct scc_pool *dpool_get(const struct pol_cuda_copy_dec *dec)
{
    struct dpool *dp;
    int dev = 0, err;

    pthread_once(&pool_once, pool_init_once);
    if (drv.ctx_get_device(&dev) != CUABI_CU_SUCCESS || dev < 0 || dev >= DRV_MAX_DEVICES)
        return NULL;
    dp = tls_pools[dev];
    if (dp && dp->gen != fork_gen) {
        scc_pool_forget(&dp->pool);
        free(dp);
        dp = tls_pools[dev] = NULL;
    }
    if (dp)
        return &dp->pool;
    dp = calloc(1, sizeof(*dp));
    if (!dp)
        return NULL;
    err = scc_pool_init(&dp->pool, &drv_api, &shim_cuda_budget, dec->chunk, dec->buffers);
    if (err) {
        shim_log_once(POL_LOG_WARN,
                      "cuda driver: no pinned bounce pool (%s); copies pass through unchanged",
                      err == -ENOSPC ? "cuda.pinned_max_bytes reached" : "allocation failed");
        free(dp);
        return NULL;
    }
    dp->gen = fork_gen;
    tls_pools[dev] = dp;
    pthread_setspecific(pool_key, tls_pools);
    return &dp->pool;
}

/* ---- the copy wrappers ------------------------------------------------------- */

struct dcall {
    enum shim_hook_id id;
    bool async, ptds;
    int kind; /* cudaMemcpyKind the call implies: H2D, D2H, or Default (unified) */
    void *dst;
    const void *src;
    size_t n;
    struct CUstream_st *stream;
    /* 2D only: the call's argument and, where teshim may bounce it, its
     * rows (dst and src their first bytes); width 0 when it may not. */
    bool is2d;
    const struct cuabi_memcpy2d *p2d;
    size_t dpitch, spitch, width, height;
};

static shim_CUresult call_real(const struct dcall *c, void *fn)
{
    shim_CUdeviceptr d = (shim_CUdeviceptr)(uintptr_t)c->dst;
    shim_CUdeviceptr s = (shim_CUdeviceptr)(uintptr_t)c->src;

    if (c->is2d && c->async) {
        shim_fn_cuMemcpy2DAsync_v2_drv f;
        memcpy(&f, &fn, sizeof(f));
        return f(c->p2d, c->stream);
    }
    if (c->is2d) {
        shim_fn_cuMemcpy2D_v2_drv f;
        memcpy(&f, &fn, sizeof(f));
        return f(c->p2d);
    }

    if (c->kind == CUABI_MEMCPY_H2D && c->async) {
        shim_fn_cuMemcpyHtoDAsync_v2_drv f;
        memcpy(&f, &fn, sizeof(f));
        return f(d, c->src, c->n, c->stream);
    }
    if (c->kind == CUABI_MEMCPY_H2D) {
        shim_fn_cuMemcpyHtoD_v2_drv f;
        memcpy(&f, &fn, sizeof(f));
        return f(d, c->src, c->n);
    }
    if (c->kind == CUABI_MEMCPY_D2H && c->async) {
        shim_fn_cuMemcpyDtoHAsync_v2_drv f;
        memcpy(&f, &fn, sizeof(f));
        return f(c->dst, s, c->n, c->stream);
    }
    if (c->kind == CUABI_MEMCPY_D2H) {
        shim_fn_cuMemcpyDtoH_v2_drv f;
        memcpy(&f, &fn, sizeof(f));
        return f(c->dst, s, c->n);
    }
    if (c->async) {
        shim_fn_cuMemcpyAsync_drv f;
        memcpy(&f, &fn, sizeof(f));
        return f(d, s, c->n, c->stream);
    }
    shim_fn_cuMemcpy_drv f;
    memcpy(&f, &fn, sizeof(f));
    return f(d, s, c->n);
}

static enum pol_cuda_mem mem_of(const void *p)
{
    unsigned type = 0, managed = 0;
    shim_CUresult r;

    r = drv.pointer_get_attribute(&type, CUABI_CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
                                  (shim_CUdeviceptr)(uintptr_t)p);
    if (r == CUABI_CU_ERROR_INVALID_VALUE)
        return POL_CUDA_MEM_PAGEABLE; /* memory the driver does not know */
    if (r != CUABI_CU_SUCCESS)
        return POL_CUDA_MEM_UNKNOWN;
    if (type == CUABI_CU_MEMORYTYPE_HOST)
        return POL_CUDA_MEM_PINNED;
    if (type == CUABI_CU_MEMORYTYPE_UNIFIED)
        return POL_CUDA_MEM_MANAGED;
    if (type != CUABI_CU_MEMORYTYPE_DEVICE)
        return POL_CUDA_MEM_UNKNOWN;
    if (drv.pointer_get_attribute(&managed, CUABI_CU_POINTER_ATTRIBUTE_IS_MANAGED,
                                  (shim_CUdeviceptr)(uintptr_t)p) != CUABI_CU_SUCCESS)
        return POL_CUDA_MEM_UNKNOWN;
    return managed ? POL_CUDA_MEM_MANAGED : POL_CUDA_MEM_DEVICE;
}

static shim_CUresult bounce(const struct dcall *c, const struct pol_cuda_copy_dec *dec,
                            struct CUstream_st *stream, void *fn, enum shim_ctr *o)
{
    struct scc_pool *pool = dpool_get(dec);
    struct scc_xfer x;
    int err;

    if (!pool) {
        *o = SHIM_C_FALLBACKS;
        return call_real(c, fn);
    }
    err = shim_cuda_xfer_start(&x, pool, dec->dir == POL_CUDA_H2D, c->dst, c->dpitch, c->src,
                               c->spitch, c->is2d ? c->width : c->n, c->is2d ? c->height : 0,
                               stream, c->async);
    if (err) { /* nothing was issued */
        *o = SHIM_C_FALLBACKS;
        return call_real(c, fn);
    }
    err = scc_xfer_run(&x);
    if (err) {
        shim_log_once(POL_LOG_INFO, "cuda driver: bounced copy failed (error %d); made unchanged",
                      err);
        scc_pool_drain(pool);
        *o = SHIM_C_FALLBACKS;
        return call_real(c, fn);
    }
    *o = SHIM_C_INJECTED;
    shim_count_bytes(c->id, c->n);
    return CUABI_CU_SUCCESS;
}

/* The copy wrappers' common body, after SHIM_GENERATE's prologue (a call
 * made while a teshim hook runs on the thread, a runtime hook's copy or
 * teshim's own chunks, was passed through there: routed already). */
static shim_CUresult copy_hook(const struct dcall *c, void *fn)
{
    struct pol_cuda_copy req = {0};
    struct pol_cuda_copy_dec dec;
    struct CUstream_st *stream;
    enum pol_verdict v;
    enum shim_ctr o;
    shim_CUresult rc;
    int status = 0;

    v = pol_cuda_copy_quick(shim_cfg(), c->n);
    if (v == POL_INJECT && c->is2d && !c->width)
        v = POL_NOT_APPLICABLE; /* a 2D copy teshim leaves to the driver */
    if (v != POL_INJECT) {
        o = shim_verdict_ctr(v);
        rc = call_real(c, fn);
        goto out;
    }
    pthread_once(&drv_once, drv_resolve);
    if (!drv.ok) {
        o = SHIM_C_FALLBACKS;
        rc = call_real(c, fn);
        goto out;
    }
    stream = c->stream ? c->stream : c->ptds ? CUABI_STREAM_PER_THREAD : CUABI_STREAM_LEGACY;
    req.bytes = c->n;
    req.kind = c->kind;
    req.src = mem_of(c->src);
    req.dst = mem_of(c->dst);
    if (drv.stream_is_capturing(stream, &status) != CUABI_CU_SUCCESS)
        status = 1; /* unknown: treat as capturing */
    req.capturing = status != 0;
    v = pol_cuda_copy(shim_cfg(), &req, &dec);
    if (v == POL_INJECT && !dec.bounce)
        v = POL_NOT_APPLICABLE; /* registration only: the runtime hooks' business */
    if (v != POL_INJECT) {
        o = shim_verdict_ctr(v);
        rc = call_real(c, fn);
        goto out;
    }
    rc = bounce(c, &dec, stream, fn, &o);
out:
    shim_count_result(c->id, o, rc, 0);
    return rc;
}

/*
 * The bodies of the generated copy wrappers (shim_hooks_cudrv.def, SHAPE
 * (GEN, DRV_COPY[_ASYNC], flavour, kind)): the kind the entry point
 * implies, its pointers whichever their type (CUdeviceptr or host).
 */
static shim_CUresult drv_copy(enum shim_hook_id id, void *fn, bool async, bool pt, int kind,
                              void *dst, const void *src, size_t n, struct CUstream_st *s)
{
    struct dcall c = {id, async, pt, kind, dst, src, n, s, false, NULL, 0, 0, 0, 0};

    return copy_hook(&c, fn);
}

/* One side of a CUDA_MEMCPY2D as teshim may bounce it: its memory type
 * (host, device, or unified: the pointer tells) and first byte. false for
 * arrays and other types, X + width beyond the pitch, a pitch above
 * cudaDevAttrMaxPitch of current GPUs (2^31 - 1), a geometry that
 * overflows: the driver's own business (or error). */
static bool side_2d(int type, const void *hp, shim_CUdeviceptr dp, size_t x, size_t y, size_t pitch,
                    size_t width, size_t height, void **at)
{
    uintptr_t base = type == CUABI_CU_MEMORYTYPE_HOST ? (uintptr_t)hp : (uintptr_t)dp;
    size_t end, span;

    if (type != CUABI_CU_MEMORYTYPE_HOST && type != CUABI_CU_MEMORYTYPE_DEVICE &&
        type != CUABI_CU_MEMORYTYPE_UNIFIED)
        return false;
    if (!base || pitch > (size_t)INT32_MAX || __builtin_add_overflow(x, width, &end) ||
        end > pitch || __builtin_mul_overflow(y, pitch, &end) ||
        __builtin_add_overflow(end, x, &end) || __builtin_add_overflow(base, end, &base) ||
        __builtin_mul_overflow(height - 1, pitch, &span) ||
        __builtin_add_overflow(span, width, &span) || __builtin_add_overflow(base, span, &end))
        return false;
    *at = (void *)base;
    return true;
}

/*
 * The bodies of the 2D wrappers. The memory types give the kind: a host
 * side to a device or unified one is H2D, the reverse D2H, unified on both
 * sides Default (the pointers tell, as for cuMemcpy); the policy then
 * checks the pointers against it, as for the 1D copies, so only pageable
 * host memory to or from device memory is bounced. Host-to-host and
 * device-to-device types, arrays and what side_2d refuses pass through.
 */
static shim_CUresult drv_copy2d(enum shim_hook_id id, void *fn, bool async, bool pt,
                                const struct cuabi_memcpy2d *p, struct CUstream_st *s)
{
    struct dcall c = {.id = id, .async = async, .ptds = pt, .stream = s, .is2d = true, .p2d = p};
    int st, dt;
    void *src;

    if (!p || __builtin_mul_overflow(p->WidthInBytes, p->Height, &c.n))
        return copy_hook(&c, fn);
    st = p->srcMemoryType;
    dt = p->dstMemoryType;
    if (!p->WidthInBytes || !p->Height || (st == dt && st != CUABI_CU_MEMORYTYPE_UNIFIED) ||
        !side_2d(st, p->srcHost, p->srcDevice, p->srcXInBytes, p->srcY, p->srcPitch,
                 p->WidthInBytes, p->Height, &src) ||
        !side_2d(dt, p->dstHost, p->dstDevice, p->dstXInBytes, p->dstY, p->dstPitch,
                 p->WidthInBytes, p->Height, &c.dst))
        return copy_hook(&c, fn);
    c.src = src;
    if (st == CUABI_CU_MEMORYTYPE_HOST || dt == CUABI_CU_MEMORYTYPE_DEVICE)
        c.kind = CUABI_MEMCPY_H2D;
    else if (dt == CUABI_CU_MEMORYTYPE_HOST || st == CUABI_CU_MEMORYTYPE_DEVICE)
        c.kind = CUABI_MEMCPY_D2H;
    else
        c.kind = CUABI_MEMCPY_DEFAULT;
    c.spitch = p->srcPitch;
    c.dpitch = p->dstPitch;
    c.width = p->WidthInBytes;
    c.height = p->Height;
    return copy_hook(&c, fn);
}

#define DEVP(x) ((void *)(uintptr_t)(x))
#define DRV_COPY(id, fn, rt, pt, kind, dst, src, n)                                                \
    drv_copy(id, fn, false, pt, kind, DEVP(dst), DEVP(src), n, NULL)
#define DRV_COPY_ASYNC(id, fn, rt, pt, kind, dst, src, n, s)                                       \
    drv_copy(id, fn, true, pt, kind, DEVP(dst), DEVP(src), n, s)
#define DRV_COPY2D(id, fn, rt, pt, p) drv_copy2d(id, fn, false, pt, p, NULL)
#define DRV_COPY2D_ASYNC(id, fn, rt, pt, p, s) drv_copy2d(id, fn, true, pt, p, s)

/* The 18 copy wrappers, generated from their rows (cuGetProcAddress and
 * cuGetProcAddress_v2 are written by hand, above). */
#define HOOK(...) SHIM_GENERATE(__VA_ARGS__)
#include "shim_hooks_cudrv.def"
#undef HOOK

#define HOOK(lib, ...) SHIM_SYMVER(__VA_ARGS__)
#include "shim_hooks_cudrv.def"
#undef HOOK
