"""The forkserver: its life (started on first use, replaced when it died,
gone with its parent), concurrent starts, and what its children report."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import gevent
import pytest

import gipc
from gipc import _forkserver
from start_support import put_pid, put_pid_then_wait, wait_for_message
from support import SCRIPT_CWD, end, script_env

JOIN = 10


def _server_pid():
    pids, _ = _forkserver.owned()
    assert len(pids) == 1
    return next(iter(pids))


def _start_and_check():
    r, w = gipc.pipe()
    with r:
        p = gipc.start_process(put_pid, args=(w,), start_method="forkserver")
        assert r.get(timeout=JOIN) == p.pid
        assert end(p) == 0


def _gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_children_are_forked_by_the_server():
    _start_and_check()
    server = _server_pid()
    r, w = gipc.pipe()
    exit_r, exit_w = gipc.pipe()
    with r, exit_w:
        # The child lives until told to exit: its /proc entry is read while
        # it runs.
        p = gipc.start_process(put_pid_then_wait, args=(w, exit_r),
                               start_method="forkserver")
        pid = r.get(timeout=JOIN)
        with open("/proc/%d/stat" % pid) as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        exit_w.put("exit")
        assert ppid == server
        assert end(p) == 0
    assert _server_pid() == server  # one server for every start


def test_a_killed_server_is_replaced_at_the_next_start():
    _start_and_check()
    old = _server_pid()
    os.kill(old, signal.SIGKILL)
    _start_and_check()
    new = _server_pid()
    assert new != old
    # The dead server was reaped (no zombie of ours left).
    with pytest.raises(ChildProcessError):
        os.waitpid(old, os.WNOHANG)


def test_server_killed_while_a_child_runs():
    # The child's exit status dies with the server: reported as 255.
    r, w = gipc.pipe()
    with r, w:
        p = gipc.start_process(wait_for_message, args=(r,),
                               start_method="forkserver")
        pid = p.pid
        os.kill(_server_pid(), signal.SIGKILL)
        p.join(JOIN)
        assert p.exitcode == 255
        os.kill(pid, signal.SIGKILL)  # orphaned: ours to stop
        p.close()
    _start_and_check()


def test_concurrent_starts_from_greenlets():
    def one(i):
        r, w = gipc.pipe()
        with r:
            p = gipc.start_process(put_pid, args=(w,),
                                   start_method="forkserver")
            assert r.get(timeout=JOIN) == p.pid
            return end(p)

    jobs = [gevent.spawn(one, i) for i in range(8)]
    gevent.joinall(jobs, timeout=60, raise_error=True)
    assert [j.value for j in jobs] == [0] * 8


def test_exit_code_of_a_signal_is_negative():
    with gipc.pipe() as (r, w):
        p = gipc.start_process(wait_for_message, args=(r,),
                               start_method="forkserver")
        assert p.is_alive()
        os.kill(p.pid, signal.SIGUSR1)
        p.join(JOIN)
        assert p.exitcode == -signal.SIGUSR1
    p.close()


def test_server_dies_with_its_parent_even_with_fork_children_alive():
    # The parent starts a forkserver child and a fork child (which must not
    # keep the server's socket), reports the server's pid, and is killed.
    code = textwrap.dedent("""
        import os, sys, gipc
        from gipc import _forkserver
        r, w = gipc.pipe()
        p = gipc.start_process(os.getpid, start_method="forkserver")
        p.join(10)
        keep_r, keep_w = gipc.pipe()
        forked = gipc.start_process(lambda r: r.get(), args=(keep_r,))
        (server,), _ = _forkserver.owned()
        print(server, forked.pid, flush=True)
        sys.stdin.read()
    """)
    parent = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True,
        cwd=SCRIPT_CWD, env=script_env())
    try:
        server, forked = map(int, parent.stdout.readline().split())
        parent.kill()
        parent.wait(JOIN)
        deadline = time.monotonic() + JOIN
        while not _gone(server) and time.monotonic() < deadline:
            gevent.sleep(0.02)
        assert _gone(server)
        # The fork child saw EOF on its pipe once its parent died.
        while not _gone(forked) and time.monotonic() < deadline:
            gevent.sleep(0.02)
        assert _gone(forked)
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.stdin.close()
        parent.stdout.close()
        parent.wait(JOIN)
