"""Hardening (issue 5): malformed streams not covered by test_pipe_errors.py,
peers dying (child killed mid-put of a 512 MiB frame, child killed mid-get,
parent killed under its children) and resources running out (no
descriptors left, fork failing).  Each case must end in a clear Python
exception, within a bounded time, leaving nothing open."""
import errno
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import textwrap
import time

import gevent
import pytest

import gipc
from gipc import GIPCProtocolError, _core, _popen_base
from support import hand_write as _hand_write
from support import end as _finish
from support import SCRIPT_CWD, script_env

WAIT = 30


def _fds():
    return set(os.listdir("/proc/self/fd"))


def _until(condition, timeout=WAIT, what="condition"):
    """Wait cooperatively (bounded) until condition() is true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for %s" % what)
        gevent.sleep(0.005)


# --------------------------------------------------- malformed streams


@pytest.mark.parametrize("garbage", [
    b"",                      # empty payload
    b"not a pickle at all",   # text
    b"\x80\x05",              # protocol header only
    b"\x80\x05\x95\xff\xff\xff\xff\xff\xff\xff\x7f",  # absurd frame length
    bytes(range(256)),        # every byte value
])
def test_garbage_payload_raises_decoder_error_and_stream_stays_in_sync(garbage):
    """A well-framed payload that is not a pickle: the decoder's own error
    reaches the caller unchanged (not a GIPCError: the framing is fine) and
    the next message is delivered intact."""
    with pytest.raises((pickle.UnpicklingError, EOFError)) as expected:
        pickle.loads(garbage)
    with gipc.pipe(encoder=None) as (r, w):
        w.put(garbage)
        w.put(pickle.dumps(("next", 1)))
        with pytest.raises(type(expected.value)) as info:
            r.get(timeout=WAIT)
        assert type(info.value) is type(expected.value)
        assert str(info.value) == str(expected.value)
        assert r.get(timeout=WAIT) == ("next", 1)
        assert not r.poll()


def test_valid_pickle_of_a_huge_object_over_max_message_size():
    """A perfectly valid pickle that is larger than the reader accepts is
    refused from its header alone, before its payload is read: EMSGSIZE,
    and the reader stays broken naming the size."""
    huge = list(range(300_000))  # ~1.5 MB pickled
    data = pickle.dumps(huge, protocol=pickle.HIGHEST_PROTOCOL)
    limit = 1024 * 1024
    assert len(data) > limit
    with gipc.pipe(max_message_size=limit) as (r, w):
        sender = gevent.spawn(w.put, huge)
        try:
            with pytest.raises(GIPCProtocolError) as info:
                r.get(timeout=WAIT)
            assert info.value.errno == errno.EMSGSIZE
            assert str(len(data)) in str(info.value)
            # Nothing but the header was taken from the pipe.
            assert r._core.buffered <= 64 * 1024
            with pytest.raises(GIPCProtocolError, match="max_message_size"):
                r.get(timeout=WAIT)
            assert not sender.ready()  # the writer still waits: pipe full
        finally:
            sender.kill(block=True, timeout=WAIT)
    # The writer was interrupted mid-frame by the kill: the pair is closed
    # all the same by the context manager (checked by the leak fixture).


def test_valid_pickle_at_exactly_max_message_size_is_accepted():
    obj = b"z" * 5000
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    with gipc.pipe(max_message_size=len(data)) as (r, w):
        w.put(obj)
        assert r.get(timeout=WAIT) == obj
    with gipc.pipe(max_message_size=len(data) - 1) as (r, w):
        w.put(obj)
        with pytest.raises(GIPCProtocolError):
            r.get(timeout=WAIT)


# ------------------------------------------------------- peer death


MIB = 1024 * 1024


def _put_huge(ready, w, size):
    payload = b"x" * size
    ready.put("writing")
    w.put(payload)
    ready.put("done")  # not reached: killed first


def test_child_sigkilled_mid_put_of_512_mib_frame_reader_raises():
    """The parent reads a 512 MiB frame while the child writes it; the child
    is SIGKILLed half-way.  The reader raises GIPCProtocolError at once
    instead of waiting for the rest for ever."""
    size = 512 * MIB
    with gipc.pipe() as (sr, sw), \
            gipc.pipe(encoder=None, decoder=None) as (r, w):
        p = gipc.start_process(_put_huge, args=(sw, w, size))
        try:
            assert sr.get(timeout=WAIT) == "writing"
            reading = gevent.spawn(r.get)
            _until(lambda: r._core.buffered >= 16 * MIB, what="16 MiB received")
            assert not reading.ready()
            assert r._core.buffered < size
            p.kill()
            reading.join(timeout=WAIT)
            assert reading.ready(), "reader hangs after the writer died"
            exc = reading.exception
            assert isinstance(exc, GIPCProtocolError), repr(exc)
            assert exc.errno == errno.EPROTO
            assert "middle of a message" in str(exc)
            with pytest.raises(GIPCProtocolError, match="middle of a message"):
                r.get(timeout=WAIT)
        finally:
            code = _finish(p)
    assert code == -signal.SIGKILL


def _get_once(ready, r):
    ready.put("getting")
    r.get()


def _unread(fd):
    import fcntl
    import termios
    buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return struct.unpack("i", buf)[0]


def test_child_killed_mid_get_parent_put_gets_broken_pipe():
    """The child is inside get() with part of a frame received when it is
    killed: the parent's next put() raises BrokenPipeError (no hang), and a
    put() the parent had blocked on a full pipe fails the same way."""
    with gipc.pipe() as (sr, sw):
        r, w = gipc.pipe(encoder=None, decoder=None)
        p = gipc.start_process(_get_once, args=(sw, r))
        try:
            assert sr.get(timeout=WAIT) == "getting"
            _hand_write(w, struct.pack(">i", MIB) + b"h" * 1000)
            # The child has taken the partial frame in: it is mid-get.
            _until(lambda: _unread(w.fileno()) == 0, what="child reading")
            assert p.is_alive()
            p.kill()
            p.join(timeout=WAIT)
            assert p.exitcode == -signal.SIGKILL
            with pytest.raises(BrokenPipeError):
                w.put(b"anyone?")
            # Not broken by that: no byte went out.
            with pytest.raises(BrokenPipeError):
                w.put(b"still nobody")
        finally:
            _finish(p)
            w.close()


def _wait_forever(ready, r, unused_reader):
    ready.put("idle")
    r.get()


def test_parent_put_blocked_on_full_pipe_raises_when_child_killed():
    with gipc.pipe() as (sr, sw), gipc.pipe() as (block_r, block_w):
        r, w = gipc.pipe(encoder=None, decoder=None)
        # The child holds the data pipe's read end but never reads it.
        p = gipc.start_process(_wait_forever, args=(sw, block_r, r))
        try:
            assert sr.get(timeout=WAIT) == "idle"
            putter = gevent.spawn(w.put, b"p" * (4 * MIB))
            gevent.sleep(0)
            assert not putter.ready()  # pipe full, frame half written
            p.kill()
            putter.join(timeout=WAIT)
            assert putter.ready(), "put() hangs after the reader died"
            assert isinstance(putter.exception, BrokenPipeError)
            with pytest.raises(GIPCProtocolError, match="interrupted"):
                w.put(b"more")
        finally:
            code = _finish(p)
            w.close()
    assert code == -signal.SIGKILL


_ORPHANS_SCRIPT = textwrap.dedent("""
    import os, sys
    import gipc

    def reader(r, ready):
        ready.put(os.getpid())
        try:
            while True:
                r.get()
        except EOFError:
            os._exit(0)

    def writer(w, ready):
        ready.put(os.getpid())
        try:
            while True:
                w.put(b"x" * 65536)
        except BrokenPipeError:
            os._exit(0)

    pids = []
    keep = []
    for target in [reader] * N + [writer] * N:
        r, w = gipc.pipe(encoder=None, decoder=None)
        mine, theirs = (w, r) if target is reader else (r, w)
        with gipc.pipe() as (sr, sw):
            gipc.start_process(target, args=(theirs, sw))
            pids.append(sr.get(timeout=30))
        keep.append(mine)
    sys.stdout.write(" ".join(map(str, pids)) + "\\n")
    sys.stdout.flush()
    import gevent
    gevent.sleep(3600)  # killed by the test
""")


def test_parent_killed_children_see_eof_or_broken_pipe_and_exit():
    """A parent SIGKILLed while its children read from it (or write to it):
    every child sees EOF or BrokenPipe and exits; none hangs."""
    n = 3
    proc = subprocess.Popen(
        [sys.executable, "-c", "N = %d\n" % n + _ORPHANS_SCRIPT],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=SCRIPT_CWD,
        env=script_env())
    pidfds = []
    try:
        ready, _, _ = select.select([proc.stdout], [], [], WAIT)
        assert ready, "the parent did not start its children"
        pids = [int(x) for x in proc.stdout.readline().split()]
        assert len(pids) == 2 * n
        pidfds = [os.pidfd_open(pid) for pid in pids]
        proc.kill()
        assert proc.wait(timeout=WAIT) == -signal.SIGKILL
        deadline = time.monotonic() + WAIT
        alive = list(zip(pids, pidfds))
        while alive:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "children still alive: %r" % [
                pid for pid, _ in alive]
            ready, _, _ = select.select([fd for _, fd in alive], [], [],
                                        remaining)
            alive = [(pid, fd) for pid, fd in alive if fd not in ready]
    finally:
        for fd in pidfds:
            os.close(fd)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=WAIT)
        proc.stdout.close()


# ------------------------------------------------- resource exhaustion


_NOFILE_SCRIPT = textwrap.dedent("""
    import errno, os, resource
    import gevent, gipc

    gevent.get_hub().threadpool.spawn(lambda: None).get()  # hub's own fds

    def fds():
        return sorted(os.listdir("/proc/self/fd"))

    results = []
    for duplex in (False, True):
        for spare in range(0, 6):
            before = fds()
            # os.listdir itself uses a descriptor while it runs.
            limit = len(before) + spare
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
            try:
                pair = gipc.pipe(duplex=duplex)
            except OSError as exc:
                outcome = "EMFILE" if exc.errno == errno.EMFILE else repr(exc)
            else:
                outcome = "ok"
                for h in pair:
                    h.close()
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
            after = fds()
            results.append((duplex, spare, outcome, before == after))
    print(repr(results))
""")


def test_pipe_out_of_descriptors_raises_oserror_and_leaks_nothing():
    out = subprocess.run(
        [sys.executable, "-c", _NOFILE_SCRIPT], capture_output=True,
        timeout=WAIT, stdin=subprocess.DEVNULL, check=False, cwd=SCRIPT_CWD,
        env=script_env())
    assert out.returncode == 0, out.stderr.decode()
    results = eval(out.stdout.decode())  # noqa: S307 (our own repr)
    # Every attempt either worked or raised EMFILE, leaving the same fds.
    for duplex, spare, outcome, same in results:
        assert outcome in ("ok", "EMFILE"), (duplex, spare, outcome)
        assert same, "descriptors leaked: duplex=%s spare=%s" % (duplex, spare)
    outcomes = {(d, s): o for d, s, o, _ in results}
    # spare + 1 descriptors are free: a pipe needs 2, a duplex pair 4.
    assert outcomes[(False, 0)] == "EMFILE"
    assert outcomes[(False, 1)] == "ok"
    assert outcomes[(True, 2)] == "EMFILE"  # the first pipe fitted
    assert outcomes[(True, 3)] == "ok"


def _echo(r, w):
    w.put(r.get())


def _failing_fork(exc):
    def fork(signals, out, *close_in_child):
        raise exc
    return fork


@pytest.mark.parametrize("exc", [
    OSError(errno.EAGAIN, "Resource temporarily unavailable"),
    OSError(errno.ENOMEM, "Cannot allocate memory"),
    KeyboardInterrupt(),
])
def test_start_process_when_fork_fails(monkeypatch, exc):
    """fork() fails (or Ctrl-C arrives inside it): the error propagates,
    the handles meant to move stay open and usable in the parent, no child
    is registered, nothing leaks; a later start_process() works."""
    with gipc.pipe() as (r, w), gipc.pipe() as (r2, w2):
        before = _fds()
        children = set(gipc.active_children())
        monkeypatch.setattr(_core, "fork", _failing_fork(exc))
        with pytest.raises(type(exc)) as info:
            gipc.start_process(_echo, args=(r, w2))
        assert info.value is exc
        with pytest.raises(type(exc)):
            gipc.Process(target=_echo, args=(r, w2)).start()
        monkeypatch.undo()
        assert _fds() == before
        assert set(gipc.active_children()) == children
        assert not r.closed and not w2.closed
        # Still usable in the parent...
        w.put("local")
        assert r.get(timeout=WAIT) == "local"
        # ...and still movable to a child once fork works again.
        p = gipc.start_process(_echo, args=(r, w2))
        assert r.closed and w2.closed
        w.put("via child")
        assert r2.get(timeout=WAIT) == "via child"
        assert _finish(p) == 0


def test_rlimit_nofile_lowered_start_process_fails_cleanly():
    """No descriptor left for the child's pidfd: fork() succeeded, so the
    fork helper kills and reaps the child it cannot watch, and
    start_process() raises OSError(EMFILE) leaking nothing (in a
    subprocess).  One start first, so gipc's one-off pidfd probe is done and
    the pidfd of the new child is the first descriptor the start needs.
    The proof that a child was forked: its SIGCHLD, blocked in the only
    thread, is pending afterwards; a start that failed before fork() leaves
    none."""
    script = textwrap.dedent("""
        import errno, os, resource, signal, sys
        import gipc

        def child():
            pass

        p = gipc.start_process(child)
        p.join(10)
        assert p.exitcode == 0, p.exitcode
        p.close()
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
        while signal.sigtimedwait([signal.SIGCHLD], 0) is not None:
            pass  # the first child's, if it is still pending
        before = sorted(os.listdir("/proc/self/fd"), key=int)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        # Fill every free slot below the new limit.
        limit = max(map(int, before)) + 1
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        fillers = []
        try:
            while True:
                fillers.append(os.dup(0))
        except OSError as exc:
            assert exc.errno == errno.EMFILE, exc
        try:
            p = gipc.start_process(child)
        except OSError as exc:
            outcome = "EMFILE" if exc.errno == errno.EMFILE else repr(exc)
        else:
            outcome = "started"
            p.join(10)
            p.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for fd in fillers:
            os.close(fd)
        # Children forked despite the error and not reaped are collected
        # (and counted) here.
        leftover = []
        try:
            while True:
                pid, status = os.waitpid(-1, 0)
                leftover.append(pid)
        except ChildProcessError:
            pass
        forked = signal.SIGCHLD in signal.sigpending()
        after = sorted(os.listdir("/proc/self/fd"), key=int)
        print(outcome, forked, before == after, len(leftover))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True,
                         timeout=WAIT, stdin=subprocess.DEVNULL, check=False,
                         cwd=SCRIPT_CWD, env=script_env())
    assert out.returncode == 0, out.stderr.decode()
    outcome, forked, same, leftover = out.stdout.decode().split()
    assert outcome == "EMFILE", out.stdout.decode() + out.stderr.decode()
    # The EMFILE came after fork() (the child's pidfd); on the sentinel
    # path, before it (the sentinel pipe is made first).
    assert forked == str(_popen_base.USE_PIDFDS)
    assert same == "True"
    # The child forked before the pidfd failed was killed and reaped.
    assert int(leftover) == 0


def test_start_interrupted_right_after_the_fork_leaves_no_child(monkeypatch):
    """A KeyboardInterrupt that arrives in the parent after fork() returned
    but before start_process() returned: the caller gets the exception, the
    child is killed and reaped, its pidfd closed, the handles stay usable."""
    from gipc import _core, _popen_fork

    parent = os.getpid()

    class InterruptedCore:
        def __getattr__(self, name):
            return getattr(_core, name)

        @staticmethod
        def fork(signals, out, *close_in_child):
            _core.fork(signals, out, *close_in_child)
            if os.getpid() == parent:
                raise KeyboardInterrupt

    monkeypatch.setattr(_popen_fork, "_core", InterruptedCore())
    r, w = gipc.pipe()
    with r, w:
        with pytest.raises(KeyboardInterrupt):
            gipc.start_process(_noop_target, args=(w,))
        monkeypatch.undo()
        assert not w.closed
        w.put("still usable")
        assert r.get(timeout=WAIT) == "still usable"


def _noop_target(*args):
    pass
