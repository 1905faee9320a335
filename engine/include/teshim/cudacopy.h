/*
 * The copy component's own header, shared by the engine and the shim (not
 * installed; nothing else of engine/ is visible to the shim).
 *
 * A pinned bounce pool and chunked, double-buffered copies between device
 * memory and pageable host memory. Self-contained: no CUDA headers, no shim
 * internals; the runtime's entry points come in a table the owner resolves
 * (the shim with dlvsym, the engine however it loads the runtime), and the
 * pinned-memory budget is a counter the owner may share between pools.
 *
 * A transfer is a small state machine advanced by scc_xfer_poll: with
 * block = false it never waits (cudaEventQuery), so an I/O thread can drive
 * many transfers from its event loop; with block = true it waits on events
 * (cudaEventSynchronize) and scc_xfer_run drives a transfer to its end.
 *
 * Pipelining with N buffers of C bytes, chunk k in buffer k mod N:
 *   device->host: cudaMemcpyAsync chunk k into its buffer and record the
 *     buffer's event; when the event of chunk j completes, memcpy it out to
 *     host memory; the buffer then takes chunk j+N. The GPU copies chunk k
 *     while the CPU moves chunk k-1.
 *   host->device: wait until the buffer's previous copy completed, memcpy
 *     chunk k into it, cudaMemcpyAsync it to the device, record the event.
 * Every copy goes on the stream the caller names, in order, so the stream's
 * ordering rules (legacy, per-thread, user streams) hold unchanged.
 *
 * Host-side staging in parallel: one host thread cannot keep up with the
 * DMA engine (on an H200 host memcpy runs 10.5 GB/s on one thread, 48.5 on
 * 16, pinned DMA 55; first touch of fresh pages 2.3 -> 22 GB/s). So the
 * memcpy of a chunk between pageable memory and its pinned buffer is a job
 * cut into pieces (never smaller than a minimum, so a chunk is not split
 * over more threads than pays off), taken by a process-wide pool of copy
 * threads and by the calling thread itself, and several chunks are staged
 * at once, one per free buffer. Only host memcpy moves to those threads:
 * every device-side copy is still issued from the calling thread, in chunk
 * order, on the caller's stream. With 1 thread (scc_pool_set_threads) the
 * caller does every memcpy itself, as before. The threads are created on
 * first need, never survive fork (a child makes its own), stop when the
 * image is unloaded or the process exits, and when one cannot be created
 * the caller copies alone: a copy never fails for want of a thread.
 *
 * Errors are the runtime's own codes (cudaError_t values, 0 = success); the
 * caller decides what to do with them. Not thread-safe: one pool per thread
 * (or per connection), any number of transfers in sequence.
 */
#ifndef TESHIM_ENG_CUDACOPY_H
#define TESHIM_ENG_CUDACOPY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

/* The ABI values (cudaError_t, cudaMemcpyKind, ...): one header for the
 * shim and the engine. */
#include "teshim/cuda_abi.h"

#define SCC_MAX_BUFFERS 16
/* scc_xfer_poll: the transfer waits for the device (never a cudaError_t). */
#define SCC_PENDING (-11)

/* The runtime entry points used, with the runtime's prototypes: the rows
 * of teshim/cudart.def with SCC = 1 (memcpy2d_async, cudaMemcpy2DAsync, is
 * optional: NULL means no 2D transfers, scc_xfer_start_2d refuses those
 * that need it). */
struct scc_api {
#define CUDART(in_scc, in_shim, in_eng, need, field, name, params)                                 \
    CUDART_IF_##in_scc(int(*field) params;)
#include "teshim/cudart.def"
#undef CUDART
};

/* One entry point of a table of function pointers (a struct of them): its
 * name, the member's offset, and whether a runtime without it is refused. */
struct scc_sym {
    const char *name;
    size_t off;
    bool need;
};

/*
 * Fill the table at table from a runtime opened with dlopen (dlsym on
 * handle): 0, or -ENOENT when a needed function is missing (*missing names
 * it, when missing is not NULL); an optional one missing is NULL.
 */
int scc_syms_from_handle(void *table, const struct scc_sym *syms, size_t n, void *handle,
                         const char **missing);

/*
 * Fill api from a runtime opened with dlopen (an engine that loads
 * libcudart.so.13/.12 itself), with scc_syms_from_handle. The shim
 * resolves its own table with dlvsym.
 */
int scc_api_from_handle(struct scc_api *api, void *handle, const char **missing);

/* Pinned bytes held by every pool sharing it, against a cap. */
struct scc_budget {
    _Atomic size_t used;
    size_t max;
};

/* Reserve n bytes of the budget: true if they fit. */
bool scc_budget_take(struct scc_budget *b, size_t n);
void scc_budget_give(struct scc_budget *b, size_t n);

/* Most threads (the caller included) a pool may spread its host copies
 * over, and the cap of `auto` (the DMA engine takes ~55 GB/s, 16 threads
 * of host memcpy 48.5 on the H200 host). */
#define SCC_THREADS_MAX 64
#define SCC_THREADS_AUTO_MAX 16
/* Smallest piece of a chunk given to one thread: at ~10 GB/s per thread,
 * 512 KiB is ~50 us of memcpy, well above the cost of handing it over. */
#define SCC_MIN_PIECE (512u << 10)

/* The host-side memcpy of one chunk, in pieces. Private to the component. */
struct scc_job {
    char *host;
    char *buf;
    size_t width;  /* bytes per row (the whole chunk when rows = 1) */
    size_t hpitch; /* host rows this far apart */
    size_t rows;
    size_t per;          /* bytes (rows = 1) or rows per piece */
    size_t npieces;      /* pieces in all */
    size_t next;         /* next piece to claim (under the pool lock when queued) */
    _Atomic size_t left; /* pieces not yet finished; 0 = idle */
    bool to_buf;         /* host -> pinned buffer */
    bool queued;         /* offered to the copy threads */
    struct scc_job *qnext;
};

struct scc_buf {
    void *p;
    struct CUevent_st *ev;
    bool busy; /* an async copy was issued and not yet waited for */
    struct scc_job job;
};

struct scc_pool {
    const struct scc_api *api;
    struct scc_budget *budget;
    size_t chunk;
    unsigned nbuf;
    unsigned threads; /* host copy threads, the caller included (1 = the caller alone) */
    size_t min_piece;
    struct scc_buf buf[SCC_MAX_BUFFERS];
};

/*
 * Allocate nbuf pinned buffers of chunk bytes and their events. Returns 0,
 * -ENOSPC when the budget cannot take them, or the runtime's error code of
 * the allocation that failed (nothing is left allocated or reserved).
 * The pool's host copies run on the calling thread alone until
 * scc_pool_set_threads says otherwise.
 */
int scc_pool_init(struct scc_pool *pool, const struct scc_api *api, struct scc_budget *budget,
                  size_t chunk, unsigned nbuf);
/* Wait for outstanding copies, free the buffers, give the budget back. */
void scc_pool_destroy(struct scc_pool *pool);
/* Forget the buffers without calling the runtime (a forked child: the
 * parent's runtime state is not ours to use). The budget is not touched. */
void scc_pool_forget(struct scc_pool *pool);
/* Wait until no copy issued from the pool is in flight (host-side copies
 * included, finished by the caller if need be); first error or 0. */
int scc_pool_drain(struct scc_pool *pool);
/* True when no buffer has a copy in flight (no waiting, no runtime call). */
bool scc_pool_idle(const struct scc_pool *pool);

/*
 * Spread the pool's host-side copies over up to `threads` threads, the
 * caller included: 0 = scc_threads_auto(), 1 = the caller alone; above
 * SCC_THREADS_MAX is SCC_THREADS_MAX. A chunk is cut into pieces of at
 * least min_piece bytes (0 = SCC_MIN_PIECE; rows of a 2D chunk stay whole).
 */
void scc_pool_set_threads(struct scc_pool *pool, unsigned threads, size_t min_piece);
/* `auto`: the CPUs this process may run on (sched_getaffinity), at most
 * SCC_THREADS_AUTO_MAX, at least 1. */
unsigned scc_threads_auto(void);
/* Copy threads running now in this process (not counting callers). */
unsigned scc_threads_running(void);
/* How copy threads are created: pthread_create, swappable so that tests
 * can make creation fail. Set it before any copy runs. */
extern int (*scc_thread_create)(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *),
                                void *arg);

/*
 * A thread-safe set of pools for many transfers in flight at once (an
 * engine I/O thread: one pool per transfer or per connection, taken when
 * the transfer starts and put back when it is done). Pools are reused;
 * new ones are made only within the budget.
 */
struct scc_pool_node;

struct scc_pools {
    const struct scc_api *api;
    struct scc_budget *budget;
    size_t chunk;
    unsigned nbuf;
    unsigned threads;
    size_t min_piece;
    pthread_mutex_t lock;
    struct scc_pool_node *free;
};

void scc_pools_init(struct scc_pools *ps, const struct scc_api *api, struct scc_budget *budget,
                    size_t chunk, unsigned nbuf);
/* scc_pool_set_threads for every pool the set makes from now on. */
void scc_pools_set_threads(struct scc_pools *ps, unsigned threads, size_t min_piece);
/* A pool for one transfer, or NULL with *err = -ENOSPC (budget: retry when
 * a pool was put back), -ENOMEM, or the runtime's error code. */
struct scc_pool *scc_pools_get(struct scc_pools *ps, int *err);
/* Give a pool back (its copies may still be in flight: the next user
 * waits for them). */
void scc_pools_put(struct scc_pools *ps, struct scc_pool *pool);
/* Destroy every pool put back; pools still taken are the caller's bug. */
void scc_pools_destroy(struct scc_pools *ps);

enum scc_dir { SCC_DIR_H2D, SCC_DIR_D2H };

/* One transfer through a pool. Fields are private to the component. */
struct scc_xfer {
    struct scc_pool *pool;
    enum scc_dir dir;
    char *host;
    char *dev;
    size_t n;
    struct CUstream_st *stream;
    int wait; /* enum scc_wait */
    /* 2D transfers (scc_xfer_start_2d); rows = 0 for a 1D one. */
    size_t width, hpitch, dpitch;
    size_t rows;    /* rows per chunk (width <= chunk), or 0 */
    size_t per_row; /* chunks per row (width > chunk), or 0 */
    size_t nchunks;
    size_t issued;  /* chunks whose device-side copy was issued */
    size_t staged;  /* chunks whose host-side copy was started (H2D: >= issued;
                       D2H: between drained and issued) */
    size_t drained; /* D2H: chunks moved to host memory; H2D: chunks known complete */
    int err;
    bool done;
};

/*
 * When a host-to-device transfer is done (device-to-host: always when the
 * data arrived), matching the runtime's rules for pageable sources:
 *   SCC_WAIT_SOURCE  every chunk was handed to the device, the source may be
 *                    reused (cudaMemcpyAsync from pageable memory);
 *   SCC_WAIT_STREAM  and the stream's earlier work completed, the first
 *                    chunk with it (cudaMemcpy: "a stream sync is performed
 *                    before the copy is initiated"; the last chunks may
 *                    still be in flight, as the runtime's DMA may be);
 *   SCC_WAIT_ALL     every byte arrived on the device.
 */
enum scc_wait { SCC_WAIT_SOURCE, SCC_WAIT_STREAM, SCC_WAIT_ALL };

/* Start a transfer of n bytes between host (pageable) and dev (device
 * memory) on stream. */
void scc_xfer_start(struct scc_xfer *x, struct scc_pool *pool, enum scc_dir dir, void *host,
                    void *dev, size_t n, struct CUstream_st *stream, enum scc_wait wait);
/*
 * Start a 2D transfer of height rows of width bytes: host rows hpitch bytes
 * apart (pageable), device rows dpitch apart. Rows travel packed in the
 * pinned buffers: a chunk holds chunk / width whole rows, moved to or from
 * the device with one cudaMemcpy2DAsync; a row wider than a chunk is split
 * into chunk-sized pieces moved with cudaMemcpyAsync. The transfer is then
 * driven like a 1D one (scc_xfer_poll, scc_xfer_run; not chunk mode).
 * Returns 0, or -EINVAL when host is NULL, width or height is 0, width
 * exceeds a pitch, the geometry overflows, or rows fit a chunk and the
 * table has no memcpy2d_async (nothing was started).
 */
int scc_xfer_start_2d(struct scc_xfer *x, struct scc_pool *pool, enum scc_dir dir, void *host,
                      size_t hpitch, void *dev, size_t dpitch, size_t width, size_t height,
                      struct CUstream_st *stream, enum scc_wait wait);

/*
 * Advance a transfer as far as possible. Returns 0 when done, SCC_PENDING
 * when it must wait for the device (only with block = false), or the
 * runtime's error code (> 0, never cudaErrorNotReady). After an error,
 * scc_pool_drain before the pool is used again.
 */
int scc_xfer_poll(struct scc_xfer *x, bool block);
/* Drive a transfer to its end, waiting as needed: 0 or a runtime error. */
int scc_xfer_run(struct scc_xfer *x);

/*
 * Chunk mode, for a transfer started with host = NULL: the caller moves the
 * data itself straight from or into the pinned buffers (an engine sends a
 * device region from them, or receives into them), so no extra host copy.
 *
 * scc_xfer_next_chunk: the next chunk's pinned buffer, in order.
 *   D2H: returns 0 when chunk k arrived from the device (*data, *len hold
 *        it); the device keeps copying the following chunks meanwhile.
 *   H2D: returns 0 with a free buffer for chunk k to be filled with *len
 *        bytes.
 *   SCC_PENDING (block = false) while the device works, SCC_END after the
 *   last chunk, or a runtime error.
 * scc_xfer_chunk_done: the caller is done with that chunk (D2H: its buffer
 *   may be refilled; H2D: it was filled, issue its copy to the device).
 *   0 or a runtime error.
 * An H2D transfer in chunk mode is complete once scc_xfer_poll returns 0
 * after SCC_END.
 */
#define SCC_END (-61)
int scc_xfer_next_chunk(struct scc_xfer *x, bool block, void **data, size_t *len);
int scc_xfer_chunk_done(struct scc_xfer *x);

#endif
