"""Objects shared with child processes: queues, locks and shared values.

Unlike pipe handles, which move, these are open in the parent and in every
child that was given one: through ``Process(args=...)``,
``start_process(args=...)`` or ``kwargs`` (also inside lists, tuples, sets
and dicts there), or as an attribute of a ``Process`` subclass.  Just
before a fork, ``_moves`` tells :func:`note_given` what the child gets; in
the child, every other shared object of the parent is disowned: its
descriptors are closed and any use raises :class:`NotGivenError`.

This module stays small: ``_moves`` imports it on every start, and the
check costs nothing until a shared object exists.
"""
from __future__ import annotations

import os
import sys
import weakref
from typing import TYPE_CHECKING, Any, Tuple

from .exceptions import GIPCError

if TYPE_CHECKING:
    from ._sync import Block

#: Every shared object alive in this process (weakly).
_live: "weakref.WeakSet[SharedObject]" = weakref.WeakSet()

#: ids of the objects the child about to be forked gets, or None.
_given = None
_hooks_installed = False


class NotGivenError(GIPCError):
    """A queue, lock or shared value used in a process that was not given
    it (pass it in ``Process(args=...)`` or as a ``Process`` attribute)."""


class SharingError(GIPCError, RuntimeError):
    """A queue, lock or shared value was pickled (put in a message or a
    queue): it can only reach a child as a ``Process`` argument or
    attribute.  A ``RuntimeError``, as multiprocessing raises."""


class _Unusable:
    """Stands in for the shared memory of a disowned or closed object: any
    use raises a clear error."""

    __slots__ = ("_error",)

    def __init__(self, error: Any) -> None:
        self._error = error

    def __getattr__(self, name: Any) -> Any:
        error, message = self._error
        raise error(message)


class SharedObject:
    """Base of the objects that are shared with children, not moved.

    Subclasses keep their shared memory in ``_block`` (a ``_sync.Block``)
    and list the other shared objects they are made of in ``_parts``.
    """

    # Typed as the Block it is while usable (None before, an _Unusable
    # after: both raise on use).
    _block: Block = None  # type: ignore[assignment]
    _parts: Tuple["SharedObject", ...] = ()

    def _register(self) -> None:
        global _hooks_installed
        if not _hooks_installed:
            # No after_in_parent hook: Python code there would run a
            # signal handler that fires at the fork inside the hook, where
            # CPython swallows its exception (a Ctrl-C lost); gipc's start
            # calls forget_given() itself.
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _hooks_installed = True
        _live.add(self)

    def __reduce__(self) -> Any:
        raise SharingError(
            "%s objects are shared with a child process by passing them to "
            "it (Process(args=...), start_process(args=...), or as an "
            "attribute of a Process subclass); they cannot be pickled, so "
            "not sent in a message or a queue" % type(self).__qualname__)

    def __reduce_ex__(self, protocol: Any) -> Any:
        return self.__reduce__()

    def _release_shared(self, error: Any, message: Any, wake: Any = True) -> None:
        """Give back this process's descriptors and mapping; later uses
        raise ``error(message)``; waits in progress here end (``wake``)."""
        block = self._block
        if isinstance(block, _Unusable):
            return
        self._block = _Unusable(  # type: ignore[assignment]
            (error, message))
        if block is not None:
            if wake:
                from ._bells import wake_local_waiters
                wake_local_waiters(block)
            block.close()

    def _disown(self) -> None:
        self._release_shared(NotGivenError,
                      "this %s was not given to this process: pass it to the "
                      "child in Process(args=...) / start_process(args=...) "
                      "or as an attribute of a Process subclass"
                      % type(self).__qualname__, wake=False)

    def _close_shared(self) -> None:
        """Release the descriptors and memory of this object in this
        process (the other processes keep theirs)."""
        self._release_shared(ValueError,
                             "%s is closed" % type(self).__qualname__)
        for part in self._parts:
            part._close_shared()


_CONTAINERS = (list, tuple, set, frozenset, dict)


def _collect(values: Any, into: Any, depth: Any = 0) -> None:
    for value in values:
        if isinstance(value, SharedObject):
            if id(value) not in into:
                into[id(value)] = value
                _collect(value._parts, into, depth)
        elif isinstance(value, _CONTAINERS) and depth < 8:
            _collect(value.values() if isinstance(value, dict) else value,
                     into, depth + 1)


def note_given(args: Any, kwargs: Any) -> None:
    """Record the shared objects in ``args``/``kwargs`` of the child about
    to be started (called before its fork; replaces what a previous start
    recorded)."""
    global _given
    if not _live:
        _given = None
        return
    given: dict[Any, Any] = {}
    _collect(args, given)
    _collect(kwargs.values(), given)
    _given = given


def note_given_attributes(process_obj: Any) -> None:
    """Add the shared objects held as attributes of ``process_obj``."""
    global _given
    if not _live:
        return
    if _given is None:
        _given = {}
    _collect(vars(process_obj).values(), _given)


def _after_fork_in_child() -> None:
    global _given
    given, _given = _given or {}, None
    bells = sys.modules.get(__package__ + "._bells")
    if bells is not None:
        bells._local_waits.clear()  # the parent's greenlets never run here
    # The objects given keep their inherited memory and descriptors.
    for obj in list(_live):
        if id(obj) not in given:
            obj._disown()


def forget_given() -> None:
    """In the parent, once a start is over (started or failed): what it
    recorded must not leak into a later fork (os.fork, multiprocessing)."""
    global _given
    _given = None
