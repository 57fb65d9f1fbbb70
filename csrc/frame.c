/*
 * The wire format (see frame.h): encoding and decoding of frame headers,
 * and the helpers both ends of a pipe share.
 */
#include "frame.h"

#include <stdarg.h>
#include <string.h>

int
gipc_encode_header(unsigned char *out, uint64_t n)
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
    for (i = GIPC_LONG_HEADER - 1; i >= 4; i--) {
        out[i] = (unsigned char)(n & 0xff);
        n >>= 8;
    }
    return GIPC_LONG_HEADER;
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

int
gipc_decode_header(const unsigned char *p, Py_ssize_t avail, uint64_t *len,
                   Py_ssize_t *hdrlen)
{
    int32_t short_len;

    if (avail < 4) {
        return GIPC_HEADER_INCOMPLETE;
    }
    short_len = (int32_t)(uint32_t)decode_be(p, 4);
    if (short_len >= 0) {
        *len = (uint64_t)short_len;
        *hdrlen = 4;
        return GIPC_HEADER_COMPLETE;
    }
    if (short_len != -1) {
        *len = (uint64_t)(int64_t)short_len;
        return GIPC_HEADER_CORRUPT;
    }
    if (avail < GIPC_LONG_HEADER) {
        return GIPC_HEADER_INCOMPLETE;
    }
    *len = decode_be(p + 4, 8);
    *hdrlen = GIPC_LONG_HEADER;
    return GIPC_HEADER_COMPLETE;
}

PyObject *
gipc_set_errno_error(int code, const char *fmt, ...)
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

int
gipc_fd_from_object(PyObject *obj, int *fd)
{
    int value = PyObject_AsFileDescriptor(obj);

    if (value < 0) {
        return -1;
    }
    *fd = value;
    return 0;
}

int
gipc_get_buffer(PyObject *obj, Py_buffer *view, int flags, const char *what)
{
    if (PyObject_GetBuffer(obj, view, flags) == 0) {
        return 0;
    }
    if (PyErr_ExceptionMatches(PyExc_TypeError) ||
        PyErr_ExceptionMatches(PyExc_BufferError) ||
        PyErr_ExceptionMatches(PyExc_ValueError)) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s, not %.200s", what,
                     Py_TYPE(obj)->tp_name);
    }
    return -1;
}
