/*
 * gipc._spawnc: start a fresh interpreter (the "spawn" start method and the
 * forkserver) with posix_spawn(), the GIL released.
 */
#ifndef GIPC_SPAWN_H
#define GIPC_SPAWN_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/*
 * spawn(path, argv, envp) -> pid: posix_spawn() of ``path`` with the lists
 * of bytes ``argv`` and ``envp``, every catchable signal at its default
 * disposition and none blocked in the child.  Which descriptors the child
 * inherits is the caller's choice (those not close-on-exec).  The GIL is
 * released for the call, so that it can run in a thread of gevent's pool
 * while the event loop goes on.
 */
PyObject *gipc_spawn(PyObject *module, PyObject *const *args,
                     Py_ssize_t nargs);

#endif /* GIPC_SPAWN_H */
