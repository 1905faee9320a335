/*
 * Private structures of the engine: the public object, its batches, and
 * the services only the public API calls (the engine's ibverbs.h).
 * Transports include eng_tp.h instead. Not installed; the public API is
 * include/teshim/engine.h.
 */
#ifndef TESHIM_ENG_H
#define TESHIM_ENG_H

#include "eng_listen.h"
#include "eng_meta.h"
#include "eng_tp.h"
#include "teshim/engine.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ENG_MAX_TRANSPORTS 8

struct eng_batch {
    teshim_batch_t id;
    size_t max;
    size_t n; /* submitted, under the engine's batch lock */
    struct eng_task *tasks;
    atomic_size_t unfinished;
    atomic_size_t failed;
    atomic_int waiters; /* threads in teshim_batch_wait: free refuses meanwhile */
    pthread_mutex_t lock;
    pthread_cond_t cond;
};

struct teshim_engine {
    struct eng_ctx ctx; /* first: the part the transports see */
    int port;           /* -1: not listening */
    char listen_host[256];
    struct eng_listener *listener; /* NULL: not listening */
    struct eng_meta *meta;         /* p2p or etcd (eng_meta.h) */

    pthread_rwlock_t reg_lock;
    struct eng_region **regs; /* sorted by addr */
    size_t nregs, capregs;

    pthread_mutex_t seg_lock;
    struct eng_segment **segs;
    size_t nsegs, capsegs;

    pthread_rwlock_t batch_lock;
    struct eng_batch **batches;
    size_t capbatches;
    uint32_t batch_gen;

    pthread_mutex_t lim_lock;
    int active;
    struct eng_task *wait_head, *wait_tail;

    /* every transport, each in its staging wrapper, in preference order */
    struct eng_transport *tps[ENG_MAX_TRANSPORTS];
    int ntps;
};

static inline struct teshim_engine *eng_of(struct eng_ctx *c)
{
    return (struct teshim_engine *)((char *)c - offsetof(struct teshim_engine, ctx));
}

static inline struct eng_ctx *ctx_of(struct teshim_engine *e)
{
    return e ? &e->ctx : NULL;
}

/* ---- regions (eng_region.c) ----------------------------------------------- */

/* Insert a registration; -EEXIST if it overlaps one, -ENOMEM (logged). */
int eng_region_add(struct teshim_engine *eng, uint64_t addr, uint64_t len, bool remote, int dev);
/* Remove the registration starting at addr once no peer request uses it;
 * -ENOENT if none starts there; -ETIMEDOUT when peers' requests still used
 * it after engine.unregister_timeout_ms (their connections were closed,
 * the region is gone); -EBUSY if even that did not end them (logged). */
int eng_region_remove(struct teshim_engine *eng, uint64_t addr);
/* The device (-1 host) of the registration holding [addr, addr+len);
 * -EFAULT if none holds it whole. */
int eng_region_device(struct teshim_engine *eng, uint64_t addr, uint64_t len, int *dev_p);
/* Free every registration (engine destroy). */
void eng_regions_free(struct teshim_engine *eng);

/* ---- segments (eng_seg.c) ------------------------------------------------- */

/* A new segment named name, its locks initialised; NULL without memory. */
struct eng_segment *eng_seg_alloc(const char *name);
/* The open segment id of eng; NULL if none. */
struct eng_segment *eng_seg_lookup(struct teshim_engine *eng, teshim_segment_t id);
/* A segment's memory (its transports' state is theirs to release). */
void eng_seg_free(struct eng_segment *seg);

/* ---- tasks and the limiter (eng_task.c) ----------------------------------- */

/* Admit the n tasks at tasks (submission order) or queue them behind the
 * queued ones; the admitted ones are started through t->tp, with every
 * transport's submit_begin/submit_end around. */
void eng_limiter_submit(struct teshim_engine *eng, struct eng_task *tasks, size_t n);
/* Take the whole queue (engine destroy) ... */
struct eng_task *eng_limiter_take_all(struct teshim_engine *eng);
/* ... and cancel what was taken once the transports are gone; returns how
 * many tasks were cancelled. */
size_t eng_limiter_cancel(struct teshim_engine *eng, struct eng_task *queued);

#endif
