"""``gipc.wait()``: the cooperative ``multiprocessing.connection.wait``."""
import select

import gevent
from gevent import get_hub
from gevent.hub import Waiter

from ._cooperate import READ, Deadline, check_timeout
from .connection import Connection
from .handles import _GIPCDuplexHandle, _GIPCReader

__all__ = ["wait"]

# What poll() reports for a descriptor with something to say: data, EOF,
# an error, or an invalid descriptor (all of which make a read return at
# once, as for multiprocessing.connection.wait).
_READY = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR | \
    select.POLLNVAL


def _watch_target(obj):
    """``(reader core or None, fd)`` for one object given to :func:`wait`."""
    if isinstance(obj, Connection):
        return obj._ready_core(), obj.fileno()
    if isinstance(obj, _GIPCDuplexHandle):
        obj = obj._reader
    if isinstance(obj, _GIPCReader):
        return obj._core, obj.fileno()
    if isinstance(obj, int):
        return None, obj
    return None, obj.fileno()


def _ready(object_list, targets):
    """The objects that a read would not wait for, in input order; never
    blocks."""
    p = select.poll()
    for core, fd in targets:
        p.register(fd, select.POLLIN)
    readable = {fd for fd, events in p.poll(0) if events & _READY}
    return [obj for obj, (core, fd) in zip(object_list, targets)
            if fd in readable or (core is not None and core.frame_ready())]


def _wait_any(fds, seconds):
    """Wait on the hub until one of ``fds`` is readable or ``seconds``
    passed (None: no limit)."""
    hub = get_hub()
    waiter = Waiter(hub)
    watchers = []
    try:
        for fd in fds:
            watcher = hub.loop.io(fd, READ)
            watchers.append(watcher)
            watcher.start(waiter.switch, fd)
        if seconds is not None:
            timer = hub.loop.timer(seconds)
            watchers.append(timer)
            timer.start(waiter.switch, None)
        waiter.get()
    finally:
        for watcher in watchers:
            watcher.stop()
            watcher.close()


def wait(object_list, timeout=None):
    """Wait until at least one object of ``object_list`` is ready and return
    the ready ones, in input order; return ``[]`` if ``timeout`` seconds
    pass first (None waits for ever).  Only the calling greenlet waits.

    Accepted objects: gipc :class:`~gipc.Connection` objects, gipc pipe
    handles (a read end or duplex handle; one that already holds a whole
    received message is ready at once), process sentinels (ints: any file
    descriptor), and anything with a ``fileno()`` method.  "Ready" means a
    read would not wait: there is a message or data, or EOF.
    """
    object_list = list(object_list)
    if timeout is not None:
        if isinstance(timeout, gevent.Timeout):
            raise TypeError("timeout must be None or a number of seconds")
        timeout = check_timeout(timeout)
    targets = [_watch_target(obj) for obj in object_list]
    ready = _ready(object_list, targets)
    if ready:
        return ready
    deadline = Deadline(timeout)
    fds = {fd for core, fd in targets}
    while True:
        remaining = deadline.remaining()
        if remaining is not None and remaining <= 0:
            return []
        _wait_any(fds, remaining)
        ready = _ready(object_list, targets)
        if ready:
            return ready
