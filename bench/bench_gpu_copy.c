/*
 * GPU copy benchmark: device<->host cudaMemcpy bandwidth from 64 KiB to
 * 512 MiB, host memory pageable (malloc) or pinned (cudaMallocHost). Built
 * like an unmodified application (real CUDA headers, libcudart by soname),
 * so the same binary runs plain, under LD_PRELOAD=libteshim.so, against the
 * real runtime on a GPU machine (LD_LIBRARY_PATH=/usr/local/cuda/lib64) or
 * against the emulated runtime of tests/cuda_emu, where the numbers only
 * measure memcpy and mean nothing about a GPU. bench/gpu-copy runs the
 * variants side by side.
 *
 * usage: bench_gpu_copy [--host pageable|pinned] [--fresh] [--min BYTES]
 *                       [--max BYTES] [--seconds S]
 * --fresh: device to host only, into a newly mapped pageable buffer each
 * iteration (munmap'ed after), as PyTorch's .cpu() allocates a new tensor
 * per call: the copy takes the first-touch page faults. Reported as
 * host=fresh.
 * One line per size and direction:
 *   gpu_copy host=pageable dir=d2h bytes=N iters=I gbps=X check=ok
 * (GB = 10^9 bytes). Exit status 1 if a correctness check failed.
 */
#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t parse_size(const char *s)
{
    char *end;
    size_t v = strtoull(s, &end, 0);

    if (*end == 'K' || *end == 'k')
        v <<= 10;
    else if (*end == 'M' || *end == 'm')
        v <<= 20;
    else if (*end == 'G' || *end == 'g')
        v <<= 30;
    return v;
}

static void die(const char *what, cudaError_t e)
{
    fprintf(stderr, "bench_gpu_copy: %s: %s\n", what, cudaGetErrorString(e));
    exit(2);
}

/* Time copies of n bytes in one direction for about `seconds`; GB/s. */
static double measure(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind,
                      double seconds, unsigned *iters_out)
{
    unsigned iters = 0;
    cudaError_t e;
    double t0, t;

    /* Warm-up: first-touch of pages and any pool the shim makes. */
    e = cudaMemcpy(dst, src, n, kind);
    if (e != cudaSuccess)
        die("cudaMemcpy", e);
    e = cudaDeviceSynchronize();
    if (e != cudaSuccess)
        die("cudaDeviceSynchronize", e);
    t0 = now();
    do {
        e = cudaMemcpy(dst, src, n, kind);
        if (e != cudaSuccess)
            die("cudaMemcpy", e);
        iters++;
        t = now();
    } while (t - t0 < seconds || iters < 3);
    e = cudaDeviceSynchronize();
    if (e != cudaSuccess)
        die("cudaDeviceSynchronize", e);
    t = now();
    *iters_out = iters;
    return (double)n * iters / (t - t0) / 1e9;
}

static unsigned char *map_fresh(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED) {
        perror("bench_gpu_copy: mmap");
        exit(2);
    }
    return p;
}

/* Device to host into a fresh mapping per copy (mmap, copy, munmap all
 * timed, as a new tensor's life is); GB/s. *ok: one more such copy brought
 * back `want`. */
static double measure_fresh(const void *dev, size_t n, double seconds, const unsigned char *want,
                            unsigned *iters_out, int *ok)
{
    unsigned iters = 0;
    unsigned char *dst;
    cudaError_t e;
    double t0, t;

    t0 = now();
    do {
        dst = map_fresh(n);
        e = cudaMemcpy(dst, dev, n, cudaMemcpyDeviceToHost);
        if (e != cudaSuccess)
            die("cudaMemcpy", e);
        munmap(dst, n);
        iters++;
        t = now();
    } while (t - t0 < seconds || iters < 3);
    *iters_out = iters;
    dst = map_fresh(n);
    e = cudaMemcpy(dst, dev, n, cudaMemcpyDeviceToHost);
    if (e != cudaSuccess)
        die("cudaMemcpy", e);
    *ok = memcmp(dst, want, n) == 0;
    munmap(dst, n);
    return (double)n * iters / (t - t0) / 1e9;
}

int main(int argc, char **argv)
{
    const char *host_kind = "pageable";
    size_t min = 64 << 10, max = (size_t)512 << 20;
    double seconds = 0.2;
    unsigned char *a, *b;
    void *dev;
    int bad = 0;
    bool fresh = false;
    cudaError_t e;

    for (int i = 1; i < argc; i++) {
        bool val = i + 1 < argc;
        if (strcmp(argv[i], "--fresh") == 0)
            fresh = true;
        else if (val && strcmp(argv[i], "--host") == 0)
            host_kind = argv[++i];
        else if (val && strcmp(argv[i], "--min") == 0)
            min = parse_size(argv[++i]);
        else if (val && strcmp(argv[i], "--max") == 0)
            max = parse_size(argv[++i]);
        else if (val && strcmp(argv[i], "--seconds") == 0)
            seconds = atof(argv[++i]);
        else {
            fprintf(stderr,
                    "usage: %s [--host pageable|pinned] [--fresh] [--min B] [--max B] "
                    "[--seconds S]\n",
                    argv[0]);
            return 2;
        }
    }
    if (fresh)
        host_kind = "pageable";
    if (strcmp(host_kind, "pinned") == 0) {
        if ((e = cudaMallocHost((void **)&a, max)) != cudaSuccess ||
            (e = cudaMallocHost((void **)&b, max)) != cudaSuccess)
            die("cudaMallocHost", e);
    } else {
        a = malloc(max);
        b = malloc(max);
        if (!a || !b)
            return 2;
    }
    if ((e = cudaMalloc(&dev, max)) != cudaSuccess)
        die("cudaMalloc", e);
    for (size_t i = 0; i < max; i++)
        a[i] = (unsigned char)(i * 2654435761u >> 13);

    for (size_t n = min; n <= max && fresh; n *= 2) {
        unsigned it;
        int ok;
        e = cudaMemcpy(dev, a, n, cudaMemcpyHostToDevice);
        if (e != cudaSuccess)
            die("cudaMemcpy", e);
        double d2h = measure_fresh(dev, n, seconds, a, &it, &ok);
        bad |= !ok;
        printf("gpu_copy host=fresh dir=d2h bytes=%zu iters=%u gbps=%.3f check=%s\n", n, it, d2h,
               ok ? "ok" : "FAILED");
        fflush(stdout);
    }
    for (size_t n = min; n <= max && !fresh; n *= 2) {
        unsigned it_h2d, it_d2h;
        double h2d = measure(dev, a, n, cudaMemcpyHostToDevice, seconds, &it_h2d);
        memset(b, 0, n);
        double d2h = measure(b, dev, n, cudaMemcpyDeviceToHost, seconds, &it_d2h);
        /* The last D2H brought back what the last H2D sent. */
        int ok = memcmp(a, b, n) == 0;
        bad |= !ok;
        printf("gpu_copy host=%s dir=h2d bytes=%zu iters=%u gbps=%.3f check=%s\n", host_kind, n,
               it_h2d, h2d, ok ? "ok" : "FAILED");
        printf("gpu_copy host=%s dir=d2h bytes=%zu iters=%u gbps=%.3f check=%s\n", host_kind, n,
               it_d2h, d2h, ok ? "ok" : "FAILED");
        fflush(stdout);
    }
    return bad;
}
