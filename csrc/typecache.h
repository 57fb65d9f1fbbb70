/*
 * Type-cache warming: the type lookups a child will make, made in the
 * parent before the fork, so that the child's hit CPython's type lookup
 * cache instead of writing to it (see gipc/_lookups.py).
 */
#ifndef GIPC_TYPECACHE_H
#define GIPC_TYPECACHE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* warm_type_cache(lookups) -> None */
PyObject *gipc_warm_type_cache(PyObject *module, PyObject *lookups);

#endif /* GIPC_TYPECACHE_H */
