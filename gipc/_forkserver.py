"""The forkserver: a small process, spawned from a clean state on first
use, that forks the children of the "forkserver" start method.

The parent talks to its server over one Unix socket pair (the server
serves that parent only, so there is nothing to authenticate).  A start
sends one byte and the child's descriptors (``SCM_RIGHTS``): the write end
of the child's status pipe, the read end of its payload pipe, the
parent's sentinel, and the descriptors passed to the child.  The server
forks; the child closes everything else and runs ``_spawn.child_main``;
the server writes the child's pid on the status pipe, and its exit code
(a signed 4-byte integer, ``-N`` for signal ``N``) once it has reaped it,
then closes the pipe.  The parent reads both cooperatively.

The server exits when its socket reports EOF: when the parent exits or
dies (fork children of the parent do not keep the parent's end: it is
closed in them).  If the server dies, the next start brings up a new one.
"""
from __future__ import annotations

import atexit
import os
import pickle
import select
import signal
import socket
import struct
import sys
from typing import Any

from . import _spawn
from ._cooperate import close_fd
from .exceptions import GIPCError

_STATUS = struct.Struct("!i")
# Descriptors in one request: the three of the protocol, then the
# passed ones.
_MAX_FDS = 250


class ForkserverError(GIPCError):
    """The forkserver died during a start, twice in a row."""


# -- the parent's side -----------------------------------------------------

class _Server:
    """The running server of this process: its pid and our socket."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock
        self.owner = os.getpid()

    def fds(self) -> set[int]:
        return {self.sock.fileno()}


_server: _Server | None = None
_lock: Any = None


def _spawn_server() -> _Server:
    """Start a server: a fresh interpreter, prepared as a spawn child is
    (``sys.path``, ``__main__``), which preloads gipc and waits."""
    from ._popen_spawn import _spawn_process
    parent_end, server_end = socket.socketpair(socket.AF_UNIX,
                                               socket.SOCK_STREAM)
    data_r, data_w = os.pipe()
    try:
        fds = [server_end.fileno(), data_r]
        pid = _spawn_process(
            _spawn.interpreter_argv(fds, "_forkserver:serve_main"), fds)
    except BaseException:
        parent_end.close()
        close_fd(data_w)
        raise
    finally:
        server_end.close()
        close_fd(data_r)
    prep = _spawn.preparation()
    os.set_blocking(data_w, False)
    parent_end.setblocking(False)
    server = _Server(pid, parent_end)
    _spawn.write_payload(data_w, pickle.dumps(prep, pickle.HIGHEST_PROTOCOL))
    return server


def _server_exited(server: _Server) -> bool:
    """Reap the server if it has exited (it is our child)."""
    try:
        pid, _ = os.waitpid(server.pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return pid != 0


def stop() -> None:
    """Stop this process's server, if it runs, and reap it."""
    global _server
    server, _server = _server, None
    if server is None or server.owner != os.getpid():
        return
    server.sock.close()  # the server exits at EOF
    try:
        os.kill(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(server.pid, 0)
    except ChildProcessError:
        pass


def _running_server() -> _Server:
    global _server
    server = _server
    if server is not None and server.owner != os.getpid():
        server = _server = None  # the parent's, in a child: not ours
    if server is not None and _server_exited(server):
        server.sock.close()
        server = _server = None
    if server is None:
        server = _server = _spawn_server()
    return server


def owned() -> tuple[set[int], set[int]]:
    """The pids and descriptors of this process's server (for tests)."""
    server = _server
    if server is None or server.owner != os.getpid():
        return set(), set()
    return {server.pid}, server.fds()


def _get_lock() -> Any:
    global _lock
    if _lock is None:
        from ._cooperate import Semaphore
        _lock = Semaphore(1)
    return _lock


def start_child(fds: list[int], status_r: int) -> int:
    """Have the server fork a child with ``fds`` (status pipe write end
    first) and return the child's pid, read from ``status_r``.  All
    waits are cooperative.  A server found dead is replaced once."""
    lock = _get_lock()
    lock.acquire()
    try:
        for attempt in (1, 2):
            server = _running_server()
            try:
                _send_request(server.sock, fds)
                _wait_for_reply(server.sock, status_r)
                return _read_status(status_r)
            except (OSError, EOFError) as exc:
                # The server died (before or during this request).
                stop()
                if attempt == 2:
                    raise ForkserverError(
                        "the gipc forkserver died while starting a "
                        "child: %s" % exc) from exc
        raise AssertionError("unreachable")
    finally:
        lock.release()


def _send_request(sock: socket.socket, fds: list[int]) -> None:
    from ._cooperate import WRITE, FdWaiter
    waiter = FdWaiter(sock.fileno(), WRITE)
    try:
        while True:
            try:
                socket.send_fds(sock, [b"F"], fds)
                return
            except BlockingIOError:
                waiter.wait()
    finally:
        waiter.close()


def _wait_for_reply(sock: socket.socket, status_r: int) -> None:
    """Wait cooperatively until the server wrote the pid on ``status_r``,
    or died: the caller still holds the pipe's write end (for a retry), so
    a server killed with the request in its queue shows as the EOF of its
    socket (it never writes there), not of the pipe."""
    from gevent.select import select
    while True:
        ready, _, _ = select([status_r, sock], [], [])
        if status_r in ready:
            return
        if sock in ready:
            try:
                data = sock.recv(1)
            except BlockingIOError:
                continue
            raise EOFError("the forkserver closed its socket"
                           if not data else "the forkserver misspoke")


def read_exact(fd: int, size: int, wait: bool = True) -> bytes | None:
    """Read ``size`` bytes from the non-blocking ``fd``, waiting
    cooperatively (or None at once if ``wait`` is false and nothing is
    there).  :raises EOFError: the pipe closed before."""
    from ._cooperate import READ, FdWaiter
    data = b""
    waiter = FdWaiter(fd, READ)
    try:
        while len(data) < size:
            try:
                chunk = os.read(fd, size - len(data))
            except BlockingIOError:
                if not wait and not data:
                    return None
                waiter.wait()
                continue
            if not chunk:
                raise EOFError("the forkserver closed the status pipe")
            data += chunk
    finally:
        waiter.close()
    return data


def _read_status(fd: int) -> int:
    data = read_exact(fd, _STATUS.size)
    assert data is not None
    return int(_STATUS.unpack(data)[0])


def _forget_in_child() -> None:
    # A fork child of the parent must not keep the server alive, nor use
    # it: its starts bring up a server of its own.
    global _server, _lock
    server, _server, _lock = _server, None, None
    if server is not None:
        try:
            server.sock.close()
        except OSError:
            pass


os.register_at_fork(after_in_child=_forget_in_child)
# At exit the server would see EOF and go; stop and reap it now, so that
# no zombie and no unclosed socket is left to the interpreter's end.
atexit.register(stop)


# -- the server ------------------------------------------------------------

def serve_main() -> None:
    """The entry point of the server (see :func:`_spawn_server`)."""
    ctl_fd, data_fd = (int(fd) for fd in sys.argv[1].split(","))
    _spawn.close_all_but((ctl_fd, data_fd))
    os.set_inheritable(ctl_fd, False)
    try:
        prep = pickle.loads(_spawn._read_all(data_fd))
        _spawn._prepare(prep)
        # What every child imports, imported once here.
        import gevent  # noqa: F401
        import gipc  # noqa: F401
        from . import _bootstrap, _devnull  # noqa: F401
    except BaseException:
        import traceback
        traceback.print_exc()
        os._exit(1)
    _serve(socket.socket(fileno=ctl_fd))


def _serve(ctl: socket.socket) -> None:
    # Ctrl-C in the terminal reaches the whole process group; the server
    # goes when its parent does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, _no_op)
    children: dict[int, int] = {}  # pid -> status pipe write end
    poller = select.poll()
    poller.register(ctl.fileno(), select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    while True:
        try:
            events = poller.poll()
        except InterruptedError:
            events = []
        for fd, _ in events:
            if fd == wake_r:
                try:
                    while os.read(wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
            elif not _serve_one(ctl, children, wake_r, wake_w):
                os._exit(0)
        _reap(children)


def _no_op(signum: int, frame: Any) -> None:
    pass


def _serve_one(ctl: socket.socket, children: dict[int, int],
               wake_r: int, wake_w: int) -> bool:
    """Fork the child of one request; False at EOF."""
    try:
        msg, fds, _, _ = socket.recv_fds(ctl, 1, _MAX_FDS)
    except InterruptedError:
        return True
    if not msg:
        return False
    status_w, child_fds = fds[0], [fds[1], fds[2], -1, *fds[3:]]
    pid = os.fork()
    if pid == 0:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _spawn.child_main(child_fds, "forkserver")
    for fd in fds[1:]:
        close_fd(fd)
    children[pid] = status_w
    _write_status(status_w, pid)
    return True


def _write_status(fd: int, value: int) -> None:
    try:
        os.write(fd, _STATUS.pack(value))
    except OSError:
        pass  # the parent gave up on this child


def _reap(children: dict[int, int]) -> None:
    for pid in list(children):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, 255 << 8
        if done:
            fd = children.pop(pid)
            _write_status(fd, os.waitstatus_to_exitcode(status))
            close_fd(fd)
