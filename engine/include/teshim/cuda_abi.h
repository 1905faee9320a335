/*
 * The CUDA ABI values teshim interprets, in one place for the shim and the
 * engine: written out because neither builds against the CUDA toolkit (the
 * runtime and the driver are found at run time). A base header: plain
 * constants and layouts, no code; not installed. tests/cuda_emu checks each
 * value against the real headers (cemu_runtime_test.c, "abi" case).
 */
#ifndef TESHIM_CUDA_ABI_H
#define TESHIM_CUDA_ABI_H

#include <stddef.h>

struct CUstream_st;
struct CUevent_st;

/* Special stream handles (driver_types.h; the driver's CU_STREAM_LEGACY
 * and CU_STREAM_PER_THREAD are the same values). */
#define CUABI_STREAM_LEGACY ((struct CUstream_st *)0x1)
#define CUABI_STREAM_PER_THREAD ((struct CUstream_st *)0x2)

/* cudaError_t values (an int-sized enum). */
#define CUABI_SUCCESS 0
#define CUABI_ERROR_MEMORY_ALLOCATION 2
#define CUABI_ERROR_SYMBOL_NOT_FOUND 302 /* cudaErrorSharedObjectSymbolNotFound */
#define CUABI_ERROR_NOT_READY 600

/* enum cudaMemcpyKind (int-sized). */
#define CUABI_MEMCPY_H2H 0
#define CUABI_MEMCPY_H2D 1
#define CUABI_MEMCPY_D2H 2
#define CUABI_MEMCPY_D2D 3
#define CUABI_MEMCPY_DEFAULT 4

/* enum cudaMemoryType. */
#define CUABI_MEM_UNREGISTERED 0
#define CUABI_MEM_HOST 1
#define CUABI_MEM_DEVICE 2
#define CUABI_MEM_MANAGED 3

/* enum cudaStreamCaptureStatus. */
#define CUABI_CAPTURE_NONE 0

/* cudaHostRegisterDefault, cudaHostRegisterPortable (pinned for every
 * device's context, not only the current one). */
#define CUABI_HOST_REGISTER_DEFAULT 0
#define CUABI_HOST_REGISTER_PORTABLE 1

/* cudaEventDisableTiming (= the driver's CU_EVENT_DISABLE_TIMING): events
 * that only order, never time. */
#define CUABI_EVENT_DISABLE_TIMING 0x02
/* cudaStreamNonBlocking. */
#define CUABI_STREAM_NON_BLOCKING 0x01

/* struct cudaPointerAttributes of CUDA 13 (CUDA 12 has the same first four
 * members and no reserved tail: this is large enough for both). */
struct cuabi_ptr_attrs {
    int type;
    int device;
    void *devicePointer;
    void *hostPointer;
    long reserved[8];
};

/* The CUDA driver API (cuda.h). CUresult values share their codes with
 * the cudaError_t values the copy component interprets (0, 2, 600). */
#define CUABI_CU_SUCCESS 0
#define CUABI_CU_ERROR_INVALID_VALUE 1
#define CUABI_CU_ERROR_NOT_FOUND 500
#define CUABI_CU_POINTER_ATTRIBUTE_MEMORY_TYPE 2
#define CUABI_CU_POINTER_ATTRIBUTE_IS_MANAGED 8
#define CUABI_CU_MEMORYTYPE_HOST 1
#define CUABI_CU_MEMORYTYPE_DEVICE 2
#define CUABI_CU_MEMORYTYPE_ARRAY 3
#define CUABI_CU_MEMORYTYPE_UNIFIED 4
/* CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM */
#define CUABI_CU_GET_PROC_ADDRESS_PER_THREAD 2

/* CUDA_MEMCPY2D (CUDA_MEMCPY2D_v2, CUDA 3.2 on: size_t geometry), the
 * argument of cuMemcpy2D_v2, cuMemcpy2DUnaligned_v2, cuMemcpy2DAsync_v2.
 * A side's address is Host (CU_MEMORYTYPE_HOST) or Device (DEVICE,
 * UNIFIED) + Y * Pitch + XInBytes; Array for CU_MEMORYTYPE_ARRAY. The
 * memory types are a 4-byte enum (CUmemorytype), padded to 8. */
struct cuabi_memcpy2d {
    size_t srcXInBytes, srcY;
    int srcMemoryType;
    const void *srcHost;
    unsigned long long srcDevice;
    void *srcArray;
    size_t srcPitch;
    size_t dstXInBytes, dstY;
    int dstMemoryType;
    void *dstHost;
    unsigned long long dstDevice;
    void *dstArray;
    size_t dstPitch;
    size_t WidthInBytes, Height;
};

#endif
