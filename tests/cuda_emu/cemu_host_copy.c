/*
 * A host program built like an unmodified CUDA application: the real CUDA
 * headers, linked against libcudart.so by soname, plain cudaMemcpy and
 * cudaMemcpyAsync on pageable buffers. Built three times: legacy default
 * stream, -DCUDA_API_PER_THREAD_DEFAULT_STREAM (so it imports cudaMemcpy_ptds
 * and cudaMemcpyAsync_ptsz), and against the other soname version.
 *
 * usage: cemu_host_copy MODE SIZE
 * Prints "checksum HEX" over everything it read back, so a run with and
 * without libteshim.so can be compared byte for byte. Exit status 0 = every
 * check passed; 3 = the ordering check saw stale data; other = failure.
 */
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Per thread, so concurrent threads stay deterministic. */
#define CEMU_CHECKSUM_TLS __thread
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

/* Threads XOR their checksums into combined, order-independent. */
static uint64_t combined;

static void expect_same(const void *a, const void *b, size_t n, const char *what)
{
    if (memcmp(a, b, n) != 0) {
        fprintf(stderr, "data mismatch: %s\n", what);
        exit(2);
    }
}

static void expect_clean(void)
{
    cudaError_t e = cudaPeekAtLastError();

    if (e != cudaSuccess) {
        fprintf(stderr, "last error left set: %s\n", cudaGetErrorName(e));
        exit(2);
    }
}

/* Pageable round trips through every entry point this build imports. */
static void roundtrip(size_t n, unsigned seed)
{
    unsigned char *src = malloc(n), *dst = malloc(n);
    void *dev;
    cudaStream_t s;

    if (!src || !dst)
        exit(2);
    fill(src, n, seed);
    CK(cudaMalloc(&dev, n));
    CK(cudaMemcpy(dev, src, n, cudaMemcpyHostToDevice));
    memset(dst, 0, n);
    CK(cudaMemcpy(dst, dev, n, cudaMemcpyDeviceToHost));
    expect_same(src, dst, n, "cudaMemcpy round trip");
    sum(dst, n);

    /* cudaMemcpyDefault: the direction from the pointers. */
    fill(src, n, seed + 1);
    CK(cudaMemcpy(dev, src, n, cudaMemcpyDefault));
    memset(dst, 0, n);
    CK(cudaMemcpy(dst, dev, n, cudaMemcpyDefault));
    expect_same(src, dst, n, "cudaMemcpyDefault round trip");
    sum(dst, n);

    /* Async on the default stream and on a created stream. */
    CK(cudaStreamCreate(&s));
    fill(src, n, seed + 2);
    CK(cudaMemcpyAsync(dev, src, n, cudaMemcpyHostToDevice, 0));
    memset(dst, 0, n);
    CK(cudaMemcpyAsync(dst, dev, n, cudaMemcpyDeviceToHost, 0));
    CK(cudaStreamSynchronize(0));
    expect_same(src, dst, n, "cudaMemcpyAsync stream 0");
    sum(dst, n);
    fill(src, n, seed + 3);
    CK(cudaMemcpyAsync(dev, src, n, cudaMemcpyHostToDevice, s));
    /* A pageable source may be reused as soon as the call returned. */
    memset(src + n / 2, 0xEE, n - n / 2);
    memset(dst, 0, n);
    CK(cudaMemcpyAsync(dst, dev, n, cudaMemcpyDeviceToHost, s));
    CK(cudaStreamSynchronize(s));
    fill(src, n, seed + 3);
    expect_same(src, dst, n, "cudaMemcpyAsync user stream");
    sum(dst, n);

    /* An odd size and offset. */
    if (n > 4097) {
        fill(src, n, seed + 4);
        CK(cudaMemcpy((char *)dev + 3, src + 5, n - 4097, cudaMemcpyHostToDevice));
        memset(dst, 0, n);
        CK(cudaMemcpy(dst + 1, (char *)dev + 3, n - 4097, cudaMemcpyDeviceToHost));
        expect_same(src + 5, dst + 1, n - 4097, "odd offsets");
        sum(dst, n);
    }
    CK(cudaStreamDestroy(s));
    CK(cudaFree(dev));
    free(src);
    free(dst);
    expect_clean();
}

/* ---- ordering: a synchronous D2H must see a held stream's earlier write ---- */

static int ordering(size_t n)
{
    unsigned char *a = malloc(n), *b, *out = malloc(n);
    void *dev;
    pthread_t t;

#ifdef CUDA_API_PER_THREAD_DEFAULT_STREAM
    /* The per-thread stream waits for the legacy stream only. */
    writer = cudaStreamLegacy;
#else
    /* The legacy stream waits for every blocking stream. */
    CK(cudaStreamCreate(&writer));
#endif
    CK(cudaMallocHost((void **)&b, n));
    fill(a, n, 1);
    fill(b, n, 2);
    CK(cudaMalloc(&dev, n));
    CK(cudaMemcpy(dev, a, n, cudaMemcpyHostToDevice));
    CK(cudaDeviceSynchronize());
    cemu_test_hold_stream(writer);
    CK(cudaMemcpyAsync(dev, b, n, cudaMemcpyHostToDevice, writer));
    pthread_create(&t, NULL, releaser, NULL);
    CK(cudaMemcpy(out, dev, n, cudaMemcpyDeviceToHost));
    __atomic_store_n(&copy_done, 1, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    CK(cudaDeviceSynchronize());
    sum(out, n);
    if (memcmp(out, a, n) == 0) {
        printf("ORDERING VIOLATED: the copy did not wait for the held stream\n");
        return 3;
    }
    expect_same(out, b, n, "ordering");
    expect_clean();
    return 0;
}

/* ---- memory the shim must leave alone ------------------------------------ */

static void passthrough(size_t n)
{
    unsigned char *pinned, *managed, *src = malloc(n), *dst = malloc(n);
    void *dev, *dev2;
    cudaStream_t s;
    cudaGraph_t g;
    cudaGraphExec_t ge;

    fill(src, n, 9);
    CK(cudaMalloc(&dev, n));
    CK(cudaMalloc(&dev2, n));
    CK(cudaMallocHost((void **)&pinned, n));
    CK(cudaMallocManaged((void **)&managed, n, cudaMemAttachGlobal));
    memcpy(pinned, src, n);
    CK(cudaMemcpy(dev, pinned, n, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dev2, dev, n, cudaMemcpyDeviceToDevice));
    CK(cudaMemcpy(managed, dev2, n, cudaMemcpyDeviceToHost));
    expect_same(src, managed, n, "pinned/device/managed");
    sum(managed, n);

    /* A capturing stream records the pageable copy into a graph. */
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    CK(cudaMemcpyAsync(dst, dev, n, cudaMemcpyDeviceToHost, s));
    CK(cudaStreamEndCapture(s, &g));
    memset(dst, 0, n);
    CK(cudaGraphInstantiate(&ge, g, 0));
    CK(cudaGraphLaunch(ge, s));
    CK(cudaStreamSynchronize(s));
    expect_same(src, dst, n, "captured copy");
    sum(dst, n);
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(g));
    CK(cudaStreamDestroy(s));
    CK(cudaFreeHost(pinned));
    CK(cudaFree(managed));
    CK(cudaFree(dev));
    CK(cudaFree(dev2));
    expect_clean();
}

/* The application's own error state and error returns, unchanged. */
static void errors(size_t n)
{
    unsigned char *buf = malloc(n);
    void *dev;
    cudaError_t e;

    CK(cudaMalloc(&dev, n));
    fill(buf, n, 5);
    /* An error the application has not read yet... */
    if (cudaMalloc(NULL, 16) != cudaErrorInvalidValue)
        exit(2);
    /* ...survives a successful copy, and the copy is still right. */
    CK(cudaMemcpy(dev, buf, n, cudaMemcpyHostToDevice));
    memset(buf, 0, n);
    CK(cudaMemcpy(buf, dev, n, cudaMemcpyDeviceToHost));
    sum(buf, n);
    if (cudaGetLastError() != cudaErrorInvalidValue || cudaGetLastError() != cudaSuccess) {
        fprintf(stderr, "pending error changed\n");
        exit(2);
    }
    /* A wrong direction fails as the runtime says, and sets the last error. */
    e = cudaMemcpy(buf, dev, n, cudaMemcpyHostToDevice);
    printf("wrong-kind %s\n", cudaGetErrorName(e));
    if (e == cudaSuccess || cudaGetLastError() != e)
        exit(2);
    /* Beyond the end of the allocation. */
    e = cudaMemcpy(buf, (char *)dev + 4096, n, cudaMemcpyDeviceToHost);
    printf("overrun %s\n", cudaGetErrorName(e));
    if (e == cudaSuccess || cudaGetLastError() != e)
        exit(2);
    expect_clean();
    CK(cudaFree(dev));
}

/*
 * cudaMemcpyAsync from pageable memory returns once the source was consumed,
 * without waiting for the device: on a held stream it must still return.
 * 128 KiB: within one bounce pool of the tests (2 x 64 KiB), as the driver's
 * own staging returns early only for what fits its staging buffers.
 */
static void asynchold(void)
{
    size_t n = 128 * 1024;
    unsigned char *src = malloc(n), *dst = malloc(n), *ref = malloc(n);
    void *dev;
    cudaStream_t s;

    fill(src, n, 40);
    memcpy(ref, src, n);
    CK(cudaMalloc(&dev, n));
    CK(cudaStreamCreate(&s));
    cemu_test_hold_stream(s);
    CK(cudaMemcpyAsync(dev, src, n, cudaMemcpyHostToDevice, s));
    memset(src, 0, n);
    cemu_test_release_stream(s);
    CK(cudaStreamSynchronize(s));
    CK(cudaMemcpy(dst, dev, n, cudaMemcpyDeviceToHost));
    expect_same(ref, dst, n, "async copy on a held stream");
    sum(dst, n);
    expect_clean();
}

/*
 * cudaMemcpy found by name at run time, as programs that dlsym the runtime
 * do: the unversioned lookup takes the default version wherever it is.
 */
static void by_dlsym(size_t n)
{
    typedef cudaError_t (*memcpy_fn)(void *, const void *, size_t, enum cudaMemcpyKind);
    memcpy_fn fn;
    void *sym = dlsym(RTLD_DEFAULT, "cudaMemcpy");
    unsigned char *src = malloc(n), *dst = malloc(n);
    void *dev;

    if (!sym)
        exit(2);
    memcpy(&fn, &sym, sizeof(fn));
    fill(src, n, 50);
    CK(cudaMalloc(&dev, n));
    CK(fn(dev, src, n, cudaMemcpyHostToDevice));
    CK(fn(dst, dev, n, cudaMemcpyDeviceToHost));
    expect_same(src, dst, n, "cudaMemcpy from dlsym");
    sum(dst, n);
    expect_clean();
}

/* ---- threads and fork -------------------------------------------------- */

static size_t thread_n;

static void *thread_main(void *arg)
{
    roundtrip(thread_n, (unsigned)(uintptr_t)arg);
    __atomic_fetch_xor(&combined, checksum, __ATOMIC_RELAXED);
    return NULL;
}

static void threads(size_t n, int count)
{
    pthread_t t[16];

    thread_n = n;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < count; i++)
            pthread_create(&t[i], NULL, thread_main, (void *)(uintptr_t)(i + 10 * round));
        for (int i = 0; i < count; i++)
            pthread_join(t[i], NULL);
    }
}

static int forked(const char *self, size_t n)
{
    unsigned char *buf = malloc(n);
    void *dev;
    pid_t pid;
    int status;
    char size[32];

    roundtrip(n, 20);
    CK(cudaMalloc(&dev, n));
    fill(buf, n, 21);
    CK(cudaMemcpy(dev, buf, n, cudaMemcpyHostToDevice));
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        /* The parent's runtime is not usable in the child: the call fails as
         * it does without teshim, and nothing hangs or crashes. */
        cudaError_t e = cudaMemcpy(buf, dev, n, cudaMemcpyDeviceToHost);
        if (e != cudaErrorInitializationError || cudaPeekAtLastError() != e) {
            fprintf(stderr, "child: cudaMemcpy gave %s\n", cudaGetErrorName(e));
            _exit(2);
        }
        /* exec starts a fresh process, still under the shim. */
        snprintf(size, sizeof(size), "%zu", n);
        execl(self, self, "roundtrip", size, (char *)NULL);
        _exit(2);
    }
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
        fprintf(stderr, "child failed\n");
        return 2;
    }
    /* The parent keeps working after the fork. */
    memset(buf, 0, n);
    CK(cudaMemcpy(buf, dev, n, cudaMemcpyDeviceToHost));
    unsigned char *ref = malloc(n);
    fill(ref, n, 21);
    expect_same(ref, buf, n, "parent after fork");
    sum(buf, n);
    CK(cudaFree(dev));
    return 0;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "roundtrip";
    size_t n = argc > 2 ? strtoull(argv[2], NULL, 0) : (1u << 20);
    int rc = 0;

    if (strcmp(mode, "roundtrip") == 0) {
        roundtrip(n, 0);
    } else if (strcmp(mode, "ordering") == 0) {
        rc = ordering(n);
    } else if (strcmp(mode, "passthrough") == 0) {
        passthrough(n);
    } else if (strcmp(mode, "errors") == 0) {
        errors(n);
    } else if (strcmp(mode, "threads") == 0) {
        threads(n, 8);
    } else if (strcmp(mode, "fork") == 0) {
        rc = forked(argv[0], n);
    } else if (strcmp(mode, "multidev") == 0) {
        /* One thread copying on every device in turn. */
        int count;
        CK(cudaGetDeviceCount(&count));
        for (int round = 0; round < 2; round++)
            for (int d = 0; d < count; d++) {
                CK(cudaSetDevice(d));
                roundtrip(n, (unsigned)(60 + d));
            }
    } else if (strcmp(mode, "capturereg") == 0) {
        /* A buffer copied often (so teshim's register cache may pin it),
         * then copied inside a stream capture: the capture must survive. */
        unsigned char *buf = malloc(n), *back = malloc(n);
        void *dev;
        cudaStream_t s;
        cudaGraph_t g;
        cudaGraphExec_t ge;
        CK(cudaMalloc(&dev, n));
        CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
        fill(buf, n, 80);
        for (int i = 0; i < 3; i++)
            CK(cudaMemcpy(dev, buf, n, cudaMemcpyHostToDevice));
        CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
        CK(cudaMemcpyAsync(back, dev, n, cudaMemcpyDeviceToHost, s));
        CK(cudaMemcpyAsync(dev, buf, n, cudaMemcpyHostToDevice, s));
        CK(cudaStreamEndCapture(s, &g));
        CK(cudaGraphInstantiate(&ge, g, 0));
        CK(cudaGraphLaunch(ge, s));
        CK(cudaStreamSynchronize(s));
        expect_same(buf, back, n, "captured copies");
        sum(back, n);
        expect_clean();
    } else if (strcmp(mode, "appregister") == 0) {
        /* The application registers a buffer it copied before: the caveat
         * of cuda.register_cache (the range may already be registered). */
        unsigned char *buf = malloc(n);
        void *dev;
        CK(cudaMalloc(&dev, n));
        fill(buf, n, 70);
        for (int i = 0; i < 3; i++)
            CK(cudaMemcpy(dev, buf, n, cudaMemcpyHostToDevice));
        cudaError_t e = cudaHostRegister(buf, n, cudaHostRegisterDefault);
        printf("cudaHostRegister %s\n", cudaGetErrorName(e));
        cudaGetLastError();
    } else if (strcmp(mode, "dlsym") == 0) {
        by_dlsym(n);
    } else if (strcmp(mode, "asynchold") == 0) {
        asynchold();
    } else if (strcmp(mode, "allocfail") == 0) {
        cemu_test_fail_host_alloc(-1);
        roundtrip(n, 30);
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    printf("checksum %016llx\n", (unsigned long long)(checksum ^ combined));
    if (getenv("CEMU_HOST_REPORT")) {
        /* What the runtime saw: device<->host copies by host memory type. */
        uint64_t pageable = cemu_test_copies(CEMU_H2D, CEMU_HOST_PAGEABLE) +
                            cemu_test_copies(CEMU_D2H, CEMU_HOST_PAGEABLE);
        uint64_t pinned = cemu_test_copies(CEMU_H2D, CEMU_HOST_PINNED) +
                          cemu_test_copies(CEMU_D2H, CEMU_HOST_PINNED);
        printf("runtime pageable-copies %llu pinned-copies %llu\n", (unsigned long long)pageable,
               (unsigned long long)pinned);
        printf("runtime pinned-bytes %llu\n", (unsigned long long)cemu_test_pinned_bytes());
    }
    return rc;
}
