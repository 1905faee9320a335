/*
 * Memory the CUDA register cache may pin, and every way it can leave the
 * application.
 *
 * The driver keeps a registration's physical pages when the application
 * lets go of them: after munmap + mmap at the same address, copies through
 * a still-registered range read and write the OLD pages (docs/cuda.md). So
 * a cached registration is only correct while teshim sees every release of
 * the memory under it, before the release happens. teshim caches a range
 * only inside memory it watched arrive (when cuda.register_cache is on):
 *   - allocator blocks of at least cuda.register_min_bytes (malloc, calloc,
 *     realloc, reallocarray, posix_memalign, aligned_alloc, memalign,
 *     valloc, pvalloc), which leave through free, realloc and reallocarray:
 *     glibc unmaps large blocks and trims its heaps inside those calls
 *     (not through the PLT, where no munmap hook would see it), and never
 *     releases a page that still holds a live block;
 *   - mappings of at least that size made through mmap, mmap64, mremap,
 *     shmat and sbrk, which leave through munmap, mremap, shmdt, brk/sbrk
 *     shrinking, or an mmap/shmat placed over them.
 * madvise(MADV_DONTNEED, MADV_FREE, MADV_REMOVE, MADV_DONTNEED_LOCKED)
 * replaces pages without releasing the range: registrations over it are
 * dropped and the range stays watched.
 *
 * Not watched, so never cached (the report counts such copies as
 * `unwatched`): memory allocated before teshim loaded, static data, thread
 * stacks (libc maps and unmaps them internally), and memory from raw
 * system calls.
 *
 * Cost: with the cache off every hook is one load and a jump to libc. With
 * it on, allocations below the size pass with one more comparison; free
 * asks the allocator for the block's size (malloc_usable_size) and takes a
 * lock only for blocks that large.
 *
 * The hooks run before teshim's constructor and inside the allocator's own
 * callers; the real functions are resolved on first use, and an allocation
 * made while resolving them (dlvsym may allocate) comes from a small static
 * arena that free() recognises.
 */
#include "shim.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <unistd.h>

/* This file defines the rows of shim_hooks_mem.def. */
#define HOOK(lib, ...) SHIM_PROTO(__VA_ARGS__)
#include "shim_hooks_mem.def"
#undef HOOK

#ifndef MADV_DONTNEED_LOCKED
#define MADV_DONTNEED_LOCKED 24
#endif

/* ---- resolution and the bootstrap arena ----------------------------------- */

static __thread bool mw_resolving __attribute__((tls_model("initial-exec")));
static _Alignas(64) char boot_arena[64 * 1024];
static _Atomic size_t boot_used;

static bool in_boot(const void *p)
{
    return (const char *)p >= boot_arena && (const char *)p < boot_arena + sizeof(boot_arena);
}

/* 16-byte aligned, zeroed (static), never freed; NULL when exhausted. */
static void *boot_alloc(size_t n)
{
    size_t need = (n + 15) & ~(size_t)15;
    size_t at = atomic_fetch_add(&boot_used, need);

    return at + need <= sizeof(boot_arena) ? boot_arena + at : NULL;
}

/* The real functions, once known: the hot path is one relaxed load. */
static _Atomic(void *) mem_fns[SHIM_HK_COUNT];

/* The real function of a memory hook; NULL while this thread resolves one
 * (dlvsym may allocate: that allocation comes from the arena). */
static void *mem_real_slow(enum shim_hook_id id)
{
    void *fn;

    if (mw_resolving)
        return NULL;
    mw_resolving = true;
    fn = shim_resolve(id);
    mw_resolving = false;
    if (fn)
        atomic_store_explicit(&mem_fns[id], fn, memory_order_relaxed);
    return fn;
}

static inline void *mem_real(enum shim_hook_id id)
{
    void *fn = atomic_load_explicit(&mem_fns[id], memory_order_relaxed);

    return __builtin_expect(fn != NULL, 1) ? fn : mem_real_slow(id);
}

#define REAL(name) ((shim_fn_##name##_libc)mem_real(SHIM_HK_##name##_libc))

/* ---- the watched set ------------------------------------------------------ */

enum mw_kind { MW_BLOCK, MW_MAP, MW_SHM };

struct mw_range {
    uintptr_t lo, hi;
    enum mw_kind kind;
};

/* Fixed capacity, mapped on first use: the table never calls the allocator
 * it watches. Ranges past it are not watched (counted). */
#define MW_MAX 65536

static atomic_bool mw_on;
static size_t mw_min = SIZE_MAX;
static pthread_mutex_t mw_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mw_range *mw_tab; /* sorted by lo; blocks may lie inside maps */
static size_t mw_n;
static _Atomic uint64_t mw_full; /* ranges not watched: table full */
static size_t (*usable_size)(void *);

void shim_mem_init(const struct pol_config *cfg)
{
    void *fn;

    if (!pol_int(cfg, POL_CUDA_REGISTER_CACHE))
        return;
    fn = dlsym(RTLD_NEXT, "malloc_usable_size");
    memcpy(&usable_size, &fn, sizeof(fn));
    mw_min = (size_t)pol_int(cfg, POL_CUDA_REGISTER_MIN_BYTES);
    atomic_store(&mw_on, true);
}

void shim_mem_atfork_child(void)
{
    pthread_mutex_init(&mw_lock, NULL);
}

uint64_t shim_mem_unwatched_full(void)
{
    return atomic_load(&mw_full);
}

static bool mw_active(void)
{
    return atomic_load_explicit(&mw_on, memory_order_acquire);
}

/* The registrations one hook call dropped before its real call. */
struct mw_drop {
    enum shim_hook_id id;
    unsigned n;
    size_t bytes;
};

/*
 * A call that made teshim drop cached registrations first is counted, once
 * its real call returned (rv, err), as injected (it was preceded by an
 * unregister) or by the error rule; every other call of these hooks passes
 * uncounted, so an allocation costs no shared write.
 */
static void mw_count(const struct mw_drop *d, intptr_t rv, int err)
{
    if (!d->n)
        return;
    shim_count_call(d->id);
    shim_count_result(d->id, SHIM_C_INJECTED, rv, err);
    shim_count_bytes(d->id, d->bytes);
}

/* Enter a memory hook's bookkeeping: false when it must pass straight
 * through (cache off, the range too small, or teshim itself is running on
 * this thread: the runtime's own allocations inside a hook, or ours). */
static bool mw_enter(size_t len)
{
    if (!mw_active() || len < mw_min)
        return false;
    return shim_enter_internal();
}

static void mw_add(const void *p, size_t len, enum mw_kind kind)
{
    uintptr_t lo = (uintptr_t)p;
    size_t i;

    pthread_mutex_lock(&mw_lock);
    if (!mw_tab) {
        void *t = mmap(NULL, MW_MAX * sizeof(*mw_tab), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        mw_tab = t == MAP_FAILED ? NULL : t;
    }
    if (!mw_tab || mw_n == MW_MAX) {
        atomic_fetch_add(&mw_full, 1);
        goto out;
    }
    for (i = mw_n; i > 0 && mw_tab[i - 1].lo > lo; i--)
        ;
    memmove(&mw_tab[i + 1], &mw_tab[i], (mw_n - i) * sizeof(*mw_tab));
    mw_tab[i] = (struct mw_range){lo, lo + len, kind};
    mw_n++;
out:
    pthread_mutex_unlock(&mw_lock);
}

/* Forget every watched range overlapping [lo, hi) (exact: only the block
 * starting at lo, when block is set). Returns the end of the last range
 * forgotten, or 0. Caller holds mw_lock. */
static uintptr_t mw_forget_locked(uintptr_t lo, uintptr_t hi, bool block)
{
    uintptr_t end = 0;
    size_t j = 0;

    for (size_t i = 0; i < mw_n; i++) {
        struct mw_range r = mw_tab[i];
        bool hit = block ? r.kind == MW_BLOCK && r.lo == lo : r.lo < hi && r.hi > lo;
        if (hit) {
            end = r.hi > end ? r.hi : end;
            continue;
        }
        mw_tab[j++] = r;
    }
    mw_n = j;
    return end;
}

/*
 * [lo, hi) is about to leave the application (forget: stop watching it
 * too) or get new pages (madvise): stop watching, then drop the cache's
 * registrations over it. The order matters: a copy registering a range
 * checks the watched set and registers under the cache's lock, so either
 * it saw the range gone, or its registration is there to be dropped.
 */
static void mw_drop_range(struct mw_drop *d, uintptr_t lo, uintptr_t hi)
{
    unsigned n = shim_cuda_release((const void *)lo, hi - lo);

    d->n += n;
    d->bytes += n ? hi - lo : 0;
}

static void mw_release(struct mw_drop *d, uintptr_t lo, uintptr_t hi, bool forget)
{
    if (forget) {
        pthread_mutex_lock(&mw_lock);
        mw_forget_locked(lo, hi, false);
        pthread_mutex_unlock(&mw_lock);
    }
    mw_drop_range(d, lo, hi);
}

/* A block is about to be freed or reallocated: forget it and drop what
 * covers it. False when there was nothing to do (d untouched). */
static bool mw_release_block(struct mw_drop *d, void *p)
{
    uintptr_t end;

    if (!p || in_boot(p) || !mw_active() || !usable_size)
        return false;
    if (usable_size(p) < mw_min || !shim_enter_internal())
        return false;
    pthread_mutex_lock(&mw_lock);
    end = mw_forget_locked((uintptr_t)p, 0, true);
    pthread_mutex_unlock(&mw_lock);
    if (end)
        mw_drop_range(d, (uintptr_t)p, end);
    shim_leave();
    return d->n != 0;
}

static void mw_track_block(void *p, size_t n)
{
    if (!p || !mw_enter(n))
        return;
    mw_add(p, n, MW_BLOCK);
    shim_leave();
}

bool shim_mem_watched(const void *p, size_t n)
{
    uintptr_t lo = (uintptr_t)p, hi = lo + n;
    bool found = false;

    pthread_mutex_lock(&mw_lock);
    for (size_t i = 0; i < mw_n && mw_tab[i].lo <= lo && !found; i++)
        found = mw_tab[i].hi >= hi;
    pthread_mutex_unlock(&mw_lock);
    return found;
}

/* ---- allocator hooks ------------------------------------------------------ */

void *shim_hook_malloc_libc(size_t n)
{
    shim_fn_malloc_libc real = REAL(malloc);
    void *p;

    if (!real)
        return boot_alloc(n);
    p = real(n);
    mw_track_block(p, n);
    return p;
}

void *shim_hook_calloc_libc(size_t nmemb, size_t size)
{
    shim_fn_calloc_libc real = REAL(calloc);
    size_t n;
    void *p;

    if (!real)
        return __builtin_mul_overflow(nmemb, size, &n) ? NULL : boot_alloc(n);
    p = real(nmemb, size);
    if (p && !__builtin_mul_overflow(nmemb, size, &n))
        mw_track_block(p, n);
    return p;
}

void shim_hook_free_libc(void *p)
{
    shim_fn_free_libc real;

    if (!p || in_boot(p))
        return;
    real = REAL(free);
    struct mw_drop d = {SHIM_HK_free_libc, 0, 0};
    mw_release_block(&d, p);
    if (real)
        real(p);
    mw_count(&d, 0, 0);
}

void *shim_hook_realloc_libc(void *p, size_t n)
{
    shim_fn_realloc_libc real = REAL(realloc);
    void *q;

    if (!real || in_boot(p)) {
        /* Resolving, or a bootstrap block growing: a fresh block. */
        shim_fn_malloc_libc m = REAL(malloc);
        q = m ? m(n) : boot_alloc(n);
        if (q && p) {
            size_t left = (size_t)(boot_arena + sizeof(boot_arena) - (char *)p);
            memcpy(q, p, n < left ? n : left);
        }
        return q;
    }
    /* realloc may unmap, move or shrink the block inside libc. */
    struct mw_drop d = {SHIM_HK_realloc_libc, 0, 0};
    mw_release_block(&d, p);
    q = real(p, n);
    mw_count(&d, (intptr_t)q, errno);
    mw_track_block(q, n);
    return q;
}

void *shim_hook_reallocarray_libc(void *p, size_t nmemb, size_t size)
{
    shim_fn_reallocarray_libc real = REAL(reallocarray);
    size_t n;
    void *q;

    if (!real)
        return NULL;
    if (__builtin_mul_overflow(nmemb, size, &n))
        return real(p, nmemb, size); /* its own ENOMEM; p untouched */
    struct mw_drop d = {SHIM_HK_reallocarray_libc, 0, 0};
    mw_release_block(&d, p);
    q = real(p, nmemb, size);
    mw_count(&d, (intptr_t)q, errno);
    mw_track_block(q, n);
    return q;
}

int shim_hook_posix_memalign_libc(void **pp, size_t align, size_t n)
{
    shim_fn_posix_memalign_libc real = REAL(posix_memalign);
    int rc;

    if (!real)
        return ENOMEM;
    rc = real(pp, align, n);
    if (rc == 0)
        mw_track_block(*pp, n);
    return rc;
}

#define ALIGNED_HOOK(name)                                                                         \
    void *shim_hook_##name##_libc(size_t align, size_t n)                                          \
    {                                                                                              \
        shim_fn_##name##_libc real = REAL(name);                                                   \
        void *p;                                                                                   \
                                                                                                   \
        if (!real) {                                                                               \
            errno = ENOMEM;                                                                        \
            return NULL;                                                                           \
        }                                                                                          \
        p = real(align, n);                                                                        \
        mw_track_block(p, n);                                                                      \
        return p;                                                                                  \
    }

ALIGNED_HOOK(aligned_alloc)
ALIGNED_HOOK(memalign)

#define PAGE_HOOK(name)                                                                            \
    void *shim_hook_##name##_libc(size_t n)                                                        \
    {                                                                                              \
        shim_fn_##name##_libc real = REAL(name);                                                   \
        void *p;                                                                                   \
                                                                                                   \
        if (!real) {                                                                               \
            errno = ENOMEM;                                                                        \
            return NULL;                                                                           \
        }                                                                                          \
        p = real(n);                                                                               \
        mw_track_block(p, n);                                                                      \
        return p;                                                                                  \
    }

PAGE_HOOK(valloc)
PAGE_HOOK(pvalloc)

/* ---- mapping hooks -------------------------------------------------------- */

/* A hook whose real function is missing fails as a missing syscall would. */
#define NO_REAL(ret)                                                                               \
    do {                                                                                           \
        errno = ENOSYS;                                                                            \
        return ret;                                                                                \
    } while (0)

static void *mmap_common(enum shim_hook_id id, void *(*real)(void *, size_t, int, int, int, off_t),
                         void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    struct mw_drop d = {id, 0, 0};
    bool fixed = flags & MAP_FIXED;
    void *p;

    /* A mapping of any size placed with MAP_FIXED replaces the pages under
     * it (as a small munmap cuts into a large mapping); only a large one is
     * watched afterwards. */
    if (!mw_active() || (!fixed && len < mw_min) || !shim_enter_internal())
        return real(addr, len, prot, flags, fd, off);
    if (fixed)
        mw_release(&d, (uintptr_t)addr, (uintptr_t)addr + len, true);
    p = real(addr, len, prot, flags, fd, off);
    mw_count(&d, (intptr_t)p, errno);
    if (p != MAP_FAILED && len >= mw_min)
        mw_add(p, len, MW_MAP);
    shim_leave();
    return p;
}

void *shim_hook_mmap_libc(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    shim_fn_mmap_libc real = REAL(mmap);

    if (!real)
        NO_REAL(MAP_FAILED);
    return mmap_common(SHIM_HK_mmap_libc, real, addr, len, prot, flags, fd, off);
}

void *shim_hook_mmap64_libc(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    shim_fn_mmap64_libc real = REAL(mmap64);

    if (!real)
        NO_REAL(MAP_FAILED);
    return mmap_common(SHIM_HK_mmap64_libc, real, addr, len, prot, flags, fd, off);
}

int shim_hook_munmap_libc(void *addr, size_t len)
{
    shim_fn_munmap_libc real = REAL(munmap);
    struct mw_drop d = {SHIM_HK_munmap_libc, 0, 0};
    int rc;

    if (!real)
        NO_REAL(-1);
    /* Any size: a small munmap can cut into a large mapping. */
    if (!mw_active() || !shim_enter_internal())
        return real(addr, len);
    mw_release(&d, (uintptr_t)addr, (uintptr_t)addr + len, true);
    rc = real(addr, len);
    mw_count(&d, rc, errno);
    shim_leave();
    return rc;
}

void *shim_hook_mremap_libc(void *old, size_t old_len, size_t new_len, int flags, ...)
{
    shim_fn_mremap_libc real = REAL(mremap);
    struct mw_drop d = {SHIM_HK_mremap_libc, 0, 0};
    void *want = NULL, *p;
    va_list ap;

    if (flags & (MREMAP_FIXED | MREMAP_DONTUNMAP)) {
        va_start(ap, flags);
        want = va_arg(ap, void *);
        va_end(ap);
    }
    if (!real)
        NO_REAL(MAP_FAILED);
    if (!mw_active() || !shim_enter_internal())
        return real(old, old_len, new_len, flags, want);
    /* The old range loses its pages (moved, or cut), the target is replaced. */
    mw_release(&d, (uintptr_t)old, (uintptr_t)old + old_len, true);
    if (flags & MREMAP_FIXED)
        mw_release(&d, (uintptr_t)want, (uintptr_t)want + new_len, true);
    p = real(old, old_len, new_len, flags, want);
    mw_count(&d, (intptr_t)p, errno);
    if (p != MAP_FAILED && new_len >= mw_min)
        mw_add(p, new_len, MW_MAP);
    shim_leave();
    return p;
}

int shim_hook_madvise_libc(void *addr, size_t len, int advice)
{
    shim_fn_madvise_libc real = REAL(madvise);
    struct mw_drop d = {SHIM_HK_madvise_libc, 0, 0};
    int rc;

    if (!real)
        NO_REAL(-1);
    if ((advice != MADV_DONTNEED && advice != MADV_FREE && advice != MADV_REMOVE &&
         advice != MADV_DONTNEED_LOCKED) ||
        !mw_active() || !shim_enter_internal())
        return real(addr, len, advice);
    mw_release(&d, (uintptr_t)addr, (uintptr_t)addr + len, false);
    rc = real(addr, len, advice);
    mw_count(&d, rc, errno);
    shim_leave();
    return rc;
}

/* The program break moves from cur to want: a shrink releases what lies
 * above want, a large growth is watched. */
static void brk_move(struct mw_drop *d, uintptr_t cur, uintptr_t want, bool before)
{
    if (before && want < cur)
        mw_release(d, want, cur, true);
    if (!before && want > cur && want - cur >= mw_min)
        mw_add((void *)cur, want - cur, MW_MAP);
}

int shim_hook_brk_libc(void *addr)
{
    shim_fn_brk_libc real = REAL(brk);
    shim_fn_sbrk_libc cur_fn = REAL(sbrk);
    struct mw_drop d = {SHIM_HK_brk_libc, 0, 0};
    uintptr_t cur;
    int rc;

    if (!real || !cur_fn)
        NO_REAL(-1);
    if (!mw_active() || !shim_enter_internal())
        return real(addr);
    cur = (uintptr_t)cur_fn(0);
    brk_move(&d, cur, (uintptr_t)addr, true);
    rc = real(addr);
    mw_count(&d, rc, errno);
    if (rc == 0)
        brk_move(&d, cur, (uintptr_t)addr, false);
    shim_leave();
    return rc;
}

void *shim_hook_sbrk_libc(intptr_t inc)
{
    shim_fn_sbrk_libc real = REAL(sbrk);
    struct mw_drop d = {SHIM_HK_sbrk_libc, 0, 0};
    uintptr_t cur;
    void *p;

    if (!real)
        NO_REAL((void *)-1);
    if (inc == 0 || !mw_active() || !shim_enter_internal())
        return real(inc);
    cur = (uintptr_t)real(0);
    brk_move(&d, cur, cur + (uintptr_t)inc, true);
    p = real(inc);
    mw_count(&d, (intptr_t)p, errno);
    if (p != (void *)-1)
        brk_move(&d, cur, cur + (uintptr_t)inc, false);
    shim_leave();
    return p;
}

void *shim_hook_shmat_libc(int id, const void *addr, int flags)
{
    shim_fn_shmat_libc real = REAL(shmat);
    struct mw_drop d = {SHIM_HK_shmat_libc, 0, 0};
    struct shmid_ds ds;
    void *p;

    if (!real)
        NO_REAL((void *)-1);
    if (!mw_active() || shmctl(id, IPC_STAT, &ds) != 0 || !shim_enter_internal())
        return real(id, addr, flags);
    /* SHM_REMAP replaces what was mapped there. */
    if (addr && (flags & SHM_REMAP))
        mw_release(&d, (uintptr_t)addr, (uintptr_t)addr + ds.shm_segsz, true);
    p = real(id, addr, flags);
    mw_count(&d, (intptr_t)p, errno);
    if (p != (void *)-1 && ds.shm_segsz >= mw_min)
        mw_add(p, ds.shm_segsz, MW_SHM);
    shim_leave();
    return p;
}

int shim_hook_shmdt_libc(const void *addr)
{
    shim_fn_shmdt_libc real = REAL(shmdt);
    struct mw_drop d = {SHIM_HK_shmdt_libc, 0, 0};
    uintptr_t end = 0;
    int rc;

    if (!real)
        NO_REAL(-1);
    if (!mw_active() || !shim_enter_internal())
        return real(addr);
    /* Only a watched segment can have cached registrations in it. */
    pthread_mutex_lock(&mw_lock);
    for (size_t i = 0; i < mw_n; i++)
        if (mw_tab[i].kind == MW_SHM && mw_tab[i].lo == (uintptr_t)addr)
            end = mw_tab[i].hi;
    if (end)
        mw_forget_locked((uintptr_t)addr, end, false);
    pthread_mutex_unlock(&mw_lock);
    if (end)
        mw_drop_range(&d, (uintptr_t)addr, end);
    rc = real(addr);
    mw_count(&d, rc, errno);
    shim_leave();
    return rc;
}

#define HOOK(lib, ...) SHIM_SYMVER(__VA_ARGS__)
#include "shim_hooks_mem.def"
#undef HOOK
