/*
 * The per-message fast paths: put()/get() of pipe handles and send()/
 * recv() and their _bytes variants of Connections, each one C call when it
 * need not wait.
 *
 * An endpoint (gipc/_stream.py) owns one Gate: whether this process may
 * use it (the owner's pid while it is usable, else 0) and its fairness
 * Turn.  Each fast call object (FastSend in writer.c, FastRecv in
 * reader.c) is bound to one endpoint as the method of the same name; it
 * holds the C Writer or Reader, the Gate, the lock of the direction and
 * the Python method it stands for.  It runs in C while the Gate is open:
 * the endpoint is usable here, the slice of its Turn is not over, and no
 * greenlet holds the lock (the lock's counter is positive: its
 * acquire(blocking=False) would succeed).  A call that must wait, or fails
 * in a way that the Python layer turns into another error, goes to the
 * Python method instead; so does every call whose arguments the fast path
 * does not take.  Since nothing between the Gate check and the end of the
 * C call can switch greenlets, the lock need not be taken by a call that
 * ends in C.  It is taken, in C, where the call hands over to Python a
 * frame it began to write, and around a receive's spin on the empty pipe
 * (the GIL is released then: another OS thread must find the lock held).
 * Frames whose transfer releases the GIL go the Python way whole.
 */
#ifndef GIPC_FASTPATH_H
#define GIPC_FASTPATH_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* gipc._core's module state: its types (for type checks of arguments),
 * and the deallocator of classes defined in Python (gctrack.c: set once,
 * when the module is made). */
typedef struct {
    PyTypeObject *turn_type;
    PyTypeObject *gate_type;
    PyTypeObject *reader_type;
    PyTypeObject *writer_type;
    PyTypeObject *fast_send_type;
    PyTypeObject *fast_recv_type;
    destructor python_class_dealloc;
} gipc_core_state;

extern PyType_Spec gipc_gate_spec;

/* The module state of a type created by gipc._core. */
gipc_core_state *gipc_core_state_of(PyTypeObject *type);

/* `obj` is an instance of `type` (a TypeError naming `what` if not). */
int gipc_check_type(PyObject *obj, PyTypeObject *type, const char *what);

/*
 * 1 if a fast call on the endpoint of `gate` may run in C now: this
 * process owns the endpoint and it is usable, its turn is not over, and
 * `lock` is free.  0 if the call must go the Python way; -1 with an
 * exception set.
 */
int gipc_gate_open(PyObject *gate, PyObject *lock);

/* 1 if this process owns the endpoint of `gate` and it is usable, 0 if
 * not, -1 with an exception set. */
int gipc_gate_owned(PyObject *gate);

/* gipc_gate_open() for a caller that checked gipc_gate_owned() and ran
 * no Python code since. */
int gipc_gate_ready(PyObject *gate, PyObject *lock);

/* 1 if `lock` (a gevent Semaphore) is free, 0 if not, -1 with an
 * exception set.  `gate` is the endpoint's. */
int gipc_lock_free(PyObject *gate, PyObject *lock);

/*
 * 1 if `obj` is made only of objects that pickle's C Pickler writes by
 * their exact type (None, bool, int, float, str, bytes, and tuples, lists
 * and dicts of these, not too deep or large): such an object pickles the
 * same whatever reducers a dispatch table registers, so pickle.dumps()
 * gives what multiprocessing's ForkingPickler gives.  Never runs Python
 * code.
 */
int gipc_plain_tree(PyObject *obj);

/*
 * pickle.dumps(obj, protocol) for protocol 4 or 5, written without a
 * Pickler when `obj` is a small plain object (see fastpath.c): a new
 * bytes object; NULL with no exception set where it is left to pickle;
 * NULL with an exception set on a failure (out of memory).  Never runs
 * Python code.
 */
PyObject *gipc_plain_pickle(PyObject *obj, int protocol);

/*
 * Calls into Python from the fast calls.  Python code may switch
 * greenlets, and greenlet saves a greenlet's stack by copying it, C frames
 * included: a frame live across such a call must not hold locals whose
 * address was taken (AddressSanitizer surrounds those with redzones, and
 * reports greenlet's copy).  These helpers keep their argument arrays out
 * of the callers' frames, in frames of their own that are not instrumented
 * (they hold no logic).
 */
PyObject *gipc_call2(PyObject *callable, PyObject *a, PyObject *b);
PyObject *gipc_call3(PyObject *callable, PyObject *a, PyObject *b,
                     PyObject *c);

/* Take the exception being raised (a new reference, normalised). */
PyObject *gipc_take_exception(void);

/* Raise `exc` again (taking the reference), as gipc_take_exception()
 * gave it. */
void gipc_restore_exception(PyObject *exc);

#endif /* GIPC_FASTPATH_H */
