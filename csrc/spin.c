/*
 * Spinning on an empty pipe (see spin.h).
 *
 * A reader that sleeps in the kernel must be woken by the writer (a
 * cross-CPU wake-up, costly on virtual machines); one that spins a few
 * microseconds for a reply that is about to arrive is not.
 *
 * Adaptive spinning.  A spin pays off on a channel whose replies come
 * within microseconds; on one whose messages come seldom it only burns
 * SPIN_US of CPU (and of the event loop) before every sleep.  After
 * SPIN_MISS_LIMIT spins in a row that caught nothing, the next waits of
 * this reader go straight to sleep: SPIN_PAUSE_MIN of them, then, if the
 * spin that probes the channel after the pause misses too, twice as many,
 * up to SPIN_PAUSE_MAX.  A spin that catches data ends any pause.
 */
#include "spin.h"

#include <poll.h>
#include <time.h>

#define SPIN_MISS_LIMIT 4
#define SPIN_PAUSE_MIN 16
#define SPIN_PAUSE_MAX 1024

/* A second at most; also keeps the conversion to ns in range. */
#define SPIN_US_MAX 1000000L

static int64_t
monotonic_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void
gipc_spin_start(gipc_spin *spin, long spin_us)
{
    if (spin_us > SPIN_US_MAX) {
        spin_us = SPIN_US_MAX;
    }
    spin->until = spin_us > 0 ? monotonic_ns() + spin_us * 1000 : 0;
}

int
gipc_spin_allowed(gipc_spin *spin)
{
    if (spin->skip > 0) {
        spin->skip--;
        spin->until = 0;
        return 0;
    }
    return 1;
}

static void
spin_record(gipc_spin *spin, int caught)
{
    if (caught) {
        spin->misses = 0;
        spin->pause = SPIN_PAUSE_MIN;
        return;
    }
    if (++spin->misses < SPIN_MISS_LIMIT) {
        return;
    }
    if (spin->pause < SPIN_PAUSE_MIN) {
        spin->pause = SPIN_PAUSE_MIN;
    }
    spin->skip = spin->pause;
    if (spin->pause <= SPIN_PAUSE_MAX / 2) {
        spin->pause *= 2;
    }
    /* After the pause, one more miss starts the next (longer) one. */
    spin->misses = SPIN_MISS_LIMIT - 1;
}

int
gipc_spin_for_input(gipc_spin *spin, int fd)
{
    struct pollfd pfd;
    int ready = 0;
    int64_t until = spin->until;

    spin->until = 0;
    pfd.fd = fd;
    pfd.events = POLLIN;
    Py_BEGIN_ALLOW_THREADS
    do {
        pfd.revents = 0;
        if (poll(&pfd, 1, 0) > 0) {
            ready = 1;
            break;
        }
    } while (monotonic_ns() < until);
    Py_END_ALLOW_THREADS
    spin_record(spin, ready);
    return ready;
}
