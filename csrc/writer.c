/*
 * The Writer: frames out of a non-blocking descriptor (see writer.h).
 *
 * Header and payload leave with one writev(); no concatenated copy is ever
 * made.  A partial write reports how far it got, so the caller can wait
 * for writability and continue the very same frame.
 */
#include "writer.h"

#include "frame.h"

#include <errno.h>
#include <sys/uio.h>
#include <unistd.h>

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
