"""The world a child starts in: no greenlet of the parent runs there,
signals are back at their defaults, gevent's threadpool and resolver work,
stdio is flushed once, daemon rules hold."""
import os
import signal
import subprocess
import sys
import textwrap
import threading

import gevent
import gevent.event
import gevent.lock
import gevent.select
import gevent.socket
import pytest

import gipc
from gipc import GIPCError
from gipc.signals import _signals_to_reset
from support import finish as _finish
from support import run_script as _run_script
from support import SCRIPT_CWD, script_env

JOIN = 10


def _spin_the_loop():
    """Let the child's hub run several loop iterations (callbacks, zero
    timers, ready I/O): anything scheduled would run by then."""
    for _ in range(3):
        gevent.sleep(0)
        gevent.idle()
        gevent.sleep(0.001)


# --- no parent greenlet in the child ---------------------------------------

_ran = []


def _record(tag):
    _ran.append((tag, os.getpid()))


def _child_runs_its_loop(writer, wfd):
    os.write(wfd, b"!")  # makes the parent's I/O-waiting greenlet "ready"
    _spin_the_loop()
    writer.put([entry for entry in _ran if entry[1] == os.getpid()])


def test_no_parent_greenlet_runs_in_the_child():
    del _ran[:]
    rfd, wfd = os.pipe()
    event = gevent.event.Event()

    def on_event():
        event.wait()
        _record("event")

    def on_io():
        gevent.select.select([rfd], [], [], JOIN)
        _record("io")

    waiting = [gevent.spawn(on_event), gevent.spawn(on_io)]
    gevent.sleep(0)  # both are now blocked on the parent's hub
    pending = [gevent.spawn(_record, "pending"),           # next callback
               gevent.spawn_later(0, _record, "timer")]    # next timer
    r, w = gipc.pipe()
    try:
        p = gipc.start_process(_child_runs_its_loop, args=(w, wfd))
        assert r.get(timeout=JOIN) == []
        _finish(p)
        event.set()
        gevent.joinall(waiting + pending, timeout=JOIN, raise_error=True)
        assert sorted(tag for tag, _ in _ran) == [
            "event", "io", "pending", "timer"]
        assert {pid for _, pid in _ran} == {os.getpid()}
    finally:
        gevent.killall(waiting + pending)
        r.close()
        os.close(rfd)
        os.close(wfd)
        del _ran[:]


def _wait_on_parent_objects(writer, event, greenlet_):
    outcomes = []
    for wait in (lambda: event.wait(JOIN), lambda: greenlet_.join(JOIN)):
        try:
            wait()
        except GIPCError as exc:
            outcomes.append("GIPCError: " + str(exc))
        else:
            outcomes.append("returned")
    writer.put(outcomes)


def test_waiting_in_the_child_on_a_parent_gevent_object_raises():
    # Waiting on an object bound to the parent's hub would switch into that
    # hub (and resume the parent's greenlets, or crash on its destroyed
    # loop): it raises a clear error instead.
    event = gevent.event.Event()
    g = gevent.spawn(event.wait)
    gevent.sleep(0)
    r, w = gipc.pipe()
    try:
        p = gipc.start_process(_wait_on_parent_objects, args=(w, event, g))
        outcomes = r.get(timeout=JOIN)
        _finish(p)
        assert len(outcomes) == 2
        for outcome in outcomes:
            assert outcome.startswith("GIPCError: ")
            assert "parent" in outcome
    finally:
        event.set()
        g.join(timeout=JOIN)
        r.close()


def _use_fresh_primitives(writer):
    event = gevent.event.Event()
    lock = gevent.lock.Semaphore()
    gevent.spawn_later(0.001, event.set)
    with lock:
        got = event.wait(JOIN)
    g = gevent.spawn(lambda: 6 * 7)
    writer.put((got, g.get(timeout=JOIN)))


def test_gevent_primitives_created_in_the_child_work():
    r, w = gipc.pipe()
    p = gipc.start_process(_use_fresh_primitives, args=(w,))
    assert r.get(timeout=JOIN) == (True, 42)
    _finish(p)
    r.close()


# --- signals ---------------------------------------------------------------

def _proc_status():
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("SigCgt", "SigIgn", "SigBlk"):
                fields[key] = int(value.strip(), 16)
    return fields


def _report_signals(writer):
    gevent.sleep(0.001)  # the fresh hub is up and running
    handlers = {int(s): signal.getsignal(s) for s in _signals_to_reset}
    handlers = {s: (h if h in (signal.SIG_DFL, signal.SIG_IGN, None)
                    else repr(h)) for s, h in handlers.items()}
    writer.put((handlers, signal.getsignal(signal.SIGPIPE), _proc_status(),
                signal.set_wakeup_fd(-1)))


def _handler(signum, frame):  # pragma: no cover - never delivered
    pass


def test_signal_dispositions_in_the_child():
    changed = {signal.SIGUSR1: _handler, signal.SIGUSR2: signal.SIG_IGN,
               signal.SIGHUP: _handler, signal.SIGTERM: _handler,
               signal.SIGQUIT: signal.SIG_IGN, signal.SIGCHLD: _handler,
               signal.SIGRTMIN + 3: _handler,  # unnamed real-time signal
               signal.SIGRTMIN + 4: signal.SIG_IGN}
    saved = {s: signal.signal(s, h) for s, h in changed.items()}
    watcher = gevent.signal_handler(signal.SIGALRM, _handler, None, None)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK)
    old_wakeup = signal.set_wakeup_fd(wake_w)
    r, w = gipc.pipe()
    try:
        parent_status = _proc_status()
        assert parent_status["SigCgt"] & (1 << (signal.SIGUSR1 - 1))
        assert parent_status["SigIgn"] & (1 << (signal.SIGUSR2 - 1))
        p = gipc.start_process(_report_signals, args=(w,))
        handlers, sigpipe, status, wakeup = r.get(timeout=JOIN)
        _finish(p)
    finally:
        signal.set_wakeup_fd(old_wakeup)
        watcher.cancel()
        for s, h in saved.items():
            signal.signal(s, h)
        os.close(wake_r)
        os.close(wake_w)
        r.close()
    # Python's view: every reset signal at its default, SIGPIPE ignored.
    assert signal.SIGINT in handlers and signal.SIGUSR1 in handlers
    assert signal.SIGPIPE not in handlers
    assert signal.SIGKILL not in handlers and signal.SIGSTOP not in handlers
    not_default = {s: h for s, h in handlers.items() if h != signal.SIG_DFL}
    assert not_default == {}
    assert sigpipe == signal.SIG_IGN
    assert signal.SIGRTMIN + 3 in handlers
    # The kernel's view: nothing caught, only SIGPIPE ignored, same mask.
    # (Signals glibc reserves for itself, outside valid_signals(), keep
    # glibc's handlers.)
    usable = 0
    for s in signal.valid_signals():
        usable |= 1 << (s - 1)
    assert status["SigCgt"] & usable == 0, hex(status["SigCgt"])
    assert status["SigIgn"] & usable == 1 << (signal.SIGPIPE - 1), \
        hex(status["SigIgn"])
    assert status["SigBlk"] == parent_status["SigBlk"]
    # The parent's wake-up fd was dropped.
    assert wakeup == -1


def _report_sigchld_caught(writer):
    gevent.sleep(0.001)  # the fresh hub and loop are up
    writer.put(bool(_proc_status()["SigCgt"] & (1 << (signal.SIGCHLD - 1))))


def test_fresh_loop_in_the_child_does_not_catch_sigchld():
    # libev's default loop installs a SIGCHLD handler reaping every child
    # with waitpid(-1); in the child it would steal the exit statuses of
    # the child's own children.
    assert signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL
    r, w = gipc.pipe()
    p = gipc.start_process(_report_sigchld_caught, args=(w,))
    assert r.get(timeout=JOIN) is False
    _finish(p)
    r.close()


def test_signals_to_reset_matches_gipc_1_8_rule():
    import gipc.gipc
    assert gipc.gipc._signals_to_reset is _signals_to_reset
    assert signal.SIGINT in _signals_to_reset
    assert signal.SIGTERM in _signals_to_reset
    assert signal.SIGCHLD in _signals_to_reset
    assert signal.SIGRTMIN + 1 in _signals_to_reset
    assert set(_signals_to_reset) == set(signal.valid_signals()) - {
        signal.SIGKILL, signal.SIGSTOP, signal.SIGPIPE}
    for excluded in (signal.SIGKILL, signal.SIGSTOP, signal.SIGPIPE):
        assert excluded not in _signals_to_reset


def _sigterm_default(writer):
    writer.put("ready")
    gevent.sleep(JOIN * 3)


def test_parent_sigterm_handler_does_not_protect_the_child():
    saved = signal.signal(signal.SIGTERM, _handler)
    r, w = gipc.pipe()
    try:
        p = gipc.start_process(_sigterm_default, args=(w,))
        assert r.get(timeout=JOIN) == "ready"
        p.terminate()
        _finish(p, code=-signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, saved)
        r.close()


# --- threadpool and resolver ------------------------------------------------

def _use_threadpool_and_resolver(writer, generations=1):
    pool = gevent.get_hub().threadpool
    in_thread = pool.spawn(
        lambda: (os.getpid(), threading.get_ident())).get(timeout=JOIN)
    infos = gevent.socket.getaddrinfo("localhost", 80)
    writer.put((os.getpid(), threading.get_ident(), in_thread,
                sorted({info[4][0] for info in infos})))
    if generations > 1:
        # A grandchild inherits a threadpool and a resolver that were used.
        child = gipc.start_process(_use_threadpool_and_resolver,
                                   args=(writer, generations - 1))
        child.join(timeout=JOIN)
        code = child.exitcode
        child.close()
        if code != 0:
            os._exit(3)


def test_threadpool_and_resolver_work_in_the_child():
    # The test process's threadpool was used (conftest), so its state is
    # inherited; the grandchild inherits a used resolver too.
    r, w = gipc.pipe()
    p = gipc.start_process(_use_threadpool_and_resolver, args=(w, 2))
    child_pid = p.pid
    reports = [r.get(timeout=JOIN), r.get(timeout=JOIN)]
    _finish(p)
    r.close()
    assert reports[0][0] == child_pid
    assert reports[1][0] not in (child_pid, os.getpid())
    for pid, main_ident, (thread_pid, thread_ident), addresses in reports:
        assert thread_pid == pid
        assert thread_ident != main_ident
        assert set(addresses) & {"127.0.0.1", "::1"}


# --- stdio ----------------------------------------------------------------

def test_stdout_and_stderr_flushed_once():
    result = _run_script("""
        import sys, gipc
        def child():
            sys.stdout.write("child-out")
            sys.stderr.write("child-err")
        sys.stdout.write("parent-out-before;")
        sys.stderr.write("parent-err-before;")
        p = gipc.start_process(child)
        p.join(10)
        sys.stdout.write(";exit=%s" % p.exitcode)
        p.close()
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("parent-out-before") == 1
    assert result.stderr.count("parent-err-before") == 1
    assert result.stdout.count("child-out") == 1
    assert result.stderr.count("child-err") == 1
    assert result.stdout.endswith(";exit=0")


# --- daemons --------------------------------------------------------------

def test_daemon_child_is_terminated_at_parent_exit_and_has_no_children():
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import sys, gevent, gipc
            def grandchild():
                pass
            def daemon(w):
                try:
                    gipc.start_process(grandchild)
                except BaseException as exc:
                    w.put((type(exc).__name__, str(exc)))
                else:
                    w.put(("started", ""))
                gevent.sleep(600)
            r, w = gipc.pipe()
            p = gipc.start_process(daemon, args=(w,), daemon=True)
            print(p.pid, *r.get(timeout=10), sep="|", flush=True)
            sys.stdin.readline()  # the test holds a pidfd on the daemon now
            r.close()
        """)],
        env=script_env(), cwd=SCRIPT_CWD, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pidfd = None
    try:
        ready, _, _ = gevent.select.select([proc.stdout], [], [], JOIN)
        assert ready
        line = proc.stdout.readline().strip()
        pid, kind, message = line.split("|")
        pidfd = os.pidfd_open(int(pid))
        assert kind == "AssertionError"
        assert "daemonic processes are not allowed to have children" \
            in message
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=JOIN) == 0
        # The daemon (sleeping for 600 s) is gone with its parent.
        ready, _, _ = gevent.select.select([pidfd], [], [], JOIN)
        assert ready, "daemon child outlived its parent"
        out, err = proc.communicate(timeout=JOIN)
        assert err == ""
    finally:
        if pidfd is not None:
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.close(pidfd)
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=JOIN)


def _start_grandchild(writer):
    gc = gipc.start_process(os.getpid)
    gc.join(timeout=JOIN)
    writer.put(gc.exitcode)
    gc.close()


def test_non_daemon_child_may_have_children():
    r, w = gipc.pipe()
    p = gipc.start_process(_start_grandchild, args=(w,))
    assert r.get(timeout=JOIN) == 0
    _finish(p)
    r.close()


@pytest.mark.parametrize("daemon", [True, False])
def test_parent_process_is_visible_in_child(daemon):
    r, w = gipc.pipe()
    p = gipc.start_process(_report_parent, args=(w,), daemon=daemon)
    assert r.get(timeout=JOIN) == (os.getpid(), True, daemon)
    _finish(p)
    r.close()


def _report_parent(writer):
    import multiprocessing
    parent = multiprocessing.parent_process()
    writer.put((parent.pid, parent.is_alive(),
                multiprocessing.current_process().daemon))


def test_child_stdin_is_dev_null_as_in_multiprocessing():
    # As multiprocessing: sys.stdin reads /dev/null (EOF) in the child, file
    # descriptor 0 is left as it is, and the parent's stdin stays usable.
    result = _run_script("""
        import os, sys
        import gipc

        def child(w):
            w.put((sys.stdin.read(), os.readlink("/proc/self/fd/0")))

        r, w = gipc.pipe()
        p = gipc.start_process(child, args=(w,))
        stdin_data, fd0 = r.get(timeout=10)
        print(repr(stdin_data), fd0 == os.readlink("/proc/self/fd/0"))
        p.join(timeout=10)
        print(p.exitcode, sys.stdin.readline().strip())
        r.close()
        """, input="parent-data\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "'' True"
    assert lines[1] == "0 parent-data"


def test_parent_process_is_alive_in_child():
    def child(w):
        parent = gipc.parent_process()
        w.put((parent.pid, parent.is_alive()))

    r, w = gipc.pipe()
    with r:
        p = gipc.start_process(child, args=(w,))
        assert r.get(timeout=JOIN) == (os.getpid(), True)
        _finish(p)


def test_parent_process_is_not_alive_once_the_parent_died():
    """A grandchild whose parent is killed sees parent_process().is_alive()
    turn False (README: multiprocessing's own parent_process()).  In a
    subprocess that is a child subreaper, so that the orphaned grandchild
    is reparented to it and reaped there, not left to init."""
    result = _run_script("""
        import ctypes, os, signal, time
        import gipc

        PR_SET_CHILD_SUBREAPER = 36
        assert ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0

        def grandchild(w):
            parent = gipc.parent_process()
            w.put((parent.pid, parent.is_alive()))
            parent.join(10)  # returns once the parent is gone (bounded)
            w.put(parent.is_alive())

        def child(w):
            gipc.start_process(grandchild, args=(w,))
            time.sleep(60)  # killed before

        r, w = gipc.pipe()
        a = gipc.start_process(child, args=(w,))
        parent_pid, alive_before = r.get(timeout=10)
        a.kill()
        a.join(10)
        killed = a.exitcode == -signal.SIGKILL
        alive_after = r.get(timeout=10)
        # The orphan, now this subreaper's child: reap it (bounded).
        deadline = time.monotonic() + 10
        while True:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        print(parent_pid == a.pid, alive_before, killed, alive_after,
              pid != 0 and os.waitstatus_to_exitcode(status))
        a.close()
        r.close()
        """, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "True", "False", "0"], \
        result.stdout + result.stderr


def _stdin_identity(w):
    w.put((sys.stdin.read(), os.path.realpath(
        "/proc/self/fd/%d" % sys.stdin.fileno())))


def _start_and_read_stdin_identity():
    with gipc.pipe() as (r, w):
        p = gipc.start_process(_stdin_identity, args=(w,))
        result = r.get(timeout=JOIN)
    _finish(p)
    return result


def test_children_share_one_dev_null_file_kept_by_the_parent():
    from gipc import _devnull

    devnull = _devnull.shared_devnull()
    assert _devnull.shared_devnull() is devnull
    assert _start_and_read_stdin_identity() == ("", os.devnull)
    assert _devnull.shared_devnull() is devnull
    assert not devnull.closed


def test_dev_null_file_is_renewed_if_the_program_closed_it():
    from gipc import _devnull

    devnull = _devnull.shared_devnull()
    fd = devnull.fileno()
    # A closed file object is rebuilt on the same descriptor (it never owned
    # it, as multiprocessing's does not).
    devnull.close()
    assert _start_and_read_stdin_identity() == ("", os.devnull)
    rebuilt = _devnull.shared_devnull()
    assert rebuilt is not devnull and rebuilt.fileno() == fd
    # The program closed the descriptor and its number now names another
    # file: children must not get that file as stdin, and gipc must not
    # close it.
    r, w = os.pipe()
    os.dup2(r, fd)
    os.close(r)
    try:
        assert _start_and_read_stdin_identity() == ("", os.devnull)
        fresh = _devnull.shared_devnull()
        assert fresh.fileno() != fd
        os.fstat(fd)  # still open: not gipc's to close
    finally:
        os.close(w)
        os.close(fd)
        os.close(_devnull._devnull_fd)
        _devnull._devnull_fd = -1
        # Reopened at the lowest free number: the one the leak check saw.
        assert _devnull.shared_devnull().fileno() == fd
