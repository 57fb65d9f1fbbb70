"""gipc.Queue, SimpleQueue and JoinableQueue: the multiprocessing.queues
API, many producers and consumers, items of every size, cancellation,
processes that die, and a parent loop that keeps running."""
import os
import pickle
import queue
import signal
import threading

import gevent
import pytest

import gipc
from gipc import queues
from support import end

BOUND = 30



def _until(condition):
    with gevent.Timeout(BOUND):
        while not condition():
            gevent.sleep(0.001)


# API -----------------------------------------------------------------------

def test_queue_api(shared):
    q = shared(gipc.Queue, 2)
    assert q.empty() and not q.full() and q.qsize() == 0
    q.put(1)
    q.put_nowait((2, "two"))
    assert q.full() and q.qsize() == 2
    with pytest.raises(queue.Full):
        q.put(3, block=False)
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.01)
    assert q.get() == 1
    assert q.get_nowait() == (2, "two")
    with pytest.raises(queue.Empty):
        q.get(False)
    with pytest.raises(queue.Empty):
        q.get(timeout=0.01)
    assert q.empty()


def test_bad_arguments():
    with pytest.raises(ValueError):
        gipc.Queue(-1)
    with pytest.raises(ValueError):
        gipc.JoinableQueue(-5)
    with pytest.raises(TypeError):
        gipc.Queue("3")


def test_closed_queue(shared):
    q = gipc.Queue()
    q.put(1)
    with pytest.raises(AssertionError):
        q.join_thread()
    q.cancel_join_thread()
    q.close()
    q.join_thread()
    with pytest.raises(ValueError, match="is closed"):
        q.put(2)
    with pytest.raises(ValueError, match="is closed"):
        q.get()
    q.close()
    sq = gipc.SimpleQueue()
    sq.close()
    with pytest.raises(ValueError, match="is closed"):
        sq.put(1)


def test_unpicklable_item_leaves_the_queue_unchanged(shared):
    q = shared(gipc.Queue)
    q.put("before")
    with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
        q.put(lambda: None)
    lock = shared(gipc.Lock)
    with pytest.raises(RuntimeError, match="cannot be pickled"):
        q.put(lock)
    with pytest.raises(RuntimeError, match="cannot be pickled"):
        pickle.dumps(q)
    assert q.qsize() == 1
    assert q.get() == "before"
    assert q.empty()


def test_simple_queue(shared):
    q = shared(gipc.SimpleQueue)
    assert q.empty()
    q.put([1, 2])
    assert not q.empty()
    assert q.get() == [1, 2]


def _produce(q, start, count):
    for i in range(start, start + count):
        q.put(i)


def test_fifo_from_a_child(shared):
    q = shared(gipc.Queue)
    p = gipc.start_process(_produce, args=(q, 0, 1000))
    assert [q.get(timeout=BOUND) for _ in range(1000)] == list(range(1000))
    assert end(p) == 0


def test_given_in_kwargs(shared):
    q = shared(gipc.Queue)
    p = gipc.start_process(_produce, kwargs={"q": q, "start": 5, "count": 3})
    assert [q.get(timeout=BOUND) for _ in range(3)] == [5, 6, 7]
    assert end(p) == 0


def _consume_tasks(q, results):
    while True:
        item = q.get(timeout=BOUND)
        if item is None:
            q.task_done()
            return
        results.put(item * 2)
        q.task_done()


def test_joinable_queue(shared):
    q, results = shared(gipc.JoinableQueue), shared(gipc.Queue)
    ps = [gipc.start_process(_consume_tasks, args=(q, results))
          for _ in range(2)]
    for i in range(50):
        q.put(i)
    q.put(None)
    q.put(None)
    joiner = gevent.spawn(q.join)
    joiner.join(BOUND)
    assert joiner.successful()
    assert sorted(results.get(timeout=BOUND) for _ in range(50)) == \
        [i * 2 for i in range(50)]
    with pytest.raises(ValueError, match="too many times"):
        q.task_done()
    assert [end(p) for p in ps] == [0, 0]


# Sizes, producers, consumers -------------------------------------------------

_SIZES = [0, 1, 7, 8, 100, 4095, 4096, 4097, 65535, 65536, 65537, 1 << 20,
          (1 << 20) + 3, 16 << 20]


def _payload(producer, index):
    size = _SIZES[index]
    return bytes([(producer * 31 + index) % 251]) * size


def _sized_producer(q, producer):
    for index in range(len(_SIZES)):
        q.put((producer, index, _payload(producer, index)))


def _sized_consumer(q, report):
    seen = []
    while True:
        item = q.get(timeout=BOUND)
        if item is None:
            break
        producer, index, data = item
        seen.append((producer, index, data == _payload(producer, index)))
    report.put(seen)


def test_every_size_through_three_producers_and_three_consumers(shared):
    q, report = shared(gipc.Queue), shared(gipc.Queue)
    consumers = [gipc.start_process(_sized_consumer, args=(q, report))
                 for _ in range(3)]
    producers = [gipc.start_process(_sized_producer, args=(q, n))
                 for n in range(3)]
    assert [end(p, BOUND) for p in producers] == [0, 0, 0]
    for _ in consumers:
        q.put(None)
    seen = [entry for _ in consumers for entry in report.get(timeout=BOUND)]
    assert [end(p) for p in consumers] == [0, 0, 0]
    assert all(whole for _, _, whole in seen)
    assert sorted((p, i) for p, i, _ in seen) == \
        [(p, i) for p in range(3) for i in range(len(_SIZES))]
    assert q.empty()


# Cancellation ---------------------------------------------------------------

def _waiters(q, bell):
    return q._block.load(16 + 8 * bell)


def test_cancelled_get_leaves_the_queue_as_it_was(shared):
    q = shared(gipc.Queue)
    getter = gevent.spawn(q.get)
    _until(lambda: _waiters(q, 0) == 1)
    getter.kill()
    assert _waiters(q, 0) == 0
    q.put("kept")
    assert q.qsize() == 1
    assert q.get(timeout=BOUND) == "kept"
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.01):
            q.get()
    assert _waiters(q, 0) == 0


def test_cancelled_put_on_a_full_queue_puts_nothing(shared):
    q = shared(gipc.Queue, 1)
    q.put("first")
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.02):
            q.put("second")
    with pytest.raises(queue.Full):
        q.put("third", timeout=0.01)
    assert _waiters(q, 1) == 0
    assert q.qsize() == 1
    assert q.get() == "first"
    assert q.empty()
    q.put("fourth", timeout=BOUND)
    assert q.get() == "fourth"


def test_blocked_put_resumes_when_a_child_makes_room(shared):
    q = shared(gipc.Queue, 1)
    q.put(0)
    p = gipc.start_process(_sized_consumer_once, args=(q,))
    q.put(1, timeout=BOUND)
    assert end(p) == 0
    assert q.get(timeout=BOUND) == 1


def _sized_consumer_once(q):
    assert q.get(timeout=BOUND) == 0


def test_timeout_while_waiting_for_the_read_turn(shared):
    q = shared(gipc.Queue)
    q.put("item")
    q._block.store(queues._RLOCK, os.getppid())  # a live process "reads"
    try:
        with pytest.raises(gevent.Timeout):
            with gevent.Timeout(0.05):
                q.get()
    finally:
        q._block.store(queues._RLOCK, 0)
    assert q.get(timeout=BOUND) == "item"


# Death ----------------------------------------------------------------------

def _get_forever(q):
    q.get()


def test_consumer_killed_while_blocked_in_get(shared):
    q = shared(gipc.Queue)
    p = gipc.start_process(_get_forever, args=(q,))
    _until(lambda: _waiters(q, 0) == 1)
    p.kill()
    assert end(p) == -signal.SIGKILL
    q.put("not lost")
    assert q.get(timeout=BOUND) == "not lost"
    consumer = gipc.start_process(_sized_consumer_once, args=(q,))
    q.put(0)
    assert end(consumer) == 0


def _exit_now():
    pass


def test_reader_that_died_mid_get_is_recovered(shared):
    q = shared(gipc.Queue)
    q.put("survives")
    p = gipc.start_process(_exit_now)
    dead = p.pid
    assert end(p) == 0
    q._block.store(queues._RLOCK, dead)  # died holding the read turn
    q._block.store(queues._WLOCK, dead)  # and the write turn
    q.put("also")
    assert q.get(timeout=BOUND) == "survives"
    assert q.get(timeout=BOUND) == "also"


# Sharing --------------------------------------------------------------------

def _use(q):
    try:
        q.put(1)
    except gipc.GIPCError as exc:
        assert "not given" in str(exc)
        return
    raise SystemExit(3)


def test_queue_not_given_is_an_error_in_the_child(shared):
    q = shared(gipc.Queue)
    p = gipc.start_process(lambda: _use(q))
    assert end(p) == 0
    assert q.empty()


# Liveness -------------------------------------------------------------------

def _drain(q, count, done):
    for _ in range(count):
        q.get(timeout=BOUND)
    done.set()


def test_parent_keeps_ticking_while_the_queue_works(shared):
    q, done = shared(gipc.Queue), shared(gipc.Event)
    ticks = []

    def ticker():
        while True:
            gevent.sleep(0.001)
            ticks.append(1)

    t = gevent.spawn(ticker)
    try:
        p = gipc.start_process(_drain, args=(q, 30000, done))
        before = len(ticks)
        for i in range(30000):  # never waits: the queue is unbounded
            q.put((i, "x"))
        produced = len(ticks) - before
        assert done.wait(BOUND)
        assert end(p) == 0
    finally:
        t.kill()
    assert produced >= 1, "put() never let the loop run"
    blocked = gevent.spawn(q.get, timeout=0.2)
    before = len(ticks)
    t = gevent.spawn(ticker)
    with pytest.raises(queue.Empty):
        blocked.get(timeout=BOUND)
    t.kill()
    assert len(ticks) - before >= 5


def test_threads_are_not_used():
    before = threading.active_count()
    q = gipc.Queue()
    q.put(1)
    assert q.get() == 1
    q.close()
    assert threading.active_count() == before


def test_cancelled_join_leaves_the_count(shared):
    q = shared(gipc.JoinableQueue)
    q.put("task")
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.02):
            q.join()
    assert q.get() == "task"
    q.task_done()
    q.join()


def _tagged_producer(q, tag, count):
    for i in range(count):
        q.put((tag, i))


def _collector(q, report):
    seen = []
    while True:
        item = q.get(timeout=BOUND)
        if item is None:
            break
        seen.append(item)
    report.put(seen)


def test_small_items_many_producers_many_consumers_exactly_once(shared):
    q, report = shared(gipc.Queue, 64), shared(gipc.Queue)
    consumers = [gipc.start_process(_collector, args=(q, report))
                 for _ in range(3)]
    producers = [gipc.start_process(_tagged_producer, args=(q, tag, 3000))
                 for tag in range(3)]
    local = [gevent.spawn(_tagged_producer, q, "parent", 1000)]
    assert [end(p, BOUND) for p in producers] == [0, 0, 0]
    gevent.joinall(local, timeout=BOUND, raise_error=True)
    for _ in consumers:
        q.put(None)
    lists = [report.get(timeout=BOUND) for _ in consumers]
    assert [end(p) for p in consumers] == [0, 0, 0]
    everything = sorted(item for seen in lists for item in seen
                        if item[0] != "parent")
    assert everything == [(t, i) for t in range(3) for i in range(3000)]
    mine = [item[1] for seen in lists for item in seen
            if item[0] == "parent"]
    assert sorted(mine) == list(range(1000))
    for seen in lists:  # each consumer sees each producer's items in order
        for tag in (0, 1, 2, "parent"):
            order = [i for t, i in seen if t == tag]
            assert order == sorted(order)


def _ring_rss_kib(q):
    """Resident KiB of the queue's ring mapping in this process."""
    size = q._block.capacity
    current = None
    with open("/proc/self/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:
                start, stop = (int(x, 16) for x in fields[0].split("-"))
                current = stop - start
            elif fields[0] == "Rss:" and current == size:
                return int(fields[1])
    raise AssertionError("ring mapping not found")


def test_read_pages_are_given_back(shared):
    q = shared(gipc.Queue)
    chunk = b"x" * (256 * 1024)
    for _ in range(4):
        for _ in range(32):
            q.put(chunk)
        for _ in range(32):
            assert q.get() == chunk
    # 32 MiB went through; only the chunk the tail is in may stay resident.
    assert _ring_rss_kib(q) <= 2048


def test_put_and_get_progress_beside_a_greenlet_that_keeps_yielding(shared):
    # Their turn-taking yield must not wait for the loop to be idle: with
    # such a greenlet it never is.
    q = shared(gipc.Queue)
    stop = []

    def spinner():
        while not stop:
            gevent.sleep(0)

    g = gevent.spawn(spinner)
    try:
        with gevent.Timeout(BOUND):
            for i in range(20000):
                q.put(i)
            assert [q.get() for _ in range(20000)] == list(range(20000))
    finally:
        stop.append(1)
        g.join(BOUND)
