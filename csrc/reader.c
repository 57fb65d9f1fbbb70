/*
 * The Reader: frames out of a non-blocking descriptor (see reader.h).
 *
 * A Reader keeps a buffer per read end.  One read() may bring many small
 * frames; all of them are parsed before the descriptor is read again.  A
 * large payload is read straight into its final place (the bytes object
 * that is returned, allocated once at its final size, or the caller's
 * buffer).  The state of a frame that is only partly received survives
 * between calls, so a caller that stops waiting (a timeout) can resume the
 * same frame later without losing sync.
 */
#include "reader.h"

#include "fastpath.h"
#include "frame.h"
#include "spin.h"

#include <errno.h>
#include <string.h>
#include <structmember.h>
#include <unistd.h>

#define READ_BUFFER_DEFAULT (64 * 1024)
#define READ_BUFFER_MIN 64

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
    gipc_spin spin;         /* spinning on an empty pipe (spin.h) */
    int keep_gil;           /* this call must not release the GIL */
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
    if (gipc_fd_from_object(fdobj, &fd) < 0) {
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
    (void)reader_clear(self);
    self->buf = buf;
    self->cap = cap;
    self->fd = fd;
    self->max_size = max_size;
    self->start = self->end = 0;
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


/*
 * Read into dst, at most `want` bytes, retrying EINTR (and spinning on
 * EAGAIN while the reader's spin deadline allows).  Returns bytes read, 0 at
 * EOF, -1 with errno set (EAGAIN included), -2 if a signal handler raised.
 * With `nogil`, runs without the GIL when the read may be large.
 */
static ssize_t
read_some(ReaderObject *self, char *dst, Py_ssize_t want, int nogil)
{
    ssize_t n;

    for (;;) {
        if (nogil && want >= GIPC_NOGIL_MIN) {
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
            self->spin.until != 0 && gipc_spin_allowed(&self->spin)) {
            if (gipc_spin_for_input(&self->spin, self->fd)) {
                continue;
            }
            errno = EAGAIN;
        }
        return n;
    }
}

/* Outcome of a step of the frame state machine (see next_frame). */
enum { STEP_ERROR = -1, STEP_WAIT = 0, STEP_DONE = 1, STEP_AGAIN = 2 };

static int
truncated_error(Py_ssize_t got, Py_ssize_t expected)
{
    if (expected < 0) {
        gipc_set_errno_error(EPROTO,
                             "pipe closed in the middle of a message "
                             "header (%zd bytes of it received)", got);
    }
    else {
        gipc_set_errno_error(EPROTO,
                             "pipe closed in the middle of a message "
                             "(%zd of %zd payload bytes received)",
                             got, expected);
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

        if (*budget <= 0 || (self->keep_gil && want >= GIPC_NOGIL_MIN)) {
            /* (A fast call stops before a read that releases the GIL: the
             * Python way continues it under the lock.) */
            return STEP_WAIT;
        }
        if (want > *budget) {
            /* A descriptor with more ready than a pipe holds (a file, a
             * socket with large buffers) must not make one call move more
             * than the slice either. */
            want = *budget;
        }
        n = read_some(self, dst + *filled, want, 1);
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
    /* With the GIL: a read of a non-blocking pipe into the buffer (64 KiB
     * at most) is quick, and releasing the GIL costs more than it does for
     * the small messages that come this way.  Large payloads are read
     * straight into place, without the GIL (fill_direct). */
    n = read_some(self, self->buf + self->end, self->cap - self->end, 0);
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
    uint64_t n;

    switch (gipc_decode_header((const unsigned char *)self->buf + self->start,
                               self->end - self->start, &n, hdrlen)) {
    case GIPC_HEADER_INCOMPLETE:
        return STEP_WAIT;
    case GIPC_HEADER_CORRUPT:
        gipc_set_errno_error(EPROTO,
                             "corrupt message header: negative length %lld",
                             (long long)(int64_t)n);
        return STEP_ERROR;
    default:
        break;
    }
    /* max_size <= GIPC_MAX_MESSAGE_SIZE: from here on, *hdrlen + *len
     * cannot overflow a Py_ssize_t. */
    if (n > (uint64_t)self->max_size) {
        gipc_set_errno_error(EMSGSIZE,
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
 * The three states of the frame state machine.  Each returns STEP_DONE
 * (the frame is complete: *len is its length, *result the payload as a new
 * bytes object or NULL when it went into `dest`), STEP_WAIT, STEP_ERROR,
 * or STEP_AGAIN when it moved the reader to another state.
 */

/* A large payload is being read into a caller's buffer. */
static int
continue_target(ReaderObject *self, const destination *dest,
                PyObject **result, Py_ssize_t *len, Py_ssize_t *budget)
{
    int rc;

    if (dest == NULL || dest->obj != self->target_obj ||
        dest->offset != self->target_off) {
        /* The caller reads differently now. */
        return migrate_target(self) < 0 ? STEP_ERROR : STEP_AGAIN;
    }
    rc = fill_direct(self, (char *)self->target.buf + self->target_off,
                     self->target_len, &self->filled, budget);
    if (rc != STEP_DONE) {
        return rc;
    }
    *len = self->target_len;
    *result = NULL;
    release_target(self);
    self->filled = 0;
    return STEP_DONE;
}

/* A large payload is being read into a bytes object of its own. */
static int
continue_payload(ReaderObject *self, const destination *dest,
                 PyObject **result, Py_ssize_t *len, Py_ssize_t *budget)
{
    PyObject *payload = self->payload;
    int rc;

    *len = PyBytes_GET_SIZE(payload);
    rc = fill_direct(self, PyBytes_AS_STRING(payload), *len, &self->filled,
                     budget);
    if (rc != STEP_DONE) {
        return rc;
    }
    self->payload = NULL;
    self->filled = 0;
    return deliver_bytes(payload, dest, result);
}

/* A large payload (`len` bytes after a header of `hdrlen`) begins in the
 * buffer: read it straight into its final place from now on (the caller's
 * buffer, or a bytes object allocated once at its final size), after
 * copying what the buffer already holds. */
static int
start_direct(ReaderObject *self, const destination *dest, Py_ssize_t len,
             Py_ssize_t hdrlen)
{
    Py_ssize_t have = self->end - self->start - hdrlen;
    char *dst;

    if (fits(dest, len)) {
        if (PyObject_GetBuffer(dest->obj, &self->target,
                               PyBUF_WRITABLE) < 0) {
            return STEP_ERROR;
        }
        self->target_obj = Py_NewRef(dest->obj);
        self->target_off = dest->offset;
        self->target_len = len;
        dst = (char *)self->target.buf + self->target_off;
    }
    else {
        self->payload = new_payload(len);
        if (self->payload == NULL) {
            return STEP_ERROR;
        }
        dst = PyBytes_AS_STRING(self->payload);
    }
    memcpy(dst, self->buf + self->start + hdrlen, (size_t)have);
    self->filled = have;
    self->start = self->end = 0;
    return STEP_AGAIN;
}

/* No payload in progress: the next frame comes out of the buffer, or
 * starts a direct read, or the buffer needs more bytes. */
static int
next_buffered(ReaderObject *self, const destination *dest,
              PyObject **result, Py_ssize_t *len, Py_ssize_t *budget)
{
    Py_ssize_t hdrlen;
    int rc = parse_header(self, len, &hdrlen);

    if (rc == STEP_ERROR) {
        return rc;
    }
    if (rc == STEP_DONE &&
        *len <= self->end - self->start - hdrlen) {
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
        return start_direct(self, dest, *len, hdrlen);
    }
    rc = fill_buffer(self, budget);
    return rc == STEP_DONE ? STEP_AGAIN : rc;
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
    int rc;

    do {
        if (self->target_obj != NULL) {
            rc = continue_target(self, dest, result, len, &budget);
        }
        else if (self->payload != NULL) {
            rc = continue_payload(self, dest, result, len, &budget);
        }
        else {
            rc = next_buffered(self, dest, result, len, &budget);
        }
    } while (rc == STEP_AGAIN);
    return rc;
}

/* Start a call: refuse a second thread and a detached reader; with
 * `spin_arg` (or NULL), let the call spin that many microseconds. */
static int
reader_enter(ReaderObject *self, PyObject *spin_arg)
{
    long spin_us = 0;

    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "pipe reader used by two threads at once");
        return -1;
    }
    if (self->fd < 0 || self->buf == NULL) {
        PyErr_SetString(PyExc_ValueError, "reader is closed");
        return -1;
    }
    if (spin_arg != NULL) {
        spin_us = PyLong_AsLong(spin_arg);
        if (spin_us == -1 && PyErr_Occurred()) {
            return -1;
        }
    }
    gipc_spin_start(&self->spin, spin_us);
    self->busy = 1;
    return 0;
}

static void
reader_leave(ReaderObject *self)
{
    self->spin.until = 0;
    self->busy = 0;
}

/* What a read call returns for next_frame()'s outcome: NULL (error set),
 * None (the caller must wait), the payload as bytes, or (into a buffer)
 * its length. */
static PyObject *
frame_result(int rc, PyObject *payload, Py_ssize_t len)
{
    if (rc == STEP_ERROR) {
        return NULL;
    }
    if (rc != STEP_DONE) {
        Py_RETURN_NONE;
    }
    if (payload != NULL) {
        return payload;
    }
    return PyLong_FromSsize_t(len);
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
    if (reader_enter(self, nargs == 1 ? args[0] : NULL) < 0) {
        return NULL;
    }
    rc = next_frame(self, NULL, &result, &len);
    reader_leave(self);
    return frame_result(rc, result, len);
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
    PyObject *payload = NULL, *result = NULL;
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
    if (gipc_get_buffer(args[0], &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS,
                        "a writable, C-contiguous buffer is needed") < 0) {
        return NULL;
    }
    if (offset < 0 || offset > view.len) {
        PyErr_SetString(PyExc_ValueError,
                        offset < 0 ? "negative offset" : "offset too large");
        goto done;
    }
    if (reader_enter(self, nargs == 3 ? args[2] : NULL) < 0) {
        goto done;
    }
    dest.obj = args[0];
    dest.view = &view;
    dest.offset = offset;
    rc = next_frame(self, &dest, &payload, &len);
    reader_leave(self);
    result = frame_result(rc, payload, len);

done:
    PyBuffer_Release(&view);
    return result;
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
    return PyLong_FromLong(self->spin.skip);
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


/*
 * FastRecv: get() of a read handle, recv()/recv_bytes() of a Connection,
 * as one C call when a whole frame is at hand (see fastpath.h).
 */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    ReaderObject *reader;
    PyObject *gate;
    PyObject *lock;         /* the lock of the direction (settable) */
    PyObject *full;         /* the Python method, for any other call */
    PyObject *decoder;      /* NULL: the payload is returned as bytes */
    PyObject *wait;         /* NULL, or the rest after a spin, in Python */
    long spin_us;           /* spin on an empty pipe before `wait` */
} FastRecvObject;

/* Whether the error set is one the Python layer turns into another (it
 * marks the endpoint broken): the full call then meets it again, since
 * the reader keeps the state that caused it. */
static int
is_stream_error(void)
{
    PyObject *exc, *code;
    long n = 0;

    if (!PyErr_ExceptionMatches(PyExc_OSError)) {
        return 0;
    }
    exc = gipc_take_exception();
    if (exc == NULL) {
        return 0;
    }
    code = PyObject_GetAttrString(exc, "errno");
    if (code != NULL && PyLong_Check(code)) {
        n = PyLong_AsLong(code);
    }
    Py_XDECREF(code);
    PyErr_Clear();
    if (n == EPROTO || n == EMSGSIZE) {
        Py_DECREF(exc);
        return 1;
    }
    gipc_restore_exception(exc);
    return 0;
}

/* The next frame out of the reader, if it is at hand without a wait and
 * without releasing the GIL: its payload as bytes, Py_None if the caller
 * must wait (the part received stays in the reader), NULL with an error.
 * (A frame of its own: see gipc_call2() in fastpath.h.) */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static PyObject *
fast_take_frame(ReaderObject *r, long spin_us, int keep_gil)
{
    PyObject *payload = NULL;
    Py_ssize_t len;
    int rc;

    gipc_spin_start(&r->spin, spin_us);
    r->busy = 1;
    r->keep_gil = keep_gil;
    rc = next_frame(r, NULL, &payload, &len);
    r->keep_gil = 0;
    reader_leave(r);
    if (rc == STEP_DONE) {
        return payload;
    }
    return rc == STEP_ERROR ? NULL : Py_NewRef(Py_None);
}

/* fast_take_frame() after a spin of up to spin_us on the empty pipe,
 * under the lock (free: the Gate said so, and no Python code ran since). */
static PyObject *
fast_spin_frame(FastRecvObject *self)
{
    PyObject *payload, *done;
    PyObject *exc = NULL;

    done = PyObject_CallMethod(self->lock, "acquire", "O", Py_False);
    if (done == NULL) {
        return NULL;
    }
    Py_DECREF(done);
    payload = fast_take_frame(self->reader, self->spin_us, 0);
    if (payload == NULL) {
        exc = gipc_take_exception();
    }
    done = PyObject_CallMethod(self->lock, "release", NULL);
    if (done == NULL) {
        Py_XDECREF(payload);
        Py_XDECREF(exc);
        return NULL;
    }
    Py_DECREF(done);
    if (exc != NULL) {
        gipc_restore_exception(exc);
    }
    return payload;
}

static PyObject *
fast_recv_call(FastRecvObject *self, PyObject *const *args, size_t nargsf,
               PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    ReaderObject *r = self->reader;
    PyObject *payload;
    int rc;

    if (r == NULL) {
        /* Cleared (a collected cycle): nothing left to call. */
        PyErr_SetString(PyExc_ReferenceError, "the endpoint is gone");
        return NULL;
    }
    if (nargs != 0 || kwnames != NULL) {
        return PyObject_Vectorcall(self->full, args, nargs, kwnames);
    }
    rc = gipc_gate_open(self->gate, self->lock);
    if (rc < 0) {
        return NULL;
    }
    if (rc == 0 || r->busy || r->fd < 0 || r->buf == NULL) {
        return PyObject_Vectorcall(self->full, NULL, 0, NULL);
    }
    payload = fast_take_frame(r, 0, 1);
    if (payload == Py_None && self->wait != NULL && r->payload == NULL &&
        r->target_obj == NULL) {
        /* The pipe is empty: spin on it under the lock (the GIL is
         * released meanwhile), as the Python way would, before that way
         * waits on the hub. */
        Py_DECREF(payload);
        payload = fast_spin_frame(self);
        if (payload == Py_None) {
            Py_DECREF(payload);
            return PyObject_Vectorcall(self->wait, NULL, 0, NULL);
        }
    }
    if (payload != NULL && payload != Py_None) {
        if (self->decoder == NULL) {
            return payload;
        }
        Py_SETREF(payload, PyObject_CallOneArg(self->decoder, payload));
        return payload;
    }
    if (payload == Py_None || is_stream_error()) {
        Py_XDECREF(payload);
        /* The part of a frame received so far stays in the reader. */
        return PyObject_Vectorcall(self->full, NULL, 0, NULL);
    }
    return NULL;
}

static PyObject *
fast_recv_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"reader", "gate", "lock", "full", "decoder",
                             "wait", "spin_us", NULL};
    gipc_core_state *st = gipc_core_state_of(type);
    PyObject *reader, *gate, *lock, *full, *decoder = Py_None;
    PyObject *wait = Py_None;
    long spin_us = 0;
    FastRecvObject *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOO|OOl:FastRecv", kwlist,
                                     &reader, &gate, &lock, &full,
                                     &decoder, &wait, &spin_us)) {
        return NULL;
    }
    if (st == NULL ||
        gipc_check_type(reader, st->reader_type, "reader") < 0 ||
        gipc_check_type(gate, st->gate_type, "gate") < 0) {
        return NULL;
    }
    self = (FastRecvObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = (vectorcallfunc)fast_recv_call;
    self->reader = (ReaderObject *)Py_NewRef(reader);
    self->gate = Py_NewRef(gate);
    self->lock = Py_NewRef(lock);
    self->full = Py_NewRef(full);
    self->decoder = decoder == Py_None ? NULL : Py_NewRef(decoder);
    self->wait = wait == Py_None ? NULL : Py_NewRef(wait);
    self->spin_us = spin_us;
    return (PyObject *)self;
}

static int
fast_recv_traverse(FastRecvObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->reader);
    Py_VISIT(self->gate);
    Py_VISIT(self->lock);
    Py_VISIT(self->full);
    Py_VISIT(self->decoder);
    Py_VISIT(self->wait);
    return 0;
}

static int
fast_recv_clear(FastRecvObject *self)
{
    Py_CLEAR(self->reader);
    Py_CLEAR(self->gate);
    Py_CLEAR(self->lock);
    Py_CLEAR(self->full);
    Py_CLEAR(self->decoder);
    Py_CLEAR(self->wait);
    return 0;
}

static void
fast_recv_dealloc(FastRecvObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);

    PyObject_GC_UnTrack(self);
    (void)fast_recv_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *
fast_recv_get_lock(FastRecvObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->lock != NULL ? self->lock : Py_None);
}

static int
fast_recv_set_lock(FastRecvObject *self, PyObject *value,
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
fast_recv_get_wrapped(FastRecvObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->full != NULL ? self->full : Py_None);
}

static PyObject *
fast_recv_get_doc(FastRecvObject *self, void *Py_UNUSED(closure))
{
    if (self->full == NULL) {
        Py_RETURN_NONE;
    }
    return PyObject_GetAttrString(self->full, "__doc__");
}

static PyMemberDef fast_recv_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET,
     offsetof(FastRecvObject, vectorcall), READONLY, NULL},
    {NULL, 0, 0, 0, NULL}
};

static PyGetSetDef fast_recv_getset[] = {
    {"lock", (getter)fast_recv_get_lock, (setter)fast_recv_set_lock,
     PyDoc_STR("The lock of the direction."), NULL},
    {"__wrapped__", (getter)fast_recv_get_wrapped, NULL,
     PyDoc_STR("The Python method this call stands for."), NULL},
    {"__doc__", (getter)fast_recv_get_doc, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyType_Slot fast_recv_slots[] = {
    {Py_tp_new, (void *)fast_recv_new},
    {Py_tp_call, (void *)PyVectorcall_Call},
    {Py_tp_dealloc, (void *)fast_recv_dealloc},
    {Py_tp_traverse, (void *)fast_recv_traverse},
    {Py_tp_clear, (void *)fast_recv_clear},
    {Py_tp_members, fast_recv_members},
    {Py_tp_getset, fast_recv_getset},
    {0, NULL}
};

PyType_Spec gipc_fast_recv_spec = {
    .name = "gipc._core.FastRecv",
    .basicsize = sizeof(FastRecvObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_HAVE_VECTORCALL,
    .slots = fast_recv_slots,
};
