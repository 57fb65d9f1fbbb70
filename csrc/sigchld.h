/*
 * The SIGCHLD probe: which shared object's function handles SIGCHLD, so
 * that gipc can tell libev's handler (installed from C by gevent's child
 * watchers) from one of the program's own.
 */
#ifndef GIPC_SIGCHLD_H
#define GIPC_SIGCHLD_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* sigchld_handler_file() -> str or None */
PyObject *gipc_sigchld_handler_file(PyObject *module, PyObject *ignored);

#endif /* GIPC_SIGCHLD_H */
