"""The loop a pool worker runs in its child process.

The worker talks to the parent over one duplex raw pipe.  The parent sends
batches of tasks (each task pickled on its own, in the caller, so that an
unpicklable argument fails there) and lists of task numbers to skip; the
worker runs its tasks strictly in the order they arrived and answers each
one, in that order, in batches.  Because the order is fixed, the parent
knows which task a dead worker was running (its oldest unanswered one)
without any message saying so.

Frames, parent to worker (pickled tuples):
    (TASKS, [function, data, function, data, ...])
                              one (function, data) pair per task, flat:
                              see encode_call() and encode_chunk()
    (SKIP, [seq, ...])        seq: the task's number, counting from 0 in
                              the order the worker received them
Frames, worker to parent: one kind byte, then
    READY                     (nothing) the initializer has run (sent
                              only if there is one)
    INIT_FAILED + pickle((exc, formatted traceback))
    RESULTS + 4-byte count + pickle((results, busy seconds, retiring))
        results: [(status, value), ...], one per task, in order; the
        count lets the parent fail exactly those tasks if the pickle
        cannot be loaded there.
"""
from __future__ import annotations

from typing import Any, Iterator
import os
import pickle
import struct
import time
import traceback
import types
from collections import deque
from itertools import islice, starmap

TASKS = 0
SKIP = 1

READY = b"r"
INIT_FAILED = b"i"
RESULTS = b"R"

OK = 0
FAILED = 1
SKIPPED = 2

COUNT = struct.Struct(">I")

#: The progress word in memory shared with the parent: 0 before the first
#: task, ``2 * seq + 2`` while task ``seq`` runs, ``2 * seq + 3`` once it
#: returned.  Results travel in batches; this word tells the parent which
#: task a worker is running (to kill it for a cancel, or to blame it when
#: the worker dies) without a message per task.
PROGRESS = struct.Struct("q")

#: The second word of that memory: how many skip requests the parent has
#: written to the worker's pipe (it counts one up after each frame is
#: wholly written).  A worker with tasks queued looks at the pipe before
#: its next task only when this count moved, or POLL_AFTER after it last
#: looked: a skip request is seen before the next task starts, as if the
#: worker looked every time, without a system call per task.
SKIPS_SENT = struct.Struct("q")
SKIPS_SENT_AT = PROGRESS.size

#: The size of the memory the parent shares with each worker.
SHARED_SIZE = SKIPS_SENT_AT + SKIPS_SENT.size

#: A worker with tasks queued takes in the frames that have arrived at
#: least this often (so that it sees the end of its stream within about a
#: task of this age: the parent closed it, or died).
POLL_AFTER = 0.001

#: A worker sends its results once this much time has passed since the
#: first unsent one, even if more tasks are queued: small tasks travel in
#: batches, a long run of them still reports progress.
FLUSH_AFTER = 0.001

#: ... or once this many results are waiting.
FLUSH_COUNT = 64

_dumps = pickle.dumps
_loads = pickle.loads
_PROTOCOL = pickle.HIGHEST_PROTOCOL


# -- jobs ----------------------------------------------------------------
#
# A job is ``(pickled function, pickled (kind, data, data))``, made in the
# caller (an unpicklable function or argument raises there).  A plain
# function pickles by reference and always to the same bytes, so the parent
# pickles it once and every job shares that bytes object: a frame of jobs
# carries it once (pickle's memo), and the worker unpickles it once.  The
# parent keeps the two bytes objects of a queued task in two slots of the
# task, not in a tuple: a tuple would be one more object per queued task
# for the cyclic GC to count and scan.

CALL = 0        # data: (CALL, args, kwds)
MAP = 1         # data: (MAP, a chunk of items, each one the argument, None)
STARMAP = 2     # data: (STARMAP, a chunk of argument tuples, None)

_PLAIN_FUNCTIONS = (types.FunctionType, types.BuiltinFunctionType)
_pickled_functions: dict[Any, Any] = {}
_CACHE_SIZE = 256


def _pickled_function(func: Any) -> Any:
    # Only plain functions: another callable (a partial, an instance with
    # __call__) may change between two calls, and must be pickled each
    # time.
    if type(func) not in _PLAIN_FUNCTIONS:
        return _dumps(func, _PROTOCOL)
    data = _pickled_functions.get(func)
    if data is None:
        data = _dumps(func, _PROTOCOL)
        if len(_pickled_functions) >= _CACHE_SIZE:
            _pickled_functions.clear()
        _pickled_functions[func] = data
    return data


def encode_call(func: Any, args: Any, kwds: Any) -> Any:
    """The job for ``func(*args, **kwds)``."""
    return (_pickled_function(func), _dumps((CALL, args, kwds), _PROTOCOL))


def chunked(iterable: Any, size: int) -> Iterator[tuple[Any, ...]]:
    """The items of ``iterable`` in tuples of ``size`` (the last one may
    be shorter)."""
    it = iter(iterable)
    if size == 1:
        return zip(it)  # 1-tuples, made in C
    return iter(lambda: tuple(islice(it, size)), ())


def chunk_encoder(func: Any, star: Any = False) -> Any:
    """``(function, encode)`` for the chunks of one map of ``func``:
    ``(function, encode(chunk))`` is the job for ``[func(x) for x in
    chunk]`` (``func(*x)`` with ``star``).  The function is pickled once
    for all of them."""
    kind = STARMAP if star else MAP

    def encode(chunk: Any) -> Any:
        return _dumps((kind, chunk, None), _PROTOCOL)

    return _pickled_function(func), encode


def encode_chunk(func: Any, chunk: Any, star: Any = False) -> Any:
    """The job for ``[func(x) for x in chunk]`` (``func(*x)`` with
    ``star``)."""
    function, encode = chunk_encoder(func, star)
    return function, encode(chunk)


class _Functions(dict[Any, Any]):
    """The worker's unpickled functions, by their pickle."""

    def __missing__(self, data: Any) -> Any:
        if len(self) >= _CACHE_SIZE:
            self.clear()
        func = self[data] = _loads(data)
        return func


def _run(functions: Any, function: Any, data: Any) -> Any:
    func = functions[function]
    kind, args, kwds = _loads(data)
    if kind == CALL:
        return func(*args, **kwds)
    if kind == MAP:
        return list(map(func, args))
    return list(starmap(func, args))


class UnpicklableError(Exception):
    """A task raised an exception that cannot travel back to the parent
    (it cannot be pickled, or not unpickled); this one names it."""


class _Named(str):
    """A string whose repr is itself (names a value in an error message
    without repr'ing the value)."""

    def __repr__(self) -> str:
        return str(self)


def _portable_error(exc: Any) -> Any:
    """``(exc, formatted traceback)``, with ``exc`` replaced by an
    :class:`UnpicklableError` naming it if it would not survive the trip
    (many exception classes pickle but cannot be unpickled)."""
    text = "".join(traceback.format_exception(type(exc), exc,
                                              exc.__traceback__))
    exc.__traceback__ = None
    try:
        _loads(_dumps(exc, _PROTOCOL))
    except Exception as why:
        exc = UnpicklableError(
            "%s: %s (the exception could not be sent back: %s: %s)"
            % (type(exc).__qualname__, _safe_str(exc), type(why).__name__,
               _safe_str(why)))
    return exc, text


def _safe_str(obj: Any) -> Any:
    try:
        return str(obj)
    except Exception:
        return "<unprintable %s>" % type(obj).__name__


def _encode_results(results: Any, busy: Any, retiring: Any) -> Any:
    """The RESULTS frame for ``results``; a result that cannot be pickled
    is replaced by the error saying so (only that task fails)."""
    try:
        body = _dumps((results, busy, retiring), _PROTOCOL)
    except Exception:
        from multiprocessing.pool import MaybeEncodingError  # type: ignore[attr-defined]
        fixed = []
        for status, value in results:
            try:
                _dumps(value, _PROTOCOL)
            except Exception as why:
                name = _Named("<%s object>" % type(value).__qualname__)
                status, value = FAILED, (MaybeEncodingError(why, name), "")
            fixed.append((status, value))
        results = fixed
        body = _dumps((results, busy, retiring), _PROTOCOL)
    return RESULTS + COUNT.pack(len(results)) + body


class _ResidentMemory:
    """This process's resident set size in bytes, read from
    ``/proc/self/statm`` through a descriptor kept open (one syscall per
    reading)."""

    def __init__(self) -> None:
        self._fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        self._page = os.sysconf("SC_PAGE_SIZE")

    def __call__(self) -> Any:
        return int(os.pread(self._fd, 128, 0).split()[1]) * self._page


def serve(
        tasks: Any, answers: Any, progress: Any, initializer: Any, initargs: Any,
        memory_limit: Any
) -> None:
    """Run tasks read from ``tasks`` (sending their answers to ``answers``)
    until the parent closes its end; record each task in ``progress``
    (see PROGRESS).

    With ``memory_limit`` (bytes), stop after the first task that leaves
    the resident memory above it: report ``retiring`` with its result and
    run nothing more (the parent hands the rest to another worker).
    """
    put = answers.put
    get = tasks.get
    # A whole frame that has arrived, or None; never waits.  The C reader
    # itself, not a poll() of the handle: poll()'s Python path costs some
    # microseconds (a task's worth, for a trivial one), and every page a
    # new worker writes is copied.
    arrived = tasks._core.read_frame
    skips_sent = SKIPS_SENT.unpack_from
    if initializer is not None:
        try:
            initializer(*initargs)
        except Exception as exc:
            put(INIT_FAILED + _dumps(_portable_error(exc), _PROTOCOL))
            _drain(get)
            return
        put(READY)
    rss = _ResidentMemory() if memory_limit is not None else None
    queue: deque[Any] = deque()
    skip = set()
    received = 0
    out: list[Any] = []
    busy = 0.0
    first_unsent = 0.0
    perf_counter = time.perf_counter
    mark = PROGRESS.pack_into
    functions = _Functions()
    run = _run
    skips_seen = 0
    end = next_look = 0.0

    while True:
        # Take in the frames that have arrived (a skip request must be seen
        # before the next task starts); wait for one if idle.
        frame = None
        try:
            if not queue:
                if out:
                    put(_encode_results(out, busy, False))
                    out = []
                    busy = 0.0
                skips_seen = skips_sent(progress, SKIPS_SENT_AT)[0]
                frame = get()
                next_look = perf_counter() + POLL_AFTER
            else:
                sent = skips_sent(progress, SKIPS_SENT_AT)[0]
                if sent != skips_seen or end >= next_look:
                    skips_seen = sent
                    next_look = end + POLL_AFTER
                    frame = arrived()
        except EOFError:
            return
        while frame is not None:
            kind, items = _loads(frame)
            if kind == TASKS:
                for i in range(0, len(items), 2):
                    queue.append((received, items[i], items[i + 1]))
                    received += 1
            else:
                skip.update(items)
            try:
                frame = arrived()
            except EOFError:
                return
        if not queue:
            continue  # skip requests only
        seq, function, data = queue.popleft()
        if skip and seq in skip:
            skip.discard(seq)
            out.append((SKIPPED, None))
            continue
        start = perf_counter()
        if not out:
            first_unsent = start
        mark(progress, 0, 2 * seq + 2)
        try:
            result = (OK, run(functions, function, data))
        except Exception as exc:
            result = (FAILED, _portable_error(exc))
        mark(progress, 0, 2 * seq + 3)
        del data
        end = perf_counter()
        busy += end - start
        out.append(result)
        del result
        if rss is not None and rss() > memory_limit:
            put(_encode_results(out, busy, True))
            _drain(get)
            return
        if queue and (end - first_unsent >= FLUSH_AFTER
                      or len(out) >= FLUSH_COUNT):
            put(_encode_results(out, busy, False))
            out = []
            busy = 0.0


def _drain(get: Any) -> None:
    """Read and drop frames until the parent closes the channel (it may
    still be sending when the worker stops taking tasks)."""
    try:
        while True:
            get()
    except EOFError:
        pass
