"""Pipes between processes (children started with gipc.start_process): the
issue's "done when" transfers with the parent's event loop kept alive, EOF,
a child dying inside a message, broken pipes and timeouts across
processes."""
import os
import time

import gevent
import gevent.event
import pytest

import gipc
from gipc import GIPCClosed, GIPCProtocolError
from support import end as _finish
from start_support import die_inside_message as _die_inside_message
from start_support import duplex_echo as _duplex_echo
from start_support import exit_at_once as _exit_at_once
from start_support import put_to_closed_reader as _put_to_closed_reader
from start_support import sum_numbers as _sum_numbers

WAIT = 30
MIB = 1024 * 1024
N_SMALL = 200_000


class Ticker:
    """A greenlet that ticks every 10 ms and records when it ran."""

    def __init__(self):
        self.ticks = []
        self._stop = gevent.event.Event()
        self._g = gevent.spawn(self._run)

    def _run(self):
        while not self._stop.is_set():
            self.ticks.append(time.monotonic())
            self._stop.wait(0.01)

    def stop(self):
        self._stop.set()
        self._g.join(timeout=5)
        self._g.kill()
        self.ticks.append(time.monotonic())

    def max_gap(self):
        return max(b - a for a, b in zip(self.ticks, self.ticks[1:]))


# ---------------------------------------------------------- done when


def _echo_raw(r, w):
    w.put(r.get())


def test_100_mib_raw_message_both_ways_while_parent_ticks():
    data = os.urandom(100 * MIB)
    with gipc.pipe(encoder=None, decoder=None) as (to_child_r, to_child_w), \
            gipc.pipe(encoder=None, decoder=None) as (to_parent_r,
                                                      to_parent_w):
        p = gipc.start_process(_echo_raw, args=(to_child_r, to_parent_w))
        try:
            assert to_child_r.closed and to_parent_w.closed  # moved
            ticker = Ticker()
            try:
                sender = gevent.spawn(to_child_w.put, data)
                back = to_parent_r.get(timeout=WAIT)
                sender.join(timeout=WAIT)
                assert sender.successful()
            finally:
                ticker.stop()
                gevent.killall([sender], timeout=5)
        finally:
            code = _finish(p)
    assert code == 0
    assert len(back) == len(data)
    assert back == data
    # The parent's loop kept running during the 200 MiB of traffic.
    assert len(ticker.ticks) >= 3
    assert ticker.max_gap() < 0.5, ticker.max_gap()


def _count_then_send(r, w, n):
    expected = 0
    while True:
        try:
            msg = r.get()
        except EOFError:
            break
        if msg != (expected, "m%d" % expected):
            w.put(("bad", expected, msg))
            return
        expected += 1
    w.put(("received", expected))
    for i in range(n):
        w.put((i, "c%d" % i))


def test_200000_small_pickled_messages_both_ways_while_parent_ticks():
    with gipc.pipe() as (to_child_r, to_child_w), \
            gipc.pipe() as (to_parent_r, to_parent_w):
        p = gipc.start_process(_count_then_send,
                               args=(to_child_r, to_parent_w, N_SMALL))
        try:
            ticker = Ticker()
            try:
                def send():
                    for i in range(N_SMALL):
                        to_child_w.put((i, "m%d" % i))
                    to_child_w.close()

                sender = gevent.spawn(send)
                assert to_parent_r.get(timeout=WAIT) == ("received", N_SMALL)
                sender.join(timeout=WAIT)
                assert sender.successful()
                get = to_parent_r.get
                for i in range(N_SMALL):
                    msg = get(timeout=WAIT)
                    if msg != (i, "c%d" % i):
                        pytest.fail("message %d is %r" % (i, msg))
                with pytest.raises(EOFError):
                    to_parent_r.get(timeout=WAIT)
            finally:
                ticker.stop()
                gevent.killall([sender], timeout=5)
        finally:
            code = _finish(p)
    assert code == 0
    assert len(ticker.ticks) >= 3
    assert ticker.max_gap() < 0.5, ticker.max_gap()


# -------------------------------------------------------- other rules


def test_duplex_handle_to_child(start_method):
    with gipc.pipe(duplex=True) as (mine, theirs):
        p = gipc.start_process(_duplex_echo, args=(theirs,),
                               start_method=start_method)
        try:
            assert theirs.closed
            with pytest.raises(GIPCClosed):
                theirs.put(1)
            for obj in (1, "two", b"3" * 100000, [4]):
                mine.put(obj)
                assert mine.get(timeout=WAIT) == ("echo", obj)
            mine._writer.close()  # EOF ends the child's loop
        finally:
            code = _finish(p)
    assert code == 0


def test_eof_at_boundary_when_child_exits(start_method):
    with gipc.pipe() as (r, w):
        p = gipc.start_process(_exit_at_once, args=(w,),
                               start_method=start_method)
        try:
            with pytest.raises(EOFError):
                r.get(timeout=WAIT)
        finally:
            code = _finish(p)
    assert code == 0


def test_child_dying_inside_a_message_gives_protocol_error(start_method):
    with gipc.pipe() as (r, w):
        p = gipc.start_process(_die_inside_message, args=(w,),
                               start_method=start_method)
        try:
            assert r.get(timeout=WAIT) == "whole"
            with pytest.raises(GIPCProtocolError) as info:
                r.get(timeout=WAIT)
            assert isinstance(info.value, OSError)
            with pytest.raises(GIPCProtocolError, match="middle of a message"):
                r.get(timeout=WAIT)
        finally:
            code = _finish(p)
    assert code == 0


def test_broken_pipe_in_child(start_method):
    with gipc.pipe() as (r, w), gipc.pipe() as (report_r, report_w):
        r.close()
        p = gipc.start_process(_put_to_closed_reader, args=(w, report_w),
                               start_method=start_method)
        try:
            assert report_r.get(timeout=WAIT) == "BrokenPipeError"
        finally:
            code = _finish(p)
    assert code == 0


def _send_when_told(go, w):
    w.put(("go received", go.get()))


def test_timeout_across_processes_then_message():
    with gipc.pipe() as (go_r, go_w), gipc.pipe() as (r, w):
        p = gipc.start_process(_send_when_told, args=(go_r, w))
        try:
            with pytest.raises(gevent.Timeout):
                r.get(timeout=0.05)
            with gevent.Timeout(0.05, False) as t:
                r.get(timeout=t)
                pytest.fail("nothing was sent yet")
            go_w.put(7)
            assert r.get(timeout=WAIT) == ("go received", 7)
        finally:
            code = _finish(p)
    assert code == 0


def _use_unpassed(passed_w, other_r):
    try:
        other_r.get(timeout=1)
    except Exception as exc:  # noqa: BLE001
        passed_w.put(type(exc).__name__)
    else:
        passed_w.put("no error")


def test_handle_not_passed_is_unusable_in_child():
    with gipc.pipe() as (r, w), gipc.pipe() as (other_r, other_w):
        other_w.put("not for the child")
        # other_r reaches the child only through the target's closure, not
        # as an argument: it does not move, and the child closes it.
        holder = {"h": other_r}
        p = gipc.start_process(lambda pw: _use_unpassed(pw, holder["h"]),
                               args=(w,))
        try:
            assert r.get(timeout=WAIT) == "GIPCClosed"
        finally:
            code = _finish(p)
        assert other_r.get(timeout=WAIT) == "not for the child"
    assert code == 0


def test_many_medium_messages_to_child(start_method):
    chunks = [list(range(i, i + 1000)) for i in range(0, 200000, 1000)]
    with gipc.pipe() as (r, w), gipc.pipe() as (res_r, res_w):
        p = gipc.start_process(_sum_numbers, args=(r, res_w),
                               start_method=start_method)
        try:
            for c in chunks:
                w.put(c)
            w.close()
            assert res_r.get(timeout=WAIT) == sum(range(200000))
        finally:
            code = _finish(p)
    assert code == 0
