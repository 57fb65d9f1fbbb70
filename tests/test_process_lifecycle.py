"""The life of a child process: exit codes, signals, join, is_alive, close,
repr, and the argument checks of start_process()."""
import gc
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import gevent
import gevent.event
import gevent.select
import pytest

import gipc
from gipc import GIPCError
from support import children as _children
from support import finish as _finish
from support import needs_pidfds

JOIN = 10  # seconds: generous bound for every wait on a child


def _wait_exited(process):
    """Wait (bounded, on the hub) until the child has exited, without
    joining it."""
    ready, _, _ = gevent.select.select([process.sentinel], [], [], JOIN)
    assert ready, "child did not exit in time"


# --- targets (importable, for spawn and forkserver children) -------------

from start_support import exit_with as _exit_with  # noqa: E402
from start_support import os_exit as _os_exit  # noqa: E402
from start_support import raise_error as _raise  # noqa: E402
from start_support import return_value as _return_value  # noqa: E402
from start_support import signal_self as _signal_self  # noqa: E402
from start_support import wait_for_message as _wait_for_message  # noqa: E402
from start_support import with_stderr_to as _with_stderr_to  # noqa: E402


# --- exit codes ---------------------------------------------------------------

@pytest.mark.parametrize("target, args, expected", [
    (_return_value, (), 0),
    (_exit_with, (None,), 0),
    (_exit_with, (0,), 0),
    (_exit_with, (3,), 3),
    (_exit_with, (255,), 255),
    (_os_exit, (42,), 42),
    (_signal_self, (signal.SIGTERM,), -signal.SIGTERM),
    (_signal_self, (signal.SIGKILL,), -signal.SIGKILL),
    (_signal_self, (signal.SIGUSR1,), -signal.SIGUSR1),
])
def test_exit_codes(target, args, expected, start_method):
    p = gipc.start_process(target, args=args,
                           start_method=start_method)
    p.join(timeout=JOIN)
    assert p.exitcode == expected
    assert not p.is_alive()
    p.close()


def test_sys_exit_with_message_prints_it_and_exits_1(tmp_path, start_method):
    err = tmp_path / "stderr"
    p = gipc.start_process(_with_stderr_to,
                           args=(str(err), _exit_with, "goodbye, parent"),
                           start_method=start_method)
    p.join(timeout=JOIN)
    assert p.exitcode == 1
    assert err.read_text() == "goodbye, parent\n"
    p.close()


def test_uncaught_exception_prints_traceback_and_exits_1(tmp_path,
                                                         start_method):
    err = tmp_path / "stderr"
    p = gipc.start_process(_with_stderr_to, args=(str(err), _raise),
                           start_method=start_method)
    p.join(timeout=JOIN)
    assert p.exitcode == 1
    text = err.read_text()
    assert "Traceback (most recent call last)" in text
    assert "ValueError: boom in the child" in text
    assert "raise_error" in text
    p.close()


def test_child_never_returns_into_the_parent_stack(tmp_path):
    # If the child returned from start_process(), it would run the rest of
    # this test too and create the marker file.
    marker = tmp_path / "marker"
    parent = os.getpid()
    p = gipc.start_process(_return_value)
    if os.getpid() != parent:  # pragma: no cover - only a broken child
        marker.write_text("child came back")
        os._exit(0)
    p.join(timeout=JOIN)
    assert p.exitcode == 0
    assert not marker.exists()
    p.close()


# --- terminate / kill -------------------------------------------------------

@pytest.mark.parametrize("method, signum", [
    ("terminate", signal.SIGTERM), ("kill", signal.SIGKILL)])
def test_terminate_and_kill(method, signum, start_method):
    with gipc.pipe() as (r, w):
        p = gipc.start_process(_wait_for_message, args=(r,),
                               start_method=start_method)
        assert p.is_alive()
        getattr(p, method)()
        p.join(timeout=JOIN)
        assert p.exitcode == -signum
        assert not p.is_alive()
        # Signalling an exited (reaped) child is harmless.
        p.terminate()
        p.kill()
        assert p.exitcode == -signum
    p.close()


def test_terminate_after_exit_before_join_is_harmless(start_method):
    p = gipc.start_process(_exit_with, args=(4,),
                           start_method=start_method)
    _wait_exited(p)
    p.terminate()
    p.kill()
    p.join(timeout=JOIN)
    assert p.exitcode == 4
    p.close()


# --- join, is_alive ---------------------------------------------------------

def test_join_from_several_greenlets_with_and_without_timeout():
    with gipc.pipe() as (r, w):
        p = gipc.start_process(_wait_for_message, args=(r,))
        ticks = []
        ticker_stop = gevent.event.Event()

        def ticker():
            while not ticker_stop.is_set():
                ticks.append(1)
                ticker_stop.wait(0.005)

        t = gevent.spawn(ticker)
        # Joins with a short timeout all return None while the child runs,
        # and the hub keeps running meanwhile.
        short = [gevent.spawn(p.join, 0.05) for _ in range(5)]
        gevent.joinall(short, timeout=JOIN, raise_error=True)
        assert all(g.successful() for g in short)
        assert [g.value for g in short] == [None] * 5
        assert p.exitcode is None and p.is_alive()
        assert len(ticks) >= 2
        # Unbounded joins (and one bounded one) wait until the child exits.
        waiting = [gevent.spawn(p.join) for _ in range(5)]
        waiting.append(gevent.spawn(p.join, JOIN))
        gevent.sleep(0)
        assert not any(g.ready() for g in waiting)
        w.put("go")
        gevent.joinall(waiting, timeout=JOIN, raise_error=True)
        assert all(g.successful() for g in waiting)
        ticker_stop.set()
        t.join(timeout=JOIN)
    assert p.exitcode == 0
    p.close()


def test_join_timeout_zero_and_negative_do_not_wait():
    with gipc.pipe() as (r, w):
        p = gipc.start_process(_wait_for_message, args=(r,))
        assert p.join(0) is None
        assert p.join(-1) is None
        assert p.exitcode is None
        w.put(None)
        _finish(p)


def test_join_rejects_bad_timeout_types():
    with gipc.pipe() as (r, w):
        p = gipc.start_process(_wait_for_message, args=(r,))
        with pytest.raises(TypeError):
            p.join("1")
        w.put(None)
        _finish(p)


def test_is_alive_transitions(start_method):
    with gipc.pipe() as (r, w):
        p = gipc.start_process(_wait_for_message, args=(r,),
                               start_method=start_method)
        assert p.pid > 0 and p.pid != os.getpid()
        assert p.is_alive()
        assert p.exitcode is None
        w.put("go")
        _wait_exited(p)
        # Exited but not joined yet: is_alive() notices (and reaps).  On
        # the sentinel path, the sentinel reports EOF a moment before the
        # child becomes a zombie (the kernel closes its descriptors first),
        # and is_alive() waits for that only briefly: on a loaded machine
        # it may take a few calls.
        deadline = time.monotonic() + JOIN
        while p.is_alive():
            assert time.monotonic() < deadline, "is_alive() stayed True"
            gevent.sleep(0.001)
        assert p.exitcode == 0
        assert p.pid not in _children()
        p.join(timeout=JOIN)
        assert not p.is_alive()
    p.close()


def test_sentinel_is_readable_once_the_child_exited(start_method):
    with gipc.pipe() as (r, w):
        p = gipc.start_process(_wait_for_message, args=(r,),
                               start_method=start_method)
        assert isinstance(p.sentinel, int)
        ready, _, _ = gevent.select.select([p.sentinel], [], [], 0)
        assert ready == []
        w.put("go")
        _wait_exited(p)
    _finish(p)


def test_attributes():
    p = gipc.start_process(_return_value, name="worker-1", daemon=True)
    assert p.name == "worker-1"
    assert p.daemon is True
    assert isinstance(p, gipc._GProcess)
    assert isinstance(p, gipc.Process)
    _finish(p)
    q = gipc.start_process(_return_value)
    assert q.daemon is False
    assert q.name.startswith("_GProcess-")
    _finish(q)


# --- close ----------------------------------------------------------------

def test_close_while_running_raises_value_error():
    with gipc.pipe() as (r, w):
        p = gipc.start_process(_wait_for_message, args=(r,))
        with pytest.raises(ValueError, match="still running"):
            p.close()
        assert p.is_alive()  # still usable
        w.put("go")
        p.join(timeout=JOIN)
    assert p.exitcode == 0
    p.close()


def test_after_close_the_process_object_is_closed():
    p = gipc.start_process(_exit_with, args=(5,))
    p.join(timeout=JOIN)
    sentinel = p.sentinel
    p.close()
    # The pidfd is released.
    with pytest.raises(OSError):
        os.fstat(sentinel)
    for call in (p.is_alive, p.join, p.terminate, p.kill, p.start,
                 lambda: p.exitcode, lambda: p.pid, lambda: p.sentinel):
        with pytest.raises(ValueError, match="process object is closed"):
            call()
    p.close()  # closing twice is allowed, as in multiprocessing
    assert repr(p) == "<_GProcess(%s, closed)>" % p.name


def test_a_collected_process_object_releases_its_pidfd():
    p = gipc.start_process(_exit_with, args=(0,))
    p.join(timeout=JOIN)
    sentinel = p.sentinel
    os.fstat(sentinel)
    del p
    gc.collect()  # not needed in CPython (no cycle); harmless
    with pytest.raises(OSError):
        os.fstat(sentinel)


# --- repr -----------------------------------------------------------------

def test_repr_follows_gipc_1_8():
    with gipc.pipe() as (r, w):
        p = gipc.start_process(_wait_for_message, args=(r,), name="rp")
        assert repr(p) == "<_GProcess(rp, started)>"
        assert str(p) == repr(p)
        w.put("go")
        p.join(timeout=JOIN)
    assert repr(p) == "<_GProcess(rp, stopped)>"
    p.close()

    p = gipc.start_process(_exit_with, args=(1,), name="one", daemon=True)
    p.join(timeout=JOIN)
    assert repr(p) == "<_GProcess(one, stopped[1] daemon)>"
    p.close()

    with gipc.pipe() as (r, w):
        p = gipc.start_process(_wait_for_message, args=(r,), name="t")
        p.terminate()
        p.join(timeout=JOIN)
    assert repr(p) == "<_GProcess(t, stopped[SIGTERM])>"
    p.close()

    with gipc.pipe() as (r, w):
        p = gipc.start_process(_wait_for_message, args=(r,), name="d",
                               daemon=True)
        assert repr(p) == "<_GProcess(d, started daemon)>"
        p.kill()
        p.join(timeout=JOIN)
    assert repr(p) == "<_GProcess(d, stopped[SIGKILL] daemon)>"
    p.close()


# --- start() -------------------------------------------------------------

def test_second_start_is_harmless_and_warns():
    with gipc.pipe() as (r, w):
        p = gipc.start_process(_wait_for_message, args=(r,))
        before = _children()
        with pytest.warns(RuntimeWarning, match="start"):
            p.start()
        assert _children() == before
        w.put("go")
        p.join(timeout=JOIN)
        assert p.exitcode == 0
        # ... and after the child exited too.
        with pytest.warns(RuntimeWarning):
            p.start()
        assert _children() == before - {p.pid}
    p.close()


@pytest.mark.parametrize("kwargs, message", [
    (dict(args=[1]), "args"),
    (dict(args=None), "args"),
    (dict(kwargs=[("a", 1)]), "kwargs"),
    (dict(kwargs=None), "kwargs"),
])
def test_bad_args_or_kwargs_raise_type_error_before_fork(kwargs, message):
    before = _children()
    with pytest.raises(TypeError, match=message):
        gipc.start_process(_return_value, **kwargs)
    assert _children() == before


def test_args_and_kwargs_reach_the_target(start_method):
    with gipc.pipe() as (r, w):
        p = gipc.start_process(_report_args, args=(w, 1, "two"),
                               kwargs={"three": [3]},
                               start_method=start_method)
        assert r.get(timeout=JOIN) == ((1, "two"), {"three": [3]})
        _finish(p)


from start_support import report_args as _report_args  # noqa: E402


# --- where start_process() refuses to run ---------------------------------

def test_start_process_from_a_thread_raises():
    outcome = []

    def in_thread():
        try:
            gipc.start_process(_return_value)
        except BaseException as exc:  # noqa: BLE001 - recorded for asserts
            outcome.append(exc)
        else:  # pragma: no cover
            outcome.append(None)

    before = _children()
    t = threading.Thread(target=in_thread)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "threads running" warning either
        t.start()
        t.join(JOIN)
    assert not t.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], GIPCError)
    assert "main thread" in str(outcome[0])
    assert _children() == before


def test_start_process_from_the_hub_raises():
    result = gevent.event.AsyncResult()

    def in_hub():
        try:
            gipc.start_process(_return_value)
        except BaseException as exc:  # noqa: BLE001
            result.set(exc)
        else:  # pragma: no cover
            result.set(None)

    before = _children()
    gevent.get_hub().loop.run_callback(in_hub)
    exc = result.get(timeout=JOIN)
    assert isinstance(exc, GIPCError)
    assert "hub" in str(exc)
    assert _children() == before


def test_process_subclass_with_run():
    with gipc.pipe() as (r, w):
        p = _Squarer(w, 9)
        p.start()
        assert r.get(timeout=JOIN) == 81
        p.join(timeout=JOIN)
        assert p.exitcode == 0
        p.close()


class _Squarer(gipc.Process):
    def __init__(self, writer, n):
        super().__init__(args=(writer,))
        self.n = n

    def run(self):
        self._args[0].put(self.n ** 2)


@needs_pidfds
def test_reap_goes_by_pidfd_so_a_reused_pid_is_never_taken():
    from gipc import _core

    with gipc.pipe() as (r, w):
        p = gipc.start_process(_wait_for_message, args=(r,))
        pid, pidfd = p.pid, p.sentinel
        assert _core.reap(pid, pidfd) is None  # running
        w.put("go")
        _wait_exited(p)
        # A foreign reaper takes the status first.
        assert os.waitpid(pid, 0)[0] == pid
    # Another child of ours now stands where that pid might be reused: the
    # dead child's pidfd must not reap it.
    other = subprocess.Popen([sys.executable, "-c", "import sys; "
                              "sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        with pytest.raises(ChildProcessError):
            _core.reap(other.pid, pidfd)
        assert other.poll() is None
    finally:
        other.stdin.close()
        assert other.wait(JOIN) == 0
    with pytest.warns(RuntimeWarning, match="another reaper"):
        p.join(timeout=JOIN)
    assert p.exitcode == 255
    p.close()


@needs_pidfds
def test_reap_by_pidfd_reports_exit_codes_and_signals():
    from gipc import _core

    for target, args, expected in ((_exit_with, (9,), 9),
                                   (_signal_self, (signal.SIGTERM,), -15)):
        p = gipc.start_process(target, args=args)
        _wait_exited(p)
        assert _core.reap(p.pid, p.sentinel) == expected
        with pytest.raises(ChildProcessError):
            _core.reap(p.pid, p.sentinel)
        p._popen.returncode = expected  # reaped above, by hand
        p.close()


def test_a_start_keeps_no_other_child_alive():
    # The second start sees the first child as a sibling (its pidfd is
    # closed in the new child); the parent must not keep it for that.
    import weakref

    with gipc.pipe() as (r1, w1), gipc.pipe() as (r2, w2):
        p1 = gipc.start_process(_wait_for_message, args=(r1,))
        p2 = gipc.start_process(_wait_for_message, args=(r2,))
        w1.put("go")
        p1.join(timeout=JOIN)
        sentinel = p1.sentinel
        popen = weakref.ref(p1._popen)
        del p1
        assert popen() is None
        with pytest.raises(OSError):
            os.fstat(sentinel)
        w2.put("go")
    _finish(p2)
