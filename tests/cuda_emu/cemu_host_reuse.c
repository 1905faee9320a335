/*
 * A host program that reuses host memory the way real applications do,
 * built like an unmodified CUDA application (real headers, libcudart by
 * soname). Each mode copies a 64 MiB buffer often enough for teshim's
 * register cache to pin it, then lets the pages under it go (munmap,
 * free, madvise, mremap, brk, shmdt) and puts new memory at the same
 * address; every later copy, both directions, must reach the new pages.
 * A registration that outlived the pages it pinned sends the old contents
 * to the device and never delivers to the new memory (the emulated
 * runtime pins pages as the driver does), so the checks here fail.
 *
 * usage: cemu_host_reuse MODE
 *   mmap madvise mremap brk shm malloc  the reuse cases above
 *   fixed        one new page mapped with MAP_FIXED into the cached buffer
 *   appregister  the application registers, inspects and unregisters a
 *                buffer teshim may have cached: prints what the runtime said
 *   static       copies from a static buffer (memory nobody can watch)
 *   grow         copies of growing prefixes of one buffer (1 MiB .. 64 MiB)
 * Prints the runtime's answers and "checksum HEX"; exit status 0 = every
 * check passed, 2 = stale or wrong data (message on stderr), 4 = the
 * memory could not be put at the same address again (the case cannot be
 * made on this system).
 */
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <unistd.h>

#define N ((size_t)64 << 20)

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorName(e_));   \
            exit(2);                                                                               \
        }                                                                                          \
    } while (0)

static void *dev;
static unsigned char *back;
static uint64_t checksum = 1469598103934665603ull;
static unsigned char static_buf[N];

static unsigned char pattern(size_t i, unsigned seed)
{
    return (unsigned char)((i * 131u + seed * 7u + (i >> 12)) & 0xff);
}

static void fill(unsigned char *p, unsigned seed)
{
    for (size_t i = 0; i < N; i++)
        p[i] = pattern(i, seed);
}

static void expect_fill(const unsigned char *p, unsigned seed, const char *what)
{
    for (size_t i = 0; i < N; i++)
        if (p[i] != pattern(i, seed)) {
            fprintf(stderr, "stale data: %s: byte %zu is %u, want %u\n", what, i, p[i],
                    pattern(i, seed));
            exit(2);
        }
    for (size_t i = 0; i < N; i += 4096)
        checksum = (checksum ^ p[i]) * 1099511628211ull;
}

static void expect_clean(void)
{
    cudaError_t e = cudaPeekAtLastError();

    if (e != cudaSuccess) {
        fprintf(stderr, "last error left set: %s\n", cudaGetErrorName(e));
        exit(2);
    }
}

/* The device must hold fill(seed). */
static void check_dev(unsigned seed, const char *what)
{
    CK(cudaMemcpy(back, dev, N, cudaMemcpyDeviceToHost));
    expect_fill(back, seed, what);
}

/* Copy buf often, both ways, so that a register cache pins it. */
static void warm(unsigned char *buf, unsigned seed)
{
    fill(buf, seed);
    for (int i = 0; i < 4; i++)
        CK(cudaMemcpy(dev, buf, N, cudaMemcpyHostToDevice));
    for (int i = 0; i < 2; i++)
        CK(cudaMemcpy(buf, dev, N, cudaMemcpyDeviceToHost));
    expect_fill(buf, seed, "warm-up round trip");
    check_dev(seed, "warm-up on the device");
}

/* buf now has new pages: copies must read and write them, sync and async. */
static void after_reuse(unsigned char *buf, unsigned seed, const char *what)
{
    char msg[128];

    fill(buf, seed);
    CK(cudaMemcpy(dev, buf, N, cudaMemcpyHostToDevice));
    snprintf(msg, sizeof(msg), "%s: host-to-device copy of the new memory", what);
    check_dev(seed, msg);
    fill(back, seed + 1);
    CK(cudaMemcpy(dev, back, N, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(buf, dev, N, cudaMemcpyDeviceToHost));
    snprintf(msg, sizeof(msg), "%s: device-to-host copy into the new memory", what);
    expect_fill(buf, seed + 1, msg);
    fill(buf, seed + 2);
    CK(cudaMemcpyAsync(dev, buf, N, cudaMemcpyHostToDevice, 0));
    CK(cudaStreamSynchronize(0));
    snprintf(msg, sizeof(msg), "%s: async host-to-device copy of the new memory", what);
    check_dev(seed + 2, msg);
}

static unsigned char *map(void *at)
{
    unsigned char *p = mmap(at, N, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | (at ? MAP_FIXED_NOREPLACE : 0), -1, 0);

    if (p == MAP_FAILED || (at && p != at)) {
        fprintf(stderr, "cannot map %zu bytes at %p\n", N, at);
        exit(4);
    }
    return p;
}

static void attrs(const char *when, const void *p)
{
    struct cudaPointerAttributes a;

    CK(cudaPointerGetAttributes(&a, p));
    printf("%s: type %d device %d host %s\n", when, (int)a.type, a.device,
           a.hostPointer ? "set" : "null");
}

static void app_register(void)
{
    unsigned char *buf = malloc(N);

    if (!buf)
        exit(2);
    warm(buf, 40);
    attrs("before cudaHostRegister", buf);
    printf("cudaHostRegister %s\n", cudaGetErrorName(cudaHostRegister(buf, N, 0)));
    attrs("registered", buf + 100);
    after_reuse(buf, 41, "registered by the application");
    printf("cudaHostUnregister %s\n", cudaGetErrorName(cudaHostUnregister(buf)));
    attrs("unregistered", buf);
    printf("cudaHostUnregister again %s\n", cudaGetErrorName(cudaHostUnregister(buf)));
    cudaGetLastError();
    warm(buf, 42);
    free(buf);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "mmap";
    unsigned char *buf, *other;

    back = malloc(N);
    if (!back)
        return 2;
    CK(cudaMalloc(&dev, N));
    if (strcmp(mode, "mmap") == 0) {
        buf = map(NULL);
        warm(buf, 1);
        munmap(buf, N);
        after_reuse(map(buf), 2, "munmap + mmap");
    } else if (strcmp(mode, "fixed") == 0) {
        /* A mapping far smaller than any the cache watches replaces one
         * page of the buffer: the registration over it must go too. */
        buf = map(NULL);
        warm(buf, 16);
        if (mmap(buf + 4096, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                 -1, 0) != buf + 4096)
            return 4;
        after_reuse(buf, 17, "mmap(MAP_FIXED) of one page");
    } else if (strcmp(mode, "malloc") == 0) {
        /* 64 MiB is above glibc's largest mmap threshold: free unmaps it
         * inside libc (not through the PLT) and malloc maps it again. */
        uintptr_t was;
        buf = malloc(N);
        if (!buf)
            return 2;
        warm(buf, 3);
        was = (uintptr_t)buf;
        free(buf);
        other = malloc(N);
        if ((uintptr_t)other != was) {
            fprintf(stderr, "malloc gave %p, not %#jx again\n", (void *)other, (uintmax_t)was);
            return 4;
        }
        after_reuse(other, 4, "free + malloc");
        free(other);
    } else if (strcmp(mode, "madvise") == 0) {
        buf = map(NULL);
        warm(buf, 5);
        if (madvise(buf, N, MADV_DONTNEED) != 0)
            return 2;
        after_reuse(buf, 6, "madvise(MADV_DONTNEED)");
    } else if (strcmp(mode, "mremap") == 0) {
        buf = map(NULL);
        other = map(NULL);
        warm(buf, 7);
        /* The pages move away; new memory takes the old address. */
        if (mremap(buf, N, N, MREMAP_MAYMOVE | MREMAP_FIXED, other) != other)
            return 2;
        expect_fill(other, 7, "pages moved by mremap");
        after_reuse(map(buf), 8, "mremap away + mmap");
    } else if (strcmp(mode, "brk") == 0) {
        buf = sbrk((intptr_t)N);
        if (buf == (void *)-1)
            return 4;
        warm(buf, 9);
        if (sbrk(-(intptr_t)N) == (void *)-1 || sbrk((intptr_t)N) != buf)
            return 4;
        after_reuse(buf, 10, "brk shrink + grow");
    } else if (strcmp(mode, "shm") == 0) {
        int id = shmget(IPC_PRIVATE, N, IPC_CREAT | 0600), id2;
        if (id < 0)
            return 4;
        buf = shmat(id, NULL, 0);
        shmctl(id, IPC_RMID, NULL);
        if (buf == (void *)-1)
            return 4;
        warm(buf, 11);
        shmdt(buf);
        id2 = shmget(IPC_PRIVATE, N, IPC_CREAT | 0600);
        if (id2 < 0)
            return 4;
        other = shmat(id2, buf, 0);
        shmctl(id2, IPC_RMID, NULL);
        if (other != buf)
            return 4;
        after_reuse(other, 12, "shmdt + shmat");
        shmdt(other);
    } else if (strcmp(mode, "appregister") == 0) {
        app_register();
    } else if (strcmp(mode, "grow") == 0) {
        /* Each prefix overlaps the registration of the one before. */
        buf = malloc(N);
        if (!buf)
            return 2;
        fill(buf, 15);
        for (size_t n = (size_t)1 << 20; n <= N; n *= 2)
            for (int i = 0; i < 3; i++) {
                CK(cudaMemcpy(dev, buf, n, cudaMemcpyHostToDevice));
                CK(cudaMemcpy(back, dev, n, cudaMemcpyDeviceToHost));
                if (memcmp(back, buf, n) != 0) {
                    fprintf(stderr, "stale data: prefix of %zu bytes\n", n);
                    return 2;
                }
            }
        check_dev(15, "the whole buffer after growing copies");
        free(buf);
    } else if (strcmp(mode, "static") == 0) {
        warm(static_buf, 13);
        after_reuse(static_buf, 14, "static buffer");
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    expect_clean();
    CK(cudaFree(dev));
    printf("checksum %016llx\n", (unsigned long long)checksum);
    return 0;
}
