"""gipc-specific behaviour of Connection, Pipe and wait: ownership when
moving to a child, greenlets sharing a connection, pipe handles in wait(),
broken streams."""
import gc
import os
import pickle

import gevent
import pytest

import gipc
from mp_dropin_support import BOUND, GIPC, Liveness, finish, pass_gate


def _report_state(conn, other, gate):
    pass_gate(gate)
    conn.send({"other_closed": other.closed, "conn_closed": conn.closed})
    conn.close()


def test_moved_connection_closed_in_parent_others_closed_in_child():
    parent_end, child_end = gipc.Pipe()
    other_a, other_b = gipc.Pipe()
    with Liveness(GIPC) as live:
        p = gipc.Process(target=_report_state,
                         kwargs={"conn": child_end, "other": other_a,
                                 "gate": live.gate()})
        # other_a is a keyword argument too: it moves as well.
        p.start()
        assert child_end.closed and other_a.closed
        assert not parent_end.closed and not other_b.closed
        child_end.close()  # the multiprocessing idiom: a no-op here
        live.start()
        assert parent_end.recv() == {"other_closed": False,
                                     "conn_closed": False}
        assert finish(p) == [0]
        live.check()
    parent_end.close()
    other_b.close()


def _report_unmoved(conn, gate, unmoved_holder):
    pass_gate(gate)
    conn.send(unmoved_holder.conn.closed)
    conn.close()


def test_connection_not_in_args_is_closed_in_child():
    parent_end, child_end = gipc.Pipe()
    unmoved_a, unmoved_b = gipc.Pipe()

    class Holder:
        conn = unmoved_a

    with Liveness(GIPC) as live:
        p = gipc.Process(target=_report_unmoved,
                         args=(child_end, live.gate(), Holder))
        p.start()
        live.start()
        assert parent_end.recv() is True
        assert finish(p) == [0]
        live.check()
    assert not unmoved_a.closed  # still ours in the parent
    for conn in (parent_end, unmoved_a, unmoved_b):
        conn.close()


def test_connection_in_a_container_is_refused_before_fork():
    a, b = gipc.Pipe()
    with a, b:
        p = gipc.Process(target=len, args=([b],))
        with pytest.raises(gipc.GIPCError, match="inside a list"):
            p.start()
        assert not b.closed
        assert p._popen is None  # nothing was forked
        p.close()


def test_closed_connection_cannot_move():
    a, b = gipc.Pipe()
    a.close()
    p = gipc.Process(target=len, args=(a,))
    with pytest.raises(OSError, match="handle is closed"):
        p.start()
    assert p._popen is None
    p.close()
    b.close()


def test_connections_are_registered_like_handles():
    from gipc import _ownership
    a, b = gipc.Pipe()
    assert a in _ownership.all_handles and b in _ownership.all_handles
    a.close()
    b.close()
    assert a not in _ownership.all_handles


def test_connections_are_not_closed_by_garbage_collection():
    """README: with no reference left in the program, both connections
    stay open and registered, and a message sent before is still there."""
    from gipc import _ownership
    a, b = gipc.Pipe()
    a.send("sent before")
    fds = a.fileno(), b.fileno()
    del a, b
    gc.collect()
    for fd in fds:
        os.fstat(fd)  # still open
    ends = {c.fileno(): c for c in _ownership.get_all_handles()
            if not c.closed}
    a, b = ends[fds[0]], ends[fds[1]]
    with a, b:
        assert type(b) is gipc.Connection
        assert b.poll(BOUND)
        assert b.recv() == "sent before"
        b.send("back")
        assert a.poll(BOUND)
        assert a.recv() == "back"


def test_connection_cannot_be_pickled():
    a, b = gipc.Pipe()
    with a, b:
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(a)
        with pytest.raises(TypeError, match="cannot be pickled"):
            a.send(b)


def _until(condition):
    """Yield to other greenlets until ``condition()`` holds (bounded)."""
    with gevent.Timeout(BOUND):
        while not condition():
            gevent.sleep(0)


def test_send_while_another_greenlet_waits_in_recv():
    a, b = gipc.Pipe()
    with a, b:
        receiver = gevent.spawn(a.recv)
        _until(a._lock.read.locked)  # the receiver waits inside recv()
        a.send("ping")      # must not wait for the receiver's lock
        assert b.recv() == "ping"
        b.send("pong")
        assert receiver.get(timeout=BOUND) == "pong"


def test_close_while_a_greenlet_receives_raises_locked():
    a, b = gipc.Pipe()
    receiver = gevent.spawn(a.recv)
    try:
        _until(a._lock.read.locked)
        with pytest.raises(gipc.GIPCLocked):
            a.close()
        assert not a.closed
        b.send(5)
        assert receiver.get(timeout=BOUND) == 5
    finally:
        receiver.kill(timeout=BOUND)
        a.close()
        b.close()


def test_send_interrupted_mid_message_breaks_the_connection():
    r, w = gipc.Pipe(duplex=False)
    with r, w:
        with pytest.raises(gevent.Timeout):
            with gevent.Timeout(0.05):
                w.send_bytes(b"x" * (8 * 1024 * 1024))  # nobody reads
        with pytest.raises(gipc.GIPCProtocolError, match="interrupted"):
            w.send(1)
        assert isinstance(gipc.GIPCProtocolError(1, "x"), OSError)


def test_truncated_message_is_a_protocol_error():
    r, w = gipc.Pipe(duplex=False)
    with r:
        os.write(w.fileno(), b"\x00\x00\x00\x10abc")
        w.close()
        with pytest.raises(gipc.GIPCProtocolError, match="middle"):
            r.recv_bytes()
        with pytest.raises(gipc.GIPCProtocolError, match="unusable"):
            r.recv_bytes()


def test_connection_makes_its_descriptor_non_blocking():
    rfd, wfd = os.pipe()
    assert os.get_blocking(rfd)
    with gipc.Connection(rfd, writable=False) as r:
        assert not os.get_blocking(rfd)
        assert r.fileno() == rfd and not r.writable
        os.write(wfd, b"\x00\x00\x00\x02hi")
        assert r.recv_bytes() == b"hi"
        assert r.poll() is False
    os.close(wfd)
    with pytest.raises(ValueError):
        gipc.Connection(-1)
    with pytest.raises(ValueError):
        gipc.Connection(0, readable=False, writable=False)


# -- wait() over gipc pipe handles --------------------------------------------

def test_wait_pipe_handle_with_buffered_message_is_ready_at_once():
    with gipc.pipe() as (r, w):
        w.put("one")
        w.put("two")
        assert gipc.wait([r], timeout=0) == [r]
        assert r.get(timeout=BOUND) == "one"
        # "two" came in with the same read(): the descriptor is empty now,
        # but the handle holds a whole message.
        assert gipc.wait([r], timeout=0) == [r]
        assert r.get(timeout=BOUND) == "two"
        assert gipc.wait([r], timeout=0.01) == []


def test_wait_duplex_handles_and_connections_together():
    with gipc.pipe(duplex=True) as (h1, h2):
        c1, c2 = gipc.Pipe()
        with c1, c2:
            objects = [h2, c2, h1]
            assert gipc.wait(objects, timeout=0) == []
            c1.send(1)
            h2.put(2)
            assert gipc.wait(objects, timeout=BOUND) == [c2, h1]
            assert h1.get(timeout=BOUND) == 2 and c2.recv() == 1


def _exit_after_gate(gate):
    pass_gate(gate)


def test_wait_on_sentinels_keeps_the_loop_running():
    with Liveness(GIPC) as live:
        procs = [gipc.Process(target=_exit_after_gate, args=(live.gate(),))
                 for _ in range(3)]
        for p in procs:
            p.start()
        live.start()
        sentinels = {p.sentinel for p in procs}
        while sentinels:
            ready = gipc.wait(list(sentinels), timeout=BOUND)
            assert ready
            sentinels -= set(ready)
        assert finish(*procs) == [0, 0, 0]
        live.check()


def test_wait_argument_errors():
    a, b = gipc.Pipe()
    with a, b:
        with pytest.raises(TypeError):
            gipc.wait([a], timeout=gevent.Timeout(1))
        with pytest.raises(AttributeError):
            gipc.wait([object()], timeout=0)
    with pytest.raises(OSError, match="handle is closed"):
        gipc.wait([a], timeout=0)


class _Holding(gipc.Process):
    def __init__(self, conn):
        super().__init__(target=len, args=((),))
        self.conn = conn


def test_shared_connection_with_unread_data_is_refused_before_fork():
    a, b = gipc.Pipe()
    with a, b:
        b.send("one")
        b.send("two")
        # One read() took both frames: "two" now sits in a's buffer.
        assert a.recv() == "one"
        assert a._core.buffered
        p = _Holding(a)
        with pytest.raises(gipc.GIPCError, match="not yet read"):
            p.start()
        assert p._popen is None  # nothing was forked
        assert a.recv() == "two"
        p.start()  # nothing buffered any more
        assert finish(p) == [0]
        assert not a.closed  # shared, not moved


def test_shared_connection_in_use_is_refused_before_fork():
    a, b = gipc.Pipe()
    with a, b:
        reader = gevent.spawn(a.recv)
        gevent.sleep(0)  # a cooperative yield: the reader enters recv()
        assert a._lock.locked()
        p = _Holding(a)
        with pytest.raises(gipc.GIPCLocked):
            p.start()
        assert p._popen is None
        b.send("done")
        assert reader.get(timeout=BOUND) == "done"
        p.close()
