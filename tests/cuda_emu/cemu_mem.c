/*
 * Emulated device memory and host memory tracking.
 *
 * Device memory: one sparse memfd of CEMU_DEVICE_BYTES (default 8 GiB,
 * pages are only allocated when written) mapped PROT_NONE for the
 * application and read-write for the emulator. Freed blocks are punched out
 * of the file so their memory returns to the system.
 *
 * Host ranges: allocations by cudaMallocHost/cudaHostAlloc, registrations by
 * cudaHostRegister and managed allocations, kept in one sorted array.
 *
 * Registration pins pages, as the driver does: the registered pages move
 * onto a memfd that is mapped a second time (the alias), and the workers
 * copy through the alias. While the application keeps its mapping, both
 * views are the same pages. Once it unmaps or replaces them (munmap + mmap
 * at the same address, free + malloc, madvise(MADV_DONTNEED), brk shrink),
 * copies of the still-registered range read and write the OLD pages, as DMA
 * into pinned pages does on a GPU: the hazard a registration cache must
 * invalidate before, and which copying by address alone could never show.
 */
#include "cemu.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#define CEMU_ALIGN 256u

struct cemu_block {
    size_t off, len;
};

enum cemu_range_kind { CEMU_R_ALLOC, CEMU_R_REGISTERED, CEMU_R_MANAGED };

struct cemu_range {
    char *base;
    size_t len;
    enum cemu_range_kind kind;
    /* Registered ranges: the pinned pages [pbase, pbase + plen) as the
     * workers reach them (NULL: copies go through the application's view). */
    char *alias;
    char *pbase;
    size_t plen;
};

static pthread_mutex_t mem_lock = PTHREAD_MUTEX_INITIALIZER;
static char *dev_app; /* PROT_NONE view handed to the application */
static char *dev_rw;  /* read-write view used by the workers */
static size_t dev_size;
static int dev_fd = -1;
static struct cemu_block *blocks; /* sorted by offset */
static size_t nblocks, cap_blocks;
static struct cemu_range *ranges; /* sorted by base */
static size_t nranges, cap_ranges;
static int fail_host_alloc; /* <0: all; >0: that many more */
static uint64_t pinned_bytes;

int cemu_mem_init(void)
{
    const char *env = getenv("CEMU_DEVICE_BYTES");
    size_t size = env ? strtoull(env, NULL, 0) : 8ull << 30;
    const char *fail = getenv("CEMU_FAIL_HOST_ALLOC");

    if (fail)
        fail_host_alloc = strcmp(fail, "all") == 0 ? -1 : atoi(fail);
    dev_fd = memfd_create("cemu-device", MFD_CLOEXEC);
    if (dev_fd < 0)
        return -errno;
    if (ftruncate(dev_fd, (off_t)size) != 0)
        goto err_close;
    dev_app = mmap(NULL, size, PROT_NONE, MAP_SHARED | MAP_NORESERVE, dev_fd, 0);
    if (dev_app == MAP_FAILED)
        goto err_close;
    dev_rw = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, dev_fd, 0);
    if (dev_rw == MAP_FAILED)
        goto err_unmap_app;
    dev_size = size;
    return 0;

err_unmap_app:
    munmap(dev_app, size);
err_close:
    close(dev_fd);
    dev_fd = -1;
    return -errno;
}

static bool grow(void **arr, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap)
        return true;
    size_t nc = *cap ? *cap * 2 : 64;
    void *p = realloc(*arr, nc * elem);
    if (!p)
        return false;
    *arr = p;
    *cap = nc;
    return true;
}

/* Index of the device block containing offset off, or -1. */
static long block_at(size_t off)
{
    size_t lo = 0, hi = nblocks;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (blocks[mid].off + blocks[mid].len <= off)
            lo = mid + 1;
        else if (blocks[mid].off > off)
            hi = mid;
        else
            return (long)mid;
    }
    return -1;
}

/* Index of the host range containing p, or -1. */
static long range_at(const char *p)
{
    size_t lo = 0, hi = nranges;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (ranges[mid].base + ranges[mid].len <= p)
            lo = mid + 1;
        else if (ranges[mid].base > p)
            hi = mid;
        else
            return (long)mid;
    }
    return -1;
}

void cemu_where(const void *ptr, struct cemu_where *w)
{
    const char *p = ptr;

    memset(w, 0, sizeof(*w));
    w->valid = true;
    pthread_mutex_lock(&mem_lock);
    if (dev_app && p >= dev_app && p < dev_app + dev_size) {
        size_t off = (size_t)(p - dev_app);
        long i = block_at(off);
        w->kind = CEMU_MEM_DEVICE;
        if (i < 0) {
            w->valid = false;
        } else {
            w->rw = dev_rw + off;
            w->avail = blocks[i].off + blocks[i].len - off;
            w->base = dev_app + blocks[i].off;
        }
    } else {
        long i = range_at(p);
        w->rw = (char *)p;
        w->kind = CEMU_MEM_PAGEABLE;
        if (i >= 0) {
            w->kind = ranges[i].kind == CEMU_R_MANAGED ? CEMU_MEM_MANAGED : CEMU_MEM_PINNED;
            w->base = ranges[i].base;
            w->avail = (size_t)(ranges[i].base + ranges[i].len - p);
            if (ranges[i].alias)
                w->rw = ranges[i].alias + (p - ranges[i].pbase);
        }
    }
    pthread_mutex_unlock(&mem_lock);
}

/*
 * The peer-memory client (what nvidia-peermem is to the kernel's RDMA
 * core), for the emulated libibverbs when VERBS_EMU_PEER_MEMORY=1: 0 and
 * *view, the read-write view of the device bytes (a shared mapping of the
 * device memfd, reachable with process_vm_readv/writev), when [addr,
 * addr+len) lies inside one device allocation; -ENOENT outside device
 * memory, -EFAULT for a range that leaves its allocation.
 */
CEMU_EXPORT int cemu_peer_mem_get(const void *addr, size_t len, void **view);
CEMU_EXPORT int cemu_peer_mem_get(const void *addr, size_t len, void **view)
{
    const char *p = addr;
    int rc = -ENOENT;

    pthread_mutex_lock(&mem_lock);
    if (dev_app && p >= dev_app && p < dev_app + dev_size) {
        size_t off = (size_t)(p - dev_app);
        long i = block_at(off);
        rc = -EFAULT;
        if (i >= 0 && len <= blocks[i].off + blocks[i].len - off) {
            *view = dev_rw + off;
            rc = 0;
        }
    }
    pthread_mutex_unlock(&mem_lock);
    return rc;
}

void cemu_where_span(const void *ptr, size_t span, struct cemu_where *w)
{
    cemu_where(ptr, w);
    if (w->kind == CEMU_MEM_PINNED && w->avail < span)
        w->rw = (char *)ptr;
}

cudaError_t cemu_dev_alloc(void **p, size_t size)
{
    size_t len = (size + CEMU_ALIGN - 1) & ~(size_t)(CEMU_ALIGN - 1);
    size_t off = 0, i;
    cudaError_t rc = cudaErrorMemoryAllocation;

    if (!p)
        return cudaErrorInvalidValue;
    if (size == 0) {
        *p = NULL;
        return cudaSuccess;
    }
    pthread_mutex_lock(&mem_lock);
    /* First fit; offset 0 is skipped so no device pointer is page 0 of the view. */
    off = CEMU_ALIGN;
    for (i = 0; i < nblocks; i++) {
        if (blocks[i].off >= off + len)
            break;
        off = blocks[i].off + blocks[i].len;
    }
    if (off + len > dev_size || !grow((void **)&blocks, &cap_blocks, nblocks, sizeof(*blocks)))
        goto out;
    memmove(&blocks[i + 1], &blocks[i], (nblocks - i) * sizeof(*blocks));
    blocks[i] = (struct cemu_block){off, len};
    nblocks++;
    *p = dev_app + off;
    rc = cudaSuccess;
out:
    pthread_mutex_unlock(&mem_lock);
    return rc;
}

cudaError_t cemu_dev_free(void *ptr)
{
    const char *p = ptr;
    cudaError_t rc = cudaErrorInvalidValue;

    if (!p)
        return cudaSuccess;
    pthread_mutex_lock(&mem_lock);
    if (dev_app && p >= dev_app && p < dev_app + dev_size) {
        long i = block_at((size_t)(p - dev_app));
        if (i >= 0 && dev_app + blocks[i].off == p) {
            fallocate(dev_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)blocks[i].off,
                      (off_t)blocks[i].len);
            memmove(&blocks[i], &blocks[i + 1], (nblocks - (size_t)i - 1) * sizeof(*blocks));
            nblocks--;
            rc = cudaSuccess;
        }
    }
    pthread_mutex_unlock(&mem_lock);
    return rc;
}

/* Insert [base, base+len) unless it overlaps a range; caller holds mem_lock.
 * On success *at is its index. */
static cudaError_t range_insert(char *base, size_t len, enum cemu_range_kind kind, size_t *at)
{
    size_t i = 0;

    while (i < nranges && ranges[i].base < base)
        i++;
    if ((i > 0 && ranges[i - 1].base + ranges[i - 1].len > base) ||
        (i < nranges && ranges[i].base < base + len))
        return cudaErrorHostMemoryAlreadyRegistered;
    if (!grow((void **)&ranges, &cap_ranges, nranges, sizeof(*ranges)))
        return cudaErrorMemoryAllocation;
    memmove(&ranges[i + 1], &ranges[i], (nranges - i) * sizeof(*ranges));
    ranges[i] = (struct cemu_range){.base = base, .len = len, .kind = kind};
    nranges++;
    if (at)
        *at = i;
    if (kind != CEMU_R_MANAGED)
        pinned_bytes += len;
    return cudaSuccess;
}

/* Remove the range starting exactly at base of the given kinds; caller holds mem_lock. */
static bool range_remove(const char *base, bool registered)
{
    long i = range_at(base);

    if (i < 0 || ranges[i].base != base)
        return false;
    if (registered != (ranges[i].kind == CEMU_R_REGISTERED))
        return false;
    if (ranges[i].kind != CEMU_R_MANAGED)
        pinned_bytes -= ranges[i].len;
    memmove(&ranges[i], &ranges[i + 1], (nranges - (size_t)i - 1) * sizeof(*ranges));
    nranges--;
    return true;
}

static size_t page_round(size_t n)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    return (n + pg - 1) & ~(pg - 1);
}

static cudaError_t host_map(void **p, size_t size, enum cemu_range_kind kind)
{
    cudaError_t rc;
    void *m;

    if (!p)
        return cudaErrorInvalidValue;
    if (size == 0) {
        *p = NULL;
        return cudaSuccess;
    }
    pthread_mutex_lock(&mem_lock);
    if (kind == CEMU_R_ALLOC && fail_host_alloc != 0) {
        if (fail_host_alloc > 0)
            fail_host_alloc--;
        rc = cudaErrorMemoryAllocation;
        goto out;
    }
    m = mmap(NULL, page_round(size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        rc = cudaErrorMemoryAllocation;
        goto out;
    }
    rc = range_insert(m, page_round(size), kind, NULL);
    if (rc != cudaSuccess) {
        munmap(m, page_round(size));
        goto out;
    }
    *p = m;
out:
    pthread_mutex_unlock(&mem_lock);
    return rc;
}

cudaError_t cemu_pinned_alloc(void **p, size_t size, unsigned flags)
{
    (void)flags;
    return host_map(p, size, CEMU_R_ALLOC);
}

cudaError_t cemu_managed_alloc(void **p, size_t size)
{
    return host_map(p, size, CEMU_R_MANAGED);
}

static cudaError_t host_unmap(void *p, bool managed)
{
    cudaError_t rc = cudaErrorInvalidValue;
    long i;

    pthread_mutex_lock(&mem_lock);
    i = range_at(p);
    if (i >= 0 && ranges[i].base == p &&
        ranges[i].kind == (managed ? CEMU_R_MANAGED : CEMU_R_ALLOC)) {
        size_t len = ranges[i].len;
        range_remove(p, false);
        munmap(p, len);
        rc = cudaSuccess;
    }
    pthread_mutex_unlock(&mem_lock);
    return rc;
}

cudaError_t cemu_pinned_free(void *p)
{
    struct cemu_where w;

    if (!p)
        return cudaSuccess;
    cemu_where(p, &w);
    if (w.kind == CEMU_MEM_MANAGED)
        return host_unmap(p, true);
    return host_unmap(p, false);
}

/*
 * Aliases of unregistered ranges that copies issued before the unregister
 * may still use: unmapped once no stream has work left (checked without
 * waiting, at the next register or unregister), so that unregistering
 * never waits for a stream the application holds.
 */
struct cemu_grave {
    char *alias;
    size_t len;
};
static struct cemu_grave *graves;
static size_t ngraves, cap_graves;

/* Caller holds mem_lock. */
static void graves_reap(void)
{
    if (!ngraves || !cemu_device_idle())
        return;
    for (size_t i = 0; i < ngraves; i++)
        munmap(graves[i].alias, graves[i].len);
    ngraves = 0;
}

/* Copy len bytes from src without faulting on what is not readable:
 * false when some of it is not (unmapped, PROT_NONE). */
static bool read_checked(void *dst, const void *src, size_t len)
{
    struct iovec local = {dst, len}, remote = {(void *)src, len};
    ssize_t n = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);

    if (n == (ssize_t)len)
        return true;
    if (n < 0 && (errno == ENOSYS || errno == EPERM)) {
        /* Not allowed here (seccomp): the page table must do. */
        if (madvise((void *)src, len, MADV_NORMAL) != 0)
            return false;
        memcpy(dst, src, len);
        return true;
    }
    return false;
}

/*
 * How [pbase, pbase + plen) is mapped, from /proc/self/maps: 'p' when every
 * page is in a private mapping, 's' when one shared mapping (a file, SysV
 * shm, memfd) holds it all (*path names its /proc/self/map_files entry and
 * *off the range's offset in that object), '?' otherwise or unreadable.
 */
static char mapping_of(const char *pbase, size_t plen, char *path, size_t pathlen, off_t *off)
{
    FILE *f = fopen("/proc/self/maps", "re");
    char line[512], perms[8];
    unsigned long lo, hi;
    unsigned long long o;
    char kind = 0;

    if (!f)
        return '?';
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "%lx-%lx %7s %llx", &lo, &hi, perms, &o) != 4)
            continue;
        if ((char *)hi <= pbase || (char *)lo >= pbase + plen)
            continue;
        if (perms[3] == 'p' && (kind == 0 || kind == 'p')) {
            kind = 'p';
        } else if (perms[3] == 's' && kind == 0 && (char *)lo <= pbase &&
                   (char *)hi >= pbase + plen) {
            kind = 's';
            snprintf(path, pathlen, "/proc/self/map_files/%lx-%lx", lo, hi);
            *off = (off_t)(o + (unsigned long long)(pbase - (char *)lo));
        } else {
            kind = '?';
        }
    }
    fclose(f);
    return kind ? kind : '?';
}

/*
 * Pin [pbase, pbase + plen) and give the workers their own view of the
 * pinned pages (*alias), so that the pages stay with the registration when
 * the application lets go of them:
 *   - private memory (anonymous, heap, brk, stacks, private file pages):
 *     the pages move onto a memfd mapped at the same address, and a second
 *     mapping of it is the alias;
 *   - one shared mapping (SysV shm, a shared file): the alias maps the same
 *     object again; the application's mapping stays as it is (shmdt works).
 * Pages the calling thread is running on, or a mix of mappings, stay where
 * they are: *alias stays NULL and copies go through the application's view.
 * So do private pages while a stream still has work (cemu_pinned_register
 * waits up to a second for the streams to drain first): moving pages
 * copies them first, and a write another thread makes in between is lost
 * (the stream workers free staging buffers whose heap headers may share a
 * page with the range: that showed as heap corruption, about 1 run in 50).
 * The real driver pins in place; only the emulation's move has this
 * window, which the application's own threads could still hit.
 */
static cudaError_t pin_pages(char *pbase, size_t plen, char **alias)
{
    char here, path[64];
    off_t off = 0;
    int fd;
    char *a;

    *alias = NULL;
    if (&here >= pbase && &here < pbase + plen)
        return cudaSuccess;
    switch (mapping_of(pbase, plen, path, sizeof(path), &off)) {
    case 'p':
        if (!cemu_device_idle())
            return cudaSuccess;
        break;
    case 's':
        fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0)
            return cudaSuccess; /* map_files needs privileges: no alias */
        a = mmap(NULL, plen, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off);
        close(fd);
        if (a != MAP_FAILED)
            *alias = a;
        return cudaSuccess;
    default:
        if (madvise(pbase, plen, MADV_NORMAL) != 0)
            return cudaErrorInvalidValue; /* not all mapped */
        return cudaSuccess;
    }
    fd = memfd_create("cemu-pinned", MFD_CLOEXEC);
    if (fd < 0)
        return cudaErrorMemoryAllocation;
    if (ftruncate(fd, (off_t)plen) != 0)
        goto err_close;
    a = mmap(NULL, plen, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (a == MAP_FAILED)
        goto err_close;
    if (!read_checked(a, pbase, plen)) {
        munmap(a, plen);
        close(fd);
        return cudaErrorInvalidValue;
    }
    if (mmap(pbase, plen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED)
        goto err_unmap;
    close(fd);
    *alias = a;
    return cudaSuccess;

err_unmap:
    munmap(a, plen);
err_close:
    close(fd);
    return cudaErrorMemoryAllocation;
}

cudaError_t cemu_pinned_register(void *p, size_t size, unsigned flags)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE), at;
    char *pbase = (char *)((uintptr_t)p & ~(uintptr_t)(pg - 1));
    size_t plen;
    cudaError_t rc;

    (void)flags;
    if (!p || size == 0 || (char *)p + size < (char *)p)
        return cudaErrorInvalidValue;
    plen = page_round((size_t)((char *)p + size - pbase));
    /* Work in flight (a pageable copy returns before its staged data left)
     * usually drains at once; a stream the application holds does not, and
     * its range is then pinned without a second mapping (pin_pages). */
    cemu_device_wait_idle(1000);
    pthread_mutex_lock(&mem_lock);
    if (dev_app && (char *)p < dev_app + dev_size && (char *)p + size > dev_app) {
        rc = cudaErrorInvalidValue;
        goto out;
    }
    /* The driver pins whole pages: two registrations cannot share one. */
    for (size_t i = 0; i < nranges; i++)
        if (ranges[i].kind == CEMU_R_REGISTERED && ranges[i].pbase < pbase + plen &&
            ranges[i].pbase + ranges[i].plen > pbase) {
            rc = cudaErrorHostMemoryAlreadyRegistered;
            goto out;
        }
    graves_reap();
    rc = range_insert(p, size, CEMU_R_REGISTERED, &at);
    if (rc != cudaSuccess)
        goto out;
    rc = pin_pages(pbase, plen, &ranges[at].alias);
    if (rc != cudaSuccess) {
        range_remove(p, true);
        goto out;
    }
    ranges[at].pbase = pbase;
    ranges[at].plen = plen;
out:
    pthread_mutex_unlock(&mem_lock);
    return rc;
}

cudaError_t cemu_pinned_unregister(void *p)
{
    long i;
    cudaError_t rc = cudaErrorHostMemoryNotRegistered;

    pthread_mutex_lock(&mem_lock);
    i = range_at(p);
    if (i >= 0 && ranges[i].base == p && ranges[i].kind == CEMU_R_REGISTERED) {
        /* The application's mapping, if it still has it, keeps the pages. */
        if (ranges[i].alias) {
            if (!grow((void **)&graves, &cap_graves, ngraves, sizeof(*graves))) {
                rc = cudaErrorMemoryAllocation;
                goto out;
            }
            graves[ngraves++] = (struct cemu_grave){ranges[i].alias, ranges[i].plen};
        }
        range_remove(p, true);
        rc = cudaSuccess;
    }
    graves_reap();
out:
    pthread_mutex_unlock(&mem_lock);
    return rc;
}

CEMU_EXPORT void cemu_test_fail_host_alloc(int n)
{
    pthread_mutex_lock(&mem_lock);
    fail_host_alloc = n;
    pthread_mutex_unlock(&mem_lock);
}

CEMU_EXPORT uint64_t cemu_test_pinned_bytes(void)
{
    uint64_t n;

    pthread_mutex_lock(&mem_lock);
    n = pinned_bytes;
    pthread_mutex_unlock(&mem_lock);
    return n;
}
