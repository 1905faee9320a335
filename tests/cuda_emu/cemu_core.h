/*
 * The emulated driver's machinery (device memory, streams, events, capture:
 * cemu_mem.c, cemu_stream.c), as the emulated runtime reaches it. Both live
 * in the emulated libcuda.so.1, as on a real system the memory and streams
 * belong to the driver. The runtime (shared or static) opens libcuda.so.1
 * itself and gets this table through cuGetExportTable with CEMU_CORE_UUID,
 * the way NVIDIA's runtime gets its private driver tables; the copy entry
 * points it takes through cuGetProcAddress like the real one
 * (cemu_core_client.c).
 *
 * CEMU_CORE_FNS(X, V) lists X(RET, NAME, (PARAMS), (ARGS)), V for void ones: the struct fields,
 * the driver's table and the runtime's forwarding functions are made from it.
 */
#ifndef TESHIM_CEMU_CORE_H
#define TESHIM_CEMU_CORE_H

#include "cemu.h"

/* The export table's id: 16 bytes no NVIDIA table uses. */
#define CEMU_CORE_UUID "teshim-cemu-core"

#define CEMU_CORE_FNS(X, V)                                                                        \
    V(void, cemu_where, (const void *ptr, struct cemu_where *w), (ptr, w))                         \
    V(void, cemu_where_span, (const void *ptr, size_t span, struct cemu_where *w), (ptr, span, w)) \
    X(cudaError_t, cemu_dev_alloc, (void **p, size_t size), (p, size))                             \
    X(cudaError_t, cemu_dev_free, (void *p), (p))                                                  \
    X(cudaError_t, cemu_pinned_alloc, (void **p, size_t size, unsigned flags), (p, size, flags))   \
    X(cudaError_t, cemu_pinned_free, (void *p), (p))                                               \
    X(cudaError_t, cemu_pinned_register, (void *p, size_t size, unsigned flags), (p, size, flags)) \
    X(cudaError_t, cemu_pinned_unregister, (void *p), (p))                                         \
    X(cudaError_t, cemu_managed_alloc, (void **p, size_t size), (p, size))                         \
    V(void, cemu_set_device, (int device), (device))                                               \
    X(int, cemu_get_device, (void), ())                                                            \
    X(struct CUstream_st *, cemu_stream_get, (cudaStream_t s, enum cemu_flavour fl), (s, fl))      \
    X(cudaError_t, cemu_stream_create, (cudaStream_t * ps, unsigned flags), (ps, flags))           \
    X(cudaError_t, cemu_stream_destroy, (cudaStream_t s), (s))                                     \
    X(unsigned, cemu_stream_flags, (struct CUstream_st * st), (st))                                \
    X(bool, cemu_stream_capturing, (struct CUstream_st * st), (st))                                \
    X(uint64_t, cemu_submit_copy,                                                                  \
      (struct CUstream_st * st, void *dst, const void *src, size_t n, int value, void *free_src),  \
      (st, dst, src, n, value, free_src))                                                          \
    X(uint64_t, cemu_submit_copy2d,                                                                \
      (struct CUstream_st * st, void *dst, size_t dpitch, const void *src, size_t spitch,          \
       size_t width, size_t height, void *free_src),                                               \
      (st, dst, dpitch, src, spitch, width, height, free_src))                                     \
    X(uint64_t, cemu_submit_marker, (struct CUstream_st * st), (st))                               \
    X(uint64_t, cemu_submit_host_fn, (struct CUstream_st * st, cudaHostFn_t fn, void *arg),        \
      (st, fn, arg))                                                                               \
    V(void, cemu_stream_wait_seq, (struct CUstream_st * st, uint64_t seq), (st, seq))              \
    V(void, cemu_device_sync, (void), ())                                                          \
    X(bool, cemu_stream_idle, (struct CUstream_st * st), (st))                                     \
    X(cudaError_t, cemu_event_create, (cudaEvent_t * pe, unsigned flags), (pe, flags))             \
    X(cudaError_t, cemu_event_destroy, (cudaEvent_t e), (e))                                       \
    X(cudaError_t, cemu_event_record, (cudaEvent_t e, struct CUstream_st * st), (e, st))           \
    X(cudaError_t, cemu_event_query, (cudaEvent_t e), (e))                                         \
    X(cudaError_t, cemu_event_sync, (cudaEvent_t e), (e))                                          \
    X(cudaError_t, cemu_event_elapsed, (float *ms, cudaEvent_t a, cudaEvent_t b), (ms, a, b))      \
    X(cudaError_t, cemu_stream_wait_event, (struct CUstream_st * st, cudaEvent_t e), (st, e))      \
    X(cudaError_t, cemu_capture_begin, (struct CUstream_st * st), (st))                            \
    V(void, cemu_capture_invalidate, (struct CUstream_st * st), (st))                              \
    X(cudaError_t, cemu_capture_end, (struct CUstream_st * st, cudaGraph_t * g), (st, g))          \
    X(cudaError_t, cemu_graph_instantiate, (cudaGraphExec_t * ge, cudaGraph_t g), (ge, g))         \
    X(cudaError_t, cemu_graph_launch, (cudaGraphExec_t ge, struct CUstream_st * st), (ge, st))     \
    X(cudaError_t, cemu_graph_destroy, (void *g), (g))                                             \
    V(void, cemu_count_copy, (enum cemu_dir dir, enum cemu_host_type ht, size_t n, bool is2d),     \
      (dir, ht, n, is2d))                                                                          \
    X(int, cemu_test_hold_stream, (void *s), (s))                                                  \
    X(int, cemu_test_release_stream, (void *s), (s))                                               \
    V(void, cemu_test_hold_new_streams, (int on), (on))                                            \
    V(void, cemu_test_release_all_streams, (void), ())                                             \
    X(uint64_t, cemu_test_stream_pending, (void *s), (s))                                          \
    X(uint64_t, cemu_test_blocked_ops, (void), ())                                                 \
    X(uint64_t, cemu_test_stream_copies, (void *s), (s))                                           \
    X(uint64_t, cemu_test_copies, (enum cemu_dir dir, enum cemu_host_type host), (dir, host))      \
    X(uint64_t, cemu_test_copy_bytes, (enum cemu_dir dir, enum cemu_host_type host), (dir, host))  \
    X(uint64_t, cemu_test_copies_2d, (void), ())                                                   \
    V(void, cemu_test_reset_counters, (void), ())                                                  \
    V(void, cemu_test_fail_host_alloc, (int n), (n))                                               \
    X(uint64_t, cemu_test_pinned_bytes, (void), ())

struct cemu_core {
    size_t size; /* sizeof(struct cemu_core) of the driver */
#define CEMU_CORE_FIELD(ret, name, params, args) ret(*name) params;
    CEMU_CORE_FNS(CEMU_CORE_FIELD, CEMU_CORE_FIELD)
#undef CEMU_CORE_FIELD
};

/* Count one copy requested through either API (cemu_drv.c). */
void cemu_count_copy(enum cemu_dir dir, enum cemu_host_type ht, size_t n, bool is2d);

/* Runtime side (cemu_core_client.c): open libcuda.so.1 like NVIDIA's
 * runtime and fill cemu_drv; 0, or the cudaError_t to report. */
cudaError_t cemu_core_connect(void);
/* The runtime's one-time initialisation (cemu_api.c), which connects. */
void cemu_runtime_init(void);

/* The driver entry points the runtime calls for its copies, by stream
 * flavour (CEMU_LEGACY_API, CEMU_PTSZ_API), as cuGetProcAddress gave them. */
struct cemu_drv_copy {
    int (*htod[2])(unsigned long long dst, const void *src, size_t n);
    int (*dtoh[2])(void *dst, unsigned long long src, size_t n);
    int (*any[2])(unsigned long long dst, unsigned long long src, size_t n);
    int (*htod_async[2])(unsigned long long dst, const void *src, size_t n, struct CUstream_st *s);
    int (*dtoh_async[2])(void *dst, unsigned long long src, size_t n, struct CUstream_st *s);
    int (*any_async[2])(unsigned long long dst, unsigned long long src, size_t n,
                        struct CUstream_st *s);
    /* cuMemcpy2DUnaligned and cuMemcpy2DAsync (their CUDA_MEMCPY2D). */
    int (*copy2d[2])(const struct CUDA_MEMCPY2D_st *p);
    int (*copy2d_async[2])(const struct CUDA_MEMCPY2D_st *p, struct CUstream_st *s);
};
extern struct cemu_drv_copy cemu_drv;

#endif
