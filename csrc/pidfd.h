/*
 * pidfds: pidfd_open(2) where the kernel has it (Linux 5.3+; never in a
 * portable or non-Linux build), and the checks of a pid argument.
 */
#ifndef GIPC_PIDFD_H
#define GIPC_PIDFD_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <sys/types.h>

/* A pidfd on `pid` (EINTR retried), or -1 with errno set: ENOSYS where
 * the kernel or the build has no pidfd_open(). */
int gipc_open_pidfd(pid_t pid);

/* A pid argument: a positive int that fits pid_t.  A bare cast would wrap
 * (2**32 + 1 would name pid 1): OverflowError beyond pid_t, ValueError if
 * not positive. */
int gipc_pid_from_object(PyObject *obj, pid_t *pid);

/* pidfd_open(pid) -> fd, or -1 where the kernel has no pidfds. */
PyObject *gipc_pidfd_open(PyObject *module, PyObject *arg);

#endif /* GIPC_PIDFD_H */
