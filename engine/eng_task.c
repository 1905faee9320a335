/*
 * Tasks and the concurrency limiter: admission in submission order, the
 * queue and its request timeout, the progress of a task's slices and its
 * completion. A task starts through its transport's ops (t->tp), the one
 * way down from here.
 */
#include "eng.h"

#include <errno.h>
#include <stdlib.h>

static void task_complete(struct teshim_engine *eng, struct eng_task *t, int err);

static void task_start(struct eng_task *t)
{
    atomic_store(&t->state, TESHIM_TASK_PENDING);
    t->tp->ops.start(t->tp, t);
}

/* Tasks admitted while this thread is already starting one: started by
 * the outer loop instead of recursing (a local transport finishes inline). */
static __thread struct eng_task *start_pending;
static __thread int start_depth;

static void start_admitted(struct eng_task *t)
{
    if (start_depth) {
        t->next = start_pending;
        start_pending = t;
        return;
    }
    start_depth = 1;
    task_start(t);
    while ((t = start_pending)) {
        start_pending = t->next;
        task_start(t);
    }
    start_depth = 0;
}

/* Unlink the queued tasks whose request timeout has passed, lim_lock held;
 * returns them chained by next. The queue is in submission order (up to
 * the few microseconds between a submit's clock read and its lock), so
 * the scan stops at the first task still in time: a task a little out of
 * order expires on the next call. */
static struct eng_task *limiter_take_expired(struct teshim_engine *eng, uint64_t now)
{
    uint64_t to = (uint64_t)eng->ctx.p.request_timeout_ms * 1000000ull;
    struct eng_task *head = eng->wait_head, *t = head, *last = NULL;
    size_t n = 0;

    while (t && now >= t->t_submit && now - t->t_submit >= to) {
        last = t;
        t = t->next;
        n++;
    }
    if (!n)
        return NULL;
    eng->wait_head = t;
    if (!t)
        eng->wait_tail = NULL;
    last->next = NULL;
    atomic_fetch_sub(&eng->ctx.st.waiting, n);
    return head;
}

/* Fail expired queued tasks (taken by limiter_take_expired), no lock held. */
static void limiter_fail_expired(struct teshim_engine *eng, struct eng_task *t)
{
    while (t) {
        struct eng_task *next = t->next;
        eng_err(&eng->ctx,
                "segment %s: request queued by the limiter (engine.max_inflight %d) for %d ms, "
                "timed out before it started",
                t->seg->name, eng->ctx.p.max_inflight, eng->ctx.p.request_timeout_ms);
        task_complete(eng, t, -ETIMEDOUT);
        t = next;
    }
}

void eng_limiter_expire(struct eng_ctx *ctx, uint64_t now)
{
    struct teshim_engine *eng = eng_of(ctx);
    struct eng_task *t;

    if (!atomic_load(&ctx->st.waiting))
        return;
    pthread_mutex_lock(&eng->lim_lock);
    t = limiter_take_expired(eng, now);
    pthread_mutex_unlock(&eng->lim_lock);
    limiter_fail_expired(eng, t);
}

static void limiter_release(struct teshim_engine *eng)
{
    struct eng_task *t, *expired;

    pthread_mutex_lock(&eng->lim_lock);
    /* a task whose time ran out in the queue is not started */
    expired = limiter_take_expired(eng, eng_now_ns());
    eng->active--;
    t = eng->wait_head;
    if (t) {
        eng->wait_head = t->next;
        if (!eng->wait_head)
            eng->wait_tail = NULL;
        eng->active++;
        atomic_fetch_sub(&eng->ctx.st.waiting, 1);
    } else {
        atomic_fetch_sub(&eng->ctx.st.active, 1);
    }
    pthread_mutex_unlock(&eng->lim_lock);
    limiter_fail_expired(eng, expired);
    if (t)
        start_admitted(t);
}

void eng_limiter_submit(struct teshim_engine *eng, struct eng_task *tasks, size_t n)
{
    struct eng_task *run = NULL, **run_tail = &run;

    eng_limiter_expire(&eng->ctx, tasks[0].t_submit);
    pthread_mutex_lock(&eng->lim_lock);
    for (size_t i = 0; i < n; i++) {
        struct eng_task *t = &tasks[i];
        if (!eng->wait_head && eng->active < eng->ctx.p.max_inflight) {
            eng->active++;
            atomic_fetch_add(&eng->ctx.st.active, 1);
            *run_tail = t;
            run_tail = &t->next;
        } else {
            if (eng->wait_tail)
                eng->wait_tail->next = t;
            else
                eng->wait_head = t;
            eng->wait_tail = t;
            atomic_fetch_add(&eng->ctx.st.waiting, 1);
        }
    }
    pthread_mutex_unlock(&eng->lim_lock);
    for (int i = eng->ntps - 1; i >= 0; i--)
        eng->tps[i]->ops.submit_begin(eng->tps[i]);
    while (run) {
        struct eng_task *t = run;
        run = t->next;
        start_admitted(t);
    }
    for (int i = 0; i < eng->ntps; i++)
        eng->tps[i]->ops.submit_end(eng->tps[i]);
}

struct eng_task *eng_limiter_take_all(struct teshim_engine *eng)
{
    struct eng_task *queued;

    pthread_mutex_lock(&eng->lim_lock);
    queued = eng->wait_head;
    eng->wait_head = eng->wait_tail = NULL;
    pthread_mutex_unlock(&eng->lim_lock);
    return queued;
}

size_t eng_limiter_cancel(struct teshim_engine *eng, struct eng_task *queued)
{
    size_t n = 0;

    while (queued) {
        struct eng_task *t = queued;
        queued = t->next;
        atomic_fetch_sub(&eng->ctx.st.waiting, 1);
        task_complete(eng, t, -ECANCELED);
        n++;
    }
    return n;
}

void eng_task_set_slices(struct eng_task *t, unsigned n)
{
    atomic_store(&t->slices_left, n);
}

void eng_task_slice_done(struct eng_task *t, uint64_t bytes, int err)
{
    if (bytes)
        atomic_fetch_add(&t->transferred, bytes);
    if (err) {
        int zero = 0;
        atomic_compare_exchange_strong(&t->error, &zero, err);
    }
    if (atomic_fetch_sub(&t->slices_left, 1) != 1)
        return;
    t->done(t, atomic_load(&t->error));
}

void eng_task_finish(struct eng_task *t, int err)
{
    struct teshim_engine *eng = eng_of(t->eng);

    task_complete(eng, t, err);
    limiter_release(eng);
}

/* Counters, state and waiters of a finished task; its limiter slot, if it
 * had one, is the caller's. */
static void task_complete(struct teshim_engine *eng, struct eng_task *t, int err)
{
    struct eng_batch *b = t->batch;

    if (err) {
        int zero = 0;
        atomic_compare_exchange_strong(&t->error, &zero, err);
        err = atomic_load(&t->error);
    }
    t->t_done = eng_now_ns();
    atomic_fetch_add(&eng->ctx.st.finished, 1);
    atomic_fetch_add(&eng->ctx.st.bytes, atomic_load(&t->transferred));
    if (err) {
        atomic_fetch_add(&eng->ctx.st.failed, 1);
        atomic_fetch_add(&b->failed, 1);
    }
    atomic_fetch_sub(&t->seg->busy, 1);
    /* The batch stops counting the task before its state says finished: a
     * caller that polls teshim_task_status and then frees the batch must
     * find nothing unfinished. The last finisher wakes waiters; b stays
     * valid: free needs unfinished == 0, and takes b->lock (held here until
     * the state is written) before destroying it. */
    pthread_mutex_lock(&b->lock);
    bool last = atomic_fetch_sub(&b->unfinished, 1) == 1;
    atomic_store(&t->state, !err                ? TESHIM_TASK_COMPLETED
                            : err == -ETIMEDOUT ? TESHIM_TASK_TIMED_OUT
                                                : TESHIM_TASK_FAILED);
    if (last)
        pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->lock);
}
