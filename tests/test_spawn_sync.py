"""Queues, locks and shared values given to spawn and forkserver children:
the child maps the same memory (its memory file travels as a descriptor,
with the bells'), so everything behaves as with a fork child; and pools
whose workers start by those methods."""
import os
import sys
import types
from concurrent.futures import CancelledError
from concurrent.futures.process import BrokenProcessPool

import pytest

import gipc
from gipc._spawn import StartError
from gipc.sharedctypes import _memory_of
from spawn_sync_support import (
    die, echo_queues, fork_grandchild, hold_and_die, read_marker,
    set_marker, square, use_primitives)
from pool_support import WAIT, alive, sleep_then, wait_until
from support import children, end

JOIN = 30
PICKLING = ("spawn", "forkserver")


@pytest.mark.parametrize("method", PICKLING)
def test_queues_carry_items_both_ways(method, shared):
    inbox = shared(gipc.JoinableQueue)
    outbox = shared(gipc.Queue)
    simple = shared(gipc.SimpleQueue)
    p = gipc.start_process(echo_queues, args=(inbox, outbox, simple),
                           start_method=method)
    inbox.put(21)
    assert outbox.get(timeout=JOIN) == ("from child", 21, p.pid)
    assert simple.get() == 42
    assert end(p) == 0
    assert inbox._block.load(67) == 0  # unfinished tasks: task_done() seen
    assert outbox.empty() and inbox.empty()


@pytest.mark.parametrize("method", PICKLING)
def test_locks_held_by_a_dead_child_are_recovered_as_under_fork(
        method, shared):
    lock = shared(gipc.Lock)
    rlock = shared(gipc.RLock)
    held = shared(gipc.Event)
    p = gipc.start_process(hold_and_die, args=(lock, rlock, held),
                           start_method=method)
    assert held.wait(JOIN)
    assert lock.locked()
    pid = p.pid
    assert end(p) == 0
    for dead_held in (lock, rlock):
        with pytest.raises(gipc.OwnerDiedError, match="process %d died"
                                                      % pid):
            dead_held.acquire(timeout=JOIN)
        assert dead_held.acquire(timeout=JOIN)
        dead_held.release()


@pytest.mark.parametrize("method", PICKLING)
def test_values_arrays_and_primitives_are_shared(method, shared):
    lock = shared(gipc.RLock)
    value = shared(gipc.Value, "i", 2, lock=lock)
    array = shared(gipc.Array, "i", 3)
    text = shared(gipc.Array, "c", 8)
    raw = gipc.RawValue("q", 0)
    semaphore = shared(gipc.Semaphore, 0)
    cond = shared(gipc.Condition)
    barrier = shared(gipc.Barrier, 2)
    started = shared(gipc.Event)
    done = shared(gipc.Event)
    with cond:
        p = gipc.start_process(
            use_primitives, start_method=method,
            args=(value, array, text, raw, semaphore, cond, barrier, started,
                  done, lock))
        # The child's set() wakes this wait, and its notify this one.
        assert started.wait(JOIN)
        assert cond.wait(JOIN)
    assert semaphore.acquire(timeout=JOIN)
    assert barrier.wait(timeout=JOIN) in (0, 1)
    assert value.value == 42
    assert array[:] == [0, 7, 0]
    assert text.value == b"child"
    assert raw.value == 99
    done.set()
    assert end(p) == 0


def test_a_spawn_child_forks_its_own_child_with_the_queue(shared):
    queue = shared(gipc.Queue)
    p = gipc.start_process(fork_grandchild, args=(queue,),
                           start_method="spawn")
    assert queue.get(timeout=JOIN) == "from grandchild"
    assert queue.get(timeout=JOIN) == 0
    assert end(p) == 0


def test_closed_objects_are_refused_before_any_child_exists(shared):
    queue = shared(gipc.Queue)
    value = shared(gipc.Value, "i", 0)
    queue.close()
    value.close()
    before = children()
    for closed in (queue, value):
        with pytest.raises(StartError, match="closed"):
            gipc.start_process(echo_queues, args=(closed, None, None),
                               start_method="spawn")
    assert not children() - before


# --- pools on spawn and forkserver ----------------------------------------

@pytest.mark.parametrize("method", PICKLING)
def test_pool_runs_initializer_map_apply_and_replaces_a_dead_worker(method):
    ctx = gipc.get_context(method)
    with ctx.Pool(1, initializer=set_marker, initargs=("ready",)) as pool:
        assert pool.map(square, range(6)) == [0, 1, 4, 9, 16, 25]
        marker, first_pid = pool.apply(read_marker)
        assert marker == "ready"
        assert first_pid != os.getpid()
        with pytest.raises(gipc.WorkerLostError):
            pool.apply(die)  # killed mid-task: only that task fails
        marker, second_pid = pool.apply(read_marker)
        assert (marker, second_pid != first_pid) == ("ready", True)
        pool.close()
        pool.join()


@pytest.mark.parametrize("method", PICKLING)
def test_executor_on_a_context_submits_maps_and_survives_a_dead_worker(
        method):
    ctx = gipc.get_context(method)
    with gipc.ProcessPoolExecutor(1, mp_context=ctx,
                                  initializer=set_marker,
                                  initargs=(method,)) as executor:
        assert executor.submit(square, 7).result(timeout=JOIN) == 49
        assert list(executor.map(square, [1, 2, 3], timeout=JOIN)) == \
            [1, 4, 9]
        with pytest.raises(BrokenProcessPool):
            executor.submit(die).result(timeout=JOIN)
        assert executor.submit(read_marker).result(timeout=JOIN)[0] == \
            method


def test_terminate_ends_a_spawn_pool_s_busy_worker():
    pool = gipc.get_context("spawn").Pool(1)
    running = pool.apply_async(sleep_then, (WAIT, 1))
    wait_until(lambda: pool._engine.workers
               and pool._engine.workers[0].window)
    worker = pool._engine.workers[0].process.pid
    pool.terminate()
    pool.join()
    with pytest.raises(CancelledError):
        running.get(0)
    assert not alive(worker)


def test_functions_a_spawn_worker_cannot_import_are_refused_early(
        monkeypatch):
    def local_main_function():
        return 1

    # A __main__ with neither a file nor a module name, as under
    # ``python -c``: a spawn child cannot import it again.  (pytest's own
    # __main__ is its script when run as ``pytest``: importable.)
    monkeypatch.setitem(sys.modules, "__main__",
                        types.ModuleType("__main__"))
    local_main_function.__module__ = "__main__"
    ctx = gipc.get_context("spawn")
    before = children()
    with pytest.raises(StartError, match="defined in __main__"):
        ctx.Pool(1, initializer=local_main_function)
    with ctx.Pool(1) as pool:
        with pytest.raises(StartError, match="function .*defined in "
                                             "__main__"):
            pool.apply_async(local_main_function)
    with ctx.ProcessPoolExecutor(1) as executor:
        with pytest.raises(StartError, match="defined in __main__"):
            executor.submit(local_main_function)
    assert not children() - before  # no worker was needed



def test_a_fork_child_not_given_a_value_closes_its_memory_file(shared):
    given = shared(gipc.Value, "i", 1)
    not_given = shared(gipc.Value, "i", 2)
    out = shared(gipc.Queue)

    def child(value, out):
        out.put((_memory_of(value.get_obj()).fd >= 0,
                 _memory_of(not_given.get_obj()).fd))

    p = gipc.start_process(child, args=(given, out))
    assert out.get(timeout=JOIN) == (True, -1)
    assert end(p) == 0
