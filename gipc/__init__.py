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
from .exceptions import (
    GIPCClosed, GIPCError, GIPCLocked, GIPCProtocolError, WorkerLostError)
from .handles import DEFAULT_MAX_MESSAGE_SIZE
from .pipe import pipe
from .process import Process, _GProcess, start_process
from .wait import wait
from . import gipc  # noqa: E402  (gipc 1.8 layout: gipc.gipc after "import gipc")

__version__ = "2.0.0.dev0"

from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    # What the lazy names below resolve to, for type checkers ("X as X":
    # re-exported).
    from ._shared import NotGivenError as NotGivenError
    from .context import get_all_start_methods as get_all_start_methods
    from .context import get_context as get_context
    from .context import get_start_method as get_start_method
    from .context import set_start_method as set_start_method
    from .futures import ProcessPoolExecutor as ProcessPoolExecutor
    from .futures import as_completed as as_completed
    from .futures import futures_wait as futures_wait
    from .pool import Pool as Pool
    from .queues import JoinableQueue as JoinableQueue
    from .queues import Queue as Queue
    from .queues import SimpleQueue as SimpleQueue
    from .sharedctypes import Array as Array
    from .sharedctypes import RawArray as RawArray
    from .sharedctypes import RawValue as RawValue
    from .sharedctypes import Value as Value
    from .synchronize import Barrier as Barrier
    from .synchronize import BoundedSemaphore as BoundedSemaphore
    from .synchronize import Condition as Condition
    from .synchronize import Event as Event
    from .synchronize import Lock as Lock
    from .synchronize import OwnerDiedError as OwnerDiedError
    from .synchronize import RLock as RLock
    from .synchronize import Semaphore as Semaphore

# Queues, locks, shared values and the pools, imported on first use: a
# program that never uses them does not map them into every fork.
_LAZY = {
    "Queue": "queues", "SimpleQueue": "queues", "JoinableQueue": "queues",
    "Lock": "synchronize", "RLock": "synchronize",
    "Semaphore": "synchronize", "BoundedSemaphore": "synchronize",
    "Event": "synchronize", "Condition": "synchronize",
    "Barrier": "synchronize", "OwnerDiedError": "synchronize",
    "NotGivenError": "_shared",
    "Value": "sharedctypes", "Array": "sharedctypes",
    "RawValue": "sharedctypes", "RawArray": "sharedctypes",
    # The pools: concurrent.futures imports logging, whose fork hooks would
    # then run in every start of every program.
    "Pool": "pool", "ProcessPoolExecutor": "futures",
    "futures_wait": "futures", "as_completed": "futures",
    # Start methods (see gipc.context).
    "get_context": "context", "get_start_method": "context",
    "set_start_method": "context", "get_all_start_methods": "context",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError("module 'gipc' has no attribute %r" % name)
    import importlib
    value = getattr(importlib.import_module("." + module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
    "WorkerLostError",
    *_LAZY,
]
