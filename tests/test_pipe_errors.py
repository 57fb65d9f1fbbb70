"""Errors of pipe handles: closed and locked handles, EOF, broken pipes,
encoder errors, malformed streams, interrupted writes and handles used in a
process that does not own them."""
import errno
import fcntl
import os
import pickle
import struct
import threading

import gevent
import gevent.socket
import pytest

import gipc
from gipc import GIPCClosed, GIPCError, GIPCLocked, GIPCProtocolError
from support import hand_write as _hand_write
from support import frame as _frame

WAIT = 10


def _kill(*greenlets):
    gevent.killall([g for g in greenlets if g is not None], timeout=WAIT)


def _raw_pipe(**kwargs):
    return gipc.pipe(encoder=None, decoder=None, **kwargs)


# ----------------------------------------------------------- hierarchy


def test_exception_hierarchy():
    assert issubclass(GIPCClosed, GIPCError)
    assert issubclass(GIPCLocked, GIPCError)
    assert issubclass(GIPCProtocolError, GIPCError)
    assert issubclass(GIPCProtocolError, OSError)
    assert issubclass(GIPCError, Exception)
    assert not issubclass(GIPCError, OSError)


# -------------------------------------------------------------- closed


def test_use_after_close_raises_gipcclosed():
    r, w = gipc.pipe()
    r.close()
    w.close()
    with pytest.raises(GIPCClosed):
        r.get()
    with pytest.raises(GIPCClosed):
        r.get(timeout=1)
    with pytest.raises(GIPCClosed):
        w.put(1)
    with pytest.raises(GIPCClosed):
        r.poll()
    with pytest.raises(GIPCClosed):
        r.fileno()
    with pytest.raises(GIPCClosed):
        w.fileno()


def test_double_close_raises_gipcclosed():
    r, w = gipc.pipe()
    r.close()
    w.close()
    with pytest.raises(GIPCClosed):
        r.close()
    with pytest.raises(GIPCClosed):
        w.close()


def test_duplex_double_close_raises_gipcclosed():
    a, b = gipc.pipe(duplex=True)
    a.close()
    b.close()
    with pytest.raises(GIPCClosed):
        a.close()
    with pytest.raises(GIPCClosed):
        a.get()
    with pytest.raises(GIPCClosed):
        a.put(1)


def test_close_does_not_close_a_reused_fd_twice():
    r, w = gipc.pipe()
    fd = r.fileno()
    r.close()
    w.close()
    # The number may be reused by an unrelated file; closing the handle
    # again must not touch it.
    other = os.open("/dev/null", os.O_RDONLY)
    try:
        with pytest.raises(GIPCClosed):
            r.close()
        os.fstat(other)
    finally:
        os.close(other)
    assert fd >= 0


def test_get_blocked_then_handle_closed_by_other_greenlet_is_refused():
    """close() never pulls the fd from under a greenlet inside get()."""
    with gipc.pipe() as (r, w):
        g = gevent.spawn(r.get)
        try:
            gevent.sleep(0)  # g runs until it waits for input
            assert not g.ready()
            with pytest.raises(GIPCLocked):
                r.close()
            assert not r.closed
            w.put("still works")
            assert g.get(timeout=WAIT) == "still works"
        finally:
            _kill(g)


# -------------------------------------------------------------- locked


def test_close_while_get_blocked_raises_gipclocked():
    r, w = gipc.pipe()
    g = gevent.spawn(r.get)
    try:
        gevent.sleep(0)
        assert not g.ready()
        with pytest.raises(GIPCLocked):
            r.close()
        # The context manager says so too.
        with pytest.raises(GIPCLocked, match="locked"):
            with r:
                pass
        assert not r.closed
    finally:
        _kill(g)
    assert g.dead
    r.close()  # free again once the greenlet is gone
    w.close()


def test_close_while_put_blocked_raises_gipclocked():
    r, w = _raw_pipe()
    g = gevent.spawn(w.put, b"x" * (1024 * 1024))  # more than the pipe holds
    try:
        gevent.sleep(0)
        assert not g.ready()
        with pytest.raises(GIPCLocked):
            w.close()
        assert not w.closed
        assert r.get(timeout=WAIT) == b"x" * (1024 * 1024)
        g.join(timeout=WAIT)
        assert g.successful()
    finally:
        _kill(g)
    w.close()
    r.close()


def test_duplex_close_while_get_blocked_raises_gipclocked():
    a, b = gipc.pipe(duplex=True)
    g = gevent.spawn(a.get)
    try:
        gevent.sleep(0)
        with pytest.raises(GIPCLocked):
            a.close()
    finally:
        _kill(g)
    if not a.closed:
        a.close()
    b.close()


def test_pair_context_exit_while_locked_raises_and_still_closes_other():
    pair = gipc.pipe()
    r, w = pair
    g = gevent.spawn(r.get)
    try:
        gevent.sleep(0)
        with pytest.raises(GIPCLocked):
            with pair:
                pass
        assert w.closed  # the writer was closed despite the reader's error
        assert not r.closed
    finally:
        _kill(g)
    r.close()


# ----------------------------------------------------------------- EOF


def test_eof_at_message_boundary_raises_eoferror():
    r, w = gipc.pipe()
    w.put("last")
    w.close()
    assert r.get(timeout=WAIT) == "last"
    with pytest.raises(EOFError):
        r.get(timeout=WAIT)
    # EOF is not a broken stream: it is reported again, not a protocol error.
    with pytest.raises(EOFError) as info:
        r.get(timeout=WAIT)
    assert not isinstance(info.value, GIPCError)
    r.close()


def test_eof_wakes_a_blocked_reader():
    r, w = gipc.pipe()
    g = gevent.spawn(r.get)
    try:
        gevent.sleep(0)
        w.close()
        with pytest.raises(EOFError):
            g.get(timeout=WAIT)
    finally:
        _kill(g)
    r.close()


@pytest.mark.parametrize("payload_size", [100, 100000])
def test_eof_inside_payload_raises_protocol_error(payload_size):
    r, w = _raw_pipe()
    _hand_write(w, struct.pack(">i", payload_size) + b"a" * 50)
    w.close()
    with pytest.raises(OSError) as info:
        r.get(timeout=WAIT)
    assert isinstance(info.value, GIPCProtocolError)
    assert info.value.errno == errno.EPROTO
    assert "middle of a message" in str(info.value)
    # Broken from now on, naming the cause.
    with pytest.raises(GIPCProtocolError, match="middle of a message"):
        r.get(timeout=WAIT)
    with pytest.raises(GIPCProtocolError, match="middle of a message"):
        r.poll()
    r.close()
    assert r.closed


def test_eof_inside_header_raises_protocol_error():
    r, w = _raw_pipe()
    _hand_write(w, b"\x00\x00")
    w.close()
    with pytest.raises(GIPCProtocolError) as info:
        r.get(timeout=WAIT)
    assert info.value.errno == errno.EPROTO
    assert "header" in str(info.value)
    with pytest.raises(GIPCProtocolError, match="header"):
        r.get()
    r.close()


def test_eof_inside_64bit_header_raises_protocol_error():
    r, w = _raw_pipe()
    _hand_write(w, struct.pack(">i", -1) + b"\x00\x00\x00")
    w.close()
    with pytest.raises(GIPCProtocolError):
        r.get(timeout=WAIT)
    r.close()


# --------------------------------------------------------- broken pipe


def test_put_after_reader_closed_raises_brokenpipeerror():
    r, w = gipc.pipe()
    r.close()
    with pytest.raises(BrokenPipeError):
        w.put("nobody listens")
    # No byte went out: the writer is not marked broken, only the pipe is.
    with pytest.raises(BrokenPipeError):
        w.put("again")
    w.close()


def test_reader_closed_while_put_blocked_midframe():
    r, w = _raw_pipe()
    g = gevent.spawn(w.put, b"y" * (1024 * 1024))
    try:
        gevent.sleep(0)  # the pipe is full, g waits with a partial frame
        assert not g.ready()
        r.close()
        with pytest.raises(BrokenPipeError):
            g.get(timeout=WAIT)
    finally:
        _kill(g)
    # Part of a frame went out: the writer is now unusable, and says why.
    with pytest.raises(GIPCProtocolError, match="interrupted"):
        w.put(b"z")
    w.close()


# ------------------------------------------------------ encoder errors


def test_unpicklable_object_raises_picklings_error_and_stream_intact():
    lock = threading.Lock()
    with pytest.raises(TypeError) as expected:
        pickle.dumps(lock, protocol=pickle.HIGHEST_PROTOCOL)
    with gipc.pipe() as (r, w):
        w.put("before")
        with pytest.raises(type(expected.value)) as info:
            w.put(lock)
        assert type(info.value) is TypeError
        assert str(info.value) == str(expected.value)
        # pickle's own error for a local function, unchanged, whatever this
        # Python makes it (AttributeError on 3.10-3.13).
        local = lambda: None  # noqa: E731
        with pytest.raises((pickle.PicklingError, AttributeError)) as expected:
            pickle.dumps(local, protocol=pickle.HIGHEST_PROTOCOL)
        with pytest.raises(type(expected.value)) as info:
            w.put(local)
        assert type(info.value) is type(expected.value)
        assert str(info.value) == str(expected.value)
        w.put("after")
        assert r.get(timeout=WAIT) == "before"
        assert r.get(timeout=WAIT) == "after"
        assert not r.poll()


def test_encoder_exception_propagates_unchanged():
    class Boom(Exception):
        pass

    def enc(o):
        if o == "boom":
            raise Boom("no")
        return pickle.dumps(o)

    with gipc.pipe(encoder=enc) as (r, w):
        with pytest.raises(Boom):
            w.put("boom")
        w.put("fine")
        assert r.get(timeout=WAIT) == "fine"


def test_encoder_returning_non_buffer_raises_typeerror_stream_intact():
    with gipc.pipe(encoder=lambda o: o, decoder=None) as (r, w):
        with pytest.raises(TypeError):
            w.put(123)
        w.put(b"fine")
        assert r.get(timeout=WAIT) == b"fine"
        assert not r.poll()


# ----------------------------------------------------- malformed streams


def test_header_larger_than_max_message_size():
    r, w = _raw_pipe(max_message_size=100)
    _hand_write(w, struct.pack(">i", 101) + b"x" * 101)
    with pytest.raises(GIPCProtocolError) as info:
        r.get(timeout=WAIT)
    assert info.value.errno == errno.EMSGSIZE
    assert "max_message_size" in str(info.value)
    assert "101" in str(info.value)
    with pytest.raises(GIPCProtocolError, match="max_message_size") as later:
        r.get(timeout=WAIT)
    assert later.value.errno == errno.EMSGSIZE
    r.close()
    w.close()


def test_huge_header_fails_before_allocating():
    """A 64-bit header announcing an absurd size is refused at once (no
    MemoryError, no attempt to allocate)."""
    r, w = _raw_pipe()
    _hand_write(w, struct.pack(">iQ", -1, 2 ** 62) + b"x")
    with pytest.raises(GIPCProtocolError) as info:
        r.get(timeout=WAIT)
    assert info.value.errno == errno.EMSGSIZE
    r.close()
    w.close()


def test_huge_64bit_header_above_ssize_max():
    r, w = _raw_pipe()
    _hand_write(w, struct.pack(">iQ", -1, 2 ** 64 - 1))
    with pytest.raises(GIPCProtocolError) as info:
        r.get(timeout=WAIT)
    assert info.value.errno == errno.EMSGSIZE
    r.close()
    w.close()


@pytest.mark.parametrize("length", [-2, -3, -1000, -2 ** 31])
def test_negative_length_other_than_minus_one(length):
    r, w = _raw_pipe()
    _hand_write(w, struct.pack(">i", length) + b"payload")
    with pytest.raises(GIPCProtocolError) as info:
        r.get(timeout=WAIT)
    assert info.value.errno == errno.EPROTO
    assert "negative length" in str(info.value)
    assert str(length) in str(info.value)
    with pytest.raises(GIPCProtocolError, match="negative length"):
        r.get(timeout=WAIT)
    r.close()
    w.close()


def test_malformed_frame_after_good_frames():
    """Frames before the corruption are delivered; then the error."""
    r, w = _raw_pipe()
    _hand_write(w, _frame(b"one") + _frame(b"two") + struct.pack(">i", -5))
    assert r.get(timeout=WAIT) == b"one"
    assert r.get(timeout=WAIT) == b"two"
    with pytest.raises(GIPCProtocolError):
        r.get(timeout=WAIT)
    r.close()
    w.close()


def test_broken_reader_can_be_closed_and_poll_reports_it():
    r, w = _raw_pipe()
    _hand_write(w, struct.pack(">i", -7))
    assert r.poll()
    with pytest.raises(GIPCProtocolError):
        r.get(timeout=WAIT)
    with pytest.raises(GIPCProtocolError):
        r.poll()
    r.close()
    assert r.closed and r._fd is None
    with pytest.raises(GIPCClosed):
        r.get()
    w.close()


def test_corrupt_pickle_raises_decoder_error_stream_intact():
    r, w = gipc.pipe(encoder=None)
    w.put(b"\x80\x05not a pickle")
    w.put(pickle.dumps("good"))
    # pickle's own error, unchanged: not a GIPCError (the framing is fine).
    with pytest.raises(pickle.UnpicklingError, match="invalid load key") \
            as info:
        r.get(timeout=WAIT)
    assert type(info.value) is pickle.UnpicklingError
    assert r.get(timeout=WAIT) == "good"
    r.close()
    w.close()


def test_64bit_header_small_payload():
    r, w = _raw_pipe()
    _hand_write(w, struct.pack(">iQ", -1, 5) + b"hello")
    _hand_write(w, struct.pack(">iQ", -1, 0))
    assert r.get(timeout=WAIT) == b"hello"
    assert r.get(timeout=WAIT) == b""
    r.close()
    w.close()


def test_64bit_header_large_payload_pickled():
    """A 64-bit header (as sent for 2 GiB and more) in front of a pickle
    larger than the read buffer, fed in pieces."""
    obj = {"big": b"b" * 100000}
    data = pickle.dumps(obj)
    blob = struct.pack(">iQ", -1, len(data)) + data
    r, w = gipc.pipe(encoder=None)

    def feed():
        fd = os.dup(w.fileno())
        try:
            view = memoryview(blob)
            while view:
                gevent.socket.wait_write(fd, timeout=WAIT)
                try:
                    view = view[os.write(fd, view[:4096]):]
                except BlockingIOError:
                    pass
        finally:
            os.close(fd)

    g = gevent.spawn(feed)
    try:
        assert r.get(timeout=WAIT) == obj
        g.join(timeout=WAIT)
        assert g.successful()
        assert not r.poll()
    finally:
        _kill(g)
    r.close()
    w.close()


def test_64bit_header_respects_max_message_size():
    r, w = _raw_pipe(max_message_size=4)
    _hand_write(w, struct.pack(">iQ", -1, 5) + b"hello")
    with pytest.raises(GIPCProtocolError) as info:
        r.get(timeout=WAIT)
    assert info.value.errno == errno.EMSGSIZE
    r.close()
    w.close()


# ---------------------------------------------- put() interrupted mid-frame


BIG = 4 * 1024 * 1024  # far more than the pipe holds


def test_put_interrupted_by_timeout_midframe_marks_writer_broken():
    r, w = _raw_pipe()
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.05):
            w.put(b"a" * BIG)
    with pytest.raises(GIPCProtocolError) as info:
        w.put(b"b")
    assert info.value.errno == errno.EPROTO
    msg = str(info.value)
    assert "interrupted" in msg and "Timeout" in msg
    with pytest.raises(GIPCProtocolError, match="interrupted"):
        w.put(b"c")
    w.close()  # a broken handle can still be closed
    assert w.closed
    r.close()


def test_put_interrupted_by_kill_midframe_marks_writer_broken():
    r, w = _raw_pipe()
    g = gevent.spawn(w.put, b"a" * BIG)
    try:
        gevent.sleep(0)
        assert not g.ready()
        g.kill(timeout=WAIT)
        assert g.dead
    finally:
        _kill(g)
    with pytest.raises(GIPCProtocolError, match="GreenletExit"):
        w.put(b"b")
    # The reader sees a frame that never ends: at EOF, a protocol error.
    w.close()

    def drain():
        with pytest.raises(GIPCProtocolError):
            while True:
                r.get(timeout=WAIT)

    drain()
    r.close()


def test_put_timeout_before_any_byte_leaves_writer_usable():
    """A put() that times out before writing anything (pipe completely
    full) leaves the stream in sync."""
    r, w = _raw_pipe(pipe_size=65536)
    size = fcntl.fcntl(w.fileno(), fcntl.F_GETPIPE_SZ)
    first = b"f" * (size - 4)
    w.put(first)  # fills the pipe exactly
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.05):
            w.put(b"second")
    assert r.get(timeout=WAIT) == first
    w.put(b"third")
    assert r.get(timeout=WAIT) == b"third"
    assert not r.poll()
    r.close()
    w.close()


def test_get_killed_midframe_then_resumed_by_other_greenlet():
    """A reader greenlet killed in the middle of a frame does not desync
    the stream: the next get() completes the same message."""
    payload = os.urandom(1024 * 1024)
    r, w = _raw_pipe()
    wg = gevent.spawn(w.put, payload)
    g = gevent.spawn(r.get)
    try:
        gevent.sleep(0)
        gevent.sleep(0)
        g.kill(timeout=WAIT)
        assert r.get(timeout=WAIT) == payload
        wg.join(timeout=WAIT)
        assert wg.successful()
    finally:
        _kill(g, wg)
    r.close()
    w.close()


# ----------------------------------------------------- foreign processes


def _in_forked_child(action):
    """Run action() in a plain os.fork() child; return what it reports
    (the name of the exception raised, or 'no error')."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report and leave at once, whatever happens
        code = 0
        try:
            os.close(rfd)
            try:
                action()
                report = "no error"
            except BaseException as exc:  # noqa: BLE001
                report = "%s: %s" % (type(exc).__name__, exc)
            os.write(wfd, report.encode()[:4000])
        except BaseException:  # noqa: BLE001
            code = 3
        finally:
            os._exit(code)
    os.close(wfd)
    chunks = []
    try:
        with gevent.Timeout(WAIT):
            while True:
                gevent.socket.wait_read(rfd, timeout=WAIT)
                chunk = os.read(rfd, 4096)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(rfd)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return b"".join(chunks).decode()


@pytest.fixture
def loaded_pipe():
    r, w = gipc.pipe()
    w.put("available")  # a get() in the child would succeed if allowed
    yield r, w
    r.close()
    w.close()


def test_get_in_foreign_process_raises_gipcerror(loaded_pipe):
    r, w = loaded_pipe
    report = _in_forked_child(r.get)
    assert report.startswith("GIPCError:"), report
    assert "not registered for current process" in report
    # The parent's handle is untouched.
    assert r.get(timeout=WAIT) == "available"


def test_put_in_foreign_process_raises_gipcerror(loaded_pipe):
    r, w = loaded_pipe
    report = _in_forked_child(lambda: w.put("from child"))
    assert report.startswith("GIPCError:"), report
    assert r.get(timeout=WAIT) == "available"
    assert not r.poll()  # nothing from the child arrived


def test_close_and_poll_in_foreign_process_raise_gipcerror(loaded_pipe):
    r, w = loaded_pipe
    assert _in_forked_child(r.close).startswith("GIPCError:")
    assert _in_forked_child(w.close).startswith("GIPCError:")
    assert _in_forked_child(r.poll).startswith("GIPCError:")
    assert not r.closed and not w.closed
    assert r.get(timeout=WAIT) == "available"


def test_duplex_in_foreign_process_raises_gipcerror():
    with gipc.pipe(duplex=True) as (a, b):
        b.put("x")
        assert _in_forked_child(a.get).startswith("GIPCError:")
        assert _in_forked_child(lambda: a.put(1)).startswith("GIPCError:")
        assert a.get(timeout=WAIT) == "x"


def test_closed_handle_in_foreign_process_reports_closed():
    r, w = gipc.pipe()
    r.close()
    report = _in_forked_child(r.get)
    assert report.startswith("GIPCClosed:"), report
    w.close()


# ------------------------------------------- waiting for a busy handle


def test_numeric_timeout_covers_waiting_for_a_busy_handle():
    with gipc.pipe() as (r, w):
        g = gevent.spawn(r.get)
        try:
            gevent.sleep(0)  # g holds the handle, waiting for input
            assert not g.ready()
            with pytest.raises(gevent.Timeout):
                r.get(timeout=0.05)
            w.put("for g")
            assert g.get(timeout=WAIT) == "for g"
        finally:
            _kill(g)


def test_greenlet_waiting_for_the_handle_sees_it_broken():
    """A second reader queued behind one that hits a corrupt header gets
    the protocol error too, instead of reading the desynchronised stream."""
    with _raw_pipe() as (r, w):
        first = gevent.spawn(r.get)
        second = gevent.spawn(r.get)
        try:
            gevent.sleep(0)
            assert not first.ready() and not second.ready()
            _hand_write(w, struct.pack(">i", -9) + _frame(b"after"))
            with pytest.raises(GIPCProtocolError):
                first.get(timeout=WAIT)
            with pytest.raises(GIPCProtocolError, match="negative length"):
                second.get(timeout=WAIT)
        finally:
            _kill(first, second)

