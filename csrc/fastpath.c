/*
 * The Gate of an endpoint and what the fast calls share (see fastpath.h).
 */
#include "fastpath.h"

#include "turn.h"

/* Bounds of the walk of gipc_plain_tree(): deeper or larger objects go
 * through multiprocessing's ForkingPickler. */
#define PLAIN_DEPTH 8
#define PLAIN_NODES 256

typedef struct {
    PyObject_HEAD
    long ok_pid;            /* the owner's pid while usable, else 0 */
    PyObject *turn;         /* the endpoint's Turn */
    PyObject *ownership;    /* gipc._ownership's dict: its "pid" */
    PyObject *pid_key;      /* "pid", interned */
    PyObject *counter_key;  /* "counter", interned */
} GateObject;

gipc_core_state *
gipc_core_state_of(PyTypeObject *type)
{
    return (gipc_core_state *)PyType_GetModuleState(type);
}

int
gipc_check_type(PyObject *obj, PyTypeObject *type, const char *what)
{
    if (type == NULL || !PyObject_TypeCheck(obj, type)) {
        PyErr_Format(PyExc_TypeError, "%s must be a %s, not %s", what,
                     type == NULL ? "?" : type->tp_name,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    return 0;
}

static int
gate_set_turn(GateObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    gipc_core_state *st = gipc_core_state_of(Py_TYPE(self));

    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete turn");
        return -1;
    }
    if (st == NULL || gipc_check_type(value, st->turn_type, "turn") < 0) {
        return -1;
    }
    Py_XSETREF(self->turn, Py_NewRef(value));
    return 0;
}

static int
gate_init(GateObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"turn", "ownership", NULL};
    PyObject *turn, *ownership, *pid_key, *counter_key;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!:Gate", kwlist, &turn,
                                     &PyDict_Type, &ownership)) {
        return -1;
    }
    if (gate_set_turn(self, turn, NULL) < 0) {
        return -1;
    }
    pid_key = PyUnicode_InternFromString("pid");
    if (pid_key == NULL) {
        return -1;
    }
    counter_key = PyUnicode_InternFromString("counter");
    if (counter_key == NULL) {
        Py_DECREF(pid_key);
        return -1;
    }
    Py_XSETREF(self->pid_key, pid_key);
    Py_XSETREF(self->counter_key, counter_key);
    Py_XSETREF(self->ownership, Py_NewRef(ownership));
    self->ok_pid = 0;
    return 0;
}

static int
gate_traverse(GateObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->turn);
    Py_VISIT(self->ownership);
    return 0;
}

static int
gate_clear(GateObject *self)
{
    Py_CLEAR(self->turn);
    Py_CLEAR(self->ownership);
    Py_CLEAR(self->pid_key);
    Py_CLEAR(self->counter_key);
    return 0;
}

static void
gate_dealloc(GateObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);

    PyObject_GC_UnTrack(self);
    (void)gate_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

int
gipc_gate_owned(PyObject *gate)
{
    GateObject *self = (GateObject *)gate;
    PyObject *pid;
    long current;

    if (self->ok_pid == 0 || self->ownership == NULL) {
        return 0;
    }
    pid = PyDict_GetItemWithError(self->ownership, self->pid_key);
    if (pid == NULL || !PyLong_CheckExact(pid)) {
        return PyErr_Occurred() ? -1 : 0;
    }
    current = PyLong_AsLong(pid);
    if (current == -1 && PyErr_Occurred()) {
        return -1;
    }
    return current == self->ok_pid;
}

int
gipc_lock_free(PyObject *gate, PyObject *lock)
{
    PyObject *counter;
    long n;

    /* gevent's Semaphore: acquire(blocking=False) succeeds exactly when
     * its counter is positive. */
    counter = PyObject_GetAttr(lock, ((GateObject *)gate)->counter_key);
    if (counter == NULL) {
        return -1;
    }
    n = PyLong_AsLong(counter);
    Py_DECREF(counter);
    if (n == -1 && PyErr_Occurred()) {
        return -1;
    }
    return n > 0;
}

int
gipc_gate_ready(PyObject *gate, PyObject *lock)
{
    if (gipc_turn_due((const TurnObject *)((GateObject *)gate)->turn)) {
        return 0;
    }
    return gipc_lock_free(gate, lock);
}

int
gipc_gate_open(PyObject *gate, PyObject *lock)
{
    int rc = gipc_gate_owned(gate);

    return rc <= 0 ? rc : gipc_gate_ready(gate, lock);
}

#if defined(__has_attribute)
#if __has_attribute(no_sanitize_address)
#define NOT_INSTRUMENTED __attribute__((no_sanitize_address, noinline))
#endif
#endif
#ifndef NOT_INSTRUMENTED
#define NOT_INSTRUMENTED
#endif

NOT_INSTRUMENTED PyObject *
gipc_call2(PyObject *callable, PyObject *a, PyObject *b)
{
    PyObject *args[2] = {a, b};

    return PyObject_Vectorcall(callable, args, 2, NULL);
}

NOT_INSTRUMENTED PyObject *
gipc_call3(PyObject *callable, PyObject *a, PyObject *b, PyObject *c)
{
    PyObject *args[3] = {a, b, c};

    return PyObject_Vectorcall(callable, args, 3, NULL);
}

PyObject *
gipc_take_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;

    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value != NULL && tb != NULL) {
        (void)PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

void
gipc_restore_exception(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc,
                  PyException_GetTraceback(exc));
#endif
}

static int
plain_walk(PyObject *obj, int depth, int *nodes)
{
    PyTypeObject *type = Py_TYPE(obj);

    if (--*nodes < 0) {
        return 0;
    }
    if (obj == Py_None || PyBool_Check(obj) || type == &PyLong_Type ||
        type == &PyFloat_Type || type == &PyUnicode_Type ||
        type == &PyBytes_Type) {
        return 1;
    }
    if (depth <= 0) {
        return 0;
    }
    if (type == &PyTuple_Type || type == &PyList_Type) {
        /* A list cannot change meanwhile: no Python code runs here. */
        Py_ssize_t i, n = PySequence_Fast_GET_SIZE(obj);
        PyObject **items = PySequence_Fast_ITEMS(obj);

        for (i = 0; i < n; i++) {
            if (!plain_walk(items[i], depth - 1, nodes)) {
                return 0;
            }
        }
        return 1;
    }
    if (type == &PyDict_Type) {
        Py_ssize_t pos = 0;
        PyObject *key, *value;

        while (PyDict_Next(obj, &pos, &key, &value)) {
            if (!plain_walk(key, depth - 1, nodes) ||
                !plain_walk(value, depth - 1, nodes)) {
                return 0;
            }
        }
        return 1;
    }
    return 0;
}

int
gipc_plain_tree(PyObject *obj)
{
    int nodes = PLAIN_NODES;

    return plain_walk(obj, PLAIN_DEPTH, &nodes);
}

static PyObject *
gate_get_ok_pid(GateObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->ok_pid);
}

static int
gate_set_ok_pid(GateObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    long pid;

    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete ok_pid");
        return -1;
    }
    pid = PyLong_AsLong(value);
    if (pid == -1 && PyErr_Occurred()) {
        return -1;
    }
    self->ok_pid = pid;
    return 0;
}

static PyObject *
gate_get_turn(GateObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->turn != NULL ? self->turn : Py_None);
}

static PyGetSetDef gate_getset[] = {
    {"ok_pid", (getter)gate_get_ok_pid, (setter)gate_set_ok_pid,
     PyDoc_STR("The owner's pid while the endpoint is usable, else 0."),
     NULL},
    {"turn", (getter)gate_get_turn, (setter)gate_set_turn,
     PyDoc_STR("The endpoint's fairness Turn."), NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyType_Slot gate_slots[] = {
    {Py_tp_doc, (void *)PyDoc_STR(
        "Gate(turn, ownership)\n\nWhat the fast calls of one endpoint "
        "check before they run in C: ok_pid against ownership['pid'], the "
        "Turn, and the lock of the call.")},
    {Py_tp_init, (void *)gate_init},
    {Py_tp_new, (void *)PyType_GenericNew},
    {Py_tp_dealloc, (void *)gate_dealloc},
    {Py_tp_traverse, (void *)gate_traverse},
    {Py_tp_clear, (void *)gate_clear},
    {Py_tp_getset, gate_getset},
    {0, NULL}
};

PyType_Spec gipc_gate_spec = {
    .name = "gipc._core.Gate",
    .basicsize = sizeof(GateObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = gate_slots,
};
