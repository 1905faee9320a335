/*
 * CUDA copy decisions, on plain structs: the shim classifies a copy (memory
 * kinds from cudaPointerGetAttributes, capture state, pending error) and
 * policy tells it whether to route it through the pinned bounce pool or a
 * cached registration, or to pass it through. No CUDA headers here: the
 * runtime's ABI values come from the header shim and engine share.
 */
#ifndef TESHIM_POL_CUDA_H
#define TESHIM_POL_CUDA_H

#include "pol.h"
#include "teshim/cuda_abi.h" /* cudaMemcpyKind values: CUABI_MEMCPY_* */

/* Memory kind of one side of a copy. */
enum pol_cuda_mem {
    POL_CUDA_MEM_PAGEABLE, /* ordinary host memory (cudaMemoryTypeUnregistered) */
    POL_CUDA_MEM_PINNED,   /* cudaMallocHost, cudaHostAlloc, cudaHostRegister */
    POL_CUDA_MEM_MANAGED,  /* cudaMallocManaged */
    POL_CUDA_MEM_DEVICE,
    POL_CUDA_MEM_UNKNOWN, /* the runtime could not tell */
};

enum pol_cuda_dir { POL_CUDA_H2D, POL_CUDA_D2H, POL_CUDA_OTHER };

/* A copy about to be made. */
struct pol_cuda_copy {
    size_t bytes;
    int kind; /* cudaMemcpyKind as passed by the application */
    enum pol_cuda_mem src, dst;
    bool capturing;     /* the stream is being captured into a graph */
    bool error_pending; /* the application's last-error state is not cudaSuccess */
};

/* What to do with it when the verdict is POL_INJECT (or OBSERVED). */
struct pol_cuda_copy_dec {
    enum pol_cuda_dir dir;
    bool bounce;      /* through the per-thread pinned bounce pool */
    bool register_;   /* try a cached cudaHostRegister of the host range first */
    size_t chunk;     /* bounce buffer size */
    unsigned buffers; /* bounce buffers per thread */
    unsigned threads; /* host copy threads, the caller included; 0 = auto */
};

/*
 * Decide a copy. SKIP_POLICY: cuda.bounce and cuda.register_cache off (or
 * the gate is closed). NOT_APPLICABLE: not device<->pageable, a direction
 * that contradicts kind, below the size threshold, a capturing stream, an
 * error pending. INJECT / OBSERVED: *dec says how. *dec is always filled.
 */
enum pol_verdict pol_cuda_copy(const struct pol_config *cfg, const struct pol_cuda_copy *c,
                               struct pol_cuda_copy_dec *dec);

/*
 * The part of the decision that needs no look at the pointers: SKIP_POLICY
 * (nothing on), NOT_APPLICABLE (below the size threshold) or POL_INJECT
 * meaning "classify the pointers and call pol_cuda_copy". Lets the hook
 * skip the runtime queries for copies that can never qualify.
 */
enum pol_verdict pol_cuda_copy_quick(const struct pol_config *cfg, size_t bytes);

/* Bounce buffers per pool: cuda.bounce_buffers, fewer (at least 2) when
 * that many chunks exceed cuda.pinned_max_bytes. */
unsigned pol_cuda_buffers(const struct pol_config *cfg);

/* Bytes of pinned memory one thread's bounce pool holds. */
size_t pol_cuda_pool_bytes(const struct pol_config *cfg);

#endif
