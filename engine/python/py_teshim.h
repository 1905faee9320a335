/*
 * What the two files of the Python module share: the engine object, the
 * buffer helpers, the error helpers (py_teshim.c), and the registration
 * and transfer methods with their docstrings (py_teshim_xfer.c), which
 * py_teshim.c puts in the method table.
 */
#ifndef TESHIM_PY_TESHIM_H
#define TESHIM_PY_TESHIM_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <teshim/engine.h>

#include <stdbool.h>
#include <stdint.h>

#define NAME_MAX_LEN 256

/* A docstring the method table in the other file refers to. */
#define TE_DOC(name, str) const char name[] = PyDoc_STR(str)

extern PyObject *te_error; /* teshim.Error */

typedef struct {
    PyObject_HEAD struct teshim_engine *eng;
    char name[NAME_MAX_LEN]; /* segment name peers open: "host:port" */
    int busy;                /* calls running without the GIL */
    bool raise_errors;
    PyObject *segs;    /* name -> segment handle (int) */
    PyObject *regs;    /* address -> memoryview kept exported, or None */
    PyObject *managed; /* address -> length of allocate_managed_buffer memory */
    PyObject *batches; /* batch id -> list of memoryviews its requests use */
} te_engine;

/* What a Mooncake-named method returns on failure with raise_errors=False. */
enum te_fail {
    TE_FAIL_ERRNO, /* the negative errno, as Mooncake's "negative value on failure" */
    TE_FAIL_ZERO,  /* 0: Mooncake's asynchronous calls return no batch id */
    TE_FAIL_MINUS1,
};

/* A local buffer: an address (mv NULL) or an exported object (mv kept). */
struct te_buf {
    PyObject *mv;
    void *addr;
    size_t len; /* the object's size; SIZE_MAX for an address */
};

__attribute__((format(printf, 2, 3))) PyObject *te_raise(int err, const char *fmt, ...);
PyObject *te_result(te_engine *self, PyObject *res, enum te_fail fail);
PyObject *te_zero(void);
PyThreadState *te_unlock(te_engine *self);
void te_relock(te_engine *self, PyThreadState *ts);
int te_ready(te_engine *self);
int te_buf_get(PyObject *obj, bool writable, struct te_buf *b);
int te_buf_len(const struct te_buf *b, PyObject *len_obj, uint64_t *len_p);
void te_release_views(PyObject *list);
int te_segment(te_engine *self, const char *name, teshim_segment_t *h_p);
void te_segment_drop(te_engine *self, const char *name);
PyObject *te_register_memory(te_engine *self, PyObject *args, PyObject *kw);
extern const char te_register_memory_doc[];
PyObject *te_unregister_memory(te_engine *self, PyObject *args);
extern const char te_unregister_memory_doc[];
PyObject *te_batch_register_memory(te_engine *self, PyObject *args, PyObject *kw);
extern const char te_batch_register_memory_doc[];
PyObject *te_batch_unregister_memory(te_engine *self, PyObject *args);
extern const char te_batch_unregister_memory_doc[];
PyObject *te_allocate_managed_buffer(te_engine *self, PyObject *args);
extern const char te_allocate_managed_buffer_doc[];
PyObject *te_free_managed_buffer(te_engine *self, PyObject *args);
extern const char te_free_managed_buffer_doc[];
PyObject *te_write_bytes_to_buffer(te_engine *self, PyObject *args);
extern const char te_write_bytes_to_buffer_doc[];
PyObject *te_read_bytes_from_buffer(te_engine *self, PyObject *args);
extern const char te_read_bytes_from_buffer_doc[];
PyObject *te_transfer_sync_write(te_engine *self, PyObject *args, PyObject *kw);
extern const char te_transfer_sync_write_doc[];
PyObject *te_transfer_sync_read(te_engine *self, PyObject *args, PyObject *kw);
extern const char te_transfer_sync_read_doc[];
PyObject *te_transfer_sync(te_engine *self, PyObject *args, PyObject *kw);
extern const char te_transfer_sync_doc[];
PyObject *te_transfer_submit_write(te_engine *self, PyObject *args, PyObject *kw);
extern const char te_transfer_submit_write_doc[];
PyObject *te_batch_transfer_sync_write(te_engine *self, PyObject *args, PyObject *kw);
extern const char te_batch_transfer_sync_write_doc[];
PyObject *te_batch_transfer_sync_read(te_engine *self, PyObject *args, PyObject *kw);
extern const char te_batch_transfer_sync_read_doc[];
PyObject *te_batch_transfer_sync(te_engine *self, PyObject *args, PyObject *kw);
extern const char te_batch_transfer_sync_doc[];
PyObject *te_batch_transfer_async_write(te_engine *self, PyObject *args, PyObject *kw);
extern const char te_batch_transfer_async_write_doc[];
PyObject *te_batch_transfer_async_read(te_engine *self, PyObject *args, PyObject *kw);
extern const char te_batch_transfer_async_read_doc[];
PyObject *te_batch_transfer_async(te_engine *self, PyObject *args, PyObject *kw);
extern const char te_batch_transfer_async_doc[];
PyObject *te_get_batch_transfer_status(te_engine *self, PyObject *args);
extern const char te_get_batch_transfer_status_doc[];
PyObject *te_transfer_check_status(te_engine *self, PyObject *args);
extern const char te_transfer_check_status_doc[];

#endif
