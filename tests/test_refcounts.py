"""Reference counting and memory of the hot paths (issue 5).

Each hot path - put/get raw and pickled, get_into and the C reader's
read_frame_into, large frames, and the error paths of the C code - runs
many times after a warm-up; then the same loop runs again and nothing may
have grown: the total reference count where the interpreter keeps one
(``sys.gettotalrefcount``, debug builds), and everywhere the memory traced
by tracemalloc (which sees every object and every PyMem buffer the C code
allocates), the number of objects the garbage collector tracks, and the
resident set size for the large frames.
"""
import errno
import gc
import os
import pickle
import struct
import sys
import tracemalloc

import gevent
import pytest

import gipc
from gipc import _core

ROUNDS = 2000
MIB = 1024 * 1024


def _rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _measure(loop, rounds):
    """Run loop(rounds) four times; return the growth of (traced bytes, gc
    objects, total refcount or 0) over the second and over the third run
    after the first, each the smaller of the two.  A leak grows in every
    run; a container of the interpreter's or gevent's that happens to
    resize (a dict, libev's watcher array) grows once, in one of them."""
    loop(rounds)  # warm-up: caches, free lists, the hub's watchers
    samples = []
    for _ in range(3):
        gc.collect()
        refs = sys.gettotalrefcount() if hasattr(sys, "gettotalrefcount") \
            else 0
        samples.append((tracemalloc.get_traced_memory()[0],
                        len(gc.get_objects()), refs))
        loop(rounds)
    gc.collect()
    refs = sys.gettotalrefcount() if hasattr(sys, "gettotalrefcount") else 0
    samples.append((tracemalloc.get_traced_memory()[0],
                    len(gc.get_objects()), refs))
    growths = [tuple(e - s for e, s in zip(samples[i + 1], samples[i]))
               for i in (1, 2)]
    return tuple(min(values) for values in zip(*growths))


@pytest.fixture
def traced():
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def _assert_flat(growth, rounds, what):
    traced_bytes, objects, refs = growth
    # A leak of one small object per round would be >= 16 * rounds bytes.
    assert traced_bytes < 8 * rounds, "%s: %d bytes more after %d rounds" % (
        what, traced_bytes, rounds)
    assert objects < rounds // 10, "%s: %d more gc objects" % (what, objects)
    assert refs < rounds // 10, "%s: total refcount grew by %d" % (what, refs)


def test_put_get_raw(traced):
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        payload = b"r" * 100

        def loop(n):
            for _ in range(n):
                w.put(payload)
                assert r.get() == payload

        _assert_flat(_measure(loop, ROUNDS), ROUNDS, "raw put/get")


def test_put_get_pickled(traced):
    with gipc.pipe() as (r, w):
        obj = {"k": [1, 2.5, "s", (None, True)]}

        def loop(n):
            for _ in range(n):
                w.put(obj)
                assert r.get() == obj

        _assert_flat(_measure(loop, ROUNDS), ROUNDS, "pickled put/get")


def test_get_into_and_buffer_too_short(traced):
    from multiprocessing import BufferTooShort
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        buf = bytearray(64)

        def loop(n):
            for i in range(n):
                w.put(b"i" * 40)
                assert r.get_into(buf, 8) == 40
                w.put(b"o" * 100)  # does not fit: comes back as bytes
                with pytest.raises(BufferTooShort):
                    r.get_into(buf)

        _assert_flat(_measure(loop, ROUNDS // 2), ROUNDS // 2, "get_into")


def test_core_reader_read_frame_into_resumed(traced):
    """The C reader directly: a payload larger than its buffer received in
    place across many calls (the caller's buffer is held between them),
    and one that moves from a buffer to bytes half-way."""
    rfd, wfd = os.pipe2(os.O_NONBLOCK)
    try:
        frame = struct.pack(">i", 300) + b"p" * 300

        def loop(n):
            for i in range(n):
                reader = _core.Reader(rfd, MIB, 64)
                buf = bytearray(400)
                os.write(wfd, frame[:100])
                assert reader.read_frame_into(buf, 0) is None
                if i % 2:
                    os.write(wfd, frame[100:])
                    assert reader.read_frame_into(buf, 0) == 300
                else:
                    # Another buffer: the part received moves to bytes.
                    assert reader.read_frame_into(bytearray(10), 0) is None
                    os.write(wfd, frame[100:])
                    assert reader.read_frame() == b"p" * 300
                assert reader.detach() == rfd

        _assert_flat(_measure(loop, ROUNDS // 2), ROUNDS // 2,
                     "read_frame_into")
    finally:
        os.close(rfd)
        os.close(wfd)


def test_error_paths_of_the_c_code(traced):
    rfd, wfd = os.pipe2(os.O_NONBLOCK)
    try:
        def loop(n):
            for _ in range(n):
                writer = _core.Writer(wfd)
                with pytest.raises(TypeError):
                    writer.send("not a buffer")
                with pytest.raises(ValueError):
                    writer.resume()  # no frame pending
                assert writer.abandon() is None
                writer.detach()
                with pytest.raises(ValueError):
                    writer.send(b"x")
                with pytest.raises(TypeError):
                    _core.Reader("fd", 10)
                reader = _core.Reader(rfd, 10)
                with pytest.raises(TypeError):
                    reader.read_frame_into(b"immutable")
                with pytest.raises(ValueError):
                    reader.read_frame_into(bytearray(4), 5)
                os.write(wfd, struct.pack(">i", 11))  # over max_size
                with pytest.raises(OSError) as info:
                    reader.read_frame()
                assert info.value.errno == errno.EMSGSIZE
                reader.detach()
                with pytest.raises(ValueError):
                    reader.read_frame()

        _assert_flat(_measure(loop, ROUNDS // 2), ROUNDS // 2, "errors")
    finally:
        os.close(rfd)
        os.close(wfd)


def test_protocol_errors_of_handles(traced):
    def loop(n):
        for _ in range(n):
            r, w = gipc.pipe(encoder=None, decoder=None)
            fd = os.dup(w.fileno())
            os.write(fd, struct.pack(">i", -5))
            os.close(fd)
            with pytest.raises(gipc.GIPCProtocolError):
                r.get()
            with pytest.raises(gipc.GIPCProtocolError):
                r.get()
            r.close()
            w.close()

    _assert_flat(_measure(loop, ROUNDS // 4), ROUNDS // 4, "protocol errors")


@pytest.mark.skipif(bool(os.environ.get("GIPC_SANITIZED")),
                    reason="ASan's quarantine holds freed memory")
def test_large_frames_rss_flat():
    """Large frames (8 MiB, read straight into their final bytes object):
    resident memory does not grow with the number of frames."""
    payload = os.urandom(8 * MIB)
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        def loop(n):
            for _ in range(n):
                g = gevent.spawn(w.put, payload)
                got = r.get(timeout=30)
                g.join(timeout=30)
                assert g.successful()
                assert len(got) == len(payload)
                del got

        loop(5)
        gc.collect()
        before = _rss()
        loop(60)  # 480 MiB in all
        gc.collect()
        growth = _rss() - before
    assert growth < 3 * 8 * MIB, "RSS grew by %.1f MiB" % (growth / MIB)


def test_large_pickled_frames_traced(traced):
    obj = {"blob": b"b" * (512 * 1024), "n": list(range(100))}
    with gipc.pipe() as (r, w):
        def loop(n):
            for _ in range(n):
                g = gevent.spawn(w.put, obj)
                assert r.get(timeout=30) == obj
                g.join(timeout=30)
                assert g.successful()

        traced_bytes, objects, refs = _measure(loop, 50)
    assert traced_bytes < 64 * 1024, traced_bytes
    assert objects < 20 and refs < 20
    assert pickle.HIGHEST_PROTOCOL >= 5
