"""Task functions for the pool and executor tests (module level, so that
they pickle by reference), and helpers."""
import gc
import os
import signal
import time
import types

import gevent

#: Bound on every wait of a pool test.
WAIT = 20


def square(x):
    return x * x


def add(x, y):
    return x + y


def pid(_=None):
    return os.getpid()


def echo(*args, **kwargs):
    return args, kwargs


def fail(message):
    raise ValueError(message)


def exit_with(code):
    os._exit(code)


def kill_self(_=None):
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(WAIT)


def sleep_then(seconds, value=None):
    time.sleep(seconds)
    return value


def spin(seconds):
    """Keep a CPU busy for ``seconds``."""
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


def wait_for_file(path, seconds=WAIT):
    """Block (the worker) until ``path`` exists."""
    end = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise RuntimeError("timed out")
        time.sleep(0.001)
    return os.getpid()


def touch_and_wait(path, seconds=WAIT):
    """Create ``path``, then sleep: a task known to be running."""
    with open(path, "w"):
        pass
    time.sleep(seconds)
    return os.getpid()


def touch(path):
    with open(path, "w"):
        pass
    return os.getpid()


_hoard = []


def resident_bytes(_=None):
    """This worker's resident memory, as the pool measures it."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def hoard(megabytes):
    """Keep ``megabytes`` of resident memory in the worker."""
    block = bytearray(megabytes << 20)
    block[::4096] = b"x" * len(block[::4096])
    _hoard.append(block)
    return os.getpid()


def unpicklable_result(_=None):
    return lambda: None


class Unpicklable(Exception):
    def __init__(self, a, b):
        Exception.__init__(self, a)  # unpickling calls __init__(a): fails
        self.b = b


def raise_unpicklable(_=None):
    raise Unpicklable("custom", 2)


def failing_initializer():
    raise RuntimeError("initializer broke")


def exiting_initializer():
    os._exit(7)


_initialized = []


def initializer(value):
    _initialized.append(value)


def initialized(_=None):
    return list(_initialized)


def wait_until(predicate, seconds=WAIT):
    """Wait cooperatively (polling the hub) until ``predicate()``."""
    end = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not met in %ss" % seconds)
        gevent.sleep(0.005)


def alive(pid_):
    try:
        os.kill(pid_, 0)
    except ProcessLookupError:
        return False
    try:
        with open("/proc/%d/stat" % pid_) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def own_objects(obj, shared):
    """The objects ``obj`` keeps alive on its own: reachable from it
    (``gc.get_referents``), not through one of ``shared`` (its pool...), a
    class, a module or a function."""
    skip = {id(o) for o in shared}
    found = {id(obj): obj}
    todo = [obj]
    while todo:
        for ref in gc.get_referents(todo.pop()):
            if id(ref) in found or id(ref) in skip or isinstance(
                    ref, (type, types.ModuleType, types.FunctionType)):
                continue
            found[id(ref)] = ref
            todo.append(ref)
    return list(found.values())


def frames_of(code, tb):
    """The frames of a traceback ``tb`` that run ``code``."""
    frames = []
    while tb is not None:
        if tb.tb_frame.f_code is code:
            frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames
