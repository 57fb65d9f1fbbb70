"""``gipc.Pool``: the ``multiprocessing.pool.Pool`` API on gipc workers,
cooperative with gevent.

Every wait (``get()``, ``wait()``, ``join()``, iterating ``imap``) waits on
the gevent hub, never in a blocking call; dispatch, result collection and
worker supervision are greenlets, not threads (see :mod:`gipc._workers`).
Beyond the stdlib:

- ``kill_on_cancel`` (default True): a task whose caller stops waiting in
  ``apply()``/``map()``/``starmap()`` (``gevent.Timeout``, ``kill()``), or
  whose :meth:`AsyncResult.cancel` is called, is stopped too: not started
  if it was queued, else its worker is killed and replaced.
- A worker that dies fails only the task it was running, with
  :exc:`gipc.WorkerLostError`; a new worker runs the others.
- ``max_memory_per_child`` and ``idle_timeout`` recycle workers; workers
  start lazily, on the first task.
"""
from __future__ import annotations

import gc
import itertools
import os
from collections import deque
import sys
import time
import warnings
from concurrent.futures import CancelledError
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, TypeVar
from multiprocessing import TimeoutError

import gevent
from gevent.event import Event
from gevent.hub import get_hub

from . import _core, _worker
from ._workers import DONE, MAX_WINDOW, RemoteTraceback, Task, WorkerSet
from .exceptions import WorkerLostError
from types import TracebackType

_IMap = TypeVar("_IMap", bound="IMapIterator")

__all__ = ["Pool", "AsyncResult", "ApplyResult", "MapResult",
           "IMapIterator", "IMapUnorderedIterator", "RemoteTraceback",
           "TimeoutError", "CancelledError", "WorkerLostError"]

RUN = "RUN"
CLOSE = "CLOSE"
TERMINATE = "TERMINATE"


# The pickled task, made in the caller: an unpicklable function or argument
# raises here, before anything is sent.
_encode_call = _worker.encode_call
_set_gc_tracked = _core.set_gc_tracked
_is_tracked = gc.is_tracked
_encode_chunk = _worker.encode_chunk
_perf_counter = time.perf_counter


def _run_callback(callback: Any, value: Any) -> None:
    """Run a user's callback in the result collector; its error is
    reported (as gevent reports a greenlet's) and does not stop the pool."""
    try:
        callback(value)
    except Exception:
        get_hub().handle_error(callback, *sys.exc_info())


def _check_callable(func: Any) -> Any:
    if not callable(func):
        raise TypeError("%r object is not callable" % type(func).__name__)


def _check_chunksize(chunksize: Any) -> Any:
    if isinstance(chunksize, bool) or not isinstance(chunksize, int):
        raise TypeError("chunksize must be an int, not %s"
                        % type(chunksize).__name__)
    if chunksize < 1:
        raise ValueError("Chunksize must be 1+, not %d" % chunksize)
    return chunksize


#: A map's default chunks hold at least this many items once the stdlib's
#: rule (four chunks per worker) would make them larger.
MIN_LARGE_CHUNK = 4096


def _default_chunksize(length: int, processes: int) -> int:
    """A map's chunk size when the caller gives none: the stdlib's (four
    chunks per worker) for a small map; for a large one, chunks of
    ``MIN_LARGE_CHUNK`` items or more, up to 64 per worker.  Many chunks
    let the parent pickle and unpickle while the workers compute, and let
    a worker that is done early take the next chunk instead of idling
    while the other finishes a quarter of its share."""
    stdlib = -(-length // (processes * 4)) or 1
    if stdlib <= MIN_LARGE_CHUNK:
        return stdlib
    return max(-(-length // (processes * 64)), MIN_LARGE_CHUNK)


#: The value of a cancelled result.
_CANCELLED = object()


class ApplyResult(Task):
    """The result of :meth:`Pool.apply_async` (``multiprocessing``'s
    ``AsyncResult``): ``get()``, ``wait()``, ``ready()``, ``successful()``,
    and :meth:`cancel`."""

    # Few slots: a program may hold a great many results, and the cyclic
    # GC visits every slot of every one at each full collection.  A
    # cancelled result has _ok False and _value _CANCELLED; _callbacks is
    # None or (callback, error_callback), dropped once called.
    __slots__ = ("_pool", "_ok", "_value", "_callbacks")
    _ok: bool | None
    _value: Any

    def __init__(
            self, pool: Any, job: Any, callback: Any = None, error_callback: Any = None
    ) -> None:
        self._init_task(job)
        self._pool = pool
        self._ok = None
        self._value = None
        if callback is None and error_callback is None:
            self._callbacks = None
            if type(self) is ApplyResult:  # see Task (a map has its chunks)
                _set_gc_tracked(self, False)
        else:
            self._callbacks = (callback, error_callback)

    def ready(self) -> bool:
        """True once the task is done (or cancelled)."""
        return self._phase == DONE

    def successful(self) -> bool:
        """Whether the task returned without error; ``ValueError`` if it
        is not ready."""
        if self._phase != DONE:
            raise ValueError("%r not ready" % self)
        return bool(self._ok)

    def wait(self, timeout: Optional[float] = None) -> None:
        """Wait cooperatively until the result is ready, or ``timeout``
        seconds."""
        self._wait(timeout)

    def get(self, timeout: Optional[float] = None) -> Any:
        """The task's return value; its exception is raised (with the
        worker's traceback as ``__cause__``).  Raises
        ``multiprocessing.TimeoutError`` if not ready within ``timeout``
        seconds, ``CancelledError`` if cancelled."""
        if self._phase != DONE:
            if not self._wait(timeout):
                raise TimeoutError
        else:
            # A loop over ready results never waits: let the loop run.
            self._pool._engine.fair()
        if self._ok:
            return self._value
        if self._value is _CANCELLED:
            raise CancelledError()
        try:
            raise self._value
        finally:
            self = None  # type: ignore[assignment]  # no reference cycle

    def cancel(self) -> bool:
        """Cancel the task (an extension of the stdlib API).  A queued task
        never starts; a running one is stopped (its worker killed and
        replaced) if the pool has ``kill_on_cancel``.  Returns True if the
        task is now cancelled, False if it was done already or is running
        and may not be killed."""
        if not self._pool._engine.cancel(self):
            return False
        self._on_cancel()
        return True

    def cancelled(self) -> bool:
        """True if the task was cancelled."""
        return self._value is _CANCELLED

    def _on_result(self, ok: Any, value: Any) -> None:
        self._ok = ok
        self._value = value
        self._wake()
        callbacks = self._callbacks
        self._callbacks = None
        self._settle()
        if callbacks is not None:
            callback = callbacks[0] if ok else callbacks[1]
            if callback is not None:
                _run_callback(callback, value)

    def _on_cancel(self) -> None:
        self._ok = False
        self._value = _CANCELLED
        self._callbacks = None
        self._wake()
        self._settle()

    def _settle(self) -> None:
        # Done: out of the cyclic GC unless the value may lead back here
        # (see Task).  Not a subclass of the program's: its own attributes
        # may.
        if type(self) in _OWN_RESULTS:
            _set_gc_tracked(self, _is_tracked(self._value))

    def __repr__(self) -> str:
        state = ("pending" if self._phase != DONE else "cancelled"
                 if self._value is _CANCELLED else "done")
        return "<%s %s>" % (type(self).__name__, state)


AsyncResult = ApplyResult


class _Chunk(Task):
    """One chunk of a map: its outcome goes to the map's result object."""

    __slots__ = ("_owner", "_index")

    def __init__(self, owner: Any, index: Any, job: Any) -> None:
        self._init_task(job)
        self._owner = owner
        self._index = index

    def _on_result(self, ok: Any, value: Any) -> None:
        self._owner._set(self._index, ok, value)

    def _on_cancel(self) -> None:
        self._owner._cancel_chunk(self._index)


class MapResult(ApplyResult):
    """The result of :meth:`Pool.map_async`: ready when every chunk is
    done, or at the first chunk that failed."""

    __slots__ = ("_chunks", "_chunksize", "_left")

    def __init__(
            self, pool: Any, length: Any, chunksize: Any, callback: Any, error_callback:
            Any
    ) -> None:
        ApplyResult.__init__(self, pool, None, callback, error_callback)
        self._chunksize = chunksize
        self._chunks: list[Any] | None = []  # None once done
        self._value = [None] * length
        self._left = -(-length // chunksize) if length else 0
        if not length:
            self._finish(True, [])

    def _finish(self, ok: Any, value: Any) -> None:
        self._phase = DONE
        # The chunks refer back to this result: dropping them breaks the
        # cycle, so that a finished map is freed by its reference count,
        # not by the cyclic GC (and costs one object while it is held).
        self._chunks = None
        ApplyResult._on_result(self, ok, value)

    def _on_cancel(self) -> None:
        self._chunks = None
        ApplyResult._on_cancel(self)

    def _set(self, index: Any, ok: Any, value: Any) -> None:
        if self._phase == DONE:
            return
        if ok:
            start = index * self._chunksize
            self._value[start:start + len(value)] = value
            self._left -= 1
            if not self._left:
                self._finish(True, self._value)
        else:
            self._finish(False, value)

    def _cancel_chunk(self, index: Any) -> None:
        if self._phase != DONE:
            self._phase = DONE
            self._on_cancel()

    def cancel(self) -> bool:
        """Cancel every chunk not done (see :meth:`ApplyResult.cancel`);
        True if the map is now cancelled."""
        if self._phase == DONE:
            return False
        engine = self._pool._engine
        stopped = [engine.cancel(chunk) for chunk in self._chunks or ()]
        if not any(stopped) and not engine.kill_on_cancel:
            return False
        self._phase = DONE
        self._on_cancel()
        return True


_OWN_RESULTS = (ApplyResult, MapResult)


class IMapIterator:
    """The iterator of :meth:`Pool.imap`: results in order; ``next(timeout)``
    raises ``multiprocessing.TimeoutError`` when the next one is not ready
    in time."""

    _ordered = True

    def __init__(self, pool: Any, chunksize: Any) -> None:
        self._pool = pool
        self._chunksize = chunksize
        self._done: dict[Any, Any] = {}            # imap: chunk index -> (ok, value)
        self._arrived: deque[Any] = deque()    # imap_unordered: (ok, value) in order
        self._next_chunk = 0
        self._current: Iterator[Any] = iter(())   # items of the chunk being handed out
        self._length = None        # number of chunks, once all are queued
        self._changed = Event()    # a chunk is done, or the length known
        self._unfinished = 0       # chunks queued, not done
        self._room = Event()       # the feeder may queue more
        self._feeder = None

    def __iter__(self) -> Any:
        return self

    def _set(self, index: Any, ok: Any, value: Any) -> None:
        if self._ordered:
            self._done[index] = (ok, value)
        else:
            self._arrived.append((ok, value))
        self._changed.set()
        self._unfinished -= 1
        self._room.set()

    def _cancel_chunk(self, index: Any) -> None:
        self._set(index, False, CancelledError())

    def _set_length(self, length: Any) -> None:
        self._length = length
        self._changed.set()

    def _take(self) -> Any:
        """The next chunk's outcome, or None if it is not there yet."""
        if self._ordered:
            return self._done.pop(self._next_chunk, None)
        if self._arrived:
            return self._arrived.popleft()
        return None

    def next(self, timeout: Optional[float] = None) -> Any:
        """The next result; ``StopIteration`` at the end."""
        for item in self._current:
            return item
        deadline = None
        if timeout is not None:
            deadline = time.monotonic() + timeout
        while True:
            outcome = self._take()
            if outcome is not None:
                break
            if self._length is not None and self._next_chunk >= self._length:
                raise StopIteration
            self._changed.clear()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0 \
                    or not self._changed.wait(left):
                raise TimeoutError
        self._next_chunk += 1
        ok, value = outcome
        if not ok:
            raise value
        self._current = iter(value)
        for item in self._current:
            return item
        return self.next(timeout)

    __next__ = next

    def _feed(self, engine: Any, func: Any, iterable: Any, star: Any) -> None:
        """Queue the chunks of ``iterable`` as they come, keeping at most a
        bounded number of them unfinished (a long or endless iterable is
        not read into memory ahead of the workers)."""
        chunksize = self._chunksize
        # Enough to fill every worker's window twice over.
        limit = 2 * MAX_WINDOW * engine.size
        it = iter(iterable)
        index = 0
        try:
            while True:
                try:
                    chunk = tuple(itertools.islice(it, chunksize))
                except Exception as exc:
                    self._unfinished += 1
                    self._set(index, False, exc)
                    index += 1
                    break
                if not chunk:
                    break
                try:
                    job = _encode_chunk(func, chunk, star)
                except Exception as exc:
                    self._unfinished += 1
                    self._set(index, False, exc)
                    index += 1
                    break
                self._unfinished += 1
                engine.submit(_Chunk(self, index, job))
                index += 1
                while self._unfinished >= limit:
                    self._room.clear()
                    self._room.wait()
        finally:
            self._set_length(index)
            self._pool._feeders.discard(gevent.getcurrent())


class IMapUnorderedIterator(IMapIterator):
    """The iterator of :meth:`Pool.imap_unordered`: results as they
    complete."""

    _ordered = False

    def _take(self) -> Any:
        if self._arrived:
            return self._arrived.popleft()
        return None


class Pool:
    """A pool of worker processes with the ``multiprocessing.pool.Pool``
    API, whose every wait is cooperative (see the module docstring).

    :arg processes: number of workers (default ``os.cpu_count()``); they
        start lazily, when there is work for them.
    :arg initializer: if not None, each worker runs
        ``initializer(*initargs)`` when it starts.  If it raises, the
        tasks fail with its error (no worker is restarted in a loop) and so
        does every later task.
    :arg maxtasksperchild: a worker is replaced after this many tasks.
    :arg context: how the workers start, as multiprocessing's ``context``:
        None (forked, as gipc 1.8's), a gipc context
        (``gipc.get_context("spawn")``, or use ``ctx.Pool(...)``) or a
        ``multiprocessing`` one (the gipc method of that name).  Under
        "spawn" and "forkserver" the functions, their arguments and the
        initializer travel pickled: they must be importable in the workers.
    :arg kill_on_cancel: stop a task whose caller stops waiting (see the
        module docstring); False keeps the stdlib behaviour (it runs on,
        its result dropped).
    :arg max_memory_per_child: bytes; a worker whose resident memory
        exceeds it after a task is replaced.
    :arg idle_timeout: seconds; a worker idle that long exits (another
        starts when work comes).
    """

    def __init__(self, processes: Optional[int] = None,
                 initializer: Optional[Callable[..., Any]] = None,
                 initargs: Iterable[Any] = (),
                 maxtasksperchild: Optional[int] = None,
                 context: Any = None, *,
                 kill_on_cancel: bool = True,
                 max_memory_per_child: Optional[int] = None,
                 idle_timeout: Optional[float] = None) -> None:
        if processes is None:
            processes = os.cpu_count() or 1
        if isinstance(processes, bool) or not isinstance(processes, int):
            raise TypeError("processes must be an int, not %s"
                            % type(processes).__name__)
        if processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if maxtasksperchild is not None and (
                isinstance(maxtasksperchild, bool)
                or not isinstance(maxtasksperchild, int)
                or maxtasksperchild <= 0):
            raise ValueError("maxtasksperchild must be a positive int or None")
        if max_memory_per_child is not None and (
                isinstance(max_memory_per_child, bool)
                or not isinstance(max_memory_per_child, int)
                or max_memory_per_child <= 0):
            raise ValueError("max_memory_per_child must be a positive int "
                             "(bytes) or None")
        if idle_timeout is not None and (
                isinstance(idle_timeout, bool)
                or not isinstance(idle_timeout, (int, float))
                or not idle_timeout > 0):
            raise ValueError("idle_timeout must be a positive number of "
                             "seconds or None")
        from .context import pool_start_method
        start_method = pool_start_method(context, "context")
        self._processes = processes
        self._state = RUN
        self._feeders: set[Any] = set()
        self._engine = WorkerSet(
            processes, initializer, initargs, maxtasksperchild,
            max_memory_per_child, idle_timeout, kill_on_cancel,
            lambda message, code: WorkerLostError(message, code),
            lambda exc: exc, name="gipc-pool", start_method=start_method)

    # -- submitting ----------------------------------------------------

    def _check_running(self) -> Any:
        self._engine.check_process()
        if self._state != RUN:
            raise ValueError("Pool not running")

    def apply_async(self, func: Callable[..., Any], args: Iterable[Any] = (),
                    kwds: Mapping[str, Any] = {},  # noqa: B006 (stdlib's)
                    callback: Optional[Callable[[Any], None]] = None,
                    error_callback: Optional[
                        Callable[[BaseException], None]] = None,
                    ) -> ApplyResult:
        """Run ``func(*args, **kwds)`` in a worker; return its
        :class:`AsyncResult`.  ``callback``/``error_callback`` are called
        with the value or the exception in the parent (in the greenlet that
        collects results: they must not block for long)."""
        self._check_running()
        _check_callable(func)
        self._engine.check_function(func)
        result = ApplyResult(self, _encode_call(func, tuple(args), dict(kwds)),
                             callback, error_callback)
        self._engine.submit(result)
        return result

    def apply(self, func: Callable[..., Any], args: Iterable[Any] = (),
              kwds: Mapping[str, Any] = {}) -> Any:  # noqa: B006
        """``apply_async(func, args, kwds).get()``.  With
        ``kill_on_cancel``, a caller interrupted while waiting
        (``gevent.Timeout``, ``kill()``) stops the task too."""
        return self._wait_for(self.apply_async(func, args, kwds))

    def _wait_for(self, result: ApplyResult) -> Any:
        try:
            return result.get()
        except BaseException:
            if result._phase != DONE and self._engine.kill_on_cancel:
                result.cancel()
            raise

    def _map_async(self, func: Any, iterable: Any, chunksize: Any,
                   callback: Any, error_callback: Any, star: bool) -> MapResult:
        self._check_running()
        _check_callable(func)
        self._engine.check_function(func)
        if not hasattr(iterable, "__len__"):
            iterable = list(iterable)
        if chunksize is None:
            chunksize = _default_chunksize(len(iterable), self._processes)
        else:
            _check_chunksize(chunksize)
        engine = self._engine
        result = MapResult(self, len(iterable), chunksize, callback,
                           error_callback)
        if not len(iterable):
            return result
        function, encode = _worker.chunk_encoder(func, star)
        chunks = []
        for index, chunk in enumerate(_worker.chunked(iterable, chunksize)):
            chunks.append(_Chunk(result, index, (function, encode(chunk))))
            if _perf_counter() >= engine._next_yield:
                engine.fair()
        self._check_running()
        result._chunks = chunks
        engine.submit_all(chunks)
        return result

    def map_async(self, func: Callable[[Any], Any], iterable: Iterable[Any],
                  chunksize: Optional[int] = None,
                  callback: Optional[Callable[[list[Any]], None]] = None,
                  error_callback: Optional[
                      Callable[[BaseException], None]] = None,
                  ) -> MapResult:
        """Like :meth:`map`, returning a :class:`MapResult`."""
        return self._map_async(func, iterable, chunksize, callback,
                               error_callback, False)

    def map(self, func: Callable[[Any], Any], iterable: Iterable[Any],
            chunksize: Optional[int] = None) -> list[Any]:
        """``[func(x) for x in iterable]``, computed by the workers in
        chunks (default: the stdlib's, about four per worker)."""
        return self._wait_for(  # type: ignore[no-any-return]  # a list
            self._map_async(func, iterable, chunksize, None, None, False))

    def starmap_async(self, func: Callable[..., Any], iterable: Iterable[Any],
                      chunksize: Optional[int] = None,
                      callback: Optional[Callable[[list[Any]], None]] = None,
                      error_callback: Optional[
                          Callable[[BaseException], None]] = None,
                      ) -> MapResult:
        """Like :meth:`starmap`, returning a :class:`MapResult`."""
        return self._map_async(func, iterable, chunksize, callback,
                               error_callback, True)

    def starmap(self, func: Callable[..., Any], iterable: Iterable[Any],
                chunksize: Optional[int] = None) -> list[Any]:
        """``[func(*args) for args in iterable]``, in the workers."""
        return self._wait_for(  # type: ignore[no-any-return]  # a list
            self._map_async(func, iterable, chunksize, None, None, True))

    def _imap(self, cls: type[_IMap], func: Any, iterable: Any,
              chunksize: Any, star: bool = False) -> _IMap:
        self._check_running()
        _check_callable(func)
        self._engine.check_function(func)
        _check_chunksize(chunksize)
        result = cls(self, chunksize)
        feeder = gevent.spawn(result._feed, self._engine, func, iterable,
                              star)
        result._feeder = feeder
        self._feeders.add(feeder)
        return result

    def imap(self, func: Callable[[Any], Any], iterable: Iterable[Any],
             chunksize: int = 1) -> "IMapIterator":
        """An iterator of ``func(x)`` for the items of ``iterable``, in
        order.  The iterable is consumed as the workers need it."""
        return self._imap(IMapIterator, func, iterable, chunksize)

    def imap_unordered(self, func: Callable[[Any], Any], iterable: Iterable[Any],
                       chunksize: int = 1) -> "IMapUnorderedIterator":
        """Like :meth:`imap`, in the order the results complete."""
        return self._imap(IMapUnorderedIterator, func, iterable, chunksize)

    # -- shutting down ---------------------------------------------------

    def close(self) -> None:
        """Accept no more tasks; the workers exit when the queued ones are
        done."""
        self._engine.check_process()
        if self._state == RUN:
            self._state = CLOSE
            self._engine.stop()

    def terminate(self) -> None:
        """Stop the workers now (SIGTERM) and wait for them; results not
        ready are cancelled (their ``get()`` raises ``CancelledError``)."""
        self._engine.check_process()
        self._state = TERMINATE
        gevent.killall(list(self._feeders))
        self._feeders.clear()
        self._engine.terminate()
        self._engine.join()

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait cooperatively for the workers to exit, after
        :meth:`close` or :meth:`terminate`.  ``timeout`` (an extension):
        give up after that many seconds (returns False)."""
        self._engine.check_process()
        if self._state == RUN:
            raise ValueError("Pool is still running")
        if self._feeders:
            gevent.joinall(list(self._feeders), timeout=timeout)
        return self._engine.join(timeout)

    def __enter__(self) -> Any:
        self._check_running()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.terminate()

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if getattr(self, "_state", None) == RUN:
            _warn("unclosed running gipc pool %r" % self, ResourceWarning,
                  source=self)
            try:
                if os.getpid() == self._engine.pid:
                    self._engine.stop()
            except Exception:
                pass

    def __reduce__(self) -> Any:
        raise NotImplementedError(
            "pool objects cannot be passed between processes or pickled")

    def __repr__(self) -> str:
        return "<%s.%s state=%s pool_size=%d>" % (
            type(self).__module__, type(self).__qualname__, self._state,
            self._processes)
