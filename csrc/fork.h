/*
 * The fork helper: fork with CPython's fork protocol, reset signal
 * dispositions in the child before any Python code runs there, and hand the
 * parent a pidfd for the child; plus reaping exactly one pid, and making
 * a child's type lookups in the parent first.
 */
#ifndef GIPC_FORK_H
#define GIPC_FORK_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

PyObject *gipc_fork(PyObject *module, PyObject *const *args,
                    Py_ssize_t nargs);
PyObject *gipc_reap(PyObject *module, PyObject *const *args,
                    Py_ssize_t nargs);
PyObject *gipc_pidfd_open(PyObject *module, PyObject *arg);
PyObject *gipc_sigchld_handler_file(PyObject *module, PyObject *ignored);
PyObject *gipc_warm_type_cache(PyObject *module, PyObject *lookups);

#endif /* GIPC_FORK_H */
