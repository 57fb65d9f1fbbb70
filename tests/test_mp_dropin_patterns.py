"""multiprocessing usage patterns, each written once and run against
``multiprocessing`` and against ``gipc`` (only the namespace differs).

The gipc variants also check that the parent's event loop keeps running
while the children work (see mp_dropin_support.Liveness).
"""
import array
import os
import sys
import threading

import pytest
from multiprocessing import BufferTooShort

from support import run_script
from mp_dropin_support import (
    BOUND, NAMESPACE_IDS, NAMESPACES, Liveness, finish, pass_gate)


@pytest.fixture(params=NAMESPACES, ids=NAMESPACE_IDS)
def ns(request):
    return request.param


# -- producer / consumer --------------------------------------------------

def _producer(conn, gate, count):
    pass_gate(gate)
    for i in range(count):
        conn.send({"item": i, "payload": "x" * i})
    conn.send(None)
    conn.close()


def _consumer(conn, result_conn, gate):
    pass_gate(gate)
    total = 0
    while True:
        item = conn.recv()
        if item is None:
            break
        total += item
    result_conn.send(total)
    result_conn.close()


def test_producer_in_child_consumer_in_parent(ns):
    recv_end, send_end = ns.Pipe(duplex=False)
    with Liveness(ns) as live:
        p = ns.Process(target=_producer, args=(send_end, live.gate(), 200))
        p.start()
        send_end.close()  # the parent's copy (gipc: already moved)
        live.start()
        got = []
        while True:
            item = recv_end.recv()
            if item is None:
                break
            got.append(item)
        # The producer closed its end: the stream ends with EOFError.
        with pytest.raises(EOFError):
            recv_end.recv()
        assert finish(p) == [0]
        live.check()
    recv_end.close()
    assert got == [{"item": i, "payload": "x" * i} for i in range(200)]


def test_producer_in_parent_consumer_in_child(ns):
    recv_end, send_end = ns.Pipe(duplex=False)
    result_recv, result_send = ns.Pipe(duplex=False)
    with Liveness(ns) as live:
        p = ns.Process(target=_consumer,
                       args=(recv_end, result_send, live.gate()))
        p.start()
        recv_end.close()
        result_send.close()
        live.start()
        for i in range(1000):
            send_end.send(i)
        send_end.send(None)
        assert result_recv.poll(BOUND)
        assert result_recv.recv() == sum(range(1000))
        assert finish(p) == [0]
        live.check()
    send_end.close()
    result_recv.close()


# -- a subclass overriding run() ------------------------------------------

def test_subclass_overriding_run(ns):
    class Squarer(ns.Process):
        def __init__(self, conn, gate):
            # gipc moves connections given in args/kwargs (README,
            # "Migrating from multiprocessing"); keeping them as attributes
            # too is the usual subclass idiom.
            super().__init__(name="squarer", args=(conn, gate))
            self.conn = conn
            self.gate = gate
            self.factor = 3

        def run(self):
            pass_gate(self.gate)
            while True:
                n = self.conn.recv()
                if n is None:
                    break
                self.conn.send((ns.current_process().name, n * n * self.factor))
            self.conn.close()

    parent_end, child_end = ns.Pipe()
    with Liveness(ns) as live:
        p = Squarer(child_end, live.gate())
        p.start()
        child_end.close()
        live.start()
        answers = []
        for n in range(10):
            parent_end.send(n)
            answers.append(parent_end.recv())
        parent_end.send(None)
        assert finish(p) == [0]
        live.check()
    parent_end.close()
    assert answers == [("squarer", 3 * n * n) for n in range(10)]


# -- recv_bytes_into --------------------------------------------------------

def _send_blobs(conn, gate, blobs):
    pass_gate(gate)
    for blob in blobs:
        conn.send_bytes(blob)
    # A part of a buffer, as multiprocessing allows.
    conn.send_bytes(b"0123456789", 2, 5)
    conn.close()


def test_recv_bytes_into_with_offsets(ns):
    recv_end, send_end = ns.Pipe(duplex=False)
    blobs = [b"hello", b"world!", b"x" * 100, b"overflowing message",
             bytes(range(256)) * 4096]
    with Liveness(ns) as live:
        p = ns.Process(target=_send_blobs, args=(send_end, live.gate(), blobs))
        p.start()
        send_end.close()
        live.start()

        buf = bytearray(b"." * 12)
        assert recv_end.recv_bytes_into(buf) == 5
        assert buf == b"hello......."

        view = memoryview(bytearray(b"." * 20))
        assert recv_end.recv_bytes_into(view, 7) == 6
        assert view.tobytes() == b".......world!......."

        ints = array.array("i", [0] * 50)
        assert recv_end.recv_bytes_into(ints, 4 * ints.itemsize) == 100
        assert ints.tobytes()[4 * ints.itemsize:][:100] == b"x" * 100
        assert ints[:4].tolist() == [0, 0, 0, 0]

        small = bytearray(10)
        with pytest.raises(BufferTooShort) as info:
            recv_end.recv_bytes_into(small, 3)
        # The whole message travels in the exception; nothing was written.
        assert info.value.args[0] == b"overflowing message"
        assert small == bytearray(10)

        big = bytearray(2 * 1024 * 1024)
        assert recv_end.recv_bytes_into(memoryview(big), 1) == 1024 * 1024
        assert big[1:1024 * 1024 + 1] == blobs[-1]
        assert big[0] == 0 and not any(big[1024 * 1024 + 1:])

        assert recv_end.recv_bytes() == b"23456"
        assert finish(p) == [0]
        live.check()
    recv_end.close()


def test_recv_bytes_into_argument_errors(ns):
    a, b = ns.Pipe()
    with a, b:
        with pytest.raises(ValueError, match="negative offset"):
            b.recv_bytes_into(bytearray(4), -1)
        with pytest.raises(ValueError, match="offset too large"):
            b.recv_bytes_into(bytearray(4), 5)
        # Neither consumed anything.
        a.send_bytes(b"abcd")
        buf = bytearray(4)
        assert b.recv_bytes_into(buf, 0) == 4 and buf == b"abcd"


# -- poll() -----------------------------------------------------------------

def _answer_after_gate(conn, gate):
    pass_gate(gate)
    conn.send(conn.recv() + 1)
    conn.close()


def test_poll_with_and_without_timeouts(ns):
    parent_end, child_end = ns.Pipe()
    with Liveness(ns) as live:
        p = ns.Process(target=_answer_after_gate,
                       args=(child_end, live.gate()))
        p.start()
        child_end.close()
        # Nothing can have arrived: the child waits for our message.
        assert parent_end.poll() is False
        assert parent_end.poll(0) is False
        assert parent_end.poll(0.05) is False
        live.start()
        parent_end.send(41)
        assert parent_end.poll(BOUND) is True
        assert parent_end.poll() is True     # still there until received
        assert parent_end.recv() == 42
        # The child closed its end: poll() reports EOF as readable.
        assert parent_end.poll(BOUND) is True
        with pytest.raises(EOFError):
            parent_end.recv()
        assert finish(p) == [0]
        live.check()
    parent_end.close()


def test_poll_none_waits_for_the_message(ns):
    parent_end, child_end = ns.Pipe()
    with Liveness(ns) as live:
        p = ns.Process(target=_answer_after_gate,
                       args=(child_end, live.gate()))
        p.start()
        child_end.close()
        live.start()
        parent_end.send(1)
        assert parent_end.poll(None) is True
        assert parent_end.recv() == 2
        assert finish(p) == [0]
        live.check()
    parent_end.close()


def test_poll_sees_messages_already_buffered(ns):
    a, b = ns.Pipe()
    with a, b:
        for i in range(3):
            a.send(i)
        assert b.recv() == 0
        # gipc read all three frames at once; the rest must still count.
        assert b.poll() and b.poll(0)
        assert ns.wait([b], 0) == [b]
        assert b.recv() == 1 and b.recv() == 2
        assert not b.poll()


# -- EOF and closed connections ----------------------------------------------

def _exit_at_once(conn, gate):
    pass_gate(gate)
    conn.close()


def test_eoferror_when_the_child_closes(ns):
    parent_end, child_end = ns.Pipe()
    with Liveness(ns) as live:
        p = ns.Process(target=_exit_at_once, args=(child_end, live.gate()))
        p.start()
        child_end.close()
        live.start()
        with pytest.raises(EOFError):
            parent_end.recv()
        with pytest.raises(EOFError):
            parent_end.recv_bytes()
        assert finish(p) == [0]
        live.check()
    parent_end.close()


def test_closed_peer_in_process(ns):
    a, b = ns.Pipe()
    a.send("last words")
    a.close()
    assert b.recv() == "last words"
    with pytest.raises(EOFError):
        b.recv()
    with pytest.raises(BrokenPipeError):
        b.send("anyone?")
    b.close()


def test_connection_api_state_and_errors(ns):
    r, w = ns.Pipe(duplex=False)
    assert (r.readable, r.writable, w.readable, w.writable) == \
        (True, False, False, True)
    assert not r.closed and isinstance(r.fileno(), int)
    with pytest.raises(OSError, match="connection is read-only"):
        r.send(1)
    with pytest.raises(OSError, match="connection is write-only"):
        w.recv()
    with pytest.raises(OSError, match="connection is write-only"):
        w.poll()
    with pytest.raises(ValueError):
        w.send_bytes(b"abc", 4)
    with pytest.raises(ValueError):
        w.send_bytes(b"abc", 1, 3)
    with pytest.raises(ValueError):
        w.send_bytes(b"abc", -1)
    with pytest.raises(ValueError):
        r.recv_bytes(-1)
    # Multi-byte items: offsets and sizes count bytes.
    w.send_bytes(array.array("i", [1, 2, 3]), 4, 4)
    assert r.recv_bytes() == array.array("i", [2]).tobytes()
    with w:
        pass
    assert w.closed
    w.close()  # closing twice is fine
    with pytest.raises(OSError, match="handle is closed"):
        w.send(1)
    with pytest.raises(OSError, match="handle is closed"):
        w.fileno()
    r.close()
    with pytest.raises(OSError, match="handle is closed"):
        r.poll()


def test_recv_bytes_maxlength(ns):
    a, b = ns.Pipe()
    with a, b:
        a.send_bytes(b"12345")
        assert b.recv_bytes(5) == b"12345"
        a.send_bytes(b"123456")
        with pytest.raises(OSError, match="bad message length"):
            b.recv_bytes(5)
        # As multiprocessing: a duplex connection stays writable only.
        assert not b.readable and b.writable
        b.send("still writable")
        assert a.recv() == "still writable"
    r, w = ns.Pipe(duplex=False)
    with w:
        w.send_bytes(b"123456")
        with pytest.raises(OSError, match="bad message length"):
            r.recv_bytes(2)
        assert r.closed  # read-only: closed


# -- wait() over connections and sentinels -----------------------------------

def _report(conn, gate, index):
    pass_gate(gate)
    conn.send(index)
    conn.close()
    return index


def test_wait_over_connections_and_sentinels(ns):
    count = 4
    pairs = [ns.Pipe(duplex=False) for _ in range(count)]
    with Liveness(ns) as live:
        procs = []
        for i, (r, w) in enumerate(pairs):
            p = ns.Process(target=_report, args=(w, live.gate(), i))
            p.start()
            w.close()
            procs.append(p)
        readers = [r for r, w in pairs]
        # Nothing can be ready: every child waits at its gate (gipc), or
        # sends first and exits later (multiprocessing), so only bound it.
        live.start()
        pending = readers + [p.sentinel for p in procs]
        received, exited = [], []
        while pending:
            ready = ns.wait(pending, timeout=BOUND)
            assert ready, "wait() timed out"
            # Ready objects come back in input order.
            assert ready == [o for o in pending if o in ready]
            for obj in ready:
                if isinstance(obj, int):
                    exited.append(obj)
                    pending.remove(obj)
                else:
                    try:
                        received.append(obj.recv())
                    except EOFError:
                        pending.remove(obj)
        assert sorted(received) == list(range(count))
        assert sorted(exited) == sorted(p.sentinel for p in procs)
        assert finish(*procs) == [0] * count
        live.check()
    for r in readers:
        r.close()


def test_wait_timeout_and_input_order(ns):
    a, b = ns.Pipe()
    c, d = ns.Pipe()
    with a, b, c, d:
        assert ns.wait([b, d], timeout=0) == []
        assert ns.wait([b, d], timeout=0.05) == []
        c.send(1)
        a.send(2)
        assert ns.wait([d, b], timeout=BOUND) == [d, b]
        assert ns.wait([b, d], timeout=BOUND) == [b, d]
        assert d.recv() == 1
        assert ns.wait([d, b], timeout=BOUND) == [b]


# -- current_process(), parent_process(), active_children() ------------------

def _introspect(conn, gate, ns):
    pass_gate(gate)
    me = ns.current_process()
    parent = ns.parent_process()
    conn.send({
        "name": me.name,
        "pid": me.pid,
        "os_pid": os.getpid(),
        "parent_pid": parent.pid,
        "parent_alive": parent.is_alive(),
        "children": ns.active_children(),
    })
    conn.recv()  # stay alive until the parent has looked at us
    conn.close()


def test_process_introspection(ns):
    parent_end, child_end = ns.Pipe()
    with Liveness(ns) as live:
        p = ns.Process(target=_introspect, args=(child_end, live.gate(), ns),
                       name="introspected")
        p.start()
        child_end.close()
        pid = p.pid
        live.start()
        info = parent_end.recv()
        # The child waits for a word from us: it is certainly running.
        assert p in ns.active_children()
        assert ns.current_process().name == "MainProcess"
        assert ns.parent_process() is None
        parent_end.send("bye")
        assert finish(p) == [0]
        live.check()
    parent_end.close()
    assert info == {
        "name": "introspected", "pid": pid, "os_pid": pid,
        "parent_pid": os.getpid(), "parent_alive": True, "children": [],
    }
    assert p not in ns.active_children()


# -- what the child's bootstrap sets up ----------------------------------------

_parent_finalized = []
_after_fork_ran_in = []


def _note_parent_finalizer():
    _parent_finalized.append(os.getpid())


class _AfterForkHolder:
    pass


def _note_after_fork(obj):
    _after_fork_ran_in.append(os.getpid())


def _bootstrap_state(conn, gate, ns):
    import multiprocessing.util as util

    pass_gate(gate)
    util.Finalize(None, conn.send, args=("finalizer ran",), exitpriority=10)
    nested = ns.Process(target=print)  # not started
    conn.send({
        "identity_len": len(ns.current_process()._identity),
        "nested_identity_tail": nested._identity[-1],
        "nested_name_suffix": nested.name.rsplit(":", 1)[-1],
        "children": ns.active_children(),
        "parent_finalizer_ran_here": os.getpid() in _parent_finalized,
        "after_fork_hook_ran_here": _after_fork_ran_in == [os.getpid()],
    })
    # The finalizer sends its message at exit, then the pipe is closed.


def test_child_bootstrap_state(ns):
    import multiprocessing.util as util

    # A finalizer of the parent with an exit priority: multiprocessing
    # clears the registry in the child, so it must not run there.
    finalizer = util.Finalize(None, _note_parent_finalizer, exitpriority=5)
    holder = _AfterForkHolder()
    util.register_after_fork(holder, _note_after_fork)
    parent_end, child_end = ns.Pipe()
    try:
        with Liveness(ns) as live:
            p = ns.Process(target=_bootstrap_state,
                           args=(child_end, live.gate(), ns))
            p.start()
            child_end.close()
            live.start()
            state = parent_end.recv()
            last = parent_end.recv()
            assert finish(p) == [0]
            live.check()
    finally:
        finalizer.cancel()
        parent_end.close()
    assert state == {
        "identity_len": 1, "nested_identity_tail": 1,
        "nested_name_suffix": "1", "children": [],
        "parent_finalizer_ran_here": False,
        "after_fork_hook_ran_here": True,
    }
    assert _after_fork_ran_in == []  # in the parent
    del holder  # which unregisters the hook
    assert last == "finalizer ran"


def _exit_with_code(code):
    raise SystemExit(code)


@pytest.mark.parametrize("code, expected, message", [
    (None, 0, ""), (0, 0, ""), (7, 7, ""), ("bye", 1, "bye\n"),
])
def test_system_exit_codes_and_messages(ns, capfd, code, expected, message):
    p = ns.Process(target=_exit_with_code, args=(code,))
    p.start()
    assert finish(p) == [expected]
    assert capfd.readouterr().err == message


def test_multiprocessing_logging_in_the_child(ns):
    result = run_script("""
        import logging, multiprocessing
        import gipc
        ns = gipc if %r == "gipc" else multiprocessing.get_context("fork")
        multiprocessing.log_to_stderr(logging.DEBUG)
        p = ns.Process(target=print, args=("hi",), name="kid")
        p.start()
        p.join()
        """ % ns.name)
    assert result.returncode == 0, result.stderr
    # The parent logs at its exit too: look for the child's name.
    for message in ("[INFO/kid] child process calling self.run()",
                    "[INFO/kid] process shutting down",
                    '[DEBUG/kid] running the remaining "atexit" finalizers',
                    "[INFO/kid] process exiting with exitcode 0"):
        assert message in result.stderr


# -- a Process subclass keeping its connections as attributes -----------------

def _make_worker_class(ns):
    class Worker(ns.Process):
        """The multiprocessing idiom: the connections live on the process
        object; the child uses one end, the parent the other."""

        def __init__(self, gate):
            super().__init__()
            self.parent_end, self.child_end = ns.Pipe()
            self.gate = gate

        def run(self):
            pass_gate(self.gate)
            self.child_end.send(self.child_end.recv() * 2)
            self.child_end.close()

    return Worker


def test_subclass_with_connection_attributes(ns):
    with Liveness(ns) as live:
        worker = _make_worker_class(ns)(live.gate())
        worker.start()
        live.start()
        # Shared, as with multiprocessing: the parent's ends stay open.
        worker.parent_end.send(21)
        assert worker.parent_end.recv() == 42
        assert finish(worker) == [0]
        live.check()
    worker.parent_end.close()
    worker.child_end.close()


def _register_atexit(conn):
    import atexit

    atexit.register(conn.send, "atexit ran")
    conn.send("registered")


def test_atexit_handlers_of_the_child_as_multiprocessing(ns):
    # multiprocessing runs them at the child's exit since Python 3.13.
    parent_end, child_end = ns.Pipe()
    p = ns.Process(target=_register_atexit, args=(child_end,))
    p.start()
    child_end.close()
    assert parent_end.recv() == "registered"
    assert finish(p) == [0]
    try:  # the child is gone: a message, or the end of the stream
        ran = parent_end.recv() == "atexit ran"
    except EOFError:
        ran = False
    finally:
        parent_end.close()
    assert ran == (sys.version_info >= (3, 13))


def _leave_a_thread_behind(conn, go):
    import threading

    def finish_later():
        go.recv()  # only once the target has returned
        conn.send("thread done")

    threading.Thread(target=finish_later).start()  # not a daemon
    conn.send("target returned")


def test_child_waits_for_its_non_daemon_threads(ns, monkeypatch):
    # The bootstrap joins them before the child exits: the thread can
    # still send after the target returned.  (Without the thread-atexit
    # call pytest's plugins register, the thread alone must decide.)
    monkeypatch.setattr(threading, "_threading_atexits", [])
    parent_end, child_end = ns.Pipe()
    go_recv, go_send = ns.Pipe(duplex=False)
    p = ns.Process(target=_leave_a_thread_behind, args=(child_end, go_recv))
    p.start()
    child_end.close()
    go_recv.close()
    try:
        assert parent_end.poll(BOUND)
        assert parent_end.recv() == "target returned"
        go_send.send("go")
        assert parent_end.poll(BOUND)
        assert parent_end.recv() == "thread done"
        assert finish(p) == [0]
    finally:
        parent_end.close()
        go_send.close()


def _register_thread_atexit(conn):
    import threading

    threading._register_atexit(conn.send, "thread atexit ran")


def test_thread_atexit_calls_of_the_child_run(ns, monkeypatch):
    # concurrent.futures registers these; the bootstrap runs them (also
    # when the parent had none: pytest's plugins register one).
    monkeypatch.setattr(threading, "_threading_atexits", [])
    parent_end, child_end = ns.Pipe()
    p = ns.Process(target=_register_thread_atexit, args=(child_end,))
    p.start()
    child_end.close()
    try:
        assert parent_end.poll(BOUND)
        assert parent_end.recv() == "thread atexit ran"
        assert finish(p) == [0]
    finally:
        parent_end.close()
