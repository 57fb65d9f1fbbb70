"""A multiprocessing program migrated to gipc by its import alone.

This is an ordinary ``multiprocessing`` program: workers that take numbers
from a pipe and answer with their squares, collected with
``connection.wait()``.  The only change is the import below; it now runs
inside a gevent program without blocking the event loop (a greenlet ticks
all along), which ``multiprocessing`` itself would do at every ``recv()``,
``wait()`` and ``join()``.
"""
import gevent

# before:
#   from multiprocessing import Pipe, Process
#   from multiprocessing.connection import wait
from gipc import Pipe, Process, wait

WORKERS = 3
NUMBERS = 30


def square_worker(conn):
    while True:
        number = conn.recv()
        if number is None:
            break
        conn.send((number, number * number))
    conn.close()


def main():
    ticks = [0]

    def tick():
        while True:
            ticks[0] += 1
            gevent.sleep(0.001)

    ticker = gevent.spawn(tick)
    ends, workers = [], []
    for _ in range(WORKERS):
        parent_end, child_end = Pipe()
        worker = Process(target=square_worker, args=(child_end,))
        worker.start()
        child_end.close()  # as multiprocessing code does (gipc: a no-op)
        ends.append(parent_end)
        workers.append(worker)
    for number in range(NUMBERS):
        ends[number % WORKERS].send(number)
    squares = {}
    while len(squares) < NUMBERS:
        for conn in wait(ends, timeout=10):
            number, square = conn.recv()
            squares[number] = square
    for conn in ends:
        conn.send(None)
        conn.close()
    for worker in workers:
        worker.join()
    ticker.kill()
    assert squares == {n: n * n for n in range(NUMBERS)}, squares
    codes = [w.exitcode for w in workers]
    print("%d workers squared %d numbers; exit codes %s; the event loop "
          "ticked %d times meanwhile" % (WORKERS, NUMBERS, codes, ticks[0]))
    if any(codes):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
