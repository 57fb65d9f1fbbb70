"""``python -m bench.sentinel_vs_pidfd [ROUNDS] [N]``: start + join of a
child that returns at once, on the pidfd path and on the sentinel path
(``GIPC_NO_PIDFD=1``), side by side in one run.

Each round runs both paths, one fresh interpreter each, in alternating
order (so that a noisy neighbour hurts both alike); each interpreter
reports the median of N start + join cycles.  Prints the median over the
rounds per path and the ratio sentinel / pidfd (issue 13: at most 1.2).
"""
import json
import os
import statistics
import subprocess
import sys

_CHILD = r"""
import json, sys, time
import gipc
from gipc import _popen_base

def target():
    pass

n = int(sys.argv[1])
for _ in range(20):  # warm-up
    p = gipc.start_process(target); p.join(); p.close()
times = []
for _ in range(n):
    t0 = time.perf_counter()
    p = gipc.start_process(target)
    p.join()
    times.append(time.perf_counter() - t0)
    assert p.exitcode == 0
    p.close()
times.sort()
print(json.dumps({"pidfds": _popen_base.USE_PIDFDS,
                  "median_ms": times[len(times) // 2] * 1e3}))
"""


def _one(no_pidfd, n):
    env = dict(os.environ)
    env.pop("GIPC_NO_PIDFD", None)
    if no_pidfd:
        env["GIPC_NO_PIDFD"] = "1"
    out = subprocess.run([sys.executable, "-c", _CHILD, str(n)], env=env,
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result["pidfds"] is (not no_pidfd), result
    return result["median_ms"]


def main(argv):
    rounds = int(argv[0]) if argv else 5
    n = int(argv[1]) if len(argv) > 1 else 200
    pidfd, sentinel = [], []
    for i in range(rounds):
        order = (False, True) if i % 2 == 0 else (True, False)
        for no_pidfd in order:
            (sentinel if no_pidfd else pidfd).append(_one(no_pidfd, n))
    p, s = statistics.median(pidfd), statistics.median(sentinel)
    print("start + join, median of %d rounds x %d cycles" % (rounds, n))
    print("  pidfd path:    %.3f ms" % p)
    print("  sentinel path: %.3f ms" % s)
    print("  sentinel / pidfd: %.2f" % (s / p))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
