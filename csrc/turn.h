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

#include "clock.h"

#include <stdint.h>

/* A Turn's state, read by the fast paths (fastpath.c) as well. */
typedef struct {
    PyObject_HEAD
    clockid_t clock;
    int64_t slice;      /* ns */
    int64_t end;        /* clock value at which the slice is over */
} TurnObject;

extern PyType_Spec gipc_turn_spec;

/* Whether the slice of `turn` is over (one cheap clock read). */
static inline int
gipc_turn_due(const TurnObject *turn)
{
    return gipc_clock_ns(turn->clock) >= turn->end;
}

#endif /* GIPC_TURN_H */
