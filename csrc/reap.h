/*
 * Reaping exactly one child, through its pidfd where one is given, never
 * any other: no process-wide SIGCHLD handling, so other libraries'
 * children keep their exit statuses.
 */
#ifndef GIPC_REAP_H
#define GIPC_REAP_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* reap(pid, pidfd=-1, spin_us=0) -> exit code or None */
PyObject *gipc_reap(PyObject *module, PyObject *const *args,
                    Py_ssize_t nargs);

#endif /* GIPC_REAP_H */
