"""The cases, written once over a *transport* so that every Python
implementation (gipc, gipc 1.8, multiprocessing, the Python reference) runs
exactly the same parent and child code and the same checks.

A transport (see impl_*.py) provides::

    name, cooperative (bool: gevent-based, the event-loop case applies)
    pipe(raw) -> (reader, writer)         one-way channel
    getter(reader) / putter(writer)       bound receive / send callables
    getter_into(reader)                   receive-into-buffer callable or None
    spawn(fn, args, moved) -> proc        start a child running fn(*args);
                                          `moved` handles are closed in the
                                          parent (if the library does not)
    join(proc) -> exit code
    close(handle), pipe_size(handle)

The parent is the measuring side: it receives in the one-way cases (the
child sends), so a cooperative implementation receives on its event loop.
Before any timed region the child says "ready" and waits for "go" on a
separate control pipe (common.Ctl), so process start-up is not timed.

Every message is checked in the timed loop, for every implementation alike:
small ones are compared with the expected distinct message (index + fixed
pattern), large ones with the expected payload (a memcmp); the 1 GiB
message of case 7 is checked with zlib.crc32 after the measurement.
"""
import gc
import time
import zlib

from .common import (
    PICKLED_OBJECT, BenchError, Ctl, NotApplicable, make_payload, median,
    now, percentile, proc_status, reset_peak_rss, small_messages)


def _finish(T, proc, ctl, bad, what):
    """Collect the child's report and exit code; raise if anything was not
    intact."""
    report = ctl.recv()
    code = T.join(proc)
    ctl.close()
    if code != 0:
        raise BenchError("child exited with code %r" % (code,))
    if bad:
        raise BenchError("%d %s not intact" % (bad, what))
    if not report.get("ok", True):
        raise BenchError("child reports: %s" % report.get("error"))
    return report


def _spawn(T, fn, args, moved, ctl):
    proc = T.spawn(fn, args, moved)
    ctl.parent_after_spawn()
    return proc


# -- case 1: raw small messages ----------------------------------------

def _child_send_small(T, w, ctl, n, size):
    msgs = small_messages(n, size)
    put = T.putter(w)
    ctl.send({"ready": True})
    ctl.wait_go()
    for m in msgs:
        put(m)
    ctl.send({"ok": True, "sent": n})


def case_raw_msgs(T, p):
    n, size = p["n"], p["size"]
    r, w = T.pipe(raw=True)
    ctl = Ctl()
    expected = small_messages(n, size)
    proc = _spawn(T, _child_send_small, (T, w, ctl, n, size), [w], ctl)
    get = T.getter(r)
    ctl.recv()
    ctl.go()
    t0 = now()
    bad = 0
    for e in expected:
        if get() != e:
            bad += 1
    dt = now() - t0
    _finish(T, proc, ctl, bad, "messages")
    T.close(r)
    return {"msgs_per_s": n / dt}


# -- case 2: pickled tuple ----------------------------------------------

def _child_send_obj(T, w, ctl, n):
    put = T.putter(w)
    obj = PICKLED_OBJECT
    ctl.send({"ready": True})
    ctl.wait_go()
    for _ in range(n):
        put(obj)
    ctl.send({"ok": True, "sent": n})


def case_pickled(T, p):
    n = p["n"]
    r, w = T.pipe(raw=False)
    ctl = Ctl()
    proc = _spawn(T, _child_send_obj, (T, w, ctl, n), [w], ctl)
    get = T.getter(r)
    obj = PICKLED_OBJECT
    ctl.recv()
    ctl.go()
    t0 = now()
    bad = 0
    for _ in range(n):
        if get() != obj:
            bad += 1
    dt = now() - t0
    _finish(T, proc, ctl, bad, "objects")
    T.close(r)
    return {"msgs_per_s": n / dt}


# -- case 3: bandwidth ----------------------------------------------------

def _child_send_large(T, w, ctl, n, size, seed):
    payload = make_payload(size, seed)
    put = T.putter(w)
    ctl.send({"ready": True})
    ctl.wait_go()
    for _ in range(n):
        put(payload)
    ctl.send({"ok": True, "sent": n})


def case_bandwidth(T, p):
    n, size, into = p["n"], p["size"], p.get("into", False)
    r, w = T.pipe(raw=True)
    get_into = T.getter_into(r) if into else None
    if into and get_into is None:
        T.close(r)
        T.close(w)
        raise NotApplicable("%s has no receive-into-buffer call" % T.name)
    ctl = Ctl()
    expected = make_payload(size, 3)
    proc = _spawn(T, _child_send_large, (T, w, ctl, n, size, 3), [w], ctl)
    get = T.getter(r)
    ctl.recv()
    bad = 0
    if into:
        buf = bytearray(size)
        ctl.go()
        t0 = now()
        for _ in range(n):
            if get_into(buf) != size or buf != expected:
                bad += 1
        dt = now() - t0
    else:
        ctl.go()
        t0 = now()
        for _ in range(n):
            if get() != expected:
                bad += 1
        dt = now() - t0
    _finish(T, proc, ctl, bad, "messages")
    T.close(r)
    return {"mb_per_s": n * size / dt / 1e6}


# -- case 4: round trip -----------------------------------------------------

def _child_echo(T, r, w, ctl, n):
    get = T.getter(r)
    put = T.putter(w)
    ctl.send({"ready": True})
    ctl.wait_go()
    for _ in range(n):
        put(get())
    ctl.send({"ok": True})


def case_rtt(T, p):
    n, warm = p["n"], p.get("warmup", 200)
    total = n + warm
    a_r, a_w = T.pipe(raw=True)   # parent -> child
    b_r, b_w = T.pipe(raw=True)   # child -> parent
    ctl = Ctl()
    msgs = small_messages(total, 64)
    proc = _spawn(T, _child_echo, (T, a_r, b_w, ctl, total), [a_r, b_w], ctl)
    put = T.putter(a_w)
    get = T.getter(b_r)
    clock = time.perf_counter_ns
    times = []
    bad = 0
    ctl.recv()
    ctl.go()
    for i, m in enumerate(msgs):
        t0 = clock()
        put(m)
        x = get()
        t1 = clock()
        if x != m:
            bad += 1
        if i >= warm:
            times.append(t1 - t0)
    _finish(T, proc, ctl, bad, "echoed messages")
    T.close(a_w)
    T.close(b_r)
    return {"rtt_median_us": median(times) / 1e3,
            "rtt_p99_us": percentile(times, 99) / 1e3}


# -- case 5: start + join ---------------------------------------------------

def _noop():
    pass


def case_spawn(T, p):
    n = p["n"]
    times = []
    for _ in range(n):
        t0 = now()
        proc = T.spawn(_noop, (), ())
        code = T.join(proc)
        # Timed too, and here: left to the next `proc = ...`, the process
        # object would be freed right after the next fork, where every page
        # the parent writes is copied.
        del proc
        times.append(now() - t0)
        if code != 0:
            raise BenchError("child exited with code %r" % (code,))
    return {"start_join_ms": median(times) * 1e3}


# -- case 6: event-loop stall --------------------------------------------

def _child_stall(T, r, w, ctl, n, size):
    payload = make_payload(size, 6)
    get = T.getter(r)
    put = T.putter(w)
    ctl.send({"ready": True})
    bad = 0
    for _ in range(n):
        if get() != payload:
            bad += 1
    for _ in range(n):
        put(payload)
    ctl.send({"ok": bad == 0, "error": "%d messages not intact" % bad})


def _busy(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def _ticking(run):
    """Run ``run(state, window)`` beside a greenlet ticking every 1 ms; the
    window (opened by ``window()``, closed by setting state["on"] to False)
    records the largest gap between ticks (state["max"]) and their number
    (state["ticks"])."""
    import gevent

    state = {"on": False, "max": 0.0, "run": True, "ticks": 0}

    def ticker():
        last = now()
        while state["run"]:
            gevent.sleep(0.001)
            t = now()
            if state["on"]:
                state["max"] = max(state["max"], t - last)
                state["ticks"] += 1
            last = t

    def window():
        """Open a measuring window: forget earlier gaps."""
        state["max"] = 0.0
        state["ticks"] = 0
        state["on"] = True

    g = gevent.spawn(ticker)
    try:
        gevent.sleep(0.02)
        return run(state, window)
    finally:
        state["run"] = False
        g.join()


def case_stall(T, p):
    if not T.cooperative:
        raise NotApplicable("blocking implementation (no event loop)")

    def run(state, window):
        # Starts first: once the 64 MiB messages exist, every fork has
        # their page tables to copy.
        result = {"stall_start_ms": _stall_starting(
            T, state, window, p.get("starts", 0)) * 1e3}
        result.update(_stall_transferring(T, state, window, p))
        return result

    return _ticking(run)


def case_loop_stall(T, p):
    """Case 8: the largest event-loop stalls of back-to-back send and
    receive loops over many messages, none of whose calls need wait long
    (the peer keeps up), and the receive loop's bandwidth."""
    if not T.cooperative:
        raise NotApplicable("blocking implementation (no event loop)")
    return _ticking(lambda state, window: _stall_transferring(
        T, state, window, p))


def _stall_starting(T, state, window, starts):
    """Start children that keep a CPU busy for 20 ms, one at a time (each
    is done before the next starts); the median over the starts of each
    one's largest gap (the largest of all mostly tells where the scheduler
    put a busy child: on the parent's CPU, the two share it)."""
    import gevent
    stalls = []
    codes = []
    for _ in range(starts):
        gevent.sleep(0.005)
        window()
        child = T.spawn(_busy, (0.02,), ())
        gevent.sleep(0.005)
        state["on"] = False
        if state["ticks"] == 0:
            raise BenchError("the ticker greenlet did not run while starting")
        stalls.append(state["max"])
        codes.append(T.join(child))
    if any(code != 0 for code in codes):
        raise BenchError("busy children exited with %r" % (codes,))
    return median(stalls) if stalls else 0.0


def _stall_transferring(T, state, window, p):
    """The largest gaps while n raw messages of size bytes are sent to a
    child, then received from it."""
    import gevent
    n, size = p["n"], p["size"]
    a_r, a_w = T.pipe(raw=True)   # parent -> child
    b_r, b_w = T.pipe(raw=True)   # child -> parent
    ctl = Ctl()
    payload = make_payload(size, 6)
    proc = _spawn(T, _child_stall, (T, a_r, b_w, ctl, n, size),
                  [a_r, b_w], ctl)
    put = T.putter(a_w)
    get = T.getter(b_r)
    ctl.recv()   # blocking: let the ticker tick again before measuring
    gevent.sleep(0.005)
    window()
    for _ in range(n):
        put(payload)
    gevent.sleep(0.002)   # let the ticker see the end of the window
    state["on"] = False
    stall_send, send_ticks = state["max"], state["ticks"]
    gevent.sleep(0.005)
    window()
    # Keep the messages and check them after the window: comparing 64 MiB
    # in the parent is the bench's own work and would count as a stall.
    t0 = now()
    got = [get() for _ in range(n)]
    recv_seconds = now() - t0
    gevent.sleep(0.002)
    state["on"] = False
    stall_recv, recv_ticks = state["max"], state["ticks"]
    bad = sum(1 for m in got if m != payload)
    del got
    _finish(T, proc, ctl, bad, "messages")
    T.close(a_w)
    T.close(b_r)
    if send_ticks == 0 or recv_ticks == 0:
        raise BenchError("the ticker greenlet never ran")
    return {"stall_send_ms": stall_send * 1e3,
            "stall_recv_ms": stall_recv * 1e3,
            "recv_mb_per_s": n * size / recv_seconds / 1e6}


# -- case 7: peak memory receiving one huge message -------------------------

def _child_send_one(T, w, ctl, size):
    payload = make_payload(size, 7)
    crc = zlib.crc32(payload)
    put = T.putter(w)
    ctl.send({"crc": crc})
    ctl.wait_go()
    put(payload)
    del payload
    ctl.send({"ok": True})


def case_rss(T, p):
    size = p["size"]
    r, w = T.pipe(raw=True)
    ctl = Ctl()
    proc = _spawn(T, _child_send_one, (T, w, ctl, size), [w], ctl)
    get = T.getter(r)
    crc = ctl.recv()["crc"]
    gc.collect()
    reset_ok = reset_peak_rss()
    before = proc_status()["VmRSS"]
    ctl.go()
    m = get()
    peak = proc_status()["VmHWM"]
    extra = peak - before
    bad = 0 if (len(m) == size and zlib.crc32(m) == crc) else 1
    del m
    _finish(T, proc, ctl, bad, "messages")
    T.close(r)
    return {"extra_rss_mib": extra / 2 ** 20,
            "extra_rss_ratio": extra / size,
            "_peak_reset": reset_ok}


CASES = {
    "1": case_raw_msgs,
    "2": case_pickled,
    "3a": case_bandwidth,
    "3b": case_bandwidth,
    "3c": case_bandwidth,
    "3d": case_bandwidth,
    "4": case_rtt,
    "5": case_spawn,
    "6": case_stall,
    "7": case_rss,
    "8a": case_loop_stall,
    "8b": case_loop_stall,
    "8c": case_loop_stall,
}


def run(T, case_id, params):
    return CASES[case_id](T, params)
