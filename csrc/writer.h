/*
 * The Writer type (gipc._core.Writer): writes frames (see frame.h) to a
 * non-blocking descriptor, one writev() per frame (one write() of a copy
 * for a small one), and keeps the progress of a frame the pipe could not
 * take whole; and FastSend, the fast path of the sending calls (see
 * fastpath.h).
 */
#ifndef GIPC_WRITER_H
#define GIPC_WRITER_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

extern PyType_Spec gipc_writer_spec;
extern PyType_Spec gipc_fast_send_spec;

#endif /* GIPC_WRITER_H */
