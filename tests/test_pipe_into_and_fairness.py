"""Receiving into a caller's buffer (get_into), and fairness: a loop of
calls that never has to wait still lets other greenlets run."""
import array
from multiprocessing import BufferTooShort

import gevent
import pytest

import gipc
from gipc import _stream
from gipc._cooperate import yield_to_loop


@pytest.fixture
def raw_pipe():
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        yield r, w


def test_get_into_small_message_at_offset(raw_pipe):
    r, w = raw_pipe
    buf = bytearray(8)
    w.put(b"abc")
    assert r.get_into(buf, 2, timeout=5) == 3
    assert buf == bytearray(b"\0\0abc\0\0\0")


def test_get_into_large_message_into_memoryview_and_array(raw_pipe):
    r, w = raw_pipe
    payload = bytes(range(256)) * 8192  # 2 MiB: read straight into place
    sender = gevent.spawn(w.put, payload)
    target = bytearray(len(payload) + 16)
    assert r.get_into(memoryview(target), 16, timeout=10) == len(payload)
    assert target[16:] == payload
    sender.join(timeout=10)
    ints = array.array("i", [0] * 4)
    w.put(array.array("i", [1, 2, 3, 4]))
    assert r.get_into(ints, timeout=5) == 16
    assert ints.tolist() == [1, 2, 3, 4]


def test_get_into_too_small_buffer_raises_and_keeps_stream(raw_pipe):
    r, w = raw_pipe
    w.put(b"x" * 100)
    w.put(b"next")
    with pytest.raises(BufferTooShort) as info:
        r.get_into(bytearray(10), timeout=5)
    assert info.value.args[0] == b"x" * 100
    assert r.get(timeout=5) == b"next"


@pytest.mark.parametrize("offset, message", [(-1, "negative offset"),
                                             (11, "offset too large")])
def test_get_into_bad_offset(raw_pipe, offset, message):
    r, w = raw_pipe
    with pytest.raises(ValueError, match=message):
        r.get_into(bytearray(10), offset, timeout=1)


def test_get_into_read_only_buffer_is_refused(raw_pipe):
    r, w = raw_pipe
    w.put(b"abc")
    with pytest.raises(TypeError):
        r.get_into(b"immutable", timeout=1)
    assert r.get(timeout=5) == b"abc"


def test_get_into_timed_out_large_message_resumes(raw_pipe):
    r, w = raw_pipe
    payload = b"q" * (3 << 20)
    target = bytearray(len(payload))
    sender = gevent.spawn(w.put, payload)
    received = None
    # A timeout that expires mid-message keeps what arrived; calling again
    # with the same buffer continues it.
    for _ in range(10000):
        try:
            received = r.get_into(target, timeout=0.0001)
            break
        except gevent.Timeout:
            continue
    assert received == len(payload)
    assert target == payload
    sender.join(timeout=10)


def test_duplex_handles_have_get_into():
    with gipc.pipe(duplex=True, encoder=None, decoder=None) as (a, b):
        a.put(b"hello")
        buf = bytearray(5)
        assert b.get_into(buf, timeout=5) == 5
        assert buf == b"hello"


def _count_ticks(counter):
    # One tick per iteration of the event loop.  (A ticker looping on
    # gevent.sleep(0) would hold each iteration for gevent's whole callback
    # budget, the switch interval, and make every yield cost 5 ms.)
    while True:
        counter[0] += 1
        yield_to_loop()


@pytest.fixture
def zero_slice_pipe(monkeypatch):
    """A raw pipe whose fairness slice is over at every call, so that the
    turn-taking does not depend on how fast the machine is (the real slice
    is tested with real time in test_hotpath_fairness.py)."""
    monkeypatch.setattr(_stream, "FAIRNESS_SLICE_US", 0)
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        yield r, w


def test_get_loop_on_buffered_messages_lets_greenlets_run(zero_slice_pipe):
    r, w = zero_slice_pipe
    n = 2048
    for i in range(n):
        w.put(b"%d" % i)
    ticks = [0]
    ticker = gevent.spawn(_count_ticks, ticks)
    gevent.sleep(0)
    start = ticks[0]
    try:
        for i in range(n):
            assert r.get(timeout=5) == b"%d" % i
    finally:
        ticker.kill()
    # Without yielding, the ticker would not run at all during the loop.
    assert ticks[0] - start >= 4


def test_put_loop_that_never_waits_lets_greenlets_run(zero_slice_pipe):
    r, w = zero_slice_pipe
    n = 2048  # small messages: all fit in the pipe
    ticks = [0]
    ticker = gevent.spawn(_count_ticks, ticks)
    gevent.sleep(0)
    start = ticks[0]
    try:
        for i in range(n):
            w.put(b"m")
    finally:
        ticker.kill()
    assert ticks[0] - start >= 4
    for i in range(n):
        assert r.get(timeout=5) == b"m"
