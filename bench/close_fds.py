"""``python -m bench.close_fds [ROUNDS] [N]``: what ``close_fds=True``
costs at a start.

Start + join of a child that returns at once, side by side in one run, in
alternating order per round (so that a noisy neighbour hurts all alike):
gipc with ``close_fds=False`` (the reference), gipc with
``close_fds=True``, and multiprocessing's fork start method (the stdlib
peer, which has no such option), each with the descriptors a fresh
interpreter has open and again with 1000 more open (sockets and files of
a busy server: the child replaces each of them by /dev/null).  Prints the
median per cycle over the rounds and the ratios to gipc without
close_fds.
"""
import multiprocessing
import os
import statistics
import sys
import time

import gipc


def _target():
    pass


def _gipc(close_fds):
    def start_join():
        p = gipc.start_process(_target, close_fds=close_fds)
        p.join()
        assert p.exitcode == 0
        p.close()
    return start_join


def _mp_fork():
    ctx = multiprocessing.get_context("fork")

    def start_join():
        p = ctx.Process(target=_target)
        p.start()
        p.join()
        assert p.exitcode == 0
        p.close()
    return start_join


def _median_ms(start_join, n):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        start_join()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _measure(rounds, n):
    cases = {"gipc": _gipc(False), "gipc close_fds": _gipc(True),
             "mp fork": _mp_fork()}
    for start_join in cases.values():  # warm-up
        for _ in range(10):
            start_join()
    results = {name: [] for name in cases}
    names = list(cases)
    for i in range(rounds):
        for name in (names if i % 2 == 0 else names[::-1]):
            results[name].append(_median_ms(cases[name], n))
    return {name: statistics.median(v) for name, v in results.items()}


def _report(title, medians):
    ref = medians["gipc"]
    print(title)
    for name, ms in medians.items():
        print("  %-15s %7.3f ms   %.2f x gipc" % (name, ms, ms / ref))


def main(argv):
    rounds = int(argv[0]) if argv else 5
    n = int(argv[1]) if len(argv) > 1 else 100
    print("start + join, median of %d rounds x %d cycles; %d descriptors "
          "open" % (rounds, n, len(os.listdir("/dev/fd"))))
    _report("as started:", _measure(rounds, n))
    extra = [os.open(os.devnull, os.O_RDONLY) for _ in range(1000)]
    try:
        _report("with 1000 more descriptors open:", _measure(rounds, n))
    finally:
        for fd in extra:
            os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
