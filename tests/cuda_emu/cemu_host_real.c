/*
 * An application linked against the INSTALLED libcudart.so.13 (the real
 * NVIDIA runtime), BIND_NOW, with no test hooks: run with LD_LIBRARY_PATH
 * pointing at the emulation, it must load (every symbol it imports is
 * exported there), fail cleanly on what is not emulated, and copy right.
 */
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
    size_t n = 4 << 20;
    unsigned char *a = malloc(n), *b = malloc(n);
    struct cudaDeviceProp prop;
    void *dev;
    cudaError_t e;

    e = cudaGetDeviceProperties(&prop, 0);
    printf("cudaGetDeviceProperties %s\n", cudaGetErrorName(e));
    e = cudaGetLastError();
    printf("last error %s\n", cudaGetErrorName(e));
    for (size_t i = 0; i < n; i++)
        a[i] = (unsigned char)(i * 31 + (i >> 9));
    if (cudaMalloc(&dev, n) != cudaSuccess ||
        cudaMemcpy(dev, a, n, cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaMemcpy(b, dev, n, cudaMemcpyDeviceToHost) != cudaSuccess || memcmp(a, b, n) != 0) {
        printf("copy FAILED\n");
        return 1;
    }
    printf("copy ok\n");
    return 0;
}
