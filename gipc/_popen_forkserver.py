"""The "forkserver" start method: the forkserver (``_forkserver``) forks
the child, which runs as a spawn child does from its payload (``_spawn``).

The child is not this process's child, so it is neither waited for nor
reaped here: the sentinel is the read end of its status pipe, on which
the server writes the exit code once it has reaped it (readable then, as
a pidfd is when its process exits).
"""
from __future__ import annotations

import os
import signal
from typing import Any

from . import _forkserver, _log, _spawn
from ._cooperate import READ, FdWaiter, check_timeout, close_fd, fd_readable
from ._popen_base import UNKNOWN_EXIT_CODE, BasePopen
from ._popen_spawn import parent_sentinel


class _DupFd:
    """multiprocessing's handle of a descriptor sent to a forkserver child
    (``Popen.duplicate_for_child``): its index in the received ones."""

    def __init__(self, index: int) -> None:
        self.index = index

    def detach(self) -> int:
        """The descriptor, in the child."""
        return _spawn.received_fds[self.index]


class Popen(BasePopen):
    """Have the forkserver fork a child for ``process_obj``; watch it
    through its status pipe.  The gipc handles in ``kept`` are passed to
    the child."""

    method = "forkserver"
    DupFd = _DupFd
    _passed: list[int]

    def __init__(self, process_obj: Any, kept: Any = ()) -> None:
        payload, passed = _spawn.start_payload(process_obj, kept, self)
        self._forked = [0, -1]
        status_r, status_w = os.pipe()
        data_r, data_w = os.pipe()
        to_close = [status_w, data_r]
        try:
            sentinel, close_it = parent_sentinel()
            if close_it:
                to_close.append(sentinel)
            os.set_blocking(status_r, False)
            self.sentinel = status_r  # closed by close(), whatever happens
            pid = _forkserver.start_child(
                [status_w, data_r, sentinel, *passed], status_r)
            self._forked[0] = self.pid = pid
            for fd in to_close:
                close_fd(fd)
            to_close = []
            os.set_blocking(data_w, False)
            fd, data_w = data_w, -1
            _spawn.write_payload(fd, payload)
        except BaseException:
            for fd in to_close + [data_w]:
                if fd >= 0:
                    _close_quietly(fd)
            self._abandon()
            raise
        del self._forked

    def duplicate_for_child(self, fd: int) -> int:
        """multiprocessing's seam: ``fd`` goes to the child; returns its
        index among the descriptors the child receives."""
        return _spawn.FIRST_PASSED + _spawn.record_passed(self, fd)

    def _poll(self, spin_us: Any) -> Any:
        if self.returncode is None and self.sentinel is not None and \
                fd_readable(self.sentinel):
            code: int | None
            try:
                data = _forkserver.read_exact(self.sentinel, 4, wait=False)
            except EOFError:
                # The server died before it could tell.
                code = UNKNOWN_EXIT_CODE
            else:
                code = None if data is None else \
                    int.from_bytes(data, "big", signed=True)
            if code is not None:
                self.returncode = code
                _log.debug("child %d exited with code %d", self.pid, code)
        return self.returncode

    def wait(self, timeout: Any = None) -> Any:
        """Wait cooperatively for the child to exit; return its exit code,
        or None if ``timeout`` seconds passed first."""
        if self.returncode is not None:
            return self.returncode
        timeout = check_timeout(timeout)
        if self._poll(0) is None and self.sentinel is not None:
            waiter = FdWaiter(self.sentinel, READ)
            try:
                if not waiter.wait(timeout):
                    return None
            finally:
                waiter.close()
        return self._poll(0)

    def _send_signal(self, sig: Any) -> None:
        # By pid, while the server has not reported the exit (it reports
        # right after reaping, so the pid is still the child's unless the
        # report is in flight).
        if self.returncode is None and self.sentinel is not None and \
                self._poll(0) is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def _abandon(self) -> None:
        pid, _ = self.__dict__.pop("_forked", None) or (0, -1)
        if pid > 0:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.close()


def _close_quietly(fd: int) -> None:
    if fd < 0:
        return
    try:
        close_fd(fd)
    except OSError:
        pass
