/*
 * gipc._core: the C half of gipc.  Framed pipe I/O: the wire format
 * (frame.c), the Writer (writer.c), the Reader (reader.c) and its spinning
 * on an empty pipe (spin.c), the fairness clock (turn.c) and the per-message fast paths (fastpath.c).  Processes:
 * the fork helper (fork.c), pidfds (pidfd.c), reaping one child (reap.c),
 * the SIGCHLD probe (sigchld.c), type-cache warming (typecache.c) and
 * leaving objects out of the cyclic GC (gctrack.c).  It knows nothing of gevent: when a
 * descriptor would block it says so and the Python layer waits on the
 * hub.
 *
 * Multi-phase initialisation.  The types are created per module object
 * (heap types, from their specs) and held by the module's dict and its
 * state (gipc_core_state, fastpath.h: the fast calls check the types of
 * their arguments against them).  Every other piece of state lives in the
 * objects.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "fastpath.h"
#include "fork.h"
#include "frame.h"
#include "gctrack.h"
#include "pidfd.h"
#include "platform.h"
#include "reader.h"
#include "reap.h"
#include "sigchld.h"
#include "turn.h"
#include "typecache.h"
#include "writer.h"

static PyMethodDef core_methods[] = {
    {"fork", (PyCFunction)(void (*)(void))gipc_fork, METH_FASTCALL,
     PyDoc_STR("fork(signals_to_reset, out, close_in_child=None, "
               "keep_fds=None, report=None) -> None\n\n"
               "fork() with CPython's fork protocol.  The list out becomes "
               "[pid, pidfd of the child] in the parent and [0, pidfd of "
               "the parent or -1] in the child, where the given signals are "
               "back at SIG_DFL before any Python code runs.  With "
               "close_in_child (descriptors closed in the child), a "
               "sentinel pipe instead of pidfds: [pid, its read end] in the "
               "parent, [0, its write end] in the child.  With keep_fds "
               "and report (a pipe's read and write ends), every other "
               "descriptor but 0-2 is replaced by /dev/null in the child "
               "before it runs (close_fds); the child then closes the "
               "pipe, or writes what failed there and exits.")},
    {"reap", (PyCFunction)(void (*)(void))gipc_reap, METH_FASTCALL,
     PyDoc_STR("reap(pid, pidfd=-1, spin_us=0) -> int or None\n\n"
               "Non-blocking wait for exactly that child (through its pidfd "
               "if given): its exit code (-signum if killed by a signal), or "
               "None while it runs.  By pid, a child that is exiting may be "
               "waited for up to spin_us microseconds (at most 1000).")},
    {"pidfd_open", gipc_pidfd_open, METH_O,
     PyDoc_STR("pidfd_open(pid) -> fd, or -1 where the kernel has none.")},
    {"sigchld_handler_file", gipc_sigchld_handler_file, METH_NOARGS,
     PyDoc_STR("sigchld_handler_file() -> str or None\n\n"
               "The shared object whose function handles SIGCHLD (\"\" if "
               "unknown), or None if SIGCHLD has no handler.")},
    {"warm_type_cache", gipc_warm_type_cache, METH_O,
     PyDoc_STR("warm_type_cache(lookups) -> None\n\n"
               "Look each name up on each type of the flat tuple (type, "
               "name, ...), so that CPython's type lookup cache holds the "
               "answers (a child's misses there copy the cache's pages).")},
    {"set_gc_tracked", (PyCFunction)(void (*)(void))gipc_set_gc_tracked,
     METH_FASTCALL,
     PyDoc_STR("set_gc_tracked(obj, tracked) -> None\n\n"
               "Put an instance of a class defined in Python under the "
               "cyclic garbage collector, or take it out (the caller "
               "vouches that it is in no reference cycle meanwhile).")},
    {"track_on_setattr", gipc_track_on_setattr, METH_O,
     PyDoc_STR("track_on_setattr(cls) -> None\n\n"
               "Instances of cls (a class defined in Python, with a "
               "_gc_pinned slot) are put back under the cyclic garbage "
               "collector, and their _gc_pinned set to True, when an "
               "attribute other than a slot is set on them.")},
    {NULL, NULL, 0, NULL}
};

/* Create a type from its spec, add it to the module under `name` and keep
 * it in *slot (the module state, a strong reference). */
static int
add_type(PyObject *module, const char *name, PyType_Spec *spec,
         PyTypeObject **slot)
{
    PyObject *type = PyType_FromModuleAndSpec(module, spec, NULL);

    if (type == NULL) {
        return -1;
    }
    *slot = (PyTypeObject *)type;
    return PyModule_AddObjectRef(module, name, type);
}

static int
core_traverse(PyObject *module, visitproc visit, void *arg)
{
    gipc_core_state *st = PyModule_GetState(module);

    if (st != NULL) {
        Py_VISIT(st->turn_type);
        Py_VISIT(st->gate_type);
        Py_VISIT(st->reader_type);
        Py_VISIT(st->writer_type);
        Py_VISIT(st->fast_send_type);
        Py_VISIT(st->fast_recv_type);
    }
    return 0;
}

static int
core_clear(PyObject *module)
{
    gipc_core_state *st = PyModule_GetState(module);

    if (st != NULL) {
        Py_CLEAR(st->turn_type);
        Py_CLEAR(st->gate_type);
        Py_CLEAR(st->reader_type);
        Py_CLEAR(st->writer_type);
        Py_CLEAR(st->fast_send_type);
        Py_CLEAR(st->fast_recv_type);
    }
    return 0;
}

static void
core_free(void *module)
{
    (void)core_clear((PyObject *)module);
}

static int
core_exec(PyObject *module)
{
    gipc_core_state *st = PyModule_GetState(module);

    if (add_type(module, "Reader", &gipc_reader_spec, &st->reader_type) < 0 ||
        add_type(module, "Writer", &gipc_writer_spec, &st->writer_type) < 0 ||
        add_type(module, "Turn", &gipc_turn_spec, &st->turn_type) < 0 ||
        add_type(module, "Gate", &gipc_gate_spec, &st->gate_type) < 0 ||
        add_type(module, "FastSend", &gipc_fast_send_spec,
                 &st->fast_send_type) < 0 ||
        add_type(module, "FastRecv", &gipc_fast_recv_spec,
                 &st->fast_recv_type) < 0) {
        return -1;
    }
    if (gipc_gctrack_init(st) < 0) {
        return -1;
    }
    /* On Linux a long is as wide as a Py_ssize_t. */
    if (PyModule_AddIntConstant(module, "MAX_MESSAGE_SIZE",
                                (long)GIPC_MAX_MESSAGE_SIZE) < 0) {
        return -1;
    }
    /* What the build has (see platform.h), so that the Python layer takes
     * the same paths: PORTABLE, only POSIX.1-2008 (GIPC_PORTABLE=1 or not
     * Linux); HAVE_PIDFD, pidfd_open() compiled in (the kernel may still
     * lack it). */
#ifdef GIPC_HAVE_PIDFD
    const long have_pidfd = 1;
#else
    const long have_pidfd = 0;
#endif
#ifdef GIPC_HAVE_DLADDR
    const long have_dladdr = 1;
#else
    const long have_dladdr = 0;
#endif
#if defined(__linux__) && !defined(GIPC_PORTABLE)
    const long portable = 0;
#else
    const long portable = 1;
#endif
    if (PyModule_AddIntConstant(module, "PORTABLE", portable) < 0 ||
        PyModule_AddIntConstant(module, "HAVE_PIDFD", have_pidfd) < 0 ||
        PyModule_AddIntConstant(module, "HAVE_DLADDR", have_dladdr) < 0) {
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot core_slots[] = {
    {Py_mod_exec, core_exec},
#ifdef Py_mod_gil
    /* Free-threaded builds (3.13t) enable the GIL on import: the Reader
     * and Writer guard their state (the `busy` flags, see frame.c) and
     * fork.c uses borrowed references, both relying on it. */
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL}
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gipc._core",
    .m_doc = "C core of gipc: framed pipe I/O and the fork helper.",
    .m_size = sizeof(gipc_core_state),
    .m_methods = core_methods,
    .m_slots = core_slots,
    .m_traverse = core_traverse,
    .m_clear = core_clear,
    .m_free = core_free,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    return PyModuleDef_Init(&core_module);
}
