"""What finished (and queued) pool results cost the cyclic GC.

A program may hold a great many results (issue 11's stall case holds
100,000), and every full collection of the cyclic GC visits each of them,
and each object they refer to.  So a result refers to nothing of its own
but its outcome (no pickles, no callbacks, no waiter, no per-task number),
and it is in no reference cycle: dropping it frees it at once, without the
GC.  A pool's result (``ApplyResult``) and a future are also left out of
the collector while they can be in no cycle the collector would have to
break (see ``gipc._workers.Task``): pending or done, unless they have
callbacks, a waiting greenlet or an outcome the collector tracks; a
future also once it has attributes of the program's, or another
thread's Condition.

The counts are deterministic: objects are counted with ``gc.get_objects()``
over 1000 results, not timed.
"""
import gc
import time
import weakref
from collections import Counter
from concurrent.futures import FIRST_EXCEPTION
from concurrent.futures import TimeoutError as FuturesTimeoutError

import gevent
import pytest

import gipc
from gipc import _core
from gipc.futures import Future
from gipc.pool import _CANCELLED, ApplyResult, MapResult
from pool_support import WAIT, echo, fail, sleep_then, square

COUNT = 1000

#: New tracked objects a measurement may find besides the results: the
#: pool's own state changes as it works (its greenlets, each with the
#: spawning stack gevent records, timers), by a few dozen objects, more
#: under a tracer such as coverage's.  A cost per result shows as COUNT
#: objects or more, ten times this bound.
SLACK = COUNT // 10


class Payload:
    """An argument or a callback that can be weakly referenced (module
    level: it pickles by reference)."""

    def __init__(self, value=0):
        self.value = value

    def __call__(self, _):
        pass

    def __reduce__(self):
        return Payload, (self.value,)


@pytest.fixture
def pool():
    p = gipc.Pool(2)
    p.map(square, range(8), chunksize=1)  # both workers started
    yield p
    p.terminate()


@pytest.fixture
def executor():
    ex = gipc.ProcessPoolExecutor(2)
    list(ex.map(square, range(8)))
    yield ex
    ex.kill_workers()


def new_tracked(make):
    """``(items, objects)``: what ``make()`` returns, and the GC-tracked
    objects created by it and still alive after it, apart from the
    returned container."""
    gc.collect()
    before = gc.get_objects()  # kept: no id can be reused meanwhile
    known = {id(o) for o in before}
    known.add(id(before))
    items = make()
    gc.collect()
    objects = [o for o in gc.get_objects()
               if id(o) not in known and o is not items]
    del before
    return items, objects


def own_referents(obj, shared):
    """What the GC visits in ``obj`` that is its own: its referents other
    than ``shared``, its class, None, booleans and the cached small ints
    (objects every result shares: visiting them costs no memory access to
    an object of this result's)."""
    skip = {id(o) for o in shared}
    return [o for o in gc.get_referents(obj)
            if id(o) not in skip and not isinstance(o, type)
            and o is not None and not isinstance(o, bool)
            and not (type(o) is int and -5 <= o <= 256)]


def describe(objects):
    return dict(Counter(type(o).__name__ for o in objects).most_common(5))


# -- one object per result ---------------------------------------------

def test_finished_async_results_are_left_out_of_the_gc(pool):
    def make():
        results = [pool.apply_async(square, (i,)) for i in range(COUNT)]
        assert [r.get(timeout=WAIT) for r in results] == [
            i * i for i in range(COUNT)]
        return results

    results, objects = new_tracked(make)
    assert len(objects) <= SLACK, describe(objects)
    assert not any(gc.is_tracked(r) for r in results)


def test_finished_futures_are_left_out_of_the_gc(executor):
    def make():
        futures = [executor.submit(square, i) for i in range(COUNT)]
        assert [f.result(timeout=WAIT) for f in futures] == [
            i * i for i in range(COUNT)]
        return futures

    futures, objects = new_tracked(make)
    assert len(objects) <= SLACK, describe(objects)
    assert not any(gc.is_tracked(f) for f in futures)


def test_finished_map_result_keeps_no_chunk(pool):
    # 100 chunks: none of them outlives the map.
    def make():
        result = pool.map_async(square, range(COUNT), chunksize=10)
        assert result.get(timeout=WAIT) == [i * i for i in range(COUNT)]
        return [result]

    (result,), objects = new_tracked(make)
    # The result and its value (a list).
    assert len(objects) <= 2 + SLACK, describe(objects)
    assert type(result) is MapResult
    assert not any(type(o).__name__ == "_Chunk" for o in objects)


def test_queued_results_are_one_gc_object_each(pool):
    # Both workers busy (one task each while task times are unknown): the
    # other tasks wait in the parent's queue, each with its pickles.  The
    # GC's own count of new objects (what triggers its collections) grows
    # by one per queued task: the result, not a container for its job.
    busy = [pool.apply_async(sleep_then, (WAIT, 1)) for _ in range(2)]
    gc.disable()
    try:
        before = gc.get_count()[0]
        queued = [pool.apply_async(square, (i,)) for i in range(COUNT)]
        grown = gc.get_count()[0] - before
    finally:
        gc.enable()
    assert not any(r.ready() for r in queued)
    # (Submitting yields to the loop now and then, which makes a few
    # objects of gevent's; a container per job would make it 2 * COUNT.)
    assert grown <= COUNT * 5 // 4, grown
    for result in busy + queued:
        assert result.cancel()


# -- what the GC visits in a finished result -----------------------------

def test_finished_result_refers_to_nothing_of_its_own_but_its_value(pool):
    results = [pool.apply_async(square, (i,), callback=Payload())
               for i in range(COUNT)]
    values = [r.get(timeout=WAIT) for r in results]
    for result, value in zip(results, values):
        # Not the job's pickles, the callback, a waiter list or the task's
        # number in its worker (a distinct int past the first 256 tasks).
        own = own_referents(result, shared=(pool,))
        assert own == ([value] if value > 256 else []), own


def test_finished_future_refers_to_nothing_of_its_own_but_its_value(
        executor):
    futures = [executor.submit(square, i) for i in range(COUNT)]
    values = [f.result(timeout=WAIT) for f in futures]
    for future, value in zip(futures, values):
        own = own_referents(future, shared=(executor._engine, "FINISHED"))
        assert own == ([value] if value > 256 else []), own


def test_cancelled_results_drop_their_pickles():
    pool = gipc.Pool(1)
    try:
        running = pool.apply_async(sleep_then, (WAIT, 1))
        queued = [pool.apply_async(square, (Payload(i),))
                  for i in range(10)]
    finally:
        pool.terminate()
    for result in [running] + queued:
        assert result.cancelled()
        assert own_referents(result, shared=(pool, _CANCELLED)) == []


# -- left out of the collector while in no cycle ------------------------

@pytest.fixture
def busy_pool():
    """A pool of one worker running a long task: what is submitted next
    stays queued until the test cancels it."""
    p = gipc.Pool(1)
    running = p.apply_async(sleep_then, (WAIT, 1))
    yield p
    running.cancel()
    p.terminate()


def test_queued_results_are_left_out_of_the_gc(busy_pool):
    queued = [busy_pool.apply_async(square, (i,)) for i in range(COUNT)]
    assert not any(r.ready() or gc.is_tracked(r) for r in queued)
    assert not any(type(o) is ApplyResult for o in gc.get_objects())
    for result in queued:
        assert result.cancel()
    assert not any(gc.is_tracked(r) for r in queued)


def test_results_with_callbacks_are_tracked_until_done(busy_pool, pool):
    # A callback may lead back to its result (a closure, a bound method).
    queued = busy_pool.apply_async(square, (2,), callback=Payload())
    errors = busy_pool.apply_async(square, (2,), error_callback=Payload())
    assert gc.is_tracked(queued) and gc.is_tracked(errors)
    assert queued.cancel() and errors.cancel()
    assert not gc.is_tracked(queued) and not gc.is_tracked(errors)
    done = pool.apply_async(square, (3,), callback=Payload())
    assert done.get(timeout=WAIT) == 9
    assert not gc.is_tracked(done)


def test_a_result_waited_on_is_tracked(busy_pool):
    # The waiting greenlet may refer to the result.
    result = busy_pool.apply_async(square, (2,))
    assert not gc.is_tracked(result)
    assert not result.wait(0.001) and not result.ready()
    assert gc.is_tracked(result)
    assert result.cancel()
    assert not gc.is_tracked(result)


def test_results_with_a_tracked_outcome_stay_tracked(pool):
    values = pool.apply_async(echo, (1,))
    error = pool.apply_async(fail, ("x",))
    number = pool.apply_async(square, (3,))
    assert values.get(timeout=WAIT) == ((1,), {})
    error.wait(WAIT)
    assert number.get(timeout=WAIT) == 9
    assert gc.is_tracked(values) and gc.is_tracked(error)
    assert not gc.is_tracked(number)


def test_a_failed_result_in_a_cycle_through_its_traceback_is_collected(
        pool):
    # result -> exception -> traceback -> this frame -> result: only the
    # cyclic GC frees it, so the result must be tracked.
    def catch():
        result = pool.apply_async(fail, ("x",))
        try:
            result.get(timeout=WAIT)
        except ValueError:
            pass
        return weakref.ref(result)

    gc.disable()
    try:
        ref = catch()
        assert ref() is not None  # the cycle holds it
    finally:
        gc.enable()
    gc.collect()
    assert ref() is None


@pytest.fixture
def busy_executor():
    """An executor of one worker running a long task (see busy_pool)."""
    ex = gipc.ProcessPoolExecutor(1)
    running = ex.submit(sleep_then, WAIT, 1)
    yield ex
    running.cancel()
    ex.kill_workers()


def test_queued_futures_are_left_out_of_the_gc(busy_executor):
    queued = [busy_executor.submit(square, i) for i in range(COUNT)]
    assert not any(f.done() or gc.is_tracked(f) for f in queued)
    assert not any(type(o) is Future for o in gc.get_objects())


def test_futures_with_callbacks_or_waiters_are_tracked(busy_executor,
                                                      executor):
    with_callback = busy_executor.submit(square, 2)
    with_callback.add_done_callback(Payload())
    assert gc.is_tracked(with_callback)
    waited = busy_executor.submit(square, 2)
    with pytest.raises(FuturesTimeoutError):  # (3.10: not TimeoutError)
        waited.result(timeout=0.001)
    assert gc.is_tracked(waited)
    # Done: the callback was called and dropped, the waiter woken.
    done = executor.submit(square, 3)
    done.add_done_callback(Payload())
    assert done.result(timeout=WAIT) == 9
    assert not gc.is_tracked(done)


def test_futures_with_a_tracked_outcome_stay_tracked(executor):
    values = executor.submit(echo, 1)
    error = executor.submit(fail, "x")
    assert values.result(timeout=WAIT) == ((1,), {})
    assert isinstance(error.exception(timeout=WAIT), ValueError)
    assert gc.is_tracked(values) and gc.is_tracked(error)


@pytest.mark.parametrize("how", ["setattr", "setattr()", "__dict__",
                                 "vars()", "__dict__ ="])
@pytest.mark.parametrize("when", ["queued", "done"])
def test_a_future_given_attributes_is_tracked_for_good(
        how, when, busy_executor, executor):
    # The program's attributes may lead back to the future: a cycle only
    # the collector can break.
    future = (busy_executor if when == "queued" else executor).submit(
        square, 3)
    if when == "done":
        assert future.result(timeout=WAIT) == 9
    assert not gc.is_tracked(future)
    cycle = Payload()
    cycle.value = future
    if how == "setattr":
        future.cycle = cycle
    elif how == "setattr()":
        setattr(future, "cycle", cycle)  # noqa: B010 (the builtin path)
    elif how == "__dict__":
        future.__dict__["cycle"] = cycle
    elif how == "vars()":
        vars(future)["cycle"] = cycle
    else:
        future.__dict__ = {"cycle": cycle}
    assert gc.is_tracked(future) and future.cycle is cycle
    if when == "queued":
        assert future.cancel()
        assert gc.is_tracked(future)  # still, once done
    ref = weakref.ref(future)
    del future, cycle
    gc.collect()
    assert ref() is None


def test_a_future_waited_on_by_another_thread_is_tracked_for_good(
        busy_executor):
    import threading
    from concurrent.futures import CancelledError
    future = busy_executor.submit(square, 5)
    got = []

    def wait():
        try:
            future.result(timeout=WAIT)
        except CancelledError:
            got.append("cancelled")

    thread = threading.Thread(target=wait)
    thread.start()
    # The thread's wait makes the future's Condition: pinned at once.
    deadline = time.monotonic() + WAIT
    while not future._gc_pinned and time.monotonic() < deadline:
        gevent.sleep(0.001)
    assert future._gc_pinned and gc.is_tracked(future)
    assert future.cancel()
    thread.join(WAIT)
    assert not thread.is_alive() and got == ["cancelled"]
    assert gc.is_tracked(future)


def test_track_on_setattr_takes_only_python_classes_with_the_slot():
    class NoSlot:
        __slots__ = ("x",)

    class OwnSetattr:
        __slots__ = ("_gc_pinned",)

        def __setattr__(self, name, value):
            object.__setattr__(self, name, value)

    for cls, match in ((NoSlot, "no _gc_pinned slot"),
                       (OwnSetattr, "its own __setattr__"),
                       (list, "class defined in Python")):
        with pytest.raises(TypeError, match=match):
            _core.track_on_setattr(cls)
    with pytest.raises(TypeError, match="needs a class"):
        _core.track_on_setattr(NoSlot())
    _core.track_on_setattr(Future)  # again: nothing changes


def test_set_gc_tracked_takes_only_instances_of_python_classes():
    instance = Payload()
    _core.set_gc_tracked(instance, False)
    assert not gc.is_tracked(instance)
    _core.set_gc_tracked(instance, False)  # twice is fine
    _core.set_gc_tracked(instance, True)
    _core.set_gc_tracked(instance, True)
    assert gc.is_tracked(instance)
    # Built-in and C types may rely on being tracked.
    for obj in ([], {}, (1, [2]), gevent.get_hub().loop, _core.Turn):
        with pytest.raises(TypeError, match="class defined in Python"):
            _core.set_gc_tracked(obj, False)
    with pytest.raises(TypeError, match="takes 2 arguments"):
        _core.set_gc_tracked(instance)


# -- nothing kept alive, no cycle ----------------------------------------

def test_results_free_their_callbacks_and_arguments_when_done(pool):
    callback, error_callback, argument = Payload(), Payload(), Payload(3)
    refs = [weakref.ref(o) for o in (callback, error_callback, argument)]
    ok = pool.apply_async(square, (argument,), callback=callback,
                          error_callback=error_callback)
    bad = pool.apply_async(fail, ("x",), callback=callback,
                           error_callback=error_callback)
    del callback, error_callback, argument
    ok.wait(WAIT)
    bad.wait(WAIT)
    assert ok.ready() and bad.ready()
    # The results are alive; what they were given is not.
    assert [ref() for ref in refs] == [None, None, None]


def _freed_without_gc(make):
    """Whether the object ``make()`` returns is freed by its reference
    count alone when dropped (it is in no reference cycle)."""
    gc.disable()
    try:
        ref = weakref.ref(make())
        return ref() is None
    finally:
        gc.enable()


def test_finished_results_are_in_no_reference_cycle(pool, executor):
    def result():
        r = pool.apply_async(square, (2,), callback=Payload())
        r.get(timeout=WAIT)
        return r

    def failed():
        r = pool.apply_async(fail, ("x",))
        r.wait(WAIT)
        return r

    def mapped():
        r = pool.map_async(square, range(100), chunksize=10,
                           callback=Payload())
        r.get(timeout=WAIT)
        return r

    def future():
        f = executor.submit(square, 2)
        f.result(timeout=WAIT)
        return f

    for make in (result, failed, mapped, future):
        assert _freed_without_gc(make), make.__name__


# -- futures waited on ---------------------------------------------------

def test_futures_waited_on_stay_one_gc_object_each(executor):
    # as_completed() and futures_wait() ask each future whether it is done
    # and add a callback to it; the stdlib's way makes a Condition for each
    # (six objects more for the GC).
    def make():
        futures = [executor.submit(square, i) for i in range(COUNT)]
        assert len(list(gipc.as_completed(futures, timeout=WAIT))) == COUNT
        done, _ = gipc.futures_wait(futures, timeout=WAIT,
                                    return_when=FIRST_EXCEPTION)
        assert len(done) == COUNT
        assert all(f.done() and not f.cancelled() and not f.running()
                   and f.exception() is None for f in futures)
        return futures

    futures, objects = new_tracked(make)
    assert len(objects) <= SLACK, describe(objects)
    assert not any(gc.is_tracked(f) for f in futures)


def test_done_callbacks_run_once_and_are_not_kept(executor):
    calls = []
    callback = Payload()
    ref = weakref.ref(callback)
    future = executor.submit(square, 3)
    future.add_done_callback(calls.append)
    future.add_done_callback(callback)
    del callback
    assert future.result(timeout=WAIT) == 9
    assert calls == [future]
    assert ref() is None
    # Added when done: called at once.
    future.add_done_callback(calls.append)
    assert calls == [future, future]


def test_done_callback_added_by_another_thread_runs(executor):
    import threading
    future = executor.submit(sleep_then, 0.2, 5)
    calls = []
    thread = threading.Thread(target=future.add_done_callback,
                              args=(calls.append,))
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert future.result(timeout=WAIT) == 5
    assert calls == [future]
