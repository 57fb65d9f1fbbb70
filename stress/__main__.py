"""``python -m stress [--quick]``: gipc load and soak runs.

1. ``many``: 200 children alive at once, each exchanging messages with the
   parent over its own duplex pipe for a fixed time.
2. ``cycles``: 1,000 start/join cycles in a row.
3. ``volume``: 10 GiB through one pipe, child to parent.

``--quick`` runs each in a reduced form (CI).  Before the runs, a short
warm-up of every scenario; then the parent's open descriptors, current RSS
and peak RSS (VmHWM) are recorded, and after the runs they must not have
grown: descriptors not at all, memory by at most 10 % or 20 MiB (whichever
is larger).  Exit status 0 when every check passed.
"""
import argparse
import os
import sys
import time

import gevent

import gipc

MIB = 1024 * 1024


def _status():
    """(open fds, RSS bytes, peak RSS bytes) of this process."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return len(os.listdir("/proc/self/fd")), values["VmRSS"], values["VmHWM"]


# ------------------------------------------------------------- scenarios


def _pong(h, seconds):
    n = 0
    while True:
        msg = h.get()
        if msg is None:
            h.put(("done", n))
            return
        h.put(msg + 1)
        n += 1


def many(children, seconds):
    """`children` children alive at once, each ping-ponging with the
    parent until `seconds` have passed.  Returns messages exchanged."""
    ends, procs = [], []
    try:
        for i in range(children):
            mine, theirs = gipc.pipe(duplex=True)
            ends.append(mine)
            procs.append(gipc.start_process(_pong, args=(theirs, seconds),
                                            name="stress-%d" % i))
        assert all(p.is_alive() for p in procs)
        deadline = time.monotonic() + seconds

        def talk(h):
            n = value = 0
            while time.monotonic() < deadline:
                h.put(value)
                got = h.get(timeout=60)
                assert got == value + 1, (got, value)
                value = got
                n += 1
            h.put(None)
            done, count = h.get(timeout=60)
            assert done == "done" and count == n, (done, count, n)
            return n

        workers = [gevent.spawn(talk, h) for h in ends]
        gevent.joinall(workers, timeout=seconds + 120, raise_error=True)
        assert all(w.successful() for w in workers)
        total = sum(w.value for w in workers)
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0, (p, p.exitcode)
        return total
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=60)
            p.close()
        for h in ends:
            if not h.closed:
                h.close()


def _exit_with(code):
    os._exit(code)


def cycles(n):
    """`n` start/join cycles in a row, each child's exit code checked."""
    for i in range(n):
        p = gipc.start_process(_exit_with, args=(i % 7,))
        p.join(timeout=60)
        assert p.exitcode == i % 7, (i, p.exitcode)
        p.close()
    return n


def _produce(w, total, chunk):
    data = b"\xab" * chunk
    sent = 0
    while sent < total:
        n = min(chunk, total - sent)
        w.put(data if n == chunk else data[:n])
        sent += n
    w.close()


def volume(total, chunk=4 * MIB):
    """`total` bytes from a child through one pipe, in raw messages of
    `chunk` bytes; every byte counted, content spot-checked."""
    r, w = gipc.pipe(encoder=None, decoder=None, pipe_size=MIB)
    p = gipc.start_process(_produce, args=(w, total, chunk))
    got = 0
    try:
        while True:
            try:
                msg = r.get(timeout=60)
            except EOFError:
                break
            assert msg[:1] == b"\xab" and msg[-1:] == b"\xab"
            got += len(msg)
        assert got == total, (got, total)
        p.join(timeout=60)
        assert p.exitcode == 0, p.exitcode
        return got
    finally:
        if p.is_alive():
            p.kill()
            p.join(timeout=60)
        p.close()
        r.close()


# ------------------------------------------------------------------ main


FULL = {"children": 200, "seconds": 10.0, "cycles": 1000,
        "volume": 10 * 1024 * MIB}
QUICK = {"children": 200, "seconds": 2.0, "cycles": 300,
         "volume": 2 * 1024 * MIB}


def run(cfg, out=sys.stdout):
    def say(msg):
        out.write(msg + "\n")
        out.flush()

    # Warm-up: every code path once, so lazily created state (the hub, its
    # threadpool, caches, allocator arenas) exists before the baseline.
    many(cfg["children"], 0.2)
    cycles(5)
    volume(64 * MIB)
    fds0, rss0, peak0 = _status()
    say("start: %d fds, RSS %.1f MiB, peak RSS %.1f MiB"
        % (fds0, rss0 / MIB, peak0 / MIB))

    t0 = time.monotonic()
    n = many(cfg["children"], cfg["seconds"])
    say("many: %d children alive at once, %d round trips in %.1f s"
        % (cfg["children"], n, time.monotonic() - t0))
    t0 = time.monotonic()
    cycles(cfg["cycles"])
    say("cycles: %d start/join cycles in %.1f s"
        % (cfg["cycles"], time.monotonic() - t0))
    t0 = time.monotonic()
    got = volume(cfg["volume"])
    dt = time.monotonic() - t0
    say("volume: %.2f GiB through one pipe in %.1f s (%.0f MiB/s)"
        % (got / 1024 ** 3, dt, got / MIB / dt))

    fds1, rss1, peak1 = _status()
    say("end:   %d fds, RSS %.1f MiB, peak RSS %.1f MiB"
        % (fds1, rss1 / MIB, peak1 / MIB))
    failures = []
    if fds1 > fds0:
        failures.append("open descriptors grew: %d -> %d" % (fds0, fds1))
    for name, before, after in (("RSS", rss0, rss1),
                                ("peak RSS", peak0, peak1)):
        allowed = max(before * 0.10, 20 * MIB)
        if after - before > allowed:
            failures.append("%s grew by %.1f MiB (allowed %.1f MiB)"
                            % (name, (after - before) / MIB, allowed / MIB))
    if gipc.active_children():
        failures.append("children left: %r" % gipc.active_children())
    for failure in failures:
        say("FAIL: " + failure)
    if not failures:
        say("OK")
    return not failures


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m stress",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="reduced form (CI): %r" % QUICK)
    for key in FULL:
        parser.add_argument("--" + key, type=float if key == "seconds"
                            else int, default=None)
    args = parser.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    for key in FULL:
        value = getattr(args, key)
        if value is not None:
            cfg[key] = value
    return 0 if run(cfg) else 1


if __name__ == "__main__":
    sys.exit(main())
