/*
 * Internals of the emulated CUDA runtime. Built with the real CUDA headers
 * and __CUDA_API_VERSION_INTERNAL, as NVIDIA builds its own runtime: the
 * headers then declare both the legacy names and the _ptds/_ptsz names, so
 * every exported function is checked against the real prototype.
 *
 * Memory: device allocations live in one memfd mapped twice. The view whose
 * addresses the application gets is PROT_NONE, so a host access to device
 * memory faults as on a real GPU; the stream workers copy through a second,
 * read-write view of the same pages.
 *
 * Streams: each stream has a worker thread running its operations in order.
 * Cross-stream rules are dependencies fixed when an operation is submitted
 * (see cemu_stream.c). One global lock and one condition variable keep it
 * simple; the emulation is for correctness, not speed.
 */
#ifndef TESHIM_CEMU_H
#define TESHIM_CEMU_H

#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "cemu_test.h"

#define CEMU_EXPORT __attribute__((visibility("default")))

/* ---- memory (cemu_mem.c) ---------------------------------------------- */

enum cemu_mem_kind {
    CEMU_MEM_PAGEABLE,
    CEMU_MEM_PINNED,
    CEMU_MEM_MANAGED,
    CEMU_MEM_DEVICE,
};

/* Where a pointer lies. For device memory, *rw is the worker-side address. */
struct cemu_where {
    enum cemu_mem_kind kind;
    char *rw;     /* address to read or write this byte through */
    size_t avail; /* bytes from ptr to the end of its allocation (device) */
    void *base;   /* start of the allocation or pinned range; NULL if pageable */
    bool valid;   /* false: a device-range address outside any allocation */
};

int cemu_mem_init(void);
void cemu_where(const void *ptr, struct cemu_where *w);
/* The same for a copy of span bytes from ptr: one that starts in a
 * registered range and reaches past it goes through the application's view
 * (the pinned alias covers the registration only). */
void cemu_where_span(const void *ptr, size_t span, struct cemu_where *w);
/* Where the dst and src of a copy lie, each over its span; false when a
 * device side is not allocated for all of its span (invalid value). */
static inline bool cemu_where_copy(const void *dst, size_t dspan, const void *src, size_t sspan,
                                   struct cemu_where *wd, struct cemu_where *ws)
{
    cemu_where_span(dst, dspan, wd);
    cemu_where_span(src, sspan, ws);
    return !(wd->kind == CEMU_MEM_DEVICE && (!wd->valid || wd->avail < dspan)) &&
           !(ws->kind == CEMU_MEM_DEVICE && (!ws->valid || ws->avail < sspan));
}
cudaError_t cemu_dev_alloc(void **p, size_t size);
cudaError_t cemu_dev_free(void *p);
/* Pinned host ranges: allocate (MallocHost/HostAlloc), register, release. */
cudaError_t cemu_pinned_alloc(void **p, size_t size, unsigned flags);
cudaError_t cemu_pinned_free(void *p);
cudaError_t cemu_pinned_register(void *p, size_t size, unsigned flags);
cudaError_t cemu_pinned_unregister(void *p);
cudaError_t cemu_managed_alloc(void **p, size_t size);

/* ---- streams and events (cemu_stream.c) ------------------------------- */

enum cemu_stream_kind { CEMU_S_LEGACY, CEMU_S_PER_THREAD, CEMU_S_BLOCKING, CEMU_S_NONBLOCKING };

struct cemu_op;

/* How a NULL stream handle is read: by the legacy API or the _ptsz one. */
enum cemu_flavour { CEMU_LEGACY_API, CEMU_PTSZ_API };

#define CEMU_MAX_DEVICES 8
/* The calling thread's current device (cudaSetDevice). */
void cemu_set_device(int device);
int cemu_get_device(void);

struct CUstream_st *cemu_stream_get(cudaStream_t s, enum cemu_flavour fl);
cudaError_t cemu_stream_create(cudaStream_t *ps, unsigned flags);
cudaError_t cemu_stream_destroy(cudaStream_t s);
unsigned cemu_stream_flags(struct CUstream_st *st);
bool cemu_stream_capturing(struct CUstream_st *st);

/*
 * Submit a copy (or memset when src is NULL: fill with value) on st; the
 * host-visible addresses are already translated. free_src is free()d after
 * the copy ran (staged pageable data). Returns the operation's sequence
 * number on its stream, for cemu_stream_wait_seq.
 */
uint64_t cemu_submit_copy(struct CUstream_st *st, void *dst, const void *src, size_t n, int value,
                          void *free_src);
/* Submit a 2D copy: height rows of width bytes, rows dpitch and spitch
 * apart (translated addresses, checked by the caller). */
uint64_t cemu_submit_copy2d(struct CUstream_st *st, void *dst, size_t dpitch, const void *src,
                            size_t spitch, size_t width, size_t height, void *free_src);
uint64_t cemu_submit_marker(struct CUstream_st *st);
uint64_t cemu_submit_host_fn(struct CUstream_st *st, cudaHostFn_t fn, void *arg);
void cemu_stream_wait_seq(struct CUstream_st *st, uint64_t seq);
/* Wait for everything submitted to st so far (plain stream synchronize). */
void cemu_stream_sync(struct CUstream_st *st);
void cemu_device_sync(void);
/* No stream has work left (no waiting). */
bool cemu_device_idle(void);
/* Wait up to timeout_ms for no stream to have work left; true if none has. */
bool cemu_device_wait_idle(int timeout_ms);
bool cemu_stream_idle(struct CUstream_st *st);

cudaError_t cemu_event_create(cudaEvent_t *pe, unsigned flags);
cudaError_t cemu_event_destroy(cudaEvent_t e);
cudaError_t cemu_event_record(cudaEvent_t e, struct CUstream_st *st);
cudaError_t cemu_event_query(cudaEvent_t e);
cudaError_t cemu_event_sync(cudaEvent_t e);
cudaError_t cemu_event_elapsed(float *ms, cudaEvent_t a, cudaEvent_t b);
cudaError_t cemu_stream_wait_event(struct CUstream_st *st, cudaEvent_t e);

/* Stream capture: operations are recorded into a graph instead of run. */
cudaError_t cemu_capture_begin(struct CUstream_st *st);
/* A call that may not run during capture was made: the capture fails. */
void cemu_capture_invalidate(struct CUstream_st *st);
cudaError_t cemu_capture_end(struct CUstream_st *st, cudaGraph_t *g);
cudaError_t cemu_graph_instantiate(cudaGraphExec_t *ge, cudaGraph_t g);
cudaError_t cemu_graph_launch(cudaGraphExec_t ge, struct CUstream_st *st);
cudaError_t cemu_graph_destroy(void *g);

void cemu_stream_count_copy(struct CUstream_st *st);
void cemu_streams_atfork_child(void);

/* ---- API state (cemu_api.c) ------------------------------------------- */

extern pthread_mutex_t cemu_lock;
extern pthread_cond_t cemu_cond;

#endif
