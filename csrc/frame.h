/*
 * Framed pipe I/O: the wire format of multiprocessing.connection.
 *
 * A frame is a 4-byte big-endian signed length followed by the payload.  A
 * payload of 2 GiB or more is announced by the length -1 followed by an
 * 8-byte big-endian unsigned length.
 *
 * Every function here works on non-blocking descriptors and never waits:
 * when the descriptor would block it hands control back to the caller (the
 * Python layer), which waits on the gevent hub and calls again.
 */
#ifndef GIPC_FRAME_H
#define GIPC_FRAME_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

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

extern PyType_Spec gipc_reader_spec;
extern PyType_Spec gipc_writer_spec;


#endif /* GIPC_FRAME_H */
