"""The loop a pool worker runs (``gipc._worker.serve``), driven directly:
run in a greenlet of the test's own process, on two raw pipes, with the
test in the parent's place.

A worker with tasks queued does not look at its pipe before every task
(a system call each, a trivial task's worth): it looks when the parent
says it wrote a skip request (a count in the memory they share), and at
least every POLL_AFTER seconds.  These tests pin each rule with the other
turned off, so that each fails if its rule goes."""
import contextlib
from types import SimpleNamespace

import gevent
import pytest

import gipc
from gipc import _worker

JOIN = 10

# What _ask_to_skip_the_next needs: it runs in the worker's loop, which is
# this process (pickled by reference, it finds this module's globals).
_worker_side: dict = {}


def _frame(kind, items):
    return _worker._dumps((kind, items), _worker._PROTOCOL)


def _tasks(*calls):
    """A TASKS frame of ``(function, args)`` calls."""
    jobs = []
    for func, args in calls:
        jobs.extend(_worker.encode_call(func, args, {}))
    return _frame(_worker.TASKS, jobs)


def _ask_to_skip_the_next(skips_sent):
    """A task that does what the parent does to cancel the task queued
    behind it (number 1): write a skip request, then count it in the
    shared memory, or not (``skips_sent`` None)."""
    _worker_side["tasks"].put(_frame(_worker.SKIP, [1]))
    if skips_sent is not None:
        _worker.SKIPS_SENT.pack_into(_worker_side["progress"],
                                     _worker.SKIPS_SENT_AT, skips_sent)


def _close_the_stream():
    """A task that does what a parent that closes the stream (or dies)
    does while the worker has tasks queued."""
    _worker_side["tasks"].close()


def _results(frame):
    assert frame[:1] == _worker.RESULTS
    results, _, retiring = _worker._loads(frame[5:])
    assert not retiring
    return results


@contextlib.contextmanager
def serving(monkeypatch, poll_after=None):
    """The worker's surroundings: ``tasks`` (the writer of its tasks
    pipe; ``tasks_in``, its reader), ``answers`` (the reader of its
    answers), ``progress`` (the shared memory) and ``greenlet``; with the
    worker's POLL_AFTER set to ``poll_after`` if given."""
    if poll_after is not None:
        monkeypatch.setattr(_worker, "POLL_AFTER", poll_after)
    tasks_r, tasks_w = gipc.pipe(encoder=None, decoder=None)
    answers_r, answers_w = gipc.pipe(encoder=None, decoder=None)
    progress = bytearray(_worker.SHARED_SIZE)
    _worker_side.update(tasks=tasks_w, progress=progress)
    worker = gevent.spawn(_worker.serve, tasks_r, answers_w, progress,
                          None, (), None)
    try:
        yield SimpleNamespace(tasks=tasks_w, tasks_in=tasks_r,
                              answers=answers_r, progress=progress,
                              greenlet=worker)
    finally:
        _worker_side.clear()
        if not tasks_w.closed:
            tasks_w.close()
        worker.join(JOIN)
        for h in (tasks_r, answers_r, answers_w):
            h.close()
    assert worker.successful()


def test_a_skip_request_counted_in_shared_memory_is_seen_before_the_next_task(
        monkeypatch):
    # The time rule off: only the count makes the worker look.
    with serving(monkeypatch, poll_after=1e9) as w:
        w.tasks.put(_tasks((_ask_to_skip_the_next, (1,)), (abs, (-2,)),
                           (abs, (-3,))))
        assert _results(w.answers.get(timeout=JOIN)) == [
            (_worker.OK, None), (_worker.SKIPPED, None), (_worker.OK, 3)]


def test_a_skip_request_not_counted_waits_for_the_time_rule(monkeypatch):
    # The other side of the test above: without the count (and the time
    # rule off), the worker runs its queue before it reads the request.
    with serving(monkeypatch, poll_after=1e9) as w:
        w.tasks.put(_tasks((_ask_to_skip_the_next, (None,)), (abs, (-2,)),
                           (abs, (-3,))))
        assert _results(w.answers.get(timeout=JOIN)) == [
            (_worker.OK, None), (_worker.OK, 2), (_worker.OK, 3)]


@pytest.mark.parametrize("poll_after, ran", [(0.0, 1), (1e9, 50)])
def test_the_time_rule_finds_the_end_of_the_stream_mid_queue(
        monkeypatch, poll_after, ran):
    # The parent closes the stream (or dies) while the worker has 49
    # tasks queued: a worker that looks (before every task here) stops
    # after the one it is on.
    with serving(monkeypatch, poll_after) as w:
        w.tasks.put(_tasks((_close_the_stream, ()),
                           *[(abs, (-i,)) for i in range(49)]))
        w.greenlet.join(JOIN)
        assert w.greenlet.dead
        word = _worker.PROGRESS.unpack_from(w.progress)[0]
        assert word == 2 * (ran - 1) + 3  # the last task run returned


def test_a_worker_takes_a_skip_request_that_finds_its_queue_empty(
        monkeypatch):
    # (A skip for a task the worker has already run, say.)  It waits for
    # the next frame; it used to take the next task from its empty queue.
    with serving(monkeypatch) as w:
        w.tasks.put(_frame(_worker.SKIP, [7]))
        with gevent.Timeout(JOIN):
            while w.tasks_in.poll():  # until the worker has read it alone
                gevent.sleep(0)
        assert not w.greenlet.dead
        w.tasks.put(_tasks((abs, (-3,))))
        assert _results(w.answers.get(timeout=JOIN)) == [(_worker.OK, 3)]
