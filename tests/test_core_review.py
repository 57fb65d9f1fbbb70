"""Regression tests for the C core findings of issue 17: length overflow in
the reader, pid ranges, signals blocked across the fork hooks, reference
cycles through the reader and writer, and README promises of the C side
(frames of 2 GiB and more, the 4 MiB slice per call, fork() failing in the
C helper)."""
import errno
import gc
import os
import struct
import sys
import weakref

import gevent
import gevent.os
import pytest

import gipc
from gipc import GIPCProtocolError, _core
from support import hand_write, run_script

WAIT = 30


def _long_header(n):
    """The header announcing a payload of ``n`` bytes in the long form."""
    return struct.pack(">iQ", -1, n)


# ------------------------------------------------ max_message_size bounds


def test_max_message_size_has_a_maximum_that_leaves_room_for_a_header():
    assert _core.MAX_MESSAGE_SIZE == sys.maxsize - 12


@pytest.mark.parametrize("size", [sys.maxsize, _core.MAX_MESSAGE_SIZE + 1])
def test_max_message_size_above_the_maximum_is_refused(size):
    fds_before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(ValueError, match="at most"):
        gipc.pipe(max_message_size=size)
    # Refused before any descriptor was created.
    assert set(os.listdir("/proc/self/fd")) == fds_before
    with gipc.pipe() as (r, w):
        with pytest.raises(ValueError, match="at most"):
            r.max_message_size = size
        assert r.max_message_size == 4 * 1024 ** 3
        with pytest.raises(ValueError, match="at most"):
            _core.Reader(r.fileno(), size)


def test_max_message_size_beyond_ssize_t_is_an_overflow_in_the_core():
    with gipc.pipe() as (r, w):
        with pytest.raises(OverflowError):
            _core.Reader(r.fileno(), 2 ** 63)


@pytest.mark.parametrize("announced", [
    2 ** 63 - 1,          # the sum with the header overflowed a Py_ssize_t
    2 ** 63,
    2 ** 64 - 1,
    _core.MAX_MESSAGE_SIZE + 1,
])
def test_announced_length_above_the_maximum_is_a_protocol_error(announced):
    with gipc.pipe(encoder=None, decoder=None,
                   max_message_size=_core.MAX_MESSAGE_SIZE) as (r, w):
        hand_write(w, _long_header(announced) + b"x" * 64)
        with pytest.raises(GIPCProtocolError) as info:
            r.get(timeout=WAIT)
        assert info.value.errno == errno.EMSGSIZE


@pytest.mark.parametrize("announced", [
    _core.MAX_MESSAGE_SIZE,   # no bytes object can be that large
    pytest.param(2 ** 62, marks=pytest.mark.skipif(
        bool(os.environ.get("GIPC_SANITIZED")),
        reason="AddressSanitizer aborts on a malloc() this large instead "
               "of failing it")),
])
@pytest.mark.parametrize("into", [False, True])
def test_announced_length_at_the_maximum_is_a_memory_error(announced, into):
    """max_message_size at its maximum: a peer announcing that much gets
    MemoryError (no bytes object can be that large), not a crash, a hang
    or undefined behaviour."""
    with gipc.pipe(encoder=None, decoder=None,
                   max_message_size=_core.MAX_MESSAGE_SIZE) as (r, w):
        assert r.max_message_size == _core.MAX_MESSAGE_SIZE
        hand_write(w, _long_header(announced) + b"x" * 64)
        with pytest.raises(MemoryError):
            if into:
                r.get_into(bytearray(16), timeout=WAIT)
            else:
                r.get(timeout=WAIT)



# ------------------------------------------------------------ pid ranges


@pytest.mark.parametrize("pid", [2 ** 32 + 1, 2 ** 31, -2 ** 31 - 1])
def test_pidfd_open_refuses_a_pid_beyond_pid_t(pid):
    """A bare cast made pidfd_open(2**32 + 1) open pid 1."""
    with pytest.raises(OverflowError):
        _core.pidfd_open(pid)


@pytest.mark.parametrize("pid", [0, -1])
def test_pidfd_open_refuses_a_pid_that_is_not_positive(pid):
    with pytest.raises(ValueError):
        _core.pidfd_open(pid)


@pytest.mark.parametrize("pid", [2 ** 32 + 1, 2 ** 32 + os.getpid(),
                                 -2 ** 32 + 1])
def test_reap_refuses_a_pid_beyond_pid_t(pid):
    with pytest.raises(OverflowError):
        _core.reap(pid)
    with pytest.raises(OverflowError):
        _core.reap(pid, -1)


@pytest.mark.parametrize("pid", [0, -1])
def test_reap_refuses_a_pid_that_is_not_positive(pid):
    with pytest.raises(ValueError):
        _core.reap(pid)


def test_reap_refuses_a_pidfd_beyond_an_int():
    pidfd = os.pidfd_open(os.getpid())
    try:
        # The low 32 bits name a real pidfd: a cast would have used it.
        with pytest.raises(OverflowError):
            _core.reap(os.getpid(), 2 ** 32 + pidfd)
        with pytest.raises(ValueError):
            _core.reap(os.getpid(), -2)
    finally:
        os.close(pidfd)


# ------------------------------------------- signals during the fork hooks


def test_signals_are_deliverable_while_the_fork_hooks_run():
    """fork.c blocked every signal across PyOS_BeforeFork and the
    after-fork hooks: a hook that waits (on logging's lock, say) left the
    process deaf to SIGINT and SIGTERM.  Each hook here sends the main
    thread a signal and waits (bounded) for its handler to run."""
    result = run_script("""
        import os, signal, threading, time
        import gipc

        handled = []
        signal.signal(signal.SIGUSR1, lambda *args: handled.append(1))
        armed = False
        seen = {}

        def hook(name):
            def run():
                if not armed:
                    return
                del handled[:]
                signal.pthread_kill(threading.main_thread().ident,
                                    signal.SIGUSR1)
                deadline = time.monotonic() + 5
                while not handled and time.monotonic() < deadline:
                    pass
                seen[name] = bool(handled)
            return run

        os.register_at_fork(before=hook("before"),
                            after_in_parent=hook("after_in_parent"))
        armed = True
        p = gipc.start_process(target=os.getpid)
        armed = False
        p.join(30)
        print(sorted(seen.items()), p.exitcode)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0] == (
        "[('after_in_parent', True), ('before', True)] 0"), result.stderr


# ------------------------------------- reference cycles through a buffer


class _Owner(bytearray):
    """A buffer that can hold a reference back to the core object using
    it (and be weakly referenced)."""


@pytest.fixture
def raw_pipe():
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    yield r, w
    os.close(r)
    os.close(w)


@pytest.mark.parametrize("view", [False, True])
def test_cycle_through_the_buffer_of_a_pending_frame_is_collected(
        raw_pipe, view):
    r, w = raw_pipe
    writer = _core.Writer(w)
    data = _Owner(4 * 1024 * 1024)  # more than the pipe holds
    data.writer = writer
    assert writer.send(memoryview(data) if view else data) is False
    owner = weakref.ref(data)
    del data, writer
    gc.collect()
    assert owner() is None, "the cycle was not collected"


@pytest.mark.parametrize("view", [False, True])
def test_cycle_through_the_buffer_of_a_partial_get_into_is_collected(
        raw_pipe, view):
    """The buffer export of a half-received read_frame_into held a
    reference that tp_traverse did not report, and there was no tp_clear:
    such a cycle was never freed."""
    r, w = raw_pipe
    reader = _core.Reader(r, 1 << 30)
    buffer = _Owner(1024 * 1024)
    buffer.reader = reader
    os.write(w, struct.pack(">i", 512 * 1024) + b"x" * 1000)
    assert reader.read_frame_into(
        memoryview(buffer) if view else buffer) is None
    assert reader.buffered == 1000
    owner = weakref.ref(buffer)
    del buffer, reader
    gc.collect()
    assert owner() is None, "the cycle was not collected"


def test_timed_out_get_into_keeps_the_buffer_exported_until_the_message_completes():
    """As README's get_into entry says: a bytearray being filled cannot be
    resized until the message is complete."""
    size = 512 * 1024
    buffer = bytearray(size)
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        hand_write(w, struct.pack(">i", size) + b"a" * 1000)
        with pytest.raises(gevent.Timeout):
            r.get_into(buffer, timeout=0.05)
        with pytest.raises(BufferError):
            buffer.extend(b"more")
        fd = os.dup(w.fileno())
        try:
            sender = gevent.spawn(_write_all, fd, b"b" * (size - 1000))
            assert r.get_into(buffer, timeout=WAIT) == size
            sender.get(timeout=WAIT)
        finally:
            os.close(fd)
        buffer.extend(b"more")  # released
        assert buffer == b"a" * 1000 + b"b" * (size - 1000) + b"more"


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[gevent.os.nb_write(fd, view):]
