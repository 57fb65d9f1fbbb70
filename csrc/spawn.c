/*
 * gipc._spawnc: posix_spawn() with the GIL released (see spawn.h).
 *
 * os.posix_spawn() holds the GIL for the whole call, and with vfork
 * semantics the call lasts until the child has exec'd: on a loaded machine
 * that is milliseconds in which no greenlet runs.  Released here, the call
 * can run in a worker thread while the event loop goes on.  The module has
 * no state.
 */
#include "spawn.h"

#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>

/* A NULL-terminated array of the buffers of a list of bytes (borrowed: the
 * list and its items outlive the array, since the caller holds them). */
static char **
bytes_array(PyObject *list, const char *what)
{
    Py_ssize_t i, n;
    char **array;

    if (!PyList_Check(list)) {
        PyErr_Format(PyExc_TypeError, "%s must be a list of bytes", what);
        return NULL;
    }
    n = PyList_GET_SIZE(list);
    array = PyMem_Calloc((size_t)n + 1, sizeof(char *));
    if (array == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        if (!PyBytes_Check(item)) {
            PyErr_Format(PyExc_TypeError, "%s must be a list of bytes",
                         what);
            PyMem_Free(array);
            return NULL;
        }
        array[i] = PyBytes_AS_STRING(item);
    }
    return array;
}

/* Signals back at SIG_DFL and an empty mask in the child. */
static int
init_attributes(posix_spawnattr_t *attr)
{
    sigset_t defaults, empty;
    int err;

    err = posix_spawnattr_init(attr);
    if (err != 0) {
        return err;
    }
    sigfillset(&defaults);
    sigdelset(&defaults, SIGKILL);
    sigdelset(&defaults, SIGSTOP);
    sigemptyset(&empty);
    err = posix_spawnattr_setsigdefault(attr, &defaults);
    if (err == 0) {
        err = posix_spawnattr_setsigmask(attr, &empty);
    }
    if (err == 0) {
        err = posix_spawnattr_setflags(
            attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    }
    if (err != 0) {
        posix_spawnattr_destroy(attr);
    }
    return err;
}

PyObject *
gipc_spawn(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    char **argv = NULL, **envp = NULL;
    posix_spawnattr_t attr;
    PyObject *list_argv, *list_envp, *result = NULL;
    const char *path;
    pid_t pid = 0;
    int err;

    (void)module;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError,
                        "spawn() takes 3 arguments (path, argv, envp)");
        return NULL;
    }
    if (!PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "path must be bytes");
        return NULL;
    }
    /* Hold the lists: another thread cannot free their items meanwhile. */
    list_argv = PySequence_List(args[1]);
    list_envp = PySequence_List(args[2]);
    if (list_argv == NULL || list_envp == NULL) {
        goto done;
    }
    if (PyList_GET_SIZE(list_argv) == 0) {
        PyErr_SetString(PyExc_ValueError, "argv must not be empty");
        goto done;
    }
    path = PyBytes_AS_STRING(args[0]);
    argv = bytes_array(list_argv, "argv");
    if (argv == NULL) {
        goto done;
    }
    envp = bytes_array(list_envp, "envp");
    if (envp == NULL) {
        goto done;
    }
    err = init_attributes(&attr);
    if (err == 0) {
        Py_BEGIN_ALLOW_THREADS
        do {
            err = posix_spawn(&pid, path, NULL, &attr, argv, envp);
        } while (err == EINTR);
        Py_END_ALLOW_THREADS
        posix_spawnattr_destroy(&attr);
    }
    if (err != 0) {
        errno = err;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, args[0]);
        goto done;
    }
    result = PyLong_FromLong((long)pid);

done:
    PyMem_Free(argv);
    PyMem_Free(envp);
    Py_XDECREF(list_argv);
    Py_XDECREF(list_envp);
    return result;
}

static PyMethodDef spawnc_methods[] = {
    {"spawn", (PyCFunction)(void (*)(void))gipc_spawn, METH_FASTCALL,
     "spawn(path, argv, envp) -> pid: posix_spawn() with the GIL released,\n"
     "every catchable signal at its default and none blocked in the child."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot spawnc_slots[] = {
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL},
};

static struct PyModuleDef spawnc_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gipc._spawnc",
    .m_doc = "posix_spawn() with the GIL released (gipc's spawn start "
             "method).",
    .m_size = 0,
    .m_methods = spawnc_methods,
    .m_slots = spawnc_slots,
};

PyMODINIT_FUNC
PyInit__spawnc(void)
{
    return PyModuleDef_Init(&spawnc_module);
}
