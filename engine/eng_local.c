/*
 * Same-host transport: the initiator copies straight between its
 * registered memory and the peer's with process_vm_readv/writev. The peer
 * runs no code for it; bounds are checked here against the regions the
 * peer announced at the handshake. Used only when the handshake shows the
 * same boot id and a probe read of the peer's memory returns the value it
 * announced (same host, same pid namespace, ptrace permitted).
 */
#include "eng.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

struct local_tp {
    struct eng_transport base;
};

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
    return 0;
}

static bool local_in_regions(const struct eng_segment *seg, uint64_t a, uint64_t len)
{
    for (uint32_t i = 0; i < seg->nregions; i++)
        if (a >= seg->regions[i].addr && a + len <= seg->regions[i].addr + seg->regions[i].len)
            return true;
    return false;
}

static void local_start(struct eng_transport *tp, struct eng_task *t)
{
    struct eng_segment *seg = t->seg;
    uint64_t done = 0;
    int err = 0;

    eng_task_set_slices(t, 1);
    if (!local_in_regions(seg, t->raddr, t->len)) {
        eng_err(tp->eng, "segment %s: [0x%llx, +%llu) is outside the peer's regions", seg->name,
                (unsigned long long)t->raddr, (unsigned long long)t->len);
        err = -EFAULT;
        goto out;
    }
    while (done < t->len) {
        struct iovec l = {t->local + done, t->len - done};
        struct iovec r = {(void *)(uintptr_t)(t->raddr + done), t->len - done};
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
out:
    eng_task_slice_done(t, done, err);
}

static void local_destroy(struct eng_transport *tp)
{
    free(tp);
}

static const struct eng_transport_ops local_ops = {
    .size = sizeof(struct eng_transport_ops),
    .name = "local",
    .seg_open = local_seg_open,
    .start = local_start,
    .destroy = local_destroy,
};

int eng_local_create(struct teshim_engine *eng, struct eng_transport **tp_p)
{
    struct local_tp *lt = calloc(1, sizeof(*lt));
    if (!lt)
        return -ENOMEM;
    eng_transport_init(&lt->base, eng, &local_ops);
    *tp_p = &lt->base;
    return 0;
}
