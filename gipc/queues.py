"""Queues shared by processes, with the ``multiprocessing.queues`` API and
cooperative waits: ``Queue``, ``SimpleQueue`` and ``JoinableQueue``.

Items are pickled and copied whole into a ring in shared memory (made
before the fork, see csrc/sync.c); ``put()`` and ``get()`` move no byte
through the kernel unless a process sleeps.  A consumer takes exactly one
item per ``get()`` and never reads ahead, so any number of producers and
consumers in any processes each see every item exactly once.  An item is
committed whole or not at all: a process that dies inside ``put()`` or
``get()``, or a call cancelled by ``timeout=`` or ``gevent.Timeout``,
leaves the queue as it was.  There is no feeder thread: ``put()`` has
stored the item when it returns (so ``join_thread()`` and
``cancel_join_thread()`` exist for the API's sake only).

The ring reserves address space, not memory: only the pages holding
unconsumed items cost memory, and they are given back as they are read.
An unbounded queue (``maxsize=0``) stops accepting items, and ``put()``
waits, only when its 16 GiB reservation is full.
"""
from __future__ import annotations

import pickle
import queue
import time
from typing import Any, Optional

from . import _ownership
from ._bells import Deadline, process_is_dead, wait_until
from ._cooperate import yield_to_loop
from ._shared import SharedObject
from ._sync import Block

__all__ = ["Queue", "SimpleQueue", "JoinableQueue"]

_RING_BYTES = 1 << 34
_DATA_BELL, _SPACE_BELL, _JOIN_BELL = 0, 1, 2
# Ring words (csrc/sync.c).
_HEAD, _NPUT, _WLOCK, _UNFINISHED = 64, 65, 66, 67
_TAIL, _NGET, _RLOCK = 72, 73, 74
_PUT_OK, _PUT_NO_SPACE, _PUT_BUSY, _PUT_FULL, _PUT_TOO_BIG = range(5)
_GET_EMPTY, _GET_BUSY = 1, 2

# A caller that never has to wait still lets the loop run about every
# millisecond (before taking or storing an item, never after: a timeout
# there must find the queue unchanged).
_YIELD_EVERY = 0.001
_clock = time.monotonic
_due = 0.0


def _yield_to_loop() -> None:
    global _due
    try:
        yield_to_loop()
    finally:
        # From now: a yield that took long (other greenlets ran) must not
        # make the next call yield at once.
        _due = _clock() + _YIELD_EVERY


_pickle_dumps = pickle.dumps
_pickle_loads = pickle.loads
_PROTOCOL = pickle.HIGHEST_PROTOCOL


def _recover_if_dead(block: Any, word: Any) -> Any:
    """The other end's spin lock stayed taken: free it if its holder died
    (the ring is intact: records are committed whole).  A live holder
    rings the bell when it is done."""
    pid = block.load(word)
    return bool(pid) and process_is_dead(pid) and block.cas(word, pid, 0)


class _RingQueue(SharedObject):
    """The queue machinery shared by the three queue classes."""

    _bells = 2
    _joinable = False

    def __init__(self, maxsize: int = 0) -> None:
        if not isinstance(maxsize, int) or isinstance(maxsize, bool):
            raise TypeError("maxsize must be an integer, not %s"
                            % type(maxsize).__name__)
        if maxsize < 0:
            raise ValueError("maxsize must be >= 0")
        self._maxsize = maxsize
        self._closed = False
        self._block = Block(self._bells, _RING_BYTES)
        self._register()

    def put(self, obj: Any, block: bool = True,
            timeout: Optional[float] = None) -> None:
        """Put ``obj`` (pickled now: a later change of it is not seen);
        if the queue is full, wait cooperatively when ``block`` (at most
        ``timeout`` seconds).

        :raises queue.Full: full, and not blocking or the timeout passed.
        :raises ValueError: the queue was closed in this process.
        """
        if self._closed:
            raise ValueError("Queue %r is closed" % self)
        if _clock() >= _due:
            _yield_to_loop()
        # An unpicklable object fails here, before the queue is touched.
        data = _pickle_dumps(obj, _PROTOCOL)
        code = self._block.put(data, self._maxsize, _ownership.pid,
                               self._joinable)
        if code:
            self._put_slow(data, code, block, timeout)

    def _put_slow(self, data: Any, code: Any, block: Any, timeout: Any) -> Any:
        b = self._block
        if code == _PUT_TOO_BIG:
            raise ValueError("an item of %d bytes pickled is larger than "
                             "this queue's ring (%d bytes)"
                             % (len(data), b.capacity))
        pid = _ownership.pid
        maxsize = self._maxsize
        joinable = self._joinable

        def attempt() -> Any:
            code = b.put(data, maxsize, pid, joinable)
            while code == _PUT_BUSY and _recover_if_dead(b, _WLOCK):
                code = b.put(data, maxsize, pid, joinable)
            if code == _PUT_OK:
                return True
            if code == _PUT_BUSY:
                # Another writer has the write turn: wait for it (it rings
                # the space bell when done), even without ``block``.
                return None
            return None if block else "full"

        if not block and code != _PUT_BUSY:
            raise queue.Full
        if wait_until(b, _SPACE_BELL, attempt,
                      Deadline(timeout if block else None),
                      holder=lambda: b.load(_WLOCK)) is not True:
            raise queue.Full

    def get(self, block: bool = True,
            timeout: Optional[float] = None) -> Any:
        """Remove and return the oldest item; if there is none, wait
        cooperatively when ``block`` (at most ``timeout`` seconds).

        :raises queue.Empty: empty, and not blocking or the timeout passed.
        :raises ValueError: the queue was closed in this process.
        """
        if self._closed:
            raise ValueError("Queue %r is closed" % self)
        if _clock() >= _due:
            _yield_to_loop()
        item = self._block.get(_ownership.pid)
        if item.__class__ is not bytes:
            item = self._get_slow(item, block, timeout)
        return _pickle_loads(item)

    def _get_slow(self, code: Any, block: Any, timeout: Any) -> Any:
        b = self._block
        pid = _ownership.pid
        if not block and code == _GET_EMPTY:
            raise queue.Empty

        def attempt() -> Any:
            item = b.get(pid)
            while item == _GET_BUSY and _recover_if_dead(b, _RLOCK):
                item = b.get(pid)
            if item.__class__ is bytes:
                return item
            if item == _GET_BUSY:
                # Another reader has the read turn: wait for it (it rings
                # the data bell if items are left), even without ``block``.
                return None
            return None if block else "empty"

        item = wait_until(b, _DATA_BELL, attempt,
                          Deadline(timeout if block else None),
                          holder=lambda: b.load(_RLOCK),
                          still_ready=self._has_items)
        if item.__class__ is not bytes:
            raise queue.Empty
        return item

    def _has_items(self) -> Any:
        b = self._block
        return b.load(_HEAD) != b.load(_TAIL)

    def qsize(self) -> int:
        """The number of items in the queue (approximate while other
        processes put and get)."""
        b = self._block
        taken = b.load(_NGET)
        return max(b.load(_NPUT) - taken, 0)

    def empty(self) -> bool:
        """Whether the queue is empty (approximate, as qsize())."""
        return not self._has_items()

    def close(self) -> None:
        """No more put() or get() from this process: release its
        descriptors and its mapping of the queue.  Items already put stay
        for the other processes."""
        if not self._closed:
            self._closed = True
            self._close_shared()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return "<gipc.%s object at %#x, %s>" % (
            type(self).__name__, id(self), state)


class Queue(_RingQueue):
    """A FIFO queue shared by processes (multiprocessing.Queue), for any
    number of producers and consumers.  ``maxsize`` > 0 bounds the number
    of items; 0 means no bound."""

    def put_nowait(self, obj: Any) -> None:
        """put(obj, False)."""
        self.put(obj, False)

    def get_nowait(self) -> Any:
        """get(False)."""
        return self.get(False)

    def full(self) -> bool:
        """Whether the queue holds ``maxsize`` items (approximate)."""
        return self._maxsize > 0 and self.qsize() >= self._maxsize

    def join_thread(self) -> None:
        """For the multiprocessing API: there is no feeder thread, every
        put() has stored its item already."""
        if not self._closed:
            raise AssertionError("Queue %r not closed" % self)

    def cancel_join_thread(self) -> None:
        """For the multiprocessing API: nothing to cancel."""


class JoinableQueue(Queue):
    """A Queue whose consumers report each item done (``task_done()``), so
    that ``join()`` can wait for all of them
    (multiprocessing.JoinableQueue)."""

    _bells = 3
    _joinable = True

    def task_done(self) -> None:
        """Tell that an item taken with get() is fully processed.

        :raises ValueError: more calls than items put.
        """
        b = self._block
        while True:
            left = b.load(_UNFINISHED)
            if left <= 0:
                raise ValueError("task_done() called too many times")
            if b.cas(_UNFINISHED, left, left - 1):
                break
        if left == 1:
            b.ring(_JOIN_BELL)

    def join(self) -> None:
        """Wait cooperatively until every item put was reported done."""
        b = self._block

        def done() -> Any:
            return b.load(_UNFINISHED) == 0

        if not done():
            wait_until(b, _JOIN_BELL, done, Deadline(None), still_ready=done)


class SimpleQueue(_RingQueue):
    """An unbounded FIFO queue shared by processes
    (multiprocessing.SimpleQueue): ``put(obj)``, ``get()``, ``empty()``,
    ``close()``.  (``put`` and ``get`` also take the ``block`` and
    ``timeout`` of :class:`Queue`, a gipc extension.)"""
