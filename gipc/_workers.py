"""The parent side of a process pool: one engine behind ``gipc.Pool`` and
``gipc.ProcessPoolExecutor``.

A :class:`WorkerSet` owns up to ``size`` gipc children running
:func:`gipc._worker.serve`.  Each worker has its own duplex pipe and two
greenlets of the parent: a *sender* that writes batches of tasks (and skip
requests) to it, and a *reader* that reads the answers, completes the tasks,
refills the worker and supervises it (death, retirement, idle exit).  No
helper thread, no queue shared between processes: a dying worker takes down
only the task it was running, and killing one to cancel a task cannot
corrupt anything the others use.

Tasks are pipelined: a worker may hold several unanswered tasks (its
*window*), sized from the observed task duration, so quick tasks travel in
batches while slow ones are handed out one at a time and balance well.  A
worker runs its tasks in order, so its oldest unanswered task is the one it
is running.  Lifetimes (task count, memory, idle time) are decided here,
between tasks.

The front ends subclass :class:`Task` (a task *is* its result object, one
allocation per call) and override its three hooks.
"""
from __future__ import annotations

from typing import Any
import mmap
import os
import time
from collections import deque

import gevent
from gevent import Timeout
from gevent.event import Event
from gevent.hub import Waiter, get_hub

import gipc

from . import _core, _ownership, _worker
from ._sync import Memory
from ._worker import COUNT, FAILED, INIT_FAILED, OK, READY, SKIP, TASKS

PENDING = 0   # queued in the parent
SENT = 1      # in a worker's window (running there, or next in line)
DONE = 2      # completed, failed or cancelled

#: Longest window of unanswered tasks per worker (quick tasks).
MAX_WINDOW = 256

#: Tasks per frame sent to a worker: it can start on a batch while the next
#: one is on its way.
MAX_BATCH = 64

#: ... or of at most about this many bytes of arguments: a worker starts on
#: a large task without waiting for the ones behind it to arrive.
MAX_BATCH_BYTES = 256 * 1024

#: A new worker's first task is written to its pipe before the fork if its
#: job takes at most this many bytes: the frame then fits in an empty
#: pipe (PIPE_BUF, 4096 bytes, even for a pipe the kernel gave one page)
#: and the write cannot wait for a reader that does not exist yet.
FIRST_TASK_BYTES = 2048

#: A worker is given about this much estimated work beyond the task it is
#: running, so it never waits for the parent between quick tasks; a task
#: estimated to take longer is not queued behind another one.
PREFETCH_SECONDS = 0.002

#: While a worker holds cancelled tasks it was asked to skip, the parent
#: checks this often whether it started one anyway (the request came too
#: late) and then kills it (kill_on_cancel).
SKIP_GRACE = 0.02

#: How long a retiring worker gets to exit after its pipe is closed, and a
#: terminated one after its signal, before it is killed.
EXIT_GRACE = 5.0

#: Tasks queued at a time by submit_all() (a map's chunks) between two
#: hand-outs to the workers: enough that the hand-out costs little per
#: task, few enough that the first tasks start at once.
SUBMIT_SLICE = 256

#: The submitting greenlet yields to the event loop after this much time of
#: submissions without a wait (fairness: a loop of submissions never waits).
YIELD_EVERY = 0.0005

_PROGRESS = _worker.PROGRESS
_SKIPS_SENT = _worker.SKIPS_SENT
_SKIPS_SENT_AT = _worker.SKIPS_SENT_AT
_dumps = _worker._dumps
_PROTOCOL = _worker._PROTOCOL
_perf_counter = time.perf_counter
_set_gc_tracked = _core.set_gc_tracked

# This process's pid is _ownership.pid, kept up to date across forks: a
# pool checks it on every call (os.getpid() is a system call).  No fork
# hook of this module's own: each one is cold code that every child runs,
# a few page copies more per start.
_loads = _worker._loads


class RemoteTraceback(Exception):
    """The formatted traceback of an exception raised in a worker, chained
    as that exception's ``__cause__`` in the parent."""

    def __init__(self, tb: str) -> None:
        Exception.__init__(self, tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def remote_error(value: Any) -> Any:
    """The exception to raise in the parent for a worker's ``(exc,
    traceback text)``."""
    exc, text = value
    if text:
        exc.__cause__ = RemoteTraceback(
            '\n"""\n%s"""' % (text if text.endswith("\n") else text + "\n"))
    return exc


class Task:
    """One unit of work and the object that learns its outcome.

    ``_function`` and ``_job`` are the task's pickled function and data as
    :mod:`gipc._worker` encodes them (None once the task is done: a program
    may hold many finished tasks).  The engine calls
    :meth:`_on_sent` when the task goes to a worker (return False to drop
    it: it was cancelled meanwhile), :meth:`_on_result` with its outcome
    (``ok`` and the value, or False and the exception to raise), and
    :meth:`_on_cancel` when it is cancelled by the engine (terminate).
    """

    # (__weakref__: results can be weakly referenced, as the stdlib's can;
    # the cyclic GC does not visit it.)
    #
    # A program may hold a great many tasks, pending or done, and every
    # full collection of the cyclic GC would visit each one: a subclass
    # leaves its tasks out of the collector (_set_gc_tracked) while they
    # can be in no reference cycle the collector would have to break.
    # What they refer to for the engine does not count: the engine's
    # references to a task (queue, window) and the task's to the engine's
    # objects (pool, worker) make cycles, but they live only while the
    # engine's greenlets keep it alive, and the engine lets go of a task
    # when the task is done.  What the program gives or gets does count:
    # callbacks, waiting greenlets (_sleepers), a value the collector
    # tracks.  So a task waited on is tracked again (_wait), and a done one
    # is left out only if its outcome is untracked.
    #
    # No slot for the task's number in its worker's window: it follows
    # from the task's place there (see _Worker.seq_of), and a slot would
    # hold a distinct int per task for the GC to visit.
    __slots__ = ("_function", "_job", "_phase", "_worker", "_sleepers",
                 "__weakref__")
    _function: bytes | None
    _job: bytes | None
    _sleepers: list[Any] | None

    def _init_task(self, job: Any) -> None:
        """``job``: ``(pickled function, pickled data)``, or None for a
        task that is never sent (a map's result)."""
        self._function, self._job = job or (None, None)
        self._phase = PENDING
        self._worker = None
        self._sleepers = None

    def _on_sent(self) -> bool:
        return True

    def _on_result(self, ok: Any, value: Any) -> Any:
        raise NotImplementedError

    def _on_cancel(self) -> Any:
        raise NotImplementedError

    def _wake(self) -> None:
        """Wake the greenlets waiting in :meth:`_wait`."""
        sleepers = self._sleepers
        if sleepers:
            self._sleepers = None
            run_callback = get_hub().loop.run_callback
            for waiter in sleepers:
                run_callback(waiter.switch, None)

    def _wait(self, timeout: Any = None) -> bool:
        """Wait cooperatively until the task is done; False if ``timeout``
        seconds passed first."""
        if self._phase == DONE:
            return True
        if timeout is not None and timeout <= 0:
            return False
        waiter = Waiter()
        sleepers = self._sleepers
        if sleepers is None:
            sleepers = self._sleepers = []
            _set_gc_tracked(self, True)  # its waiter leads back to it
        sleepers.append(waiter)
        timer = None if timeout is None else Timeout.start_new(timeout)
        try:
            waiter.get()
            return True
        except Timeout as exc:
            if exc is not timer:
                raise
            return False
        finally:
            if timer is not None:
                timer.close()
            sleepers = self._sleepers
            if sleepers and waiter in sleepers:
                sleepers.remove(waiter)


class _Channel:
    """The parent's two ends of a worker's pipes."""

    __slots__ = ("reader", "writer", "get", "put", "poll")

    def __init__(self, reader: Any, writer: Any) -> None:
        self.reader = reader
        self.writer = writer
        self.get = reader.get
        self.put = writer.put
        self.poll = reader.poll

    @property
    def closed(self) -> Any:
        return self.reader.closed

    def close(self) -> None:
        for end in (self.writer, self.reader):
            if not end.closed:
                end.close()


class _Worker:
    """Parent-side state of one worker process."""

    __slots__ = ("process", "channel", "window", "outbox", "skips", "sent",
                 "answered", "ready", "wake", "activity", "sender", "reader",
                 "retired", "killed", "progress", "cancelled", "sending")

    def __init__(self, process: Any, channel: Any, progress: Any) -> None:
        self.process = process
        self.progress = progress  # shared with the worker: see running()
        self.cancelled: set[Any] = set()  # seqs of cancelled tasks asked to skip
        self.channel = channel
        self.window: deque[Any] = deque()   # sent, unanswered tasks, oldest first
        self.outbox: deque[Any] = deque()   # assigned to this worker, not sent yet
        self.skips: list[Any] = []         # seqs of sent tasks cancelled since
        self.sent = 0
        self.answered = 0
        self.ready = False      # READY came: the initializer has run
        self.wake = Event()     # the sender has something to send
        self.activity = Event()  # the reader has something to read
        self.sender = self.reader = None
        self.retired = False
        self.killed = False     # by the parent, to stop a cancelled task
        self.sending = False    # a greenlet is writing a batch

    def seq_of(self, task: Any) -> int:
        """The number of ``task``, in this worker's window, in the order
        the worker received its tasks.  The window holds the sent tasks not
        answered yet in that order, so the first one's number is the count
        of tasks sent before the window's."""
        window = self.window
        return self.sent - len(window) + window.index(task)

    def task_at(self, seq: Any) -> Any:
        """The task of number ``seq`` in this worker's window, or None."""
        if seq is None:
            return None
        window = self.window
        index = seq - (self.sent - len(window))
        return window[index] if 0 <= index < len(window) else None

    def began(self) -> bool:
        """Whether the worker got past its start: its initializer ran
        (READY), or it began a task (see running())."""
        return self.ready or bool(self.answered) or bool(
            _PROGRESS.unpack_from(self.progress)[0])

    def running(self) -> Any:
        """The seq of the task the worker is running, or None.  The worker
        writes it to shared memory before and after each task, so the
        parent knows it even when the results of the tasks before are
        still in the worker (batched), and after the worker died."""
        word = _PROGRESS.unpack_from(self.progress)[0]
        if word and not word & 1:
            return (word >> 1) - 1
        return None


class WorkerSet:
    """Up to ``size`` workers and the queue of tasks waiting for one.

    :arg lost_error: ``lost_error(message, exitcode)`` makes the exception
        for a task whose worker died.
    :arg init_error: ``init_error(exc)`` makes the exception for tasks when
        the initializer failed (the set is broken from then on).
    """

    def __init__(self, size: Any, initializer: Any, initargs: Any,
                 max_tasks: Any, max_memory: Any, idle_timeout: Any,
                 kill_on_cancel: Any, lost_error: Any, init_error: Any,
                 name: Any = "gipc-pool", start_method: str = "fork",
                 ) -> None:
        self.size = size
        self.start_method = start_method
        if initializer is not None:
            self.check_function(initializer)
        self.initializer = initializer
        self.initargs = tuple(initargs)
        self.max_tasks = max_tasks
        self.max_memory = max_memory
        self.idle_timeout = idle_timeout
        self.kill_on_cancel = kill_on_cancel
        self.lost_error = lost_error
        self.init_error = init_error
        self.name = name
        self.pid = os.getpid()
        self.hub = get_hub()
        self.queue: deque[Any] = deque()
        self.workers: list[Any] = []
        self.readers: list[Any] = []      # reader greenlets, until they end
        self.stopping = False  # no more tasks will come: retire when idle
        self.terminated = False
        # Tasks submitted from now on are cancelled at once: set by
        # terminate() and by an executor's shutdown(cancel_futures=True),
        # for the rest of a submission (a map's) that yielded to the event
        # loop meanwhile.
        self.cancel_new = False
        self.broken = None     # the initializer's exception
        self.task_time = None  # moving average of a task's run time
        # Unanswered tasks a worker may hold (from task_time); one at a
        # time while nothing is known.
        self.window = 1
        self.spawned = 0
        # No yield at the first submissions: a new pool's first task is
        # the one whose latency counts most (see fair()).
        self._next_yield = _perf_counter() + YIELD_EVERY
        self._outstanding = 0  # tasks submitted, not done
        self._idle = Event()   # set while _outstanding == 0
        self._idle.set()

    # -- submitting ----------------------------------------------------

    def check_process(self) -> Any:
        if _ownership.pid != self.pid:
            raise gipc.GIPCError(
                "this pool belongs to process %d; it cannot be used in "
                "process %d, which inherited it" % (self.pid, os.getpid()))

    def submit(self, task: Any) -> None:
        """Queue ``task`` (a :class:`Task` with its job) and hand it to a
        worker if one has room.  Yields to the event loop about every
        millisecond of submissions."""
        if _perf_counter() >= self._next_yield:  # fair(), without a call
            self.fair()
        if self.broken is not None or self.cancel_new:
            self._refuse((task,))
            return
        self._outstanding += 1
        if self._outstanding == 1:
            self._idle.clear()
        queue = self.queue
        queue.append(task)
        if len(queue) == 1:
            self.dispatch()

    def submit_all(self, tasks: Any) -> None:
        """:meth:`submit` each task of the list ``tasks``, in order, with
        one hand-out to the workers per slice of SUBMIT_SLICE tasks (and
        per turn of the event loop) rather than one per task."""
        queue = self.queue
        for start in range(0, len(tasks), SUBMIT_SLICE):
            if _perf_counter() >= self._next_yield:
                self.fair()
            part = tasks[start:start + SUBMIT_SLICE]
            if self.broken is not None or self.cancel_new:
                self._refuse(part)
                continue
            if not self._outstanding:
                self._idle.clear()
            self._outstanding += len(part)
            queue.extend(part)
            self.dispatch()

    def _refuse(self, tasks: Any) -> None:
        """Complete ``tasks``, not queued, at once: failed with the
        initializer's error if the set is broken, else cancelled (see
        ``cancel_new``: no worker may start for them)."""
        if self.broken is not None:
            error = self.init_error(self.broken)
            for task in tasks:
                _drop(task)
                task._on_result(False, error)
        else:
            for task in tasks:
                _cancel(task)

    def fair(self) -> None:
        """Yield to the event loop if a millisecond passed since the last
        time: called in loops that never wait (submitting, pickling)."""
        now = _perf_counter()
        if now >= self._next_yield:
            self._next_yield = now + YIELD_EVERY
            hub = get_hub()
            if gevent.getcurrent() is not hub:
                # A timer due now, not sleep(0): the greenlet resumes after
                # a whole turn of the loop (I/O and timers included, no
                # waiting), not in the same round of callbacks, which
                # gevent may run for up to its switch interval (5 ms).
                timer = hub.loop.timer(0)
                try:
                    hub.wait(timer)
                finally:
                    timer.close()

    def capacity(self, worker: Any) -> Any:
        """How many more tasks ``worker`` may be given now."""
        room = self.window - len(worker.window) - len(worker.outbox)
        if self.max_tasks is not None:
            room = min(room, self.max_tasks - worker.sent - len(worker.outbox))
        return room

    def dispatch(self) -> None:
        """Hand queued tasks, one by one, to the least loaded worker with
        room; start a worker (up to ``size``) when every one is busy.
        (The window follows past tasks: spreading the tasks keeps a batch
        of long ones, after quick ones, from queueing on one worker.)"""
        if self.broken is not None:
            self._fail_queue(self.init_error(self.broken))
            return
        queue = self.queue
        workers = self.workers
        window = self.window
        limited = self.max_tasks is not None
        while queue:
            best = None
            # Only a worker with room qualifies; next_load: the load of the
            # next least loaded one.
            best_load = next_load = window
            for worker in workers:
                load = len(worker.window) + len(worker.outbox)
                if load < next_load and not worker.retired and (
                        not limited or self.capacity(worker) > 0):
                    if load < best_load:
                        best, best_load, next_load = worker, load, best_load
                    else:
                        next_load = load
            if (best is None or best_load) and len(workers) < self.size:
                if self._start_worker():
                    continue
            if best is None:
                break
            # The tasks that keep it the least loaded, in one run: the
            # same share per worker as one task at a time (a worker that
            # just answered a batch takes as many), for a fraction of the
            # cost per task.  One at a time while workers may start.
            count = 1 if len(workers) < self.size else max(
                1, next_load - best_load)
            if limited:
                count = min(count, self.capacity(best))
            outbox = best.outbox
            was_empty = not outbox
            while count and queue:
                task = queue.popleft()
                if task._phase != PENDING:
                    continue  # cancelled while queued
                task._worker = best
                outbox.append(task)
                count -= 1
            if was_empty and outbox:
                if best.window:
                    self._wake_sender(best)
                else:
                    # An idle worker, whose pipe is empty: a small task is
                    # written from here (a turn of the loop sooner than by
                    # the worker's reader, which then reads the answer).
                    # Not from the hub, which must never wait.
                    if len(outbox) == 1 and not best.sending and _small(
                            outbox[0]) and gevent.getcurrent() is not \
                            get_hub():
                        try:
                            self._send_batch(best)
                        except (OSError, gipc.GIPCError):
                            # The worker died while idle (EPIPE), or its
                            # pipe is closed: its reader sees it too and
                            # hands the task on, as after the sender's
                            # failed write (see _send_loop).
                            pass
                    best.activity.set()

    def check_function(self, func: Any) -> None:
        """Raise before a task exists if ``func`` cannot reach a spawn or
        forkserver worker (a function defined in a ``__main__`` that the
        worker cannot import).

        :raises gipc.StartError: (a ``pickle.PicklingError``) it cannot.
        """
        if self.start_method != "fork":
            from ._spawn import check_importable
            check_importable(func, "function")

    def _start_worker(self) -> bool:
        """Start one worker; False if that cannot be done now (the queued
        tasks fail if no worker is left to run them)."""
        if gevent.getcurrent() is get_hub():
            # Forking needs a greenlet (the child parks the hub).
            gevent.spawn(self.dispatch)
            return False
        ends: list[Any] = []
        progress: Any
        if self.start_method == "fork":
            progress = mmap.mmap(-1, _worker.SHARED_SIZE)  # inherited
        else:
            # A memory file, whose descriptor the worker is sent.
            progress = Memory(_worker.SHARED_SIZE)
        worker = None
        try:
            # Two one-way pipes: tasks to the worker, answers back.
            ends.extend(gipc.pipe(encoder=None, decoder=None))
            ends.extend(gipc.pipe(encoder=None, decoder=None))
            tasks_in, tasks_out, answers_in, answers_out = ends
            worker = _Worker(None, _Channel(answers_in, tasks_out), progress)
            self._send_first_task(worker)
            self.spawned += 1
            process = gipc.start_process(
                _worker.serve, args=(tasks_in, answers_out, progress,
                                     self.initializer, self.initargs,
                                     self.max_memory),
                daemon=True, name="%s-worker-%d" % (self.name, self.spawned),
                start_method=self.start_method)
        except BaseException as exc:
            for end in ends:
                if not end.closed:
                    end.close()
            if worker is not None:
                # Its first task was sent to a worker that never was: it
                # fails as the queued ones do (below).
                error = exc if isinstance(exc, Exception) else \
                    self.lost_error("a worker process could not be "
                                    "started (%r)" % exc, None)
                for task in worker.window:
                    if task._phase != DONE:
                        self._complete(task, False, error)
            if isinstance(exc, Exception) and not self.workers:
                self._fail_queue(exc)
                return False
            raise
        if not isinstance(progress, mmap.mmap):
            progress.close_fd()  # the worker has its own now
        worker.process = process
        self.workers.append(worker)
        # (The sender starts when first needed: see _wake_sender.)
        worker.reader = gevent.spawn(self._read_loop, worker)
        self.readers.append(worker.reader)
        return True

    def _send_first_task(self, worker: Any) -> None:
        """Before the fork: write the first task waiting to the new
        ``worker``'s pipe if it is small (see FIRST_TASK_BYTES).  The
        worker finds it there as it starts, and the parent has nothing to
        write after the fork, while the child shares its memory (every page
        the parent writes then is copied)."""
        queue = self.queue
        while queue and queue[0]._phase != PENDING:
            queue.popleft()  # cancelled while queued
        if not queue:
            return
        task = queue[0]
        if not _small(task):
            return
        queue.popleft()
        task._worker = worker
        worker.outbox.append(task)
        self._send_batch(worker)

    def _fail_queue(self, exc: Any) -> None:
        queue = self.queue
        while queue:
            task = queue.popleft()
            if task._phase == PENDING:
                self._complete(task, False, exc)

    # -- completing ----------------------------------------------------

    def _complete(self, task: Any, ok: Any, value: Any) -> None:
        _drop(task)
        self._outstanding -= 1
        if not self._outstanding:
            self._idle.set()
        task._on_result(ok, value)

    def cancel(self, task: Any) -> bool:
        """Cancel ``task``: a queued one never starts; a sent one is
        stopped if ``kill_on_cancel`` (skipped if it has not started yet,
        else its worker is killed and replaced).  Returns whether the
        task is cancelled (False: done already, or running and not to be
        killed).  The caller completes the task object as cancelled."""
        phase = task._phase
        if phase == DONE:
            return False
        if phase == SENT:
            if not self.kill_on_cancel:
                return False
            worker = task._worker
            seq = worker.seq_of(task)
            running = worker.running()
            if running == seq:
                worker.killed = True
                _kill(worker.process)
            elif running is None or running < seq:
                # Not started: ask the worker to skip it; the reader kills
                # the worker if it starts it before it sees the request.
                worker.skips.append(seq)
                worker.cancelled.add(seq)
                self._wake_sender(worker)
            # else done already: its outcome is dropped when it comes.
        else:
            try:
                (self.queue if task._worker is None
                 else task._worker.outbox).remove(task)
            except ValueError:
                pass
        _drop(task)
        self._outstanding -= 1
        if not self._outstanding:
            self._idle.set()
        return True

    # -- the sender ------------------------------------------------------

    def _send_batch(self, worker: Any) -> None:
        """Write ``worker``'s skip requests and up to MAX_BATCH tasks of its
        outbox to its pipe.  One greenlet at a time (``worker.sending``):
        the frames must reach the worker in the order of its window."""
        worker.sending = True
        try:
            put = worker.channel.put
            if worker.skips:
                skips, worker.skips = worker.skips, []
                put(_dumps((SKIP, skips), _PROTOCOL))
                # Now that the frame is wholly in the pipe: the worker
                # looks at its pipe before its next task (see SKIPS_SENT;
                # the parent alone writes the count).
                progress = worker.progress
                _SKIPS_SENT.pack_into(progress, _SKIPS_SENT_AT, 1 + (
                    _SKIPS_SENT.unpack_from(progress, _SKIPS_SENT_AT)[0]))
            outbox = worker.outbox
            window = worker.window
            jobs: list[Any] = []
            size = 0
            # (jobs: two items per task, see gipc._worker)
            while outbox and len(jobs) < 2 * MAX_BATCH \
                    and size < MAX_BATCH_BYTES:
                task = outbox.popleft()
                if task._phase != PENDING or not task._on_sent():
                    continue
                task._phase = SENT
                worker.sent += 1
                window.append(task)
                job = task._job
                jobs.append(task._function)
                jobs.append(job)
                size += len(job)
            if jobs:
                worker.activity.set()
                put(_dumps((TASKS, jobs), _PROTOCOL))
        finally:
            worker.sending = False

    def _wake_sender(self, worker: Any) -> None:
        """Have ``worker``'s sender write its outbox and skip requests.
        The sender greenlet starts on the first call: while a worker is
        given tasks only when idle, its reader sends them (see _read_loop),
        and a pool that runs one task at a time never needs a sender."""
        if worker.retired:
            return
        worker.wake.set()
        if worker.sender is None:
            worker.sender = gevent.spawn(self._send_loop, worker)

    def _send_loop(self, worker: Any) -> None:
        """Write ``worker``'s outbox and skip requests to its pipe while
        the reader is busy reading (see _read_loop for the idle case)."""
        wake = worker.wake
        outbox = worker.outbox
        try:
            while True:
                if worker.sending or not outbox and not worker.skips:
                    wake.clear()
                    wake.wait()
                    continue
                self._send_batch(worker)
        except (OSError, gipc.GIPCError):
            # The worker is gone (BrokenPipeError) or its pipe closed: the
            # reader sees it too and does what must be done.
            pass

    # -- the reader ------------------------------------------------------

    def _read_loop(self, worker: Any) -> None:
        """Read ``worker``'s answers until it retires or dies."""
        channel = worker.channel
        get = channel.get
        poll = channel.poll
        window = worker.window
        activity = worker.activity
        idle_watcher = get_hub().loop.io(channel.reader.fileno(), 1)
        answered = False  # the last frame emptied the window
        try:
            while True:
                if not window and worker.outbox and not worker.sending:
                    # The worker is idle, so its pipe is empty: send from
                    # here, one greenlet switch sooner than the sender, and
                    # go straight on to read the answers.
                    self._send_batch(worker)
                    if worker.outbox or worker.skips:
                        self._wake_sender(worker)
                if not window and (answered or worker.retired
                                   or not poll()):
                    # (No frame can follow the answers to the last task;
                    # retired here: stop() ended the worker's tasks.)
                    answered = False
                    if self._should_retire(worker):
                        self._retire(worker)
                        return
                    activity.clear()
                    if worker.outbox:
                        continue
                    if worker.skips:
                        self._wake_sender(worker)
                    idle_watcher.start(activity.set)
                    try:
                        woke = activity.wait(self.idle_timeout)
                    finally:
                        idle_watcher.stop()
                    if not woke and not window and not worker.outbox:
                        self._retire(worker)
                        return
                    continue
                if worker.cancelled:
                    frame = self._get_or_kill(worker)
                    if frame is None:
                        continue
                else:
                    frame = get()
                kind = frame[:1]
                if kind == _worker.RESULTS:
                    self._take_results(worker, frame)
                    answered = not window
                elif kind == READY:
                    worker.ready = True
                elif kind == INIT_FAILED:
                    self._init_failed(worker, _loads(frame[1:]))
                    return
                if worker.retired:
                    if not channel.closed:
                        # stop() ended its tasks: reap it (a frame sent
                        # before, READY, came meanwhile).
                        self._retire(worker)
                    return
                if self.queue:
                    self.dispatch()
                if worker.outbox and window:
                    # Let the sender refill the worker before this greenlet
                    # polls the pipe for the next answers (which blocks the
                    # loop for up to gipc's spin time).
                    gevent.sleep(0)
        except (EOFError, OSError, gipc.GIPCError):
            self._lost(worker)
        finally:
            idle_watcher.close()

    def _get_or_kill(self, worker: Any) -> Any:
        """The next frame from ``worker``, which holds cancelled tasks it
        was asked to skip; None after SKIP_GRACE without one.  If the
        worker is running one of them (the request came too late), kill
        it (the caller then reads the end of the pipe)."""
        task = worker.task_at(worker.running())
        if task is not None and task._phase == DONE:
            worker.killed = True
            _kill(worker.process)
        try:
            return worker.channel.get(timeout=SKIP_GRACE)
        except Timeout:
            return None

    def _take_results(self, worker: Any, frame: Any) -> None:
        window = worker.window
        count = COUNT.unpack_from(frame, 1)[0]
        try:
            results, busy, retiring = _loads(memoryview(frame)[5:])
        except Exception as exc:
            error = gipc.GIPCError(
                "the results of %d tasks could not be unpickled in the "
                "parent: %s: %s" % (count, type(exc).__name__, exc))
            results = [(FAILED, (error, ""))] * count
            busy, retiring = None, False
        worker.answered += len(results)
        complete = self._complete
        for status, value in results:
            task = window.popleft()
            if task._phase == DONE:
                if worker.cancelled:
                    # Its number: the count of tasks sent before the ones
                    # left in the window, less itself.
                    worker.cancelled.discard(
                        worker.sent - len(window) - 1)
                continue  # cancelled meanwhile; its outcome is dropped
            if status == OK:
                complete(task, True, value)
            elif status == FAILED:
                complete(task, False, remote_error(value))
            else:  # SKIPPED: a cancel the task did not see in time
                complete(task, False, gipc.GIPCError("task skipped"))
        if busy is not None and results:
            sample = busy / len(results)
            average = self.task_time
            average = self.task_time = sample if average is None else (
                0.7 * average + 0.3 * sample)
            self.window = MAX_WINDOW if average <= 0 else min(
                MAX_WINDOW, 1 + int(PREFETCH_SECONDS / average))
        if retiring:
            self._retire(worker)
        elif self.max_tasks is not None \
                and worker.answered >= self.max_tasks:
            self._retire(worker)

    def _should_retire(self, worker: Any) -> Any:
        if self.max_tasks is not None and worker.answered >= self.max_tasks:
            return True
        return self.stopping and not self.queue and not worker.outbox

    def _requeue(self, worker: Any) -> None:
        """Put ``worker``'s unanswered and unsent tasks back at the front
        of the queue, in order (none of them has started)."""
        tasks = [t for t in list(worker.window) + list(worker.outbox)
                 if t._phase != DONE]
        worker.window.clear()
        worker.outbox.clear()
        for task in reversed(tasks):
            task._phase = PENDING
            task._worker = None
            self.queue.appendleft(task)

    def _detach(self, worker: Any) -> None:
        worker.retired = True
        try:
            self.workers.remove(worker)
        except ValueError:
            pass
        if worker.sender is not None and worker.sender is not \
                gevent.getcurrent():
            worker.sender.kill()

    def _retire(self, worker: Any) -> None:
        """Stop giving ``worker`` tasks, hand back what it has not run, and
        let it exit (its pipe closes)."""
        self._detach(worker)
        self._requeue(worker)
        if not worker.channel.closed:
            worker.channel.close()
        _reap(worker.process)
        self._forget(worker)
        if self.queue and not self.terminated:
            self.dispatch()

    def _lost(self, worker: Any) -> None:
        """``worker`` died (or was killed to stop a cancelled task): fail
        the task it was running, give the others to a new worker."""
        # A worker that dies before it began (it has run no task, nor
        # reported its initializer done) would die again in its successor:
        # the tasks fail instead of workers being respawned in a loop.
        in_initializer = not worker.began() and not worker.killed \
            and not self.terminated
        stage = ("in the initializer" if self.initializer is not None
                 else "at start, before its first task")
        if in_initializer:
            # Set before anything can switch: no new worker may start.
            self.broken = self.lost_error(
                "a worker process died %s" % stage, None)
        self._detach(worker)
        if not worker.channel.closed:
            worker.channel.close()
        code = _reap(worker.process)
        if self.terminated:
            worker.window.clear()
            worker.outbox.clear()
        elif in_initializer:
            # No new worker would do better.
            self._requeue(worker)
            self._break(self.lost_error(
                "a worker process died %s (%s)"
                % (stage, _describe_exit(code)), code))
        elif not worker.killed:
            task = worker.task_at(worker.running())
            if task is not None and task._phase != DONE:
                worker.window.remove(task)
                self._complete(task, False, self.lost_error(
                    "a worker process died while running this task (%s)"
                    % _describe_exit(code), code))
        # The others never started, or finished with their results still
        # in the worker: they run again.
        self._requeue(worker)
        self._forget(worker)
        if self.queue and not self.terminated:
            self.dispatch()

    def _init_failed(self, worker: Any, value: Any) -> None:
        self.broken = remote_error(value)  # before anything can switch
        self._detach(worker)
        self._requeue(worker)
        self._break(self.broken)
        worker.channel.close()
        _reap(worker.process)
        self._forget(worker)

    def _break(self, exc: Any) -> None:
        """The initializer failed: fail every task, now and later."""
        self.broken = exc
        for worker in list(self.workers):
            self._requeue(worker)
        tasks = [t for t in self.queue if t._phase != DONE]
        self.queue.clear()
        for task in tasks:
            self._complete(task, False, self.init_error(exc))

    def _forget(self, worker: Any) -> None:
        try:
            self.readers.remove(worker.reader)
        except ValueError:
            pass
        worker.process.close()

    # -- shutting down ---------------------------------------------------

    def wait_idle(self, timeout: Any = None) -> Any:
        """Wait until every submitted task is done."""
        return self._idle.wait(timeout)

    def stop(self) -> None:
        """No more tasks will be submitted: workers exit once the queue is
        empty."""
        self.stopping = True
        queued = bool(self.queue)
        for worker in self.workers:
            if not (queued or worker.window or worker.outbox
                    or worker.sending or worker.retired):
                self._end_tasks(worker)
            worker.activity.set()

    def _end_tasks(self, worker: Any) -> None:
        """Close idle ``worker``'s task stream (no task will come for it):
        it starts exiting now, a turn of the loop before its reader wakes
        to retire and reap it.  The reader sees it ``retired``, and
        dispatch() gives it nothing more."""
        writer = worker.channel.writer
        try:
            writer.close()
        except gipc.GIPCError:
            return  # in use: the reader closes it as it retires the worker
        worker.retired = True

    def join(self, timeout: Any = None) -> bool:
        """Wait for every worker to exit (after :meth:`stop` or
        :meth:`terminate`); False if ``timeout`` passed first."""
        deadline = None if timeout is None else _perf_counter() + timeout
        while self.readers:
            left = None if deadline is None else deadline - _perf_counter()
            if left is not None and left <= 0:
                return False
            gevent.joinall(list(self.readers), timeout=left)
        return True

    def terminate(self, kill: Any = False, running_error: Any = None) -> None:
        """Stop every worker now (SIGTERM, or SIGKILL with ``kill``) and
        cancel every task not done; with ``running_error``, the tasks sent
        to workers fail with that exception instead."""
        self.stopping = True
        self.terminated = self.cancel_new = True
        cancelled = [t for t in self.queue if t._phase != DONE]
        self.queue.clear()
        failed = []
        for worker in list(self.workers):
            sent = [t for t in worker.window if t._phase != DONE]
            cancelled.extend(t for t in worker.outbox if t._phase != DONE)
            if running_error is None:
                cancelled.extend(sent)
            else:
                failed.extend(sent)
            if kill:
                _kill(worker.process)
            else:
                _terminate(worker.process)
        for task in failed:
            self._complete(task, False, running_error)
        for task in cancelled:
            self._outstanding -= 1
            _cancel(task)
        if self._outstanding <= 0:
            self._outstanding = 0
            self._idle.set()
        for worker in list(self.workers):
            worker.activity.set()


def _drop(task: Any) -> None:
    """Make ``task`` done, keeping nothing but what its result object
    holds: a program may hold many finished tasks, and a full collection
    of the cyclic GC visits every slot of each one (the job's pickles
    go)."""
    task._phase = DONE
    task._worker = None
    task._function = task._job = None


def _cancel(task: Any) -> None:
    """Complete ``task`` as cancelled by the set (terminated): done, its
    job dropped, its result object told."""
    _drop(task)
    task._on_cancel()


def _small(task: Any) -> bool:
    """Whether ``task``'s frame fits in an empty pipe, so that writing it
    there never waits (see FIRST_TASK_BYTES)."""
    return len(task._function) + len(task._job) <= FIRST_TASK_BYTES


def _describe_exit(code: Any) -> str:
    if code is None:
        return "exit code unknown"
    if code < 0:
        import signal
        try:
            return "killed by signal %s" % signal.Signals(-code).name
        except ValueError:
            return "killed by signal %d" % -code
    return "exit code %d" % code


def _kill(process: Any) -> None:
    try:
        process.kill()
    except (OSError, ValueError):
        pass


def _terminate(process: Any) -> None:
    try:
        process.terminate()
    except (OSError, ValueError):
        pass


def _reap(process: Any) -> Any:
    """Join ``process`` (killing it if it does not exit in time); return
    its exit code."""
    process.join(EXIT_GRACE)
    if process.exitcode is None:
        _kill(process)
        process.join()
    return process.exitcode


