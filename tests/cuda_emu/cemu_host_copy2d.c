/*
 * A host program built like an unmodified CUDA application, for the
 * cudaMemcpy2D family: the real CUDA headers, linked against libcudart.so
 * by soname, pitched copies between pageable host memory and device memory.
 * Built twice: legacy default stream and -DCUDA_API_PER_THREAD_DEFAULT_STREAM
 * (then it imports cudaMemcpy2D_ptds and cudaMemcpy2DAsync_ptsz).
 *
 * usage: cemu_host_copy2d MODE [IGNORED]
 * Prints "checksum HEX" over everything it read back (host buffers including
 * the bytes between rows, which a copy must leave alone), so a run with and
 * without libteshim.so can be compared byte for byte. Exit status 0 = every
 * check passed; 3 = the ordering check saw stale data; other = failure.
 */
#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cemu_host.h"
#include "cemu_test.h"

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorName(e_));   \
            exit(2);                                                                               \
        }                                                                                          \
    } while (0)

static void expect_clean(void)
{
    cudaError_t e = cudaPeekAtLastError();

    if (e != cudaSuccess) {
        fprintf(stderr, "last error left set: %s\n", cudaGetErrorName(e));
        exit(2);
    }
}

/* Rows of src (pitch sp) equal rows of dst (pitch dp). */
static void expect_rows(const unsigned char *dst, size_t dp, const unsigned char *src, size_t sp,
                        size_t w, size_t h, const char *what)
{
    for (size_t r = 0; r < h; r++)
        if (memcmp(dst + r * dp, src + r * sp, w) != 0) {
            fprintf(stderr, "data mismatch: %s, row %zu\n", what, r);
            exit(2);
        }
}

struct geom {
    size_t w, hp, dp, h; /* width, host pitch, device pitch, height */
};

/* With 64 KiB bounce chunks (the tests' setting): rows equal to the pitch,
 * odd widths, one row, rows wider than a chunk, many chunks. */
static const struct geom geoms[] = {
    {4096, 4096, 4096, 256},  {1001, 1024, 1536, 700}, {300000, 300007, 300032, 1},
    {70000, 70001, 70144, 9}, {513, 4096, 513, 2000},  {2048, 2560, 4096, 1024},
};
#define NGEOMS (sizeof(geoms) / sizeof(geoms[0]))

static size_t span(size_t pitch, size_t w, size_t h)
{
    return (h - 1) * pitch + w;
}

/* One geometry through every entry point this build imports, both ways. */
static void roundtrip_geom(const struct geom *g, unsigned seed)
{
    size_t hs = span(g->hp, g->w, g->h), ds = span(g->dp, g->w, g->h);
    unsigned char *src = xmalloc(hs), *dst = xmalloc(hs);
    void *dev;
    cudaStream_t s;

    CK(cudaMalloc(&dev, ds));
    CK(cudaStreamCreate(&s));
    fill(src, hs, seed);
    CK(cudaMemcpy2D(dev, g->dp, src, g->hp, g->w, g->h, cudaMemcpyHostToDevice));
    memset(dst, 0x5A, hs);
    CK(cudaMemcpy2D(dst, g->hp, dev, g->dp, g->w, g->h, cudaMemcpyDeviceToHost));
    expect_rows(dst, g->hp, src, g->hp, g->w, g->h, "cudaMemcpy2D");
    sum(dst, hs);

    /* cudaMemcpyDefault, and a packed host side (pitch = width). */
    fill(src, hs, seed + 1);
    CK(cudaMemcpy2D(dev, g->dp, src, g->hp, g->w, g->h, cudaMemcpyDefault));
    memset(dst, 0x33, hs);
    CK(cudaMemcpy2D(dst, g->w, dev, g->dp, g->w, g->h, cudaMemcpyDefault));
    expect_rows(dst, g->w, src, g->hp, g->w, g->h, "cudaMemcpyDefault");
    sum(dst, hs);

    /* Async on the default stream, then on a created stream; a pageable
     * source may be reused as soon as the call returned. */
    fill(src, hs, seed + 2);
    CK(cudaMemcpy2DAsync(dev, g->dp, src, g->hp, g->w, g->h, cudaMemcpyHostToDevice, 0));
    memset(dst, 0x77, hs);
    CK(cudaMemcpy2DAsync(dst, g->hp, dev, g->dp, g->w, g->h, cudaMemcpyDeviceToHost, 0));
    CK(cudaStreamSynchronize(0));
    expect_rows(dst, g->hp, src, g->hp, g->w, g->h, "cudaMemcpy2DAsync stream 0");
    sum(dst, hs);
    fill(src, hs, seed + 3);
    CK(cudaMemcpy2DAsync(dev, g->dp, src, g->hp, g->w, g->h, cudaMemcpyHostToDevice, s));
    memset(src, 0xEE, hs);
    memset(dst, 0x11, hs);
    CK(cudaMemcpy2DAsync(dst, g->hp, dev, g->dp, g->w, g->h, cudaMemcpyDeviceToHost, s));
    CK(cudaStreamSynchronize(s));
    fill(src, hs, seed + 3);
    expect_rows(dst, g->hp, src, g->hp, g->w, g->h, "cudaMemcpy2DAsync user stream");
    sum(dst, hs);

    CK(cudaStreamDestroy(s));
    CK(cudaFree(dev));
    free(src);
    free(dst);
    expect_clean();
}

static void roundtrip(void)
{
    for (size_t i = 0; i < NGEOMS; i++)
        roundtrip_geom(&geoms[i], (unsigned)i * 10);
}

/* ---- memory and copies the shim must leave alone ------------------------ */

static void passthrough(void)
{
    enum { W = 1000, P = 1024, H = 200 };
    unsigned char *pinned, *src = xmalloc(P * H), *dst = xmalloc(P * H);
    void *dev, *dev2;

    fill(src, P * H, 9);
    CK(cudaMalloc(&dev, P * H));
    CK(cudaMalloc(&dev2, P * H));
    CK(cudaMallocHost((void **)&pinned, P * H));
    memcpy(pinned, src, P * H);
    /* Pinned host memory. */
    CK(cudaMemcpy2D(dev, P, pinned, P, W, H, cudaMemcpyHostToDevice));
    /* Device to device. */
    CK(cudaMemcpy2D(dev2, P, dev, P, W, H, cudaMemcpyDeviceToDevice));
    memset(pinned, 0, P * H);
    CK(cudaMemcpy2DAsync(pinned, P, dev2, P, W, H, cudaMemcpyDeviceToHost, 0));
    CK(cudaStreamSynchronize(0));
    expect_rows(pinned, P, src, P, W, H, "pinned/device");
    sum(pinned, P * H);
    /* Below cuda.bounce_min_bytes (64K): 60 rows of 1000 bytes. */
    memset(dst, 0, P * H);
    CK(cudaMemcpy2D(dst, P, dev2, P, W, 60, cudaMemcpyDeviceToHost));
    expect_rows(dst, P, src, P, W, 60, "small");
    sum(dst, P * H);
    CK(cudaFreeHost(pinned));
    CK(cudaFree(dev));
    CK(cudaFree(dev2));
    free(src);
    free(dst);
    expect_clean();
}

/* The application's own error state and the runtime's own errors. */
static void errors(void)
{
    enum { W = 1000, P = 1024, H = 200 };
    unsigned char *buf = xmalloc(P * H);
    void *dev;
    cudaError_t e;

    CK(cudaMalloc(&dev, P * H));
    fill(buf, P * H, 5);
    /* An error the application has not read yet survives a 2D copy. */
    if (cudaMalloc(NULL, 16) != cudaErrorInvalidValue)
        exit(2);
    CK(cudaMemcpy2D(dev, P, buf, P, W, H, cudaMemcpyHostToDevice));
    if (cudaGetLastError() != cudaErrorInvalidValue || cudaGetLastError() != cudaSuccess) {
        fprintf(stderr, "pending error changed\n");
        exit(2);
    }
    /* Width above a pitch: the runtime's error, also as the last error. */
    e = cudaMemcpy2D(dev, P, buf, W - 1, W, H, cudaMemcpyHostToDevice);
    printf("width-above-spitch %s\n", cudaGetErrorName(e));
    if (e == cudaSuccess || cudaGetLastError() != e)
        exit(2);
    e = cudaMemcpy2DAsync(buf, P, dev, W - 1, W, H, cudaMemcpyDeviceToHost, 0);
    printf("width-above-dpitch %s\n", cudaGetErrorName(e));
    if (e == cudaSuccess || cudaGetLastError() != e)
        exit(2);
    /* Wrong direction. */
    e = cudaMemcpy2D(buf, P, dev, P, W, H, cudaMemcpyHostToDevice);
    printf("wrong-kind %s\n", cudaGetErrorName(e));
    if (e == cudaSuccess || cudaGetLastError() != e)
        exit(2);
    /* The last rows past the end of the device allocation. */
    e = cudaMemcpy2D(buf, P, dev, 2 * P, W, H / 2 + 1, cudaMemcpyDeviceToHost);
    printf("overrun %s\n", cudaGetErrorName(e));
    if (e == cudaSuccess || cudaGetLastError() != e)
        exit(2);
    /* Nothing to copy. */
    CK(cudaMemcpy2D(buf, P, dev, P, 0, H, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy2D(buf, P, dev, P, W, 0, cudaMemcpyDeviceToHost));
    memset(buf, 0, P * H);
    CK(cudaMemcpy2D(buf, P, dev, P, W, H, cudaMemcpyDeviceToHost));
    sum(buf, P * H);
    expect_clean();
    CK(cudaFree(dev));
    free(buf);
}

/* ---- ordering: a synchronous 2D D2H must see a held stream's write ------- */

static int ordering(void)
{
    enum { W = 1000, P = 1024, H = 512 };
    unsigned char *a = xmalloc(P * H), *b, *out = xmalloc(P * H);
    void *dev;
    pthread_t t;

#ifdef CUDA_API_PER_THREAD_DEFAULT_STREAM
    writer = cudaStreamLegacy;
#else
    CK(cudaStreamCreate(&writer));
#endif
    CK(cudaMallocHost((void **)&b, P * H));
    fill(a, P * H, 1);
    fill(b, P * H, 2);
    CK(cudaMalloc(&dev, P * H));
    CK(cudaMemcpy(dev, a, P * H, cudaMemcpyHostToDevice));
    CK(cudaDeviceSynchronize());
    cemu_test_hold_stream(writer);
    CK(cudaMemcpyAsync(dev, b, P * H, cudaMemcpyHostToDevice, writer));
    pthread_create(&t, NULL, releaser, NULL);
    memset(out, 0, P * H);
    CK(cudaMemcpy2D(out, P, dev, P, W, H, cudaMemcpyDeviceToHost));
    __atomic_store_n(&copy_done, 1, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    CK(cudaDeviceSynchronize());
    sum(out, P * H);
    if (memcmp(out, a, W) == 0) {
        printf("ORDERING VIOLATED: the copy did not wait for the held stream\n");
        return 3;
    }
    expect_rows(out, P, b, P, W, H, "ordering");
    expect_clean();
    return 0;
}

/* An async pageable 2D H2D returns on a held stream (it fits the tests'
 * pool of 2 x 64 KiB: 100 rows of 1000 bytes). */
static void asynchold(void)
{
    enum { W = 1000, P = 1100, H = 100 };
    unsigned char *src = xmalloc(P * H), *ref = xmalloc(P * H), *dst = xmalloc(P * H);
    void *dev;
    cudaStream_t s;

    fill(src, P * H, 40);
    memcpy(ref, src, P * H);
    CK(cudaMalloc(&dev, W * H));
    CK(cudaStreamCreate(&s));
    cemu_test_hold_stream(s);
    CK(cudaMemcpy2DAsync(dev, W, src, P, W, H, cudaMemcpyHostToDevice, s));
    memset(src, 0, P * H);
    cemu_test_release_stream(s);
    CK(cudaStreamSynchronize(s));
    memset(dst, 0, P * H);
    CK(cudaMemcpy2D(dst, P, dev, W, W, H, cudaMemcpyDeviceToHost));
    expect_rows(dst, P, ref, P, W, H, "async 2D copy on a held stream");
    sum(dst, P * H);
    expect_clean();
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "roundtrip";
    int rc = 0;

    if (strcmp(mode, "roundtrip") == 0) {
        roundtrip();
    } else if (strcmp(mode, "passthrough") == 0) {
        passthrough();
    } else if (strcmp(mode, "errors") == 0) {
        errors();
    } else if (strcmp(mode, "ordering") == 0) {
        rc = ordering();
    } else if (strcmp(mode, "asynchold") == 0) {
        asynchold();
    } else if (strcmp(mode, "allocfail") == 0) {
        cemu_test_fail_host_alloc(-1);
        roundtrip();
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    printf("checksum %016llx\n", (unsigned long long)checksum);
    if (getenv("CEMU_HOST_REPORT")) {
        uint64_t pageable = cemu_test_copies(CEMU_H2D, CEMU_HOST_PAGEABLE) +
                            cemu_test_copies(CEMU_D2H, CEMU_HOST_PAGEABLE);
        uint64_t pinned = cemu_test_copies(CEMU_H2D, CEMU_HOST_PINNED) +
                          cemu_test_copies(CEMU_D2H, CEMU_HOST_PINNED);
        printf("runtime pageable-copies %llu pinned-copies %llu 2d-copies %llu\n",
               (unsigned long long)pageable, (unsigned long long)pinned,
               (unsigned long long)cemu_test_copies_2d());
    }
    return rc;
}
