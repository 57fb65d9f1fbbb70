"""multiprocessing programs that use queues and locks, run unchanged with
the import swapped: each runs against ``multiprocessing`` (fork context) and
against ``gipc`` and must give the same, exact result.

A program is a function of ``ns`` (the module it would import).  That the
parent's loop runs while it waits (with multiprocessing, those waits block
it) is checked separately, for gipc."""
import multiprocessing

import gevent
import pytest

import gipc

BOUND = 30
_fork = multiprocessing.get_context("fork")
# multiprocessing keeps the arena of its shared heap open for good: open it
# before the leak checks of the first test.
_fork.RawArray("i", 1 << 15)  # freed at once: its arena stays, with room


@pytest.fixture(params=["multiprocessing", "gipc"])
def ns(request):
    if request.param == "multiprocessing":
        yield _fork
    else:
        yield gipc


def _gated(gate, q):
    # Runs only once the parent's ticker has ticked: if the parent's get()
    # below blocked the loop, the ticker could not tick and this would time
    # out.
    assert gate.wait(BOUND)
    q.put("after the ticks")


def test_the_parent_loop_runs_while_it_waits():
    gate, q = gipc.Event(), gipc.Queue()
    ticks = []

    def tick():
        while len(ticks) < 5:
            gevent.sleep(0.001)
            ticks.append(1)
        gate.set()

    p = gipc.Process(target=_gated, args=(gate, q))
    p.start()
    ticker = gevent.spawn(tick)
    assert q.get(timeout=BOUND) == "after the ticks"
    ticker.join(BOUND)
    _join(p)
    assert len(ticks) == 5
    _close(gate, q)


def _join(*processes):
    for p in processes:
        p.join(BOUND)
        assert p.exitcode == 0, p.exitcode


def _close(*objects):
    for obj in objects:
        if hasattr(obj, "join_thread"):
            obj.close()
            obj.join_thread()
        elif hasattr(obj, "close"):
            obj.close()


# The programs ---------------------------------------------------------------

def _producer(q, n):
    for i in range(n):
        q.put(("item", i))
    q.put(None)


def producer_consumer(ns):
    q = ns.Queue()
    p = ns.Process(target=_producer, args=(q, 200))
    p.start()
    got = []
    while True:
        item = q.get(timeout=BOUND)
        if item is None:
            break
        got.append(item[1])
    _join(p)
    _close(q)
    return got


def _task_worker(tasks, results):
    while True:
        n = tasks.get()
        if n is None:
            tasks.task_done()
            break
        results.put(n * n)
        tasks.task_done()


def joinable_queue(ns):
    tasks, results = ns.JoinableQueue(), ns.Queue()
    workers = [ns.Process(target=_task_worker, args=(tasks, results))
               for _ in range(3)]
    for w in workers:
        w.start()
    for n in range(30):
        tasks.put(n)
    for _ in workers:
        tasks.put(None)
    tasks.join()
    out = sorted(results.get(timeout=BOUND) for _ in range(30))
    _join(*workers)
    _close(tasks, results)
    return out


def _serialised(lock, log, slot, worker):
    for _ in range(20):
        with lock:
            # Two writes that must never interleave with another worker's.
            i = slot.value
            log[i] = worker
            log[i + 1] = worker
            slot.value = i + 2


def lock_serialises(ns):
    lock = ns.Lock()
    log = ns.Array("i", 4 * 20 * 2, lock=False)
    slot = ns.Value("i", 0, lock=False)
    workers = [ns.Process(target=_serialised, args=(lock, log, slot, w))
               for w in range(4)]
    for w in workers:
        w.start()
    _join(*workers)
    entries = list(log)
    pairs_whole = all(entries[i] == entries[i + 1]
                      for i in range(0, len(entries), 2))
    counts = sorted(entries.count(w) for w in range(4))
    _close(lock)
    return slot.value, pairs_whole, counts


def _wait_start(start, out):
    assert start.wait(BOUND)
    out.put("started")


def event_start_signal(ns):
    start, out = ns.Event(), ns.Queue()
    workers = [ns.Process(target=_wait_start, args=(start, out))
               for _ in range(3)]
    for w in workers:
        w.start()
    early = out.empty()
    start.set()
    got = [out.get(timeout=BOUND) for _ in workers]
    _join(*workers)
    _close(start, out)
    return early, got


def _party(barrier, out):
    out.put(barrier.wait(BOUND))


def barrier_of_four(ns):
    barrier, out = ns.Barrier(4), ns.Queue()
    parties = [ns.Process(target=_party, args=(barrier, out))
               for _ in range(3)]
    for p in parties:
        p.start()
    mine = barrier.wait(BOUND)
    indexes = sorted([mine] + [out.get(timeout=BOUND) for _ in parties])
    _join(*parties)
    _close(barrier, out)
    return indexes


def _increment(counter, times):
    for _ in range(times):
        with counter.get_lock():
            counter.value += 1


def value_counter(ns):
    counter = ns.Value("i", 0)
    workers = [ns.Process(target=_increment, args=(counter, 500))
               for _ in range(4)]
    for w in workers:
        w.start()
    _join(*workers)
    total = counter.value
    _close(counter)
    return total


def _answer(cond, state):
    with cond:
        cond.wait_for(lambda: state.value == 1, BOUND)
        state.value = 2
        cond.notify()


def condition_handshake(ns):
    cond, state = ns.Condition(), ns.Value("i", 0)
    p = ns.Process(target=_answer, args=(cond, state))
    p.start()
    with cond:
        state.value = 1
        cond.notify()
        answered = cond.wait_for(lambda: state.value == 2, BOUND)
    _join(p)
    final = state.value
    _close(cond, state)
    return answered, final


PROGRAMS = {
    producer_consumer: list(range(200)),
    joinable_queue: sorted(n * n for n in range(30)),
    lock_serialises: (160, True, [40, 40, 40, 40]),
    event_start_signal: (True, ["started"] * 3),
    barrier_of_four: [0, 1, 2, 3],
    value_counter: 2000,
    condition_handshake: (True, 2),
}


@pytest.mark.parametrize("program", list(PROGRAMS),
                         ids=[p.__name__ for p in PROGRAMS])
def test_program(program, ns):
    assert program(ns) == PROGRAMS[program]
