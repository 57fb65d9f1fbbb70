/*
 * The wire format of multiprocessing.connection, shared by the Reader
 * (reader.c) and the Writer (writer.c).
 *
 * A frame is a 4-byte big-endian signed length followed by the payload.  A
 * payload of 2 GiB or more is announced by the length -1 followed by an
 * 8-byte big-endian unsigned length.
 *
 * Every function of the frame I/O works on non-blocking descriptors and
 * never waits: when the descriptor would block it hands control back to
 * the caller (the Python layer), which waits on the gevent hub and calls
 * again.
 *
 * Threads: a Reader or Writer releases the GIL around large transfers and
 * spins.  Its `busy` flag makes a second OS thread's call fail (instead of
 * corrupting the frame state) meanwhile.  The flag is tested and set in
 * two plain steps, not atomically: that is safe only because both run
 * with the GIL held and nothing between them releases it.  The module
 * declares Py_MOD_GIL_USED, so a free-threaded build keeps the GIL on
 * while gipc._core is imported.
 */
#ifndef GIPC_FRAME_H
#define GIPC_FRAME_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

/* Largest length that fits the short (4-byte) header. */
#define GIPC_SHORT_MAX 0x7fffffffLL

/* Size of the long header (the -1 marker and an 8-byte length). */
#define GIPC_LONG_HEADER 12

/* Largest max_size a Reader takes (and largest payload a Writer sends):
 * a header plus such a payload still fits a Py_ssize_t, so no sum of the
 * two can overflow. */
#define GIPC_MAX_MESSAGE_SIZE (PY_SSIZE_T_MAX - GIPC_LONG_HEADER)

/* Bytes moved by one call before control returns to the event loop, so that
 * a huge frame never stalls the other greenlets for long. */
#define GIPC_IO_SLICE (4 * 1024 * 1024)

/* Transfers at least this large run with the GIL released. */
#define GIPC_NOGIL_MIN (64 * 1024)

/* Write the header announcing `n` payload bytes to `out` (room for
 * GIPC_LONG_HEADER bytes); return its size. */
int gipc_encode_header(unsigned char *out, uint64_t n);

/* What gipc_decode_header() found. */
enum {
    GIPC_HEADER_CORRUPT = -1,   /* a negative length other than -1 */
    GIPC_HEADER_INCOMPLETE = 0, /* more bytes are needed */
    GIPC_HEADER_COMPLETE = 1
};

/* Decode the header at p[0:avail].  When complete, *len is the announced
 * payload length and *hdrlen the header's size; when corrupt, *len is the
 * negative length as an int64_t. */
int gipc_decode_header(const unsigned char *p, Py_ssize_t avail,
                       uint64_t *len, Py_ssize_t *hdrlen);

/* Set OSError(code, message formatted as PyUnicode_FromFormat does);
 * return NULL. */
PyObject *gipc_set_errno_error(int code, const char *fmt, ...);

/* PyObject_GetBuffer(obj, view, flags), where a refusal of the exporter
 * (TypeError, BufferError, or the ValueError numpy raises for an array
 * that is not C-contiguous) becomes TypeError("<what>, not <type>").
 * Other errors pass through.  Returns 0 or -1. */
int gipc_get_buffer(PyObject *obj, Py_buffer *view, int flags,
                    const char *what);

/* The descriptor of `obj` (an int or an object with fileno()). */
int gipc_fd_from_object(PyObject *obj, int *fd);

#endif /* GIPC_FRAME_H */
