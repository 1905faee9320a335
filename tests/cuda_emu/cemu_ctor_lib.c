/*
 * A library whose constructor copies device memory before main(). The
 * dynamic linker runs it before libteshim.so's constructor (LD_DEBUG=libs
 * shows the order: libcudart, this library, libteshim.so), so the hook
 * initialises lazily and must route the copy all the same.
 */
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((constructor)) static void cemu_ctor_copy(void)
{
    size_t n = 1 << 20;
    unsigned char *a = malloc(n), *b = malloc(n);
    void *dev;

    for (size_t i = 0; i < n; i++)
        a[i] = (unsigned char)(i ^ (i >> 8));
    if (cudaMalloc(&dev, n) != cudaSuccess ||
        cudaMemcpy(dev, a, n, cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaMemcpy(b, dev, n, cudaMemcpyDeviceToHost) != cudaSuccess || memcmp(a, b, n) != 0 ||
        cudaFree(dev) != cudaSuccess) {
        printf("constructor copy FAILED\n");
        exit(2);
    }
    printf("constructor copy ok\n");
    free(a);
    free(b);
}
