/*
 * Framed pipe I/O (see frame.h for the wire format).
 *
 * Writing: header and payload leave with one writev(); no concatenated copy
 * is ever made.  A partial write reports how far it got, so the caller can
 * wait for writability and continue the very same frame.
 *
 * Reading: a Reader keeps a buffer per read end.  One read() may bring many
 * small frames; all of them are parsed before the descriptor is read again.
 * A large payload is read straight into the bytes object that is returned,
 * allocated once at its final size.  The state of a frame that is only
 * partly received survives between calls, so a caller that stops waiting
 * (a timeout) can resume the same frame later without losing sync.
 *
 * Threads: a Reader or Writer releases the GIL around large transfers and
 * spins.  Its `busy` flag makes a second OS thread's call fail (instead of
 * corrupting the frame state) meanwhile.  The flag is tested and set in
 * two plain steps, not atomically: that is safe only because both run
 * with the GIL held and nothing between them releases it.  The module
 * declares Py_MOD_GIL_USED, so a free-threaded build keeps the GIL on
 * while gipc._core is imported.
 */
#include "frame.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <poll.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define READ_BUFFER_DEFAULT (64 * 1024)
#define READ_BUFFER_MIN 64

/* ------------------------------------------------------------------ */
/* Header encoding                                                    */
/* ------------------------------------------------------------------ */

static int
encode_header(unsigned char *out, uint64_t n)
{
    int i;

    if (n <= (uint64_t)GIPC_SHORT_MAX) {
        for (i = 3; i >= 0; i--) {
            out[i] = (unsigned char)(n & 0xff);
            n >>= 8;
        }
        return 4;
    }
    memset(out, 0xff, 4);
    for (i = 11; i >= 4; i--) {
        out[i] = (unsigned char)(n & 0xff);
        n >>= 8;
    }
    return 12;
}

static uint64_t
decode_be(const unsigned char *p, int width)
{
    uint64_t v = 0;
    int i;

    for (i = 0; i < width; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

static PyObject *
set_errno_error(int code, const char *fmt, ...)
{
    PyObject *msg, *exc;
    va_list vargs;

    va_start(vargs, fmt);
    msg = PyUnicode_FromFormatV(fmt, vargs);
    va_end(vargs);
    if (msg == NULL) {
        return NULL;
    }
    exc = PyObject_CallFunction(PyExc_OSError, "iO", code, msg);
    Py_DECREF(msg);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Writing                                                            */
/* ------------------------------------------------------------------ */

static int
fd_from_object(PyObject *obj, int *fd)
{
    int value = PyObject_AsFileDescriptor(obj);

    if (value < 0) {
        return -1;
    }
    *fd = value;
    return 0;
}

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

/* ------------------------------------------------------------------ */
/* Writer                                                             */
/* ------------------------------------------------------------------ */

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
    unsigned char hdr[12];
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
    if (fd_from_object(fdobj, &fd) < 0) {
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
    if (PyObject_GetBuffer(data, &self->view, PyBUF_C_CONTIGUOUS) < 0) {
        if (PyErr_ExceptionMatches(PyExc_TypeError) ||
            PyErr_ExceptionMatches(PyExc_BufferError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError,
                         "a raw message must be a C-contiguous object "
                         "supporting the buffer protocol, not %.200s",
                         Py_TYPE(data)->tp_name);
        }
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
    self->hdrlen = encode_header(self->hdr, (uint64_t)self->view.len);
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

/* ------------------------------------------------------------------ */
/* Reading                                                            */
/* ------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    int fd;
    int busy;               /* guards against use from two OS threads */
    Py_ssize_t max_size;    /* largest payload accepted */
    char *buf;
    Py_ssize_t cap;
    Py_ssize_t start;       /* unparsed bytes are buf[start:end] */
    Py_ssize_t end;
    PyObject *payload;      /* large frame being received, or NULL */
    Py_ssize_t filled;      /* bytes of payload received so far */
    /* read_frame_into: a caller's buffer that a large payload is being read
     * into, held across calls so the same call sequence can resume it. */
    PyObject *target_obj;
    Py_buffer target;
    Py_ssize_t target_off;
    Py_ssize_t target_len;
    /* For the current call only: until when (CLOCK_MONOTONIC, ns) to spin
     * on an empty pipe before reporting that it would block; 0: no spin. */
    int64_t spin_until;
    /* Adaptive spinning (see spin_for_input): spins in a row that caught
     * nothing, waits left that go straight to sleep, and the length of the
     * next such pause. */
    int spin_misses;
    int spin_skip;
    int spin_pause;
} ReaderObject;

/* max_size bounds every announced length, so that no header length plus
 * payload length computed by the parser can overflow. */
static int
check_max_size(Py_ssize_t n)
{
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "max_size must not be negative");
        return -1;
    }
    if (n > GIPC_MAX_MESSAGE_SIZE) {
        PyErr_Format(PyExc_ValueError, "max_size must be at most %zd",
                     (Py_ssize_t)GIPC_MAX_MESSAGE_SIZE);
        return -1;
    }
    return 0;
}

static void
release_target(ReaderObject *self)
{
    if (self->target_obj != NULL) {
        PyBuffer_Release(&self->target);
        Py_CLEAR(self->target_obj);
    }
}

static int
reader_init(ReaderObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", "max_size", "buffer_size", NULL};
    PyObject *fdobj;
    Py_ssize_t max_size, cap = READ_BUFFER_DEFAULT;
    int fd;
    char *buf;

    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "reader is in use");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "On|n:Reader", kwlist,
                                     &fdobj, &max_size, &cap)) {
        return -1;
    }
    if (fd_from_object(fdobj, &fd) < 0) {
        return -1;
    }
    if (check_max_size(max_size) < 0) {
        return -1;
    }
    if (cap < READ_BUFFER_MIN) {
        cap = READ_BUFFER_MIN;
    }
    buf = PyMem_Malloc((size_t)cap);
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    PyMem_Free(self->buf);
    release_target(self);
    Py_CLEAR(self->payload);
    self->buf = buf;
    self->cap = cap;
    self->fd = fd;
    self->max_size = max_size;
    self->start = self->end = self->filled = 0;
    return 0;
}

/* A caller's buffer being filled may lead back to the reader (its owner
 * holds the reader): releasing it breaks such a cycle. */
static int
reader_clear(ReaderObject *self)
{
    release_target(self);
    Py_CLEAR(self->payload);
    self->filled = 0;
    return 0;
}

static void
reader_dealloc(ReaderObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);

    PyObject_GC_UnTrack(self);
    (void)reader_clear(self);
    PyMem_Free(self->buf);
    self->buf = NULL;
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int
reader_traverse(ReaderObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->payload);
    Py_VISIT(self->target_obj);
    if (self->target_obj != NULL) {
        /* The buffer export holds a reference of its own. */
        Py_VISIT(self->target.obj);
    }
    return 0;
}


static int64_t
monotonic_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * Adaptive spinning.  A spin pays off on a channel whose replies come
 * within microseconds; on one whose messages come seldom it only burns
 * SPIN_US of CPU (and of the event loop) before every sleep.  After
 * SPIN_MISS_LIMIT spins in a row that caught nothing, the next waits of
 * this reader go straight to sleep: SPIN_PAUSE_MIN of them, then, if the
 * spin that probes the channel after the pause misses too, twice as many,
 * up to SPIN_PAUSE_MAX.  A spin that catches data ends any pause.
 */
#define SPIN_MISS_LIMIT 4
#define SPIN_PAUSE_MIN 16
#define SPIN_PAUSE_MAX 1024

/* Whether this wait may spin (a pause consumes one wait). */
static int
spin_allowed(ReaderObject *self)
{
    if (self->spin_skip > 0) {
        self->spin_skip--;
        self->spin_until = 0;
        return 0;
    }
    return 1;
}

static void
spin_record(ReaderObject *self, int caught)
{
    if (caught) {
        self->spin_misses = 0;
        self->spin_pause = SPIN_PAUSE_MIN;
        return;
    }
    if (++self->spin_misses < SPIN_MISS_LIMIT) {
        return;
    }
    if (self->spin_pause < SPIN_PAUSE_MIN) {
        self->spin_pause = SPIN_PAUSE_MIN;
    }
    self->spin_skip = self->spin_pause;
    if (self->spin_pause <= SPIN_PAUSE_MAX / 2) {
        self->spin_pause *= 2;
    }
    /* After the pause, one more miss starts the next (longer) one. */
    self->spin_misses = SPIN_MISS_LIMIT - 1;
}

/*
 * The pipe is empty: poll it without sleeping until it has input or the
 * spin deadline passes.  A reader that sleeps in the kernel must be woken
 * by the writer (a cross-CPU wake-up, costly on virtual machines); one that
 * spins a few microseconds for a reply that is about to arrive is not.
 * Spins at most once per call.  Returns 1 if the pipe became readable.
 */
static int
spin_for_input(ReaderObject *self)
{
    struct pollfd pfd;
    int ready = 0;
    int64_t until = self->spin_until;

    self->spin_until = 0;
    pfd.fd = self->fd;
    pfd.events = POLLIN;
    Py_BEGIN_ALLOW_THREADS
    do {
        pfd.revents = 0;
        if (poll(&pfd, 1, 0) > 0) {
            ready = 1;
            break;
        }
    } while (monotonic_ns() < until);
    Py_END_ALLOW_THREADS
    spin_record(self, ready);
    return ready;
}

/*
 * Read into dst, at most `want` bytes, retrying EINTR (and spinning on
 * EAGAIN while the reader's spin deadline allows).  Returns bytes read, 0 at
 * EOF, -1 with errno set (EAGAIN included), -2 if a signal handler raised.
 * Runs without the GIL when the read may be large.
 */
static ssize_t
read_some(ReaderObject *self, char *dst, Py_ssize_t want)
{
    ssize_t n;

    for (;;) {
        if (want >= GIPC_NOGIL_MIN) {
            Py_BEGIN_ALLOW_THREADS
            n = read(self->fd, dst, (size_t)want);
            Py_END_ALLOW_THREADS
        }
        else {
            n = read(self->fd, dst, (size_t)want);
        }
        if (n >= 0) {
            return n;
        }
        if (errno == EINTR) {
            if (PyErr_CheckSignals() < 0) {
                errno = EINTR;
                return -2;
            }
            continue;
        }
        if ((errno == EAGAIN || errno == EWOULDBLOCK) &&
            self->spin_until != 0 && spin_allowed(self)) {
            if (spin_for_input(self)) {
                continue;
            }
            errno = EAGAIN;
        }
        return n;
    }
}

enum { STEP_ERROR = -1, STEP_WAIT = 0, STEP_DONE = 1 };

static int
truncated_error(Py_ssize_t got, Py_ssize_t expected)
{
    if (expected < 0) {
        set_errno_error(EPROTO,
                        "pipe closed in the middle of a message header "
                        "(%zd bytes of it received)", got);
    }
    else {
        set_errno_error(EPROTO,
                        "pipe closed in the middle of a message "
                        "(%zd of %zd payload bytes received)", got, expected);
    }
    return STEP_ERROR;
}

/* The step after a failed read_some(): wait on EAGAIN, else an error
 * (already set when a signal handler raised). */
static int
read_failed(ssize_t n)
{
    if (n == -2) {
        return STEP_ERROR;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return STEP_WAIT;
    }
    PyErr_SetFromErrno(PyExc_OSError);
    return STEP_ERROR;
}

/* Fill `dst` (a payload of `len` bytes, `*filled` of them already there)
 * straight from the descriptor. */
static int
fill_direct(ReaderObject *self, char *dst, Py_ssize_t len, Py_ssize_t *filled,
            Py_ssize_t *budget)
{
    while (*filled < len) {
        Py_ssize_t want = len - *filled;
        ssize_t n;

        if (*budget <= 0) {
            return STEP_WAIT;
        }
        n = read_some(self, dst + *filled, want);
        if (n < 0) {
            return read_failed(n);
        }
        if (n == 0) {
            return truncated_error(*filled, len);
        }
        *filled += n;
        *budget -= n;
    }
    return STEP_DONE;
}

/* Read more bytes into the buffer.  The caller made room. */
static int
fill_buffer(ReaderObject *self, Py_ssize_t *budget)
{
    ssize_t n;

    if (*budget <= 0) {
        return STEP_WAIT;
    }
    if (self->start > 0 && self->start == self->end) {
        self->start = self->end = 0;
    }
    else if (self->start > 0 && self->cap - self->end < self->cap / 4) {
        memmove(self->buf, self->buf + self->start,
                (size_t)(self->end - self->start));
        self->end -= self->start;
        self->start = 0;
    }
    n = read_some(self, self->buf + self->end, self->cap - self->end);
    if (n < 0) {
        return read_failed(n);
    }
    if (n == 0) {
        if (self->end == self->start) {
            PyErr_SetString(PyExc_EOFError,
                            "end of stream: the writing end of the pipe "
                            "is closed");
            return STEP_ERROR;
        }
        return truncated_error(self->end - self->start, -1);
    }
    self->end += n;
    *budget -= n;
    return STEP_DONE;
}

/*
 * Parse the header at buf[start:end].  Returns STEP_DONE with the payload
 * length and header size set, STEP_WAIT if more bytes are needed, or
 * STEP_ERROR for a header that no valid peer sends.
 */
static int
parse_header(ReaderObject *self, Py_ssize_t *len, Py_ssize_t *hdrlen)
{
    const unsigned char *p = (const unsigned char *)self->buf + self->start;
    Py_ssize_t avail = self->end - self->start;
    int32_t short_len;
    uint64_t n;

    if (avail < 4) {
        return STEP_WAIT;
    }
    short_len = (int32_t)(uint32_t)decode_be(p, 4);
    if (short_len >= 0) {
        n = (uint64_t)short_len;
        *hdrlen = 4;
    }
    else if (short_len == -1) {
        if (avail < 12) {
            return STEP_WAIT;
        }
        n = decode_be(p + 4, 8);
        *hdrlen = 12;
    }
    else {
        set_errno_error(EPROTO,
                        "corrupt message header: negative length %d",
                        (int)short_len);
        return STEP_ERROR;
    }
    /* max_size <= GIPC_MAX_MESSAGE_SIZE: from here on, *hdrlen + *len
     * cannot overflow a Py_ssize_t. */
    if (n > (uint64_t)self->max_size) {
        set_errno_error(EMSGSIZE,
                        "incoming message of %llu bytes exceeds "
                        "max_message_size (%zd bytes)",
                        (unsigned long long)n, self->max_size);
        return STEP_ERROR;
    }
    *len = (Py_ssize_t)n;
    return STEP_DONE;
}

/* Where read_frame_into wants the payload: buffer `obj`, viewed as `view`,
 * from byte `offset` on. */
typedef struct {
    PyObject *obj;
    Py_buffer *view;
    Py_ssize_t offset;
} destination;

static int
fits(const destination *dest, Py_ssize_t len)
{
    return dest != NULL && len <= dest->view->len - dest->offset;
}

static char *
dest_ptr(const destination *dest)
{
    return (char *)dest->view->buf + dest->offset;
}

/* A bytes object for an announced payload of `len` bytes.  A length that no
 * bytes object can have is reported as the MemoryError it is, not as
 * CPython's OverflowError ("byte string is too large"). */
static PyObject *
new_payload(Py_ssize_t len)
{
    PyObject *payload = PyBytes_FromStringAndSize(NULL, len);

    if (payload == NULL && PyErr_ExceptionMatches(PyExc_OverflowError)) {
        PyErr_Clear();
        PyErr_Format(PyExc_MemoryError,
                     "cannot allocate an incoming message of %zd bytes", len);
    }
    return payload;
}

/* A payload was being read into a caller's buffer, but the caller now
 * reads differently: move what arrived into a bytes object of its own. */
static int
migrate_target(ReaderObject *self)
{
    PyObject *payload = new_payload(self->target_len);

    if (payload == NULL) {
        return -1;
    }
    memcpy(PyBytes_AS_STRING(payload),
           (char *)self->target.buf + self->target_off, (size_t)self->filled);
    release_target(self);
    self->payload = payload;
    return 0;
}

/* A whole payload is here as bytes: hand it out, or copy it to `dest`. */
static int
deliver_bytes(PyObject *payload, const destination *dest, PyObject **result)
{
    if (fits(dest, PyBytes_GET_SIZE(payload))) {
        memcpy(dest_ptr(dest), PyBytes_AS_STRING(payload),
               (size_t)PyBytes_GET_SIZE(payload));
        Py_DECREF(payload);
        *result = NULL;
    }
    else {
        *result = payload;
    }
    return STEP_DONE;
}

/*
 * Run the frame state machine until a frame is complete, the descriptor
 * would block or the slice of work is used up (STEP_WAIT), or an error is
 * set (STEP_ERROR).  On STEP_DONE, *len is the payload length and *result
 * is either a new reference to the payload as bytes, or NULL when the
 * payload went into `dest` (a payload too large for `dest` comes as bytes).
 * `dest` is NULL for read_frame.
 */
static int
next_frame(ReaderObject *self, const destination *dest, PyObject **result,
           Py_ssize_t *len)
{
    Py_ssize_t budget = GIPC_IO_SLICE;
    Py_ssize_t hdrlen, avail;
    int rc;

    for (;;) {
        if (self->target_obj != NULL) {
            if (dest == NULL || dest->obj != self->target_obj ||
                dest->offset != self->target_off) {
                if (migrate_target(self) < 0) {
                    return STEP_ERROR;
                }
                continue;
            }
            rc = fill_direct(self, (char *)self->target.buf + self->target_off,
                             self->target_len, &self->filled, &budget);
            if (rc != STEP_DONE) {
                return rc;
            }
            *len = self->target_len;
            *result = NULL;
            release_target(self);
            self->filled = 0;
            return STEP_DONE;
        }
        if (self->payload != NULL) {
            PyObject *payload = self->payload;

            *len = PyBytes_GET_SIZE(payload);
            rc = fill_direct(self, PyBytes_AS_STRING(payload), *len,
                             &self->filled, &budget);
            if (rc != STEP_DONE) {
                return rc;
            }
            self->payload = NULL;
            self->filled = 0;
            return deliver_bytes(payload, dest, result);
        }
        rc = parse_header(self, len, &hdrlen);
        if (rc == STEP_ERROR) {
            return rc;
        }
        avail = self->end - self->start;
        if (rc == STEP_DONE && *len <= avail - hdrlen) {
            const char *src = self->buf + self->start + hdrlen;

            if (fits(dest, *len)) {
                memcpy(dest_ptr(dest), src, (size_t)*len);
                *result = NULL;
            }
            else {
                *result = PyBytes_FromStringAndSize(src, *len);
                if (*result == NULL) {
                    return STEP_ERROR;
                }
            }
            self->start += hdrlen + *len;
            return STEP_DONE;
        }
        if (rc == STEP_DONE && hdrlen + *len > self->cap / 2) {
            /* A large payload: read it straight into its final place (the
             * caller's buffer, or a bytes object allocated once at its final
             * size), after copying what the buffer already holds. */
            Py_ssize_t have = avail - hdrlen;
            char *dst;

            if (fits(dest, *len)) {
                if (PyObject_GetBuffer(dest->obj, &self->target,
                                       PyBUF_WRITABLE) < 0) {
                    return STEP_ERROR;
                }
                self->target_obj = Py_NewRef(dest->obj);
                self->target_off = dest->offset;
                self->target_len = *len;
                dst = (char *)self->target.buf + self->target_off;
            }
            else {
                self->payload = new_payload(*len);
                if (self->payload == NULL) {
                    return STEP_ERROR;
                }
                dst = PyBytes_AS_STRING(self->payload);
            }
            memcpy(dst, self->buf + self->start + hdrlen, (size_t)have);
            self->filled = have;
            self->start = self->end = 0;
            continue;
        }
        rc = fill_buffer(self, &budget);
        if (rc != STEP_DONE) {
            return rc;
        }
    }
}

static int
reader_enter(ReaderObject *self)
{
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "pipe reader used by two threads at once");
        return -1;
    }
    if (self->fd < 0 || self->buf == NULL) {
        PyErr_SetString(PyExc_ValueError, "reader is closed");
        return -1;
    }
    self->busy = 1;
    return 0;
}

/* Parse an optional spin argument (microseconds) into the reader. */
static int
set_spin(ReaderObject *self, PyObject *arg)
{
    long spin_us = PyLong_AsLong(arg);

    if (spin_us == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (spin_us > 1000000) {
        spin_us = 1000000;  /* a second at most; also keeps *1000 in range */
    }
    self->spin_until = spin_us > 0 ? monotonic_ns() + spin_us * 1000 : 0;
    return 0;
}

/* read_frame(spin_us=0) -> bytes, or None when the caller must wait. */
static PyObject *
reader_read_frame(ReaderObject *self, PyObject *const *args,
                  Py_ssize_t nargs)
{
    PyObject *result = NULL;
    Py_ssize_t len;
    int rc;

    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError,
                     "read_frame() takes at most 1 argument (%zd given)",
                     nargs);
        return NULL;
    }
    if (reader_enter(self) < 0) {
        return NULL;
    }
    if (nargs == 1 && set_spin(self, args[0]) < 0) {
        self->busy = 0;
        return NULL;
    }
    rc = next_frame(self, NULL, &result, &len);
    self->spin_until = 0;
    self->busy = 0;
    if (rc == STEP_ERROR) {
        return NULL;
    }
    if (rc != STEP_DONE) {
        Py_RETURN_NONE;
    }
    return result;
}

/*
 * read_frame_into(buffer, offset=0, spin_us=0) -> int, bytes or None
 *
 * Receive the next payload into the writable buffer at `offset` and return
 * its length.  A payload that does not fit comes back as bytes instead (the
 * caller reports it, as multiprocessing's BufferTooShort does).  None when
 * the caller must wait for input; calling again with the same buffer and
 * offset continues a large payload in place.
 */
static PyObject *
reader_read_frame_into(ReaderObject *self, PyObject *const *args,
                       Py_ssize_t nargs)
{
    PyObject *result = NULL;
    Py_buffer view;
    destination dest;
    Py_ssize_t len, offset = 0;
    int rc;

    if (nargs < 1 || nargs > 3) {
        PyErr_Format(PyExc_TypeError,
                     "read_frame_into() takes 1 to 3 arguments (%zd given)",
                     nargs);
        return NULL;
    }
    if (nargs >= 2) {
        offset = PyLong_AsSsize_t(args[1]);
        if (offset == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    if (PyObject_GetBuffer(args[0], &view,
                           PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        if (PyErr_ExceptionMatches(PyExc_BufferError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError,
                         "a writable, C-contiguous buffer is needed, "
                         "not %.200s", Py_TYPE(args[0])->tp_name);
        }
        return NULL;
    }
    if (offset < 0 || offset > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError,
                        offset < 0 ? "negative offset" : "offset too large");
        return NULL;
    }
    if (reader_enter(self) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    if (nargs == 3 && set_spin(self, args[2]) < 0) {
        self->busy = 0;
        PyBuffer_Release(&view);
        return NULL;
    }
    dest.obj = args[0];
    dest.view = &view;
    dest.offset = offset;
    rc = next_frame(self, &dest, &result, &len);
    self->spin_until = 0;
    self->busy = 0;
    PyBuffer_Release(&view);
    if (rc == STEP_ERROR) {
        return NULL;
    }
    if (rc != STEP_DONE) {
        Py_RETURN_NONE;
    }
    if (result != NULL) {
        return result;
    }
    return PyLong_FromSsize_t(len);
}

static PyObject *
reader_pending_bytes(ReaderObject *self, void *Py_UNUSED(closure))
{
    Py_ssize_t n = self->end - self->start;

    if (self->payload != NULL || self->target_obj != NULL) {
        n += self->filled;
    }
    return PyLong_FromSsize_t(n);
}

/*
 * frame_ready() -> bool: a whole frame is buffered, so read_frame() would
 * return it without a system call.
 */
static PyObject *
reader_frame_ready(ReaderObject *self, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t len, hdrlen;
    int rc;

    if (self->payload != NULL || self->target_obj != NULL) {
        Py_RETURN_FALSE;
    }
    rc = parse_header(self, &len, &hdrlen);
    if (rc == STEP_ERROR) {
        /* Report it as ready: the next read raises the error. */
        PyErr_Clear();
        Py_RETURN_TRUE;
    }
    return PyBool_FromLong(rc == STEP_DONE &&
                           len <= self->end - self->start - hdrlen);
}

/* detach() -> int: forget the descriptor (the caller closes it) and free
 * the buffers.  Returns the descriptor, or -1 if already detached. */
static PyObject *
reader_detach(ReaderObject *self, PyObject *Py_UNUSED(ignored))
{
    int fd = self->fd;

    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "reader is in use");
        return NULL;
    }
    self->fd = -1;
    release_target(self);
    Py_CLEAR(self->payload);
    PyMem_Free(self->buf);
    self->buf = NULL;
    self->cap = self->filled = 0;
    self->start = self->end = 0;
    return PyLong_FromLong(fd);
}

/* after_fork() -> None: in a forked child, no other thread is inside. */
static PyObject *
reader_after_fork(ReaderObject *self, PyObject *Py_UNUSED(ignored))
{
    self->busy = 0;
    Py_RETURN_NONE;
}

static PyObject *
reader_get_max_size(ReaderObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->max_size);
}

static int
reader_set_max_size(ReaderObject *self, PyObject *value,
                    void *Py_UNUSED(closure))
{
    Py_ssize_t n;

    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete max_size");
        return -1;
    }
    n = PyLong_AsSsize_t(value);
    if (n == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (check_max_size(n) < 0) {
        return -1;
    }
    self->max_size = n;
    return 0;
}

static PyObject *
reader_get_fd(ReaderObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->fd);
}

static PyMethodDef reader_methods[] = {
    {"read_frame", (PyCFunction)(void (*)(void))reader_read_frame,
     METH_FASTCALL,
     PyDoc_STR("read_frame(spin_us=0) -> bytes or None\n\n"
               "Return the next payload, or None when the descriptor would "
               "block (or after a bounded slice of work); call again once "
               "it is readable.  A partly received frame is kept.  With "
               "spin_us, an empty pipe is polled (without sleeping) for up "
               "to that many microseconds first.")},
    {"read_frame_into", (PyCFunction)(void (*)(void))reader_read_frame_into,
     METH_FASTCALL,
     PyDoc_STR("read_frame_into(buffer, offset=0, spin_us=0) -> int, bytes "
               "or None\n\n"
               "Receive the next payload into a writable buffer at offset "
               "and return its length; a payload too large for the buffer "
               "is returned as bytes; None when the descriptor would block "
               "(call again with the same buffer and offset).")},
    {"frame_ready", (PyCFunction)reader_frame_ready, METH_NOARGS,
     PyDoc_STR("True if a whole frame is already buffered.")},
    {"detach", (PyCFunction)reader_detach, METH_NOARGS,
     PyDoc_STR("Forget the descriptor and free the buffers; return the fd.")},
    {"after_fork", (PyCFunction)reader_after_fork, METH_NOARGS,
     PyDoc_STR("In a forked child: forget that a thread of the parent was "
               "inside.")},
    {NULL, NULL, 0, NULL}
};

static PyObject *
reader_spin_paused(ReaderObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->spin_skip);
}

static PyGetSetDef reader_getset[] = {
    {"max_size", (getter)reader_get_max_size, (setter)reader_set_max_size,
     PyDoc_STR("Largest payload accepted, in bytes."), NULL},
    {"buffered", (getter)reader_pending_bytes, NULL,
     PyDoc_STR("Bytes received but not yet returned."), NULL},
    {"spin_paused", (getter)reader_spin_paused, NULL,
     PyDoc_STR("Waits left that will not spin (adaptive spinning)."),
     NULL},
    {"fd", (getter)reader_get_fd, NULL,
     PyDoc_STR("The descriptor read from, -1 once detached."), NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyType_Slot reader_slots[] = {
    {Py_tp_doc, (void *)PyDoc_STR(
        "Reader(fd, max_size, buffer_size=65536)\n\n"
        "Frame parser for the read end of a non-blocking pipe.")},
    {Py_tp_init, (void *)reader_init},
    {Py_tp_new, (void *)PyType_GenericNew},
    {Py_tp_dealloc, (void *)reader_dealloc},
    {Py_tp_traverse, (void *)reader_traverse},
    {Py_tp_clear, (void *)reader_clear},
    {Py_tp_methods, reader_methods},
    {Py_tp_getset, reader_getset},
    {0, NULL}
};

PyType_Spec gipc_reader_spec = {
    .name = "gipc._core.Reader",
    .basicsize = sizeof(ReaderObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = reader_slots,
};
