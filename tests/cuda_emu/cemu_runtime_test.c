/*
 * The emulated CUDA runtime itself: memory kinds, pinned-range errors, the
 * cross-stream rules, events, synchronous-copy semantics, the last-error
 * state, test controls, and the ABI values teshim writes out by hand (teshim/cuda_abi.h).
 */
#include <check.h>
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cemu_test.h"
#include "teshim/cuda_abi.h"

extern __typeof__(cudaMemcpyAsync) cudaMemcpyAsync_ptsz;
extern __typeof__(cudaMemcpy) cudaMemcpy_ptds;
extern __typeof__(cudaMemsetAsync) cudaMemsetAsync_ptsz;
extern __typeof__(cudaMemcpy2D) cudaMemcpy2D_ptds;
extern __typeof__(cudaMemcpy2DAsync) cudaMemcpy2DAsync_ptsz;

#define N (256 * 1024)

static void *dev_alloc(void)
{
    void *p;

    ck_assert_int_eq(cudaMalloc(&p, N), cudaSuccess);
    return p;
}

/* An event recorded on s right now: tells whether s's work so far ran. */
static cudaEvent_t mark(cudaStream_t s)
{
    cudaEvent_t e;

    ck_assert_int_eq(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), cudaSuccess);
    ck_assert_int_eq(cudaEventRecord(e, s), cudaSuccess);
    return e;
}

/* Every integer of teshim/cuda_abi.h against the real headers' value. */
#define ABI(ours, real)                                                                            \
    {                                                                                              \
        ours, real, #ours " = " #real                                                              \
    }
static const struct {
    long ours, real;
    const char *what;
} abi_ints[] = {
    ABI(CUABI_SUCCESS, cudaSuccess),
    ABI(CUABI_ERROR_SYMBOL_NOT_FOUND, cudaErrorSharedObjectSymbolNotFound),
    ABI(CUABI_MEM_UNREGISTERED, cudaMemoryTypeUnregistered),
    ABI(CUABI_MEM_HOST, cudaMemoryTypeHost),
    ABI(CUABI_MEM_DEVICE, cudaMemoryTypeDevice),
    ABI(CUABI_MEM_MANAGED, cudaMemoryTypeManaged),
    ABI(CUABI_CAPTURE_NONE, cudaStreamCaptureStatusNone),
    ABI(CUABI_HOST_REGISTER_DEFAULT, cudaHostRegisterDefault),
    ABI(CUABI_HOST_REGISTER_PORTABLE, cudaHostRegisterPortable),
    ABI(CUABI_MEMCPY_H2H, cudaMemcpyHostToHost),
    ABI(CUABI_MEMCPY_H2D, cudaMemcpyHostToDevice),
    ABI(CUABI_MEMCPY_D2H, cudaMemcpyDeviceToHost),
    ABI(CUABI_MEMCPY_D2D, cudaMemcpyDeviceToDevice),
    ABI(CUABI_MEMCPY_DEFAULT, cudaMemcpyDefault),
    ABI(CUABI_EVENT_DISABLE_TIMING, cudaEventDisableTiming),
    ABI(CUABI_EVENT_DISABLE_TIMING, CU_EVENT_DISABLE_TIMING),
    ABI(CUABI_STREAM_NON_BLOCKING, cudaStreamNonBlocking),
    ABI(CUABI_ERROR_MEMORY_ALLOCATION, cudaErrorMemoryAllocation),
    ABI(CUABI_ERROR_NOT_READY, cudaErrorNotReady),
    ABI(CUABI_CU_SUCCESS, CUDA_SUCCESS),
    ABI(CUABI_CU_ERROR_INVALID_VALUE, CUDA_ERROR_INVALID_VALUE),
    ABI(CUABI_CU_ERROR_NOT_FOUND, CUDA_ERROR_NOT_FOUND),
    ABI(CUABI_ERROR_MEMORY_ALLOCATION, CUDA_ERROR_OUT_OF_MEMORY),
    ABI(CUABI_ERROR_NOT_READY, CUDA_ERROR_NOT_READY),
    ABI(CUABI_CU_POINTER_ATTRIBUTE_MEMORY_TYPE, CU_POINTER_ATTRIBUTE_MEMORY_TYPE),
    ABI(CUABI_CU_POINTER_ATTRIBUTE_IS_MANAGED, CU_POINTER_ATTRIBUTE_IS_MANAGED),
    ABI(CUABI_CU_MEMORYTYPE_HOST, CU_MEMORYTYPE_HOST),
    ABI(CUABI_CU_MEMORYTYPE_DEVICE, CU_MEMORYTYPE_DEVICE),
    ABI(CUABI_CU_MEMORYTYPE_ARRAY, CU_MEMORYTYPE_ARRAY),
    ABI(CUABI_CU_MEMORYTYPE_UNIFIED, CU_MEMORYTYPE_UNIFIED),
    ABI(CUABI_CU_GET_PROC_ADDRESS_PER_THREAD, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM)};
#undef ABI

START_TEST(abi_values)
{
    for (size_t i = 0; i < sizeof(abi_ints) / sizeof(abi_ints[0]); i++)
        ck_assert_msg(abi_ints[i].ours == abi_ints[i].real, "%s: %ld, the headers say %ld",
                      abi_ints[i].what, abi_ints[i].ours, abi_ints[i].real);
    ck_assert_ptr_eq(CUABI_STREAM_LEGACY, (void *)cudaStreamLegacy);
    ck_assert_ptr_eq(CUABI_STREAM_PER_THREAD, (void *)cudaStreamPerThread);
    ck_assert_ptr_eq(CUABI_STREAM_LEGACY, (void *)CU_STREAM_LEGACY);
    ck_assert_ptr_eq(CUABI_STREAM_PER_THREAD, (void *)CU_STREAM_PER_THREAD);
    ck_assert_uint_ge(sizeof(struct cuabi_ptr_attrs), sizeof(struct cudaPointerAttributes));
    ck_assert_uint_eq(offsetof(struct cuabi_ptr_attrs, type),
                      offsetof(struct cudaPointerAttributes, type));
    ck_assert_uint_eq(offsetof(struct cuabi_ptr_attrs, devicePointer),
                      offsetof(struct cudaPointerAttributes, devicePointer));
    ck_assert_uint_eq(offsetof(struct cuabi_ptr_attrs, hostPointer),
                      offsetof(struct cudaPointerAttributes, hostPointer));
    ck_assert_uint_eq(sizeof(enum cudaMemcpyKind), sizeof(int));
    ck_assert_uint_eq(sizeof(cudaError_t), sizeof(int));
    /* CUDA_MEMCPY2D, member by member. */
    ck_assert_uint_eq(sizeof(struct cuabi_memcpy2d), sizeof(CUDA_MEMCPY2D));
    ck_assert_uint_eq(sizeof(CUmemorytype), sizeof(int));
#define M2D_AT(m) ck_assert_uint_eq(offsetof(struct cuabi_memcpy2d, m), offsetof(CUDA_MEMCPY2D, m))
    M2D_AT(srcXInBytes);
    M2D_AT(srcY);
    M2D_AT(srcMemoryType);
    M2D_AT(srcHost);
    M2D_AT(srcDevice);
    M2D_AT(srcArray);
    M2D_AT(srcPitch);
    M2D_AT(dstXInBytes);
    M2D_AT(dstY);
    M2D_AT(dstMemoryType);
    M2D_AT(dstHost);
    M2D_AT(dstDevice);
    M2D_AT(dstArray);
    M2D_AT(dstPitch);
    M2D_AT(WidthInBytes);
    M2D_AT(Height);
#undef M2D_AT
    ck_assert_uint_eq(sizeof(((struct cuabi_memcpy2d *)0)->srcDevice), sizeof(CUdeviceptr));
}
END_TEST

START_TEST(device_memory_faults_on_host_access)
{
    volatile char *p = dev_alloc();

    (void)p[0]; /* SIGSEGV, as a host access to GPU memory */
}
END_TEST

START_TEST(pointer_kinds)
{
    struct cudaPointerAttributes a;
    void *d = dev_alloc(), *ph, *ha, *m;
    char *pageable = malloc(N);
    static char reg[3 * 4096] __attribute__((aligned(4096)));

    ck_assert_int_eq(cudaMallocHost(&ph, N), cudaSuccess);
    ck_assert_int_eq(cudaHostAlloc(&ha, N, cudaHostAllocDefault), cudaSuccess);
    ck_assert_int_eq(cudaMallocManaged(&m, N, cudaMemAttachGlobal), cudaSuccess);
    ck_assert_int_eq(cudaHostRegister(reg, sizeof(reg), 0), cudaSuccess);
    ck_assert_int_eq(cudaPointerGetAttributes(&a, (char *)d + 100), cudaSuccess);
    ck_assert_int_eq(a.type, cudaMemoryTypeDevice);
    ck_assert_int_eq(cudaPointerGetAttributes(&a, ph), cudaSuccess);
    ck_assert_int_eq(a.type, cudaMemoryTypeHost);
    ck_assert_int_eq(cudaPointerGetAttributes(&a, (char *)ha + N - 1), cudaSuccess);
    ck_assert_int_eq(a.type, cudaMemoryTypeHost);
    ck_assert_int_eq(cudaPointerGetAttributes(&a, reg + 5000), cudaSuccess);
    ck_assert_int_eq(a.type, cudaMemoryTypeHost);
    ck_assert_int_eq(cudaPointerGetAttributes(&a, m), cudaSuccess);
    ck_assert_int_eq(a.type, cudaMemoryTypeManaged);
    ck_assert_int_eq(cudaPointerGetAttributes(&a, pageable), cudaSuccess);
    ck_assert_int_eq(a.type, cudaMemoryTypeUnregistered);
    ck_assert_uint_ge(cemu_test_pinned_bytes(), 2 * N + sizeof(reg));
    ck_assert_int_eq(cudaHostUnregister(reg), cudaSuccess);
    ck_assert_int_eq(cudaPointerGetAttributes(&a, reg), cudaSuccess);
    ck_assert_int_eq(a.type, cudaMemoryTypeUnregistered);
    free(pageable);
}
END_TEST

START_TEST(pinned_range_errors)
{
    static char reg[4 * 4096] __attribute__((aligned(4096)));
    void *ph;

    ck_assert_int_eq(cudaHostRegister(reg, 2 * 4096, 0), cudaSuccess);
    ck_assert_int_eq(cudaHostRegister(reg + 4096, 2 * 4096, 0),
                     cudaErrorHostMemoryAlreadyRegistered);
    ck_assert_int_eq(cudaHostUnregister(reg + 3 * 4096), cudaErrorHostMemoryNotRegistered);
    ck_assert_int_eq(cudaMallocHost(&ph, 4096), cudaSuccess);
    ck_assert_int_eq(cudaHostRegister(ph, 4096, 0), cudaErrorHostMemoryAlreadyRegistered);
    ck_assert_int_eq(cudaHostUnregister(ph), cudaErrorHostMemoryNotRegistered);
    ck_assert_int_eq(cudaFreeHost(reg), cudaErrorInvalidValue);
    ck_assert_int_eq(cudaHostUnregister(reg), cudaSuccess);
    ck_assert_int_eq(cudaHostUnregister(reg), cudaErrorHostMemoryNotRegistered);
    ck_assert_int_eq(cudaFreeHost(ph), cudaSuccess);
}
END_TEST

/*
 * Registration pins pages: while the application keeps its mapping, copies
 * of a registered range see what it writes; once it unmaps the range and
 * maps new memory at the same address, copies of the still-registered range
 * read and write the old pages (as the H200 did), and after unregistering
 * they reach the new ones.
 */
START_TEST(registered_pages_stay_with_the_registration)
{
    const size_t n = 1 << 20;
    void *d = NULL;
    unsigned char *buf, *again, *back = malloc(n);

    ck_assert_int_eq(cudaMalloc(&d, n), cudaSuccess);
    buf = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(buf, MAP_FAILED);
    memset(buf, 0xA1, n);
    ck_assert_int_eq(cudaHostRegister(buf, n, 0), cudaSuccess);
    ck_assert_uint_eq(buf[n - 1], 0xA1); /* registering keeps the contents */
    memset(buf, 0xA2, n);                /* the same pages: copies see it */
    ck_assert_int_eq(cudaMemcpy(d, buf, n, cudaMemcpyHostToDevice), cudaSuccess);
    ck_assert_int_eq(cudaMemcpy(back, d, n, cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_uint_eq(back[0], 0xA2);

    ck_assert_int_eq(munmap(buf, n), 0);
    again = mmap(buf, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                 -1, 0);
    ck_assert_ptr_eq(again, buf);
    memset(again, 0xB1, n);
    /* Still registered: the copy reads the old pages, and writes them. */
    ck_assert_int_eq(cudaMemcpy(d, again, n, cudaMemcpyHostToDevice), cudaSuccess);
    ck_assert_int_eq(cudaMemcpy(back, d, n, cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_uint_eq(back[0], 0xA2);
    ck_assert_uint_eq(back[n - 1], 0xA2);
    ck_assert_int_eq(cudaMemset(d, 0xC1, n), cudaSuccess);
    ck_assert_int_eq(cudaMemcpy(again, d, n, cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_uint_eq(again[0], 0xB1);

    ck_assert_int_eq(cudaHostUnregister(buf), cudaSuccess);
    ck_assert_int_eq(cudaMemcpy(d, again, n, cudaMemcpyHostToDevice), cudaSuccess);
    ck_assert_int_eq(cudaMemcpy(back, d, n, cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_uint_eq(back[0], 0xB1);
    munmap(again, n);
    free(back);
    cudaFree(d);
}
END_TEST

START_TEST(registering_unmapped_memory_fails)
{
    const size_t n = 1 << 16;
    char *p = mmap(NULL, n, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    ck_assert_ptr_ne(p, MAP_FAILED);
    ck_assert_int_eq(cudaHostRegister(p, n, 0), cudaErrorInvalidValue);
    ck_assert_int_eq(munmap(p, n), 0);
    ck_assert_int_eq(cudaHostRegister(p, n, 0), cudaErrorInvalidValue);
    cudaGetLastError();
}
END_TEST

START_TEST(last_error_state)
{
    ck_assert_int_eq(cudaGetLastError(), cudaSuccess);
    ck_assert_int_eq(cudaMalloc(NULL, 16), cudaErrorInvalidValue);
    ck_assert_int_eq(cudaPeekAtLastError(), cudaErrorInvalidValue);
    ck_assert_int_eq(cudaPeekAtLastError(), cudaErrorInvalidValue);
    /* A successful call leaves it. */
    void *d = dev_alloc();
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(cudaGetLastError(), cudaErrorInvalidValue);
    ck_assert_int_eq(cudaGetLastError(), cudaSuccess);
    ck_assert_int_eq(cudaPeekAtLastError(), cudaSuccess);
}
END_TEST

START_TEST(legacy_waits_for_blocking_streams)
{
    cudaStream_t s;
    cudaEvent_t e;

    ck_assert_int_eq(cudaStreamCreate(&s), cudaSuccess);
    cemu_test_hold_stream(s);
    ck_assert_int_eq(cudaMemsetAsync(dev_alloc(), 1, N, s), cudaSuccess);
    e = mark(0);
    ck_assert_int_eq(cudaEventQuery(e), cudaErrorNotReady);
    ck_assert_uint_eq(cemu_test_blocked_ops(), 1);
    /* NotReady is not an error the application reads later. */
    ck_assert_int_eq(cudaPeekAtLastError(), cudaSuccess);
    cemu_test_release_stream(s);
    ck_assert_int_eq(cudaEventSynchronize(e), cudaSuccess);
    ck_assert_int_eq(cudaEventQuery(e), cudaSuccess);
    ck_assert_int_eq(cudaEventDestroy(e), cudaSuccess);
}
END_TEST

START_TEST(blocking_waits_for_legacy)
{
    cudaStream_t s;
    cudaEvent_t e;

    ck_assert_int_eq(cudaStreamCreate(&s), cudaSuccess);
    cemu_test_hold_stream(cudaStreamLegacy);
    ck_assert_int_eq(cudaMemsetAsync(dev_alloc(), 1, N, 0), cudaSuccess);
    e = mark(s);
    ck_assert_int_eq(cudaEventQuery(e), cudaErrorNotReady);
    cemu_test_release_stream(cudaStreamLegacy);
    ck_assert_int_eq(cudaStreamSynchronize(s), cudaSuccess);
    ck_assert_int_eq(cudaEventQuery(e), cudaSuccess);
    ck_assert_int_eq(cudaEventDestroy(e), cudaSuccess);
}
END_TEST

START_TEST(nonblocking_and_peer_streams_do_not_wait)
{
    cudaStream_t nb, s1, s2;

    ck_assert_int_eq(cudaStreamCreateWithFlags(&nb, cudaStreamNonBlocking), cudaSuccess);
    ck_assert_int_eq(cudaStreamCreate(&s1), cudaSuccess);
    ck_assert_int_eq(cudaStreamCreate(&s2), cudaSuccess);
    cemu_test_hold_stream(cudaStreamLegacy);
    cemu_test_hold_stream(s1);
    ck_assert_int_eq(cudaMemsetAsync(dev_alloc(), 1, N, 0), cudaSuccess);
    ck_assert_int_eq(cudaMemsetAsync(dev_alloc(), 1, N, s1), cudaSuccess);
    ck_assert_int_eq(cudaMemsetAsync(dev_alloc(), 2, N, nb), cudaSuccess);
    ck_assert_int_eq(cudaStreamSynchronize(nb), cudaSuccess);
    cemu_test_release_stream(cudaStreamLegacy);
    /* Two blocking streams do not wait for each other. */
    ck_assert_int_eq(cudaMemsetAsync(dev_alloc(), 3, N, s2), cudaSuccess);
    ck_assert_int_eq(cudaStreamSynchronize(s2), cudaSuccess);
    ck_assert_int_eq(cudaStreamQuery(s1), cudaErrorNotReady);
    cemu_test_release_stream(s1);
    ck_assert_int_eq(cudaDeviceSynchronize(), cudaSuccess);
}
END_TEST

START_TEST(per_thread_stream_waits_for_legacy_only)
{
    cudaStream_t s;
    cudaEvent_t e;

    ck_assert_int_eq(cudaStreamCreate(&s), cudaSuccess);
    cemu_test_hold_stream(s);
    ck_assert_int_eq(cudaMemsetAsync(dev_alloc(), 1, N, s), cudaSuccess);
    /* Not a blocking stream's peer: runs while s is held. */
    ck_assert_int_eq(cudaMemsetAsync_ptsz(dev_alloc(), 1, N, 0), cudaSuccess);
    ck_assert_int_eq(cudaStreamSynchronize(cudaStreamPerThread), cudaSuccess);
    cemu_test_release_stream(s);
    cemu_test_hold_stream(cudaStreamLegacy);
    ck_assert_int_eq(cudaMemsetAsync(dev_alloc(), 1, N, 0), cudaSuccess);
    e = mark(cudaStreamPerThread);
    ck_assert_int_eq(cudaEventQuery(e), cudaErrorNotReady);
    cemu_test_release_stream(cudaStreamLegacy);
    ck_assert_int_eq(cudaEventSynchronize(e), cudaSuccess);
    ck_assert_int_eq(cudaEventDestroy(e), cudaSuccess);
}
END_TEST

START_TEST(stream_wait_event)
{
    cudaStream_t a, b;
    cudaEvent_t e, done;

    ck_assert_int_eq(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking), cudaSuccess);
    ck_assert_int_eq(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking), cudaSuccess);
    cemu_test_hold_stream(a);
    ck_assert_int_eq(cudaMemsetAsync(dev_alloc(), 1, N, a), cudaSuccess);
    e = mark(a);
    ck_assert_int_eq(cudaStreamWaitEvent(b, e, 0), cudaSuccess);
    done = mark(b);
    ck_assert_int_eq(cudaEventQuery(done), cudaErrorNotReady);
    cemu_test_release_stream(a);
    ck_assert_int_eq(cudaEventSynchronize(done), cudaSuccess);
    ck_assert_int_eq(cudaEventDestroy(e), cudaSuccess);
    ck_assert_int_eq(cudaEventDestroy(done), cudaSuccess);
}
END_TEST

START_TEST(copy_semantics)
{
    cudaStream_t s;
    char *src = malloc(N), *dst = malloc(N), *pinned;
    void *d = dev_alloc();
    cudaEvent_t e;

    ck_assert_int_eq(cudaStreamCreate(&s), cudaSuccess);
    ck_assert_int_eq(cudaMallocHost((void **)&pinned, N), cudaSuccess);
    cemu_test_reset_counters();
    memset(src, 7, N);
    /* Async from pageable: staged at the call, even on a held stream. */
    cemu_test_hold_stream(s);
    ck_assert_int_eq(cudaMemcpyAsync(d, src, N, cudaMemcpyHostToDevice, s), cudaSuccess);
    memset(src, 8, N);
    /* Async to pinned: returns at once, completes later. */
    ck_assert_int_eq(cudaMemcpyAsync(pinned, d, N, cudaMemcpyDeviceToHost, s), cudaSuccess);
    e = mark(s);
    ck_assert_int_eq(cudaEventQuery(e), cudaErrorNotReady);
    cemu_test_release_stream(s);
    ck_assert_int_eq(cudaStreamSynchronize(s), cudaSuccess);
    ck_assert_int_eq(pinned[0], 7);
    ck_assert_int_eq(pinned[N - 1], 7);
    /* Synchronous D2H: the data is there when it returns. */
    ck_assert_int_eq(cudaMemcpy(dst, d, N, cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_int_eq(memcmp(dst, pinned, N), 0);
    ck_assert_uint_eq(cemu_test_copies(CEMU_H2D, CEMU_HOST_PAGEABLE), 1);
    ck_assert_uint_eq(cemu_test_copies(CEMU_D2H, CEMU_HOST_PINNED), 1);
    ck_assert_uint_eq(cemu_test_copies(CEMU_D2H, CEMU_HOST_PAGEABLE), 1);
    ck_assert_uint_eq(cemu_test_copy_bytes(CEMU_D2H, CEMU_HOST_PAGEABLE), N);
    /* Wrong direction and overruns fail and set the last error. */
    ck_assert_int_eq(cudaMemcpy(dst, d, N, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
    ck_assert_int_eq(cudaMemcpy(dst, (char *)d + 1, N, cudaMemcpyDeviceToHost),
                     cudaErrorInvalidValue);
    ck_assert_int_eq(cudaGetLastError(), cudaErrorInvalidValue);
    ck_assert_int_eq(cudaEventDestroy(e), cudaSuccess);
    free(src);
    free(dst);
}
END_TEST

/* cudaMemcpy2D: rows at their pitches, bytes between rows untouched. */
START_TEST(copy_2d_rows_and_pitches)
{
    enum { W = 100, HP = 128, DP = 256, H = 300 };
    unsigned char *src = malloc(H * HP), *dst = malloc(H * HP), *pinned;
    unsigned char *d = dev_alloc(), *d2 = dev_alloc();

    for (size_t i = 0; i < H * HP; i++)
        src[i] = (unsigned char)(i * 13 + 1);
    ck_assert_int_eq(cudaMemset(d, 0x11, N), cudaSuccess);
    cemu_test_reset_counters();
    ck_assert_int_eq(cudaMemcpy2D(d, DP, src, HP, W, H, cudaMemcpyHostToDevice), cudaSuccess);
    ck_assert_int_eq(cudaMemcpy(dst, d, DP * 2, cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_int_eq(memcmp(dst, src, W), 0);
    ck_assert_int_eq(dst[W], 0x11);
    ck_assert_int_eq(dst[DP - 1], 0x11);
    ck_assert_int_eq(memcmp(dst + DP, src + HP, W), 0);
    /* Back with the pitches swapped around, and D2D, and cudaMemcpyDefault. */
    ck_assert_int_eq(cudaMemcpy2D(d2, W, d, DP, W, H, cudaMemcpyDeviceToDevice), cudaSuccess);
    memset(dst, 0x22, H * HP);
    ck_assert_int_eq(cudaMemcpy2D(dst, HP, d2, W, W, H, cudaMemcpyDefault), cudaSuccess);
    for (size_t r = 0; r < H; r++) {
        ck_assert_int_eq(memcmp(dst + r * HP, src + r * HP, W), 0);
        ck_assert_int_eq(dst[r * HP + W], 0x22);
    }
    ck_assert_uint_eq(cemu_test_copies(CEMU_H2D, CEMU_HOST_PAGEABLE), 1);
    ck_assert_uint_eq(cemu_test_copy_bytes(CEMU_H2D, CEMU_HOST_PAGEABLE), W * H);
    ck_assert_uint_eq(cemu_test_copies(CEMU_D2D, CEMU_HOST_NONE), 1);
    ck_assert_uint_eq(cemu_test_copies(CEMU_D2H, CEMU_HOST_PAGEABLE), 2);
    ck_assert_uint_eq(cemu_test_copies_2d(), 3);
    /* Pinned host memory counts as pinned. */
    ck_assert_int_eq(cudaMallocHost((void **)&pinned, H * W), cudaSuccess);
    ck_assert_int_eq(cudaMemcpy2D(pinned, W, d2, W, W, H, cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_uint_eq(cemu_test_copies(CEMU_D2H, CEMU_HOST_PINNED), 1);
    ck_assert_int_eq(memcmp(pinned + W, src + HP, W), 0);
    ck_assert_int_eq(cudaFreeHost(pinned), cudaSuccess);
    ck_assert_int_eq(cudaFree(d), cudaSuccess);
    ck_assert_int_eq(cudaFree(d2), cudaSuccess);
    free(src);
    free(dst);
}
END_TEST

/* The errors of the 2D family, each also left as the last error. */
START_TEST(copy_2d_errors)
{
    char *buf = malloc(N);
    char *d = dev_alloc();

    ck_assert_int_eq(cudaMemcpy2D(d, 64, buf, 64, 65, 2, cudaMemcpyHostToDevice),
                     cudaErrorInvalidPitchValue);
    ck_assert_int_eq(cudaGetLastError(), cudaErrorInvalidPitchValue);
    ck_assert_int_eq(cudaMemcpy2D(d, 128, buf, 64, 65, 1, cudaMemcpyHostToDevice),
                     cudaErrorInvalidPitchValue);
    ck_assert_int_eq(cudaMemcpy2DAsync(buf, 64, d, 32, 33, 4, cudaMemcpyDeviceToHost, 0),
                     cudaErrorInvalidPitchValue);
    ck_assert_int_eq(cudaGetLastError(), cudaErrorInvalidPitchValue);
    ck_assert_int_eq(cudaMemcpy2D(d, (size_t)1 << 32, buf, 64, 64, 1, cudaMemcpyHostToDevice),
                     cudaErrorInvalidPitchValue);
    ck_assert_int_eq(cudaGetLastError(), cudaErrorInvalidPitchValue);
    /* Nothing to copy: success. */
    ck_assert_int_eq(cudaMemcpy2D(d, 64, buf, 64, 0, 5, cudaMemcpyHostToDevice), cudaSuccess);
    ck_assert_int_eq(cudaMemcpy2D(d, 64, buf, 64, 64, 0, cudaMemcpyHostToDevice), cudaSuccess);
    ck_assert_int_eq(cudaPeekAtLastError(), cudaSuccess);
    /* The last row past the end of the allocation. */
    ck_assert_int_eq(cudaMemcpy2D(buf, 64, d, N / 4, 64, 5, cudaMemcpyDeviceToHost),
                     cudaErrorInvalidValue);
    ck_assert_int_eq(cudaMemcpy2D(buf, 64, d, N / 4, 64, 4, cudaMemcpyDeviceToHost), cudaSuccess);
    /* Wrong direction, bad kind. */
    ck_assert_int_eq(cudaMemcpy2D(buf, 64, d, 64, 64, 4, cudaMemcpyHostToDevice),
                     cudaErrorInvalidValue);
    ck_assert_int_eq(cudaMemcpy2D(buf, 64, d, 64, 64, 4, (enum cudaMemcpyKind)7),
                     cudaErrorInvalidMemcpyDirection);
    ck_assert_int_eq(cudaGetLastError(), cudaErrorInvalidMemcpyDirection);
    ck_assert_str_eq(cudaGetErrorName(cudaErrorInvalidPitchValue), "cudaErrorInvalidPitchValue");
    ck_assert_int_eq(cudaFree(d), cudaSuccess);
    free(buf);
}
END_TEST

/* The synchronisation rules of cudaMemcpy apply to the 2D family. */
START_TEST(copy_2d_sync_rules)
{
    cudaStream_t s;
    unsigned char *src = malloc(N), *dst = malloc(N);
    void *d = dev_alloc();
    cudaEvent_t e;

    ck_assert_int_eq(cudaStreamCreate(&s), cudaSuccess);
    memset(src, 7, N);
    /* Async from pageable: staged at the call, even on a held stream. */
    cemu_test_hold_stream(s);
    ck_assert_int_eq(cudaMemcpy2DAsync(d, 512, src, 1024, 512, 256, cudaMemcpyHostToDevice, s),
                     cudaSuccess);
    memset(src, 8, N);
    e = mark(s);
    ck_assert_int_eq(cudaEventQuery(e), cudaErrorNotReady);
    cemu_test_release_stream(s);
    /* Synchronous D2H on the legacy stream waits for the blocking stream. */
    ck_assert_int_eq(cudaMemcpy2D(dst, 512, d, 512, 512, 256, cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_int_eq(dst[0], 7);
    ck_assert_int_eq(dst[512 * 256 - 1], 7);
    ck_assert_int_eq(cudaEventQuery(e), cudaSuccess);
    ck_assert_int_eq(cudaEventDestroy(e), cudaSuccess);
    ck_assert_int_eq(cudaStreamDestroy(s), cudaSuccess);
    ck_assert_int_eq(cudaFree(d), cudaSuccess);
    free(src);
    free(dst);
}
END_TEST

START_TEST(ptsz_2d_entry_points_use_the_per_thread_stream)
{
    char *buf = malloc(N);
    void *d = dev_alloc();
    uint64_t legacy = cemu_test_stream_copies(cudaStreamLegacy);
    uint64_t mine = cemu_test_stream_copies(cudaStreamPerThread);

    memset(buf, 3, N);
    ck_assert_int_eq(cudaMemcpy2D_ptds(d, 64, buf, 64, 64, 16, cudaMemcpyHostToDevice),
                     cudaSuccess);
    ck_assert_int_eq(cudaMemcpy2DAsync_ptsz(buf, 64, d, 64, 64, 16, cudaMemcpyDeviceToHost, 0),
                     cudaSuccess);
    ck_assert_int_eq(cudaStreamSynchronize(cudaStreamPerThread), cudaSuccess);
    ck_assert_uint_eq(cemu_test_stream_copies(cudaStreamPerThread), mine + 2);
    ck_assert_uint_eq(cemu_test_stream_copies(cudaStreamLegacy), legacy);
    ck_assert_int_eq(cudaMemcpy2D_ptds(d, 64, buf, 64, 65, 16, cudaMemcpyHostToDevice),
                     cudaErrorInvalidPitchValue);
    ck_assert_int_eq(cudaGetLastError(), cudaErrorInvalidPitchValue);
    free(buf);
}
END_TEST

START_TEST(ptsz_entry_points_use_the_per_thread_stream)
{
    char *buf = malloc(N);
    void *d = dev_alloc();
    uint64_t legacy = cemu_test_stream_copies(cudaStreamLegacy);
    uint64_t mine = cemu_test_stream_copies(cudaStreamPerThread);

    ck_assert_int_eq(cudaMemcpy_ptds(d, buf, N, cudaMemcpyHostToDevice), cudaSuccess);
    ck_assert_int_eq(cudaMemcpyAsync_ptsz(buf, d, N, cudaMemcpyDeviceToHost, 0), cudaSuccess);
    ck_assert_int_eq(cudaStreamSynchronize(cudaStreamPerThread), cudaSuccess);
    ck_assert_uint_eq(cemu_test_stream_copies(cudaStreamPerThread), mine + 2);
    ck_assert_uint_eq(cemu_test_stream_copies(cudaStreamLegacy), legacy);
    ck_assert_int_eq(cudaMemcpy(buf, d, N, cudaMemcpyDeviceToHost), cudaSuccess);
    ck_assert_uint_eq(cemu_test_stream_copies(cudaStreamLegacy), legacy + 1);
    free(buf);
}
END_TEST

START_TEST(host_alloc_failure_injection)
{
    void *p;

    cemu_test_fail_host_alloc(1);
    ck_assert_int_eq(cudaMallocHost(&p, 4096), cudaErrorMemoryAllocation);
    ck_assert_int_eq(cudaGetLastError(), cudaErrorMemoryAllocation);
    ck_assert_int_eq(cudaMallocHost(&p, 4096), cudaSuccess);
    cemu_test_fail_host_alloc(-1);
    ck_assert_int_eq(cudaHostAlloc(&p, 4096, 0), cudaErrorMemoryAllocation);
    ck_assert_int_eq(cudaMallocHost(&p, 4096), cudaErrorMemoryAllocation);
    cemu_test_fail_host_alloc(0);
    ck_assert_int_eq(cudaMallocHost(&p, 4096), cudaSuccess);
}
END_TEST

START_TEST(forked_child_gets_initialization_error)
{
    void *d = dev_alloc();
    char buf[16];
    int status;
    pid_t pid = fork();

    if (pid == 0) {
        cudaError_t e = cudaMemcpy(buf, d, sizeof(buf), cudaMemcpyDeviceToHost);
        _exit(e == cudaErrorInitializationError && cudaGetLastError() == e ? 0 : 1);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ck_assert_int_eq(cudaMemcpy(buf, d, sizeof(buf), cudaMemcpyDeviceToHost), cudaSuccess);
}
END_TEST

START_TEST(devices_have_their_own_streams_and_events)
{
    cudaEvent_t e0, e1;
    cudaStream_t s1;
    int n;

    setenv("CEMU_DEVICES", "2", 1);
    ck_assert_int_eq(cudaGetDeviceCount(&n), cudaSuccess);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(cudaSetDevice(2), cudaErrorInvalidDevice);
    ck_assert_int_eq(cudaGetLastError(), cudaErrorInvalidDevice);
    ck_assert_int_eq(cudaEventCreateWithFlags(&e0, cudaEventDisableTiming), cudaSuccess);
    cemu_test_hold_stream(cudaStreamLegacy); /* device 0's */
    ck_assert_int_eq(cudaSetDevice(1), cudaSuccess);
    ck_assert_int_eq(cudaGetDevice(&n), cudaSuccess);
    ck_assert_int_eq(n, 1);
    /* Device 1's legacy stream does not wait for device 0's. */
    ck_assert_int_eq(cudaStreamCreate(&s1), cudaSuccess);
    ck_assert_int_eq(cudaMemsetAsync(dev_alloc(), 1, N, 0), cudaSuccess);
    ck_assert_int_eq(cudaStreamSynchronize(0), cudaSuccess);
    /* An event of device 0 cannot be recorded on a stream of device 1. */
    ck_assert_int_eq(cudaEventRecord(e0, s1), cudaErrorInvalidResourceHandle);
    ck_assert_int_eq(cudaEventRecord(e0, 0), cudaErrorInvalidResourceHandle);
    ck_assert_int_eq(cudaGetLastError(), cudaErrorInvalidResourceHandle);
    ck_assert_int_eq(cudaEventCreateWithFlags(&e1, cudaEventDisableTiming), cudaSuccess);
    ck_assert_int_eq(cudaEventRecord(e1, s1), cudaSuccess);
    ck_assert_int_eq(cudaEventSynchronize(e1), cudaSuccess);
    ck_assert_int_eq(cudaSetDevice(0), cudaSuccess);
    cemu_test_release_stream(cudaStreamLegacy);
    ck_assert_int_eq(cudaEventDestroy(e0), cudaSuccess);
    ck_assert_int_eq(cudaEventDestroy(e1), cudaSuccess);
}
END_TEST

START_TEST(capture_records_and_sync_invalidates)
{
    cudaStream_t s;
    cudaGraph_t g, g1;
    cudaGraphExec_t ge;
    cudaEvent_t e;
    enum cudaStreamCaptureStatus st;
    void *d = dev_alloc();
    static char host[N];

    ck_assert_int_eq(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    ck_assert_int_eq(cudaEventCreate(&e), cudaSuccess);
    ck_assert_int_eq(cudaStreamBeginCapture(0, cudaStreamCaptureModeGlobal),
                     cudaErrorStreamCaptureUnsupported);
    cudaGetLastError();
    ck_assert_int_eq(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
    ck_assert_int_eq(cudaStreamIsCapturing(s, &st), cudaSuccess);
    ck_assert_int_eq(st, cudaStreamCaptureStatusActive);
    ck_assert_int_eq(cudaMemsetAsync(d, 9, N, s), cudaSuccess);
    ck_assert_int_eq(cudaMemcpyAsync(host, d, N, cudaMemcpyDeviceToHost, s), cudaSuccess);
    ck_assert_int_eq(host[0], 0); /* recorded, not run */
    ck_assert_int_eq(cudaStreamEndCapture(s, &g1), cudaSuccess);
    ck_assert_int_eq(cudaGraphInstantiate(&ge, g1, 0), cudaSuccess);
    ck_assert_int_eq(cudaGraphLaunch(ge, s), cudaSuccess);
    ck_assert_int_eq(cudaStreamSynchronize(s), cudaSuccess);
    ck_assert_int_eq(host[N - 1], 9);
    /* Waiting inside a capture invalidates it. */
    ck_assert_int_eq(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
    ck_assert_int_eq(cudaStreamSynchronize(s), cudaErrorStreamCaptureUnsupported);
    ck_assert_int_eq(cudaStreamEndCapture(s, &g), cudaErrorStreamCaptureInvalidated);
    ck_assert_int_eq(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
    ck_assert_int_eq(cudaEventRecord(e, s), cudaSuccess);
    ck_assert_int_eq(cudaEventSynchronize(e), cudaErrorStreamCaptureUnsupported);
    ck_assert_int_eq(cudaStreamEndCapture(s, &g), cudaErrorStreamCaptureInvalidated);
    ck_assert_int_eq(cudaGetLastError(), cudaErrorStreamCaptureInvalidated);
    ck_assert_int_eq(cudaGraphExecDestroy(ge), cudaSuccess);
    ck_assert_int_eq(cudaGraphDestroy(g1), cudaSuccess);
    ck_assert_int_eq(cudaEventDestroy(e), cudaSuccess);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cuda_emu");
    TCase *tc = tcase_create("runtime");
    SRunner *sr;
    int failed;

    tcase_add_test(tc, abi_values);
    tcase_add_test_raise_signal(tc, device_memory_faults_on_host_access, SIGSEGV);
    tcase_add_test(tc, pointer_kinds);
    tcase_add_test(tc, registered_pages_stay_with_the_registration);
    tcase_add_test(tc, registering_unmapped_memory_fails);
    tcase_add_test(tc, pinned_range_errors);
    tcase_add_test(tc, last_error_state);
    tcase_add_test(tc, legacy_waits_for_blocking_streams);
    tcase_add_test(tc, blocking_waits_for_legacy);
    tcase_add_test(tc, nonblocking_and_peer_streams_do_not_wait);
    tcase_add_test(tc, per_thread_stream_waits_for_legacy_only);
    tcase_add_test(tc, stream_wait_event);
    tcase_add_test(tc, copy_semantics);
    tcase_add_test(tc, ptsz_entry_points_use_the_per_thread_stream);
    tcase_add_test(tc, copy_2d_rows_and_pitches);
    tcase_add_test(tc, copy_2d_errors);
    tcase_add_test(tc, copy_2d_sync_rules);
    tcase_add_test(tc, ptsz_2d_entry_points_use_the_per_thread_stream);
    tcase_add_test(tc, host_alloc_failure_injection);
    tcase_add_test(tc, forked_child_gets_initialization_error);
    tcase_add_test(tc, devices_have_their_own_streams_and_events);
    tcase_add_test(tc, capture_records_and_sync_invalidates);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
