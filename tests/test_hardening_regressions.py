"""Regressions of the review fixed in 0b8c072.  Each test failed before it:

* a signal whose handler raises as soon as the fork helper returns made
  start_process() lose the child (left running, its pidfd open);
* a put() interrupted right after the first write of a frame left the
  writer usable although a part of the frame was in the pipe: the next
  put() started a frame in the middle of the old payload;
* a bytearray could be resized while put() waited for room for the rest of
  it;
* leaving a ``with`` block on a duplex handle whose writer was busy left
  the reader open (gipc 1.8 closes it anyway).
"""
import _thread
import functools
import itertools
import os
import select
import signal
import sys
import threading
import time

import gevent
import pytest

import gipc
from gipc import GIPCClosed, GIPCLocked, GIPCProtocolError
from support import children

JOIN = 10


class Boom(Exception):
    """Raised by the test's signal handlers."""


def _open_fds():
    return set(os.listdir("/proc/self/fd"))


# --- 1. a raising signal handler at the end of the fork helper -------------

#: register_at_fork() hooks cannot be removed: this one does nothing
#: (_thread.interrupt_main() of a signal Python does not handle) unless a
#: test arms it with SIGUSR1.  It is C code only (next() over starmap()
#: calling interrupt_main with the list's item), so no Python code runs
#: between the signal being tripped and the end of the fork helper: the
#: handler runs, and raises, as soon as the helper returns.  (A Python hook
#: would run the handler inside itself, where CPython swallows the
#: exception; so would signal.pthread_kill or os.kill, which check for
#: signals before they return.)
_KILL_AFTER_FORK = [signal.SIGKILL]

os.register_at_fork(after_in_parent=functools.partial(
    next, itertools.starmap(_thread.interrupt_main,
                            itertools.repeat(_KILL_AFTER_FORK))))


def _raise_boom(signum, frame):
    raise Boom()


def _return_at_once():
    pass


def test_raising_signal_handler_right_after_the_fork_helper_leaves_no_child():
    gevent.get_hub()
    # A shared object installs gipc's at-fork hooks for them: none may be a
    # Python after_in_parent hook, which would run the handler inside
    # itself, where CPython swallows Boom.
    gipc.Lock().close()
    children_before = children()
    fds_before = _open_fds()
    started = []
    previous = signal.signal(signal.SIGUSR1, _raise_boom)
    try:
        _KILL_AFTER_FORK[0] = signal.SIGUSR1
        with pytest.raises(Boom):
            started.append(gipc.start_process(_return_at_once))
    finally:
        _KILL_AFTER_FORK[0] = signal.SIGKILL
        signal.signal(signal.SIGUSR1, previous)
        for process in started:  # only if the test failed
            process.join(timeout=JOIN)
            process.close()
    # The child was killed and reaped, its pidfd closed, before Boom left
    # start_process().
    assert children() == children_before
    assert _open_fds() == fds_before


# --- 2. a raising signal handler in the middle of a large put() -----------

def _drain(fd, when, armed, stop, state, deadline):
    """Read the pipe `fd` until `stop` is set and it is empty (or EOF, or
    `deadline`), counting the bytes in state["got"] under state["lock"].
    Sends SIGUSR1 to this process once, `when`:

    * "entering": as soon as put() releases the GIL after `armed` became
      true, i.e. while its first write call is in the kernel;
    * "first bytes": as soon as the pipe shows data, polling without a
      pause, i.e. while that first write call returns;
    * "after 1 MiB": once more than 1 MiB arrived, i.e. while put() waits
      for room.
    """
    if when == "entering":
        while not armed and time.monotonic() < deadline:
            time.sleep(0)  # let the GIL go; take it back when put() drops it
        os.kill(os.getpid(), signal.SIGUSR1)
    elif when == "first bytes":
        while time.monotonic() < deadline:
            if select.select([fd], [], [], 0)[0]:
                break
        os.kill(os.getpid(), signal.SIGUSR1)
    sent = when != "after 1 MiB"
    while time.monotonic() < deadline:
        select.select([fd], [], [], 0.05)
        with state["lock"]:
            try:
                data = os.read(fd, 1 << 20)
            except BlockingIOError:
                if stop.is_set():
                    return
                continue
            if not data:
                return
            state["got"] += len(data)
        if not sent and state["got"] > 1 << 20:
            sent = True
            os.kill(os.getpid(), signal.SIGUSR1)


def test_put_interrupted_by_a_signal_always_breaks_the_writer():
    """Whenever a put() of a large frame raises after a part of the frame
    went out, the writer refuses the next put() (GIPCProtocolError): a new
    frame must never start in the middle of the old payload.  Before
    0b8c072 a signal handled right after put()'s first write call went
    unnoticed."""
    armed = []

    def handler(signum, frame):
        if armed:
            raise Boom()

    payload = b"x" * (64 << 20)
    whens = ["entering", "first bytes", "after 1 MiB"]
    interrupted = 0
    switch_interval = sys.getswitchinterval()
    previous = signal.signal(signal.SIGUSR1, handler)
    # No forced GIL switches: the "entering" drain then gets the GIL only
    # when put() lets it go for its first write.
    sys.setswitchinterval(5.0)
    try:
        for trial in range(15):
            when = whens[trial % len(whens)]
            r, w = gipc.pipe(encoder=None, decoder=None, pipe_size=1 << 20)
            stop = threading.Event()
            state = {"lock": threading.Lock(), "got": 0}
            drain = threading.Thread(
                target=_drain,
                args=(r.fileno(), when, armed, stop, state,
                      time.monotonic() + 30))
            drain.start()
            try:
                armed.append(True)
                try:
                    w.put(payload)
                    raised = False
                except Boom:
                    raised = True
                finally:
                    del armed[:]
                if not raised:
                    continue
                assert state["lock"].acquire(timeout=JOIN)
                try:
                    left = (state["got"] > 0
                            or select.select([r.fileno()], [], [], 0)[0])
                finally:
                    state["lock"].release()
                if not left:
                    continue  # interrupted before its first byte: harmless
                interrupted += 1
                # The drain still runs: a put that is wrongly accepted
                # completes.
                with gevent.Timeout(JOIN):
                    with pytest.raises(GIPCProtocolError):
                        w.put(b"next")
            finally:
                stop.set()
                drain.join(JOIN)
                assert not drain.is_alive()
                w.close()
                r.close()
    finally:
        sys.setswitchinterval(switch_interval)
        signal.signal(signal.SIGUSR1, previous)
    assert interrupted > 0, "no put() was interrupted: the test proved nothing"


# --- 3. resizing a bytearray while put() sends it --------------------------

def test_bytearray_cannot_be_resized_while_put_sends_it():
    original = bytes(range(256)) * (16 << 10)  # 4 MiB, more than a pipe
    buf = bytearray(original)
    r, w = gipc.pipe(encoder=None, decoder=None)
    sender = gevent.spawn(w.put, buf)
    try:
        gevent.sleep(0)  # put() fills the pipe and waits for room
        assert not sender.ready()

        def resize():
            try:
                del buf[100_000:]
            except BufferError as exc:
                return exc
            return None

        resizer = gevent.spawn(resize)
        resizer.join(timeout=JOIN)
        assert resizer.successful()
        assert isinstance(resizer.value, BufferError)
        assert r.get(timeout=JOIN) == original
        sender.join(timeout=JOIN)
        assert sender.successful()
        assert bytes(buf) == original
        # The stream is still in sync.
        w.put(b"next")
        assert r.get(timeout=JOIN) == b"next"
    finally:
        sender.kill(block=True, timeout=JOIN)
        w.close()
        r.close()


# --- 4. leaving `with` on a duplex handle with a busy writer ---------------

def test_duplex_with_exit_closes_the_reader_although_the_writer_is_locked():
    a, b = gipc.pipe(duplex=True, encoder=None, decoder=None)
    message = b"m" * (4 << 20)  # more than a pipe: put() waits for room
    sender = gevent.spawn(a.put, message)
    try:
        gevent.sleep(0)
        assert not sender.ready()
        with pytest.raises(GIPCLocked):
            with a:
                pass
        # As in gipc 1.8: the writer could not be closed, the reader was.
        assert a._reader.closed
        with pytest.raises(GIPCClosed):
            a.poll()
        assert not a._writer.closed
        # The writer and its put() were not disturbed.
        assert b.get(timeout=JOIN) == message
        sender.join(timeout=JOIN)
        assert sender.successful()
    finally:
        sender.kill(block=True, timeout=JOIN)
        for handle in (a._reader, a._writer, b._reader, b._writer):
            if not handle.closed:
                handle.close()


def test_start_in_a_process_forked_without_cpythons_hooks():
    # A process forked by C code (here libc's fork() through ctypes) never
    # ran CPython's after-fork hooks: gipc must not trust a pid cached by
    # them to decide who is the parent.
    from support import run_script

    done = run_script("""
        import ctypes, os, sys
        import gevent
        import gipc

        def noop():
            pass

        pid = ctypes.CDLL(None).fork()
        if pid == 0:
            code = 3
            try:
                p = gipc.start_process(noop)
                p.join(10)
                code = p.exitcode
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0", done.stderr


def test_close_under_patch_all_releases_descriptors_at_once():
    # gevent 25.8.1+'s patched os.close defers the close of a pipe to the
    # loop's next check phase; gipc must not: a worker waits for EOF on its
    # pipe, and an idle loop reaches that phase only at its next event.
    from support import run_script
    done = run_script("""
        from gevent import monkey
        monkey.patch_all()
        import os
        import gevent, gipc
        gevent.sleep(0)  # the hub exists: gevent's close would defer
        r, w = gipc.pipe()
        fds = (r.fileno(), w.fileno())
        w.close()
        r.close()
        a, b = gipc.Pipe()
        fds += (a.fileno(), b.fileno())
        a.close()
        b.close()
        still_open = []
        for fd in fds:
            try:
                os.fstat(fd)
                still_open.append(fd)
            except OSError:
                pass
        print(still_open)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_patch_all_children_start_from_any_greenlet_without_a_warning():
    # Under patch_all, threading.current_thread() in a spawned greenlet is
    # a dummy thread, and every threading.Thread is a greenlet: neither
    # means another OS thread.  (A pool under patch_all replaces its
    # workers from its reader greenlets.)
    from support import run_script
    done = run_script("""
        import warnings
        warnings.simplefilter("error")
        from gevent import monkey
        monkey.patch_all()
        import threading
        import gevent, gipc

        def child():
            pass

        def start():
            p = gipc.start_process(child)
            p.join(10)
            return p.exitcode

        sleeper = threading.Thread(target=gevent.sleep, args=(0.2,))
        sleeper.start()
        print(gevent.spawn(start).get(timeout=10), start())
        sleeper.join()
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0 0"
