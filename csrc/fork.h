/*
 * The fork helper: fork with CPython's fork protocol, reset signal
 * dispositions in the child before any Python code runs there, and hand the
 * parent a pidfd for the child, or the read end of a sentinel pipe whose
 * write end only the child holds.
 */
#ifndef GIPC_FORK_H
#define GIPC_FORK_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* fork(signals_to_reset, out, close_in_child=None, keep_fds=None,
 *      report=None) -> None */
PyObject *gipc_fork(PyObject *module, PyObject *const *args,
                    Py_ssize_t nargs);

#endif /* GIPC_FORK_H */
