"""Which popen starts a child: one per start method.

As with multiprocessing, a process object does not know how its child is
started: ``Process._Popen`` asks :func:`popen_class` for the popen of the
process's start method (its ``_start_method``; None means the default)
and lets it start the child.  gipc has one start method today, "fork"
(``_popen_fork``); what a popen does once its child runs is the same for
every method (``_popen_base``).  Another method ("spawn", "forkserver")
is one more module and one more entry in :data:`_POPENS`.
"""
from typing import Any
from . import _popen_fork

#: The start method of a process whose ``_start_method`` is None.
DEFAULT_START_METHOD = "fork"

# Start method name -> popen class, called as cls(process_obj, kept).
_POPENS = {"fork": _popen_fork.Popen}


def start_methods() -> Any:
    """The names of the start methods gipc has, the default first."""
    return [DEFAULT_START_METHOD] + [
        name for name in _POPENS if name != DEFAULT_START_METHOD]


def popen_class(method: Any = None) -> Any:
    """The popen class of the start method ``method`` (None: the default).

    :raises ValueError: gipc has no such start method.
    """
    try:
        return _POPENS[DEFAULT_START_METHOD if method is None else method]
    except (KeyError, TypeError):
        raise ValueError("gipc has no start method %r (it has: %s)" % (
            method, ", ".join(start_methods()))) from None
