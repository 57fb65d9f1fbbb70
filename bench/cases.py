"""What is measured: the cases of issue 4, their sizes and counts (full and
--quick), the metrics they report, and the targets of the issue."""
from collections import namedtuple

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# higher: True if a larger value is better.
Metric = namedtuple("Metric", "key label unit higher")
Case = namedtuple("Case", "id title metrics full quick timeout")

_MSGS = Metric("msgs_per_s", None, "msgs/s", True)
_BW = Metric("mb_per_s", None, "MB/s", True)


def _m(metric, label):
    return metric._replace(label=label)


CASES = [
    Case("1", "raw 64 B messages, one direction",
         [_m(_MSGS, "1  raw 64 B msgs/s")],
         {"n": 200000, "size": 64}, {"n": 50000, "size": 64}, 120),
    Case("2", "pickled (12345, 2.5, 'three'), one direction",
         [_m(_MSGS, "2  pickled tuple msgs/s")],
         {"n": 100000}, {"n": 20000}, 120),
    Case("3a", "raw 64 KiB messages, bandwidth",
         [_m(_BW, "3a raw 64 KiB MB/s")],
         {"n": 4096, "size": 64 * KiB}, {"n": 512, "size": 64 * KiB}, 120),
    Case("3b", "raw 1 MiB messages, bandwidth",
         [_m(_BW, "3b raw 1 MiB MB/s")],
         {"n": 256, "size": MiB}, {"n": 16, "size": MiB}, 120),
    Case("3c", "raw 64 MiB messages, bandwidth",
         [_m(_BW, "3c raw 64 MiB MB/s")],
         {"n": 8, "size": 64 * MiB}, {"n": 4, "size": 8 * MiB}, 120),
    Case("3d", "raw 64 MiB messages into a reused buffer, bandwidth",
         [_m(_BW, "3d raw 64 MiB into buffer MB/s")],
         {"n": 8, "size": 64 * MiB, "into": True},
         {"n": 4, "size": 8 * MiB, "into": True}, 120),
    Case("4", "round trip of a 64 B raw message, ping-pong",
         [Metric("rtt_median_us", "4  round trip median µs", "µs", False),
          Metric("rtt_p99_us", "4  round trip p99 µs", "µs", False)],
         {"n": 20000}, {"n": 2000}, 120),
    Case("5", "start a child that returns at once, join it (median of n)",
         [Metric("start_join_ms", "5  start + join ms", "ms", False)],
         {"n": 50}, {"n": 10}, 120),
    Case("6", "event-loop stall: largest gap between 1 ms ticks while "
              "4 raw 64 MiB messages are sent / received; median over "
              "starts of it while a child that keeps a CPU busy for 20 ms "
              "is started",
         [Metric("stall_send_ms", "6  stall sending ms", "ms", False),
          Metric("stall_recv_ms", "6  stall receiving ms", "ms", False),
          Metric("stall_start_ms", "6  stall per busy-child start ms", "ms",
                 False)],
         {"n": 4, "size": 64 * MiB, "starts": 10},
         {"n": 4, "size": 8 * MiB, "starts": 3}, 180),
    Case("8a", "event-loop stall: largest gap between 1 ms ticks in a "
               "back-to-back loop of 200 raw 1 MiB messages sent / received "
               "(issue 12's scenario), and the receive loop's bandwidth",
         [Metric("stall_send_ms", "8a stall, send loop 1 MiB ms", "ms", False),
          Metric("stall_recv_ms", "8a stall, receive loop 1 MiB ms", "ms",
                 False),
          Metric("recv_mb_per_s", "8a receive loop 1 MiB MB/s", "MB/s",
                 True)],
         {"n": 200, "size": MiB}, {"n": 50, "size": MiB}, 180),
    Case("8b", "event-loop stall, loops of 3,000 raw 64 KiB messages",
         [Metric("stall_send_ms", "8b stall, send loop 64 KiB ms", "ms",
                 False),
          Metric("stall_recv_ms", "8b stall, receive loop 64 KiB ms", "ms",
                 False),
          Metric("recv_mb_per_s", "8b receive loop 64 KiB MB/s", "MB/s",
                 True)],
         {"n": 3000, "size": 64 * KiB}, {"n": 1000, "size": 64 * KiB}, 180),
    Case("8c", "event-loop stall, loops of 300,000 raw 64 B messages",
         [Metric("stall_send_ms", "8c stall, send loop 64 B ms", "ms", False),
          Metric("stall_recv_ms", "8c stall, receive loop 64 B ms", "ms",
                 False),
          Metric("recv_mb_per_s", "8c receive loop 64 B MB/s", "MB/s",
                 True)],
         {"n": 300000, "size": 64}, {"n": 50000, "size": 64}, 180),
    Case("7", "peak RSS of the receiver for one 1 GiB raw message, minus "
              "RSS before",
         [Metric("extra_rss_mib", "7  extra RSS MiB", "MiB", False),
          Metric("extra_rss_ratio", "7  extra RSS / message size", "x",
                 False)],
         {"size": GiB}, {"size": 32 * MiB}, 180),
]

CASE_BY_ID = {c.id: c for c in CASES}

# Implementations, in table order.  Ratios are computed against the three
# references.
IMPLS = ["gipc", "gipc18", "mp", "pyref", "pyrefgipc", "cref", "crefspin",
         "gipcgreedy"]
REFS = ["cref", "crefspin", "mp", "pyref", "pyrefgipc", "gipcgreedy"]
IMPL_TITLES = {
    "gipc": "gipc (this tree)",
    "gipc18": "gipc 1.8 (PyPI)",
    "mp": "multiprocessing",
    "pyref": "Python reference",
    "pyrefgipc": "the Python reference in a process that imported gipc "
                 "(and so threading, through multiprocessing), as every "
                 "gipc program forks: the floor of start + join (case 5)",
    "cref": "C reference",
    "crefspin": "C reference that spins 50 us before blocking (round trip)",
    "gipcgreedy": "gipc whose loops never yield to the event loop "
                  "(fairness slice off: the loop-stall cases' throughput "
                  "reference)",
}

# The targets of issues 4 and 12: (issue, text, case, metric, reference
# or None for an absolute bound, op, bound).  With a reference, the bound
# applies to gipc / reference.  (bench.percall has issue 12's per-call
# targets, bench.pool issue 11's.)
TARGETS = [
    (4, "raw 64 B msgs/s >= 0.6 x C reference", "1", "msgs_per_s", "cref",
     ">=", 0.6),
    (4, "raw 64 B msgs/s >= 1.4 x multiprocessing", "1", "msgs_per_s", "mp",
     ">=", 1.4),
    (12, "raw 64 B msgs/s >= 1.0 x C reference", "1", "msgs_per_s", "cref",
     ">=", 1.0),
    (12, "raw 64 B msgs/s >= 1.0 x Python reference", "1", "msgs_per_s",
     "pyref", ">=", 1.0),
    (4, "pickled tuple msgs/s >= 1.5 x multiprocessing", "2", "msgs_per_s",
     "mp", ">=", 1.5),
    (12, "pickled tuple msgs/s >= 3.5 x multiprocessing", "2", "msgs_per_s",
     "mp", ">=", 3.5),
    (4, "raw 1 MiB MB/s >= 0.7 x C reference", "3b", "mb_per_s", "cref",
     ">=", 0.7),
    (4, "raw 64 MiB MB/s >= 1.0 x Python reference", "3c", "mb_per_s",
     "pyref", ">=", 1.0),
    (4, "raw 64 MiB into a reused buffer MB/s >= 0.6 x C reference", "3d",
     "mb_per_s", "cref", ">=", 0.6),
    (4, "round-trip median <= 1.3 x C reference", "4", "rtt_median_us",
     "cref", "<=", 1.3),
    (12, "round-trip median <= 1.3 x the spinning C reference", "4",
     "rtt_median_us", "crefspin", "<=", 1.3),
    (12, "start + join <= 1.5 x Python reference (os.fork + os.waitpid)",
     "5", "start_join_ms", "pyref", "<=", 1.5),
    (4, "event-loop stall sending 64 MiB messages <= 20 ms", "6",
     "stall_send_ms", None, "<=", 20.0),
    (4, "event-loop stall receiving 64 MiB messages <= 20 ms", "6",
     "stall_recv_ms", None, "<=", 20.0),
    (12, "event-loop stall, send loop of 1 MiB messages <= 5 ms",
     "8a", "stall_send_ms", None, "<=", 5.0),
    (12, "event-loop stall, receive loop of 1 MiB messages <= 5 ms",
     "8a", "stall_recv_ms", None, "<=", 5.0),
    (12, "receive loop of 1 MiB messages MB/s >= 0.95 x gipc never "
     "yielding", "8a", "recv_mb_per_s", "gipcgreedy", ">=", 0.95),
    (12, "event-loop stall, send loop of 64 KiB messages <= 5 ms",
     "8b", "stall_send_ms", None, "<=", 5.0),
    (12, "event-loop stall, receive loop of 64 KiB messages <= 5 ms",
     "8b", "stall_recv_ms", None, "<=", 5.0),
    (12, "event-loop stall, send loop of 64 B messages <= 5 ms",
     "8c", "stall_send_ms", None, "<=", 5.0),
    (12, "event-loop stall, receive loop of 64 B messages <= 5 ms",
     "8c", "stall_recv_ms", None, "<=", 5.0),
    (4, "extra memory to receive 1 GiB <= 1.15 GiB (1.15 x message size)",
     "7", "extra_rss_ratio", None, "<=", 1.15),
]


# Targets that no implementation can meet where the floor misses them:
# {(case, metric): (reference, what it is)}.  The floor is the reference
# measured as every gipc program runs it; the report gives floor / target
# reference beside gipc's ratio.
FLOORS = {
    ("5", "start_join_ms"): (
        "pyrefgipc", "the same os.fork + os.waitpid in a process that "
        "imported gipc"),
}


def select(spec):
    """Case ids for a --cases value like '1,3,6' or '3b,4' (a bare number
    selects all its sub-cases)."""
    if not spec:
        return [c.id for c in CASES]
    wanted = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        ids = [c.id for c in CASES if c.id == part or
               (part.isdigit() and c.id.rstrip("abcd") == part)]
        if not ids:
            raise ValueError("unknown case %r (known: %s)"
                             % (part, ", ".join(c.id for c in CASES)))
        wanted.extend(i for i in ids if i not in wanted)
    return [c.id for c in CASES if c.id in wanted]
