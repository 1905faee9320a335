/*
 * The CUDA runtime ABI values the shim interprets, written out because
 * libteshim.so builds without the CUDA toolkit. tests/cuda_emu checks each
 * one against the real headers (cemu_runtime_test.c, "abi" case).
 */
#ifndef TESHIM_SHIM_CUDA_ABI_H
#define TESHIM_SHIM_CUDA_ABI_H

#include "shim_types.h"

/* Special stream handles (driver_types.h). */
#define SHIM_CUDA_STREAM_LEGACY ((struct CUstream_st *)0x1)
#define SHIM_CUDA_STREAM_PER_THREAD ((struct CUstream_st *)0x2)

/* cudaError_t values. */
#define SHIM_CUDA_SUCCESS 0
#define SHIM_CUDA_ERROR_SYMBOL_NOT_FOUND 302 /* cudaErrorSharedObjectSymbolNotFound */

/* enum cudaMemoryType. */
#define SHIM_CUDA_MEM_UNREGISTERED 0
#define SHIM_CUDA_MEM_HOST 1
#define SHIM_CUDA_MEM_DEVICE 2
#define SHIM_CUDA_MEM_MANAGED 3

/* enum cudaStreamCaptureStatus. */
#define SHIM_CUDA_CAPTURE_NONE 0

/* cudaHostRegisterDefault, cudaHostRegisterPortable (pinned for every
 * device's context, not only the current one). */
#define SHIM_CUDA_HOST_REGISTER_DEFAULT 0
#define SHIM_CUDA_HOST_REGISTER_PORTABLE 1

/* struct cudaPointerAttributes of CUDA 13 (CUDA 12 has the same first four
 * members and no reserved tail: this is large enough for both). */
struct shim_cuda_ptr_attrs {
    int type;
    int device;
    void *devicePointer;
    void *hostPointer;
    long reserved[8];
};

/* The CUDA driver API (cuda.h). CUresult values share their codes with
 * the cudaError_t values the copy component interprets (0, 2, 600). */
#define SHIM_CU_SUCCESS 0
#define SHIM_CU_ERROR_INVALID_VALUE 1
#define SHIM_CU_ERROR_NOT_FOUND 500
#define SHIM_CU_POINTER_ATTRIBUTE_MEMORY_TYPE 2
#define SHIM_CU_POINTER_ATTRIBUTE_IS_MANAGED 8
#define SHIM_CU_MEMORYTYPE_HOST 1
#define SHIM_CU_MEMORYTYPE_DEVICE 2
#define SHIM_CU_MEMORYTYPE_UNIFIED 4
/* CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM */
#define SHIM_CU_GET_PROC_ADDRESS_PER_THREAD 2
/* CU_EVENT_DISABLE_TIMING (= cudaEventDisableTiming) */
#define SHIM_CU_EVENT_DISABLE_TIMING 2

#endif
