/*
 * A CUDA program as nvcc builds it by default: the runtime linked in
 * statically (libcudart_static.a), so no runtime hook can see it and its
 * copies reach teshim only through the driver hooks (dlsym of
 * cuGetProcAddress_v2, teshim's cuGetProcAddress, the copy wrappers).
 * Built by CMake with nvcc where nvcc is found; run by bench/gpu-check on a
 * GPU, plain and under teshim, whose outputs must be identical.
 *
 * usage: gpu_static_copy MODE   (copies, ordering, errors, threads)
 *   copies    pageable H2D/D2H, sync and async (legacy stream, a created
 *             stream, the per-thread stream), cudaMemcpyDefault, 4 KiB..64 MiB
 *   ordering  an async H2D whose pageable source is overwritten as soon as
 *             the call returns (the runtime staged it: the device keeps the
 *             old bytes); a D2H after a H2D on another blocking stream
 *   errors    copies that fail: the codes, and the last-error state after
 *   threads   8 threads, each its own round trips on the per-thread stream
 * Prints a checksum of everything read back and one line per check.
 */
#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorName(e_));   \
            exit(2);                                                                               \
        }                                                                                          \
    } while (0)

static uint64_t sum(uint64_t h, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * 131 + seed);
}

/* One round trip of n bytes through the device, the way given. */
static uint64_t round_trip(size_t n, int how, cudaStream_t s, uint64_t h)
{
    unsigned char *src = malloc(n), *dst = malloc(n);
    void *dev;

    if (!src || !dst)
        exit(2);
    fill(src, n, (unsigned)n + (unsigned)how);
    memset(dst, 0, n);
    CK(cudaMalloc(&dev, n));
    switch (how) {
    case 0:
        CK(cudaMemcpy(dev, src, n, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dst, dev, n, cudaMemcpyDeviceToHost));
        break;
    case 1:
        CK(cudaMemcpyAsync(dev, src, n, cudaMemcpyHostToDevice, s));
        CK(cudaMemcpyAsync(dst, dev, n, cudaMemcpyDeviceToHost, s));
        CK(cudaStreamSynchronize(s));
        break;
    default:
        CK(cudaMemcpy(dev, src, n, cudaMemcpyDefault));
        CK(cudaMemcpy(dst, dev, n, cudaMemcpyDefault));
        break;
    }
    CK(cudaFree(dev));
    h = sum(h, dst, n);
    if (memcmp(src, dst, n) != 0)
        printf("MISMATCH size %zu how %d\n", n, how);
    free(src);
    free(dst);
    return h;
}

static void copies(void)
{
    cudaStream_t s;
    uint64_t h = 1469598103934665603ull;

    CK(cudaStreamCreate(&s));
    for (size_t n = 4096; n <= (64u << 20); n *= 4) {
        h = round_trip(n, 0, 0, h);
        h = round_trip(n, 1, 0, h);
        h = round_trip(n, 1, s, h);
        h = round_trip(n, 1, cudaStreamPerThread, h);
        h = round_trip(n, 2, 0, h);
    }
    CK(cudaStreamDestroy(s));
    printf("copies checksum %016llx\n", (unsigned long long)h);
}

static void ordering(void)
{
    size_t n = 32u << 20;
    unsigned char *src = malloc(n), *dst = malloc(n);
    void *dev;
    cudaStream_t a, b;

    CK(cudaMalloc(&dev, n));
    CK(cudaStreamCreate(&a));
    CK(cudaStreamCreate(&b));
    fill(src, n, 1);
    CK(cudaMemcpyAsync(dev, src, n, cudaMemcpyHostToDevice, a));
    memset(src, 0xee, n); /* pageable: the call returned with the source consumed */
    CK(cudaStreamSynchronize(a));
    CK(cudaMemcpy(dst, dev, n, cudaMemcpyDeviceToHost));
    fill(src, n, 1);
    printf("ordering async-source-consumed %s\n", memcmp(src, dst, n) == 0 ? "ok" : "STALE");
    /* The legacy stream waits for blocking streams: a sync D2H after an
     * async H2D on stream b sees it. */
    fill(src, n, 2);
    CK(cudaMemcpyAsync(dev, src, n, cudaMemcpyHostToDevice, b));
    CK(cudaMemcpy(dst, dev, n, cudaMemcpyDeviceToHost));
    printf("ordering legacy-after-blocking %s\n", memcmp(src, dst, n) == 0 ? "ok" : "STALE");
    CK(cudaStreamDestroy(a));
    CK(cudaStreamDestroy(b));
    CK(cudaFree(dev));
    free(src);
    free(dst);
}

static void errors(void)
{
    size_t n = 4u << 20;
    unsigned char *buf = calloc(1, n);
    void *dev;
    cudaError_t e;

    CK(cudaMalloc(&dev, n));
    /* Past the end of the allocation. */
    e = cudaMemcpy(dev, buf, 2 * n, cudaMemcpyHostToDevice);
    printf("errors overrun %s last %s\n", cudaGetErrorName(e),
           cudaGetErrorName(cudaGetLastError()));
    e = cudaMemcpy(buf, (char *)dev + n, n, cudaMemcpyDeviceToHost);
    printf("errors outside %s last %s\n", cudaGetErrorName(e),
           cudaGetErrorName(cudaGetLastError()));
    /* A good copy after them leaves no error behind. */
    e = cudaMemcpy(dev, buf, n, cudaMemcpyHostToDevice);
    printf("errors after %s last %s\n", cudaGetErrorName(e), cudaGetErrorName(cudaGetLastError()));
    CK(cudaFree(dev));
    free(buf);
}

static void *thread_main(void *arg)
{
    uint64_t *h = arg;

    for (size_t n = 64u << 10; n <= (16u << 20); n *= 4)
        for (int i = 0; i < 4; i++)
            *h = round_trip(n, i % 2, cudaStreamPerThread, *h);
    return NULL;
}

static void threads(void)
{
    pthread_t t[8];
    uint64_t h[8], all = 0;

    for (int i = 0; i < 8; i++) {
        h[i] = 1469598103934665603ull + (uint64_t)i;
        if (pthread_create(&t[i], NULL, thread_main, &h[i]) != 0)
            exit(2);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        all ^= h[i];
    }
    printf("threads checksum %016llx\n", (unsigned long long)all);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "copies";

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strcmp(mode, "copies") == 0)
        copies();
    else if (strcmp(mode, "ordering") == 0)
        ordering();
    else if (strcmp(mode, "errors") == 0)
        errors();
    else if (strcmp(mode, "threads") == 0)
        threads();
    else {
        fprintf(stderr, "usage: gpu_static_copy copies|ordering|errors|threads\n");
        return 2;
    }
    return 0;
}
