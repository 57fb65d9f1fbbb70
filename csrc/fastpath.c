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

/*
 * The pickle of a small plain object, written here rather than by pickle's
 * C Pickler, whose every call builds a Pickler, a memo table and a 4 KiB
 * output buffer: for a message of a few dozen bytes that is most of the
 * cost of put().  The bytes are exactly those of pickle.dumps(obj,
 * protocol) for protocols 4 and 5 (the same opcodes, memo entries and
 * frame), so a peer cannot tell.  Anything outside the subset below
 * (another type, an int beyond 32 bits, a str with lone surrogates, a
 * deep, wide or repetitive tree, a pickle beyond PICKLE_OUT_MAX) is left
 * to pickle.
 */
#define PICKLE_OUT_MAX 4096
#define PICKLE_MEMO_MAX 32
#define FRAME_HEADER 9  /* FRAME and its 8-byte length */
#define FRAME_MIN 4     /* shorter frames are left out, as pickle does */

typedef struct {
    unsigned char out[PICKLE_OUT_MAX];
    Py_ssize_t len;
    int nodes;          /* objects the walk may still visit */
    int n_memo;
    PyObject *memo[PICKLE_MEMO_MAX];  /* borrowed: no Python code runs */
} PlainPickler;

static int
pp_write(PlainPickler *p, const void *data, Py_ssize_t n)
{
    if (n > PICKLE_OUT_MAX - p->len) {
        return 0;
    }
    memcpy(p->out + p->len, data, (size_t)n);
    p->len += n;
    return 1;
}

static int
pp_op(PlainPickler *p, unsigned char op)
{
    return pp_write(p, &op, 1);
}

static void
pp_le32(unsigned char *dst, uint64_t value)
{
    int i;

    for (i = 0; i < 4; i++) {
        dst[i] = (unsigned char)(value >> (8 * i));
    }
}

/* An opcode and a length (one byte below 256 if `short_op`, else four),
 * then `n` bytes of `data`. */
static int
pp_sized(PlainPickler *p, int short_op, int long_op, const char *data,
         Py_ssize_t n)
{
    unsigned char head[5];

    if (n < 256 && short_op >= 0) {
        head[0] = (unsigned char)short_op;
        head[1] = (unsigned char)n;
        if (!pp_write(p, head, 2)) {
            return 0;
        }
    }
    else {
        head[0] = (unsigned char)long_op;
        pp_le32(head + 1, (uint64_t)n);
        if (!pp_write(p, head, 5)) {
            return 0;
        }
    }
    return pp_write(p, data, n);
}

/* MEMOIZE, as pickle does after each str, bytes, tuple, list and dict. */
static int
pp_memoize(PlainPickler *p, PyObject *obj)
{
    if (p->n_memo == PICKLE_MEMO_MAX) {
        return 0;
    }
    p->memo[p->n_memo++] = obj;
    return pp_op(p, 0x94);
}

static int pp_save(PlainPickler *p, PyObject *obj, int depth);

static int
pp_save_long(PlainPickler *p, PyObject *obj)
{
    int overflow;
    long value = PyLong_AsLongAndOverflow(obj, &overflow);
    unsigned char data[5];

    if (overflow || value > 0x7fffffffL || value < -0x7fffffffL - 1) {
        return 0;  /* LONG1: pickle's */
    }
    pp_le32(data + 1, (uint64_t)value);
    if (data[4] != 0 || data[3] != 0) {
        data[0] = 'J';  /* BININT */
        return pp_write(p, data, 5);
    }
    if (data[2] != 0) {
        data[0] = 'M';  /* BININT2 */
        return pp_write(p, data, 3);
    }
    data[0] = 'K';  /* BININT1 */
    return pp_write(p, data, 2);
}

static int
pp_save_float(PlainPickler *p, PyObject *obj)
{
    /* BINFLOAT: the IEEE 754 double, big-endian (PyFloat_Pack8's bytes on
     * every platform CPython builds on with IEEE doubles). */
    double value = PyFloat_AS_DOUBLE(obj);
    uint64_t bits;
    unsigned char data[9];
    int i;

    memcpy(&bits, &value, sizeof(bits));
    data[0] = 'G';
    for (i = 0; i < 8; i++) {
        data[1 + i] = (unsigned char)(bits >> (56 - 8 * i));
    }
    return pp_write(p, data, 9);
}

static int
pp_save_items(PlainPickler *p, PyObject *const *items, Py_ssize_t n,
              int depth)
{
    Py_ssize_t i;

    for (i = 0; i < n; i++) {
        if (!pp_save(p, items[i], depth)) {
            return 0;
        }
    }
    return 1;
}

static int
pp_save_tuple(PlainPickler *p, PyObject *obj, int depth)
{
    Py_ssize_t n = PyTuple_GET_SIZE(obj);
    int i, first_memo = p->n_memo;

    if (n == 0) {
        return pp_op(p, ')');  /* EMPTY_TUPLE, never memoized */
    }
    if (n > 3 && !pp_op(p, '(')) {  /* MARK */
        return 0;
    }
    if (!pp_save_items(p, PySequence_Fast_ITEMS(obj), n, depth)) {
        return 0;
    }
    /* A tuple that contains itself (through a list or a dict) was
     * memoized while its items were saved: pickle then pops the items and
     * fetches the tuple from the memo instead.  Left to pickle. */
    for (i = first_memo; i < p->n_memo; i++) {
        if (p->memo[i] == obj) {
            return 0;
        }
    }
    /* TUPLE1, TUPLE2, TUPLE3 or TUPLE */
    if (!pp_op(p, n <= 3 ? (unsigned char)(0x84 + n) : 't')) {
        return 0;
    }
    return pp_memoize(p, obj);
}

static int
pp_save_list(PlainPickler *p, PyObject *obj, int depth)
{
    Py_ssize_t n = PyList_GET_SIZE(obj);

    if (!pp_op(p, ']') || !pp_memoize(p, obj)) {  /* EMPTY_LIST */
        return 0;
    }
    if (n == 0) {
        return 1;
    }
    if (n == 1) {
        return pp_save(p, PyList_GET_ITEM(obj, 0), depth) &&
               pp_op(p, 'a');  /* APPEND */
    }
    /* One batch: the node bound keeps n below pickle's batch size. */
    return pp_op(p, '(') &&
           pp_save_items(p, PySequence_Fast_ITEMS(obj), n, depth) &&
           pp_op(p, 'e');  /* APPENDS */
}

static int
pp_save_dict(PlainPickler *p, PyObject *obj, int depth)
{
    Py_ssize_t pos = 0, n = PyDict_GET_SIZE(obj);
    PyObject *key, *value;

    if (!pp_op(p, '}') || !pp_memoize(p, obj)) {  /* EMPTY_DICT */
        return 0;
    }
    if (n == 0) {
        return 1;
    }
    if (n > 1 && !pp_op(p, '(')) {
        return 0;
    }
    while (PyDict_Next(obj, &pos, &key, &value)) {
        if (!pp_save(p, key, depth) || !pp_save(p, value, depth)) {
            return 0;
        }
    }
    return pp_op(p, n == 1 ? 's' : 'u');  /* SETITEM or SETITEMS */
}

static int
pp_save(PlainPickler *p, PyObject *obj, int depth)
{
    PyTypeObject *type = Py_TYPE(obj);
    const char *utf8;
    Py_ssize_t n;
    int i;

    if (--p->nodes < 0) {
        return 0;
    }
    /* Atoms pickle never memoizes, in pickle's order of checks. */
    if (obj == Py_None) {
        return pp_op(p, 'N');
    }
    if (obj == Py_True || obj == Py_False) {
        return pp_op(p, obj == Py_True ? 0x88 : 0x89);  /* NEWTRUE/FALSE */
    }
    if (type == &PyLong_Type) {
        return pp_save_long(p, obj);
    }
    if (type == &PyFloat_Type) {
        return pp_save_float(p, obj);
    }
    /* An object met before is a reference to its memo entry (BINGET). */
    for (i = 0; i < p->n_memo; i++) {
        if (p->memo[i] == obj) {
            unsigned char get[2] = {'h', (unsigned char)i};

            return pp_write(p, get, 2);
        }
    }
    if (type == &PyBytes_Type) {
        /* SHORT_BINBYTES or BINBYTES */
        return pp_sized(p, 'C', 'B', PyBytes_AS_STRING(obj),
                        PyBytes_GET_SIZE(obj)) && pp_memoize(p, obj);
    }
    if (type == &PyUnicode_Type) {
        utf8 = PyUnicode_AsUTF8AndSize(obj, &n);
        if (utf8 == NULL) {
            PyErr_Clear();  /* lone surrogates: pickle's surrogatepass */
            return 0;
        }
        /* SHORT_BINUNICODE or BINUNICODE */
        return pp_sized(p, 0x8c, 'X', utf8, n) && pp_memoize(p, obj);
    }
    if (depth <= 0) {
        return 0;
    }
    if (type == &PyTuple_Type) {
        return pp_save_tuple(p, obj, depth - 1);
    }
    if (type == &PyList_Type) {
        return pp_save_list(p, obj, depth - 1);
    }
    if (type == &PyDict_Type) {
        return pp_save_dict(p, obj, depth - 1);
    }
    return 0;
}

PyObject *
gipc_plain_pickle(PyObject *obj, int protocol)
{
    PlainPickler p;
    Py_ssize_t frame;

    p.nodes = PLAIN_NODES;
    p.n_memo = 0;
    p.out[0] = 0x80;  /* PROTO */
    p.out[1] = (unsigned char)protocol;
    p.len = 2 + FRAME_HEADER;
    if (!pp_save(&p, obj, PLAIN_DEPTH) || !pp_op(&p, '.')) {  /* STOP */
        return NULL;
    }
    frame = p.len - 2 - FRAME_HEADER;
    if (frame >= FRAME_MIN) {
        p.out[2] = 0x95;  /* FRAME, its length in 8 bytes little-endian */
        pp_le32(p.out + 3, (uint64_t)frame);
        memset(p.out + 7, 0, 4);
    }
    else {
        memmove(p.out + 2, p.out + 2 + FRAME_HEADER, (size_t)frame);
        p.len -= FRAME_HEADER;
    }
    return PyBytes_FromStringAndSize((const char *)p.out, p.len);
}
