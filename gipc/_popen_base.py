"""What every gipc "popen" does once its child exists, whatever the start
method: watch the child, reap it, report its exit status, signal it.

``multiprocessing.process.BaseProcess`` delegates everything about the OS
process to a popen object (``poll``, ``wait``, ``terminate``, ``kill``,
``close``, ``sentinel``).  gipc's popens watch their child through its
pidfd on the gevent hub, then reap exactly that child through the same
pidfd: no SIGCHLD handler, no ``waitpid(-1)``, so the exit statuses of
other children of the program (multiprocessing, subprocess) are never
stolen.

Where there are no pidfds (Linux before 5.3, macOS, a portable build, or
``GIPC_NO_PIDFD=1``: see :data:`USE_PIDFDS`), the sentinel is the read end
of a pipe whose write end only the child holds: it reports EOF when the
child exits, and the child is then reaped by pid (``waitpid(pid,
WNOHANG)``, retried on the hub for the instant between the child's
descriptors closing and its becoming a zombie).

Where libev's SIGCHLD handler reaps every child (gevent's child
watchers), a libev child watcher catches the status.

A start method's popen (``_popen_fork``) starts the child and hands it
over with :meth:`BasePopen._watch`.
"""
from typing import Any
import os
import signal
import sys
import warnings
from time import monotonic

import gevent

from . import _child, _core, _log
from ._cooperate import READ, FdWaiter, check_timeout, close_fd, fd_readable
from .exceptions import GIPCError

_modules = sys.modules

# Exit code reported when something else in the program reaped our child
# (see README, "Child processes and other reapers").
UNKNOWN_EXIT_CODE = 255

# After the sentinel's EOF, the reap is retried in C for _REAP_SPIN_US
# (yielding the CPU, which the exiting child may need), with a turn of the
# hub between tries, _REAP_SPINS times (a child needs some 20 us from
# closing its descriptors to being a zombie); then on the hub's timers, up
# to every _REAP_RETRY_MAX, for a child that closed its sentinel itself
# and lives on.
_REAP_SPIN_US = 200
# poll() of a child whose sentinel is readable (is_alive() right after
# wait()) waits up to this long for it to become a zombie.
_REAP_POLL_SPIN_US = 1000
_REAP_SPINS = 10
_REAP_RETRY_FIRST = 0.001
_REAP_RETRY_MAX = 0.05


def _pidfds_work() -> bool:
    """Whether to watch children through pidfds: compiled in, not turned
    off by ``GIPC_NO_PIDFD=1`` (a testing aid), and pidfd_open() works in
    this kernel (Linux 5.3+; a seccomp filter may refuse it too)."""
    if os.environ.get("GIPC_NO_PIDFD") == "1" or not _core.HAVE_PIDFD:
        return False
    try:
        fd = _core.pidfd_open(os.getpid())
    except OSError:
        return False
    if fd < 0:
        return False
    close_fd(fd)
    return True


#: True: children are watched through pidfds; False: through sentinel
#: pipes.  Decided once, at import.
USE_PIDFDS = _pidfds_work()


def _pidfds_gone() -> Any:
    return GIPCError("pidfd_open() stopped working in this process; cannot "
                     "watch the child")


class BasePopen:
    """The parent's side of one child: its pid, its pidfd (``sentinel``),
    and once it is reaped, its exit code (``returncode``).

    A subclass starts the child in ``__init__``: it sets ``_forked`` to
    ``[0, -1]`` before the child can exist (its start fills in ``[pid,
    pidfd]``, so that :meth:`_abandon` finds a child whose start was
    interrupted), calls :meth:`_watch` once the child runs, and
    :meth:`_abandon` if the start fails.
    """

    method = "gipc"
    returncode = None
    sentinel: int | None = None
    _forked: list[int]
    _status_watcher = None
    # What the start made for the child (its plan), freed once the child
    # is gone: freeing it while the child shares its pages would copy them.
    _plan = None
    #: Whether a handle that moved to the child leaves the end of its
    #: teardown in the parent until the child is gone (see
    #: ``Endpoint._close_moved``): where the child shares the parent's
    #: pages (fork).
    defers_moved_teardown = False
    # The handles that moved to the child whose teardown waits for it to
    # be gone (set by Process.start, finished by _release_start).
    _moved: Any = ()

    def _watch(self, started: Any, watch_status: Any) -> Any:
        """Take over the child the start made: ``started`` is the
        ``_forked`` list, ``[pid, pidfd]``.  With ``watch_status``, start a
        libev child watcher for it (see :func:`libev_reaps_children`)."""
        pid, pidfd = started
        if pidfd < 0:
            del self._forked  # the start killed and reaped it
            raise _pidfds_gone()
        # As with multiprocessing, the sentinel stays valid until close()
        # or until this object is collected (__del__, not
        # weakref.finalize, which costs dozens of page writes).
        self.pid, self.sentinel = started
        if watch_status:
            self._status_watcher = _status_watcher(pid)

    def __del__(self) -> None:
        self.close()

    def _abandon(self) -> None:
        """Kill, reap and forget a child whose start was interrupted (the
        caller gets no process object, so no child may live on)."""
        pid, pidfd = self.__dict__.pop("_forked", None) or (0, -1)
        if pid > 0:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        if pidfd >= 0 and pidfd != self.sentinel:
            _close_quietly(pidfd)
        self.close()

    def poll(self, flag: Any = os.WNOHANG) -> Any:
        """The exit code if the child has exited (reaping it), else None."""
        if self.returncode is None and flag == 0:
            return self.wait()
        return self._poll(0)

    def _poll(self, spin_us: Any) -> Any:
        if self.returncode is None:
            try:
                if self.sentinel is None or not USE_PIDFDS:
                    code = _core.reap(self.pid, -1, spin_us)
                    if (code is None and not spin_us
                            and self.sentinel is not None
                            and fd_readable(self.sentinel)):
                        # Exiting (see _REAP_SPIN_US): as on the pidfd
                        # path, a child whose sentinel is readable is gone.
                        code = _core.reap(self.pid, -1, _REAP_POLL_SPIN_US)
                else:
                    code = _core.reap(self.pid, self.sentinel)
            except ChildProcessError:
                code = self._reaped_elsewhere()
            if code is not None:
                self.returncode = code
                if "logging" in _modules:  # _log logs only then
                    _log.debug("child %d exited with code %d", self.pid, code)
                if self._status_watcher is not None:
                    self._drop_status_watcher()
                self._release_start()
        return self.returncode

    def _reaped_elsewhere(self) -> Any:
        # Someone else collected the status (waitpid(-1) in a SIGCHLD
        # handler).  If that was libev's, behind gevent's child watchers,
        # our child watcher got the status.  Otherwise the sentinel still
        # tells whether the child has gone, but its status is lost.
        watcher = self._status_watcher
        if watcher is not None and watcher.rpid == self.pid:
            return os.waitstatus_to_exitcode(watcher.rstatus)
        if self.sentinel is None or not fd_readable(self.sentinel):
            return None
        warnings.warn(
            "the exit status of gipc child %d was collected by another "
            "reaper (gevent child watchers?); reporting exit code %d"
            % (self.pid, UNKNOWN_EXIT_CODE), RuntimeWarning, stacklevel=3)
        return UNKNOWN_EXIT_CODE

    def wait(self, timeout: Any = None) -> Any:
        """Wait cooperatively for the child to exit; return its exit code,
        or None if ``timeout`` seconds passed first."""
        if self.returncode is not None:
            return self.returncode
        if timeout is not None:
            timeout = check_timeout(timeout)
        # _poll(0), not poll(): the same, one call less on the way to the
        # hub (each call the parent makes while its child runs writes
        # pages that are then copied).
        if self._poll(0) is None:
            deadline = None if timeout is None else monotonic() + timeout
            waiter = FdWaiter(self.sentinel, READ)  # type: ignore[arg-type]
            try:
                if not waiter.wait(timeout):
                    return None
            finally:
                waiter.close()
            if not USE_PIDFDS:
                return self._reap_after_eof(deadline)
        return self._poll(0)

    def _reap_after_eof(self, deadline: Any) -> Any:
        # The sentinel's EOF comes as the child's descriptors close, a
        # moment before the child becomes a zombie (see _REAP_SPIN_US).
        code = self._poll(_REAP_SPIN_US)
        spins = _REAP_SPINS - 1
        delay = _REAP_RETRY_FIRST
        while code is None:
            if deadline is not None:
                left = deadline - monotonic()
                if left <= 0:
                    return None
                delay = min(delay, left)
            if spins > 0:
                spins -= 1
                gevent.sleep(0)
                code = self._poll(_REAP_SPIN_US)
            else:
                gevent.sleep(delay)
                delay = min(delay * 2, _REAP_RETRY_MAX)
                code = self.poll()
        return code

    def _send_signal(self, sig: Any) -> None:
        if self.returncode is None and self.sentinel is not None:
            if USE_PIDFDS:
                try:
                    signal.pidfd_send_signal(self.sentinel, sig)
                except ProcessLookupError:
                    pass
            # By pid: only while the pid is still our child's (unreaped;
            # the poll reaps a zombie, so the pid is never reused here).
            elif self.poll() is None:
                try:
                    os.kill(self.pid, sig)
                except ProcessLookupError:
                    pass

    def terminate(self) -> None:
        """Send SIGTERM unless the child is known to have exited."""
        self._send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Send SIGKILL unless the child is known to have exited."""
        self._send_signal(signal.SIGKILL)

    def _release_start(self) -> None:
        """The child is gone (or this object is closed): free what its
        start kept until then."""
        self._plan = None
        moved = self._moved
        if moved:
            self._moved = ()
            for handle in moved:
                handle._finish_moved()

    def close(self, _close: Any = close_fd) -> None:
        """Release the sentinel (pidfd or pipe)."""
        self._release_start()
        self._drop_status_watcher()
        fd, self.sentinel = self.sentinel, None
        if fd is not None:
            try:
                _close(fd)
            except OSError:
                pass

    def _drop_status_watcher(self) -> None:
        watcher, self._status_watcher = self._status_watcher, None
        if watcher is not None:
            try:
                watcher.close()
            except Exception:  # at interpreter exit, gevent may be gone
                pass

    def _forget_in_child(self) -> None:
        # In a child: this popen and its pidfd belong to the parent, and
        # its child watcher to the parent's loop (parked: not ours to
        # close).
        _child.park(self._status_watcher)
        self._status_watcher = None
        if self._moved:
            # The parent's to finish, not this child's.
            _child.park(self._moved)
            self._moved = ()
        self.close()
        self.returncode = UNKNOWN_EXIT_CODE


def libev_reaps_children() -> Any:
    """Whether libev's SIGCHLD handler is installed.

    gevent's child watchers (gevent.subprocess, a monkey-patched
    os.waitpid) install it; it reaps every child with waitpid(-1) and hands
    each status only to the child watchers of that pid.  Asked of the
    kernel (sigaction, then which shared object holds the handler): it is
    installed from C, invisible to the signal module.  Asked before a
    start, so that the child watcher starts before the hub runs again.
    """
    handler_file = _core.sigchld_handler_file()
    if not handler_file:
        return False
    loop = gevent.get_hub().loop
    loop_module = sys.modules.get(type(loop).__module__)
    loop_file = getattr(loop_module, "__file__", None)
    # libev's handler lives in the extension of gevent's loop.
    return loop_file is not None and os.path.dirname(
        os.path.realpath(handler_file)) == os.path.dirname(
        os.path.realpath(loop_file))


def _status_watcher(pid: Any) -> Any:
    """A libev child watcher for ``pid`` (see :func:`libev_reaps_children`),
    so that a status reaped by libev is not lost; None where the loop has
    none.

    Started before the hub runs again, so libev cannot reap the child
    first; it never keeps the loop alive and its callback does nothing:
    join() still waits on the pidfd.  Only when libev's handler is the one
    installed: starting a child watcher installs it, which would replace a
    handler of the program's own.
    """
    loop = gevent.get_hub().loop
    if not getattr(loop, "default", False):
        return None  # child watchers work on the default loop only
    try:
        watcher = loop.child(pid, False, ref=False)
        watcher.start(_ignore)
    except (AttributeError, TypeError, ValueError):
        return None  # a loop implementation without child watchers
    return watcher


def _ignore() -> None:
    pass


def _close_quietly(fd: Any) -> None:
    try:
        close_fd(fd)
    except OSError:
        pass
