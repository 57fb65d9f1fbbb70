"""How a pool's workers start: one per task waiting for one, up to the
pool's size; no gevent hub in a worker until a task uses gevent; no READY
message (and no death "in the initializer") without an initializer; a
sender greenlet only for a worker that is given tasks while busy."""
import os
import signal

import gevent
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


def test_worker_dead_before_its_first_task_without_initializer_is_replaced():
    p = gipc.Pool(1)
    try:
        result = p.apply_async(square, (2,))
        # The worker has started, the parent has read nothing from it.
        (worker,) = p._engine.workers
        os.kill(worker.process.pid, signal.SIGKILL)
        try:
            assert result.get(WAIT) == 4
        except gipc.WorkerLostError as exc:
            # (Only if the worker ran the task before the signal landed.)
            assert "initializer" not in str(exc)
        assert p.apply(square, (3,)) == 9
        assert p._engine.broken is None
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


def put_whether_hub_after_put(writer):
    writer.put(False)
    writer.put(get_hub_if_exists() is not None)


def test_fresh_child_makes_no_hub_to_write():
    # A child's first call on a pipe takes a fairness turn; with no hub
    # there is no loop to yield to, and none is made for it.
    reader, writer = gipc.pipe()
    with reader:
        child = gipc.start_process(put_whether_hub_after_put, (writer,))
        try:
            assert reader.get(timeout=WAIT) is False
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
