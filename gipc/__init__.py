"""gipc: gevent-cooperative child processes and inter-process communication.

``gipc.pipe()`` makes message channels whose ``get()``/``put()`` never block
the event loop; ``gipc.start_process()`` forks a child with a fresh gevent
hub.  The public API of gipc 1.8 is kept; the hot paths are in C
(``gipc._core``).

Supported: CPython on Linux and macOS (see the README, "Platforms").
"""
import os as _os
import sys as _sys

if _os.name != "posix" or _sys.platform in ("win32", "cygwin"):
    raise ImportError(
        "gipc does not support %s: it is built on fork() and POSIX pipes "
        "(Linux and macOS only); on Windows, use multiprocessing, or gipc "
        "under WSL" % _sys.platform)
if _sys.implementation.name != "cpython":
    raise ImportError(
        "gipc does not support %s: its core is a CPython C extension (use "
        "CPython 3.10 or newer)" % _sys.implementation.name)

from multiprocessing import active_children, current_process, parent_process

from .connection import Connection, Pipe
from .exceptions import GIPCClosed, GIPCError, GIPCLocked, GIPCProtocolError
from .handles import DEFAULT_MAX_MESSAGE_SIZE
from .pipe import pipe
from .process import Process, _GProcess, start_process
from .wait import wait
from . import gipc  # noqa: E402  (gipc 1.8 layout: gipc.gipc after "import gipc")

__version__ = "2.0.0.dev0"

__all__ = [
    "pipe",
    "start_process",
    "Process",
    "Pipe",
    "Connection",
    "wait",
    "current_process",
    "parent_process",
    "active_children",
    "GIPCError",
    "GIPCClosed",
    "GIPCLocked",
    "GIPCProtocolError",
    "DEFAULT_MAX_MESSAGE_SIZE",
]
