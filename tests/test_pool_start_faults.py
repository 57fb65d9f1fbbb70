"""What a start leaves for later to spare page copies, and that it changes
nothing a program can see.

Under fork, every page the parent or the child writes while both share it
is copied.  So a handle that moved to a child is closed in the parent at
once (its descriptor, its state, the registry) but the rest of its
teardown waits until the child is gone; and a child closes the parent's
other handles without taking them over first.  The tests check the
visible state at every step, never a count or a time."""
import os

import gevent
import pytest

import gipc
from gipc import GIPCClosed, _ownership
from start_support import report_handles
from support import finish

JOIN = 10


def _put(writer, message):
    writer.put(message)


def _inode(fd):
    return os.fstat(fd).st_ino


def test_moved_handle_is_closed_at_once_and_torn_down_once_the_child_is_gone():
    r, w = gipc.pipe()
    inode, fd = _inode(w.fileno()), w.fileno()
    p = gipc.start_process(_put, args=(w, "hello"), start_method="fork")
    # Closed, as gipc 1.8 says, right after the start.
    assert w.closed
    with pytest.raises(GIPCClosed):
        w.put("nope")
    with pytest.raises(GIPCClosed):
        w.fileno()
    with pytest.raises(GIPCClosed):
        w.close()
    assert w not in _ownership.get_all_handles()
    try:
        assert _inode(fd) != inode  # reused for something else since
    except OSError:
        pass  # closed
    # The rest waits for the child: its C writer still names the number.
    assert w._wcore.fd == fd
    assert r.get(timeout=JOIN) == "hello"
    finish(p)
    # Gone: the teardown is done.
    assert w._wcore.fd == -1
    assert "put" not in w.__dict__
    assert p._popen is None or not p._popen._moved
    r.close()


def test_a_moved_handle_that_waited_in_the_parent_is_torn_down_at_once():
    # Its watcher (of the parent's loop) must go before its descriptor.
    r, w = gipc.pipe()
    with pytest.raises(gevent.Timeout):
        r.get(timeout=0.01)
    assert r._waiter._watcher is not None
    p = gipc.start_process(_put, args=(r, None), start_method="fork")
    assert r.closed and r._core.fd == -1 and "get" not in r.__dict__
    assert r._waiter._watcher is None
    finish(p, 1)  # put() on a reader: the child's target fails
    w.close()


def test_a_start_while_a_teardown_waits_does_not_see_the_moved_handle():
    r1, w1 = gipc.pipe()
    r2, w2 = gipc.pipe()
    first = gipc.start_process(_put, args=(w1, 1), start_method="fork")
    assert first._popen._moved  # the first child is not joined yet
    second = gipc.start_process(report_handles, args=(w2,),
                                start_method="fork")
    assert r2.get(timeout=JOIN) == [True]  # only w2 there
    assert r1.get(timeout=JOIN) == 1
    finish(first)
    finish(second)
    r1.close()
    r2.close()


# The parent's handles a test does not give its child: the child finds
# them here (fork copies the module), not as arguments, which would move
# them.
_not_given = []


def _report_not_given(writer):
    """In the child: the state of the parent's handles it was not given,
    and whether the one it was given has its fast call under its new
    lock."""
    report = []
    for handle in _not_given:
        try:
            if hasattr(handle, "get"):
                handle.get(timeout=0)
            else:
                handle.put(1)
            used = "usable"
        except GIPCClosed:
            used = "closed"
        report.append((handle._id, handle.closed, used,
                       handle in _ownership.get_all_handles()))
    report.append(writer.__dict__["put"].lock is writer._lock)
    writer.put(report)


def test_handles_not_given_to_a_fork_child_are_closed_there():
    other_r, other_w = gipc.pipe()
    r, w = gipc.pipe()
    _not_given[:] = [other_r, other_w]
    try:
        p = gipc.start_process(_report_not_given, args=(w,),
                               start_method="fork")
        report = r.get(timeout=JOIN)
        finish(p)
    finally:
        del _not_given[:]
    assert report[-1] is True
    assert sorted(report[:-1]) == sorted(
        (h._id, True, "closed", False) for h in (other_r, other_w))
    # Still open here.
    other_w.put("still open")
    assert other_r.get(timeout=JOIN) == "still open"
    for h in (other_r, other_w, r):
        h.close()
