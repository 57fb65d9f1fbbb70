"""Handles moving to child processes: closed in the parent after start,
usable in the child, checked before the fork, passed down generations; and
a child dying in the middle of a message."""
import multiprocessing
import os
import signal
import struct
import time

import gevent
import gevent.event
import gevent.select
import pytest

import gipc
from gipc import GIPCClosed, GIPCError, GIPCLocked, GIPCProtocolError
from gipc import _ownership
from support import children as _children
from support import finish as _finish
from start_support import Reporter as _Reporter
from start_support import duplex_echo_once as _duplex_echo
from start_support import echo_once as _echo_once
from start_support import put as _put
from start_support import report_fd as _report_fd
from start_support import report_handles as _report_handles

JOIN = 10


# --- targets ----------------------------------------------------------------

def _noop(*args, **kwargs):
    pass


# --- moves ------------------------------------------------------------------

def test_moved_handle_is_closed_in_parent_and_usable_in_child(start_method):
    r, w = gipc.pipe()
    p = gipc.start_process(_put, args=(w, "from the child"),
                           start_method=start_method)
    assert w.closed
    with pytest.raises(GIPCClosed):
        w.put("nope")
    assert w not in _ownership.get_all_handles()
    assert r.get(timeout=JOIN) == "from the child"
    # The only write end was in the child, which exited: EOF.
    _finish(p)
    with pytest.raises(EOFError):
        r.get(timeout=JOIN)
    r.close()


def test_handles_in_kwargs_move(start_method):
    r1, w1 = gipc.pipe()
    r2, w2 = gipc.pipe()
    p = gipc.start_process(_echo_once, kwargs={"reader": r1, "writer": w2},
                           start_method=start_method)
    assert r1.closed and w2.closed
    w1.put(123)
    assert r2.get(timeout=JOIN) == ("echo", 123)
    _finish(p)
    w1.close()
    r2.close()


def test_both_halves_of_a_duplex_handle_move(start_method):
    parent_end, child_end = gipc.pipe(duplex=True)
    p = gipc.start_process(_duplex_echo, args=(child_end,),
                           start_method=start_method)
    assert child_end.closed
    assert child_end._reader.closed and child_end._writer.closed
    assert not parent_end.closed
    parent_end.put({"x": 1})
    assert parent_end.get(timeout=JOIN) == ("echo", {"x": 1})
    _finish(p)
    parent_end.close()


def test_only_passed_handles_exist_in_the_child(start_method):
    r, w = gipc.pipe()
    others = [gipc.pipe(), gipc.pipe(duplex=True)]
    p = gipc.start_process(_report_handles, args=(w,),
                           start_method=start_method)
    assert r.get(timeout=JOIN) == [True]
    _finish(p)
    r.close()
    for pair in others:
        for h in pair:
            h.close()


def test_unpassed_handles_descriptors_are_closed_in_child(start_method):
    other_r, other_w = gipc.pipe()
    r, w = gipc.pipe()
    inode = os.fstat(other_r.fileno()).st_ino
    p = gipc.start_process(_report_fd, args=(other_r.fileno(), inode, w),
                           start_method=start_method)
    assert r.get(timeout=JOIN) == "closed"
    _finish(p)
    for h in (other_r, other_w, r):
        h.close()


def test_child_holds_no_copy_of_unpassed_write_end():
    # If the child kept a copy of other_w, closing it here would not give
    # the reader EOF while the child lives.
    other_r, other_w = gipc.pipe()
    r, w = gipc.pipe()
    p = gipc.start_process(_wait_for, args=(r,))
    other_w.close()
    with pytest.raises(EOFError):
        other_r.get(timeout=JOIN)
    assert p.is_alive()
    w.put("done")
    _finish(p)
    other_r.close()
    w.close()


def _wait_for(reader):
    reader.get()


def test_handle_passed_twice_moves_once():
    r, w = gipc.pipe()
    p = gipc.start_process(_echo_twice_to, args=(w, w))
    assert r.get(timeout=JOIN) == "a"
    assert r.get(timeout=JOIN) == "b"
    _finish(p)
    r.close()


def _echo_twice_to(w1, w2):
    w1.put("a")
    w2.put("b")


# --- errors before the fork ----------------------------------------------

def test_closed_handle_raises_before_fork():
    r, w = gipc.pipe()
    w.close()
    before = _children()
    with pytest.raises(GIPCClosed):
        gipc.start_process(_noop, args=(w,))
    assert _children() == before
    r.close()


def test_locked_handle_raises_before_fork_and_stays_usable():
    r, w = gipc.pipe()
    g = gevent.spawn(r.get)
    gevent.sleep(0)  # g is now inside get(), holding the handle
    assert r._lock.locked()
    before = _children()
    with pytest.raises(GIPCLocked):
        gipc.start_process(_noop, args=(r,))
    assert _children() == before
    assert not r.closed and not w.closed
    w.put("still here")
    assert g.get(timeout=JOIN) == "still here"
    r.close()
    w.close()


def test_already_moved_handle_raises_before_fork():
    r, w = gipc.pipe()
    p = gipc.start_process(_put, args=(w, 1))
    before = _children()
    with pytest.raises(GIPCClosed):
        gipc.start_process(_put, args=(w, 2))
    assert _children() == before
    assert r.get(timeout=JOIN) == 1
    _finish(p)
    r.close()


def test_one_bad_handle_moves_none():
    # A valid handle next to a closed one: nothing forks, nothing closes.
    r, w = gipc.pipe()
    r2, w2 = gipc.pipe()
    w2.close()
    before = _children()
    with pytest.raises(GIPCClosed):
        gipc.start_process(_noop, args=(w, w2))
    assert _children() == before
    assert not w.closed
    w.put("ok")
    assert r.get(timeout=JOIN) == "ok"
    for h in (r, w, r2):
        h.close()


@pytest.mark.parametrize("wrap", [
    lambda h: ([h],),
    lambda h: ((h,),),
    lambda h: ({"k": h},),
    lambda h: ([[1, {"deep": (h,)}]],),
])
def test_handle_hidden_in_container_raises_before_fork(wrap):
    r, w = gipc.pipe()
    before = _children()
    with pytest.raises(GIPCError, match="inside"):
        gipc.start_process(_noop, args=wrap(w))
    with pytest.raises(GIPCError, match="inside"):
        gipc.start_process(_noop, kwargs={"x": wrap(w)[0]})
    assert _children() == before
    assert not w.closed
    w.put("ok")
    assert r.get(timeout=JOIN) == "ok"
    r.close()
    w.close()


def test_duplex_handle_hidden_in_container_raises_before_fork():
    a, b = gipc.pipe(duplex=True)
    before = _children()
    with pytest.raises(GIPCError, match="inside"):
        gipc.start_process(_noop, args=([b],))
    assert _children() == before
    assert not b.closed
    a.close()
    b.close()


def _try_start_with(handle, conn):
    # Runs in a plain multiprocessing (fork) child, where the gipc handle
    # inherited from the test process is foreign.
    try:
        gipc.start_process(_noop, args=(handle,))
    except GIPCError as exc:
        conn.send(("GIPCError", str(exc), sorted(_children())))
    except BaseException as exc:  # noqa: BLE001
        conn.send((type(exc).__name__, str(exc), sorted(_children())))
    else:
        conn.send(("started", "", sorted(_children())))


def test_foreign_handle_raises_before_fork():
    r, w = gipc.pipe()
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    mp = ctx.Process(target=_try_start_with, args=(w, send))
    mp.start()
    send.close()
    try:
        ready, _, _ = gevent.select.select([recv], [], [], JOIN)
        assert ready
        kind, message, grandchildren = recv.recv()
    finally:
        mp.join(JOIN)
        recv.close()
    assert mp.exitcode == 0
    assert kind == "GIPCError"
    assert "not registered for current process" in message
    assert grandchildren == []
    mp.close()
    r.close()
    w.close()


# --- generations ------------------------------------------------------------

def _grandchild(writer, reader):
    token = reader.get()
    writer.put((token, os.getpid(), os.getppid()))


def _child_starting_grandchild(writer, reader):
    gc = gipc.start_process(_grandchild, args=(writer, reader))
    assert writer.closed and reader.closed
    gc.join(timeout=JOIN)
    code = gc.exitcode
    gc.close()
    os._exit(10 + code)  # tell the parent how the grandchild ended


def test_handles_pass_down_two_generations():
    r, w = gipc.pipe()
    cr, cw = gipc.pipe()
    p = gipc.start_process(_child_starting_grandchild, args=(w, cr))
    cw.put("token")
    token, gc_pid, gc_ppid = r.get(timeout=JOIN)
    assert token == "token"
    assert gc_ppid == p.pid
    assert gc_pid not in (p.pid, os.getpid())
    _finish(p, code=10)
    r.close()
    cw.close()


def _relay(upstream, depth):
    # Each generation starts the next one with a duplex end, and relays.
    if depth == 0:
        upstream.put(("bottom", upstream.get()))
        return
    mine, theirs = gipc.pipe(duplex=True)
    child = gipc.start_process(_relay, args=(theirs, depth - 1))
    mine.put(upstream.get())
    upstream.put(mine.get(timeout=JOIN))
    child.join(timeout=JOIN)
    mine.close()
    ok = child.exitcode == 0
    child.close()
    if not ok:
        os._exit(3)


def test_duplex_handles_relay_through_generations():
    mine, theirs = gipc.pipe(duplex=True)
    p = gipc.start_process(_relay, args=(theirs, 2))
    mine.put("down")
    assert mine.get(timeout=JOIN) == ("bottom", "down")
    _finish(p)
    mine.close()


# --- a child dying in the middle of a message ------------------------------

def _put_big(ready, writer, size):
    ready.put("writing")
    writer.put(b"x" * size)  # blocks: nobody reads


def test_child_killed_while_writing_a_large_frame():
    sr, sw = gipc.pipe()
    r, w = gipc.pipe(encoder=None, decoder=None)
    p = gipc.start_process(_put_big, args=(sw, w, 64 * 1024 * 1024))
    assert sr.get(timeout=JOIN) == "writing"
    # Part of the frame is in the (full) pipe; the child is stuck in put().
    ready, _, _ = gevent.select.select([r.fileno()], [], [], JOIN)
    assert ready
    assert p.is_alive()
    p.kill()
    p.join(timeout=JOIN)
    assert p.exitcode == -signal.SIGKILL
    with pytest.raises(GIPCProtocolError):
        r.get(timeout=JOIN)
    # The handle stays broken, naming the cause.
    with pytest.raises(GIPCProtocolError):
        r.get(timeout=JOIN)
    p.close()
    r.close()
    sr.close()


def _half_a_frame(ready, writer):
    # A frame header promising 1 MiB, and only part of the payload.
    os.write(writer.fileno(), struct.pack(">i", 1 << 20) + b"y" * 1000)
    ready.put("half written")
    gevent.sleep(JOIN * 3)


def test_reader_waiting_inside_a_frame_gets_an_error_when_the_writer_dies():
    sr, sw = gipc.pipe()
    r, w = gipc.pipe(encoder=None, decoder=None)
    p = gipc.start_process(_half_a_frame, args=(sw, w))
    assert sr.get(timeout=JOIN) == "half written"
    ready, _, _ = gevent.select.select([r.fileno()], [], [], JOIN)
    assert ready
    reading = gevent.spawn(r.get)
    # The reader takes what is there and waits for more: wait until it
    # really holds a part of the frame.
    deadline = time.monotonic() + JOIN
    while (r._core.buffered == 0 and not reading.ready()
           and time.monotonic() < deadline):
        gevent.sleep(0.001)
    assert r._core.buffered > 0  # inside the frame...
    assert not reading.ready()  # ...waiting for the rest
    p.kill()
    reading.join(timeout=JOIN)
    assert reading.ready(), "reader hangs after the writer died"
    assert isinstance(reading.exception, GIPCProtocolError)
    p.join(timeout=JOIN)
    assert p.exitcode == -signal.SIGKILL
    p.close()
    r.close()
    sr.close()


def test_handle_held_by_a_process_subclass_is_shared(start_method):
    r, w = gipc.pipe()
    with r:
        p = _Reporter(w, start_method)
        p.start()
        who, pid, owner = r.get(timeout=JOIN)
        assert (who, pid, owner) == ("child", p.pid, p.pid)
        assert not w.closed  # still the parent's too
        w.put("parent")
        assert r.get(timeout=JOIN) == "parent"
        w.close()
        _finish(p)
