/*
 * set_gc_tracked() and track_on_setattr(): see gctrack.h.
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

/* The slot that says an instance holds attributes of the program's. */
#define PINNED_SLOT "_gc_pinned"

/* Whether setting `name` on an instance of `type` goes to a data
 * descriptor (a slot, a property) rather than the instance's __dict__. */
static int
sets_a_descriptor(PyTypeObject *type, PyObject *name)
{
    PyObject *descr = _PyType_Lookup(type, name);   /* borrowed */

    return descr != NULL && Py_TYPE(descr)->tp_descr_set != NULL;
}

static int
tracking_setattro(PyObject *obj, PyObject *name, PyObject *value)
{
    if (value != NULL && PyUnicode_Check(name)
            && !sets_a_descriptor(Py_TYPE(obj), name)) {
        PyObject *pinned = PyUnicode_InternFromString(PINNED_SLOT);

        if (pinned == NULL) {
            return -1;
        }
        if (PyObject_GenericSetAttr(obj, pinned, Py_True) < 0) {
            Py_DECREF(pinned);
            return -1;
        }
        Py_DECREF(pinned);
        if (!PyObject_GC_IsTracked(obj)) {
            PyObject_GC_Track(obj);
        }
    }
    return PyObject_GenericSetAttr(obj, name, value);
}

PyObject *
gipc_track_on_setattr(PyObject *module, PyObject *cls)
{
    gipc_core_state *st = PyModule_GetState(module);
    PyTypeObject *type;
    PyObject *pinned;
    int has_slot;

    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError,
                        "track_on_setattr() needs a class");
        return NULL;
    }
    type = (PyTypeObject *)cls;
    if (!PyType_IS_GC(type) || type->tp_dealloc != st->python_class_dealloc) {
        PyErr_Format(PyExc_TypeError,
                     "track_on_setattr() needs a class defined in Python, "
                     "not %.200s", type->tp_name);
        return NULL;
    }
    if (type->tp_setattro == tracking_setattro) {
        Py_RETURN_NONE;
    }
    /* Only in place of the generic one: a class's own __setattr__ would
     * be bypassed. */
    if (type->tp_setattro != PyObject_GenericSetAttr) {
        PyErr_Format(PyExc_TypeError,
                     "track_on_setattr(): %.200s has its own __setattr__",
                     type->tp_name);
        return NULL;
    }
    pinned = PyUnicode_InternFromString(PINNED_SLOT);
    if (pinned == NULL) {
        return NULL;
    }
    has_slot = sets_a_descriptor(type, pinned);
    Py_DECREF(pinned);
    if (!has_slot) {
        PyErr_Format(PyExc_TypeError,
                     "track_on_setattr(): %.200s has no " PINNED_SLOT
                     " slot", type->tp_name);
        return NULL;
    }
    type->tp_setattro = tracking_setattro;
    PyType_Modified(type);
    Py_RETURN_NONE;
}
