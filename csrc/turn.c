/*
 * The fairness clock of one endpoint (see turn.h).
 *
 * A Turn only measures: due() is true once `slice` nanoseconds have passed
 * since the last restart().  Whether the event loop ran meanwhile (then
 * nothing needs to yield) and how to yield are the Python layer's business
 * (gipc/_stream.py); it asks only when due() says so, once per slice.
 */
#include "turn.h"

/* Longest slice: an hour (keeps the arithmetic far from overflow). */
#define TURN_SLICE_MAX_US (3600LL * 1000000)

static int
turn_init(TurnObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"slice_us", NULL};
    long long slice_us = 1000;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|L:Turn", kwlist,
                                     &slice_us)) {
        return -1;
    }
    if (slice_us < 0 || slice_us > TURN_SLICE_MAX_US) {
        PyErr_SetString(PyExc_ValueError,
                        "slice_us must be between 0 and an hour");
        return -1;
    }
    self->slice = (int64_t)slice_us * 1000;
    /* The clock must tick at least twice per slice. */
    self->clock = gipc_cheap_clock(self->slice / 2);
    self->end = gipc_clock_ns(self->clock) + self->slice;
    return 0;
}

static void
turn_dealloc(TurnObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);

    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* due() -> bool */
static PyObject *
turn_due(TurnObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(gipc_turn_due(self));
}

/* restart() -> None */
static PyObject *
turn_restart(TurnObject *self, PyObject *Py_UNUSED(ignored))
{
    self->end = gipc_clock_ns(self->clock) + self->slice;
    Py_RETURN_NONE;
}

static PyObject *
turn_get_coarse(TurnObject *self, void *Py_UNUSED(closure))
{
#ifdef CLOCK_MONOTONIC_COARSE
    return PyBool_FromLong(self->clock == CLOCK_MONOTONIC_COARSE);
#else
    (void)self;
    Py_RETURN_FALSE;
#endif
}

static PyMethodDef turn_methods[] = {
    {"due", (PyCFunction)turn_due, METH_NOARGS,
     PyDoc_STR("due() -> bool\n\nTrue once the slice is over.")},
    {"restart", (PyCFunction)turn_restart, METH_NOARGS,
     PyDoc_STR("restart() -> None\n\nBegin a new slice now.")},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef turn_getset[] = {
    {"coarse", (getter)turn_get_coarse, NULL,
     PyDoc_STR("True if the Turn reads CLOCK_MONOTONIC_COARSE (its "
               "resolution is fine enough for the slice)."), NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyType_Slot turn_slots[] = {
    {Py_tp_doc, (void *)PyDoc_STR(
        "Turn(slice_us=1000)\n\nFairness clock: due() once slice_us "
        "microseconds have passed since the last restart().")},
    {Py_tp_init, (void *)turn_init},
    {Py_tp_new, (void *)PyType_GenericNew},
    {Py_tp_dealloc, (void *)turn_dealloc},
    {Py_tp_methods, turn_methods},
    {Py_tp_getset, turn_getset},
    {0, NULL}
};

PyType_Spec gipc_turn_spec = {
    .name = "gipc._core.Turn",
    .basicsize = sizeof(TurnObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = turn_slots,
};
