/*
 * A deliberately WRONG interposer, built only for the test that proves the
 * emulated runtime would catch it: it makes synchronous copies on a
 * non-blocking stream of its own, so they no longer wait for the blocking
 * streams (or, with the per-thread default stream, for the legacy stream).
 * It is never part of libteshim.so.
 */
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <pthread.h>

cudaError_t cudaMemcpy_ptds(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind);

typedef cudaError_t (*async_fn)(void *, const void *, size_t, enum cudaMemcpyKind, cudaStream_t);
typedef cudaError_t (*sync_fn)(cudaStream_t);

static cudaStream_t side;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void make_side(void)
{
    cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking);
}

static cudaError_t moved(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind)
{
    async_fn copy;
    sync_fn sync;
    void *a = dlsym(RTLD_NEXT, "cudaMemcpyAsync");
    void *b = dlsym(RTLD_NEXT, "cudaStreamSynchronize");
    cudaError_t e;

    *(void **)&copy = a;
    *(void **)&sync = b;
    pthread_once(&once, make_side);
    e = copy(dst, src, n, kind, side);
    return e != cudaSuccess ? e : sync(side);
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind)
{
    return moved(dst, src, n, kind);
}

cudaError_t cudaMemcpy_ptds(void *dst, const void *src, size_t n, enum cudaMemcpyKind kind)
{
    return moved(dst, src, n, kind);
}
