/*
 * What the CUDA runtime hooks share: the runtime's entry points per symbol
 * version (shim_cuda.c), the pinned budget, and the opt-in register cache
 * (shim_cuda_rc.c). Private to shim/.
 */
#ifndef TESHIM_SHIM_CUDA_H
#define TESHIM_SHIM_CUDA_H

#include <stdbool.h>
#include <stddef.h>

#include "teshim/cudacopy.h"
#include "shim.h"
#include "shim_cuda_abi.h"

/* The runtime versions served: libcudart.so.12 and .13. */
enum { RT_12, RT_13, RT_N };
extern const char *const shim_cuda_rt_versions[RT_N];

struct cuda_rt {
    struct scc_api scc;
    int (*pointer_get_attributes)(struct shim_cuda_ptr_attrs *a, const void *p);
    int (*stream_is_capturing)(struct CUstream_st *s, int *status);
    int (*peek_at_last_error)(void);
    int (*get_last_error)(void);
    int (*host_register)(void *p, size_t n, unsigned flags);
    int (*host_unregister)(void *p);
    int (*get_device)(int *device);
    int (*stream_synchronize)(struct CUstream_st *s);
    bool ok;
};

/* Runtime i's entry points, resolved on first use; NULL if one is missing. */
struct cuda_rt *shim_cuda_rt_get(int i);
/*
 * An unversioned lookup (dlsym) binds to our default, .13, version in a
 * process that has the other runtime: the real function of hook id in that
 * one (*rti changes to it). NULL when neither is there.
 */
void *shim_cuda_other_runtime(enum shim_hook_id id, int *rti);

/* All pinned memory teshim holds: bounce pools and cached registrations. */
extern struct scc_budget shim_cuda_budget;
/* Once per process: the budget's cap, the pools' thread-exit key, fork. */
void shim_cuda_once(void);

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
