"""The C fast paths (issue 12): put()/get() of pipe handles and send()/
recv()/send_bytes()/recv_bytes() of connections run as one C call
(``_core.FastSend`` / ``_core.FastRecv``) when they need not wait, and as
the Python methods of their classes otherwise.

Each rule is checked against the Python way: the method of the class,
called directly (``type(h).put(h, o)``), never takes the fast path, so the
two must give the same results and the same errors.
"""
import array
import functools
import gc
import os
import pickle
import re
import struct
import tracemalloc
from multiprocessing.reduction import ForkingPickler

import gevent
import pytest

import gipc
from gipc import GIPCClosed, GIPCError, GIPCLocked, GIPCProtocolError
from gipc import _core, _ownership
from gipc.connection import Connection
from gipc.handles import _GIPCReader, _GIPCWriter
from support import unfair_pipe

WAIT = 10
#: A message no pipe takes whole (a pipe holds 64 KiB to 1 MiB).
LARGE = 8 * 1024 * 1024


def _outcome(call):
    """What ``call()`` returned, or the type and message of what it
    raised."""
    try:
        return ("returned", call())
    except Exception as exc:  # noqa: BLE001 (compared, not swallowed)
        return ("raised", type(exc), str(exc))


def _slow_put(w, o):
    return _GIPCWriter.put(w, o)


def _slow_get(r):
    return _GIPCReader.get(r)


@pytest.fixture
def raw():
    r, w = gipc.pipe(encoder=None, decoder=None)
    yield r, w
    for h in (r, w):
        if not h.closed:
            h.close()


@pytest.fixture
def pickled():
    r, w = gipc.pipe()
    yield r, w
    for h in (r, w):
        if not h.closed:
            h.close()


@pytest.fixture
def conns():
    a, b = gipc.Pipe()
    yield a, b
    a.close()
    b.close()


# ------------------------------------------------------------ binding


def test_the_calls_are_the_c_fast_calls(raw, conns):
    r, w = raw
    assert isinstance(w.put, _core.FastSend)
    assert isinstance(r.get, _core.FastRecv)
    a, _ = conns
    for name in ("send", "send_bytes"):
        assert isinstance(getattr(a, name), _core.FastSend), name
    for name in ("recv", "recv_bytes"):
        assert isinstance(getattr(a, name), _core.FastRecv), name


def test_one_way_connections_bind_only_their_direction():
    r, w = gipc.Pipe(duplex=False)
    with r, w:
        assert "send" not in vars(r) and "recv" in vars(r)
        assert "recv" not in vars(w) and "send" in vars(w)
        with pytest.raises(OSError, match="connection is write-only"):
            w.recv()
        with pytest.raises(OSError, match="connection is read-only"):
            r.send(1)


def test_close_drops_the_fast_calls(raw):
    r, w = raw
    r.close()
    w.close()
    assert "get" not in vars(r) and "put" not in vars(w)
    assert r.get.__func__ is _GIPCReader.get


def test_a_duplex_handle_uses_the_fast_calls_of_its_halves():
    a, b = gipc.pipe(duplex=True)
    with a, b:
        assert a.put is a._writer.put and a.get is a._reader.get
        a.put({"k": 1})
        assert b.get() == {"k": 1}


def test_take_over_gives_the_fast_calls_the_new_lock(raw, conns):
    r, w = raw
    put, get = w.put, r.get
    for h in (r, w):
        h._take_over()
    assert w.put is put and put.lock is w._lock
    assert r.get is get and get.lock is r._lock
    a, _ = conns
    send, recv = a.send, a.recv
    a._take_over()
    assert a.send is send and send.lock is a._lock.write
    assert a.recv is recv and recv.lock is a._lock.read
    a.send("after")
    assert _.recv() == "after"


def test_fast_call_types_check_their_arguments(raw):
    r, w = raw
    with pytest.raises(TypeError, match="writer must be"):
        _core.FastSend(r._core, w._gate, w._lock, print, print)
    with pytest.raises(TypeError, match="gate must be"):
        _core.FastSend(w._wcore, object(), w._lock, print, print)
    with pytest.raises(TypeError, match="reader must be"):
        _core.FastRecv(w._wcore, r._gate, r._lock, print)
    with pytest.raises(TypeError, match="turn must be"):
        w._turn = object()


# --------------------------------------------------- same results


_OBJECTS = [None, 0, -1, 2 ** 70, 1.5, "", "text", b"", b"bytes",
            (1, 2.5, "three"), [1, [2, [3]]], {"a": (1,), 2: None},
            {1, 2}, bytearray(b"ba"), functools.partial(int, "7")]


@pytest.mark.parametrize("obj", _OBJECTS, ids=repr)
def test_pickled_put_get_same_as_the_python_way(pickled, obj):
    r, w = pickled
    w.put(obj)
    _slow_put(w, obj)
    fast, slow = r.get(), _slow_get(r)
    if isinstance(obj, functools.partial):
        fast, slow, obj = (p.args for p in (fast, slow, obj))
    assert fast == slow == obj and type(fast) is type(obj)


_BUFFERS = {
    "bytes": b"abc",
    "empty": b"",
    "bytearray": bytearray(b"abcd"),
    "memoryview": memoryview(b"xyz"),
    "memoryview slice": memoryview(b"0123456789")[2:5],
    "array": array.array("i", [1, 2, 3]),
    "2-d memoryview": memoryview(bytearray(12)).cast("B", (3, 4)),
}


@pytest.mark.parametrize("name", list(_BUFFERS))
def test_raw_buffers_same_as_the_python_way(raw, name):
    r, w = raw
    buf = _BUFFERS[name]
    w.put(buf)
    _slow_put(w, buf)
    expected = bytes(memoryview(buf).cast("B")) if memoryview(buf).ndim \
        else bytes(buf)
    assert r.get() == _slow_get(r) == expected


def test_numpy_arrays_same_as_the_python_way(raw):
    np = pytest.importorskip("numpy")
    r, w = raw
    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    w.put(a)
    _slow_put(w, a)
    assert r.get() == _slow_get(r) == a.tobytes()
    strided = a[:, ::2]
    assert _outcome(lambda: w.put(strided)) == \
        _outcome(lambda: _slow_put(w, strided))
    assert _outcome(lambda: w.put(strided))[1] is TypeError


@pytest.mark.parametrize("bad", [None, "text", 5, memoryview(b"abcdef")[::2]],
                         ids=repr)
def test_raw_non_buffers_same_error_stream_intact(raw, bad):
    r, w = raw
    fast, slow = _outcome(lambda: w.put(bad)), _outcome(
        lambda: _slow_put(w, bad))
    assert fast == slow and fast[1] is TypeError, (fast, slow)
    w.put(b"after")
    assert r.get() == b"after"


def test_custom_codecs_run_and_their_errors_propagate():
    calls = []

    def encode(o):
        calls.append(o)
        if o == "bad":
            raise ValueError("cannot encode")
        return ("<%s>" % o).encode()

    r, w = gipc.pipe(encoder=encode, decoder=lambda b: b.decode().upper())
    with r, w:
        w.put("a")
        _slow_put(w, "b")
        assert (r.get(), _slow_get(r)) == ("<A>", "<B>")
        assert _outcome(lambda: w.put("bad")) == \
            _outcome(lambda: _slow_put(w, "bad")) == \
            ("raised", ValueError, "cannot encode")
        w.put("c")
        assert r.get() == "<C>"
        assert calls == ["a", "b", "bad", "bad", "c"]


def test_an_encoder_returning_no_buffer_same_error(pickled):
    r, w = gipc.pipe(encoder=lambda o: o, decoder=None)
    with r, w:
        assert _outcome(lambda: w.put(1.5)) == \
            _outcome(lambda: _slow_put(w, 1.5))
        w.put(b"ok")
        assert r.get() == b"ok"


@pytest.mark.parametrize("obj", _OBJECTS + [[{"deep": [[[[[[[[1]]]]]]]]}],
                                            [0] * 1000], ids=repr)
def test_connection_send_pickles_as_forkingpickler(conns, obj):
    a, b = conns
    a.send(obj)
    Connection.send(a, obj)
    data = b.recv_bytes(), Connection.recv_bytes(b)
    assert data[0] == data[1] == bytes(ForkingPickler.dumps(obj))
    a.send(obj)
    got = b.recv()
    if isinstance(obj, functools.partial):
        got, obj = got.args, obj.args
    assert got == obj


def test_connection_send_uses_registered_reducers(conns):
    class Special:
        pass

    ForkingPickler.register(Special, lambda o: (str, ("reduced",)))
    try:
        a, b = conns
        a.send(Special())
        a.send([Special()])
        assert b.recv() == "reduced" and b.recv() == ["reduced"]
    finally:
        del ForkingPickler._extra_reducers[Special]


@pytest.mark.parametrize("buf", [b"abc", bytearray(b"x"),
                                 array.array("i", [1, 2])], ids=repr)
def test_connection_bytes_same_as_the_python_way(conns, buf):
    a, b = conns
    a.send_bytes(buf)
    Connection.send_bytes(a, buf)
    assert b.recv_bytes() == Connection.recv_bytes(b) == bytes(
        memoryview(buf).cast("B"))
    a.send_bytes(buf, 1)
    a.send_bytes(buf, 0, 1)
    assert b.recv_bytes(100) == bytes(memoryview(buf).cast("B"))[1:]
    assert b.recv_bytes() == bytes(memoryview(buf).cast("B"))[:1]


@pytest.mark.parametrize("bad", [None, "text", memoryview(b"abcdef")[::2],
                                 memoryview(array.array("i", [1, 2, 3, 4]))[::2]],
                         ids=repr)
def test_connection_send_bytes_same_error(conns, bad):
    a, b = conns
    assert _outcome(lambda: a.send_bytes(bad)) == \
        _outcome(lambda: Connection.send_bytes(a, bad))
    a.send_bytes(b"after")
    assert b.recv_bytes() == b"after"


def test_recv_after_a_bad_message_length_is_refused(conns):
    a, b = conns
    a.send_bytes(b"x" * 100)
    with pytest.raises(OSError, match="bad message length"):
        b.recv_bytes(10)
    for call in (b.recv, b.recv_bytes):
        with pytest.raises(OSError, match="connection is write-only"):
            call()


# ------------------------------------------------- same errors


def _pair_of(kind):
    if kind == "pipe":
        r, w = gipc.pipe()
        return r, w, (lambda: r.get(), lambda: _slow_get(r)), \
            (lambda: w.put(1), lambda: _slow_put(w, 1))
    a, b = gipc.Pipe()
    return b, a, (lambda: b.recv(), lambda: Connection.recv(b)), \
        (lambda: a.send(1), lambda: Connection.send(a, 1))


@pytest.mark.parametrize("kind", ["pipe", "connection"])
def test_closed_same_error(kind):
    r, w, gets, puts = _pair_of(kind)
    r.close()
    w.close()
    for fast, slow in (gets, puts):
        assert _outcome(fast) == _outcome(slow)
        assert _outcome(fast)[1] in (GIPCClosed, OSError)


@pytest.mark.parametrize("kind", ["pipe", "connection"])
def test_held_fast_call_of_a_closed_endpoint_same_error(kind):
    # A fast call kept beyond close() (a bound method taken earlier).
    r, w, _, _ = _pair_of(kind)
    get, put = (r.get, w.put) if kind == "pipe" else (r.recv, w.send)
    r.close()
    w.close()
    assert _outcome(get) == _outcome(r.get if kind == "pipe" else r.recv)
    assert _outcome(lambda: put(1))[1] in (GIPCClosed, OSError)


@pytest.mark.parametrize("kind", ["pipe", "connection"])
def test_foreign_same_error(kind, monkeypatch):
    r, w, gets, puts = _pair_of(kind)
    try:
        monkeypatch.setattr(_ownership, "pid", _ownership.pid + 1)
        for fast, slow in (gets, puts):
            assert _outcome(fast) == _outcome(slow)
            assert _outcome(fast)[1] is GIPCError
    finally:
        monkeypatch.undo()
        r.close()
        w.close()


def _foreign_use(w):
    # In the child: a handle that was not passed here.
    try:
        _LEAKED.put("from the child")
    except GIPCError as exc:
        w.put((type(exc).__name__, str(exc)))
    else:
        w.put(None)


_LEAKED = None


def test_a_handle_not_passed_to_a_child_is_refused_there():
    global _LEAKED
    r, w = gipc.pipe()
    lr, lw = gipc.pipe()
    _LEAKED = lw
    try:
        p = gipc.start_process(_foreign_use, args=(w,))
        result = r.get(timeout=WAIT)
        p.join(WAIT)
        assert p.exitcode == 0
    finally:
        _LEAKED = None
        for h in (r, lr, lw):
            h.close()
    assert result is not None and result[0] in ("GIPCClosed", "GIPCError")


def test_broken_stream_same_errors():
    results = []
    for get in ("fast", "slow"):
        r, w = gipc.pipe(encoder=None, decoder=None)
        with r, w:
            os.write(w.fileno(), struct.pack(">i", -5))
            call = r.get if get == "fast" else functools.partial(_slow_get, r)
            results.append((_outcome(call), _outcome(call)))
    fast, slow = results
    assert fast[0][1] is GIPCProtocolError and fast[1][1] is \
        GIPCProtocolError
    assert fast[0][2] == slow[0][2]
    assert [o[:2] for o in fast] == [o[:2] for o in slow]


def test_too_large_message_same_errors():
    for get in ("fast", "slow"):
        r, w = gipc.pipe(encoder=None, decoder=None)
        with r, w:
            r.max_message_size = 10
            w.put(b"x" * 11)
            call = r.get if get == "fast" else functools.partial(_slow_get, r)
            with pytest.raises(GIPCProtocolError, match="exceeds"):
                call()
            with pytest.raises(GIPCProtocolError, match="unusable"):
                call()


def test_eof_same_error(raw):
    r, w = raw
    w.close()
    assert _outcome(r.get) == _outcome(lambda: _slow_get(r))
    assert _outcome(r.get)[1] is EOFError


def test_broken_pipe_same_error(raw):
    r, w = raw
    r.close()
    assert _outcome(lambda: w.put(b"x")) == _outcome(
        lambda: _slow_put(w, b"x"))
    assert _outcome(lambda: w.put(b"x"))[1] is BrokenPipeError
    # Nothing of the frame left: the stream is not marked broken.
    assert w._broken is None


# ---------------------------------------------- turns and locks


def test_a_get_waiting_holds_the_lock_a_fast_get_takes_its_turn(raw):
    r, w = raw
    first = gevent.spawn(r.get)
    gevent.sleep(0)  # `first` waits inside get(), holding the lock
    assert r._lock.locked()
    with pytest.raises(GIPCLocked):
        r.close()
    w.put(b"1")
    w.put(b"2")
    # Not the frame `first` waits for: this call takes its turn after it.
    with gevent.Timeout(WAIT):
        assert r.get() == b"2"
        assert first.get() == b"1"


def test_a_put_waiting_holds_the_lock_a_fast_put_takes_its_turn(raw):
    r, w = raw
    big = b"b" * LARGE
    first = gevent.spawn(w.put, big)
    gevent.sleep(0)  # `first` filled the pipe and waits, holding the lock
    assert w._lock.locked()
    with pytest.raises(GIPCLocked):
        w.close()
    second = gevent.spawn(w.put, b"small")
    with gevent.Timeout(WAIT):
        assert r.get() == big
        assert r.get() == b"small"
    first.get()
    second.get()


@pytest.mark.parametrize("how", ["timeout", "kill"])
def test_cancelled_mid_frame_marks_broken_as_the_python_way(how):
    messages = []
    for put in ("fast", "slow"):
        r, w = gipc.pipe(encoder=None, decoder=None)
        with r, w:
            call = w.put if put == "fast" else functools.partial(
                _slow_put, w)
            if how == "timeout":
                with pytest.raises(gevent.Timeout):
                    with gevent.Timeout(0.05):
                        call(b"c" * LARGE)
            else:
                g = gevent.spawn(call, b"c" * LARGE)
                gevent.sleep(0.05)
                g.kill(block=True, timeout=WAIT)
                assert g.dead
            assert not w._lock.locked()
            with pytest.raises(GIPCProtocolError, match="unusable"):
                w.put(b"x")
            # How far the frame got depends on the pipe's size.
            messages.append(re.sub(r"writing \d+ of", "writing N of",
                                   w._broken[1]))
    assert messages[0] == messages[1]
    assert re.match(r"put\(\) was interrupted by \w+ after writing N of "
                    r"%d bytes" % (LARGE + 4), messages[0]), messages[0]


def test_the_turn_yields_in_fast_calls(conns):
    a, b = conns
    ran = gevent.spawn(lambda: True)
    try:
        a._turn = _core.Turn(0)
        a._loop_epoch = gipc._cooperate.loop_epoch(gevent.get_hub().loop)
        a.send("x")
        assert ran.ready()
    finally:
        ran.kill()
    assert b.recv() == "x"


# --------------------------------------------------- refcounts


def _growth(loop, rounds, batches=3):
    """``(bytes, objects)`` that ``loop(rounds)`` leaves behind, after a
    first run: the least over ``batches`` runs.  A leak grows in every
    run; the interpreter's own one-off growth (a cache or a free list
    that grows once, some KiB) shows in one run only."""
    loop(rounds)
    gc.collect()
    least = None
    for _ in range(batches):
        start = tracemalloc.get_traced_memory()[0], len(gc.get_objects())
        loop(rounds)
        gc.collect()
        end = tracemalloc.get_traced_memory()[0], len(gc.get_objects())
        grown = end[0] - start[0], end[1] - start[1]
        least = grown if least is None else (
            min(least[0], grown[0]), min(least[1], grown[1]))
    return least


def _fast_loops():
    def raw_loop(n):
        with gipc.pipe(encoder=None, decoder=None) as (r, w):
            for _ in range(n):
                w.put(b"r" * 100)
                r.get()

    def pickled_loop(n):
        with gipc.pipe() as (r, w):
            for _ in range(n):
                w.put((1, "two", 3.0))
                r.get()

    def conn_loop(n):
        a, b = gipc.Pipe()
        with a, b:
            for _ in range(n):
                a.send([1, {"k": "v"}])
                b.recv()
                a.send(functools.partial(int, "1"))
                b.recv()
                a.send_bytes(b"x" * 50)
                b.recv_bytes()

    def errors_loop(n):
        r, w = gipc.pipe(encoder=None, decoder=None)
        get, put = r.get, w.put
        with r, w:
            for _ in range(n):
                with pytest.raises(TypeError):
                    w.put("not a buffer")
        for _ in range(n):
            with pytest.raises(GIPCClosed):
                get()
            with pytest.raises(GIPCClosed):
                put(b"x")

    def large_loop(n):
        with gipc.pipe(encoder=None, decoder=None) as (r, w):
            for _ in range(n // 20):
                g = gevent.spawn(r.get)
                w.put(b"L" * (1024 * 1024))
                g.get(timeout=WAIT)

    return {"raw": raw_loop, "pickled": pickled_loop, "connection": conn_loop,
            "errors": errors_loop, "large": large_loop}


@pytest.mark.parametrize("name", list(_fast_loops()))
def test_fast_paths_leak_nothing(name):
    rounds = 1000  # after a first run, three: as many as two of 2000
    tracemalloc.start()
    try:
        traced, objects = _growth(_fast_loops()[name], rounds)
    finally:
        tracemalloc.stop()
    assert traced < 8 * rounds, "%s: %d bytes more" % (name, traced)
    assert objects < rounds // 10, "%s: %d more objects" % (name, objects)


def test_a_dropped_endpoint_is_collected():
    # The fast calls refer back to their endpoint (a cycle): the garbage
    # collector frees an endpoint dropped unclosed, and its fast calls.
    r, w = gipc.pipe()
    fds = r.fileno(), w.fileno()
    _ownership.unregister(r)
    _ownership.unregister(w)
    import weakref
    refs = weakref.ref(r), weakref.ref(w)
    del r, w
    gc.collect()
    assert all(ref() is None for ref in refs)
    for fd in fds:
        os.close(fd)


def test_pickle_of_plain_objects_is_forkingpicklers():
    for obj in _OBJECTS[:13]:
        assert pickle.dumps(obj, pickle.DEFAULT_PROTOCOL) == bytes(
            ForkingPickler.dumps(obj)), obj


def test_fast_calls_introspect_as_their_methods(raw, conns):
    import inspect

    r, w = raw
    assert inspect.signature(w.put) == inspect.signature(
        _GIPCWriter.put.__get__(w))
    assert inspect.signature(r.get) == inspect.signature(
        _GIPCReader.get.__get__(r))
    assert w.put.__doc__ == _GIPCWriter.put.__doc__
    a, _ = conns
    assert a.recv_bytes.__doc__ == Connection.recv_bytes.__doc__
    assert "maxlength" in inspect.signature(a.recv_bytes).parameters


def _nearly_full_pipe():
    """A raw pipe of 64 KiB holding 40,000 bytes: a put() of 40,000 more
    writes a part of its frame, then must wait (at once: no yield for
    fairness first, see support.unfair_pipe)."""
    r, w = unfair_pipe(encoder=None, decoder=None, pipe_size=65536)
    w.put(b"a" * 40000)
    return r, w


class _Interrupt(Exception):
    pass


def test_a_fast_put_that_must_wait_hands_its_frame_over(conns):
    r, w = _nearly_full_pipe()
    with r, w:
        g = gevent.spawn(w.put, b"b" * 40000)
        gevent.sleep(0)
        # A part of the frame is in the pipe; the rest waits, under the lock.
        assert not g.ready() and w._lock.locked()
        with gevent.Timeout(WAIT):
            assert r.get() == b"a" * 40000
            assert r.get() == b"b" * 40000
        g.get(timeout=WAIT)
        assert not w._lock.locked() and w._broken is None


def test_a_fast_put_cancelled_after_a_part_marks_broken():
    r, w = _nearly_full_pipe()
    with r, w:
        with pytest.raises(gevent.Timeout):
            with gevent.Timeout(0.05):
                w.put(b"b" * 40000)
        assert not w._lock.locked()
        assert re.match(r"put\(\) was interrupted by Timeout after writing "
                        r"\d+ of 40004 bytes", w._broken[1]), w._broken
        with pytest.raises(GIPCProtocolError, match="unusable"):
            w.put(b"x")


def test_an_exception_before_the_hand_over_is_taken_marks_broken(
        monkeypatch):
    # As a signal handler raising at the entry of the Python layer's
    # function, before its try statement took the frame over: the fast
    # call hands the frame over again, with that exception.
    r, w = _nearly_full_pipe()
    with r, w:
        send_frame = w._send_frame
        raised = []

        def interrupted_once(*args, **kwargs):
            if not raised:
                raised.append(True)
                raise _Interrupt()
            return send_frame(*args, **kwargs)

        monkeypatch.setattr(w, "_send_frame", interrupted_once)
        with pytest.raises(_Interrupt):
            w.put(b"b" * 40000)
        assert raised
        assert not w._lock.locked()
        assert "interrupted by _Interrupt" in w._broken[1]
        with pytest.raises(GIPCProtocolError, match="unusable"):
            w.put(b"x")


# What the fast put()/send() pickle without pickle's Pickler (see
# gipc_plain_pickle in csrc/fastpath.c), and what lies just outside it
# (left to pickle): the bytes must be pickle's in both cases.
_SHARED_STR = "shared-" + "x" * 3
_SHARED_LIST = [1, 2]
_PLAIN_PICKLES = [
    None, True, False, 0, 1, 255, 256, 65535, 65536, -1, -256,
    2 ** 31 - 1, -2 ** 31, 2 ** 31, -2 ** 31 - 1, 2 ** 64, -2 ** 100,
    0.0, -0.0, 2.5, float("inf"), float("-inf"), 1e308, 5e-324,
    "", "a", "three", "é", "😀" * 3, "x" * 255, "x" * 256, "x" * 5000,
    "lone \ud800 surrogate",
    b"", b"\x00", b"y" * 255, b"y" * 256, b"y" * 5000,
    (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), ((),), ((), ()),
    [], [1], [1, 2], [[]], [[], []], {}, {"a": 1}, {"a": 1, "b": [2]},
    {1: None, 2.5: (), "k": b"v"},
    (12345, 2.5, "three"),
    [_SHARED_STR, _SHARED_STR, (_SHARED_STR,)],
    [_SHARED_LIST, _SHARED_LIST],
    [{"key": i, "value": str(i)} for i in range(3)],
    [{"key": i} for i in range(40)],  # more memo entries than it keeps
    list(range(300)),  # more objects than it visits
    [[[[[[[[[1]]]]]]]]],  # deeper than it goes
    [[[[[[[1]]]]]]],
    (1, [2, {3: (4, 5.5)}], "six", b"seven", None, True),
    [1, object],  # a type it never writes
    [1, frozenset([2])],
]


@pytest.mark.parametrize("protocol", [4, 5])
@pytest.mark.parametrize("obj", _PLAIN_PICKLES, ids=repr)
def test_fast_put_pickles_as_pickle_dumps(obj, protocol):
    r, w = gipc.pipe(encoder=functools.partial(pickle.dumps,
                                               protocol=protocol),
                     decoder=None)
    with r, w:
        try:
            expected = pickle.dumps(obj, protocol)
        except pickle.PicklingError:
            with pytest.raises(pickle.PicklingError):
                w.put(obj)
            return
        w.put(obj)
        assert r.get() == expected


@pytest.mark.parametrize("obj", _PLAIN_PICKLES, ids=repr)
def test_fast_send_pickles_as_forkingpickler_too(conns, obj):
    a, b = conns
    try:
        expected = bytes(ForkingPickler.dumps(obj))
    except pickle.PicklingError:
        with pytest.raises(pickle.PicklingError):
            a.send(obj)
        return
    a.send(obj)
    assert b.recv_bytes() == expected


def test_fast_put_of_the_default_encoder_roundtrips(pickled):
    r, w = pickled
    for obj in _PLAIN_PICKLES:
        w.put(obj)
        assert r.get() == obj
    # Identity within a message survives, as with pickle.
    w.put([_SHARED_LIST, _SHARED_LIST])
    got = r.get()
    assert got[0] is got[1]


def test_an_encoder_like_pickle_dumps_is_called_as_it_is():
    calls = []

    def dumps(obj, protocol=None):
        calls.append(protocol)
        return pickle.dumps(obj, protocol)

    r, w = gipc.pipe(encoder=functools.partial(dumps, protocol=5),
                     decoder=pickle.loads)
    with r, w:
        w.put((1, "a"))
        assert r.get() == (1, "a")
    assert calls == [5]


def test_plain_pickle_loop_leaks_nothing(pickled):
    r, w = pickled
    obj = [{"key": 1, "value": "é"}, (2.5, b"x"), None]

    def loop(n):
        for _ in range(n):
            w.put(obj)
            r.get()

    rounds = 1000  # after a first run, three: as many as two of 2000
    tracemalloc.start()
    try:
        traced, objects = _growth(loop, rounds)
    finally:
        tracemalloc.stop()
    assert traced < 8 * rounds, "%d bytes more" % traced
    assert objects < rounds // 10, "%d more objects" % objects
