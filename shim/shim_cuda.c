/*
 * CUDA runtime hooks: copies between device memory and pageable host memory
 * through reused pinned bounce buffers (engine/eng_cudacopy.c), and the opt-in
 * cache of cudaHostRegister'ed application ranges. The cudaMemcpy2D family
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
#include "shim_cuda_abi.h"
#include "teshim/cudacopy.h"

#define HOOK(lib, ...) SHIM_PROTO_##lib(__VA_ARGS__)
#define SHIM_PROTO_IBV SHIM_NOTHING
#define SHIM_PROTO_CUDA SHIM_PROTO
#define SHIM_PROTO_LIBC SHIM_NOTHING
#define SHIM_PROTO_MEM SHIM_NOTHING
#include "shim_hooks.def"
#undef HOOK

/* ---- the runtime's entry points, per symbol version --------------------- */

enum { RT_12, RT_13, RT_N };
static const char *const rt_versions[RT_N] = {"libcudart.so.12", "libcudart.so.13"};

struct cuda_rt {
    struct scc_api scc;
    int (*pointer_get_attributes)(struct shim_cuda_ptr_attrs *a, const void *p);
    int (*stream_is_capturing)(struct CUstream_st *s, int *status);
    int (*peek_at_last_error)(void);
    int (*get_last_error)(void);
    int (*host_register)(void *p, size_t n, unsigned flags);
    int (*host_unregister)(void *p);
    int (*get_device)(int *device);
    int (*stream_synchronize)(struct CUstream_st *s);
    bool ok;
};

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
    const char *v = rt_versions[i];
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

static struct cuda_rt *rt_get(int i)
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

static struct scc_budget budget;
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tpool *free_pools; /* pools of threads that exited, for reuse */
static pthread_key_t pool_key;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static unsigned fork_gen;
static __thread struct tpool *tls_pools[SHIM_CUDA_MAX_DEVICES]
    __attribute__((tls_model("initial-exec")));

static void regcache_forget_all(void);

/* A forked child may not use the parent's runtime state: forget every pool
 * and registration without calling the runtime, and start the budget anew. */
static void cuda_atfork_child(void)
{
    fork_gen++;
    free_pools = NULL;
    atomic_store(&budget.used, 0);
    pthread_mutex_init(&pool_lock, NULL);
    regcache_forget_all();
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
    budget.max = (size_t)pol_int(shim_cfg(), POL_CUDA_PINNED_MAX_BYTES);
    pthread_key_create(&pool_key, pool_thread_exit);
    pthread_atfork(NULL, NULL, cuda_atfork_child);
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

    pthread_once(&pool_once, pool_init_once);
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
        err = scc_pool_init(&tp->pool, &rt->scc, &budget, dec->chunk, dec->buffers);
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

/* ---- register cache (opt-in) ---------------------------------------------- */

#define RC_MAX 64

struct rc_entry {
    char *base;
    size_t len;
    unsigned hits;
    unsigned users;
    bool registered;
    bool failed; /* registration refused (e.g. the application registered it) */
    bool dead;   /* its memory went while a copy held it: unregistered on release */
    uint64_t tick;
    struct cuda_rt *rt;
};

static struct rc_entry rc_tab[RC_MAX];
static unsigned rc_n;
static uint64_t rc_tick;
static pthread_mutex_t rc_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t rc_idle = PTHREAD_COND_INITIALIZER; /* an entry's users fell to 0 */
static atomic_bool rc_live; /* some range was ever registered: lookups needed */
static _Atomic uint64_t rc_registered, rc_released, rc_evicted, rc_unwatched, rc_app_register;

void shim_cuda_rc_stats(struct shim_rc_stats *st)
{
    st->registered = atomic_load(&rc_registered);
    st->released = atomic_load(&rc_released);
    st->evicted = atomic_load(&rc_evicted);
    st->unwatched = atomic_load(&rc_unwatched) + shim_mem_unwatched_full();
    st->app_register = atomic_load(&rc_app_register);
}

static void regcache_forget_all(void)
{
    memset(rc_tab, 0, sizeof(rc_tab));
    rc_n = 0;
    atomic_store(&rc_live, false);
    pthread_mutex_init(&rc_lock, NULL);
    pthread_cond_init(&rc_idle, NULL);
}

/*
 * Unregister e (caller holds rc_lock, e is registered and unused). No copy
 * of the range is in flight: every copy routed through the cache returned
 * only after it completed (regcache_release).
 */
static void rc_unregister(struct rc_entry *e)
{
    struct cuda_rt *rt = e->rt;

    if (rt->host_unregister(e->base))
        rt->get_last_error();
    scc_budget_give(&budget, e->len);
    e->registered = false;
}

/* Forget e's range entirely (hits, refusals): its memory is new. */
static void rc_clear(struct rc_entry *e)
{
    *e = (struct rc_entry){0};
}

/* Page bounds of [p, p + n). */
static void page_span(const void *p, size_t n, char **base, char **end)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);

    *base = (char *)((uintptr_t)p & ~(uintptr_t)(pg - 1));
    *end = (char *)(((uintptr_t)p + (n ? n : 1) + pg - 1) & ~(uintptr_t)(pg - 1));
}

unsigned shim_cuda_release(const void *p, size_t n)
{
    char *base, *end;
    unsigned dropped = 0;

    if (!atomic_load_explicit(&rc_live, memory_order_acquire))
        return 0;
    page_span(p, n, &base, &end);
    pthread_mutex_lock(&rc_lock);
    for (unsigned i = 0; i < rc_n; i++) {
        struct rc_entry *e = &rc_tab[i];
        if (!e->base || e->base >= end || e->base + e->len <= base)
            continue;
        if (e->registered && !e->dead) {
            dropped++;
            atomic_fetch_add(&rc_released, 1);
        }
        if (e->registered && e->users) {
            /* A copy of freed memory is still running (the application's
             * bug): no new use; the copy's release unregisters. */
            e->dead = true;
            continue;
        }
        if (e->registered)
            rc_unregister(e);
        rc_clear(e);
    }
    pthread_mutex_unlock(&rc_lock);
    return dropped;
}

/* Make room for len bytes of budget by unregistering least recently used
 * idle entries; true if the budget now took them. */
static bool rc_make_room(size_t len)
{
    while (!scc_budget_take(&budget, len)) {
        struct rc_entry *lru = NULL;
        for (unsigned i = 0; i < rc_n; i++)
            if (rc_tab[i].registered && !rc_tab[i].users && (!lru || rc_tab[i].tick < lru->tick))
                lru = &rc_tab[i];
        if (!lru)
            return false;
        rc_unregister(lru);
        atomic_fetch_add(&rc_evicted, 1);
    }
    return true;
}

/* The entry for exactly [base, base+len), created if needed (evicting an
 * unregistered one when the table is full); NULL if none can be had. */
static struct rc_entry *rc_slot(char *base, size_t len)
{
    struct rc_entry *victim = NULL;

    for (unsigned i = 0; i < rc_n; i++)
        if (rc_tab[i].base == base && rc_tab[i].len == len)
            return &rc_tab[i];
    if (rc_n < RC_MAX) {
        victim = &rc_tab[rc_n++];
    } else {
        for (unsigned i = 0; i < rc_n; i++)
            if (!rc_tab[i].registered && (!victim || rc_tab[i].tick < victim->tick))
                victim = &rc_tab[i];
        if (!victim)
            return NULL;
    }
    *victim = (struct rc_entry){.base = base, .len = len};
    return victim;
}

/*
 * A registered range covering [host, host+n), registering it when it is hot
 * enough; NULL when the copy should take another route. The entry is held
 * (users) until regcache_release.
 */
static struct rc_entry *regcache_acquire(struct cuda_rt *rt, void *host, size_t n, bool *refused)
{
    char *base, *end;
    size_t len;
    struct rc_entry *e = NULL;

    page_span(host, n, &base, &end);
    len = (size_t)(end - base);
    *refused = false;
    pthread_once(&pool_once, pool_init_once);
    pthread_mutex_lock(&rc_lock);
    for (unsigned i = 0; i < rc_n; i++)
        if (rc_tab[i].registered && !rc_tab[i].dead && rc_tab[i].rt == rt &&
            rc_tab[i].base <= base && rc_tab[i].base + rc_tab[i].len >= end) {
            e = &rc_tab[i];
            goto hit;
        }
    e = rc_slot(base, len);
    if (!e || e->failed || ++e->hits < (unsigned)pol_int(shim_cfg(), POL_CUDA_REGISTER_MIN_HITS))
        goto miss;
    /* Only memory whose release teshim sees (shim_mem.c) may stay pinned;
     * checked under rc_lock, which a release takes after it stopped
     * watching the range. */
    if (!shim_mem_watched(host, n)) {
        atomic_fetch_add(&rc_unwatched, 1);
        shim_log_once(POL_LOG_INFO,
                      "cuda: register cache: %p is in memory teshim cannot watch (static data, "
                      "a stack, or allocated before teshim loaded); such copies are not cached",
                      host);
        goto miss;
    }
    *refused = true; /* from here on, a miss is a refusal: budget or runtime */
    if (!rc_make_room(len))
        goto miss;
    if (rt->host_register(base, len, SHIM_CUDA_HOST_REGISTER_PORTABLE) != SHIM_CUDA_SUCCESS) {
        /* Typically already registered by the application: leave it be. */
        rt->get_last_error();
        e->failed = true;
        scc_budget_give(&budget, len);
        goto miss;
    }
    e->registered = true;
    e->rt = rt;
    atomic_fetch_add(&rc_registered, 1);
    atomic_store(&rc_live, true);
hit:
    e->users++;
    e->tick = ++rc_tick;
    pthread_mutex_unlock(&rc_lock);
    return e;
miss:
    pthread_mutex_unlock(&rc_lock);
    return NULL;
}

/* Drop a hold on e; the last user of an entry whose memory went
 * unregisters it. */
static void rc_unhold(struct rc_entry *e)
{
    pthread_mutex_lock(&rc_lock);
    if (--e->users == 0) {
        if (e->dead) {
            rc_unregister(e);
            rc_clear(e);
        }
        pthread_cond_broadcast(&rc_idle);
    }
    pthread_mutex_unlock(&rc_lock);
}

/*
 * Done with e after a copy on stream. With wait (an asynchronous call),
 * return only once that copy completed: from pageable memory it had consumed
 * its source (H2D) or delivered its data (D2H) when it returned, and a copy
 * from the now-pinned range would not have. Synchronous calls from pinned
 * memory complete before they return. So no use of a range outlives its
 * release, and eviction never waits.
 */
static void regcache_release(struct rc_entry *e, struct CUstream_st *stream, bool wait)
{
    struct cuda_rt *rt = e->rt;
    struct CUevent_st *ev;
    int status = SHIM_CUDA_CAPTURE_NONE;

    /* A captured copy runs at graph launch, not now; waiting on a capturing
     * stream would invalidate the application's capture. */
    if (wait && rt->stream_is_capturing(stream, &status) != SHIM_CUDA_SUCCESS) {
        rt->get_last_error();
        wait = false;
    }
    if (status != SHIM_CUDA_CAPTURE_NONE)
        wait = false;
    if (wait) {
        int err = rt->scc.event_create_with_flags(&ev, 0x02 /* cudaEventDisableTiming */);
        if (err == SHIM_CUDA_SUCCESS) {
            err = rt->scc.event_record(ev, stream);
            if (err == SHIM_CUDA_SUCCESS)
                err = rt->scc.event_synchronize(ev);
            rt->scc.event_destroy(ev);
        }
        /* No event: wait for the whole stream instead (later, never earlier). */
        if (err != SHIM_CUDA_SUCCESS && rt->stream_synchronize(stream) != SHIM_CUDA_SUCCESS)
            rt->get_last_error();
        if (err != SHIM_CUDA_SUCCESS)
            rt->get_last_error();
    }
    rc_unhold(e);
}

/*
 * A registered entry of ours overlapping [p, p+n), held, or NULL. Once
 * teshim registered a range the runtime reports it as pinned and copies it
 * asynchronously; the application still believes it pageable, so every
 * copy touching it, even in part (a copy starting in one of our ranges and
 * reaching past it: the runtime classifies by the start), must keep the
 * pageable return rules (regcache_release with wait).
 */
static struct rc_entry *regcache_find(const void *p, size_t n)
{
    const char *c = p;
    struct rc_entry *e = NULL;

    if (!atomic_load_explicit(&rc_live, memory_order_relaxed))
        return NULL;
    pthread_mutex_lock(&rc_lock);
    for (unsigned i = 0; i < rc_n && !e; i++)
        if (rc_tab[i].registered && rc_tab[i].base < c + (n ? n : 1) &&
            rc_tab[i].base + rc_tab[i].len > c)
            e = &rc_tab[i];
    if (e)
        e->users++;
    pthread_mutex_unlock(&rc_lock);
    return e;
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
        e = regcache_find(p, n);
        if (e) {
            rc_unhold(e);
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
        e = regcache_find(c->src, c->sspan);
        if (!e)
            e = regcache_find(c->dst, c->dspan);
    }
    rc = call_real(c);
    if (e)
        regcache_release(e, effective_stream(c), rc == SHIM_CUDA_SUCCESS);
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
        struct rc_entry *e = regcache_acquire(rt, host, span, &refused);
        if (e) {
            /* The range is pinned now: the runtime copies it directly. */
            rc = call_real(c);
            regcache_release(e, stream, c->async);
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
static void *other_runtime(enum shim_hook_id id, int *rti)
{
    *rti = *rti == RT_13 ? RT_12 : RT_13;
    return shim_dlvsym(shim_hooks[id].name, rt_versions[*rti]);
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
        c->real = other_runtime(c->id, &c->rt);
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
    rt = rt_get(c->rt);
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

/* ---- the application's own registrations and attributes ------------------ */

/*
 * With the register cache on, teshim's registrations must stay invisible:
 * the application's cudaHostRegister of a range the cache pinned succeeds
 * (the cache lets go first), its cudaHostUnregister of such a range fails
 * as for memory it never registered, and cudaPointerGetAttributes reports
 * it unregistered. Where an answer is made up, the runtime gives it for an
 * address surely unregistered (on this stack), so the values and the
 * last-error state are the runtime's own.
 */

/* Our registered entry overlapping the pages of [p, p + n), or NULL; held
 * under rc_lock by the caller. */
static struct rc_entry *rc_overlap(const void *p, size_t n, bool dead_too)
{
    char *base, *end;

    page_span(p, n, &base, &end);
    for (unsigned i = 0; i < rc_n; i++) {
        struct rc_entry *e = &rc_tab[i];
        if (e->registered && (dead_too || !e->dead) && e->base < end && e->base + e->len > base)
            return e;
    }
    return NULL;
}

/* Let go of every cached registration over [p, p + n), waiting for copies
 * that use one; true if there was any. */
static bool rc_yield_range(const void *p, size_t n)
{
    struct rc_entry *e;
    bool any = false;

    pthread_mutex_lock(&rc_lock);
    while ((e = rc_overlap(p, n, true))) {
        any = true;
        if (e->users) {
            pthread_cond_wait(&rc_idle, &rc_lock);
            continue;
        }
        rc_unregister(e);
        rc_clear(e);
    }
    pthread_mutex_unlock(&rc_lock);
    return any;
}

static bool rc_holds(const void *p)
{
    bool held;

    if (!atomic_load_explicit(&rc_live, memory_order_acquire))
        return false;
    pthread_mutex_lock(&rc_lock);
    held = rc_overlap(p, 1, true) != NULL;
    pthread_mutex_unlock(&rc_lock);
    return held;
}

static void count_result(enum shim_hook_id id, bool changed, shim_cudaError_t rc)
{
    shim_count_result(id, changed ? SHIM_C_INJECTED : SHIM_C_NOT_APPLICABLE, rc, 0);
}

static shim_cudaError_t host_register(enum shim_hook_id id, int rti, void *p, size_t n,
                                      unsigned flags)
{
    void *real = shim_resolve(id);
    shim_fn_cudaHostRegister_13 fn;
    shim_cudaError_t rc;
    bool yielded = false;

    if (!real && !(real = other_runtime(id, &rti)))
        return SHIM_CUDA_ERROR_SYMBOL_NOT_FOUND;
    memcpy(&fn, &real, sizeof(fn));
    if (!shim_enter(id))
        return fn(p, n, flags);
    if (atomic_load_explicit(&rc_live, memory_order_acquire) && p && n) {
        yielded = rc_yield_range(p, n);
        if (yielded)
            atomic_fetch_add(&rc_app_register, 1);
    }
    rc = fn(p, n, flags);
    count_result(id, yielded, rc);
    shim_leave();
    return rc;
}

static shim_cudaError_t host_unregister(enum shim_hook_id id, int rti, void *p)
{
    void *real = shim_resolve(id);
    shim_fn_cudaHostUnregister_13 fn;
    shim_cudaError_t rc;
    bool ours;
    char unregistered;

    if (!real && !(real = other_runtime(id, &rti)))
        return SHIM_CUDA_ERROR_SYMBOL_NOT_FOUND;
    memcpy(&fn, &real, sizeof(fn));
    if (!shim_enter(id))
        return fn(p);
    /* The application cannot have registered what the cache holds: its
     * cudaHostRegister would have made the cache let go. */
    ours = p && rc_holds(p);
    rc = fn(ours ? (void *)&unregistered : p);
    count_result(id, ours, rc);
    shim_leave();
    return rc;
}

static shim_cudaError_t pointer_attributes(enum shim_hook_id id, int rti,
                                           struct shim_cuda_ptr_attrs *a, const void *p)
{
    void *real = shim_resolve(id);
    shim_fn_cudaPointerGetAttributes_13 fn;
    shim_cudaError_t rc;
    bool ours;
    char pageable;

    if (!real && !(real = other_runtime(id, &rti)))
        return SHIM_CUDA_ERROR_SYMBOL_NOT_FOUND;
    memcpy(&fn, &real, sizeof(fn));
    if (!shim_enter(id))
        return fn(a, p);
    ours = p && rc_holds(p);
    rc = fn(a, ours ? &pageable : p);
    count_result(id, ours, rc);
    shim_leave();
    return rc;
}

#define CU_REGISTER_HOOKS(tag, rti)                                                                \
    shim_cudaError_t shim_hook_cudaHostRegister_##tag(void *p, size_t n, unsigned flags)           \
    {                                                                                              \
        return host_register(SHIM_HK_cudaHostRegister_##tag, rti, p, n, flags);                    \
    }                                                                                              \
    shim_cudaError_t shim_hook_cudaHostUnregister_##tag(void *p)                                   \
    {                                                                                              \
        return host_unregister(SHIM_HK_cudaHostUnregister_##tag, rti, p);                          \
    }                                                                                              \
    shim_cudaError_t shim_hook_cudaPointerGetAttributes_##tag(struct shim_cuda_ptr_attrs *a,       \
                                                              const void *p)                       \
    {                                                                                              \
        return pointer_attributes(SHIM_HK_cudaPointerGetAttributes_##tag, rti, a, p);              \
    }

CU_REGISTER_HOOKS(13, RT_13)
CU_REGISTER_HOOKS(12, RT_12)

#define HOOK(lib, ...) SHIM_SYMVER_##lib(__VA_ARGS__)
#define SHIM_SYMVER_IBV SHIM_NOTHING
#define SHIM_SYMVER_CUDA SHIM_SYMVER
#define SHIM_SYMVER_LIBC SHIM_NOTHING
#define SHIM_SYMVER_MEM SHIM_NOTHING
#include "shim_hooks.def"
#undef HOOK
