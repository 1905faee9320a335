/*
 * A host shaped like UCX's mlx5 transport: it reaches the NIC through DevX
 * (mlx5dv_devx_*), looked up in libmlx5 after dlopen, for what it could
 * have set through verbs. teshim doctor must name that path as one the
 * verbs hooks cannot reach. Without libmlx5 it says so and exits 0.
 */
#include <dlfcn.h>
#include <stdio.h>

int main(void)
{
    void *h = dlopen("libmlx5.so.1", RTLD_NOW);

    if (!h) {
        printf("no libmlx5\n");
        return 0;
    }
    printf("mlx5dv_devx_obj_create %s\n", dlsym(h, "mlx5dv_devx_obj_create") ? "found" : "absent");
    dlclose(h);
    return 0;
}
