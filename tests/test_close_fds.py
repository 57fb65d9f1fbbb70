"""close_fds / pass_fds under fork: what a child inherits (issue 15).

With close_fds=True, a forked child keeps stdin/stdout/stderr, the gipc
handles and shared objects given to it, pass_fds and gipc's own
descriptors; every other inherited descriptor is replaced by /dev/null
before the target runs.
"""
import errno
import os
import resource
import socket
import stat

import gevent
import gevent.event
import pytest
from gevent import socket as gsocket
from gevent.server import StreamServer

import gipc
from gipc import _core
from support import JOIN, children, end, run_script

DEVNULL_RDEV = os.stat(os.devnull).st_rdev

needs_table_size = pytest.mark.skipif(
    _core.PORTABLE,
    reason="the portable build probes descriptors below the limit only "
    "(not up to the table size from /proc), so it cannot see one above a "
    "lowered limit")


def _is_devnull(fd):
    st = os.fstat(fd)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == DEVNULL_RDEV


def _identity(fd):
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


# --- gipc #22: a StreamServer whose handler forks a long-lived child ------

def _lives_until_told(go, ready):
    ready.put("up")
    go.get()


@pytest.mark.parametrize("close_fds", [True, False])
def test_stream_server_child_keeps_no_connection(close_fds):
    go_r, go_w = gipc.pipe()
    ready_r, ready_w = gipc.pipe()
    started = {}
    handled = gevent.event.Event()

    def handle(sock, address):
        started["child"] = gipc.start_process(
            _lives_until_told, (go_r, ready_w), close_fds=close_fds)
        sock.close()  # the parent is done with the client
        handled.set()

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    port = server.address[1]
    client = gsocket.create_connection(("127.0.0.1", port), timeout=JOIN)
    try:
        assert handled.wait(JOIN)
        assert ready_r.get(timeout=JOIN) == "up"
        child = started["child"]
        if close_fds:
            # EOF at once: the parent closed its copy, the child has none.
            client.settimeout(JOIN)
            assert client.recv(1) == b""
        else:
            # The child still holds the connection: no EOF while it lives.
            client.settimeout(0.3)
            with pytest.raises(socket.timeout):
                client.recv(1)
        # The parent closes its listener; the port is free again only if
        # the (live) child does not hold the listening socket.
        server.stop()
        assert child.is_alive()
        again = socket.socket()
        try:
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if close_fds:
                again.bind(("127.0.0.1", port))
                again.listen()
            else:
                with pytest.raises(OSError) as info:
                    again.bind(("127.0.0.1", port))
                    again.listen()
                assert info.value.errno == errno.EADDRINUSE
        finally:
            again.close()
        go_w.put(None)
        assert end(child) == 0
        if not close_fds:
            client.settimeout(JOIN)
            assert client.recv(1) == b""  # the child's copy went with it
    finally:
        client.close()
        server.stop()
        for h in (go_w, ready_r):
            h.close()
        for h in (go_r, ready_w):
            if not h._closed:
                h.close()


# --- what the child sees ---------------------------------------------------

def _report_stale(w, sock, text_file, sock_fd, file_fd):
    report = {"sock_is_devnull": _is_devnull(sock_fd),
              "file_is_devnull": _is_devnull(file_fd),
              "file_reads": text_file.read()}
    try:
        sock.send(b"x")
    except OSError as e:
        report["send_errno"] = e.errno
    # A file opened now never gets a stale object's number.
    with open(os.devnull) as fresh:
        report["fresh_fd"] = fresh.fileno()
    w.put(report)


def test_stale_objects_point_at_devnull(tmp_path):
    path = tmp_path / "data"
    path.write_text("the parent's data")
    sock = socket.socket()
    text_file = open(path)
    r, w = gipc.pipe()
    try:
        p = gipc.start_process(
            _report_stale,
            (w, sock, text_file, sock.fileno(), text_file.fileno()),
            close_fds=True)
        report = r.get(timeout=JOIN)
        assert end(p) == 0
    finally:
        r.close()
    try:
        assert report["sock_is_devnull"] and report["file_is_devnull"]
        assert report["file_reads"] == ""  # /dev/null: EOF
        assert report["send_errno"] == errno.ENOTSOCK
        assert report["fresh_fd"] not in (sock.fileno(), text_file.fileno())
        # The parent's own objects are untouched.
        assert text_file.read() == "the parent's data"
        assert not _is_devnull(sock.fileno())
    finally:
        sock.close()
        text_file.close()


def _without_close_fds(w, sock_fd):
    w.put(_is_devnull(sock_fd))


def test_default_keeps_every_descriptor():
    sock = socket.socket()
    r, w = gipc.pipe()
    try:
        p = gipc.start_process(_without_close_fds, (w, sock.fileno()))
        assert r.get(timeout=JOIN) is False
        assert end(p) == 0
    finally:
        r.close()
        sock.close()


def _use_everything(handle, raw_fd, std_ids):
    os.write(raw_fd, b"raw")
    handle.put([_identity(fd) for fd in (0, 1, 2)] == std_ids)


def test_moved_handles_pass_fds_and_std_streams_kept():
    raw_r, raw_w = os.pipe()
    r, w = gipc.pipe()
    std_ids = [_identity(fd) for fd in (0, 1, 2)]
    try:
        p = gipc.start_process(_use_everything, (w, raw_w, std_ids),
                               close_fds=True, pass_fds=[raw_w])
        assert r.get(timeout=JOIN) is True
        assert end(p) == 0
        os.close(raw_w)
        raw_w = -1
        assert os.read(raw_r, 16) == b"raw"
    finally:
        r.close()
        os.close(raw_r)
        if raw_w >= 0:
            os.close(raw_w)


class _Sharer(gipc.Process):
    """Keeps its connection as an attribute (shared, not moved)."""

    def __init__(self, conn, lock, queue, **kwargs):
        super().__init__(**kwargs)
        self.conn = conn
        self.lock = lock
        self.queue = queue

    def run(self):
        with self.lock:
            self.queue.put("via the queue")
        self.conn.send("via the connection")


def test_shared_handles_and_objects_kept(shared):
    lock = shared(gipc.Lock)
    queue = shared(gipc.Queue)
    here, there = gipc.Pipe()
    try:
        p = _Sharer(there, lock, queue, close_fds=True)
        p.start()
        assert queue.get(timeout=JOIN) == "via the queue"
        assert here.poll(JOIN)
        assert here.recv() == "via the connection"
        assert end(p) == 0
    finally:
        here.close()
        there.close()


def _check_high(w, passed_fd, released):
    os.write(passed_fd, b"high")
    w.put(all(_is_devnull(fd) for fd in released))


def test_descriptors_above_1024_and_a_large_table():
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4200:
        pytest.skip("needs a descriptor limit of 4200 (have %d)" % soft)
    raw_r, raw_w = os.pipe()
    high_w = os.dup2(raw_w, 4100)
    os.close(raw_w)
    # A few thousand descriptors the child does not keep, many above 1024.
    released = [os.dup(raw_r) for _ in range(3000)]
    r, w = gipc.pipe()
    try:
        p = gipc.start_process(_check_high, (w, high_w, released),
                               close_fds=True, pass_fds=(high_w,))
        assert r.get(timeout=JOIN) is True
        assert end(p) == 0
        os.close(high_w)
        high_w = -1
        assert os.read(raw_r, 16) == b"high"
    finally:
        r.close()
        for fd in released:
            os.close(fd)
        os.close(raw_r)
        if high_w >= 0:
            os.close(high_w)


def _sentinel_child(w):
    w.put(gipc.parent_process().is_alive())


def test_child_watching_still_works():
    # Whatever watches the child (pidfd or sentinel pipe) and its parent
    # (parent_process()) is gipc's own: kept.
    r, w = gipc.pipe()
    try:
        p = gipc.Process(target=_sentinel_child, args=(w,), close_fds=True)
        p.start()
        assert r.get(timeout=JOIN) is True
        p.join(JOIN)
        assert p.exitcode == 0
        p.close()
    finally:
        r.close()


def _exit_with(code):
    raise SystemExit(code)


def test_many_starts_leak_nothing():
    for i in range(20):
        p = gipc.start_process(_exit_with, (i % 3,), close_fds=True)
        assert end(p) == i % 3


# --- arguments -------------------------------------------------------------

def _never_runs(*args):
    raise AssertionError("must not run")


@pytest.mark.parametrize("kwargs, error", [
    ({"close_fds": "yes"}, TypeError),
    ({"close_fds": None}, TypeError),
    ({"pass_fds": 5}, TypeError),
    ({"pass_fds": "3"}, TypeError),
    ({"pass_fds": [3.0]}, TypeError),
    ({"pass_fds": [True]}, TypeError),
    ({"pass_fds": [-1]}, ValueError),
    ({"pass_fds": [2**31]}, ValueError),
])
def test_bad_arguments_raise_before_fork(kwargs, error):
    r, w = gipc.pipe()
    before = children()
    try:
        with pytest.raises(error, match="close_fds|pass_fds"):
            gipc.start_process(_never_runs, (w,), **kwargs)
        with pytest.raises(error, match="close_fds|pass_fds"):
            gipc.Process(target=_never_runs, **kwargs)
        assert children() == before
        assert not w._closed  # it did not move anywhere
    finally:
        r.close()
        w.close()


def test_arguments_stored_normalised():
    p = gipc.Process(target=_never_runs, close_fds=1, pass_fds=[7, 3, 7])
    assert p._close_fds is True and p._pass_fds == (3, 7)
    q = gipc.Process(target=_never_runs)
    assert q._close_fds is False and q._pass_fds == ()
    # The rest of multiprocessing.Process's signature is unchanged.
    m = gipc.Process(None, _never_runs, "named", (1,), {"a": 2}, daemon=True)
    assert (m.name, m._args, m._kwargs, m.daemon) == (
        "named", (1,), {"a": 2}, True)


# --- a child that cannot set up --------------------------------------------

def _writes(fd):
    os.write(fd, b"ran")


@needs_table_size
def test_child_that_cannot_replace_raises_in_parent():
    # A descriptor at or above a lowered limit cannot be the target of
    # dup2(): the child cannot release it, reports, and never runs.
    raw_r, raw_w = os.pipe()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1600:
        pytest.skip("needs a descriptor limit of 1600 (have %d)" % soft)
    stuck = os.dup2(raw_r, 1500)
    before = children()
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        with pytest.raises(OSError) as info:
            gipc.start_process(_writes, (raw_w,), close_fds=True,
                               pass_fds=(raw_w,))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert info.value.errno == errno.EBADF
        assert "descriptor 1500" in str(info.value)
        assert "did not run" in str(info.value)
        assert children() == before  # reaped
        os.close(raw_w)
        raw_w = -1
        assert os.read(raw_r, 16) == b""  # the target never ran
    finally:
        os.close(stuck)
        os.close(raw_r)
        if raw_w >= 0:
            os.close(raw_w)


def test_sentinel_path_in_a_subprocess(monkeypatch):
    # Where there are no pidfds, the child keeps its sentinel pipe's write
    # end and its parent's lifeline: the parent still sees it exit, and it
    # still sees its parent alive.
    monkeypatch.setenv("GIPC_NO_PIDFD", "1")
    result = run_script("""
        import os, socket, stat
        import gipc
        from gipc import _popen_base
        assert not _popen_base.USE_PIDFDS

        def child(w, fd):
            st = os.fstat(fd)
            w.put((stat.S_ISCHR(st.st_mode),
                   gipc.parent_process().is_alive()))

        sock = socket.socket()
        r, w = gipc.pipe()
        with r:
            p = gipc.start_process(child, (w, sock.fileno()), close_fds=True)
            print(r.get(timeout=10))
            p.join(10)
            print(p.exitcode)
        """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["(True, True)", "0"]


class _Interrupted(BaseException):
    pass


@pytest.mark.parametrize("when", ["before", "after"])
def test_start_interrupted_while_awaiting_the_child(monkeypatch, when):
    # A start interrupted while it waits for the child's report (a
    # gevent.Timeout, a kill of the starting greenlet) leaves no child and
    # no descriptor of the report pipe behind (the fixture checks both).
    from gipc import _popen_fork
    real = _popen_fork.await_child_setup

    def interrupted(report):
        if when == "after":
            real(report)
        raise _Interrupted()

    monkeypatch.setattr(_popen_fork, "await_child_setup", interrupted)
    before = children()
    with pytest.raises(_Interrupted):
        gipc.start_process(_exit_with, (0,), close_fds=True)
    assert children() == before
