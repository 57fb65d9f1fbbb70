"""The /dev/null file that gipc children get as ``sys.stdin``."""
from typing import Any
import os
import stat

_devnull = None      # the text file given to children as sys.stdin
_devnull_fd = -1     # its descriptor, owned by this module, never closed
_devnull_rdev = None


def shared_devnull() -> Any:
    """The text file on /dev/null that children get as ``sys.stdin``.

    multiprocessing opens one in every child; gipc opens one per process
    and keeps it (one descriptor for the life of the program), because
    building a file object costs dozens of page faults on each side of a
    fork.  As multiprocessing's, the file does not own its descriptor
    (``closefd=False``), so closing ``sys.stdin`` in a child closes nothing.
    It is checked on every use: a closed file object is rebuilt, and if the
    program closed the descriptor (whose number may now name another file),
    a new one is opened.
    """
    global _devnull, _devnull_fd
    if not _is_devnull(_devnull_fd):
        _devnull_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        _devnull = None
    if _devnull is None or _devnull.closed:
        _devnull = open(_devnull_fd, encoding="utf-8", closefd=False)
    return _devnull


def _is_devnull(fd: Any) -> Any:
    global _devnull_rdev
    if fd < 0:
        return False
    try:
        status = os.fstat(fd)
        if _devnull_rdev is None:
            _devnull_rdev = os.stat(os.devnull).st_rdev
    except OSError:
        return False
    return stat.S_ISCHR(status.st_mode) and status.st_rdev == _devnull_rdev
