/* Protection domains and memory regions. Every registration entry point is
 * recorded with its own name and the access flags exactly as the caller
 * (or teshim on its behalf) passed them; the region is published in the
 * shared registry so that peers can check rkey, bounds and access.
 *
 * VERBS_EMU_REJECT_ACCESS=<mask> makes registrations whose access flags
 * contain any bit of mask fail with EINVAL, like drivers that reject
 * IBV_ACCESS_RELAXED_ORDERING (for fallback tests).
 *
 * Pinning, as the kernel's ib_umem_get does it: a range inside a mapping
 * without access (PROT_NONE, which is where CUDA device pointers live, and
 * the emulated runtime's device memory) cannot be pinned: EFAULT ("Bad
 * address"), as on a system without peer memory. VERBS_EMU_PEER_MEMORY=1
 * loads the peer-memory client, as nvidia-peermem does: the emulated CUDA
 * driver (cemu_peer_mem_get of the libcuda.so.1 the process loaded) claims
 * its device
 * memory and hands the view where its bytes are reachable, which the
 * registry keeps, so one-sided WRITE/READ move device bytes through it. */
#include "emu.h"

#include <dlfcn.h>
#include "emu_registry.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The peer-memory client's entry: 0 and *view when [addr, +len) lies in
 * one device allocation, -errno otherwise. */
typedef int (*emu_peer_get_fn)(const void *addr, size_t len, void **view);

/* Whether a mapping without any access overlaps [addr, addr+len). */
static int emu_no_access(uint64_t addr, uint64_t len)
{
    FILE *f = fopen("/proc/self/maps", "re");
    char line[512];
    int hit = 0;

    if (f == NULL)
        return 0;
    while (!hit && fgets(line, sizeof(line), f) != NULL) {
        unsigned long long lo, hi;
        char perms[8];

        if (sscanf(line, "%llx-%llx %7s", &lo, &hi, perms) == 3 && lo < addr + len && addr < hi &&
            strncmp(perms, "---", 3) == 0)
            hit = 1;
        /* a longer line: skip the rest of it */
        while (strchr(line, '\n') == NULL && fgets(line, sizeof(line), f) != NULL)
            ;
    }
    fclose(f);
    return hit;
}

/* Pin [addr, +len) for a registration: 0 and *view, or an errno. */
static int emu_pin(uint64_t addr, uint64_t len, uint64_t *view)
{
    const char *pm = getenv("VERBS_EMU_PEER_MEMORY");

    *view = addr;
    if (pm != NULL && strcmp(pm, "1") == 0) {
        emu_peer_get_fn get;
        void *v;

        /* the driver the process loaded (never loaded here) */
        void *drv = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
        int rc = -ENOENT;

        if (drv != NULL) {
            *(void **)&get = dlsym(drv, "cemu_peer_mem_get");
            if (get != NULL)
                rc = get((const void *)(uintptr_t)addr, (size_t)len, &v);
            dlclose(drv);
        }
        if (rc == 0) {
            *view = (uint64_t)(uintptr_t)v;
            return 0;
        }
    }
    return emu_no_access(addr, len) ? EFAULT : 0;
}

static uint32_t emu_pd_next = 1;

struct ibv_pd *ibv_alloc_pd(struct ibv_context *ctx)
{
    struct emu_pd *p = calloc(1, sizeof(*p));
    struct emu_rec r;

    if (p != NULL) {
        p->pd.context = ctx;
        p->pd.handle = __atomic_fetch_add(&emu_pd_next, 1, __ATOMIC_RELAXED);
    }
    emu_rec_begin(&r, "alloc_pd");
    emu_rec_str(&r, "dev", ctx->device->name);
    emu_rec_u64(&r, "pd", p != NULL ? p->pd.handle : 0);
    emu_rec_i64(&r, "ret", p != NULL ? 0 : ENOMEM);
    emu_rec_end(&r);
    if (p == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    return &p->pd;
}

int ibv_dealloc_pd(struct ibv_pd *pd)
{
    struct emu_rec r;

    emu_rec_begin(&r, "dealloc_pd");
    emu_rec_u64(&r, "pd", pd->handle);
    emu_rec_end(&r);
    free(pd);
    return 0;
}

static int emu_access_check(unsigned int access)
{
    const char *reject = getenv("VERBS_EMU_REJECT_ACCESS");

    /* remote write and atomics need local write, as the kernel demands */
    if ((access & (IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC)) &&
        !(access & IBV_ACCESS_LOCAL_WRITE))
        return EINVAL;
    if (reject != NULL && (access & (unsigned int)strtoul(reject, NULL, 0)) != 0)
        return EINVAL;
    return 0;
}

static struct ibv_mr *emu_reg(const char *entry, struct ibv_pd *pd, void *addr, size_t length,
                              uint64_t iova, unsigned int access, int dmabuf_fd, uint64_t offset)
{
    struct emu_mr *m = NULL;
    struct emu_rec r;
    uint32_t key = 0;
    int rc;

    rc = emu_access_check(access);
    if (rc == 0 && length == 0)
        rc = EINVAL;
    if (rc == 0) {
        m = calloc(1, sizeof(*m));
        if (m == NULL)
            rc = ENOMEM;
    }
    if (rc == 0) {
        /* a dma-buf has no address in this process: it is registered but
         * no remote access can reach it */
        uint64_t view = (uint64_t)(uintptr_t)addr;

        if (dmabuf_fd < 0)
            rc = emu_pin((uint64_t)(uintptr_t)addr, length, &view);
        if (rc == 0)
            rc = -emu_reg_mr_add(pd->handle, (uint64_t)(uintptr_t)addr, length, view,
                                 dmabuf_fd >= 0 ? 0 : access, &key);
        if (rc != 0) {
            free(m);
            m = NULL;
        }
    }
    emu_rec_begin(&r, "reg_mr");
    emu_rec_str(&r, "entry", entry);
    emu_rec_str(&r, "dev", pd->context->device->name);
    emu_rec_u64(&r, "pd", pd->handle);
    emu_rec_u64(&r, "addr", (uint64_t)(uintptr_t)addr);
    emu_rec_u64(&r, "length", length);
    emu_rec_u64(&r, "iova", iova);
    emu_rec_u64(&r, "access", access);
    if (dmabuf_fd >= 0) {
        emu_rec_i64(&r, "fd", dmabuf_fd);
        emu_rec_u64(&r, "offset", offset);
    }
    emu_rec_i64(&r, "ret", rc);
    if (rc == 0)
        emu_rec_u64(&r, "rkey", key);
    emu_rec_end(&r);
    if (rc != 0) {
        errno = rc;
        return NULL;
    }
    m->mr.context = pd->context;
    m->mr.pd = pd;
    m->mr.addr = addr;
    m->mr.length = length;
    m->mr.handle = key;
    m->mr.lkey = key;
    m->mr.rkey = key;
    m->access = access;
    return &m->mr;
}

/*
 * rdma-core's ibv_reg_mr@IBVERBS_1.1 and ibv_reg_mr_iova@IBVERBS_1.7 register
 * through ibv_reg_mr_iova2, called through the library's PLT (its relocations
 * hold a JUMP_SLOT for ibv_reg_mr_iova2@@IBVERBS_1.8): an interposer of iova2
 * preloaded ahead of the library receives those inner calls too, even where
 * the library was dlopen'ed RTLD_LOCAL. The calls here are made the same way
 * (default visibility, no -Bsymbolic); the record keeps the entry point the
 * caller used.
 */
static __thread const char *emu_outer_entry;

/* An interposer that did not call through leaves no name behind. */
static struct ibv_mr *emu_outer_done(struct ibv_mr *mr)
{
    emu_outer_entry = NULL;
    return mr;
}

struct ibv_mr *(ibv_reg_mr)(struct ibv_pd *pd, void *addr, size_t length, int access)
{
    emu_outer_entry = "ibv_reg_mr";
    return emu_outer_done(
        ibv_reg_mr_iova2(pd, addr, length, (uint64_t)(uintptr_t)addr, (unsigned int)access));
}

struct ibv_mr *(ibv_reg_mr_iova)(struct ibv_pd *pd, void *addr, size_t length, uint64_t iova,
                                 int access)
{
    emu_outer_entry = "ibv_reg_mr_iova";
    return emu_outer_done(ibv_reg_mr_iova2(pd, addr, length, iova, (unsigned int)access));
}

struct ibv_mr *ibv_reg_mr_iova2(struct ibv_pd *pd, void *addr, size_t length, uint64_t iova,
                                unsigned int access)
{
    const char *entry = emu_outer_entry ? emu_outer_entry : "ibv_reg_mr_iova2";

    emu_outer_entry = NULL;
    return emu_reg(entry, pd, addr, length, iova, access, -1, 0);
}

struct ibv_mr *ibv_reg_dmabuf_mr(struct ibv_pd *pd, uint64_t offset, size_t length, uint64_t iova,
                                 int fd, int access)
{
    if (fd < 0) {
        errno = EBADF;
        return NULL;
    }
    return emu_reg("ibv_reg_dmabuf_mr", pd, NULL, length, iova, (unsigned int)access, fd, offset);
}

int ibv_rereg_mr(struct ibv_mr *mr, int flags, struct ibv_pd *pd, void *addr, size_t length,
                 int access)
{
    struct emu_mr *m = (struct emu_mr *)mr;
    struct ibv_pd *npd = (flags & IBV_REREG_MR_CHANGE_PD) ? pd : mr->pd;
    void *naddr = (flags & IBV_REREG_MR_CHANGE_TRANSLATION) ? addr : mr->addr;
    size_t nlen = (flags & IBV_REREG_MR_CHANGE_TRANSLATION) ? length : mr->length;
    unsigned int nacc = (flags & IBV_REREG_MR_CHANGE_ACCESS) ? (unsigned int)access : m->access;
    struct emu_rec r;
    int rc = 0;

    if (flags == 0 || (flags & ~(IBV_REREG_MR_FLAGS_SUPPORTED - 1)) != 0 || npd == NULL ||
        nlen == 0)
        rc = EINVAL;
    if (rc == 0)
        rc = emu_access_check(nacc);
    if (rc == 0)
        rc = -emu_reg_mr_update(mr->rkey, npd->handle, (uint64_t)(uintptr_t)naddr, nlen, nacc);
    emu_rec_begin(&r, "rereg_mr");
    emu_rec_u64(&r, "rkey", mr->rkey);
    emu_rec_i64(&r, "flags", flags);
    emu_rec_u64(&r, "pd", npd != NULL ? npd->handle : 0);
    emu_rec_u64(&r, "addr", (uint64_t)(uintptr_t)naddr);
    emu_rec_u64(&r, "length", nlen);
    emu_rec_u64(&r, "access", nacc);
    emu_rec_i64(&r, "ret", rc);
    emu_rec_end(&r);
    if (rc != 0) {
        errno = rc;
        return IBV_REREG_MR_ERR_INPUT;
    }
    mr->pd = npd;
    mr->addr = naddr;
    mr->length = nlen;
    m->access = nacc;
    return 0;
}

int ibv_dereg_mr(struct ibv_mr *mr)
{
    struct emu_rec r;
    int rc = -emu_reg_mr_del(mr->rkey);

    emu_rec_begin(&r, "dereg_mr");
    emu_rec_u64(&r, "rkey", mr->rkey);
    emu_rec_i64(&r, "ret", rc);
    emu_rec_end(&r);
    if (rc != 0)
        return rc;
    free(mr);
    return 0;
}

/*
 * ibv_reg_mr@IBVERBS_1.0 takes rdma-core's pre-1.1 structs. Like rdma-core's
 * compat layer, it unwraps the 1.1 PD, registers through the current entry
 * point, and wraps the MR. rdma-core makes that inner call through its PLT,
 * so a preloaded interposer of ibv_reg_mr_iova2 sees it; the lookup in the
 * global scope below reproduces that, which is what the shim's tests need.
 */
struct emu_pd_1_0 {
    void *context;
    uint32_t handle;
    struct ibv_pd *real_pd;
};

struct emu_mr_1_0 {
    void *context;
    struct emu_pd_1_0 *pd;
    void *addr;
    size_t length;
    uint32_t handle;
    uint32_t lkey;
    uint32_t rkey;
    struct ibv_mr *real_mr;
};

typedef struct ibv_mr *(*emu_iova2_fn)(struct ibv_pd *, void *, size_t, uint64_t, unsigned int);

struct ibv_mr *emu_compat_ibv_reg_mr_IBVERBS_1_0(void *pd, void *addr, size_t length, int access);
struct ibv_mr *emu_compat_ibv_reg_mr_IBVERBS_1_0(void *pd, void *addr, size_t length, int access)
{
    struct emu_pd_1_0 *pd10 = pd;
    struct emu_mr_1_0 *mr10 = NULL;
    struct ibv_mr *real = NULL;
    emu_iova2_fn iova2;
    struct emu_rec r;
    int err = 0;

    emu_rec_begin(&r, "reg_mr");
    emu_rec_str(&r, "entry", "ibv_reg_mr@IBVERBS_1.0");
    emu_rec_u64(&r, "addr", (uint64_t)(uintptr_t)addr);
    emu_rec_u64(&r, "length", length);
    emu_rec_u64(&r, "access", (unsigned int)access);
    if (!pd10 || !pd10->real_pd) {
        err = EINVAL;
        goto out;
    }
    *(void **)&iova2 = dlvsym(RTLD_DEFAULT, "ibv_reg_mr_iova2", "IBVERBS_1.8");
    mr10 = calloc(1, sizeof(*mr10));
    if (!iova2 || !mr10) {
        err = iova2 ? ENOMEM : ENOSYS;
        goto out;
    }
    real = iova2(pd10->real_pd, addr, length, (uintptr_t)addr, (unsigned int)access);
    if (!real) {
        err = errno;
        goto out;
    }
    mr10->context = pd10->context;
    mr10->pd = pd10;
    mr10->addr = addr;
    mr10->length = length;
    mr10->handle = real->handle;
    mr10->lkey = real->lkey;
    mr10->rkey = real->rkey;
    mr10->real_mr = real;
out:
    emu_rec_i64(&r, "ret", err);
    emu_rec_end(&r);
    if (err) {
        free(mr10);
        errno = err;
        return NULL;
    }
    return (struct ibv_mr *)mr10;
}
__asm__(".symver emu_compat_ibv_reg_mr_IBVERBS_1_0,ibv_reg_mr@IBVERBS_1.0");
