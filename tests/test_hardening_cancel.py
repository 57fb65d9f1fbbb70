"""Hardening (issue 5): cancellation.  A gevent.Timeout, greenlet.kill() or
a KeyboardInterrupt thrown into the greenlet, arriving at every stage of
get(), put(), join() and start_process().  Afterwards the handle is either
usable (checked by sending a known sequence and comparing what arrives) or
raises a clear error; it is never silently out of sync."""
import os
import signal
import sys

import gevent
import gevent.event
import pytest

import gipc
from gipc import GIPCProtocolError, _core
from support import hand_write as _hand_write
from support import children
from support import frame as _frame
from support import unfair_pipe

WAIT = 30
HOWS = ["timeout", "kill", "keyboard"]
EXPECTED = {"timeout": gevent.Timeout, "kill": gevent.GreenletExit,
            "keyboard": KeyboardInterrupt}
SEQUENCE = [b"seq-%d" % i for i in range(5)] + [b"L" * 300_000, b""]


def _call(fn, how, *args):
    """Run fn(*args) in this greenlet and return ("ok", result) or
    ("raised", exception) - KeyboardInterrupt included, so that it does not
    reach the hub."""
    try:
        if how == "timeout":
            with gevent.Timeout(0.02):
                return ("ok", fn(*args))
        return ("ok", fn(*args))
    except BaseException as exc:  # noqa: BLE001
        return ("raised", exc)


def _spawn(fn, how, *args):
    g = gevent.spawn(_call, fn, how, *args)
    gevent.sleep(0)  # g runs until it waits
    assert not g.ready()
    return g


def _cancel(g, how):
    """Cancel g (blocked inside a gipc call) as `how` says; check that the
    call raised exactly that."""
    if how == "kill":
        g.kill(block=True, timeout=WAIT)
    elif how == "keyboard":
        g.kill(KeyboardInterrupt, block=True, timeout=WAIT)
    else:
        g.join(timeout=WAIT)
    assert g.dead
    outcome, exc = g.value
    assert outcome == "raised"
    assert isinstance(exc, EXPECTED[how]), repr(exc)


def _feed(w, data):
    """Write raw bytes to the pipe cooperatively (the pipe may be full)."""
    import gevent.socket
    fd = os.dup(w.fileno())
    try:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                gevent.socket.wait_write(fd, timeout=WAIT)
    finally:
        os.close(fd)


def _check_sequence(r, w):
    """The known sequence goes through intact and in order."""
    sender = gevent.spawn(lambda: [w.put(m) for m in SEQUENCE])
    try:
        got = [r.get(timeout=WAIT) for _ in SEQUENCE]
        sender.join(timeout=WAIT)
        assert sender.successful()
    finally:
        sender.kill(block=True, timeout=WAIT)
    assert got == SEQUENCE
    assert not r.poll()


# ------------------------------------------------------------------ get()


@pytest.mark.parametrize("how", HOWS)
def test_get_cancelled_while_idle(how):
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        g = _spawn(r.get, how)
        _cancel(g, how)
        assert r._core.buffered == 0
        _check_sequence(r, w)


@pytest.mark.parametrize("how", HOWS)
def test_get_cancelled_while_waiting_for_the_lock(how):
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        first = gevent.spawn(r.get)
        gevent.sleep(0)
        second = _spawn(r.get, how)  # queued behind `first`
        try:
            _cancel(second, how)
            w.put(b"for first")
            assert first.get(timeout=WAIT) == b"for first"
        finally:
            first.kill(block=True, timeout=WAIT)
        _check_sequence(r, w)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("cut", [1, 2, 3])
def test_get_cancelled_inside_the_header(how, cut):
    payload = b"whole message"
    frame = _frame(payload)
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        _hand_write(w, frame[:cut])
        g = _spawn(r.get, how)
        assert r._core.buffered == cut  # the stage was reached
        _cancel(g, how)
        _hand_write(w, frame[cut:])
        assert r.get(timeout=WAIT) == payload
        _check_sequence(r, w)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("size", [1000, 200_000])
def test_get_cancelled_inside_the_payload(how, size):
    """Small payloads wait in the read buffer, large ones in their own bytes
    object: either way the next get() completes the same message."""
    payload = os.urandom(size)
    frame = _frame(payload)
    cut = 4 + size // 3
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        _hand_write(w, frame[:min(cut, 60_000)])
        g = _spawn(r.get, how)
        # The stage was reached: what was written is taken in (a large
        # payload's header is no longer counted).
        assert r._core.buffered in (min(cut, 60_000), min(cut, 60_000) - 4)
        _cancel(g, how)
        rest = gevent.spawn(_feed, w, frame[min(cut, 60_000):])
        try:
            assert r.get(timeout=WAIT) == payload
            rest.join(timeout=WAIT)
            assert rest.successful()
        finally:
            rest.kill(block=True, timeout=WAIT)
        _check_sequence(r, w)


@pytest.mark.parametrize("how", HOWS)
def test_get_into_cancelled_inside_the_payload_then_get(how):
    """A get_into() cancelled half-way, then a plain get(): the part already
    in the caller's buffer is carried over into the returned message."""
    payload = os.urandom(300_000)
    frame = _frame(payload)
    buf = bytearray(len(payload))
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        _hand_write(w, frame[:50_000])
        g = _spawn(r.get_into, how, buf)
        _cancel(g, how)
        rest = gevent.spawn(_feed, w, frame[50_000:])
        try:
            assert r.get(timeout=WAIT) == payload
            rest.join(timeout=WAIT)
        finally:
            rest.kill(block=True, timeout=WAIT)
        _check_sequence(r, w)


# ------------------------------------------------------------------ put()


@pytest.mark.parametrize("how", HOWS)
def test_put_cancelled_before_any_byte(how):
    import fcntl
    with gipc.pipe(encoder=None, decoder=None, pipe_size=65536) as (r, w):
        size = fcntl.fcntl(w.fileno(), fcntl.F_GETPIPE_SZ)
        filler = b"f" * (size - 4)
        w.put(filler)  # the pipe is exactly full
        g = _spawn(w.put, how, b"never sent")
        _cancel(g, how)
        assert r.get(timeout=WAIT) == filler
        _check_sequence(r, w)


@pytest.mark.parametrize("how", HOWS)
def test_put_cancelled_while_waiting_for_the_lock(how):
    big = os.urandom(1024 * 1024)
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        first = gevent.spawn(w.put, big)
        gevent.sleep(0)
        assert not first.ready()
        second = _spawn(w.put, how, b"cancelled")
        _cancel(second, how)
        assert r.get(timeout=WAIT) == big  # whole, and nothing of `second`
        first.join(timeout=WAIT)
        assert first.successful()
        _check_sequence(r, w)


@pytest.mark.parametrize("how", HOWS)
def test_put_cancelled_mid_frame_breaks_writer_and_reader_sees_it(how):
    # (Its put() must reach the stream before the cancel: no fairness yield
    # first, see support.unfair_pipe.)
    with unfair_pipe(encoder=None, decoder=None) as (r, w):
        w.put(b"complete")
        g = _spawn(w.put, how, b"a" * (4 * 1024 * 1024))
        _cancel(g, how)
        with pytest.raises(GIPCProtocolError, match="interrupted by %s"
                           % EXPECTED[how].__name__):
            w.put(b"after")
        w.close()
        # The reader gets what was whole, then a clear error: the half frame
        # is never taken for a message.
        assert r.get(timeout=WAIT) == b"complete"
        with pytest.raises(GIPCProtocolError, match="middle of a message"):
            while True:
                r.get(timeout=WAIT)


# ----------------------------------------------------------------- join()


def _wait_then_exit(r, code):
    r.get()
    os._exit(code)


@pytest.mark.parametrize("how", HOWS)
def test_join_cancelled_then_join_again(how):
    before = set(os.listdir("/proc/self/fd"))
    with gipc.pipe() as (r, w):
        p = gipc.start_process(_wait_then_exit, args=(r, 7))
        g = _spawn(p.join, how)
        _cancel(g, how)
        # The process is untouched and can be joined again.
        assert p.is_alive()
        assert p.exitcode is None
        w.put("go")
        p.join(timeout=WAIT)
        assert p.exitcode == 7
        p.close()
    assert set(os.listdir("/proc/self/fd")) == before  # no watcher left


# -------------------------------------------------------- start_process()


def _exit_with(code):
    os._exit(code)


class _CooperativeStdout:
    """A sys.stdout whose flush() waits on the hub, as a gevent FileObject's
    can: start_process() flushes the standard streams before it forks, the
    one place a greenlet inside it yields and can be cancelled from
    outside.  This flush waits until it is cancelled (in this process: a
    child, if one was forked by mistake, must not hang in it)."""

    def __init__(self):
        self.flushes = 0
        self._pid = os.getpid()
        self._never = gevent.event.Event()

    def write(self, text):
        return len(text)

    def flush(self):
        if os.getpid() == self._pid:
            self.flushes += 1
            self._never.wait()


@pytest.mark.parametrize("how", HOWS)
def test_start_process_cancelled_inside_the_call_before_the_fork(
        monkeypatch, how):
    """Cancelled while start_process() flushes stdout: the exception reaches
    the caller, nothing is forked, and the handle that would have moved
    stays with the parent, usable and still movable."""
    stdout = _CooperativeStdout()
    with gipc.pipe() as (r, w):
        forked_before = children()
        monkeypatch.setattr(sys, "stdout", stdout)
        g = _spawn(gipc.start_process, how, _wait_then_exit, (r, 5))
        assert stdout.flushes == 1  # g waits inside start_process()
        _cancel(g, how)
        monkeypatch.undo()
        assert children() == forked_before
        assert not r.closed
        w.put("still mine")
        assert r.get(timeout=WAIT) == "still mine"
        p = gipc.start_process(_wait_then_exit, args=(r, 5))
        assert r.closed
        w.put("go")
        p.join(timeout=WAIT)
        assert p.exitcode == 5
        p.close()


@pytest.mark.parametrize("exc", [KeyboardInterrupt, gevent.Timeout,
                                 gevent.GreenletExit])
def test_start_process_interrupted_inside_the_fork_call(monkeypatch, exc):
    """An exception escaping the fork helper itself (a signal handler run
    inside it, say): nothing was forked, the handles stay usable, and the
    next start_process() works."""
    def fork(signals, out, *close_in_child):
        raise exc()

    with gipc.pipe() as (r, w):
        monkeypatch.setattr(_core, "fork", fork)
        with pytest.raises(exc):
            gipc.start_process(_wait_then_exit, args=(r, 3))
        monkeypatch.undo()
        assert not r.closed
        p = gipc.start_process(_wait_then_exit, args=(r, 3))
        assert r.closed
        w.put("go")
        p.join(timeout=WAIT)
        assert p.exitcode == 3
        p.close()


def test_start_process_is_atomic_for_a_pending_timeout():
    """start_process() never yields to the hub: a gevent.Timeout that is
    due cannot interrupt it between fork and bookkeeping; it fires at the
    next wait, with the child fully registered."""
    with gipc.pipe() as (r, w):
        timer = gevent.Timeout(0.001)
        timer.start()
        try:
            import time
            time.sleep(0.01)  # the timer is due, but the hub has not run
            p = gipc.start_process(_wait_then_exit, args=(r, 0))
            assert p.pid and p in gipc.active_children()
            with pytest.raises(gevent.Timeout):
                gevent.sleep(WAIT)
        finally:
            timer.close()
        assert r.closed
        w.put("go")
        p.join(timeout=WAIT)
        assert p.exitcode == 0
        p.close()


def test_sigint_to_the_child_during_its_get_kills_it_not_the_parent():
    """Ctrl-C aimed at a child blocked in get(): the child dies of it (its
    SIGINT disposition is the default one) and the parent's pipe end
    reports the peer gone."""
    with gipc.pipe() as (ready_r, ready_w):
        r, w = gipc.pipe()
        p = gipc.start_process(_ready_then_get, args=(ready_w, r))
        try:
            assert ready_r.get(timeout=WAIT) == "in get"
            p._popen._send_signal(signal.SIGINT)
            p.join(timeout=WAIT)
            assert p.exitcode == -signal.SIGINT
            with pytest.raises(BrokenPipeError):
                w.put("gone")
        finally:
            if p.is_alive():
                p.kill()
                p.join(timeout=WAIT)
            p.close()
            w.close()


def _ready_then_get(ready, r):
    ready.put("in get")
    r.get()
