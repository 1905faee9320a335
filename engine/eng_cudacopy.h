/*
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

struct CUstream_st;
struct CUevent_st;

/* cudaError_t values the component interprets. */
#define SCC_SUCCESS 0
#define SCC_ERR_MEMORY_ALLOCATION 2
#define SCC_ERR_NOT_READY 600
/* cudaMemcpyKind values. */
#define SCC_H2D 1
#define SCC_D2H 2
#define SCC_MAX_BUFFERS 16
/* scc_xfer_poll: the transfer waits for the device (never a cudaError_t). */
#define SCC_PENDING (-11)

/* The runtime entry points used, with the runtime's prototypes. */
struct scc_api {
    int (*malloc_host)(void **p, size_t n);
    int (*free_host)(void *p);
    int (*memcpy_async)(void *dst, const void *src, size_t n, int kind, struct CUstream_st *s);
    int (*event_create_with_flags)(struct CUevent_st **e, unsigned flags);
    int (*event_destroy)(struct CUevent_st *e);
    int (*event_record)(struct CUevent_st *e, struct CUstream_st *s);
    int (*event_query)(struct CUevent_st *e);
    int (*event_synchronize)(struct CUevent_st *e);
    /* cudaMemcpy2DAsync; optional (NULL: no 2D transfers, scc_xfer_start_2d
     * refuses those that need it). */
    int (*memcpy2d_async)(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                          size_t height, int kind, struct CUstream_st *s);
};

/*
 * Fill api from a runtime opened with dlopen (an engine that loads
 * libcudart.so.13/.12 itself): 0, or -ENOENT when a function is missing
 * (*missing names it); the optional memcpy2d_async is NULL when absent.
 * The shim resolves its own table with dlvsym.
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

struct scc_buf {
    void *p;
    struct CUevent_st *ev;
    bool busy; /* an async copy was issued and not yet waited for */
};

struct scc_pool {
    const struct scc_api *api;
    struct scc_budget *budget;
    size_t chunk;
    unsigned nbuf;
    struct scc_buf buf[SCC_MAX_BUFFERS];
};

/*
 * Allocate nbuf pinned buffers of chunk bytes and their events. Returns 0,
 * -ENOSPC when the budget cannot take them, or the runtime's error code of
 * the allocation that failed (nothing is left allocated or reserved).
 */
int scc_pool_init(struct scc_pool *pool, const struct scc_api *api, struct scc_budget *budget,
                  size_t chunk, unsigned nbuf);
/* Wait for outstanding copies, free the buffers, give the budget back. */
void scc_pool_destroy(struct scc_pool *pool);
/* Forget the buffers without calling the runtime (a forked child: the
 * parent's runtime state is not ours to use). The budget is not touched. */
void scc_pool_forget(struct scc_pool *pool);
/* Wait until no copy issued from the pool is in flight; first error or 0. */
int scc_pool_drain(struct scc_pool *pool);
/* True when no buffer has a copy in flight (no waiting, no runtime call). */
bool scc_pool_idle(const struct scc_pool *pool);

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
    pthread_mutex_t lock;
    struct scc_pool_node *free;
};

void scc_pools_init(struct scc_pools *ps, const struct scc_api *api, struct scc_budget *budget,
                    size_t chunk, unsigned nbuf);
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
