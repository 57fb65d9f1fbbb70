/*
 * What a forked child inherits (close_fds=True): every descriptor the
 * child is not meant to keep is replaced by /dev/null, right after fork()
 * and before any Python code runs in the child.
 *
 * The parent prepares (gipc_inherit_prepare: the sorted descriptors to
 * keep, /dev/null opened), the child replaces (gipc_inherit_child:
 * async-signal-safe, no allocation) and reports on a pipe the caller made:
 * EOF when all is set, else the errno and the descriptor, and it exits
 * without running Python code.  The caller waits for that on the gevent
 * hub, so that a child that could not set up raises OSError in the parent
 * and never runs the target.
 */
#ifndef GIPC_INHERIT_H
#define GIPC_INHERIT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* The exit code of a child that could not replace a descriptor (the
 * parent reaps it and raises; nobody should ever see this code). */
#define GIPC_INHERIT_FAILED_EXIT 126

typedef struct {
    int *keep;          /* sorted descriptors to keep (PyMem), or NULL */
    Py_ssize_t n_keep;
    int devnull;        /* /dev/null, read-write, close-on-exec */
    int report[2];      /* the caller's pipe: the child writes a failure
                         * to report[1], or closes it */
    int bound;          /* probe descriptors below this (no /proc) */
} GipcInherit;

/* The n items of ``fast`` (a PySequence_Fast result) as descriptors into
 * fds; ``what`` names the argument in the ValueError of one that is not
 * a descriptor.  Returns 0, or -1 with an exception set. */
int gipc_fds_from_fast(PyObject *fast, Py_ssize_t n, int *fds,
                       const char *what);

/* In the parent, before the fork: keep_fds is a sequence of descriptors,
 * report the tuple (read end, write end) of the caller's report pipe.
 * Returns 0, or -1 with an exception set (nothing left to release). */
int gipc_inherit_prepare(PyObject *keep_fds, PyObject *report,
                         GipcInherit *inherit);

/* In the child, right after fork(): replace every descriptor but 0-2,
 * the kept ones and also_keep (-1: none) by /dev/null.  On failure,
 * reports to the parent and exits; on success returns, with the report
 * pipe and /dev/null closed. */
void gipc_inherit_child(GipcInherit *inherit, int also_keep);

/* Free and close what gipc_inherit_prepare() made, not the report pipe
 * (either side; again is harmless). */
void gipc_inherit_release(GipcInherit *inherit);

#endif /* GIPC_INHERIT_H */
