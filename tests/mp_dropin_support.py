"""Support for the multiprocessing drop-in tests: the two namespaces a
pattern runs against, and the liveness check of the gipc variants.

A pattern is written once, as a function of ``ns`` (the module-like
namespace: ``ns.Process``, ``ns.Pipe``, ``ns.wait``, ...), and runs against
``multiprocessing`` and against ``gipc``.

Liveness (gipc variants only): a greenlet of the parent ticks; each child
waits at a *gate* until that greenlet has ticked ``TICKS`` times before it
does its work.  The parent meanwhile sits in ``recv()``/``wait()``/
``join()``.  Were any of those to block the event loop, the ticker could
never tick, the child would give up at the gate after ``GATE_TIMEOUT``
seconds and exit with an error, and the test would fail.  With
``multiprocessing`` there is no gate (its calls do block the loop).
"""
import multiprocessing
import multiprocessing.connection
import types

import gevent

import gipc

TICKS = 5
GATE_TIMEOUT = 20
#: Bound of every wait in the tests (generous: never a speed assertion).
BOUND = 30

_fork = multiprocessing.get_context("fork")

MP = types.SimpleNamespace(
    name="multiprocessing",
    Process=_fork.Process,
    Pipe=_fork.Pipe,
    Connection=multiprocessing.connection.Connection,
    wait=multiprocessing.connection.wait,
    current_process=multiprocessing.current_process,
    parent_process=multiprocessing.parent_process,
    active_children=multiprocessing.active_children,
)

GIPC = types.SimpleNamespace(
    name="gipc",
    Process=gipc.Process,
    Pipe=gipc.Pipe,
    Connection=gipc.Connection,
    wait=gipc.wait,
    current_process=gipc.current_process,
    parent_process=gipc.parent_process,
    active_children=gipc.active_children,
)

NAMESPACES = [MP, GIPC]
NAMESPACE_IDS = [ns.name for ns in NAMESPACES]


def pass_gate(gate):
    """In a child: wait until the parent's ticker opens the gate (gipc
    variants); return at once with multiprocessing (``gate`` is None)."""
    if gate is not None:
        assert gate.get(timeout=GATE_TIMEOUT) == "go"
        gate.close()


class Liveness:
    """The ticking greenlet of a gipc variant and the gates it opens.

    Use as a context manager around the part of the test where children
    work; ``gate()`` makes one gate per child (None with multiprocessing);
    ``check()`` asserts that the ticker ticked and opened every gate.
    """

    def __init__(self, ns):
        self.enabled = ns is GIPC
        self.ticks = 0
        self._pipes = []
        self._greenlet = None

    def gate(self):
        if not self.enabled:
            return None
        reader, writer = gipc.pipe()
        self._pipes.append((reader, writer))
        return reader

    def start(self):
        """Start ticking; call right after the children have started."""
        if self.enabled:
            self._greenlet = gevent.spawn(self._tick)

    def _tick(self):
        while self.ticks < TICKS:
            gevent.sleep(0.001)
            self.ticks += 1
        for _, writer in self._pipes:
            writer.put("go")

    def check(self):
        """Assert the parent's loop kept running while children worked."""
        if not self.enabled:
            return
        assert self._greenlet is not None, "ticker never started"
        self._greenlet.join(timeout=BOUND)
        assert self._greenlet.dead, "ticker still running"
        self._greenlet.get()  # re-raises an error of the ticker
        assert self.ticks >= TICKS

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._greenlet is not None:
            self._greenlet.kill(timeout=BOUND)
        for reader, writer in self._pipes:
            for handle in (reader, writer):
                if not handle.closed:
                    handle.close()


def finish(*processes):
    """join() with a bound, then close() each process; return exit codes."""
    codes = []
    for p in processes:
        p.join(BOUND)
        codes.append(p.exitcode)
        if p.exitcode is None:
            p.kill()
            p.join(BOUND)
        p.close()
    return codes
