"""Pool benchmarks (issue 11): gipc.Pool and gipc.ProcessPoolExecutor side
by side with multiprocessing.Pool and concurrent.futures'
ProcessPoolExecutor (fork context), 2 workers each.

    python -m bench.pool            # 5 repetitions (about a minute)
    python -m bench.pool --quick    # CI: small counts, 2 repetitions
    python -m bench.pool --cases latency,apply_async --reps 3

Every (case, repetition, implementation) runs in a fresh interpreter
(``python -m bench.pool --one CASE IMPL N``) with gevent imported and its
hub started, as the application that uses the pool; implementations are
interleaved within each repetition so that they see the same machine.
Every result is checked.  The table shows medians and gipc/stdlib ratios;
the targets of issue 11 are reported as MET / MISSED, never enforced (the
machine is shared and noisy).  Exit status 1 only if a run failed.
"""
import argparse
import gc
import json
import os
import subprocess
import sys
import time

from .common import median

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKERS = 2


def trivial(x):
    return x


def add_one(x):
    return x + 1


# -- the pools ---------------------------------------------------------

def _pool(impl):
    if impl == "gipc":
        import gipc
        return gipc.Pool(WORKERS)
    import multiprocessing
    return multiprocessing.get_context("fork").Pool(WORKERS)


def _executor(impl):
    if impl == "gipc":
        import gipc
        return gipc.ProcessPoolExecutor(WORKERS)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    return ProcessPoolExecutor(WORKERS,
                               mp_context=multiprocessing.get_context("fork"))


def _close(pool):
    pool.close()
    pool.join()


def _warm(pool):
    # Both workers started and past their first task.
    pool.map(trivial, range(4 * WORKERS), chunksize=1)


# -- the cases: each returns {metric: value} ---------------------------

def case_latency(impl, n):
    """Pool.apply of a trivial task, one at a time: mean µs (the stdlib's
    latency is bimodal: a median would hide its slow half)."""
    pool = _pool(impl)
    _warm(pool)
    t0 = time.perf_counter()
    for i in range(n):
        if pool.apply(add_one, (i,)) != i + 1:
            raise AssertionError("wrong result")
    mean = (time.perf_counter() - t0) / n
    _close(pool)
    return {"us": mean * 1e6}


def case_apply_async(impl, n):
    """apply_async of n trivial tasks, then every get(): tasks/s."""
    pool = _pool(impl)
    _warm(pool)
    t0 = time.perf_counter()
    results = [pool.apply_async(add_one, (i,)) for i in range(n)]
    for i, r in enumerate(results):
        if r.get() != i + 1:
            raise AssertionError("wrong result")
    rate = n / (time.perf_counter() - t0)
    _close(pool)
    return {"per_s": rate}


def case_submit(impl, n):
    """Executor.submit of n trivial tasks, then every result(): tasks/s."""
    ex = _executor(impl)
    list(ex.map(trivial, range(4 * WORKERS)))
    t0 = time.perf_counter()
    futures = [ex.submit(add_one, i) for i in range(n)]
    for i, f in enumerate(futures):
        if f.result() != i + 1:
            raise AssertionError("wrong result")
    rate = n / (time.perf_counter() - t0)
    ex.shutdown()
    return {"per_s": rate}


def case_submit_latency(impl, n):
    """Executor.submit(...).result(), one at a time: mean µs."""
    ex = _executor(impl)
    list(ex.map(trivial, range(4 * WORKERS)))
    t0 = time.perf_counter()
    for i in range(n):
        if ex.submit(add_one, i).result() != i + 1:
            raise AssertionError("wrong result")
    mean = (time.perf_counter() - t0) / n
    ex.shutdown()
    return {"us": mean * 1e6}


def case_map1(impl, n):
    """map(chunksize=1) over n items: items/s."""
    pool = _pool(impl)
    _warm(pool)
    t0 = time.perf_counter()
    out = pool.map(add_one, range(n), chunksize=1)
    rate = n / (time.perf_counter() - t0)
    if out != list(range(1, n + 1)):
        raise AssertionError("wrong result")
    _close(pool)
    return {"per_s": rate}


def case_map(impl, n):
    """map with the default chunks over n items: items/s."""
    pool = _pool(impl)
    _warm(pool)
    data = list(range(n))
    t0 = time.perf_counter()
    out = pool.map(add_one, data)
    rate = n / (time.perf_counter() - t0)
    if out != list(range(1, n + 1)):
        raise AssertionError("wrong result")
    _close(pool)
    return {"per_s": rate}


def case_first(impl, n):
    """Create a pool, get its first result, close and join it: ms."""
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        pool = _pool(impl)
        if pool.apply(add_one, (i,)) != i + 1:
            raise AssertionError("wrong result")
        _close(pool)
        times.append(time.perf_counter() - t0)
    return {"ms": median(times) * 1e3}


def _stall(impl, n, run, owed=False, executor=False):
    """Largest gap in a ticker greenlet (sleeping 0.5 ms at a time) while
    ``run(pool, n)`` runs n trivial tasks: ms.  gipc only (a blocking pool
    stops the ticker for the whole run).  With ``owed``, the full
    collection the interpreter owes for what it made before the run is not
    made first, so that it falls within the run.  With ``executor``, the
    pool is a ProcessPoolExecutor."""
    if impl != "gipc":
        return {"ms": None, "cpu_ms": None, "gc_ms": None}
    import gevent
    if executor:
        pool = _executor(impl)
        list(pool.map(trivial, range(4 * WORKERS)))
    else:
        pool = _pool(impl)
        _warm(pool)
    if not owed:
        # The collection the interpreter owes for what it made before (its
        # start-up, the imports, earlier cases) is not the pool's stall.
        gc.collect()
    gaps = []
    running = [True]
    collections = []  # CPU time of each full collection of the cyclic GC
    started = [0.0]

    def on_gc(phase, info):
        if info["generation"] != 2:
            return
        if phase == "start":
            started[0] = time.thread_time()
        else:
            collections.append(time.thread_time() - started[0])

    def ticker():
        # Wall time between two ticks, and this thread's CPU time in it:
        # on a loaded machine the process is also descheduled, which the
        # CPU time leaves out (it is the stall the program itself made).
        clock, cpu_clock = time.perf_counter, time.thread_time
        last, last_cpu = clock(), cpu_clock()
        while running[0]:
            gevent.sleep(0.0005)
            now, now_cpu = clock(), cpu_clock()
            gaps.append((now - last - 0.0005, now_cpu - last_cpu))
            last, last_cpu = now, now_cpu

    gc.callbacks.append(on_gc)
    try:
        tick = gevent.spawn(ticker)
        gevent.sleep(0.01)
        check = run(pool, n)
        running[0] = False
        tick.join()
    finally:
        gc.callbacks.remove(on_gc)
    check()  # after the ticker: checking is not the pool's work
    if executor:
        pool.shutdown()
    else:
        _close(pool)
    return {"ms": max(g[0] for g in gaps) * 1e3,
            "cpu_ms": max(g[1] for g in gaps) * 1e3,
            "gc_ms": max(collections, default=0.0) * 1e3}


def _run_apply_async(pool, n):
    results = [pool.apply_async(add_one, (i,)) for i in range(n)]
    values = [r.get() for r in results]

    def check():
        # Also frees the results after the ticker stopped: deallocating
        # 100,000 objects at once is the program's stall, not the pool's.
        del results[:]
        if values != list(range(1, n + 1)):
            raise AssertionError("wrong result")
    return check


def _run_submit(executor, n):
    futures = [executor.submit(add_one, i) for i in range(n)]
    values = [f.result() for f in futures]

    def check():
        del futures[:]  # freed after the ticker stopped, as in apply_async
        if values != list(range(1, n + 1)):
            raise AssertionError("wrong result")
    return check


def _run_imap(pool, n):
    values = []
    for value in pool.imap_unordered(add_one, range(n)):
        values.append(value)

    def check():
        if sorted(values) != list(range(1, n + 1)):
            raise AssertionError("wrong result")
    return check


def case_stall(impl, n):
    """Loop stall while n apply_async tasks run (all results held)."""
    return _stall(impl, n, _run_apply_async)


def case_stall_owed(impl, n):
    """The same with the full collection the interpreter owes from its
    start-up made within the run: a reference, what such a collection
    costs with the results held (the pool's own objects make none)."""
    return _stall(impl, n, _run_apply_async, owed=True)


def case_stall_submit(impl, n):
    """Loop stall while n executor tasks run (all futures held)."""
    return _stall(impl, n, _run_submit, executor=True)


def case_stall_imap(impl, n):
    """Loop stall while n tasks stream through imap_unordered."""
    return _stall(impl, n, _run_imap)


def _collect_ms(reps=9):
    """The CPU time of a full collection of the cyclic GC (``gc.collect()``)
    in this process as it is: the fastest of ``reps``, ms."""
    times = []
    for _ in range(reps):
        start = time.thread_time()
        gc.collect()
        times.append(time.thread_time() - start)
    return min(times) * 1e3


class _Smallest:
    """The smallest object the cyclic GC tracks that a Python library can
    make: an instance with no slot and no ``__dict__``."""

    __slots__ = ()


def case_gc_held(impl, n):
    """A full GC collection with n finished apply_async results held (the
    stall case's state at its end): ms, and ns per result over the same
    collection without them."""
    pool = _pool(impl)
    _warm(pool)
    empty = _collect_ms()
    results = [pool.apply_async(add_one, (i,)) for i in range(n)]
    for i, r in enumerate(results):
        if r.get() != i + 1:
            raise AssertionError("wrong result")
    held = _collect_ms()
    del results[:]
    _close(pool)
    return {"ms": held, "ns_per_result": (held - empty) * 1e6 / n}


def case_gc_floor(impl, n):
    """The floor of case gc_held for any Python library: the same
    collection with n of the smallest GC-tracked objects held instead
    (gipc column only)."""
    if impl != "gipc":
        return {"ms": None, "ns_per_result": None}
    pool = _pool(impl)
    _warm(pool)
    empty = _collect_ms()
    objects = [_Smallest() for _ in range(n)]
    held = _collect_ms()
    del objects[:]
    _close(pool)
    return {"ms": held, "ns_per_result": (held - empty) * 1e6 / n}


#: id, function, metric, unit, higher is better, target ratio, counts
#: (full, quick), implementations
CASES = [
    ("latency", case_latency, "us", "µs", False, 0.1, (3000, 300)),
    ("apply_async", case_apply_async, "per_s", "tasks/s", True, 6.0,
     (100000, 10000)),
    ("submit", case_submit, "per_s", "tasks/s", True, 20.0,
     (50000, 5000)),
    ("submit_latency", case_submit_latency, "us", "µs", False, None,
     (3000, 300)),
    ("map1", case_map1, "per_s", "items/s", True, 4.0, (100000, 10000)),
    ("map", case_map, "per_s", "items/s", True, 1.0, (2000000, 200000)),
    ("first", case_first, "ms", "ms", False, 0.5, (20, 5)),
    ("stall", case_stall, "ms", "ms", False, None, (100000, 10000)),
    ("stall_owed", case_stall_owed, "ms", "ms", False, None,
     (100000, 10000)),
    ("stall_submit", case_stall_submit, "ms", "ms", False, None,
     (100000, 10000)),
    ("stall_imap", case_stall_imap, "ms", "ms", False, None,
     (100000, 10000)),
    ("gc_held", case_gc_held, "ms", "ms", False, None, (100000, 10000)),
    ("gc_floor", case_gc_floor, "ms", "ms", False, None, (100000, 10000)),
]
CASE_BY_ID = {c[0]: c for c in CASES}
LABELS = {
    "latency": "Pool.apply latency",
    "apply_async": "apply_async trivial",
    "submit": "executor submit trivial",
    "submit_latency": "executor submit().result()",
    "map1": "map(chunksize=1)",
    "map": "map default chunks",
    "first": "new pool, first result, close",
    "stall": "loop stall, 100k results held",
    "stall_owed": "  same, GC owed from start-up",
    "stall_submit": "loop stall, 100k futures held",
    "stall_imap": "loop stall, 100k imap_unordered",
    "gc_held": "gc.collect(), 100k results held",
    "gc_floor": "  same, 100k smallest objects",
}
#: Extra rows: (metric, label suffix, unit) for the cases whose id starts
#: with the key.
EXTRA_ROWS = {
    "stall": [("cpu_ms", ", CPU", "ms"), ("gc_ms", ", full GC", "ms")],
    "gc_": [("ns_per_result", ", per object", "ns")],
}
#: The stall target is absolute (issue 11: <= 5 ms), for the cases a
#: program runs (not the GC-off reference).
STALL_TARGET_MS = 5.0
STALL_TARGETED = ("stall", "stall_submit", "stall_imap")


def run_one(case_id, impl, n):
    """In the fresh interpreter: gevent imported, hub started, then the
    case; prints one JSON line."""
    import gevent
    gevent.get_hub()
    gevent.sleep(0)
    metrics = CASE_BY_ID[case_id][1](impl, n)
    print(json.dumps(metrics))


def measure(case_id, impl, n, timeout):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.pool", "--one", case_id, impl,
             str(n)], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "timeout"
    if done.returncode != 0:
        return None, done.stderr.strip().splitlines()[-1:] or ["failed"]
    return json.loads(done.stdout.strip().splitlines()[-1]), None


def fmt(v):
    if v is None:
        return "n/a"
    if v >= 10000:
        return "{:,.0f}".format(v)
    if v >= 100:
        return "%.0f" % v
    return "%.2f" % v


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.pool",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="small counts, 2 repetitions (CI)")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--cases", default="",
                    help="comma-separated ids among %s"
                    % ",".join(c[0] for c in CASES))
    ap.add_argument("--json", action="store_true",
                    help="also print one JSON line per measurement")
    ap.add_argument("--one", nargs=3, metavar=("CASE", "IMPL", "N"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        run_one(args.one[0], args.one[1], int(args.one[2]))
        return 0
    reps = args.reps or (2 if args.quick else 5)
    ids = [c for c in args.cases.split(",") if c] or [c[0] for c in CASES]
    unknown = [c for c in ids if c not in CASE_BY_ID]
    if unknown:
        ap.error("unknown case(s): %s" % ", ".join(unknown))
    values = {}
    failed = False
    for rep in range(reps):
        for case_id in ids:
            n = CASE_BY_ID[case_id][6][1 if args.quick else 0]
            for impl in ("gipc", "stdlib") if rep % 2 == 0 else (
                    "stdlib", "gipc"):
                metrics, error = measure(case_id, impl, n, timeout=300)
                if error:
                    failed = True
                    print("%s %s: %s" % (case_id, impl, error),
                          file=sys.stderr)
                    continue
                for key, value in metrics.items():
                    if value is not None:
                        values.setdefault((case_id, impl, key), []).append(
                            value)
                if args.json:
                    print(json.dumps({"case": case_id, "impl": impl,
                                      "rep": rep, **metrics}))
            print("rep %d/%d: %s done" % (rep + 1, reps, case_id),
                  file=sys.stderr, flush=True)
    print()
    print("%-44s %12s %12s %8s %8s  %s" % (
        "case (2 workers, fork)", "gipc", "stdlib", "ratio", "target",
        "met"))
    print("-" * 98)
    rows = [(c, CASE_BY_ID[c][2], LABELS[c], CASE_BY_ID[c][3]) for c in ids]
    for case_id in ids:
        for prefix, extra in EXTRA_ROWS.items():
            if case_id.startswith(prefix):
                rows.extend((case_id, key, LABELS[case_id] + suffix, unit)
                            for key, suffix, unit in extra)
    rows.sort(key=lambda row: ids.index(row[0]))
    for case_id, key, label, unit in rows:
        _, _, _, _, higher, target, _ = CASE_BY_ID[case_id]
        g = median(values.get((case_id, "gipc", key), []))
        s = median(values.get((case_id, "stdlib", key), []))
        ratio = g / s if g is not None and s else None
        if case_id in STALL_TARGETED and key in ("ms", "cpu_ms"):
            goal = "<= %g ms" % STALL_TARGET_MS
            met = g is not None and g <= STALL_TARGET_MS
        elif target is None:
            goal, met = "-", None
        else:
            goal = ("%s %gx" % (">=" if higher else "<=", target))
            met = ratio is not None and (ratio >= target if higher
                                         else ratio <= target)
        print("%-44s %12s %12s %8s %8s  %s" % (
            "%s %s" % (label, unit), fmt(g), fmt(s),
            "-" if ratio is None else "%.2f" % ratio, goal,
            "-" if met is None else "MET" if met else "MISSED"))
    print("\nstdlib: multiprocessing.Pool, or concurrent.futures."
          "ProcessPoolExecutor for the executor cases; medians of %d "
          "runs; ratio = gipc / stdlib.  Loop stall: the largest gap of a "
          "ticker greenlet; CPU: the parent's CPU time within that gap "
          "(without the time the OS ran other processes); full GC: the "
          "CPU time of the longest gen-2 collection in the run.  "
          "gc.collect(): the fastest of 9, CPU time; per object: over the "
          "same collection without them." % reps)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
