"""``gipc.pipe()``: make the handles of a message channel."""
from __future__ import annotations

import functools
import os
import pickle

from typing import Any, Callable, Literal, overload

from . import _core, _pipesize
from ._cooperate import close_fd
from .exceptions import GIPCError
from .handles import (
    DEFAULT_MAX_MESSAGE_SIZE, _check_size, _GIPCDuplexHandle, _GIPCReader,
    _GIPCWriter, _PairContext)

#: What ``encoder=`` accepts: "default" (pickle), None (raw bytes) or a
#: callable returning a bytes-like object.
Encoder = Callable[[Any], Any]
#: What ``decoder=`` accepts: "default" (pickle), None or a callable.
Decoder = Callable[[bytes], Any]

_default_encoder = functools.partial(pickle.dumps,
                                     protocol=pickle.HIGHEST_PROTOCOL)
_default_decoder = pickle.loads


def _resolve_codec(codec: object, default: Callable[..., Any],
                   kind: str) -> Callable[..., Any] | None:
    """'default' -> pickle, None -> raw bytes (no codec), callable -> itself."""
    if isinstance(codec, str) and codec == "default":
        return default
    if codec is None:
        return None
    if callable(codec):
        return codec
    raise GIPCError("pipe '%s' argument must be callable." % kind)


def _check_pipe_size(pipe_size: object) -> int | None:
    if pipe_size is None:
        return None
    if isinstance(pipe_size, bool) or not isinstance(pipe_size, int):
        raise TypeError("pipe_size must be None or an int, not %s"
                        % type(pipe_size).__name__)
    if pipe_size <= 0:
        raise ValueError("pipe_size must be positive")
    return pipe_size


# pipe2() is Linux's (a portable build takes the POSIX path on Linux too).
_HAVE_PIPE2 = not _core.PORTABLE and hasattr(os, "pipe2")


def _os_pipe(pipe_size: int | None) -> tuple[int, int]:
    """A non-blocking, close-on-exec pipe, optionally resized."""
    if _HAVE_PIPE2:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    else:
        r, w = os.pipe()  # close-on-exec, as Python makes every pipe
        os.set_blocking(r, False)
        os.set_blocking(w, False)
    if pipe_size is not None:
        # Best effort: the kernel caps unprivileged pipe sizes
        # (/proc/sys/fs/pipe-max-size, pipe-user-pages-soft); a smaller
        # pipe only costs speed.
        _pipesize.set_size(w, pipe_size)
    return r, w


def _new_pair(encoder: Encoder | None, decoder: Decoder | None,
              max_message_size: int,
              pipe_size: int | None) -> tuple[_GIPCReader, _GIPCWriter]:
    r, w = _os_pipe(pipe_size)
    try:
        reader = _GIPCReader(r, decoder, max_message_size)
    except BaseException:
        close_fd(r)
        close_fd(w)
        raise
    try:
        writer = _GIPCWriter(w, encoder)
    except BaseException:
        reader.close()
        close_fd(w)
        raise
    if pipe_size is not None:
        writer._may_grow = False  # the caller chose the capacity
    return reader, writer


@overload
def pipe(duplex: Literal[False] = False,
         encoder: Encoder | Literal["default"] | None = "default",
         decoder: Decoder | Literal["default"] | None = "default", *,
         max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
         pipe_size: int | None = None,
         ) -> _PairContext[_GIPCReader, _GIPCWriter]: ...
@overload
def pipe(duplex: Literal[True],
         encoder: Encoder | Literal["default"] | None = "default",
         decoder: Decoder | Literal["default"] | None = "default", *,
         max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
         pipe_size: int | None = None,
         ) -> _PairContext[_GIPCDuplexHandle, _GIPCDuplexHandle]: ...
@overload
def pipe(duplex: bool,
         encoder: Encoder | Literal["default"] | None = "default",
         decoder: Decoder | Literal["default"] | None = "default", *,
         max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
         pipe_size: int | None = None,
         ) -> (_PairContext[_GIPCReader, _GIPCWriter]
               | _PairContext[_GIPCDuplexHandle, _GIPCDuplexHandle]): ...
def pipe(duplex: bool = False,
         encoder: Encoder | Literal["default"] | None = "default",
         decoder: Decoder | Literal["default"] | None = "default", *,
         max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
         pipe_size: int | None = None,
         ) -> (_PairContext[_GIPCReader, _GIPCWriter]
               | _PairContext[_GIPCDuplexHandle, _GIPCDuplexHandle]):
    """Create a message channel over an OS pipe and return its two handles.

    Messages travel between greenlets of one process or between processes
    (pass a handle to :func:`gipc.start_process`).  ``get()`` and ``put()``
    never block the event loop.

    :arg duplex: False (default): return ``(reader, writer)``.  True: return
        two duplex handles over two pipes; each one's ``put()`` reaches the
        other one's ``get()``.
    :arg encoder: ``'default'`` (pickle, highest protocol), ``None`` (raw:
        ``put()`` takes any C-contiguous buffer and sends its bytes), or a
        callable returning a bytes-like object.
    :arg decoder: ``'default'`` (``pickle.loads``), ``None`` (``get()``
        returns ``bytes``), or a callable taking ``bytes``.
    :arg max_message_size: largest message a reader accepts, in bytes
        (default 4 GiB); see :attr:`_GIPCReader.max_message_size`.
    :arg pipe_size: if given, ask the kernel for pipes of this many bytes
        (``F_SETPIPE_SZ``, best effort, Linux only) and keep that capacity.  By default
        a pipe starts at the kernel's 64 KiB and is grown once to 1 MiB the
        first time a ``put()`` finds it full (see ``gipc._pipesize``).
    :returns: a 2-tuple that also works as a context manager closing both
        handles: ``with gipc.pipe() as (r, w): ...``.
    :raises GIPCError: ``encoder`` or ``decoder`` is not acceptable (before
        any descriptor is created).
    """
    encode = _resolve_codec(encoder, _default_encoder, "encoder")
    decode = _resolve_codec(decoder, _default_decoder, "decoder")
    max_message_size = _check_size(max_message_size)
    pipe_size = _check_pipe_size(pipe_size)
    if not duplex:
        return _PairContext(
            _new_pair(encode, decode, max_message_size, pipe_size))
    r1, w1 = _new_pair(encode, decode, max_message_size, pipe_size)
    try:
        r2, w2 = _new_pair(encode, decode, max_message_size, pipe_size)
    except BaseException:
        w1.close()
        r1.close()
        raise
    return _PairContext((_GIPCDuplexHandle((r1, w2)),
                         _GIPCDuplexHandle((r2, w1))))
