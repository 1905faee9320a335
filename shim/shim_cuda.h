/*
 * What the CUDA runtime hooks share: the runtime's entry points per symbol
 * version (shim_cuda.c), the pinned budget, and the opt-in register cache
 * (shim_cuda_rc.c). Private to shim/.
 */
#ifndef TESHIM_SHIM_CUDA_H
#define TESHIM_SHIM_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "teshim/cudacopy.h"
#include "shim.h"
#include "teshim/cuda_abi.h"

/* The runtime versions served: libcudart.so.12 and .13. */
enum { RT_12, RT_13, RT_N };
extern const char *const shim_cuda_rt_versions[RT_N];

/* The runtime's entry points: the copy component's table and the rows of
 * teshim/cudart.def with SHIM = 1. */
struct cuda_rt {
    struct scc_api scc;
#define CUDART(in_scc, in_shim, in_eng, need, field, name, params)                                 \
    CUDART_IF_##in_shim(int(*field) params;)
#include "teshim/cudart.def"
#undef CUDART
    bool ok;
};

/* The stream flavour of a copy hook (an EXTRA of its SHAPE): CU_PT for the
 * _ptds/_ptsz entry points, which read the NULL stream as the per-thread
 * default stream; CU_LEGACY for the others (the legacy stream). */
#define CU_LEGACY false
#define CU_PT true

/*
 * The resolvers of the generated hooks (shim.h, SHIM_GENERATE): the real
 * function of runtime row id, under the version of the hook (*rti is set
 * to it), or else under the other runtime's (*rti changes to it: an
 * unversioned lookup binds to the default, .13, hook in a process that
 * has .12); of driver row id, what a lookup handed out or the next
 * definition by name. NULL when there is none.
 */
void *shim_real_CUDA(enum shim_hook_id id, int *rti);
void *shim_real_CUDRV(enum shim_hook_id id, int *rti);

/* Runtime i's entry points, resolved on first use; NULL if one is missing. */
struct cuda_rt *shim_cuda_rt_get(int i);
/* All pinned memory teshim holds: bounce pools and cached registrations. */
extern struct scc_budget shim_cuda_budget;
/* Once per process: the budget's cap, the pools' thread-exit key, fork. */
void shim_cuda_once(void);

/*
 * Start a bounced copy for either level (the runtime hooks, the driver
 * wrappers): h2d from pageable src to device dst, or device src to
 * pageable dst; height 0 for a 1D copy of width bytes, else height rows of
 * width bytes at the pitches. An async H2D is to return once its source
 * is consumed, a synchronous one once issued (the stream orders the rest),
 * a D2H once complete. scc_xfer_start_2d's answer (nothing started when
 * not 0), 0 for 1D.
 */
int shim_cuda_xfer_start(struct scc_xfer *x, struct scc_pool *pool, bool h2d, void *dst,
                         size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                         struct CUstream_st *stream, bool async);

/* ---- the register cache (shim_cuda_rc.c) --------------------------------- */

struct rc_entry;

/*
 * A registered range covering [host, host+n), registering it when it is hot
 * enough and lies in watched memory; NULL when the copy should take another
 * route (*refused: because the budget or the runtime said no). Held until
 * shim_rc_release.
 */
struct rc_entry *shim_rc_acquire(struct cuda_rt *rt, void *host, size_t n, bool *refused);
/* Done with e after a copy on stream; with wait, return only once that copy
 * completed (the pageable return rules). */
void shim_rc_release(struct rc_entry *e, struct CUstream_st *stream, bool wait);
/* A registered entry of ours overlapping [p, p+n), held, or NULL. */
struct rc_entry *shim_rc_find(const void *p, size_t n);
/* Drop a hold without waiting for anything. */
void shim_rc_unhold(struct rc_entry *e);
/* A forked child: forget every registration without calling the runtime. */
void shim_rc_forget_all(void);

#endif
