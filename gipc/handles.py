"""Pipe handles: the read end, the write end and the duplex pair.

A handle is a thin shell around a descriptor and the C core: it checks that
it may be used (open, owned by this process, stream in sync), serialises
greenlets that use it at once, encodes or decodes, and waits on the hub
when the core says the descriptor would block.
"""
from __future__ import annotations

import functools
import os
import pickle
from multiprocessing import BufferTooShort
from typing import (
    TYPE_CHECKING, Any, Callable, Iterable, Iterator, NoReturn, TypeVar)

from . import _core, _ownership
from ._cooperate import READ, WRITE, FdWaiter, Semaphore
from ._stream import SPIN_US, Endpoint, unpicklable
from .exceptions import GIPCClosed, GIPCLocked
from types import TracebackType

#: Default ``max_message_size``: 4 GiB.  Large enough for any message that
#: fits comfortably in memory, small enough that a corrupt header cannot
#: make the reader allocate absurd amounts.
DEFAULT_MAX_MESSAGE_SIZE = 4 * 1024 ** 3

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from ._core import Reader, Writer

_H = TypeVar("_H", bound="_GIPCHandle")
_P = TypeVar("_P", bound="_PairContext[Any, Any]")
_A = TypeVar("_A", bound="_GIPCHandle | _GIPCDuplexHandle")
_B = TypeVar("_B", bound="_GIPCHandle | _GIPCDuplexHandle")


class _GIPCHandle(Endpoint):
    """What read and write ends have in common: one lock, one watcher,
    gipc 1.8's closing rules and repr (the rest is
    :class:`gipc._stream.Endpoint`'s).  Instances are made by
    :func:`gipc.pipe`."""

    # staticmethod: a partial stays a plain callable (no Python frame).
    _make_lock = staticmethod(functools.partial(Semaphore, 1))

    def __init__(self, fd: int) -> None:
        self._id = os.urandom(3).hex()
        self._init_endpoint(fd)

    def _close_locks(self) -> tuple[tuple[Any, str | None], ...]:
        return ((self._lock, None),)

    def close(self) -> None:
        """Close the descriptor; the handle is unusable afterwards.

        Raises :exc:`GIPCClosed` if already closed, :exc:`GIPCLocked` while
        another greenlet is inside ``get()``/``put()`` on this handle, and
        :exc:`GIPCError` in a process that does not own the handle.
        """
        if self._closed:
            raise self._closed_error()
        self._close()

    def __enter__(self: _H) -> _H:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.close()
        except GIPCClosed:
            pass
        except GIPCLocked:
            raise GIPCLocked(
                "Context manager can't close handle %s. It's locked for I/O "
                "operation out of context." % self) from None

    def __repr__(self) -> str:
        return "<%s_%s fd: %s>" % (type(self).__name__, self._id, self._fd)

    __str__ = __repr__


class _GIPCReader(_GIPCHandle):
    """The read end of a pipe: ``get()`` returns one message per call."""

    _core: Reader
    _fast_name = "get"

    def __init__(self, fd: int, decoder: Callable[[bytes], Any] | None,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self._core = _core.Reader(fd, max_message_size)
        self._waiter = FdWaiter(fd, READ)
        self._waiters = (self._waiter,)
        self._decoder = decoder
        _GIPCHandle.__init__(self, fd)

    @property
    def max_message_size(self) -> int:
        """Largest message (in bytes, encoded) that ``get()`` accepts.  A
        larger one raises :exc:`GIPCProtocolError` before any memory is
        allocated for it."""
        return self._core.max_size

    @max_message_size.setter
    def max_message_size(self, value: int) -> None:
        self._core.max_size = _check_size(value)

    def _fast_locks(self) -> dict[str, Any]:
        return {"get": self._lock}

    def _make_fast(self) -> dict[str, Any]:
        return {"get": _core.FastRecv(
            self._core, self._gate, self._lock, self._full("get"),
            self._decoder, self._get_rest, SPIN_US)}

    def _get_rest(self) -> Any:
        """get() the Python way once the fast call found no message, even
        after spinning on the empty pipe."""
        data = self._receive_waiting(self._core.read_frame, self._lock,
                                     self._waiter)
        decoder = self._decoder
        return data if decoder is None else decoder(data)

    def get(self, timeout: float | None = None) -> Any:
        """Receive the next message, decode it and return it, waiting
        cooperatively until it is here.

        :arg timeout: None (wait for ever), a number of seconds, or a started
            ``gevent.Timeout``.  A number bounds the whole call and raises
            ``gevent.Timeout`` when it expires; a part of a message received
            by then is kept, and the next ``get()`` continues it.  A
            ``gevent.Timeout`` behaves as in gipc 1.8: it is cancelled as soon
            as a message begins to arrive, and the call then completes it.
        :raises EOFError: the write end is closed and no message is left.
        :raises GIPCProtocolError: the stream is corrupt, a message exceeds
            ``max_message_size``, or the pipe closed inside a message.
        :raises GIPCClosed, GIPCError: closed handle, or foreign process.
        """
        data = self._receive(self._core.read_frame, self._lock, self._waiter,
                             timeout)
        decoder = self._decoder
        return data if decoder is None else decoder(data)

    def get_into(self, buffer: Buffer, offset: int = 0,
                 timeout: float | None = None) -> int:
        """Receive the next message's raw bytes into the writable,
        C-contiguous ``buffer`` at byte ``offset`` and return their number.
        No decoder runs and no intermediate ``bytes`` object is made: a large
        message is read from the pipe straight into ``buffer``.

        ``timeout`` works as for :meth:`get`; a timed-out call may leave part
        of a message in ``buffer``, and calling again with the same buffer
        and offset continues it.
        :raises multiprocessing.BufferTooShort: the message does not fit;
            it is consumed and carried whole by the exception (``args[0]``).
        :raises ValueError: ``offset`` is negative or beyond the buffer.
        Other errors as for :meth:`get`.
        """
        size = self._receive(
            functools.partial(self._core.read_frame_into, buffer, offset),
            self._lock, self._waiter, timeout)
        if isinstance(size, int):
            return size
        raise BufferTooShort(size)

    def poll(self) -> bool:
        """True if ``get()`` would return at once: a whole message is
        buffered, or the pipe has data or EOF to report."""
        return self._poll_now()


class _GIPCWriter(_GIPCHandle):
    """The write end of a pipe: ``put()`` sends one message per call."""

    _wcore: Writer
    _fast_name = "put"

    def __init__(self, fd: int,
                 encoder: Callable[[Any], Any] | None) -> None:
        self._wcore = _core.Writer(fd)
        self._waiter = FdWaiter(fd, WRITE)
        self._waiters = (self._waiter,)
        self._encoder = encoder
        _GIPCHandle.__init__(self, fd)

    def _fast_locks(self) -> dict[str, Any]:
        return {"put": self._lock}

    def _make_fast(self) -> dict[str, Any]:
        return {"put": _core.FastSend(
            self._wcore, self._gate, self._lock, self._full("put"),
            self._put_rest, **_fast_encoder(self._encoder))}

    def _put_rest(self, data: Any, started: bool = False,
                   error: BaseException | None = None) -> None:
        """put() the Python way, from the turn on, of the encoded ``data``;
        or (``started``) finish the frame the fast call began (see
        :meth:`Endpoint._send_frame`)."""
        self._send_frame(data, self._lock, self._waiter, started, error)

    def put(self, o: object) -> None:
        """Encode ``o`` and write it as one message, waiting cooperatively
        until all of it is in the pipe.

        With ``encoder=None`` (raw mode), ``o`` is any C-contiguous object
        with the buffer protocol (bytes, bytearray, memoryview, array,
        numpy array), sent without a copy.

        :raises BrokenPipeError: every read end of the pipe is closed.
        :raises GIPCProtocolError: an earlier ``put()`` was interrupted
            half-way through a message.
        :raises GIPCClosed, GIPCError: closed handle, or foreign process.
        Errors of the encoder (e.g. ``pickle.PicklingError``) propagate and
        leave the stream intact.
        """
        if self._ok_pid != _ownership.pid:
            self._raise_unusable()
        encoder = self._encoder
        data = o if encoder is None else encoder(o)
        self._send_frame(data, self._lock, self._waiter)


class _PairContext(tuple[_A, _B]):
    """A pair of handles that is also a context manager: leaving the
    ``with`` block closes both (the second first, as gipc 1.8 does)."""

    def __enter__(self: _P) -> _P:
        for handle in self:
            handle.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self[1].__exit__(exc_type, exc_value, traceback)
        finally:
            self[0].__exit__(exc_type, exc_value, traceback)


class _GIPCDuplexHandle(_PairContext["_GIPCReader", "_GIPCWriter"]):
    """One end of a duplex pipe: ``put()`` goes to the other end's
    ``get()`` and vice versa.  Wraps a reader and a writer."""

    def __new__(cls, rwpair: tuple[_GIPCReader, _GIPCWriter],
                ) -> _GIPCDuplexHandle:
        return tuple.__new__(cls, rwpair)

    def __init__(self, rwpair: tuple[_GIPCReader, _GIPCWriter]) -> None:
        self._reader, self._writer = rwpair
        self.put = self._writer.put
        self.get = self._reader.get
        self.get_into = self._reader.get_into

    @property
    def closed(self) -> bool:
        """True once both halves are closed."""
        return self._reader._closed and self._writer._closed

    def poll(self) -> bool:
        """True if ``get()`` would return at once (see
        :meth:`_GIPCReader.poll`)."""
        return self._reader.poll()

    def close(self) -> None:
        """Close both halves; tolerates one of them being closed already.
        Raises :exc:`GIPCClosed` if both are."""
        if self._writer._closed and self._reader._closed:
            raise GIPCClosed("Reader & writer in %s already closed." % (self,))
        if not self._writer._closed:
            self._writer.close()
        if not self._reader._closed:
            self._reader.close()

    # __enter__/__exit__ are _PairContext's, as in gipc 1.8: leaving a
    # ``with`` block closes the writer, then the reader even if the writer
    # could not be closed.

    def _wait_target(self) -> tuple[int, Any]:
        return self._reader._wait_target()

    def __reduce__(self) -> NoReturn:
        raise unpicklable(type(self).__name__, Endpoint._passed_by)

    def __repr__(self) -> str:
        return "<%s(%r, %s)>" % (type(self).__name__, self._reader, self._writer)

    __str__ = __repr__


def _fast_encoder(encoder: Callable[[Any], Any] | None) -> dict[str, Any]:
    """How a ``_core.FastSend`` calls ``encoder``: pickle's own dumps with
    the protocol as second argument for the default encoder (a partial of
    it with only a protocol), the encoder itself otherwise."""
    if (isinstance(encoder, functools.partial) and encoder.func is pickle.dumps
            and not encoder.args and list(encoder.keywords) == ["protocol"]):
        return {"encoder": pickle.dumps,
                "protocol": encoder.keywords["protocol"]}
    return {"encoder": encoder}


def _check_size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("max_message_size must be an int, not %s"
                        % type(value).__name__)
    if value < 0:
        raise ValueError("max_message_size must not be negative")
    if value > _core.MAX_MESSAGE_SIZE:
        raise ValueError("max_message_size must be at most %d"
                         % _core.MAX_MESSAGE_SIZE)
    return value


def handles_in(objects: Iterable[object]) -> Iterator[_GIPCHandle]:
    """Yield the single-end handles among ``objects`` (both halves of a
    duplex handle)."""
    for obj in objects:
        if isinstance(obj, _GIPCHandle):
            yield obj
        elif isinstance(obj, _GIPCDuplexHandle):
            yield obj._reader
            yield obj._writer
