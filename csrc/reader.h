/*
 * The Reader type (gipc._core.Reader): parses frames (see frame.h) from
 * the read end of a non-blocking pipe, many per read(), large payloads
 * straight into their final place, and keeps a frame only partly received
 * across calls; and FastRecv, the fast path of the receiving calls (see
 * fastpath.h).
 */
#ifndef GIPC_READER_H
#define GIPC_READER_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

extern PyType_Spec gipc_reader_spec;
extern PyType_Spec gipc_fast_recv_spec;

#endif /* GIPC_READER_H */
