"""Shared fixtures.  Every test is checked for leaks: it must leave no open
descriptor, no open gipc handle, no live or zombie child and no running
greenlet behind."""
import gc
import os

import gevent
import greenlet
import pytest
from gevent.threadpool import _WorkerGreenlet as ThreadPoolWorker

import gipc
from gipc import _devnull, _ownership
from support import children

# Subprocesses started by tests (python -c ..., from the repository root)
# must import the installed gipc, not the source tree, which has no compiled
# extension after a plain `pip install .`.
os.environ.setdefault("PYTHONSAFEPATH", "1")


def _open_fds():
    return set(os.listdir("/proc/self/fd"))


def _forkserver_owned():
    """The pid and descriptors of gipc's forkserver, which lives across
    tests once started (as the hub does): not a leak."""
    import sys
    forkserver = sys.modules.get("gipc._forkserver")
    if forkserver is None:
        return set(), set()
    pids, fds = forkserver.owned()
    return pids, {str(fd) for fd in fds}


def _live_greenlets():
    """Running greenlets of this thread, gevent's own excepted (hubs, the
    threadpool's workers and the main greenlets of their threads: gevent
    keeps those for the life of the pool)."""
    here = greenlet.getcurrent()
    while here.parent is not None:
        here = here.parent
    return [g for g in gc.get_objects()
            if isinstance(g, greenlet.greenlet) and g
            and not isinstance(g, (gevent.hub.Hub, ThreadPoolWorker))
            and (g.parent is not None or g is here)]


@pytest.fixture(scope="session", autouse=True)
def _prime_gevent():
    # The hub, its loop and threadpool open descriptors once, lazily; open
    # them before the first leak check.
    hub = gevent.get_hub()
    hub.threadpool.spawn(lambda: None).get()
    # So does gipc's /dev/null for children's stdin (kept for good).
    _devnull.shared_devnull()
    yield


@pytest.fixture(autouse=True)
def no_leaks(request):
    """Fail a test that leaves descriptors, handles, children or greenlets
    behind."""
    fds_before = _open_fds()
    children_before = children()
    greenlets_before = set(map(id, _live_greenlets()))
    yield
    gc.collect()
    problems = []
    handles = _ownership.get_all_handles()
    if handles:
        problems.append("open gipc handles: %r" % handles)
        for h in handles:
            try:
                h.close()
            except gipc.GIPCError:
                pass
    stray = [g for g in _live_greenlets() if id(g) not in greenlets_before]
    if stray:
        problems.append("running greenlets: %r" % stray)
        gevent.killall([g for g in stray if isinstance(g, gevent.Greenlet)])
    server_pids, server_fds = _forkserver_owned()
    left = children() - children_before - server_pids
    if left:
        problems.append("child processes left: %r" % sorted(left))
    leaked = _open_fds() - fds_before - server_fds
    leaked = {fd for fd in leaked if os.path.exists("/proc/self/fd/" + fd)}
    if leaked:
        targets = {}
        for fd in leaked:
            try:
                targets[fd] = os.readlink("/proc/self/fd/" + fd)
            except OSError:
                pass
        if targets:
            problems.append("descriptors left open: %r" % targets)
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture(params=["fork", "spawn", "forkserver"])
def start_method(request):
    """A test taking this fixture runs under every start method (its
    targets must be importable: see tests/start_support.py)."""
    return request.param


@pytest.fixture
def shared():
    """``shared(cls, *args, **kwargs)`` makes a shared object (queue, lock,
    value) that is closed at the end of the test, so that its descriptors
    are not counted as leaked."""
    made = []

    def make(cls, *args, **kwargs):
        obj = cls(*args, **kwargs)
        made.append(obj)
        return obj

    yield make
    for obj in made:
        obj.close()
