"""Workers fed by a shared queue, the multiprocessing way, with gipc's
names: a JoinableQueue of tasks, a Queue of results, an Event to start,
a Value counter under its lock.  A greenlet of the parent keeps ticking
all along: none of these waits blocks the event loop."""
import os

import gevent

from gipc import Event, JoinableQueue, Process, Queue, Value


def worker(tasks, results, start, done):
    start.wait()
    while True:
        n = tasks.get()
        if n is None:
            tasks.task_done()
            break
        results.put((os.getpid(), n, n * n))
        with done.get_lock():
            done.value += 1
        tasks.task_done()


def main():
    ticks = [0]

    def ticker():
        while True:
            ticks[0] += 1
            gevent.sleep(0.001)

    tick_greenlet = gevent.spawn(ticker)
    tasks, results = JoinableQueue(), Queue()
    start, done = Event(), Value("i", 0)
    workers = [Process(target=worker, args=(tasks, results, start, done))
               for _ in range(3)]
    for w in workers:
        w.start()
    for n in range(100):
        tasks.put(n)
    for _ in workers:
        tasks.put(None)
    start.set()
    tasks.join()  # cooperative: the ticker ticks meanwhile
    squares = sorted(results.get(timeout=10)[2] for _ in range(100))
    assert squares == [n * n for n in range(100)]
    for w in workers:
        w.join()
    print("3 workers squared %d numbers; the parent's loop ticked %d times "
          "meanwhile" % (done.value, ticks[0]))
    tick_greenlet.kill()
    for shared in (tasks, results, start, done):
        shared.close()


if __name__ == "__main__":
    main()
