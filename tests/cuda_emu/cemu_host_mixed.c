/*
 * A host copying at both levels: the shared runtime (cudaMemcpy, reached by
 * teshim's runtime hooks) and the driver API (cuMemcpyDtoH, teshim's driver
 * wrappers), one pageable 1 MiB buffer each way, on one thread. Its first
 * CUDA call is a copy (host to host), so the runtime opens the driver and
 * makes its lookups from inside teshim's cudaMemcpy hook. Prints "mixed ok"
 * when the bytes came back.
 */
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
    size_t n = 1 << 20;
    unsigned char *src = malloc(n), *back = calloc(1, n);
    void *dev = NULL;

    if (!src || !back)
        return 2;
    for (size_t i = 0; i < n; i++)
        src[i] = (unsigned char)(i * 7 + 3);
    if (cudaMemcpy(back, src, 16, cudaMemcpyHostToHost) != cudaSuccess) {
        fprintf(stderr, "first copy failed\n");
        return 2;
    }
    if (cudaMalloc(&dev, n) != cudaSuccess ||
        cudaMemcpy(dev, src, n, cudaMemcpyHostToDevice) != cudaSuccess) {
        fprintf(stderr, "runtime copy failed\n");
        return 2;
    }
    if (cuMemcpyDtoH(back, (CUdeviceptr)(uintptr_t)dev, n) != CUDA_SUCCESS) {
        fprintf(stderr, "driver copy failed\n");
        return 2;
    }
    printf("mixed %s\n", memcmp(src, back, n) == 0 ? "ok" : "differs");
    cudaFree(dev);
    free(src);
    free(back);
    return 0;
}
