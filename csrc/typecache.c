/*
 * Type-cache warming (see typecache.h).
 */
#include "typecache.h"

/*
 * One lookup of `name` on `type` through CPython's type lookup cache.
 *
 * No public C API has that effect: attribute access on the type object
 * (PyObject_GetAttr) also looks the name up on the metatype, which fills
 * other cache entries (and may push out the parent's own), and it runs
 * descriptors.  CPython's _PyType_Lookup() is exactly the lookup attribute
 * access makes; it is private but exported, unchanged in what gipc uses
 * (a borrowed reference or NULL, never an exception set), in every
 * version up to 3.14.  Newer versions are not known to keep it: there the
 * warming does nothing, which costs a child only the page copies it
 * would have saved (the lookups are a hint, see gipc/_lookups.py).
 */
#if PY_VERSION_HEX < 0x030F0000
#define GIPC_WARMS_TYPE_CACHE 1
#else
#define GIPC_WARMS_TYPE_CACHE 0
#endif

static void
warm_lookup(PyTypeObject *type, PyObject *name)
{
#if GIPC_WARMS_TYPE_CACHE
    (void)_PyType_Lookup(type, name);
#else
    (void)type;
    (void)name;
#endif
}

/*
 * warm_type_cache(lookups) -> None
 *
 * lookups is a flat tuple (type, name, type, name, ...).  Looks each name
 * up on each type, as attribute access does, so that CPython's type
 * lookup cache holds the answers before a fork.  A child's lookup that
 * misses that cache writes to it, and the cache is shared copy-on-write
 * with the parent: every child would copy its pages (see
 * gipc/_lookups.py).  A lookup raises nothing and normally runs no Python
 * code (a class dict with keys that are not str could); only a malformed
 * argument raises TypeError.
 */
PyObject *
gipc_warm_type_cache(PyObject *Py_UNUSED(module), PyObject *lookups)
{
    Py_ssize_t i, n;

    if (!PyTuple_Check(lookups) || PyTuple_GET_SIZE(lookups) % 2 != 0) {
        PyErr_SetString(PyExc_TypeError, "warm_type_cache() takes a tuple "
                        "(type, name, type, name, ...)");
        return NULL;
    }
    n = PyTuple_GET_SIZE(lookups);
    for (i = 0; i < n; i += 2) {
        PyObject *type = PyTuple_GET_ITEM(lookups, i);
        PyObject *name = PyTuple_GET_ITEM(lookups, i + 1);

        if (!PyType_Check(type) || !PyUnicode_CheckExact(name)) {
            PyErr_Format(PyExc_TypeError, "warm_type_cache(): item %zd is "
                         "not a (type, str) pair", i / 2);
            return NULL;
        }
        warm_lookup((PyTypeObject *)type, name);
    }
    Py_RETURN_NONE;
}
