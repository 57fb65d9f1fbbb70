/*
 * gipc._core: the C half of gipc.  Framed pipe I/O (frame.c) and the fork
 * helper (fork.c).  It knows nothing of gevent: when a descriptor would
 * block it says so and the Python layer waits on the hub.
 *
 * Multi-phase initialisation; the only per-module data is the Reader type,
 * kept in module state rather than in a static.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "fork.h"
#include "frame.h"

typedef struct {
    PyObject *reader_type;
    PyObject *writer_type;
} core_state;

static inline core_state *
get_state(PyObject *module)
{
    return (core_state *)PyModule_GetState(module);
}

static PyMethodDef core_methods[] = {
    {"fork", (PyCFunction)(void (*)(void))gipc_fork, METH_FASTCALL,
     PyDoc_STR("fork(signals_to_reset, out) -> None\n\n"
               "fork() with CPython's fork protocol.  The list out becomes "
               "[pid, pidfd of the child] in the parent and [0, pidfd of "
               "the parent or -1] in the child, where the given signals are "
               "back at SIG_DFL before any Python code runs.")},
    {"reap", (PyCFunction)(void (*)(void))gipc_reap, METH_FASTCALL,
     PyDoc_STR("reap(pid, pidfd=-1) -> int or None\n\n"
               "Non-blocking wait for exactly that child (through its pidfd "
               "if given): its exit code (-signum if killed by a signal), or "
               "None while it runs.")},
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
    {NULL, NULL, 0, NULL}
};

static int
core_exec(PyObject *module)
{
    core_state *state = get_state(module);

    state->reader_type = PyType_FromModuleAndSpec(module, &gipc_reader_spec,
                                                  NULL);
    if (state->reader_type == NULL) {
        return -1;
    }
    if (PyModule_AddObjectRef(module, "Reader", state->reader_type) < 0) {
        return -1;
    }
    state->writer_type = PyType_FromModuleAndSpec(module, &gipc_writer_spec,
                                                  NULL);
    if (state->writer_type == NULL) {
        return -1;
    }
    if (PyModule_AddObjectRef(module, "Writer", state->writer_type) < 0) {
        return -1;
    }
    /* On Linux a long is as wide as a Py_ssize_t. */
    if (PyModule_AddIntConstant(module, "MAX_MESSAGE_SIZE",
                                (long)GIPC_MAX_MESSAGE_SIZE) < 0) {
        return -1;
    }
    return 0;
}

static int
core_traverse(PyObject *module, visitproc visit, void *arg)
{
    Py_VISIT(get_state(module)->reader_type);
    Py_VISIT(get_state(module)->writer_type);
    return 0;
}

static int
core_clear(PyObject *module)
{
    Py_CLEAR(get_state(module)->reader_type);
    Py_CLEAR(get_state(module)->writer_type);
    return 0;
}

static void
core_free(void *module)
{
    core_clear((PyObject *)module);
}

static PyModuleDef_Slot core_slots[] = {
    {Py_mod_exec, core_exec},
    {0, NULL}
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gipc._core",
    .m_doc = "C core of gipc: framed pipe I/O and the fork helper.",
    .m_size = sizeof(core_state),
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
