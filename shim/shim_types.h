/*
 * Types named by the hook rows, declared without the host libraries'
 * headers: libteshim.so builds where neither libibverbs nor CUDA headers are
 * installed, and only pointers cross the generic code. Files that implement
 * hooks include the real headers.
 */
#ifndef TESHIM_SHIM_TYPES_H
#define TESHIM_SHIM_TYPES_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct ibv_pd;
struct ibv_mr;
struct ibv_qp;
struct ibv_qp_attr;

/* CUDA runtime: cudaError_t and enum cudaMemcpyKind are int-sized enums
 * (passed as int), cudaStream_t is struct CUstream_st *. The values the
 * shim interprets are in teshim/cuda_abi.h. */
typedef int shim_cudaError_t;
struct CUstream_st;
struct CUevent_st;
struct cuabi_ptr_attrs;

/* CUDA driver: CUresult is an int-sized enum, CUdeviceptr an unsigned
 * 64-bit integer (unsigned long long), CUstream the same handle as
 * cudaStream_t. */
typedef int shim_CUresult;
typedef unsigned long long shim_CUdeviceptr;
struct cuabi_memcpy2d; /* CUDA_MEMCPY2D */

#endif
