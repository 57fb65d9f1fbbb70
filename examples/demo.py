"""Why gipc: a gevent server keeps answering while child processes crunch.

A gevent echo server runs in this process, and a client greenlet pings it
every few milliseconds, timing each answer.  Meanwhile CPU-bound work runs
in two worker processes: first through ``gipc.Pool``, whose waits are
cooperative, then through ``multiprocessing.Pool``, whose ``map()`` blocks
the event loop until the whole batch is done.  The demo prints how often
the server answered and the longest it kept a ping waiting during each batch.
"""
import multiprocessing
import time

import gevent
from gevent.server import StreamServer
from gevent.socket import create_connection

import gipc

#: Work per task and tasks per batch: about a second of CPU per batch on
#: two cores of a small machine.
TASK_SIZE = 3_000_000
TASKS = 8
PING_EVERY = 0.005


def crunch(n):
    """CPU-bound: the sum of the squares below ``n``, the slow way."""
    total = 0
    for i in range(n):
        total += i * i
    return total


def echo(sock, _address):
    with sock, sock.makefile("rb") as lines:
        for line in lines:
            sock.sendall(line)


class Pinger:
    """A client greenlet that pings the server every few milliseconds and
    notes when each answer came."""

    def __init__(self, address):
        self.answered = []
        self._sock = create_connection(address)
        self._lines = self._sock.makefile("rb")
        self._greenlet = gevent.spawn(self._run)

    def _run(self):
        while True:
            self._sock.sendall(b"ping\n")
            self._lines.readline()
            self.answered.append(time.perf_counter())
            gevent.sleep(PING_EVERY)

    def measure(self, work):
        """Run ``work()``; return (its result, seconds, pings answered
        meanwhile, the longest wait for an answer in seconds).  A ping's
        wait counts from when it was due: the previous answer plus the
        ping interval, or the start of the work."""
        started = time.perf_counter()
        self.answered = [started]
        result = work()
        elapsed = time.perf_counter() - started
        gevent.sleep(PING_EVERY * 2)  # the ping stuck behind a frozen loop
        answers = self.answered
        waits = [later - earlier - PING_EVERY
                 for earlier, later in zip(answers, answers[1:])]
        return result, elapsed, len(answers) - 1, max(waits, default=elapsed)

    def close(self):
        self._greenlet.kill()
        self._lines.close()
        self._sock.close()


def main():
    server = StreamServer(("127.0.0.1", 0), echo)
    server.start()
    pinger = Pinger(server.address)
    expected = [crunch(TASK_SIZE)] * TASKS
    try:
        with gipc.Pool(2) as pool:
            gipc_run = pinger.measure(
                lambda: pool.map(crunch, [TASK_SIZE] * TASKS))
        with multiprocessing.get_context("fork").Pool(2) as pool:
            mp_run = pinger.measure(
                lambda: pool.map(crunch, [TASK_SIZE] * TASKS))
    finally:
        pinger.close()
        server.stop()
    print("%d CPU-bound tasks on 2 worker processes, while a gevent echo "
          "server in this process is pinged every %d ms:"
          % (TASKS, PING_EVERY * 1000))
    for name, (result, elapsed, answers, worst) in (
            ("gipc.Pool", gipc_run), ("multiprocessing.Pool", mp_run)):
        print("  %-21s batch took %5.2f s; the server answered %4d pings, "
              "longest wait %7.1f ms" % (name, elapsed, answers,
                                          worst * 1000))
        if result != expected:
            raise SystemExit("%s returned wrong results" % name)
    print("gipc's pool keeps the event loop serving; multiprocessing's "
          "blocks it for the whole batch.")


if __name__ == "__main__":
    main()
