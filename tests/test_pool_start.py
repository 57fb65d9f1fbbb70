"""How a pool's workers start: one per task waiting for one, up to the
pool's size; no gevent hub in a worker until a task uses gevent; no READY
message (and no death "in the initializer") without an initializer; a
sender greenlet only for a worker that is given tasks while busy."""
import os
import signal

import gevent
import pytest
from gevent._hub_local import get_hub_if_exists

import gipc
from pool_support import WAIT, square, touch, wait_for_file, wait_until


def worker_has_hub(_=None):
    return get_hub_if_exists() is not None


def sleep_zero_then_has_hub(_=None):
    gevent.sleep(0)
    return get_hub_if_exists() is not None


def leave_greenlet_behind(path):
    """Spawn a greenlet that creates ``path`` once the worker's event loop
    turns, and return at once."""
    gevent.spawn(touch, path)
    return True


def _close(pool):
    pool.close()
    assert pool.join(WAIT)


def test_one_task_starts_one_worker_a_second_waiting_one_the_second(
        tmp_path):
    path = str(tmp_path / "go")
    p = gipc.Pool(2)
    try:
        first = p.apply_async(wait_for_file, (path,))
        assert len(p._engine.workers) == 1
        second = p.apply_async(wait_for_file, (path,))
        assert len(p._engine.workers) == 2
        touch(path)
        assert first.get(WAIT) != second.get(WAIT)
    finally:
        _close(p)


def test_worker_makes_no_hub_until_a_task_uses_gevent():
    p = gipc.Pool(1)
    try:
        assert p.apply(worker_has_hub) is False
        # Waiting for the second task made none either.
        assert p.apply(worker_has_hub) is False
        assert p.apply(sleep_zero_then_has_hub) is True
        assert p.apply(worker_has_hub) is True
        assert len(p._engine.workers) == 1
    finally:
        _close(p)


def test_greenlets_a_task_left_run_while_the_worker_waits(tmp_path):
    # Once a task made a hub, the idle worker waits cooperatively.
    path = tmp_path / "ran"
    p = gipc.Pool(1)
    try:
        assert p.apply(leave_greenlet_behind, (str(path),)) is True
        wait_until(path.exists)
        assert p.apply(square, (3,)) == 9
    finally:
        _close(p)


def test_worker_dead_at_start_without_initializer_fails_the_tasks():
    # With no READY message to wait for, a worker "began" once it started a
    # task; one that dies before is not replaced in a loop.
    p = gipc.Pool(1)
    try:
        result = p.apply_async(square, (2,))
        # The worker has started, the parent has read nothing from it.
        (worker,) = p._engine.workers
        os.kill(worker.process.pid, signal.SIGKILL)
        try:
            assert result.get(WAIT) == 4
            message = "done"
        except gipc.WorkerLostError as exc:
            message = str(exc)
        if message == "done" or "while running" in message:
            # (Only if the worker began the task before the signal came.)
            assert p.apply(square, (3,)) == 9
        else:
            assert "at start, before its first task" in message
            assert "initializer" not in message
            assert not p._engine.workers
            with pytest.raises(gipc.WorkerLostError):
                p.apply(square, (3,))
    finally:
        _close(p)


def test_tasks_given_one_at_a_time_need_no_sender_greenlet():
    p = gipc.Pool(2)
    try:
        for i in range(3):
            assert p.apply(square, (i,)) == i * i
        assert [w.sender for w in p._engine.workers] == [None]
        # A backlog of quick tasks is sent while the workers are busy.
        assert p.map(square, range(3000), chunksize=1) == [
            i * i for i in range(3000)]
    finally:
        _close(p)


def test_a_thread_without_hub_waits_in_poll_and_makes_none():
    # (How an idle worker waits: FdWaiter in a thread with no hub.)
    import threading
    from gipc._cooperate import READ, FdWaiter
    r, w = os.pipe()
    seen = []

    def waits():
        waiter = FdWaiter(r, READ)
        seen.append(waiter.wait(0.001))   # nothing to read: times out
        os.write(w, b"x")
        seen.append(waiter.wait(WAIT))
        seen.append(waiter.wait())
        seen.append(get_hub_if_exists() is None)

    try:
        thread = threading.Thread(target=waits)
        thread.start()
        thread.join(WAIT)
        assert not thread.is_alive()
        assert seen == [False, True, True, True]
    finally:
        os.close(r)
        os.close(w)


def put_whether_hub_after_put(writer, reader):
    writer.put(False)
    reader.get()  # waits (the parent sends once it has the first message)
    writer.put(get_hub_if_exists() is not None)


def test_fresh_child_makes_no_hub_to_write_or_wait():
    # A child's first call on a pipe takes a fairness turn; with no hub
    # there is no loop to yield to, and none is made for it; nor to wait.
    reader, writer = gipc.pipe()
    child_end, parent_end = gipc.pipe()
    with reader, parent_end:
        child = gipc.start_process(put_whether_hub_after_put,
                                   (writer, child_end))
        try:
            assert reader.get(timeout=WAIT) is False
            parent_end.put(None)
            assert reader.get(timeout=WAIT) is False
        finally:
            child.join(WAIT)
        assert child.exitcode == 0


def test_close_ends_an_idle_workers_tasks_at_once():
    # close() itself closes the idle worker's task stream: the worker exits
    # while the parent's loop has not turned (its reader has not run).
    import select
    p = gipc.Pool(2)
    try:
        assert p.apply(square, (2,)) == 4
        (worker,) = p._engine.workers
        pidfd = os.pidfd_open(worker.process.pid)
        try:
            p.close()
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            # A blocking wait: nothing else runs meanwhile.
            assert poller.poll(WAIT * 1000), "the worker did not exit"
        finally:
            os.close(pidfd)
    finally:
        p.close()
        assert p.join(WAIT)
    assert not p._engine.workers


def test_close_with_a_busy_worker_finishes_its_tasks(tmp_path):
    path = str(tmp_path / "go")
    p = gipc.Pool(2)
    try:
        idle = p.apply_async(square, (3,))
        assert idle.get(WAIT) == 9
        busy = p.apply_async(wait_for_file, (path,))
        queued = p.apply_async(square, (4,))
        p.close()
        touch(path)
        assert busy.get(WAIT) and queued.get(WAIT) == 16
    finally:
        p.close()
        assert p.join(WAIT)


def test_a_new_workers_small_first_task_is_sent_before_the_fork():
    p = gipc.Pool(1)
    try:
        result = p.apply_async(square, (5,))
        # Nothing has run since: the task went into the pipe with the start.
        (worker,) = p._engine.workers
        assert list(worker.window) == [result] and not worker.outbox
        assert result.get(WAIT) == 25
    finally:
        _close(p)


def test_a_new_workers_large_first_task_is_sent_after_the_fork():
    # Larger than an empty pipe is sure to take: written once the worker
    # reads (before the fork, the write would wait for ever).
    data = b"x" * (4 * 1024 * 1024)
    p = gipc.Pool(1)
    try:
        result = p.apply_async(len, (data,))
        (worker,) = p._engine.workers
        assert list(worker.outbox) == [result] and not worker.window
        assert result.get(WAIT) == len(data)
    finally:
        _close(p)


def test_the_first_task_fails_with_the_error_that_stopped_its_worker(
        monkeypatch):
    def cannot_fork(*args, **kwargs):
        raise BlockingIOError(11, "no more processes")

    monkeypatch.setattr(gipc, "start_process", cannot_fork)
    p = gipc.Pool(1)
    try:
        first = p.apply_async(square, (2,))
        with pytest.raises(BlockingIOError):
            first.get(WAIT)
        assert not p._engine.workers
    finally:
        _close(p)
