"""Which process owns which handle.

A handle belongs to one process: the one that created it, or the child it
was passed to by ``start_process``.  This module keeps the list of the
current process's open handles (gipc 1.8's ``_all_handles``) and the pid of
the current process, refreshed after every fork so that the per-call
ownership check costs a comparison, not a system call.
"""
import os
from typing import Any, Callable, Iterable

#: pid of the current process, kept fresh across fork().
pid = os.getpid()

#: Open handles owned by the current process (creation order).
all_handles: list[Any] = []


def _refresh_pid(getpid: Callable[[], int] = os.getpid) -> None:
    # getpid bound here: in a child this runs cold, where reading os.getpid
    # would write to the pages of the module, its dict and the name.
    global pid
    pid = getpid()


os.register_at_fork(after_in_child=_refresh_pid)


def register(handle: Any) -> None:
    """Record a newly opened handle of this process."""
    all_handles.append(handle)


def unregister(handle: Any) -> None:
    """Forget a handle that was closed (tolerates one never registered)."""
    try:
        all_handles.remove(handle)
    except ValueError:
        pass


def get_all_handles() -> list[Any]:
    """Return a copy of the list of this process's open handles."""
    return list(all_handles)


def set_all_handles(handles: Iterable[Any]) -> None:
    """Replace the list of this process's open handles."""
    global all_handles
    all_handles = list(handles)
