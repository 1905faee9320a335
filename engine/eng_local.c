/*
 * Same-host transport: the initiator copies straight between its
 * registered memory and the peer's with process_vm_readv/writev. The peer
 * runs no code for it; bounds are checked here against the regions the
 * peer announced at the handshake. Requests are cut into chunks
 * (engine.tcp.slice_bytes) copied by the submitting thread and
 * io_threads - 1 helper threads together. Used only when the handshake shows the
 * same boot id and a probe read of the peer's memory returns the value it
 * announced (same host, same pid namespace, ptrace permitted).
 */
#include "eng.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#define LOCAL_MAX_HELPERS 63

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

static int local_seg_open(struct eng_transport *tp, struct eng_segment *seg)
{
    struct teshim_engine *eng = tp->eng;
    uint64_t v = 0;
    struct iovec l = {&v, sizeof(v)};
    struct iovec r = {(void *)(uintptr_t)seg->hello.probe_addr, sizeof(v)};

    if (memcmp(seg->hello.boot_id, eng->boot_id, 16))
        return -EOPNOTSUPP;
    if (!seg->hello.probe_addr) {
        eng_info(eng, "segment %s: peer does not serve same-host access", seg->name);
        return -EPERM;
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
    local_start_helpers((struct local_tp *)tp);
    return 0;
}

static bool local_in_regions(const struct eng_segment *seg, uint64_t a, uint64_t len)
{
    for (uint32_t i = 0; i < seg->nregions; i++)
        if (a >= seg->regions[i].addr && a + len <= seg->regions[i].addr + seg->regions[i].len)
            return true;
    return false;
}

/* One chunk of a request; a request of several chunks is copied by the
 * submitting thread and the helper threads together. */
struct local_job {
    struct local_job *next;
    struct eng_task *t;
    uint64_t off, len;
};

static void local_copy(struct eng_transport *tp, struct local_job *j)
{
    struct eng_task *t = j->t;
    struct eng_segment *seg = t->seg;
    uint64_t done = 0;
    int err = 0;

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
    struct eng_segment *seg = t->seg;
    uint64_t chunk = tp->eng->p.slice_bytes;
    unsigned n = (unsigned)((t->len + chunk - 1) / chunk);
    struct local_job *first = NULL, *last = NULL;

    if (!local_in_regions(seg, t->raddr, t->len)) {
        eng_err(tp->eng, "segment %s: [0x%llx, +%llu) is outside the peer's regions", seg->name,
                (unsigned long long)t->raddr, (unsigned long long)t->len);
        eng_task_set_slices(t, 1);
        eng_task_slice_done(t, 0, -EFAULT);
        return;
    }
    eng_task_set_slices(t, n);
    for (unsigned i = 0; i < n; i++) {
        struct local_job *j = malloc(sizeof(*j));
        if (!j) {
            eng_err(tp->eng, "segment %s: no memory for chunk %u of %u", seg->name, i, n);
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
    if (first) {
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

static const struct eng_transport_ops local_ops = {
    .size = sizeof(struct eng_transport_ops),
    .name = "local",
    .seg_open = local_seg_open,
    .start = local_start,
    .destroy = local_destroy,
    .submit_begin = local_submit_begin,
    .submit_end = local_submit_end,
};

int eng_local_create(struct teshim_engine *eng, struct eng_transport **tp_p)
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
