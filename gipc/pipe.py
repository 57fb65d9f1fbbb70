"""``gipc.pipe()``: make the handles of a message channel."""
import functools
import os
import pickle

from . import _core, _pipesize
from .exceptions import GIPCError
from .handles import (
    DEFAULT_MAX_MESSAGE_SIZE, _check_size, _GIPCDuplexHandle, _GIPCReader,
    _GIPCWriter, _PairContext)

_default_encoder = functools.partial(pickle.dumps,
                                     protocol=pickle.HIGHEST_PROTOCOL)
_default_decoder = pickle.loads


def _resolve_codec(codec, default, kind):
    """'default' -> pickle, None -> raw bytes (no codec), callable -> itself."""
    if isinstance(codec, str) and codec == "default":
        return default
    if codec is None:
        return None
    if callable(codec):
        return codec
    raise GIPCError("pipe '%s' argument must be callable." % kind)


def _check_pipe_size(pipe_size):
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


def _os_pipe(pipe_size):
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


def _new_pair(encoder, decoder, max_message_size, pipe_size):
    r, w = _os_pipe(pipe_size)
    try:
        reader = _GIPCReader(r, decoder, max_message_size)
    except BaseException:
        os.close(r)
        os.close(w)
        raise
    try:
        writer = _GIPCWriter(w, encoder)
    except BaseException:
        reader.close()
        os.close(w)
        raise
    if pipe_size is not None:
        writer._may_grow = False  # the caller chose the capacity
    return reader, writer


def pipe(duplex=False, encoder="default", decoder="default", *,
         max_message_size=DEFAULT_MAX_MESSAGE_SIZE, pipe_size=None):
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
    encoder = _resolve_codec(encoder, _default_encoder, "encoder")
    decoder = _resolve_codec(decoder, _default_decoder, "decoder")
    max_message_size = _check_size(max_message_size)
    pipe_size = _check_pipe_size(pipe_size)
    if not duplex:
        return _PairContext(
            _new_pair(encoder, decoder, max_message_size, pipe_size))
    r1, w1 = _new_pair(encoder, decoder, max_message_size, pipe_size)
    try:
        r2, w2 = _new_pair(encoder, decoder, max_message_size, pipe_size)
    except BaseException:
        w1.close()
        r1.close()
        raise
    return _PairContext((_GIPCDuplexHandle((r1, w2)),
                         _GIPCDuplexHandle((r2, w1))))
