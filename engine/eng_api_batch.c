/*
 * The public API, part two: batches, submission, task status and waiting.
 * A request is checked here, its task admitted by the limiter (eng_task.c)
 * and started on its segment's transport.
 */
#include "eng.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCH_MAX_REQUESTS (1u << 20)

static struct eng_batch *batch_lookup_locked(struct teshim_engine *eng, teshim_batch_t id)
{
    size_t slot = (size_t)(id & 0xffffffffu);
    if (!slot || slot > eng->capbatches)
        return NULL;
    struct eng_batch *b = eng->batches[slot - 1];
    return b && b->id == id ? b : NULL;
}

int teshim_batch_alloc(struct teshim_engine *eng, size_t max_requests, teshim_batch_t *batch_p)
{
    struct eng_batch *b;
    size_t slot;
    int ret;

    if (!eng || !batch_p || !max_requests || max_requests > BATCH_MAX_REQUESTS) {
        eng_err(ctx_of(eng), "batch_alloc: %s",
                !eng || !batch_p ? "NULL argument" : "max_requests not in 1..1048576");
        return -EINVAL;
    }
    b = calloc(1, sizeof(*b));
    if (!b) {
        eng_err(ctx_of(eng), "batch_alloc: no memory for a batch");
        return -ENOMEM;
    }
    b->tasks = calloc(max_requests, sizeof(*b->tasks));
    if (!b->tasks) {
        eng_err(ctx_of(eng), "batch_alloc: no memory for %zu tasks", max_requests);
        ret = -ENOMEM;
        goto err_free;
    }
    b->max = max_requests;
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->cond, NULL);
    pthread_rwlock_wrlock(&eng->batch_lock);
    for (slot = 0; slot < eng->capbatches && eng->batches[slot]; slot++)
        ;
    if (slot == eng->capbatches) {
        size_t cap = eng->capbatches ? eng->capbatches * 2 : 16;
        struct eng_batch **n = realloc(eng->batches, cap * sizeof(*n));
        if (!n) {
            pthread_rwlock_unlock(&eng->batch_lock);
            eng_err(ctx_of(eng), "batch_alloc: no memory for %zu batches", cap);
            ret = -ENOMEM;
            goto err_cond;
        }
        memset(n + eng->capbatches, 0, (cap - eng->capbatches) * sizeof(*n));
        eng->batches = n;
        eng->capbatches = cap;
    }
    b->id = ((uint64_t)++eng->batch_gen << 32) | (slot + 1);
    eng->batches[slot] = b;
    pthread_rwlock_unlock(&eng->batch_lock);
    *batch_p = b->id;
    return 0;

err_cond:
    pthread_cond_destroy(&b->cond);
    pthread_mutex_destroy(&b->lock);
    free(b->tasks);
err_free:
    free(b);
    return ret;
}

int teshim_batch_free(struct teshim_engine *eng, teshim_batch_t id)
{
    struct eng_batch *b;
    int ret = 0;

    if (!eng)
        return -EINVAL;
    pthread_rwlock_wrlock(&eng->batch_lock);
    b = batch_lookup_locked(eng, id);
    if (!b)
        ret = -EINVAL;
    else if (atomic_load(&b->unfinished) || atomic_load(&b->waiters))
        ret = -EBUSY;
    else
        eng->batches[(id & 0xffffffffu) - 1] = NULL;
    pthread_rwlock_unlock(&eng->batch_lock);
    if (ret) {
        eng_err(ctx_of(eng), "batch_free: %s",
                ret == -EBUSY ? "requests unfinished or a thread waiting on it" : "invalid batch");
        return ret;
    }
    /* a finishing task may still hold b->lock for its broadcast */
    pthread_mutex_lock(&b->lock);
    pthread_mutex_unlock(&b->lock);
    pthread_cond_destroy(&b->cond);
    pthread_mutex_destroy(&b->lock);
    free(b->tasks);
    free(b);
    return 0;
}

/*
 * The path of a segment to what its transport does not reach (a peer's
 * device memory, which process_vm_* cannot reach, nor rdma without peer
 * memory): the first other transport of the list that opens a bare copy
 * of the segment and reaches [addr, +len) on it (the local transport opens
 * a same-host peer but does not reach its device memory either).
 */
/* d's region list: a copy of s's (NULL when out of memory: no list). */
static void seg_copy_regions(struct eng_segment *d, struct eng_segment *s)
{
    struct eng_region_desc *r = NULL;
    uint32_t n = 0;

    pthread_rwlock_rdlock(&s->regions_lock);
    if (s->nregions && (r = malloc(s->nregions * sizeof(*r)))) {
        memcpy(r, s->regions, s->nregions * sizeof(*r));
        n = s->nregions;
    }
    pthread_rwlock_unlock(&s->regions_lock);
    eng_seg_set_regions(d, r, n, 0);
}

static struct eng_segment *seg_dev_path(struct teshim_engine *eng, struct eng_segment *s,
                                        uint64_t addr, uint64_t len)
{
    struct eng_segment *d;

    pthread_mutex_lock(&eng->seg_lock);
    d = s->dev_path;
    if (!d && (d = calloc(1, sizeof(*d)))) {
        d->id = s->id;
        memcpy(d->name, s->name, sizeof(d->name));
        d->sa = s->sa;
        d->salen = s->salen;
        d->hello = s->hello;
        for (int i = 0; i < eng->ntps && !d->tp; i++) {
            struct eng_transport *tp = eng->tps[i];
            if (tp == s->tp)
                continue;
            seg_copy_regions(d, s); /* so the transport sees which ranges are device memory */
            if (tp->ops.seg_open(tp, d))
                continue;
            if (tp->ops.reaches(tp, d, addr, len)) {
                d->tp = tp;
                break;
            }
            tp->ops.seg_close(tp, d);
            eng_seg_set_regions(d, NULL, 0, 0); /* the list its open fetched */
        }
        if (!d->tp) {
            free(d);
            d = NULL;
        } else {
            s->dev_path = d;
            eng_info(ctx_of(eng), "segment %s: the peer's device memory goes over %s", s->name,
                     d->tp->ops.name);
        }
    }
    pthread_mutex_unlock(&eng->seg_lock);
    return d;
}

static int check_request(struct teshim_engine *eng, const struct teshim_request *r,
                         struct eng_segment **seg_p, int *dev_p)
{
    struct eng_segment *s;
    uint64_t a = (uint64_t)(uintptr_t)r->local;

    if (r->opcode != TESHIM_OP_READ && r->opcode != TESHIM_OP_WRITE) {
        eng_err(ctx_of(eng), "submit: opcode %d is neither read nor write", (int)r->opcode);
        return -EINVAL;
    }
    if (!r->length || !r->local || r->remote_offset + r->length < r->remote_offset) {
        eng_err(ctx_of(eng), "submit: %s",
                !r->length  ? "zero length"
                : !r->local ? "NULL local"
                            : "remote range wraps around");
        return -EINVAL;
    }
    s = eng_seg_lookup(eng, r->segment);
    if (!s) {
        eng_err(ctx_of(eng), "submit: segment %lld is not open", (long long)r->segment);
        return -EINVAL;
    }
    int gone = eng_meta_watch_state(s->watch);
    if (gone) {
        eng_err(ctx_of(eng), "submit: segment %lld (%s): its peer %s; reopen the segment",
                (long long)r->segment, s->name,
                gone == -ESTALE ? "restarted (another instance is published under its name)"
                                : "left (its etcd key was deleted or its lease expired)");
        return gone;
    }
    if (!s->tp->ops.reaches(s->tp, s, r->remote_offset, r->length)) {
        s = seg_dev_path(eng, s, r->remote_offset, r->length);
        if (!s) {
            eng_err(ctx_of(eng), "submit: no path to the device memory of segment %lld",
                    (long long)r->segment);
            return -ENOMEM;
        }
    }
    int dev;
    if (eng_region_device(eng, a, r->length, &dev)) {
        eng_err(ctx_of(eng), "submit: local [%p, +%llu) is not inside one registration", r->local,
                (unsigned long long)r->length);
        return -EFAULT;
    }
    *seg_p = s;
    *dev_p = dev;
    return 0;
}

int teshim_submit(struct teshim_engine *eng, teshim_batch_t id, const struct teshim_request *reqs,
                  size_t n)
{
    struct eng_batch *b;
    struct eng_segment *segs_stack[64], **segs = segs_stack;
    int devs_stack[64], *devs = devs_stack;
    size_t first;
    int ret = 0;

    if (!eng || !reqs || !n) {
        eng_err(ctx_of(eng), "submit: %s", !n ? "no requests" : "NULL argument");
        return -EINVAL;
    }
    if (n > 64 && (!(segs = malloc(n * sizeof(*segs))) || !(devs = malloc(n * sizeof(*devs))))) {
        eng_err(ctx_of(eng), "submit: no memory to check %zu requests", n);
        free(segs);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n && !ret; i++)
        ret = check_request(eng, &reqs[i], &segs[i], &devs[i]);
    if (ret)
        goto out;

    pthread_rwlock_rdlock(&eng->batch_lock);
    b = batch_lookup_locked(eng, id);
    if (!b) {
        pthread_rwlock_unlock(&eng->batch_lock);
        eng_err(ctx_of(eng), "submit: invalid batch");
        ret = -EINVAL;
        goto out;
    }
    pthread_mutex_lock(&b->lock);
    if (b->n + n > b->max) {
        pthread_mutex_unlock(&b->lock);
        pthread_rwlock_unlock(&eng->batch_lock);
        eng_err(ctx_of(eng), "submit: batch holds %zu of %zu requests, %zu more do not fit", b->n,
                b->max, n);
        ret = -ENOSPC;
        goto out;
    }
    first = b->n;
    b->n += n;
    atomic_fetch_add(&b->unfinished, n);
    pthread_mutex_unlock(&b->lock);
    pthread_rwlock_unlock(&eng->batch_lock);

    uint64_t now = eng_now_ns();
    for (size_t i = 0; i < n; i++) {
        struct eng_task *t = &b->tasks[first + i];
        t->batch = b;
        t->seg = segs[i];
        t->eng = &eng->ctx;
        t->tp = segs[i]->tp;
        t->done = eng_task_finish;
        t->op = reqs[i].opcode;
        t->local = reqs[i].local;
        t->raddr = reqs[i].remote_offset;
        t->len = reqs[i].length;
        t->t_submit = now;
        t->cuda_dev = devs[i];
        t->dev_ptr = NULL;
        t->stage = NULL;
        t->next = NULL;
        t->seg_id = reqs[i].segment;
        atomic_store(&t->tp_priv, NULL);
        atomic_store(&t->state, TESHIM_TASK_WAITING);
        /* one for the task, one until this call has queued it (the task
         * may finish before the transport's submit_end touched the peer) */
        atomic_fetch_add(&segs[i]->busy, 2);
    }
    atomic_fetch_add(&eng->ctx.st.submitted, n);

    /* admit what the limiter allows, queue the rest in order */
    eng_limiter_submit(eng, &b->tasks[first], n);
    for (size_t i = 0; i < n; i++)
        atomic_fetch_sub(&segs[i]->busy, 1);
    ret = (int)first;
out:
    if (segs != segs_stack)
        free(segs);
    if (devs != devs_stack)
        free(devs);
    return ret;
}

int teshim_task_status(struct teshim_engine *eng, teshim_batch_t id, size_t task_id,
                       struct teshim_task_status *st)
{
    struct eng_batch *b;
    int ret = 0;

    if (!eng || !st) {
        eng_err(ctx_of(eng), "task_status: NULL argument");
        return -EINVAL;
    }
    pthread_rwlock_rdlock(&eng->batch_lock);
    b = batch_lookup_locked(eng, id);
    if (!b) {
        ret = -EINVAL;
    } else {
        pthread_mutex_lock(&b->lock);
        size_t n = b->n;
        pthread_mutex_unlock(&b->lock);
        if (task_id >= n) {
            ret = -ENOENT;
        } else {
            struct eng_task *t = &b->tasks[task_id];
            st->state = (enum teshim_task_state)atomic_load(&t->state);
            st->transferred = atomic_load(&t->transferred);
            st->error = st->state >= TESHIM_TASK_FAILED ? atomic_load(&t->error) : 0;
            st->latency_ns = st->state >= TESHIM_TASK_COMPLETED ? t->t_done - t->t_submit : 0;
        }
    }
    pthread_rwlock_unlock(&eng->batch_lock);
    if (ret)
        eng_err(ctx_of(eng), "task_status: %s", ret == -ENOENT ? "no such task" : "invalid batch");
    return ret;
}

/*
 * The waiter of a batch down to one unfinished task helps that task along
 * itself (ops.progress: tcp reads the answer of a small request on the
 * waiter's thread) instead of sleeping until another thread finished it.
 * The task's segment is held open meanwhile (its busy count, taken under
 * seg_lock while it is still in the table). Returns when the task finished,
 * the deadline passed or the transport cannot help; the caller then
 * sleeps as before.
 */
static void batch_progress(struct teshim_engine *eng, struct eng_batch *b, uint64_t deadline_ns)
{
    struct eng_task *t = NULL;
    struct eng_segment *s = NULL;

    pthread_mutex_lock(&b->lock);
    if (atomic_load(&b->unfinished) == 1) {
        for (size_t i = b->n; i-- > 0 && !t;)
            if (atomic_load(&b->tasks[i].state) == TESHIM_TASK_PENDING)
                t = &b->tasks[i];
    }
    pthread_mutex_unlock(&b->lock);
    if (!t)
        return;
    pthread_mutex_lock(&eng->seg_lock);
    if (t->seg_id >= 0 && (size_t)t->seg_id < eng->nsegs)
        s = eng->segs[t->seg_id];
    /* compared, not dereferenced: t may have finished and its segment gone */
    if (s && (s == t->seg || s->dev_path == t->seg) &&
        atomic_load(&t->state) == TESHIM_TASK_PENDING)
        atomic_fetch_add(&s->busy, 1);
    else
        s = NULL;
    pthread_mutex_unlock(&eng->seg_lock);
    if (!s)
        return;
    t->tp->ops.progress(t->tp, t, deadline_ns);
    atomic_fetch_sub(&s->busy, 1);
}

int teshim_batch_wait(struct teshim_engine *eng, teshim_batch_t id, int timeout_ms)
{
    struct eng_batch *b;
    struct timespec dl;
    int ret = 0;

    if (!eng)
        return -EINVAL;
    pthread_rwlock_rdlock(&eng->batch_lock);
    b = batch_lookup_locked(eng, id);
    if (!b) {
        pthread_rwlock_unlock(&eng->batch_lock);
        eng_err(ctx_of(eng), "batch_wait: invalid batch");
        return -EINVAL;
    }
    /* sleep without the table lock (a writer, batch_alloc/free from another
     * thread, would otherwise wait for this batch); the count keeps b */
    atomic_fetch_add(&b->waiters, 1);
    pthread_rwlock_unlock(&eng->batch_lock);
    clock_gettime(CLOCK_REALTIME, &dl);
    if (timeout_ms >= 0) {
        dl.tv_sec += timeout_ms / 1000;
        dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
    }
    if (timeout_ms)
        batch_progress(eng, b,
                       timeout_ms > 0 ? eng_now_ns() + (uint64_t)timeout_ms * 1000000ull : 0);
    pthread_mutex_lock(&b->lock);
    while (atomic_load(&b->unfinished) && !ret) {
        if (timeout_ms < 0)
            pthread_cond_wait(&b->cond, &b->lock);
        else if (pthread_cond_timedwait(&b->cond, &b->lock, &dl) == ETIMEDOUT)
            ret = -ETIMEDOUT;
    }
    if (!atomic_load(&b->unfinished))
        ret = (int)atomic_load(&b->failed);
    pthread_mutex_unlock(&b->lock);
    atomic_fetch_sub(&b->waiters, 1); /* last touch of b */
    return ret;
}
