"""Cooperative waits for the shared primitives: bells and dead holders.

A bell is a pipe of a ``_sync.Block`` (see csrc/sync.c for the protocol):
a waiter counts itself in, arms the bell, checks its condition and then
waits for the pipe to be readable on gevent watchers, never in a blocking
call.  :func:`wait_until` is that loop.  While it waits it can also watch
the process that holds what it waits for (its pidfd becomes readable when
that process dies), so a dead holder is noticed at once.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, Dict, Iterable, Set, TypeVar

import gevent
from gevent import get_hub
from gevent.hub import Waiter

from . import _cooperate, _ownership
from ._cooperate import check_timeout, close_fd, fd_readable

if TYPE_CHECKING:
    from ._sync import Block

_T = TypeVar("_T")


# How soon a waiter looks again when the holder it should watch is gone.
_LOOK_AGAIN = 0.01


def bell_words(bell: int) -> tuple[int, int]:
    """The indexes of bell ``bell``'s waiter count and armed flag."""
    return 16 + 8 * bell, 17 + 8 * bell


def Deadline(timeout: float | None) -> _cooperate.Deadline:
    """The point ``timeout`` seconds from now (None: never), checked as the
    multiprocessing API takes it: None or a number of seconds."""
    timeout = check_timeout(timeout)
    if isinstance(timeout, gevent.Timeout):
        raise TypeError("timeout must be None or a number of seconds")
    return _cooperate.Deadline(timeout)


# The waits in progress in this process, per block: close() wakes them
# (their descriptors are about to go).
_local_waits: Dict[int, Set[Waiter]] = {}


def wake_local_waiters(block: Block) -> None:
    """Make every wait of this process on ``block`` return now."""
    for waiter in _local_waits.pop(id(block), ()):
        waiter.hub.loop.run_callback(waiter.switch, None)


def wait_readable(fds: Iterable[int], timeout: float | None,
                  block: Block) -> int | None:
    """Wait cooperatively until one of ``fds`` (of ``block``) is readable;
    return it, or None after ``timeout`` seconds (None: no limit) or if
    ``block`` is closed meanwhile."""
    hub = get_hub()
    waiter = Waiter(hub)
    watchers = []
    timer = None
    waits = _local_waits.setdefault(id(block), set())
    waits.add(waiter)
    try:
        for fd in fds:
            watcher = hub.loop.io(fd, 1)
            watchers.append(watcher)
            watcher.start(waiter.switch, fd)
        if timeout is not None:
            timer = hub.loop.timer(max(timeout, 0.0))
            timer.start(waiter.switch, None)
        return waiter.get()  # type: ignore[no-any-return]  # gevent
    finally:
        waits.discard(waiter)
        if not waits and _local_waits.get(id(block)) is waits:
            del _local_waits[id(block)]
        for watcher in watchers:
            watcher.stop()
            watcher.close()
        if timer is not None:
            timer.stop()
            timer.close()


def open_pidfd(pid: int) -> int | None:
    """A pidfd on ``pid``, or None if that process is gone (reaped) or
    cannot be watched."""
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


def process_is_dead(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie counts as dead)."""
    if pid == _ownership.pid:
        return False
    fd = open_pidfd(pid)
    if fd is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False
    try:
        return fd_readable(fd)  # a pidfd is readable once its process exits
    finally:
        close_fd(fd)


def wait_until(block: Block, bell: int, attempt: Callable[[], _T],
               deadline: _cooperate.Deadline,
               holder: Callable[[], int] | None = None,
               still_ready: Callable[[], bool] | None = None) -> _T:
    """Call ``attempt()`` until it returns something true, waiting on bell
    ``bell`` of ``block`` in between; return that value, or the last false
    one once ``deadline`` passes.

    ``holder()``, if given, names the pid whose death should end a wait
    early (it is called again after each wake-up).  ``still_ready()``
    tells, on the way out, whether other waiters may proceed now (they are
    woken again, since this waiter may have drained their wake-up).
    """
    waiters, armed = bell_words(bell)
    block.add(waiters, 1)
    try:
        while True:
            block.store(armed, 1)
            result = attempt()
            if result:
                return result
            remaining = deadline.remaining()
            if remaining is not None and remaining <= 0:
                return result
            fds = [block.bell_fd(bell)]
            pidfd = None
            pid = holder() if holder is not None else 0
            if pid and pid != _ownership.pid:
                pidfd = open_pidfd(pid)
                if pidfd is not None:
                    fds.append(pidfd)
                elif remaining is None or remaining > _LOOK_AGAIN:
                    # Gone meanwhile (reaped): attempt() sees to it soon.
                    remaining = _LOOK_AGAIN
            try:
                wait_readable(fds, remaining, block)
            finally:
                if pidfd is not None:
                    close_fd(pidfd)
            block.drain(bell)
    finally:
        if not block.closed:  # closed by another greenlet meanwhile
            left = block.add(waiters, -1)
            if left > 0 and (still_ready is None or still_ready()):
                block.store(armed, 1)
                block.ring(bell)
