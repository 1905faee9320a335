/*
 * Device-memory staging: a transport wrapped around another, with the same
 * ops table (as libfabric's hook providers wrap a provider). Host tasks go
 * to the inner transport untouched. A task whose local memory is on a CUDA
 * device is staged through a host buffer around it, every copy advanced by
 * the copy service's progress thread (eng_copy.h): neither the submitting
 * thread nor an I/O thread waits for a copy.
 *   WRITE: device -> staging, then the inner transport sends the staging.
 *   READ:  the inner transport receives into the staging, then
 *          staging -> device, and only then the task completes.
 */
#include "eng_tp.h"

#include <errno.h>
#include <stdlib.h>

struct stage_tp {
    struct eng_transport base;
    struct eng_transport *inner;
};

static struct eng_transport *inner_of(struct eng_transport *tp)
{
    return ((struct stage_tp *)tp)->inner;
}

/* Release the staging and give the task back its own address. */
static void unstage(struct eng_task *t)
{
    if (t->stage)
        eng_stage_put(t->stage);
    t->stage = NULL;
    t->local = t->dev_ptr;
}

static void unstage_finish(struct eng_task *t, int err)
{
    unstage(t);
    eng_task_finish(t, err);
}

/* READ: the copy of the received data to the device ended. */
static void in_copied(void *arg, int err)
{
    unstage_finish(arg, err);
}

/* The inner transport finished a device task. */
static void transport_done(struct eng_task *t, int err)
{
    if (t->op == TESHIM_OP_READ && !err) {
        err = eng_dev_copy(t->eng, true, t->stage, t->dev_ptr, t->len, t->cuda_dev, in_copied, t);
        if (!err)
            return;
    }
    unstage_finish(t, err);
}

/* WRITE: the device data is in the staging; the inner transport sends it. */
static void out_copied(void *arg, int err)
{
    struct eng_task *t = arg;
    struct eng_transport *inner = inner_of(t->tp);

    if (err) {
        unstage_finish(t, err);
        return;
    }
    t->local = t->stage;
    inner->ops.start(inner, t);
}

static void stage_start(struct eng_transport *tp, struct eng_task *t)
{
    struct eng_transport *inner = inner_of(tp);
    int err;

    /* host memory, or device memory the inner transport registered */
    if (t->cuda_dev < 0 || inner->ops.direct(inner, t->local, t->len)) {
        inner->ops.start(inner, t);
        return;
    }
    t->dev_ptr = t->local;
    t->stage = eng_stage_get(t->eng, t->len);
    if (!t->stage) {
        unstage_finish(t, -ENOMEM);
        return;
    }
    t->done = transport_done;
    if (t->op == TESHIM_OP_WRITE) {
        err = eng_dev_copy(t->eng, false, t->stage, t->dev_ptr, t->len, t->cuda_dev, out_copied, t);
        if (err)
            unstage_finish(t, err);
        return;
    }
    /* READ: the transport receives into the staging first */
    t->local = t->stage;
    inner->ops.start(inner, t);
}

static int stage_seg_open(struct eng_transport *tp, struct eng_segment *seg)
{
    return inner_of(tp)->ops.seg_open(inner_of(tp), seg);
}

static void stage_seg_close(struct eng_transport *tp, struct eng_segment *seg)
{
    inner_of(tp)->ops.seg_close(inner_of(tp), seg);
}

static void stage_submit_begin(struct eng_transport *tp)
{
    inner_of(tp)->ops.submit_begin(inner_of(tp));
}

static void stage_submit_end(struct eng_transport *tp)
{
    inner_of(tp)->ops.submit_end(inner_of(tp));
}

static bool stage_reaches(struct eng_transport *tp, struct eng_segment *seg, uint64_t addr,
                          uint64_t len)
{
    return inner_of(tp)->ops.reaches(inner_of(tp), seg, addr, len);
}

static int stage_adopt(struct eng_transport *tp, int fd, const char *pname)
{
    return inner_of(tp)->ops.adopt(inner_of(tp), fd, pname);
}

static int stage_hello(struct eng_transport *tp, int fd, const uint8_t *in, size_t in_len,
                       uint8_t *out, size_t max, size_t *pos)
{
    return inner_of(tp)->ops.hello(inner_of(tp), fd, in, in_len, out, max, pos);
}

static int stage_reg(struct eng_transport *tp, const struct eng_region *r)
{
    return inner_of(tp)->ops.reg(inner_of(tp), r);
}

static void stage_unreg(struct eng_transport *tp, const struct eng_region *r)
{
    inner_of(tp)->ops.unreg(inner_of(tp), r);
}

/* A device task ends with a copy the waiter cannot help: it sleeps (a
 * direct one too: the rdma transport has no progress of its own). */
static int stage_progress(struct eng_transport *tp, struct eng_task *t, uint64_t deadline_ns)
{
    if (t->cuda_dev >= 0)
        return -EAGAIN;
    return inner_of(tp)->ops.progress(inner_of(tp), t, deadline_ns);
}

static bool stage_direct(struct eng_transport *tp, const void *local, uint64_t len)
{
    return inner_of(tp)->ops.direct(inner_of(tp), local, len);
}

/* The inner transport fails what it has; a READ it completed meanwhile
 * copies to its device before the engine goes. */
static void stage_destroy(struct eng_transport *tp)
{
    struct eng_ctx *eng = tp->eng;

    inner_of(tp)->ops.destroy(inner_of(tp));
    eng_dev_quiesce(eng);
    free(tp);
}

int eng_tp_stage_wrap(struct eng_transport *inner, struct eng_transport **tp_p)
{
    struct stage_tp *st = calloc(1, sizeof(*st));
    struct eng_transport_ops ops = {
        .size = sizeof(ops),
        .name = inner->ops.name, /* the segment's transport is the inner one */
        .seg_open = stage_seg_open,
        .seg_close = stage_seg_close,
        .start = stage_start,
        .destroy = stage_destroy,
        .submit_begin = stage_submit_begin,
        .submit_end = stage_submit_end,
        .reaches = stage_reaches,
        .adopt = stage_adopt,
        .hello = stage_hello,
        .reg = stage_reg,
        .unreg = stage_unreg,
        .progress = stage_progress,
        .direct = stage_direct,
    };

    if (!st) {
        eng_err(inner->eng, "engine_create: no memory for the %s staging wrapper", inner->ops.name);
        return -ENOMEM;
    }
    eng_transport_init(&st->base, inner->eng, &ops);
    st->inner = inner;
    *tp_p = &st->base;
    return 0;
}
