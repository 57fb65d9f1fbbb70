"""gipc.ProcessPoolExecutor and the cooperative futures_wait() /
as_completed(), against concurrent.futures' behaviour."""
import concurrent.futures as cf
import gc
import os
import pickle
import threading
import time
from concurrent.futures.process import BrokenProcessPool

import gevent
import pytest

import gipc
from gipc.futures import BrokenWorkerError, Future
from pool_support import (
    WAIT, add, alive, exit_with, fail, failing_initializer, frames_of,
    initialized, initializer, kill_self, own_objects, pid, sleep_then,
    square, touch, touch_and_wait, wait_until)


@pytest.fixture
def executor():
    ex = gipc.ProcessPoolExecutor(2)
    yield ex
    ex.kill_workers()


def test_submit_returns_stdlib_futures(executor):
    future = executor.submit(add, 2, y=3)
    assert isinstance(future, cf.Future)
    assert future.result(timeout=WAIT) == 5
    assert future.done() and not future.cancelled()
    assert future.exception(timeout=0) is None
    done = []
    future.add_done_callback(done.append)
    assert done == [future]


def test_exception_and_remote_traceback(executor):
    future = executor.submit(fail, "nope")
    exc = future.exception(timeout=WAIT)
    assert isinstance(exc, ValueError)
    assert "in fail" in str(exc.__cause__)
    with pytest.raises(ValueError, match="nope"):
        future.result()


def test_result_timeout(executor):
    future = executor.submit(sleep_then, 0.5, 1)
    with pytest.raises(cf.TimeoutError):
        future.result(timeout=0.01)
    assert future.running()
    assert future.result(timeout=WAIT) == 1


def test_map_like_the_stdlib(executor):
    data = list(range(30))
    assert list(executor.map(square, data)) == [x * x for x in data]
    assert list(executor.map(add, data, data, chunksize=4)) == [
        2 * x for x in data]
    assert list(executor.map(square, [])) == []
    with pytest.raises(ValueError):
        executor.map(square, data, chunksize=0)
    results = executor.map(fail, ["a"])
    with pytest.raises(ValueError, match="a"):
        next(results)


def test_map_timeout_cancels_the_rest(executor):
    results = executor.map(sleep_then, [WAIT] * 4, timeout=0.2)
    with pytest.raises(cf.TimeoutError):
        list(results)
    assert executor.submit(square, 3).result(timeout=WAIT) == 9


def test_callbacks_and_many_greenlets(executor):
    futures = []
    jobs = [gevent.spawn(lambda i=i: futures.append(
        executor.submit(square, i)) or futures[-1].result())
        for i in range(40)]
    gevent.joinall(jobs, timeout=WAIT, raise_error=True)
    assert sorted(g.value for g in jobs) == sorted(i * i for i in range(40))


def test_bad_input():
    with pytest.raises(ValueError):
        gipc.ProcessPoolExecutor(0)
    with pytest.raises(TypeError):
        gipc.ProcessPoolExecutor(1, initializer=5)
    with pytest.raises(TypeError):
        gipc.ProcessPoolExecutor(1, max_tasks_per_child="2")
    with pytest.raises(ValueError):
        gipc.ProcessPoolExecutor(1, max_tasks_per_child=0)
    ex = gipc.ProcessPoolExecutor(1)
    with pytest.raises(TypeError):
        ex.submit(5)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        ex.submit(square, lambda: 1)  # unpicklable: raises in the caller
    ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(square, 1)


def test_shutdown_waits_and_leaves_nothing():
    ex = gipc.ProcessPoolExecutor(2)
    futures = [ex.submit(sleep_then, 0.02, i) for i in range(8)]
    ex.shutdown(wait=True)
    assert [f.result(0) for f in futures] == list(range(8))
    assert not ex._engine.workers


def test_shutdown_cancel_futures():
    ex = gipc.ProcessPoolExecutor(1)
    running = ex.submit(sleep_then, 0.3, "ran")
    wait_until(lambda: running.running())
    queued = [ex.submit(square, i) for i in range(5)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert running.result(0) == "ran"
    assert all(f.cancelled() for f in queued)


def test_with_block_shuts_down():
    with gipc.ProcessPoolExecutor(2) as ex:
        futures = [ex.submit(square, i) for i in range(10)]
    assert [f.result(0) for f in futures] == [i * i for i in range(10)]


def test_worker_death_fails_only_that_future(executor):
    others = [executor.submit(sleep_then, 0.01, i) for i in range(10)]
    doomed = executor.submit(exit_with, 3)
    with pytest.raises(BrokenProcessPool) as info:
        doomed.result(timeout=WAIT)
    assert isinstance(info.value, gipc.WorkerLostError)
    assert isinstance(info.value, BrokenWorkerError)
    assert info.value.exitcode == 3
    assert [f.result(WAIT) for f in others] == list(range(10))
    killed = executor.submit(kill_self)
    with pytest.raises(BrokenWorkerError, match="SIGKILL"):
        killed.result(WAIT)
    assert executor.submit(square, 2).result(WAIT) == 4


def test_cancel_running_future_kills_it(tmp_path):
    with gipc.ProcessPoolExecutor(1) as ex:
        first = ex.submit(pid).result(WAIT)
        marker = str(tmp_path / "m")
        never = str(tmp_path / "never")
        running = ex.submit(touch_and_wait, marker)
        pending = ex.submit(touch, never)
        wait_until(lambda: os.path.exists(marker))
        assert running.running()
        assert pending.cancel()
        assert running.cancel()
        assert running.cancelled() and pending.cancelled()
        with pytest.raises(cf.CancelledError):
            running.result(WAIT)
        wait_until(lambda: not alive(first))
        assert ex.submit(square, 3).result(WAIT) == 9
        assert not os.path.exists(never)


def test_cancel_running_without_kill_on_cancel(tmp_path):
    with gipc.ProcessPoolExecutor(1, kill_on_cancel=False) as ex:
        running = ex.submit(sleep_then, 0.3, "ran")
        wait_until(lambda: running.running())
        assert not running.cancel()
        assert running.result(WAIT) == "ran"


def test_max_tasks_per_child():
    with gipc.ProcessPoolExecutor(1, max_tasks_per_child=3) as ex:
        pids = [ex.submit(pid).result(WAIT) for _ in range(9)]
        assert len(set(pids)) == 3


def test_initializer():
    with gipc.ProcessPoolExecutor(1, initializer=initializer,
                                  initargs=("x",)) as ex:
        assert ex.submit(initialized).result(WAIT) == ["x"]


def test_initializer_failure_breaks_the_executor():
    ex = gipc.ProcessPoolExecutor(2, initializer=failing_initializer)
    futures = []
    try:
        for i in range(4):
            futures.append(ex.submit(square, i))
    except BrokenProcessPool:
        pass  # the first worker already reported (submit yields)
    assert futures
    for f in futures:
        with pytest.raises(BrokenProcessPool) as info:
            f.result(WAIT)
        assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(BrokenProcessPool):
        ex.submit(square, 1)
    ex.shutdown()
    assert ex._engine.spawned <= 2


@pytest.mark.parametrize("method", ["terminate_workers", "kill_workers"])
def test_terminate_and_kill_workers(method):
    ex = gipc.ProcessPoolExecutor(1)
    running = ex.submit(sleep_then, WAIT, 1)
    wait_until(lambda: running.running())
    queued = ex.submit(square, 2)
    worker = ex._engine.workers[0].process.pid
    getattr(ex, method)()
    assert queued.cancelled()
    with pytest.raises(BrokenProcessPool):
        running.result(0)
    assert not alive(worker)
    with pytest.raises(RuntimeError):
        ex.submit(square, 1)


@pytest.mark.parametrize("stop", [
    "kill_workers", "terminate_workers",
    "shutdown(cancel_futures=True)"])
def test_a_stop_while_submitting_cancels_the_submitted(stop):
    # submit() may yield to the event loop (fairness); a stop that cancels
    # pending futures, run then, cancels this one too, and no worker
    # starts for it.
    ex = gipc.ProcessPoolExecutor(1)
    assert ex.submit(square, 2).result(WAIT) == 4
    engine = ex._engine
    spawned = engine.spawned
    engine._next_yield = 0  # this submit() yields
    if stop.startswith("shutdown"):
        gevent.spawn(ex.shutdown, wait=False, cancel_futures=True)
    else:
        gevent.spawn(getattr(ex, stop))
    future = ex.submit(square, 3)
    assert future.cancelled()
    ex.shutdown()
    assert engine.spawned == spawned and not engine.workers


def test_result_from_another_thread(executor):
    future = executor.submit(sleep_then, 0.2, 7)
    got = []
    thread = threading.Thread(target=lambda: got.append(future.result(WAIT)))
    thread.start()
    assert future.result(WAIT) == 7
    thread.join(WAIT)
    assert got == [7]


# -- futures_wait / as_completed ---------------------------------------

def test_futures_wait_modes(executor):
    slow = executor.submit(sleep_then, 0.5, "slow")
    quick = executor.submit(square, 2)
    done, not_done = gipc.futures_wait([slow, quick], timeout=WAIT,
                                       return_when=cf.FIRST_COMPLETED)
    assert quick in done and slow in not_done
    bad = executor.submit(fail, "x")
    done, not_done = gipc.futures_wait([slow, bad], timeout=WAIT,
                                       return_when=cf.FIRST_EXCEPTION)
    assert bad in done and slow in not_done
    done, not_done = gipc.futures_wait([slow, quick, bad], timeout=WAIT)
    assert done == {slow, quick, bad} and not not_done
    with pytest.raises(ValueError):
        gipc.futures_wait([quick], return_when="nonsense")


def test_futures_wait_timeout(executor):
    slow = executor.submit(sleep_then, 1, "slow")
    t0 = time.monotonic()
    done, not_done = gipc.futures_wait([slow], timeout=0.05)
    assert not done and not_done == {slow}
    assert time.monotonic() - t0 < WAIT / 2
    slow.cancel()


def test_as_completed_yields_in_completion_order(executor):
    slow = executor.submit(sleep_then, 0.4, "slow")
    quick = executor.submit(sleep_then, 0.01, "quick")
    order = [f.result() for f in gipc.as_completed([slow, quick, quick],
                                                   timeout=WAIT)]
    assert order == ["quick", "slow"]
    slower = executor.submit(sleep_then, 1, "x")
    with pytest.raises(cf.TimeoutError, match="1 \\(of 1\\)"):
        list(gipc.as_completed([slower], timeout=0.05))
    slower.cancel()


def test_thread_pool_futures_wake_the_hub():
    """Futures completed by other OS threads: the hub keeps running while
    we wait (a ticker greenlet ticks), and each one wakes the waiter."""
    # Each thread's task waits for its own gate; the gates open one at a
    # time, the first from the ticker once it has ticked three times (so
    # the wait can only end if the loop ran meanwhile), each next one once
    # the previous future was seen: the order is the test's, not timing's.
    gates = [threading.Event() for _ in range(4)]
    order = [2, 0, 3, 1]
    ticks = []

    def tick():
        while True:
            ticks.append(time.monotonic())
            if len(ticks) == 3:
                gates[order[0]].set()
            gevent.sleep(0.01)

    ticker = gevent.spawn(tick)
    try:
        with cf.ThreadPoolExecutor(4) as threads:
            futures = [threads.submit(gate.wait, WAIT) for gate in gates]
            seen = []
            for future in gipc.as_completed(futures, timeout=WAIT):
                seen.append(future)
                if len(seen) < len(order):
                    gates[order[len(seen)]].set()
            assert seen == [futures[i] for i in order]
            assert all(f.result() is True for f in futures)
            more = [threads.submit(time.sleep, 0.05) for _ in range(2)]
            done, not_done = gipc.futures_wait(more, timeout=WAIT)
            assert done == set(more) and not not_done
    finally:
        for gate in gates:
            gate.set()
        ticker.kill()
    assert len(ticks) >= 3


def test_mixed_gipc_and_thread_futures(executor):
    executor.submit(square, 1).result(WAIT)  # fork before threads exist
    with cf.ThreadPoolExecutor(1) as threads:
        fs = [threads.submit(time.sleep, 0.05), executor.submit(square, 3)]
        done, _ = gipc.futures_wait(fs, timeout=WAIT)
        assert done == set(fs)


def test_dask_distributed_futures():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1,
                                       processes=False,
                                       dashboard_address=None)
    client = distributed.Client(cluster)
    try:
        ex = client.get_executor()
        futures = [ex.submit(square, i) for i in range(5)]
        got = sorted(f.result() for f in gipc.as_completed(futures,
                                                           timeout=60))
        assert got == [i * i for i in range(5)]
    finally:
        client.close()
        cluster.close()


# -- what a finished future keeps alive --------------------------------
# Unlike a stdlib future (the future, its __dict__, two lists and a
# Condition), a finished future that nothing waited on from another
# thread costs the cyclic GC nothing if its value is untracked, and is in
# no reference cycle (tests/test_pool_gc.py has the rules).

def test_finished_future_costs_the_gc_nothing(executor):
    futures = [executor.submit(square, 7), executor.submit(fail, "nope")]
    assert futures[0].result(timeout=WAIT) == 49
    assert isinstance(futures[1].exception(timeout=WAIT), ValueError)
    objects = own_objects(futures[0],
                          shared=(executor, executor._engine))
    assert [o for o in objects if gc.is_tracked(o)] == []
    # The failed one holds its exception (and the remote traceback), but
    # nothing that leads back to the future.
    objects = own_objects(futures[1],
                          shared=(executor, executor._engine))
    assert not any(futures[1] in gc.get_referents(o) for o in objects)


def test_raising_result_leaves_no_reference_cycle(executor):
    future = executor.submit(fail, "nope")
    with pytest.raises(ValueError) as info:
        future.result(timeout=WAIT)
    frames = frames_of(Future.result.__code__, info.value.__traceback__)
    assert frames
    assert all(frame.f_locals["self"] is None for frame in frames)


def test_lazy_parts_are_made_for_their_users(executor):
    future = executor.submit(sleep_then, 0.2, 5)
    called = []
    future.add_done_callback(called.append)  # makes the condition, a list
    waited = cf.wait([future], timeout=0)  # the stdlib's waiter machinery
    assert waited.not_done == {future}
    assert future.result(timeout=WAIT) == 5
    assert called == [future]
    assert future.done() and cf.wait([future], timeout=0).done == {future}
