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

const char *const shim_cuda_rt_versions[RT_N] = {CUDART_VERSION_12, CUDART_VERSION_13};

static struct cuda_rt rts[RT_N];
static pthread_once_t rt_once[RT_N] = {PTHREAD_ONCE_INIT, PTHREAD_ONCE_INIT};

/* Every row of teshim/cudart.def the shim uses, looked up under version v
 * into *member (a function pointer); a needed one missing is named in
 * *missing. */
static void rt_sym(void *member, const char *name, bool need, const char *v, const char **missing)
{
    void *p = shim_dlvsym(name, v);

    if (!p && need)
        *missing = name;
    memcpy(member, &p, sizeof(p));
}

static void rt_resolve(int i)
{
    struct cuda_rt *rt = &rts[i];
    const char *v = shim_cuda_rt_versions[i];
    const char *missing = NULL;

#define CUDART(in_scc, in_shim, in_eng, need, field, name, params)                                 \
    CUDART_IF_##in_scc(rt_sym(&rt->scc.field, #name, need, v, &missing);)                          \
        CUDART_IF_##in_shim(rt_sym(&rt->field, #name, need, v, &missing);)
#include "teshim/cudart.def"
#undef CUDART
    rt->ok = missing == NULL;
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
    if (rt->get_device(&dev) != CUABI_SUCCESS) {
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
    struct cuabi_ptr_attrs a;
    struct rc_entry *e;

    memset(&a, 0, sizeof(a));
    if (rt->pointer_get_attributes(&a, p) != CUABI_SUCCESS) {
        rt->get_last_error();
        return POL_CUDA_MEM_UNKNOWN;
    }
    switch (a.type) {
    case CUABI_MEM_UNREGISTERED:
        return POL_CUDA_MEM_PAGEABLE;
    case CUABI_MEM_HOST:
        /* Pinned by our register cache: pageable as far as the app knows. */
        e = shim_rc_find(p, n);
        if (e) {
            shim_rc_unhold(e);
            return POL_CUDA_MEM_PAGEABLE;
        }
        return POL_CUDA_MEM_PINNED;
    case CUABI_MEM_DEVICE:
        return POL_CUDA_MEM_DEVICE;
    case CUABI_MEM_MANAGED:
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
    return c->ptsz ? CUABI_STREAM_PER_THREAD : CUABI_STREAM_LEGACY;
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
        shim_rc_release(e, effective_stream(c), rc == CUABI_SUCCESS);
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
            if (rc == CUABI_SUCCESS)
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
    err = shim_cuda_xfer_start(&x, pool, dec->dir == POL_CUDA_H2D, c->dst, c->dpitch, c->src,
                               c->spitch, c->is2d ? c->width : c->n, c->is2d ? c->height : 0,
                               stream, c->async);
    if (err) {
        /* No cudaMemcpy2DAsync in this runtime: nothing was issued. */
        *o = SHIM_C_FALLBACKS;
        return owned_pass(c);
    }
    err = scc_xfer_run(&x);
    if (err) {
        shim_log_once(POL_LOG_INFO, "cuda: bounced copy failed (error %d); made unchanged", err);
        return fall_back(c, rt, pool, o);
    }
    *o = SHIM_C_INJECTED;
    shim_count_bytes(c->id, c->n);
    return CUABI_SUCCESS;
}

int shim_cuda_xfer_start(struct scc_xfer *x, struct scc_pool *pool, bool h2d, void *dst,
                         size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                         struct CUstream_st *stream, bool async)
{
    enum scc_wait wait = !h2d ? SCC_WAIT_ALL : async ? SCC_WAIT_SOURCE : SCC_WAIT_STREAM;

    if (height == 0) {
        if (h2d)
            scc_xfer_start(x, pool, SCC_DIR_H2D, (void *)src, dst, width, stream, wait);
        else
            scc_xfer_start(x, pool, SCC_DIR_D2H, dst, (void *)src, width, stream, wait);
        return 0;
    }
    if (h2d)
        return scc_xfer_start_2d(x, pool, SCC_DIR_H2D, (void *)src, spitch, dst, dpitch, width,
                                 height, stream, wait);
    return scc_xfer_start_2d(x, pool, SCC_DIR_D2H, dst, dpitch, (void *)src, spitch, width, height,
                             stream, wait);
}

/* The runtime version of each CUDA row: RT_12 or RT_13 by its TAG. */
static const unsigned char rt_of[SHIM_HK_COUNT] = {
#define HOOK(lib, tag, ver, def, ret, name, ...) [SHIM_HK_##name##_##tag] = RT_##tag,
#include "shim_hooks_cuda.def"
#include "shim_hooks_cudareg.def"
#undef HOOK
};

/* An unversioned lookup (dlsym) binds to our default, .13, version in a
 * process that has the other runtime: serve it with that one (*rti
 * changes to it). NULL when neither is there. */
static void *other_runtime(enum shim_hook_id id, int *rti)
{
    *rti = *rti == RT_13 ? RT_12 : RT_13;
    return shim_dlvsym(shim_hooks[id].name, shim_cuda_rt_versions[*rti]);
}

void *shim_real_CUDA(enum shim_hook_id id, int *rti)
{
    void *fn = shim_resolve(id);

    *rti = rt_of[id];
    return fn ? fn : other_runtime(id, rti);
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
    req.error_pending = rt->peek_at_last_error() != CUABI_SUCCESS;
    req.src = req.dst = POL_CUDA_MEM_UNKNOWN;
    if (!req.error_pending) {
        int status = CUABI_CAPTURE_NONE;
        req.src = mem_kind(rt, c->src, c->sspan);
        req.dst = mem_kind(rt, c->dst, c->dspan);
        if (rt->stream_is_capturing(effective_stream(c), &status) != CUABI_SUCCESS) {
            rt->get_last_error();
            status = CUABI_CAPTURE_NONE + 1; /* unknown: treat as capturing */
        }
        req.capturing = status != CUABI_CAPTURE_NONE;
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
    return rc;
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

/*
 * The bodies of the generated copy hooks (shim_hooks_cuda.def, SHAPE
 * (GEN, rt_copy..., flavour)), called after SHIM_GENERATE's prologue: the
 * call as one struct cu_call, the NULL stream read as the flavour (pt) does.
 * A 1D copy of n bytes is width n (its spans n); a 2D one has its geometry.
 */
static shim_cudaError_t copy_call(enum shim_hook_id id, void *real, int rti, bool async, bool pt,
                                  bool is2d, void *dst, size_t dpitch, const void *src,
                                  size_t spitch, size_t width, size_t height, int kind,
                                  struct CUstream_st *stream)
{
    struct cu_call c = {
        .id = id, .real = real, .rt = rti, .async = async, .ptsz = pt, .is2d = is2d};

    c.dst = dst;
    c.src = src;
    c.kind = kind;
    c.stream = stream;
    if (is2d) {
        c.dpitch = dpitch;
        c.spitch = spitch;
        c.width = width;
        c.height = height;
        geom_2d(&c);
    } else {
        c.n = c.dspan = c.sspan = width;
    }
    return copy_hook(&c);
}

static shim_cudaError_t rt_copy(enum shim_hook_id id, void *real, int rti, bool pt, void *dst,
                                const void *src, size_t count, int kind)
{
    return copy_call(id, real, rti, false, pt, false, dst, 0, src, 0, count, 1, kind, NULL);
}

static shim_cudaError_t rt_copy_async(enum shim_hook_id id, void *real, int rti, bool pt, void *dst,
                                      const void *src, size_t count, int kind,
                                      struct CUstream_st *stream)
{
    return copy_call(id, real, rti, true, pt, false, dst, 0, src, 0, count, 1, kind, stream);
}

static shim_cudaError_t rt_copy2d(enum shim_hook_id id, void *real, int rti, bool pt, void *dst,
                                  size_t dpitch, const void *src, size_t spitch, size_t width,
                                  size_t height, int kind)
{
    return copy_call(id, real, rti, false, pt, true, dst, dpitch, src, spitch, width, height, kind,
                     NULL);
}

static shim_cudaError_t rt_copy2d_async(enum shim_hook_id id, void *real, int rti, bool pt,
                                        void *dst, size_t dpitch, const void *src, size_t spitch,
                                        size_t width, size_t height, int kind,
                                        struct CUstream_st *stream)
{
    return copy_call(id, real, rti, true, pt, true, dst, dpitch, src, spitch, width, height, kind,
                     stream);
}

/* The 16 copy hooks, generated from their rows. */
#define HOOK(...) SHIM_GENERATE(__VA_ARGS__)
#include "shim_hooks_cuda.def"
#undef HOOK

#define HOOK(lib, ...) SHIM_SYMVER(__VA_ARGS__)
#include "shim_hooks_cuda.def"
#undef HOOK
