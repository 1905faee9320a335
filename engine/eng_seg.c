/* Segments: their memory and the peer's region list a transport checks. */
#include "eng.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct eng_segment *eng_seg_alloc(const char *name)
{
    struct eng_segment *seg = calloc(1, sizeof(*seg));

    if (!seg)
        return NULL;
    snprintf(seg->name, sizeof(seg->name), "%s", name);
    pthread_rwlock_init(&seg->regions_lock, NULL);
    pthread_mutex_init(&seg->refresh_lock, NULL);
    return seg;
}

struct eng_segment *eng_seg_lookup(struct teshim_engine *eng, teshim_segment_t id)
{
    struct eng_segment *s = NULL;

    pthread_mutex_lock(&eng->seg_lock);
    if (id >= 0 && (size_t)id < eng->nsegs)
        s = eng->segs[id];
    pthread_mutex_unlock(&eng->seg_lock);
    return s;
}

/* The device path is a bare segment: no locks of its own; the list its
 * transport may have fetched. */
void eng_seg_free(struct eng_segment *seg)
{
    if (seg->dev_path)
        free(seg->dev_path->regions);
    free(seg->dev_path);
    pthread_mutex_destroy(&seg->refresh_lock);
    pthread_rwlock_destroy(&seg->regions_lock);
    free(seg->regions);
    free(seg->trailer);
    free(seg);
}

int eng_seg_check(struct eng_segment *seg, uint64_t a, uint64_t len, uint64_t gen)
{
    int ret = -EFAULT;

    pthread_rwlock_rdlock(&seg->regions_lock);
    if (gen != seg->regions_gen)
        ret = -ESTALE;
    for (uint32_t i = 0; i < seg->nregions && ret == -EFAULT; i++) {
        const struct eng_region_desc *d = &seg->regions[i];
        /* device memory is not reachable with process_vm_* */
        if (!(d->flags & ENG_REGION_DEVICE) && a >= d->addr && a + len >= a &&
            a + len <= d->addr + d->len)
            ret = 0;
    }
    pthread_rwlock_unlock(&seg->regions_lock);
    return ret;
}

bool eng_seg_in_device(struct eng_segment *seg, uint64_t a, uint64_t len)
{
    bool in = false;

    pthread_rwlock_rdlock(&seg->regions_lock);
    for (uint32_t i = 0; i < seg->nregions && !in; i++) {
        const struct eng_region_desc *d = &seg->regions[i];
        in = (d->flags & ENG_REGION_DEVICE) && a >= d->addr && a + len >= a &&
             a + len <= d->addr + d->len;
    }
    pthread_rwlock_unlock(&seg->regions_lock);
    return in;
}

int eng_seg_same_instance(struct eng_ctx *eng, const char *name, const uint8_t opened_id[16],
                          uint32_t opened_pid, const struct eng_hello *h)
{
    if (!memcmp(h->instance_id, opened_id, sizeof(h->instance_id)))
        return 0;
    eng_err(eng,
            "segment %s: another engine instance answers at the peer's address (it "
            "restarted, pid %u, was %u); its requests fail with ESTALE: close and "
            "reopen the segment",
            name, h->pid, opened_pid);
    return -ESTALE;
}

void eng_seg_set_regions(struct eng_segment *seg, struct eng_region_desc *regions, uint32_t n,
                         uint64_t gen)
{
    pthread_rwlock_wrlock(&seg->regions_lock);
    free(seg->regions);
    seg->regions = regions;
    seg->nregions = n;
    seg->regions_gen = gen;
    pthread_rwlock_unlock(&seg->regions_lock);
}
