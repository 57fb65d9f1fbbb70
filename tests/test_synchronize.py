"""gipc's cross-process locks, semaphores, events, conditions and barriers:
the multiprocessing.synchronize API, cooperative waits, bad input, sharing
rules, cancellation and holders that die."""
import os
import pickle
import signal
import threading

import gevent
import pytest

import gipc
from gipc import synchronize
from support import end

BOUND = 20



class Ticker:
    """A greenlet of the parent that counts while a test waits."""

    def __init__(self):
        self.ticks = 0
        self._g = gevent.spawn(self._run)

    def _run(self):
        while True:
            gevent.sleep(0.002)
            self.ticks += 1

    def stop(self):
        self._g.kill()
        return self.ticks


# Lock ----------------------------------------------------------------------

def test_lock_basics(shared):
    lock = shared(gipc.Lock)
    assert not lock.locked()
    assert lock.acquire()
    assert lock.locked()
    assert not lock.acquire(False)
    assert not lock.acquire(timeout=0.01)
    lock.release()
    with pytest.raises(ValueError, match="released too many times"):
        lock.release()
    with lock:
        assert lock.locked()
    assert not lock.locked()
    assert "owner=None" in repr(lock)


def _hold_until(lock, held, go):
    with lock:
        held.set()
        assert go.wait(BOUND)


def test_lock_excludes_another_process_and_the_loop_runs(shared):
    lock, held, go = shared(gipc.Lock), shared(gipc.Event), shared(gipc.Event)
    p = gipc.start_process(_hold_until, args=(lock, held, go))
    assert held.wait(BOUND)
    ticker = Ticker()
    assert not lock.acquire(timeout=0.1)
    assert ticker.stop() > 3
    waiter = gevent.spawn(lock.acquire, timeout=BOUND)
    gevent.sleep(0.01)
    assert not waiter.ready()
    go.set()
    assert waiter.get(timeout=BOUND) is True
    lock.release()
    assert end(p) == 0


def test_lock_timeout_leaves_it_as_it_was(shared):
    lock = shared(gipc.Lock)
    lock.acquire()
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.02):
            lock.acquire()
    assert lock._block.load(16) == 0  # no waiter left counted
    assert lock.locked()
    lock.release()
    assert lock.acquire(False)
    lock.release()


def _die_holding(lock, held):
    lock.acquire()
    held.set()
    os.kill(os.getpid(), signal.SIGKILL)


def test_holder_killed_while_another_waits(shared):
    lock, held = shared(gipc.Lock), shared(gipc.Event)
    go = shared(gipc.Event)
    p = gipc.start_process(_hold_until, args=(lock, held, go))
    assert held.wait(BOUND)
    waiter = gevent.spawn(lock.acquire, timeout=BOUND)
    gevent.sleep(0.01)
    p.kill()
    with pytest.raises(gipc.OwnerDiedError, match="died holding"):
        waiter.get(timeout=BOUND)
    assert lock.acquire(timeout=BOUND)
    lock.release()
    assert end(p) == -signal.SIGKILL


def test_holder_died_before_acquire(shared):
    lock, held = shared(gipc.Lock), shared(gipc.Event)
    p = gipc.start_process(_die_holding, args=(lock, held))
    assert held.wait(BOUND)
    p.join(BOUND)
    with pytest.raises(gipc.OwnerDiedError):
        lock.acquire(False)
    assert lock.acquire(False)
    lock.release()
    assert end(p) == -signal.SIGKILL


# RLock ---------------------------------------------------------------------

def test_rlock_recursion_and_owner(shared):
    rlock = shared(gipc.RLock)
    assert rlock.acquire() and rlock.acquire()
    other = gevent.spawn(rlock.acquire, False)
    assert other.get(timeout=BOUND) is False
    releaser = gevent.spawn(rlock.release)
    releaser.join(BOUND)
    assert isinstance(releaser.exception, ValueError)
    assert isinstance(releaser.exception, AssertionError)
    rlock.release()
    rlock.release()
    with pytest.raises(ValueError):
        rlock.release()
    assert "None, 0" in repr(rlock)


def _try_release(rlock):
    try:
        rlock.release()
    except ValueError:
        return
    raise SystemExit(3)


def test_rlock_released_by_another_process_is_an_error(shared):
    rlock = shared(gipc.RLock)
    with rlock:
        p = gipc.start_process(_try_release, args=(rlock,))
        assert end(p) == 0
        assert rlock._is_owned()


# Semaphores ----------------------------------------------------------------

def test_semaphore_bad_input():
    with pytest.raises(ValueError):
        gipc.Semaphore(-1)
    with pytest.raises(ValueError):
        gipc.BoundedSemaphore(-1)
    with pytest.raises(TypeError):
        gipc.Semaphore("1")


def test_semaphore_counts(shared):
    sem = shared(gipc.Semaphore, 2)
    assert sem.acquire() and sem.acquire(timeout=0)
    assert not sem.acquire(False)
    assert sem.get_value() == 0
    sem.release()
    sem.release()
    sem.release()  # unbounded
    assert sem.get_value() == 3
    assert "value=3" in repr(sem)


def test_bounded_semaphore_over_release(shared):
    sem = shared(gipc.BoundedSemaphore, 1)
    with pytest.raises(ValueError, match="released too many times"):
        sem.release()
    with sem:
        assert sem.get_value() == 0
    assert sem.get_value() == 1


def _take_and_report(sem, taken):
    assert sem.acquire(timeout=BOUND)
    taken.release()


def test_semaphore_wakes_waiters_in_other_processes(shared):
    sem, taken = shared(gipc.Semaphore, 0), shared(gipc.Semaphore, 0)
    ps = [gipc.start_process(_take_and_report, args=(sem, taken))
          for _ in range(3)]
    for _ in range(3):
        sem.release()
    for _ in range(3):
        assert taken.acquire(timeout=BOUND)
    assert [end(p) for p in ps] == [0, 0, 0]
    assert sem.get_value() == 0


def test_semaphore_cancelled_wait_keeps_its_units(shared):
    sem = shared(gipc.Semaphore, 0)
    waiters = [gevent.spawn(sem.acquire) for _ in range(3)]
    gevent.sleep(0.01)
    waiters[0].kill()
    sem.release()
    done = gevent.wait(waiters[1:], count=1, timeout=BOUND)
    assert len(done) == 1
    sem.release()
    gevent.joinall(waiters, timeout=BOUND)
    assert all(w.dead for w in waiters)
    assert sem.get_value() == 0


# Event ---------------------------------------------------------------------

def _wait_event(event, seen):
    assert event.wait(BOUND)
    seen.release()


def test_event_wakes_every_waiter(shared):
    event, seen = shared(gipc.Event), shared(gipc.Semaphore, 0)
    ps = [gipc.start_process(_wait_event, args=(event, seen))
          for _ in range(3)]
    local = [gevent.spawn(event.wait, BOUND) for _ in range(2)]
    assert not event.wait(0.01)
    event.set()
    assert event.is_set()
    for _ in range(3):
        assert seen.acquire(timeout=BOUND)
    assert [g.get(timeout=BOUND) for g in local] == [True, True]
    assert [end(p) for p in ps] == [0, 0, 0]
    event.clear()
    assert not event.is_set()
    assert not event.wait(0.01)
    assert "unset" in repr(event)


def test_event_set_clear_race_does_not_spin(shared):
    event = shared(gipc.Event)
    event.set()
    event.clear()
    event._block.poke(0)  # a byte a racing set() left behind
    assert not event.wait(0.05)
    assert not synchronize.Event.is_set(event)


# Condition -----------------------------------------------------------------

def _handshake(cond, state):
    with cond:
        state.value = 1
        cond.notify()
        assert cond.wait_for(lambda: state.value == 2, BOUND)


def test_condition_handshake(shared):
    cond = shared(gipc.Condition)
    state = shared(gipc.Value, "i", 0)
    with cond:
        p = gipc.start_process(_handshake, args=(cond, state))
        assert cond.wait_for(lambda: state.value == 1, BOUND)
        state.value = 2
        cond.notify_all()
    assert end(p) == 0


def test_condition_misuse_and_timeout(shared):
    cond = shared(gipc.Condition, gipc.Lock())
    with pytest.raises(AssertionError):
        cond.wait(0)
    with pytest.raises(ValueError):
        cond.notify()
    with cond:
        assert cond.wait(0.01) is False
        cond.notify()  # nobody waits: nothing happens
    with pytest.raises(TypeError):
        gipc.Condition(threading.Lock())


def test_condition_notify_n_wakes_n(shared):
    cond = shared(gipc.Condition)
    woken = []

    def waiter(i):
        with cond:
            if cond.wait(BOUND):
                woken.append(i)

    gs = [gevent.spawn(waiter, i) for i in range(3)]
    gevent.sleep(0.02)
    with cond:
        cond.notify(2)
    gevent.sleep(0.05)
    assert sorted(woken) == [0, 1]
    with cond:
        cond.notify_all()
    gevent.joinall(gs, timeout=BOUND)
    assert sorted(woken) == [0, 1, 2]


def test_condition_cancelled_after_notify_passes_it_on(shared):
    cond = shared(gipc.Condition)
    results = {}

    def waiter(name):
        with cond:
            results[name] = cond.wait(BOUND)

    first = gevent.spawn(waiter, "first")
    gevent.sleep(0.01)
    second = gevent.spawn(waiter, "second")
    gevent.sleep(0.01)
    with cond:
        cond.notify(1)
        first.kill(block=False)  # cancelled while notified, lock held here
    gevent.joinall([first, second], timeout=BOUND)
    assert results == {"second": True}


# Barrier -------------------------------------------------------------------

def _barrier_party(barrier, indexes):
    indexes.put(barrier.wait(BOUND))


def test_barrier_of_four_processes(shared):
    barrier = shared(gipc.Barrier, 4)
    indexes = shared(gipc.Queue)
    ps = [gipc.start_process(_barrier_party, args=(barrier, indexes))
          for _ in range(3)]
    indexes.put(barrier.wait(BOUND))
    got = sorted(indexes.get(timeout=BOUND) for _ in range(4))
    assert got == [0, 1, 2, 3]
    assert [end(p) for p in ps] == [0, 0, 0]
    assert barrier.parties == 4 and barrier.n_waiting == 0
    assert not barrier.broken


def test_barrier_timeout_breaks_it(shared):
    barrier = shared(gipc.Barrier, 2)
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait(0.02)
    assert barrier.broken
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait(BOUND)
    barrier.reset()
    assert not barrier.broken
    barrier.abort()
    assert barrier.broken
    with pytest.raises(ValueError):
        gipc.Barrier(0)


def test_barrier_action_runs_once(shared):
    barrier = shared(gipc.Barrier, 2, action=lambda: ran.append(1))
    ran = []
    g = gevent.spawn(barrier.wait, BOUND)
    barrier.wait(BOUND)
    g.get(timeout=BOUND)
    assert ran == [1]


# Sharing rules -------------------------------------------------------------

def _use_unshared(lock):
    try:
        lock.acquire()
    except gipc.GIPCError as exc:
        assert "not given to this process" in str(exc)
        return
    raise SystemExit(3)


def test_not_given_is_an_error_in_the_child(shared):
    lock = shared(gipc.Lock)
    p = gipc.start_process(lambda: _use_unshared(lock))
    assert end(p) == 0
    assert lock.acquire(False)  # still fine in the parent
    lock.release()


def _grandchild(lock, done):
    with lock:
        done.release()


def _child_passes_on(locks, done):
    p = gipc.start_process(_grandchild, args=(locks[0], done))
    assert end(p) == 0


def test_a_child_passes_them_on(shared):
    lock, done = shared(gipc.Lock), shared(gipc.Semaphore, 0)
    p = gipc.start_process(_child_passes_on, args=([lock], done))
    assert done.acquire(timeout=BOUND)
    assert end(p) == 0


class _Holder(gipc.Process):
    def __init__(self, event):
        super().__init__()
        self.event = event

    def run(self):
        self.event.set()


def test_process_attribute_is_given(shared):
    event = shared(gipc.Event)
    p = _Holder(event)
    p.start()
    assert event.wait(BOUND)
    assert end(p) == 0


@pytest.mark.parametrize("make", [
    gipc.Lock, gipc.RLock, gipc.Semaphore, gipc.BoundedSemaphore,
    gipc.Event, gipc.Condition, lambda: gipc.Barrier(2)])
def test_pickling_is_a_clear_error(make):
    obj = make()
    try:
        with pytest.raises(RuntimeError, match="cannot be pickled"):
            pickle.dumps(obj)
    finally:
        obj.close()


def test_closed_primitive_raises(shared):
    lock = gipc.Lock()
    lock.close()
    with pytest.raises(ValueError, match="closed"):
        lock.acquire()
    lock.close()  # twice is fine


def test_uncontended_lock_makes_no_syscall(shared):
    # No speed assertion: the fast path must not touch the pipe at all.
    lock = shared(gipc.Lock)
    fd = lock._block.bell_fd(0)
    for _ in range(1000):
        lock.acquire()
        lock.release()
    from gipc._cooperate import fd_readable
    assert not fd_readable(fd)


def _wait_on(cond):
    with cond:
        cond.wait()


def _waiting(cond):
    return sum(cond._block.load(synchronize._SLOT_BASE + 1 +
                                synchronize._SLOT_WORDS * i) == 1
               for i in range(synchronize._SLOTS))


def test_notify_skips_a_waiter_that_died(shared):
    cond = shared(gipc.Condition)
    p = gipc.start_process(_wait_on, args=(cond,))
    with gevent.Timeout(BOUND):
        while _waiting(cond) != 1:
            gevent.sleep(0.001)
    p.kill()
    assert end(p) == -signal.SIGKILL
    local = gevent.spawn(_wait_on, cond)
    with gevent.Timeout(BOUND):
        while _waiting(cond) != 2:
            gevent.sleep(0.001)
    with cond:
        cond.notify(1)
    local.join(BOUND)
    assert local.successful()
    assert _waiting(cond) == 0


def test_cancelled_event_wait_and_barrier_wait(shared):
    event = shared(gipc.Event)
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.02):
            event.wait()
    assert not event.is_set()
    barrier = shared(gipc.Barrier, 2)
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.02):
            barrier.wait()
    assert not barrier.broken and barrier.n_waiting == 0
    other = gevent.spawn(barrier.wait, BOUND)
    assert barrier.wait(BOUND) in (0, 1)
    assert other.get(timeout=BOUND) in (0, 1)


def test_cancelled_condition_wait_frees_its_slot(shared):
    cond = shared(gipc.Condition)
    with cond:
        with pytest.raises(gevent.Timeout):
            with gevent.Timeout(0.02):
                cond.wait()
        assert cond._lock._is_owned()  # taken again, as threading does
    assert _waiting(cond) == 0


def _count_under(lock, counter, inside, times):
    for _ in range(times):
        with lock:
            inside.value += 1
            assert inside.value == 1
            counter.value += 1
            inside.value -= 1


@pytest.mark.parametrize("make", [gipc.Lock, gipc.RLock,
                                  lambda: gipc.BoundedSemaphore(1)])
def test_contended_lock_loses_no_wakeup(make):
    lock = make()
    counter = gipc.RawValue("i", 0)
    inside = gipc.RawValue("i", 0)
    try:
        ps = [gipc.start_process(_count_under,
                                 args=(lock, counter, inside, 300))
              for _ in range(3)]
        greenlets = [gevent.spawn(_count_under, lock, counter, inside, 100)
                     for _ in range(2)]
        assert [end(p, BOUND) for p in ps] == [0, 0, 0]
        gevent.joinall(greenlets, timeout=BOUND, raise_error=True)
        assert counter.value == 3 * 300 + 2 * 100
    finally:
        lock.close()


def _bounded(sem, inside, peak, times):
    for _ in range(times):
        with sem:
            with peak.get_lock():
                inside.value += 1
                peak.value = max(peak.value, inside.value)
            gevent.sleep(0)
            with peak.get_lock():
                inside.value -= 1


def test_semaphore_bounds_concurrency(shared):
    sem = shared(gipc.Semaphore, 2)
    inside, peak = gipc.RawValue("i", 0), shared(gipc.Value, "i", 0)
    ps = [gipc.start_process(_bounded, args=(sem, inside, peak, 200))
          for _ in range(4)]
    assert [end(p, BOUND) for p in ps] == [0, 0, 0, 0]
    assert 1 <= peak.value <= 2
    assert sem.get_value() == 2


@pytest.mark.parametrize("name", ["lock", "semaphore", "event", "queue"])
def test_close_ends_waits_in_progress(name):
    obj = {"lock": gipc.Lock, "semaphore": lambda: gipc.Semaphore(0),
           "event": gipc.Event, "queue": gipc.Queue}[name]()
    if name == "lock":
        obj.acquire()
    wait = getattr(obj, {"lock": "acquire", "semaphore": "acquire",
                         "event": "wait", "queue": "get"}[name])
    waiter = gevent.spawn(wait)
    gevent.sleep(0.01)
    obj.close()
    waiter.join(BOUND)
    assert isinstance(waiter.exception, ValueError)
    assert "closed" in str(waiter.exception)


def test_barrier_stuck_draining_times_out(shared):
    barrier = shared(gipc.Barrier, 2)
    # As left by a party that died before leaving a passed barrier.
    barrier._block.store(1, synchronize._DRAINING)
    barrier._block.store(0, 1)
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait(0.05)
    assert barrier.broken


def test_rlock_holder_died_is_recovered(shared):
    rlock, held = shared(gipc.RLock), shared(gipc.Event)
    p = gipc.start_process(_die_holding, args=(rlock, held))
    assert held.wait(BOUND)
    p.join(BOUND)
    with pytest.raises(gipc.OwnerDiedError):
        rlock.acquire(timeout=BOUND)
    assert rlock.acquire(False) and rlock.acquire(False)
    assert rlock._block.load(synchronize._DEPTH) == 2
    rlock.release()
    rlock.release()
    assert end(p) == -signal.SIGKILL


def test_waiter_that_died_notified_does_not_keep_others_awake(shared):
    cond = shared(gipc.Condition)
    p = gipc.start_process(_wait_on, args=(cond,))
    with gevent.Timeout(BOUND):
        while _waiting(cond) != 1:
            gevent.sleep(0.001)
    p.kill()
    assert end(p) == -signal.SIGKILL
    with cond:
        # As if notified just as it died: its slot notified, its byte sent.
        word = next(cond._slot(i) for i in range(synchronize._SLOTS)
                    if cond._block.load(cond._slot(i) + 1) == 1)
        cond._block.store(word + 1, 2)
        cond._block.poke(0)
        assert cond.wait(0.05) is False  # woken by that byte, which it clears
    assert cond._block.load(word + 1) == 0
    from gipc._cooperate import fd_readable
    assert not fd_readable(cond._block.bell_fd(0))
