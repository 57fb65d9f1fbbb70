/*
 * The Turn type (gipc._core.Turn): the fairness clock of one endpoint.  A
 * greenlet whose calls never have to wait must let the event loop run once
 * it has had the CPU for about a slice (1 ms); a Turn says, at the cost of
 * one cheap clock read (clock.h), whether that slice is over.
 */
#ifndef GIPC_TURN_H
#define GIPC_TURN_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

extern PyType_Spec gipc_turn_spec;

#endif /* GIPC_TURN_H */
