/*
 * set_gc_tracked(): see gctrack.h.
 */
#include "gctrack.h"

int
gipc_gctrack_init(gipc_core_state *st)
{
    /* Every class defined in Python shares one deallocator, which copes
     * with an untracked instance (and tracks it again before a base type's
     * deallocator runs).  A throwaway class tells which it is. */
    PyObject *probe = PyObject_CallFunction((PyObject *)&PyType_Type,
                                            "s(){}", "_probe");

    if (probe == NULL) {
        return -1;
    }
    st->python_class_dealloc = ((PyTypeObject *)probe)->tp_dealloc;
    Py_DECREF(probe);
    return 0;
}

PyObject *
gipc_set_gc_tracked(PyObject *module, PyObject *const *args,
                    Py_ssize_t nargs)
{
    gipc_core_state *st = PyModule_GetState(module);
    PyTypeObject *type;
    int tracked;

    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError,
                     "set_gc_tracked() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    type = Py_TYPE(args[0]);
    /* Built-in and C types may rely on their instances being tracked
     * (their deallocators may unlink them from the collector's lists
     * unconditionally): only instances of classes defined in Python. */
    if (!PyType_IS_GC(type) || type->tp_dealloc != st->python_class_dealloc) {
        PyErr_Format(PyExc_TypeError,
                     "set_gc_tracked() needs an instance of a class defined "
                     "in Python, not %.200s", type->tp_name);
        return NULL;
    }
    tracked = PyObject_IsTrue(args[1]);
    if (tracked < 0) {
        return NULL;
    }
    if (tracked && !PyObject_GC_IsTracked(args[0])) {
        PyObject_GC_Track(args[0]);
    }
    else if (!tracked && PyObject_GC_IsTracked(args[0])) {
        PyObject_GC_UnTrack(args[0]);
    }
    Py_RETURN_NONE;
}
