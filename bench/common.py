"""Helpers shared by the workers of every Python implementation.

Nothing here imports gipc or gevent: the same module runs in our own
interpreter and in the gipc 1.8 virtual environment.
"""
import fcntl
import json
import os
import random
import time

# Period of the payload pattern: not a power of two, so a chunk that is
# dropped, duplicated or moved inside a message changes its content.
_PATTERN_PERIOD = 1024 * 1024 + 17
_pattern_cache = {}


class BenchError(Exception):
    """A transfer was not intact (wrong count, size or content), or a child
    failed.  Makes the whole bench run fail."""


class NotApplicable(Exception):
    """The implementation has no way to do this case (reported as n/a)."""


def pattern(seed=1):
    """A deterministic pseudo-random block of _PATTERN_PERIOD bytes."""
    block = _pattern_cache.get(seed)
    if block is None:
        block = _pattern_cache[seed] = random.Random(seed).randbytes(
            _PATTERN_PERIOD)
    return block


def make_payload(size, seed=1):
    """``size`` bytes of a repeated pseudo-random pattern (fast to make)."""
    block = pattern(seed)
    reps, rest = divmod(size, len(block))
    if reps == 0:
        return block[:size]
    return block * reps + block[:rest]


def small_messages(n, size, seed=1):
    """``n`` distinct raw messages of ``size`` bytes: the message index in
    the first 8 bytes, then a fixed pattern (so a lost, duplicated or
    reordered message is detected)."""
    body = make_payload(max(0, size - 8), seed)
    if size < 8:
        raise ValueError("small messages must be >= 8 bytes")
    return [i.to_bytes(8, "big") + body for i in range(n)]


PICKLED_OBJECT = (12345, 2.5, "three")


def set_pipe_size(fd, size):
    """F_SETPIPE_SZ, best effort; returns the size in force."""
    if size:
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
        except OSError:
            pass
    return get_pipe_size(fd)


def get_pipe_size(fd):
    return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)


def proc_status():
    """VmRSS and VmHWM of this process, in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak_rss():
    """Reset VmHWM to the current RSS (Linux 4.0+).  False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Ctl:
    """Control channel between a case's parent and its child over two plain
    blocking pipes (never gipc), separate from the channel under test:
    the child says it is ready (with a JSON line), the parent says go (one
    byte), and the child reports its result (another JSON line).  Created in
    the parent before the fork; both sides inherit the descriptors."""

    def __init__(self):
        self.c2p_r, self.c2p_w = os.pipe()
        self.p2c_r, self.p2c_w = os.pipe()
        self._buf = b""

    def parent_after_spawn(self):
        """Close the child's ends in the parent, so that a child that dies
        early shows up as EOF instead of a hang."""
        for name in ("c2p_w", "p2c_r"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)

    def close(self):
        for name in ("c2p_r", "c2p_w", "p2c_r", "p2c_w"):
            fd = getattr(self, name)
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
                setattr(self, name, None)

    # child side
    def send(self, obj=None):
        data = (json.dumps(obj) + "\n").encode()
        while data:
            data = data[os.write(self.c2p_w, data):]

    def wait_go(self):
        if os.read(self.p2c_r, 1) != b"g":
            raise BenchError("control channel closed before go")

    # parent side
    def recv(self):
        while b"\n" not in self._buf:
            chunk = os.read(self.c2p_r, 65536)
            if not chunk:
                raise BenchError("child exited before reporting (see its "
                                 "stderr)")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def go(self):
        os.write(self.p2c_w, b"g")


def now():
    return time.perf_counter()


def median(values):
    values = sorted(values)
    n = len(values)
    if n == 0:
        return None
    mid = n // 2
    return values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2


def percentile(values, q):
    """Nearest-rank percentile (q in 0..100)."""
    values = sorted(values)
    if not values:
        return None
    k = max(0, min(len(values) - 1, int(round(q / 100.0 * len(values) + 0.5)) - 1))
    return values[k]
