"""What every framed stream endpoint of gipc has in common.

Pipe handles (``handles.py``) and multiprocessing-style connections
(``connection.py``) are thin shells around a descriptor and the C core.
Both must check that they may be used (open, owned by this process, stream
in sync), serialise the greenlets that use one direction at once, wait on
the hub when the core says the descriptor would block, and mark the stream
broken when it can no longer be trusted.  That logic lives here, once.
"""
import errno

import gevent

from . import _ownership, _pipesize
from ._cooperate import fd_readable
from .exceptions import GIPCClosed, GIPCError, GIPCProtocolError

#: Calls one endpoint serves without waiting before it lets the other
#: greenlets run: a loop of get()/put() that never has to wait (the peer
#: keeps up) must not starve the event loop.
FAIRNESS_QUOTA = 256

#: Before a receive goes to sleep on the hub, the C reader polls the empty
#: pipe this many microseconds without sleeping: a reply that is about to
#: arrive is then caught without a cross-CPU wake-up (which dominates
#: round-trip latency on virtual machines).  Other greenlets wait at most
#: this long; the GIL is released meanwhile.
SPIN_US = 50

# Errors of the C core after which the byte stream is out of sync.
STREAM_ERRNOS = (errno.EPROTO, errno.EMSGSIZE)


class _NoLock:
    """The lock of a call that takes its turn but excludes no other
    greenlet (``poll()``)."""

    __slots__ = ()

    def acquire(self, blocking=True, timeout=None):
        return True

    def release(self):
        pass


NO_LOCK = _NoLock()


class Endpoint:
    """Ownership, closed and broken state of one descriptor-backed
    endpoint, registered with :mod:`gipc._ownership`.

    Subclasses call :meth:`_init_endpoint` and may override
    :meth:`_closed_error` (the exception raised when used after close).
    """

    def _init_endpoint(self):
        self._legit_pid = _ownership.pid
        # Equals the owner's pid while the endpoint is usable; None once it
        # is closed or broken.  One comparison guards every call.
        self._ok_pid = self._legit_pid
        self._closed = False
        self._broken = None
        self._quota = FAIRNESS_QUOTA
        # The first time a send finds the pipe full, try to grow it once.
        self._may_grow = True
        self._grew_pipe = False
        _ownership.register(self)

    def _enter(self, lock, timeout=None, deadline=None):
        """The one way into a call: check that this process may use the
        endpoint, count a fairness turn, take ``lock`` and, if anything
        could have run since the first check, check again.

        Every FAIRNESS_QUOTA calls the turn yields to the event loop, so
        that a loop of calls that never have to wait (the peer keeps up)
        does not starve it; it yields before the call touches the stream,
        so that a timeout or kill arriving meanwhile loses no message.
        Another greenlet may close the endpoint during that yield or while
        this one waits for the lock: the second check turns that into the
        endpoint's own error.  ``lock`` may be :data:`NO_LOCK` (a call that
        takes a turn but no lock); otherwise the caller releases it.  A
        ``deadline`` bounds the wait for the lock (then ``gevent.Timeout(
        timeout)`` is raised).
        """
        if self._ok_pid != _ownership.pid:
            self._raise_unusable()
        quota = self._quota - 1
        if quota:
            self._quota = quota
            # Nothing ran since the check: no switch happened.
            if lock.acquire(blocking=False):
                return
        else:
            self._quota = FAIRNESS_QUOTA
            gevent.sleep(0)
        self._acquire_slow(lock, timeout, deadline)

    #: How error messages name the endpoint and its sending call.
    _noun = "GIPCHandle"
    _send_name = "put()"

    def _closed_error(self):
        return GIPCClosed("GIPCHandle has been closed before.")

    def _raise_unusable(self):
        if self._closed:
            raise self._closed_error()
        if self._legit_pid != _ownership.pid:
            raise GIPCError(
                "%s %s not registered for current process %s (it belongs "
                "to process %s)." % (self._noun, self, _ownership.pid,
                                     self._legit_pid))
        if self._broken is not None:
            code, reason = self._broken
            raise GIPCProtocolError(
                code, "%s is unusable: %s" % (self, reason))

    def _validate(self):
        """Raise unless this process may use the endpoint now."""
        if self._ok_pid != _ownership.pid:
            self._raise_unusable()

    def _mark_broken(self, code, reason):
        self._broken = (code, reason)
        self._ok_pid = None

    def _stream_error(self, exc):
        """Turn an OSError of the core into the error to raise, marking the
        endpoint broken when the stream can no longer be trusted."""
        if exc.errno in STREAM_ERRNOS:
            self._mark_broken(exc.errno, exc.strerror)
            return GIPCProtocolError(exc.errno, exc.strerror)
        return exc

    def _acquire_slow(self, lock, timeout=None, deadline=None):
        """Take ``lock`` once the greenlet inside the call it guards is
        done, then check again that the endpoint is usable (see
        :meth:`_enter`)."""
        if deadline is None:
            lock.acquire()
        elif not lock.acquire(timeout=max(0.0, deadline.remaining())):
            raise gevent.Timeout(timeout)
        if self._ok_pid != _ownership.pid:
            lock.release()
            self._raise_unusable()

    def _own_here(self):
        """Make the endpoint usable in the current process (it was passed to
        this child)."""
        for core in (self._core, self._wcore):
            if core is not None:
                core.after_fork()  # a parent thread inside means nothing here
        self._legit_pid = _ownership.pid
        if not self._closed and self._broken is None:
            self._ok_pid = self._legit_pid

    def _finish_close(self):
        """Record that the descriptor is closed."""
        if self._grew_pipe:
            self._grew_pipe = False
            _pipesize.release()
        self._fd = None
        self._closed = True
        self._ok_pid = None
        _ownership.unregister(self)

    def _wait_frame(self, read, waiter, deadline=None, spin=True):
        """Call after ``read()`` (a read method of the C reader, bound to
        its arguments) returned None: wait on ``waiter`` and read again
        until it returns a result, and return that; return None once
        ``deadline`` passed (the part received so far stays in the reader).
        With ``spin``, first poll the empty pipe for SPIN_US (the caller did
        not).  The caller holds the read lock and turns OSErrors with
        :meth:`_stream_error`."""
        if spin and (deadline is None or deadline.remaining() > 0):
            result = read(SPIN_US)
            if result is not None:
                return result
        while True:
            if deadline is None:
                waiter.wait()
            elif not waiter.wait(deadline.remaining()):
                return None
            result = read()
            if result is not None:
                return result

    def _send_frame(self, data, lock, waiter):
        """Write ``data`` as one frame through the C writer ``self._wcore``:
        enter the call (see :meth:`_enter`) under the write ``lock``, and
        wait on ``waiter`` while the descriptor is full.  If anything
        interrupts the frame half-way, the endpoint is marked broken (the
        writer, not this frame of Python, knows how far the frame got, so
        no interruption can hide it)."""
        self._enter(lock)
        writer = self._wcore
        try:
            done = writer.send(data)
            if not done and self._may_grow:
                self._may_grow = False
                self._grew_pipe = _pipesize.grow(self._fd)
            while not done:
                waiter.wait()
                done = writer.resume()
        except BaseException as exc:
            partial = writer.abandon()
            if partial is not None:
                self._mark_broken(errno.EPROTO, (
                    "%s was interrupted by %s after writing %d of %d "
                    "bytes of a message; the stream is out of sync"
                    % ((self._send_name, type(exc).__name__) + partial)))
            raise
        finally:
            lock.release()


def input_ready(core, fd):
    """True if reading would not wait: ``core`` holds a whole message, or
    ``fd`` has data (or EOF, or an error) to report.  Never blocks."""
    return core.frame_ready() or fd_readable(fd)
