"""A pipe that fills up is grown once (F_SETPIPE_SZ), within a budget; a
pipe whose size the caller chose keeps it."""
import fcntl

import gevent
import pytest

import gipc
from gipc import _pipesize
from support import needs_pipe_resize


def _capacity(handle):
    return fcntl.fcntl(handle.fileno(), fcntl.F_GETPIPE_SZ)


def _fill_then_drain(r, w, size):
    sender = gevent.spawn(w.put, b"x" * size)
    assert r.get(timeout=10) == b"x" * size
    sender.join(timeout=10)
    assert sender.successful()


def test_quiet_pipe_keeps_the_default_capacity():
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        before = _capacity(w)
        w.put(b"small")
        assert r.get(timeout=5) == b"small"
        assert _capacity(w) == before < _pipesize.GROWN_SIZE


@needs_pipe_resize
def test_full_pipe_grows_once_and_budget_is_released_on_close():
    grown_before = _pipesize._grown
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        _fill_then_drain(r, w, 4 << 20)
        assert _capacity(w) == _pipesize.GROWN_SIZE
        assert _pipesize._grown == grown_before + 1
    assert _pipesize._grown == grown_before


def test_explicit_pipe_size_is_kept():
    with gipc.pipe(encoder=None, decoder=None, pipe_size=65536) as (r, w):
        _fill_then_drain(r, w, 4 << 20)
        assert _capacity(w) == 65536


def test_no_growth_beyond_the_budget(monkeypatch):
    monkeypatch.setattr(_pipesize, "_allowed", _pipesize._grown)
    with gipc.pipe(encoder=None, decoder=None) as (r, w):
        before = _capacity(w)
        _fill_then_drain(r, w, 4 << 20)
        assert _capacity(w) == before


def test_budget_for_unprivileged_users_is_an_eighth_of_the_soft_limit(
        monkeypatch):
    monkeypatch.setattr(_pipesize.os, "geteuid", lambda: 1000)
    with open("/proc/sys/fs/pipe-user-pages-soft") as f:
        soft_pages = int(f.read())
    expected = None if soft_pages == 0 else (
        soft_pages * _pipesize._PAGE // 8 // _pipesize.GROWN_SIZE)
    assert _pipesize._budget() == expected
    monkeypatch.setattr(_pipesize.os, "geteuid", lambda: 0)
    assert _pipesize._budget() is None


@pytest.mark.parametrize("duplex", [False, True])
def test_connections_over_sockets_do_not_try_to_grow(duplex):
    a, b = gipc.Pipe(duplex=duplex)
    with a, b:
        sender = gevent.spawn(b.send_bytes, b"y" * (4 << 20))
        assert a.recv_bytes() == b"y" * (4 << 20)
        sender.join(timeout=10)
        assert sender.successful()


def _report_grown(out, *held):
    out.put(_pipesize._grown)


@needs_pipe_resize
def test_a_child_counts_only_the_grown_pipes_it_holds():
    grown_before = _pipesize._grown
    with gipc.pipe(encoder=None, decoder=None) as (r, w), \
            gipc.pipe() as (report_r, report_w):
        _fill_then_drain(r, w, 4 << 20)
        assert _pipesize._grown == grown_before + 1
        # Not given the grown end: the child closes it, and its count.
        p = gipc.start_process(_report_grown, args=(report_w,))
        assert report_r.get(timeout=10) == grown_before
        p.join(timeout=10)
        assert report_w.closed  # moved
    with gipc.pipe(encoder=None, decoder=None) as (r, w), \
            gipc.pipe() as (report_r, report_w):
        _fill_then_drain(r, w, 4 << 20)
        # Given the grown end: the child holds it, and counts it.
        p2 = gipc.start_process(_report_grown, args=(report_w, w))
        assert report_r.get(timeout=10) == grown_before + 1
        p2.join(timeout=10)
    assert p.exitcode == p2.exitcode == 0
    p.close()
    p2.close()
    assert _pipesize._grown == grown_before
