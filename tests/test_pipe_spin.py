"""Adaptive receive spinning: a reader whose spins keep catching nothing
stops spinning for a while (its waits go straight to sleep); a spin that
catches data ends the pause."""
import os
import threading
import time

import gevent
import gevent.event

import gipc
from gipc import _core
from support import frame

# As in csrc/spin.c.
MISS_LIMIT = 4
PAUSE_MIN = 16

#: See test_a_spin_that_catches_data_ends_the_pause.
WRITE_DELAY = 0.1


def _get_each_after_the_reader_slept(r, w, n):
    """n receives that each find the pipe empty for the whole spin: the
    writer greenlet sends a message only after the reader got the previous
    one, and cannot run before the reader yields to the hub (which it does
    only once its spin is over and it goes to sleep)."""
    received = gevent.event.Event()

    def writer():
        for i in range(n):
            w.put(b"%d" % i)
            received.wait(timeout=10)
            received.clear()

    g = gevent.spawn(writer)
    got = []
    for _ in range(n):
        got.append(r.get(timeout=10))
        received.set()
    g.join(timeout=10)
    assert g.successful()
    return got


def test_a_reader_whose_spins_miss_stops_spinning():
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        core = r._core
        assert core.spin_paused == 0
        got = _get_each_after_the_reader_slept(r, w, MISS_LIMIT)
        assert got == [b"%d" % i for i in range(MISS_LIMIT)]
        assert core.spin_paused == PAUSE_MIN
        # Each wait of the pause goes to sleep without spinning.
        _get_each_after_the_reader_slept(r, w, 3)
        assert core.spin_paused == PAUSE_MIN - 3
        # Data already there is no wait: the pause is not consumed.
        w.put(b"ready")
        assert r.get(timeout=10) == b"ready"
        assert core.spin_paused == PAUSE_MIN - 3


def test_pauses_grow_while_spins_keep_missing():
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        core = r._core
        _get_each_after_the_reader_slept(r, w, MISS_LIMIT + PAUSE_MIN)
        assert core.spin_paused == 0  # the pause is used up
        # The spin that probes the channel misses: a twice longer pause.
        _get_each_after_the_reader_slept(r, w, 1)
        assert core.spin_paused == 2 * PAUSE_MIN


def test_a_spin_that_catches_data_ends_the_pause():
    r, w = os.pipe()
    os.set_blocking(r, False)
    core = _core.Reader(r, 1 << 20)
    try:
        for _ in range(MISS_LIMIT):
            assert core.read_frame(1) is None  # a 1 µs spin that misses
        assert core.spin_paused == PAUSE_MIN
        for _ in range(PAUSE_MIN):
            assert core.read_frame(1) is None  # paused: no spin
        assert core.spin_paused == 0
        # A thread writes while the reader spins.  The call releases the
        # GIL around its first read() of the empty pipe too (a 64 KiB
        # buffer), so a thread let go just before the call can win the race
        # to that read: then no spin catches anything.  The thread waits
        # WRITE_DELAY after the call began, far longer than that first read
        # takes and far shorter than the spin's cap (a second).
        go = threading.Event()

        def write_when_let_go():
            go.wait(10)
            time.sleep(WRITE_DELAY)
            os.write(w, frame(b"hi"))

        writer = threading.Thread(target=write_when_let_go)
        writer.start()
        go.set()
        got = core.read_frame(10_000_000)  # spins up to the cap, a second
        assert got == b"hi"
        writer.join(timeout=10)
        # The pause is over and its length back to the shortest.
        assert core.spin_paused == 0
        for _ in range(MISS_LIMIT):
            assert core.read_frame(1) is None
        assert core.spin_paused == PAUSE_MIN
    finally:
        core.detach()
        os.close(r)
        os.close(w)
