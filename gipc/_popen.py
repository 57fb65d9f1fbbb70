"""Which popen starts a child: one per start method.

As with multiprocessing, a process object does not know how its child is
started: ``Process._Popen`` asks :func:`popen_class` for the popen of the
process's start method (its ``_start_method``; None means gipc's default,
see :func:`set_default_start_method`) and lets it start the child.  What a
popen does once its child runs is the same for every method
(``_popen_base``).  The popen modules of "spawn" and "forkserver" are
imported on first use: a program that only forks never loads them.
"""
from __future__ import annotations

import importlib
from typing import Any

from . import _popen_fork

#: Every start method gipc has, the default of a new program first.
START_METHODS = ("fork", "spawn", "forkserver")

# Start method name -> module of its popen class (``Popen``).
_MODULES = {"fork": "_popen_fork", "spawn": "_popen_spawn",
            "forkserver": "_popen_forkserver"}

# Start method name -> popen class, called as cls(process_obj, kept);
# filled on first use of each method.
_POPENS: dict[str, Any] = {"fork": _popen_fork.Popen}

_default = "fork"

#: True while a spawn or forkserver child runs its parent's main module
#: (as ``__mp_main__``): a start then would start children without end.
importing_main = False


def start_methods() -> list[str]:
    """The names of the start methods gipc has, the default first."""
    return [_default] + [name for name in START_METHODS if name != _default]


def check_method(method: Any) -> str:
    """``method`` if gipc has such a start method.

    :raises ValueError: gipc has no such start method.
    """
    if not isinstance(method, str) or method not in _MODULES:
        raise ValueError("gipc has no start method %r (it has: %s)" % (
            method, ", ".join(START_METHODS)))
    return method


def default_start_method() -> str:
    """The start method of a process whose ``_start_method`` is None."""
    return _default


def set_default_start_method(method: str) -> None:
    """Make ``method`` gipc's default start method."""
    global _default
    _default = check_method(method)


def popen_class(method: Any = None) -> Any:
    """The popen class of the start method ``method`` (None: the default).

    :raises ValueError: gipc has no such start method.
    :raises RuntimeError: called while a spawn or forkserver child imports
        its parent's main module.
    """
    if importing_main:
        raise RuntimeError(
            "a child process was started while this spawn or forkserver "
            "child was importing its parent's main module: start children "
            "under `if __name__ == \"__main__\":` in the main module (as "
            "with multiprocessing's spawn)")
    if method is None:
        method = _default
    try:
        return _POPENS[method]
    except (KeyError, TypeError):
        pass
    module = importlib.import_module(
        "." + _MODULES[check_method(method)], __package__)
    cls = _POPENS[method] = module.Popen
    return cls
