"""Children watched through sentinel pipes (no pidfds: older Linux, macOS,
a portable build, GIPC_NO_PIDFD=1).

The ``sentinel_path`` fixture switches this process to the sentinel path
for one test, whatever the kernel has, so these tests hold in every run of
the suite (the whole suite runs on that path too under GIPC_NO_PIDFD=1).
"""
import fcntl
import multiprocessing.connection
import os
import stat
import subprocess
import sys
import warnings

import gevent
import gevent.select
import pytest

import gipc
from gipc import _popen_base, _popen_fork
from support import JOIN


@pytest.fixture
def sentinel_path(monkeypatch):
    """Watch the children started in this test through sentinel pipes."""
    monkeypatch.setattr(_popen_base, "USE_PIDFDS", False)
    monkeypatch.setattr(_popen_fork, "_use_pidfds", False)
    saved = _popen_fork._lifeline
    monkeypatch.setattr(_popen_fork, "_lifeline", None)
    _popen_fork._lifeline_for_fork()  # its two descriptors, made now
    yield
    lifeline = _popen_fork._lifeline
    if lifeline is not None and lifeline is not saved:
        os.close(lifeline[1])
        os.close(lifeline[2][0])


def _readable(fd, timeout=JOIN):
    ready, _, _ = gevent.select.select([fd], [], [], timeout)
    return bool(ready)


def _exit_with(code):
    os._exit(code)


def _sleep_until_killed():
    gevent.sleep(JOIN * 6)


def test_the_sentinel_is_a_pipe_and_join_reports_exit_codes(sentinel_path):
    p = gipc.start_process(_exit_with, args=(7,))
    assert stat.S_ISFIFO(os.fstat(p.sentinel).st_mode)
    p.join(JOIN)
    assert p.exitcode == 7
    assert not p.is_alive()
    p.close()


def test_join_timeout_is_alive_and_terminate(sentinel_path):
    p = gipc.start_process(_sleep_until_killed)
    p.join(0.01)
    assert p.is_alive() and p.exitcode is None
    p.terminate()
    p.join(JOIN)
    assert p.exitcode == -15
    assert not p.is_alive()
    p.close()


def test_kill(sentinel_path):
    p = gipc.start_process(_sleep_until_killed)
    p.kill()
    p.join(JOIN)
    assert p.exitcode == -9
    p.close()


def test_terminate_and_kill_after_exit_are_harmless(sentinel_path):
    p = gipc.start_process(_exit_with, args=(0,))
    assert _readable(p.sentinel)
    p.terminate()
    p.kill()
    p.join(JOIN)
    assert p.exitcode == 0
    p.terminate()
    p.kill()
    p.close()


def test_multiprocessing_wait_on_the_sentinel(sentinel_path):
    p = gipc.start_process(_exit_with, args=(3,))
    ready = multiprocessing.connection.wait([p.sentinel], timeout=JOIN)
    assert ready == [p.sentinel]
    p.join(JOIN)
    assert p.exitcode == 3
    p.close()


def _report_parent_alive(w):
    w.put(gipc.parent_process().is_alive())


def test_the_child_sees_its_parent_alive(sentinel_path):
    r, w = gipc.pipe()
    with r:
        p = gipc.start_process(_report_parent_alive, args=(w,))
        assert r.get(timeout=JOIN) is True
        p.join(JOIN)
        assert p.exitcode == 0
        p.close()


def _grandchild(r, w):
    # Outlives its parent: tell the test, once the parent is gone, then
    # wait for the test's word (so it is alive while the test joins).
    parent = gipc.parent_process()
    with gevent.Timeout(JOIN):
        while parent.is_alive():
            gevent.sleep(0.005)
    w.put(("orphaned", os.getpid()))
    r.get(timeout=JOIN)


def _start_grandchild_and_exit(r, w):
    gipc.start_process(_grandchild, args=(r, w))
    os._exit(0)  # not joining the grandchild (multiprocessing's exit would)


def test_a_grandchild_outliving_its_parent_keeps_no_sentinel(sentinel_path):
    go_r, go_w = gipc.pipe()
    news_r, news_w = gipc.pipe()
    with go_w, news_r:
        p = gipc.start_process(_start_grandchild_and_exit,
                               args=(go_r, news_w))
        # The join returns while the grandchild still runs (it waits for
        # go_w): the grandchild does not hold the child's sentinel.
        p.join(JOIN)
        assert p.exitcode == 0
        p.close()
        # And the grandchild saw its own parent die (through its lifeline).
        word, pid = news_r.get(timeout=JOIN)
        assert word == "orphaned"
        os.kill(pid, 0)  # still alive
        go_w.put("go")


def _exec_and_exit(rfd, wfd, w):
    # close_fds=False: only close-on-exec keeps the sentinel from the
    # program (which waits on stdin, the test's pipe).
    os.close(wfd)
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=rfd,
        close_fds=False)
    flags = fcntl.fcntl(_popen_fork._own_sentinel, fcntl.F_GETFD)
    w.put((proc.pid, bool(flags & fcntl.FD_CLOEXEC)))
    os._exit(0)


def test_an_execd_subprocess_of_the_child_does_not_inherit_it(
        sentinel_path):
    rfd, wfd = os.pipe()
    r, w = gipc.pipe()
    try:
        with r:
            p = gipc.start_process(_exec_and_exit, args=(rfd, wfd, w))
            os.close(rfd)
            rfd = None
            pid, cloexec = r.get(timeout=JOIN)
            assert cloexec
            p.join(JOIN)
            assert p.exitcode == 0
            p.close()
            os.kill(pid, 0)  # the program still runs, on our pipe
    finally:
        if rfd is not None:
            os.close(rfd)
        os.close(wfd)  # the program reads EOF and ends


def test_a_status_stolen_by_waitpid_minus_one(sentinel_path):
    p = gipc.start_process(_exit_with, args=(7,))
    assert _readable(p.sentinel)
    pid, status = os.waitpid(-1, 0)
    assert pid == p.pid and os.waitstatus_to_exitcode(status) == 7
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p.join(JOIN)
    assert p.exitcode == _popen_base.UNKNOWN_EXIT_CODE
    assert [w.category for w in caught] == [RuntimeWarning]
    assert "another reaper" in str(caught[0].message)
    p.close()


def _wait_for_eof(rfd, wfd):
    os.close(wfd)
    os.read(rfd, 1)


def _fd_count():
    return len(os.listdir("/proc/self/fd"))


def test_200_children_at_once_then_no_descriptor_left(sentinel_path):
    rfd, wfd = os.pipe()
    before = _fd_count()
    procs = []
    try:
        for _ in range(200):
            procs.append(gipc.start_process(_wait_for_eof, args=(rfd, wfd)))
        assert all(p.is_alive() for p in procs)
        assert _fd_count() == before + 200  # a sentinel each
        os.close(wfd)
        wfd = None
        for p in procs:
            p.join(JOIN)
        assert [p.exitcode for p in procs] == [0] * 200
    finally:
        for p in procs:
            if p.exitcode is None:
                p.kill()
                p.join(JOIN)
            p.close()
        if wfd is not None:
            os.close(wfd)
        os.close(rfd)
    assert _fd_count() == before - 2


def test_start_join_cycles_keep_the_descriptor_count_flat(sentinel_path):
    # 1,000 cycles run in `python -m stress` (both paths in CI).
    p = gipc.start_process(_exit_with, args=(0,))
    p.join(JOIN)
    p.close()
    before = _fd_count()
    for _ in range(100):
        p = gipc.start_process(_exit_with, args=(0,))
        p.join(JOIN)
        assert p.exitcode == 0
        p.close()
    assert _fd_count() == before
