"""gipc.Pool: the multiprocessing.pool.Pool API, cooperative, with kill on
cancel, per-task worker death, remote tracebacks and recycling."""
import gc
import multiprocessing
import os
import pickle
import time
from concurrent.futures import CancelledError
from multiprocessing.pool import MaybeEncodingError

import gevent
import pytest
from gevent import socket as gsocket

import gipc
from gipc._worker import UnpicklableError
from gipc.pool import ApplyResult, RemoteTraceback
from pool_support import (
    WAIT, add, alive, echo, exit_with, exiting_initializer, fail,
    failing_initializer, frames_of, hoard, initialized, initializer,
    kill_self, own_objects, pid, raise_unpicklable, resident_bytes,
    sleep_then, spin,
    square, touch, touch_and_wait, unpicklable_result, wait_for_file,
    wait_until)
from support import run_script


@pytest.fixture
def pool():
    p = gipc.Pool(2)
    yield p
    p.terminate()


# -- the stdlib API ----------------------------------------------------

def test_apply_and_apply_async(pool):
    assert pool.apply(square, (7,)) == 49
    assert pool.apply(echo, (1, 2), {"k": 3}) == ((1, 2), {"k": 3})
    result = pool.apply_async(add, (2, 3))
    assert result.get(timeout=WAIT) == 5
    assert result.ready() and result.successful()
    result.wait(WAIT)


def test_callbacks_run_in_parent(pool):
    seen = []
    ok = pool.apply_async(square, (3,), callback=seen.append)
    bad = pool.apply_async(fail, ("x",), error_callback=seen.append)
    ok.wait(WAIT)
    bad.wait(WAIT)
    assert seen[0] == 9 or seen[1] == 9
    assert any(isinstance(s, ValueError) for s in seen)


def test_successful_before_ready_raises(pool):
    result = pool.apply_async(sleep_then, (0.5, 1))
    with pytest.raises(ValueError):
        result.successful()
    with pytest.raises(multiprocessing.TimeoutError):
        result.get(timeout=0.01)
    assert result.get(timeout=WAIT) == 1


def test_map_family_matches_builtins(pool):
    data = list(range(50))
    expected = [x * x for x in data]
    assert pool.map(square, data) == expected
    assert pool.map(square, iter(data), chunksize=1) == expected
    assert pool.map(square, data, chunksize=7) == expected
    assert pool.map_async(square, data).get(WAIT) == expected
    pairs = list(zip(data, data))
    assert pool.starmap(add, pairs) == [2 * x for x in data]
    assert pool.starmap_async(add, pairs, 3).get(WAIT) == [2 * x for x in data]
    assert list(pool.imap(square, data)) == expected
    assert list(pool.imap(square, iter(data), chunksize=4)) == expected
    assert sorted(pool.imap_unordered(square, data)) == expected
    assert sorted(pool.imap_unordered(square, data, 5)) == expected
    assert pool.map(square, []) == []
    assert list(pool.imap(square, [])) == []


def test_map_callback_and_first_error(pool):
    got = []
    result = pool.map_async(square, [1, 2], callback=got.append)
    assert result.get(WAIT) == [1, 4]
    assert got == [[1, 4]]
    with pytest.raises(ValueError, match="m"):
        pool.map(fail, ["m", "m"], chunksize=1)


def test_imap_next_timeout(pool):
    it = pool.imap(sleep_then, [0.5])
    with pytest.raises(multiprocessing.TimeoutError):
        it.next(timeout=0.01)
    assert it.next(timeout=WAIT) is None
    with pytest.raises(StopIteration):
        it.next(timeout=WAIT)


def test_imap_reports_errors_in_place(pool):
    it = pool.imap(fail, ["a", "b"])
    with pytest.raises(ValueError, match="a"):
        next(it)
    with pytest.raises(ValueError, match="b"):
        next(it)

    def bad_items():
        yield 1
        raise KeyError("iterable broke")

    it = pool.imap(square, bad_items())
    assert next(it) == 1
    with pytest.raises(KeyError):
        next(it)


def test_default_chunksize_as_stdlib():
    # ceil(len / (4 * processes)): 100 items, 2 workers -> chunks of 13.
    with gipc.Pool(2) as p:
        result = p.map_async(pid, range(100))
        assert result._chunksize == 13
        assert len(result.get(WAIT)) == 100


def test_processes_default_is_cpu_count():
    p = gipc.Pool()
    assert p._processes == os.cpu_count()
    p.close()
    p.join()


# -- bad input ---------------------------------------------------------

def test_bad_arguments():
    with pytest.raises(ValueError):
        gipc.Pool(0)
    with pytest.raises(TypeError):
        gipc.Pool(1, initializer=3)
    with pytest.raises(ValueError):
        gipc.Pool(1, maxtasksperchild=0)
    with pytest.raises(ValueError):
        gipc.Pool(1, max_memory_per_child=-1)
    with pytest.raises(ValueError):
        gipc.Pool(1, idle_timeout=0)
    with gipc.Pool(1) as p:
        with pytest.raises(TypeError):
            p.apply_async(3)
        with pytest.raises(ValueError):
            p.map(square, [1], chunksize=0)
        with pytest.raises(ValueError):
            list(p.imap(square, [1], chunksize=0))
        p.close()
        with pytest.raises(ValueError, match="Pool not running"):
            p.apply_async(square, (1,))
        with pytest.raises(ValueError):
            p.map(square, [1])
        p.join()


def test_join_of_running_pool_raises(pool):
    with pytest.raises(ValueError, match="still running"):
        pool.join()


def test_unpicklable_argument_raises_in_caller(pool):
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        pool.apply_async(square, (lambda: 1,))
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        pool.map(square, [1, lambda: 1])
    assert pool.apply(square, (2,)) == 4


def test_unpicklable_result_fails_that_task(pool):
    with pytest.raises(MaybeEncodingError, match="function"):
        pool.apply(unpicklable_result)
    results = pool.map(square, range(10), chunksize=1)
    assert results == [x * x for x in range(10)]


def test_unpicklable_exception_names_it(pool):
    with pytest.raises(UnpicklableError, match="Unpicklable: custom"):
        pool.apply(raise_unpicklable)
    assert pool.apply(square, (3,)) == 9


def test_remote_traceback_is_the_cause(pool):
    with pytest.raises(ValueError, match="boom") as info:
        pool.apply(fail, ("boom",))
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "in fail" in str(cause) and "ValueError: boom" in str(cause)


# -- laziness, inheritance, shutdown ------------------------------------

def test_lazy_start_and_close_join():
    before = set(p.pid for p in gipc.active_children())
    p = gipc.Pool(2)
    assert set(c.pid for c in gipc.active_children()) == before
    assert p.apply(square, (2,)) == 4
    # One task at a time needs one worker.
    assert len(p._engine.workers) == 1
    results = [p.apply_async(sleep_then, (0.05, i)) for i in range(6)]
    p.close()
    assert p.join(WAIT)
    assert [r.get(0) for r in results] == list(range(6))
    assert not p._engine.workers


def test_terminate_cancels_results():
    p = gipc.Pool(1)
    running = p.apply_async(sleep_then, (WAIT, 1))
    queued = p.apply_async(square, (2,))
    wait_until(lambda: p._engine.workers and p._engine.workers[0].window)
    worker = p._engine.workers[0].process.pid
    t0 = time.monotonic()
    p.terminate()
    assert time.monotonic() - t0 < WAIT / 2
    for r in (running, queued):
        with pytest.raises(CancelledError):
            r.get(0)
    assert not alive(worker)


def test_terminate_while_a_map_is_being_queued_cancels_all_of_it():
    # A long submission yields to the event loop (fairness); a terminate()
    # that runs then must cancel what was not queued yet too, and start no
    # worker for it (it used to run the whole map on new workers).
    p = gipc.Pool(2)
    p.apply(square, (1,))
    engine = p._engine
    queue_all = engine.submit_all

    def submit_all_after_a_terminate(tasks):
        engine._next_yield = 0  # the first slice yields
        gevent.spawn(p.terminate)
        queue_all(tasks)

    engine.submit_all = submit_all_after_a_terminate
    spawned = engine.spawned
    result = p.map_async(square, range(1000), chunksize=1)
    with pytest.raises(CancelledError):
        result.get(WAIT)
    assert p.join(WAIT)
    assert engine.spawned == spawned and not engine.workers
    assert not engine.queue and not engine._outstanding


def test_context_manager_terminates():
    with gipc.Pool(1) as p:
        result = p.apply_async(sleep_then, (WAIT, 1))
        wait_until(lambda: p._engine.workers
                   and p._engine.workers[0].window)
    assert result.ready()
    with pytest.raises(ValueError):
        p.apply(square, (1,))


def test_pool_unusable_in_inherited_child(pool):
    assert pool.apply(square, (2,)) == 4

    def child(p, w):
        try:
            p.apply(square, (2,))
        except gipc.GIPCError as exc:
            w.put(str(exc))
        else:
            w.put("no error")

    with gipc.pipe() as (r, w):
        proc = gipc.start_process(child, (pool, w))
        assert "belongs to process" in r.get(timeout=WAIT)
        proc.join(WAIT)
        assert proc.exitcode == 0


def test_workers_exit_when_parent_dies():
    done = run_script("""
        import os, sys
        sys.path.insert(0, os.getcwd())  # the tests' directory
        import gipc
        import pool_support
        p = gipc.Pool(2)
        print(p.apply(pool_support.pid), flush=True)
        os._exit(0)
    """, timeout=WAIT * 2)
    assert done.returncode == 0, done.stderr
    worker = int(done.stdout.split()[0])
    wait_until(lambda: not alive(worker))


# -- kill on cancel ----------------------------------------------------

def _only_worker_pid(p):
    return p.apply(pid)


def test_timeout_around_apply_kills_the_task(tmp_path):
    with gipc.Pool(1) as p:
        first = _only_worker_pid(p)
        marker = str(tmp_path / "started")
        with pytest.raises(gevent.Timeout):
            with gevent.Timeout(0.3):
                p.apply(touch_and_wait, (marker,))
        assert os.path.exists(marker)
        wait_until(lambda: not alive(first))
        assert _only_worker_pid(p) != first


def test_kill_around_apply_kills_the_task(tmp_path):
    with gipc.Pool(1) as p:
        first = _only_worker_pid(p)
        marker = str(tmp_path / "started")
        g = gevent.spawn(p.apply, touch_and_wait, (marker,))
        wait_until(lambda: os.path.exists(marker))
        g.kill(block=True, timeout=WAIT)
        assert isinstance(g.value, gevent.GreenletExit) or g.dead
        wait_until(lambda: not alive(first))
        assert p.apply(square, (5,)) == 25


def test_cancel_running_and_pending(tmp_path):
    with gipc.Pool(1) as p:
        marker = str(tmp_path / "started")
        never = str(tmp_path / "never")
        running = p.apply_async(touch_and_wait, (marker,))
        pending = p.apply_async(touch, (never,))
        wait_until(lambda: os.path.exists(marker))
        assert pending.cancel()
        assert running.cancel()
        for r in (running, pending):
            with pytest.raises(CancelledError):
                r.get(WAIT)
            assert r.cancelled()
        assert p.apply(square, (4,)) == 16
        assert not os.path.exists(never)
        assert not running.cancel()  # already cancelled


def test_cancel_sent_but_not_started(tmp_path):
    # Quick tasks open the window: queue a task behind a blocking one in
    # the same worker, cancel it, release the blocker: it never runs.
    with gipc.Pool(1) as p:
        p.map(square, range(200), chunksize=1)  # the window opens
        gate = str(tmp_path / "gate")
        never = str(tmp_path / "never")
        blocker = p.apply_async(wait_for_file, (gate,))
        follower = p.apply_async(touch, (never,))
        after = p.apply_async(square, (3,))
        assert follower.cancel()
        with open(gate, "w"):
            pass
        assert after.get(WAIT) == 9
        blocker.get(WAIT)
        assert not os.path.exists(never)


def test_without_kill_on_cancel_the_task_runs_on(tmp_path):
    with gipc.Pool(1, kill_on_cancel=False) as p:
        first = _only_worker_pid(p)
        gate = str(tmp_path / "gate")
        with pytest.raises(gevent.Timeout):
            with gevent.Timeout(0.2):
                p.apply(wait_for_file, (gate,))
        result = p.apply_async(pid)
        with open(gate, "w"):
            pass
        assert result.get(WAIT) == first


def test_map_under_timeout_stops_its_chunks():
    with gipc.Pool(2) as p:
        with pytest.raises(gevent.Timeout):
            with gevent.Timeout(0.3):
                p.map(sleep_then, [WAIT] * 6, chunksize=1)
        assert p.map(square, range(4)) == [0, 1, 4, 9]


# -- worker death ------------------------------------------------------

def test_os_exit_fails_only_that_task(pool):
    others = [pool.apply_async(sleep_then, (0.01, i)) for i in range(10)]
    with pytest.raises(gipc.WorkerLostError) as info:
        pool.apply(exit_with, (3,))
    assert info.value.exitcode == 3
    assert "exit code 3" in str(info.value)
    assert [r.get(WAIT) for r in others] == list(range(10))
    assert pool.apply(square, (6,)) == 36


def test_sigkill_mid_task(pool):
    with pytest.raises(gipc.WorkerLostError, match="SIGKILL") as info:
        pool.apply(kill_self)
    assert info.value.exitcode == -9
    assert pool.map(square, range(20), chunksize=1) == [
        x * x for x in range(20)]


def test_death_requeues_the_tasks_behind_it():
    with gipc.Pool(1) as p:
        p.map(square, range(200), chunksize=1)  # the window opens
        results = [p.apply_async(square, (i,)) for i in range(5)]
        doomed = p.apply_async(exit_with, (4,))
        behind = [p.apply_async(square, (i,)) for i in range(5, 40)]
        with pytest.raises(gipc.WorkerLostError):
            doomed.get(WAIT)
        assert [r.get(WAIT) for r in results + behind] == [
            i * i for i in range(40)]


def test_external_sigkill_of_a_busy_worker():
    with gipc.Pool(1) as p:
        worker = _only_worker_pid(p)
        result = p.apply_async(sleep_then, (WAIT, 1))
        # Running, not only sent: a task its worker never started is not
        # lost with it, but goes to the next worker.
        wait_until(lambda: p._engine.workers[0].running() is not None)
        os.kill(worker, 9)
        with pytest.raises(gipc.WorkerLostError):
            result.get(WAIT)
        assert p.apply(square, (2,)) == 4


def test_a_task_for_a_worker_that_died_idle_goes_to_the_next_one():
    # The submitter writes a small task for an idle worker itself: here
    # to a worker that is gone, before its reader could see it (the hub
    # has not run since).  The write fails (EPIPE); the task must not.
    with gipc.Pool(1) as p:
        worker = _only_worker_pid(p)
        os.kill(worker, 9)
        deadline = time.monotonic() + WAIT
        while alive(worker):  # no yield: the reader must not run yet
            assert time.monotonic() < deadline
        result = p.apply_async(square, (6,))
        assert result.get(WAIT) == 36
        assert _only_worker_pid(p) != worker


# -- recycling ---------------------------------------------------------

def test_maxtasksperchild():
    with gipc.Pool(1, maxtasksperchild=2) as p:
        pids = [p.apply(pid) for _ in range(6)]
        assert len(set(pids)) == 3
        assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
        pids = p.map(pid, range(12), chunksize=1)
        assert max(pids.count(x) for x in set(pids)) <= 2


def test_max_memory_per_child():
    # The limit sits 150 MiB above what a worker holds after a small task:
    # the baseline differs a lot between builds (the sanitizers' is large).
    with gipc.Pool(1) as p:
        p.apply(hoard, (10,))
        baseline = p.apply(resident_bytes)
    with gipc.Pool(1, max_memory_per_child=baseline + (150 << 20)) as p:
        first = p.apply(hoard, (10,))
        assert p.apply(pid) == first  # under the limit: kept
        assert p.apply(hoard, (300,)) == first
        second = p.apply(pid)
        assert second != first
        wait_until(lambda: not alive(first))


def test_idle_timeout():
    with gipc.Pool(1, idle_timeout=0.2) as p:
        first = p.apply(pid)
        wait_until(lambda: not alive(first))
        assert not p._engine.workers
        assert p.apply(pid) != first


def test_initializer_runs_in_each_worker():
    with gipc.Pool(2, initializer=initializer, initargs=(5,)) as p:
        assert p.apply(initialized) == [5]


def test_initializer_failure_fails_tasks_without_respawning():
    with gipc.Pool(2, initializer=failing_initializer) as p:
        results = [p.apply_async(square, (i,)) for i in range(5)]
        for r in results:
            with pytest.raises(RuntimeError, match="initializer broke"):
                r.get(WAIT)
        with pytest.raises(RuntimeError, match="initializer broke"):
            p.apply(square, (1,))
        assert p._engine.spawned <= 2


def test_initializer_death_fails_tasks_without_respawning():
    with gipc.Pool(1, initializer=exiting_initializer) as p:
        with pytest.raises(gipc.WorkerLostError, match="initializer"):
            p.apply(square, (1,))
        with pytest.raises(gipc.WorkerLostError):
            p.apply(square, (1,))
        assert p._engine.spawned == 1


# -- cooperation -------------------------------------------------------

def test_many_greenlets_submit_and_wait(pool):
    jobs = [gevent.spawn(pool.apply, square, (i,)) for i in range(50)]
    gevent.joinall(jobs, timeout=WAIT, raise_error=True)
    assert [g.value for g in jobs] == [i * i for i in range(50)]


def test_event_loop_serves_while_pool_crunches(pool):
    """A TCP echo server on the hub keeps answering while the workers are
    busy and the parent waits for them (a blocking pool would freeze
    it)."""
    # Start both workers first: forked later, they would inherit the
    # sockets and keep the connection open after the client closes it.
    pool.map(sleep_then, [0.05, 0.05], chunksize=1)
    assert len(pool._engine.workers) == 2
    server = gsocket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve():
        conn, _ = server.accept()
        with conn:
            while True:
                data = conn.recv(64)
                if not data:
                    return
                conn.sendall(data)

    echo_server = gevent.spawn(serve)
    client = gsocket.create_connection(server.getsockname())
    crunch = gevent.spawn(pool.map, spin, [0.2] * 8, chunksize=1)
    latencies = []
    try:
        while not crunch.ready():
            t0 = time.perf_counter()
            client.sendall(b"ping")
            assert client.recv(64) == b"ping"
            latencies.append(time.perf_counter() - t0)
            gevent.sleep(0.005)
        crunch.get(timeout=WAIT)
    finally:
        client.close()
        echo_server.join(WAIT)
        server.close()
    assert len(latencies) > 10
    assert max(latencies) < 0.2, max(latencies)


def test_patch_all_program():
    done = run_script("""
        from gevent import monkey
        monkey.patch_all()
        import os, sys
        sys.path.insert(0, os.getcwd())  # the tests' directory
        import gevent, gipc
        import pool_support as ps
        with gipc.Pool(2) as p:
            assert p.map(ps.square, range(100)) == [x * x for x in range(100)]
            assert p.apply(ps.add, (1, 2)) == 3
            it = p.imap_unordered(ps.square, range(10))
            assert sorted(it) == [x * x for x in range(10)]
            ticks = []
            t = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.01))
                                      for _ in range(10)])
            p.apply(ps.sleep_then, (0.2,))
            t.join()
            assert len(ticks) == 10
        with gipc.ProcessPoolExecutor(2) as ex:
            assert list(ex.map(ps.square, range(10))) == [
                x * x for x in range(10)]
            f = ex.submit(ps.add, 2, 2)
            assert f.result(timeout=10) == 4
        print("ok")
    """, timeout=WAIT * 3)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_pools_are_imported_on_first_use():
    done = run_script("""
        import sys
        import gipc
        before = [m for m in ("gipc.pool", "gipc.futures", "logging",
                              "concurrent.futures") if m in sys.modules]
        gipc.Pool, gipc.ProcessPoolExecutor, gipc.as_completed
        print(before, "gipc.futures" in sys.modules)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[] True"


# -- what a finished result keeps alive --------------------------------
# A program may hold a great many results: none is part of a reference
# cycle, and one whose value the GC does not track is not tracked either
# (tests/test_pool_gc.py has the rules).

def test_finished_result_costs_the_gc_nothing(pool):
    results = [pool.apply_async(square, (7,)),
               pool.apply_async(square, (8,), callback=lambda v: None)]
    assert [r.get(timeout=WAIT) for r in results] == [49, 64]
    for result in results:
        objects = own_objects(result, shared=(pool, pool._engine))
        assert [o for o in objects if gc.is_tracked(o)] == []


def test_cancelled_result_costs_the_gc_nothing(pool):
    # Both workers busy (one task each while task times are unknown): the
    # third task waits in the parent's queue.
    busy = [pool.apply_async(sleep_then, (WAIT, 1)) for _ in range(2)]
    queued = pool.apply_async(square, (2,), error_callback=print)
    assert queued.cancel() and queued.cancelled()
    with pytest.raises(CancelledError):
        queued.get(timeout=WAIT)
    objects = own_objects(queued, shared=(pool, pool._engine))
    assert [o for o in objects if gc.is_tracked(o)] == []
    assert all(result.cancel() for result in busy)


def test_raising_get_leaves_no_reference_cycle(pool):
    result = pool.apply_async(fail, ("nope",))
    with pytest.raises(ValueError) as info:
        result.get(timeout=WAIT)
    # The traceback holds get()'s frame; that frame must not hold the
    # result, whose value is the exception holding the traceback.
    frames = frames_of(ApplyResult.get.__code__, info.value.__traceback__)
    assert frames
    assert all(frame.f_locals["self"] is None for frame in frames)


# -- a map's default chunks ----------------------------------------------

@pytest.mark.parametrize("length, processes, expected", [
    # The stdlib's rule (four chunks per worker, rounded up) while its
    # chunks stay small...
    (0, 2, 1), (1, 2, 1), (8, 2, 1), (9, 2, 2), (1000, 2, 125),
    (32768, 2, 4096), (1000, 7, 36),
    # ... then chunks of 4096 items, up to 64 per worker.
    (32769, 2, 4096), (100000, 2, 4096), (2000000, 2, 15625),
    (2000000, 1, 31250)])
def test_default_chunksize(length, processes, expected):
    from gipc.pool import _default_chunksize
    assert _default_chunksize(length, processes) == expected


def test_map_uses_the_default_chunksize(pool):
    result = pool.map_async(square, range(100000))
    assert result._chunksize == 4096
    assert result.get(timeout=WAIT) == [i * i for i in range(100000)]
