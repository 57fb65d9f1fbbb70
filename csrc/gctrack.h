/*
 * Leaving an object out of the cyclic garbage collector while it cannot be
 * part of a reference cycle, as CPython does for tuples and dicts that hold
 * only untracked objects.  A full collection then does not visit it: a
 * pool's many pending and finished results cost it nothing (gipc/_workers.py
 * says when a task may be left out).
 */
#ifndef GIPC_GCTRACK_H
#define GIPC_GCTRACK_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "fastpath.h"

/* Fill in st->python_class_dealloc; -1 with an exception set on error. */
int gipc_gctrack_init(gipc_core_state *st);

/* set_gc_tracked(obj, tracked) -> None */
PyObject *gipc_set_gc_tracked(PyObject *module, PyObject *const *args,
                              Py_ssize_t nargs);

/* track_on_setattr(cls) -> None: instances of cls are tracked again, and
 * their _gc_pinned slot set to True, when an attribute that is none of the
 * class's slots is set on them (it goes to their __dict__, where the
 * program may make a cycle). */
PyObject *gipc_track_on_setattr(PyObject *module, PyObject *cls);

#endif /* GIPC_GCTRACK_H */
