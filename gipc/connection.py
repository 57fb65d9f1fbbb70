"""``gipc.Pipe()`` and ``gipc.Connection``: the API of
``multiprocessing.connection``, cooperative.

A :class:`Connection` speaks the wire format of ``multiprocessing``
(see README, "Wire format") through gipc's C core: frames go out with
a ``_core.Writer`` and come in through a ``_core.Reader``.  Whenever the
descriptor would block, the calling greenlet waits on the gevent hub; the
event loop never stops.  A gipc ``Connection`` can talk to a stdlib
``multiprocessing.connection.Connection`` on the other end of the same pipe
or socket.

Connections are owned like gipc's pipe handles: one given directly in
``args``/``kwargs`` of :class:`gipc.Process` moves to the child (closed in
the parent once the child has started); every other one is closed in the
child.
"""
from __future__ import annotations

import errno
import functools
import pickle
import socket

from multiprocessing import BufferTooShort
from multiprocessing.reduction import ForkingPickler
from typing import TYPE_CHECKING, Any, NoReturn, SupportsIndex

from . import _core, _ownership
from ._cooperate import READ, WRITE, FdWaiter, Semaphore, close_fd
from ._stream import NO_LOCK, SPIN_US, Endpoint
from .exceptions import GIPCLocked
from .handles import DEFAULT_MAX_MESSAGE_SIZE
from .pipe import _os_pipe
from .wait import wait
from types import TracebackType

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from ._core import Reader

__all__ = ["Connection", "Pipe"]


class _DirectionLocks:
    """One lock per direction, so that a greenlet may send while another
    one waits in ``recv()``.  ``locked()`` answers for both (what
    ``gipc._moves`` asks before a connection moves to a child)."""

    __slots__ = ("read", "write")

    def __init__(self) -> None:
        self.read = Semaphore(1)
        self.write = Semaphore(1)

    def locked(self) -> bool:
        return self.read.locked() or self.write.locked()  # type: ignore[no-any-return]  # gevent


class Connection(Endpoint):
    """A connection over a pipe or socket descriptor, with the API of
    ``multiprocessing.connection.Connection``; every wait is cooperative.

    ``Connection(fd, readable=True, writable=True)`` takes ownership of
    ``fd`` (it is closed by :meth:`close`) and makes it non-blocking.
    Usually made by :func:`Pipe`.
    """

    _noun = "Connection"
    _send_name = "send()"
    _type_name = "gipc.Connection"
    _passed_by = "gipc.Process()"
    _make_lock = _DirectionLocks

    def __init__(self, handle: SupportsIndex, readable: bool = True,
                 writable: bool = True) -> None:
        fd = handle.__index__()
        if fd < 0:
            raise ValueError("invalid handle")
        if not readable and not writable:
            raise ValueError(
                "at least one of `readable` and `writable` must be True")
        self._readable = bool(readable)
        self._writable = bool(writable)
        if readable:
            self._core = _core.Reader(fd, DEFAULT_MAX_MESSAGE_SIZE)
        if writable:
            self._wcore = _core.Writer(fd)
        self._rwaiter = FdWaiter(fd, READ)
        self._wwaiter = FdWaiter(fd, WRITE)
        self._waiters = (self._rwaiter, self._wwaiter)
        self._init_endpoint(fd)

    # -- state --------------------------------------------------------------

    def _closed_error(self) -> OSError:  # type: ignore[override]
        return OSError("handle is closed")

    @property
    def readable(self) -> bool:
        """True if the connection is readable."""
        return self._readable

    @property
    def writable(self) -> bool:
        """True if the connection is writable."""
        return self._writable

    def _check_readable(self) -> None:
        if self._ok_pid != _ownership.pid:
            self._raise_unusable()
        if not self._readable:
            raise OSError("connection is write-only")

    def _check_writable(self) -> None:
        if self._ok_pid != _ownership.pid:
            self._raise_unusable()
        if not self._writable:
            raise OSError("connection is read-only")

    # -- fast calls -----------------------------------------------------------

    def _fast_locks(self) -> dict[str, Any]:
        locks = self._lock
        fast: dict[str, Any] = {}
        if self._writable:
            fast.update(send=locks.write, send_bytes=locks.write)
        if self._readable:
            fast.update(recv=locks.read, recv_bytes=locks.read)
        return fast

    def _make_fast(self) -> dict[str, Any]:
        locks = self._lock
        fast: dict[str, Any] = {}
        if self._writable:
            send = functools.partial(_core.FastSend, self._wcore, self._gate,
                                     locks.write)
            fast["send_bytes"] = send(self._full("send_bytes"),
                                      self._send_rest)
            # Plain objects (see _core: the C Pickler writes them by exact
            # type, whatever reducers are registered) pickle with
            # pickle.dumps exactly as with ForkingPickler; the rest goes
            # through ForkingPickler and its reducers.
            fast["send"] = send(self._full("send"), self._send_rest,
                                encoder=pickle.dumps,
                                protocol=pickle.DEFAULT_PROTOCOL,
                                fallback=ForkingPickler.dumps)
        if self._readable:
            recv = functools.partial(_core.FastRecv, self._core, self._gate,
                                     locks.read, spin_us=SPIN_US)
            fast["recv_bytes"] = recv(self._full("recv_bytes"),
                                      wait=self._recv_bytes_rest)
            fast["recv"] = recv(self._full("recv"), ForkingPickler.loads,
                                wait=self._recv_rest)
        return fast

    def _recv_bytes_rest(self) -> bytes:
        """recv_bytes() the Python way once the fast call found no
        message, even after spinning on the empty pipe."""
        return self._receive_waiting(  # type: ignore[no-any-return]  # bytes
            self._core.read_frame, self._lock.read, self._rwaiter)

    def _recv_rest(self) -> Any:
        """recv() the Python way, as :meth:`_recv_bytes_rest`."""
        return ForkingPickler.loads(self._recv_bytes_rest())

    def _send_rest(self, data: Any, started: bool = False,
                   error: BaseException | None = None) -> None:
        """A send the Python way, from the turn on, of the encoded
        ``data``; or (``started``) finish the frame the fast call began
        (see :meth:`Endpoint._send_frame`)."""
        self._send_frame(data, self._lock.write, self._wwaiter, started, error)

    # -- sending --------------------------------------------------------------

    def send_bytes(self, buf: Buffer, offset: int = 0,
                   size: int | None = None) -> None:
        """Send the bytes of a bytes-like object (or ``size`` of them from
        ``offset``) as one message."""
        self._check_writable()
        m = memoryview(buf)
        if m.itemsize > 1:
            m = m.cast('B')
        n = m.nbytes
        if offset < 0:
            raise ValueError("offset is negative")
        if n < offset:
            raise ValueError("buffer length < offset")
        if size is None:
            size = n - offset
        elif size < 0:
            raise ValueError("size is negative")
        elif offset + size > n:
            raise ValueError("buffer length < offset + size")
        self._send_frame(m[offset:offset + size], self._lock.write,
                         self._wwaiter)

    def send(self, obj: object) -> None:
        """Send a picklable object."""
        self._check_writable()
        self._send_frame(ForkingPickler.dumps(obj), self._lock.write, self._wwaiter)

    # -- receiving ------------------------------------------------------------

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        """Receive one message as ``bytes``.  A message longer than
        ``maxlength`` raises ``OSError`` and makes the connection unreadable
        (closes it if it is read-only), as in ``multiprocessing``."""
        self._check_readable()
        core = self._core
        if maxlength is None:
            return self._receive(  # type: ignore[no-any-return]  # bytes
                core.read_frame, self._lock.read, self._rwaiter)
        if maxlength < 0:
            raise ValueError("negative maxlength")
        read = core.read_frame
        if maxlength < core.max_size:
            read = functools.partial(_read_at_most, read, core, maxlength)
        try:
            data = self._receive(read, self._lock.read, self._rwaiter)
        except _MessageTooLong:
            data = None
        # (A frame whose header arrived in an earlier, interrupted call was
        # not checked against maxlength by the core.)
        if data is None or len(data) > maxlength:
            self._bad_message_length()
        return data  # type: ignore[no-any-return]  # the core's bytes

    def recv_bytes_into(self, buf: Buffer, offset: int = 0) -> int:
        """Receive one message into the writable buffer ``buf`` at byte
        ``offset``; return its size.  If it does not fit, raise
        ``multiprocessing.BufferTooShort`` carrying the whole message (which
        is consumed), as ``multiprocessing`` does."""
        self._check_readable()
        with memoryview(buf) as m:
            bytesize = m.nbytes
        if offset < 0:
            raise ValueError("negative offset")
        elif offset > bytesize:
            raise ValueError("offset too large")
        result = self._receive(
            functools.partial(self._core.read_frame_into, buf, offset),
            self._lock.read, self._rwaiter)
        if isinstance(result, int):
            return result
        raise BufferTooShort(result)

    def recv(self) -> Any:
        """Receive one message and unpickle it."""
        self._check_readable()
        return ForkingPickler.loads(self._receive(
            self._core.read_frame, self._lock.read, self._rwaiter))

    def _bad_message_length(self) -> NoReturn:
        # As multiprocessing: the stream is out of sync for reading.
        if self._writable:
            self._readable = False
            self._unbind_fast("recv", "recv_bytes")
        else:
            self.close()
        raise OSError("bad message length")

    def poll(self, timeout: float | None = 0.0) -> bool:
        """True if there is something to read (a message, or EOF), waiting
        cooperatively up to ``timeout`` seconds (None: for ever)."""
        self._check_readable()
        self._enter(NO_LOCK)
        return bool(wait([self], timeout))

    def _wait_target(self) -> tuple[int, Any]:
        return self.fileno(), self._core if self._readable else None

    # -- closing --------------------------------------------------------------

    def _close_locks(self) -> tuple[tuple[Any, str | None], ...]:
        locks = self._lock
        return ((locks.read, "receiving"), (locks.write, "sending"))

    def _locked_error(self, doing: str | None) -> GIPCLocked:
        return GIPCLocked("Can't close %s: a greenlet is %s on it."
                          % (self, doing))

    def close(self) -> None:
        """Close the connection; closing a closed connection does nothing.

        Raises :exc:`gipc.GIPCLocked` while another greenlet is inside a
        call on it, and :exc:`gipc.GIPCError` in a process that does not own
        it.
        """
        if not self._closed:
            self._close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "".join(("r" if self._readable else "",
                        "w" if self._writable else ""))
        state = "closed" if self._closed else "fd=%s" % self._fd
        return "<gipc.Connection %s %s>" % (state, mode)


class _MessageTooLong(Exception):
    """A message longer than the ``maxlength`` of ``recv_bytes()``."""


def _read_at_most(read: Any, core: Reader, maxlength: int,
                  *spin: int) -> Any:
    """``read(*spin)`` with the limit of the C reader ``core`` lowered to
    ``maxlength`` for the call; a longer message raises
    :exc:`_MessageTooLong` (the stream is then out of sync for reading, as
    with multiprocessing, without the endpoint being broken)."""
    limit = core.max_size
    core.max_size = maxlength
    try:
        return read(*spin)
    except OSError as exc:
        if exc.errno == errno.EMSGSIZE:
            raise _MessageTooLong from None
        raise
    finally:
        core.max_size = limit


def Pipe(duplex: bool = True) -> tuple[Connection, Connection]:
    """Return a pair ``(conn1, conn2)`` of :class:`Connection` objects,
    as ``multiprocessing.Pipe`` does.

    ``duplex=True``: both are readable and writable (a Unix socket pair).
    ``duplex=False``: ``conn1`` only receives and ``conn2`` only sends (an
    OS pipe).
    """
    if duplex:
        s1, s2 = socket.socketpair()
        fd1, fd2 = s1.detach(), s2.detach()
        kinds = ((True, True), (True, True))
    else:
        fd1, fd2 = _os_pipe(None)
        kinds = ((True, False), (False, True))
    try:
        c1 = Connection(fd1, *kinds[0])
    except BaseException:
        close_fd(fd1)
        close_fd(fd2)
        raise
    try:
        c2 = Connection(fd2, *kinds[1])
    except BaseException:
        c1.close()
        close_fd(fd2)
        raise
    return c1, c2
