"""Pipe capacity: a pipe that fills up is grown once, within a budget.

A kernel pipe holds 64 KiB by default; a large message then crosses it in
64 KiB slices, each costing a wake-up of the reader and of the writer.  The
first time a ``put()`` finds a pipe full, gipc asks the kernel for
``GROWN_SIZE`` (``F_SETPIPE_SZ``, best effort).  Quiet pipes keep the
default, so thousands of idle channels cost no more kernel memory.

Unprivileged users have a soft limit on the pipe memory all their processes
hold (``/proc/sys/fs/pipe-user-pages-soft``, 64 MiB by default); beyond it
the kernel gives *every* new pipe of that user only two pages.  So a process
that is not root grows at most as many pipes at once as fit in an eighth of
that limit (8 by default) and leaves the rest of it to everybody else.

Pipe capacities can be changed on Linux only: elsewhere (and in a portable
build, see ``gipc._core.PORTABLE``) a pipe keeps the size it was made with.
"""
import fcntl
import os

from . import _core, _log

#: Whether pipe capacities can be changed here (F_SETPIPE_SZ).
CAN_RESIZE = not _core.PORTABLE and hasattr(fcntl, "F_SETPIPE_SZ")

#: Capacity asked for when a pipe fills up (the default pipe-max-size).
GROWN_SIZE = 1 << 20

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _budget() -> int | None:
    """How many pipes this process may hold grown at once (None: any)."""
    if os.geteuid() == 0:
        return None  # CAP_SYS_RESOURCE: the soft limit does not apply
    try:
        with open("/proc/sys/fs/pipe-user-pages-soft") as f:
            soft_pages = int(f.read())
    except (OSError, ValueError):
        return 0
    if soft_pages == 0:
        return None
    return soft_pages * _PAGE // 8 // GROWN_SIZE


_allowed = _budget()
# Grown pipe ends held open.  Inherited as is by a child: a gipc child
# closes the ends it was not given, which releases their count.
_grown = 0


def set_size(fd: int, size: int) -> bool:
    """Ask for a pipe capacity of ``size`` bytes; False if refused (not a
    pipe, over a limit, no F_SETPIPE_SZ)."""
    if not CAN_RESIZE:
        return False
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except OSError:
        return False
    return True


def grow(fd: int) -> bool:
    """Grow the pipe of ``fd`` to GROWN_SIZE if the budget allows.  Returns
    True if it was grown (the caller calls :func:`release` when it closes
    the descriptor)."""
    global _grown
    if not CAN_RESIZE or (_allowed is not None and _grown >= _allowed):
        return False
    try:
        if fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) >= GROWN_SIZE:
            return False
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, GROWN_SIZE)
    except OSError:
        return False  # not a pipe (a socket), or over a limit
    _grown += 1
    _log.debug("grew the pipe of descriptor %d to %d bytes", fd, GROWN_SIZE)
    return True


def release() -> None:
    """A grown pipe end was closed."""
    global _grown
    if _grown > 0:
        _grown -= 1

