"""gipc 1.8 compatibility of the pipe half: the module layout of
``gipc.gipc``, private names that 1.8 code and test suites use, call
signatures, and the wire format shared with gipc 1.8 and
``multiprocessing.connection``."""
import inspect
import multiprocessing.connection
import os
import pickle
import struct
import subprocess
import sys

import gevent
import pytest

import gipc
import gipc.gipc
from support import SCRIPT_CWD, script_env

WAIT = 10
#: The virtual environment holding the real gipc 1.8 (from PyPI): the
#: bench's (bench/impl_gipc18.py creates it; .ci/run does so before the
#: tests), or the one GIPC18_VENV names.  Without it these tests skip, but
#: fail in CI (CI=true), where they must run.
GIPC18_VENV = os.environ.get("GIPC18_VENV") or os.path.join(
    os.path.dirname(SCRIPT_CWD), "bench", "out", "gipc18-venv")
GIPC18_PYTHON = os.path.join(GIPC18_VENV, "bin", "python")
# -I: neither PYTHONPATH (the tests' own gipc) nor the current directory;
# the check makes sure that what runs is gipc 1.8 from that venv.
_GIPC18_CHECK = """\
import importlib.metadata, os, sys
import gipc
assert importlib.metadata.version("gipc").startswith("1.8."), \\
    importlib.metadata.version("gipc")
assert os.path.realpath(gipc.__file__).startswith(
    os.path.realpath(sys.prefix) + os.sep), gipc.__file__
"""


def _read_all_available(handle):
    fd = os.dup(handle.fileno())
    try:
        return os.read(fd, 1 << 20)
    finally:
        os.close(fd)


# ------------------------------------------------------------ names


@pytest.mark.parametrize("name", [
    "pipe", "start_process", "GIPCError", "GIPCClosed", "GIPCLocked",
    "_GIPCHandle", "_GIPCReader", "_GIPCWriter", "_GIPCDuplexHandle",
    "_PairContext", "_GProcess", "_get_all_handles", "_set_all_handles",
    "_signals_to_reset", "_all_handles",
])
def test_gipc_gipc_names(name):
    assert hasattr(gipc.gipc, name)


def test_top_level_names_are_the_same_objects():
    assert gipc.gipc.pipe is gipc.pipe
    assert gipc.gipc.start_process is gipc.start_process
    for exc in ("GIPCError", "GIPCClosed", "GIPCLocked"):
        assert getattr(gipc.gipc, exc) is getattr(gipc, exc)


def test_gipc_gipc_reachable_after_plain_import():
    # In a fresh interpreter: in this one, gipc.gipc was imported above.
    code = "import gipc; print(gipc.gipc._get_all_handles())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          timeout=60, cwd=SCRIPT_CWD, env=script_env())
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.strip() == b"[]"


def test_pipe_signature_and_positional_arguments():
    params = list(inspect.signature(gipc.pipe).parameters.values())
    assert [p.name for p in params[:3]] == ["duplex", "encoder", "decoder"]
    assert [p.default for p in params[:3]] == [False, "default", "default"]
    # Anything after the three 1.8 parameters is keyword-only.
    assert all(p.kind is p.KEYWORD_ONLY for p in params[3:])
    with gipc.pipe(True) as (a, b):
        assert isinstance(a, gipc.gipc._GIPCDuplexHandle)
    with gipc.pipe(False, None, None) as (r, w):
        w.put(b"raw")
        assert r.get(None) == b"raw"


def test_handle_types():
    g = gipc.gipc
    pair = gipc.pipe()
    with pair as (r, w):
        assert type(pair) is g._PairContext and isinstance(pair, tuple)
        assert type(r) is g._GIPCReader and type(w) is g._GIPCWriter
        assert isinstance(r, g._GIPCHandle) and isinstance(w, g._GIPCHandle)
    dpair = gipc.pipe(duplex=True)
    with dpair as (a, b):
        assert type(dpair) is g._PairContext
        assert type(a) is g._GIPCDuplexHandle
        assert isinstance(a, g._PairContext) and isinstance(a, tuple)
        assert type(a._reader) is g._GIPCReader
        assert type(a._writer) is g._GIPCWriter
        # The duplex handle is the tuple (reader, writer), as in 1.8.
        assert a[0] is a._reader and a[1] is a._writer
        # Each end's writer feeds the other end's reader.
        a._writer.put("via writer")
        assert b._reader.get(timeout=WAIT) == "via writer"


def test_fd_and_closed_attributes():
    r, w = gipc.pipe()
    assert isinstance(r._fd, int) and isinstance(w._fd, int)
    assert r._fd == r.fileno() and w._fd == w.fileno()
    assert r._closed is False and w._closed is False
    r.close()
    w.close()
    assert r._fd is None and w._fd is None
    assert r._closed is True and w._closed is True


def test_duplex_reader_writer_attributes_track_closing():
    a, b = gipc.pipe(duplex=True)
    a.close()
    assert a._reader._closed and a._writer._closed
    assert a._reader._fd is None and a._writer._fd is None
    assert not b._reader._closed
    b.close()


def test_repr_format():
    r, w = gipc.pipe()
    assert repr(r) == "<_GIPCReader_%s fd: %d>" % (r._id, r._fd)
    assert str(w) == "<_GIPCWriter_%s fd: %d>" % (w._id, w._fd)
    assert len(r._id) == 6 and int(r._id, 16) >= 0
    r.close()
    w.close()
    assert repr(r).endswith("fd: None>")


# ------------------------------------------------- the handle registry


def test_get_all_handles_is_a_list_copy_in_creation_order():
    before = gipc.gipc._get_all_handles()
    r, w = gipc.pipe()
    try:
        handles = gipc.gipc._get_all_handles()
        assert type(handles) is list
        assert handles == before + [r, w]
        assert handles is not gipc.gipc._get_all_handles()
        handles.clear()  # a copy: the registry is untouched
        assert gipc.gipc._get_all_handles() == before + [r, w]
        a, b = gipc.pipe(duplex=True)
        # A duplex pipe registers its four single-end handles.
        four = gipc.gipc._get_all_handles()[len(before) + 2:]
        assert len(four) == 4
        assert set(map(id, four)) == {id(a._reader), id(a._writer),
                                      id(b._reader), id(b._writer)}
        a.close()
        b.close()
    finally:
        r.close()
        w.close()
    assert gipc.gipc._get_all_handles() == before


def test_closing_removes_from_all_handles():
    r, w = gipc.pipe()
    assert r in gipc.gipc._all_handles and w in gipc.gipc._all_handles
    r.close()
    assert r not in gipc.gipc._get_all_handles()
    assert w in gipc.gipc._get_all_handles()
    w.close()
    assert w not in gipc.gipc._all_handles


def test_set_all_handles_replaces_the_registry():
    saved = gipc.gipc._get_all_handles()
    r, w = gipc.pipe()
    try:
        gipc.gipc._set_all_handles([w])
        assert gipc.gipc._get_all_handles() == [w]
        assert list(gipc.gipc._all_handles) == [w]
        # Closing a handle that is not listed any more is fine.
        r.close()
        assert gipc.gipc._get_all_handles() == [w]
        gipc.gipc._set_all_handles([])
        assert gipc.gipc._get_all_handles() == []
        assert list(gipc.gipc._all_handles) == []
    finally:
        gipc.gipc._set_all_handles(saved + [w])
        if not r._closed:
            r.close()
        w.close()
    assert gipc.gipc._get_all_handles() == saved


def test_all_handles_is_the_live_list():
    r, w = gipc.pipe()
    live = gipc.gipc._all_handles
    assert r in live and w in live
    r.close()
    w.close()
    assert r not in gipc.gipc._all_handles


# ------------------------------------------------ 1.8-style construction


def test_handles_built_directly_on_os_pipe_fds():
    """gipc 1.8 code may build handles itself: _GIPCReader(fd, decoder),
    _GIPCWriter(fd, encoder), _GIPCDuplexHandle((reader, writer)).  The
    descriptors are made non-blocking, as gipc 1.8 does."""
    rfd, wfd = os.pipe()
    r = gipc.gipc._GIPCReader(rfd, pickle.loads)
    w = gipc.gipc._GIPCWriter(wfd, pickle.dumps)
    try:
        assert not os.get_blocking(rfd) and not os.get_blocking(wfd)
        with pytest.raises(gevent.Timeout):
            r.get(timeout=0.01)  # would hang on a blocking descriptor
        w.put({"k": 1})
        assert r.get(timeout=WAIT) == {"k": 1}
    finally:
        with gipc.gipc._PairContext((r, w)):
            pass
    assert r._closed and w._closed


def test_pair_context_exits_second_first():
    order = []

    class End:
        def __init__(self, name):
            self.name = name

        def __enter__(self):
            order.append("enter " + self.name)
            return self

        def __exit__(self, *exc):
            order.append("exit " + self.name)

    with gipc.gipc._PairContext((End("a"), End("b"))) as pair:
        assert [e.name for e in pair] == ["a", "b"]
    assert order == ["enter a", "enter b", "exit b", "exit a"]


def test_pair_context_exits_first_even_if_second_raises():
    order = []

    class End:
        def __init__(self, name, fail):
            self.name, self.fail = name, fail

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            order.append(self.name)
            if self.fail:
                raise RuntimeError(self.name)

    with pytest.raises(RuntimeError, match="b"):
        with gipc.gipc._PairContext((End("a", False), End("b", True))):
            pass
    assert order == ["b", "a"]
    order.clear()
    # Both fail: the first one's error is the one raised.
    with pytest.raises(RuntimeError, match="a"):
        with gipc.gipc._PairContext((End("a", True), End("b", True))):
            pass
    assert order == ["b", "a"]


def test_18_timeout_idiom():
    with gipc.pipe() as (r, w):
        got = None
        with gevent.Timeout(0.02, False) as t:
            got = r.get(timeout=t)
        assert got is None
        w.put("x")
        with gevent.Timeout(WAIT, False) as t:
            got = r.get(timeout=t)
        assert got == "x"


def test_handles_refuse_pickling():
    with gipc.pipe() as (r, w):
        for h in (r, w):
            with pytest.raises(TypeError):
                pickle.dumps(h)
    with gipc.pipe(duplex=True) as (a, b):
        with pytest.raises(TypeError):
            pickle.dumps(a)


# ------------------------------------------------------------ wire format


@pytest.mark.parametrize("payload", [b"", b"a", b"abc" * 1000])
def test_frames_match_multiprocessing_connection(payload):
    mr, mw = os.pipe()
    try:
        conn = multiprocessing.connection.Connection(mw, readable=False)
        conn.send_bytes(payload)
        expected = os.read(mr, 1 << 20)
    finally:
        os.close(mr)
        conn.close()
    assert expected == struct.pack("!i", len(payload)) + payload
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        w.put(payload)
        assert _read_all_available(r) == expected


def test_reads_frames_written_by_multiprocessing_connection():
    with gipc.pipe() as (r, w):
        conn = multiprocessing.connection.Connection(os.dup(w.fileno()),
                                                     readable=False)
        try:
            conn.send({"from": "multiprocessing"})
            conn.send_bytes(pickle.dumps([1, 2]))
        finally:
            conn.close()
        assert r.get(timeout=WAIT) == {"from": "multiprocessing"}
        assert r.get(timeout=WAIT) == [1, 2]


def test_multiprocessing_connection_reads_our_frames():
    with gipc.pipe() as (r, w):
        w.put(("to", "multiprocessing"))
        w.put(b"second")
        fd = os.dup(r.fileno())
        os.set_blocking(fd, True)  # shared open file: only while we read
        conn = multiprocessing.connection.Connection(fd, writable=False)
        try:
            assert conn.recv() == ("to", "multiprocessing")
            assert conn.recv() == b"second"
        finally:
            conn.close()
            os.set_blocking(r.fileno(), False)


def _start_gipc18(code, pass_fds):
    """Start ``code`` under gipc 1.8 (skip, or fail in CI, without it)."""
    if not os.path.exists(GIPC18_PYTHON):
        why = ("gipc 1.8 reference venv not found: %s (create it with "
               "`python -c 'import bench.impl_gipc18 as m; m.ensure_venv()'`"
               " or set GIPC18_VENV)" % GIPC18_VENV)
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return subprocess.Popen(
        [GIPC18_PYTHON, "-I", "-c", _GIPC18_CHECK + code], pass_fds=pass_fds,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")


def _finish_gipc18(proc):
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    return out


def _run_gipc18(code, pass_fds):
    return _finish_gipc18(_start_gipc18(code, pass_fds))


def test_gipc18_reads_our_messages():
    msgs = [{"a": 1}, "text", b"b" * 10000, list(range(100))]
    r, w = gipc.pipe()
    try:
        for m in msgs:
            w.put(m)
        w.close()
        fd = os.dup(r.fileno())
        try:
            out = _run_gipc18(
                "import os, pickle, gipc.gipc as g\n"
                "r = g._GIPCReader(%d, pickle.loads)\n"
                "got = []\n"
                "while True:\n"
                "    try: got.append(r.get())\n"
                "    except EOFError: break\n"
                "os.write(1, pickle.dumps(got))\n" % fd, [fd])
        finally:
            os.close(fd)
        assert pickle.loads(out) == msgs
    finally:
        r.close()


def test_we_read_gipc18_messages():
    msgs = [{"a": 1}, "text", b"c" * 10000, (None, 2.5)]
    r, w = gipc.pipe()
    try:
        fd = os.dup(w.fileno())
        w.close()
        try:
            _run_gipc18(
                "import pickle, gipc.gipc as g\n"
                "w = g._GIPCWriter(%d, g._default_encoder)\n"
                "for m in %r: w.put(m)\n"
                "w.close()\n" % (fd, msgs), [fd])
        finally:
            os.close(fd)
        got = []
        while True:
            try:
                got.append(r.get(timeout=WAIT))
            except EOFError:
                break
        assert got == msgs
    finally:
        r.close()


def test_messages_larger_than_the_pipe_both_ways_with_gipc18():
    """Frames far larger than the pipe's buffer, so that each side waits for
    the other mid-frame, and an empty one: gipc 1.8 echoes what we send."""
    msgs = [b"x" * (3 * 1024 * 1024), b"", os.urandom(200_000)]
    with gipc.pipe(encoder=None, decoder=None) as (to_18_r, to_18_w), \
            gipc.pipe(encoder=None, decoder=None) as (from_18_r, from_18_w):
        fds = [os.dup(to_18_r.fileno()), os.dup(from_18_w.fileno())]
        try:
            proc = _start_gipc18(
                "import gipc.gipc as g\n"
                "r = g._GIPCReader(%d, None)\n"
                "w = g._GIPCWriter(%d, None)\n"
                "for _ in range(%d): w.put(r.get())\n"
                % (fds[0], fds[1], len(msgs)), fds)
        finally:
            for fd in fds:
                os.close(fd)
        try:
            sender = gevent.spawn(lambda: [to_18_w.put(m) for m in msgs])
            got = [from_18_r.get(timeout=WAIT * 3) for _ in msgs]
            sender.join(timeout=WAIT)
            assert sender.successful()
        finally:
            sender.kill(block=True, timeout=WAIT)
            out = _finish_gipc18(proc)
    assert got == msgs
    assert out == b""
