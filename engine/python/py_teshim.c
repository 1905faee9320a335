/*
 * `import teshim`: teshim's engine for Python, on the public API
 * (teshim/engine.h) alone.
 *
 * TransferEngine has the methods of Mooncake's Python TransferEngine
 * (initialize, register_memory, transfer_sync_write, batch_transfer_*,
 * get_rpc_port, ...) and teshim's own (open_segment, segment_regions,
 * stats, close). Buffers are buffer-protocol objects or integer addresses;
 * an object stays exported (a memoryview is kept) for as long as the engine
 * may touch it: while registered, and until an asynchronous batch is
 * collected. The GIL is released around every engine call that may block;
 * `busy` counts those calls so close() cannot pull the engine from under
 * them.
 */
#include "py_teshim.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

PyObject *te_error; /* teshim.Error */

/* Raise teshim.Error(errno, "what: strerror") for a negative errno; NULL. */
__attribute__((format(printf, 2, 3))) PyObject *te_raise(int err, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    PyObject *args;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    args = Py_BuildValue("(is)", -err, what);
    if (args) {
        PyErr_SetObject(te_error, args);
        Py_DECREF(args);
    }
    return NULL;
}

/*
 * res, or with raise_errors=False a teshim.Error turned into a return
 * value, as Mooncake's methods return an error value instead of raising.
 */
PyObject *te_result(te_engine *self, PyObject *res, enum te_fail fail)
{
    PyObject *type, *val, *tb, *no;
    long e = EIO;

    if (res || self->raise_errors || !PyErr_ExceptionMatches(te_error))
        return res;
    PyErr_Fetch(&type, &val, &tb);
    PyErr_NormalizeException(&type, &val, &tb);
    no = val ? PyObject_GetAttrString(val, "errno") : NULL;
    if (no && PyLong_Check(no))
        e = PyLong_AsLong(no);
    PyErr_Clear();
    Py_XDECREF(no);
    Py_XDECREF(type);
    Py_XDECREF(val);
    Py_XDECREF(tb);
    return PyLong_FromLong(fail == TE_FAIL_ZERO ? 0 : fail == TE_FAIL_MINUS1 ? -1 : -e);
}

PyObject *te_zero(void)
{
    return PyLong_FromLong(0);
}

/* Release the GIL around an engine call that may block; close() waits for none. */
PyThreadState *te_unlock(te_engine *self)
{
    self->busy++;
    return PyEval_SaveThread();
}

void te_relock(te_engine *self, PyThreadState *ts)
{
    PyEval_RestoreThread(ts);
    self->busy--;
}

int te_ready(te_engine *self)
{
    if (self->eng)
        return 0;
    te_raise(-ENOTCONN, "engine not started (initialize() or TransferEngine(listen=...))");
    return -1;
}

/* ---- buffers ------------------------------------------------------------ */

/*
 * Read obj as a buffer: an int is an address; anything else must export a
 * contiguous buffer (writable when the engine writes into it).
 */
int te_buf_get(PyObject *obj, bool writable, struct te_buf *b)
{
    Py_buffer *v;

    b->mv = NULL;
    if (PyLong_Check(obj)) {
        unsigned long long a = PyLong_AsUnsignedLongLong(obj);
        if (PyErr_Occurred())
            return -1;
        b->addr = (void *)(uintptr_t)a;
        b->len = SIZE_MAX;
        return 0;
    }
    b->mv = PyMemoryView_FromObject(obj);
    if (!b->mv)
        return -1;
    v = PyMemoryView_GET_BUFFER(b->mv);
    if (!PyBuffer_IsContiguous(v, 'A')) {
        PyErr_SetString(PyExc_ValueError, "buffer is not contiguous");
        goto err_release;
    }
    if (writable && v->readonly) {
        PyErr_SetString(PyExc_TypeError, "buffer is read-only, the engine must write into it");
        goto err_release;
    }
    b->addr = v->buf;
    b->len = (size_t)v->len;
    return 0;

err_release:
    Py_CLEAR(b->mv);
    return -1;
}

/* The length to move: len_obj (None = the whole buffer), at most the buffer. */
int te_buf_len(const struct te_buf *b, PyObject *len_obj, uint64_t *len_p)
{
    unsigned long long n;

    if (!len_obj || len_obj == Py_None) {
        if (!b->mv) {
            PyErr_SetString(PyExc_TypeError, "a length is required with an integer address");
            return -1;
        }
        *len_p = b->len;
        return 0;
    }
    n = PyLong_AsUnsignedLongLong(len_obj);
    if (PyErr_Occurred())
        return -1;
    if (b->mv && n > b->len) {
        PyErr_Format(PyExc_ValueError, "length %llu exceeds the buffer's %zu bytes", n, b->len);
        return -1;
    }
    *len_p = n;
    return 0;
}

/* Drop the reference of every memoryview in list and release its export. */
void te_release_views(PyObject *list)
{
    Py_ssize_t n = PyList_GET_SIZE(list);

    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *r = PyObject_CallMethod(PyList_GET_ITEM(list, i), "release", NULL);
        if (r)
            Py_DECREF(r);
        else
            PyErr_Clear();
    }
}

/* ---- engine life ---------------------------------------------------------- */

static void te_stop(te_engine *self)
{
    PyObject *key, *val;
    Py_ssize_t pos = 0;

    if (self->eng) {
        struct teshim_engine *eng = self->eng;
        self->eng = NULL;
        PyThreadState *ts = PyEval_SaveThread();
        teshim_engine_destroy(eng);
        PyEval_RestoreThread(ts);
    }
    /* the engine is gone: nothing touches these buffers any more */
    while (self->managed && PyDict_Next(self->managed, &pos, &key, &val))
        munmap(PyLong_AsVoidPtr(key), PyLong_AsSize_t(val));
    if (self->managed)
        PyDict_Clear(self->managed);
    pos = 0;
    while (self->regs && PyDict_Next(self->regs, &pos, &key, &val))
        if (val != Py_None) {
            PyObject *r = PyObject_CallMethod(val, "release", NULL);
            Py_XDECREF(r);
        }
    pos = 0;
    while (self->batches && PyDict_Next(self->batches, &pos, &key, &val))
        te_release_views(PyTuple_GET_ITEM(val, 1));
    PyErr_Clear();
    if (self->regs)
        PyDict_Clear(self->regs);
    if (self->batches)
        PyDict_Clear(self->batches);
    if (self->segs)
        PyDict_Clear(self->segs);
}

static void te_dealloc(te_engine *self)
{
    PyObject *type, *val, *tb;

    PyErr_Fetch(&type, &val, &tb); /* an exception on its way out stays set */
    te_stop(self);
    PyErr_Restore(type, val, tb);
    Py_XDECREF(self->segs);
    Py_XDECREF(self->regs);
    Py_XDECREF(self->managed);
    Py_XDECREF(self->batches);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *te_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    te_engine *self = (te_engine *)type->tp_alloc(type, 0);

    if (!self)
        return NULL;
    self->raise_errors = true;
    self->segs = PyDict_New();
    self->regs = PyDict_New();
    self->managed = PyDict_New();
    self->batches = PyDict_New();
    if (!self->segs || !self->regs || !self->managed || !self->batches) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int te_parse_transport(const char *s, enum teshim_transport *t)
{
    if (!s || !strcmp(s, "default"))
        *t = TESHIM_TRANSPORT_DEFAULT;
    else if (!strcmp(s, "auto"))
        *t = TESHIM_TRANSPORT_AUTO;
    else if (!strcmp(s, "tcp"))
        *t = TESHIM_TRANSPORT_TCP;
    else if (!strcmp(s, "local"))
        *t = TESHIM_TRANSPORT_LOCAL;
    else if (!strcmp(s, "rdma"))
        *t = TESHIM_TRANSPORT_RDMA;
    else
        return -1;
    return 0;
}

/*
 * Create the engine listening on listen ("HOST:PORT", port 0 = any);
 * name_host, when set, names the segment "name_host:port" (else listen's
 * host with the bound port).
 */
static int te_start(te_engine *self, const char *listen, const char *local_name,
                    const char *metadata, enum teshim_transport transport)
{
    struct teshim_engine_opts o = {.size = sizeof(o)};
    struct teshim_engine *eng;
    PyThreadState *ts;
    char host[NAME_MAX_LEN - 16]; /* room for ":port" in name */
    const char *colon;
    int ret, port;

    if (self->eng) {
        te_raise(-EALREADY, "engine already started as %s", self->name);
        return -1;
    }
    colon = strrchr(listen, ':');
    if (!colon || (size_t)(colon - listen) >= sizeof(host)) {
        te_raise(-EINVAL, "listen address '%s' is not HOST:PORT", listen);
        return -1;
    }
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    o.listen = listen;
    o.local_name = local_name;
    o.metadata = metadata;
    o.transport = transport;
    ts = PyEval_SaveThread();
    ret = teshim_engine_create(&o, &eng);
    PyEval_RestoreThread(ts);
    if (ret) {
        te_raise(ret, "engine_create on %s", listen);
        return -1;
    }
    port = teshim_engine_port(eng);
    if (metadata && local_name) /* published in etcd under local_name */
        snprintf(self->name, sizeof(self->name), "%s", local_name);
    else
        snprintf(self->name, sizeof(self->name), "%s:%d", host, port);
    self->eng = eng;
    return 0;
}

static int te_init(te_engine *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"listen", "local_name", "transport", "raise_errors", NULL};
    const char *listen = NULL, *local_name = NULL, *transport = NULL;
    enum teshim_transport t;
    int raise_errors = 1;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "|z$zzp", kwlist, &listen, &local_name, &transport,
                                     &raise_errors))
        return -1;
    if (te_parse_transport(transport, &t)) {
        PyErr_Format(PyExc_ValueError, "transport '%s': auto, tcp, local, rdma or default",
                     transport);
        return -1;
    }
    self->raise_errors = raise_errors;
    return listen ? te_start(self, listen, local_name, NULL, t) : 0;
}

/* Mooncake's metadata string -> engine.metadata (NULL = p2p). */
static const char *te_metadata(const char *server, const char *type, char *buf, size_t cap)
{
    if (!server || !*server || !strcmp(server, "P2PHANDSHAKE") ||
        (type && !strcmp(type, "p2p") && !strstr(server, "://")))
        return NULL;
    if (strstr(server, "://"))
        return server;
    snprintf(buf, cap, "%s://%s", type && *type ? type : "etcd", server);
    return buf;
}

static PyObject *te_initialize_common(te_engine *self, const char *local_hostname,
                                      const char *server, const char *protocol, const char *type)
{
    char host[NAME_MAX_LEN], listen[NAME_MAX_LEN + 8], meta[NAME_MAX_LEN];
    const char *end, *metadata;
    size_t hl;

    if (protocol && *protocol && strcmp(protocol, "tcp"))
        return te_raise(-EPROTONOSUPPORT, "protocol '%s' (teshim's engine offers tcp)", protocol);
    /* Mooncake's P2P mode takes the host of local_hostname and a port of its own */
    if (local_hostname[0] == '[') {
        end = strchr(local_hostname, ']');
        end = end ? end + 1 : local_hostname + strlen(local_hostname);
    } else {
        end = strchr(local_hostname, ':');
        if (!end || strchr(end + 1, ':'))
            end = local_hostname + strlen(local_hostname);
    }
    hl = (size_t)(end - local_hostname);
    if (!hl || hl >= sizeof(host))
        return te_raise(-EINVAL, "local_hostname '%s'", local_hostname);
    memcpy(host, local_hostname, hl);
    host[hl] = '\0';
    snprintf(listen, sizeof(listen), strchr(host, ':') && host[0] != '[' ? "[%s]:0" : "%s:0", host);
    metadata = te_metadata(server, type, meta, sizeof(meta));
    /* with etcd, local_hostname is the name published there, as in Mooncake */
    if (te_start(self, listen, metadata ? local_hostname : NULL, metadata,
                 TESHIM_TRANSPORT_DEFAULT))
        return NULL;
    return te_zero();
}

PyDoc_STRVAR(te_initialize_doc,
             "initialize(local_hostname, metadata_server, protocol='tcp', device_name='') -> 0\n\n"
             "Start the engine as Mooncake's TransferEngine.initialize does. With\n"
             "metadata_server 'P2PHANDSHAKE' (the embedded handshake) the engine listens\n"
             "on the host of local_hostname ('host', 'host:port', '[v6]:port') on a port\n"
             "the kernel picks; peers name this engine 'host:port' (segment_name,\n"
             "get_rpc_port). With 'etcd://HOST:PORT[,HOST:PORT...]' (or a bare\n"
             "'HOST:PORT', meaning etcd) the engine publishes itself in etcd under\n"
             "local_hostname (segment_name), which peers open by that name.\n"
             "protocol must be 'tcp' (or empty); device_name is ignored.\n"
             "Raises teshim.Error (errno EPROTONOSUPPORT, EADDRNOTAVAIL, ...).");

static PyObject *te_initialize(te_engine *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"local_hostname", "metadata_server", "protocol", "device_name", NULL};
    const char *local_hostname, *server, *protocol = "tcp", *device = "";

    if (!PyArg_ParseTupleAndKeywords(args, kw, "ss|zz", kwlist, &local_hostname, &server, &protocol,
                                     &device))
        return NULL;
    return te_result(self, te_initialize_common(self, local_hostname, server, protocol, NULL),
                     TE_FAIL_ERRNO);
}

PyDoc_STRVAR(te_initialize_ext_doc,
             "initialize_ext(local_hostname, metadata_server, protocol, device_name,\n"
             "               metadata_type) -> 0\n\n"
             "initialize() with the metadata type named apart ('p2p' for the embedded\n"
             "handshake, 'etcd', ...), as Mooncake's initialize_ext.");

static PyObject *te_initialize_ext(te_engine *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"local_hostname", "metadata_server", "protocol",
                             "device_name",    "metadata_type",   NULL};
    const char *local_hostname, *server, *protocol, *device, *type;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "sszzz", kwlist, &local_hostname, &server, &protocol,
                                     &device, &type))
        return NULL;
    return te_result(self, te_initialize_common(self, local_hostname, server, protocol, type),
                     TE_FAIL_ERRNO);
}

PyDoc_STRVAR(te_close_doc,
             "close() -> None\n\n"
             "Stop the engine: unfinished requests are canceled, connections closed,\n"
             "registered objects released and managed buffers freed. Raises\n"
             "teshim.Error (EBUSY) while another thread is inside a call of this\n"
             "engine. Also done by 'with' and when the object is collected.");

static PyObject *te_close(te_engine *self, PyObject *unused)
{
    if (self->busy)
        return te_raise(-EBUSY, "close: %d call(s) of this engine still running", self->busy);
    te_stop(self);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(te_enter_doc, "__enter__() -> self\n\nThe engine, for a 'with' block.");

static PyObject *te_enter(te_engine *self, PyObject *unused)
{
    Py_INCREF(self);
    return (PyObject *)self;
}

PyDoc_STRVAR(te_exit_doc, "__exit__(*exc) -> False\n\nclose() at the end of a 'with' block.");

static PyObject *te_exit(te_engine *self, PyObject *args)
{
    PyObject *r = te_close(self, NULL);
    if (!r)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_FALSE;
}

PyDoc_STRVAR(te_get_rpc_port_doc, "get_rpc_port() -> int\n\n"
                                  "The port the engine listens on (Mooncake's name).");

static PyObject *te_get_rpc_port(te_engine *self, PyObject *unused)
{
    int port;

    if (te_ready(self))
        return te_result(self, NULL, TE_FAIL_ERRNO);
    port = teshim_engine_port(self->eng);
    if (port < 0)
        return te_result(self, te_raise(port, "get_rpc_port"), TE_FAIL_ERRNO);
    return PyLong_FromLong(port);
}

/* ---- segments ------------------------------------------------------------- */

/* The handle of segment name, opened (a handshake, without the GIL) and cached. */
int te_segment(te_engine *self, const char *name, teshim_segment_t *h_p)
{
    PyThreadState *ts;
    PyObject *cached, *v;
    teshim_segment_t h;
    int ret;

    if (te_ready(self))
        return -1;
    cached = PyDict_GetItemString(self->segs, name);
    if (cached) {
        *h_p = PyLong_AsLongLong(cached);
        return 0;
    }
    ts = te_unlock(self);
    ret = teshim_segment_open(self->eng, name, &h);
    te_relock(self, ts);
    if (ret) {
        te_raise(ret, "open segment %s", name);
        return -1;
    }
    cached = PyDict_GetItemString(self->segs, name);
    if (cached) { /* another thread opened it while we had no GIL */
        teshim_segment_close(self->eng, h);
        *h_p = PyLong_AsLongLong(cached);
        return 0;
    }
    v = PyLong_FromLongLong(h);
    if (!v || PyDict_SetItemString(self->segs, name, v)) {
        Py_XDECREF(v);
        teshim_segment_close(self->eng, h);
        return -1;
    }
    Py_DECREF(v);
    *h_p = h;
    return 0;
}

/* Forget a cached segment whose peer went away, so the next call reopens it. */
void te_segment_drop(te_engine *self, const char *name)
{
    PyObject *cached = PyDict_GetItemString(self->segs, name);

    if (cached && !teshim_segment_close(self->eng, PyLong_AsLongLong(cached)))
        PyDict_DelItemString(self->segs, name);
}

PyDoc_STRVAR(te_open_segment_doc,
             "open_segment(name) -> int\n\n"
             "Open the segment of the peer engine 'host:port' (a handshake) and cache\n"
             "it; transfers to the name use the cache. Returns the engine's handle.");

static PyObject *te_open_segment(te_engine *self, PyObject *args)
{
    const char *name;
    teshim_segment_t h;

    if (!PyArg_ParseTuple(args, "s", &name))
        return NULL;
    if (te_segment(self, name, &h))
        return NULL;
    return PyLong_FromLongLong(h);
}

PyDoc_STRVAR(te_close_segment_doc,
             "close_segment(name) -> None\n\n"
             "Close a cached segment and its connections. Raises teshim.Error\n"
             "(ENOENT when not open, EBUSY while requests to it run).");

static PyObject *te_close_segment(te_engine *self, PyObject *args)
{
    const char *name;
    PyObject *cached;
    int ret;

    if (!PyArg_ParseTuple(args, "s", &name))
        return NULL;
    if (te_ready(self))
        return NULL;
    cached = PyDict_GetItemString(self->segs, name);
    if (!cached)
        return te_raise(-ENOENT, "close segment %s: not open", name);
    ret = teshim_segment_close(self->eng, PyLong_AsLongLong(cached));
    if (ret)
        return te_raise(ret, "close segment %s", name);
    if (PyDict_DelItemString(self->segs, name))
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(te_segment_regions_doc,
             "segment_regions(name) -> list of (address, length, is_device)\n\n"
             "The remote-accessible registrations the peer announced (the segment is\n"
             "opened and cached first).");

static PyObject *te_segment_regions(te_engine *self, PyObject *args)
{
    struct teshim_region *r = NULL;
    const char *name;
    teshim_segment_t h;
    PyObject *list = NULL;
    int n, max = 0;

    if (!PyArg_ParseTuple(args, "s", &name))
        return NULL;
    if (te_segment(self, name, &h))
        return NULL;
    for (;;) { /* the list may grow between two calls (local transport refreshes) */
        n = teshim_segment_regions(self->eng, h, r, (size_t)max);
        if (n < 0) {
            te_raise(n, "segment_regions %s", name);
            goto out_free;
        }
        if (n <= max)
            break;
        PyMem_Free(r);
        max = n;
        r = PyMem_Calloc((size_t)max, sizeof(*r));
        if (!r) {
            PyErr_NoMemory();
            goto out_free;
        }
    }
    list = PyList_New(n);
    for (int i = 0; list && i < n; i++) {
        PyObject *t =
            Py_BuildValue("(KKO)", (unsigned long long)r[i].addr, (unsigned long long)r[i].len,
                          r[i].flags & TESHIM_REGION_DEVICE ? Py_True : Py_False);
        if (!t)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, i, t);
    }
out_free:
    PyMem_Free(r);
    return list;
}

PyDoc_STRVAR(te_get_first_buffer_address_doc,
             "get_first_buffer_address(segment_name) -> int\n\n"
             "The address of the first remote-accessible registration of a peer's\n"
             "segment, 0 when it has none (Mooncake's name).");

static PyObject *te_get_first_buffer_address(te_engine *self, PyObject *args)
{
    PyObject *list = te_segment_regions(self, args), *res;

    if (!list)
        return te_result(self, NULL, TE_FAIL_ERRNO);
    res = PyList_GET_SIZE(list) ? PyTuple_GET_ITEM(PyList_GET_ITEM(list, 0), 0) : NULL;
    res = res ? (Py_INCREF(res), res) : te_zero();
    Py_DECREF(list);
    return res;
}

PyDoc_STRVAR(te_segment_transport_doc,
             "segment_transport(name) -> str\n\n"
             "The data path of a peer's segment: 'tcp', 'rdma', 'local' (same host, the\n"
             "initiator copies) or 'local-target' (same host, the target checks and copies).");

static PyObject *te_segment_transport(te_engine *self, PyObject *args)
{
    const char *name, *t;
    teshim_segment_t h;

    if (!PyArg_ParseTuple(args, "s", &name))
        return NULL;
    if (te_segment(self, name, &h))
        return NULL;
    t = teshim_segment_transport(self->eng, h);
    if (!t)
        return te_raise(-EINVAL, "segment_transport %s", name);
    return PyUnicode_FromString(t);
}

PyDoc_STRVAR(te_send_probe_doc,
             "send_probe(peer_server_name) -> 0\n\n"
             "Check that a peer answers: a fresh handshake with it (Mooncake's name).\n"
             "Raises teshim.Error when it cannot be reached.");

static PyObject *te_send_probe(te_engine *self, PyObject *args)
{
    PyThreadState *ts;
    const char *name;
    teshim_segment_t h;
    int ret;

    if (!PyArg_ParseTuple(args, "s", &name))
        return NULL;
    if (te_ready(self))
        return te_result(self, NULL, TE_FAIL_ERRNO);
    ts = te_unlock(self);
    ret = teshim_segment_open(self->eng, name, &h);
    if (!ret)
        ret = teshim_segment_close(self->eng, h);
    te_relock(self, ts);
    if (ret)
        return te_result(self, te_raise(ret, "probe %s", name), TE_FAIL_ERRNO);
    return te_zero();
}

/* ---- information ---------------------------------------------------------- */

PyDoc_STRVAR(te_stats_doc,
             "stats() -> dict\n\n"
             "The engine's counters: submitted, finished, failed, active, waiting,\n"
             "bytes, conn_new, conn_reuse, conn_retries, conn_closed_idle, conn_broken,\n"
             "connections, accepted, peer_rejected, local_fallbacks, rdma_staged,\n"
             "rdma_gpu_fallbacks.");

static PyObject *te_stats(te_engine *self, PyObject *unused)
{
    struct teshim_engine_stats st;
    int ret;

    if (te_ready(self))
        return NULL;
    ret = teshim_engine_stats(self->eng, &st);
    if (ret)
        return te_raise(ret, "stats");
    return Py_BuildValue(
        "{sKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsK}", "submitted", (unsigned long long)st.submitted,
        "finished", (unsigned long long)st.finished, "failed", (unsigned long long)st.failed,
        "active", (unsigned long long)st.active, "waiting", (unsigned long long)st.waiting, "bytes",
        (unsigned long long)st.bytes, "conn_new", (unsigned long long)st.conn_new, "conn_reuse",
        (unsigned long long)st.conn_reuse, "conn_retries", (unsigned long long)st.conn_retries,
        "conn_closed_idle", (unsigned long long)st.conn_closed_idle, "conn_broken",
        (unsigned long long)st.conn_broken, "connections", (unsigned long long)st.connections,
        "accepted", (unsigned long long)st.accepted, "peer_rejected",
        (unsigned long long)st.peer_rejected, "local_fallbacks",
        (unsigned long long)st.local_fallbacks, "rdma_staged", (unsigned long long)st.rdma_staged,
        "rdma_gpu_fallbacks", (unsigned long long)st.rdma_gpu_fallbacks);
}

static PyObject *te_get_segment_name(te_engine *self, void *unused)
{
    if (te_ready(self))
        return NULL;
    return PyUnicode_FromString(self->name);
}

static PyObject *te_get_port(te_engine *self, void *unused)
{
    if (te_ready(self))
        return NULL;
    return PyLong_FromLong(teshim_engine_port(self->eng));
}

static PyObject *te_get_started(te_engine *self, void *unused)
{
    return PyBool_FromLong(self->eng != NULL);
}

static PyGetSetDef te_getset[] = {
    {"segment_name", (getter)te_get_segment_name, NULL,
     "The name peers open this engine by: 'host:port' (str).", NULL},
    {"port", (getter)te_get_port, NULL, "The port the engine listens on (int).", NULL},
    {"started", (getter)te_get_started, NULL, "Whether the engine runs (bool).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

#define TE_KW(name)                                                                                \
    {                                                                                              \
#name, (PyCFunction)(void (*)(void))te_##name, METH_VARARGS | METH_KEYWORDS,               \
            te_##name##_doc                                                                        \
    }
#define TE_VA(name)                                                                                \
    {                                                                                              \
#name, (PyCFunction)(void (*)(void))te_##name, METH_VARARGS, te_##name##_doc               \
    }
#define TE_NO(name)                                                                                \
    {                                                                                              \
#name, (PyCFunction)(void (*)(void))te_##name, METH_NOARGS, te_##name##_doc                \
    }

static PyMethodDef te_methods[] = {
    TE_KW(initialize),
    TE_KW(initialize_ext),
    TE_NO(get_rpc_port),
    TE_KW(register_memory),
    TE_VA(unregister_memory),
    TE_KW(batch_register_memory),
    TE_VA(batch_unregister_memory),
    TE_KW(transfer_sync_write),
    TE_KW(transfer_sync_read),
    TE_KW(transfer_sync),
    TE_KW(transfer_submit_write),
    TE_VA(transfer_check_status),
    TE_KW(batch_transfer_sync_write),
    TE_KW(batch_transfer_sync_read),
    TE_KW(batch_transfer_sync),
    TE_KW(batch_transfer_async_write),
    TE_KW(batch_transfer_async_read),
    TE_KW(batch_transfer_async),
    TE_VA(get_batch_transfer_status),
    TE_VA(allocate_managed_buffer),
    TE_VA(free_managed_buffer),
    TE_VA(get_first_buffer_address),
    TE_VA(write_bytes_to_buffer),
    TE_VA(read_bytes_from_buffer),
    TE_VA(send_probe),
    TE_VA(open_segment),
    TE_VA(close_segment),
    TE_VA(segment_regions),
    TE_VA(segment_transport),
    TE_NO(stats),
    TE_NO(close),
    {"__enter__", (PyCFunction)(void (*)(void))te_enter, METH_NOARGS, te_enter_doc},
    {"__exit__", (PyCFunction)(void (*)(void))te_exit, METH_VARARGS, te_exit_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(te_type_doc,
             "TransferEngine(listen=None, *, local_name=None, transport=None,\n"
             "               raise_errors=True)\n\n"
             "teshim's transfer engine. As Mooncake's TransferEngine: construct it\n"
             "without arguments, then initialize(local_hostname, 'P2PHANDSHAKE', 'tcp',\n"
             "''). teshim's way: TransferEngine('127.0.0.1:0') starts it at once,\n"
             "listening on HOST:PORT (port 0 = any), announced as local_name or\n"
             "'host:port'. transport: 'auto' (same-host peers by process_vm_*, others\n"
             "tcp), 'tcp', 'local', 'rdma' or None (engine.transport of the policy table).\n\n"
             "Failures raise teshim.Error (an OSError: .errno, .strerror). With\n"
             "raise_errors=False the Mooncake-named methods return Mooncake's failure\n"
             "values instead (a negative errno; 0 for a batch id; -1 for a batch\n"
             "status). Argument errors always raise TypeError / ValueError.");

static PyTypeObject te_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "teshim.TransferEngine",
    .tp_basicsize = sizeof(te_engine),
    .tp_dealloc = (destructor)te_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = te_type_doc,
    .tp_methods = te_methods,
    .tp_getset = te_getset,
    .tp_init = (initproc)te_init,
    .tp_new = te_new,
};

/* ---- module --------------------------------------------------------------- */

PyDoc_STRVAR(te_module_doc,
             "teshim's native transfer engine.\n\n"
             "TransferEngine moves bytes between registered memory of this process and\n"
             "of peer engines (other processes or hosts) over tcp, or process_vm_* on\n"
             "the same host. Its methods follow Mooncake's Python TransferEngine\n"
             "(initialize, register_memory, transfer_sync_write/read,\n"
             "batch_transfer_*, get_rpc_port, ...) and add teshim's own (open_segment,\n"
             "segment_regions, stats, close). Buffers are buffer-protocol objects\n"
             "(bytearray, memoryview, numpy arrays) or integer addresses (torch:\n"
             "tensor.data_ptr()). Errors raise teshim.Error, an OSError with errno.\n\n"
             "    import numpy, teshim\n"
             "    a = numpy.zeros(1 << 20, numpy.uint8)\n"
             "    with teshim.TransferEngine('127.0.0.1:0') as e:\n"
             "        e.register_memory(a)\n"
             "        e.transfer_sync_read('10.0.0.5:7777', a, peer_address)\n\n"
             "Configuration: the engine.* rows of teshim's policy table\n"
             "(TESHIM_ENGINE_* environment, config file); see docs/engine.md.");

PyDoc_STRVAR(te_error_doc, "teshim.Error(errno, message): an engine call failed; an OSError whose\n"
                           "errno and strerror say why (e.g. ECONNREFUSED when a peer cannot be\n"
                           "reached, EFAULT for a range outside the registrations).");

static struct PyModuleDef te_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "teshim",
    .m_doc = te_module_doc,
    .m_size = -1,
};

/* TransferOpcode as an IntEnum, like Mooncake's enum (READ = 0, WRITE = 1). */
static int te_add_opcode(PyObject *m)
{
    PyObject *enum_mod, *cls, *name, *doc;

    enum_mod = PyImport_ImportModule("enum");
    if (!enum_mod)
        return -1;
    cls = PyObject_CallMethod(enum_mod, "IntEnum", "s[(si)(si)]", "TransferOpcode", "READ",
                              (int)TESHIM_OP_READ, "WRITE", (int)TESHIM_OP_WRITE);
    Py_DECREF(enum_mod);
    if (!cls)
        return -1;
    name = PyModule_GetNameObject(m);
    doc = PyUnicode_FromString("Transfer direction: READ (peer -> local), WRITE (local -> peer).");
    if (!name || !doc || PyObject_SetAttrString(cls, "__module__", name) ||
        PyObject_SetAttrString(cls, "__doc__", doc) || PyModule_AddObject(m, "TransferOpcode", cls))
        goto err_free;
    Py_DECREF(name);
    Py_DECREF(doc);
    return 0;

err_free:
    Py_XDECREF(doc);
    Py_XDECREF(name);
    Py_DECREF(cls);
    return -1;
}

PyMODINIT_FUNC PyInit_teshim(void);

PyMODINIT_FUNC PyInit_teshim(void)
{
    PyObject *m;

    if (PyType_Ready(&te_type) < 0)
        return NULL;
    m = PyModule_Create(&te_module);
    if (!m)
        return NULL;
    te_error = PyErr_NewExceptionWithDoc("teshim.Error", te_error_doc, PyExc_OSError, NULL);
    if (!te_error)
        goto err_module;
    Py_INCREF(te_error);
    if (PyModule_AddObject(m, "Error", te_error)) {
        Py_DECREF(te_error);
        goto err_module;
    }
    Py_INCREF(&te_type);
    if (PyModule_AddObject(m, "TransferEngine", (PyObject *)&te_type)) {
        Py_DECREF(&te_type);
        goto err_module;
    }
    if (te_add_opcode(m) || PyModule_AddStringConstant(m, "__version__", TESHIM_VERSION))
        goto err_module;
    return m;

err_module:
    Py_DECREF(m);
    return NULL;
}
