"""A gevent program that computes in a process pool while its event loop
keeps serving: a ticker greenlet ticks all along, a slow task is stopped by
a timeout (its worker killed and replaced), a crashing task fails alone,
and thread-pool futures are awaited next to process-pool ones.

    python examples/pool.py
"""
import concurrent.futures
import os
import time

import gevent

import gipc


def collatz_steps(n):
    """CPU-bound work: steps of the Collatz sequence from n to 1."""
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def crash():
    os._exit(3)


def tick(ticks):
    while True:
        gevent.sleep(0.01)
        ticks.append(time.monotonic())


def main():
    ticks = []
    ticker = gevent.spawn(tick, ticks)
    with gipc.Pool(2) as pool:
        # The stdlib API, cooperative: other greenlets run while we wait.
        steps = pool.map(collatz_steps, range(1, 200001), chunksize=5000)
        print("longest Collatz run below 200,000: %d steps" % max(steps))

        # Kill on cancel: the caller stops waiting, the task stops too.
        try:
            with gevent.Timeout(0.2):
                pool.apply(time.sleep, (60,))
        except gevent.Timeout:
            print("timed out: the sleeping task's worker was killed")

        # A worker that dies fails only its own task.
        try:
            pool.apply(crash)
        except gipc.WorkerLostError as exc:
            print("lost a worker:", exc)
        print("the pool still works: %d" % pool.apply(collatz_steps, (27,)))

    # Futures of processes and threads, awaited together on the hub.
    with gipc.ProcessPoolExecutor(2) as processes, \
            concurrent.futures.ThreadPoolExecutor(2) as threads:
        futures = [processes.submit(collatz_steps, 837799),
                   threads.submit(time.sleep, 0.1)]
        done, _ = gipc.futures_wait(futures, timeout=10)
        print("%d futures done" % len(done))
    ticker.kill()
    print("the event loop ticked %d times meanwhile" % len(ticks))


if __name__ == "__main__":
    main()
