/*
 * CUDA runtime hooks: copies between device memory and pageable host memory
 * through reused pinned bounce buffers (engine/eng_cudacopy.c), or through
 * the opt-in cache of cudaHostRegister'ed application ranges (shim_cuda_rc.c).
 * The cudaMemcpy2D family
 * takes the same route, its rows packed into the pinned buffers; a 2D call
 * whose geometry the runtime would refuse (width above a pitch, ...) passes
 * through so the application gets the runtime's own error.
 *
 * Contract kept (docs/cuda.md):
 *   - same stream: the copy's chunks go on the stream the original call
 *     used, the NULL stream read as the call's flavour does (legacy for
 *     cudaMemcpy/cudaMemcpyAsync, per-thread for _ptds/_ptsz), so every
 *     cross-stream rule holds;
 *   - same return time or later, never earlier: device->host returns after
 *     the data arrived; host->device from cudaMemcpy after the device copy
 *     completed; from cudaMemcpyAsync once the source was consumed (copied
 *     into pinned buffers), as the runtime does for pageable sources;
 *   - the application's last-error state: we only act when it is
 *     cudaSuccess (cudaPeekAtLastError), and any error our own calls raise
 *     is cleared (cudaGetLastError) before the original call is made
 *     unchanged, so the application sees the runtime's own return value and
 *     error state for it;
 *   - pinned, managed, device-to-device, small and captured copies pass
 *     through.
 * The runtime is never linked: every entry point is looked up with dlvsym
 * under the version of the hook that was called (libcudart.so.12 or .13).
 */
#include "shim.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pol_cuda.h"
#include "shim_cuda.h"

/* This file defines the rows of shim_hooks_cuda.def. */
#define HOOK(lib, ...) SHIM_PROTO(__VA_ARGS__)
#include "shim_hooks_cuda.def"
#undef HOOK

/* ---- the runtime's entry points, per symbol version --------------------- */

const char *const shim_cuda_rt_versions[RT_N] = {"libcudart.so.12", "libcudart.so.13"};

static struct cuda_rt rts[RT_N];
static pthread_once_t rt_once[RT_N] = {PTHREAD_ONCE_INIT, PTHREAD_ONCE_INIT};

#define RT_SYM(field, name)                                                                        \
    do {                                                                                           \
        void *p_ = dlvsym_ver(name, v);                                                            \
        if (!p_)                                                                                   \
            missing = name;                                                                        \
        memcpy(&rt->field, &p_, sizeof(p_));                                                       \
    } while (0)

static void *dlvsym_ver(const char *name, const char *version)
{
    return shim_dlvsym(name, version);
}

static void rt_resolve(int i)
{
    struct cuda_rt *rt = &rts[i];
    const char *v = shim_cuda_rt_versions[i];
    const char *missing = NULL;
    void *p2d;

    RT_SYM(scc.malloc_host, "cudaMallocHost");
    RT_SYM(scc.free_host, "cudaFreeHost");
    RT_SYM(scc.memcpy_async, "cudaMemcpyAsync");
    RT_SYM(scc.event_create_with_flags, "cudaEventCreateWithFlags");
    RT_SYM(scc.event_destroy, "cudaEventDestroy");
    RT_SYM(scc.event_record, "cudaEventRecord");
    RT_SYM(scc.event_query, "cudaEventQuery");
    RT_SYM(scc.event_synchronize, "cudaEventSynchronize");
    RT_SYM(pointer_get_attributes, "cudaPointerGetAttributes");
    RT_SYM(stream_is_capturing, "cudaStreamIsCapturing");
    RT_SYM(peek_at_last_error, "cudaPeekAtLastError");
    RT_SYM(get_last_error, "cudaGetLastError");
    RT_SYM(host_register, "cudaHostRegister");
    RT_SYM(host_unregister, "cudaHostUnregister");
    RT_SYM(get_device, "cudaGetDevice");
    RT_SYM(stream_synchronize, "cudaStreamSynchronize");
    rt->ok = missing == NULL;
    /* Optional: without it 2D copies whose rows fit a chunk pass through. */
    p2d = dlvsym_ver("cudaMemcpy2DAsync", v);
    memcpy(&rt->scc.memcpy2d_async, &p2d, sizeof(p2d));
    if (missing)
        shim_warn("cuda: %s@%s not found; CUDA copies pass through", missing, v);
}

static void rt_resolve_12(void)
{
    rt_resolve(RT_12);
}

static void rt_resolve_13(void)
{
    rt_resolve(RT_13);
}

struct cuda_rt *shim_cuda_rt_get(int i)
{
    pthread_once(&rt_once[i], i == RT_12 ? rt_resolve_12 : rt_resolve_13);
    return rts[i].ok ? &rts[i] : NULL;
}

/* ---- pinned budget, per-thread pools, fork -------------------------------- */

/* Events belong to the device current when they were made, so a thread
 * keeps one pool per device it copies on (up to SHIM_CUDA_MAX_DEVICES). */
#define SHIM_CUDA_MAX_DEVICES 16

struct tpool {
    struct scc_pool pool;
    unsigned gen; /* fork generation that made it */
    int rt;
    int device;
    struct tpool *next_free;
};

struct scc_budget shim_cuda_budget;
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tpool *free_pools; /* pools of threads that exited, for reuse */
static pthread_key_t pool_key;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static unsigned fork_gen;
static __thread struct tpool *tls_pools[SHIM_CUDA_MAX_DEVICES]
    __attribute__((tls_model("initial-exec")));

/* A forked child may not use the parent's runtime state: forget every pool
 * and registration without calling the runtime, and start the budget anew. */
static void cuda_atfork_child(void)
{
    fork_gen++;
    free_pools = NULL;
    atomic_store(&shim_cuda_budget.used, 0);
    pthread_mutex_init(&pool_lock, NULL);
    shim_rc_forget_all();
}

/* A thread exits: its pools wait for the next thread. */
static void pool_thread_exit(void *arg)
{
    struct tpool **pools = arg;

    pthread_mutex_lock(&pool_lock);
    for (int d = 0; d < SHIM_CUDA_MAX_DEVICES; d++) {
        struct tpool *tp = pools[d];
        if (!tp || tp->gen != fork_gen)
            continue;
        tp->next_free = free_pools;
        free_pools = tp;
        pools[d] = NULL;
    }
    pthread_mutex_unlock(&pool_lock);
}

static void pool_init_once(void)
{
    shim_cuda_budget.max = (size_t)pol_int(shim_cfg(), POL_CUDA_PINNED_MAX_BYTES);
    pthread_key_create(&pool_key, pool_thread_exit);
    pthread_atfork(NULL, NULL, cuda_atfork_child);
}

void shim_cuda_once(void)
{
    pthread_once(&pool_once, pool_init_once);
}

/*
 * This thread's pool for runtime rt on the current device, made on first
 * use. NULL when the budget or the runtime refused: the caller passes
 * through and counts a fallback. Any error the runtime recorded for a failed
 * call is cleared.
 */
static struct scc_pool *pool_get(struct cuda_rt *rt, int rti, const struct pol_cuda_copy_dec *dec)
{
    struct tpool *tp;
    int dev = 0, err;

    shim_cuda_once();
    if (rt->get_device(&dev) != SHIM_CUDA_SUCCESS) {
        rt->get_last_error();
        return NULL;
    }
    if (dev < 0 || dev >= SHIM_CUDA_MAX_DEVICES)
        return NULL;
    tp = tls_pools[dev];
    if (tp && tp->gen != fork_gen) {
        /* Made by the parent before fork: not ours to use or free. */
        scc_pool_forget(&tp->pool);
        tp = tls_pools[dev] = NULL;
    }
    if (tp)
        return tp->rt == rti ? &tp->pool : NULL; /* two runtimes: keep to the first */
    pthread_mutex_lock(&pool_lock);
    for (struct tpool **pp = &free_pools; *pp; pp = &(*pp)->next_free)
        if ((*pp)->rt == rti && (*pp)->device == dev) {
            tp = *pp;
            *pp = tp->next_free;
            break;
        }
    pthread_mutex_unlock(&pool_lock);
    if (!tp) {
        tp = calloc(1, sizeof(*tp));
        if (!tp)
            return NULL;
        err = scc_pool_init(&tp->pool, &rt->scc, &shim_cuda_budget, dec->chunk, dec->buffers);
        if (err) {
            if (err > 0)
                rt->get_last_error();
            shim_log_once(POL_LOG_WARN,
                          "cuda: no pinned bounce pool (%s); copies pass through unchanged",
                          err == -ENOSPC ? "cuda.pinned_max_bytes reached" : "allocation failed");
            free(tp);
            return NULL;
        }
        /* Its host memcpy shared with the process's copy threads. */
        scc_pool_set_threads(&tp->pool, dec->threads, 0);
        tp->gen = fork_gen;
        tp->rt = rti;
        tp->device = dev;
    }
    tls_pools[dev] = tp;
    pthread_setspecific(pool_key, tls_pools);
    return &tp->pool;
}

/* ---- the hooks -------------------------------------------------------------- */

struct cu_call {
    enum shim_hook_id id;
    void *real;
    int rt;
    bool async;
    bool ptsz; /* per-thread default stream flavour */
    bool is2d; /* the cudaMemcpy2D family */
    void *dst;
    const void *src;
    size_t n; /* bytes moved (width * height for 2D, SIZE_MAX if that overflows) */
    int kind;
    struct CUstream_st *stream;
    /* 2D only: the application's geometry. */
    size_t dpitch, spitch, width, height;
    /* Bytes each side spans: n for 1D, (height-1)*pitch + width for 2D
     * (0 when the geometry is one the runtime refuses, see geom_ok). */
    size_t dspan, sspan;
};

static shim_cudaError_t call_real(const struct cu_call *c)
{
    if (c->is2d && c->async) {
        shim_fn_cudaMemcpy2DAsync_13 fn;
        memcpy(&fn, &c->real, sizeof(fn));
        return fn(c->dst, c->dpitch, c->src, c->spitch, c->width, c->height, c->kind, c->stream);
    }
    if (c->is2d) {
        shim_fn_cudaMemcpy2D_13 fn;
        memcpy(&fn, &c->real, sizeof(fn));
        return fn(c->dst, c->dpitch, c->src, c->spitch, c->width, c->height, c->kind);
    }
    if (c->async) {
        shim_fn_cudaMemcpyAsync_13 fn;
        memcpy(&fn, &c->real, sizeof(fn));
        return fn(c->dst, c->src, c->n, c->kind, c->stream);
    }
    shim_fn_cudaMemcpy_13 fn;
    memcpy(&fn, &c->real, sizeof(fn));
    return fn(c->dst, c->src, c->n, c->kind);
}

static enum pol_cuda_mem mem_kind(struct cuda_rt *rt, const void *p, size_t n)
{
    struct shim_cuda_ptr_attrs a;
    struct rc_entry *e;

    memset(&a, 0, sizeof(a));
    if (rt->pointer_get_attributes(&a, p) != SHIM_CUDA_SUCCESS) {
        rt->get_last_error();
        return POL_CUDA_MEM_UNKNOWN;
    }
    switch (a.type) {
    case SHIM_CUDA_MEM_UNREGISTERED:
        return POL_CUDA_MEM_PAGEABLE;
    case SHIM_CUDA_MEM_HOST:
        /* Pinned by our register cache: pageable as far as the app knows. */
        e = shim_rc_find(p, n);
        if (e) {
            shim_rc_unhold(e);
            return POL_CUDA_MEM_PAGEABLE;
        }
        return POL_CUDA_MEM_PINNED;
    case SHIM_CUDA_MEM_DEVICE:
        return POL_CUDA_MEM_DEVICE;
    case SHIM_CUDA_MEM_MANAGED:
        return POL_CUDA_MEM_MANAGED;
    default:
        return POL_CUDA_MEM_UNKNOWN;
    }
}

/* The stream the call really runs on, with NULL read as its flavour does. */
static struct CUstream_st *effective_stream(const struct cu_call *c)
{
    if (c->stream)
        return c->stream;
    return c->ptsz ? SHIM_CUDA_STREAM_PER_THREAD : SHIM_CUDA_STREAM_LEGACY;
}

/*
 * Pass a copy through; if it touches a range our register cache pinned and
 * is asynchronous, return only once it completed, as it would have from
 * pageable memory.
 */
static shim_cudaError_t owned_pass(const struct cu_call *c)
{
    struct rc_entry *e = NULL;
    shim_cudaError_t rc;

    if (c->async) {
        e = shim_rc_find(c->src, c->sspan);
        if (!e)
            e = shim_rc_find(c->dst, c->dspan);
    }
    rc = call_real(c);
    if (e)
        shim_rc_release(e, effective_stream(c), rc == SHIM_CUDA_SUCCESS);
    return rc;
}

/* Our own calls failed: wait for what we issued, clear the error we caused,
 * and let the runtime do the original call as if we were not there (with
 * the pageable return rules if it touches a range we registered). */
static shim_cudaError_t fall_back(const struct cu_call *c, struct cuda_rt *rt,
                                  struct scc_pool *pool, enum shim_ctr *o)
{
    if (pool)
        scc_pool_drain(pool);
    rt->get_last_error();
    *o = SHIM_C_FALLBACKS;
    return owned_pass(c);
}

/* A copy policy wants changed; *o is set to its outcome (injected, or a
 * fallback / not applicable when it could not be). */
static shim_cudaError_t copy_injected(const struct cu_call *c, struct cuda_rt *rt,
                                      const struct pol_cuda_copy_dec *dec, enum shim_ctr *o)
{
    struct CUstream_st *stream = effective_stream(c);
    struct scc_pool *pool;
    struct scc_xfer x;
    shim_cudaError_t rc;
    int err;

    if (dec->register_) {
        void *host = dec->dir == POL_CUDA_H2D ? (void *)c->src : c->dst;
        size_t span = dec->dir == POL_CUDA_H2D ? c->sspan : c->dspan;
        bool refused;
        struct rc_entry *e = shim_rc_acquire(rt, host, span, &refused);
        if (e) {
            /* The range is pinned now: the runtime copies it directly. */
            rc = call_real(c);
            shim_rc_release(e, stream, c->async);
            *o = SHIM_C_INJECTED;
            if (rc == SHIM_CUDA_SUCCESS)
                shim_count_bytes(c->id, c->n);
            return rc;
        }
        if (!dec->bounce) {
            /* Not hot yet is not a failure; a refused registration is. */
            *o = refused ? SHIM_C_FALLBACKS : SHIM_C_NOT_APPLICABLE;
            return owned_pass(c);
        }
    }
    pool = pool_get(rt, c->rt, dec);
    if (!pool) {
        *o = SHIM_C_FALLBACKS;
        return owned_pass(c);
    }
    if (c->is2d) {
        if (dec->dir == POL_CUDA_H2D)
            err = scc_xfer_start_2d(&x, pool, SCC_DIR_H2D, (void *)c->src, c->spitch, c->dst,
                                    c->dpitch, c->width, c->height, stream,
                                    c->async ? SCC_WAIT_SOURCE : SCC_WAIT_STREAM);
        else
            err = scc_xfer_start_2d(&x, pool, SCC_DIR_D2H, c->dst, c->dpitch, (void *)c->src,
                                    c->spitch, c->width, c->height, stream, SCC_WAIT_ALL);
        if (err) {
            /* No cudaMemcpy2DAsync in this runtime: nothing was issued. */
            *o = SHIM_C_FALLBACKS;
            return owned_pass(c);
        }
    } else if (dec->dir == POL_CUDA_H2D) {
        scc_xfer_start(&x, pool, SCC_DIR_H2D, (void *)c->src, c->dst, c->n, stream,
                       c->async ? SCC_WAIT_SOURCE : SCC_WAIT_STREAM);
    } else {
        scc_xfer_start(&x, pool, SCC_DIR_D2H, c->dst, (void *)c->src, c->n, stream, SCC_WAIT_ALL);
    }
    err = scc_xfer_run(&x);
    if (err) {
        shim_log_once(POL_LOG_INFO, "cuda: bounced copy failed (error %d); made unchanged", err);
        return fall_back(c, rt, pool, o);
    }
    *o = SHIM_C_INJECTED;
    shim_count_bytes(c->id, c->n);
    return SHIM_CUDA_SUCCESS;
}

/* An unversioned lookup (dlsym) binds to our default, .13, version in a
 * process that has the other runtime: serve it with that one (*rti
 * changes to it). NULL when neither is there. */
void *shim_cuda_other_runtime(enum shim_hook_id id, int *rti)
{
    *rti = *rti == RT_13 ? RT_12 : RT_13;
    return shim_dlvsym(shim_hooks[id].name, shim_cuda_rt_versions[*rti]);
}

static shim_cudaError_t copy_hook(struct cu_call *c)
{
    const struct pol_config *cfg;
    struct pol_cuda_copy req = {0};
    struct pol_cuda_copy_dec dec;
    struct cuda_rt *rt;
    enum pol_verdict v;
    enum shim_ctr o;
    shim_cudaError_t rc;

    if (!c->real) {
        c->real = shim_cuda_other_runtime(c->id, &c->rt);
        if (!c->real)
            return SHIM_CUDA_ERROR_SYMBOL_NOT_FOUND;
    }
    if (!shim_enter(c->id))
        return call_real(c);
    cfg = shim_cfg();
    v = pol_cuda_copy_quick(cfg, c->n);
    if (v == POL_INJECT && !c->dspan)
        v = POL_NOT_APPLICABLE; /* a 2D geometry the runtime refuses: its own error */
    if (v != POL_INJECT) {
        o = shim_verdict_ctr(v);
        rc = owned_pass(c);
        goto out;
    }
    rt = shim_cuda_rt_get(c->rt);
    if (!rt) {
        o = SHIM_C_FALLBACKS;
        rc = call_real(c);
        goto out;
    }
    req.bytes = c->n;
    req.kind = c->kind;
    req.error_pending = rt->peek_at_last_error() != SHIM_CUDA_SUCCESS;
    req.src = req.dst = POL_CUDA_MEM_UNKNOWN;
    if (!req.error_pending) {
        int status = SHIM_CUDA_CAPTURE_NONE;
        req.src = mem_kind(rt, c->src, c->sspan);
        req.dst = mem_kind(rt, c->dst, c->dspan);
        if (rt->stream_is_capturing(effective_stream(c), &status) != SHIM_CUDA_SUCCESS) {
            rt->get_last_error();
            status = SHIM_CUDA_CAPTURE_NONE + 1; /* unknown: treat as capturing */
        }
        req.capturing = status != SHIM_CUDA_CAPTURE_NONE;
    }
    v = pol_cuda_copy(cfg, &req, &dec);
    if (v != POL_INJECT) {
        o = shim_verdict_ctr(v);
        rc = owned_pass(c);
        goto out;
    }
    rc = copy_injected(c, rt, &dec, &o);
out:
    /* A failing copy is an error whatever was decided: the host sees it. */
    shim_count_result(c->id, o, rc, 0);
    shim_leave();
    return rc;
}

#define CU_SYNC(name, tag, rti, is_ptsz)                                                           \
    shim_cudaError_t shim_hook_##name##_##tag(void *dst, const void *src, size_t count, int kind)  \
    {                                                                                              \
        struct cu_call c = {.id = SHIM_HK_##name##_##tag,                                          \
                            .real = shim_resolve(SHIM_HK_##name##_##tag),                          \
                            .rt = rti,                                                             \
                            .ptsz = is_ptsz,                                                       \
                            .dst = dst,                                                            \
                            .src = src,                                                            \
                            .n = count,                                                            \
                            .kind = kind,                                                          \
                            .dspan = count,                                                        \
                            .sspan = count};                                                       \
        return copy_hook(&c);                                                                      \
    }

#define CU_ASYNC(name, tag, rti, is_ptsz)                                                          \
    shim_cudaError_t shim_hook_##name##_##tag(void *dst, const void *src, size_t count, int kind,  \
                                              struct CUstream_st *stream)                          \
    {                                                                                              \
        struct cu_call c = {.id = SHIM_HK_##name##_##tag,                                          \
                            .real = shim_resolve(SHIM_HK_##name##_##tag),                          \
                            .rt = rti,                                                             \
                            .async = true,                                                         \
                            .ptsz = is_ptsz,                                                       \
                            .dst = dst,                                                            \
                            .src = src,                                                            \
                            .n = count,                                                            \
                            .kind = kind,                                                          \
                            .stream = stream,                                                      \
                            .dspan = count,                                                        \
                            .sspan = count};                                                       \
        return copy_hook(&c);                                                                      \
    }

/*
 * A 2D call's byte count and spans. The spans stay 0 (never bounced, passed
 * through for the runtime's own error) for what the runtime refuses or
 * what teshim will not reason about: width above a pitch, a pitch beyond
 * cudaDevAttrMaxPitch of current GPUs (2^31 - 1), width or height 0, or a
 * geometry that overflows.
 */
static void geom_2d(struct cu_call *c)
{
    size_t n, ds, ss;

    c->n = __builtin_mul_overflow(c->width, c->height, &n) ? SIZE_MAX : n;
    if (!c->width || !c->height || c->width > c->dpitch || c->width > c->spitch ||
        c->dpitch > (size_t)INT32_MAX || c->spitch > (size_t)INT32_MAX ||
        __builtin_mul_overflow(c->height - 1, c->dpitch, &ds) ||
        __builtin_add_overflow(ds, c->width, &ds) ||
        __builtin_mul_overflow(c->height - 1, c->spitch, &ss) ||
        __builtin_add_overflow(ss, c->width, &ss))
        return;
    c->dspan = ds;
    c->sspan = ss;
}

#define CU_SYNC_2D(name, tag, rti, is_ptsz)                                                        \
    shim_cudaError_t shim_hook_##name##_##tag(void *dst, size_t dpitch, const void *src,           \
                                              size_t spitch, size_t width, size_t height,          \
                                              int kind)                                            \
    {                                                                                              \
        struct cu_call c = {.id = SHIM_HK_##name##_##tag,                                          \
                            .real = shim_resolve(SHIM_HK_##name##_##tag),                          \
                            .rt = rti,                                                             \
                            .ptsz = is_ptsz,                                                       \
                            .is2d = true,                                                          \
                            .dst = dst,                                                            \
                            .src = src,                                                            \
                            .kind = kind,                                                          \
                            .dpitch = dpitch,                                                      \
                            .spitch = spitch,                                                      \
                            .width = width,                                                        \
                            .height = height};                                                     \
        geom_2d(&c);                                                                               \
        return copy_hook(&c);                                                                      \
    }

#define CU_ASYNC_2D(name, tag, rti, is_ptsz)                                                       \
    shim_cudaError_t shim_hook_##name##_##tag(void *dst, size_t dpitch, const void *src,           \
                                              size_t spitch, size_t width, size_t height,          \
                                              int kind, struct CUstream_st *stream)                \
    {                                                                                              \
        struct cu_call c = {.id = SHIM_HK_##name##_##tag,                                          \
                            .real = shim_resolve(SHIM_HK_##name##_##tag),                          \
                            .rt = rti,                                                             \
                            .async = true,                                                         \
                            .ptsz = is_ptsz,                                                       \
                            .is2d = true,                                                          \
                            .dst = dst,                                                            \
                            .src = src,                                                            \
                            .kind = kind,                                                          \
                            .stream = stream,                                                      \
                            .dpitch = dpitch,                                                      \
                            .spitch = spitch,                                                      \
                            .width = width,                                                        \
                            .height = height};                                                     \
        geom_2d(&c);                                                                               \
        return copy_hook(&c);                                                                      \
    }

CU_SYNC(cudaMemcpy, 13, RT_13, false)
CU_SYNC(cudaMemcpy_ptds, 13, RT_13, true)
CU_ASYNC(cudaMemcpyAsync, 13, RT_13, false)
CU_ASYNC(cudaMemcpyAsync_ptsz, 13, RT_13, true)
CU_SYNC(cudaMemcpy, 12, RT_12, false)
CU_SYNC(cudaMemcpy_ptds, 12, RT_12, true)
CU_ASYNC(cudaMemcpyAsync, 12, RT_12, false)
CU_ASYNC(cudaMemcpyAsync_ptsz, 12, RT_12, true)
CU_SYNC_2D(cudaMemcpy2D, 13, RT_13, false)
CU_SYNC_2D(cudaMemcpy2D_ptds, 13, RT_13, true)
CU_ASYNC_2D(cudaMemcpy2DAsync, 13, RT_13, false)
CU_ASYNC_2D(cudaMemcpy2DAsync_ptsz, 13, RT_13, true)
CU_SYNC_2D(cudaMemcpy2D, 12, RT_12, false)
CU_SYNC_2D(cudaMemcpy2D_ptds, 12, RT_12, true)
CU_ASYNC_2D(cudaMemcpy2DAsync, 12, RT_12, false)
CU_ASYNC_2D(cudaMemcpy2DAsync_ptsz, 12, RT_12, true)

#define HOOK(lib, ...) SHIM_SYMVER(__VA_ARGS__)
#include "shim_hooks_cuda.def"
#undef HOOK
