"""Fairness by time: a greenlet whose calls never have to wait (its peer
keeps up) lets the event loop run about every millisecond, whatever the
size and number of its messages.  Here a ticker (a ``gevent.sleep(0.001)``
loop, i.e. a timer) must keep ticking through back-to-back receive and send
loops with a child process; the bound, one tick per 20 ms on average, is
loose enough for a loaded machine (the turn comes every ~1 ms)."""
import time

import gevent
import pytest

import gipc
from support import end as _finish

WAIT = 60
#: (message size, count): large messages read in one call, 64 KiB ones
#: that fill the pipe, and small ones of which one read brings many.
LOOPS = [(1024 * 1024, 60), (64 * 1024, 600), (64, 60_000)]
IDS = ["1MiB", "64KiB", "64B"]


class Ticks:
    """Counts the turns a timer-driven greenlet gets."""

    def __init__(self):
        self.count = 0
        self._g = gevent.spawn(self._run)

    def _run(self):
        while True:
            self.count += 1
            gevent.sleep(0.001)

    def stop(self):
        self._g.kill(timeout=5)


def _send_n(w, size, n):
    data = b"x" * size
    for _ in range(n):
        w.put(data)


def _drain_n(r, w, n):
    for _ in range(n):
        r.get()
    w.put("done")


def _ticks_during(loop):
    """Run ``loop()`` beside a ticker; return (ticks, seconds)."""
    ticks = Ticks()
    gevent.sleep(0.002)  # the ticker is waiting on its timer
    start_count = ticks.count
    start = time.monotonic()
    try:
        loop()
    finally:
        elapsed = time.monotonic() - start
        ticks.stop()
    return ticks.count - start_count, elapsed


@pytest.mark.parametrize("size,n", LOOPS, ids=IDS)
def test_ticker_ticks_through_a_back_to_back_receive_loop(size, n):
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        p = gipc.start_process(_send_n, args=(w, size, n))
        try:
            # The child fills the pipe before the loop starts: the first
            # calls find data without waiting.
            gevent.sleep(0.05)

            def receive():
                for _ in range(n):
                    assert len(r.get(timeout=WAIT)) == size

            ticks, elapsed = _ticks_during(receive)
        finally:
            code = _finish(p)
    assert code == 0
    assert ticks >= int(elapsed / 0.020), (ticks, elapsed)


@pytest.mark.parametrize("size,n", LOOPS, ids=IDS)
def test_ticker_ticks_through_a_back_to_back_send_loop(size, n):
    data = b"x" * size
    with gipc.pipe(encoder=None, decoder=None) as (r, w), \
            gipc.pipe() as (done_r, done_w):
        p = gipc.start_process(_drain_n, args=(r, done_w, n))
        try:
            def send():
                for _ in range(n):
                    w.put(data)

            ticks, elapsed = _ticks_during(send)
            assert done_r.get(timeout=WAIT) == "done"
        finally:
            code = _finish(p)
    assert code == 0
    assert ticks >= int(elapsed / 0.020), (ticks, elapsed)


def test_a_loop_of_buffered_gets_yields_within_its_slice():
    """Without a child: 2,000 small messages buffered in the pipe, read
    back to back (no call waits); the ticker runs whenever the loop took
    longer than a few slices."""
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        n = 2000
        for i in range(n):
            w.put(b"%d" % i)

        def receive():
            for i in range(n):
                assert r.get(timeout=WAIT) == b"%d" % i
                # Make each call take ~20 us, so the loop lasts ~40 ms.
                end = time.monotonic() + 20e-6
                while time.monotonic() < end:
                    pass

        ticks, elapsed = _ticks_during(receive)
    assert ticks >= int(elapsed / 0.020), (ticks, elapsed)
    assert ticks >= 1
