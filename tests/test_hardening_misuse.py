"""Hardening (issue 5): misuse.  Wrong argument types for every public
function and method (pipe, start_process, get, get_into, put, join, the
Connection methods, gipc.wait), huge, zero and negative timeouts.  Each
raises a clear exception at once, creates no descriptor, and leaves the
handles it was called on usable (test_pipe_errors.py and
test_process_handles.py cover closed, foreign, locked and twice-passed
handles)."""
import math
import os
import time

import gevent
import pytest

import gipc

WAIT = 30
BAD_TIMEOUTS = [("1", TypeError), ([], TypeError), (b"1", TypeError),
                (True, TypeError), (1j, TypeError), (math.nan, ValueError)]


def _fds():
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def pair():
    with gipc.pipe() as (r, w):
        yield r, w
        # Still in sync after the misuse.
        w.put(("check", 1))
        assert r.get(timeout=WAIT) == ("check", 1)
        assert not r.poll()


@pytest.fixture
def conns():
    c1, c2 = gipc.Pipe()
    yield c1, c2
    c2.send_bytes(b"check")
    assert c1.recv_bytes() == b"check"
    assert not c1.poll()
    c1.close()
    c2.close()


# ------------------------------------------------------------ pipe()


@pytest.mark.parametrize("kwargs,exc", [
    ({"pipe_size": "1"}, TypeError),
    ({"pipe_size": 1.5}, TypeError),
    ({"pipe_size": 0}, ValueError),
    ({"pipe_size": -4096}, ValueError),
    ({"max_message_size": None}, TypeError),
    ({"max_message_size": 2.0}, TypeError),
    ({"encoder": 1}, gipc.GIPCError),
    ({"decoder": b"default"}, gipc.GIPCError),
    ({"bogus": 1}, TypeError),
])
def test_pipe_bad_arguments_create_no_descriptor(kwargs, exc):
    before = _fds()
    with pytest.raises(exc):
        gipc.pipe(**kwargs)
    assert _fds() == before


def test_pipe_positional_keyword_only_arguments_are_refused():
    before = _fds()
    with pytest.raises(TypeError):
        gipc.pipe(False, "default", "default", 100)
    assert _fds() == before


# ---------------------------------------------------- start_process()


@pytest.mark.parametrize("call,exc", [
    (lambda: gipc.start_process(5), TypeError),
    (lambda: gipc.start_process(None), TypeError),
    (lambda: gipc.start_process(print, args=[1]), TypeError),
    (lambda: gipc.start_process(print, args="ab"), TypeError),
    (lambda: gipc.start_process(print, kwargs=[("a", 1)]), TypeError),
    (lambda: gipc.start_process(print, (), {}, None, None, 1), TypeError),
    (lambda: gipc.start_process(), TypeError),
])
def test_start_process_bad_arguments_fork_nothing(call, exc):
    before = _fds()
    children = set(gipc.active_children())
    with pytest.raises(exc):
        call()
    assert _fds() == before
    assert set(gipc.active_children()) == children


# ---------------------------------------------------- get / put / into


@pytest.mark.parametrize("bad,exc", BAD_TIMEOUTS)
def test_get_bad_timeout_types(pair, bad, exc):
    r, w = pair
    w.put("waiting")
    with pytest.raises(exc):
        r.get(timeout=bad)
    assert r.get(timeout=0) == "waiting"


def test_get_extra_arguments_refused(pair):
    r, w = pair
    with pytest.raises(TypeError):
        r.get(1, 2)
    with pytest.raises(TypeError):
        r.get(timeout=1, block=True)


@pytest.mark.parametrize("timeout", [-1, -0.001, -math.inf, 0, 0.0])
def test_get_zero_and_negative_timeouts_never_wait(pair, timeout):
    r, w = pair
    t0 = time.monotonic()
    with pytest.raises(gevent.Timeout):
        r.get(timeout=timeout)
    assert time.monotonic() - t0 < 1
    w.put("ready")
    # A message already there is returned even without time to wait.
    assert r.get(timeout=timeout) == "ready"


@pytest.mark.parametrize("timeout", [1e9 + 1, 1e300, math.inf, 2 ** 80])
def test_get_huge_timeouts_mean_no_limit(pair, timeout):
    r, w = pair
    g = gevent.spawn_later(0.01, w.put, "late")
    try:
        assert r.get(timeout=timeout) == "late"
    finally:
        g.kill(block=True, timeout=WAIT)


@pytest.mark.parametrize("args,exc", [
    ((b"immutable",), TypeError),
    (("text",), TypeError),
    ((None,), TypeError),
    ((bytearray(8), -1), ValueError),
    ((bytearray(8), 9), ValueError),
    ((bytearray(8), "0"), TypeError),
    ((bytearray(8), 1.0), TypeError),
    ((memoryview(bytearray(8))[::2],), (TypeError, BufferError, ValueError)),
])
def test_get_into_bad_arguments(args, exc):
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        w.put(b"12345")
        with pytest.raises(exc):
            r.get_into(*args)
        buf = bytearray(8)
        assert r.get_into(buf, 1, timeout=WAIT) == 5
        assert bytes(buf) == b"\x0012345\x00\x00"


@pytest.mark.parametrize("obj", ["text", 5, None, [1, 2],
                                 memoryview(b"abcd")[::2]])
def test_raw_put_of_non_buffers_refused_stream_intact(obj):
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        with pytest.raises(TypeError, match="C-contiguous object supporting "
                           "the buffer protocol, not %s" % type(obj).__name__):
            w.put(obj)
        w.put(b"fine")
        assert r.get(timeout=WAIT) == b"fine"
        assert not r.poll()


def test_put_argument_count(pair):
    r, w = pair
    with pytest.raises(TypeError):
        w.put()
    with pytest.raises(TypeError):
        w.put(1, 2)


@pytest.mark.parametrize("bad,exc", [("5", TypeError), (-1, ValueError),
                                     (None, TypeError), (2.5, TypeError)])
def test_max_message_size_setter_refuses_bad_values(pair, bad, exc):
    r, w = pair
    before = r.max_message_size
    with pytest.raises(exc):
        r.max_message_size = bad
    assert r.max_message_size == before


# -------------------------------------------------------------- join()


def _exit_when_told(r):
    r.get()


@pytest.fixture
def child():
    with gipc.pipe() as (r, w):
        p = gipc.start_process(_exit_when_told, args=(r,))
        yield p
        w.put("exit")
        p.join(timeout=WAIT)
        assert p.exitcode == 0
        p.close()


@pytest.mark.parametrize("bad,exc", BAD_TIMEOUTS)
def test_join_bad_timeouts(child, bad, exc):
    with pytest.raises(exc):
        child.join(bad)
    assert child.is_alive()


@pytest.mark.parametrize("timeout", [0, 0.0, -1, -math.inf])
def test_join_zero_and_negative_timeouts_return_at_once(child, timeout):
    before = _fds()
    t0 = time.monotonic()
    assert child.join(timeout) is None
    assert time.monotonic() - t0 < 1
    assert child.exitcode is None
    assert _fds() == before


@pytest.mark.parametrize("timeout", [1e300, math.inf, 2 ** 80])
def test_join_huge_timeout_waits_for_the_exit(timeout):
    with gipc.pipe() as (r, w):
        p = gipc.start_process(_exit_when_told, args=(r,))
        g = gevent.spawn_later(0.01, w.put, "exit")
        try:
            p.join(timeout)
            assert p.exitcode == 0
        finally:
            g.kill(block=True, timeout=WAIT)
            if p.is_alive():
                p.kill()
                p.join(WAIT)
            p.close()


# --------------------------------------------------------- Connection


@pytest.mark.parametrize("handle,exc", [
    ("3", (AttributeError, TypeError)),  # as multiprocessing's Connection
    (1.5, (AttributeError, TypeError)),
    (None, (AttributeError, TypeError)),
    (-1, ValueError),
])
def test_connection_bad_handle(handle, exc):
    before = _fds()
    with pytest.raises(exc):
        gipc.Connection(handle)
    assert _fds() == before


def test_connection_neither_readable_nor_writable():
    r, w = os.pipe()
    try:
        with pytest.raises(ValueError):
            gipc.Connection(r, readable=False, writable=False)
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("call,exc", [
    (lambda c: c.send_bytes("text"), TypeError),
    (lambda c: c.send_bytes(5), TypeError),
    (lambda c: c.send_bytes(None), TypeError),
    (lambda c: c.send_bytes(b"abc", "1"), TypeError),
    (lambda c: c.send_bytes(b"abc", -1), ValueError),
    (lambda c: c.send_bytes(b"abc", 4), ValueError),
    (lambda c: c.send_bytes(b"abc", 0, 4), ValueError),
    (lambda c: c.send_bytes(b"abc", 0, -1), ValueError),
    (lambda c: c.send(lambda: None), (AttributeError, TypeError,
                                       __import__("pickle").PicklingError)),
    (lambda c: c.recv_bytes("10"), TypeError),
    (lambda c: c.recv_bytes(-1), ValueError),
    (lambda c: c.recv_bytes_into(b"immutable"), TypeError),
    (lambda c: c.recv_bytes_into(bytearray(4), "0"), TypeError),
    (lambda c: c.recv_bytes_into(bytearray(4), -1), ValueError),
    (lambda c: c.recv_bytes_into(bytearray(4), 5), ValueError),
    (lambda c: c.poll("1"), TypeError),
    (lambda c: c.poll(math.nan), ValueError),
    (lambda c: c.poll(gevent.Timeout(1)), TypeError),
])
def test_connection_bad_arguments_leave_it_usable(conns, call, exc):
    c1, c2 = conns
    with pytest.raises(exc):
        call(c1)


@pytest.mark.parametrize("timeout", [0, -1, -math.inf])
def test_connection_poll_zero_and_negative_timeouts(conns, timeout):
    c1, c2 = conns
    assert c1.poll(timeout) is False
    c2.send("x")
    assert c1.poll(timeout) is True
    assert c1.recv() == "x"


@pytest.mark.parametrize("timeout", [1e300, math.inf])
def test_connection_poll_huge_timeout(conns, timeout):
    c1, c2 = conns
    g = gevent.spawn_later(0.01, c2.send, "late")
    try:
        assert c1.poll(timeout) is True
        assert c1.recv() == "late"
    finally:
        g.kill(block=True, timeout=WAIT)


def test_connection_direction_misuse():
    r, w = gipc.Pipe(duplex=False)
    with pytest.raises(OSError, match="write-only"):
        w.recv()
    with pytest.raises(OSError, match="read-only"):
        r.send(1)
    w.send(2)
    assert r.recv() == 2
    r.close()
    w.close()


# -------------------------------------------------------------- wait()


@pytest.mark.parametrize("objects,exc", [
    (5, TypeError),
    (None, TypeError),
    ([object()], AttributeError),
    (["3"], AttributeError),
    ([-5], ValueError),
])
def test_wait_bad_objects(objects, exc):
    before = _fds()
    with pytest.raises(exc):
        gipc.wait(objects, 0)
    assert _fds() == before


@pytest.mark.parametrize("bad,exc", BAD_TIMEOUTS + [
    (gevent.Timeout(1), TypeError)])
def test_wait_bad_timeouts(pair, bad, exc):
    r, w = pair
    with pytest.raises(exc):
        gipc.wait([r], bad)


@pytest.mark.parametrize("timeout", [0, -1, -math.inf])
def test_wait_zero_and_negative_timeouts(pair, timeout):
    r, w = pair
    t0 = time.monotonic()
    assert gipc.wait([r], timeout) == []
    assert gipc.wait([], timeout) == []
    assert time.monotonic() - t0 < 1
    w.put("x")
    assert gipc.wait([r], timeout) == [r]
    assert r.get(timeout=0) == "x"


@pytest.mark.parametrize("timeout", [1e300, math.inf])
def test_wait_huge_timeout(pair, timeout):
    r, w = pair
    g = gevent.spawn_later(0.01, w.put, "late")
    try:
        assert gipc.wait([r], timeout) == [r]
        assert r.get(timeout=0) == "late"
    finally:
        g.kill(block=True, timeout=WAIT)


def test_wait_on_a_closed_handle_raises(pair):
    r, w = pair
    r2, w2 = gipc.pipe()
    r2.close()
    w2.close()
    with pytest.raises(gipc.GIPCClosed):
        gipc.wait([r, r2], 0)
