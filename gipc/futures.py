"""``gipc.ProcessPoolExecutor`` (the ``concurrent.futures`` executor API on
gipc workers) and cooperative ``futures_wait()`` / ``as_completed()``.

The executor runs on the same engine as :class:`gipc.Pool`
(:mod:`gipc._workers`): no helper thread, every wait on the gevent hub.
Its futures are ``concurrent.futures.Future`` objects whose ``result()``
and ``exception()`` wait cooperatively.

``concurrent.futures.wait()`` and ``as_completed()`` wait on threading
primitives and would block the event loop of a program that did not
monkey-patch; :func:`futures_wait` and :func:`as_completed` have their
signatures and wait on the hub instead.  They accept *any*
``concurrent.futures.Future``, also one completed by another OS thread (a
``ThreadPoolExecutor``'s, or a distributed executor's such as
``dask.distributed``): the completing thread wakes the hub through a gevent
async watcher.
"""
from __future__ import annotations

import collections
import gc
import os
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable, Iterator, Optional
from concurrent import futures as _cf
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION
from concurrent.futures.process import BrokenProcessPool

from gevent.event import Event
from gevent.hub import get_hub

from . import _core, _ownership, _worker
from ._workers import DONE, PENDING, Task, WorkerSet
from .exceptions import WorkerLostError

try:
    from gevent._hub_local import get_hub_if_exists
except ImportError:  # pragma: no cover (a gevent that moved it)
    def get_hub_if_exists() -> Any:
        return get_hub()

__all__ = ["ProcessPoolExecutor", "Future", "BrokenWorkerError",
           "futures_wait", "as_completed", "FIRST_COMPLETED",
           "FIRST_EXCEPTION", "ALL_COMPLETED"]

#: What :func:`futures_wait` returns (the stdlib's namedtuple, by name).
DoneAndNotDoneFutures = collections.namedtuple(
    "DoneAndNotDoneFutures", "done not_done")

# The stdlib Future's states (concurrent.futures._base).
_set_gc_tracked = _core.set_gc_tracked
_is_tracked = gc.is_tracked

_PENDING = "PENDING"
_RUNNING = "RUNNING"
_FINISHED = "FINISHED"
_CANCELLED = "CANCELLED"
_CANCELLED_AND_NOTIFIED = "CANCELLED_AND_NOTIFIED"
_CANCELLED_STATES = (_CANCELLED, _CANCELLED_AND_NOTIFIED)
_DONE_STATES = (_FINISHED, _CANCELLED, _CANCELLED_AND_NOTIFIED)


class BrokenWorkerError(WorkerLostError, BrokenProcessPool):
    """The worker running this future's task died (or was terminated):
    only this future fails; the executor lives on.  A
    ``concurrent.futures.process.BrokenProcessPool`` and a
    :exc:`gipc.WorkerLostError`."""


class BrokenInitializerError(BrokenProcessPool):
    """The executor's initializer raised (its exception is the
    ``__cause__``): the executor is broken, as in the stdlib."""


# Makes a future's rarely used parts (see Future) on first use, for
# whichever thread asks first.
_lazy_lock = threading.Lock()


def _lazy(slot: Any, make: Any, pin: bool) -> Any:
    """A property for a stdlib ``Future`` attribute that most of our
    futures never use: kept in ``slot`` (None until needed), made by
    ``make()`` when something first asks for it.  The future is tracked by
    the cyclic GC from then on (what is made may lead back to it), for
    good if ``pin`` (see Future)."""

    def get(future: Any) -> Any:
        value = getattr(future, slot)
        if value is None:
            with _lazy_lock:
                value = getattr(future, slot)
                if value is None:
                    value = make()
                    setattr(future, slot, value)
                    if pin:
                        future._gc_pinned = True
                    _set_gc_tracked(future, True)
        return value

    return property(get)


# The instance dictionary every Future has (concurrent.futures.Future has
# no __slots__), reached past Future.__dict__ below.
_instance_dict = _cf.Future.__dict__["__dict__"]


class Future(Task, _cf.Future[Any]):
    """A ``concurrent.futures.Future`` for a task of a
    :class:`ProcessPoolExecutor`: ``result()``/``exception()`` wait
    cooperatively; ``cancel()`` also stops a running task if the executor
    has ``kill_on_cancel``."""

    # Slots for every attribute the stdlib Future uses: its methods work
    # on them unchanged, and the instance's __dict__ is never made.  A
    # program holding many futures keeps one GC-tracked object per future
    # (not four: the future, its dict, two lists), which the cyclic GC
    # scans at every full collection.
    __slots__ = ("_state", "_result", "_exception", "_engine",
                 "_condition_made", "_waiters_made", "_callbacks_made",
                 "_gc_pinned")

    # A stdlib future makes a threading.Condition and two lists when it is
    # created; most of ours are created and completed in the hub's thread
    # and never waited on by another thread, so these are made only when
    # something asks for them (another thread's wait, done(),
    # add_done_callback()...).  The engine's completion sets the state
    # first, then looks for a condition and notifies it: a thread that made
    # it before that look is notified, one that made it after sees the
    # final state.
    #
    # A future is left out of the cyclic GC while it can be in no cycle
    # the collector would have to break, as a pool's result is (see
    # gipc._workers.Task), so that a program holding 100,000 of them pays
    # no full collection for them.  What a future holds of the program's
    # keeps it tracked: callbacks (until called), a greenlet waiting on it
    # (until woken), an outcome the collector tracks, and for good
    # (_gc_pinned) another thread's Condition or waiters, and any
    # attribute the program sets on it or its __dict__: the C core puts a
    # future back under the collector when an attribute goes to its
    # __dict__ (_core.track_on_setattr, below the class).
    _condition = _lazy("_condition_made", threading.Condition, True)
    _waiters = _lazy("_waiters_made", list, True)
    _done_callbacks = _lazy("_callbacks_made", list, False)

    @property
    def __dict__(self) -> Any:  # noqa: D105 (the stdlib's)
        self._gc_pinned = True
        _set_gc_tracked(self, True)
        return _instance_dict.__get__(self)

    @__dict__.setter
    def __dict__(self, value: Any) -> None:
        self._gc_pinned = True
        _set_gc_tracked(self, True)
        _instance_dict.__set__(self, value)

    def __init__(self, engine: Any, job: Any) -> None:
        # concurrent.futures.Future.__init__, with the lazy parts.
        self._state = _PENDING
        self._result = None
        self._exception = None
        self._condition_made = None
        self._waiters_made = None
        self._callbacks_made = None
        self._gc_pinned = False
        self._init_task(job)
        self._engine = engine
        _set_gc_tracked(self, False)

    # -- engine hooks (in the hub's thread) ------------------------------

    def _on_sent(self) -> Any:
        if self._condition_made is not None:
            return self.set_running_or_notify_cancel()
        self._state = _RUNNING
        return True

    def _on_result(self, ok: Any, value: Any) -> None:
        if self._condition_made is not None:
            if ok:
                self.set_result(value)
            else:
                self.set_exception(value)
        else:
            if ok:
                self._result = value
            else:
                self._exception = value
            self._state = _FINISHED
            condition = self._condition_made
            if condition is not None:  # made by a thread meanwhile
                with condition:
                    for waiter in self._waiters:
                        if ok:
                            waiter.add_result(self)
                        else:
                            waiter.add_exception(self)
                    condition.notify_all()
            self._invoke_callbacks()
        self._wake()
        self._settle()

    def _settle(self) -> None:
        # Done: out of the cyclic GC unless something of the program's may
        # lead back here (see the class).
        _set_gc_tracked(self, self._gc_pinned
                        or self._callbacks_made is not None
                        or self._sleepers is not None
                        or _is_tracked(self._result)
                        or _is_tracked(self._exception))

    def _invoke_callbacks(self) -> None:
        if self._callbacks_made:
            _cf.Future._invoke_callbacks(self)
            # Called once, when the future is done; a callback added
            # later is called at once and not kept.  Dropped, the list
            # would not keep the callbacks (and what they hold) alive.
            self._callbacks_made = None

    def _on_cancel(self) -> None:
        self._mark_cancelled()

    def _mark_cancelled(self) -> None:
        # The stdlib's cancel() refuses a running future; one that was
        # stopped is cancelled all the same.
        with self._condition:
            if self._state == _FINISHED:
                return
            self._state = _CANCELLED
            self._condition.notify_all()
        self.set_running_or_notify_cancel()  # notifies stdlib waiters
        self._invoke_callbacks()
        self._wake()
        self._settle()

    # -- the Future API --------------------------------------------------

    def cancel(self) -> bool:
        """Cancel the future.  A pending one never starts; a running one is
        stopped (its worker killed and replaced) if the executor has
        ``kill_on_cancel``, else ``False`` is returned as in the stdlib."""
        if self._phase == DONE:
            return self.cancelled()
        if self._engine.pid != os.getpid():
            return False
        if not self._engine.cancel(self):
            return self.cancelled()
        self._mark_cancelled()
        return True

    def _wait_here(self, timeout: Any) -> None:
        """Wait for the outcome; cooperatively in the hub's thread, by the
        stdlib's means in any other thread."""
        if self._phase == DONE:
            # A loop over ready futures never waits: let the loop run.
            self._engine.fair()
            return
        if get_hub_if_exists() is not self._engine.hub:
            with self._condition:
                if self._state not in _DONE_STATES:
                    self._condition.wait(timeout)
            return
        self._wait(timeout)

    def result(self, timeout: Optional[float] = None) -> Any:
        """The task's return value, waiting cooperatively; raises its
        exception, ``CancelledError``, or ``TimeoutError`` (after
        ``timeout`` seconds)."""
        if self._phase != DONE:
            self._wait_here(timeout)
        elif _perf_counter() >= self._engine._next_yield:
            self._engine.fair()  # as _wait_here does, without two calls
        if self._state == _FINISHED:
            if self._exception is None:
                return self._result
            try:
                raise self._exception
            finally:
                self = None  # type: ignore[assignment]  # no reference cycle
        return _cf.Future.result(self, 0)

    def exception(self, timeout: Optional[float] = None
                  ) -> Optional[BaseException]:
        """The task's exception (None if it returned), waiting
        cooperatively."""
        self._wait_here(timeout)
        if self._state == _FINISHED:
            return self._exception
        return _cf.Future.exception(self, 0)

    # -- the stdlib's queries and callbacks, without the Condition ---------
    # The stdlib takes the future's Condition to read its state; reading one
    # attribute is atomic, and our completion writes the state before it
    # looks for a Condition to notify (see _on_result).  Taking it would
    # make the Condition (a lock, a deque of waiters, bound methods: six
    # objects more for the cyclic GC) for every future that as_completed()
    # or futures_wait() looks at.

    def done(self) -> bool:
        """True if the future finished or was cancelled."""
        return self._state in _DONE_STATES

    def cancelled(self) -> bool:
        """True if the future was cancelled."""
        return self._state in _CANCELLED_STATES

    def running(self) -> bool:
        """True if the task is running (sent to a worker)."""
        return self._state == _RUNNING

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        """Call ``fn(future)`` when the future is done (now, if it is)."""
        if self._condition_made is not None \
                or get_hub_if_exists() is not self._engine.hub:
            # Another thread's: the stdlib's way, under the Condition.
            _cf.Future.add_done_callback(self, fn)
            return
        # In the hub's thread, where this future completes: nothing can
        # complete it between the test and the append.
        if self._state not in _DONE_STATES:
            self._done_callbacks.append(fn)
            return
        try:
            fn(self)
        except Exception:
            _cf._base.LOGGER.exception(
                "exception calling callback for %r", self)


_encode_call = _worker.encode_call
_perf_counter = time.perf_counter
_core.track_on_setattr(Future)


def _default_workers() -> Any:
    count = getattr(os, "process_cpu_count", os.cpu_count)()
    return count or 1


class ProcessPoolExecutor(_cf.Executor):
    """A ``concurrent.futures`` executor whose tasks run in gipc worker
    processes and whose every wait is cooperative.

    :arg max_workers: number of workers (default: the CPU count); they
        start lazily, when there is work for them.
    :arg mp_context: how the workers start: None (forked), a gipc context
        (``gipc.get_context("spawn")``) or a ``multiprocessing`` one (the
        gipc method of that name).  Under "spawn" and "forkserver" the
        functions submitted, their arguments and the initializer travel
        pickled: they must be importable in the workers.
    :arg initializer, initargs: run in each worker when it starts; if it
        raises, the executor is broken (``BrokenProcessPool``), as in the
        stdlib.
    :arg max_tasks_per_child: a worker is replaced after this many tasks.
    :arg kill_on_cancel: ``cancel()`` on a running future stops its task
        (the worker is killed and replaced), and ``map()`` stops the
        running tasks of the results not consumed when it is closed or
        fails.  False: the stdlib behaviour.

    A worker that dies fails only its running future, with
    :exc:`BrokenWorkerError` (a ``BrokenProcessPool``); the others
    complete.
    """

    def __init__(self, max_workers: Optional[int] = None, mp_context: Any = None,
                 initializer: Optional[Callable[..., Any]] = None,
                 initargs: Iterable[Any] = (), *,
                 max_tasks_per_child: Optional[int] = None,
                 kill_on_cancel: bool = True) -> None:
        if max_workers is None:
            max_workers = _default_workers()
        elif isinstance(max_workers, bool) or not isinstance(max_workers,
                                                             int):
            raise TypeError("max_workers must be an int, not %s"
                            % type(max_workers).__name__)
        elif max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        from .context import pool_start_method
        start_method = pool_start_method(mp_context, "mp_context")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_child is not None:
            if isinstance(max_tasks_per_child, bool) or not isinstance(
                    max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
        self._max_workers = max_workers
        self._shutdown = False
        self._engine = WorkerSet(
            max_workers, initializer, initargs, max_tasks_per_child, None,
            None, kill_on_cancel,
            lambda message, code: BrokenWorkerError(message, code),
            self._broken_by, name="gipc-executor",
            start_method=start_method)

    @staticmethod
    def _broken_by(exc: Any) -> Any:
        error = BrokenInitializerError(
            "A child process terminated abruptly, the process pool is not "
            "usable anymore (the initializer failed: %s: %s)"
            % (type(exc).__name__, exc))
        error.__cause__ = exc
        return error

    def _check_open(self) -> Any:
        engine = self._engine
        engine.check_process()
        if engine.broken is not None:
            raise self._broken_by(engine.broken)
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def submit(self, fn: Callable[..., Any], /, *args: Any,
               **kwargs: Any) -> Future:
        """Schedule ``fn(*args, **kwargs)``; return its :class:`Future`.
        An unpicklable ``fn`` or argument raises here."""
        engine = self._engine
        if _ownership.pid != engine.pid or engine.broken is not None \
                or self._shutdown:
            self._check_open()  # raises the error
        if not callable(fn):
            raise TypeError("%r object is not callable" % type(fn).__name__)
        engine.check_function(fn)
        future = Future(engine, _encode_call(fn, args, kwargs))
        engine.submit(future)
        return future

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
            timeout: Optional[float] = None,
            chunksize: int = 1) -> Iterator[Any]:
        """``map(fn, *iterables)`` computed by the workers, ``chunksize``
        calls per task; the iterables are read and every task submitted at
        once, results come in order.  ``TimeoutError`` if a result is not
        ready ``timeout`` seconds after the call."""
        if isinstance(chunksize, bool) or not isinstance(chunksize, int):
            raise TypeError("chunksize must be an int")
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        self._check_open()
        if not callable(fn):
            raise TypeError("%r object is not callable" % type(fn).__name__)
        end = None if timeout is None else time.monotonic() + timeout
        engine = self._engine
        engine.check_function(fn)
        function, encode = _worker.chunk_encoder(fn, True)
        futures = []
        for chunk in _worker.chunked(zip(*iterables), chunksize):
            futures.append(Future(engine, (function, encode(chunk))))
            engine.fair()
        engine.submit_all(futures)
        return _results(futures, end)

    def shutdown(self, wait: bool = True, *,
                 cancel_futures: bool = False) -> None:
        """Accept no more tasks; with ``cancel_futures``, cancel those not
        started; with ``wait``, wait (cooperatively) until the others are
        done and the workers have exited."""
        engine = self._engine
        engine.check_process()
        self._shutdown = True
        if cancel_futures:
            # (And the rest of a map() still being submitted.)
            engine.cancel_new = True
            for task in list(engine.queue) + [
                    t for w in engine.workers for t in w.outbox]:
                if task._phase == PENDING:
                    task.cancel()
        engine.stop()
        if wait:
            engine.join()

    def terminate_workers(self) -> None:
        """Python 3.14's: stop every worker now with SIGTERM and shut the
        executor down; pending futures are cancelled, running ones fail
        with :exc:`BrokenWorkerError`."""
        self._stop_workers(kill=False)

    def kill_workers(self) -> None:
        """Like :meth:`terminate_workers`, with SIGKILL."""
        self._stop_workers(kill=True)

    def _stop_workers(self, kill: Any) -> None:
        engine = self._engine
        engine.check_process()
        self._shutdown = True
        engine.terminate(kill=kill, running_error=BrokenWorkerError(
            "the worker running this task was %s by %s()"
            % (("killed", "kill_workers") if kill else
               ("terminated", "terminate_workers"))))
        engine.join()

    def __reduce__(self) -> Any:
        raise NotImplementedError("executors cannot be pickled")


def _results(futures: Any, end: Any) -> Iterator[Any]:
    """The items of ``futures``' chunk results, in order; closing it early
    (or a failure) cancels the futures not consumed."""
    pending = deque(futures)
    try:
        while pending:
            future = pending[0]
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0 and not future.done():
                raise _cf.TimeoutError()
            chunk = future.result(left)
            pending.popleft()
            yield from chunk
    finally:
        for future in pending:
            future.cancel()


# -- waiting on any future ---------------------------------------------


class _Wakeup:
    """Collects futures as they complete and wakes the greenlet waiting
    for them.  A future's done-callback may run in any thread: in the hub's
    thread it sets an event; from another thread it sends the hub an async
    watcher, the only thread-safe way into a gevent loop."""

    def __init__(self) -> None:
        self.hub = get_hub()
        self.done: deque[Any] = deque()  # appends are atomic: safe from any thread
        self.event = Event()
        self.active = True
        self.watcher = self.hub.loop.async_()
        self.watcher.start(self.event.set)

    def __call__(self, future: Any) -> None:
        if not self.active:
            return
        self.done.append(future)
        if get_hub_if_exists() is self.hub:
            self.event.set()
        else:
            # Never closed (a late callback may still send); stopped and
            # freed with this object.
            self.watcher.send()

    def wait(self, timeout: Any) -> Any:
        self.event.clear()
        if self.done:
            return True
        return self.event.wait(timeout)

    def close(self) -> None:
        self.active = False
        self.watcher.stop()


def _is_failed(future: Any) -> bool:
    return not future.cancelled() and future.exception(0) is not None


def futures_wait(fs: Iterable[_cf.Future[Any]], timeout: Optional[float] = None,
                 return_when: str = ALL_COMPLETED) -> DoneAndNotDoneFutures:
    """``concurrent.futures.wait()``, waiting cooperatively: returns
    ``DoneAndNotDoneFutures(done, not_done)`` when ``return_when``
    (``FIRST_COMPLETED``, ``FIRST_EXCEPTION`` or ``ALL_COMPLETED``) is met
    or after ``timeout`` seconds.  Takes any ``concurrent.futures.Future``,
    also one completed by another thread."""
    if return_when not in (FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED):
        raise ValueError("Invalid return condition: %r" % (return_when,))
    fs = set(fs)
    end = None if timeout is None else time.monotonic() + timeout
    done = {f for f in fs if f.done()}
    not_done = fs - done

    def satisfied() -> Any:
        if not not_done:
            return True
        if return_when == FIRST_COMPLETED:
            return bool(done)
        if return_when == FIRST_EXCEPTION:
            return any(_is_failed(f) for f in done)
        return False

    if satisfied():
        return DoneAndNotDoneFutures(done, not_done)
    wakeup = _Wakeup()
    try:
        for future in not_done:
            future.add_done_callback(wakeup)
        while not satisfied():
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                break
            wakeup.wait(left)
            while wakeup.done:
                future = wakeup.done.popleft()
                if future in not_done:
                    not_done.discard(future)
                    done.add(future)
    finally:
        wakeup.close()
    return DoneAndNotDoneFutures(done, not_done)


def as_completed(fs: Iterable[_cf.Future[Any]], timeout: Optional[float] = None
                 ) -> Iterator[_cf.Future[Any]]:
    """``concurrent.futures.as_completed()``, waiting cooperatively: yields
    each of ``fs`` (duplicates once) as it completes, finished ones first;
    ``TimeoutError`` if some are not done ``timeout`` seconds after the
    call.  Takes any ``concurrent.futures.Future``."""
    end = None if timeout is None else time.monotonic() + timeout
    fs = set(fs)
    total = len(fs)
    return _as_completed(fs, total, end)


def _as_completed(fs: Any, total: Any,
                  end: Any) -> Iterator[_cf.Future[Any]]:
    finished = [f for f in fs if f.done()]
    pending = fs - set(finished)
    wakeup: Any = _Wakeup() if pending else None  # None: nothing to wait
    try:
        for future in pending:
            future.add_done_callback(wakeup)
        yield from finished
        while pending:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0 or not wakeup.wait(left):
                raise _cf.TimeoutError("%d (of %d) futures unfinished"
                                       % (len(pending), total))
            while wakeup.done:
                future = wakeup.done.popleft()
                if future in pending:
                    pending.discard(future)
                    yield future
    finally:
        if wakeup is not None:
            wakeup.close()

