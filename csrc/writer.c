/*
 * The Writer: frames out of a non-blocking descriptor (see writer.h).
 *
 * Header and payload leave with one writev(); no concatenated copy is ever
 * made, but for a small frame (one write() of a copy on the stack).  A partial write reports how far it got, so the caller can wait
 * for writability and continue the very same frame.
 */
#include "writer.h"

#include "fastpath.h"
#include "frame.h"

#include <errno.h>
#include <string.h>
#include <structmember.h>
#include <sys/uio.h>
#include <unistd.h>

/* Frames up to this size (header included) leave with one write() from a
 * copy on the stack. */
#define SMALL_FRAME 512

/*
 * Write what is left of one frame, advancing *offset (bytes of header and
 * payload written so far) with every byte that leaves, so that progress is
 * known even when a later writev() fails.  Returns 1 when the frame is
 * complete, 0 at EAGAIN or after GIPC_IO_SLICE bytes, -1 with errno set.
 */
static int
write_frame_part(int fd, const unsigned char *hdr, Py_ssize_t hdrlen,
                 const char *data, Py_ssize_t len, Py_ssize_t *offset)
{
    Py_ssize_t total = hdrlen + len;
    Py_ssize_t written = 0;

    if (*offset == 0 && total <= SMALL_FRAME) {
        /* One copy into one write() costs less than a writev() of two
         * pieces, for a frame this small. */
        unsigned char frame[SMALL_FRAME];
        ssize_t n;

        memcpy(frame, hdr, (size_t)hdrlen);
        if (len > 0) {
            memcpy(frame + hdrlen, data, (size_t)len);
        }
        do {
            n = write(fd, frame, (size_t)total);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
        }
        *offset = n;
        if (n == total) {
            return 1;
        }
    }

    while (*offset < total && written < GIPC_IO_SLICE) {
        struct iovec iov[2];
        int iovcnt = 0;
        Py_ssize_t pos = *offset;
        ssize_t n;

        if (pos < hdrlen) {
            iov[iovcnt].iov_base = (void *)(hdr + pos);
            iov[iovcnt].iov_len = (size_t)(hdrlen - pos);
            iovcnt++;
            pos = hdrlen;
        }
        if (len > 0) {
            Py_ssize_t rest = total - pos;
            if (rest > GIPC_IO_SLICE) {
                rest = GIPC_IO_SLICE;
            }
            iov[iovcnt].iov_base = (void *)(data + (pos - hdrlen));
            iov[iovcnt].iov_len = (size_t)rest;
            iovcnt++;
        }
        n = writev(fd, iov, iovcnt);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return 0;
            }
            return -1;
        }
        *offset += n;
        written += n;
    }
    return *offset == total;
}


/*
 * The write end's state.  A frame being written keeps its payload buffer
 * exported until the frame is complete (so a bytearray cannot be resized
 * under it) and its progress here, not in the caller: a caller interrupted
 * between two calls can still ask how much of the frame left.
 */
typedef struct {
    PyObject_HEAD
    int fd;
    int busy;               /* guards against use from two OS threads */
    int pending;            /* a frame is being written */
    Py_buffer view;         /* its payload (valid while pending) */
    unsigned char hdr[GIPC_LONG_HEADER];
    Py_ssize_t hdrlen;
    Py_ssize_t offset;      /* bytes of header and payload written */
} WriterObject;

static int
writer_init(WriterObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", NULL};
    PyObject *fdobj;
    int fd;

    if (self->busy || self->pending) {
        PyErr_SetString(PyExc_RuntimeError, "writer is in use");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:Writer", kwlist,
                                     &fdobj)) {
        return -1;
    }
    if (gipc_fd_from_object(fdobj, &fd) < 0) {
        return -1;
    }
    self->fd = fd;
    return 0;
}

static PyObject *
writer_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    WriterObject *self = (WriterObject *)PyType_GenericNew(type, args, kwds);

    if (self != NULL) {
        self->fd = -1;
    }
    return (PyObject *)self;
}

static void
writer_drop_frame(WriterObject *self)
{
    if (self->pending) {
        PyBuffer_Release(&self->view);
        self->pending = 0;
    }
    self->offset = 0;
}

/* A pending frame's payload may lead back to the writer (a buffer whose
 * owner holds it): dropping the frame breaks such a cycle. */
static int
writer_clear(WriterObject *self)
{
    writer_drop_frame(self);
    return 0;
}

static void
writer_dealloc(WriterObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);

    PyObject_GC_UnTrack(self);
    (void)writer_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int
writer_traverse(WriterObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    if (self->pending) {
        Py_VISIT(self->view.obj);
    }
    return 0;
}

/* Write more of the pending frame: True once it is complete. */
static PyObject *
writer_advance(WriterObject *self)
{
    Py_ssize_t total = self->hdrlen + self->view.len;
    int rc;

    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "pipe writer used by two threads at once");
        return NULL;
    }
    self->busy = 1;
    if (total - self->offset >= GIPC_NOGIL_MIN) {
        Py_BEGIN_ALLOW_THREADS
        rc = write_frame_part(self->fd, self->hdr, self->hdrlen,
                              self->view.buf, self->view.len, &self->offset);
        Py_END_ALLOW_THREADS
    }
    else {
        rc = write_frame_part(self->fd, self->hdr, self->hdrlen,
                              self->view.buf, self->view.len, &self->offset);
    }
    self->busy = 0;
    if (rc < 0) {
        /* The frame stays pending: abandon() tells how far it got. */
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (rc == 0) {
        Py_RETURN_FALSE;
    }
    writer_drop_frame(self);
    Py_RETURN_TRUE;
}

/* send(data) -> bool: start a frame carrying the buffer `data`. */
static PyObject *
writer_send(WriterObject *self, PyObject *data)
{
    if (self->fd < 0) {
        PyErr_SetString(PyExc_ValueError, "writer is closed");
        return NULL;
    }
    if (self->pending) {
        PyErr_SetString(PyExc_RuntimeError,
                        "a frame is still being written: resume() or "
                        "abandon() it first");
        return NULL;
    }
    if (gipc_get_buffer(data, &self->view, PyBUF_C_CONTIGUOUS,
                        "a raw message must be a C-contiguous object "
                        "supporting the buffer protocol") < 0) {
        return NULL;
    }
    if (self->view.len > GIPC_MAX_MESSAGE_SIZE) {
        /* Header plus payload must fit a Py_ssize_t. */
        PyBuffer_Release(&self->view);
        PyErr_SetString(PyExc_OverflowError, "message too large to frame");
        return NULL;
    }
    self->pending = 1;
    self->offset = 0;
    self->hdrlen = gipc_encode_header(self->hdr, (uint64_t)self->view.len);
    return writer_advance(self);
}

/* resume() -> bool: continue the pending frame. */
static PyObject *
writer_resume(WriterObject *self, PyObject *Py_UNUSED(ignored))
{
    if (!self->pending) {
        PyErr_SetString(PyExc_ValueError, "no frame is being written");
        return NULL;
    }
    if (self->fd < 0) {
        PyErr_SetString(PyExc_ValueError, "writer is closed");
        return NULL;
    }
    return writer_advance(self);
}

/*
 * abandon() -> (written, total) or None
 *
 * Give up the pending frame.  Returns how much of it is in the pipe when
 * that is a part (the stream is then out of sync), None when no byte of it
 * left (or no frame was pending).
 */
static PyObject *
writer_abandon(WriterObject *self, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t written = self->offset;
    Py_ssize_t total = self->hdrlen + (self->pending ? self->view.len : 0);
    int partial = self->pending && written > 0;

    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "writer is in use");
        return NULL;
    }
    writer_drop_frame(self);
    if (!partial) {
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(nn)", written, total);
}

/* detach() -> int: forget the descriptor (the caller closes it). */
static PyObject *
writer_detach(WriterObject *self, PyObject *Py_UNUSED(ignored))
{
    int fd = self->fd;

    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "writer is in use");
        return NULL;
    }
    writer_drop_frame(self);
    self->fd = -1;
    return PyLong_FromLong(fd);
}

/* after_fork() -> None: in a forked child, no other thread is inside. */
static PyObject *
writer_after_fork(WriterObject *self, PyObject *Py_UNUSED(ignored))
{
    self->busy = 0;
    Py_RETURN_NONE;
}

static PyObject *
writer_get_fd(WriterObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->fd);
}

static PyMethodDef writer_methods[] = {
    {"send", (PyCFunction)writer_send, METH_O,
     PyDoc_STR("send(data) -> bool\n\n"
               "Start writing one frame carrying the buffer `data` (kept "
               "exported until the frame is complete).  True once the "
               "whole frame is in the pipe; False when the descriptor is "
               "full (or after a bounded slice of work): call resume() once "
               "it is writable.")},
    {"resume", (PyCFunction)writer_resume, METH_NOARGS,
     PyDoc_STR("resume() -> bool\n\nContinue the pending frame.")},
    {"abandon", (PyCFunction)writer_abandon, METH_NOARGS,
     PyDoc_STR("abandon() -> (written, total) or None\n\n"
               "Give up the pending frame; report how much of it is in the "
               "pipe if that is a part of it.")},
    {"detach", (PyCFunction)writer_detach, METH_NOARGS,
     PyDoc_STR("Forget the descriptor and any pending frame; return the "
               "fd.")},
    {"after_fork", (PyCFunction)writer_after_fork, METH_NOARGS,
     PyDoc_STR("In a forked child: forget that a thread of the parent was "
               "inside.")},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef writer_getset[] = {
    {"fd", (getter)writer_get_fd, NULL,
     PyDoc_STR("The descriptor written to, -1 once detached."), NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyType_Slot writer_slots[] = {
    {Py_tp_doc, (void *)PyDoc_STR(
        "Writer(fd)\n\nFrame writer for a non-blocking descriptor.")},
    {Py_tp_init, (void *)writer_init},
    {Py_tp_new, (void *)writer_new},
    {Py_tp_dealloc, (void *)writer_dealloc},
    {Py_tp_traverse, (void *)writer_traverse},
    {Py_tp_clear, (void *)writer_clear},
    {Py_tp_methods, writer_methods},
    {Py_tp_getset, writer_getset},
    {0, NULL}
};

PyType_Spec gipc_writer_spec = {
    .name = "gipc._core.Writer",
    .basicsize = sizeof(WriterObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = writer_slots,
};


/*
 * FastSend: put() of a write handle, send()/send_bytes() of a Connection,
 * as one C call when the frame leaves whole (see fastpath.h).
 */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    WriterObject *writer;
    PyObject *gate;
    PyObject *lock;         /* the lock of the direction (settable) */
    PyObject *full;         /* the Python method, for any other call */
    PyObject *slow;         /* slow(data): the rest the Python way; and
                             * slow(data, True, error), fast_send_finish */
    PyObject *encoder;      /* NULL: the argument is sent raw */
    PyObject *protocol;     /* NULL, or the encoder's second argument */
    PyObject *fallback;     /* NULL, or the encoder of non-plain objects */
    int plain_protocol;     /* 4 or 5 where the encoder is pickle.dumps
                             * with that protocol (gipc_plain_pickle), else
                             * 0 */
} FastSendObject;

/* The message of `obj`, encoded as the endpoint does (a new reference). */
static PyObject *
fast_send_encode(FastSendObject *self, PyObject *obj)
{
    PyObject *data;

    if (self->encoder == NULL) {
        return Py_NewRef(obj);
    }
    if (self->plain_protocol != 0) {
        /* The bytes of pickle.dumps() (and of the fallback, for a plain
         * object), or NULL without an error: pickle's to write. */
        data = gipc_plain_pickle(obj, self->plain_protocol);
        if (data != NULL || PyErr_Occurred()) {
            return data;
        }
    }
    if (self->fallback != NULL && !gipc_plain_tree(obj)) {
        return PyObject_CallOneArg(self->fallback, obj);
    }
    if (self->protocol == NULL) {
        return PyObject_CallOneArg(self->encoder, obj);
    }
    return gipc_call2(self->encoder, obj, self->protocol);
}

/* Hand-overs of a pending frame tried before it is left to the next call
 * (see fast_send_finish). */
#define HAND_OVER_TRIES 3

/*
 * The frame of `data` is pending in the writer: take the lock (free: the
 * Gate said so, and no Python code ran since) and let the Python layer
 * complete the frame, slow(data, True, error) (`error`: the exception a
 * write raised after a part of the frame left, or NULL), and release the
 * lock.
 *
 * The Python layer takes the frame over inside a try statement.  An
 * exception raised before it gets there (a signal handler runs at the
 * entry of a Python function) leaves the frame pending, and the lock
 * taken: then hand the frame over again, with that exception, so that it
 * is abandoned and the endpoint marked broken if a part of it left.
 */
static PyObject *
fast_send_finish(FastSendObject *self, PyObject *data, PyObject *error)
{
    PyObject *result, *exc, *taken;
    int tries;

    taken = PyObject_CallMethod(self->lock, "acquire", "O", Py_False);
    if (taken == NULL) {
        writer_drop_frame(self->writer);
        return NULL;
    }
    Py_DECREF(taken);
    result = gipc_call3(self->slow, data, Py_True,
                        error != NULL ? error : Py_None);
    for (tries = 1; result == NULL && self->writer->pending &&
         tries < HAND_OVER_TRIES; tries++) {
        exc = gipc_take_exception();
        if (exc == NULL) {
            break;
        }
        if (gipc_lock_free(self->gate, self->lock) == 1) {
            /* The Python layer released the lock: take it again. */
            taken = PyObject_CallMethod(self->lock, "acquire", "O",
                                        Py_False);
            Py_XDECREF(taken);
        }
        PyErr_Clear();
        result = gipc_call3(self->slow, data, Py_True, exc);
        Py_DECREF(exc);
    }
    return result;
}

/* Write the encoded `data` as one frame, or hand it to the slow path. */
static PyObject *
fast_send_data(FastSendObject *self, PyObject *data, PyObject *const *args,
               Py_ssize_t nargs)
{
    WriterObject *w = self->writer;
    PyObject *done, *exc;
    /* An encoder is Python code: check again that the endpoint is
     * usable.  (A raw message ran none since the check.) */
    int rc = self->encoder == NULL ?
             gipc_gate_ready(self->gate, self->lock) :
             gipc_gate_open(self->gate, self->lock);

    if (rc < 0) {
        return NULL;
    }
    if (rc == 0 || w->fd < 0 || w->busy || w->pending) {
        goto python_way;
    }
    if (PyObject_GetBuffer(data, &w->view, PyBUF_C_CONTIGUOUS) < 0) {
        /* The Python way gives the exact error of such an object. */
        PyErr_Clear();
        goto python_way;
    }
    if (w->view.len > GIPC_NOGIL_MIN - GIPC_LONG_HEADER) {
        /* A frame this large leaves with the GIL released: under the lock
         * (the Python way), so that a second OS thread waits for it rather
         * than finding the writer busy.  (The copy costs more than that
         * way, too.) */
        PyBuffer_Release(&w->view);
        goto python_way;
    }
    w->pending = 1;
    w->offset = 0;
    w->hdrlen = gipc_encode_header(w->hdr, (uint64_t)w->view.len);
    done = writer_advance(w);
    if (done == Py_True) {
        Py_DECREF(done);
        Py_RETURN_NONE;
    }
    if (done != NULL) {
        Py_DECREF(done);
        return fast_send_finish(self, data, NULL);
    }
    if (w->offset == 0) {
        /* Nothing left: the error is the call's, the stream intact. */
        writer_drop_frame(w);
        return NULL;
    }
    exc = gipc_take_exception();
    done = fast_send_finish(self, data, exc);
    Py_XDECREF(exc);
    return done;

python_way:
    /* A raw message goes the whole Python way: the method checks and
     * converts its arguments itself (send_bytes()'s memoryview). */
    if (self->encoder == NULL) {
        return PyObject_Vectorcall(self->full, args, nargs, NULL);
    }
    return PyObject_CallOneArg(self->slow, data);
}

static PyObject *
fast_send_call(FastSendObject *self, PyObject *const *args, size_t nargsf,
               PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *data, *result;
    int rc;

    if (self->writer == NULL) {
        /* Cleared (a collected cycle): nothing left to call. */
        PyErr_SetString(PyExc_ReferenceError, "the endpoint is gone");
        return NULL;
    }
    if (nargs != 1 || kwnames != NULL) {
        return PyObject_Vectorcall(self->full, args, nargs, kwnames);
    }
    /* The encoder never runs for an endpoint this process may not use. */
    rc = gipc_gate_owned(self->gate);
    if (rc <= 0) {
        return rc < 0 ? NULL : PyObject_Vectorcall(self->full, args, nargs,
                                                   NULL);
    }
    data = fast_send_encode(self, args[0]);
    if (data == NULL) {
        return NULL;
    }
    result = fast_send_data(self, data, args, nargs);
    Py_DECREF(data);
    return result;
}

/* The protocol gipc_plain_pickle() may write for `encoder` called with
 * `protocol`: 4 or 5 if the encoder is pickle's own dumps (the C one,
 * _pickle.dumps) and the protocol one of those, else 0. */
static int
plain_protocol_of(PyObject *encoder, PyObject *protocol)
{
    PyObject *module;
    long value;
    int is_dumps;

    if (protocol == NULL || !PyLong_CheckExact(protocol) ||
        !PyCFunction_Check(encoder)) {
        return 0;
    }
    value = PyLong_AsLong(protocol);
    if (value != 4 && value != 5) {
        PyErr_Clear();
        return 0;
    }
    module = PyCFunction_GET_SELF(encoder);
    is_dumps = strcmp(((PyCFunctionObject *)encoder)->m_ml->ml_name,
                      "dumps") == 0 && module != NULL &&
               PyModule_Check(module) &&
               strcmp(PyModule_GetName(module) != NULL ?
                      PyModule_GetName(module) : "", "_pickle") == 0;
    PyErr_Clear();
    return is_dumps ? (int)value : 0;
}

static PyObject *
fast_send_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"writer", "gate", "lock", "full", "slow",
                             "encoder", "protocol", "fallback", NULL};
    gipc_core_state *st = gipc_core_state_of(type);
    PyObject *writer, *gate, *lock, *full, *slow;
    PyObject *encoder = Py_None, *protocol = NULL, *fallback = Py_None;
    FastSendObject *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOO|OOO:FastSend",
                                     kwlist, &writer, &gate, &lock, &full,
                                     &slow, &encoder, &protocol,
                                     &fallback)) {
        return NULL;
    }
    if (st == NULL ||
        gipc_check_type(writer, st->writer_type, "writer") < 0 ||
        gipc_check_type(gate, st->gate_type, "gate") < 0) {
        return NULL;
    }
    self = (FastSendObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = (vectorcallfunc)fast_send_call;
    self->writer = (WriterObject *)Py_NewRef(writer);
    self->gate = Py_NewRef(gate);
    self->lock = Py_NewRef(lock);
    self->full = Py_NewRef(full);
    self->slow = Py_NewRef(slow);
    self->encoder = encoder == Py_None ? NULL : Py_NewRef(encoder);
    self->protocol = protocol == NULL ? NULL : Py_NewRef(protocol);
    self->fallback = fallback == Py_None ? NULL : Py_NewRef(fallback);
    self->plain_protocol = plain_protocol_of(encoder, protocol);
    return (PyObject *)self;
}

static int
fast_send_traverse(FastSendObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->writer);
    Py_VISIT(self->gate);
    Py_VISIT(self->lock);
    Py_VISIT(self->full);
    Py_VISIT(self->slow);
    Py_VISIT(self->encoder);
    Py_VISIT(self->protocol);
    Py_VISIT(self->fallback);
    return 0;
}

static int
fast_send_clear(FastSendObject *self)
{
    Py_CLEAR(self->writer);
    Py_CLEAR(self->gate);
    Py_CLEAR(self->lock);
    Py_CLEAR(self->full);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->encoder);
    Py_CLEAR(self->protocol);
    Py_CLEAR(self->fallback);
    return 0;
}

static void
fast_send_dealloc(FastSendObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);

    PyObject_GC_UnTrack(self);
    (void)fast_send_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *
fast_send_get_lock(FastSendObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->lock != NULL ? self->lock : Py_None);
}

static int
fast_send_set_lock(FastSendObject *self, PyObject *value,
                   void *Py_UNUSED(closure))
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete lock");
        return -1;
    }
    Py_XSETREF(self->lock, Py_NewRef(value));
    return 0;
}

/* What introspection asks (help(), inspect.signature()) is the Python
 * method's. */
static PyObject *
fast_send_get_wrapped(FastSendObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->full != NULL ? self->full : Py_None);
}

static PyObject *
fast_send_get_doc(FastSendObject *self, void *Py_UNUSED(closure))
{
    if (self->full == NULL) {
        Py_RETURN_NONE;
    }
    return PyObject_GetAttrString(self->full, "__doc__");
}

static PyMemberDef fast_send_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET,
     offsetof(FastSendObject, vectorcall), READONLY, NULL},
    {NULL, 0, 0, 0, NULL}
};

static PyGetSetDef fast_send_getset[] = {
    {"lock", (getter)fast_send_get_lock, (setter)fast_send_set_lock,
     PyDoc_STR("The lock of the direction."), NULL},
    {"__wrapped__", (getter)fast_send_get_wrapped, NULL,
     PyDoc_STR("The Python method this call stands for."), NULL},
    {"__doc__", (getter)fast_send_get_doc, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyType_Slot fast_send_slots[] = {
    {Py_tp_new, (void *)fast_send_new},
    {Py_tp_call, (void *)PyVectorcall_Call},
    {Py_tp_dealloc, (void *)fast_send_dealloc},
    {Py_tp_traverse, (void *)fast_send_traverse},
    {Py_tp_clear, (void *)fast_send_clear},
    {Py_tp_members, fast_send_members},
    {Py_tp_getset, fast_send_getset},
    {0, NULL}
};

PyType_Spec gipc_fast_send_spec = {
    .name = "gipc._core.FastSend",
    .basicsize = sizeof(FastSendObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_HAVE_VECTORCALL,
    .slots = fast_send_slots,
};
