"""gipc 1.8's module layout, kept so that code written for it (and its test
suite) runs unchanged: ``gipc.gipc.pipe``, ``start_process``, the handle
classes, ``_GProcess``, ``_get_all_handles``/``_set_all_handles`` and
``_signals_to_reset``."""
from ._ownership import get_all_handles as _get_all_handles
from ._ownership import set_all_handles as _set_all_handles
from .exceptions import GIPCClosed, GIPCError, GIPCLocked, GIPCProtocolError
from .handles import (
    _GIPCDuplexHandle, _GIPCHandle, _GIPCReader, _GIPCWriter, _PairContext)
from .pipe import pipe
from .process import _GProcess, start_process
from .signals import _signals_to_reset

__all__ = [
    "pipe", "start_process", "GIPCError", "GIPCClosed", "GIPCLocked",
    "GIPCProtocolError", "_GIPCHandle", "_GIPCReader", "_GIPCWriter",
    "_GIPCDuplexHandle", "_PairContext", "_GProcess", "_get_all_handles",
    "_set_all_handles", "_signals_to_reset",
]


def __getattr__(name: str) -> object:
    # gipc 1.8 kept the registry in a module global; read the live list.
    if name == "_all_handles":
        from . import _ownership
        return _ownership.all_handles
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
