/*
 * A host bound to the libibverbs 1.0 compat ibv_reg_mr, as binaries built
 * against rdma-core's first ABI are: the reference carries the version
 * IBVERBS_1.0 explicitly, and the PD it passes is the old struct ibv_pd_1_0
 * (built here around a current PD). teshim must not intercept it: the call
 * reaches the library's 1.0 function untouched, and the current entry point
 * that function calls inside the library passes through teshim unchanged.
 */
#include <errno.h>
#include <infiniband/verbs.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

/* rdma-core's pre-1.1 PD. */
struct tshim_pd_1_0 {
    void *context;
    uint32_t handle;
    struct ibv_pd *real_pd;
};

struct ibv_mr *tshim_reg_mr_1_0(struct tshim_pd_1_0 *pd, void *addr, size_t length, int access);
__asm__(".symver tshim_reg_mr_1_0, ibv_reg_mr@IBVERBS_1.0");

int main(void)
{
    int n = 0;
    struct ibv_device **list = ibv_get_device_list(&n);
    size_t len = 1 << 20;
    void *buf = calloc(1, len);

    printf("pid %d\n", (int)getpid());
    if (!list || n < 1 || !buf)
        return 2;
    struct ibv_context *ctx = ibv_open_device(list[0]);
    struct ibv_pd *pd = ctx ? ibv_alloc_pd(ctx) : NULL;
    if (!pd)
        return 2;
    errno = 0;
    struct tshim_pd_1_0 pd10 = {ctx, pd->handle, pd};
    struct ibv_mr *mr = tshim_reg_mr_1_0(&pd10, buf, len, IBV_ACCESS_LOCAL_WRITE);
    printf("reg_mr_1_0 %s errno=%d\n", mr ? "ok" : "null", mr ? 0 : errno);
    ibv_dealloc_pd(pd);
    ibv_close_device(ctx);
    ibv_free_device_list(list);
    free(buf);
    return 0;
}
