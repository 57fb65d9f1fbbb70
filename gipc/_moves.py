"""Which handles go to a child process, checked before any fork.

Handles and :class:`gipc.Connection` objects given as top-level ``args``
or ``kwargs`` values (both halves of a duplex handle) move: the child owns
them, the parent closes them once the child is started.  Those held
directly as attributes of a :class:`gipc.Process` (a subclass keeping its
connection, as multiprocessing code does) are shared: open in the child
and still open in the parent, as with multiprocessing.  Every other gipc
handle is closed in the child.  Everything is validated first, so that a
bad handle raises before any child exists.
"""
from __future__ import annotations

from typing import Any
from . import _shared
from .connection import Connection
from .exceptions import GIPCError, GIPCLocked
from .handles import _GIPCDuplexHandle, _GIPCHandle, handles_in

_MOVABLE = (_GIPCHandle, _GIPCDuplexHandle, Connection)

_CONTAINERS = (list, tuple, set, frozenset, dict)


def _find_nested(obj: Any, seen: Any) -> Any:
    """Return a handle hidden somewhere inside a built-in container."""
    if id(obj) in seen:
        return None
    seen.add(id(obj))
    items = obj.values() if isinstance(obj, dict) else obj
    for item in items:
        if isinstance(item, _MOVABLE):
            return item
        if isinstance(item, _CONTAINERS):
            found = _find_nested(item, seen)
            if found is not None:
                return found
    return None


def _movable_in(objects: Any) -> Any:
    """The single-end handles and connections among ``objects``."""
    for obj in objects:
        if isinstance(obj, Connection):
            yield obj
        else:
            yield from handles_in((obj,))


def collect_moved_handles(args: Any, kwargs: Any) -> Any:
    """Return the single-end handles and connections that ``args``/
    ``kwargs`` move to a child, after checking that each one may move now.

    :raises GIPCClosed: a handle is closed (or already moved to a child).
    :raises GIPCLocked: a greenlet is inside ``get()``/``put()`` on it.
    :raises GIPCError: a handle belongs to another process, is broken, or
        hides inside a container (it would be closed in the child).
    """
    _shared.note_given(args, kwargs)  # queues and locks: shared, not moved
    if not args and not kwargs:
        return ()
    top_level = list(args) + list(kwargs.values())
    moved = []
    for handle in _movable_in(top_level):
        if handle in moved:
            continue
        _check_can_go(handle)
        moved.append(handle)
    seen: set[Any] = set()
    for value in top_level:
        if isinstance(value, _CONTAINERS) and \
                not isinstance(value, _GIPCDuplexHandle):
            nested = _find_nested(value, seen)
            if nested is not None:
                raise GIPCError(
                    "%r is inside a %s argument: only handles passed directly "
                    "as arguments move to the child (others are closed "
                    "there); pass it as an argument of its own"
                    % (nested, type(value).__name__))
    return tuple(moved)  # usually (), which costs no allocation


def _check_can_go(handle: Any) -> Any:
    handle._validate()
    if handle._lock.locked():
        raise GIPCLocked(
            "Can't pass %s to a child: locked for I/O operation." % handle)


def collect_shared_handles(process_obj: Any, moved: Any) -> Any:
    """Return the single-end handles and connections held directly as
    attributes of ``process_obj`` (not among ``moved``), after checking
    that each one may be shared with a child now.

    :raises GIPCLocked: a greenlet is inside a call on one.
    :raises GIPCError: one belongs to another process or is broken, or has
        received data not yet read (both processes would read it).
    """
    _shared.note_given_attributes(process_obj)
    shared = []
    for handle in _movable_in(vars(process_obj).values()):
        if handle._closed or handle in moved or handle in shared:
            continue
        _check_can_go(handle)
        reader = getattr(handle, "_core", None)
        if reader is not None and reader.buffered:
            raise GIPCError(
                "%r holds received data not yet read: the parent and the "
                "child would both read it; read it first, or pass the "
                "handle in args to move it to the child" % (handle,))
        shared.append(handle)
    return tuple(shared)
