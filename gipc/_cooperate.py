"""Waiting on the gevent hub: the one place where gipc blocks.

The C core never waits; when a descriptor would block, the handle waits here
for readiness on an I/O watcher of the current hub and calls the core again.
Each handle keeps one watcher per hub and reuses it for every wait.

A thread that has no hub has no greenlet to let run either (every gevent
greenlet is started through the hub): there the wait is a plain poll(),
and no hub is made for it.  A gipc child that only talks over its pipes (a
pool worker running plain functions) never pays for a hub and its loop.
"""
from __future__ import annotations

import posix
import select
import time
from typing import Any, Iterable

import gevent
from gevent import get_hub
from gevent._hub_local import get_hub_if_exists

# gevent.lock's Semaphore, from the module that defines it: importing
# gevent.lock also imports gevent.monkey and, through it, logging, whose
# fork hooks would then run in every start (and half a megabyte more that
# every fork maps).
try:
    from gevent._semaphore import Semaphore as Semaphore  # noqa: F401 (handles)
except ImportError:  # a gevent that moved it
    from gevent.lock import Semaphore as Semaphore  # noqa: F401

# The close of the C library, never gevent's: since gevent 25.8.1,
# patch_all() replaces os.close with one that closes a pipe or socket only
# at the loop's next check phase, which an idle loop reaches at its next
# event, seconds later (a worker pool's shutdown then waited for a child
# that still had its pipe open).  gipc closes its own watchers before it
# closes a descriptor, which is what gevent's deferral guards against.
close_fd = posix.close

READ = 1
WRITE = 2

# Timeouts beyond this are treated as "no timeout": libev timers misbehave
# with absurd values, and nobody waits 30 years on purpose.
_TIMEOUT_FOREVER = 1e9

_LONGEST_POLL = (2 ** 31 - 1) // 1000  # seconds

# The blocking poll for a thread without a hub, even in a program that ran
# patch_all() before gipc was imported (gevent's would make a hub).
_blocking_poll: Any = select.poll
if getattr(_blocking_poll, "__module__", "").startswith("gevent"):
    from gevent.monkey import get_original
    _blocking_poll = get_original("select", "poll")


def check_timeout(timeout: Any) -> Any:
    """Validate a ``timeout`` argument: None, a number of seconds, or a
    ``gevent.Timeout``.  Returns it, with huge numbers mapped to None."""
    if timeout is None or isinstance(timeout, gevent.Timeout):
        return timeout
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(
            "timeout must be None, a number of seconds or a gevent.Timeout, "
            "not %s" % type(timeout).__name__)
    if timeout != timeout:
        raise ValueError("timeout must not be NaN")
    if timeout > _TIMEOUT_FOREVER:
        return None
    return timeout


class Deadline:
    """A numeric timeout turned into a point in time, shared by every wait of
    one call.  ``Deadline(None)`` never expires."""

    __slots__ = ("_end",)

    def __init__(self, seconds: float | None) -> None:
        self._end = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        """Seconds left (may be <= 0), or None without a deadline."""
        if self._end is None:
            return None
        return self._end - time.monotonic()


def loop_epoch(loop: Any) -> Any:
    """A value that changes whenever ``loop`` polls for I/O: libev's
    iteration count.  (The loop's cached time is no such value: starting a
    ``gevent.Timeout`` updates it.)  libuv's loop has no count; its time,
    in milliseconds, serves."""
    try:
        return loop.iteration
    except AttributeError:
        return loop.now()


def yield_to_loop() -> None:
    """Let the event loop run one iteration (timers and I/O included) and
    come back.  ``gevent.sleep(0)`` is not enough: it only queues a
    callback, and the hub runs callbacks queued meanwhile in the same pass,
    so a greenlet that sleeps 0 in a loop can keep timers and I/O waiting
    for milliseconds.  A zero-delay timer fires only in the next iteration,
    after the loop has polled for I/O."""
    hub = get_hub()
    timer = hub.loop.timer(0.0)
    try:
        hub.wait(timer)
    finally:
        timer.close()


def _wait_without_hub(fd: int, events: int, seconds: float | None) -> bool:
    """:meth:`FdWaiter.wait` in a thread without a hub (see the module
    docstring)."""
    if seconds is not None and seconds <= 0:
        return False
    poller = _blocking_poll()
    poller.register(fd, (select.POLLIN if events & READ else 0)
                    | (select.POLLOUT if events & WRITE else 0))
    # (poll() retries on EINTR with the time left.)
    if seconds is None:
        return bool(poller.poll())
    end = time.monotonic() + seconds
    while True:
        # In milliseconds, at most what poll() takes (an int).
        if poller.poll(min(seconds, _LONGEST_POLL) * 1000):
            return True
        seconds = end - time.monotonic()
        if seconds <= 0:
            return False


class FdWaiter:
    """Waits cooperatively until one descriptor is ready for one kind of
    I/O, reusing a single watcher of the current hub."""

    __slots__ = ("_fd", "_events", "_hub", "_watcher")

    def __init__(self, fd: int, events: int) -> None:
        self._fd = fd
        self._events = events
        self._hub = None
        self._watcher = None

    def wait(self, seconds: float | None = None) -> bool:
        """Wait until the descriptor is ready and return True, or return
        False once ``seconds`` have passed (None waits for ever)."""
        hub = get_hub_if_exists()
        if hub is None:
            return _wait_without_hub(self._fd, self._events, seconds)
        watcher = self._watcher
        if watcher is None or self._hub is not hub:
            self.close()
            watcher = self._watcher = hub.loop.io(self._fd, self._events)
            self._hub = hub
        if seconds is None:
            hub.wait(watcher)
            return True
        if seconds <= 0:
            return False
        timer = gevent.Timeout.start_new(seconds)
        try:
            hub.wait(watcher)
            return True
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            return False
        finally:
            timer.close()

    def forget(self) -> Any:
        """Drop the watcher without touching it: after fork, it belongs to
        the parent's dead loop.  The caller keeps it referenced."""
        watcher = self._watcher
        self._watcher = self._hub = None
        return watcher

    def close(self) -> None:
        """Release the watcher (before the descriptor is closed)."""
        watcher = self._watcher
        self._watcher = self._hub = None
        if watcher is not None:
            watcher.close()


# What poll() reports for a descriptor with something to say: data, EOF,
# an error, or an invalid descriptor (all of which make a read return at
# once, as for multiprocessing.connection.wait).
_READY = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR | \
    select.POLLNVAL


def readable_fds(fds: Iterable[int]) -> set[int]:
    """The set of descriptors among ``fds`` that a read would not wait for
    (data, EOF, an error or an invalid descriptor to report).  Never
    blocks."""
    p = select.poll()
    for fd in fds:
        p.register(fd, select.POLLIN)
    return {fd for fd, events in p.poll(0) if events & _READY}


def fd_readable(fd: int) -> bool:
    """True if reading ``fd`` would not wait (see :func:`readable_fds`)."""
    return bool(readable_fds((fd,)))


def input_ready(targets: Iterable[tuple[int, Any]]) -> list[bool]:
    """The rule of "ready" for every receiving end: for each ``(fd,
    reader)`` target, in order, whether a receive would not wait, because
    the C ``reader`` (None: none) holds a whole frame, or ``fd`` has data,
    EOF or an error to report.  Never blocks; a descriptor is only asked
    when its reader has no whole frame."""
    ready = [reader is not None and reader.frame_ready()
             for fd, reader in targets]
    if not all(ready):
        readable = readable_fds([fd for (fd, reader), done
                                 in zip(targets, ready) if not done])
        ready = [done or fd in readable
                 for (fd, reader), done in zip(targets, ready)]
    return ready
