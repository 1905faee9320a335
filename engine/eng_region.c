/* Registrations: the sorted table, lookups for peers, the HELLO list. */
#include "eng.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* after a revocation, how long the closing of connections may take */
#define REVOKE_WAIT_NS (5 * 1000000000ull)

/* Index of the first region with addr > a. */
static size_t reg_upper(struct teshim_engine *eng, uint64_t a)
{
    size_t lo = 0, hi = eng->nregs;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (eng->regs[mid]->addr <= a)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The region containing [a, a+len), reg_lock held; NULL if none. */
static struct eng_region *reg_find(struct teshim_engine *eng, uint64_t a, uint64_t len)
{
    size_t i = reg_upper(eng, a);
    if (!i || a + len < a)
        return NULL;
    struct eng_region *r = eng->regs[i - 1];
    if (a + len > r->addr + r->len)
        return NULL;
    return r;
}

int eng_region_add(struct teshim_engine *eng, uint64_t a, uint64_t len, bool remote, int dev)
{
    struct eng_region *r = calloc(1, sizeof(*r));
    int ret = 0;

    if (!r) {
        eng_err(&eng->ctx, "register: no memory for a region");
        return -ENOMEM;
    }
    r->addr = a;
    r->len = len;
    r->remote = remote;
    r->cuda_dev = dev;
    pthread_rwlock_wrlock(&eng->reg_lock);
    size_t i = reg_upper(eng, a);
    if ((i && eng->regs[i - 1]->addr + eng->regs[i - 1]->len > a) ||
        (i < eng->nregs && eng->regs[i]->addr < a + len)) {
        eng_err(&eng->ctx, "register: [%p, +%llu) overlaps a registration", (void *)(uintptr_t)a,
                (unsigned long long)len);
        ret = -EEXIST;
        goto err_unlock;
    }
    if (eng->nregs == eng->capregs) {
        size_t cap = eng->capregs ? eng->capregs * 2 : 16;
        struct eng_region **n = realloc(eng->regs, cap * sizeof(*n));
        if (!n) {
            eng_err(&eng->ctx, "register: no memory for %zu regions", cap);
            ret = -ENOMEM;
            goto err_unlock;
        }
        eng->regs = n;
        eng->capregs = cap;
    }
    memmove(eng->regs + i + 1, eng->regs + i, (eng->nregs - i) * sizeof(*eng->regs));
    eng->regs[i] = r;
    eng->nregs++;
    pthread_rwlock_unlock(&eng->reg_lock);
    return 0;

err_unlock:
    pthread_rwlock_unlock(&eng->reg_lock);
    free(r);
    return ret;
}

/*
 * Peers' requests already admitted finish before the memory goes. A peer
 * that does not read its answers would hold them for ever: after
 * engine.unregister_timeout_ms the region is revoked, the tcp workers
 * close the connections whose answers use it (their requests fail at the
 * peer), and this returns -ETIMEDOUT. Should the requests still not end
 * (a device copy that never completes), the region is left allocated and
 * -EBUSY returned: the memory must then stay valid.
 */
static int region_drain(struct teshim_engine *eng, struct eng_region *r)
{
    uint64_t t0 = eng_now_ns(), to = (uint64_t)eng->ctx.p.unregister_timeout_ms * 1000000ull;
    bool revoked = false;
    int ret = 0;

    while (atomic_load(&r->users)) {
        uint64_t waited = eng_now_ns() - t0;
        if (!revoked && waited > to) {
            revoked = true;
            eng_err(&eng->ctx,
                    "unregister: [%p, +%llu) still used by %d peer requests after %d ms; "
                    "closing the connections that carry them",
                    (void *)(uintptr_t)r->addr, (unsigned long long)r->len, atomic_load(&r->users),
                    eng->ctx.p.unregister_timeout_ms);
            atomic_store(&r->revoked, true);
            atomic_fetch_add(&eng->ctx.revoking, 1);
        }
        if (revoked && waited > to + REVOKE_WAIT_NS) {
            eng_err(&eng->ctx,
                    "unregister: [%p, +%llu) still used %d s after its connections were "
                    "closed; keep the memory valid",
                    (void *)(uintptr_t)r->addr, (unsigned long long)r->len,
                    (int)(REVOKE_WAIT_NS / 1000000000ull));
            ret = -EBUSY;
            break;
        }
        usleep(revoked ? 1000 : 100);
    }
    if (revoked)
        atomic_fetch_sub(&eng->ctx.revoking, 1);
    if (ret)
        return ret; /* r stays allocated: answers still refer to it */
    free(r);
    return revoked ? -ETIMEDOUT : 0;
}

int eng_region_remove(struct teshim_engine *eng, uint64_t a)
{
    struct eng_region *r = NULL;

    pthread_rwlock_wrlock(&eng->reg_lock);
    size_t i = reg_upper(eng, a);
    if (i && eng->regs[i - 1]->addr == a) {
        r = eng->regs[i - 1];
        memmove(eng->regs + i - 1, eng->regs + i, (eng->nregs - i) * sizeof(*eng->regs));
        eng->nregs--;
        /* same-host peers see their cached list is stale (eng_local.c) */
        atomic_fetch_add(&eng->ctx.words.unreg_gen, 1);
    }
    pthread_rwlock_unlock(&eng->reg_lock);
    if (!r)
        return -ENOENT;
    return region_drain(eng, r);
}

int eng_region_device(struct teshim_engine *eng, uint64_t a, uint64_t len, int *dev_p)
{
    pthread_rwlock_rdlock(&eng->reg_lock);
    struct eng_region *reg = reg_find(eng, a, len);
    int dev = reg ? reg->cuda_dev : -1;
    pthread_rwlock_unlock(&eng->reg_lock);
    if (!reg)
        return -EFAULT;
    *dev_p = dev;
    return 0;
}

struct eng_region *eng_region_get(struct eng_ctx *ctx, uint64_t addr, uint64_t len)
{
    struct teshim_engine *eng = eng_of(ctx);

    pthread_rwlock_rdlock(&eng->reg_lock);
    struct eng_region *r = reg_find(eng, addr, len);
    if (r && !r->remote)
        r = NULL;
    if (r)
        atomic_fetch_add(&r->users, 1);
    pthread_rwlock_unlock(&eng->reg_lock);
    return r;
}

void eng_region_put(struct eng_region *r)
{
    if (r)
        atomic_fetch_sub(&r->users, 1);
}

int eng_region_list(struct eng_ctx *ctx, struct eng_region_desc **out, uint32_t *n)
{
    struct teshim_engine *eng = eng_of(ctx);
    uint32_t k = 0;

    pthread_rwlock_rdlock(&eng->reg_lock);
    struct eng_region_desc *d = malloc((eng->nregs + 1) * sizeof(*d));
    if (!d) {
        pthread_rwlock_unlock(&eng->reg_lock);
        return -ENOMEM;
    }
    for (size_t i = 0; i < eng->nregs && k < ENG_MAX_REGIONS; i++) {
        if (!eng->regs[i]->remote)
            continue;
        d[k].addr = eng->regs[i]->addr;
        d[k].len = eng->regs[i]->len;
        d[k].flags = eng->regs[i]->cuda_dev >= 0 ? ENG_REGION_DEVICE : 0;
        k++;
    }
    pthread_rwlock_unlock(&eng->reg_lock);
    *out = d;
    *n = k;
    return 0;
}

void eng_regions_free(struct teshim_engine *eng)
{
    for (size_t i = 0; i < eng->nregs; i++)
        free(eng->regs[i]);
    free(eng->regs);
    eng->regs = NULL;
    eng->nregs = eng->capregs = 0;
}
