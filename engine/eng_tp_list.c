/*
 * The list of transports: every engine creates each one, in its staging
 * wrapper. Above the transports (it names their constructors), below the
 * public API.
 */
#include "eng_tp.h"

/* The transports, in the order a segment tries them (engine.transport
 * picks where to start). A new transport is one row. */
static const struct {
    const char *name;
    int (*create)(struct eng_ctx *eng, struct eng_transport **tp_p);
} transports[] = {
    {"local", eng_local_create},
    {"rdma", eng_rdma_create},
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
