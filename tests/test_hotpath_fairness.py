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
from gipc import _core, _stream
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


# ------------------------------------------------ the turn's own rules


def test_turn_is_due_once_its_slice_is_over():
    assert _core.Turn(0).due()
    turn = _core.Turn(3600 * 10**6)  # an hour
    assert not turn.due()
    turn.restart()
    assert not turn.due()
    assert isinstance(turn.coarse, bool)


@pytest.mark.parametrize("bad", [-1, 3600 * 10**6 + 1])
def test_turn_refuses_a_slice_out_of_range(bad):
    with pytest.raises(ValueError):
        _core.Turn(bad)


@pytest.fixture
def zero_slice_pipe(monkeypatch):
    """A raw pipe whose slice is over at every call."""
    monkeypatch.setattr(_stream, "FAIRNESS_SLICE_US", 0)
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        yield r, w


def _switched_during(call):
    """Whether ``call()`` let a just-spawned greenlet run."""
    ran = []
    g = gevent.spawn(ran.append, True)
    try:
        call()
    finally:
        g.kill()
    return bool(ran)


def test_a_call_after_the_loop_ran_does_not_yield(zero_slice_pipe):
    r, w = zero_slice_pipe
    w.put(b"first")  # the first slice begins
    gevent.sleep(0.002)  # the loop runs: the slice's yield is not needed
    assert not _switched_during(lambda: w.put(b"x"))
    # Now the loop has not run since: the next call whose slice is over
    # yields.
    assert _switched_during(lambda: w.put(b"y"))
    assert [r.get(timeout=WAIT) for _ in range(3)] == [b"first", b"x", b"y"]


def test_the_yield_lets_timers_run(zero_slice_pipe):
    """A timer due during a loop of calls fires within the loop."""
    r, w = zero_slice_pipe
    fired = []
    timer = gevent.get_hub().loop.timer(0.0)
    timer.start(fired.append, True)
    try:
        for _ in range(4):
            w.put(b"m")
            if fired:
                break
    finally:
        timer.close()
    assert fired
    while r.poll():
        assert r.get(timeout=WAIT) == b"m"


def _send_bytes_n(conn, size, n):
    data = b"x" * size
    for _ in range(n):
        conn.send_bytes(data)


def test_ticker_ticks_through_a_connection_receive_loop():
    size, n = 64, 60_000
    c_r, c_w = gipc.Pipe(duplex=False)
    with c_r:
        p = gipc.Process(target=_send_bytes_n, args=(c_w, size, n))
        p.start()
        try:
            gevent.sleep(0.05)

            def receive():
                for _ in range(n):
                    assert len(c_r.recv_bytes()) == size

            ticks, elapsed = _ticks_during(receive)
        finally:
            code = _finish(p)
    assert code == 0
    assert ticks >= int(elapsed / 0.020), (ticks, elapsed)
