/*
 * The list of transports, and the typed "unsupported" operations under
 * every transport's table.
 */
#include "eng_tp.h"

#include <errno.h>
#include <string.h>

static int stub_seg_open(struct eng_transport *tp, struct eng_segment *seg)
{
    return -EOPNOTSUPP;
}

static void stub_seg_close(struct eng_transport *tp, struct eng_segment *seg)
{
}

static void stub_start(struct eng_transport *tp, struct eng_task *task)
{
    eng_err(tp->eng, "transport %s cannot start requests", tp->ops.name);
    eng_task_set_slices(task, 1);
    eng_task_slice_done(task, 0, -EOPNOTSUPP);
}

static void stub_destroy(struct eng_transport *tp)
{
}

static void stub_submit_mark(struct eng_transport *tp)
{
}

static bool stub_reaches(struct eng_transport *tp, struct eng_segment *seg, uint64_t addr,
                         uint64_t len)
{
    return true;
}

static int stub_adopt(struct eng_transport *tp, int fd, const char *pname)
{
    return -EOPNOTSUPP;
}

static const struct eng_transport_ops stub_ops = {
    .size = sizeof(struct eng_transport_ops),
    .name = "unsupported",
    .seg_open = stub_seg_open,
    .seg_close = stub_seg_close,
    .start = stub_start,
    .destroy = stub_destroy,
    .submit_begin = stub_submit_mark,
    .submit_end = stub_submit_mark,
    .reaches = stub_reaches,
    .adopt = stub_adopt,
};

void eng_transport_init(struct eng_transport *tp, struct eng_ctx *eng,
                        const struct eng_transport_ops *ops)
{
    tp->ops = stub_ops;
    tp->eng = eng;
    /* a provider built against an older, shorter table leaves the rest stubbed */
#define TAKE(member)                                                                               \
    if (ops->size >= offsetof(struct eng_transport_ops, member) + sizeof(ops->member) &&           \
        ops->member)                                                                               \
    tp->ops.member = ops->member
    TAKE(name);
    TAKE(seg_open);
    TAKE(seg_close);
    TAKE(start);
    TAKE(destroy);
    TAKE(submit_begin);
    TAKE(submit_end);
    TAKE(reaches);
    TAKE(adopt);
#undef TAKE
}

/* The transports, in the order a segment tries them (engine.transport
 * picks where to start). A new transport is one row. */
static const struct {
    const char *name;
    int (*create)(struct eng_ctx *eng, struct eng_transport **tp_p);
} transports[] = {
    {"local", eng_local_create},
    {"tcp", eng_tcp_create},
};

int eng_transports_create(struct eng_ctx *eng, struct eng_transport **tps, int max, int *n_p)
{
    int n = 0, ret = 0;

    for (size_t i = 0; i < sizeof(transports) / sizeof(transports[0]) && n < max; i++) {
        struct eng_transport *tp;
        ret = transports[i].create(eng, &tp);
        if (ret)
            goto err_destroy;
        ret = eng_tp_stage_wrap(tp, &tps[n]);
        if (ret) {
            tp->ops.destroy(tp);
            goto err_destroy;
        }
        n++;
    }
    *n_p = n;
    return 0;

err_destroy:
    while (n > 0) {
        n--;
        tps[n]->ops.destroy(tps[n]);
    }
    return ret;
}
