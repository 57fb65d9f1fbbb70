"""What a child inherits: the ``close_fds`` and ``pass_fds`` arguments of
``Process`` and ``start_process()``, checked before any child exists, and
the descriptors a child started with ``close_fds=True`` keeps.

Under fork, such a child keeps stdin, stdout and stderr, the gipc handles
and shared objects given to it, the descriptors in ``pass_fds`` and what
gipc needs there; the C fork helper (``csrc/inherit.c``) replaces every
other descriptor by /dev/null before any Python code runs in the child,
rather than closing it: a stale Python object of the parent's (a socket
object) may still hold its number, and must never reach an unrelated file
that is opened there later.
"""
from __future__ import annotations

import operator
import os
import struct
import sys
from typing import Any, Iterable

from ._cooperate import READ, FdWaiter, close_fd, fd_readable

# A C int: the largest descriptor number there can be.
_FD_MAX = 2**31 - 1

# What a child that could not set up writes to the report pipe: its errno
# and the descriptor it failed on (-1: it could not find its descriptors),
# two native ints (csrc/inherit.c).
_REPORT = struct.Struct("=ii")


def check_close_fds(close_fds: Any) -> bool:
    """``close_fds`` as a bool.

    :raises TypeError: it is not a bool (or an int).
    """
    if not isinstance(close_fds, int):
        raise TypeError("close_fds must be a bool, not %s"
                        % type(close_fds).__name__)
    return bool(close_fds)


def check_pass_fds(pass_fds: Any) -> tuple[int, ...]:
    """``pass_fds`` as a sorted tuple of distinct descriptor numbers.

    :raises TypeError: it is not an iterable of ints.
    :raises ValueError: one of them is negative (or beyond a C int).
    """
    if isinstance(pass_fds, (str, bytes, bytearray)):
        raise TypeError("pass_fds must be an iterable of descriptors "
                        "(ints), not %s" % type(pass_fds).__name__)
    try:
        items = iter(pass_fds)
    except TypeError:
        raise TypeError("pass_fds must be an iterable of descriptors "
                        "(ints), not %s" % type(pass_fds).__name__) from None
    fds = set()
    for item in items:
        if isinstance(item, bool):
            raise TypeError("pass_fds: %r is not a descriptor" % (item,))
        try:
            fd = operator.index(item)
        except TypeError:
            raise TypeError("pass_fds must hold descriptors (ints), not %s"
                            % type(item).__name__) from None
        if fd < 0 or fd > _FD_MAX:
            raise ValueError("pass_fds: %d is not a descriptor number "
                             "(0 to %d)" % (fd, _FD_MAX))
        fds.add(fd)
    return tuple(sorted(fds))


def _shared_object_fds(given: Any) -> list[int]:
    """The descriptors of the queues, locks and shared values the child is
    given (``_shared``'s record of this start)."""
    fds: list[int] = []
    for obj in given.values():
        fds_of = getattr(getattr(obj, "_block", None), "fds", None)
        if fds_of is not None:
            fds.extend(fds_of())
    return fds


def fds_to_keep(process_obj: Any, kept: Iterable[Any], stdin: Any,
                gipc_fds: Iterable[int] = ()) -> list[int]:
    """The descriptors a child of ``process_obj`` started with
    ``close_fds=True`` keeps, besides 0, 1, 2 and the fork helper's own:
    those of the handles ``kept``, of the shared objects it is given, of
    ``stdin`` (the file that becomes its ``sys.stdin``), ``gipc_fds``
    (what the start method needs there) and its ``pass_fds``."""
    fds = list(process_obj._pass_fds)
    fds.extend(gipc_fds)
    for handle in kept:
        fd = getattr(handle, "_fd", None)
        if fd is not None:
            fds.append(fd)
    from . import _shared
    if _shared._given:
        fds.extend(_shared_object_fds(_shared._given))
    if stdin is not None:
        fds.append(stdin.fileno())
    # multiprocessing's resource tracker, if this process started one: a
    # child that makes a multiprocessing semaphore or shared memory
    # registers it there.
    tracker = sys.modules.get("multiprocessing.resource_tracker")
    tracker_fd = getattr(getattr(tracker, "_resource_tracker", None),
                         "_fd", None)
    if isinstance(tracker_fd, int) and tracker_fd >= 0:
        fds.append(tracker_fd)
    return fds


def report_pipe() -> list[int]:
    """The pipe on which a ``close_fds`` child reports, ``[read end, write
    end]`` (close-on-exec, as Python makes every pipe): the fork helper
    closes both ends in the child once the descriptors are replaced, or
    writes what failed.  An end closed in the parent becomes -1 here."""
    return list(os.pipe())


def close_report_pipe(report: list[int]) -> None:
    """Close what is still open of the report pipe in the parent."""
    for i, fd in enumerate(report):
        if fd >= 0:
            report[i] = -1
            close_fd(fd)


def await_child_setup(report: list[int]) -> None:
    """In the parent, right after the fork: close the report pipe's write
    end, wait on the hub for the child's report (EOF once its descriptors
    are replaced: a few system calls of the child), close the read end.

    :raises OSError: the child could not replace a descriptor; it ran no
        Python code and has exited (the caller reaps it).
    """
    read_end, write_end = report
    report[1] = -1
    close_fd(write_end)
    try:
        if not fd_readable(read_end):
            waiter = FdWaiter(read_end, READ)
            try:
                waiter.wait(None)  # bounded: the child closes it or dies
            finally:
                waiter.close()
        data = os.read(read_end, _REPORT.size)
    finally:
        report[0] = -1
        close_fd(read_end)
    if data:
        raise _setup_error(data)


def _setup_error(data: bytes) -> OSError:
    if len(data) != _REPORT.size:
        return OSError("close_fds: the child's report on its descriptors "
                       "was cut short; it did not run")
    error, fd = _REPORT.unpack(data)
    if fd < 0:
        what = "could not find its open descriptors"
    else:
        what = "could not replace descriptor %d by /dev/null" % fd
    return OSError(error, "close_fds: the child %s (%s); it did not run"
                   % (what, os.strerror(error)))
