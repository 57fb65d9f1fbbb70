/*
 * A cheap monotonic clock for the fairness turn (turn.c): never a syscall
 * per message.
 *
 * CLOCK_MONOTONIC_COARSE is read from the vDSO without touching the
 * time-stamp counter (about 10 ns), but it only advances once per kernel
 * tick: 1 ms on a HZ=1000 kernel, 4 ms on a HZ=250 one, too coarse to keep
 * a turn near 1 ms.  gipc_cheap_clock() picks it where its resolution is
 * fine enough, and CLOCK_MONOTONIC (also a vDSO read on Linux, about 30 ns)
 * otherwise or where the coarse clock does not exist.
 */
#ifndef GIPC_CLOCK_H
#define GIPC_CLOCK_H

#include <stdint.h>
#include <time.h>

/* The cheapest clock whose resolution is at most `max_res_ns`. */
static inline clockid_t
gipc_cheap_clock(int64_t max_res_ns)
{
#ifdef CLOCK_MONOTONIC_COARSE
    struct timespec res;

    if (clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0 &&
        res.tv_sec == 0 && res.tv_nsec <= max_res_ns) {
        return CLOCK_MONOTONIC_COARSE;
    }
#else
    (void)max_res_ns;
#endif
    return CLOCK_MONOTONIC;
}

/* Nanoseconds on `clock`. */
static inline int64_t
gipc_clock_ns(clockid_t clock)
{
    struct timespec ts;

    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#endif /* GIPC_CLOCK_H */
