"""The seams inside gipc's endpoints and processes: the one way into a
call on a handle or connection (check, fairness turn, lock, check again),
what an endpoint tells ``gipc.wait()`` to wait on, and the choice of the
popen by start method."""
import array
import traceback

import gevent
import pytest

import gipc
from gipc import GIPCClosed, _cooperate, _core

WAIT = 10


def _yield_on_next_call(endpoint):
    """Make the endpoint's next call take the turn that yields to the event
    loop (it comes once a slice is over and the loop did not run)."""
    endpoint._turn = _core.Turn(0)
    endpoint._loop_epoch = _cooperate.loop_epoch(gevent.get_hub().loop)


def _call_while_closed_during_the_yield(endpoint, call):
    """Run ``call`` with a greenlet closing ``endpoint`` during the yield
    of the call's fairness turn (after its first usability check, before
    its lock); return what the call raised."""
    _yield_on_next_call(endpoint)
    closer = gevent.spawn(endpoint.close)
    try:
        with gevent.Timeout(WAIT):
            with pytest.raises(Exception) as raised:
                call()
        # The close ran, inside the call: there is no other switch.
        assert closer.ready()
        closer.get()
    finally:
        closer.kill()
        if not endpoint.closed:  # the check above failed
            endpoint.close()
    assert endpoint.closed
    # The call's frames hold what it was sending (send()'s pickle, a view
    # of a BytesIO): let them go now rather than in a collection of the
    # cycle through this frame, which frees the BytesIO first.
    traceback.clear_frames(raised.tb)
    return raised.value


# ------------------------------------------------------------ handles


_READER_CALLS = {
    "get": lambda r: r.get(timeout=WAIT),
    "get without timeout": lambda r: r.get(),
    "get_into": lambda r: r.get_into(bytearray(16), timeout=WAIT),
    "poll": lambda r: r.poll(),
}


@pytest.mark.parametrize("call", list(_READER_CALLS))
def test_reader_closed_during_the_turn_raises_gipcclosed(call):
    r, w = gipc.pipe(encoder=None, decoder=None)
    with w:
        w.put(b"waiting")  # a call that got past the close would return
        exc = _call_while_closed_during_the_yield(
            r, lambda: _READER_CALLS[call](r))
    assert type(exc) is GIPCClosed, repr(exc)


def test_writer_closed_during_the_turn_raises_gipcclosed():
    r, w = gipc.pipe()
    with r:
        exc = _call_while_closed_during_the_yield(w, lambda: w.put("x"))
        assert type(exc) is GIPCClosed, repr(exc)
        with pytest.raises(EOFError):  # nothing was written
            r.get(timeout=WAIT)


def test_duplex_handle_closed_during_the_turn_raises_gipcclosed():
    a, b = gipc.pipe(duplex=True)
    with b:
        b.put("waiting")
        exc = _call_while_closed_during_the_yield(a._reader, a.get)
        assert type(exc) is GIPCClosed, repr(exc)
        exc = _call_while_closed_during_the_yield(
            a._writer, lambda: a.put("x"))
        assert type(exc) is GIPCClosed, repr(exc)


def test_reader_lets_other_greenlets_run_while_polling():
    # A loop that polls a handle is a loop of calls, and takes turns too.
    r, w = gipc.pipe()
    with r, w:
        ran = gevent.spawn(lambda: True)
        try:
            _yield_on_next_call(r)
            assert r.poll() is False
            assert ran.ready() and ran.get()
        finally:
            ran.kill()


# ---------------------------------------------------------- connections


_CONNECTION_CALLS = {
    "recv": lambda c: c.recv(),
    "recv_bytes": lambda c: c.recv_bytes(),
    "recv_bytes limited": lambda c: c.recv_bytes(100),
    "recv_bytes_into": lambda c: c.recv_bytes_into(bytearray(16)),
    "recv_bytes_into array": lambda c: c.recv_bytes_into(array.array("i", [0] * 8)),
    "poll": lambda c: c.poll(),
    "send": lambda c: c.send("x"),
    "send_bytes": lambda c: c.send_bytes(b"x"),
}


@pytest.mark.parametrize("call", list(_CONNECTION_CALLS))
def test_connection_closed_during_the_turn_raises_handle_is_closed(call):
    a, b = gipc.Pipe()
    with b:
        b.send_bytes(b"waiting")
        exc = _call_while_closed_during_the_yield(
            a, lambda: _CONNECTION_CALLS[call](a))
    # What multiprocessing raises for a closed connection.
    assert type(exc) is OSError and str(exc) == "handle is closed", repr(exc)


# ------------------------------------------- one endpoint implementation


def test_close_while_a_greenlet_is_inside_names_what_it_does():
    a, b = gipc.Pipe()
    with a, b:
        receiving = gevent.spawn(a.recv)
        try:
            gevent.sleep(0)  # it waits inside recv() now
            with pytest.raises(gipc.GIPCLocked, match="receiving on it"):
                a.close()
            assert not a.closed
            b.send("done")
            assert receiving.get(timeout=WAIT) == "done"
        finally:
            receiving.kill()
        r, w = gipc.pipe()
        with r, w:
            getting = gevent.spawn(r.get)
            try:
                gevent.sleep(0)
                with pytest.raises(gipc.GIPCLocked,
                                   match="locked for I/O operation"):
                    r.close()
                w.put("done")
                assert getting.get(timeout=WAIT) == "done"
            finally:
                getting.kill()


def test_endpoints_refuse_pickling_and_name_the_way_to_a_child():
    import pickle
    r, w = gipc.pipe()
    a, b = gipc.pipe(duplex=True)
    c1, c2 = gipc.Pipe()
    with r, w, a, b, c1, c2:
        for obj, name, passed_by in [
                (r, "_GIPCReader", "gipc.start_process()"),
                (w, "_GIPCWriter", "gipc.start_process()"),
                (a, "_GIPCDuplexHandle", "gipc.start_process()"),
                (c1, "gipc.Connection", "gipc.Process()")]:
            with pytest.raises(TypeError) as raised:
                pickle.dumps(obj)
            assert str(raised.value) == (
                "%s cannot be pickled: pass it to %s as an argument to use "
                "it in a child process" % (name, passed_by))


def _poll_and_wait(obj):
    return obj.poll(), gipc.wait([obj], timeout=0) == [obj]


def test_poll_and_wait_follow_one_rule():
    """Ready: a whole message is buffered, or the descriptor has data or
    EOF; the same answer from poll() and wait() for every endpoint."""
    r, w = gipc.pipe()
    a, b = gipc.pipe(duplex=True)
    c1, c2 = gipc.Pipe()
    with r, a, b, c1:
        ends = [(r, w.put, w.close), (a, b.put, b._writer.close),
                (c1, c2.send, c2.close)]
        for reader, send, close_sender in ends:
            assert _poll_and_wait(reader) == (False, False)
            send("one")
            send("two")
            assert _poll_and_wait(reader) == (True, True)
            reader.recv() if reader is c1 else reader.get(timeout=WAIT)
            # "two" is in the reader's buffer now, the pipe is empty.
            assert reader._wait_target()[1].frame_ready()
            assert _poll_and_wait(reader) == (True, True)
            reader.recv() if reader is c1 else reader.get(timeout=WAIT)
            assert _poll_and_wait(reader) == (False, False)
            close_sender()
            assert _poll_and_wait(reader) == (True, True)  # EOF


def test_recv_bytes_maxlength_holds_across_waits_and_is_restored():
    a, b = gipc.Pipe()
    with a, b:
        late = gevent.spawn_later(0.01, a.send_bytes, b"12345")
        try:
            assert b.recv_bytes(5) == b"12345"  # waited for it
            late.get(timeout=WAIT)
        finally:
            late.kill()
        big = b"x" * (1 << 20)
        sending = gevent.spawn(a.send_bytes, big)
        try:
            assert b.recv_bytes() == big  # the limit was lowered for one call
            sending.get(timeout=WAIT)
        finally:
            sending.kill()
        late = gevent.spawn_later(0.01, a.send_bytes, b"123456")
        try:
            with pytest.raises(OSError, match="bad message length"):
                b.recv_bytes(5)
            late.get(timeout=WAIT)
        finally:
            late.kill()
        assert not b.readable and b.writable


def test_wait_knows_no_endpoint_class():
    # gipc.wait asks each object what to wait on (_wait_target): it imports
    # neither handles nor connections, so connection.py can import it.
    import ast
    import sys
    with open(sys.modules["gipc.wait"].__file__) as f:
        tree = ast.parse(f.read())
    imported = {node.module for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom)}
    assert not imported & {"connection", "handles"}, imported


# ------------------------------------------------ popen by start method


def test_fork_is_the_default_start_method():
    from gipc import _popen, _popen_base, _popen_fork
    assert _popen.start_methods() == ["fork", "spawn", "forkserver"]
    assert _popen.popen_class() is _popen.popen_class("fork") \
        is _popen_fork.Popen
    assert issubclass(_popen_fork.Popen, _popen_base.BasePopen)
    with pytest.raises(ValueError, match="no start method 'vfork'"):
        _popen.popen_class("vfork")


def _send_pid(w):
    import os
    w.put(os.getpid())


def test_start_goes_through_the_popen_of_the_start_method(monkeypatch):
    """A popen registered for a start method starts the processes of that
    method: Process knows nothing of the fork popen."""
    from gipc import _popen, _popen_fork
    made = []

    class RecordingPopen(_popen_fork.Popen):
        def __init__(self, process_obj, kept=()):
            made.append((process_obj, kept))
            super().__init__(process_obj, kept)

    monkeypatch.setitem(_popen._POPENS, "fork", RecordingPopen)
    r, w = gipc.pipe()
    with r:
        p = gipc.Process(target=_send_pid, args=(w,))
        p.start()
        try:
            assert type(p._popen) is RecordingPopen
            assert made == [(p, (w,))]
            assert r.get(timeout=WAIT) == p.pid
        finally:
            p.join(WAIT)
        assert p.exitcode == 0
        p.close()


def test_unknown_start_method_raises_before_any_fork():
    class VforkProcess(gipc.Process):
        _start_method = "vfork"

    r, w = gipc.pipe()
    with r, w:
        p = VforkProcess(target=_send_pid, args=(w,))
        with pytest.raises(ValueError, match="no start method 'vfork'"):
            p.start()
        assert p._popen is None
        assert not w.closed  # nothing moved to a child
        w.put("still usable")
        assert r.get(timeout=WAIT) == "still usable"


# ------------------------------------------------------- the child's path


def test_child_lookups_follow_the_slots_of_the_childs_state():
    # Derived from the classes: a slot added to the plan is warmed too.
    from gipc import _bootstrap, _child, _lookups
    flat = _lookups.child_lookups(gipc.Process, type(None))
    pairs = set(zip(flat[::2], flat[1::2]))
    for cls in (_child.ChildPlan, _bootstrap.Prepared):
        for name in cls.__slots__:
            assert (cls, name) in pairs, (cls, name)


def test_child_and_parent_flush_with_multiprocessings_helper():
    from multiprocessing import util as mp_util
    from gipc import _child, _popen_fork
    assert not hasattr(_child, "flush_std_streams")
    assert _child._flush_std_streams is mp_util._flush_std_streams
    assert _popen_fork._flush_std_streams is mp_util._flush_std_streams


def test_recv_bytes_maxlength_keeps_the_stream_errors_of_the_core():
    import os
    a, b = gipc.Pipe()
    with a, b:
        os.write(a.fileno(), b"\xff\xff\xff\xfe")  # a negative length
        with pytest.raises(gipc.GIPCProtocolError):
            b.recv_bytes(5)
        with pytest.raises(gipc.GIPCProtocolError, match="unusable"):
            b.recv_bytes(5)  # broken, as for recv_bytes() without a limit
