/*
 * Spinning on an empty pipe before a receive goes to sleep on the hub, and
 * the adaptive pause that stops a reader from spinning on a channel whose
 * messages come seldom.  Each Reader keeps one gipc_spin.
 */
#ifndef GIPC_SPIN_H
#define GIPC_SPIN_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

typedef struct {
    /* For the current call only: until when (CLOCK_MONOTONIC, ns) to spin
     * on an empty pipe before reporting that it would block; 0: no spin. */
    int64_t until;
    /* Spins in a row that caught nothing, waits left that go straight to
     * sleep, and the length of the next such pause. */
    int misses;
    int skip;
    int pause;
} gipc_spin;

/* Let the current call spin for up to `spin_us` microseconds (at most a
 * second; 0 or less: no spin). */
void gipc_spin_start(gipc_spin *spin, long spin_us);

/* Whether this wait may spin; a pause consumes one wait.  Needs the GIL. */
int gipc_spin_allowed(gipc_spin *spin);

/* Poll the empty descriptor `fd` without sleeping until it has input or
 * the deadline passes, with the GIL released; at most once per call.
 * Returns 1 if it became readable.  Needs the GIL on entry. */
int gipc_spin_for_input(gipc_spin *spin, int fd);

#endif /* GIPC_SPIN_H */
