/*
 * Test controls of the emulated CUDA runtime (tests/cuda_emu). They are
 * exported by the emulated libcudart.so under the version node CEMU_TEST_1,
 * never by the real library: a test that calls them proves it runs against
 * the emulation. Stream arguments take the same handles as the CUDA API
 * (0 and cudaStreamLegacy = the legacy default stream, cudaStreamPerThread =
 * the calling thread's per-thread stream).
 */
#ifndef TESHIM_CEMU_TEST_H
#define TESHIM_CEMU_TEST_H

#include <stdint.h>

/* Host memory types counted per copy. */
enum cemu_host_type {
    CEMU_HOST_NONE,     /* device-to-device */
    CEMU_HOST_PAGEABLE, /* ordinary host memory */
    CEMU_HOST_PINNED,   /* cudaMallocHost, cudaHostAlloc, cudaHostRegister */
    CEMU_HOST_MANAGED,  /* cudaMallocManaged */
    CEMU_HOST_NTYPES
};

/* Copy directions counted (the resolved direction, never cudaMemcpyDefault). */
enum cemu_dir { CEMU_H2H, CEMU_H2D, CEMU_D2H, CEMU_D2D, CEMU_NDIRS };

/*
 * Hold a stream: work already running finishes, nothing further starts on it
 * until cemu_test_release_stream. Work on other streams that depends on it
 * (legacy-stream rules, cudaStreamWaitEvent) waits too. Returns 0 or -EINVAL.
 */
int cemu_test_hold_stream(void *stream);
int cemu_test_release_stream(void *stream);

/*
 * Streams created from now on start held (on != 0), for streams a library
 * makes internally (the engine's own stream); cemu_test_release_all_streams
 * releases every stream.
 */
void cemu_test_hold_new_streams(int on);
void cemu_test_release_all_streams(void);

/* Operations submitted to a stream and not yet completed (0 if unknown). */
uint64_t cemu_test_stream_pending(void *stream);
/*
 * Streams whose next operation is ready to run except that it waits for
 * another stream (implicit legacy-stream rules or cudaStreamWaitEvent).
 * A test holding stream S sees this become non-zero exactly when work that
 * must wait for S was submitted.
 */
uint64_t cemu_test_blocked_ops(void);
/* Copies (memcpy operations) executed on a stream since it was created. */
uint64_t cemu_test_stream_copies(void *stream);

/* Copies requested through the API, by direction and host memory type. */
uint64_t cemu_test_copies(enum cemu_dir dir, enum cemu_host_type host);
/* Bytes copied through the API, by direction and host memory type. */
uint64_t cemu_test_copy_bytes(enum cemu_dir dir, enum cemu_host_type host);
/* How many of those were 2D copies (cudaMemcpy2D family). */
uint64_t cemu_test_copies_2d(void);
void cemu_test_reset_counters(void);

/*
 * Make the next n pinned host allocations (cudaMallocHost, cudaHostAlloc)
 * fail with cudaErrorMemoryAllocation; n < 0 = all of them until reset with
 * 0. The environment variable CEMU_FAIL_HOST_ALLOC=N|all does the same for
 * programs that cannot call this.
 */
void cemu_test_fail_host_alloc(int n);

/* Bytes of pinned host memory currently allocated or registered. */
uint64_t cemu_test_pinned_bytes(void);

#endif
