/*
 * A library whose constructor registers memory: linked into tshim_early_host
 * as a DT_NEEDED dependency, its constructor runs before libteshim.so's
 * (initialisers run dependencies first, and a preloaded library comes after
 * the executable's own dependencies in that order). The hook it reaches must
 * initialise teshim lazily. It says when it runs on stderr, with write(2),
 * so the line interleaves exactly with LD_DEBUG=init's.
 */
#include <infiniband/verbs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((visibility("default"))) int tshim_early_ok;
__attribute__((visibility("default"))) int tshim_early_threads_ok;

struct early_thread {
    pthread_t tid;
    struct ibv_pd *pd;
    void *buf;
    int ok;
};

static void *early_thread_main(void *arg)
{
    struct early_thread *t = arg;
    int access = (int)strtol("7", NULL, 0); /* run-time flags: ibv_reg_mr_iova2 */

    for (int i = 0; i < 10; i++) {
        struct ibv_mr *mr = ibv_reg_mr(t->pd, t->buf, 1 << 20, access);
        if (mr) {
            t->ok++;
            ibv_dereg_mr(mr);
        }
    }
    return NULL;
}

/* TSHIM_EARLY_THREADS=N: N threads race into the hooks, still before
 * teshim's constructor; the first one initialises it, the others wait. */
static int early_threads(struct ibv_pd *pd)
{
    const char *env = getenv("TSHIM_EARLY_THREADS");
    int n = env ? atoi(env) : 0, ok = 0;
    struct early_thread t[32];

    if (n > 32)
        n = 32;
    for (int i = 0; i < n; i++) {
        t[i].pd = pd;
        t[i].buf = calloc(1, 1 << 20);
        t[i].ok = 0;
        if (!t[i].buf || pthread_create(&t[i].tid, NULL, early_thread_main, &t[i]) != 0)
            return -1;
    }
    for (int i = 0; i < n; i++) {
        pthread_join(t[i].tid, NULL);
        ok += t[i].ok;
        free(t[i].buf);
    }
    return ok;
}

__attribute__((constructor)) static void tshim_early_init(void)
{
    static const char msg[] = "tshim_early: constructor registering\n";
    int n = 0;
    struct ibv_device **list = ibv_get_device_list(&n);
    size_t len = 1 << 20;

    if (write(2, msg, sizeof(msg) - 1) < 0)
        return;
    if (!list || n < 1)
        return;
    struct ibv_context *ctx = ibv_open_device(list[0]);
    struct ibv_pd *pd = ctx ? ibv_alloc_pd(ctx) : NULL;
    void *buf = calloc(1, len);
    if (pd)
        tshim_early_threads_ok = early_threads(pd);
    struct ibv_mr *mr =
        pd && buf ? ibv_reg_mr(pd, buf, len, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE)
                  : NULL;
    tshim_early_ok = mr != NULL;
    if (mr)
        ibv_dereg_mr(mr);
    if (pd)
        ibv_dealloc_pd(pd);
    if (ctx)
        ibv_close_device(ctx);
    ibv_free_device_list(list);
    free(buf);
}
