"""Fuzzing the C frame parser (issue 5) with hypothesis.

Random byte streams - valid frames (short and 64-bit headers), hand-made
headers (negative, -1 escapes, sizes over the limit) and plain garbage - are
written through a real pipe, cut at random points, and read back by a gipc
handle (``get()``) or by the C reader directly (``read_frame()`` and
``read_frame_into()`` mixed, with random buffers and a small read buffer so
that the large-payload paths run on small data).  The reader must return
exactly the payloads a reference parser finds, then raise EOFError (clean
end) or an OSError with EPROTO/EMSGSIZE (GIPCProtocolError for handles) -
never crash, hang or return anything else.

Bounded: a few hundred examples, each with a bounded wait; about 10 s.
Streams that found bugs are kept below as ``@example`` regression cases.
"""
import errno
import os
import struct

import gevent
import gevent.socket
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import gipc
from gipc import GIPCProtocolError, _core

WAIT = 10

FUZZ = settings(
    max_examples=int(os.environ.get("GIPC_FUZZ_EXAMPLES", "250")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture,
                           HealthCheck.too_slow],
)


# ------------------------------------------------------------ reference


def reference(stream, max_size):
    """What a correct reader makes of ``stream``: (payloads, outcome), the
    outcome being "eof", "EPROTO" or "EMSGSIZE"."""
    out = []
    i = 0
    n_total = len(stream)
    while True:
        if i == n_total:
            return out, "eof"
        if n_total - i < 4:
            return out, "EPROTO"
        (n,) = struct.unpack_from(">i", stream, i)
        if n == -1:
            if n_total - i < 12:
                return out, "EPROTO"
            (n,) = struct.unpack_from(">Q", stream, i + 4)
            hdr = 12
        elif n < 0:
            return out, "EPROTO"
        else:
            hdr = 4
        if n > max_size:
            return out, "EMSGSIZE"
        if n_total - i - hdr < n:
            return out, "EPROTO"
        out.append(bytes(stream[i + hdr:i + hdr + n]))
        i += hdr + n


def _outcome(exc):
    if isinstance(exc, EOFError):
        return "eof"
    if isinstance(exc, OSError) and exc.errno == errno.EPROTO:
        return "EPROTO"
    if isinstance(exc, OSError) and exc.errno == errno.EMSGSIZE:
        return "EMSGSIZE"
    return repr(exc)


# ----------------------------------------------------------- strategies


def _short(payload):
    return struct.pack(">i", len(payload)) + payload


def _long(payload):
    return struct.pack(">iQ", -1, len(payload)) + payload


payloads = st.one_of(st.binary(max_size=40), st.binary(min_size=60,
                                                       max_size=700))
frames = st.builds(lambda p, long: _long(p) if long else _short(p),
                   payloads, st.booleans())
odd_headers = st.one_of(
    st.integers(min_value=-2 ** 31, max_value=-2).map(
        lambda n: struct.pack(">i", n)),
    st.integers(min_value=0, max_value=2 ** 64 - 1).map(
        lambda n: struct.pack(">iQ", -1, n)),
    st.integers(min_value=0, max_value=2 ** 31 - 1).map(
        lambda n: struct.pack(">i", n)),
)
pieces = st.one_of(frames, frames, frames, odd_headers,
                   st.binary(min_size=1, max_size=16))
streams = st.lists(pieces, max_size=12).map(b"".join)


def _chunks(stream, cuts):
    """Cut ``stream`` at the (sorted, deduplicated) positions ``cuts``."""
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    return [stream[a:b] for a, b in zip(points, points[1:]) if b > a]


def _feed(fd, chunks):
    """Write the chunks one by one, letting the reader run in between."""
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                try:
                    view = view[os.write(fd, view):]
                except BlockingIOError:
                    gevent.socket.wait_write(fd, timeout=WAIT)
            gevent.sleep(0)
    except BrokenPipeError:
        pass  # the reader stopped at an error before the end
    finally:
        os.close(fd)


# ------------------------------------------------ through a gipc handle


def _read_with_handle(stream, cuts, max_size):
    r, w = gipc.pipe(encoder=None, decoder=None, max_message_size=max_size)
    feeder = gevent.spawn(_feed, os.dup(w.fileno()), _chunks(stream, cuts))
    w.close()
    got = []
    try:
        while True:
            try:
                got.append(r.get(timeout=WAIT))
            except gevent.Timeout:
                pytest.fail("reader hangs")
            except (EOFError, OSError) as exc:
                if isinstance(exc, OSError):
                    assert isinstance(exc, GIPCProtocolError)
                return got, _outcome(exc)
            assert len(got) <= len(stream) + 1
    finally:
        r.close()
        feeder.kill(block=True, timeout=WAIT)


@FUZZ
@given(stream=streams, cuts=st.lists(st.integers(0, 10 ** 6), max_size=8),
       max_size=st.integers(0, 800))
@example(stream=b"", cuts=[], max_size=0)
@example(stream=_short(b""), cuts=[1, 2, 3], max_size=0)
@example(stream=_long(b"x" * 600), cuts=[5, 11, 12, 300], max_size=600)
@example(stream=struct.pack(">iQ", -1, 2 ** 63), cuts=[4], max_size=800)
@example(stream=_short(b"a") + b"\xff\xff\xff\xfe", cuts=[5, 6], max_size=1)
def test_fuzz_handle_get(stream, cuts, max_size):
    expected = reference(stream, max_size)
    assert _read_with_handle(stream, cuts, max_size) == expected


# ------------------------------------------------ the C reader directly


def _read_with_core(stream, cuts, max_size, buffer_size, plan):
    """Read with a bare _core.Reader; ``plan`` says, call after call, how:
    None for read_frame(), (size, offset) for read_frame_into() with a new
    bytearray (so a payload half received into one buffer must move when
    the next call brings another)."""
    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    reader = _core.Reader(rfd, max_size, buffer_size)
    feeder = gevent.spawn(_feed, wfd, _chunks(stream, cuts))
    got = []
    calls = 0
    try:
        while True:
            how = plan[calls % len(plan)] if plan else None
            calls += 1
            try:
                if how is None:
                    result = reader.read_frame()
                else:
                    size, offset = how
                    offset = min(offset, size)
                    buf = bytearray(b"\xee" * size)
                    result = reader.read_frame_into(buf, offset)
                    if isinstance(result, int):
                        assert 0 <= result <= size - offset
                        # Bytes outside the payload are untouched.
                        assert buf[:offset] == b"\xee" * offset
                        assert buf[offset + result:] == \
                            b"\xee" * (size - offset - result)
                        result = bytes(buf[offset:offset + result])
                    else:
                        assert result is None or isinstance(result, bytes)
            except (EOFError, OSError) as exc:
                return got, _outcome(exc)
            if result is None:
                try:
                    gevent.socket.wait_read(rfd, timeout=WAIT)
                except gevent.socket.timeout:
                    pytest.fail("reader hangs")
                continue
            assert isinstance(result, bytes)
            got.append(result)
            assert len(got) <= len(stream) + 1
    finally:
        assert reader.detach() == rfd
        os.close(rfd)
        feeder.kill(block=True, timeout=WAIT)


read_plans = st.lists(
    st.one_of(st.none(), st.tuples(st.integers(0, 900), st.integers(0, 50))),
    max_size=6)


@FUZZ
@given(stream=streams, cuts=st.lists(st.integers(0, 10 ** 6), max_size=8),
       max_size=st.integers(0, 800),
       buffer_size=st.sampled_from([1, 64, 100, 257, 65536]),
       plan=read_plans)
@example(stream=_short(b"q" * 200) + _short(b"r"), cuts=[50, 120],
         max_size=800, buffer_size=64, plan=[(300, 0), (300, 7), None])
@example(stream=_long(b"q" * 700), cuts=[13, 100, 400], max_size=800,
         buffer_size=64, plan=[(900, 3), None, (100, 0)])
@example(stream=_short(b"z" * 100), cuts=[40], max_size=100, buffer_size=64,
         plan=[(100, 0), (100, 0)])
def test_fuzz_core_reader(stream, cuts, max_size, buffer_size, plan):
    expected = reference(stream, max_size)
    assert _read_with_core(stream, cuts, max_size, buffer_size, plan) == \
        expected


# ------------------------------------------- one stream, many messages


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(st.binary(max_size=200_000), min_size=1,
                         max_size=6),
       cuts=st.lists(st.integers(0, 10 ** 7), max_size=10))
def test_fuzz_large_valid_streams_roundtrip(messages, cuts):
    """Valid frames up to 200 KB (larger than the 64 KiB read buffer), cut
    anywhere: every payload comes back whole and in order."""
    stream = b"".join(_short(m) for m in messages)
    got, outcome = _read_with_handle(stream, cuts, 10 ** 6)
    assert got == messages
    assert outcome == "eof"
