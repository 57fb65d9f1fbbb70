"""gipc.pipe() and its handles in one process: pairs, duplex, context
managers, encoders and decoders, raw buffers, frame sizes, timeouts and
greenlets sharing a handle."""
import array
import fcntl
import gc
import os
import pickle
import struct
import termios
import threading
import time

import gevent
import gevent.event
import pytest

import gipc
import gipc.gipc
from support import hand_write as _hand_write
from support import frame as _frame
from support import needs_pipe_resize

WAIT = 10  # upper bound of every wait that should succeed, in seconds


def _fds():
    # Leave out the descriptor listdir() itself used (gone by now).
    return {fd for fd in os.listdir("/proc/self/fd")
            if os.path.exists("/proc/self/fd/" + fd)}


def _pipe_size(fd):
    return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)


def _unread_bytes(fd):
    """Bytes sitting in the kernel pipe buffer (FIONREAD)."""
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf, True)
    return buf[0]


def _wait_until(condition):
    """Let other greenlets run until condition() holds (bounded)."""
    with gevent.Timeout(WAIT, AssertionError("condition never held")):
        while not condition():
            gevent.sleep(0.001)


def _kill(*greenlets):
    gevent.killall([g for g in greenlets if g is not None], timeout=WAIT)


# ---------------------------------------------------------------- pairs


def test_pipe_returns_reader_and_writer():
    pair = gipc.pipe()
    r, w = pair
    try:
        assert isinstance(pair, tuple) and len(pair) == 2
        assert not r.closed and not w.closed
        assert isinstance(r.fileno(), int) and isinstance(w.fileno(), int)
        assert r.fileno() != w.fileno()
        # The descriptors are two ends of one non-blocking pipe.
        assert not os.get_blocking(r.fileno())
        assert not os.get_blocking(w.fileno())
        assert hasattr(r, "get") and not hasattr(r, "put")
        assert hasattr(w, "put") and not hasattr(w, "get")
        w.put("hello")
        assert r.get(timeout=WAIT) == "hello"
    finally:
        r.close()
        w.close()
    assert r.closed and w.closed


def test_pair_context_manager_closes_both_ends():
    before = _fds()
    with gipc.pipe() as (r, w):
        fds = {str(r.fileno()), str(w.fileno())}
        assert fds <= _fds() and not fds & before
        w.put([1, 2, 3])
        assert r.get(timeout=WAIT) == [1, 2, 3]
    assert r.closed and w.closed
    assert r._fd is None and w._fd is None
    assert _fds() == before


def test_pair_context_manager_returns_the_pair():
    pair = gipc.pipe()
    with pair as entered:
        assert entered is pair


def test_pair_context_manager_tolerates_ends_closed_inside():
    with gipc.pipe() as (r, w):
        w.close()
        r.close()
    assert r.closed and w.closed


def test_pair_context_manager_closes_on_exception():
    with pytest.raises(ZeroDivisionError):
        with gipc.pipe() as (r, w):
            1 / 0
    assert r.closed and w.closed


def test_single_handle_is_a_context_manager():
    r, w = gipc.pipe()
    with r as entered_r, w as entered_w:
        assert entered_r is r and entered_w is w
        w.put(1)
        assert r.get(timeout=WAIT) == 1
    assert r.closed and w.closed


def test_duplex_both_directions():
    before = _fds()
    with gipc.pipe(duplex=True) as (a, b):
        assert len(_fds() - before) == 4
        a.put("from a")
        b.put("from b")
        assert b.get(timeout=WAIT) == "from a"
        assert a.get(timeout=WAIT) == "from b"
        # Each end's get() only sees what the other end put().
        assert not a.poll() and not b.poll()
    assert a.closed and b.closed
    assert _fds() == before


def test_duplex_close_closes_both_halves():
    a, b = gipc.pipe(duplex=True)
    a.close()
    assert a.closed and a._reader.closed and a._writer.closed
    # b sees EOF from a, and its writes fail because a's reader is gone.
    with pytest.raises(EOFError):
        b.get(timeout=WAIT)
    with pytest.raises(BrokenPipeError):
        b.put(1)
    b.close()


def test_duplex_close_tolerates_one_half_closed():
    a, b = gipc.pipe(duplex=True)
    a._writer.close()
    a.close()
    assert a.closed
    b.close()


def test_interleaved_duplex_traffic():
    """Both ends send and receive at once, more than a pipe holds in each
    direction, from separate greenlets."""
    n = 300
    payload = b"z" * 10000  # 300 * 10 kB: far more than one pipe buffer

    def send(end, tag):
        for i in range(n):
            end.put((tag, i, payload))

    def receive(end, tag):
        got = []
        for _ in range(n):
            msg = end.get(timeout=WAIT)
            assert msg[0] == tag and msg[2] == payload
            got.append(msg[1])
        return got

    with gipc.pipe(duplex=True) as (a, b):
        gs = [gevent.spawn(send, a, "a"), gevent.spawn(send, b, "b"),
              gevent.spawn(receive, a, "b"), gevent.spawn(receive, b, "a")]
        try:
            done = gevent.joinall(gs, timeout=WAIT, raise_error=True)
            assert len(done) == 4
            assert gs[2].value == list(range(n))
            assert gs[3].value == list(range(n))
        finally:
            _kill(*gs)


def test_duplex_ping_pong_in_one_greenlet_each():
    def echo(end):
        while True:
            try:
                msg = end.get(timeout=WAIT)
            except EOFError:
                return
            end.put(msg * 2)

    with gipc.pipe(duplex=True) as (a, b):
        g = gevent.spawn(echo, b)
        try:
            for i in range(100):
                a.put(i)
                assert a.get(timeout=WAIT) == 2 * i
            a._writer.close()
            g.join(timeout=WAIT)
            assert g.successful()
        finally:
            _kill(g)


def test_handles_are_not_closed_by_garbage_collection():
    """README: with no reference left in the program, both ends stay open
    and registered (gipc 1.8's _get_all_handles() finds them), and a
    message sent before is still there."""
    r, w = gipc.pipe()
    w.put("sent before")
    fds = r.fileno(), w.fileno()
    del r, w
    gc.collect()
    for fd in fds:
        os.fstat(fd)  # still open
    ends = {h.fileno(): h for h in gipc.gipc._get_all_handles()
            if not h.closed}
    r, w = ends[fds[0]], ends[fds[1]]
    with r, w:
        assert type(r) is gipc.gipc._GIPCReader
        assert r.get(timeout=WAIT) == "sent before"
        w.put("after")
        assert r.get(timeout=WAIT) == "after"


# ---------------------------------------------------- encoders/decoders


@pytest.mark.parametrize("obj", [
    None, 0, -1, 2 ** 100, 1.5, "text \u20ac", b"bytes", b"",
    [1, [2, [3]]], {"k": (1, 2), 3: {4}}, frozenset({1}), ValueError("e"),
])
def test_default_codec_roundtrip(obj):
    with gipc.pipe() as (r, w):
        w.put(obj)
        got = r.get(timeout=WAIT)
    if isinstance(obj, Exception):
        assert type(got) is type(obj) and got.args == obj.args
    else:
        assert got == obj and type(got) is type(obj)


def test_default_encoder_is_pickle_at_highest_protocol():
    obj = {"a": [1, 2, 3], "b": b"x" * 100}
    with gipc.pipe(decoder=None) as (r, w):
        w.put(obj)
        assert r.get(timeout=WAIT) == pickle.dumps(
            obj, protocol=pickle.HIGHEST_PROTOCOL)


def test_default_decoder_is_pickle_loads():
    obj = ("tuple", 1)
    with gipc.pipe(encoder=None) as (r, w):
        w.put(pickle.dumps(obj, protocol=2))
        assert r.get(timeout=WAIT) == obj


def test_explicit_default_string():
    with gipc.pipe(encoder="default", decoder="default") as (r, w):
        w.put({1: 2})
        assert r.get(timeout=WAIT) == {1: 2}


def test_callable_encoder_and_decoder():
    calls = []

    def enc(o):
        calls.append(("enc", o))
        return o.upper().encode()

    def dec(b):
        calls.append(("dec", b))
        return b.decode()[::-1]

    with gipc.pipe(encoder=enc, decoder=dec) as (r, w):
        w.put("abc")
        assert r.get(timeout=WAIT) == "CBA"
    assert calls == [("enc", "abc"), ("dec", b"ABC")]


def test_callable_encoder_may_return_any_buffer():
    with gipc.pipe(encoder=lambda o: bytearray(o, "ascii"),
                   decoder=None) as (r, w):
        w.put("xyz")
        assert r.get(timeout=WAIT) == b"xyz"


def test_decoder_error_propagates_and_stream_continues():
    def dec(b):
        if b == b"bad":
            raise ValueError("cannot decode")
        return b

    with gipc.pipe(encoder=None, decoder=dec) as (r, w):
        w.put(b"bad")
        w.put(b"good")
        with pytest.raises(ValueError, match="cannot decode"):
            r.get(timeout=WAIT)
        assert r.get(timeout=WAIT) == b"good"


@pytest.mark.parametrize("kwargs", [
    {"encoder": 1},
    {"decoder": 1},
    {"encoder": "pickle"},
    {"decoder": "Default"},
    {"encoder": b"default"},
    {"decoder": object()},
    {"encoder": 3, "duplex": True},
    {"decoder": [], "duplex": True},
])
def test_invalid_codec_raises_before_any_fd(kwargs):
    before = _fds()
    handles_before = gipc.gipc._get_all_handles()
    with pytest.raises(gipc.GIPCError):
        gipc.pipe(**kwargs)
    assert _fds() == before
    assert gipc.gipc._get_all_handles() == handles_before


# ------------------------------------------------------------ raw mode


def _raw_cases():
    cases = [
        ("bytes", b"\x00\x01raw\xff", b"\x00\x01raw\xff"),
        ("bytearray", bytearray(b"abc\x00"), b"abc\x00"),
        ("memoryview", memoryview(b"0123456789")[2:5], b"234"),
        ("array_i", array.array("i", [1, -2, 3]),
         array.array("i", [1, -2, 3]).tobytes()),
        ("array_d", array.array("d", [0.5, 1e300]),
         array.array("d", [0.5, 1e300]).tobytes()),
        ("empty_bytearray", bytearray(), b""),
    ]
    return cases


@pytest.mark.parametrize("name,obj,expected", _raw_cases(),
                         ids=[c[0] for c in _raw_cases()])
def test_raw_mode_accepts_buffers(name, obj, expected):
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        w.put(obj)
        got = r.get(timeout=WAIT)
    assert type(got) is bytes
    assert got == expected


def test_raw_mode_numpy_array():
    np = pytest.importorskip("numpy")
    arr = np.arange(12, dtype=np.float64).reshape(3, 4)
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        w.put(arr)
        got = r.get(timeout=WAIT)
        assert got == arr.tobytes()
        assert (np.frombuffer(got, dtype=np.float64).reshape(3, 4) == arr).all()
        w.put(arr[1])
        assert r.get(timeout=WAIT) == arr[1].tobytes()
        assert not r.poll()


@pytest.mark.parametrize("call", ["put", "get_into"])
def test_raw_mode_non_contiguous_numpy_array_raises_type_error(call):
    np = pytest.importorskip("numpy")
    view = np.zeros((3, 4), dtype=np.float64)[:, ::2]
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        if call == "put":
            with pytest.raises(TypeError, match="C-contiguous"):
                w.put(view)
        else:
            w.put(b"12345678")
            with pytest.raises(TypeError, match="C-contiguous"):
                r.get_into(view)
            assert r.get(timeout=WAIT) == b"12345678"
        # The stream stays intact.
        w.put(b"after")
        assert r.get(timeout=WAIT) == b"after"
        assert not r.poll()


def test_raw_mode_refuses_non_buffers_and_stays_usable():
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        for bad in ("text", 12, None, [b"a"]):
            with pytest.raises(TypeError):
                w.put(bad)
        with pytest.raises(TypeError):
            w.put(memoryview(b"abcdef")[::2])  # not contiguous
        w.put(b"ok")
        assert r.get(timeout=WAIT) == b"ok"
        assert not r.poll()


def test_raw_put_sends_the_buffer_as_it_is_at_put_time():
    buf = bytearray(b"before")
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        w.put(buf)
        buf[:] = b"after!"
        assert r.get(timeout=WAIT) == b"before"


# ----------------------------------------------------------- frame sizes


def _transfer(payload, **pipe_kwargs):
    """Send one raw payload from a greenlet, receive it in this one."""
    with gipc.pipe(encoder=None, decoder=None, **pipe_kwargs) as (r, w):
        g = gevent.spawn(w.put, payload)
        try:
            got = r.get(timeout=60)
            g.join(timeout=WAIT)
            assert g.successful()
        finally:
            _kill(g)
        assert not r.poll()
    return got


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 1000])
def test_small_frame_sizes(size):
    payload = bytes((i * 7) % 256 for i in range(size))
    assert _transfer(payload) == payload


def test_zero_byte_frame_on_the_wire():
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        w.put(b"")
        assert _unread_bytes(r.fileno()) == 4  # header only
        assert r.poll()
        assert r.get(timeout=WAIT) == b""
        assert not r.poll()


def test_one_byte_frame_on_the_wire():
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        w.put(b"\xab")
        fd = os.dup(r.fileno())
        try:
            assert os.read(fd, 100) == b"\x00\x00\x00\x01\xab"
        finally:
            os.close(fd)


def test_payload_of_exactly_the_pipe_size():
    with gipc.pipe() as (r, w):
        size = _pipe_size(w.fileno())
    payload = os.urandom(size)
    assert _transfer(payload) == payload


def test_frame_of_exactly_the_pipe_size_needs_no_reader():
    """put() returns once the whole frame is in the pipe: a frame that
    fills the pipe exactly goes in without any reader."""
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        size = _pipe_size(w.fileno())
        payload = os.urandom(size - 4)
        with gevent.Timeout(WAIT):
            w.put(payload)
        assert _unread_bytes(r.fileno()) == size
        assert r.get(timeout=WAIT) == payload


@pytest.mark.parametrize("delta", [-5, -4, -3, 1, 4096])
def test_payloads_around_the_pipe_size(delta):
    with gipc.pipe() as (r, w):
        size = _pipe_size(w.fileno())
    payload = os.urandom(size + delta)
    assert _transfer(payload) == payload


def test_payloads_around_the_read_buffer_size():
    # The reader's buffer is 64 KiB; large payloads are read directly into
    # their result object.  Cross both thresholds.
    for size in (32 * 1024 - 5, 32 * 1024 - 4, 32 * 1024, 64 * 1024 - 4,
                 64 * 1024, 64 * 1024 + 1, 4 * 1024 * 1024 + 3):
        payload = os.urandom(size)
        assert _transfer(payload) == payload


def test_100_mib_frame():
    payload = os.urandom(100 * 1024 * 1024)
    got = _transfer(payload)
    assert len(got) == len(payload)
    assert got == payload


@needs_pipe_resize
def test_pipe_size_argument_is_honoured():
    with gipc.pipe(pipe_size=256 * 1024) as (r, w):
        assert _pipe_size(w.fileno()) >= 256 * 1024
        payload = os.urandom(300 * 1024)
        g = gevent.spawn(w.put, payload)
        try:
            assert r.get(timeout=WAIT) == payload
            g.join(timeout=WAIT)
        finally:
            _kill(g)


def test_many_small_frames_arriving_in_one_read():
    """One write brings many frames; the first get() drains the pipe into
    the reader's buffer and the following ones need no more input."""
    n = 2000
    msgs = [b"m%d" % i for i in range(n)]
    blob = b"".join(_frame(m) for m in msgs)
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        assert len(blob) < _pipe_size(w.fileno())
        _hand_write(w, blob)
        assert r.get(timeout=WAIT) == msgs[0]
        # Everything else was taken in by that single get().
        assert _unread_bytes(r.fileno()) == 0
        w.close()  # no more input can ever come
        got = [r.get(timeout=WAIT) for _ in range(n - 1)]
        assert got == msgs[1:]
        with pytest.raises(EOFError):
            r.get(timeout=WAIT)


def test_many_small_pickled_messages_in_order():
    n = 20000
    with gipc.pipe() as (r, w):
        g = gevent.spawn(lambda: [w.put((i, "x")) for i in range(n)])
        try:
            for i in range(n):
                assert r.get(timeout=WAIT) == (i, "x")
            g.join(timeout=WAIT)
            assert g.successful()
        finally:
            _kill(g)


def test_frames_split_at_every_byte_boundary():
    """A stream delivered one byte at a time still yields whole messages."""
    msgs = [b"", b"a", b"bc", b"x" * 300]
    blob = b"".join(_frame(m) for m in msgs)
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        got = []

        def feed():
            for i in range(len(blob)):
                _hand_write(w, blob[i:i + 1])
                gevent.sleep(0)  # let the reader see this byte alone

        g = gevent.spawn(feed)
        try:
            for _ in msgs:
                got.append(r.get(timeout=WAIT))
            g.join(timeout=WAIT)
        finally:
            _kill(g)
    assert got == msgs


def test_poll():
    with gipc.pipe() as (r, w):
        assert r.poll() is False
        w.put(1)
        assert r.poll() is True
        assert r.get(timeout=WAIT) == 1
        assert r.poll() is False
        w.close()
        assert r.poll() is True  # EOF to report
        with pytest.raises(EOFError):
            r.get(timeout=WAIT)


def test_max_message_size_property():
    with gipc.pipe(max_message_size=10) as (r, w):
        assert r.max_message_size == 10
        r.max_message_size = 20
        assert r.max_message_size == 20
    with gipc.pipe() as (r, w):
        assert r.max_message_size == gipc.DEFAULT_MAX_MESSAGE_SIZE


def test_max_message_size_is_inclusive():
    with gipc.pipe(encoder=None, decoder=None, max_message_size=8) as (r, w):
        w.put(b"12345678")
        assert r.get(timeout=WAIT) == b"12345678"


@pytest.mark.parametrize("bad,exc", [(-1, ValueError), (1.5, TypeError),
                                     ("1", TypeError), (True, TypeError)])
def test_bad_max_message_size_creates_no_fd(bad, exc):
    before = _fds()
    with pytest.raises(exc):
        gipc.pipe(max_message_size=bad)
    assert _fds() == before


# -------------------------------------------------------------- timeouts


def test_get_timeout_number_expires():
    with gipc.pipe() as (r, w):
        t0 = time.monotonic()
        with pytest.raises(gevent.Timeout):
            r.get(timeout=0.05)
        assert time.monotonic() - t0 >= 0.04
        # The handle is intact.
        w.put("after")
        assert r.get(timeout=WAIT) == "after"


def test_get_timeout_zero():
    with gipc.pipe() as (r, w):
        with pytest.raises(gevent.Timeout):
            r.get(timeout=0)
        w.put(5)
        assert r.get(timeout=0) == 5


def test_get_timeout_number_returns_message_arriving_in_time():
    with gipc.pipe() as (r, w):
        g = gevent.spawn_later(0.01, w.put, "late")
        try:
            assert r.get(timeout=WAIT) == "late"
        finally:
            _kill(g)


@pytest.mark.parametrize("bad,exc", [("1", TypeError), (True, TypeError),
                                     (float("nan"), ValueError)])
def test_get_timeout_bad_values(bad, exc):
    with gipc.pipe() as (r, w):
        w.put(1)
        with pytest.raises(exc):
            r.get(timeout=bad)
        assert r.get(timeout=WAIT) == 1


@pytest.mark.parametrize("payload_size", [100, 40000])
def test_timeout_mid_frame_then_resume(payload_size):
    """A numeric timeout that expires while a frame is half received keeps
    the half; the next get() completes the same message."""
    payload = os.urandom(payload_size)
    frame = _frame(payload)
    half = len(frame) // 2
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        _hand_write(w, frame[:half])
        with pytest.raises(gevent.Timeout):
            r.get(timeout=0.05)
        assert _unread_bytes(r.fileno()) == 0  # the half was taken in
        _hand_write(w, frame[half:])
        w.put(b"next")
        assert r.get(timeout=WAIT) == payload
        assert r.get(timeout=WAIT) == b"next"


def test_timeout_inside_header_then_resume():
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        _hand_write(w, b"\x00\x00")
        with pytest.raises(gevent.Timeout):
            r.get(timeout=0.02)
        _hand_write(w, b"\x00\x03abc")
        assert r.get(timeout=WAIT) == b"abc"


def test_numeric_timeout_bounds_the_whole_call():
    """A numeric timeout keeps running after the message began to arrive."""
    payload = b"p" * 1000
    frame = _frame(payload)
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        _hand_write(w, frame[:10])
        with pytest.raises(gevent.Timeout):
            r.get(timeout=0.05)
        _hand_write(w, frame[10:])
        assert r.get(timeout=WAIT) == payload


def test_get_started_gevent_timeout_expires():
    with gipc.pipe() as (r, w):
        t = gevent.Timeout(0.05)
        t.start()
        try:
            with pytest.raises(gevent.Timeout) as info:
                r.get(timeout=t)
            assert info.value is t
        finally:
            t.close()
        w.put("intact")
        assert r.get(timeout=WAIT) == "intact"


def test_get_started_gevent_timeout_silent_18_idiom():
    with gipc.pipe() as (r, w):
        result = "unset"
        with gevent.Timeout(0.05, False) as t:
            result = r.get(timeout=t)
        assert result == "unset"
        w.put(1)
        assert r.get(timeout=WAIT) == 1


def test_get_started_gevent_timeout_cancelled_when_message_ready():
    with gipc.pipe() as (r, w):
        w.put("ready")
        t = gevent.Timeout(WAIT)
        t.start()
        try:
            assert r.get(timeout=t) == "ready"
            assert not t.pending
        finally:
            t.close()


def test_get_started_gevent_timeout_cancelled_when_message_begins():
    """gipc 1.8 semantics: the timeout covers the wait for a message to
    begin; once it has begun, the timeout is cancelled and get() completes
    the message however long that takes."""
    payload = b"q" * 100
    frame = _frame(payload)
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        _hand_write(w, frame[:30])
        t = gevent.Timeout(WAIT)
        t.start()
        g = gevent.spawn(r.get, timeout=t)
        try:
            gevent.sleep(0)  # g runs until it waits for the rest
            assert not g.ready()
            assert not t.pending
            _hand_write(w, frame[30:])
            assert g.get(timeout=WAIT) == payload
        finally:
            t.close()
            _kill(g)


def test_get_started_gevent_timeout_cancelled_on_first_byte_later():
    payload = b"r" * 100
    frame = _frame(payload)
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        t = gevent.Timeout(WAIT)
        t.start()
        g = gevent.spawn(r.get, timeout=t)
        try:
            gevent.sleep(0)
            assert not g.ready() and t.pending  # nothing arrived yet
            _hand_write(w, frame[:2])
            # g wakes up and takes the two bytes in.
            _wait_until(lambda: _unread_bytes(r.fileno()) == 0)
            assert not g.ready()
            assert not t.pending
            _hand_write(w, frame[2:])
            assert g.get(timeout=WAIT) == payload
        finally:
            t.close()
            _kill(g)


# ------------------------------------------------ greenlets sharing a handle


def _numbered(i, size):
    return struct.pack(">I", i) + bytes([i % 251]) * size


def _check_numbered(msg, size):
    i = struct.unpack(">I", msg[:4])[0]
    assert msg[4:] == bytes([i % 251]) * size
    return i


def test_two_greenlets_reading_one_handle_get_whole_messages():
    n, size = 40, 200 * 1024  # each message needs several reads
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        def reader():
            return [_check_numbered(r.get(timeout=WAIT), size)
                    for _ in range(n // 2)]

        def writer():
            for i in range(n):
                w.put(_numbered(i, size))

        gs = [gevent.spawn(reader), gevent.spawn(reader), gevent.spawn(writer)]
        try:
            gevent.joinall(gs, timeout=WAIT * 3, raise_error=True)
            assert all(g.successful() for g in gs)
            a, b = gs[0].value, gs[1].value
            assert sorted(a + b) == list(range(n))
            assert a == sorted(a) and b == sorted(b)
        finally:
            _kill(*gs)


def test_two_greenlets_writing_one_handle_send_whole_messages():
    n, size = 20, 200 * 1024
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        def writer(base):
            for i in range(base, base + n):
                w.put(_numbered(i, size))

        gs = [gevent.spawn(writer, 0), gevent.spawn(writer, 1000)]
        try:
            got = [_check_numbered(r.get(timeout=WAIT), size)
                   for _ in range(2 * n)]
            gevent.joinall(gs, timeout=WAIT, raise_error=True)
        finally:
            _kill(*gs)
        assert sorted(got) == list(range(n)) + list(range(1000, 1000 + n))
        assert [i for i in got if i < 1000] == list(range(n))
        assert not r.poll()


def test_get_does_not_block_the_event_loop():
    # Nothing here yields before r.get() waits, so the ticker runs only while
    # the main greenlet is inside get(); only its third tick sends the
    # message, so a get() that blocked the loop would never see it.  Counted
    # ticks, not timers: gevent starts a timer on the loop's cached clock,
    # which is stale after a stretch without a loop iteration (an earlier
    # test), so a timer may fire at once.  A thread writes a stand-in frame
    # after WAIT seconds: a get() blocking the loop fails fast, not hangs.
    ticks = []

    def ticker(w):
        while len(ticks) < 3:
            gevent.sleep(0.001)
            ticks.append(time.monotonic())
        w.put("done")

    with gipc.pipe() as (r, w):
        fd = os.dup(w.fileno())
        watchdog = threading.Timer(
            WAIT, os.write, (fd, _frame(pickle.dumps("loop blocked"))))
        t = gevent.spawn(ticker, w)
        watchdog.start()
        try:
            assert r.get(timeout=WAIT) == "done"
            assert len(ticks) == 3
        finally:
            watchdog.cancel()
            watchdog.join(WAIT)
            os.close(fd)
            _kill(t)
