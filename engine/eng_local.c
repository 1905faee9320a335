/*
 * Same-host transport: the initiator copies straight between its
 * registered memory and the peer's with process_vm_readv/writev. The peer
 * runs no code for it; bounds are checked here against the peer's region
 * list, fetched through the embedded handshake. The list is refreshed (a
 * new handshake) when a request falls outside it, so regions the peer
 * registered after the open become usable, and when the peer's
 * unregistration generation (a word next to its probe, read before every
 * request) moved, so a region it unregistered stops being accessible.
 * Refreshes of a segment run one at a time and at most one per
 * LOCAL_REFRESH_NS; a request that finds a refresh started after it missed
 * uses that one's result. Requests are cut into chunks
 * (engine.tcp.slice_bytes) copied by the submitting thread and
 * io_threads - 1 helper threads together. Used only when the handshake shows the
 * same boot id and a probe read of the peer's memory returns the value it
 * announced (same host, same pid namespace, ptrace permitted), and only in
 * engine.local.mode = initiator on both sides: in target mode the tcp
 * transport carries LOCAL_* frames and the target copies (eng_tcp_local.c).
 */
#include "eng_tp.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define LOCAL_MAX_HELPERS 63
#define LOCAL_REFRESH_NS (20 * 1000000ull)
#define LOCAL_REFRESH_TRIES 8

_Static_assert(offsetof(struct eng_peer_words, unreg_gen) == 8 && sizeof(atomic_uint_fast64_t) == 8,
               "same-host peers read the generation at probe_addr + 8");

struct local_job;

struct local_tp {
    struct eng_transport base;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct local_job *head, *tail; /* chunks to copy */
    bool stop;
    int nth;
    pthread_t th[LOCAL_MAX_HELPERS];
};

static void local_start_helpers(struct local_tp *lt);
static int local_refresh(struct eng_transport *tp, struct eng_segment *seg, uint64_t since);

/* The peer's unregistration generation. */
static int local_peer_gen(struct eng_transport *tp, struct eng_segment *seg, uint64_t *gen)
{
    struct iovec l = {gen, sizeof(*gen)};
    struct iovec r = {(void *)(uintptr_t)(seg->hello.probe_addr + 8), sizeof(*gen)};

    if (process_vm_readv((pid_t)seg->hello.pid, &l, 1, &r, 1, 0) != (ssize_t)sizeof(*gen)) {
        int err = errno ? errno : EIO;
        if (err == ESRCH) {
            /* the process the segment was opened on is gone for good */
            eng_err(tp->eng,
                    "segment %s: the peer's process %u is gone (exited or restarted); "
                    "its requests fail with ESTALE: close and reopen the segment",
                    seg->name, seg->hello.pid);
            return -ESRCH;
        }
        eng_err(tp->eng, "segment %s: reading the peer's registration state (pid %u): %s",
                seg->name, seg->hello.pid, strerror(err));
        return -err;
    }
    return 0;
}

static int local_seg_open(struct eng_transport *tp, struct eng_segment *seg)
{
    struct eng_ctx *eng = tp->eng;
    uint64_t v = 0;
    struct iovec l = {&v, sizeof(v)};
    struct iovec r = {(void *)(uintptr_t)seg->hello.probe_addr, sizeof(v)};

    if (memcmp(seg->hello.boot_id, eng->boot_id, 16))
        return -EOPNOTSUPP;
    if (!seg->hello.probe_addr) {
        eng_info(eng, "segment %s: peer does not serve same-host access", seg->name);
        return -EPERM;
    }
    if (eng->p.local_mode == ENG_LOCAL_TARGET || (seg->hello.flags & ENG_HELLO_LOCAL_TARGET)) {
        /* the target checks and copies: LOCAL_* frames on tcp (eng_tcp_local.c) */
        eng_info(eng, "segment %s: same host, engine.local.mode = target (%s): the target copies",
                 seg->name, eng->p.local_mode == ENG_LOCAL_TARGET ? "here" : "the peer's setting");
        return -EOPNOTSUPP;
    }
    if (process_vm_readv((pid_t)seg->hello.pid, &l, 1, &r, 1, 0) != (ssize_t)sizeof(v)) {
        int err = errno;
        eng_info(eng, "segment %s: process_vm_readv of pid %u refused: %s", seg->name,
                 seg->hello.pid, strerror(err));
        return err == EPERM || err == EACCES ? -EPERM : -EOPNOTSUPP;
    }
    if (v != seg->hello.probe_value) {
        eng_info(eng, "segment %s: pid %u is another process here (pid namespace)", seg->name,
                 seg->hello.pid);
        return -EOPNOTSUPP;
    }
    /* the list of the handshake may predate the generation read now:
     * fetch one known to be as new */
    int ret = local_refresh(tp, seg, eng_now_ns());
    if (ret)
        return ret;
    local_start_helpers((struct local_tp *)tp);
    return 0;
}

/*
 * Fetch the peer's region list again, unless a refresh started after
 * since (then its result is as new as the caller needs). At most one
 * handshake per LOCAL_REFRESH_NS and segment: a caller arriving sooner
 * waits for the rest of the interval, so a stream of stray requests
 * cannot turn into a stream of handshakes.
 */
static int local_refresh(struct eng_transport *tp, struct eng_segment *seg, uint64_t since)
{
    struct eng_ctx *eng = tp->eng;
    struct eng_region_desc *regions = NULL;
    struct eng_hello h;
    uint64_t gen, now;
    int ret = 0;

    pthread_mutex_lock(&seg->refresh_lock);
    if (seg->t_refresh > since)
        goto out_unlock;
    now = eng_now_ns();
    if (seg->t_refresh && now - seg->t_refresh < LOCAL_REFRESH_NS) {
        usleep((useconds_t)((LOCAL_REFRESH_NS - (now - seg->t_refresh)) / 1000 + 1));
        now = eng_now_ns();
    }
    seg->t_refresh = now;
    ret = local_peer_gen(tp, seg, &gen);
    if (ret)
        goto out_unlock;
    ret = eng_meta_fetch(eng, seg, &h, &regions);
    if (ret)
        goto out_unlock;
    /* the instance id is random per engine: a new pid, probe or boot means a new one */
    if (eng_seg_same_instance(eng, seg->name, seg->hello.instance_id, seg->hello.pid, &h)) {
        free(regions);
        ret = -ESRCH;
        goto out_unlock;
    }
    eng_dbg(eng, "segment %s: %u regions (generation %llu)", seg->name, h.nregions,
            (unsigned long long)gen);
    eng_seg_set_regions(seg, regions, h.nregions, gen);
out_unlock:
    pthread_mutex_unlock(&seg->refresh_lock);
    return ret;
}

/* One chunk of a request; a request of several chunks is copied by the
 * submitting thread and the helper threads together. A job of length 0
 * resolves a request that missed the cached list: refresh, check again,
 * then queue its chunks (on a copying thread, not the starting one). */
struct local_job {
    struct local_job *next;
    struct eng_task *t;
    uint64_t off, len;
};

static void local_queue(struct local_tp *lt, struct local_job *first, struct local_job *last)
{
    pthread_mutex_lock(&lt->lock);
    if (lt->tail)
        lt->tail->next = first;
    else
        lt->head = first;
    lt->tail = last;
    if (lt->nth)
        pthread_cond_broadcast(&lt->cond);
    pthread_mutex_unlock(&lt->lock);
}

/* Cut a checked request into chunk jobs and queue them. */
static void local_queue_chunks(struct local_tp *lt, struct eng_task *t)
{
    struct eng_transport *tp = &lt->base;
    uint64_t chunk = tp->eng->p.slice_bytes;
    unsigned n = (unsigned)((t->len + chunk - 1) / chunk);
    struct local_job *first = NULL, *last = NULL;

    eng_task_set_slices(t, n);
    for (unsigned i = 0; i < n; i++) {
        struct local_job *j = malloc(sizeof(*j));
        if (!j) {
            eng_err(tp->eng, "segment %s: no memory for chunk %u of %u", t->seg->name, i, n);
            /* the chunks not queued fail; the queued ones still run */
            for (; i < n; i++)
                eng_task_slice_done(t, 0, -ENOMEM);
            break;
        }
        j->next = NULL;
        j->t = t;
        j->off = (uint64_t)i * chunk;
        j->len = t->len - j->off < chunk ? t->len - j->off : chunk;
        if (last)
            last->next = j;
        else
            first = j;
        last = j;
    }
    if (first)
        local_queue(lt, first, last);
}

/* 0: the request is inside the peer's list and the list is current;
 * -EFAULT: outside it; -ESTALE: the peer unregistered since it was
 * fetched; another -errno: the peer cannot be read. */
static int local_check(struct eng_transport *tp, struct eng_task *t)
{
    uint64_t gen;
    int ret = local_peer_gen(tp, t->seg, &gen);
    if (!ret)
        ret = eng_seg_check(t->seg, t->raddr, t->len, gen);
    return ret;
}

/* -ESRCH inside this file: the peer is not the process the segment was
 * opened on (-ESTALE is a stale region list, refreshed); the task fails
 * with -ESTALE, the caller must reopen the segment. */
static void local_fail(struct eng_task *t, int err)
{
    if (err == -ESRCH)
        err = -ESTALE;
    eng_task_set_slices(t, 1);
    eng_task_slice_done(t, 0, err);
}

static void local_resolve(struct eng_transport *tp, struct local_job *j)
{
    struct eng_task *t = j->t;
    uint64_t since = j->off;
    int ret, tries = 0;

    free(j);
    /* the peer may unregister again while we fetch: fetch again, a few
     * times (each LOCAL_REFRESH_NS apart) */
    do {
        ret = local_refresh(tp, t->seg, since);
        if (!ret)
            ret = local_check(tp, t);
        since = eng_now_ns();
    } while (ret == -ESTALE && ++tries < LOCAL_REFRESH_TRIES);
    if (ret == -EFAULT)
        eng_err(tp->eng, "segment %s: [0x%llx, +%llu) is outside the peer's regions", t->seg->name,
                (unsigned long long)t->raddr, (unsigned long long)t->len);
    if (ret == -ESTALE) {
        eng_err(tp->eng, "segment %s: the peer's registrations changed during %d refreshes",
                t->seg->name, tries);
        ret = -EAGAIN;
    }
    if (ret)
        local_fail(t, ret);
    else
        local_queue_chunks((struct local_tp *)tp, t);
}

static void local_copy(struct eng_transport *tp, struct local_job *j)
{
    struct eng_task *t = j->t;
    struct eng_segment *seg = t->seg;
    uint64_t done = 0;
    int err = 0;

    if (!j->len) {
        local_resolve(tp, j);
        return;
    }
    while (done < j->len) {
        struct iovec l = {t->local + j->off + done, j->len - done};
        struct iovec r = {(void *)(uintptr_t)(t->raddr + j->off + done), j->len - done};
        ssize_t n = t->op == TESHIM_OP_READ
                        ? process_vm_readv((pid_t)seg->hello.pid, &l, 1, &r, 1, 0)
                        : process_vm_writev((pid_t)seg->hello.pid, &l, 1, &r, 1, 0);
        if (n <= 0) {
            err = n < 0 ? -errno : -EIO;
            eng_err(tp->eng, "segment %s: process_vm_%sv: %s", seg->name,
                    t->op == TESHIM_OP_READ ? "read" : "write", strerror(-err));
            break;
        }
        done += (uint64_t)n;
    }
    free(j);
    eng_task_slice_done(t, done, err);
}

static struct local_job *local_pop(struct local_tp *lt)
{
    struct local_job *j = lt->head;
    if (j) {
        lt->head = j->next;
        if (!lt->head)
            lt->tail = NULL;
    }
    return j;
}

/* Copy queued chunks on the calling thread until the queue is empty. */
static void local_help(struct local_tp *lt)
{
    for (;;) {
        pthread_mutex_lock(&lt->lock);
        struct local_job *j = local_pop(lt);
        pthread_mutex_unlock(&lt->lock);
        if (!j)
            return;
        local_copy(&lt->base, j);
    }
}

static void *local_helper_main(void *arg)
{
    struct local_tp *lt = arg;

    pthread_mutex_lock(&lt->lock);
    while (!lt->stop) {
        struct local_job *j = local_pop(lt);
        if (!j) {
            pthread_cond_wait(&lt->cond, &lt->lock);
            continue;
        }
        pthread_mutex_unlock(&lt->lock);
        local_copy(&lt->base, j);
        pthread_mutex_lock(&lt->lock);
    }
    pthread_mutex_unlock(&lt->lock);
    return NULL;
}

/* Helper threads start with the first same-host segment. */
static void local_start_helpers(struct local_tp *lt)
{
    int want = lt->base.eng->p.io_threads - 1;

    pthread_mutex_lock(&lt->lock);
    for (; lt->nth < want && lt->nth < LOCAL_MAX_HELPERS; lt->nth++) {
        int err = pthread_create(&lt->th[lt->nth], NULL, local_helper_main, lt);
        if (err) {
            eng_warn(lt->base.eng, "local: helper thread: %s; copying on fewer threads",
                     strerror(err));
            break;
        }
    }
    pthread_mutex_unlock(&lt->lock);
}

static __thread bool local_plugged;

static void local_submit_begin(struct eng_transport *tp)
{
    local_plugged = true;
}

static void local_submit_end(struct eng_transport *tp)
{
    local_plugged = false;
    local_help((struct local_tp *)tp);
}

static void local_start(struct eng_transport *tp, struct eng_task *t)
{
    struct local_tp *lt = (struct local_tp *)tp;
    int ret = local_check(tp, t);

    if (ret && ret != -EFAULT && ret != -ESTALE) {
        local_fail(t, ret);
        return;
    }
    if (!ret) {
        local_queue_chunks(lt, t);
    } else {
        /* the list missed or is stale: resolved by a copying thread */
        struct local_job *j = malloc(sizeof(*j));
        if (!j) {
            eng_err(tp->eng, "segment %s: no memory to resolve a request", t->seg->name);
            local_fail(t, -ENOMEM);
            return;
        }
        *j = (struct local_job){.t = t, .off = eng_now_ns(), .len = 0};
        local_queue(lt, j, j);
    }
    /* the submitting thread copies too; progress does not wait for it to
     * poll: helpers run the queue on their own */
    if (!local_plugged)
        local_help(lt);
}

static void local_destroy(struct eng_transport *tp)
{
    struct local_tp *lt = (struct local_tp *)tp;

    pthread_mutex_lock(&lt->lock);
    lt->stop = true;
    pthread_cond_broadcast(&lt->cond);
    pthread_mutex_unlock(&lt->lock);
    for (int i = 0; i < lt->nth; i++)
        pthread_join(lt->th[i], NULL);
    local_help(lt); /* anything left (no helpers) */
    pthread_cond_destroy(&lt->cond);
    pthread_mutex_destroy(&lt->lock);
    free(lt);
}

/* process_vm_* cannot reach the peer's device memory */
static bool local_reaches(struct eng_transport *tp, struct eng_segment *seg, uint64_t addr,
                          uint64_t len)
{
    return !eng_seg_in_device(seg, addr, len);
}

static const struct eng_transport_ops local_ops = {
    .size = sizeof(struct eng_transport_ops),
    .name = "local",
    .seg_open = local_seg_open,
    .start = local_start,
    .destroy = local_destroy,
    .submit_begin = local_submit_begin,
    .submit_end = local_submit_end,
    .reaches = local_reaches,
};

int eng_local_create(struct eng_ctx *eng, struct eng_transport **tp_p)
{
    struct local_tp *lt = calloc(1, sizeof(*lt));
    if (!lt) {
        eng_err(eng, "engine_create: no memory for the local transport");
        return -ENOMEM;
    }
    eng_transport_init(&lt->base, eng, &local_ops);
    pthread_mutex_init(&lt->lock, NULL);
    pthread_cond_init(&lt->cond, NULL);
    *tp_p = &lt->base;
    return 0;
}
