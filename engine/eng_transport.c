/* Typed "unsupported" operations under every transport's table. */
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

static int stub_hello(struct eng_transport *tp, int fd, const uint8_t *in, size_t in_len,
                      uint8_t *out, size_t max, size_t *pos)
{
    return 0;
}

static int stub_reg(struct eng_transport *tp, const struct eng_region *r)
{
    return 0;
}

static void stub_unreg(struct eng_transport *tp, const struct eng_region *r)
{
}

static int stub_progress(struct eng_transport *tp, struct eng_task *t, uint64_t deadline_ns)
{
    return -EAGAIN;
}

static bool stub_direct(struct eng_transport *tp, const void *local, uint64_t len)
{
    return false;
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
    .hello = stub_hello,
    .reg = stub_reg,
    .unreg = stub_unreg,
    .progress = stub_progress,
    .direct = stub_direct,
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
    TAKE(hello);
    TAKE(reg);
    TAKE(unreg);
    TAKE(progress);
    TAKE(direct);
#undef TAKE
}
