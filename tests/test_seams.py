"""The seams inside gipc's endpoints and processes: the one way into a
call on a handle or connection (check, fairness turn, lock, check again),
what an endpoint tells ``gipc.wait()`` to wait on, and the choice of the
popen by start method."""
import array

import gevent
import pytest

import gipc
from gipc import GIPCClosed

WAIT = 10


def _yield_on_next_call(endpoint):
    """Make the endpoint's next call take the turn that yields to the event
    loop (it comes every FAIRNESS_QUOTA calls)."""
    endpoint._quota = 1


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
