/*
 * The opt-in register cache (cuda.register_cache): application host ranges
 * copied often are cudaHostRegister'ed and kept, so their copies go to the
 * runtime as pinned copies. Correct or refused: only memory whose release
 * teshim sees is pinned (shim_mem.c), and a registration is dropped before
 * its pages can go (shim_cuda_release). The application's own
 * cudaHostRegister, cudaHostUnregister and cudaPointerGetAttributes see the
 * runtime as if the cache were not there. docs/cuda.md has the rules.
 */
#include "shim_cuda.h"

#include <pthread.h>
#include <string.h>
#include <unistd.h>

#define HOOK(lib, ...) SHIM_PROTO(__VA_ARGS__)
#include "shim_hooks_cudareg.def"
#undef HOOK

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

void shim_rc_forget_all(void)
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
 * only after it completed (shim_rc_release).
 */
static void rc_unregister(struct rc_entry *e)
{
    struct cuda_rt *rt = e->rt;

    if (rt->host_unregister(e->base))
        rt->get_last_error();
    scc_budget_give(&shim_cuda_budget, e->len);
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
    while (!scc_budget_take(&shim_cuda_budget, len)) {
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
 * (users) until shim_rc_release.
 */
/*
 * Grow [*base, *end) to the union with every registration of ours it
 * overlaps (repeatedly: the union may reach further ones) and unregister
 * those; false, with nothing changed, if one is in use or belongs to the
 * other runtime. Caller holds rc_lock.
 */
static bool rc_merge(struct cuda_rt *rt, char **base, char **end)
{
    char *lo = *base, *hi = *end;
    bool grew = true;

    while (grew) {
        grew = false;
        for (unsigned i = 0; i < rc_n; i++) {
            struct rc_entry *o = &rc_tab[i];
            if (!o->registered || o->base >= hi || o->base + o->len <= lo)
                continue;
            if (o->users || o->rt != rt)
                return false;
            if (o->base < lo || o->base + o->len > hi) {
                lo = o->base < lo ? o->base : lo;
                hi = o->base + o->len > hi ? o->base + o->len : hi;
                grew = true;
            }
        }
    }
    for (unsigned i = 0; i < rc_n; i++) {
        struct rc_entry *o = &rc_tab[i];
        if (o->registered && o->base < hi && o->base + o->len > lo) {
            rc_unregister(o);
            rc_clear(o);
        }
    }
    *base = lo;
    *end = hi;
    return true;
}

struct rc_entry *shim_rc_acquire(struct cuda_rt *rt, void *host, size_t n, bool *refused)
{
    char *base, *end;
    size_t len;
    struct rc_entry *e = NULL;

    page_span(host, n, &base, &end);
    len = (size_t)(end - base);
    *refused = false;
    shim_cuda_once();
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
    /* The runtime refuses a range that overlaps a registration, ours too:
     * one registration covers the union of this range and those of ours it
     * overlaps (a buffer copied in growing pieces ends up registered once,
     * whole). Not while a copy uses one of them. */
    if (!rc_merge(rt, &base, &end))
        goto miss;
    len = (size_t)(end - base);
    e->base = base;
    e->len = len;
    *refused = true; /* from here on, a miss is a refusal: budget or runtime */
    if (!rc_make_room(len))
        goto miss;
    if (rt->host_register(base, len, CUABI_HOST_REGISTER_PORTABLE) != CUABI_SUCCESS) {
        /* Typically already registered by the application: leave it be. */
        rt->get_last_error();
        e->failed = true;
        scc_budget_give(&shim_cuda_budget, len);
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
void shim_rc_unhold(struct rc_entry *e)
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
void shim_rc_release(struct rc_entry *e, struct CUstream_st *stream, bool wait)
{
    struct cuda_rt *rt = e->rt;
    struct CUevent_st *ev;
    int status = CUABI_CAPTURE_NONE;

    /* A captured copy runs at graph launch, not now; waiting on a capturing
     * stream would invalidate the application's capture. */
    if (wait && rt->stream_is_capturing(stream, &status) != CUABI_SUCCESS) {
        rt->get_last_error();
        wait = false;
    }
    if (status != CUABI_CAPTURE_NONE)
        wait = false;
    if (wait) {
        int err = rt->scc.event_create_with_flags(&ev, 0x02 /* cudaEventDisableTiming */);
        if (err == CUABI_SUCCESS) {
            err = rt->scc.event_record(ev, stream);
            if (err == CUABI_SUCCESS)
                err = rt->scc.event_synchronize(ev);
            rt->scc.event_destroy(ev);
        }
        /* No event: wait for the whole stream instead (later, never earlier). */
        if (err != CUABI_SUCCESS && rt->stream_synchronize(stream) != CUABI_SUCCESS)
            rt->get_last_error();
        if (err != CUABI_SUCCESS)
            rt->get_last_error();
    }
    shim_rc_unhold(e);
}

/*
 * A registered entry of ours overlapping [p, p+n), held, or NULL. Once
 * teshim registered a range the runtime reports it as pinned and copies it
 * asynchronously; the application still believes it pageable, so every
 * copy touching it, even in part (a copy starting in one of our ranges and
 * reaching past it: the runtime classifies by the start), must keep the
 * pageable return rules (shim_rc_release with wait).
 */
struct rc_entry *shim_rc_find(const void *p, size_t n)
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

/*
 * The bodies of the generated hooks of shim_hooks_cudareg.def (SHAPE
 * (GEN, rc_...)), called after SHIM_GENERATE's prologue with the real
 * function of the runtime that answered.
 */
static shim_cudaError_t rc_host_register(enum shim_hook_id id, void *real, int rti, void *p,
                                         size_t n, unsigned flags)
{
    shim_fn_cudaHostRegister_13 fn;
    shim_cudaError_t rc;
    bool yielded = false;

    memcpy(&fn, &real, sizeof(fn));
    if (atomic_load_explicit(&rc_live, memory_order_acquire) && p && n) {
        yielded = rc_yield_range(p, n);
        if (yielded)
            atomic_fetch_add(&rc_app_register, 1);
    }
    rc = fn(p, n, flags);
    count_result(id, yielded, rc);
    return rc;
}

static shim_cudaError_t rc_host_unregister(enum shim_hook_id id, void *real, int rti, void *p)
{
    shim_fn_cudaHostUnregister_13 fn;
    shim_cudaError_t rc;
    bool ours;
    char unregistered;

    memcpy(&fn, &real, sizeof(fn));
    /* The application cannot have registered what the cache holds: its
     * cudaHostRegister would have made the cache let go. */
    ours = p && rc_holds(p);
    rc = fn(ours ? (void *)&unregistered : p);
    count_result(id, ours, rc);
    return rc;
}

static shim_cudaError_t rc_pointer_attributes(enum shim_hook_id id, void *real, int rti,
                                              struct cuabi_ptr_attrs *a, const void *p)
{
    shim_fn_cudaPointerGetAttributes_13 fn;
    shim_cudaError_t rc;
    bool ours;
    char pageable;

    memcpy(&fn, &real, sizeof(fn));
    ours = p && rc_holds(p);
    rc = fn(a, ours ? &pageable : p);
    count_result(id, ours, rc);
    return rc;
}

#define HOOK(...) SHIM_GENERATE(__VA_ARGS__)
#include "shim_hooks_cudareg.def"
#undef HOOK

#define HOOK(lib, ...) SHIM_SYMVER(__VA_ARGS__)
#include "shim_hooks_cudareg.def"
#undef HOOK
