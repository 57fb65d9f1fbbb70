"""Page faults per start + join, parent and child, against os.fork().

A maintainer's tool for case 5 (start + join).  Every page either process
writes after a fork costs a fault: a copy while the other still shares it
(several microseconds on these virtual machines), a cheaper reuse after.
So the faults per start are a deterministic measure of what a start costs
beyond the fork itself, where the case's timings are noisy.  Counted with
getrusage (the parent's own, and its reaped children's), over starts of a
child that returns at once, in fresh interpreters with gevent's hub
started, as bench case 5 runs:

    python -m bench.start_join_faults [--starts N] [--root TREE]

Rows: a new gipc.Pool(2), its first apply() and its close() + join()
(bench pool case "first": one worker starts); gipc.start_process() +
join(); os.fork() + os._exit() + os.waitpid() as the Python reference
runs it (its worker imports neither threading nor gipc); the same with
threading imported, whose after-fork hook runs in every child of a
program that imported it (gipc imports multiprocessing, which imports
threading); and with gipc imported.  The pool row's child count varies
by some tens with the machine's load (the worker's wait for the end of
its tasks spins or sleeps), the others hardly.
"""
import argparse
import os
import subprocess
import sys

_WORKLOAD = r"""
import os, resource, sys
import gevent
gevent.get_hub()
gevent.sleep(0)
kind, starts = sys.argv[1], int(sys.argv[2])
if kind != "fork":
    import threading  # noqa: F401
if kind in ("gipc", "pool", "fork+gipc"):
    import gipc


def noop():
    pass


if kind == "gipc":
    def one():
        p = gipc.start_process(noop)
        p.join()
        del p
elif kind == "pool":
    def one():
        pool = gipc.Pool(2)
        if pool.apply(abs, (-1,)) != 1:
            raise AssertionError("wrong result")
        pool.close()
        pool.join()
        del pool
else:
    def one():
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
for _ in range(50):
    one()
self0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
kids0 = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
for _ in range(starts):
    one()
self1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
kids1 = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
print((self1 - self0) / starts, (kids1 - kids0) / starts)
"""

_KINDS = (("pool", "gipc.Pool: first apply, close, join"),
          ("gipc", "gipc.start_process + join"),
          ("fork", "os.fork + waitpid (bench pyref)"),
          ("fork+threading", "the same, threading imported"),
          ("fork+gipc", "the same, gipc imported"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--starts", type=int, default=500)
    parser.add_argument("--root", default=os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), help="the tree whose gipc to import "
        "(default: this one)")
    args = parser.parse_args(argv)
    root = args.root
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                  if p])
    print("page faults per start (%d starts)   parent   child" % args.starts)
    for kind, label in _KINDS:
        done = subprocess.run(
            [sys.executable, "-c", _WORKLOAD, kind, str(args.starts)],
            env=env, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        parent, child = map(float, done.stdout.split())
        print("  %-34s %6.1f  %6.1f" % (label, parent, child))


if __name__ == "__main__":
    main()
