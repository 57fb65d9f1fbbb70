"""A gipc Connection and a stdlib multiprocessing Connection on the two ends
of the same pipe or socket understand each other, in both directions."""
import os
import socket
from multiprocessing import connection as mp_connection

import pytest

import gipc
from mp_dropin_support import BOUND, GIPC, Liveness, finish, pass_gate

BIG = 3 * 1024 * 1024


def _big(seed):
    return bytes((i * seed) & 0xff for i in range(256)) * (BIG // 256)


def _raw_pair(kind):
    """Two blocking descriptor pairs ((a_in, a_out), (b_in, b_out)): what a
    writes to a_out, b reads from b_in, and vice versa."""
    if kind == "socketpair":
        s1, s2 = socket.socketpair()
        f1, f2 = s1.detach(), s2.detach()
        return (f1, f1), (f2, f2)
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    return (r2, w1), (r1, w2)


def _connections(factory, fds):
    fd_in, fd_out = fds
    if fd_in == fd_out:
        conn = factory(fd_in)
        return conn, conn
    return factory(fd_in, writable=False), factory(fd_out, readable=False)


def _stdlib_side(fd_in, fd_out, gate):
    """Runs in the child: plain blocking multiprocessing.connection."""
    pass_gate(gate)
    conn_in, conn_out = _connections(mp_connection.Connection, (fd_in, fd_out))
    obj = conn_in.recv()
    big = conn_in.recv_bytes()
    part = conn_in.recv_bytes()
    buf = bytearray(16)
    n = conn_in.recv_bytes_into(buf, 4)
    conn_out.send({"echo": obj, "big_ok": big == _big(7), "part": part,
                   "into": bytes(buf[4:4 + n])})
    conn_out.send_bytes(_big(11))
    conn_out.send_bytes(b"0123456789", 3, 4)
    conn_out.close()
    if conn_in is not conn_out:
        conn_in.close()


@pytest.mark.parametrize("kind", ["socketpair", "pipe"])
def test_gipc_parent_talks_to_stdlib_child(kind):
    gipc_fds, stdlib_fds = _raw_pair(kind)
    g_in, g_out = _connections(gipc.Connection, gipc_fds)
    with Liveness(GIPC) as live:
        p = gipc.Process(target=_stdlib_side,
                         args=stdlib_fds + (live.gate(),))
        p.start()
        for fd in set(stdlib_fds):
            os.close(fd)
        live.start()
        g_out.send(("hello", 1))
        g_out.send_bytes(_big(7))
        g_out.send_bytes(b"abcdefgh", 2, 3)
        g_out.send_bytes(b"into")
        report = g_in.recv()
        big = g_in.recv_bytes()
        assert g_in.recv_bytes() == b"3456"
        with pytest.raises(EOFError):
            g_in.recv()
        assert finish(p) == [0]
        live.check()
    g_in.close()
    g_out.close()
    assert report == {"echo": ("hello", 1), "big_ok": True, "part": b"cde",
                      "into": b"into"}
    assert big == _big(11)


@pytest.mark.parametrize("kind", ["socketpair", "pipe"])
def test_in_process_both_directions(kind):
    """Small messages, both ends in this process (they fit in the kernel
    buffer, so the blocking stdlib end never waits)."""
    gipc_fds, stdlib_fds = _raw_pair(kind)
    g_in, g_out = _connections(gipc.Connection, gipc_fds)
    s_in, s_out = _connections(mp_connection.Connection, stdlib_fds)
    try:
        g_out.send({"from": "gipc"})
        g_out.send_bytes(b"raw from gipc")
        assert s_in.recv() == {"from": "gipc"}
        assert s_in.recv_bytes() == b"raw from gipc"
        s_out.send(["from", "stdlib"])
        s_out.send_bytes(b"raw from stdlib")
        # gipc.wait and Connection.poll see the stdlib end's messages...
        assert gipc.wait([g_in], timeout=BOUND) == [g_in]
        assert g_in.poll(BOUND)
        assert g_in.recv() == ["from", "stdlib"]
        assert g_in.recv_bytes() == b"raw from stdlib"
        # ... and gipc.wait takes stdlib connections (anything with
        # fileno()) too.
        g_out.send(1)
        assert gipc.wait([s_in], timeout=BOUND) == [s_in]
        assert s_in.recv() == 1
    finally:
        for conn in {g_in, g_out, s_in, s_out}:
            conn.close()
