/*
 * `import teshim`: the registration and transfer methods of
 * TransferEngine (see py_teshim.c for the object and the rules: buffers
 * stay exported while the engine may touch them, the GIL is released
 * around engine calls that may block).
 */
#include "py_teshim.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

/* ---- registrations -------------------------------------------------------- */

/* Register one buffer (object or address) and remember it; 0 or -1 with an exception. */
static int te_register_one(te_engine *self, PyObject *buf, PyObject *len_obj, const char *loc,
                           bool remote)
{
    PyThreadState *ts;
    struct te_buf b;
    uint64_t len;
    PyObject *key = NULL;
    int ret;

    if (te_ready(self) || te_buf_get(buf, false, &b))
        return -1;
    if (te_buf_len(&b, len_obj, &len))
        goto err_release;
    key = PyLong_FromVoidPtr(b.addr);
    if (!key)
        goto err_release;
    ts = te_unlock(self);
    ret = teshim_register(self->eng, b.addr, len, loc, remote);
    te_relock(self, ts);
    if (ret) {
        te_raise(ret, "register %p (%llu bytes, %s)", b.addr, (unsigned long long)len, loc);
        goto err_release;
    }
    if (PyDict_SetItem(self->regs, key, b.mv ? b.mv : Py_None)) {
        teshim_unregister(self->eng, b.addr);
        goto err_release;
    }
    Py_DECREF(key);
    Py_XDECREF(b.mv);
    return 0;

err_release:
    Py_XDECREF(key);
    Py_XDECREF(b.mv);
    return -1;
}

/* Unregister the registration starting at buf's address; 0 or -1 with an exception. */
static int te_unregister_one(te_engine *self, PyObject *buf)
{
    PyThreadState *ts;
    struct te_buf b;
    PyObject *key, *mv;
    int ret;

    if (te_ready(self) || te_buf_get(buf, false, &b))
        return -1;
    Py_XDECREF(b.mv); /* only the address is needed */
    ts = te_unlock(self);
    ret = teshim_unregister(self->eng, b.addr);
    te_relock(self, ts);
    /* -ETIMEDOUT: peers' requests were cut off, the registration is gone
     * all the same: its object is let go, then the error raised */
    if (ret && ret != -ETIMEDOUT) {
        te_raise(ret, "unregister %p", b.addr);
        return -1;
    }
    key = PyLong_FromVoidPtr(b.addr);
    if (!key)
        return -1;
    mv = PyDict_GetItem(self->regs, key);
    if (mv && mv != Py_None) {
        PyObject *r = PyObject_CallMethod(mv, "release", NULL);
        Py_XDECREF(r);
        PyErr_Clear();
    }
    if (mv)
        PyDict_DelItem(self->regs, key);
    Py_DECREF(key);
    if (ret) {
        te_raise(ret,
                 "unregister %p: peers' requests still used it; their connections were "
                 "closed",
                 b.addr);
        return -1;
    }
    return 0;
}

TE_DOC(te_register_memory_doc,
       "register_memory(buffer, capacity=None, location='cpu', remote_accessible=True)\n"
       "    -> 0\n\n"
       "Register memory for transfers. buffer is a contiguous buffer-protocol\n"
       "object (bytearray, memoryview, numpy array, ...), kept exported until it is\n"
       "unregistered, or an integer address (torch: tensor.data_ptr()) with\n"
       "capacity bytes. location: 'cpu' (or 'cpu:N', '*') or 'cuda:N'.\n"
       "remote_accessible lets peers read and write it. Raises teshim.Error\n"
       "(EEXIST when it overlaps a registration, ENODEV without a CUDA runtime).");

static const char *te_location(const char *loc)
{
    if (!loc || !*loc || !strcmp(loc, "*") || !strncmp(loc, "cpu", 3))
        return "cpu";
    return loc;
}

PyObject *te_register_memory(te_engine *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"buffer", "capacity", "location", "remote_accessible", NULL};
    PyObject *buf, *cap = Py_None;
    const char *loc = "cpu";
    int remote = 1;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|Ozp", kwlist, &buf, &cap, &loc, &remote))
        return NULL;
    if (te_register_one(self, buf, cap, te_location(loc), remote))
        return te_result(self, NULL, TE_FAIL_ERRNO);
    return te_zero();
}

TE_DOC(te_unregister_memory_doc,
       "unregister_memory(buffer) -> 0\n\n"
       "Remove the registration starting at buffer (an object or an address) and\n"
       "release the object. Raises teshim.Error (ENOENT when none starts there).");

PyObject *te_unregister_memory(te_engine *self, PyObject *args)
{
    PyObject *buf;

    if (!PyArg_ParseTuple(args, "O", &buf))
        return NULL;
    if (te_unregister_one(self, buf))
        return te_result(self, NULL, TE_FAIL_ERRNO);
    return te_zero();
}

TE_DOC(te_batch_register_memory_doc,
       "batch_register_memory(buffers, capacities=None, location='cpu') -> 0\n\n"
       "register_memory() for each buffer (remote-accessible), all or none: on\n"
       "a failure the ones already registered are unregistered again.");

PyObject *te_batch_register_memory(te_engine *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"buffers", "capacities", "location", NULL};
    PyObject *bufs, *caps = Py_None, *bseq = NULL, *cseq = NULL;
    const char *loc = "cpu";
    Py_ssize_t n, done = 0;
    PyObject *res = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|Oz", kwlist, &bufs, &caps, &loc))
        return NULL;
    bseq = PySequence_Fast(bufs, "buffers must be a sequence");
    if (!bseq)
        return NULL;
    n = PySequence_Fast_GET_SIZE(bseq);
    if (caps != Py_None) {
        cseq = PySequence_Fast(caps, "capacities must be a sequence");
        if (!cseq)
            goto out;
        if (PySequence_Fast_GET_SIZE(cseq) != n) {
            PyErr_SetString(PyExc_ValueError, "buffers and capacities differ in length");
            goto out;
        }
    }
    for (done = 0; done < n; done++)
        if (te_register_one(self, PySequence_Fast_GET_ITEM(bseq, done),
                            cseq ? PySequence_Fast_GET_ITEM(cseq, done) : Py_None, te_location(loc),
                            true))
            break;
    if (done == n) {
        res = te_zero();
        goto out;
    }
    {
        PyObject *type, *val, *tb;
        PyErr_Fetch(&type, &val, &tb);
        while (done--)
            if (te_unregister_one(self, PySequence_Fast_GET_ITEM(bseq, done)))
                PyErr_Clear();
        PyErr_Restore(type, val, tb);
    }
    res = te_result(self, NULL, TE_FAIL_ERRNO);
out:
    Py_XDECREF(cseq);
    Py_DECREF(bseq);
    return res;
}

TE_DOC(te_batch_unregister_memory_doc,
       "batch_unregister_memory(buffers) -> 0\n\n"
       "unregister_memory() for each buffer; every one is tried, the first\n"
       "failure is raised.");

PyObject *te_batch_unregister_memory(te_engine *self, PyObject *args)
{
    PyObject *bufs, *seq, *type = NULL, *val = NULL, *tb = NULL;
    Py_ssize_t n;

    if (!PyArg_ParseTuple(args, "O", &bufs))
        return NULL;
    seq = PySequence_Fast(bufs, "buffers must be a sequence");
    if (!seq)
        return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++)
        if (te_unregister_one(self, PySequence_Fast_GET_ITEM(seq, i))) {
            if (!type)
                PyErr_Fetch(&type, &val, &tb);
            else
                PyErr_Clear();
        }
    Py_DECREF(seq);
    if (type) {
        PyErr_Restore(type, val, tb);
        return te_result(self, NULL, TE_FAIL_ERRNO);
    }
    return te_zero();
}

TE_DOC(te_allocate_managed_buffer_doc,
       "allocate_managed_buffer(length) -> int\n\n"
       "Map length bytes of zeroed host memory, register it remote-accessible\n"
       "and return its address; free_managed_buffer() or close() gives it back\n"
       "(Mooncake's name; teshim maps each buffer instead of carving a pool).");

PyObject *te_allocate_managed_buffer(te_engine *self, PyObject *args)
{
    Py_ssize_t len;
    void *p;
    PyObject *key, *val;
    int ret;

    if (!PyArg_ParseTuple(args, "n", &len))
        return NULL;
    if (len <= 0) {
        PyErr_SetString(PyExc_ValueError, "length must be > 0");
        return NULL;
    }
    if (te_ready(self))
        return te_result(self, NULL, TE_FAIL_ZERO);
    p = mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return te_result(self, te_raise(-errno, "allocate_managed_buffer %zd", len), TE_FAIL_ZERO);
    ret = teshim_register(self->eng, p, (size_t)len, "cpu", true);
    if (ret) {
        munmap(p, (size_t)len);
        return te_result(self, te_raise(ret, "allocate_managed_buffer: register"), TE_FAIL_ZERO);
    }
    key = PyLong_FromVoidPtr(p);
    val = PyLong_FromSsize_t(len);
    if (!key || !val || PyDict_SetItem(self->managed, key, val)) {
        teshim_unregister(self->eng, p);
        munmap(p, (size_t)len);
        Py_XDECREF(val);
        Py_XDECREF(key);
        return NULL;
    }
    Py_DECREF(val);
    return key;
}

TE_DOC(te_free_managed_buffer_doc,
       "free_managed_buffer(buffer_addr, length) -> 0\n\n"
       "Unregister and unmap a buffer of allocate_managed_buffer(). Raises\n"
       "teshim.Error (ENOENT for an address it did not return, EINVAL for\n"
       "another length).");

PyObject *te_free_managed_buffer(te_engine *self, PyObject *args)
{
    PyThreadState *ts;
    PyObject *key, *val;
    Py_ssize_t len;
    void *p;
    int ret;

    if (!PyArg_ParseTuple(args, "On", &key, &len))
        return NULL;
    p = PyLong_AsVoidPtr(key);
    if (PyErr_Occurred())
        return NULL;
    if (te_ready(self))
        return te_result(self, NULL, TE_FAIL_ERRNO);
    val = PyDict_GetItem(self->managed, key);
    if (!val)
        return te_result(self, te_raise(-ENOENT, "free_managed_buffer %p: not managed", p),
                         TE_FAIL_ERRNO);
    if (PyLong_AsSsize_t(val) != len)
        return te_result(self,
                         te_raise(-EINVAL, "free_managed_buffer %p: length %zd, allocated %zd", p,
                                  len, PyLong_AsSsize_t(val)),
                         TE_FAIL_ERRNO);
    ts = te_unlock(self);
    ret = teshim_unregister(self->eng, p);
    te_relock(self, ts);
    if (ret && ret != -ETIMEDOUT) /* -ETIMEDOUT: unregistered, peers cut off */
        return te_result(self, te_raise(ret, "free_managed_buffer %p", p), TE_FAIL_ERRNO);
    munmap(p, (size_t)len);
    if (PyDict_DelItem(self->managed, key))
        return NULL;
    return te_zero();
}

TE_DOC(te_write_bytes_to_buffer_doc,
       "write_bytes_to_buffer(dest_address, src, length=None) -> 0\n\n"
       "Copy length bytes (default: all) of the bytes-like src to the address\n"
       "dest_address in this process (Mooncake's name).");

PyObject *te_write_bytes_to_buffer(te_engine *self, PyObject *args)
{
    unsigned long long dest;
    PyObject *src, *len_obj = Py_None;
    struct te_buf b;
    uint64_t len;

    if (!PyArg_ParseTuple(args, "KO|O", &dest, &src, &len_obj))
        return NULL;
    if (PyLong_Check(src)) {
        PyErr_SetString(PyExc_TypeError, "src must be a bytes-like object");
        return NULL;
    }
    if (te_buf_get(src, false, &b))
        return NULL;
    if (te_buf_len(&b, len_obj, &len)) {
        Py_DECREF(b.mv);
        return NULL;
    }
    memcpy((void *)(uintptr_t)dest, b.addr, len);
    Py_DECREF(b.mv);
    return te_zero();
}

TE_DOC(te_read_bytes_from_buffer_doc,
       "read_bytes_from_buffer(source_address, length) -> bytes\n\n"
       "A copy of length bytes at source_address in this process (Mooncake's\n"
       "name).");

PyObject *te_read_bytes_from_buffer(te_engine *self, PyObject *args)
{
    unsigned long long src;
    Py_ssize_t len;

    if (!PyArg_ParseTuple(args, "Kn", &src, &len))
        return NULL;
    if (len < 0) {
        PyErr_SetString(PyExc_ValueError, "length must be >= 0");
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)(uintptr_t)src, len);
}

/* ---- transfers ------------------------------------------------------------ */

/*
 * Requests of one call: parallel lists (or one buffer) of local buffers,
 * peer addresses and lengths. views holds the exported objects.
 */
struct te_reqs {
    struct teshim_request *r;
    size_t n;
    PyObject *views; /* list of memoryviews */
    uint64_t bytes;
};

static void te_reqs_free(struct te_reqs *q)
{
    PyMem_Free(q->r);
    q->r = NULL;
    Py_CLEAR(q->views);
}

static int te_reqs_add(struct te_reqs *q, size_t i, PyObject *buf, PyObject *peer,
                       PyObject *len_obj, enum teshim_opcode op, teshim_segment_t seg)
{
    struct te_buf b;
    uint64_t len;
    unsigned long long remote;

    remote = PyLong_AsUnsignedLongLong(peer);
    if (PyErr_Occurred())
        return -1;
    if (te_buf_get(buf, op == TESHIM_OP_READ, &b))
        return -1;
    if (te_buf_len(&b, len_obj, &len)) {
        Py_XDECREF(b.mv);
        return -1;
    }
    if (b.mv) {
        int ret = PyList_Append(q->views, b.mv);
        Py_DECREF(b.mv);
        if (ret)
            return -1;
    }
    q->r[i] = (struct teshim_request){op, b.addr, seg, remote, len};
    q->bytes += len;
    return 0;
}

/* Build the requests of a batch call; 0 or -1 with an exception. */
static int te_reqs_build(te_engine *self, const char *target, PyObject *bufs, PyObject *peers,
                         PyObject *lens, enum teshim_opcode op, struct te_reqs *q)
{
    PyObject *bseq = NULL, *pseq = NULL, *lseq = NULL;
    teshim_segment_t seg;
    Py_ssize_t n;
    int ret = -1;

    memset(q, 0, sizeof(*q));
    if (te_segment(self, target, &seg))
        return -1;
    q->views = PyList_New(0);
    bseq = PySequence_Fast(bufs, "buffers must be a sequence");
    pseq = bseq ? PySequence_Fast(peers, "peer_buffer_addresses must be a sequence") : NULL;
    if (!q->views || !pseq)
        goto out;
    n = PySequence_Fast_GET_SIZE(bseq);
    if (lens != Py_None) {
        lseq = PySequence_Fast(lens, "lengths must be a sequence");
        if (!lseq)
            goto out;
    }
    if (!n || PySequence_Fast_GET_SIZE(pseq) != n ||
        (lseq && PySequence_Fast_GET_SIZE(lseq) != n)) {
        PyErr_SetString(PyExc_ValueError,
                        n ? "buffers, peer_buffer_addresses and lengths differ in length"
                          : "no buffers");
        goto out;
    }
    q->r = PyMem_Calloc((size_t)n, sizeof(*q->r));
    if (!q->r) {
        PyErr_NoMemory();
        goto out;
    }
    q->n = (size_t)n;
    for (Py_ssize_t i = 0; i < n; i++)
        if (te_reqs_add(q, (size_t)i, PySequence_Fast_GET_ITEM(bseq, i),
                        PySequence_Fast_GET_ITEM(pseq, i),
                        lseq ? PySequence_Fast_GET_ITEM(lseq, i) : Py_None, op, seg))
            goto out;
    ret = 0;
out:
    Py_XDECREF(lseq);
    Py_XDECREF(pseq);
    Py_XDECREF(bseq);
    if (ret)
        te_reqs_free(q);
    return ret;
}

/*
 * Allocate a batch, submit, and with wait, wait for it, free it and return
 * the first failed task's error (0 when all completed). Without the GIL.
 */
static int te_run(struct teshim_engine *eng, const struct te_reqs *q, bool wait,
                  teshim_batch_t *batch_p)
{
    teshim_batch_t b;
    int ret, err = 0;

    ret = teshim_batch_alloc(eng, q->n, &b);
    if (ret)
        return ret;
    ret = teshim_submit(eng, b, q->r, q->n);
    if (ret < 0)
        goto out_free;
    if (!wait) {
        *batch_p = b;
        return 0;
    }
    ret = teshim_batch_wait(eng, b, -1);
    for (size_t i = 0; ret > 0 && !err && i < q->n; i++) {
        struct teshim_task_status st;
        if (!teshim_task_status(eng, b, i, &st) && st.state != TESHIM_TASK_COMPLETED)
            err = st.error ? st.error : -EIO;
    }
    ret = ret < 0 ? ret : err;
out_free:
    teshim_batch_free(eng, b);
    return ret;
}

/* Run q against target; sync: wait and return 0, else return the batch id. */
static PyObject *te_go(te_engine *self, const char *target, struct te_reqs *q, bool sync)
{
    PyThreadState *ts;
    teshim_batch_t b = 0;
    PyObject *res = NULL, *key, *val;
    int ret;

    ts = te_unlock(self);
    ret = te_run(self->eng, q, sync, &b);
    te_relock(self, ts);
    if (ret) {
        /* a peer that restarted (or, with etcd, left or was replaced):
         * the next call opens the segment again */
        if (ret == -ECONNRESET || ret == -ESTALE || ret == -EHOSTDOWN)
            te_segment_drop(self, target);
        te_raise(ret, "%s %s: %zu request(s), %llu bytes", sync ? "transfer" : "submit", target,
                 q->n, (unsigned long long)q->bytes);
        goto out;
    }
    if (sync) {
        res = te_zero();
        goto out;
    }
    key = PyLong_FromUnsignedLongLong(b);
    val = Py_BuildValue("(nO)", (Py_ssize_t)q->n, q->views);
    if (!key || !val || PyDict_SetItem(self->batches, key, val)) {
        Py_XDECREF(val);
        Py_XDECREF(key);
        goto out; /* the batch stays allocated: its requests may use the buffers */
    }
    Py_DECREF(val);
    res = key;
out:
    te_reqs_free(q);
    return res;
}

/* One request (buffer, peer address, length) as a batch of one. */
static PyObject *te_one(te_engine *self, PyObject *args, PyObject *kw, int op, bool sync)
{
    static char *kwlist[] = {"target_hostname", "buffer",         "peer_buffer_address",
                             "length",          "transport_hint", NULL};
    static char *kwlist_op[] = {
        "target_hostname", "buffer", "peer_buffer_address", "length", "opcode",
        "transport_hint",  NULL};
    const char *target, *hint = NULL;
    PyObject *buf, *peer, *len = Py_None, *bl, *pl, *ll, *res;
    int opcode = op;
    struct te_reqs q;

    if (op < 0) {
        if (!PyArg_ParseTupleAndKeywords(args, kw, "sOOOi|z", kwlist_op, &target, &buf, &peer, &len,
                                         &opcode, &hint))
            return NULL;
    } else {
        if (!PyArg_ParseTupleAndKeywords(args, kw, "sOO|Oz", kwlist, &target, &buf, &peer, &len,
                                         &hint))
            return NULL;
    }
    if (opcode != TESHIM_OP_READ && opcode != TESHIM_OP_WRITE) {
        PyErr_Format(PyExc_ValueError, "opcode %d: TransferOpcode.READ or WRITE", opcode);
        return NULL;
    }
    bl = PyList_New(1);
    pl = PyList_New(1);
    ll = PyList_New(1);
    if (!bl || !pl || !ll) {
        res = NULL;
        goto out;
    }
    Py_INCREF(buf);
    PyList_SET_ITEM(bl, 0, buf);
    Py_INCREF(peer);
    PyList_SET_ITEM(pl, 0, peer);
    Py_INCREF(len);
    PyList_SET_ITEM(ll, 0, len);
    if (te_reqs_build(self, target, bl, pl, ll, (enum teshim_opcode)opcode, &q))
        res = NULL;
    else
        res = te_go(self, target, &q, sync);
out:
    Py_XDECREF(bl);
    Py_XDECREF(pl);
    Py_XDECREF(ll);
    return te_result(self, res, sync ? TE_FAIL_ERRNO : TE_FAIL_ZERO);
}

static PyObject *te_many(te_engine *self, PyObject *args, PyObject *kw, int op, bool sync)
{
    static char *kwlist[] = {
        "target_hostname", "buffers", "peer_buffer_addresses", "lengths", "opcode",
        "transport_hint",  NULL};
    const char *target, *hint = NULL;
    PyObject *bufs, *peers, *lens = Py_None, *res = NULL;
    int opcode = op;
    struct te_reqs q;

    if (op < 0) {
        if (!PyArg_ParseTupleAndKeywords(args, kw, "sOOOi|z", kwlist, &target, &bufs, &peers, &lens,
                                         &opcode, &hint))
            return NULL;
    } else {
        static char *kwlist_rw[] = {"target_hostname", "buffers",        "peer_buffer_addresses",
                                    "lengths",         "transport_hint", NULL};
        if (!PyArg_ParseTupleAndKeywords(args, kw, "sOO|Oz", kwlist_rw, &target, &bufs, &peers,
                                         &lens, &hint))
            return NULL;
    }
    if (opcode != TESHIM_OP_READ && opcode != TESHIM_OP_WRITE) {
        PyErr_Format(PyExc_ValueError, "opcode %d: TransferOpcode.READ or WRITE", opcode);
        return NULL;
    }
    if (!te_reqs_build(self, target, bufs, peers, lens, (enum teshim_opcode)opcode, &q))
        res = te_go(self, target, &q, sync);
    return te_result(self, res, sync ? TE_FAIL_ERRNO : TE_FAIL_ZERO);
}

#define TE_XFER_DOC_ARGS                                                                           \
    "buffer is a buffer-protocol object (the whole object moves unless length\n"                   \
    "says less) or an integer address inside a registration (length needed);\n"                    \
    "peer_buffer_address an address inside one of the peer's remote-accessible\n"                  \
    "registrations. transport_hint is accepted and ignored. The GIL is released\n"                 \
    "while it runs. Raises teshim.Error with the failed request's errno.\n"

TE_DOC(te_transfer_sync_write_doc,
       "transfer_sync_write(target_hostname, buffer, peer_buffer_address, length=None,\n"
       "                    transport_hint=None) -> 0\n\n"
       "Write local buffer to the peer 'host:port' and wait for it.\n" TE_XFER_DOC_ARGS);

PyObject *te_transfer_sync_write(te_engine *self, PyObject *args, PyObject *kw)
{
    return te_one(self, args, kw, TESHIM_OP_WRITE, true);
}

TE_DOC(te_transfer_sync_read_doc,
       "transfer_sync_read(target_hostname, buffer, peer_buffer_address, length=None,\n"
       "                   transport_hint=None) -> 0\n\n"
       "Read from the peer into local buffer (writable) and wait for it.\n" TE_XFER_DOC_ARGS);

PyObject *te_transfer_sync_read(te_engine *self, PyObject *args, PyObject *kw)
{
    return te_one(self, args, kw, TESHIM_OP_READ, true);
}

TE_DOC(te_transfer_sync_doc,
       "transfer_sync(target_hostname, buffer, peer_buffer_address, length, opcode,\n"
       "              transport_hint=None) -> 0\n\n"
       "transfer_sync_read or _write by opcode (TransferOpcode.READ / WRITE).\n"
       "Mooncake's notify argument is not supported.");

PyObject *te_transfer_sync(te_engine *self, PyObject *args, PyObject *kw)
{
    return te_one(self, args, kw, -1, true);
}

TE_DOC(te_transfer_submit_write_doc,
       "transfer_submit_write(target_hostname, buffer, peer_buffer_address,\n"
       "                      length=None, transport_hint=None) -> batch_id\n\n"
       "Start a write and return at once; poll it with transfer_check_status().\n"
       "With raise_errors=False a failure returns 0, as Mooncake's does.");

PyObject *te_transfer_submit_write(te_engine *self, PyObject *args, PyObject *kw)
{
    return te_one(self, args, kw, TESHIM_OP_WRITE, false);
}

TE_DOC(te_batch_transfer_sync_write_doc,
       "batch_transfer_sync_write(target_hostname, buffers, peer_buffer_addresses,\n"
       "                          lengths=None, transport_hint=None) -> 0\n\n"
       "Write several buffers to the peer as one batch and wait for all.\n"
       "Parallel lists; lengths may be None when every buffer is an object.");

PyObject *te_batch_transfer_sync_write(te_engine *self, PyObject *args, PyObject *kw)
{
    return te_many(self, args, kw, TESHIM_OP_WRITE, true);
}

TE_DOC(te_batch_transfer_sync_read_doc,
       "batch_transfer_sync_read(target_hostname, buffers, peer_buffer_addresses,\n"
       "                         lengths=None, transport_hint=None) -> 0\n\n"
       "Read several peer ranges into local buffers as one batch and wait.");

PyObject *te_batch_transfer_sync_read(te_engine *self, PyObject *args, PyObject *kw)
{
    return te_many(self, args, kw, TESHIM_OP_READ, true);
}

TE_DOC(te_batch_transfer_sync_doc,
       "batch_transfer_sync(target_hostname, buffers, peer_buffer_addresses, lengths,\n"
       "                    opcode, transport_hint=None) -> 0\n\n"
       "batch_transfer_sync_read or _write by opcode.");

PyObject *te_batch_transfer_sync(te_engine *self, PyObject *args, PyObject *kw)
{
    return te_many(self, args, kw, -1, true);
}

TE_DOC(te_batch_transfer_async_write_doc,
       "batch_transfer_async_write(target_hostname, buffers, peer_buffer_addresses,\n"
       "                           lengths=None, transport_hint=None) -> batch_id\n\n"
       "Start a batch of writes and return its id at once; collect it with\n"
       "get_batch_transfer_status() (the objects stay exported until then).");

PyObject *te_batch_transfer_async_write(te_engine *self, PyObject *args, PyObject *kw)
{
    return te_many(self, args, kw, TESHIM_OP_WRITE, false);
}

TE_DOC(te_batch_transfer_async_read_doc,
       "batch_transfer_async_read(target_hostname, buffers, peer_buffer_addresses,\n"
       "                          lengths=None, transport_hint=None) -> batch_id\n\n"
       "Start a batch of reads and return its id at once.");

PyObject *te_batch_transfer_async_read(te_engine *self, PyObject *args, PyObject *kw)
{
    return te_many(self, args, kw, TESHIM_OP_READ, false);
}

TE_DOC(te_batch_transfer_async_doc,
       "batch_transfer_async(target_hostname, buffers, peer_buffer_addresses, lengths,\n"
       "                     opcode, transport_hint=None) -> batch_id\n\n"
       "batch_transfer_async_read or _write by opcode.");

PyObject *te_batch_transfer_async(te_engine *self, PyObject *args, PyObject *kw)
{
    return te_many(self, args, kw, -1, false);
}

/* Free a finished batch and release what its requests held. */
static void te_batch_forget(te_engine *self, PyObject *key, teshim_batch_t b)
{
    PyObject *val = PyDict_GetItem(self->batches, key);

    if (teshim_batch_free(self->eng, b))
        return; /* another thread is waiting on it: it stays until collected */
    if (val) {
        te_release_views(PyTuple_GET_ITEM(val, 1));
        PyDict_DelItem(self->batches, key);
    }
}

/* An unfinished asynchronous batch of this engine and its task count. */
static int te_batch_get(te_engine *self, PyObject *key, teshim_batch_t *b_p, size_t *n_p)
{
    PyObject *val;

    if (!PyLong_Check(key)) {
        PyErr_SetString(PyExc_TypeError, "batch ids are integers");
        return -1;
    }
    *b_p = PyLong_AsUnsignedLongLong(key);
    if (PyErr_Occurred())
        return -1;
    val = PyDict_GetItem(self->batches, key);
    if (!val) {
        te_raise(-ENOENT, "batch %llu: not an unfinished batch of this engine",
                 (unsigned long long)*b_p);
        return -1;
    }
    *n_p = (size_t)PyLong_AsSsize_t(PyTuple_GET_ITEM(val, 0));
    return 0;
}

/* The first failed task's error of a finished batch (0: all completed). */
static int te_batch_error(struct teshim_engine *eng, teshim_batch_t b, size_t n)
{
    for (size_t t = 0; t < n; t++) {
        struct teshim_task_status st;
        int ret = teshim_task_status(eng, b, t, &st);
        if (ret)
            return ret;
        if (st.state != TESHIM_TASK_COMPLETED)
            return st.error ? st.error : -EIO;
    }
    return 0;
}

TE_DOC(te_get_batch_transfer_status_doc,
       "get_batch_transfer_status(batch_ids) -> 0\n\n"
       "Wait for asynchronous batches, free them and release their buffers.\n"
       "Raises teshim.Error with the first failed request's errno (with\n"
       "raise_errors=False: returns -1, as Mooncake's does).");

PyObject *te_get_batch_transfer_status(te_engine *self, PyObject *args)
{
    PyThreadState *ts;
    PyObject *ids, *seq;
    Py_ssize_t n;
    int first = 0;

    if (!PyArg_ParseTuple(args, "O", &ids))
        return NULL;
    if (te_ready(self))
        return te_result(self, NULL, TE_FAIL_MINUS1);
    seq = PySequence_Fast(ids, "batch_ids must be a sequence");
    if (!seq)
        return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PySequence_Fast_GET_ITEM(seq, i);
        teshim_batch_t b;
        size_t tasks;
        int ret;

        if (te_batch_get(self, key, &b, &tasks)) {
            Py_DECREF(seq);
            return te_result(self, NULL, TE_FAIL_MINUS1);
        }
        ts = te_unlock(self);
        ret = teshim_batch_wait(self->eng, b, -1);
        if (ret > 0)
            ret = te_batch_error(self->eng, b, tasks);
        te_relock(self, ts);
        if (ret && !first)
            first = ret;
        te_batch_forget(self, key, b);
    }
    Py_DECREF(seq);
    if (first)
        return te_result(self, te_raise(first, "batch failed"), TE_FAIL_MINUS1);
    return te_zero();
}

TE_DOC(te_transfer_check_status_doc,
       "transfer_check_status(batch_id) -> int\n\n"
       "Poll an asynchronous batch: 1 completed, 0 still running, -1 failed,\n"
       "-2 timed out (Mooncake's values). A batch that finished is freed and its\n"
       "buffers released.");

PyObject *te_transfer_check_status(te_engine *self, PyObject *args)
{
    PyObject *key;
    teshim_batch_t b;
    size_t tasks;
    bool running = false, failed = false, timed_out = false;

    if (!PyArg_ParseTuple(args, "O", &key))
        return NULL;
    if (te_ready(self) || te_batch_get(self, key, &b, &tasks))
        return te_result(self, NULL, TE_FAIL_MINUS1);
    for (size_t t = 0; t < tasks; t++) {
        struct teshim_task_status st;
        int ret = teshim_task_status(self->eng, b, t, &st);
        if (ret)
            return te_result(self, te_raise(ret, "transfer_check_status"), TE_FAIL_MINUS1);
        running |= st.state == TESHIM_TASK_WAITING || st.state == TESHIM_TASK_PENDING;
        failed |= st.state == TESHIM_TASK_FAILED;
        timed_out |= st.state == TESHIM_TASK_TIMED_OUT;
    }
    if (running)
        return PyLong_FromLong(0); /* a finished task's buffers may not go before the rest */
    te_batch_forget(self, key, b);
    return PyLong_FromLong(failed ? -1 : timed_out ? -2 : 1);
}
