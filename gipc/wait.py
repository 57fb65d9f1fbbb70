"""``gipc.wait()``: the cooperative ``multiprocessing.connection.wait``."""
from __future__ import annotations

from typing import Any, Iterable, Protocol, TypeVar, Union

import gevent
from gevent import get_hub
from gevent.hub import Waiter

from ._cooperate import READ, Deadline, check_timeout, input_ready

__all__ = ["wait"]


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


_T = TypeVar("_T", bound=Union[int, _HasFileno])


def _watch_target(obj: Any) -> Any:
    """``(fd, reader or None)`` for one object given to :func:`wait`: what
    a gipc endpoint says to wait on (``_wait_target()``), else the
    descriptor."""
    target = getattr(type(obj), "_wait_target", None)
    if target is not None:
        return target(obj)
    if isinstance(obj, int):
        return obj, None
    return obj.fileno(), None


def _ready(object_list: list[_T],
           targets: list[tuple[int, Any]]) -> list[_T]:
    """The objects that a read would not wait for, in input order; never
    blocks."""
    return [obj for obj, ready in zip(object_list, input_ready(targets))
            if ready]


def _wait_any(fds: Iterable[int], seconds: float | None) -> None:
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


def wait(object_list: Iterable[_T], timeout: float | None = None) -> list[_T]:
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
    fds = {fd for fd, reader in targets}
    while True:
        remaining = deadline.remaining()
        if remaining is not None and remaining <= 0:
            return []
        _wait_any(fds, remaining)
        ready = _ready(object_list, targets)
        if ready:
            return ready
