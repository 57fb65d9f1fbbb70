"""What every framed stream endpoint of gipc has in common.

Pipe handles (``handles.py``) and multiprocessing-style connections
(``connection.py``) are thin shells around a descriptor and the C core.
Both must check that they may be used (open, owned by this process, stream
in sync), serialise the greenlets that use one direction at once, wait on
the hub when the core says the descriptor would block, and mark the stream
broken when it can no longer be trusted; and both close, move to a child
and refuse pickling the same way.  That logic lives here, once.
"""
from __future__ import annotations

import errno
import operator
import os
import types
from typing import Any, Callable, NoReturn

import gevent
from gevent._hub_local import get_hub_if_exists

from . import _core, _log, _ownership, _pipesize
from ._cooperate import (Deadline, close_fd, check_timeout, input_ready, loop_epoch,
                         yield_to_loop)
from .exceptions import GIPCClosed, GIPCError, GIPCLocked, GIPCProtocolError

#: How long (microseconds) calls on one endpoint may keep the CPU, none of
#: them having to wait, before they let the event loop run: a loop of
#: get()/put() whose peer keeps up must not starve the other greenlets,
#: whatever the size or the number of its messages.
FAIRNESS_SLICE_US = 1000

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

    def acquire(self, blocking: bool = True,
                timeout: float | None = None) -> bool:
        return True

    def release(self) -> None:
        pass


NO_LOCK = _NoLock()


class Endpoint:
    """Ownership, closed and broken state of one descriptor-backed
    endpoint, registered with :mod:`gipc._ownership`, and the calls made
    the same way on every endpoint.

    A subclass calls :meth:`_init_endpoint` once it has set:

    - ``_core`` / ``_wcore``: its C reader / writer, or None (class
      attributes where it has none);
    - ``_waiters``: the tuple of its :class:`~gipc._cooperate.FdWaiter`
      objects;
    - ``_make_lock``: a class attribute called to make ``_lock``, the lock
      (or locks) that serialise its calls;
    - ``_close_locks()``: the locks :meth:`_close` must take, each with
      what a greenlet holding it is doing (for :meth:`_locked_error`).

    and may override :meth:`_closed_error` (the exception raised when used
    after close), :meth:`_locked_error` and the names below.
    """

    # The C Reader / Writer (Any: read on every call, never narrowed).
    _core: Any = None
    _wcore: Any = None
    _waiters: tuple[Any, ...]
    _make_lock: Callable[[], Any]
    _close_locks: Callable[[], tuple[tuple[Any, str | None], ...]]
    close: Callable[[], None]  # the subclass's public close()
    _fd: int  # None once closed, and only read while open
    _ok_pid: int | None
    _gate: Any
    _broken: tuple[int, str | None] | None
    _loop_epoch: Any

    #: How error messages name the endpoint and its sending call.
    _noun = "GIPCHandle"
    _send_name = "put()"
    #: How the refusal to pickle names the endpoint's type (None: its class
    #: name) and the call that passes it to a child instead.
    _type_name: str | None = None
    _passed_by = "gipc.start_process()"
    #: The name of the endpoint's one fast call, whose lock is its
    #: ``_lock``, if it has exactly one (see :meth:`_take_over`).
    _fast_name = ""

    def _init_endpoint(self, fd: int) -> None:
        # Descriptors made by gipc are non-blocking; one given to an
        # endpoint directly is made non-blocking here, or the C core would
        # block the event loop on it.
        os.set_blocking(fd, False)
        self._fd = fd
        self._lock = self._make_lock()
        self._legit_pid = _ownership.pid
        # What the C fast calls check (see _bind_fast): the usable pid
        # below and the fairness turn.
        self._gate = _core.Gate(_core.Turn(FAIRNESS_SLICE_US),
                                _ownership.__dict__)
        self._set_ok_pid(self._legit_pid)
        self._closed = False
        self._broken = None
        self._loop_epoch = None
        # The first time a send finds the pipe full, try to grow it once.
        self._may_grow = True
        self._grew_pipe = False
        self._bind_fast()
        _ownership.register(self)

    def _bind_fast(self) -> None:
        """Bind the endpoint's C fast calls (``_core.FastSend`` /
        ``_core.FastRecv``, made by :meth:`_make_fast`) as instance
        attributes named as the methods they stand for; once bound, give
        them the current locks instead (in a child, see
        :meth:`_take_over`: copies of them may be held elsewhere, e.g. by
        a duplex handle).  Each runs in one C call when it need not wait
        and calls the method of the class otherwise."""
        bound = self.__dict__
        locks = self._fast_locks()
        if any(name in bound for name in locks):
            for name, lock in locks.items():
                if name in bound:
                    bound[name].lock = lock
            return
        for name, fast in self._make_fast().items():
            setattr(self, name, fast)

    def _fast_locks(self) -> dict[str, Any]:
        """The lock of each fast call the endpoint has, by name."""
        return {}

    def _make_fast(self) -> dict[str, Any]:
        """The endpoint's fast calls, by name."""
        return {}

    def _full(self, name: str) -> Any:
        """The method ``name`` of the class, bound: what a fast call does
        the Python way."""
        return types.MethodType(getattr(type(self), name), self)

    def _unbind_fast(self, *names: str) -> None:
        """Drop fast calls (all of them by default): the methods of the
        class answer again (e.g. with the error of a closed endpoint), and
        the reference cycle through the fast calls is gone."""
        for name in names or tuple(self._fast_locks()):
            self.__dict__.pop(name, None)

    def _set_ok_pid(self, pid: int | None) -> None:
        # Equals the owner's pid while the endpoint is usable; None once it
        # is closed or broken.  One comparison guards every call; the Gate
        # keeps the same for the C fast calls (0: unusable).
        self._ok_pid = pid
        self._gate.ok_pid = 0 if pid is None else pid

    @property
    def _turn(self) -> Any:
        """The fairness clock (a ``_core.Turn``), kept by the Gate."""
        return self._gate.turn

    @_turn.setter
    def _turn(self, turn: Any) -> None:
        self._gate.turn = turn

    # -- state ------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the endpoint is closed (or was moved to a child)."""
        return self._closed

    def fileno(self) -> int:
        """The underlying file descriptor."""
        if self._closed:
            raise self._closed_error()
        return self._fd

    def _closed_error(self) -> GIPCError:
        return GIPCClosed("GIPCHandle has been closed before.")

    def _raise_unusable(self) -> Any:
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

    def _validate(self) -> None:
        """Raise unless this process may use the endpoint now."""
        if self._ok_pid != _ownership.pid:
            self._raise_unusable()

    def _mark_broken(self, code: int, reason: str | None) -> None:
        _log.debug("%r marked broken: %s", self, reason)
        self._broken = (code, reason)
        self._set_ok_pid(None)

    def _stream_error(self, exc: OSError) -> BaseException:
        """Turn an OSError of the core into the error to raise, marking the
        endpoint broken when the stream can no longer be trusted."""
        if exc.errno in STREAM_ERRNOS:
            self._mark_broken(exc.errno, exc.strerror)
            return GIPCProtocolError(exc.errno, exc.strerror)
        return exc

    # -- the way into every call -----------------------------------------

    def _enter(self, lock: Any, timeout: Any = None, deadline: Any = None) -> None:
        """The one way into a call: check that this process may use the
        endpoint, take a fairness turn, take ``lock`` and, if anything
        could have run since the first check, check again.

        The turn yields to the event loop once calls on this endpoint have
        kept the CPU for FAIRNESS_SLICE_US without the loop running (see
        :meth:`_fair_turn`); it yields before the call touches the stream,
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
        if not self._turn.due():
            # Nothing ran since the check: no switch happened.
            if lock.acquire(blocking=False):
                return
        else:
            self._fair_turn()
        self._acquire_slow(lock, timeout, deadline)

    def _fair_turn(self) -> None:
        """A slice is over: yield to the event loop unless it ran since the
        slice began (the calls waited, or the greenlet slept), then begin
        the next slice."""
        hub = get_hub_if_exists()
        if hub is None:
            # No hub in this thread (a fresh child, say): no greenlet waits
            # for the loop, and making a hub only to yield would cost more
            # than the call.
            self._turn.restart()
            return
        loop = hub.loop
        if loop_epoch(loop) == self._loop_epoch:
            yield_to_loop()
        self._loop_epoch = loop_epoch(loop)
        self._turn.restart()

    def _acquire_slow(
            self, lock: Any, timeout: Any = None, deadline: Any = None
    ) -> Any:
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

    # -- receiving --------------------------------------------------------

    def _receive(self, read: Any, lock: Any, waiter: Any, timeout: Any = None) -> Any:
        """Enter a receive under ``lock`` and run ``read`` (a read method of
        the C reader, bound to its arguments; it returns None while the
        message is incomplete) until it returns a result, waiting on
        ``waiter``; return that result.

        ``timeout``: None (wait for ever), a number of seconds bounding the
        whole call (``gevent.Timeout`` is raised when it expires; the part
        of a message received by then stays in the reader), or a started
        ``gevent.Timeout``, which covers the wait for a message to begin
        and is then cancelled (gipc 1.8's rule).
        """
        deadline = None
        if timeout is not None:
            self._validate()  # a closed endpoint says so before a bad timeout
            timeout = check_timeout(timeout)
            if timeout is not None and not isinstance(timeout, gevent.Timeout):
                deadline = Deadline(timeout)
        self._enter(lock, timeout, deadline)
        try:
            if timeout is None:
                # Spin right away: nothing to cancel, no deadline to keep.
                result = read(SPIN_US)
                if result is None:
                    result = self._wait_frame(read, waiter, spin=False)
            else:
                result = read()
                if result is None:
                    result = self._receive_late(read, waiter, timeout,
                                                deadline)
                elif deadline is None:
                    timeout.cancel()
        except OSError as exc:
            raise self._stream_error(exc)
        finally:
            lock.release()
        return result

    def _receive_waiting(self, read: Any, lock: Any, waiter: Any) -> Any:
        """The rest of a receive without timeout whose C fast call
        (``_core.FastRecv``) found no whole message, even after spinning
        on the empty pipe: enter the call, then wait on ``waiter`` and
        ``read`` until the message is here (see :meth:`_receive`)."""
        self._enter(lock)
        try:
            return self._wait_frame(read, waiter, spin=False)
        except OSError as exc:
            raise self._stream_error(exc)
        finally:
            lock.release()

    def _receive_late(self, read: Any, waiter: Any, timeout: Any, deadline: Any) -> Any:
        """The rest of a bounded receive whose first read found no whole
        message."""
        if deadline is None:
            # The gevent.Timeout covers the wait for a message to begin.  A
            # message has begun when part of it is buffered already.
            if not self._core.buffered:
                waiter.wait()
            timeout.cancel()
            result = read()
            if result is not None:
                return result
        result = self._wait_frame(read, waiter, deadline)
        if result is None:
            raise gevent.Timeout(timeout)
        return result

    def _wait_frame(
            self, read: Any, waiter: Any, deadline: Any = None, spin: Any = True
    ) -> Any:
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

    def _wait_target(self) -> tuple[int, Any]:
        """What :func:`gipc.wait` waits on for this endpoint: its descriptor,
        and the C reader whose buffered whole frames count as input (None:
        none does)."""
        return self.fileno(), self._core

    def _poll_now(self) -> bool:
        """Take a turn (see :meth:`_enter`); then True if a receive would
        not wait."""
        self._enter(NO_LOCK)
        return input_ready((self._wait_target(),))[0]

    # -- sending ----------------------------------------------------------

    def _send_frame(self, data: Any, lock: Any, waiter: Any,
                    started: bool = False,
                    error: BaseException | None = None) -> None:
        """Write ``data`` as one frame through the C writer ``self._wcore``:
        enter the call (see :meth:`_enter`) under the write ``lock``, and
        wait on ``waiter`` while the descriptor is full.  If anything
        interrupts the frame half-way, the endpoint is marked broken (the
        writer, not this frame of Python, knows how far the frame got, so
        no interruption can hide it).

        ``started``: a C fast call (``_core.FastSend``) began the frame of
        ``data`` and it must wait, or writing a part of it raised
        ``error``; the fast call took ``lock`` for this call (and hands
        the frame over again if anything raises before the try statement
        below took it over)."""
        if not started:
            self._enter(lock)
        writer = self._wcore
        try:
            if error is not None:
                raise error
            done = False if started else writer.send(data)
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

    # -- closing, moving, pickling -----------------------------------------

    def _locked_error(self, doing: str | None) -> GIPCLocked:
        """The error of a close while a greenlet is ``doing`` a call."""
        return GIPCLocked("Can't close handle %s: locked for I/O operation."
                          % self)

    def _close(self) -> None:
        """Close the descriptor of an open endpoint, unless a greenlet is
        inside a call on it (:exc:`GIPCLocked`) or this process does not own
        it (:exc:`GIPCError`)."""
        if self._legit_pid != _ownership.pid:
            self._raise_unusable()
        held = []
        try:
            for lock, doing in self._close_locks():
                if not lock.acquire(blocking=False):
                    raise self._locked_error(doing)
                held.append(lock)
            for waiter in self._waiters:
                waiter.close()
            for core in (self._core, self._wcore):
                if core is not None:
                    core.detach()
            try:
                close_fd(self._fd)
            finally:
                self._finish_close()
        finally:
            for lock in held:
                lock.release()

    def _close_moved(self, log: bool) -> bool:
        """In the parent, right after the fork of the child this endpoint
        moved to: close its descriptor and make it closed (``closed`` is
        True, every call raises as after :meth:`close`, the registry
        forgets it), and return True if the rest of the teardown is left
        to :meth:`_finish_moved`, which the caller calls once the child
        is gone.

        Until then every page the parent writes is copied (the child
        shares it), and that rest (the C cores, the fast calls, the
        watchers, the locks) writes dozens of them: the pages of cold
        code and of objects the parent has not touched since the fork.
        An endpoint with a watcher (it waited in the parent: the watcher
        must go before its descriptor), a grown pipe, or a greenlet
        inside a call is closed the usual way (False).  ``log``: whether
        to log the close (asked before the fork: see ``_log.enabled``).

        No call of its own but the registry's: each function called
        writes its pages too."""
        # (Every endpoint's _lock has locked(), true while any of its
        # locks is held.)
        if self._grew_pipe or self._lock.locked():
            self._close()  # raises GIPCLocked if it is held
            return False
        for waiter in self._waiters:
            if waiter._watcher is not None:
                self._close()
                return False
        fd = self._fd
        self._fd = None  # type: ignore[assignment]  # closed: never read again
        self._closed = True
        self._ok_pid = None  # _set_ok_pid(None)
        self._gate.ok_pid = 0
        _ownership.unregister(self)
        try:
            close_fd(fd)
        finally:
            if log:
                _log.debug("closed %r", self)
        return True

    def _finish_moved(self) -> None:
        """The teardown :meth:`_close_moved` left: detach the C cores
        (their buffers are freed), drop the fast calls (and the reference
        cycle through them) and the watchers' state."""
        for waiter in self._waiters:
            waiter.close()
        for core in (self._core, self._wcore):
            if core is not None:
                core.detach()
        self._unbind_fast()

    def _child_closes_alone(self) -> bool:
        """In the parent, before a fork: whether a child that was not given
        this endpoint closes it with :meth:`_close_inherited` alone.  Not
        one with a watcher (the parent's, which the child must keep
        untouched) or a grown pipe (a count to release): the child takes
        those over and closes them the usual way."""
        if self._grew_pipe:
            return False
        for waiter in self._waiters:
            if waiter._watcher is not None:
                return False
        return True

    def _close_inherited(self, log: bool) -> None:
        """In a child: close an endpoint of the parent's that was not
        given to it and that it may close alone (see
        :meth:`_child_closes_alone`); ``log``: whether to log it.

        Only the descriptor and the closed state: ``closed`` is True and
        every call raises as after :meth:`close` (every call and every
        fast call checks first that the endpoint is this process's, and
        then that it is open); the child took it out of the registry.  Its
        C cores, fast calls, locks and watchers stay as they are, never
        used again.  Every page a child writes is copied, and each
        object read writes its page (its reference count): closing such
        an endpoint the usual way writes dozens."""
        fd = self._fd
        self._fd = None  # type: ignore[assignment]  # closed: never read again
        self._closed = True
        try:
            close_fd(fd)
        finally:
            if log:
                _log.debug("closed %r", self)

    def _finish_close(self) -> None:
        """Record that the descriptor is closed."""
        _log.debug("closed %r", self)
        if self._grew_pipe:
            self._grew_pipe = False
            _pipesize.release()
        self._fd = None  # type: ignore[assignment]  # closed: never read again
        self._closed = True
        self._set_ok_pid(None)
        self._unbind_fast()
        _ownership.unregister(self)

    def _take_over(self) -> tuple[Any, ...]:
        """Make the endpoint usable in the current process (it was passed to
        this child).  The parent's lock state and watchers mean nothing
        here; returns the watchers, which the caller keeps referenced and
        never touches (they belong to the parent's loop)."""
        # The child's code is cold: every function it calls writes the
        # pages of the function and its code (a copy each), so the usual
        # case is done here, with no call of this module's.
        for core in (self._core, self._wcore):
            if core is not None:
                core.after_fork()  # a parent thread inside means nothing here
        pid = self._legit_pid = _ownership.pid
        closed = self._closed
        if not closed and self._broken is None:
            self._ok_pid = self._gate.ok_pid = pid  # _set_ok_pid()
        lock = self._lock = self._make_lock()
        if not closed:
            fast = self.__dict__.get(self._fast_name)
            if fast is None:
                self._bind_fast()
            else:
                fast.lock = lock  # its one fast call (see _bind_fast)
        for waiter in self._waiters:
            if waiter._watcher is not None:
                # methodcaller: no Python frame of its own.
                return tuple(map(_forget, self._waiters))
        return ()

    def __reduce__(self) -> NoReturn:
        raise unpicklable(self._type_name or type(self).__name__,
                          self._passed_by)


_forget = operator.methodcaller("forget")


def unpicklable(type_name: str, passed_by: str) -> TypeError:
    """The error of pickling an endpoint: it moves to a child by being
    passed to ``passed_by``, never by pickle."""
    return TypeError(
        "%s cannot be pickled: pass it to %s as an argument to use it in a "
        "child process" % (type_name, passed_by))
